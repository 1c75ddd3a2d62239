//! The whole Golem path on one machine, for the web UI's end-to-end test and for trying it out:
//! a local Golem network (anvil as the payment chain, router, a requestor and a provider yagna),
//! a provider machine (Nginx, runtime config) with `erigolem-provider run`, and `erigolem serve`
//! with `--backend golem`. Prints `ERIGOLEM_URL=…` when ready; SIGTERM or Ctrl-C ends everything.
//! Must run inside `unshare -n` (the harness refuses otherwise):
//!   unshare -n sh -c 'ip link set lo up; exec target/debug/examples/golem-stack'

use std::time::Duration;

use erigolem_server::backend::golem::GolemConfig;
use erigolem_server::{BackendConfig, ServerConfig};
use erigolem_test_utils::golem::{start_provider_agent, GolemNet, GolemNetConfig};
use erigolem_test_utils::Provider;

const SUBNET: &str = "erigolem-local";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let net = GolemNet::spawn(GolemNetConfig::test())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let machine = Provider::start(4, |_| {}).await;
    let dir = tempfile::tempdir()?;
    let _agent = start_provider_agent(
        net.provider(0),
        &machine,
        &dir.path().join("agent"),
        SUBNET,
        &[
            "--price-per-hour",
            "0.36",
            "--start-fee",
            "0.01",
            "--debit-note-interval",
            "5",
        ],
    );
    let requestor = net.requestor(0);
    let mut golem = GolemConfig::new(requestor.api_url.parse()?, requestor.app_key.clone());
    golem.subnet = SUBNET.into();
    let mut config = ServerConfig::test(dir.path().join("server"));
    config.backend = Some(BackendConfig::Golem(golem));
    let server = erigolem_server::spawn(config).await?;
    // Let the market view see the provider's offer before the first page load.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("ERIGOLEM_URL={}", server.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}
