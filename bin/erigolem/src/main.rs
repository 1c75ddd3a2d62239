//! `erigolem`: the requestor server (`erigolem serve`) and its command-line client (`login`, `nodes`). Flags override `ERIGOLEM_*` environment
//! variables, which override the defaults (`./.erigolem`, SQLite inside it, 127.0.0.1:8080).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod cli;
use erigolem_server::backend::local::LocalConfig;
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
    /// Sign in with Ethereum (a key from ERIGOLEM_PRIVATE_KEY or a keystore) and keep the session.
    Login(cli::LoginArgs),
    /// List, create, show, stop and remove your nodes.
    Nodes {
        #[command(subcommand)]
        command: cli::NodesCommand,
    },
    /// Keep N nodes alive, probe each through its URL, replace unhealthy ones; stop all at the end.
    NetCheck(cli::NetCheckArgs),
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
    /// Where the local backend's Nginx listens: node URLs are `http://<this>/<node id>/`.
    #[arg(
        long,
        env = "ERIGOLEM_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    gateway_listen: SocketAddr,
    /// The anvil binary for `dev` nodes (default: `.tools/bin/anvil`, then PATH).
    #[arg(long, env = "ERIGOLEM_ANVIL")]
    anvil: Option<PathBuf>,
    /// The erigon binary for mainnet/sepolia/holesky/hoodi nodes (none: those are not offered).
    #[arg(long, env = "ERIGOLEM_ERIGON")]
    erigon: Option<PathBuf>,
    /// The `ya-runtime-erigon` binary (default: next to this one).
    #[arg(long, env = "ERIGOLEM_RUNTIME")]
    runtime: Option<PathBuf>,
    /// Nodes this machine runs at once.
    #[arg(long, env = "ERIGOLEM_MAX_NODES", default_value_t = 8)]
    max_nodes: u16,
    /// First port of the range nodes take their ports from (12 per node).
    #[arg(long, env = "ERIGOLEM_NODE_PORTS", default_value_t = 40_000)]
    node_ports: u16,
    /// Active nodes one user may have.
    #[arg(long, env = "ERIGOLEM_MAX_NODES_PER_USER", default_value_t = 3)]
    max_nodes_per_user: u32,
}

/// `name` in the clone's `.tools/bin`, else on PATH.
fn find_tool(name: &str) -> Option<PathBuf> {
    let local = PathBuf::from(".tools/bin").join(name);
    if local.exists() {
        return std::fs::canonicalize(local).ok();
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.is_file())
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
        Command::Login(args) => cli::login(args).await,
        Command::Nodes { command } => cli::nodes(command).await,
        Command::NetCheck(args) => cli::net_check(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let runtime_bin = match args.runtime {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("ya-runtime-erigon"),
    };
    let anvil_bin = args.anvil.or_else(|| find_tool("anvil"));
    if anvil_bin.is_none() && args.erigon.is_none() {
        anyhow::bail!(
            "no engine: give --anvil or --erigon (scripts/setup.sh installs anvil into .tools/bin)"
        );
    }
    let backend = LocalConfig {
        runtime_bin,
        anvil_bin,
        erigon_bin: args.erigon,
        gateway_listen: args.gateway_listen,
        max_nodes: args.max_nodes,
        port_base: args.node_ports,
    };
    let config = ServerConfig {
        listen: args.listen,
        database_url: args.database_url,
        public_url: args.public_url,
        chain_ids: args.chain_ids,
        backend: Some(backend),
        max_active_nodes: args.max_nodes_per_user,
        ..ServerConfig::new(args.data_dir)
    };
    let handle = erigolem_server::spawn(config).await?;
    println!("erigolem listening on {}", handle.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}
