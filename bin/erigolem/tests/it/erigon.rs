//! The CLI shows what a node runs with: its Erigon release, RPC limits, head age and peers, and
//! that it lags once it falls behind, and its alerts.

use std::time::Duration;

use erigolem_server::backend::local::LocalConfig;
use erigolem_server::{spawn, BackendConfig, ServerConfig};
use erigolem_test_utils::{
    anvil_bin, fake_erigon, free_port, free_port_block, wait_for, workspace_bin,
};
use serde_json::Value;

use crate::{cli, login, ok};

#[tokio::test]
async fn nodes_show_tells_release_limits_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("FAKE_ERIGON_SYNC_TARGET", "100"),
        ("FAKE_ERIGON_SYNC_RATE", "1000"),
        ("FAKE_ERIGON_SLOT_SECS", "1"),
        ("FAKE_ERIGON_LAG_AFTER_SECS", "3"),
    ];
    let (erigon, _) = fake_erigon(dir.path(), "3.6.1", &env);
    let mut config = ServerConfig::test(dir.path().join("server"));
    config.lag_seconds = 3;
    config.backend = Some(BackendConfig::Local(LocalConfig {
        runtime_bin: workspace_bin("ya-runtime-erigon"),
        anvil_bin: Some(anvil_bin()),
        erigon_bin: Some(erigon),
        gateway_listen: ([127, 0, 0, 1], free_port()).into(),
        max_nodes: 1,
        port_base: free_port_block(12),
    }));
    let h = spawn(config).await.unwrap();
    let home = dir.path().join("cli");
    login(&h, &home).await;
    let created: Value = serde_json::from_str(&ok(&cli(
        &h,
        &home,
        &[],
        &[
            "nodes",
            "create",
            "--network",
            "hoodi",
            "--prune",
            "minimal",
            "--wait",
            "--json",
        ],
    )
    .await))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let shown = wait_for(
        "nodes show to tell the head age",
        Duration::from_secs(10),
        || async {
            let out = ok(&cli(&h, &home, &[], &["nodes", "show", &id]).await);
            out.contains(" s behind").then_some(out)
        },
    )
    .await;
    assert!(shown.contains("erigon 3.6.1"), "{shown}");
    assert!(
        shown.contains("eth_getLogs blocks 10000, logs 100000, batch 1000, batch concurrency 4"),
        "{shown}"
    );
    assert!(shown.contains("peers"), "{shown}");
    let lagging = wait_for("the node to lag", Duration::from_secs(20), || async {
        let out = ok(&cli(&h, &home, &[], &["nodes", "show", &id]).await);
        out.contains("lagging:").then_some(out)
    })
    .await;
    assert!(lagging.contains("s behind"), "{lagging}");
    let list = ok(&cli(&h, &home, &[], &["nodes", "list"]).await);
    assert!(list.contains("LAG") && list.contains("lagging:"), "{list}");
    let json: Value =
        serde_json::from_str(&ok(
            &cli(&h, &home, &[], &["nodes", "show", &id, "--json"]).await
        ))
        .unwrap();
    assert_eq!(json["lagging"], true);
    assert_eq!(json["engine_version"], "3.6.1");

    // Alerts: the defaults (120 s) have not fired yet; a 3 s rule set from the CLI fires at the
    // next poll, and shows in `alerts`, `show` and `list`.
    let rules = ok(&cli(&h, &home, &[], &["nodes", "alerts", &id]).await);
    assert!(rules.contains("head older than 120 s"), "{rules}");
    let err = crate::failed(
        &cli(
            &h,
            &home,
            &[],
            &["nodes", "alerts", &id, "--lag-seconds", "0"],
        )
        .await,
    );
    assert!(err.contains("lag_seconds must be from 1"), "{err}");
    let err = crate::failed(
        &cli(
            &h,
            &home,
            &[],
            &["nodes", "alerts", &id, "--runway", "soon"],
        )
        .await,
    );
    assert!(err.contains("not a number or `off`"), "{err}");
    let set = ok(&cli(
        &h,
        &home,
        &[],
        &[
            "nodes",
            "alerts",
            &id,
            "--lag-seconds",
            "3",
            "--runway",
            "off",
        ],
    )
    .await);
    assert!(
        set.contains("head older than 3 s") && set.contains("runway < off"),
        "{set}"
    );
    let alerts = wait_for("the lag alert", Duration::from_secs(20), || async {
        let out = ok(&cli(&h, &home, &[], &["nodes", "alerts", &id]).await);
        out.contains("ACTIVE").then_some(out)
    })
    .await;
    assert!(
        alerts.contains("lag_seconds") && alerts.contains("rule: more than 3 s"),
        "{alerts}"
    );
    let shown = ok(&cli(&h, &home, &[], &["nodes", "show", &id]).await);
    assert!(shown.contains("ALERT lag_seconds"), "{shown}");
    let list = ok(&cli(&h, &home, &[], &["nodes", "list"]).await);
    assert!(
        list.contains("ALERTS") && list.contains("lag_seconds"),
        "{list}"
    );
    // Webhooks: a private address is refused by default; none is set.
    let err = crate::failed(
        &cli(
            &h,
            &home,
            &[],
            &["webhook", "set", "http://127.0.0.1:9/hook"],
        )
        .await,
    );
    assert!(err.contains("not a public address"), "{err}");
    let err = crate::failed(&cli(&h, &home, &[], &["webhook", "show"]).await);
    assert!(err.contains("no webhook"), "{err}");
    ok(&cli(&h, &home, &[], &["nodes", "stop", &id, "--wait"]).await);
}
