//! The little HTTP/1.1 that TCPie speaks: parsing one request head, and writing responses.
//!
//! This module owns the wire format only. Reading from the socket, deadlines and
//! admission live in `server`; what a request means lives behind [`crate::handler`].
//! Parsing is done by `httparse` (no allocation, well fuzzed); this module adds the rules
//! a server must enforce on top: the size limit, a `Host` header on HTTP/1.1, one
//! unambiguous body length, and no chunked bodies.

use std::io::Write;
use std::ops::Range;

use bytes::Bytes;

/// Most headers accepted in one request; more is answered 431 like an oversized head.
pub const MAX_HEADERS: usize = 64;

/// Largest request body TCPie reads (and discards); more is answered 413.
pub const MAX_BODY_BYTES: u64 = 64 * 1024;

/// What parsing a buffer found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head is complete.
    Complete(Head),
    /// More bytes are needed.
    Partial,
}

/// A request the server refuses before admission, with the status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// 400: not a well-formed HTTP/1.x request.
    BadRequest,
    /// 411: a chunked (or otherwise encoded) body, which TCPie does not read.
    LengthRequired,
    /// 413: a body larger than [`MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// 431: a head larger than `TCPIE_MAX_HEADER_BYTES` or with too many headers.
    HeaderTooLarge,
}

/// A parsed request head: offsets into the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, blank line included.
    pub len: usize,
    pub method: Range<usize>,
    pub path: Range<usize>,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Length of the body that follows.
    pub content_length: u64,
    /// The client asked for `100 Continue` before sending its body.
    pub expect_continue: bool,
    /// The client asked to keep the connection open: HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    pub keep_alive: bool,
}

/// Parses a request head from the start of `buf`.
///
/// `max_head` is the largest head accepted; a partial head already longer than it is
/// rejected at once, so a client cannot make the server buffer more.
pub fn parse_head(buf: &[u8], max_head: usize) -> Result<Parsed, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => {
            return Err(Reject::HeaderTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::HeaderTooLarge),
        Err(_) => return Err(Reject::BadRequest),
    };
    if len > max_head {
        return Err(Reject::HeaderTooLarge);
    }
    let (Some(method), Some(path), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(Reject::BadRequest);
    };

    let mut content_length: Option<u64> = None;
    let mut has_host = false;
    let mut expect_continue = false;
    let (mut close, mut keep_alive) = (false, false);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value).ok_or(Reject::BadRequest)?;
            // Two different lengths make the message boundary ambiguous (request smuggling).
            if content_length.is_some_and(|prev| prev != n) {
                return Err(Reject::BadRequest);
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Reject::LengthRequired);
        } else if h.name.eq_ignore_ascii_case("host") {
            has_host = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            if h.value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(Reject::BadRequest);
            }
        }
    }
    // RFC 9112 §3.2: a server must answer 400 to an HTTP/1.1 request without Host.
    if minor_version == 1 && !has_host {
        return Err(Reject::BadRequest);
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > MAX_BODY_BYTES {
        return Err(Reject::PayloadTooLarge);
    }

    let base = buf.as_ptr() as usize;
    let offset = |s: &str| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    Ok(Parsed::Complete(Head {
        len,
        method: offset(method),
        path: offset(path),
        minor_version,
        content_length,
        expect_continue,
        keep_alive: !close && (minor_version == 1 || keep_alive),
    }))
}

fn parse_content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The interim response sent before reading a body announced with `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase of the statuses TCPie sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Writes a complete response into `out` (cleared first), with `Connection: close`
/// unless `keep_alive`.
///
/// `retry_after` adds a `Retry-After` header in whole seconds.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    retry_after: Option<u64>,
    keep_alive: bool,
    body: &[u8],
) {
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    let _ = write!(
        out,
        "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(secs) = retry_after {
        let _ = write!(out, "Retry-After: {secs}\r\n");
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
    out.extend_from_slice(body);
}

/// The built-in answer, prebuilt once: TCPie's default handler sends these bytes.
pub const HELLO_BODY: &[u8] = b"Hello world !\n";

/// A response ready to be written, built at start so rejections cost no formatting.
pub fn prebuilt(status: u16, retry_after: Option<u64>, body: &str) -> Bytes {
    let mut out = Vec::with_capacity(128 + body.len());
    write_response(
        &mut out,
        status,
        "text/plain",
        retry_after,
        false,
        body.as_bytes(),
    );
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(buf: &[u8]) -> Head {
        match parse_head(buf, 8192) {
            Ok(Parsed::Complete(h)) => h,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn parses_a_simple_request() {
        let buf = b"GET /hello?x=1 HTTP/1.1\r\nHost: example\r\nUser-Agent: t\r\n\r\nextra";
        let h = head(buf);
        assert_eq!(&buf[h.method.clone()], b"GET");
        assert_eq!(&buf[h.path.clone()], b"/hello?x=1");
        assert_eq!(h.minor_version, 1);
        assert_eq!(h.len, buf.len() - "extra".len());
        assert_eq!(h.content_length, 0);
    }

    #[test]
    fn http_1_0_needs_no_host() {
        assert_eq!(head(b"GET / HTTP/1.0\r\n\r\n").minor_version, 0);
    }

    #[test]
    fn partial_heads_ask_for_more() {
        for cut in 1..27 {
            let buf = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..cut];
            assert_eq!(parse_head(buf, 8192), Ok(Parsed::Partial), "{cut}");
        }
    }

    #[test]
    fn malformed_requests_are_bad_requests() {
        for buf in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / FOO\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n",
        ] {
            assert_eq!(parse_head(buf, 8192), Err(Reject::BadRequest), "{buf:?}");
        }
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_connection_header() {
        assert!(head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: TE, Close\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn bodies_have_one_known_length() {
        let h =
            head(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(h.content_length, 5);
        let h = head(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n",
        );
        assert!(h.expect_continue);
        assert_eq!(
            parse_head(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                8192
            ),
            Err(Reject::LengthRequired)
        );
        assert_eq!(
            parse_head(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n",
                8192
            ),
            Err(Reject::PayloadTooLarge)
        );
    }

    #[test]
    fn oversized_heads_are_refused_early() {
        let mut buf = b"GET / HTTP/1.1\r\nHost: x\r\nX-Fill: ".to_vec();
        buf.resize(300, b'a');
        assert_eq!(parse_head(&buf, 300), Err(Reject::HeaderTooLarge));
        assert_eq!(parse_head(&buf, 301), Ok(Parsed::Partial));
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_head(&buf, 303), Err(Reject::HeaderTooLarge));
        assert!(matches!(parse_head(&buf, 304), Ok(Parsed::Complete(_))));

        let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many, 8192), Err(Reject::HeaderTooLarge));
    }

    #[test]
    fn responses_are_exact() {
        let mut out = Vec::new();
        write_response(&mut out, 200, "text/plain", None, false, HELLO_BODY);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\
              Connection: close\r\n\r\nHello world !\n"
        );
        let r = prebuilt(429, Some(3), "rate limited\n");
        assert_eq!(
            &r[..],
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\
              Retry-After: 3\r\nConnection: close\r\n\r\nrate limited\n"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsing_never_panics_and_offsets_stay_in_bounds(
            buf in proptest::collection::vec(any::<u8>(), 0..4096),
            max in 64usize..8192,
        ) {
            if let Ok(Parsed::Complete(head)) = parse_head(&buf, max) {
                prop_assert!(head.len <= buf.len() && head.len <= max);
                prop_assert!(head.method.end <= head.len && head.path.end <= head.len);
                prop_assert!(head.content_length <= MAX_BODY_BYTES);
            }
        }
    }
}
