//! What the agent must not forget across a restart: the agreements it approved and their activities,
//! so that a restarted agent ends them cleanly (terminated, invoiced) instead of leaving them open.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid agent state: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgreementRecord {
    pub agreement_id: String,
    pub requestor_id: String,
    pub network: String,
    /// Unix milliseconds.
    pub approved_at: i64,
    pub activity_id: Option<String>,
    pub activity_started_at: Option<i64>,
    /// The price agreed (from the agreement's offer), which bills this agreement even if the
    /// agent's configured price changes before it ends.
    pub price_per_hour: f64,
    pub start_fee: f64,
    /// GLM per JSON-RPC request (0 when the agreement does not price requests).
    #[serde(default)]
    pub price_per_request: f64,
    /// The agreement's `golem.com.usage.vector` (empty in records of older agents).
    #[serde(default)]
    pub usage_vector: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentState {
    pub agreements: BTreeMap<String, AgreementRecord>,
}

impl AgentState {
    pub fn load(path: &Path) -> Result<Self, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Parse {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(StateError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Written to a temp file and renamed, so a crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| StateError::Parse {
            path: path.to_owned(),
            source,
        })?;
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_and_a_missing_file_is_empty() {
        let dir = std::env::temp_dir().join(format!("agent-state-{}", std::process::id()));
        let path = dir.join("state.json");
        assert_eq!(AgentState::load(&path).unwrap(), AgentState::default());
        let mut state = AgentState::default();
        state.agreements.insert(
            "a1".into(),
            AgreementRecord {
                agreement_id: "a1".into(),
                requestor_id: "0xr".into(),
                network: "dev".into(),
                approved_at: 1,
                activity_id: Some("x".into()),
                activity_started_at: Some(2),
                price_per_hour: 0.1,
                start_fee: 0.0,
                price_per_request: 0.001,
                usage_vector: vec!["golem.usage.duration_sec".into()],
            },
        );
        state.save(&path).unwrap();
        assert_eq!(AgentState::load(&path).unwrap(), state);
        // A record of an agent from before per-request prices still loads.
        let old = r#"{"agreements":{"a1":{"agreement_id":"a1","requestor_id":"0xr","network":"dev","approved_at":1,"activity_id":null,"activity_started_at":null,"price_per_hour":0.1,"start_fee":0.0}}}"#;
        std::fs::write(&path, old).unwrap();
        let loaded = AgentState::load(&path).unwrap();
        assert_eq!(loaded.agreements["a1"].price_per_request, 0.0);
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            AgentState::load(&path),
            Err(StateError::Parse { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
