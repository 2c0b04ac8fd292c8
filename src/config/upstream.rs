//! The value of `TCPIE_UPSTREAM`: the HTTP service TCPie stands in front of, or none.

use std::fmt;

use serde::Deserialize;

use super::Shown;

/// Where admitted requests are forwarded (`TCPIE_UPSTREAM`): `http://HOST[:PORT]`, with
/// a DNS name (resolved again for every new connection, as a Kubernetes Service needs), an
/// IPv4 address or an IPv6 one in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `HOST:PORT`, as a URI's authority.
    pub authority: String,
    pub host: String,
    pub port: u16,
}

/// The setting: `None` (empty, the default) keeps the built-in handler.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct UpstreamSetting(pub Option<Upstream>);

impl UpstreamSetting {
    /// What `TCPIE_UPSTREAM` accepts, for error messages.
    pub const EXPECTED: &'static str =
        "empty (the built-in handler), or http://HOST:PORT, such as \
        http://127.0.0.1:3000 or http://app.default.svc:80 (no path; https:// is not supported: \
        TCPie speaks no TLS)";
}

impl TryFrom<String> for UpstreamSetting {
    type Error = String;

    fn try_from(value: String) -> Result<UpstreamSetting, String> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(UpstreamSetting(None));
        }
        let bad = || format!("expected {}", UpstreamSetting::EXPECTED);
        let rest = value.strip_prefix("http://").ok_or_else(bad)?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') || host.starts_with('[') => {
                (host, port.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority, 80),
        };
        let plain = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let valid = match plain {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => {
                !host.is_empty()
                    && host.split('.').all(|l| {
                        !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    })
            }
        };
        if !valid || port == 0 {
            return Err(bad());
        }
        Ok(UpstreamSetting(Some(Upstream {
            authority: format!("{host}:{port}"),
            host: plain.unwrap_or(host).to_string(),
            port,
        })))
    }
}

impl fmt::Display for UpstreamSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => Ok(()),
            Some(u) => write!(f, "http://{}", u.authority),
        }
    }
}

impl Shown for UpstreamSetting {
    fn shown(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<Option<Upstream>, String> {
        UpstreamSetting::try_from(v.to_string()).map(|s| s.0)
    }

    #[test]
    fn an_upstream_is_http_host_and_port() {
        assert_eq!(parse("").unwrap(), None);
        let u = parse("http://app.default.svc:8080").unwrap().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("app.default.svc", 8080, "app.default.svc:8080")
        );
        assert_eq!(
            parse("http://127.0.0.1/").unwrap().unwrap().authority,
            "127.0.0.1:80"
        );
        let v6 = parse("http://[::1]:3000").unwrap().unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.authority.as_str()),
            ("::1", "[::1]:3000")
        );
        for bad in [
            "https://app:443",
            "app:80",
            "http://",
            "http://app:80/prefix",
            "http://user@app:80",
            "http://app:http",
            "http://app:0",
            "http://a_b:80",
            "http://[::g]:80",
            "ftp://app",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
