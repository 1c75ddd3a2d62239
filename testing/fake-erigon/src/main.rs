//! `fake-erigon`: a small test double for the Erigon 3 binary, speaking just enough of its CLI,
//! log format and JSON-RPC (HTTP + WebSocket) for the Erigolem supervisor and gateway tests.
//!
//! Behaviour is steered with environment variables:
//! `FAKE_ERIGON_START_DELAY_MS`, `FAKE_ERIGON_CRASH_AFTER_SECS`, `FAKE_ERIGON_CRASH_TIMES`,
//! `FAKE_ERIGON_SYNC_TARGET`, `FAKE_ERIGON_SYNC_RATE` and `FAKE_ERIGON_PEERS`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::exit;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

const VERSION: &str = "3.0.0-fake";
/// Flags that take a value (`--name value` or `--name=value`), space-separated.
const VALUE_FLAGS: &str = "datadir chain port http.addr http.port http.api http.vhosts \
    http.corsdomain ws.port authrpc.addr authrpc.port authrpc.jwtsecret torrent.port \
    torrent.download.rate private.api.addr prune.mode nat maxpeers log.dir.path verbosity \
    db.size.limit metrics.addr metrics.port p2p.protocol p2p.allowed-ports bootnodes staticpeers \
    caplin.discovery.port caplin.discovery.tcpport sentinel.port beacon.api.port";
/// Boolean flags (`--name`, or `--name=true|false`), space-separated.
const BOOL_FLAGS: &str =
    "http ws externalcl metrics nodiscover no-downloader internalcl http.compression ws.compression";

fn is_one_of(list: &str, name: &str) -> bool {
    list.split_whitespace().any(|f| f == name)
}

/// Outcome of command-line parsing.
enum Cli {
    Run(HashMap<String, String>),
    Help,
    Version,
}

/// Parses flags the way Go's `flag` package (under urfave/cli) does: `-name`, `--name`,
/// `--name=value`, `--name value`; boolean flags take no separate value.
fn parse_args(args: &[String]) -> Result<Cli, String> {
    let mut flags = HashMap::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            return match it.next() {
                Some(next) => Err(format!("unexpected positional argument: {next}")),
                None => Ok(Cli::Run(flags)),
            };
        }
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(format!("unexpected positional argument: {arg}"));
        };
        if body.is_empty() {
            return Err(format!("unexpected positional argument: {arg}"));
        }
        if body.starts_with('-') || body.starts_with('=') {
            return Err(format!("bad flag syntax: {arg}"));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        match name {
            "h" | "help" => return Ok(Cli::Help),
            "v" | "version" => return Ok(Cli::Version),
            _ => {}
        }
        let value = if is_one_of(BOOL_FLAGS, name) {
            match inline {
                None => true,
                Some(v) => parse_go_bool(v).ok_or_else(|| {
                    format!("invalid boolean value {v:?} for -{name}: parse error")
                })?,
            }
            .to_string()
        } else if is_one_of(VALUE_FLAGS, name) {
            match inline {
                Some(v) => v.to_string(),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("flag needs an argument: -{name}"))?,
            }
        } else {
            return Err(format!("flag provided but not defined: -{name}"));
        };
        flags.insert(name.to_string(), value);
    }
    Ok(Cli::Run(flags))
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn chain_id(chain: &str) -> Option<u64> {
    Some(match chain {
        "mainnet" => 1,
        "sepolia" => 11_155_111,
        "holesky" => 17_000,
        "hoodi" => 560_048,
        "dev" => 1337,
        _ => return None,
    })
}

/// Reads an optional env var (unset or empty means `None`); an unparsable value is fatal.
fn env_opt<T: FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    if v.trim().is_empty() {
        return None;
    }
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| fail(&format!("fake-erigon: invalid {name}={v:?}"))),
    )
}

/// Simulated node state shared by the RPC handlers.
#[derive(Clone, Copy, Debug)]
struct Node {
    started: Instant,
    target: u64,
    rate: f64,
    peers: u64,
    chain_id: u64,
}

impl Node {
    fn current_block(&self) -> u64 {
        let done = self.started.elapsed().as_secs_f64() * self.rate;
        // `as` saturates for floats, so huge/negative products are harmless.
        (done as u64).min(self.target)
    }

    fn call(&self, method: &str) -> Option<Value> {
        let hex = |n: u64| Value::String(format!("{n:#x}"));
        Some(match method {
            "eth_blockNumber" => hex(self.current_block()),
            "eth_syncing" => {
                let current = self.current_block();
                if current >= self.target {
                    Value::Bool(false)
                } else {
                    json!({
                        "startingBlock": "0x0",
                        "currentBlock": hex(current),
                        "highestBlock": hex(self.target),
                        "stages": [
                            {"stage_name": "Headers", "block_number": hex(self.target)},
                            {"stage_name": "Execution", "block_number": hex(current)},
                        ],
                    })
                }
            }
            "net_peerCount" => hex(self.peers),
            "web3_clientVersion" => json!(format!("erigon/{VERSION}/linux-amd64/go1.23")),
            "eth_chainId" => hex(self.chain_id),
            "net_version" => json!(self.chain_id.to_string()),
            _ => return None,
        })
    }

    /// Answers one JSON-RPC request object.
    fn answer(&self, req: &Value) -> Value {
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let error = |code: i64, message: String| json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
        let Some(method) = req.get("method").and_then(Value::as_str) else {
            return error(-32600, "invalid request".into());
        };
        match self.call(method) {
            Some(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            None => error(
                -32601,
                format!("the method {method} does not exist/is not available"),
            ),
        }
    }

    /// Answers a raw JSON-RPC payload: a single request or a batch.
    fn handle(&self, body: &[u8]) -> Value {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(reqs)) if reqs.is_empty() => {
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "empty batch"}})
            }
            Ok(Value::Array(reqs)) => Value::Array(reqs.iter().map(|r| self.answer(r)).collect()),
            Ok(req) => self.answer(&req),
            Err(e) => {
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("parse error: {e}")}})
            }
        }
    }
}

async fn rpc_http(State(node): State<Node>, body: Bytes) -> Json<Value> {
    Json(node.handle(&body))
}

async fn rpc_ws(State(node): State<Node>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| serve_ws(node, socket))
}

async fn serve_ws(node: Node, mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(text) => node.handle(text.as_bytes()),
            Message::Binary(bytes) => node.handle(&bytes),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket
            .send(Message::Text(reply.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
}

async fn health() -> impl IntoResponse {
    Json(
        json!({"healthcheck_query": "HEALTHY", "min_peer_count": "HEALTHY", "check_block": "DISABLED"}),
    )
}

/// Prints an Erigon-style log line: `[INFO] [11-23|19:50:00.123] msg key=value`.
fn log(level: &str, msg: &str, kv: &[(&str, String)]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (_, month, day) = civil_from_days((secs / 86_400) as i64);
    let tod = secs % 86_400;
    let mut line = format!(
        "[{level}] [{month:02}-{day:02}|{:02}:{:02}:{:02}.{:03}] {msg:<40}",
        tod / 3600,
        tod / 60 % 60,
        tod % 60,
        now.subsec_millis()
    );
    for (k, v) in kv {
        line.push_str(&format!(" {k}={v}"));
    }
    eprintln!("{}", line.trim_end());
}

/// Days since 1970-01-01 to a (year, month, day) civil date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Decides whether a requested crash happens, honouring `FAKE_ERIGON_CRASH_TIMES` via a counter
/// file in the datadir (without a datadir every run crashes).
fn should_crash(limit: Option<u64>, datadir: Option<&Path>) -> bool {
    let (Some(limit), Some(dir)) = (limit, datadir) else {
        return true;
    };
    let path = dir.join("fake-erigon.crashes");
    let count: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if count >= limit {
        return false;
    }
    // If the counter can't be written, crashing anyway is the conservative choice.
    let _ = std::fs::write(&path, (count + 1).to_string());
    true
}

fn fail(msg: &str) -> ! {
    eprintln!("{msg}");
    exit(1)
}

fn main() {
    let started = Instant::now();
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let flags = match parse_args(argv.get(1..).unwrap_or_default()) {
        Ok(Cli::Run(flags)) => flags,
        Ok(Cli::Help) => {
            println!("NAME:\n   erigon - erigon (fake test double)\n\nUSAGE:\n   erigon [--flag value ...]");
            return;
        }
        Ok(Cli::Version) => {
            println!("erigon version {VERSION}");
            return;
        }
        Err(e) => fail(&format!("Incorrect Usage: {e}")),
    };
    let flag = |name: &str, default: &str| flags.get(name).cloned().unwrap_or(default.into());

    let chain = flag("chain", "mainnet");
    let Some(chain_id) = chain_id(&chain) else {
        fail(&format!("Fatal: chain name is not recognized: {chain}"));
    };
    let http_addr = flag("http.addr", "127.0.0.1");
    let port = flag("http.port", "8545");
    let http_port: u16 = port.parse().unwrap_or_else(|_| {
        fail(&format!(
            "Incorrect Usage: invalid value {port:?} for flag -http.port: parse error"
        ))
    });
    let http_enabled = flag("http", "true") == "true";
    let ws_enabled = flag("ws", "false") == "true";
    let datadir = flags.get("datadir").map(PathBuf::from);

    let delay_ms: u64 = env_opt("FAKE_ERIGON_START_DELAY_MS").unwrap_or(0);
    let crash_after: Option<f64> = env_opt("FAKE_ERIGON_CRASH_AFTER_SECS");
    let crash_times: Option<u64> = env_opt("FAKE_ERIGON_CRASH_TIMES");
    let target: u64 = env_opt("FAKE_ERIGON_SYNC_TARGET").unwrap_or(1000);
    let rate: f64 = env_opt("FAKE_ERIGON_SYNC_RATE").unwrap_or(200.0);
    let peers: u64 = env_opt("FAKE_ERIGON_PEERS").unwrap_or(5);

    if let Some(dir) = &datadir {
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(dir.join("fake-erigon.argv"), json!(argv).to_string()));
        if let Err(e) = written {
            fail(&format!("Fatal: cannot use datadir {}: {e}", dir.display()));
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("Fatal: cannot start runtime: {e}")));
    let node = Node {
        started,
        target,
        rate,
        peers,
        chain_id,
    };
    runtime.block_on(async move {
        log(
            "INFO",
            "Build info",
            &[("git_branch", "fake".into()), ("tag", VERSION.into())],
        );
        log(
            "INFO",
            &format!("Starting Erigon on {chain}..."),
            &[("chain_id", chain_id.to_string())],
        );

        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let signalled = shutdown_signal();
        tokio::spawn(async move {
            signalled.await;
            log("INFO", "Got interrupt, shutting down...", &[]);
            let _ = stop_tx.send(());
            // Open connections must not keep us alive: force the exit shortly after.
            tokio::time::sleep(Duration::from_millis(80)).await;
            exit(0);
        });

        // Negative (or NaN) means "at once"; absurdly large values never fire.
        if let Some(Ok(after)) = crash_after.map(|s| Duration::try_from_secs_f64(s.max(0.0))) {
            let datadir = datadir.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after.saturating_sub(started.elapsed())).await;
                if should_crash(crash_times, datadir.as_deref()) {
                    eprintln!(
                        "panic: fake-erigon crash requested\n\ngoroutine 1 [running]:\nmain.main()"
                    );
                    exit(2);
                }
                log("INFO", "Crash skipped, crash budget used up", &[]);
            });
        }

        tokio::spawn(report_progress(node));

        // "Starts slowly", but a signal during the delay still ends it at once.
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
            _ = &mut stop_rx => return,
        }
        if !http_enabled {
            log("INFO", "HTTP endpoint disabled", &[]);
            let _ = stop_rx.await;
            return;
        }
        let mut app = Router::new().route("/health", get(health));
        app = if ws_enabled {
            app.route("/", post(rpc_http).get(rpc_ws))
        } else {
            app.route("/", post(rpc_http))
        };
        let listener = tokio::net::TcpListener::bind((http_addr.as_str(), http_port))
            .await
            .unwrap_or_else(|e| {
                fail(&format!(
                    "Fatal: could not start RPC api: listen tcp {http_addr}:{http_port}: {e}"
                ))
            });
        log(
            "INFO",
            "HTTP endpoint opened",
            &[
                ("url", format!("{http_addr}:{http_port}")),
                ("ws", ws_enabled.to_string()),
                ("ws.compression", flag("ws.compression", "false")),
                ("grpc", "false".into()),
            ],
        );
        let served = axum::serve(listener, app.with_state(node))
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await;
        if let Err(e) = served {
            fail(&format!("Fatal: RPC server failed: {e}"));
        }
    });
}

/// Logs sync progress about once a second until the target is reached.
async fn report_progress(node: Node) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let current = node.current_block();
        if current >= node.target {
            log(
                "INFO",
                "[7/7 Finish] Sync finished",
                &[("block", current.to_string())],
            );
            return;
        }
        log(
            "INFO",
            "[4/7 Execution] Executed blocks",
            &[
                ("number", current.to_string()),
                ("target", node.target.to_string()),
                ("blk/s", format!("{:.1}", node.rate)),
                ("peers", node.peers.to_string()),
            ],
        );
    }
}

/// Installs the SIGTERM/SIGINT handlers right away (so no early signal is missed) and returns a
/// future that completes when either arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            log("WARN", "Cannot install signal handlers", &[]);
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
