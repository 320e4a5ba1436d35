//! Everything OpenTelemetry: the resource, the meter provider and its OTLP reader, the
//! instruments, and the log subscriber.

pub(crate) mod export;
mod gauges;
pub mod instruments;
pub mod logging;
pub mod logs;
mod names;
pub(crate) mod openmetrics;
pub mod traces;

use std::sync::Arc;
use std::time::Duration;

use crate::events::export::{ExportConfigured, FinalExport};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{
    Aggregation, InstrumentKind, MeterProviderBuilder, PeriodicReader, SdkMeterProvider, Stream,
};

pub use export::TransportError;
pub use instruments::{ClusterAttributes, Instruments, SkipReason};

use crate::config::{ExportConfig, HistogramKind, MessagingNames};
use crate::error::BuildError;

pub const SERVICE_NAME: &str = "cc-heartbeat";
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the agent was built from (build.rs), or `unknown`.
pub const VCS_REVISION: &str = env!("CC_HEARTBEAT_VCS_REVISION");

/// Who this agent is: exported as the resource, and written into every heartbeat.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `service.instance.id`: from `OTEL_RESOURCE_ATTRIBUTES`, else a fresh UUID.
    pub instance_id: String,
    pub resource: Resource,
}

impl Identity {
    /// Resolves the resource from the process environment.
    pub fn from_env() -> Self {
        Self::resolve(&|name| std::env::var(name).ok())
    }

    /// Resolves the resource: `OTEL_SERVICE_NAME` over `OTEL_RESOURCE_ATTRIBUTES` over defaults.
    pub fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut attributes: Vec<(String, String)> = env("OTEL_RESOURCE_ATTRIBUTES")
            .map(|text| parse_resource_attributes(&text))
            .unwrap_or_default();
        let mut take = |key: &str| {
            attributes
                .iter()
                .position(|(k, _)| k == key)
                .map(|i| attributes.remove(i).1)
        };
        let service_name = env("OTEL_SERVICE_NAME")
            .filter(|s| !s.trim().is_empty())
            .or_else(|| take("service.name"))
            .unwrap_or_else(|| SERVICE_NAME.to_owned());
        let instance_id =
            take("service.instance.id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let version = take("service.version").unwrap_or_else(|| SERVICE_VERSION.to_owned());
        let mut builder = Resource::builder_empty()
            .with_detector(Box::new(
                opentelemetry_sdk::resource::TelemetryResourceDetector,
            ))
            .with_attributes(attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)))
            .with_attribute(KeyValue::new("service.name", service_name))
            .with_attribute(KeyValue::new("service.version", version))
            .with_attribute(KeyValue::new("service.instance.id", instance_id.clone()));
        builder = builder.with_attribute(KeyValue::new("host.name", hostname()));
        Self {
            instance_id,
            resource: builder.build(),
        }
    }

    /// The agent's zone (`agent.zone`) as the resource's `cloud.availability_zone`, over
    /// any that `OTEL_RESOURCE_ATTRIBUTES` gave.
    #[must_use]
    pub fn with_zone(mut self, zone: Option<&str>) -> Self {
        if let Some(zone) = zone {
            self.resource = Resource::builder_empty()
                .with_attributes(
                    self.resource
                        .iter()
                        .filter(|(k, _)| k.as_str() != CLOUD_AVAILABILITY_ZONE)
                        .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
                )
                .with_attribute(KeyValue::new(CLOUD_AVAILABILITY_ZONE, zone.to_owned()))
                .build();
        }
        self
    }
}

/// The resource attribute of the agent's zone.
const CLOUD_AVAILABILITY_ZONE: &str = "cloud.availability_zone";

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Parses `key=value,key2=value2` with percent-encoded values, skipping malformed pairs.
fn parse_resource_attributes(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| {
                (
                    k.to_owned(),
                    percent_encoding::percent_decode_str(v.trim())
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            })
        })
        .collect()
}

/// Installs ring as the process's TLS crypto provider (once; later calls are no-ops).
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The meter provider and the instruments built from it.
pub struct Telemetry {
    provider: SdkMeterProvider,
    pub instruments: Instruments,
    /// Registry behind `/metrics`, when the Prometheus endpoint is on.
    pub prometheus: Option<Scrape>,
    /// The OTLP log pipeline, when on.
    logs: logs::Logs,
}

/// The spans of a one-shot `check`, when the config exports traces: only what failed or was
/// slow is kept (healthy rounds are not sampled), so the report can name each failure's
/// trace and the backend has it.
pub struct CheckTraces {
    pub traces: traces::Traces,
    stats: Arc<export::stats::ExportStats>,
    endpoint: String,
}

/// Whether a check's spans reached the traces endpoint.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TracesSent {
    /// The traces endpoint (credentials redacted).
    pub endpoint: String,
    /// Requests delivered, and failed (with their `error.type`).
    pub delivered: u64,
    pub failed: Vec<String>,
}

impl CheckTraces {
    /// `None` when traces are off in `export`. Must run inside the tokio runtime.
    pub fn build(identity: &Identity, export: &ExportConfig) -> Result<Option<Self>, BuildError> {
        if !export.traces.enabled {
            return Ok(None);
        }
        let mut export = export.clone();
        export.traces.sample_ratio = 0.0;
        let stats = Arc::new(export::stats::ExportStats::default());
        let traces = traces::Traces::build(
            &export,
            &identity.resource,
            Arc::clone(&stats),
            Arc::default(),
        )
        .map_err(|source| BuildError::OtlpExporter {
            endpoint: crate::config::redact_url(&export.traces.endpoint),
            source,
        })?;
        Ok(Some(Self {
            traces,
            stats,
            endpoint: crate::config::redact_url(&export.traces.endpoint),
        }))
    }

    /// Sends what was kept (bounded by the shutdown timeout) and says how that went.
    pub async fn finish(self) -> TracesSent {
        let traces = self.traces.clone();
        let flushed =
            tokio::task::spawn_blocking(move || traces.shutdown(SHUTDOWN_EXPORT_TIMEOUT)).await;
        let mut sent = TracesSent {
            endpoint: self.endpoint,
            delivered: 0,
            failed: Vec::new(),
        };
        for (signal, error, count) in self.stats.batches() {
            if signal != export::stats::Signal::Traces {
                continue;
            }
            match error {
                None => sent.delivered += count,
                Some(kind) => sent.failed.extend((0..count).map(|_| kind.to_owned())),
            }
        }
        if let Ok(Err(error)) = flushed {
            sent.failed.push(format!("not flushed: {error}"));
        }
        sent
    }
}

/// What `/metrics` serves: the Prometheus registry, with the kept spans' exemplars for
/// scrapers that ask for OpenMetrics.
#[derive(Clone)]
pub struct Scrape {
    registry: prometheus::Registry,
    exemplars: Arc<export::exemplars::Exemplars>,
}

impl Scrape {
    /// The exposition and its content type: OpenMetrics (with exemplars) when `openmetrics`,
    /// else the Prometheus text format.
    pub fn render(&self, openmetrics: bool) -> Result<(&'static str, String), String> {
        let families = self.registry.gather();
        if openmetrics {
            let exemplars = self.exemplars.for_scrape();
            return Ok((
                openmetrics::CONTENT_TYPE,
                openmetrics::encode(&families, &exemplars),
            ));
        }
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .map(|text| (prometheus::TEXT_FORMAT, text))
            .map_err(|e| e.to_string())
    }
}

/// How long shutdown waits for the final export.
const SHUTDOWN_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

impl Telemetry {
    /// Builds the provider with the OTLP reader when export is enabled; `configure` may add
    /// readers (tests, the Prometheus endpoint). Must run inside the tokio runtime.
    pub fn build(
        identity: &Identity,
        export: &ExportConfig,
        prometheus: bool,
        configure: impl FnOnce(MeterProviderBuilder) -> MeterProviderBuilder,
    ) -> Result<Self, BuildError> {
        let otlp = &export.otlp;
        let mut builder = SdkMeterProvider::builder().with_resource(identity.resource.clone());
        if otlp.histogram == HistogramKind::Exponential {
            builder = builder.with_view(|instrument: &opentelemetry_sdk::metrics::Instrument| {
                (instrument.kind() == InstrumentKind::Histogram).then(|| {
                    Stream::builder()
                        .with_aggregation(Aggregation::Base2ExponentialHistogram {
                            max_size: 160,
                            max_scale: 20,
                            record_min_max: true,
                        })
                        .build()
                        .ok()
                })?
            });
        }
        let stats = Arc::new(export::stats::ExportStats::default());
        let exemplars = Arc::new(export::exemplars::Exemplars::default());
        if otlp.enabled {
            let exporter =
                export::OtlpExporter::new(otlp, Arc::clone(&stats), Arc::clone(&exemplars))?;
            let reader = PeriodicReader::builder(exporter)
                .with_interval(otlp.interval)
                .build();
            builder = builder.with_reader(reader);
            ExportConfigured { otlp: Some(otlp) }.emit();
        } else {
            ExportConfigured { otlp: None }.emit();
        }
        let registry = if prometheus {
            let registry = prometheus::Registry::new();
            let reader = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .build()
                .map_err(BuildError::Prometheus)?;
            builder = builder.with_reader(reader);
            Some(Scrape {
                registry,
                exemplars: Arc::clone(&exemplars),
            })
        } else {
            None
        };
        let mut telemetry =
            Self::with_stats(configure(builder).build(), &stats, export.messaging_names);
        telemetry.prometheus = registry;
        telemetry.instruments.traces =
            traces::Traces::build(export, &identity.resource, Arc::clone(&stats), exemplars)
                .map_err(|source| BuildError::OtlpExporter {
                    endpoint: crate::config::redact_url(&export.traces.endpoint),
                    source,
                })?;
        telemetry.logs =
            logs::Logs::build(export, &identity.resource, stats).map_err(|source| {
                BuildError::OtlpExporter {
                    endpoint: crate::config::redact_url(&export.logs.endpoint),
                    source,
                }
            })?;
        Ok(telemetry)
    }

    /// Wraps an existing provider (tests build one with an in-memory reader).
    pub fn from_provider(provider: SdkMeterProvider) -> Self {
        Self::with_stats(provider, &std::sync::Arc::default(), MessagingNames::Agent)
    }

    fn with_stats(
        provider: SdkMeterProvider,
        stats: &std::sync::Arc<export::stats::ExportStats>,
        names: MessagingNames,
    ) -> Self {
        let meter = provider.meter_with_scope(
            opentelemetry::InstrumentationScope::builder(SERVICE_NAME)
                .with_version(SERVICE_VERSION)
                .with_schema_url(names::SCHEMA_URL)
                .build(),
        );
        let instruments = Instruments::new(&meter, stats, names);
        Self {
            provider,
            instruments,
            prometheus: None,
            logs: logs::Logs::default(),
        }
    }

    pub fn provider(&self) -> &SdkMeterProvider {
        &self.provider
    }

    /// Sends the final export and stops the reader, and sends the spans still queued;
    /// blocking work runs off the async threads.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let traces = self.instruments.traces.clone();
        let logs = self.logs;
        let result = tokio::task::spawn_blocking(move || {
            // Spans and log records first: they are already made, while the final collection
            // makes points.
            for result in [
                traces.shutdown(SHUTDOWN_EXPORT_TIMEOUT),
                logs.shutdown(SHUTDOWN_EXPORT_TIMEOUT),
            ] {
                if let Err(error) = result {
                    FinalExport {
                        error: Some(&error),
                    }
                    .emit();
                }
            }
            provider.shutdown_with_timeout(SHUTDOWN_EXPORT_TIMEOUT)
        })
        .await;
        match result {
            Ok(Ok(())) => FinalExport { error: None }.emit(),
            Ok(Err(error)) => FinalExport {
                error: Some(&error),
            }
            .emit(),
            Err(error) => FinalExport {
                error: Some(&error),
            }
            .emit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(identity: &Identity, key: &'static str) -> Option<String> {
        identity
            .resource
            .get(&opentelemetry::Key::from_static_str(key))
            .map(|v| v.to_string())
    }

    #[test]
    fn resource_defaults_name_version_and_a_fresh_instance_id() {
        let a = Identity::resolve(&|_| None);
        let b = Identity::resolve(&|_| None);
        assert_eq!(get(&a, "service.name").as_deref(), Some("cc-heartbeat"));
        assert_eq!(get(&a, "service.version").as_deref(), Some(SERVICE_VERSION));
        assert_ne!(a.instance_id, b.instance_id);
        assert_eq!(get(&a, "service.instance.id"), Some(a.instance_id.clone()));
    }

    #[test]
    fn the_agents_zone_is_the_resources_availability_zone() {
        let env = |name: &str| {
            (name == "OTEL_RESOURCE_ATTRIBUTES")
                .then(|| "cloud.availability_zone=from-env,k8s.node.name=n1".to_owned())
        };
        let id = Identity::resolve(&env).with_zone(Some("us-east-1a"));
        assert_eq!(
            get(&id, "cloud.availability_zone").as_deref(),
            Some("us-east-1a")
        );
        assert_eq!(
            get(&id, "k8s.node.name").as_deref(),
            Some("n1"),
            "the rest kept"
        );
        let id = Identity::resolve(&env).with_zone(None);
        assert_eq!(
            get(&id, "cloud.availability_zone").as_deref(),
            Some("from-env")
        );
    }

    #[test]
    fn resource_honours_otel_variables() {
        let env = |name: &str| match name {
            "OTEL_RESOURCE_ATTRIBUTES" => Some(
                "service.instance.id=node-7,k8s.node.name=worker%201,service.name=ignored".into(),
            ),
            "OTEL_SERVICE_NAME" => Some("heartbeat-east".into()),
            _ => None,
        };
        let id = Identity::resolve(&env);
        assert_eq!(id.instance_id, "node-7");
        assert_eq!(get(&id, "service.name").as_deref(), Some("heartbeat-east"));
        assert_eq!(get(&id, "k8s.node.name").as_deref(), Some("worker 1"));
    }
}
