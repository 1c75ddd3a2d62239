//! Provider machine setup for `erigolem-provider setup | check | uninstall`: the golemsp plugin
//! descriptor, the runtime config, an Nginx site (its own file, nginx.conf untouched), systemd units
//! for shared Erigon nodes and the provider agent, an optional ya-provider preset; a manifest of what
//! was written so that uninstall removes exactly that; and a doctor that checks every part.

use std::path::PathBuf;

pub mod check;
pub mod cli;
pub mod inputs;
pub mod install;
pub mod plan;

pub use check::{check, CheckOptions, CheckResult, Status};
pub use inputs::{Inputs, Settings};
pub use install::{setup, uninstall, Manifest, SetupOptions, UninstallOptions};
pub use plan::{rooted, Entry, Plan};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("missing {flag}: pass it as a flag or set it in the --config file")]
    Missing { flag: &'static str },
    #[error("{flag}: {reason}")]
    Invalid { flag: &'static str, reason: String },
    #[error("{path}: {reason}")]
    ConfigFile { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no manifest at {path}: setup has not run under this prefix, nothing to uninstall")]
    NoManifest { path: PathBuf },
}
