//! The proxying baselines of `bench/run.sh P`: the least a tokio program can do to pass a
//! keep-alive request on to a backend and its answer back, so that TCPie's cost in upstream
//! mode can be read against what tokio and hyper cost by themselves. Two accept loops on two
//! SO_REUSEPORT listeners; each client connection gets its own backend connection, kept for
//! its life (no pool, no limits, no metrics, no header rewriting).
//!
//! Usage: `bare_proxy PORT BACKEND_PORT hyper|raw`.
//! - `hyper`: the request goes out through hyper's HTTP/1.1 client connection
//!   (`hyper::client::conn::http1`, its connection driven by a task of its own, as TCPie
//!   drives it), the answer's body is read whole, then written to the client.
//! - `raw`: the request head's bytes are written to the backend as they came and the answer
//!   is read until its `Content-Length` is in: no HTTP library at all, the floor.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(8082);
    let backend: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(8081);
    let kind = args.next().unwrap_or_default();
    let hyper = kind != "raw";
    let backend = SocketAddr::from(([127, 0, 0, 1], backend));
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
                let _ = stream.set_nodelay(true);
                if hyper {
                    tokio::spawn(through_hyper(stream, backend));
                } else {
                    tokio::spawn(raw(stream, backend));
                }
            }
        }));
    }
    for l in loops {
        let _ = l.await;
    }
    Ok(())
}

/// The end of the first head in `buf[..len]`, past its blank line.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// The `Content-Length` of a response head.
fn content_length(head: &[u8]) -> usize {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let _ = response.parse(head);
    response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

async fn through_hyper(mut client: TcpStream, backend: SocketAddr) {
    let Ok(upstream) = TcpStream::connect(backend).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let Ok((mut sender, connection)) = http1::handshake(TokioIo::new(upstream)).await else {
        return;
    };
    tokio::spawn(connection);
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    let mut out = Vec::with_capacity(512);
    loop {
        while let Some(end) = head_end(&buf[..len]) {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Request::new(&mut headers);
            if parsed.parse(&buf[..end]).is_err() {
                return;
            }
            let mut request = http::Request::builder()
                .method(parsed.method.unwrap_or("GET"))
                .uri(parsed.path.unwrap_or("/"));
            for h in parsed.headers.iter() {
                request = request.header(h.name, h.value);
            }
            let Ok(request) = request.body(Empty::<Bytes>::new()) else {
                return;
            };
            if sender.ready().await.is_err() {
                return;
            }
            let Ok(response) = sender.send_request(request).await else {
                return;
            };
            let (parts, body) = response.into_parts();
            let Ok(body) = body.collect().await else {
                return;
            };
            let body = body.to_bytes();
            out.clear();
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(parts.status.as_str().as_bytes());
            out.extend_from_slice(b" OK\r\n");
            for (name, value) in &parts.headers {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body);
            if client.write_all(&out).await.is_err() {
                return;
            }
            buf.copy_within(end..len, 0);
            len -= end;
        }
        if len == buf.len() {
            return;
        }
        match client.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
    }
}

async fn raw(mut client: TcpStream, backend: SocketAddr) {
    let Ok(mut upstream) = TcpStream::connect(backend).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    let mut answer = vec![0u8; 4096];
    loop {
        while let Some(end) = head_end(&buf[..len]) {
            if upstream.write_all(&buf[..end]).await.is_err() {
                return;
            }
            let mut got = 0;
            let whole = loop {
                match upstream.read(&mut answer[got..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
                if let Some(at) = head_end(&answer[..got]) {
                    let whole = at + content_length(&answer[..at]);
                    if got >= whole {
                        break whole;
                    }
                }
                if got == answer.len() {
                    return;
                }
            };
            if client.write_all(&answer[..whole]).await.is_err() {
                return;
            }
            buf.copy_within(end..len, 0);
            len -= end;
        }
        if len == buf.len() {
            return;
        }
        match client.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
    }
}
