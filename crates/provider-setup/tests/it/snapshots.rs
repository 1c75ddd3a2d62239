//! Snapshots of `--dry-run` and of every generated file, for a plain HTTP dev machine and a TLS
//! machine with mainnet and sepolia shared nodes. A fixed, non-existent prefix keeps them stable.

use std::path::Path;

use erigolem_provider_setup::{setup, Entry, Inputs, Plan, SetupOptions};

const PREFIX: &str = "/nonexistent/erigolem-prefix";

fn plan(inputs: Inputs) -> Plan {
    Plan::new(inputs.resolve().unwrap(), Path::new(PREFIX))
}

fn dev() -> Inputs {
    Inputs {
        server_name: Some("localhost".into()),
        listen_port: Some(8080),
        anvil: Some("/usr/local/bin/anvil".into()),
        shared_url: Some(vec!["dev=http://127.0.0.1:8545".into()]),
        ..Inputs::default()
    }
}

fn tls_mainnet_sepolia() -> Inputs {
    Inputs {
        server_name: Some("node.example.org".into()),
        tls_cert: Some("/etc/letsencrypt/live/node.example.org/fullchain.pem".into()),
        tls_key: Some("/etc/letsencrypt/live/node.example.org/privkey.pem".into()),
        shared: Some(vec![
            erigolem_primitives::Network::Sepolia,
            erigolem_primitives::Network::Mainnet,
        ]),
        prune: Some(erigolem_primitives::Prune::Full),
        service_user: Some("erigolem".into()),
        yagna_url: Some("http://127.0.0.1:7465".into()),
        preset: Some(true),
        price_per_hour: Some(0.25),
        ..Inputs::default()
    }
}

fn placeholder(text: &str) -> String {
    text.replace(PREFIX, "<PREFIX>")
}

fn snapshot_all(name: &str, inputs: Inputs) {
    let plan = plan(inputs);
    let outcome = setup(
        &plan,
        SetupOptions {
            dry_run: true,
            force: false,
        },
    )
    .unwrap();
    assert!(!Path::new(PREFIX).exists(), "a dry run wrote something");
    insta::assert_snapshot!(format!("{name}__dry_run"), placeholder(&outcome.report));
    for entry in &plan.entries {
        // The whole logical path: two files share a name (`ya-runtime-erigon.json`).
        let file = entry
            .path()
            .display()
            .to_string()
            .trim_start_matches('/')
            .replace(['/', '.'], "_");
        let text = match entry {
            Entry::File { content, .. } => content.clone(),
            Entry::Symlink { target, .. } => format!("symlink -> {}\n", target.display()),
        };
        let dir = entry.path().parent().unwrap().display().to_string();
        let labelled = format!("# {dir}/\n{}", placeholder(&text));
        insta::assert_snapshot!(format!("{name}__{file}"), labelled);
    }
}

#[test]
fn plain_http_dev_files() {
    snapshot_all("dev", dev());
}

#[test]
fn tls_mainnet_sepolia_files() {
    snapshot_all("tls", tls_mainnet_sepolia());
}

#[test]
fn config_file_and_flags_merge_and_missing_values_name_their_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("setup.toml");
    std::fs::write(
        &file,
        "server-name = \"from-file\"\nlisten-port = 9000\nshared = [\"mainnet\"]\n",
    )
    .unwrap();
    let flags = Inputs {
        server_name: Some("from-flag".into()),
        ..Inputs::default()
    };
    let s = flags.with_file(Some(&file)).unwrap().resolve().unwrap();
    assert_eq!(s.server_name, "from-flag");
    assert_eq!(s.listen_port, 9000);
    assert_eq!(s.shared, vec![erigolem_primitives::Network::Mainnet]);

    let err = Inputs::default().resolve().unwrap_err().to_string();
    assert!(err.contains("--server-name"), "{err}");
    let err = Inputs {
        server_name: Some("x".into()),
        tls_cert: Some("/c.pem".into()),
        ..Inputs::default()
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(err.contains("--tls-key"), "{err}");
    std::fs::write(&file, "sever-name = \"typo\"\n").unwrap();
    let err = Inputs::default()
        .with_file(Some(&file))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sever-name") && err.contains("setup.toml"),
        "{err}"
    );
}

/// ya-provider's `ExeUnitDesc` (yagna, agent/provider/src/execution/registry.rs), as it reads a
/// plugin descriptor: kebab-case keys, `config.counters` keyed by usage property name.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[allow(dead_code)]
struct ExeUnitDesc {
    name: String,
    version: String,
    #[serde(default)]
    description: Option<String>,
    supervisor_path: std::path::PathBuf,
    #[serde(default)]
    extra_args: Vec<String>,
    #[serde(default)]
    runtime_path: Option<std::path::PathBuf>,
    #[serde(default)]
    properties: serde_json::Map<String, serde_json::Value>,
    config: Option<Configuration>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Configuration {
    counters: std::collections::HashMap<String, CounterDefinition>,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct CounterDefinition {
    name: String,
    description: String,
    price: bool,
}

#[test]
fn plugin_descriptors_declare_the_request_counter_as_ya_provider_reads_it() {
    let plan = plan(dev());
    let written = plan
        .entries
        .iter()
        .find_map(|e| match e {
            Entry::File { content, what, .. } if *what == "golemsp plugin descriptor" => {
                Some(content.clone())
            }
            _ => None,
        })
        .unwrap();
    let example =
        std::fs::read_to_string(erigolem_test_utils::repo_root().join("conf/erigon-plugin.json"))
            .unwrap();
    let mut counters = Vec::new();
    for text in [&written, &example] {
        let descs: Vec<ExeUnitDesc> = serde_json::from_str(text).unwrap();
        assert_eq!(descs.len(), 1);
        let desc = &descs[0];
        assert_eq!(desc.name, "erigon");
        assert!(
            desc.version.split('.').all(|p| p.parse::<u64>().is_ok()),
            "{}",
            desc.version
        );
        // Declared counters replace ya-provider's defaults: the standard ones must be there too.
        let c = &desc.config.as_ref().unwrap().counters;
        for (property, name) in [
            ("golem.usage.duration_sec", "duration"),
            ("golem.usage.cpu_sec", "cpu"),
            ("golem.usage.erigolem.requests", "requests"),
        ] {
            assert_eq!(c[property].name, name);
            assert!(c[property].price, "{property} must be priceable");
        }
        let mut names: Vec<_> = c.iter().map(|(k, v)| (k.clone(), v.name.clone())).collect();
        names.sort();
        counters.push(names);
    }
    assert_eq!(
        counters[0], counters[1],
        "conf/erigon-plugin.json and setup's descriptor differ"
    );
    assert_eq!(
        erigolem_node_service::REQUESTS_COUNTER,
        "golem.usage.erigolem.requests"
    );
}

#[test]
fn the_example_nginx_site_is_what_setup_writes() {
    let plan = Plan::new(tls_mainnet_sepolia().resolve().unwrap(), Path::new("/"));
    let site = plan
        .entries
        .iter()
        .find_map(|e| match e {
            Entry::File { content, what, .. } if *what == "nginx site" => Some(content.clone()),
            _ => None,
        })
        .unwrap();
    let example = erigolem_test_utils::repo_root().join("conf/nginx-site.conf");
    assert_eq!(
        std::fs::read_to_string(&example).unwrap(),
        site,
        "{} is out of step with `erigolem-provider setup`",
        example.display()
    );
}

/// The shared nodes' command line follows the Erigon release (`--erigon-version`, or what the
/// binary says): 3.3 keeps its two devp2p listeners, 3.6 has one and its MCP server disabled; a
/// release that cannot run a network is refused before anything is written.
#[test]
fn shared_units_follow_the_erigon_release() {
    let unit = |version: &str| {
        let plan = plan(Inputs {
            erigon_version: Some(version.into()),
            ..tls_mainnet_sepolia()
        });
        plan.entries
            .iter()
            .find_map(|e| match e {
                Entry::File { path, content, .. }
                    if path.ends_with("erigolem-erigon-mainnet.service") =>
                {
                    Some(content.clone())
                }
                _ => None,
            })
            .unwrap()
    };
    let old = unit("3.3.10");
    assert!(old.contains("--p2p.allowed-ports=42005,42006"), "{old}");
    assert!(!old.contains("--mcp.disable"), "{old}");
    assert!(old.contains("Command line of Erigon 3.3.10"));
    let new = unit("3.6.1");
    assert!(!new.contains("--p2p.allowed-ports"), "{new}");
    assert!(new.contains("--mcp.disable"), "{new}");

    for (version, shared, expected) in [
        (
            "three",
            erigolem_primitives::Network::Mainnet,
            "not a version like 3.6.1",
        ),
        (
            "2.60.10",
            erigolem_primitives::Network::Hoodi,
            "does not serve hoodi",
        ),
    ] {
        let err = Inputs {
            erigon_version: Some(version.into()),
            shared: Some(vec![shared]),
            ..tls_mainnet_sepolia()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains(expected), "{version}: {err}");
    }
}

/// Relative paths are taken from the working directory, not refused.
#[test]
fn relative_paths_are_made_absolute_where_given() {
    let s = Inputs {
        data_dir: Some("state/erigolem".into()),
        ..dev()
    }
    .resolve()
    .unwrap();
    assert_eq!(
        s.data_dir,
        std::env::current_dir().unwrap().join("state/erigolem")
    );
}
