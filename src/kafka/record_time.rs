//! The time stamp of the record at a given offset of each of many partitions: what lag in
//! seconds is measured from. One consumer per cluster, kept for the agent's life, is assigned
//! the partitions of a round, reads the first record at each offset and nothing more, and is
//! unassigned again: no client is built and destroyed every round (a destroy that cut an
//! authentication short was logged as a failure of it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message as _, Timestamp};
use rdkafka::{Offset, TopicPartitionList};

use super::{AgentContext, ClientTiming, Role, client_config, drop_off_runtime};
use crate::config::ClusterConfig;
use crate::error::BuildError;

/// One partition to read: topic, partition, offset of the record wanted.
pub type At = (String, i32, i64);

/// The record reader of a cluster; cheap to clone (clones share the client). The last clone
/// dropped destroys the client off the runtime's worker threads.
#[derive(Clone)]
pub struct RecordReader {
    consumer: Arc<Reader>,
}

/// The client, and a lock that keeps rounds apart (a round cut by its bound may still be
/// reading when the next one starts).
struct Reader(Option<BaseConsumer<AgentContext>>, Mutex<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            drop_off_runtime(consumer);
        }
    }
}

impl RecordReader {
    pub fn new(cluster: &ClusterConfig, timing: ClientTiming) -> Result<Self, BuildError> {
        // librdkafka assigns partitions only with a group id; this one never joins or commits.
        let consumer: BaseConsumer<AgentContext> =
            client_config(cluster, Role::RecordReader, timing)
                .set(
                    "group.id",
                    format!(
                        "cc-heartbeat-lag-{:016x}",
                        uuid::Uuid::new_v4().as_u64_pair().0
                    ),
                )
                .create_with_context(AgentContext::new(cluster, Role::RecordReader))
                .map_err(|source| BuildError::KafkaClient {
                    cluster: cluster.name.clone(),
                    role: Role::RecordReader.as_str(),
                    source,
                })?;
        Ok(Self {
            consumer: Arc::new(Reader(Some(consumer), Mutex::new(()))),
        })
    }

    /// The time stamps (milliseconds since the epoch) of the records at `wanted`, as far as
    /// they arrive within `deadline`. Partitions whose record did not arrive, or has no time
    /// stamp, are missing from the answer. Blocking: call it from `spawn_blocking`.
    pub fn record_times(
        &self,
        wanted: &[At],
        deadline: Duration,
    ) -> Result<BTreeMap<(String, i32), i64>, KafkaError> {
        let mut times = BTreeMap::new();
        let Some(consumer) = self.consumer.0.as_ref() else {
            return Ok(times);
        };
        if wanted.is_empty() {
            return Ok(times);
        }
        let _round = self.consumer.1.lock().unwrap_or_else(|e| e.into_inner());
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
            // compacted or deleted) counts; the rest of its batch, and anything left from an
            // earlier round, is skipped.
            let Some(&from) = first_offset.get(&key) else {
                continue;
            };
            if times.contains_key(&key) || message.offset() < from {
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
        // Nothing is fetched between rounds.
        consumer.unassign()?;
        Ok(times)
    }
}
