//! Basic-auth credentials, checked by the guard itself on every request (Nginx checks them too,
//! against the password file): a request that raced a ROTATE past Nginx is still refused.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use hyper::header::HeaderValue;
use subtle::ConstantTimeEq;

/// Whether `Authorization: Basic …` carries exactly `user:password`.
pub(crate) fn basic_matches(header: Option<&HeaderValue>, user: &str, password: &str) -> bool {
    let Some(value) = header.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let token = token.trim();
    let Ok(decoded) = STANDARD
        .decode(token)
        .or_else(|_| STANDARD_NO_PAD.decode(token))
    else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return false;
    };
    let (u, p) = (&decoded[..colon], &decoded[colon + 1..]);
    // Both compared, so the time says nothing about which one differs.
    let user_ok = u.ct_eq(user.as_bytes());
    let password_ok = p.ct_eq(password.as_bytes());
    bool::from(user_ok & password_ok)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(user_pass: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(user_pass))).unwrap()
    }

    #[test]
    fn only_the_exact_credentials_pass() {
        assert!(basic_matches(Some(&header("n1:secret")), "n1", "secret"));
        assert!(basic_matches(
            Some(&HeaderValue::from_static("basic bjE6c2VjcmV0")),
            "n1",
            "secret"
        ));
        for bad in [
            "n1:secre",
            "n1:secret2",
            "n2:secret",
            "n1secret",
            ":secret",
            "n1:",
        ] {
            assert!(!basic_matches(Some(&header(bad)), "n1", "secret"), "{bad}");
        }
        assert!(!basic_matches(None, "n1", "secret"));
        assert!(!basic_matches(
            Some(&HeaderValue::from_static("Bearer bjE6c2VjcmV0")),
            "n1",
            "secret"
        ));
        assert!(!basic_matches(
            Some(&HeaderValue::from_static("Basic !!!")),
            "n1",
            "secret"
        ));
        // A password containing ':' is split at the first one, as Nginx and browsers do.
        assert!(basic_matches(Some(&header("n1:a:b")), "n1", "a:b"));
    }
}
