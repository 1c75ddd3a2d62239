//! `erigolem-provider run`: the agent (erigolem-provider-agent) with real exe-units
//! (erigolem-exe-unit) driving `ya-runtime-erigon`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use erigolem_provider_agent::misbehaviour::Misbehaviour;
use erigolem_provider_agent::{
    ActivityRunner, ActivityStart, AgentConfig, Pricing, RunningActivity, ServedOffer,
};
use erigolem_runtime_client::RuntimeBinary;
use erigolem_yagna::Yagna;

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The provider's yagna REST API.
    #[arg(long, env = "YAGNA_API_URL", default_value = "http://127.0.0.1:7465")]
    yagna_url: url::Url,
    /// An app key of that yagna (`yagna app-key create erigolem`).
    #[arg(long, env = "YAGNA_APPKEY", hide_env_values = true)]
    app_key: String,
    /// That yagna's service bus, where exe-units bind their activities.
    #[arg(long, env = "GSB_URL", default_value = "tcp://127.0.0.1:7464")]
    gsb_url: String,
    /// The `ya-runtime-erigon` binary (default: next to this one).
    #[arg(long, env = "ERIGOLEM_RUNTIME")]
    runtime: Option<PathBuf>,
    /// Where activities' work dirs and the agent's state live.
    #[arg(
        long,
        env = "ERIGOLEM_PROVIDER_DATA_DIR",
        default_value = ".erigolem-provider"
    )]
    data_dir: PathBuf,
    /// Market subnet: only requestors in the same subnet see the offer.
    #[arg(long, env = "ERIGOLEM_SUBNET", default_value = "erigolem")]
    subnet: String,
    /// GLM per hour of a running node.
    #[arg(long, env = "ERIGOLEM_PRICE_PER_HOUR", default_value_t = 0.1)]
    price_per_hour: f64,
    /// GLM charged once per started node.
    #[arg(long, env = "ERIGOLEM_START_FEE", default_value_t = 0.0)]
    start_fee: f64,
    /// GLM per JSON-RPC request a node's endpoint answered (0: requests are not priced). The
    /// offer then lists `golem.usage.erigolem.requests` in its usage vector.
    #[arg(long, env = "ERIGOLEM_PRICE_PER_REQUEST", default_value_t = 0.0)]
    price_per_request: f64,
    /// Most nodes at once; further agreements are refused.
    #[arg(long, env = "ERIGOLEM_CAPACITY", default_value_t = 4)]
    capacity: usize,
    #[arg(
        long,
        env = "ERIGOLEM_PAYMENT_PLATFORM",
        default_value = "erc20-hoodi-tglm"
    )]
    payment_platform: String,
    /// Seconds between debit notes while a node runs.
    #[arg(long, default_value_t = 60)]
    debit_note_interval: u64,
    /// Seconds a requestor has to accept a debit note before the agreement is ended.
    #[arg(long, default_value_t = 240)]
    debit_note_accept_timeout: u64,
    /// Seconds after which the offer is published anew.
    #[arg(long, default_value_t = 1800)]
    offer_ttl: u64,
    /// TEST ONLY: misbehave as a hostile provider would, to test requestors (`name[=value],…`:
    /// overbill-debit-notes=F, overbill-invoice=GLM, node-name=NAME, status-failed-after=N,
    /// silent-after=N, status-garbage-after=N). Never on a provider that sells nodes.
    #[arg(long, hide = true, value_parser = |s: &str| s.parse::<Misbehaviour>())]
    misbehave: Option<Misbehaviour>,
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Paths are handed to exe-units and runtimes (other working directories): absolute, once.
    let runtime = match args.runtime {
        Some(path) => erigolem_primitives::paths::absolute(&path)?,
        None => std::env::current_exe()?
            .parent()
            .context("no directory of the current binary")?
            .join("ya-runtime-erigon"),
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("{}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let served = served_offer(&runtime, &data_dir).await?;
    tracing::info!(networks = ?served.networks, modes = ?served.modes, "the runtime serves");
    let misbehaviour = args.misbehave.unwrap_or_default();
    if !misbehaviour.is_none() {
        tracing::warn!(
            ?misbehaviour,
            "TEST ONLY: this agent misbehaves as a hostile provider"
        );
    }
    let runner = Arc::new(ExeUnitRunner {
        gsb_url: args.gsb_url.clone(),
        runtime,
        activities_dir: data_dir.join("activities"),
        run_filter: misbehaviour.rewrites_status().then(|| {
            erigolem_exe_unit::RunFilter(Arc::new(StatusMisbehaviour(misbehaviour.clone())))
        }),
    });
    let mut config = AgentConfig::new(
        Yagna::new(args.yagna_url.clone(), args.app_key),
        served,
        runner,
        data_dir.join("agent-state.json"),
    );
    config.subnet = args.subnet;
    anyhow::ensure!(
        [args.price_per_hour, args.start_fee, args.price_per_request]
            .iter()
            .all(|p| p.is_finite() && *p >= 0.0),
        "prices must be finite and not negative"
    );
    config.pricing = Pricing {
        per_hour: args.price_per_hour,
        start_fee: args.start_fee,
        per_request: args.price_per_request,
    };
    config.capacity = args.capacity;
    config.payment_platform = args.payment_platform;
    config.debit_note_interval = Duration::from_secs(args.debit_note_interval.max(1));
    config.debit_note_accept_timeout = Duration::from_secs(args.debit_note_accept_timeout.max(1));
    config.offer_ttl = Duration::from_secs(args.offer_ttl.max(10));
    config.misbehaviour = misbehaviour;
    let agent = erigolem_provider_agent::spawn(config)
        .await
        .with_context(|| format!("connecting to yagna at {}", args.yagna_url))?;
    println!(
        "erigolem-provider: node {} selling Erigon nodes (Ctrl-C stops)",
        agent.node_id()
    );
    shutdown_signal().await;
    tracing::info!("stopping: ending activities and invoicing");
    agent.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Networks and modes from the runtime's `offer-template` (what its config can serve).
async fn served_offer(
    runtime: &std::path::Path,
    data_dir: &std::path::Path,
) -> anyhow::Result<ServedOffer> {
    let template = RuntimeBinary::new(runtime, data_dir.join("offer-template"))
        .offer_template()
        .await
        .with_context(|| format!("asking {} for its offer template", runtime.display()))?;
    let list = |key: &str| -> Vec<String> {
        template
            .pointer(&format!("/properties/{}", key.replace('/', "~1")))
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let networks = list("erigolem.networks");
    anyhow::ensure!(
        !networks.is_empty(),
        "the runtime's config serves no network: {template}"
    );
    Ok(ServedOffer {
        networks,
        modes: list("erigolem.modes"),
        runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        debit_note_interval_secs: 60,
    })
}

/// What of the agent's environment the runtime gets: where its config is (`XDG_*`, made absolute:
/// a relative one would be ignored by the runtime's XDG lookup) and `PATH`.
fn runtime_env(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)> {
    vars.filter(|(k, _)| k == "XDG_DATA_HOME" || k == "XDG_CONFIG_HOME" || k == "PATH")
        .map(|(k, v)| {
            if k == "PATH" || v.is_empty() {
                return (k, v);
            }
            let v = erigolem_primitives::paths::absolute(std::path::Path::new(&v))
                .map(std::ffi::OsString::from)
                .unwrap_or(v);
            (k, v)
        })
}

/// Runs each activity in an in-process exe-unit on yagna's GSB.
struct ExeUnitRunner {
    gsb_url: String,
    runtime: PathBuf,
    activities_dir: PathBuf,
    /// Test-only: STATUS answers rewritten by a misbehaviour.
    run_filter: Option<erigolem_exe_unit::RunFilter>,
}

/// Test-only: STATUS as a misbehaving provider answers it.
struct StatusMisbehaviour(Misbehaviour);

impl erigolem_exe_unit::RunOutputFilter for StatusMisbehaviour {
    fn filter(&self, entry: &str, n: u64, stdout: Vec<u8>) -> Option<Vec<u8>> {
        if entry == "STATUS" {
            self.0.status(n, stdout)
        } else {
            Some(stdout)
        }
    }
}

/// An exe-unit, and where the request counter is in its usage vector.
struct Running {
    unit: erigolem_exe_unit::ExeUnit,
    requests_at: Option<usize>,
}

/// The request count in a usage report: a counter is a whole, non-negative number; anything
/// else (a runtime gone wrong) bills nothing.
fn requests_in(usage: &erigolem_exe_unit::ActivityUsage, at: Option<usize>) -> u64 {
    at.and_then(|i| usage.current_usage.as_ref()?.get(i).copied())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v as u64)
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl RunningActivity for Running {
    async fn ended(&self) {
        self.unit.terminated().await;
    }
    fn requests(&self) -> u64 {
        requests_in(&self.unit.usage(), self.requests_at)
    }
    async fn shutdown(self: Box<Self>, reason: &str) -> u64 {
        let id = self.unit.activity_id().to_owned();
        let before = requests_in(&self.unit.usage(), self.requests_at);
        match self.unit.shutdown(reason).await {
            Ok(usage) => requests_in(&usage, self.requests_at).max(before),
            Err(e) => {
                tracing::warn!(activity = %id, "exe-unit shutdown: {e}");
                before
            }
        }
    }
}

#[async_trait::async_trait]
impl ActivityRunner for ExeUnitRunner {
    async fn start(&self, activity: ActivityStart) -> Result<Box<dyn RunningActivity>, String> {
        let config = erigolem_exe_unit::ExeUnitConfig::new(
            &activity.activity_id,
            &activity.agreement_id,
            &activity.requestor_id,
            &self.gsb_url,
            &self.runtime,
            self.activities_dir.join(&activity.activity_id),
        );
        let config = runtime_env(std::env::vars_os()).fold(config, |c, (k, v)| c.env(k, v));
        let mut config = if activity.usage_vector.is_empty() {
            config
        } else {
            config.usage_vector(activity.usage_vector.clone())
        };
        config.run_filter = self.run_filter.clone();
        let requests_at = config
            .usage_vector
            .iter()
            .position(|n| n == erigolem_provider_agent::props::REQUESTS);
        erigolem_exe_unit::spawn(config)
            .await
            .map(|unit| Box::new(Running { unit, requests_at }) as Box<dyn RunningActivity>)
            .map_err(|e| e.to_string())
    }

    async fn report_terminated(&self, activity_id: &str, reason: &str) -> Result<(), String> {
        erigolem_exe_unit::report_terminated(&self.gsb_url, activity_id, reason)
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn the_runtime_gets_absolute_xdg_dirs_and_nothing_else() {
        let vars = [
            ("XDG_DATA_HOME", "rel/share"),
            ("XDG_CONFIG_HOME", "/etc/xdg"),
            ("PATH", "bin:/usr/bin"),
            ("YAGNA_APPKEY", "secret"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env: Vec<(OsString, OsString)> = runtime_env(vars.into_iter()).collect();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            env,
            [
                (
                    "XDG_DATA_HOME".into(),
                    cwd.join("rel/share").into_os_string()
                ),
                ("XDG_CONFIG_HOME".into(), "/etc/xdg".into()),
                ("PATH".into(), "bin:/usr/bin".into()),
            ]
        );
    }
}
