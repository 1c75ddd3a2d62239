//! `fake-erigon`: a test double for the Erigon binary (and its `rpcdaemon`), speaking enough of
//! its command line, log format, listeners, JSON-RPC (HTTP + WebSocket) and `/health` for the
//! Erigolem runtime's tests — as a chosen release would.
//!
//! Steered with environment variables:
//! - `FAKE_ERIGON_VERSION` (default 3.6.1): the release modelled (`release.rs`): its flags (others
//!   are refused as urfave/cli refuses them), chains, prune modes, listeners and RPC limits; printed
//!   by `--version` as Erigon prints it, even when it is not a version at all.
//! - `FAKE_ERIGON_COMMIT`: the commit `--version` shows (default `fa4e2b1c`);
//!   `FAKE_ERIGON_VERSION_CRASH=1`: `--version` panics.
//! - `FAKE_ERIGON_START_DELAY_MS`, `FAKE_ERIGON_CRASH_AFTER_SECS`, `FAKE_ERIGON_CRASH_TIMES`,
//!   `FAKE_ERIGON_SYNC_TARGET`, `FAKE_ERIGON_SYNC_RATE`, `FAKE_ERIGON_PEERS`, `FAKE_ERIGON_SLOT_SECS`
//!   and `FAKE_ERIGON_LAG_AFTER_SECS` (the head stops following the chain after that long).
//!
//! Run as `rpcdaemon` (a file or link of that name, or `FAKE_ERIGON_ROLE=rpcdaemon`) it is the
//! Erigon 2 split layout's RPC daemon: it reads the chain of the `erigon` on the same datadir and
//! needs that node's private API to answer.

mod node;
mod release;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::exit;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use node::{Chain, Limits};
use release::Release;

/// The state file a fake `rpcdaemon` reads its chain from.
const STATE_FILE: &str = "fake-erigon.node.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Erigon,
    Rpcdaemon,
}

/// Outcome of command-line parsing.
enum Cli {
    Run(HashMap<String, String>),
    Help,
    Version,
}

/// Parses flags the way Go's `flag` package (under urfave/cli v2) does: `-name`, `--name`,
/// `--name=value`, `--name value`; boolean flags take no separate value.
fn parse_args(args: &[String], values: &[&str], bools: &[&str]) -> Result<Cli, String> {
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
        let value = if bools.contains(&name) {
            match inline {
                None => true,
                Some(v) => parse_go_bool(v).ok_or_else(|| {
                    format!("invalid boolean value {v:?} for -{name}: parse error")
                })?,
            }
            .to_string()
        } else if values.contains(&name) {
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

/// A usage error as the release prints it, then exit 1: urfave/cli v2's own output (`Incorrect
/// Usage: …` and the help on stdout; `cmd/erigon/main.go` prints the error again to stderr), or,
/// for newer releases, `node/cli/helpers.go`'s OnUsageError (`Error: …` on stderr).
fn usage_error(release: &Release, app: &str, err: &str) -> ! {
    if release.terse_usage_errors() {
        eprintln!("Error: {err}\nRun '{app} --help' for usage.");
    } else {
        println!("Incorrect Usage: {err}\n\nNAME:\n   {app} - erigon\n\nUSAGE:\n   {app} [command] [flags]");
        eprintln!("{err}");
    }
    exit(1)
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
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

/// Shared by the HTTP handlers.
#[derive(Clone)]
struct App {
    chain: Arc<Chain>,
    limits: Limits,
}

async fn rpc_http(State(app): State<App>, body: Bytes) -> Json<Value> {
    Json(app.chain.handle(&body, &app.limits))
}

async fn rpc_ws(State(app): State<App>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| serve_ws(app, socket))
}

async fn serve_ws(app: App, mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(text) => app.chain.handle(text.as_bytes(), &app.limits),
            Message::Binary(bytes) => app.chain.handle(&bytes, &app.limits),
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

async fn health(State(app): State<App>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let checks: Vec<String> = headers
        .get_all("x-erigon-healthcheck")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let (status, body) = app.chain.health(&checks, &body);
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
}

/// A listener the release opens: bound before the node serves anything, held until it exits, so
/// a port another instance uses makes this one fail as Erigon would.
#[allow(dead_code)] // held open, never read
enum Socket {
    Tcp(StdTcpListener),
    Udp(UdpSocket),
}

/// Binds `addr` (TCP, plus UDP for `udp`), or ends the process with Erigon's kind of message.
fn bind(what: &str, addr: &str, udp: bool, held: &mut Vec<Socket>) {
    let addr = addr.replace("localhost", "127.0.0.1");
    let parsed: SocketAddr = addr
        .parse()
        .unwrap_or_else(|_| fail(&format!("Fatal: {what}: invalid listen address {addr:?}")));
    match StdTcpListener::bind(parsed) {
        Ok(l) => held.push(Socket::Tcp(l)),
        Err(e) => fail(&format!(
            "[EROR] Erigon startup err=\"{what}: listen tcp {parsed}: bind: {e}\""
        )),
    }
    if udp {
        match UdpSocket::bind(parsed) {
            Ok(s) => held.push(Socket::Udp(s)),
            Err(e) => fail(&format!(
                "[EROR] Erigon startup err=\"{what}: listen udp {parsed}: bind: {e}\""
            )),
        }
    }
}

fn port_of(flags: &HashMap<String, String>, name: &str, default: u16) -> u16 {
    match flags.get(name) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| {
            fail(&format!(
                "Incorrect Usage: invalid value {v:?} for flag -{name}: parse error"
            ))
        }),
    }
}

/// Every listener `erigon` of `release` opens with `flags` (defaults from `cmd/utils/flags.go` and
/// docs.erigon.tech "Default ports"), except the JSON-RPC one, served later.
fn bind_erigon_ports(release: &Release, flags: &HashMap<String, String>) -> Vec<Socket> {
    let flag = |name: &str, default: &str| flags.get(name).cloned().unwrap_or(default.into());
    let on = |name: &str, default: bool| flags.get(name).map_or(default, |v| v == "true");
    let mut held = Vec::new();
    bind(
        "engine API",
        &format!(
            "{}:{}",
            flag("authrpc.addr", "127.0.0.1"),
            port_of(flags, "authrpc.port", 8551)
        ),
        false,
        &mut held,
    );
    let private = flag("private.api.addr", "127.0.0.1:9090");
    if !private.is_empty() {
        bind("private api", &private, false, &mut held);
    }
    if !on("no-downloader", false) {
        let port = port_of(flags, "torrent.port", 42069);
        bind("torrent", &format!("0.0.0.0:{port}"), true, &mut held);
    }
    // One devp2p server per eth protocol version before 3.5, each on the first free port of
    // `[--port] + --p2p.allowed-ports` (default 30303-30307); one from 3.5.
    let port = port_of(flags, "port", 30303);
    let mut allowed: Vec<u16> = match flags.get("p2p.allowed-ports") {
        Some(list) => list
            .split(',')
            .map(|p| {
                p.trim().parse().unwrap_or_else(|_| {
                    fail(&format!(
                        "Incorrect Usage: invalid value {list:?} for flag -p2p.allowed-ports"
                    ))
                })
            })
            .collect(),
        None => vec![30303, 30304, 30305, 30306, 30307],
    };
    if !allowed.contains(&port) {
        allowed.insert(0, port);
    }
    if release.p2p_listeners() == 1 {
        allowed = vec![port];
    }
    for p in allowed.iter().take(release.p2p_listeners()) {
        bind("p2p", &format!("0.0.0.0:{p}"), true, &mut held);
    }
    if !on("externalcl", false) {
        let addr = flag("caplin.discovery.addr", "0.0.0.0");
        let udp = port_of(flags, "caplin.discovery.port", 4000);
        let tcp = port_of(flags, "caplin.discovery.tcpport", 4001);
        match UdpSocket::bind(format!("{addr}:{udp}")) {
            Ok(s) => held.push(Socket::Udp(s)),
            Err(e) => fail(&format!(
                "[EROR] Erigon startup err=\"caplin discovery: listen udp {addr}:{udp}: {e}\""
            )),
        }
        bind("caplin", &format!("{addr}:{tcp}"), false, &mut held);
        let sentinel = port_of(flags, "sentinel.port", 7777);
        bind(
            "sentinel",
            &format!("{}:{sentinel}", flag("sentinel.addr", "localhost")),
            false,
            &mut held,
        );
        if !release.erigon2() {
            let beacon = port_of(flags, "beacon.api.port", 5555);
            bind(
                "beacon api",
                &format!("{}:{beacon}", flag("beacon.api.addr", "localhost")),
                false,
                &mut held,
            );
        }
    }
    if release.mcp() && !on("mcp.disable", false) {
        let port = port_of(flags, "mcp.port", 8553);
        bind(
            "mcp",
            &format!("{}:{port}", flag("mcp.addr", "127.0.0.1")),
            false,
            &mut held,
        );
    }
    // A second WebSocket listener on `--ws.port` (separate from HTTP since 2.56): kept, so a
    // `--ws` without its own port clashes as it would.
    if on("ws", false) {
        let port = port_of(flags, "ws.port", 8546);
        bind(
            "ws",
            &format!("{}:{port}", flag("http.addr", "127.0.0.1")),
            false,
            &mut held,
        );
    }
    held
}

/// Erigon checks `--prune.mode` (`--prune` letters for Erigon 2) before it opens anything.
fn check_prune(release: &Release, flags: &HashMap<String, String>) {
    if release.erigon2() {
        if let Some(p) = flags.get("prune") {
            if !p.chars().all(|c| "hrtc".contains(c)) {
                fail(&format!(
                    "Fatal: invalid --prune value {p:?}: use letters of \"hrtc\""
                ));
            }
        }
        return;
    }
    let mode = flags
        .get("prune.mode")
        .map(String::as_str)
        .unwrap_or("full");
    if !release.prune_modes().contains(&mode) {
        fail(&format!(
            "Fatal: invalid --prune.mode={mode}: available values: {}",
            release.prune_modes().join(", ")
        ));
    }
}

fn limits_of(release: &Release, flags: &HashMap<String, String>) -> Limits {
    let num = |name: &str, default: Option<u64>| match flags.get(name) {
        None => default,
        Some(v) => Some(v.parse().unwrap_or_else(|_| {
            fail(&format!(
                "Incorrect Usage: invalid value {v:?} for flag -{name}: parse error"
            ))
        })),
    };
    Limits {
        batch: num("rpc.batch.limit", Some(100)).filter(|l| *l > 0),
        block_range: num("rpc.blockrange.limit", release.block_range_limit()),
    }
}

fn main() {
    let started = Instant::now();
    let started_ms = node::now_ms();
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let app = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "erigon".into());
    let role = match std::env::var("FAKE_ERIGON_ROLE").ok().as_deref() {
        Some("rpcdaemon") => Role::Rpcdaemon,
        _ if app == "rpcdaemon" => Role::Rpcdaemon,
        _ => Role::Erigon,
    };
    let version_text = std::env::var("FAKE_ERIGON_VERSION")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| release::DEFAULT_VERSION.into());
    let release = Release::new(&version_text);
    let (values, bools) = match role {
        Role::Erigon => (release.value_flags(), release.bool_flags()),
        Role::Rpcdaemon => (
            release.rpcdaemon_value_flags(),
            release.rpcdaemon_bool_flags(),
        ),
    };
    // `MakeApp("erigon", …)` names the app `erigon` whatever the file is called.
    let name = match role {
        Role::Erigon => "erigon",
        Role::Rpcdaemon => "rpcdaemon",
    };
    let flags = match parse_args(argv.get(1..).unwrap_or_default(), &values, &bools) {
        Ok(Cli::Run(flags)) => flags,
        Ok(Cli::Help) => {
            println!("NAME:\n   {name} - erigon (fake test double)\n\nUSAGE:\n   {name} [command] [flags]");
            return;
        }
        Ok(Cli::Version) => {
            if std::env::var("FAKE_ERIGON_VERSION_CRASH").is_ok_and(|v| v == "1") {
                eprintln!("panic: runtime error: invalid memory address or nil pointer dereference\n[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x0]\n\ngoroutine 1 [running]:\nmain.main()");
                exit(2);
            }
            // urfave/cli: "%v version %v\n" of app.Name and `VersionWithCommit(GitCommit)`.
            let commit = std::env::var("FAKE_ERIGON_COMMIT").unwrap_or_else(|_| "fa4e2b1c".into());
            let suffix = if commit.is_empty() {
                String::new()
            } else {
                format!("-{}", &commit[..commit.len().min(8)])
            };
            println!("{name} version {version_text}{suffix}");
            return;
        }
        Err(e) => usage_error(&release, name, &e),
    };
    let flag = |name: &str, default: &str| flags.get(name).cloned().unwrap_or(default.into());
    let datadir = flags.get("datadir").map(PathBuf::from);
    if let Some(dir) = &datadir {
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            let file = match role {
                Role::Erigon => "fake-erigon.argv",
                Role::Rpcdaemon => "fake-rpcdaemon.argv",
            };
            std::fs::write(dir.join(file), json!(argv).to_string())
        });
        if let Err(e) = written {
            fail(&format!("Fatal: cannot use datadir {}: {e}", dir.display()));
        }
    }

    let chain = match role {
        Role::Erigon => {
            let chain_name = flag("chain", "mainnet");
            let Some((_, chain_id)) = release.chains().iter().find(|(n, _)| *n == chain_name)
            else {
                fail(&format!(
                    "Fatal: chain name is not recognized: {chain_name}"
                ));
            };
            check_prune(&release, &flags);
            let chain = Chain {
                started_ms,
                target: env_opt("FAKE_ERIGON_SYNC_TARGET").unwrap_or(1000),
                rate: env_opt("FAKE_ERIGON_SYNC_RATE").unwrap_or(200.0),
                peers: env_opt("FAKE_ERIGON_PEERS").unwrap_or(5),
                chain_id: *chain_id,
                slot_secs: env_opt("FAKE_ERIGON_SLOT_SECS").unwrap_or(12),
                lag_after_secs: env_opt("FAKE_ERIGON_LAG_AFTER_SECS"),
                version: version_text.clone(),
            };
            if let Some(dir) = &datadir {
                let state = serde_json::to_string(&chain).unwrap_or_default();
                if let Err(e) = std::fs::write(dir.join(STATE_FILE), state) {
                    fail(&format!("Fatal: cannot use datadir {}: {e}", dir.display()));
                }
            }
            chain
        }
        Role::Rpcdaemon => {
            // rpcdaemon reads the node's database and talks to its private API.
            let Some(dir) = &datadir else {
                fail("Fatal: rpcdaemon without --datadir needs a remote node: not supported by the fake");
            };
            let state = std::fs::read_to_string(dir.join(STATE_FILE)).unwrap_or_else(|e| {
                fail(&format!(
                    "Fatal: could not open database at {}: {e}",
                    dir.display()
                ))
            });
            let private = flag("private.api.addr", "127.0.0.1:9090");
            if std::net::TcpStream::connect(private.replace("localhost", "127.0.0.1")).is_err() {
                fail(&format!(
                    "Fatal: could not connect to remoteKv at {private}: connection refused"
                ));
            }
            serde_json::from_str(&state)
                .unwrap_or_else(|e| fail(&format!("Fatal: bad node state: {e}")))
        }
    };
    let held = match role {
        Role::Erigon => bind_erigon_ports(&release, &flags),
        Role::Rpcdaemon => Vec::new(),
    };
    let http_addr = flag("http.addr", "127.0.0.1");
    let http_port = port_of(&flags, "http.port", 8545);
    let http_enabled = flag("http", "true") == "true";
    let ws_enabled = flag("ws", "false") == "true";

    let delay_ms: u64 = env_opt("FAKE_ERIGON_START_DELAY_MS").unwrap_or(0);
    let crash_after: Option<f64> = env_opt("FAKE_ERIGON_CRASH_AFTER_SECS");
    let crash_times: Option<u64> = env_opt("FAKE_ERIGON_CRASH_TIMES");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("Fatal: cannot start runtime: {e}")));
    let limits = limits_of(&release, &flags);
    let chain = Arc::new(chain);
    runtime.block_on(async move {
        let _held = held;
        log(
            "INFO",
            "Build info",
            &[
                ("git_branch", "fake".into()),
                ("tag", format!("v{version_text}")),
            ],
        );
        if role == Role::Erigon {
            log(
                "INFO",
                &format!("Starting Erigon on {}...", flag("chain", "mainnet")),
                &[("chain_id", chain.chain_id.to_string())],
            );
        }

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

        if role == Role::Erigon {
            tokio::spawn(report_progress(chain.clone()));
        }

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
        let mut router = Router::new().route("/health", get(health).post(health));
        router = if ws_enabled {
            router.route("/", post(rpc_http).get(rpc_ws))
        } else {
            router.route("/", post(rpc_http))
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
        let app = App { chain, limits };
        let served = axum::serve(listener, router.with_state(app))
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
async fn report_progress(chain: Arc<Chain>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let current = chain.current_block();
        if current >= chain.target {
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
                ("target", chain.target.to_string()),
                ("blk/s", format!("{:.1}", chain.rate)),
                ("peers", chain.peers.to_string()),
            ],
        );
    }
}
