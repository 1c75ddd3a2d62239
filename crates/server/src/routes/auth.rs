//! Sign-In with Ethereum: nonces, login (session cookie + bearer token), logout, `me`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use axum_extra::headers::authorization::Bearer;
use axum_extra::headers::Authorization;
use axum_extra::TypedHeader;

use erigolem_api::{LoginRequest, LoginResponse, MeResponse, NonceResponse};

use crate::security::ClientIp;
use crate::{ApiError, AppState};

/// Name of the session cookie.
pub(crate) const SESSION_COOKIE: &str = "erigolem_session";

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/nonce", get(nonce))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/me", get(me))
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A fresh single-use nonce for a SIWE message. One client address holds at most
/// `max_nonces_per_ip` unused ones (429 `too_many_nonces` beyond).
#[utoipa::path(get, path = "/api/v1/auth/nonce", tag = "auth", responses((status = 200, body = NonceResponse), (status = 429, body = erigolem_api::ErrorBody)))]
pub(crate) async fn nonce(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<ClientIp>,
) -> Result<Json<NonceResponse>, ApiError> {
    let nonce = erigolem_auth::new_nonce();
    let now = SystemTime::now();
    let expires_at = unix_ms(now + state.config.nonce_ttl);
    let issued = state
        .store
        .issue_nonce(
            &nonce,
            expires_at,
            &client.key().to_string(),
            state.config.limits.max_nonces_per_ip,
            unix_ms(now),
        )
        .await?;
    if !issued {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            erigolem_api::ErrorCode::TooManyNonces,
            "too many unused sign-in nonces from your address: use one, or wait until they expire",
        ));
    }
    Ok(Json(NonceResponse { nonce, expires_at }))
}

/// Verifies a signed SIWE message, consumes its nonce and opens a session.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 400, body = erigolem_api::ErrorBody), (status = 401, body = erigolem_api::ErrorBody), (status = 403, body = erigolem_api::ErrorBody)))]
pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<ClientIp>,
    jar: CookieJar,
    body: Result<Json<LoginRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    let now = SystemTime::now();
    let verified = erigolem_auth::verify(&state.siwe, &body.message, &body.signature, now)?;
    if !crate::security::admits(&state.config.admission, &verified.address) {
        return Err(crate::security::not_admitted());
    }
    // Single use: whoever consumes the nonce first wins; an unknown or expired one is refused.
    if !state
        .store
        .consume_nonce(&verified.nonce, unix_ms(now))
        .await?
    {
        return Err(erigolem_auth::AuthError::UnknownNonce.into());
    }
    let session = erigolem_auth::new_session_token();
    // Never longer than the user signed for.
    let expires = match verified.expires_at {
        Some(signed) => signed.min(now + state.config.session_ttl),
        None => now + state.config.session_ttl,
    };
    state
        .store
        .create_session(&session.hash, &verified.address, unix_ms(expires))
        .await?;
    tracing::info!(address = %verified.address, "signed in");
    let cookie = Cookie::build((SESSION_COOKIE, session.token.clone()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.secure_cookies || client.forwarded_https)
        .path("/")
        .max_age(cookie_max_age(
            expires.duration_since(now).unwrap_or_default(),
        ))
        .build();
    let response = LoginResponse {
        address: verified.address,
        token: session.token,
        expires_at: unix_ms(expires),
    };
    Ok((jar.add(cookie), Json(response)))
}

fn cookie_max_age(ttl: Duration) -> time::Duration {
    time::Duration::seconds(ttl.as_secs() as i64)
}

/// Revokes the caller's session.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", responses((status = 204), (status = 401, body = erigolem_api::ErrorBody)))]
pub(crate) async fn logout(
    State(state): State<Arc<AppState>>,
    user: AuthUser,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    state.store.revoke_session(&user.token_hash).await?;
    state.hub.close_session(&user.address, &user.token_hash);
    Ok((
        jar.remove(Cookie::build(SESSION_COOKIE).path("/")),
        StatusCode::NO_CONTENT,
    ))
}

/// Who the caller is.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", responses((status = 200, body = MeResponse), (status = 401, body = erigolem_api::ErrorBody)))]
pub(crate) async fn me(user: AuthUser) -> Json<MeResponse> {
    Json(MeResponse {
        address: user.address,
    })
}

/// The signed-in caller, from the session cookie or an `Authorization: Bearer` token.
#[derive(Debug, Clone)]
pub(crate) struct AuthUser {
    pub(crate) address: String,
    pub(crate) token_hash: String,
    /// When the session ends (unix ms).
    pub(crate) expires_at: i64,
}

impl FromRequestParts<Arc<AppState>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let bearer = TypedHeader::<Authorization<Bearer>>::from_request_parts(parts, state)
            .await
            .ok()
            .map(|TypedHeader(Authorization(b))| b.token().to_owned());
        let token = match bearer {
            Some(t) => t,
            None => CookieJar::from_request_parts(parts, state)
                .await
                .ok()
                .and_then(|jar| jar.get(SESSION_COOKIE).map(|c| c.value().to_owned()))
                .ok_or_else(|| ApiError::unauthorized("sign in first"))?,
        };
        let token_hash = erigolem_auth::hash_token(&token);
        let session = state
            .store
            .session(&token_hash, unix_ms(SystemTime::now()))
            .await?
            .ok_or_else(|| ApiError::unauthorized("session expired or signed out"))?;
        Ok(AuthUser {
            address: session.address,
            token_hash,
            expires_at: session.expires_at,
        })
    }
}
