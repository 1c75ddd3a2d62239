//! Supervises node processes: own process group, graceful stop (TERM → grace → KILL of the whole
//! group), restart with backoff after an unexpected exit, stdout/stderr captured in a log file that
//! rotates at a size cap ([`LogFile`]).
//!
//! A supervised process also gets `PR_SET_PDEATHSIG`, so that if the supervising process is killed
//! (even with SIGKILL) the node is told to stop at once instead of living on as an orphan.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};

mod logfile;

use logfile::RotatingLog;
pub use logfile::{capture, tail_lines, LogFile};
/// Variables a child started with a cleared environment still gets from its parent (when set):
/// where programs are, the home and XDG directories (where a runtime finds its config), locale
/// and time zone, the temp dir, and log settings. Nothing secret (app keys, database URLs,
/// tokens) is among them.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "XDG_DATA_HOME",
    "XDG_CONFIG_HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

/// The [`INHERITED_ENV`] variables this process has.
pub fn inherited_env() -> Vec<(OsString, OsString)> {
    INHERITED_ENV
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (OsString::from(k), v)))
        .collect()
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
    /// Start from an empty environment plus [`INHERITED_ENV`] and `env`, instead of this
    /// process's whole environment.
    pub clear_env: bool,
}

impl ProcessSpec {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            clear_env: false,
        }
    }

    /// Gives the process only [`INHERITED_ENV`] and its own `env`, nothing else of ours.
    pub fn clear_env(mut self) -> Self {
        self.clear_env = true;
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// When and how often to restart.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    /// Consecutive unexpected exits tolerated; one more and the process is `Failed`.
    pub max_restarts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A process that ran this long is considered healthy again: its crash count starts anew.
    pub stable_after: Duration,
    /// Time between SIGTERM and SIGKILL on stop.
    pub stop_grace: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            stable_after: Duration::from_secs(60),
            stop_grace: Duration::from_secs(30),
        }
    }
}

/// The observable state of a supervised process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessState {
    Running {
        pid: u32,
        restarts: u32,
    },
    /// Exited unexpectedly; waiting out the backoff before the next start.
    Restarting {
        restarts: u32,
        last_exit: String,
    },
    /// Gave up after too many crashes, or could not be started at all.
    Failed {
        restarts: u32,
        reason: String,
    },
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot open log file {path}: {source}")]
    Log { path: PathBuf, source: io::Error },
    #[error("cannot start {program}: {source}")]
    Spawn { program: PathBuf, source: io::Error },
}

/// A running supervised process. Dropping it stops the process (without waiting for it).
#[derive(Debug)]
pub struct Supervised {
    state: watch::Receiver<ProcessState>,
    stop_tx: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    log_path: PathBuf,
}

/// The log every run of one process writes to.
type SharedLog = Arc<Mutex<RotatingLog>>;

/// Lines of a log file's tail kept in failure reasons.
const FAILURE_LOG_LINES: usize = 20;

impl Supervised {
    /// Starts `spec` with stdout and stderr appended to `log` (a path: [`LogFile::new`]'s
    /// default cap), which rotates at its cap. Fails only if the first start fails (missing
    /// binary, unwritable log); later failures are reported through [`state`](Self::state).
    pub fn spawn(
        spec: ProcessSpec,
        log: impl Into<LogFile>,
        policy: RestartPolicy,
    ) -> Result<Self, SupervisorError> {
        let log = log.into();
        let log_path = log.path.clone();
        let log = Arc::new(Mutex::new(RotatingLog::open(log).map_err(|source| {
            SupervisorError::Log {
                path: log_path.clone(),
                source,
            }
        })?));
        let child = start(&spec, &log)?;
        let pid = child.id().unwrap_or_default();
        let (state_tx, state) = watch::channel(ProcessState::Running { pid, restarts: 0 });
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(spec, log, policy, child, state_tx, stop_rx));
        Ok(Self {
            state,
            stop_tx: Some(stop_tx),
            task: Some(task),
            log_path,
        })
    }

    pub fn state(&self) -> ProcessState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every state change.
    pub fn subscribe(&self) -> watch::Receiver<ProcessState> {
        self.state.clone()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `n` lines of the process's log.
    pub fn log_tail(&self, n: usize) -> io::Result<String> {
        tail_lines(&self.log_path, n)
    }

    /// Stops the process gracefully (SIGTERM to its group, SIGKILL after the grace period) and
    /// waits until it is gone.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // The supervising task sees the closed channel and stops the process group.
        self.stop_tx.take();
    }
}

/// Starts the process with its stdout and stderr piped into `log` (line by line, so that the
/// two never cut each other's lines).
fn start(spec: &ProcessSpec, log: &SharedLog) -> Result<Child, SupervisorError> {
    let mut cmd = Command::new(&spec.program);
    if spec.clear_env {
        cmd.env_clear().envs(inherited_env());
    }
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that stop reaches every process it starts, and a Ctrl-C meant for the
        // supervisor's terminal does not reach it.
        .process_group(0)
        .kill_on_drop(false);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    let parent = std::process::id();
    #[allow(unsafe_code)]
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls
    // (prctl, getppid, kill).
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            // The parent may have died before prctl took effect: then nobody would signal us.
            if rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) != Some(parent) {
                return Err(io::Error::other("supervisor exited during start"));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| SupervisorError::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, log.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, log.clone()));
    }
    Ok(child)
}

/// The longest partial line held back waiting for its end; longer ones are written as they are.
const MAX_PARTIAL_LINE: usize = 64 * 1024;

/// Copies one output stream of the process into its log, whole lines at a time, until it closes.
/// It never stops reading (a failing disk drops output), so the process never blocks on it.
async fn pump(mut from: impl AsyncRead + Unpin, log: SharedLog) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut failed = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let upto = match pending.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None if pending.len() >= MAX_PARTIAL_LINE => pending.len(),
            None => continue,
        };
        let written = log.lock().map(|mut l| l.write(&pending[..upto]));
        if let Ok(Err(e)) = written {
            if !failed {
                tracing::warn!("writing a node's log failed (output is dropped): {e}");
                failed = true;
            }
        }
        pending.drain(..upto);
    }
    if !pending.is_empty() {
        if let Ok(mut l) = log.lock() {
            let _ = l.write(&pending);
        }
    }
}

async fn supervise(
    spec: ProcessSpec,
    log: SharedLog,
    policy: RestartPolicy,
    mut child: Child,
    state: watch::Sender<ProcessState>,
    mut stop_rx: oneshot::Receiver<()>,
) {
    let mut crashes = 0u32;
    let mut restarts = 0u32;
    loop {
        let started = Instant::now();
        let pid = child.id();
        let status = tokio::select! {
            status = child.wait() => status,
            _ = &mut stop_rx => {
                terminate(&mut child, policy.stop_grace).await;
                let _ = state.send(ProcessState::Stopped);
                return;
            }
        };
        // The leader is gone; make sure nothing it started lingers in its group.
        if let Some(pid) = pid {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let last_exit = match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait failed: {e}"),
        };
        if started.elapsed() >= policy.stable_after {
            crashes = 0;
        }
        crashes += 1;
        tracing::warn!(program = %spec.program.display(), %last_exit, crashes, "node process exited unexpectedly");
        if crashes > policy.max_restarts {
            let log_path = log.lock().map(|l| l.path().to_owned()).unwrap_or_default();
            let tail = tail_lines(&log_path, FAILURE_LOG_LINES).unwrap_or_default();
            let reason = format!(
                "{} exited {} times in a row (last: {last_exit}); last log lines:\n{tail}",
                spec.program
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                crashes
            );
            let _ = state.send(ProcessState::Failed { restarts, reason });
            return;
        }
        let _ = state.send(ProcessState::Restarting {
            restarts,
            last_exit: last_exit.clone(),
        });
        let backoff = policy
            .backoff_initial
            .saturating_mul(1 << (crashes - 1).min(16))
            .min(policy.backoff_max);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut stop_rx => {
                let _ = state.send(ProcessState::Stopped);
                return;
            }
        }
        restarts += 1;
        match start(&spec, &log) {
            Ok(c) => {
                child = c;
                let pid = child.id().unwrap_or_default();
                let _ = state.send(ProcessState::Running { pid, restarts });
            }
            Err(e) => {
                let _ = state.send(ProcessState::Failed {
                    restarts,
                    reason: e.to_string(),
                });
                return;
            }
        }
    }
}

/// SIGTERM to the whole group, then SIGKILL after `grace`; returns when the leader is reaped.
async fn terminate(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else { return };
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(
            pid,
            "node did not stop within {grace:?}; killing its process group"
        );
    }
    // Also reaches children the leader left behind after it exited.
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait().await;
}
