//! An independent witness of the heartbeat topic: a second client that reads every record
//! from the start of each partition up to its end, and says which heartbeats of an agent are
//! really there. The truth the agent's own counts are checked against.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// (partition, sequence number) of one heartbeat.
pub type Heartbeat = (i32, u64);

/// The heartbeats of agent `instance` on `topic` now: every record from the start of each
/// partition up to where it ended when the read began. Empty when the topic does not exist.
pub async fn heartbeats_on_topic(
    bootstrap: &str,
    topic: &str,
    instance: &str,
) -> BTreeSet<Heartbeat> {
    let (bootstrap, topic, instance) =
        (bootstrap.to_owned(), topic.to_owned(), instance.to_owned());
    tokio::task::spawn_blocking(move || read_all(&bootstrap, &topic, &instance))
        .await
        .expect("witness task")
}

fn read_all(bootstrap: &str, topic: &str, instance: &str) -> BTreeSet<Heartbeat> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("witness-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("witness consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .expect("witness metadata");
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = Vec::new();
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(5))
            .expect("witness watermarks");
        if high > low {
            list.add_partition_offset(topic, *p, Offset::Offset(low))
                .expect("partition");
            ends.push((*p, high));
        }
    }
    let mut found = BTreeSet::new();
    if ends.is_empty() {
        return found;
    }
    consumer.assign(&list).expect("witness assign");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut remaining: Vec<(i32, i64)> = ends;
    while !remaining.is_empty() {
        assert!(
            Instant::now() < deadline,
            "witness did not reach the end: {remaining:?}"
        );
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let next = m.offset() + 1;
        remaining.retain(|(p, end)| !(*p == m.partition() && next >= *end));
        let Some(payload) = m.payload() else { continue };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(payload) else {
            continue;
        };
        if json["instance"] == instance
            && let Some(seq) = json["seq"].as_u64()
        {
            found.insert((m.partition(), seq));
        }
    }
    found
}

/// A witness that reads the topic as it is written: a consumer of its own, fetching at the
/// end of every partition before it is handed back, that notes how long after its send
/// (the record's CreateTime) each heartbeat reached it.
pub struct LiveWitness {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Seen>>,
}

/// One heartbeat as the live witness saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub partition: i32,
    pub instance: String,
    pub seq: u64,
    /// From the record's CreateTime to the witness's poll, by the wall clock (1 ms steps).
    pub latency: Duration,
}

impl LiveWitness {
    /// Starts reading `partitions` of `topic` at their end; returns once the witness's fetch
    /// of each has reached the end (so its next fetch is waiting at the leader).
    pub fn start(bootstrap: &str, topic: &str, partitions: &[i32]) -> Self {
        use rdkafka::error::KafkaError;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set(
                "group.id",
                format!("live-witness-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "500")
            .create()
            .expect("live witness consumer");
        let mut list = TopicPartitionList::new();
        for p in partitions {
            list.add_partition_offset(topic, *p, Offset::End)
                .expect("partition");
        }
        consumer.assign(&list).expect("live witness assign");
        let mut at_end = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while at_end.len() < partitions.len() {
            assert!(
                Instant::now() < deadline,
                "live witness fetching: {at_end:?}"
            );
            if let Some(Err(KafkaError::PartitionEOF(p))) =
                consumer.poll(Duration::from_millis(100))
            {
                at_end.insert(p);
            }
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = std::sync::Arc::clone(&stop);
            move || {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as i64;
                    let Some(created_ms) = m.timestamp().to_millis() else {
                        continue;
                    };
                    let Some(json) = m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                    else {
                        continue;
                    };
                    if let (Some(instance), Some(seq)) =
                        (json["instance"].as_str(), json["seq"].as_u64())
                    {
                        seen.push(Seen {
                            partition: m.partition(),
                            instance: instance.to_owned(),
                            seq,
                            latency: Duration::from_millis((now_ms - created_ms).max(0) as u64),
                        });
                    }
                }
                seen
            }
        });
        Self { stop, thread }
    }

    /// Stops reading; every heartbeat seen, in the order seen.
    pub fn stop(self) -> Vec<Seen> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("live witness thread")
    }
}
