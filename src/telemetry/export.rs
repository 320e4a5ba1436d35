//! The OTLP metric exporter: built from config, and wrapped so failures are logged at a sane rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use tracing::warn;

use crate::config::{Compression, OtlpConfig, OtlpProtocol, Temporality};
use crate::error::BuildError;
use crate::events::export::{ExportFailed, ExportRecovered, ExportStarted};

/// While exports keep failing, a reminder is logged at WARN this often (otherwise DEBUG).
const FAILURE_REMINDER_EVERY: Duration = Duration::from_secs(300);

/// Builds the OTLP exporter; must run inside the tokio runtime (the gRPC channel and the
/// HTTP client drive their I/O there, while the SDK's reader thread only awaits results).
pub(crate) fn build_otlp_exporter(
    config: &OtlpConfig,
) -> Result<LoggedExporter<opentelemetry_otlp::MetricExporter>, BuildError> {
    let temporality = match config.temporality {
        Temporality::Cumulative => opentelemetry_sdk::metrics::Temporality::Cumulative,
        Temporality::Delta => opentelemetry_sdk::metrics::Temporality::Delta,
    };
    let build_error = |source| BuildError::OtlpExporter {
        endpoint: config.endpoint.clone(),
        source,
    };
    let exporter = match config.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (name, value) in &config.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes());
                let value = tonic::metadata::MetadataValue::try_from(value.expose());
                if let (Ok(key), Ok(value)) = (key, value) {
                    metadata.insert(key, value);
                } else {
                    // Name the header, never its value.
                    warn!(header = %name, "OTLP header is not valid gRPC metadata; it is not sent.");
                }
            }
            let mut builder = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.timeout)
                .with_metadata(metadata);
            if config.compression == Compression::Gzip {
                builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            builder
                .with_temporality(temporality)
                .build()
                .map_err(build_error)?
        }
        OtlpProtocol::HttpProtobuf => {
            let headers: HashMap<String, String> = config
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect();
            let mut builder = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_http_client(RuntimeHttpClient::new(config.timeout)?)
                .with_endpoint(config.endpoint.clone())
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(config.timeout)
                .with_headers(headers);
            if config.compression == Compression::Gzip {
                builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            builder
                .with_temporality(temporality)
                .build()
                .map_err(build_error)?
        }
    };
    Ok(LoggedExporter::new(exporter, config.endpoint.clone()))
}

/// An HTTP client whose requests run on the agent's tokio runtime.
///
/// The SDK's periodic reader exports from its own thread with a plain executor, where an
/// async client finds no reactor; spawning each request onto the runtime fixes that without
/// a second runtime (which a blocking client would bring along).
#[derive(Debug)]
struct RuntimeHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl RuntimeHttpClient {
    fn new(timeout: Duration) -> Result<Self, BuildError> {
        crate::telemetry::install_crypto_provider();
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| BuildError::OtlpExporter {
                endpoint: String::new(),
                source: opentelemetry_otlp::ExporterBuildError::InternalFailure(
                    "the HTTP exporter must be built inside the tokio runtime".into(),
                ),
            })?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| BuildError::OtlpExporter {
                endpoint: String::new(),
                source: opentelemetry_otlp::ExporterBuildError::InternalFailure(e.to_string()),
            })?;
        Ok(Self { client, runtime })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = task.await??;
        let mut response = http::Response::builder().status(status).body(body)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// Wraps an exporter to log failures once, remind every few minutes, and log the recovery.
///
/// The SDK would otherwise be silent (its internal logs are off) or log every attempt.
#[derive(Debug)]
pub(crate) struct LoggedExporter<E> {
    inner: E,
    endpoint: String,
    state: Mutex<ExportState>,
}

#[derive(Debug, Default)]
struct ExportState {
    succeeded_once: bool,
    /// Set while failing: when the streak began, how many failed, when we last warned.
    failing: Option<(Instant, u64, Instant)>,
}

impl<E> LoggedExporter<E> {
    pub(crate) fn new(inner: E, endpoint: String) -> Self {
        Self {
            inner,
            endpoint,
            state: Mutex::new(ExportState::default()),
        }
    }

    fn record(&self, result: &OTelSdkResult) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        match result {
            Ok(()) => {
                if let Some((since, failures, _)) = state.failing.take() {
                    ExportRecovered {
                        endpoint: &self.endpoint,
                        failures,
                        outage: now - since,
                    }
                    .emit();
                } else if !state.succeeded_once {
                    ExportStarted {
                        endpoint: &self.endpoint,
                    }
                    .emit();
                }
                state.succeeded_once = true;
            }
            Err(error) => {
                let (since, failures, last_warned) = state.failing.get_or_insert((now, 0, now));
                *failures += 1;
                let loud = *failures == 1 || now - *last_warned >= FAILURE_REMINDER_EVERY;
                if loud {
                    *last_warned = now;
                }
                ExportFailed {
                    endpoint: &self.endpoint,
                    error,
                    failures: *failures,
                    failing_for: now - *since,
                    loud,
                }
                .emit();
            }
        }
    }
}

impl<E: PushMetricExporter> PushMetricExporter for LoggedExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.record(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> opentelemetry_sdk::metrics::Temporality {
        self.inner.temporality()
    }
}
