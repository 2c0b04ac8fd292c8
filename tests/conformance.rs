//! HTTP/1.1 conformance over real sockets (RFC 9110, RFC 9112): HEAD answers without a
//! body whatever the status, a Date on every answer, chunked request bodies read and
//! discarded with keep-alive framing intact, admission decided before `100 Continue`,
//! later HTTP/1.x minor versions, and a 408 that says what did not arrive. The same rules
//! are checked with third-party clients (h11, httpx, curl) in
//! `tests/deploy/test_http_conformance.py`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{concurrent, config, parse_reply, read_reply, request, start, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

/// Sends `bytes` and reads everything until the server closes, raw.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// The head of a raw answer, and what follows it.
fn split(raw: &[u8]) -> (String, &[u8]) {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (
        String::from_utf8_lossy(&raw[..end]).into_owned(),
        &raw[end..],
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The same request as GET and as HEAD: same status and headers (Date aside), and
/// the HEAD answer ends at its head.
async fn get_and_head(server: &common::TestServer, get: &[u8], expected: u16) {
    let head_request = [b"HEAD".as_slice(), &get[3..]].concat();
    let get_raw = raw(server.addr, get).await;
    let head_raw = raw(server.addr, &head_request).await;
    let (get_head, get_body) = split(&get_raw);
    let (head_head, head_body) = split(&head_raw);
    assert!(
        get_head.starts_with(&format!("HTTP/1.1 {expected} ")),
        "{get_head}"
    );
    assert!(
        head_head.starts_with(&format!("HTTP/1.1 {expected} ")),
        "{head_head}"
    );
    assert_eq!(
        head_body, b"",
        "HEAD {expected} carried a body after {head_head}"
    );
    assert!(!get_body.is_empty(), "GET {expected} had no body");
    let strip = |h: &str| -> Vec<String> {
        h.lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
            .map(String::from)
            .collect()
    };
    assert_eq!(strip(&get_head), strip(&head_head));
    assert_eq!(
        header(&head_head, "content-length").unwrap(),
        get_body.len().to_string()
    );
}

#[tokio::test]
async fn head_answers_have_no_body_whatever_the_status() {
    let server = start(tcpie::Config {
        max_header_bytes: 256,
        ..config()
    })
    .await;
    get_and_head(&server, GET, 200).await;
    get_and_head(&server, b"GET / HTTP/1.1\r\n\r\n", 400).await;
    get_and_head(
        &server,
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 999999\r\n\r\n",
        413,
    )
    .await;
    get_and_head(
        &server,
        format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(400)).as_bytes(),
        414,
    )
    .await;
    get_and_head(
        &server,
        format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
            "a".repeat(400)
        )
        .as_bytes(),
        431,
    )
    .await;
    get_and_head(
        &server,
        b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: br, chunked\r\n\r\n",
        501,
    )
    .await;
    get_and_head(&server, b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505).await;

    // 429: one token, spent.
    let limited = start(tcpie::Config {
        burst: 1,
        rate_per_second: 0.001,
        ..config()
    })
    .await;
    assert_eq!(request(limited.addr, GET).await.unwrap().status, 200);
    get_and_head(&limited, GET, 429).await;

    // 503: one worker busy, no queue.
    let full = start(tcpie::Config {
        workers: 1,
        queue_size: 0,
        simulated_work_ms: 3000,
        ..config()
    })
    .await;
    let busy = concurrent(full.addr, GET, 1);
    full.wait_admitted(1).await;
    get_and_head(&full, GET, 503).await;
    drop(busy);

    // 408: the head never completes.
    let slow = start(tcpie::Config {
        read_timeout_ms: 200,
        ..config()
    })
    .await;
    for (method, body) in [("GET", true), ("HEAD", false)] {
        let answer = raw(slow.addr, format!("{method} / HTTP/1.1\r\nHost").as_bytes()).await;
        let (head, rest) = split(&answer);
        assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
        assert_eq!(!rest.is_empty(), body, "{method}: {head}");
    }
}

#[tokio::test]
async fn every_answer_carries_a_date() {
    let server = start(tcpie::Config {
        read_timeout_ms: 200,
        ..config()
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The day as the server may have seen it (a second may pass, even midnight).
    let days: Vec<String> = [now, now + 5]
        .iter()
        .map(|s| String::from_utf8_lossy(&tcpie::internal::format_line(*s)[6..17]).into_owned())
        .collect();
    for bytes in [GET, b"nonsense\r\n\r\n", b"GET / HTTP/1.1\r\nHo"] {
        let reply = parse_reply(raw(server.addr, bytes).await).unwrap();
        let date = reply.header("date").expect("a Date header");
        // IMF-fixdate: "Mon, 30 Nov 2026 17:22:56 GMT".
        assert_eq!(date.len(), 29, "{date}");
        assert!(
            date.ends_with(" GMT") && date.as_bytes()[3] == b',',
            "{date}"
        );
        assert!(days.iter().any(|d| d == &date[..11]), "{date} is not today");
    }
}

#[tokio::test]
async fn a_chunked_body_is_read_and_the_connection_stays_framed() {
    let server = start(tcpie::Config {
        keep_alive: true,
        ..config()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // A chunked upload with an extension and a trailer, then a second request right
    // behind it on the same connection.
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;note=first\r\nhello\r\n7\r\n, world\r\n0\r\nX-Checksum: 42\r\n\r\n\
              GET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut all = Vec::new();
    timeout(Duration::from_secs(5), stream.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"processed\"}")
            .await,
        2.0
    );

    // Split into many reads, with a pause between chunks.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    for part in [
        &b"PUT / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"[..],
        b"3\r",
        b"\nabc",
        b"\r\n0\r\n",
        b"\r\n",
    ] {
        stream.write_all(part).await.unwrap();
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read_reply(&mut stream).await.unwrap().status, 200);
}

#[tokio::test]
async fn chunked_bodies_are_bounded_and_strict() {
    let server = start(tcpie::Config {
        read_timeout_ms: 300,
        ..config()
    })
    .await;
    let post = |body: &[u8]| {
        let mut r = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        r.extend_from_slice(body);
        r
    };
    // Over 64 KiB of data: 413, answered before the client is done sending.
    let mut big = Vec::new();
    for _ in 0..20 {
        big.extend_from_slice(b"1000\r\n");
        big.extend(std::iter::repeat_n(b'x', 4096));
        big.extend_from_slice(b"\r\n");
    }
    let reply = request(server.addr, &post(&big))
        .await
        .expect("an answer, no reset");
    assert_eq!(reply.status, 413);
    // Bad framing: 400.
    assert_eq!(
        request(server.addr, &post(b"5\nhello\r\n0\r\n\r\n"))
            .await
            .unwrap()
            .status,
        400
    );
    assert_eq!(
        request(server.addr, &post(b"zz\r\n")).await.unwrap().status,
        400
    );
    // A body that stops arriving: 408, saying it was the body.
    let started = Instant::now();
    let reply = request(server.addr, &post(b"5\r\nhel")).await.unwrap();
    assert_eq!(reply.status, 408);
    assert_eq!(reply.body_text(), "request body not received in time\n");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A head that stops arriving: 408, saying it was the head.
    let reply = request(server.addr, b"POST / HTTP/1.1\r\nHost")
        .await
        .unwrap();
    assert_eq!(reply.status, 408);
    assert_eq!(reply.body_text(), "request head not received in time\n");
    server.assert_conservation().await;
}

/// Sends a head with `Expect: 100-continue` and reads what comes first, without sending
/// the body.
async fn expect_continue(addr: std::net::SocketAddr) -> (TcpStream, Reply) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut first = Vec::new();
    let mut chunk = [0u8; 512];
    // Read until one complete head has arrived.
    while !first.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = timeout(Duration::from_secs(3), stream.read(&mut chunk))
            .await
            .expect("an answer before the body was sent")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        first.extend_from_slice(&chunk[..n]);
    }
    let end = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let status: u16 = String::from_utf8_lossy(&first[9..12]).parse().unwrap();
    let reply = Reply {
        status,
        head: String::from_utf8_lossy(&first[..end]).into_owned(),
        body: first[end..].to_vec(),
        raw: first,
    };
    (stream, reply)
}

#[tokio::test]
async fn admission_is_decided_before_100_continue() {
    // Admitted: 100 Continue, then the body, then 200.
    let server = start(config()).await;
    let (mut stream, first) = expect_continue(server.addr).await;
    assert_eq!(first.status, 100);
    stream.write_all(b"body").await.unwrap();
    assert_eq!(read_reply(&mut stream).await.unwrap().status, 200);

    // Rate limited: 429 at once, no 100, and the connection closes.
    let limited = start(tcpie::Config {
        burst: 1,
        rate_per_second: 0.001,
        ..config()
    })
    .await;
    assert_eq!(request(limited.addr, GET).await.unwrap().status, 200);
    let (mut stream, first) = expect_continue(limited.addr).await;
    assert_eq!(first.status, 429, "{}", first.head);
    assert_eq!(first.header("connection").as_deref(), Some("close"));
    let mut rest = Vec::new();
    timeout(Duration::from_secs(3), stream.read_to_end(&mut rest))
        .await
        .expect("the connection closes")
        .unwrap();

    // Queue full: 503 at once, no 100.
    let full = start(tcpie::Config {
        workers: 1,
        queue_size: 0,
        simulated_work_ms: 3000,
        ..config()
    })
    .await;
    let busy = concurrent(full.addr, GET, 1);
    full.wait_admitted(1).await;
    let (_, first) = expect_continue(full.addr).await;
    assert_eq!(first.status, 503, "{}", first.head);
    drop(busy);
}

#[tokio::test]
async fn a_reserved_place_is_released_when_the_body_never_comes() {
    let server = start(tcpie::Config {
        workers: 1,
        queue_size: 0,
        read_timeout_ms: 300,
        ..config()
    })
    .await;
    let (mut stream, first) = expect_continue(server.addr).await;
    assert_eq!(first.status, 100);
    // The only place is held: another request is refused meanwhile.
    assert_eq!(request(server.addr, GET).await.unwrap().status, 503);
    let reply = read_reply(&mut stream).await.unwrap();
    assert_eq!(reply.status, 408);
    assert_eq!(reply.body_text(), "request body not received in time\n");
    // And released with the 408.
    assert_eq!(request(server.addr, GET).await.unwrap().status, 200);
    server.assert_conservation().await;
}

#[tokio::test]
async fn later_http_1_minor_versions_are_answered_as_1_1() {
    let server = start(config()).await;
    let reply = request(server.addr, b"GET / HTTP/1.2\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.head.starts_with("HTTP/1.1 200 OK"));
    // It is an HTTP/1.1 request, so it needs its Host like one.
    let reply = request(server.addr, b"GET / HTTP/1.7\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(reply.status, 400);
}

#[tokio::test]
async fn another_http_major_version_is_505_not_400() {
    let server = start(tcpie::Config {
        keep_alive: true,
        ..config()
    })
    .await;
    for request_bytes in [
        &b"GET / HTTP/2.0\r\nHost: t\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
        // HTTP/2 with prior knowledge starts with this preface.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let reply = request(server.addr, request_bytes).await.unwrap();
        assert_eq!(
            reply.status,
            505,
            "{}",
            String::from_utf8_lossy(request_bytes)
        );
        assert!(reply
            .head
            .starts_with("HTTP/1.1 505 HTTP Version Not Supported"));
        assert_eq!(reply.header("connection").as_deref(), Some("close"));
    }
    // RFC 9110 §15.6.6 answers with the versions the server does support.
    let reply = request(server.addr, b"GET / HTTP/2.0\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(
        reply.body_text().contains("HTTP/1.1"),
        "{}",
        reply.body_text()
    );
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"bad_request\"}")
            .await,
        4.0
    );
}

#[tokio::test]
async fn refusals_of_the_moment_are_never_cached() {
    // 429: one token, spent.
    let limited = start(tcpie::Config {
        burst: 1,
        rate_per_second: 0.001,
        ..config()
    })
    .await;
    let served = request(limited.addr, GET).await.unwrap();
    assert_eq!(served.status, 200);
    assert_eq!(served.header("cache-control"), None);
    let refused = request(limited.addr, GET).await.unwrap();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("cache-control").as_deref(), Some("no-store"));
    // 503: one worker busy, no queue.
    let full = start(tcpie::Config {
        workers: 1,
        queue_size: 0,
        simulated_work_ms: 3000,
        ..config()
    })
    .await;
    let _busy = concurrent(full.addr, GET, 1);
    full.wait_admitted(1).await;
    let refused = request(full.addr, GET).await.unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("cache-control").as_deref(), Some("no-store"));
}

#[tokio::test]
async fn connect_is_refused_and_the_connection_closed() {
    let server = start(tcpie::Config {
        keep_alive: true,
        ..config()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // A client that takes the answer for a tunnel would start sending TLS bytes now.
    stream
        .write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01")
        .await
        .unwrap();
    let reply = read_reply(&mut stream).await.unwrap();
    assert_eq!(reply.status, 501);
    assert_eq!(reply.header("connection").as_deref(), Some("close"));
    assert_eq!(server.metric("tcpie_workers_busy").await, 0.0);
}
