//! The metadata watch: refreshes the cluster view every interval, publishes it to the other
//! probes, and logs every change once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::kafka::admin::Admin;
use crate::kafka::metadata::ClusterView;

/// Bound on one metadata request, so a black-holed broker cannot stall the watch.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

pub struct MetadataWatch {
    pub cluster: String,
    pub topic: String,
    pub admin: Admin,
    pub interval: Duration,
    pub view: watch::Sender<Arc<ClusterView>>,
}

impl MetadataWatch {
    pub async fn run(self, cancel: CancellationToken) {
        info!(
            cluster = %self.cluster,
            interval = %humantime::format_duration(self.interval),
            "Metadata probe started.",
        );
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first view was fetched at start-up
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
                    let previous = Arc::clone(&self.view.borrow());
                    for change in describe_changes(&previous, &view) {
                        info!(cluster = %self.cluster, "Metadata changed: {change}.");
                    }
                    if *previous != view {
                        self.view.send_replace(Arc::new(view));
                    }
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
            Some(o) if o.rack != b.rack => changes.push(format!(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::metadata::{BrokerInfo, PartitionInfo, TopicState};

    fn view(brokers: &[(i32, u16)], leaders: &[i32]) -> ClusterView {
        ClusterView {
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
