//! Applying a [`Plan`] (`setup`), the manifest of what it wrote, and `uninstall`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plan::{Entry, Plan, MANIFEST};
use crate::{rooted, SetupError};

/// What setup wrote, so that uninstall removes exactly that. Paths are logical (without prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    /// Files and symlinks, in the order written.
    pub entries: Vec<ManifestEntry>,
    /// Directories that did not exist before setup (removed by uninstall when empty).
    pub created_dirs: BTreeSet<PathBuf>,
    /// Chain data dirs (removed only with `--purge-data`).
    pub data_dirs: Vec<PathBuf>,
    /// Files the runtime creates in that layout (the gateway lock): removed by uninstall.
    pub runtime_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ManifestEntry {
    File { path: PathBuf, sha256: String },
    Symlink { path: PathBuf, target: PathBuf },
}

impl ManifestEntry {
    pub fn path(&self) -> &Path {
        match self {
            ManifestEntry::File { path, .. } | ManifestEntry::Symlink { path, .. } => path,
        }
    }
}

pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Manifest {
    /// Reads `<prefix>/var/lib/erigolem-provider/manifest.json`; `None` when absent.
    pub fn load(prefix: &Path) -> Result<Option<Manifest>, SetupError> {
        let path = rooted(prefix, Path::new(MANIFEST));
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| SetupError::ConfigFile {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SetupError::Io { path, source }),
        }
    }

    fn to_text(&self) -> String {
        format!(
            "{}\n",
            serde_json::to_string_pretty(self).unwrap_or_default()
        )
    }

    fn owns(&self, path: &Path) -> Option<&ManifestEntry> {
        self.entries.iter().find(|e| e.path() == path)
    }
}

/// The state of one file on disk compared with what setup wants there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disk {
    Absent,
    Same,
    Ours,
    Foreign,
}

fn file_state(real: &Path, content: &[u8], previous: Option<&ManifestEntry>) -> Disk {
    match std::fs::symlink_metadata(real) {
        Err(_) => Disk::Absent,
        Ok(meta) if meta.is_file() => {
            let current = std::fs::read(real).unwrap_or_default();
            if current == content {
                Disk::Same
            } else {
                match previous {
                    Some(ManifestEntry::File { sha256: h, .. }) if *h == sha256(&current) => {
                        Disk::Ours
                    }
                    _ => Disk::Foreign,
                }
            }
        }
        Ok(_) => Disk::Foreign,
    }
}

fn link_state(real: &Path, target: &Path, previous: Option<&ManifestEntry>) -> Disk {
    match std::fs::read_link(real) {
        Ok(t) if t == target => Disk::Same,
        Ok(t) => match previous {
            Some(ManifestEntry::Symlink { target: old, .. }) if *old == t => Disk::Ours,
            _ => Disk::Foreign,
        },
        Err(_) if std::fs::symlink_metadata(real).is_err() => Disk::Absent,
        Err(_) => Disk::Foreign,
    }
}

/// Directories among `path` and its ancestors (below the prefix) that do not exist.
fn missing_dirs(prefix: &Path, path: &Path, out: &mut BTreeSet<PathBuf>) {
    for dir in path.ancestors() {
        if dir == Path::new("/") || dir.as_os_str().is_empty() {
            break;
        }
        if !rooted(prefix, dir).exists() {
            out.insert(dir.to_owned());
        }
    }
}

fn write_atomic(real: &Path, content: &[u8]) -> Result<(), SetupError> {
    let dir = real.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.erigolem-tmp"));
    std::fs::write(&tmp, content).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, real).map_err(io_err(real))
}

/// Options of `setup`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetupOptions {
    pub dry_run: bool,
    /// Overwrite files that setup did not write, or that were changed since.
    pub force: bool,
}

/// What setup did: the report text and whether something could not be written.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: String,
    pub conflicts: usize,
}

fn line(out: &mut String, status: &str, path: &Path, what: &str) {
    let _ = writeln!(out, "{status:<10} {}  ({what})", path.display());
}

/// Runs setup: writes each entry unless it is already as wanted, records the manifest, runs the
/// commands on the real machine. With `dry_run`, prints every file and command instead.
pub fn setup(plan: &Plan, options: SetupOptions) -> Result<Outcome, SetupError> {
    let prefix = &plan.prefix;
    let on_real_machine = prefix == Path::new("/");
    let previous = Manifest::load(prefix)?.unwrap_or_default();
    let mut out = String::new();
    let mut conflicts = 0;
    if options.dry_run {
        let _ = writeln!(out, "# dry run: nothing is written or run");
    }
    // Which directories setup creates (for uninstall), before anything is written.
    let mut created = previous.created_dirs.clone();
    for entry in &plan.entries {
        if let Some(parent) = entry.path().parent() {
            missing_dirs(prefix, parent, &mut created);
        }
    }
    for dir in plan.dirs.iter().chain(&plan.data_dirs) {
        missing_dirs(prefix, dir, &mut created);
    }
    missing_dirs(
        prefix,
        Path::new(MANIFEST).parent().unwrap_or(Path::new("/")),
        &mut created,
    );

    let mut manifest = Manifest {
        version: 1,
        entries: Vec::new(),
        created_dirs: created,
        data_dirs: plan.data_dirs.clone(),
        runtime_files: plan.runtime_files.clone(),
    };
    for dir in plan.dirs.iter().chain(&plan.data_dirs) {
        let real = plan.rooted(dir);
        let (status, what) = if plan.data_dirs.contains(dir) {
            ("data dir", "kept by uninstall unless --purge-data")
        } else {
            ("dir", "directory")
        };
        let exists = real.is_dir();
        let verb = match (exists, options.dry_run) {
            (true, _) => "unchanged",
            (false, true) => "would mkdir",
            (false, false) => {
                std::fs::create_dir_all(&real).map_err(io_err(&real))?;
                "created"
            }
        };
        line(&mut out, verb, &real, &format!("{status}: {what}"));
    }
    for entry in &plan.entries {
        let real = plan.rooted(entry.path());
        let prev = previous.owns(entry.path());
        let (state, record) = match entry {
            Entry::File { path, content, .. } => (
                file_state(&real, content.as_bytes(), prev),
                ManifestEntry::File {
                    path: path.clone(),
                    sha256: sha256(content.as_bytes()),
                },
            ),
            Entry::Symlink { path, target, .. } => (
                link_state(&real, target, prev),
                ManifestEntry::Symlink {
                    path: path.clone(),
                    target: target.clone(),
                },
            ),
        };
        let verb = match (state, options.dry_run) {
            (Disk::Same, _) => "unchanged",
            (Disk::Foreign, _) if !options.force => {
                conflicts += 1;
                line(
                    &mut out,
                    "skipped",
                    &real,
                    &format!(
                        "{}: exists and was not written by setup, or was changed since; --force overwrites",
                        entry.what()
                    ),
                );
                if let Some(p) = prev {
                    // Still ours to account for, as recorded before.
                    manifest.entries.push(p.clone());
                }
                continue;
            }
            (_, true) => "would write",
            (_, false) => {
                match entry {
                    Entry::File { content, .. } => write_atomic(&real, content.as_bytes())?,
                    Entry::Symlink { target, .. } => {
                        if let Some(dir) = real.parent() {
                            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
                        }
                        if std::fs::symlink_metadata(&real).is_ok() {
                            std::fs::remove_file(&real).map_err(io_err(&real))?;
                        }
                        std::os::unix::fs::symlink(target, &real).map_err(io_err(&real))?;
                    }
                }
                "written"
            }
        };
        line(&mut out, verb, &real, entry.what());
        if options.dry_run && verb != "unchanged" {
            match entry {
                Entry::File { content, .. } => {
                    let _ = write!(out, "--- begin {}\n{content}--- end\n", real.display());
                }
                Entry::Symlink { target, .. } => {
                    let _ = writeln!(out, "--- symlink -> {}", target.display());
                }
            }
        }
        manifest.entries.push(record);
    }
    let manifest_real = plan.rooted(Path::new(MANIFEST));
    let text = manifest.to_text();
    let current = std::fs::read(&manifest_real).ok();
    let verb = if current.as_deref() == Some(text.as_bytes()) {
        "unchanged"
    } else if options.dry_run {
        "would write"
    } else {
        write_atomic(&manifest_real, text.as_bytes())?;
        "written"
    };
    line(
        &mut out,
        verb,
        &manifest_real,
        "manifest of what setup wrote",
    );
    if options.dry_run && verb != "unchanged" {
        let _ = write!(
            out,
            "--- begin {}\n{text}--- end\n",
            manifest_real.display()
        );
    }
    for cmd in plan.commands() {
        let shown = cmd.join(" ");
        if options.dry_run {
            let what = if on_real_machine {
                "would run"
            } else {
                "skipped (--prefix: not run)"
            };
            let _ = writeln!(out, "{what:<10} {shown}");
        } else if !on_real_machine {
            let _ = writeln!(out, "{:<10} {shown}  (--prefix: not run)", "skipped");
        } else {
            let status = std::process::Command::new(&cmd[0])
                .args(&cmd[1..])
                .stdin(std::process::Stdio::null())
                .output();
            let verdict = match status {
                Ok(o) if o.status.success() => "ran ok".to_owned(),
                Ok(o) => format!(
                    "FAILED: {}",
                    String::from_utf8_lossy(&o.stderr).trim().replace('\n', " ")
                ),
                Err(e) => format!("FAILED: {e}"),
            };
            let _ = writeln!(out, "{:<10} {shown}  ({verdict})", "run");
        }
    }
    let _ = writeln!(out, "next steps:");
    for step in plan.next_steps() {
        let _ = writeln!(out, "  {step}");
    }
    Ok(Outcome {
        report: out,
        conflicts,
    })
}

/// Options of `uninstall`.
#[derive(Debug, Clone, Copy, Default)]
pub struct UninstallOptions {
    pub dry_run: bool,
    /// Also delete the chain data dirs.
    pub purge_data: bool,
}

/// Removes what the manifest under `prefix` lists: files whose content is still what setup wrote,
/// the symlink, the data dirs with `purge_data`, then the manifest and the now empty directories.
pub fn uninstall(prefix: &Path, options: UninstallOptions) -> Result<String, SetupError> {
    let manifest = Manifest::load(prefix)?.ok_or_else(|| SetupError::NoManifest {
        path: rooted(prefix, Path::new(MANIFEST)),
    })?;
    let mut out = String::new();
    if options.dry_run {
        let _ = writeln!(out, "# dry run: nothing is removed");
    }
    let remove = |real: &Path| -> Result<&'static str, SetupError> {
        if options.dry_run {
            Ok("would remove")
        } else {
            std::fs::remove_file(real).map_err(io_err(real))?;
            Ok("removed")
        }
    };
    for entry in manifest.entries.iter().rev() {
        let real = rooted(prefix, entry.path());
        let (verb, note) = match entry {
            ManifestEntry::File { sha256: want, .. } => match std::fs::read(&real) {
                Err(_) => ("absent", ""),
                Ok(data) if sha256(&data) == *want => (remove(&real)?, ""),
                Ok(_) => ("kept", "changed since setup: remove it yourself"),
            },
            ManifestEntry::Symlink { target, .. } => match std::fs::read_link(&real) {
                Ok(t) if t == *target => (remove(&real)?, ""),
                Ok(_) => ("kept", "points elsewhere since setup"),
                Err(_) => ("absent", ""),
            },
        };
        let _ = writeln!(out, "{verb:<12} {}  {note}", real.display());
    }
    for file in &manifest.runtime_files {
        let real = rooted(prefix, file);
        if real.is_file() {
            let verb = remove(&real)?;
            let _ = writeln!(out, "{verb:<12} {}  (runtime lock file)", real.display());
        }
    }
    for dir in &manifest.data_dirs {
        let real = rooted(prefix, dir);
        if !real.exists() {
            continue;
        }
        if options.purge_data {
            let verb = if options.dry_run {
                "would purge"
            } else {
                std::fs::remove_dir_all(&real).map_err(io_err(&real))?;
                "purged"
            };
            let _ = writeln!(out, "{verb:<12} {}  (chain data)", real.display());
        } else {
            let _ = writeln!(
                out,
                "{:<12} {}  (chain data; --purge-data deletes it)",
                "kept",
                real.display()
            );
        }
    }
    let manifest_real = rooted(prefix, Path::new(MANIFEST));
    let kept_data: Vec<PathBuf> = manifest
        .data_dirs
        .iter()
        .filter(|d| !options.purge_data && rooted(prefix, d).exists())
        .cloned()
        .collect();
    let mut dirs: Vec<&PathBuf> = manifest.created_dirs.iter().collect();
    if kept_data.is_empty() {
        let verb = remove(&manifest_real)?;
        let _ = writeln!(out, "{verb:<12} {}  (manifest)", manifest_real.display());
    } else {
        // Keep a manifest of the kept data (and the directories setup created for it), so that
        // `uninstall --purge-data` can still delete it later.
        let rest = Manifest {
            version: manifest.version,
            entries: Vec::new(),
            created_dirs: manifest
                .created_dirs
                .iter()
                .filter(|d| {
                    kept_data.iter().any(|k| k.starts_with(d)) || Path::new(MANIFEST).starts_with(d)
                })
                .cloned()
                .collect(),
            data_dirs: kept_data,
            runtime_files: Vec::new(),
        };
        dirs.retain(|d| !rest.created_dirs.contains(*d));
        if !options.dry_run {
            write_atomic(&manifest_real, rest.to_text().as_bytes())?;
        }
        let _ = writeln!(
            out,
            "{:<12} {}  (manifest, now listing only the kept chain data)",
            "kept",
            manifest_real.display()
        );
    }
    // Deepest first, only when empty.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        let real = rooted(prefix, dir);
        if !real.is_dir() {
            continue;
        }
        if options.dry_run {
            let _ = writeln!(out, "{:<12} {}  (if empty)", "would rmdir", real.display());
            continue;
        }
        match std::fs::remove_dir(&real) {
            Ok(()) => {
                let _ = writeln!(out, "{:<12} {}", "rmdir", real.display());
            }
            Err(_) => {
                let _ = writeln!(out, "{:<12} {}  (not empty)", "kept", real.display());
            }
        }
    }
    Ok(out)
}
