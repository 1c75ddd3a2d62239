//! `erigolem`: the requestor server (`erigolem serve`) and its command-line client (`login`, `nodes`,
//! `net-check`). Server settings: flags, then `ERIGOLEM_*` variables, then a TOML `--config` file,
//! then the defaults (`./.erigolem`, SQLite inside it, 127.0.0.1:8080).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod cli;
use erigolem_lifecycle::Glm;
use erigolem_server::backend::golem::GolemConfig;
use erigolem_server::backend::local::LocalConfig;
use erigolem_server::BackendConfig;
use erigolem_server::{PaymentPolicy, ServerConfig};

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
    /// Your webhook: where your nodes' alerts are delivered, signed.
    Webhook {
        #[command(subcommand)]
        command: cli::WebhookCommand,
    },
    /// Keep N nodes alive, probe each through its URL, replace unhealthy ones; stop all at the end.
    NetCheck(cli::NetCheckArgs),
    /// Print the REST API's OpenAPI document (the contract `docs/openapi.json` holds).
    Openapi,
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
    /// The key that encrypts node passwords in the database; every server on one database needs
    /// the same one (created, mode 0600, if missing) [default: <data dir>/secret.key].
    #[arg(long, env = "ERIGOLEM_KEY_FILE")]
    key_file: Option<PathBuf>,
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
    /// More hosts (`name` or `name:port`) that `Host`/`Origin` may name besides the public URL's,
    /// e.g. the upstream address a proxy forwards to (repeatable) [default: none].
    #[arg(
        long = "allowed-host",
        env = "ERIGOLEM_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Option<Vec<String>>,
    /// Who may sign in and create nodes: `open` (any wallet, within the per-user caps) or
    /// `allow-list` (only --allow-address) [default: open].
    #[arg(long, env = "ERIGOLEM_ADMISSION", value_enum)]
    admission: Option<AdmissionKind>,
    /// An address the allow-list admits (repeatable).
    #[arg(
        long = "allow-address",
        env = "ERIGOLEM_ALLOW_ADDRESSES",
        value_delimiter = ','
    )]
    allow_addresses: Option<Vec<String>>,
    /// A proxy (IP or CIDR) whose X-Forwarded-For / X-Forwarded-Proto are believed (repeatable)
    /// [default: none: the peer address is the client].
    #[arg(
        long = "trusted-proxy",
        env = "ERIGOLEM_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Option<Vec<String>>,
    /// Serve /metrics on this address only (not on --listen) [default: on --listen].
    #[arg(long, env = "ERIGOLEM_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Require `Authorization: Bearer <this>` for /metrics [default: none].
    #[arg(long, env = "ERIGOLEM_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Open connections at most; more are closed at once [default: 4096, less if the open-file
    /// limit is lower].
    #[arg(long, env = "ERIGOLEM_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Open connections per client address (IPv6: per /64); trusted proxies are exempt
    /// [default: 256].
    #[arg(long, env = "ERIGOLEM_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Seconds a client has to send a request's headers [default: 10].
    #[arg(long, env = "ERIGOLEM_HEADER_READ_TIMEOUT")]
    header_read_timeout: Option<u64>,
    /// Seconds a connection may neither read nor write before it is closed [default: 60].
    #[arg(long, env = "ERIGOLEM_IDLE_TIMEOUT")]
    idle_timeout: Option<u64>,
    /// Event streams (GET /api/v1/events) one user may have open [default: 16].
    #[arg(long, env = "ERIGOLEM_MAX_STREAMS_PER_USER")]
    max_streams_per_user: Option<usize>,
    /// A running node more than this many blocks behind its network is lagging [default: 40].
    #[arg(long, env = "ERIGOLEM_LAG_BLOCKS")]
    lag_blocks: Option<u64>,
    /// A running node whose head block is older than this many seconds is lagging [default: 120].
    #[arg(long, env = "ERIGOLEM_LAG_SECONDS")]
    lag_seconds: Option<u64>,
    /// Let users' webhooks reach loopback, private and link-local addresses (by default they
    /// may not: a user must not make the server POST into its own network) [default: false].
    #[arg(long, env = "ERIGOLEM_WEBHOOK_ALLOW_PRIVATE", num_args = 0..=1, default_missing_value = "true")]
    webhook_allow_private: Option<bool>,
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
    /// golem: GLM per node, shared with its replacements (the default and the most a user may
    /// ask); payments beyond it are refused [default: 5].
    #[arg(long, env = "ERIGOLEM_BUDGET", value_parser = glm)]
    budget: Option<Glm>,
    /// golem: offers asking more GLM per hour are not taken; `none` for no cap [default: 1].
    #[arg(long, env = "ERIGOLEM_MAX_PRICE_PER_HOUR", value_parser = cap)]
    max_price_per_hour: Option<Cap>,
    /// golem: offers asking a higher start fee (GLM) are not taken; `none` for no cap
    /// [default: 0.1].
    #[arg(long, env = "ERIGOLEM_MAX_START_FEE", value_parser = cap)]
    max_start_fee: Option<Cap>,
    /// golem: offers asking more GLM per request are not taken; `none` for no cap
    /// [default: 0.0001].
    #[arg(long, env = "ERIGOLEM_MAX_PRICE_PER_REQUEST", value_parser = cap)]
    max_price_per_request: Option<Cap>,
    /// golem: offers are ranked by start fee + price × this many hours (+ per-request price ×
    /// the expected requests) unless a node says how long it runs [default: 1].
    #[arg(long, env = "ERIGOLEM_EXPECTED_HOURS")]
    expected_hours: Option<u32>,
    /// golem: requests per hour assumed when ranking offers with a per-request price
    /// [default: 1000].
    #[arg(long, env = "ERIGOLEM_EXPECTED_REQUESTS_PER_HOUR")]
    expected_requests_per_hour: Option<u64>,
    /// golem: GLM a provider may ask above start fee + price × time served [default: 0.01].
    #[arg(long, env = "ERIGOLEM_PAYMENT_SLACK", value_parser = glm)]
    payment_slack: Option<Glm>,
    /// golem: most replacements of a failed node with auto-replace [default: 2].
    #[arg(long, env = "ERIGOLEM_MAX_REPLACEMENTS")]
    max_replacements: Option<u32>,
    /// golem: length of the spend caps' period in seconds, from the Unix epoch [default: 86400].
    #[arg(long, env = "ERIGOLEM_SPEND_PERIOD")]
    spend_period: Option<u64>,
    /// golem: GLM one user's nodes may be paid per period [default: no cap].
    #[arg(long, env = "ERIGOLEM_MAX_SPEND_PER_USER", value_parser = glm)]
    max_spend_per_user: Option<Glm>,
    /// golem: GLM all nodes may be paid per period [default: no cap].
    #[arg(long, env = "ERIGOLEM_MAX_SPEND", value_parser = glm)]
    max_spend: Option<Glm>,
    /// golem: only these providers, by node id (`0x` + 40 hex digits; names prove nothing)
    /// [default: any].
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
    /// golem: seconds a STATUS may take before it counts as a missed poll [default: 10].
    #[arg(long, env = "ERIGOLEM_STATUS_TIMEOUT")]
    status_timeout: Option<u64>,
}

/// A price cap: an amount of GLM, or `none`.
#[derive(Debug, Clone)]
enum Cap {
    None,
    At(Glm),
}

impl Cap {
    fn into_option(self) -> Option<Glm> {
        match self {
            Cap::None => None,
            Cap::At(g) => Some(g),
        }
    }
}

fn glm(text: &str) -> Result<Glm, String> {
    Glm::parse(text).map_err(|e| e.to_string())
}

fn cap(text: &str) -> Result<Cap, String> {
    if text == "none" {
        Ok(Cap::None)
    } else {
        glm(text).map(Cap::At)
    }
}

/// In the TOML file caps are strings too (`max-start-fee = "0.05"` or `"none"`).
impl<'de> serde::Deserialize<'de> for Cap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        cap(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum AdmissionKind {
    /// Any wallet, within the per-user caps.
    Open,
    /// Only the --allow-address addresses.
    AllowList,
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
            key_file: self.key_file.or(file.key_file),
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
            allowed_hosts: self.allowed_hosts.or(file.allowed_hosts),
            admission: self.admission.or(file.admission),
            allow_addresses: self.allow_addresses.or(file.allow_addresses),
            trusted_proxies: self.trusted_proxies.or(file.trusted_proxies),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            metrics_token: self.metrics_token.or(file.metrics_token),
            max_connections: self.max_connections.or(file.max_connections),
            max_connections_per_ip: self.max_connections_per_ip.or(file.max_connections_per_ip),
            header_read_timeout: self.header_read_timeout.or(file.header_read_timeout),
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            max_streams_per_user: self.max_streams_per_user.or(file.max_streams_per_user),
            lag_blocks: self.lag_blocks.or(file.lag_blocks),
            lag_seconds: self.lag_seconds.or(file.lag_seconds),
            webhook_allow_private: self.webhook_allow_private.or(file.webhook_allow_private),
            yagna_url: self.yagna_url.or(file.yagna_url),
            yagna_appkey: self.yagna_appkey.or(file.yagna_appkey),
            subnet: self.subnet.or(file.subnet),
            payment_platform: self.payment_platform.or(file.payment_platform),
            budget: self.budget.or(file.budget),
            max_price_per_hour: self.max_price_per_hour.or(file.max_price_per_hour),
            max_start_fee: self.max_start_fee.or(file.max_start_fee),
            max_price_per_request: self.max_price_per_request.or(file.max_price_per_request),
            expected_hours: self.expected_hours.or(file.expected_hours),
            expected_requests_per_hour: self
                .expected_requests_per_hour
                .or(file.expected_requests_per_hour),
            payment_slack: self.payment_slack.or(file.payment_slack),
            max_replacements: self.max_replacements.or(file.max_replacements),
            spend_period: self.spend_period.or(file.spend_period),
            max_spend_per_user: self.max_spend_per_user.or(file.max_spend_per_user),
            max_spend: self.max_spend.or(file.max_spend),
            status_timeout: self.status_timeout.or(file.status_timeout),
            allow_providers: self.allow_providers.or(file.allow_providers),
            deny_providers: self.deny_providers.or(file.deny_providers),
            deal_timeout: self.deal_timeout.or(file.deal_timeout),
        }
    }
}

/// What nodes may cost: the defaults, with the flags given.
fn payment_policy(args: &ServeArgs) -> anyhow::Result<PaymentPolicy> {
    let mut p = PaymentPolicy::default();
    if let Some(budget) = &args.budget {
        anyhow::ensure!(!budget.is_zero(), "--budget must be more than 0 GLM");
        p.budget = budget.clone();
    }
    if let Some(c) = &args.max_price_per_hour {
        p.caps.max_price_per_hour = c.clone().into_option();
    }
    if let Some(c) = &args.max_start_fee {
        p.caps.max_start_fee = c.clone().into_option();
    }
    if let Some(c) = &args.max_price_per_request {
        p.caps.max_price_per_request = c.clone().into_option();
    }
    if let Some(h) = args.expected_hours {
        anyhow::ensure!(h > 0, "--expected-hours must be at least 1");
        p.expected.hours = h;
    }
    if let Some(r) = args.expected_requests_per_hour {
        p.expected.requests_per_hour = r;
    }
    if let Some(s) = &args.payment_slack {
        p.slack = s.clone();
    }
    if let Some(n) = args.max_replacements {
        p.max_replacements = n;
    }
    if let Some(secs) = args.spend_period {
        anyhow::ensure!(secs > 0, "--spend-period must be at least 1 second");
        p.spend_period = std::time::Duration::from_secs(secs);
    }
    p.max_spend_per_user = args.max_spend_per_user.clone();
    p.max_spend = args.max_spend.clone();
    Ok(p)
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
        // Colours only for a terminal: a log file (or a journal) gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(*args).await,
        Command::Login(args) => cli::login(args).await,
        Command::Nodes { command } => cli::nodes(command).await,
        Command::Webhook { command } => cli::webhook(command).await,
        Command::NetCheck(args) => cli::net_check(args).await,
        Command::Openapi => {
            print!("{}", erigolem_server::openapi_json());
            Ok(())
        }
    }
}

/// The admission policy from `--admission` and `--allow-address`.
fn admission(
    kind: Option<AdmissionKind>,
    addresses: Option<Vec<String>>,
) -> anyhow::Result<erigolem_server::Admission> {
    let addresses = addresses.unwrap_or_default();
    for a in &addresses {
        let hex = a.strip_prefix("0x").unwrap_or_default();
        anyhow::ensure!(
            hex.len() == 40 && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "--allow-address {a:?}: not an Ethereum address (0x and 40 hex digits)"
        );
    }
    match kind.unwrap_or(AdmissionKind::Open) {
        AdmissionKind::Open if addresses.is_empty() => Ok(erigolem_server::Admission::Open),
        AdmissionKind::Open => {
            anyhow::bail!("--allow-address needs --admission allow-list (the default is open)")
        }
        AdmissionKind::AllowList if addresses.is_empty() => {
            anyhow::bail!("--admission allow-list needs at least one --allow-address")
        }
        AdmissionKind::AllowList => Ok(erigolem_server::Admission::AllowList(
            addresses.iter().map(|a| a.to_ascii_lowercase()).collect(),
        )),
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
    let payments = payment_policy(&args)?;
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
            golem.allow_providers = args.allow_providers.clone().unwrap_or_default();
            golem.deny_providers = args.deny_providers.clone().unwrap_or_default();
            if let Some(secs) = args.deal_timeout {
                golem.deal_timeout = std::time::Duration::from_secs(secs.max(1));
            }
            if let Some(secs) = args.status_timeout {
                golem.status_timeout = std::time::Duration::from_secs(secs.max(1));
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
    let admission = admission(args.admission, args.allow_addresses)?;
    let trusted_proxies = args
        .trusted_proxies
        .unwrap_or_default()
        .iter()
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .with_context(|| format!("--trusted-proxy {p:?}: not an IP address or CIDR"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let secs = std::time::Duration::from_secs;
    let limits = erigolem_server::Limits {
        max_connections: args
            .max_connections
            .unwrap_or(defaults.limits.max_connections),
        max_connections_per_ip: args
            .max_connections_per_ip
            .unwrap_or(defaults.limits.max_connections_per_ip),
        header_read_timeout: args
            .header_read_timeout
            .map(secs)
            .unwrap_or(defaults.limits.header_read_timeout),
        idle_timeout: args
            .idle_timeout
            .map(secs)
            .unwrap_or(defaults.limits.idle_timeout),
        max_streams_per_user: args
            .max_streams_per_user
            .unwrap_or(defaults.limits.max_streams_per_user),
        ..defaults.limits.clone()
    };
    anyhow::ensure!(
        limits.max_connections > 0 && limits.max_connections_per_ip > 0,
        "--max-connections and --max-connections-per-ip must be positive"
    );
    anyhow::ensure!(
        !limits.header_read_timeout.is_zero() && !limits.idle_timeout.is_zero(),
        "--header-read-timeout and --idle-timeout must be positive"
    );
    let config = ServerConfig {
        listen: args.listen.unwrap_or(defaults.listen),
        database_url: args.database_url,
        key_file: args.key_file,
        public_url: args.public_url,
        chain_ids: args.chain_ids.unwrap_or_default(),
        backend: Some(backend),
        max_active_nodes: args.max_nodes_per_user.unwrap_or(defaults.max_active_nodes),
        rate_limit: args.rate_limit.unwrap_or(defaults.rate_limit),
        payments,
        allowed_hosts: args.allowed_hosts.unwrap_or_default(),
        admission,
        trusted_proxies,
        metrics: erigolem_server::MetricsConfig {
            listen: args.metrics_listen,
            token: args.metrics_token.filter(|t| !t.is_empty()),
        },
        limits,
        lag_blocks: args.lag_blocks.unwrap_or(defaults.lag_blocks),
        lag_seconds: args.lag_seconds.unwrap_or(defaults.lag_seconds),
        webhooks: erigolem_server::WebhookConfig {
            allow_private: args.webhook_allow_private.unwrap_or(false),
            ..defaults.webhooks.clone()
        },
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
