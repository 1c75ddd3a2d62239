//! The error envelope `{"error":{"code","message"}}` and every code the API answers with.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// What went wrong, stable for programs (the message is for people and may change).
        /// (The wire names are the variants in snake_case; `as_str` spells them out, and a test
        /// keeps the two equal.)
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }
        }
    };
}

codes! {
    /// No session, or an expired or revoked one.
    Unauthorized = "unauthorized",
    /// No such route, or no such node of the caller (another user's node is "no such node").
    NotFound = "not_found",
    /// Too many requests from the client's address.
    RateLimited = "rate_limited",
    /// Something failed on the server (details are in its log, not here).
    Internal = "internal",
    /// A request body over the limit.
    PayloadTooLarge = "payload_too_large",
    /// A request body that is not the JSON the route takes.
    InvalidJson = "invalid_json",
    /// A query string the route cannot read.
    InvalidQuery = "invalid_query",
    /// A `Host` this server does not answer to.
    HostNotAllowed = "host_not_allowed",
    /// A cross-site `Origin` on a state-changing request.
    OriginNotAllowed = "origin_not_allowed",
    /// The server admits no new nodes from this caller (its admission policy).
    NotAdmitted = "not_admitted",
    /// A spend cap (the caller's or the server's) is reached for this period.
    SpendCapReached = "spend_cap_reached",
    InvalidName = "invalid_name",
    UnsupportedNetwork = "unsupported_network",
    UnsupportedMode = "unsupported_mode",
    UnsupportedPrune = "unsupported_prune",
    /// A term (budget, prices) this server's backend does not take.
    NotSupported = "not_supported",
    InvalidTerms = "invalid_terms",
    /// A `methods`, `allow_origins` or `allow_ips` entry (or list) the endpoint guard cannot
    /// enforce: the message names the entry and the expected form.
    InvalidAllowlist = "invalid_allowlist",
    /// The caller has as many active nodes as allowed.
    TooManyNodes = "too_many_nodes",
    /// Only a stopped node can be deleted.
    NotStopped = "not_stopped",
    StopFailed = "stop_failed",
    /// Only a running node can do this.
    NotRunning = "not_running",
    /// The backend (runtime, provider) did not do what it was asked.
    BackendFailed = "backend_failed",
    TooManyStreams = "too_many_streams",
    InvalidLastEventId = "invalid_last_event_id",
    TooManyNonces = "too_many_nonces",
    /// `window` is not one of the usage windows.
    InvalidWindow = "invalid_window",
    /// `lines` is not a number between 1 and the most a log request returns.
    InvalidLines = "invalid_lines",
    /// An alert rule outside its bounds.
    InvalidAlertRules = "invalid_alert_rules",
    /// A webhook URL that is not `http(s)://`, too long, has credentials, or points at a
    /// private address.
    InvalidWebhookUrl = "invalid_webhook_url",
    /// The caller has no webhook.
    NoWebhook = "no_webhook",
    /// Sign-in: the SIWE message does not parse (or is not in canonical form).
    MalformedMessage = "malformed_message",
    MalformedSignature = "malformed_signature",
    DomainMismatch = "domain_mismatch",
    UriMismatch = "uri_mismatch",
    ChainIdNotAccepted = "chain_id_not_accepted",
    Expired = "expired",
    NotYetValid = "not_yet_valid",
    IssuedInFuture = "issued_in_future",
    TooOld = "too_old",
    SignatureMismatch = "signature_mismatch",
    UnknownNonce = "unknown_nonce",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every error answer's body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names_and_back() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).ok();
            assert_eq!(json, Some(serde_json::Value::from(code.as_str())));
            let back: Option<ErrorCode> =
                serde_json::from_value(serde_json::json!(code.as_str())).ok();
            assert_eq!(back, Some(*code));
        }
    }
}
