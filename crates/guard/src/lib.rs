//! The endpoint guard: the part of one activity's endpoint that the activity's runtime owns for
//! exactly the activity's life. Nginx keeps TLS and basic auth with a static site (one location
//! for every instance, see `erigolem_gateway::site`) and passes each request for `/<instance>/`
//! to that instance's unix socket; the guard serves the socket and proxies to the node — HTTP
//! (keep-alive to the node) and WebSocket — parsing only what policy and metering need:
//!
//! - **revocation**: it checks the credentials itself on every request, and a new password
//!   ([`Guard::set_credentials`]) or [`Guard::shutdown`] closes every connection and WebSocket
//!   made with the old one at once;
//! - **method policy** ([`Policy`]): the engine's deny list, the provider's, the requestor's
//!   allowlist; each call of a batch is checked; refusals are JSON-RPC errors;
//! - **limits** ([`GuardLimits`]): calls per second over HTTP and WebSocket alike, concurrent
//!   calls, body and batch size, open WebSockets — over a limit, an error at once (HTTP 429);
//! - **allowlists**: `allow_origins` (the `Origin` header) and `allow_ips` (the client address
//!   Nginx puts in [`CLIENT_IP_HEADER`], replacing whatever a client sent under that name);
//! - **metering**: [`Guard::usage`], the STATUS document's `usage`.
//!
//! [`Guard::spawn`] binds the socket and serves it on the current tokio runtime; dropping the
//! guard shuts it down.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use erigolem_primitives::{Credentials, InstanceName, IpBlock, OriginPattern, Usage};
use tokio::sync::watch;

mod auth;
mod jsonrpc;
mod limits;
mod meter;
mod policy;
mod proxy;
mod screen;
mod ws;

pub use limits::GuardLimits;
pub use policy::{Denied, Policy, PolicySettings};

/// The request header that carries the client's address: the Nginx site sets it to
/// `$remote_addr` (`proxy_set_header` replaces a header of that name sent by the client).
pub const CLIENT_IP_HEADER: &str = "x-erigolem-client-ip";

/// The longest unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// What one endpoint's guard serves and enforces.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    pub instance: InstanceName,
    /// The unix socket Nginx connects to for `/<instance>/`.
    pub socket: PathBuf,
    /// Group given to the socket (the Nginx workers' group); mode 0660.
    pub socket_group: Option<String>,
    /// The node's JSON-RPC (HTTP and WebSocket): `host:port`.
    pub node: String,
    pub credentials: Credentials,
    pub policy: Policy,
    pub limits: GuardLimits,
    pub allow_origins: Option<Vec<OriginPattern>>,
    pub allow_ips: Option<Vec<IpBlock>>,
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("socket path {path} is {len} bytes long; a unix socket path has at most {MAX_SOCKET_PATH}: use a shorter gateway directory")]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("{path} exists and is not a socket: refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("unknown group {0:?} for the guard's socket")]
    UnknownGroup(String),
    #[error("{0}")]
    Limits(String),
    #[error("invalid node address {0:?}")]
    Node(String),
}

/// The generation a connection is marked with before it authenticated.
const UNAUTHENTICATED: u64 = 0;
/// The generation that ends every connection.
const SHUT_DOWN: u64 = u64::MAX;

/// Whether a connection authenticated at `authed` must end now that the generation is `current`.
fn revoked(current: u64, authed: u64) -> bool {
    current == SHUT_DOWN || (authed != UNAUTHENTICATED && authed < current)
}

#[derive(Debug)]
struct Auth {
    user: String,
    password: String,
    /// Bumped on every credentials change; connections remember the one they authenticated at.
    generation: u64,
}

#[derive(Debug)]
struct Shared {
    /// `/<instance>/`
    prefix: String,
    auth: RwLock<Auth>,
    generation: watch::Sender<u64>,
    policy: Policy,
    limits: GuardLimits,
    allow_origins: Option<Vec<OriginPattern>>,
    allow_ips: Option<Vec<IpBlock>>,
    meter: meter::Meter,
    limiter: limits::Limiter,
    client: proxy::NodeClient,
    node_ws: String,
    open_websockets: AtomicU32,
    /// Connections and WebSockets alive (each holds a clone).
    live: Arc<()>,
}

/// A running guard; dropping it shuts it down.
#[derive(Debug)]
pub struct Guard {
    shared: Arc<Shared>,
    socket: PathBuf,
    accept: Option<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Guard {
    /// Binds the socket (replacing a stale one left by a killed runtime) and serves it.
    pub fn spawn(config: GuardConfig) -> Result<Guard, GuardError> {
        config.limits.validate().map_err(GuardError::Limits)?;
        let node_uri: hyper::Uri = format!("http://{}/", config.node)
            .parse()
            .map_err(|_| GuardError::Node(config.node.clone()))?;
        let listener = bind(&config.socket, config.socket_group.as_deref())?;
        let (generation, _) = watch::channel(1);
        let shared = Arc::new(Shared {
            prefix: format!("/{}/", config.instance),
            auth: RwLock::new(Auth {
                user: config.credentials.user.clone(),
                password: config.credentials.password.expose().to_owned(),
                generation: 1,
            }),
            generation,
            policy: config.policy,
            limiter: limits::Limiter::new(&config.limits),
            client: proxy::NodeClient::new(node_uri, &config.limits),
            node_ws: format!("ws://{}/", config.node),
            limits: config.limits,
            allow_origins: config.allow_origins,
            allow_ips: config.allow_ips,
            meter: meter::Meter::default(),
            open_websockets: AtomicU32::new(0),
            live: Arc::new(()),
        });
        let accept = tokio::spawn(proxy::serve(shared.clone(), listener));
        Ok(Guard {
            shared,
            socket: config.socket,
            accept: Some(accept),
            started: Instant::now(),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What the endpoint served so far.
    pub fn usage(&self) -> Usage {
        self.shared.meter.snapshot()
    }

    /// JSON-RPC calls the node answered so far (the Golem usage counter).
    pub fn requests(&self) -> u64 {
        self.shared.meter.requests()
    }

    /// A cheap handle on [`requests`](Self::requests), for reporting it from elsewhere.
    pub fn request_counter(&self) -> RequestCounter {
        RequestCounter(self.shared.clone())
    }

    /// How long the guard has served.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Replaces the credentials: from now on only the new ones are accepted, and every
    /// connection and WebSocket authenticated with the old ones is closed at once.
    pub fn set_credentials(&self, credentials: &Credentials) {
        let generation = match self.shared.auth.write() {
            Ok(mut auth) => {
                auth.user = credentials.user.clone();
                auth.password = credentials.password.expose().to_owned();
                auth.generation += 1;
                auth.generation
            }
            Err(_) => SHUT_DOWN,
        };
        self.shared.generation.send_replace(generation);
    }

    /// Stops accepting, closes every connection and WebSocket, and removes the socket; waits
    /// (up to a second) until their tasks are gone.
    pub async fn shutdown(mut self) {
        self.close();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Arc::strong_count(&self.shared.live) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn close(&mut self) {
        self.shared.generation.send_replace(SHUT_DOWN);
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads a guard's request count; keeps reading the last count after the guard is gone.
#[derive(Debug, Clone)]
pub struct RequestCounter(Arc<Shared>);

impl RequestCounter {
    pub fn get(&self) -> u64 {
        self.0.meter.requests()
    }

    /// The whole [`Usage`] (as [`Guard::usage`]).
    pub fn usage(&self) -> Usage {
        self.0.meter.snapshot()
    }

    /// The limits the guard enforces.
    pub fn limits(&self) -> GuardLimits {
        self.0.limits
    }
}

/// Binds a unix socket at `path` with mode 0660 (and `group`): a socket left there by a killed
/// runtime is replaced, anything else is refused.
fn bind(path: &Path, group: Option<&str>) -> Result<tokio::net::UnixListener, GuardError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(GuardError::SocketPathTooLong {
            path: path.to_owned(),
            len,
        });
    }
    let io = |source| GuardError::Socket {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(io)?,
        Ok(_) => {
            return Err(GuardError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    if let Some(group) = group {
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .ok_or_else(|| GuardError::UnknownGroup(group.to_owned()))?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| io(e.into()))?;
    }
    Ok(listener)
}

impl Shared {
    /// The generation the `Authorization` header authenticates at, or None.
    fn authenticate(&self, header: Option<&hyper::header::HeaderValue>) -> Option<u64> {
        let auth = self.auth.read().ok()?;
        auth::basic_matches(header, &auth.user, &auth.password).then_some(auth.generation)
    }
}

/// Counts one live connection or WebSocket for [`Guard::shutdown`] to wait on.
#[derive(Debug)]
struct Live(#[allow(dead_code)] Arc<()>);

/// Marks a connection's authentication generation (shared by its requests).
type AuthedAt = Arc<AtomicU64>;

fn authed_at(a: &AuthedAt) -> u64 {
    a.load(Ordering::Relaxed)
}
