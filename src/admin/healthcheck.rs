//! `tcpie healthcheck`: asks the admin server of a TCPie on this host whether it is alive.
//!
//! Container images without a shell or curl (distroless) run this from `HEALTHCHECK` and
//! compose healthchecks. It speaks just enough HTTP/1.1 to read a status line, with a
//! total deadline, and never panics: any failure is "unhealthy".

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Where a TCPie bound to `host:port` answers on this machine: a wildcard address is
/// reached through loopback.
pub fn local_target(host: IpAddr, port: u16) -> SocketAddr {
    let ip = match host {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, port)
}

/// Requests `path` on `addr`; `Ok` with the status line when the answer is 200.
pub fn check(addr: SocketAddr, path: &str, deadline: Duration) -> Result<String, String> {
    let started = Instant::now();
    let left = |what: &str| {
        deadline
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer from {addr} within {deadline:?} ({what})"))
    };
    let mut stream = TcpStream::connect_timeout(&addr, left("connecting")?)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_write_timeout(Some(left("writing")?))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("cannot send the request to {addr}: {e}"))?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        stream
            .set_read_timeout(Some(left("reading")?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading the answer from {addr} failed: {e}")),
        }
        if answer.windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default().to_string();
    match status_line.split(' ').nth(1) {
        Some("200") => Ok(status_line),
        Some(_) => Err(format!("{addr}{path} answered {status_line:?}")),
        None => Err(format!(
            "{addr}{path} answered no HTTP status: {status_line:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_reached_through_loopback() {
        assert_eq!(
            local_target("0.0.0.0".parse().unwrap(), 9090).to_string(),
            "127.0.0.1:9090"
        );
        assert_eq!(
            local_target("::".parse().unwrap(), 9090).to_string(),
            "[::1]:9090"
        );
        assert_eq!(
            local_target("10.1.2.3".parse().unwrap(), 1).to_string(),
            "10.1.2.3:1"
        );
    }

    #[test]
    fn nothing_listening_is_unhealthy() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = check(
            local_target("0.0.0.0".parse().unwrap(), port),
            "/livez",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
    }

    #[test]
    fn a_silent_server_is_unhealthy_within_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let started = Instant::now();
        let err = check(addr, "/livez", Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(err.contains("failed") || err.contains("no answer"), "{err}");
        drop(listener);
    }
}
