//! Which client a request comes from, for the per-client rate limit: the bytes that name
//! a client in a request, under the `TCPIE_CLIENT_KEY` setting ([`ClientKey`]).
//!
//! A client is named by its address (the peer's, or the one a trusted proxy recorded) or
//! by a header's value. Addresses are normalised first: an IPv4 address seen as an
//! IPv4-mapped IPv6 one is the same client, and IPv6 addresses are grouped by /64, the
//! block one subscriber usually holds (one host can pick any address in it). The result
//! is only ever hashed ([`super::client_table`]): no raw value leaves this module, so a header
//! that carries a credential is never logged, traced or exported.

use std::net::{IpAddr, Ipv6Addr};

use crate::config::{ClientKey, Forwarded};
use crate::handler::Request;

/// What names one client, ready to hash. Kinds never collide: an address and a header
/// value with the same bytes are different clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity<'a> {
    /// An IPv4 address.
    V4([u8; 4]),
    /// The /64 prefix of an IPv6 address.
    V6([u8; 8]),
    /// A header's value, or a proxy's entry that is not an address (`unknown`, an
    /// obfuscated identifier).
    Bytes(&'a [u8]),
}

impl std::hash::Hash for Identity<'_> {
    /// An address is hashed as one word (the kind in the top bits), so that the common
    /// case costs a single round of the keyed hash; a value is prefixed by its length.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Identity::V4(v4) => state.write_u64(4 << 56 | u64::from(u32::from_be_bytes(*v4))),
            Identity::V6(prefix) => {
                state.write_u8(6);
                state.write_u64(u64::from_be_bytes(*prefix));
            }
            Identity::Bytes(bytes) => {
                state.write_u8(0xb);
                state.write_usize(bytes.len());
                state.write(bytes);
            }
        }
    }
}

/// The last client a connection's requests named, and its id: one connection's requests
/// nearly always name one client (one address; one API key a keep-alive connection), and
/// a fleet's id costs a SHA-1 digest. The identity is kept whole and compared exactly, so
/// no request is ever charged to another identity than its own. It stays in the
/// connection's memory, beside the request that carried it.
#[derive(Debug, Clone, Copy)]
pub struct LastClient {
    /// The identity's kind, then its bytes; `len` 0: none yet.
    key: [u8; LastClient::MOST],
    len: u8,
    id: u64,
}

impl Default for LastClient {
    fn default() -> LastClient {
        LastClient {
            key: [0; LastClient::MOST],
            len: 0,
            id: 0,
        }
    }
}

impl LastClient {
    /// The longest identity remembered (with its kind): addresses, and API keys up to
    /// 47 bytes; a longer one is hashed each time.
    const MOST: usize = 48;

    /// The id of `identity`: the one remembered if it is the same, else `id_of`'s,
    /// remembered for the next request.
    pub fn id(&mut self, identity: &Identity<'_>, id_of: impl FnOnce() -> u64) -> u64 {
        let mut key = [0u8; LastClient::MOST];
        let len = match *identity {
            Identity::V4(v4) => {
                key[0] = 4;
                key[1..5].copy_from_slice(&v4);
                5
            }
            Identity::V6(prefix) => {
                key[0] = 6;
                key[1..9].copy_from_slice(&prefix);
                9
            }
            Identity::Bytes(bytes) if bytes.len() < LastClient::MOST => {
                key[0] = 0xb;
                key[1..=bytes.len()].copy_from_slice(bytes);
                bytes.len() + 1
            }
            Identity::Bytes(_) => return id_of(),
        };
        if usize::from(self.len) == len && self.key[..len] == key[..len] {
            return self.id;
        }
        self.id = id_of();
        self.key = key;
        self.len = len as u8;
        self.id
    }
}

/// The identity of an address: IPv4 (also when IPv4-mapped), or an IPv6 /64.
pub fn address(ip: IpAddr) -> Identity<'static> {
    match ip {
        IpAddr::V4(v4) => Identity::V4(v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Identity::V4(v4.octets()),
            None => {
                let o = v6.octets();
                Identity::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
            }
        },
    }
}

/// The identity of the client that sent `request` over a connection from `peer`, under
/// `key` and `trusted_hops` (`None` with [`ClientKey::None`]).
pub fn identify<'r>(
    key: &ClientKey,
    trusted_hops: u32,
    peer: IpAddr,
    request: &'r Request,
) -> Option<Identity<'r>> {
    match key {
        ClientKey::None => None,
        ClientKey::Peer => Some(address(peer)),
        ClientKey::Header(name) => Some(match request.header(name) {
            Some(value) if !value.is_empty() => Identity::Bytes(value),
            _ => address(peer),
        }),
        ClientKey::Forwarded(header) => {
            Some(forwarded(*header, trusted_hops, request.head()).unwrap_or_else(|| address(peer)))
        }
    }
}

/// The entry `hops` from the right of the `X-Forwarded-For` (or `Forwarded`) fields of
/// `head`, counted over all its lines (a later line is further right); `None` when there
/// are fewer entries, or no such field.
pub fn forwarded(header: Forwarded, hops: u32, head: &[u8]) -> Option<Identity<'_>> {
    let name: &[u8] = match header {
        Forwarded::XForwardedFor => b"x-forwarded-for",
        Forwarded::Rfc7239 => b"forwarded",
    };
    let mut left = hops.max(1);
    // Field lines from the last to the first; the head was validated when it was parsed,
    // so lines are CRLF-separated and a field line is `name: value`.
    for line in head.split(|&b| b == b'\n').rev() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(name) {
            continue;
        }
        let value = &line[colon + 1..];
        let entries = || {
            Elements { rest: Some(value) }
                .map(<[u8]>::trim_ascii)
                .filter(|e| !e.is_empty())
        };
        // Empty list elements are not entries (RFC 9110 §5.6.1).
        let count = entries().count();
        if (left as usize) > count {
            left -= count as u32;
            continue;
        }
        let element = entries().nth(count - left as usize)?;
        return match header {
            Forwarded::XForwardedFor => Some(node(element)),
            // A proxy's element without `for=` names no client: fall back.
            Forwarded::Rfc7239 => rfc7239_for(element).map(node),
        };
    }
    None
}

/// The elements of a list, split on the commas outside quoted strings.
struct Elements<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for Elements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let value = self.rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, &b) in value.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    self.rest = Some(&value[i + 1..]);
                    return Some(&value[..i]);
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(value)
    }
}

/// The value of the `for` parameter of one `Forwarded` element, unquoted.
fn rfc7239_for(element: &[u8]) -> Option<&[u8]> {
    element.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        if !pair[..eq].trim_ascii().eq_ignore_ascii_case(b"for") {
            return None;
        }
        let value = pair[eq + 1..].trim_ascii();
        Some(
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value),
        )
    })
}

/// A node as proxies write it: an address, maybe with a port (`192.0.2.1:8080`,
/// `[2001:db8::1]:443`, `[2001:db8::1]`); anything else (`unknown`, `_hidden`) as bytes.
fn node(entry: &[u8]) -> Identity<'_> {
    let Ok(text) = std::str::from_utf8(entry) else {
        return Identity::Bytes(entry);
    };
    if let Ok(ip) = text.parse::<IpAddr>() {
        return address(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        if let Some(v6) = rest
            .split(']')
            .next()
            .and_then(|a| a.parse::<Ipv6Addr>().ok())
        {
            return address(IpAddr::V6(v6));
        }
    }
    if let Some((host, port)) = text.rsplit_once(':') {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
                return address(IpAddr::V4(ip));
            }
        }
    }
    Identity::Bytes(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Result<ClientKey, String> {
        ClientKey::try_from(s.to_string())
    }

    #[test]
    fn settings_parse_and_show_back() {
        for s in [
            "none",
            "peer",
            "header:X-Api-Key",
            "forwarded",
            "forwarded:rfc7239",
        ] {
            assert_eq!(key(s).unwrap().to_string(), s);
        }
        for bad in [
            "",
            "Peer",
            "header:",
            "header:X Api",
            "header:a:b",
            "forwarded:x",
            "ip",
        ] {
            let err = key(bad).unwrap_err();
            assert!(err.contains("header:NAME"), "{bad}: {err}");
        }
    }

    fn v4(s: &str) -> Identity<'static> {
        address(s.parse().unwrap())
    }

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(v4("::ffff:192.0.2.7"), v4("192.0.2.7"));
        // One /64 is one client; the next /64 is another.
        assert_eq!(
            v4("2001:db8:1:2::1"),
            v4("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(v4("2001:db8:1:2::1"), v4("2001:db8:1:3::1"));
        assert_ne!(v4("10.0.0.1"), v4("10.0.0.2"));
    }

    fn head(fields: &str) -> Vec<u8> {
        format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n").into_bytes()
    }

    #[test]
    fn x_forwarded_for_counts_trusted_hops_from_the_right() {
        let h =
            head("X-Forwarded-For: 6.6.6.6, 198.51.100.1\r\nX-Forwarded-For: 10.0.0.9:5000\r\n");
        let xff = |hops| forwarded(Forwarded::XForwardedFor, hops, &h);
        assert_eq!(xff(1), Some(v4("10.0.0.9")));
        assert_eq!(xff(2), Some(v4("198.51.100.1")));
        assert_eq!(xff(3), Some(v4("6.6.6.6")));
        assert_eq!(xff(4), None);
        // Empty elements are not entries; IPv6 in brackets with a port is an address.
        let h = head("x-forwarded-for: ,[2001:db8::5]:443 ,, unknown\r\n");
        assert_eq!(
            forwarded(Forwarded::XForwardedFor, 1, &h),
            Some(Identity::Bytes(b"unknown"))
        );
        assert_eq!(
            forwarded(Forwarded::XForwardedFor, 2, &h),
            Some(v4("2001:db8::9"))
        );
        assert_eq!(forwarded(Forwarded::XForwardedFor, 3, &h), None);
        // The other header is never read.
        assert_eq!(forwarded(Forwarded::Rfc7239, 1, &h), None);
    }

    #[test]
    fn forwarded_reads_the_for_parameter() {
        let h = head(
            "Forwarded: for=6.6.6.6;proto=http, for=\"[2001:db8:cafe::17]:4711\"\r\n\
             Forwarded: by=10.0.0.1;For=192.0.2.60;proto=https\r\nForwarded: proto=http\r\n",
        );
        let fwd = |hops| forwarded(Forwarded::Rfc7239, hops, &h);
        assert_eq!(fwd(1), None, "an element without for= names no client");
        assert_eq!(fwd(2), Some(v4("192.0.2.60")));
        assert_eq!(fwd(3), Some(v4("2001:db8:cafe::1")));
        assert_eq!(fwd(4), Some(v4("6.6.6.6")));
        // A comma inside a quoted string does not split an element.
        let h = head("Forwarded: for=\"_a,b\", for=_hidden\r\n");
        assert_eq!(
            forwarded(Forwarded::Rfc7239, 1, &h),
            Some(Identity::Bytes(b"_hidden"))
        );
        assert_eq!(
            forwarded(Forwarded::Rfc7239, 2, &h),
            Some(Identity::Bytes(b"_a,b"))
        );
    }

    /// A connection's last client is remembered exactly: the same identity again costs no
    /// digest, any other (another kind with the same bytes, one byte more) is computed.
    #[test]
    fn the_last_client_is_remembered_exactly() {
        let mut last = LastClient::default();
        let computed = std::cell::Cell::new(0);
        let id = |last: &mut LastClient, identity: Identity<'_>, id: u64| {
            last.id(&identity, || {
                computed.set(computed.get() + 1);
                id
            })
        };
        assert_eq!(id(&mut last, Identity::V4([1, 2, 3, 4]), 1), 1);
        assert_eq!(id(&mut last, Identity::V4([1, 2, 3, 4]), 99), 1);
        assert_eq!(id(&mut last, Identity::Bytes(&[1, 2, 3, 4]), 2), 2);
        assert_eq!(id(&mut last, Identity::Bytes(&[1, 2, 3, 4, 0]), 3), 3);
        assert_eq!(id(&mut last, Identity::Bytes(&[1, 2, 3, 4, 0]), 99), 3);
        assert_eq!(id(&mut last, Identity::V6([1, 2, 3, 4, 0, 0, 0, 0]), 4), 4);
        assert_eq!(id(&mut last, Identity::V4([1, 2, 3, 4]), 5), 5);
        // Too long to keep: computed each time.
        let long = [7u8; 100];
        assert_eq!(id(&mut last, Identity::Bytes(&long), 6), 6);
        assert_eq!(id(&mut last, Identity::Bytes(&long), 7), 7);
        // ...and what was remembered before still is.
        assert_eq!(id(&mut last, Identity::V4([1, 2, 3, 4]), 99), 5);
        assert_eq!(computed.get(), 7);
    }
}
