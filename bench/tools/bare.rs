//! The benchmark baseline: the least a tokio server can do for TCPie's answer. Two accept
//! loops on two SO_REUSEPORT listeners (one per core, as the kernel spreads connections
//! between them) accept, read until the end of the request head, write the same 14-byte
//! response TCPie sends, and close; with `keepalive`, they answer request after request on
//! the connection instead. No queue, limiter, metrics or tracing. `bench/run.sh` runs it
//! beside TCPie, nginx and HAProxy. Usage: `bare PORT [keepalive]`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\
Connection: close\r\n\r\nHello world !\n";
const KEEP_ALIVE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\
Connection: keep-alive\r\n\r\nHello world !\n";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(8081);
    let keepalive = args.next().as_deref() == Some("keepalive");
    let mut loops = Vec::new();
    for _ in 0..2 {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseport(true)?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
        let listener = socket.listen(4096)?;
        loops.push(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if keepalive {
                    tokio::spawn(serve_keepalive(stream));
                } else {
                    tokio::spawn(serve_once(stream));
                }
            }
        }));
    }
    for l in loops {
        let _ = l.await;
    }
    Ok(())
}

async fn serve_once(mut stream: TcpStream) {
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
    let _ = stream.write_all(CLOSE).await;
}

async fn serve_keepalive(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        // Answer every complete head in the buffer (pipelining), then read more.
        while let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            if stream.write_all(KEEP_ALIVE).await.is_err() {
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
}
