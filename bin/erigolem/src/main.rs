//! `erigolem`: the requestor server (`erigolem serve`). Flags override `ERIGOLEM_*` environment
//! variables, which override the defaults (`./.erigolem`, SQLite inside it, 127.0.0.1:8080).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use erigolem_server::ServerConfig;

#[derive(Debug, Parser)]
#[command(version, about = "Ethereum nodes on demand on the Golem Network")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the REST API server.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "ERIGOLEM_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the database, keys and generated config live.
    #[arg(long, env = "ERIGOLEM_DATA_DIR", default_value = ".erigolem")]
    data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…` (default: SQLite in the data dir).
    #[arg(long, env = "ERIGOLEM_DATABASE_URL")]
    database_url: Option<String>,
    /// The URL users reach the server at (SIWE domain and URI must match it), when behind a proxy.
    #[arg(long, env = "ERIGOLEM_PUBLIC_URL")]
    public_url: Option<url::Url>,
    /// Chain ids accepted in sign-in messages (repeatable; none accepts any).
    #[arg(long = "chain-id", env = "ERIGOLEM_CHAIN_IDS", value_delimiter = ',')]
    chain_ids: Vec<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServerConfig {
        listen: args.listen,
        database_url: args.database_url,
        public_url: args.public_url,
        chain_ids: args.chain_ids,
        ..ServerConfig::new(args.data_dir)
    };
    let handle = erigolem_server::spawn(config).await?;
    println!("erigolem listening on {}", handle.url());
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}
