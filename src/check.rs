//! `cc-heartbeat check`: every probe once (metadata, each broker's stages, the topic, one
//! heartbeat round trip per partition) and a report a person reads at a glance.
//!
//! Each step is bounded (metadata and topic requests, the probe timeout, the message timeout
//! plus a short wait for the consume), and the whole check of a cluster too, so it finishes
//! even when brokers black-hole traffic.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ClusterConfig, Config};
use crate::kafka::admin::Admin;
use crate::kafka::metadata::ClusterView;
use crate::kafka::tls;
use crate::probe::broker::{self, BOOTSTRAP_ID, Outcome, Target};
use crate::probe::heartbeat::{HeartbeatParts, HeartbeatProbe, Observation};
use crate::probe::metadata::METADATA_TIMEOUT;
use crate::probe::topic::{TopicCheck, TopicStatus};
use crate::telemetry::{Instruments, Telemetry};

/// How long a heartbeat may take to come back after its ack.
const CONSUME_WAIT: Duration = Duration::from_secs(5);
/// Bound on DescribeCluster (racks) during a check.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on the check of one cluster, whatever happens.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(90);

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub healthy: bool,
    pub clusters: Vec<ClusterReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct ClusterReport {
    pub name: String,
    pub cluster_id: Option<String>,
    pub controller: Option<i32>,
    pub brokers: Vec<Outcome>,
    pub uncovered_brokers: Vec<i32>,
    pub topic: Option<TopicReport>,
    pub partitions: Vec<PartitionReport>,
    /// Why the cluster is unhealthy, one sentence each; empty when healthy.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TopicReport {
    pub name: String,
    pub partitions: Option<usize>,
    pub created: bool,
}

#[derive(Debug, Serialize)]
pub struct PartitionReport {
    pub partition: i32,
    pub leader: Option<i32>,
    pub ack_ms: Option<f64>,
    pub end_to_end_ms: Option<f64>,
    pub error: Option<String>,
}

/// Checks every cluster of `config`, concurrently.
pub async fn run(config: &Config, instance_id: &str) -> CheckReport {
    let telemetry =
        Telemetry::from_provider(opentelemetry_sdk::metrics::SdkMeterProvider::builder().build());
    let mut checks = JoinSet::new();
    for (i, cluster) in config.clusters.iter().enumerate() {
        let (config, cluster, instance, instruments) = (
            config.clone(),
            cluster.clone(),
            instance_id.to_owned(),
            telemetry.instruments.clone(),
        );
        checks.spawn(async move {
            let name = cluster.name.clone();
            let report = tokio::time::timeout(
                CLUSTER_DEADLINE,
                check_cluster(&config, cluster, &instance, instruments),
            )
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
    }
}

async fn check_cluster(
    config: &Config,
    cluster: ClusterConfig,
    instance_id: &str,
    instruments: Instruments,
) -> ClusterReport {
    let mut report = ClusterReport {
        name: cluster.name.clone(),
        ..ClusterReport::default()
    };
    let admin = match Admin::new(&cluster, &config.heartbeat) {
        Ok(a) => a,
        Err(e) => {
            report
                .problems
                .push(format!("cannot create a Kafka client: {e}"));
            return report;
        }
    };
    let tls = match cluster.security_protocol.uses_tls() {
        true => match tls::client_config(&cluster.tls) {
            Ok(c) => Some(c),
            Err(e) => {
                report
                    .problems
                    .push(format!("cannot set up TLS for the broker probe: {e}"));
                None
            }
        },
        false => None,
    };
    let timeout = config.checks.connectivity.timeout;

    // Metadata and the broker probes run side by side; brokers come from the metadata, or
    // the bootstrap address when it cannot be fetched.
    let metadata = admin.metadata(&config.heartbeat.topic, METADATA_TIMEOUT);
    let bootstrap = Target::bootstrap(&cluster.bootstrap_servers);
    let bootstrap_probe = async {
        match &bootstrap {
            Some(t) => Some(broker::probe(t, tls.as_ref(), timeout).await),
            None => None,
        }
    };
    let (metadata, bootstrap_outcome) = tokio::join!(metadata, bootstrap_probe);
    let view = match metadata {
        Ok(view) => {
            let racks: BTreeMap<i32, String> = match admin.describe(DESCRIBE_TIMEOUT).await {
                Ok(d) => d.racks(),
                Err(_) => BTreeMap::new(),
            };
            view.with_racks(&racks)
        }
        Err(e) => {
            report
                .problems
                .push(format!("cannot fetch cluster metadata: {e}"));
            if let Some(outcome) = bootstrap_outcome {
                if let Some(f) = &outcome.failure {
                    report.problems.push(format!(
                        "bootstrap {} unreachable at {}: {}",
                        outcome.target.address(),
                        f.stage.as_str(),
                        f.kind
                    ));
                }
                report.brokers.push(outcome);
            }
            return report;
        }
    };
    report.cluster_id = Some(view.cluster_id.clone());
    report.controller = view.controller;

    let mut probes = JoinSet::new();
    for b in &view.brokers {
        let target = Target::from(b);
        let tls = tls.clone();
        probes.spawn(async move { broker::probe(&target, tls.as_ref(), timeout).await });
    }
    let mut outcomes = probes.join_all().await;
    outcomes.sort_by_key(|o| o.target.id);
    for o in &outcomes {
        if let Some(f) = &o.failure {
            report.problems.push(format!(
                "broker {} ({}) unreachable at {}: {}",
                o.target.id,
                o.target.address(),
                f.stage.as_str(),
                f.kind
            ));
        }
    }
    report.brokers = outcomes;

    // The topic, created when missing and allowed, as `run` does.
    let (view_tx, view_rx) = watch::channel(Arc::new(view));
    let topic = TopicCheck {
        cluster: cluster.name.clone(),
        admin,
        config: config.heartbeat.clone(),
        view: view_tx,
        instruments: instruments.clone(),
    };
    match topic.check_once().await {
        TopicStatus::Ready {
            partitions,
            created,
        } => {
            report.topic = Some(TopicReport {
                name: config.heartbeat.topic.clone(),
                partitions: Some(partitions),
                created,
            });
        }
        TopicStatus::Unavailable(message) => {
            report.topic = Some(TopicReport {
                name: config.heartbeat.topic.clone(),
                partitions: None,
                created: false,
            });
            report.problems.push(message);
            return report;
        }
    }
    report.uncovered_brokers = view_rx.borrow().uncovered_brokers();

    report.partitions = heartbeat_round(config, cluster, instance_id, instruments, view_rx).await;
    for p in &report.partitions {
        if let Some(error) = &p.error {
            report
                .problems
                .push(format!("partition {}: {error}", p.partition));
        }
    }
    report
}

/// One heartbeat per partition, through the same probe `run` uses.
async fn heartbeat_round(
    config: &Config,
    cluster: ClusterConfig,
    instance_id: &str,
    instruments: Instruments,
    view: watch::Receiver<Arc<ClusterView>>,
) -> Vec<PartitionReport> {
    let partitions: Vec<(i32, Option<i32>)> = view
        .borrow()
        .partitions()
        .iter()
        .map(|p| (p.id, (p.leader >= 0).then_some(p.leader)))
        .collect();
    let mut heartbeat = config.heartbeat.clone();
    // One round only: the next tick would come after the check is over.
    heartbeat.interval = Duration::from_secs(3600);
    let (tap, mut observations) = mpsc::channel(1024);
    let parts = HeartbeatParts {
        cluster,
        heartbeat: heartbeat.clone(),
        instance_id: instance_id.to_owned(),
        instruments,
        view,
        tap: Some(tap),
        first_round_trip: None,
    };
    let mut reports: BTreeMap<i32, PartitionReport> = partitions
        .iter()
        .map(|(id, leader)| {
            (
                *id,
                PartitionReport {
                    partition: *id,
                    leader: *leader,
                    ack_ms: None,
                    end_to_end_ms: None,
                    error: None,
                },
            )
        })
        .collect();
    let probe = match HeartbeatProbe::new(parts) {
        Ok(p) => p,
        Err(e) => {
            for r in reports.values_mut() {
                r.error = Some(format!("cannot start the heartbeat: {e}"));
            }
            return reports.into_values().collect();
        }
    };
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let running = {
        let (cancel, tasks) = (cancel.clone(), tasks.clone());
        tokio::spawn(async move { probe.run(cancel, &tasks).await })
    };
    let deadline = tokio::time::Instant::now()
        + heartbeat.message_timeout
        + CONSUME_WAIT
        + Duration::from_secs(5);
    let done = |reports: &BTreeMap<i32, PartitionReport>| {
        reports
            .values()
            .all(|r| r.end_to_end_ms.is_some() || r.error.is_some())
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
                ..
            } => {
                if let Some(r) = reports.get_mut(&partition) {
                    r.ack_ms = Some(latency.as_secs_f64() * 1000.0);
                    if let Some(kind) = error {
                        r.error = Some(format!("produce failed ({kind})"));
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
    cancel.cancel();
    let _ = running.await;
    tasks.close();
    tasks.wait().await;
    for r in reports.values_mut() {
        if r.error.is_none() && r.end_to_end_ms.is_none() {
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

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0),
    )
}

fn ms_f(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
}

/// The report as a person reads it.
pub fn render_text(report: &CheckReport) -> String {
    let mut out = String::new();
    for c in &report.clusters {
        let id = c.cluster_id.as_deref().unwrap_or("cluster id unknown");
        let controller = c
            .controller
            .map_or_else(|| "unknown".to_owned(), |c| c.to_string());
        let n = c.brokers.len();
        let brokers = if n == 1 {
            "1 broker".to_owned()
        } else {
            format!("{n} brokers")
        };
        let _ = writeln!(
            out,
            "cluster {} ({id}): {brokers}, controller {controller}",
            c.name
        );
        if !c.brokers.is_empty() {
            let _ = writeln!(
                out,
                "  {:<9} {:<32} {:<12} {:>9} {:>9} {:>9} {:>9}  result",
                "broker", "address", "rack", "dns", "tcp", "tls", "kafka"
            );
            for o in &c.brokers {
                use crate::probe::broker::Stage;
                let id = if o.target.id == BOOTSTRAP_ID {
                    "bootstrap".to_owned()
                } else {
                    o.target.id.to_string()
                };
                let result = match &o.failure {
                    None => "ok".to_owned(),
                    Some(f) => format!("FAILED at {}: {} ({})", f.stage.as_str(), f.kind, f.detail),
                };
                let _ = writeln!(
                    out,
                    "  {:<9} {:<32} {:<12} {:>9} {:>9} {:>9} {:>9}  {result}",
                    id,
                    o.target.address(),
                    o.target.rack.as_deref().unwrap_or("-"),
                    ms(o.stage(Stage::Dns)),
                    ms(o.stage(Stage::Tcp)),
                    ms(o.stage(Stage::Tls)),
                    ms(o.stage(Stage::Kafka)),
                );
            }
        }
        if let Some(t) = &c.topic {
            let partitions = t
                .partitions
                .map_or_else(|| "unavailable".to_owned(), |p| format!("{p} partitions"));
            let created = if t.created { ", created now" } else { "" };
            let _ = writeln!(out, "  heartbeat topic {}: {partitions}{created}", t.name);
            if !c.uncovered_brokers.is_empty() {
                let _ = writeln!(
                    out,
                    "  brokers leading no heartbeat partition: {:?}",
                    c.uncovered_brokers
                );
            }
        }
        if !c.partitions.is_empty() {
            let _ = writeln!(
                out,
                "  {:<9} {:>6} {:>9} {:>9}  result",
                "partition", "leader", "ack", "e2e"
            );
            for p in &c.partitions {
                let result = p.error.clone().unwrap_or_else(|| "ok".to_owned());
                let leader = p.leader.map_or_else(|| "-".to_owned(), |l| l.to_string());
                let _ = writeln!(
                    out,
                    "  {:<9} {:>6} {:>9} {:>9}  {}",
                    p.partition,
                    leader,
                    ms_f(p.ack_ms),
                    ms_f(p.end_to_end_ms),
                    if p.error.is_some() {
                        format!("FAILED: {result}")
                    } else {
                        result
                    }
                );
            }
        }
    }
    let problems: Vec<String> = report
        .clusters
        .iter()
        .flat_map(|c| c.problems.iter().map(move |p| format!("{}: {p}", c.name)))
        .collect();
    if problems.is_empty() {
        let _ = writeln!(out, "verdict: HEALTHY");
    } else {
        let _ = writeln!(
            out,
            "verdict: UNHEALTHY ({} problem{})",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        for p in problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    out
}
