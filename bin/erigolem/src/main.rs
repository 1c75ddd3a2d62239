//! `erigolem`: the requestor server (`erigolem serve`) and its command-line client (`login`, `nodes`,
//! `net-check`). Server settings: flags, then `ERIGOLEM_*` variables, then a TOML `--config` file,
//! then the defaults (`./.erigolem`, SQLite inside it, 127.0.0.1:8080).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod cli;
use erigolem_server::backend::golem::GolemConfig;
use erigolem_server::backend::local::LocalConfig;
use erigolem_server::BackendConfig;
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
    /// Where the database, keys and generated config live; a relative path is taken from the
    /// working directory [default: .erigolem].
    #[arg(long, env = "ERIGOLEM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…` [default: SQLite in the data dir].
    #[arg(long, env = "ERIGOLEM_DATABASE_URL")]
    database_url: Option<String>,
    /// Where nodes run [default: local]: `local` (this machine is the provider) or `golem`
    /// (providers on the Golem market, through the requestor's yagna).
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
    /// The erigon binary for mainnet/sepolia/hoodi nodes [default: none, not offered].
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
    /// A running node more than this many blocks behind its network is lagging [default: 40].
    #[arg(long, env = "ERIGOLEM_LAG_BLOCKS")]
    lag_blocks: Option<u64>,
    /// A running node whose head block is older than this many seconds is lagging [default: 120].
    #[arg(long, env = "ERIGOLEM_LAG_SECONDS")]
    lag_seconds: Option<u64>,
    /// golem: the requestor's yagna REST API [default: http://127.0.0.1:7465].
    #[arg(long, env = "YAGNA_API_URL")]
    yagna_url: Option<url::Url>,
    /// golem: an app key of that yagna.
    #[arg(long, env = "YAGNA_APPKEY", hide_env_values = true)]
    yagna_appkey: Option<String>,
    /// golem: the market subnet [default: erigolem].
    #[arg(long, env = "ERIGOLEM_SUBNET")]
    subnet: Option<String>,
    /// golem: the payment platform [default: erc20-hoodi-tglm].
    #[arg(long, env = "ERIGOLEM_PAYMENT_PLATFORM")]
    payment_platform: Option<String>,
    /// golem: GLM set aside per node; payments beyond it are refused [default: 5].
    #[arg(long, env = "ERIGOLEM_BUDGET")]
    budget: Option<f64>,
    /// golem: offers above this many GLM per hour are not taken [default: no cap].
    #[arg(long, env = "ERIGOLEM_MAX_PRICE_PER_HOUR")]
    max_price_per_hour: Option<f64>,
    /// golem: only these providers (node ids or names) [default: any].
    #[arg(
        long = "allow-provider",
        env = "ERIGOLEM_ALLOW_PROVIDERS",
        value_delimiter = ','
    )]
    allow_providers: Option<Vec<String>>,
    /// golem: never these providers.
    #[arg(
        long = "deny-provider",
        env = "ERIGOLEM_DENY_PROVIDERS",
        value_delimiter = ','
    )]
    deny_providers: Option<Vec<String>>,
    /// golem: seconds to look for a provider before a node fails with "no offers" [default: 20].
    #[arg(long, env = "ERIGOLEM_DEAL_TIMEOUT")]
    deal_timeout: Option<u64>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum BackendKind {
    /// This machine is the provider.
    Local,
    /// Providers on the Golem market.
    Golem,
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
            lag_blocks: self.lag_blocks.or(file.lag_blocks),
            lag_seconds: self.lag_seconds.or(file.lag_seconds),
            yagna_url: self.yagna_url.or(file.yagna_url),
            yagna_appkey: self.yagna_appkey.or(file.yagna_appkey),
            subnet: self.subnet.or(file.subnet),
            payment_platform: self.payment_platform.or(file.payment_platform),
            budget: self.budget.or(file.budget),
            max_price_per_hour: self.max_price_per_hour.or(file.max_price_per_hour),
            allow_providers: self.allow_providers.or(file.allow_providers),
            deny_providers: self.deny_providers.or(file.deny_providers),
            deal_timeout: self.deal_timeout.or(file.deal_timeout),
        }
    }
}

/// `name` in a clone's `.tools/bin` (`scripts/setup.sh` installs there): the one in the working
/// directory, else the one of the clone this binary was built in (`<clone>/target/<profile>/`),
/// so the quick start works from any directory; else on PATH.
fn find_tool(name: &str) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    let clones = cwd
        .iter()
        .map(PathBuf::as_path)
        .chain(exe.iter().flat_map(|e| e.ancestors().skip(1).take(4)));
    for dir in clones {
        let local = dir.join(".tools/bin").join(name);
        if local.exists() {
            return std::fs::canonicalize(local).ok();
        }
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
    let kind = args.backend.unwrap_or(BackendKind::Local);
    if matches!(kind, BackendKind::Local) && anvil_bin.is_none() && args.erigon.is_none() {
        anyhow::bail!(
            "no engine: give --anvil or --erigon (scripts/setup.sh installs anvil into .tools/bin)"
        );
    }
    let backend = match kind {
        BackendKind::Golem => {
            let url = args
                .yagna_url
                .unwrap_or_else(|| url::Url::parse("http://127.0.0.1:7465").expect("a valid URL"));
            let key = args.yagna_appkey.ok_or_else(|| {
                anyhow::anyhow!("--backend golem needs --yagna-appkey (or YAGNA_APPKEY): `yagna app-key create erigolem`")
            })?;
            let mut golem = GolemConfig::new(url, key);
            if let Some(subnet) = args.subnet {
                golem.subnet = subnet;
            }
            if let Some(platform) = args.payment_platform {
                golem.payment_platform = platform;
            }
            if let Some(budget) = args.budget {
                anyhow::ensure!(budget > 0.0, "--budget must be positive");
                golem.budget = budget;
            }
            golem.max_price_per_hour = args.max_price_per_hour;
            golem.allow_providers = args.allow_providers.unwrap_or_default();
            golem.deny_providers = args.deny_providers.unwrap_or_default();
            if let Some(secs) = args.deal_timeout {
                golem.deal_timeout = std::time::Duration::from_secs(secs.max(1));
            }
            BackendConfig::Golem(golem)
        }
        BackendKind::Local => BackendConfig::Local(LocalConfig {
            runtime_bin,
            anvil_bin,
            erigon_bin: args.erigon,
            gateway_listen: args
                .gateway_listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8081))),
            max_nodes: args.max_nodes.unwrap_or(8),
            port_base: args.node_ports.unwrap_or(40_000),
        }),
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
        lag_blocks: args.lag_blocks.unwrap_or(defaults.lag_blocks),
        lag_seconds: args.lag_seconds.unwrap_or(defaults.lag_seconds),
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
