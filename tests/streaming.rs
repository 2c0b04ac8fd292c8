//! The handler API for bodies that stream, over real sockets: a handler that reads the
//! request body as it arrives and answers with header fields of its own and a streamed
//! body, in each framing; a body that breaks off part way; bodies over the limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use common::{config, read_reply, request, start_with};
use http_body_util::{BodyExt, StreamBody};
use tcpie::{Handler, Request, Response, ResponseStream, StreamError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Counts the request body as it comes, then answers `/stream?n` with n chunks, of known
/// length on `/length`, and breaks off half way on `/broken`.
struct Streamer;

fn chunks(n: usize, fail: bool) -> ResponseStream {
    let items = (0..n)
        .map(|i| Ok::<_, StreamError>(http_body::Frame::data(Bytes::from(format!("piece {i}\n")))));
    let failing = fail.then(|| Err::<http_body::Frame<Bytes>, StreamError>("broke".into()));
    let stream = futures_util::stream::iter(items.chain(failing));
    ResponseStream {
        length: None,
        body: Box::pin(StreamBody::new(stream)),
    }
}

impl Handler for Streamer {
    fn streams_body(&self) -> bool {
        true
    }

    async fn handle(&self, request: &Request) -> Response {
        let mut got = 0usize;
        if let Some(mut body) = request.take_body() {
            while let Some(piece) = body.chunk().await {
                match piece {
                    Ok(data) => got += data.len(),
                    Err(e) => return Response::text(400, format!("{e}\n")),
                }
            }
        }
        let name = http::HeaderName::from_static("x-received");
        let value = http::HeaderValue::from(got);
        match request.path() {
            "/length" => {
                let body = http_body_util::Full::new(Bytes::from_static(b"exactly this\n"))
                    .map_err(|never: Infallible| -> StreamError { match never {} });
                let stream = ResponseStream {
                    length: Some(13),
                    body: Box::pin(body),
                };
                Response::streaming(200, stream).with_header(name, value)
            }
            "/broken" => Response::streaming(200, chunks(3, true)).with_header(name, value),
            _ => Response::streaming(200, chunks(3, false)).with_header(name, value),
        }
    }
}

#[tokio::test]
async fn a_streaming_handler_reads_the_body_and_streams_its_answer() {
    let server = start_with(config(), Streamer).await;
    let body = vec![b'x'; 200_000];
    let mut req = format!(
        "POST /stream HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let reply = request(server.addr, &req).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-received").as_deref(), Some("200000"));
    assert_eq!(
        reply.header("transfer-encoding").as_deref(),
        Some("chunked")
    );
    assert_eq!(
        String::from_utf8_lossy(&reply.body),
        "8\r\npiece 0\n\r\n8\r\npiece 1\n\r\n8\r\npiece 2\n\r\n0\r\n\r\n"
    );
    // Known length: Content-Length, the body as it is.
    let reply = request(server.addr, b"GET /length HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(reply.header("content-length").as_deref(), Some("13"));
    assert_eq!(reply.body_text(), "exactly this\n");
    // To an HTTP/1.0 client, an unknown length ends with the connection.
    let reply = request(server.addr, b"GET /stream HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(reply.header("transfer-encoding"), None);
    assert_eq!(reply.header("connection").as_deref(), Some("close"));
    assert_eq!(reply.body_text(), "piece 0\npiece 1\npiece 2\n");
    // A chunked request body, streamed to the handler as it comes.
    let reply = request(
        server.addr,
        b"POST /length HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(reply.header("x-received").as_deref(), Some("6"));
}

#[tokio::test]
async fn a_stream_that_breaks_off_closes_the_connection_without_an_end() {
    let server = start_with(config(), Streamer).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /broken HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut stream).await.unwrap();
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    assert!(text.ends_with("8\r\npiece 2\n\r\n"), "{text:?}");
    assert!(!text.contains("0\r\n\r\n"), "a forged end: {text:?}");
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"write_error\"}")
            .await,
        1.0
    );
    assert_eq!(server.metric("tcpie_workers_busy").await, 0.0);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let server = start_with(
        tcpie::Config {
            max_body_bytes: 1000,
            ..config()
        },
        Streamer,
    )
    .await;
    let reply = request(
        server.addr,
        b"POST /length HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 413);
    let mut chunked =
        b"POST /length HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"190\r\n");
        chunked.extend_from_slice(&[b'z'; 400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let reply = request(server.addr, &chunked).await.unwrap();
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("connection").as_deref(), Some("close"));
}
