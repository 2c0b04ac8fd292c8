//! The request a handler sees: its head as read, with the parts a handler asks for.

use bytes::Bytes;

use crate::http;

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
    pub(crate) fn new(head: Bytes, parsed: &http::Head) -> Request {
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

    /// The value of the first header called `name` (case-insensitive), without its
    /// surrounding whitespace.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        http::header_value(&self.head, name)
    }
}
