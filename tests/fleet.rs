//! Limits shared by a fleet through a real Redis (Debian's `redis-server` on a loopback
//! port) and several `tcpie` processes: the shared global bucket, one client's bucket
//! across pods, and Redis paused, killed and restarted under traffic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::process::{spawn, Tcpie};
use common::redis::Redis;
use common::{metric_value, request};
use tcpie::internal::{grant, Granted};
use tokio::time::Instant;

/// What a stretch of traffic got back.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
    /// The slowest answer, microseconds.
    slowest_us: AtomicU64,
}

impl Tally {
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }
}

/// `connections` clients per address, each sending one request per connection as fast as
/// answers come, for `length`; with `key`, as that API key. Returns the tally and the
/// stretch's length as measured.
async fn flood(
    addrs: &[SocketAddr],
    connections: usize,
    length: Duration,
    key: Option<&str>,
) -> (Arc<Tally>, Duration) {
    let tally = Arc::new(Tally::default());
    let key = key.map_or(String::new(), |k| format!("X-Api-Key: {k}\r\n"));
    let bytes: Arc<[u8]> = format!("GET / HTTP/1.1\r\nHost: t\r\n{key}Connection: close\r\n\r\n")
        .into_bytes()
        .into();
    let start = Instant::now();
    let end = start + length;
    let mut tasks = Vec::new();
    for &addr in addrs {
        for _ in 0..connections {
            let (tally, bytes) = (tally.clone(), bytes.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < end {
                    let sent = Instant::now();
                    let reply = request(addr, &bytes).await;
                    let took = sent.elapsed().as_micros() as u64;
                    tally.slowest_us.fetch_max(took, Ordering::Relaxed);
                    let counter = match reply.map(|r| r.status) {
                        Ok(200) => &tally.ok,
                        Ok(429) => &tally.refused,
                        _ => &tally.other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    (tally, start.elapsed())
}

/// The tests here run one at a time: each floods several pods, and two at once on two
/// cores would measure the machine, not the limits.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn pods(redis: &Redis, n: usize, env: &[(&str, &str)]) -> Vec<Tcpie> {
    let url = redis.url();
    let mut vars = vec![
        ("TCPIE_REDIS_URL", url.as_str()),
        ("TCPIE_RATE_LIMIT_NAME", "fleet-test"),
        ("TCPIE_WORKERS", "64"),
        ("TCPIE_QUEUE_SIZE", "256"),
        // Generous, so that a busy machine's slow answer does not send a pod to its fair
        // share in a test that is not about Redis failing (that one sets its own).
        ("TCPIE_REDIS_TIMEOUT_MS", "50"),
    ];
    vars.extend_from_slice(env);
    (0..n).map(|_| spawn(&[], &vars)).collect()
}

async fn metric(pod: &Tcpie, sample: &str) -> f64 {
    let (_, text) = pod.admin("/metrics").await;
    metric_value(&text, sample).unwrap_or_else(|| panic!("no {sample} in {text}"))
}

/// Waits until every pod is in `mode` (`shared` or `fallback`) and knows `pods` pods.
async fn wait_mode(fleet: &[Tcpie], mode: &str, pods: usize) {
    let sample = format!("tcpie_rate_limit_mode{{mode=\"{mode}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    for pod in fleet {
        loop {
            let in_mode = metric(pod, &sample).await == 1.0;
            let known = metric(pod, "tcpie_rate_limit_pods").await as usize;
            if in_mode && (mode == "fallback" || known == pods) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a pod is not {mode} with {pods} pods ({known})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `n` pods with no global bucket and a limit for each client named by its `X-Api-Key`
/// (`rate` a second, `burst`), and `extra` settings; returned once they share it.
async fn client_pods(
    redis: &Redis,
    n: usize,
    rate: &str,
    burst: &str,
    extra: &[(&str, &str)],
) -> Vec<Tcpie> {
    let mut env = vec![
        ("TCPIE_BURST", "0"),
        ("TCPIE_CLIENT_KEY", "header:X-Api-Key"),
        ("TCPIE_CLIENT_RATE_PER_SECOND", rate),
        ("TCPIE_CLIENT_BURST", burst),
    ];
    env.extend_from_slice(extra);
    let fleet = pods(redis, n, &env);
    wait_mode(&fleet, "shared", n).await;
    fleet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pods_flooded_admit_one_shared_rate() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start().await;
    let (rate, burst) = (400.0, 80.0);
    let fleet = pods(
        &redis,
        3,
        &[("TCPIE_RATE_PER_SECOND", "400"), ("TCPIE_BURST", "80")],
    );
    wait_mode(&fleet, "shared", 3).await;
    let addrs: Vec<SocketAddr> = fleet.iter().map(|p| p.tcp).collect();
    let (tally, t) = flood(&addrs, 6, Duration::from_secs(4), None).await;
    let allowed = burst + rate * t.as_secs_f64();
    let ok = tally.ok() as f64;
    eprintln!("3 pods flooded for {t:?}: {ok} admitted, burst + rate × t = {allowed:.0}");
    assert!(
        (ok - allowed).abs() <= 0.02 * allowed,
        "{ok} admitted by 3 pods in {t:?}, the shared bucket allows {allowed:.0}: {tally:?}"
    );
    assert!(
        tally.refused.load(Ordering::Relaxed) > 1000,
        "not a flood: {tally:?}"
    );
    assert_eq!(tally.other.load(Ordering::Relaxed), 0, "{tally:?}");
    // Every pod was served from the shared bucket, none ran alone.
    for pod in &fleet {
        assert_eq!(
            metric(pod, "tcpie_rate_limit_mode{mode=\"shared\"}").await,
            1.0
        );
        assert!(
            metric(
                pod,
                "tcpie_rate_limit_lease_tokens_total{event=\"granted\"}"
            )
            .await
                > 100.0
        );
    }
}

/// A pod idle long enough to hold a one-token lease gets 200 requests at once, well
/// under the shared bucket's burst: none is refused while its lease catches up (each
/// waits for the refill, one round trip, because Redis said it had tokens left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_pod_turning_busy_under_the_limit_refuses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start().await;
    let fleet = pods(
        &redis,
        1,
        &[
            ("TCPIE_RATE_PER_SECOND", "1000"),
            ("TCPIE_BURST", "1000"),
            ("TCPIE_MAX_CONNECTIONS", "1000"),
            // The wait for refills is bounded by the Redis timeout; 200 connections at
            // once on a debug build and two busy cores can take longer than the 5 ms
            // default to be scheduled, which is not what this test is about.
            ("TCPIE_REDIS_TIMEOUT_MS", "100"),
        ],
    );
    wait_mode(&fleet, "shared", 1).await;
    // Quiet for two heartbeats: the lease is down to its idle size.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(metric(&fleet[0], "tcpie_rate_limit_lease_tokens").await <= 1.0);
    let addr = fleet[0].tcp;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                request(
                    addr,
                    b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                )
                .await
                .map(|r| r.status)
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        *statuses.entry(t.await.unwrap().unwrap_or(0)).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&200), Some(&200), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_spread_over_pods_gets_its_limit_once() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start().await;
    let fleet = client_pods(&redis, 3, "20", "10", &[]).await;
    let addrs: Vec<SocketAddr> = fleet.iter().map(|p| p.tcp).collect();
    let (tally, t) = flood(&addrs, 2, Duration::from_secs(2), Some("plan-basic")).await;
    let allowed = 10.0 + 20.0 * t.as_secs_f64();
    let ok = tally.ok() as f64;
    assert!(
        ok <= allowed + 1.0 && ok >= allowed - 3.0,
        "one client admitted {ok} times over 3 pods in {t:?}; its own limit is {allowed:.0}"
    );
    // Another client has its own bucket, shared too.
    let (other, _) = flood(
        &addrs[..1],
        1,
        Duration::from_millis(300),
        Some("plan-other"),
    )
    .await;
    assert!(other.ok() >= 10, "{other:?}");
    // A client refused recently is refused in the pod without asking Redis again.
    let calls = |p| async move { metric(p, "tcpie_redis_calls_total{call=\"client\"}").await };
    let before = calls(&fleet[0]).await;
    let (burst, _) = flood(
        &addrs[..1],
        1,
        Duration::from_millis(300),
        Some("plan-basic"),
    )
    .await;
    let asked = calls(&fleet[0]).await - before;
    let sent = burst.ok() + burst.refused.load(Ordering::Relaxed);
    assert!(
        (asked as u64) < sent / 2,
        "{asked} Redis calls for {sent} requests of a client over its limit"
    );
}

/// A keep-alive connection whose requests name different clients charges each to its
/// own bucket: the pod remembers a connection's last client (its id is a digest), and
/// remembers it exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_naming_several_clients_charges_each_its_own() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start().await;
    let fleet = client_pods(&redis, 1, "0.01", "2", &[("TCPIE_KEEP_ALIVE", "true")]).await;
    let get = |key: &str, close: bool| {
        let connection = if close { "close" } else { "keep-alive" };
        format!("GET / HTTP/1.1\r\nHost: t\r\nX-Api-Key: {key}\r\nConnection: {connection}\r\n\r\n")
    };
    // Two requests of each of three clients on one connection: each within its burst.
    let mut stream = tokio::net::TcpStream::connect(fleet[0].tcp).await.unwrap();
    let keys = ["key-a", "key-b", "key-b", "key-a", "key-c", "key-c"];
    for (i, key) in keys.iter().enumerate() {
        stream
            .write_all(get(key, i == keys.len() - 1).as_bytes())
            .await
            .unwrap();
    }
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let all = String::from_utf8_lossy(&raw).into_owned();
    assert_eq!(
        all.matches("HTTP/1.1 200").count(),
        keys.len(),
        "every request within its own client's burst: {all}"
    );
    // Each burst is spent now: a third request of any of them is refused.
    for key in ["key-a", "key-b", "key-c"] {
        let reply = request(fleet[0].tcp, get(key, true).as_bytes())
            .await
            .unwrap();
        assert_eq!(reply.status, 429, "{key}");
    }
}

/// A client a pod serves often is decided in the pod, from tokens it leased ahead of need,
/// and its fleet-wide limit still holds: what a pod leases was taken from the shared
/// bucket when leased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_served_often_is_decided_in_the_pod_and_still_held_to_its_limit() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start().await;
    let fleet = client_pods(&redis, 3, "400", "400", &[]).await;
    let addrs: Vec<SocketAddr> = fleet.iter().map(|p| p.tcp).collect();
    let calls = |p| async move { metric(p, "tcpie_redis_calls_total{call=\"client\"}").await };
    let mut before = 0.0;
    for pod in &fleet {
        before += calls(pod).await;
    }
    // Flooded over its limit on three pods: never more than its own burst and rate.
    let (tally, t) = flood(&addrs, 2, Duration::from_secs(2), Some("hot")).await;
    let allowed = 400.0 + 400.0 * t.as_secs_f64();
    let ok = tally.ok() as f64;
    // Leases lapse unspent at the end (at most an eighth of the burst a pod).
    assert!(
        ok <= allowed + 1.0 && ok >= allowed - 3.0 * 50.0,
        "one client admitted {ok} times over 3 pods in {t:?}; its own limit is {allowed:.0} \
         ({tally:?})"
    );
    // A client under its limit: most of its requests never reach Redis.
    let mut asked_before = 0.0;
    for pod in &fleet {
        asked_before += calls(pod).await;
    }
    let request_calm = b"GET / HTTP/1.1\r\nHost: t\r\nX-Api-Key: calm\r\nConnection: close\r\n\r\n";
    let sent = 300;
    for _ in 0..sent {
        // About 700 a second for under half a second: within its burst of 400.
        let reply = request(addrs[0], request_calm).await.unwrap();
        assert_eq!(reply.status, 200);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut asked = 0.0;
    for pod in &fleet {
        asked += calls(pod).await;
    }
    assert!(
        (asked - asked_before) * 8.0 < f64::from(sent),
        "{} Redis calls for {sent} requests of a client under its limit",
        asked - asked_before
    );
    assert!(before <= asked_before);
}

/// Many requests of one client at once, under its limit: one lease is asked for at a time
/// and the others wait for it, so they neither lease its whole bucket between them and
/// refuse it, nor each make a call of their own while it is on its way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_of_a_client_under_its_limit_are_never_refused() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start().await;
    let fleet = client_pods(&redis, 1, "50000", "2000", &[]).await;
    let calls = "tcpie_redis_calls_total{call=\"client\"}";
    let before = metric(&fleet[0], calls).await;
    let (tally, t) = flood(&[fleet[0].tcp], 48, Duration::from_secs(1), Some("busy")).await;
    let rate = tally.ok() as f64 / t.as_secs_f64();
    assert!(
        rate < 50_000.0,
        "{rate:.0} requests a second is over the limit itself"
    );
    assert_eq!(tally.refused.load(Ordering::Relaxed), 0, "{tally:?}");
    assert_eq!(tally.other.load(Ordering::Relaxed), 0, "{tally:?}");
    // Leases of up to 250 tokens (an eighth of the burst), the next asked for at half
    // left: about one call per 125 requests once grown, and a call per doubling before
    // (84 calls for 6,600 requests, debug build). Room for a busy machine, where stalls let
    // leases lapse (192 for 3,900): calling for a token while a lease is on its way made
    // 600-880 calls per 1,000 requests here.
    let asked = metric(&fleet[0], calls).await - before;
    let most = 50.0 + tally.ok() as f64 / 20.0;
    assert!(
        asked <= most,
        "{asked} Redis calls for {} requests of one client (at most {most:.0})",
        tally.ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_killed_and_restarted_the_pods_fall_back_and_return() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut redis = Redis::start().await;
    let bound = Duration::from_millis(20);
    let fleet = pods(
        &redis,
        2,
        &[
            ("TCPIE_RATE_PER_SECOND", "200"),
            ("TCPIE_BURST", "20"),
            ("TCPIE_CLIENT_KEY", "header:X-Api-Key"),
            ("TCPIE_CLIENT_RATE_PER_SECOND", "1000"),
            ("TCPIE_CLIENT_BURST", "1000"),
            ("TCPIE_REDIS_TIMEOUT_MS", "20"),
        ],
    );
    wait_mode(&fleet, "shared", 2).await;
    let addrs: Vec<SocketAddr> = fleet.iter().map(|p| p.tcp).collect();

    for outage in ["paused", "killed"] {
        if outage == "paused" {
            redis.pause();
        } else {
            redis.kill();
        }
        // The first requests meet the timeout, then the pods know and stop asking.
        let (tally, t) = flood(&addrs, 4, Duration::from_secs(3), Some("k")).await;
        wait_mode(&fleet, "fallback", 2).await;
        // Each pod keeps to half of the rate and half of the burst.
        let allowed = 2.0 * (10.0 + 100.0 * t.as_secs_f64());
        let ok = tally.ok() as f64;
        assert!(
            ok <= allowed * 1.05 + 20.0 && ok >= allowed * 0.85,
            "Redis {outage}: {ok} admitted in {t:?}, the fair shares allow {allowed:.0}: {tally:?}"
        );
        assert_eq!(tally.other.load(Ordering::Relaxed), 0, "{tally:?}");
        let slowest = Duration::from_micros(tally.slowest_us.load(Ordering::Relaxed));
        assert!(
            slowest < bound + Duration::from_millis(300),
            "Redis {outage}: a request took {slowest:?}, the bound is {bound:?}"
        );
        for pod in &fleet {
            assert!(
                metric(pod, "tcpie_redis_errors_total{kind=\"timeout\"}").await
                    + metric(pod, "tcpie_redis_errors_total{kind=\"error\"}").await
                    > 0.0
            );
            // Readiness does not depend on Redis.
            assert_eq!(pod.admin("/readyz").await.0, 200);
        }
        if outage == "paused" {
            redis.resume();
        } else {
            redis.restart().await;
        }
        wait_mode(&fleet, "shared", 2).await;
        let (tally, t) = flood(&addrs, 4, Duration::from_secs(2), Some("k")).await;
        let allowed = 20.0 + 200.0 * t.as_secs_f64();
        let ok = tally.ok() as f64;
        assert!(
            (ok - allowed).abs() <= 0.05 * allowed + 20.0,
            "after Redis {outage}: {ok} admitted in {t:?}, the shared bucket allows {allowed:.0}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_gone_leaves_the_fleet_and_the_rest_share_its_part() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start().await;
    let mut fleet = pods(
        &redis,
        3,
        &[("TCPIE_RATE_PER_SECOND", "300"), ("TCPIE_BURST", "30")],
    );
    wait_mode(&fleet, "shared", 3).await;
    // One stops cleanly (gives back its lease, leaves at once), one is killed (its
    // registration expires).
    fleet[2].signal("TERM");
    fleet[2].wait_exit(Duration::from_secs(10)).await;
    fleet.pop();
    wait_mode(&fleet, "shared", 2).await;
    let _ = fleet.pop();
    wait_mode(&fleet, "shared", 1).await;
}

/// The Lua scripts do exactly what their Rust reference does, on any sequence.
#[tokio::test]
async fn the_scripts_are_the_reference_arithmetic() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start().await;
    let mut con = redis.connection().await.unwrap();
    let lease = redis::Script::new(include_str!("../src/ratelimit/fleet/lease.lua"));
    let take = redis::Script::new(include_str!("../src/ratelimit/fleet/take.lua"));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for (case, (interval, burst)) in [(250.0, 10.0), (3333.3333, 4.0), (1.0, 1000.0), (1e6, 1.0)]
        .into_iter()
        .enumerate()
    {
        let tolerance = interval * burst;
        let (mut tat, mut client_tat) = (0.0, 0.0);
        let mut now = 1.7e15;
        for step in 0..300 {
            now += next((interval * 3.0) as u64 + 2) as f64;
            let (back, want) = (next(3), next(2 * burst as u64 + 2));
            let expected = grant(&mut tat, now, interval, tolerance, back, want);
            let got: Vec<i64> = lease
                .key(format!("{{t{case}}}:global"))
                .key(format!("{{t{case}}}:pods"))
                .key(format!("{{t{case}}}:demand"))
                .arg(interval)
                .arg(tolerance)
                .arg(back)
                .arg(want)
                .arg("pod")
                .arg(60_000)
                .arg(0)
                .arg("")
                .arg(format!("{now:.0}"))
                .invoke_async(&mut con)
                .await
                .unwrap();
            let got_grant = Granted {
                granted: got[0] as u64,
                wait_us: got[1] as u64,
                remaining: got[2] as u64,
            };
            assert_eq!(got_grant, expected, "lease case {case} step {step}");
            let stored: f64 = redis::cmd("GET")
                .arg(format!("{{t{case}}}:global"))
                .query_async::<String>(&mut con)
                .await
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(stored, tat, "lease case {case} step {step}");

            // A client's take: one token, or a lease of several (absent: one).
            let some = 1 + next(burst as u64 / 2 + 1);
            let one = grant(&mut client_tat, now, interval, tolerance, 0, some);
            let mut invocation = take.key(format!("client{case}"));
            invocation
                .arg(interval)
                .arg(tolerance)
                .arg(format!("{now:.0}"));
            if some > 1 || step % 2 == 0 {
                invocation.arg(some);
            }
            let got: Vec<i64> = invocation.invoke_async(&mut con).await.unwrap();
            assert_eq!(got[0] as u64, one.granted, "take case {case} step {step}");
            if one.granted >= 1 {
                assert_eq!(got[1] as u64, one.remaining, "take case {case} step {step}");
            }
            let stored: f64 = redis::cmd("GET")
                .arg(format!("client{case}"))
                .query_async::<Option<String>>(&mut con)
                .await
                .unwrap()
                .map_or(0.0, |v| v.parse().unwrap());
            if one.granted >= 1 {
                assert_eq!(stored, client_tat, "take case {case} step {step}");
            }
        }
    }
}
