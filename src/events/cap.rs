//! The series cap of the offsets and consumer group checks, said the same way for both: the
//! series left out is a gauge (`cc_heartbeat.series.dropped`), and a change of it a log line.

use opentelemetry::KeyValue;
use tracing::{info, warn};

use crate::telemetry::instruments::attr;
use crate::telemetry::{ClusterAttributes, Instruments};

/// Which check's cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CappedCheck {
    Offsets,
    ConsumerGroups,
}

impl CappedCheck {
    /// The `cc_heartbeat.check` attribute, and the check's config key under `checks`.
    pub const fn key(self) -> &'static str {
        match self {
            Self::Offsets => "offsets",
            Self::ConsumerGroups => "consumer_groups",
        }
    }

    const fn items(self) -> &'static str {
        match self {
            Self::Offsets => "Topics",
            Self::ConsumerGroups => "Consumer groups",
        }
    }

    const fn include(self) -> &'static str {
        match self {
            Self::Offsets => "clusters[].topics.include",
            Self::ConsumerGroups => "clusters[].consumer_groups.include",
        }
    }
}

/// One round's cap: what it left out, against what the round before left out.
pub struct SeriesCapped<'a> {
    pub cluster: &'a str,
    pub attrs: &'a ClusterAttributes,
    pub check: CappedCheck,
    /// Topics (groups) watched this round.
    pub watched: usize,
    /// Topics (groups) left out, and their series.
    pub left_out: usize,
    pub series: usize,
    /// Series left out on the round before.
    pub before: usize,
    pub max_series: usize,
}

impl SeriesCapped<'_> {
    pub fn emit(self, instruments: &Instruments) {
        let key = self.check.key();
        instruments.set_dropped(
            self.cluster,
            key,
            self.attrs.with([KeyValue::new(attr::CHECK, key)]),
            i64::try_from(self.series).unwrap_or(i64::MAX),
        );
        if self.series == self.before {
            return;
        }
        if self.series > 0 {
            warn!(
                name: "cap.series_capped",
                watched = self.watched,
                left_out = self.left_out,
                series = self.series,
                max_series = self.max_series,
                "{} left out by checks.{key}.max_series; narrow {} or raise the cap.",
                self.check.items(),
                self.check.include(),
            );
        } else {
            info!(
                name: "cap.series_capped",
                "Every watched {} fits under checks.{key}.max_series again.",
                self.check.items().to_lowercase().trim_end_matches('s'),
            );
        }
    }
}
