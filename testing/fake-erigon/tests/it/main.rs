//! Integration tests: spawn the real `fake-erigon` binary and talk to it over HTTP/WebSocket.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
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

/// A base port with `len` free ports after it (TCP and UDP), above Linux's ephemeral range
/// (32768-60999) and away from the blocks the other crates' tests take (10000-31999), so the
/// many listeners these tests open never land in another test's port range.
fn free_block(len: u16) -> u16 {
    for _ in 0..200 {
        let base = 61_000 + (rand_u16() % 4_000) / len * len;
        let free = (base..base + len).all(|p| {
            TcpListener::bind(("0.0.0.0", p)).is_ok() && UdpSocket::bind(("0.0.0.0", p)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free block of {len} ports");
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) as u16
}

/// Every listener's port flag for a release (HTTP on `base`), so instances never meet.
fn port_flags(version: &str, base: u16) -> Vec<String> {
    let mut flags = vec![
        format!("--http.port={base}"),
        format!("--ws.port={}", base + 1),
        format!("--authrpc.port={}", base + 2),
        format!("--private.api.addr=127.0.0.1:{}", base + 3),
        format!("--torrent.port={}", base + 4),
        format!("--port={}", base + 5),
        format!("--caplin.discovery.port={}", base + 7),
        format!("--caplin.discovery.tcpport={}", base + 8),
        format!("--sentinel.port={}", base + 9),
        format!("--beacon.api.port={}", base + 10),
    ];
    let number: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    if number < vec![3, 5, 0] {
        flags.push(format!("--p2p.allowed-ports={},{}", base + 5, base + 6));
    }
    if number >= vec![3, 4, 0] {
        flags.push(format!("--mcp.port={}", base + 11));
    }
    flags
}

impl Proc {
    /// Spawns the binary with `args` (no port flag added) and extra env vars.
    fn spawn_raw(args: &[&str], env: &[(&str, &str)], port: u16) -> Self {
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child, port }
    }

    /// Spawns the default release with every port of its own.
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_release("3.6.1", args, env)
    }

    /// Spawns `version` with every port of its own.
    fn spawn_release(version: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let base = free_block(12);
        let ports = port_flags(version, base);
        let mut all: Vec<&str> = args.to_vec();
        all.extend(ports.iter().map(String::as_str));
        let mut env = env.to_vec();
        env.push(("FAKE_ERIGON_VERSION", version));
        Self::spawn_raw(&all, &env, base)
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

    /// Reads all of stdout; only call after the process has exited.
    fn stdout(&mut self) -> String {
        let mut out = String::new();
        self.child
            .stdout
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

fn hex(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[tokio::test]
async fn answers_rpc_methods_with_mixed_flag_styles() {
    let mut node = Proc::spawn(
        &[
            "-http.addr",
            "127.0.0.1",
            "--chain=hoodi",
            "-nodiscover",
            "--externalcl",
            "--http.compression=false",
            "--prune.mode",
            "full",
        ],
        &[("FAKE_ERIGON_PEERS", "7")],
    );
    node.ready().await;

    assert_eq!(node.result("eth_chainId").await, json!("0x88bb0"));
    assert_eq!(node.result("net_version").await, json!("560048"));
    assert_eq!(node.result("net_peerCount").await, json!("0x7"));
    let version = node.result("web3_clientVersion").await;
    assert!(
        version.as_str().unwrap().starts_with("erigon/3.6.1/"),
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
    assert_eq!(batch[0]["result"], json!("0x88bb0"));
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

    // `/health` without checks: Erigon reads a JSON body, and an empty one is a parse error.
    let health = client
        .get(format!("{}/health", node.url()))
        .body(r#"{"min_peer_count": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["healthcheck_query"], json!("HEALTHY"));
    assert_eq!(health["min_peer_count"], json!("HEALTHY"));
    assert_eq!(health["check_block"], json!("DISABLED"));
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
    // 3.6: node/cli/helpers.go's OnUsageError (stderr); 3.3: urfave/cli's own "Incorrect Usage"
    // with the help on stdout, and the error again on stderr.
    let cases: [(&str, &[&str], &str); 6] = [
        (
            "3.6.1",
            &["--bogus", "1"],
            "Error: flag provided but not defined: -bogus\nRun 'erigon --help' for usage.",
        ),
        (
            "3.6.1",
            &["-also.bogus=x"],
            "Error: flag provided but not defined: -also.bogus",
        ),
        ("3.6.1", &["positional"], "unexpected positional argument"),
        (
            "3.3.10",
            &["--bogus"],
            "flag provided but not defined: -bogus",
        ),
        (
            "3.6.1",
            &["--chain", "atlantis"],
            "chain name is not recognized: atlantis",
        ),
        (
            "3.6.1",
            &["--chain=holesky"],
            "chain name is not recognized: holesky",
        ),
    ];
    for (version, args, expected) in cases {
        let mut node = Proc::spawn_raw(args, &[("FAKE_ERIGON_VERSION", version)], 0);
        let status = node.wait_exit(Duration::from_secs(5)).expect("should exit");
        assert_eq!(status.code(), Some(1), "{args:?}");
        let stderr = node.stderr();
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let mut old = Proc::spawn_raw(&["--bogus"], &[("FAKE_ERIGON_VERSION", "3.3.10")], 0);
    old.wait_exit(Duration::from_secs(5)).expect("should exit");
    assert!(old
        .stdout()
        .starts_with("Incorrect Usage: flag provided but not defined: -bogus\n\n"));
}

/// Flags a release does not have are refused like any unknown flag: `--p2p.allowed-ports` is gone
/// from 3.5, MCP and the RPC limits arrive in 3.4 (and 3.4.3), `--prune.mode` is Erigon 3's.
#[test]
fn each_release_knows_its_own_flags() {
    let refused: [(&str, &str); 8] = [
        ("3.5.3", "--p2p.allowed-ports=1,2"),
        ("3.6.1", "--p2p.allowed-ports=1,2"),
        ("3.3.10", "--mcp.disable"),
        ("3.3.10", "--rpc.blockrange.limit=5"),
        ("3.4.2", "--rpc.logs.maxresults=5"),
        ("3.4.2", "--rpc.max.concurrency=5"),
        ("2.60.10", "--prune.mode=full"),
        ("3.6.1", "--prune=hrtc"),
    ];
    for (version, flag) in refused {
        let mut node = Proc::spawn_raw(&[flag], &[("FAKE_ERIGON_VERSION", version)], 0);
        let status = node.wait_exit(Duration::from_secs(5)).expect("should exit");
        assert_eq!(status.code(), Some(1), "{version} {flag}");
        let name = flag.trim_start_matches('-').split('=').next().unwrap();
        let stderr = node.stderr();
        assert!(
            stderr.contains(&format!("flag provided but not defined: -{name}")),
            "{version} {flag}: {stderr}"
        );
    }
    let mut blocks = Proc::spawn_raw(
        &["--prune.mode=blocks"],
        &[("FAKE_ERIGON_VERSION", "3.0.12")],
        0,
    );
    blocks
        .wait_exit(Duration::from_secs(5))
        .expect("should exit");
    assert!(blocks.stderr().contains("invalid --prune.mode=blocks"));
}

#[test]
fn version_is_printed_as_erigon_prints_it() {
    let version = |env: &[(&str, &str)]| {
        let out = Command::new(BIN)
            .arg("--version")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(
        version(&[("FAKE_ERIGON_VERSION", "3.3.10")]).1,
        "erigon version 3.3.10-fa4e2b1c\n"
    );
    assert_eq!(
        version(&[
            ("FAKE_ERIGON_VERSION", "3.4.0-dev"),
            ("FAKE_ERIGON_COMMIT", "5da2eae7f6fc")
        ])
        .1,
        "erigon version 3.4.0-dev-5da2eae7\n"
    );
    assert_eq!(
        version(&[("FAKE_ERIGON_VERSION", "not-a-version")]).1,
        "erigon version not-a-version-fa4e2b1c\n"
    );
    let (code, _, stderr) = version(&[("FAKE_ERIGON_VERSION_CRASH", "1")]);
    assert_eq!(code, Some(2));
    assert!(stderr.starts_with("panic: "), "{stderr}");
}

/// The listeners a release opens by default are bound before it serves: a second instance
/// on the same ports fails; 3.3 opens two devp2p listeners, 3.6 one; MCP from 3.4 unless disabled.
#[tokio::test]
async fn every_listener_of_the_release_is_bound() {
    let held = |p: u16| TcpListener::bind(("0.0.0.0", p)).is_err();
    for (version, second_p2p, mcp) in [("3.3.10", true, false), ("3.6.1", false, true)] {
        let mut node = Proc::spawn_release(version, &["--ws"], &[]);
        node.ready().await;
        let base = node.port;
        for p in [
            base,
            base + 1,
            base + 2,
            base + 3,
            base + 4,
            base + 5,
            base + 8,
        ] {
            assert!(held(p), "{version}: port {p} not bound");
        }
        assert!(
            UdpSocket::bind(("0.0.0.0", base + 7)).is_err(),
            "{version}: caplin discovery (UDP)"
        );
        assert_eq!(
            held(base + 6),
            second_p2p,
            "{version}: second devp2p listener"
        );
        assert_eq!(held(base + 11), mcp, "{version}: MCP");
        // The same command line again: its ports are taken.
        let ports = port_flags(version, base);
        let args: Vec<&str> = ports.iter().map(String::as_str).collect();
        let mut twin = Proc::spawn_raw(&args, &[("FAKE_ERIGON_VERSION", version)], base);
        let status = twin
            .wait_exit(Duration::from_secs(5))
            .expect("the twin should fail");
        assert_eq!(status.code(), Some(1));
        let stderr = twin.stderr();
        assert!(
            stderr.to_lowercase().contains("address already in use"),
            "{version}: {stderr}"
        );
    }
    let mut quiet = Proc::spawn_release("3.6.1", &["--mcp.disable"], &[]);
    quiet.ready().await;
    assert!(!held(quiet.port + 11), "MCP bound despite --mcp.disable");
}

/// Erigon's RPC limits as the release has them: `eth_getLogs` ranges over 1,000 blocks refused by
/// default from 3.4.3, none before; raised with `--rpc.blockrange.limit`; batches over 100 refused.
#[tokio::test]
async fn rpc_limits_follow_the_release_and_its_flags() {
    let logs = |to: u64| json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [{"fromBlock": "0x0", "toBlock": format!("{to:#x}")}]});
    let env = [
        ("FAKE_ERIGON_SYNC_TARGET", "100000"),
        ("FAKE_ERIGON_SYNC_RATE", "1000000"),
    ];
    let mut strict = Proc::spawn_release("3.6.1", &[], &env);
    strict.ready().await;
    let refused = strict.call(logs(5000)).await.unwrap();
    assert_eq!(
        refused["error"]["message"],
        json!("query block range exceeds server limit, narrow your filter: 1000")
    );
    assert_eq!(strict.call(logs(1000)).await.unwrap()["result"], json!([]));
    let batch: Vec<Value> = (0..101)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "eth_chainId"}))
        .collect();
    let refused = strict.call(json!(batch)).await.unwrap();
    assert_eq!(
        refused["error"]["message"],
        json!("batch limit 100 exceeded: 101 requests given")
    );

    let mut raised = Proc::spawn_release(
        "3.6.1",
        &["--rpc.blockrange.limit=10000", "--rpc.batch.limit=1000"],
        &env,
    );
    raised.ready().await;
    assert_eq!(raised.call(logs(5000)).await.unwrap()["result"], json!([]));
    assert_eq!(
        raised
            .call(json!(batch))
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        101
    );

    let mut old = Proc::spawn_release("3.3.10", &[], &env);
    old.ready().await;
    assert_eq!(old.call(logs(50_000)).await.unwrap()["result"], json!([]));
}

/// Told to fall behind, the head freezes: its block's timestamp ages, the network goes on, and
/// `/health`'s `max_seconds_behind` and `synced` checks fail as Erigon's do.
#[tokio::test]
async fn a_lagging_node_falls_behind_in_blocks_and_seconds() {
    let env = [
        ("FAKE_ERIGON_SYNC_TARGET", "50"),
        ("FAKE_ERIGON_SYNC_RATE", "1000"),
        ("FAKE_ERIGON_SLOT_SECS", "1"),
        ("FAKE_ERIGON_LAG_AFTER_SECS", "0.5"),
    ];
    let mut node = Proc::spawn(&[], &env);
    node.ready().await;
    let head = |n: &Proc| {
        let n = n.url();
        async move {
            let resp: Value = reqwest::Client::new().post(n).json(&json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": ["latest", false]})).send().await.unwrap().json().await.unwrap();
            (
                hex(&resp["result"]["number"]),
                hex(&resp["result"]["timestamp"]),
            )
        }
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (number, ts) = head(&node).await;
    assert_eq!(number, 50);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        head(&node).await,
        (number, ts),
        "a lagging head does not move"
    );
    let syncing = node.result("eth_syncing").await;
    assert!(hex(&syncing["highestBlock"]) >= 52, "{syncing}");
    let health = reqwest::Client::new()
        .get(format!("{}/health", node.url()))
        .header("X-ERIGON-HEALTHCHECK", "synced")
        .header("X-ERIGON-HEALTHCHECK", "max_seconds_behind1")
        .header("X-ERIGON-HEALTHCHECK", "min_peer_count1")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 500);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["synced"], json!("ERROR: not synced"));
    assert!(
        health["max_seconds_behind"]
            .as_str()
            .unwrap()
            .starts_with("ERROR: timestamp too old: got ts: "),
        "{health}"
    );
    assert_eq!(health["min_peer_count"], json!("HEALTHY"));
    assert_eq!(health["check_block"], json!("DISABLED"));
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
    assert_eq!(argv[..4], [BIN, "--datadir", datadir_str, "--http"]);
    assert_eq!(argv[4], port_flag);
}

#[tokio::test]
async fn start_delay_postpones_the_http_port() {
    let started = Instant::now();
    let mut node = Proc::spawn(&[], &[("FAKE_ERIGON_START_DELAY_MS", "400")]);
    node.ready().await;
    assert!(started.elapsed() >= Duration::from_millis(400));
}
