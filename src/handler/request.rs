//! The request a handler sees: its head as read, with the parts a handler asks for, the
//! peer it came from, and (for a handler that streams bodies) its body as it arrives.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

use super::body::RequestBody;
use crate::http;

/// A request that passed admission.
#[derive(Debug)]
pub struct Request {
    head: Bytes,
    method: std::ops::Range<usize>,
    path: std::ops::Range<usize>,
    minor_version: u8,
    peer: SocketAddr,
    body_length: Option<u64>,
    has_body: bool,
    pub(crate) wants_keep_alive: bool,
    /// The body, for the handler to take once (a handler that streams bodies only).
    body: Mutex<Option<RequestBody>>,
}

impl Clone for Request {
    /// A copy of the head and its parts; the body, which arrives once, stays with the
    /// original.
    fn clone(&self) -> Request {
        Request {
            head: self.head.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            minor_version: self.minor_version,
            peer: self.peer,
            body_length: self.body_length,
            has_body: self.has_body,
            wants_keep_alive: self.wants_keep_alive,
            body: Mutex::new(None),
        }
    }
}

impl Request {
    pub(crate) fn new(head: Bytes, parsed: &http::Head, peer: SocketAddr) -> Request {
        Request {
            head,
            method: parsed.method.clone(),
            path: parsed.path.clone(),
            minor_version: parsed.minor_version,
            peer,
            body_length: match parsed.body {
                http::Body::Empty => Some(0),
                http::Body::Length(n) => Some(n),
                http::Body::Chunked => None,
            },
            has_body: parsed.body != http::Body::Empty,
            wants_keep_alive: parsed.keep_alive,
            body: Mutex::new(None),
        }
    }

    pub(crate) fn set_body(&self, body: RequestBody) {
        *self.body.lock().unwrap_or_else(PoisonError::into_inner) = Some(body);
    }

    /// The address the connection came from.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the request has a body (of any length, or chunked).
    pub fn has_body(&self) -> bool {
        self.has_body
    }

    /// The body's length when it is known (`Content-Length`; 0 without a body), `None`
    /// for a chunked one.
    pub fn body_length(&self) -> Option<u64> {
        self.body_length
    }

    /// The body as it arrives, for a handler whose [`super::Handler::streams_body`] is
    /// true; taken once (later calls, and other handlers, get `None`: their requests'
    /// bodies are read and discarded before admission).
    pub fn take_body(&self) -> Option<RequestBody> {
        self.body
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
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

    /// The request target as shared bytes (no copy).
    pub(crate) fn path_bytes(&self) -> Bytes {
        self.head.slice(self.path.clone())
    }

    /// The head as shared bytes (no copy).
    pub(crate) fn head_bytes(&self) -> &Bytes {
        &self.head
    }

    /// The raw request head, request line to blank line.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// The value of the first header called `name` (case-insensitive), without its
    /// surrounding whitespace.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        http::header_value(&self.head, name)
    }
}
