//! Export settings from the standard OpenTelemetry environment variables, so the services are
//! configured the way any OpenTelemetry SDK is.
//!
//! | variable | effect |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | full URL spans are POSTed to, used as is |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL; `/v1/traces` is appended |
//! | `OTEL_SERVICE_NAME` | `service.name` of the spans (default: the binary's name) |
//! | `OTEL_EXPORTER_OTLP_HEADERS` / `..._TRACES_HEADERS` | `key=value,...` added to each POST |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT` / `..._TRACES_TIMEOUT` | ms per POST (default 10000) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` / `..._TRACES_PROTOCOL` | only `http/json` is spoken |
//! | `OTEL_BSP_SCHEDULE_DELAY` | ms between exports (default 5000) |
//! | `OTEL_BSP_MAX_QUEUE_SIZE` | spans waiting for export (default 2048) |
//! | `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | spans per POST (default 512) |
//! | `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none` | export off |
//!
//! Without an endpoint, export is off. Unparsable numbers fall back to the default with a
//! warning rather than stopping the service: tracing is an aid, never a reason not to serve.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// Default POST timeout (the OpenTelemetry specification's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time between exports (the specification's batch span processor default).
pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_secs(5);
/// Default queue bound: about a second of spans at a few hundred checks per second, a few MiB.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
/// Default batch size (the specification's default).
pub const DEFAULT_MAX_BATCH_SIZE: usize = 512;

/// Where and how to export spans.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// Full URL of the collector's traces endpoint, e.g. `http://jaeger:4318/v1/traces`.
    pub endpoint: String,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// Instrumentation scope name (the crate that produced the spans).
    pub scope_name: String,
    /// Extra request headers (collector authentication).
    pub headers: HeaderMap,
    /// Per-POST timeout.
    pub timeout: Duration,
    /// Longest wait before a partial batch is sent.
    pub schedule_delay: Duration,
    /// Spans that may wait for export; more are dropped and counted.
    pub max_queue_size: usize,
    /// Most spans per POST.
    pub max_batch_size: usize,
}

impl ExportConfig {
    /// Settings for `endpoint` with every other field at its default.
    pub fn new(endpoint: impl Into<String>, service_name: impl Into<String>) -> Self {
        let service_name = service_name.into();
        ExportConfig {
            endpoint: endpoint.into(),
            scope_name: service_name.clone(),
            service_name,
            headers: HeaderMap::new(),
            timeout: DEFAULT_TIMEOUT,
            schedule_delay: DEFAULT_SCHEDULE_DELAY,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
        }
    }

    /// Reads the process environment; `None` when export is off. `service` names the binary
    /// (default `service.name` and the scope name).
    pub fn from_env(service: &str) -> Option<Self> {
        Self::from_lookup(service, |k| std::env::var(k).ok())
    }

    /// As [`ExportConfig::from_env`], reading variables through `var` (tests pass a map).
    pub fn from_lookup(service: &str, var: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let get = |k: &str| {
            var(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let traces_or = |specific: &str, general: &str| get(specific).or_else(|| get(general));
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || get("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return None;
        }
        let endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
            get("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        })?;
        let mut config = ExportConfig::new(endpoint, service);
        config.scope_name = service.to_owned();
        if let Some(name) = get("OTEL_SERVICE_NAME") {
            config.service_name = name;
        }
        if let Some(p) = traces_or(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) && p != "http/json"
        {
            tracing::warn!(
                otlp.protocol = %p,
                "only OTLP/HTTP with JSON is spoken; point the endpoint at the collector's HTTP port (4318)"
            );
        }
        if let Some(h) = traces_or(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ) {
            config.headers = parse_headers(&h);
        }
        let millis = |specific: &str, general: &str, default: Duration| {
            traces_or(specific, general).map_or(default, |v| {
                v.parse::<u64>()
                    .map(Duration::from_millis)
                    .unwrap_or_else(|_| {
                        tracing::warn!(
                            variable = specific,
                            "not a number of milliseconds; using the default"
                        );
                        default
                    })
            })
        };
        config.timeout = millis(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            DEFAULT_TIMEOUT,
        );
        config.schedule_delay = millis(
            "OTEL_BSP_SCHEDULE_DELAY",
            "OTEL_BSP_SCHEDULE_DELAY",
            DEFAULT_SCHEDULE_DELAY,
        );
        let count = |name: &str, default: usize| {
            get(name).map_or(default, |v| match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    tracing::warn!(variable = name, "not a positive count; using the default");
                    default
                }
            })
        };
        config.max_queue_size = count("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE);
        config.max_batch_size = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_BATCH_SIZE)
            .min(config.max_queue_size);
        Some(config)
    }
}

/// `key=value,key2=value2` (the specification's format; values may be percent-encoded, which
/// is passed through as is). Malformed entries are skipped with a warning naming only the key.
fn parse_headers(s: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for entry in s.split(',').filter(|e| !e.trim().is_empty()) {
        let parsed = entry.split_once('=').and_then(|(k, v)| {
            Some((
                HeaderName::try_from(k.trim()).ok()?,
                HeaderValue::try_from(v.trim()).ok().map(|mut v| {
                    // Collector credentials: `Debug` of the config prints `Sensitive`.
                    v.set_sensitive(true);
                    v
                })?,
            ))
        });
        match parsed {
            Some((k, v)) => {
                map.insert(k, v);
            }
            None => {
                let key = entry.split('=').next().unwrap_or_default().trim();
                tracing::warn!(header = key, "skipping a malformed OTLP export header");
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Option<ExportConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ExportConfig::from_lookup("authz", |k| map.get(k).cloned())
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert!(config(&[]).is_none());
        assert!(config(&[("OTEL_SERVICE_NAME", "x")]).is_none());
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert!(config(&[ep, ("OTEL_SDK_DISABLED", "true")]).is_none());
        assert!(config(&[ep, ("OTEL_TRACES_EXPORTER", "none")]).is_none());
    }

    #[test]
    fn base_endpoint_gets_the_traces_path_and_the_specific_one_is_used_as_is() {
        let c = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]).unwrap();
        assert_eq!(c.endpoint, "http://c:4318/v1/traces");
        assert_eq!(c.service_name, "authz");
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/custom"),
            ("OTEL_SERVICE_NAME", "authz-eu"),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "http://t:9/custom");
        assert_eq!(c.service_name, "authz-eu");
        assert_eq!(c.scope_name, "authz");
    }

    #[test]
    fn numbers_and_headers() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=s3cret, bad header=x,,x-tenant=a",
            ),
        ])
        .unwrap();
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.schedule_delay, DEFAULT_SCHEDULE_DELAY);
        assert_eq!((c.max_queue_size, c.max_batch_size), (10, 10));
        assert_eq!(c.headers.len(), 2);
        assert_eq!(c.headers["x-tenant"], "a");
    }
}
