//! Spans. A probe builds each span once its outcome is known (a heartbeat's send at its ack,
//! its receive when read back or declared lost), so the agent, which knows the outcome, decides
//! what is kept: every failed, lost, ambiguous, duplicated, late or slow one, and healthy ones
//! at `export.traces.sample_ratio`, decided from the trace id so both spans of a heartbeat go
//! the same way. Kept spans go through the SDK's batch processor to opentelemetry-otlp's span
//! exporter, on the metrics' connection settings.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, IdGenerator as _, RandomIdGenerator, SpanData, SpanEvents, SpanExporter,
    SpanLinks, SpanProcessor as _,
};
use opentelemetry_sdk::trace::{OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT};

use super::export::exemplars::Exemplars;
use super::export::signals::{Backlog, InRuntime, Leaving};
use super::export::stats::{ExportStats, Reminder, Signal};
use super::export::transport::TransportError;
use crate::config::{ExportConfig, OtlpConfig, OtlpProtocol, SlowConfig};
use crate::events::export::{TraceExportFailed, TracesConfigured};

/// A span's trace and span ids, as a W3C `traceparent` carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceIds {
    pub trace: TraceId,
    pub span: SpanId,
}

/// The record header that carries a heartbeat's send context.
pub const TRACEPARENT: &str = "traceparent";

impl TraceIds {
    /// `traceparent`, version 00, sampled (the decision is the agent's, made later).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace, self.span)
    }

    /// Reads a `traceparent` header value; `None` unless well formed with non-zero ids.
    pub fn parse_traceparent(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        let trace = TraceId::from_hex(trace).ok()?;
        let span = SpanId::from_hex(span).ok()?;
        (trace != TraceId::INVALID && span != SpanId::INVALID).then_some(Self { trace, span })
    }

    fn context(&self) -> SpanContext {
        SpanContext::new(
            self.trace,
            self.span,
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        )
    }
}

/// A finished span, as a probe describes it.
#[derive(Debug)]
pub struct FinishedSpan {
    pub name: String,
    pub kind: SpanKind,
    pub ids: TraceIds,
    pub parent: Option<SpanId>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Status error, with its description.
    pub error: Option<String>,
    pub links: Vec<TraceIds>,
}

/// The agent's spans: on or off, what is kept, and where kept spans go. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Traces {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    processor: BatchSpanProcessor,
    /// Spans not yet through the exporter: bounded, what is past it dropped and counted.
    backlog: Arc<Backlog>,
    stats: Arc<ExportStats>,
    exemplars: Arc<Exemplars>,
    /// Healthy traces are kept when their id's low 63 bits fall under this.
    keep_below: u64,
    slow: SlowConfig,
    scope: InstrumentationScope,
    ids: RandomIdGenerator,
}

impl Traces {
    /// No spans: ids are not even made.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// The span pipeline of `export.traces`, inside the tokio runtime (which runs the
    /// requests); off when the config says so.
    pub(crate) fn build(
        export: &ExportConfig,
        resource: &opentelemetry_sdk::Resource,
        stats: Arc<ExportStats>,
        exemplars: Arc<Exemplars>,
    ) -> Result<Self, TransportError> {
        let config = &export.traces;
        if !config.enabled {
            TracesConfigured { traces: None }.emit();
            return Ok(Self::disabled());
        }
        let mut exporter = otlp_exporter(&export.otlp, &config.endpoint)?;
        exporter.set_resource(resource);
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TransportError::NoRuntime)?;
        let backlog = Arc::new(Backlog::from_env(
            OTEL_BSP_MAX_QUEUE_SIZE,
            OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT,
        ));
        let exporter = CountedExporter {
            inner: exporter,
            runtime,
            stats: Arc::clone(&stats),
            endpoint: config.endpoint.clone(),
            reminder: Reminder::every(FAILURE_LOG_EVERY),
            backlog: Arc::clone(&backlog),
        };
        let processor = BatchSpanProcessor::builder(exporter).build();
        TracesConfigured {
            traces: Some(config),
        }
        .emit();
        Ok(Self {
            inner: Some(Arc::new(Inner {
                processor,
                backlog,
                stats,
                exemplars,
                keep_below: ratio_bound(config.sample_ratio),
                slow: config.slow,
                scope: InstrumentationScope::builder(super::SERVICE_NAME)
                    .with_version(super::SERVICE_VERSION)
                    .build(),
                ids: RandomIdGenerator::default(),
            })),
        })
    }

    /// Spans kept into `exporter` (tests read them back after [`Traces::flush`]).
    #[cfg(test)]
    pub(crate) fn with_exporter(
        exporter: impl SpanExporter + 'static,
        sample_ratio: f64,
        slow: SlowConfig,
    ) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                processor: BatchSpanProcessor::builder(exporter).build(),
                // The in-memory exporter is not counted: no bound in tests.
                backlog: Arc::new(Backlog::new(usize::MAX)),
                stats: Arc::default(),
                exemplars: Arc::default(),
                keep_below: ratio_bound(sample_ratio),
                slow,
                scope: InstrumentationScope::builder(super::SERVICE_NAME).build(),
                ids: RandomIdGenerator::default(),
            })),
        }
    }

    /// Exports what is queued now.
    #[cfg(test)]
    pub(crate) fn flush(&self) {
        if let Some(inner) = &self.inner {
            let _ = inner.processor.force_flush();
        }
    }

    /// Fresh ids for a new trace's first span, when spans are on.
    pub fn start(&self) -> Option<TraceIds> {
        self.inner.as_ref().map(|i| TraceIds {
            trace: i.ids.new_trace_id(),
            span: i.ids.new_span_id(),
        })
    }

    /// A fresh span id in an existing trace.
    pub fn child(&self, trace: TraceId) -> Option<TraceIds> {
        self.inner.as_ref().map(|i| TraceIds {
            trace,
            span: i.ids.new_span_id(),
        })
    }

    /// Whether a healthy trace is kept: the ratio, decided by its id alone.
    pub fn keeps_healthy(&self, trace: TraceId) -> bool {
        self.inner.as_ref().is_some_and(|i| {
            let low = u64::from_be_bytes(trace.to_bytes()[8..].try_into().unwrap_or([0xff; 8]));
            (low >> 1) < i.keep_below
        })
    }

    /// A kept span's measurement of `metric` on the series `series`, to be attached to its
    /// point as an exemplar.
    pub fn exemplar(
        &self,
        metric: &'static str,
        series: Vec<(&'static str, String)>,
        value: Duration,
        ids: TraceIds,
    ) {
        if let Some(inner) = &self.inner {
            inner
                .exemplars
                .record(metric, series, value.as_secs_f64(), ids);
        }
    }

    /// What counts as slow; `None` when spans are off.
    pub fn slow(&self) -> Option<SlowConfig> {
        self.inner.as_ref().map(|i| i.slow)
    }

    /// Hands a kept span to the batch processor (a no-op when spans are off).
    pub fn record(&self, span: FinishedSpan) {
        let Some(inner) = &self.inner else { return };
        if !inner.backlog.admit() {
            inner.stats.count_rejected(Signal::Traces, 1);
            return;
        }
        let status = match span.error {
            Some(description) => Status::error(description),
            None => Status::Unset,
        };
        let mut links = SpanLinks::default();
        links.links = span
            .links
            .iter()
            .map(|l| Link::with_context(l.context()))
            .collect();
        inner.processor.on_end(SpanData {
            span_context: span.ids.context(),
            parent_span_id: span.parent.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: false,
            span_kind: span.kind,
            name: span.name.into(),
            start_time: span.start,
            end_time: span.end.max(span.start),
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links,
            status,
            instrumentation_scope: inner.scope.clone(),
        });
    }

    /// Sends what is queued and stops; blocking, so called off the async threads.
    pub fn shutdown(&self, timeout: Duration) -> OTelSdkResult {
        match &self.inner {
            Some(inner) => inner.processor.shutdown_with_timeout(timeout),
            None => Ok(()),
        }
    }
}

/// Runs `f` (an event's emit) inside the context of span `ids`, when there is one, so the log
/// record it writes carries that trace and span id.
pub fn in_span<R>(ids: Option<TraceIds>, f: impl FnOnce() -> R) -> R {
    use opentelemetry::trace::TraceContextExt as _;
    let _attached = ids.map(|ids| {
        opentelemetry::Context::current()
            .with_remote_span_context(ids.context())
            .attach()
    });
    f()
}

/// Wall-clock times of monotonic instants, all read against one reading of both clocks (so a
/// span's duration is exactly its instants' difference).
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    instant: Instant,
    wall: SystemTime,
}

impl WallClock {
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    pub fn at(&self, at: Instant) -> SystemTime {
        if at <= self.instant {
            self.wall
                .checked_sub(self.instant - at)
                .unwrap_or(self.wall)
        } else {
            self.wall
                .checked_add(at - self.instant)
                .unwrap_or(self.wall)
        }
    }
}

/// The trace-id bound of a ratio, as the SDK's `TraceIdRatioBased` computes it.
fn ratio_bound(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio <= 0.0 {
        0
    } else {
        (ratio * (1u64 << 63) as f64) as u64
    }
}

/// opentelemetry-otlp's span exporter on the metrics' settings.
fn otlp_exporter(
    otlp: &OtlpConfig,
    endpoint: &str,
) -> Result<opentelemetry_otlp::SpanExporter, TransportError> {
    let built = match otlp.protocol {
        OtlpProtocol::Grpc => super::export::signals::over_grpc(
            opentelemetry_otlp::SpanExporter::builder().with_tonic(),
            otlp,
            endpoint,
            "TRACES",
        )?
        .build(),
        OtlpProtocol::HttpProtobuf => super::export::signals::over_http(
            opentelemetry_otlp::SpanExporter::builder().with_http(),
            otlp,
            endpoint,
            "TRACES",
        )?
        .build(),
    };
    built.map_err(|e| TransportError::SignalExporter {
        signal: "span",
        message: e.to_string(),
    })
}

/// The OTLP span exporter, polled inside the agent's runtime, its outcomes counted as
/// `cc_heartbeat.export.batches{otel.signal=traces}` and its failures logged (the first, then
/// every few minutes).
#[derive(Debug)]
struct CountedExporter {
    inner: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Handle,
    stats: Arc<ExportStats>,
    endpoint: String,
    reminder: Reminder,
    backlog: Arc<Backlog>,
}

/// Failed span exports are logged at most this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(300);

impl SpanExporter for CountedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        // Out of the backlog however the export ends, cut short included.
        let _out = Leaving(&self.backlog, spans);
        let result = InRuntime::new(&self.runtime, self.inner.export(batch)).await;
        self.stats.count_sdk_export(Signal::Traces, &result, spans);
        if let Err(error) = &result {
            let redacted = crate::config::redact_url(&self.endpoint);
            let message = error.to_string().replace(&self.endpoint, &redacted);
            TraceExportFailed {
                endpoint: &redacted,
                error: &message,
                spans,
                loud: self.reminder.due(),
            }
            .emit();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_goes_out_and_comes_back() {
        let ids = TraceIds {
            trace: TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128),
            span: SpanId::from(0xb7ad6b7169203331_u64),
        };
        let header = ids.traceparent();
        assert_eq!(
            header,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(TraceIds::parse_traceparent(header.as_bytes()), Some(ids));
    }

    #[test]
    fn a_malformed_traceparent_is_none() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319-cb7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        ] {
            assert_eq!(TraceIds::parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(TraceIds::parse_traceparent(&[0xff, 0xfe]), None);
    }

    #[test]
    fn the_ratio_keeps_its_share_of_random_ids() {
        let ids = RandomIdGenerator::default();
        let slow = SlowConfig {
            produce: Duration::from_millis(1),
            end_to_end: Duration::from_millis(1),
            connection: Duration::from_millis(1),
        };
        let traces = |ratio| {
            Traces::with_exporter(
                opentelemetry_sdk::trace::InMemorySpanExporter::default(),
                ratio,
                slow,
            )
        };
        let (none, tenth, all) = (traces(0.0), traces(0.1), traces(1.0));
        let sample: Vec<TraceId> = (0..10_000).map(|_| ids.new_trace_id()).collect();
        let kept = |t: &Traces| sample.iter().filter(|id| t.keeps_healthy(**id)).count();
        assert_eq!(kept(&none), 0);
        assert_eq!(kept(&all), 10_000);
        let share = kept(&tenth);
        assert!((800..1200).contains(&share), "{share} of 10000 at 0.1");
        assert!(!Traces::disabled().keeps_healthy(sample[0]));
        assert!(Traces::disabled().start().is_none(), "no ids when off");
    }
}
