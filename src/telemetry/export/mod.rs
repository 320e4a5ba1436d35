//! The OTLP metric exporter: each collection becomes one OTLP request, sent to the collector,
//! with a collector that is away handled so nothing is lost.
//!
//! With cumulative temporality the latest request carries the whole run's totals, so after an
//! outage the next one that goes through catches up. With delta temporality every request
//! matters: a request that fails is kept, encoded (up to `export.otlp.delta_buffer` of them
//! and `export.otlp.delta_buffer_size` bytes), and sent, in order, once the collector answers
//! again; what the buffer had to drop is counted and logged, and it drops its deque once it
//! is empty. Delta requests also carry a 0 for every counter series seen before and idle now,
//! so a series at 0 stays a series rather than a gap.
//!
//! Failures are logged once, then reminded of every few minutes, and the recovery says what
//! was delivered and what was dropped. What the receiver answers is honoured as the OTLP
//! specification says: points it refused in a partial success are counted and logged; a
//! request it refuses for good (a 400, an authentication failure) is dropped and counted, not
//! held and sent again forever; a `Retry-After` or `RetryInfo` holds the next export back.

mod buffer;
pub(crate) mod exemplars;
mod series;
pub(crate) mod signals;
pub(crate) mod stats;
mod timeline;
pub(crate) mod transport;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

use crate::config::{OtlpConfig, Temporality};
use crate::error::BuildError;
use crate::events::export::{
    ClockStepped, ExportBufferFull, ExportDeferred, ExportFailed, ExportPartlyRefused,
    ExportRecovered, ExportRefused, ExportStarted,
};
use buffer::{Held, Pending};
use series::KeepAlive;
use stats::{ExportStats, Signal};
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
    /// Delta requests kept while the collector is away, at most.
    capacity: usize,
    /// ... and their encoded bytes, at most.
    capacity_bytes: usize,
    state: Mutex<State>,
    stats: Arc<ExportStats>,
    /// Kept spans' measurements, attached to their points.
    exemplars: Arc<exemplars::Exemplars>,
}

#[derive(Debug, Default)]
struct State {
    /// Delta requests not sent yet, oldest first.
    pending: Pending,
    keep_alive: KeepAlive,
    timeline: timeline::Timeline,
    succeeded_once: bool,
    outage: Option<Outage>,
    /// The receiver asked to wait until then.
    not_before: Option<Instant>,
    /// When refused points were last logged at WARN.
    refusal_warned: Option<Instant>,
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
    pub(crate) fn new(
        config: &OtlpConfig,
        stats: Arc<ExportStats>,
        exemplars: Arc<exemplars::Exemplars>,
    ) -> Result<Self, BuildError> {
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
            capacity_bytes: usize::try_from(config.delta_buffer_size).unwrap_or(usize::MAX),
            state: Mutex::default(),
            stats,
            exemplars,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What to send now, oldest first: the latest request alone (cumulative), or the held
    /// ones followed by the latest (delta). Nothing while the receiver asked to wait: a delta
    /// request is held meanwhile, a cumulative one left to the next export's totals.
    fn queue(&self, mut request: ExportMetricsServiceRequest) -> Option<Vec<Outgoing>> {
        let mut state = self.lock();
        if let Some(step) = state.timeline.stamp(&mut request) {
            ClockStepped { step_nanos: step }.emit();
        }
        let wait = state
            .not_before
            .and_then(|until| until.checked_duration_since(Instant::now()));
        if wait.is_none() {
            state.not_before = None;
        }
        if !self.temporality.has_delta() {
            if let Some(wait) = wait {
                ExportDeferred {
                    endpoint: &self.endpoint,
                    wait,
                }
                .emit();
                return None;
            }
            return Some(vec![Outgoing::Latest(request)]);
        }
        state.keep_alive.fill(&mut request);
        // Sent at once (the common case), it is never encoded to be held.
        let latest = if state.pending.len() == 0 && wait.is_none() {
            Some(request)
        } else {
            state.pending.push_back(Held::new(&request));
            None
        };
        // The newest request is kept even with no buffer: it is the one being sent.
        let (points, dropped) = state.pending.trim(
            self.capacity.saturating_sub(usize::from(latest.is_some())),
            self.capacity_bytes,
        );
        if dropped > 0 {
            self.stats.count_rejected(Signal::Metrics, points);
            let outage = state.outage.get_or_insert_with(Outage::new);
            if outage.dropped == 0 {
                ExportBufferFull {
                    endpoint: &self.endpoint,
                    capacity: self.capacity,
                    capacity_bytes: self.capacity_bytes,
                }
                .emit();
            }
            outage.dropped += dropped;
        }
        if let Some(wait) = wait {
            self.stats
                .set_held(state.pending.len(), state.pending.bytes);
            ExportDeferred {
                endpoint: &self.endpoint,
                wait,
            }
            .emit();
            return None;
        }
        let n = state.pending.len().min(CATCH_UP_PER_EXPORT);
        let mut out: Vec<Outgoing> = (0..n)
            .filter_map(|_| state.pending.pop_front())
            .map(Outgoing::Held)
            .collect();
        out.extend(latest.map(Outgoing::Latest));
        Some(out)
    }

    /// Whether a refusal is due at WARN (the first, then one every few minutes).
    fn refusal_is_loud(&self, state: &mut State) -> bool {
        let now = Instant::now();
        let loud = state
            .refusal_warned
            .is_none_or(|at| now - at >= FAILURE_REMINDER_EVERY);
        if loud {
            state.refusal_warned = Some(now);
        }
        loud
    }

    /// The receiver took a request but refused some of its points (or warned).
    fn partly_refused(&self, accepted: &transport::Accepted) {
        if accepted.rejected == 0 && accepted.message.is_empty() {
            return;
        }
        self.stats
            .count_rejected(Signal::Metrics, accepted.rejected);
        let loud = self.refusal_is_loud(&mut self.lock());
        ExportPartlyRefused {
            endpoint: &self.endpoint,
            rejected: accepted.rejected,
            message: &accepted.message,
            loud,
        }
        .emit();
    }

    /// The receiver refused a request for good: it is dropped.
    fn refused(&self, error: &transport::SendError, points: u64) {
        self.stats
            .count_batch(Signal::Metrics, Some(error.kind().as_str()));
        self.stats.count_rejected(Signal::Metrics, points);
        let loud = self.refusal_is_loud(&mut self.lock());
        ExportRefused {
            endpoint: &self.endpoint,
            error,
            points,
            loud,
        }
        .emit();
    }

    /// Puts back what was not sent, and logs the outcome.
    fn settle(
        &self,
        mut unsent: Vec<Outgoing>,
        delivered: usize,
        error: Option<transport::SendError>,
    ) -> OTelSdkResult {
        let mut state = self.lock();
        if self.temporality.has_delta() {
            while let Some(outgoing) = unsent.pop() {
                state.pending.push_front(outgoing.into_held());
            }
            // Put back, the latest may push the oldest past the bound.
            let (points, dropped) = state.pending.trim(self.capacity, self.capacity_bytes);
            if dropped > 0 {
                self.stats.count_rejected(Signal::Metrics, points);
                let outage = state.outage.get_or_insert_with(Outage::new);
                outage.dropped += dropped;
            }
        }
        let now = Instant::now();
        if let Some(wait) = error.as_ref().and_then(transport::SendError::retry_after) {
            state.not_before = Some(now + wait);
        }
        for _ in 0..delivered {
            self.stats.count_batch(Signal::Metrics, None);
        }
        if let Some(error) = &error {
            self.stats
                .count_batch(Signal::Metrics, Some(error.kind().as_str()));
        }
        self.stats
            .set_held(state.pending.len(), state.pending.bytes);
        match error {
            None => {
                if let Some(outage) = state.outage.take() {
                    ExportRecovered {
                        endpoint: &self.endpoint,
                        failures: outage.failures,
                        outage: now - outage.since,
                        delta: self.temporality.has_delta().then_some((
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
                // Everything an outage held is delivered and dropped: give its memory back.
                let release = state.pending.len() == 0 && state.pending.take_release_due();
                drop(state);
                if release {
                    crate::heap::release_free_memory();
                }
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
                    held: self.temporality.has_delta().then_some(held),
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

/// The data points a request carries.
pub(super) fn points_in(request: &ExportMetricsServiceRequest) -> u64 {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let mut points = 0;
    for resource in &request.resource_metrics {
        for scope in &resource.scope_metrics {
            for metric in &scope.metrics {
                points += match &metric.data {
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                    None => 0,
                };
            }
        }
    }
    points as u64
}

/// A request on its way out: the latest, as the SDK made it, or one held since an outage.
#[derive(Debug)]
enum Outgoing {
    Latest(ExportMetricsServiceRequest),
    Held(Held),
}

impl Outgoing {
    fn into_held(self) -> Held {
        match self {
            Self::Latest(request) => Held::new(&request),
            Self::Held(held) => held,
        }
    }

    fn points(&self) -> u64 {
        match self {
            Self::Latest(request) => points_in(request),
            Self::Held(held) => held.points,
        }
    }
}

impl PushMetricExporter for OtlpExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let mut request = ExportMetricsServiceRequest::from(metrics);
        self.exemplars.attach(&mut request);
        let Some(batch) = self.queue(request) else {
            return Ok(());
        };
        let mut delivered = 0;
        // The first request not done with: it failed and is to be sent again.
        let mut failed_at = batch.len();
        let mut error = None;
        for (i, outgoing) in batch.iter().enumerate() {
            let request = match outgoing {
                Outgoing::Latest(request) => request.clone(),
                Outgoing::Held(held) => match held.request() {
                    Some(request) => request,
                    None => {
                        self.stats.count_rejected(Signal::Metrics, held.points);
                        continue;
                    }
                },
            };
            match self.transport.send(request).await {
                Ok(accepted) => {
                    delivered += 1;
                    self.partly_refused(&accepted);
                }
                // Sending it again cannot help: dropped, counted, and the rest goes on.
                Err(e) if e.is_permanent() => self.refused(&e, outgoing.points()),
                Err(e) => {
                    error = Some(e);
                    failed_at = i;
                    break;
                }
            }
        }
        let unsent = batch.into_iter().skip(failed_at).collect();
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
            Temporality::LowMemory => opentelemetry_sdk::metrics::Temporality::LowMemory,
        }
    }
}
