//! The HTTP side: the socket Nginx connects to, one hyper connection per accepted stream, and
//! each request checked (path, credentials, address, origin), screened and forwarded to the node
//! over a keep-alive pool.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::jsonrpc::{self, Code, Request as Rpc};
use crate::meter::Reason;
use crate::screen::{self, Screened};
use crate::{authed_at, revoked, AuthedAt, GuardLimits, Live, Shared, UNAUTHENTICATED};

/// An answer's body: made here, or the node's, streamed through and metered as it passes.
#[derive(Debug)]
pub(crate) enum Body {
    Full(Full<Bytes>),
    Node(Box<Metered>),
}

impl Default for Body {
    fn default() -> Self {
        Body::Full(Full::default())
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Full(Full::new(b))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|never: Infallible| match never {}))),
            Body::Node(metered) => metered.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(full) => full.is_end_stream(),
            Body::Node(metered) => metered.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(full) => full.size_hint(),
            Body::Node(metered) => metered.inner.size_hint(),
        }
    }
}

/// How much of an answer is kept to tell a result from an error (geth, Erigon and anvil write
/// `id` and then `result`/`error` first).
const HEAD_BYTES: usize = 512;

/// The node's answer to one call, streamed to the client: counted, its kind read from its first
/// bytes, metered when it ends (or the client goes away). Holds the call's concurrency slot.
#[derive(Debug)]
pub(crate) struct Metered {
    inner: Incoming,
    shared: Arc<Shared>,
    method: String,
    started: Instant,
    ok_status: bool,
    head: Vec<u8>,
    bytes_in: u64,
    bytes_out: u64,
    done: bool,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Metered {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_out += data.len() as u64;
                    if self.head.len() < HEAD_BYTES {
                        let take = (HEAD_BYTES - self.head.len()).min(data.len());
                        self.head.extend_from_slice(&data[..take]);
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let error = !self.ok_status || jsonrpc::head(&self.head).kind == jsonrpc::Kind::Error;
        let meter = &self.shared.meter;
        meter.answered(
            [self.method.as_str()],
            u64::from(error),
            Some(self.started.elapsed()),
        );
        meter.bytes(self.bytes_in, self.bytes_out);
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The most a connection to the node buffers of an answer. Each idle connection keeps its
/// buffer: 64 connections at hyper's default (~400 KiB) held the runtime at 19 MiB after load,
/// at 64 KiB at 15.6 MiB, at 16 KiB at 11.9 MiB (docs/benchmarks.md). Answers stream through,
/// so a smaller buffer only means more reads of a large one. (Keeping fewer than 64 idle
/// connections saved nothing more and made 64-connection load reconnect: 37 % of direct.)
const NODE_READ_BUF_MAX: usize = 16 * 1024;

/// The node's JSON-RPC over HTTP, with idle connections kept for reuse.
#[derive(Debug, Clone)]
pub(crate) struct NodeClient {
    uri: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl NodeClient {
    pub(crate) fn new(uri: Uri, limits: &GuardLimits) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host((limits.max_concurrent as usize).min(64))
            .http1_max_buf_size(NODE_READ_BUF_MAX)
            .build(connector);
        Self { uri, client }
    }

    /// Posts `body`; the answer as it starts (status, headers, body to read).
    async fn send(&self, body: Bytes, limits: &GuardLimits) -> Result<Response<Incoming>, String> {
        let request = Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(limits.call_timeout(), self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(format!("the node does not answer: {e}")),
            Err(_) => Err(format!(
                "the node did not answer within {} s",
                limits.call_timeout_secs
            )),
        }
    }

    /// Posts `body`; the answer's status and whole body, or why there is none.
    async fn call(&self, body: Bytes, limits: &GuardLimits) -> Result<(StatusCode, Bytes), String> {
        let deadline = tokio::time::Instant::now() + limits.call_timeout();
        let response = self.send(body, limits).await?;
        let status = response.status();
        let collect = response.into_body().collect();
        match tokio::time::timeout_at(deadline, collect).await {
            Ok(Ok(collected)) => Ok((status, collected.to_bytes())),
            Ok(Err(e)) => Err(format!("the node's answer broke off: {e}")),
            Err(_) => Err(format!(
                "the node did not answer within {} s",
                limits.call_timeout_secs
            )),
        }
    }
}

/// Accepts connections until the guard is shut down (the accept task is aborted).
pub(crate) async fn serve(shared: Arc<Shared>, listener: tokio::net::UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(shared.clone(), stream));
            }
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                tracing::warn!("guard: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves one connection from Nginx until it ends, or until the credentials it authenticated
/// with are replaced or the guard shuts down: then it is dropped mid-request.
async fn connection(shared: Arc<Shared>, stream: tokio::net::UnixStream) {
    let _live = Live(shared.live.clone());
    let authed: AuthedAt = Arc::new(AtomicU64::new(UNAUTHENTICATED));
    let mut generation = shared.generation.subscribe();
    if revoked(*generation.borrow(), UNAUTHENTICATED) {
        return;
    }
    let service = {
        let shared = shared.clone();
        let authed = authed.clone();
        hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            let authed = authed.clone();
            async move { Ok::<_, Infallible>(handle(&shared, &authed, req).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    loop {
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    tracing::debug!("guard: connection ended: {e}");
                }
                return;
            }
            changed = generation.changed() => {
                if changed.is_err() || revoked(*generation.borrow(), authed_at(&authed)) {
                    return;
                }
            }
        }
    }
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::from(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn refused(
    shared: &Shared,
    reason: Reason,
    status: StatusCode,
    code: Code,
    message: &str,
) -> Response<Body> {
    shared.meter.refused(reason, 1);
    let mut response = json(status, jsonrpc::error(None, code, message));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"erigolem\""),
        );
    }
    response
}

/// Checks that hold for HTTP and WebSocket alike: the path, the credentials, the client's
/// address and origin. On success the connection is marked with the credentials' generation.
#[allow(clippy::result_large_err)] // the refusal is the answer, sent at once
fn admit(
    shared: &Shared,
    authed: &AuthedAt,
    req: &Request<Incoming>,
) -> Result<(), Response<Body>> {
    if !req.uri().path().starts_with(&shared.prefix) {
        return Err(json(
            StatusCode::NOT_FOUND,
            jsonrpc::error(None, Code::InvalidRequest, "no such endpoint"),
        ));
    }
    let headers = req.headers();
    let Some(generation) = shared.authenticate(headers.get(header::AUTHORIZATION)) else {
        return Err(refused(
            shared,
            Reason::Auth,
            StatusCode::UNAUTHORIZED,
            Code::Unauthorized,
            "unauthorized: wrong or revoked credentials",
        ));
    };
    authed.store(generation, Ordering::Relaxed);
    if let Some(allow) = &shared.allow_ips {
        let ip = headers
            .get(crate::CLIENT_IP_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok());
        if !ip.is_some_and(|ip| allow.iter().any(|block| block.contains(ip))) {
            let who = ip
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "unknown".into());
            return Err(refused(
                shared,
                Reason::Ip,
                StatusCode::FORBIDDEN,
                Code::Unauthorized,
                &format!("forbidden: address {who} is not in this endpoint's allow_ips"),
            ));
        }
    }
    if let Some(allow) = &shared.allow_origins {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if !origin.is_some_and(|o| allow.iter().any(|p| p.matches(o))) {
            return Err(refused(
                shared,
                Reason::Origin,
                StatusCode::FORBIDDEN,
                Code::Unauthorized,
                &format!(
                    "forbidden: origin {} is not in this endpoint's allow_origins",
                    origin.unwrap_or("(none)")
                ),
            ));
        }
    }
    Ok(())
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn handle(shared: &Arc<Shared>, authed: &AuthedAt, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    shared.meter.http_request();
    if let Err(response) = admit(shared, authed, &req) {
        return response;
    }
    if is_websocket(&req) {
        return crate::ws::upgrade(shared.clone(), authed_at(authed), req).await;
    }
    if req.method() != Method::POST {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            jsonrpc::error(None, Code::InvalidRequest, "JSON-RPC over HTTP takes POST"),
        );
    }
    let limits = &shared.limits;
    let max = limits.max_body_bytes as usize;
    let too_large = || {
        refused(
            shared,
            Reason::Size,
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::LimitExceeded,
            &format!("limit exceeded: the body is over this endpoint's {max} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                jsonrpc::error(
                    None,
                    Code::InvalidRequest,
                    &format!("the body broke off: {e}"),
                ),
            )
        }
    };
    let request = match jsonrpc::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            shared.meter.refused(Reason::Invalid, 1);
            shared.meter.bytes(body.len() as u64, 0);
            return json(
                StatusCode::BAD_REQUEST,
                jsonrpc::error(None, Code::Parse, &e.to_string()),
            );
        }
    };
    let answer = match screen::screen(shared, &request) {
        Screened::Refuse(refusal) => {
            let answer = refusal.answer.unwrap_or_default();
            shared.meter.bytes(body.len() as u64, answer.len() as u64);
            return json(refusal.status, answer);
        }
        Screened::Forward(forward) => {
            let Some(_slot) = shared.limiter.slot() else {
                let n = request.calls().len() as u64;
                shared.meter.refused(Reason::Concurrency, n);
                let message = format!(
                    "limit exceeded: over this endpoint's {} concurrent requests",
                    limits.max_concurrent
                );
                let answer =
                    screen::answer_all(&request, Code::LimitExceeded, &message).unwrap_or_default();
                return json(StatusCode::TOO_MANY_REQUESTS, answer);
            };
            if let (Rpc::Single(_), None, [(method, _)]) =
                (&request, &forward.body, forward.calls.as_slice())
            {
                let method = (*method).to_owned();
                return stream_single(shared, body, method, started, _slot).await;
            }
            let out = match forward.body {
                Some(rebuilt) => Bytes::from(rebuilt),
                None => body.clone(),
            };
            match shared.client.call(out, limits).await {
                Ok((status, node_answer)) => {
                    let heads = jsonrpc::heads(&node_answer);
                    let errors = if status.is_success() {
                        heads
                            .iter()
                            .filter(|h| h.kind == jsonrpc::Kind::Error)
                            .count()
                    } else {
                        forward.calls.len()
                    };
                    let merged = if forward.append.is_empty() {
                        node_answer
                    } else {
                        Bytes::from(screen::merge(&node_answer, &forward.append))
                    };
                    shared.meter.answered(
                        forward.calls.iter().map(|(m, _)| *m),
                        errors as u64,
                        Some(started.elapsed()),
                    );
                    let status = if forward.append.is_empty() {
                        status
                    } else {
                        StatusCode::OK
                    };
                    (status, merged)
                }
                Err(why) => {
                    tracing::warn!("guard: {why}");
                    shared.meter.failed(forward.calls.len() as u64);
                    let answer =
                        screen::answer_all(&request, Code::Internal, &why).unwrap_or_default();
                    (StatusCode::BAD_GATEWAY, Bytes::from(answer))
                }
            }
        }
    };
    shared.meter.bytes(body.len() as u64, answer.1.len() as u64);
    json(answer.0, answer.1)
}

/// One call forwarded as it came: the node's answer streams through, metered on its way.
async fn stream_single(
    shared: &Arc<Shared>,
    body: Bytes,
    method: String,
    started: Instant,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Response<Body> {
    let bytes_in = body.len() as u64;
    match shared.client.send(body.clone(), &shared.limits).await {
        Ok(answer) => {
            let status = answer.status();
            let length = answer.headers().get(header::CONTENT_LENGTH).cloned();
            let metered = Metered {
                inner: answer.into_body(),
                shared: shared.clone(),
                method,
                started,
                ok_status: status.is_success(),
                head: Vec::new(),
                bytes_in,
                bytes_out: 0,
                done: false,
                _slot: slot,
            };
            let mut response = Response::new(Body::Node(Box::new(metered)));
            *response.status_mut() = status;
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Some(length) = length {
                h.insert(header::CONTENT_LENGTH, length);
            }
            response
        }
        Err(why) => {
            tracing::warn!("guard: {why}");
            shared.meter.failed(1);
            let request = jsonrpc::parse(&body);
            let id = request
                .as_ref()
                .ok()
                .and_then(|r| r.calls().first().and_then(|c| c.id));
            let answer = jsonrpc::error(id, Code::Internal, &why);
            shared.meter.bytes(bytes_in, answer.len() as u64);
            json(StatusCode::BAD_GATEWAY, answer)
        }
    }
}
