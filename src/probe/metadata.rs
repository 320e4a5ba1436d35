//! The metadata watch: fetches the cluster view (first with backoff, then every interval),
//! publishes it to the other probes, keeps the cluster gauges, and logs every change once:
//! brokers, racks, controller, heartbeat leaders, and brokers no heartbeat partition covers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::kafka::admin::Admin;
use crate::kafka::metadata::ClusterView;
use crate::telemetry::{ClusterAttributes, Instruments};

/// Bound on one metadata request, so a black-holed broker cannot stall the watch.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a DescribeCluster request (racks).
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// After DescribeCluster fails, skip it for this many refreshes.
const DESCRIBE_BACKOFF: u32 = 10;
/// Longest wait between attempts to reach a cluster at start-up.
const MAX_STARTUP_BACKOFF: Duration = Duration::from_secs(30);

pub struct MetadataWatch {
    pub cluster: String,
    pub topic: String,
    pub admin: Admin,
    pub interval: Duration,
    pub view: watch::Sender<Arc<ClusterView>>,
    pub instruments: Instruments,
}

impl MetadataWatch {
    pub async fn run(self, cancel: CancellationToken) {
        let Some(first) = self.first_view(&cancel).await else {
            return;
        };
        info!(
            cluster = %self.cluster,
            interval = %humantime::format_duration(self.interval),
            "Metadata probe started.",
        );
        let mut describe_skip = 0u32;
        log_brokers(&self.cluster, &first);
        self.publish(first);
        self.add_racks(&mut describe_skip).await;
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut failing = false;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            match self.admin.metadata(&self.topic, METADATA_TIMEOUT).await {
                Ok(view) => {
                    if failing {
                        info!(cluster = %self.cluster, "Metadata requests succeed again.");
                        failing = false;
                    }
                    // Racks known so far carry over; DescribeCluster may refine them after.
                    let racks = self.view.borrow().racks();
                    self.publish(view.with_racks(&racks));
                    self.add_racks(&mut describe_skip).await;
                }
                Err(error) if !failing => {
                    warn!(cluster = %self.cluster, %error, "Metadata request failed; the last view stays in use.");
                    failing = true;
                }
                Err(error) => {
                    debug!(cluster = %self.cluster, %error, "Metadata request failed again.")
                }
            }
        }
    }

    /// Fetches metadata until it succeeds (backing off) or `cancel` fires.
    async fn first_view(&self, cancel: &CancellationToken) -> Option<ClusterView> {
        let mut backoff = Duration::from_secs(1);
        let mut attempts = 0u32;
        loop {
            match self.admin.metadata(&self.topic, METADATA_TIMEOUT).await {
                Ok(view) => {
                    if attempts > 0 {
                        info!(cluster = %self.cluster, attempts = attempts + 1, "Cluster reached.");
                    }
                    return Some(view);
                }
                Err(error) => {
                    attempts += 1;
                    if attempts == 1 || attempts.is_power_of_two() {
                        warn!(
                            cluster = %self.cluster,
                            %error,
                            attempts,
                            retry_in = %humantime::format_duration(backoff),
                            "Cannot fetch cluster metadata yet; retrying.",
                        );
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_STARTUP_BACKOFF);
        }
    }

    /// Adds racks from DescribeCluster to the published view, skipping the request for a
    /// while after it fails (not every cluster answers it: librdkafka's mock does not).
    async fn add_racks(&self, skip: &mut u32) {
        if *skip > 0 {
            *skip -= 1;
            return;
        }
        match self.admin.describe(DESCRIBE_TIMEOUT).await {
            Ok(description) => {
                let racks = description.racks();
                let view = (**self.view.borrow()).clone();
                if view.racks().is_empty() && !racks.is_empty() {
                    info!(cluster = %self.cluster, racks = ?racks, "Broker racks learned.");
                }
                let controller = view.controller.or(description.controller);
                self.publish(ClusterView {
                    controller,
                    ..view.with_racks(&racks)
                });
            }
            Err(error) => {
                debug!(cluster = %self.cluster, %error, "DescribeCluster failed; broker racks stay as they are.");
                *skip = DESCRIBE_BACKOFF;
            }
        }
    }

    /// Logs what changed, updates the gauges, and publishes the view when it differs.
    fn publish(&self, view: ClusterView) {
        let previous = Arc::clone(&self.view.borrow());
        if previous.fetched {
            for change in describe_changes(&previous, &view) {
                info!(cluster = %self.cluster, "Metadata changed: {change}.");
            }
        }
        let (was, now) = (previous.uncovered_brokers(), view.uncovered_brokers());
        let had_partitions = !previous.partitions().is_empty();
        if !view.partitions().is_empty() && (now != was || !had_partitions) {
            if now.is_empty() {
                if !was.is_empty() {
                    info!(cluster = %self.cluster, "Every broker leads a heartbeat partition again.");
                }
            } else {
                warn!(
                    cluster = %self.cluster,
                    topic = %self.topic,
                    partitions = view.partitions().len(),
                    brokers = view.brokers.len(),
                    uncovered = ?now,
                    "Heartbeat partitions do not cover every broker: brokers {now:?} lead none, so heartbeats do not exercise their produce path. Add partitions to the topic (one per broker at least).",
                );
            }
        }
        record_gauges(&self.instruments, &self.cluster, &view);
        if *previous != view {
            self.view.send_replace(Arc::new(view));
        }
    }
}

/// Sets the cluster gauges from a view; every published view goes through here.
pub fn record_gauges(instruments: &Instruments, cluster: &str, view: &ClusterView) {
    let attrs = ClusterAttributes::new(&view.cluster_id, cluster);
    instruments.gauges.update(cluster, |g| {
        g.attrs = attrs.base().to_vec();
        g.brokers = Some(view.brokers.len() as i64);
        g.controller = view.controller;
        g.leader_brokers =
            (!view.partitions().is_empty()).then(|| view.leader_brokers().len() as i64);
    });
}

/// The start-up lines about the cluster, in the spirit of the original app.
fn log_brokers(name: &str, view: &ClusterView) {
    let controller = view
        .controller
        .map_or_else(|| "unknown".to_owned(), |c| c.to_string());
    info!(cluster = %name, cluster_id = %view.cluster_id, "{} brokers in {}, controller is {controller}.", view.brokers.len(), view.cluster_id);
    for b in &view.brokers {
        info!(cluster = %name, "  broker {}: {} rack {}", b.id, b.address(), b.rack.as_deref().unwrap_or("-"));
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
    if old.controller.is_some() && old.controller != new.controller {
        let name = |c: Option<i32>| c.map_or_else(|| "none".to_owned(), |c| c.to_string());
        changes.push(format!(
            "controller {} -> {}",
            name(old.controller),
            name(new.controller)
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::metadata::{BrokerInfo, PartitionInfo, TopicState};

    fn view(brokers: &[(i32, u16)], leaders: &[i32]) -> ClusterView {
        ClusterView {
            fetched: true,
            controller: None,
            cluster_id: "c1".into(),
            brokers: brokers
                .iter()
                .map(|(id, port)| BrokerInfo {
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
