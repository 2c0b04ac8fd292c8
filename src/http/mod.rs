//! The little HTTP/1.1 that TCPie speaks: parsing one request head, and writing responses.
//!
//! This module owns the wire format only (`request`: parsing a head; `response`: the
//! bytes of an answer). Reading from the socket, deadlines and
//! admission live in `server`; chunked bodies are decoded by `chunked`; what a request
//! means lives behind [`crate::handler`]. Parsing is done by `httparse` (no allocation,
//! well fuzzed); this module adds the rules of RFC 9110 and RFC 9112 that a server must
//! enforce on top: the size limits (414, 431), exactly one valid `Host` on HTTP/1.1, one
//! unambiguous body length (`Content-Length`, or chunked as the final transfer coding,
//! never both), no transfer coding it does not implement (501), no `CONNECT` (501: TCPie
//! is no proxy), and HTTP/1.x minor versions above 1 answered as HTTP/1.1.

pub mod chunked;
pub mod date;
mod request;
mod response;

pub use request::*;
pub use response::*;
