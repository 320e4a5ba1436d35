//! Metric and attribute names of the contract, and the instruments built once from them.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

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
    /// Messages on the heartbeat topic that this agent did not send, or could not decode.
    pub const MESSAGES_SKIPPED: &str = "kafka.heartbeat.messages.skipped";
}

/// Attribute keys.
pub mod attr {
    pub const CLUSTER_ID: &str = "kafka.cluster.id";
    pub const CLUSTER_NAME: &str = "kafka.cluster.name";
    pub const PARTITION: &str = "messaging.destination.partition.id";
    pub const BROKER_ID: &str = "kafka.broker.id";
    pub const ERROR_TYPE: &str = "error.type";
    /// Why a message was skipped: see [`super::SkipReason`].
    pub const REASON: &str = "reason";
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
}

impl SkipReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Foreign => "foreign",
            Self::Undecodable => "undecodable",
            Self::Stale => "stale",
        }
    }
}

/// Every instrument of the agent, created once and shared by all probes.
#[derive(Clone, Debug)]
pub struct Instruments {
    pub produce_duration: Histogram<f64>,
    pub end_to_end_duration: Histogram<f64>,
    pub messages_sent: Counter<u64>,
    pub messages_received: Counter<u64>,
    pub messages_lost: Counter<u64>,
    pub messages_duplicated: Counter<u64>,
    pub messages_out_of_order: Counter<u64>,
    pub messages_skipped: Counter<u64>,
}

impl Instruments {
    pub fn new(meter: &Meter) -> Self {
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
                "Messages on the heartbeat topic skipped: another agent's (foreign), not a heartbeat (undecodable), or too old (stale).",
            ),
        }
    }
}

/// The attributes every point of one cluster carries.
#[derive(Clone, Debug)]
pub struct ClusterAttributes {
    cluster_id: String,
    base: [KeyValue; 2],
}

impl ClusterAttributes {
    pub fn new(cluster_id: &str, cluster_name: &str) -> Self {
        Self {
            cluster_id: cluster_id.to_owned(),
            base: [
                KeyValue::new(attr::CLUSTER_ID, cluster_id.to_owned()),
                KeyValue::new(attr::CLUSTER_NAME, cluster_name.to_owned()),
            ],
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
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
