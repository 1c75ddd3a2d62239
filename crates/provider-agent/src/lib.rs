//! The dedicated provider agent behind `erigolem-provider run`: publishes an offer for runtime
//! `erigon` on the Golem market through the provider's yagna, negotiates, approves agreements up to
//! its capacity, runs one exe-unit per activity (through [`ActivityRunner`]), bills with debit notes
//! and a final invoice priced from the agreement, and ends cleanly after its own restart.

pub mod misbehaviour;
pub mod props;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use erigolem_yagna::model::activity::provider_event::ProviderEventType;
use erigolem_yagna::model::market::{Agreement, ProviderEvent};
use erigolem_yagna::model::payment::{DocumentStatus, NewDebitNote, NewInvoice};
use erigolem_yagna::props::{decimal, LinearPrice};
use erigolem_yagna::{BigDecimal, DateTime, Utc, Yagna, YagnaError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use state::{AgentState, AgreementRecord, StateError};

/// GLM per hour of a running node, a fee per started node, and GLM per JSON-RPC request its
/// endpoint answered (0: not priced; the offer then does not list the request counter).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    pub per_hour: f64,
    pub start_fee: f64,
    pub per_request: f64,
}

impl Pricing {
    /// What `elapsed` of a node that answered `requests` costs under this linear price. The fee
    /// and the per-request part are exact decimals of the prices as offered.
    pub fn amount(&self, elapsed: Duration, requests: u64) -> BigDecimal {
        let ms = BigDecimal::from(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        // GLM has 18 decimals; what is below them is not charged.
        let time = (decimal(self.per_hour) * ms / BigDecimal::from(3_600_000u32)).with_scale(18);
        decimal(self.start_fee) + time + decimal(self.per_request) * BigDecimal::from(requests)
    }
}

/// What the runtime config can serve (from the runtime's `offer-template`) and how we bill it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedOffer {
    pub networks: Vec<String>,
    pub modes: Vec<String>,
    pub runtime_version: String,
    pub debit_note_interval_secs: u64,
}

/// An activity yagna asked us to run.
#[derive(Debug, Clone)]
pub struct ActivityStart {
    pub activity_id: String,
    pub agreement_id: String,
    pub requestor_id: String,
    /// The agreement's `golem.com.usage.vector`: what the exe-unit reports, in this order.
    pub usage_vector: Vec<String>,
}

/// Runs exe-units: the real one binds the activity on yagna's GSB and drives `ya-runtime-erigon`.
#[async_trait::async_trait]
pub trait ActivityRunner: Send + Sync + 'static {
    /// Starts the exe-unit; returns once yagna has been told the activity is `Initialized`.
    async fn start(&self, activity: ActivityStart) -> Result<Box<dyn RunningActivity>, String>;
    /// Tells yagna an activity whose exe-unit is gone (e.g. after our restart) is `Terminated`.
    async fn report_terminated(&self, activity_id: &str, reason: &str) -> Result<(), String>;
}

#[async_trait::async_trait]
pub trait RunningActivity: Send + Sync {
    /// Resolves when the activity ended by itself (a `terminate` command, a runtime failure).
    async fn ended(&self);
    /// Ends it: runtime shut down (credentials revoked), `Terminated` reported. Returns the
    /// requests answered in the end (see [`RunningActivity::requests`]), to invoice.
    async fn shutdown(self: Box<Self>, reason: &str) -> u64;
    /// CPU seconds used so far, for the usage vector.
    fn cpu_seconds(&self) -> f64 {
        0.0
    }
    /// JSON-RPC requests its endpoint answered so far (the `golem.usage.erigolem.requests`
    /// counter, as the exe-unit last reported it).
    fn requests(&self) -> u64 {
        0
    }
}

pub struct AgentConfig {
    pub yagna: Yagna,
    pub subnet: String,
    pub served: ServedOffer,
    pub pricing: Pricing,
    /// Most agreements (nodes) at once; more are refused.
    pub capacity: usize,
    pub payment_platform: String,
    /// The offer is re-published this often (and when yagna lost it).
    pub offer_ttl: Duration,
    pub debit_note_interval: Duration,
    /// A debit note not accepted within this ends the agreement.
    pub debit_note_accept_timeout: Duration,
    pub state_file: PathBuf,
    pub runner: Arc<dyn ActivityRunner>,
    /// Test-only: how this agent misbehaves (none by default).
    pub misbehaviour: misbehaviour::Misbehaviour,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("yagna", self.yagna.base())
            .field("subnet", &self.subnet)
            .field("served", &self.served)
            .field("pricing", &self.pricing)
            .field("capacity", &self.capacity)
            .field("payment_platform", &self.payment_platform)
            .field("state_file", &self.state_file)
            .field("misbehaviour", &self.misbehaviour)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    pub fn new(
        yagna: Yagna,
        served: ServedOffer,
        runner: Arc<dyn ActivityRunner>,
        state_file: PathBuf,
    ) -> Self {
        Self {
            yagna,
            subnet: "erigolem".into(),
            served,
            pricing: Pricing {
                per_hour: 0.1,
                start_fee: 0.0,
                per_request: 0.0,
            },
            capacity: 4,
            payment_platform: "erc20-hoodi-tglm".into(),
            offer_ttl: Duration::from_secs(30 * 60),
            debit_note_interval: Duration::from_secs(60),
            debit_note_accept_timeout: Duration::from_secs(240),
            state_file,
            runner,
            misbehaviour: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Yagna(#[from] YagnaError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Counts for logs, tests and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStats {
    pub offers_published: u64,
    pub proposals_countered: u64,
    pub proposals_rejected: u64,
    pub agreements_approved: u64,
    pub agreements_refused: u64,
    pub active_agreements: usize,
    pub active_activities: usize,
    pub debit_notes_sent: u64,
    pub invoices_sent: u64,
    pub invoices_settled: u64,
}

struct Live {
    record: AgreementRecord,
    activity: Option<Box<dyn RunningActivity>>,
    started: Option<Instant>,
    billing: Option<JoinHandle<()>>,
}

struct Shared {
    config: AgentConfig,
    node_id: String,
    /// Nonces of offers this process published: agreements on others are refused.
    nonces: Mutex<HashSet<String>>,
    live: tokio::sync::Mutex<HashMap<String, Live>>,
    /// Agreements being approved (count against capacity).
    approving: Mutex<HashSet<String>>,
    stats: Mutex<AgentStats>,
}

impl Shared {
    fn stat(&self, f: impl FnOnce(&mut AgentStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    async fn in_use(&self) -> usize {
        let live = self.live.lock().await.len();
        live + self.approving.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Our offer, with the nonce of the subscription it is published (or countered) under.
    fn offer(&self, nonce: &str) -> erigolem_yagna::model::market::NewOffer {
        let mut offer = props::offer(
            &self.config.served,
            &self.config.pricing,
            &self.node_id,
            &self.config.payment_platform,
            &self.config.subnet,
            nonce,
            self.config.debit_note_accept_timeout.as_secs(),
        );
        if let Some(name) = &self.config.misbehaviour.node_name {
            offer.properties["golem.node.id.name"] = serde_json::Value::from(name.clone());
        }
        offer
    }

    async fn persist(&self) {
        let live = self.live.lock().await;
        let state = AgentState {
            agreements: live
                .iter()
                .map(|(k, v)| (k.clone(), v.record.clone()))
                .collect(),
        };
        if let Err(e) = state.save(&self.config.state_file) {
            tracing::error!("saving agent state: {e}");
        }
    }
}

/// A running agent. Dropping it stops its loops; [`Agent::shutdown`] also ends every activity and bills it.
pub struct Agent {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node_id", &self.shared.node_id)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Agent {
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    pub fn stats(&self) -> AgentStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Ends every activity (credentials revoked), invoices and terminates the agreements, unsubscribes.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let ids: Vec<String> = self.shared.live.lock().await.keys().cloned().collect();
        for id in ids {
            end_agreement(&self.shared, &id, "the provider agent is shutting down").await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Connects to yagna, ends what a previous run left open, publishes the offer and starts the loops.
pub async fn spawn(config: AgentConfig) -> Result<Agent, AgentError> {
    let me = config.yagna.me().await?;
    let previous = AgentState::load(&config.state_file)?;
    let shared = Arc::new(Shared {
        config,
        node_id: me.identity.to_lowercase(),
        nonces: Mutex::new(HashSet::new()),
        live: tokio::sync::Mutex::new(HashMap::new()),
        approving: Mutex::new(HashSet::new()),
        stats: Mutex::new(AgentStats::default()),
    });
    recover(&shared, previous).await;
    let (stop, stopped) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(market_loop(shared.clone(), stopped.clone())),
        tokio::spawn(activity_loop(shared.clone(), stopped)),
    ];
    tracing::info!(node_id = %shared.node_id, "provider agent started");
    Ok(Agent {
        shared,
        stop,
        tasks,
    })
}

/// The exe-units of a previous run ended with it (their runtimes shut down when our pipes closed):
/// report their activities terminated, bill the time they ran, and terminate their agreements.
async fn recover(shared: &Arc<Shared>, previous: AgentState) {
    for record in previous.agreements.into_values() {
        let reason = "the provider agent restarted; the node it ran is gone";
        tracing::warn!(agreement = %record.agreement_id, "ending an agreement left by a previous run");
        if let Some(activity) = &record.activity_id {
            if let Err(e) = shared
                .config
                .runner
                .report_terminated(activity, reason)
                .await
            {
                tracing::warn!(%activity, "reporting Terminated: {e}");
            }
        }
        let ran = record
            .activity_started_at
            .map(|t| Duration::from_millis((now_ms() - t).max(0) as u64))
            .unwrap_or_default();
        // The exe-unit that counted its requests is gone: only time and fee are billed.
        finish_billing(shared, &record, ran, 0).await;
        terminate(shared, &record.agreement_id, reason).await;
    }
    shared.persist().await;
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// How long to wait before retrying after yagna did not answer.
const RETRY: Duration = Duration::from_millis(500);
/// Long-poll timeout of event calls.
const POLL: Duration = Duration::from_secs(2);

async fn market_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let yagna = shared.config.yagna.clone();
    let mut subscription: Option<(String, String, Instant)> = None; // (id, nonce, since)
    while !*stop.borrow() {
        let expired = subscription
            .as_ref()
            .is_some_and(|(_, _, since)| since.elapsed() >= shared.config.offer_ttl);
        if expired {
            if let Some((id, _, _)) = subscription.take() {
                let _ = yagna.unsubscribe_offer(&id).await;
            }
        }
        if subscription.is_none() {
            let nonce = uuid::Uuid::new_v4().to_string();
            let offer = shared.offer(&nonce);
            match yagna.subscribe_offer(&offer).await {
                Ok(id) => {
                    tracing::info!(subscription = %id, "offer published");
                    if let Ok(mut n) = shared.nonces.lock() {
                        n.insert(nonce.clone());
                    }
                    shared.stat(|s| s.offers_published += 1);
                    subscription = Some((id, nonce, Instant::now()));
                }
                Err(e) => {
                    tracing::warn!("publishing the offer: {e}");
                    pause(&mut stop, RETRY).await;
                    continue;
                }
            }
        }
        let Some((sub, nonce, _)) = subscription.clone() else {
            continue;
        };
        let events = tokio::select! {
            events = yagna.offer_events(&sub, POLL, 16) => events,
            _ = stop.changed() => break,
        };
        match events {
            Ok(events) => {
                for event in events {
                    handle_market_event(&shared, &sub, &nonce, event).await;
                }
            }
            // yagna lost the subscription (expired, or yagna restarted with another store): publish again.
            Err(e) if matches!(e.status().map(|s| s.as_u16()), Some(404 | 410)) => {
                tracing::info!("offer subscription gone ({e}); publishing again");
                subscription = None;
            }
            Err(e) => {
                tracing::warn!("market events: {e}");
                pause(&mut stop, RETRY).await;
            }
        }
    }
    if let Some((id, _, _)) = subscription {
        let _ = yagna.unsubscribe_offer(&id).await;
    }
}

async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
}

async fn handle_market_event(
    shared: &Arc<Shared>,
    subscription: &str,
    nonce: &str,
    event: ProviderEvent,
) {
    let yagna = &shared.config.yagna;
    match event {
        ProviderEvent::ProposalEvent { proposal, .. } => {
            // The market's match (Initial) is always answered with our offer: a rejection of it
            // would never reach the requestor. Its answer (a Draft) is where we serve or say why not.
            let initial = proposal.state == erigolem_yagna::model::market::proposal::State::Initial;
            let refusal = match props::refusal(
                &proposal.properties,
                &shared.config.served,
                &shared.config.payment_platform,
            ) {
                Some(reason) => Some(reason),
                None if shared.in_use().await >= shared.config.capacity => {
                    Some(format!("at capacity ({} nodes)", shared.config.capacity))
                }
                None => None,
            };
            match refusal.filter(|_| !initial) {
                Some(reason) => {
                    tracing::info!(proposal = %proposal.proposal_id, %reason, "proposal rejected");
                    shared.stat(|s| s.proposals_rejected += 1);
                    if let Err(e) = yagna
                        .reject_proposal_as_provider(subscription, &proposal.proposal_id, &reason)
                        .await
                    {
                        tracing::debug!("reject proposal: {e}");
                    }
                }
                None => {
                    let offer = shared.offer(nonce);
                    match yagna
                        .counter_offer(subscription, &proposal.proposal_id, &offer)
                        .await
                    {
                        Ok(_) => shared.stat(|s| s.proposals_countered += 1),
                        Err(e) => {
                            tracing::warn!(proposal = %proposal.proposal_id, "counter-proposal: {e}")
                        }
                    }
                }
            }
        }
        ProviderEvent::AgreementEvent { agreement, .. } => {
            let shared = shared.clone();
            // Approving waits for the requestor: never hold up the event loop for it.
            tokio::spawn(async move { decide_agreement(&shared, agreement).await });
        }
        ProviderEvent::ProposalRejectedEvent {
            proposal_id,
            reason,
            ..
        } => {
            tracing::info!(%proposal_id, reason = ?reason.map(|r| r.message), "the requestor rejected our proposal");
        }
        ProviderEvent::PropertyQueryEvent { .. } => {}
    }
}

/// How long approval waits for the requestor's side.
const APPROVE_TIMEOUT: Duration = Duration::from_secs(15);

async fn decide_agreement(shared: &Arc<Shared>, agreement: Agreement) {
    let yagna = &shared.config.yagna;
    let id = agreement.agreement_id.clone();
    let ours = props::prop_str(&agreement.offer.properties, props::NONCE).is_some_and(|n| {
        shared
            .nonces
            .lock()
            .map(|set| set.contains(n))
            .unwrap_or(false)
    });
    let refusal = if !ours {
        Some("the agreement is not on a current offer of this provider".to_owned())
    } else if let Some(r) = props::refusal(
        &agreement.demand.properties,
        &shared.config.served,
        &shared.config.payment_platform,
    ) {
        Some(r)
    } else {
        // Reserve capacity before the (slow) approval, so two agreements cannot both take the last slot.
        let reserved = {
            let in_use = shared.in_use().await;
            in_use < shared.config.capacity
                && shared
                    .approving
                    .lock()
                    .map(|mut a| a.insert(id.clone()))
                    .unwrap_or(false)
        };
        (!reserved).then(|| format!("at capacity ({} nodes)", shared.config.capacity))
    };
    if let Some(reason) = refusal {
        tracing::info!(agreement = %id, %reason, "agreement refused");
        shared.stat(|s| s.agreements_refused += 1);
        if let Err(e) = yagna.reject_agreement(&id, &reason).await {
            tracing::debug!("reject agreement: {e}");
        }
        return;
    }
    let approved = yagna.approve_agreement(&id, APPROVE_TIMEOUT).await;
    if let Ok(mut a) = shared.approving.lock() {
        a.remove(&id);
    }
    match approved {
        Ok(()) => {
            let agreed = agreed_pricing(&agreement).unwrap_or(shared.config.pricing);
            let usage_vector = erigolem_yagna::props::prop_list(
                &agreement.offer.properties,
                "golem.com.usage.vector",
            );
            let record = AgreementRecord {
                price_per_hour: agreed.per_hour,
                start_fee: agreed.start_fee,
                price_per_request: agreed.per_request,
                usage_vector,
                agreement_id: id.clone(),
                requestor_id: agreement.demand.requestor_id.to_string().to_lowercase(),
                network: props::prop_str(&agreement.demand.properties, props::DEMAND_NETWORK)
                    .unwrap_or_default()
                    .to_owned(),
                approved_at: now_ms(),
                activity_id: None,
                activity_started_at: None,
            };
            shared.live.lock().await.insert(
                id.clone(),
                Live {
                    record,
                    activity: None,
                    started: None,
                    billing: None,
                },
            );
            shared.persist().await;
            shared.stat(|s| {
                s.agreements_approved += 1;
                s.active_agreements += 1;
            });
            tracing::info!(agreement = %id, "agreement approved");
        }
        Err(e) => tracing::warn!(agreement = %id, "approval failed: {e}"),
    }
}

async fn activity_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let yagna = shared.config.yagna.clone();
    let mut after: DateTime<Utc> = Utc::now() - chrono_secs(5);
    while !*stop.borrow() {
        let events = tokio::select! {
            events = yagna.activity_events(after, POLL, 16) => events,
            _ = stop.changed() => break,
        };
        match events {
            Ok(events) => {
                for event in events {
                    after = after.max(event.event_date);
                    match event.event_type {
                        ProviderEventType::CreateActivity { .. } => {
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                create_activity(&shared, event.activity_id, event.agreement_id)
                                    .await
                            });
                        }
                        ProviderEventType::DestroyActivity {} => {
                            end_agreement(
                                &shared,
                                &event.agreement_id,
                                "the requestor destroyed the activity",
                            )
                            .await;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!("activity events: {e}");
                pause(&mut stop, RETRY).await;
            }
        }
    }
}

fn chrono_secs(s: i64) -> erigolem_yagna::chrono::Duration {
    erigolem_yagna::chrono::Duration::seconds(s)
}

async fn create_activity(shared: &Arc<Shared>, activity_id: String, agreement_id: String) {
    let (requestor_id, usage_vector) = {
        let live = shared.live.lock().await;
        match live.get(&agreement_id) {
            Some(l) if l.activity.is_none() => {
                (l.record.requestor_id.clone(), l.record.usage_vector())
            }
            Some(_) => {
                tracing::warn!(%agreement_id, "a second activity on one agreement is refused");
                return;
            }
            None => {
                tracing::warn!(%agreement_id, %activity_id, "CreateActivity for an agreement we do not hold");
                return;
            }
        }
    };
    let start = ActivityStart {
        activity_id: activity_id.clone(),
        agreement_id: agreement_id.clone(),
        requestor_id,
        usage_vector,
    };
    match shared.config.runner.start(start).await {
        Ok(running) => {
            {
                let mut live = shared.live.lock().await;
                let Some(l) = live.get_mut(&agreement_id) else {
                    drop(live);
                    running.shutdown("the agreement ended").await;
                    return;
                };
                l.record.activity_id = Some(activity_id.clone());
                l.record.activity_started_at = Some(now_ms());
                l.started = Some(Instant::now());
                l.activity = Some(running);
                let pricing = l.record.pricing();
                l.billing = Some(tokio::spawn(billing_loop(
                    shared.clone(),
                    agreement_id.clone(),
                    activity_id.clone(),
                    pricing,
                )));
            }
            shared.persist().await;
            shared.stat(|s| s.active_activities += 1);
            tracing::info!(%activity_id, %agreement_id, "activity started");
            watch_activity_end(shared.clone(), agreement_id);
        }
        Err(e) => {
            tracing::error!(%activity_id, "exe-unit failed to start: {e}");
            end_agreement(
                shared,
                &agreement_id,
                &format!("the exe-unit failed to start: {e}"),
            )
            .await;
        }
    }
}

/// When an activity ends by itself (`terminate` command, runtime failure), end its agreement too.
fn watch_activity_end(shared: Arc<Shared>, agreement_id: String) {
    tokio::spawn(async move {
        loop {
            {
                let live = shared.live.lock().await;
                let Some(activity) = live.get(&agreement_id).and_then(|l| l.activity.as_ref())
                else {
                    return;
                };
                // `ended` borrows the activity: poll it briefly so the lock is not held.
                if tokio::time::timeout(Duration::from_millis(10), activity.ended())
                    .await
                    .is_ok()
                {
                    drop(live);
                    end_agreement(&shared, &agreement_id, "the activity ended").await;
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// Debit notes while the node runs: the amount due so far, priced from the agreement's terms. A note
/// that is not accepted in time ends the agreement.
async fn billing_loop(
    shared: Arc<Shared>,
    agreement_id: String,
    activity_id: String,
    pricing: Pricing,
) {
    let started = Instant::now();
    let mut unaccepted: Option<(String, Instant)> = None;
    loop {
        tokio::time::sleep(shared.config.debit_note_interval).await;
        let yagna = &shared.config.yagna;
        if let Some((id, issued)) = &unaccepted {
            match yagna.debit_note(id).await {
                Ok(note)
                    if matches!(
                        note.status,
                        DocumentStatus::Accepted | DocumentStatus::Settled
                    ) =>
                {
                    unaccepted = None
                }
                Ok(note) if note.status == DocumentStatus::Rejected => {
                    let shared = shared.clone();
                    let agreement_id = agreement_id.clone();
                    tokio::spawn(async move {
                        end_agreement(
                            &shared,
                            &agreement_id,
                            "the requestor rejected a debit note",
                        )
                        .await
                    });
                    return;
                }
                _ if issued.elapsed() > shared.config.debit_note_accept_timeout => {
                    let shared = shared.clone();
                    let agreement_id = agreement_id.clone();
                    tokio::spawn(async move {
                        end_agreement(
                            &shared,
                            &agreement_id,
                            "debit notes were not accepted in time",
                        )
                        .await
                    });
                    return;
                }
                _ => {}
            }
        }
        let elapsed = started.elapsed();
        let (requests, vector) = {
            let live = shared.live.lock().await;
            let Some(l) = live.get(&agreement_id) else {
                return;
            };
            let requests = l.activity.as_ref().map(|a| a.requests()).unwrap_or(0);
            (requests, l.record.usage_vector())
        };
        let due = pricing.amount(elapsed, requests);
        let note = NewDebitNote {
            activity_id: activity_id.clone(),
            total_amount_due: match shared.config.misbehaviour.overbill_debit_notes {
                Some(factor) => (due * decimal(factor)).with_scale(18),
                None => due,
            },
            usage_counter_vector: Some(usage_counters(&vector, elapsed, requests)),
            payment_due_date: None,
        };
        match yagna.issue_debit_note(&note).await {
            Ok(issued) => match yagna.send_debit_note(&issued.debit_note_id).await {
                Ok(()) => {
                    shared.stat(|s| s.debit_notes_sent += 1);
                    if unaccepted.is_none() {
                        unaccepted = Some((issued.debit_note_id, Instant::now()));
                    }
                }
                Err(e) => tracing::warn!(%activity_id, "sending a debit note: {e}"),
            },
            Err(e) => tracing::warn!(%activity_id, "issuing a debit note: {e}"),
        }
    }
}

/// The usage vector of a debit note, in the agreement's order: the agent's own measure of time,
/// the requests the exe-unit reported (CPU is not priced, reported as 0).
fn usage_counters(vector: &[String], elapsed: Duration, requests: u64) -> serde_json::Value {
    let values: Vec<f64> = vector
        .iter()
        .map(|name| match name.as_str() {
            props::DURATION_SEC => elapsed.as_secs_f64(),
            props::REQUESTS => requests as f64,
            _ => 0.0,
        })
        .collect();
    serde_json::json!(values)
}

/// The linear price an agreement's offer carries, read by counter name: duration, requests, and
/// the constant (start fee).
fn agreed_pricing(agreement: &Agreement) -> Option<Pricing> {
    let price = LinearPrice::from_properties(&agreement.offer.properties)?;
    Some(Pricing {
        per_hour: price.coeff(props::DURATION_SEC)? * 3600.0,
        start_fee: price.constant(),
        per_request: price.coeff(props::REQUESTS).unwrap_or(0.0),
    })
}

impl AgreementRecord {
    fn pricing(&self) -> Pricing {
        Pricing {
            per_hour: self.price_per_hour,
            start_fee: self.start_fee,
            per_request: self.price_per_request,
        }
    }

    /// The agreement's usage vector (records from before it was kept: the old one).
    fn usage_vector(&self) -> Vec<String> {
        if self.usage_vector.is_empty() {
            props::USAGE_VECTOR.iter().map(|s| s.to_string()).collect()
        } else {
            self.usage_vector.clone()
        }
    }
}

/// Ends an agreement once: shuts its activity down, invoices the time it ran, terminates it.
async fn end_agreement(shared: &Arc<Shared>, agreement_id: &str, reason: &str) {
    let Some(mut live) = shared.live.lock().await.remove(agreement_id) else {
        return;
    };
    shared.persist().await;
    if let Some(billing) = live.billing.take() {
        billing.abort();
    }
    let ran = live.started.map(|s| s.elapsed()).unwrap_or_default();
    let mut requests = 0;
    if let Some(activity) = live.activity.take() {
        requests = activity.shutdown(reason).await;
        shared.stat(|s| s.active_activities = s.active_activities.saturating_sub(1));
    }
    shared.stat(|s| s.active_agreements = s.active_agreements.saturating_sub(1));
    tracing::info!(%agreement_id, %reason, requests, "agreement ending");
    finish_billing(shared, &live.record, ran, requests).await;
    terminate(shared, agreement_id, reason).await;
}

/// Terminates an agreement; one already ended by the requestor is fine.
async fn terminate(shared: &Shared, agreement_id: &str, reason: &str) {
    if let Err(e) = shared
        .config
        .yagna
        .terminate_agreement(agreement_id, reason)
        .await
    {
        tracing::debug!(%agreement_id, "terminate: {e}");
    }
}

/// How long the agent watches an invoice for its settlement.
const SETTLEMENT_WATCH: Duration = Duration::from_secs(600);

/// The final invoice for an agreement whose activity ran `ran` and answered `requests`; then
/// watch it get paid.
async fn finish_billing(
    shared: &Arc<Shared>,
    record: &AgreementRecord,
    ran: Duration,
    requests: u64,
) {
    let Some(activity_id) = &record.activity_id else {
        return;
    };
    let yagna = &shared.config.yagna;
    let invoice = NewInvoice {
        agreement_id: record.agreement_id.clone(),
        activity_ids: Some(vec![activity_id.clone()]),
        amount: record.pricing().amount(ran, requests)
            + decimal(shared.config.misbehaviour.overbill_invoice.unwrap_or(0.0)),
        payment_due_date: Utc::now() + chrono_secs(3600),
    };
    let issued = match yagna.issue_invoice(&invoice).await {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(agreement = %record.agreement_id, "issuing the invoice: {e}");
            return;
        }
    };
    if let Err(e) = yagna.send_invoice(&issued.invoice_id).await {
        tracing::error!(invoice = %issued.invoice_id, "sending the invoice: {e}");
        return;
    }
    shared.stat(|s| s.invoices_sent += 1);
    tracing::info!(invoice = %issued.invoice_id, amount = %invoice.amount, "invoice sent");
    let shared = shared.clone();
    let id = issued.invoice_id;
    tokio::spawn(async move {
        let deadline = Instant::now() + SETTLEMENT_WATCH;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(inv) = shared.config.yagna.invoice(&id).await {
                if last != Some(inv.status) {
                    tracing::info!(invoice = %id, status = ?inv.status, "invoice status");
                    last = Some(inv.status);
                }
                match inv.status {
                    DocumentStatus::Settled => {
                        shared.stat(|s| s.invoices_settled += 1);
                        return;
                    }
                    DocumentStatus::Rejected
                    | DocumentStatus::Cancelled
                    | DocumentStatus::Failed => return,
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tracing::warn!(invoice = %id, "not settled within {SETTLEMENT_WATCH:?}");
    });
}
