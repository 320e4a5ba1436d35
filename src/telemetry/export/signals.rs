//! The span and log exporters' settings, taken from the metrics' (`export.otlp`): over gRPC a
//! channel built like the metrics' one (TLS, timeout) with their metadata and compression;
//! over HTTP their client (TLS), headers and compression. Each signal has its own endpoint.
//! Their exports are polled inside the agent's runtime ([`InRuntime`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};

use super::transport::{self, TransportError};
use crate::config::{Compression, OtlpConfig};

fn compression(otlp: &OtlpConfig) -> Option<opentelemetry_otlp::Compression> {
    match otlp.compression {
        Compression::Gzip => Some(opentelemetry_otlp::Compression::Gzip),
        Compression::None => None,
    }
}

/// Whether `OTEL_EXPORTER_OTLP_<SIGNAL>_<SETTING>` is set: then the exporter reads it, over
/// the metrics' setting.
fn signal_var_set(signal: &str, setting: &str) -> bool {
    std::env::var_os(format!("OTEL_EXPORTER_OTLP_{signal}_{setting}")).is_some()
}

/// A gRPC exporter builder set up like the metrics' transport, to `endpoint`; `signal`
/// (`TRACES`, `LOGS`) names its own variables, which the exporter reads (its headers are
/// added to the metrics' ones, its timeout and compression replace theirs).
pub(crate) fn over_grpc<B: WithTonicConfig + WithExportConfig>(
    builder: B,
    otlp: &OtlpConfig,
    endpoint: &str,
    signal: &str,
) -> Result<B, TransportError> {
    let mut builder = builder
        .with_channel(transport::grpc_channel(otlp, endpoint)?)
        .with_metadata(transport::grpc_metadata(otlp));
    if !signal_var_set(signal, "TIMEOUT") {
        builder = builder.with_timeout(otlp.timeout);
    }
    if let Some(c) = compression(otlp).filter(|_| !signal_var_set(signal, "COMPRESSION")) {
        builder = builder.with_compression(c);
    }
    Ok(builder)
}

/// An HTTP exporter builder set up like the metrics' transport, to `endpoint`; `signal` as
/// for [`over_grpc`].
pub(crate) fn over_http<B: WithHttpConfig + WithExportConfig>(
    builder: B,
    otlp: &OtlpConfig,
    endpoint: &str,
    signal: &str,
) -> Result<B, TransportError> {
    let headers = otlp
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect();
    let mut builder = builder
        .with_http_client(transport::http_client(otlp)?)
        .with_endpoint(endpoint)
        .with_headers(headers);
    if !signal_var_set(signal, "TIMEOUT") {
        builder = builder.with_timeout(otlp.timeout);
    }
    if let Some(c) = compression(otlp).filter(|_| !signal_var_set(signal, "COMPRESSION")) {
        builder = builder.with_compression(c);
    }
    Ok(builder)
}

/// A future polled with the runtime's context entered, so an exporter's I/O and timers work
/// from the SDK batch processor's own thread (which only waits).
pub(crate) struct InRuntime<F> {
    runtime: tokio::runtime::Handle,
    future: Pin<Box<F>>,
}

impl<F: Future> InRuntime<F> {
    pub(crate) fn new(runtime: &tokio::runtime::Handle, future: F) -> Self {
        Self {
            runtime: runtime.clone(),
            future: Box::pin(future),
        }
    }
}

impl<F: Future> Future for InRuntime<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _entered = self.runtime.enter();
        self.future.as_mut().poll(cx)
    }
}
