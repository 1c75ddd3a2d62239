//! Sign-In with Ethereum (EIP-4361) verification and session tokens for the Erigolem server, free of web-framework types.
//!
//! Login flow: the server hands out [`new_nonce`] and remembers it; the client signs an EIP-4361 message containing it
//! (EIP-191 `personal_sign`); the server calls [`verify`], consumes [`Verified::nonce`] from its store (single use,
//! expiry: answering [`AuthError::UnknownNonce`] otherwise), then issues a [`new_session_token`], giving
//! [`SessionToken::token`] to the client and storing only [`SessionToken::hash`]. On each request it looks the
//! presented token up by [`hash_token`].
//!
//! Parsing and signature recovery are the `siwe` crate's; this crate adds the policy checks and stable error codes.

use std::fmt;
use std::time::{Duration, SystemTime};

use rand::distr::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use siwe::{Message, TimeStamp};

/// Length of [`new_nonce`]: 22 alphanumeric characters, about 131 bits.
const NONCE_LEN: usize = 22;
/// Random bytes in a session token (256 bits).
const TOKEN_BYTES: usize = 32;

/// What a SIWE message must say to be accepted by this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiweConfig {
    /// Expected `domain` (RFC 3986 authority: `host[:port]`, e.g. `127.0.0.1:8080`), compared exactly.
    pub domain: String,
    /// Expected origin (e.g. `http://127.0.0.1:8080`); the message's `URI` must equal it or lie under it (`origin/…`).
    pub uri: String,
    /// Accepted chain ids; empty accepts any.
    pub chain_ids: Vec<u64>,
    /// How old `Issued At` may be (e.g. 10 minutes).
    pub max_age: Duration,
    /// Tolerated client clock lead for `Issued At` and `Not Before` (e.g. 60 s).
    pub clock_skew: Duration,
}

/// A message whose checks and signature passed. The nonce still has to be consumed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Signer's address, `0x`-prefixed and EIP-55 checksummed.
    pub address: String,
    /// The message's nonce, for the server to consume from its store.
    pub nonce: String,
    /// The message's chain id.
    pub chain_id: u64,
    /// The message's `Expiration Time`, if any (a session should not outlive it).
    pub expires_at: Option<SystemTime>,
}

/// Why a login was refused. [`AuthError::code`] gives the stable API code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The text is not a (canonical) EIP-4361 message.
    #[error("malformed SIWE message: {0}")]
    MalformedMessage(String),
    /// The signature is not 65 bytes of `0x`-prefixed hex with v in {0, 1, 27, 28}.
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    /// The message is for another domain.
    #[error("message domain {got:?} does not match {expected:?}")]
    DomainMismatch {
        /// This server's domain.
        expected: String,
        /// The message's domain.
        got: String,
    },
    /// The message's URI is not this server's origin.
    #[error("message URI {got:?} is not under {expected:?}")]
    UriMismatch {
        /// This server's origin.
        expected: String,
        /// The message's URI.
        got: String,
    },
    /// The chain id is not in [`SiweConfig::chain_ids`].
    #[error("chain id {0} is not accepted")]
    ChainIdNotAccepted(u64),
    /// `Expiration Time` has passed.
    #[error("message has expired")]
    Expired,
    /// `Not Before` has not been reached.
    #[error("message is not valid yet")]
    NotYetValid,
    /// `Issued At` is further in the future than the clock skew allows.
    #[error("message is issued in the future")]
    IssuedInFuture,
    /// `Issued At` is older than [`SiweConfig::max_age`].
    #[error("message was issued too long ago")]
    TooOld,
    /// The signature was not made by the message's address (or does not verify at all).
    #[error("signature does not match the message's address")]
    SignatureMismatch,
    /// The nonce is unknown, used or expired (returned by the server after checking its store).
    #[error("unknown, used or expired nonce")]
    UnknownNonce,
}

impl AuthError {
    /// Stable snake_case code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedMessage(_) => "malformed_message",
            Self::MalformedSignature(_) => "malformed_signature",
            Self::DomainMismatch { .. } => "domain_mismatch",
            Self::UriMismatch { .. } => "uri_mismatch",
            Self::ChainIdNotAccepted(_) => "chain_id_not_accepted",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::TooOld => "too_old",
            Self::SignatureMismatch => "signature_mismatch",
            Self::UnknownNonce => "unknown_nonce",
        }
    }
}

/// A fresh SIWE nonce: 22 alphanumeric characters (about 131 bits) from a CSPRNG.
pub fn new_nonce() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(NONCE_LEN)
        .map(char::from)
        .collect()
}

/// Verifies a signed EIP-4361 message at time `now`.
///
/// Checks, in order: the message parses and is in canonical form (so the signed text is exactly the checked text);
/// domain; URI; chain id; `Issued At` at most `clock_skew` ahead and at most `max_age` old; `Expiration Time` (if any)
/// not reached (expired at that instant, no skew); `Not Before` (if any) at most `clock_skew` ahead; the signature is
/// an EIP-191 `personal_sign` of the message text by the message's address. The nonce is returned, not checked.
pub fn verify(
    config: &SiweConfig,
    message: &str,
    signature: &str,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    let msg: Message = message
        .parse()
        .map_err(|e: siwe::ParseError| AuthError::MalformedMessage(e.to_string()))?;
    // `siwe` hashes its own serialisation of the parsed message; requiring a round trip makes that the exact text.
    if msg.to_string() != message {
        return Err(AuthError::MalformedMessage(
            "not in canonical EIP-4361 form".into(),
        ));
    }
    if msg.domain.as_str() != config.domain {
        return Err(AuthError::DomainMismatch {
            expected: config.domain.clone(),
            got: msg.domain.to_string(),
        });
    }
    if !uri_matches(&config.uri, msg.uri.as_str()) {
        return Err(AuthError::UriMismatch {
            expected: config.uri.clone(),
            got: msg.uri.to_string(),
        });
    }
    if !config.chain_ids.is_empty() && !config.chain_ids.contains(&msg.chain_id) {
        return Err(AuthError::ChainIdNotAccepted(msg.chain_id));
    }
    let issued_at = system_time(&msg.issued_at);
    if exceeds(issued_at, now, config.clock_skew) {
        return Err(AuthError::IssuedInFuture);
    }
    if exceeds(now, issued_at, config.max_age) {
        return Err(AuthError::TooOld);
    }
    let expires_at = msg.expiration_time.as_ref().map(system_time);
    if expires_at.is_some_and(|exp| now >= exp) {
        return Err(AuthError::Expired);
    }
    let not_before = msg.not_before.as_ref().map(system_time);
    if not_before.is_some_and(|nbf| exceeds(nbf, now, config.clock_skew)) {
        return Err(AuthError::NotYetValid);
    }
    let sig = parse_signature(signature)?;
    // Any failure here (wrong signer, r/s out of range, high s, no such point) means the address did not sign it.
    msg.verify_eip191(&sig)
        .map_err(|_| AuthError::SignatureMismatch)?;
    Ok(Verified {
        address: siwe::eip55(&msg.address),
        nonce: msg.nonce,
        chain_id: msg.chain_id,
        expires_at,
    })
}

/// `uri` is the origin itself or a path under it (`origin/…`); a trailing `/` on the origin is ignored.
fn uri_matches(origin: &str, uri: &str) -> bool {
    let base = origin.trim_end_matches('/');
    uri == origin
        || uri == base
        || uri
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn system_time(ts: &TimeStamp) -> SystemTime {
    SystemTime::from(*ts.as_ref())
}

/// `later` is more than `limit` after `earlier`.
fn exceeds(later: SystemTime, earlier: SystemTime, limit: Duration) -> bool {
    later.duration_since(earlier).is_ok_and(|d| d > limit)
}

/// Parses `0x` + 130 hex digits (r ‖ s ‖ v) with v in {0, 1, 27, 28}.
fn parse_signature(signature: &str) -> Result<[u8; 65], AuthError> {
    let malformed = AuthError::MalformedSignature;
    let digits = signature
        .strip_prefix("0x")
        .ok_or_else(|| malformed("missing 0x prefix".into()))?;
    if digits.len() != 130 {
        return Err(malformed(format!(
            "expected 130 hex digits (65 bytes), got {}",
            digits.len()
        )));
    }
    let mut sig = [0u8; 65];
    hex::decode_to_slice(digits, &mut sig).map_err(|e| malformed(e.to_string()))?;
    match sig[64] {
        0 | 1 | 27 | 28 => Ok(sig),
        v => Err(malformed(format!(
            "recovery byte v = {v}, expected 0, 1, 27 or 28"
        ))),
    }
}

/// A new session token: give `token` to the client, store only `hash`.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken {
    /// 256 random bits as 64 lowercase hex digits (URL-safe). Secret: never log it.
    pub token: String,
    /// [`hash_token`] of `token`: what the server stores and looks up.
    pub hash: String,
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionToken")
            .field("token", &"<redacted>")
            .field("hash", &self.hash)
            .finish()
    }
}

/// A fresh session token from a CSPRNG.
pub fn new_session_token() -> SessionToken {
    let token = hex::encode(rand::random::<[u8; TOKEN_BYTES]>());
    let hash = hash_token(&token);
    SessionToken { token, hash }
}

/// Lowercase hex SHA-256 of a token (a fast hash is enough: tokens carry 256 random bits).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
