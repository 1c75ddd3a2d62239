//! `golem`: nodes run on Golem providers. For each node the server publishes a demand for runtime
//! `erigon` on the node's network, picks the cheapest acceptable provider that answers, signs an
//! agreement, creates an activity and runs `deploy`, `start`, `run STATUS` through it, then pays
//! the provider's debit notes and invoice within the agreed price and the node's budget.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use erigolem_primitives::{Credentials, Mode, Network, NodeStatus, StartArgs};
use erigolem_yagna::model::activity::exe_script_command_result::{CommandOutput, CommandResult};
use erigolem_yagna::model::market::Proposal;
use erigolem_yagna::model::payment::allocation::PaymentPlatformEnum;
use erigolem_yagna::model::payment::InvoiceEventType;
use erigolem_yagna::model::payment::{
    Acceptance, DebitNoteEventType, NewAllocation, Rejection, RejectionReason,
};
use erigolem_yagna::props::{glm, glm_f64, prop_list, prop_str};
use erigolem_yagna::requestor::{
    linear_coeffs, make_deal_with, DealError, DealOptions, DemandSpec,
};
use erigolem_yagna::{BigDecimal, Utc, Yagna, YagnaError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::{Backend, BackendError, Billing, NetworkOffer, NodeTerms, PriceRange};

/// Settings of the golem backend (`erigolem serve --backend golem`).
#[derive(Debug, Clone)]
pub struct GolemConfig {
    /// The requestor's yagna REST API and an app key of it.
    pub yagna_url: url::Url,
    pub app_key: String,
    pub subnet: String,
    pub payment_platform: String,
    /// After the first provider answers, how long to wait for cheaper ones.
    pub offer_window: Duration,
    /// How long to look for a provider before the node fails with "no offers".
    pub deal_timeout: Duration,
    /// Offers above this (GLM per hour) are not taken.
    pub max_price_per_hour: Option<f64>,
    /// Only these providers (node ids or names), when not empty; never the denied ones.
    pub allow_providers: Vec<String>,
    pub deny_providers: Vec<String>,
    /// GLM set aside per node (its allocation); invoices beyond it are refused.
    pub budget: f64,
    /// How long an agreement is signed for.
    pub agreement_duration: Duration,
}

impl GolemConfig {
    pub fn new(yagna_url: url::Url, app_key: impl Into<String>) -> Self {
        Self {
            yagna_url,
            app_key: app_key.into(),
            subnet: "erigolem".into(),
            payment_platform: "erc20-hoodi-tglm".into(),
            offer_window: Duration::from_millis(500),
            deal_timeout: Duration::from_secs(20),
            max_price_per_hour: None,
            allow_providers: Vec::new(),
            deny_providers: Vec::new(),
            budget: 5.0,
            agreement_duration: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GolemError {
    #[error("the requestor's yagna: {0}")]
    Yagna(#[from] YagnaError),
    #[error("{path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the server keeps per node on Golem, so a restarted server picks its nodes up again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeDeal {
    agreement_id: String,
    activity_id: String,
    provider_id: String,
    provider_name: Option<String>,
    price_per_hour: f64,
    start_fee: f64,
    allocation_id: String,
    budget: f64,
    /// GLM accepted so far (debit notes, then the invoice).
    spent: f64,
    /// Unix milliseconds.
    started_at: i64,
    stopped_at: Option<i64>,
    /// The final invoice was accepted: nothing more to pay.
    settled: bool,
    /// Why the last payment request above the terms was refused.
    #[serde(default)]
    refused: Option<String>,
    /// How the start went, in ms from the demand being published.
    #[serde(default)]
    start_ms: Option<StartTimes>,
}

/// Milliseconds from the demand to: the first offer, the agreement approved, the activity created,
/// the runtime answering (`deploy`, `start`, `STATUS` done).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct StartTimes {
    pub first_offer: u64,
    pub agreement: u64,
    pub activity: u64,
    pub runtime: u64,
}

impl NodeDeal {
    /// The most the provider may ask for at `at` (ms): start fee + price × time run, plus a
    /// minute of slack for clocks and billing intervals; never more than the budget.
    fn due_at_most(&self, at: i64) -> f64 {
        let end = self.stopped_at.unwrap_or(at).min(at);
        let hours = ((end - self.started_at).max(0) as f64 + 60_000.0) / 3_600_000.0;
        (self.start_fee + self.price_per_hour * hours).min(self.budget)
    }
}

/// One provider's offer as the market shows it.
#[derive(Debug, Clone)]
struct SeenOffer {
    networks: Vec<String>,
    modes: Vec<String>,
    price_per_hour: f64,
    seen: Instant,
}

#[derive(Debug)]
struct Shared {
    yagna: Yagna,
    config: GolemConfig,
    payer: String,
    state_file: PathBuf,
    deals: Mutex<BTreeMap<String, NodeDeal>>,
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

impl GolemBackend {
    pub async fn start(dir: &Path, config: GolemConfig) -> Result<Self, GolemError> {
        let yagna = Yagna::new(config.yagna_url.clone(), config.app_key.clone());
        let payer = yagna.me().await?.identity.to_lowercase();
        std::fs::create_dir_all(dir).map_err(|source| GolemError::State {
            path: dir.to_owned(),
            source,
        })?;
        let state_file = dir.join("deals.json");
        let deals = match std::fs::read(&state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        let shared = Arc::new(Shared {
            yagna,
            config,
            payer,
            state_file,
            deals: Mutex::new(deals),
            market: Mutex::new(HashMap::new()),
        });
        let tasks = vec![
            tokio::spawn(market_scan(shared.clone())),
            tokio::spawn(payments(shared.clone())),
        ];
        tracing::info!(payer = %shared.payer, "golem backend ready");
        Ok(Self { shared, tasks })
    }
}

impl Shared {
    fn save(&self) {
        let Ok(deals) = self.deals.lock().map(|d| d.clone()) else {
            return;
        };
        let tmp = self.state_file.with_extension("tmp");
        let written = serde_json::to_vec_pretty(&deals)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.state_file));
        if let Err(e) = written {
            tracing::error!(path = %self.state_file.display(), "saving Golem deals: {e}");
        }
    }

    fn deal(&self, node_id: &str) -> Option<NodeDeal> {
        self.deals.lock().ok()?.get(node_id).cloned()
    }

    fn update(&self, node_id: &str, f: impl FnOnce(&mut NodeDeal)) {
        if let Ok(mut deals) = self.deals.lock() {
            if let Some(d) = deals.get_mut(node_id) {
                f(d);
            }
        }
        self.save();
    }

    /// Whether `offer` may be taken, or why not.
    fn acceptable(&self, offer: &Proposal, network: &str, cap: Option<f64>) -> Result<(), String> {
        let props = &offer.properties;
        let provider = offer.issuer_id.to_string().to_lowercase();
        let name = prop_str(props, "golem.node.id.name")
            .unwrap_or_default()
            .to_owned();
        let listed = |list: &[String]| {
            list.iter()
                .any(|p| p.eq_ignore_ascii_case(&provider) || p == &name)
        };
        if listed(&self.config.deny_providers) {
            return Err("provider denied by configuration".into());
        }
        if !self.config.allow_providers.is_empty() && !listed(&self.config.allow_providers) {
            return Err("provider not in the allow list".into());
        }
        let networks = prop_list(props, "erigolem.networks");
        if !networks.is_empty() && !networks.iter().any(|n| n == network) {
            return Err(format!("does not serve {network}"));
        }
        let price = price_per_hour(offer);
        if let Some(cap) = cap {
            if price > cap {
                return Err(format!("asks {price} GLM/h, above the cap of {cap}"));
            }
        }
        Ok(())
    }
}

/// GLM per hour of an offer's linear price (duration coefficient × 3600).
fn price_per_hour(offer: &Proposal) -> f64 {
    linear_coeffs(&offer.properties)
        .and_then(|c| c.first().copied())
        .map(|per_sec| per_sec * 3600.0)
        .unwrap_or(f64::INFINITY)
}

fn start_fee(offer: &Proposal) -> f64 {
    linear_coeffs(&offer.properties)
        .and_then(|c| c.get(2).copied())
        .unwrap_or(0.0)
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
                        if let erigolem_yagna::model::market::RequestorEvent::ProposalEvent {
                            proposal,
                            ..
                        } = event
                        {
                            let seen = SeenOffer {
                                networks: prop_list(&proposal.properties, "erigolem.networks"),
                                modes: prop_list(&proposal.properties, "erigolem.modes"),
                                price_per_hour: price_per_hour(&proposal),
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

/// Pays what is due and nothing more: debit notes and invoices of our agreements are accepted up to
/// the agreed price for the time the node ran (and the node's budget), others are rejected.
async fn payments(shared: Arc<Shared>) {
    let mut after = Utc::now() - erigolem_yagna::chrono::Duration::seconds(5);
    // A restarted server settles what is still open: look back over the deals' lifetimes.
    if let Some(oldest) = shared.deals.lock().ok().and_then(|d| {
        d.values()
            .filter(|d| !d.settled)
            .map(|d| d.started_at)
            .min()
    }) {
        if let Some(t) = erigolem_yagna::DateTime::<Utc>::from_timestamp_millis(oldest) {
            after = after.min(t);
        }
    }
    let mut after_invoices = after;
    loop {
        match shared
            .yagna
            .debit_note_events(after, Duration::from_secs(1))
            .await
        {
            Ok(events) => {
                for e in events {
                    after = after.max(e.event_date);
                    if matches!(e.event_type, DebitNoteEventType::DebitNoteReceivedEvent) {
                        handle_debit_note(&shared, &e.debit_note_id).await;
                    }
                }
            }
            Err(e) => tracing::debug!("debit note events: {e}"),
        }
        match shared
            .yagna
            .invoice_events(after_invoices, Duration::from_secs(1))
            .await
        {
            Ok(events) => {
                for e in events {
                    after_invoices = after_invoices.max(e.event_date);
                    if e.event_type == InvoiceEventType::InvoiceReceivedEvent {
                        handle_invoice(&shared, &e.invoice_id).await;
                    }
                }
            }
            Err(e) => tracing::debug!("invoice events: {e}"),
        }
    }
}

fn node_of(shared: &Shared, agreement_id: &str) -> Option<(String, NodeDeal)> {
    let deals = shared.deals.lock().ok()?;
    deals
        .iter()
        .find(|(_, d)| d.agreement_id == agreement_id)
        .map(|(k, d)| (k.clone(), d.clone()))
}

async fn handle_debit_note(shared: &Shared, id: &str) {
    let Ok(note) = shared.yagna.debit_note(id).await else {
        return;
    };
    let amount = glm_f64(&note.total_amount_due);
    let now = Utc::now().timestamp_millis();
    let Some((node, deal)) = node_of(shared, &note.agreement_id) else {
        reject_debit_note(
            shared,
            id,
            RejectionReason::UnsolicitedService,
            "not an agreement of this server",
        )
        .await;
        return;
    };
    let most = deal.due_at_most(now);
    if amount > most + 1e-12 {
        let why = format!("{amount} GLM is more than the agreed price allows ({most:.6} GLM for the time it ran, budget {})", deal.budget);
        tracing::warn!(%node, debit_note = %id, "{why}");
        shared.update(&node, |d| {
            d.refused = Some(format!("debit note {id}: {why}"))
        });
        reject_debit_note(shared, id, RejectionReason::IncorrectAmount, &why).await;
        return;
    }
    let acceptance = Acceptance {
        total_amount_accepted: note.total_amount_due.clone(),
        allocation_id: deal.allocation_id.clone(),
    };
    match shared.yagna.accept_debit_note(id, &acceptance).await {
        Ok(()) => shared.update(&node, |d| d.spent = d.spent.max(amount)),
        Err(e) => tracing::warn!(%node, debit_note = %id, "accepting: {e}"),
    }
}

async fn reject_debit_note(shared: &Shared, id: &str, reason: RejectionReason, message: &str) {
    let rejection = Rejection {
        rejection_reason: reason,
        total_amount_accepted: BigDecimal::from(0),
        message: Some(message.to_owned()),
    };
    match shared.yagna.reject_debit_note(id, &rejection).await {
        Ok(()) => {}
        // yagna 0.17.6 cannot reject debit notes (501): the note stays unaccepted, so unpaid.
        Err(e) if e.status().map(|s| s.as_u16()) == Some(501) => {
            tracing::info!(debit_note = %id, "left unaccepted (yagna cannot reject debit notes)")
        }
        Err(e) => tracing::warn!(debit_note = %id, "rejecting: {e}"),
    }
}

async fn handle_invoice(shared: &Shared, id: &str) {
    let Ok(invoice) = shared.yagna.invoice(id).await else {
        return;
    };
    let amount = glm_f64(&invoice.amount);
    let now = Utc::now().timestamp_millis();
    let rejection = |reason, message: String| Rejection {
        rejection_reason: reason,
        total_amount_accepted: BigDecimal::from(0),
        message: Some(message),
    };
    let Some((node, deal)) = node_of(shared, &invoice.agreement_id) else {
        let _ = shared
            .yagna
            .reject_invoice(
                id,
                &rejection(
                    RejectionReason::UnsolicitedService,
                    "not an agreement of this server".into(),
                ),
            )
            .await;
        return;
    };
    let most = deal.due_at_most(now);
    if amount > most + 1e-12 {
        let why = format!("{amount} GLM is more than the agreed price allows ({most:.6} GLM)");
        tracing::warn!(%node, invoice = %id, "{why}");
        shared.update(&node, |d| d.refused = Some(format!("invoice {id}: {why}")));
        let _ = shared
            .yagna
            .reject_invoice(id, &rejection(RejectionReason::IncorrectAmount, why))
            .await;
        return;
    }
    let acceptance = Acceptance {
        total_amount_accepted: invoice.amount.clone(),
        allocation_id: deal.allocation_id.clone(),
    };
    match shared.yagna.accept_invoice(id, &acceptance).await {
        Ok(()) => {
            tracing::info!(%node, invoice = %id, amount, "invoice accepted");
            shared.update(&node, |d| {
                d.spent = amount;
                d.settled = true;
            });
            let _ = shared.yagna.release_allocation(&deal.allocation_id).await;
        }
        Err(e) => tracing::warn!(%node, invoice = %id, "accepting: {e}"),
    }
}

/// Runs an exe script and returns each command's stdout; the first failed command is the error.
async fn run_script(yagna: &Yagna, activity: &str, script: Value) -> Result<Vec<String>, String> {
    let commands = script.as_array().map(Vec::len).unwrap_or(0);
    let batch = yagna
        .exec(activity, &script)
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let results = yagna
            .exec_results(activity, &batch, Duration::from_secs(2))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(failed) = results.iter().find(|r| r.result == CommandResult::Error) {
            return Err(failed
                .message
                .clone()
                .or_else(|| output(&failed.stderr))
                .unwrap_or_else(|| "a command failed".into()));
        }
        if results.len() >= commands || results.iter().any(|r| r.is_batch_finished) {
            return Ok(results
                .iter()
                .map(|r| output(&r.stdout).unwrap_or_default())
                .collect());
        }
        if Instant::now() > deadline {
            return Err("the provider did not finish the commands in time".into());
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

fn parse_status(text: &str) -> Result<NodeStatus, String> {
    serde_json::from_str(text.trim())
        .map_err(|e| format!("the provider's STATUS did not parse ({e}): {text}"))
}

/// A node is stopped this long before its agreement ends.
const AGREEMENT_END_MARGIN_MS: i64 = 5 * 60 * 1000;

/// Attempts at different providers before a node fails.
const ATTEMPTS: usize = 3;

#[async_trait::async_trait]
impl Backend for GolemBackend {
    fn networks(&self) -> Vec<NetworkOffer> {
        let Ok(mut market) = self.shared.market.lock() else {
            return Vec::new();
        };
        market.retain(|_, o| o.seen.elapsed() < MARKET_MEMORY);
        let mut by_network: BTreeMap<String, (Vec<Mode>, PriceRange)> = BTreeMap::new();
        for offer in market.values() {
            for network in &offer.networks {
                let entry = by_network.entry(network.clone()).or_insert_with(|| {
                    (
                        Vec::new(),
                        PriceRange {
                            min_per_hour: f64::INFINITY,
                            max_per_hour: 0.0,
                            currency: "GLM".into(),
                            providers: 0,
                        },
                    )
                });
                for m in offer.modes.iter().filter_map(|m| m.parse::<Mode>().ok()) {
                    if !entry.0.contains(&m) {
                        entry.0.push(m);
                    }
                }
                entry.1.min_per_hour = entry.1.min_per_hour.min(offer.price_per_hour);
                entry.1.max_per_hour = entry.1.max_per_hour.max(offer.price_per_hour);
                entry.1.providers += 1;
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
                    price: Some(price),
                    ..NetworkOffer::new(network, modes)
                })
            })
            .collect()
    }

    fn accepts_any_network(&self) -> bool {
        true
    }

    fn pays(&self) -> bool {
        true
    }

    /// Nodes whose budget will not pay for the next minute, or whose agreement ends within five
    /// minutes: stopped (with the reason) before they run unpaid or vanish with the agreement.
    fn ending(&self) -> Vec<(String, String)> {
        let now = Utc::now().timestamp_millis();
        let Ok(deals) = self.shared.deals.lock() else {
            return Vec::new();
        };
        let agreement_ms = self.shared.config.agreement_duration.as_millis() as i64;
        deals
            .iter()
            .filter(|(_, d)| d.stopped_at.is_none())
            .filter_map(|(id, d)| {
                if d.due_at_most(now) >= d.budget {
                    Some((
                        id.clone(),
                        format!(
                            "its budget of {} GLM is used up (at {} GLM/h)",
                            d.budget, d.price_per_hour
                        ),
                    ))
                } else if now >= d.started_at + agreement_ms - AGREEMENT_END_MARGIN_MS {
                    Some((
                        id.clone(),
                        "its agreement with the provider ends".to_owned(),
                    ))
                } else {
                    None
                }
            })
            .collect()
    }

    async fn start(
        &self,
        node_id: &str,
        args: StartArgs,
        terms: &NodeTerms,
    ) -> Result<NodeStatus, BackendError> {
        let shared = &self.shared;
        // A deal this server made before a restart: the node still runs there, pick it up.
        if let Some(deal) = shared.deal(node_id).filter(|d| d.stopped_at.is_none()) {
            match self.status(node_id).await {
                Ok(status) => {
                    tracing::info!(node = %node_id, agreement = %deal.agreement_id, "picked up the running node on Golem");
                    return Ok(status);
                }
                Err(e) => {
                    tracing::warn!(node = %node_id, "the node on Golem did not answer after the restart: {e}");
                    let _ = self.stop(node_id).await;
                    return Err(BackendError::Start(format!(
                        "the provider's node did not answer after the server restarted: {e}"
                    )));
                }
            }
        }
        let network = args
            .network
            .map(|n| n.to_string())
            .unwrap_or_else(|| "dev".into());
        // The user may ask for less than the server's budget and a lower price cap, never more.
        let budget = terms
            .budget
            .map_or(shared.config.budget, |b| b.min(shared.config.budget));
        let cap = match (terms.max_price_per_hour, shared.config.max_price_per_hour) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let allocation = shared
            .yagna
            .create_allocation(&NewAllocation {
                address: None,
                payment_platform: Some(PaymentPlatformEnum::PaymentPlatformName(
                    shared.config.payment_platform.clone(),
                )),
                total_amount: glm(budget),
                timeout: None,
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
        let demanded = Instant::now();
        let mut failed_providers: Vec<String> = Vec::new();
        let mut last_error = String::new();
        for _ in 0..ATTEMPTS {
            let accept = |p: &Proposal| {
                if failed_providers
                    .iter()
                    .any(|f| f == &p.issuer_id.to_string().to_lowercase())
                {
                    return Err("failed to start this node already".to_owned());
                }
                shared.acceptable(p, &network, cap)
            };
            let options = DealOptions {
                timeout: shared.config.deal_timeout,
                window: shared.config.offer_window,
                accept: &accept,
                price: &price_per_hour,
            };
            let deal = match make_deal_with(&shared.yagna, &spec, &options).await {
                Ok(deal) => deal,
                Err(DealError::NoDeal { waited, rejections }) => {
                    let _ = shared
                        .yagna
                        .release_allocation(&allocation.allocation_id)
                        .await;
                    let heard = if rejections.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", rejections.join("; "))
                    };
                    let why = if last_error.is_empty() {
                        String::new()
                    } else {
                        format!("; last failure: {last_error}")
                    };
                    return Err(BackendError::Start(format!(
                        "no offers for {network} within {}s{heard}{why}",
                        waited.as_secs()
                    )));
                }
                Err(e) => {
                    let _ = shared
                        .yagna
                        .release_allocation(&allocation.allocation_id)
                        .await;
                    return Err(BackendError::Start(e.to_string()));
                }
            };
            match self
                .run_node(
                    node_id,
                    &args,
                    &deal,
                    budget,
                    &allocation.allocation_id,
                    demanded,
                )
                .await
            {
                Ok(status) => return Ok(status),
                Err(e) => {
                    tracing::warn!(node = %node_id, provider = %deal.provider_id, "starting on the provider failed: {e}");
                    let _ = shared
                        .yagna
                        .terminate_agreement(&deal.agreement_id, &e)
                        .await;
                    failed_providers.push(deal.provider_id.clone());
                    last_error = e;
                }
            }
        }
        let _ = shared
            .yagna
            .release_allocation(&allocation.allocation_id)
            .await;
        Err(BackendError::Start(format!(
            "no provider could start the node: {last_error}"
        )))
    }

    async fn status(&self, node_id: &str) -> Result<NodeStatus, BackendError> {
        let out = self.run_entry(node_id, "STATUS").await?;
        parse_status(&out).map_err(BackendError::Other)
    }

    async fn stop(&self, node_id: &str) -> Result<(), BackendError> {
        let deal = self
            .shared
            .deal(node_id)
            .ok_or_else(|| BackendError::Unknown(node_id.to_owned()))?;
        self.shared.update(node_id, |d| {
            d.stopped_at = Some(Utc::now().timestamp_millis())
        });
        // Destroying the activity makes the provider revoke the credentials and stop the node;
        // then the agreement ends and its invoice comes (paid by the payments task).
        let destroyed = self.shared.yagna.destroy_activity(&deal.activity_id).await;
        let _ = self
            .shared
            .yagna
            .terminate_agreement(&deal.agreement_id, "the user stopped the node")
            .await;
        destroyed
            .map_err(|e| BackendError::Other(format!("the provider did not confirm the stop: {e}")))
    }

    async fn rotate(&self, node_id: &str) -> Result<Credentials, BackendError> {
        let out = self.run_entry(node_id, "ROTATE").await?;
        serde_json::from_str(out.trim())
            .map_err(|e| BackendError::Other(format!("ROTATE did not parse: {e}")))
    }

    fn billing(&self, node_id: &str) -> Option<Billing> {
        let deal = self.shared.deal(node_id)?;
        let runway_secs = if deal.price_per_hour > 0.0 {
            let left = (deal.budget
                - deal
                    .due_at_most(Utc::now().timestamp_millis())
                    .min(deal.budget))
            .max(0.0);
            Some((left / deal.price_per_hour * 3600.0) as u64)
        } else {
            None
        };
        Some(Billing {
            provider_id: deal.provider_id,
            provider_name: deal.provider_name,
            agreement_id: deal.agreement_id,
            price_per_hour: deal.price_per_hour,
            start_fee: deal.start_fee,
            spent: deal.spent,
            budget: deal.budget,
            runway_secs: runway_secs.filter(|_| deal.stopped_at.is_none()),
            settled: deal.settled,
            refused: deal.refused,
        })
    }
}

impl GolemBackend {
    /// `run <entry>` in the node's activity; its stdout.
    async fn run_entry(&self, node_id: &str, entry: &str) -> Result<String, BackendError> {
        let deal = self
            .shared
            .deal(node_id)
            .ok_or_else(|| BackendError::Unknown(node_id.to_owned()))?;
        let script = json!([{"run": {"entry_point": entry, "args": []}}]);
        let out = run_script(&self.shared.yagna, &deal.activity_id, script)
            .await
            .map_err(BackendError::Other)?;
        Ok(out.into_iter().next().unwrap_or_default())
    }

    /// Activity + deploy/start/STATUS on the provider of `deal`; records the deal.
    async fn run_node(
        &self,
        node_id: &str,
        args: &StartArgs,
        deal: &erigolem_yagna::requestor::Deal,
        budget: f64,
        allocation_id: &str,
        demanded: Instant,
    ) -> Result<NodeStatus, String> {
        let yagna = &self.shared.yagna;
        let agreement_at = demanded.elapsed();
        let activity = yagna
            .create_activity(&deal.agreement_id, Duration::from_secs(15))
            .await
            .map_err(|e| e.to_string())?;
        let activity_at = demanded.elapsed();
        let record = NodeDeal {
            agreement_id: deal.agreement_id.clone(),
            activity_id: activity.clone(),
            provider_id: deal.provider_id.clone(),
            provider_name: prop_str(&deal.offer.properties, "golem.node.id.name")
                .map(str::to_owned),
            price_per_hour: price_per_hour(&deal.offer),
            start_fee: start_fee(&deal.offer),
            allocation_id: allocation_id.to_owned(),
            budget,
            spent: 0.0,
            started_at: Utc::now().timestamp_millis(),
            stopped_at: None,
            settled: false,
            refused: None,
            start_ms: None,
        };
        // Recorded before the node starts: a debit note may come at once, and a crash must not
        // forget an agreement that costs money.
        if let Ok(mut deals) = self.shared.deals.lock() {
            deals.insert(node_id.to_owned(), record);
        }
        self.shared.save();
        let start = serde_json::to_string(args).map_err(|e| e.to_string())?;
        let result = run_script(
            yagna,
            &activity,
            json!([{"deploy": {}}, {"start": {"args": [start]}}, {"run": {"entry_point": "STATUS", "args": []}}]),
        )
        .await
        .and_then(|out| parse_status(out.get(2).map(String::as_str).unwrap_or_default()));
        if result.is_ok() {
            let ms = |d: Duration| d.as_millis() as u64;
            let times = StartTimes {
                first_offer: ms(deal.first_offer_after),
                agreement: ms(agreement_at),
                activity: ms(activity_at),
                runtime: ms(demanded.elapsed()),
            };
            self.shared.update(node_id, |d| d.start_ms = Some(times));
        }
        if let Err(e) = &result {
            self.shared.update(node_id, |d| {
                d.stopped_at = Some(Utc::now().timestamp_millis())
            });
            let _ = yagna.destroy_activity(&activity).await;
            tracing::warn!(node = %node_id, "{e}");
        }
        result
    }
}
