//! What `check` found, as JSON (serde) or as text a person reads at a glance.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::events::groups::GroupState;
use crate::output::table::{Column, Table};
use crate::probe::broker::{Outcome, Stage};

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub healthy: bool,
    pub clusters: Vec<ClusterReport>,
    /// Where the failures' traces went, when the config exports traces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traces: Option<crate::telemetry::TracesSent>,
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
    /// The offsets check: the watched topics' partitions and their replication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsets: Option<OffsetsSummary>,
    /// The Schema Registry probe, when the cluster has a registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_registry: Option<Outcome>,
    /// The consumer group check: each watched group's members and lag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_groups: Option<GroupsSummary>,
    /// The commit probe's round: the group's coordinator and each step's round trip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<crate::probe::commit::CommitReport>,
    /// Why the cluster is unhealthy, one sentence each; empty when healthy.
    pub problems: Vec<String>,
}

/// What the offsets check found, in short.
#[derive(Debug, Default, Serialize)]
pub struct OffsetsSummary {
    pub topics: usize,
    pub partitions: usize,
    /// `topic/partition: in-sync of replicas`, for each under-replicated partition.
    pub under_replicated: Vec<String>,
    /// `topic/partition` of each partition without a leader.
    pub leaderless: Vec<String>,
    /// Topics the series cap left out.
    pub dropped_topics: usize,
}

/// What the consumer group check found.
#[derive(Debug, Default, Serialize)]
pub struct GroupsSummary {
    pub groups: BTreeMap<String, GroupState>,
    /// Groups whose committed offsets could not be read, with why.
    pub unreadable: BTreeMap<String, String>,
    /// Groups the series cap left out.
    pub dropped_groups: usize,
    /// The cluster does not answer ListGroups.
    pub unsupported: bool,
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
    /// The trace the failed send is kept in, when spans are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

fn ms(d: Option<Duration>) -> String {
    ms_f(d.map(|d| d.as_secs_f64() * 1000.0))
}

fn ms_f(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
}

/// `ok`, or the stage that failed, its `error.type` and why.
fn result(o: &Outcome) -> String {
    match &o.failure {
        None => "ok".to_owned(),
        Some(f) => format!(
            "FAILED at {}: {} ({})",
            f.stage.as_str(),
            f.kind(),
            f.detail()
        ),
    }
}

fn id_or_dash(id: Option<i32>) -> String {
    id.map_or_else(|| "-".to_owned(), |id| id.to_string())
}

/// `commit path (group g): coordinator 2 (rack zone-b), find_coordinator 3.1 ms, …`.
fn commit_line(commit: &crate::probe::commit::CommitReport) -> String {
    if commit.off {
        return format!(
            "commit path (group {}): not measured (the group may not be used, or the cluster does not describe groups)",
            commit.group
        );
    }
    let coordinator = commit.coordinator.map_or_else(
        || "coordinator unknown".to_owned(),
        |id| {
            let rack = commit.rack.as_deref().unwrap_or("-");
            format!("coordinator {id} (rack {rack})")
        },
    );
    let steps: Vec<String> = commit
        .steps
        .iter()
        .map(|(step, ms)| format!("{step} {ms:.1} ms"))
        .collect();
    format!(
        "commit path (group {}): {coordinator}, {}",
        commit.group,
        steps.join(", ")
    )
}

/// The report as a person reads it.
pub fn render_text(report: &CheckReport) -> String {
    let mut out = String::new();
    for c in &report.clusters {
        render_cluster(&mut out, c);
    }
    let problems: Vec<String> = report
        .clusters
        .iter()
        .flat_map(|c| c.problems.iter().map(move |p| format!("{}: {p}", c.name)))
        .collect();
    if let Some(t) = &report.traces {
        if t.failed.is_empty() {
            let _ = writeln!(out, "traces of the failures: sent to {}", t.endpoint);
        } else {
            let _ = writeln!(
                out,
                "traces of the failures: NOT delivered to {} ({})",
                t.endpoint,
                t.failed.join(", ")
            );
        }
    }
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

fn render_cluster(out: &mut String, c: &ClusterReport) {
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
        let mut table = Table::new([
            Column::left("broker", 9),
            Column::left("address", 32),
            Column::left("rack", 12),
            Column::right("dns", 9),
            Column::right("tcp", 9),
            Column::right("tls", 9),
            Column::right("kafka", 9),
            Column::text("result"),
        ]);
        for o in &c.brokers {
            let result = result(o);
            table.row([
                o.target.label(),
                o.target.address(),
                o.target.rack.clone().unwrap_or_else(|| "-".to_owned()),
                ms(o.stage(Stage::Dns)),
                ms(o.stage(Stage::Tcp)),
                ms(o.stage(Stage::Tls)),
                ms(o.stage(Stage::Kafka)),
                result,
            ]);
        }
        out.push_str(&table.render("  ", "  "));
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
    if let Some(commit) = &c.commit {
        let _ = writeln!(out, "  {}", commit_line(commit));
    }
    if let Some(o) = &c.offsets {
        let mut line = format!(
            "  offsets: {} topics, {} partitions, {} under-replicated, {} without a leader",
            o.topics,
            o.partitions,
            o.under_replicated.len(),
            o.leaderless.len()
        );
        if o.dropped_topics > 0 {
            let _ = write!(
                line,
                "; {} topics over max_series not read",
                o.dropped_topics
            );
        }
        let _ = writeln!(out, "{line}");
    }
    if let Some(o) = &c.schema_registry {
        let stages: Vec<String> = o
            .stages
            .iter()
            .map(|(stage, took)| format!("{} {}", stage.as_str(), ms(Some(*took))))
            .collect();
        let result = result(o);
        let _ = writeln!(
            out,
            "  schema registry {}: {} — {result}",
            o.target.address(),
            stages.join(", ")
        );
    }
    if let Some(g) = &c.consumer_groups {
        if g.unsupported {
            let _ = writeln!(
                out,
                "  consumer groups: not listed by this cluster (ListGroups unsupported)"
            );
        } else {
            let _ = writeln!(
                out,
                "  consumer groups: {} watched, {} unreadable",
                g.groups.len(),
                g.unreadable.len()
            );
        }
        for (name, group) in &g.groups {
            let oldest = group
                .partitions
                .values()
                .filter_map(|p| p.lag_seconds)
                .fold(None, |max: Option<f64>, s| {
                    Some(max.map_or(s, |m| m.max(s)))
                });
            let age = oldest.map_or_else(String::new, |s| format!(", oldest unread {s:.1} s"));
            let _ = writeln!(
                out,
                "    {name}: {} members, lag {}{age}",
                group.members,
                group.lag()
            );
        }
    }
    if !c.partitions.is_empty() {
        let mut table = Table::new([
            Column::left("partition", 9),
            Column::right("leader", 6),
            Column::right("ack", 9),
            Column::right("e2e", 9),
            Column::text("result"),
        ]);
        for p in &c.partitions {
            let result = match &p.error {
                Some(error) => format!("FAILED: {error}"),
                None => "ok".to_owned(),
            };
            table.row([
                p.partition.to_string(),
                id_or_dash(p.leader),
                ms_f(p.ack_ms),
                ms_f(p.end_to_end_ms),
                result,
            ]);
        }
        out.push_str(&table.render("  ", "  "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_at_a_glance() {
        let report = CheckReport {
            healthy: false,
            clusters: vec![ClusterReport {
                name: "prod".into(),
                cluster_id: Some("lkc-1".into()),
                controller: Some(2),
                topic: Some(TopicReport {
                    name: "cc-heartbeat".into(),
                    partitions: Some(2),
                    created: false,
                }),
                partitions: vec![
                    PartitionReport {
                        partition: 0,
                        leader: Some(1),
                        ack_ms: Some(4.25),
                        end_to_end_ms: Some(6.0),
                        error: None,
                        trace_id: None,
                    },
                    PartitionReport {
                        partition: 1,
                        leader: None,
                        ack_ms: None,
                        end_to_end_ms: None,
                        error: Some("produce failed (timeout)".into()),
                        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
                    },
                ],
                problems: vec![
                    "partition 1: produce failed (timeout) (trace 4bf92f3577b34da6a3ce929d0e0e4736)"
                        .into(),
                ],
                ..ClusterReport::default()
            }],
            traces: Some(crate::telemetry::TracesSent {
                endpoint: "http://collector:4317".into(),
                delivered: 1,
                failed: Vec::new(),
            }),
        };
        let text = render_text(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "cluster prod (lkc-1): 0 brokers, controller 2");
        assert_eq!(lines[1], "  heartbeat topic cc-heartbeat: 2 partitions");
        assert_eq!(lines[2], "  partition leader       ack       e2e  result");
        assert_eq!(lines[3], "  0              1    4.2 ms    6.0 ms  ok");
        assert_eq!(
            lines[4],
            "  1              -         -         -  FAILED: produce failed (timeout)"
        );
        assert_eq!(
            lines[5],
            "traces of the failures: sent to http://collector:4317"
        );
        assert_eq!(lines[6], "verdict: UNHEALTHY (1 problem)");
        assert_eq!(
            lines[7],
            "  - prod: partition 1: produce failed (timeout) (trace 4bf92f3577b34da6a3ce929d0e0e4736)"
        );
    }
}
