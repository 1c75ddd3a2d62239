//! The provider runtime's logic as a plain library, with no Golem SDK types: validate a provider
//! (`deploy`/`test`), start an instance (a dedicated node or credentials in front of a shared one,
//! behind Nginx and the instance's endpoint guard), report its STATUS/HEALTH/LOGS, rotate its
//! password, and stop it leaving nothing behind. `ya-runtime-erigon` is a thin adapter of this
//! crate to `ya-runtime-sdk`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use erigolem_engine::{
    engine_for, ArgvError, ErigonHealthQuery, ErigonNode, ErigonRelease, PortBlock, RpcClient,
    VersionError,
};
use erigolem_gateway::{htpasswd, Gateway, GatewayError, Upstream};
use erigolem_guard::{Guard, GuardConfig, GuardError, Policy};
use erigolem_primitives::{
    Credentials, EngineKind, Health, InstanceName, InvalidStartArgs, Mode, Network, NodeState,
    NodeStatus, Prune, RpcLimits, Secret, StartArgs, Usage,
};
use erigolem_supervisor::{ProcessState, RestartPolicy, Supervised, SupervisorError};
use serde::{Deserialize, Serialize};

mod config;
mod locks;

pub use config::{
    dedicated_rpc_limits, Engines, GuardSettings, HealthChecks, Limits, PortRange, RuntimeConfig,
};
use locks::{Admission, DiskNeed, InstanceLock, PortLease};

/// The Golem usage counter of an endpoint: JSON-RPC calls the node answered through it.
pub const REQUESTS_COUNTER: &str = "golem.usage.erigolem.requests";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    InvalidArgs(#[from] InvalidStartArgs),
    #[error("network {network} is not served here (served: {served})")]
    NetworkNotServed { network: Network, served: String },
    #[error("mode {mode} is not available for {network} here (available: {available})")]
    ModeNotAvailable {
        network: Network,
        mode: Mode,
        available: String,
    },
    #[error("prune mode {prune} is not offered by this provider (offered: {offered})")]
    PruneNotOffered { prune: Prune, offered: String },
    #[error("invalid config: {0}")]
    Config(String),
    #[error("{what} {path} is missing or not executable")]
    MissingBinary { what: &'static str, path: PathBuf },
    #[error("data directory {path} is not usable: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no free ports left in {start}..{end} (each instance needs {len})", len = PortBlock::LEN)]
    PortsExhausted { start: u16, end: u16 },
    #[error("this host already serves {max} instances")]
    Capacity { max: u32 },
    #[error(
        "not enough disk on this provider: {} free, {} of it promised to running nodes; this node needs {}{}",
        gb(*.free), gb(*.promised), gb(*.node),
        if *.min_free > 0 { format!(" and {} must stay free", gb(*.min_free)) } else { String::new() }
    )]
    DiskLow {
        free: u64,
        promised: u64,
        node: u64,
        min_free: u64,
    },
    #[error("instance {0} already exists")]
    InstanceExists(InstanceName),
    #[error("gateway: {0}")]
    Gateway(#[from] GatewayError),
    #[error("endpoint guard: {0}")]
    Guard(#[from] GuardError),
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error("the {engine} node exited during start: {reason}")]
    NodeExited { engine: EngineKind, reason: String },
    #[error("the {engine} node did not answer JSON-RPC within {secs} s; last log lines:\n{log}")]
    StartTimeout {
        engine: EngineKind,
        secs: u64,
        log: String,
    },
    #[error("the shared {network} node at {url} does not answer: {reason}")]
    SharedDown {
        network: Network,
        url: String,
        reason: String,
    },
    #[error("the {engine} binary is not usable: {reason}")]
    EngineBroken { engine: EngineKind, reason: String },
    #[error("{0}")]
    Argv(#[from] ArgvError),
    #[error("no instance is running")]
    NotStarted,
    #[error("an instance is already running in this runtime")]
    AlreadyStarted,
}

/// What `deploy` reports when a provider is usable.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub networks: BTreeMap<Network, Vec<Mode>>,
    /// Engine → the version its binary reported.
    pub engines: BTreeMap<EngineKind, String>,
    /// Engines that are configured but do not run, and other things an operator should know.
    pub warnings: Vec<String>,
}

/// The market-facing description of this host (`offer-template`): only what its engine binaries
/// can actually serve.
#[derive(Debug, Clone, Serialize)]
pub struct Offer {
    pub networks: Vec<Network>,
    pub modes: Vec<Mode>,
    /// Prune modes of dedicated Erigon nodes (empty without a usable Erigon).
    pub prunes: Vec<Prune>,
    pub engines: BTreeMap<EngineKind, String>,
    /// Disk one dedicated node takes: network → prune mode → bytes (Erigon's published figures,
    /// at most the archive figure where Erigon publishes none).
    pub disk: BTreeMap<Network, BTreeMap<Prune, u64>>,
}

/// How long an engine binary may take to print its version.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// What this host's engine binaries said when asked for their version; `None`: not configured.
#[derive(Debug, Clone)]
pub struct EngineProbe {
    pub erigon: Option<Result<ErigonRelease, String>>,
    pub anvil: Option<Result<String, String>>,
}

impl EngineProbe {
    /// Versions of the engines that run.
    pub fn versions(&self) -> BTreeMap<EngineKind, String> {
        let mut out = BTreeMap::new();
        if let Some(Ok(release)) = &self.erigon {
            out.insert(EngineKind::Erigon, release.version.to_string());
        }
        if let Some(Ok(version)) = &self.anvil {
            out.insert(EngineKind::Anvil, version.clone());
        }
        out
    }

    /// Configured engines that do not run, with why; and warnings of those that do.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.erigon {
            Some(Err(reason)) => out.push(format!("erigon: {reason}")),
            Some(Ok(ErigonRelease {
                warning: Some(w), ..
            })) => out.push(w.clone()),
            _ => {}
        }
        if let Some(Err(reason)) = &self.anvil {
            out.push(format!("anvil: {reason}"));
        }
        out
    }

    /// The first configured engine that does not run.
    fn broken(&self) -> Option<ServiceError> {
        let broken = |engine, reason: &String| ServiceError::EngineBroken {
            engine,
            reason: reason.clone(),
        };
        match (&self.erigon, &self.anvil) {
            (Some(Err(reason)), _) => Some(broken(EngineKind::Erigon, reason)),
            (_, Some(Err(reason))) => Some(broken(EngineKind::Anvil, reason)),
            _ => None,
        }
    }
}

/// Asks an Erigon binary for its version and what its command line accepts.
pub async fn probe_erigon(binary: &Path) -> Result<ErigonRelease, String> {
    check_executable("erigon binary", binary).map_err(|e| e.to_string())?;
    let version = erigolem_engine::detect_version(binary, VERSION_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    ErigonRelease::new(version).map_err(|e: VersionError| e.to_string())
}

/// `anvil --version`: `anvil Version: 1.7.1` → `1.7.1`.
pub async fn probe_anvil(binary: &Path) -> Result<String, String> {
    check_executable("anvil binary", binary).map_err(|e| e.to_string())?;
    let out = erigolem_engine::run_version(binary, VERSION_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    out.lines()
        .find_map(|l| {
            l.strip_prefix("anvil Version:")
                .map(|v| v.trim().to_owned())
        })
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            format!(
                "`{} --version` printed {:?}: not anvil",
                binary.display(),
                out.trim()
            )
        })
}

/// What `anvil --version` said for one binary, cached in the data dir while the binary's path,
/// size and modification time stay the same.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct CachedVersion {
    binary: PathBuf,
    len: u64,
    modified_ns: u64,
    version: String,
}

impl CachedVersion {
    fn of(binary: &Path) -> Option<(u64, u64)> {
        let meta = fs::metadata(binary).ok()?;
        let modified = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some((meta.len(), u64::try_from(modified.as_nanos()).ok()?))
    }
}

/// anvil's version, asked once per binary rather than at every start: `anvil --version` is
/// 4 ms of CPU, taken from the node starting beside it (100 dev nodes at once: 0.4 s of CPU).
async fn anvil_version(binary: &Path, data_dir: &Path) -> Result<String, String> {
    let cache = data_dir.join("anvil-version.json");
    let print = CachedVersion::of(binary);
    let cached = fs::read(&cache)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<CachedVersion>(&bytes).ok());
    if let (Some(c), Some((len, modified_ns))) = (cached, print) {
        if c.binary == binary && c.len == len && c.modified_ns == modified_ns {
            return Ok(c.version);
        }
    }
    let version = probe_anvil(binary).await?;
    if let Some((len, modified_ns)) = print {
        let entry = CachedVersion {
            binary: binary.to_owned(),
            len,
            modified_ns,
            version: version.clone(),
        };
        // Written whole and renamed into place: a runtime starting beside this one reads the old
        // entry or the new one. A failed write only means asking again next time.
        let tmp = data_dir.join(format!(".anvil-version.{}.tmp", std::process::id()));
        let written = serde_json::to_vec(&entry)
            .map_err(std::io::Error::other)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, &cache));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
    Ok(version)
}

/// How long to wait before asking a starting node again, `elapsed` into its start. Start latency
/// is what users wait for: a doubling pause (2, 4, …, 25 ms) answered anvil, ready after ≈ 45 ms,
/// only at the 55 or 80 ms poll, so the first 100 ms are polled every 2 ms. Then 10 ms, and 25 ms
/// after a second (Erigon takes seconds to minutes): 100 runtimes starting at once on two cores
/// polling every 2 ms for a whole second took CPU from the nodes they waited for.
fn ready_poll_pause(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_millis(100) {
        Duration::from_millis(2)
    } else if elapsed < Duration::from_secs(1) {
        Duration::from_millis(10)
    } else {
        Duration::from_millis(25)
    }
}

/// The runtime's service for one host: checks the setup and starts instances.
#[derive(Debug, Clone)]
pub struct NodeService {
    config: RuntimeConfig,
    gateway: Gateway,
}

impl NodeService {
    pub fn new(config: RuntimeConfig) -> Result<Self, ServiceError> {
        let public = url::Url::parse(&config.public_url).map_err(|e| {
            ServiceError::Config(format!("public_url {:?}: {e}", config.public_url))
        })?;
        if !matches!(public.scheme(), "http" | "https")
            || public.query().is_some()
            || public.fragment().is_some()
        {
            return Err(ServiceError::Config(format!(
                "public_url {:?} must be an http(s) URL without query",
                config.public_url
            )));
        }
        if config.port_range.blocks().next().is_none() {
            return Err(ServiceError::Config(format!(
                "port_range {}..{} holds no block of {} ports",
                config.port_range.start,
                config.port_range.end,
                PortBlock::LEN
            )));
        }
        for (network, url) in &config.shared {
            Upstream::parse(url)
                .map_err(|e| ServiceError::Config(format!("shared.{network}: {e}")))?;
        }
        for (mode, limits) in [
            ("shared", &config.guard.shared),
            ("dedicated", &config.guard.dedicated),
        ] {
            limits
                .validate()
                .map_err(|e| ServiceError::Config(format!("guard.{mode}: {e}")))?;
        }
        let gateway = Gateway::new(config.nginx.clone());
        Ok(Self { config, gateway })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Asks every configured engine binary for its version.
    pub async fn engines(&self) -> EngineProbe {
        let erigon = async {
            match &self.config.engines.erigon {
                None => None,
                Some(erigon) => Some(match probe_erigon(&erigon.binary).await {
                    Ok(release) => match &erigon.rpcdaemon {
                        Some(d) => check_executable("rpcdaemon binary", d)
                            .map(|()| release)
                            .map_err(|e| e.to_string()),
                        None => Ok(release),
                    },
                    Err(e) => Err(e),
                }),
            }
        };
        let anvil = async {
            match &self.config.engines.anvil {
                None => None,
                Some(anvil) => Some(probe_anvil(&anvil.binary).await),
            }
        };
        let (erigon, anvil) = tokio::join!(erigon, anvil);
        EngineProbe { erigon, anvil }
    }

    /// The networks and modes this host can serve with the engines that run: a network of a
    /// broken (or missing) engine binary, or one its Erigon release does not know, is left out.
    pub fn served(&self, probe: &EngineProbe) -> BTreeMap<Network, Vec<Mode>> {
        let mut out = self.config.offered();
        for (network, modes) in out.iter_mut() {
            let dedicated_ok = match network {
                Network::Dev => matches!(probe.anvil, Some(Ok(_))),
                _ => matches!(&probe.erigon, Some(Ok(r)) if r.flags.chains.contains(network)),
            };
            if !dedicated_ok {
                modes.retain(|m| *m != Mode::Dedicated);
            }
        }
        out.retain(|_, modes| !modes.is_empty());
        out
    }

    /// What the market sees: networks, modes and prune modes the engines that run can serve.
    pub async fn offer(&self) -> Offer {
        let probe = self.engines().await;
        let served = self.served(&probe);
        let mut modes: Vec<Mode> = served.values().flatten().copied().collect();
        modes.sort();
        modes.dedup();
        let policy = &self.config.limits.prunes;
        let prunes = match &probe.erigon {
            Some(Ok(release)) => release
                .flags
                .prune_modes
                .iter()
                .copied()
                .filter(|p| policy.is_empty() || policy.contains(p))
                .collect(),
            _ => Vec::new(),
        };
        let disk = served
            .keys()
            .map(|n| {
                let sizes = prunes
                    .iter()
                    .filter_map(|p| erigolem_engine::disk_estimate(*n, *p).map(|e| (*p, e.bytes)))
                    .collect::<BTreeMap<_, _>>();
                (*n, sizes)
            })
            .filter(|(_, sizes)| !sizes.is_empty())
            .collect();
        Offer {
            networks: served.keys().copied().collect(),
            modes,
            prunes,
            engines: probe.versions(),
            disk,
        }
    }

    /// Checks that this host can serve at least one network: engine binaries that run and say
    /// which version they are, data dir, Nginx. Networks of a broken engine are left out.
    pub async fn deploy(&self) -> Result<DeployReport, ServiceError> {
        if self.config.offered().is_empty() {
            return Err(ServiceError::Config(
                "no engine and no shared node configured: nothing to serve".into(),
            ));
        }
        let probe = self.engines().await;
        let networks = self.served(&probe);
        if networks.is_empty() {
            return Err(ServiceError::Config(format!(
                "no network can be served: {}",
                probe.problems().join("; ")
            )));
        }
        check_writable_dir(&self.config.data_dir)?;
        check_executable("nginx binary", &self.config.nginx.nginx_bin)?;
        self.gateway.ensure_layout()?;
        self.gateway.master_pid()?;
        Ok(DeployReport {
            networks,
            engines: probe.versions(),
            warnings: probe.problems(),
        })
    }

    /// `deploy`'s checks, plus: every configured engine runs, the live Nginx config is valid, and
    /// every shared node answers.
    pub async fn self_test(&self) -> Result<DeployReport, ServiceError> {
        if let Some(broken) = self.engines().await.broken() {
            return Err(broken);
        }
        let report = self.deploy().await?;
        self.gateway.validate().await?;
        // Instance names are the socket's file name: those a server gives (UUIDs, 36 characters)
        // must fit in a unix socket path.
        let name = InstanceName::new("x".repeat(36)).unwrap_or_else(|_| unreachable!());
        let socket = self.gateway.socket(&name);
        let len = socket.as_os_str().len();
        if len > erigolem_guard::MAX_SOCKET_PATH {
            return Err(GuardError::SocketPathTooLong { path: socket, len }.into());
        }
        for (network, url) in &self.config.shared {
            let rpc = RpcClient::new(url.clone());
            if let Err(e) = rpc.chain_id().await {
                return Err(ServiceError::SharedDown {
                    network: *network,
                    url: url.clone(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(report)
    }

    /// Starts an instance. On any failure everything it created is removed again.
    pub async fn start(&self, args: StartArgs) -> Result<Instance, ServiceError> {
        let offered = self.config.offered();
        let served = || {
            offered
                .keys()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let network = args.network.unwrap_or(Network::Dev);
        let modes = offered
            .get(&network)
            .ok_or_else(|| ServiceError::NetworkNotServed {
                network,
                served: served(),
            })?;
        // A shared node answers in seconds; prefer it unless the caller asked otherwise.
        let mode = args.mode.unwrap_or(modes[0]);
        if !modes.contains(&mode) {
            let available = modes
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ServiceError::ModeNotAvailable {
                network,
                mode,
                available,
            });
        }
        let prune = args.prune.unwrap_or_default();
        let policy = &self.config.limits.prunes;
        // The dev chain (anvil) has no prune modes: the policy is about Erigon's disk.
        if network != Network::Dev && !policy.is_empty() && !policy.contains(&prune) {
            let offered = policy.iter().map(|p| p.as_str()).collect::<Vec<_>>();
            return Err(ServiceError::PruneNotOffered {
                prune,
                offered: offered.join(", "),
            });
        }

        self.sweep_stale().await;
        let instances_dir = self.config.data_dir.join("instances");
        check_writable_dir(&instances_dir)?;
        let name = match args.instance {
            Some(name) => name,
            None => random_instance_name(),
        };
        let limits = &self.config.limits;
        let disk = (mode == Mode::Dedicated).then(|| DiskNeed {
            node_bytes: match limits.disk_estimates {
                true => erigolem_engine::disk_estimate(network, prune).map_or(0, |e| e.bytes),
                false => 0,
            },
            min_free: limits.min_free_disk_bytes,
        });
        let admission = Admission {
            max_instances: limits.max_instances,
            disk,
        };
        let lock = InstanceLock::claim(&instances_dir, &name, admission)?;
        let password = htpasswd::random_password();
        let access = Access {
            methods: args.methods,
            allow_origins: args.allow_origins,
            allow_ips: args.allow_ips,
        };
        let result = self
            .start_locked(&name, network, mode, prune, &lock, password, access)
            .await;
        match result {
            Ok(parts) => Ok(Instance::new(self, name, network, mode, lock, parts)),
            Err(e) => {
                lock.remove();
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_locked(
        &self,
        name: &InstanceName,
        network: Network,
        mode: Mode,
        prune: Prune,
        lock: &InstanceLock,
        password: String,
        access: Access,
    ) -> Result<Parts, ServiceError> {
        let engine = engine_for(network);
        let mut about = About::default();
        let (upstream, processes, ports) = match mode {
            Mode::Shared => {
                let url = &self.config.shared[&network];
                let upstream =
                    Upstream::parse(url).map_err(|e| ServiceError::Config(e.to_string()))?;
                if let Err(e) = RpcClient::new(upstream.http_url()).chain_id().await {
                    return Err(ServiceError::SharedDown {
                        network,
                        url: url.clone(),
                        reason: e.to_string(),
                    });
                }
                (upstream, Vec::new(), None)
            }
            Mode::Dedicated => {
                let lease = PortLease::acquire(
                    &self.config.data_dir.join("ports"),
                    self.config.port_range,
                )?;
                let block = lease.block();
                let datadir = lock.dir().join("data");
                fs::create_dir_all(&datadir).map_err(|source| ServiceError::DataDir {
                    path: datadir.clone(),
                    source,
                })?;
                let specs = match engine {
                    EngineKind::Anvil => {
                        let anvil = self
                            .config
                            .engines
                            .anvil
                            .as_ref()
                            .ok_or_else(|| ServiceError::Config("no anvil".into()))?;
                        vec![anvil.process(&datadir, block)]
                    }
                    EngineKind::Erigon => {
                        let erigon = self
                            .config
                            .engines
                            .erigon
                            .as_ref()
                            .ok_or_else(|| ServiceError::Config("no erigon".into()))?;
                        // The command line depends on the release: ask the binary every start
                        // (an operator may have upgraded it since the last one).
                        let release = probe_erigon(&erigon.binary)
                            .await
                            .map_err(|reason| ServiceError::EngineBroken { engine, reason })?;
                        let node = ErigonNode {
                            network,
                            prune,
                            datadir: &datadir,
                            ports: block,
                            limits: &self.config.rpc_limits,
                        };
                        let specs = erigon.processes(&release, &node)?;
                        if let Some(w) = &release.warning {
                            tracing::warn!("{w}");
                        }
                        about = About {
                            version: Some(release.version.to_string()),
                            limits: Some(release.effective_limits(&self.config.rpc_limits)),
                            warnings: release.warning.iter().cloned().collect(),
                            erigon_health: true,
                        };
                        specs
                    }
                };
                let policy = RestartPolicy {
                    max_restarts: self.config.limits.max_restarts,
                    stop_grace: Duration::from_secs(self.config.limits.stop_grace_secs),
                    ..RestartPolicy::default()
                };
                let log = lock.dir().join("node.log");
                let mut processes: Vec<Supervised> = Vec::new();
                for spec in specs {
                    if !processes.is_empty() {
                        // rpcdaemon reads the node's database and needs its private API: start
                        // it once the node listens there, not into a crash loop.
                        let private = Upstream::local(block.private_api());
                        if let Err(e) = self
                            .wait_listening(engine, &private, &processes, &log)
                            .await
                        {
                            stop_all(processes).await;
                            return Err(e);
                        }
                    }
                    let log_file = erigolem_supervisor::LogFile {
                        path: log.clone(),
                        max_bytes: self.config.limits.log_max_bytes,
                        keep: self.config.limits.log_files_kept,
                    };
                    match Supervised::spawn(spec, log_file, policy.clone()) {
                        Ok(p) => processes.push(p),
                        Err(e) => {
                            stop_all(processes).await;
                            return Err(e.into());
                        }
                    }
                }
                let upstream = Upstream::local(block.http());
                let spawned = Instant::now();
                // anvil's version is only shown, so it is asked while the node starts.
                let anvil_version = async {
                    match (engine, &self.config.engines.anvil) {
                        (EngineKind::Anvil, Some(anvil)) => {
                            anvil_version(&anvil.binary, &self.config.data_dir)
                                .await
                                .ok()
                        }
                        _ => None,
                    }
                };
                let (ready, anvil_version) = tokio::join!(
                    self.wait_ready(engine, &upstream, &processes, &log),
                    anvil_version
                );
                if let Err(e) = ready {
                    stop_all(processes).await;
                    return Err(e);
                }
                if anvil_version.is_some() {
                    about.version = anvil_version;
                }
                tracing::info!(%engine, ready_ms = spawned.elapsed().as_millis() as u64, "node answers JSON-RPC");
                (upstream, processes, Some(lease))
            }
        };
        let credentials = Credentials {
            user: name.to_string(),
            password: Secret::new(password),
        };
        let adding = Instant::now();
        let guard = match self
            .open_endpoint(name, engine, mode, &upstream, &credentials, access)
            .await
        {
            Ok(guard) => guard,
            Err(e) => {
                stop_all(processes).await;
                return Err(e);
            }
        };
        tracing::info!(
            gateway_us = adding.elapsed().as_micros() as u64,
            "endpoint live"
        );
        Ok(Parts {
            engine,
            prune,
            upstream,
            processes,
            ports,
            credentials,
            counter: guard.request_counter(),
            guard: Some(guard),
            about,
        })
    }

    /// The endpoint: the gateway entry (no credentials yet: 401), the guard on its socket, then
    /// the credentials. Undone on failure.
    async fn open_endpoint(
        &self,
        name: &InstanceName,
        engine: EngineKind,
        mode: Mode,
        upstream: &Upstream,
        credentials: &Credentials,
        access: Access,
    ) -> Result<Guard, ServiceError> {
        self.gateway.add(name).await?;
        let settings = &self.config.guard;
        let config = GuardConfig {
            instance: name.clone(),
            socket: self.gateway.socket(name),
            socket_group: self.config.nginx.password_group.clone(),
            node: upstream.to_string(),
            credentials: credentials.clone(),
            policy: Policy::new(engine, mode, &settings.policy(), access.methods),
            limits: settings.limits(mode),
            allow_origins: access.allow_origins,
            allow_ips: access.allow_ips,
        };
        let opened = async {
            // On the caller's runtime: a thread of its own measured no faster (benchmarks.md).
            let guard = Guard::spawn(config)?;
            self.gateway.set_credentials(name, credentials).await?;
            Ok::<_, ServiceError>(guard)
        }
        .await;
        if opened.is_err() {
            let _ = self.gateway.remove(name).await;
        }
        opened
    }

    /// Waits until `upstream` accepts TCP connections (the node's private API).
    async fn wait_listening(
        &self,
        engine: EngineKind,
        upstream: &Upstream,
        processes: &[Supervised],
        log: &Path,
    ) -> Result<(), ServiceError> {
        let addr = upstream.to_string();
        self.wait_until(engine, processes, log, || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(&addr).await.is_ok() }
        })
        .await
    }

    async fn wait_ready(
        &self,
        engine: EngineKind,
        upstream: &Upstream,
        processes: &[Supervised],
        log: &Path,
    ) -> Result<(), ServiceError> {
        let rpc = RpcClient::new(upstream.http_url());
        let addr = upstream.to_string();
        // A refused connect is a few microseconds; the JSON-RPC probe only once the port listens.
        self.wait_until(engine, processes, log, || async {
            tokio::net::TcpStream::connect(&addr).await.is_ok() && rpc.is_ready().await
        })
        .await
    }

    /// Polls `ready` until it holds, failing when a process exits or the start timeout passes.
    async fn wait_until<F, Fut>(
        &self,
        engine: EngineKind,
        processes: &[Supervised],
        log: &Path,
        mut ready: F,
    ) -> Result<(), ServiceError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let timeout = Duration::from_secs(self.config.limits.start_timeout_secs);
        let deadline = Instant::now() + timeout;
        let started = Instant::now();
        loop {
            for p in processes {
                if let state @ (ProcessState::Failed { .. } | ProcessState::Restarting { .. }) =
                    p.state()
                {
                    let tail = erigolem_supervisor::tail_lines(log, 20).unwrap_or_default();
                    let reason = match state {
                        ProcessState::Failed { reason, .. } => reason,
                        ProcessState::Restarting { last_exit, .. } => {
                            format!("{last_exit}; last log lines:\n{tail}")
                        }
                        _ => unreachable!(),
                    };
                    return Err(ServiceError::NodeExited { engine, reason });
                }
            }
            if ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = erigolem_supervisor::tail_lines(log, 20).unwrap_or_default();
                return Err(ServiceError::StartTimeout {
                    engine,
                    secs: timeout.as_secs(),
                    log,
                });
            }
            tokio::time::sleep(ready_poll_pause(started.elapsed())).await;
        }
    }

    /// Removes what runtimes killed without cleanup left: Nginx entries and instance directories.
    pub async fn sweep_stale(&self) {
        match self.gateway.sweep_stale().await {
            Ok(swept) if !swept.is_empty() => {
                tracing::warn!(?swept, "removed stale gateway entries")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("sweeping stale gateway entries failed: {e}"),
        }
        locks::sweep_instance_dirs(&self.config.data_dir.join("instances"));
    }

    fn endpoint(&self, name: &InstanceName) -> (String, String) {
        let base = self.config.public_url.trim_end_matches('/');
        let url = format!("{base}/{name}/");
        let ws_url = url.replacen("http", "ws", 1);
        (url, ws_url)
    }
}

/// What the requestor restricts the endpoint to (start arguments).
#[derive(Debug, Default)]
struct Access {
    methods: Option<Vec<erigolem_primitives::MethodPattern>>,
    allow_origins: Option<Vec<erigolem_primitives::OriginPattern>>,
    allow_ips: Option<Vec<erigolem_primitives::IpBlock>>,
}

/// What a successful start made.
#[derive(Debug)]
struct Parts {
    engine: EngineKind,
    prune: Prune,
    upstream: Upstream,
    processes: Vec<Supervised>,
    ports: Option<PortLease>,
    credentials: Credentials,
    /// The endpoint's guard while it serves (None once it is closed).
    guard: Option<Guard>,
    /// Its counts, which outlive it.
    counter: erigolem_guard::RequestCounter,
    about: About,
}

/// What STATUS tells about the node beyond its state: its engine's release, its limits.
#[derive(Debug, Clone, Default)]
struct About {
    version: Option<String>,
    limits: Option<RpcLimits>,
    warnings: Vec<String>,
    /// The node has Erigon's `/health` (every Erigon release the runtime runs).
    erigon_health: bool,
}

/// One running instance: its node (if dedicated), its gateway entry and credentials.
#[derive(Debug)]
pub struct Instance {
    name: InstanceName,
    network: Network,
    mode: Mode,
    parts: Parts,
    url: String,
    ws_url: String,
    rpc: RpcClient,
    gateway: Gateway,
    lock: InstanceLock,
    health_checks: HealthChecks,
    /// Free bytes below which a dedicated node is stopped.
    min_free_disk: u64,
    /// Why the node was stopped by the runtime (not by a crash), for STATUS and HEALTH.
    halted: Option<String>,
}

impl Instance {
    fn new(
        service: &NodeService,
        name: InstanceName,
        network: Network,
        mode: Mode,
        lock: InstanceLock,
        parts: Parts,
    ) -> Self {
        let (url, ws_url) = service.endpoint(&name);
        let rpc = RpcClient::new(parts.upstream.http_url());
        tracing::info!(instance = %name, %network, ?mode, engine = %parts.engine, "instance started");
        Self {
            name,
            network,
            mode,
            url,
            ws_url,
            rpc,
            gateway: service.gateway.clone(),
            lock,
            health_checks: service.config.health.clone(),
            min_free_disk: service.config.limits.min_free_disk_bytes,
            halted: None,
            parts,
        }
    }

    pub fn name(&self) -> &InstanceName {
        &self.name
    }

    pub fn credentials(&self) -> &Credentials {
        &self.parts.credentials
    }

    pub fn prune(&self) -> Prune {
        self.parts.prune
    }

    /// The local port of a dedicated node's JSON-RPC (direct, not through Nginx).
    pub fn node_url(&self) -> String {
        self.parts.upstream.http_url()
    }

    /// PIDs of the node processes currently running.
    pub fn pids(&self) -> Vec<u32> {
        self.parts
            .processes
            .iter()
            .filter_map(|p| match p.state() {
                ProcessState::Running { pid, .. } => Some(pid),
                _ => None,
            })
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.lock.dir()
    }

    /// Stops a dedicated node whose disk is about to fill (free space below
    /// `limits.min_free_disk_bytes`): better a node stopped with a reason than a full disk that
    /// corrupts its database and every other node's on the provider. Its data stays until the
    /// activity ends.
    async fn guard_disk(&mut self) {
        if self.halted.is_some() || self.parts.processes.is_empty() || self.min_free_disk == 0 {
            return;
        }
        let free = match locks::free_bytes(self.lock.dir()) {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(instance = %self.name, "cannot read free disk space: {e}");
                return;
            }
        };
        if free >= self.min_free_disk {
            return;
        }
        let reason = format!(
            "stopped by the provider: its disk is nearly full ({} free, {} must stay free)",
            gb(free),
            gb(self.min_free_disk)
        );
        tracing::warn!(instance = %self.name, "{reason}");
        stop_all(std::mem::take(&mut self.parts.processes)).await;
        self.halted = Some(reason);
    }

    /// What the endpoint served so far.
    pub fn usage(&self) -> Usage {
        self.parts.counter.usage()
    }

    /// JSON-RPC calls the node answered through the endpoint: the Golem usage counter
    /// [`REQUESTS_COUNTER`].
    pub fn requests(&self) -> u64 {
        self.parts.counter.get()
    }

    /// A handle on [`requests`](Self::requests) that needs no access to the instance.
    pub fn request_counter(&self) -> erigolem_guard::RequestCounter {
        self.parts.counter.clone()
    }

    /// The STATUS document.
    pub async fn status(&mut self) -> NodeStatus {
        self.guard_disk().await;
        let mut restarts = 0;
        let mut process_problem = self.halted.clone();
        let mut failed = self.halted.is_some();
        for p in &self.parts.processes {
            match p.state() {
                ProcessState::Running { restarts: r, .. } => restarts += r,
                ProcessState::Restarting {
                    restarts: r,
                    last_exit,
                } => {
                    restarts += r;
                    process_problem = Some(format!("node exited ({last_exit}); restarting"));
                }
                ProcessState::Failed {
                    restarts: r,
                    reason,
                } => {
                    restarts += r;
                    failed = true;
                    process_problem = Some(reason);
                }
                ProcessState::Stopped => failed = true,
            }
        }
        let (state, head, sync, peers) = if failed {
            (NodeState::Failed, None, None, None)
        } else {
            let (head, syncing, peers) =
                tokio::join!(self.rpc.head(), self.rpc.syncing(), self.rpc.peer_count());
            match (head, syncing) {
                (Ok(head), Ok(Some(progress))) => {
                    (NodeState::Syncing, Some(head), Some(progress), peers.ok())
                }
                (Ok(head), Ok(None)) => (NodeState::Running, Some(head), None, peers.ok()),
                (Ok(head), Err(_)) => (NodeState::Running, Some(head), None, peers.ok()),
                (Err(e), _) => {
                    process_problem.get_or_insert_with(|| format!("RPC not answering: {e}"));
                    (NodeState::Starting, None, None, None)
                }
            }
        };
        let about = &self.parts.about;
        if restarts > 0 && process_problem.is_none() {
            process_problem = Some(format!("node restarted {restarts} time(s) after crashing"));
        }
        NodeStatus {
            instance: self.name.clone(),
            url: self.url.clone(),
            ws_url: self.ws_url.clone(),
            network: self.network,
            engine: self.parts.engine,
            mode: self.mode,
            auth: self.parts.credentials.clone(),
            state,
            block: head.map(|h| h.number),
            sync,
            peers,
            behind_seconds: head.map(|h| h.behind_seconds()),
            engine_version: about.version.clone(),
            limits: about.limits,
            endpoint_limits: Some(self.parts.counter.limits().view()),
            warnings: about.warnings.clone(),
            restarts,
            error: process_problem,
            usage: Some(self.parts.counter.usage()),
        }
    }

    /// Block, sync, peers, lag and latency; for Erigon, its own `/health` verdicts (synced, at
    /// least `min_peers` peers, head at most `max_seconds_behind` old) decide `healthy`.
    pub async fn health(&mut self) -> Health {
        self.guard_disk().await;
        let query = ErigonHealthQuery {
            synced: true,
            min_peer_count: Some(self.health_checks.min_peers),
            max_seconds_behind: Some(self.health_checks.max_seconds_behind),
        };
        let erigon = self.parts.about.erigon_health.then_some(&query);
        let mut health = self.rpc.health(erigon).await;
        let failed = self.parts.processes.iter().find_map(|p| match p.state() {
            ProcessState::Failed { reason, .. } => Some(reason),
            _ => None,
        });
        if let Some(reason) = self.halted.clone().or(failed) {
            health.healthy = false;
            health.error = Some(reason);
        }
        health
    }

    /// The last `n` lines of the node's log (empty for a shared node).
    pub fn logs(&self, n: usize) -> String {
        erigolem_supervisor::tail_lines(&self.lock.dir().join("node.log"), n).unwrap_or_default()
    }

    /// Replaces the password with `password` (a caller restoring the one it had), or a fresh
    /// random one; the old one stops working at once, and every connection and WebSocket opened
    /// with it is closed.
    pub async fn rotate(
        &mut self,
        password: Option<&erigolem_primitives::EndpointPassword>,
    ) -> Result<Credentials, ServiceError> {
        let password = match password {
            Some(p) => p.expose().to_owned(),
            None => htpasswd::random_password(),
        };
        let credentials = Credentials {
            user: self.name.to_string(),
            password: Secret::new(password),
        };
        self.gateway
            .set_credentials(&self.name, &credentials)
            .await?;
        if let Some(guard) = &self.parts.guard {
            guard.set_credentials(&credentials);
        }
        self.parts.credentials = credentials.clone();
        tracing::info!(instance = %self.name, "password rotated");
        Ok(credentials)
    }

    /// Ends the endpoint, first part of [`stop`](Self::stop): revokes the credentials (Nginx
    /// answers 401), closes every connection and WebSocket (the guard) and removes the gateway
    /// entry (404). From then on the counts are final. Idempotent.
    pub async fn close_endpoint(&mut self) -> Result<(), ServiceError> {
        let Some(guard) = self.parts.guard.take() else {
            return Ok(());
        };
        let revoked = self.gateway.revoke(&self.name).await;
        guard.shutdown().await;
        Ok(revoked.and(self.gateway.remove(&self.name).await)?)
    }

    /// Closes the endpoint (see [`close_endpoint`](Self::close_endpoint)), stops a dedicated node
    /// gracefully and deletes the instance's directory.
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        let gateway = self.close_endpoint().await;
        stop_all(self.parts.processes).await;
        drop(self.parts.ports);
        self.lock.remove();
        tracing::info!(instance = %self.name, "instance stopped");
        gateway
    }
}

async fn stop_all(processes: Vec<Supervised>) {
    // Reverse order: rpcdaemon before the erigon it reads from.
    for p in processes.into_iter().rev() {
        p.stop().await;
    }
}

fn random_instance_name() -> InstanceName {
    let bytes: [u8; 8] = rand::random();
    // Starts with a letter so it is never mistaken for a number.
    InstanceName::new(format!("n{}", hex::encode(bytes)))
        .unwrap_or_else(|_| unreachable!("hex is valid"))
}

/// Bytes in decimal GB, as disks are sold and Erigon publishes its sizes.
fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

fn check_executable(what: &'static str, path: &Path) -> Result<(), ServiceError> {
    use std::os::unix::fs::PermissionsExt;
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        _ => Err(ServiceError::MissingBinary {
            what,
            path: path.to_owned(),
        }),
    }
}

fn check_writable_dir(path: &Path) -> Result<(), ServiceError> {
    let err = |source| ServiceError::DataDir {
        path: path.to_owned(),
        source,
    };
    fs::create_dir_all(path).map_err(err)?;
    let probe = path.join(format!(".write-test-{}", std::process::id()));
    fs::write(&probe, b"").map_err(err)?;
    let _ = fs::remove_file(probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in anvil that counts how often it is asked.
    fn fake_anvil(dir: &Path, version: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("anvil");
        let calls = dir.join("calls");
        let script = format!(
            "#!/bin/sh\necho x >> {}\necho 'anvil Version: {version}'\n",
            calls.display()
        );
        fs::write(&bin, script).unwrap_or_else(|e| panic!("{e}"));
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        bin
    }

    fn calls(dir: &Path) -> usize {
        fs::read_to_string(dir.join("calls"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn anvil_is_asked_its_version_once_until_the_binary_changes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap_or_else(|e| panic!("{e}"));
        let bin = fake_anvil(dir.path(), "1.7.1");
        for _ in 0..3 {
            assert_eq!(anvil_version(&bin, &data).await.as_deref(), Ok("1.7.1"));
        }
        assert_eq!(calls(dir.path()), 1, "asked more than once");
        // An upgrade in place (another size; the test cannot rely on the clock moving on).
        let bin = fake_anvil(dir.path(), "1.8.0-nightly");
        assert_eq!(
            anvil_version(&bin, &data).await.as_deref(),
            Ok("1.8.0-nightly")
        );
        assert_eq!(calls(dir.path()), 2);
        // A cache that is garbage or names another binary is asked past, not believed.
        fs::write(data.join("anvil-version.json"), "{not json").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            anvil_version(&bin, &data).await.as_deref(),
            Ok("1.8.0-nightly")
        );
        assert_eq!(calls(dir.path()), 3);
        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap_or_else(|e| panic!("{e}"));
        let other_bin = fake_anvil(&other, "0.2.0");
        assert_eq!(
            anvil_version(&other_bin, &data).await.as_deref(),
            Ok("0.2.0")
        );
        // A binary that is not anvil is still refused, cache or not.
        fs::write(&bin, "#!/bin/sh\necho 'hardhat 2.0'\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(anvil_version(&bin, &data).await.is_err());
    }

    #[test]
    fn a_starting_node_is_asked_every_2_ms_at_first_then_less_often() {
        let ms = Duration::from_millis;
        for (elapsed, pause) in [
            (ms(0), ms(2)),
            (ms(44), ms(2)),
            (ms(99), ms(2)),
            (ms(100), ms(10)),
            (ms(999), ms(10)),
            (ms(1000), ms(25)),
            (ms(120_000), ms(25)),
        ] {
            assert_eq!(ready_poll_pause(elapsed), pause, "at {elapsed:?}");
        }
    }
}
