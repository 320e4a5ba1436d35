//! Every probe of one cluster, built and wired together in one place: the agent runs them on
//! their loops ([`crate::cluster`]), `check` runs each once ([`crate::check`]). What differs
//! between the two (readiness, the tap) comes in [`Hooks`].

use std::sync::Arc;

use tokio::sync::watch;

use super::Wake;
use super::broker::{BrokerProbe, BrokerProbeParts};
use super::commit::{self, CommitParts, CommitProbe};
use super::groups::{GroupsParts, GroupsProbe};
use super::heartbeat::{
    self, HeartbeatClients, HeartbeatParts, HeartbeatProbe, HeartbeatReceiver, Tap,
};
use super::metadata::{MetadataParts, MetadataWatch};
use super::offsets::{OffsetsParts, OffsetsProbe};
use super::schema_registry::{RegistryParts, RegistryProbe};
use super::topic::{TopicParts, TopicProbe};
use crate::config::{ChecksConfig, ClusterConfig, CommitProbeMode, HeartbeatConfig};
use crate::events::cluster::ClusterRequests;
use crate::health::{Condition, Latch};
use crate::kafka::ClientTiming;
use crate::kafka::metadata::ClusterView;
use crate::kafka::tls::{self, TlsSetupError};
use crate::telemetry::Instruments;
use crate::telemetry::instruments::ClusterLabels;

/// What `run` hooks into the probes and `check` does not.
#[derive(Default)]
pub struct Hooks {
    /// Released once the first metadata is in.
    pub metadata_ready: Option<Latch>,
    /// Unmet while the heartbeat topic is missing.
    pub topic_ready: Option<Condition>,
    /// Unmet while the cluster's metadata requests fail.
    pub cluster_usable: Option<Condition>,
    /// Released on the first own heartbeat consumed back.
    pub first_round_trip: Option<Latch>,
    /// Receives every heartbeat observation.
    pub tap: Option<Tap>,
}

/// The probes of one cluster. A probe that cannot be set up (TLS settings that do not load)
/// is `Err` with why; a check that is off is `None`.
pub struct ProbeSet {
    pub metadata: MetadataWatch,
    pub brokers: Result<BrokerProbe, TlsSetupError>,
    pub registry: Option<Result<RegistryProbe, TlsSetupError>>,
    pub offsets: Option<OffsetsProbe>,
    pub groups: Option<GroupsProbe>,
    /// The commit path, unless `commit_probe.enabled` is false.
    pub commit: Option<CommitProbe>,
    pub topic: TopicProbe,
    pub heartbeat: HeartbeatProbe,
    /// Owns the heartbeat's bookkeeping; runs as a task of its own beside the probes.
    pub receiver: HeartbeatReceiver,
    /// The cluster view the metadata watch publishes.
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub wakes: Wakes,
}

/// How the probes ask each other for a round before their next tick.
#[derive(Clone, Default)]
pub struct Wakes {
    /// Asks the metadata watch for a fresh view.
    pub refresh: Wake,
    /// Asks the topic probe to create the missing topic.
    pub create_topic: Wake,
    /// Asks the broker probe to probe the brokers now (they changed).
    pub brokers: Wake,
}

/// The settings a probe set is built from.
pub struct Settings<'a> {
    pub cluster: &'a ClusterConfig,
    pub heartbeat: &'a HeartbeatConfig,
    pub checks: &'a ChecksConfig,
    pub timing: ClientTiming,
    pub instruments: &'a Instruments,
}

impl ProbeSet {
    /// Builds and wires every probe of `s.cluster` on its `clients` (which the caller serves).
    pub fn new(s: Settings<'_>, clients: HeartbeatClients, hooks: Hooks) -> Self {
        let labels = ClusterLabels::of(s.cluster);
        let requests = ClusterRequests::new(labels.clone(), s.instruments.clone());
        let admin = clients.admin().observed(Arc::new(requests.clone()));
        let (view_tx, view) = watch::channel(Arc::new(ClusterView::unknown()));
        let wakes = Wakes::default();
        let metadata = MetadataWatch::new(MetadataParts {
            cluster: labels.clone(),
            topic: s.heartbeat.topic.clone(),
            admin: admin.clone(),
            interval: s.checks.metadata.interval,
            view: view_tx,
            instruments: s.instruments.clone(),
            ready: hooks.metadata_ready,
            topic_ready: hooks.topic_ready,
            usable: hooks.cluster_usable,
            create_topic: s.heartbeat.create_topic.then(|| wakes.create_topic.clone()),
            brokers_changed: Some(wakes.brokers.clone()),
        });
        let brokers = tls::for_cluster(s.cluster).map(|tls| {
            BrokerProbe::new(BrokerProbeParts {
                cluster: labels.clone(),
                bootstrap: s.cluster.bootstrap_servers.clone(),
                view: view.clone(),
                tls,
                interval: s.checks.connectivity.interval,
                timeout: s.checks.connectivity.timeout,
                instruments: s.instruments.clone(),
            })
        });
        let registry = s.cluster.schema_registry.as_ref().map(|registry| {
            RegistryProbe::new(RegistryParts {
                cluster: labels.clone(),
                registry: registry.clone(),
                view: view.clone(),
                check: s.checks.schema_registry,
                instruments: s.instruments.clone(),
            })
        });
        let offsets = s.checks.offsets.enabled.then(|| {
            OffsetsProbe::new(OffsetsParts {
                cluster: labels.clone(),
                admin: admin.clone(),
                view: view.clone(),
                topics: s.cluster.topics.clone(),
                check: s.checks.offsets,
                instruments: s.instruments.clone(),
            })
        });
        let groups = s.checks.consumer_groups.enabled.then(|| {
            GroupsProbe::new(GroupsParts {
                cluster: s.cluster.clone(),
                labels: labels.clone(),
                admin: admin.clone(),
                view: view.clone(),
                check: s.checks.consumer_groups,
                timing: s.timing,
                instruments: s.instruments.clone(),
            })
        });
        let commit = (s.cluster.commit_probe.enabled != CommitProbeMode::Off).then(|| {
            CommitProbe::new(CommitParts {
                labels: labels.clone(),
                admin: admin.clone(),
                view: view.clone(),
                topic: s.heartbeat.topic.clone(),
                group: commit::group_of(
                    s.cluster.commit_probe.group.as_deref(),
                    clients.instance_id(),
                ),
                mode: s.cluster.commit_probe.enabled,
                check: s.checks.commit,
                positions: clients.read_positions(),
                instruments: s.instruments.clone(),
            })
        });
        let topic = TopicProbe::new(TopicParts {
            admin,
            config: s.heartbeat.clone(),
            view: view.clone(),
            refresh: wakes.refresh.clone(),
            interval: s.checks.topic.interval,
            retry_max: s.checks.metadata.interval,
        });
        let (heartbeat, receiver) = heartbeat::start(
            HeartbeatParts {
                cluster: s.cluster.clone(),
                heartbeat: s.heartbeat.clone(),
                instruments: s.instruments.clone(),
                view: view.clone(),
                refresh: wakes.refresh.clone(),
                tap: hooks.tap,
                first_round_trip: hooks.first_round_trip,
                requests,
            },
            clients,
        );
        Self {
            metadata,
            brokers,
            registry,
            offsets,
            groups,
            commit,
            topic,
            heartbeat,
            receiver,
            view,
            wakes,
        }
    }
}
