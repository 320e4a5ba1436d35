//! Sending one OTLP metrics request: over gRPC (tonic, the collector's `MetricsService`) or
//! HTTP/protobuf (a POST of the encoded request), with the configured headers, compression,
//! TLS and timeout. Requests run on the agent's tokio runtime; the SDK's reader thread only
//! awaits them. What the receiver answers is read the standard way: a partial success, an
//! error that retrying cannot fix, and how long it asks the sender to wait.

use std::io::Write as _;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message as _;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::ErrorKind;
use crate::events::export::HeaderNotSent;

use crate::config::{Compression, OtlpConfig, OtlpProtocol, OtlpTls};

/// The longest wait a receiver's Retry-After or RetryInfo is honoured for: a bogus hint must
/// not silence the export for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The receiver took the request; `rejected` of its points it refused (partial success),
/// with its message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub rejected: u64,
    pub message: String,
}

impl Accepted {
    fn from_response(response: &ExportMetricsServiceResponse) -> Self {
        response
            .partial_success
            .as_ref()
            .map(|p| Self {
                rejected: u64::try_from(p.rejected_data_points).unwrap_or(0),
                message: p.error_message.clone(),
            })
            .unwrap_or_default()
    }
}

/// Why an export request did not go through.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("the collector answered {0}")]
    Grpc(#[source] tonic::Status),
    #[error("the HTTP request failed")]
    Http(#[source] reqwest::Error),
    #[error("the collector answered HTTP {status}")]
    HttpStatus {
        status: reqwest::StatusCode,
        /// Its `Retry-After`, in seconds.
        retry_after: Option<Duration>,
    },
    #[error("the export task did not finish")]
    Task(#[source] tokio::task::JoinError),
}

impl SendError {
    /// The `error.type` of a failed export.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::Grpc(status) => grpc_kind(status),
            Self::Http(error) if error.is_timeout() => ErrorKind::Timeout,
            Self::Http(error) => match ErrorKind::of(error) {
                ErrorKind::Other if error.is_connect() => ErrorKind::Transport,
                kind => kind,
            },
            Self::HttpStatus { status, .. } => http_kind(status.as_u16()),
            Self::Task(_) => ErrorKind::Other,
        }
    }

    /// Whether sending the same request again cannot succeed (the OTLP specification's
    /// non-retryable answers): it is dropped, not held.
    pub(crate) fn is_permanent(&self) -> bool {
        use tonic::Code;
        match self {
            Self::Grpc(status) => match status.code() {
                Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unavailable
                | Code::DataLoss
                // Not the collector's answer but the client's (a connection that failed).
                | Code::Unknown => false,
                // Retryable only when the receiver says when.
                Code::ResourceExhausted => retry_info(status).is_none(),
                _ => true,
            },
            Self::HttpStatus { status, .. } => !matches!(status.as_u16(), 429 | 502 | 503 | 504),
            Self::Http(_) | Self::Task(_) => false,
        }
    }

    /// How long the receiver asked the sender to wait (`Retry-After`, gRPC `RetryInfo`),
    /// at most [`MAX_RETRY_AFTER`].
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        let asked = match self {
            Self::Grpc(status) => retry_info(status),
            Self::HttpStatus { retry_after, .. } => *retry_after,
            Self::Http(_) | Self::Task(_) => None,
        }?;
        Some(asked.min(MAX_RETRY_AFTER))
    }
}

/// The `google.rpc` messages a gRPC status carries its details in (only what is read here).
mod rpc {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<Duration>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    pub(super) const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";
}

/// The delay of a `google.rpc.RetryInfo` among the status's details, if it has one.
fn retry_info(status: &tonic::Status) -> Option<Duration> {
    let details = rpc::Status::decode(status.details()).ok()?;
    let info = details
        .details
        .iter()
        .find(|any| any.type_url == rpc::RETRY_INFO)?;
    let delay = rpc::RetryInfo::decode(info.value.as_slice())
        .ok()?
        .retry_delay?;
    let seconds = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos).unwrap_or(0);
    Some(Duration::new(seconds, nanos.min(999_999_999)))
}

/// A `Retry-After` header in seconds (the HTTP-date form is not used by OTLP receivers).
fn retry_after_header(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The `error.type` of a gRPC status: what the collector said, or, for a status the client
/// made up from a connection that failed, what the connection failed on.
fn grpc_kind(status: &tonic::Status) -> ErrorKind {
    use tonic::Code;
    match status.code() {
        Code::DeadlineExceeded => ErrorKind::Timeout,
        Code::Unauthenticated => ErrorKind::Auth,
        Code::PermissionDenied => ErrorKind::Authorization,
        // tonic's word for a connection that closed under the request, too.
        Code::Unavailable | Code::Unknown | Code::Cancelled => match ErrorKind::of(status) {
            ErrorKind::Other => ErrorKind::Transport,
            kind => kind,
        },
        Code::InvalidArgument
        | Code::NotFound
        | Code::Unimplemented
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::AlreadyExists => ErrorKind::Protocol,
        _ => ErrorKind::BrokerError,
    }
}

/// The `error.type` of an HTTP status the collector answered with.
fn http_kind(status: u16) -> ErrorKind {
    match status {
        401 => ErrorKind::Auth,
        403 => ErrorKind::Authorization,
        408 | 504 => ErrorKind::Timeout,
        429 | 500..=599 => ErrorKind::BrokerError,
        _ => ErrorKind::Protocol,
    }
}

/// Why the transport cannot be set up from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("not a usable gRPC endpoint")]
    Endpoint(#[source] tonic::transport::Error),
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("cannot read {what} {path}")]
    TlsFile {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not usable")]
    TlsPem {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("the exporter must be built inside the tokio runtime")]
    NoRuntime,
    #[error("cannot build the {signal} exporter: {message}")]
    SignalExporter {
        /// `span` or `log`.
        signal: &'static str,
        message: String,
    },
}

/// A lazily connecting gRPC channel to `endpoint` with the export's timeout and TLS (the
/// system's roots and the configured CA and client certificate); inside the tokio runtime.
pub(crate) fn grpc_channel(config: &OtlpConfig, endpoint: &str) -> Result<Channel, TransportError> {
    let mut channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(TransportError::Endpoint)?
        .timeout(config.timeout)
        .connect_timeout(config.timeout);
    if endpoint.starts_with("https://") {
        let mut tls = ClientTlsConfig::new()
            .with_native_roots()
            .with_webpki_roots();
        let files = TlsFiles::read(&config.tls)?;
        if let Some(ca) = files.ca {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = files.identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        channel = channel.tls_config(tls).map_err(TransportError::Endpoint)?;
    }
    Ok(channel.connect_lazy())
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
                // The collector (grpc-go) answers a gzip request with a gzip response: a
                // client that could not read it would take every accepted export for a
                // failed one.
                let mut client = MetricsServiceClient::new(grpc_channel(config, &config.endpoint)?)
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
                client: http_client(config)?,
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
    pub(crate) async fn send(
        &self,
        request: ExportMetricsServiceRequest,
    ) -> Result<Accepted, SendError> {
        let this = self.clone();
        self.runtime
            .spawn(async move { this.send_here(request).await })
            .await
            .map_err(SendError::Task)?
    }

    async fn send_here(self, request: ExportMetricsServiceRequest) -> Result<Accepted, SendError> {
        match self.kind {
            Kind::Grpc {
                mut client,
                metadata,
            } => {
                let mut request = tonic::Request::new(request);
                *request.metadata_mut() = metadata;
                request.set_timeout(self.timeout);
                let response = client.export(request).await.map_err(SendError::Grpc)?;
                Ok(Accepted::from_response(response.get_ref()))
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
                let status = response.status();
                if !status.is_success() {
                    return Err(SendError::HttpStatus {
                        status,
                        retry_after: retry_after_header(response.headers()),
                    });
                }
                // The body is an ExportMetricsServiceResponse (empty when all was taken); one
                // that does not decode is taken as a full success, as the status says.
                let body = response.bytes().await.unwrap_or_default();
                Ok(ExportMetricsServiceResponse::decode(body)
                    .map(|r| Accepted::from_response(&r))
                    .unwrap_or_default())
            }
        }
    }
}

/// The PEM files of `export.otlp.tls`, read.
struct TlsFiles {
    ca: Option<Vec<u8>>,
    /// Certificate and key.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    fn read(tls: &OtlpTls) -> Result<Self, TransportError> {
        let read = |what: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|source| TransportError::TlsFile {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let ca = tls
            .ca_file
            .as_deref()
            .map(|p| read("the CA file", p))
            .transpose()?;
        let identity = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => Some((
                read("the client certificate", cert)?,
                read("the client key", key)?,
            )),
            _ => None,
        };
        Ok(Self { ca, identity })
    }
}

/// The HTTP client: the export timeout, and for https the configured CA (beside the system's)
/// and client certificate. Certificates that do not parse fail here, at start.
pub(crate) fn http_client(config: &OtlpConfig) -> Result<reqwest::Client, TransportError> {
    let mut builder = reqwest::Client::builder().timeout(config.timeout);
    if config.endpoint.starts_with("https://") {
        let files = TlsFiles::read(&config.tls)?;
        if let (Some(ca), Some(path)) = (files.ca, &config.tls.ca_file) {
            let certs = reqwest::Certificate::from_pem_bundle(&ca).map_err(|source| {
                TransportError::TlsPem {
                    what: "the CA file",
                    path: path.clone(),
                    source,
                }
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        if let (Some((cert, key)), Some(path)) = (files.identity, &config.tls.cert_file) {
            let identity =
                reqwest::Identity::from_pem(&[cert, key].concat()).map_err(|source| {
                    TransportError::TlsPem {
                        what: "the client certificate or its key",
                        path: path.clone(),
                        source,
                    }
                })?;
            builder = builder.identity(identity);
        }
    }
    builder.build().map_err(TransportError::HttpClient)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// The configured headers as gRPC metadata; one that is not valid metadata is left out (its
/// name logged, never its value).
pub(crate) fn grpc_metadata(config: &OtlpConfig) -> tonic::metadata::MetadataMap {
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
