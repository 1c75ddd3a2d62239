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
    // The dev chain still deploys; Erigon's networks are not offered; `test` names the binary.
    let deployed = runtime.deploy().await.unwrap();
    assert_eq!(deployed.valid, Ok(()), "{:?}", deployed.raw);
    let offer = runtime.offer_template().await.unwrap();
    assert_eq!(
        offer["properties"]["erigolem.networks"],
        serde_json::json!(["dev"])
    );
    let err = runtime.test().await.unwrap_err();
    assert!(err.to_string().contains("/opt/nowhere/erigon"), "{err}");
    let log = start_fails(&provider, r#"{"network":"mainnet"}"#).await;
    assert!(log.contains("/opt/nowhere/erigon"), "{log}");
    // With no engine that runs at all, deploy fails and says why.
    let mut provider = provider;
    provider.config.engines.anvil.as_mut().unwrap().binary = "/opt/nowhere/anvil".into();
    provider.write_config();
    let reason = provider
        .runtime("b")
        .deploy()
        .await
        .unwrap()
        .valid
        .unwrap_err();
    assert!(
        reason.contains("no network can be served") && reason.contains("/opt/nowhere/anvil"),
        "{reason}"
    );
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
    // The node dies at once, every time: its last words reach the error.
    let provider = Provider::start(2, |_| {}).await;
    let err = provider
        .runtime("bad")
        .env("FAKE_ERIGON_CRASH_AFTER_SECS", "0")
        .start(r#"{"network":"mainnet"}"#)
        .await
        .unwrap_err();
    let ClientError::StartFailed { log, .. } = err else {
        panic!("unexpected error: {err}")
    };
    assert!(log.contains("exited during start"), "{log}");
    assert!(log.contains("panic: fake-erigon crash requested"), "{log}");
    assert!(provider.instance_dirs().is_empty());
}

#[tokio::test]
async fn a_binary_that_is_not_erigon_is_named() {
    // anvil in erigon's place: `--version` says it is anvil, so nothing is started.
    let provider = Provider::start(2, |c| {
        c.engines.erigon.as_mut().unwrap().binary = anvil_bin();
    })
    .await;
    let log = start_fails(&provider, r#"{"network":"mainnet"}"#).await;
    assert!(log.contains("printed \"anvil Version:"), "{log}");
    assert!(log.contains("not an Erigon version"), "{log}");
}

#[tokio::test]
async fn holesky_and_unsupported_prune_modes_are_refused_with_the_reason() {
    let provider = Provider::start(2, |_| {}).await;
    let log = start_fails(&provider, r#"{"network":"holesky"}"#).await;
    assert!(log.contains("holesky was shut down"), "{log}");
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = erigolem_test_utils::fake_erigon(dir.path(), "3.0.12", &[]);
    let mut provider = provider;
    provider.config.engines.erigon.as_mut().unwrap().binary = old;
    provider.write_config();
    let log = start_fails(&provider, r#"{"network":"mainnet","prune":"blocks"}"#).await;
    assert!(
        log.contains("Erigon 3.0.12 has no prune mode blocks"),
        "{log}"
    );
}

/// A relative `XDG_DATA_HOME` (as a server with a relative data dir once passed it) still finds
/// the config, instead of silently running on the built-in defaults.
#[tokio::test]
async fn a_relative_xdg_data_home_finds_the_config() {
    let provider = Provider::start(2, |_| {}).await;
    let cwd = std::env::current_dir().unwrap();
    let up = "../".repeat(cwd.components().count() - 1);
    let xdg = provider.root.join("xdg");
    let relative = format!("{up}{}", xdg.strip_prefix("/").unwrap().display());
    let offer = provider
        .runtime("rel")
        .env("XDG_DATA_HOME", &relative)
        .offer_template()
        .await
        .unwrap();
    assert_eq!(
        offer["properties"]["erigolem.networks"],
        serde_json::json!(["mainnet", "sepolia", "hoodi", "dev"]),
        "XDG_DATA_HOME={relative}: {offer}"
    );
}

/// A dedicated Erigon node needs Erigon's published size for its network and prune mode: a
/// mainnet archive (2 TB) is refused on a disk that cannot hold it, saying how much is free and
/// how much the node needs; the dev chain (no published size) still starts.
#[tokio::test]
async fn a_node_that_does_not_fit_the_disk_is_refused_with_the_figures() {
    let provider = Provider::start(2, |c| c.limits.disk_estimates = true).await;
    let log = start_fails(&provider, r#"{"network":"mainnet","prune":"archive"}"#).await;
    assert!(log.contains("not enough disk on this provider: "), "{log}");
    assert!(log.contains("this node needs 2030.0 GB"), "{log}");
    let log = start_fails(&provider, r#"{"network":"mainnet","prune":"full"}"#).await;
    assert!(log.contains("this node needs 419.0 GB"), "{log}");
    let dev = provider.runtime("dev").start(r#"{"network":"dev"}"#).await;
    dev.unwrap().shutdown().await.unwrap();
}

/// A provider that never hosts archive nodes (`limits.prunes`) refuses one whatever its disk, and
/// says which modes it offers; the modes it allows still start.
#[tokio::test]
async fn a_prune_mode_the_provider_does_not_offer_is_refused() {
    use erigolem_primitives::Prune;
    let provider =
        Provider::start(2, |c| c.limits.prunes = vec![Prune::Full, Prune::Minimal]).await;
    let log = start_fails(&provider, r#"{"network":"sepolia","prune":"archive"}"#).await;
    assert!(
        log.contains("prune mode archive is not offered by this provider (offered: full, minimal)"),
        "{log}"
    );
    let node = provider
        .runtime("full")
        .start(r#"{"network":"sepolia","prune":"full"}"#)
        .await;
    node.unwrap().shutdown().await.unwrap();
}

/// A running dedicated node whose disk fills up (here: another process takes the space) is
/// stopped before the disk is full, and STATUS and HEALTH tell the requestor why.
#[tokio::test]
async fn a_node_is_stopped_with_the_reason_when_the_disk_runs_low() {
    const MIB: u64 = 1024 * 1024;
    let scratch = tempfile::tempdir().unwrap();
    let free = || {
        let st = nix::sys::statvfs::statvfs(scratch.path()).unwrap();
        st.blocks_available() * st.fragment_size()
    };
    // Room for the start, and 512 MiB to spare for what else runs on this machine meanwhile.
    let floor = free() - 512 * MIB;
    let provider = Provider::start(2, |c| c.limits.min_free_disk_bytes = floor).await;
    let session = provider
        .runtime("a")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    assert_eq!(status.error, None);
    let pids = crate::node_pids(&provider, status.instance.as_str());
    assert_eq!(pids.len(), 1);
    // Another 1.5 GiB taken: free space is now about 1 GiB under the floor.
    let filler = std::fs::File::create(scratch.path().join("filler")).unwrap();
    nix::fcntl::fallocate(
        &filler,
        nix::fcntl::FallocateFlags::empty(),
        0,
        (1536 * MIB) as i64,
    )
    .unwrap();
    let status = session.status().await.unwrap();
    drop(filler);
    std::fs::remove_file(scratch.path().join("filler")).unwrap();
    assert_eq!(status.state, erigolem_primitives::NodeState::Failed);
    let error = status.error.unwrap_or_default();
    assert!(
        error.starts_with("stopped by the provider: its disk is nearly full ("),
        "{error}"
    );
    assert!(!crate::alive(pids[0]), "the node still runs");
    let health: serde_json::Value =
        serde_json::from_str(&session.run("HEALTH", &[]).await.unwrap()).unwrap();
    assert_eq!(health["healthy"], false, "{health}");
    assert_eq!(health["error"], error.as_str(), "{health}");
    // Stopping the activity still cleans up.
    session.shutdown().await.unwrap();
    assert!(provider.gateway_entries().is_empty());
    assert!(provider.instance_dirs().is_empty());
}
