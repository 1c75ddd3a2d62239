//! `erigolem serve` as a process of its own, for tests and benchmarks with several replicas: its
//! own listener (a free port), data dir and log file; killed with SIGKILL (a crash) or ended with
//! SIGTERM (a graceful stop), by PID.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::ChildGuard;

/// A running `erigolem serve`.
#[derive(Debug)]
pub struct ServeProcess {
    pub url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<ChildGuard>,
}

impl ServeProcess {
    /// Starts `bin serve --listen 127.0.0.1:<free> --data-dir <data_dir> <args…>` with `env`
    /// (RUST_LOG=info unless given), logging to `<data_dir>.log` (appended: a restarted replica
    /// keeps its history), and waits until `/healthz` answers (30 s).
    pub async fn start(bin: &Path, data_dir: &Path, args: &[String], env: &[(&str, &str)]) -> Self {
        let port = crate::free_port();
        Self::start_on(bin, data_dir, port, args, env).await
    }

    /// [`ServeProcess::start`] on a given port.
    pub async fn start_on(
        bin: &Path,
        data_dir: &Path,
        port: u16,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Self {
        let log = data_dir.with_extension("log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut this = Self {
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_owned(),
            log,
            child: Some(ChildGuard::spawn(&mut cmd)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = this.child.as_mut().and_then(|c| c.try_exit_code()) {
                panic!("erigolem serve exited ({status}):\n{}", this.log_text());
            }
            if this.healthz_opt().await.is_some() {
                return this;
            }
            assert!(
                Instant::now() < deadline,
                "erigolem serve did not answer /healthz within 30 s:\n{}",
                this.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts it expecting it to refuse: waits (30 s) for it to exit and returns its log.
    pub async fn refused(
        bin: &Path,
        data_dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> String {
        let log = data_dir.with_extension("log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", crate::free_port())])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = ChildGuard::spawn(&mut cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_exit_code() {
                break status;
            }
            assert!(Instant::now() < deadline, "it did not exit within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(!status.success(), "it started");
        std::fs::read_to_string(&log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// SIGKILL: the replica vanishes mid-work, handing nothing back.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.pid() as i32), Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_exit_code().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// SIGTERM and wait (10 s): a graceful stop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.pid() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_exit_code().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// `/healthz` as JSON (panics if it does not answer).
    pub async fn healthz(&self) -> Value {
        self.healthz_opt()
            .await
            .unwrap_or_else(|| panic!("{} /healthz did not answer:\n{}", self.url, self.log_text()))
    }

    pub async fn healthz_opt(&self) -> Option<Value> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let resp = client
            .get(format!("{}/healthz", self.url))
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }

    /// Node ids this replica holds, per its `/healthz`.
    pub async fn held(&self) -> Vec<String> {
        self.healthz().await["nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// When this replica last polled `node` (unix ms), per its `/healthz`.
    pub async fn last_poll(&self, node: &str) -> Option<i64> {
        self.healthz_opt().await?["polled"][node]["last_poll"].as_i64()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
