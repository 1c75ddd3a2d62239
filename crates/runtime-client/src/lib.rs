//! Drives a `ya-runtime-erigon` binary exactly the way a Golem exe-unit does: one-shot `deploy`,
//! `offer-template` and `test` processes whose stdout is parsed, then `start <json>` in server mode
//! over the runtime API (`hello`, `run_process` with output events, `shutdown`).
//!
//! The runtime API's futures are not `Send`: use a session from a current-thread runtime or a
//! `LocalSet`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erigolem_primitives::{Credentials, Health, NodeStatus};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;
use tokio::sync::Notify;
use ya_runtime_sdk::runtime_api::server::{
    self, ProcessStatus, RunProcess, RuntimeControl, RuntimeHandler, RuntimeService, RuntimeStatus,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot run {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` printed no JSON: {output:?}")]
    BadOutput { command: String, output: String },
    #[error("the runtime exited during start (code {code}): {log}")]
    StartFailed { code: i32, log: String },
    #[error("runtime API: {0}")]
    Api(String),
    #[error("the runtime exited (code {code})")]
    Exited { code: i32 },
    #[error("`{command}` failed (code {code}): {stderr}")]
    Command {
        command: String,
        code: i32,
        stderr: String,
    },
    #[error("`{command}` gave no result within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("`{command}` answered {output:?}: {error}")]
    Decode {
        command: String,
        output: String,
        error: serde_json::Error,
    },
}

/// A runtime binary and the environment it runs in: `env`, plus the harmless variables of
/// [`erigolem_supervisor::INHERITED_ENV`] — nothing else of the caller's environment (app keys,
/// database URLs) reaches the runtime or the nodes it starts.
#[derive(Debug, Clone)]
pub struct RuntimeBinary {
    pub path: PathBuf,
    /// The activity's working directory (`--workdir`); the runtime's stderr log goes here too.
    pub workdir: PathBuf,
    pub env: Vec<(OsString, OsString)>,
}

/// `deploy`'s verdict.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub valid: Result<(), String>,
    pub raw: Value,
}

impl RuntimeBinary {
    pub fn new(path: impl Into<PathBuf>, workdir: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            workdir: workdir.into(),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    fn command(&self, sub: &str, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.path);
        cmd.arg("--workdir")
            .arg(&self.workdir)
            .arg("--task-package")
            .arg(self.workdir.join("task-package"))
            .arg(sub)
            .args(args)
            .env_clear()
            .envs(erigolem_supervisor::inherited_env())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn oneshot(&self, sub: &str) -> Result<(String, String), ClientError> {
        let out = self
            .command(sub, &[])
            .output()
            .await
            .map_err(|source| ClientError::Spawn {
                path: self.path.clone(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(ClientError::Failed {
                command: sub.into(),
                status: out.status.to_string(),
                stderr,
            });
        }
        Ok((stdout, stderr))
    }

    fn json(command: &str, stdout: &str) -> Result<Value, ClientError> {
        serde_json::from_str(stdout.trim()).map_err(|_| ClientError::BadOutput {
            command: command.into(),
            output: stdout.into(),
        })
    }

    pub async fn deploy(&self) -> Result<Deployed, ClientError> {
        let (stdout, _) = self.oneshot("deploy").await?;
        let raw = Self::json("deploy", &stdout)?;
        let valid = match raw.pointer("/valid/Err") {
            Some(err) => Err(err.as_str().unwrap_or_default().to_owned()),
            None => Ok(()),
        };
        Ok(Deployed { valid, raw })
    }

    pub async fn offer_template(&self) -> Result<Value, ClientError> {
        let (stdout, _) = self.oneshot("offer-template").await?;
        Self::json("offer-template", &stdout)
    }

    /// `test`: Ok with what it printed, or the reason it failed.
    pub async fn test(&self) -> Result<String, ClientError> {
        self.oneshot("test").await.map(|(_, stderr)| stderr)
    }

    /// The runtime's stderr log of server-mode sessions.
    pub fn log_path(&self) -> PathBuf {
        self.workdir.join("runtime.log")
    }

    /// Starts the runtime in server mode with `start <args>` and waits until it is serving.
    pub async fn start(&self, args: &str) -> Result<Session, ClientError> {
        std::fs::create_dir_all(&self.workdir).map_err(|source| ClientError::Spawn {
            path: self.workdir.clone(),
            source,
        })?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|source| ClientError::Spawn {
                path: self.log_path(),
                source,
            })?;
        let mut cmd = self.command("start", &[args]);
        cmd.stderr(log);
        let events = Events::default();
        let service = server::spawn(cmd, events.clone())
            .await
            .map_err(|e| ClientError::Api(e.to_string()))?;
        let pid = service.id();
        let service: Box<dyn Api> = Box::new(service);
        let session = Session {
            service,
            events,
            pid,
            log: self.log_path(),
        };
        // A failed start makes the runtime exit; the hello is never answered then.
        tokio::select! {
            hello = session.service.hello("0.1") => { hello.map_err(|e| ClientError::Api(e.message))?; }
            code = session.service.stopped() => {
                let log = std::fs::read_to_string(session.log.as_path()).unwrap_or_default();
                return Err(ClientError::StartFailed { code, log });
            }
        }
        Ok(session)
    }
}

/// Object-safe view of what `server::spawn` returns.
trait Api: RuntimeService + RuntimeControl {}
impl<T: RuntimeService + RuntimeControl> Api for T {}

/// Output collected for one process id of the runtime API.
#[derive(Debug, Default, Clone)]
pub struct ProcessOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub return_code: Option<i32>,
}

#[derive(Clone, Default)]
struct Events {
    processes: Arc<Mutex<HashMap<u64, ProcessOutput>>>,
    /// The last value of each runtime counter (`RuntimeStatus` counter events).
    counters: Arc<Mutex<HashMap<String, f64>>>,
    changed: Arc<Notify>,
}

impl RuntimeHandler for Events {
    fn on_process_status<'a>(&self, status: ProcessStatus) -> BoxFuture<'a, ()> {
        if let Ok(mut map) = self.processes.lock() {
            let out = map.entry(status.pid).or_default();
            out.stdout.extend_from_slice(&status.stdout);
            out.stderr.extend_from_slice(&status.stderr);
            if !status.running {
                out.return_code = Some(status.return_code);
            }
        }
        self.changed.notify_waiters();
        futures::future::ready(()).boxed()
    }

    fn on_runtime_status<'a>(&self, status: RuntimeStatus) -> BoxFuture<'a, ()> {
        use ya_runtime_sdk::runtime_api::server::RuntimeStatusKind as Kind;
        if let Some(Kind::Counter(counter)) = status.kind {
            if let Ok(mut map) = self.counters.lock() {
                map.insert(counter.name, counter.value);
            }
        }
        futures::future::ready(()).boxed()
    }
}

/// The last value of each counter a runtime reported (runtime API `RuntimeStatus` counter events).
#[derive(Debug, Clone, Default)]
pub struct Counters(Arc<Mutex<HashMap<String, f64>>>);

impl Counters {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.lock().ok()?.get(name).copied()
    }
}

/// A runtime in server mode, started and answering.
pub struct Session {
    service: Box<dyn Api>,
    events: Events,
    pid: u32,
    log: PathBuf,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("pid", &self.pid).finish()
    }
}

/// How long a `run` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

impl Session {
    /// The runtime process's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last value the runtime reported for the counter `name` (e.g.
    /// `golem.usage.erigolem.requests`), as an exe-unit receives it for the usage vector.
    pub fn counter(&self, name: &str) -> Option<f64> {
        self.counters().get(name)
    }

    /// The runtime's counters, readable without the session (they keep their last values
    /// after it ends).
    pub fn counters(&self) -> Counters {
        Counters(self.events.counters.clone())
    }

    /// Runs `call` unless the runtime process exits first: the runtime API never answers a call
    /// pending at the runtime's death, so without this it would wait forever.
    async fn unless_exited<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::select! {
            biased;
            result = call => result,
            code = self.service.stopped() => Err(ClientError::Exited { code }),
        }
    }

    /// What `start` printed (its STATUS document).
    pub async fn start_output(&self) -> Result<NodeStatus, ClientError> {
        let out = self.wait_output(0, "start", true).await?;
        decode("start", &out.stdout)
    }

    async fn wait_output(
        &self,
        pid: u64,
        command: &str,
        stdout_only: bool,
    ) -> Result<ProcessOutput, ClientError> {
        let wait = async {
            loop {
                let notified = self.events.changed.notified();
                if let Some(out) = self
                    .events
                    .processes
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&pid).cloned())
                {
                    if out.return_code.is_some() || (stdout_only && !out.stdout.is_empty()) {
                        return out;
                    }
                }
                notified.await;
            }
        };
        tokio::time::timeout(COMMAND_TIMEOUT, wait)
            .await
            .map_err(|_| ClientError::Timeout {
                command: command.into(),
                timeout: COMMAND_TIMEOUT,
            })
    }

    /// Runs `run <entry> <args…>` and returns its stdout; a non-zero return code is an error
    /// carrying its stderr.
    pub async fn run(&self, entry: &str, args: &[&str]) -> Result<String, ClientError> {
        let command = std::iter::once(entry)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let run = RunProcess {
            bin: entry.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..Default::default()
        };
        let out = self
            .unless_exited(async {
                let pid = self
                    .service
                    .run_process(run)
                    .await
                    .map_err(|e| ClientError::Api(e.message))?
                    .pid;
                self.wait_output(pid, &command, false).await
            })
            .await?;
        let code = out.return_code.unwrap_or(-1);
        if code != 0 {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(ClientError::Command {
                command,
                code,
                stderr,
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        decode("STATUS", self.run("STATUS", &[]).await?.as_bytes())
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        decode("HEALTH", self.run("HEALTH", &[]).await?.as_bytes())
    }

    pub async fn logs(&self, lines: usize) -> Result<String, ClientError> {
        self.run("LOGS", &[&lines.to_string()]).await
    }

    pub async fn rotate(&self) -> Result<Credentials, ClientError> {
        decode("ROTATE", self.run("ROTATE", &[]).await?.as_bytes())
    }

    /// Sets the endpoint's password to `password` (`run ROTATE <password>`): how a caller
    /// restores the credentials an endpoint had. Over the runtime API, never a command line.
    pub async fn restore_password(
        &self,
        password: &erigolem_primitives::EndpointPassword,
    ) -> Result<Credentials, ClientError> {
        let out = self.run("ROTATE", &[password.expose()]).await?;
        decode("ROTATE", out.as_bytes())
    }

    /// Sends Shutdown and waits for its answer: the runtime has then stopped its instance. The
    /// session is closed afterwards, which ends the runtime process, as an exe-unit does.
    pub async fn shutdown(self) -> Result<(), ClientError> {
        self.unless_exited(async {
            self.service
                .shutdown()
                .await
                .map_err(|e| ClientError::Api(e.message))
        })
        .await?;
        self.service.stop();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.service.stopped()).await;
        Ok(())
    }
}

fn decode<T: serde::de::DeserializeOwned>(command: &str, bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|error| ClientError::Decode {
        command: command.into(),
        output: String::from_utf8_lossy(bytes).into_owned(),
        error,
    })
}
