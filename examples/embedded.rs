//! Embedding TCPie: your own handler behind its admission control, configured by the same
//! `TCPIE_*` variables as the binary.
//!
//! ```sh
//! TCPIE_PORT=8080 TCPIE_ADMIN_PORT=9090 cargo run --example embedded
//! curl -i 'localhost:8080/greet?name=ada'       # 200 hello, ada
//! curl -i -H 'Accept-Language: fr' localhost:8080/greet
//! curl -i localhost:8080/elsewhere              # 404
//! ```
//!
//! Admission (the token buckets, the permits and the queue), deadlines, metrics and probes
//! on the admin port, and the graceful stop on SIGTERM are TCPie's; the handler only
//! answers.

use std::net::SocketAddr;
use std::process::ExitCode;

use tcpie::{Config, Handler, Listeners, Request, Response};

/// Greets whoever asks on `/greet`, in English or French.
struct Greeter;

impl Handler for Greeter {
    async fn handle(&self, request: &Request) -> Response {
        let (path, query) = request
            .path()
            .split_once('?')
            .unwrap_or((request.path(), ""));
        if path != "/greet" {
            return Response::text(404, "try /greet?name=you\n");
        }
        let name = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("name="))
            .filter(|name| !name.is_empty())
            .unwrap_or("stranger");
        let french = request
            .header("accept-language")
            .is_some_and(|l| l.starts_with(b"fr"));
        let greeting = if french { "bonjour" } else { "hello" };
        Response::text(200, format!("{greeting}, {name}\n"))
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
    let listeners = match (bind(config.port), bind(config.admin_port)) {
        (Ok(tcp), Ok(admin)) => Listeners { tcp, admin },
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = match tcpie::signals::install() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let registry = prometheus::Registry::new();
    match tcpie::run(config, listeners, registry, Greeter, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
