//! The 32-byte key that encrypts node passwords at rest, and its file.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{KeyInit, OsRng};
use chacha20poly1305::XChaCha20Poly1305;

use crate::StoreError;

/// An XChaCha20-Poly1305 key. Its Debug output shows nothing of it.
#[derive(Clone)]
pub struct Key(pub(crate) chacha20poly1305::Key);

impl Key {
    /// A fresh random key from the OS generator.
    pub fn generate() -> Self {
        Self(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes.into())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The key file: 64 hex digits and a newline, mode 0600.
#[derive(Debug)]
pub struct KeyFile;

impl KeyFile {
    /// Loads the key at `path`, or creates it (mode 0600, parent directories 0700) when there is
    /// none. Refuses a file that group or others may access, naming the path. Safe against a
    /// concurrent creator: the file appears whole (written aside, then hard-linked into place).
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Key, StoreError> {
        let path = path.as_ref();
        match Self::load(path) {
            Err(StoreError::KeyFile { source, .. }) if source.kind() == ErrorKind::NotFound => {
                Self::create(path)
            }
            other => other,
        }
    }

    /// Loads an existing key file (no creation).
    pub fn load(path: impl AsRef<Path>) -> Result<Key, StoreError> {
        let path = path.as_ref();
        let io = |source| StoreError::KeyFile {
            path: path.to_owned(),
            source,
        };
        let file = fs::File::open(path).map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(StoreError::KeyFilePermissions {
                path: path.to_owned(),
                mode: mode & 0o7777,
            });
        }
        let text = fs::read_to_string(path).map_err(io)?;
        let invalid = || StoreError::KeyFileInvalid {
            path: path.to_owned(),
        };
        let bytes: [u8; 32] = hex::decode(text.trim())
            .map_err(|_| invalid())?
            .try_into()
            .map_err(|_| invalid())?;
        Ok(Key::from_bytes(bytes))
    }

    fn create(path: &Path) -> Result<Key, StoreError> {
        let io = |source| StoreError::KeyFile {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io)?;
        }
        let key = Key::generate();
        let tmp = tmp_path(path);
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(format!("{}\n", hex::encode(key.0)).as_bytes())?;
            file.sync_all()?;
            fs::hard_link(&tmp, path)
        })();
        let _ = fs::remove_file(&tmp);
        match written {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created a new node-password key file");
                Ok(key)
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io(e)),
        }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}
