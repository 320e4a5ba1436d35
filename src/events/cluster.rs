//! Events of the requests the agent makes to a cluster: each counted by outcome, and the
//! metadata requests' outcome kept as whether the agent can use the cluster at all.
//!
//! These points carry the cluster's configured attributes (`kafka.cluster.name` and the
//! `labels`) but not `kafka.cluster.id`: they must exist before the cluster ever answered,
//! which is when a wrong API key leaves the agent.

use opentelemetry::KeyValue;

use crate::kafka::admin::{ObserveRequests, Request};
use crate::telemetry::Instruments;
use crate::telemetry::instruments::{ClusterLabels, attr, failure_kvs};

/// Counts every request an `Admin` of one cluster makes, and sets `kafka.cluster.up` from the
/// metadata requests.
#[derive(Clone, Debug)]
pub struct ClusterRequests {
    cluster: ClusterLabels,
    instruments: Instruments,
}

impl ClusterRequests {
    pub fn new(cluster: ClusterLabels, instruments: Instruments) -> Self {
        Self {
            cluster,
            instruments,
        }
    }

    /// One request ended, `error` on failure.
    pub fn done(&self, request: Request, error: Option<&(dyn std::error::Error + 'static)>) {
        let mut attrs = self.cluster.attrs().to_vec();
        attrs.push(KeyValue::new(attr::KAFKA_REQUEST, request.as_str()));
        if let Some(error) = error {
            attrs.extend(failure_kvs(error));
        }
        self.instruments.count_cluster_request(&attrs);
        if request == Request::Metadata {
            self.instruments.set_cluster_up(
                self.cluster.name(),
                self.cluster.attrs().to_vec(),
                error.is_none(),
            );
        }
    }
}

impl ObserveRequests for ClusterRequests {
    fn observe(&self, request: Request, error: Option<&(dyn std::error::Error + 'static)>) {
        self.done(request, error);
    }
}
