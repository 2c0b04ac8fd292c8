//! Helpers shared by the integration tests: an in-process server on 127.0.0.1:0, a raw
//! HTTP/1.1 client over real sockets, and readers for the admin endpoints.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod process;
pub mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use tcpie::{Config, Handler, Hello, Listeners};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// A configuration for tests: loopback, no rate limit unless a test asks for one.
pub fn config() -> Config {
    Config {
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        admin_port: 0,
        burst: 0,
        ..Config::default()
    }
}

pub async fn start(config: Config) -> TestServer {
    start_with(config, Hello).await
}

pub async fn start_with<H: Handler>(config: Config, handler: H) -> TestServer {
    config.validate().unwrap();
    let tcp = tcpie::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let admin = tcpie::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = tcp.local_addr().unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tcpie::run(
            config,
            Listeners { tcp, admin },
            prometheus::Registry::new(),
            handler,
            async move {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
    });
    TestServer {
        addr,
        admin: admin_addr,
        stop: Some(stop),
        task,
    }
}

impl TestServer {
    /// Starts the graceful shutdown and returns the task to await.
    pub fn stop(&mut self) -> &mut JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        &mut self.task
    }

    pub async fn get(&self, path: &str) -> Reply {
        request(
            self.addr,
            format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap()
    }

    pub async fn admin(&self, path: &str) -> (u16, String) {
        admin_get(self.admin, path).await
    }

    pub async fn probe(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.admin(path).await;
        (status, serde_json::from_str(&body).unwrap())
    }

    /// The value of one sample of `/metrics`, for example `tcpie_requests_total{outcome="processed"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        let (status, text) = self.admin("/metrics").await;
        assert_eq!(status, 200);
        metric_value(&text, sample).unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
    }

    /// Waits until `busy + waiting` reaches `n` (requests admitted and not yet answered).
    pub async fn wait_admitted(&self, n: u64) {
        wait_admitted(self.admin, n).await
    }

    /// Checks that every accepted connection is accounted for once.
    pub async fn assert_conservation(&self) {
        let (_, text) = self.admin("/metrics").await;
        let accepted = metric_value(&text, "tcpie_connections_accepted_total").unwrap();
        let before = metric_value(&text, "tcpie_connections_closed_before_request_total").unwrap();
        let outcomes: f64 = tcpie::internal::Outcome::ALL
            .iter()
            .map(|o| {
                metric_value(
                    &text,
                    &format!("tcpie_requests_total{{outcome=\"{}\"}}", o.as_str()),
                )
                .unwrap()
            })
            .sum();
        assert_eq!(accepted, outcomes + before, "{text}");
    }
}

pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    pub raw: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` on an admin server; the status and the body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let reply = request(
        admin,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    (reply.status, reply.body_text())
}

/// Waits until the server behind `admin` has `n` requests admitted and not yet answered
/// (busy workers plus queue depth, as /livez reports them).
pub async fn wait_admitted(admin: SocketAddr, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = admin_get(admin, "/livez").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let admitted = v["workers_busy"].as_u64().unwrap() + v["queue_depth"].as_u64().unwrap();
        if admitted >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {admitted} of {n} admitted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Samples one metric of a running server until stopped, keeping the largest value.
pub struct MaxWatch {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<f64>,
}

impl MaxWatch {
    pub fn start(admin: SocketAddr, sample: &'static str, every: Duration) -> MaxWatch {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut max = f64::MIN;
            while stopped.try_recv().is_err() {
                let (_, text) = admin_get(admin, "/metrics").await;
                max = max.max(metric_value(&text, sample).unwrap());
                tokio::time::sleep(every).await;
            }
            max
        });
        MaxWatch { stop, task }
    }

    /// Stops sampling and returns the largest value seen.
    pub async fn finish(self) -> f64 {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

/// Starts `n` clients at once, each sending `bytes` on its own connection.
pub fn concurrent(
    addr: SocketAddr,
    bytes: &'static [u8],
    n: usize,
) -> Vec<JoinHandle<std::io::Result<Reply>>> {
    (0..n)
        .map(|_| tokio::spawn(async move { request(addr, bytes).await }))
        .collect()
}

/// Sends `bytes` on a new connection and reads the reply to the end.
pub async fn request(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    read_reply(&mut stream).await
}

/// Reads until the server closes; an error (a reset) is returned as such, and a body
/// shorter than its Content-Length is an error too.
pub async fn read_reply(stream: &mut TcpStream) -> std::io::Result<Reply> {
    let mut raw = Vec::new();
    timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply in 20 s"))??;
    parse_reply(raw)
}

pub fn parse_reply(raw: Vec<u8>) -> std::io::Result<Reply> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    // Found in the bytes, not in a lossy text: a body need not be UTF-8.
    let mut start = 0;
    // Skip interim 100 Continue responses.
    while raw[start..].starts_with(b"HTTP/1.1 100") {
        let end = raw[start..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| bad("truncated 100"))?;
        start += end + 4;
    }
    let end = raw[start..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            bad(&format!(
                "no complete head in {:?}",
                String::from_utf8_lossy(&raw)
            ))
        })?;
    let head = String::from_utf8_lossy(&raw[start..start + end]).into_owned();
    let body = raw[start + end + 4..].to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let reply = Reply {
        status,
        head,
        body,
        raw,
    };
    if let Some(len) = reply.header("content-length") {
        if len.parse::<usize>().ok() != Some(reply.body.len()) {
            return Err(bad(&format!(
                "body of {} bytes, Content-Length {len}",
                reply.body.len()
            )));
        }
    }
    Ok(reply)
}

/// Sends `bytes` on a new connection from the loopback address `from` (127.0.0.2 is
/// another client than 127.0.0.1) and reads the reply to the end.
pub async fn request_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    bytes: &[u8],
) -> std::io::Result<Reply> {
    let socket = match from {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    let mut stream = socket.connect(addr).await?;
    stream.write_all(bytes).await?;
    read_reply(&mut stream).await
}

/// Resident memory of a process, bytes (Linux).
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}
