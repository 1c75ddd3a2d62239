//! The connection loop behind `erigolem serve` (instead of `axum::serve`, which gives no access
//! to hyper's builder): HTTP/1.1 with a timer, so that a client must send its headers within the
//! header-read timeout (hyper measures from the moment it waits for a request head, so trickled
//! headers do not reset it); a connection that neither reads nor writes for the idle timeout is
//! closed; open connections are capped, in total and per client address (trusted proxies
//! exempt), a connection over a cap being closed as soon as it is accepted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::security::{client_key, TrustedProxies};
use crate::Limits;

/// How long a graceful shutdown waits for open requests before dropping their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` turns true, then lets open requests finish (at
/// most [`SHUTDOWN_GRACE`]).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    trusted: TrustedProxies,
    mut shutdown: watch::Receiver<bool>,
) {
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let mut tasks = tokio::task::JoinSet::new();
    let stopping = shutdown.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                };
                let Ok(permit) = total.clone().try_acquire_owned() else {
                    refused("max_connections");
                    continue;
                };
                let slot = if trusted.contains(peer.ip()) {
                    None
                } else {
                    match per_ip.take(peer.ip(), limits.max_connections_per_ip) {
                        Some(slot) => Some(slot),
                        None => {
                            refused("max_connections_per_ip");
                            continue;
                        }
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = Connection {
                    _permit: permit,
                    _slot: slot,
                    total: total.clone(),
                    max: limits.max_connections,
                };
                tasks.spawn(connection(stream, peer, app.clone(), limits.clone(), stopping.clone(), conn));
            }
        }
    }
    drop(listener);
    let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut deadline => {
                tracing::warn!(open = tasks.len(), "shutdown: dropping the connections still open");
                tasks.abort_all();
                break;
            }
        }
    }
}

/// Resolves once `shutdown` says stop (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn refused(reason: &'static str) {
    // The stream was dropped by the caller: closed at once, costing nothing more.
    metrics::counter!("erigolem_connections_refused_total", "reason" => reason).increment(1);
}

/// Accept errors other than a peer giving up mean the process is short of something (file
/// descriptors): back off a little instead of spinning.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::warn!("accept: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// A connection's share of the caps; released on drop.
struct Connection {
    _permit: OwnedSemaphorePermit,
    _slot: Option<IpSlot>,
    total: Arc<Semaphore>,
    max: usize,
}

impl Connection {
    fn open(&self) -> usize {
        self.max - self.total.available_permits()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Counted before the permit goes back: this one is still open.
        metrics::gauge!("erigolem_connections").set(self.open().saturating_sub(1) as f64);
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    conn: Connection,
) {
    metrics::gauge!("erigolem_connections").set(conn.open() as f64);
    let activity = Activity::new();
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let response = app.oneshot(request.map(axum::body::Body::new)).await;
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    let check = (limits.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(check);
    let mut draining = false;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "connection: {e}");
                }
                break;
            }
            _ = stopped(&mut shutdown), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                if activity.idle() >= limits.idle_timeout {
                    tracing::debug!(%peer, "closing an idle connection");
                    metrics::counter!("erigolem_connections_closed_total", "reason" => "idle").increment(1);
                    break;
                }
            }
        }
    }
    drop(conn);
}

/// Open connections per client address (IPv6: per /64).
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

struct IpSlot {
    map: Arc<PerIp>,
    key: IpAddr,
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let key = client_key(ip);
        let mut map = self.0.lock().ok()?;
        let n = map.entry(key).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            map: self.clone(),
            key,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.map.0.lock() {
            if let Some(n) = map.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.key);
                }
            }
        }
    }
}

/// When a connection last moved a byte.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A socket that records its activity.
struct Tracked {
    inner: TcpStream,
    activity: Activity,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises this process's open-file limit to its hard limit (a soft limit of 1024, systemd's
/// default, is a thousand idle connections away), and returns how many connections fit beside
/// the files the server itself needs (database, Nginx, runtimes' pipes).
pub(crate) fn connection_budget(wanted: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    const RESERVED: u64 = 512;
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (limit.current, limit.maximum) {
        if cur < max {
            limit.current = Some(max);
            if setrlimit(Resource::Nofile, limit).is_err() {
                limit.current = Some(cur);
            }
        }
    }
    let fit = match limit.current {
        Some(files) => files.saturating_sub(RESERVED).max(64) as usize,
        None => wanted,
    };
    if fit < wanted {
        tracing::warn!(
            wanted,
            allowed = fit,
            "the open-file limit leaves room for fewer connections than --max-connections"
        );
    }
    wanted.min(fit)
}
