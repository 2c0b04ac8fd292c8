//! The JSON log format (`TCPIE_LOG_FORMAT=json`): one object a line, with the trace and
//! span ids of the request a line belongs to, so logs and traces can be joined.

use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// One JSON object per line: timestamp, level, target, message, the event's fields, and
/// the trace and span ids of the request being served, when there is one.
///
/// The ids live in the OpenTelemetry layer's span data, reached through the subscriber
/// itself; a weak handle avoids a reference cycle.
pub(super) struct JsonLines {
    pub dispatch: Arc<OnceLock<tracing::dispatcher::WeakDispatch>>,
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
    let (y, m, d) = crate::http::date::civil_from_days(days);
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
