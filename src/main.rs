//! The `tcpie` binary: configuration, logging, bind, run, exit code.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tcpie::config::TraceSettings;
use tcpie::telemetry;
use tcpie::{bind, descriptors, signals, Config, Listeners};

/// Exit code for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code when the server cannot start (a port in use, for example).
const EXIT_START: u8 = 1;

const USAGE: &str = "\
usage: tcpie                     run the server, configured by TCPIE_* and OTEL_* variables
       tcpie healthcheck [PATH]  exit 0 if the local admin server answers 200 on PATH
                                 (default /livez), 1 otherwise
       tcpie --version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {}
        ["healthcheck"] => return healthcheck("/livez"),
        ["healthcheck", path] if path.starts_with('/') => return healthcheck(path),
        ["--version" | "-V"] => {
            println!("tcpie {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        ["--help" | "-h"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("tcpie: unexpected arguments {args:?}\n{USAGE}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    // Both groups of variables are read together, so every problem is reported at once.
    let (config, traces) = match tcpie::config::from_env() {
        Ok(mut settings) => {
            // The fleet's limits are named after the service unless told otherwise.
            if settings.server.rate_limit_name.is_empty() {
                settings.server.rate_limit_name = settings.traces.service_name.clone();
            }
            (settings.server, settings.traces)
        }
        Err(errors) => {
            eprintln!("tcpie: configuration error:");
            for e in errors.0 {
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
    runtime.block_on(start(config, traces))
}

/// Longest wait for pending spans to reach the collector at shutdown.
const FLUSH_DEADLINE_MAX: Duration = Duration::from_secs(5);

async fn start(config: Config, traces: TraceSettings) -> ExitCode {
    let registry = prometheus::Registry::new();
    let telemetry = match telemetry::init(config.log_format, &traces, &registry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tcpie: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %config.summary(), "starting tcpie");
    let config = share_descriptors(config);

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
    let signals = match signals::install() {
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
    let code = match tcpie::serve(config, listeners, registry, signals).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => start_failed(&e.to_string()),
    };
    telemetry.shutdown(flush_deadline).await;
    code
}

/// Raises the open-file limit and holds the TCP port to what it leaves (see
/// `tcpie::descriptors`), saying so when the configuration does not fit.
fn share_descriptors(mut config: Config) -> Config {
    match descriptors::raise() {
        Ok(files) => {
            let budget = descriptors::Budget::new(&config, files);
            if budget.fits() {
                tracing::info!(raised_from = ?files.raised_from, "{budget}");
            } else {
                tracing::warn!(raised_from = ?files.raised_from, "{budget}");
            }
            config.max_connections = budget.tcp;
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
    config
}

/// Docker reads 0 as healthy and 1 as unhealthy; every failure here is 1.
fn healthcheck(path: &str) -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tcpie healthcheck: configuration error: {e}");
            return ExitCode::from(1);
        }
    };
    let target = tcpie::healthcheck::local_target(config.host, config.admin_port);
    match tcpie::healthcheck::check(target, path, Duration::from_secs(3)) {
        Ok(status) => {
            println!("healthy: {target}{path} answered {status:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::from(1)
        }
    }
}

fn start_failed(message: &str) -> ExitCode {
    tracing::error!("{message}");
    eprintln!("tcpie: {message}");
    ExitCode::from(EXIT_START)
}
