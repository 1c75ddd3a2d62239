//! The README's quick start as a newcomer types it: `erigolem serve` with no `--data-dir` (so the
//! relative default `./.erigolem`), started from a clone's root as `scripts/run.sh` does and from
//! some other directory; then the real CLI signs in, creates a dev node and `eth_blockNumber`
//! answers through its URL. Every other test passes an absolute temp dir, which hid that a relative
//! data dir reached the runtime as a relative `XDG_DATA_HOME` (ignored per the XDG spec, so the
//! runtime ran on its built-in defaults and served no `dev`).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use erigolem_test_utils::wallet::DEV_KEY_0;
use erigolem_test_utils::{free_port_block, repo_root, rpc, stable_port, wait_for, ChildGuard};
use serde_json::{json, Value};

/// The `erigolem` binary this test suite was built with.
fn erigolem() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_erigolem"))
}

/// Runs `serve` as `program` from `cwd` with only the ports chosen (they must not clash with
/// other tests); data dir, database, engines and runtime are left to their defaults.
fn serve(cwd: &Path, program: &Path, home: &Path, listen: u16, gateway: u16) -> ChildGuard {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd)
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--gateway-listen", &format!("127.0.0.1:{gateway}")])
        .args(["--node-ports", &free_port_block(24).to_string()])
        .args(["--max-nodes", "2"])
        // A newcomer's machine: nothing configured, no runtime config in the home directory.
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("ERIGOLEM_ANVIL")
        .env_remove("ERIGOLEM_DATA_DIR")
        .env_remove("ERIGOLEM_RUNTIME")
        .env_remove("ERIGOLEM_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(home.join("serve.log")).unwrap());
    ChildGuard::spawn(&mut cmd)
}

/// The CLI as a user runs it (in a blocking thread: it is a separate process anyway).
async fn cli(server: &str, home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(erigolem());
    cmd.args(args)
        .env("HOME", home)
        .env("ERIGOLEM_SERVER", server)
        .env("ERIGOLEM_PRIVATE_KEY", DEV_KEY_0)
        .env_remove("ERIGOLEM_CONFIG_DIR")
        .env_remove("XDG_CONFIG_HOME");
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn first_node_answers(cwd: &Path, program: &Path, home: &Path) {
    std::fs::create_dir_all(home).unwrap();
    let (listen, gateway) = (stable_port(), stable_port());
    let server = format!("http://127.0.0.1:{listen}");
    let mut serve = serve(cwd, program, home, listen, gateway);
    let health = format!("{server}/healthz");
    let log_path = home.join("serve.log");
    wait_for("erigolem serve to answer", Duration::from_secs(30), || {
        if let Some(status) = serve.try_exit_code() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("erigolem serve exited ({status}):\n{log}");
        }
        let health = health.clone();
        async move {
            reqwest::get(&health)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(drop)
        }
    })
    .await;
    stdout_of(&cli(&server, home, &["login"]).await);
    let out = cli(
        &server,
        home,
        &["nodes", "create", "--network", "dev", "--wait", "--json"],
    )
    .await;
    let log = std::fs::read_to_string(home.join("serve.log")).unwrap_or_default();
    let node: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(node["state"], "running", "{node}\nserver log:\n{log}");
    let (url, user, password) = (
        node["url"].as_str().unwrap(),
        node["auth"]["user"].as_str().unwrap(),
        node["auth"]["password"].as_str().unwrap(),
    );
    let block = rpc(url, Some((user, password)), "eth_blockNumber", json!([]))
        .await
        .unwrap_or_else(|e| panic!("eth_blockNumber through {url}: {e:?}"));
    assert!(block.as_str().unwrap().starts_with("0x"), "{block}");
    // The relative default data dir was made absolute where it was given: under `cwd`.
    assert!(
        cwd.join(".erigolem/erigolem.db").exists(),
        "no database in {}",
        cwd.display()
    );
    let id = node["id"].as_str().unwrap();
    stdout_of(&cli(&server, home, &["nodes", "stop", id, "--wait"]).await);
}

#[tokio::test]
async fn quick_start_from_a_clone_root_with_no_data_dir() {
    // A clone's root as `scripts/run.sh` sees it: `.tools/` (anvil) and `target/debug/erigolem`,
    // run by that relative path.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("clone");
    std::fs::create_dir_all(root.join("target/debug")).unwrap();
    std::os::unix::fs::symlink(repo_root().join(".tools"), root.join(".tools")).unwrap();
    std::os::unix::fs::symlink(erigolem(), root.join("target/debug/erigolem")).unwrap();
    first_node_answers(
        &root,
        Path::new("target/debug/erigolem"),
        &dir.path().join("home"),
    )
    .await;
}

#[tokio::test]
async fn quick_start_from_another_directory_with_no_data_dir() {
    // Not a clone: no `.tools/` here; the binary is run by its full path.
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("somewhere/else");
    std::fs::create_dir_all(&cwd).unwrap();
    first_node_answers(&cwd, &erigolem(), &dir.path().join("home")).await;
}
