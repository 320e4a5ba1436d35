//! One monitored cluster: its probes and the order they start in.
//!
//! The metadata watch, the broker probe and the Schema Registry probe start at once (before
//! the cluster has answered, the broker probe checks the bootstrap address, so an unreachable
//! cluster still says why). The topic, offsets, consumer group, commit and heartbeat probes
//! start after the first metadata.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, info};

use crate::config::{ChecksConfig, ClusterConfig, HeartbeatConfig};
use crate::events::broker::BrokerProbeUnavailable;
use crate::events::schema_registry::RegistryProbeUnavailable;
use crate::health::{Condition, Latch};
use crate::kafka::ClientTiming;
use crate::probe::heartbeat::{HeartbeatClients, Tap};
use crate::probe::set::{Hooks, ProbeSet, Settings};
use crate::probe::{self, Wake};
use crate::telemetry::Instruments;

pub struct ClusterRun {
    pub cluster: ClusterConfig,
    pub heartbeat: HeartbeatConfig,
    pub checks: ChecksConfig,
    /// The librdkafka timings of the cluster's clients.
    pub timing: ClientTiming,
    pub instruments: Instruments,
    pub tap: Option<Tap>,
    pub metadata_ready: Latch,
    pub heartbeat_ready: Latch,
    /// Unmet while the heartbeat topic is missing.
    pub topic_ready: Condition,
    /// Unmet while the cluster's metadata requests fail.
    pub cluster_usable: Condition,
}

impl ClusterRun {
    /// Runs every probe of the cluster until `cancel`; failures are measured and retried.
    pub async fn run(
        self,
        clients: HeartbeatClients,
        cancel: CancellationToken,
        tasks: TaskTracker,
    ) {
        let span = tracing::info_span!("cluster", cluster = %self.cluster.name);
        self.run_probes(clients, cancel, tasks)
            .instrument(span)
            .await;
    }

    async fn run_probes(
        self,
        clients: HeartbeatClients,
        cancel: CancellationToken,
        tasks: TaskTracker,
    ) {
        clients.serve(&cancel, &tasks);
        let name = self.cluster.name.clone();
        let security = match &self.cluster.sasl {
            Some(sasl) => format!(
                "{}/{}",
                self.cluster.security_protocol.as_str(),
                sasl.mechanism.as_str()
            ),
            None => self.cluster.security_protocol.as_str().to_owned(),
        };
        info!(
            name: "cluster.starting",
            bootstrap = %self.cluster.bootstrap_servers.join(","),
            %security,
            "Starting cc-heartbeat against the cluster.",
        );
        let set = ProbeSet::new(
            Settings {
                cluster: &self.cluster,
                heartbeat: &self.heartbeat,
                checks: &self.checks,
                timing: self.timing,
                instruments: &self.instruments,
            },
            clients,
            Hooks {
                metadata_ready: Some(self.metadata_ready),
                topic_ready: Some(self.topic_ready),
                cluster_usable: Some(self.cluster_usable),
                first_round_trip: Some(self.heartbeat_ready),
                tap: self.tap,
            },
        );
        let traces = self.instruments.traces.clone();
        let mut view = set.view.clone();
        let wakes = set.wakes.clone();
        tasks.spawn(probe::run(
            set.metadata,
            &name,
            wakes.refresh.clone(),
            cancel.clone(),
            &traces,
        ));
        match set.brokers {
            Ok(brokers) => {
                tasks.spawn(probe::run(
                    brokers,
                    &name,
                    wakes.brokers.clone(),
                    cancel.clone(),
                    &traces,
                ));
            }
            Err(error) => BrokerProbeUnavailable { error: &error }.emit(),
        }
        // The registry does not depend on the Kafka cluster answering.
        match set.registry {
            Some(Ok(registry)) => {
                tasks.spawn(probe::run(
                    registry,
                    &name,
                    Wake::new(),
                    cancel.clone(),
                    &traces,
                ));
            }
            Some(Err(error)) => RegistryProbeUnavailable { error: &error }.emit(),
            None => {}
        }

        tokio::select! {
            () = cancel.cancelled() => return,
            result = view.wait_for(|v| v.fetched) => if result.is_err() { return },
        }

        if let Some(offsets) = set.offsets {
            tasks.spawn(probe::run(
                offsets,
                &name,
                Wake::new(),
                cancel.clone(),
                &traces,
            ));
        }
        if let Some(groups) = set.groups {
            tasks.spawn(probe::run(
                groups,
                &name,
                Wake::new(),
                cancel.clone(),
                &traces,
            ));
        }
        if let Some(commit) = set.commit {
            tasks.spawn(probe::run(
                commit,
                &name,
                Wake::new(),
                cancel.clone(),
                &traces,
            ));
        }
        tasks.spawn(probe::run(
            set.topic,
            &name,
            wakes.create_topic.clone(),
            cancel.clone(),
            &traces,
        ));
        tasks.spawn(
            set.receiver
                .run()
                .instrument(probe::span("heartbeat", &name)),
        );
        tasks.spawn(probe::run(
            set.heartbeat,
            &name,
            Wake::new(),
            cancel.clone(),
            &traces,
        ));
    }
}
