//! The GSB messages an exe-unit serves and sends, declared exactly as `ya-core-model` 0.10.0's
//! `activity` module declares them (that crate does not build from crates.io): same names, same
//! serde attributes, same message ids, item and error types. yagna 0.17.6 encodes them with
//! flexbuffers (`ya_service_bus::serialization`).

use serde::{Deserialize, Serialize};
use ya_client_model::activity::{
    ActivityState, ActivityUsage, ExeScriptCommand, ExeScriptCommandResult, ExeScriptCommandState,
    RuntimeEvent,
};
use ya_service_bus::{RpcMessage, RpcStreamMessage};

/// Where yagna's activity service takes the exe-unit's reports (`activity::local::BUS_ID`).
pub const LOCAL_ACTIVITY_BUS_ID: &str = "/local/activity";

/// The public address of one activity's exe-unit (`activity::exeunit::bus_id`); a message `M`
/// is bound at `<bus id>/<M::ID>`.
pub fn exeunit_bus_id(activity_id: &str) -> String {
    format!("/public/exeunit/{activity_id}")
}

/// Execute a script within the activity. Returns `batch_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exec {
    pub activity_id: String,
    pub batch_id: String,
    pub exe_script: Vec<ExeScriptCommand>,
    pub timeout: Option<f32>,
}

impl RpcMessage for Exec {
    const ID: &'static str = "Exec";
    type Item = String;
    type Error = RpcMessageError;
}

/// Get script execution results: one for every already executed command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetExecBatchResults {
    pub activity_id: String,
    pub batch_id: String,
    pub timeout: Option<f32>,
    pub command_index: Option<usize>,
}

impl RpcMessage for GetExecBatchResults {
    const ID: &'static str = "GetExecBatchResults";
    type Item = Vec<ExeScriptCommandResult>;
    type Error = RpcMessageError;
}

/// Stream script execution events. (No `rename_all` here, as in ya-core-model.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamExecBatchResults {
    pub activity_id: String,
    pub batch_id: String,
}

impl RpcStreamMessage for StreamExecBatchResults {
    const ID: &'static str = "StreamExecBatchResults";
    type Item = RuntimeEvent;
    type Error = RpcMessageError;
}

/// Get the currently running commands and their state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetRunningCommand {
    pub activity_id: String,
    pub timeout: Option<f32>,
}

impl RpcMessage for GetRunningCommand {
    const ID: &'static str = "GetRunningCommand";
    type Item = Vec<ExeScriptCommandState>;
    type Error = RpcMessageError;
}

/// Set the state of the activity (`activity::local::SetState`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetState {
    pub activity_id: String,
    pub state: ActivityState,
    pub timeout: Option<f32>,
    #[serde(default)]
    pub credentials: Option<Credentials>,
}

impl SetState {
    pub fn new(activity_id: String, state: ActivityState) -> Self {
        Self {
            activity_id,
            state,
            timeout: None,
            credentials: None,
        }
    }
}

impl RpcMessage for SetState {
    const ID: &'static str = "SetActivityState";
    type Item = ();
    type Error = RpcMessageError;
}

/// SGX credentials (`activity::local::Credentials`): never sent by this exe-unit, declared so
/// that [`SetState`] has its exact shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Credentials {
    Sgx {
        requestor: Vec<u8>,
        enclave: Vec<u8>,
        payload_sha3: [u8; 32],
        enclave_hash: [u8; 32],
        ias_report: String,
        ias_sig: Vec<u8>,
    },
}

/// Set the usage counters of the activity (`activity::local::SetUsage`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetUsage {
    pub activity_id: String,
    pub usage: ActivityUsage,
    pub timeout: Option<f32>,
}

impl RpcMessage for SetUsage {
    const ID: &'static str = "SetActivityUsage";
    type Item = ();
    type Error = RpcMessageError;
}

/// The error of every activity message.
#[derive(thiserror::Error, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RpcMessageError {
    #[error("Service error: {0}")]
    Service(String),
    #[error("Market API error: {0}")]
    Activity(String),
    #[error("Bad request: {0}")]
    BadRequest(String),
    #[error("Usage limit exceeded: {0}")]
    UsageLimitExceeded(String),
    #[error("Not found: {0}")]
    NotFound(String),
    #[error("Forbidden: {0}")]
    Forbidden(String),
    #[error("Timeout")]
    Timeout,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;
    use ya_client_model::activity::{State, StatePair};
    use ya_service_bus::serialization;

    #[test]
    fn shapes_are_ya_core_models() {
        let exec = Exec {
            activity_id: "a".into(),
            batch_id: "b".into(),
            exe_script: serde_json::from_value(json!([
                {"deploy": {}},
                {"start": {"args": ["{\"network\":\"dev\"}"]}},
                {"run": {"entry_point": "STATUS", "args": []}},
                {"terminate": {}}
            ]))
            .unwrap(),
            timeout: None,
        };
        let value = serde_json::to_value(&exec).unwrap();
        assert_eq!(value["activityId"], "a");
        assert_eq!(value["batchId"], "b");
        assert_eq!(value["exeScript"][2]["run"]["entry_point"], "STATUS");
        let back: Exec = serialization::from_slice(&serialization::to_vec(&exec).unwrap()).unwrap();
        assert_eq!(back, exec);

        let results = GetExecBatchResults {
            activity_id: "a".into(),
            batch_id: "b".into(),
            timeout: Some(1.0),
            command_index: Some(2),
        };
        assert_eq!(serde_json::to_value(&results).unwrap()["commandIndex"], 2);
        // The stream message keeps snake_case field names.
        let stream = StreamExecBatchResults {
            activity_id: "a".into(),
            batch_id: "b".into(),
        };
        assert_eq!(
            serde_json::to_value(&stream).unwrap(),
            json!({"activity_id": "a", "batch_id": "b"})
        );
        let state = SetState::new("a".into(), StatePair::from(State::Ready).into());
        assert_eq!(
            serde_json::to_value(&state).unwrap(),
            json!({"activityId": "a", "state": {"state": ["Ready", null]}, "timeout": null, "credentials": null})
        );
        assert_eq!(
            serde_json::to_value(RpcMessageError::Forbidden("x".into())).unwrap(),
            json!({"forbidden": "x"})
        );
        let reply: Result<String, RpcMessageError> = Err(RpcMessageError::Timeout);
        let back: Result<String, RpcMessageError> =
            serialization::from_slice(&serialization::to_vec(&reply).unwrap()).unwrap();
        assert_eq!(back, reply);
    }
}
