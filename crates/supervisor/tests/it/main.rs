//! Supervisor tests against real processes (`sh`, `sleep`).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use erigolem_supervisor::{ProcessSpec, ProcessState, RestartPolicy, Supervised};

fn quick_policy() -> RestartPolicy {
    RestartPolicy {
        max_restarts: 2,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        stable_after: Duration::from_secs(60),
        stop_grace: Duration::from_secs(2),
    }
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new("/bin/sh").args(["-c", script])
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; its state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

async fn wait_for(
    rx: &mut tokio::sync::watch::Receiver<ProcessState>,
    want: impl Fn(&ProcessState) -> bool,
) -> ProcessState {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let s = rx.borrow_and_update().clone();
            if want(&s) {
                return s;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("state not reached in time")
}

async fn wait_file(path: &Path) -> String {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.trim().is_empty() {
                return s;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} never written", path.display());
}

#[tokio::test]
async fn stop_terminates_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    // The shell starts a grandchild and waits on it: stop must reach both.
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let node = Supervised::spawn(sh(&script), dir.path().join("log"), quick_policy()).unwrap();
    let ProcessState::Running { pid, .. } = node.state() else {
        panic!()
    };
    let grandchild: u32 = wait_file(&pidfile).await.trim().parse().unwrap();
    assert!(alive(pid) && alive(grandchild));
    node.stop().await;
    assert!(!alive(pid), "leader survived stop");
    // The grandchild is reparented and reaped by init; give it a moment to be reaped.
    for _ in 0..100 {
        if !alive(grandchild) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("grandchild {grandchild} survived stop");
}

#[tokio::test]
async fn process_ignoring_sigterm_is_killed_after_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut policy = quick_policy();
    policy.stop_grace = Duration::from_millis(300);
    let ready = dir.path().join("ready");
    let script = format!(
        "trap '' TERM; echo 1 > {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let node = Supervised::spawn(sh(&script), dir.path().join("log"), policy).unwrap();
    let ProcessState::Running { pid, .. } = node.state() else {
        panic!()
    };
    wait_file(&ready).await;
    node.stop().await;
    assert!(!alive(pid));
}

#[tokio::test]
async fn crash_is_restarted_then_failed_with_log_tail() {
    let dir = tempfile::tempdir().unwrap();
    let node = Supervised::spawn(
        sh("echo booting; echo boom >&2; exit 3"),
        dir.path().join("log"),
        quick_policy(),
    )
    .unwrap();
    let mut rx = node.subscribe();
    let restarted = wait_for(&mut rx, |s| {
        matches!(
            s,
            ProcessState::Running { restarts: 1.., .. }
                | ProcessState::Restarting { restarts: 1.., .. }
        )
    })
    .await;
    assert!(matches!(
        restarted,
        ProcessState::Running { .. } | ProcessState::Restarting { .. }
    ));
    let failed = wait_for(&mut rx, |s| matches!(s, ProcessState::Failed { .. })).await;
    let ProcessState::Failed { restarts, reason } = failed else {
        unreachable!()
    };
    assert_eq!(restarts, 2);
    assert!(reason.contains("exited 3 times"), "{reason}");
    assert!(reason.contains("exit status: 3"), "{reason}");
    assert!(reason.contains("boom"), "log tail missing: {reason}");
    assert_eq!(node.log_tail(2).unwrap(), "booting\nboom\n");
}

#[tokio::test]
async fn a_single_crash_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed-once");
    let script = format!(
        "if [ -e {m} ]; then exec sleep 300; else touch {m}; exit 1; fi",
        m = marker.display()
    );
    let node = Supervised::spawn(sh(&script), dir.path().join("log"), quick_policy()).unwrap();
    let mut rx = node.subscribe();
    let s = wait_for(&mut rx, |s| {
        matches!(s, ProcessState::Running { restarts: 1, .. })
    })
    .await;
    let ProcessState::Running { pid, .. } = s else {
        unreachable!()
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(node.state(), ProcessState::Running { pid, restarts: 1 });
    node.stop().await;
    assert!(!alive(pid));
}

#[tokio::test]
async fn missing_binary_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Supervised::spawn(
        ProcessSpec::new("/nonexistent/erigon"),
        dir.path().join("log"),
        quick_policy(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/erigon"), "{err}");
}

#[test]
fn killed_supervisor_takes_its_node_down() {
    // A child process plays the supervisor: it starts a node and is then SIGKILLed.
    let dir = tempfile::tempdir().unwrap();
    let node_pid_file = dir.path().join("node.pid");
    let exe = std::env::current_exe().unwrap();
    let mut sup = std::process::Command::new(exe)
        .args([
            "--exact",
            "helper_supervisor_process",
            "--ignored",
            "--nocapture",
        ])
        .env("SUPERVISOR_HELPER_PIDFILE", &node_pid_file)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let node_pid: u32 = loop {
        if let Ok(s) = std::fs::read_to_string(&node_pid_file) {
            if let Ok(p) = s.trim().parse() {
                break p;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "helper never started its node"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(alive(node_pid));
    sup.kill().unwrap(); // SIGKILL
    sup.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while alive(node_pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "node {node_pid} outlived its killed supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Not a test on its own: the process `killed_supervisor_takes_its_node_down` starts and kills.
#[tokio::test(flavor = "current_thread")]
#[ignore]
async fn helper_supervisor_process() {
    let Ok(pidfile) = std::env::var("SUPERVISOR_HELPER_PIDFILE") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = Supervised::spawn(
        ProcessSpec::new("sleep").args(["300"]),
        dir.path().join("log"),
        quick_policy(),
    )
    .unwrap();
    let ProcessState::Running { pid, .. } = node.state() else {
        panic!()
    };
    std::fs::write(pidfile, pid.to_string()).unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
}

/// A node that writes without end does not fill the disk: its log rotates at the default cap
/// (16 MiB, two rotated files kept), and its last lines still read across the rotation.
#[tokio::test]
async fn a_log_over_its_cap_rotates_and_its_tail_reads_across_the_rotation() {
    const CAP: u64 = 16 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    const LINE: &str = "a line of a very chatty node!!!";
    assert_eq!(LINE.len() + 1, 32);
    // 32-byte lines: exactly three caps of them, then one more line.
    let script = format!(
        "yes '{LINE}' | head -c {}; echo last line; exec sleep 300",
        3 * CAP
    );
    let node = Supervised::spawn(sh(&script), &log, quick_policy()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while erigolem_supervisor::tail_lines(&log, 1).unwrap_or_default() != "last line\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "the last line never reached the log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let size = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .map(|m| m.len())
            .ok()
    };
    assert_eq!(
        size("node.log"),
        Some(10),
        "the live file holds the last line only"
    );
    assert_eq!(size("node.log.1"), Some(CAP));
    assert_eq!(size("node.log.2"), Some(CAP));
    assert_eq!(size("node.log.3"), None, "at most two rotated files");
    // The tail continues into the rotated files.
    let tail = erigolem_supervisor::tail_lines(&log, 100).unwrap();
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 100);
    assert_eq!(lines[99], "last line");
    assert!(lines[..99].iter().all(|l| *l == LINE));
    node.stop().await;
}
