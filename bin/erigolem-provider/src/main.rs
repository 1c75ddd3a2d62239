//! `erigolem-provider`: the provider side of Erigolem. `run` is the dedicated provider agent.

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
    }
}
