//! The OTLP metric exporter: each collection becomes one OTLP request, sent to the collector,
//! with a collector that is away handled so nothing is lost.
//!
//! With cumulative temporality the latest request carries the whole run's totals, so after an
//! outage the next one that goes through catches up. With delta temporality every request
//! matters: a request that fails is kept (up to `export.otlp.delta_buffer` of them) and sent,
//! in order, once the collector answers again; what the buffer had to drop is counted and
//! logged. Delta requests also carry a 0 for every counter series seen before and idle now,
//! so a series at 0 stays a series rather than a gap.
//!
//! Failures are logged once, then reminded of every few minutes, and the recovery says what
//! was delivered and what was dropped.

mod series;
mod transport;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

use crate::config::{OtlpConfig, Temporality};
use crate::error::BuildError;
use crate::events::export::{ExportBufferFull, ExportFailed, ExportRecovered, ExportStarted};
use series::KeepAlive;
use transport::Transport;

pub use transport::TransportError;

/// While exports keep failing, a reminder is logged at WARN this often (otherwise DEBUG).
const FAILURE_REMINDER_EVERY: Duration = Duration::from_secs(300);
/// Held delta requests sent per export after an outage: the backlog drains over a few
/// intervals rather than in one long burst.
const CATCH_UP_PER_EXPORT: usize = 60;

/// The OTLP exporter of the agent's metrics.
#[derive(Debug)]
pub(crate) struct OtlpExporter {
    transport: Transport,
    endpoint: String,
    temporality: Temporality,
    /// Delta requests kept while the collector is away.
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Delta requests not sent yet, oldest first.
    pending: VecDeque<ExportMetricsServiceRequest>,
    keep_alive: KeepAlive,
    succeeded_once: bool,
    outage: Option<Outage>,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    failures: u64,
    last_warned: Instant,
    /// Delta requests the full buffer dropped.
    dropped: u64,
}

impl OtlpExporter {
    /// Builds the exporter; inside the tokio runtime, which runs its requests.
    pub(crate) fn new(config: &OtlpConfig) -> Result<Self, BuildError> {
        let transport = Transport::new(config).map_err(|source| BuildError::OtlpExporter {
            endpoint: crate::config::redact_url(&config.endpoint),
            source,
        })?;
        let intervals = config.delta_buffer.as_secs_f64() / config.interval.as_secs_f64();
        Ok(Self {
            transport,
            endpoint: crate::config::redact_url(&config.endpoint),
            temporality: config.temporality,
            capacity: intervals.ceil() as usize,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What to send now, oldest first: the latest request alone (cumulative), or the held
    /// ones followed by the latest (delta).
    fn queue(&self, mut request: ExportMetricsServiceRequest) -> Vec<ExportMetricsServiceRequest> {
        let mut state = self.lock();
        if self.temporality == Temporality::Cumulative {
            return vec![request];
        }
        state.keep_alive.fill(&mut request);
        state.pending.push_back(request);
        // The newest request is kept even with no buffer: it is the one being sent.
        let mut dropped = 0;
        while state.pending.len() > self.capacity.max(1) {
            state.pending.pop_front();
            dropped += 1;
        }
        if dropped > 0 {
            let outage = state.outage.get_or_insert_with(Outage::new);
            if outage.dropped == 0 {
                ExportBufferFull {
                    endpoint: &self.endpoint,
                    capacity: self.capacity,
                }
                .emit();
            }
            outage.dropped += dropped;
        }
        let n = state.pending.len().min(CATCH_UP_PER_EXPORT);
        state.pending.drain(..n).collect()
    }

    /// Puts back what was not sent, and logs the outcome.
    fn settle(
        &self,
        mut unsent: Vec<ExportMetricsServiceRequest>,
        delivered: usize,
        error: Option<transport::SendError>,
    ) -> OTelSdkResult {
        let mut state = self.lock();
        if self.temporality == Temporality::Delta {
            while let Some(request) = unsent.pop() {
                state.pending.push_front(request);
            }
        }
        let now = Instant::now();
        match error {
            None => {
                if let Some(outage) = state.outage.take() {
                    ExportRecovered {
                        endpoint: &self.endpoint,
                        failures: outage.failures,
                        outage: now - outage.since,
                        delta: (self.temporality == Temporality::Delta).then_some((
                            delivered as u64,
                            state.pending.len(),
                            outage.dropped,
                        )),
                    }
                    .emit();
                } else if !state.succeeded_once {
                    ExportStarted {
                        endpoint: &self.endpoint,
                    }
                    .emit();
                }
                state.succeeded_once = true;
                Ok(())
            }
            Some(error) => {
                let held = state.pending.len();
                let outage = state.outage.get_or_insert_with(Outage::new);
                outage.failures += 1;
                let loud =
                    outage.failures == 1 || now - outage.last_warned >= FAILURE_REMINDER_EVERY;
                if loud {
                    outage.last_warned = now;
                }
                ExportFailed {
                    endpoint: &self.endpoint,
                    error: &error,
                    failures: outage.failures,
                    failing_for: now - outage.since,
                    loud,
                    held: (self.temporality == Temporality::Delta).then_some(held),
                }
                .emit();
                Err(OTelSdkError::InternalFailure(error.to_string()))
            }
        }
    }
}

impl Outage {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            since: now,
            failures: 0,
            last_warned: now,
            dropped: 0,
        }
    }
}

impl PushMetricExporter for OtlpExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let batch = self.queue(ExportMetricsServiceRequest::from(metrics));
        let mut delivered = 0;
        let mut error = None;
        for request in &batch {
            match self.transport.send(request.clone()).await {
                Ok(()) => delivered += 1,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let unsent = batch.into_iter().skip(delivered).collect();
        self.settle(unsent, delivered, error)
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> opentelemetry_sdk::metrics::Temporality {
        match self.temporality {
            Temporality::Cumulative => opentelemetry_sdk::metrics::Temporality::Cumulative,
            Temporality::Delta => opentelemetry_sdk::metrics::Temporality::Delta,
        }
    }
}
