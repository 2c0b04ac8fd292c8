//! Logs and traces: `tracing-subscriber` filtered by `RUST_LOG`, as text or JSON lines,
//! and OTLP trace export configured by the standard OpenTelemetry variables.
//!
//! This module builds the tracer provider from [`TraceSettings`] (read with the rest of the
//! configuration in `config`) and installs the global subscriber. Per-request spans are made in `server`; their export is `trace_export`.
//!
//! Per-request spans use the target [`REQUEST_TARGET`] at debug level, and only the
//! OpenTelemetry layer listens to that target at debug. With no exporter, the spans are
//! disabled at their call site and cost nothing; the log output is unaffected unless
//! `RUST_LOG` asks for debug. Nothing on the request path logs at info or above.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::LogFormat;
pub use crate::config::{Protocol, SamplerSetting, TraceSettings};
use crate::trace_export::{self, ExportTask};

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
            let (processor, export) = trace_export::start(exporter, traces.batch, dropped);
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

/// One JSON object per line: timestamp, level, target, message, the event's fields, and
/// the trace and span ids of the request being served, when there is one.
///
/// The ids live in the OpenTelemetry layer's span data, reached through the subscriber
/// itself; a weak handle avoids a reference cycle.
struct JsonLines {
    dispatch: Arc<OnceLock<tracing::dispatcher::WeakDispatch>>,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = FieldMap(Map::new());
        event.record(&mut fields);
        let mut fields = fields.0;
        let message = fields
            .remove("message")
            .unwrap_or(Value::String(String::new()));

        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp()));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_string()));
        line.insert("message".into(), message);
        line.insert("fields".into(), Value::Object(fields));
        if let Some(scope) = ctx.event_scope() {
            let dispatch = self.dispatch.get().and_then(|d| d.upgrade());
            let mut names = Vec::new();
            for span in scope {
                names.push(Value::String(span.name().to_string()));
                if line.contains_key("trace_id") {
                    continue;
                }
                let Some(dispatch) = &dispatch else { continue };
                let Some(cx) = tracing_opentelemetry::get_otel_context(&span.id(), dispatch) else {
                    continue;
                };
                let otel_span = cx.span();
                let ids = otel_span.span_context();
                if ids.is_valid() {
                    line.insert("trace_id".into(), Value::String(ids.trace_id().to_string()));
                    line.insert("span_id".into(), Value::String(ids.span_id().to_string()));
                }
            }
            names.reverse();
            line.insert("spans".into(), Value::Array(names));
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::date::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

struct FieldMap(Map<String, Value>);

impl Visit for FieldMap {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
}
