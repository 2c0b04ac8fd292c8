//! The `tcpie` binary: configuration, logging, bind, run, exit code.

use std::net::SocketAddr;
use std::process::ExitCode;

use tcpie::{bind, run, shutdown, telemetry, Config, Hello, Listeners};

/// Exit code for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code when the server cannot start (a port in use, for example).
const EXIT_START: u8 = 1;

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("tcpie: configuration error:");
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            eprintln!("tcpie: every variable is listed in README.md under Configuration.");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tcpie: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    telemetry::init_logging(config.log_format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %config.summary(), "starting tcpie");

    let tcp_addr = SocketAddr::new(config.host, config.port);
    let admin_addr = SocketAddr::new(config.host, config.admin_port);
    let listeners = match (bind(tcp_addr), bind(admin_addr)) {
        (Ok(tcp), Ok(admin)) => Listeners { tcp, admin },
        (Err(e), _) => {
            return start_failed(&format!(
                "cannot listen on {tcp_addr} (TCPIE_HOST, TCPIE_PORT): {e}"
            ))
        }
        (_, Err(e)) => {
            return start_failed(&format!(
                "cannot listen on {admin_addr} (TCPIE_HOST, TCPIE_ADMIN_PORT): {e}"
            ))
        }
    };
    let (tcp, admin) = match (listeners.tcp.local_addr(), listeners.admin.local_addr()) {
        (Ok(t), Ok(a)) => (t, a),
        (Err(e), _) | (_, Err(e)) => {
            return start_failed(&format!("cannot read the bound address: {e}"))
        }
    };
    let signals = match shutdown::signals() {
        Ok(s) => s,
        Err(e) => return start_failed(&format!("cannot install signal handlers: {e}")),
    };
    tracing::info!(%tcp, %admin, "listening");

    match run(
        config,
        listeners,
        prometheus::Registry::new(),
        Hello,
        signals,
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => start_failed(&e.to_string()),
    }
}

fn start_failed(message: &str) -> ExitCode {
    tracing::error!("{message}");
    eprintln!("tcpie: {message}");
    ExitCode::from(EXIT_START)
}
