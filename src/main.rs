//! The `tcpie` binary: configuration, logging, bind, run, exit code.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tcpie::telemetry::{self, TraceSettings};
use tcpie::{bind, run, shutdown, Config, Hello, Listeners};

/// Exit code for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code when the server cannot start (a port in use, for example).
const EXIT_START: u8 = 1;

fn main() -> ExitCode {
    let (config, traces) = match (Config::from_env(), TraceSettings::from_env()) {
        (Ok(config), Ok(traces)) => (config, traces),
        (config, traces) => {
            eprintln!("tcpie: configuration error:");
            let errors = config
                .err()
                .into_iter()
                .chain(traces.err())
                .flat_map(|e| e.0);
            for e in errors {
                eprintln!("  {e}");
            }
            eprintln!("tcpie: every variable is listed in README.md (Configuration, Tracing).");
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
    runtime.block_on(serve(config, traces))
}

/// Longest wait for pending spans to reach the collector at shutdown.
const FLUSH_DEADLINE_MAX: Duration = Duration::from_secs(5);

async fn serve(config: Config, traces: TraceSettings) -> ExitCode {
    let registry = prometheus::Registry::new();
    let telemetry = match telemetry::init(config.log_format, &traces, &registry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tcpie: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
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
    if telemetry.tracing() {
        tracing::info!(
            endpoint = traces.endpoint.as_deref().unwrap_or_default(),
            protocol = ?traces.protocol,
            service = %traces.service_name,
            "exporting traces"
        );
    }

    let flush_deadline = config.shutdown_timeout().min(FLUSH_DEADLINE_MAX);
    let code = match run(config, listeners, registry, Hello, signals).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => start_failed(&e.to_string()),
    };
    telemetry.shutdown(flush_deadline).await;
    code
}

fn start_failed(message: &str) -> ExitCode {
    tracing::error!("{message}");
    eprintln!("tcpie: {message}");
    ExitCode::from(EXIT_START)
}
