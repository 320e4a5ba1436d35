//! Serving a client's event queue from an async task instead of a thread that polls it.
//!
//! librdkafka calls a function whenever one of its queues goes from empty to non-empty. A
//! [`Driven`] client has that function wake a [`Notify`], so a task sleeps until there is
//! work and then drains the queue without blocking: no polling thread per client, and no
//! wake-ups while nothing happens.

use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::ops::Deref;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::producer::{BaseProducer, Producer as _, ProducerContext};
use tokio::sync::Notify;

/// A librdkafka client the agent owns, by its native handle. Sealed: only rdkafka's own
/// clients implement it, so the handle given to librdkafka is always a live one.
pub trait NativeClient: sealed::Sealed + Send + 'static {
    /// The handle; valid as long as `self` is.
    fn native(&self) -> *mut rd::rd_kafka_t;
    /// The queue its poll serves.
    fn poll_queue(&self) -> PollQueue;
}

mod sealed {
    use rdkafka::consumer::{BaseConsumer, ConsumerContext};
    use rdkafka::producer::{BaseProducer, ProducerContext};

    pub trait Sealed {}
    impl<C: ProducerContext> Sealed for BaseProducer<C> {}
    impl<C: ConsumerContext> Sealed for BaseConsumer<C> {}
}

/// Which of a client's queues its poll serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollQueue {
    /// The main queue: delivery reports, errors, logs.
    Main,
    /// The consumer queue when there is one (a consumer with a group id has its main queue
    /// forwarded there), else the main queue: the one rdkafka's consumer polls.
    Consumer,
}

impl<C: ProducerContext + 'static> NativeClient for BaseProducer<C> {
    fn native(&self) -> *mut rd::rd_kafka_t {
        self.client().native_ptr()
    }

    fn poll_queue(&self) -> PollQueue {
        PollQueue::Main
    }
}

impl<C: ConsumerContext + 'static> NativeClient for BaseConsumer<C> {
    fn native(&self) -> *mut rd::rd_kafka_t {
        self.client().native_ptr()
    }

    fn poll_queue(&self) -> PollQueue {
        PollQueue::Consumer
    }
}

/// A client whose poll queue wakes a task when it has events.
///
/// Dropped, it first stops librdkafka from calling the wake function and releases the queue
/// (while the client is still alive), then destroys the client: off the runtime's worker
/// threads when it is dropped on one, since librdkafka's destroy waits for the client's
/// threads (a second or more for a consumer).
pub struct Driven<T: NativeClient> {
    wake: ManuallyDrop<QueueWake>,
    client: ManuallyDrop<T>,
}

impl<T: NativeClient> Driven<T> {
    pub fn new(client: T) -> Self {
        let wake = QueueWake::new(client.native(), client.poll_queue());
        Self {
            wake: ManuallyDrop::new(wake),
            client: ManuallyDrop::new(client),
        }
    }

    /// Waits until the poll queue holds an event. Never misses one: a wake that comes while
    /// nobody waits is kept for the next call (it may then find the queue already drained).
    pub async fn ready(&self) {
        if self.pending() > 0 {
            return;
        }
        self.wake.notify.notified().await;
    }

    /// How many events the poll queue holds.
    pub fn pending(&self) -> usize {
        self.wake.len()
    }
}

impl<T: NativeClient> Deref for Driven<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.client
    }
}

impl<T: NativeClient> Drop for Driven<T> {
    fn drop(&mut self) {
        // SAFETY: `drop` runs once, and neither field is used after it is taken here.
        let (wake, client) = unsafe {
            (
                ManuallyDrop::take(&mut self.wake),
                ManuallyDrop::take(&mut self.client),
            )
        };
        drop(wake);
        crate::kafka::drop_off_runtime(client);
    }
}

struct QueueWake {
    queue: *mut rd::rd_kafka_queue_t,
    /// Boxed so its address, which librdkafka holds, never moves.
    notify: Box<Notify>,
}

// SAFETY: librdkafka's queue handles may be used from any thread; `notify` is Send and Sync.
unsafe impl Send for QueueWake {}
// SAFETY: as above; `len` only reads the queue's length under librdkafka's own lock.
unsafe impl Sync for QueueWake {}

impl QueueWake {
    fn new(rk: *mut rd::rd_kafka_t, which: PollQueue) -> Self {
        let queue = match which {
            // SAFETY: `rk` is a live client handle (the caller owns the client); the returned
            // handle holds a reference on the queue until `rd_kafka_queue_destroy` in drop.
            PollQueue::Main => unsafe { rd::rd_kafka_queue_get_main(rk) },
            PollQueue::Consumer => {
                // SAFETY: as above; without a group id there is no consumer queue (null), and
                // rdkafka's consumer polls the main queue instead.
                let consumer = unsafe { rd::rd_kafka_queue_get_consumer(rk) };
                if consumer.is_null() {
                    // SAFETY: as for the main queue above.
                    unsafe { rd::rd_kafka_queue_get_main(rk) }
                } else {
                    consumer
                }
            }
        };
        let notify = Box::new(Notify::new());
        if !queue.is_null() {
            let opaque = std::ptr::from_ref::<Notify>(&notify)
                .cast_mut()
                .cast::<c_void>();
            // SAFETY: `queue` is live; `opaque` points at `notify`, which lives until drop,
            // where the function is unset before anything is freed.
            unsafe { rd::rd_kafka_queue_cb_event_enable(queue, Some(wake), opaque) };
        }
        Self { queue, notify }
    }

    fn len(&self) -> usize {
        if self.queue.is_null() {
            return 0;
        }
        // SAFETY: `queue` is live until drop.
        unsafe { rd::rd_kafka_queue_length(self.queue) }
    }
}

impl Drop for QueueWake {
    fn drop(&mut self) {
        if self.queue.is_null() {
            return;
        }
        // SAFETY: `queue` is live; after this call librdkafka no longer calls `wake` with a
        // pointer to `notify`, so it can be freed; then the handle is released, once.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rd::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// Called by librdkafka, on the thread that enqueued, with the queue locked: it only wakes.
unsafe extern "C" fn wake(_rk: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Notify` of a live `QueueWake` (see `QueueWake::new`).
    let notify = unsafe { &*opaque.cast::<Notify>() };
    notify.notify_one();
}
