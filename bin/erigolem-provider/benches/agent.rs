//! The provider agent in the local Golem network (run offline: scripts/bench.sh provider).
//! Demand → agreement → activity → STATUS → URL answering, 10 purchases one after another; and the
//! agent's memory with 0 and 10 active activities. Prints Markdown tables for docs/benchmarks.md.
#![allow(clippy::unwrap_used)]

#[path = "../tests/it/common.rs"]
mod common;

use std::time::Duration;

use common::{buy_dev_node, start_agent, yagna, Phases};
use erigolem_test_utils::bench::{ms, percentile, rss_kib};
use erigolem_test_utils::golem::{GolemNet, GolemNetConfig};
use erigolem_test_utils::provider::Provider;

const RUNS: usize = 10;
const ACTIVE: usize = 10;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 0.5)
}

#[tokio::main]
async fn main() {
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    println!(
        "local Golem network up in {} ms (anvil, router, 2 × yagna 0.17.6)\n",
        ms(net.bring_up())
    );
    let machine = Provider::start(ACTIVE as u16, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("agent");
    let agent = start_agent(
        &net,
        &machine,
        &data_dir,
        &["--capacity", &ACTIVE.to_string()],
    );
    let r = yagna(net.requestor(0));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_kib(agent.pid());

    // Purchases one after another; each node is ended before the next.
    let mut phases: Vec<Phases> = Vec::new();
    for _ in 0..RUNS {
        let bought = buy_dev_node(&r, net.requestor(0), &data_dir).await;
        phases.push(bought.phases);
        r.destroy_activity(&bought.activity).await.unwrap();
        r.terminate_agreement(&bought.deal.agreement_id, "benchmark")
            .await
            .ok();
    }
    println!("| step (cumulative from demand published) | median of {RUNS} | max |");
    println!("|---|---|---|");
    let row = |name: &str, f: &dyn Fn(&Phases) -> Duration| {
        let v: Vec<Duration> = phases.iter().map(f).collect();
        let max = v.iter().max().copied().unwrap_or_default();
        println!("| {name} | {} ms | {} ms |", ms(median(v)), ms(max));
    };
    row("agreement approved", &|p| p.agreement);
    row("activity created (exe-unit Initialized)", &|p| p.activity);
    row("deploy + start dev + STATUS done", &|p| p.runtime);
    row("URL answers eth_blockNumber", &|p| p.url);

    // Memory with ACTIVE nodes running at once.
    let mut live = Vec::new();
    for _ in 0..ACTIVE {
        live.push(buy_dev_node(&r, net.requestor(0), &data_dir).await);
    }
    let busy_rss = rss_kib(agent.pid());
    println!("\n| agent (erigolem-provider run) | RSS |");
    println!("|---|---|");
    println!("| 0 activities | {:.1} MiB |", idle_rss as f64 / 1024.0);
    println!(
        "| {ACTIVE} activities | {:.1} MiB |",
        busy_rss as f64 / 1024.0
    );
    for node in live {
        r.destroy_activity(&node.activity).await.unwrap();
    }
}
