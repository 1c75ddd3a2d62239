//! The Erigon releases the double can be: `FAKE_ERIGON_VERSION` (e.g. `3.3.10`, `3.4.2`, `3.6.1`,
//! `2.60.10`) selects that release's flags, chains, error output and listeners. Written from
//! Erigon's own source and changelog (see docs/erigon-flags.md for each row's citation), not from
//! what the runtime passes, so that the runtime's argv is checked against the release, not itself.

/// A release number; an unparsable `FAKE_ERIGON_VERSION` is still printed by `--version` as given
/// (to test how the runtime copes) and otherwise behaves as the newest release.
#[derive(Debug, Clone)]
pub(crate) struct Release {
    pub(crate) number: (u32, u32, u32),
}

/// The release the double models when `FAKE_ERIGON_VERSION` is unset.
pub(crate) const DEFAULT_VERSION: &str = "3.6.1";

impl Release {
    pub(crate) fn new(text: &str) -> Self {
        let number = parse(text).unwrap_or((3, 6, 1));
        Self { number }
    }

    fn at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        self.number >= (major, minor, patch)
    }

    pub(crate) fn erigon2(&self) -> bool {
        self.number.0 == 2
    }

    /// devp2p listeners: one per eth protocol version before 3.5 (ports picked from
    /// `--p2p.allowed-ports`, PR #6263); one shared server on `--port` from 3.5 (PR #21335).
    pub(crate) fn p2p_listeners(&self) -> usize {
        if self.at_least(3, 5, 0) {
            1
        } else {
            2
        }
    }

    /// The embedded MCP server (PR #18623; `--mcp.disable` in the v3.4 docs), on by default.
    pub(crate) fn mcp(&self) -> bool {
        self.at_least(3, 4, 0)
    }

    /// `--rpc.blockrange.limit`: added by PR #18798 (default 0), default 1,000 from PR #19721,
    /// shipped in 3.4 (cherry-pick PR #20784, 3.4.3).
    pub(crate) fn block_range_limit(&self) -> Option<u64> {
        if self.at_least(3, 4, 3) {
            Some(1_000)
        } else if self.at_least(3, 4, 0) {
            Some(0)
        } else {
            None
        }
    }

    /// `--rpc.logs.maxresults` (PR #19721, 3.4.3; default 20,000) and `--rpc.max.concurrency`
    /// (PR #19905; "not present in release/3.3", docs PR #20309).
    pub(crate) fn logs_max_results(&self) -> Option<u64> {
        self.at_least(3, 4, 3).then_some(20_000)
    }

    /// Usage errors: urfave/cli's own output up to 3.3, `node/cli/helpers.go`'s OnUsageError after.
    pub(crate) fn terse_usage_errors(&self) -> bool {
        self.at_least(3, 4, 0)
    }

    pub(crate) fn prune_modes(&self) -> &'static [&'static str] {
        if self.erigon2() {
            &[]
        } else if self.at_least(3, 1, 0) {
            &["full", "archive", "minimal", "blocks"]
        } else {
            &["full", "archive", "minimal"]
        }
    }

    /// `--chain` values. Holesky was removed by PR #17685 (3.3); Hoodi arrived after Erigon 2.
    pub(crate) fn chains(&self) -> &'static [(&'static str, u64)] {
        const E3: &[(&str, u64)] = &[
            ("mainnet", 1),
            ("sepolia", 11_155_111),
            ("hoodi", 560_048),
            ("dev", 1337),
        ];
        const E3_EARLY: &[(&str, u64)] = &[
            ("mainnet", 1),
            ("sepolia", 11_155_111),
            ("holesky", 17_000),
            ("hoodi", 560_048),
            ("dev", 1337),
        ];
        const E2: &[(&str, u64)] = &[
            ("mainnet", 1),
            ("sepolia", 11_155_111),
            ("holesky", 17_000),
            ("dev", 1337),
        ];
        if self.erigon2() {
            E2
        } else if self.at_least(3, 3, 0) {
            E3
        } else {
            E3_EARLY
        }
    }

    /// Flags taking a value (`--name value` or `--name=value`) of `erigon`.
    pub(crate) fn value_flags(&self) -> Vec<&'static str> {
        let mut flags = vec![
            "datadir",
            "chain",
            "networkid",
            "port",
            "maxpeers",
            "nat",
            "http.addr",
            "http.port",
            "http.api",
            "http.vhosts",
            "http.corsdomain",
            "ws.port",
            "authrpc.addr",
            "authrpc.port",
            "authrpc.jwtsecret",
            "authrpc.vhosts",
            "torrent.port",
            "torrent.download.rate",
            "torrent.upload.rate",
            "private.api.addr",
            "log.dir.path",
            "verbosity",
            "db.size.limit",
            "metrics.addr",
            "metrics.port",
            "p2p.protocol",
            "bootnodes",
            "staticpeers",
            "caplin.discovery.addr",
            "caplin.discovery.port",
            "caplin.discovery.tcpport",
            "sentinel.addr",
            "sentinel.port",
            "rpc.batch.limit",
            "rpc.batch.concurrency",
            "rpc.gascap",
            "db.read.concurrency",
            "txpool.api.addr",
            "config",
        ];
        if self.erigon2() {
            flags.push("prune");
        } else {
            flags.extend([
                "prune.mode",
                "beacon.api.addr",
                "beacon.api.port",
                "rpc.returndata.limit",
            ]);
        }
        if self.p2p_listeners() > 1 {
            flags.push("p2p.allowed-ports");
        }
        if self.mcp() {
            flags.extend(["mcp.addr", "mcp.port"]);
        }
        if self.block_range_limit().is_some() {
            flags.push("rpc.blockrange.limit");
        }
        if self.logs_max_results().is_some() {
            flags.extend(["rpc.logs.maxresults", "rpc.max.concurrency"]);
        }
        flags
    }

    /// Boolean flags (`--name`, `--name=true|false`) of `erigon`.
    pub(crate) fn bool_flags(&self) -> Vec<&'static str> {
        let mut flags = vec![
            "http",
            "ws",
            "externalcl",
            "metrics",
            "nodiscover",
            "no-downloader",
            "http.compression",
            "ws.compression",
            "txpool.disable",
        ];
        if self.mcp() {
            flags.push("mcp.disable");
        }
        if self.erigon2() {
            flags.push("internalcl");
        }
        flags
    }

    /// `rpcdaemon`'s value flags (the Erigon 2 split layout).
    pub(crate) fn rpcdaemon_value_flags(&self) -> Vec<&'static str> {
        let mut flags = vec![
            "datadir",
            "private.api.addr",
            "txpool.api.addr",
            "http.addr",
            "http.port",
            "http.api",
            "http.vhosts",
            "http.corsdomain",
            "ws.port",
            "rpc.batch.limit",
            "rpc.batch.concurrency",
            "db.read.concurrency",
            "verbosity",
        ];
        if self.block_range_limit().is_some() {
            flags.push("rpc.blockrange.limit");
        }
        if self.logs_max_results().is_some() {
            flags.extend(["rpc.logs.maxresults", "rpc.max.concurrency"]);
        }
        flags
    }

    pub(crate) fn rpcdaemon_bool_flags(&self) -> Vec<&'static str> {
        vec![
            "http",
            "ws",
            "http.compression",
            "ws.compression",
            "healthcheck",
        ]
    }
}

/// `3.6.1`, `3.4.0-dev`, `v2.60.10` → the number; anything else → `None`.
fn parse(text: &str) -> Option<(u32, u32, u32)> {
    let text = text.trim().trim_start_matches('v');
    let number = text.split('-').next()?;
    let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}
