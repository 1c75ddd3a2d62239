//! Engine argv per Erigon release, checked two ways: as tables against what each release accepts,
//! and for real through fake-erigon modelling that release (it refuses unknown flags as Erigon does
//! and binds every port the release opens, so a clash fails here as it would on a provider); and
//! health probes against anvil.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use erigolem_engine::{
    AnvilEngine, ErigonEngine, ErigonHealthQuery, ErigonNode, ErigonRelease, ErigonVersion, Family,
    PortBlock, RpcClient,
};
use erigolem_primitives::{Network, Prune, RpcLimits};
use erigolem_supervisor::{ProcessSpec, RestartPolicy, Supervised};
use erigolem_test_utils::{anvil_bin, fake_erigon, free_port_block, wait_for};

fn release(version: &str) -> ErigonRelease {
    ErigonRelease::new(ErigonVersion::parse(version).unwrap()).unwrap()
}

const LIMITS: RpcLimits = RpcLimits {
    block_range: Some(10_000),
    logs_max_results: Some(100_000),
    batch_limit: Some(1_000),
    batch_concurrency: Some(4),
    max_concurrency: Some(512),
};

fn flags(spec: &ProcessSpec) -> Vec<(String, Option<String>)> {
    spec.args
        .iter()
        .map(|a| {
            let a = a.to_string_lossy();
            let a = a
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("{a} is not a --flag"));
            match a.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (a.to_owned(), None),
            }
        })
        .collect()
}

fn value<'a>(flags: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    flags
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.as_deref())
}

fn has(flags: &[(String, Option<String>)], name: &str) -> bool {
    flags.iter().any(|(k, _)| k == name)
}

fn argv(
    r: &ErigonRelease,
    engine: &ErigonEngine,
    network: Network,
    prune: Prune,
) -> Vec<ProcessSpec> {
    let node = ErigonNode {
        network,
        prune,
        datadir: Path::new("/data/i1"),
        ports: PortBlock { base: 41_000 },
        limits: &LIMITS,
    };
    engine.processes(r, &node).unwrap()
}

fn erigon3() -> ErigonEngine {
    ErigonEngine {
        binary: "/usr/local/bin/erigon".into(),
        rpcdaemon: None,
    }
}

/// What each release's argv must and must not contain (docs/erigon-flags.md).
#[test]
fn argv_per_release_follows_the_compatibility_table() {
    // (version, --p2p.allowed-ports, --mcp.disable, blockrange, logs.maxresults, max.concurrency)
    let table = [
        ("3.0.12", true, false, false, false, false),
        ("3.3.10", true, false, false, false, false),
        ("3.4.2", true, true, true, false, false),
        ("3.4.3", true, true, true, true, true),
        ("3.5.3", false, true, true, true, true),
        ("3.6.1", false, true, true, true, true),
        ("3.9.0", false, true, true, true, true),
    ];
    for (version, allowed, mcp, range, logs, conc) in table {
        let r = release(version);
        for network in r.flags.chains {
            for prune in r.flags.prune_modes {
                let procs = argv(&r, &erigon3(), *network, *prune);
                assert_eq!(procs.len(), 1, "Erigon 3 is one process");
                let f = flags(&procs[0]);
                let names: BTreeSet<_> = f.iter().map(|(k, _)| k.as_str()).collect();
                assert_eq!(names.len(), f.len(), "{version}: a flag is repeated");
                assert_eq!(value(&f, "chain"), Some(network.as_str()));
                assert_eq!(value(&f, "prune.mode"), Some(prune.as_str()));
                assert_eq!(value(&f, "datadir"), Some("/data/i1"));
                assert_eq!(has(&f, "p2p.allowed-ports"), allowed, "{version}");
                assert_eq!(has(&f, "mcp.disable"), mcp, "{version}");
                assert_eq!(
                    value(&f, "rpc.blockrange.limit").is_some(),
                    range,
                    "{version}"
                );
                assert_eq!(
                    value(&f, "rpc.logs.maxresults").is_some(),
                    logs,
                    "{version}"
                );
                assert_eq!(
                    value(&f, "rpc.max.concurrency").is_some(),
                    conc,
                    "{version}"
                );
                assert_eq!(value(&f, "rpc.batch.limit"), Some("1000"));
                assert_eq!(value(&f, "rpc.batch.concurrency"), Some("4"));
                // Only loopback for RPC, engine API and private API; no metrics or pprof.
                assert_eq!(value(&f, "http.addr"), Some("127.0.0.1"));
                assert_eq!(value(&f, "authrpc.addr"), Some("127.0.0.1"));
                assert!(value(&f, "private.api.addr")
                    .unwrap()
                    .starts_with("127.0.0.1:"));
                assert!(!names
                    .iter()
                    .any(|n| n.starts_with("metrics") || n.starts_with("pprof")));
                assert!(!value(&f, "http.api")
                    .unwrap()
                    .split(',')
                    .any(|ns| ns == "engine" || ns == "admin"));
            }
        }
    }
    // 3.3 opens two devp2p listeners: both ports in the block, the first is `--port`.
    let f = flags(
        &argv(
            &release("3.3.10"),
            &erigon3(),
            Network::Mainnet,
            Prune::Full,
        )[0],
    );
    assert_eq!(value(&f, "port"), Some("41005"));
    assert_eq!(value(&f, "p2p.allowed-ports"), Some("41005,41006"));
}

#[test]
fn what_a_release_cannot_do_is_refused_with_the_reason() {
    let node = |network, prune| ErigonNode {
        network,
        prune,
        datadir: Path::new("/d"),
        ports: PortBlock { base: 41_000 },
        limits: &LIMITS,
    };
    let err = erigon3()
        .processes(&release("3.0.12"), &node(Network::Mainnet, Prune::Blocks))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Erigon 3.0.12 has no prune mode blocks"),
        "{err}"
    );
    let err = erigon3()
        .processes(&release("2.60.10"), &node(Network::Hoodi, Prune::Full))
        .unwrap_err();
    assert!(err.to_string().contains("does not serve hoodi"), "{err}");
}

#[test]
fn every_port_of_an_instance_is_its_own() {
    for version in ["2.60.10", "3.3.10", "3.6.1"] {
        let r = release(version);
        let mut seen = BTreeSet::new();
        for base in [41_000, 41_000 + PortBlock::LEN] {
            let node = ErigonNode {
                network: Network::Mainnet,
                prune: Prune::Full,
                datadir: Path::new("/d"),
                ports: PortBlock { base },
                limits: &LIMITS,
            };
            let f = flags(&erigon3().processes(&r, &node).unwrap()[0]);
            let mut ports = BTreeSet::new();
            for (name, v) in &f {
                let Some(v) = v else { continue };
                if name.ends_with("port") || name.ends_with("ports") || name == "private.api.addr" {
                    for p in v.rsplit(':').next().unwrap().split(',') {
                        ports.insert(p.parse::<u16>().unwrap());
                    }
                }
            }
            for p in ports {
                assert!(
                    (base..base + PortBlock::LEN).contains(&p),
                    "{version}: port {p} outside its block"
                );
                assert!(seen.insert(p), "{version}: port {p} used by two instances");
            }
        }
    }
}

#[test]
fn erigon2_split_layout_runs_rpcdaemon_on_the_private_api() {
    let engine = ErigonEngine {
        binary: "erigon".into(),
        rpcdaemon: Some("rpcdaemon".into()),
    };
    let r = release("2.60.10");
    assert_eq!(r.flags.family, Family::Erigon2);
    let procs = argv(&r, &engine, Network::Sepolia, Prune::Full);
    assert_eq!(procs.len(), 2);
    let (node, daemon) = (flags(&procs[0]), flags(&procs[1]));
    assert_eq!(value(&node, "http"), Some("false"));
    assert_eq!(value(&node, "prune"), Some("hrtc"));
    assert!(!has(&node, "prune.mode"));
    assert!(
        !has(&daemon, "rpc.blockrange.limit"),
        "Erigon 2 has no block range limit"
    );
    assert_eq!(
        value(&daemon, "private.api.addr"),
        value(&node, "private.api.addr")
    );
    assert_eq!(value(&daemon, "http.port"), Some("41000"));
    let archive = flags(&argv(&r, &engine, Network::Sepolia, Prune::Archive)[0]);
    assert!(
        !has(&archive, "prune"),
        "an Erigon 2 archive node prunes nothing"
    );
}

fn fake_binaries(dir: &Path, version: &str) -> (PathBuf, PathBuf) {
    fake_erigon(dir, version, &[])
}

/// Whether every port of `block` can be bound again (TCP on loopback and any, UDP on any).
fn block_is_free(block: PortBlock) -> bool {
    (block.base..block.base + PortBlock::LEN).all(|p| {
        TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("0.0.0.0", p)).is_ok()
            && UdpSocket::bind(("0.0.0.0", p)).is_ok()
    })
}

/// Fails the test at once with the node's log when it refused its command line or a port.
fn refused(version: &str, log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let refused = ["Error:", "Incorrect Usage", "Fatal", "EROR"];
    assert!(
        !refused.iter().any(|r| text.contains(r)),
        "{version}: {text}"
    );
}

/// For each release: three dedicated instances on one host at once, all answering through their
/// own RPC port, argv accepted by the release; stopping them frees every port.
#[tokio::test]
async fn three_instances_of_each_release_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    for (version, split) in [
        ("3.3.10", false),
        ("3.4.2", false),
        ("3.5.3", false),
        ("3.6.1", false),
        ("2.60.10", true),
    ] {
        let (erigon, rpcdaemon) = fake_binaries(dir.path(), version);
        let engine = ErigonEngine {
            binary: erigon.clone(),
            rpcdaemon: split.then_some(rpcdaemon),
        };
        // What the runtime does: ask the binary which release it is.
        let detected = erigolem_engine::detect_version(&erigon, Duration::from_secs(10));
        let r = ErigonRelease::new(detected.await.unwrap()).unwrap();
        assert_eq!(r.version.to_string(), version);
        let base = free_port_block(PortBlock::LEN * 3);
        let mut running = Vec::new();
        for i in 0..3 {
            let ports = PortBlock {
                base: base + i * PortBlock::LEN,
            };
            let datadir = dir.path().join(format!("{version}-{i}"));
            let node = ErigonNode {
                network: Network::Sepolia,
                prune: Prune::Full,
                datadir: &datadir,
                ports,
                limits: &LIMITS,
            };
            let mut procs = Vec::new();
            for spec in engine.processes(&r, &node).unwrap() {
                let log = datadir.with_extension("log");
                procs.push(Supervised::spawn(spec, &log, RestartPolicy::default()).unwrap());
                // rpcdaemon needs the node's private API: start it once the node listens.
                let private = ("127.0.0.1", ports.private_api());
                wait_for(
                    "the node's private API",
                    Duration::from_secs(10),
                    || async {
                        refused(version, &log);
                        std::net::TcpStream::connect(private).ok().map(drop)
                    },
                )
                .await;
            }
            running.push((procs, ports, datadir));
        }
        for (_, ports, datadir) in &running {
            let rpc = RpcClient::new(format!("http://127.0.0.1:{}", ports.http()));
            let log = datadir.with_extension("log");
            wait_for(
                &format!("{version} instance to answer"),
                Duration::from_secs(10),
                || async {
                    refused(version, &log);
                    rpc.is_ready().await.then_some(())
                },
            )
            .await;
            assert_eq!(rpc.chain_id().await.unwrap(), Network::Sepolia.chain_id());
            let client = rpc
                .call("web3_clientVersion", serde_json::json!([]))
                .await
                .unwrap();
            assert!(
                client
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("erigon/{version}")),
                "{client}"
            );
        }
        for (procs, ports, _) in running {
            for p in procs.into_iter().rev() {
                p.stop().await;
            }
            assert!(
                block_is_free(ports),
                "{version}: a port of {ports:?} is still held"
            );
        }
    }
}

#[tokio::test]
async fn erigon_health_checks_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let (erigon, _) = fake_binaries(dir.path(), "3.6.1");
    let ports = PortBlock {
        base: free_port_block(PortBlock::LEN),
    };
    let node = ErigonNode {
        network: Network::Hoodi,
        prune: Prune::Minimal,
        datadir: dir.path(),
        ports,
        limits: &LIMITS,
    };
    let engine = ErigonEngine {
        binary: erigon,
        rpcdaemon: None,
    };
    let spec = engine
        .processes(&release("3.6.1"), &node)
        .unwrap()
        .remove(0)
        .env("FAKE_ERIGON_SYNC_TARGET", "100")
        .env("FAKE_ERIGON_SYNC_RATE", "1000")
        .env("FAKE_ERIGON_LAG_AFTER_SECS", "1")
        .env("FAKE_ERIGON_SLOT_SECS", "1");
    let node = Supervised::spawn(spec, dir.path().join("log"), RestartPolicy::default()).unwrap();
    let rpc = RpcClient::new(format!("http://127.0.0.1:{}", ports.http()));
    wait_for("fake-erigon to answer", Duration::from_secs(10), || async {
        rpc.is_ready().await.then_some(())
    })
    .await;
    let query = ErigonHealthQuery {
        synced: true,
        min_peer_count: Some(1),
        max_seconds_behind: Some(2),
    };
    // Catching up (100 blocks at 1,000/s), then in sync.
    let health = wait_for(
        "the node to be healthy",
        Duration::from_secs(10),
        // One probe's calls run at slightly different moments: wait for one wholly at the tip.
        || async {
            Some(rpc.health(Some(&query)).await)
                .filter(|h| h.healthy && h.block == Some(100) && h.behind_seconds <= Some(1))
        },
    )
    .await;
    assert_eq!(health.checks.as_ref().unwrap()["synced"], "HEALTHY");
    assert!(health.behind_seconds.unwrap() <= 1, "{health:?}");
    // Past 1 s the head stops following: it ages while the network moves on.
    let lagging = wait_for(
        "the node to fall 3 s behind",
        Duration::from_secs(10),
        || async {
            let h = rpc.health(Some(&query)).await;
            h.behind_seconds.filter(|b| *b >= 3).map(|_| h)
        },
    )
    .await;
    assert!(!lagging.healthy, "{lagging:?}");
    let checks = lagging.checks.unwrap();
    assert!(
        checks["max_seconds_behind"].starts_with("ERROR: timestamp too old"),
        "{checks:?}"
    );
    assert_eq!(checks["synced"], "ERROR: not synced");
    assert_eq!(checks["min_peer_count"], "HEALTHY");
    node.stop().await;
}

#[tokio::test]
async fn anvil_engine_is_a_dev_chain_that_grows_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = AnvilEngine {
        binary: anvil_bin(),
        block_time: 1,
    };
    let ports = PortBlock {
        base: free_port_block(PortBlock::LEN),
    };
    let rpc = RpcClient::new(format!("http://127.0.0.1:{}", ports.http()));
    let node = Supervised::spawn(
        engine.process(dir.path(), ports),
        dir.path().join("log"),
        RestartPolicy::default(),
    )
    .unwrap();
    wait_for("anvil to answer", Duration::from_secs(20), || async {
        rpc.is_ready().await.then_some(())
    })
    .await;
    assert_eq!(rpc.chain_id().await.unwrap(), Network::Dev.chain_id());
    let height = wait_for("two blocks", Duration::from_secs(10), || async {
        rpc.block_number().await.ok().filter(|b| *b >= 2)
    })
    .await;
    let health = rpc.health(None).await;
    assert!(
        health.healthy && health.syncing == Some(false) && health.checks.is_none(),
        "{health:?}"
    );
    assert!(health.behind_seconds.unwrap() <= 2, "{health:?}");
    node.stop().await; // SIGTERM: anvil dumps its state
    let node = Supervised::spawn(
        engine.process(dir.path(), ports),
        dir.path().join("log"),
        RestartPolicy::default(),
    )
    .unwrap();
    wait_for("anvil to come back", Duration::from_secs(20), || async {
        rpc.is_ready().await.then_some(())
    })
    .await;
    assert!(
        rpc.block_number().await.unwrap() >= height,
        "the dev chain did not resume from its state"
    );
    node.stop().await;
}
