//! The names of the metric contract (design.md, "Decided: metric contract" and the sections
//! added since), its attribute keys, and the bounded values some attributes take.

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
    // Cluster health, the agent's own, and what was only logged before.
    pub const CLUSTER_UP: &str = "kafka.cluster.up";
    pub const CLUSTER_REQUESTS: &str = "kafka.cluster.requests";
    /// The kafkametricsreceiver's name for the broker count (beside `kafka.cluster.brokers`).
    pub const BROKERS: &str = "kafka.brokers";
    pub const GROUP_OFFSET_SUM: &str = "kafka.consumer_group.offset_sum";
    pub const GROUP_STATE: &str = "kafka.consumer_group.state";
    pub const TOPIC_PARTITIONS_OFFLINE: &str = "kafka.topic.partitions.offline";
    pub const COMMIT_DURATION: &str = "kafka.commit.duration";
    pub const COMMIT_COORDINATOR_CHANGES: &str = "kafka.commit.coordinator.changes";
    pub const BUILD_INFO: &str = "cc_heartbeat.build.info";
    pub const EXPORT_BATCHES: &str = "cc_heartbeat.export.batches";
    pub const EXPORT_POINTS_REJECTED: &str = "cc_heartbeat.export.points.rejected";
    pub const EXPORT_BATCHES_HELD: &str = "cc_heartbeat.export.batches.held";
    pub const EXPORT_BUFFER_SIZE: &str = "cc_heartbeat.export.buffer.size";
    // The OpenTelemetry messaging conventions' names for the heartbeat's sends and receives
    // (`export.messaging_names`, `OTEL_SEMCONV_STABILITY_OPT_IN`).
    pub const SEMCONV_OPERATION_DURATION: &str = "messaging.client.operation.duration";
    pub const SEMCONV_SENT_MESSAGES: &str = "messaging.client.sent.messages";
    pub const SEMCONV_CONSUMED_MESSAGES: &str = "messaging.client.consumed.messages";
}

/// The version of the OpenTelemetry semantic conventions the names and attributes follow:
/// the instrumentation scope's schema URL.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.36.0";

/// Attribute keys.
pub mod attr {
    pub const CLUSTER_ID: &str = "kafka.cluster.id";
    pub const CLUSTER_NAME: &str = "kafka.cluster.name";
    pub const PARTITION: &str = "messaging.destination.partition.id";
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    pub const DESTINATION_NAME: &str = "messaging.destination.name";
    pub const BROKER_ID: &str = "kafka.broker.id";
    pub const BROKER_RACK: &str = "kafka.broker.rack";
    /// The agent's zone, the client side of a path to a broker's rack.
    pub const CLIENT_ZONE: &str = "kafka.client.zone";
    /// The commit probe's step: `find_coordinator`, `commit`, `fetch`.
    pub const COMMIT_OPERATION: &str = "kafka.commit.operation";
    pub const COORDINATOR_ID: &str = "kafka.coordinator.id";
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
    /// Which request to the cluster: `metadata`, `create_topic`, `list_offsets`, …
    pub const KAFKA_REQUEST: &str = "kafka.request";
    /// The Kafka protocol's name of the error a broker answered with.
    pub const KAFKA_ERROR_CODE: &str = "kafka.error.code";
    pub const KMR_STATE: &str = "state";
    pub const SERVICE_VERSION: &str = "service.version";
    pub const VCS_REVISION: &str = "vcs.revision";
    pub const OTEL_SIGNAL: &str = "otel.signal";
    pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
    pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
    /// The conventions' key for the cluster id, beside the kafkametricsreceiver's.
    pub const MESSAGING_CLUSTER_ID: &str = "messaging.kafka.cluster.id";
    /// The offset a heartbeat was read back from (the conventions' key).
    pub const MESSAGING_OFFSET: &str = "messaging.kafka.offset";
    /// A heartbeat's sequence number on its partition (spans).
    pub const HEARTBEAT_SEQUENCE: &str = "cc_heartbeat.heartbeat.sequence";
    /// What became of a heartbeat, on its spans: `acked`, `failed`, `received`, `slow`,
    /// `late`, `out_of_order`, `ambiguous`, `duplicated`, `lost`.
    pub const HEARTBEAT_OUTCOME: &str = "cc_heartbeat.heartbeat.outcome";
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
