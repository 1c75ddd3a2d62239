//! The endpoint as users and strangers meet it, through the real Nginx (static site) and the
//! runtime's endpoint guard: revocation of open sockets, no Nginx reloads, method policy (asserted
//! on the node's side), limits, allowlists and metering in STATUS.

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use erigolem_gateway::Gateway;
use erigolem_guard::GuardLimits;
use erigolem_primitives::{Credentials, Mode, Network, NodeStatus};
use erigolem_runtime_client::Session;
use erigolem_test_utils::{rpc, Anvil, AnvilOptions, Provider, RpcError};
use serde_json::{json, Value};

use crate::{
    auth, block_through, closed_within, next_head, node_port, subscribe_heads, ws_call, ws_connect,
};

fn creds(c: &Credentials) -> (&str, &str) {
    (c.user.as_str(), c.password.expose())
}

/// A shared dev node (the test's own anvil, a block every 200 ms) behind a provider.
async fn shared_provider() -> (Anvil, Provider) {
    let anvil = Anvil::start_with(AnvilOptions {
        block_time_ms: Some(200),
        ..AnvilOptions::default()
    })
    .await;
    let url = anvil.url();
    let provider = Provider::start(2, move |c| {
        c.shared.insert(Network::Dev, url);
    })
    .await;
    (anvil, provider)
}

/// Nginx's master and workers, to show they never change.
fn nginx_pids(provider: &Provider) -> (u32, Vec<u32>) {
    let gw = Gateway::new(provider.nginx.gateway.clone());
    (gw.master_pid().unwrap(), gw.worker_pids().unwrap())
}

/// Heads keep coming on `ws` (at least `n` more).
async fn keeps_receiving(ws: &mut crate::Ws, n: usize, who: &str) {
    for _ in 0..n {
        next_head(ws, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{who}'s socket was cut: {e}"));
    }
}

/// ROTATE, then stop, of tenant A while tenant B's socket stays open: A's sockets and keep-alive
/// connection opened with old credentials stop getting answers within 1 s, the old credentials
/// get 401, the new ones work; B never misses a head.
async fn revocation(provider: &Provider, a: Session, b: &Session, heads: usize) {
    let (sa, sb) = (a.status().await.unwrap(), b.status().await.unwrap());
    let before = nginx_pids(provider);
    let mut ws_b = ws_connect(&sb, auth(&sb), &[]).await.unwrap();
    subscribe_heads(&mut ws_b).await;
    let mut ws_a = ws_connect(&sa, auth(&sa), &[]).await.unwrap();
    subscribe_heads(&mut ws_a).await;
    next_head(&mut ws_a, Duration::from_secs(5)).await.unwrap();
    // A keep-alive connection with the old credentials (one client, one pooled connection).
    let keep_alive = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let keep_alive_call = |c: (String, String)| {
        let client = keep_alive.clone();
        let url = sa.url.clone();
        async move {
            client
                .post(url)
                .basic_auth(c.0, Some(c.1))
                .json(&json!({"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    let old = (sa.auth.user.clone(), sa.auth.password.expose().to_owned());
    assert_eq!(keep_alive_call(old.clone()).await.unwrap(), 200);

    let rotated_at = Instant::now();
    let new = a.rotate().await.unwrap();
    let (took, reason) = closed_within(&mut ws_a, rotated_at, Duration::from_secs(1)).await;
    eprintln!("ROTATE: old socket closed after {took:?} ({reason})");
    assert_eq!(keep_alive_call(old.clone()).await.unwrap(), 401);
    assert!(matches!(
        block_through(&sa, Some(creds(&sa.auth))).await,
        Err(RpcError::Http(401))
    ));
    assert!(ws_connect(&sa, creds(&sa.auth), &[]).await.is_err());
    block_through(&sa, Some(creds(&new))).await.unwrap();
    let mut ws_a2 = ws_connect(&sa, creds(&new), &[]).await.unwrap();
    subscribe_heads(&mut ws_a2).await;
    next_head(&mut ws_a2, Duration::from_secs(5)).await.unwrap();
    keeps_receiving(&mut ws_b, heads, "tenant B (after A's rotate)").await;

    // The final count reaches the exe-unit side even for calls just before the stop.
    let counted = a.status().await.unwrap().usage.unwrap().requests;
    block_through(&sa, Some(creds(&new))).await.unwrap();
    block_through(&sa, Some(creds(&new))).await.unwrap();
    let counters = a.counters();
    let stopped_at = Instant::now();
    a.shutdown().await.unwrap();
    assert_eq!(
        counters.get("golem.usage.erigolem.requests"),
        Some((counted + 2) as f64)
    );
    let (took, reason) = closed_within(&mut ws_a2, stopped_at, Duration::from_secs(1)).await;
    eprintln!("stop: socket closed after {took:?} ({reason})");
    let after = block_through(&sa, Some(creds(&new))).await;
    assert!(matches!(after, Err(RpcError::Http(401 | 404))), "{after:?}");
    keeps_receiving(&mut ws_b, heads, "tenant B (after A's stop)").await;
    block_through(&sb, Some(auth(&sb))).await.unwrap();
    assert_eq!(nginx_pids(provider), before, "Nginx was reloaded");
}

#[tokio::test]
async fn shared_node_rotate_and_stop_cut_only_their_own_tenants_sockets() {
    let (_anvil, provider) = shared_provider().await;
    let a = provider
        .runtime("a")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    let b = provider
        .runtime("b")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    assert_eq!(a.status().await.unwrap().mode, Mode::Shared);
    revocation(&provider, a, &b, 3).await;
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn dedicated_node_rotate_and_stop_cut_only_their_own_tenants_sockets() {
    let provider = Provider::start(2, |_| {}).await;
    let a = provider
        .runtime("a")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    let b = provider
        .runtime("b")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    assert_eq!(a.status().await.unwrap().mode, Mode::Dedicated);
    revocation(&provider, a, &b, 1).await;
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn nginx_is_never_reloaded_across_twenty_starts_rotates_and_stops() {
    let (_anvil, provider) = shared_provider().await;
    let before = nginx_pids(&provider);
    let mut ws_keeper = None;
    for i in 0..7 {
        let mode = if i == 0 { "dedicated" } else { "shared" };
        let session = provider
            .runtime(&format!("r{i}"))
            .start(&format!(r#"{{"network":"dev","mode":"{mode}"}}"#))
            .await
            .unwrap();
        let status = session.status().await.unwrap();
        block_through(&status, Some(auth(&status))).await.unwrap();
        let new = session.rotate().await.unwrap();
        block_through(&status, Some(creds(&new))).await.unwrap();
        if i == 6 {
            // The last one stays, with a socket open across the others' changes.
            let mut ws = ws_connect(&status, creds(&new), &[]).await.unwrap();
            subscribe_heads(&mut ws).await;
            ws_keeper = Some((session, ws));
            break;
        }
        session.shutdown().await.unwrap();
        assert_eq!(nginx_pids(&provider), before, "after start/rotate/stop {i}");
    }
    assert_eq!(nginx_pids(&provider), before);
    let (session, mut ws) = ws_keeper.unwrap();
    next_head(&mut ws, Duration::from_secs(5)).await.unwrap();
    session.shutdown().await.unwrap();
    assert_eq!(nginx_pids(&provider), before);
    assert!(provider.gateway_entries().is_empty() && provider.sockets().is_empty());
}

/// A TCP listener that counts the connections made to it: the URL a fork attempt would fetch.
struct Trap {
    url: String,
    hits: Arc<AtomicUsize>,
}

impl Trap {
    fn start() -> Trap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                counted.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut s) = stream {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                }
            }
        });
        Trap { url, hits }
    }
}

async fn call(status: &NodeStatus, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(&status.url)
        .basic_auth(&status.auth.user, Some(status.auth.password.expose()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn node_info(url: &str) -> Value {
    rpc(url, None, "anvil_nodeInfo", json!([])).await.unwrap()
}

#[tokio::test]
async fn methods_that_reach_out_or_are_not_allowed_never_reach_the_node() {
    // A shared anvil the test can look at directly, mining on demand.
    let anvil = Anvil::start(None).await;
    let url = anvil.url();
    let provider = Provider::start(2, {
        let url = url.clone();
        move |c| {
            c.shared.insert(Network::Dev, url);
        }
    })
    .await;
    let trap = Trap::start();
    let session = provider
        .runtime("p")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    let info = node_info(&url).await;
    let fork = json!([{"forking": {"jsonRpcUrl": trap.url, "blockNumber": 1}}]);
    for (method, params) in [
        ("anvil_reset", fork.clone()),
        ("hardhat_reset", fork.clone()),
        ("anvil_setRpcUrl", json!([trap.url])),
        ("anvil_mine", json!(["0x5"])),
        ("evm_setNextBlockTimestamp", json!([1])),
        ("admin_nodeInfo", json!([])),
        ("debug_traceCall", json!([{}, "latest"])),
    ] {
        let (code, answer) = call(
            &status,
            json!({"jsonrpc":"2.0","id":7,"method":method,"params":params}),
        )
        .await;
        assert_eq!(code, 200, "{method}: {answer}");
        assert_eq!(answer["id"], 7, "{method}: {answer}");
        assert_eq!(answer["error"]["code"], -32601, "{method}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(method),
            "{method}: {answer}"
        );
    }
    // Hidden in a batch: the others are answered by the node, the denied one here.
    let (code, answers) = call(
        &status,
        json!([
            {"jsonrpc":"2.0","id":1,"method":"eth_chainId"},
            {"jsonrpc":"2.0","id":2,"method":"anvil_setRpcUrl","params":[trap.url]},
            {"jsonrpc":"2.0","id":3,"method":"anvil_mine","params":["0x1"]},
            {"jsonrpc":"2.0","id":4,"method":"eth_blockNumber"}
        ]),
    )
    .await;
    assert_eq!(code, 200);
    let by_id = |id: i64| {
        answers
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no answer for {id}: {answers}"))
    };
    assert_eq!(by_id(1)["result"], "0x7a69");
    assert_eq!(by_id(2)["error"]["code"], -32601);
    assert_eq!(by_id(3)["error"]["code"], -32601);
    assert_eq!(by_id(4)["result"], "0x0");
    // Over the WebSocket too.
    let mut ws = ws_connect(&status, auth(&status), &[]).await.unwrap();
    let answer = ws_call(
        &mut ws,
        json!({"jsonrpc":"2.0","id":9,"method":"anvil_reset","params":fork}),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32601, "{answer}");

    // The node's side: nothing reached it — no fork, no mined block, no connection to the URL.
    assert_eq!(node_info(&url).await, info);
    assert_eq!(
        rpc(&url, None, "eth_blockNumber", json!([])).await.unwrap(),
        "0x0"
    );
    assert_eq!(
        trap.hits.load(Ordering::SeqCst),
        0,
        "the node fetched from the URL"
    );
    let usage = session.status().await.unwrap().usage.unwrap();
    assert_eq!(usage.refused.method, 7 + 2 + 1);
    session.shutdown().await.unwrap();

    // A requestor's allowlist on a dedicated node: what is not in it never reaches the node;
    // anvil_reset without a fork config is a dev chain's own business and passes.
    let session = provider
        .runtime("q")
        .start(r#"{"network":"dev","mode":"dedicated","methods":["eth_blockNumber","anvil_*"]}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    let node = format!(
        "http://127.0.0.1:{}",
        node_port(&provider, status.instance.as_str())
    );
    let before = rpc(
        &node,
        None,
        "eth_getBalance",
        json!(["0x0000000000000000000000000000000000000001", "latest"]),
    )
    .await
    .unwrap();
    let (_, answer) = call(
        &status,
        json!({"jsonrpc":"2.0","id":1,"method":"eth_sendTransaction","params":[{"from":"0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266","to":"0x0000000000000000000000000000000000000001","value":"0x1"}]}),
    )
    .await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not in this endpoint's allowlist"),
        "{answer}"
    );
    assert_eq!(
        rpc(
            &node,
            None,
            "eth_getBalance",
            json!(["0x0000000000000000000000000000000000000001", "latest"])
        )
        .await
        .unwrap(),
        before,
        "the transaction reached the node"
    );
    let (_, answer) = call(
        &status,
        json!({"jsonrpc":"2.0","id":2,"method":"anvil_reset","params":[]}),
    )
    .await;
    assert_eq!(answer["result"], Value::Null, "{answer}");
    assert!(answer.get("error").is_none(), "{answer}");
    let (_, answer) = call(
        &status,
        json!({"jsonrpc":"2.0","id":3,"method":"anvil_reset","params":fork}),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
    assert_eq!(trap.hits.load(Ordering::SeqCst), 0);
    session.shutdown().await.unwrap();
}

#[tokio::test]
async fn bursts_over_the_limits_are_refused_at_once_over_http_and_one_websocket() {
    let provider = Provider::start(1, |c| {
        c.guard.dedicated = GuardLimits {
            requests_per_sec: 5,
            burst: 10,
            max_concurrent: 64,
            max_body_bytes: 4096,
            max_batch: 5,
            max_websockets: 2,
            call_timeout_secs: 10,
        };
    })
    .await;
    let session = provider
        .runtime("l")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let burst = (0..30).map(|i| {
        let client = client.clone();
        let status = status.clone();
        async move {
            let resp = client
                .post(&status.url)
                .basic_auth(&status.auth.user, Some(status.auth.password.expose()))
                .json(&json!({"jsonrpc":"2.0","id":i,"method":"eth_blockNumber","params":[]}))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .expect("a request hung or failed");
            let code = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            (code, body)
        }
    });
    let answers = futures::future::join_all(burst).await;
    let ok = answers.iter().filter(|(c, _)| *c == 200).count();
    let limited: Vec<_> = answers.iter().filter(|(c, _)| *c == 429).collect();
    // The burst, plus 5 a second for as long as the 30 took on this machine.
    let most = 10 + (5.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    assert!(
        (5..=most).contains(&ok),
        "{ok} passed, at most {most} expected"
    );
    assert_eq!(ok + limited.len(), 30);
    for (_, body) in &limited {
        assert_eq!(body["error"]["code"], -32005, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests per second"));
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // One WebSocket sending as fast as it can: refused calls are answered, in order, at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ws = ws_connect(&status, auth(&status), &[]).await.unwrap();
    let mut refused = 0;
    let sending = Instant::now();
    for id in 0..40 {
        let a = ws_call(
            &mut ws,
            json!({"jsonrpc":"2.0","id":id,"method":"eth_chainId"}),
        )
        .await;
        if a["error"]["code"] == -32005 {
            refused += 1;
        } else {
            assert_eq!(a["result"], "0x539", "{a}");
        }
    }
    let passed_at_most = 10 + (5.0 * sending.elapsed().as_secs_f64()).ceil() as usize;
    assert!(
        refused > 0 && refused + passed_at_most >= 40,
        "only {refused} of 40 refused"
    );
    // Batch and body size.
    let batch: Vec<Value> = (0..6)
        .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"eth_chainId"}))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, _) = call(&status, Value::Array(batch)).await;
    assert_eq!(code, 429);
    let (code, body) = call(
        &status,
        json!({"jsonrpc":"2.0","id":1,"method":"eth_call","params":["x".repeat(5000)]}),
    )
    .await;
    assert_eq!(
        (code, body["error"]["code"].as_i64()),
        (413, Some(-32005)),
        "{body}"
    );
    let usage = session.status().await.unwrap().usage.unwrap();
    assert_eq!(usage.refused.rate, (limited.len() + refused) as u64);
    assert_eq!((usage.refused.batch, usage.refused.size), (6, 1));
    session.shutdown().await.unwrap();
}

#[tokio::test]
async fn status_counts_a_known_mix_exactly_and_the_runtime_reports_the_golem_counter() {
    let provider = Provider::start(1, |_| {}).await;
    let session = provider
        .runtime("m")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    assert_eq!(status.usage.as_ref().unwrap().requests, 0);
    for i in 0..5 {
        call(
            &status,
            json!({"jsonrpc":"2.0","id":i,"method":"eth_blockNumber"}),
        )
        .await;
    }
    for i in 0..3 {
        call(
            &status,
            json!({"jsonrpc":"2.0","id":i,"method":"eth_chainId"}),
        )
        .await;
    }
    call(
        &status,
        json!([
            {"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266","latest"]},
            {"jsonrpc":"2.0","id":2,"method":"eth_gasPrice"},
            {"jsonrpc":"2.0","id":3,"method":"admin_peers"}
        ]),
    )
    .await;
    call(
        &status,
        json!({"jsonrpc":"2.0","id":1,"method":"personal_sign","params":[]}),
    )
    .await;
    call(&status, json!({"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":["0xffffff", false]})).await;
    let (code, answer) = call(&status, json!({"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"to":"0x0000000000000000000000000000000000000001","data":"0x"}, "0xbad"]})).await;
    assert_eq!(code, 200);
    assert!(
        answer.get("error").is_some(),
        "anvil refuses a bad block tag: {answer}"
    );
    assert!(matches!(
        block_through(&status, Some((auth(&status).0, "wrong"))).await,
        Err(RpcError::Http(401))
    ));
    let mut ws = ws_connect(&status, auth(&status), &[]).await.unwrap();
    ws_call(
        &mut ws,
        json!({"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}),
    )
    .await;

    let usage = session.status().await.unwrap().usage.unwrap();
    let methods: Vec<(&str, u64)> = usage
        .methods
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        methods,
        [
            ("eth_blockNumber", 6),
            ("eth_call", 1),
            ("eth_chainId", 3),
            ("eth_gasPrice", 1),
            ("eth_getBalance", 1),
            ("eth_getBlockByNumber", 1),
        ]
    );
    assert_eq!(usage.requests, 13);
    assert_eq!(usage.errors, 1, "the eth_call anvil refused");
    assert_eq!(usage.refused.method, 2);
    assert_eq!(
        usage.http_requests,
        5 + 3 + 1 + 1 + 1 + 1 + 1,
        "401s are Nginx's, the upgrade is one"
    );
    assert_eq!((usage.ws_messages_in, usage.ws_messages_out), (1, 1));
    assert_eq!(usage.open_websockets, 1);
    assert_eq!(usage.latency.total(), 5 + 3 + 1 + 1 + 1 + 1);
    // The Golem usage counter follows (reported about every second).
    let counter =
        erigolem_test_utils::wait_for("the request counter", Duration::from_secs(5), || async {
            session
                .counter("golem.usage.erigolem.requests")
                .filter(|v| *v == 13.0)
        })
        .await;
    assert_eq!(counter, 13.0);
    // Calls right before the end still count: the runtime reports the final count before it
    // answers Shutdown.
    let counters = session.counters();
    for i in 0..3 {
        call(
            &status,
            json!({"jsonrpc":"2.0","id":i,"method":"eth_chainId"}),
        )
        .await;
    }
    drop(ws);
    session.shutdown().await.unwrap();
    assert_eq!(counters.get("golem.usage.erigolem.requests"), Some(16.0));
}

#[tokio::test]
async fn origin_and_address_allowlists_come_from_start_args_and_cannot_be_spoofed() {
    let provider = Provider::start(2, |_| {}).await;
    let far = provider
        .runtime("far")
        .start(r#"{"network":"dev","allow_ips":["203.0.113.7"]}"#)
        .await
        .unwrap();
    let near = provider
        .runtime("near")
        .start(r#"{"network":"dev","allow_ips":["127.0.0.0/8"],"allow_origins":["https://app.example.org"]}"#)
        .await
        .unwrap();
    let (sf, sn) = (far.status().await.unwrap(), near.status().await.unwrap());
    let client = reqwest::Client::new();
    let post = |status: &NodeStatus, headers: &[(&str, &str)]| {
        let mut req = client
            .post(&status.url)
            .basic_auth(&status.auth.user, Some(status.auth.password.expose()))
            .json(&json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let spoof = [
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Real-IP", "203.0.113.7"),
        ("X-Erigolem-Client-Ip", "203.0.113.7"),
        ("Forwarded", "for=203.0.113.7"),
    ];
    let r = post(&sf, &spoof).await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("127.0.0.1 is not in this endpoint's allow_ips"),
        "{body}"
    );
    assert!(ws_connect(&sf, auth(&sf), &spoof)
        .await
        .unwrap_err()
        .contains("403"));

    let origin = [("Origin", "https://app.example.org")];
    assert_eq!(post(&sn, &origin).await.unwrap().status(), 200);
    assert_eq!(
        post(&sn, &[("Origin", "https://evil.example.org")])
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(post(&sn, &[]).await.unwrap().status(), 403, "no Origin");
    let mut ws = ws_connect(&sn, auth(&sn), &origin).await.unwrap();
    let a = ws_call(
        &mut ws,
        json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId"}),
    )
    .await;
    assert_eq!(a["result"], "0x539", "the dev chain's id");
    assert!(
        ws_connect(&sn, auth(&sn), &[("Origin", "https://evil.example.org")])
            .await
            .is_err()
    );
    let usage = near.status().await.unwrap().usage.unwrap();
    assert_eq!(usage.refused.origin, 3);
    drop(ws);
    far.shutdown().await.unwrap();
    near.shutdown().await.unwrap();
}
