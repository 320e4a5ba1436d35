//! The topic probe: the heartbeat topic exists, at start and every interval. A missing topic
//! is created when allowed; an existing one is never deleted or recreated, whatever its
//! partition count (the metadata watch warns about brokers it does not cover). It reads the
//! cluster view the metadata watch publishes, and after creating the topic asks it for a
//! fresh one.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::RDKafkaErrorCode;
use tokio::sync::watch;

use super::metadata::METADATA_TIMEOUT;
use super::{Probe, Schedule, Wake};
use crate::config::HeartbeatConfig;
use crate::events::topic::{TopicCreated, TopicFound};
use crate::kafka::admin::{Admin, CreateTopicError, TopicPlan};
use crate::kafka::metadata::{ClusterView, TopicState};

/// How long a created topic may take to appear in metadata.
const TOPIC_APPEAR_TIMEOUT: Duration = Duration::from_secs(15);
/// How long after creating the topic a metadata answer without it is taken for a broker that
/// has not learnt of it yet rather than the topic gone.
const NEW_TOPIC_GRACE: Duration = Duration::from_secs(2);
/// How often the metadata is read while waiting for a created topic to appear.
const TOPIC_APPEAR_POLL: Duration = Duration::from_millis(200);
/// First wait before retrying a failed check (then doubling, up to the metadata interval).
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// What one look at the topic found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicReady {
    pub partitions: usize,
    /// Created by this round.
    pub created: bool,
}

/// Why the heartbeat topic is not usable.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("no cluster metadata yet")]
    NoMetadata,
    #[error(
        "heartbeat topic {topic} does not exist and heartbeat.create_topic is false; create {plan}"
    )]
    Missing { topic: String, plan: String },
    #[error(
        "the cluster refuses to describe heartbeat topic {topic}; grant DESCRIBE, WRITE and READ on it"
    )]
    Refused {
        topic: String,
        #[source]
        code: RDKafkaErrorCode,
    },
    #[error("cannot create the heartbeat topic")]
    Create(#[source] CreateTopicError),
    #[error("heartbeat topic {topic} was created but does not show in the metadata yet")]
    NotVisible { topic: String },
}

/// What the topic probe needs from its cluster.
pub struct TopicParts {
    pub admin: Admin,
    pub config: HeartbeatConfig,
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// Asks the metadata watch for a fresh view.
    pub refresh: Wake,
    pub interval: Duration,
    /// Longest wait between retries while the topic is unusable.
    pub retry_max: Duration,
}

pub struct TopicProbe {
    parts: TopicParts,
    /// The topic was seen (or created) in this run.
    seen: bool,
    /// When this agent last created the topic.
    created_at: Option<tokio::time::Instant>,
}

impl TopicProbe {
    pub fn new(parts: TopicParts) -> Self {
        Self {
            parts,
            seen: false,
            created_at: None,
        }
    }

    /// Right after this agent created the topic, a metadata answer without it may come from a
    /// broker that has not learnt of it yet (on Kafka one broker may answer without a new
    /// topic right after another answered with it): until [`NEW_TOPIC_GRACE`] has passed,
    /// wait for it to show rather than take it for gone. The partitions, if it shows.
    async fn settle_new_topic(&self) -> Option<usize> {
        let until = self.created_at? + NEW_TOPIC_GRACE;
        if tokio::time::Instant::now() >= until {
            return None;
        }
        self.parts.refresh.now();
        self.wait_for_topic(until).await
    }

    /// Reads metadata (without publishing it) until the created topic shows with a leader on
    /// every partition.
    async fn wait_for_topic(&self, deadline: tokio::time::Instant) -> Option<usize> {
        while tokio::time::Instant::now() < deadline {
            if let Ok(view) = self
                .parts
                .admin
                .metadata(&self.parts.config.topic, METADATA_TIMEOUT)
                .await
                && !view.partitions().is_empty()
                && view.partitions().iter().all(|p| p.leader >= 0)
            {
                return Some(view.partitions().len());
            }
            tokio::time::sleep(TOPIC_APPEAR_POLL).await;
        }
        None
    }
}

impl Probe for TopicProbe {
    const KIND: &'static str = "topic";
    type Output = TopicReady;
    type Error = TopicError;

    fn schedule(&self) -> Schedule {
        let create = METADATA_TIMEOUT + Duration::from_secs(1);
        Schedule::every(
            self.parts.interval,
            create + TOPIC_APPEAR_TIMEOUT + METADATA_TIMEOUT,
        )
        .retrying(RETRY_FIRST, self.parts.retry_max.max(RETRY_FIRST))
    }

    fn describe(&self) -> String {
        format!(
            "Topic probe started: heartbeat topic {}, created when missing{}.",
            self.parts.config.topic,
            if self.parts.config.create_topic {
                ""
            } else {
                " (create_topic is false: it is not)"
            }
        )
    }

    /// Cancel-safe: a round cut after creating the topic has already asked for fresh metadata;
    /// the next finds the topic there.
    async fn probe_once(&mut self) -> Result<TopicReady, TopicError> {
        let topic = &self.parts.config.topic;
        let view = Arc::clone(&self.parts.view.borrow());
        if !view.fetched {
            return Err(TopicError::NoMetadata);
        }
        let plan = TopicPlan::new(&self.parts.config, view.brokers.len());
        if matches!(view.topic, TopicState::Missing)
            && let Some(partitions) = self.settle_new_topic().await
        {
            return Ok(TopicReady {
                partitions,
                created: false,
            });
        }
        match &view.topic {
            TopicState::Present(partitions) => {
                if !self.seen {
                    TopicFound {
                        topic,
                        partitions: partitions.len(),
                    }
                    .emit();
                    self.seen = true;
                }
                Ok(TopicReady {
                    partitions: partitions.len(),
                    created: false,
                })
            }
            TopicState::Missing if self.parts.config.create_topic => {
                self.parts
                    .admin
                    .create_topic(topic, &plan, METADATA_TIMEOUT)
                    .await
                    .map_err(TopicError::Create)?;
                TopicCreated {
                    topic,
                    plan: &plan.describe(topic),
                    again: self.seen,
                }
                .emit();
                self.seen = true;
                self.created_at = Some(tokio::time::Instant::now());
                // Asked before the wait too: a round cut during the wait has the metadata
                // watch see the topic all the same, instead of creating it again.
                self.parts.refresh.now();
                let partitions = self
                    .wait_for_topic(tokio::time::Instant::now() + TOPIC_APPEAR_TIMEOUT)
                    .await;
                self.parts.refresh.now();
                match partitions {
                    Some(partitions) => Ok(TopicReady {
                        partitions,
                        created: true,
                    }),
                    None => Err(TopicError::NotVisible {
                        topic: topic.clone(),
                    }),
                }
            }
            TopicState::Missing => Err(TopicError::Missing {
                topic: topic.clone(),
                plan: plan.describe(topic),
            }),
            TopicState::Error(code) => Err(TopicError::Refused {
                topic: topic.clone(),
                code: *code,
            }),
        }
    }
}
