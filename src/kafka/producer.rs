//! The producer of a cluster: it sends the heartbeats, and its handle carries the agent's
//! cluster-level requests too ([`super::admin`]), so no third client is needed.
//!
//! Each delivery report is stamped with its time inside librdkafka's callback and handed,
//! with the broker the record went to, to whoever built the producer.

use std::time::Instant;

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{ProducerContext, ThreadedProducer};

use super::{ClientTiming, LibrdkafkaLog, Role, client_config, native};
use crate::config::ClusterConfig;
use crate::error::BuildError;

/// Rides with each record through the producer, back to the delivery callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub partition: i32,
    pub seq: u64,
    pub sent_at: Instant,
}

/// What happened to one record.
#[derive(Debug)]
pub struct Delivery {
    pub tag: Tag,
    /// When librdkafka reported it.
    pub at: Instant,
    /// The broker the record was produced to, as librdkafka reports it.
    pub broker: Option<i32>,
    pub outcome: Result<(), KafkaError>,
}

/// Receives every delivery report, on librdkafka's polling thread: keep it short.
pub type OnDelivery = Box<dyn Fn(Delivery) + Send + Sync>;

/// Producer context: routes librdkafka's logs, and stamps and forwards delivery reports.
pub struct DeliveryContext {
    log: LibrdkafkaLog,
    on_delivery: OnDelivery,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Tag>;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: Box<Tag>) {
        let at = Instant::now();
        let (outcome, broker) = match result {
            Ok(message) => (Ok(()), native::message_broker(message)),
            Err((error, message)) => (Err(error.clone()), native::message_broker(message)),
        };
        (self.on_delivery)(Delivery {
            tag: *tag,
            at,
            broker,
            outcome,
        });
    }
}

/// The producer of one cluster; cheap to clone (clones share the client).
pub type Producer = ThreadedProducer<DeliveryContext>;

/// Builds the producer of `cluster`; `on_delivery` receives every delivery report.
pub fn producer(
    cluster: &ClusterConfig,
    timing: ClientTiming,
    on_delivery: OnDelivery,
) -> Result<Producer, BuildError> {
    client_config(cluster, Role::Producer, timing)
        .create_with_context(DeliveryContext {
            log: LibrdkafkaLog::new(&cluster.name, Role::Producer),
            on_delivery,
        })
        .map_err(|source| BuildError::KafkaClient {
            cluster: cluster.name.clone(),
            role: Role::Producer.as_str(),
            source,
        })
}
