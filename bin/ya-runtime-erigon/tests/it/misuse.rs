//! Bad input and broken setups: a clear error, and nothing left behind.

use erigolem_runtime_client::ClientError;
use erigolem_test_utils::{anvil_bin, Provider};

/// Starts with `args`, expects the start to fail, returns the runtime's own words.
async fn start_fails(provider: &Provider, args: &str) -> String {
    let err = provider.runtime("bad").start(args).await.unwrap_err();
    let ClientError::StartFailed { code, log } = err else {
        panic!("unexpected error: {err}")
    };
    assert_ne!(code, 0);
    assert!(
        provider.gateway_entries().is_empty(),
        "entry left behind for {args}"
    );
    assert!(
        provider.sockets().is_empty(),
        "password file left behind for {args}"
    );
    assert!(
        provider.instance_dirs().is_empty(),
        "instance dir left behind for {args}: {:?}",
        provider.instance_dirs()
    );
    log
}

#[tokio::test]
async fn bad_start_arguments_are_refused_with_a_reason() {
    let provider = Provider::start(2, |_| {}).await;
    let cases = [
        (r#"{"network":"ropsten"}"#, "unknown variant `ropsten`"),
        (
            r#"{"network":"dev","mode":"solo"}"#,
            "unknown variant `solo`",
        ),
        (
            r#"{"network":"dev","mode":"shared"}"#,
            "mode shared is not available for dev",
        ),
        (r#"{"network":"dev""#, "invalid start arguments"),
        (
            r#"{"network":"dev","colour":"red"}"#,
            "unknown field `colour`",
        ),
        (
            r#"{"network":"dev","instance":"x;}include /etc/passwd"}"#,
            "invalid instance name",
        ),
        (
            r#"{"network":"dev","instance":"../../etc"}"#,
            "invalid instance name",
        ),
        (
            r#"{"network":"dev","methods":["eth_*","eth call"]}"#,
            "invalid method pattern",
        ),
        (
            r#"{"network":"dev","allow_origins":["*"]}"#,
            "invalid origin",
        ),
        (
            r#"{"network":"dev","allow_ips":["10.0.0.0/99"]}"#,
            "invalid IP allowlist entry",
        ),
    ];
    for (args, expected) in cases {
        let log = start_fails(&provider, args).await;
        assert!(
            log.contains(expected),
            "{args}: expected {expected:?} in:\n{log}"
        );
    }
}

#[tokio::test]
async fn missing_engine_binary_is_named() {
    let provider = Provider::start(2, |c| {
        c.engines.erigon.as_mut().unwrap().binary = "/opt/nowhere/erigon".into();
    })
    .await;
    let runtime = provider.runtime("a");
    let deployed = runtime.deploy().await.unwrap();
    let reason = deployed.valid.unwrap_err();
    assert!(reason.contains("/opt/nowhere/erigon"), "{reason}");
    let err = runtime.test().await.unwrap_err();
    assert!(err.to_string().contains("/opt/nowhere/erigon"), "{err}");
    let log = start_fails(&provider, r#"{"network":"mainnet"}"#).await;
    assert!(log.contains("/opt/nowhere/erigon"), "{log}");
}

#[tokio::test]
async fn unwritable_data_dir_is_named() {
    let provider = Provider::start(2, |_| {}).await;
    // A data dir below a regular file cannot be created, even by root.
    let blocker = provider.root.join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let mut provider = provider;
    provider.config.data_dir = blocker.join("data");
    provider.write_config();
    let deployed = provider.runtime("a").deploy().await.unwrap();
    assert!(deployed.valid.unwrap_err().contains("not-a-dir/data"));
    let err = provider
        .runtime("b")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not-a-dir/data"), "{err}");
    assert!(provider.gateway_entries().is_empty());
}

#[tokio::test]
async fn nginx_down_is_reported_by_deploy() {
    let mut provider = Provider::start(2, |_| {}).await;
    provider.config.nginx.pid_file = provider.root.join("no-such.pid");
    provider.write_config();
    let reason = provider
        .runtime("a")
        .deploy()
        .await
        .unwrap()
        .valid
        .unwrap_err();
    assert!(reason.contains("nginx is not running"), "{reason}");
}

#[tokio::test]
async fn exhausted_port_range_is_a_clear_error() {
    let provider = Provider::start(1, |_| {}).await;
    let first = provider
        .runtime("first")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    let err = provider
        .runtime("second")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no free ports left"), "{err}");
    assert_eq!(provider.gateway_entries().len(), 1);
    first.shutdown().await.unwrap();
}

#[tokio::test]
async fn node_that_cannot_start_is_reported_with_its_log() {
    // anvil refuses an unknown flag: the engine dies at start and its words reach the error.
    let provider = Provider::start(2, |c| {
        c.engines.erigon.as_mut().unwrap().binary = anvil_bin();
    })
    .await;
    let log = start_fails(&provider, r#"{"network":"mainnet"}"#).await;
    assert!(log.contains("exited during start"), "{log}");
    assert!(
        log.contains("--datadir"),
        "anvil's complaint missing:\n{log}"
    );
}
