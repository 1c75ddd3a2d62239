//! What every request is checked against before a handler sees it, and what every response
//! carries: the client's address (believing `X-Forwarded-For` only from trusted proxies), `Host`
//! and `Origin` against the public URL (DNS rebinding, cross-site requests), admission of
//! addresses, and the security headers of the web UI.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{Admission, ApiError, AppState};

/// The address a request comes from, as the rate limiter and the nonce cap see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientIp {
    pub(crate) ip: IpAddr,
    /// The request reached a trusted proxy over HTTPS (`X-Forwarded-Proto: https`).
    pub(crate) forwarded_https: bool,
}

impl ClientIp {
    /// The key client-level limits count by: the IPv4 address, or the IPv6 /64 (one host
    /// usually holds a whole /64, so single IPv6 addresses would be free for the taking).
    pub(crate) fn key(&self) -> IpAddr {
        client_key(self.ip)
    }
}

/// An IPv4 address as is (IPv4-mapped IPv6 as IPv4), an IPv6 address cut to its /64.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub(crate) fn new(nets: Vec<ipnet::IpNet>) -> Self {
        Self(nets)
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client behind `peer`: `peer` itself unless it is a trusted proxy; then the rightmost
    /// `X-Forwarded-For` entry that is not a trusted proxy (entries left of it could be made up by
    /// the client). An unparsable entry stops the walk at the last trusted hop.
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> ClientIp {
        if !self.contains(peer) {
            return ClientIp {
                ip: peer,
                forwarded_https: false,
            };
        }
        let mut ip = peer;
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(hop) if self.contains(hop) => ip = hop,
                Some(hop) => {
                    ip = hop;
                    break;
                }
                None => break,
            }
        }
        let forwarded_https = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        ClientIp {
            ip,
            forwarded_https,
        }
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// Puts the [`ClientIp`] of every request into its extensions.
pub(crate) async fn client_ip(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = state.trusted_proxies.client(peer.ip(), request.headers());
    request.extensions_mut().insert(client);
    next.run(request).await
}

/// The `Host` values and origins the server answers to: its public URL's, and the extra hosts.
#[derive(Debug, Clone)]
pub(crate) struct HostPolicy {
    /// `host[:port]`, lowercase, as the public URL has it (without a default port).
    public_authority: String,
    /// The public URL's host with its default port spelled out (`example.com:443`).
    public_with_port: Option<String>,
    /// `scheme://host[:port]` of the public URL.
    public_origin: String,
    /// Extra hosts: `(host, Some(port))` matches exactly that port, `(host, None)` any port.
    extra: Vec<(String, Option<u16>)>,
}

impl HostPolicy {
    pub(crate) fn new(public: &url::Url, extra_hosts: &[String]) -> Self {
        let host = public.host_str().unwrap_or_default().to_ascii_lowercase();
        let public_authority = match public.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let public_with_port = match (public.port(), public.port_or_known_default()) {
            (None, Some(port)) => Some(format!("{host}:{port}")),
            _ => None,
        };
        let extra = extra_hosts
            .iter()
            .filter_map(|h| split_authority(&h.to_ascii_lowercase()))
            .collect();
        Self {
            public_authority,
            public_with_port,
            public_origin: public.origin().ascii_serialization(),
            extra,
        }
    }

    /// Whether a `Host` header value names this server.
    pub(crate) fn allows_host(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if host == self.public_authority || Some(&host) == self.public_with_port.as_ref() {
            return true;
        }
        let Some((name, port)) = split_authority(&host) else {
            return false;
        };
        self.extra
            .iter()
            .any(|(h, p)| *h == name && (p.is_none() || *p == port))
    }

    /// Whether an `Origin` header value is this server's own page (or one on an extra host).
    pub(crate) fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        if origin == self.public_origin {
            return true;
        }
        let Ok(url) = url::Url::parse(&origin) else {
            return false;
        };
        let (Some(host), true) = (url.host_str(), matches!(url.scheme(), "http" | "https")) else {
            return false;
        };
        let port = url.port_or_known_default();
        self.extra
            .iter()
            .any(|(h, p)| h == host && (p.is_none() || *p == port))
    }
}

/// `host[:port]` → `(host, port)`; IPv6 literals in brackets.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((format!("[{host}]"), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Some((host.to_owned(), Some(port.parse().ok()?)))
        }
        Some(_) => None,
        None if !authority.is_empty() => Some((authority.to_owned(), None)),
        None => None,
    }
}

/// API requests must name this server in `Host` (a DNS-rebinding page names its own), and
/// state-changing ones from a browser must come from this server's page (`Origin`, or
/// `Sec-Fetch-Site` when a browser sends no `Origin`). Clients that send neither (the CLI, curl)
/// authenticate with a bearer token, which no other site can make a browser send.
pub(crate) async fn check_host_and_origin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    if !state.hosts.allows_host(host) {
        metrics::counter!("erigolem_requests_refused_total", "reason" => "host").increment(1);
        return ApiError::new(
            StatusCode::FORBIDDEN,
            erigolem_api::ErrorCode::HostNotAllowed,
            format!("this server does not answer to the host {host:?} (see --allowed-host)"),
        )
        .into_response();
    }
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe {
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        let cross_site = match origin {
            Some(origin) => !state.hosts.allows_origin(origin),
            None => headers
                .get("sec-fetch-site")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|site| matches!(site, "cross-site" | "same-site")),
        };
        if cross_site {
            metrics::counter!("erigolem_requests_refused_total", "reason" => "origin").increment(1);
            return ApiError::new(
                StatusCode::FORBIDDEN,
                erigolem_api::ErrorCode::OriginNotAllowed,
                format!(
                    "requests that change state must come from {} (origin {})",
                    state.siwe.uri,
                    origin.unwrap_or("of another site")
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Whether `address` may sign in and create nodes.
pub(crate) fn admits(admission: &Admission, address: &str) -> bool {
    match admission {
        Admission::Open => true,
        Admission::AllowList(list) => list.iter().any(|a| a.eq_ignore_ascii_case(address)),
    }
}

pub(crate) fn not_admitted() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        erigolem_api::ErrorCode::NotAdmitted,
        "this server serves only the addresses on its allow-list",
    )
}

/// The web UI's Content-Security-Policy: its own scripts, styles and API only (the built UI has
/// no inline scripts or styles; wallet icons come as data: URLs), never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// Adds the security headers to every response (the UI's and the API's).
pub(crate) async fn security_headers(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    };
    set(headers, "content-security-policy", CSP);
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(headers, "referrer-policy", "no-referrer");
    if state.secure_cookies {
        set(headers, "strict-transport-security", "max-age=31536000");
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policy(public: &str, extra: &[&str]) -> HostPolicy {
        HostPolicy::new(
            &url::Url::parse(public).unwrap(),
            &extra.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn hosts_and_origins() {
        let p = policy("http://127.0.0.1:8080", &[]);
        assert!(p.allows_host("127.0.0.1:8080"));
        assert!(!p.allows_host("127.0.0.1"));
        assert!(!p.allows_host("evil.example:8080"));
        assert!(!p.allows_host(""));
        assert!(p.allows_origin("http://127.0.0.1:8080"));
        assert!(!p.allows_origin("http://evil.example:8080"));
        assert!(!p.allows_origin("null"));

        let p = policy("https://Nodes.Example.com", &["127.0.0.1:8080", "internal"]);
        assert!(p.allows_host("nodes.example.com"));
        assert!(p.allows_host("nodes.example.com:443"));
        assert!(!p.allows_host("nodes.example.com:80"));
        assert!(p.allows_host("127.0.0.1:8080"));
        assert!(!p.allows_host("127.0.0.1:9090"));
        assert!(p.allows_host("internal:1234"));
        assert!(p.allows_origin("https://nodes.example.com"));
        assert!(!p.allows_origin("http://nodes.example.com"));
        assert!(p.allows_origin("http://internal:5173"));
        assert!(!p.allows_origin("http://nodes.example.com.evil.example"));

        let p = policy("http://[::1]:8080", &[]);
        assert!(p.allows_host("[::1]:8080"));
        assert!(!p.allows_host("[::2]:8080"));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted = TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-proto", "https"),
        ]);
        // A stranger's headers count for nothing.
        let c = trusted.client(ip("203.0.113.9"), &h);
        assert_eq!(
            c,
            ClientIp {
                ip: ip("203.0.113.9"),
                forwarded_https: false
            }
        );
        // From a proxy: the rightmost hop that is not a proxy.
        let c = trusted.client(ip("127.0.0.1"), &h);
        assert_eq!(
            c,
            ClientIp {
                ip: ip("198.51.100.7"),
                forwarded_https: true
            }
        );
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7, 10.1.2.3"),
        ]);
        assert_eq!(trusted.client(ip("10.9.9.9"), &h).ip, ip("198.51.100.7"));
        let h = headers(&[("x-forwarded-for", "[2001:db8::5]:443, garbage")]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &h).ip, ip("127.0.0.1"));
        let h = headers(&[("x-forwarded-for", "[2001:db8::5]:443")]);
        assert_eq!(
            trusted.client(ip("::ffff:127.0.0.1"), &h).ip,
            ip("2001:db8::5")
        );
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &HeaderMap::new()).ip,
            ip("127.0.0.1")
        );
    }

    #[test]
    fn client_keys() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.1"), "192.0.2.1");
        assert_eq!(key("::ffff:192.0.2.1"), "192.0.2.1");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
    }

    #[test]
    fn allow_list_ignores_case() {
        let list = Admission::AllowList(vec!["0xabcDEF0000000000000000000000000000000000".into()]);
        assert!(admits(&list, "0xABCdef0000000000000000000000000000000000"));
        assert!(!admits(&list, "0x0000000000000000000000000000000000000000"));
        assert!(admits(&Admission::Open, "anyone"));
    }
}
