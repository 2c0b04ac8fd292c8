//! Per-client rate limits over real sockets: distinct peers on the loopback range
//! (127.0.0.1 and 127.0.0.2 are different clients), header keys, X-Forwarded-For and
//! Forwarded with trusted hops, dry run and the RateLimit fields. Time is paused: rates
//! are checked to the request, with no wall-clock window.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{config, request_from, start, Reply, TestServer};
use tcpie::config::{ClientKey, Forwarded};
use tokio::time::sleep;

const ONE: &str = "127.0.0.1";
const TWO: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn get_from(server: &TestServer, from: &str, headers: &str) -> Reply {
    let bytes = format!("GET / HTTP/1.1\r\nHost: test\r\n{headers}\r\n");
    request_from(ip(from), server.addr, bytes.as_bytes())
        .await
        .unwrap()
}

fn limited(key: ClientKey, rate: f64, burst: u32) -> tcpie::Config {
    tcpie::Config {
        client_key: key,
        client_rate_per_second: rate,
        client_burst: burst,
        workers: 64,
        queue_size: 64,
        ..config()
    }
}

/// Statuses of `n` requests from `from`, one every `every`.
async fn paced(
    server: &TestServer,
    from: &str,
    headers: &str,
    n: usize,
    every: Duration,
) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(n);
    for _ in 0..n {
        replies.push(get_from(server, from, headers).await);
        sleep(every).await;
    }
    replies
}

fn count(replies: &[Reply], status: u16) -> usize {
    replies.iter().filter(|r| r.status == status).count()
}

#[tokio::test(start_paused = true)]
async fn a_flooding_client_is_limited_while_another_at_its_rate_is_served() {
    let server = start(limited(ClientKey::Peer, 10.0, 5)).await;
    // 127.0.0.1 floods at 100 requests a second (10 × its rate) for 2 s while
    // 127.0.0.2 sends at its rate, 10 a second.
    let flood = paced(&server, ONE, "", 200, Duration::from_millis(10));
    let calm = paced(&server, TWO, "", 20, Duration::from_millis(100));
    let (flood, calm) = tokio::join!(flood, calm);
    assert_eq!(count(&calm, 200), 20, "the calm client is never refused");
    // The flood gets its burst and its rate: 5 + 10 × 1.99 s, give or take the
    // milliseconds the loopback adds to the pacing.
    let served = count(&flood, 200);
    assert!((23..=26).contains(&served), "{served} served");
    let refused: Vec<&Reply> = flood.iter().filter(|r| r.status == 429).collect();
    assert_eq!(refused.len() + served, 200);
    for r in &refused {
        assert_eq!(r.body_text(), "rate limited: this client's own limit\n");
        assert_eq!(r.header("retry-after").as_deref(), Some("1"));
        assert_eq!(
            r.header("ratelimit-policy").as_deref(),
            Some("\"client\";q=5;w=1")
        );
        let state = r.header("ratelimit").unwrap();
        assert!(state.starts_with("\"client\";r=0;t="), "{state}");
    }
    let limited = server
        .metric("tcpie_requests_total{outcome=\"client_rate_limited\"}")
        .await;
    assert_eq!(limited as usize, refused.len());
    assert_eq!(
        server
            .metric("tcpie_rate_limit_rejections_total{limit=\"client\"}")
            .await,
        limited
    );
    // Each refusal's time to answer is measured (0 here: the clock is paused).
    assert_eq!(
        server
            .metric("tcpie_rejection_duration_seconds_count")
            .await,
        limited
    );
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"rate_limited\"}")
            .await,
        0.0
    );
    assert_eq!(server.metric("tcpie_rate_limit_clients").await, 2.0);
    assert_eq!(
        server.metric("tcpie_rate_limit_client_table_size").await,
        100_000.0
    );
    // Served answers carry no RateLimit fields unless asked for.
    assert!(calm[0].header("ratelimit").is_none());
    server.assert_conservation().await;
}

#[tokio::test(start_paused = true)]
async fn header_keys_from_one_address_are_limited_separately() {
    let server = start(limited(ClientKey::Header("X-Api-Key".into()), 1.0, 2)).await;
    let a = paced(&server, ONE, "X-Api-Key: alpha\r\n", 5, Duration::ZERO).await;
    let b = paced(&server, ONE, "x-api-key: beta\r\n", 5, Duration::ZERO).await;
    assert_eq!((count(&a, 200), count(&b, 200)), (2, 2));
    // Without the header, the peer's address is the key: its own bucket too.
    let none = paced(&server, ONE, "", 5, Duration::ZERO).await;
    assert_eq!(count(&none, 200), 2);
    let other_peer = paced(&server, TWO, "", 5, Duration::ZERO).await;
    assert_eq!(count(&other_peer, 200), 2);
    assert_eq!(server.metric("tcpie_rate_limit_clients").await, 4.0);
}

#[tokio::test(start_paused = true)]
async fn forwarded_honours_exactly_the_trusted_hops() {
    let server = start(tcpie::Config {
        trusted_hops: 2,
        ..limited(ClientKey::Forwarded(Forwarded::XForwardedFor), 1.0, 2)
    })
    .await;
    // Two proxies append: the client is the second entry from the right. A client that
    // forges entries on the left gains nothing: each forgery is the same client.
    let mut served = 0;
    for forged in 0..10 {
        let xff = format!("X-Forwarded-For: 10.9.9.{forged}, 203.0.113.7, 10.0.0.2\r\n");
        served += usize::from(get_from(&server, ONE, &xff).await.status == 200);
    }
    assert_eq!(served, 2);
    // Another address in that position is another client, whatever the proxy entry.
    let other = paced(
        &server,
        ONE,
        "X-Forwarded-For: 203.0.113.8, 10.0.0.3\r\n",
        3,
        Duration::ZERO,
    )
    .await;
    assert_eq!(count(&other, 200), 2);
    // Split over two field lines, the count goes on from the right.
    let split = get_from(
        &server,
        ONE,
        "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 10.0.0.2\r\n",
    )
    .await;
    assert_eq!(split.status, 429, "203.0.113.7 is the same client");
    // Fewer entries than the hops: the peer's address.
    let short = paced(
        &server,
        TWO,
        "X-Forwarded-For: 203.0.113.7\r\n",
        3,
        Duration::ZERO,
    )
    .await;
    assert_eq!(count(&short, 200), 2);
    // The Forwarded header is not read by `forwarded`: a forged one changes nothing.
    let forged = get_from(
        &server,
        ONE,
        "Forwarded: for=198.51.100.1\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.2\r\n",
    )
    .await;
    assert_eq!(forged.status, 429);
}

#[tokio::test(start_paused = true)]
async fn forwarded_rfc7239_reads_the_for_parameter() {
    let server = start(limited(ClientKey::Forwarded(Forwarded::Rfc7239), 1.0, 1)).await;
    let a = get_from(
        &server,
        ONE,
        "Forwarded: for=6.6.6.6, for=\"[2001:db8::1]:443\";proto=https\r\n",
    )
    .await;
    let b = get_from(
        &server,
        ONE,
        "Forwarded: for=7.7.7.7, for=\"[2001:db8::2]\"\r\n",
    )
    .await;
    assert_eq!((a.status, b.status), (200, 429), "one /64 is one client");
    let c = get_from(&server, ONE, "Forwarded: for=\"[2001:db8:0:1::1]\"\r\n").await;
    assert_eq!(c.status, 200, "the next /64 is another");
}

#[tokio::test(start_paused = true)]
async fn a_client_refused_by_its_own_bucket_spends_nothing_of_the_global_one() {
    let server = start(tcpie::Config {
        rate_per_second: 0.001,
        burst: 3,
        ..limited(ClientKey::Peer, 0.001, 1)
    })
    .await;
    let one = paced(&server, ONE, "", 5, Duration::ZERO).await;
    assert_eq!(count(&one, 200), 1);
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"client_rate_limited\"}")
            .await,
        4.0
    );
    // The global bucket gave one token to 127.0.0.1 and has two left.
    let two = get_from(&server, TWO, "").await;
    assert_eq!(two.status, 200);
    let three = get_from(&server, "127.0.0.3", "").await;
    assert_eq!(three.status, 200);
    let four = get_from(&server, "127.0.0.4", "").await;
    assert_eq!(four.status, 429);
    assert_eq!(four.body_text(), "rate limited\n");
    assert_eq!(
        four.header("ratelimit-policy").as_deref(),
        Some("\"global\";q=3;w=3000")
    );
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"rate_limited\"}")
            .await,
        1.0
    );
    // 127.0.0.4 was not charged for the request the global bucket refused: once the
    // global bucket has a token again, its own still has its one.
    sleep(Duration::from_secs(1000)).await;
    assert_eq!(get_from(&server, "127.0.0.4", "").await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn dry_run_serves_everything_and_counts_what_it_would_refuse() {
    let server = start(tcpie::Config {
        rate_limit_dry_run: true,
        rate_limit_headers: true,
        rate_per_second: 0.001,
        burst: 4,
        ..limited(ClientKey::Peer, 0.001, 2)
    })
    .await;
    let one = paced(&server, ONE, "", 5, Duration::ZERO).await;
    assert_eq!(count(&one, 200), 5);
    // What enforcing would have done: 2 served, 3 refused by the client's bucket.
    assert_eq!(
        server
            .metric("tcpie_rate_limit_dry_run_rejections_total{limit=\"client\"}")
            .await,
        3.0
    );
    // Two more clients: the global bucket (4) has 2 left, so the fourth request overall
    // that reaches it would be refused.
    let two = paced(&server, TWO, "", 2, Duration::ZERO).await;
    let three = get_from(&server, "127.0.0.3", "").await;
    assert_eq!(count(&two, 200) + usize::from(three.status == 200), 3);
    assert_eq!(
        server
            .metric("tcpie_rate_limit_dry_run_rejections_total{limit=\"global\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("tcpie_rate_limit_rejections_total{limit=\"client\"}")
            .await,
        0.0
    );
    assert_eq!(
        server
            .metric("tcpie_requests_total{outcome=\"processed\"}")
            .await,
        8.0
    );
    // Every answer carries the fields of the bucket closer to refusing.
    assert_eq!(
        one[0].header("ratelimit").as_deref(),
        Some("\"client\";r=1;t=1000")
    );
    assert_eq!(
        one[4].header("ratelimit").as_deref(),
        Some("\"client\";r=0;t=2000")
    );
    assert_eq!(
        two[1].header("ratelimit-policy").as_deref(),
        Some("\"global\";q=4;w=4000")
    );
    assert_eq!(
        two[1].header("ratelimit").as_deref(),
        Some("\"global\";r=0;t=4000")
    );
}

#[tokio::test(start_paused = true)]
async fn with_the_fields_on_every_answer_the_global_bucket_reports_alone() {
    let server = start(tcpie::Config {
        rate_limit_headers: true,
        rate_per_second: 2.0,
        burst: 5,
        ..config()
    })
    .await;
    let replies = paced(&server, ONE, "", 6, Duration::ZERO).await;
    assert_eq!(
        replies[0].header("ratelimit-policy").as_deref(),
        Some("\"global\";q=5;w=3")
    );
    assert_eq!(
        replies[0].header("ratelimit").as_deref(),
        Some("\"global\";r=4;t=1")
    );
    assert_eq!(
        replies[4].header("ratelimit").as_deref(),
        Some("\"global\";r=0;t=3")
    );
    assert_eq!(replies[5].status, 429);
    assert_eq!(
        replies[5].header("ratelimit").as_deref(),
        Some("\"global\";r=0;t=3")
    );
}
