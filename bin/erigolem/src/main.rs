//! `erigolem`: the requestor server (`erigolem serve`) and its command-line client (`login`, `nodes`,
//! `net-check`). Server settings: flags, then `ERIGOLEM_*` variables, then a TOML `--config` file,
//! then the defaults (`./.erigolem`, SQLite inside it, 127.0.0.1:8080).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
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
    Serve(Box<ServeArgs>),
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

/// Settings of `erigolem serve`: flags, else `ERIGOLEM_*` variables, else the `--config` file
/// (TOML, the same names), else the defaults shown.
#[derive(Debug, Default, clap::Args, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct ServeArgs {
    /// A TOML file with any of these settings (kebab-case keys, e.g. `gateway-listen`).
    #[arg(long, env = "ERIGOLEM_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Address and port to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "ERIGOLEM_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where the database, keys and generated config live [default: .erigolem].
    #[arg(long, env = "ERIGOLEM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…` [default: SQLite in the data dir].
    #[arg(long, env = "ERIGOLEM_DATABASE_URL")]
    database_url: Option<String>,
    /// Where nodes run [default: local]. (The Golem backend arrives with the Golem issue.)
    #[arg(long, env = "ERIGOLEM_BACKEND", value_enum)]
    backend: Option<BackendKind>,
    /// The URL users reach the server at (SIWE domain and URI must match it), when behind a proxy.
    #[arg(long, env = "ERIGOLEM_PUBLIC_URL")]
    public_url: Option<url::Url>,
    /// Chain ids accepted in sign-in messages (repeatable) [default: any].
    #[arg(long = "chain-id", env = "ERIGOLEM_CHAIN_IDS", value_delimiter = ',')]
    chain_ids: Option<Vec<u64>>,
    /// Where the local backend's Nginx listens; node URLs are `http://<this>/<node id>/`
    /// [default: 127.0.0.1:8081].
    #[arg(long, env = "ERIGOLEM_GATEWAY_LISTEN")]
    gateway_listen: Option<SocketAddr>,
    /// The anvil binary for `dev` nodes [default: .tools/bin/anvil, then PATH].
    #[arg(long, env = "ERIGOLEM_ANVIL")]
    anvil: Option<PathBuf>,
    /// The erigon binary for mainnet/sepolia/holesky/hoodi nodes [default: none, not offered].
    #[arg(long, env = "ERIGOLEM_ERIGON")]
    erigon: Option<PathBuf>,
    /// The `ya-runtime-erigon` binary [default: next to this one].
    #[arg(long, env = "ERIGOLEM_RUNTIME")]
    runtime: Option<PathBuf>,
    /// Nodes this machine runs at once [default: 8].
    #[arg(long, env = "ERIGOLEM_MAX_NODES")]
    max_nodes: Option<u16>,
    /// First port of the range nodes take their ports from, 12 per node [default: 40000].
    #[arg(long, env = "ERIGOLEM_NODE_PORTS")]
    node_ports: Option<u16>,
    /// Active nodes one user may have [default: 3].
    #[arg(long, env = "ERIGOLEM_MAX_NODES_PER_USER")]
    max_nodes_per_user: Option<u32>,
    /// API requests per second per client IP, bursts of twice that [default: 50].
    #[arg(long, env = "ERIGOLEM_RATE_LIMIT")]
    rate_limit: Option<std::num::NonZeroU32>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum BackendKind {
    /// This machine is the provider.
    Local,
}

impl ServeArgs {
    /// Settings given here win; the rest come from `file`.
    fn or(self, file: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config,
            listen: self.listen.or(file.listen),
            data_dir: self.data_dir.or(file.data_dir),
            database_url: self.database_url.or(file.database_url),
            backend: self.backend.or(file.backend),
            public_url: self.public_url.or(file.public_url),
            chain_ids: self.chain_ids.or(file.chain_ids),
            gateway_listen: self.gateway_listen.or(file.gateway_listen),
            anvil: self.anvil.or(file.anvil),
            erigon: self.erigon.or(file.erigon),
            runtime: self.runtime.or(file.runtime),
            max_nodes: self.max_nodes.or(file.max_nodes),
            node_ports: self.node_ports.or(file.node_ports),
            max_nodes_per_user: self.max_nodes_per_user.or(file.max_nodes_per_user),
            rate_limit: self.rate_limit.or(file.rate_limit),
        }
    }
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
        Command::Serve(args) => serve(*args).await,
        Command::Login(args) => cli::login(args).await,
        Command::Nodes { command } => cli::nodes(command).await,
        Command::NetCheck(args) => cli::net_check(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("{} is not a valid config", path.display()))?
        }
        None => ServeArgs::default(),
    };
    let args = args.or(file);
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
    let backend = match args.backend.unwrap_or(BackendKind::Local) {
        BackendKind::Local => LocalConfig {
            runtime_bin,
            anvil_bin,
            erigon_bin: args.erigon,
            gateway_listen: args
                .gateway_listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8081))),
            max_nodes: args.max_nodes.unwrap_or(8),
            port_base: args.node_ports.unwrap_or(40_000),
        },
    };
    let defaults = ServerConfig::new(args.data_dir.unwrap_or_else(|| PathBuf::from(".erigolem")));
    let config = ServerConfig {
        listen: args.listen.unwrap_or(defaults.listen),
        database_url: args.database_url,
        public_url: args.public_url,
        chain_ids: args.chain_ids.unwrap_or_default(),
        backend: Some(backend),
        max_active_nodes: args.max_nodes_per_user.unwrap_or(defaults.max_active_nodes),
        rate_limit: args.rate_limit.unwrap_or(defaults.rate_limit),
        ..defaults
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
