//! The runtime against each Erigon release it knows (fake-erigon modelling it): argv accepted,
//! three dedicated nodes at once, every port freed; what it does with releases it does not know or
//! binaries that cannot say which release they are; STATUS's release, limits and lag.

use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use erigolem_primitives::{NodeState, RpcLimits};
use erigolem_runtime_client::{ClientError, Session};
use erigolem_test_utils::{fake_erigon, rpc, wait_for, Provider};
use serde_json::json;

use crate::{auth, block_through};

/// A provider whose `erigon` is fake-erigon modelling `version` (`split`: with its rpcdaemon).
async fn provider_with(
    version: &str,
    env: &[(&str, &str)],
    instances: u16,
    split: bool,
) -> (Provider, tempfile::TempDir) {
    provider_tuned(version, env, instances, split, |_| {}).await
}

async fn provider_tuned(
    version: &str,
    env: &[(&str, &str)],
    instances: u16,
    split: bool,
    tune: impl FnOnce(&mut erigolem_node_service::RuntimeConfig),
) -> (Provider, tempfile::TempDir) {
    let bins = tempfile::tempdir().unwrap();
    let (erigon, rpcdaemon) = fake_erigon(bins.path(), version, env);
    let provider = Provider::start(instances, |c| {
        let e = c.engines.erigon.as_mut().unwrap();
        e.binary = erigon;
        e.rpcdaemon = split.then_some(rpcdaemon);
        tune(c);
    })
    .await;
    (provider, bins)
}

fn range_is_free(provider: &Provider) -> bool {
    let r = provider.config.port_range;
    (r.start..r.end).all(|p| {
        TcpListener::bind(("0.0.0.0", p)).is_ok() && UdpSocket::bind(("0.0.0.0", p)).is_ok()
    })
}

/// For each release (and the Erigon 2 split layout): three dedicated nodes at once through the
/// real runtime and Nginx, each answering on its own URL; shutting them down frees every port.
#[tokio::test]
async fn three_dedicated_nodes_of_each_release_side_by_side() {
    for (version, split, network) in [
        ("3.3.10", false, "sepolia"),
        ("3.4.2", false, "hoodi"),
        ("3.5.3", false, "mainnet"),
        ("3.6.1", false, "hoodi"),
        ("2.60.10", true, "sepolia"),
    ] {
        let (provider, _bins) = provider_with(version, &[], 3, split).await;
        let starts = (0..3).map(|i| {
            let runtime = provider.runtime(&format!("{version}-{i}"));
            let args = format!(r#"{{"network":"{network}","mode":"dedicated"}}"#);
            async move {
                runtime
                    .start(&args)
                    .await
                    .unwrap_or_else(|e| panic!("{version}: {e}"))
            }
        });
        let sessions: Vec<Session> = futures::future::join_all(starts).await;
        for s in &sessions {
            let status = s.status().await.unwrap();
            assert_eq!(status.engine_version.as_deref(), Some(version));
            assert!(
                status.warnings.is_empty(),
                "{version}: {:?}",
                status.warnings
            );
            block_through(&status, Some(auth(&status)))
                .await
                .unwrap_or_else(|e| panic!("{version}: {e:?}"));
            let client = rpc(
                &status.url,
                Some(auth(&status)),
                "web3_clientVersion",
                json!([]),
            )
            .await
            .unwrap();
            assert!(client
                .as_str()
                .unwrap()
                .starts_with(&format!("erigon/{version}/")));
        }
        futures::future::join_all(
            sessions
                .into_iter()
                .map(|s| async move { s.shutdown().await.unwrap() }),
        )
        .await;
        assert!(provider.gateway_entries().is_empty());
        assert!(range_is_free(&provider), "{version}: a port is still held");
    }
}

/// The limits a dedicated node runs with, as its release allows, in STATUS; and they hold: a
/// 5,000-block `eth_getLogs` that Erigon's own default (1,000) refuses answers through the URL.
#[tokio::test]
async fn status_shows_the_release_and_the_limits_it_runs_with() {
    let env = [
        ("FAKE_ERIGON_SYNC_TARGET", "20000"),
        ("FAKE_ERIGON_SYNC_RATE", "1000000"),
    ];
    let (newest, _bins) = provider_with("3.6.1", &env, 1, false).await;
    let session = newest
        .runtime("l1")
        .start(r#"{"network":"mainnet"}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    assert_eq!(
        status.limits,
        Some(erigolem_node_service::dedicated_rpc_limits())
    );
    assert_eq!(status.peers, Some(5));
    assert!(status.behind_seconds.is_some());
    let logs = rpc(
        &status.url,
        Some(auth(&status)),
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": "0x1388"}]),
    )
    .await;
    assert_eq!(
        logs.unwrap(),
        json!([]),
        "the raised block range limit is not in force"
    );
    session.shutdown().await.unwrap();

    // 3.3 has no block range, log count or concurrency limit: STATUS says so (null).
    let (old, _bins) = provider_with("3.3.10", &[], 1, false).await;
    let session = old
        .runtime("l2")
        .start(r#"{"network":"sepolia"}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    assert_eq!(
        status.limits,
        Some(RpcLimits {
            block_range: None,
            logs_max_results: None,
            max_concurrency: None,
            ..erigolem_node_service::dedicated_rpc_limits()
        })
    );
    session.shutdown().await.unwrap();
}

/// A release newer than the runtime knows runs with the newest known command line, and says so.
#[tokio::test]
async fn a_newer_release_runs_with_a_warning() {
    let (provider, _bins) = provider_with("3.9.0", &[], 1, false).await;
    let runtime = provider.runtime("new");
    let said = runtime.test().await.unwrap();
    assert!(
        said.contains(
            "warning: Erigon 3.9.0 is newer than the newest release this runtime knows (3.6)"
        ),
        "{said}"
    );
    let session = runtime.start(r#"{"network":"hoodi"}"#).await.unwrap();
    let status = session.status().await.unwrap();
    assert_eq!(status.engine_version.as_deref(), Some("3.9.0"));
    assert!(
        status.warnings[0].contains("runs with 3.6's command line"),
        "{:?}",
        status.warnings
    );
    block_through(&status, Some(auth(&status))).await.unwrap();
    session.shutdown().await.unwrap();
}

/// An `erigon` that prints no version, or crashes when asked: its networks are not offered, `test`
/// fails with the reason, a start is refused with it; the dev chain is still served.
#[tokio::test]
async fn an_erigon_that_cannot_say_its_version_is_not_offered() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 2] = [
        (
            "three-point-six",
            &[],
            "printed \"erigon version three-point-six-fa4e2b1c\": not an Erigon version",
        ),
        (
            "3.6.1",
            &[("FAKE_ERIGON_VERSION_CRASH", "1")],
            "--version` failed (exit status: 2): panic: runtime error",
        ),
    ];
    for (version, env, reason) in cases {
        let (provider, _bins) = provider_with(version, env, 1, false).await;
        let runtime = provider.runtime("v");
        let offer = runtime.offer_template().await.unwrap();
        assert_eq!(
            offer["properties"]["erigolem.networks"],
            json!(["dev"]),
            "{version}"
        );
        assert_eq!(offer["properties"]["erigolem.prunes"], json!([]));
        assert_eq!(runtime.deploy().await.unwrap().valid, Ok(()));
        let err = runtime.test().await.unwrap_err().to_string();
        assert!(
            err.contains("the erigon binary is not usable") && err.contains(reason),
            "{err}"
        );
        let err = runtime.start(r#"{"network":"mainnet"}"#).await.unwrap_err();
        let ClientError::StartFailed { log, .. } = err else {
            panic!("{err}")
        };
        assert!(log.contains(reason), "{log}");
        assert!(provider.instance_dirs().is_empty());
        assert!(range_is_free(&provider));
    }
}

/// A node told to fall behind: STATUS's `behind_seconds` grows while its block stays.
#[tokio::test]
async fn status_behind_seconds_grows_when_the_node_lags() {
    let env = [
        ("FAKE_ERIGON_SYNC_TARGET", "100"),
        ("FAKE_ERIGON_SYNC_RATE", "1000"),
        ("FAKE_ERIGON_SLOT_SECS", "1"),
        ("FAKE_ERIGON_LAG_AFTER_SECS", "1"),
    ];
    // HEALTH asks Erigon's /health whether the head is at most 2 s old.
    let (provider, _bins) =
        provider_tuned("3.6.1", &env, 1, false, |c| c.health.max_seconds_behind = 2).await;
    let session = provider
        .runtime("lag")
        .start(r#"{"network":"hoodi"}"#)
        .await
        .unwrap();
    let first = wait_for(
        "the node to be at the tip",
        Duration::from_secs(10),
        || async {
            // STATUS's calls run at slightly different moments: wait for one wholly at the tip.
            let s = session.status().await.ok()?;
            (s.state == NodeState::Running && s.block == Some(100) && s.behind_seconds <= Some(1))
                .then_some(s)
        },
    )
    .await;
    let lagging = wait_for(
        "behind_seconds to grow past 3",
        Duration::from_secs(10),
        || async {
            let s = session.status().await.ok()?;
            s.behind_seconds.filter(|b| *b >= 3).map(|_| s)
        },
    )
    .await;
    assert_eq!(lagging.block, first.block);
    assert_eq!(
        lagging.state,
        NodeState::Syncing,
        "the network moved on: {lagging:?}"
    );
    let health = session.health().await.unwrap();
    assert!(!health.healthy, "{health:?}");
    let checks = health.checks.unwrap();
    assert!(
        checks["max_seconds_behind"].starts_with("ERROR: timestamp too old"),
        "{checks:?}"
    );
    session.shutdown().await.unwrap();
}
