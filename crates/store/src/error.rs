use std::path::PathBuf;

use crate::NodeState;

/// Everything the store can fail with. Display texts name what went wrong, never SQL or secrets.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL scheme {0:?}: use sqlite://PATH?mode=rwc or postgres://…")]
    UnsupportedUrl(String),
    #[error("not found")]
    NotFound,
    #[error("illegal node state transition: {from} → {to}")]
    IllegalTransition { from: NodeState, to: NodeState },
    #[error("{active} active nodes already (the limit is {max})")]
    TooManyNodes { active: i64, max: u32 },
    #[error("the node is {state}: only stopped or failed nodes can be deleted")]
    NotStopped { state: NodeState },
    #[error("node password encryption: {0}")]
    Crypto(&'static str),
    #[error("key file {}: {source}", path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key file {} has mode {mode:04o}: it must not be accessible by group or others (chmod 600 it)",
        path.display()
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    #[error("key file {}: expected 64 hex digits (a 32-byte key)", path.display())]
    KeyFileInvalid { path: PathBuf },
    #[error(
        "this database's node passwords are encrypted with another key (fingerprint {stored}…, \
         this server's is {ours}…): give every server on one database the same key file \
         (--key-file), or it could not read what the others stored"
    )]
    KeyMismatch { stored: String, ours: String },
    #[error("corrupt database row: {0}")]
    Corrupt(String),
}

impl From<erigolem_lifecycle::node::UnknownState> for StoreError {
    fn from(e: erigolem_lifecycle::node::UnknownState) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}
