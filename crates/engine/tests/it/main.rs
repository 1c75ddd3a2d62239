//! Engine argv against Erigon 3's documented flags, run for real through fake-erigon (which rejects
//! unknown flags as Erigon does), and health probes against anvil.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use erigolem_engine::{AnvilEngine, ErigonEngine, PortBlock, RpcClient};
use erigolem_primitives::{Network, Prune};
use erigolem_supervisor::{ProcessSpec, RestartPolicy, Supervised};
use erigolem_test_utils::{anvil_bin, free_port_block, wait_for, workspace_bin};

/// Erigon 3 flags (name → takes a value), from `erigon --help` of v3.x and `cmd/utils/flags.go`;
/// see docs/erigon-flags.md.
const ERIGON3_FLAGS: &[&str] = &[
    "datadir",
    "chain",
    "prune.mode",
    "port",
    "p2p.allowed-ports",
    "http",
    "http.addr",
    "http.port",
    "http.api",
    "ws",
    "ws.port",
    "authrpc.addr",
    "authrpc.port",
    "torrent.port",
    "private.api.addr",
    "caplin.discovery.port",
    "caplin.discovery.tcpport",
    "sentinel.port",
    "beacon.api.port",
    "nat",
    "log.dir.path",
];
/// Erigon 2's rpcdaemon flags used by the split layout.
const RPCDAEMON_FLAGS: &[&str] = &[
    "datadir",
    "private.api.addr",
    "http",
    "http.addr",
    "http.port",
    "http.api",
    "ws",
];

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

fn value<'a>(flags: &'a [(String, Option<String>)], name: &str) -> &'a str {
    flags
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.as_deref())
        .unwrap_or_else(|| panic!("no --{name}"))
}

#[test]
fn erigon3_argv_for_every_network_and_prune_mode() {
    let engine = ErigonEngine {
        binary: "/usr/local/bin/erigon".into(),
        rpcdaemon: None,
    };
    let ports = PortBlock { base: 41_000 };
    for network in ErigonEngine::networks() {
        for prune in [Prune::Full, Prune::Archive, Prune::Minimal] {
            let procs = engine.processes(network, prune, Path::new("/data/i1"), ports);
            assert_eq!(procs.len(), 1, "Erigon 3 is one process");
            let f = flags(&procs[0]);
            for (name, _) in &f {
                assert!(
                    ERIGON3_FLAGS.contains(&name.as_str()),
                    "--{name} is not a documented Erigon 3 flag"
                );
            }
            let names: BTreeSet<_> = f.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(names.len(), f.len(), "a flag is repeated");
            assert_eq!(value(&f, "chain"), network.as_str());
            assert_eq!(value(&f, "prune.mode"), prune.as_str());
            assert_eq!(value(&f, "datadir"), "/data/i1");
            // Only loopback for RPC, engine API and private API; no metrics or pprof listeners.
            assert_eq!(value(&f, "http.addr"), "127.0.0.1");
            assert_eq!(value(&f, "authrpc.addr"), "127.0.0.1");
            assert!(value(&f, "private.api.addr").starts_with("127.0.0.1:"));
            assert!(!names
                .iter()
                .any(|n| n.starts_with("metrics") || n.starts_with("pprof")));
            assert!(!value(&f, "http.api")
                .split(',')
                .any(|ns| ns == "engine" || ns == "admin"));
            assert!(names.contains("ws"));
        }
    }
}

#[test]
fn every_port_of_an_instance_is_its_own() {
    let engine = ErigonEngine {
        binary: "erigon".into(),
        rpcdaemon: None,
    };
    let mut seen = BTreeSet::new();
    for base in [41_000, 41_000 + PortBlock::LEN] {
        let f = flags(
            &engine.processes(
                Network::Mainnet,
                Prune::Full,
                Path::new("/d"),
                PortBlock { base },
            )[0],
        );
        let mut ports = Vec::new();
        for (name, v) in &f {
            let Some(v) = v else { continue };
            if name.ends_with("port") || name.ends_with("ports") || name == "private.api.addr" {
                for p in v.rsplit(':').next().unwrap().split(',') {
                    ports.push(p.parse::<u16>().unwrap());
                }
            }
        }
        for p in ports {
            assert!(
                (base..base + PortBlock::LEN).contains(&p),
                "port {p} outside its block"
            );
            assert!(
                seen.insert(p) || f.iter().any(|(n, _)| n == "p2p.allowed-ports"),
                "port {p} used twice"
            );
        }
    }
}

#[test]
fn erigon2_split_layout_runs_rpcdaemon_on_the_private_api() {
    let engine = ErigonEngine {
        binary: "erigon".into(),
        rpcdaemon: Some("rpcdaemon".into()),
    };
    let ports = PortBlock { base: 41_000 };
    let procs = engine.processes(Network::Sepolia, Prune::Full, Path::new("/d"), ports);
    assert_eq!(procs.len(), 2);
    let (node, daemon) = (flags(&procs[0]), flags(&procs[1]));
    assert_eq!(value(&node, "http"), "false");
    for (name, _) in &daemon {
        assert!(
            RPCDAEMON_FLAGS.contains(&name.as_str()),
            "--{name} is not an rpcdaemon flag"
        );
    }
    assert_eq!(
        value(&daemon, "private.api.addr"),
        value(&node, "private.api.addr")
    );
    assert_eq!(value(&daemon, "http.port"), ports.http().to_string());
}

#[tokio::test]
async fn fake_erigon_accepts_the_argv_and_serves_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let engine = ErigonEngine {
        binary: workspace_bin("fake-erigon"),
        rpcdaemon: None,
    };
    let ports = PortBlock {
        base: free_port_block(PortBlock::LEN),
    };
    let spec = engine
        .processes(Network::Holesky, Prune::Archive, dir.path(), ports)
        .remove(0);
    let node = Supervised::spawn(spec, dir.path().join("log"), RestartPolicy::default()).unwrap();
    let rpc = RpcClient::new(format!("http://127.0.0.1:{}", ports.http()));
    wait_for("fake-erigon to answer", Duration::from_secs(10), || async {
        rpc.is_ready().await.then_some(())
    })
    .await;
    assert_eq!(rpc.chain_id().await.unwrap(), Network::Holesky.chain_id());
    let health = rpc.health().await;
    assert!(health.rpc && health.peers.is_some(), "{health:?}");
    assert!(health.client_version.unwrap().starts_with("erigon/3"));
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
    let health = rpc.health().await;
    assert!(
        health.healthy && health.syncing == Some(false),
        "{health:?}"
    );
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
