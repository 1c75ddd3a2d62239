//! What a requestor may restrict an endpoint to (start arguments `methods`, `allow_origins`,
//! `allow_ips`): validated when parsed, so a bad entry is refused at `start` with its reason.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Most entries in one allowlist.
pub const MAX_ALLOWLIST: usize = 100;

/// A JSON-RPC method name, or a namespace: `eth_call`, `eth_*`. Matched case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct MethodPattern {
    /// As written; for a namespace, without the `*` (`eth_`).
    text: String,
    namespace: bool,
}

/// Why an allowlist entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPattern(pub String);

/// Whether `s` can be a JSON-RPC method name here: `[A-Za-z0-9_]`, 1–128 characters. Names
/// outside this set are refused by the endpoint guard before they reach a node.
pub fn is_method_name(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl MethodPattern {
    pub fn matches(&self, method: &str) -> bool {
        if self.namespace {
            method.len() >= self.text.len()
                && method.as_bytes()[..self.text.len()].eq_ignore_ascii_case(self.text.as_bytes())
        } else {
            method.eq_ignore_ascii_case(&self.text)
        }
    }
}

impl FromStr for MethodPattern {
    type Err = InvalidPattern;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            InvalidPattern(format!(
                "invalid method pattern {s:?}: use a method name (eth_call) or a namespace (eth_*)"
            ))
        };
        let (name, namespace) = match s.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (s, false),
        };
        if !is_method_name(name) || (namespace && !name.ends_with('_')) {
            return Err(err());
        }
        Ok(Self {
            text: name.to_owned(),
            namespace,
        })
    }
}

impl fmt::Display for MethodPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        if self.namespace {
            f.write_str("*")?;
        }
        Ok(())
    }
}

impl From<MethodPattern> for String {
    fn from(p: MethodPattern) -> String {
        p.to_string()
    }
}

/// A browser origin allowed to call the endpoint: `https://app.example.org`, `http://localhost:3000`,
/// or every subdomain of a domain: `https://*.example.org`. Compared with the `Origin` header.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct OriginPattern {
    scheme: String,
    /// Lowercased; for a wildcard, the domain after `*.`.
    host: String,
    port: Option<u16>,
    any_subdomain: bool,
}

impl OriginPattern {
    /// Whether an `Origin` header value is allowed by this pattern.
    pub fn matches(&self, origin: &str) -> bool {
        let Ok(o) = parse_origin(origin) else {
            return false;
        };
        if o.scheme != self.scheme || o.port != self.port {
            return false;
        }
        if self.any_subdomain {
            o.host
                .strip_suffix(self.host.as_str())
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        } else {
            o.host == self.host
        }
    }
}

struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

fn parse_origin(s: &str) -> Result<Origin, ()> {
    let (scheme, rest) = s.split_once("://").ok_or(())?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") {
        return Err(());
    }
    // `[v6]:port`, `[v6]`, `host:port`, `host`.
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or(())?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(())?),
            };
            (&rest[..addr.len() + 2], port)
        }
        None => match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| ())?)
        }
        Some(_) => return Err(()),
        None => None,
    };
    let default = if scheme == "https" { 443 } else { 80 };
    let port = port.filter(|p| *p != default);
    let host = host.to_ascii_lowercase();
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'*' | b'[' | b']' | b':')
        });
    if !host_ok {
        return Err(());
    }
    Ok(Origin { scheme, host, port })
}

impl FromStr for OriginPattern {
    type Err = InvalidPattern;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            InvalidPattern(format!(
                "invalid origin {s:?}: use scheme://host[:port], e.g. https://app.example.org or https://*.example.org"
            ))
        };
        let o = parse_origin(s).map_err(|()| err())?;
        let (host, any_subdomain) = match o.host.strip_prefix("*.") {
            Some(domain) => (domain.to_owned(), true),
            None => (o.host, false),
        };
        if host.contains('*') || host.is_empty() {
            return Err(err());
        }
        Ok(Self {
            scheme: o.scheme,
            host,
            port: o.port,
            any_subdomain,
        })
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wild = if self.any_subdomain { "*." } else { "" };
        write!(f, "{}://{wild}{}", self.scheme, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl From<OriginPattern> for String {
    fn from(p: OriginPattern) -> String {
        p.to_string()
    }
}

/// An IP address or a CIDR block (`203.0.113.7`, `10.0.0.0/8`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct IpBlock {
    addr: IpAddr,
    prefix: u8,
}

impl IpBlock {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client may arrive as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpBlock {
    type Err = InvalidPattern;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            InvalidPattern(format!(
                "invalid IP allowlist entry {s:?}: use an address (203.0.113.7) or a CIDR block (10.0.0.0/8)"
            ))
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(err)?
            }
            Some(_) => return Err(err()),
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl From<IpBlock> for String {
    fn from(b: IpBlock) -> String {
        b.to_string()
    }
}

macro_rules! deserialize_from_str {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(MethodPattern, OriginPattern, IpBlock);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn method_patterns() {
        let exact: MethodPattern = "eth_call".parse().unwrap();
        assert!(exact.matches("eth_call") && exact.matches("ETH_CALL"));
        assert!(!exact.matches("eth_callMany"));
        let ns: MethodPattern = "debug_*".parse().unwrap();
        assert!(ns.matches("debug_traceCall") && ns.matches("Debug_traceCall"));
        assert!(!ns.matches("debug") && !ns.matches("trace_call"));
        assert_eq!(ns.to_string(), "debug_*");
        for bad in [
            "",
            "*",
            "eth*",
            "eth_ call",
            "eth.call",
            "a\"b",
            "eth_*_x",
            &"a".repeat(129),
        ] {
            assert!(bad.parse::<MethodPattern>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn origin_patterns() {
        let exact: OriginPattern = "https://App.Example.org".parse().unwrap();
        assert!(exact.matches("https://app.example.org"));
        assert!(exact.matches("https://app.example.org:443"));
        assert!(!exact.matches("http://app.example.org"));
        assert!(!exact.matches("https://app.example.org.evil.net"));
        assert!(!exact.matches("https://evilapp.example.org"));
        assert!(!exact.matches("null"));
        let port: OriginPattern = "http://localhost:3000".parse().unwrap();
        assert!(port.matches("http://localhost:3000") && !port.matches("http://localhost"));
        let wild: OriginPattern = "https://*.example.org".parse().unwrap();
        assert!(wild.matches("https://a.example.org") && wild.matches("https://a.b.example.org"));
        assert!(!wild.matches("https://example.org") && !wild.matches("https://aexample.org"));
        for bad in [
            "example.org",
            "ftp://x",
            "https://",
            "https://a*.b",
            "https://x:99999",
            "https://a b",
        ] {
            assert!(bad.parse::<OriginPattern>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ip_blocks() {
        let one: IpBlock = "203.0.113.7".parse().unwrap();
        assert!(one.contains("203.0.113.7".parse().unwrap()));
        assert!(!one.contains("203.0.113.8".parse().unwrap()));
        assert!(one.contains("::ffff:203.0.113.7".parse().unwrap()));
        let net: IpBlock = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.200.3.4".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let all: IpBlock = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpBlock = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "x",
            "10.0.0.1/",
            "10.0.0.1/+8",
            "::/129",
        ] {
            assert!(bad.parse::<IpBlock>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(net.to_string(), "10.0.0.0/8");
    }
}
