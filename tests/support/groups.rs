//! A real consumer group and records to consume, made by clients of the test's own, and
//! what the offsets and group tests read back.

use std::time::Duration;

use cc_heartbeat::telemetry::instruments::name;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::metrics::gauge_one;
use super::{TestAgent, eventually};

/// Writes `count` records to `partition` of `topic`, each acknowledged.
pub async fn produce(bootstrap: &str, topic: &str, partition: i32, count: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for i in 0..count {
        let payload = format!("record {i}");
        producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .partition(partition)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

/// The application's consumer: a member of `group` that commits what the test says.
pub fn member(bootstrap: &str, group: &str, topic: &str, partitions: usize) -> BaseConsumer {
    member_with(bootstrap, group, topic, partitions, &[])
}

/// The same, with librdkafka `settings` of the test's.
pub fn member_with(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: usize,
    settings: &[(&str, &str)],
) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let consumer: BaseConsumer = config.create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    // Polling joins the group; it has every partition once the assignment arrives.
    for _ in 0..300 {
        let _ = consumer.poll(Duration::from_millis(100));
        if consumer.assignment().unwrap().count() == partitions {
            return consumer;
        }
    }
    panic!("the consumer never joined {group}");
}

/// Commits `offsets[p]` for each partition `p` of `topic`.
pub fn commit(consumer: &BaseConsumer, topic: &str, offsets: &[i64]) {
    let mut tpl = TopicPartitionList::new();
    for (p, offset) in offsets.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(*offset))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

/// (low, high) watermarks of a partition, read by a client of the test's own.
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .unwrap()
}

pub fn partition<'a>(topic: &'a str, p: &'a str) -> [(&'a str, &'a str); 2] {
    [("topic", topic), ("partition", p)]
}

/// Waits until the agent reports `current` as the high watermark of `topic`'s partition 0.
pub async fn wait_current(agent: &TestAgent, topic: &str, current: i64) -> ResourceMetrics {
    eventually(Duration::from_secs(30), "the offsets reported", || {
        let m = agent.try_metrics()?;
        (gauge_one(&m, name::PARTITION_CURRENT_OFFSET, &partition(topic, "0")) == Some(current))
            .then_some(m)
    })
    .await
}
