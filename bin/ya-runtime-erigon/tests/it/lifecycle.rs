//! One activity's life: deploy, start, RPC and WebSocket through Nginx, STATUS/HEALTH/LOGS/ROTATE,
//! and every way it can end (Shutdown, stdin EOF, SIGTERM, SIGKILL).

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use erigolem_primitives::{EngineKind, Mode, Network, NodeState};
use erigolem_test_utils::{rpc, wait_for, Provider, RpcError};
use futures::{SinkExt, StreamExt};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

use crate::{alive, auth, block_through, node_pids, wait_dead};

#[tokio::test]
async fn oneshot_commands_describe_the_provider() {
    let provider = Provider::start(2, |_| {}).await;
    let runtime = provider.runtime("a1");
    let deployed = runtime.deploy().await.unwrap();
    assert_eq!(deployed.valid, Ok(()), "{:?}", deployed.raw);
    assert_eq!(deployed.raw["startMode"], "blocking");

    let offer = runtime.offer_template().await.unwrap();
    let networks = &offer["properties"]["erigolem.networks"];
    assert_eq!(networks, &json!(["mainnet", "sepolia", "hoodi", "dev"]));
    assert_eq!(offer["properties"]["erigolem.modes"], json!(["dedicated"]));
    assert_eq!(
        offer["properties"]["erigolem.prunes"],
        json!(["full", "archive", "minimal", "blocks"])
    );
    assert_eq!(offer["properties"]["erigolem.engines"]["erigon"], "3.6.1");
    assert!(offer["properties"]["erigolem.engines"]["anvil"].is_string());
    let disk = &offer["properties"]["erigolem.disk"];
    assert_eq!(disk["mainnet"]["archive"], 2_030_000_000_000_u64);
    assert_eq!(disk["hoodi"]["full"], 48_360_000_000_u64);
    assert!(disk["dev"].is_null(), "{disk}");

    let said = runtime.test().await.unwrap();
    assert!(said.contains("ok: serves"), "{said}");
    assert!(said.contains("erigon 3.6.1"), "{said}");
}

#[tokio::test]
async fn dev_node_serves_http_and_websocket_through_nginx_then_shuts_down_clean() {
    let provider = Provider::start(2, |_| {}).await;
    let session = provider
        .runtime("a1")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    let started = session.start_output().await.unwrap();
    let status = session.status().await.unwrap();
    assert_eq!(status.url, started.url);
    assert_eq!(
        (status.network, status.engine, status.mode),
        (Network::Dev, EngineKind::Anvil, Mode::Dedicated)
    );
    assert_eq!(
        status.url,
        format!("{}/{}/", provider.nginx.base_url(), status.instance)
    );
    assert!(status.ws_url.starts_with("ws://"));
    assert!(
        status.auth.password.expose().len() >= 22,
        "password under 128 bits"
    );
    assert!(matches!(status.state, NodeState::Running));

    // HTTP JSON-RPC with the credentials; 401 without them or with wrong ones.
    let first = block_through(&status, Some(auth(&status))).await.unwrap();
    assert!(matches!(
        block_through(&status, None).await,
        Err(RpcError::Http(401))
    ));
    assert!(matches!(
        block_through(&status, Some((auth(&status).0, "wrong"))).await,
        Err(RpcError::Http(401))
    ));

    // WebSocket on the same URL: newHeads delivers heads (anvil mines a block a second).
    let mut request = status.ws_url.as_str().into_client_request().unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        auth(&status).0,
        auth(&status).1
    ));
    request
        .headers_mut()
        .insert("Authorization", format!("Basic {basic}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let sub = json!({"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            let v: Value = serde_json::from_str(msg.unwrap().to_text().unwrap()).unwrap();
            if v["method"] == "eth_subscription" {
                return v["params"]["result"]["number"].as_str().unwrap().to_owned();
            }
        }
        panic!("websocket closed");
    })
    .await
    .expect("no head within 10 s");
    assert!(u64::from_str_radix(head.trim_start_matches("0x"), 16).unwrap() >= first);
    // WebSocket without credentials: refused.
    let anonymous = tokio_tungstenite::connect_async(status.ws_url.as_str()).await;
    assert!(anonymous.is_err());

    // The height grows.
    let later = wait_for(
        "the block height to grow",
        Duration::from_secs(10),
        || async {
            let b = block_through(&status, Some(auth(&status))).await.ok()?;
            (b > first).then_some(b)
        },
    )
    .await;
    assert!(later > first);

    // HEALTH, LOGS, ROTATE.
    let health = session.health().await.unwrap();
    assert!(health.healthy && health.rpc, "{health:?}");
    assert_eq!(health.syncing, Some(false));
    let logs = session.logs(50).await.unwrap();
    assert!(!logs.is_empty(), "no log lines");
    let old = status.auth.clone();
    let new = session.rotate().await.unwrap();
    assert_ne!(new.password, old.password);
    assert!(matches!(
        block_through(&status, Some((&old.user, old.password.expose()))).await,
        Err(RpcError::Http(401))
    ));
    block_through(&status, Some((&new.user, new.password.expose())))
        .await
        .unwrap();
    assert_eq!(session.status().await.unwrap().auth, new);
    let err = session.run("FROBNICATE", &[]).await.unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");

    // Shutdown: credentials revoked, entry gone, node process gone, data dir gone.
    let instance = status.instance.to_string();
    let nodes = node_pids(&provider, &instance);
    assert_eq!(nodes.len(), 1, "expected one anvil for the instance");
    session.shutdown().await.unwrap();
    let after = block_through(&status, Some((&new.user, new.password.expose()))).await;
    assert!(matches!(after, Err(RpcError::Http(401 | 404))), "{after:?}");
    assert!(provider.gateway_entries().is_empty());
    assert!(provider.sockets().is_empty());
    assert!(
        provider.instance_dirs().is_empty(),
        "{:?}",
        provider.instance_dirs()
    );
    for pid in nodes {
        assert!(!alive(pid), "node {pid} survived shutdown");
    }
}

/// Starts a runtime by hand (no runtime-API client), so the test controls its stdin and signals.
/// Returns the child and the instance name once the instance is serving.
async fn start_raw(provider: &Provider) -> (tokio::process::Child, String) {
    let runtime = provider.runtime("raw");
    std::fs::create_dir_all(&runtime.workdir).unwrap();
    let mut child = tokio::process::Command::new(&runtime.path)
        .args(["--workdir"])
        .arg(&runtime.workdir)
        .args([
            "--task-package",
            "/dev/null",
            "start",
            r#"{"network":"dev"}"#,
        ])
        .envs(runtime.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(runtime.log_path()).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let name = wait_for(
        "the instance to be served",
        Duration::from_secs(20),
        || async {
            let entries = provider.gateway_entries();
            entries.first().cloned()
        },
    )
    .await;
    // Serving: the node answers (the location file is written only after the node is ready).
    assert!(child.try_wait().unwrap().is_none());
    (child, name)
}

async fn assert_cleaned_up(provider: &Provider, name: &str, node_pids: Vec<u32>) {
    let log = std::fs::read_to_string(provider.runtime("raw").log_path()).unwrap_or_default();
    for pid in node_pids {
        wait_dead(pid, Duration::from_secs(10)).await;
    }
    assert!(
        provider.gateway_entries().is_empty(),
        "{:?}; runtime log:\n{log}",
        provider.gateway_entries()
    );
    assert!(provider.sockets().is_empty());
    assert!(!provider.instance_dir(name).exists());
}

/// Starts a runtime, ends it with `end` (closing stdin, or a signal), and checks that it exits 0
/// having stopped its node and removed everything.
async fn ended_runtime_cleans_up(end: impl FnOnce(&mut tokio::process::Child)) {
    let provider = Provider::start(2, |_| {}).await;
    let (mut child, name) = start_raw(&provider).await;
    let nodes = node_pids(&provider, &name);
    assert_eq!(nodes.len(), 1);
    end(&mut child);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert_cleaned_up(&provider, &name, nodes).await;
}

#[tokio::test]
async fn stdin_eof_cleans_up() {
    ended_runtime_cleans_up(|child| drop(child.stdin.take())).await;
}

#[tokio::test]
async fn sigterm_cleans_up() {
    ended_runtime_cleans_up(|child| {
        kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    })
    .await;
}

#[tokio::test]
async fn sigkill_takes_the_node_down_and_the_next_start_sweeps_the_entry() {
    let provider = Provider::start(2, |_| {}).await;
    let (mut child, name) = start_raw(&provider).await;
    let node_pids = node_pids(&provider, &name);
    assert_eq!(node_pids.len(), 1);
    child.kill().await.unwrap(); // SIGKILL: no cleanup code runs
    for pid in &node_pids {
        wait_dead(*pid, Duration::from_secs(5)).await;
    }
    // The entry is stale now; the next start on this host removes it.
    assert_eq!(provider.gateway_entries(), vec![name.clone()]);
    let session = provider
        .runtime("next")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    assert_eq!(
        provider.gateway_entries(),
        vec![status.instance.to_string()]
    );
    assert!(!provider.instance_dir(&name).exists());
    session.shutdown().await.unwrap();
}

#[tokio::test]
async fn erigon_node_reports_sync_progress_then_running() {
    let provider = Provider::start(2, |_| {}).await;
    let session = provider
        .runtime("e1")
        .env("FAKE_ERIGON_SYNC_TARGET", "400")
        .env("FAKE_ERIGON_SYNC_RATE", "100")
        .start(r#"{"network":"sepolia","mode":"dedicated","prune":"minimal"}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    assert_eq!(
        (status.engine, status.network),
        (EngineKind::Erigon, Network::Sepolia)
    );
    assert_eq!(status.state, NodeState::Syncing, "{status:?}");
    let sync = status.sync.clone().unwrap();
    assert_eq!(sync.highest_block, 400);
    assert!(sync.stages.iter().any(|s| s.name == "Execution"));
    assert_eq!(status.peers, Some(5));
    let chain = rpc(&status.url, Some(auth(&status)), "eth_chainId", json!([]))
        .await
        .unwrap();
    assert_eq!(chain, json!("0xaa36a7"));
    let running = wait_for("sync to finish", Duration::from_secs(20), || async {
        let s = session.status().await.ok()?;
        // Height and sync state are read by two calls; wait for both to show the end.
        (s.state == NodeState::Running && s.block == Some(400)).then_some(s)
    })
    .await;
    assert!(running.sync.is_none());
    session.shutdown().await.unwrap();
}

#[tokio::test]
async fn crashed_node_is_restarted_and_repeated_crashes_fail_with_the_log() {
    let provider = Provider::start(2, |_| {}).await;
    // Crashes once, a second after start; the restart stays up.
    let once = provider
        .runtime("once")
        .env("FAKE_ERIGON_CRASH_AFTER_SECS", "1")
        .env("FAKE_ERIGON_CRASH_TIMES", "1")
        .start(r#"{"network":"mainnet"}"#)
        .await
        .unwrap();
    let recovered = wait_for(
        "a restart to show in STATUS",
        Duration::from_secs(20),
        || async {
            let s = once.status().await.ok()?;
            (s.restarts == 1 && matches!(s.state, NodeState::Syncing | NodeState::Running))
                .then_some(s)
        },
    )
    .await;
    assert!(recovered
        .error
        .as_deref()
        .unwrap()
        .contains("restarted 1 time"));
    block_through(&recovered, Some(auth(&recovered)))
        .await
        .unwrap();
    once.shutdown().await.unwrap();

    // Crashes every time: after max_restarts (2) it is failed, with the node's last words.
    let always = provider
        .runtime("always")
        .env("FAKE_ERIGON_CRASH_AFTER_SECS", "0.5")
        .start(r#"{"network":"mainnet"}"#)
        .await
        .unwrap();
    let failed = wait_for(
        "the node to be marked failed",
        Duration::from_secs(30),
        || async {
            let s = always.status().await.ok()?;
            (s.state == NodeState::Failed).then_some(s)
        },
    )
    .await;
    let reason = failed.error.unwrap();
    assert!(reason.contains("exited 3 times in a row"), "{reason}");
    assert!(
        reason.contains("panic: fake-erigon crash requested"),
        "{reason}"
    );
    assert_eq!(failed.restarts, 2);
    let health = always.health().await.unwrap();
    assert!(!health.healthy);
    always.shutdown().await.unwrap();
    assert!(provider.gateway_entries().is_empty());
}

#[tokio::test]
async fn erigon2_layout_runs_node_and_rpcdaemon_and_stops_both() {
    // fake-erigon plays both binaries of Erigon 2.60: `erigon --http=false …` and `rpcdaemon …`,
    // which reads the node's chain from the shared datadir and needs its private API.
    let dir = tempfile::tempdir().unwrap();
    let (erigon, rpcdaemon) = erigolem_test_utils::fake_erigon(dir.path(), "2.60.10", &[]);
    let provider = Provider::start(2, |c| {
        let e = c.engines.erigon.as_mut().unwrap();
        e.binary = erigon;
        e.rpcdaemon = Some(rpcdaemon);
    })
    .await;
    let offer = provider.runtime("o").offer_template().await.unwrap();
    // Hoodi came after Erigon 2.
    assert_eq!(
        offer["properties"]["erigolem.networks"],
        json!(["mainnet", "sepolia", "dev"])
    );
    assert_eq!(
        offer["properties"]["erigolem.prunes"],
        json!(["full", "archive"])
    );
    let session = provider
        .runtime("split")
        .start(r#"{"network":"sepolia"}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    assert_eq!(status.engine_version.as_deref(), Some("2.60.10"));
    block_through(&status, Some(auth(&status))).await.unwrap();
    let chain = rpc(&status.url, Some(auth(&status)), "eth_chainId", json!([]))
        .await
        .unwrap();
    assert_eq!(
        chain,
        json!("0xaa36a7"),
        "rpcdaemon serves the node's chain"
    );
    let pids = node_pids(&provider, status.instance.as_str());
    assert_eq!(pids.len(), 2, "erigon and rpcdaemon");
    session.shutdown().await.unwrap();
    for pid in pids {
        wait_dead(pid, Duration::from_secs(10)).await;
    }
    assert!(provider.gateway_entries().is_empty());
}

#[tokio::test]
async fn calls_to_a_dead_runtime_fail_instead_of_hanging() {
    let provider = Provider::start(2, |_| {}).await;
    let session = provider
        .runtime("dies")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    let nodes = node_pids(&provider, status.instance.as_str());
    kill(Pid::from_raw(session.pid() as i32), Signal::SIGKILL).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), session.status())
        .await
        .expect("STATUS hung")
        .unwrap_err();
    assert!(
        matches!(err, erigolem_runtime_client::ClientError::Exited { .. }),
        "{err}"
    );
    let err = tokio::time::timeout(Duration::from_secs(10), session.shutdown())
        .await
        .expect("shutdown hung")
        .unwrap_err();
    assert!(err.to_string().contains("exited"), "{err}");
    for pid in nodes {
        wait_dead(pid, Duration::from_secs(5)).await;
    }
}
