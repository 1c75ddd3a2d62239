//! Starts a private Nginx and one `ya-runtime-erigon` instance on the dev chain, driven the way a
//! Golem exe-unit drives it, and prints a curl command that works. Ctrl-C stops it cleanly.
//!
//! `cargo build --workspace --bins && cargo run -p ya-runtime-erigon --example demo`
#![allow(clippy::unwrap_used)]

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let provider = erigolem_test_utils::Provider::start(4, |_| {}).await;
    let runtime = provider.runtime("demo");
    let deployed = runtime.deploy().await?;
    if let Err(reason) = deployed.valid {
        anyhow::bail!("deploy: {reason}");
    }
    let started = std::time::Instant::now();
    let session = runtime.start(r#"{"network":"dev"}"#).await?;
    let status = session.status().await?;
    let ready_in = started.elapsed();
    let (user, password) = (&status.auth.user, status.auth.password.expose());
    println!("runtime config: {}", provider.config_path().display());
    println!(
        "instance {} ({} on {}), ready in {ready_in:.0?}",
        status.instance, status.network, status.engine
    );
    println!("HTTP:      {}", status.url);
    println!("WebSocket: {}", status.ws_url);
    println!();
    println!("Try it:");
    println!(
        "  curl -s -u '{user}:{password}' -H 'content-type: application/json' \\\n    --data '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_blockNumber\",\"params\":[]}}' {}",
        status.url
    );
    println!();
    println!("Ctrl-C stops the instance (credentials revoked, Nginx entry removed).");
    // Ctrl-C or SIGTERM: either way the instance is stopped and Nginx ended.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    session.shutdown().await?;
    println!(
        "stopped; {} gateway entries left",
        provider.gateway_entries().len()
    );
    Ok(())
}
