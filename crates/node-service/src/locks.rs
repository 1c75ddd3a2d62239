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

/// What a new instance asks of the host when it claims its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    /// Live instances the host serves at most.
    pub max_instances: u32,
    /// Disk the instance's node needs; `None`: no node on this host (a shared instance).
    pub disk: Option<DiskNeed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskNeed {
    /// What the node will grow to (Erigon's published size), promised to it until it stops.
    pub node_bytes: u64,
    /// What must stay free besides.
    pub min_free: u64,
}

/// The free space on the data dir's filesystem, as an unprivileged process may use it.
pub(crate) fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether a node needing `need` fits: `free` bytes free now, of which `promised` will still be
/// taken by other instances' nodes as they grow to their size.
pub(crate) fn check_disk(free: u64, promised: u64, need: DiskNeed) -> Result<(), ServiceError> {
    let wanted = need.node_bytes.checked_add(need.min_free);
    if wanted.is_some_and(|wanted| free.saturating_sub(promised) >= wanted) {
        return Ok(());
    }
    Err(ServiceError::DiskLow {
        free,
        promised,
        node: need.node_bytes,
        min_free: need.min_free,
    })
}

/// Where an instance's directory records the disk promised to its node.
const PROMISED_FILE: &str = "disk-promised";

/// Bytes a directory tree takes on disk (allocated blocks, so sparse files count as they are).
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks().saturating_mul(512);
    if !meta.is_dir() {
        return own;
    }
    let children = fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| disk_usage(&e.path())).sum())
        .unwrap_or(0u64);
    own.saturating_add(children)
}

/// What a live instance's node will still take: its promise less what it already uses.
fn still_promised(dir: &Path) -> u64 {
    let promised = fs::read_to_string(dir.join(PROMISED_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if promised == 0 {
        return 0;
    }
    promised.saturating_sub(disk_usage(dir))
}

impl InstanceLock {
    /// Claims `instances/<name>/` if the host admits one more instance: fewer than
    /// `max_instances` live ones and, for a node, room on the disk beside what running nodes were
    /// promised. Counting, checking and claiming happen under one host lock, so instances started
    /// at once (each in its own runtime process) never exceed the limits together.
    pub(crate) fn claim(
        instances_dir: &Path,
        name: &InstanceName,
        admission: Admission,
    ) -> Result<Self, ServiceError> {
        let dir = instances_dir.join(name.as_str());
        let data_err = |source| ServiceError::DataDir {
            path: dir.clone(),
            source,
        };
        let _host = host_lock(instances_dir).map_err(data_err)?;
        let live = live_instances(instances_dir);
        if live.len() >= admission.max_instances as usize {
            return Err(ServiceError::Capacity {
                max: admission.max_instances,
            });
        }
        if let Some(need) = admission.disk {
            let free = free_bytes(instances_dir).map_err(data_err)?;
            let promised = live.iter().map(|d| still_promised(d)).sum();
            check_disk(free, promised, need)?;
        }
        fs::create_dir_all(&dir).map_err(data_err)?;
        match try_lock(&dir.join(LOCK_FILE)).map_err(data_err)? {
            Some(file) => {
                // A directory left by a killed runtime: start clean.
                for entry in fs::read_dir(&dir).map_err(data_err)?.flatten() {
                    if entry.file_name() != LOCK_FILE {
                        let _ = remove_any(&entry.path());
                    }
                }
                let claim = Self { dir, _file: file };
                if let Some(need) = admission.disk.filter(|n| n.node_bytes > 0) {
                    fs::write(claim.dir.join(PROMISED_FILE), need.node_bytes.to_string()).map_err(
                        |source| ServiceError::DataDir {
                            path: claim.dir.clone(),
                            source,
                        },
                    )?;
                }
                Ok(claim)
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

/// Instance directories claimed by a live runtime (the caller holds the host lock).
fn live_instances(instances_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(instances_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| matches!(try_lock(&p.join(LOCK_FILE)), Ok(None)))
        .collect()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GB: u64 = 1_000_000_000;

    #[test]
    fn a_node_fits_only_beside_what_running_nodes_were_promised() {
        let need = |node_bytes| DiskNeed {
            node_bytes,
            min_free: 2 * GB,
        };
        // (free, promised to others, node) → admitted
        let table = [
            (500 * GB, 0, 419 * GB, true),
            (500 * GB, 80 * GB, 419 * GB, false),
            (421 * GB, 0, 419 * GB, true),
            (421 * GB - 1, 0, 419 * GB, false),
            // anvil: only the floor.
            (2 * GB, 0, 0, true),
            (GB, 0, 0, false),
            // more promised than free (nodes grew past their figure): nothing fits.
            (10 * GB, 20 * GB, 0, false),
            (u64::MAX, 0, u64::MAX, false),
        ];
        for (free, promised, node, admitted) in table {
            let got = check_disk(free, promised, need(node));
            assert_eq!(got.is_ok(), admitted, "{free} {promised} {node}: {got:?}");
        }
        let err = check_disk(500 * GB, 80 * GB, need(419 * GB))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "not enough disk on this provider: 500.0 GB free, 80.0 GB of it promised to running \
             nodes; this node needs 419.0 GB and 2.0 GB must stay free"
        );
    }

    #[test]
    fn a_running_node_is_promised_only_what_it_does_not_use_yet() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(still_promised(dir.path()), 0, "no promise");
        fs::write(dir.path().join(PROMISED_FILE), "10000000").unwrap();
        let before = still_promised(dir.path());
        assert!(before <= 10_000_000 && before > 9_000_000, "{before}");
        fs::write(dir.path().join("chaindata"), vec![1u8; 4_000_000]).unwrap();
        let after = still_promised(dir.path());
        assert!(after <= 6_000_000 && after > 5_000_000, "{after}");
        fs::write(dir.path().join("more"), vec![1u8; 8_000_000]).unwrap();
        assert_eq!(still_promised(dir.path()), 0, "grown past its figure");
    }
}
