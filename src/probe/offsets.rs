//! The offsets probe: every interval, the partitions of the watched topics (`topics.include`
//! and `exclude`) with their replicas and in-sync replicas from one metadata request, and
//! their oldest and current offsets from two ListOffsets requests (librdkafka sends one per
//! leader). Reported under the kafkametricsreceiver's names; at most `max_series` series, the
//! rest dropped, logged and counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::cap::{Capped, cap};
use super::{Probe, Schedule};
use crate::config::{NameFilter, SeriesCheckConfig};
use crate::events::cap::{CappedCheck, SeriesCapped};
use crate::events::offsets::{OffsetsRead, PartitionState, WatchedTopic};
use crate::kafka::admin::{Admin, LogEnds, MetadataError, TopicLayout};
use crate::kafka::metadata::ClusterView;
use crate::kafka::native::AdminError;
use crate::telemetry::instruments::ClusterLabels;
use crate::telemetry::{ClusterAttributes, Instruments};

/// Bound on each request of a round.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Series per partition (current and oldest offset, replicas, in-sync replicas) and per topic
/// (its partitions, and those offline).
const SERIES_PER_PARTITION: usize = 4;
const SERIES_PER_TOPIC: usize = 2;

/// Why a round could not read the offsets.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("cannot list the topics")]
    Topics(#[source] MetadataError),
    #[error("cannot read the partitions' offsets")]
    Offsets(#[source] AdminError),
}

/// What the offsets probe needs from its cluster.
pub struct OffsetsParts {
    pub cluster: ClusterLabels,
    pub admin: Admin,
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub topics: NameFilter,
    pub check: SeriesCheckConfig,
    pub instruments: Instruments,
}

pub struct OffsetsProbe {
    parts: OffsetsParts,
    /// What the last round found, to log changes only.
    last: Option<BTreeMap<String, WatchedTopic>>,
    /// Series dropped by the cap on the last round, to log when it changes.
    dropped: usize,
}

/// What one round found: the watched topics, and how many series the cap left out.
#[derive(Clone, Debug, Default)]
pub struct OffsetsReport {
    pub topics: BTreeMap<String, WatchedTopic>,
    pub dropped_topics: usize,
    pub dropped_series: usize,
}

impl OffsetsProbe {
    pub fn new(parts: OffsetsParts) -> Self {
        Self {
            parts,
            last: None,
            dropped: 0,
        }
    }
}

/// The watched topics, in name order, up to `max_series` series; and the topics left out.
fn choose(topics: Vec<TopicLayout>, filter: &NameFilter, max_series: usize) -> Capped<TopicLayout> {
    let mut watched: Vec<TopicLayout> = topics
        .into_iter()
        // Kafka's own internal topics (`__consumer_offsets`, `__transaction_state`) are never
        // watched, whatever the filter.
        .filter(|t| !t.name.starts_with("__") && filter.matches(&t.name))
        .collect();
    watched.sort_by(|a, b| a.name.cmp(&b.name));
    cap(watched, max_series, |t| {
        SERIES_PER_TOPIC + SERIES_PER_PARTITION * t.partitions.len()
    })
}

/// Offsets by (topic, partition), for the partitions that answered.
impl Probe for OffsetsProbe {
    const KIND: &'static str = "offsets";
    type Output = OffsetsReport;
    type Error = OffsetsError;

    fn schedule(&self) -> Schedule {
        Schedule::every(self.parts.check.interval, 3 * REQUEST_TIMEOUT)
    }

    fn describe(&self) -> String {
        "Offsets probe started: partitions, replicas, in-sync replicas and oldest and current offsets of the watched topics.".to_owned()
    }

    /// Cancel-safe: nothing is recorded until both requests have answered.
    async fn probe_once(&mut self) -> Result<OffsetsReport, OffsetsError> {
        let p = &self.parts;
        let all = p
            .admin
            .topics(REQUEST_TIMEOUT)
            .await
            .map_err(OffsetsError::Topics)?;
        let Capped {
            kept: topics,
            left_out: dropped_topics,
            series: dropped_series,
        } = choose(all, &p.topics, p.check.max_series);
        // Partitions without a leader cannot answer ListOffsets.
        let led: Vec<(String, i32)> = topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.leader >= 0)
                    .map(|p| (t.name.clone(), p.id))
            })
            .collect();
        let LogEnds { oldest, current } = p
            .admin
            .log_ends(led, REQUEST_TIMEOUT)
            .await
            .map_err(OffsetsError::Offsets)?;
        let mut states = BTreeMap::new();
        for topic in topics {
            let partitions = topic
                .partitions
                .iter()
                .map(|part| {
                    let key = (topic.name.clone(), part.id);
                    let state = PartitionState {
                        leader: (part.leader >= 0).then_some(part.leader),
                        replicas: part.replicas,
                        in_sync: part.in_sync,
                        oldest: oldest.get(&key).copied(),
                        current: current.get(&key).copied(),
                    };
                    (part.id, state)
                })
                .collect();
            states.insert(topic.name, WatchedTopic { partitions });
        }
        let cluster_id = p.view.borrow().cluster_id.clone();
        OffsetsRead {
            cluster: &p.cluster,
            cluster_id: &cluster_id,
            previous: self.last.as_ref(),
            topics: &states,
        }
        .emit(&p.instruments);
        SeriesCapped {
            cluster: p.cluster.name(),
            attrs: &ClusterAttributes::new(&cluster_id, &p.cluster),
            check: CappedCheck::Offsets,
            watched: states.len(),
            left_out: dropped_topics,
            series: dropped_series,
            before: self.dropped,
            max_series: p.check.max_series,
        }
        .emit(&p.instruments);
        self.dropped = dropped_series;
        self.last = Some(states.clone());
        Ok(OffsetsReport {
            topics: states,
            dropped_topics,
            dropped_series,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pattern;
    use crate::kafka::admin::PartitionLayout;

    fn topic(name: &str, partitions: i32) -> TopicLayout {
        TopicLayout {
            name: name.to_owned(),
            partitions: (0..partitions)
                .map(|id| PartitionLayout {
                    id,
                    leader: 1,
                    replicas: 3,
                    in_sync: 3,
                })
                .collect(),
        }
    }

    fn filter(include: &[&str], exclude: &[&str]) -> NameFilter {
        let patterns = |list: &[&str]| {
            list.iter()
                .map(|p| Pattern(regex::Regex::new(p).unwrap()))
                .collect()
        };
        NameFilter {
            include: patterns(include),
            exclude: patterns(exclude),
        }
    }

    fn names(topics: &[TopicLayout]) -> Vec<&str> {
        topics.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn internal_topics_are_never_watched_and_the_filter_applies() {
        let all = vec![
            topic("orders", 1),
            topic("__consumer_offsets", 50),
            topic("_schemas", 1),
            topic("payments", 1),
        ];
        let Capped { kept, .. } = choose(all.clone(), &filter(&[], &["^_"]), 10_000);
        assert_eq!(names(&kept), ["orders", "payments"]);
        let Capped { kept, .. } = choose(all.clone(), &filter(&[".*"], &[]), 10_000);
        assert_eq!(names(&kept), ["_schemas", "orders", "payments"]);
        let Capped { kept, .. } = choose(all, &filter(&["^pay"], &[]), 10_000);
        assert_eq!(names(&kept), ["payments"]);
    }

    #[test]
    fn the_cap_keeps_whole_topics_in_name_order_and_counts_the_rest() {
        // 2 + 4·2 = 10 series per topic (partitions and offline partitions, four per partition).
        let all = vec![topic("c", 2), topic("a", 2), topic("b", 2)];
        let capped = choose(all, &filter(&[], &[]), 20);
        assert_eq!(names(&capped.kept), ["a", "b"]);
        assert_eq!((capped.left_out, capped.series), (1, 10));
    }
}
