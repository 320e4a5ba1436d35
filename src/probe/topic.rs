//! The topic check: the heartbeat topic exists, at start and every interval. A missing topic
//! is created when allowed; an existing one is never deleted or recreated, whatever its
//! partition count (the metadata watch warns about brokers it does not cover).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::HeartbeatConfig;
use crate::kafka::admin::{Admin, TopicPlan};
use crate::kafka::metadata::{ClusterView, TopicState};
use crate::probe::metadata::{METADATA_TIMEOUT, record_gauges};
use crate::telemetry::Instruments;

/// How long a created topic may take to appear in metadata.
const TOPIC_APPEAR_TIMEOUT: Duration = Duration::from_secs(15);

pub struct TopicCheck {
    pub cluster: String,
    pub admin: Admin,
    pub config: HeartbeatConfig,
    pub view: watch::Sender<Arc<ClusterView>>,
    pub instruments: Instruments,
}

/// What one look at the topic found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicStatus {
    Ready {
        partitions: usize,
        created: bool,
    },
    /// Missing or unusable; the message says what to do.
    Unavailable(String),
}

impl TopicCheck {
    /// Looks at the topic once, creating it when missing and allowed, and publishes the view.
    pub async fn check_once(&self) -> TopicStatus {
        let topic = &self.config.topic;
        let view = Arc::clone(&self.view.borrow());
        let plan = TopicPlan::new(&self.config, view.brokers.len());
        match &view.topic {
            TopicState::Present(partitions) => TopicStatus::Ready {
                partitions: partitions.len(),
                created: false,
            },
            TopicState::Missing if self.config.create_topic => {
                match self
                    .admin
                    .create_topic(topic, &plan, METADATA_TIMEOUT)
                    .await
                {
                    Ok(()) => {
                        info!(cluster = %self.cluster, "Created heartbeat topic {}.", plan.describe(topic));
                        match self.wait_for_topic().await {
                            Some(view) => {
                                let partitions = view.partitions().len();
                                self.publish(view);
                                TopicStatus::Ready {
                                    partitions,
                                    created: true,
                                }
                            }
                            None => TopicStatus::Unavailable(format!(
                                "topic {topic} was created but does not show in the metadata yet"
                            )),
                        }
                    }
                    Err(e) => {
                        TopicStatus::Unavailable(format!("cannot create the heartbeat topic: {e}"))
                    }
                }
            }
            TopicState::Missing => TopicStatus::Unavailable(format!(
                "heartbeat topic {topic} does not exist and heartbeat.create_topic is false; create {}",
                plan.describe(topic)
            )),
            TopicState::Error(code) => TopicStatus::Unavailable(format!(
                "the cluster refuses to describe heartbeat topic {topic} ({code}); grant DESCRIBE, WRITE and READ on it"
            )),
        }
    }

    /// Returns once the topic is usable (retrying every `retry`), or false when cancelled.
    pub async fn ensure(&self, retry: Duration, cancel: &CancellationToken) -> bool {
        loop {
            match self.check_once().await {
                TopicStatus::Ready { partitions, .. } => {
                    info!(cluster = %self.cluster, topic = %self.config.topic, partitions, "Heartbeat topic found.");
                    return true;
                }
                TopicStatus::Unavailable(message) => error!(
                    cluster = %self.cluster,
                    retry_in = %humantime::format_duration(retry),
                    "{message}; heartbeats wait for it, other probes keep running.",
                ),
            }
            tokio::select! {
                () = cancel.cancelled() => return false,
                () = tokio::time::sleep(retry) => {}
            }
            self.refresh().await;
        }
    }

    /// Checks the topic every `interval` until `cancel`.
    pub async fn run(self, interval: Duration, cancel: CancellationToken) {
        info!(
            cluster = %self.cluster,
            topic = %self.config.topic,
            interval = %humantime::format_duration(interval),
            "Topic check started.",
        );
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            self.refresh().await;
            match self.check_once().await {
                TopicStatus::Ready { created: true, .. } => {
                    warn!(cluster = %self.cluster, topic = %self.config.topic, "The heartbeat topic had disappeared; it was created again.");
                }
                TopicStatus::Ready { partitions, .. } => {
                    debug!(cluster = %self.cluster, partitions, "Heartbeat topic present.")
                }
                TopicStatus::Unavailable(message) => error!(cluster = %self.cluster, "{message}."),
            }
        }
    }

    async fn refresh(&self) {
        if let Ok(view) = self
            .admin
            .metadata(&self.config.topic, METADATA_TIMEOUT)
            .await
        {
            let racks = self.view.borrow().racks();
            self.publish(view.with_racks(&racks));
        }
    }

    fn publish(&self, view: ClusterView) {
        record_gauges(&self.instruments, &self.cluster, &view);
        self.view.send_replace(Arc::new(view));
    }

    async fn wait_for_topic(&self) -> Option<ClusterView> {
        let deadline = tokio::time::Instant::now() + TOPIC_APPEAR_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if let Ok(view) = self
                .admin
                .metadata(&self.config.topic, METADATA_TIMEOUT)
                .await
                && !view.partitions().is_empty()
                && view.partitions().iter().all(|p| p.leader >= 0)
            {
                let racks = self.view.borrow().racks();
                return Some(view.with_racks(&racks));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }
}
