//! Delivering alerts to the users' webhooks: which URLs are accepted (http(s), bounded, no
//! credentials, public addresses unless the operator allows private ones), the signature
//! (`X-Erigolem-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, Stripe's
//! scheme), the retry schedule, and the worker that claims due deliveries from the store's queue
//! and sends them. The queue is in the store, so a restart loses nothing; a claim is one row
//! update, so with several replicas each attempt is sent by one.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use erigolem_store::{Attempt, ClaimedDelivery};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::AppState;

/// The longest webhook URL accepted.
pub(crate) const MAX_URL_BYTES: usize = 2048;
/// Bytes of a receiver's answer read (for the delivery log); the rest is never read.
const MAX_RESPONSE_BYTES: usize = 1024;
/// How often the worker looks for due deliveries when nothing woke it.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Allow webhooks to loopback, private, link-local and other non-public addresses (off by
    /// default: a user must not make the server POST to its own network or a cloud's metadata
    /// service).
    pub allow_private: bool,
    /// One attempt's deadline (connect, send, answer).
    pub timeout: Duration,
    /// Attempts before a delivery gives up.
    pub max_attempts: u32,
    /// The wait before the first retry; doubled for each one after, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3_600),
        }
    }
}

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    #[error("the webhook URL is longer than {MAX_URL_BYTES} bytes")]
    TooLong,
    #[error("the webhook URL does not parse: {0}")]
    Parse(String),
    #[error("a webhook URL is http:// or https://, not {0}://")]
    Scheme(String),
    #[error("a webhook URL has no user name or password in it")]
    Credentials,
    #[error("the webhook URL has no host")]
    NoHost,
    #[error("{0} is not a public address: webhooks to private, loopback or link-local addresses are not allowed on this server")]
    Private(IpAddr),
}

/// Whether `ip` is a public unicast address (what a webhook may reach by default).
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                // Shared address space (carrier-grade NAT), 100.64.0.0/10.
                || (a == 100 && (64..128).contains(&b))
                // Benchmarking 198.18.0.0/15, reserved 240.0.0.0/4.
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // Unique local fc00::/7, link-local fe80::/10, documentation 2001:db8::/32.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                // IPv4-compatible and NAT64 forms of any IPv4 address.
                || v6.segments()[..6].iter().all(|s| *s == 0)
                || (first == 0x64 && v6.segments()[1] == 0xff9b))
        }
    }
}

/// The URL if it may be a webhook: http(s), at most [`MAX_URL_BYTES`], no credentials, a host;
/// an address literal must be public unless `allow_private`. (A host name is checked where it
/// resolves, at every attempt: [`destination`].)
pub(crate) fn check_url(text: &str, allow_private: bool) -> Result<url::Url, UrlError> {
    if text.len() > MAX_URL_BYTES {
        return Err(UrlError::TooLong);
    }
    let url = url::Url::parse(text.trim()).map_err(|e| UrlError::Parse(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(
            erigolem_store::cap_text(url.scheme(), 16).into_owned(),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    let ip = match url.host() {
        None => return Err(UrlError::NoHost),
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) if name.eq_ignore_ascii_case("localhost") => {
            Some(IpAddr::from([127, 0, 0, 1]))
        }
        Some(url::Host::Domain(_)) => None,
    };
    if let Some(ip) = ip.filter(|ip| !allow_private && !is_public(*ip)) {
        return Err(UrlError::Private(ip));
    }
    Ok(url)
}

/// Where an attempt connects: the host's addresses, every one public unless `allow_private` (a
/// name with one private address is refused: DNS answers change between resolving and
/// connecting). The client is then pinned to exactly these.
async fn destination(url: &url::Url, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    if let Some(bad) = addrs.iter().find(|a| !allow_private && !is_public(a.ip())) {
        return Err(UrlError::Private(bad.ip()).to_string());
    }
    Ok(addrs)
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub(crate) fn signature(secret: &str, unix_secs: i64, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "t={unix_secs},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// A new signing secret: `whsec_` and 32 random bytes in hex.
pub(crate) fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", hex::encode(bytes))
}

/// When attempt `attempts + 1` is due after attempt `attempts` failed at `now` (ms), or `None`
/// when no attempt is left: `backoff × 2^(attempts-1)`, at most `max_backoff`.
pub(crate) fn retry_at(config: &WebhookConfig, attempts: u32, now: i64) -> Option<i64> {
    if attempts >= config.max_attempts {
        return None;
    }
    let factor = 1u32
        .checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let wait = config
        .backoff
        .saturating_mul(factor)
        .min(config.max_backoff);
    Some(now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2))
}

/// Sends one claimed delivery once.
async fn attempt(
    config: &WebhookConfig,
    claimed: &ClaimedDelivery,
) -> (Option<u16>, Result<(), String>) {
    let url = match check_url(&claimed.webhook.url, config.allow_private) {
        Ok(url) => url,
        Err(e) => return (None, Err(e.to_string())),
    };
    let addrs = match destination(&url, config.allow_private).await {
        Ok(addrs) => addrs,
        Err(e) => return (None, Err(e)),
    };
    let host = url.host_str().unwrap_or_default().to_owned();
    let client = match reqwest::Client::builder()
        .resolve_to_addrs(&host, &addrs)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .no_proxy()
        .user_agent(concat!("erigolem-webhook/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => return (None, Err(format!("HTTP client: {e}"))),
    };
    let body = &claimed.delivery.body;
    let t = erigolem_store::now_ms() / 1_000;
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Erigolem-Event", &claimed.delivery.event)
        .header("X-Erigolem-Delivery", &claimed.delivery.id)
        .header(
            "X-Erigolem-Signature",
            signature(&claimed.webhook.secret, t, body),
        )
        .body(body.clone())
        .send()
        .await;
    let mut response = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return (None, Err(format!("no answer within {:?}", config.timeout)))
        }
        Err(e) => return (None, Err(format!("could not send: {e}"))),
    };
    let status = response.status();
    if status.is_success() {
        return (Some(status.as_u16()), Ok(()));
    }
    // A little of the answer for the log, never more (nor waited for beyond the deadline).
    let mut excerpt = Vec::new();
    while excerpt.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
            _ => break,
        }
    }
    excerpt.truncate(MAX_RESPONSE_BYTES);
    let text = String::from_utf8_lossy(&excerpt);
    let text: String = text.chars().filter(|c| !c.is_control()).collect();
    (
        Some(status.as_u16()),
        Err(format!("answered {status}: {}", text.trim())),
    )
}

/// Attempts in flight at once (one slow receiver holds up only its own deliveries).
const CONCURRENT_ATTEMPTS: usize = 8;

/// The delivery worker: claims due deliveries and sends each in a task of its own (at most
/// [`CONCURRENT_ATTEMPTS`] at once), until shutdown. Woken at once when a delivery is enqueued
/// here ([`AppState::deliveries`]); every [`IDLE_POLL`] anyway (deliveries enqueued elsewhere,
/// retries coming due).
pub(crate) fn spawn(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    crate::spawn_until(state.shutting_down.subscribe(), async move {
        let config = state.config.webhooks.clone();
        // A claim outlives an attempt: a slow receiver is not sent the same delivery twice.
        let claim_ms = i64::try_from((config.timeout * 2 + Duration::from_secs(5)).as_millis())
            .unwrap_or(60_000);
        let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_ATTEMPTS));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let claimed = match state
                .store
                .claim_delivery(erigolem_store::now_ms(), claim_ms)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("webhook queue: {e}");
                    None
                }
            };
            let Some(claimed) = claimed else {
                drop(slot);
                tokio::select! {
                    () = state.deliveries.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            };
            let (state, config) = (state.clone(), config.clone());
            crate::spawn_until(state.shutting_down.subscribe(), async move {
                deliver(&state, &config, &claimed).await;
                drop(slot);
            });
        }
    })
}

/// One attempt of a claimed delivery, and its outcome recorded.
async fn deliver(state: &AppState, config: &WebhookConfig, claimed: &ClaimedDelivery) {
    let (status, result) = attempt(config, claimed).await;
    let now = erigolem_store::now_ms();
    let record = match &result {
        Ok(()) => Attempt {
            status,
            error: None,
            delivered: true,
            retry_at: None,
        },
        Err(e) => Attempt {
            status,
            error: Some(e.clone()),
            delivered: false,
            retry_at: retry_at(config, claimed.delivery.attempts, now),
        },
    };
    let d = &claimed.delivery;
    match &result {
        Ok(()) => {
            tracing::info!(delivery = %d.id, owner = %d.owner, attempts = d.attempts, "webhook delivered")
        }
        Err(e) => {
            tracing::warn!(delivery = %d.id, owner = %d.owner, attempts = d.attempts, "webhook attempt failed: {e}")
        }
    }
    let outcome = if result.is_ok() {
        "delivered"
    } else {
        "failed"
    };
    metrics::counter!("erigolem_webhook_attempts_total", "outcome" => outcome).increment(1);
    if let Err(e) = state.store.record_attempt(&d.id, &record, now).await {
        tracing::warn!(delivery = %d.id, "webhook attempt not recorded: {e}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_are_http_bounded_without_credentials_and_public_by_default() {
        let ok = [
            "https://hooks.example.com/erigolem",
            "http://93.184.216.34:8080/x?y=1",
            "https://[2606:2800:220:1:248:1893:25c8:1946]/",
        ];
        for url in ok {
            assert!(check_url(url, false).is_ok(), "{url}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        let refused: Vec<(&str, UrlError)> = vec![
            (long.as_str(), UrlError::TooLong),
            ("ftp://example.com/", UrlError::Scheme("ftp".into())),
            ("file:///etc/passwd", UrlError::Scheme("file".into())),
            ("javascript:alert(1)", UrlError::Scheme("javascript".into())),
            ("https://user:pass@example.com/", UrlError::Credentials),
            ("https://user@example.com/", UrlError::Credentials),
            (
                "http://127.0.0.1:9/",
                UrlError::Private([127, 0, 0, 1].into()),
            ),
            (
                "http://localhost/",
                UrlError::Private([127, 0, 0, 1].into()),
            ),
            ("http://LOCALHOST./", UrlError::Parse(String::new())),
            (
                "http://169.254.169.254/latest/meta-data/",
                UrlError::Private([169, 254, 169, 254].into()),
            ),
            ("http://10.0.0.1/", UrlError::Private([10, 0, 0, 1].into())),
            (
                "http://192.168.1.1/",
                UrlError::Private([192, 168, 1, 1].into()),
            ),
            ("http://0.0.0.0/", UrlError::Private([0, 0, 0, 0].into())),
            // Decimal and hex forms are normalised by the URL parser first.
            (
                "http://2130706433/",
                UrlError::Private([127, 0, 0, 1].into()),
            ),
            ("http://0x7f.1/", UrlError::Private([127, 0, 0, 1].into())),
            ("http://[::1]/", UrlError::Private("::1".parse().unwrap())),
            (
                "http://[::ffff:127.0.0.1]/",
                UrlError::Private("::ffff:127.0.0.1".parse().unwrap()),
            ),
            (
                "http://[fe80::1]/",
                UrlError::Private("fe80::1".parse().unwrap()),
            ),
            (
                "http://[fd00::1]/",
                UrlError::Private("fd00::1".parse().unwrap()),
            ),
            ("not a url", UrlError::Parse(String::new())),
        ];
        for (url, want) in refused {
            let got = check_url(url, false);
            match (&got, &want) {
                // "LOCALHOST." is a name with a trailing dot: not the literal, resolved later.
                (Ok(_), UrlError::Parse(_)) if url.contains("LOCALHOST.") => {}
                (Err(UrlError::Parse(_)), UrlError::Parse(_)) => {}
                _ => assert_eq!(got.as_ref().err(), Some(&want), "{url}"),
            }
        }
        // The operator's flag lets private addresses through (tests' loopback receivers).
        assert!(check_url("http://127.0.0.1:9/", true).is_ok());
        assert!(check_url("https://u:p@127.0.0.1/", true).is_err());
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_refused_where_it_resolves() {
        // (`check_url` refuses the literal `localhost`; any other name resolving to loopback is
        // refused here, where the attempt resolves it.)
        let url = url::Url::parse("http://localhost:9/").unwrap();
        let err = destination(&url, false).await.unwrap_err();
        assert!(err.contains("not a public address"), "{err}");
        assert!(destination(&url, true).await.is_ok());
    }

    #[test]
    fn the_signature_is_stripes_scheme() {
        // HMAC-SHA256("whsec_test", "1700000000.{}"), computed independently with
        // `printf '1700000000.{}' | openssl dgst -sha256 -hmac whsec_test`.
        assert_eq!(
            signature("whsec_test", 1_700_000_000, "{}"),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap_and_a_last_attempt() {
        let c = WebhookConfig {
            max_attempts: 5,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            ..WebhookConfig::default()
        };
        let waits: Vec<Option<i64>> = (1..=5).map(|n| retry_at(&c, n, 0)).collect();
        assert_eq!(
            waits,
            vec![Some(10_000), Some(20_000), Some(30_000), Some(30_000), None]
        );
        assert_eq!(retry_at(&c, u32::MAX - 1, 0), None);
        let many = WebhookConfig {
            max_attempts: u32::MAX,
            ..c
        };
        assert_eq!(retry_at(&many, 100, 0), Some(30_000));
    }

    #[test]
    fn secrets_are_fresh() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with("whsec_") && a.len() == 6 + 64);
        assert_ne!(a, b);
    }
}
