//! Parsing one request head, and the rules of RFC 9110 and RFC 9112 a server enforces on
//! top of `httparse`: size limits (414, 431), one valid `Host`, one unambiguous body length,
//! no transfer coding or method TCPie does not implement (501), later HTTP/1.x minor
//! versions read as 1.1.

use std::ops::Range;

/// Most headers accepted in one request; more is answered 431 like an oversized head.
pub const MAX_HEADERS: usize = 64;

/// Largest request body the built-in handler's requests may carry (TCPie reads and discards
/// it); more is answered 413. Handlers that stream bodies (upstream mode) have
/// `TCPIE_MAX_BODY_BYTES` instead.
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
    /// 400: not a well-formed HTTP/1.x request, a missing, repeated or invalid `Host`, or
    /// a body whose length is ambiguous.
    BadRequest,
    /// 413: a body larger than [`MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// 414: a request target that does not fit in `TCPIE_MAX_HEADER_BYTES`.
    UriTooLong,
    /// 431: a head larger than `TCPIE_MAX_HEADER_BYTES` or with too many headers.
    HeaderTooLarge,
    /// 501: a transfer coding other than chunked.
    UnknownCoding,
    /// 501: `CONNECT`; TCPie is not a proxy.
    Connect,
    /// 505: an HTTP major version other than 1 (`HTTP/2.0`, `HTTP/9.9`, the HTTP/2
    /// preface), RFC 9110 §15.6.6.
    VersionNotSupported,
}

impl Reject {
    /// The status it is answered with.
    pub fn status(self) -> u16 {
        match self {
            Reject::BadRequest => 400,
            Reject::PayloadTooLarge => 413,
            Reject::UriTooLong => 414,
            Reject::HeaderTooLarge => 431,
            Reject::UnknownCoding | Reject::Connect => 501,
            Reject::VersionNotSupported => 505,
        }
    }
}

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head: offsets into the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, blank line included.
    pub len: usize,
    pub method: Range<usize>,
    pub path: Range<usize>,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1 (and for later 1.x versions).
    pub minor_version: u8,
    /// Where the digit of a later 1.x version (`HTTP/1.2`) sits: the caller rewrites it to
    /// `1` so that the head reads as the HTTP/1.1 it is answered as.
    pub later_minor_at: Option<usize>,
    /// How the body is framed.
    pub body: Body,
    /// The client asked for `100 Continue` before sending its body.
    pub expect_continue: bool,
    /// The client asked to keep the connection open: HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    pub keep_alive: bool,
}

/// Whether the request in `buf` (complete or not) is a `HEAD`: its answer carries no body.
pub fn is_head(buf: &[u8]) -> bool {
    buf.starts_with(b"HEAD ")
}

/// Parses a request head from the start of `buf`.
///
/// `max_head` is the largest head accepted; a partial head already longer than it is
/// rejected at once, so a client cannot make the server buffer more.
pub fn parse_head(buf: &[u8], max_head: usize) -> Result<Parsed, Reject> {
    parse_head_limited(buf, max_head, MAX_BODY_BYTES)
}

/// [`parse_head`], with `max_body` as the largest `Content-Length` accepted (else 413).
pub fn parse_head_limited(buf: &[u8], max_head: usize, max_body: u64) -> Result<Parsed, Reject> {
    match parse_as_is(buf, max_head, max_body) {
        Err(Version) => {
            // RFC 9110 §6.2: a later minor version is answered as the highest we speak.
            let Some(at) = later_minor_version(buf) else {
                // §15.6.6: another major version is refused as such, not as malformed.
                return Err(if other_major_version(buf) {
                    Reject::VersionNotSupported
                } else {
                    Reject::BadRequest
                });
            };
            let mut patched = buf.to_vec();
            patched[at] = b'1';
            match parse_as_is(&patched, max_head, max_body) {
                Ok(Parsed::Complete(head)) => Ok(Parsed::Complete(Head {
                    later_minor_at: Some(at),
                    ..head
                })),
                Ok(Parsed::Partial) => Ok(Parsed::Partial),
                Err(Version) => Err(Reject::BadRequest),
                Err(Refused(reject)) => Err(reject),
            }
        }
        Err(Refused(reject)) => Err(reject),
        Ok(parsed) => Ok(parsed),
    }
}

/// Why [`parse_as_is`] stopped.
enum Stop {
    Version,
    Refused(Reject),
}
use Stop::{Refused, Version};

/// The ` HTTP/M.N` that ends the request line in `buf`, if the line is complete.
fn version_of_line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let line_end = buf.iter().position(|b| *b == b'\n')?;
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    let start = line.len().checked_sub(9)?;
    let version = &line[start..];
    (version.starts_with(b" HTTP/") && version[7] == b'.').then_some((version, start))
}

/// The offset of `D` in a request line ending in ` HTTP/1.D` with D from 2 to 9.
fn later_minor_version(buf: &[u8]) -> Option<usize> {
    let (version, start) = version_of_line(buf)?;
    (version[6] == b'1' && (b'2'..=b'9').contains(&version[8])).then_some(start + 8)
}

/// Whether the request line ends in ` HTTP/M.N` with a major version M from 2 to 9.
fn other_major_version(buf: &[u8]) -> bool {
    version_of_line(buf)
        .is_some_and(|(v, _)| (b'2'..=b'9').contains(&v[6]) && v[8].is_ascii_digit())
}

fn parse_as_is(buf: &[u8], max_head: usize, max_body: u64) -> Result<Parsed, Stop> {
    // Uninitialised: filling 64 empty headers first would cost more than the parse.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => {
            return Err(Refused(too_large(buf, max_head)))
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(Refused(Reject::HeaderTooLarge)),
        Err(httparse::Error::Version) => return Err(Version),
        Err(_) => return Err(Refused(Reject::BadRequest)),
    };
    if len > max_head {
        return Err(Refused(too_large(buf, max_head)));
    }
    let (Some(method), Some(path), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(Refused(Reject::BadRequest));
    };
    if method == "CONNECT" {
        return Err(Refused(Reject::Connect));
    }
    // The asterisk form is for OPTIONS only (RFC 9112 §3.2.4).
    if path == "*" && method != "OPTIONS" {
        return Err(Refused(Reject::BadRequest));
    }

    let mut content_length: Option<u64> = None;
    let mut hosts = 0;
    let mut codings = Codings::default();
    let mut expect_continue = false;
    let (mut close, mut keep_alive) = (false, false);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value).ok_or(Refused(Reject::BadRequest))?;
            // Two different lengths make the message boundary ambiguous (request smuggling).
            if content_length.is_some_and(|prev| prev != n) {
                return Err(Refused(Reject::BadRequest));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            codings.add(h.value).map_err(Refused)?;
        } else if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
            // RFC 9112 §3.2: more than one Host, or an invalid one, is a 400.
            if hosts > 1 || !valid_host(h.value) {
                return Err(Refused(Reject::BadRequest));
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            if h.value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(Refused(Reject::BadRequest));
            }
        }
    }
    // RFC 9112 §3.2: a server must answer 400 to an HTTP/1.1 request without Host.
    if minor_version == 1 && hosts == 0 {
        return Err(Refused(Reject::BadRequest));
    }
    let body = match (codings.seen, content_length) {
        (false, None) | (false, Some(0)) => Body::Empty,
        (false, Some(n)) if n > max_body => return Err(Refused(Reject::PayloadTooLarge)),
        (false, Some(n)) => Body::Length(n),
        // RFC 9112 §6.1: both framings at once is how requests are smuggled; and HTTP/1.0
        // has no transfer codings. Either is refused, and the connection closed.
        (true, Some(_)) => return Err(Refused(Reject::BadRequest)),
        (true, None) if minor_version == 0 => return Err(Refused(Reject::BadRequest)),
        (true, None) => codings.framing().map_err(Refused)?,
    };

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
        later_minor_at: None,
        body,
        expect_continue,
        keep_alive: !close && (minor_version == 1 || keep_alive),
    }))
}

/// A head over the limit is 414 when the request target alone does not fit (RFC 9112
/// §3: the request line never ended within the limit), 431 otherwise.
fn too_large(buf: &[u8], max_head: usize) -> Reject {
    let seen = &buf[..buf.len().min(max_head)];
    let line_end = seen.iter().position(|b| *b == b'\n');
    let method_end = seen.iter().position(|b| *b == b' ');
    match (line_end, method_end) {
        (None, Some(_)) => Reject::UriTooLong,
        _ => Reject::HeaderTooLarge,
    }
}

/// The transfer codings of a request, from every `Transfer-Encoding` line in order.
#[derive(Default)]
struct Codings {
    seen: bool,
    /// The last coding named, and whether it was chunked.
    last_chunked: bool,
    chunked: u32,
    unknown: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) -> Result<(), Reject> {
        self.seen = true;
        for element in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            // Empty list elements are allowed and mean nothing (RFC 9110 §5.6.1).
            if element.is_empty() {
                continue;
            }
            // A coding may carry parameters; its name is the token before them.
            let name = element
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
                return Err(Reject::BadRequest);
            }
            let chunked = name.eq_ignore_ascii_case(b"chunked");
            self.chunked += u32::from(chunked);
            self.unknown |= !chunked;
            self.last_chunked = chunked;
        }
        Ok(())
    }

    /// RFC 9112 §6.3: chunked must be the final coding (else the length cannot be
    /// known: 400), applied once; anything besides it is a coding TCPie does not
    /// implement (§6.1: 501).
    fn framing(&self) -> Result<Body, Reject> {
        if !self.last_chunked || self.chunked > 1 {
            Err(Reject::BadRequest)
        } else if self.unknown {
            Err(Reject::UnknownCoding)
        } else {
            Ok(Body::Chunked)
        }
    }
}

/// The value of the first field called `name` (case-insensitive) in `head`, a request head
/// that [`parse_head`] accepted, without its surrounding whitespace. The head is known to
/// be well formed, so its field lines are found by splitting, without parsing it again.
pub fn header_value<'h>(head: &'h [u8], name: &str) -> Option<&'h [u8]> {
    fields(head).find_map(|(n, v)| n.eq_ignore_ascii_case(name.as_bytes()).then_some(v))
}

/// The field lines of `head` (a head [`parse_head`] accepted), in order: each name and its
/// value without surrounding whitespace.
pub fn fields(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    head.split(|b| *b == b'\n').skip(1).filter_map(|line| {
        let colon = line.iter().position(|b| *b == b':')?;
        Some((&line[..colon], line[colon + 1..].trim_ascii()))
    })
}

/// A token character (RFC 9110 §5.6.2).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 §7.2: `Host = uri-host [ ":" port ]`, with uri-host an IP literal in
/// brackets, or a reg-name / IPv4 address (unreserved, percent-encoded and sub-delims
/// characters). Empty is valid (a target without an authority).
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let Some(close) = rest.iter().position(|b| *b == b']') else {
                return false;
            };
            let literal = &rest[..close];
            if literal.is_empty()
                || !literal
                    .iter()
                    .all(|b| b.is_ascii_hexdigit() || b":.vV%".contains(b) || is_reg_name_char(*b))
            {
                return false;
            }
            (&[][..], &rest[close + 1..])
        }
        None => match value.iter().position(|b| *b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        },
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    port_ok && host.iter().all(|b| is_reg_name_char(*b) || *b == b'%')
}

/// unreserved / sub-delims (RFC 3986 §2.2, §2.3).
fn is_reg_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(buf: &[u8]) -> Head {
        match parse_head(buf, 8192) {
            Ok(Parsed::Complete(h)) => h,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn refused(buf: &[u8]) -> Reject {
        match parse_head(buf, 8192) {
            Err(r) => r,
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
        assert_eq!(h.body, Body::Empty);
        assert_eq!(h.later_minor_at, None);
    }

    #[test]
    fn a_field_is_found_by_name_whatever_its_case_and_line_ends() {
        let buf = b"GET / HTTP/1.1\r\nHost: x\r\nX-Key:  a b \r\nx-key: second\r\nEmpty:\r\n\r\n";
        assert_eq!(head(buf).len, buf.len());
        assert_eq!(header_value(buf, "x-KEY"), Some(&b"a b"[..]));
        assert_eq!(header_value(buf, "empty"), Some(&b""[..]));
        assert_eq!(header_value(buf, "Missing"), None);
        // The request line is not a field, even with a colon in its target.
        assert_eq!(header_value(b"GET /a:b HTTP/1.1\r\n\r\n", "GET /a"), None);
        // httparse accepts bare LF line ends; so does the lookup.
        let lf = b"GET / HTTP/1.1\nHost: x\nX-Key: v\n\n";
        assert_eq!(head(lf).len, lf.len());
        assert_eq!(header_value(lf, "x-key"), Some(&b"v"[..]));
    }

    #[test]
    fn http_1_0_needs_no_host() {
        assert_eq!(head(b"GET / HTTP/1.0\r\n\r\n").minor_version, 0);
    }

    #[test]
    fn later_minor_versions_read_as_1_1() {
        let buf = b"GET / HTTP/1.2\r\nHost: x\r\n\r\n";
        let h = head(buf);
        assert_eq!(h.minor_version, 1);
        assert_eq!(h.later_minor_at, Some(13));
        assert_eq!(buf[13], b'2');
        // Without Host it is still an HTTP/1.1 request missing its Host.
        assert_eq!(refused(b"GET / HTTP/1.9\r\n\r\n"), Reject::BadRequest);
        // Another major version is not ours: 505, not 400 (RFC 9110 §15.6.6).
        for line in [
            &b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
            b"GET / HTTP/3.0\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(refused(line), Reject::VersionNotSupported, "{line:?}");
        }
        // Not a version at all stays malformed.
        for line in [
            &b"GET / HTTP/2.x\r\n\r\n"[..],
            b"GET / HTTP/0.9\r\n\r\n",
            b"GET / HTTPS/2.0\r\n\r\n",
        ] {
            assert_eq!(refused(line), Reject::BadRequest, "{line:?}");
        }
        assert_eq!(
            refused(b"GET / HTTP/1.x\r\nHost: x\r\n\r\n"),
            Reject::BadRequest
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.2\r\nHo", 8192),
            Ok(Parsed::Partial)
        );
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
            b"GET / FOO\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(refused(buf), Reject::BadRequest, "{buf:?}");
        }
        assert!(matches!(
            parse_head(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 8192),
            Ok(Parsed::Complete(_))
        ));
    }

    #[test]
    fn host_must_be_one_and_valid() {
        for ok in [
            &b"example.com"[..],
            b"example.com:8080",
            b"127.0.0.1:80",
            b"[::1]:8080",
            b"[fe80::1%25eth0]",
            b"xn--bcher-kva.example",
            b"",
        ] {
            let mut buf = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            buf.extend_from_slice(ok);
            buf.extend_from_slice(b"\r\n\r\n");
            head(&buf);
        }
        for bad in [
            &b"a b"[..],
            b"a:b",
            b"a:80:80",
            b"[::1",
            b"[]",
            b"a/b",
            b"a@b",
            b"[::1]x",
        ] {
            let mut buf = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            buf.extend_from_slice(bad);
            buf.extend_from_slice(b"\r\n\r\n");
            assert_eq!(
                refused(&buf),
                Reject::BadRequest,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            Reject::BadRequest
        );
        assert_eq!(
            refused(b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"),
            Reject::BadRequest
        );
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
        assert_eq!(h.body, Body::Length(5));
        let h = head(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n",
        );
        assert!(h.expect_continue);
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").body,
            Body::Empty
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n"),
            Reject::PayloadTooLarge
        );
    }

    #[test]
    fn transfer_codings_follow_rfc_9112() {
        let te = |value: &str| {
            let buf = format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {value}\r\n\r\n");
            parse_head(buf.as_bytes(), 8192)
        };
        let chunked = |r: Result<Parsed, Reject>| {
            matches!(
                r,
                Ok(Parsed::Complete(Head {
                    body: Body::Chunked,
                    ..
                }))
            )
        };
        assert!(chunked(te("chunked")));
        assert!(chunked(te("Chunked")));
        assert!(chunked(te(" chunked ,")));
        // chunked not last (or not at all): the length cannot be known, 400.
        assert_eq!(te("chunked, gzip"), Err(Reject::BadRequest));
        assert_eq!(te("gzip"), Err(Reject::BadRequest));
        assert_eq!(te("chunked, chunked"), Err(Reject::BadRequest));
        assert_eq!(te(""), Err(Reject::BadRequest));
        assert_eq!(te("chu nked"), Err(Reject::BadRequest));
        // A coding before chunked that TCPie does not implement: 501.
        assert_eq!(te("gzip, chunked"), Err(Reject::UnknownCoding));
        assert_eq!(te("identity, chunked"), Err(Reject::UnknownCoding));
        // Split over two lines, the list is the same.
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Reject::UnknownCoding
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Reject::BadRequest
        );
        // Both framings: 400 (and the connection closes); HTTP/1.0 has no codings.
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Reject::BadRequest
        );
        assert_eq!(
            refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Reject::BadRequest
        );
    }

    #[test]
    fn connect_is_not_implemented() {
        assert_eq!(
            refused(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
            Reject::Connect
        );
        assert_eq!(Reject::Connect.status(), 501);
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
    fn a_target_longer_than_the_limit_is_414() {
        let mut buf = b"GET /".to_vec();
        buf.resize(100_000, b'a');
        assert_eq!(parse_head(&buf, 8192), Err(Reject::UriTooLong));
        buf.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(parse_head(&buf, 8192), Err(Reject::UriTooLong));
        // A long header after a short request line is 431.
        let mut buf = b"GET / HTTP/1.1\r\nX: ".to_vec();
        buf.resize(100_000, b'a');
        assert_eq!(parse_head(&buf, 8192), Err(Reject::HeaderTooLarge));
    }

    #[test]
    fn head_requests_are_known_from_the_first_bytes() {
        assert!(is_head(b"HEAD / HTTP/1.1\r\n"));
        assert!(!is_head(b"HEADER / HTTP/1.1\r\n"));
        assert!(!is_head(b"GET / HTTP/1.1\r\n"));
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
                if let Body::Length(n) = head.body {
                    prop_assert!(n <= MAX_BODY_BYTES);
                }
            }
        }
    }
}
