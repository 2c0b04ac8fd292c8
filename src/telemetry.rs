//! Logs and traces: `tracing-subscriber` filtered by `RUST_LOG`, as text or JSON lines,
//! and OTLP trace export configured by the standard OpenTelemetry variables.
//!
//! This module reads the `OTEL_*` variables (from any iterator of pairs, so tests need not
//! touch the process environment), builds the tracer provider and installs the global
//! subscriber. Per-request spans are made in `server`; their export is `trace_export`.
//!
//! Per-request spans use the target [`REQUEST_TARGET`] at debug level, and only the
//! OpenTelemetry layer listens to that target at debug. With no exporter, the spans are
//! disabled at their call site and cost nothing; the log output is unaffected unless
//! `RUST_LOG` asks for debug. Nothing on the request path logs at info or above.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::{ConfigError, ConfigErrors, LogFormat};
use crate::trace_export::{self, BatchSettings, ExportTask};

/// The target of per-request spans, which only the trace exporter listens to.
pub const REQUEST_TARGET: &str = "tcpie::request";

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Trace settings from the standard OpenTelemetry variables.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// Where spans go; `None` means no exporter runs and nothing connects anywhere.
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, in order.
    pub resource_attributes: Vec<(String, String)>,
    pub sampler: SamplerSetting,
    pub batch: BatchSettings,
    /// `OTEL_SDK_DISABLED=true`: no spans at all, whatever else is set.
    pub disabled: bool,
}

/// `OTEL_TRACES_SAMPLER` and its argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerSetting {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

impl SamplerSetting {
    fn build(self) -> Sampler {
        match self {
            SamplerSetting::AlwaysOn => Sampler::AlwaysOn,
            SamplerSetting::AlwaysOff => Sampler::AlwaysOff,
            SamplerSetting::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
            SamplerSetting::ParentBasedAlwaysOn => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
            }
            SamplerSetting::ParentBasedAlwaysOff => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOff))
            }
            SamplerSetting::ParentBasedTraceIdRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

impl TraceSettings {
    /// Whether spans are exported at all.
    pub fn enabled(&self) -> bool {
        !self.disabled && self.endpoint.is_some()
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<TraceSettings, ConfigErrors> {
        TraceSettings::from_vars(std::env::vars())
    }

    /// Reads the given variables; anything not `OTEL_*` is ignored, and `OTEL_*` variables
    /// TCPie does not read itself are left to the exporter (headers, compression, ...).
    pub fn from_vars<I, K, V>(vars: I) -> Result<TraceSettings, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| k.starts_with("OTEL_"))
            .collect();
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut errors = Vec::new();
        let mut invalid = |name: &str, value: &str, expected: &str| {
            errors.push(ConfigError::Invalid {
                name: name.to_string(),
                value: value.to_string(),
                expected: expected.to_string(),
            });
        };

        let disabled = match get("OTEL_SDK_DISABLED").map(|v| v.to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => {
                invalid("OTEL_SDK_DISABLED", &v, "true or false");
                false
            }
        };

        let protocol_var = if get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        } else {
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        };
        let protocol = match get(protocol_var).as_deref() {
            None | Some("grpc") => Protocol::Grpc,
            Some("http/protobuf") => Protocol::HttpProtobuf,
            Some(other) => {
                invalid(
                    protocol_var,
                    other,
                    "grpc or http/protobuf (http/json is not supported)",
                );
                Protocol::Grpc
            }
        };

        // The signal-specific endpoint is used as given; the general one gets the
        // signal's path appended for HTTP (gRPC routes by service, not by path).
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(e), _) => Some(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e)),
            (None, Some(e)) => Some((
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                match protocol {
                    Protocol::Grpc => e,
                    Protocol::HttpProtobuf => format!("{}/v1/traces", e.trim_end_matches('/')),
                },
            )),
            (None, None) => None,
        };
        if let Some((name, e)) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                invalid(
                    name,
                    e,
                    "a URL starting with http:// or https://, such as http://localhost:4317",
                );
            }
        }

        let service_name = get("OTEL_SERVICE_NAME").unwrap_or_else(|| "tcpie".to_string());

        let mut resource_attributes = Vec::new();
        if let Some(raw) = get("OTEL_RESOURCE_ATTRIBUTES") {
            for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some((k, v)) if !k.trim().is_empty() => resource_attributes
                        .push((percent_decode(k.trim()), percent_decode(v.trim()))),
                    _ => invalid(
                        "OTEL_RESOURCE_ATTRIBUTES",
                        &raw,
                        "comma-separated key=value pairs, such as deployment.environment=prod,team=edge",
                    ),
                }
            }
        }

        let ratio = |errors: &mut Vec<ConfigError>| -> f64 {
            match get("OTEL_TRACES_SAMPLER_ARG") {
                None => 1.0,
                Some(v) => match v.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => r,
                    _ => {
                        errors.push(ConfigError::Invalid {
                            name: "OTEL_TRACES_SAMPLER_ARG".into(),
                            value: v,
                            expected: "a sampling ratio from 0 to 1".into(),
                        });
                        1.0
                    }
                },
            }
        };
        let sampler = match get("OTEL_TRACES_SAMPLER").as_deref() {
            None | Some("parentbased_always_on") => SamplerSetting::ParentBasedAlwaysOn,
            Some("always_on") => SamplerSetting::AlwaysOn,
            Some("always_off") => SamplerSetting::AlwaysOff,
            Some("parentbased_always_off") => SamplerSetting::ParentBasedAlwaysOff,
            Some("traceidratio") => SamplerSetting::TraceIdRatio(ratio(&mut errors)),
            Some("parentbased_traceidratio") => {
                SamplerSetting::ParentBasedTraceIdRatio(ratio(&mut errors))
            }
            Some(other) => {
                errors.push(ConfigError::Invalid {
                    name: "OTEL_TRACES_SAMPLER".into(),
                    value: other.into(),
                    expected: "always_on, always_off, traceidratio, parentbased_always_on, \
                               parentbased_always_off or parentbased_traceidratio"
                        .into(),
                });
                SamplerSetting::ParentBasedAlwaysOn
            }
        };

        let mut batch = BatchSettings::default();
        let mut number = |name: &str, min: u64, max: u64| -> Option<u64> {
            let v = get(name)?;
            match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    errors.push(ConfigError::Invalid {
                        name: name.into(),
                        value: v,
                        expected: format!("a whole number from {min} to {max}"),
                    });
                    None
                }
            }
        };
        if let Some(n) = number("OTEL_BSP_MAX_QUEUE_SIZE", 1, 1_000_000) {
            batch.max_queue_size = n as usize;
        }
        if let Some(n) = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1, 1_000_000) {
            batch.max_batch_size = n as usize;
        }
        if let Some(n) = number("OTEL_BSP_SCHEDULE_DELAY", 1, 3_600_000) {
            batch.schedule_delay = Duration::from_millis(n);
        }
        let timeout_var = if get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
        } else {
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        };
        if let Some(n) = number(timeout_var, 1, 3_600_000) {
            batch.export_timeout = Duration::from_millis(n);
        }

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(TraceSettings {
            endpoint: endpoint.map(|(_, e)| e),
            protocol,
            service_name,
            resource_attributes,
            sampler,
            batch,
            disabled,
        })
    }

    /// The resource every span carries.
    pub fn resource(&self) -> Resource {
        Resource::builder_empty()
            .with_attributes(
                self.resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .with_attribute(KeyValue::new("service.name", self.service_name.clone()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build()
    }
}

/// `%XX` escapes, as the specification allows in `OTEL_RESOURCE_ATTRIBUTES`.
fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'%', Some(Some(hi)), Some(Some(lo))) = (
            bytes[i],
            bytes.get(i + 1).map(|b| hex(*b)),
            bytes.get(i + 2).map(|b| hex(*b)),
        ) {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

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
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<TraceSettings, ConfigErrors> {
        TraceSettings::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn no_endpoint_means_no_exporter() {
        let s = settings(&[("PATH", "/bin")]).unwrap();
        assert_eq!(s.endpoint, None);
        assert!(!s.enabled());
        assert_eq!(s.service_name, "tcpie");
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.sampler, SamplerSetting::ParentBasedAlwaysOn);
    }

    #[test]
    fn the_general_endpoint_gets_the_signal_path_for_http_only() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]).unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://collector:4317"));
        assert!(s.enabled());
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap();
        assert_eq!(
            s.endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        // The signal-specific endpoint is taken as given, and wins.
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4318/custom"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://b:4318/custom"));
    }

    #[test]
    fn the_sdk_can_be_disabled() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])
        .unwrap();
        assert!(!s.enabled());
    }

    #[test]
    fn resource_carries_service_version_and_attributes() {
        let s = settings(&[
            ("OTEL_SERVICE_NAME", "edge"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod, team=a%2Cb",
            ),
        ])
        .unwrap();
        let resource = s.resource();
        let get = |k: &str| {
            resource
                .get(&opentelemetry::Key::new(k.to_string()))
                .map(|v| v.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("edge"));
        assert_eq!(
            get("service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(get("deployment.environment").as_deref(), Some("prod"));
        assert_eq!(get("team").as_deref(), Some("a,b"));
    }

    #[test]
    fn samplers_and_batching_are_read() {
        let s = settings(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
        ])
        .unwrap();
        assert_eq!(s.sampler, SamplerSetting::ParentBasedTraceIdRatio(0.25));
        assert_eq!(s.batch.schedule_delay, Duration::from_millis(100));
        assert_eq!(s.batch.max_queue_size, 10);
        assert_eq!(s.batch.export_timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("OTEL_SDK_DISABLED", "yes"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ] {
            let e = settings(&[(name, value)]).unwrap_err();
            assert!(e.to_string().contains(name), "{name}: {e}");
        }
        let e = settings(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("OTEL_TRACES_SAMPLER_ARG=\"2\""),
            "{e}"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }
}
