//! What `setup` writes: every file's path and content, the symlink, the directories, computed from
//! the [`Settings`] and the prefix, deterministically (no timestamps, sorted).

use std::path::{Path, PathBuf};

use erigolem_engine::{ErigonEngine, PortBlock};
use erigolem_gateway::{site, GatewayConfig};
use erigolem_node_service::{Engines, Limits, PortRange, RuntimeConfig};
use erigolem_primitives::Network;

use crate::inputs::Settings;

/// Where the manifest of what setup wrote lives (under the prefix).
pub const MANIFEST: &str = "/var/lib/erigolem-provider/manifest.json";
/// The provider agent's data dir (also holds the manifest).
pub const PROVIDER_DATA_DIR: &str = "/var/lib/erigolem-provider";
/// The site's file name under `sites-available/` and `sites-enabled/`.
pub const SITE_FILE: &str = "erigolem.conf";
/// The provider agent's unit.
pub const PROVIDER_UNIT: &str = "erigolem-provider.service";

/// One thing setup writes. Paths are logical (as on the real machine); the prefix roots them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File {
        path: PathBuf,
        content: String,
        /// What it is, for the report.
        what: &'static str,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
        what: &'static str,
    },
}

impl Entry {
    pub fn path(&self) -> &Path {
        match self {
            Entry::File { path, .. } | Entry::Symlink { path, .. } => path,
        }
    }
    pub fn what(&self) -> &'static str {
        match self {
            Entry::File { what, .. } | Entry::Symlink { what, .. } => what,
        }
    }
}

/// Everything setup does, before it does it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub prefix: PathBuf,
    pub settings: Settings,
    /// Files and the symlink, in the order they are written.
    pub entries: Vec<Entry>,
    /// Directories setup makes sure exist (logical), parents first.
    pub dirs: Vec<PathBuf>,
    /// Chain data dirs: created, kept by `uninstall` unless `--purge-data`.
    pub data_dirs: Vec<PathBuf>,
    /// Files the runtime creates in setup's layout (the gateway's lock file): uninstall removes them.
    pub runtime_files: Vec<PathBuf>,
    /// The runtime config, as written.
    pub runtime_config: RuntimeConfig,
}

/// `path` under `prefix` (`/` = the real machine).
pub fn rooted(prefix: &Path, path: &Path) -> PathBuf {
    prefix.join(path.strip_prefix("/").unwrap_or(path))
}

/// Erigon's port block for a shared node: mainnet, sepolia and hoodi get base + 12·(0, 1, 3).
/// Slot 2 was holesky's (shut down): the others keep the ports they always had.
pub fn shared_ports(base: u16, network: Network) -> PortBlock {
    let index = match network {
        Network::Mainnet => 0,
        Network::Sepolia => 1,
        Network::Hoodi => 3,
        Network::Dev => 4,
    };
    PortBlock {
        base: base.saturating_add(index * PortBlock::LEN),
    }
}

pub fn chain_dir(s: &Settings, network: Network) -> PathBuf {
    s.data_dir.join("chains").join(network.as_str())
}

pub fn unit_name(network: Network) -> String {
    format!("erigolem-erigon-{network}.service")
}

pub fn runtime_config_path(s: &Settings) -> PathBuf {
    s.xdg_data_home
        .join("ya-runtime-erigon")
        .join("ya-runtime-erigon.json")
}

pub fn site_path(s: &Settings) -> PathBuf {
    s.nginx_dir.join("sites-available").join(SITE_FILE)
}

pub fn descriptor_path(s: &Settings) -> PathBuf {
    // ya-provider loads `<plugins dir>/ya-*.json`.
    s.plugins_dir.join("ya-runtime-erigon.json")
}

impl Plan {
    pub fn new(settings: Settings, prefix: &Path) -> Plan {
        let s = &settings;
        let r = |p: &Path| rooted(prefix, p);
        let runtime_config = runtime_config(s, prefix);
        let mut entries = vec![
            Entry::File {
                path: descriptor_path(s),
                content: descriptor(&r(&s.runtime)),
                what: "golemsp plugin descriptor",
            },
            Entry::File {
                path: runtime_config_path(s),
                content: format!(
                    "{}\n",
                    serde_json::to_string_pretty(&runtime_config).unwrap_or_default()
                ),
                what: "runtime config",
            },
            Entry::File {
                path: site_path(s),
                content: nginx_site(s, prefix),
                what: "nginx site",
            },
            Entry::Symlink {
                path: s.nginx_dir.join("sites-enabled").join(SITE_FILE),
                target: PathBuf::from("../sites-available").join(SITE_FILE),
                what: "nginx site enabled",
            },
        ];
        for network in &s.shared {
            entries.push(Entry::File {
                path: s.systemd_dir.join(unit_name(*network)),
                content: erigon_unit(s, prefix, *network),
                what: "shared erigon unit",
            });
        }
        entries.push(Entry::File {
            path: s.systemd_dir.join(PROVIDER_UNIT),
            content: provider_unit(s, prefix),
            what: "provider agent unit",
        });
        if let Some(preset) = &s.preset_file {
            entries.push(Entry::File {
                path: preset.clone(),
                content: preset_file(s),
                what: "ya-provider preset",
            });
        }
        let dirs = vec![
            s.gateway_dir.join("htpasswd"),
            s.gateway_dir.join("sockets"),
            PathBuf::from(PROVIDER_DATA_DIR),
        ];
        let mut data_dirs = vec![s.data_dir.join("instances")];
        data_dirs.extend(s.shared.iter().map(|n| chain_dir(s, *n)));
        let runtime_files = vec![s.gateway_dir.join(".lock")];
        Plan {
            prefix: prefix.to_owned(),
            settings,
            entries,
            dirs,
            data_dirs,
            runtime_files,
            runtime_config,
        }
    }

    pub fn rooted(&self, path: &Path) -> PathBuf {
        rooted(&self.prefix, path)
    }

    /// The shared nodes' local RPC URLs and the external ones: network → URL, sorted.
    pub fn shared_nodes(&self) -> Vec<(Network, String)> {
        self.runtime_config
            .shared
            .iter()
            .map(|(n, u)| (*n, u.clone()))
            .collect()
    }

    /// The commands setup runs after writing (only on the real machine, `--prefix /`).
    pub fn commands(&self) -> Vec<Vec<String>> {
        let s = &self.settings;
        vec![
            vec![
                self.rooted(&s.nginx_bin).display().to_string(),
                "-t".into(),
                "-c".into(),
                self.rooted(&s.nginx_conf).display().to_string(),
            ],
            vec!["systemctl".into(), "daemon-reload".into()],
        ]
    }

    /// What to run by hand afterwards (setup never starts services or reloads Nginx itself).
    pub fn next_steps(&self) -> Vec<String> {
        let s = &self.settings;
        let mut units: Vec<String> = s.shared.iter().map(|n| unit_name(*n)).collect();
        units.push(PROVIDER_UNIT.to_owned());
        vec![
            format!(
                "{} -s reload   # load the site",
                self.rooted(&s.nginx_bin).display()
            ),
            format!("systemctl enable --now {}", units.join(" ")),
        ]
    }
}

fn runtime_config(s: &Settings, prefix: &Path) -> RuntimeConfig {
    let r = |p: &Path| rooted(prefix, p);
    let mut shared: std::collections::BTreeMap<Network, String> = s
        .shared
        .iter()
        .map(|n| {
            let port = shared_ports(s.shared_port_base, *n).http();
            (*n, format!("http://127.0.0.1:{port}"))
        })
        .collect();
    shared.extend(s.shared_urls.iter().cloned());
    RuntimeConfig {
        data_dir: r(&s.data_dir.join("instances")),
        port_range: PortRange {
            start: s.port_range.0,
            end: s.port_range.1,
        },
        public_url: s.public_url.clone(),
        nginx: GatewayConfig {
            dir: r(&s.gateway_dir),
            nginx_bin: r(&s.nginx_bin),
            nginx_conf: r(&s.nginx_conf),
            pid_file: r(&s.nginx_pid),
            password_group: s.password_group.clone(),
        },
        engines: Engines {
            erigon: Some(ErigonEngine {
                binary: r(&s.erigon),
                rpcdaemon: None,
            }),
            anvil: s.anvil.as_ref().map(|a| erigolem_engine::AnvilEngine {
                binary: r(a),
                block_time: 1,
            }),
        },
        shared,
        limits: Limits {
            max_instances: s.max_instances,
            ..Limits::default()
        },
        guard: Default::default(),
        rpc_limits: erigolem_node_service::dedicated_rpc_limits(),
        health: Default::default(),
    }
}

/// The usage counters the runtime's activities can be priced by, as ya-provider's `ExeUnitDesc`
/// reads them (`config.counters`: property name → `{name, description, price}`, agent/provider/
/// src/execution/registry.rs in yagna). Declaring any replaces ya-provider's defaults, so the
/// standard ones are declared again; `golem.usage.erigolem.requests` is the runtime's own counter
/// (JSON-RPC calls its endpoint answered), which the exe-unit takes from the runtime's counter
/// events and reports when the agreement's usage vector lists it.
pub fn counters() -> serde_json::Value {
    serde_json::json!({
        "golem.usage.duration_sec": {"name": "duration", "description": "Duration", "price": true},
        "golem.usage.cpu_sec": {"name": "cpu", "description": "CPU", "price": true},
        "golem.usage.erigolem.requests": {"name": "requests", "description": "JSON-RPC requests answered", "price": true},
    })
}

fn descriptor(runtime: &Path) -> String {
    let value = serde_json::json!([{
        "name": "erigon",
        "version": env!("CARGO_PKG_VERSION"),
        "supervisor-path": "exe-unit",
        "runtime-path": runtime,
        "description": "Ethereum JSON-RPC endpoints (Erigon; anvil for the dev chain) behind Nginx, one per activity",
        "extra-args": ["--runtime-managed-image"],
        "config": {"counters": counters()},
    }]);
    format!(
        "{}\n",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    )
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("{by}{l}\n")
            }
        })
        .collect()
}

fn nginx_site(s: &Settings, prefix: &Path) -> String {
    let gateway = rooted(prefix, &s.gateway_dir);
    let (listen, tls) = match &s.tls {
        Some(t) => (
            format!("listen {} ssl;", s.listen_port),
            format!(
                "ssl_certificate     {};\nssl_certificate_key {};\nssl_protocols TLSv1.2 TLSv1.3;\nssl_session_cache shared:erigolem_ssl:10m;\n",
                rooted(prefix, &t.cert).display(),
                rooted(prefix, &t.key).display()
            ),
        ),
        None => (format!("listen {};", s.listen_port), String::new()),
    };
    let burst = s.rate_limit.saturating_mul(2);
    format!(
        r#"# Erigolem provider site, written by `erigolem-provider setup` (removed by `uninstall`).
# Included at http level (sites-enabled/); nginx.conf itself is not touched. It is static: the
# runtime never changes it and never reloads Nginx; each activity's runtime only writes its password
# file under {gateway}/htpasswd/ and serves its socket under {gateway}/sockets/.

{http}limit_req_zone $binary_remote_addr zone=erigolem:10m rate={rate}r/s;

server {{
    {listen}
    server_name {server_name};
{tls}
    # Per client IP; JSON-RPC batches count once.
    limit_req zone=erigolem burst={burst} nodelay;
    limit_req_status 429;

    client_body_timeout 60s;
    client_header_timeout 30s;
    send_timeout 60s;
    keepalive_timeout 75s;
    proxy_connect_timeout 10s;

    # Every instance at /<instance>/: its password file, then its runtime's socket (HTTP and
    # WebSocket; the runtime's endpoint guard applies the method policy and per-activity limits).
{server}}}
"#,
        http = site::http_snippet(),
        server = indent(&site::server_snippet(&gateway), "    "),
        rate = s.rate_limit,
        server_name = s.server_name,
        gateway = gateway.display(),
        tls = indent(&tls, "    "),
    )
}

/// systemd `ExecStart=` quoting: `%` is a specifier, `\` and quotes must not appear unescaped.
fn exec_line(program: &Path, args: &[String]) -> String {
    let mut out = program.display().to_string().replace('%', "%%");
    for a in args {
        out.push(' ');
        out.push_str(&a.replace('%', "%%"));
    }
    out
}

fn user_line(s: &Settings) -> String {
    s.service_user
        .as_ref()
        .map(|u| format!("User={u}\n"))
        .unwrap_or_default()
}

fn erigon_unit(s: &Settings, prefix: &Path, network: Network) -> String {
    let engine = ErigonEngine {
        binary: rooted(prefix, &s.erigon),
        rpcdaemon: None,
    };
    let ports = shared_ports(s.shared_port_base, network);
    let datadir = rooted(prefix, &chain_dir(s, network));
    // A shared node serves many activities: Erigon's own RPC limits, not a dedicated node's.
    let node = erigolem_engine::ErigonNode {
        network,
        prune: s.prune,
        datadir: &datadir,
        ports,
        limits: &erigolem_primitives::RpcLimits::default(),
    };
    // `resolve` checked that this release can run the network and prune mode.
    let processes = engine
        .processes(&s.erigon_release, &node)
        .unwrap_or_default();
    let exec = processes
        .first()
        .map(|p| {
            let args: Vec<String> = p
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            exec_line(&p.program, &args)
        })
        .unwrap_or_default();
    format!(
        r#"# Written by `erigolem-provider setup`: the shared, synced Erigon for {network} (prune {prune}).
# JSON-RPC on 127.0.0.1:{http} (the runtime's `shared.{network}`), ports {first}-{last}.
# Command line of Erigon {version}: run setup again after upgrading Erigon.
[Unit]
Description=Erigolem shared Erigon node ({network}, prune {prune})
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
{user}ExecStart={exec}
Restart=on-failure
RestartSec=10
TimeoutStopSec=300
KillSignal=SIGTERM
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
"#,
        prune = s.prune,
        version = s.erigon_release.version,
        http = ports.http(),
        first = ports.base,
        last = ports.base + PortBlock::LEN - 1,
        user = user_line(s),
    )
}

fn provider_unit(s: &Settings, prefix: &Path) -> String {
    let r = |p: &Path| rooted(prefix, p).display().to_string();
    let mut args = vec![
        "run".to_owned(),
        format!("--runtime={}", r(&s.runtime)),
        format!("--data-dir={}", r(Path::new(PROVIDER_DATA_DIR))),
        format!("--price-per-hour={}", s.price_per_hour),
        format!("--capacity={}", s.capacity),
        format!("--subnet={}", s.subnet),
    ];
    if let Some(url) = &s.yagna_url {
        args.push(format!("--yagna-url={url}"));
    }
    let mut after: Vec<String> = vec!["network-online.target".into(), "nginx.service".into()];
    after.extend(s.shared.iter().map(|n| unit_name(*n)));
    format!(
        r#"# Written by `erigolem-provider setup`: the provider agent selling Erigon nodes through yagna.
# Put YAGNA_APPKEY=… in /etc/erigolem/provider.env (not written by setup).
[Unit]
Description=Erigolem provider agent
After={after}
Wants=network-online.target

[Service]
Type=simple
{user}Environment=XDG_DATA_HOME={xdg}
EnvironmentFile=-/etc/erigolem/provider.env
ExecStart={exec}
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"#,
        after = after.join(" "),
        user = user_line(s),
        xdg = r(&s.xdg_data_home),
        exec = exec_line(&rooted(prefix, &s.provider_bin), &args),
    )
}

fn preset_file(s: &Settings) -> String {
    let per_second = s.price_per_hour / 3600.0;
    let value = serde_json::json!({
        "ver": "V1",
        "active": ["erigon"],
        "presets": [{
            "name": "erigon",
            "exeunit-name": "erigon",
            "pricing-model": "linear",
            "initial-price": 0.0,
            "usage-coeffs": {
                "golem.usage.cpu_sec": 0.0,
                "golem.usage.duration_sec": per_second,
                "golem.usage.erigolem.requests": 0.0,
            },
        }],
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    )
}
