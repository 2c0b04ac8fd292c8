//! The admin port's connections over real sockets: the head deadline, the idle timeout of
//! kept-alive connections, the connection cap and who makes room at it, and answers that
//! are never cached. Deadlines run under paused tokio time, to the millisecond.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{config, metric_value, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant};

const READYZ: &[u8] = b"GET /readyz HTTP/1.1\r\nHost: admin\r\n\r\n";

fn assert_at(took: Duration, expected: Duration) {
    assert!(
        took >= expected && took <= expected + Duration::from_millis(5),
        "took {took:?}, expected {expected:?}"
    );
}

/// Reads one answer (its head, then `Content-Length` bytes) off a kept-alive connection.
async fn read_one(stream: &mut TcpStream) -> u16 {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed: {raw:?}");
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head[9..12].parse().unwrap()
}

/// Reads until the server closes; what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    out
}

async fn shed(server: &common::TestServer, reason: &str) -> f64 {
    server
        .metric(&format!(
            "tcpie_admin_connections_shed_total{{reason=\"{reason}\"}}"
        ))
        .await
}

#[tokio::test(start_paused = true)]
async fn a_head_not_complete_by_the_admin_read_deadline_is_closed() {
    let server = start(tcpie::Config {
        admin_read_timeout_ms: 2000,
        ..config()
    })
    .await;
    let started = Instant::now();
    let mut partial = TcpStream::connect(server.admin).await.unwrap();
    let mut silent = TcpStream::connect(server.admin).await.unwrap();
    // Trickled bytes do not extend the deadline: it runs from the accept.
    for b in b"GET /readyz HTTP/1.1\r\nHo" {
        partial.write_all(&[*b]).await.unwrap();
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(until_closed(&mut partial).await, b"");
    assert_at(started.elapsed(), Duration::from_millis(2000));
    assert_eq!(until_closed(&mut silent).await, b"");
    assert_eq!(shed(&server, "read_timeout").await, 2.0);
}

#[tokio::test(start_paused = true)]
async fn a_kept_alive_admin_connection_idles_for_its_timeout_then_its_head_has_the_deadline() {
    let server = start(tcpie::Config {
        admin_read_timeout_ms: 1000,
        admin_idle_timeout_ms: 5000,
        ..config()
    })
    .await;
    let mut stream = TcpStream::connect(server.admin).await.unwrap();
    stream.write_all(READYZ).await.unwrap();
    assert_eq!(read_one(&mut stream).await, 200);
    // Idle for longer than the head deadline: still open, and it answers.
    sleep(Duration::from_millis(3000)).await;
    stream.write_all(READYZ).await.unwrap();
    assert_eq!(read_one(&mut stream).await, 200);
    // A next head that starts and stops is closed a read deadline after its first byte.
    sleep(Duration::from_millis(2000)).await;
    let first_byte = Instant::now();
    stream.write_all(b"GET /re").await.unwrap();
    assert_eq!(until_closed(&mut stream).await, b"");
    assert_at(first_byte.elapsed(), Duration::from_millis(1000));

    // Without a next request, closed quietly at the idle timeout.
    let mut stream = TcpStream::connect(server.admin).await.unwrap();
    stream.write_all(READYZ).await.unwrap();
    assert_eq!(read_one(&mut stream).await, 200);
    let idle_from = Instant::now();
    assert_eq!(until_closed(&mut stream).await, b"");
    assert_at(idle_from.elapsed(), Duration::from_millis(5000));
}

#[tokio::test]
async fn at_the_admin_cap_a_new_probe_closes_the_oldest_connection_not_being_answered() {
    let server = start(tcpie::Config {
        admin_max_connections: 4,
        admin_read_timeout_ms: 60_000,
        ..config()
    })
    .await;
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(server.admin).await.unwrap();
        s.write_all(b"GET /readyz HTTP/1.1\r\n").await.unwrap();
        holders.push(s);
        // In accept order, so the first is the oldest.
        sleep(Duration::from_millis(20)).await;
    }
    // The cap is full of unfinished heads; a probe is answered at once all the same.
    let started = Instant::now();
    let (status, _) = server.admin("/readyz").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_millis(500));
    // The oldest made room; the others are still open.
    assert_eq!(until_closed(&mut holders[0]).await, b"");
    for s in &mut holders[1..] {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(100), s.read(&mut byte)).await;
        assert!(read.is_err(), "a younger connection was closed: {read:?}");
    }
    // One eviction, for the probe (the probe's connection has closed since, so the /metrics
    // read below finds room).
    let (_, text) = server.admin("/metrics").await;
    let evicted = metric_value(
        &text,
        "tcpie_admin_connections_shed_total{reason=\"evicted\"}",
    )
    .unwrap();
    assert_eq!(evicted, 1.0, "{text}");
    let open = metric_value(&text, "tcpie_admin_connections_open").unwrap();
    assert!(open <= 4.0, "{open} admin connections open, cap 4");
}

#[tokio::test]
async fn admin_answers_are_never_cached() {
    let server = start(config()).await;
    for path in ["/metrics", "/livez", "/readyz", "/nowhere"] {
        let reply = common::request(
            server.admin,
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(
            reply.header("cache-control").as_deref(),
            Some("no-store"),
            "{path}: {}",
            reply.head
        );
    }
}
