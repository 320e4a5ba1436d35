//! ListOffsets for many partitions in one call: librdkafka sends one request per leader and
//! answers with every partition's offset (or its error) in one event.

use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{AdminError, Event, Handle, Options, Queue, admin_request, owned};

/// Which end of a partition's log to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset (the oldest record still kept).
    Earliest,
    /// The high watermark (the offset the next record will get).
    Latest,
}

/// One partition's offset, or the error the cluster gave for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: Result<i64, RDKafkaErrorCode>,
}

/// The offsets of `partitions` at `spec`, waiting up to `timeout`. Blocking: call it from
/// `spawn_blocking`.
pub fn list_offsets<C: ClientContext>(
    client: &Client<C>,
    partitions: &[(String, i32)],
    spec: OffsetSpec,
    timeout: Duration,
) -> Result<Vec<PartitionOffset>, AdminError> {
    const REQUEST: &str = "ListOffsets";
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    // librdkafka reads the spec from each partition's offset field: -2 earliest, -1 latest,
    // which is what `Beginning` and `End` stand for.
    let at = match spec {
        OffsetSpec::Earliest => Offset::Beginning,
        OffsetSpec::Latest => Offset::End,
    };
    let mut list = TopicPartitionList::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        list.add_partition_offset(topic, *partition, at)
            .map_err(|_| AdminError::Setup { request: REQUEST })?;
    }
    let op = rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTOFFSETS;
    let send = |rk: Handle, options: Options, queue: Queue| {
        // SAFETY: live handle, options and queue, and a live partition list that librdkafka
        // copies before returning.
        unsafe { rd::rd_kafka_ListOffsets(rk, list.ptr(), options, queue) }
    };
    let read = |event: Event| {
        // SAFETY: live event; the result and its infos belong to it.
        let result = unsafe { rd::rd_kafka_event_ListOffsets_result(event) };
        if result.is_null() {
            return Err(AdminError::UnexpectedEvent { request: REQUEST });
        }
        let mut count = 0usize;
        // SAFETY: live result; `count` receives the length of the returned array.
        let infos = unsafe { rd::rd_kafka_ListOffsets_result_infos(result, &mut count) };
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            // SAFETY: `infos` points to `count` info pointers owned by the result.
            let info = unsafe { *infos.add(i) };
            if info.is_null() {
                continue;
            }
            // SAFETY: a non-null info of the live result; its partition belongs to it.
            let tp = unsafe { rd::rd_kafka_ListOffsetsResultInfo_topic_partition(info) };
            if tp.is_null() {
                continue;
            }
            // SAFETY: a non-null partition of the live result, read field by field; the
            // topic name is copied at once.
            let (topic, partition, offset, err) = unsafe {
                let tp = &*tp;
                (owned(tp.topic), tp.partition, tp.offset, tp.err)
            };
            let offset = if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                Ok(offset)
            } else {
                Err(err.into())
            };
            out.push(PartitionOffset {
                topic: topic.unwrap_or_default(),
                partition,
                offset,
            });
        }
        Ok(out)
    };
    admin_request(client, REQUEST, op, timeout, send, read)
}
