//! Logs and traces: `tracing-subscriber` filtered by `RUST_LOG`, as text or JSON lines,
//! and OTLP trace export configured by the standard OpenTelemetry variables.
//!
//! This module builds the tracer provider from [`TraceSettings`] (read with the rest of the
//! configuration in `config`) and installs the global subscriber. The parts: the JSON log
//! format (`json_log`), the span of one request (`request_span`, made by the server's
//! exchange), and span export that never slows the request path (`export`).
//!
//! Per-request spans use the target [`REQUEST_TARGET`] at debug level, and only the
//! OpenTelemetry layer listens to that target at debug. With no exporter, the spans are
//! disabled at their call site and cost nothing; the log output is unaffected unless
//! `RUST_LOG` asks for debug. Nothing on the request path logs at info or above.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use crate::config::LogFormat;
pub use crate::config::{Protocol, SamplerSetting, TraceSettings};
use export::ExportTask;
use json_log::JsonLines;

mod export;
mod json_log;
pub(crate) mod request_span;

/// The target of per-request spans, which only the trace exporter listens to.
pub const REQUEST_TARGET: &str = "tcpie::request";

/// What `init` set up; keep it to flush spans at shutdown.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    export: Option<ExportTask>,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("building the OTLP exporter for {endpoint} failed: {source}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("registering tcpie_trace_spans_dropped_total failed: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Installs the global subscriber (logs, and traces when an endpoint is set) and
/// registers `tcpie_trace_spans_dropped_total` in `registry`. Call once, from `main`,
/// inside the runtime.
pub fn init(
    format: LogFormat,
    traces: &TraceSettings,
    registry: &prometheus::Registry,
) -> Result<Telemetry, TelemetryError> {
    let dropped = prometheus::IntCounter::new(
        "tcpie_trace_spans_dropped_total",
        "Spans dropped because the export queue was full or an export failed.",
    )?;
    registry.register(Box::new(dropped.clone()))?;

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let dispatch = Arc::new(OnceLock::new());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines {
                dispatch: dispatch.clone(),
            })
            .with_filter(filter)
            .boxed(),
    };

    let (provider, export, otel) = match (&traces.endpoint, traces.enabled()) {
        (Some(endpoint), true) => {
            let exporter =
                build_exporter(traces, endpoint).map_err(|source| TelemetryError::Exporter {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            let mut exporter = exporter;
            let resource = traces.resource();
            opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
            let (processor, export) = export::start(exporter, traces.batch, dropped);
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_sampler(traces.sampler.build())
                .with_resource(resource)
                .build();
            let tracer = provider.tracer("tcpie");
            // Only the attributes we set: no code location, thread or timing extras.
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                .with_filter(Targets::new().with_target(REQUEST_TARGET, Level::DEBUG));
            (Some(provider), Some(export), Some(layer))
        }
        _ => (None, None, None),
    };

    // An application that installed its own subscriber keeps it.
    let subscriber = tracing_subscriber::registry().with(logs).with(otel);
    let global = tracing::Dispatch::new(subscriber);
    let _ = dispatch.set(global.downgrade());
    let _ = tracing::dispatcher::set_global_default(global);
    Ok(Telemetry { provider, export })
}

fn build_exporter(
    traces: &TraceSettings,
    endpoint: &str,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig;
    let builder = opentelemetry_otlp::SpanExporter::builder();
    // The endpoint is passed in code, so the exporter appends no path: the signal path
    // was added while reading the variables.
    match traces.protocol {
        Protocol::Grpc => builder
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(traces.batch.export_timeout)
            .build(),
        Protocol::HttpProtobuf => builder
            .with_http()
            .with_endpoint(endpoint)
            .with_timeout(traces.batch.export_timeout)
            .build(),
    }
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still queued, within `deadline`.
    pub async fn shutdown(self, deadline: Duration) {
        if let Some(export) = self.export {
            tracing::info!("shutdown: flushing spans");
            export.flush(deadline).await;
        }
        if let Some(provider) = self.provider {
            let _ = provider.shutdown();
        }
    }
}
