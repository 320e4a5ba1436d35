//! Events of the commit probe: each step's round trip to the group coordinator, the
//! coordinator moving, a round failing and recovering, and the probe turning itself off where
//! the group may not be used.

use std::time::Duration;

use opentelemetry::KeyValue;
use tracing::{debug, info};

use crate::error::{Chain, ErrorKind};
use crate::kafka::native::coordinator::GroupCoordinator;
use crate::telemetry::Instruments;
use crate::telemetry::instruments::{attr, failure_kvs};

/// One step of the commit path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitStep {
    /// DescribeConsumerGroups: names the coordinator (librdkafka asks FindCoordinator first
    /// when it has no coordinator cached, or the one it had stopped answering).
    FindCoordinator,
    /// OffsetCommit.
    Commit,
    /// OffsetFetch.
    Fetch,
}

impl CommitStep {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FindCoordinator => "find_coordinator",
            Self::Commit => "commit",
            Self::Fetch => "fetch",
        }
    }
}

/// The coordinator a step went to: its id and rack (known from the previous step or round).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoordinatorLabels {
    pub id: Option<i32>,
    pub rack: Option<String>,
}

/// A step's round trip, with its error when it failed: `kafka.commit.duration`.
pub struct CommitStepTimed<'a> {
    pub base: &'a [KeyValue],
    pub step: CommitStep,
    pub took: Duration,
    pub coordinator: &'a CoordinatorLabels,
    pub error: Option<&'a (dyn std::error::Error + 'static)>,
}

impl CommitStepTimed<'_> {
    pub fn emit(self, instruments: &Instruments) {
        let mut attrs = self.base.to_vec();
        attrs.push(KeyValue::new(attr::COMMIT_OPERATION, self.step.as_str()));
        if let Some(id) = self.coordinator.id {
            attrs.push(KeyValue::new(attr::COORDINATOR_ID, id.to_string()));
        }
        if let Some(rack) = &self.coordinator.rack {
            attrs.push(KeyValue::new(attr::BROKER_RACK, rack.clone()));
        }
        if let Some(error) = self.error {
            attrs.extend(failure_kvs(error));
        }
        instruments.record_commit(self.took, &attrs);
    }
}

/// The group's coordinator is another broker than in the previous round: counted, logged once
/// per move.
pub struct CoordinatorMoved<'a> {
    pub base: &'a [KeyValue],
    pub group: &'a str,
    pub from: i32,
    pub to: &'a GroupCoordinator,
}

impl CoordinatorMoved<'_> {
    pub fn emit(self, instruments: &Instruments) {
        instruments.count_coordinator_change(self.base);
        info!(
            name: "commit.coordinator_moved",
            group = self.group,
            from = self.from,
            to = self.to.id,
            rack = self.to.rack.as_deref().unwrap_or("-"),
            address = %format_args!("{}:{}", self.to.host, self.to.port),
            "The commit probe's group coordinator moved.",
        );
    }
}

/// The first coordinator a run found (logged at DEBUG: `check` and the metrics show it). The
/// moves counter starts at 0 here, so the first move is an increase a query can see.
pub struct CoordinatorFound<'a> {
    pub base: &'a [KeyValue],
    pub group: &'a str,
    pub coordinator: &'a GroupCoordinator,
}

impl CoordinatorFound<'_> {
    pub fn emit(self, instruments: &Instruments) {
        instruments.start_coordinator_changes(self.base);
        debug!(
            name: "commit.coordinator_found",
            group = self.group,
            coordinator = self.coordinator.id,
            rack = self.coordinator.rack.as_deref().unwrap_or("-"),
            state = %self.coordinator.state,
            "The commit probe's group coordinator.",
        );
    }
}

/// The group may not be used by this principal and the probe is `auto`: it stops, said once
/// (at INFO: `auto` runs it only where it is allowed).
pub struct CommitProbeOff<'a> {
    pub group: &'a str,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl CommitProbeOff<'_> {
    pub fn emit(self) {
        info!(
            name: "commit.probe_off",
            group = self.group,
            error.type = ErrorKind::of(self.error).as_str(),
            error = %Chain(self.error),
            "The commit probe stops: this principal may not use its group. Grant READ and DESCRIBE on the group (or on groups prefixed cc-heartbeat-) to measure the commit path, or set commit_probe.enabled: false.",
        );
    }
}

/// The cluster does not answer DescribeConsumerGroups: the commit probe stops (`auto`), or goes
/// on without knowing the coordinator (`true`). Said once.
pub struct CommitDescribeUnsupported<'a> {
    pub group: &'a str,
    pub error: &'a (dyn std::error::Error + 'static),
    pub stop: bool,
}

impl CommitDescribeUnsupported<'_> {
    pub fn emit(self) {
        if self.stop {
            info!(
                name: "commit.describe_unsupported",
                group = self.group,
                error = %Chain(self.error),
                "The cluster does not describe consumer groups: the commit probe stops (commit_probe.enabled: true measures the commit without the coordinator).",
            );
        } else {
            info!(
                name: "commit.describe_unsupported",
                group = self.group,
                error = %Chain(self.error),
                "The cluster does not describe consumer groups: the commit probe measures the commit and its read-back without knowing the coordinator.",
            );
        }
    }
}
