//! `erigolem-provider`: the provider side of Erigolem. `run` is the dedicated provider agent;
//! `setup`, `check` and `uninstall` prepare and verify a provider machine.

mod run;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "erigolem-provider",
    version,
    about = "Sell Erigon nodes on the Golem Network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the provider agent: offer Erigon nodes through the local yagna, run them, get paid.
    Run(run::RunArgs),
    /// Write everything a provider machine needs (plugin descriptor, runtime config, Nginx site,
    /// systemd units, preset), idempotently, with a manifest; `--dry-run` prints it all.
    Setup(erigolem_provider_setup::cli::SetupArgs),
    /// Check every part of the provider machine: a pass/fail table with fixes (`--json`).
    Check(erigolem_provider_setup::cli::CheckArgs),
    /// Remove exactly what `setup` wrote (chain data only with `--purge-data`).
    Uninstall(erigolem_provider_setup::cli::UninstallArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => run::run(args).await,
        Command::Setup(args) => exit(erigolem_provider_setup::cli::setup(args)?),
        Command::Check(args) => exit(erigolem_provider_setup::cli::check(args).await?),
        Command::Uninstall(args) => exit(erigolem_provider_setup::cli::uninstall(args)?),
    }
}

/// Ends with `code` when it is not 0.
fn exit(code: i32) -> anyhow::Result<()> {
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
