//! The `setup`, `check` and `uninstall` subcommands' arguments and bodies (the binary stays thin).

use std::path::{Path, PathBuf};

use crate::check::{self, CheckOptions};
use crate::inputs::Inputs;
use crate::install::{self, SetupOptions, UninstallOptions};
use crate::plan::Plan;
use crate::SetupError;

/// `erigolem-provider setup`.
#[derive(Debug, Clone, clap::Args)]
pub struct SetupArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// A TOML file with any of the flags as keys (`server-name = "…"`); flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Root every path under this directory (tests, staging).
    #[arg(long, default_value = "/")]
    pub prefix: PathBuf,
    /// Print every file (path and content) and command instead of writing or running anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Overwrite files that setup did not write or that were changed since.
    #[arg(long)]
    pub force: bool,
}

/// `erigolem-provider check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value = "/")]
    pub prefix: PathBuf,
    /// Machine-readable results.
    #[arg(long)]
    pub json: bool,
    /// yagna app key for `GET /me`.
    #[arg(long, env = "YAGNA_APPKEY", hide_env_values = true)]
    pub app_key: Option<String>,
}

/// `erigolem-provider uninstall`.
#[derive(Debug, Clone, clap::Args)]
pub struct UninstallArgs {
    #[arg(long, default_value = "/")]
    pub prefix: PathBuf,
    /// Also delete the chain data dirs (never deleted otherwise).
    #[arg(long)]
    pub purge_data: bool,
    /// Print what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

fn plan(inputs: Inputs, config: Option<&Path>, prefix: &Path) -> Result<Plan, SetupError> {
    // Relative paths mean the directory setup was started in.
    let prefix = erigolem_primitives::paths::absolute(prefix).map_err(|e| SetupError::Invalid {
        flag: "--prefix",
        reason: e.to_string(),
    })?;
    let mut inputs = inputs.with_file(config)?;
    if inputs.erigon_version.is_none() && inputs.shared.as_ref().is_some_and(|s| !s.is_empty()) {
        // The shared nodes' units carry the command line of the release installed, if any.
        let erigon = inputs
            .erigon
            .clone()
            .unwrap_or_else(|| PathBuf::from("/usr/local/bin/erigon"));
        inputs.erigon_version = erigon_version(&crate::plan::rooted(&prefix, &erigon));
    }
    let settings = inputs.resolve()?;
    Ok(Plan::new(settings, &prefix))
}

/// `erigon --version`'s release, if the binary runs and answers within 10 s.
fn erigon_version(binary: &Path) -> Option<String> {
    let mut child = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().ok()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    erigolem_engine::ErigonVersion::from_version_output(&out).map(|v| v.to_string())
}

/// Runs setup; prints the report; the exit code (1: something was skipped as a conflict).
pub fn setup(args: SetupArgs) -> Result<i32, SetupError> {
    let plan = plan(args.inputs, args.config.as_deref(), &args.prefix)?;
    let outcome = install::setup(
        &plan,
        SetupOptions {
            dry_run: args.dry_run,
            force: args.force,
        },
    )?;
    print!("{}", outcome.report);
    Ok(i32::from(outcome.conflicts > 0))
}

/// Runs the checks; prints the table or JSON; the exit code (1: something failed).
pub async fn check(args: CheckArgs) -> Result<i32, SetupError> {
    let plan = plan(args.inputs, args.config.as_deref(), &args.prefix)?;
    let results = check::check(
        &plan,
        &CheckOptions {
            app_key: args.app_key,
        },
    )
    .await;
    let ok = check::all_ok(&results);
    if args.json {
        let value = serde_json::json!({ "ok": ok, "checks": results });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print!("{}", check::table(&results));
    }
    Ok(i32::from(!ok))
}

/// Runs uninstall; prints what it removed and kept.
pub fn uninstall(args: UninstallArgs) -> Result<i32, SetupError> {
    let report = install::uninstall(
        &args.prefix,
        UninstallOptions {
            dry_run: args.dry_run,
            purge_data: args.purge_data,
        },
    )?;
    print!("{report}");
    Ok(0)
}
