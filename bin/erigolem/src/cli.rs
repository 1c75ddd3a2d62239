//! `erigolem login` and `erigolem nodes …`: the REST API from a terminal. Human tables by default,
//! `--json` for scripts. The session (server, address, token) is kept in
//! `$ERIGOLEM_CONFIG_DIR` or `$XDG_CONFIG_HOME/erigolem` (`~/.config/erigolem`), mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use erigolem_api::{Mode, Network, NodeState, Prune};
use erigolem_client::{Client, CreateNode, Node, Wallet};
use serde::{Deserialize, Serialize};

#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// The server to sign in to.
    #[arg(long, env = "ERIGOLEM_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An encrypted JSON keystore; its password comes from ERIGOLEM_KEYSTORE_PASSWORD.
    /// Without it, the key is read from ERIGOLEM_PRIVATE_KEY (hex).
    #[arg(long, env = "ERIGOLEM_KEYSTORE")]
    keystore: Option<PathBuf>,
    /// The chain id put in the sign-in message.
    #[arg(long, env = "ERIGOLEM_CHAIN_ID", default_value_t = 1)]
    chain_id: u64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodesCommand {
    /// Your nodes, newest first.
    List(Output),
    /// Start a node.
    Create {
        /// mainnet, sepolia, hoodi or dev.
        #[arg(long)]
        network: Network,
        #[arg(long)]
        name: Option<String>,
        /// shared or dedicated (default: what the server prefers).
        #[arg(long)]
        mode: Option<Mode>,
        /// full, archive, minimal or blocks (see `GET /api/v1/networks` for each one's disk).
        #[arg(long)]
        prune: Option<Prune>,
        /// Serve only this JSON-RPC method or namespace (`eth_call`, `eth_*`); repeat for more.
        #[arg(long = "method", value_name = "METHOD")]
        methods: Vec<String>,
        /// Serve only browser requests from this origin (`https://app.example.org`,
        /// `https://*.example.org`); repeat for more.
        #[arg(long = "allow-origin", value_name = "ORIGIN")]
        allow_origins: Vec<String>,
        /// Serve only clients at this address or CIDR block (`203.0.113.7`, `10.0.0.0/8`); repeat
        /// for more.
        #[arg(long = "allow-ip", value_name = "IP")]
        allow_ips: Vec<String>,
        /// Wait until it is running (or failed).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        output: Output,
    },
    /// One node, with its URL and credentials.
    Show {
        id: String,
        #[command(flatten)]
        output: Output,
    },
    /// Stop a node (credentials revoked at once).
    Stop {
        id: String,
        /// Wait until it is stopped.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Remove a stopped node from the list.
    Rm { id: String },
    /// Print each state change of your nodes as it happens.
    Watch(Output),
    /// A running node's last log lines (passwords and other secrets redacted).
    Logs {
        id: String,
        /// How many of the last lines (1-1000).
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Keep printing new lines as the node writes them (Ctrl-C ends it).
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// A node's alert rules, active and recent alerts; with a rule option, sets the rules first.
    Alerts {
        id: String,
        /// Alert when more than N blocks behind (`off`: never).
        #[arg(long, value_parser = rule_value)]
        lag_blocks: Option<RuleValue>,
        /// Alert when the head block is more than S seconds old (`off`: never).
        #[arg(long, value_parser = rule_value)]
        lag_seconds: Option<RuleValue>,
        /// Alert when the budget lasts fewer than T seconds (`off`: never).
        #[arg(long, value_parser = rule_value)]
        runway: Option<RuleValue>,
        /// Alert when the node fails.
        #[arg(long)]
        failed: Option<bool>,
        /// Alert when the node is replaced.
        #[arg(long)]
        replaced: Option<bool>,
        #[command(flatten)]
        output: Output,
    },
}

/// A rule's threshold, or `off`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RuleValue(Option<u64>);

fn rule_value(text: &str) -> Result<RuleValue, String> {
    match text {
        "off" | "none" => Ok(RuleValue(None)),
        n => n
            .parse()
            .map(|n| RuleValue(Some(n)))
            .map_err(|_| format!("{n:?} is not a number or `off`")),
    }
}

/// Where your alerts are delivered.
#[derive(Debug, Subcommand)]
pub(crate) enum WebhookCommand {
    /// Your webhook's URL.
    Show(Output),
    /// Set the URL (a new webhook gets a signing secret, printed once).
    Set {
        url: String,
        /// A new signing secret; the old one stops working at once.
        #[arg(long)]
        rotate_secret: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Remove it (pending deliveries give up).
    Rm,
    /// Send it a `test` event.
    Test(Output),
    /// The last deliveries: attempts, last status, next attempt.
    Deliveries(Output),
}

#[derive(Debug, Args)]
pub(crate) struct Output {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// What `login` saves.
#[derive(Debug, Serialize, Deserialize)]
struct Session {
    server: String,
    address: String,
    token: String,
}

fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ERIGOLEM_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(base.join("erigolem"))
}

fn session_path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("session.json"))
}

pub(crate) async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let wallet = match &args.keystore {
        Some(path) => {
            let password = std::env::var("ERIGOLEM_KEYSTORE_PASSWORD")
                .context("set ERIGOLEM_KEYSTORE_PASSWORD to decrypt the keystore")?;
            Wallet::from_keystore(path, &password)?
        }
        None => {
            let key = std::env::var("ERIGOLEM_PRIVATE_KEY")
                .context("give --keystore FILE or set ERIGOLEM_PRIVATE_KEY")?;
            Wallet::from_hex(&key)?
        }
    };
    let mut client = Client::new(&args.server);
    let token = client.sign_in(&wallet, args.chain_id).await?;
    let session = Session {
        server: client.base().to_owned(),
        address: wallet.address(),
        token,
    };
    let path = session_path()?;
    std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(serde_json::to_string_pretty(&session)?.as_bytes())?;
    println!("signed in to {} as {}", session.server, session.address);
    Ok(())
}

fn client() -> anyhow::Result<Client> {
    let path = session_path()?;
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "not signed in ({} missing): run `erigolem login`",
            path.display()
        )
    })?;
    let session: Session =
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
    Ok(Client::new(&session.server).with_token(session.token))
}

pub(crate) async fn nodes(command: NodesCommand) -> anyhow::Result<()> {
    let client = client()?;
    match command {
        NodesCommand::List(out) => print_nodes(&client.nodes().await?, &out),
        NodesCommand::Create {
            network,
            name,
            mode,
            prune,
            methods,
            allow_origins,
            allow_ips,
            wait,
            output,
        } => {
            // Not given: any (the server refuses an empty list).
            let given = |list: Vec<String>| Some(list).filter(|l| !l.is_empty());
            let node = client
                .create(&CreateNode {
                    name,
                    mode,
                    prune,
                    methods: given(methods),
                    allow_origins: given(allow_origins),
                    allow_ips: given(allow_ips),
                    ..CreateNode::new(network)
                })
                .await?;
            let node = if wait {
                wait_for(&client, &node.id, &[NodeState::Running, NodeState::Failed]).await?
            } else {
                node
            };
            print_node(&node, &output)
        }
        NodesCommand::Show { id, output } => print_node(&client.node(&id).await?, &output),
        NodesCommand::Stop { id, wait, output } => {
            let node = client.stop(&id).await?;
            let node = if wait {
                wait_for(&client, &id, &[NodeState::Stopped, NodeState::Failed]).await?
            } else {
                node
            };
            print_node(&node, &output)
        }
        NodesCommand::Watch(output) => watch(output).await,
        NodesCommand::Logs { id, lines, follow } => logs(&client, &id, lines, follow).await,
        NodesCommand::Rm { id } => {
            client.delete(&id).await?;
            println!("removed {id}");
            Ok(())
        }
        NodesCommand::Alerts {
            id,
            lag_blocks,
            lag_seconds,
            runway,
            failed,
            replaced,
            output,
        } => {
            let changes = lag_blocks.is_some()
                || lag_seconds.is_some()
                || runway.is_some()
                || failed.is_some()
                || replaced.is_some();
            let alerts = if changes {
                let mut rules = client.alerts(&id).await?.rules;
                if let Some(RuleValue(v)) = lag_blocks {
                    rules.lag_blocks = v;
                }
                if let Some(RuleValue(v)) = lag_seconds {
                    rules.lag_seconds = v;
                }
                if let Some(RuleValue(v)) = runway {
                    rules.runway_secs = v;
                }
                rules.failed = failed.unwrap_or(rules.failed);
                rules.replaced = replaced.unwrap_or(rules.replaced);
                client.set_alert_rules(&id, &rules).await?
            } else {
                client.alerts(&id).await?
            };
            print_alerts(&alerts, &output)
        }
    }
}

pub(crate) async fn webhook(command: WebhookCommand) -> anyhow::Result<()> {
    let client = client()?;
    match command {
        WebhookCommand::Show(out) => print_webhook(&client.webhook().await?, &out),
        WebhookCommand::Set {
            url,
            rotate_secret,
            output,
        } => {
            let hook = client.set_webhook(&url, rotate_secret).await?;
            print_webhook(&hook, &output)?;
            if hook.secret.is_some() && !output.json {
                println!(
                    "keep the secret: it is not shown again (verify X-Erigolem-Signature with it)"
                );
            }
            Ok(())
        }
        WebhookCommand::Rm => {
            client.delete_webhook().await?;
            println!("webhook removed");
            Ok(())
        }
        WebhookCommand::Test(out) => print_deliveries(&[client.test_webhook().await?], &out),
        WebhookCommand::Deliveries(out) => print_deliveries(&client.deliveries().await?, &out),
    }
}

fn print_webhook(hook: &erigolem_api::Webhook, out: &Output) -> anyhow::Result<()> {
    if out.json {
        return print_json(hook, true);
    }
    println!("url     {}", printable(&hook.url));
    if let Some(secret) = &hook.secret {
        println!("secret  {}", printable(secret));
    }
    Ok(())
}

fn print_deliveries(list: &[erigolem_api::WebhookDelivery], out: &Output) -> anyhow::Result<()> {
    if out.json {
        return print_json(list, true);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "ID",
        "EVENT",
        "STATE",
        "ATTEMPTS",
        "LAST",
        "NEXT",
        "DELIVERED",
    ]);
    for d in list {
        let last = match (d.last_status, &d.last_error) {
            (Some(s), Some(e)) => format!("{s}: {e}"),
            (Some(s), None) => s.to_string(),
            (None, Some(e)) => e.clone(),
            (None, None) => String::new(),
        };
        let state = serde_json::to_value(d.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        table.add_row([
            printable(&d.id),
            d.event.as_str().to_owned(),
            state,
            d.attempts.to_string(),
            printable(&last),
            d.next_attempt_at.map(format_ms).unwrap_or_default(),
            d.delivered_at.map(format_ms).unwrap_or_default(),
        ]);
    }
    println!("{table}");
    Ok(())
}

fn print_alerts(alerts: &erigolem_api::NodeAlerts, out: &Output) -> anyhow::Result<()> {
    if out.json {
        return print_json(alerts, true);
    }
    let r = &alerts.rules;
    let off = |v: Option<u64>, unit: &str| v.map_or("off".to_owned(), |v| format!("{v}{unit}"));
    println!(
        "rules: lag > {} blocks, head older than {}, runway < {}, failed {}, replaced {}",
        off(r.lag_blocks, ""),
        off(r.lag_seconds, " s"),
        off(r.runway_secs, " s"),
        if r.failed { "on" } else { "off" },
        if r.replaced { "on" } else { "off" },
    );
    if alerts.recent.is_empty() {
        println!("no alerts");
        return Ok(());
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["KIND", "STATE", "FIRED", "RESOLVED", "MESSAGE"]);
    for a in &alerts.recent {
        table.add_row([
            a.kind.as_str().to_owned(),
            if a.resolved_at.is_none() {
                "ACTIVE"
            } else {
                "resolved"
            }
            .to_owned(),
            format_ms(a.fired_at),
            a.resolved_at.map(format_ms).unwrap_or_default(),
            printable(&a.message),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// `lag_blocks, failed` for a node's active alerts.
fn alerts_text(node: &Node) -> Option<String> {
    (!node.alerts.is_empty()).then(|| {
        node.alerts
            .iter()
            .map(|a| a.kind.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// How long `--wait` waits.
const WAIT_LIMIT: Duration = Duration::from_secs(600);

async fn wait_for(client: &Client, id: &str, states: &[NodeState]) -> anyhow::Result<Node> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let node = client.node(id).await?;
        if states.contains(&node.state) {
            return Ok(node);
        }
        if Instant::now() > deadline {
            bail!("node {id} is still {} after {WAIT_LIMIT:?}", node.state);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `text` safe to print on a terminal: control characters (ESC, BEL, CR, line breaks, the 8-bit
/// C1 set) and bidirectional overrides are shown escaped (`\x1b`), so text a provider chose (a
/// URL, a failure reason) cannot move the cursor, retitle the window, forge lines or reorder what
/// is shown.
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || is_bidi_control(c) {
            match u32::from(c) {
                n if n < 0x100 => out.push_str(&format!("\\x{n:02x}")),
                n => out.push_str(&format!("\\u{{{n:x}}}")),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// JSON for the terminal: `serde_json` escapes C0 controls; this also escapes DEL, the C1 set and
/// bidi overrides (as `\u00XX`), which are only ever inside strings, so the JSON means the same.
fn json_safe(json: String) -> String {
    if !json
        .chars()
        .any(|c| c.is_control() && c > '\u{1f}' || is_bidi_control(c))
    {
        return json;
    }
    json.chars()
        .map(|c| {
            if (c.is_control() && c > '\u{1f}') || is_bidi_control(c) {
                format!("\\u{:04x}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn print_json<T: Serialize + ?Sized>(value: &T, pretty: bool) -> anyhow::Result<()> {
    let text = if pretty {
        serde_json::to_string_pretty(value)?
    } else {
        serde_json::to_string(value)?
    };
    println!("{}", json_safe(text));
    Ok(())
}

fn print_nodes(nodes: &[Node], out: &Output) -> anyhow::Result<()> {
    if out.json {
        return print_json(nodes, true);
    }
    if nodes.is_empty() {
        println!("no nodes: `erigolem nodes create --network dev` starts one");
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "ID", "NAME", "NETWORK", "STATE", "BLOCK", "LAG", "ALERTS", "URL",
    ]);
    for n in nodes {
        table.add_row([
            printable(&n.id),
            printable(&n.name),
            printable(&n.network),
            printable(n.state.as_str()),
            n.block.map(|b| b.to_string()).unwrap_or_default(),
            lag_text(n).unwrap_or_default(),
            alerts_text(n).unwrap_or_default(),
            printable(n.url.as_deref().unwrap_or_default()),
        ]);
    }
    println!("{table}");
    Ok(())
}

fn print_node(node: &Node, out: &Output) -> anyhow::Result<()> {
    if out.json {
        return print_json(node, true);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let mut row = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            table.add_row([k.to_owned(), printable(&v)]);
        }
    };
    row("id", Some(node.id.clone()));
    row("name", Some(node.name.clone()));
    row(
        "network",
        Some(format!(
            "{} ({}, prune {})",
            node.network, node.mode, node.prune
        )),
    );
    row("state", Some(node.state.to_string()));
    row("reason", node.reason.clone());
    row(
        "engine",
        match (&node.engine, &node.engine_version) {
            (Some(e), Some(v)) => Some(format!("{e} {v}")),
            (e, v) => e.map(|e| e.to_string()).or_else(|| v.clone()),
        },
    );
    row("block", node.block.map(|b| b.to_string()));
    row("lag", lag_text(node));
    for a in &node.alerts {
        row(
            &format!("ALERT {}", a.kind.as_str()),
            Some(a.message.clone()),
        );
    }
    row("peers", node.peers.map(|p| p.to_string()));
    row("rpc limits", node.limits.as_ref().map(limits_text));
    row(
        "endpoint limits",
        node.endpoint_limits.as_ref().map(endpoint_limits_text),
    );
    let any = |list: &Option<Vec<String>>, what: &str| {
        Some(
            list.as_ref()
                .map_or_else(|| what.to_owned(), |l| l.join(", ")),
        )
    };
    row("methods", any(&node.methods, "any the provider allows"));
    row("origins", any(&node.allow_origins, "any"));
    row("client ips", any(&node.allow_ips, "any"));
    for w in &node.warnings {
        row("warning", Some(w.clone()));
    }
    row("url", node.url.clone());
    row("ws url", node.ws_url.clone());
    row("user", node.auth.as_ref().map(|a| a.user.clone()));
    row("password", node.auth.as_ref().map(|a| a.password.clone()));
    println!("{table}");
    Ok(())
}

/// `lagging: 3 min behind (25 blocks)`, `12 s behind`, or nothing when the node has not said.
fn lag_text(node: &Node) -> Option<String> {
    let age = node.behind_seconds.map(|s| match s {
        0..=119 => format!("{s} s behind"),
        120..=7199 => format!("{} min behind", s / 60),
        _ => format!("{} h behind", s / 3600),
    });
    let blocks = node
        .behind_blocks
        .filter(|b| *b > 0)
        .map(|b| format!("{b} blocks"));
    let text = match (age, blocks) {
        (Some(a), Some(b)) => format!("{a} ({b})"),
        (Some(a), None) => a,
        (None, Some(b)) => format!("{b} behind"),
        (None, None) => return None,
    };
    Some(if node.lagging {
        format!("lagging: {text}")
    } else {
        text
    })
}

/// `block range 10000, logs 100000, batch 1000 ×4` from the node's limits.
fn limits_text(limits: &erigolem_api::RpcLimits) -> String {
    let show = |v: Option<u64>| v.map_or_else(|| "no limit".to_owned(), |v| v.to_string());
    let mut parts = vec![
        format!("eth_getLogs blocks {}", show(limits.block_range)),
        format!("logs {}", show(limits.logs_max_results)),
        format!("batch {}", show(limits.batch_limit)),
    ];
    if let Some(c) = limits.batch_concurrency {
        parts.push(format!("batch concurrency {c}"));
    }
    if let Some(c) = limits.max_concurrency {
        parts.push(format!("concurrency {c}"));
    }
    parts.join(", ")
}

/// `100 req/s (burst 200), 16 at once, body 1 MiB, batch 100, 16 websockets`.
fn endpoint_limits_text(l: &erigolem_api::EndpointLimits) -> String {
    let body = if l.max_body_bytes >= 1 << 20 && l.max_body_bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", l.max_body_bytes >> 20)
    } else {
        format!("{} bytes", l.max_body_bytes)
    };
    format!(
        "{} req/s (burst {}), {} at once, body {body}, batch {}, {} websockets",
        l.requests_per_sec, l.burst, l.max_concurrent, l.max_batch, l.max_websockets
    )
}

/// Prints the node's log lines (and with `follow`, new ones as they come), escaped for the
/// terminal: a log is text the node (and so its provider) chose.
async fn logs(client: &Client, id: &str, lines: usize, follow: bool) -> anyhow::Result<()> {
    use futures::StreamExt;
    let print = |batch: &erigolem_api::NodeLogs| {
        let mut out = std::io::stdout().lock();
        for line in &batch.lines {
            let _ = writeln!(out, "{}", printable(line));
        }
        let _ = out.flush();
    };
    if !follow {
        print(&client.logs(id, lines).await?);
        return Ok(());
    }
    let mut batches = std::pin::pin!(client.follow_logs(id, lines).await?);
    while let Some(batch) = batches.next().await {
        print(&batch?);
    }
    Ok(())
}

/// Prints each transition of your nodes as it happens (Ctrl-C ends it).
pub(crate) async fn watch(output: Output) -> anyhow::Result<()> {
    use futures::StreamExt;
    let client = client()?;
    let mut events = std::pin::pin!(client.events().await?);
    while let Some(event) = events.next().await {
        let event = event?;
        if output.json {
            print_json(&event, false)?;
        } else {
            let reason = event
                .reason
                .as_deref()
                .map(|r| format!(" ({})", printable(r)))
                .unwrap_or_default();
            println!(
                "{}  {}  {}{reason}",
                format_ms(event.at),
                printable(&event.node_id),
                printable(event.state.as_str())
            );
        }
    }
    Ok(())
}

fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

#[derive(Debug, Args)]
pub(crate) struct NetCheckArgs {
    /// How many nodes to keep alive.
    #[arg(long, default_value_t = 1)]
    count: usize,
    #[arg(long, default_value = "dev")]
    network: Network,
    /// Seconds between probe rounds.
    #[arg(long, default_value_t = 5)]
    interval_secs: u64,
    /// Stop after this many rounds (default: until Ctrl-C).
    #[arg(long)]
    rounds: Option<u64>,
    #[command(flatten)]
    output: Output,
}

/// One probe: `eth_blockNumber` through the node's URL with its credentials.
async fn probe(http: &reqwest::Client, node: &Node) -> Result<u64, String> {
    let (Some(url), Some(auth)) = (&node.url, &node.auth) else {
        return Err("no endpoint".into());
    };
    let body =
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []});
    let resp = http
        .post(url)
        .basic_auth(&auth.user, Some(&auth.password))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let v: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    v["result"]
        .as_str()
        .and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| format!("unexpected answer {v}"))
}

/// Keeps `count` nodes alive: probes each through its URL every round, replaces the unhealthy,
/// and stops all of them at the end (Ctrl-C, or after `--rounds`).
pub(crate) async fn net_check(args: NetCheckArgs) -> anyhow::Result<()> {
    let client = client()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut fleet: Vec<Node> = Vec::new();
    let mut created: Vec<String> = Vec::new();
    let result = tokio::select! {
        r = async {
            let mut round = 0u64;
            loop {
                while fleet.len() < args.count {
                    let node = client.create(&CreateNode { name: Some("net-check".into()), ..CreateNode::new(args.network) }).await?;
                    created.push(node.id.clone());
                    let node = wait_for(&client, &node.id, &[NodeState::Running, NodeState::Failed]).await?;
                    if node.state == NodeState::Running {
                        fleet.push(node);
                    } else {
                        eprintln!("node {} failed to start: {}", printable(&node.id), printable(&node.reason.unwrap_or_default()));
                    }
                }
                round += 1;
                let mut report = Vec::new();
                let mut replaced = Vec::new();
                let mut healthy = Vec::new();
                for node in fleet.drain(..) {
                    match probe(&http, &node).await {
                        Ok(block) => {
                            report.push(serde_json::json!({"id": node.id, "block": block}));
                            healthy.push(node);
                        }
                        Err(reason) => {
                            let _ = client.stop(&node.id).await;
                            replaced.push(serde_json::json!({"id": node.id, "reason": reason}));
                        }
                    }
                }
                fleet = healthy;
                if args.output.json {
                    print_json(&serde_json::json!({"round": round, "healthy": report, "replaced": replaced}), false)?;
                } else {
                    println!("round {round}: {} healthy, {} replaced", report.len(), replaced.len());
                    for r in &replaced {
                        println!("  replacing {}: {}", printable(r["id"].as_str().unwrap_or_default()), printable(r["reason"].as_str().unwrap_or_default()));
                    }
                }
                if args.rounds.is_some_and(|n| round >= n) {
                    return Ok::<(), anyhow::Error>(());
                }
                tokio::time::sleep(Duration::from_secs(args.interval_secs)).await;
            }
        } => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    // Whatever ended the run, leave nothing running.
    for id in &created {
        if let Ok(node) = client.node(id).await {
            if !matches!(node.state, NodeState::Stopped | NodeState::Stopping) {
                let _ = client.stop(id).await;
            }
        }
    }
    for id in &created {
        let _ = wait_for(&client, id, &[NodeState::Stopped, NodeState::Failed]).await;
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn printable_escapes_what_drives_a_terminal() {
        assert_eq!(printable("plain text, ünïcode ✓"), "plain text, ünïcode ✓");
        assert_eq!(
            printable("a\x1b]0;title\x07b\x1b[2Jc\u{9b}31m\r\nd\u{202e}e"),
            "a\\x1b]0;title\\x07b\\x1b[2Jc\\x9b31m\\x0d\\x0ad\\u{202e}e"
        );
    }

    #[test]
    fn json_stays_json() {
        let v = serde_json::json!({"reason": "x\u{9b}y\u{202e}z\x1b"});
        let safe = json_safe(serde_json::to_string(&v).unwrap());
        assert!(
            !safe.chars().any(|c| c.is_control() || is_bidi_control(c)),
            "{safe}"
        );
        assert_eq!(serde_json::from_str::<serde_json::Value>(&safe).unwrap(), v);
    }
}
