//! `erigolem serve` under a slowloris attack, printed as a Markdown table (nothing asserted):
//! the latency of `GET /healthz` from a well-behaved client with no attack, while 1,000
//! connections that never finish their headers hold (from four addresses, 250 each: under the
//! per-address cap), and while one address keeps opening connections beyond its cap. The server
//! runs as its own process (`erigolem serve`, release), the attacker and the client in this one.
//!
//! `bash scripts/bench.sh hostile`; results are recorded in docs/benchmarks.md.
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use erigolem_test_utils::bench::{ms, percentile};
use erigolem_test_utils::ChildGuard;
use erigolem_test_utils::{anvil_bin, free_port, free_port_block, wait_for, workspace_bin};
use tokio::io::AsyncWriteExt;

const PROBES: usize = 300;
const HELD: usize = 1000;

/// `PROBES` sequential `GET /healthz` on one keep-alive connection: (p50, p99, max).
async fn probe(url: &str) -> (Duration, Duration, Duration) {
    let http = reqwest::Client::new();
    let mut times = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        let t = Instant::now();
        let r = http.get(url).send().await.unwrap();
        assert!(r.status().is_success());
        r.bytes().await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[PROBES - 1],
    )
}

async fn slowloris(source: Ipv4Addr, server: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {server}\r\nX-Slow: ");
    let _ = stream.write_all(head.as_bytes()).await;
    stream
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (listen, gateway, ports) = (free_port(), free_port(), free_port_block(24));
    let mut cmd = std::process::Command::new(workspace_bin("erigolem"));
    cmd.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--gateway-listen", &format!("127.0.0.1:{gateway}")])
        .args(["--node-ports", &ports.to_string(), "--max-nodes", "2"])
        // Long enough that the attack holds while it is measured.
        .args(["--header-read-timeout", "60", "--idle-timeout", "120"])
        .args([
            OsStr::new("--data-dir"),
            dir.path().join("data").as_os_str(),
        ])
        .args([OsStr::new("--anvil"), anvil_bin().as_os_str()])
        .args([
            OsStr::new("--runtime"),
            workspace_bin("ya-runtime-erigon").as_os_str(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap());
    let _server = ChildGuard::spawn(&mut cmd);
    let url = format!("http://127.0.0.1:{listen}/healthz");
    let addr: SocketAddr = ([127, 0, 0, 1], listen).into();
    wait_for("erigolem serve to answer", Duration::from_secs(30), || {
        let url = url.clone();
        async move { reqwest::get(&url).await.ok().map(drop) }
    })
    .await;

    let mut rows = vec![("no attack".to_owned(), probe(&url).await)];
    let mut held = Vec::new();
    for i in 0..HELD {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % 4) as u8);
        held.push(slowloris(source, addr).await);
    }
    rows.push((
        format!("{HELD} slowloris connections held (4 addresses × 250)"),
        probe(&url).await,
    ));
    // One address keeps opening more while the probe runs: each is closed on accept.
    let flood = tokio::spawn(async move {
        let mut extra = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            extra.push(slowloris(Ipv4Addr::new(127, 0, 0, 2), addr).await);
            if extra.len() > 2000 {
                extra.clear();
            }
        }
    });
    rows.push((
        format!("{HELD} held + one address opening more beyond its cap"),
        probe(&url).await,
    ));
    flood.abort();

    println!("# erigolem serve under slowloris\n");
    println!(
        "machine: {} cores; `erigolem serve` (release) as a child process; {PROBES} sequential \
         `GET /healthz` on one keep-alive connection per row\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| while | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|");
    for (what, (p50, p99, max)) in rows {
        println!("| {what} | {} | {} | {} |", ms(p50), ms(p99), ms(max));
    }
    drop(held);
}
