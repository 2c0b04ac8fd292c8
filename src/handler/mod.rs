//! The processing boundary: what a worker does with an admitted request.
//!
//! An application embedding the library implements [`Handler`]; the binary uses
//! [`Hello`], the Go original's answer. A handler sees a read, admitted [`Request`] and
//! returns a [`Response`]; it never touches the socket, deadlines, admission or metrics,
//! which stay with the server. Whatever the handler returns is sent with an exact
//! `Content-Length`, and with `Connection: keep-alive` or `close` as the connection allows.

mod request;
mod response;

use std::future::Future;

use bytes::Bytes;

pub use request::Request;
pub use response::Response;

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
