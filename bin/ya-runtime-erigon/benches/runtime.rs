//! Runtime benchmark, printed as tables (nothing asserted): start → first RPC through Nginx on the
//! dev chain, the runtime's memory, `eth_blockNumber` through Nginx vs direct to the node at 1, 16
//! and 64 keep-alive connections, and the cost of the password file formats Nginx can verify.
//!
//! `scripts/bench.sh` (release build); results are recorded in docs/benchmarks.md.
#![allow(clippy::unwrap_used)]

use erigolem_test_utils::bench::{ms, percentile, rss_kib, Load};
use std::time::{Duration, Instant};

use erigolem_gateway::{htpasswd, PasswordScheme};
use erigolem_test_utils::{rpc, Provider};
use serde_json::json;
use sha_crypt::{Algorithm, Params, PasswordHasher, ShaCrypt};

const STARTS: usize = 20;
const WARMUP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_secs(3);
const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;

/// `conns` tasks, each with its own keep-alive connection, sending `eth_blockNumber` back to back.
async fn load(url: &str, auth: Option<(&str, &str)>, conns: usize) -> Load {
    let tasks = (0..conns).map(|_| {
        let url = url.to_owned();
        let auth = auth.map(|(u, p)| (u.to_owned(), p.to_owned()));
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let send = || {
                let mut req = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(BODY);
                if let Some((u, p)) = &auth {
                    req = req.basic_auth(u, Some(p));
                }
                req.send()
            };
            let mut latencies = Vec::new();
            let mut errors = 0;
            let start = Instant::now();
            while start.elapsed() < WARMUP + MEASURE {
                let t = Instant::now();
                let ok = match send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if start.elapsed() > WARMUP {
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
    let clients = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|t| t.unwrap());
    Load::from_clients(clients, MEASURE)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let provider = Provider::start(4, |_| {}).await;
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

    // 2. One instance for the load tests; memory while it runs.
    let session = provider
        .runtime("load")
        .start(r#"{"network":"dev"}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    let name = status.instance.to_string();
    let upstream = std::fs::read_to_string(
        provider
            .nginx
            .gateway
            .dir
            .join(format!("upstreams/{name}.conf")),
    )
    .unwrap();
    let node_port: u16 = upstream
        .split("server 127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let direct = format!("http://127.0.0.1:{node_port}/");
    let node_pid = erigolem_test_utils::pids_mentioning(&name)
        .first()
        .copied()
        .unwrap_or(0);
    println!("## memory (RSS) with one dedicated dev instance\n");
    println!("| process | RSS MiB |\n|---|---:|");
    println!(
        "| ya-runtime-erigon | {:.1} |",
        rss_kib(session.pid()) as f64 / 1024.0
    );
    println!(
        "| anvil (the node) | {:.1} |\n",
        rss_kib(node_pid) as f64 / 1024.0
    );

    // 3. Through Nginx vs direct.
    let creds = (
        status.auth.user.clone(),
        status.auth.password.expose().to_owned(),
    );
    let auth = Some((creds.0.as_str(), creds.1.as_str()));
    println!("## eth_blockNumber: through Nginx ({{SSHA}} basic auth) vs direct to the node\n");
    println!("| conns | direct req/s | nginx req/s | nginx/direct | direct p50 ms | nginx p50 ms | added p50 ms | direct p99 ms | nginx p99 ms | errors |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for conns in [1, 16, 64] {
        let d = load(&direct, None, conns).await;
        let n = load(&status.url, auth, conns).await;
        println!(
            "| {conns} | {:.0} | {:.0} | {:.0}% | {} | {} | {} | {} | {} | {} |",
            d.rps,
            n.rps,
            100.0 * n.rps / d.rps,
            ms(d.p50),
            ms(n.p50),
            ms(n.p50.saturating_sub(d.p50)),
            ms(d.p99),
            ms(n.p99),
            d.errors + n.errors
        );
    }

    // 4. Password file formats Nginx can verify, at 16 connections.
    let password = creds.1.as_str();
    // 12 bytes → 16 base64 characters: crypt(3) uses at most 16 salt characters.
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
    println!("\n## password file formats (16 connections, through Nginx)\n");
    println!("| format | req/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|");
    for (label, hash) in formats {
        std::fs::write(&password_file, format!("{}:{hash}\n", creds.0)).unwrap();
        if let Err(e) = rpc(&status.url, auth, "eth_blockNumber", json!([])).await {
            println!("| {label} | rejected by nginx: {e:?} | | | |");
            continue;
        }
        let r = load(&status.url, auth, 16).await;
        println!(
            "| {label} | {:.0} | {} | {} | {} |",
            r.rps,
            ms(r.p50),
            ms(r.p99),
            r.errors
        );
    }
    // The proxy hop alone: the same location without auth_basic.
    let location = provider
        .nginx
        .gateway
        .dir
        .join(format!("locations/{name}.conf"));
    let with_auth = std::fs::read_to_string(&location).unwrap();
    let without: String = with_auth
        .lines()
        .filter(|l| !l.contains("auth_basic"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&location, without).unwrap();
    let gateway = erigolem_gateway::Gateway::new(provider.nginx.gateway.clone());
    gateway.reload().await.unwrap();
    let r = load(&status.url, None, 16).await;
    println!(
        "| no auth_basic (proxy only) | {:.0} | {} | {} | {} |",
        r.rps,
        ms(r.p50),
        ms(r.p99),
        r.errors
    );
    std::fs::write(&location, with_auth).unwrap();
    gateway.reload().await.unwrap();
    session.shutdown().await.unwrap();
}
