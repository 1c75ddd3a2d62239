//! A Golem exe-unit for one activity, in-process.
//!
//! yagna's provider side hands each activity to an exe-unit: yagna queues `CreateActivity`, the
//! provider agent starts an exe-unit for it, and the exe-unit binds the activity's GSB address,
//! reports the activity `Initialized`, executes the requestor's exe scripts with the runtime,
//! reports state and usage, and ends it. [`spawn`] does all of that for one activity, on its own
//! thread, driving a `ya-runtime-erigon` binary exactly as a standard exe-unit would (through
//! `erigolem-runtime-client`). It answers what yagna 0.17.6 sends:
//!
//! - bound at `/public/exeunit/<activity id>/{Exec, GetExecBatchResults, GetRunningCommand,
//!   StreamExecBatchResults}` ([`messages`]: the shapes of ya-core-model 0.10.0), for the
//!   agreement's requestor only (other callers get `Forbidden`);
//! - reports to `/local/activity`: `SetActivityState` (`Initialized` once bound, `Deployed`,
//!   `Ready`, with the pending states in between, `Terminated` with a reason) and
//!   `SetActivityUsage` every [`ExeUnitConfig::usage_interval`]: the agreement's usage vector
//!   ([`ExeUnitConfig::usage_vector`], default `[duration_sec, cpu_sec]`) — the seconds since
//!   spawn, the CPU seconds of the runtime process and its descendants (the node), and any other
//!   counter as the runtime last reported it (`golem.usage.erigolem.requests`: JSON-RPC calls
//!   its endpoint answered), as yagna's exe-unit does with custom counters;
//! - exe-script commands, in order, one batch after another: `deploy` (the runtime's `deploy`),
//!   `start` (its arguments joined: one JSON object such as `{"network":"dev"}`), `run` with
//!   `entry_point` `STATUS|HEALTH|LOGS|ROTATE` and `args` (the runtime's `run` commands),
//!   `terminate` (the runtime is shut down and the activity reported `Terminated`). A failed
//!   command ends its batch with result `Error` and the message; later commands do not run.
//!
//! ```no_run
//! # async fn agent() -> Result<(), erigolem_exe_unit::ExeUnitError> {
//! use erigolem_exe_unit::ExeUnitConfig;
//!
//! // On yagna's CreateActivity event for an agreement of ours:
//! let config = ExeUnitConfig::new(
//!     "9a1b…activity-id",
//!     "c4d5…agreement-id",
//!     "0x…requestor-node-id",
//!     "unix:/home/provider/.local/share/yagna/gsb.sock",
//!     "/usr/lib/yagna/plugins/ya-runtime-erigon",
//!     "/var/lib/erigolem/activities/9a1b…",
//! )
//! .env("XDG_DATA_HOME", "/var/lib/erigolem/xdg");
//! let unit = erigolem_exe_unit::spawn(config).await?; // bound, `Initialized` reported
//!
//! tokio::select! {
//!     // The requestor's `terminate`, a dead runtime, a lost yagna: it ended by itself.
//!     state = unit.terminated() => println!("ended: {:?}", state.reason),
//!     // yagna's DestroyActivity event for it (the agent watches the activity events).
//!     _ = async { /* destroy_event.await */ } => {}
//! }
//! unit.shutdown("DestroyActivity").await?; // runtime shut down, `Terminated`, unbound
//! # Ok(())
//! # }
//! ```
//!
//! ya-service-bus 0.7.3 is actix-based: each exe-unit runs on a dedicated thread with its own
//! actix System, and [`ExeUnit`] talks to it through channels, so callers use plain tokio. It
//! connects to the GSB URL of the config on a private connection (see [`gsb`]): no `GSB_URL`
//! environment variable is read or written, and several exe-units (and yagna daemons) can share
//! one process.

mod batch;
pub mod gsb;
pub mod messages;
mod unit;
mod usage;

pub use usage::{CPU_SEC, DURATION_SEC};

use std::ffi::OsString;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
pub use ya_client_model::activity::{ActivityState, ActivityUsage, State, StatePair};

use crate::gsb::GsbUrl;
use crate::unit::Control;

/// The standard exe-unit reports usage every second; yagna destroys an activity whose last
/// usage report is older than 10 s.
pub const DEFAULT_USAGE_INTERVAL: Duration = Duration::from_secs(1);

/// How long dropping an [`ExeUnit`] waits for its shutdown.
const DROP_WAIT: Duration = Duration::from_secs(60);

/// What an exe-unit needs to know about its activity.
#[derive(Debug, Clone)]
pub struct ExeUnitConfig {
    pub activity_id: String,
    pub agreement_id: String,
    /// The agreement's requestor (`0x…` node id): the only caller served (case-insensitive).
    pub requestor_id: String,
    /// The provider yagna's GSB: `unix:<datadir>/gsb.sock` or `tcp://<host>:<port>`.
    pub gsb_url: String,
    /// The `ya-runtime-erigon` binary.
    pub runtime: PathBuf,
    /// The activity's working directory (created if missing); the runtime's log goes here.
    pub workdir: PathBuf,
    /// Environment of the runtime process, e.g. `XDG_DATA_HOME` so it finds its config.
    pub env: Vec<(OsString, OsString)>,
    /// How often `SetActivityUsage` is sent (at most 5 s: yagna gives up after 10 s).
    pub usage_interval: Duration,
    /// The agreement's `golem.com.usage.vector`: the counters reported, in this order.
    pub usage_vector: Vec<String>,
    /// Test-only: rewrites what `run` commands answer (a hostile-provider double). `None` in
    /// production.
    pub run_filter: Option<RunFilter>,
}

/// Test-only: what the requestor gets for a `run` command, for doubles of hostile providers
/// (`erigolem_provider_agent::misbehaviour`).
pub trait RunOutputFilter: Send + Sync + 'static {
    /// The stdout of the `n`th (0-based) successful `run <entry>` of the activity, as it should be
    /// answered; `None`: the command never answers (its batch never finishes).
    fn filter(&self, entry: &str, n: u64, stdout: Vec<u8>) -> Option<Vec<u8>>;
}

/// A shared [`RunOutputFilter`].
#[derive(Clone)]
pub struct RunFilter(pub std::sync::Arc<dyn RunOutputFilter>);

impl std::fmt::Debug for RunFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunFilter")
    }
}

impl ExeUnitConfig {
    pub fn new(
        activity_id: impl Into<String>,
        agreement_id: impl Into<String>,
        requestor_id: impl Into<String>,
        gsb_url: impl Into<String>,
        runtime: impl Into<PathBuf>,
        workdir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            activity_id: activity_id.into(),
            agreement_id: agreement_id.into(),
            requestor_id: requestor_id.into(),
            gsb_url: gsb_url.into(),
            runtime: runtime.into(),
            workdir: workdir.into(),
            env: Vec::new(),
            usage_interval: DEFAULT_USAGE_INTERVAL,
            usage_vector: vec![DURATION_SEC.to_owned(), CPU_SEC.to_owned()],
            run_filter: None,
        }
    }

    /// The agreement's usage vector (the offer's `golem.com.usage.vector`).
    pub fn usage_vector(mut self, names: Vec<String>) -> Self {
        self.usage_vector = names;
        self
    }

    /// Adds an environment variable of the runtime process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn usage_interval(mut self, interval: Duration) -> Self {
        self.usage_interval = interval;
        self
    }

    fn validate(&self) -> Result<GsbUrl, ExeUnitError> {
        let id_ok = |id: &str| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !id_ok(&self.activity_id) {
            return Err(ExeUnitError::Config(format!(
                "invalid activity id {:?}",
                self.activity_id
            )));
        }
        if !id_ok(&self.agreement_id) {
            return Err(ExeUnitError::Config(format!(
                "invalid agreement id {:?}",
                self.agreement_id
            )));
        }
        let hex = self.requestor_id.strip_prefix("0x").unwrap_or_default();
        if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ExeUnitError::Config(format!(
                "invalid requestor node id {:?} (expected 0x and 40 hex digits)",
                self.requestor_id
            )));
        }
        if self.usage_interval.is_zero() || self.usage_interval > Duration::from_secs(5) {
            return Err(ExeUnitError::Config(format!(
                "usage interval {:?} is not within (0, 5 s]",
                self.usage_interval
            )));
        }
        if self.usage_vector.is_empty() || self.usage_vector.len() > 16 {
            return Err(ExeUnitError::Config(format!(
                "usage vector {:?} must name 1 to 16 counters",
                self.usage_vector
            )));
        }
        if !self.runtime.is_file() {
            return Err(ExeUnitError::Config(format!(
                "runtime binary {} does not exist",
                self.runtime.display()
            )));
        }
        GsbUrl::parse(&self.gsb_url).map_err(ExeUnitError::Config)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExeUnitError {
    #[error("invalid exe-unit config: {0}")]
    Config(String),
    #[error("cannot create the work dir {path}: {source}")]
    Workdir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the exe-unit thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot connect to yagna's GSB at {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("cannot bind {addr} on yagna's GSB: {message}")]
    Bind { addr: String, message: String },
    #[error("yagna refused {what}: {message}")]
    Refused { what: &'static str, message: String },
    #[error("GSB: {0}")]
    Gsb(String),
    #[error("the exe-unit's thread ended unexpectedly")]
    Gone,
}

/// Starts the exe-unit of one activity: connects to yagna's GSB, binds the activity's address,
/// reports it `Initialized` (which completes the requestor's create-activity call), and serves
/// it until [`ExeUnit::shutdown`] or drop.
pub async fn spawn(config: ExeUnitConfig) -> Result<ExeUnit, ExeUnitError> {
    let url = config.validate()?;
    std::fs::create_dir_all(&config.workdir).map_err(|source| ExeUnitError::Workdir {
        path: config.workdir.clone(),
        source,
    })?;
    let activity_id = config.activity_id.clone();
    let (state_tx, state) = watch::channel(ActivityState::from(StatePair::default()));
    let (usage_tx, usage) = watch::channel(ActivityUsage {
        current_usage: None,
        timestamp: 0,
    });
    let (ready_tx, ready) = oneshot::channel();
    let (control, control_rx) = mpsc::unbounded_channel();
    let thread = std::thread::Builder::new()
        .name("exe-unit".into())
        .spawn(move || {
            actix_rt::System::new().block_on(unit::run(
                config, url, state_tx, usage_tx, ready_tx, control_rx,
            ))
        })
        .map_err(ExeUnitError::Thread)?;
    let started = ready.await;
    match started {
        Ok(Ok(())) => Ok(ExeUnit {
            activity_id,
            state,
            usage,
            control,
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(ExeUnitError::Gone)
        }
    }
}

/// Tells yagna that an activity whose exe-unit is gone (e.g. after the agent restarted) is
/// `Terminated`, with `reason`, over a short-lived GSB connection.
pub async fn report_terminated(
    gsb_url: &str,
    activity_id: &str,
    reason: &str,
) -> Result<(), ExeUnitError> {
    let state = ActivityState {
        state: StatePair::from(State::Terminated),
        reason: Some(reason.to_owned()),
        error_message: None,
    };
    let msg = messages::SetState::new(activity_id.to_owned(), state);
    gsb::call_once(gsb_url, "local", messages::LOCAL_ACTIVITY_BUS_ID, msg)
        .await?
        .map_err(|e| ExeUnitError::Refused {
            what: "SetActivityState",
            message: e.to_string(),
        })
}

/// A running exe-unit. Dropping it shuts it down (and waits for that, up to a minute).
#[derive(Debug)]
pub struct ExeUnit {
    activity_id: String,
    state: watch::Receiver<ActivityState>,
    usage: watch::Receiver<ActivityUsage>,
    control: mpsc::UnboundedSender<Control>,
    thread: Option<JoinHandle<()>>,
}

impl ExeUnit {
    pub fn activity_id(&self) -> &str {
        &self.activity_id
    }

    /// The activity's state as last reported to yagna (`Terminated` ones carry the reason).
    pub fn state(&self) -> ActivityState {
        self.state.borrow().clone()
    }

    /// The usage last reported to yagna, in the order of [`ExeUnitConfig::usage_vector`]
    /// (`current_usage` is `None` before the first report); after the runtime was shut down, the
    /// final counts.
    pub fn usage(&self) -> ActivityUsage {
        self.usage.borrow().clone()
    }

    /// Resolves once the activity is `Terminated` (the requestor's `terminate`, a dead runtime,
    /// a lost GSB connection, a refused usage report), with that state. The exe-unit still
    /// answers the requestor (results of earlier batches) until [`ExeUnit::shutdown`].
    pub async fn terminated(&self) -> ActivityState {
        let mut state = self.state.clone();
        let ended = state
            .wait_for(|s| s.state.0 == State::Terminated)
            .await
            .map(|s| s.clone());
        ended.unwrap_or_else(|_| state.borrow().clone())
    }

    /// Ends the activity: the command running finishes, queued ones are dropped, the runtime
    /// is shut down (the endpoint's credentials are revoked, the node stopped), `Terminated`
    /// is reported with `reason` (if it was not already), the addresses are unbound and the
    /// thread ends. Returns the final usage (as [`ExeUnit::usage`]), to bill.
    pub async fn shutdown(
        mut self,
        reason: impl Into<String>,
    ) -> Result<ActivityUsage, ExeUnitError> {
        let (done_tx, done) = oneshot::channel();
        let sent = self.control.send(Control::Shutdown {
            reason: reason.into(),
            done: Some(done_tx),
        });
        let result = match sent {
            Ok(()) => done.await.map_err(|_| ExeUnitError::Gone),
            Err(_) => Err(ExeUnitError::Gone),
        };
        if let Some(thread) = self.thread.take() {
            // It is at its very end (or gone): joining does not block for long.
            let _ = thread.join();
        }
        result.map(|()| self.usage.borrow().clone())
    }
}

// The agent keeps exe-units in `Send + Sync` places (tasks, `Arc`s, trait objects).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ExeUnit>();
};

impl Drop for ExeUnit {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = self.control.send(Control::Shutdown {
            reason: "the exe-unit was dropped".into(),
            done: None,
        });
        let deadline = Instant::now() + DROP_WAIT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::error!(activity = %self.activity_id, "the exe-unit did not shut down within {DROP_WAIT:?}");
        }
    }
}
