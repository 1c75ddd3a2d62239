//! The requestor server behind `erigolem serve`: the REST API of DESIGN.md §3 (axum), Sign-In with
//! Ethereum sessions, the persistent registry, `/healthz`, Prometheus `/metrics` and the OpenAPI
//! document. `spawn(config)` returns a [`Handle`]; dropping it shuts the server down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use erigolem_auth::SiweConfig;
use erigolem_store::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::oneshot;

mod access;
mod admission;
mod alerts;
pub mod backend;
mod error;
mod feed;
mod housekeeping;
mod lag;
mod leases;
mod logs;
pub mod money;
mod payments;
mod reconciler;
mod routes;
mod usage;
pub use routes::openapi_json;
mod security;
mod serve;
mod webhook;
pub use webhook::WebhookConfig;

pub use error::ApiError;
pub use money::PaymentPolicy;

/// How the server runs. Defaults need nothing: `./.erigolem`, SQLite inside it, 127.0.0.1:8080.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: `<data_dir>/erigolem.db`.
    pub database_url: Option<String>,
    /// What SIWE messages must name (domain and URI); default: `http://<listen>`.
    pub public_url: Option<url::Url>,
    /// Chain ids accepted in SIWE messages; empty accepts any.
    pub chain_ids: Vec<u64>,
    pub session_ttl: Duration,
    pub nonce_ttl: Duration,
    /// Where nodes run; `None` serves sign-in only (nodes cannot be created).
    pub backend: Option<BackendConfig>,
    /// Active (not stopped) nodes one user may have.
    pub max_active_nodes: u32,
    /// API requests per second one client IP may make (bursts of twice that).
    pub rate_limit: std::num::NonZeroU32,
    /// What nodes may cost where they are paid for (golem).
    pub payments: PaymentPolicy,
    /// Hosts (`name` or `name:port`) besides the public URL's that `Host` and `Origin` may name,
    /// e.g. the upstream address a TLS proxy forwards to without passing `Host` on.
    pub allowed_hosts: Vec<String>,
    /// Who may sign in and create nodes.
    pub admission: Admission,
    /// Peers (proxies) whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where `/metrics` is served and whether it needs a token.
    pub metrics: MetricsConfig,
    /// Connection, stream and nonce bounds.
    pub limits: Limits,
    /// How often expired nonces, sessions and old events are deleted and idle rate-limiter
    /// entries forgotten.
    pub purge_interval: Duration,
    /// How long node transitions are kept (replayable with `Last-Event-ID`).
    pub event_retention: Duration,
    /// A running node more than this many blocks behind the network is shown as lagging.
    pub lag_blocks: u64,
    /// A running node whose head block is older than this many seconds is shown as lagging.
    pub lag_seconds: u64,
    /// The node-password key file; every server on one database needs the same one. Default:
    /// `<data_dir>/secret.key`.
    pub key_file: Option<PathBuf>,
    /// How long a node's lease lasts unrenewed: after a replica dies, another one takes its nodes
    /// over within about this long (renewed every sixth of it).
    pub lease_ttl: Duration,
    /// How alerts are delivered to the users' webhooks.
    pub webhooks: WebhookConfig,
}

/// Who may use the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Admission {
    /// Any wallet may sign in and create nodes, up to the per-user caps.
    #[default]
    Open,
    /// Only these addresses (compared case-insensitively) may sign in and create nodes.
    AllowList(Vec<String>),
}

/// `/metrics`: on the main listener unless `listen` is set; behind `Authorization: Bearer` when
/// `token` is set.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
    pub token: Option<String>,
}

/// What one client may hold at once, and how long a connection may dawdle.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections; more are closed at once.
    pub max_connections: usize,
    /// Open connections from one IP (one /64 for IPv6); trusted proxies are exempt.
    pub max_connections_per_ip: usize,
    /// Time a client has to send a request's headers (from the first byte it may send).
    pub header_read_timeout: Duration,
    /// A connection that neither reads nor writes this long is closed.
    pub idle_timeout: Duration,
    /// Event streams (`GET /events`) one user may have open.
    pub max_streams_per_user: usize,
    /// Unused sign-in nonces one IP may hold.
    pub max_nonces_per_ip: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_connections_per_ip: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_streams_per_user: 16,
            max_nonces_per_ip: 32,
        }
    }
}

/// Where nodes run.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    /// This machine is the provider.
    Local(backend::local::LocalConfig),
    /// Providers on the Golem market, through the requestor's yagna.
    Golem(backend::golem::GolemConfig),
}

impl ServerConfig {
    /// The defaults of `erigolem serve`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: data_dir.into(),
            database_url: None,
            public_url: None,
            chain_ids: Vec::new(),
            session_ttl: Duration::from_secs(24 * 3600),
            nonce_ttl: Duration::from_secs(5 * 60),
            backend: None,
            max_active_nodes: 3,
            rate_limit: std::num::NonZeroU32::new(50).unwrap_or(std::num::NonZeroU32::MIN),
            payments: PaymentPolicy::default(),
            allowed_hosts: Vec::new(),
            admission: Admission::Open,
            trusted_proxies: Vec::new(),
            metrics: MetricsConfig::default(),
            limits: Limits::default(),
            purge_interval: Duration::from_secs(60),
            event_retention: Duration::from_secs(30 * 24 * 3600),
            // Chainstack fails a node over at 40 blocks; 120 s is ten mainnet slots.
            lag_blocks: 40,
            lag_seconds: 120,
            key_file: None,
            lease_ttl: Duration::from_secs(6),
            webhooks: WebhookConfig::default(),
        }
    }

    /// For tests: port 0 on loopback, data under `data_dir`.
    pub fn test(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Self::new(data_dir)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] erigolem_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid public URL {0}: it needs a host")]
    PublicUrl(url::Url),
    #[error("the admission policy is an allow-list, but it lists no address")]
    EmptyAllowList,
    #[error("local backend: {0}")]
    Local(#[from] backend::local::LocalError),
    #[error("golem backend: {0}")]
    Golem(#[from] backend::golem::GolemError),
    #[error("{0}")]
    Replicas(String),
}

/// Shared state of all routes.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) siwe: SiweConfig,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) config: ServerConfig,
    /// Cookies get `Secure` when the public URL is HTTPS.
    pub(crate) secure_cookies: bool,
    pub(crate) backend: Option<Arc<dyn backend::Backend>>,
    /// The event streams, one feed per owner.
    pub(crate) hub: Arc<feed::Hub>,
    /// What `Host` and `Origin` may say.
    pub(crate) hosts: security::HostPolicy,
    pub(crate) trusted_proxies: security::TrustedProxies,
    /// Block height and sync progress of running nodes as they are polled; not stored as events.
    pub(crate) progress: tokio::sync::broadcast::Sender<routes::events::Progress>,
    /// Running nodes whose last STATUS polls failed: how many in a row, and why (cleared when one
    /// answers again).
    pub(crate) unhealthy: std::sync::Mutex<std::collections::HashMap<String, (u32, String)>>,
    /// What the last STATUS of each running node said beyond block and sync (release, limits,
    /// lag); not stored: the next poll brings it back after a restart.
    pub(crate) live: std::sync::Mutex<std::collections::HashMap<String, lag::LiveStatus>>,
    /// Each polled node's last cumulative usage and when it was read (unix ms): the next poll's
    /// difference to it is what the node served in between.
    pub(crate) usage_cursors:
        std::sync::Mutex<std::collections::HashMap<String, (erigolem_primitives::Usage, i64)>>,
    pub(crate) limiter: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Set when the server shuts down: every task it started ends at its next await, as in a
    /// crash (nothing half-done is finished on the way out; the next start picks it up).
    pub(crate) shutting_down: tokio::sync::watch::Sender<bool>,
    /// The nodes this replica controls.
    pub(crate) leases: leases::Leases,
    /// Where this replica listens (as registered).
    pub(crate) listen: String,
    /// Of each active alert of the nodes held here: polls in a row within its threshold.
    pub(crate) alert_clears: std::sync::Mutex<
        std::collections::HashMap<(String, erigolem_lifecycle::alert::AlertType), u32>,
    >,
    /// Wakes the webhook worker: a delivery was enqueued.
    pub(crate) deliveries: tokio::sync::Notify,
}

impl AppState {
    /// The last STATUS extras of a node, if it was polled since the server started.
    pub(crate) fn live(&self, id: &str) -> Option<lag::LiveStatus> {
        self.live.lock().ok()?.get(id).cloned()
    }

    /// Why the node is unhealthy (its STATUS polls fail), if it is.
    pub(crate) fn health(&self, id: &str) -> Option<String> {
        self.unhealthy
            .lock()
            .ok()?
            .get(id)
            .map(|(_, why)| why.clone())
    }

    /// STATUS polls of the node that failed in a row.
    pub(crate) fn misses(&self, id: &str) -> u32 {
        self.unhealthy
            .lock()
            .ok()
            .and_then(|u| u.get(id).map(|(n, _)| *n))
            .unwrap_or(0)
    }

    /// One more failed poll, and why; how many in a row now.
    pub(crate) fn add_miss(&self, id: &str, why: &str) -> u32 {
        let Ok(mut u) = self.unhealthy.lock() else {
            return 0;
        };
        let entry = u.entry(id.to_owned()).or_insert((0, String::new()));
        entry.0 += 1;
        entry.1 = why.to_owned();
        entry.0
    }

    pub(crate) fn clear_health(&self, id: &str) {
        if let Ok(mut u) = self.unhealthy.lock() {
            u.remove(id);
        }
    }

    /// Forgets the health of nodes that no longer run.
    pub(crate) fn forget_health_except(&self, running: &[erigolem_store::NodeRecord]) {
        if let Ok(mut u) = self.unhealthy.lock() {
            u.retain(|id, _| running.iter().any(|n| &n.id == id));
        }
    }

    /// `local`, `golem` or `none`: as registered among the replicas.
    pub(crate) fn backend_name(&self) -> &'static str {
        backend_name(&self.config.backend)
    }

    /// What another replica's poll of a node said beyond block and sync.
    pub(crate) fn cache_live(&self, id: &str, live: lag::LiveStatus) {
        if let Ok(mut all) = self.live.lock() {
            all.insert(id.to_owned(), live);
        }
    }

    /// Whether another replica's poll of a node found it unhealthy (shown; not counted here).
    pub(crate) fn note_health(&self, id: &str, health: Option<String>) {
        let Ok(mut u) = self.unhealthy.lock() else {
            return;
        };
        match health {
            Some(why) => {
                let entry = u.entry(id.to_owned()).or_insert((0, String::new()));
                entry.1 = why;
            }
            None => {
                u.remove(id);
            }
        }
    }

    /// `owner` has new transitions in the store: wakes their event feed.
    pub(crate) fn notify_owner(&self, owner: &str) {
        self.hub.notify(owner);
    }
}

fn backend_name(backend: &Option<BackendConfig>) -> &'static str {
    match backend {
        Some(BackendConfig::Local(_)) => "local",
        Some(BackendConfig::Golem(_)) => "golem",
        None => "none",
    }
}

/// Runs `task` in the background until it ends or the server shuts down (`down` is
/// [`AppState::shutting_down`]'s receiver).
pub(crate) fn spawn_until(
    mut down: tokio::sync::watch::Receiver<bool>,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = task => {}
            _ = down.wait_for(|d| *d) => {}
        }
    })
}

/// Progress updates buffered between the reconciler and the event feeds.
const PROGRESS_BUFFER: usize = 256;

/// A running server. Dropping it starts a graceful shutdown; [`Handle::shutdown`] waits for it.
#[derive(Debug)]
pub struct Handle {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Handle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` is served when it has a listener of its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// `http://<local addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Waits until the server stops (it runs until shutdown).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl ServerConfig {
    /// Every path made absolute against the working directory, once: they are written into the
    /// runtime's config and handed to child processes, which must not depend on where they run.
    fn absolutize(mut self) -> Result<Self, ServerError> {
        let abs = |p: &std::path::Path| {
            erigolem_primitives::paths::absolute(p).map_err(|source| ServerError::DataDir {
                path: p.to_owned(),
                source,
            })
        };
        self.data_dir = abs(&self.data_dir)?;
        if let Some(BackendConfig::Local(local)) = &mut self.backend {
            local.runtime_bin = abs(&local.runtime_bin)?;
            local.anvil_bin = local.anvil_bin.as_deref().map(abs).transpose()?;
            local.erigon_bin = local.erigon_bin.as_deref().map(abs).transpose()?;
        }
        Ok(self)
    }
}

/// Opens the store, binds the listener and serves until the handle is dropped or shut down.
pub async fn spawn(config: ServerConfig) -> Result<Handle, ServerError> {
    let config = config.absolutize()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let key_file = config
        .key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("secret.key"));
    let key = erigolem_store::KeyFile::load_or_create(key_file)?;
    let database_url = config.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            config.data_dir.join("erigolem.db").display()
        )
    });
    let replica = uuid::Uuid::now_v7().to_string();
    let lease_ms = i64::try_from(config.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    let store = Store::connect(&database_url, key)
        .await?
        .for_replica(&replica, lease_ms);
    store.check_key().await?;

    let bind = |addr: SocketAddr| async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok::<_, ServerError>((listener, local))
    };
    let (listener, local_addr) = bind(config.listen).await?;
    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let public = match &config.public_url {
        Some(url) => url.clone(),
        None => {
            url::Url::parse(&format!("http://{local_addr}")).map_err(|_| ServerError::Bind {
                addr: local_addr,
                source: std::io::ErrorKind::InvalidInput.into(),
            })?
        }
    };
    let host = public
        .host_str()
        .ok_or_else(|| ServerError::PublicUrl(public.clone()))?;
    let domain = match public.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let siwe = SiweConfig {
        domain,
        uri: public.origin().ascii_serialization(),
        chain_ids: config.chain_ids.clone(),
        max_age: config.nonce_ttl,
        clock_skew: Duration::from_secs(60),
    };
    if let Admission::AllowList(list) = &config.admission {
        if list.is_empty() {
            return Err(ServerError::EmptyAllowList);
        }
    }
    let metrics_exposed = config.metrics.listen.is_none() && config.metrics.token.is_none();
    let loopback = |h: &str| {
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
            || h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    if metrics_exposed && !(loopback(host) && local_addr.ip().is_loopback()) {
        tracing::warn!(
            "/metrics is open to anyone who reaches {public}: give --metrics-listen or --metrics-token"
        );
    }
    let hosts = security::HostPolicy::new(&public, &config.allowed_hosts);
    let mut limits = config.limits.clone();
    limits.max_connections = serve::connection_budget(limits.max_connections);
    let metrics = prometheus_handle();
    leases::register(
        &store,
        &replica,
        config.lease_ttl,
        backend_name(&config.backend),
        &config.data_dir,
        &local_addr.to_string(),
    )
    .await?;
    let config_rate = config.rate_limit;
    let config_lease_ttl = config.lease_ttl;
    let shared_store = store.shared();
    let backend: Option<Arc<dyn backend::Backend>> = match &config.backend {
        Some(BackendConfig::Local(local)) => {
            let dir = config.data_dir.join("local");
            Some(Arc::new(
                backend::local::LocalBackend::start(&dir, local.clone()).await?,
            ))
        }
        Some(BackendConfig::Golem(golem)) => {
            let dir = config.data_dir.join("golem");
            Some(Arc::new(
                backend::golem::GolemBackend::start(&dir, golem.clone(), store.clone()).await?,
            ))
        }
        None => None,
    };
    let trusted_proxies = security::TrustedProxies::new(config.trusted_proxies.clone());
    let hub = feed::Hub::new(store.clone(), config.limits.max_streams_per_user);
    let state = Arc::new(AppState {
        store,
        siwe,
        metrics,
        secure_cookies: public.scheme() == "https",
        config,
        backend,
        hub,
        hosts,
        trusted_proxies: trusted_proxies.clone(),
        progress: tokio::sync::broadcast::channel(PROGRESS_BUFFER).0,
        unhealthy: Default::default(),
        shutting_down: tokio::sync::watch::channel(false).0,
        live: Default::default(),
        leases: leases::Leases::new(replica.clone(), config_lease_ttl, shared_store),
        listen: local_addr.to_string(),
        usage_cursors: Default::default(),
        alert_clears: Default::default(),
        deliveries: tokio::sync::Notify::new(),
        limiter: governor::RateLimiter::keyed(
            governor::Quota::per_second(config_rate).allow_burst(
                std::num::NonZeroU32::new(config_rate.get().saturating_mul(2))
                    .unwrap_or(config_rate),
            ),
        ),
    });
    if !state.trusted_proxies.is_empty() && !state.secure_cookies {
        tracing::warn!(
            "trusted proxies are set but the public URL is not https: cookies are Secure only \
             for requests a proxy forwarded with X-Forwarded-Proto: https"
        );
    }
    let notifications = leases::spawn_listener(state.clone()).await?;
    // The nodes nobody holds (all of them after a restart of a lone server) are taken and picked
    // up before the API answers.
    leases::tick(&state).await?;
    let mut background = vec![
        leases::spawn(state.clone()),
        reconciler::spawn_poller(state.clone()),
        housekeeping::spawn(state.clone()),
        spawn_progress_router(state.clone()),
        webhook::spawn(state.clone()),
    ];
    background.extend(payments::spawn(state.clone()));
    background.extend(notifications);
    let app = routes::router(state.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_addr = metrics_listener.as_ref().map(|(_, addr)| *addr);
    let task = tokio::spawn(async move {
        let main = serve::serve(
            listener,
            app,
            limits.clone(),
            trusted_proxies.clone(),
            stop_rx.clone(),
        );
        let metrics = async {
            if let Some((listener, _)) = metrics_listener {
                let app = routes::metrics_only(state.clone());
                serve::serve(
                    listener,
                    app,
                    limits.clone(),
                    trusted_proxies.clone(),
                    stop_rx.clone(),
                )
                .await;
            }
        };
        let stop = async {
            let _ = rx.await;
            // Event streams never end on their own: end them so their connections can close.
            state.hub.close_all();
            let _ = stop_tx.send(true);
        };
        tokio::join!(main, metrics, stop);
        for task in background {
            task.abort();
        }
        // Whatever the server started ends now, as in a crash: the next start (or another
        // replica, at once: the leases are handed back) picks it up.
        state.shutting_down.send_replace(true);
        // Not held up by a database that is gone: its leases then expire on their own.
        let _ = tokio::time::timeout(Duration::from_secs(5), leases::hand_back(&state)).await;
    });
    tracing::info!(%local_addr, "erigolem server listening");
    Ok(Handle {
        local_addr,
        metrics_addr,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// Hands each progress update of the reconciler to its owner's event feed.
fn spawn_progress_router(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    let mut rx = state.progress.subscribe();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match rx.recv().await {
                Ok(progress) => state.hub.progress(progress),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    })
}

/// The process-wide Prometheus recorder (installed once; later servers in the same process share it).
fn prometheus_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then our handle renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
