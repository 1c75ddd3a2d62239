//! The WebSocket side: the upgrade from Nginx is answered once the node's own WebSocket is open;
//! then every client message is screened like an HTTP request (the rate limit counts its calls,
//! each call waiting for its answer holds a concurrency slot), answers and subscription
//! notifications pass back, and a credentials change or shutdown closes the socket at once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::jsonrpc::{self, Code, Kind};
use crate::meter::Reason;
use crate::proxy::{json, Body};
use crate::screen::{self, Screened};
use crate::{revoked, Live, Shared};

/// How long a closing frame may take to leave before the socket is dropped anyway.
const CLOSE_WAIT: Duration = Duration::from_millis(200);

/// Small buffers (a socket mostly carries small messages); messages from a client are limited to
/// `max_message`, the node's (`None`) are not.
fn config(max_message: Option<usize>) -> WebSocketConfig {
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024);
    match max_message {
        Some(max) => config
            .max_write_buffer_size((16 * 1024usize).saturating_add(max.saturating_mul(2)))
            .max_message_size(Some(max))
            .max_frame_size(Some(max)),
        None => config.max_message_size(None).max_frame_size(None),
    }
}

/// A WebSocket counted against `max_websockets` (and in `open_websockets`) while it lives.
struct Slot(Arc<Shared>);

impl Slot {
    fn take(shared: &Arc<Shared>) -> Option<Slot> {
        let max = shared.limits.max_websockets;
        let taken = shared
            .open_websockets
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        taken.ok().map(|_| {
            shared.meter.websocket(true);
            Slot(shared.clone())
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open_websockets.fetch_sub(1, Ordering::AcqRel);
        self.0.meter.websocket(false);
    }
}

pub(crate) async fn upgrade(
    shared: Arc<Shared>,
    authed: u64,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return json(
            StatusCode::BAD_REQUEST,
            jsonrpc::error(
                None,
                Code::InvalidRequest,
                "a WebSocket upgrade needs Sec-WebSocket-Key",
            ),
        );
    };
    let Some(slot) = Slot::take(&shared) else {
        shared.meter.refused(Reason::Websockets, 1);
        let message = format!(
            "limit exceeded: this endpoint has {} WebSockets open, its limit",
            shared.limits.max_websockets
        );
        return json(
            StatusCode::TOO_MANY_REQUESTS,
            jsonrpc::error(None, Code::LimitExceeded, &message),
        );
    };
    let max = shared.limits.max_body_bytes as usize;
    let node = tokio_tungstenite::connect_async_with_config(
        shared.node_ws.as_str(),
        Some(config(None)),
        true,
    );
    let node = match tokio::time::timeout(Duration::from_secs(10), node).await {
        Ok(Ok((node, _))) => node,
        Ok(Err(e)) => return node_down(&format!("the node's WebSocket does not answer: {e}")),
        Err(_) => return node_down("the node's WebSocket did not answer within 10 s"),
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let live = Live(shared.live.clone());
    tokio::spawn(async move {
        let _live = live;
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                let client = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config(Some(max))),
                )
                .await;
                pump(&shared, authed, client, node).await;
            }
            Err(e) => tracing::debug!("guard: WebSocket upgrade failed: {e}"),
        }
    });
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

fn node_down(why: &str) -> Response<Body> {
    tracing::warn!("guard: {why}");
    json(
        StatusCode::BAD_GATEWAY,
        jsonrpc::error(None, Code::Internal, why),
    )
}

/// A call forwarded on this socket and not answered yet.
struct Pending {
    method: String,
    since: Instant,
    _slot: OwnedSemaphorePermit,
}

/// What one client message leads to.
#[derive(Debug, Default)]
struct Step {
    /// `Some(None)`: forward the message as it came; `Some(Some(m))`: forward `m`.
    forward: Option<Option<String>>,
    /// Answer the client with this at once.
    answer: Option<String>,
}

/// This socket's calls waiting for answers, and the errors of partly refused batches waiting for
/// the node's answer to the rest.
#[derive(Default)]
struct Calls {
    pending: HashMap<Vec<u8>, Pending>,
    /// A forwarded id of a partly refused batch → the errors to add to that batch's answer.
    merges: HashMap<Vec<u8>, Vec<String>>,
}

fn client_message(shared: &Shared, data: &[u8], calls: &mut Calls) -> Step {
    let request = match jsonrpc::parse(data) {
        Ok(r) => r,
        Err(e) => {
            shared.meter.refused(Reason::Invalid, 1);
            return Step {
                forward: None,
                answer: Some(jsonrpc::error(None, Code::Parse, &e.to_string())),
            };
        }
    };
    let forward = match screen::screen(shared, &request) {
        Screened::Refuse(refusal) => {
            return Step {
                forward: None,
                answer: refusal.answer,
            }
        }
        Screened::Forward(forward) => forward,
    };
    // One concurrency slot per call that waits for an answer; all or none.
    let waiting: Vec<(&str, &[u8])> = forward
        .calls
        .iter()
        .filter_map(|(m, id)| id.map(|id| (*m, id.get().as_bytes())))
        .collect();
    let mut slots = Vec::with_capacity(waiting.len());
    for _ in &waiting {
        match shared.limiter.slot() {
            Some(s) => slots.push(s),
            None => {
                shared
                    .meter
                    .refused(Reason::Concurrency, request.calls().len() as u64);
                let message = format!(
                    "limit exceeded: over this endpoint's {} concurrent requests",
                    shared.limits.max_concurrent
                );
                return Step {
                    forward: None,
                    answer: screen::answer_all(&request, Code::LimitExceeded, &message),
                };
            }
        }
    }
    // Notifications get no answer to wait for: they count now.
    let notifications = forward.calls.iter().filter(|(_, id)| id.is_none());
    shared
        .meter
        .answered(notifications.map(|(m, _)| *m), 0, None);
    let now = Instant::now();
    for ((method, id), slot) in waiting.iter().zip(slots) {
        calls.pending.insert(
            id.to_vec(),
            Pending {
                method: (*method).to_owned(),
                since: now,
                _slot: slot,
            },
        );
    }
    let mut answer = None;
    if !forward.append.is_empty() {
        match waiting.first() {
            Some((_, first)) => {
                calls.merges.insert(first.to_vec(), forward.append);
            }
            // The node answers none of the rest: the refusals go out at once.
            None => answer = Some(format!("[{}]", forward.append.join(","))),
        }
    }
    Step {
        forward: Some(forward.body),
        answer,
    }
}

/// Meters one message from the node (answers, notifications) and adds the errors of a partly
/// refused batch to its answer. Returns the message to send on, if it changed.
fn node_message(shared: &Shared, data: &[u8], calls: &mut Calls) -> Option<String> {
    let heads = jsonrpc::heads(data);
    let mut merged = None;
    for head in &heads {
        let Some(id) = head.id else { continue };
        if let Some(p) = calls.pending.remove(id) {
            let error = u64::from(head.kind == Kind::Error);
            shared
                .meter
                .answered([p.method.as_str()], error, Some(p.since.elapsed()));
        }
        if let Some(append) = calls.merges.remove(id) {
            merged = Some(append);
        }
    }
    merged.map(|append| String::from_utf8_lossy(&screen::merge(data, &append)).into_owned())
}

fn closing(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    }))
}

/// Relays one WebSocket until either side closes, the credentials it was opened with are
/// replaced, or the guard shuts down.
async fn pump<C, N>(
    shared: &Shared,
    authed: u64,
    client: WebSocketStream<C>,
    node: WebSocketStream<N>,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    N: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut to_client, mut from_client) = client.split();
    let (mut to_node, mut from_node) = node.split();
    let mut generation = shared.generation.subscribe();
    let mut calls = Calls::default();
    let end = loop {
        let current = *generation.borrow();
        if current == crate::SHUT_DOWN {
            break Some(closing(CloseCode::Away, "the endpoint was stopped"));
        }
        if revoked(current, authed) {
            break Some(closing(CloseCode::Policy, "credentials revoked"));
        }
        tokio::select! {
            biased;
            changed = generation.changed() => {
                if changed.is_err() {
                    break Some(closing(CloseCode::Away, "the endpoint is shutting down"));
                }
            }
            msg = from_client.next() => match msg {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    let text = matches!(msg, Message::Text(_));
                    let data = msg.into_data();
                    shared.meter.ws_message(true, data.len() as u64);
                    let step = client_message(shared, &data, &mut calls);
                    if let Some(forward) = step.forward {
                        let out = match (forward, text) {
                            (Some(rebuilt), _) => Message::text(rebuilt),
                            (None, true) => match Utf8Bytes::try_from(data) {
                                Ok(t) => Message::Text(t),
                                Err(_) => break None,
                            },
                            (None, false) => Message::Binary(data),
                        };
                        if to_node.send(out).await.is_err() {
                            break Some(closing(CloseCode::Away, "the node closed the connection"));
                        }
                    }
                    if let Some(answer) = step.answer {
                        shared.meter.ws_message(false, answer.len() as u64);
                        if to_client.send(Message::text(answer)).await.is_err() {
                            break None;
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = tokio::time::timeout(CLOSE_WAIT, to_node.send(Message::Close(frame))).await;
                    break None;
                }
                // Pings are answered by tungstenite itself.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = tokio::time::timeout(CLOSE_WAIT, to_node.close()).await;
                    break None;
                }
            },
            msg = from_node.next() => match msg {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    let merged = node_message(shared, msg.clone().into_data().as_ref(), &mut calls);
                    let out = merged.map(Message::text).unwrap_or(msg);
                    shared.meter.ws_message(false, out.len() as u64);
                    if to_client.send(out).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(Message::Close(frame))) => break Some(Message::Close(frame)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break Some(closing(CloseCode::Away, "the node closed the connection")),
            },
        }
    };
    if let Some(close) = end {
        let _ = tokio::time::timeout(CLOSE_WAIT, to_client.send(close)).await;
    }
    // Calls the node never answered on this socket.
    shared.meter.failed(calls.pending.len() as u64);
}
