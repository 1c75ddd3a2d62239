//! Several `erigolem serve --backend golem` replicas on one PostgreSQL database and one requestor
//! yagna, in the local Golem network, with one provider running `erigolem-provider run`: what
//! the replica tests and the takeover benchmark start. Every replica gets its own data dir and
//! port, and all share the node-password key file and one public URL (the one a load balancer
//! would have: the first replica's address; the others allow `127.0.0.1` as a host).

use std::path::PathBuf;

use crate::golem::{start_provider_agent, GolemNet, GolemNetConfig};
use crate::postgres::Postgres;
use crate::serve::ServeProcess;
use crate::{ChildGuard, Provider};

/// The provider's terms: 36 GLM/h (a debit note shows money moving within seconds) and 0.5 GLM
/// to start.
pub const PRICE_PER_HOUR: &str = "36";
pub const START_FEE: &str = "0.5";

/// What the replicas run on.
#[derive(Debug)]
pub struct ReplicaStack {
    pub net: GolemNet,
    pub pg: Postgres,
    pub database_url: String,
    pub machine: Provider,
    pub key_file: PathBuf,
    /// `http://127.0.0.1:<port of replica 0>`: the public URL of every replica.
    pub public_url: String,
    public_port: u16,
    subnet: String,
    dir: tempfile::TempDir,
    _agent: ChildGuard,
}

impl ReplicaStack {
    /// A Golem network with one requestor and one provider selling `capacity` nodes at once, a
    /// PostgreSQL cluster, and nothing started on them yet.
    pub async fn start(capacity: u16) -> Self {
        let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
        let pg = Postgres::start().await;
        let machine = Provider::start(capacity, |_| {}).await;
        let dir = tempfile::Builder::new()
            .prefix("erigolem-replicas-")
            .tempdir()
            .unwrap();
        let subnet = "replicas".to_owned();
        let capacity = capacity.to_string();
        let agent = start_provider_agent(
            net.provider(0),
            &machine,
            &dir.path().join("agent"),
            &subnet,
            &[
                "--price-per-hour",
                PRICE_PER_HOUR,
                "--start-fee",
                START_FEE,
                "--debit-note-interval",
                "2",
                "--capacity",
                &capacity,
            ],
        );
        let public_port = crate::free_port();
        Self {
            database_url: pg.url.clone(),
            pg,
            net,
            machine,
            key_file: dir.path().join("shared.key"),
            public_url: format!("http://127.0.0.1:{public_port}"),
            public_port,
            subnet,
            dir,
            _agent: agent,
        }
    }

    /// The flags every replica gets.
    pub fn args(&self) -> Vec<String> {
        let r = self.net.requestor(0);
        [
            "--backend",
            "golem",
            "--database-url",
            &self.database_url,
            "--key-file",
            &self.key_file.display().to_string(),
            "--yagna-url",
            &r.api_url,
            "--subnet",
            &self.subnet,
            "--chain-id",
            "1",
            "--public-url",
            &self.public_url,
            "--allowed-host",
            "127.0.0.1",
            "--rate-limit",
            "10000",
            "--max-nodes-per-user",
            "10",
            "--budget",
            "10",
            "--payment-slack",
            "0.1",
            "--max-price-per-hour",
            "none",
            "--max-start-fee",
            "none",
            "--deal-timeout",
            "15",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Replica `i` (its data dir `r<i>`): replica 0 on the public URL's port.
    pub async fn replica(&self, i: usize) -> ServeProcess {
        let bin = crate::workspace_bin("erigolem");
        let data = self.dir.path().join(format!("r{i}"));
        let env = [("YAGNA_APPKEY", self.net.requestor(0).app_key.as_str())];
        if i == 0 {
            ServeProcess::start_on(&bin, &data, self.public_port, &self.args(), &env).await
        } else {
            ServeProcess::start(&bin, &data, &self.args(), &env).await
        }
    }

    /// Replica `i` started again after it was killed or stopped (same data dir and port).
    pub async fn restart(&self, i: usize, old: &ServeProcess) -> ServeProcess {
        let bin = crate::workspace_bin("erigolem");
        let env = [("YAGNA_APPKEY", self.net.requestor(0).app_key.as_str())];
        let port: u16 = old
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap();
        let _ = i;
        ServeProcess::start_on(&bin, &old.data_dir, port, &self.args(), &env).await
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
