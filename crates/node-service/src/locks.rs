//! Host-wide claims held with `flock`: the kernel releases them when the holder dies, so a runtime
//! killed with SIGKILL never leaves a claim behind, and the next start can tell what is stale.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use erigolem_engine::PortBlock;
use erigolem_primitives::InstanceName;
use rustix::fs::{flock, FlockOperation};

use crate::{PortRange, ServiceError};

const LOCK_FILE: &str = ".lock";

fn try_lock(path: &Path) -> std::io::Result<Option<File>> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// An instance's directory (`instances/<name>/`), claimed for as long as this value lives.
#[derive(Debug)]
pub(crate) struct InstanceLock {
    dir: PathBuf,
    _file: File,
}

/// Held while instance directories are created, probed or swept: a sweep never deletes a directory
/// between its creation and its claim, and a probe's brief lock is never mistaken for a claim.
fn host_lock(instances_dir: &Path) -> std::io::Result<File> {
    fs::create_dir_all(instances_dir)?;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(instances_dir.join(LOCK_FILE))?;
    flock(&file, FlockOperation::LockExclusive)?;
    Ok(file)
}

impl InstanceLock {
    pub(crate) fn acquire(instances_dir: &Path, name: &InstanceName) -> Result<Self, ServiceError> {
        let dir = instances_dir.join(name.as_str());
        let data_err = |source| ServiceError::DataDir {
            path: dir.clone(),
            source,
        };
        let _host = host_lock(instances_dir).map_err(data_err)?;
        fs::create_dir_all(&dir).map_err(data_err)?;
        match try_lock(&dir.join(LOCK_FILE)).map_err(data_err)? {
            Some(file) => {
                // A directory left by a killed runtime: start clean.
                for entry in fs::read_dir(&dir).map_err(data_err)?.flatten() {
                    if entry.file_name() != LOCK_FILE {
                        let _ = remove_any(&entry.path());
                    }
                }
                Ok(Self { dir, _file: file })
            }
            None => Err(ServiceError::InstanceExists(name.clone())),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes the instance's directory (node data, logs) and releases the claim.
    pub(crate) fn remove(self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// How many instance directories are claimed by a live runtime.
pub(crate) fn instances_in_use(instances_dir: &Path) -> usize {
    let Ok(_host) = host_lock(instances_dir) else {
        return 0;
    };
    let Ok(entries) = fs::read_dir(instances_dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter(|e| matches!(try_lock(&e.path().join(LOCK_FILE)), Ok(None)))
        .count()
}

/// Deletes instance directories nobody holds (their runtime was killed).
pub(crate) fn sweep_instance_dirs(instances_dir: &Path) {
    let Ok(_host) = host_lock(instances_dir) else {
        return;
    };
    let Ok(entries) = fs::read_dir(instances_dir) else {
        return;
    };
    for entry in entries.flatten().filter(|e| e.path().is_dir()) {
        if let Ok(Some(_unclaimed)) = try_lock(&entry.path().join(LOCK_FILE)) {
            tracing::warn!(
                "removing stale instance directory {}",
                entry.path().display()
            );
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A block of ports claimed for one dedicated instance.
#[derive(Debug)]
pub(crate) struct PortLease {
    block: PortBlock,
    _file: File,
}

impl PortLease {
    /// Claims the first block of the range that no other instance holds and whose ports are all free.
    pub(crate) fn acquire(ports_dir: &Path, range: PortRange) -> Result<Self, ServiceError> {
        let data_err = |source| ServiceError::DataDir {
            path: ports_dir.to_owned(),
            source,
        };
        fs::create_dir_all(ports_dir).map_err(data_err)?;
        for block in range.blocks() {
            let Some(file) =
                try_lock(&ports_dir.join(format!("{}.lock", block.base))).map_err(data_err)?
            else {
                continue;
            };
            let all_free = (block.base..block.base + PortBlock::LEN).all(|p| {
                TcpListener::bind(("127.0.0.1", p)).is_ok()
                    && TcpListener::bind(("0.0.0.0", p)).is_ok()
            });
            if all_free {
                return Ok(Self { block, _file: file });
            }
        }
        Err(ServiceError::PortsExhausted {
            start: range.start,
            end: range.end,
        })
    }

    pub(crate) fn block(&self) -> PortBlock {
        self.block
    }
}
