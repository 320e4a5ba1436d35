//! Sending one OTLP metrics request: over gRPC (tonic, the collector's `MetricsService`) or
//! HTTP/protobuf (a POST of the encoded request), with the configured headers, compression
//! and timeout. Requests run on the agent's tokio runtime; the SDK's reader thread only
//! awaits them.

use std::io::Write as _;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use prost::Message as _;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::events::export::HeaderNotSent;

use crate::config::{Compression, OtlpConfig, OtlpProtocol};

/// Why an export request did not go through.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("the collector answered {0}")]
    Grpc(#[source] tonic::Status),
    #[error("the HTTP request failed")]
    Http(#[source] reqwest::Error),
    #[error("the collector answered HTTP {0}")]
    HttpStatus(reqwest::StatusCode),
    #[error("the export task did not finish")]
    Task(#[source] tokio::task::JoinError),
}

/// Why the transport cannot be set up from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("not a usable gRPC endpoint")]
    Endpoint(#[source] tonic::transport::Error),
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("the exporter must be built inside the tokio runtime")]
    NoRuntime,
}

/// Where and how requests go.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    kind: Kind,
    compression: Compression,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
}

#[derive(Clone, Debug)]
enum Kind {
    Grpc {
        client: MetricsServiceClient<Channel>,
        metadata: tonic::metadata::MetadataMap,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
    },
}

impl Transport {
    /// Builds the transport; inside the tokio runtime, which will run the requests. Nothing
    /// connects yet: the first export does.
    pub(crate) fn new(config: &OtlpConfig) -> Result<Self, TransportError> {
        crate::telemetry::install_crypto_provider();
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TransportError::NoRuntime)?;
        let kind = match config.protocol {
            OtlpProtocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
                    .map_err(TransportError::Endpoint)?
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout);
                if config.endpoint.starts_with("https://") {
                    let tls = ClientTlsConfig::new()
                        .with_native_roots()
                        .with_webpki_roots();
                    endpoint = endpoint.tls_config(tls).map_err(TransportError::Endpoint)?;
                }
                // The collector (grpc-go) answers a gzip request with a gzip response: a
                // client that could not read it would take every accepted export for a
                // failed one.
                let mut client = MetricsServiceClient::new(endpoint.connect_lazy())
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
                if config.compression == Compression::Gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                Kind::Grpc {
                    client,
                    metadata: grpc_metadata(config),
                }
            }
            OtlpProtocol::HttpProtobuf => Kind::Http {
                client: reqwest::Client::builder()
                    .timeout(config.timeout)
                    .build()
                    .map_err(TransportError::HttpClient)?,
                url: config.endpoint.clone(),
                headers: http_headers(config),
            },
        };
        Ok(Self {
            kind,
            compression: config.compression,
            timeout: config.timeout,
            runtime,
        })
    }

    /// Sends one request, on the runtime, bounded by the export timeout.
    pub(crate) async fn send(&self, request: ExportMetricsServiceRequest) -> Result<(), SendError> {
        let this = self.clone();
        self.runtime
            .spawn(async move { this.send_here(request).await })
            .await
            .map_err(SendError::Task)?
    }

    async fn send_here(self, request: ExportMetricsServiceRequest) -> Result<(), SendError> {
        match self.kind {
            Kind::Grpc {
                mut client,
                metadata,
            } => {
                let mut request = tonic::Request::new(request);
                *request.metadata_mut() = metadata;
                request.set_timeout(self.timeout);
                client.export(request).await.map_err(SendError::Grpc)?;
                Ok(())
            }
            Kind::Http {
                client,
                url,
                headers,
            } => {
                let mut body = request.encode_to_vec();
                let mut post = client
                    .post(url)
                    .headers(headers)
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
                if self.compression == Compression::Gzip {
                    body = gzip(&body);
                    post = post.header(reqwest::header::CONTENT_ENCODING, "gzip");
                }
                // reqwest's errors name the URL, credentials and all: drop it.
                let response = post
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| SendError::Http(e.without_url()))?;
                match response.status() {
                    status if status.is_success() => Ok(()),
                    status => Err(SendError::HttpStatus(status)),
                }
            }
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// The configured headers as gRPC metadata; one that is not valid metadata is left out (its
/// name logged, never its value).
fn grpc_metadata(config: &OtlpConfig) -> tonic::metadata::MetadataMap {
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (name, value) in &config.headers {
        let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes());
        let value = tonic::metadata::MetadataValue::try_from(value.expose());
        match (key, value) {
            (Ok(key), Ok(value)) => {
                metadata.insert(key, value);
            }
            _ => HeaderNotSent {
                name,
                as_what: "gRPC metadata",
            }
            .emit(),
        }
    }
    metadata
}

/// The configured headers for HTTP; one that is not a valid header is left out likewise.
fn http_headers(config: &OtlpConfig) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &config.headers {
        let key = reqwest::header::HeaderName::from_bytes(name.as_bytes());
        let value = reqwest::header::HeaderValue::from_str(value.expose());
        match (key, value) {
            (Ok(key), Ok(value)) => {
                headers.insert(key, value);
            }
            _ => HeaderNotSent {
                name,
                as_what: "HTTP header",
            }
            .emit(),
        }
    }
    headers
}
