//! The checks beyond brokers, topic and heartbeat, run once for `check`: partition offsets
//! and replication, consumer group lag, and the Schema Registry.

use std::sync::Arc;

use tokio::sync::watch;

use super::report::{ClusterReport, GroupsSummary, OffsetsSummary};
use crate::config::{ClusterConfig, Config};
use crate::error::Chain;
use crate::kafka::ClientTiming;
use crate::kafka::admin::Admin;
use crate::kafka::metadata::ClusterView;
use crate::probe::Probe as _;
use crate::probe::groups::{GroupsParts, GroupsProbe, GroupsReport};
use crate::probe::offsets::{OffsetsParts, OffsetsProbe, OffsetsReport};
use crate::probe::schema_registry::{RegistryParts, RegistryProbe};
use crate::telemetry::Instruments;
use crate::telemetry::instruments::ClusterLabels;

/// What both checks need from the cluster's check.
pub(super) struct Parts<'a> {
    pub config: &'a Config,
    pub cluster: &'a ClusterConfig,
    pub labels: &'a ClusterLabels,
    pub admin: &'a Admin,
    pub view: &'a watch::Receiver<Arc<ClusterView>>,
    pub instruments: &'a Instruments,
}

/// Partition offsets and replication: under-replicated and leaderless partitions are problems.
pub(super) async fn check_offsets(p: &Parts<'_>, report: &mut ClusterReport) {
    if !p.config.checks.offsets.enabled {
        return;
    }
    let mut offsets = OffsetsProbe::new(OffsetsParts {
        cluster: p.labels.clone(),
        admin: p.admin.clone(),
        view: p.view.clone(),
        topics: p.cluster.topics.clone(),
        check: p.config.checks.offsets,
        instruments: p.instruments.clone(),
    });
    match offsets.probe_once().await {
        Ok(found) => {
            let summary = offsets_summary(&found);
            report.problems.extend(
                summary
                    .under_replicated
                    .iter()
                    .map(|p| format!("partition {p} replicas in sync")),
            );
            report.problems.extend(
                summary
                    .leaderless
                    .iter()
                    .map(|p| format!("partition {p} has no leader")),
            );
            report.offsets = Some(summary);
        }
        Err(e) => report
            .problems
            .push(format!("cannot read partition offsets: {}", Chain(&e))),
    }
}

/// Consumer group lag: reported, not judged (a lagging group may be by design); a group
/// listing that fails is a problem.
pub(super) async fn check_groups(p: &Parts<'_>, report: &mut ClusterReport) {
    if !p.config.checks.consumer_groups.enabled {
        return;
    }
    let mut groups = GroupsProbe::new(GroupsParts {
        cluster: p.cluster.clone(),
        labels: p.labels.clone(),
        admin: p.admin.clone(),
        view: p.view.clone(),
        check: p.config.checks.consumer_groups,
        timing: ClientTiming::of(p.config),
        instruments: p.instruments.clone(),
    });
    match groups.probe_once().await {
        Ok(found) => report.consumer_groups = Some(groups_summary(&found)),
        Err(e) => report
            .problems
            .push(format!("cannot read consumer groups: {}", Chain(&e))),
    }
}

/// The Schema Registry, when the cluster has one: unreachable is a problem.
pub(super) async fn check_registry(p: &Parts<'_>, report: &mut ClusterReport) {
    let Some(registry) = &p.cluster.schema_registry else {
        return;
    };
    let probe = RegistryProbe::new(RegistryParts {
        cluster: p.labels.clone(),
        registry: registry.clone(),
        view: p.view.clone(),
        check: p.config.checks.schema_registry,
        instruments: p.instruments.clone(),
    });
    let mut probe = match probe {
        Ok(probe) => probe,
        Err(e) => {
            report.problems.push(format!(
                "cannot set up TLS for the Schema Registry probe: {}",
                Chain(&e)
            ));
            return;
        }
    };
    let outcome = probe
        .probe_once()
        .await
        .unwrap_or_else(|never| match never {});
    if let Some(f) = &outcome.failure {
        report.problems.push(format!(
            "Schema Registry {} unreachable at {}: {}",
            outcome.target.address(),
            f.stage.as_str(),
            f.kind()
        ));
    }
    report.schema_registry = Some(outcome);
}

fn offsets_summary(found: &OffsetsReport) -> OffsetsSummary {
    let mut summary = OffsetsSummary {
        topics: found.topics.len(),
        dropped_topics: found.dropped_topics,
        ..OffsetsSummary::default()
    };
    for (name, topic) in &found.topics {
        for (id, p) in &topic.partitions {
            summary.partitions += 1;
            if p.leader.is_none() {
                summary.leaderless.push(format!("{name}/{id}"));
            } else if p.under_replicated() {
                summary
                    .under_replicated
                    .push(format!("{name}/{id}: {} of {}", p.in_sync, p.replicas));
            }
        }
    }
    summary
}

fn groups_summary(found: &GroupsReport) -> GroupsSummary {
    GroupsSummary {
        groups: found.groups.clone(),
        unreadable: found.unreadable.clone(),
        dropped_groups: found.dropped_groups,
        unsupported: found.unsupported,
    }
}
