//! SIWE verification against messages signed with real secp256k1 keys, and session tokens.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use erigolem_auth::{
    hash_token, new_nonce, new_session_token, verify, AuthError, SiweConfig, Verified,
};
use k256::ecdsa::SigningKey;
use sha3::{Digest, Keccak256};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// anvil dev key #0 and its address.
const KEY0: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const ADDR0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
/// anvil dev key #1.
const KEY1: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const DOMAIN: &str = "127.0.0.1:8080";
const ORIGIN: &str = "http://127.0.0.1:8080";
const MIN: Duration = Duration::from_secs(60);

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

fn config() -> SiweConfig {
    SiweConfig {
        domain: DOMAIN.into(),
        uri: ORIGIN.into(),
        chain_ids: vec![1, 31337],
        max_age: 10 * MIN,
        clock_skew: MIN,
    }
}

/// The fields of an EIP-4361 message, formatted by [`Msg::text`] independently of `siwe`.
struct Msg {
    domain: String,
    address: String,
    statement: Option<String>,
    uri: String,
    chain_id: u64,
    nonce: String,
    issued_at: SystemTime,
    expiration_time: Option<SystemTime>,
    not_before: Option<SystemTime>,
}

impl Msg {
    fn new() -> Self {
        Msg {
            domain: DOMAIN.into(),
            address: ADDR0.into(),
            statement: Some("Sign in to Erigolem.".into()),
            uri: ORIGIN.into(),
            chain_id: 1,
            nonce: "abcDEF0123456789xyz".into(),
            issued_at: now() - MIN,
            expiration_time: Some(now() + 10 * MIN),
            not_before: None,
        }
    }

    fn text(&self) -> String {
        let mut s = format!(
            "{} wants you to sign in with your Ethereum account:\n{}\n\n",
            self.domain, self.address
        );
        if let Some(statement) = &self.statement {
            s += &format!("{statement}\n");
        }
        s += &format!(
            "\nURI: {}\nVersion: 1\nChain ID: {}\nNonce: {}\nIssued At: {}",
            self.uri,
            self.chain_id,
            self.nonce,
            rfc3339(self.issued_at)
        );
        if let Some(t) = self.expiration_time {
            s += &format!("\nExpiration Time: {}", rfc3339(t));
        }
        if let Some(t) = self.not_before {
            s += &format!("\nNot Before: {}", rfc3339(t));
        }
        s
    }

    fn verify(&self) -> Result<Verified, AuthError> {
        let text = self.text();
        verify(&config(), &text, &personal_sign(KEY0, &text), now())
    }
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap()
}

fn eip191_hash(text: &str) -> Keccak256 {
    Keccak256::new_with_prefix(format!("\x19Ethereum Signed Message:\n{}", text.len()))
        .chain_update(text)
}

/// EIP-191 `personal_sign`: r ‖ s ‖ v with v = 27/28, as wallets return it.
fn personal_sign(key_hex: &str, text: &str) -> String {
    let key = SigningKey::from_slice(&hex::decode(key_hex).unwrap()).unwrap();
    let (sig, recid) = key.sign_digest_recoverable(eip191_hash(text)).unwrap();
    let mut bytes = sig.to_bytes().to_vec();
    bytes.push(27 + recid.to_byte());
    format!("0x{}", hex::encode(bytes))
}

#[test]
fn dev_key_derives_the_expected_address() {
    let key = SigningKey::from_slice(&hex::decode(KEY0).unwrap()).unwrap();
    let point = key.verifying_key().to_encoded_point(false);
    let hash = Keccak256::digest(&point.as_bytes()[1..]);
    assert_eq!(hex::encode(&hash[12..]), ADDR0[2..].to_lowercase());
}

#[test]
fn valid_message_is_accepted() {
    let msg = Msg::new();
    let v = msg.verify().unwrap();
    assert_eq!(v.address, ADDR0);
    assert_eq!(v.nonce, "abcDEF0123456789xyz");
    assert_eq!(v.chain_id, 1);
    assert_eq!(v.expires_at, msg.expiration_time);
}

#[test]
fn variants_are_accepted() {
    let mut msg = Msg::new();
    msg.statement = None;
    msg.expiration_time = None;
    assert_eq!(msg.verify().unwrap().expires_at, None);

    let mut msg = Msg::new();
    msg.uri = format!("{ORIGIN}/login");
    msg.chain_id = 31337;
    msg.not_before = Some(now() - MIN);
    assert_eq!(msg.verify().unwrap().chain_id, 31337);

    // Within the clock skew: issued and valid from 30 s ahead of our clock.
    let mut msg = Msg::new();
    msg.issued_at = now() + Duration::from_secs(30);
    msg.not_before = Some(msg.issued_at);
    msg.verify().unwrap();

    // Issued exactly max_age ago is still fine.
    let mut msg = Msg::new();
    msg.issued_at = now() - 10 * MIN;
    msg.verify().unwrap();
}

#[test]
fn raw_recovery_byte_is_accepted() {
    let text = Msg::new().text();
    let sig = personal_sign(KEY0, &text);
    let (rs, v) = sig.split_at(130);
    let raw = format!("{rs}{:02x}", u8::from_str_radix(v, 16).unwrap() - 27);
    assert_eq!(
        verify(&config(), &text, &raw, now()).unwrap().address,
        ADDR0
    );
}

#[test]
fn empty_chain_list_accepts_any_chain() {
    let mut msg = Msg::new();
    msg.chain_id = 424242;
    let text = msg.text();
    let cfg = SiweConfig {
        chain_ids: vec![],
        ..config()
    };
    assert_eq!(
        verify(&cfg, &text, &personal_sign(KEY0, &text), now())
            .unwrap()
            .chain_id,
        424242
    );
}

#[test]
fn time_rejections() {
    let mut msg = Msg::new();
    msg.issued_at = now() - 5 * MIN;
    msg.expiration_time = Some(now() - MIN);
    assert_eq!(msg.verify(), Err(AuthError::Expired));
    msg.expiration_time = Some(now());
    assert_eq!(msg.verify(), Err(AuthError::Expired));

    let mut msg = Msg::new();
    msg.not_before = Some(now() + 5 * MIN);
    assert_eq!(msg.verify(), Err(AuthError::NotYetValid));

    let mut msg = Msg::new();
    msg.issued_at = now() + 5 * MIN;
    assert_eq!(msg.verify(), Err(AuthError::IssuedInFuture));

    let mut msg = Msg::new();
    msg.issued_at = now() - 11 * MIN;
    assert_eq!(msg.verify(), Err(AuthError::TooOld));
}

#[test]
fn domain_uri_and_chain_rejections() {
    let mut msg = Msg::new();
    msg.domain = "evil.example:8080".into();
    assert_eq!(
        msg.verify(),
        Err(AuthError::DomainMismatch {
            expected: DOMAIN.into(),
            got: "evil.example:8080".into()
        })
    );

    for uri in [
        "http://evil.example",
        "https://127.0.0.1:8080",
        "http://127.0.0.1:80800",
        "http://127.0.0.1:8080@evil.example/",
    ] {
        let mut msg = Msg::new();
        msg.uri = uri.into();
        assert_eq!(
            msg.verify(),
            Err(AuthError::UriMismatch {
                expected: ORIGIN.into(),
                got: uri.into()
            }),
            "{uri}"
        );
    }

    let mut msg = Msg::new();
    msg.chain_id = 5;
    assert_eq!(msg.verify(), Err(AuthError::ChainIdNotAccepted(5)));
}

#[test]
fn signature_rejections() {
    let text = Msg::new().text();
    let sig = personal_sign(KEY0, &text);

    let tampered = text.replace("Sign in to", "Sign in To");
    assert_ne!(tampered, text);
    assert_eq!(
        verify(&config(), &tampered, &sig, now()),
        Err(AuthError::SignatureMismatch)
    );

    let other = personal_sign(KEY1, &text);
    assert_eq!(
        verify(&config(), &text, &other, now()),
        Err(AuthError::SignatureMismatch)
    );

    let zero = format!("0x{}1b", "00".repeat(64));
    assert_eq!(
        verify(&config(), &text, &zero, now()),
        Err(AuthError::SignatureMismatch)
    );

    for bad in [
        &sig[..100],                       // short
        &sig[2..],                         // no 0x
        "0xzz",                            // non-hex, short
        &format!("0x{}", "zz".repeat(65)), // non-hex, right length
        &format!("{}1d", &sig[..130]),     // v = 29
        "",
    ] {
        let err = verify(&config(), &text, bad, now()).unwrap_err();
        assert!(
            matches!(err, AuthError::MalformedSignature(_)),
            "{bad}: {err:?}"
        );
        assert_eq!(err.code(), "malformed_signature");
    }
}

#[test]
fn malformed_messages() {
    let text = Msg::new().text();
    let mut lowercase_address = Msg::new();
    lowercase_address.address = ADDR0.to_lowercase();
    for bad in [
        "garbage".to_string(),
        String::new(),
        format!("{text}\n"),
        text.replace("Chain ID: 1", "Chain ID: 01"),
        text.replace("Version: 1", "Version: 2"),
        lowercase_address.text(),
    ] {
        let sig = personal_sign(KEY0, &bad);
        let err = verify(&config(), &bad, &sig, now()).unwrap_err();
        assert!(
            matches!(err, AuthError::MalformedMessage(_)),
            "{bad}: {err:?}"
        );
        assert_eq!(err.code(), "malformed_message");
    }
}

#[test]
fn error_codes_are_stable() {
    let cases = [
        (
            AuthError::MalformedMessage(String::new()),
            "malformed_message",
        ),
        (
            AuthError::MalformedSignature(String::new()),
            "malformed_signature",
        ),
        (
            AuthError::DomainMismatch {
                expected: String::new(),
                got: String::new(),
            },
            "domain_mismatch",
        ),
        (
            AuthError::UriMismatch {
                expected: String::new(),
                got: String::new(),
            },
            "uri_mismatch",
        ),
        (AuthError::ChainIdNotAccepted(5), "chain_id_not_accepted"),
        (AuthError::Expired, "expired"),
        (AuthError::NotYetValid, "not_yet_valid"),
        (AuthError::IssuedInFuture, "issued_in_future"),
        (AuthError::TooOld, "too_old"),
        (AuthError::SignatureMismatch, "signature_mismatch"),
        (AuthError::UnknownNonce, "unknown_nonce"),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code);
    }
}

#[test]
fn nonces_are_long_alphanumeric_unique_and_usable() {
    let nonces: HashSet<String> = (0..1000).map(|_| new_nonce()).collect();
    assert_eq!(nonces.len(), 1000);
    for n in &nonces {
        assert!(
            n.len() >= 16 && n.chars().all(|c| c.is_ascii_alphanumeric()),
            "{n}"
        );
    }
    let mut msg = Msg::new();
    msg.nonce = new_nonce();
    assert_eq!(msg.verify().unwrap().nonce, msg.nonce);
}

#[test]
fn session_tokens() {
    let tokens: Vec<_> = (0..1000).map(|_| new_session_token()).collect();
    let distinct: HashSet<&str> = tokens.iter().map(|t| t.token.as_str()).collect();
    assert_eq!(distinct.len(), tokens.len());
    for t in &tokens {
        assert_eq!(t.token.len(), 64); // 256 bits of hex
        assert!(t.token.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(t.hash, hash_token(&t.token));
        assert_ne!(t.hash, t.token);
        assert!(!format!("{t:?}").contains(&t.token));
    }
    assert_eq!(
        hash_token("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
