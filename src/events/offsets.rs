//! Events of the offsets probe: the partitions' offsets and replication read, under-replicated
//! and leaderless partitions as they start and end, and what the series cap leaves out.

use std::collections::BTreeMap;

use opentelemetry::KeyValue;
use serde::Serialize;
use tracing::{info, warn};

use crate::telemetry::instruments::{ClusterLabels, PartitionPoint, TopicPoint, attr};
use crate::telemetry::{ClusterAttributes, Instruments};

/// At most this many partitions are named one by one in a round's log; the rest are counted.
const NAMED_PER_ROUND: usize = 20;

/// One topic as a round of the offsets probe found it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WatchedTopic {
    pub partitions: BTreeMap<i32, PartitionState>,
}

/// One partition as a round of the offsets probe found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionState {
    pub leader: Option<i32>,
    pub replicas: usize,
    pub in_sync: usize,
    /// Log start offset, when its leader answered.
    pub oldest: Option<i64>,
    /// High watermark, when its leader answered.
    pub current: Option<i64>,
}

impl PartitionState {
    pub fn under_replicated(&self) -> bool {
        self.in_sync < self.replicas
    }
}

/// A round of the offsets probe: sets the partition and topic gauges, and logs what changed.
pub struct OffsetsRead<'a> {
    pub cluster: &'a ClusterLabels,
    pub cluster_id: &'a str,
    pub previous: Option<&'a BTreeMap<String, WatchedTopic>>,
    pub topics: &'a BTreeMap<String, WatchedTopic>,
}

impl OffsetsRead<'_> {
    pub fn emit(self, instruments: &Instruments) {
        let attrs = ClusterAttributes::new(self.cluster_id, self.cluster);
        let mut points = Vec::new();
        let mut topic_points = Vec::with_capacity(self.topics.len());
        for (name, topic) in self.topics {
            let topic_attrs = attrs.with([KeyValue::new(attr::KMR_TOPIC, name.clone())]);
            for (id, p) in &topic.partitions {
                let mut attrs = topic_attrs.clone();
                attrs.push(KeyValue::new(attr::KMR_PARTITION, i64::from(*id)));
                points.push(PartitionPoint {
                    attrs,
                    current: p.current,
                    oldest: p.oldest,
                    replicas: p.replicas as i64,
                    in_sync: p.in_sync as i64,
                });
            }
            topic_points.push(TopicPoint {
                attrs: topic_attrs,
                partitions: topic.partitions.len() as i64,
                offline: topic
                    .partitions
                    .values()
                    .filter(|p| p.leader.is_none())
                    .count() as i64,
            });
        }
        instruments.set_partitions(self.cluster.name(), points, topic_points);

        if self.previous.is_none() {
            let partitions: usize = self.topics.values().map(|t| t.partitions.len()).sum();
            info!(
                name: "offsets.offsets_read",
                topics = self.topics.len(),
                partitions, "Reading the offsets and replication of the watched topics."
            );
        }
        self.log_replication();
    }

    /// Partitions that became under-replicated or leaderless, and those that recovered.
    fn log_replication(&self) {
        let before = |topic: &str, id: i32| -> Option<PartitionState> {
            self.previous?.get(topic)?.partitions.get(&id).copied()
        };
        let mut named = 0;
        let mut unnamed = 0;
        for (name, topic) in self.topics {
            for (id, now) in &topic.partitions {
                let was = before(name, *id);
                let was_under = was.is_some_and(|w| w.under_replicated());
                let was_leaderless = was.is_some_and(|w| w.leader.is_none());
                let changed =
                    now.under_replicated() != was_under || now.leader.is_none() != was_leaderless;
                // On the first round only problems are news.
                let news =
                    changed && (was.is_some() || now.under_replicated() || now.leader.is_none());
                if !news {
                    continue;
                }
                if named == NAMED_PER_ROUND {
                    unnamed += 1;
                    continue;
                }
                named += 1;
                if now.leader.is_none() {
                    warn!(name: "offsets.offsets_read", topic = %name, partition = id, "Partition has no leader: it can be neither written nor read.");
                } else if now.under_replicated() {
                    warn!(
                        name: "offsets.offsets_read",
                        topic = %name,
                        partition = id,
                        in_sync = now.in_sync,
                        replicas = now.replicas,
                        "Partition is under-replicated: fewer replicas in sync than assigned."
                    );
                } else {
                    info!(
                        name: "offsets.offsets_read",
                        topic = %name,
                        partition = id,
                        replicas = now.replicas,
                        "Partition has a leader and every replica in sync again."
                    );
                }
            }
        }
        if unnamed > 0 {
            warn!(
                name: "offsets.offsets_read",
                more = unnamed,
                "More partitions changed replication state this round than are logged one by one."
            );
        }
    }
}
