//! The guard on its own: a client on its unix socket (as Nginx connects), and a recording node
//! double behind it that answers JSON-RPC over HTTP and WebSocket on one port (as anvil and
//! Erigon do) and keeps every message it received — so "nothing refused reaches the node" is
//! asserted on the node's side.
#![allow(clippy::unwrap_used)]

mod cases;
mod node;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use erigolem_guard::{Guard, GuardConfig, GuardLimits, Policy, PolicySettings};
use erigolem_primitives::{Credentials, EngineKind, InstanceName, Mode, Secret};
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub(crate) use node::Node;

pub(crate) const USER: &str = "ep1";
pub(crate) const PASSWORD: &str = "correct-horse-battery-staple";

pub(crate) fn creds(password: &str) -> Credentials {
    Credentials {
        user: USER.into(),
        password: Secret::new(password),
    }
}

pub(crate) fn basic(password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    format!("Basic {token}")
}

/// A guard for instance `ep1` on a socket in `dir`, in front of `node`.
pub(crate) fn config(dir: &Path, node: &Node, mode: Mode) -> GuardConfig {
    GuardConfig {
        instance: InstanceName::new(USER).unwrap(),
        socket: dir.join("ep1.sock"),
        socket_group: None,
        node: node.addr.to_string(),
        credentials: creds(PASSWORD),
        policy: Policy::new(EngineKind::Anvil, mode, &PolicySettings::default(), None),
        limits: GuardLimits::DEDICATED,
        allow_origins: None,
        allow_ips: None,
    }
}

/// An HTTP answer: status and body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// One request over a fresh connection to the socket, as Nginx sends it.
pub(crate) async fn post(socket: &Path, headers: &[(&str, &str)], body: &str) -> Answer {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::post("/ep1/")
        .header("host", "localhost")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A request with the right credentials.
pub(crate) async fn call(socket: &Path, body: &str) -> Answer {
    post(socket, &[("authorization", &basic(PASSWORD))], body).await
}

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>;

/// A WebSocket through the socket, with `password`.
pub(crate) async fn websocket(socket: &Path, password: &str) -> Result<Ws, String> {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let mut req = "ws://localhost/ep1/".into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", basic(password).parse().unwrap());
    tokio_tungstenite::client_async(req, stream)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

pub(crate) async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

/// The next text message within `within`, or why there was none.
pub(crate) async fn next_text(ws: &mut Ws, within: Duration) -> Result<Value, String> {
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Err(_) => return Err("nothing".into()),
            Ok(None) => return Err("closed".into()),
            Ok(Some(Err(e))) => return Err(format!("error: {e}")),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Err(format!(
                    "closed: {}",
                    frame.map(|f| f.reason.to_string()).unwrap_or_default()
                ))
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

pub(crate) fn spawn(config: GuardConfig) -> (Guard, PathBuf) {
    let socket = config.socket.clone();
    (Guard::spawn(config).unwrap(), socket)
}
