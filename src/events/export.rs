//! Events of the OTLP export: how it is set up, the first export, failures (once, then a
//! reminder every few minutes), the delta buffer filling up, the recovery, and the final
//! export at shutdown.

use std::time::Duration;

use tracing::{info, warn};

use super::seconds;

/// The first export of the run went through.
pub struct ExportStarted<'a> {
    pub endpoint: &'a str,
}

impl ExportStarted<'_> {
    pub fn emit(self) {
        info!(name: "export.export_started", endpoint = %self.endpoint, "First OTLP export succeeded.");
    }
}

/// An export failed. The first failure of an outage and each reminder are WARN; the others
/// DEBUG.
pub struct ExportFailed<'a> {
    pub endpoint: &'a str,
    pub error: &'a (dyn std::error::Error + 'static),
    /// Failed exports in this outage, this one included.
    pub failures: u64,
    /// How long the outage has lasted.
    pub failing_for: Duration,
    /// Whether to remind at WARN (the first failure, or a reminder is due).
    pub loud: bool,
    /// With delta temporality: the exports held for when the collector is back.
    pub held: Option<usize>,
}

impl ExportFailed<'_> {
    pub fn emit(self) {
        let error = crate::error::Chain(self.error);
        let then = match self.held {
            Some(_) => "measuring continues and the exports are held until it is back",
            None => "measuring continues and the next export carries the totals",
        };
        if self.failures == 1 {
            warn!(name: "export.export_failed", endpoint = %self.endpoint, %error, "OTLP export failed; {then}.");
        } else {
            warn_or_debug!(
                self.loud,
                name: "export.export_failed",
                endpoint = %self.endpoint,
                %error,
                failed_exports = self.failures,
                failing_for = %seconds(self.failing_for),
                held_exports = self.held,
                "OTLP export still failing.",
            );
        }
    }
}

/// With delta temporality, the collector has been away longer than the buffer holds: from
/// now on the oldest held exports are dropped (logged once per outage).
pub struct ExportBufferFull<'a> {
    pub endpoint: &'a str,
    pub capacity: usize,
    pub capacity_bytes: usize,
}

impl ExportBufferFull<'_> {
    pub fn emit(self) {
        warn!(
            name: "export.export_buffer_full",
            endpoint = %self.endpoint,
            held_exports = self.capacity,
            held_bytes = self.capacity_bytes,
            "The delta export buffer is full: the oldest held exports are dropped (export.otlp.delta_buffer, delta_buffer_size).",
        );
    }
}

/// Exports go through again after an outage.
pub struct ExportRecovered<'a> {
    pub endpoint: &'a str,
    pub failures: u64,
    pub outage: Duration,
    /// With delta temporality: held exports delivered now, still held (sent with the next
    /// exports), and dropped because the buffer was full.
    pub delta: Option<(u64, usize, u64)>,
}

impl ExportRecovered<'_> {
    pub fn emit(self) {
        let (endpoint, outage) = (self.endpoint, seconds(self.outage));
        match self.delta {
            None => info!(
                name: "export.export_recovered",
                %endpoint,
                failed_exports = self.failures,
                %outage,
                "OTLP export recovered; the cumulative totals cover the outage, nothing was lost.",
            ),
            Some((delivered, still_held, 0)) => info!(
                name: "export.export_recovered",
                %endpoint,
                failed_exports = self.failures,
                %outage,
                delivered,
                still_held,
                "OTLP export recovered; the exports held during the outage are delivered in order, none dropped.",
            ),
            Some((delivered, still_held, dropped)) => warn!(
                name: "export.export_recovered",
                %endpoint,
                failed_exports = self.failures,
                %outage,
                delivered,
                still_held,
                dropped,
                "OTLP export recovered; the exports held during the outage are delivered in order, but {dropped} were dropped when the buffer was full: their counts are lost.",
            ),
        }
    }
}

/// The receiver refused a request for good (a permanent error: a 400, an authentication
/// failure): it is dropped rather than sent again. WARN on the first and every few minutes.
pub struct ExportRefused<'a> {
    pub endpoint: &'a str,
    pub error: &'a (dyn std::error::Error + 'static),
    /// Points the request carried.
    pub points: u64,
    pub loud: bool,
}

impl ExportRefused<'_> {
    pub fn emit(self) {
        warn_or_debug!(
            self.loud,
            name: "export.export_refused",
            endpoint = %self.endpoint,
            error = %crate::error::Chain(self.error),
            points = self.points,
            "The OTLP receiver refused an export for good; its points are dropped, not sent again (cc_heartbeat.export.points.rejected).",
        );
    }
}

/// The receiver took a request but refused some of its points, or warned (a partial
/// success). WARN on the first and every few minutes.
pub struct ExportPartlyRefused<'a> {
    pub endpoint: &'a str,
    pub rejected: u64,
    /// The receiver's message, as it gave it.
    pub message: &'a str,
    pub loud: bool,
}

impl ExportPartlyRefused<'_> {
    pub fn emit(self) {
        warn_or_debug!(
            self.loud,
            name: "export.export_partly_refused",
            endpoint = %self.endpoint,
            rejected_points = self.rejected,
            message = %self.message,
            "The OTLP receiver refused some points of an export (partial success; cc_heartbeat.export.points.rejected).",
        );
    }
}

/// The receiver asked the agent to wait (`Retry-After`, `RetryInfo`): this export is held
/// (delta) or left to the next one's totals (cumulative).
pub struct ExportDeferred<'a> {
    pub endpoint: &'a str,
    pub wait: Duration,
}

impl ExportDeferred<'_> {
    pub fn emit(self) {
        tracing::debug!(
            name: "export.export_deferred",
            endpoint = %self.endpoint,
            wait = %humantime::format_duration(Duration::from_millis(
                u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX)
            )),
            "The OTLP receiver asked to wait; this export waits too.",
        );
    }
}

/// How the OTLP export is set up (or that it is off), at start.
pub struct ExportConfigured<'a> {
    /// `None` when the export is off.
    pub otlp: Option<&'a crate::config::OtlpConfig>,
}

impl ExportConfigured<'_> {
    pub fn emit(self) {
        match self.otlp {
            Some(otlp) => info!(
                name: "export.export_configured",
                endpoint = %crate::config::redact_url(&otlp.endpoint),
                protocol = ?otlp.protocol,
                interval = %humantime::format_duration(otlp.interval),
                temporality = ?otlp.temporality,
                histogram = ?otlp.histogram,
                delta_buffer = %humantime::format_duration(otlp.delta_buffer),
                "OTLP metric export configured.",
            ),
            None => info!(
                name: "export.export_configured",
                "OTLP metric export is off (export.otlp.enabled: false or OTEL_METRICS_EXPORTER=none)."
            ),
        }
    }
}

/// How spans are exported (or that they are off), at start.
pub struct TracesConfigured<'a> {
    /// `None` when spans are off.
    pub traces: Option<&'a crate::config::TracesConfig>,
}

impl TracesConfigured<'_> {
    pub fn emit(self) {
        match self.traces {
            Some(t) => info!(
                name: "export.traces_configured",
                endpoint = %crate::config::redact_url(&t.endpoint),
                sample_ratio = t.sample_ratio,
                slow_produce = %humantime::format_duration(t.slow.produce),
                slow_end_to_end = %humantime::format_duration(t.slow.end_to_end),
                "OTLP trace export configured: every failed, lost or slow heartbeat is kept, healthy ones at the sample ratio.",
            ),
            None => info!(
                name: "export.traces_configured",
                "OTLP trace export is off (export.traces.enabled: false, OTEL_TRACES_EXPORTER=none, or the OTLP export off)."
            ),
        }
    }
}

/// A batch of spans could not be exported: its spans are dropped (spans are not held).
pub struct TraceExportFailed<'a> {
    pub endpoint: &'a str,
    /// The exporter's message, with the endpoint's credentials redacted.
    pub error: &'a str,
    pub spans: usize,
    /// WARN for the first, then at most every few minutes; DEBUG between.
    pub loud: bool,
}

impl TraceExportFailed<'_> {
    pub fn emit(self) {
        warn_or_debug!(
            self.loud,
            name: "export.trace_export_failed",
            endpoint = %self.endpoint,
            error = %self.error,
            spans = self.spans,
            "OTLP trace export failed; its spans are dropped.",
        );
    }
}

/// The target of the log export's own failures, which the OTLP log bridge leaves out.
pub const LOG_EXPORT_TARGET: &str = "cc_heartbeat::otlp_logs";

/// A batch of log records could not be exported: its records are dropped (stderr has them).
pub struct LogExportFailed<'a> {
    pub error: &'a (dyn std::error::Error + 'static),
    pub records: usize,
    /// WARN for the first, then at most every few minutes; DEBUG between.
    pub loud: bool,
}

impl LogExportFailed<'_> {
    pub fn emit(self) {
        let error = crate::error::Chain(self.error);
        if self.loud {
            warn!(name: "export.log_export_failed", target: LOG_EXPORT_TARGET, %error, records = self.records, "OTLP log export failed; its records are dropped.");
        } else {
            tracing::debug!(name: "export.log_export_failed", target: LOG_EXPORT_TARGET, %error, records = self.records, "OTLP log export failed; its records are dropped.");
        }
    }
}

/// A configured header cannot be sent (not a valid name or value for the protocol); its
/// name is said, never its value.
pub struct HeaderNotSent<'a> {
    pub name: &'a str,
    /// `gRPC metadata` or `HTTP header`.
    pub as_what: &'static str,
}

impl HeaderNotSent<'_> {
    pub fn emit(self) {
        warn!(name: "export.header_not_sent", header = %self.name, "OTLP header is not a valid {}; it is not sent.", self.as_what);
    }
}

/// The final export at shutdown.
pub struct FinalExport<'a> {
    /// `metric`, `trace` or `log`.
    pub signal: &'static str,
    /// `None` when it went through.
    pub error: Option<&'a (dyn std::error::Error + 'static)>,
}

impl FinalExport<'_> {
    pub fn emit(self) {
        match self.error {
            None => info!(name: "export.final_export", "Final {} export done.", self.signal),
            Some(error) => {
                warn!(name: "export.final_export", error = %crate::error::Chain(error), "Final {} export failed.", self.signal)
            }
        }
    }
}

/// The wall clock stepped (an NTP step, a VM resumed): exported points follow it, and every
/// series restarts (its start time moves with the clock). Said once per step.
pub struct ClockStepped {
    /// By how much, in ns; negative: backwards.
    pub step_nanos: i128,
}

impl ClockStepped {
    pub fn emit(self) {
        let by =
            Duration::from_nanos(u64::try_from(self.step_nanos.unsigned_abs()).unwrap_or(u64::MAX));
        warn!(
            name: "export.clock_stepped",
            step = %humantime::format_duration(Duration::from_millis(u64::try_from(by.as_millis()).unwrap_or(u64::MAX))),
            direction = if self.step_nanos < 0 { "backwards" } else { "forwards" },
            "The wall clock stepped: exported points follow it, and their series restart (start times move with the clock, as after a reset). Latencies are unaffected (they use the monotonic clock).",
        );
    }
}
