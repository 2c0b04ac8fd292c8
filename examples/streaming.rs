//! A handler that streams both ways: it reads an upload as it arrives and answers with
//! the upload upper-cased, piece by piece, never holding the body whole.
//!
//! ```sh
//! TCPIE_PORT=8080 TCPIE_ADMIN_PORT=9090 cargo run --example streaming
//! curl -s -T /etc/services localhost:8080/shout | head -3
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::StreamBody;
use tcpie::{Config, Handler, Listeners, Request, Response, ResponseStream, StreamError};

/// Answers every request with its own body in capitals.
struct Shout;

impl Handler for Shout {
    /// Bodies up to `TCPIE_MAX_BODY_BYTES` come to `handle` as they arrive.
    fn streams_body(&self) -> bool {
        true
    }

    async fn handle(&self, request: &Request) -> Response {
        let Some(body) = request.take_body() else {
            return Response::text(500, "no body\n");
        };
        let length = request.body_length();
        let pieces = futures_util::stream::unfold(body, |mut body| async move {
            let piece = body.chunk().await?;
            let frame = piece
                .map(|data| http_body::Frame::data(Bytes::from(data.to_ascii_uppercase())))
                .map_err(|e| -> StreamError { e.into() });
            Some((frame, body))
        });
        Response::streaming(
            200,
            ResponseStream {
                length,
                body: Box::pin(StreamBody::new(pieces)),
            },
        )
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("configuration error:\n{errors}");
            return ExitCode::from(64);
        }
    };
    let bind = |port| tcpie::bind(SocketAddr::new(config.host, port));
    let (Ok(tcp), Ok(admin)) = (bind(config.port), bind(config.admin_port)) else {
        eprintln!("cannot listen on the ports of TCPIE_PORT and TCPIE_ADMIN_PORT");
        return ExitCode::FAILURE;
    };
    let Ok(stop) = tcpie::signals::install() else {
        eprintln!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let registry = prometheus::Registry::new();
    match tcpie::run(config, Listeners { tcp, admin }, registry, Shout, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
