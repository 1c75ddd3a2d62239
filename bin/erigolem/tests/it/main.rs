//! The `erigolem` CLI against a running server (local backend, dev chain): login, nodes
//! create/list/show/stop/rm, `--json`, and the errors a user meets.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use erigolem_server::backend::local::LocalConfig;
use erigolem_server::{spawn, BackendConfig, Handle, ServerConfig};
use erigolem_test_utils::wallet::DEV_KEY_0;
use erigolem_test_utils::{anvil_bin, free_port, free_port_block, rpc, stable_port, workspace_bin};
use serde_json::{json, Value};

mod erigon;
mod quickstart;
mod replicas;

async fn server(dir: &Path) -> Handle {
    let mut config = ServerConfig::test(dir);
    config.backend = Some(BackendConfig::Local(LocalConfig {
        runtime_bin: workspace_bin("ya-runtime-erigon"),
        anvil_bin: Some(anvil_bin()),
        erigon_bin: None,
        gateway_listen: ([127, 0, 0, 1], free_port()).into(),
        max_nodes: 2,
        port_base: free_port_block(24),
    }));
    spawn(config).await.unwrap()
}

/// Runs the CLI (in a blocking thread: the server runs on this test's runtime).
async fn cli(h: &Handle, config: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_erigolem"));
    cmd.args(args)
        .env("ERIGOLEM_SERVER", h.url())
        .env("ERIGOLEM_CONFIG_DIR", config)
        .env_remove("ERIGOLEM_PRIVATE_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// `erigolem login` with anvil's dev key #0.
async fn login(h: &Handle, config: &Path) -> String {
    ok(&cli(
        h,
        config,
        &[("ERIGOLEM_PRIVATE_KEY", DEV_KEY_0)],
        &["login"],
    )
    .await)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn login_create_list_show_stop_remove() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(&dir.path().join("server")).await;
    let config = dir.path().join("cli");

    let err = failed(&cli(&h, &config, &[], &["nodes", "list"]).await);
    assert!(err.contains("not signed in"), "{err}");
    let err = failed(&cli(&h, &config, &[], &["login"]).await);
    assert!(err.contains("ERIGOLEM_PRIVATE_KEY"), "{err}");
    let err = failed(
        &cli(
            &h,
            &config,
            &[("ERIGOLEM_PRIVATE_KEY", "0x1234")],
            &["login"],
        )
        .await,
    );
    assert!(err.contains("invalid private key"), "{err}");

    let said = login(&h, &config).await;
    assert!(
        said.contains("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
        "{said}"
    );
    let mode = std::fs::metadata(config.join("session.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let created: Value = serde_json::from_str(&ok(&cli(
        &h,
        &config,
        &[],
        &[
            "nodes",
            "create",
            "--network",
            "dev",
            "--name",
            "cli node",
            "--wait",
            "--json",
        ],
    )
    .await))
    .unwrap();
    assert_eq!(created["state"], "running", "{created}");
    let (url, user, password) = (
        created["url"].as_str().unwrap(),
        created["auth"]["user"].as_str().unwrap(),
        created["auth"]["password"].as_str().unwrap(),
    );
    rpc(url, Some((user, password)), "eth_blockNumber", json!([]))
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();

    let list: Value =
        serde_json::from_str(&ok(
            &cli(&h, &config, &[], &["nodes", "list", "--json"]).await
        ))
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let table = ok(&cli(&h, &config, &[], &["nodes", "list"]).await);
    assert!(
        table.contains("cli node") && table.contains("running"),
        "{table}"
    );
    let shown = ok(&cli(&h, &config, &[], &["nodes", "show", id]).await);
    assert!(shown.contains(password), "{shown}");

    // The node's log: its last lines, never the password; `-f` follows new lines.
    let logs = ok(&cli(&h, &config, &[], &["nodes", "logs", id, "-n", "20"]).await);
    assert!(
        !logs.trim().is_empty() && logs.lines().count() <= 20,
        "{logs}"
    );
    assert!(!logs.contains(password));
    let err = failed(&cli(&h, &config, &[], &["nodes", "logs", id, "-n", "0"]).await);
    assert!(err.contains("invalid_lines"), "{err}");
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_erigolem"))
        .args(["nodes", "logs", id, "-n", "1", "-f"])
        .env("ERIGOLEM_SERVER", h.url())
        .env("ERIGOLEM_CONFIG_DIR", &config)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The opening line first, then the call this test makes (anvil logs each method).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let first = tokio::time::timeout_at(deadline, lines_rx.recv())
        .await
        .unwrap();
    assert!(first.is_some());
    rpc(url, Some((user, password)), "eth_gasPrice", json!([]))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout_at(deadline, lines_rx.recv()).await {
            Ok(Some(line)) if line.contains("eth_gasPrice") => break,
            Ok(Some(line)) => assert!(!line.contains(password)),
            other => panic!("`nodes logs -f` did not show the new line: {other:?}"),
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(follow.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = follow.wait();

    let err = failed(&cli(&h, &config, &[], &["nodes", "rm", id]).await);
    assert!(err.contains("stop it first"), "{err}");
    let stopped: Value = serde_json::from_str(&ok(&cli(
        &h,
        &config,
        &[],
        &["nodes", "stop", id, "--wait", "--json"],
    )
    .await))
    .unwrap();
    assert_eq!(stopped["state"], "stopped");
    assert!(
        rpc(url, Some((user, password)), "eth_blockNumber", json!([]))
            .await
            .is_err()
    );
    ok(&cli(&h, &config, &[], &["nodes", "rm", id]).await);
    assert_eq!(
        ok(&cli(&h, &config, &[], &["nodes", "list", "--json"]).await).trim(),
        "[]"
    );
    let err = failed(&cli(&h, &config, &[], &["nodes", "show", "nope"]).await);
    assert!(err.contains("no such node"), "{err}");
}

#[tokio::test]
async fn login_with_an_encrypted_keystore() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(&dir.path().join("server")).await;
    let keystore_dir = dir.path().join("keys");
    std::fs::create_dir_all(&keystore_dir).unwrap();
    let key = hex::decode(DEV_KEY_0).unwrap();
    // The file takes the given name (the function returns the key's UUID).
    eth_keystore::encrypt_key(
        &keystore_dir,
        &mut rand::thread_rng(),
        key,
        "hunter2",
        Some("alice"),
    )
    .unwrap();
    let keystore = keystore_dir.join("alice");
    let keystore = keystore.to_str().unwrap();
    let config = dir.path().join("cli");
    let err = failed(
        &cli(
            &h,
            &config,
            &[("ERIGOLEM_KEYSTORE_PASSWORD", "wrong")],
            &["login", "--keystore", keystore],
        )
        .await,
    );
    assert!(err.contains("keystore"), "{err}");
    let said = ok(&cli(
        &h,
        &config,
        &[("ERIGOLEM_KEYSTORE_PASSWORD", "hunter2")],
        &["login", "--keystore", keystore],
    )
    .await);
    assert!(
        said.contains("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
        "{said}"
    );
}

/// `erigolem serve` as its own process (so it can be SIGKILLed), on fixed ports.
struct ServeProcess {
    guard: erigolem_test_utils::ChildGuard,
    url: String,
}

fn serve(
    data_dir: &Path,
    database_url: Option<&str>,
    listen: u16,
    gateway: u16,
    node_ports: u16,
) -> ServeProcess {
    serve_with_env(data_dir, database_url, listen, gateway, node_ports, &[])
}

fn serve_with_env(
    data_dir: &Path,
    database_url: Option<&str>,
    listen: u16,
    gateway: u16,
    node_ports: u16,
    env: &[(&str, &str)],
) -> ServeProcess {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_erigolem"));
    cmd.envs(env.iter().copied());
    cmd.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--gateway-listen", &format!("127.0.0.1:{gateway}")])
        .arg("--anvil")
        .arg(anvil_bin())
        .arg("--runtime")
        .arg(workspace_bin("ya-runtime-erigon"))
        .args(["--node-ports", &node_ports.to_string(), "--max-nodes", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(data_dir.with_extension("log")).unwrap());
    if let Some(db) = database_url {
        cmd.args(["--database-url", db]);
    }
    ServeProcess {
        guard: erigolem_test_utils::ChildGuard::spawn(&mut cmd),
        url: format!("http://127.0.0.1:{listen}"),
    }
}

async fn healthy(url: &str) {
    let health = format!("{url}/healthz");
    erigolem_test_utils::wait_for(
        "the server to answer",
        std::time::Duration::from_secs(30),
        || {
            let health = health.clone();
            async move {
                reqwest::get(&health)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(drop)
            }
        },
    )
    .await;
}

async fn killed_server_keeps_its_nodes(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (listen, gateway, ports) = (stable_port(), stable_port(), free_port_block(24));
    let server = serve(&data, database_url.as_deref(), listen, gateway, ports);
    healthy(&server.url).await;
    let wallet = erigolem_client::Wallet::from_hex(DEV_KEY_0).unwrap();
    let mut client = erigolem_client::Client::new(&server.url);
    client.sign_in(&wallet, 1).await.unwrap();
    // With a method allowlist, which the restarted runtime must get again from the store.
    let node = client
        .create(&erigolem_client::CreateNode {
            methods: Some(vec!["eth_blockNumber".into()]),
            ..erigolem_client::CreateNode::new(erigolem_api::Network::Dev)
        })
        .await
        .unwrap();
    let running = wait_state(&client, &node.id, "running").await;
    let auth = running.auth.clone().unwrap();
    let url = running.url.clone().unwrap();

    let nginx = erigolem_test_utils::pids_mentioning(&format!("{}/local/nginx", data.display()));
    assert!(!nginx.is_empty(), "the server's nginx not found");
    // SIGKILL: no cleanup code of the server runs.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.guard.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(server);
    // Its Nginx does not outlive it (parent-death signal), even before a new server sweeps it.
    erigolem_test_utils::wait_for(
        "the killed server's nginx to exit",
        std::time::Duration::from_secs(5),
        || {
            let nginx = nginx.clone();
            async move {
                nginx
                    .iter()
                    .all(|pid| !erigolem_test_utils::alive(*pid))
                    .then_some(())
            }
        },
    )
    .await;
    let server = serve(&data, database_url.as_deref(), listen, gateway, ports);
    healthy(&server.url).await;
    let back = client.node(&node.id).await.unwrap();
    assert_eq!(back.state, "running");
    assert_eq!(back.url.as_deref(), Some(url.as_str()));
    assert_eq!(back.auth.as_ref().unwrap().password, auth.password);
    erigolem_test_utils::wait_for(
        "the node to answer again",
        std::time::Duration::from_secs(30),
        || {
            let (url, user, password) = (url.clone(), auth.user.clone(), auth.password.clone());
            async move {
                rpc(&url, Some((&user, &password)), "eth_blockNumber", json!([]))
                    .await
                    .ok()
            }
        },
    )
    .await;
    let refused = rpc(
        &url,
        Some((&auth.user, &auth.password)),
        "eth_chainId",
        json!([]),
    )
    .await;
    assert!(
        matches!(&refused, Err(erigolem_test_utils::RpcError::Rpc(e)) if e["error"]["code"] == -32601),
        "the resumed node lost its allowlist: {refused:?}"
    );
    assert_eq!(
        client.node(&node.id).await.unwrap().methods,
        Some(vec!["eth_blockNumber".to_owned()])
    );
    client.stop(&node.id).await.unwrap();
    wait_state(&client, &node.id, "stopped").await;
    let after = rpc(
        &url,
        Some((&auth.user, &auth.password)),
        "eth_blockNumber",
        json!([]),
    )
    .await;
    if after.is_ok() {
        let ps = std::process::Command::new("sh")
            .args([
                "-c",
                "ps -eo pid,ppid,stat,args | grep -E 'nginx|anvil|ya-runtime' | grep -v grep",
            ])
            .output()
            .unwrap();
        let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
        panic!(
            "old credentials still work after stop\n{}\n{log}",
            String::from_utf8_lossy(&ps.stdout)
        );
    }
}

async fn wait_state(
    client: &erigolem_client::Client,
    id: &str,
    want: &str,
) -> erigolem_client::Node {
    erigolem_test_utils::wait_for(
        &format!("node to be {want}"),
        std::time::Duration::from_secs(30),
        || async { client.node(id).await.ok().filter(|n| n.state == want) },
    )
    .await
}

#[tokio::test]
async fn sigkilled_server_keeps_its_nodes_sqlite() {
    killed_server_keeps_its_nodes(None).await;
}

#[tokio::test]
async fn sigkilled_server_keeps_its_nodes_postgres() {
    let pg = erigolem_test_utils::postgres::Postgres::start().await;
    killed_server_keeps_its_nodes(Some(pg.url.clone())).await;
}

#[tokio::test]
async fn net_check_replaces_a_node_whose_process_was_killed() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(&dir.path().join("server")).await;
    let config = dir.path().join("cli");
    login(&h, &config).await;
    let wallet = erigolem_client::Wallet::from_hex(DEV_KEY_0).unwrap();
    let mut api = erigolem_client::Client::new(&h.url());
    api.sign_in(&wallet, 1).await.unwrap();

    // net-check keeps 2 nodes for 6 rounds, 1 s apart, in the background.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_erigolem"));
    cmd.args([
        "net-check",
        "--count",
        "2",
        "--rounds",
        "6",
        "--interval-secs",
        "1",
        "--json",
    ])
    .env("ERIGOLEM_SERVER", h.url())
    .env("ERIGOLEM_CONFIG_DIR", &config);
    let run = tokio::task::spawn_blocking(move || cmd.output().unwrap());

    // When both run, kill one node's runtime (and so its node): its URL stops answering.
    let victim = erigolem_test_utils::wait_for(
        "two running nodes",
        std::time::Duration::from_secs(30),
        || async {
            let nodes = api.nodes().await.ok()?;
            let running: Vec<_> = nodes.into_iter().filter(|n| n.state == "running").collect();
            (running.len() == 2).then(|| running[0].id.clone())
        },
    )
    .await;
    let runtime = erigolem_test_utils::pids_mentioning(&format!("work/{victim}"));
    assert!(!runtime.is_empty(), "runtime of {victim} not found");
    for pid in runtime {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    let out = run.await.unwrap();
    let stdout = ok(&out);
    let rounds: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rounds.len(), 6, "{stdout}");
    let replaced: Vec<&Value> = rounds
        .iter()
        .flat_map(|r| r["replaced"].as_array().unwrap())
        .collect();
    assert!(
        replaced.iter().any(|r| r["id"] == victim.as_str()),
        "victim not replaced: {stdout}"
    );
    assert_eq!(
        rounds.last().unwrap()["healthy"].as_array().unwrap().len(),
        2,
        "{stdout}"
    );
    // At the end every node it started is stopped (or failed), none left running.
    let nodes = api.nodes().await.unwrap();
    assert!(nodes.len() >= 3, "a replacement was created");
    assert!(
        nodes
            .iter()
            .all(|n| n.state == "stopped" || n.state == "failed"),
        "{nodes:?}"
    );
}

#[tokio::test]
async fn watch_prints_transitions() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(&dir.path().join("server")).await;
    let config = dir.path().join("cli");
    login(&h, &config).await;
    let mut watcher = std::process::Command::new(env!("CARGO_BIN_EXE_erigolem"))
        .args(["nodes", "watch", "--json"])
        .env("ERIGOLEM_CONFIG_DIR", &config)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // subscribed
    let created: Value = serde_json::from_str(&ok(&cli(
        &h,
        &config,
        &[],
        &["nodes", "create", "--network", "dev", "--wait", "--json"],
    )
    .await))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    ok(&cli(&h, &config, &[], &["nodes", "stop", &id, "--wait"]).await);
    let stdout = watcher.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let stop = line.contains("\"stopped\"");
            seen.push(line);
            if stop {
                break;
            }
        }
        seen
    });
    let lines = tokio::time::timeout(std::time::Duration::from_secs(20), lines)
        .await
        .expect("watch printed no stop")
        .unwrap();
    watcher.kill().unwrap();
    watcher.wait().unwrap();
    let states: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["state"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        states,
        ["pending", "starting", "running", "stopping", "stopped"]
    );
}

#[tokio::test]
async fn serve_reads_a_config_file_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, flag_port) = (free_port(), free_port());
    let config = dir.path().join("erigolem.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{file_port}\"\ndata-dir = \"{}\"\ngateway-listen = \"127.0.0.1:{}\"\nanvil = \"{}\"\nruntime = \"{}\"\nnode-ports = {}\nmax-nodes = 2\n",
            dir.path().join("data").display(),
            free_port(),
            anvil_bin().display(),
            workspace_bin("ya-runtime-erigon").display(),
            free_port_block(24),
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_erigolem"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        erigolem_test_utils::ChildGuard::spawn(&mut cmd)
    };
    let from_file = run(&[]);
    healthy(&format!("http://127.0.0.1:{file_port}")).await;
    drop(from_file);
    let overridden = run(&["--listen", &format!("127.0.0.1:{flag_port}")]);
    healthy(&format!("http://127.0.0.1:{flag_port}")).await;
    drop(overridden);

    std::fs::write(&config, "listen = \"127.0.0.1:1\"\nlisten-port = 3\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_erigolem"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = failed(&out);
    assert!(
        err.contains("erigolem.toml is not a valid config") && err.contains("listen-port"),
        "{err}"
    );
}

/// Live processes descended from `root`, with their command names.
fn descendants(root: u32) -> Vec<(u32, String)> {
    let procs: Vec<(u32, u32, String)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, tail) = stat.rsplit_once(") ")?;
            let comm = head.split_once(" (")?.1.to_owned();
            let mut fields = tail.split_whitespace();
            let state = fields.next()?;
            let ppid = fields.next()?.parse().ok()?;
            (state != "Z").then_some((pid, ppid, comm))
        })
        .collect();
    let mut out = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for (pid, _, comm) in procs.iter().filter(|p| p.1 == parent) {
            out.push((*pid, comm.clone()));
            parents.push(*pid);
        }
    }
    out
}

/// After a restart the server hands each running node its stored password again: on no command
/// line of any process (`/proc/*/cmdline` is world-readable). The server's children (runtime,
/// Nginx, anvil) run with a cleared environment: no `YAGNA_APPKEY` or anything else of the server's.
#[tokio::test]
async fn after_a_restart_no_command_line_holds_a_password_and_children_get_a_clean_environment() {
    const APPKEY: &str = "yagna-appkey-canary-5f1d9c";
    const CANARY: &str = "server-only-canary-0b7e2a";
    let env = [("YAGNA_APPKEY", APPKEY), ("ERIGOLEM_TEST_CANARY", CANARY)];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (listen, gateway, ports) = (stable_port(), stable_port(), free_port_block(24));
    let server = serve_with_env(&data, None, listen, gateway, ports, &env);
    healthy(&server.url).await;
    let wallet = erigolem_client::Wallet::from_hex(DEV_KEY_0).unwrap();
    let mut client = erigolem_client::Client::new(&server.url);
    client.sign_in(&wallet, 1).await.unwrap();
    let node = client
        .create(&erigolem_client::CreateNode::new(
            erigolem_api::Network::Dev,
        ))
        .await
        .unwrap();
    let running = wait_state(&client, &node.id, "running").await;
    let auth = running.auth.clone().unwrap();
    let url = running.url.clone().unwrap();
    drop(server);

    let server = serve_with_env(&data, None, listen, gateway, ports, &env);
    healthy(&server.url).await;
    erigolem_test_utils::wait_for(
        "the node to answer again with its password",
        std::time::Duration::from_secs(30),
        || {
            let (url, user, password) = (url.clone(), auth.user.clone(), auth.password.clone());
            async move {
                rpc(&url, Some((&user, &password)), "eth_blockNumber", json!([]))
                    .await
                    .ok()
            }
        },
    )
    .await;

    let on_a_command_line: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(&auth.password)
                .then(|| format!("{}: {text}", e.file_name().to_string_lossy()))
        })
        .collect();
    assert!(
        on_a_command_line.is_empty(),
        "the node password is on a command line: {on_a_command_line:?}"
    );

    let children = descendants(server.guard.pid());
    for wanted in ["ya-runtime-erig", "nginx", "anvil"] {
        assert!(
            children.iter().any(|(_, comm)| comm.starts_with(wanted)),
            "no {wanted} among the server's children: {children:?}"
        );
    }
    for (pid, comm) in &children {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let environ = String::from_utf8_lossy(&environ);
        for secret in [APPKEY, CANARY] {
            assert!(
                !environ.contains(secret),
                "{comm} ({pid}) inherited {secret}: {environ}"
            );
        }
    }
    client.stop(&node.id).await.unwrap();
    wait_state(&client, &node.id, "stopped").await;
}

/// Text that comes from a provider (the node's URL, credentials, failure reason) may carry
/// terminal escapes; the CLI prints it inert.
#[tokio::test]
async fn the_cli_prints_provider_text_without_terminal_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let h = server(&server_dir).await;
    let config = dir.path().join("cli");
    login(&h, &config).await;
    let created: Value = serde_json::from_str(&ok(&cli(
        &h,
        &config,
        &[],
        &["nodes", "create", "--network", "dev", "--wait", "--json"],
    )
    .await))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    // What a hostile provider could send: set the title, clear the screen, move the cursor, an
    // 8-bit CSI, a bidi override and a line break that forges another row.
    let hostile = "ok\x1b]0;owned\x07\x1b[2J\x1b[1A\u{9b}31m\u{202e}evil\nforged row\r";
    let key = erigolem_store::KeyFile::load_or_create(server_dir.join("secret.key")).unwrap();
    let store = erigolem_store::Store::connect(
        &format!(
            "sqlite://{}?mode=rwc",
            server_dir.join("erigolem.db").display()
        ),
        key,
    )
    .await
    .unwrap();
    store
        .set_endpoint(
            &id,
            &format!("http://127.0.0.1:1/{hostile}"),
            Some(&format!("ws://127.0.0.1:1/{hostile}")),
            &format!("user{hostile}"),
            &format!("password{hostile}"),
            None,
            None,
        )
        .await
        .unwrap();
    let dangerous = |out: &str| {
        out.chars()
            .filter(|c| (c.is_control() && *c != '\n') || ('\u{202a}'..='\u{202e}').contains(c))
            .collect::<String>()
    };
    for args in [vec!["nodes", "show", &id], vec!["nodes", "list"]] {
        let out = ok(&cli(&h, &config, &[], &args).await);
        assert_eq!(dangerous(&out), "", "{args:?} printed {out:?}");
        assert!(
            !out.contains("\nforged row"),
            "{args:?} printed a forged line: {out}"
        );
    }

    let mut watcher = std::process::Command::new(env!("CARGO_BIN_EXE_erigolem"))
        .args(["nodes", "watch"])
        .env("ERIGOLEM_CONFIG_DIR", &config)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // subscribed
    store
        .transition(
            &id,
            erigolem_store::NodeState::Failed,
            Some(&format!("reason {hostile}")),
        )
        .await
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let line = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .unwrap();
            line
        }),
    )
    .await
    .expect("watch printed nothing")
    .unwrap();
    watcher.kill().unwrap();
    watcher.wait().unwrap();
    assert!(line.contains("failed"), "{line:?}");
    assert_eq!(
        dangerous(line.trim_end_matches('\n')),
        "",
        "watch printed {line:?}"
    );
    let shown = ok(&cli(&h, &config, &[], &["nodes", "show", &id]).await);
    assert_eq!(dangerous(&shown), "", "show printed {shown:?}");
    assert!(shown.contains("reason"), "{shown}");
    store.close().await;
    // The runtime still runs: stopping a failed node tears it down.
    ok(&cli(&h, &config, &[], &["nodes", "stop", &id, "--wait"]).await);
}

#[tokio::test]
async fn create_with_allowlists_and_show_them() {
    let dir = tempfile::tempdir().unwrap();
    let h = server(&dir.path().join("server")).await;
    let config = dir.path().join("cli");
    login(&h, &config).await;
    let created: Value = serde_json::from_str(&ok(&cli(
        &h,
        &config,
        &[],
        &[
            "nodes",
            "create",
            "--network",
            "dev",
            "--method",
            "eth_blockNumber",
            "--method",
            "net_*",
            "--allow-ip",
            "127.0.0.1",
            "--allow-origin",
            "https://app.example.org",
            "--wait",
            "--json",
        ],
    )
    .await))
    .unwrap();
    assert_eq!(created["state"], "running", "{created}");
    assert_eq!(created["methods"], json!(["eth_blockNumber", "net_*"]));
    let id = created["id"].as_str().unwrap();
    let shown = ok(&cli(&h, &config, &[], &["nodes", "show", id]).await);
    for want in [
        "eth_blockNumber, net_*",
        "https://app.example.org",
        "127.0.0.1",
        "endpoint limits",
        "req/s (burst",
    ] {
        assert!(shown.contains(want), "{want:?} missing:\n{shown}");
    }
    // A bad entry: the server's message, nothing created.
    let err = failed(
        &cli(
            &h,
            &config,
            &[],
            &[
                "nodes",
                "create",
                "--network",
                "dev",
                "--allow-ip",
                "10.0.0.0/33",
            ],
        )
        .await,
    );
    assert!(err.contains("allow_ips[0]"), "{err}");
    let list: Value =
        serde_json::from_str(&ok(
            &cli(&h, &config, &[], &["nodes", "list", "--json"]).await
        ))
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}
