//! The heartbeat's two Kafka clients and what they report: the producer's delivery callback
//! and the consumer's thread stamp their times where things happen and forward them as
//! [`Event`]s to the [`Receiver`](super::receiver::HeartbeatReceiver).

use std::time::Instant;

use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, DeliveryResult, Message as _};
use rdkafka::producer::ProducerContext;
use rdkafka::{ClientContext, config::RDKafkaLogLevel};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::payload::{Decoded, Origin};
use crate::kafka::{AgentContext, LibrdkafkaLog};

/// How long the consumer thread blocks in one poll; bounds how fast it notices shutdown.
const CONSUMER_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Everything that happens to heartbeats, in the order it happened.
#[derive(Debug)]
pub(super) enum Event {
    /// The consumer reads these partitions now.
    Assigned { partitions: Vec<i32> },
    /// A heartbeat is about to be handed to the producer.
    Sent {
        partition: i32,
        seq: u64,
        sent_at: Instant,
    },
    /// The producer refused a heartbeat at once (e.g. its queue is full).
    Refused {
        partition: i32,
        seq: u64,
        at: Instant,
        error: KafkaError,
    },
    /// The broker acknowledged a heartbeat, or its send failed.
    Acked {
        partition: i32,
        seq: u64,
        sent_at: Instant,
        at: Instant,
        outcome: Result<(), KafkaError>,
    },
    /// A message was consumed from the heartbeat topic.
    Consumed {
        partition: i32,
        offset: i64,
        at: Instant,
        decoded: Decoded,
    },
    /// Time to count as lost what was not consumed back in time.
    Sweep { at: Instant },
}

pub(super) type Events = mpsc::UnboundedSender<Event>;

/// Rides with each heartbeat through the producer, back to the delivery callback.
pub(super) struct DeliveryTag {
    pub(super) partition: i32,
    pub(super) seq: u64,
    pub(super) sent_at: Instant,
}

/// Producer context: stamps the ack time in librdkafka's callback and forwards it.
pub(super) struct DeliveryContext {
    pub(super) log: LibrdkafkaLog,
    pub(super) events: Events,
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
    type DeliveryOpaque = Box<DeliveryTag>;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: Box<DeliveryTag>) {
        let at = Instant::now();
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.clone()),
        };
        // The receiver is gone only during shutdown, when outcomes no longer matter.
        let _ = self.events.send(Event::Acked {
            partition: tag.partition,
            seq: tag.seq,
            sent_at: tag.sent_at,
            at,
            outcome,
        });
    }
}

/// The consumer thread: polls, stamps the receive time, decodes, forwards; until `cancel`.
pub(super) fn consume_loop(
    consumer: &BaseConsumer<AgentContext>,
    origin: &Origin,
    events: &Events,
    cancel: &CancellationToken,
) {
    let mut last_error: Option<String> = None;
    while !cancel.is_cancelled() {
        match consumer.poll(CONSUMER_POLL) {
            None => {}
            Some(Ok(message)) => {
                let at = Instant::now();
                if events.send(consumed(&message, at, origin)).is_err() {
                    break;
                }
            }
            Some(Err(error)) => {
                // Fetch errors repeat while a broker is away; the heartbeat counters show it.
                let text = error.to_string();
                if last_error.as_deref() != Some(&text) {
                    debug!(%error, "Heartbeat consumer error.");
                    last_error = Some(text);
                }
            }
        }
    }
}

fn consumed(message: &BorrowedMessage<'_>, at: Instant, origin: &Origin) -> Event {
    Event::Consumed {
        partition: message.partition(),
        offset: message.offset(),
        at,
        decoded: origin.decode(message.payload()),
    }
}
