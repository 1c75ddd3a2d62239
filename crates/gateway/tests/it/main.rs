//! The static site against a real Nginx: each instance's password file and its endpoint guard's
//! socket (the real guard, in front of a real anvil), with no Nginx reload ever.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use erigolem_gateway::{htpasswd, Gateway};
use erigolem_guard::{Guard, GuardConfig, GuardLimits, Policy, PolicySettings};
use erigolem_primitives::{Credentials, EngineKind, InstanceName, Mode, Secret};
use erigolem_test_utils::{hex_u64, rpc, Anvil, Nginx, RpcError};
use serde_json::json;

fn creds(user: &str) -> Credentials {
    Credentials {
        user: user.into(),
        password: Secret::new(htpasswd::random_password()),
    }
}

fn name(s: &str) -> InstanceName {
    InstanceName::new(s).unwrap()
}

fn auth(c: &Credentials) -> Option<(&str, &str)> {
    Some((c.user.as_str(), c.password.expose()))
}

fn guard_config(
    gw: &Gateway,
    instance: &InstanceName,
    node_port: u16,
    c: &Credentials,
) -> GuardConfig {
    GuardConfig {
        instance: instance.clone(),
        socket: gw.socket(instance),
        socket_group: gw.config().password_group.clone(),
        node: format!("127.0.0.1:{node_port}"),
        credentials: c.clone(),
        policy: Policy::new(
            EngineKind::Anvil,
            Mode::Dedicated,
            &PolicySettings::default(),
            None,
        ),
        limits: GuardLimits::DEDICATED,
        allow_origins: None,
        allow_ips: None,
    }
}

/// An instance as the runtime opens it: entry, guard, credentials.
async fn open(gw: &Gateway, config: GuardConfig) -> Guard {
    gw.add(&config.instance).await.unwrap();
    let instance = config.instance.clone();
    let c = config.credentials.clone();
    let guard = Guard::spawn(config).unwrap();
    gw.set_credentials(&instance, &c).await.unwrap();
    guard
}

async fn status_of(url: &str, c: Option<(&str, &str)>) -> Option<u16> {
    match rpc(url, c, "eth_blockNumber", json!([])).await {
        Ok(_) => None,
        Err(RpcError::Http(code)) => Some(code),
        Err(e) => panic!("{url}: {e:?}"),
    }
}

#[tokio::test]
async fn entries_serve_only_their_credentials_and_go_away_without_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path()).await;
    let anvil = Anvil::start(None).await;
    let gw = Gateway::new(nginx.gateway.clone());
    let master = gw.master_pid().unwrap();
    let workers = gw.worker_pids().unwrap();
    let (a, b) = (name("node-a"), name("node-b"));
    let (ca, cb) = (creds("node-a"), creds("node-b"));
    let guard_a = open(&gw, guard_config(&gw, &a, anvil.port, &ca)).await;
    let guard_b = open(&gw, guard_config(&gw, &b, anvil.port, &cb)).await;
    let url_a = format!("{}/node-a/", nginx.base_url());
    let url_b = format!("{}/node-b/", nginx.base_url());
    // Served the moment it was added: there is no reload to wait for.
    let block = rpc(&url_a, auth(&ca), "eth_blockNumber", json!([])).await;
    let block = block.unwrap_or_else(|e| {
        panic!(
            "{e:?}: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        )
    });
    assert_eq!(hex_u64(&block), 0);

    // Password file: mode 0640, an owner header, salted hash, no plain password. Socket 0660.
    let text = std::fs::read_to_string(gw.password_file(&a)).unwrap();
    let meta = std::fs::metadata(gw.password_file(&a)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert!(
        text.starts_with("# erigolem instance node-a; owner pid="),
        "{text}"
    );
    assert!(text.contains("\nnode-a:{SSHA}") && !text.contains(ca.password.expose()));
    let socket = std::fs::metadata(gw.socket(&a)).unwrap();
    assert_eq!(socket.permissions().mode() & 0o777, 0o660);

    // Wrong, missing and another instance's credentials: 401; an unknown instance: 404.
    assert_eq!(
        status_of(&url_a, Some(("node-a", "wrong"))).await,
        Some(401)
    );
    assert_eq!(status_of(&url_a, None).await, Some(401));
    assert_eq!(status_of(&url_a, auth(&cb)).await, Some(401));
    let unknown = format!("{}/node-c/", nginx.base_url());
    assert_eq!(status_of(&unknown, auth(&ca)).await, Some(404));
    assert_eq!(
        status_of(&format!("{}/../node-a/", nginx.base_url()), auth(&ca)).await,
        None
    );
    assert_eq!(
        status_of(&format!("{}/NODE-A/", nginx.base_url()), auth(&ca)).await,
        Some(404)
    );

    // Rotation: the old password stops working at once, the new one works.
    let rotated = creds("node-a");
    gw.set_credentials(&a, &rotated).await.unwrap();
    guard_a.set_credentials(&rotated);
    assert_eq!(status_of(&url_a, auth(&ca)).await, Some(401));
    assert_eq!(status_of(&url_a, auth(&rotated)).await, None);

    // Removal: revoked (401), guard gone, entry gone (404); b unaffected.
    gw.revoke(&a).await.unwrap();
    assert_eq!(status_of(&url_a, auth(&rotated)).await, Some(401));
    guard_a.shutdown().await;
    gw.remove(&a).await.unwrap();
    assert_eq!(status_of(&url_a, auth(&rotated)).await, Some(404));
    assert!(!gw.password_file(&a).exists() && !gw.socket(&a).exists());
    assert_eq!(gw.entries().unwrap().len(), 1);
    assert_eq!(status_of(&url_b, auth(&cb)).await, None);

    // Nginx was never reloaded: same master, same workers.
    assert_eq!(gw.master_pid().unwrap(), master);
    assert_eq!(gw.worker_pids().unwrap(), workers);
    gw.validate().await.unwrap();
    drop(guard_b);
}

#[tokio::test]
async fn a_dead_runtime_is_a_bad_gateway_and_its_entry_is_swept() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path()).await;
    let anvil = Anvil::start(None).await;
    let gw = Gateway::new(nginx.gateway.clone());
    let (live, dead) = (name("alive-one"), name("dead-one"));
    let (cl, cd) = (creds("alive-one"), creds("dead-one"));
    let _live = open(&gw, guard_config(&gw, &live, anvil.port, &cl)).await;
    let dead_guard = open(&gw, guard_config(&gw, &dead, anvil.port, &cd)).await;
    // The runtime dies without cleaning up: its entry and socket file stay, nobody listens.
    dead_guard.shutdown().await;
    drop(std::os::unix::net::UnixListener::bind(gw.socket(&dead)).unwrap());
    let dead_url = format!("{}/dead-one/", nginx.base_url());
    let answered = tokio::time::timeout(Duration::from_secs(5), status_of(&dead_url, auth(&cd)));
    assert_eq!(answered.await.expect("hung"), Some(502));

    // Its owner is a process that has exited.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let f = gw.password_file(&dead);
    let text = std::fs::read_to_string(&f).unwrap().replacen(
        &format!("pid={}", std::process::id()),
        &format!("pid={gone_pid}"),
        1,
    );
    std::fs::write(&f, text).unwrap();
    // A socket without an entry (a runtime killed between its entry's removal and its socket's)
    // is a leftover too.
    let orphan = gw.socket(&name("orphan-one"));
    drop(std::os::unix::net::UnixListener::bind(&orphan).unwrap());
    assert_eq!(gw.sweep_stale().await.unwrap(), vec![dead.clone()]);
    assert!(!gw.password_file(&dead).exists() && !gw.socket(&dead).exists());
    assert!(!orphan.exists());
    assert_eq!(status_of(&dead_url, auth(&cd)).await, Some(404));
    let names: Vec<_> = gw.entries().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec![live.clone()]);
    assert!(gw.socket(&live).exists());
    let live_url = format!("{}/alive-one/", nginx.base_url());
    assert_eq!(status_of(&live_url, auth(&cl)).await, None);
    // The name can be served again: a stale socket at its path is replaced.
    drop(std::os::unix::net::UnixListener::bind(gw.socket(&dead)).unwrap());
    let _again = open(&gw, guard_config(&gw, &dead, anvil.port, &cd)).await;
    assert_eq!(status_of(&dead_url, auth(&cd)).await, None);
}

#[tokio::test]
async fn the_client_address_comes_from_nginx_never_from_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path()).await;
    let anvil = Anvil::start(None).await;
    let gw = Gateway::new(nginx.gateway.clone());
    let (far, near) = (name("far-only"), name("near-only"));
    let (cf, cn) = (creds("far-only"), creds("near-only"));
    let mut config = guard_config(&gw, &far, anvil.port, &cf);
    config.allow_ips = Some(vec!["203.0.113.7".parse().unwrap()]);
    let _far = open(&gw, config).await;
    let mut config = guard_config(&gw, &near, anvil.port, &cn);
    config.allow_ips = Some(vec!["127.0.0.0/8".parse().unwrap()]);
    let _near = open(&gw, config).await;
    let client = reqwest::Client::new();
    let body = json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]});
    let send = |path: &str, c: &Credentials| {
        client
            .post(format!("{}/{path}/", nginx.base_url()))
            .basic_auth(&c.user, Some(c.password.expose()))
            .header("X-Forwarded-For", "203.0.113.7")
            .header("X-Real-IP", "203.0.113.7")
            .header("X-Erigolem-Client-Ip", "203.0.113.7")
            .header("x-erigolem-client-ip", "203.0.113.7")
            .json(&body)
            .send()
    };
    // The test connects from 127.0.0.1: whatever it claims, that is its address.
    let spoofed = send("far-only", &cf).await.unwrap();
    assert_eq!(spoofed.status(), 403);
    let text = spoofed.text().await.unwrap();
    assert!(
        text.contains("address 127.0.0.1 is not in this endpoint's allow_ips"),
        "{text}"
    );
    let allowed = send("near-only", &cn).await.unwrap();
    assert_eq!(allowed.status(), 200);
}
