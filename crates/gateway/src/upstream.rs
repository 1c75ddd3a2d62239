use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Where Nginx sends an instance's requests: `host:port`, validated so that it can be written
/// into an `upstream { server …; }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    host: String,
    port: u16,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid upstream {0:?}: expected http://host:port or host:port with a plain host name or IP"
)]
pub struct InvalidUpstream(pub String);

impl Upstream {
    pub fn local(port: u16) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port,
        }
    }

    /// Parses `host:port` or an `http://host:port[/]` URL (no path, no credentials).
    pub fn parse(s: &str) -> Result<Self, InvalidUpstream> {
        let err = || InvalidUpstream(s.to_owned());
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self {
                host: bracket(addr.ip()),
                port: addr.port(),
            });
        }
        let with_scheme = if s.contains("://") {
            s.to_owned()
        } else {
            format!("http://{s}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|_| err())?;
        let plain = url.scheme() == "http"
            && url.username().is_empty()
            && url.password().is_none()
            && matches!(url.path(), "" | "/")
            && url.query().is_none()
            && url.fragment().is_none();
        let host = url.host_str().ok_or_else(err)?;
        let host_ok = host.parse::<IpAddr>().is_ok()
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok()
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        match (plain && host_ok, url.port_or_known_default()) {
            (true, Some(port)) => Ok(Self {
                host: host.to_owned(),
                port,
            }),
            _ => Err(err()),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://host:port` for direct JSON-RPC.
    pub fn http_url(&self) -> String {
        format!("http://{self}")
    }
}

fn bracket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(
            Upstream::parse("127.0.0.1:8545").unwrap().to_string(),
            "127.0.0.1:8545"
        );
        assert_eq!(
            Upstream::parse("http://10.0.0.2:8545/")
                .unwrap()
                .to_string(),
            "10.0.0.2:8545"
        );
        assert_eq!(
            Upstream::parse("http://node.internal:8545").unwrap().port(),
            8545
        );
        assert_eq!(
            Upstream::parse("[::1]:8545").unwrap().to_string(),
            "[::1]:8545"
        );
        for bad in [
            "127.0.0.1:8545; deny all",
            "http://u:p@host:1",
            "http://host:1/path",
            "https://host:1",
            "host:1 }",
            "",
            "http://host:1/?x=1",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
