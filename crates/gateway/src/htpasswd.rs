//! Password file lines in formats Nginx's `auth_basic_user_file` accepts.
//!
//! Nginx checks the password on every request, so the hash must be cheap to verify. The passwords
//! are 128-bit random strings: brute force is hopeless whatever the hash, so a slow KDF buys
//! nothing and costs latency on every call. `{SSHA}` (salted SHA-1, implemented by Nginx itself)
//! is the default; the others are here so the benchmark can show the difference.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore;
use sha1::{Digest, Sha1};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PasswordScheme {
    /// `{SSHA}base64(sha1(password ‖ salt) ‖ salt)`, 16-byte random salt.
    #[default]
    Ssha,
    /// `{PLAIN}password`: no hashing at all (baseline only; never used for real entries).
    Plain,
}

impl PasswordScheme {
    pub const ALL: [PasswordScheme; 2] = [PasswordScheme::Ssha, PasswordScheme::Plain];

    pub fn name(self) -> &'static str {
        match self {
            PasswordScheme::Ssha => "{SSHA}",
            PasswordScheme::Plain => "{PLAIN}",
        }
    }
}

/// One `user:hash\n` line.
pub fn line(user: &str, password: &str, scheme: PasswordScheme) -> String {
    format!("{user}:{}\n", hash(password, scheme))
}

pub fn hash(password: &str, scheme: PasswordScheme) -> String {
    match scheme {
        PasswordScheme::Ssha => {
            let mut salt = [0u8; 16];
            rand::rng().fill_bytes(&mut salt);
            let digest = Sha1::new()
                .chain_update(password.as_bytes())
                .chain_update(salt)
                .finalize();
            let mut raw = digest.to_vec();
            raw.extend_from_slice(&salt);
            format!("{{SSHA}}{}", STANDARD.encode(raw))
        }
        PasswordScheme::Plain => format!("{{PLAIN}}{password}"),
    }
}

/// A fresh random password: 24 characters of base64url, 144 bits.
pub fn random_password() -> String {
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ssha_layout_verifies() {
        let h = hash("secret", PasswordScheme::Ssha);
        let raw = STANDARD.decode(h.strip_prefix("{SSHA}").unwrap()).unwrap();
        let (digest, salt) = raw.split_at(20);
        assert_eq!(
            Sha1::new()
                .chain_update(b"secret")
                .chain_update(salt)
                .finalize()
                .as_slice(),
            digest
        );
        assert_ne!(h, hash("secret", PasswordScheme::Ssha), "salt must differ");
    }

    #[test]
    fn random_passwords_are_long_and_distinct() {
        let a = random_password();
        assert_eq!(a.len(), 24);
        assert_ne!(a, random_password());
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
