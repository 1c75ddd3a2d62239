//! Brings up a local Golem network (payment chain, router, yagna daemons), prints it as
//! `KEY=value` lines, and keeps it up until Ctrl-C or SIGTERM; then ends every process.
//!
//! Offline only (yagna must not reach beyond the machine):
//! ```sh
//! cargo build -p erigolem-test-utils --example golem-net
//! unshare -n sh -c 'ip link set lo up; exec target/debug/examples/golem-net --requestors 1 --providers 1'
//! ```
#![allow(clippy::unwrap_used)]

use erigolem_test_utils::golem::{GolemNet, GolemNetConfig};
use tokio::signal::unix::{signal, SignalKind};

fn usage() -> ! {
    eprintln!("usage: golem-net [--requestors N] [--providers N]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut config = GolemNetConfig::test();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut n = || -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match arg.as_str() {
            "--requestors" => config.requestors = n(),
            "--providers" => config.providers = n(),
            _ => usage(),
        }
    }
    let net = match GolemNet::spawn(config).await {
        Ok(net) => net,
        Err(e) => {
            eprintln!("golem-net: {e}");
            std::process::exit(1);
        }
    };
    for line in net.env_lines() {
        println!("{line}");
    }
    println!("# up in {} ms; Ctrl-C stops it", net.bring_up().as_millis());
    let mut term = signal(SignalKind::terminate()).unwrap();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(net);
    eprintln!("golem-net: stopped");
}
