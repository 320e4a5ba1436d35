//! The producer of a cluster: it sends the heartbeats, and its handle carries the agent's
//! cluster-level requests too ([`super::admin`]), so no third client is needed.
//!
//! Each delivery report is stamped with its time inside librdkafka's callback and handed,
//! with the broker the record went to, to whoever built the producer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use tokio_util::sync::CancellationToken;

use super::native::{self, queue::Driven};
use super::{ClientTiming, LibrdkafkaLog, Role, client_config};
use crate::config::ClusterConfig;
use crate::error::BuildError;

/// Rides with each record through the producer, back to the delivery callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub partition: i32,
    pub seq: u64,
    pub sent_at: Instant,
    /// The send span's ids, carried in the record's `traceparent` header.
    pub trace: Option<crate::telemetry::traces::TraceIds>,
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

/// Receives every delivery report, on the task serving the producer: keep it short.
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

/// A heartbeat record: keyed by the agent instance, tagged for its delivery report.
pub type Record<'a> = BaseRecord<'a, [u8], Vec<u8>, Box<Tag>>;

/// The producer of one cluster; cheap to clone (clones share the client).
///
/// Its events (delivery reports, errors, librdkafka's logs) are served by [`Producer::serve`],
/// a task that sleeps until there are some: no polling thread.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Driven<BaseProducer<DeliveryContext>>>,
}

/// Bounds one burst of serving, so a flood of events never holds a runtime thread for long.
const SERVE_BURST: usize = 1024;

impl Producer {
    /// The producer's librdkafka handle, for cluster-level requests.
    pub fn client(&self) -> &Client<DeliveryContext> {
        self.inner.client()
    }

    /// Where librdkafka's logs and errors of this client go, and its authentication state.
    pub fn log(&self) -> &LibrdkafkaLog {
        &self.client().context().log
    }

    /// Hands `record` to librdkafka; its outcome comes to the delivery callback. An error
    /// means librdkafka refused it at once (its queue is full, say).
    pub fn send(&self, record: Record<'_>) -> Result<(), KafkaError> {
        self.inner.send(record).map_err(|(error, _)| error)
    }

    /// Waits (blocking) until every record handed over has its outcome, or `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.flush(timeout)
    }

    /// Serves the producer's events as they come, until `cancel`.
    pub async fn serve(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.inner.ready() => {}
            }
            let mut served = 0;
            while self.inner.pending() > 0 && served < SERVE_BURST {
                // A zero timeout serves at most one event and never blocks.
                self.inner.poll(Duration::ZERO);
                served += 1;
            }
            if served == SERVE_BURST {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Builds the producer of `cluster`; `on_delivery` receives every delivery report once
/// [`Producer::serve`] runs.
pub fn producer(
    cluster: &ClusterConfig,
    timing: ClientTiming,
    on_delivery: OnDelivery,
) -> Result<Producer, BuildError> {
    let producer: BaseProducer<DeliveryContext> = client_config(cluster, Role::Producer, timing)
        .create_with_context(DeliveryContext {
            log: LibrdkafkaLog::for_cluster(cluster, Role::Producer),
            on_delivery,
        })
        .map_err(|source| BuildError::KafkaClient {
            cluster: cluster.name.clone(),
            role: Role::Producer.as_str(),
            source,
        })?;
    Ok(Producer {
        inner: Arc::new(Driven::new(producer)),
    })
}
