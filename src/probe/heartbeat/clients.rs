//! The heartbeat's two Kafka clients and what they report: the producer's delivery callback
//! and the consumer's task stamp their times where things happen and forward them as
//! [`Event`]s to the [`Receiver`](super::receiver::HeartbeatReceiver).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::events::heartbeat::ConsumerError;

use super::payload::{Decoded, Origin};
use crate::config::ClusterConfig;
use crate::error::BuildError;
use crate::kafka::admin::Admin;
use crate::kafka::native::queue::Driven;
use crate::kafka::producer::{self, Delivery, Producer};
use crate::kafka::{AgentContext, ClientTiming, Role, client_config};
use crate::telemetry::traces::{TRACEPARENT, TraceIds};

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
        trace: Option<TraceIds>,
    },
    /// The broker acknowledged a heartbeat, or its send failed.
    Acked {
        partition: i32,
        seq: u64,
        sent_at: Instant,
        at: Instant,
        /// The broker it was produced to, as the producer reports it.
        broker: Option<i32>,
        outcome: Result<(), KafkaError>,
        trace: Option<TraceIds>,
    },
    /// The consumer's fetches failed (a broker away, an ACL refusing the read).
    FetchFailed { error: KafkaError },
    /// A message was consumed from the heartbeat topic.
    Consumed {
        partition: i32,
        offset: i64,
        at: Instant,
        decoded: Decoded,
        /// The send's context, from the record's `traceparent` header.
        parent: Option<TraceIds>,
    },
    /// Time to count as lost what was not consumed back in time. `checked` counts the
    /// position checks done so far (see [`Positions::request_check`]).
    Sweep { at: Instant, checked: u64 },
    /// The heartbeat topic disappeared: what is in flight can no longer be read back.
    TopicGone,
    /// The topic the consumer reads (these partitions of it) is not the one it was: it
    /// disappeared and came back, or its offsets went back.
    Recreated {
        partitions: Vec<i32>,
        how: Recreation,
    },
}

/// How a recreated topic was noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Recreation {
    /// The metadata showed it missing, then present again.
    CameBack,
    /// A partition's end is now before where the consumer was: its log started over.
    OffsetsWentBack,
}

pub(super) type Events = mpsc::UnboundedSender<Event>;

/// The heartbeat's clients for one cluster, built before anything runs so a bad setting fails
/// start-up. The producer's handle also carries the cluster-level requests
/// ([`HeartbeatClients::admin`]). Neither client has a polling thread: [`serve`] runs a task
/// for each that sleeps until its client has events.
///
/// [`serve`]: HeartbeatClients::serve
pub struct HeartbeatClients {
    /// The cluster's name, for the clients' task spans.
    cluster: String,
    pub(super) producer: Producer,
    /// `None` when the heartbeat is not read back (`heartbeat.read_back: false`): no consumer
    /// connects at all.
    pub(super) consumer: Option<Consumer>,
    pub(super) origin: Origin,
    pub(super) positions: Arc<Positions>,
    pub(super) events_tx: Events,
    pub(super) events: mpsc::UnboundedReceiver<Event>,
}

/// The heartbeat consumer, served by [`consume`].
pub(super) type Consumer = Arc<Driven<BaseConsumer<AgentContext>>>;

impl HeartbeatClients {
    pub fn new(
        cluster: &ClusterConfig,
        timing: ClientTiming,
        instance_id: &str,
        read_back: bool,
    ) -> Result<Self, BuildError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        // The producer outlives the heartbeat (the cluster-level requests share it), so its
        // callback must not keep the receiver running: the channel closes when the probe
        // and the consumer's task are gone, and later reports are dropped.
        let acks = events_tx.downgrade();
        let on_delivery = Box::new(move |delivery: Delivery| {
            let Some(acks) = acks.upgrade() else { return };
            let _ = acks.send(Event::Acked {
                partition: delivery.tag.partition,
                seq: delivery.tag.seq,
                sent_at: delivery.tag.sent_at,
                at: delivery.at,
                broker: delivery.broker,
                outcome: delivery.outcome,
                trace: delivery.tag.trace,
            });
        });
        let producer = producer::producer(cluster, timing, on_delivery)?;
        let origin = Origin::new(instance_id);
        // librdkafka needs a group id to assign partitions at all. This one is unique to the
        // run and only ever used with assign(): the consumer never joins, rebalances or
        // commits.
        let consumer = read_back
            .then(|| {
                client_config(cluster, Role::Consumer, timing)
                    .set("group.id", format!("cc-heartbeat-{}", origin.run))
                    .create_with_context(AgentContext::new(cluster, Role::Consumer))
                    .map(|c: BaseConsumer<AgentContext>| Arc::new(Driven::new(c)))
                    .map_err(|source| BuildError::KafkaClient {
                        cluster: cluster.name.clone(),
                        role: Role::Consumer.as_str(),
                        source,
                    })
            })
            .transpose()?;
        Ok(Self {
            cluster: cluster.name.clone(),
            producer,
            consumer,
            origin,
            positions: Arc::default(),
            events_tx,
            events,
        })
    }

    /// Where the heartbeat reader is in each partition, for a probe that reports it.
    pub fn read_positions(&self) -> ReadPositions {
        ReadPositions(Arc::clone(&self.positions))
    }

    /// The agent's `service.instance.id`, which its own groups are named after.
    pub fn instance_id(&self) -> &str {
        &self.origin.instance
    }

    /// The cluster-level requests, on the producer's handle.
    pub fn admin(&self) -> Admin {
        Admin::new(self.producer.clone())
    }

    /// Serves both clients' events (delivery reports, consumed messages, librdkafka's logs)
    /// until `cancel`. Runs from the start, before the heartbeat does, so librdkafka's logs
    /// about an unreachable cluster are written, not queued.
    pub fn serve(&self, cancel: &CancellationToken, tasks: &TaskTracker) {
        let span = |role: Role| tracing::info_span!(parent: None, "client", role = role.as_str(), cluster = %self.cluster);
        tasks.spawn(
            self.producer
                .clone()
                .serve(cancel.clone())
                .instrument(span(Role::Producer)),
        );
        if let Some(consumer) = &self.consumer {
            tasks.spawn(
                consume(
                    Arc::clone(consumer),
                    self.origin.clone(),
                    self.events_tx.clone(),
                    Arc::clone(&self.positions),
                    cancel.clone(),
                )
                .instrument(span(Role::Consumer)),
            );
        }
    }
}

/// The heartbeat reader's positions, read-only.
#[derive(Clone, Debug)]
pub struct ReadPositions(Arc<Positions>);

impl ReadPositions {
    /// The offset after the last heartbeat record read from `partition`.
    pub fn next(&self, partition: i32) -> Option<i64> {
        self.0.next(partition)
    }
}

/// Where the consumer is, as its task saw it, for the probe to compare with the brokers'.
#[derive(Debug, Default)]
pub(super) struct Positions {
    /// The offset after the last message consumed, per partition.
    next: Mutex<BTreeMap<i32, i64>>,
    /// The consumer found its position outside a partition's log (`auto.offset.reset` is
    /// `error`, so it stops there instead of skipping silently).
    out_of_range: AtomicBool,
    /// The receiver suspects losses: are the positions still inside the logs?
    check_requested: AtomicBool,
    /// Position checks done.
    checks: AtomicU64,
    /// Partitions whose fetch reached the end of the log since they were assigned: the
    /// consumer's next fetch is waiting at the leader, so a heartbeat sent now is read the
    /// moment it lands.
    fetching: Mutex<BTreeSet<i32>>,
    /// Woken when a partition joins `fetching`.
    reached_end: tokio::sync::Notify,
}

impl Positions {
    fn consumed(&self, partition: i32, offset: i64) {
        if let Ok(mut next) = self.next.lock() {
            next.insert(partition, offset + 1);
        }
    }

    /// Where the consumer will read `partition` next, if it has read anything.
    pub(super) fn next(&self, partition: i32) -> Option<i64> {
        self.next.lock().ok()?.get(&partition).copied()
    }

    /// The consumer was assigned `partition` at `offset`.
    pub(super) fn assigned_at(&self, partition: i32, offset: i64) {
        if let Ok(mut next) = self.next.lock() {
            next.insert(partition, offset);
        }
        self.not_fetching(partition);
    }

    /// Forgets `partition` (it is assigned afresh).
    pub(super) fn forget(&self, partition: i32) {
        if let Ok(mut next) = self.next.lock() {
            next.remove(&partition);
        }
        self.not_fetching(partition);
    }

    fn not_fetching(&self, partition: i32) {
        if let Ok(mut fetching) = self.fetching.lock() {
            fetching.remove(&partition);
        }
    }

    /// The consumer's fetch of `partition` reached the end of its log.
    fn reached_end(&self, partition: i32) {
        let new = self
            .fetching
            .lock()
            .is_ok_and(|mut fetching| fetching.insert(partition));
        if new {
            self.reached_end.notify_waiters();
        }
    }

    /// Waits until the consumer is fetching every one of `partitions` at the end of its log,
    /// or until `deadline`. The first fetch after an assignment waits for the consumer's
    /// connection to the leader (and, on some brokers, is answered late): a heartbeat sent
    /// before would measure that, once, at every start.
    pub(super) async fn until_fetching(&self, partitions: &[i32], deadline: tokio::time::Instant) {
        loop {
            let woken = self.reached_end.notified();
            tokio::pin!(woken);
            // Registered before the check, so an end reached in between still wakes it.
            woken.as_mut().enable();
            let all = self.fetching.lock().map_or(true, |fetching| {
                partitions.iter().all(|p| fetching.contains(p))
            });
            if all {
                return;
            }
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Whether the positions need checking: the consumer fell outside a log, or the
    /// receiver asked, since the last call.
    pub(super) fn take_check(&self) -> bool {
        let out_of_range = self.out_of_range.swap(false, Ordering::AcqRel);
        let requested = self.check_requested.swap(false, Ordering::AcqRel);
        out_of_range || requested
    }

    /// Asks the probe to compare the positions with the brokers' logs on its next round:
    /// heartbeats overdue on a partition whose log went back were not lost, the topic was
    /// recreated.
    pub(super) fn request_check(&self) {
        self.check_requested.store(true, Ordering::Release);
    }

    pub(super) fn checked(&self) {
        self.checks.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn checks(&self) -> u64 {
        self.checks.load(Ordering::Acquire)
    }
}

/// Bounds one burst of consuming, so a flood of messages never holds a runtime thread for long.
const CONSUME_BURST: usize = 1024;

/// Serves the consumer: sleeps until it has events, then takes each message, stamps its
/// receive time, decodes and forwards it; until `cancel`.
async fn consume(
    consumer: Consumer,
    origin: Origin,
    events: Events,
    positions: Arc<Positions>,
    cancel: CancellationToken,
) {
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = consumer.ready() => {}
        }
        let mut served = 0;
        while consumer.pending() > 0 && served < CONSUME_BURST {
            served += 1;
            // A zero timeout never blocks; it returns nothing when the event was not a message.
            match consumer.poll(Duration::ZERO) {
                None => {}
                Some(Ok(message)) => {
                    let at = Instant::now();
                    // A fetch went through: the brokers let it read the topic.
                    consumer.context().log().accepted();
                    positions.consumed(message.partition(), message.offset());
                    if events.send(consumed(&message, at, &origin)).is_err() {
                        return;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    // Also a fetch that went through.
                    consumer.context().log().accepted();
                    positions.reached_end(partition);
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    positions.out_of_range.store(true, Ordering::Release);
                }
                Some(Err(error)) => {
                    // Fetch errors repeat while a broker is away: logged when they change,
                    // counted every time.
                    let text = error.to_string();
                    if last_error.as_deref() != Some(&text) {
                        ConsumerError { error: &error }.emit();
                        last_error = Some(text);
                    }
                    if events.send(Event::FetchFailed { error }).is_err() {
                        return;
                    }
                }
            }
        }
        if served == CONSUME_BURST {
            tokio::task::yield_now().await;
        }
    }
}

fn consumed(message: &BorrowedMessage<'_>, at: Instant, origin: &Origin) -> Event {
    Event::Consumed {
        partition: message.partition(),
        offset: message.offset(),
        at,
        decoded: origin.decode(message.partition(), message.payload()),
        parent: message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == TRACEPARENT)
                .and_then(|h| TraceIds::parse_traceparent(h.value?))
        }),
    }
}
