//! Bodies that stream: a request's as it arrives from the client, and a response's as the
//! handler produces it.
//!
//! A request body is fed by the connection's task (which owns the socket) through a small
//! bounded channel, so a handler that forwards it elsewhere holds a few chunks at a time,
//! never the whole body, and a client that sends faster than the far side takes waits.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// Why a request body stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The client closed or reset the connection.
    #[error("the client closed the connection before the end of the body")]
    Closed,
    /// No byte came for the read timeout.
    #[error("the body stopped arriving")]
    TimedOut,
    /// The body is larger than `TCPIE_MAX_BODY_BYTES`.
    #[error("the body is larger than TCPIE_MAX_BODY_BYTES")]
    TooLarge,
    /// Its chunked framing is invalid.
    #[error("the body's chunked framing is invalid")]
    Malformed,
}

/// A request body as it arrives. It is an [`http_body::Body`] (hand it to hyper as it is),
/// or read it with [`RequestBody::chunk`].
#[derive(Debug)]
pub struct RequestBody {
    /// `None` for a request without a body: nothing to pass on, no channel made.
    chunks: Option<mpsc::Receiver<Result<Bytes, BodyError>>>,
    length: Option<u64>,
    done: bool,
}

/// The connection's end of a [`RequestBody`].
pub(crate) type BodySender = mpsc::Sender<Result<Bytes, BodyError>>;

/// Chunks in flight between the connection and the handler.
const IN_FLIGHT: usize = 4;

impl RequestBody {
    /// A body of `length` bytes (`None`: chunked), and the sender that feeds it.
    pub(crate) fn channel(length: Option<u64>) -> (BodySender, RequestBody) {
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let done = length == Some(0);
        (
            tx,
            RequestBody {
                chunks: Some(rx),
                length,
                done,
            },
        )
    }

    /// The body of a request that has none.
    pub(crate) fn empty() -> RequestBody {
        RequestBody {
            chunks: None,
            length: Some(0),
            done: true,
        }
    }

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        if self.done {
            return None;
        }
        let next = self.chunks.as_mut()?.recv().await;
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
        }
        next
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let Some(chunks) = self.chunks.as_mut() else {
            return Poll::Ready(None);
        };
        match chunks.poll_recv(cx) {
            Poll::Ready(Some(Ok(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(other) => {
                self.done = true;
                Poll::Ready(other.map(|e| e.map(Frame::data)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// The error a streamed response body may end with.
pub type StreamError = Box<dyn std::error::Error + Send + Sync>;

/// A response body the handler streams: written as it comes, with `Content-Length` when its
/// length is known and chunked otherwise (or, to an HTTP/1.0 client, until the connection
/// closes). If it fails part way, the connection is closed without a forged end, so the
/// client sees the truncation.
pub struct ResponseStream {
    /// The length, if known.
    pub length: Option<u64>,
    /// The data.
    pub body: Pin<Box<dyn Body<Data = Bytes, Error = StreamError> + Send>>,
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}
