//! The processing boundary: what a worker does with an admitted request.
//!
//! An application embedding the library implements [`Handler`]; the binary uses
//! [`Hello`], the Go original's answer. A handler sees a read, admitted [`Request`] and
//! returns a [`Response`]; it never touches the socket, deadlines, admission or metrics,
//! which stay with the server. Whatever the handler returns is sent with its framing
//! (`Content-Length`, or chunked for a streamed body of unknown length), and with
//! `Connection: keep-alive` or `close` as the connection allows. A handler may stream the
//! request body ([`Handler::streams_body`]) and the response body ([`ResponseStream`]).

mod body;
mod request;
mod response;

use std::future::Future;

use bytes::Bytes;

pub(crate) use body::BodySender;
pub use body::{BodyError, RequestBody, ResponseStream, StreamError};
pub use request::Request;
pub(crate) use response::Failure;
pub use response::Response;

/// What workers run for each admitted request.
///
/// `handle` runs inside a worker, so its duration is the worker's busy time: a slow
/// handler makes requests queue and, once the queue is full, be shed with 503. A panic is
/// caught and answered with 500; the worker lives on.
pub trait Handler: Send + Sync + 'static {
    /// Answers an admitted request.
    fn handle(&self, request: &Request) -> impl Future<Output = Response> + Send;

    /// Whether this handler reads request bodies as they arrive ([`Request::take_body`]),
    /// bodies up to `TCPIE_MAX_BODY_BYTES`. By default it does not: a body (at most 64 KiB)
    /// is read and discarded before admission, so a refusal never leaves one unread and a
    /// slow body never holds a permit. A streaming handler's request is admitted once its
    /// head and the first 64 KiB of its body are read; the rest streams under the permit.
    fn streams_body(&self) -> bool {
        false
    }
}

/// The built-in processing: `200 OK`, `Hello world !\n`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hello;

impl Handler for Hello {
    async fn handle(&self, _request: &Request) -> Response {
        Response::text(200, Bytes::from_static(crate::http::HELLO_BODY))
    }
}
