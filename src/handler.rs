//! The processing boundary: what a worker does with an admitted request.
//!
//! An application embedding the library implements [`Handler`]; the binary uses
//! [`Hello`], the Go original's answer. A handler sees a read, admitted [`Request`] and
//! returns a [`Response`]; it never touches the socket, deadlines, admission or metrics,
//! which stay with the server. Every response is sent with `Connection: close` and an exact
//! `Content-Length`, whatever the handler returns.

use std::future::Future;

use bytes::Bytes;

/// A request that passed admission.
#[derive(Debug, Clone)]
pub struct Request {
    head: Bytes,
    method: std::ops::Range<usize>,
    path: std::ops::Range<usize>,
    minor_version: u8,
    pub(crate) wants_keep_alive: bool,
}

impl Request {
    pub(crate) fn new(head: Bytes, parsed: &crate::http::Head) -> Request {
        Request {
            head,
            method: parsed.method.clone(),
            path: parsed.path.clone(),
            minor_version: parsed.minor_version,
            wants_keep_alive: parsed.keep_alive,
        }
    }

    /// The method, for example `GET`.
    pub fn method(&self) -> &str {
        std::str::from_utf8(&self.head[self.method.clone()]).unwrap_or("")
    }

    /// The request target as sent, for example `/path?query`.
    pub fn path(&self) -> &str {
        std::str::from_utf8(&self.head[self.path.clone()]).unwrap_or("")
    }

    /// `"1.0"` or `"1.1"`.
    pub fn version(&self) -> &'static str {
        if self.minor_version == 0 {
            "1.0"
        } else {
            "1.1"
        }
    }

    /// The raw request head, request line to blank line.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() };
            crate::http::MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        // The head was parsed once already, so this cannot fail; an error means no header.
        req.parse_with_uninit_headers(&self.head, &mut headers)
            .ok()?;
        let value = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))?
            .value;
        // Return a slice of our own buffer rather than of the temporary parse.
        let start = value.as_ptr() as usize - self.head.as_ptr() as usize;
        Some(&self.head[start..start + value.len()])
    }
}

/// A handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Response {
        Response {
            status,
            content_type: "text/plain",
            body: body.into(),
        }
    }
}

/// What workers run for each admitted request.
///
/// `handle` runs inside a worker, so its duration is the worker's busy time: a slow
/// handler makes requests queue and, once the queue is full, be shed with 503. A panic is
/// caught and answered with 500; the worker lives on.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: &Request) -> impl Future<Output = Response> + Send;
}

/// The built-in processing: `200 OK`, `Hello world !\n`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hello;

impl Handler for Hello {
    async fn handle(&self, _request: &Request) -> Response {
        Response::text(200, Bytes::from_static(crate::http::HELLO_BODY))
    }
}
