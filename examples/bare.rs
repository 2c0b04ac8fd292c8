//! The benchmark baseline: the least a tokio server can do for TCPie's answer. It accepts,
//! reads until the end of the request head, writes the same 14-byte response TCPie sends,
//! and closes; no queue, limiter, metrics or tracing. `bench/run.sh` runs it beside TCPie
//! and nginx. Usage: `bare PORT`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\
Connection: close\r\n\r\nHello world !\n";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8081);
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut len = 0;
            loop {
                match stream.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => len += n,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || len == buf.len() {
                    break;
                }
            }
            let _ = stream.write_all(RESPONSE).await;
            let _ = stream.shutdown().await;
        });
    }
}
