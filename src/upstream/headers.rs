//! What a careful proxy changes in the header fields it passes on (RFC 9110 §7.6): the
//! hop-by-hop fields go (`Connection` and every field it names, `Keep-Alive`, `TE`,
//! `Transfer-Encoding`, `Upgrade`, `Proxy-Connection`), and so does the framing, which
//! TCPie sets again from what it parsed, so that no ambiguity of the client's can reach the
//! upstream, nor one of the upstream's the client. `X-Forwarded-For` gets the peer appended,
//! `X-Forwarded-Proto` is set; `Host` passes as the client sent it.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::http::fields;

/// Fields that describe one connection, not the message, and the framing fields, which
/// whoever writes a message sets again.
fn hop_by_hop(name: &[u8]) -> bool {
    // By length first: most names are none of these, and most lengths rule all out.
    let candidates: &[&str] = match name.len() {
        2 => &["te"],
        7 => &["upgrade"],
        10 => &["connection", "keep-alive"],
        14 => &["content-length"],
        16 => &["proxy-connection"],
        17 => &["transfer-encoding"],
        _ => return false,
    };
    candidates
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// The values of a message's `Connection` fields, which name more fields that stay on
/// this hop. Most messages have none or one line, kept without allocating.
#[derive(Default)]
struct Connection<'a> {
    first: Option<&'a [u8]>,
    more: Vec<&'a [u8]>,
}

impl<'a> Connection<'a> {
    fn add(&mut self, value: &'a [u8]) {
        if self.first.is_none() {
            self.first = Some(value);
        } else {
            self.more.push(value);
        }
    }

    fn tokens(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.first
            .into_iter()
            .chain(self.more.iter().copied())
            .flat_map(|v| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
    }

    fn names(&self, name: &[u8]) -> bool {
        self.tokens().any(|t| t.eq_ignore_ascii_case(name))
    }
}

/// A request that asks to switch protocols (a WebSocket handshake, `h2c`): upstream mode
/// answers these 501 rather than forward a request stripped of what it asks.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The fields to forward of a request `head` from `peer`: the end-to-end ones as sent (but
/// `Expect`, which TCPie answered itself, and the trace context when `own_trace` replaces
/// it), `Host: host` if it has none (an HTTP/1.0 request), then `X-Forwarded-For` with
/// `peer` appended and `X-Forwarded-Proto: http`; or [`Upgrade`] when the request asks to
/// switch protocols (an `Upgrade` field that its `Connection` field names).
pub fn request_fields(
    head: &Bytes,
    peer: std::net::IpAddr,
    own_trace: bool,
    host: &HeaderValue,
) -> Result<HeaderMap, Upgrade> {
    // A field a line, so the line ends bound the fields: the map is allocated once, with
    // room for the few TCPie adds.
    let lines = head.iter().filter(|b| **b == b'\n').count();
    let mut out = HeaderMap::with_capacity(lines + 3);
    let mut connection = Connection::default();
    let mut upgrade = false;
    let mut forwarded_for: Option<BytesMut> = None;
    // One pass. The fields a `Connection` field names are known only at its end: they
    // are taken out after it (most requests name none but `keep-alive`).
    for (name, value) in fields(head) {
        if name.eq_ignore_ascii_case(b"connection") {
            connection.add(value);
            continue;
        }
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
            continue;
        }
        if hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"x-forwarded-proto")
            || (own_trace
                && (name.eq_ignore_ascii_case(b"traceparent")
                    || name.eq_ignore_ascii_case(b"tracestate")))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            if !value.is_empty() {
                let list = forwarded_for.get_or_insert_with(|| BytesMut::with_capacity(64));
                if !list.is_empty() {
                    list.put_slice(b", ");
                }
                list.put_slice(value);
            }
            continue;
        }
        // The head was parsed, so its names and values are valid; one that is not is left
        // out rather than forwarded broken. Values are slices of the head itself (`fields`
        // yields subslices of it): shared, nothing copied.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_maybe_shared(head.slice_ref(value)),
        ) {
            out.append(n, v);
        }
    }
    if upgrade && connection.names(b"upgrade") {
        return Err(Upgrade);
    }
    for token in connection.tokens() {
        if token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close") {
            continue;
        }
        if token.eq_ignore_ascii_case(b"x-forwarded-for") {
            forwarded_for = None;
        } else if let Ok(name) = HeaderName::from_bytes(token) {
            out.remove(name);
        }
    }
    if !out.contains_key(http::header::HOST) {
        out.insert(http::header::HOST, host.clone());
    }
    let mut list = forwarded_for.unwrap_or_else(|| BytesMut::with_capacity(40));
    if !list.is_empty() {
        list.put_slice(b", ");
    }
    write_ip(&mut list, peer);
    if let Ok(v) = HeaderValue::from_maybe_shared(list.freeze()) {
        out.insert(X_FORWARDED_FOR, v);
    }
    out.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    Ok(out)
}

/// Appends `ip` as text; an IPv4 address without the formatting machinery, since every
/// forwarded request writes one.
fn write_ip(out: &mut BytesMut, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.put_u8(b'.');
                }
                if octet >= 100 {
                    out.put_u8(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.put_u8(b'0' + octet / 10 % 10);
                }
                out.put_u8(b'0' + octet % 10);
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let mut text = String::with_capacity(39);
            let _ = write!(text, "{v6}");
            out.put_slice(text.as_bytes());
        }
    }
}

/// Removes from the upstream's response fields the hop-by-hop ones and those its
/// `Connection` field names, in place. `Connection` itself and the framing fields are
/// left: the answer's writer writes its own and never these (see
/// [`crate::http::full_head`]).
pub fn strip_response_fields(fields: &mut HeaderMap) {
    use http::header::{CONNECTION, TE, UPGRADE};
    // One look at each field; most answers carry none of these but `Connection:
    // keep-alive`, which names nothing to remove.
    let mut present: Vec<HeaderName> = Vec::new();
    for (name, value) in fields.iter() {
        if name == CONNECTION {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.is_empty()
                    || token.eq_ignore_ascii_case(b"close")
                    || token.eq_ignore_ascii_case(b"keep-alive")
                {
                    continue;
                }
                if let Ok(named) = HeaderName::from_bytes(token) {
                    if named != CONNECTION {
                        present.push(named);
                    }
                }
            }
        } else if name == TE
            || name == UPGRADE
            || name.as_str() == "keep-alive"
            || name.as_str() == "proxy-connection"
        {
            present.push(name.clone());
        }
    }
    for name in present {
        fields.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: HeaderValue = HeaderValue::from_static("upstream:80");

    /// The fields `head` from `peer` is forwarded with, to the upstream `HOST`
    /// (`own_trace`: the client's `traceparent` is dropped, for TCPie's span's own).
    fn forward(head: &'static [u8], peer: &str, own_trace: bool) -> Result<HeaderMap, Upgrade> {
        request_fields(
            &Bytes::from_static(head),
            peer.parse().unwrap(),
            own_trace,
            &HOST,
        )
    }

    #[test]
    fn a_request_without_host_gets_the_upstreams() {
        let head = b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n";
        let out = forward(head, "::1", false).unwrap();
        assert_eq!(out["host"], "upstream:80");
        let head = b"GET / HTTP/1.0\r\nhost: app\r\n\r\n";
        let out = forward(head, "::1", false).unwrap();
        assert_eq!(out.get_all("host").iter().collect::<Vec<_>>(), ["app"]);
    }

    #[test]
    fn hop_by_hop_fields_and_the_clients_framing_are_not_forwarded() {
        let head = b"POST /a HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive, X-Secret\r\n\
            Keep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: close\r\n\
            X-Secret: 1\r\nContent-Length: 3\r\nExpect: 100-continue\r\nX-Kept: yes\r\n\
            X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n";
        let out = forward(head, "192.0.2.7", false).unwrap();
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["host", "x-kept", "x-forwarded-for", "x-forwarded-proto"]
        );
        assert_eq!(out["host"], "app.example");
        assert_eq!(out["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(out["x-forwarded-proto"], "http");
    }

    #[test]
    fn forwarded_for_joins_every_line_then_the_peer() {
        let head =
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: a\r\nx-forwarded-for: b, c\r\n\r\n";
        let out = forward(head, "::1", false).unwrap();
        assert_eq!(out["x-forwarded-for"], "a, b, c, ::1");
        let head = b"GET / HTTP/1.1\r\nHost: h\r\ntraceparent: 00-1-2-01\r\n\r\n";
        assert!(forward(head, "::1", true)
            .unwrap()
            .get("traceparent")
            .is_none());
        assert!(forward(head, "::1", false)
            .unwrap()
            .get("traceparent")
            .is_some());
    }

    #[test]
    fn the_upstreams_hop_by_hop_fields_are_not_passed_back() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "close, x-internal"),
            ("x-internal", "1"),
            ("transfer-encoding", "chunked"),
            ("content-length", "5"),
            ("keep-alive", "timeout=5"),
            ("content-type", "text/plain"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        strip_response_fields(&mut h);
        // Removing may reorder fields of different names, which carries no meaning
        // (RFC 9110 §5.3); lines of one name keep their order.
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        // `Connection` and the framing fields stay for the writer, which writes its own
        // and never these.
        assert_eq!(
            names,
            [
                "connection",
                "content-length",
                "content-type",
                "set-cookie",
                "transfer-encoding"
            ]
        );
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        // An answer with nothing to strip keeps every field.
        let mut plain = HeaderMap::new();
        plain.append("content-type", HeaderValue::from_static("text/plain"));
        plain.append("x-a", HeaderValue::from_static("1"));
        strip_response_fields(&mut plain);
        assert_eq!(plain.len(), 2);
    }

    fn asks_upgrade(head: &'static [u8]) -> bool {
        forward(head, "::1", false) == Err(Upgrade)
    }

    #[test]
    fn an_upgrade_is_told_by_both_fields() {
        assert!(asks_upgrade(
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(asks_upgrade(
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\
              connection: upgrade\r\n\r\n"
        ));
        assert!(!asks_upgrade(
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!asks_upgrade(
            b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n"
        ));
    }

    #[test]
    fn peers_are_written_as_their_usual_text() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.0.2.7",
            "::1",
            "2001:db8::7",
        ] {
            let mut out = BytesMut::new();
            write_ip(&mut out, ip.parse().unwrap());
            assert_eq!(&out[..], ip.as_bytes());
        }
    }
}
