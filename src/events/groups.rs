//! Events of the consumer group probe: lag read, groups that cannot be read, commits older
//! than the log start, and what the series cap leaves out.

use std::collections::BTreeMap;

use opentelemetry::KeyValue;
use serde::Serialize;
use tracing::{info, warn};

use crate::config::LagGranularity;
use crate::telemetry::instruments::{
    ClusterLabels, GroupPartitionPoint, GroupRound, GroupTopicPoint, attr,
};

/// The states `kafka.consumer_group.state` always reports (0 or 1), as kafka_exporter and
/// KMinion name them; a group in another state (`Assigning` or `Reconciling` under the
/// consumer protocol of KIP-848) gets that one as well.
pub const GROUP_STATES: [&str; 5] = [
    "Stable",
    "Empty",
    "PreparingRebalance",
    "CompletingRebalance",
    "Dead",
];

/// Series of `kafka.consumer_group.state` per group.
pub const STATE_SERIES: usize = GROUP_STATES.len();
use crate::telemetry::{ClusterAttributes, Instruments};

/// One consumer group as a round found it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GroupState {
    pub members: usize,
    /// As the coordinator describes it: `Stable`, `Empty`, `PreparingRebalance`, …
    pub state: String,
    /// By (topic, partition).
    #[serde(serialize_with = "serialize_partitions")]
    pub partitions: BTreeMap<(String, i32), PartitionLag>,
}

/// One partition of a group.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PartitionLag {
    pub committed: i64,
    /// Records not consumed: high watermark minus committed offset (minus the log start, when
    /// retention deleted records the group had not read).
    pub lag: i64,
    /// Age of the oldest record not consumed; 0 when caught up, `None` when not measured.
    pub lag_seconds: Option<f64>,
    /// The committed offset is before the log start: retention deleted records the group had
    /// not read.
    pub expired: bool,
}

fn serialize_partitions<S: serde::Serializer>(
    partitions: &BTreeMap<(String, i32), PartitionLag>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let mut map = s.serialize_map(Some(partitions.len()))?;
    for ((topic, partition), lag) in partitions {
        map.serialize_entry(&format!("{topic}/{partition}"), lag)?;
    }
    map.end()
}

impl GroupState {
    pub fn lag(&self) -> i64 {
        self.partitions.values().map(|p| p.lag).sum()
    }
}

/// A round of the consumer group probe: sets the gauges, and logs what changed.
pub struct GroupsRead<'a> {
    pub cluster: &'a ClusterLabels,
    pub cluster_id: &'a str,
    pub previous: Option<&'a BTreeMap<String, GroupState>>,
    pub groups: &'a BTreeMap<String, GroupState>,
    /// Groups whose committed offsets could not be read, with why.
    pub unreadable: &'a BTreeMap<String, String>,
    /// Some broker did not answer the group listing.
    pub partial: bool,
    pub granularity: LagGranularity,
}

impl GroupsRead<'_> {
    pub fn emit(self, instruments: &Instruments) {
        let attrs = ClusterAttributes::new(self.cluster_id, self.cluster);
        let mut round = GroupRound::default();
        for (name, group) in self.groups {
            let group_attrs = attrs.with([KeyValue::new(attr::KMR_GROUP, name.clone())]);
            // Per topic: lag and offsets summed, and the oldest unread record's age.
            let mut sums: BTreeMap<&str, (i64, i64, Option<f64>)> = BTreeMap::new();
            for ((topic, partition), p) in &group.partitions {
                let sum = sums.entry(topic).or_default();
                sum.0 += p.lag;
                sum.1 += p.committed;
                if let Some(seconds) = p.lag_seconds {
                    sum.2 = Some(sum.2.map_or(seconds, |s: f64| s.max(seconds)));
                }
                if self.granularity == LagGranularity::Topic {
                    continue;
                }
                let mut attrs = group_attrs.clone();
                attrs.push(KeyValue::new(attr::KMR_TOPIC, topic.clone()));
                attrs.push(KeyValue::new(attr::KMR_PARTITION, i64::from(*partition)));
                if let Some(seconds) = p.lag_seconds {
                    round.lag_seconds.push((attrs.clone(), seconds));
                }
                round.partitions.push(GroupPartitionPoint {
                    attrs,
                    offset: p.committed,
                    lag: p.lag,
                });
            }
            for (topic, (lag_sum, offset_sum, lag_seconds)) in sums {
                let mut attrs = group_attrs.clone();
                attrs.push(KeyValue::new(attr::KMR_TOPIC, topic.to_owned()));
                if self.granularity == LagGranularity::Topic
                    && let Some(seconds) = lag_seconds
                {
                    round.lag_seconds.push((attrs.clone(), seconds));
                }
                round.topics.push(GroupTopicPoint {
                    attrs,
                    lag_sum,
                    offset_sum,
                });
            }
            let current = group.state.as_str();
            let others =
                (!GROUP_STATES.contains(&current) && !current.is_empty()).then_some(current);
            for state in GROUP_STATES.into_iter().chain(others) {
                let mut attrs = group_attrs.clone();
                attrs.push(KeyValue::new(attr::KMR_STATE, state.to_owned()));
                round.states.push((attrs, i64::from(state == current)));
            }
            round.groups.push((group_attrs, group.members as i64));
        }
        instruments.set_groups(self.cluster.name(), round);

        let first = self.previous.is_none();
        if first {
            info!(
                name: "groups.groups_read",
                groups = self.groups.len(),
                "Reading the lag of the watched consumer groups."
            );
        }
        if self.partial {
            tracing::debug!(
                name: "groups.groups_read",
                "Not every broker answered the consumer group listing; groups they coordinate are missing this round."
            );
        }
        if !self.unreadable.is_empty()
            && (first || self.previous.is_some_and(|p| p.len() != self.groups.len()))
        {
            let (group, why) = self
                .unreadable
                .iter()
                .next()
                .map_or(("", ""), |(g, w)| (g.as_str(), w.as_str()));
            warn!(
                name: "groups.groups_read",
                groups = self.unreadable.len(),
                example = group,
                error = why,
                "Cannot read the committed offsets of some consumer groups; the API key needs DESCRIBE on them (and on their topics). The other checks go on."
            );
        }
        for (name, group) in self.groups {
            for ((topic, partition), p) in &group.partitions {
                let was_expired = self
                    .previous
                    .and_then(|prev| prev.get(name))
                    .and_then(|g| g.partitions.get(&(topic.clone(), *partition)))
                    .is_some_and(|p| p.expired);
                if p.expired && !was_expired {
                    warn!(
                        name: "groups.groups_read",
                        group = %name,
                        topic = %topic,
                        partition,
                        committed = p.committed,
                        "The group's committed offset is before the log start: retention deleted records it had not read. Its lag counts from the log start."
                    );
                }
            }
        }
    }
}

/// The cluster does not answer ListGroups: no consumer group lag from it.
pub struct GroupsUnsupported;

impl GroupsUnsupported {
    pub fn emit(self) {
        info!(
            name: "groups.groups_unsupported",
            "The cluster does not answer ListGroups (an unsupported feature); consumer group lag is not reported for it."
        );
    }
}
