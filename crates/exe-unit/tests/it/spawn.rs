//! `spawn` refuses what cannot work, with the reason, before anything runs.

use erigolem_exe_unit::{ExeUnitConfig, ExeUnitError};

fn config(dir: &std::path::Path, gsb_url: &str) -> ExeUnitConfig {
    // Any existing file passes the runtime check; nothing is started before the GSB answers.
    let runtime = std::env::current_exe().unwrap();
    ExeUnitConfig::new(
        "4f0c3a1d2e",
        "9b8a7c6d5e",
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        gsb_url,
        runtime,
        dir.join("work"),
    )
}

#[tokio::test]
async fn spawn_refuses_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("unix:{}/gsb.sock", dir.path().display());
    let cases = [
        (
            ExeUnitConfig {
                requestor_id: "requestor".into(),
                ..config(dir.path(), &url)
            },
            "requestor node id",
        ),
        (
            ExeUnitConfig {
                activity_id: "../x".into(),
                ..config(dir.path(), &url)
            },
            "activity id",
        ),
        (config(dir.path(), "http://127.0.0.1:1"), "GSB URL"),
        (
            ExeUnitConfig {
                runtime: dir.path().join("missing"),
                ..config(dir.path(), &url)
            },
            "does not exist",
        ),
        (
            config(dir.path(), &url).usage_interval(std::time::Duration::from_secs(30)),
            "usage interval",
        ),
    ];
    for (config, expected) in cases {
        let err = erigolem_exe_unit::spawn(config).await.unwrap_err();
        assert!(
            matches!(err, ExeUnitError::Config(_)) && err.to_string().contains(expected),
            "{err}"
        );
    }
}

#[tokio::test]
async fn spawn_without_yagna_fails_to_connect() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("unix:{}/gsb.sock", dir.path().display());
    let err = erigolem_exe_unit::spawn(config(dir.path(), &url))
        .await
        .unwrap_err();
    assert!(matches!(err, ExeUnitError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("gsb.sock"), "{err}");
}
