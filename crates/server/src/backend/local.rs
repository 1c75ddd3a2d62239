//! The local backend: this machine is the provider. The server runs its own Nginx (config under
//! the data dir) and one `ya-runtime-erigon` per node, driven through the runtime API exactly as a
//! Golem exe-unit drives it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use erigolem_engine::{AnvilEngine, ErigonEngine, PortBlock};
use erigolem_gateway::{site, GatewayConfig};
use erigolem_node_service::{Engines, Limits, PortRange, RuntimeConfig};
use erigolem_primitives::{NodeStatus, StartArgs};
use erigolem_runtime_client::RuntimeBinary;
use erigolem_supervisor::{ProcessSpec, ProcessState, RestartPolicy, Supervised};
use tokio::sync::{mpsc, oneshot};

use super::{Backend, BackendError, NetworkOffer, StartTerms};

/// What the local backend needs to know.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The `ya-runtime-erigon` binary.
    pub runtime_bin: PathBuf,
    /// anvil, for the `dev` network.
    pub anvil_bin: Option<PathBuf>,
    /// erigon, for the public networks.
    pub erigon_bin: Option<PathBuf>,
    /// Where the server's Nginx listens; node URLs are `http://<this>/<node id>/`.
    pub gateway_listen: SocketAddr,
    /// How many dedicated nodes this machine runs at most.
    pub max_nodes: u16,
    /// First port of the range dedicated nodes take ports from.
    pub port_base: u16,
}

#[derive(Debug)]
enum Command {
    Status(oneshot::Sender<Result<NodeStatus, BackendError>>),
    /// A fresh password, or the given one (restoring what the node had).
    Rotate(
        Option<erigolem_primitives::EndpointPassword>,
        oneshot::Sender<Result<erigolem_primitives::Credentials, BackendError>>,
    ),
    Stop(oneshot::Sender<Result<(), BackendError>>),
    Logs(usize, oneshot::Sender<Result<String, BackendError>>),
}

/// Talks to one node's runtime session, which lives on its own thread (the runtime API is not `Send`).
#[derive(Debug)]
struct NodeHandle {
    commands: mpsc::Sender<Command>,
}

#[derive(Debug)]
pub struct LocalBackend {
    dir: PathBuf,
    runtime_bin: PathBuf,
    nodes: Mutex<HashMap<String, NodeHandle>>,
    nginx: NginxProcess,
    /// What the runtime offers (`offer-template`): networks of engine binaries that run.
    offers: Vec<NetworkOffer>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("nginx did not start on {listen}: {log}")]
    Nginx { listen: SocketAddr, log: String },
    #[error("no engine configured: give an anvil or erigon binary")]
    NoEngine,
    #[error("{0} is missing: build the workspace (cargo build --workspace --bins)")]
    MissingRuntime(PathBuf),
    #[error("the runtime serves no network: {0}")]
    NothingServed(String),
}

/// Where the private Nginx keeps its config and the per-node password files. Its workers (www-data
/// when we are root) read the password files on every request, so every directory above them must be
/// searchable by others; a data dir under e.g. `/root` (mode 0700) is not, and would answer 500.
/// Then the Nginx files go to a directory of their own under the system's temp dir: made with a
/// random name by `mkdtemp` (nobody can have made it first), and remembered in `<data_dir>/nginx-dir`
/// so that the next start finds its Nginx. A remembered directory is used again only if it is
/// still a directory (not a symlink), ours, and writable by nobody else.
///
/// The same happens when the data dir is so deep that a node's endpoint socket
/// (`<nginx>/gateway/sockets/<node id>.sock`) would not fit in a unix socket path (107 bytes): a
/// newcomer running the quick start from a deep directory still gets nodes that start.
fn nginx_dir(data_dir: &Path, root: bool) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(data_dir)?;
    let data_dir = data_dir.canonicalize()?;
    let preferred = data_dir.join("nginx");
    let fits = socket_fits(&preferred);
    if fits && (!root || searchable_by_others(&data_dir)) {
        return Ok(preferred);
    }
    let record = data_dir.join("nginx-dir");
    if let Ok(previous) = std::fs::read_to_string(&record) {
        let previous = PathBuf::from(previous.trim());
        match owned_private_dir(&previous) {
            Ok(()) => return Ok(previous),
            Err(why) if previous.exists() || previous.is_symlink() => tracing::warn!(
                dir = %previous.display(),
                "not using the Nginx directory of the last start: {why}"
            ),
            Err(_) => {}
        }
    }
    let fallback = tempfile::Builder::new()
        .prefix("erigolem-nginx-")
        .tempdir_in(std::env::temp_dir())?
        .keep();
    // mkdtemp made it 0700 and ours: open it for the workers to pass through.
    std::fs::set_permissions(
        &fallback,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    std::fs::write(&record, fallback.as_os_str().as_encoded_bytes())?;
    if fits {
        tracing::warn!(
            data_dir = %data_dir.display(),
            nginx_dir = %fallback.display(),
            "the data dir is not searchable by the Nginx workers (www-data); keeping the Nginx files elsewhere"
        );
    } else {
        tracing::warn!(
            data_dir = %data_dir.display(),
            nginx_dir = %fallback.display(),
            "the data dir is too deep for the nodes' unix socket paths; keeping the Nginx files elsewhere"
        );
    }
    Ok(fallback)
}

/// Whether the endpoint socket of a node (its id, a UUID, is the instance name) fits in a unix
/// socket path under the Nginx directory `dir`.
fn socket_fits(dir: &Path) -> bool {
    const NODE_ID_LEN: usize = 36;
    let socket = dir
        .join("gateway")
        .join("sockets")
        .join(format!("{}.sock", "x".repeat(NODE_ID_LEN)));
    socket.as_os_str().len() <= erigolem_guard::MAX_SOCKET_PATH
}

/// `Ok` if `dir` is a directory itself (not a symlink to one), owned by this process's user, and
/// not writable by group or others; else why not.
fn owned_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.file_type().is_dir() {
        return Err("it is not a directory (a symlink?)".into());
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!("it belongs to uid {}, not {me}", meta.uid()));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "its mode {:04o} lets others write into it",
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

/// Whether `dir` and every directory above it let others through (the `x` bit for others).
fn searchable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors().all(|d| {
        std::fs::metadata(d)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

impl LocalBackend {
    /// Writes the runtime config and the Nginx config under `dir`, and starts Nginx.
    pub async fn start(dir: &Path, local: LocalConfig) -> Result<Self, LocalError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| LocalError::Io { path, source }
        };
        // Written into the runtime's config and handed to it as XDG_DATA_HOME: absolute, whatever
        // the working directory of whoever runs it.
        let dir = &erigolem_primitives::paths::absolute(dir).map_err(io(dir))?;
        if !local.runtime_bin.exists() {
            return Err(LocalError::MissingRuntime(local.runtime_bin));
        }
        if local.anvil_bin.is_none() && local.erigon_bin.is_none() {
            return Err(LocalError::NoEngine);
        }
        // As root, Nginx workers would run as `nobody` and could not read the 0640 password files.
        let root = nix::unistd::geteuid().is_root();
        let nginx_dir = nginx_dir(dir, root).map_err(io(dir))?;
        std::fs::create_dir_all(nginx_dir.join("tmp")).map_err(io(&nginx_dir))?;
        let user = root.then_some("www-data");
        let conf = nginx_dir.join("nginx.conf");
        let gateway_dir = nginx_dir.join("gateway");
        std::fs::write(
            &conf,
            site::standalone_config(&nginx_dir, local.gateway_listen, &gateway_dir, user, 1),
        )
        .map_err(io(&conf))?;
        let gateway = GatewayConfig {
            dir: gateway_dir,
            nginx_bin: PathBuf::from("/usr/sbin/nginx"),
            nginx_conf: conf.clone(),
            pid_file: nginx_dir.join("nginx.pid"),
            password_group: user.map(str::to_owned),
        };
        let config = RuntimeConfig {
            data_dir: dir.join("runtime"),
            port_range: PortRange {
                start: local.port_base,
                end: local.port_base + PortBlock::LEN * local.max_nodes,
            },
            public_url: format!("http://{}", local.gateway_listen),
            nginx: gateway,
            engines: Engines {
                erigon: local.erigon_bin.map(|binary| ErigonEngine {
                    binary,
                    rpcdaemon: None,
                }),
                anvil: local.anvil_bin.map(|binary| AnvilEngine {
                    binary,
                    block_time: 1,
                }),
            },
            shared: Default::default(),
            limits: Limits {
                max_instances: u32::from(local.max_nodes),
                // The operator's own machine and nodes: no promise of Erigon's published sizes
                // (the free-space floor still holds).
                disk_estimates: false,
                ..Limits::default()
            },
            guard: Default::default(),
            rpc_limits: erigolem_node_service::dedicated_rpc_limits(),
            health: Default::default(),
        };
        let config_path = dir.join("xdg/ya-runtime-erigon/ya-runtime-erigon.json");
        std::fs::create_dir_all(dir.join("xdg/ya-runtime-erigon")).map_err(io(dir))?;
        let text = serde_json::to_string_pretty(&config).unwrap_or_default();
        std::fs::write(&config_path, text).map_err(io(&config_path))?;
        // A server killed with SIGKILL leaves its Nginx running (it has its own process group).
        stop_stale_nginx(&config.nginx.pid_file).await;
        let nginx =
            NginxProcess::start(&conf, &config.nginx.pid_file, local.gateway_listen).await?;
        let mut backend = Self {
            dir: dir.to_owned(),
            runtime_bin: local.runtime_bin,
            nodes: Mutex::default(),
            nginx,
            offers: Vec::new(),
        };
        backend.offers = backend.ask_offers().await?;
        Ok(backend)
    }

    /// The runtime's own `offer-template` (as a provider's would be published) and, when an
    /// engine does not run, its `test` reason, logged.
    async fn ask_offers(&self) -> Result<Vec<NetworkOffer>, LocalError> {
        let runtime = self.runtime("offer-template");
        let template = runtime
            .offer_template()
            .await
            .map_err(|e| LocalError::NothingServed(e.to_string()))?;
        let props = &template["properties"];
        let list = |key: &str| -> Vec<String> {
            props[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let prunes: Vec<erigolem_primitives::Prune> = list("erigolem.prunes")
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect();
        let offers: Vec<NetworkOffer> = list("erigolem.networks")
            .iter()
            .filter_map(|n| n.parse::<erigolem_primitives::Network>().ok())
            .map(|network| {
                let offer =
                    super::network_offer(network, vec![erigolem_primitives::Mode::Dedicated]);
                let version = props["erigolem.engines"][offer.engine.to_string()]
                    .as_str()
                    .map(str::to_owned);
                let offer = match offer.engine {
                    erigolem_primitives::EngineKind::Erigon => {
                        super::with_prunes(offer, prunes.clone())
                    }
                    erigolem_primitives::EngineKind::Anvil => offer,
                };
                NetworkOffer {
                    engine_version: version,
                    ..offer
                }
            })
            .collect();
        if let Err(e) = self.runtime("test").test().await {
            if offers.is_empty() {
                return Err(LocalError::NothingServed(e.to_string()));
            }
            tracing::warn!("not every engine runs: {e}");
        }
        for offer in &offers {
            tracing::info!(network = %offer.network, engine = %offer.engine, version = ?offer.engine_version, "offered");
        }
        Ok(offers)
    }

    fn runtime(&self, node_id: &str) -> RuntimeBinary {
        RuntimeBinary::new(&self.runtime_bin, self.dir.join("work").join(node_id))
            .env("XDG_DATA_HOME", self.dir.join("xdg"))
            .env("RUST_BACKTRACE", "0")
    }

    fn handle(&self, node_id: &str) -> Result<mpsc::Sender<Command>, BackendError> {
        let nodes = self
            .nodes
            .lock()
            .map_err(|_| BackendError::Other("lock poisoned".into()))?;
        nodes
            .get(node_id)
            .map(|h| h.commands.clone())
            .ok_or_else(|| BackendError::Unknown(node_id.to_owned()))
    }

    async fn set_password(
        &self,
        node_id: &str,
        password: Option<erigolem_primitives::EndpointPassword>,
    ) -> Result<erigolem_primitives::Credentials, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.handle(node_id)?
            .send(Command::Rotate(password, tx))
            .await
            .map_err(|_| BackendError::Unknown(node_id.to_owned()))?;
        rx.await
            .map_err(|_| BackendError::Unknown(node_id.to_owned()))?
    }

    /// The Nginx this backend runs (for tests and diagnostics).
    pub fn gateway_pid(&self) -> u32 {
        self.nginx.pid()
    }
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    fn networks(&self) -> Vec<NetworkOffer> {
        self.offers.clone()
    }

    async fn start(
        &self,
        node_id: &str,
        args: StartArgs,
        _terms: &StartTerms,
    ) -> Result<NodeStatus, BackendError> {
        self.spawn_runtime(node_id, args).await
    }

    /// The old server's runtimes ended with it: the node is started again with the same instance
    /// name and password (same URL, same credentials).
    async fn resume(&self, node_id: &str, args: StartArgs) -> Result<NodeStatus, BackendError> {
        self.spawn_runtime(node_id, args).await
    }

    async fn holds(&self, node_id: &str) -> bool {
        self.nodes
            .lock()
            .map(|nodes| nodes.contains_key(node_id))
            .unwrap_or(false)
    }

    async fn status(&self, node_id: &str) -> Result<NodeStatus, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.handle(node_id)?
            .send(Command::Status(tx))
            .await
            .map_err(|_| BackendError::Unknown(node_id.to_owned()))?;
        rx.await
            .map_err(|_| BackendError::Unknown(node_id.to_owned()))?
    }

    async fn rotate(
        &self,
        node_id: &str,
    ) -> Result<erigolem_primitives::Credentials, BackendError> {
        self.set_password(node_id, None).await
    }

    async fn logs(&self, node_id: &str, lines: usize) -> Result<String, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.handle(node_id)?
            .send(Command::Logs(lines, tx))
            .await
            .map_err(|_| BackendError::Unknown(node_id.to_owned()))?;
        rx.await
            .map_err(|_| BackendError::Unknown(node_id.to_owned()))?
    }

    async fn restore_password(
        &self,
        node_id: &str,
        password: erigolem_primitives::EndpointPassword,
    ) -> Result<(), BackendError> {
        self.set_password(node_id, Some(password)).await.map(drop)
    }

    async fn stop(&self, node_id: &str) -> Result<(), BackendError> {
        let commands = self.handle(node_id)?;
        let (tx, rx) = oneshot::channel();
        let sent = commands.send(Command::Stop(tx)).await;
        let result = match sent {
            Ok(()) => rx
                .await
                .map_err(|_| BackendError::Unknown(node_id.to_owned()))
                .and_then(|r| r),
            Err(_) => Err(BackendError::Unknown(node_id.to_owned())),
        };
        // Whatever the outcome, the runtime thread has ended or is ending: the slot is free.
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.remove(node_id);
        }
        result
    }
}

impl LocalBackend {
    /// One `ya-runtime-erigon` for the node on its own thread; its first STATUS.
    async fn spawn_runtime(
        &self,
        node_id: &str,
        args: StartArgs,
    ) -> Result<NodeStatus, BackendError> {
        let runtime = self.runtime(node_id);
        let args = serde_json::to_string(&args).map_err(|e| BackendError::Other(e.to_string()))?;
        let (started_tx, started_rx) = oneshot::channel();
        let (commands, mut rx) = mpsc::channel::<Command>(8);
        // Registered before the start: a stop that arrives meanwhile waits in the queue and is
        // carried out once the runtime is up, instead of finding no node and losing it.
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.insert(node_id.to_owned(), NodeHandle { commands });
        }
        std::thread::Builder::new()
            .name(format!("node-{node_id}"))
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    let session = match runtime.start(&args).await {
                        Ok(s) => s,
                        Err(e) => {
                            let reason = start_error(e);
                            // The runtime refuses an instance another live runtime holds.
                            let error = if reason.ends_with("already exists") {
                                BackendError::InstanceBusy
                            } else {
                                BackendError::Start(reason)
                            };
                            let _ = started_tx.send(Err(error));
                            return;
                        }
                    };
                    let status = session
                        .status()
                        .await
                        .map_err(|e| BackendError::Other(e.to_string()));
                    let _ = started_tx.send(status);
                    while let Some(command) = rx.recv().await {
                        match command {
                            Command::Status(reply) => {
                                let _ = reply.send(
                                    session
                                        .status()
                                        .await
                                        .map_err(|e| BackendError::Other(e.to_string())),
                                );
                            }
                            Command::Logs(lines, reply) => {
                                let _ = reply.send(
                                    session
                                        .logs(lines)
                                        .await
                                        .map_err(|e| BackendError::Other(e.to_string())),
                                );
                            }
                            Command::Rotate(password, reply) => {
                                let rotated = match &password {
                                    Some(password) => session.restore_password(password).await,
                                    None => session.rotate().await,
                                };
                                let _ = reply
                                    .send(rotated.map_err(|e| BackendError::Other(e.to_string())));
                            }
                            Command::Stop(reply) => {
                                let result = match session.shutdown().await {
                                    // A runtime that already exited took its node down on the way.
                                    Ok(())
                                    | Err(erigolem_runtime_client::ClientError::Exited {
                                        ..
                                    }) => Ok(()),
                                    Err(e) => Err(BackendError::Other(e.to_string())),
                                };
                                let _ = reply.send(result);
                                return;
                            }
                        }
                    }
                    // The backend is gone: end the session (the runtime cleans up on its way out).
                    let _ = session.shutdown().await;
                });
            })
            .map_err(|e| BackendError::Other(e.to_string()))?;
        let status = started_rx
            .await
            .map_err(|_| BackendError::Start("the runtime thread ended".into()))
            .and_then(|status| status);
        if status.is_err() {
            if let Ok(mut nodes) = self.nodes.lock() {
                nodes.remove(node_id);
            }
        }
        status
    }
}

/// The runtime's own reason for a failed start: its last error line, without the SDK's panic noise.
fn start_error(e: erigolem_runtime_client::ClientError) -> String {
    match e {
        erigolem_runtime_client::ClientError::StartFailed { log, .. } => log
            .lines()
            .find_map(|l| {
                l.split_once("start failed: ")
                    .map(|(_, reason)| reason.trim().to_owned())
            })
            .unwrap_or_else(|| "the runtime exited during start".to_owned()),
        other => other.to_string(),
    }
}

/// The server's private Nginx, supervised: its own process group, restarted if it crashes, and
/// told to stop by the kernel if the server dies (even by SIGKILL), so it never outlives it.
#[derive(Debug)]
struct NginxProcess {
    process: Supervised,
}

impl NginxProcess {
    async fn start(conf: &Path, pid_file: &Path, listen: SocketAddr) -> Result<Self, LocalError> {
        let log = conf.with_file_name("nginx.log");
        let spec = ProcessSpec::new("/usr/sbin/nginx")
            .args(["-e", "stderr", "-g", "daemon off;", "-c"])
            .args([conf])
            .clear_env();
        let policy = RestartPolicy {
            stop_grace: Duration::from_secs(5),
            ..RestartPolicy::default()
        };
        let process = Supervised::spawn(spec, &log, policy).map_err(|e| LocalError::Io {
            path: PathBuf::from("/usr/sbin/nginx"),
            source: std::io::Error::other(e),
        })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pid = match process.state() {
                ProcessState::Running { pid, .. } => Some(pid),
                _ => None,
            };
            // Nginx writes its pid file once its sockets are bound: ours, not a leftover or
            // another process that happens to listen on the port.
            let ours = pid.is_some_and(|pid| {
                std::fs::read_to_string(pid_file).is_ok_and(|p| p.trim() == pid.to_string())
            });
            if ours && std::net::TcpStream::connect(listen).is_ok() {
                return Ok(Self { process });
            }
            if pid.is_none() || Instant::now() > deadline {
                let log = process.log_tail(20).unwrap_or_default();
                process.stop().await;
                return Err(LocalError::Nginx { listen, log });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn pid(&self) -> u32 {
        match self.process.state() {
            ProcessState::Running { pid, .. } => pid,
            _ => 0,
        }
    }
}

/// Ends the Nginx a previous server left behind (per its pid file, and only if it is an Nginx).
async fn stop_stale_nginx(pid_file: &Path) {
    use nix::sys::signal::{kill, Signal};
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    let is_nginx = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("nginx"))
        .unwrap_or(false);
    if !is_nginx {
        return;
    }
    tracing::warn!(pid, "stopping the Nginx a previous server left running");
    let target = nix::unistd::Pid::from_raw(pid);
    let _ = kill(target, Signal::SIGQUIT);
    let deadline = Instant::now() + Duration::from_secs(5);
    while kill(target, None).is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = kill(target, Signal::SIGKILL);
    let _ = std::fs::remove_file(pid_file);
}
