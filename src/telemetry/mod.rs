//! Everything OpenTelemetry: the resource, the meter provider and its OTLP reader, the
//! instruments, and the log subscriber.

pub(crate) mod export;
mod gauges;
pub mod instruments;
pub mod logging;
pub mod logs;
mod meters;
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

/// A metric reader beside the agent's own (tests add an in-memory one), on a provider of its
/// own like every reader (see `meters`).
pub type ExtraReader = Box<dyn FnOnce(MeterProviderBuilder) -> MeterProviderBuilder>;

/// The meter providers, one per reader, and the instruments that record into all of them.
pub struct Telemetry {
    providers: Vec<SdkMeterProvider>,
    /// The provider of the extra reader, when one was given.
    extra: Option<SdkMeterProvider>,
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

/// A final flush's outcome.
type Flushed = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Starts a blocking final flush off the async threads at once; its outcome when awaited.
fn flush(
    shutdown: impl FnOnce() -> opentelemetry_sdk::error::OTelSdkResult + Send + 'static,
) -> impl std::future::Future<Output = Flushed> {
    let task = tokio::task::spawn_blocking(shutdown);
    async move {
        match task.await {
            Ok(result) => result.map_err(Into::into),
            Err(error) => Err(error.into()),
        }
    }
}

impl Telemetry {
    /// Builds a provider for the OTLP reader when export is enabled, one for the Prometheus
    /// endpoint when on, and one for `extra`. Must run inside the tokio runtime.
    pub fn build(
        identity: &Identity,
        export: &ExportConfig,
        prometheus: bool,
        extra: Option<ExtraReader>,
    ) -> Result<Self, BuildError> {
        let otlp = &export.otlp;
        // `histogram: exponential` is the OTLP export's (and a test reader's, standing in for
        // it): `/metrics` keeps explicit buckets, the only histograms the text format has.
        let builder = |exponential: bool| {
            let builder = SdkMeterProvider::builder().with_resource(identity.resource.clone());
            if !exponential || otlp.histogram != HistogramKind::Exponential {
                return builder;
            }
            builder.with_view(|instrument: &opentelemetry_sdk::metrics::Instrument| {
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
            })
        };
        let mut providers = Vec::new();
        let stats = Arc::new(export::stats::ExportStats::default());
        let exemplars = Arc::new(export::exemplars::Exemplars::default());
        if otlp.enabled {
            let exporter =
                export::OtlpExporter::new(otlp, Arc::clone(&stats), Arc::clone(&exemplars))?;
            let reader = PeriodicReader::builder(exporter)
                .with_interval(otlp.interval)
                .build();
            providers.push(builder(true).with_reader(reader).build());
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
            providers.push(builder(false).with_reader(reader).build());
            Some(Scrape {
                registry,
                exemplars: Arc::clone(&exemplars),
            })
        } else {
            None
        };
        let extra = extra.map(|add| add(builder(true)).build());
        providers.extend(extra.clone());
        let mut telemetry = Self::with_stats(providers, &stats, export.messaging_names);
        telemetry.extra = extra;
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
        let mut telemetry = Self::with_stats(
            vec![provider.clone()],
            &std::sync::Arc::default(),
            MessagingNames::Agent,
        );
        telemetry.extra = Some(provider);
        telemetry
    }

    fn with_stats(
        providers: Vec<SdkMeterProvider>,
        stats: &std::sync::Arc<export::stats::ExportStats>,
        names: MessagingNames,
    ) -> Self {
        let scope = opentelemetry::InstrumentationScope::builder(SERVICE_NAME)
            .with_version(SERVICE_VERSION)
            .with_schema_url(names::SCHEMA_URL)
            .build();
        let meters = meters::Meters::new(
            providers
                .iter()
                .map(|p| p.meter_with_scope(scope.clone()))
                .collect(),
        );
        let instruments = Instruments::new(&meters, stats, names);
        Self {
            providers,
            extra: None,
            instruments,
            prometheus: None,
            logs: logs::Logs::default(),
        }
    }

    /// The provider of the extra reader (or of `from_provider`'s).
    pub fn extra_provider(&self) -> Option<&SdkMeterProvider> {
        self.extra.as_ref()
    }

    /// Sends the final export of every signal and stops the readers and processors. The
    /// signals flush side by side, each within [`SHUTDOWN_EXPORT_TIMEOUT`], so a collector that
    /// does not answer delays the exit by that once, not once per signal and reader. Blocking
    /// work runs off the async threads.
    pub async fn shutdown(self) {
        // Every flush starts here, before any is awaited.
        let (traces, logs) = (self.instruments.traces.clone(), self.logs);
        let spans = flush(move || traces.shutdown(SHUTDOWN_EXPORT_TIMEOUT));
        let records = flush(move || logs.shutdown(SHUTDOWN_EXPORT_TIMEOUT));
        let readers: Vec<_> = self
            .providers
            .into_iter()
            .map(|p| flush(move || p.shutdown_with_timeout(SHUTDOWN_EXPORT_TIMEOUT)))
            .collect();
        for (signal, flushed) in [("trace", spans.await), ("log", records.await)] {
            if let Err(error) = flushed {
                FinalExport {
                    signal,
                    error: Some(&*error),
                }
                .emit();
            }
        }
        // Each reader's final collection; the first error is the one reported.
        let mut metrics: Flushed = Ok(());
        for flushed in readers {
            let result = flushed.await;
            if metrics.is_ok() {
                metrics = result;
            }
        }
        FinalExport {
            signal: "metric",
            error: metrics.as_ref().err().map(|e| &**e as _),
        }
        .emit();
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

    /// The brokers whose `kafka.broker.up` point a collection holds.
    fn brokers_up(metrics: &opentelemetry_sdk::metrics::data::ResourceMetrics) -> Vec<String> {
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
        let mut ids = Vec::new();
        for metric in metrics.scope_metrics().flat_map(|s| s.metrics()) {
            if metric.name() != names::name::BROKER_UP {
                continue;
            }
            if let AggregatedMetrics::I64(MetricData::Gauge(g)) = metric.data() {
                for point in g.data_points() {
                    ids.extend(
                        point
                            .attributes()
                            .filter(|kv| kv.key.as_str() == names::attr::BROKER_ID)
                            .map(|kv| kv.value.to_string()),
                    );
                }
            }
        }
        ids
    }

    /// Telemetry with `/metrics` and an in-memory reader beside it, for `export`.
    fn with_scrape_and_reader(
        export: &str,
    ) -> (
        Telemetry,
        opentelemetry_sdk::metrics::InMemoryMetricExporter,
    ) {
        let config = crate::config::from_str(
            "t",
            &format!("clusters: [{{name: a, bootstrap_servers: 'x:1'}}]\nexport: {export}\n"),
            &|_| None,
        )
        .unwrap();
        let exporter = opentelemetry_sdk::metrics::InMemoryMetricExporter::default();
        let reader = PeriodicReader::builder(exporter.clone())
            .with_interval(Duration::from_secs(3600))
            .build();
        let telemetry = Telemetry::build(
            &Identity::resolve(&|_| None),
            &config.export,
            true,
            Some(Box::new(move |b| b.with_reader(reader))),
        )
        .unwrap();
        (telemetry, exporter)
    }

    /// With `histogram: exponential`, the OTLP export (here the test's reader standing in
    /// for it) gets exponential histograms and `/metrics` explicit buckets: the Prometheus
    /// exporter drops exponential histograms, so the scrape lost every latency.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn exponential_histograms_go_to_otlp_and_explicit_buckets_to_the_scrape() {
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
        let (telemetry, exporter) =
            with_scrape_and_reader("{otlp: {enabled: false, histogram: exponential}}");
        let attrs = [KeyValue::new(names::attr::BROKER_ID, "1")];
        telemetry
            .instruments
            .record_produce(Duration::from_millis(3), &attrs);

        let (_, text) = telemetry
            .prometheus
            .as_ref()
            .unwrap()
            .render(false)
            .unwrap();
        assert!(
            text.contains("kafka_heartbeat_produce_duration_seconds_bucket{"),
            "{text}"
        );
        telemetry.extra_provider().unwrap().force_flush().unwrap();
        let metrics = exporter.get_finished_metrics().unwrap().pop().unwrap();
        let produce = metrics
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .find(|m| m.name() == names::name::PRODUCE_DURATION)
            .unwrap();
        assert!(matches!(
            produce.data(),
            AggregatedMetrics::F64(MetricData::ExponentialHistogram(_))
        ));
    }

    /// Two readers' collections: neither holds a series observed by the other's callbacks
    /// and gone since (the SDK runs a provider's callbacks into all of its readers).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_reader_sees_only_what_its_own_collection_observed() {
        let (telemetry, exporter) = with_scrape_and_reader("{otlp: {enabled: false}}");
        let (instruments, scrape) = (
            &telemetry.instruments,
            telemetry.prometheus.clone().unwrap(),
        );
        let provider = telemetry.extra_provider().unwrap();
        let collect = || {
            provider.force_flush().unwrap();
            brokers_up(&exporter.get_finished_metrics().unwrap().pop().unwrap())
        };
        let up = |id: i32| {
            let attrs = vec![KeyValue::new(names::attr::BROKER_ID, id.to_string())];
            instruments.set_broker_up("a", id, attrs, true);
        };
        let scraped = || -> Vec<String> {
            let (_, text) = scrape.render(false).unwrap();
            text.lines()
                .filter(|l| l.starts_with("kafka_broker_up{"))
                .filter_map(|l| l.split("kafka_broker_id=\"").nth(1)?.split('"').next())
                .map(str::to_owned)
                .collect()
        };

        up(1);
        assert_eq!(scraped(), vec!["1"]);
        instruments.remove_broker_up("a", 1);
        up(2);
        assert_eq!(collect(), vec!["2"], "broker 1 left before this collection");

        instruments.remove_broker_up("a", 2);
        up(3);
        assert_eq!(scraped(), vec!["3"], "broker 2 left before this scrape");
    }
}
