//! One private connection to yagna's GSB router, without ya-service-bus's process-global parts.
//!
//! ya-service-bus 0.7.3's typed API (`typed::bind`, `typed::service`) goes through a
//! process-global router whose remote side is a `SystemService` that reads the router address
//! from the `GSB_URL` environment variable when it connects (`GsbAddr::default()`); it cannot be
//! given a URL. Its lower layer can: `connection::unix`/`connection::tcp` open a transport to a
//! given address, and `connection::connect_with_handler` runs the protocol over it with our own
//! [`CallRequestHandler`]. This module uses only that layer, so several exe-units (one per
//! activity, each on its own thread) and several yagna daemons can live in one process, and no
//! environment variable is read or written.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use serde::de::DeserializeOwned;
use serde::Serialize;
use ya_service_bus::connection::{self, CallRequestHandler, ClientInfo, ConnectionRef, Transport};
use ya_service_bus::{serialization, Error as GsbError, ResponseChunk, RpcMessage};

use crate::ExeUnitError;

/// A parsed GSB URL: `unix:<path>` (what yagna uses, e.g. `unix:<datadir>/gsb.sock`) or
/// `tcp://<host>:<port>` (port 7464 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GsbUrl {
    Unix(PathBuf),
    Tcp(String),
}

impl GsbUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix("unix:") {
            // `unix:/p`, and `unix:///p` as the url crate writes it.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(format!("{url:?}: a unix GSB URL needs an absolute path"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            if rest.is_empty() || rest.contains('/') {
                return Err(format!("{url:?}: expected tcp://<host>:<port>"));
            }
            let has_port = rest
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
            return Ok(Self::Tcp(if has_port {
                rest.to_owned()
            } else {
                format!("{rest}:7464")
            }));
        }
        Err(format!(
            "{url:?}: expected a GSB URL `unix:<path>` or `tcp://<host>:<port>`"
        ))
    }

    pub async fn connect(&self) -> io::Result<Transport> {
        match self {
            Self::Unix(path) => Ok(Transport::Unix(connection::unix(path).await?)),
            Self::Tcp(addr) => Ok(Transport::Tcp(connection::tcp(addr.as_str()).await?)),
        }
    }
}

impl std::fmt::Display for GsbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// A call the router delivered to one of our bound addresses.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// Who called: for calls from another node, its node id (`0x…`, as yagna's net module
    /// passes it on); `local` or anything a local client claims for local calls.
    pub caller: String,
    pub address: String,
    pub data: Vec<u8>,
    /// RPC: one `Full` chunk. Streams: `Part` chunks, then the sender is dropped (the
    /// connection then writes the end-of-stream reply itself).
    pub reply: mpsc::Sender<Result<ResponseChunk, GsbError>>,
}

/// Hands every call to the exe-unit through a channel; reports the loss of the connection.
#[derive(Debug)]
pub(crate) struct Handler {
    pub incoming: mpsc::UnboundedSender<Incoming>,
    pub disconnected: Option<oneshot::Sender<()>>,
}

impl CallRequestHandler for Handler {
    type Reply = mpsc::Receiver<Result<ResponseChunk, GsbError>>;

    fn do_call(
        &mut self,
        _request_id: String,
        caller: String,
        address: String,
        data: Vec<u8>,
        _no_reply: bool,
    ) -> Self::Reply {
        let (reply, rx) = mpsc::channel(16);
        let _ = self.incoming.unbounded_send(Incoming {
            caller,
            address,
            data,
            reply,
        });
        rx
    }

    fn on_disconnect(&mut self) {
        if let Some(tx) = self.disconnected.take() {
            let _ = tx.send(());
        }
    }
}

pub(crate) type Connection = ConnectionRef<Transport, Handler>;

pub(crate) fn connect(transport: Transport, handler: Handler) -> Connection {
    connection::connect_with_handler(ClientInfo::new("erigolem-exe-unit"), transport, handler)
}

/// How long a report to yagna may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls `<service>/<M::ID>` as a local caller would (caller `local`, as ya-service-bus's typed
/// `service(..).send(..)` does).
pub(crate) async fn call<M: RpcMessage>(
    conn: &Connection,
    service: &str,
    msg: &M,
) -> Result<Result<M::Item, M::Error>, GsbError> {
    call_as(conn, "local", service, msg).await
}

async fn call_as<M: RpcMessage>(
    conn: &Connection,
    caller: &str,
    service: &str,
    msg: &M,
) -> Result<Result<M::Item, M::Error>, GsbError> {
    let addr = format!("{service}/{}", M::ID);
    let body = serialization::to_vec(msg)?;
    let reply = tokio::time::timeout(CALL_TIMEOUT, conn.call(caller, addr.clone(), body, false))
        .await
        .map_err(|_| GsbError::Timeout(addr.clone()))??;
    if reply.is_empty() {
        return Err(GsbError::GsbFailure(format!("empty reply from {addr}")));
    }
    Ok(serialization::from_slice(&reply)?)
}

/// One call on the GSB at `gsb_url` (`<service>/<M::ID>`, as `caller`), over a private
/// connection on a thread of its own, closed afterwards: for tools, agents and tests. E.g.
/// `call_once(provider_gsb, "local", "/local/activity", SetState::new(..))`, or on a requestor's
/// GSB `call_once(gsb, "local", "/net/<provider id>/exeunit/<activity id>", Exec { .. })`, which
/// yagna's net module delivers with that requestor's node id as the caller.
pub async fn call_once<M: RpcMessage>(
    gsb_url: &str,
    caller: &str,
    service: &str,
    msg: M,
) -> Result<Result<M::Item, M::Error>, ExeUnitError> {
    let url = GsbUrl::parse(gsb_url).map_err(ExeUnitError::Config)?;
    let caller = caller.to_owned();
    let service = service.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("gsb-call".into())
        .spawn(move || {
            let result = actix_rt::System::new().block_on(async move {
                let transport = url
                    .connect()
                    .await
                    .map_err(|source| ExeUnitError::Connect {
                        url: url.to_string(),
                        source,
                    })?;
                let (incoming, _) = mpsc::unbounded();
                let conn = connect(
                    transport,
                    Handler {
                        incoming,
                        disconnected: None,
                    },
                );
                call_as(&conn, &caller, &service, &msg)
                    .await
                    .map_err(|e| ExeUnitError::Gsb(e.to_string()))
            });
            let _ = tx.send(result);
        })
        .map_err(ExeUnitError::Thread)?;
    rx.await.map_err(|_| ExeUnitError::Gone)?
}

pub(crate) fn decode<T: DeserializeOwned>(data: &[u8]) -> Result<T, GsbError> {
    Ok(serialization::from_slice(data)?)
}

/// The reply of an RPC call: its `Result<Item, Error>`, encoded.
pub(crate) fn full<T: Serialize>(value: &T) -> Result<ResponseChunk, GsbError> {
    Ok(ResponseChunk::Full(serialization::to_vec(value)?))
}

/// One item of a streaming reply.
pub(crate) fn part<T: Serialize>(value: &T) -> Result<ResponseChunk, GsbError> {
    Ok(ResponseChunk::Part(serialization::to_vec(value)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            GsbUrl::parse("unix:/tmp/x/gsb.sock"),
            Ok(GsbUrl::Unix("/tmp/x/gsb.sock".into()))
        );
        assert_eq!(
            GsbUrl::parse("unix:///tmp/gsb.sock"),
            Ok(GsbUrl::Unix("/tmp/gsb.sock".into()))
        );
        assert_eq!(
            GsbUrl::parse("tcp://127.0.0.1:1234"),
            Ok(GsbUrl::Tcp("127.0.0.1:1234".into()))
        );
        assert_eq!(
            GsbUrl::parse("tcp://localhost"),
            Ok(GsbUrl::Tcp("localhost:7464".into()))
        );
        assert!(GsbUrl::parse("unix:gsb.sock").is_err());
        assert!(GsbUrl::parse("http://x").is_err());
        assert!(GsbUrl::parse("/tmp/gsb.sock").is_err());
    }
}
