//! The span and log exporters' settings, taken from the metrics' (`export.otlp`): over gRPC a
//! channel built like the metrics' one (TLS, timeout) with their metadata and compression;
//! over HTTP their client (TLS), headers and compression. Each signal has its own endpoint.
//! Their exports are polled inside the agent's runtime ([`InRuntime`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Items (spans, log records) handed to an SDK batch processor and not yet through its
/// exporter. Past the bound (the processor's own queue size) new items are dropped and
/// counted, so a collector that hangs never turns into an unbounded queue, and what is lost
/// is said.
#[derive(Debug)]
pub(crate) struct Backlog {
    queued: AtomicUsize,
    bound: usize,
}

impl Backlog {
    pub(crate) fn new(bound: usize) -> Self {
        Self {
            queued: AtomicUsize::new(0),
            bound: bound.max(1),
        }
    }

    /// The bound a batch processor reads from `var` too, else its `default`.
    pub(crate) fn from_env(var: &str, default: usize) -> Self {
        Self::new(
            std::env::var(var)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default),
        )
    }

    /// Whether one more span may be queued (then it counts as queued).
    pub(crate) fn admit(&self) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.bound).then_some(n + 1)
            })
            .is_ok()
    }

    /// `n` spans went through the exporter (delivered or not).
    pub(crate) fn done(&self, n: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
    }
}

/// Takes items out of the backlog when dropped (however an export ends).
pub(crate) struct Leaving<'a>(pub(crate) &'a Backlog, pub(crate) usize);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        self.0.done(self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_admits_up_to_its_bound_and_again_as_spans_go_out() {
        let backlog = Backlog::new(3);
        assert!((0..3).all(|_| backlog.admit()));
        assert!(!backlog.admit(), "full");
        backlog.done(2);
        assert!(backlog.admit() && backlog.admit());
        assert!(!backlog.admit());
        backlog.done(10);
        assert_eq!(
            backlog.queued.load(Ordering::Acquire),
            0,
            "never below zero"
        );
    }
}
