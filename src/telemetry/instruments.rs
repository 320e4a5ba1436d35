//! Metric and attribute names of the contract, and the instruments built once from them.
//!
//! Probes never touch an instrument: they emit events (`crate::events`), and events record
//! through the named methods here, so each name is written once.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};

use super::export::stats::ExportStats;
use super::gauges::{self, GaugeBoard};
pub(crate) use super::gauges::{
    GroupPartitionPoint, GroupRound, GroupTopicPoint, PartitionPoint, TopicPoint,
};
use super::meters::Meters;
use crate::config::{DEFAULT_HISTOGRAM_BOUNDARIES, MessagingNames};

pub use super::names::{SCHEMA_URL, SkipReason, attr, name};

/// Every instrument of the agent, created once and shared by all probes.
#[derive(Clone, Debug)]
pub struct Instruments {
    /// Under the agent's names (`kafka.heartbeat.*`), unless only the conventions' are wanted.
    produce_duration: Option<Histogram<f64>>,
    messages_sent: Option<Counter<u64>>,
    messages_received: Option<Counter<u64>>,
    /// Under the messaging conventions' names, when asked for.
    semconv: Option<SemconvMessaging>,
    end_to_end_duration: Histogram<f64>,
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
    cluster_requests: Counter<u64>,
    commit_duration: Histogram<f64>,
    coordinator_changes: Counter<u64>,
    /// Values of the observable gauges, written through events, read at each export.
    gauges: Arc<GaugeBoard>,
    /// The spans the probes build beside their points.
    pub traces: super::traces::Traces,
}

/// The heartbeat's sends and receives under the OpenTelemetry messaging conventions' names.
#[derive(Clone, Debug)]
struct SemconvMessaging {
    operation_duration: Histogram<f64>,
    sent_messages: Counter<u64>,
    consumed_messages: Counter<u64>,
}

/// The conventions' recommended boundaries for `messaging.client.operation.duration`.
const SEMCONV_DURATION_BOUNDARIES: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// `messaging.operation.name` and `.type` of a heartbeat's send.
fn send_operation(attrs: &[KeyValue]) -> Vec<KeyValue> {
    with_operation(attrs, "send", "send")
}

/// The same of its receive: the consumer's poll.
fn receive_operation(attrs: &[KeyValue]) -> Vec<KeyValue> {
    with_operation(attrs, "poll", "receive")
}

fn with_operation(attrs: &[KeyValue], name: &'static str, kind: &'static str) -> Vec<KeyValue> {
    let mut out = Vec::with_capacity(attrs.len() + 2);
    out.extend_from_slice(attrs);
    out.push(KeyValue::new(attr::MESSAGING_OPERATION_NAME, name));
    out.push(KeyValue::new(attr::MESSAGING_OPERATION_TYPE, kind));
    out
}

/// Registers the agent's own instruments: which build runs, and how its exports fare.
fn register_own(meters: &Meters, stats: &Arc<ExportStats>) {
    let build = [
        KeyValue::new(attr::SERVICE_VERSION, super::SERVICE_VERSION),
        KeyValue::new(attr::VCS_REVISION, super::VCS_REVISION),
    ];
    meters.i64_observable_gauge(
        name::BUILD_INFO,
        "{build}",
        "1, with the version and commit of the running agent.",
        move |observer| observer.observe(1, &build),
    );
    let batches = Arc::clone(stats);
    meters.u64_observable_counter(
        name::EXPORT_BATCHES,
        "{batch}",
        "OTLP export requests by signal and outcome (error.type on failure).",
        move |observer| {
            for (signal, error, n) in batches.batches() {
                let mut attrs = vec![KeyValue::new(attr::OTEL_SIGNAL, signal.as_str())];
                if let Some(error) = error {
                    attrs.push(KeyValue::new(attr::ERROR_TYPE, error));
                }
                observer.observe(n, &attrs);
            }
        },
    );
    let rejected = Arc::clone(stats);
    meters.u64_observable_counter(
        name::EXPORT_POINTS_REJECTED,
        "{point}",
        "Points the receiver refused (partial success, a permanent error) or the full delta buffer dropped.",
        move |observer| {
            for (signal, n) in rejected.rejected() {
                observer.observe(n, &[KeyValue::new(attr::OTEL_SIGNAL, signal.as_str())]);
            }
        },
    );
    let metrics_signal = || {
        [KeyValue::new(
            attr::OTEL_SIGNAL,
            super::export::stats::Signal::Metrics.as_str(),
        )]
    };
    let held = Arc::clone(stats);
    meters.i64_observable_gauge(
        name::EXPORT_BATCHES_HELD,
        "{batch}",
        "Delta export requests held while the collector is away (export.otlp.delta_buffer).",
        move |observer| observer.observe(held.held(), &metrics_signal()),
    );
    let held_bytes = Arc::clone(stats);
    meters.i64_observable_gauge(
        name::EXPORT_BUFFER_SIZE,
        "By",
        "Bytes of the delta export requests held, encoded (export.otlp.delta_buffer_size).",
        move |observer| observer.observe(held_bytes.held_bytes(), &metrics_signal()),
    );
}

impl Instruments {
    pub(crate) fn new(meters: &Meters, stats: &Arc<ExportStats>, names: MessagingNames) -> Self {
        register_own(meters, stats);
        let gauges = Arc::new(GaugeBoard::default());
        gauges::register(meters, &gauges);
        let seconds = |name: &'static str, description: &'static str| {
            meters.f64_histogram(name, "s", description, &DEFAULT_HISTOGRAM_BOUNDARIES)
        };
        let messages = |name: &'static str, description: &'static str| {
            meters.u64_counter(name, "{message}", description)
        };
        let semconv = names.semconv().then(|| SemconvMessaging {
            operation_duration: meters.f64_histogram(
                name::SEMCONV_OPERATION_DURATION,
                "s",
                "Duration of the heartbeat's send: from the send call until the broker acknowledged it (acks=all).",
                &SEMCONV_DURATION_BOUNDARIES,
            ),
            sent_messages: messages(
                name::SEMCONV_SENT_MESSAGES,
                "Heartbeats the producer attempted to send to the broker (error.type on failure).",
            ),
            consumed_messages: messages(
                name::SEMCONV_CONSUMED_MESSAGES,
                "Own heartbeats delivered back by the consumer.",
            ),
        });
        Self {
            produce_duration: names.agent().then(|| {
                seconds(
                    name::PRODUCE_DURATION,
                    "Time from the send call until the broker acknowledged the heartbeat (acks=all).",
                )
            }),
            semconv,
            end_to_end_duration: seconds(
                name::END_TO_END_DURATION,
                "Time from the send call until this agent consumed its own heartbeat back.",
            ),
            messages_sent: names.agent().then(|| {
                messages(
                    name::MESSAGES_SENT,
                    "Heartbeats handed to the producer, by outcome (error.type on failure).",
                )
            }),
            messages_received: names
                .agent()
                .then(|| messages(name::MESSAGES_RECEIVED, "Own heartbeats consumed back.")),
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
            topic_recreations: meters.u64_counter(name::TOPIC_RECREATIONS, "{event}", "The heartbeat topic disappeared and came back, or its offsets went back; heartbeats in flight then are not counted lost."),
            connection_duration: seconds(
                name::BROKER_CONNECTION_DURATION,
                "Time spent in each stage of a broker probe: dns, tcp, tls, kafka (ApiVersions).",
            ),
            connection_checks: meters.u64_counter(name::BROKER_CONNECTION_CHECKS, "{check}", "Broker probes run, by outcome (failing stage and error.type on failure)."),
            registry_duration: seconds(
                name::REGISTRY_CONNECTION_DURATION,
                "Time spent in each stage of a Schema Registry probe: dns, tcp, tls, http.",
            ),
            registry_checks: meters.u64_counter(name::REGISTRY_CHECKS, "{check}", "Schema Registry probes run, by outcome (error.type on failure)."),
            cluster_requests: meters.u64_counter(name::CLUSTER_REQUESTS, "{request}", "Metadata and admin requests to the cluster by kafka.request and outcome (error.type, and kafka.error.code where the broker gave one, on failure); fetch counts the heartbeat consumer's refused fetches."),
            commit_duration: seconds(
                name::COMMIT_DURATION,
                "The commit probe's round trips to its group's coordinator, by kafka.commit.operation: find_coordinator (DescribeConsumerGroups, which names the coordinator), commit (OffsetCommit), fetch (OffsetFetch); error.type on failure.",
            ),
            coordinator_changes: meters.u64_counter(name::COMMIT_COORDINATOR_CHANGES, "{event}", "The commit probe's group coordinator moved to another broker."),
            gauges,
            traces: super::traces::Traces::disabled(),
        }
    }

    /// Instruments that record nowhere, for a one-shot run (`check`) that reports what it
    /// found on the terminal instead.
    pub fn unexported() -> Self {
        Self::new(
            &Meters::new(Vec::new()),
            &Arc::default(),
            MessagingNames::Agent,
        )
    }

    // === heartbeat ===

    pub(crate) fn count_sent(&self, attrs: &[KeyValue]) {
        let attrs = send_operation(attrs);
        if let Some(c) = &self.messages_sent {
            c.add(1, &attrs);
        }
        if let Some(s) = &self.semconv {
            s.sent_messages.add(1, &attrs);
        }
    }

    pub(crate) fn record_produce(&self, latency: Duration, attrs: &[KeyValue]) {
        let attrs = send_operation(attrs);
        if let Some(h) = &self.produce_duration {
            h.record(latency.as_secs_f64(), &attrs);
        }
        if let Some(s) = &self.semconv {
            s.operation_duration.record(latency.as_secs_f64(), &attrs);
        }
    }

    pub(crate) fn count_received(&self, end_to_end: Duration, attrs: &[KeyValue]) {
        let received = receive_operation(attrs);
        if let Some(c) = &self.messages_received {
            c.add(1, &received);
        }
        if let Some(s) = &self.semconv {
            s.consumed_messages.add(1, &received);
        }
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
    /// Only the send side when the heartbeats are not read back: an agent that does not read
    /// exports no receive-side series at all, rather than zeros that would read as "nothing
    /// lost".
    pub(crate) fn zero_partition(&self, partition: &[KeyValue], read_back: bool) {
        let (sent, received) = (send_operation(partition), receive_operation(partition));
        let semconv = self.semconv.as_ref();
        for (counter, attrs) in [
            (self.messages_sent.as_ref(), &sent),
            (semconv.map(|s| &s.sent_messages), &sent),
        ] {
            if let Some(counter) = counter {
                counter.add(0, attrs);
            }
        }
        if !read_back {
            return;
        }
        for (counter, attrs) in [
            (self.messages_received.as_ref(), &received),
            (semconv.map(|s| &s.consumed_messages), &received),
        ] {
            if let Some(counter) = counter {
                counter.add(0, attrs);
            }
        }
        for counter in [
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
        topics: Vec<TopicPoint>,
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
            g.group_states = round.states;
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

    /// Counts one request to the cluster (`attrs`: the cluster's, `kafka.request`, and on
    /// failure `error.type` and `kafka.error.code`).
    pub(crate) fn record_commit(&self, took: Duration, attrs: &[KeyValue]) {
        self.commit_duration.record(took.as_secs_f64(), attrs);
    }

    pub(crate) fn count_coordinator_change(&self, attrs: &[KeyValue]) {
        self.coordinator_changes.add(1, attrs);
    }

    /// Makes the series of coordinator moves exist, at 0.
    pub(crate) fn start_coordinator_changes(&self, attrs: &[KeyValue]) {
        self.coordinator_changes.add(0, attrs);
    }

    pub(crate) fn count_cluster_request(&self, attrs: &[KeyValue]) {
        self.cluster_requests.add(1, attrs);
    }

    /// Sets whether the agent can use the cluster: its last metadata request succeeded.
    pub(crate) fn set_cluster_up(&self, cluster: &str, attrs: Vec<KeyValue>, up: bool) {
        self.gauges
            .update(cluster, |g| g.cluster_up = Some((attrs, up)));
    }

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

    /// The cluster's name and labels, and the agent's zone (`kafka.client.zone`) when known.
    pub fn of(cluster: &crate::config::ClusterConfig) -> Self {
        let mut labels = Self::new(&cluster.name, &cluster.labels);
        if let Some(zone) = &cluster.client_zone {
            let mut attrs = labels.attrs.to_vec();
            attrs.push(KeyValue::new(attr::CLIENT_ZONE, zone.clone()));
            labels.attrs = Arc::from(attrs);
        }
        labels
    }

    /// `kafka.cluster.name` and the configured labels.
    pub fn attrs(&self) -> &[KeyValue] {
        &self.attrs
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
        let mut base = Vec::with_capacity(2 + cluster.attrs.len());
        base.push(KeyValue::new(attr::CLUSTER_ID, cluster_id.to_owned()));
        base.push(KeyValue::new(
            attr::MESSAGING_CLUSTER_ID,
            cluster_id.to_owned(),
        ));
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

/// A failure's attributes: its `error.type`, and `kafka.error.code` where a broker gave one.
pub fn failure_kvs(error: &(dyn std::error::Error + 'static)) -> Vec<KeyValue> {
    let mut attrs = vec![error_kv(crate::error::ErrorKind::of(error))];
    if let Some(code) = crate::error::broker_error_code(error) {
        attrs.push(KeyValue::new(attr::KAFKA_ERROR_CODE, code));
    }
    attrs
}

pub fn reason_kv(reason: SkipReason) -> KeyValue {
    KeyValue::new(attr::REASON, reason.as_str())
}
