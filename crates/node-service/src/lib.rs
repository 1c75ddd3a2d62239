//! The provider runtime's logic as a plain library, with no Golem SDK types: validate a provider
//! (`deploy`/`test`), start an instance (a dedicated node or credentials in front of a shared one,
//! behind Nginx and the instance's endpoint guard), report its STATUS/HEALTH/LOGS, rotate its
//! password, and stop it leaving nothing behind. `ya-runtime-erigon` is a thin adapter of this
//! crate to `ya-runtime-sdk`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use erigolem_engine::{engine_for, PortBlock, RpcClient};
use erigolem_gateway::{htpasswd, Gateway, GatewayError, Upstream};
use erigolem_guard::{Guard, GuardConfig, GuardError, Policy};
use erigolem_primitives::{
    Credentials, EngineKind, Health, InstanceName, InvalidStartArgs, Mode, Network, NodeState,
    NodeStatus, Prune, Secret, StartArgs, Usage,
};
use erigolem_supervisor::{ProcessState, RestartPolicy, Supervised, SupervisorError};
use serde::Serialize;

mod config;
mod locks;

pub use config::{Engines, GuardSettings, Limits, PortRange, RuntimeConfig};
use locks::{InstanceLock, PortLease};

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
    #[error("no instance is running")]
    NotStarted,
    #[error("an instance is already running in this runtime")]
    AlreadyStarted,
}

/// What `deploy` reports when a provider is usable.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub networks: BTreeMap<Network, Vec<Mode>>,
}

/// The market-facing description of this host (`offer-template`).
#[derive(Debug, Clone, Serialize)]
pub struct Offer {
    pub networks: Vec<Network>,
    pub modes: Vec<Mode>,
}

/// The runtime's service for one host: checks the setup and starts instances.
#[derive(Debug, Clone)]
pub struct NodeService {
    config: RuntimeConfig,
    gateway: Gateway,
    /// Where endpoint guards run (None: the caller's runtime).
    guard_runtime: Option<tokio::runtime::Handle>,
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
        Ok(Self {
            config,
            gateway,
            guard_runtime: None,
        })
    }

    /// Runs endpoint guards on `runtime` instead of the caller's.
    pub fn with_guard_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.guard_runtime = Some(runtime);
        self
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub fn offer(&self) -> Offer {
        let offered = self.config.offered();
        let mut modes: Vec<Mode> = offered.values().flatten().copied().collect();
        modes.sort();
        modes.dedup();
        Offer {
            networks: offered.keys().copied().collect(),
            modes,
        }
    }

    /// Checks that this host can serve at least one network: engine binaries, data dir, Nginx.
    pub async fn deploy(&self) -> Result<DeployReport, ServiceError> {
        let networks = self.config.offered();
        if networks.is_empty() {
            return Err(ServiceError::Config(
                "no engine and no shared node configured: nothing to serve".into(),
            ));
        }
        if let Some(erigon) = &self.config.engines.erigon {
            check_executable("erigon binary", &erigon.binary)?;
            if let Some(rpcdaemon) = &erigon.rpcdaemon {
                check_executable("rpcdaemon binary", rpcdaemon)?;
            }
        }
        if let Some(anvil) = &self.config.engines.anvil {
            check_executable("anvil binary", &anvil.binary)?;
        }
        check_writable_dir(&self.config.data_dir)?;
        check_executable("nginx binary", &self.config.nginx.nginx_bin)?;
        self.gateway.ensure_layout()?;
        self.gateway.master_pid()?;
        Ok(DeployReport { networks })
    }

    /// `deploy`'s checks, plus a validation of the live Nginx config and the shared nodes.
    pub async fn self_test(&self) -> Result<DeployReport, ServiceError> {
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

        self.sweep_stale().await;
        let instances_dir = self.config.data_dir.join("instances");
        check_writable_dir(&instances_dir)?;
        let in_use = locks::instances_in_use(&instances_dir);
        if in_use >= self.config.limits.max_instances as usize {
            return Err(ServiceError::Capacity {
                max: self.config.limits.max_instances,
            });
        }
        let name = match args.instance {
            Some(name) => name,
            None => random_instance_name(),
        };
        let lock = InstanceLock::acquire(&instances_dir, &name)?;
        let password = match args.password {
            Some(p) => p.expose().to_owned(),
            None => htpasswd::random_password(),
        };
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
                        erigon.processes(network, prune, &datadir, block)
                    }
                };
                let policy = RestartPolicy {
                    max_restarts: self.config.limits.max_restarts,
                    stop_grace: Duration::from_secs(self.config.limits.stop_grace_secs),
                    ..RestartPolicy::default()
                };
                let log = lock.dir().join("node.log");
                let mut processes = Vec::new();
                for spec in specs {
                    match Supervised::spawn(spec, &log, policy.clone()) {
                        Ok(p) => processes.push(p),
                        Err(e) => {
                            stop_all(processes).await;
                            return Err(e.into());
                        }
                    }
                }
                let upstream = Upstream::local(block.http());
                let spawned = Instant::now();
                if let Err(e) = self.wait_ready(engine, &upstream, &processes, &log).await {
                    stop_all(processes).await;
                    return Err(e);
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
            let guard = match &self.guard_runtime {
                Some(runtime) => {
                    let _entered = runtime.enter();
                    Guard::spawn(config)?
                }
                None => Guard::spawn(config)?,
            };
            self.gateway.set_credentials(name, credentials).await?;
            Ok::<_, ServiceError>(guard)
        }
        .await;
        if opened.is_err() {
            let _ = self.gateway.remove(name).await;
        }
        opened
    }

    async fn wait_ready(
        &self,
        engine: EngineKind,
        upstream: &Upstream,
        processes: &[Supervised],
        log: &Path,
    ) -> Result<(), ServiceError> {
        let rpc = RpcClient::new(upstream.http_url());
        let timeout = Duration::from_secs(self.config.limits.start_timeout_secs);
        let deadline = Instant::now() + timeout;
        // Short pauses: a local RPC probe is cheap and start latency is what users wait for.
        let mut pause = Duration::from_millis(2);
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
            if rpc.is_ready().await {
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
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
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
    pub async fn status(&self) -> NodeStatus {
        let mut restarts = 0;
        let mut process_problem = None;
        let mut failed = false;
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
        let (state, block, sync, peers) = if failed {
            (NodeState::Failed, None, None, None)
        } else {
            let (block, syncing, peers) = tokio::join!(
                self.rpc.block_number(),
                self.rpc.syncing(),
                self.rpc.peer_count()
            );
            match (block, syncing) {
                (Ok(block), Ok(Some(progress))) => {
                    (NodeState::Syncing, Some(block), Some(progress), peers.ok())
                }
                (Ok(block), Ok(None)) => (NodeState::Running, Some(block), None, peers.ok()),
                (Ok(block), Err(_)) => (NodeState::Running, Some(block), None, peers.ok()),
                (Err(e), _) => {
                    process_problem.get_or_insert_with(|| format!("RPC not answering: {e}"));
                    (NodeState::Starting, None, None, None)
                }
            }
        };
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
            block,
            sync,
            peers,
            restarts,
            error: process_problem,
            usage: Some(self.parts.counter.usage()),
        }
    }

    pub async fn health(&self) -> Health {
        let mut health = self.rpc.health().await;
        if let Some(reason) = self.parts.processes.iter().find_map(|p| match p.state() {
            ProcessState::Failed { reason, .. } => Some(reason),
            _ => None,
        }) {
            health.healthy = false;
            health.error = Some(reason);
        }
        health
    }

    /// The last `n` lines of the node's log (empty for a shared node).
    pub fn logs(&self, n: usize) -> String {
        erigolem_supervisor::tail_lines(&self.lock.dir().join("node.log"), n).unwrap_or_default()
    }

    /// Replaces the password; the old one stops working at once, and every connection and
    /// WebSocket opened with it is closed.
    pub async fn rotate(&mut self) -> Result<Credentials, ServiceError> {
        let credentials = Credentials {
            user: self.name.to_string(),
            password: Secret::new(htpasswd::random_password()),
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
