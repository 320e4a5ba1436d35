//! A snapshot of cluster metadata: cluster id, brokers, and the heartbeat topic's partitions.

use opentelemetry::KeyValue;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;
use serde::Serialize;

use crate::telemetry::instruments::attr;

/// The id that stands for the cluster's first bootstrap address until its brokers are known
/// (exported as `kafka.broker.id="bootstrap"`).
pub const BOOTSTRAP_ID: i32 = -1;

/// One broker: as the metadata and DescribeCluster report it, and as the broker probe reaches
/// it. The Schema Registry probe, which reaches its registry through the same stage runner,
/// uses one too, with the bootstrap id and no rack ([`Broker::address`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Broker {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

impl Broker {
    /// An address that is no broker of the metadata (the first bootstrap address, a Schema
    /// Registry).
    pub fn at(host: String, port: u16) -> Self {
        Self {
            id: BOOTSTRAP_ID,
            host,
            port,
            rack: None,
        }
    }

    /// The first bootstrap address, standing for the cluster until its brokers are known.
    pub fn bootstrap(servers: &[String]) -> Option<Self> {
        let (host, port) = servers.first()?.rsplit_once(':')?;
        Some(Self::at(host.to_owned(), port.parse().ok()?))
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The broker's id as a label: its number, or `bootstrap`.
    pub fn label(&self) -> String {
        if self.id == BOOTSTRAP_ID {
            "bootstrap".to_owned()
        } else {
            self.id.to_string()
        }
    }

    /// The broker's metric attributes (cluster attributes first).
    pub fn attributes(&self, cluster: &[KeyValue]) -> Vec<KeyValue> {
        let mut attrs = cluster.to_vec();
        attrs.push(KeyValue::new(attr::BROKER_ID, self.label()));
        if let Some(rack) = &self.rack {
            attrs.push(KeyValue::new(attr::BROKER_RACK, rack.clone()));
        }
        attrs.push(KeyValue::new(attr::SERVER_ADDRESS, self.host.clone()));
        attrs.push(KeyValue::new(attr::SERVER_PORT, i64::from(self.port)));
        attrs
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub id: i32,
    /// Leader broker id; -1 while the partition has none.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// What the cluster reported about the heartbeat topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicState {
    Present(Vec<PartitionInfo>),
    Missing,
    /// The broker answered for the topic with an error (e.g. not authorized).
    Error(RDKafkaErrorCode),
}

/// One metadata snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// False until the first metadata answer: the view is a placeholder.
    pub fetched: bool,
    pub cluster_id: String,
    pub brokers: Vec<Broker>,
    /// The broker the cluster reports as controller (on KRaft, any live broker).
    pub controller: Option<i32>,
    pub topic: TopicState,
    /// The heartbeat topic's id, where the cluster reports one.
    pub topic_id: Option<u128>,
    /// Counts the metadata answers behind this view: a later view always has a higher
    /// count, so "has the metadata been read again since …" is a comparison.
    pub refresh: u64,
    /// Counts the times the heartbeat topic was seen missing and then present again in this
    /// run: a new count means a new topic under the old name.
    pub topic_incarnation: u64,
}

impl ClusterView {
    /// The view before the cluster has answered.
    pub fn unknown() -> Self {
        Self {
            fetched: false,
            cluster_id: UNKNOWN_CLUSTER_ID.to_owned(),
            brokers: Vec::new(),
            controller: None,
            topic: TopicState::Missing,
            topic_id: None,
            refresh: 0,
            topic_incarnation: 0,
        }
    }

    /// Brokers that lead at least one heartbeat partition.
    pub fn leader_brokers(&self) -> std::collections::BTreeSet<i32> {
        self.partitions()
            .iter()
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
            .collect()
    }

    /// Brokers in the metadata that lead no heartbeat partition: their produce path is not
    /// exercised by heartbeats.
    pub fn uncovered_brokers(&self) -> Vec<i32> {
        let leaders = self.leader_brokers();
        self.brokers
            .iter()
            .map(|b| b.id)
            .filter(|id| !leaders.contains(id))
            .collect()
    }

    /// Copies racks from a DescribeCluster answer onto the brokers.
    pub fn with_racks(mut self, racks: &std::collections::BTreeMap<i32, Option<String>>) -> Self {
        for b in &mut self.brokers {
            if let Some(Some(rack)) = racks.get(&b.id) {
                b.rack = Some(rack.clone());
            }
        }
        self
    }

    /// Whether the metadata says the heartbeat topic exists.
    pub fn topic_present(&self) -> bool {
        matches!(self.topic, TopicState::Present(_))
    }

    pub fn partitions(&self) -> &[PartitionInfo] {
        match &self.topic {
            TopicState::Present(p) => p,
            _ => &[],
        }
    }

    pub fn leader_of(&self, partition: i32) -> Option<i32> {
        self.partitions()
            .iter()
            .find(|p| p.id == partition)
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
    }

    pub fn broker(&self, id: i32) -> Option<&Broker> {
        self.brokers.iter().find(|b| b.id == id)
    }
}

/// Cluster id used in metric attributes when the cluster does not report one.
pub const UNKNOWN_CLUSTER_ID: &str = "unknown";

/// Builds a snapshot from a metadata response for `topic`.
pub(crate) fn view_from(
    metadata: &Metadata,
    cluster_id: Option<String>,
    controller: Option<i32>,
    topic: &str,
) -> ClusterView {
    let mut brokers: Vec<Broker> = metadata
        .brokers()
        .iter()
        .map(|b| Broker {
            id: b.id(),
            host: b.host().to_owned(),
            port: u16::try_from(b.port()).unwrap_or_default(),
            rack: None,
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    let topic_state = match metadata.topics().iter().find(|t| t.name() == topic) {
        None => TopicState::Missing,
        Some(t) => match t.error().map(RDKafkaErrorCode::from) {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                TopicState::Missing
            }
            Some(code) => TopicState::Error(code),
            None => {
                let mut partitions: Vec<PartitionInfo> = t
                    .partitions()
                    .iter()
                    .map(|p| PartitionInfo {
                        id: p.id(),
                        leader: p.leader(),
                        replicas: p.replicas().to_vec(),
                        isr: p.isr().to_vec(),
                    })
                    .collect();
                partitions.sort_by_key(|p| p.id);
                if partitions.is_empty() {
                    TopicState::Missing
                } else {
                    TopicState::Present(partitions)
                }
            }
        },
    };
    ClusterView {
        fetched: true,
        cluster_id: cluster_id.unwrap_or_else(|| UNKNOWN_CLUSTER_ID.to_owned()),
        brokers,
        controller,
        topic: topic_state,
        topic_id: None,
        refresh: 0,
        topic_incarnation: 0,
    }
}
