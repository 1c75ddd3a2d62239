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

pub mod backend;
mod error;
mod lag;
mod reconciler;
mod routes;

pub use error::ApiError;

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
    /// A running node more than this many blocks behind the network is shown as lagging.
    pub lag_blocks: u64,
    /// A running node whose head block is older than this many seconds is shown as lagging.
    pub lag_seconds: u64,
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
            // Chainstack fails a node over at 40 blocks; 120 s is ten mainnet slots.
            lag_blocks: 40,
            lag_seconds: 120,
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
    #[error("local backend: {0}")]
    Local(#[from] backend::local::LocalError),
    #[error("golem backend: {0}")]
    Golem(#[from] backend::golem::GolemError),
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
    /// Bumped after every recorded transition: wakes the event streams.
    pub(crate) changes: tokio::sync::watch::Sender<u64>,
    /// Block height and sync progress of running nodes as they are polled; not stored as events.
    pub(crate) progress: tokio::sync::broadcast::Sender<routes::events::Progress>,
    /// Running nodes whose last STATUS polls failed, and why (cleared when one answers again).
    pub(crate) unhealthy: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// What the last STATUS of each running node said beyond block and sync (release, limits,
    /// lag); not stored: the next poll brings it back after a restart.
    pub(crate) live: std::sync::Mutex<std::collections::HashMap<String, lag::LiveStatus>>,
    pub(crate) limiter: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
}

impl AppState {
    /// Records a transition (with its event row) and wakes the event streams.
    pub(crate) async fn transition(
        &self,
        id: &str,
        to: erigolem_store::NodeState,
        reason: Option<&str>,
    ) -> Result<erigolem_store::NodeRecord, erigolem_store::StoreError> {
        let node = self.store.transition(id, to, reason).await?;
        self.notify();
        Ok(node)
    }

    /// The last STATUS extras of a node, if it was polled since the server started.
    pub(crate) fn live(&self, id: &str) -> Option<lag::LiveStatus> {
        self.live.lock().ok()?.get(id).cloned()
    }

    /// Why the node is unhealthy (its STATUS polls fail), if it is.
    pub(crate) fn health(&self, id: &str) -> Option<String> {
        self.unhealthy.lock().ok()?.get(id).cloned()
    }

    pub(crate) fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Progress updates buffered per event stream; a stream that falls further behind skips to the newest.
const PROGRESS_BUFFER: usize = 256;

/// A running server. Dropping it starts a graceful shutdown; [`Handle::shutdown`] waits for it.
#[derive(Debug)]
pub struct Handle {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Handle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
    let key = erigolem_store::KeyFile::load_or_create(config.data_dir.join("secret.key"))?;
    let database_url = config.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            config.data_dir.join("erigolem.db").display()
        )
    });
    let store = Store::connect(&database_url, key).await?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
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
    let metrics = prometheus_handle();
    let config_rate = config.rate_limit;
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
                backend::golem::GolemBackend::start(&dir, golem.clone()).await?,
            ))
        }
        None => None,
    };
    let state = Arc::new(AppState {
        store,
        siwe,
        metrics,
        secure_cookies: public.scheme() == "https",
        config,
        backend,
        changes: tokio::sync::watch::channel(0).0,
        progress: tokio::sync::broadcast::channel(PROGRESS_BUFFER).0,
        unhealthy: Default::default(),
        live: Default::default(),
        limiter: governor::RateLimiter::keyed(
            governor::Quota::per_second(config_rate).allow_burst(
                std::num::NonZeroU32::new(config_rate.get().saturating_mul(2))
                    .unwrap_or(config_rate),
            ),
        ),
    });
    reconciler::recover(state.clone()).await?;
    let poller = reconciler::spawn_poller(state.clone());
    let app = routes::router(state);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = rx.await;
        });
        if let Err(e) = serve.await {
            tracing::error!("server stopped: {e}");
        }
        poller.abort();
    });
    tracing::info!(%local_addr, "erigolem server listening");
    Ok(Handle {
        local_addr,
        shutdown: Some(tx),
        task: Some(task),
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
