//! One monitored cluster: its probes and the order they start in.
//!
//! The metadata watch, the broker probe and the Schema Registry probe start at once (before
//! the cluster has answered, the broker probe checks the bootstrap address, so an unreachable
//! cluster still says why). The topic, offsets, consumer group and heartbeat probes start
//! after the first metadata.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, info};

use crate::config::{ChecksConfig, ClusterConfig, HeartbeatConfig};
use crate::events::broker::BrokerProbeUnavailable;
use crate::events::schema_registry::RegistryProbeUnavailable;
use crate::health::{Condition, Latch};
use crate::kafka::metadata::ClusterView;
use crate::kafka::{ClientTiming, tls};
use crate::probe::broker::{BrokerProbe, BrokerProbeParts};
use crate::probe::groups::{GroupsParts, GroupsProbe};
use crate::probe::heartbeat::{self, HeartbeatClients, HeartbeatParts, Tap};
use crate::probe::metadata::{MetadataParts, MetadataWatch};
use crate::probe::offsets::{OffsetsParts, OffsetsProbe};
use crate::probe::schema_registry::{RegistryParts, RegistryProbe};
use crate::probe::topic::{TopicParts, TopicProbe};
use crate::probe::{self, Wake};
use crate::telemetry::Instruments;
use crate::telemetry::instruments::ClusterLabels;

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
        let admin = clients.admin();
        let name = self.cluster.name.clone();
        let labels = ClusterLabels::of(&self.cluster);
        let security = match &self.cluster.sasl {
            Some(sasl) => format!(
                "{}/{}",
                self.cluster.security_protocol.as_str(),
                sasl.mechanism.as_str()
            ),
            None => self.cluster.security_protocol.as_str().to_owned(),
        };
        info!(
            bootstrap = %self.cluster.bootstrap_servers.join(","),
            %security,
            "Starting cc-heartbeat against the cluster.",
        );
        let (view_tx, mut view) = watch::channel(Arc::new(ClusterView::unknown()));
        let refresh = Wake::new();
        let create_topic = Wake::new();
        let probe_brokers = Wake::new();
        let metadata = MetadataWatch::new(MetadataParts {
            cluster: labels.clone(),
            topic: self.heartbeat.topic.clone(),
            admin: admin.clone(),
            interval: self.checks.metadata.interval,
            view: view_tx,
            instruments: self.instruments.clone(),
            ready: Some(self.metadata_ready),
            topic_ready: Some(self.topic_ready),
            create_topic: self.heartbeat.create_topic.then(|| create_topic.clone()),
            brokers_changed: Some(probe_brokers.clone()),
        });
        tasks.spawn(probe::run(metadata, &name, refresh.clone(), cancel.clone()));

        match tls::for_cluster(&self.cluster) {
            Ok(tls) => {
                let brokers = BrokerProbe::new(BrokerProbeParts {
                    cluster: labels.clone(),
                    bootstrap: self.cluster.bootstrap_servers.clone(),
                    view: view.clone(),
                    tls,
                    interval: self.checks.connectivity.interval,
                    timeout: self.checks.connectivity.timeout,
                    instruments: self.instruments.clone(),
                });
                tasks.spawn(probe::run(brokers, &name, probe_brokers, cancel.clone()));
            }
            Err(error) => BrokerProbeUnavailable { error: &error }.emit(),
        }

        // The registry does not depend on the Kafka cluster answering.
        if let Some(registry) = &self.cluster.schema_registry {
            let probe = RegistryProbe::new(RegistryParts {
                cluster: labels.clone(),
                registry: registry.clone(),
                view: view.clone(),
                check: self.checks.schema_registry,
                instruments: self.instruments.clone(),
            });
            match probe {
                Ok(probe) => {
                    tasks.spawn(probe::run(probe, &name, Wake::new(), cancel.clone()));
                }
                Err(error) => RegistryProbeUnavailable { error: &error }.emit(),
            }
        }

        tokio::select! {
            () = cancel.cancelled() => return,
            result = view.wait_for(|v| v.fetched) => if result.is_err() { return },
        }

        if self.checks.offsets.enabled {
            let offsets = OffsetsProbe::new(OffsetsParts {
                cluster: labels.clone(),
                admin: admin.clone(),
                view: view.clone(),
                topics: self.cluster.topics.clone(),
                check: self.checks.offsets,
                instruments: self.instruments.clone(),
            });
            tasks.spawn(probe::run(offsets, &name, Wake::new(), cancel.clone()));
        }
        if self.checks.consumer_groups.enabled {
            let groups = GroupsProbe::new(GroupsParts {
                cluster: self.cluster.clone(),
                labels: labels.clone(),
                admin: admin.clone(),
                view: view.clone(),
                check: self.checks.consumer_groups,
                timing: self.timing,
                instruments: self.instruments.clone(),
            });
            tasks.spawn(probe::run(groups, &name, Wake::new(), cancel.clone()));
        }

        let topic = TopicProbe::new(TopicParts {
            admin,
            config: self.heartbeat.clone(),
            view: view.clone(),
            refresh: refresh.clone(),
            interval: self.checks.topic.interval,
            retry_max: self.checks.metadata.interval,
        });
        tasks.spawn(probe::run(topic, &name, create_topic, cancel.clone()));

        let parts = HeartbeatParts {
            cluster: self.cluster,
            heartbeat: self.heartbeat,
            instruments: self.instruments,
            view,
            refresh,
            tap: self.tap,
            first_round_trip: Some(self.heartbeat_ready),
        };
        let (sender, receiver) = heartbeat::start(parts, clients);
        tasks.spawn(receiver.run().instrument(probe::span("heartbeat", &name)));
        tasks.spawn(probe::run(sender, &name, Wake::new(), cancel));
    }
}
