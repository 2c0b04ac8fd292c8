//! The TCP server over real sockets on 127.0.0.1: every status code, admission,
//! probes, metrics, the connection cap and the graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{concurrent, config, read_reply, request, start, start_with};
use tcpie::{Handler, Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

#[tokio::test]
async fn answers_hello_with_an_exact_response() {
    let server = start(config()).await;
    let reply = server.get("/").await;
    // The Date line follows the status line; the rest is fixed.
    let date = reply.header("date").expect("a Date header");
    assert_eq!(
        String::from_utf8(reply.raw.clone()).unwrap(),
        format!(
            "HTTP/1.1 200 OK\r\nDate: {date}\r\nContent-Type: text/plain\r\n\
             Content-Length: 14\r\nConnection: close\r\n\r\nHello world !\n"
        )
    );
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"processed\"}")
            .await,
        1.0
    );
    assert_eq!(
        server.metric("tcpie_request_duration_seconds_count").await,
        1.0
    );
    assert_eq!(server.metric("tcpie_queue_wait_seconds_count").await, 1.0);
    server.assert_conservation().await;
}

#[tokio::test]
async fn an_empty_bucket_answers_429_with_retry_after() {
    let server = start(tcpie::Config {
        burst: 2,
        rate_per_second: 0.4,
        ..config()
    })
    .await;
    assert_eq!(server.get("/").await.status, 200);
    assert_eq!(server.get("/").await.status, 200);
    let reply = server.get("/").await;
    assert_eq!(reply.status, 429);
    // The next token is about 2.5 s away: whole seconds, rounded up.
    assert_eq!(reply.header("retry-after").as_deref(), Some("3"));
    assert_eq!(reply.header("connection").as_deref(), Some("close"));
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"rate_limited\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"processed\"}")
            .await,
        2.0
    );
    let tokens = server.metric("tcpie_rate_limit_tokens").await;
    assert!((0.0..0.5).contains(&tokens), "{tokens}");
    server.assert_conservation().await;
}

#[tokio::test]
async fn exactly_workers_plus_queue_are_admitted_then_503_at_once() {
    let server = start(tcpie::Config {
        workers: 2,
        queue_size: 3,
        simulated_work_ms: 1500,
        ..config()
    })
    .await;
    let addr = server.addr;
    let admitted: Vec<_> = concurrent(addr, GET, 5);
    server.wait_admitted(5).await;

    // Saturated: not ready, but alive.
    let (status, body) = server.probe("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "saturated");
    assert_eq!(body["queue_depth"], 3);
    assert_eq!(body["workers_busy"], 2);
    assert_eq!(server.probe("/livez").await.0, 200);
    assert_eq!(server.metric("tcpie_ready").await, 0.0);
    assert_eq!(server.metric("tcpie_queue_depth").await, 3.0);
    assert_eq!(server.metric("tcpie_workers_busy").await, 2.0);

    let started = Instant::now();
    let reply = request(addr, GET).await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after").as_deref(), Some("1"));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "503 took {:?}",
        started.elapsed()
    );

    for r in admitted {
        assert_eq!(r.await.unwrap().unwrap().status, 200);
    }
    // Recovered.
    assert_eq!(server.probe("/readyz").await.0, 200);
    assert_eq!(server.metric("tcpie_ready").await, 1.0);
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"queue_full\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"processed\"}")
            .await,
        5.0
    );
    // Three of them waited at least one work period.
    let waited = server.metric("tcpie_queue_wait_seconds_sum").await;
    assert!(waited >= 3.0 * 1.4, "{waited}");
    server.assert_conservation().await;
}

#[tokio::test]
async fn readiness_threshold_below_one_fails_earlier_and_zero_turns_it_off() {
    for (threshold, expected) in [(0.5, 503), (0.0, 200)] {
        let server = start(tcpie::Config {
            workers: 1,
            queue_size: 2,
            simulated_work_ms: 800,
            ready_queue_threshold: threshold,
            ..config()
        })
        .await;
        let addr = server.addr;
        let clients: Vec<_> = concurrent(addr, GET, 2);
        server.wait_admitted(2).await;
        // One busy, one of two queue places taken: fill 0.5.
        assert_eq!(
            server.probe("/readyz").await.0,
            expected,
            "threshold {threshold}"
        );
        for c in clients {
            assert_eq!(c.await.unwrap().unwrap().status, 200);
        }
    }
}

#[tokio::test]
async fn reading_holds_no_worker_and_no_queue_place() {
    let server = start(tcpie::Config {
        workers: 1,
        queue_size: 0,
        read_timeout_ms: 5000,
        ..config()
    })
    .await;
    // Three silent clients and one that sent half a head.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    sleep(Duration::from_millis(100)).await;
    let (_, body) = server.probe("/readyz").await;
    assert_eq!(body["workers_busy"], 0);
    let started = Instant::now();
    assert_eq!(server.get("/").await.status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(server.metric("tcpie_connections_open").await, 4.0);
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_their_status() {
    let server = start(tcpie::Config {
        max_header_bytes: 256,
        ..config()
    })
    .await;
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: test\r\nX-Fill: {}\r\n\r\n",
        "a".repeat(1000)
    );
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), 400, "bad_request"),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400, "bad_request"),
        (
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(),
            400,
            "bad_request",
        ),
        (big_header.into_bytes(), 431, "header_too_large"),
        (
            format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(100_000)).into_bytes(),
            414,
            "header_too_large",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            501,
            "bad_request",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
            "bad_request",
        ),
        (
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(),
            501,
            "bad_request",
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(), 400, "bad_request"),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\nabc".to_vec(),
            413,
            "bad_request",
        ),
    ];
    for (i, (bytes, status, _)) in cases.iter().enumerate() {
        let reply = request(server.addr, bytes)
            .await
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert_eq!(reply.status, *status, "case {i}: {}", reply.head);
        assert_eq!(reply.header("connection").as_deref(), Some("close"));
        assert!(reply.header("date").is_some(), "case {i}: {}", reply.head);
    }
    for outcome in ["bad_request", "header_too_large"] {
        let expected = cases.iter().filter(|c| c.2 == outcome).count() as f64;
        let sample = format!("tcpie_requests_total{{outcome=\"{outcome}\"}}");
        assert_eq!(server.metric(&sample).await, expected, "{outcome}");
    }
    server.assert_conservation().await;
}

#[tokio::test]
async fn a_small_body_is_read_and_discarded() {
    let server = start(config()).await;
    let body = "x".repeat(5000);
    let post = format!(
        "POST /submit HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(
        request(server.addr, post.as_bytes()).await.unwrap().status,
        200
    );

    // With Expect: 100-continue the server invites the body before reading it.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut interim),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"body").await.unwrap();
    assert_eq!(read_reply(&mut stream).await.unwrap().status, 200);
}

#[tokio::test]
async fn rejections_are_read_first_so_they_never_become_resets() {
    // A client sending more than the head (pipelined bytes) must still read the whole
    // answer: closing with unread data would make the kernel send a reset.
    let server = start(tcpie::Config {
        burst: 1,
        rate_per_second: 0.001,
        ..config()
    })
    .await;
    let mut bytes = GET.to_vec();
    bytes.extend(std::iter::repeat_n(b'z', 64 * 1024));
    for expected in [200, 429, 429, 429] {
        let reply = request(server.addr, &bytes)
            .await
            .expect("a complete answer, no reset");
        assert_eq!(reply.status, expected);
    }
}

#[tokio::test]
async fn the_connection_cap_pauses_accepting() {
    let server = start(tcpie::Config {
        max_connections: 2,
        read_timeout_ms: 5000,
        ..config()
    })
    .await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let _second = TcpStream::connect(server.addr).await.unwrap();
    sleep(Duration::from_millis(100)).await;
    // The third connects (the kernel backlog holds it) but is not served yet.
    let addr = server.addr;
    let third = tokio::spawn(async move { request(addr, GET).await });
    sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished());
    assert_eq!(server.metric("tcpie_connections_open").await, 2.0);
    assert_eq!(server.metric("tcpie_connections_accepted_total").await, 2.0);
    drop(first);
    let reply = timeout(Duration::from_secs(5), third)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        server
            .metric("tcpie_connections_closed_before_request_total")
            .await,
        1.0
    );
}

struct Echo;

impl Handler for Echo {
    async fn handle(&self, request: &Request) -> Response {
        let agent = request
            .header("user-agent")
            .map(|v| String::from_utf8_lossy(v).into_owned());
        Response {
            status: 200,
            content_type: "application/json",
            body: format!(
                "{{\"method\":\"{}\",\"path\":\"{}\",\"version\":\"{}\",\"agent\":\"{}\"}}",
                request.method(),
                request.path(),
                request.version(),
                agent.unwrap_or_default()
            )
            .into(),
            ..Default::default()
        }
    }
}

#[tokio::test]
async fn an_embedding_application_supplies_its_own_handler() {
    let server = start_with(config(), Echo).await;
    let reply = request(
        server.addr,
        b"DELETE /items/7?x=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: probe\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        reply.body_text(),
        r#"{"method":"DELETE","path":"/items/7?x=1","version":"1.1","agent":"probe"}"#
    );
}

struct Panics;

impl Handler for Panics {
    async fn handle(&self, request: &Request) -> Response {
        if request.path() == "/boom" {
            panic!("handler bug");
        }
        Response::text(200, "fine\n")
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_worker_survives() {
    let server = start_with(
        tcpie::Config {
            workers: 1,
            ..config()
        },
        Panics,
    )
    .await;
    assert_eq!(server.get("/boom").await.status, 500);
    assert_eq!(server.get("/boom").await.status, 500);
    assert_eq!(server.get("/").await.status, 200);
}

/// A handler that never finishes: a wedged pool.
struct Wedged;

impl Handler for Wedged {
    async fn handle(&self, _request: &Request) -> Response {
        std::future::pending().await
    }
}

#[tokio::test]
async fn liveness_fails_only_for_a_wedged_pool() {
    let mut server = start_with(
        tcpie::Config {
            workers: 1,
            queue_size: 1,
            liveness_stall_ms: 300,
            shutdown_timeout_ms: 100,
            write_timeout_ms: 500,
            ..config()
        },
        Wedged,
    )
    .await;
    assert_eq!(server.probe("/livez").await.0, 200);
    let addr = server.addr;
    let stuck: Vec<_> = concurrent(addr, GET, 2);
    server.wait_admitted(2).await;
    assert_eq!(server.probe("/livez").await.0, 200);
    sleep(Duration::from_millis(400)).await;
    let (status, body) = server.probe("/livez").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "stalled");

    // Shutdown cannot wait for a wedged pool: past the drain deadline, 503 for both.
    timeout(Duration::from_secs(5), server.stop())
        .await
        .unwrap()
        .unwrap();
    for s in stuck {
        let reply = s.await.unwrap().unwrap();
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body_text(), "shutting down\n");
    }
}

#[tokio::test]
async fn shutdown_answers_every_accepted_request_then_stops() {
    let mut server = start(tcpie::Config {
        workers: 1,
        queue_size: 4,
        simulated_work_ms: 200,
        ..config()
    })
    .await;
    let addr = server.addr;
    let clients: Vec<_> = concurrent(addr, GET, 4);
    server.wait_admitted(4).await;
    // A connection accepted but still sending its head is answered too.
    let mut late = TcpStream::connect(addr).await.unwrap();
    late.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    let stop = server.stop();
    sleep(Duration::from_millis(100)).await;
    late.write_all(b"Host: t\r\n\r\n").await.unwrap();
    // The listener is closed: new connections are refused.
    assert!(TcpStream::connect(addr).await.is_err());

    timeout(Duration::from_secs(5), stop)
        .await
        .unwrap()
        .unwrap();
    for c in clients {
        assert_eq!(c.await.unwrap().unwrap().status, 200);
    }
    assert_eq!(read_reply(&mut late).await.unwrap().status, 200);
    // Five requests of 200 ms on one worker.
    assert!(started.elapsed() >= Duration::from_millis(700));
}

#[tokio::test]
async fn readiness_fails_at_once_and_the_listener_stays_open_for_the_delay() {
    let mut server = start(tcpie::Config {
        shutdown_delay_ms: 600,
        ..config()
    })
    .await;
    assert_eq!(server.probe("/readyz").await.0, 200);
    let started = Instant::now();
    server.stop(); // starts the shutdown; its task is awaited below
    sleep(Duration::from_millis(100)).await;
    let (status, body) = server.probe("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "shutting down");
    assert_eq!(body["shutting_down"], true);
    assert_eq!(server.probe("/livez").await.0, 200);
    // Still serving during the delay, so in-flight routing changes lose nothing.
    assert_eq!(server.get("/").await.status, 200);
    timeout(Duration::from_secs(5), server.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let server = start(tcpie::Config {
        burst: 3,
        rate_per_second: 0.001,
        ..config()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(server.get("/").await.status, 200);
    }
    assert_eq!(server.get("/").await.status, 429);
    assert_eq!(
        request(server.addr, b"BROKEN\r\n\r\n")
            .await
            .unwrap()
            .status,
        400
    );
    drop(TcpStream::connect(server.addr).await.unwrap());
    sleep(Duration::from_millis(100)).await;

    let (_, text) = server.admin("/metrics").await;
    let value = |s: &str| common::metric_value(&text, s).unwrap_or_else(|| panic!("{s}"));
    assert_eq!(value("tcpie_connections_accepted_total"), 6.0);
    assert_eq!(value("tcpie_connections_closed_before_request_total"), 1.0);
    assert_eq!(value("tcpie_connections_open"), 0.0);
    assert_eq!(value("tcpie_requests_total{outcome=\"processed\"}"), 3.0);
    assert_eq!(value("tcpie_requests_total{outcome=\"rate_limited\"}"), 1.0);
    assert_eq!(value("tcpie_requests_total{outcome=\"bad_request\"}"), 1.0);
    assert_eq!(value("tcpie_queue_capacity"), 5.0);
    assert_eq!(value("tcpie_workers"), 2.0);
    assert_eq!(value("tcpie_accept_errors_total"), 0.0);
    let info = format!(
        "tcpie_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&info), 1.0);
    assert!(value("process_resident_memory_bytes") > 0.0);
    assert!(value("process_open_fds") > 0.0);
    server.assert_conservation().await;
}

#[tokio::test]
async fn a_pipelined_second_request_without_keep_alive_does_not_reset_the_first_answer() {
    // The second request is never answered (keep-alive is off), but it must not make the
    // kernel reset the connection before the client has read the first answer.
    let server = start(config()).await;
    for _ in 0..20 {
        let mut both = GET.to_vec();
        both.extend_from_slice(GET);
        let reply = request(server.addr, &both)
            .await
            .expect("the first answer, not a reset");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("connection").as_deref(), Some("close"));
    }
}

#[tokio::test]
async fn a_silent_connection_accepted_before_the_stop_is_still_served() {
    // Silent connections wait in the accept loop's idle set, not in tasks; when the
    // listener closes they get tasks and are served like any accepted connection.
    let mut server = start(tcpie::Config {
        shutdown_delay_ms: 0,
        ..config()
    })
    .await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    sleep(Duration::from_millis(100)).await;
    let stop = server.stop();
    sleep(Duration::from_millis(100)).await;
    silent.write_all(GET).await.unwrap();
    assert_eq!(read_reply(&mut silent).await.unwrap().status, 200);
    timeout(Duration::from_secs(5), stop)
        .await
        .unwrap()
        .unwrap();
}
