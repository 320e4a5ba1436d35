//! The observable gauges: every probe writes its values into one snapshot per cluster
//! ([`GaugeBoard`]), and the export callbacks registered here only read it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;

use super::instruments::name;
use super::meters::Meters;

/// Reads one gauge's points from a cluster's values.
type ReadGauge = fn(&ClusterGauges, &mut dyn FnMut(i64, &[KeyValue]));

/// Registers every observable gauge on `meters`, each reading `gauges` at export time.
pub(super) fn register(meters: &Meters, gauges: &Arc<GaugeBoard>) {
    let observable =
        |name: &'static str, unit: &'static str, description: &'static str, read: ReadGauge| {
            let board = Arc::clone(gauges);
            meters.i64_observable_gauge(name, unit, description, move |observer| {
                board.read(|cluster| read(cluster, &mut |v, attrs| observer.observe(v, attrs)))
            });
        };
    observable(
        name::REGISTRY_UP,
        "{registry}",
        "1 if the last probe of the Schema Registry passed every stage (DNS, TCP, TLS, HTTP), else 0.",
        |c, observe| {
            if let Some((attrs, up)) = &c.registry_up {
                observe(i64::from(*up), attrs);
            }
        },
    );
    observable(
        name::BROKER_UP,
        "{broker}",
        "1 if the last probe of the broker passed every stage (DNS, TCP, TLS, Kafka), else 0.",
        |c, observe| {
            for (attrs, up) in c.broker_up.values() {
                observe(i64::from(*up), attrs);
            }
        },
    );
    observable(
        name::CLUSTER_BROKERS,
        "{broker}",
        "Brokers in the latest metadata.",
        brokers,
    );
    observable(
        name::BROKERS,
        "{broker}",
        "Brokers in the latest metadata (the kafkametricsreceiver's name for kafka.cluster.brokers).",
        brokers,
    );
    observable(
        name::CLUSTER_UP,
        "{cluster}",
        "1 while the agent can use the cluster (its last metadata request succeeded), 0 from the first failure on; kafka.cluster.requests says why.",
        |c, observe| {
            if let Some((attrs, up)) = &c.cluster_up {
                observe(i64::from(*up), attrs);
            }
        },
    );
    observable(
        name::BROKER_CONTROLLER,
        "{broker}",
        "1 on the broker the cluster reports as controller, 0 on the others (on KRaft clusters the reported controller is any live broker).",
        |c, observe| {
            for (attrs, is) in &c.controller {
                observe(*is, attrs);
            }
        },
    );
    observable(
        name::HEARTBEAT_LEADER_BROKERS,
        "{broker}",
        "Brokers that lead at least one heartbeat partition.",
        |c, observe| {
            if let Some(n) = c.leader_brokers {
                observe(n, &c.heartbeat_attrs);
            }
        },
    );
    observable(
        name::PARTITION_CURRENT_OFFSET,
        "{message}",
        "Offset the next record of the partition will get (high watermark).",
        |c, observe| {
            for p in &c.partitions {
                if let Some(v) = p.current {
                    observe(v, &p.attrs);
                }
            }
        },
    );
    observable(
        name::PARTITION_OLDEST_OFFSET,
        "{message}",
        "Offset of the oldest record the partition keeps (log start).",
        |c, observe| {
            for p in &c.partitions {
                if let Some(v) = p.oldest {
                    observe(v, &p.attrs);
                }
            }
        },
    );
    observable(
        name::PARTITION_REPLICAS,
        "{replica}",
        "Replicas of the partition.",
        |c, observe| {
            for p in &c.partitions {
                observe(p.replicas, &p.attrs);
            }
        },
    );
    observable(
        name::PARTITION_REPLICAS_IN_SYNC,
        "{replica}",
        "In-sync replicas of the partition.",
        |c, observe| {
            for p in &c.partitions {
                observe(p.in_sync, &p.attrs);
            }
        },
    );
    observable(
        name::TOPIC_PARTITIONS,
        "{partition}",
        "Partitions of the topic.",
        |c, observe| {
            for t in &c.topics {
                observe(t.partitions, &t.attrs);
            }
        },
    );
    observable(
        name::TOPIC_PARTITIONS_OFFLINE,
        "{partition}",
        "Partitions of the topic without a leader: they can be neither written nor read.",
        |c, observe| {
            for t in &c.topics {
                observe(t.offline, &t.attrs);
            }
        },
    );
    observable(
        name::GROUP_LAG,
        "{message}",
        "Records of the partition the group has not consumed: high watermark minus committed offset.",
        |c, observe| {
            for p in &c.group_partitions {
                observe(p.lag, &p.attrs);
            }
        },
    );
    observable(
        name::GROUP_OFFSET,
        "{message}",
        "Offset the group committed on the partition.",
        |c, observe| {
            for p in &c.group_partitions {
                observe(p.offset, &p.attrs);
            }
        },
    );
    observable(
        name::GROUP_LAG_SUM,
        "{message}",
        "Lag of the group summed over the topic's partitions.",
        |c, observe| {
            for t in &c.group_topics {
                observe(t.lag_sum, &t.attrs);
            }
        },
    );
    observable(
        name::GROUP_OFFSET_SUM,
        "{message}",
        "Offsets the group committed, summed over the topic's partitions.",
        |c, observe| {
            for t in &c.group_topics {
                observe(t.offset_sum, &t.attrs);
            }
        },
    );
    observable(
        name::GROUP_STATE,
        "{group}",
        "1 for the group's current state (state: Stable, Empty, PreparingRebalance, CompletingRebalance, Dead, …), 0 for the others.",
        |c, observe| {
            for (attrs, is) in &c.group_states {
                observe(*is, attrs);
            }
        },
    );
    observable(
        name::GROUP_MEMBERS,
        "{member}",
        "Members of the group.",
        |c, observe| {
            for (attrs, n) in &c.groups {
                observe(*n, attrs);
            }
        },
    );
    observable(
        name::SERIES_DROPPED,
        "{series}",
        "Series a check did not export because of its max_series cap.",
        |c, observe| {
            for (attrs, n) in c.dropped.values() {
                observe(*n, attrs);
            }
        },
    );
    let board = Arc::clone(gauges);
    meters.f64_observable_gauge(
        name::GROUP_LAG_DURATION,
        "s",
        "Age of the oldest record the group has not consumed on the partition (0 when caught up).",
        move |observer| {
            board.read(|c| {
                for (attrs, v) in &c.group_lag_seconds {
                    observer.observe(*v, attrs);
                }
            });
        },
    );
}

/// One partition's offsets and replication, with its attributes.
#[derive(Clone, Debug)]
pub(crate) struct PartitionPoint {
    pub attrs: Vec<KeyValue>,
    pub current: Option<i64>,
    pub oldest: Option<i64>,
    pub replicas: i64,
    pub in_sync: i64,
}

/// One topic's partition counts, with its attributes.
#[derive(Clone, Debug)]
pub(crate) struct TopicPoint {
    pub attrs: Vec<KeyValue>,
    pub partitions: i64,
    /// Partitions without a leader.
    pub offline: i64,
}

/// One group's lag and committed offsets summed over a topic's partitions.
#[derive(Clone, Debug)]
pub(crate) struct GroupTopicPoint {
    pub attrs: Vec<KeyValue>,
    pub lag_sum: i64,
    pub offset_sum: i64,
}

/// One partition's committed offset and lag for one group, with its attributes.
#[derive(Clone, Debug)]
pub(crate) struct GroupPartitionPoint {
    pub attrs: Vec<KeyValue>,
    pub offset: i64,
    pub lag: i64,
}

/// One round of the consumer group check, as gauge values.
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupRound {
    pub partitions: Vec<GroupPartitionPoint>,
    /// Lag and committed offsets summed per group and topic.
    pub topics: Vec<GroupTopicPoint>,
    /// Members per group.
    pub groups: Vec<(Vec<KeyValue>, i64)>,
    /// Per group and state: 1 for the current state, 0 for the others.
    pub states: Vec<(Vec<KeyValue>, i64)>,
    /// Lag in seconds per group partition, where measured.
    pub lag_seconds: Vec<(Vec<KeyValue>, f64)>,
}

/// Brokers in the latest metadata, under both names (kafka.cluster.brokers, kafka.brokers).
fn brokers(c: &ClusterGauges, observe: &mut dyn FnMut(i64, &[KeyValue])) {
    if let Some(n) = c.brokers {
        observe(n, &c.attrs);
    }
}

/// The gauge values of one cluster.
#[derive(Clone, Debug, Default)]
pub(super) struct ClusterGauges {
    pub(super) registry_up: Option<(Vec<KeyValue>, bool)>,
    pub(super) group_partitions: Vec<GroupPartitionPoint>,
    pub(super) group_topics: Vec<GroupTopicPoint>,
    pub(super) groups: Vec<(Vec<KeyValue>, i64)>,
    pub(super) group_states: Vec<(Vec<KeyValue>, i64)>,
    pub(super) group_lag_seconds: Vec<(Vec<KeyValue>, f64)>,
    pub(super) partitions: Vec<PartitionPoint>,
    pub(super) topics: Vec<TopicPoint>,
    /// Per check: series left out by its cap.
    pub(super) dropped: BTreeMap<&'static str, (Vec<KeyValue>, i64)>,
    /// Whether the last metadata request succeeded, with the cluster's configured attributes.
    pub(super) cluster_up: Option<(Vec<KeyValue>, bool)>,
    /// Cluster attributes every cluster-level point carries.
    pub(super) attrs: Vec<KeyValue>,
    pub(super) brokers: Option<i64>,
    pub(super) controller: Vec<(Vec<KeyValue>, i64)>,
    pub(super) leader_brokers: Option<i64>,
    pub(super) heartbeat_attrs: Vec<KeyValue>,
    /// Per broker: its attributes and whether its last probe passed.
    pub(super) broker_up: BTreeMap<i32, (Vec<KeyValue>, bool)>,
}

/// Snapshot of every cluster's gauges: events write, export callbacks only read.
#[derive(Debug, Default)]
pub(super) struct GaugeBoard {
    clusters: Mutex<BTreeMap<String, ClusterGauges>>,
}

impl GaugeBoard {
    pub(super) fn update(&self, name: &str, change: impl FnOnce(&mut ClusterGauges)) {
        if let Ok(mut clusters) = self.clusters.lock() {
            change(clusters.entry(name.to_owned()).or_default());
        }
    }

    pub(super) fn read(&self, mut each: impl FnMut(&ClusterGauges)) {
        if let Ok(clusters) = self.clusters.lock() {
            clusters.values().for_each(&mut each);
        }
    }
}
