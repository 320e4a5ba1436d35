//! One monitored cluster: its probes and the order they start in.
//!
//! The metadata watch and the broker probe start at once (before the cluster has answered,
//! the broker probe checks the bootstrap address, so an unreachable cluster still says why).
//! The topic check waits for the first metadata; the heartbeat waits for the topic.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::config::{ChecksConfig, ClusterConfig, HeartbeatConfig};
use crate::health::Latch;
use crate::kafka::admin::Admin;
use crate::kafka::metadata::ClusterView;
use crate::kafka::tls;
use crate::probe::broker::BrokerProbe;
use crate::probe::heartbeat::{HeartbeatParts, HeartbeatProbe, Tap};
use crate::probe::metadata::MetadataWatch;
use crate::probe::topic::TopicCheck;
use crate::telemetry::Instruments;

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
        let (view_tx, mut view_rx) = watch::channel(Arc::new(ClusterView::unknown()));
        let metadata = MetadataWatch {
            cluster: name.clone(),
            topic: self.heartbeat.topic.clone(),
            admin: admin.clone(),
            interval: self.checks.metadata.interval,
            view: view_tx.clone(),
            instruments: self.instruments.clone(),
        };
        tasks.spawn(metadata.run(cancel.clone()));

        let tls = match self.cluster.security_protocol.uses_tls() {
            true => match tls::client_config(&self.cluster.tls) {
                Ok(config) => Some(config),
                Err(e) => {
                    error!(cluster = %name, error = %e, "The broker probe cannot set up TLS; it is not started.");
                    None
                }
            },
            false => None,
        };
        if tls.is_some() || !self.cluster.security_protocol.uses_tls() {
            let brokers = BrokerProbe {
                cluster: name.clone(),
                bootstrap: self.cluster.bootstrap_servers.clone(),
                view: view_rx.clone(),
                tls,
                interval: self.checks.connectivity.interval,
                timeout: self.checks.connectivity.timeout,
                instruments: self.instruments.clone(),
            };
            tasks.spawn(brokers.run(cancel.clone()));
        }

        tokio::select! {
            () = cancel.cancelled() => return,
            result = view_rx.wait_for(|v| v.fetched) => if result.is_err() { return },
        }
        self.metadata_ready.release();

        let topic = TopicCheck {
            cluster: name.clone(),
            admin,
            config: self.heartbeat.clone(),
            view: view_tx,
            instruments: self.instruments.clone(),
        };
        // Until the topic exists, look again at the metadata pace rather than hourly.
        if !topic.ensure(self.checks.metadata.interval, &cancel).await {
            return;
        }
        tasks.spawn(topic.run(self.checks.topic.interval, cancel.clone()));

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
