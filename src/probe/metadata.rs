//! The metadata watch: fetches the cluster view every interval (retrying sooner while it
//! fails) and publishes it to the other probes. It is the only writer of the view: others
//! ask it for a fresh one with a [`Wake`](super::Wake). Racks are carried from one view to
//! the next here, and refined from DescribeCluster where the cluster answers it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::debug;

use super::{Probe, Schedule};
use crate::error::Chain;
use crate::events::metadata::{ClusterViewed, RacksLearned};
use crate::health::Latch;
use crate::kafka::admin::{Admin, MetadataError};
use crate::kafka::metadata::ClusterView;
use crate::telemetry::Instruments;

/// Bound on one metadata request, so a black-holed broker cannot stall the watch.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a DescribeCluster request (racks).
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// After DescribeCluster fails, skip it for this many refreshes.
const DESCRIBE_BACKOFF: u32 = 10;
/// First and longest wait before retrying a failed refresh (never beyond the interval).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the metadata watch needs from its cluster.
pub struct MetadataParts {
    pub cluster: String,
    pub topic: String,
    pub admin: Admin,
    pub interval: Duration,
    pub view: watch::Sender<Arc<ClusterView>>,
    pub instruments: Instruments,
    /// Released once the first view is published.
    pub ready: Option<Latch>,
}

pub struct MetadataWatch {
    cluster: String,
    topic: String,
    admin: Admin,
    interval: Duration,
    view: watch::Sender<Arc<ClusterView>>,
    instruments: Instruments,
    ready: Option<Latch>,
    /// Refreshes left before DescribeCluster is tried again.
    describe_skip: u32,
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
            describe_skip: 0,
        }
    }

    /// Logs what changed, updates the gauges, and publishes the view when it differs.
    fn publish(&self, view: ClusterView) -> Arc<ClusterView> {
        let previous = Arc::clone(&self.view.borrow());
        ClusterViewed {
            cluster: &self.cluster,
            topic: &self.topic,
            previous: &previous,
            view: &view,
        }
        .emit(&self.instruments);
        if *previous == view {
            return previous;
        }
        let view = Arc::new(view);
        self.view.send_replace(Arc::clone(&view));
        view
    }

    /// Adds racks and the controller from DescribeCluster to the published view, skipping the
    /// request for a while after it fails (not every cluster answers it: librdkafka's mock
    /// does not).
    async fn add_racks(&mut self, view: Arc<ClusterView>) -> Arc<ClusterView> {
        if self.describe_skip > 0 {
            self.describe_skip -= 1;
            return view;
        }
        match self.admin.describe(DESCRIBE_TIMEOUT).await {
            Ok(description) => {
                let racks = description.racks();
                if view.racks().is_empty() && !racks.is_empty() {
                    RacksLearned { racks: &racks }.emit();
                }
                let controller = view.controller.or(description.controller);
                self.publish(ClusterView {
                    controller,
                    ..(*view).clone().with_racks(&racks)
                })
            }
            Err(error) => {
                debug!(error = %Chain(&error), "DescribeCluster failed; broker racks stay as they are.");
                self.describe_skip = DESCRIBE_BACKOFF;
                view
            }
        }
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

    async fn probe_once(&mut self) -> Result<Arc<ClusterView>, MetadataError> {
        let fetched = self.admin.metadata(&self.topic, METADATA_TIMEOUT).await?;
        // Racks known so far carry over; DescribeCluster may refine them after.
        let racks = self.view.borrow().racks();
        let view = self.publish(fetched.with_racks(&racks));
        if let Some(latch) = self.ready.take() {
            latch.release();
        }
        Ok(self.add_racks(view).await)
    }
}
