//! The consumer group probe: every interval, the watched groups (`consumer_groups.include`
//! and `exclude`) with their members, committed offsets and lag: high watermark minus
//! committed offset, and in seconds, the age of the oldest record not yet consumed (the time
//! stamp of the record at the committed offset). Reported under the kafkametricsreceiver's
//! names; at most `max_series` series, the rest dropped, logged and counted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::error::RDKafkaErrorCode;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::cap::{Capped, cap, room};
use super::{Probe, Schedule};
use crate::config::{ClusterConfig, LagGranularity, SeriesCheckConfig};
use crate::events::cap::{CappedCheck, SeriesCapped};
use crate::events::groups::{GroupState, GroupsRead, GroupsUnsupported, PartitionLag};
use crate::kafka::ClientTiming;
use crate::kafka::admin::{Admin, LogEnds};
use crate::kafka::metadata::ClusterView;
use crate::kafka::native::AdminError;
use crate::kafka::native::groups::{CommittedOffset, GroupSummary};
use crate::kafka::record_time::{At, RecordReader};
use crate::telemetry::instruments::ClusterLabels;
use crate::telemetry::{ClusterAttributes, Instruments};

/// Bound on each request of a round.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on reading the records lag in seconds is measured from.
const RECORD_WAIT: Duration = Duration::from_secs(5);
/// Committed offsets of this many groups are asked for at once.
const GROUPS_AT_ONCE: usize = 8;
/// Series per group (members, and its state among the five always reported; a group in a
/// sixth state has one more), per group and topic (lag and offsets summed), per group
/// partition (lag, offset, lag in seconds).
const SERIES_PER_GROUP: usize = 1 + crate::events::groups::STATE_SERIES;
const SERIES_PER_TOPIC: usize = 2;
const SERIES_PER_PARTITION: usize = 3;

/// Groups of cc-heartbeat's own clients (they never join or commit, but are never reported).
const OWN_GROUP_PREFIX: &str = "cc-heartbeat-";

/// Why a round could not read the groups.
#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    #[error("cannot list the consumer groups")]
    List(#[source] AdminError),
    #[error("cannot read the partitions' offsets")]
    Offsets(#[source] AdminError),
}

/// What the consumer group probe needs from its cluster.
pub struct GroupsParts {
    pub cluster: ClusterConfig,
    pub labels: ClusterLabels,
    pub admin: Admin,
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub check: SeriesCheckConfig,
    pub timing: ClientTiming,
    pub instruments: Instruments,
}

pub struct GroupsProbe {
    parts: GroupsParts,
    last: Option<BTreeMap<String, GroupState>>,
    dropped: usize,
    /// The cluster said it does not answer ListGroups (logged once).
    unsupported: bool,
    /// Reads the records lag in seconds is measured from; made when first needed, then kept.
    reader: Option<RecordReader>,
}

/// What one round found.
#[derive(Clone, Debug, Default)]
pub struct GroupsReport {
    pub groups: BTreeMap<String, GroupState>,
    /// Groups whose committed offsets could not be read, with why.
    pub unreadable: BTreeMap<String, String>,
    pub dropped_groups: usize,
    pub dropped_series: usize,
    /// Some broker did not answer the group listing.
    pub partial: bool,
    /// The cluster does not answer ListGroups at all (librdkafka's mock cluster, some
    /// Kafka-compatible servers): there is no lag to report.
    pub unsupported: bool,
}

impl GroupsProbe {
    pub fn new(parts: GroupsParts) -> Self {
        Self {
            parts,
            last: None,
            dropped: 0,
            unsupported: false,
            reader: None,
        }
    }

    /// Committed offsets of the watched groups (in name order), a few groups at a time,
    /// until the series cap is full: the first group that does not fit, and every group
    /// after it, is left out, and those not read yet are not asked for (each counts one
    /// series left out: a lower bound). Also the groups whose offsets could not be read.
    async fn committed(&self, groups: &[GroupSummary]) -> Committed {
        let mut out = Committed::default();
        let mut used = 0;
        for chunk in groups.chunks(GROUPS_AT_ONCE) {
            if out.capped.left_out > 0 {
                out.capped.left_out += chunk.len();
                out.capped.series += SERIES_PER_GROUP * chunk.len();
                continue;
            }
            let mut requests = JoinSet::new();
            for group in chunk {
                let (admin, name) = (self.parts.admin.clone(), group.name.clone());
                requests.spawn(async move {
                    let result = admin.committed(name.clone(), REQUEST_TIMEOUT).await;
                    (name, result)
                });
            }
            let mut read = Vec::new();
            for (name, result) in requests.join_all().await {
                match result {
                    Ok(offsets) => read.push((name, offsets)),
                    Err(e) => {
                        out.unreadable
                            .insert(name, crate::error::Chain(&e).to_string());
                    }
                }
            }
            read.sort_by(|a, b| a.0.cmp(&b.0));
            let granularity = self.parts.cluster.consumer_groups.granularity;
            let capped = cap(read, room(self.parts.check.max_series, used), |(_, o)| {
                series_of(o, granularity)
            });
            used += capped
                .kept
                .iter()
                .map(|(_, o)| series_of(o, granularity))
                .sum::<usize>();
            out.capped.kept.extend(capped.kept);
            out.capped.left_out += capped.left_out;
            out.capped.series += capped.series;
        }
        out
    }

    /// Lag in seconds for each lagging partition: now minus the time stamp of the first
    /// record not consumed.
    async fn lag_seconds(&mut self, wanted: Vec<At>) -> BTreeMap<(String, i32), f64> {
        if wanted.is_empty() || !self.parts.cluster.consumer_groups.lag_duration {
            return BTreeMap::new();
        }
        if self.reader.is_none() {
            // The same settings built the cluster's other clients at start: this does not fail.
            self.reader = RecordReader::new(&self.parts.cluster, self.parts.timing).ok();
        }
        let Some(reader) = self.reader.clone() else {
            return BTreeMap::new();
        };
        let times =
            tokio::task::spawn_blocking(move || reader.record_times(&wanted, RECORD_WAIT)).await;
        let Ok(Ok(times)) = times else {
            return BTreeMap::new();
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        times
            .into_iter()
            .map(|(key, ms)| (key, (now_ms - ms).max(0) as f64 / 1000.0))
            .collect()
    }
}

/// What [`GroupsProbe::committed`] read: the groups kept under the cap with their offsets,
/// what the cap left out, and the groups whose offsets could not be read.
#[derive(Default)]
struct Committed {
    capped: Capped<(String, Vec<CommittedOffset>)>,
    unreadable: BTreeMap<String, String>,
}

/// The series a group costs: its members and state, sums per topic, and per partition its
/// lag, offset and lag in seconds (or, per topic only, lag in seconds per topic).
fn series_of(offsets: &[CommittedOffset], granularity: LagGranularity) -> usize {
    let topics: BTreeSet<&str> = offsets.iter().map(|o| o.topic.as_str()).collect();
    match granularity {
        LagGranularity::Partition => {
            SERIES_PER_GROUP
                + SERIES_PER_TOPIC * topics.len()
                + SERIES_PER_PARTITION * offsets.len()
        }
        LagGranularity::Topic => SERIES_PER_GROUP + (SERIES_PER_TOPIC + 1) * topics.len(),
    }
}

impl Probe for GroupsProbe {
    const KIND: &'static str = "consumer_groups";
    type Output = GroupsReport;
    type Error = GroupsError;

    fn schedule(&self) -> Schedule {
        Schedule::every(self.parts.check.interval, 4 * REQUEST_TIMEOUT + RECORD_WAIT)
    }

    fn describe(&self) -> String {
        "Consumer group probe started: members, committed offsets and lag (in records and in seconds) of the watched groups.".to_owned()
    }

    /// Cancel-safe: nothing is recorded until every request has answered.
    async fn probe_once(&mut self) -> Result<GroupsReport, GroupsError> {
        let listed = self.parts.admin.groups(REQUEST_TIMEOUT).await;
        let (listed, partial) = match listed {
            Err(AdminError::Failed {
                code: RDKafkaErrorCode::UnsupportedFeature,
                ..
            }) => {
                if !self.unsupported {
                    GroupsUnsupported.emit();
                    self.unsupported = true;
                }
                return Ok(GroupsReport {
                    unsupported: true,
                    ..GroupsReport::default()
                });
            }
            other => other.map_err(GroupsError::List)?,
        };
        let filter = &self.parts.cluster.consumer_groups.filter;
        let mut watched: Vec<GroupSummary> = listed
            .into_iter()
            .filter(|g| !g.name.starts_with(OWN_GROUP_PREFIX) && filter.matches(&g.name))
            .collect();
        watched.sort_by(|a, b| a.name.cmp(&b.name));
        let Committed { capped, unreadable } = self.committed(&watched).await;
        let (dropped_groups, dropped_series) = (capped.left_out, capped.series);
        let committed: BTreeMap<String, Vec<CommittedOffset>> = capped.kept.into_iter().collect();

        let partitions: BTreeSet<(String, i32)> = committed
            .values()
            .flatten()
            .map(|o| (o.topic.clone(), o.partition))
            .collect();
        let partitions: Vec<(String, i32)> = partitions.into_iter().collect();
        let LogEnds { oldest, current } = self
            .parts
            .admin
            .log_ends(partitions, REQUEST_TIMEOUT)
            .await
            .map_err(GroupsError::Offsets)?;

        // The first record each group has not consumed, where it lags: at its committed
        // offset, or at the log start when retention deleted what it had not read.
        let mut wanted = BTreeSet::new();
        for offsets in committed.values() {
            for o in offsets {
                let key = (o.topic.clone(), o.partition);
                let (Some(&high), low) = (current.get(&key), oldest.get(&key).copied()) else {
                    continue;
                };
                let from = low.map_or(o.offset, |low| o.offset.max(low));
                if high > from {
                    wanted.insert((o.topic.clone(), o.partition, from));
                }
            }
        }
        let seconds = self.lag_seconds(wanted.into_iter().collect()).await;

        let described: BTreeMap<&str, &GroupSummary> =
            watched.iter().map(|g| (g.name.as_str(), g)).collect();
        let mut groups = BTreeMap::new();
        for (name, offsets) in &committed {
            let summary = described.get(name.as_str());
            let mut state = GroupState {
                members: summary.map_or(0, |g| g.members),
                state: summary.map(|g| g.state.clone()).unwrap_or_default(),
                partitions: BTreeMap::new(),
            };
            for o in offsets {
                let key = (o.topic.clone(), o.partition);
                let Some(&high) = current.get(&key) else {
                    continue;
                };
                let low = oldest.get(&key).copied();
                let expired = low.is_some_and(|low| o.offset < low);
                let from = low.map_or(o.offset, |low| o.offset.max(low));
                let lag = (high - from).max(0);
                let lag_seconds = if lag == 0 {
                    Some(0.0)
                } else {
                    seconds.get(&key).copied()
                };
                state.partitions.insert(
                    key,
                    PartitionLag {
                        committed: o.offset,
                        lag,
                        lag_seconds,
                        expired,
                    },
                );
            }
            groups.insert(name.clone(), state);
        }
        let cluster_id = self.parts.view.borrow().cluster_id.clone();
        GroupsRead {
            cluster: &self.parts.labels,
            cluster_id: &cluster_id,
            previous: self.last.as_ref(),
            groups: &groups,
            unreadable: &unreadable,
            partial,
            granularity: self.parts.cluster.consumer_groups.granularity,
        }
        .emit(&self.parts.instruments);
        SeriesCapped {
            cluster: self.parts.labels.name(),
            attrs: &ClusterAttributes::new(&cluster_id, &self.parts.labels),
            check: CappedCheck::ConsumerGroups,
            watched: watched.len(),
            left_out: dropped_groups,
            series: dropped_series,
            before: self.dropped,
            max_series: self.parts.check.max_series,
        }
        .emit(&self.parts.instruments);
        self.dropped = dropped_series;
        self.last = Some(groups.clone());
        Ok(GroupsReport {
            groups,
            unreadable,
            dropped_groups,
            dropped_series,
            partial,
            unsupported: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(topic: &str, partitions: i32) -> Vec<CommittedOffset> {
        (0..partitions)
            .map(|partition| CommittedOffset {
                topic: topic.to_owned(),
                partition,
                offset: 0,
            })
            .collect()
    }

    #[test]
    fn a_group_costs_members_and_states_two_sums_per_topic_and_three_series_per_partition() {
        // (1 + 5) + 2 + 3·2 = 14 series; a second topic adds 2 + 3.
        let partition = LagGranularity::Partition;
        assert_eq!(series_of(&offsets("t", 2), partition), 14);
        let mut two = offsets("t", 2);
        two.extend(offsets("u", 1));
        assert_eq!(series_of(&two, partition), 19);
        // Per topic: (1 + 5) + 3 per topic, whatever the partitions.
        assert_eq!(series_of(&two, LagGranularity::Topic), 12);
    }
}
