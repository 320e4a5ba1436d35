//! The span and log exporters' settings, taken from the metrics' (`export.otlp`): over gRPC a
//! channel built like the metrics' one (TLS, timeout) with their metadata and compression;
//! over HTTP their client (TLS), headers and compression. Each signal has its own endpoint.

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};

use super::transport::{self, TransportError};
use crate::config::{Compression, OtlpConfig};

fn compression(otlp: &OtlpConfig) -> Option<opentelemetry_otlp::Compression> {
    match otlp.compression {
        Compression::Gzip => Some(opentelemetry_otlp::Compression::Gzip),
        Compression::None => None,
    }
}

/// A gRPC exporter builder set up like the metrics' transport, to `endpoint`.
pub(crate) fn over_grpc<B: WithTonicConfig + WithExportConfig>(
    builder: B,
    otlp: &OtlpConfig,
    endpoint: &str,
) -> Result<B, TransportError> {
    let mut builder = builder
        .with_channel(transport::grpc_channel(otlp, endpoint)?)
        .with_timeout(otlp.timeout)
        .with_metadata(transport::grpc_metadata(otlp));
    if let Some(c) = compression(otlp) {
        builder = builder.with_compression(c);
    }
    Ok(builder)
}

/// An HTTP exporter builder set up like the metrics' transport, to `endpoint`.
pub(crate) fn over_http<B: WithHttpConfig + WithExportConfig>(
    builder: B,
    otlp: &OtlpConfig,
    endpoint: &str,
) -> Result<B, TransportError> {
    let headers = otlp
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect();
    let mut builder = builder
        .with_http_client(transport::http_client(otlp)?)
        .with_endpoint(endpoint)
        .with_timeout(otlp.timeout)
        .with_headers(headers);
    if let Some(c) = compression(otlp) {
        builder = builder.with_compression(c);
    }
    Ok(builder)
}
