//! Trace export settings: one row per standard `OTEL_*` variable TCPie reads itself, and
//! the [`TraceSettings`] derived from them (which endpoint wins, the signal path, the
//! sampler). Other `OTEL_*` variables (headers, compression, certificates) are left to
//! the exporter; an empty value counts as unset, as the specification says.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::Sampler;
use opentelemetry_sdk::Resource;
use serde::Deserialize;

use super::{read, ConfigErrors, Shown, OTEL_PREFIX};

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl Shown for Protocol {
    fn shown(&self) -> String {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
        .to_string()
    }
}

/// `OTEL_TRACES_SAMPLER`'s names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerName {
    AlwaysOn,
    AlwaysOff,
    Traceidratio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    ParentbasedTraceidratio,
}

impl Shown for SamplerName {
    fn shown(&self) -> String {
        match self {
            SamplerName::AlwaysOn => "always_on",
            SamplerName::AlwaysOff => "always_off",
            SamplerName::Traceidratio => "traceidratio",
            SamplerName::ParentbasedAlwaysOn => "parentbased_always_on",
            SamplerName::ParentbasedAlwaysOff => "parentbased_always_off",
            SamplerName::ParentbasedTraceidratio => "parentbased_traceidratio",
        }
        .to_string()
    }
}

/// A boolean as the OpenTelemetry specification reads it: `true` in any case is true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Flag, D::Error> {
        let text = String::deserialize(d)?;
        match text.to_ascii_lowercase().as_str() {
            "true" => Ok(Flag(true)),
            "false" => Ok(Flag(false)),
            _ => Err(serde::de::Error::custom("expected true or false")),
        }
    }
}

impl Shown for Flag {
    fn shown(&self) -> String {
        self.0.to_string()
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs, `%XX` escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Attributes, D::Error> {
        let raw = String::deserialize(d)?;
        let mut pairs = Vec::new();
        for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    pairs.push((percent_decode(k.trim()), percent_decode(v.trim())));
                }
                _ => return Err(serde::de::Error::custom("expected key=value pairs")),
            }
        }
        Ok(Attributes(pairs))
    }
}

impl Shown for Attributes {
    fn shown(&self) -> String {
        if self.0.is_empty() {
            return "unset".to_string();
        }
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn is_url(endpoint: &Option<String>) -> bool {
    endpoint
        .as_deref()
        .is_none_or(|e| e.starts_with("http://") || e.starts_with("https://"))
}

variables! {
    /// The `OTEL_*` variables as given, before [`TraceSettings`] resolves them.
    pub struct OtelVars;
    table VARS;

    /// Collector base URL; for `http/protobuf`, `/v1/traces` is appended. Unset: no
    /// exporter runs and nothing connects anywhere.
    OTEL_EXPORTER_OTLP_ENDPOINT => endpoint: Option<String> = None;
        expect "a URL starting with http:// or https://, such as http://localhost:4317";
        valid |c| is_url(&c.endpoint);
    /// Traces URL, used as given; wins over `OTEL_EXPORTER_OTLP_ENDPOINT`.
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT => traces_endpoint: Option<String> = None;
        expect "a URL starting with http:// or https://, such as http://localhost:4318/v1/traces";
        valid |c| is_url(&c.traces_endpoint);
    /// The OTLP transport.
    OTEL_EXPORTER_OTLP_PROTOCOL => protocol: Protocol = Protocol::Grpc;
        expect "grpc or http/protobuf (http/json is not supported)";
        valid |_c| true;
    /// The OTLP transport for traces; wins over `OTEL_EXPORTER_OTLP_PROTOCOL`.
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL => traces_protocol: Option<Protocol> = None;
        expect "grpc or http/protobuf (http/json is not supported)";
        valid |_c| true;
    /// `service.name` of the resource.
    OTEL_SERVICE_NAME => service_name: String = "tcpie".to_string();
        expect "a service name";
        valid |_c| true;
    /// Extra resource attributes, `key=value,key2=value2` (`%XX` escapes allowed).
    OTEL_RESOURCE_ATTRIBUTES => resource_attributes: Attributes = Attributes::default();
        expect "comma-separated key=value pairs, such as deployment.environment=prod,team=edge";
        valid |_c| true;
    /// Which spans are sampled.
    OTEL_TRACES_SAMPLER => sampler: SamplerName = SamplerName::ParentbasedAlwaysOn;
        expect "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio";
        valid |_c| true;
    /// The ratio for the `*traceidratio` samplers.
    OTEL_TRACES_SAMPLER_ARG => sampler_arg: f64 = 1.0;
        expect "a sampling ratio from 0 to 1";
        valid |c| (0.0..=1.0).contains(&c.sampler_arg);
    /// `true` turns tracing off whatever else is set (the Rust SDK ignores this
    /// variable; TCPie honours it).
    OTEL_SDK_DISABLED => sdk_disabled: Flag = Flag(false);
        expect "true or false";
        valid |_c| true;
    /// Milliseconds a partial batch waits before export.
    OTEL_BSP_SCHEDULE_DELAY => schedule_delay_ms: u64 = 5000;
        expect "a whole number from 1 to 3600000";
        valid |c| (1..=3_600_000).contains(&c.schedule_delay_ms);
    /// Spans held for export; beyond it, spans are dropped (and counted).
    OTEL_BSP_MAX_QUEUE_SIZE => max_queue_size: usize = 2048;
        expect "a whole number from 1 to 1000000";
        valid |c| (1..=1_000_000).contains(&c.max_queue_size);
    /// Spans per export call.
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE => max_export_batch_size: usize = 512;
        expect "a whole number from 1 to 1000000";
        valid |c| (1..=1_000_000).contains(&c.max_export_batch_size);
    /// Milliseconds one export call may take.
    OTEL_EXPORTER_OTLP_TIMEOUT => timeout_ms: u64 = 10_000;
        expect "a whole number from 1 to 3600000";
        valid |c| (1..=3_600_000).contains(&c.timeout_ms);
    /// Milliseconds one export call of traces may take; wins over
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`.
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT => traces_timeout_ms: Option<u64> = None;
        expect "a whole number from 1 to 3600000";
        valid |c| c.traces_timeout_ms.is_none_or(|t| (1..=3_600_000).contains(&t));
}

/// Batching limits; the defaults are the OpenTelemetry specification's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSettings {
    /// Spans held while waiting for export (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub max_queue_size: usize,
    /// Spans per export call (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub max_batch_size: usize,
    /// Longest wait before a partial batch is sent (`OTEL_BSP_SCHEDULE_DELAY`).
    pub schedule_delay: Duration,
    /// Longest one export call may take (`OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub export_timeout: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_queue_size: 2048,
            max_batch_size: 512,
            schedule_delay: Duration::from_millis(5000),
            export_timeout: Duration::from_millis(10_000),
        }
    }
}

/// Trace settings, resolved from the standard OpenTelemetry variables.
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
    pub fn build(self) -> Sampler {
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

    /// Reads the process environment (the `OTEL_*` variables only).
    pub fn from_env() -> Result<TraceSettings, ConfigErrors> {
        super::group_from_env(OTEL_PREFIX, TraceSettings::from_vars)
    }

    /// Reads the given variables; anything not `OTEL_*` is ignored, and `OTEL_*`
    /// variables TCPie does not read itself are left to the exporter.
    pub fn from_vars<I, K, V>(vars: I) -> Result<TraceSettings, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into().trim().to_string()))
            .filter(|(k, v)| k.starts_with(OTEL_PREFIX) && !v.is_empty())
            .collect();
        let (v, errors) = read(VARS, &vars);
        if !errors.is_empty() {
            return Err(ConfigErrors::new(errors));
        }
        let protocol = v.traces_protocol.unwrap_or(v.protocol);
        // The signal-specific endpoint is used as given; the general one gets the
        // signal's path appended for HTTP (gRPC routes by service, not by path).
        let endpoint = match (v.traces_endpoint, v.endpoint) {
            (Some(e), _) => Some(e),
            (None, Some(e)) => Some(match protocol {
                Protocol::Grpc => e,
                Protocol::HttpProtobuf => format!("{}/v1/traces", e.trim_end_matches('/')),
            }),
            (None, None) => None,
        };
        let ratio = v.sampler_arg;
        let sampler = match v.sampler {
            SamplerName::AlwaysOn => SamplerSetting::AlwaysOn,
            SamplerName::AlwaysOff => SamplerSetting::AlwaysOff,
            SamplerName::Traceidratio => SamplerSetting::TraceIdRatio(ratio),
            SamplerName::ParentbasedAlwaysOn => SamplerSetting::ParentBasedAlwaysOn,
            SamplerName::ParentbasedAlwaysOff => SamplerSetting::ParentBasedAlwaysOff,
            SamplerName::ParentbasedTraceidratio => SamplerSetting::ParentBasedTraceIdRatio(ratio),
        };
        Ok(TraceSettings {
            endpoint,
            protocol,
            service_name: v.service_name,
            resource_attributes: v.resource_attributes.0,
            sampler,
            batch: BatchSettings {
                max_queue_size: v.max_queue_size,
                max_batch_size: v.max_export_batch_size,
                schedule_delay: Duration::from_millis(v.schedule_delay_ms),
                export_timeout: Duration::from_millis(v.traces_timeout_ms.unwrap_or(v.timeout_ms)),
            },
            disabled: v.sdk_disabled.0,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<TraceSettings, ConfigErrors> {
        TraceSettings::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn no_endpoint_means_no_exporter() {
        let s = settings(&[("PATH", "/bin"), ("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap();
        assert_eq!(s.endpoint, None);
        assert!(!s.enabled());
        assert_eq!(s.service_name, "tcpie");
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.sampler, SamplerSetting::ParentBasedAlwaysOn);
        assert_eq!(s.batch, BatchSettings::default());
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
        // So does the signal-specific protocol.
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ])
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://a:4318/v1/traces"));
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
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "70"),
        ])
        .unwrap();
        assert_eq!(s.batch.export_timeout, Duration::from_millis(70));
    }

    #[test]
    fn bad_values_name_the_variable_all_at_once() {
        let bad = [
            ("OTEL_SDK_DISABLED", "yes"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ];
        for (name, value) in bad {
            let e = settings(&[(name, value)]).unwrap_err();
            assert!(e.to_string().contains(name), "{name}: {e}");
        }
        let e = settings(&bad).unwrap_err();
        assert_eq!(e.0.len(), bad.len(), "{e}");
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
}
