//! The time stamp of the record at a given offset of each of many partitions: what lag in
//! seconds is measured from. A consumer of its own, made for one round and dropped after it,
//! reads the first record at each offset and nothing more.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message as _, Timestamp};
use rdkafka::{Offset, TopicPartitionList};

use super::{AgentContext, ClientTiming, Role, client_config};
use crate::config::ClusterConfig;

/// One partition to read: topic, partition, offset of the record wanted.
pub type At = (String, i32, i64);

/// The time stamps (milliseconds since the epoch) of the records at `wanted`, as far as they
/// arrive within `deadline`. Partitions whose record did not arrive, or has no time stamp, are
/// missing from the answer. Blocking: call it from `spawn_blocking`.
pub fn record_times(
    cluster: &ClusterConfig,
    timing: ClientTiming,
    wanted: &[At],
    deadline: Duration,
) -> Result<BTreeMap<(String, i32), i64>, KafkaError> {
    let mut times = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(times);
    }
    // librdkafka assigns partitions only with a group id; this one never joins or commits.
    let consumer: BaseConsumer<AgentContext> = client_config(cluster, Role::RecordReader, timing)
        .set(
            "group.id",
            format!(
                "cc-heartbeat-lag-{:016x}",
                uuid::Uuid::new_v4().as_u64_pair().0
            ),
        )
        .create_with_context(AgentContext::new(cluster, Role::RecordReader))?;
    let mut assignment = TopicPartitionList::with_capacity(wanted.len());
    let mut first_offset = BTreeMap::new();
    for (topic, partition, offset) in wanted {
        assignment.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        first_offset.insert((topic.clone(), *partition), *offset);
    }
    consumer.assign(&assignment)?;
    let until = Instant::now() + deadline;
    while times.len() < first_offset.len() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Some(result) = consumer.poll(left) else {
            continue;
        };
        // Fetch errors (a partition gone, a broker away) leave that partition unanswered.
        let Ok(message) = result else { continue };
        let key = (message.topic().to_owned(), message.partition());
        // Only the record at the offset asked for (or the first after it, when it was
        // compacted or deleted) counts; the rest of its batch is skipped.
        if times.contains_key(&key) || !first_offset.contains_key(&key) {
            continue;
        }
        match message.timestamp() {
            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) if ms >= 0 => {
                times.insert(key, ms);
            }
            _ => {
                first_offset.remove(&key);
            }
        }
    }
    Ok(times)
}
