//! Deadlines, idle closes, the drain and the order of admission, under paused tokio time:
//! the in-process server and its clients share one runtime whose clock only moves when
//! every task waits, so each deadline is checked to the millisecond, with no wall-clock
//! window for a busy machine to break.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config, read_reply, start, start_with};
use tcpie::{Handler, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

/// Asserts `took` is `expected`, give or take the millisecond the clock may move while
/// bytes cross the loopback.
fn assert_at(took: Duration, expected: Duration) {
    let slack = Duration::from_millis(5);
    assert!(
        took >= expected && took <= expected + slack,
        "took {took:?}, expected {expected:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_without_an_answer_at_the_read_deadline() {
    let server = start(tcpie::Config {
        read_timeout_ms: 3000,
        ..config()
    })
    .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // A spare connection (Go's client opens them) gets no answer it did not ask for.
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&answer), "");
    assert_at(started.elapsed(), Duration::from_millis(3000));
    // Counted as a connection closed before a request, not as a request.
    assert_eq!(
        server
            .metric("tcpie_connections_closed_before_request_total")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"read_timeout\"}")
            .await,
        0.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_partial_head_gets_408_exactly_at_the_read_deadline() {
    let server = start(tcpie::Config {
        read_timeout_ms: 3000,
        ..config()
    })
    .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET / HT").await.unwrap();
    let reply = read_reply(&mut stream).await.unwrap();
    assert_eq!(reply.status, 408);
    assert_eq!(reply.body_text(), "request head not received in time\n");
    assert_at(started.elapsed(), Duration::from_millis(3000));
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"read_timeout\"}")
            .await,
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn the_read_deadline_is_absolute_however_bytes_trickle() {
    let server = start(tcpie::Config {
        read_timeout_ms: 1000,
        ..config()
    })
    .await;
    let started = Instant::now();
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    tokio::spawn(async move {
        // A byte every 100 ms would satisfy any per-read idle timer forever.
        for b in b"GET / HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if writer.write_all(&[*b]).await.is_err() {
                return;
            }
            sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    reader.read_to_end(&mut answer).await.unwrap();
    let reply = common::parse_reply(answer).unwrap();
    assert_eq!(reply.status, 408);
    assert_at(started.elapsed(), Duration::from_millis(1000));
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_gets_408_at_the_same_deadline() {
    let server = start(tcpie::Config {
        read_timeout_ms: 2000,
        ..config()
    })
    .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let reply = read_reply(&mut stream).await.unwrap();
    assert_eq!(reply.status, 408);
    assert_eq!(reply.body_text(), "request body not received in time\n");
    assert_at(started.elapsed(), Duration::from_millis(2000));
}

#[tokio::test(start_paused = true)]
async fn a_kept_alive_connection_closes_exactly_after_its_idle_time() {
    let server = start(tcpie::Config {
        keep_alive: true,
        keep_alive_idle_ms: 5000,
        ..config()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    let mut answer = [0u8; 512];
    let n = stream.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200 OK"));
    let idle_from = Instant::now();
    // Closed quietly: no answer, just the close.
    assert_eq!(stream.read(&mut answer).await.unwrap(), 0);
    assert_at(idle_from.elapsed(), Duration::from_millis(5000));
}

#[tokio::test(start_paused = true)]
async fn the_drain_waits_for_the_delay_then_answers_503_at_its_deadline() {
    let mut server = start(tcpie::Config {
        workers: 1,
        queue_size: 2,
        simulated_work_ms: 60_000,
        shutdown_delay_ms: 700,
        shutdown_timeout_ms: 1500,
        ..config()
    })
    .await;
    let addr = server.addr;
    let clients: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { common::request(addr, GET).await }))
        .collect();
    server.wait_admitted(3).await;
    let stopped = Instant::now();
    server.stop().await.unwrap();
    // Not ready for the delay, then the drain deadline, then 503 for the three.
    assert_at(stopped.elapsed(), Duration::from_millis(2200));
    for c in clients {
        let reply = c.await.unwrap().unwrap();
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body_text(), "shutting down\n");
    }
}

/// Records the order in which requests are processed.
#[derive(Clone, Default)]
struct Order(Arc<Mutex<Vec<String>>>);

impl Handler for Order {
    async fn handle(&self, request: &Request) -> Response {
        self.0.lock().unwrap().push(request.path().to_string());
        sleep(Duration::from_millis(100)).await;
        Response::text(200, "done\n")
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_requests_are_processed_in_arrival_order() {
    let order = Order::default();
    let server = start_with(
        tcpie::Config {
            workers: 1,
            queue_size: 4,
            ..config()
        },
        order.clone(),
    )
    .await;
    let addr = server.addr;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(tokio::spawn(async move {
            let request = format!("GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n");
            common::request(addr, request.as_bytes()).await
        }));
        // Each is admitted before the next is sent.
        server.wait_admitted(i + 1).await;
    }
    // A sixth finds the system full.
    assert_eq!(common::request(addr, GET).await.unwrap().status, 503);
    for c in clients {
        assert_eq!(c.await.unwrap().unwrap().status, 200);
    }
    assert_eq!(*order.0.lock().unwrap(), ["/0", "/1", "/2", "/3", "/4"]);
}

#[tokio::test(start_paused = true)]
async fn a_request_waiting_past_the_queue_timeout_gets_503_and_its_place_back() {
    let server = start(tcpie::Config {
        workers: 1,
        queue_size: 1,
        simulated_work_ms: 10_000,
        queue_timeout_ms: 500,
        ..config()
    })
    .await;
    let addr = server.addr;
    let busy = tokio::spawn(async move { common::request(addr, GET).await });
    server.wait_admitted(1).await;
    let waited_from = Instant::now();
    let reply = common::request(addr, GET).await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body_text(), "waited too long in the queue\n");
    assert_eq!(reply.header("retry-after").as_deref(), Some("1"));
    assert_at(waited_from.elapsed(), Duration::from_millis(500));
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"queue_timeout\"}")
            .await,
        1.0
    );
    // Its place was given back: the next one queues again (and times out again), rather
    // than being refused as queue_full.
    assert_eq!(common::request(addr, GET).await.unwrap().status, 503);
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"queue_full\"}")
            .await,
        0.0
    );
    assert_eq!(busy.await.unwrap().unwrap().status, 200);
    server.assert_conservation().await;
}

#[tokio::test(start_paused = true)]
async fn without_a_queue_timeout_a_request_waits_as_long_as_it_takes() {
    let server = start(tcpie::Config {
        workers: 1,
        queue_size: 1,
        simulated_work_ms: 10_000,
        ..config()
    })
    .await;
    let addr = server.addr;
    let busy = tokio::spawn(async move { common::request(addr, GET).await });
    server.wait_admitted(1).await;
    let started = Instant::now();
    let reply = common::request(addr, GET).await.unwrap();
    assert_eq!(reply.status, 200);
    // It waited for the first request's 10 s, then was processed for 10 s.
    assert!(
        started.elapsed() >= Duration::from_millis(19_900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(busy.await.unwrap().unwrap().status, 200);
}
