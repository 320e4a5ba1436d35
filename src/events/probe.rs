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

/// How many bounded refusal reasons one streak remembers (a streak rarely has more than two:
/// an ACL still spreading over the brokers, then the refusal that stays).
const REFUSALS_REMEMBERED: usize = 8;

/// The failures of one probe in a row, and which of them are said aloud. The first failure of
/// a streak is a WARN, and so is every power-of-two-th after it (1, 2, 4, 8, …), so a long
/// outage stays visible without flooding the log; the others are DEBUG. A refusal by ACL
/// (`authorization`) is said once per reason: it stays until someone changes the ACLs and the
/// metrics carry it meanwhile, but a new reason (a refused describe, then a refused create
/// once the ACL reached every broker) is news.
#[derive(Debug, Default)]
pub struct FailureStreak {
    failures: u32,
    refusals_said: Vec<String>,
}

impl FailureStreak {
    /// Counts a failed round and says so (loud or not, as above).
    pub fn failed(
        &mut self,
        kind: &'static str,
        error: &(dyn std::error::Error + 'static),
        retry_in: Duration,
    ) {
        let loud = self.count(error);
        ProbeFailed {
            kind,
            error,
            failures: self.failures,
            retry_in,
            loud,
        }
        .emit();
    }

    /// Ends the streak after a good round, saying so if there was one.
    pub fn recovered(&mut self, kind: &'static str) {
        if self.failures > 0 {
            ProbeRecovered {
                kind,
                failures: self.failures,
            }
            .emit();
        }
        *self = Self::default();
    }

    /// Counts a failure; whether it is said aloud.
    fn count(&mut self, error: &(dyn std::error::Error + 'static)) -> bool {
        self.failures = self.failures.saturating_add(1);
        if ErrorKind::of(error) != ErrorKind::Authorization {
            return self.failures.is_power_of_two();
        }
        let reason = error.to_string();
        if self.refusals_said.contains(&reason) {
            return false;
        }
        if self.refusals_said.len() < REFUSALS_REMEMBERED {
            self.refusals_said.push(reason);
        }
        true
    }
}

/// A round could not be done (see [`FailureStreak`] for which are WARN).
struct ProbeFailed<'a> {
    kind: &'static str,
    error: &'a (dyn std::error::Error + 'static),
    /// Failures in a row, this one included.
    failures: u32,
    /// When the next round runs.
    retry_in: Duration,
    loud: bool,
}

impl ProbeFailed<'_> {
    fn emit(self) {
        let retry_in = humantime::format_duration(Duration::from_millis(
            u64::try_from(self.retry_in.as_millis()).unwrap_or(u64::MAX),
        ));
        // `error.type` right after a name is ambiguous to tracing's macros: another field first.
        warn_or_debug!(
            self.loud,
            name: "probe.probe_failed",
            failures = self.failures,
            error.type = ErrorKind::of(self.error).as_str(),
            error = %Chain(self.error),
            %retry_in,
            "The {} probe failed; retrying.",
            self.kind,
        );
    }
}

/// A round succeeded after failures.
struct ProbeRecovered {
    pub kind: &'static str,
    pub failures: u32,
}

impl ProbeRecovered {
    fn emit(self) {
        info!(
            name: "probe.probe_recovered",
            failures = self.failures,
            "The {} probe succeeds again.", self.kind
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Classified;

    fn refused(what: &'static str) -> Classified {
        Classified::new(ErrorKind::Authorization, what)
    }

    #[test]
    fn a_refusal_is_said_once_per_reason_and_an_outage_on_powers_of_two() {
        let mut streak = FailureStreak::default();
        let said: Vec<bool> = [
            refused("may not describe"),
            refused("may not describe"),
            refused("may not create"),
            refused("may not describe"),
            refused("may not create"),
        ]
        .iter()
        .map(|e| streak.count(e))
        .collect();
        assert_eq!(said, [true, false, true, false, false]);

        let mut streak = FailureStreak::default();
        let down = Classified::new(ErrorKind::ConnectionRefused, "down");
        let said: Vec<u32> = (1..=9).filter(|_| streak.count(&down)).collect();
        assert_eq!(said, [1, 2, 4, 8]);
    }

    #[test]
    fn a_recovery_starts_a_new_streak_in_which_a_refusal_is_news_again() {
        let mut streak = FailureStreak::default();
        assert!(streak.count(&refused("may not describe")));
        streak.recovered("scripted");
        assert_eq!(streak.failures, 0);
        assert!(streak.count(&refused("may not describe")));
    }
}
