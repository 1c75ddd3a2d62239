use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use erigolem_api::{ErrorBody, ErrorCode, ErrorDetail};

/// Every API error: an HTTP status and `{"error":{"code","message"}}`. Internal details are logged,
/// never sent.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<erigolem_store::StoreError> for ApiError {
    fn from(e: erigolem_store::StoreError) -> Self {
        Self::internal(e)
    }
}

impl From<erigolem_auth::AuthError> for ApiError {
    fn from(e: erigolem_auth::AuthError) -> Self {
        use erigolem_auth::AuthError as E;
        // A message that is not a valid SIWE message or signature is a bad request; a valid one
        // that does not authenticate is unauthorized.
        let status = match e {
            E::MalformedMessage(_) | E::MalformedSignature(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        };
        let code = match e {
            E::MalformedMessage(_) => ErrorCode::MalformedMessage,
            E::MalformedSignature(_) => ErrorCode::MalformedSignature,
            E::DomainMismatch { .. } => ErrorCode::DomainMismatch,
            E::UriMismatch { .. } => ErrorCode::UriMismatch,
            E::ChainIdNotAccepted(_) => ErrorCode::ChainIdNotAccepted,
            E::Expired => ErrorCode::Expired,
            E::NotYetValid => ErrorCode::NotYetValid,
            E::IssuedInFuture => ErrorCode::IssuedInFuture,
            E::TooOld => ErrorCode::TooOld,
            E::SignatureMismatch => ErrorCode::SignatureMismatch,
            E::UnknownNonce => ErrorCode::UnknownNonce,
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::PayloadTooLarge
        } else {
            ErrorCode::InvalidJson
        };
        Self::new(status, code, e.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidQuery,
            e.body_text(),
        )
    }
}
