//! `ya-runtime-erigon`: a Golem runtime (ya-runtime-sdk, server mode) that gives each activity its own
//! Ethereum JSON-RPC endpoint behind Nginx. The logic is in `erigolem-node-service`; this is the
//! adapter to the SDK, plus cleanup on stdin EOF and SIGTERM.

use std::path::PathBuf;
use std::rc::Rc;

use erigolem_node_service::{Instance, NodeService, RuntimeConfig, ServiceError, REQUESTS_COUNTER};
use erigolem_primitives::paths::absolute_from;
use erigolem_primitives::StartArgs;
use futures::FutureExt;
use serde_json::json;
use structopt::StructOpt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Mutex;
use ya_runtime_sdk::cli::CommandCli;
use ya_runtime_sdk::{
    Command, Context, EmptyResponse, Error, EventEmitter, OutputResponse, ProcessIdResponse,
    RunProcess, Runtime, RuntimeCounter, RuntimeDef, RuntimeMode,
};

/// Command line, as an exe-unit passes it: `--workdir W --task-package P <command> [args…]`.
#[derive(Debug, StructOpt)]
#[structopt(rename_all = "kebab-case")]
#[allow(dead_code)] // some options are parsed only so that an exe-unit's command line is accepted
struct Cli {
    /// Working directory of the activity.
    #[structopt(short, long)]
    workdir: Option<PathBuf>,
    /// Cache directory shared by activities (unused).
    #[structopt(short, long)]
    cache_dir: Option<PathBuf>,
    /// Task package (unused: the runtime manages its own "image").
    #[structopt(short, long)]
    task_package: Option<PathBuf>,
    /// Accepted for exe-units that pass the plugin's extra arguments on.
    #[structopt(long, hidden = true)]
    runtime_managed_image: bool,
    #[structopt(subcommand)]
    command: Command,
}

/// Where the SDK looks for the config: `$XDG_DATA_HOME/ya-runtime-erigon/`, else the user's data
/// dir. A relative `XDG_DATA_HOME` (which the XDG spec, and so the SDK's `directories` crate,
/// ignores, silently falling back to `~/.local/share`) is resolved against the working directory
/// instead: whoever set it meant a directory, not the built-in defaults.
#[derive(Debug, Default)]
struct RuntimeEnv;

impl ya_runtime_sdk::env::Env<Cli> for RuntimeEnv {
    fn data_directory(&self, runtime_name: &str) -> anyhow::Result<PathBuf> {
        let cwd = std::env::current_dir()?;
        match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            Some(xdg) => Ok(absolute_from(&cwd, std::path::Path::new(&xdg)).join(runtime_name)),
            None => ya_runtime_sdk::env::DefaultEnv::<Cli>::default().data_directory(runtime_name),
        }
    }
}

impl CommandCli for Cli {
    fn workdir(&self) -> Option<PathBuf> {
        self.workdir.clone()
    }
    fn command(&self) -> &Command {
        &self.command
    }
}

/// The instance of this activity, shared with `main` so that it is stopped however the runtime ends.
type Slot = Rc<Mutex<Option<Instance>>>;

struct ErigonRuntime {
    service: Result<NodeService, String>,
    slot: Slot,
}

impl RuntimeDef for ErigonRuntime {
    const NAME: &'static str = "ya-runtime-erigon";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Cli = Cli;
    type Conf = RuntimeConfig;
}

impl ErigonRuntime {
    fn service(&self) -> Result<NodeService, Error> {
        self.service.clone().map_err(Error::from_string)
    }
}

fn deploy_result(valid: Result<(), String>) -> serde_json::Value {
    let valid = match valid {
        Ok(()) => json!({"Ok": ""}),
        Err(e) => json!({"Err": e}),
    };
    json!({"startMode": "blocking", "valid": valid, "vols": []})
}

impl Runtime for ErigonRuntime {
    const MODE: RuntimeMode = RuntimeMode::Server;

    fn deploy<'a>(&mut self, _ctx: &mut Context<Self>) -> OutputResponse<'a> {
        let service = self.service.clone();
        async move {
            let valid = match service {
                Ok(service) => service.deploy().await.map(drop).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            if let Err(e) = &valid {
                tracing::error!("deploy: {e}");
            }
            Ok(Some(deploy_result(valid)))
        }
        .boxed_local()
    }

    fn start<'a>(&mut self, ctx: &mut Context<Self>) -> OutputResponse<'a> {
        let service = self.service();
        let slot = self.slot.clone();
        let args = StartArgs::parse(ctx.cli.command().args());
        let emitter = ctx.emitter.clone();
        async move {
            let result: Result<serde_json::Value, ServiceError> = async {
                let service = service.map_err(|e| ServiceError::Config(e.to_string()))?;
                let args = args?;
                let mut slot = slot.lock().await;
                if slot.is_some() {
                    return Err(ServiceError::AlreadyStarted);
                }
                // Into the slot at once, so that a signal from now on finds it to clean up.
                let instance = slot.insert(service.start(args).await?);
                if let Some(emitter) = emitter {
                    tokio::task::spawn_local(report_requests(emitter, instance.request_counter()));
                }
                let status = instance.status().await;
                Ok(serde_json::to_value(status).unwrap_or_default())
            }
            .await;
            match result {
                Ok(status) => Ok(Some(status)),
                Err(e) => {
                    tracing::error!("start failed: {e}");
                    Err(Error::from_string(e))
                }
            }
        }
        .boxed_local()
    }

    fn stop<'a>(&mut self, ctx: &mut Context<Self>) -> EmptyResponse<'a> {
        let slot = self.slot.clone();
        let emitter = ctx.emitter.clone();
        async move {
            if let Some(mut instance) = slot.lock().await.take() {
                // No call is answered after this: the count is final. It is reported while the
                // node stops, well before Shutdown is answered — the exe-unit bills what it saw.
                let closed = instance.close_endpoint().await;
                if let Some(mut emitter) = emitter {
                    emitter.counter(requests_counter(instance.requests())).await;
                    // The event crosses two more tasks (the SDK's, the runtime API's writer) on
                    // this one thread before it is written; let them run before the answer.
                    for _ in 0..8 {
                        tokio::task::yield_now().await;
                    }
                }
                let stopped = instance.stop().await;
                closed.and(stopped).map_err(Error::from_string)?;
            }
            Ok(())
        }
        .boxed_local()
    }

    fn run_command<'a>(
        &mut self,
        command: RunProcess,
        _mode: RuntimeMode,
        ctx: &mut Context<Self>,
    ) -> ProcessIdResponse<'a> {
        let slot = self.slot.clone();
        ctx.command(move |mut run_ctx| async move {
            let result = run(&slot, &command).await;
            match result {
                Ok(Output::Json(v)) => Ok(v),
                Ok(Output::Text(text)) => {
                    run_ctx.stdout(text).await;
                    Ok(serde_json::Value::Null)
                }
                Err(e) => {
                    run_ctx.stderr(format!("{e}\n")).await;
                    Err(Error::from_string(e))
                }
            }
        })
    }

    fn offer<'a>(&mut self, _ctx: &mut Context<Self>) -> OutputResponse<'a> {
        let service = self.service();
        async move {
            // Only what the engine binaries that answer `--version` can serve.
            let offer = service?.offer().await;
            Ok(Some(json!({
                "constraints": "",
                "properties": {
                    "erigolem.networks": offer.networks,
                    "erigolem.modes": offer.modes,
                    "erigolem.prunes": offer.prunes,
                    "erigolem.engines": offer.engines,
                    "erigolem.disk": offer.disk,
                }
            })))
        }
        .boxed_local()
    }

    fn test<'a>(&mut self, _ctx: &mut Context<Self>) -> EmptyResponse<'a> {
        let service = self.service();
        async move {
            let report = service?.self_test().await.map_err(Error::from_string)?;
            let served: Vec<String> = report
                .networks
                .iter()
                .map(|(n, m)| format!("{n} {m:?}"))
                .collect();
            let engines: Vec<String> = report
                .engines
                .iter()
                .map(|(e, v)| format!("{e} {v}"))
                .collect();
            for warning in &report.warnings {
                eprintln!("warning: {warning}");
            }
            eprintln!("ok: serves {} ({})", served.join(", "), engines.join(", "));
            Ok(())
        }
        .boxed_local()
    }
}

/// How often the request counter is reported to the exe-unit (when it changed).
const COUNTER_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn requests_counter(requests: u64) -> RuntimeCounter {
    RuntimeCounter {
        name: REQUESTS_COUNTER.to_owned(),
        value: requests as f64,
    }
}

/// Reports the endpoint's request count as a runtime counter event (the Golem usage counter
/// `golem.usage.erigolem.requests`, which an exe-unit puts in the activity's usage vector), at
/// start and then whenever it changed, while the process lives.
async fn report_requests(mut emitter: EventEmitter, counter: erigolem_guard::RequestCounter) {
    let mut last = None;
    loop {
        let now = counter.get();
        if last != Some(now) {
            emitter.counter(requests_counter(now)).await;
            last = Some(now);
        }
        tokio::time::sleep(COUNTER_INTERVAL).await;
    }
}

enum Output {
    Json(serde_json::Value),
    Text(String),
}

/// Lines `LOGS` returns by default and at most.
const LOGS_DEFAULT: usize = 100;
const LOGS_MAX: usize = 10_000;

async fn run(slot: &Slot, command: &RunProcess) -> Result<Output, String> {
    let mut guard = slot.lock().await;
    let instance = guard
        .as_mut()
        .ok_or_else(|| ServiceError::NotStarted.to_string())?;
    let to_json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map(Output::Json).map_err(|e| e.to_string())
    };
    match command.bin.to_ascii_uppercase().as_str() {
        "STATUS" => to_json(serde_json::to_value(instance.status().await)),
        "HEALTH" => to_json(serde_json::to_value(instance.health().await)),
        "LOGS" => {
            let n = match command.args.first() {
                None => LOGS_DEFAULT,
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| format!("LOGS takes a line count, not {n:?}"))?,
            };
            Ok(Output::Text(instance.logs(n.min(LOGS_MAX))))
        }
        "ROTATE" => {
            // With an argument: the password a caller restores (e.g. a server bringing its
            // nodes back); it comes over the runtime API, never on a command line.
            let password = command
                .args
                .first()
                .map(|p| erigolem_primitives::EndpointPassword::new(p.as_str()))
                .transpose()?;
            to_json(serde_json::to_value(
                instance
                    .rotate(password.as_ref())
                    .await
                    .map_err(|e| e.to_string())?,
            ))
        }
        other => Err(format!(
            "unknown command {other:?}; expected STATUS, HEALTH, LOGS [N] or ROTATE [PASSWORD]"
        )),
    }
}

fn main() -> anyhow::Result<()> {
    // stdout carries the runtime API protocol: logs go to stderr only.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // A current-thread runtime: node processes are spawned from the main thread, which lives as
    // long as the process, so their parent-death signal fires exactly when this process dies.
    runtime.block_on(async {
        let slot: Slot = Rc::default();
        let factory_slot = slot.clone();
        let cwd = std::env::current_dir()?;
        let sdk = ya_runtime_sdk::build(RuntimeEnv, move |ctx: &mut Context<ErigonRuntime>| {
            // Relative paths of the config mean the directory the runtime was started in.
            let config = ctx.conf.clone().absolutize(&cwd);
            if !ctx.conf_path.exists() {
                tracing::warn!(
                    "no config file at {}: running with the built-in defaults",
                    ctx.conf_path.display()
                );
            }
            let service = NodeService::new(config)
                .map_err(|e| format!("{e} (config file {})", ctx.conf_path.display()));
            async move {
                Ok(ErigonRuntime {
                    service,
                    slot: factory_slot,
                })
            }
        });
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Fused: polling it again after it finished is harmless (it stays pending).
        let mut sdk = std::pin::pin!(sdk.fuse());
        let result = tokio::select! {
            result = &mut sdk => result,
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); Ok(()) }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); Ok(()) }
        };
        // A start in progress holds the slot: keep driving it until it is done, so that what it
        // made is stopped below rather than abandoned half-way.
        let instance = tokio::select! {
            mut slot = slot.lock() => slot.take(),
            _ = &mut sdk => slot.lock().await.take(),
        };
        // Shutdown normally stopped it already; after stdin EOF or a signal this does.
        if let Some(instance) = instance {
            if let Err(e) = instance.stop().await {
                tracing::error!("cleanup: {e}");
            }
        }
        result
    })
}
