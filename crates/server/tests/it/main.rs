//! `erigolem serve` over real HTTP: Sign-In with Ethereum with real secp256k1 signatures, sessions,
//! the error envelope, limits, health, metrics and the OpenAPI document.
#![allow(clippy::unwrap_used)]

mod access;
mod alerts;
mod erigon;
mod golem;
mod logs;
mod nodes;
mod security;
mod usage;

use erigolem_server::{spawn, Handle, ServerConfig};
use erigolem_test_utils::wallet::{rfc3339_from_now, SiweMessage, Wallet, DEV_KEY_0, DEV_KEY_1};
use reqwest::StatusCode;
use serde_json::{json, Value};

pub(crate) async fn server(dir: &std::path::Path) -> Handle {
    let mut config = ServerConfig::test(dir);
    config.chain_ids = vec![1];
    spawn(config).await.unwrap()
}

pub(crate) async fn nonce(h: &Handle) -> String {
    let v: Value = reqwest::get(format!("{}/api/v1/auth/nonce", h.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["nonce"].as_str().unwrap().to_owned()
}

/// A message for `wallet` that this server accepts.
pub(crate) fn message(h: &Handle, wallet: &Wallet, nonce: &str) -> SiweMessage {
    SiweMessage {
        domain: h.local_addr().to_string(),
        address: wallet.address(),
        uri: h.url(),
        chain_id: 1,
        nonce: nonce.to_owned(),
        issued_at: rfc3339_from_now(0),
        expiration_time: Some(rfc3339_from_now(300)),
    }
}

pub(crate) async fn login(h: &Handle, text: &str, signature: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", h.url()))
        .json(&json!({"message": text, "signature": signature}))
        .send()
        .await
        .unwrap()
}

async fn me(h: &Handle, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/api/v1/me", h.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sign_in_gives_a_cookie_and_a_bearer_token_and_logout_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path()).await;
    let wallet = Wallet::from_hex(DEV_KEY_0);
    let text = message(&h, &wallet, &nonce(&h).await).text();
    let resp = login(&h, &text, &wallet.personal_sign(&text)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("erigolem_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["address"], wallet.address());
    let token = body["token"].as_str().unwrap().to_owned();

    let who: Value = me(&h, &token).await.json().await.unwrap();
    assert_eq!(who["address"], wallet.address());
    // The cookie works the same way.
    let session = cookie.split(';').next().unwrap().to_owned();
    let by_cookie = reqwest::Client::new()
        .get(format!("{}/api/v1/me", h.url()))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), StatusCode::OK);

    let out = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/logout", h.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(me(&h, &token).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_bad_sign_in_is_refused_without_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path()).await;
    let alice = Wallet::from_hex(DEV_KEY_0);
    let mallory = Wallet::from_hex(DEV_KEY_1);

    // Reused nonce: the first login succeeds, the replay is refused.
    let text = message(&h, &alice, &nonce(&h).await).text();
    let sig = alice.personal_sign(&text);
    assert_eq!(login(&h, &text, &sig).await.status(), StatusCode::OK);
    let replay = login(&h, &text, &sig).await;
    check_refused(replay, StatusCode::UNAUTHORIZED, "unknown_nonce").await;

    let cases: Vec<(&str, Mutation, StatusCode, &str)> = vec![
        (
            "expired",
            Box::new(|m| m.expiration_time = Some(rfc3339_from_now(-60))),
            StatusCode::UNAUTHORIZED,
            "expired",
        ),
        (
            "wrong domain",
            Box::new(|m| m.domain = "evil.example".into()),
            StatusCode::UNAUTHORIZED,
            "domain_mismatch",
        ),
        (
            "wrong uri",
            Box::new(|m| m.uri = "https://evil.example".into()),
            StatusCode::UNAUTHORIZED,
            "uri_mismatch",
        ),
        (
            "wrong chain",
            Box::new(|m| m.chain_id = 5),
            StatusCode::UNAUTHORIZED,
            "chain_id_not_accepted",
        ),
        (
            "unknown nonce",
            Box::new(|m| m.nonce = "neverissued12345".into()),
            StatusCode::UNAUTHORIZED,
            "unknown_nonce",
        ),
    ];
    for (what, mutate, status, code) in cases {
        let mut m = message(&h, &alice, &nonce(&h).await);
        mutate(&mut m);
        let text = m.text();
        let resp = login(&h, &text, &alice.personal_sign(&text)).await;
        eprintln!("case: {what}");
        check_refused(resp, status, code).await;
    }

    // Tampered after signing.
    let text = message(&h, &alice, &nonce(&h).await).text();
    let sig = alice.personal_sign(&text);
    let tampered = text.replace("Sign in to Erigolem.", "Sign in to Erigolem!");
    check_refused(
        login(&h, &tampered, &sig).await,
        StatusCode::UNAUTHORIZED,
        "signature_mismatch",
    )
    .await;
    // Signed by someone else than the message's address.
    let text = message(&h, &alice, &nonce(&h).await).text();
    check_refused(
        login(&h, &text, &mallory.personal_sign(&text)).await,
        StatusCode::UNAUTHORIZED,
        "signature_mismatch",
    )
    .await;
    // Malformed signature and message.
    let text = message(&h, &alice, &nonce(&h).await).text();
    check_refused(
        login(&h, &text, "0x1234").await,
        StatusCode::BAD_REQUEST,
        "malformed_signature",
    )
    .await;
    check_refused(
        login(&h, "hello", &alice.personal_sign("hello")).await,
        StatusCode::BAD_REQUEST,
        "malformed_message",
    )
    .await;
}

/// A change to an otherwise valid message.
type Mutation = Box<dyn Fn(&mut SiweMessage)>;

async fn check_refused(resp: reqwest::Response, status: StatusCode, code: &str) {
    assert_eq!(resp.status(), status);
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "a refused login set a cookie"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(body.get("token").is_none());
}

#[tokio::test]
async fn bad_requests_get_the_error_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path()).await;
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/api/v1/me", h.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "unauthorized"
    );
    let resp = me(&h, "not-a-token").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let login_url = format!("{}/api/v1/auth/login", h.url());
    let resp = client
        .post(&login_url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );
    let resp = client
        .post(&login_url)
        .json(&json!({"message":"m","signature":"s","extra":1}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );
    let huge = "x".repeat(200 * 1024);
    let resp = client
        .post(&login_url)
        .json(&json!({"message": huge, "signature": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn the_web_ui_is_served_at_every_other_path_and_api_misses_stay_json() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path()).await;
    let get = |path: &str| reqwest::get(format!("{}{path}", h.url()));
    let root = get("/").await.unwrap();
    assert_eq!(root.status(), StatusCode::OK);
    let kind = root.headers()["content-type"].to_str().unwrap().to_owned();
    let body = root.text().await.unwrap();
    if erigolem_web_ui::is_embedded() {
        assert!(kind.starts_with("text/html"), "{kind}");
        assert!(body.contains(r#"<div id="root">"#), "{body}");
        // The app routes itself: any other page path gets the same document.
        assert_eq!(
            get("/nodes/some-page").await.unwrap().text().await.unwrap(),
            body
        );
        // Its hashed assets are cacheable forever.
        let asset = body
            .split('"')
            .find(|s| s.starts_with("/assets/") && s.ends_with(".js"))
            .expect("a script in index.html");
        let js = get(asset).await.unwrap();
        assert_eq!(js.status(), StatusCode::OK);
        assert!(js.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable"));
    } else {
        assert!(body.contains("scripts/build-ui.sh"), "{body}");
    }
    assert_eq!(
        get("/assets/missing.js").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let miss = get("/api/v1/no-such-route").await.unwrap();
    check_refused(miss, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path()).await;
    let health = reqwest::get(format!("{}/healthz", h.url())).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let _ = reqwest::get(format!("{}/api/v1/auth/nonce", h.url()))
        .await
        .unwrap();
    let metrics = reqwest::get(format!("{}/metrics", h.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("erigolem_http_requests_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="/api/v1/auth/nonce""#),
        "{metrics}"
    );
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", h.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["paths"]["/api/v1/auth/login"]["post"].is_object(),
        "{doc}"
    );
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(dir.path()).await;
    let wallet = Wallet::from_hex(DEV_KEY_0);
    let text = message(&h, &wallet, &nonce(&h).await).text();
    let body: Value = login(&h, &text, &wallet.personal_sign(&text))
        .await
        .json()
        .await
        .unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    h.shutdown().await;
    let h = server(dir.path()).await;
    let who: Value = me(&h, &token).await.json().await.unwrap();
    assert_eq!(who["address"], wallet.address());
}

/// Signs in with `key` and returns the bearer token.
pub(crate) async fn sign_in(h: &Handle, key: &str) -> String {
    let wallet = Wallet::from_hex(key);
    let text = message(h, &wallet, &nonce(h).await).text();
    let body: Value = login(h, &text, &wallet.personal_sign(&text))
        .await
        .json()
        .await
        .unwrap();
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn api_requests_beyond_the_rate_limit_get_429() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::test(dir.path());
    config.rate_limit = std::num::NonZeroU32::new(5).unwrap();
    let h = spawn(config).await.unwrap();
    let mut limited = None;
    for _ in 0..40 {
        let resp = reqwest::get(format!("{}/api/v1/auth/nonce", h.url()))
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(resp.json::<Value>().await.unwrap());
            break;
        }
    }
    let body = limited.expect("40 requests at once were never limited");
    assert_eq!(body["error"]["code"], "rate_limited");
    // Health and metrics are not API calls: never limited.
    assert_eq!(
        reqwest::get(format!("{}/healthz", h.url()))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}
