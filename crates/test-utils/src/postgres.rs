//! A private PostgreSQL cluster for tests: Debian's `initdb` into a temp dir, `postgres` on a free
//! port on 127.0.0.1 (socket in the temp dir, fsync off), run as the `postgres` OS user when the
//! test runs as root (PostgreSQL refuses root). Never touches the system cluster. Ended by PID
//! (SIGINT: fast shutdown, then SIGKILL) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where the PostgreSQL binaries are: `$ERIGOLEM_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package, see scripts/setup.sh).
pub fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ERIGOLEM_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).expect(
        "no /usr/lib/postgresql/*/bin/initdb: run scripts/setup.sh (apt package postgresql)",
    )
}

/// A running throw-away cluster with a database `erigolem`.
#[derive(Debug)]
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:<port>/erigolem` (trust auth).
    pub url: String,
    pub port: u16,
    bin: PathBuf,
    child: Child,
    // Last: removed after the server is down.
    dir: tempfile::TempDir,
}

impl Postgres {
    pub async fn start() -> Self {
        let bin = pg_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("erigolem-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let socket = dir.path().join("socket");
        std::fs::create_dir(&socket).unwrap();
        let owner = run_as();
        if let Some((uid, gid)) = owner {
            for p in [dir.path(), &socket] {
                nix::unistd::chown(p, Some(uid.into()), Some(gid.into())).unwrap();
            }
        }

        let mut initdb = tokio::process::Command::new(bin.join("initdb"));
        initdb
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions", "-D"])
            .arg(&data)
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = owner {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().await.unwrap();
        assert!(
            out.status.success(),
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let port = crate::free_port();
        let log = dir.path().join("postgres.log");
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&socket)
            .args([
                "-F",
                "-c",
                "shared_buffers=16MB",
                "-c",
                "max_connections=60",
            ])
            .args(["-c", "full_page_writes=off", "-c", "synchronous_commit=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some((uid, gid)) = owner {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let child = {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0).spawn().unwrap()
        };
        let mut pg = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/erigolem"),
            port,
            bin,
            child,
            dir,
        };
        pg.create_database("erigolem").await;
        pg
    }

    /// Creates database `name` (waiting, with a deadline, until the server accepts connections)
    /// and returns its URL.
    pub async fn create_database(&mut self, name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "postgres exited ({status}) before accepting connections: {}",
                    self.log()
                );
            }
            let out = tokio::process::Command::new(self.bin.join("createdb"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .arg(name)
                .env_remove("PGPASSWORD")
                .env_remove("PGDATABASE")
                .stdin(Stdio::null())
                .output()
                .await
                .unwrap();
            if out.status.success() {
                return format!("postgres://postgres@127.0.0.1:{}/{name}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "postgres on port {} did not accept `createdb {name}` within 30 s: {}\n{}",
                self.port,
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        // SIGINT = fast shutdown: backends are ended, no waiting for clients to leave.
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = kill(pid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The `postgres` OS user's (uid, gid) when running as root; None otherwise (run as ourselves).
fn run_as() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("running as root needs the `postgres` OS user (apt package postgresql)");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}
