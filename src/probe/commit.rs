//! The commit probe: the path a consumer application's offset commits take. Each round, in
//! the agent's own group (never the heartbeat reader's): find the group's coordinator
//! (DescribeConsumerGroups, which names it), commit the heartbeat reader's position on the
//! heartbeat topic's first partition (OffsetCommit), and read it back (OffsetFetch). Each
//! step's round trip is `kafka.commit.duration`, with the coordinator's id and rack; a
//! coordinator that moved is counted and logged.
//!
//! The group never has members: the agent commits as a client that does not join (an
//! `Empty` group), so no rebalance ever involves it and every agent has its own group.

use std::sync::Arc;
use std::time::Instant;

use opentelemetry::KeyValue;
use rdkafka::error::RDKafkaErrorCode;
use tokio::sync::watch;

use super::heartbeat::ReadPositions;
use super::{Probe, Schedule};
use crate::config::{CommitProbeMode, ConnectivityConfig};
use crate::error::{Classified, ErrorKind};
use crate::events::commit::{
    CommitDescribeUnsupported, CommitProbeOff, CommitStep, CommitStepTimed, CoordinatorFound,
    CoordinatorLabels, CoordinatorMoved,
};
use crate::kafka::admin::Admin;
use crate::kafka::metadata::ClusterView;
use crate::kafka::native::AdminError;
use crate::kafka::native::coordinator::GroupCoordinator;
use crate::telemetry::instruments::ClusterLabels;
use crate::telemetry::{ClusterAttributes, Instruments};

/// Why a round of the commit path failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("cannot find the coordinator of group {group}")]
    FindCoordinator {
        group: String,
        #[source]
        source: AdminError,
    },
    #[error("cannot commit an offset in group {group}")]
    Commit {
        group: String,
        #[source]
        source: AdminError,
    },
    #[error("cannot read back the offset committed in group {group}")]
    Fetch {
        group: String,
        #[source]
        source: AdminError,
    },
    #[error("group {group} read back offset {read:?} after committing {committed}")]
    Mismatch {
        group: String,
        committed: i64,
        read: Option<i64>,
        #[source]
        source: Classified,
    },
}

/// What the commit probe needs from its cluster.
pub struct CommitParts {
    pub labels: ClusterLabels,
    pub admin: Admin,
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub topic: String,
    pub group: String,
    pub mode: CommitProbeMode,
    pub check: ConnectivityConfig,
    pub positions: ReadPositions,
    pub instruments: Instruments,
}

pub struct CommitProbe {
    parts: CommitParts,
    /// The coordinator of the previous round.
    coordinator: Option<i32>,
    /// Turned off: `auto`, and the group may not be used or the cluster cannot describe it.
    off: bool,
    /// The cluster does not answer DescribeConsumerGroups (some Kafka-compatible servers,
    /// librdkafka's mock) and the probe is on (`true`): the coordinator is not known, the
    /// commit and fetch still run. (`auto` turns the probe off.)
    no_describe: bool,
}

/// What one round found (for `check`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CommitReport {
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// Each step's round trip in milliseconds, in order.
    pub steps: Vec<(String, f64)>,
    /// The probe is off (`auto`): the group may not be used, or the cluster does not describe
    /// groups.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub off: bool,
}

impl CommitProbe {
    pub fn new(parts: CommitParts) -> Self {
        Self {
            parts,
            coordinator: None,
            off: false,
            no_describe: false,
        }
    }

    fn base(&self, view: &ClusterView) -> Vec<KeyValue> {
        ClusterAttributes::new(&view.cluster_id, &self.parts.labels)
            .base()
            .to_vec()
    }

    /// Times `step`, records it, and hands its result back.
    async fn timed<T>(
        &self,
        step: CommitStep,
        base: &[KeyValue],
        coordinator: &CoordinatorLabels,
        report: &mut CommitReport,
        request: impl Future<Output = Result<T, AdminError>>,
    ) -> Result<T, AdminError> {
        let started = Instant::now();
        let result = request.await;
        let took = started.elapsed();
        // A request the cluster does not serve, or (`auto`) may not be used, is not a
        // measurement of the path: the probe stops or goes on without it.
        let not_measured = result.as_ref().err().is_some_and(|e| {
            unsupported(e)
                || unknown_topic(e)
                || (self.parts.mode == CommitProbeMode::Auto && refused(e))
        });
        if not_measured {
            return result;
        }
        CommitStepTimed {
            base,
            step,
            took,
            coordinator,
            error: result
                .as_ref()
                .err()
                .map(|e| e as &(dyn std::error::Error + 'static)),
        }
        .emit(&self.parts.instruments);
        report
            .steps
            .push((step.as_str().to_owned(), took.as_secs_f64() * 1000.0));
        result
    }

    /// Whether the probe stops for `error`: `auto`, and this principal may not use the group
    /// (or commit on the heartbeat topic). Said once.
    fn stops_for(&mut self, error: &AdminError, group: &str) -> bool {
        if self.parts.mode != CommitProbeMode::Auto || !refused(error) {
            return false;
        }
        CommitProbeOff { group, error }.emit();
        self.off = true;
        true
    }

    /// Notes the coordinator `found` (logging and counting a move), and returns its id and
    /// rack: the rack from its answer, else from the metadata.
    fn found(
        &mut self,
        found: GroupCoordinator,
        base: &[KeyValue],
        group: &str,
        view: &ClusterView,
    ) -> CoordinatorLabels {
        match self.coordinator.replace(found.id) {
            Some(from) if from != found.id => CoordinatorMoved {
                base,
                group,
                from,
                to: &found,
            }
            .emit(&self.parts.instruments),
            Some(_) => {}
            None => CoordinatorFound {
                base,
                group,
                coordinator: &found,
            }
            .emit(&self.parts.instruments),
        }
        CoordinatorLabels {
            id: Some(found.id),
            rack: found
                .rack
                .or_else(|| view.broker(found.id).and_then(|b| b.rack.clone())),
        }
    }
}

/// Whether `error` says the partition committed on does not exist.
fn unknown_topic(error: &AdminError) -> bool {
    matches!(
        error,
        AdminError::Failed {
            code: RDKafkaErrorCode::UnknownTopicOrPartition,
            ..
        }
    )
}

/// Whether `error` says the cluster does not answer the request at all.
fn unsupported(error: &AdminError) -> bool {
    matches!(
        error,
        AdminError::Failed {
            code: RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion,
            ..
        }
    )
}

/// Whether `error` says this principal may not use the group.
fn refused(error: &AdminError) -> bool {
    matches!(
        error,
        AdminError::Failed {
            code: RDKafkaErrorCode::GroupAuthorizationFailed,
            ..
        }
    ) || ErrorKind::of(error) == ErrorKind::Authorization
}

impl Probe for CommitProbe {
    const KIND: &'static str = "commit";
    type Output = CommitReport;
    type Error = CommitError;

    fn schedule(&self) -> Schedule {
        // Three requests, each bounded by the timeout.
        Schedule::every(self.parts.check.interval, 3 * self.parts.check.timeout)
    }

    fn describe(&self) -> String {
        format!(
            "Commit probe started: find the coordinator of group {}, commit the heartbeat reader's position and read it back.",
            self.parts.group
        )
    }

    /// Cancel-safe: each step records itself when it ends; a cut round leaves the previous
    /// coordinator in place, and the next round compares with it.
    async fn probe_once(&mut self) -> Result<CommitReport, CommitError> {
        let group = self.parts.group.clone();
        let mut report = CommitReport {
            group: group.clone(),
            off: self.off,
            ..CommitReport::default()
        };
        if self.off {
            return Ok(report);
        }
        let view = Arc::clone(&self.parts.view.borrow());
        let base = self.base(&view);
        let timeout = self.parts.check.timeout;
        let previous = CoordinatorLabels {
            id: self.coordinator,
            rack: self
                .coordinator
                .and_then(|id| view.broker(id).and_then(|b| b.rack.clone())),
        };
        // The first step that failed; every step runs and is measured.
        let mut failed = None;
        let described = if self.no_describe {
            None
        } else {
            Some(
                self.timed(
                    CommitStep::FindCoordinator,
                    &base,
                    &previous,
                    &mut report,
                    self.parts.admin.describe_group(group.clone(), timeout),
                )
                .await,
            )
        };
        let coordinator = match described {
            None => CoordinatorLabels::default(),
            Some(Err(source)) if unsupported(&source) => {
                let stop = self.parts.mode == CommitProbeMode::Auto;
                CommitDescribeUnsupported {
                    group: &group,
                    error: &source,
                    stop,
                }
                .emit();
                if stop {
                    self.off = true;
                    report.off = true;
                    return Ok(report);
                }
                self.no_describe = true;
                CoordinatorLabels::default()
            }
            Some(Ok(found)) => self.found(found, &base, &group, &view),
            Some(Err(source)) => {
                if self.stops_for(&source, &group) {
                    report.off = true;
                    return Ok(report);
                }
                // The commit and its read-back still run (to the coordinator librdkafka
                // finds): they are the path a consumer's commits take meanwhile.
                failed = Some(CommitError::FindCoordinator {
                    group: group.clone(),
                    source,
                });
                previous
            }
        };
        report.coordinator = coordinator.id;
        report.rack.clone_from(&coordinator.rack);

        let partition = view.partitions().first().map_or(0, |p| p.id);
        let offset = self.parts.positions.next(partition).unwrap_or(0);
        let topic = self.parts.topic.clone();
        let committed = self
            .timed(
                CommitStep::Commit,
                &base,
                &coordinator,
                &mut report,
                self.parts.admin.commit_offset(
                    group.clone(),
                    topic.clone(),
                    partition,
                    offset,
                    timeout,
                ),
            )
            .await;
        let committed = match committed {
            Ok(()) => true,
            // The heartbeat topic is not there (yet, or any more): nothing to commit on, and
            // nothing wrong with the commit path; the topic probe reports the topic.
            Err(source) if unknown_topic(&source) => false,
            Err(source) if self.stops_for(&source, &group) => {
                report.off = true;
                return Ok(report);
            }
            Err(source) => {
                failed.get_or_insert(CommitError::Commit {
                    group: group.clone(),
                    source,
                });
                false
            }
        };
        let read = self
            .timed(
                CommitStep::Fetch,
                &base,
                &coordinator,
                &mut report,
                self.parts.admin.committed(group.clone(), timeout),
            )
            .await;
        match read {
            Err(source) if self.stops_for(&source, &group) => {
                report.off = true;
                return Ok(report);
            }
            Err(source) => {
                failed.get_or_insert(CommitError::Fetch {
                    group: group.clone(),
                    source,
                });
            }
            Ok(read) if committed => {
                let read = read
                    .iter()
                    .find(|c| c.topic == topic && c.partition == partition)
                    .map(|c| c.offset);
                if read != Some(offset) {
                    failed.get_or_insert(CommitError::Mismatch {
                        group: group.clone(),
                        committed: offset,
                        read,
                        source: Classified::new(
                            ErrorKind::Protocol,
                            "the coordinator did not keep the commit",
                        ),
                    });
                }
            }
            Ok(_) => {}
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }
}

/// The group of the commit probe: the configured one, else the agent's own.
pub fn group_of(configured: Option<&str>, instance_id: &str) -> String {
    configured.map_or_else(
        || format!("{}{instance_id}", crate::config::COMMIT_GROUP_PREFIX),
        str::to_owned,
    )
}
