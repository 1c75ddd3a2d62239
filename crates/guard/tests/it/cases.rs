//! One behaviour per test, the hostile case next to the happy one.

use std::time::{Duration, Instant};

use erigolem_guard::{GuardLimits, Policy, PolicySettings};
use erigolem_primitives::{EngineKind, Mode};
use serde_json::json;

use crate::{basic, call, config, creds, next_text, post, send, spawn, websocket, Node, PASSWORD};

#[tokio::test]
async fn a_known_mix_is_forwarded_and_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start().await;
    let (guard, socket) = spawn(config(dir.path(), &node, Mode::Dedicated));
    let mut sent = Vec::new();
    for (i, method) in [
        "eth_blockNumber",
        "eth_blockNumber",
        "eth_blockNumber",
        "eth_call",
        "eth_call",
        "fail_me",
    ]
    .iter()
    .enumerate()
    {
        let body = json!({"jsonrpc":"2.0","id":i,"method":method,"params":[]}).to_string();
        let answer = call(&socket, &body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let v = answer.json();
        assert_eq!(v["id"], i);
        if *method == "fail_me" {
            assert_eq!(v["error"]["code"], -32000);
        } else {
            assert_eq!(v["result"], *method, "the node's own answer");
        }
        sent.push(body);
    }
    let batch = r#"[{"jsonrpc":"2.0","id":10,"method":"eth_chainId"},{"jsonrpc":"2.0","id":11,"method":"eth_getBalance","params":["0x0","latest"]}]"#;
    let answer = call(&socket, batch).await.json();
    assert_eq!(answer.as_array().unwrap().len(), 2);
    sent.push(batch.to_owned());
    // The node got exactly what was sent, byte for byte.
    assert_eq!(node.received(), sent);

    let usage = guard.usage();
    assert_eq!(usage.requests, 8);
    assert_eq!(guard.requests(), 8);
    let methods: Vec<(&str, u64)> = usage
        .methods
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        methods,
        [
            ("eth_blockNumber", 3),
            ("eth_call", 2),
            ("eth_chainId", 1),
            ("eth_getBalance", 1),
            ("fail_me", 1)
        ]
    );
    assert_eq!(usage.errors, 1);
    assert_eq!(usage.refused.total(), 0);
    assert_eq!(usage.http_requests, 7);
    assert_eq!(
        usage.bytes_in,
        sent.iter().map(|s| s.len() as u64).sum::<u64>()
    );
    assert!(usage.bytes_out > 0);
    assert_eq!(usage.latency.total(), 7, "one per HTTP request");
}

#[tokio::test]
async fn refused_methods_never_reach_the_node_one_call_or_in_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start().await;
    let mut c = config(dir.path(), &node, Mode::Dedicated);
    c.policy = Policy::new(
        EngineKind::Anvil,
        Mode::Dedicated,
        &PolicySettings::default(),
        Some(vec!["eth_*".parse().unwrap(), "anvil_*".parse().unwrap()]),
    );
    let (guard, socket) = spawn(c);
    let fork = r#"{"jsonrpc":"2.0","id":1,"method":"anvil_reset","params":[{"forking":{"jsonRpcUrl":"http://127.0.0.1:1/"}}]}"#;
    let cases = [
        (fork, "makes the node fetch state from a URL"),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"anvil_setRpcUrl","params":["http://127.0.0.1:1/"]}"#,
            "fetch state from a URL",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"admin_peers"}"#,
            "administers the node",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"net_version"}"#,
            "not in this endpoint's allowlist",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"anvil\u005fsetRpcUrl","params":["http://x"]}"#,
            "fetch state from a URL",
        ),
    ];
    for (body, says) in cases {
        let a = call(&socket, body).await;
        assert_eq!(a.status, 200, "{body}");
        let v = a.json();
        assert_eq!(v["id"], 1, "{body}");
        assert_eq!(v["error"]["code"], -32601, "{body}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","method":"anvil_setRpcUrl"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth chainId"}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
    ] {
        let a = call(&socket, body).await;
        assert_eq!(a.status, 400, "{body}");
        assert_eq!(a.json()["error"]["code"], -32600, "{body}");
    }
    let a = call(&socket, "{not json").await;
    assert_eq!(
        (a.status, a.json()["error"]["code"].as_i64()),
        (400, Some(-32700))
    );
    assert_eq!(call(&socket, "[]").await.status, 400);
    assert!(node.received().is_empty(), "{:?}", node.received());

    // A denied call hidden in a batch: the rest goes on, the denied one is answered here.
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},{"jsonrpc":"2.0","id":2,"method":"anvil_setRpcUrl","params":["http://x"]},{"jsonrpc":"2.0","method":"anvil_reset","params":[{"forking":{}}]},{"jsonrpc":"2.0","id":3,"method":"eth_blockNumber"}]"#;
    let a = call(&socket, batch).await;
    assert_eq!(a.status, 200);
    let answers = a.json();
    let mut by_id: Vec<(i64, bool)> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["id"].as_i64().unwrap(), v.get("error").is_some()))
        .collect();
    by_id.sort();
    assert_eq!(by_id, [(1, false), (2, true), (3, false)]);
    assert_eq!(node.methods(), ["eth_chainId", "eth_blockNumber"]);
    // All of a batch refused: nothing at all reaches the node.
    let a = call(&socket, r#"[{"jsonrpc":"2.0","id":5,"method":"admin_peers"},{"jsonrpc":"2.0","id":6,"method":"personal_sign"}]"#).await;
    assert_eq!(a.json().as_array().unwrap().len(), 2);
    assert_eq!(node.methods(), ["eth_chainId", "eth_blockNumber"]);

    let usage = guard.usage();
    assert_eq!(usage.requests, 2);
    assert_eq!(usage.refused.method, 5 + 2 + 2);
    assert_eq!(usage.refused.invalid, 5);
}

#[tokio::test]
async fn credentials_are_checked_by_the_guard_and_replaced_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start().await;
    let (guard, socket) = spawn(config(dir.path(), &node, Mode::Dedicated));
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#;
    for headers in [
        vec![],
        vec![("authorization", basic("wrong"))],
        vec![("authorization", "Bearer x".to_owned())],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = post(&socket, &h, body).await;
        assert_eq!(a.status, 401, "{headers:?}");
        assert!(a.body.contains("unauthorized"));
    }
    assert_eq!(call(&socket, body).await.status, 200);
    guard.set_credentials(&creds("the-new-password-1234567"));
    assert_eq!(
        call(&socket, body).await.status,
        401,
        "the old password is refused at once"
    );
    let a = post(
        &socket,
        &[("authorization", &basic("the-new-password-1234567"))],
        body,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(guard.usage().refused.auth, 4);
    assert_eq!(node.received().len(), 2);
}

#[tokio::test]
async fn rotation_closes_sockets_and_requests_of_the_old_password_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start().await;
    let (guard, socket) = spawn(config(dir.path(), &node, Mode::Dedicated));
    let mut old = websocket(&socket, PASSWORD).await.unwrap();
    send(
        &mut old,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#,
    )
    .await;
    assert_eq!(
        next_text(&mut old, Duration::from_secs(2)).await.unwrap()["result"],
        "0xsub1"
    );
    let note = next_text(&mut old, Duration::from_secs(2)).await.unwrap();
    assert_eq!(note["method"], "eth_subscription");
    // An HTTP call in flight with the old password.
    let slow = tokio::spawn({
        let socket = socket.clone();
        async move { call(&socket, r#"{"jsonrpc":"2.0","id":9,"method":"slow"}"#).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let new = "a-brand-new-password-42";
    let rotated = Instant::now();
    guard.set_credentials(&creds(new));
    // The old socket is closed with a reason, at once; nothing comes after.
    let end = until_closed(&mut old, rotated).await;
    assert!(end.contains("credentials revoked"), "{end}");
    assert!(
        rotated.elapsed() < Duration::from_secs(1),
        "{:?}",
        rotated.elapsed()
    );
    let cut = tokio::time::timeout(Duration::from_secs(2), slow)
        .await
        .expect("hung");
    assert!(
        cut.is_err(),
        "the in-flight request of the old password got an answer"
    );
    assert!(
        websocket(&socket, PASSWORD).await.is_err(),
        "old password refused"
    );

    // With the new password: a socket that keeps working, and survives another tenant-free rotation of nothing else.
    let mut fresh = websocket(&socket, new).await.unwrap();
    send(
        &mut fresh,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#,
    )
    .await;
    assert_eq!(
        next_text(&mut fresh, Duration::from_secs(2)).await.unwrap()["result"],
        "0xsub1"
    );
    assert_eq!(guard.usage().open_websockets, 1);
    // Stop: every socket ends, the socket file is gone.
    let stopped = Instant::now();
    guard.shutdown().await;
    let end = until_closed(&mut fresh, stopped).await;
    assert!(end.contains("stopped") || end.contains("closed"), "{end}");
    assert!(!socket.exists());
}

/// Reads until the socket closes (notifications in flight may still come); panics if it still
/// delivers a second after `since`. Returns the close reason.
async fn until_closed(ws: &mut crate::Ws, since: Instant) -> String {
    loop {
        let left = (since + Duration::from_secs(1)).saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the socket still delivers a second later");
        match next_text(ws, left).await {
            Ok(v) => assert_eq!(
                v["method"], "eth_subscription",
                "only notifications in flight"
            ),
            Err(e) if e == "nothing" => panic!("the socket still delivers a second later"),
            Err(e) => return e,
        }
    }
}

#[tokio::test]
async fn limits_answer_at_once_over_http_and_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start().await;
    let mut c = config(dir.path(), &node, Mode::Dedicated);
    c.limits = GuardLimits {
        requests_per_sec: 1,
        burst: 5,
        max_concurrent: 1,
        max_body_bytes: 300,
        max_batch: 3,
        max_websockets: 1,
        call_timeout_secs: 5,
    };
    let (guard, socket) = spawn(c);
    let one = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#;
    // Body and batch size.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_call","params":["{}"]}}"#,
        "a".repeat(400)
    );
    let a = call(&socket, &big).await;
    assert_eq!(
        (a.status, a.json()["error"]["code"].as_i64()),
        (413, Some(-32005))
    );
    let four = format!("[{one},{one},{one},{one}]");
    let a = call(&socket, &four).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.json().as_array().unwrap().len(), 4);
    // Concurrency: one slow call holds the only slot; the next is refused, not queued.
    let slow = tokio::spawn({
        let socket = socket.clone();
        async move { call(&socket, r#"{"jsonrpc":"2.0","id":1,"method":"slow"}"#).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let a = call(&socket, one).await;
    assert_eq!(a.status, 429);
    assert!(a.body.contains("concurrent"), "{}", a.body);
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "it waited for the slot"
    );
    assert_eq!(slow.await.unwrap().status, 200);
    // Rate: 5 calls of burst used 2 so far (slow + refused one); 3 more pass, then refusals.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(call(&socket, one).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // Over one WebSocket: the rate limit counts its messages too.
    let mut ws = websocket(&socket, PASSWORD).await.unwrap();
    for id in 0..3 {
        send(
            &mut ws,
            &format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_chainId"}}"#),
        )
        .await;
    }
    for id in 0..3 {
        let v = next_text(&mut ws, Duration::from_secs(2)).await.unwrap();
        assert_eq!(v["id"], id);
        assert_eq!(v["error"]["code"], -32005, "{v}");
    }
    // A second WebSocket is over max_websockets.
    assert!(websocket(&socket, PASSWORD)
        .await
        .unwrap_err()
        .contains("429"));
    let usage = guard.usage();
    assert_eq!(usage.refused.size, 1);
    assert_eq!(usage.refused.batch, 4);
    assert_eq!(usage.refused.concurrency, 1);
    assert_eq!(usage.refused.rate, 2 + 3);
    assert_eq!(usage.refused.websockets, 1);
    assert_eq!(
        node.methods(),
        ["slow", "eth_chainId", "eth_chainId", "eth_chainId"]
    );
}

#[tokio::test]
async fn websocket_calls_are_screened_and_counted_like_http() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start().await;
    let (guard, socket) = spawn(config(dir.path(), &node, Mode::Shared));
    let mut ws = websocket(&socket, PASSWORD).await.unwrap();
    send(
        &mut ws,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}"#,
    )
    .await;
    assert_eq!(
        next_text(&mut ws, Duration::from_secs(2)).await.unwrap()["result"],
        "eth_blockNumber"
    );
    send(&mut ws, r#"{"jsonrpc":"2.0","id":2,"method":"anvil_mine"}"#).await;
    let v = next_text(&mut ws, Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        (v["id"].as_i64(), v["error"]["code"].as_i64()),
        (Some(2), Some(-32601))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("every tenant"),
        "{v}"
    );
    send(&mut ws, r#"[{"jsonrpc":"2.0","id":3,"method":"debug_traceCall"},{"jsonrpc":"2.0","id":4,"method":"eth_chainId"},{"jsonrpc":"2.0","id":5,"method":"fail_me"}]"#).await;
    let v = next_text(&mut ws, Duration::from_secs(2)).await.unwrap();
    let mut ids: Vec<i64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [3, 4, 5],
        "the refused call's error joins the node's answer"
    );
    send(&mut ws, "not json").await;
    assert_eq!(
        next_text(&mut ws, Duration::from_secs(2)).await.unwrap()["error"]["code"],
        -32700
    );
    assert_eq!(
        node.methods(),
        ["eth_blockNumber", "eth_chainId", "fail_me"]
    );
    let usage = guard.usage();
    assert_eq!(usage.requests, 3);
    assert_eq!(usage.errors, 1);
    assert_eq!((usage.refused.method, usage.refused.invalid), (2, 1));
    assert_eq!((usage.ws_messages_in, usage.ws_messages_out), (4, 4));
    assert_eq!(usage.latency.total(), 3, "one per answered WebSocket call");
    assert_eq!(usage.open_websockets, 1);
    drop(ws);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(guard.usage().open_websockets, 0);
}

#[tokio::test]
async fn origin_and_address_allowlists() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start().await;
    let mut c = config(dir.path(), &node, Mode::Dedicated);
    c.allow_origins = Some(vec!["https://app.example.org".parse().unwrap()]);
    c.allow_ips = Some(vec!["10.0.0.0/8".parse().unwrap()]);
    let (guard, socket) = spawn(c);
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#;
    let auth = basic(PASSWORD);
    let cases: [(&[(&str, &str)], u16); 6] = [
        (
            &[
                ("x-erigolem-client-ip", "10.1.2.3"),
                ("origin", "https://app.example.org"),
            ],
            200,
        ),
        (
            &[
                ("x-erigolem-client-ip", "10.1.2.3"),
                ("origin", "https://evil.example.org"),
            ],
            403,
        ),
        (&[("x-erigolem-client-ip", "10.1.2.3")], 403),
        (
            &[
                ("x-erigolem-client-ip", "192.168.1.1"),
                ("origin", "https://app.example.org"),
            ],
            403,
        ),
        (&[("origin", "https://app.example.org")], 403),
        (
            &[
                ("x-erigolem-client-ip", "not-an-ip"),
                ("origin", "https://app.example.org"),
            ],
            403,
        ),
    ];
    for (headers, want) in cases {
        let mut h = vec![("authorization", auth.as_str())];
        h.extend_from_slice(headers);
        let a = post(&socket, &h, body).await;
        assert_eq!(a.status, want, "{headers:?}: {}", a.body);
    }
    let usage = guard.usage();
    assert_eq!((usage.refused.origin, usage.refused.ip), (2, 3));
    assert_eq!(node.received().len(), 1);
}

#[tokio::test]
async fn a_node_that_is_down_is_an_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start().await;
    let mut c = config(dir.path(), &node, Mode::Dedicated);
    drop(node);
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.node = format!("127.0.0.1:{}", free_port());
    let (guard, socket) = spawn(c);
    let a = tokio::time::timeout(
        Duration::from_secs(5),
        call(
            &socket,
            r#"{"jsonrpc":"2.0","id":4,"method":"eth_chainId"}"#,
        ),
    )
    .await
    .expect("hung");
    assert_eq!(a.status, 502);
    assert_eq!(a.json()["id"], 4);
    assert!(websocket(&socket, PASSWORD)
        .await
        .unwrap_err()
        .contains("502"));
    assert_eq!(guard.usage().errors, 1);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_socket_replaces_a_stale_one_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start().await;
    let c = config(dir.path(), &node, Mode::Dedicated);
    drop(std::os::unix::net::UnixListener::bind(&c.socket).unwrap());
    let (guard, socket) = spawn(c.clone());
    assert_eq!(
        call(
            &socket,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#
        )
        .await
        .status,
        200
    );
    drop(guard);
    assert!(!socket.exists(), "dropping the guard removes its socket");
    std::fs::write(&socket, "precious").unwrap();
    let err = erigolem_guard::Guard::spawn(c.clone()).unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "precious");
    let mut long = c;
    long.socket = dir.path().join("x".repeat(120));
    let err = erigolem_guard::Guard::spawn(long).unwrap_err();
    assert!(err.to_string().contains("at most 107"), "{err}");
}
