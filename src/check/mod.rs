//! `cc-heartbeat check`: every probe once, through the same `probe_once` the agent runs:
//! metadata and the bootstrap address side by side, then each broker's stages, the topic, and
//! one heartbeat round trip per partition. Instruments record nowhere; the report says it all.
//!
//! Each step is bounded (requests, the probe timeout, the message timeout plus a short wait
//! for the consume), and the whole check of a cluster too, so it finishes even when brokers
//! black-hole traffic.

mod report;
mod series;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::config::{ClusterConfig, Config};
use crate::error::{Chain, ErrorKind};
use crate::kafka::ClientTiming;
use crate::kafka::metadata::ClusterView;
use crate::kafka::reach::Stage;
use crate::probe::broker::Outcome;
use crate::probe::heartbeat::{HeartbeatClients, HeartbeatProbe, Observation};
use crate::probe::set::{Hooks, ProbeSet, Settings};
use crate::probe::{self, Probe as _};
use crate::telemetry::Instruments;
use crate::telemetry::traces::Traces;

pub use report::{
    CheckReport, ClusterReport, GroupsSummary, OffsetsSummary, PartitionReport, TopicReport,
    render_text,
};

/// How long a heartbeat may take to come back after its ack.
const CONSUME_WAIT: Duration = Duration::from_secs(5);
/// Bound on the check of one cluster, whatever happens.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(90);

/// Checks every cluster of `config`, concurrently; what fails (or is slow) is kept as spans
/// in `traces` (off: [`Traces::disabled`]).
pub async fn run(config: &Config, instance_id: &str, traces: &Traces) -> CheckReport {
    let mut checks = JoinSet::new();
    for (i, cluster) in config.clusters.iter().enumerate() {
        let (config, cluster, instance) = (config.clone(), cluster.clone(), instance_id.to_owned());
        let traces = traces.clone();
        checks.spawn(async move {
            let name = cluster.name.clone();
            let check = check_cluster(&config, cluster, &instance, &traces);
            let report = tokio::time::timeout(CLUSTER_DEADLINE, check)
                .await
                .unwrap_or_else(|_| ClusterReport {
                    name,
                    problems: vec![format!(
                        "the check did not finish within {}",
                        humantime::format_duration(CLUSTER_DEADLINE)
                    )],
                    ..ClusterReport::default()
                });
            (i, report)
        });
    }
    let mut clusters: Vec<(usize, ClusterReport)> = checks.join_all().await;
    clusters.sort_by_key(|(i, _)| *i);
    let clusters: Vec<ClusterReport> = clusters.into_iter().map(|(_, r)| r).collect();
    CheckReport {
        healthy: clusters.iter().all(|c| c.problems.is_empty()),
        clusters,
        traces: None,
    }
}

fn broker_problem(o: &Outcome) -> Option<String> {
    let f = o.failure.as_ref()?;
    let who = match o.target.id {
        crate::probe::broker::BOOTSTRAP_ID => format!("bootstrap {}", o.target.address()),
        id => format!("broker {id} ({})", o.target.address()),
    };
    Some(format!(
        "{who} unreachable at {}: {}{}",
        f.stage.as_str(),
        f.kind(),
        trace_note(o.trace_id.as_deref())
    ))
}

/// ` (trace <id>)` when the failure's trace is kept.
pub(crate) fn trace_note(trace_id: Option<&str>) -> String {
    trace_id.map_or_else(String::new, |id| format!(" (trace {id})"))
}

/// Every address failed before a connection was made (name lookup or TCP).
fn no_connection(outcomes: &[Outcome]) -> bool {
    !outcomes.is_empty()
        && outcomes.iter().all(|o| {
            o.failure
                .as_ref()
                .is_some_and(|f| matches!(f.stage, Stage::Dns | Stage::Tcp))
        })
}

/// The cluster could not be reached: `why`, then each bootstrap address's failure.
fn unreachable(report: &mut ClusterReport, outcomes: &[Outcome], why: &str) {
    report.problems.push(why.to_owned());
    report
        .problems
        .extend(outcomes.iter().filter_map(broker_problem));
}

/// A failed metadata request as a problem of the report, with its `error.type`.
fn metadata_problem(e: &(dyn std::error::Error + 'static)) -> String {
    format!(
        "cannot fetch cluster metadata ({}): {}",
        ErrorKind::of(e).as_str(),
        Chain(e)
    )
}

/// Leaders that the metadata names for heartbeat partitions but does not list as brokers: a
/// broker that dropped out, usually because it is down.
fn absent_leaders(view: &ClusterView) -> Vec<String> {
    let mut led: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in view.partitions() {
        if p.leader >= 0 && view.broker(p.leader).is_none() {
            led.entry(p.leader).or_default().push(p.id);
        }
    }
    led.into_iter()
        .map(|(broker, partitions)| {
            format!(
                "broker {broker} leads heartbeat partitions {partitions:?} but is not in the metadata (down?)"
            )
        })
        .collect()
}

async fn check_cluster(
    config: &Config,
    cluster: ClusterConfig,
    instance_id: &str,
    traces: &Traces,
) -> ClusterReport {
    let mut report = ClusterReport {
        name: cluster.name.clone(),
        ..ClusterReport::default()
    };
    let clients = match HeartbeatClients::new(
        &cluster,
        ClientTiming::of(config),
        instance_id,
        config.heartbeat.read_back,
    ) {
        Ok(c) => c,
        Err(e) => {
            report
                .problems
                .push(format!("cannot create a Kafka client: {}", Chain(&e)));
            return report;
        }
    };
    let (cancel, tasks) = (CancellationToken::new(), TaskTracker::new());
    clients.serve(&cancel, &tasks);
    check_with_clients(config, cluster, clients, &tasks, traces, &mut report).await;
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    report
}

/// The check itself, on clients that are being served (tasks go to `tasks`): the probes of
/// a [`ProbeSet`], each round through [`probe::once`], as `run` runs them.
async fn check_with_clients(
    config: &Config,
    cluster: ClusterConfig,
    clients: HeartbeatClients,
    tasks: &TaskTracker,
    traces: &Traces,
    report: &mut ClusterReport,
) {
    let mut instruments = Instruments::unexported();
    instruments.traces = traces.clone();
    let (tap, observations) = mpsc::channel(1024);
    let set = ProbeSet::new(
        Settings {
            cluster: &cluster,
            heartbeat: &config.heartbeat,
            checks: &config.checks,
            timing: ClientTiming::of(config),
            instruments: &instruments,
        },
        clients,
        Hooks {
            tap: Some(tap),
            ..Hooks::default()
        },
    );
    let ProbeSet {
        mut metadata,
        brokers,
        registry,
        offsets,
        groups,
        commit,
        mut topic,
        heartbeat,
        receiver,
        view,
        ..
    } = set;
    let name = cluster.name.as_str();
    let mut brokers = match brokers {
        Ok(brokers) => Some(brokers),
        Err(e) => {
            report.problems.push(format!(
                "cannot set up TLS for the broker probe: {}",
                Chain(&e)
            ));
            None
        }
    };

    // Metadata and the bootstrap address side by side: without metadata, the bootstrap
    // probe says why the cluster cannot be reached. When no bootstrap address can even be
    // resolved or connected to, metadata cannot come either: answer now instead of waiting
    // out the request timeout.
    let fetched = {
        let fetch = probe::once(&mut metadata, name);
        let bootstrap = async {
            match brokers.as_mut() {
                Some(b) => probe::once(b, name).await.unwrap_or_default(),
                None => Vec::new(),
            }
        };
        tokio::pin!(fetch, bootstrap);
        let mut fetched = None;
        let mut outcomes = None;
        while fetched.is_none() || outcomes.is_none() {
            tokio::select! {
                result = &mut fetch, if fetched.is_none() => fetched = Some(result),
                result = &mut bootstrap, if outcomes.is_none() => {
                    if fetched.is_none() && no_connection(&result) {
                        unreachable(report, &result, "no bootstrap address accepts a connection");
                        report.brokers = result;
                        return;
                    }
                    outcomes = Some(result);
                }
            }
        }
        // The loop ends with both: `fetched` is set.
        let Some(fetched) = fetched else { return };
        match fetched {
            Ok(view) => view,
            Err(e) => {
                let outcomes = outcomes.unwrap_or_default();
                unreachable(report, &outcomes, &metadata_problem(&e));
                report.brokers = outcomes;
                return;
            }
        }
    };
    report.cluster_id = Some(fetched.cluster_id.clone());
    report.controller = fetched.controller;
    if let Some(brokers) = brokers.as_mut() {
        let outcomes = probe::once(brokers, name).await.unwrap_or_default();
        report
            .problems
            .extend(outcomes.iter().filter_map(broker_problem));
        report.brokers = outcomes;
    }

    if let Some(mut offsets) = offsets {
        series::check_offsets(probe::once(&mut offsets, name).await, report);
    }
    if let Some(mut groups) = groups {
        series::check_groups(probe::once(&mut groups, name).await, report);
    }
    match registry {
        Some(Ok(mut registry)) => {
            series::check_registry(probe::once(&mut registry, name).await, report);
        }
        Some(Err(e)) => report.problems.push(format!(
            "cannot set up TLS for the Schema Registry probe: {}",
            Chain(&e)
        )),
        None => {}
    }

    // The topic, created when missing and allowed, as `run` does.
    let topic_result = probe::once(&mut topic, name).await;
    report.topic = Some(TopicReport {
        name: config.heartbeat.topic.clone(),
        partitions: topic_result.as_ref().ok().map(|t| t.partitions),
        created: topic_result.as_ref().is_ok_and(|t| t.created),
    });
    match topic_result {
        Ok(t) if t.created => {
            // Publish the new topic's partitions before the heartbeat round reads them.
            if let Err(e) = probe::once(&mut metadata, name).await {
                report.problems.push(metadata_problem(&e));
                return;
            }
        }
        Ok(_) => {}
        Err(e) => {
            report.problems.push(Chain(&e).to_string());
            return;
        }
    }
    report.uncovered_brokers = view.borrow().uncovered_brokers();
    report.problems.extend(absent_leaders(&view.borrow()));

    tasks.spawn(receiver.run().instrument(probe::span("heartbeat", name)));
    report.partitions = heartbeat_round(config, name, heartbeat, observations, &view).await;
    for p in &report.partitions {
        if let Some(error) = &p.error {
            report.problems.push(format!(
                "partition {}: {error}{}",
                p.partition,
                trace_note(p.trace_id.as_deref())
            ));
        }
    }
    // After the round trip: the commit carries the reader's position.
    if let Some(mut commit) = commit {
        match probe::once(&mut commit, name).await {
            Ok(found) => report.commit = Some(found),
            Err(e) => report.problems.push(format!("commit path: {}", Chain(&e))),
        }
    }
}

/// One heartbeat per partition, through the same probe `run` uses.
async fn heartbeat_round(
    config: &Config,
    cluster: &str,
    mut probe: HeartbeatProbe,
    mut observations: mpsc::Receiver<Observation>,
    view: &watch::Receiver<Arc<ClusterView>>,
) -> Vec<PartitionReport> {
    let mut reports: BTreeMap<i32, PartitionReport> = view
        .borrow()
        .partitions()
        .iter()
        .map(|p| {
            let report = PartitionReport {
                partition: p.id,
                leader: (p.leader >= 0).then_some(p.leader),
                ack_ms: None,
                end_to_end_ms: None,
                error: None,
                trace_id: None,
            };
            (p.id, report)
        })
        .collect();
    let round = match probe::once(&mut probe, cluster).await {
        Ok(round) => round,
        Err(e) => {
            for r in reports.values_mut() {
                r.error = Some(format!("no round: {}", Chain(&e)));
            }
            return reports.into_values().collect();
        }
    };
    for (partition, why) in &round.unassigned {
        if let Some(r) = reports.get_mut(partition) {
            r.error = Some(format!("not sent: {why}"));
        }
    }
    let deadline = tokio::time::Instant::now() + config.heartbeat.message_timeout + CONSUME_WAIT;
    // Both the ack and the round trip: the consumer may see a heartbeat before the producer
    // hears of its ack.
    // Without reading back (heartbeat.read_back: false), the ack is all there is.
    let read_back = config.heartbeat.read_back;
    let done = |reports: &BTreeMap<i32, PartitionReport>| {
        reports.values().all(|r| {
            (r.ack_ms.is_some() && (r.end_to_end_ms.is_some() || !read_back)) || r.error.is_some()
        })
    };
    while !done(&reports) {
        let Ok(Some(observation)) = tokio::time::timeout_at(deadline, observations.recv()).await
        else {
            break;
        };
        match observation {
            Observation::Acked {
                partition,
                latency,
                error,
                trace,
                ..
            } => {
                if let Some(r) = reports.get_mut(&partition) {
                    r.ack_ms = Some(latency.as_secs_f64() * 1000.0);
                    if let Some(kind) = error {
                        r.error = Some(format!("produce failed ({kind})"));
                        r.trace_id = trace.map(|t| t.to_string());
                    }
                }
            }
            Observation::RoundTrip {
                partition,
                end_to_end,
                ..
            } => {
                if let Some(r) = reports.get_mut(&partition) {
                    r.end_to_end_ms = Some(end_to_end.as_secs_f64() * 1000.0);
                }
            }
            _ => {}
        }
    }
    probe.stop().await;
    for r in reports.values_mut() {
        if r.error.is_none() && r.end_to_end_ms.is_none() && (read_back || r.ack_ms.is_none()) {
            r.error = Some(match r.ack_ms {
                Some(_) => format!(
                    "acked but not consumed back within {}",
                    humantime::format_duration(CONSUME_WAIT)
                ),
                None => "no ack within the message timeout".to_owned(),
            });
        }
    }
    reports.into_values().collect()
}
