//! Nginx gateway: the files a static Nginx site reads to serve each instance at `/<instance>/`
//! — a password file per instance, and the directory of the instances' unix sockets (served by
//! each activity's endpoint guard). Adding, rotating and removing an instance writes files only:
//! Nginx is never reloaded, so other instances' connections are never touched. Everything
//! happens under a short lock, so concurrent runtimes on one host never interleave; entries
//! whose owning runtime died are swept.
//!
//! Layout under the gateway directory (read by the site, see [`site`]):
//! `htpasswd/<instance>` (mode 0640: a header naming the owner, then `user:{SSHA}…`),
//! `sockets/<instance>.sock` (mode 0660), `.lock`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use erigolem_primitives::{Credentials, InstanceName};

pub mod htpasswd;
pub mod site;
mod upstream;

pub use htpasswd::PasswordScheme;
pub use upstream::{InvalidUpstream, Upstream};

/// Where the gateway's files live and how to reach Nginx.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GatewayConfig {
    /// Directory holding `htpasswd/`, `sockets/` and the lock file.
    pub dir: PathBuf,
    /// The Nginx binary.
    #[serde(default = "default_nginx_bin")]
    pub nginx_bin: PathBuf,
    /// The main Nginx config file, for `nginx -t -c`.
    pub nginx_conf: PathBuf,
    /// The Nginx master's pid file (to check that Nginx runs).
    pub pid_file: PathBuf,
    /// Group the Nginx workers run as (e.g. `www-data`): password files (mode 0640) and sockets
    /// (mode 0660) get it.
    #[serde(default)]
    pub password_group: Option<String>,
}

fn default_nginx_bin() -> PathBuf {
    PathBuf::from("/usr/sbin/nginx")
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("nginx rejects its configuration: {0}")]
    Invalid(String),
    #[error("cannot run {bin}: {source}")]
    NginxMissing { bin: PathBuf, source: io::Error },
    #[error("nginx is not running (pid file {path}: {reason})")]
    NotRunning { path: PathBuf, reason: String },
    #[error("unknown group {0:?} for password files")]
    UnknownGroup(String),
    #[error("{path}: path contains characters that cannot be written into an Nginx config")]
    UnsafePath { path: PathBuf },
    #[error("instance {0} already has a gateway entry")]
    Exists(InstanceName),
}

type Result<T, E = GatewayError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> GatewayError + '_ {
    move |source| GatewayError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The process that owns an entry: when it is gone, the entry is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22), so a reused pid is not
    /// mistaken for the owner.
    pub start_time: u64,
}

impl Owner {
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start_time: process_start_time(pid).unwrap_or_default(),
        }
    }

    pub fn is_alive(&self) -> bool {
        process_start_time(self.pid) == Some(self.start_time)
    }
}

fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = stat.rsplit_once(") ")?.1;
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3; start time is field 22.
    fields.nth(22 - 4)?.parse().ok()
}

/// Manages the gateway entries on one host.
#[derive(Debug, Clone)]
pub struct Gateway {
    config: GatewayConfig,
    owner: Owner,
}

/// Holds the gateway lock (an exclusive `flock`) until dropped.
#[derive(Debug)]
struct LockGuard(#[allow(dead_code)] fs::File);

impl Gateway {
    pub fn new(config: GatewayConfig) -> Self {
        Self {
            config,
            owner: Owner::current(),
        }
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    fn htpasswd_dir(&self) -> PathBuf {
        self.config.dir.join("htpasswd")
    }
    fn sockets_dir(&self) -> PathBuf {
        self.config.dir.join("sockets")
    }
    /// The password file of an instance.
    pub fn password_file(&self, i: &InstanceName) -> PathBuf {
        self.htpasswd_dir().join(i.as_str())
    }
    /// The unix socket Nginx passes an instance's requests to.
    pub fn socket(&self, i: &InstanceName) -> PathBuf {
        self.sockets_dir().join(format!("{i}.sock"))
    }

    /// Creates the directory layout (idempotent).
    pub fn ensure_layout(&self) -> Result<()> {
        for dir in [self.htpasswd_dir(), self.sockets_dir()] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            check_safe_path(&dir)?;
        }
        Ok(())
    }

    async fn lock(&self) -> Result<LockGuard> {
        self.ensure_layout()?;
        let path = self.config.dir.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        tokio::task::spawn_blocking(move || {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
                .map(|()| LockGuard(file))
                .map_err(|e| GatewayError::Io {
                    path,
                    source: e.into(),
                })
        })
        .await
        .map_err(|e| GatewayError::Io {
            path: self.config.dir.clone(),
            source: io::Error::other(e),
        })?
    }

    fn header(&self, instance: &InstanceName) -> String {
        format!(
            "# erigolem instance {instance}; owner pid={} start={}\n",
            self.owner.pid, self.owner.start_time
        )
    }

    /// Claims `instance`'s entry: its password file, naming this process as the owner and
    /// holding no credentials yet (Nginx answers 401 to everyone). Its socket may be bound
    /// from now on; [`set_credentials`](Self::set_credentials) opens it.
    pub async fn add(&self, instance: &InstanceName) -> Result<()> {
        let _lock = self.lock().await?;
        let password_file = self.password_file(instance);
        check_safe_path(&password_file)?;
        if let Some(owner) = self.owner_of(instance) {
            if owner != self.owner && owner.is_alive() {
                return Err(GatewayError::Exists(instance.clone()));
            }
        }
        self.write_password_file(&password_file, &self.header(instance))?;
        tracing::debug!(%instance, "gateway entry added");
        Ok(())
    }

    /// Sets the credentials of an entry. Nginx reads password files on each request, so this
    /// takes effect at once and needs no reload.
    pub async fn set_credentials(
        &self,
        instance: &InstanceName,
        credentials: &Credentials,
    ) -> Result<()> {
        self.set_credentials_with_scheme(instance, credentials, PasswordScheme::default())
            .await
    }

    /// [`set_credentials`](Self::set_credentials) with a chosen password hash format (for
    /// benchmarks).
    pub async fn set_credentials_with_scheme(
        &self,
        instance: &InstanceName,
        credentials: &Credentials,
        scheme: PasswordScheme,
    ) -> Result<()> {
        let _lock = self.lock().await?;
        let path = self.password_file(instance);
        if !path.exists() {
            return Err(GatewayError::Io {
                path,
                source: io::ErrorKind::NotFound.into(),
            });
        }
        let line = htpasswd::line(&credentials.user, credentials.password.expose(), scheme);
        self.write_password_file(&path, &format!("{}{line}", self.header(instance)))
    }

    /// Refuses every request at once (401): the password file keeps only its header.
    pub async fn revoke(&self, instance: &InstanceName) -> Result<()> {
        let _lock = self.lock().await?;
        let path = self.password_file(instance);
        if path.exists() {
            self.write_password_file(&path, &self.header(instance))?;
        }
        Ok(())
    }

    /// Removes the entry: its password file (Nginx answers 404 from now on) and its socket.
    pub async fn remove(&self, instance: &InstanceName) -> Result<()> {
        let _lock = self.lock().await?;
        self.remove_locked(instance);
        tracing::debug!(%instance, "gateway entry removed");
        Ok(())
    }

    fn remove_locked(&self, instance: &InstanceName) {
        for f in [self.password_file(instance), self.socket(instance)] {
            match fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot remove {}: {e}", f.display()),
            }
        }
    }

    /// Removes entries whose owning process is gone (e.g. a runtime killed with SIGKILL), and
    /// sockets without an entry.
    pub async fn sweep_stale(&self) -> Result<Vec<InstanceName>> {
        let _lock = self.lock().await?;
        let mut stale = Vec::new();
        for (instance, owner) in self.entries()? {
            if owner.is_none_or(|o| !o.is_alive()) {
                self.remove_locked(&instance);
                stale.push(instance);
            }
        }
        // A socket is bound only after its entry exists: one without an entry is a leftover.
        let dir = self.sockets_dir();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".sock") else {
                continue;
            };
            if let Ok(instance) = InstanceName::new(stem) {
                if !self.password_file(&instance).exists() {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        if !stale.is_empty() {
            tracing::warn!(?stale, "swept stale gateway entries");
        }
        Ok(stale)
    }

    fn owner_of(&self, instance: &InstanceName) -> Option<Owner> {
        let text = fs::read_to_string(self.password_file(instance)).ok()?;
        parse_owner(&text)
    }

    /// The instances that have an entry, with their owners (None if the header is unreadable).
    pub fn entries(&self) -> Result<Vec<(InstanceName, Option<Owner>)>> {
        let dir = self.htpasswd_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Ok(instance) = InstanceName::new(file_name) else {
                continue;
            };
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            out.push((instance, parse_owner(&text)));
        }
        Ok(out)
    }

    /// Runs `nginx -t` on the main config.
    pub async fn validate(&self) -> Result<()> {
        let output = tokio::process::Command::new(&self.config.nginx_bin)
            .args(["-t", "-q", "-e", "stderr", "-c"])
            .arg(&self.config.nginx_conf)
            .output()
            .await
            .map_err(|source| GatewayError::NginxMissing {
                bin: self.config.nginx_bin.clone(),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(GatewayError::Invalid(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ))
        }
    }

    /// The pid of the running Nginx master.
    pub fn master_pid(&self) -> Result<u32> {
        let path = &self.config.pid_file;
        let not_running = |reason: String| GatewayError::NotRunning {
            path: path.clone(),
            reason,
        };
        let text = fs::read_to_string(path).map_err(|e| not_running(e.to_string()))?;
        let pid: u32 = text
            .trim()
            .parse()
            .map_err(|_| not_running(format!("bad content {:?}", text.trim())))?;
        if process_start_time(pid).is_none() {
            return Err(not_running(format!("no process {pid}")));
        }
        Ok(pid)
    }

    /// The worker processes of the running Nginx master (their pids).
    pub fn worker_pids(&self) -> Result<Vec<u32>> {
        let master = self.master_pid()?;
        Ok(workers_of(master).into_iter().map(|(pid, _)| pid).collect())
    }

    fn write_password_file(&self, path: &Path, content: &str) -> Result<()> {
        write_file(path, content, 0o640)?;
        if let Some(group) = &self.config.password_group {
            chown_group(path, group)?;
        }
        Ok(())
    }
}

/// Gives `path` the group `group` (the Nginx workers' group).
pub fn chown_group(path: &Path, group: &str) -> Result<()> {
    let gid = nix::unistd::Group::from_name(group)
        .ok()
        .flatten()
        .ok_or_else(|| GatewayError::UnknownGroup(group.to_owned()))?
        .gid;
    nix::unistd::chown(path, None, Some(gid)).map_err(|e| GatewayError::Io {
        path: path.to_owned(),
        source: e.into(),
    })
}

/// The worker processes of an Nginx master, with their titles (`nginx: worker process …`).
fn workers_of(master: u32) -> Vec<(u32, String)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = stat.rsplit_once(") ")?.1;
            let mut fields = rest.split(' ');
            let state = fields.next()?;
            let ppid: u32 = fields.next()?.parse().ok()?;
            if ppid != master || state == "Z" {
                return None;
            }
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let title = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            title.contains("worker process").then_some((pid, title))
        })
        .collect()
}

fn parse_owner(text: &str) -> Option<Owner> {
    let header = text.lines().next()?;
    let mut pid = None;
    let mut start_time = None;
    for word in header.split_whitespace() {
        if let Some(v) = word.strip_prefix("pid=") {
            pid = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("start=") {
            start_time = v.parse().ok();
        }
    }
    Some(Owner {
        pid: pid?,
        start_time: start_time?,
    })
}

/// Writes a file atomically (temp file + rename) with the given mode. Not fsynced: these files
/// describe live processes, which a crash ends too (a reboot's sweep removes what is left), and
/// two fsyncs made up most of the 2.5–7 ms an endpoint took to open.
fn write_file(path: &Path, content: &str, mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(content.as_bytes())?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = fs::remove_file(&tmp);
        GatewayError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// Paths are written into Nginx directives: refuse anything that could end or extend one.
pub fn check_safe_path(path: &Path) -> Result<()> {
    let s = path.to_string_lossy();
    let bad = s.is_empty()
        || !path.is_absolute()
        || s.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, ';' | '{' | '}' | '"' | '\'' | '$' | '#' | '\\')
        });
    if bad {
        Err(GatewayError::UnsafePath {
            path: path.to_owned(),
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn owner_of_this_process_is_alive() {
        let me = Owner::current();
        assert!(me.start_time > 0);
        assert!(me.is_alive());
        assert!(!Owner {
            start_time: me.start_time + 1,
            ..me
        }
        .is_alive());
        let header = format!(
            "# erigolem instance x; owner pid={} start={}\n",
            me.pid, me.start_time
        );
        assert_eq!(parse_owner(&header), Some(me));
        assert_eq!(parse_owner("location / {}"), None);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in ["/a;b", "/a b", "rel/path", "/a\nb", "/a{b", "/a$b", "/a'b"] {
            assert!(check_safe_path(Path::new(bad)).is_err(), "{bad:?}");
        }
        assert!(check_safe_path(Path::new("/var/lib/erigolem/htpasswd/node-1")).is_ok());
    }
}
