//! Cluster-level requests, made on the cluster's producer handle: metadata snapshots,
//! DescribeCluster, DescribeTopics, and creating the heartbeat topic.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::Client;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::metadata::{ClusterView, view_from};
use super::native::coordinator::{self, GroupCoordinator};
use super::native::groups::{self, CommittedOffset, GroupSummary};
use super::native::offsets::{self, OffsetSpec, PartitionOffset};
use super::native::{self, AdminError, ClusterDescription};
use super::producer::{DeliveryContext, Producer};
use super::{LibrdkafkaLog, Refused};
use crate::config::HeartbeatConfig;

/// A metadata request that failed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata request failed")]
    Request(#[source] KafkaError),
    #[error(transparent)]
    Refused(Refused),
    #[error("the metadata request did not run")]
    Task(#[source] tokio::task::JoinError),
}

/// A failed metadata request, blamed on the brokers refusing the client (TLS, authentication,
/// an ACL) when they have since its last successful request.
fn request_failed(error: KafkaError, log: &LibrdkafkaLog) -> MetadataError {
    match log.refused() {
        Some(refused) => MetadataError::Refused(refused),
        None => MetadataError::Request(error),
    }
}

/// Creating the heartbeat topic failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateTopicError {
    #[error("the create-topic request failed")]
    Request(#[source] AdminError),
    #[error("this agent is not allowed to create it; create {plan} or grant CREATE on the topic")]
    NotAllowed {
        plan: String,
        #[source]
        code: RDKafkaErrorCode,
    },
    #[error("the cluster refused to create {plan}")]
    Refused {
        plan: String,
        #[source]
        code: RDKafkaErrorCode,
    },
}

/// A request the agent makes to the cluster, as `kafka.request` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Request {
    Metadata,
    DescribeCluster,
    DescribeTopics,
    CreateTopic,
    ListOffsets,
    ListGroups,
    OffsetFetch,
    /// DescribeConsumerGroups (the commit probe's look at its group and coordinator).
    DescribeGroup,
    OffsetCommit,
    /// The heartbeat consumer's fetches: librdkafka makes them, only refusals are seen.
    Fetch,
}

impl Request {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Metadata => "metadata",
            Self::DescribeCluster => "describe_cluster",
            Self::DescribeTopics => "describe_topics",
            Self::CreateTopic => "create_topic",
            Self::ListOffsets => "list_offsets",
            Self::ListGroups => "list_groups",
            Self::OffsetFetch => "offset_fetch",
            Self::DescribeGroup => "describe_group",
            Self::OffsetCommit => "offset_commit",
            Self::Fetch => "fetch",
        }
    }
}

/// Told of every request an [`Admin`] made and how it ended (`Some(error)` on failure).
pub trait ObserveRequests: Send + Sync {
    fn observe(&self, request: Request, error: Option<&(dyn std::error::Error + 'static)>);
}

/// The cluster-level requests of one cluster, made on its producer's handle; cheap to clone.
#[derive(Clone)]
pub struct Admin {
    producer: Producer,
    observer: Option<Arc<dyn ObserveRequests>>,
}

impl Admin {
    pub fn new(producer: Producer) -> Self {
        Self {
            producer,
            observer: None,
        }
    }

    /// The same, telling `observer` of every request.
    #[must_use]
    pub fn observed(mut self, observer: Arc<dyn ObserveRequests>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Tells the observer how `request` ended, and hands the result back.
    fn settle<T, E: std::error::Error + 'static>(
        &self,
        request: Request,
        result: Result<T, E>,
    ) -> Result<T, E> {
        if let Some(observer) = &self.observer {
            observer.observe(
                request,
                result
                    .as_ref()
                    .err()
                    .map(|e| e as &(dyn std::error::Error + 'static)),
            );
        }
        result
    }

    /// Runs one librdkafka admin call (`name`, for a task that did not run) off the async
    /// threads, and tells the observer how `request` ended.
    async fn native<T: Send + 'static>(
        &self,
        request: Request,
        name: &'static str,
        call: impl FnOnce(&Client<DeliveryContext>) -> Result<T, AdminError> + Send + 'static,
    ) -> Result<T, AdminError> {
        let result = self
            .blocking(call)
            .await
            .map_err(|source| AdminError::Task {
                request: name,
                source,
            })
            .and_then(|r| r);
        self.settle(request, result)
    }

    /// Runs `request` on the producer's client, off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        request: impl FnOnce(&Client<DeliveryContext>) -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || request(producer.client())).await
    }

    /// A metadata snapshot for `topic`.
    pub async fn metadata(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<ClusterView, MetadataError> {
        let topic = topic.to_owned();
        let log = self.producer.log().clone();
        let result = self
            .blocking(move |client| {
                let metadata = client
                    .fetch_metadata(Some(&topic), timeout)
                    .map_err(|e| request_failed(e, &log))?;
                log.accepted();
                // The metadata response carried the cluster id and controller; librdkafka has
                // them cached by now.
                let cluster_id = client.fetch_cluster_id(Duration::from_millis(500));
                let controller = native::controller_id(client, Duration::from_millis(500));
                Ok(view_from(&metadata, cluster_id, controller, &topic))
            })
            .await
            .map_err(MetadataError::Task)
            .and_then(|r| r);
        self.settle(Request::Metadata, result)
    }

    /// Every topic's partitions with their leader and replicas (one metadata request).
    pub async fn topics(&self, timeout: Duration) -> Result<Vec<TopicLayout>, MetadataError> {
        let log = self.producer.log().clone();
        let result = self
            .blocking(move |client| {
                let metadata = client
                    .fetch_metadata(None, timeout)
                    .map_err(|e| request_failed(e, &log))?;
                log.accepted();
                Ok(metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .map(|t| TopicLayout {
                        name: t.name().to_owned(),
                        // Every partition, errors and all: one without a leader comes with
                        // LEADER_NOT_AVAILABLE (leader -1), one with a replica away with
                        // REPLICA_NOT_AVAILABLE; both are what the offsets check reports.
                        partitions: t
                            .partitions()
                            .iter()
                            .map(|p| PartitionLayout {
                                id: p.id(),
                                leader: p.leader(),
                                replicas: p.replicas().len(),
                                in_sync: p.isr().len(),
                            })
                            .collect(),
                    })
                    .collect())
            })
            .await
            .map_err(MetadataError::Task)
            .and_then(|r| r);
        self.settle(Request::Metadata, result)
    }

    /// Both ends of each partition's log: the log start and the high watermark (two
    /// ListOffsets requests at once, each one request per leader). Partitions that answered
    /// with an error are missing from the maps.
    pub async fn log_ends(
        &self,
        partitions: Vec<(String, i32)>,
        timeout: Duration,
    ) -> Result<LogEnds, AdminError> {
        let (oldest, current) = tokio::join!(
            self.list_offsets(partitions.clone(), OffsetSpec::Earliest, timeout),
            self.list_offsets(partitions, OffsetSpec::Latest, timeout),
        );
        Ok(LogEnds {
            oldest: by_partition(oldest?),
            current: by_partition(current?),
        })
    }

    /// The offsets of `partitions` at `spec` (ListOffsets, one request per leader).
    async fn list_offsets(
        &self,
        partitions: Vec<(String, i32)>,
        spec: OffsetSpec,
        timeout: Duration,
    ) -> Result<Vec<PartitionOffset>, AdminError> {
        self.native(Request::ListOffsets, "ListOffsets", move |client| {
            offsets::list_offsets(client, &partitions, spec, timeout)
        })
        .await
    }

    /// Every consumer group with its state and member count; `partial` when some broker did
    /// not answer.
    pub async fn groups(&self, timeout: Duration) -> Result<(Vec<GroupSummary>, bool), AdminError> {
        self.native(Request::ListGroups, "ListGroups", move |client| {
            groups::list_groups(client, timeout)
        })
        .await
    }

    /// The offsets `group` committed.
    pub async fn committed(
        &self,
        group: String,
        timeout: Duration,
    ) -> Result<Vec<CommittedOffset>, AdminError> {
        self.native(
            Request::OffsetFetch,
            "ListConsumerGroupOffsets",
            move |client| groups::committed_offsets(client, &group, timeout),
        )
        .await
    }

    /// DescribeConsumerGroups of one group: its coordinator and state.
    pub async fn describe_group(
        &self,
        group: String,
        timeout: Duration,
    ) -> Result<GroupCoordinator, AdminError> {
        self.native(
            Request::DescribeGroup,
            "DescribeConsumerGroups",
            move |client| coordinator::describe_group(client, &group, timeout),
        )
        .await
    }

    /// Commits `offset` for one partition in `group` (a group without members).
    pub async fn commit_offset(
        &self,
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> Result<(), AdminError> {
        self.native(
            Request::OffsetCommit,
            "AlterConsumerGroupOffsets",
            move |client| {
                coordinator::commit_offset(client, &group, &topic, partition, offset, timeout)
            },
        )
        .await
    }

    /// DescribeCluster: every broker with its rack. Not every cluster answers it, so callers
    /// treat a failure as "racks unknown".
    pub async fn describe(&self, timeout: Duration) -> Result<ClusterDescription, AdminError> {
        self.native(Request::DescribeCluster, "DescribeCluster", move |client| {
            native::describe_cluster(client, timeout)
        })
        .await
    }

    /// The id of `topic` (DescribeTopics), where the cluster reports one.
    pub async fn topic_id(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<Option<u128>, AdminError> {
        let topic = topic.to_owned();
        self.native(Request::DescribeTopics, "DescribeTopics", move |client| {
            native::topic_id(client, &topic, timeout)
        })
        .await
    }

    /// Creates the heartbeat topic as `plan` says; an existing topic counts as success.
    pub async fn create_topic(
        &self,
        topic: &str,
        plan: &TopicPlan,
        timeout: Duration,
    ) -> Result<(), CreateTopicError> {
        let new_topic = native::NewTopic {
            name: topic.to_owned(),
            partitions: plan.partitions,
            replication_factor: i32::from(plan.replication_factor),
            configs: vec![(
                "retention.ms".to_owned(),
                plan.retention.as_millis().to_string(),
            )],
        };
        let result = self
            .blocking(move |client| native::create_topic(client, &new_topic, timeout))
            .await
            .map_err(|source| {
                CreateTopicError::Request(AdminError::Task {
                    request: "CreateTopics",
                    source,
                })
            })
            .and_then(|r| r.map_err(CreateTopicError::Request))
            .and_then(|code| match code {
                None | Some(RDKafkaErrorCode::TopicAlreadyExists) => Ok(()),
                Some(code) => Err(create_error(topic, plan, code)),
            });
        self.settle(Request::CreateTopic, result)
    }
}

/// Offsets by (topic, partition).
pub type PartitionOffsets = std::collections::BTreeMap<(String, i32), i64>;

/// Both ends of partitions' logs.
#[derive(Clone, Debug, Default)]
pub struct LogEnds {
    /// Log start offsets (the oldest record kept).
    pub oldest: PartitionOffsets,
    /// High watermarks (the offset the next record gets).
    pub current: PartitionOffsets,
}

fn by_partition(offsets: Vec<PartitionOffset>) -> PartitionOffsets {
    offsets
        .into_iter()
        .filter_map(|o| Some(((o.topic, o.partition), o.offset.ok()?)))
        .collect()
}

/// One topic as the metadata shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicLayout {
    pub name: String,
    pub partitions: Vec<PartitionLayout>,
}

/// One partition as the metadata shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionLayout {
    pub id: i32,
    /// -1 when it has none.
    pub leader: i32,
    pub replicas: usize,
    pub in_sync: usize,
}

/// How a missing heartbeat topic is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPlan {
    pub partitions: i32,
    pub replication_factor: i16,
    pub retention: Duration,
}

impl TopicPlan {
    /// Partitions default to one per broker so every broker can lead one; the replication
    /// factor is capped at the broker count so a small dev cluster can still host the topic.
    pub fn new(config: &HeartbeatConfig, broker_count: usize) -> Self {
        let brokers = i32::try_from(broker_count.max(1)).unwrap_or(i32::MAX);
        Self {
            partitions: config.partitions.unwrap_or(brokers),
            replication_factor: config
                .replication_factor
                .min(i16::try_from(brokers).unwrap_or(i16::MAX)),
            retention: config.retention,
        }
    }

    /// The settings in words, for the message that asks an operator to create the topic.
    pub fn describe(&self, topic: &str) -> String {
        format!(
            "{topic} with {} partitions, replication factor {} and retention.ms={}",
            self.partitions,
            self.replication_factor,
            self.retention.as_millis()
        )
    }
}

fn create_error(topic: &str, plan: &TopicPlan, code: RDKafkaErrorCode) -> CreateTopicError {
    let plan = plan.describe(topic);
    match code {
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => {
            CreateTopicError::NotAllowed { plan, code }
        }
        code => CreateTopicError::Refused { plan, code },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Chain, ErrorKind};

    fn heartbeat(partitions: Option<i32>, rf: i16) -> HeartbeatConfig {
        let mut c = crate::config::from_str(
            "t",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\n",
            &|_| None,
        )
        .unwrap()
        .heartbeat;
        c.partitions = partitions;
        c.replication_factor = rf;
        c
    }

    #[test]
    fn plan_defaults_to_one_partition_per_broker_and_caps_replication() {
        let plan = TopicPlan::new(&heartbeat(None, 3), 6);
        assert_eq!((plan.partitions, plan.replication_factor), (6, 3));
        let small = TopicPlan::new(&heartbeat(None, 3), 1);
        assert_eq!((small.partitions, small.replication_factor), (1, 1));
        let explicit = TopicPlan::new(&heartbeat(Some(12), 2), 6);
        assert_eq!((explicit.partitions, explicit.replication_factor), (12, 2));
        assert_eq!(explicit.retention, Duration::from_secs(86_400));
    }

    #[test]
    fn permission_errors_say_what_to_create() {
        let plan = TopicPlan::new(&heartbeat(None, 3), 3);
        let err = create_error(
            "cc-heartbeat",
            &plan,
            RDKafkaErrorCode::TopicAuthorizationFailed,
        );
        assert_eq!(ErrorKind::of(&err), ErrorKind::Authorization);
        let text = Chain(&err).to_string();
        assert!(text.contains("not allowed to create it"), "{text}");
        assert!(
            text.contains(
                "cc-heartbeat with 3 partitions, replication factor 3 and retention.ms=86400000"
            ),
            "{text}"
        );
        let refused = create_error("t", &plan, RDKafkaErrorCode::PolicyViolation);
        assert_eq!(ErrorKind::of(&refused), ErrorKind::BrokerError);
    }
}
