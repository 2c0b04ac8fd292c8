//! What a careful proxy changes in the header fields it passes on (RFC 9110 §7.6): the
//! hop-by-hop fields go (`Connection` and every field it names, `Keep-Alive`, `TE`,
//! `Transfer-Encoding`, `Upgrade`, `Proxy-Connection`), and so does the framing, which
//! TCPie sets again from what it parsed, so that no ambiguity of the client's can reach the
//! upstream, nor one of the upstream's the client. `X-Forwarded-For` gets the peer appended,
//! `X-Forwarded-Proto` is set; `Host` passes as the client sent it.

use std::io::Write;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::http::fields;

/// Fields that describe one connection, not the message.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

/// The fields the framing of a message is told by, set again by whoever writes it.
const FRAMING: &[&str] = &["content-length", "transfer-encoding"];

/// The names a `Connection` field lists (lower-cased), from every line of it.
fn named_by_connection<'a>(lines: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<Vec<u8>> {
    lines
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| v.split(|b| *b == b','))
        .map(|t| t.trim_ascii().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn dropped(name: &[u8], named: &[Vec<u8>]) -> bool {
    HOP_BY_HOP
        .iter()
        .chain(FRAMING)
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        || named.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Whether the request asks to switch protocols (a WebSocket handshake, `h2c`): upstream
/// mode answers these 501 rather than forward a request stripped of what it asks.
pub fn asks_upgrade(head: &[u8]) -> bool {
    let named = named_by_connection(fields(head));
    fields(head).any(|(n, _)| n.eq_ignore_ascii_case(b"upgrade"))
        && named.iter().any(|n| n == b"upgrade")
}

/// The fields to forward of a request `head` from `peer`: the end-to-end ones as sent (but
/// `Expect`, which TCPie answered itself, and the trace context when `own_trace` replaces
/// it), then `X-Forwarded-For` with `peer` appended and `X-Forwarded-Proto: http`.
pub fn request_fields(head: &Bytes, peer: std::net::IpAddr, own_trace: bool) -> HeaderMap {
    let named = named_by_connection(fields(head));
    let mut out = HeaderMap::with_capacity(16);
    let mut forwarded_for: Vec<u8> = Vec::new();
    for (name, value) in fields(head) {
        if dropped(name, &named)
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
                if !forwarded_for.is_empty() {
                    forwarded_for.extend_from_slice(b", ");
                }
                forwarded_for.extend_from_slice(value);
            }
            continue;
        }
        // The head was parsed, so its names and values are valid; one that is not is left
        // out rather than forwarded broken.
        // Values are slices of the head itself (`fields` yields subslices of it): shared,
        // nothing copied.
        let value = head.slice_ref(value);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_maybe_shared(value),
        ) {
            out.append(n, v);
        }
    }
    if !forwarded_for.is_empty() {
        forwarded_for.extend_from_slice(b", ");
    }
    let _ = write!(forwarded_for, "{peer}");
    if let Ok(v) = HeaderValue::from_bytes(&forwarded_for) {
        out.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    out.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    out
}

/// The upstream's response fields to pass to the client: all but the hop-by-hop and
/// framing ones.
pub fn response_fields(upstream: &HeaderMap) -> HeaderMap {
    let named = named_by_connection(
        upstream
            .get_all(http::header::CONNECTION)
            .iter()
            .map(|v| (&b"connection"[..], v.as_bytes())),
    );
    let mut out = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        if !dropped(name.as_str().as_bytes(), &named) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_and_the_clients_framing_are_not_forwarded() {
        let head = b"POST /a HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive, X-Secret\r\n\
            Keep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: close\r\n\
            X-Secret: 1\r\nContent-Length: 3\r\nExpect: 100-continue\r\nX-Kept: yes\r\n\
            X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n";
        let out = request_fields(
            &Bytes::from_static(head),
            "192.0.2.7".parse().unwrap(),
            false,
        );
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
        let out = request_fields(&Bytes::from_static(head), "::1".parse().unwrap(), false);
        assert_eq!(out["x-forwarded-for"], "a, b, c, ::1");
        let head = b"GET / HTTP/1.1\r\nHost: h\r\ntraceparent: 00-1-2-01\r\n\r\n";
        assert!(
            request_fields(&Bytes::from_static(head), "::1".parse().unwrap(), true)
                .get("traceparent")
                .is_none()
        );
        assert!(
            request_fields(&Bytes::from_static(head), "::1".parse().unwrap(), false)
                .get("traceparent")
                .is_some()
        );
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
        let out = response_fields(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "set-cookie"]);
        assert_eq!(out.get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn an_upgrade_is_told_by_both_fields() {
        assert!(asks_upgrade(
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!asks_upgrade(
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!asks_upgrade(
            b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n"
        ));
    }
}
