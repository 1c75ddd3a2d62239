//! Runtime benchmark, printed as tables (nothing asserted): start → first RPC through Nginx on the
//! dev chain, the runtime's memory with its endpoint guard, and three paths to the same node side
//! by side — direct, the Nginx-only location the runtime used before the guard (an upstream with
//! keep-alive and basic auth; this benchmark writes that location itself, in a second private
//! Nginx), and the full path of today (Nginx → the runtime's guard → the node) — at 1, 16 and 64
//! keep-alive connections, for `eth_blockNumber` and for a mix of real calls on an anvil with
//! state (a deployed ERC-20 with 240 transfers over 120 blocks), the paths taking turns in short
//! slices so that a busy machine weighs on each alike. A fourth path beside them is the floor of
//! any design that puts a process between Nginx and the node: a relay that parses nothing and
//! copies bytes, kept alive on both sides. Then the password file formats. (The runtime's CPU per
//! call includes copying the node's log: anvil logs a line per call.)
//!
//! `scripts/bench.sh` (release build); results are recorded in docs/benchmarks.md.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use erigolem_gateway::{htpasswd, PasswordScheme};
use erigolem_guard::GuardLimits;
use erigolem_test_utils::bench::{ms, percentile, rss_kib, Load};
use erigolem_test_utils::{free_port, nginx_bin, rpc, wait_for, ChildGuard, Provider};
use serde_json::{json, Value};
use sha_crypt::{Algorithm, Params, PasswordHasher, ShaCrypt};

const STARTS: usize = 20;
const WARMUP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_secs(3);
/// The side-by-side cells: each path measured in `ROUNDS` slices of `SLICE` (3 s in all), in turn.
const ROUNDS: u32 = 6;
const SLICE: Duration = Duration::from_millis(500);
const SLICE_WARMUP: Duration = Duration::from_millis(150);
const BLOCK_NUMBER: &str = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;

/// `conns` tasks, each with its own keep-alive connection, sending `bodies` in turn back to back.
async fn load(url: &str, auth: Option<(&str, &str)>, conns: usize, bodies: &[String]) -> Load {
    Load::from_clients(
        samples(url, auth, conns, bodies, WARMUP, MEASURE).await,
        MEASURE,
    )
}

/// [`load`]'s raw samples: each client's latencies and errors over `measure` after `warmup`.
async fn samples(
    url: &str,
    auth: Option<(&str, &str)>,
    conns: usize,
    bodies: &[String],
    warmup: Duration,
    measure: Duration,
) -> Vec<(Vec<Duration>, usize)> {
    let tasks = (0..conns).map(|task| {
        let url = url.to_owned();
        let auth = auth.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let bodies = bodies.to_vec();
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut latencies = Vec::new();
            let mut errors = 0;
            let start = Instant::now();
            let mut i = task;
            while start.elapsed() < warmup + measure {
                let body = bodies[i % bodies.len()].clone();
                i += 1;
                let mut req = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body);
                if let Some((u, p)) = &auth {
                    req = req.basic_auth(u, Some(p));
                }
                let t = Instant::now();
                let ok = match req.send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(b) => !b.windows(8).any(|w| w == b"\"error\":"),
                        Err(_) => false,
                    },
                    _ => false,
                };
                if start.elapsed() > warmup {
                    if ok {
                        latencies.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        })
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|t| t.unwrap())
        .collect()
}

/// Sends a transaction from an unlocked dev account (not mined yet).
async fn send(node: &str, tx: Value) -> String {
    rpc(node, None, "eth_sendTransaction", json!([tx]))
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// State to read: TestGLM deployed, then 120 blocks of 2 `mint`s each (each a Transfer log).
/// Returns the mix of calls on it.
async fn populate(node: &str) -> Vec<String> {
    let accounts = rpc(node, None, "eth_accounts", json!([])).await.unwrap();
    let a: Vec<String> = accounts
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_lowercase())
        .collect();
    let bin = std::fs::read_to_string(erigolem_test_utils::golem::assets_dir().join("TestGLM.bin"))
        .unwrap();
    let deploy = send(
        node,
        json!({"from": a[0], "data": format!("0x{}", bin.trim())}),
    )
    .await;
    rpc(node, None, "anvil_mine", json!(["0x1"])).await.unwrap();
    let receipt = rpc(node, None, "eth_getTransactionReceipt", json!([deploy]))
        .await
        .unwrap();
    let token = receipt["contractAddress"].as_str().unwrap().to_owned();
    let word = |addr: &str| format!("{:0>64}", addr.trim_start_matches("0x"));
    for block in 0..120u64 {
        for k in 0..2 {
            let to = &a[1 + (block as usize + k) % 8];
            let data = format!("0x40c10f19{}{:064x}", word(to), 1_000 + block);
            send(node, json!({"from": a[k], "to": token, "data": data})).await;
        }
        rpc(node, None, "anvil_mine", json!(["0x1"])).await.unwrap();
    }
    let head =
        erigolem_test_utils::hex_u64(&rpc(node, None, "eth_blockNumber", json!([])).await.unwrap());
    let full_block = head - 10;
    vec![
        json!({"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"to": token, "data": format!("0x70a08231{}", word(&a[1]))}, "latest"]}),
        json!({"jsonrpc":"2.0","id":2,"method":"eth_getBlockByNumber","params":[format!("{full_block:#x}"), true]}),
        json!({"jsonrpc":"2.0","id":3,"method":"eth_getLogs","params":[{"address": token, "fromBlock": format!("{:#x}", head - 100), "toBlock": format!("{head:#x}")}]}),
        json!({"jsonrpc":"2.0","id":4,"method":"eth_getBalance","params":[a[1], "latest"]}),
    ]
    .into_iter()
    .map(|v| v.to_string())
    .collect()
}

/// A second private Nginx with the location the runtime wrote per instance before the guard:
/// an upstream with keep-alive to the node, basic auth against `password_file`.
async fn nginx_only(
    dir: &Path,
    instance: &str,
    node_port: u16,
    password_file: &Path,
) -> (ChildGuard, String) {
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let port = free_port();
    let p = dir.display();
    let user = if nix::unistd::geteuid().is_root() {
        "user www-data;\n"
    } else {
        ""
    };
    let conf = format!(
        r#"{user}worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    keepalive_requests 100000;
    map $http_upgrade $erigolem_connection {{ default upgrade; '' ''; }}
    upstream erigolem-{instance} {{ server 127.0.0.1:{node_port}; keepalive 64; }}
    upstream erigolem-relay {{ server unix:{p}/relay.sock; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 10m;
        location /{instance}/ {{
            auth_basic "erigolem";
            auth_basic_user_file {password};
            proxy_pass http://erigolem-{instance}/;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $erigolem_connection;
            proxy_set_header Host localhost;
            proxy_set_header Authorization "";
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
        }}
        location /relay/{instance}/ {{
            auth_basic "erigolem";
            auth_basic_user_file {password};
            proxy_pass http://erigolem-relay/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host localhost;
            proxy_set_header Authorization "";
            proxy_buffering off;
        }}
    }}
}}
"#,
        password = password_file.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = ChildGuard::spawn(
        std::process::Command::new(nginx_bin())
            .args(["-e", "stderr", "-g", "daemon off;", "-c"])
            .arg(&path)
            .stderr(std::fs::File::create(dir.join("nginx.stderr")).unwrap()),
    );
    wait_for(
        "the Nginx-only site",
        Duration::from_secs(10),
        || async move {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()
                .then_some(())
        },
    )
    .await;
    (child, format!("http://127.0.0.1:{port}/{instance}/"))
}

/// CPU seconds (user + system) a process used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// The machine's load average over the last minute (other work on the two cores).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .next()
        .unwrap_or("?")
        .to_owned()
}

fn pct(a: f64, b: f64) -> String {
    format!("{:.0}%", 100.0 * a / b)
}

/// Set in the environment of this benchmark's own binary to run it as the relay instead:
/// `<unix socket>|<node host:port>`.
const RELAY_ENV: &str = "ERIGOLEM_BENCH_RELAY";

/// The relay: each connection from Nginx gets one TCP connection to the node, and bytes are
/// copied both ways until either side closes. One thread, like the runtime's guard.
fn relay(spec: &str) {
    let (socket, node) = spec.split_once('|').unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        loop {
            let (mut from, _) = listener.accept().await.unwrap();
            let node = node.to_owned();
            tokio::spawn(async move {
                let Ok(mut to) = tokio::net::TcpStream::connect(&node).await else {
                    return;
                };
                let _ = to.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut from, &mut to).await;
            });
        }
    });
}

fn main() {
    match std::env::var(RELAY_ENV) {
        Ok(spec) => relay(&spec),
        Err(_) => bench(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn bench() {
    let provider = Provider::start(4, |c| {
        // Out of the way: the guard still counts and checks every call.
        c.guard.dedicated = GuardLimits {
            requests_per_sec: 10_000_000,
            burst: 10_000_000,
            max_concurrent: 1_024,
            ..GuardLimits::DEDICATED
        };
    })
    .await;
    println!("# ya-runtime-erigon benchmark\n");
    println!(
        "machine: {} cores; nginx: 1 worker; engine: anvil (dev chain); load generator in-process\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );

    // 1. start → first successful JSON-RPC call through Nginx.
    let mut starts = Vec::new();
    for i in 0..STARTS {
        let runtime = provider.runtime(&format!("start-{i}"));
        let t = Instant::now();
        let session = runtime.start(r#"{"network":"dev"}"#).await.unwrap();
        let status = session.start_output().await.unwrap();
        let auth = (status.auth.user.as_str(), status.auth.password.expose());
        while rpc(&status.url, Some(auth), "eth_blockNumber", json!([]))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        starts.push(t.elapsed());
        session.shutdown().await.unwrap();
    }
    starts.sort();
    println!("## start → first RPC through Nginx (dev chain, n={STARTS})\n");
    println!("| min ms | median ms | p90 ms | max ms |\n|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {} |\n",
        ms(starts[0]),
        ms(percentile(&starts, 0.5)),
        ms(percentile(&starts, 0.9)),
        ms(starts[STARTS - 1])
    );

    // 2. One instance for the load tests, with state; the Nginx-only location in front of the
    // same node, with the same password (an {SSHA} line of its own).
    let session = provider
        .runtime("load")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    let name = status.instance.to_string();
    let pid =
        erigolem_test_utils::pids_mentioning(&provider.instance_dir(&name).display().to_string())
            [0];
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = argv
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let node_port: u16 = args[args.iter().position(|a| a == "--port").unwrap() + 1]
        .parse()
        .unwrap();
    let direct = format!("http://127.0.0.1:{node_port}/");
    let creds = (
        status.auth.user.clone(),
        status.auth.password.expose().to_owned(),
    );
    let auth = Some((creds.0.as_str(), creds.1.as_str()));
    let old_dir = provider.root.join("nginx-only");
    std::fs::create_dir_all(&old_dir).unwrap();
    let old_password = old_dir.join("htpasswd");
    std::fs::write(
        &old_password,
        htpasswd::line(&creds.0, &creds.1, PasswordScheme::Ssha),
    )
    .unwrap();
    std::fs::set_permissions(
        &old_password,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let (_old_nginx, old_url) = nginx_only(&old_dir, &name, node_port, &old_password).await;
    let relay_socket = old_dir.join("relay.sock");
    let relay_process = ChildGuard::spawn(
        std::process::Command::new(std::env::current_exe().unwrap()).env(
            RELAY_ENV,
            format!("{}|127.0.0.1:{node_port}", relay_socket.display()),
        ),
    );
    wait_for("the relay", Duration::from_secs(10), || {
        let socket = relay_socket.clone();
        async move {
            std::os::unix::net::UnixStream::connect(&socket)
                .is_ok()
                .then_some(())
        }
    })
    .await;
    let relay_url = old_url.replacen(&format!("/{name}/"), &format!("/relay/{name}/"), 1);
    let mix = populate(&direct).await;
    for body in &mix {
        let v: Value = reqwest::Client::new()
            .post(&status.url)
            .basic_auth(&creds.0, Some(&creds.1))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v.get("result").is_some(), "{body} → {v}");
    }
    let runtime_idle = rss_kib(session.pid());
    println!("## memory (RSS) with one dedicated dev instance\n");
    println!("| process | RSS MiB |\n|---|---:|");
    println!(
        "| ya-runtime-erigon (with its guard), idle | {:.1} |",
        runtime_idle as f64 / 1024.0
    );
    println!(
        "| anvil (the node) | {:.1} |\n",
        rss_kib(pid) as f64 / 1024.0
    );

    // 3. Three paths side by side.
    let block_number = vec![BLOCK_NUMBER.to_owned()];
    let mut peak = runtime_idle;
    for (label, bodies) in [("eth_blockNumber", &block_number), ("realistic mix (eth_call, eth_getBlockByNumber full, eth_getLogs 100 blocks, eth_getBalance)", &mix)] {
        println!("## {label}: direct vs Nginx only (before) vs Nginx + guard (now)\n");
        println!("| conns | direct req/s | nginx-only req/s | full req/s | full/direct | full/nginx-only | direct p50 ms | nginx-only p50 ms | full p50 ms | added p50 ms (full − nginx-only) | direct p99 ms | nginx-only p99 ms | full p99 ms | guard CPU µs/call | errors d/n/f | load avg |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
        let mut floors = Vec::new();
        for conns in [1, 16, 64] {
            // The paths take turns in short slices, so that whatever else the machine does
            // weighs on each of them alike.
            let (mut d, mut n, mut f, mut r) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let (mut cpu, mut calls, mut relay_cpu) = (0.0, 0, 0.0);
            for _ in 0..ROUNDS {
                d.extend(samples(&direct, None, conns, bodies, SLICE_WARMUP, SLICE).await);
                n.extend(samples(&old_url, auth, conns, bodies, SLICE_WARMUP, SLICE).await);
                let relay_before = cpu_secs(relay_process.pid());
                r.extend(samples(&relay_url, auth, conns, bodies, SLICE_WARMUP, SLICE).await);
                relay_cpu += cpu_secs(relay_process.pid()) - relay_before;
                let cpu_before = cpu_secs(session.pid());
                let before = session.status().await.unwrap().usage.unwrap().requests;
                f.extend(samples(&status.url, auth, conns, bodies, SLICE_WARMUP, SLICE).await);
                calls += session.status().await.unwrap().usage.unwrap().requests - before;
                cpu += cpu_secs(session.pid()) - cpu_before;
            }
            let measured = SLICE * ROUNDS;
            let (d, n, f, r) = (
                Load::from_clients(d, measured),
                Load::from_clients(n, measured),
                Load::from_clients(f, measured),
                Load::from_clients(r, measured),
            );
            // The relay counts nothing: its calls are the ones the load generator saw answered.
            let relay_calls = r.rps * measured.as_secs_f64();
            floors.push(format!(
                "| {conns} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {:+.3} | {:+.3} | {:.1} | {:.1} | {} |",
                n.rps, r.rps, f.rps, pct(r.rps, d.rps), pct(f.rps, d.rps),
                ms(n.p50), ms(r.p50), ms(f.p50),
                (r.p50.as_secs_f64() - n.p50.as_secs_f64()) * 1000.0,
                (f.p50.as_secs_f64() - n.p50.as_secs_f64()) * 1000.0,
                relay_cpu / relay_calls.max(1.0) * 1e6, cpu / calls.max(1) as f64 * 1e6, r.errors
            ));
            let per_call = cpu / calls.max(1) as f64 * 1e6;
            peak = peak.max(rss_kib(session.pid()));
            let added = f.p50.as_secs_f64() - n.p50.as_secs_f64();
            println!(
                "| {conns} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {:+.3} | {} | {} | {} | {per_call:.1} | {}/{}/{} | {} |",
                d.rps, n.rps, f.rps, pct(f.rps, d.rps), pct(f.rps, n.rps),
                ms(d.p50), ms(n.p50), ms(f.p50), added * 1000.0,
                ms(d.p99), ms(n.p99), ms(f.p99), d.errors, n.errors, f.errors, load_average()
            );
        }
        println!();
        println!("### the floor of one more process: Nginx → a byte relay (kept alive both sides, parses nothing) → the node, in the same slices\n");
        println!("| conns | nginx-only req/s | relay req/s | full req/s | relay/direct | full/direct | nginx-only p50 ms | relay p50 ms | full p50 ms | relay added p50 ms | full added p50 ms | relay CPU µs/call | guard CPU µs/call | relay errors |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for row in floors {
            println!("{row}");
        }
        println!();
    }
    let usage = session.status().await.unwrap().usage.unwrap();
    println!("runtime RSS after the load: {:.1} MiB (highest seen between cells: {:.1} MiB); the guard counted {} calls, {} errors, {} refused\n",
        rss_kib(session.pid()) as f64 / 1024.0, peak as f64 / 1024.0, usage.requests, usage.errors, usage.refused.total());

    // 4. Password file formats Nginx can verify, at 16 connections, on the full path.
    let password = creds.1.as_str();
    let salt = b"Ab3dEf6hIj9l";
    let formats: Vec<(&str, String)> = vec![
        (
            "{PLAIN} (no hash; baseline)",
            htpasswd::hash(password, PasswordScheme::Plain),
        ),
        (
            "{SSHA} salted SHA-1 (chosen)",
            htpasswd::hash(password, PasswordScheme::Ssha),
        ),
        (
            "$5$ sha256-crypt, 1000 rounds",
            ShaCrypt::new(Algorithm::Sha256Crypt, Params::new(1000).unwrap())
                .hash_password_with_salt(password.as_bytes(), salt)
                .unwrap()
                .to_string(),
        ),
        (
            "$6$ sha512-crypt, 5000 rounds",
            ShaCrypt::new(Algorithm::Sha512Crypt, Params::new(5000).unwrap())
                .hash_password_with_salt(password.as_bytes(), salt)
                .unwrap()
                .to_string(),
        ),
        (
            "$2y$ bcrypt, cost 5 (htpasswd -B)",
            bcrypt::hash_with_result(password, 5)
                .unwrap()
                .format_for_version(bcrypt::Version::TwoY),
        ),
    ];
    let password_file = provider.nginx.gateway.dir.join(format!("htpasswd/{name}"));
    let original = std::fs::read_to_string(&password_file).unwrap();
    let header = original.lines().next().unwrap().to_owned();
    println!("## password file formats (16 connections, eth_blockNumber, full path)\n");
    println!("| format | req/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|");
    for (label, hash) in formats {
        std::fs::write(&password_file, format!("{header}\n{}:{hash}\n", creds.0)).unwrap();
        if let Err(e) = rpc(&status.url, auth, "eth_blockNumber", json!([])).await {
            println!("| {label} | rejected by nginx: {e:?} | | | |");
            continue;
        }
        let r = load(&status.url, auth, 16, &block_number).await;
        println!(
            "| {label} | {:.0} | {} | {} | {} |",
            r.rps,
            ms(r.p50),
            ms(r.p99),
            r.errors
        );
    }
    std::fs::write(&password_file, original).unwrap();
    session.shutdown().await.unwrap();
}
