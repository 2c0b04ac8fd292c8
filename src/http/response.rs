//! The bytes of an answer: the status line, the headers, the body; prebuilt once for the
//! refusals, and cached per thread for handlers' answers. The `Date` line is not in them:
//! the connection writes it after the status line (see [`Answer::parts`]).

use std::io::Write;

use bytes::Bytes;

/// The interim response sent before reading a body announced with `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase of a status: TCPie's own for those it sends, else the standard one
/// (empty for a status without one, as RFC 9112 §4 allows).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or(""),
    }
}

/// Writes a complete response into `out` (cleared first), with `Connection: close`
/// unless `keep_alive`, and returns where its body starts. The `Date` line is not in
/// it: the writer inserts it after the status line (see [`Answer`]).
///
/// `retry_after` adds a `Retry-After` header in whole seconds.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    retry_after: Option<u64>,
    keep_alive: bool,
    body: &[u8],
) -> usize {
    out.clear();
    write_head(
        out,
        status,
        content_type,
        retry_after,
        keep_alive,
        body.len(),
    );
    let body_start = out.len();
    out.extend_from_slice(body);
    body_start
}

/// Appends a response head (status line to blank line, no `Date`) to `out`.
fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    retry_after: Option<u64>,
    keep_alive: bool,
    body_len: usize,
) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    let _ = write!(
        out,
        "Content-Type: {content_type}\r\nContent-Length: {body_len}\r\n"
    );
    if let Some(secs) = retry_after {
        let _ = write!(out, "Retry-After: {secs}\r\n");
    }
    // A 429, 502, 503 or 504 describes this moment: a cache that kept one would refuse
    // requests the server would now take.
    if matches!(status, 429 | 502 | 503 | 504) {
        out.extend_from_slice(b"Cache-Control: no-store\r\n");
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
}

/// A response ready to be written, built once: the bytes (without `Date`), the end of
/// the status line (where the `Date` line goes) and the start of the body (where the
/// answer to a `HEAD` stops).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    bytes: Bytes,
    status_end: usize,
    body_start: usize,
}

impl Answer {
    /// A `text/plain` answer with `Connection: close`.
    pub fn prebuilt(status: u16, retry_after: Option<u64>, body: &str) -> Answer {
        let mut out = Vec::with_capacity(128 + body.len());
        let body_start = write_response(
            &mut out,
            status,
            "text/plain",
            retry_after,
            false,
            body.as_bytes(),
        );
        Answer::new(Bytes::from(out), body_start)
    }

    /// An answer from bytes [`write_response`] wrote, and the body start it returned.
    pub fn new(bytes: Bytes, body_start: usize) -> Answer {
        let status_end = bytes
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(0, |at| at + 2);
        Answer {
            bytes,
            status_end,
            body_start,
        }
    }

    /// The bytes before and after the `Date` line; without the body for a `HEAD`, whose
    /// answer has the headers of the `GET` answer and no content (RFC 9110 §9.3.2).
    pub fn parts(&self, head_only: bool) -> (&[u8], &[u8]) {
        let end = if head_only {
            self.body_start
        } else {
            self.bytes.len()
        };
        (
            &self.bytes[..self.status_end],
            &self.bytes[self.status_end..end],
        )
    }
}

/// The head of a handler's answer (status line to blank line, without `Date`), as an
/// [`Answer`] with no body: the body is written from the handler's own bytes.
///
/// Handlers mostly answer the same thing (the built-in one always does), so each thread
/// keeps the last head it built and reuses it while status, type, length and keep-alive
/// are unchanged: no formatting on the common path, and the reference count touched is
/// the thread's own.
pub fn answer_head(
    status: u16,
    content_type: &'static str,
    body_len: usize,
    keep_alive: bool,
) -> Answer {
    type Key = (u16, &'static str, usize, bool);
    thread_local! {
        static LAST: std::cell::RefCell<Option<(Key, Answer)>> = const { std::cell::RefCell::new(None) };
    }
    let key = (status, content_type, body_len, keep_alive);
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((k, answer)) = last.as_ref() {
            if *k == key {
                return answer.clone();
            }
        }
        let mut out = Vec::with_capacity(128);
        write_head(&mut out, status, content_type, None, keep_alive, body_len);
        let len = out.len();
        let answer = Answer::new(Bytes::from(out), len);
        *last = Some((key, answer.clone()));
        answer
    })
}

/// How a response's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// The body ends when the connection closes (an HTTP/1.0 client, length unknown).
    Close,
    /// No body, and no length said (204, or a 304 or `HEAD` answer of unknown length).
    Nothing,
}

/// Fields a handler may not write: the framing and the connection are TCPie's.
fn reserved(name: &http::HeaderName) -> bool {
    use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
    name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION
}

/// Writes the head of a handler's answer with header fields of its own (status line to
/// blank line, without `Date`, which the connection writes unless `headers` has one).
pub fn full_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    headers: &http::HeaderMap,
    framing: Framing,
    keep_alive: bool,
) {
    // Every handler's answer passes here: plain appends, no formatting machinery.
    out.extend_from_slice(b"HTTP/1.1 ");
    put_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !content_type.is_empty() {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        if reserved(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            put_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Close | Framing::Nothing => {}
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
}

/// Appends `n` in decimal.
fn put_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The built-in answer, prebuilt once: TCPie's default handler sends these bytes.
pub const HELLO_BODY: &[u8] = b"Hello world !\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_exact() {
        let mut out = Vec::new();
        let body_start = write_response(&mut out, 200, "text/plain", None, false, HELLO_BODY);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\
              Connection: close\r\n\r\nHello world !\n"
        );
        assert_eq!(&out[body_start..], HELLO_BODY);
        let r = Answer::prebuilt(429, Some(3), "rate limited\n");
        let (before, after) = r.parts(false);
        assert_eq!(before, b"HTTP/1.1 429 Too Many Requests\r\n");
        assert_eq!(
            after,
            b"Content-Type: text/plain\r\nContent-Length: 13\r\n\
              Retry-After: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n\
              rate limited\n"
        );
        // Refusals of the moment are never cached; others carry no such field.
        let full = Answer::prebuilt(503, Some(1), "queue full\n");
        assert!(full
            .parts(false)
            .1
            .windows(25)
            .any(|w| w == b"Cache-Control: no-store\r\n"));
        let bad = Answer::prebuilt(400, None, "malformed request\n");
        assert!(!bad
            .parts(false)
            .1
            .windows(13)
            .any(|w| w == b"Cache-Control"));
        let (_, after) = r.parts(true);
        assert!(after.ends_with(b"Connection: close\r\n\r\n"));
        let head = answer_head(200, "text/plain", 14, true);
        assert_eq!(head.parts(false).0, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            head.parts(false).1,
            b"Content-Type: text/plain\r\nContent-Length: 14\r\nConnection: keep-alive\r\n\r\n"
        );
        assert_eq!(answer_head(200, "text/plain", 14, true), head);
        assert_ne!(answer_head(200, "text/plain", 15, true), head);
    }

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        for n in [0u64, 7, 10, 99, 100, 4096, 10_485_760, u64::MAX] {
            let mut out = b"x".to_vec();
            put_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
        let mut out = Vec::new();
        let mut fields = http::HeaderMap::new();
        fields.insert("x-a", http::HeaderValue::from_static("1"));
        fields.insert("content-length", http::HeaderValue::from_static("99"));
        full_head(
            &mut out,
            404,
            "text/html",
            &fields,
            Framing::Length(12),
            true,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nx-a: 1\r\n\
              Content-Length: 12\r\nConnection: keep-alive\r\n\r\n"
        );
    }
}
