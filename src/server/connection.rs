//! One connection's bytes: it owns the socket and the read buffer, reads a request head
//! and body, writes an answer with its `Date`, and closes gracefully. Nothing else in the
//! server touches the socket.
//!
//! Reading never waits longer than the deadline its caller gives. A buffer is allocated
//! only once the client has sent something, so a silent connection costs no buffer.
//! Closing sends FIN and reads until the client closes only when bytes may still arrive
//! (as nginx's `lingering_close`): when the request was not read to its end, bytes beyond
//! it were seen, or the last read filled the buffer. A client that sent exactly one
//! request, all read, is closed at once, without a `shutdown()` call.

use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{timeout, Instant};

use crate::handler::ResponseStream;
use crate::http::{self, Answer, Body, Framing, Head, Parsed, Reject};
use crate::http::{chunked, date};
use crate::lifecycle::{Lifecycle, Phase, Waited};
use crate::ratelimit::client_key::LastClient;

/// First read buffer of a connection, allocated only once the client has sent something.
const INITIAL_READ_BUFFER: usize = 1024;
/// Room added at a time while a body streams.
const STREAM_READ_BUFFER: usize = 16 * 1024;
/// How long a closed connection waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and discarded while lingering.
const LINGER_BYTES: usize = 256 * 1024;

/// An accepted connection.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    pub peer: SocketAddr,
    pub id: u64,
    /// The last read left nothing behind in the socket (it did not fill the buffer).
    drained: bool,
    /// The client its last request named (for the per-client limit).
    pub last_client: LastClient,
    _open: OpenGuard,
}

/// Holds the connection-cap permit and the open-connections gauge while a connection lives.
pub(crate) struct OpenGuard {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl OpenGuard {
    pub fn new(permit: OwnedSemaphorePermit, gauge: prometheus::IntGauge) -> OpenGuard {
        OpenGuard {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// How far a streamed request body has been read.
pub(crate) enum BodyReader {
    Length { left: u64 },
    Chunked(chunked::Decoder),
    Done,
}

impl BodyReader {
    pub fn new(body: Body, max_body: u64) -> BodyReader {
        match body {
            Body::Empty => BodyReader::Done,
            Body::Length(n) => BodyReader::Length { left: n },
            Body::Chunked => BodyReader::Chunked(chunked::Decoder::with_limit(max_body)),
        }
    }
}

/// Why a streamed answer stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Truncated {
    /// The body failed (or said a length it did not keep to).
    Body,
    /// A write did not finish in time.
    Write,
}

/// What reading produced, when it did not produce a head.
pub(crate) enum ReadError {
    /// The client closed or reset.
    Closed,
    /// Not a request TCPie accepts.
    Rejected(Reject),
}

impl Conn {
    pub fn new(stream: TcpStream, peer: SocketAddr, id: u64, open: OpenGuard) -> Conn {
        Conn {
            stream,
            buf: BytesMut::new(),
            peer,
            id,
            drained: true,
            last_client: LastClient::default(),
            _open: open,
        }
    }

    /// Whether bytes of a next request are already buffered (pipelining).
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Whether the request being read is a `HEAD` (known from its first bytes).
    pub fn is_head(&self) -> bool {
        http::is_head(&self.buf)
    }

    async fn read_more(&mut self) -> Result<(), ReadError> {
        let space = self.buf.capacity() - self.buf.len();
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => Err(ReadError::Closed),
            Ok(n) => {
                self.drained = n < space;
                Ok(())
            }
        }
    }

    /// Reads the client's first bytes if they are already there, without waiting: true if
    /// something came (bytes, or the close), false if the socket had nothing. The buffer
    /// is given back when nothing came, so a silent connection holds none.
    pub fn try_first_bytes(&mut self, max_head: usize) -> bool {
        self.buf.reserve(INITIAL_READ_BUFFER.min(max_head));
        let space = self.buf.capacity() - self.buf.len();
        match self.stream.try_read_buf(&mut self.buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.buf = BytesMut::new();
                false
            }
            Ok(n) => {
                self.drained = n < space;
                true
            }
            Err(_) => true,
        }
    }

    /// Whether the client's first bytes (or its close) have arrived; if not, `cx` is woken
    /// when they do. Lets silent connections wait together, without a task each. Call it
    /// after [`Conn::try_first_bytes`] found nothing, so the socket's readiness is known.
    pub fn poll_first_bytes(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.stream.poll_read_ready(cx).map(|_| ())
    }

    /// Whether a kept-alive connection's next request has begun to arrive: `Ready(true)`
    /// once bytes (or the close) are read, `Ready(false)` if the socket failed; `cx` is
    /// woken when the socket becomes readable. The buffer is made only once bytes are
    /// there.
    pub fn poll_next_bytes(&mut self, cx: &mut Context<'_>, max_head: usize) -> Poll<bool> {
        match self.stream.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(false),
            Poll::Ready(Ok(())) => {}
        }
        self.buf.reserve(INITIAL_READ_BUFFER.min(max_head));
        let space = self.buf.capacity() - self.buf.len();
        // A read that leaves the socket drained also clears its readiness (a non-blocking
        // `try_read` would not), so the next wait does not begin with a read that finds
        // nothing: one system call a request.
        match pin!(self.stream.read_buf(&mut self.buf)).poll(cx) {
            Poll::Ready(Ok(n)) => {
                self.drained = n < space;
                Poll::Ready(true)
            }
            // The close, or an error, is for the head's read to find.
            Poll::Ready(Err(_)) => Poll::Ready(true),
            // The readiness was stale; the read registered for the next.
            Poll::Pending => {
                self.buf = BytesMut::new();
                Poll::Pending
            }
        }
    }

    /// Waits for the client's first bytes. Idle connections cost no buffer until then.
    pub async fn first_bytes(&mut self, max_head: usize) -> Result<(), ReadError> {
        // The socket's own reader slot, not `readable()`'s list of waiters (a lock to
        // join it and one to leave): a kept-alive connection waits here for every request.
        if poll_fn(|cx| self.stream.poll_read_ready(cx)).await.is_err() {
            return Err(ReadError::Closed);
        }
        self.buf.reserve(INITIAL_READ_BUFFER.min(max_head));
        self.read_more().await
    }

    /// Reads one request head and splits it off the buffer; a `Content-Length` over
    /// `max_body` is refused (413).
    pub async fn read_head(
        &mut self,
        max_head: usize,
        max_body: u64,
    ) -> Result<(Head, Bytes), ReadError> {
        let head = loop {
            if !self.buf.is_empty() {
                match http::parse_head_limited(&self.buf, max_head, max_body) {
                    Ok(Parsed::Complete(head)) => break head,
                    Ok(Parsed::Partial) => {}
                    Err(reject) => return Err(ReadError::Rejected(reject)),
                }
            }
            if self.buf.capacity() == self.buf.len() {
                // Grow by doubling, never much past the largest head allowed.
                let grow = self
                    .buf
                    .capacity()
                    .min(max_head - self.buf.len().min(max_head))
                    .max(1);
                self.buf.reserve(grow);
            }
            self.read_more().await?;
        };
        // `HTTP/1.2` reads as the HTTP/1.1 it is answered as, for the handler and tracing.
        if let Some(at) = head.later_minor_at {
            self.buf[at] = b'1';
        }
        let bytes = self.buf.split_to(head.len).freeze();
        Ok((head, bytes))
    }

    /// Reads and discards a request body, `Content-Length` or chunked. Bytes after it stay
    /// in the buffer (the next request on a kept-alive connection).
    pub async fn read_body(&mut self, body: Body) -> Result<(), ReadError> {
        let mut decoder = chunked::Decoder::default();
        let mut remaining = match body {
            Body::Empty => return Ok(()),
            Body::Length(n) => n,
            Body::Chunked => 0,
        };
        loop {
            if body == Body::Chunked {
                let (consumed, done) = decoder.feed(&self.buf).map_err(ReadError::Rejected)?;
                let _ = self.buf.split_to(consumed);
                if done {
                    return Ok(());
                }
            } else {
                let take = remaining.min(self.buf.len() as u64);
                let _ = self.buf.split_to(take as usize);
                remaining -= take;
                if remaining == 0 {
                    return Ok(());
                }
            }
            if self.buf.capacity() - self.buf.len() < INITIAL_READ_BUFFER {
                self.buf.reserve(INITIAL_READ_BUFFER);
            }
            self.read_more().await?;
        }
    }

    /// Reads, without consuming it, until the body is in the buffer whole or `limit` bytes
    /// of it are: a small body is then read before admission, as a discarded one is.
    pub async fn prefetch_body(
        &mut self,
        body: Body,
        max_body: u64,
        limit: usize,
    ) -> Result<(), ReadError> {
        let mut probe = chunked::Decoder::with_limit(max_body);
        let mut probed = 0;
        loop {
            let enough = match body {
                Body::Empty => true,
                Body::Length(n) => self.buf.len() as u64 >= n.min(limit as u64),
                Body::Chunked => {
                    let (consumed, done) = probe
                        .feed(&self.buf[probed..])
                        .map_err(ReadError::Rejected)?;
                    probed += consumed;
                    done || self.buf.len() >= limit
                }
            };
            if enough {
                return Ok(());
            }
            if self.buf.capacity() - self.buf.len() < INITIAL_READ_BUFFER {
                self.buf.reserve(STREAM_READ_BUFFER);
            }
            self.read_more().await?;
        }
    }

    /// The next piece of a body being streamed, as it comes; `None` at its end. Bytes after
    /// the body stay in the buffer.
    pub async fn body_piece(
        &mut self,
        reader: &mut BodyReader,
    ) -> Result<Option<Bytes>, ReadError> {
        loop {
            if !self.buf.is_empty() || matches!(reader, BodyReader::Length { left: 0 }) {
                match reader {
                    BodyReader::Done => return Ok(None),
                    BodyReader::Length { left: 0 } => {
                        *reader = BodyReader::Done;
                        return Ok(None);
                    }
                    BodyReader::Length { left } => {
                        let take = (*left).min(self.buf.len() as u64);
                        *left -= take;
                        return Ok(Some(self.buf.split_to(take as usize).freeze()));
                    }
                    BodyReader::Chunked(decoder) => {
                        let piece = decoder.next(&self.buf).map_err(ReadError::Rejected)?;
                        let taken = self.buf.split_to(piece.consumed).freeze();
                        if piece.done {
                            *reader = BodyReader::Done;
                        }
                        match piece.data {
                            Some(data) if !data.is_empty() => return Ok(Some(taken.slice(data))),
                            _ if piece.done => return Ok(None),
                            _ if piece.consumed > 0 => continue,
                            _ => {}
                        }
                    }
                }
            } else if matches!(reader, BodyReader::Done) {
                return Ok(None);
            }
            if self.buf.capacity() - self.buf.len() < INITIAL_READ_BUFFER {
                self.buf.reserve(STREAM_READ_BUFFER);
            }
            self.read_more().await?;
        }
    }

    /// Writes a streamed answer: `head` (with a `Date` line after its status line when
    /// `date`), then the body in `framing`, each write within `limit`. `Err` when the
    /// body failed part way or a write did not finish: the caller then closes the
    /// connection, so the client sees the truncation.
    ///
    /// A piece of the body already there when the head goes (a small answer from the
    /// upstream comes with its head) goes out with it, and the chunked end with the last
    /// piece: one system call and one TCP segment where there would be two or three, and
    /// the client woken once.
    pub fn answer_stream<'a>(
        &'a mut self,
        head: &'a [u8],
        date: bool,
        stream: &'a mut ResponseStream,
        framing: Framing,
        limit: Duration,
    ) -> Streaming<'a> {
        let line_end = head
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(0, |at| at + 2);
        let (status, rest) = head.split_at(line_end);
        Streaming {
            stream: &mut self.stream,
            body: stream,
            framing,
            limit,
            out: Out {
                status,
                date: date.then(date::line),
                rest,
                ..Out::default()
            },
            written: 0,
            sent: 0,
            step: Step::Head,
            terminated: false,
            timer: None,
        }
    }

    /// Writes `parts` in order within `limit`: one system call when the socket takes them
    /// all (it almost always does, and then no timer is set).
    async fn write_within(&mut self, parts: &[&[u8]], limit: Duration) -> Result<(), Truncated> {
        let mut write = pin!(write_parts(&mut self.stream, parts));
        let written = match poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
            Poll::Ready(result) => result.is_ok(),
            Poll::Pending => matches!(timeout(limit, write).await, Ok(Ok(()))),
        };
        if written {
            Ok(())
        } else {
            Err(Truncated::Write)
        }
    }

    /// Writes a prebuilt answer (its head only, for a `HEAD`), with its `Date` and the
    /// header lines in `fields` (empty, or complete lines), within `limit`; false if it
    /// could not.
    pub async fn answer(
        &mut self,
        answer: &Answer,
        fields: &[u8],
        head_only: bool,
        limit: Duration,
    ) -> bool {
        let (before, after) = answer.parts(head_only);
        self.write_dated([before, fields, after, &[]], limit).await
    }

    /// Writes a handler's answer: its head (with `fields`, as in [`Conn::answer`]), then
    /// its body unless `head_only`.
    pub async fn answer_with_body(
        &mut self,
        head: &Answer,
        fields: &[u8],
        body: &[u8],
        head_only: bool,
        limit: Duration,
    ) -> bool {
        let (before, after) = head.parts(false);
        let body = if head_only { &[][..] } else { body };
        self.write_dated([before, fields, after, body], limit).await
    }

    /// Writes `parts[0]`, the `Date` line, then the other parts, within `limit`.
    async fn write_dated(&mut self, parts: [&[u8]; 4], limit: Duration) -> bool {
        let date = date::line();
        let parts = [parts[0], &date[..], parts[1], parts[2], parts[3]];
        self.write_within(&parts, limit).await.is_ok()
    }

    /// Writes bytes as they are (the interim `100 Continue`) within `limit`.
    pub async fn write_raw(&mut self, bytes: &[u8], limit: Duration) -> bool {
        matches!(
            timeout(limit, self.stream.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// Whether the connection can simply be closed: the last request was read to its end
    /// (`complete`), nothing is buffered, and the last read drained the socket, so nothing
    /// more can come. Otherwise close it with [`Conn::linger`].
    pub fn closes_at_once(&self, complete: bool) -> bool {
        complete && self.buf.is_empty() && self.drained
    }

    /// Sends FIN and reads until the client closes (for up to 2 s and 256 KiB), so that
    /// bytes the client sent after the part we read do not make the kernel answer our
    /// response with a reset.
    pub async fn linger(mut self, lifecycle: &Lifecycle) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        let mut discarded = 0;
        loop {
            self.buf.clear();
            if self.buf.capacity() < 512 {
                self.buf.reserve(512);
            }
            let read = self.stream.read_buf(&mut self.buf);
            match lifecycle
                .within(Phase::HardStop, self.id, Some(deadline), read)
                .await
            {
                Waited::Done(Ok(n)) if n > 0 && discarded < LINGER_BYTES => discarded += n,
                _ => return,
            }
        }
    }

    /// Sets `TCP_NODELAY` (kept-alive connections: a whole answer is written at once, so
    /// Nagle could only delay the next one).
    pub fn set_nodelay(&self) {
        let _ = self.stream.set_nodelay(true);
    }
}

/// Where a streamed answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The head is not out: it goes with the first piece of the body if that is there
    /// when asked, alone if not.
    Head,
    /// The head is out (or going out); pieces of the body follow.
    Body,
    /// What is in `out` is the last thing to write; then the answer ends so.
    Last(Result<(), Truncated>),
}

/// The bytes of one write of a streamed answer, in order: the head's parts (on the first
/// write only), a chunk's size line, its data, its end, the last chunk.
#[derive(Default)]
struct Out<'a> {
    status: &'a [u8],
    date: Option<date::Line>,
    rest: &'a [u8],
    size: ChunkSize,
    size_len: usize,
    data: Bytes,
    after: &'static [u8],
    last: &'static [u8],
}

impl<'a> Out<'a> {
    fn parts(&self) -> [&[u8]; MAX_PARTS] {
        let date: &[u8] = self.date.as_ref().map_or(&[], |d| &d[..]);
        [
            self.status,
            date,
            self.rest,
            &self.size.0[..self.size_len],
            &self.data,
            self.after,
            self.last,
        ]
    }

    /// The head has gone: only body parts from now on.
    fn body_only(&mut self) {
        (self.status, self.date, self.rest) = (&[], None, &[]);
        self.size_len = 0;
        self.data = Bytes::new();
        (self.after, self.last) = (&[], &[]);
    }

    /// Everything but the head, which stays if it has not been written.
    fn clear_body(&mut self) {
        self.size_len = 0;
        self.data = Bytes::new();
        (self.after, self.last) = (&[], &[]);
    }
}

/// A streamed answer on its way (see [`Conn::answer_stream`]): a plain future, not an
/// `async fn`, so that the common answer (its head and whole body ready, written by one
/// system call) costs neither a timer nor a large state moved around: a write waits, and
/// arms its timer, only when the socket does not take it at once.
pub(crate) struct Streaming<'a> {
    stream: &'a mut TcpStream,
    body: &'a mut ResponseStream,
    framing: Framing,
    limit: Duration,
    out: Out<'a>,
    /// Bytes of `out` already written.
    written: usize,
    /// Bytes of the body sent.
    sent: u64,
    step: Step,
    /// The chunked end went out with the piece the body said was its last.
    terminated: bool,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Streaming<'_> {
    /// Writes what is in `out`; `Ready(Ok)` once all of it is written.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Truncated>> {
        loop {
            let parts = self.out.parts();
            let total: usize = parts.iter().map(|p| p.len()).sum();
            if self.written >= total {
                self.timer = None;
                return Poll::Ready(Ok(()));
            }
            let mut slices = [IoSlice::new(&[]); MAX_PARTS];
            let n = unwritten(&parts, self.written, &mut slices);
            match Pin::new(&mut *self.stream).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    return Poll::Ready(Err(Truncated::Write))
                }
                Poll::Ready(Ok(w)) => self.written += w,
                Poll::Pending => {
                    let limit = self.limit;
                    let timer = self
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(Truncated::Write));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Stops the answer short: the head goes out if it has not, then nothing more.
    fn truncate(&mut self) {
        self.out.clear_body();
        self.step = Step::Last(Err(Truncated::Body));
    }
}

impl Future for Streaming<'_> {
    type Output = Result<(), Truncated>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            // Until the first piece of the body is known, the head waits in `out`.
            if this.step != Step::Head {
                match this.poll_out(cx) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                }
                if let Step::Last(result) = this.step {
                    return Poll::Ready(result);
                }
                // What was in `out` is written: make the next write.
                this.out.body_only();
                this.written = 0;
            }
            if this.framing == Framing::Nothing {
                this.step = Step::Last(Ok(()));
                continue;
            }
            // Polled to its end, not to `is_end_stream`: the end is where the body gives
            // its upstream connection back and records the answer's time.
            let frame = match this.body.body.as_mut().poll_frame(cx) {
                // The head does not wait for the body.
                Poll::Pending if this.step == Step::Head => {
                    this.step = Step::Body;
                    continue;
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            let data = match frame {
                None => None,
                Some(Err(_)) => {
                    this.truncate();
                    continue;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => Some(data),
                    // Trailers are not passed on; empty frames say nothing.
                    _ => continue,
                },
            };
            let Some(data) = data else {
                if matches!(this.framing, Framing::Length(n) if this.sent != n) {
                    this.truncate();
                    continue;
                }
                if this.framing == Framing::Chunked && !this.terminated {
                    this.out.last = LAST_CHUNK;
                }
                this.step = Step::Last(Ok(()));
                continue;
            };
            this.sent += data.len() as u64;
            if this.terminated || matches!(this.framing, Framing::Length(n) if this.sent > n) {
                // Whatever is written now would be a forged end.
                this.truncate();
                continue;
            }
            if this.framing == Framing::Chunked {
                this.terminated = this.body.body.is_end_stream();
                this.out.size_len = this.out.size.of(data.len()).len();
                this.out.after = b"\r\n";
                if this.terminated {
                    this.out.last = LAST_CHUNK;
                }
            }
            this.out.data = data;
            this.step = Step::Body;
        }
    }
}

/// The chunked body's last chunk, with no trailers.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A chunk's size line, in hexadecimal, written where it is needed.
#[derive(Default)]
struct ChunkSize([u8; 18]);

impl ChunkSize {
    fn of(&mut self, size: usize) -> &[u8] {
        let digits = (usize::BITS - size.leading_zeros()).div_ceil(4).max(1) as usize;
        for (at, shift) in (0..digits).rev().enumerate() {
            self.0[at] = b"0123456789abcdef"[(size >> (shift * 4)) & 0xf];
        }
        self.0[digits..digits + 2].copy_from_slice(b"\r\n");
        &self.0[..digits + 2]
    }
}

/// Most parts one write takes: the status line, `Date`, the other head lines, a chunk's
/// size line, its data, its end, and the last chunk.
const MAX_PARTS: usize = 7;

/// Fills `slices` with what of `parts` is left after `written` bytes; how many it filled.
fn unwritten<'a>(parts: &[&'a [u8]], written: usize, slices: &mut [IoSlice<'a>]) -> usize {
    let mut n = 0;
    let mut skip = written;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        slices[n] = IoSlice::new(&part[skip..]);
        skip = 0;
        n += 1;
    }
    n
}

async fn write_parts(stream: &mut TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut written = 0;
    while written < total {
        let mut slices = [IoSlice::new(&[]); MAX_PARTS];
        let n = unwritten(parts, written, &mut slices);
        match stream.write_vectored(&slices[..n]).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            w => written += w,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ChunkSize;

    #[test]
    fn chunk_sizes_are_lowercase_hexadecimal_lines() {
        for size in [
            0usize,
            1,
            9,
            10,
            15,
            16,
            255,
            256,
            4096,
            65535,
            1 << 20,
            usize::MAX,
        ] {
            let mut line = ChunkSize::default();
            assert_eq!(line.of(size), format!("{size:x}\r\n").as_bytes(), "{size}");
        }
    }
}
