//! Events of the metadata watch: a fresh view (its changes, one line each, the heartbeat
//! partitions' coverage of the brokers, the cluster gauges), and racks learned.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use tracing::{debug, info, warn};

use crate::kafka::metadata::ClusterView;
use crate::telemetry::instruments::{ClusterLabels, ClusterLevel, attr};
use crate::telemetry::{ClusterAttributes, Instruments};

/// A metadata view was fetched. Logs what changed since the previous one (the brokers found,
/// on the first), warns when heartbeat partitions leave brokers uncovered, and sets the
/// cluster gauges.
pub struct ClusterViewed<'a> {
    pub cluster: &'a ClusterLabels,
    pub topic: &'a str,
    pub previous: &'a ClusterView,
    pub view: &'a ClusterView,
}

impl ClusterViewed<'_> {
    pub fn emit(self, instruments: &Instruments) {
        let (previous, view) = (self.previous, self.view);
        if previous.fetched {
            for change in describe_changes(previous, view) {
                info!(name: "metadata.cluster_viewed", "Metadata changed: {change}.");
            }
            log_controller_change(previous, view);
        } else {
            log_brokers(view);
        }
        let (was, now) = (previous.uncovered_brokers(), view.uncovered_brokers());
        let had_partitions = !previous.partitions().is_empty();
        if !view.partitions().is_empty() && (now != was || !had_partitions) {
            if now.is_empty() {
                if had_partitions && !was.is_empty() {
                    info!(name: "metadata.cluster_viewed", "Every broker leads a heartbeat partition again.");
                }
            } else {
                warn!(
                    name: "metadata.cluster_viewed",
                    topic = %self.topic,
                    partitions = view.partitions().len(),
                    brokers = view.brokers.len(),
                    uncovered = ?now,
                    "Heartbeat partitions do not cover every broker: brokers {now:?} lead none, so heartbeats do not exercise their produce path. Add partitions to the topic (one per broker at least).",
                );
            }
        }
        let attrs = ClusterAttributes::new(&view.cluster_id, self.cluster);
        // 1 on the broker the cluster names as controller, 0 on the others.
        let controller = view
            .brokers
            .iter()
            .map(|b| {
                let mut a = attrs.with([KeyValue::new(attr::BROKER_ID, b.id.to_string())]);
                if let Some(rack) = &b.rack {
                    a.push(KeyValue::new(attr::BROKER_RACK, rack.clone()));
                }
                a.push(KeyValue::new(attr::SERVER_ADDRESS, b.host.clone()));
                a.push(KeyValue::new(attr::SERVER_PORT, i64::from(b.port)));
                (a, i64::from(view.controller == Some(b.id)))
            })
            .collect();
        instruments.set_cluster(
            self.cluster.name(),
            ClusterLevel {
                attrs: attrs.base().to_vec(),
                brokers: view.brokers.len() as i64,
                controller,
                // 0 while the topic is missing: a value, not a gap.
                leader_brokers: view.fetched.then(|| view.leader_brokers().len() as i64),
                heartbeat_attrs: attrs.clone().for_heartbeat(self.topic).base().to_vec(),
            },
        );
    }
}

/// A new controller is news when the old one left the metadata (a failover). Otherwise it is
/// logged at DEBUG: on KRaft clusters (Confluent Cloud among them) the metadata names any live
/// broker as controller, and it changes from one answer to the next.
fn log_controller_change(old: &ClusterView, new: &ClusterView) {
    if old.controller.is_none() || old.controller == new.controller {
        return;
    }
    let name = |c: Option<i32>| c.map_or_else(|| "none".to_owned(), |c| c.to_string());
    let (from, to) = (name(old.controller), name(new.controller));
    let old_gone = old.controller.is_some_and(|id| new.broker(id).is_none());
    if old_gone {
        info!(name: "metadata.cluster_viewed", "Metadata changed: controller {from} -> {to} (broker {from} left).");
    } else {
        debug!(
            name: "metadata.cluster_viewed",
            "Metadata changed: controller {from} -> {to} (on KRaft clusters any live broker is reported as controller)."
        );
    }
}

/// DescribeCluster reported racks for the first time.
pub struct RacksLearned<'a> {
    pub racks: &'a BTreeMap<i32, String>,
}

impl RacksLearned<'_> {
    pub fn emit(self) {
        info!(name: "metadata.racks_learned", racks = ?self.racks, "Broker racks learned.");
    }
}

/// The heartbeat topic is missing from the metadata. Logged when it goes missing, and then as
/// a reminder every few minutes while it stays missing.
pub struct TopicMissing<'a> {
    pub topic: &'a str,
    /// How long it has been missing; `None` when it has just gone.
    pub missing_for: Option<Duration>,
    /// The agent will create it again.
    pub create: bool,
}

impl TopicMissing<'_> {
    pub fn emit(self) {
        let what = if self.create {
            "it is created again"
        } else {
            "heartbeat.create_topic is false, so create it"
        };
        match self.missing_for {
            None => warn!(
                name: "metadata.topic_missing",
                topic = %self.topic,
                "The heartbeat topic is missing; heartbeats stop until it is back ({what})."
            ),
            Some(d) => warn!(
                name: "metadata.topic_missing",
                topic = %self.topic,
                missing_for = %super::seconds(d),
                "The heartbeat topic is still missing ({what})."
            ),
        }
    }
}

/// The heartbeat topic is in the metadata again.
pub struct TopicBack<'a> {
    pub topic: &'a str,
    pub missing_for: Duration,
}

impl TopicBack<'_> {
    pub fn emit(self) {
        info!(
            name: "metadata.topic_back",
            topic = %self.topic,
            missing_for = %super::seconds(self.missing_for),
            "The heartbeat topic is back."
        );
    }
}

/// The start-up lines about the cluster, in the spirit of the original app.
fn log_brokers(view: &ClusterView) {
    let controller = view
        .controller
        .map_or_else(|| "unknown".to_owned(), |c| c.to_string());
    info!(
        name: "metadata.topic_back",
        cluster_id = %view.cluster_id,
        "{} brokers in {}, controller is {controller}.",
        view.brokers.len(),
        view.cluster_id
    );
    for b in &view.brokers {
        info!(
            name: "metadata.topic_back",
            "  broker {}: {} rack {}",
            b.id,
            b.address(),
            b.rack.as_deref().unwrap_or("-")
        );
    }
}

/// One line per change between two views.
pub fn describe_changes(old: &ClusterView, new: &ClusterView) -> Vec<String> {
    let mut changes = Vec::new();
    if old.cluster_id != new.cluster_id {
        changes.push(format!(
            "cluster id {} -> {}",
            old.cluster_id, new.cluster_id
        ));
    }
    for b in &new.brokers {
        match old.broker(b.id) {
            None => changes.push(format!("broker {} added at {}", b.id, b.address())),
            Some(o) if o.address() != b.address() => {
                changes.push(format!(
                    "broker {} moved from {} to {}",
                    b.id,
                    o.address(),
                    b.address()
                ));
            }
            // Racks first learned (None -> Some) are not a change of the cluster.
            Some(o) if o.rack.is_some() && o.rack != b.rack => changes.push(format!(
                "broker {} rack {} -> {}",
                b.id,
                o.rack.as_deref().unwrap_or("none"),
                b.rack.as_deref().unwrap_or("none")
            )),
            Some(_) => {}
        }
    }
    for o in &old.brokers {
        if new.broker(o.id).is_none() {
            changes.push(format!("broker {} at {} removed", o.id, o.address()));
        }
    }
    for p in new.partitions() {
        match old.partitions().iter().find(|q| q.id == p.id) {
            None => changes.push(format!(
                "heartbeat partition {} added, leader {}",
                p.id, p.leader
            )),
            Some(q) if q.leader != p.leader => {
                changes.push(format!(
                    "heartbeat partition {} leader {} -> {}",
                    p.id, q.leader, p.leader
                ));
            }
            Some(_) => {}
        }
    }
    changes
}

/// DescribeCluster or DescribeTopics failed (a cluster that does not answer it, a key that
/// may not use it): what it adds (racks, the topic's id) stays as it was.
pub struct DescribeFailed<'a> {
    /// `DescribeCluster` or `DescribeTopics`.
    pub request: &'static str,
    /// What stays as it was.
    pub keeps: &'static str,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl DescribeFailed<'_> {
    pub fn emit(self) {
        tracing::debug!(
            name: "metadata.describe_failed",
            error = %crate::error::Chain(self.error),
            "{} failed; {} stay as they are.",
            self.request,
            self.keeps
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::metadata::{Broker, PartitionInfo, TopicState};

    fn view(brokers: &[(i32, u16)], leaders: &[i32]) -> ClusterView {
        ClusterView {
            fetched: true,
            controller: None,
            cluster_id: "c1".into(),
            brokers: brokers
                .iter()
                .map(|(id, port)| Broker {
                    id: *id,
                    host: "h".into(),
                    port: *port,
                    rack: None,
                })
                .collect(),
            topic: TopicState::Present(
                leaders
                    .iter()
                    .enumerate()
                    .map(|(i, l)| PartitionInfo {
                        id: i as i32,
                        leader: *l,
                        replicas: vec![],
                        isr: vec![],
                    })
                    .collect(),
            ),
            topic_id: None,
            refresh: 1,
            topic_incarnation: 0,
        }
    }

    #[test]
    fn each_change_is_one_line() {
        let old = view(&[(1, 9091), (2, 9092)], &[1, 2]);
        let new = view(&[(1, 9191), (3, 9093)], &[1, 3, 1]);
        assert_eq!(
            describe_changes(&old, &new),
            [
                "broker 1 moved from h:9091 to h:9191",
                "broker 3 added at h:9093",
                "broker 2 at h:9092 removed",
                "heartbeat partition 1 leader 2 -> 3",
                "heartbeat partition 2 added, leader 1",
            ]
        );
        assert!(describe_changes(&new, &new).is_empty());
    }
}
