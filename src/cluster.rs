//! One monitored cluster: its start-up sequence (metadata, topic, heartbeat) and its probes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{ChecksConfig, ClusterConfig, HeartbeatConfig};
use crate::health::Latch;
use crate::kafka::admin::{Admin, TopicPlan};
use crate::kafka::metadata::{ClusterView, TopicState};
use crate::probe::heartbeat::{HeartbeatParts, HeartbeatProbe, Tap};
use crate::probe::metadata::{METADATA_TIMEOUT, MetadataWatch};
use crate::telemetry::Instruments;

/// Longest wait between attempts to reach a cluster at start-up.
const MAX_STARTUP_BACKOFF: Duration = Duration::from_secs(30);
/// How long a created topic may take to appear in metadata.
const TOPIC_APPEAR_TIMEOUT: Duration = Duration::from_secs(15);

pub struct ClusterRun {
    pub cluster: ClusterConfig,
    pub heartbeat: HeartbeatConfig,
    pub checks: ChecksConfig,
    pub instance_id: String,
    pub instruments: Instruments,
    pub tap: Option<Tap>,
    pub metadata_ready: Latch,
    pub heartbeat_ready: Latch,
}

impl ClusterRun {
    /// Runs every probe of the cluster until `cancel`; failures are logged and retried.
    pub async fn run(self, admin: Admin, cancel: CancellationToken, tasks: TaskTracker) {
        let name = self.cluster.name.clone();
        let auth = match &self.cluster.sasl {
            Some(sasl) => format!(
                "{}/{}",
                self.cluster.security_protocol.as_str(),
                sasl.mechanism.as_str()
            ),
            None => self.cluster.security_protocol.as_str().to_owned(),
        };
        info!(
            cluster = %name,
            bootstrap = %self.cluster.bootstrap_servers.join(","),
            security = %auth,
            "Starting cc-heartbeat against the cluster.",
        );
        let Some(view) = first_view(&admin, &name, &self.heartbeat.topic, &cancel).await else {
            return;
        };
        log_brokers(&name, &view);
        self.metadata_ready.release();

        let (view_tx, view_rx) = watch::channel(Arc::new(view));
        let watch = MetadataWatch {
            cluster: name.clone(),
            topic: self.heartbeat.topic.clone(),
            admin: admin.clone(),
            interval: self.checks.metadata.interval,
            view: view_tx.clone(),
        };
        tasks.spawn(watch.run(cancel.clone()));

        let retry = self.checks.metadata.interval;
        if !ensure_topic(&admin, &name, &self.heartbeat, &view_tx, retry, &cancel).await {
            return;
        }
        let parts = HeartbeatParts {
            cluster: self.cluster,
            heartbeat: self.heartbeat,
            instance_id: self.instance_id,
            instruments: self.instruments,
            view: view_rx,
            tap: self.tap,
            first_round_trip: Some(self.heartbeat_ready),
        };
        match HeartbeatProbe::new(parts) {
            Ok(probe) => probe.run(cancel, &tasks).await,
            Err(e) => error!(cluster = %name, error = %e, "Heartbeat probe could not start."),
        }
    }
}

/// Fetches metadata until it succeeds (backing off) or `cancel` fires.
async fn first_view(
    admin: &Admin,
    name: &str,
    topic: &str,
    cancel: &CancellationToken,
) -> Option<ClusterView> {
    let mut backoff = Duration::from_secs(1);
    let mut attempts = 0u32;
    loop {
        match admin.metadata(topic, METADATA_TIMEOUT).await {
            Ok(view) => {
                if attempts > 0 {
                    info!(cluster = %name, attempts = attempts + 1, "Cluster reached.");
                }
                return Some(view);
            }
            Err(error) => {
                attempts += 1;
                if attempts == 1 || attempts.is_power_of_two() {
                    warn!(
                        cluster = %name,
                        %error,
                        attempts,
                        retry_in = %humantime::format_duration(backoff),
                        "Cannot fetch cluster metadata yet; retrying.",
                    );
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return None,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_STARTUP_BACKOFF);
    }
}

fn log_brokers(name: &str, view: &ClusterView) {
    info!(
        cluster = %name,
        cluster_id = %view.cluster_id,
        brokers = view.brokers.len(),
        "{} brokers in {}.",
        view.brokers.len(),
        view.cluster_id
    );
    for b in &view.brokers {
        info!(
            cluster = %name,
            broker = b.id,
            address = %b.address(),
            rack = b.rack.as_deref().unwrap_or("-"),
            "  broker {}: {} rack {}",
            b.id,
            b.address(),
            b.rack.as_deref().unwrap_or("-")
        );
    }
}

/// Makes sure the heartbeat topic exists (creating it when allowed), retrying every `retry`.
/// Returns false only when cancelled. The topic is never deleted or recreated.
async fn ensure_topic(
    admin: &Admin,
    name: &str,
    config: &HeartbeatConfig,
    view_tx: &watch::Sender<Arc<ClusterView>>,
    retry: Duration,
    cancel: &CancellationToken,
) -> bool {
    let topic = &config.topic;
    loop {
        let view = Arc::clone(&view_tx.borrow());
        let plan = TopicPlan::new(config, view.brokers.len());
        match &view.topic {
            TopicState::Present(partitions) => {
                info!(cluster = %name, topic = %topic, partitions = partitions.len(), "Heartbeat topic found.");
                return true;
            }
            TopicState::Missing if config.create_topic => {
                match admin.create_topic(topic, &plan, METADATA_TIMEOUT).await {
                    Ok(()) => {
                        info!(cluster = %name, "Created heartbeat topic {}.", plan.describe(topic));
                        if let Some(view) = wait_for_topic(admin, topic, cancel).await {
                            view_tx.send_replace(Arc::new(view));
                            continue;
                        }
                        warn!(cluster = %name, topic = %topic, "The created topic does not show in metadata yet.");
                    }
                    Err(error) => error!(
                        cluster = %name,
                        topic = %topic,
                        error.type = error.kind().as_str(),
                        %error,
                        "Cannot create the heartbeat topic; heartbeats wait for it.",
                    ),
                }
            }
            TopicState::Missing => error!(
                cluster = %name,
                "Heartbeat topic {topic} does not exist and heartbeat.create_topic is false; create {}.",
                plan.describe(topic)
            ),
            TopicState::Error(code) => error!(
                cluster = %name,
                topic = %topic,
                error = %code,
                "The cluster refuses to describe the heartbeat topic; heartbeats wait for it.",
            ),
        }
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = tokio::time::sleep(retry) => {}
        }
        if let Ok(view) = admin.metadata(topic, METADATA_TIMEOUT).await {
            view_tx.send_replace(Arc::new(view));
        }
    }
}

async fn wait_for_topic(
    admin: &Admin,
    topic: &str,
    cancel: &CancellationToken,
) -> Option<ClusterView> {
    let deadline = tokio::time::Instant::now() + TOPIC_APPEAR_TIMEOUT;
    while tokio::time::Instant::now() < deadline && !cancel.is_cancelled() {
        if let Ok(view) = admin.metadata(topic, METADATA_TIMEOUT).await
            && !view.partitions().is_empty()
            && view.partitions().iter().all(|p| p.leader >= 0)
        {
            return Some(view);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}
