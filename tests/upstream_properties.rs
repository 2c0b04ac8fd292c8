//! Upstream mode against an upstream that answers arbitrary bytes (proptest): whatever it
//! sends, TCPie answers the client with a well-formed response or closes, never panics,
//! and gives every permit back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{metric_value, parse_reply};
use proptest::prelude::*;
use tcpie::config::UpstreamSetting;
use tcpie::Listeners;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// An upstream that answers each request with the bytes in `answer`, then closes.
async fn garbage_upstream(answer: Arc<Mutex<Vec<u8>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let bytes = answer.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(&bytes).await;
            });
        }
    });
    port
}

fn responses() -> impl Strategy<Value = Vec<u8>> {
    let status = prop_oneof![
        Just(200u16),
        Just(204),
        Just(304),
        Just(404),
        Just(500),
        100u16..999
    ];
    let framing = prop_oneof![
        Just("Content-Length: 5\r\n".to_string()),
        Just("Content-Length: 99999\r\n".to_string()),
        Just("Content-Length: -1\r\n".to_string()),
        Just("Content-Length: 5\r\nContent-Length: 6\r\n".to_string()),
        Just("Transfer-Encoding: chunked\r\n".to_string()),
        Just("Transfer-Encoding: gzip\r\n".to_string()),
        Just(String::new()),
    ];
    let fields = proptest::collection::vec("[A-Za-z-]{1,12}: [ -~]{0,20}", 0..4);
    let body = proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        // Near-HTTP answers: a status line, fields, a framing, any body.
        (status, framing, fields, body).prop_map(|(s, f, fields, body)| {
            let mut out = format!("HTTP/1.1 {s} X\r\n{f}").into_bytes();
            for field in fields {
                out.extend_from_slice(field.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body);
            out
        }),
        // Anything at all.
        proptest::collection::vec(any::<u8>(), 0..200),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn whatever_the_upstream_answers_the_client_gets_http_or_a_close(answers in proptest::collection::vec(responses(), 1..4)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let answer = Arc::new(Mutex::new(Vec::new()));
            let port = garbage_upstream(answer.clone()).await;
            let config = tcpie::Config {
                upstream: UpstreamSetting::try_from(format!("http://127.0.0.1:{port}")).unwrap(),
                upstream_timeout_ms: 300,
                ..common::config()
            };
            let tcp = tcpie::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let admin = tcpie::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let (addr, admin_addr) = (tcp.local_addr().unwrap(), admin.local_addr().unwrap());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(tcpie::serve(config, Listeners { tcp, admin }, prometheus::Registry::new(), async {
                let _ = stopped.await;
            }));
            for bytes in answers {
                *answer.lock().unwrap() = bytes.clone();
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();
                let mut raw = Vec::new();
                let read = timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await;
                assert!(read.is_ok(), "no close within 5 s for {bytes:?}");
                if !raw.is_empty() {
                    // A response head TCPie wrote, well-formed, whatever followed it.
                    let text = String::from_utf8_lossy(&raw);
                    assert!(text.starts_with("HTTP/1.1 "), "{text:?} for {bytes:?}");
                    assert!(text.contains("\r\n\r\n"), "{text:?}");
                    if let Ok(reply) = parse_reply(raw.clone()) {
                        assert!((100..1000).contains(&reply.status), "{reply:?}");
                    }
                }
            }
            let (_, metrics) = common::admin_get(admin_addr, "/metrics").await;
            assert_eq!(metric_value(&metrics, "tcpie_workers_busy"), Some(0.0), "a permit leaked");
            assert!(!server.is_finished(), "the server stopped");
            let _ = stop.send(());
            server.await.unwrap().unwrap();
        });
    }
}
