//! Events: everything the agent reports, each a struct whose `emit` writes its log line and
//! records its metrics together, so the two never drift apart.
//!
//! One module per probe, named as the probe is. Log lines follow one style: structured fields,
//! then a fixed sentence. The span of the probe (`probe{kind, cluster}`) names the cluster, so
//! events do not repeat it. State changes are logged (a broker going down at WARN, coming back
//! at INFO); repeats go to DEBUG.

/// Logs at WARN when `$loud` is true, else at DEBUG: the first of a run of repeats (and each
/// reminder) is seen, the rest stay out of the way.
macro_rules! warn_or_debug {
    ($loud:expr, name: $name:expr, $($arg:tt)+) => {
        if $loud {
            tracing::warn!(name: $name, $($arg)+)
        } else {
            tracing::debug!(name: $name, $($arg)+)
        }
    };
    ($loud:expr, $($arg:tt)+) => {
        if $loud {
            tracing::warn!($($arg)+)
        } else {
            tracing::debug!($($arg)+)
        }
    };
}

pub mod broker;
pub mod cap;
pub mod cluster;
pub mod commit;
pub mod export;
pub mod groups;
pub mod heartbeat;
pub mod http;
pub mod metadata;
pub mod offsets;
pub mod probe;
pub mod schema_registry;
pub mod topic;

/// A duration for a log line, in whole seconds (`1m 5s`, not `1m 5s 312ms 77us`).
pub(crate) fn seconds(d: std::time::Duration) -> humantime::FormattedDuration {
    humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
}

/// Whether something is failing now: a failure is logged when an episode starts and when it
/// ends, and only counted in between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Episode {
    failures: u64,
}

impl Episode {
    /// Counts a failure; true when it starts an episode.
    pub fn fail(&mut self) -> bool {
        self.failures += 1;
        self.failures == 1
    }

    /// Ends the episode, returning how many failures it had (`None` when none was running).
    pub fn recover(&mut self) -> Option<u64> {
        (self.failures > 0).then(|| std::mem::take(&mut self.failures))
    }

    pub fn is_failing(&self) -> bool {
        self.failures > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_starts_once_and_ends_with_its_count() {
        let mut e = Episode::default();
        assert_eq!(e.recover(), None);
        assert!(e.fail());
        assert!(!e.fail());
        assert!(e.is_failing());
        assert_eq!(e.recover(), Some(2));
        assert!(!e.is_failing());
        assert!(e.fail(), "a new episode");
    }
}
