//! A whole provider machine under a temp prefix: setup, the real `nginx -t`, Nginx started from the
//! generated site, a runtime instance reached through it with credentials, `check` passing and then
//! naming what was broken, setup idempotent, uninstall restoring the prefix.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use erigolem_provider_setup::check::{all_ok, table};
use erigolem_provider_setup::{
    check, setup, uninstall, CheckOptions, CheckResult, Inputs, Plan, SetupOptions, Status,
    UninstallOptions,
};
use erigolem_runtime_client::RuntimeBinary;
use erigolem_test_utils::{
    anvil_bin, free_port, free_port_block, nginx_bin, rpc, wait_for, workspace_bin, Anvil,
    AnvilOptions, ChildGuard, RpcError,
};
use serde_json::json;

/// Every path under `root` with its kind, content hash or link target, and (optionally) mtime.
fn listing(root: &Path, mtimes: bool) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, mtimes: bool, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let time = if mtimes {
                format!(" mtime={}.{}", meta.mtime(), meta.mtime_nsec())
            } else {
                String::new()
            };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, format!("link {}{time}", target.display()));
            } else if meta.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &path, mtimes, out);
            } else {
                let data = std::fs::read(&path).unwrap();
                out.insert(
                    rel,
                    format!(
                        "file {}{time}",
                        erigolem_provider_setup::install::sha256(&data)
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, mtimes, &mut out);
    out
}

fn link(prefix: &Path, logical: &str, target: &Path) {
    let path = prefix.join(logical.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// The machine before setup: binaries where the defaults expect them, a minimal nginx.conf that
/// includes `sites-enabled/*` (as Debian's does), Nginx's temp files and log outside the prefix.
fn machine(prefix: &Path, outside: &Path) {
    link(prefix, "/usr/sbin/nginx", &nginx_bin());
    link(
        prefix,
        "/usr/local/bin/ya-runtime-erigon",
        &workspace_bin("ya-runtime-erigon"),
    );
    link(
        prefix,
        "/usr/local/bin/erigon",
        &workspace_bin("fake-erigon"),
    );
    link(prefix, "/usr/local/bin/anvil", &anvil_bin());
    std::fs::create_dir_all(prefix.join("run")).unwrap();
    std::fs::create_dir_all(outside.join("tmp")).unwrap();
    let user = if nix_root() { "user www-data;\n" } else { "" };
    let (p, o) = (prefix.display(), outside.display());
    std::fs::create_dir_all(prefix.join("etc/nginx")).unwrap();
    std::fs::write(
        prefix.join("etc/nginx/nginx.conf"),
        format!(
            "{user}worker_processes 1;\npid {p}/run/nginx.pid;\nerror_log {o}/error.log warn;\n\
             events {{\n    worker_connections 1024;\n}}\nhttp {{\n    access_log off;\n\
             client_body_temp_path {o}/tmp/body;\n    proxy_temp_path {o}/tmp/proxy;\n\
             fastcgi_temp_path {o}/tmp/fastcgi;\n    uwsgi_temp_path {o}/tmp/uwsgi;\n\
             scgi_temp_path {o}/tmp/scgi;\n    include {p}/etc/nginx/sites-enabled/*;\n}}\n"
        ),
    )
    .unwrap();
}

fn nix_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

fn start_nginx(
    prefix: &Path,
    outside: &Path,
    port: u16,
) -> impl std::future::Future<Output = ChildGuard> {
    let child = ChildGuard::spawn(
        std::process::Command::new(prefix.join("usr/sbin/nginx"))
            .args(["-e", "stderr", "-g", "daemon off;", "-c"])
            .arg(prefix.join("etc/nginx/nginx.conf"))
            .stderr(std::fs::File::create(outside.join("nginx.stderr")).unwrap()),
    );
    let pid_file = prefix.join("run/nginx.pid");
    async move {
        wait_for("nginx to listen", Duration::from_secs(10), || {
            let pid_file = pid_file.clone();
            async move {
                (pid_file.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
                    .then_some(())
            }
        })
        .await;
        child
    }
}

fn result<'a>(results: &'a [CheckResult], name: &str) -> &'a CheckResult {
    results
        .iter()
        .find(|r| r.check == name)
        .unwrap_or_else(|| panic!("no check {name}: {}", table(results)))
}

fn assert_fails(results: &[CheckResult], name: &str, detail: &str) {
    let r = result(results, name);
    assert!(
        r.status == Status::Fail && r.detail.contains(detail) && !r.fix.is_empty(),
        "{name} should fail with {detail:?}:\n{}",
        table(results)
    );
    assert!(!all_ok(results));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_serves_through_nginx_check_names_broken_parts_uninstall_restores() {
    let tmp = tempfile::tempdir().unwrap();
    // Nginx workers (www-data when root) must reach the password files under the prefix.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let prefix = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    machine(&prefix, &outside);
    let shared = Anvil::start_with(AnvilOptions {
        chain_id: Some(erigolem_primitives::Network::Dev.chain_id()),
        ..AnvilOptions::default()
    })
    .await;
    let port = free_port();
    let range = free_port_block(24);
    let inputs = Inputs {
        server_name: Some("localhost".into()),
        listen_port: Some(port),
        public_url: Some(format!("http://127.0.0.1:{port}")),
        anvil: Some("/usr/local/bin/anvil".into()),
        shared_url: Some(vec![format!("dev={}", shared.url())]),
        port_range_start: Some(range),
        port_range_end: Some(range + 24),
        ..Inputs::default()
    };
    let plan = Plan::new(inputs.resolve().unwrap(), &prefix);
    let before = listing(&prefix, false);

    // Setup writes every file; a second run changes nothing, not even an mtime.
    let first = setup(&plan, SetupOptions::default()).unwrap();
    assert_eq!(first.conflicts, 0, "{}", first.report);
    for file in [
        "usr/lib/yagna/plugins/ya-runtime-erigon.json",
        "var/lib/erigolem-provider/share/ya-runtime-erigon/ya-runtime-erigon.json",
        "etc/nginx/sites-available/erigolem.conf",
        "etc/systemd/system/erigolem-provider.service",
        "var/lib/erigolem-provider/manifest.json",
    ] {
        assert!(prefix.join(file).is_file(), "{file}: {}", first.report);
    }
    assert_eq!(
        std::fs::read_link(prefix.join("etc/nginx/sites-enabled/erigolem.conf")).unwrap(),
        PathBuf::from("../sites-available/erigolem.conf")
    );
    assert_eq!(
        listing(&prefix, false)["etc/nginx/nginx.conf"],
        before["etc/nginx/nginx.conf"],
        "nginx.conf is never touched"
    );
    let after_first = listing(&prefix, true);
    let second = setup(&plan, SetupOptions::default()).unwrap();
    assert!(
        !second.report.contains("written") && !second.report.contains("created"),
        "{}",
        second.report
    );
    assert_eq!(listing(&prefix, true), after_first, "{}", second.report);

    // The real `nginx -t` on a config that includes the generated site.
    let conf = prefix.join("etc/nginx/nginx.conf");
    let t = std::process::Command::new(nginx_bin())
        .args(["-t", "-q", "-e", "stderr", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));

    // Nginx from that config, and an instance through the generated site with credentials.
    let nginx = start_nginx(&prefix, &outside, port).await;
    let runtime = RuntimeBinary::new(
        prefix.join("usr/local/bin/ya-runtime-erigon"),
        outside.join("work/a1"),
    )
    .env(
        "XDG_DATA_HOME",
        prefix.join("var/lib/erigolem-provider/share"),
    )
    .env("RUST_BACKTRACE", "0");
    let session = runtime
        .start(r#"{"network":"dev","mode":"shared"}"#)
        .await
        .unwrap();
    let status = session.status().await.unwrap();
    assert!(
        status.url.starts_with(&format!("http://127.0.0.1:{port}/")),
        "{}",
        status.url
    );
    let creds = (status.auth.user.as_str(), status.auth.password.expose());
    let chain = rpc(&status.url, Some(creds), "eth_chainId", json!([]))
        .await
        .unwrap();
    assert_eq!(chain, json!("0x539"));
    assert!(matches!(
        rpc(&status.url, None, "eth_chainId", json!([])).await,
        Err(RpcError::Http(401))
    ));

    // The doctor passes on that machine.
    let options = CheckOptions::default();
    let results = check(&plan, &options).await;
    assert!(all_ok(&results), "{}", table(&results));
    for name in [
        "site reachable",
        "runtime test",
        "shared node dev",
        "nginx config",
        "port site",
    ] {
        assert_eq!(
            result(&results, name).status,
            Status::Pass,
            "{}",
            table(&results)
        );
    }
    assert_eq!(result(&results, "yagna").status, Status::Skip);

    // Runtime binary removed.
    let runtime_link = prefix.join("usr/local/bin/ya-runtime-erigon");
    let aside = outside.join("runtime-aside");
    std::fs::rename(&runtime_link, &aside).unwrap();
    let results = check(&plan, &options).await;
    assert_fails(&results, "binary runtime", "missing");
    assert_fails(&results, "runtime test", "missing");
    std::fs::rename(&aside, &runtime_link).unwrap();

    // Shared node down.
    drop(shared);
    let results = check(&plan, &options).await;
    assert_fails(&results, "shared node dev", "127.0.0.1");
    assert_eq!(result(&results, "site reachable").status, Status::Pass);

    session.shutdown().await.unwrap();

    // Nginx stopped.
    drop(nginx);
    let results = check(&plan, &options).await;
    assert_fails(&results, "site reachable", "nothing listens");
    // Port taken by something else.
    let squatter = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    let results = check(&plan, &options).await;
    assert_fails(&results, "port site", "expected nginx");
    assert_fails(&results, "site reachable", "not as nginx");
    drop(squatter);
    println!("{}", table(&results));
    // Nginx's own pid file (it may leave it empty when stopped): not setup's to remove.
    let _ = std::fs::remove_file(prefix.join("run/nginx.pid"));

    // Uninstall keeps the chain data unless asked; with --purge-data the prefix is as before.
    let canary = prefix.join("var/lib/erigolem/instances/keep-me");
    std::fs::write(&canary, "chain data").unwrap();
    let report = uninstall(&prefix, UninstallOptions::default()).unwrap();
    assert!(canary.exists(), "{report}");
    assert!(!prefix
        .join("etc/nginx/sites-available/erigolem.conf")
        .exists());
    std::fs::remove_file(&canary).unwrap();
    let again = setup(&plan, SetupOptions::default()).unwrap();
    assert_eq!(again.conflicts, 0, "{}", again.report);
    // A file the user changed is kept and reported.
    let unit = prefix.join("etc/systemd/system/erigolem-provider.service");
    std::fs::write(&unit, "# mine now\n").unwrap();
    let report = uninstall(
        &prefix,
        UninstallOptions {
            dry_run: false,
            purge_data: true,
        },
    )
    .unwrap();
    assert!(report.contains("changed since setup"), "{report}");
    assert!(unit.exists());
    std::fs::remove_file(&unit).unwrap();
    std::fs::remove_dir(unit.parent().unwrap()).unwrap();
    std::fs::remove_dir(unit.parent().unwrap().parent().unwrap()).unwrap();
    assert_eq!(listing(&prefix, false), before, "{report}");
}

#[test]
fn uninstall_restores_the_prefix_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path();
    std::fs::create_dir_all(prefix.join("etc/nginx")).unwrap();
    std::fs::write(prefix.join("etc/nginx/nginx.conf"), "# theirs\n").unwrap();
    let before = listing(prefix, false);
    let inputs = Inputs {
        server_name: Some("node.example.org".into()),
        shared: Some(vec![erigolem_primitives::Network::Mainnet]),
        preset: Some(true),
        ..Inputs::default()
    };
    let plan = Plan::new(inputs.resolve().unwrap(), prefix);
    setup(&plan, SetupOptions::default()).unwrap();
    // A file that setup did not write is not overwritten.
    let site = prefix.join("etc/nginx/sites-available/erigolem.conf");
    std::fs::write(&site, "# theirs too\n").unwrap();
    let outcome = setup(&plan, SetupOptions::default()).unwrap();
    assert_eq!(outcome.conflicts, 1, "{}", outcome.report);
    assert_eq!(std::fs::read_to_string(&site).unwrap(), "# theirs too\n");
    let forced = setup(
        &plan,
        SetupOptions {
            dry_run: false,
            force: true,
        },
    )
    .unwrap();
    assert_eq!(forced.conflicts, 0, "{}", forced.report);
    let dry = uninstall(
        prefix,
        UninstallOptions {
            dry_run: true,
            purge_data: true,
        },
    )
    .unwrap();
    assert!(site.exists(), "{dry}");
    uninstall(
        prefix,
        UninstallOptions {
            dry_run: false,
            purge_data: true,
        },
    )
    .unwrap();
    assert_eq!(listing(prefix, false), before);
    assert_eq!(
        std::fs::read_to_string(prefix.join("etc/nginx/nginx.conf")).unwrap(),
        "# theirs\n"
    );
}
