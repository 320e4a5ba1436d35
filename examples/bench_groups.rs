#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a bench helper: it fails loudly and reports on stdout

//! What `bench/groups` measures the consumer group check against: GROUPS consumer groups,
//! each with offsets committed half-way into every partition of TOPIC (which must exist),
//! after RECORDS records were written to each partition.
//!
//!   cargo run --release --example bench_groups -- BOOTSTRAP TOPIC PARTITIONS RECORDS GROUPS
//!
//! Prints `listed N`: how many of the groups the cluster lists (ListGroups).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, topic, partitions, records, groups] = args.as_slice() else {
        panic!("usage: bench_groups BOOTSTRAP TOPIC PARTITIONS RECORDS GROUPS");
    };
    let partitions: i32 = partitions.parse().unwrap();
    let records: i64 = records.parse().unwrap();
    let groups: usize = groups.parse().unwrap();

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for p in 0..partitions {
        for i in 0..records {
            let payload = format!("record {i}");
            // A full queue refuses the record: serve deliveries, then send it again.
            while producer
                .send(
                    BaseRecord::<(), _>::to(topic)
                        .partition(p)
                        .payload(&payload),
                )
                .is_err()
            {
                producer.poll(Duration::from_millis(10));
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    for g in 0..groups {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("bench-group-{g:03}"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Offset(records / 2))
                .unwrap();
        }
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
    }
    let lister: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let listed = lister
        .fetch_group_list(None, Duration::from_secs(10))
        .unwrap()
        .groups()
        .iter()
        .filter(|g| g.name().starts_with("bench-group-"))
        .count();
    println!("listed {listed}");
}
