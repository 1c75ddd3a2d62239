//! Which Erigon release a binary is, and what its command line accepts.
//!
//! Erigon prints its version through urfave/cli: `<app name> version <semver>[-<modifier>][-<commit8>]`
//! (`cmd/utils/app/make_app.go` names the app `erigon`; `node/cli/helpers.go` sets
//! `app.Version = version.VersionWithCommit(GitCommit)`, built in `db/version/app.go` as
//! `Major.Minor.Micro`, `-Modifier` when set, `-` and the first 8 characters of the commit), e.g.
//! `erigon version 3.2.2-8d890075` or `erigon version 3.4.0-dev-5da2eae7`. Older builds name the
//! app after the binary file, so only the word after `version` is read.
//!
//! The flag sets per release are in docs/erigon-flags.md with their sources; [`FlagSet::of`] is that
//! table as code, and the tests check each row against `testing/fake-erigon`'s model of the release.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use erigolem_primitives::{Network, Prune};
use serde::{Deserialize, Serialize};

/// The newest release line whose command line this runtime knows. A newer binary gets this line's
/// flags, with a warning (flags are rarely removed; when they are, Erigon refuses to start and says
/// which one, and the node fails with that reason).
pub const NEWEST_KNOWN: (u32, u32) = (3, 6);

/// An Erigon release number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErigonVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// `dev`, `beta1`, `rc2`, … (absent in releases).
    pub modifier: Option<String>,
    /// The first characters of the git commit, when the build recorded it.
    pub commit: Option<String>,
}

impl fmt::Display for ErigonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(m) = &self.modifier {
            write!(f, "-{m}")?;
        }
        Ok(())
    }
}

/// Why a binary's version could not be used.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("`{} --version` could not be run: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("`{} --version` failed ({status}): {output}", binary.display())]
    Failed {
        binary: PathBuf,
        status: String,
        output: String,
    },
    #[error("`{} --version` did not answer within {} s", binary.display(), timeout.as_secs())]
    Timeout { binary: PathBuf, timeout: Duration },
    #[error("`{} --version` printed {output:?}: not an Erigon version (expected e.g. \"erigon version 3.2.2-8d890075\")", binary.display())]
    Unparseable { binary: PathBuf, output: String },
    #[error("Erigon {version} is not supported: {reason}")]
    Unsupported {
        version: ErigonVersion,
        reason: &'static str,
    },
}

impl ErigonVersion {
    /// Parses a version as Erigon prints it after `version`: `3.6.1`, `3.6.1-a1b2c3d4`,
    /// `3.4.0-dev-5da2eae7`, `v3.0.12`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().strip_prefix('v').unwrap_or(text.trim());
        let (number, rest) = match text.split_once('-') {
            Some((n, r)) => (n, Some(r)),
            None => (text, None),
        };
        let mut parts = number.split('.');
        let mut next = || -> Option<u32> {
            let p = parts.next()?;
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        };
        let (major, minor, patch) = (next()?, next()?, next()?);
        if parts.next().is_some() {
            return None;
        }
        let mut suffixes: Vec<&str> = rest.map(|r| r.split('-').collect()).unwrap_or_default();
        if suffixes
            .iter()
            .any(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'))
        {
            return None;
        }
        // `VersionWithCommit` appends exactly the first 8 characters of the commit.
        let is_commit = |s: &&str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let commit = match suffixes.last() {
            Some(last) if is_commit(last) => suffixes.pop().map(str::to_owned),
            _ => None,
        };
        if suffixes.len() > 1 {
            return None;
        }
        Some(Self {
            major,
            minor,
            patch,
            modifier: suffixes.pop().map(str::to_owned),
            commit,
        })
    }

    /// Reads `erigon --version`'s output: the word after `version` on the first line that has one.
    pub fn from_version_output(output: &str) -> Option<Self> {
        output.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "version")?;
            Self::parse(words.next()?)
        })
    }

    fn at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        (self.major, self.minor, self.patch) >= (major, minor, patch)
    }
}

/// Runs `binary --version` (bounded by `timeout`) and parses what it prints.
pub async fn detect(binary: &Path, timeout: Duration) -> Result<ErigonVersion, VersionError> {
    let output = run_version(binary, timeout).await?;
    ErigonVersion::from_version_output(&output).ok_or_else(|| VersionError::Unparseable {
        binary: binary.to_owned(),
        output: output.trim().chars().take(200).collect(),
    })
}

/// `binary --version`'s stdout (stderr too when it says nothing on stdout); an error with what it
/// printed when it fails, crashes or hangs.
pub async fn run_version(binary: &Path, timeout: Duration) -> Result<String, VersionError> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => {
            return Err(VersionError::Timeout {
                binary: binary.to_owned(),
                timeout,
            })
        }
        Ok(Err(source)) => {
            return Err(VersionError::Spawn {
                binary: binary.to_owned(),
                source,
            })
        }
        Ok(Ok(out)) => out,
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().chain(stdout.lines()).take(10).collect();
        return Err(VersionError::Failed {
            binary: binary.to_owned(),
            status: out.status.to_string(),
            output: tail.join("\n"),
        });
    }
    Ok(if stdout.trim().is_empty() {
        stderr
    } else {
        stdout
    })
}

/// How an Erigon release is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Erigon 2: `--prune=<letters>`, usually with a separate `rpcdaemon`.
    Erigon2,
    /// Erigon 3: `--prune.mode`, embedded RPC, embedded consensus client (Caplin).
    Erigon3,
}

/// What one Erigon release's command line accepts, as far as the runtime uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlagSet {
    pub family: Family,
    /// devp2p listeners: 2 before 3.5 (one per eth protocol version, ports from
    /// `--p2p.allowed-ports`), 1 from 3.5 on (one shared server on `--port`; the flag is gone).
    pub p2p_listeners: u8,
    /// Values of `--prune.mode` (Erigon 3), or the modes the runtime maps onto `--prune` (Erigon 2).
    pub prune_modes: &'static [Prune],
    /// Chains of `--chain` the runtime offers with it.
    pub chains: &'static [Network],
    /// The embedded MCP server (`--mcp.addr`, `--mcp.port`, `--mcp.disable`), on by default.
    pub mcp: bool,
    /// `--beacon.api.port` (Caplin's beacon API).
    pub beacon_api: bool,
    /// `--rpc.blockrange.limit`.
    pub block_range_limit: bool,
    /// `--rpc.logs.maxresults`.
    pub logs_max_results: bool,
    /// `--rpc.max.concurrency`.
    pub max_concurrency: bool,
}

const TOO_OLD: &str = "releases before Erigon 2.60 (the last Erigon 2 line) are not supported";
const E3_CHAINS: &[Network] = &[Network::Mainnet, Network::Sepolia, Network::Hoodi];
/// Hoodi launched in 2025, after the last Erigon 2 release.
const E2_CHAINS: &[Network] = &[Network::Mainnet, Network::Sepolia];
const PRUNE_3_0: &[Prune] = &[Prune::Full, Prune::Archive, Prune::Minimal];
const PRUNE_3_1: &[Prune] = &[Prune::Full, Prune::Archive, Prune::Minimal, Prune::Blocks];
const PRUNE_2: &[Prune] = &[Prune::Full, Prune::Archive];

impl FlagSet {
    /// The flag set of `version`, and a warning when it is newer than [`NEWEST_KNOWN`].
    pub fn of(version: &ErigonVersion) -> Result<(Self, Option<String>), VersionError> {
        let unsupported = |reason| VersionError::Unsupported {
            version: version.clone(),
            reason,
        };
        let v = version;
        let flags = match v.major {
            // 2021.x–2022.x: calendar versions, before the Erigon 2 command line settled.
            0 | 1 | 2000.. => return Err(unsupported(TOO_OLD)),
            // Caplin's flags were `--lightclient.discovery.*` as late as 2.53 (issue #8599): only
            // the last Erigon 2 line, 2.60, is run.
            2 if v.minor < 60 => return Err(unsupported(TOO_OLD)),
            2 => Self {
                family: Family::Erigon2,
                p2p_listeners: 2,
                prune_modes: PRUNE_2,
                chains: E2_CHAINS,
                mcp: false,
                beacon_api: false,
                block_range_limit: false,
                logs_max_results: false,
                max_concurrency: false,
            },
            3 => Self {
                family: Family::Erigon3,
                p2p_listeners: if v.at_least(3, 5, 0) { 1 } else { 2 },
                prune_modes: if v.at_least(3, 1, 0) {
                    PRUNE_3_1
                } else {
                    PRUNE_3_0
                },
                chains: E3_CHAINS,
                mcp: v.at_least(3, 4, 0),
                beacon_api: true,
                block_range_limit: v.at_least(3, 4, 0),
                logs_max_results: v.at_least(3, 4, 3),
                max_concurrency: v.at_least(3, 4, 3),
            },
            _ => Self::newest(),
        };
        let (newest_major, newest_minor) = NEWEST_KNOWN;
        let warning = ((v.major, v.minor) > NEWEST_KNOWN).then(|| {
            format!(
                "Erigon {v} is newer than the newest release this runtime knows ({newest_major}.{newest_minor}): \
                 it runs with {newest_major}.{newest_minor}'s command line"
            )
        });
        Ok((
            if warning.is_some() {
                Self::newest()
            } else {
                flags
            },
            warning,
        ))
    }

    /// The newest known line's flags.
    fn newest() -> Self {
        let (major, minor) = NEWEST_KNOWN;
        Self::of(&ErigonVersion {
            major,
            minor,
            patch: 0,
            modifier: None,
            commit: None,
        })
        .map(|(f, _)| f)
        .unwrap_or_else(|_| unreachable!("the newest known release is supported"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn v(s: &str) -> ErigonVersion {
        ErigonVersion::parse(s).unwrap_or_else(|| panic!("{s} does not parse"))
    }

    #[test]
    fn erigon_version_output_parses() {
        let cases = [
            (
                "erigon version 3.2.2-8d890075\n",
                (3, 2, 2),
                None,
                Some("8d890075"),
            ),
            ("erigon version 3.6.1\n", (3, 6, 1), None, None),
            (
                "erigon version 3.4.0-dev-5da2eae7\n",
                (3, 4, 0),
                Some("dev"),
                Some("5da2eae7"),
            ),
            (
                "erigon version 3.0.0-beta2\n",
                (3, 0, 0),
                Some("beta2"),
                None,
            ),
            (
                "erigon-3.3 version 3.3.10-01a3ec91\n",
                (3, 3, 10),
                None,
                Some("01a3ec91"),
            ),
            (
                "erigon version 2.60.10-ab12cd34\n",
                (2, 60, 10),
                None,
                Some("ab12cd34"),
            ),
        ];
        for (out, (major, minor, patch), modifier, commit) in cases {
            let got = ErigonVersion::from_version_output(out).unwrap();
            assert_eq!(
                (got.major, got.minor, got.patch),
                (major, minor, patch),
                "{out}"
            );
            assert_eq!(got.modifier.as_deref(), modifier, "{out}");
            assert_eq!(got.commit.as_deref(), commit, "{out}");
        }
        assert_eq!(v("3.4.0-dev-5da2eae7").to_string(), "3.4.0-dev");
    }

    #[test]
    fn garbage_is_not_a_version() {
        for out in [
            "",
            "erigon version\n",
            "erigon version three\n",
            "erigon version 3.6\n",
            "erigon version 3.6.1.2\n",
            "erigon version 3.6.x\n",
            "erigon version 3.6.1-a-b-c\n",
            "erigon version 3.6.1-$(rm)\n",
            "Segmentation fault\n",
            "anvil Version: 1.7.1\n",
        ] {
            assert_eq!(ErigonVersion::from_version_output(out), None, "{out:?}");
        }
    }

    #[test]
    fn flag_sets_follow_the_release_table() {
        // (version, p2p listeners, mcp, block range, logs max, max concurrency, blocks mode)
        let table = [
            ("3.0.12", 2, false, false, false, false, false),
            ("3.1.0", 2, false, false, false, false, true),
            ("3.3.10", 2, false, false, false, false, true),
            ("3.4.2", 2, true, true, false, false, true),
            ("3.4.3", 2, true, true, true, true, true),
            ("3.5.0", 1, true, true, true, true, true),
            ("3.6.1", 1, true, true, true, true, true),
        ];
        for (version, p2p, mcp, range, logs, conc, blocks) in table {
            let (f, warning) = FlagSet::of(&v(version)).unwrap();
            assert_eq!(warning, None, "{version}");
            assert_eq!(f.family, Family::Erigon3, "{version}");
            assert_eq!(f.p2p_listeners, p2p, "{version}");
            assert_eq!(f.mcp, mcp, "{version}");
            assert_eq!(f.block_range_limit, range, "{version}");
            assert_eq!(f.logs_max_results, logs, "{version}");
            assert_eq!(f.max_concurrency, conc, "{version}");
            assert_eq!(f.prune_modes.contains(&Prune::Blocks), blocks, "{version}");
        }
        let (e2, _) = FlagSet::of(&v("2.60.10")).unwrap();
        assert_eq!(e2.family, Family::Erigon2);
        assert!(!e2.chains.contains(&Network::Hoodi));
    }

    #[test]
    fn a_newer_release_gets_the_newest_flags_and_a_warning() {
        let (newest, _) = FlagSet::of(&v("3.6.0")).unwrap();
        for version in ["3.7.0-dev-abcdef12", "3.9.4", "4.0.0"] {
            let (f, warning) = FlagSet::of(&v(version)).unwrap();
            assert_eq!(f, newest, "{version}");
            let warning = warning.unwrap();
            assert!(
                warning.contains("newer than the newest release this runtime knows (3.6)"),
                "{warning}"
            );
        }
    }

    #[test]
    fn old_releases_are_refused_with_a_reason() {
        for version in ["2.59.0", "2.53.1", "1.9.0", "2022.2.2-beta"] {
            let err = FlagSet::of(&v(version)).unwrap_err();
            assert!(
                err.to_string().contains("not supported"),
                "{version}: {err}"
            );
        }
    }
}
