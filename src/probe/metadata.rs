//! The metadata watch: fetches the cluster view every interval (retrying sooner while it
//! fails) and publishes it to the other probes. It is the only writer of the view: others
//! ask it for a fresh one with a [`Wake`](super::Wake). Racks are carried from one view to
//! the next here, and refined from DescribeCluster where the cluster answers it.
//!
//! Every refresh also checks that the heartbeat topic is there: a missing topic is logged
//! (then reminded of every few minutes), makes `/readyz` say so, and wakes the topic probe
//! to create it again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Probe, Schedule, Wake};
use crate::error::{Chain, ErrorKind};
use crate::events::metadata::{
    ClusterViewed, DescribeFailed, RacksLearned, TopicBack, TopicMissing,
};
use crate::health::{Condition, Latch};
use crate::kafka::admin::{Admin, MetadataError};
use crate::kafka::metadata::{ClusterView, TopicState};
use crate::telemetry::Instruments;
use crate::telemetry::instruments::ClusterLabels;

/// Bound on one metadata request, so a black-holed broker cannot stall the watch.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the optional DescribeCluster (racks) and DescribeTopics (topic id) requests.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// After an optional request fails, skip it for this many refreshes.
const DESCRIBE_BACKOFF: u32 = 10;
/// First and longest wait before retrying a failed refresh (never beyond the interval).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// While the heartbeat topic stays missing, it is logged again this often.
const MISSING_REMINDER: Duration = Duration::from_secs(300);

/// What the metadata watch needs from its cluster.
pub struct MetadataParts {
    pub cluster: ClusterLabels,
    pub topic: String,
    pub admin: Admin,
    pub interval: Duration,
    pub view: watch::Sender<Arc<ClusterView>>,
    pub instruments: Instruments,
    /// Released once the first view is published.
    pub ready: Option<Latch>,
    /// Unmet while the heartbeat topic is missing.
    pub topic_ready: Option<Condition>,
    /// Unmet, with why, while metadata requests fail.
    pub usable: Option<Condition>,
    /// Wakes the topic probe to create a missing topic; `None` when it must not.
    pub create_topic: Option<Wake>,
    /// Wakes the broker probe when the brokers change (new ones are probed at once).
    pub brokers_changed: Option<Wake>,
}

pub struct MetadataWatch {
    cluster: ClusterLabels,
    topic: String,
    admin: Admin,
    interval: Duration,
    view: watch::Sender<Arc<ClusterView>>,
    instruments: Instruments,
    ready: Option<Latch>,
    topic_ready: Option<Condition>,
    usable: Option<Condition>,
    create_topic: Option<Wake>,
    brokers_changed: Option<Wake>,
    /// Every broker DescribeCluster has named in this run, with its rack if it has one, kept
    /// while the broker is out of the metadata: a broker back from an outage has its rack from
    /// its first view on, so its series never start again without it. A broker not in here
    /// is new to the agent (see `probe_once`).
    racks: BTreeMap<i32, Option<String>>,
    /// Refreshes left before DescribeCluster, and DescribeTopics, are tried again.
    describe_skip: u32,
    topic_id_skip: u32,
    /// The topic was in the metadata at least once in this run.
    topic_seen: bool,
    /// Since when the topic has been missing, when that was last logged (`None`: not
    /// logged, as a topic missing at start that the agent creates is expected).
    topic_missing: Option<(Instant, Option<Instant>)>,
}

impl MetadataWatch {
    pub fn new(parts: MetadataParts) -> Self {
        Self {
            cluster: parts.cluster,
            topic: parts.topic,
            admin: parts.admin,
            interval: parts.interval,
            view: parts.view,
            instruments: parts.instruments,
            ready: parts.ready,
            topic_ready: parts.topic_ready,
            usable: parts.usable,
            create_topic: parts.create_topic,
            brokers_changed: parts.brokers_changed,
            racks: BTreeMap::new(),
            describe_skip: 0,
            topic_id_skip: 0,
            topic_seen: false,
            topic_missing: None,
        }
    }

    /// Checks the heartbeat topic in a fresh view: logs it going missing and coming back,
    /// keeps `/readyz` in step, and has a missing topic created again.
    fn watch_topic(&mut self, view: &ClusterView) {
        let now = Instant::now();
        if view.topic_present() {
            if let Some((since, Some(_))) = self.topic_missing.take() {
                TopicBack {
                    topic: &self.topic,
                    missing_for: now - since,
                }
                .emit();
            }
            self.topic_seen = true;
            if let Some(c) = &mut self.topic_ready {
                c.met();
            }
            return;
        }
        let reason = match &view.topic {
            TopicState::Error(code) => format!("cannot describe it ({code})"),
            _ => "missing".to_owned(),
        };
        if let Some(c) = &mut self.topic_ready {
            c.unmet(format!(
                "{}: heartbeat topic {} {reason}",
                self.cluster, self.topic
            ));
        }
        if view.topic != TopicState::Missing {
            return;
        }
        // At start a missing topic is expected when the agent creates it; later it is news.
        let loud = self.topic_seen || self.create_topic.is_none();
        let (since, logged) = self.topic_missing.get_or_insert((now, None));
        let due = logged.is_none_or(|at| now - at >= MISSING_REMINDER);
        if loud && due {
            TopicMissing {
                topic: &self.topic,
                missing_for: logged.map(|_| now - *since),
                create: self.create_topic.is_some(),
            }
            .emit();
            *logged = Some(now);
        }
        if let Some(wake) = &self.create_topic {
            wake.now();
        }
    }

    /// Logs what changed, updates the gauges, and publishes the view.
    fn publish(&self, mut view: ClusterView) -> Arc<ClusterView> {
        let previous = Arc::clone(&self.view.borrow());
        view.refresh = previous.refresh + 1;
        // A topic seen before, then missing, that is back is a new topic under the old name;
        // so is one whose id changed between two looks.
        let came_back = view.topic_present() && self.topic_seen && self.topic_missing.is_some();
        let new_id = match (previous.topic_id, view.topic_id) {
            (Some(old), Some(new)) => old != new,
            // An answer without the id (DescribeTopics failed this time) keeps the last one.
            (Some(old), None) if view.topic_present() => {
                view.topic_id = Some(old);
                false
            }
            _ => false,
        };
        view.topic_incarnation = previous.topic_incarnation + u64::from(came_back || new_id);
        ClusterViewed {
            cluster: &self.cluster,
            topic: &self.topic,
            previous: &previous,
            view: &view,
        }
        .emit(&self.instruments);
        if let Some(wake) = &self.brokers_changed {
            let address = |v: &ClusterView| -> Vec<(i32, String)> {
                v.brokers.iter().map(|b| (b.id, b.address())).collect()
            };
            if address(&previous) != address(&view) {
                wake.now();
            }
        }
        let view = Arc::new(view);
        self.view.send_replace(Arc::clone(&view));
        view
    }

    /// Adds what the metadata answer lacks, from two optional requests run side by side:
    /// racks and the controller (DescribeCluster), and the heartbeat topic's id
    /// (DescribeTopics; a new id under the same name is a recreated topic, even one never
    /// seen missing). Not every cluster answers them, so after a
    /// failure each is skipped for a while; without the id, recreation is still seen when the
    /// topic is missing in between.
    async fn describe(&mut self, view: ClusterView) -> ClusterView {
        let want_racks = skip(&mut self.describe_skip);
        let want_id = view.topic_present() && skip(&mut self.topic_id_skip);
        let cluster = async {
            match want_racks {
                true => Some(self.admin.describe(DESCRIBE_TIMEOUT).await),
                false => None,
            }
        };
        let topic_id = async {
            match want_id {
                true => Some(self.admin.topic_id(&self.topic, DESCRIBE_TIMEOUT).await),
                false => None,
            }
        };
        let (cluster, topic_id) = tokio::join!(cluster, topic_id);
        let mut described = view;
        match cluster {
            Some(Ok(description)) => {
                let racks = description.racks();
                if !self.racks.values().any(Option::is_some) && !racks.is_empty() {
                    RacksLearned { racks: &racks }.emit();
                }
                self.racks
                    .extend(description.nodes.iter().map(|n| (n.id, n.rack.clone())));
                described.controller = described.controller.or(description.controller);
                described = described.with_racks(&self.racks);
            }
            Some(Err(error)) => {
                DescribeFailed {
                    request: "DescribeCluster",
                    keeps: "broker racks",
                    error: &error,
                }
                .emit();
                self.describe_skip = DESCRIBE_BACKOFF;
            }
            None => {}
        }
        match topic_id {
            Some(Ok(Some(id))) => described.topic_id = Some(id),
            Some(Ok(None)) => {}
            Some(Err(error)) => {
                DescribeFailed {
                    request: "DescribeTopics",
                    keeps: "the topic's id and incarnation",
                    error: &error,
                }
                .emit();
                self.topic_id_skip = DESCRIBE_BACKOFF;
            }
            None => {}
        }
        described
    }
}

/// Counts down a skip counter; true when the request is due.
fn skip(counter: &mut u32) -> bool {
    if *counter > 0 {
        *counter -= 1;
        false
    } else {
        true
    }
}

impl Probe for MetadataWatch {
    const KIND: &'static str = "metadata";
    type Output = Arc<ClusterView>;
    type Error = MetadataError;

    fn schedule(&self) -> Schedule {
        Schedule::every(
            self.interval,
            METADATA_TIMEOUT + DESCRIBE_TIMEOUT + Duration::from_secs(1),
        )
        .retrying(RETRY_FIRST, RETRY_MAX.min(self.interval))
    }

    fn describe(&self) -> String {
        "Metadata probe started: brokers, racks, controller and heartbeat partition leaders; changes are logged.".to_owned()
    }

    /// Cancel-safe: nothing is kept from a round cut before it published; one cut while
    /// DescribeCluster refines a published view leaves the racks to the next round.
    async fn probe_once(&mut self) -> Result<Arc<ClusterView>, MetadataError> {
        let fetched = match self.admin.metadata(&self.topic, METADATA_TIMEOUT).await {
            Ok(fetched) => {
                if let Some(c) = &mut self.usable {
                    c.met();
                }
                fetched
            }
            Err(error) => {
                if let Some(c) = &mut self.usable {
                    c.unmet(format!(
                        "{}: the cluster cannot be used, its metadata requests fail ({}: {})",
                        self.cluster,
                        ErrorKind::of(&error),
                        Chain(&error)
                    ));
                }
                return Err(error);
            }
        };
        // Racks known so far carry over. A broker DescribeCluster has not named yet (at start,
        // or a new broker) waits for it before the view is published, so that its series start
        // with their rack rather than begin again with it a moment later. Brokers without a
        // rack are named all the same: a cluster without racks is not described first.
        let mut view = fetched.with_racks(&self.racks);
        let describe_first =
            self.describe_skip == 0 && view.brokers.iter().any(|b| !self.racks.contains_key(&b.id));
        if describe_first {
            view = self.describe(view).await;
        }
        let published = self.publish(view);
        self.watch_topic(&published);
        if let Some(latch) = self.ready.take() {
            latch.release();
        }
        if describe_first {
            return Ok(published);
        }
        let described = self.describe((*published).clone()).await;
        Ok(if described == *published {
            published
        } else {
            self.publish(described)
        })
    }
}
