//! The inputs of `setup` / `check`: every one a flag and a key of the TOML config file (flags win),
//! resolved with defaults into a [`Settings`].

use std::path::{Path, PathBuf};

use erigolem_primitives::{Network, Prune};
use serde::Deserialize;

use crate::SetupError;

/// Every input, as flags (`--server-name …`) and as keys of the `--config` TOML file
/// (`server-name = "…"`). Unset values take the defaults documented on each flag.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Inputs {
    /// The Nginx site's `server_name` (the provider's host name). Required.
    #[arg(long)]
    pub server_name: Option<String>,
    /// The port the Nginx site listens on [default: 8443 with TLS, 8080 without].
    #[arg(long)]
    pub listen_port: Option<u16>,
    /// TLS certificate (full chain); with `--tls-key`. Without both the site is plain HTTP.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// How users reach the site [default: http(s)://<server-name>:<listen-port>].
    #[arg(long)]
    pub public_url: Option<String>,
    /// Networks to keep a shared, synced Erigon for (a systemd unit each), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub shared: Option<Vec<Network>>,
    /// A shared node run elsewhere: `network=url` (no unit is written for it), repeatable.
    #[arg(long)]
    pub shared_url: Option<Vec<String>>,
    /// Prune mode of the shared nodes [default: full].
    #[arg(long)]
    pub prune: Option<Prune>,
    /// First port of the shared nodes' port blocks: mainnet, sepolia and hoodi take 12 ports each
    /// from base, base + 12 and base + 36 [default: 42000].
    #[arg(long)]
    pub shared_port_base: Option<u16>,
    /// Chain data: `chains/<network>` (shared nodes), `instances/` (the runtime) [default: /var/lib/erigolem].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The erigon binary [default: /usr/local/bin/erigon].
    #[arg(long)]
    pub erigon: Option<PathBuf>,
    /// Its release (e.g. `3.6.1`), for the shared nodes' command line [default: what
    /// `erigon --version` says; the newest release known to Erigolem when it cannot be run].
    #[arg(long)]
    pub erigon_version: Option<String>,
    /// The anvil binary: enables the `dev` network in dedicated mode.
    #[arg(long)]
    pub anvil: Option<PathBuf>,
    /// The runtime binary [default: /usr/local/bin/ya-runtime-erigon].
    #[arg(long)]
    pub runtime: Option<PathBuf>,
    /// This binary, for the provider unit [default: /usr/local/bin/erigolem-provider].
    #[arg(long)]
    pub provider_bin: Option<PathBuf>,
    /// [default: /usr/sbin/nginx]
    #[arg(long)]
    pub nginx_bin: Option<PathBuf>,
    /// The main Nginx config (never written; used for `nginx -t`) [default: /etc/nginx/nginx.conf].
    #[arg(long)]
    pub nginx_conf: Option<PathBuf>,
    /// [default: /run/nginx.pid]
    #[arg(long)]
    pub nginx_pid: Option<PathBuf>,
    /// Holds `sites-available/` and `sites-enabled/` [default: /etc/nginx].
    #[arg(long)]
    pub nginx_dir: Option<PathBuf>,
    /// The runtime's gateway dir: `htpasswd/` and `sockets/` [default: /etc/nginx/erigolem].
    #[arg(long)]
    pub gateway_dir: Option<PathBuf>,
    /// Group of the password files, the Nginx workers' group; "" for none [default: www-data].
    #[arg(long)]
    pub password_group: Option<String>,
    /// Ports for dedicated instances, [start, end) [default: 40000].
    #[arg(long)]
    pub port_range_start: Option<u16>,
    /// [default: 41200]
    #[arg(long)]
    pub port_range_end: Option<u16>,
    /// Instances at once on this host [default: 32].
    #[arg(long)]
    pub max_instances: Option<u32>,
    /// yagna's plugin directory (golemsp reads `ya-*.json` there) [default: /usr/lib/yagna/plugins].
    #[arg(long)]
    pub plugins_dir: Option<PathBuf>,
    /// XDG_DATA_HOME of the runtime: its config is `<dir>/ya-runtime-erigon/ya-runtime-erigon.json`
    /// [default: /var/lib/erigolem-provider/share].
    #[arg(long)]
    pub xdg_data_home: Option<PathBuf>,
    /// [default: /etc/systemd/system]
    #[arg(long)]
    pub systemd_dir: Option<PathBuf>,
    /// `User=` of the units (unset: root).
    #[arg(long)]
    pub service_user: Option<String>,
    /// Price per hour in GLM (provider unit and preset) [default: 0.1].
    #[arg(long)]
    pub price_per_hour: Option<f64>,
    /// Market subnet of the provider unit [default: erigolem].
    #[arg(long)]
    pub subnet: Option<String>,
    /// Most nodes at once, for the provider unit [default: 4].
    #[arg(long)]
    pub capacity: Option<u32>,
    /// yagna's REST API; enables the yagna check [default for the unit: http://127.0.0.1:7465].
    #[arg(long)]
    pub yagna_url: Option<String>,
    /// The yagna binary; enables its version check.
    #[arg(long)]
    pub yagna_bin: Option<PathBuf>,
    /// Write a ya-provider preset file for the golemsp path.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub preset: Option<bool>,
    /// [default: /etc/erigolem/ya-provider-presets.json]
    #[arg(long)]
    pub preset_file: Option<PathBuf>,
    /// Requests per second per client IP (Nginx `limit_req`) [default: 50].
    #[arg(long)]
    pub rate_limit: Option<u32>,
}

macro_rules! merge {
    ($a:ident, $b:ident; $($f:ident),* $(,)?) => {
        Inputs { $($f: $a.$f.or($b.$f)),* }
    };
}

impl Inputs {
    /// Flags (`self`) over the config file's values.
    pub fn or(self, file: Inputs) -> Inputs {
        merge!(self, file; server_name, listen_port, tls_cert, tls_key, public_url, shared, shared_url,
            prune, shared_port_base, data_dir, erigon, erigon_version, anvil, runtime, provider_bin, nginx_bin,
            nginx_conf, nginx_pid, nginx_dir, gateway_dir, password_group, port_range_start,
            port_range_end, max_instances, plugins_dir, xdg_data_home, systemd_dir, service_user,
            price_per_hour, subnet, capacity, yagna_url, yagna_bin, preset, preset_file, rate_limit)
    }

    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Inputs, SetupError> {
        let text = std::fs::read_to_string(path).map_err(|source| SetupError::Io {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| SetupError::ConfigFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// These flags merged over `--config`'s file, if any.
    pub fn with_file(self, config: Option<&Path>) -> Result<Inputs, SetupError> {
        match config {
            Some(path) => Ok(self.or(Inputs::from_file(path)?)),
            None => Ok(self),
        }
    }
}

/// TLS material of the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The resolved inputs. Paths are as on the real machine (not yet under the prefix).
#[derive(Debug, Clone)]
pub struct Settings {
    pub server_name: String,
    pub listen_port: u16,
    pub tls: Option<Tls>,
    pub public_url: String,
    /// Shared nodes run here (a unit each), sorted.
    pub shared: Vec<Network>,
    /// Shared nodes run elsewhere: network → URL.
    pub shared_urls: Vec<(Network, String)>,
    pub prune: Prune,
    pub shared_port_base: u16,
    pub data_dir: PathBuf,
    pub erigon: PathBuf,
    /// The release of `erigon` (the newest known when it is not known).
    pub erigon_release: erigolem_engine::ErigonRelease,
    pub anvil: Option<PathBuf>,
    pub runtime: PathBuf,
    pub provider_bin: PathBuf,
    pub nginx_bin: PathBuf,
    pub nginx_conf: PathBuf,
    pub nginx_pid: PathBuf,
    pub nginx_dir: PathBuf,
    pub gateway_dir: PathBuf,
    pub password_group: Option<String>,
    pub port_range: (u16, u16),
    pub max_instances: u32,
    pub plugins_dir: PathBuf,
    pub xdg_data_home: PathBuf,
    pub systemd_dir: PathBuf,
    pub service_user: Option<String>,
    pub price_per_hour: f64,
    pub subnet: String,
    pub capacity: u32,
    pub yagna_url: Option<String>,
    pub yagna_bin: Option<PathBuf>,
    pub preset_file: Option<PathBuf>,
    pub rate_limit: u32,
}

fn missing(flag: &'static str) -> SetupError {
    SetupError::Missing { flag }
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> SetupError {
    SetupError::Invalid {
        flag,
        reason: reason.into(),
    }
}

fn path(flag: &'static str, value: Option<PathBuf>, default: &str) -> Result<PathBuf, SetupError> {
    let p = value.unwrap_or_else(|| PathBuf::from(default));
    absolute(flag, p)
}

/// `p` made absolute against the working directory (where it was given), and checked to be
/// writable into a config file.
fn absolute(flag: &'static str, p: PathBuf) -> Result<PathBuf, SetupError> {
    let p = erigolem_primitives::paths::absolute(&p).map_err(|e| invalid(flag, e.to_string()))?;
    let text = p.to_string_lossy();
    if text.contains(['\n', ';', '{', '}', '"', '\'', ' ', '#', '$']) {
        return Err(invalid(
            flag,
            format!("{text:?} contains characters that cannot go into a config file"),
        ));
    }
    Ok(p)
}

fn word(flag: &'static str, s: &str) -> Result<(), SetupError> {
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err(invalid(
            flag,
            format!("{s:?}: use letters, digits, '-', '.', '_'"),
        ));
    }
    Ok(())
}

/// `--erigon-version` parsed, or the newest release Erigolem knows.
fn erigon_release(text: Option<&str>) -> Result<erigolem_engine::ErigonRelease, SetupError> {
    let version = match text {
        Some(t) => erigolem_engine::ErigonVersion::parse(t).ok_or_else(|| {
            invalid(
                "--erigon-version",
                format!("{t:?} is not a version like 3.6.1"),
            )
        })?,
        None => {
            let (major, minor) = erigolem_engine::NEWEST_KNOWN;
            erigolem_engine::ErigonVersion {
                major,
                minor,
                patch: 0,
                modifier: None,
                commit: None,
            }
        }
    };
    erigolem_engine::ErigonRelease::new(version)
        .map_err(|e| invalid("--erigon-version", e.to_string()))
}

impl Inputs {
    /// Applies defaults and validates. A missing required value names its flag.
    pub fn resolve(self) -> Result<Settings, SetupError> {
        let server_name = self.server_name.ok_or_else(|| missing("--server-name"))?;
        word("--server-name", &server_name)?;
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(Tls {
                cert: absolute("--tls-cert", cert)?,
                key: absolute("--tls-key", key)?,
            }),
            (None, None) => None,
            (Some(_), None) => return Err(missing("--tls-key")),
            (None, Some(_)) => return Err(missing("--tls-cert")),
        };
        let listen_port = self
            .listen_port
            .unwrap_or(if tls.is_some() { 8443 } else { 8080 });
        let public_url = self.public_url.unwrap_or_else(|| {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{server_name}:{listen_port}")
        });
        let erigon_release = erigon_release(self.erigon_version.as_deref())?;
        let mut shared = self.shared.unwrap_or_default();
        shared.sort();
        shared.dedup();
        if shared.contains(&Network::Dev) {
            return Err(invalid(
                "--shared",
                "dev has no Erigon node; use --anvil (dedicated) or --shared-url dev=URL",
            ));
        }
        let prune = self.prune.unwrap_or_default();
        for network in &shared {
            let node = erigolem_engine::ErigonNode {
                network: *network,
                prune,
                datadir: Path::new("/"),
                ports: erigolem_engine::PortBlock { base: 0 },
                limits: &erigolem_primitives::RpcLimits::default(),
            };
            let engine = erigolem_engine::ErigonEngine {
                binary: PathBuf::from("erigon"),
                rpcdaemon: None,
            };
            engine
                .processes(&erigon_release, &node)
                .map_err(|e| invalid("--shared", e.to_string()))?;
        }
        let mut shared_urls = Vec::new();
        for item in self.shared_url.unwrap_or_default() {
            let (net, url) = item
                .split_once('=')
                .ok_or_else(|| invalid("--shared-url", format!("{item:?} is not network=url")))?;
            let net: Network = net
                .parse()
                .map_err(|_| invalid("--shared-url", format!("unknown network {net:?}")))?;
            if shared.contains(&net) || shared_urls.iter().any(|(n, _)| *n == net) {
                return Err(invalid("--shared-url", format!("{net} is given twice")));
            }
            shared_urls.push((net, url.to_owned()));
        }
        shared_urls.sort();
        let (start, end) = (
            self.port_range_start.unwrap_or(40_000),
            self.port_range_end.unwrap_or(41_200),
        );
        if end <= start {
            return Err(invalid(
                "--port-range-end",
                "must be above --port-range-start",
            ));
        }
        let password_group = match self.password_group {
            None => Some("www-data".to_owned()),
            Some(g) if g.is_empty() => None,
            Some(g) => {
                word("--password-group", &g)?;
                Some(g)
            }
        };
        if let Some(u) = &self.service_user {
            word("--service-user", u)?;
        }
        let subnet = self.subnet.unwrap_or_else(|| "erigolem".to_owned());
        word("--subnet", &subnet)?;
        let price_per_hour = self.price_per_hour.unwrap_or(0.1);
        if !(price_per_hour.is_finite() && price_per_hour >= 0.0) {
            return Err(invalid("--price-per-hour", "must be a number ≥ 0"));
        }
        let preset_file = if self.preset.unwrap_or(false) {
            Some(path(
                "--preset-file",
                self.preset_file,
                "/etc/erigolem/ya-provider-presets.json",
            )?)
        } else {
            None
        };
        Ok(Settings {
            server_name,
            listen_port,
            tls,
            public_url,
            shared,
            shared_urls,
            prune,
            shared_port_base: self.shared_port_base.unwrap_or(42_000),
            data_dir: path("--data-dir", self.data_dir, "/var/lib/erigolem")?,
            erigon: path("--erigon", self.erigon, "/usr/local/bin/erigon")?,
            erigon_release,
            anvil: self.anvil.map(|p| absolute("--anvil", p)).transpose()?,
            runtime: path(
                "--runtime",
                self.runtime,
                "/usr/local/bin/ya-runtime-erigon",
            )?,
            provider_bin: path(
                "--provider-bin",
                self.provider_bin,
                "/usr/local/bin/erigolem-provider",
            )?,
            nginx_bin: path("--nginx-bin", self.nginx_bin, "/usr/sbin/nginx")?,
            nginx_conf: path("--nginx-conf", self.nginx_conf, "/etc/nginx/nginx.conf")?,
            nginx_pid: path("--nginx-pid", self.nginx_pid, "/run/nginx.pid")?,
            nginx_dir: path("--nginx-dir", self.nginx_dir, "/etc/nginx")?,
            gateway_dir: path("--gateway-dir", self.gateway_dir, "/etc/nginx/erigolem")?,
            password_group,
            port_range: (start, end),
            max_instances: self.max_instances.unwrap_or(32),
            plugins_dir: path("--plugins-dir", self.plugins_dir, "/usr/lib/yagna/plugins")?,
            xdg_data_home: path(
                "--xdg-data-home",
                self.xdg_data_home,
                "/var/lib/erigolem-provider/share",
            )?,
            systemd_dir: path("--systemd-dir", self.systemd_dir, "/etc/systemd/system")?,
            service_user: self.service_user,
            price_per_hour,
            subnet,
            capacity: self.capacity.unwrap_or(4),
            yagna_url: self.yagna_url,
            yagna_bin: self
                .yagna_bin
                .map(|p| absolute("--yagna-bin", p))
                .transpose()?,
            preset_file,
            rate_limit: self.rate_limit.unwrap_or(50).max(1),
        })
    }
}
