//! The slow backend of `bench/overload.sh`: the same fixed capacity TCPie is given there
//! (a few workers, each request taking a set time), but no protection of its own: every
//! connection is accepted and waits, unbounded, for a worker. HAProxy and nginx are put in
//! front of it to protect it; alone, it shows what happens without protection.
//!
//! Usage: `slow_backend PORT WORKERS WORK_MS`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

const KEEP_ALIVE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\
Connection: keep-alive\r\n\r\nHello world !\n";
const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\
Connection: close\r\n\r\nHello world !\n";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or(0))
        .collect();
    let [port, workers, work_ms] = args.as_slice() else {
        eprintln!("usage: slow_backend PORT WORKERS WORK_MS");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], *port as u16))).await?;
    let workers = Arc::new(Semaphore::new(*workers as usize));
    let work = Duration::from_millis(*work_ms);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let workers = workers.clone();
        tokio::spawn(async move {
            // Keep-alive, so a proxy in front can reuse its connections.
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            loop {
                while let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
                    // A client asking to close (the load generator) is answered so, and
                    // closed; a proxy keeps its connection.
                    let close = buf[..end]
                        .to_ascii_lowercase()
                        .windows(17)
                        .any(|w| w == b"connection: close");
                    {
                        let Ok(_worker) = workers.acquire().await else {
                            return;
                        };
                        tokio::time::sleep(work).await;
                    }
                    let answer = if close { CLOSE } else { KEEP_ALIVE };
                    if stream.write_all(answer).await.is_err() || close {
                        return;
                    }
                    buf.copy_within(end + 4..len, 0);
                    len -= end + 4;
                }
                if len == buf.len() {
                    return;
                }
                match stream.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => len += n,
                }
            }
        });
    }
}
