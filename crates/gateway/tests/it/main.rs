//! Gateway against a real Nginx and a real anvil.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use erigolem_gateway::{htpasswd, Gateway, Upstream};
use erigolem_primitives::{Credentials, InstanceName, Secret};
use erigolem_test_utils::{hex_u64, rpc, wait_for, Anvil, Nginx, RpcError};
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

/// Polls until the call through Nginx gives `want` (Ok or an HTTP status): a reload is asynchronous.
async fn until_status(url: &str, auth: Option<(&str, &str)>, want: Option<u16>) {
    let what = format!("{url} to answer {want:?}");
    wait_for(&what, Duration::from_secs(10), || async {
        let got = match rpc(url, auth, "eth_blockNumber", json!([])).await {
            Ok(_) => None,
            Err(RpcError::Http(code)) => Some(code),
            Err(_) => Some(0),
        };
        (got == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn entry_serves_rpc_only_with_its_credentials_and_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path()).await;
    let anvil = Anvil::start(None).await;
    let gw = Gateway::new(nginx.gateway.clone());
    let (a, b) = (name("node-a"), name("node-b"));
    let (ca, cb) = (creds("node-a"), creds("node-b"));
    gw.add(&a, &Upstream::local(anvil.port), &ca).await.unwrap();
    gw.add(&b, &Upstream::local(anvil.port), &cb).await.unwrap();
    let url_a = format!("{}/node-a/", nginx.base_url());
    let auth_a = (ca.user.as_str(), ca.password.expose());
    until_status(&url_a, Some(auth_a), None).await;
    // Right after add returns, every request is served by the new configuration.
    for _ in 0..30 {
        rpc(&url_a, Some(auth_a), "eth_blockNumber", json!([]))
            .await
            .unwrap();
    }
    let block = rpc(&url_a, Some(auth_a), "eth_blockNumber", json!([])).await;
    let block = block.unwrap_or_else(|e| {
        panic!(
            "{e:?}: {}",
            std::fs::read_to_string(dir.path().join("nginx.stderr")).unwrap_or_default()
        )
    });
    assert_eq!(hex_u64(&block), 0);

    // Password file: mode 0640, salted hash, no plain password.
    let pw_file = gw.password_file(&a);
    let meta = std::fs::metadata(&pw_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    let text = std::fs::read_to_string(&pw_file).unwrap();
    assert!(text.starts_with("node-a:{SSHA}") && !text.contains(ca.password.expose()));

    // Wrong, missing and another instance's credentials: 401.
    assert!(matches!(
        rpc(
            &url_a,
            Some(("node-a", "wrong")),
            "eth_blockNumber",
            json!([])
        )
        .await,
        Err(RpcError::Http(401))
    ));
    let r = rpc(&url_a, None, "eth_blockNumber", json!([])).await;
    assert!(matches!(r, Err(RpcError::Http(401))), "{r:?}");
    let auth_b = (cb.user.as_str(), cb.password.expose());
    assert!(matches!(
        rpc(&url_a, Some(auth_b), "eth_blockNumber", json!([])).await,
        Err(RpcError::Http(401))
    ));

    // Rotation: the old password stops working at once, the new one works.
    let rotated = creds("node-a");
    gw.set_credentials(&a, &rotated).await.unwrap();
    assert!(matches!(
        rpc(&url_a, Some(auth_a), "eth_blockNumber", json!([])).await,
        Err(RpcError::Http(401))
    ));
    rpc(
        &url_a,
        Some((rotated.user.as_str(), rotated.password.expose())),
        "eth_blockNumber",
        json!([]),
    )
    .await
    .unwrap();

    // Removal: credentials refused, then the path is gone; files removed; b unaffected.
    gw.remove(&a).await.unwrap();
    assert!(rpc(
        &url_a,
        Some((rotated.user.as_str(), rotated.password.expose())),
        "eth_blockNumber",
        json!([])
    )
    .await
    .is_err());
    until_status(
        &url_a,
        Some((rotated.user.as_str(), rotated.password.expose())),
        Some(404),
    )
    .await;
    assert!(!pw_file.exists());
    assert_eq!(gw.entries().unwrap().len(), 1);
    let url_b = format!("{}/node-b/", nginx.base_url());
    rpc(&url_b, Some(auth_b), "eth_blockNumber", json!([]))
        .await
        .unwrap();
}

#[tokio::test]
async fn invalid_config_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path()).await;
    let gw = Gateway::new(nginx.gateway.clone());
    // A host name nginx cannot resolve makes `nginx -t` fail.
    let bad = Upstream::parse("no-such-host.invalid:8545").unwrap();
    let err = gw
        .add(&name("broken"), &bad, &creds("broken"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert!(gw.entries().unwrap().is_empty());
    assert!(!gw.password_file(&name("broken")).exists());
    gw.validate().await.unwrap();
}

#[tokio::test]
async fn stale_entries_of_dead_owners_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path()).await;
    let anvil = Anvil::start(None).await;
    let gw = Gateway::new(nginx.gateway.clone());
    let live = name("alive-one");
    gw.add(&live, &Upstream::local(anvil.port), &creds("alive-one"))
        .await
        .unwrap();
    // Make an entry whose owner is a process that has exited.
    let c = creds("dead-one");
    gw.add(&name("dead-one"), &Upstream::local(anvil.port), &c)
        .await
        .unwrap();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    for kind in ["locations", "upstreams"] {
        let f = nginx.gateway.dir.join(kind).join("dead-one.conf");
        let text = std::fs::read_to_string(&f).unwrap();
        let text = text.replacen(
            &format!("pid={}", std::process::id()),
            &format!("pid={dead_pid}"),
            1,
        );
        std::fs::write(&f, text).unwrap();
    }
    let swept = gw.sweep_stale().await.unwrap();
    assert_eq!(swept, vec![name("dead-one")]);
    assert!(!gw.password_file(&name("dead-one")).exists());
    let names: Vec<_> = gw.entries().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec![live]);
    until_status(
        &format!("{}/dead-one/", nginx.base_url()),
        Some((c.user.as_str(), c.password.expose())),
        Some(404),
    )
    .await;
}

#[tokio::test]
async fn concurrent_adds_never_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path()).await;
    let anvil = Anvil::start(None).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let gw = Gateway::new(nginx.gateway.clone());
        let port = anvil.port;
        tasks.push(tokio::spawn(async move {
            let n = name(&format!("conc-{i}"));
            let c = creds(n.as_str());
            gw.add(&n, &Upstream::local(port), &c).await.unwrap();
            (n, c)
        }));
    }
    for t in tasks {
        let (n, c) = t.await.unwrap();
        let url = format!("{}/{n}/", nginx.base_url());
        until_status(&url, Some((c.user.as_str(), c.password.expose())), None).await;
    }
}

#[tokio::test]
async fn add_without_a_running_nginx_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path()).await;
    let mut config = nginx.gateway.clone();
    config.pid_file = dir.path().join("gone.pid");
    let gw = Gateway::new(config);
    let err = gw
        .add(&name("orphan"), &Upstream::local(1), &creds("orphan"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nginx is not running"), "{err}");
    assert!(gw.entries().unwrap().is_empty());
    assert!(!gw.password_file(&name("orphan")).exists());
}

/// A private Nginx writes its errors to stderr (kept by whoever runs it: the local backend's
/// supervisor rotates it at a cap), never to a file of its own that grows without bound: a
/// stranger hammering an endpoint whose node is down cannot fill the disk through it.
#[tokio::test]
async fn private_nginx_errors_go_to_stderr_not_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path()).await;
    let gw = Gateway::new(nginx.gateway.clone());
    let down = erigolem_test_utils::free_port();
    let c = creds("node-down");
    gw.add(&name("node-down"), &Upstream::local(down), &c)
        .await
        .unwrap();
    let url = format!("{}/node-down/", nginx.base_url());
    until_status(
        &url,
        Some((c.user.as_str(), c.password.expose())),
        Some(502),
    )
    .await;
    let stderr = dir.path().join("nginx.stderr");
    wait_for("the error on stderr", Duration::from_secs(10), || async {
        std::fs::read_to_string(&stderr)
            .unwrap_or_default()
            .contains("connect() failed")
            .then_some(())
    })
    .await;
    assert!(!dir.path().join("error.log").exists());
}
