//! Which nodes this replica controls. Several `erigolem serve` replicas may share one PostgreSQL
//! database (golem backend); each node's STATUS polls, payments, stop and replacement belong to
//! the replica holding its lease in the store. Every tick a replica renews what it holds, gives up
//! what another took, hands back what needs nobody and takes free leases (those of a replica that
//! died, once they expired) — the decisions are `erigolem_lifecycle::lease`'s; this module carries
//! them out. A node taken over goes through the lifecycle core as after a restart (`Restarted`):
//! its agreement, URL and credentials are picked up as they are.
//!
//! A user's stop or delete that reaches a replica not holding the node is handed to its holder
//! through the store (`node_requests`, woken by `NOTIFY`), or carried out here if nobody holds it.
//! Progress of polled nodes and transitions reach every replica's event streams through
//! PostgreSQL `LISTEN/NOTIFY` (see [`spawn_listener`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use erigolem_lifecycle::lease::{self, Route, Tick};
use erigolem_lifecycle::node::Event;
use erigolem_store::{channel, NewReplica, ReplicaRecord, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::reconciler::{self, Handled};
use crate::AppState;

/// One node this replica holds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HeldNode {
    pub(crate) epoch: i64,
    /// When this replica took it (unix ms).
    pub(crate) since: i64,
}

/// This replica's leases (in memory: what it believes it holds, checked against the store every
/// tick) and what it polled.
#[derive(Debug)]
pub(crate) struct Leases {
    pub(crate) me: String,
    pub(crate) ttl: Duration,
    /// Other replicas may share the database (PostgreSQL). With SQLite this is the only one:
    /// nobody can take its leases, so a late tick fences nothing.
    shared: bool,
    held: Mutex<BTreeMap<String, HeldNode>>,
    /// When a renewal last went through.
    renewed: Mutex<Instant>,
    /// Woken when another replica hands leases back or leaves a request.
    pub(crate) wake: Notify,
    /// STATUS polls this process made, per node: how many, and the last one (unix ms).
    polls: Mutex<HashMap<String, (u64, i64)>>,
}

impl Leases {
    pub(crate) fn new(me: String, ttl: Duration, shared: bool) -> Self {
        Self {
            me,
            ttl,
            shared,
            held: Mutex::default(),
            renewed: Mutex::new(Instant::now()),
            wake: Notify::new(),
            polls: Mutex::default(),
        }
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether this replica controls node `id` now: it took the lease, and its last renewal is
    /// recent enough that nobody else may have taken it (a replica whose ticks are late — a
    /// pause, a slow database — stops acting on its nodes before they can expire).
    pub(crate) fn holds(&self, id: &str) -> bool {
        let since = self
            .renewed
            .lock()
            .map(|at| i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(i64::MAX);
        !(self.shared && lease::fenced(since, self.ttl_ms())) && self.lock().contains_key(id)
    }

    /// A lease this replica just took (a node it created, a replacement, a takeover).
    pub(crate) fn adopt(&self, id: &str, epoch: i64) {
        self.lock().insert(
            id.to_owned(),
            HeldNode {
                epoch,
                since: erigolem_store::now_ms(),
            },
        );
        self.gauge();
    }

    pub(crate) fn held(&self) -> BTreeMap<String, HeldNode> {
        self.lock().clone()
    }

    /// A STATUS poll of node `id` is being made.
    pub(crate) fn polled(&self, id: &str) {
        if let Ok(mut p) = self.polls.lock() {
            let entry = p.entry(id.to_owned()).or_insert((0, 0));
            entry.0 += 1;
            entry.1 = erigolem_store::now_ms();
        }
    }

    /// Forgets the polls of nodes that no longer run (bounded: one entry per running node).
    pub(crate) fn forget_polls_except(&self, running: &[erigolem_store::NodeRecord]) {
        if let Ok(mut p) = self.polls.lock() {
            p.retain(|id, _| running.iter().any(|n| &n.id == id));
        }
    }

    /// STATUS polls this process made: node → (count, last at).
    pub(crate) fn polls(&self) -> HashMap<String, (u64, i64)> {
        self.polls.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HeldNode>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self, ids: &[String]) {
        let mut held = self.lock();
        for id in ids {
            held.remove(id);
        }
        drop(held);
        self.gauge();
    }

    fn gauge(&self) {
        metrics::gauge!("erigolem_leases_held").set(self.lock().len() as f64);
    }
}

/// Why this replica may not run beside the others on this database, if it may not. The local
/// backend's nodes are its own child processes: nobody else could take them over, so it runs
/// alone; and nobody runs beside it.
pub(crate) fn refusal(backend: &str, others: &[ReplicaRecord]) -> Option<String> {
    let other = if backend == "local" {
        others.first()
    } else {
        others.iter().find(|o| o.backend == "local")
    }?;
    Some(format!(
        "another erigolem serve (replica {}, {} backend, listening on {} on host {}, data dir {}) \
         runs on this database; the local backend runs nodes as the server's own child \
         processes, so a database with the local backend has one server only: stop that one \
         first, or run every replica with --backend golem",
        other.id, other.backend, other.listen, other.host, other.data_dir
    ))
}

/// Registers replica `me` (`backend`, `data_dir`, `listen`), refusing to run beside a
/// local-backend one (or, with the local backend, beside any), and hands back at once the leases
/// of earlier processes on this host with this data dir (a restart after a crash: they are dead).
/// Runs before the backend starts: a refused server starts nothing.
pub(crate) async fn register(
    store: &erigolem_store::Store,
    me: &str,
    ttl: Duration,
    backend: &str,
    data_dir: &std::path::Path,
    listen: &str,
) -> Result<(), crate::ServerError> {
    let host = hostname();
    let data_dir = data_dir.display().to_string();
    let others = store
        .register_replica(
            &NewReplica {
                id: me.to_owned(),
                backend: backend.to_owned(),
                host: host.clone(),
                data_dir: data_dir.clone(),
                listen: listen.to_owned(),
            },
            i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        )
        .await?;
    let (predecessors, others): (Vec<_>, Vec<_>) = others
        .into_iter()
        .partition(|o| o.host == host && o.data_dir == data_dir);
    if let Some(why) = refusal(backend, &others) {
        let _ = store.remove_replica(me).await;
        return Err(crate::ServerError::Replicas(why));
    }
    for dead in predecessors {
        tracing::warn!(replica = %dead.id, "an earlier server with this data dir left leases: taking them over");
        store.release_leases(&dead.id, None).await?;
        store.remove_replica(&dead.id).await?;
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// One tick: renew, reconcile with the store's view, take free leases (each taken node is picked
/// up as after a restart), and carry out the requests left for this replica's nodes.
pub(crate) async fn tick(state: &Arc<AppState>) -> Result<(), StoreError> {
    let store = &state.store;
    let leases = &state.leases;
    let ttl = leases.ttl_ms();
    if !store.heartbeat(&leases.me, ttl).await? {
        // Removed as dead (it paused for long): register again; what it held was taken.
        if let Err(e) = register(
            store,
            &leases.me,
            leases.ttl,
            state.backend_name(),
            &state.config.data_dir,
            &state.listen,
        )
        .await
        {
            tracing::error!("registering again: {e}");
        }
    }
    // The leases last from when the renewal was sent, at the latest: count from then.
    let sent = Instant::now();
    store.renew_leases(&leases.me, ttl).await?;
    if let Ok(mut at) = leases.renewed.lock() {
        *at = sent;
    }
    let rows = store.leases().await?;
    let needed = store.needed_nodes().await?;
    let replicas = store.live_replicas().await?.len().max(1);
    let now = store.db_now().await?;
    let held: BTreeMap<String, i64> = leases
        .held()
        .into_iter()
        .map(|(id, h)| (id, h.epoch))
        .collect();
    let plan = lease::plan(&Tick {
        me: &leases.me,
        now,
        ttl,
        replicas,
        leases: &rows,
        needed: &needed,
        held: &held,
    });
    if !plan.lost.is_empty() {
        tracing::warn!(nodes = ?plan.lost, "leases taken by another replica: no longer controlled here");
        metrics::counter!("erigolem_leases_lost_total").increment(plan.lost.len() as u64);
        leases.forget(&plan.lost);
    }
    if !plan.release.is_empty() {
        leases.forget(&plan.release);
        store
            .release_leases(&leases.me, Some(&plan.release))
            .await?;
    }
    for (id, epoch) in store.take_leases(&leases.me, plan.take, ttl).await? {
        tracing::info!(node = %id, epoch, "took the node's lease");
        metrics::counter!("erigolem_lease_takeovers_total").increment(1);
        leases.adopt(&id, epoch);
        let state = state.clone();
        crate::spawn_until(state.shutting_down.subscribe(), async move {
            pick_up(&state, &id).await;
        });
    }
    for request in store.take_requests(&leases.me).await? {
        let state = state.clone();
        crate::spawn_until(state.shutting_down.subscribe(), async move {
            let outcome = match carry_out_request(&state, &request.node_id, &request.request).await
            {
                Ok(h) => outcome_text(&h),
                Err(e) => format!("error:{e}"),
            };
            if let Err(e) = state.store.finish_request(request.id, &outcome).await {
                tracing::warn!(node = %request.node_id, "recording a request's outcome: {e}");
            }
        });
    }
    Ok(())
}

/// A node whose lease this replica took: through the core as after a restart (running: picked
/// up; stopping: stopped; half-started: failed; a deleted node's open agreement: ended).
pub(crate) async fn pick_up(state: &Arc<AppState>, id: &str) {
    match reconciler::handle(state, id, Event::Restarted).await {
        Ok(Handled::Missing) => {
            if let Some(backend) = &state.backend {
                if let Err(e) = backend.stop(id).await {
                    tracing::warn!(node = %id, "ending a deleted node's agreement: {e}");
                }
            }
        }
        Ok(_) => {}
        Err(e) => tracing::error!(node = %id, "picking the node up: {e}"),
    }
}

/// Renews and takes leases every `ttl / 6` (and at once when woken) until the server shuts
/// down; a replica that could not renew for two thirds of a ttl stops controlling its nodes.
pub(crate) fn spawn(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    crate::spawn_until(state.shutting_down.subscribe(), async move {
        let every = (state.leases.ttl / 6).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = state.leases.wake.notified() => {}
            }
            if let Err(e) = tick(&state).await {
                let since = state
                    .leases
                    .renewed
                    .lock()
                    .map(|at| at.elapsed())
                    .unwrap_or_default();
                let since = i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
                tracing::warn!("leases: {e}");
                if state.leases.shared && lease::fenced(since, state.leases.ttl_ms()) {
                    let held: Vec<String> = state.leases.held().into_keys().collect();
                    if !held.is_empty() {
                        tracing::error!(
                            nodes = held.len(),
                            "leases not renewed in time: no longer controlling any node"
                        );
                        metrics::counter!("erigolem_leases_lost_total")
                            .increment(held.len() as u64);
                        state.leases.forget(&held);
                    }
                }
            }
        }
    })
}

/// Graceful shutdown: every lease handed back at once (the others take them at their next tick,
/// woken by `NOTIFY`), and this replica gone from the list.
pub(crate) async fn hand_back(state: &AppState) {
    let me = &state.leases.me;
    match state.store.release_leases(me, None).await {
        Ok(n) => tracing::info!(leases = n, "handed the leases back"),
        Err(e) => tracing::warn!("handing the leases back: {e}"),
    }
    let _ = state.store.remove_replica(me).await;
    state
        .leases
        .forget(&state.leases.held().into_keys().collect::<Vec<_>>());
}

/// The user's stop or delete of node `id`, wherever its holder is: here (or nobody: taken here
/// first), or handed to the replica holding it, waiting for its outcome. If that replica dies
/// meanwhile, its lease expires and the request is carried out here.
pub(crate) async fn user_request(
    state: &Arc<AppState>,
    id: &str,
    event: Event,
) -> Result<Handled, StoreError> {
    let request = match event {
        Event::StopAsked => "stop",
        Event::DeleteAsked => "delete",
        other => return reconciler::handle(state, id, other).await,
    };
    let leases = &state.leases;
    let deadline = Instant::now() + leases.ttl * 3 + Duration::from_secs(30);
    let mut handed: Option<i64> = None;
    loop {
        if let Some(req) = handed {
            if let Some(outcome) = state.store.request_outcome(req).await? {
                return Ok(parse_outcome(&outcome));
            }
        }
        let lease_row = state.store.lease(id).await?;
        let now = state.store.db_now().await?;
        match lease::route(lease_row.as_ref(), &leases.me, leases.holds(id), now) {
            Route::Here => {
                let handled = carry_out_request(state, id, request).await?;
                if let Some(req) = handed {
                    state
                        .store
                        .finish_request(req, &outcome_text(&handled))
                        .await?;
                }
                return Ok(handled);
            }
            Route::Take => {
                if let Some(epoch) = state
                    .store
                    .take_lease(&leases.me, id, leases.ttl_ms())
                    .await?
                {
                    leases.adopt(id, epoch);
                    metrics::counter!("erigolem_lease_takeovers_total").increment(1);
                    pick_up(state, id).await;
                    if let Some(req) = handed {
                        // Its replica is gone: ours to carry out (unless it has an outcome).
                        state.store.take_request_back(&leases.me, req).await?;
                    }
                }
                continue;
            }
            Route::Holder(holder) => {
                if handed.is_none() {
                    tracing::info!(node = %id, %holder, request, "handing the request to the node's replica");
                    handed = Some(state.store.put_request(id, request).await?);
                }
            }
        }
        if Instant::now() > deadline {
            return Ok(Handled::StopFailed(
                "the server that controls the node did not carry the request out in time".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn carry_out_request(
    state: &Arc<AppState>,
    id: &str,
    request: &str,
) -> Result<Handled, StoreError> {
    let event = if request == "delete" {
        Event::DeleteAsked
    } else {
        Event::StopAsked
    };
    reconciler::handle(state, id, event).await
}

fn outcome_text(h: &Handled) -> String {
    match h {
        Handled::Done => "done".into(),
        Handled::Deleted => "deleted".into(),
        Handled::Missing => "missing".into(),
        Handled::Conflict(erigolem_lifecycle::Conflict::NotStopped(s)) => format!("conflict:{s}"),
        Handled::StopFailed(why) => format!("stop_failed:{why}"),
    }
}

fn parse_outcome(text: &str) -> Handled {
    match text.split_once(':') {
        None if text == "deleted" => Handled::Deleted,
        None if text == "missing" => Handled::Missing,
        None => Handled::Done,
        Some(("conflict", s)) => match s.parse() {
            Ok(state) => Handled::Conflict(erigolem_lifecycle::Conflict::NotStopped(state)),
            Err(_) => Handled::Done,
        },
        Some((_, why)) => Handled::StopFailed(why.to_owned()),
    }
}

/// A polled node's progress as it travels between replicas.
#[derive(Debug, Serialize, Deserialize)]
struct ProgressNote {
    replica: String,
    owner: String,
    progress: crate::routes::events::Progress,
    live: crate::lag::LiveStatus,
}

/// PostgreSQL notifications carry at most 8000 bytes.
const MAX_NOTE: usize = 7900;

/// Tells the other replicas' event streams (and caches) about a poll of a node held here.
pub(crate) async fn share_progress(
    state: &AppState,
    progress: &crate::routes::events::Progress,
    live: crate::lag::LiveStatus,
) {
    if !state.store.shared() {
        return;
    }
    let mut note = ProgressNote {
        replica: state.leases.me.clone(),
        owner: progress.owner.clone(),
        progress: progress.clone(),
        live,
    };
    let mut text = serde_json::to_string(&note).unwrap_or_default();
    // NOTIFY payloads are small (8,000 bytes): what can be left out goes first.
    if text.len() > MAX_NOTE {
        note.progress.event.sync = None;
        text = serde_json::to_string(&note).unwrap_or_default();
    }
    if text.len() > MAX_NOTE {
        note.progress.event.usage = None;
        text = serde_json::to_string(&note).unwrap_or_default();
    }
    if text.len() > MAX_NOTE {
        return;
    }
    if let Err(e) = state.store.notify(channel::PROGRESS, &text).await {
        tracing::debug!("sharing progress: {e}");
    }
}

/// Listens (PostgreSQL) for transitions, progress, handed-back leases and requests from every
/// replica; wakes the event feeds and the lease loop. Nothing to do with SQLite.
pub(crate) async fn spawn_listener(
    state: Arc<AppState>,
) -> Result<Option<tokio::task::JoinHandle<()>>, StoreError> {
    let Some(mut listener) = state
        .store
        .listen(&[
            channel::EVENTS,
            channel::PROGRESS,
            channel::LEASES,
            channel::REQUESTS,
        ])
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(crate::spawn_until(
        state.shutting_down.subscribe(),
        async move {
            loop {
                let (chan, payload) = match listener.recv().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!("notifications: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                match chan.as_str() {
                    channel::EVENTS => state.hub.notify(&payload),
                    channel::PROGRESS => {
                        let Ok(mut note) = serde_json::from_str::<ProgressNote>(&payload) else {
                            continue;
                        };
                        if note.replica == state.leases.me {
                            continue;
                        }
                        note.progress.owner = note.owner;
                        state.cache_live(&note.progress.event.node_id, note.live);
                        state.note_health(
                            &note.progress.event.node_id,
                            note.progress.event.health.clone(),
                        );
                        state.hub.progress(note.progress);
                    }
                    channel::LEASES | channel::REQUESTS => state.leases.wake.notify_one(),
                    _ => {}
                }
            }
        },
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn replica(id: &str, backend: &str) -> ReplicaRecord {
        ReplicaRecord {
            id: id.into(),
            backend: backend.into(),
            host: "h".into(),
            data_dir: "/d".into(),
            listen: "127.0.0.1:1".into(),
            started_at: 0,
            expires_at: 1,
        }
    }

    #[test]
    fn who_may_run_beside_whom() {
        let cases = [
            ("local", vec![], false, "the local backend alone"),
            (
                "local",
                vec![replica("a", "golem")],
                true,
                "local beside golem",
            ),
            (
                "local",
                vec![replica("a", "local")],
                true,
                "two local servers",
            ),
            (
                "golem",
                vec![replica("a", "golem"), replica("b", "golem")],
                false,
                "golem replicas",
            ),
            (
                "golem",
                vec![replica("a", "local")],
                true,
                "golem beside local",
            ),
            (
                "none",
                vec![replica("a", "local")],
                true,
                "sign-in only beside local",
            ),
            (
                "none",
                vec![replica("a", "golem")],
                false,
                "sign-in only beside golem",
            ),
        ];
        for (backend, others, refused, name) in cases {
            let got = refusal(backend, &others);
            assert_eq!(got.is_some(), refused, "{name}: {got:?}");
            if let Some(why) = got {
                assert!(
                    why.contains("replica a") && why.contains("--backend golem"),
                    "{why}"
                );
            }
        }
    }

    #[test]
    fn outcomes_travel_intact() {
        let cases = [
            Handled::Done,
            Handled::Deleted,
            Handled::Missing,
            Handled::Conflict(erigolem_lifecycle::Conflict::NotStopped(
                erigolem_lifecycle::NodeState::Running,
            )),
            Handled::StopFailed("yagna: down: really".into()),
        ];
        for h in cases {
            let back = parse_outcome(&outcome_text(&h));
            assert_eq!(format!("{back:?}"), format!("{h:?}"));
        }
    }
}
