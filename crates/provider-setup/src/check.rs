//! `check`: a doctor for a provider machine. Each check passes, fails (with a fix), or is skipped
//! when what it needs is not configured.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use erigolem_engine::RpcClient;
use erigolem_primitives::{Network, Prune};
use erigolem_runtime_client::RuntimeBinary;
use serde::Serialize;

use crate::install::{sha256, Manifest, ManifestEntry};
use crate::plan::{self, Plan};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub status: Status,
    pub detail: String,
    /// How to fix a failure (empty otherwise).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

fn pass(check: impl Into<String>, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        check: check.into(),
        status: Status::Pass,
        detail: detail.into(),
        fix: String::new(),
    }
}

fn fail(
    check: impl Into<String>,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> CheckResult {
    CheckResult {
        check: check.into(),
        status: Status::Fail,
        detail: detail.into(),
        fix: fix.into(),
    }
}

fn skip(check: impl Into<String>, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        check: check.into(),
        status: Status::Skip,
        detail: detail.into(),
        fix: String::new(),
    }
}

/// Disk one node needs in GB: Erigon's published figure for the network and prune mode
/// (`erigolem_engine::disk_estimate`) plus a quarter for the chain to grow into. `dev` (anvil)
/// needs next to nothing.
pub fn disk_need_gb(network: Network, prune: Prune) -> u64 {
    match erigolem_engine::disk_estimate(network, prune) {
        Some(e) => (e.bytes / 1_000_000_000) * 5 / 4 + 1,
        None => 1,
    }
}

/// Options of `check` that are not setup inputs.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// yagna app key for `GET /me`; without it only a TCP connect is tried.
    pub app_key: Option<String>,
}

/// Runs every check, in a fixed order.
pub async fn check(plan: &Plan, options: &CheckOptions) -> Vec<CheckResult> {
    let s = &plan.settings;
    let r = |p: &Path| plan.rooted(p);
    let mut out = Vec::new();

    // Binaries.
    out.push(binary("binary erigon", &r(&s.erigon), "--version", "install Erigon 3 (https://github.com/erigontech/erigon/releases) or pass --erigon PATH").await);
    if let Some(anvil) = &s.anvil {
        out.push(
            binary(
                "binary anvil",
                &r(anvil),
                "--version",
                "install foundry's anvil or fix --anvil",
            )
            .await,
        );
    }
    out.push(
        binary(
            "binary nginx",
            &r(&s.nginx_bin),
            "-v",
            "apt install nginx-light (or pass --nginx-bin)",
        )
        .await,
    );
    out.push(binary("binary runtime", &r(&s.runtime), "--version", "build and install ya-runtime-erigon (cargo build --release --bin ya-runtime-erigon) at --runtime").await);
    match &s.yagna_bin {
        Some(y) => out.push(
            binary(
                "binary yagna",
                &r(y),
                "--version",
                "pip install golem-node (yagna) or fix --yagna-bin",
            )
            .await,
        ),
        None => out.push(skip("binary yagna", "not configured (--yagna-bin)")),
    }

    // Setup's own files.
    out.push(setup_files(plan));
    out.push(plugin(plan));

    // Nginx.
    out.push(nginx_config(plan).await);
    out.push(site_reachable(plan).await);

    // The runtime's own test.
    out.push(runtime_test(plan).await);

    // Shared nodes.
    let nodes = plan.shared_nodes();
    if nodes.is_empty() {
        out.push(skip(
            "shared nodes",
            "none configured (--shared, --shared-url)",
        ));
    }
    for (network, url) in nodes {
        out.push(shared_node(plan, network, &url).await);
    }

    // Disk.
    out.push(disk(plan));

    // Ports.
    out.push(port(
        "port site",
        s.listen_port,
        "nginx",
        "stop what holds it, or choose another --listen-port",
    ));
    for network in &s.shared {
        let p = plan::shared_ports(s.shared_port_base, *network).http();
        out.push(port(
            &format!("port shared {network}"),
            p,
            "erigon",
            "stop what holds it, or choose another --shared-port-base",
        ));
    }

    // yagna.
    out.push(yagna(plan, options).await);
    out
}

/// Whether every check passed or was skipped.
pub fn all_ok(results: &[CheckResult]) -> bool {
    results.iter().all(|r| r.status != Status::Fail)
}

/// The table: status, check, detail, and a `fix:` line under each failure.
pub fn table(results: &[CheckResult]) -> String {
    let width = results
        .iter()
        .map(|r| r.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!("{:<6}  {:<width$}  DETAIL\n", "STATUS", "CHECK");
    for r in results {
        let status = match r.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        let _ = writeln!(out, "{status:<6}  {:<width$}  {}", r.check, r.detail);
        if r.status == Status::Fail && !r.fix.is_empty() {
            let _ = writeln!(out, "{:<6}  {:<width$}  fix: {}", "", "", r.fix);
        }
    }
    let failed = results.iter().filter(|r| r.status == Status::Fail).count();
    let _ = writeln!(
        out,
        "{} passed, {failed} failed, {} skipped",
        results.iter().filter(|r| r.status == Status::Pass).count(),
        results.iter().filter(|r| r.status == Status::Skip).count()
    );
    out
}

async fn run_quiet(
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> Option<std::process::Output> {
    let fut = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(timeout, fut).await.ok()?.ok()
}

async fn binary(check: &str, path: &Path, version_flag: &str, fix: &str) -> CheckResult {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
        Ok(_) => {
            return fail(
                check,
                format!("{} is not an executable file", path.display()),
                fix,
            )
        }
        Err(_) => return fail(check, format!("{} is missing", path.display()), fix),
    }
    let version = run_quiet(path, &[version_flag], Duration::from_secs(5))
        .await
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| format!("no answer to {version_flag}"));
    pass(check, format!("{} ({version})", path.display()))
}

fn setup_files(plan: &Plan) -> CheckResult {
    const CHECK: &str = "setup files";
    let manifest = match Manifest::load(&plan.prefix) {
        Ok(Some(m)) => m,
        Ok(None) => {
            return fail(
                CHECK,
                "no manifest: setup has not run",
                "run `erigolem-provider setup`",
            )
        }
        Err(e) => return fail(CHECK, e.to_string(), "run `erigolem-provider setup` again"),
    };
    let mut bad = Vec::new();
    for entry in &manifest.entries {
        let real = plan.rooted(entry.path());
        let ok = match entry {
            ManifestEntry::File { sha256: want, .. } => std::fs::read(&real)
                .map(|d| sha256(&d) == *want)
                .unwrap_or(false),
            ManifestEntry::Symlink { target, .. } => std::fs::read_link(&real)
                .map(|t| t == *target)
                .unwrap_or(false),
        };
        if !ok {
            bad.push(real.display().to_string());
        }
    }
    if bad.is_empty() {
        pass(
            CHECK,
            format!("{} entries as written", manifest.entries.len()),
        )
    } else {
        fail(
            CHECK,
            format!("missing or changed: {}", bad.join(", ")),
            "run `erigolem-provider setup` again (--force overwrites changed files)",
        )
    }
}

fn plugin(plan: &Plan) -> CheckResult {
    const CHECK: &str = "golemsp plugin";
    let path = plan.rooted(&plan::descriptor_path(&plan.settings));
    let fix = "run `erigolem-provider setup` (writes the descriptor into --plugins-dir)";
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => return fail(CHECK, format!("{} is missing", path.display()), fix),
    };
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let Some(desc) = value
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == "erigon"))
    else {
        return fail(
            CHECK,
            format!("{}: no runtime `erigon`", path.display()),
            fix,
        );
    };
    let runtime = PathBuf::from(desc["runtime-path"].as_str().unwrap_or_default());
    let runtime = path.parent().map(|d| d.join(&runtime)).unwrap_or(runtime);
    if !runtime.exists() {
        return fail(
            CHECK,
            format!(
                "{}: runtime-path {} is missing",
                path.display(),
                runtime.display()
            ),
            "install the runtime at --runtime",
        );
    }
    pass(CHECK, format!("{} (runtime erigon)", path.display()))
}

async fn nginx_config(plan: &Plan) -> CheckResult {
    const CHECK: &str = "nginx config";
    let s = &plan.settings;
    let bin = plan.rooted(&s.nginx_bin);
    let conf = plan.rooted(&s.nginx_conf);
    let site = plan.rooted(&plan::site_path(s));
    let enabled_site = plan.rooted(&s.nginx_dir.join("sites-enabled").join(plan::SITE_FILE));
    let conf_arg = conf.display().to_string();
    let Some(out) = run_quiet(
        &bin,
        &["-T", "-q", "-e", "stderr", "-c", &conf_arg],
        Duration::from_secs(20),
    )
    .await
    else {
        return fail(
            CHECK,
            format!("cannot run {}", bin.display()),
            "install nginx",
        );
    };
    if !out.status.success() {
        return fail(
            CHECK,
            format!(
                "nginx -t -c {conf_arg}: {}",
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', " ")
            ),
            "fix the file nginx names, then `nginx -t`",
        );
    }
    let dump = String::from_utf8_lossy(&out.stdout);
    let included = [&site, &enabled_site]
        .iter()
        .any(|p| dump.contains(&format!("# configuration file {}:", p.display())));
    if !included {
        let enabled = plan.rooted(&s.nginx_dir.join("sites-enabled"));
        return fail(
            CHECK,
            format!(
                "{conf_arg} is valid but does not include {}",
                site.display()
            ),
            format!(
                "add `include {}/*;` inside http {{}} of {conf_arg}",
                enabled.display()
            ),
        );
    }
    pass(CHECK, format!("nginx -t ok, {conf_arg} includes the site"))
}

async fn site_reachable(plan: &Plan) -> CheckResult {
    const CHECK: &str = "site reachable";
    let s = &plan.settings;
    let addr: SocketAddr = ([127, 0, 0, 1], s.listen_port).into();
    let fix = format!(
        "start or reload nginx (`{} -s reload`), and check that the site listens on {}",
        plan.rooted(&s.nginx_bin).display(),
        s.listen_port
    );
    let connect = tokio::task::spawn_blocking(move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .await;
    if !matches!(connect, Ok(Ok(_))) {
        return fail(CHECK, format!("nothing listens on {addr}"), fix);
    }
    if s.tls.is_some() {
        return pass(
            CHECK,
            format!("TCP {addr} accepts (TLS not verified locally)"),
        );
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    match client
        .get(format!("http://{addr}/"))
        .header("Host", &s.server_name)
        .send()
        .await
    {
        Ok(resp) => {
            let server = resp
                .headers()
                .get("server")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if server.starts_with("nginx") {
                pass(
                    CHECK,
                    format!(
                        "GET http://{addr}/ → {} from {server}",
                        resp.status().as_u16()
                    ),
                )
            } else {
                fail(
                    CHECK,
                    format!("{addr} answers, but not as nginx (Server: {server:?})"),
                    fix,
                )
            }
        }
        Err(e) => fail(
            CHECK,
            format!("{addr} accepts, but not as nginx: no HTTP answer ({e})"),
            fix,
        ),
    }
}

async fn runtime_test(plan: &Plan) -> CheckResult {
    const CHECK: &str = "runtime test";
    let s = &plan.settings;
    let bin = plan.rooted(&s.runtime);
    if !bin.exists() {
        return fail(
            CHECK,
            format!("{} is missing", bin.display()),
            "install ya-runtime-erigon at --runtime",
        );
    }
    let workdir = std::env::temp_dir().join(format!("erigolem-check-{}", std::process::id()));
    let runtime = RuntimeBinary::new(&bin, &workdir)
        .env("XDG_DATA_HOME", plan.rooted(&s.xdg_data_home))
        .env("RUST_BACKTRACE", "0");
    let result = tokio::time::timeout(Duration::from_secs(60), runtime.test()).await;
    let _ = std::fs::remove_dir_all(&workdir);
    match result {
        Ok(Ok(_)) => pass(CHECK, "ya-runtime-erigon test: ok"),
        Ok(Err(e)) => fail(
            CHECK,
            last_line(&e.to_string()),
            format!(
                "fix what it names; its config is {}",
                plan.rooted(&plan::runtime_config_path(s)).display()
            ),
        ),
        Err(_) => fail(
            CHECK,
            "ya-runtime-erigon test: no answer in 60 s",
            "run it by hand to see why",
        ),
    }
}

fn last_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.as_slice() {
        [] => String::new(),
        [one] => one.trim().to_owned(),
        [first, .., last] => format!("{} … {}", first.trim(), last.trim()),
    }
}

async fn shared_node(plan: &Plan, network: Network, url: &str) -> CheckResult {
    let check = format!("shared node {network}");
    let local = plan.settings.shared.contains(&network);
    let fix = if local {
        format!(
            "systemctl start {} (and see journalctl -u {})",
            plan::unit_name(network),
            plan::unit_name(network)
        )
    } else {
        format!("start the node at {url}, or fix --shared-url {network}=URL")
    };
    let rpc = RpcClient::new(url);
    let said = |e: erigolem_engine::RpcError| {
        let e = e.to_string();
        if e.contains(url) {
            e
        } else {
            format!("{url}: {e}")
        }
    };
    let chain = match rpc.chain_id().await {
        Ok(c) => c,
        Err(e) => return fail(check, said(e), fix),
    };
    if chain != network.chain_id() {
        return fail(
            check,
            format!(
                "{url} is chain {chain}, not {network} ({})",
                network.chain_id()
            ),
            fix,
        );
    }
    let block = match rpc.block_number().await {
        Ok(b) => b,
        Err(e) => return fail(check, said(e), fix),
    };
    match rpc.syncing().await {
        Ok(None) => pass(check, format!("{url}: block {block}, in sync")),
        Ok(Some(p)) => pass(
            check,
            format!(
                "{url}: syncing, block {} of {} (served in shared mode once in sync)",
                p.current_block, p.highest_block
            ),
        ),
        Err(e) => fail(check, said(e), fix),
    }
}

fn disk(plan: &Plan) -> CheckResult {
    const CHECK: &str = "disk space";
    let s = &plan.settings;
    let data = plan.rooted(&s.data_dir);
    let Some(existing) = data.ancestors().find(|p| p.exists()) else {
        return skip(CHECK, format!("{}: no existing ancestor", data.display()));
    };
    let stat = match rustix::fs::statvfs(existing) {
        Ok(st) => st,
        Err(e) => {
            return fail(
                CHECK,
                format!("statvfs {}: {e}", existing.display()),
                "check the data dir",
            )
        }
    };
    let free_gb = stat.f_bavail.saturating_mul(stat.f_frsize) / 1_000_000_000;
    let need: u64 = s.shared.iter().map(|n| disk_need_gb(*n, s.prune)).sum();
    let detail = format!(
        "{}: {free_gb} GB free, ~{need} GB needed for shared nodes ({})",
        data.display(),
        if s.shared.is_empty() {
            "none".to_owned()
        } else {
            s.shared
                .iter()
                .map(|n| format!("{n} {}", s.prune))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    if free_gb >= need {
        pass(CHECK, detail)
    } else {
        fail(
            CHECK,
            detail,
            "put --data-dir on a larger disk, or choose fewer networks or --prune minimal",
        )
    }
}

/// Listening TCP sockets on `port` (IPv4 and IPv6): their inodes.
fn listening_inodes(port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let local_port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                if let Ok(inode) = cols[9].parse() {
                    out.push(inode);
                }
            }
        }
    }
    out
}

/// (pid, comm) of processes holding one of `inodes`.
fn socket_owners(inodes: &[u64]) -> Vec<(u32, String)> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .map(|t| wanted.iter().any(|w| t.as_os_str() == w.as_str()))
                .unwrap_or(false)
        });
        if holds {
            let comm = std::fs::read_to_string(p.path().join("comm"))
                .unwrap_or_default()
                .trim()
                .to_owned();
            out.push((pid, comm));
        }
    }
    out.sort();
    out
}

fn port(check: &str, port: u16, expected: &str, fix: &str) -> CheckResult {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return pass(check, format!("{port} free"));
    }
    let owners = socket_owners(&inodes);
    if owners.is_empty() {
        return fail(
            check,
            format!("{port} is in use by a process not visible here"),
            fix,
        );
    }
    let foreign: Vec<String> = owners
        .iter()
        .filter(|(_, comm)| !comm.contains(expected))
        .map(|(pid, comm)| format!("{comm} (pid {pid})"))
        .collect();
    if foreign.is_empty() {
        pass(check, format!("{port} held by {expected}"))
    } else {
        fail(
            check,
            format!(
                "{port} is held by {}, expected {expected}",
                foreign.join(", ")
            ),
            fix,
        )
    }
}

async fn yagna(plan: &Plan, options: &CheckOptions) -> CheckResult {
    const CHECK: &str = "yagna";
    let Some(url) = &plan.settings.yagna_url else {
        return skip(CHECK, "not configured (--yagna-url)");
    };
    let fix = "start yagna (`yagna service run`) and check --yagna-url / YAGNA_APPKEY";
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let me = format!("{}/me", url.trim_end_matches('/'));
    let mut req = client.get(&me);
    if let Some(key) = &options.app_key {
        req = req.bearer_auth(key);
    }
    match req.send().await {
        Ok(resp) if resp.status().is_success() => {
            pass(CHECK, format!("GET {me} → {}", resp.status().as_u16()))
        }
        Ok(resp) if options.app_key.is_none() => pass(
            CHECK,
            format!(
                "{url} answers ({}); pass --app-key to check identity",
                resp.status().as_u16()
            ),
        ),
        Ok(resp) => fail(
            CHECK,
            format!("GET {me} → {}: app key refused?", resp.status().as_u16()),
            fix,
        ),
        Err(e) => fail(CHECK, format!("GET {me}: {e}"), fix),
    }
}
