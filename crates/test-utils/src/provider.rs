//! A provider machine in a temp dir: a real Nginx, a runtime config file where the SDK looks for it,
//! and the `ya-runtime-erigon` binary to drive like an exe-unit.

use std::path::{Path, PathBuf};

use erigolem_engine::{AnvilEngine, ErigonEngine};
use erigolem_node_service::{Engines, Limits, PortRange, RuntimeConfig};
use erigolem_runtime_client::RuntimeBinary;

use crate::{anvil_bin, free_port_block, workspace_bin, Nginx};

#[derive(Debug)]
pub struct Provider {
    pub nginx: Nginx,
    pub config: RuntimeConfig,
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Provider {
    /// Nginx, anvil for `dev`, fake-erigon for the other networks, room for `instances` dedicated
    /// instances; `customize` may change the config before it is written.
    pub async fn start(instances: u16, customize: impl FnOnce(&mut RuntimeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let nginx = Nginx::start(&root.join("nginx")).await;
        let len = erigolem_engine::PortBlock::LEN * instances;
        let base = free_port_block(len);
        let mut config = RuntimeConfig {
            data_dir: root.join("data"),
            port_range: PortRange {
                start: base,
                end: base + len,
            },
            public_url: nginx.base_url(),
            nginx: nginx.gateway.clone(),
            engines: Engines {
                erigon: Some(ErigonEngine {
                    binary: workspace_bin("fake-erigon"),
                    rpcdaemon: None,
                }),
                anvil: Some(AnvilEngine {
                    binary: anvil_bin(),
                    block_time: 1,
                }),
            },
            shared: Default::default(),
            limits: Limits {
                start_timeout_secs: 30,
                stop_grace_secs: 5,
                max_restarts: 2,
                ..Limits::default()
            },
            guard: Default::default(),
            rpc_limits: erigolem_node_service::dedicated_rpc_limits(),
            health: Default::default(),
        };
        customize(&mut config);
        let provider = Self {
            nginx,
            config,
            root,
            _dir: dir,
        };
        provider.write_config();
        provider
    }

    /// Writes the config where the SDK reads it: `$XDG_DATA_HOME/ya-runtime-erigon/ya-runtime-erigon.json`.
    pub fn write_config(&self) {
        let path = self.config_path();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&self.config).unwrap()).unwrap();
    }

    pub fn config_path(&self) -> PathBuf {
        self.root
            .join("xdg/ya-runtime-erigon/ya-runtime-erigon.json")
    }

    /// The runtime binary for one activity, with its own work dir.
    pub fn runtime(&self, activity: &str) -> RuntimeBinary {
        RuntimeBinary::new(
            workspace_bin("ya-runtime-erigon"),
            self.root.join("work").join(activity),
        )
        .env("XDG_DATA_HOME", self.root.join("xdg"))
        .env("RUST_LOG", "info")
        // A failed start ends in the SDK's panic; its backtrace would bury the reason.
        .env("RUST_BACKTRACE", "0")
    }

    pub fn instance_dir(&self, name: &str) -> PathBuf {
        self.config.data_dir.join("instances").join(name)
    }

    /// Names of the instances that have a gateway entry (a password file Nginx reads).
    pub fn gateway_entries(&self) -> Vec<String> {
        list(&self.nginx.gateway.dir.join("htpasswd"))
    }

    /// Names in the instances directory.
    pub fn instance_dirs(&self) -> Vec<String> {
        list(&self.config.data_dir.join("instances"))
    }

    /// Files in the sockets directory (the instances' endpoint guards).
    pub fn sockets(&self) -> Vec<String> {
        list(&self.nginx.gateway.dir.join("sockets"))
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
