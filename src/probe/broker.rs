//! The broker probe: every interval, every broker in the latest metadata is reached stage by
//! stage on a fresh connection (see [`crate::kafka::reach`]), all of them concurrently. A
//! broker that leaves the metadata is still probed for an hour; before the first metadata,
//! the bootstrap address stands for the cluster, so an unreachable cluster still says why.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Probe, Schedule};
use crate::events::broker::{BootstrapRetired, BrokerProbed, BrokerRetired};
use crate::kafka::metadata::{Broker, ClusterView};
use crate::kafka::wire;
use crate::telemetry::instruments::{ClusterLabels, attr, name};
use crate::telemetry::traces::in_span;
use crate::telemetry::{ClusterAttributes, Instruments};

pub use crate::kafka::reach::{
    BOOTSTRAP_ID, Failure, Outcome, Stage, StageError, probe, probe_with_version,
};

/// A broker that left the metadata is still probed (and reported) this long.
pub const RETIRE_AFTER: Duration = Duration::from_secs(3600);
/// How much longer than the per-broker timeout a whole round may take.
const ROUND_MARGIN: Duration = Duration::from_secs(1);

/// The periodic probe of every known broker of a cluster, concurrently.
pub struct BrokerProbe {
    cluster: ClusterLabels,
    bootstrap: Vec<String>,
    view: watch::Receiver<Arc<ClusterView>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    interval: Duration,
    timeout: Duration,
    instruments: Instruments,
    known: BTreeMap<i32, Known>,
}

/// What the probe remembers of a broker.
struct Known {
    target: Broker,
    /// ApiVersions version the broker answered last.
    api_version: i16,
    /// When it was last in the metadata.
    seen: Instant,
    up: Option<bool>,
}

impl Known {
    fn new(target: Broker, now: Instant) -> Self {
        Self {
            target,
            api_version: wire::LATEST,
            seen: now,
            up: None,
        }
    }
}

/// What the broker probe needs from its cluster.
pub struct BrokerProbeParts {
    pub cluster: ClusterLabels,
    pub bootstrap: Vec<String>,
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// The cluster's TLS client config, when it uses TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub interval: Duration,
    pub timeout: Duration,
    pub instruments: Instruments,
}

impl BrokerProbe {
    pub fn new(parts: BrokerProbeParts) -> Self {
        Self {
            cluster: parts.cluster,
            bootstrap: parts.bootstrap,
            view: parts.view,
            tls: parts.tls,
            interval: parts.interval,
            timeout: parts.timeout,
            instruments: parts.instruments,
            known: BTreeMap::new(),
        }
    }

    /// Adds brokers from the metadata, updates their address and rack, and retires brokers
    /// gone from it for longer than [`RETIRE_AFTER`]. Before any metadata, the bootstrap
    /// address is the target.
    fn refresh_targets(&mut self, view: &ClusterView) {
        let now = Instant::now();
        if !view.fetched {
            if let Some(target) = Broker::bootstrap(&self.bootstrap) {
                self.known
                    .entry(BOOTSTRAP_ID)
                    .or_insert_with(|| Known::new(target, now));
            }
            return;
        }
        if self.known.remove(&BOOTSTRAP_ID).is_some() {
            BootstrapRetired {
                cluster: self.cluster.name(),
            }
            .emit(&self.instruments);
        }
        for b in &view.brokers {
            let target = b.clone();
            match self.known.get_mut(&b.id) {
                Some(k) => {
                    k.target = target;
                    k.seen = now;
                }
                None => {
                    self.known.insert(b.id, Known::new(target, now));
                }
            }
        }
        let retired: Vec<i32> = self
            .known
            .iter()
            .filter(|(_, k)| now.duration_since(k.seen) > RETIRE_AFTER)
            .map(|(id, _)| *id)
            .collect();
        for id in retired {
            self.known.remove(&id);
            BrokerRetired {
                cluster: self.cluster.name(),
                broker: id,
            }
            .emit(&self.instruments);
        }
    }
}

impl Probe for BrokerProbe {
    const KIND: &'static str = "broker";
    const ROUND_SPAN: bool = false;
    type Output = Vec<Outcome>;
    type Error = Infallible;

    fn schedule(&self) -> Schedule {
        Schedule::every(self.interval, self.timeout + ROUND_MARGIN)
    }

    fn describe(&self) -> String {
        format!(
            "Broker probe started: DNS, TCP, {}Kafka ApiVersions on a fresh connection to every broker.",
            if self.tls.is_some() { "TLS, " } else { "" }
        )
    }

    /// Cancel-safe: nothing is recorded until every broker has answered (the stage probes of
    /// a cut round are aborted with it).
    async fn probe_once(&mut self) -> Result<Vec<Outcome>, Infallible> {
        let view = Arc::clone(&self.view.borrow());
        self.refresh_targets(&view);
        let attrs = ClusterAttributes::new(&view.cluster_id, &self.cluster);
        let mut probes = JoinSet::new();
        for k in self.known.values() {
            let (target, tls) = (k.target.clone(), self.tls.clone());
            let (timeout, version) = (self.timeout, k.api_version);
            probes.spawn(async move {
                probe_with_version(&target, tls.as_ref(), timeout, version).await
            });
        }
        let mut outcomes = probes.join_all().await;
        outcomes.sort_by_key(|o| o.target.id);
        let traces = &self.instruments.traces;
        for outcome in &mut outcomes {
            let known = self.known.get_mut(&outcome.target.id);
            let was_up = known.as_ref().and_then(|k| k.up);
            let root = super::spans::kept_round(traces, outcome);
            in_span(root, || {
                BrokerProbed {
                    cluster: self.cluster.name(),
                    attrs: &attrs,
                    outcome,
                    was_up,
                }
                .emit(&self.instruments);
            });
            if let Some(root) = root {
                let attributes = outcome.target.attributes(attrs.base());
                let stages = super::spans::StageSeries {
                    metric: name::BROKER_CONNECTION_DURATION,
                    series: vec![
                        (attr::CLUSTER_NAME, self.cluster.name().to_owned()),
                        (attr::BROKER_ID, outcome.target.label()),
                    ],
                    stage_key: attr::CONNECTION_STAGE,
                };
                super::spans::record_staged(
                    traces,
                    root,
                    "probe broker",
                    attributes,
                    outcome,
                    stages,
                );
            }
            if let Some(k) = known {
                k.up = Some(outcome.up());
                k.api_version = outcome.api_version.unwrap_or(k.api_version);
            }
            outcome.trace_id = root.map(|r| r.trace.to_string());
        }
        Ok(outcomes)
    }
}
