//! Integration tests: spawn the real `fake-erigon` binary and talk to it over HTTP/WebSocket.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_fake-erigon");

/// A running fake-erigon; killed and reaped on drop, even when the test panics.
struct Proc {
    child: Child,
    port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns the binary with `args` (no port flag added) and extra env vars.
    fn spawn_raw(args: &[&str], env: &[(&str, &str)], port: u16) -> Self {
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child, port }
    }

    /// Spawns the binary on a free HTTP port.
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let port_flag = format!("--http.port={port}");
        let mut all = args.to_vec();
        all.push(&port_flag);
        Self::spawn_raw(&all, env, port)
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Reads all of stderr; only call after the process has exited.
    fn stderr(&mut self) -> String {
        let mut out = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn call(&self, body: Value) -> reqwest::Result<Value> {
        reqwest::Client::new()
            .post(self.url())
            .json(&body)
            .send()
            .await?
            .json()
            .await
    }

    async fn result(&self, method: &str) -> Value {
        let resp = self
            .call(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}))
            .await
            .unwrap();
        resp["result"].clone()
    }

    /// Polls until the node answers JSON-RPC; panics on a deadline or an early exit.
    async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let probe = json!({"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber"});
            if self.call(probe).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("fake-erigon exited early ({status}): {}", self.stderr());
            }
            assert!(Instant::now() < deadline, "fake-erigon never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn hex(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[tokio::test]
async fn answers_rpc_methods_with_mixed_flag_styles() {
    let mut node = Proc::spawn(
        &[
            "-http.addr",
            "127.0.0.1",
            "--chain=holesky",
            "-nodiscover",
            "--externalcl",
            "--http.compression=false",
            "--prune.mode",
            "full",
        ],
        &[("FAKE_ERIGON_PEERS", "7")],
    );
    node.ready().await;

    assert_eq!(node.result("eth_chainId").await, json!("0x4268"));
    assert_eq!(node.result("net_version").await, json!("17000"));
    assert_eq!(node.result("net_peerCount").await, json!("0x7"));
    let version = node.result("web3_clientVersion").await;
    assert!(
        version.as_str().unwrap().starts_with("erigon/3."),
        "{version}"
    );

    let unknown = node
        .call(json!({"jsonrpc": "2.0", "id": 9, "method": "eth_nope"}))
        .await
        .unwrap();
    assert_eq!(unknown["id"], json!(9));
    assert_eq!(unknown["error"]["code"], json!(-32601));
    assert_eq!(
        unknown["error"]["message"],
        json!("the method eth_nope does not exist/is not available")
    );

    let batch = node
        .call(json!([
            {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
            {"jsonrpc": "2.0", "id": 2, "method": "net_version"},
        ]))
        .await
        .unwrap();
    assert_eq!(batch[0]["result"], json!("0x4268"));
    assert_eq!(batch[1]["id"], json!(2));

    let client = reqwest::Client::new();
    let bad: Value = client
        .post(node.url())
        .body("{not json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bad["error"]["code"], json!(-32700));

    let health = client
        .get(format!("{}/health", node.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["healthcheck_query"], json!("HEALTHY"));
}

#[tokio::test]
async fn block_number_grows() {
    let mut node = Proc::spawn(
        &[],
        &[
            ("FAKE_ERIGON_SYNC_TARGET", "100000000"),
            ("FAKE_ERIGON_SYNC_RATE", "1000"),
        ],
    );
    node.ready().await;
    let first = hex(&node.result("eth_blockNumber").await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = hex(&node.result("eth_blockNumber").await);
    assert!(second > first, "{first} -> {second}");
    assert_eq!(node.result("eth_chainId").await, json!("0x1"));
}

#[tokio::test]
async fn syncing_reports_progress_then_false() {
    let mut node = Proc::spawn(
        &[],
        &[
            ("FAKE_ERIGON_SYNC_TARGET", "300"),
            ("FAKE_ERIGON_SYNC_RATE", "100"),
        ],
    );
    node.ready().await;
    let syncing = node.result("eth_syncing").await;
    assert_eq!(syncing["highestBlock"], json!("0x12c"), "{syncing}");
    assert!(hex(&syncing["currentBlock"]) < 300);
    assert_eq!(syncing["stages"][1]["stage_name"], json!("Execution"));

    let deadline = Instant::now() + Duration::from_secs(10);
    while node.result("eth_syncing").await != json!(false) {
        assert!(Instant::now() < deadline, "never finished syncing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.result("eth_blockNumber").await, json!("0x12c"));
}

#[tokio::test]
async fn websocket_is_served_on_the_http_port() {
    let mut node = Proc::spawn(&["--ws", "--chain", "sepolia"], &[]);
    node.ready().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/", node.port))
        .await
        .unwrap();
    let req = json!({"jsonrpc": "2.0", "id": 3, "method": "eth_chainId"});
    ws.send(req.to_string().into()).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    let reply: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert_eq!(
        reply,
        json!({"jsonrpc": "2.0", "id": 3, "result": "0xaa36a7"})
    );
}

#[test]
fn bad_command_lines_are_rejected() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["--bogus", "1"],
            "Incorrect Usage: flag provided but not defined: -bogus",
        ),
        (
            &["-also.bogus=x"],
            "Incorrect Usage: flag provided but not defined: -also.bogus",
        ),
        (&["positional"], "Incorrect Usage: "),
        (&["--chain", "atlantis"], "atlantis"),
    ];
    for (args, expected) in cases {
        let mut node = Proc::spawn_raw(args, &[], free_port());
        let status = node.wait_exit(Duration::from_secs(5)).expect("should exit");
        assert_eq!(status.code(), Some(1), "{args:?}");
        let stderr = node.stderr();
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn sigterm_and_sigint_exit_zero_quickly() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut node = Proc::spawn(&["--ws"], &[]);
        node.ready().await;
        let sent = Instant::now();
        kill(Pid::from_raw(node.child.id() as i32), signal).unwrap();
        let status = node.wait_exit(Duration::from_secs(5)).expect("should exit");
        let took = sent.elapsed();
        assert_eq!(status.code(), Some(0), "{signal}");
        // The fake aims for ~100 ms; leave slack for loaded CI machines.
        assert!(took < Duration::from_secs(1), "{signal} took {took:?}");
        assert!(node.stderr().contains("Got interrupt, shutting down..."));
    }
}

#[test]
fn crash_after_exits_with_code_two() {
    let mut node = Proc::spawn(&[], &[("FAKE_ERIGON_CRASH_AFTER_SECS", "0.2")]);
    let status = node
        .wait_exit(Duration::from_secs(5))
        .expect("should crash");
    assert_eq!(status.code(), Some(2));
    assert!(node.stderr().contains("panic: fake-erigon crash requested"));
}

#[tokio::test]
async fn crash_times_limits_crashes_per_datadir() {
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().to_str().unwrap();
    let env = [
        ("FAKE_ERIGON_CRASH_AFTER_SECS", "0.1"),
        ("FAKE_ERIGON_CRASH_TIMES", "1"),
    ];
    let mut first = Proc::spawn(&["--datadir", datadir], &env);
    let status = first
        .wait_exit(Duration::from_secs(5))
        .expect("should crash");
    assert_eq!(status.code(), Some(2));

    let mut second = Proc::spawn(&["--datadir", datadir], &env);
    second.ready().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(second.child.try_wait().unwrap().is_none(), "crashed again");
    let count = std::fs::read_to_string(dir.path().join("fake-erigon.crashes")).unwrap();
    assert_eq!(count.trim(), "1");
}

#[tokio::test]
async fn datadir_is_created_and_argv_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("nested/datadir");
    let datadir_str = datadir.to_str().unwrap();
    let mut node = Proc::spawn(&["--datadir", datadir_str, "--http"], &[]);
    node.ready().await;
    let argv = std::fs::read_to_string(datadir.join("fake-erigon.argv")).unwrap();
    let argv: Vec<String> = serde_json::from_str(&argv).unwrap();
    let port_flag = format!("--http.port={}", node.port);
    assert_eq!(
        argv,
        [BIN, "--datadir", datadir_str, "--http", port_flag.as_str()]
    );
}

#[tokio::test]
async fn start_delay_postpones_the_http_port() {
    let started = Instant::now();
    let mut node = Proc::spawn(&[], &[("FAKE_ERIGON_START_DELAY_MS", "400")]);
    node.ready().await;
    assert!(started.elapsed() >= Duration::from_millis(400));
}
