//! The exe-unit itself. Everything here runs on the exe-unit's own thread, inside its own actix
//! System (ya-service-bus's connection is an actix actor; the runtime client's futures are not
//! `Send`): shared state is `Rc` + `RefCell`, and no borrow is held across an `.await`.
//!
//! Tasks: `serve` answers each GSB call; the [`Worker`] owns the runtime session and alone
//! changes the activity state, one job at a time (batches in arrival order, failures, the final
//! shutdown); `report_usage` sends the usage counters and watches the runtime process.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use chrono::Utc;
use erigolem_runtime_client::{ClientError, RuntimeBinary, Session};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc as tmpsc, oneshot, watch, Notify};
use ya_client_model::activity::{
    ActivityState, ActivityUsage, CommandOutput, ExeScriptCommand, ExeScriptCommandResult,
    ExeScriptCommandState, RuntimeEvent, RuntimeEventKind, State, StatePair,
};
use ya_service_bus::{Error as GsbError, ResponseChunk, RpcMessage, RpcStreamMessage};

use crate::batch::Batch;
use crate::gsb::{self, Connection, GsbUrl, Handler, Incoming};
use crate::messages::{
    exeunit_bus_id, Exec, GetExecBatchResults, GetRunningCommand, RpcMessageError, SetState,
    SetUsage, StreamExecBatchResults, LOCAL_ACTIVITY_BUS_ID,
};
use crate::usage::{alive, tree_cpu_seconds, usage_vector};
use crate::{ExeUnitConfig, ExeUnitError};

/// How long connecting to yagna's GSB may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait a `GetExecBatchResults` may ask for.
const MAX_RESULTS_WAIT: Duration = Duration::from_secs(3600);

/// From the [`crate::ExeUnit`] handle to its thread.
#[derive(Debug)]
pub(crate) enum Control {
    Shutdown {
        reason: String,
        done: Option<oneshot::Sender<()>>,
    },
}

/// Work for the [`Worker`], in order.
#[derive(Debug)]
enum Job {
    Batch(String),
    /// The activity ends now, with this error: the runtime died, the GSB connection was lost,
    /// yagna refused a report.
    Fail(String),
    /// The owner ends the activity (e.g. on yagna's `DestroyActivity`); the last job.
    Shutdown(String),
}

struct Shared {
    activity_id: String,
    agreement_id: String,
    requestor_id: String,
    /// `/public/exeunit/<activity id>`
    prefix: String,
    state: RefCell<ActivityState>,
    state_tx: watch::Sender<ActivityState>,
    usage_tx: watch::Sender<ActivityUsage>,
    batches: RefCell<HashMap<String, Batch>>,
    /// Some batch changed: waiters re-check their condition.
    changed: Notify,
    jobs: tmpsc::UnboundedSender<Job>,
    /// A shutdown was asked for: no new batch is accepted, no further command runs.
    stopping: Cell<bool>,
    connected: Cell<bool>,
    conn: Connection,
    runtime_pid: Cell<Option<u32>>,
    cpu_seconds: Cell<f64>,
    started: Instant,
    /// The agreement's usage vector.
    usage_vector: Vec<String>,
    /// The runtime's counters (kept after it ends, for the final report).
    counters: RefCell<Option<erigolem_runtime_client::Counters>>,
}

/// Runs the exe-unit until the owner asks it to shut down (or goes away). `ready` gets the
/// outcome of the start: connected, bound, `Initialized` reported.
pub(crate) async fn run(
    config: ExeUnitConfig,
    url: GsbUrl,
    state_tx: watch::Sender<ActivityState>,
    usage_tx: watch::Sender<ActivityUsage>,
    ready: oneshot::Sender<Result<(), ExeUnitError>>,
    mut control: tmpsc::UnboundedReceiver<Control>,
) {
    let started = Instant::now();
    let transport = match tokio::time::timeout(CONNECT_TIMEOUT, url.connect()).await {
        Ok(Ok(transport)) => transport,
        Ok(Err(source)) => {
            let _ = ready.send(Err(ExeUnitError::Connect {
                url: url.to_string(),
                source,
            }));
            return;
        }
        Err(_) => {
            let _ = ready.send(Err(ExeUnitError::Connect {
                url: url.to_string(),
                source: std::io::ErrorKind::TimedOut.into(),
            }));
            return;
        }
    };
    let (incoming_tx, mut incoming) = mpsc::unbounded();
    let (disconnected_tx, disconnected) = futures::channel::oneshot::channel();
    let conn = gsb::connect(
        transport,
        Handler {
            incoming: incoming_tx,
            disconnected: Some(disconnected_tx),
        },
    );

    let prefix = exeunit_bus_id(&config.activity_id);
    let addrs: Vec<String> = [
        Exec::ID,
        GetExecBatchResults::ID,
        GetRunningCommand::ID,
        <StreamExecBatchResults as RpcStreamMessage>::ID,
    ]
    .iter()
    .map(|id| format!("{prefix}/{id}"))
    .collect();
    for (i, addr) in addrs.iter().enumerate() {
        if let Err(e) = conn.bind(addr.clone()).await {
            unbind(&conn, &addrs[..i]).await;
            let _ = ready.send(Err(ExeUnitError::Bind {
                addr: addr.clone(),
                message: e.to_string(),
            }));
            return;
        }
    }

    let (jobs_tx, jobs) = tmpsc::unbounded_channel();
    let initial = state_tx.borrow().clone();
    let shared = Rc::new(Shared {
        activity_id: config.activity_id.clone(),
        agreement_id: config.agreement_id.clone(),
        requestor_id: config.requestor_id.clone(),
        prefix,
        state: RefCell::new(initial),
        state_tx,
        usage_tx,
        batches: RefCell::default(),
        changed: Notify::new(),
        jobs: jobs_tx,
        stopping: Cell::new(false),
        connected: Cell::new(true),
        conn: conn.clone(),
        runtime_pid: Cell::new(None),
        cpu_seconds: Cell::new(0.0),
        started,
        usage_vector: config.usage_vector.clone(),
        counters: RefCell::default(),
    });

    let server = {
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            while let Some(call) = incoming.next().await {
                tokio::task::spawn_local(serve(shared.clone(), call));
            }
        })
    };

    if let Err(e) = shared
        .report_state(StatePair::from(State::Initialized).into())
        .await
    {
        server.abort();
        unbind(&conn, &addrs).await;
        let _ = ready.send(Err(e));
        return;
    }
    tracing::info!(
        activity = %shared.activity_id,
        agreement = %shared.agreement_id,
        "exe-unit bound at {}",
        shared.prefix
    );

    {
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            if disconnected.await.is_ok() {
                shared.connected.set(false);
                let _ = shared
                    .jobs
                    .send(Job::Fail("lost the connection to yagna's GSB".into()));
            }
        });
    }
    let mut runtime = RuntimeBinary::new(&config.runtime, &config.workdir);
    runtime.env = config.env.clone();
    let worker = tokio::task::spawn_local(
        Worker {
            shared: shared.clone(),
            runtime,
            session: None,
            filter: config.run_filter.clone(),
            runs: HashMap::new(),
        }
        .run(jobs),
    );
    let reporter = tokio::task::spawn_local(report_usage(shared.clone(), config.usage_interval));
    let _ = ready.send(Ok(()));

    let (reason, done) = match control.recv().await {
        Some(Control::Shutdown { reason, done }) => (reason, done),
        None => ("the exe-unit's owner went away".to_owned(), None),
    };
    tracing::info!(activity = %shared.activity_id, "shutting down: {reason}");
    shared.stopping.set(true);
    let _ = shared.jobs.send(Job::Shutdown(reason));
    let _ = worker.await;
    reporter.abort();
    if shared.connected.get() {
        unbind(&conn, &addrs).await;
    }
    server.abort();
    if let Some(done) = done {
        let _ = done.send(());
    }
}

async fn unbind(conn: &Connection, addrs: &[String]) {
    for addr in addrs {
        if let Err(e) = conn.unbind(addr.clone()).await {
            tracing::debug!("unbinding {addr}: {e}");
        }
    }
}

impl Shared {
    fn state_pair(&self) -> StatePair {
        self.state.borrow().state
    }

    /// Refuses callers other than the agreement's requestor, and other activities.
    fn authorize(&self, caller: &str, activity_id: &str) -> Result<(), RpcMessageError> {
        // yagna's net module passes the calling node's id (`0x…`); accept `/net/0x…` as well.
        let caller_id = caller.rsplit('/').next().unwrap_or(caller);
        if !caller_id.eq_ignore_ascii_case(&self.requestor_id) {
            tracing::warn!(
                activity = %self.activity_id,
                "refused a call from {caller}: not the requestor"
            );
            return Err(RpcMessageError::Forbidden(format!(
                "{caller} is not the requestor of agreement {}",
                self.agreement_id
            )));
        }
        if activity_id != self.activity_id {
            return Err(RpcMessageError::Forbidden(format!(
                "invalid activity id: {activity_id}"
            )));
        }
        Ok(())
    }

    /// Sends the state to yagna; fails if it is not taken.
    async fn report_state(&self, state: ActivityState) -> Result<(), ExeUnitError> {
        *self.state.borrow_mut() = state.clone();
        self.state_tx.send_replace(state.clone());
        let msg = SetState::new(self.activity_id.clone(), state);
        match gsb::call(&self.conn, LOCAL_ACTIVITY_BUS_ID, &msg).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ExeUnitError::Refused {
                what: SetState::ID,
                message: e.to_string(),
            }),
            Err(e) => Err(ExeUnitError::Gsb(e.to_string())),
        }
    }

    /// Enters `state` and reports it (a failed report is logged: the activity goes on, as with
    /// yagna's exe-unit).
    async fn set_state(&self, state: ActivityState) {
        if *self.state.borrow() == state {
            return;
        }
        tracing::debug!(activity = %self.activity_id, "state {:?}", state.state);
        if !self.connected.get() {
            *self.state.borrow_mut() = state.clone();
            self.state_tx.send_replace(state);
            return;
        }
        if let Err(e) = self.report_state(state).await {
            tracing::warn!(activity = %self.activity_id, "reporting the state: {e}");
        }
    }

    fn emit(&self, batch_id: &str, event: RuntimeEvent) {
        if let Some(batch) = self.batches.borrow_mut().get_mut(batch_id) {
            batch.handle(event);
        }
        self.changed.notify_waiters();
    }

    fn finish_batch(&self, batch_id: &str) {
        if let Some(batch) = self.batches.borrow_mut().get_mut(batch_id) {
            batch.finish();
        }
        self.changed.notify_waiters();
    }

    /// CPU seconds of the runtime and its descendants so far (never decreasing).
    fn measure_cpu(&self) -> f64 {
        if let Some(seconds) = self.runtime_pid.get().and_then(tree_cpu_seconds) {
            self.cpu_seconds.set(self.cpu_seconds.get().max(seconds));
        }
        self.cpu_seconds.get()
    }

    /// The usage vector now (measuring CPU), published to the handle.
    fn measure_usage(&self) -> ActivityUsage {
        let cpu = self.measure_cpu();
        let counters = self.counters.borrow().clone();
        let vector = usage_vector(
            &self.usage_vector,
            self.started.elapsed().as_secs_f64(),
            cpu,
            |name| counters.as_ref().and_then(|c| c.get(name)),
        );
        let usage = ActivityUsage {
            current_usage: Some(vector),
            timestamp: Utc::now().timestamp(),
        };
        self.usage_tx.send_replace(usage.clone());
        usage
    }

    fn exec(&self, msg: Exec) -> Result<String, RpcMessageError> {
        let mut batches = self.batches.borrow_mut();
        if batches.contains_key(&msg.batch_id) {
            return Err(RpcMessageError::BadRequest(format!(
                "Batch {} already exists",
                msg.batch_id
            )));
        }
        if self.stopping.get() {
            return Err(RpcMessageError::Activity(format!(
                "activity {} is shutting down",
                self.activity_id
            )));
        }
        batches.insert(msg.batch_id.clone(), Batch::new(msg.exe_script));
        if self.jobs.send(Job::Batch(msg.batch_id.clone())).is_err() {
            batches.remove(&msg.batch_id);
            return Err(RpcMessageError::Service("the exe-unit has ended".into()));
        }
        Ok(msg.batch_id)
    }

    /// Waits (up to the message's timeout) until command `command_index` (or the last one) has
    /// finished or the batch ended, then gives the results so far. As yagna's exe-unit: a
    /// timeout is an error only when a command index was given.
    async fn results(
        &self,
        msg: GetExecBatchResults,
    ) -> Result<Vec<ExeScriptCommandResult>, RpcMessageError> {
        let len = match self.batches.borrow().get(&msg.batch_id) {
            Some(batch) => batch.commands.len(),
            None => {
                return Err(RpcMessageError::NotFound(format!(
                    "batch_id = {}",
                    msg.batch_id
                )))
            }
        };
        if len == 0 {
            return Ok(Vec::new());
        }
        let idx = msg.command_index.unwrap_or(len - 1);
        if idx >= len {
            return Err(RpcMessageError::BadRequest(format!(
                "command index {idx} is out of range: batch {} has {len} commands",
                msg.batch_id
            )));
        }
        let reached = async {
            loop {
                let notified = self.changed.notified();
                let ready = self
                    .batches
                    .borrow()
                    .get(&msg.batch_id)
                    .is_none_or(|b| b.done || b.finished(idx));
                if ready {
                    return;
                }
                notified.await;
            }
        };
        let within = tokio::time::timeout(wait_time(msg.timeout), reached)
            .await
            .is_ok();
        if !within && msg.command_index.is_some() {
            return Err(RpcMessageError::Timeout);
        }
        Ok(self
            .batches
            .borrow()
            .get(&msg.batch_id)
            .map(|b| b.results(msg.command_index))
            .unwrap_or_default())
    }

    fn running(&self) -> Result<Vec<ExeScriptCommandState>, RpcMessageError> {
        let commands: Vec<_> = self
            .batches
            .borrow()
            .values()
            .filter_map(Batch::running_command)
            .collect();
        if commands.is_empty() {
            return Err(RpcMessageError::NotFound(format!(
                "No running command within activity: {}",
                self.activity_id
            )));
        }
        Ok(commands)
    }
}

/// How long to wait for results when the caller gives up after `timeout` seconds: 90 % of it
/// (at most an hour), so that the answer reaches the requestor's yagna, which waits exactly
/// `timeout` for it, before it gives up (yagna's exe-unit waits the full `timeout`, and a poll
/// of a running batch then fails at the requestor instead of returning the partial results).
fn wait_time(timeout: Option<f32>) -> Duration {
    match timeout {
        Some(t) if t.is_finite() && t > 0.0 => {
            Duration::from_secs_f64((0.9 * f64::from(t)).min(MAX_RESULTS_WAIT.as_secs_f64()))
        }
        _ => Duration::ZERO,
    }
}

/// Answers one call to a bound address.
async fn serve(shared: Rc<Shared>, call: Incoming) {
    let Incoming {
        caller,
        address,
        data,
        mut reply,
    } = call;
    let method = address
        .strip_prefix(shared.prefix.as_str())
        .and_then(|m| m.strip_prefix('/'))
        .unwrap_or_default();
    let chunk = match method {
        Exec::ID => gsb::decode::<Exec>(&data).and_then(|msg| {
            let result = shared
                .authorize(&caller, &msg.activity_id)
                .and_then(|()| shared.exec(msg));
            gsb::full(&result)
        }),
        GetExecBatchResults::ID => match gsb::decode::<GetExecBatchResults>(&data) {
            Ok(msg) => {
                let result = match shared.authorize(&caller, &msg.activity_id) {
                    Ok(()) => shared.results(msg).await,
                    Err(e) => Err(e),
                };
                gsb::full(&result)
            }
            Err(e) => Err(e),
        },
        GetRunningCommand::ID => gsb::decode::<GetRunningCommand>(&data).and_then(|msg| {
            let result = shared
                .authorize(&caller, &msg.activity_id)
                .and_then(|()| shared.running());
            gsb::full(&result)
        }),
        <StreamExecBatchResults as RpcStreamMessage>::ID => {
            return stream(&shared, &caller, &data, reply).await;
        }
        _ => Err(GsbError::NoEndpoint(address.clone())),
    };
    let _ = reply.send(chunk).await;
}

/// `StreamExecBatchResults`: the batch's events (from its start) until it is done.
async fn stream(
    shared: &Shared,
    caller: &str,
    data: &[u8],
    mut reply: mpsc::Sender<Result<ResponseChunk, GsbError>>,
) {
    let msg = match gsb::decode::<StreamExecBatchResults>(data) {
        Ok(msg) => msg,
        Err(e) => {
            let _ = reply.send(Err(e)).await;
            return;
        }
    };
    if let Err(e) = shared.authorize(caller, &msg.activity_id) {
        let _ = reply.send(gsb::part(&Err::<RuntimeEvent, _>(e))).await;
        return;
    }
    let events = shared
        .batches
        .borrow_mut()
        .get_mut(&msg.batch_id)
        .map(Batch::subscribe);
    match events {
        None => {
            let e = GsbError::GsbBadRequest(format!("Unknown batch: {}", msg.batch_id));
            let _ = reply.send(Err(e)).await;
        }
        Some(mut events) => {
            while let Some(event) = events.next().await {
                let item = gsb::part(&Ok::<_, RpcMessageError>(event));
                if reply.send(item).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Sends `SetActivityUsage` every `interval` while the activity lives; ends the activity when
/// yagna does not take the report (as yagna's exe-unit does) or the runtime died.
async fn report_usage(shared: Rc<Shared>, interval: Duration) {
    loop {
        if !shared.state_pair().alive() || shared.stopping.get() {
            return;
        }
        let usage = shared.measure_usage();
        if let Some(pid) = shared.runtime_pid.get() {
            if !alive(pid) {
                let _ = shared.jobs.send(Job::Fail(format!(
                    "the runtime (pid {pid}) exited unexpectedly"
                )));
            }
        }
        let msg = SetUsage {
            activity_id: shared.activity_id.clone(),
            usage,
            timeout: None,
        };
        match gsb::call(&shared.conn, LOCAL_ACTIVITY_BUS_ID, &msg).await {
            Ok(Ok(())) => {}
            Err(GsbError::Timeout(addr)) => {
                tracing::warn!(activity = %shared.activity_id, "reporting usage to {addr} timed out");
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                    Ok(Ok(())) => String::new(),
                };
                if shared.connected.get() && !shared.stopping.get() {
                    let _ = shared.jobs.send(Job::Fail(format!(
                        "reporting usage to {LOCAL_ACTIVITY_BUS_ID} failed: {why}"
                    )));
                }
                return;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// What one command produced.
#[derive(Debug)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// `Err((return code, message))`
    result: Result<(), (i32, String)>,
    /// Never answered (a test filter's silence): the batch does not finish.
    silent: bool,
}

impl Outcome {
    fn ok(stdout: Vec<u8>) -> Self {
        Self {
            stdout,
            stderr: Vec::new(),
            result: Ok(()),
            silent: false,
        }
    }

    fn failed(code: i32, message: impl Into<String>) -> Self {
        Self {
            stdout: Vec::new(),
            stderr: Vec::new(),
            result: Err((code, message.into())),
            silent: false,
        }
    }
}

/// Owns the runtime session; the only one to change the activity state after `Initialized`.
struct Worker {
    shared: Rc<Shared>,
    runtime: RuntimeBinary,
    session: Option<Session>,
    /// Test-only rewriting of `run` answers, and how many of each entry ran.
    filter: Option<crate::RunFilter>,
    runs: HashMap<String, u64>,
}

impl Worker {
    async fn run(mut self, mut jobs: tmpsc::UnboundedReceiver<Job>) {
        while let Some(job) = jobs.recv().await {
            match job {
                Job::Batch(id) => self.batch(&id).await,
                Job::Fail(reason) => self.terminate(reason, true).await,
                Job::Shutdown(reason) => {
                    self.terminate(reason, false).await;
                    break;
                }
            }
        }
        // Whatever did not run will not: let the waiters have what there is.
        let ids: Vec<String> = self.shared.batches.borrow().keys().cloned().collect();
        for id in ids {
            self.shared.finish_batch(&id);
        }
    }

    async fn batch(&mut self, id: &str) {
        let commands = match self.shared.batches.borrow().get(id) {
            Some(batch) => batch.commands.clone(),
            None => return,
        };
        for (idx, command) in commands.into_iter().enumerate() {
            if self.shared.stopping.get() {
                tracing::warn!(activity = %self.shared.activity_id, "batch {id} aborted: shutting down");
                break;
            }
            self.shared
                .emit(id, RuntimeEvent::started(id.into(), idx, command.clone()));
            let outcome = self.execute(&command).await;
            if outcome.silent {
                tracing::warn!(activity = %self.shared.activity_id, "batch {id}: command {idx} left unanswered (test filter)");
                return;
            }
            for (bytes, stdout) in [(outcome.stdout, true), (outcome.stderr, false)] {
                if !bytes.is_empty() {
                    let output = CommandOutput::Bin(bytes);
                    let kind = match stdout {
                        true => RuntimeEventKind::StdOut(output),
                        false => RuntimeEventKind::StdErr(output),
                    };
                    self.shared
                        .emit(id, RuntimeEvent::new(id.into(), idx, kind));
                }
            }
            let (code, message) = match outcome.result {
                Ok(()) => (0, None),
                Err((code, message)) => (code, Some(message)),
            };
            self.shared.emit(
                id,
                RuntimeEvent::finished(id.into(), idx, code, message.clone()),
            );
            if code != 0 {
                tracing::warn!(
                    activity = %self.shared.activity_id,
                    "batch {id} stopped at command {idx}: {}",
                    message.unwrap_or_default()
                );
                break;
            }
        }
        self.shared.finish_batch(id);
    }

    async fn execute(&mut self, command: &ExeScriptCommand) -> Outcome {
        match command {
            ExeScriptCommand::Sign {} => {
                Outcome::failed(-1, "`sign` is not supported by this exe-unit")
            }
            ExeScriptCommand::Terminate {} => {
                self.terminate("terminated by the requestor's exe script".into(), false)
                    .await;
                Outcome::ok(Vec::new())
            }
            _ => self.stateful(command).await,
        }
    }

    /// `deploy`, `start`, `run` (and `transfer`, refused): allowed in the states yagna's
    /// exe-unit allows them, with the same pending states reported while they run. Unlike
    /// yagna's exe-unit, a failed command leaves the state where it was (a failed `start`
    /// leaves nothing behind, so it may be retried).
    async fn stateful(&mut self, command: &ExeScriptCommand) -> Outcome {
        let current = self.shared.state_pair();
        let target = match (current, command) {
            (StatePair(_, Some(_)), _) => return Outcome::failed(-1, format!("Busy: {current:?}")),
            (StatePair(State::Initialized, None), ExeScriptCommand::Deploy { .. }) => {
                State::Deployed
            }
            (StatePair(State::Deployed, None), ExeScriptCommand::Start { .. }) => State::Ready,
            (
                StatePair(State::Ready, None),
                ExeScriptCommand::Run { .. } | ExeScriptCommand::Transfer { .. },
            ) => State::Ready,
            _ => return Outcome::failed(-1, format!("Invalid state: {current:?}")),
        };
        let pending = StatePair(current.0, Some(target));
        self.shared.set_state(pending.into()).await;
        let outcome = match command {
            ExeScriptCommand::Deploy { .. } => self.deploy().await,
            ExeScriptCommand::Start { args } => self.start(args).await,
            ExeScriptCommand::Run {
                entry_point, args, ..
            } => self.run_command(entry_point, args).await,
            _ => Outcome::failed(
                -1,
                "`transfer` is not supported by this exe-unit: the runtime manages its own image",
            ),
        };
        let next = if outcome.result.is_ok() {
            target
        } else {
            current.0
        };
        if self.shared.state_pair() == pending {
            self.shared.set_state(StatePair(next, None).into()).await;
        }
        if let Some(pid) = self.session.as_ref().map(Session::pid) {
            if !alive(pid) {
                self.terminate(format!("the runtime (pid {pid}) exited unexpectedly"), true)
                    .await;
            }
        }
        outcome
    }

    async fn deploy(&mut self) -> Outcome {
        match self.runtime.deploy().await {
            Ok(deployed) => {
                let stdout = deployed.raw.to_string().into_bytes();
                match deployed.valid {
                    Ok(()) => Outcome::ok(stdout),
                    Err(reason) => Outcome {
                        stdout,
                        stderr: Vec::new(),
                        result: Err((1, format!("deploy: the provider is not ready: {reason}"))),
                        silent: false,
                    },
                }
            }
            Err(e) => Outcome::failed(1, format!("deploy: {e}")),
        }
    }

    /// `start <args…>`: the runtime takes its start arguments as one JSON object, possibly split
    /// over several words (`{"network":"dev"}`); no argument means all defaults.
    async fn start(&mut self, args: &[String]) -> Outcome {
        match self.runtime.start(&args.join(" ")).await {
            Ok(session) => {
                self.shared.runtime_pid.set(Some(session.pid()));
                self.shared.counters.replace(Some(session.counters()));
                let stdout = match session.start_output().await {
                    Ok(status) => serde_json::to_vec(&status).unwrap_or_default(),
                    Err(e) => {
                        tracing::warn!(activity = %self.shared.activity_id, "start printed no status: {e}");
                        Vec::new()
                    }
                };
                self.session = Some(session);
                Outcome::ok(stdout)
            }
            Err(e) => Outcome::failed(1, format!("start: {}", last_chars(&e.to_string(), 4000))),
        }
    }

    async fn run_command(&mut self, entry: &str, args: &[String]) -> Outcome {
        let Some(session) = &self.session else {
            return Outcome::failed(-1, "the runtime is not running");
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match session.run(entry, &args).await {
            Ok(stdout) => match &self.filter {
                None => Outcome::ok(stdout.into_bytes()),
                Some(filter) => {
                    let n = self.runs.entry(entry.to_owned()).or_default();
                    let answer = filter.0.filter(entry, *n, stdout.into_bytes());
                    *n += 1;
                    match answer {
                        Some(stdout) => Outcome::ok(stdout),
                        None => Outcome {
                            silent: true,
                            ..Outcome::ok(Vec::new())
                        },
                    }
                }
            },
            Err(ClientError::Command {
                command,
                code,
                stderr,
            }) => Outcome {
                stdout: Vec::new(),
                stderr: stderr.clone().into_bytes(),
                result: Err((code, format!("`{command}` failed (code {code}): {stderr}"))),
                silent: false,
            },
            Err(e) => Outcome::failed(-1, format!("{entry}: {e}")),
        }
    }

    /// Ends the activity: the runtime is shut down (it revokes the endpoint's credentials and
    /// stops the node), then `Terminated` is reported with `reason`. Once only.
    async fn terminate(&mut self, reason: String, failure: bool) {
        let current = self.shared.state_pair();
        if current.0 == State::Terminated {
            return;
        }
        if failure {
            tracing::error!(activity = %self.shared.activity_id, "terminating: {reason}");
        }
        self.shared
            .set_state(StatePair(current.0, Some(State::Terminated)).into())
            .await;
        if let Some(session) = self.session.take() {
            self.shared.measure_cpu();
            if let Err(e) = session.shutdown().await {
                tracing::warn!(activity = %self.shared.activity_id, "runtime shutdown: {e}");
            }
            // The runtime reported its final counts before it answered Shutdown.
            self.shared.measure_usage();
        }
        self.shared.runtime_pid.set(None);
        let state = ActivityState {
            state: StatePair::from(State::Terminated),
            reason: Some(reason.clone()),
            error_message: failure.then_some(reason),
        };
        self.shared.set_state(state).await;
    }
}

/// The end of `text`, at most `n` characters.
fn last_chars(text: &str, n: usize) -> &str {
    let text = text.trim_end();
    match text.char_indices().rev().nth(n.saturating_sub(1)) {
        Some((i, _)) if i > 0 => &text[i..],
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn waits() {
        assert_eq!(wait_time(None), Duration::ZERO);
        assert_eq!(wait_time(Some(-1.0)), Duration::ZERO);
        assert_eq!(wait_time(Some(f32::NAN)), Duration::ZERO);
        assert_eq!(wait_time(Some(2.0)), Duration::from_millis(1800));
        assert_eq!(wait_time(Some(1e30)), MAX_RESULTS_WAIT);
    }

    #[test]
    fn tails() {
        assert_eq!(last_chars("abcdef", 3), "def");
        assert_eq!(last_chars("ab", 3), "ab");
        assert_eq!(last_chars("ab\n", 3), "ab");
    }
}
