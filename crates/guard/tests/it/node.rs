//! A JSON-RPC node double that records everything it receives. Like anvil and Erigon it serves
//! HTTP and WebSocket on one port and writes answers as `{"jsonrpc","id","result"|"error"}`;
//! unlike them it answers every method: `result` is the method's name, `fail_me` gets an error,
//! `slow` waits 300 ms, and `eth_subscribe` starts `eth_subscription` notifications every 10 ms.
//! Batch answers come in reverse order (the JSON-RPC spec allows any order).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

pub(crate) struct Node {
    pub(crate) addr: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer_one(call: &Value) -> Option<Value> {
    let id = call.get("id")?.clone();
    let method = call["method"].as_str().unwrap_or_default();
    Some(match method {
        "fail_me" => {
            json!({"jsonrpc":"2.0","id":id,"error":{"code":-32000,"message":"failed as asked"}})
        }
        "eth_subscribe" => json!({"jsonrpc":"2.0","id":id,"result":"0xsub1"}),
        m => json!({"jsonrpc":"2.0","id":id,"result":m}),
    })
}

/// The answer to a request body (None: nothing to answer).
async fn answer(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let slow = |c: &Value| c["method"] == "slow";
    match v {
        Value::Array(calls) => {
            if calls.iter().any(slow) {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let mut answers: Vec<Value> = calls.iter().filter_map(answer_one).collect();
            answers.reverse();
            (!answers.is_empty()).then(|| Value::Array(answers).to_string())
        }
        call => {
            if slow(&call) {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            answer_one(&call).map(|a| a.to_string())
        }
    }
}

impl Node {
    pub(crate) async fn start() -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let recorded = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let recorded = recorded.clone();
                        async move { Ok::<_, Infallible>(serve(recorded, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Node {
            addr,
            received,
            task,
        }
    }

    /// Every HTTP body and WebSocket message received, in order.
    pub(crate) fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// The methods of every call received.
    pub(crate) fn methods(&self) -> Vec<String> {
        self.received()
            .iter()
            .filter_map(|m| serde_json::from_str::<Value>(m).ok())
            .flat_map(|v| match v {
                Value::Array(calls) => calls,
                call => vec![call],
            })
            .map(|c| c["method"].as_str().unwrap_or("?").to_owned())
            .collect()
    }
}

async fn serve(
    recorded: Arc<Mutex<Vec<String>>>,
    mut req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let upgrade = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if upgrade {
        let key = req.headers().get("sec-websocket-key").unwrap().clone();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.unwrap();
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            websocket(recorded, ws).await;
        });
        return Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", accept)
            .body(Full::default())
            .unwrap();
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    recorded.lock().unwrap().push(body.clone());
    let answer = answer(&body).await.unwrap_or_default();
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer)))
        .unwrap()
}

async fn websocket<S>(recorded: Arc<Mutex<Vec<String>>>, ws: tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let mut ticker: Option<tokio::time::Interval> = None;
    let mut head = 0u64;
    loop {
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    recorded.lock().unwrap().push(t.to_string());
                    if t.contains("\"eth_subscribe\"") {
                        ticker = Some(tokio::time::interval(Duration::from_millis(10)));
                    }
                    if let Some(a) = answer(&t).await {
                        if tx.send(Message::text(a)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            () = tick => {
                head += 1;
                let note = json!({"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xsub1","result":{"number":format!("{head:#x}")}}});
                if tx.send(Message::text(note.to_string())).await.is_err() {
                    return;
                }
            }
        }
    }
}
