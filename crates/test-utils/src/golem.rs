//! A real, self-contained Golem network on loopback, for tests and local runs: a payment chain
//! (anvil as `hoodi`, chain id 560048, with the TestGLM token), the central-net router
//! `ya-sb-router`, and N `yagna` daemons (requestors and providers) with fixed identities.
//!
//! ```no_run
//! # async fn demo() -> Result<(), erigolem_test_utils::golem::GolemNetError> {
//! use erigolem_test_utils::golem::{GolemNet, GolemNetConfig};
//! let net = GolemNet::spawn(GolemNetConfig::test()).await?; // 1 requestor + 1 provider
//! let requestor = net.requestor(0);
//! let me = requestor.get("/me").await?;
//! assert_eq!(me["identity"], requestor.node_id.as_str());
//! assert!(net.chain().token_balance(&requestor.node_id).await? > 0);
//! drop(net); // every process ended by PID
//! # Ok(()) }
//! ```
//!
//! Every daemon is started through `env-offline.sh` (a copy of `shared/golem-local/env-offline.sh`,
//! kept byte-identical in `crates/test-utils/golem/`), and only inside a network namespace that has
//! nothing but loopback: [`GolemNet::spawn`] refuses to start anywhere else. See docs/golem-local.md.

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{free_port_block, repo_root, rpc, Anvil, AnvilOptions, ChildGuard};

/// The chain id yagna calls `hoodi`: the local chain poses as it.
pub const HOODI_CHAIN_ID: u64 = 560_048;
/// The payment platform of the local chain, to name in offers and demands.
pub const PAYMENT_PLATFORM: &str = "erc20-hoodi-tglm";
/// 1 tGLM in wei.
pub const GLM: u128 = 1_000_000_000_000_000_000;

/// anvil's public dev keys (mnemonic `test test … junk`), without `0x`. #0 deploys the token;
/// node `k` (requestors first, then providers) is identity #`k + 1`.
const DEV_KEYS: [&str; 10] = [
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "dbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];
/// How many yagna nodes one net can hold (dev accounts #1..#9).
pub const MAX_NODES: usize = DEV_KEYS.len() - 1;

/// `mint(address,uint256)` and `balanceOf(address)` selectors.
const MINT: &str = "40c10f19";
const BALANCE_OF: &str = "70a08231";

/// Errors of the harness. Missing tools name `scripts/setup.sh`. `Debug` shows the message, so
/// that a test's `.unwrap()` says what to do.
#[derive(thiserror::Error)]
pub enum GolemNetError {
    #[error("{what} is missing at {}: run scripts/setup.sh (it installs {what} into .tools/)", path.display())]
    MissingTool { what: &'static str, path: PathBuf },
    #[error(
        "refusing to start yagna with network interfaces besides loopback ({0}): run inside an \
         offline network namespace, e.g. `unshare -n sh -c 'ip link set lo up; …'` as scripts/test.sh does"
    )]
    NotOffline(String),
    #[error(
        "a net holds at most {max} yagna nodes (anvil dev accounts #1..#{max}); asked for {asked}"
    )]
    TooManyNodes { asked: usize, max: usize },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} exited during start-up ({status}); its log ends with:\n{log}")]
    Exited {
        what: String,
        status: String,
        log: String,
    },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("payment chain: {0}")]
    Chain(String),
    #[error("{method} {url}: {detail}")]
    Http {
        method: &'static str,
        url: String,
        detail: String,
    },
    #[error("{name}: yagna runs as {got}, expected dev account {expected}")]
    IdentityMismatch {
        name: String,
        got: String,
        expected: String,
    },
}

impl fmt::Debug for GolemNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

type Result<T, E = GolemNetError> = std::result::Result<T, E>;

/// What to start.
#[derive(Debug, Clone)]
pub struct GolemNetConfig {
    pub requestors: usize,
    pub providers: usize,
    /// tGLM (in wei) minted to each requestor before its daemon starts.
    pub requestor_tglm: u128,
    /// Where the data dirs and logs go (None: a fresh temporary dir, removed on drop). Keep the
    /// path short: each node's GSB unix socket lives under it.
    pub dir: Option<PathBuf>,
    /// Deadline for each part to come up.
    pub start_timeout: Duration,
    /// The yagna binary (None: [`yagna_bin`]).
    pub yagna: Option<PathBuf>,
    /// Extra environment for every daemon, set after the harness's own (env-offline.sh is
    /// still sourced last), e.g. `YAGNA_DEV_SKIP_ALLOCATION_VALIDATION=1`.
    pub yagna_env: Vec<(String, String)>,
}

impl GolemNetConfig {
    /// One requestor and one provider, 1000 tGLM for the requestor.
    pub fn test() -> Self {
        Self {
            requestors: 1,
            providers: 1,
            requestor_tglm: 1000 * GLM,
            dir: None,
            start_timeout: Duration::from_secs(30),
            yagna: None,
            yagna_env: Vec::new(),
        }
    }

    pub fn with_nodes(mut self, requestors: usize, providers: usize) -> Self {
        self.requestors = requestors;
        self.providers = providers;
        self
    }
}

impl Default for GolemNetConfig {
    fn default() -> Self {
        Self::test()
    }
}

/// A node's label: which side of the market it plays. Both run the same plain `yagna`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Requestor,
    Provider,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Requestor => "requestor",
            Role::Provider => "provider",
        })
    }
}

/// `yagna` from scripts/setup.sh (`.tools/bin/yagna`, from PyPI `golem-node`), or `$ERIGOLEM_YAGNA`.
pub fn yagna_bin() -> Result<PathBuf> {
    tool("yagna", "ERIGOLEM_YAGNA", ".tools/bin/yagna")
}

/// `ya-sb-router` from scripts/setup.sh (`.tools/bin/ya-sb-router`), or `$ERIGOLEM_SB_ROUTER`.
pub fn router_bin() -> Result<PathBuf> {
    tool(
        "ya-sb-router",
        "ERIGOLEM_SB_ROUTER",
        ".tools/bin/ya-sb-router",
    )
}

/// The files of this harness: TestGLM.{sol,bin,abi} and env-offline.sh.
pub fn assets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golem")
}

/// The environment every yagna is started with (sourced, never skipped).
pub fn env_offline_sh() -> PathBuf {
    assets_dir().join("env-offline.sh")
}

fn tool(what: &'static str, var: &str, default: &str) -> Result<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(default));
    if path.is_file() {
        Ok(path)
    } else {
        Err(GolemNetError::MissingTool { what, path })
    }
}

/// Fails unless this process sees no network interface but `lo` (`/proc/net/dev` is per
/// network namespace): yagna must never be able to reach beyond the machine.
pub fn ensure_offline() -> Result<()> {
    let path = PathBuf::from("/proc/net/dev");
    let dev = std::fs::read_to_string(&path).map_err(|source| GolemNetError::Io {
        path: path.clone(),
        source,
    })?;
    let others: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .filter(|name| !name.is_empty() && *name != "lo")
        .collect();
    if others.is_empty() {
        Ok(())
    } else {
        Err(GolemNetError::NotOffline(others.join(", ")))
    }
}

/// The payment chain: anvil posing as `hoodi`, with TestGLM deployed.
#[derive(Debug)]
pub struct PaymentChain {
    pub anvil: Anvil,
    /// TestGLM's address (lowercase `0x…`).
    pub token: String,
    /// anvil's dev accounts, lowercase; #0 deployed the token.
    pub accounts: Vec<String>,
}

impl PaymentChain {
    /// Starts anvil with chain id 560048 and deploys TestGLM from dev account #0.
    pub async fn start() -> Result<Self> {
        let anvil = Anvil::start_with(AnvilOptions {
            chain_id: Some(HOODI_CHAIN_ID),
            ..AnvilOptions::default()
        })
        .await;
        let url = anvil.url();
        let accounts: Vec<String> = call(&url, "eth_accounts", json!([]))
            .await?
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_lowercase))
                    .collect()
            })
            .unwrap_or_default();
        if accounts.len() < DEV_KEYS.len() {
            return Err(GolemNetError::Chain(format!(
                "anvil has {} dev accounts, expected {}",
                accounts.len(),
                DEV_KEYS.len()
            )));
        }
        let bin_path = assets_dir().join("TestGLM.bin");
        let bin = std::fs::read_to_string(&bin_path).map_err(|source| GolemNetError::Io {
            path: bin_path,
            source,
        })?;
        // anvil unlocks its dev accounts: a raw eth_sendTransaction deploys, mined at once.
        let receipt = transact(
            &url,
            json!({"from": accounts[0], "data": format!("0x{}", bin.trim())}),
        )
        .await?;
        let token = receipt["contractAddress"]
            .as_str()
            .ok_or_else(|| {
                GolemNetError::Chain(format!("deploy receipt without address: {receipt}"))
            })?
            .to_lowercase();
        Ok(Self {
            anvil,
            token,
            accounts,
        })
    }

    pub fn rpc_url(&self) -> String {
        self.anvil.url()
    }

    pub fn token_address(&self) -> &str {
        &self.token
    }

    pub fn pid(&self) -> u32 {
        self.anvil.pid()
    }

    /// Mints `amount` tGLM wei to `to` (TestGLM's `mint` is open to anyone).
    pub async fn mint(&self, to: &str, amount: u128) -> Result<()> {
        let data = format!("0x{MINT}{}{amount:064x}", address_word(to)?);
        transact(
            &self.rpc_url(),
            json!({"from": self.accounts[0], "to": self.token, "data": data}),
        )
        .await
        .map(drop)
    }

    /// TestGLM `balanceOf(owner)` in wei.
    pub async fn token_balance(&self, owner: &str) -> Result<u128> {
        let data = format!("0x{BALANCE_OF}{}", address_word(owner)?);
        let out = call(
            &self.rpc_url(),
            "eth_call",
            json!([{"to": self.token, "data": data}, "latest"]),
        )
        .await?;
        let hex = out.as_str().unwrap_or_default().trim_start_matches("0x");
        let digits = hex.trim_start_matches('0');
        if digits.is_empty() {
            return Ok(0);
        }
        u128::from_str_radix(digits, 16)
            .map_err(|e| GolemNetError::Chain(format!("balanceOf answered {out}: {e}")))
    }

    /// Native balance (ETH wei) of `owner`.
    pub async fn eth_balance(&self, owner: &str) -> Result<u128> {
        let out = call(&self.rpc_url(), "eth_getBalance", json!([owner, "latest"])).await?;
        u128::from_str_radix(
            out.as_str().unwrap_or_default().trim_start_matches("0x"),
            16,
        )
        .map_err(|e| GolemNetError::Chain(format!("eth_getBalance answered {out}: {e}")))
    }
}

fn address_word(addr: &str) -> Result<String> {
    let hex = addr.trim_start_matches("0x");
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GolemNetError::Chain(format!("not an address: {addr}")));
    }
    Ok(format!("{:0>64}", hex.to_lowercase()))
}

async fn call(url: &str, method: &str, params: Value) -> Result<Value> {
    rpc(url, None, method, params)
        .await
        .map_err(|e| GolemNetError::Chain(format!("{method}: {e:?}")))
}

/// Sends a transaction from an unlocked dev account and returns its successful receipt.
async fn transact(url: &str, tx: Value) -> Result<Value> {
    let hash = call(url, "eth_sendTransaction", json!([tx])).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let receipt = call(url, "eth_getTransactionReceipt", json!([hash])).await?;
        if !receipt.is_null() {
            if receipt["status"] != "0x1" {
                return Err(GolemNetError::Chain(format!(
                    "transaction failed: {receipt}"
                )));
            }
            return Ok(receipt);
        }
        if Instant::now() > deadline {
            return Err(GolemNetError::Chain(format!("no receipt for {hash}")));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The central-net router (`ya-sb-router`) that carries all node-to-node GSB traffic.
///
/// It runs as the binary installed by scripts/setup.sh rather than in-process
/// (`ya_sb_router::bind_gsb_router`): that keeps ya-sb-router's actix/protobuf tree out of this
/// crate's build, and a separate process is ended by PID like every other part of the net.
#[derive(Debug)]
pub struct Router {
    pub port: u16,
    child: ChildGuard,
}

impl Router {
    /// Starts the router on a free port below 10000: yagna 0.17.6 parses `CENTRAL_NET_HOST`
    /// with `^(([0-9a-z]{56})@)?([^:]*)(:[0-9]{1,4})?$`, so a 5-digit port makes every daemon
    /// fail with "host not found" and never answer its REST API.
    pub async fn start(dir: &Path, timeout: Duration) -> Result<Self> {
        let bin = router_bin()?;
        let log_path = dir.join("router.log");
        let mut last = String::new();
        for _ in 0..20 {
            let port = free_port_below_10000();
            let log = create(&log_path)?;
            let log2 = log.try_clone().map_err(|source| GolemNetError::Io {
                path: log_path.clone(),
                source,
            })?;
            let mut child = ChildGuard::try_spawn(
                Command::new(&bin)
                    .arg("-l")
                    .arg(format!("tcp://127.0.0.1:{port}"))
                    .env_remove("GSB_URL")
                    .stdout(log)
                    .stderr(log2),
            )
            .map_err(|source| GolemNetError::Spawn {
                what: "ya-sb-router".into(),
                source,
            })?;
            let deadline = Instant::now() + timeout;
            loop {
                if let Some(status) = child.try_exit_code() {
                    // Most likely someone took the port in between: try another one.
                    last = format!("{status}: {}", tail(&log_path, 5));
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && child.try_exit_code().is_none()
                {
                    return Ok(Self { port, child });
                }
                if Instant::now() > deadline {
                    return Err(GolemNetError::Timeout {
                        what: format!("ya-sb-router to listen on {port}"),
                        after: timeout,
                    });
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Err(GolemNetError::Exited {
            what: "ya-sb-router".into(),
            status: "no port worked".into(),
            log: last,
        })
    }

    /// `host:port`, the value of `CENTRAL_NET_HOST`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// A port in 4000–9999 that is free right now (see [`Router::start`] for why below 10000).
fn free_port_below_10000() -> u16 {
    for _ in 0..1000 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let port = 4000 + ((nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % 6000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    7464
}

/// One `yagna` daemon.
#[derive(Debug)]
pub struct YagnaNode {
    pub role: Role,
    /// `requestor0`, `provider0`, …
    pub name: String,
    /// `http://127.0.0.1:<port>` (`YAGNA_API_URL`).
    pub api_url: String,
    /// The app key for `Authorization: Bearer …` (`YAGNA_AUTOCONF_APPKEY`).
    pub app_key: String,
    /// The node's identity, a lowercase `0x…` address (anvil dev account #`k + 1`).
    pub node_id: String,
    /// The private key of that identity, hex without `0x` (public anvil dev key).
    pub secret: String,
    pub datadir: PathBuf,
    /// `unix:<datadir>/gsb.sock`: where an exe-unit connects to this node's bus.
    pub gsb_url: String,
    child: ChildGuard,
}

impl YagnaNode {
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The daemon's own log (it also writes `yagna_rCURRENT.log` in its data dir).
    pub fn log_path(&self) -> PathBuf {
        self.datadir.join("yagna.log")
    }

    /// `GET {api_url}{path}` with the app key; the JSON answer (Null when empty).
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.request(reqwest::Method::GET, "GET", path, None).await
    }

    /// `POST {api_url}{path}` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.request(reqwest::Method::POST, "POST", path, Some(body))
            .await
    }

    /// `DELETE {api_url}{path}`.
    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.request(reqwest::Method::DELETE, "DELETE", path, None)
            .await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        name: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.api_url);
        let err = |detail: String| GolemNetError::Http {
            method: name,
            url: url.clone(),
            detail,
        };
        let mut req = http_client()
            .request(method, &url)
            .bearer_auth(&self.app_key);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| err(e.to_string()))?;
        if !status.is_success() {
            return Err(err(format!("{status}: {text}")));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| err(format!("{e}: {text}")))
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// The whole local Golem network. Dropping it ends every process it started, by PID.
#[derive(Debug)]
pub struct GolemNet {
    // Field order is drop order: daemons first, then the router and the chain they use.
    nodes: Vec<YagnaNode>,
    router: Router,
    chain: PaymentChain,
    dir: PathBuf,
    bring_up: Duration,
    /// What each node was started with, to start it again ([`GolemNet::restart`]).
    restart: Restart,
    _tmp: Option<tempfile::TempDir>,
}

#[derive(Debug)]
struct Restart {
    yagna: PathBuf,
    env_sh: PathBuf,
    env: Vec<(String, String)>,
    specs: Vec<(NodeSpec, String)>,
    timeout: Duration,
}

impl GolemNet {
    /// Starts the chain (deploys TestGLM, mints to the requestors), the router and the daemons,
    /// and returns when every daemon answers `GET /me`.
    pub async fn spawn(config: GolemNetConfig) -> Result<Self> {
        let started = Instant::now();
        let total = config.requestors + config.providers;
        if total > MAX_NODES {
            return Err(GolemNetError::TooManyNodes {
                asked: total,
                max: MAX_NODES,
            });
        }
        // Everything that can be missing is checked before anything starts.
        tool("anvil", "ERIGOLEM_ANVIL", ".tools/bin/anvil")?;
        let yagna = match &config.yagna {
            Some(path) if path.is_file() => path.clone(),
            Some(path) => {
                return Err(GolemNetError::MissingTool {
                    what: "yagna",
                    path: path.clone(),
                })
            }
            None => yagna_bin()?,
        };
        router_bin()?;
        let env_sh = env_offline_sh();
        if !env_sh.is_file() {
            return Err(GolemNetError::MissingTool {
                what: "env-offline.sh",
                path: env_sh,
            });
        }
        ensure_offline()?;

        let (tmp, dir) = match &config.dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|source| GolemNetError::Io {
                    path: d.clone(),
                    source,
                })?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("golem")
                    .tempdir()
                    .map_err(|source| GolemNetError::Io {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };

        let (chain, router) = tokio::join!(
            PaymentChain::start(),
            Router::start(&dir, config.start_timeout)
        );
        let (chain, router) = (chain?, router?);

        let roles = std::iter::repeat_n(Role::Requestor, config.requestors)
            .chain(std::iter::repeat_n(Role::Provider, config.providers));
        let api_base = free_port_block(total.max(1) as u16);
        let mut pending = Vec::new();
        let mut specs = Vec::new();
        let (mut r, mut p) = (0, 0);
        for (k, role) in roles.enumerate() {
            let index = match role {
                Role::Requestor => {
                    r += 1;
                    r - 1
                }
                Role::Provider => {
                    p += 1;
                    p - 1
                }
            };
            let expected = chain.accounts[k + 1].clone();
            if role == Role::Requestor && config.requestor_tglm > 0 {
                chain.mint(&expected, config.requestor_tglm).await?;
            }
            let spec = NodeSpec {
                role,
                name: format!("{role}{index}"),
                secret: DEV_KEYS[k + 1].to_owned(),
                api_port: api_base + k as u16,
                datadir: dir.join(format!("{role}{index}")),
            };
            let node = spawn_yagna(&yagna, &env_sh, &spec, &chain, &router, &config.yagna_env)?;
            pending.push((node, expected.clone()));
            specs.push((spec, expected));
        }
        let mut nodes = Vec::with_capacity(pending.len());
        for (node, expected) in pending {
            // Waiting one by one costs nothing: all daemons are already starting side by side.
            nodes.push(wait_ready(node, &expected, config.start_timeout).await?);
        }
        Ok(Self {
            nodes,
            router,
            chain,
            dir,
            bring_up: started.elapsed(),
            restart: Restart {
                yagna,
                env_sh,
                env: config.yagna_env.clone(),
                specs,
                timeout: config.start_timeout,
            },
            _tmp: tmp,
        })
    }

    /// Stops node `index` (of [`GolemNet::nodes`]) and starts it again with the same data dir, port,
    /// identity and app key; returns when it answers `GET /me` again.
    pub async fn restart(&mut self, index: usize) -> Result<()> {
        let (spec, expected) = self
            .restart
            .specs
            .get(index)
            .ok_or_else(|| GolemNetError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other(format!("no node {index}")),
            })?;
        // Dropping the old node ends its daemon (TERM, then KILL) and frees its port and socket.
        drop(self.nodes.remove(index));
        let node = spawn_yagna(
            &self.restart.yagna,
            &self.restart.env_sh,
            spec,
            &self.chain,
            &self.router,
            &self.restart.env,
        )?;
        let node = wait_ready(node, expected, self.restart.timeout).await?;
        self.nodes.insert(index, node);
        Ok(())
    }

    /// How long [`GolemNet::spawn`] took.
    pub fn bring_up(&self) -> Duration {
        self.bring_up
    }

    pub fn chain(&self) -> &PaymentChain {
        &self.chain
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn nodes(&self) -> &[YagnaNode] {
        &self.nodes
    }

    /// Where data dirs and logs are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn requestors(&self) -> impl Iterator<Item = &YagnaNode> {
        self.nodes.iter().filter(|n| n.role == Role::Requestor)
    }

    pub fn providers(&self) -> impl Iterator<Item = &YagnaNode> {
        self.nodes.iter().filter(|n| n.role == Role::Provider)
    }

    /// The `i`-th requestor; panics when there is none (a test set-up error).
    pub fn requestor(&self, i: usize) -> &YagnaNode {
        self.requestors()
            .nth(i)
            .unwrap_or_else(|| panic!("no requestor #{i} in this net"))
    }

    /// The `i`-th provider; panics when there is none (a test set-up error).
    pub fn provider(&self, i: usize) -> &YagnaNode {
        self.providers()
            .nth(i)
            .unwrap_or_else(|| panic!("no provider #{i} in this net"))
    }

    /// Every process of the net: daemons, router, anvil.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .map(YagnaNode::pid)
            .chain([self.router.pid(), self.chain.pid()])
            .collect()
    }

    /// `KEY=value` lines describing the net (for scripts: `eval`/`source` them).
    pub fn env_lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!("GOLEM_CHAIN_RPC={}", self.chain.rpc_url()),
            format!("GOLEM_CHAIN_ID={HOODI_CHAIN_ID}"),
            format!("GOLEM_TGLM={}", self.chain.token),
            format!("GOLEM_PAYMENT_PLATFORM={PAYMENT_PLATFORM}"),
            format!("GOLEM_CHAIN_PID={}", self.chain.pid()),
            format!("GOLEM_ROUTER={}", self.router.addr()),
            format!("GOLEM_ROUTER_PID={}", self.router.pid()),
            format!("GOLEM_DIR={}", self.dir.display()),
        ];
        for n in &self.nodes {
            let p = n.name.to_uppercase();
            lines.extend([
                format!("{p}_API_URL={}", n.api_url),
                format!("{p}_APPKEY={}", n.app_key),
                format!("{p}_NODE_ID={}", n.node_id),
                format!("{p}_DATADIR={}", n.datadir.display()),
                format!("{p}_GSB_URL={}", n.gsb_url),
                format!("{p}_PID={}", n.pid()),
            ]);
        }
        lines
    }
}

impl Drop for GolemNet {
    fn drop(&mut self) {
        // TERM everyone first so they stop side by side; each guard then waits (and KILLs).
        for n in &self.nodes {
            n.child.terminate();
        }
        self.router.child.terminate();
        self.chain.anvil.child.terminate();
    }
}

#[derive(Debug)]
struct NodeSpec {
    role: Role,
    name: String,
    secret: String,
    api_port: u16,
    datadir: PathBuf,
}

/// Starts one daemon: `bash -c 'source env-offline.sh && exec yagna service run …'` in a clean
/// environment, so nothing from the caller's shell (proxies, other YAGNA_* settings) leaks in.
fn spawn_yagna(
    yagna: &Path,
    env_sh: &Path,
    spec: &NodeSpec,
    chain: &PaymentChain,
    router: &Router,
    extra_env: &[(String, String)],
) -> Result<YagnaNode> {
    let datadir = &spec.datadir;
    std::fs::create_dir_all(datadir).map_err(|source| GolemNetError::Io {
        path: datadir.clone(),
        source,
    })?;
    let sock = datadir.join("gsb.sock");
    if sock.as_os_str().len() > 100 {
        return Err(GolemNetError::Io {
            path: sock,
            source: std::io::Error::other("too long for a unix socket: use a shorter dir"),
        });
    }
    let payments = datadir.join("config-payments.toml");
    std::fs::write(&payments, payments_config(&chain.token, &chain.rpc_url())).map_err(
        |source| GolemNetError::Io {
            path: payments.clone(),
            source,
        },
    )?;
    let api_url = format!("http://127.0.0.1:{}", spec.api_port);
    let gsb_url = format!("unix:{}", sock.display());
    let app_key = format!("erigolem-{}-key", spec.name);
    let log_path = datadir.join("yagna.log");
    let log = create(&log_path)?;
    let log2 = log.try_clone().map_err(|source| GolemNetError::Io {
        path: log_path.clone(),
        source,
    })?;
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"source "$1" && exec "$2" service run --disable-metrics-push"#)
        .arg(format!("yagna-{}", spec.name))
        .arg(env_sh)
        .arg(yagna)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", datadir)
        .env("RUST_LOG", "info")
        .env("YAGNA_DATADIR", datadir)
        .env("GSB_URL", &gsb_url)
        .env("YAGNA_API_URL", &api_url)
        .env("YAGNA_AUTOCONF_APPKEY", &app_key)
        .env("YAGNA_AUTOCONF_ID_SECRET", &spec.secret)
        .env("CENTRAL_NET_HOST", router.addr())
        .env("ERC20_RPC", chain.rpc_url())
        .env("HOODI_TGLM_CONTRACT_ADDRESS", &chain.token)
        .env("ERC20_SENDOUT_INTERVAL_SECS", "1")
        .env("PAYMENT_CYCLE_DEFAULT_INTERVAL", "5s")
        .env("PAYMENT_CYCLE_DEFAULT_EXTRA_PAY_TIME", "1h")
        // The market broadcasts a new offer after OFFER_BROADCAST_DELAY (5 s by default in 0.17.6):
        // 100 ms makes an offer reach the requestors in ~0.1 s.
        .env("OFFER_BROADCAST_DELAY", "100ms")
        .env("UNSUB_BROADCAST_DELAY", "100ms")
        // A demand published after an offer's broadcast only learns of it from the next cyclic
        // broadcast (4 min by default): with two requestors in turn, the second saw no offer.
        .env("MEAN_CYCLIC_BCAST_INTERVAL", "1s")
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .current_dir(datadir)
        .stdout(Stdio::null())
        .stderr(log2);
    drop(log);
    let child = ChildGuard::try_spawn(&mut cmd).map_err(|source| GolemNetError::Spawn {
        what: format!("yagna ({})", spec.name),
        source,
    })?;
    Ok(YagnaNode {
        role: spec.role,
        name: spec.name.clone(),
        api_url,
        app_key,
        node_id: String::new(),
        secret: spec.secret.clone(),
        datadir: datadir.clone(),
        gsb_url,
        child,
    })
}

/// Polls `GET /me` until it answers with the expected identity, or the daemon dies, or the deadline.
async fn wait_ready(mut node: YagnaNode, expected: &str, timeout: Duration) -> Result<YagnaNode> {
    let deadline = Instant::now() + timeout;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    loop {
        if let Some(status) = node.child.try_exit_code() {
            return Err(GolemNetError::Exited {
                what: format!("yagna ({})", node.name),
                status: status.to_string(),
                log: tail(&node.log_path(), 20),
            });
        }
        let me = client
            .get(format!("{}/me", node.api_url))
            .bearer_auth(&node.app_key)
            .send()
            .await;
        if let Ok(resp) = me {
            if resp.status().is_success() {
                if let Ok(me) = resp.json::<Value>().await {
                    let got = me["identity"].as_str().unwrap_or_default().to_lowercase();
                    if got != expected {
                        return Err(GolemNetError::IdentityMismatch {
                            name: node.name,
                            got,
                            expected: expected.to_owned(),
                        });
                    }
                    node.node_id = got;
                    return Ok(node);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(GolemNetError::Timeout {
                what: format!(
                    "yagna ({}) to answer GET /me; its log ends with:\n{}",
                    node.name,
                    tail(&node.log_path(), 20)
                ),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `config-payments.toml`: replaces yagna's embedded erc20 config (which its binary holds; see
/// `strings -n 8 yagna | grep -n process-interval`). Only `hoodi`, pointed at the local anvil and
/// TestGLM, without the multi/wrapper/mint/lock/distributor/faucet contracts of the real network,
/// and with 1 s engine intervals: per the golem-local notes an accepted invoice then settles in
/// about 2 s instead of minutes.
pub fn payments_config(token: &str, rpc_url: &str) -> String {
    format!(
        r#"# Written by erigolem-test-utils (golem.rs) for a local test network.
[engine]
process-interval = 1
process-interval-after-send = 1
process-interval-after-error = 1
process-interval-after-no-gas-or-token-start = 1
process-interval-after-no-gas-or-token-max = 5
process-interval-after-no-gas-or-token-increase = 1.5
report-alive-interval = 1
gather-interval = 1
gather-at-start = true
automatic-recover = false
ignore-deadlines = false

[chain.hoodi]
chain-name = "Hoodi"
chain-id = {HOODI_CHAIN_ID}
currency-symbol = "tETH"
priority-fee = 0.000001
max-fee-per-gas = 20.0
transaction-timeout = 100
token = {{ address = "{token}", symbol = "tGLM" }}
confirmation-blocks = 0
external-source-check-interval = 300

[[chain.hoodi.rpc-endpoints]]
names = "local-anvil"
endpoints = "{rpc_url}"
priority = 0
max-timeout-ms = 5000
verify-interval-secs = 300
# anvil mines on demand: its head may be old while nothing happens.
allowed-head-behind-secs = 1000000000
"#
    )
}

fn create(path: &Path) -> Result<std::fs::File> {
    std::fs::File::create(path).map_err(|source| GolemNetError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The last `n` lines of a log file (for error messages).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts `erigolem-provider run` (built in this workspace) for provider `node`, selling what the
/// runtime config of `machine` serves; its log goes to `<data_dir>.log`. Ended by PID on drop.
pub fn start_provider_agent(
    node: &YagnaNode,
    machine: &crate::Provider,
    data_dir: &Path,
    subnet: &str,
    args: &[&str],
) -> ChildGuard {
    let log = std::fs::File::create(data_dir.with_extension("log"))
        .unwrap_or_else(|e| panic!("{}: {e}", data_dir.with_extension("log").display()));
    let mut cmd = Command::new(crate::workspace_bin("erigolem-provider"));
    cmd.arg("run")
        .args([
            "--yagna-url",
            &node.api_url,
            "--gsb-url",
            &node.gsb_url,
            "--subnet",
            subnet,
        ])
        .arg("--runtime")
        .arg(crate::workspace_bin("ya-runtime-erigon"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("YAGNA_APPKEY", &node.app_key)
        .env("XDG_DATA_HOME", machine.root.join("xdg"))
        .env("RUST_LOG", "info,erigolem_exe_unit=debug")
        .stdout(Stdio::null())
        .stderr(log);
    ChildGuard::spawn(&mut cmd)
}
