//! `golem`: nodes run on Golem providers. For each node the server sets the rest of its budget
//! aside (an allocation), publishes a demand for runtime `erigon` on the node's network, judges
//! every proposal with the lifecycle core's [`OfferPolicy`] (caps, allow/deny by node id, the
//! providers the node's plan already had), signs with the cheapest for the node's expected time,
//! records the agreement in the store at once, creates an activity and runs `deploy`, `start`,
//! `run STATUS` through it. Debit notes and invoices come out through [`Payer`]; the payment loop
//! decides on them. Deal state lives in the store only, so a restarted server (or another
//! replica) finds every agreement that costs money.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use erigolem_lifecycle::price::{self, LinearPrice, OfferPolicy};
use erigolem_lifecycle::{DocumentKind, Glm};
use erigolem_primitives::{Credentials, Mode, Network, NodeState, NodeStatus, StartArgs};
use erigolem_store::{NewDeal, Store};
use erigolem_yagna::model::activity::exe_script_command_result::{CommandOutput, CommandResult};
use erigolem_yagna::model::market::{Proposal, RequestorEvent};
use erigolem_yagna::model::payment::allocation::PaymentPlatformEnum;
use erigolem_yagna::model::payment::{
    Acceptance, DebitNoteEventType, InvoiceEventType, NewAllocation, Rejection, RejectionReason,
};
use erigolem_yagna::props::{prop_list, prop_str};
use erigolem_yagna::requestor::{make_deal_with, DealError, DealOptions, DemandSpec};
use erigolem_yagna::{BigDecimal, DateTime, Utc, Yagna, YagnaError};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::{
    Backend, BackendError, Cursor, NetworkOffer, Payer, PaymentDocument, PriceRange, StartTerms,
};

/// Settings of the golem backend (`erigolem serve --backend golem`). What nodes may cost is the
/// server's [`crate::money::PaymentPolicy`].
#[derive(Debug, Clone)]
pub struct GolemConfig {
    /// The requestor's yagna REST API and an app key of it.
    pub yagna_url: url::Url,
    pub app_key: String,
    pub subnet: String,
    pub payment_platform: String,
    /// After the first provider answers, how long to wait at least for cheaper ones; and at most,
    /// while providers whose offers were answered have not answered yet.
    pub offer_window: Duration,
    pub offer_max_window: Duration,
    /// How long to look for a provider before the node fails with "no offers".
    pub deal_timeout: Duration,
    /// Only these providers (node ids), when not empty; never the denied ones. Names are chosen by
    /// providers themselves and prove nothing: a name here is a configuration error.
    pub allow_providers: Vec<String>,
    pub deny_providers: Vec<String>,
    /// How long an agreement is signed for.
    pub agreement_duration: Duration,
    /// A STATUS that takes longer is a missed poll.
    pub status_timeout: Duration,
}

impl GolemConfig {
    pub fn new(yagna_url: url::Url, app_key: impl Into<String>) -> Self {
        Self {
            yagna_url,
            app_key: app_key.into(),
            subnet: "erigolem".into(),
            payment_platform: "erc20-hoodi-tglm".into(),
            offer_window: Duration::from_millis(500),
            offer_max_window: Duration::from_secs(5),
            deal_timeout: Duration::from_secs(20),
            allow_providers: Vec::new(),
            deny_providers: Vec::new(),
            agreement_duration: Duration::from_secs(24 * 3600),
            status_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GolemError {
    #[error("the requestor's yagna: {0}")]
    Yagna(#[from] YagnaError),
    #[error("{entry:?} in the provider {list} list is not a provider node id (0x and 40 hex digits): providers choose their names, so only node ids are trusted")]
    ProviderId { list: &'static str, entry: String },
    #[error("{path} holds Golem agreements of an older version that may still cost money ({open} not settled): stop those nodes with that version first, or move the file away to abandon them")]
    OldDeals { path: PathBuf, open: usize },
    #[error("{path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One provider's offer as the market shows it.
#[derive(Debug, Clone)]
struct SeenOffer {
    networks: Vec<String>,
    modes: Vec<String>,
    price: Option<LinearPrice>,
    seen: Instant,
}

#[derive(Debug)]
struct Shared {
    yagna: Yagna,
    config: GolemConfig,
    payer: String,
    store: Store,
    market: Mutex<HashMap<String, SeenOffer>>,
}

#[derive(Debug)]
pub struct GolemBackend {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for GolemBackend {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Offers not seen again within this are dropped from the market view.
const MARKET_MEMORY: Duration = Duration::from_secs(120);

/// Attempts at different providers before a start fails.
const ATTEMPTS: usize = 3;

/// The most of a STATUS answer that is read; more is a provider misbehaving.
const MAX_STATUS_BYTES: usize = 64 * 1024;

/// How long `deploy` + `start` + the first `STATUS` may take.
const START_TIMEOUT: Duration = Duration::from_secs(90);

fn provider_ids(list: &'static str, entries: &[String]) -> Result<Vec<String>, GolemError> {
    entries
        .iter()
        .map(|e| {
            price::node_id(e.trim()).ok_or_else(|| GolemError::ProviderId {
                list,
                entry: e.clone(),
            })
        })
        .collect()
}

impl GolemBackend {
    /// Connects to the requestor's yagna. `dir` is where an older version kept `deals.json`.
    pub async fn start(dir: &Path, config: GolemConfig, store: Store) -> Result<Self, GolemError> {
        let mut config = config;
        config.allow_providers = provider_ids("allow", &config.allow_providers)?;
        config.deny_providers = provider_ids("deny", &config.deny_providers)?;
        refuse_old_deals(&dir.join("deals.json"))?;
        let yagna = Yagna::new(config.yagna_url.clone(), config.app_key.clone());
        let payer = yagna.me().await?.identity.to_lowercase();
        let shared = Arc::new(Shared {
            yagna,
            config,
            payer,
            store,
            market: Mutex::new(HashMap::new()),
        });
        let tasks = vec![tokio::spawn(market_scan(shared.clone()))];
        tracing::info!(payer = %shared.payer, "golem backend ready");
        Ok(Self { shared, tasks })
    }
}

/// Deal state lived in `deals.json` before it moved to the store. Its agreements are not carried
/// over (their amounts were `f64`s): if any is not settled, the operator decides what happens to
/// it; an unreadable file is refused too, never read as empty. A file with nothing open is moved
/// aside.
fn refuse_old_deals(path: &Path) -> Result<(), GolemError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(GolemError::State {
                path: path.to_owned(),
                source,
            })
        }
    };
    let deals: BTreeMap<String, Value> =
        serde_json::from_slice(&bytes).map_err(|e| GolemError::State {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
    let open = deals
        .values()
        .filter(|d| d.get("settled") != Some(&Value::Bool(true)))
        .count();
    if open > 0 {
        return Err(GolemError::OldDeals {
            path: path.to_owned(),
            open,
        });
    }
    let aside = path.with_extension("json.settled");
    std::fs::rename(path, &aside).map_err(|source| GolemError::State {
        path: path.to_owned(),
        source,
    })?;
    tracing::info!(path = %aside.display(), "the old deals file had nothing open: moved aside");
    Ok(())
}

/// Keeps a view of the market for `GET /networks`: a demand that only listens (it never answers,
/// so no provider is engaged), renewed now and then.
async fn market_scan(shared: Arc<Shared>) {
    let spec = DemandSpec {
        network: "any".into(),
        mode: None,
        subnet: shared.config.subnet.clone(),
        payment_platform: shared.config.payment_platform.clone(),
        payer: shared.payer.clone(),
        expiration: Duration::from_secs(3600),
    };
    loop {
        let subscription = match shared.yagna.subscribe_demand(&spec.demand()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("market scan: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let renew = Instant::now() + Duration::from_secs(60);
        while Instant::now() < renew {
            match shared
                .yagna
                .demand_events(&subscription, Duration::from_secs(2), 50)
                .await
            {
                Ok(events) => {
                    for event in events {
                        if let RequestorEvent::ProposalEvent { proposal, .. } = event {
                            let seen = SeenOffer {
                                networks: prop_list(&proposal.properties, "erigolem.networks"),
                                modes: prop_list(&proposal.properties, "erigolem.modes"),
                                price: LinearPrice::from_properties(&proposal.properties).ok(),
                                seen: Instant::now(),
                            };
                            if let Ok(mut market) = shared.market.lock() {
                                market.insert(proposal.issuer_id.to_string().to_lowercase(), seen);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!("market scan events: {e}");
                    break;
                }
            }
        }
        let _ = shared.yagna.unsubscribe_demand(&subscription).await;
    }
}

/// Runs an exe script and returns each command's stdout; the first failed command is the error.
async fn run_script(
    yagna: &Yagna,
    activity: &str,
    script: Value,
    timeout: Duration,
) -> Result<Vec<String>, BackendError> {
    let commands = script.as_array().map(Vec::len).unwrap_or(0);
    let batch = yagna
        .exec(activity, &script)
        .await
        .map_err(|e| BackendError::Other(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BackendError::Timeout(timeout.as_secs()));
        }
        let results = yagna
            .exec_results(activity, &batch, left.min(Duration::from_secs(2)))
            .await
            .map_err(|e| BackendError::Other(e.to_string()))?;
        if let Some(failed) = results.iter().find(|r| r.result == CommandResult::Error) {
            let text = failed
                .message
                .clone()
                .or_else(|| output(&failed.stderr))
                .unwrap_or_else(|| "a command failed".into());
            return Err(BackendError::Other(
                erigolem_lifecycle::text::provider_text(&text),
            ));
        }
        if results.len() >= commands || results.iter().any(|r| r.is_batch_finished) {
            return Ok(results
                .iter()
                .map(|r| output(&r.stdout).unwrap_or_default())
                .collect());
        }
    }
}

fn output(out: &Option<CommandOutput>) -> Option<String> {
    match out {
        Some(CommandOutput::Str(s)) => Some(s.clone()),
        Some(CommandOutput::Bin(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        None => None,
    }
}

/// A provider's STATUS: bounded, parsed, and with an endpoint that is an http(s) URL.
fn parse_status(text: &str) -> Result<NodeStatus, BackendError> {
    if text.len() > MAX_STATUS_BYTES {
        return Err(BackendError::Other(format!(
            "the provider's STATUS is {} bytes, more than {MAX_STATUS_BYTES}",
            text.len()
        )));
    }
    // Not quoted back: a STATUS carries the endpoint's credentials.
    let status: NodeStatus = serde_json::from_str(text.trim()).map_err(|e| {
        BackendError::Other(erigolem_lifecycle::text::sanitize(
            &format!("the provider's STATUS did not parse: {e}"),
            300,
        ))
    })?;
    for url in [&status.url, &status.ws_url] {
        let ok = url::Url::parse(url).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https" | "ws" | "wss") && url.len() <= 2048
        });
        if !ok {
            return Err(BackendError::Other(format!(
                "the provider's STATUS names an endpoint that is not an http(s) URL: {}",
                erigolem_lifecycle::text::sanitize(url, 200)
            )));
        }
    }
    Ok(status)
}

/// `usage.requests` of a STATUS answer (the runtime's request counter), if it has one.
fn status_requests(text: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    v.get("usage")?.get("requests")?.as_u64()
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn yagna_error(e: YagnaError) -> BackendError {
    match e.status() {
        Some(s) if s.is_client_error() => BackendError::Start(e.to_string()),
        _ => BackendError::Other(e.to_string()),
    }
}

#[async_trait::async_trait]
impl Backend for GolemBackend {
    fn networks(&self) -> Vec<NetworkOffer> {
        let Ok(mut market) = self.shared.market.lock() else {
            return Vec::new();
        };
        market.retain(|_, o| o.seen.elapsed() < MARKET_MEMORY);
        let mut by_network: BTreeMap<String, (Vec<Mode>, Option<PriceRange>)> = BTreeMap::new();
        for offer in market.values() {
            let Some(price) = &offer.price else { continue };
            for network in &offer.networks {
                let entry = by_network.entry(network.clone()).or_default();
                for m in offer.modes.iter().filter_map(|m| m.parse::<Mode>().ok()) {
                    if !entry.0.contains(&m) {
                        entry.0.push(m);
                    }
                }
                let range = entry.1.get_or_insert_with(|| PriceRange {
                    min_per_hour: price.per_hour.clone(),
                    max_per_hour: price.per_hour.clone(),
                    min_start_fee: price.start_fee.clone(),
                    currency: "GLM".into(),
                    providers: 0,
                });
                range.min_per_hour = range.min_per_hour.clone().min(price.per_hour.clone());
                range.max_per_hour =
                    std::cmp::max(range.max_per_hour.clone(), price.per_hour.clone());
                range.min_start_fee = range.min_start_fee.clone().min(price.start_fee.clone());
                range.providers += 1;
            }
        }
        by_network
            .into_iter()
            .filter_map(|(network, (mut modes, price))| {
                let network: Network = network.parse().ok()?;
                if modes.is_empty() {
                    modes.push(Mode::Dedicated);
                }
                Some(NetworkOffer {
                    price,
                    ..super::network_offer(network, modes)
                })
            })
            .collect()
    }

    fn accepts_any_network(&self) -> bool {
        true
    }

    fn payer(&self) -> Option<&dyn Payer> {
        Some(self)
    }

    async fn start(
        &self,
        node_id: &str,
        args: StartArgs,
        terms: &StartTerms,
    ) -> Result<NodeStatus, BackendError> {
        let shared = &self.shared;
        let budget_left = terms
            .budget_left
            .clone()
            .ok_or_else(|| BackendError::Start("the node has no budget".into()))?;
        if budget_left.is_zero() {
            return Err(BackendError::Start("the node's budget is used up".into()));
        }
        let network = args
            .network
            .map(|n| n.to_string())
            .unwrap_or_else(|| "dev".into());
        let expected = terms.expected.unwrap_or(erigolem_lifecycle::Expected {
            hours: 1,
            requests_per_hour: 0,
        });
        let timeout = Utc::now()
            + erigolem_yagna::chrono::Duration::milliseconds(
                i64::try_from(shared.config.agreement_duration.as_millis()).unwrap_or(i64::MAX / 2)
                    + 3_600_000,
            );
        let allocation = shared
            .yagna
            .create_allocation(&NewAllocation {
                address: None,
                payment_platform: Some(PaymentPlatformEnum::PaymentPlatformName(
                    shared.config.payment_platform.clone(),
                )),
                total_amount: budget_left.to_wei_precision().to_decimal(),
                timeout: Some(timeout),
                deposit: None,
                make_deposit: false,
            })
            .await
            .map_err(|e| {
                BackendError::Start(format!("could not set the node's budget aside: {e}"))
            })?;
        let spec = DemandSpec {
            network: network.clone(),
            mode: args.mode.map(|m| m.to_string()),
            subnet: shared.config.subnet.clone(),
            payment_platform: shared.config.payment_platform.clone(),
            payer: shared.payer.clone(),
            expiration: shared.config.agreement_duration,
        };
        let mut policy = OfferPolicy {
            caps: terms.caps.clone(),
            budget_left,
            allow: shared.config.allow_providers.clone(),
            deny: shared.config.deny_providers.clone(),
            excluded: terms.excluded_providers.clone(),
        };
        let demanded = Instant::now();
        let mut last_error = String::new();
        let mut signed_any = false;
        for _ in 0..ATTEMPTS {
            let judge = |p: &Proposal| {
                let networks = prop_list(&p.properties, "erigolem.networks");
                if !networks.is_empty() && !networks.iter().any(|n| n == &network) {
                    return Err(format!("does not serve {network}"));
                }
                policy.judge(&p.issuer_id.to_string(), &p.properties)
            };
            let accept = |p: &Proposal| judge(p).map(|_| ());
            let cost = |p: &Proposal| judge(p).ok().map(|price| price.cost(&expected));
            let order = |a: &Proposal, b: &Proposal| {
                let (ca, cb) = (cost(a), cost(b));
                ca.cmp(&cb)
                    .then_with(|| a.issuer_id.to_string().cmp(&b.issuer_id.to_string()))
            };
            let options = DealOptions {
                timeout: shared.config.deal_timeout,
                window: shared.config.offer_window,
                max_window: shared.config.offer_max_window,
                accept: &accept,
                order: &order,
            };
            let deal = match make_deal_with(&shared.yagna, &spec, &options).await {
                Ok(deal) => deal,
                Err(e) => {
                    if !signed_any {
                        let _ = shared
                            .yagna
                            .release_allocation(&allocation.allocation_id)
                            .await;
                    }
                    return Err(BackendError::Start(match e {
                        DealError::NoDeal { waited, rejections } => {
                            let heard = if rejections.is_empty() {
                                String::new()
                            } else {
                                let heard: Vec<String> = rejections
                                    .iter()
                                    .map(|r| erigolem_lifecycle::text::sanitize(r, 200))
                                    .collect();
                                format!(" ({})", heard.join("; "))
                            };
                            let why = if last_error.is_empty() {
                                String::new()
                            } else {
                                format!("; last failure: {last_error}")
                            };
                            erigolem_lifecycle::text::sanitize(
                                &format!(
                                    "no offers for {network} within {}s{heard}{why}",
                                    waited.as_secs()
                                ),
                                2000,
                            )
                        }
                        other => other.to_string(),
                    }));
                }
            };
            signed_any = true;
            // The agreement is what the provider bills on: judged again on its own terms.
            let price = match policy.judge(&deal.provider_id, &deal.offer.properties) {
                Ok(price) => price,
                Err(why) => {
                    let _ = shared
                        .yagna
                        .terminate_agreement(&deal.agreement_id, &why)
                        .await;
                    policy.excluded.push(deal.provider_id.clone());
                    last_error = why;
                    continue;
                }
            };
            let record = NewDeal {
                agreement_id: deal.agreement_id.clone(),
                node_id: node_id.to_owned(),
                plan_id: terms.plan_id.clone(),
                owner: terms.owner.clone(),
                provider_id: deal.provider_id.clone(),
                provider_name: prop_str(&deal.offer.properties, "golem.node.id.name")
                    .map(erigolem_lifecycle::text::provider_text),
                allocation_id: allocation.allocation_id.clone(),
                price,
                expires_at: now_ms()
                    + i64::try_from(shared.config.agreement_duration.as_millis())
                        .unwrap_or(i64::MAX / 2),
            };
            // Recorded before anything runs: a debit note may come at once, and a crash must not
            // forget an agreement that costs money.
            if let Err(e) = shared.store.insert_deal(&record).await {
                let _ = shared
                    .yagna
                    .terminate_agreement(&deal.agreement_id, "the requestor could not record it")
                    .await;
                return Err(BackendError::Other(format!("recording the agreement: {e}")));
            }
            match self.run_node(&args, &deal, demanded).await {
                Ok(status) => return Ok(status),
                Err(e) => {
                    let e = e.to_string();
                    tracing::warn!(node = %node_id, provider = %deal.provider_id, "starting on the provider failed: {e}");
                    let _ = self.end_deal(&deal.agreement_id, &e).await;
                    policy.excluded.push(deal.provider_id.clone());
                    last_error = e;
                }
            }
        }
        Err(BackendError::Start(format!(
            "no provider could start the node: {last_error}"
        )))
    }

    async fn resume(&self, node_id: &str, _args: StartArgs) -> Result<NodeStatus, BackendError> {
        let status = self.status(node_id).await?;
        tracing::info!(node = %node_id, "picked up the running node on Golem");
        Ok(status)
    }

    async fn status(&self, node_id: &str) -> Result<NodeStatus, BackendError> {
        let deal = self.live_deal(node_id).await?;
        let out = self
            .run_entry(&deal, "STATUS", self.shared.config.status_timeout)
            .await?;
        let status = parse_status(&out)?;
        if let Some(requests) = status_requests(&out) {
            let _ = self
                .shared
                .store
                .note_requests(&deal.agreement_id, requests)
                .await;
        }
        Ok(status)
    }

    async fn stop(&self, node_id: &str) -> Result<(), BackendError> {
        let deal = self.live_deal(node_id).await?;
        if deal.price.per_request.is_some() {
            // The requests served since the last STATUS poll are owed too, and the count is
            // frozen with the billing: read it once more first, or the provider's honest invoice
            // would ask more than the bound allows and be refused.
            if let Err(e) = self.status(node_id).await {
                tracing::info!(node = %node_id, "the last request count before the stop: {e}");
            }
        }
        self.end_deal(&deal.agreement_id, "the requestor stopped the node")
            .await
    }

    async fn holds(&self, node_id: &str) -> bool {
        matches!(self.shared.store.live_deal(node_id).await, Ok(Some(_)))
    }

    async fn logs(&self, node_id: &str, lines: usize) -> Result<String, BackendError> {
        let deal = self.live_deal(node_id).await?;
        self.run_entry_with(
            &deal,
            "LOGS",
            &[lines.to_string()],
            self.shared.config.status_timeout,
        )
        .await
    }

    async fn rotate(&self, node_id: &str) -> Result<Credentials, BackendError> {
        let deal = self.live_deal(node_id).await?;
        let out = self
            .run_entry(&deal, "ROTATE", self.shared.config.status_timeout)
            .await?;
        serde_json::from_str(out.trim())
            .map_err(|e| BackendError::Other(format!("ROTATE did not parse: {e}")))
    }
}

impl GolemBackend {
    async fn live_deal(&self, node_id: &str) -> Result<erigolem_store::DealRecord, BackendError> {
        self.shared
            .store
            .live_deal(node_id)
            .await
            .map_err(|e| BackendError::Other(e.to_string()))?
            .ok_or_else(|| BackendError::Unknown(node_id.to_owned()))
    }

    /// Destroys the agreement's activity (the provider revokes the credentials and stops the
    /// node) and terminates the agreement; its billing is frozen now. Only an unreachable yagna
    /// of ours leaves it open (to be stopped again).
    async fn end_deal(&self, agreement_id: &str, reason: &str) -> Result<(), BackendError> {
        let shared = &self.shared;
        let _ = shared.store.freeze_deal(agreement_id, now_ms()).await;
        let deal = shared
            .store
            .deal(agreement_id)
            .await
            .map_err(|e| BackendError::Other(e.to_string()))?;
        if let Some(activity) = deal.as_ref().and_then(|d| d.activity_id.clone()) {
            if let Err(e) = shared.yagna.destroy_activity(&activity).await {
                tracing::warn!(%agreement_id, %activity, "destroying the activity: {e}");
            }
        }
        match shared.yagna.terminate_agreement(agreement_id, reason).await {
            Err(e @ YagnaError::Unreachable { .. }) => {
                return Err(BackendError::Other(format!(
                    "the requestor's yagna did not answer: {e}"
                )))
            }
            Err(e) => tracing::info!(%agreement_id, "terminating: {e}"),
            Ok(()) => {}
        }
        shared
            .store
            .end_deal(agreement_id, now_ms())
            .await
            .map_err(|e| BackendError::Other(e.to_string()))
    }

    /// `run <entry>` in the deal's activity; its stdout.
    async fn run_entry(
        &self,
        deal: &erigolem_store::DealRecord,
        entry: &str,
        timeout: Duration,
    ) -> Result<String, BackendError> {
        self.run_entry_with(deal, entry, &[], timeout).await
    }

    async fn run_entry_with(
        &self,
        deal: &erigolem_store::DealRecord,
        entry: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<String, BackendError> {
        let activity = deal
            .activity_id
            .as_deref()
            .ok_or_else(|| BackendError::Unknown(deal.node_id.clone()))?;
        let script = json!([{"run": {"entry_point": entry, "args": args}}]);
        let out = run_script(&self.shared.yagna, activity, script, timeout).await?;
        Ok(out.into_iter().next().unwrap_or_default())
    }

    /// Activity + deploy/start/STATUS on the provider of `deal`. The first STATUS that answers
    /// (and does not say the node failed) starts the time served.
    async fn run_node(
        &self,
        args: &StartArgs,
        deal: &erigolem_yagna::requestor::Deal,
        demanded: Instant,
    ) -> Result<NodeStatus, BackendError> {
        let yagna = &self.shared.yagna;
        let store = &self.shared.store;
        let agreement_at = demanded.elapsed();
        let activity = yagna
            .create_activity(&deal.agreement_id, Duration::from_secs(15))
            .await
            .map_err(|e| BackendError::Other(e.to_string()))?;
        store
            .set_deal_activity(&deal.agreement_id, &activity)
            .await
            .map_err(|e| BackendError::Other(e.to_string()))?;
        let activity_at = demanded.elapsed();
        let start = serde_json::to_string(args).map_err(|e| BackendError::Other(e.to_string()))?;
        let out = run_script(
            yagna,
            &activity,
            json!([{"deploy": {}}, {"start": {"args": [start]}}, {"run": {"entry_point": "STATUS", "args": []}}]),
            START_TIMEOUT,
        )
        .await?;
        let text = out.get(2).map(String::as_str).unwrap_or_default();
        let status = parse_status(text)?;
        if status.state == NodeState::Failed {
            let why = status.error.as_deref().unwrap_or("no reason given");
            return Err(BackendError::Start(
                erigolem_lifecycle::text::provider_text(&format!(
                    "the node failed on the provider right after it started: {why}"
                )),
            ));
        }
        store
            .mark_served(&deal.agreement_id, now_ms())
            .await
            .map_err(|e| BackendError::Other(e.to_string()))?;
        let ms = |d: Duration| d.as_millis() as u64;
        let times = json!({
            "first_offer": ms(deal.first_offer_after),
            "agreement": ms(agreement_at),
            "activity": ms(activity_at),
            "runtime": ms(demanded.elapsed()),
        });
        let _ = store.set_deal_start_times(&deal.agreement_id, &times).await;
        Ok(status)
    }
}

/// A yagna document amount, strictly: non-negative and payable (at most 18 decimals).
fn document_amount(amount: &BigDecimal) -> Result<Glm, String> {
    let glm = Glm::from_decimal(amount).map_err(|e| e.to_string())?;
    if glm.to_wei_precision() != glm {
        return Err(format!("{amount} has more than 18 decimals"));
    }
    Ok(glm)
}

#[async_trait::async_trait]
impl Payer for GolemBackend {
    async fn documents(&self, since: &mut Cursor) -> Result<Vec<PaymentDocument>, BackendError> {
        let yagna = &self.shared.yagna;
        let at = |us: i64| DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_else(Utc::now);
        // yagna returns events strictly after the time asked for, which it reads to the
        // microsecond: the cursor moves to the next microsecond after an event, or it would come
        // back on every poll.
        let past = |t: DateTime<Utc>| {
            let us = t.timestamp_micros();
            if t.timestamp_subsec_nanos().is_multiple_of(1000) {
                us
            } else {
                us + 1
            }
        };
        let mut out = Vec::new();
        let notes = yagna
            .debit_note_events(at(since.debit_notes), Duration::from_secs(1))
            .await
            .map_err(|e| BackendError::Other(e.to_string()))?;
        for e in notes {
            since.debit_notes = since.debit_notes.max(past(e.event_date));
            if !matches!(e.event_type, DebitNoteEventType::DebitNoteReceivedEvent) {
                continue;
            }
            match yagna.debit_note(&e.debit_note_id).await {
                Ok(note) => out.push(PaymentDocument {
                    id: note.debit_note_id.clone(),
                    kind: DocumentKind::DebitNote,
                    agreement_id: note.agreement_id.clone(),
                    amount_text: note.total_amount_due.to_string(),
                    amount: document_amount(&note.total_amount_due),
                }),
                Err(err) => tracing::warn!(debit_note = %e.debit_note_id, "reading it: {err}"),
            }
        }
        let invoices = yagna
            .invoice_events(at(since.invoices), Duration::from_secs(1))
            .await
            .map_err(|e| BackendError::Other(e.to_string()))?;
        for e in invoices {
            since.invoices = since.invoices.max(past(e.event_date));
            if e.event_type != InvoiceEventType::InvoiceReceivedEvent {
                continue;
            }
            match yagna.invoice(&e.invoice_id).await {
                Ok(invoice) => out.push(PaymentDocument {
                    id: invoice.invoice_id.clone(),
                    kind: DocumentKind::Invoice,
                    agreement_id: invoice.agreement_id.clone(),
                    amount_text: invoice.amount.to_string(),
                    amount: document_amount(&invoice.amount),
                }),
                Err(err) => tracing::warn!(invoice = %e.invoice_id, "reading it: {err}"),
            }
        }
        Ok(out)
    }

    async fn accept(
        &self,
        document: &PaymentDocument,
        allocation_id: &str,
    ) -> Result<(), BackendError> {
        // yagna accepts only the exact amount due.
        let amount = BigDecimal::from_str(&document.amount_text)
            .map_err(|e| BackendError::Start(format!("the amount did not parse: {e}")))?;
        let acceptance = Acceptance {
            total_amount_accepted: amount,
            allocation_id: allocation_id.to_owned(),
        };
        let yagna = &self.shared.yagna;
        match document.kind {
            DocumentKind::DebitNote => yagna.accept_debit_note(&document.id, &acceptance).await,
            DocumentKind::Invoice => yagna.accept_invoice(&document.id, &acceptance).await,
        }
        .map_err(yagna_error)
    }

    async fn refuse(&self, document: &PaymentDocument, reason: &str) -> Result<(), BackendError> {
        let rejection = Rejection {
            rejection_reason: if document.amount.is_ok() {
                RejectionReason::IncorrectAmount
            } else {
                RejectionReason::UnsolicitedService
            },
            total_amount_accepted: BigDecimal::from(0),
            message: Some(reason.to_owned()),
        };
        let yagna = &self.shared.yagna;
        let result = match document.kind {
            DocumentKind::DebitNote => yagna.reject_debit_note(&document.id, &rejection).await,
            DocumentKind::Invoice => yagna.reject_invoice(&document.id, &rejection).await,
        };
        match result {
            Ok(()) => Ok(()),
            // yagna 0.17.6 cannot reject debit notes (501): the note stays unaccepted, so unpaid.
            Err(e) if e.status().map(|s| s.as_u16()) == Some(501) => {
                tracing::info!(document = %document.id, "left unaccepted (yagna cannot reject debit notes)");
                Ok(())
            }
            Err(e) => Err(yagna_error(e)),
        }
    }

    async fn release(&self, allocation_id: &str) {
        if let Err(e) = self.shared.yagna.release_allocation(allocation_id).await {
            tracing::debug!(%allocation_id, "releasing: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn provider_lists_take_node_ids_only() {
        let id = "0x00000000000000000000000000000000000000AA".to_owned();
        assert_eq!(
            provider_ids("allow", std::slice::from_ref(&id)).unwrap(),
            ["0x00000000000000000000000000000000000000aa"]
        );
        let err = provider_ids("allow", &["erigolem-provider-0x1234".into()]).unwrap_err();
        assert!(err.to_string().contains("not a provider node id"), "{err}");
    }

    #[test]
    fn statuses_are_bounded_and_their_urls_checked() {
        let huge = format!("{{\"x\":\"{}\"}}", "A".repeat(MAX_STATUS_BYTES));
        assert!(parse_status(&huge)
            .unwrap_err()
            .to_string()
            .contains("more than 65536"));
        let garbage = "\u{1b}[2Jnot json at all";
        let err = parse_status(garbage).unwrap_err().to_string();
        assert!(
            err.contains("did not parse") && !err.contains('\u{1b}'),
            "{err}"
        );
        let status = |url: &str| {
            json!({"instance": "node-1", "url": url, "ws_url": "ws://127.0.0.1:1/n1/", "network": "dev",
                "engine": "anvil", "mode": "dedicated", "auth": {"user": "u", "password": "OmSMsJ-mYu0jjzvSfsDW72gO"},
                "state": "running", "block": 1, "sync": null})
            .to_string()
        };
        assert!(parse_status(&status("http://127.0.0.1:1/n1/")).is_ok());
        assert!(parse_status(&status("javascript:alert(1)"))
            .unwrap_err()
            .to_string()
            .contains("not an http(s) URL"));
        let with_usage = json!({"usage": {"requests": 42}}).to_string();
        assert_eq!(status_requests(&with_usage), Some(42));
        assert_eq!(status_requests("{}"), None);
    }

    #[test]
    fn document_amounts_are_strict() {
        let d = |s: &str| BigDecimal::from_str(s).unwrap();
        assert_eq!(
            document_amount(&d("0.5")).unwrap(),
            Glm::parse("0.5").unwrap()
        );
        assert!(document_amount(&d("-1")).is_err());
        assert!(document_amount(&d("0.0000000000000000001")).is_err());
    }

    #[test]
    fn an_old_deals_file_with_open_agreements_is_refused_never_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deals.json");
        assert!(refuse_old_deals(&path).is_ok(), "no file: nothing to do");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            refuse_old_deals(&path),
            Err(GolemError::State { .. })
        ));
        std::fs::write(
            &path,
            r#"{"n1": {"settled": false}, "n2": {"settled": true}}"#,
        )
        .unwrap();
        assert!(matches!(
            refuse_old_deals(&path),
            Err(GolemError::OldDeals { open: 1, .. })
        ));
        std::fs::write(&path, r#"{"n2": {"settled": true}}"#).unwrap();
        refuse_old_deals(&path).unwrap();
        assert!(!path.exists() && dir.path().join("deals.json.settled").exists());
    }
}
