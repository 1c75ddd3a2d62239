//! Harnesses that start real components for tests and benchmarks — Nginx, anvil, fake-erigon — on
//! free ports, wait for them with deadlines, and end them by PID when dropped.
#![allow(clippy::unwrap_used)] // test support: a failed setup should stop the test loudly

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use erigolem_gateway::{site, GatewayConfig};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

pub mod bench;
pub mod golem;
pub mod postgres;
pub mod provider;
pub mod replicas;
pub mod serve;
pub mod wallet;
pub use provider::Provider;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// A binary built by this workspace (`cargo build --workspace --bins` must have run).
pub fn workspace_bin(name: &str) -> PathBuf {
    // Test binaries and examples live in target/<profile>/{deps,examples}; binaries one level up.
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir = dir.parent().unwrap();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// An `erigon` binary of release `version` as an operator installs it: a script in `dir` running
/// fake-erigon modelling that release (with `env` for its behaviour, e.g. lag or crashes). Its
/// `rpcdaemon` sibling is returned too (the Erigon 2 split layout).
pub fn fake_erigon(dir: &Path, version: &str, env: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    let dir = dir.join(format!("erigon-{version}-{}", env.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = workspace_bin("fake-erigon");
    let extra: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    let write = |name: &str, role: &str| {
        let path = dir.join(name);
        let script = format!(
            "#!/bin/sh\nFAKE_ERIGON_VERSION='{version}' FAKE_ERIGON_ROLE={role} {extra}exec {} \"$@\"\n",
            fake.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    };
    (write("erigon", "erigon"), write("rpcdaemon", "rpcdaemon"))
}

/// anvil from `scripts/setup.sh` (`.tools/bin/anvil`), or `$ERIGOLEM_ANVIL`.
pub fn anvil_bin() -> PathBuf {
    let path = std::env::var_os("ERIGOLEM_ANVIL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/bin/anvil"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh",
        path.display()
    );
    path
}

pub fn nginx_bin() -> PathBuf {
    PathBuf::from(std::env::var_os("ERIGOLEM_NGINX").unwrap_or_else(|| "/usr/sbin/nginx".into()))
}

/// A port to listen on again after a restart: free now, outside the ephemeral range.
pub fn stable_port() -> u16 {
    free_port_block(1)
}

/// A port nobody listens on right now (from the ephemeral range: fine for one listener's life).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A base port for a block of `len` ports, all free now, picked at random in 10000–31999 so that
/// tests running in parallel processes rarely collide.
pub fn free_port_block(len: u16) -> u16 {
    for _ in 0..100 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        // Below Linux's ephemeral range (32768+), so outgoing connections never take these ports:
        // a port a test frees and binds again (a restarted server) stays available.
        let base =
            10_000 + ((nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % 22_000) as u16;
        let base = base - base % len.max(1);
        if (base..base + len).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free block of {len} ports");
}

/// Polls `f` until it returns `Some`, or panics with `what` at the deadline.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_for_every(what, timeout, Duration::from_millis(10), f).await
}

/// [`wait_for`], polling every `interval` (for slow things several tests watch at once).
pub async fn wait_for_every<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut f: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(interval).await;
    }
}

/// A child process in its own group, ended (TERM, then KILL) by PID when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: std::process::Child,
}

impl ChildGuard {
    pub fn spawn(cmd: &mut std::process::Command) -> Self {
        Self::try_spawn(cmd).unwrap()
    }

    /// [`ChildGuard::spawn`] that hands back the error instead of panicking.
    pub fn try_spawn(cmd: &mut std::process::Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        let child = cmd.process_group(0).stdin(Stdio::null()).spawn()?;
        Ok(Self { child })
    }

    /// Sends SIGTERM to the group without waiting: lets several children stop in parallel
    /// before their guards are dropped (which waits, then kills).
    pub fn terminate(&self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Non-blocking: has it exited?
    pub fn try_exit_code(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A private Nginx serving an Erigolem gateway directory.
#[derive(Debug)]
pub struct Nginx {
    pub port: u16,
    pub gateway: GatewayConfig,
    pub dir: PathBuf,
    _child: ChildGuard,
}

impl Nginx {
    /// Starts Nginx with its config, pid, logs and gateway files under `dir`.
    pub async fn start(dir: &Path) -> Self {
        Self::start_with_workers(dir, 1).await
    }

    pub async fn start_with_workers(dir: &Path, workers: u32) -> Self {
        let port = free_port();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let gateway_dir = dir.join("gateway");
        // As root, workers would run as `nobody` and could not read 0640 password files: give them
        // www-data and the files its group, as on a Debian provider.
        let root = nix::unistd::geteuid().is_root();
        let user = root.then_some("www-data");
        let conf = dir.join("nginx.conf");
        let listen: SocketAddr = ([127, 0, 0, 1], port).into();
        std::fs::write(
            &conf,
            site::standalone_config(dir, listen, &gateway_dir, user, workers),
        )
        .unwrap();
        let gateway = GatewayConfig {
            dir: gateway_dir,
            nginx_bin: nginx_bin(),
            nginx_conf: conf.clone(),
            pid_file: dir.join("nginx.pid"),
            password_group: user.map(str::to_owned),
        };
        erigolem_gateway::Gateway::new(gateway.clone())
            .ensure_layout()
            .unwrap();
        let child = ChildGuard::spawn(
            std::process::Command::new(nginx_bin())
                .args(["-e", "stderr", "-g", "daemon off;", "-c"])
                .arg(&conf)
                .stderr(std::fs::File::create(dir.join("nginx.stderr")).unwrap()),
        );
        let pid_file = gateway.pid_file.clone();
        // Its workers too: the master listens before it forks them, and a test that records
        // the worker pids (Nginx is never reloaded) must not record none.
        let running = erigolem_gateway::Gateway::new(gateway.clone());
        wait_for(
            "nginx to listen with its workers",
            Duration::from_secs(10),
            || {
                let pid_file = pid_file.clone();
                let workers = running.worker_pids().is_ok_and(|w| !w.is_empty());
                async move {
                    (workers
                        && pid_file.exists()
                        && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
                    .then_some(())
                }
            },
        )
        .await;
        Self {
            port,
            gateway,
            dir: dir.to_owned(),
            _child: child,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A real anvil dev chain.
#[derive(Debug)]
pub struct Anvil {
    pub port: u16,
    child: ChildGuard,
}

/// How to start an [`Anvil`]: `Default` is anvil's own (chain id 31337, mining on demand).
#[derive(Debug, Clone, Copy, Default)]
pub struct AnvilOptions {
    /// Mine a block every this many seconds (None: on demand).
    pub block_time: Option<u32>,
    /// `--chain-id` (None: anvil's 31337).
    pub chain_id: Option<u64>,
    /// Mine a block every this many milliseconds (takes precedence over `block_time`).
    pub block_time_ms: Option<u32>,
}

impl Anvil {
    /// Starts anvil on a free port, mining a block every `block_time` seconds (None: on demand).
    pub async fn start(block_time: Option<u32>) -> Self {
        Self::start_with(AnvilOptions {
            block_time,
            ..AnvilOptions::default()
        })
        .await
    }

    /// Starts anvil on a free port with `options`.
    pub async fn start_with(options: AnvilOptions) -> Self {
        let port = free_port();
        let mut cmd = std::process::Command::new(anvil_bin());
        cmd.args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--silent",
        ]);
        if let Some(ms) = options.block_time_ms {
            cmd.args(["--block-time", &format!("{:.3}", f64::from(ms) / 1000.0)]);
        } else if let Some(bt) = options.block_time {
            cmd.args(["--block-time", &bt.to_string()]);
        }
        if let Some(id) = options.chain_id {
            cmd.args(["--chain-id", &id.to_string()]);
        }
        let child = ChildGuard::spawn(cmd.stdout(Stdio::null()));
        let url = format!("http://127.0.0.1:{port}");
        wait_for("anvil to answer", Duration::from_secs(20), || {
            let url = url.clone();
            async move { rpc(&url, None, "eth_chainId", json!([])).await.ok() }
        })
        .await;
        Self { port, child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// Errors of [`rpc`]: the HTTP status when the call did not reach a JSON-RPC answer.
#[derive(Debug)]
pub enum RpcError {
    Http(u16),
    Transport(String),
    Rpc(Value),
}

/// One JSON-RPC call, optionally with basic auth `(user, password)`.
pub async fn rpc(
    url: &str,
    auth: Option<(&str, &str)>,
    method: &str,
    params: Value,
) -> Result<Value, RpcError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut req = client
        .post(url)
        .json(&json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}));
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| RpcError::Transport(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(RpcError::Http(resp.status().as_u16()));
    }
    let body: Value = resp
        .json()
        .await
        .map_err(|e| RpcError::Transport(e.to_string()))?;
    match body.get("result") {
        Some(r) => Ok(r.clone()),
        None => Err(RpcError::Rpc(body)),
    }
}

/// Parses a `0x…` quantity.
pub fn hex_u64(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

/// Live processes (other than this one) whose command line contains `needle`, e.g. an instance's
/// data dir: how tests find the node processes a runtime started.
pub fn pids_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .filter(|pid| alive(*pid))
        .collect()
}
