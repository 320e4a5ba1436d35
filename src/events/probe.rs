//! Events of the probe loop itself: a probe started, a round failed, rounds succeed again.

use std::time::Duration;

use tracing::info;

use crate::error::{Chain, ErrorKind};

/// A probe's loop started.
pub struct ProbeStarted<'a> {
    pub kind: &'static str,
    pub interval: Duration,
    pub timeout: Duration,
    /// What the probe does, one sentence.
    pub description: &'a str,
}

impl ProbeStarted<'_> {
    pub fn emit(self) {
        info!(
            name: "probe.probe_started",
            interval = %humantime::format_duration(self.interval),
            timeout = %humantime::format_duration(self.timeout),
            "{}",
            if self.description.is_empty() {
                format!("The {} probe started.", self.kind)
            } else {
                self.description.to_owned()
            },
        );
    }
}

/// A round could not be done. The first failure of a streak is a WARN, and so is every
/// power-of-two-th after it (1, 2, 4, 8, …), so a long outage stays visible without flooding
/// the log; the others are DEBUG. A refusal by ACL (`authorization`) is said once: it stays
/// until someone changes the ACLs, and the metrics carry it meanwhile.
pub struct ProbeFailed<'a> {
    pub kind: &'static str,
    pub error: &'a (dyn std::error::Error + 'static),
    /// Failures in a row, this one included.
    pub failures: u32,
    /// When the next round runs.
    pub retry_in: Duration,
}

impl ProbeFailed<'_> {
    pub fn emit(self) {
        let retry_in = humantime::format_duration(Duration::from_millis(
            u64::try_from(self.retry_in.as_millis()).unwrap_or(u64::MAX),
        ));
        let kind = ErrorKind::of(self.error);
        let loud = match kind {
            ErrorKind::Authorization => self.failures == 1,
            _ => self.failures.is_power_of_two(),
        };
        // `error.type` right after a name is ambiguous to tracing's macros: another field first.
        warn_or_debug!(
            loud,
            name: "probe.probe_failed",
            failures = self.failures,
            error.type = kind.as_str(),
            error = %Chain(self.error),
            %retry_in,
            "The {} probe failed; retrying.",
            self.kind,
        );
    }
}

/// A round succeeded after failures.
pub struct ProbeRecovered {
    pub kind: &'static str,
    pub failures: u32,
}

impl ProbeRecovered {
    pub fn emit(self) {
        info!(
            name: "probe.probe_recovered",
            failures = self.failures,
            "The {} probe succeeds again.", self.kind
        );
    }
}
