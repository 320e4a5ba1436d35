//! The per-broker probe: on a fresh connection, DNS, TCP connect, TLS handshake (when the
//! cluster uses TLS) and a Kafka ApiVersions round trip, each stage timed on its own.
//!
//! A plain TCP connect to Confluent Cloud often reaches only a shared front end, so the
//! probe goes as far as a Kafka answer, which is allowed before authentication. The whole
//! probe is bounded by the configured timeout; the stage in progress when it runs out fails
//! with `timeout`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::ErrorKind;
use crate::kafka::metadata::{BrokerInfo, ClusterView};
use crate::kafka::tls;
use crate::kafka::wire::{self, WireError};
use crate::telemetry::Instruments;
use crate::telemetry::instruments::attr;

/// A broker that left the metadata is still probed (and reported) this long.
pub const RETIRE_AFTER: Duration = Duration::from_secs(3600);
/// Broker id label of the bootstrap addresses, probed while no metadata is known.
pub const BOOTSTRAP_ID: i32 = -1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Dns,
    Tcp,
    Tls,
    Kafka,
}

impl Stage {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Kafka => "kafka",
        }
    }
}

/// A broker to probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

impl From<&BrokerInfo> for Target {
    fn from(b: &BrokerInfo) -> Self {
        Self {
            id: b.id,
            host: b.host.clone(),
            port: b.port,
            rack: b.rack.clone(),
        }
    }
}

impl Target {
    /// The first bootstrap address, standing for the cluster until its brokers are known.
    pub fn bootstrap(servers: &[String]) -> Option<Self> {
        let (host, port) = servers.first()?.rsplit_once(':')?;
        Some(Self {
            id: BOOTSTRAP_ID,
            host: host.to_owned(),
            port: port.parse().ok()?,
            rack: None,
        })
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The broker's metric attributes (cluster attributes first).
    pub fn attributes(&self, cluster: &[KeyValue]) -> Vec<KeyValue> {
        let mut attrs = cluster.to_vec();
        let id = if self.id == BOOTSTRAP_ID {
            "bootstrap".to_owned()
        } else {
            self.id.to_string()
        };
        attrs.push(KeyValue::new(attr::BROKER_ID, id));
        if let Some(rack) = &self.rack {
            attrs.push(KeyValue::new(attr::BROKER_RACK, rack.clone()));
        }
        attrs.push(KeyValue::new(attr::SERVER_ADDRESS, self.host.clone()));
        attrs
    }
}

/// Why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub stage: Stage,
    #[serde(serialize_with = "serialize_kind")]
    pub kind: ErrorKind,
    pub detail: String,
}

fn serialize_kind<S: serde::Serializer>(kind: &ErrorKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

/// The outcome of one probe of one broker.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub target: Target,
    /// Stages that completed, in order, with their durations.
    #[serde(serialize_with = "serialize_stages")]
    pub stages: Vec<(Stage, Duration)>,
    /// The stage that failed and how long it ran before failing.
    pub failure: Option<Failure>,
    #[serde(skip)]
    pub failed_after: Option<Duration>,
    /// The address connected to.
    pub peer: Option<SocketAddr>,
    /// ApiVersions version the broker answered.
    pub api_version: Option<i16>,
}

fn serialize_stages<S: serde::Serializer>(
    stages: &[(Stage, Duration)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let mut map = s.serialize_map(Some(stages.len()))?;
    for (stage, d) in stages {
        map.serialize_entry(stage.as_str(), &(d.as_secs_f64() * 1000.0))?;
    }
    map.end()
}

impl Outcome {
    pub fn up(&self) -> bool {
        self.failure.is_none()
    }

    pub fn stage(&self, stage: Stage) -> Option<Duration> {
        self.stages
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, d)| *d)
    }
}

/// Probes one broker. `tls` is the cluster's TLS client config when it uses TLS.
pub async fn probe(
    target: &Target,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Outcome {
    probe_with_version(target, tls, timeout, wire::LATEST).await
}

/// Like [`probe`], starting ApiVersions at `version`: the version the broker answered last
/// time, so a broker without the latest version costs one round trip, not two.
pub async fn probe_with_version(
    target: &Target,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
    version: i16,
) -> Outcome {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut outcome = Outcome {
        target: target.clone(),
        stages: Vec::with_capacity(4),
        failure: None,
        failed_after: None,
        peer: None,
        api_version: None,
    };
    // Runs one stage under the shared deadline; records its time or its failure.
    macro_rules! stage {
        ($stage:expr, $future:expr, $classify:expr) => {{
            let started = Instant::now();
            let result = tokio::time::timeout_at(deadline, $future).await;
            let took = started.elapsed();
            match result {
                Ok(Ok(value)) => {
                    outcome.stages.push(($stage, took));
                    value
                }
                Ok(Err(error)) => {
                    let (kind, detail) = $classify(error);
                    outcome.failure = Some(Failure {
                        stage: $stage,
                        kind,
                        detail,
                    });
                    outcome.failed_after = Some(took);
                    return outcome;
                }
                Err(_) => {
                    outcome.failure = Some(Failure {
                        stage: $stage,
                        kind: ErrorKind::Timeout,
                        detail: format!("no answer within {}", humantime::format_duration(timeout)),
                    });
                    outcome.failed_after = Some(took);
                    return outcome;
                }
            }
        }};
    }

    let addr: SocketAddr = stage!(
        Stage::Dns,
        async {
            let mut addrs = tokio::net::lookup_host((target.host.as_str(), target.port)).await?;
            addrs.next().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no addresses")
            })
        },
        |e: std::io::Error| (ErrorKind::Dns, e.to_string())
    );
    outcome.peer = Some(addr);
    let tcp = stage!(Stage::Tcp, TcpStream::connect(addr), |e: std::io::Error| (
        io_kind(&e),
        e.to_string()
    ));
    let _ = tcp.set_nodelay(true);

    let answer = match tls {
        Some(config) => {
            let Some(name) = tls::server_name(&target.host) else {
                outcome.failure = Some(Failure {
                    stage: Stage::Tls,
                    kind: ErrorKind::Tls,
                    detail: format!("{:?} is not a valid TLS server name", target.host),
                });
                return outcome;
            };
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
            let mut stream = stage!(
                Stage::Tls,
                connector.connect(name, tcp),
                |e: std::io::Error| { (ErrorKind::Tls, e.to_string()) }
            );
            stage!(
                Stage::Kafka,
                wire::api_versions(&mut stream, version),
                classify_wire
            )
        }
        None => {
            let mut stream = tcp;
            stage!(
                Stage::Kafka,
                wire::api_versions(&mut stream, version),
                classify_wire
            )
        }
    };
    outcome.api_version = Some(answer.version);
    outcome
}

fn io_kind(e: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => ErrorKind::ConnectionRefused,
        K::TimedOut => ErrorKind::Timeout,
        _ => ErrorKind::Transport,
    }
}

fn classify_wire(e: WireError) -> (ErrorKind, String) {
    let kind = match &e {
        WireError::Io(io) => io_kind(io),
        WireError::Closed | WireError::Protocol(_) => ErrorKind::Protocol,
        WireError::Broker(_) => ErrorKind::BrokerError,
    };
    (kind, e.to_string())
}

/// Records one outcome into the instruments: a duration per stage, the check, and `up`.
pub fn record(
    instruments: &Instruments,
    cluster_name: &str,
    cluster: &[KeyValue],
    outcome: &Outcome,
) {
    let attrs = outcome.target.attributes(cluster);
    let with = |extra: &[KeyValue]| {
        let mut a = attrs.clone();
        a.extend_from_slice(extra);
        a
    };
    for (stage, d) in &outcome.stages {
        instruments.broker_connection_duration.record(
            d.as_secs_f64(),
            &with(&[KeyValue::new(attr::CONNECTION_STAGE, stage.as_str())]),
        );
    }
    match &outcome.failure {
        None => instruments.broker_connection_checks.add(1, &attrs),
        Some(f) => {
            let failed = [
                KeyValue::new(attr::CONNECTION_STAGE, f.stage.as_str()),
                KeyValue::new(attr::ERROR_TYPE, f.kind.as_str()),
            ];
            if let Some(d) = outcome.failed_after {
                instruments
                    .broker_connection_duration
                    .record(d.as_secs_f64(), &with(&failed));
            }
            instruments.broker_connection_checks.add(1, &with(&failed));
        }
    }
    instruments.gauges.update(cluster_name, |g| {
        g.broker_up
            .insert(outcome.target.id, (attrs.clone(), outcome.up()));
    });
}

/// The periodic task: probes every known broker of a cluster concurrently, each interval.
pub struct BrokerProbe {
    pub cluster: String,
    pub bootstrap: Vec<String>,
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub interval: Duration,
    pub timeout: Duration,
    pub instruments: Instruments,
}

struct Known {
    target: Target,
    /// ApiVersions version the broker answered last.
    api_version: i16,
    /// When it was last in the metadata.
    seen: Instant,
    up: Option<bool>,
}

impl BrokerProbe {
    pub async fn run(self, cancel: CancellationToken) {
        info!(
            cluster = %self.cluster,
            interval = %humantime::format_duration(self.interval),
            timeout = %humantime::format_duration(self.timeout),
            tls = self.tls.is_some(),
            "Broker probe started: DNS, TCP, {}Kafka ApiVersions on a fresh connection to every broker.",
            if self.tls.is_some() { "TLS, " } else { "" },
        );
        let mut known: BTreeMap<i32, Known> = BTreeMap::new();
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let view = Arc::clone(&self.view.borrow());
            self.refresh_targets(&view, &mut known);
            let cluster_attrs =
                crate::telemetry::ClusterAttributes::new(&view.cluster_id, &self.cluster);
            let mut probes = JoinSet::new();
            for k in known.values() {
                let (target, tls) = (k.target.clone(), self.tls.clone());
                let (timeout, version) = (self.timeout, k.api_version);
                probes.spawn(async move {
                    probe_with_version(&target, tls.as_ref(), timeout, version).await
                });
            }
            let outcomes = tokio::select! {
                () = cancel.cancelled() => break,
                outcomes = probes.join_all() => outcomes,
            };
            for outcome in outcomes {
                record(
                    &self.instruments,
                    &self.cluster,
                    cluster_attrs.base(),
                    &outcome,
                );
                if let Some(k) = known.get_mut(&outcome.target.id) {
                    self.log_change(k.up, &outcome);
                    k.up = Some(outcome.up());
                    k.api_version = outcome.api_version.unwrap_or(k.api_version);
                }
            }
        }
    }

    /// Adds brokers from the metadata, updates their address and rack, and retires brokers
    /// gone from it for longer than [`RETIRE_AFTER`]. Before any metadata, the bootstrap
    /// addresses are the targets.
    fn refresh_targets(&self, view: &ClusterView, known: &mut BTreeMap<i32, Known>) {
        let now = Instant::now();
        if !view.fetched {
            if let Some(target) = Target::bootstrap(&self.bootstrap) {
                known.entry(BOOTSTRAP_ID).or_insert_with(|| Known {
                    target,
                    seen: now,
                    up: None,
                    api_version: wire::LATEST,
                });
            }
            return;
        }
        if known.remove(&BOOTSTRAP_ID).is_some() {
            self.instruments.gauges.update(&self.cluster, |g| {
                g.broker_up.remove(&BOOTSTRAP_ID);
            });
        }
        for b in &view.brokers {
            let target = Target::from(b);
            match known.get_mut(&b.id) {
                Some(k) => {
                    k.target = target;
                    k.seen = now;
                }
                None => {
                    known.insert(
                        b.id,
                        Known {
                            target,
                            seen: now,
                            up: None,
                            api_version: wire::LATEST,
                        },
                    );
                }
            }
        }
        let retired: Vec<i32> = known
            .iter()
            .filter(|(_, k)| now.duration_since(k.seen) > RETIRE_AFTER)
            .map(|(id, _)| *id)
            .collect();
        for id in retired {
            info!(cluster = %self.cluster, broker = id, "Broker has been gone from the metadata for an hour; no longer probed.");
            known.remove(&id);
            self.instruments.gauges.update(&self.cluster, |g| {
                g.broker_up.remove(&id);
            });
        }
    }

    fn log_change(&self, was_up: Option<bool>, outcome: &Outcome) {
        let t = &outcome.target;
        match (&outcome.failure, was_up) {
            (Some(f), Some(true) | None) => warn!(
                cluster = %self.cluster,
                broker = t.id,
                address = %t.address(),
                stage = f.stage.as_str(),
                error.type = f.kind.as_str(),
                error = %f.detail,
                "Broker unreachable.",
            ),
            (None, Some(false)) => {
                info!(cluster = %self.cluster, broker = t.id, address = %t.address(), "Broker reachable again.")
            }
            (Some(f), Some(false)) => {
                debug!(cluster = %self.cluster, broker = t.id, stage = f.stage.as_str(), error = %f.detail, "Broker still unreachable.")
            }
            (None, _) => {}
        }
    }
}
