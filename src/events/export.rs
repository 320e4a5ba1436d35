//! Events of the OTLP export: the first export, failures (once, then a reminder every few
//! minutes), and the recovery.

use std::time::Duration;

use tracing::{info, warn};

/// The first export of the run went through.
pub struct ExportStarted<'a> {
    pub endpoint: &'a str,
}

impl ExportStarted<'_> {
    pub fn emit(self) {
        info!(endpoint = %self.endpoint, "First OTLP export succeeded.");
    }
}

/// An export failed. The first failure of an outage and each reminder are WARN; the others
/// DEBUG.
pub struct ExportFailed<'a> {
    pub endpoint: &'a str,
    pub error: &'a dyn std::fmt::Display,
    /// Failed exports in this outage, this one included.
    pub failures: u64,
    /// How long the outage has lasted.
    pub failing_for: Duration,
    /// Whether to remind at WARN (the first failure, or a reminder is due).
    pub loud: bool,
}

impl ExportFailed<'_> {
    pub fn emit(self) {
        let failing_for = super::seconds(self.failing_for);
        if self.failures == 1 {
            warn!(
                endpoint = %self.endpoint,
                error = %self.error,
                "OTLP export failed; measuring continues and the next export retries.",
            );
        } else {
            warn_or_debug!(
                self.loud,
                endpoint = %self.endpoint,
                error = %self.error,
                failed_exports = self.failures,
                %failing_for,
                "OTLP export still failing.",
            );
        }
    }
}

/// Exports go through again after an outage.
pub struct ExportRecovered<'a> {
    pub endpoint: &'a str,
    pub failures: u64,
    pub outage: Duration,
}

impl ExportRecovered<'_> {
    pub fn emit(self) {
        info!(
            endpoint = %self.endpoint,
            failed_exports = self.failures,
            outage = %super::seconds(self.outage),
            "OTLP export recovered; cumulative metrics continue where they were.",
        );
    }
}
