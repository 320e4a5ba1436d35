//! Metric and attribute names of the contract, and the instruments built once from them.
//!
//! Probes never touch an instrument: they emit events (`crate::events`), and events record
//! through the named methods here, so each name is written once.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _, ObservableGauge};

use super::gauges::{self, GaugeBoard};
pub(crate) use super::gauges::{GroupPartitionPoint, GroupRound, PartitionPoint};
use crate::config::DEFAULT_HISTOGRAM_BOUNDARIES;

/// Metric names (design.md, "Decided: metric contract").
pub mod name {
    pub const PRODUCE_DURATION: &str = "kafka.heartbeat.produce.duration";
    pub const END_TO_END_DURATION: &str = "kafka.heartbeat.end_to_end.duration";
    pub const MESSAGES_SENT: &str = "kafka.heartbeat.messages.sent";
    pub const MESSAGES_RECEIVED: &str = "kafka.heartbeat.messages.received";
    pub const MESSAGES_LOST: &str = "kafka.heartbeat.messages.lost";
    pub const MESSAGES_DUPLICATED: &str = "kafka.heartbeat.messages.duplicated";
    pub const MESSAGES_OUT_OF_ORDER: &str = "kafka.heartbeat.messages.out_of_order";
    pub const MESSAGES_AMBIGUOUS: &str = "kafka.heartbeat.messages.ambiguous";
    pub const TOPIC_RECREATIONS: &str = "kafka.heartbeat.topic.recreations";
    /// Messages on the heartbeat topic that this agent did not send, or could not decode.
    pub const MESSAGES_SKIPPED: &str = "kafka.heartbeat.messages.skipped";
    pub const BROKER_CONNECTION_DURATION: &str = "kafka.broker.connection.duration";
    pub const BROKER_CONNECTION_CHECKS: &str = "kafka.broker.connection.checks";
    pub const BROKER_UP: &str = "kafka.broker.up";
    pub const CLUSTER_BROKERS: &str = "kafka.cluster.brokers";
    pub const BROKER_CONTROLLER: &str = "kafka.broker.controller";
    pub const HEARTBEAT_LEADER_BROKERS: &str = "kafka.heartbeat.leader.brokers";
    // The OpenTelemetry Collector kafkametricsreceiver's names, so its dashboards work.
    pub const PARTITION_CURRENT_OFFSET: &str = "kafka.partition.current_offset";
    pub const PARTITION_OLDEST_OFFSET: &str = "kafka.partition.oldest_offset";
    pub const PARTITION_REPLICAS: &str = "kafka.partition.replicas";
    pub const PARTITION_REPLICAS_IN_SYNC: &str = "kafka.partition.replicas_in_sync";
    pub const TOPIC_PARTITIONS: &str = "kafka.topic.partitions";
    pub const GROUP_LAG: &str = "kafka.consumer_group.lag";
    pub const GROUP_LAG_SUM: &str = "kafka.consumer_group.lag_sum";
    pub const GROUP_OFFSET: &str = "kafka.consumer_group.offset";
    pub const GROUP_MEMBERS: &str = "kafka.consumer_group.members";
    pub const GROUP_LAG_DURATION: &str = "kafka.consumer_group.lag.duration";
    pub const REGISTRY_CONNECTION_DURATION: &str = "schema_registry.connection.duration";
    pub const REGISTRY_CHECKS: &str = "schema_registry.checks";
    pub const REGISTRY_UP: &str = "schema_registry.up";
    /// Series a check left out because of its `max_series` cap.
    pub const SERIES_DROPPED: &str = "cc_heartbeat.series.dropped";
}

/// Attribute keys.
pub mod attr {
    pub const CLUSTER_ID: &str = "kafka.cluster.id";
    pub const CLUSTER_NAME: &str = "kafka.cluster.name";
    pub const PARTITION: &str = "messaging.destination.partition.id";
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    pub const DESTINATION_NAME: &str = "messaging.destination.name";
    pub const BROKER_ID: &str = "kafka.broker.id";
    pub const BROKER_RACK: &str = "kafka.broker.rack";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const SERVER_PORT: &str = "server.port";
    pub const CONNECTION_STAGE: &str = "kafka.connection.stage";
    pub const ERROR_TYPE: &str = "error.type";
    /// Why a message was skipped: see [`super::SkipReason`].
    pub const REASON: &str = "cc_heartbeat.skip.reason";
    /// The kafkametricsreceiver's keys: topic name, partition as an integer.
    pub const KMR_TOPIC: &str = "topic";
    pub const KMR_PARTITION: &str = "partition";
    pub const KMR_GROUP: &str = "group";
    pub const REGISTRY_NAME: &str = "schema_registry.name";
    pub const REGISTRY_STAGE: &str = "schema_registry.stage";
    /// Which check a dropped-series count is of.
    pub const CHECK: &str = "cc_heartbeat.check";
}

/// Why a consumed message was not counted as one of this agent's heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// A well-formed heartbeat of another agent (or an earlier run of this one).
    Foreign,
    /// Not a heartbeat payload at all.
    Undecodable,
    /// This run's heartbeat, but older than the bookkeeping window remembers.
    Stale,
    /// This run's heartbeat, found in a partition other than the one it was sent to.
    Misplaced,
    /// A heartbeat of a later payload version (an upgraded agent shares the topic).
    NewerVersion,
    /// This run's heartbeat, the same record read a second time (the consumer fetched it
    /// again, as it may after a leader change): the topic holds it once.
    Reread,
}

impl SkipReason {
    pub const ALL: [SkipReason; 6] = [
        Self::Foreign,
        Self::Undecodable,
        Self::Stale,
        Self::Misplaced,
        Self::NewerVersion,
        Self::Reread,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Foreign => "foreign",
            Self::Undecodable => "undecodable",
            Self::Stale => "stale",
            Self::Misplaced => "misplaced",
            Self::NewerVersion => "newer_version",
            Self::Reread => "reread",
        }
    }
}

/// Every instrument of the agent, created once and shared by all probes.
#[derive(Clone, Debug)]
pub struct Instruments {
    produce_duration: Histogram<f64>,
    end_to_end_duration: Histogram<f64>,
    messages_sent: Counter<u64>,
    messages_received: Counter<u64>,
    messages_lost: Counter<u64>,
    messages_duplicated: Counter<u64>,
    messages_out_of_order: Counter<u64>,
    messages_skipped: Counter<u64>,
    messages_ambiguous: Counter<u64>,
    topic_recreations: Counter<u64>,
    connection_duration: Histogram<f64>,
    connection_checks: Counter<u64>,
    registry_duration: Histogram<f64>,
    registry_checks: Counter<u64>,
    /// Values of the observable gauges, written through events, read at each export.
    gauges: Arc<GaugeBoard>,
    /// Keeps the observable gauges' callbacks registered.
    _observable: Arc<Vec<ObservableGauge<i64>>>,
    _observable_seconds: Arc<ObservableGauge<f64>>,
}

impl Instruments {
    pub fn new(meter: &Meter) -> Self {
        let gauges = Arc::new(GaugeBoard::default());
        let (observable_gauges, lag_seconds) = gauges::register(meter, &gauges);
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DEFAULT_HISTOGRAM_BOUNDARIES.to_vec())
                .build()
        };
        let messages = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_unit("{message}")
                .with_description(description)
                .build()
        };
        Self {
            produce_duration: seconds(
                name::PRODUCE_DURATION,
                "Time from the send call until the broker acknowledged the heartbeat (acks=all).",
            ),
            end_to_end_duration: seconds(
                name::END_TO_END_DURATION,
                "Time from the send call until this agent consumed its own heartbeat back.",
            ),
            messages_sent: messages(
                name::MESSAGES_SENT,
                "Heartbeats handed to the producer, by outcome (error.type on failure).",
            ),
            messages_received: messages(name::MESSAGES_RECEIVED, "Own heartbeats consumed back."),
            messages_lost: messages(
                name::MESSAGES_LOST,
                "Acknowledged heartbeats not consumed back within the loss timeout.",
            ),
            messages_duplicated: messages(
                name::MESSAGES_DUPLICATED,
                "Heartbeats whose sequence number was seen twice.",
            ),
            messages_out_of_order: messages(
                name::MESSAGES_OUT_OF_ORDER,
                "Heartbeats with a sequence number lower than one already seen on the partition.",
            ),
            messages_skipped: messages(
                name::MESSAGES_SKIPPED,
                "Messages on the heartbeat topic skipped, by reason: foreign, undecodable, stale, misplaced, newer_version.",
            ),
            messages_ambiguous: messages(
                name::MESSAGES_AMBIGUOUS,
                "Heartbeats whose send failed client-side (error.type, e.g. timeout) but that were consumed back: written after all.",
            ),
            topic_recreations: meter
                .u64_counter(name::TOPIC_RECREATIONS)
                .with_unit("{event}")
                .with_description(
                    "The heartbeat topic disappeared and came back, or its offsets went back; heartbeats in flight then are not counted lost.",
                )
                .build(),
            connection_duration: seconds(
                name::BROKER_CONNECTION_DURATION,
                "Time spent in each stage of a broker probe: dns, tcp, tls, kafka (ApiVersions).",
            ),
            connection_checks: meter
                .u64_counter(name::BROKER_CONNECTION_CHECKS)
                .with_unit("{check}")
                .with_description(
                    "Broker probes run, by outcome (failing stage and error.type on failure).",
                )
                .build(),
            registry_duration: seconds(
                name::REGISTRY_CONNECTION_DURATION,
                "Time spent in each stage of a Schema Registry probe: dns, tcp, tls, http.",
            ),
            registry_checks: meter
                .u64_counter(name::REGISTRY_CHECKS)
                .with_unit("{check}")
                .with_description("Schema Registry probes run, by outcome (error.type on failure).")
                .build(),
            gauges,
            _observable: Arc::new(observable_gauges),
            _observable_seconds: Arc::new(lag_seconds),
        }
    }

    /// Instruments that record nowhere, for a one-shot run (`check`) that reports what it
    /// found on the terminal instead.
    pub fn unexported() -> Self {
        let provider = opentelemetry::metrics::noop::NoopMeterProvider::new();
        Self::new(&provider.meter(crate::telemetry::SERVICE_NAME))
    }

    // === heartbeat ===

    pub(crate) fn count_sent(&self, attrs: &[KeyValue]) {
        self.messages_sent.add(1, attrs);
    }

    pub(crate) fn record_produce(&self, latency: Duration, attrs: &[KeyValue]) {
        self.produce_duration.record(latency.as_secs_f64(), attrs);
    }

    pub(crate) fn count_received(&self, end_to_end: Duration, attrs: &[KeyValue]) {
        self.messages_received.add(1, attrs);
        self.end_to_end_duration
            .record(end_to_end.as_secs_f64(), attrs);
    }

    pub(crate) fn count_lost(&self, attrs: &[KeyValue]) {
        self.messages_lost.add(1, attrs);
    }

    pub(crate) fn count_duplicated(&self, attrs: &[KeyValue]) {
        self.messages_duplicated.add(1, attrs);
    }

    pub(crate) fn count_out_of_order(&self, attrs: &[KeyValue]) {
        self.messages_out_of_order.add(1, attrs);
    }

    pub(crate) fn count_skipped(&self, attrs: &[KeyValue]) {
        self.messages_skipped.add(1, attrs);
    }

    pub(crate) fn count_ambiguous(&self, attrs: &[KeyValue]) {
        self.messages_ambiguous.add(1, attrs);
    }

    /// Counts a recreation of the heartbeat topic (`count: false` starts the series at 0).
    pub(crate) fn count_recreation(&self, cluster: &[KeyValue], count: bool) {
        self.topic_recreations.add(u64::from(count), cluster);
    }

    /// Starts a partition's counters at 0, so "nothing lost" is a series at 0 rather than no
    /// data, and rates and alerts work from the first export.
    pub(crate) fn zero_partition(&self, partition: &[KeyValue]) {
        for counter in [
            &self.messages_sent,
            &self.messages_received,
            &self.messages_lost,
            &self.messages_duplicated,
            &self.messages_out_of_order,
        ] {
            counter.add(0, partition);
        }
        for reason in SkipReason::ALL {
            let mut attrs = partition.to_vec();
            attrs.push(KeyValue::new(attr::REASON, reason.as_str()));
            self.messages_skipped.add(0, &attrs);
        }
    }

    // === brokers ===

    pub(crate) fn record_stage(&self, took: Duration, attrs: &[KeyValue]) {
        self.connection_duration.record(took.as_secs_f64(), attrs);
    }

    pub(crate) fn count_check(&self, attrs: &[KeyValue]) {
        self.connection_checks.add(1, attrs);
    }

    pub(crate) fn set_broker_up(&self, cluster: &str, broker: i32, attrs: Vec<KeyValue>, up: bool) {
        self.gauges.update(cluster, |g| {
            g.broker_up.insert(broker, (attrs, up));
        });
    }

    pub(crate) fn remove_broker_up(&self, cluster: &str, broker: i32) {
        self.gauges.update(cluster, |g| {
            g.broker_up.remove(&broker);
        });
    }

    // === Schema Registry ===

    pub(crate) fn record_registry_stage(&self, took: Duration, attrs: &[KeyValue]) {
        self.registry_duration.record(took.as_secs_f64(), attrs);
    }

    pub(crate) fn count_registry_check(&self, attrs: &[KeyValue]) {
        self.registry_checks.add(1, attrs);
    }

    pub(crate) fn set_registry_up(&self, cluster: &str, attrs: Vec<KeyValue>, up: bool) {
        self.gauges
            .update(cluster, |g| g.registry_up = Some((attrs, up)));
    }

    // === topics and partitions ===

    /// Replaces the cluster's partition and topic gauges with one round's values.
    pub(crate) fn set_partitions(
        &self,
        cluster: &str,
        partitions: Vec<PartitionPoint>,
        topics: Vec<(Vec<KeyValue>, i64)>,
    ) {
        self.gauges.update(cluster, |g| {
            g.partitions = partitions;
            g.topics = topics;
        });
    }

    /// Replaces the cluster's consumer group gauges with one round's values.
    pub(crate) fn set_groups(&self, cluster: &str, round: GroupRound) {
        self.gauges.update(cluster, |g| {
            g.group_partitions = round.partitions;
            g.group_topics = round.topics;
            g.groups = round.groups;
            g.group_lag_seconds = round.lag_seconds;
        });
    }

    /// Sets how many series `check` left out on its last round.
    pub(crate) fn set_dropped(
        &self,
        cluster: &str,
        check: &'static str,
        attrs: Vec<KeyValue>,
        n: i64,
    ) {
        self.gauges.update(cluster, |g| {
            g.dropped.insert(check, (attrs, n));
        });
    }

    // === cluster ===

    pub(crate) fn set_cluster(&self, cluster: &str, gauges: ClusterLevel) {
        self.gauges.update(cluster, |g| {
            g.attrs = gauges.attrs;
            g.brokers = Some(gauges.brokers);
            g.controller = gauges.controller;
            g.leader_brokers = gauges.leader_brokers;
            g.heartbeat_attrs = gauges.heartbeat_attrs;
        });
    }
}

/// The cluster-level gauge values of one metadata view.
#[derive(Clone, Debug)]
pub(crate) struct ClusterLevel {
    pub attrs: Vec<KeyValue>,
    pub brokers: i64,
    /// Per broker: its attributes, and 1 on the controller, 0 on the others.
    pub controller: Vec<(Vec<KeyValue>, i64)>,
    pub leader_brokers: Option<i64>,
    /// Attributes of the heartbeat-level gauge (`leader_brokers`).
    pub heartbeat_attrs: Vec<KeyValue>,
}

/// A cluster as the config names it: its name, and the attributes every one of its points
/// carries whatever the cluster reports (`kafka.cluster.name` and the configured `labels`).
#[derive(Clone, Debug)]
pub struct ClusterLabels {
    name: Arc<str>,
    attrs: Arc<[KeyValue]>,
}

impl ClusterLabels {
    pub fn new<'a>(name: &str, labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        let attrs: Vec<KeyValue> =
            std::iter::once(KeyValue::new(attr::CLUSTER_NAME, name.to_owned()))
                .chain(
                    labels
                        .into_iter()
                        .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
                )
                .collect();
        Self {
            name: Arc::from(name),
            attrs: Arc::from(attrs),
        }
    }

    pub fn of(cluster: &crate::config::ClusterConfig) -> Self {
        Self::new(&cluster.name, &cluster.labels)
    }

    /// The configured name (logs, and the key of the cluster's gauges).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for ClusterLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// The attributes every point of one cluster carries.
#[derive(Clone, Debug)]
pub struct ClusterAttributes {
    cluster_id: String,
    base: Vec<KeyValue>,
}

impl ClusterAttributes {
    pub fn new(cluster_id: &str, cluster: &ClusterLabels) -> Self {
        let mut base = Vec::with_capacity(1 + cluster.attrs.len());
        base.push(KeyValue::new(attr::CLUSTER_ID, cluster_id.to_owned()));
        base.extend(cluster.attrs.iter().cloned());
        Self {
            cluster_id: cluster_id.to_owned(),
            base,
        }
    }

    /// The same, for the heartbeat's points: with the topic as the messaging semantic
    /// conventions name it.
    #[must_use]
    pub fn for_heartbeat(mut self, topic: &str) -> Self {
        self.base.extend([
            KeyValue::new(attr::MESSAGING_SYSTEM, "kafka"),
            KeyValue::new(attr::DESTINATION_NAME, topic.to_owned()),
        ]);
        self
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn base(&self) -> &[KeyValue] {
        &self.base
    }

    /// Cluster attributes plus `extra`.
    pub fn with(&self, extra: impl IntoIterator<Item = KeyValue>) -> Vec<KeyValue> {
        let mut attrs = self.base.to_vec();
        attrs.extend(extra);
        attrs
    }
}

pub fn partition_kv(partition: i32) -> KeyValue {
    KeyValue::new(attr::PARTITION, partition.to_string())
}

pub fn broker_kv(broker: i32) -> KeyValue {
    KeyValue::new(attr::BROKER_ID, broker.to_string())
}

pub fn error_kv(kind: crate::error::ErrorKind) -> KeyValue {
    KeyValue::new(attr::ERROR_TYPE, kind.as_str())
}

pub fn reason_kv(reason: SkipReason) -> KeyValue {
    KeyValue::new(attr::REASON, reason.as_str())
}
