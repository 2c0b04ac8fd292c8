//! A handler's answer: a status, a content type and a body, with more header fields and a
//! streamed body when the handler needs them.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::body::ResponseStream;

/// A handler's answer.
#[derive(Debug, Default)]
pub struct Response {
    pub status: u16,
    /// The `Content-Type`; empty for none (a streamed answer may carry its own in
    /// `headers`).
    pub content_type: &'static str,
    /// The body (ignored when `stream` is set).
    pub body: Bytes,
    /// More header fields, written as given. TCPie writes the framing (`Content-Length`,
    /// `Transfer-Encoding`), `Connection` and, unless given here, `Date` itself; fields of
    /// those names here are not written.
    pub headers: HeaderMap,
    /// A body streamed instead of `body`.
    pub stream: Option<ResponseStream>,
    /// TCPie's own marks on an answer (build a `Response` with `..Default::default()`).
    #[doc(hidden)]
    pub marks: Marks,
}

/// What TCPie notes on the answers it makes in upstream mode; nothing an embedder sets.
#[derive(Debug, Default)]
pub struct Marks {
    /// An upstream failure TCPie answers itself, each with its own outcome.
    pub(crate) failure: Option<Failure>,
    /// The answer comes from the upstream: a body that breaks off is the upstream's fault.
    pub(crate) from_upstream: bool,
}

/// Answers TCPie makes itself when the upstream fails, each its own outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// 502: refused, reset, closed or an invalid answer before the response head.
    UpstreamError,
    /// 504: no response head in time.
    UpstreamTimeout,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Response {
        Response {
            status,
            content_type: "text/plain",
            body: body.into(),
            ..Response::default()
        }
    }

    /// A response whose body streams.
    pub fn streaming(status: u16, stream: ResponseStream) -> Response {
        Response {
            status,
            stream: Some(stream),
            ..Response::default()
        }
    }

    /// The same response with one more header field.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Response {
        self.headers.append(name, value);
        self
    }

    pub(crate) fn failed(failure: Failure) -> Response {
        Response {
            marks: Marks {
                failure: Some(failure),
                from_upstream: true,
            },
            ..Response::default()
        }
    }
}
