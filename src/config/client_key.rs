//! The value of `TCPIE_CLIENT_KEY`: how requests are grouped into clients, each with a
//! bucket of its own. Reading a client's name out of a request is the rate limiter's
//! (`crate::ratelimit::client_key`); this is only the setting.

use std::fmt;

use serde::Deserialize;

use super::Shown;
use crate::http::is_tchar;

/// How requests are grouped into clients (`TCPIE_CLIENT_KEY`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ClientKey {
    /// No per-client limit: only the global bucket.
    None,
    /// The peer's IP address (IPv6 by /64).
    Peer,
    /// A request header's value (the name as configured); the peer's address when a
    /// request has none.
    Header(Box<str>),
    /// The address the proxies recorded, `TCPIE_TRUSTED_HOPS` entries from the right.
    Forwarded(Forwarded),
}

/// Which header the proxies in front of TCPie record the client's address in. Each key
/// reads only its own header: a proxy that appends to one does not remove a forged copy
/// of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// `X-Forwarded-For` (nginx, HAProxy, Envoy, cloud load balancers): `forwarded`.
    XForwardedFor,
    /// RFC 7239 `Forwarded`, its `for=` parameters: `forwarded:rfc7239`.
    Rfc7239,
}

impl ClientKey {
    /// The values `TCPIE_CLIENT_KEY` accepts, for error messages.
    pub const EXPECTED: &'static str =
        "none, peer, header:NAME (such as header:X-Api-Key), forwarded (X-Forwarded-For) or \
         forwarded:rfc7239 (the Forwarded header)";
}

impl TryFrom<String> for ClientKey {
    type Error = String;

    fn try_from(value: String) -> Result<ClientKey, String> {
        match value.as_str() {
            "none" => Ok(ClientKey::None),
            "peer" => Ok(ClientKey::Peer),
            "forwarded" => Ok(ClientKey::Forwarded(Forwarded::XForwardedFor)),
            "forwarded:rfc7239" => Ok(ClientKey::Forwarded(Forwarded::Rfc7239)),
            other => match other.strip_prefix("header:") {
                Some(name) if !name.is_empty() && name.bytes().all(is_tchar) => {
                    Ok(ClientKey::Header(name.into()))
                }
                _ => Err(format!("expected {}", ClientKey::EXPECTED)),
            },
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::None => f.write_str("none"),
            ClientKey::Peer => f.write_str("peer"),
            ClientKey::Header(name) => write!(f, "header:{name}"),
            ClientKey::Forwarded(Forwarded::XForwardedFor) => f.write_str("forwarded"),
            ClientKey::Forwarded(Forwarded::Rfc7239) => f.write_str("forwarded:rfc7239"),
        }
    }
}

impl Shown for ClientKey {
    fn shown(&self) -> String {
        self.to_string()
    }
}
