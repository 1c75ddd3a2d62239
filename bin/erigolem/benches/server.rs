//! `erigolem serve` benchmark, printed as Markdown tables (nothing asserted): create → `running` on
//! the dev chain (local backend, anvil), `GET /api/v1/nodes` with 1,000 nodes in the store, SIWE
//! logins per second, and the RSS of the server idle and with 100 running dev nodes (plus the RSS
//! of their runtimes and anvils). The server runs as its own process (`erigolem serve`), the load
//! generator in this one, on the same machine.
//!
//! `bash scripts/bench.sh server` (release build, offline in a network namespace); or, after
//! `scripts/setup.sh` and `cargo build --release --workspace --bins`:
//! `cargo bench -p erigolem --bench server`. Results are recorded in docs/benchmarks.md.
#![allow(clippy::unwrap_used)]

use erigolem_test_utils::bench::{ms, percentile, rss_kib, Load};
use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use erigolem_client::{Client, CreateNode, Wallet};
use erigolem_store::{KeyFile, NewNode, NodeState, Store};
use erigolem_test_utils::wallet::DEV_KEY_0;
use erigolem_test_utils::ChildGuard;
use erigolem_test_utils::{alive, anvil_bin, free_port, free_port_block, wait_for, workspace_bin};

const CREATES: usize = 20;
const LISTED: usize = 1000;
const MANY: usize = 100;
const MAX_NODES: u16 = 120;
const WARMUP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_secs(3);

/// Live descendants of `root` with their command names (`/proc/<pid>/stat`: `pid (comm) S ppid`).
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
    let mut out: Vec<(u32, String)> = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for (pid, _, comm) in procs.iter().filter(|p| p.1 == parent) {
            out.push((*pid, comm.clone()));
            parents.push(*pid);
        }
    }
    out
}

/// `erigolem serve` as a child process on free ports, local backend with anvil; its log beside
/// the data dir. Rate limiting is effectively off: every client here is 127.0.0.1.
async fn serve(data: &Path) -> (ChildGuard, String) {
    let (listen, gateway, ports) = (free_port(), free_port(), free_port_block(12 * MAX_NODES));
    let args = format!(
        "serve --listen 127.0.0.1:{listen} --gateway-listen 127.0.0.1:{gateway} --node-ports \
         {ports} --max-nodes {MAX_NODES} --max-nodes-per-user {MANY} --rate-limit 1000000"
    );
    let mut cmd = std::process::Command::new(workspace_bin("erigolem"));
    cmd.args(args.split(' '))
        .args([OsStr::new("--data-dir"), data.as_os_str()])
        .args([OsStr::new("--anvil"), anvil_bin().as_os_str()])
        .args([
            OsStr::new("--runtime"),
            workspace_bin("ya-runtime-erigon").as_os_str(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(data.with_extension("log")).unwrap());
    let guard = ChildGuard::spawn(&mut cmd);
    let url = format!("http://127.0.0.1:{listen}");
    let health = format!("{url}/healthz");
    wait_for("erigolem serve to answer", Duration::from_secs(30), || {
        let health = health.clone();
        async move {
            let r = reqwest::get(&health).await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
    (guard, url)
}

/// Polls node `id` (`GET /nodes/{id}`) every `every` until it is `want`.
async fn wait_state(client: &Client, id: &str, want: &str, every: Duration) {
    let t = Instant::now();
    loop {
        let node = client.node(id).await.unwrap();
        if node.state == want {
            return;
        }
        assert_ne!(
            node.state,
            erigolem_api::NodeState::Failed,
            "{id}: {:?}",
            node.reason
        );
        assert!(t.elapsed() < Duration::from_secs(120), "{id} not {want}");
        tokio::time::sleep(every).await;
    }
}

/// Polls the list every 100 ms until every node in `ids` is `want` (or failed); (time, failed).
async fn wait_all(client: &Client, ids: &[String], want: &str) -> (Duration, usize) {
    let t = Instant::now();
    loop {
        let nodes = client.nodes().await.unwrap();
        let count = |s: &str| {
            let mine = nodes.iter().filter(|n| ids.contains(&n.id));
            mine.filter(|n| n.state == s).count()
        };
        let (done, failed) = (count(want), count("failed"));
        if done + failed == ids.len() {
            return (t.elapsed(), failed);
        }
        assert!(t.elapsed() < Duration::from_secs(600), "nodes not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dev(name: String) -> CreateNode {
    CreateNode {
        name: Some(name),
        ..CreateNode::new(erigolem_api::Network::Dev)
    }
}

/// `conns` tasks, each with its own client (own keep-alive connection), back to back: with a
/// token `GET /api/v1/nodes` (body read whole), without one nonce → sign → login (`sign_in`).
async fn load(url: &str, token: Option<&str>, conns: usize) -> Load {
    let tasks = (0..conns).map(|_| {
        let (url, token) = (url.to_owned(), token.map(str::to_owned));
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut client = Client::new(&url);
            let wallet = Wallet::from_hex(DEV_KEY_0).unwrap();
            let (mut latencies, mut errors) = (Vec::new(), 0);
            let start = Instant::now();
            while start.elapsed() < WARMUP + MEASURE {
                let t = Instant::now();
                let ok = match &token {
                    Some(token) => {
                        let list = http.get(format!("{url}/api/v1/nodes")).bearer_auth(token);
                        match list.send().await {
                            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                            Err(_) => false,
                        }
                    }
                    None => client.sign_in(&wallet, 1).await.is_ok(),
                };
                if start.elapsed() > WARMUP {
                    match ok {
                        true => latencies.push(t.elapsed()),
                        false => errors += 1,
                    }
                }
            }
            (latencies, errors)
        })
    });
    let clients = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|t| t.unwrap());
    Load::from_clients(clients, MEASURE)
}

fn load_table(title: &str, unit: &str, rows: &[(usize, Load)], extra: &str) {
    println!("## {title}\n");
    println!("| clients | {unit}/s | p50 ms | p99 ms | errors |\n|---:|---:|---:|---:|---:|");
    for (conns, r) in rows {
        let (rps, p50, p99) = (r.rps, ms(r.p50), ms(r.p99));
        println!("| {conns} | {rps:.0} | {p50} | {p99} | {} |", r.errors);
    }
    println!("{extra}");
}

/// Processes under the server by kind: (count, total RSS KiB).
fn by_kind(tree: &[(u32, String)], prefix: &str) -> (usize, u64) {
    let kind = tree.iter().filter(|(_, c)| c.starts_with(prefix));
    kind.fold((0, 0), |(n, kib), (pid, _)| (n + 1, kib + rss_kib(*pid)))
}

/// Ends the server (TERM, then KILL by the guard), then whatever it started that outlived it.
fn end(server: ChildGuard) {
    let tree = descendants(server.pid());
    drop(server);
    for (pid, _) in tree.into_iter().filter(|(pid, _)| alive(*pid)) {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// `LISTED` failed nodes of `owner` in a new store under `data` (failed, not pending: a starting
/// server starts pending nodes), and how long `Store::nodes(owner)` takes in-process (p50, p99).
async fn fill(data: &Path, owner: &str) -> (Duration, Duration) {
    std::fs::create_dir_all(data).unwrap();
    let key = KeyFile::load_or_create(data.join("secret.key")).unwrap();
    let db = format!("sqlite://{}?mode=rwc", data.join("erigolem.db").display());
    let store = Store::connect(&db, key).await.unwrap();
    for i in 0..LISTED {
        let new = NewNode {
            owner: owner.to_owned(),
            name: format!("listed-{i}"),
            network: "dev".into(),
            mode: "dedicated".into(),
            prune: "full".into(),
            access: None,
        };
        let node = store.insert_node(&new).await.unwrap();
        let reason = Some("bench fixture");
        store
            .transition(&node.id, NodeState::Failed, reason)
            .await
            .unwrap();
    }
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        assert_eq!(store.nodes(owner).await.unwrap().len(), LISTED);
        times.push(t.elapsed());
    }
    store.close().await;
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let wallet = Wallet::from_hex(DEV_KEY_0).unwrap();
    println!("# erigolem serve benchmark\n");
    println!(
        "machine: {} cores; `erigolem serve` (release) as a child process, local backend, dev chain \
         (anvil); SQLite store; load generator in-process; rate limit off\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );

    // 1. A fresh server: idle RSS, create → running, logins, then many nodes at once.
    let (server, url) = serve(&dir.path().join("fresh")).await;
    let idle_kib = rss_kib(server.pid());
    let mut client = Client::new(&url);
    client.sign_in(&wallet, 1).await.unwrap();
    let mut creates = Vec::new();
    for i in 0..CREATES {
        let t = Instant::now();
        let node = client.create(&dev(format!("create-{i}"))).await.unwrap();
        wait_state(&client, &node.id, "running", Duration::from_millis(5)).await;
        creates.push(t.elapsed());
        client.stop(&node.id).await.unwrap();
        wait_state(&client, &node.id, "stopped", Duration::from_millis(20)).await;
    }
    creates.sort();
    println!("## create → running (POST /nodes, then GET /nodes/{{id}} every 5 ms; n={CREATES})\n");
    println!("| min ms | median ms | p90 ms | max ms |\n|---:|---:|---:|---:|");
    let (min, median) = (ms(creates[0]), percentile(&creates, 0.5));
    let (p90, max) = (ms(percentile(&creates, 0.9)), creates[CREATES - 1]);
    println!("| {min} | {} | {p90} | {} |\n", ms(median), ms(max));

    let mut rows = Vec::new();
    for conns in [1, 8] {
        rows.push((conns, load(&url, None, conns).await));
    }
    let title = "SIWE sign-in (nonce → sign → login, each client in a loop)";
    load_table(title, "logins", &rows, "");

    let t = Instant::now();
    let mut ids = Vec::new();
    for i in 0..MANY {
        ids.push(client.create(&dev(format!("many-{i}"))).await.unwrap().id);
    }
    let posted = t.elapsed();
    let (up, failed) = wait_all(&client, &ids, "running").await;
    let up = posted + up;
    tokio::time::sleep(Duration::from_secs(2)).await; // settle: every anvil mined a block or two
    let busy_kib = rss_kib(server.pid());
    let tree = descendants(server.pid());
    let kinds = ["ya-runtime", "anvil", "nginx"].map(|kind| by_kind(&tree, kind));
    for id in &ids {
        client.stop(id).await.unwrap();
    }
    let (down, _) = wait_all(&client, &ids, "stopped").await;
    let after_kib = rss_kib(server.pid());
    end(server);
    println!("## {MANY} dev nodes at once (one user, created back to back)\n");
    println!("| running | failed | POSTs took s | all running after s | all stopped after s |");
    println!("|---:|---:|---:|---:|---:|");
    let (posted, up, down) = (posted.as_secs_f64(), up.as_secs_f64(), down.as_secs_f64());
    let running = MANY - failed;
    println!("| {running} | {failed} | {posted:.2} | {up:.2} | {down:.2} |\n");
    println!("## memory (RSS)\n\n| process(es) | count | RSS MiB |\n|---|---:|---:|");
    let memory = [
        ("erigolem serve, idle after start", (1, idle_kib)),
        ("erigolem serve, with the nodes running", (1, busy_kib)),
        ("erigolem serve, after stopping them", (1, after_kib)),
        ("ya-runtime-erigon (all)", kinds[0]),
        ("anvil (all)", kinds[1]),
        ("nginx (master + workers)", kinds[2]),
    ];
    for (what, (count, kib)) in memory {
        println!("| {what} | {count} | {:.1} |", kib as f64 / 1024.0);
    }
    println!();

    // 2. The list, with LISTED nodes of the caller put into the store before the server starts.
    let data = dir.path().join("listed");
    let (store_p50, store_p99) = fill(&data, &wallet.address()).await;
    let (server, url) = serve(&data).await;
    let mut client = Client::new(&url);
    let token = client.sign_in(&wallet, 1).await.unwrap();
    let nodes = client.nodes().await.unwrap();
    assert_eq!(nodes.len(), LISTED);
    let mut rows = Vec::new();
    for conns in [1, 8] {
        rows.push((conns, load(&url, Some(&token), conns).await));
    }
    end(server);
    let kib = serde_json::to_vec(&nodes).unwrap().len() / 1024;
    let title = format!("GET /api/v1/nodes with {LISTED} nodes (≈ {kib} KiB of JSON)");
    let extra = format!(
        "| `Store::nodes` alone, in-process (no HTTP) | | {} | {} | |\n",
        ms(store_p50),
        ms(store_p99)
    );
    load_table(&title, "req", &rows, &extra);

    let list_p99 = rows.iter().map(|(_, r)| r.p99).max().unwrap();
    println!("## targets\n\n| target | result | verdict |\n|---|---|---|");
    let verdict = |met: bool| if met { "met" } else { "**not met**" };
    let met = verdict(max < Duration::from_secs(1));
    let (median, max) = (ms(median), ms(max));
    println!("| create → running under 1 s | median {median} ms, max {max} ms | {met} |");
    let met = verdict(list_p99 < Duration::from_millis(10));
    let p99 = ms(list_p99);
    println!("| list p99 under 10 ms | {p99} ms (worst of 1 and 8 clients) | {met} |");
}
