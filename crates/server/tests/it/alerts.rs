//! Alerts and webhooks over real HTTP: a node made to fall behind (fake-erigon behind the real
//! runtime and Nginx) fires one lag alert, delivered once, signed, to a real HTTP receiver started
//! here; a receiver that fails twice gets the third attempt; a restart in the middle of the
//! retries loses nothing; a slow receiver times out; bad and private webhook URLs are refused by
//! default; nobody sees another user's webhook, deliveries or alerts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use erigolem_server::{spawn, Handle, ServerConfig, WebhookConfig};
use erigolem_test_utils::fake_erigon;
use erigolem_test_utils::wallet::{DEV_KEY_0, DEV_KEY_1};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::nodes::{local, server_with_nodes, Api};

/// Polls `f` ten times a second until it answers (under the server's per-address rate limit of
/// 50 requests a second: faster polling would be refused with 429, and so would the next
/// request of the test).
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    erigolem_test_utils::wait_for_every(what, timeout, Duration::from_millis(100), f).await
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    signature: String,
    delivery: String,
    event: String,
    body: String,
}

/// A webhook receiver on loopback: answers each request with the next of `answers` (then 200),
/// after `delay`, and keeps what it got.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(answers: Vec<(u16, String)>, delay: Duration) -> Self {
        let got: Arc<Mutex<Vec<Received>>> = Default::default();
        let answers = Arc::new(Mutex::new(std::collections::VecDeque::from(answers)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/erigolem", listener.local_addr().unwrap());
        let app = {
            let got = got.clone();
            axum::Router::new().route(
                "/hooks/erigolem",
                axum::routing::post(move |headers: HeaderMap, body: String| {
                    let (got, answers) = (got.clone(), answers.clone());
                    async move {
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        got.lock().unwrap().push(Received {
                            signature: header("x-erigolem-signature"),
                            delivery: header("x-erigolem-delivery"),
                            event: header("x-erigolem-event"),
                            body,
                        });
                        tokio::time::sleep(delay).await;
                        let (status, body) = answers
                            .lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or((200, "ok".into()));
                        (AxumStatus::from_u16(status).unwrap(), body)
                    }
                }),
            )
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, got, task }
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// What a receiver does with the header: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
/// compared in constant time (`verify_slice`).
fn verify(secret: &str, header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_owned()),
            Some(("v1", value)) => v1.push(value.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    v1.iter().any(|sig| {
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        mac.verify_slice(&sig).is_ok()
    })
}

fn fast_webhooks(c: &mut ServerConfig) {
    c.webhooks = WebhookConfig {
        // The receivers here are on loopback.
        allow_private: true,
        timeout: Duration::from_secs(2),
        max_attempts: 5,
        backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
    };
}

async fn server(dir: &std::path::Path, tweak: impl FnOnce(&mut ServerConfig)) -> Handle {
    let mut config = ServerConfig::test(dir);
    config.chain_ids = vec![1];
    tweak(&mut config);
    spawn(config).await.unwrap()
}

async fn set_webhook(api: &Api<'_>, url: &str) -> String {
    let (status, hook) = api.put("/me/webhook", json!({"url": url})).await;
    assert_eq!(status, StatusCode::OK, "{hook}");
    hook["secret"].as_str().unwrap().to_owned()
}

async fn delivery(api: &Api<'_>, id: &str) -> Value {
    let (_, log) = api.get("/me/webhook/deliveries").await;
    log.as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn wait_delivered(api: &Api<'_>, id: &str, within: Duration) -> Value {
    wait_for(&format!("delivery {id} delivered"), within, || async {
        let d = delivery(api, id).await;
        (d["state"] == "delivered").then_some(d)
    })
    .await
}

/// The check: fake-erigon falls behind → a lag alert in the API (and on the node, and in
/// its progress events), and exactly one signed `alert.fired` delivery reaches the receiver; the
/// alert does not fire again while the node stays behind; the stop resolves it (one
/// `alert.resolved`). The rules are set at create time.
#[tokio::test]
async fn a_node_that_falls_behind_fires_one_lag_alert_delivered_once_and_signed() {
    let dir = tempfile::tempdir().unwrap();
    let bins = tempfile::tempdir().unwrap();
    let env = [
        ("FAKE_ERIGON_SYNC_TARGET", "100"),
        ("FAKE_ERIGON_SYNC_RATE", "1000"),
        ("FAKE_ERIGON_SLOT_SECS", "1"),
        ("FAKE_ERIGON_LAG_AFTER_SECS", "3"),
    ];
    let (erigon, _) = fake_erigon(bins.path(), "3.6.1", &env);
    let h = server_with_nodes(dir.path(), |c| {
        local(c).erigon_bin = Some(erigon);
        fast_webhooks(c);
    })
    .await;
    let receiver = Receiver::start(Vec::new(), Duration::ZERO).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let secret = set_webhook(&alice, &receiver.url).await;
    let (status, created) = alice
        .post(
            "/nodes",
            json!({"network": "hoodi", "alerts": {"lag_blocks": null, "lag_seconds": 3, "runway_secs": null, "failed": true, "replaced": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["alerts"], json!([]));
    let id = created["id"].as_str().unwrap().to_owned();
    let (_, rules) = alice.get(&format!("/nodes/{id}/alerts")).await;
    assert_eq!(rules["rules"]["lag_seconds"], 3);
    assert_eq!(rules["rules"]["runway_secs"], Value::Null);
    alice.wait_state(&id, "running").await;

    let alerts = wait_for("a lag alert", Duration::from_secs(30), || async {
        let (_, a) = alice.get(&format!("/nodes/{id}/alerts")).await;
        (a["active"].as_array().is_some_and(|l| !l.is_empty())).then_some(a)
    })
    .await;
    let active = &alerts["active"][0];
    assert_eq!(active["kind"], "lag_seconds", "{alerts}");
    assert!(active["message"]
        .as_str()
        .unwrap()
        .contains("rule: more than 3 s"));
    assert_eq!(active["resolved_at"], Value::Null);
    let (_, node) = alice.get(&format!("/nodes/{id}")).await;
    assert_eq!(node["alerts"][0]["id"], active["id"], "{node}");

    // Delivered once, signed with the secret, the alert in the body.
    let fired = wait_for("the delivery", Duration::from_secs(15), || async {
        let got = receiver.got();
        (!got.is_empty()).then_some(got)
    })
    .await;
    let first = &fired[0];
    assert_eq!(first.event, "alert.fired");
    assert!(verify(&secret, &first.signature, &first.body), "{first:?}");
    assert!(!verify("whsec_wrong", &first.signature, &first.body));
    assert!(!verify(
        &secret,
        &first.signature,
        &first.body.replace("lag", "lAg")
    ));
    let body: Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(body["type"], "alert.fired");
    assert_eq!(body["id"], first.delivery.as_str());
    assert_eq!(body["alert"]["id"], active["id"]);
    assert_eq!(body["alert"]["node_id"], id.as_str());
    wait_delivered(&alice, &first.delivery, Duration::from_secs(10)).await;

    // The progress events carry it too.
    let (events, _) = tokio::join!(
        crate::nodes::read_frames(
            &h,
            &alice.token,
            None,
            "progress",
            Duration::from_secs(10),
            |ev| {
                ev.iter().any(|(_, e)| {
                    e["node_id"] == id.as_str()
                        && e["alerts"].as_array().is_some_and(|a| !a.is_empty())
                })
            }
        ),
        async {}
    );
    assert!(
        events
            .iter()
            .any(|(_, e)| e["alerts"][0]["kind"] == "lag_seconds"),
        "{events:?}"
    );

    // Still behind, polled five more times (2 s each): the same alert, no second firing.
    let behind = node["behind_seconds"].as_u64().unwrap_or(0);
    wait_for("five more polls", Duration::from_secs(30), || async {
        let (_, n) = alice.get(&format!("/nodes/{id}")).await;
        (n["behind_seconds"].as_u64().unwrap_or(0) >= behind + 10).then_some(())
    })
    .await;
    let (_, again) = alice.get(&format!("/nodes/{id}/alerts")).await;
    assert_eq!(again["recent"].as_array().unwrap().len(), 1, "{again}");
    assert_eq!(again["active"][0]["id"], active["id"]);
    assert_eq!(
        receiver
            .got()
            .iter()
            .filter(|r| r.event == "alert.fired")
            .count(),
        1
    );

    // The stop resolves it: one `alert.resolved`.
    alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    alice.wait_state(&id, "stopped").await;
    let resolved = wait_for("the resolve delivery", Duration::from_secs(15), || async {
        receiver
            .got()
            .into_iter()
            .find(|r| r.event == "alert.resolved")
    })
    .await;
    assert!(verify(&secret, &resolved.signature, &resolved.body));
    let body: Value = serde_json::from_str(&resolved.body).unwrap();
    assert_eq!(body["alert"]["id"], active["id"]);
    assert!(body["alert"]["resolved_at"].as_i64().is_some());
    let (_, after) = alice.get(&format!("/nodes/{id}/alerts")).await;
    assert_eq!(after["active"], json!([]));
    assert_eq!(receiver.got().len(), 2, "{:?}", receiver.got());
}

/// A receiver that answers 500 twice (with a large body, of which only a little is read) gets
/// the third attempt; the log shows three attempts, the same delivery id each time, each signed.
#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_third_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path(), fast_webhooks).await;
    let huge = "x".repeat(4 * 1024 * 1024);
    let receiver = Receiver::start(
        vec![(500, huge), (500, "still down".into())],
        Duration::ZERO,
    )
    .await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let secret = set_webhook(&alice, &receiver.url).await;
    let (status, queued) = alice.post("/me/webhook/test", json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["event"], "test");
    let id = queued["id"].as_str().unwrap().to_owned();
    // The first failure is in the log with its status and a bounded excerpt.
    let failed = wait_for("the first failure", Duration::from_secs(10), || async {
        let d = delivery(&alice, &id).await;
        (d["attempts"].as_u64() >= Some(1) && d["last_status"] == 500).then_some(d)
    })
    .await;
    assert!(
        failed["last_error"].as_str().unwrap().len() <= 600,
        "{failed}"
    );
    let done = wait_delivered(&alice, &id, Duration::from_secs(15)).await;
    assert_eq!(done["attempts"], 3, "{done}");
    assert_eq!(done["last_status"], 200);
    assert_eq!(done["last_error"], Value::Null);
    assert_eq!(done["next_attempt_at"], Value::Null);
    assert!(done["delivered_at"].as_i64().is_some());
    let got = receiver.got();
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r.delivery, id);
        assert!(verify(&secret, &r.signature, &r.body));
    }
}

/// A delivery whose receiver failed, with its retry pending when the server stops, is sent by
/// the next server on the same database: nothing is lost.
#[tokio::test]
async fn a_restart_in_the_middle_of_the_retries_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let slow_retry = |c: &mut ServerConfig| {
        fast_webhooks(c);
        c.webhooks.backoff = Duration::from_secs(2);
    };
    let h = server(dir.path(), slow_retry).await;
    let receiver = Receiver::start(vec![(503, "later".into())], Duration::ZERO).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let secret = set_webhook(&alice, &receiver.url).await;
    let (_, queued) = alice.post("/me/webhook/test", json!({})).await;
    let id = queued["id"].as_str().unwrap().to_owned();
    wait_for("the first failure", Duration::from_secs(10), || async {
        let d = delivery(&alice, &id).await;
        (d["last_status"] == 503 && d["state"] == "pending").then_some(())
    })
    .await;
    let token = alice.token.clone();
    h.shutdown().await;
    assert_eq!(receiver.got().len(), 1);

    let h = server(dir.path(), slow_retry).await;
    let alice = Api::with_token(&h, token);
    let done = wait_delivered(&alice, &id, Duration::from_secs(20)).await;
    assert_eq!(done["attempts"], 2, "{done}");
    let got = receiver.got();
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|r| r.delivery == id && verify(&secret, &r.signature, &r.body)));
}

/// A receiver slower than the deadline: the attempt is recorded as timed out and retried.
#[tokio::test]
async fn a_slow_receiver_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path(), |c| {
        fast_webhooks(c);
        c.webhooks.timeout = Duration::from_millis(300);
        c.webhooks.backoff = Duration::from_secs(60);
    })
    .await;
    let receiver = Receiver::start(Vec::new(), Duration::from_secs(30)).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    set_webhook(&alice, &receiver.url).await;
    let (_, queued) = alice.post("/me/webhook/test", json!({})).await;
    let id = queued["id"].as_str().unwrap().to_owned();
    let d = wait_for("the timeout", Duration::from_secs(10), || async {
        let d = delivery(&alice, &id).await;
        (d["attempts"] == 1 && d["last_error"].is_string()).then_some(d)
    })
    .await;
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{d}"
    );
    assert_eq!(d["state"], "pending");
    assert_eq!(d["last_status"], Value::Null);
    assert!(d["next_attempt_at"].as_i64().is_some());
}

/// By default (no operator flag) webhooks to loopback, private and link-local addresses are
/// refused, and so are other schemes, credentials in the URL and overlong URLs.
#[tokio::test]
async fn bad_and_private_webhook_urls_are_refused_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path(), |_| {}).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let long = format!("https://hooks.example.com/{}", "a".repeat(2100));
    for (url, why) in [
        ("http://127.0.0.1:9/hook", "not a public address"),
        ("http://localhost:9/hook", "not a public address"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "not a public address",
        ),
        ("http://10.1.2.3/", "not a public address"),
        ("http://[::1]:9/", "not a public address"),
        ("http://[::ffff:127.0.0.1]/", "not a public address"),
        ("http://2130706433/", "not a public address"),
        ("ftp://hooks.example.com/", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        (
            "https://user:pass@hooks.example.com/",
            "no user name or password",
        ),
        ("not a url", "does not parse"),
        (long.as_str(), "longer than 2048"),
    ] {
        let (status, body) = alice.put("/me/webhook", json!({"url": url})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(body["error"]["code"], "invalid_webhook_url", "{url}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{url}: {body}"
        );
    }
    let (status, body) = alice
        .put(
            "/me/webhook",
            json!({"url": "https://hooks.example.com/", "evil": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_json");
    // Nothing was set.
    let (status, body) = alice.get("/me/webhook").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "no_webhook");
    let (status, _) = alice.post("/me/webhook/test", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A public URL is taken; the secret is shown once, kept on a URL change, new on rotation.
    let (status, hook) = alice
        .put("/me/webhook", json!({"url": "https://hooks.example.com/a"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let (_, shown) = alice.get("/me/webhook").await;
    assert_eq!(shown["url"], "https://hooks.example.com/a");
    assert!(shown.get("secret").is_none(), "{shown}");
    let (_, moved) = alice
        .put("/me/webhook", json!({"url": "https://hooks.example.com/b"}))
        .await;
    assert!(moved.get("secret").is_none(), "{moved}");
    let (_, rotated) = alice
        .put(
            "/me/webhook",
            json!({"url": "https://hooks.example.com/b", "rotate_secret": true}),
        )
        .await;
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    // Test events are capped (the server is no way to flood a URL): 10 an hour.
    for _ in 0..10 {
        let (status, body) = alice.post("/me/webhook/test", json!({})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let (status, body) = alice.post("/me/webhook/test", json!({})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(alice.delete("/me/webhook").await, StatusCode::NO_CONTENT);
    assert_eq!(alice.delete("/me/webhook").await, StatusCode::NOT_FOUND);
}

/// Another user sees neither your webhook nor your deliveries, nor your node's alerts, and
/// cannot set its rules; bad rules are refused with the reason, at create time and later.
#[tokio::test]
async fn nobody_else_sees_your_webhook_or_alerts_and_bad_rules_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = server_with_nodes(dir.path(), fast_webhooks).await;
    let receiver = Receiver::start(Vec::new(), Duration::ZERO).await;
    let alice = Api::signed_in(&h, DEV_KEY_0).await;
    let bob = Api::signed_in(&h, DEV_KEY_1).await;
    set_webhook(&alice, &receiver.url).await;
    let (_, queued) = alice.post("/me/webhook/test", json!({})).await;
    wait_delivered(
        &alice,
        queued["id"].as_str().unwrap(),
        Duration::from_secs(10),
    )
    .await;

    let (status, _) = bob.get("/me/webhook").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, log) = bob.get("/me/webhook/deliveries").await;
    assert_eq!(log, json!([]));
    assert_eq!(bob.delete("/me/webhook").await, StatusCode::NOT_FOUND);
    let (_, still) = alice.get("/me/webhook").await;
    assert_eq!(still["url"], receiver.url.as_str());

    for (rules, why) in [
        (
            json!({"lag_blocks": 0, "lag_seconds": 120, "runway_secs": 3600, "failed": true, "replaced": true}),
            "lag_blocks must be from 1",
        ),
        (
            json!({"lag_blocks": 40, "lag_seconds": 0, "runway_secs": 3600, "failed": true, "replaced": true}),
            "lag_seconds must be from 1",
        ),
        (
            json!({"lag_blocks": 40, "lag_seconds": 120, "runway_secs": 5, "failed": true, "replaced": true}),
            "runway_secs must be from 60",
        ),
    ] {
        let (status, body) = alice
            .post("/nodes", json!({"network": "dev", "alerts": rules}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_alert_rules");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{body}"
        );
    }
    let (_, nodes) = alice.get("/nodes").await;
    assert_eq!(nodes, json!([]), "a refused create makes no node");

    let (_, created) = alice.post("/nodes", json!({"network": "dev"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, alerts) = alice.get(&format!("/nodes/{id}/alerts")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        alerts["rules"],
        json!({"lag_blocks": 40, "lag_seconds": 120, "runway_secs": 3600, "failed": true, "replaced": true}),
        "the defaults"
    );
    let (status, _) = bob.get(&format!("/nodes/{id}/alerts")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let off = json!({"lag_blocks": null, "lag_seconds": null, "runway_secs": null, "failed": false, "replaced": false});
    let (status, _) = bob.put(&format!("/nodes/{id}/alerts"), off.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for bad in [
        json!({"lag_blocks": 1_000_001, "lag_seconds": null, "runway_secs": null, "failed": true, "replaced": true}),
        json!({"lag_blocks": -1, "lag_seconds": null, "runway_secs": null, "failed": true, "replaced": true}),
        json!({"lag_blocks": "40", "lag_seconds": null, "runway_secs": null, "failed": true, "replaced": true}),
        json!({"lag_blocks": 40, "lag_seconds": null, "runway_secs": null, "failed": true, "replaced": true, "extra": 1}),
        json!({"lag_blocks": 40}),
    ] {
        let (status, body) = alice.put(&format!("/nodes/{id}/alerts"), bad.clone()).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {status} {body}"
        );
    }
    let (status, set) = alice.put(&format!("/nodes/{id}/alerts"), off.clone()).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["rules"], off);
    let (_, read) = alice.get(&format!("/nodes/{id}/alerts")).await;
    assert_eq!(read["rules"], off);
    alice.post(&format!("/nodes/{id}/stop"), json!({})).await;
    alice.wait_state(&id, "stopped").await;
}

/// Two replicas on one PostgreSQL database, both running the delivery worker: every delivery is
/// sent exactly once (each attempt is claimed by one of them).
#[tokio::test]
async fn with_two_replicas_each_delivery_is_sent_once() {
    let pg = erigolem_test_utils::postgres::Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secret.key");
    let replica = |name: &str| {
        let (url, key) = (pg.url.clone(), key.clone());
        let data = dir.path().join(name);
        async move {
            server(&data, move |c| {
                fast_webhooks(c);
                c.database_url = Some(url);
                c.key_file = Some(key);
            })
            .await
        }
    };
    let (a, b) = (replica("a").await, replica("b").await);
    // Slow enough that both workers hold claims at the same time.
    let receiver = Receiver::start(Vec::new(), Duration::from_millis(300)).await;
    let alice_a = Api::signed_in(&a, DEV_KEY_0).await;
    let alice_b = Api::with_token(&b, alice_a.token.clone());
    set_webhook(&alice_a, &receiver.url).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let api = if i % 2 == 0 { &alice_a } else { &alice_b };
        let (status, queued) = api.post("/me/webhook/test", json!({})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
        ids.push(queued["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let d = wait_delivered(&alice_b, id, Duration::from_secs(30)).await;
        assert_eq!(d["attempts"], 1, "{d}");
    }
    let mut got: Vec<String> = receiver.got().into_iter().map(|r| r.delivery).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "each delivery exactly once");
}
