//! What `check` makes of one round of the checks beyond brokers, topic and heartbeat:
//! partition offsets and replication, consumer group lag, and the Schema Registry.

use super::report::{ClusterReport, GroupsSummary, OffsetsSummary};
use crate::error::Chain;
use crate::kafka::reach::Outcome;
use crate::probe::RoundError;
use crate::probe::groups::{GroupsError, GroupsReport};
use crate::probe::offsets::{OffsetsError, OffsetsReport};

/// Partition offsets and replication: under-replicated and leaderless partitions are problems.
pub(super) fn check_offsets(
    round: Result<OffsetsReport, RoundError<OffsetsError>>,
    report: &mut ClusterReport,
) {
    match round {
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
pub(super) fn check_groups(
    round: Result<GroupsReport, RoundError<GroupsError>>,
    report: &mut ClusterReport,
) {
    match round {
        Ok(found) => report.consumer_groups = Some(groups_summary(&found)),
        Err(e) => report
            .problems
            .push(format!("cannot read consumer groups: {}", Chain(&e))),
    }
}

/// The Schema Registry, when the cluster has one: unreachable is a problem.
pub(super) fn check_registry(
    round: Result<Outcome, RoundError<std::convert::Infallible>>,
    report: &mut ClusterReport,
) {
    let outcome = match round {
        Ok(outcome) => outcome,
        Err(e) => {
            report.problems.push(format!(
                "the Schema Registry probe gave no result: {}",
                Chain(&e)
            ));
            return;
        }
    };
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
