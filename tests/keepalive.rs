//! Opt-in keep-alive (`TCPIE_KEEP_ALIVE`): reuse, the idle timeout, the request bound,
//! closing after rejections and during shutdown, and pipelining, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{config, parse_reply, start, start_with, Reply};
use tcpie::{Handler, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

fn keep_alive() -> tcpie::Config {
    tcpie::Config {
        keep_alive: true,
        keep_alive_idle_ms: 2000,
        ..config()
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

/// Reads exactly one response (by its Content-Length) from a connection kept open.
async fn read_one(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap();
            if pending.len() >= end + 4 + len {
                let rest = pending.split_off(end + 4 + len);
                let one = std::mem::replace(pending, rest);
                return parse_reply(one).unwrap();
            }
        }
        let mut chunk = [0u8; 4096];
        let n = timeout(deadline - Instant::now(), stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed before a complete response: {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// True if the server closes the connection (EOF, nothing more sent) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 64];
    matches!(timeout(within, stream.read(&mut chunk)).await, Ok(Ok(0)))
}

#[tokio::test]
async fn off_by_default_every_response_closes() {
    let server = start(config()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(&get("/")).await.unwrap();
    let mut pending = Vec::new();
    let reply = read_one(&mut stream, &mut pending).await;
    assert_eq!(reply.header("connection").as_deref(), Some("close"));
    assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn a_connection_carries_several_requests_each_admitted_on_its_own() {
    let server = start(keep_alive()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    for _ in 0..5 {
        stream.write_all(&get("/")).await.unwrap();
        let reply = read_one(&mut stream, &mut pending).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("connection").as_deref(), Some("keep-alive"));
        assert_eq!(reply.body_text(), "Hello world !\n");
    }
    assert_eq!(server.metric("tcpie_connections_accepted_total").await, 1.0);
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"processed\"}")
            .await,
        5.0
    );
    assert_eq!(
        server.metric("tcpie_request_duration_seconds_count").await,
        5.0
    );
    // A client asking to close is answered with close.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_one(&mut stream, &mut pending).await;
    assert_eq!(reply.header("connection").as_deref(), Some("close"));
    assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn reuse_is_bounded_by_max_requests_per_connection() {
    let server = start(tcpie::Config {
        max_requests_per_connection: 3,
        ..keep_alive()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    let mut headers = Vec::new();
    for _ in 0..3 {
        stream.write_all(&get("/")).await.unwrap();
        headers.push(
            read_one(&mut stream, &mut pending)
                .await
                .header("connection")
                .unwrap(),
        );
    }
    assert_eq!(headers, ["keep-alive", "keep-alive", "close"]);
    assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn a_rejected_request_is_answered_with_close() {
    let server = start(tcpie::Config {
        burst: 1,
        rate_per_second: 0.001,
        ..keep_alive()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    stream.write_all(&get("/")).await.unwrap();
    assert_eq!(
        read_one(&mut stream, &mut pending)
            .await
            .header("connection")
            .as_deref(),
        Some("keep-alive")
    );
    stream.write_all(&get("/")).await.unwrap();
    let reply = read_one(&mut stream, &mut pending).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("connection").as_deref(), Some("close"));
    assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
}

struct Echo;

impl Handler for Echo {
    async fn handle(&self, request: &Request) -> Response {
        Response::text(200, format!("{}\n", request.path()))
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = start_with(
        tcpie::Config {
            workers: 4,
            ..keep_alive()
        },
        Echo,
    )
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.extend_from_slice(&get(&format!("/{i}")));
    }
    // With a body in the middle, which must be skipped, not parsed as a request.
    batch.extend_from_slice(b"POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nGET /");
    batch.extend_from_slice(&get("/last"));
    stream.write_all(&batch).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..10 {
        assert_eq!(
            read_one(&mut stream, &mut pending).await.body_text(),
            format!("/{i}\n")
        );
    }
    assert_eq!(
        read_one(&mut stream, &mut pending).await.body_text(),
        "/body\n"
    );
    assert_eq!(
        read_one(&mut stream, &mut pending).await.body_text(),
        "/last\n"
    );
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"processed\"}")
            .await,
        12.0
    );
}

#[tokio::test]
async fn during_shutdown_requests_get_close_and_idle_connections_end() {
    let mut server = start(tcpie::Config {
        shutdown_delay_ms: 800,
        keep_alive_idle_ms: 30_000,
        ..keep_alive()
    })
    .await;
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let (mut p1, mut p2) = (Vec::new(), Vec::new());
    for (stream, pending) in [(&mut busy, &mut p1), (&mut idle, &mut p2)] {
        stream.write_all(&get("/")).await.unwrap();
        assert_eq!(
            read_one(stream, pending)
                .await
                .header("connection")
                .as_deref(),
            Some("keep-alive")
        );
    }
    let started = Instant::now();
    server.stop();
    sleep(Duration::from_millis(100)).await;
    // Still within the shutdown delay: answered, but told to close.
    busy.write_all(&get("/")).await.unwrap();
    let reply = read_one(&mut busy, &mut p1).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection").as_deref(), Some("close"));
    assert!(closed_within(&mut busy, Duration::from_secs(2)).await);
    // The idle connection is closed when the listener closes, not after its 30 s idle time.
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    timeout(Duration::from_secs(5), server.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
