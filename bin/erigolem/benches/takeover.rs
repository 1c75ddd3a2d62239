//! How fast a node's control moves to another replica (run offline: scripts/bench.sh takeover):
//! two `erigolem serve --backend golem` processes on one PostgreSQL database and one requestor
//! yagna in the local Golem network, one node on the provider. Ten times the replica holding the
//! node is killed with SIGKILL and started again; five times it is stopped with SIGTERM (it hands
//! its leases back). Measured: from the signal to the other replica's first STATUS poll of the
//! node (its `/healthz`), and to its lease (when it took it).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use erigolem_client::{Client, CreateNode, Wallet};
use erigolem_test_utils::bench::percentile;
use erigolem_test_utils::replicas::ReplicaStack;
use erigolem_test_utils::serve::ServeProcess;
use erigolem_test_utils::wallet::DEV_KEY_0;

const KILLS: usize = 10;
const STOPS: usize = 5;

async fn holder(replicas: &[ServeProcess], node: &str) -> Option<usize> {
    for (i, r) in replicas.iter().enumerate() {
        if r.held().await.iter().any(|n| n == node) {
            return Some(i);
        }
    }
    None
}

/// Waits until replica `by` polled `node` after `since` (unix ms); (first poll, lease taken)
/// in ms after `since`.
async fn taken_over(by: &ServeProcess, node: &str, since: i64) -> (i64, i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let h = by.healthz().await;
        let polled = h["polled"][node]["last_poll"].as_i64().unwrap_or(0);
        if polled > since {
            let lease = h["nodes"]
                .as_array()
                .and_then(|a| a.iter().find(|n| n["id"] == node))
                .and_then(|n| n["since"].as_i64())
                .unwrap_or(polled);
            return (polled - since, lease - since);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no takeover within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[i64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2] as f64,
        n => (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0,
    }
}

fn row(what: &str, ms: &mut [i64]) -> String {
    ms.sort();
    let d: Vec<Duration> = ms
        .iter()
        .map(|m| Duration::from_millis(*m as u64))
        .collect();
    format!(
        "| {what} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        ms.len(),
        median(ms) / 1000.0,
        percentile(&d, 0.9).as_secs_f64(),
        d.first().copied().unwrap_or_default().as_secs_f64(),
        d.last().copied().unwrap_or_default().as_secs_f64(),
    )
}

#[tokio::main]
async fn main() {
    let stack = ReplicaStack::start(1).await;
    let mut replicas = vec![stack.replica(0).await, stack.replica(1).await];
    let mut client = Client::new(&replicas[0].url);
    client
        .sign_in(&Wallet::from_hex(DEV_KEY_0).unwrap(), 1)
        .await
        .unwrap();
    let node = client
        .create(&CreateNode {
            ..CreateNode::new(erigolem_api::Network::Dev)
        })
        .await
        .unwrap()
        .id;
    loop {
        let n = client.node(&node).await.unwrap();
        assert_ne!(n.state, "failed", "{n:?}");
        if n.state == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut kill_poll, mut kill_lease, mut stop_poll, mut stop_lease) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..KILLS + STOPS {
        let h = loop {
            if let Some(h) = holder(&replicas, &node).await {
                break h;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let other = 1 - h;
        let since = erigolem_store::now_ms();
        let graceful = round >= KILLS;
        if graceful {
            replicas[h].stop();
        } else {
            replicas[h].kill9();
        }
        let (poll, lease) = taken_over(&replicas[other], &node, since).await;
        eprintln!(
            "{} {round}: first poll by the other replica after {poll} ms (lease after {lease} ms)",
            if graceful { "SIGTERM" } else { "SIGKILL" }
        );
        if graceful {
            stop_poll.push(poll);
            stop_lease.push(lease);
        } else {
            kill_poll.push(poll);
            kill_lease.push(lease);
        }
        let again = stack.restart(h, &replicas[h]).await;
        replicas[h] = again;
    }
    println!("\n| takeover (lease ttl 6 s, renewed every 1 s; STATUS every 2 s) | runs | median s | p90 s | min s | max s |");
    println!("|---|---|---|---|---|---|");
    println!(
        "{}",
        row(
            "SIGKILL → the other replica holds the lease",
            &mut kill_lease
        )
    );
    println!(
        "{}",
        row("SIGKILL → the other replica polls the node", &mut kill_poll)
    );
    println!(
        "{}",
        row(
            "SIGTERM → the other replica holds the lease",
            &mut stop_lease
        )
    );
    println!(
        "{}",
        row("SIGTERM → the other replica polls the node", &mut stop_poll)
    );
    for mut r in replicas {
        r.stop();
    }
}
