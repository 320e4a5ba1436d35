//! The commit path of a consumer group, as librdkafka's admin API reaches it:
//! DescribeConsumerGroups (the group's coordinator and state; librdkafka finds the
//! coordinator with FindCoordinator when it has none cached) and AlterConsumerGroupOffsets
//! (an OffsetCommit to the coordinator, for a group without members). The read-back is
//! [`super::groups::committed_offsets`].

use std::ffi::{CString, c_char};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{
    AdminError, Event, Handle, Options, Queue, admin_request, error_of, first_group_partitions,
    owned,
};

/// A group's coordinator and state, as DescribeConsumerGroups answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupCoordinator {
    /// The coordinator broker's id, host, port and rack (when it has one).
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// `Empty` for a group that only commits, `Stable`, `Dead`, …
    pub state: String,
}

/// Describes `group` and returns its coordinator, waiting up to `timeout`. Blocking: call it
/// from `spawn_blocking`.
pub fn describe_group<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    timeout: Duration,
) -> Result<GroupCoordinator, AdminError> {
    const REQUEST: &str = "DescribeConsumerGroups";
    let name = CString::new(group).map_err(|_| AdminError::Setup { request: REQUEST })?;
    let op = rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS;
    let send = |rk: Handle, options: Options, queue: Queue| {
        let mut groups: [*const c_char; 1] = [name.as_ptr()];
        // SAFETY: live handle, options and queue; an array of one NUL-terminated name that
        // librdkafka copies.
        unsafe { rd::rd_kafka_DescribeConsumerGroups(rk, groups.as_mut_ptr(), 1, options, queue) }
    };
    let read = |event: Event| {
        // SAFETY: live event; the result and its descriptions belong to it.
        let result = unsafe { rd::rd_kafka_event_DescribeConsumerGroups_result(event) };
        if result.is_null() {
            return Err(AdminError::UnexpectedEvent { request: REQUEST });
        }
        let mut count = 0usize;
        // SAFETY: live result; `count` receives the length of the returned array.
        let groups =
            unsafe { rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count) };
        if count == 0 || groups.is_null() {
            return Err(AdminError::UnexpectedEvent { request: REQUEST });
        }
        // SAFETY: `groups` points to `count` (at least one) pointers owned by the result.
        let description = unsafe { *groups };
        if description.is_null() {
            return Err(AdminError::UnexpectedEvent { request: REQUEST });
        }
        // SAFETY: a non-null description of the live event.
        let error = unsafe { rd::rd_kafka_ConsumerGroupDescription_error(description) };
        if !error.is_null() {
            // SAFETY: non-null, owned by the live event.
            return Err(unsafe { error_of(REQUEST, error) });
        }
        // SAFETY (all four): the description and its coordinator node belong to the live
        // event; the state name is a static string; strings are copied at once.
        let (state, node) = unsafe {
            let state = rd::rd_kafka_ConsumerGroupDescription_state(description);
            (
                owned(rd::rd_kafka_consumer_group_state_name(state)),
                rd::rd_kafka_ConsumerGroupDescription_coordinator(description),
            )
        };
        if node.is_null() {
            return Err(AdminError::UnexpectedEvent { request: REQUEST });
        }
        // SAFETY: a non-null node of the live event; its strings are copied at once.
        let coordinator = unsafe {
            GroupCoordinator {
                id: rd::rd_kafka_Node_id(node),
                host: owned(rd::rd_kafka_Node_host(node)).unwrap_or_default(),
                port: rd::rd_kafka_Node_port(node),
                rack: owned(rd::rd_kafka_Node_rack(node)).filter(|r| !r.is_empty()),
                state: state.unwrap_or_default(),
            }
        };
        Ok(coordinator)
    };
    admin_request(client, REQUEST, op, timeout, send, read)
}

/// Frees the request object however the call ends.
struct AlterRequest(*mut rd::rd_kafka_AlterConsumerGroupOffsets_t);

impl Drop for AlterRequest {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by rd_kafka_AlterConsumerGroupOffsets_new, owned here only,
            // destroyed once.
            unsafe { rd::rd_kafka_AlterConsumerGroupOffsets_destroy(self.0) };
        }
    }
}

/// Commits `offset` for `topic`/`partition` in `group` (a group without members), waiting up
/// to `timeout`. Blocking: call it from `spawn_blocking`.
pub fn commit_offset<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    timeout: Duration,
) -> Result<(), AdminError> {
    const REQUEST: &str = "AlterConsumerGroupOffsets";
    let name = CString::new(group).map_err(|_| AdminError::Setup { request: REQUEST })?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(|_| AdminError::Setup { request: REQUEST })?;
    // SAFETY: `name` is NUL-terminated and the list is live; librdkafka copies both.
    let request = AlterRequest(unsafe {
        rd::rd_kafka_AlterConsumerGroupOffsets_new(name.as_ptr(), list.ptr())
    });
    if request.0.is_null() {
        return Err(AdminError::Setup { request: REQUEST });
    }
    let op = rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS;
    let send = |rk: Handle, options: Options, queue: Queue| {
        let mut requests = [request.0];
        // SAFETY: live handle, options and queue, and an array of one live request;
        // librdkafka copies what it needs.
        unsafe {
            rd::rd_kafka_AlterConsumerGroupOffsets(rk, requests.as_mut_ptr(), 1, options, queue)
        }
    };
    let read = |event: Event| {
        // SAFETY: live event; the result, its groups and their partitions belong to it.
        let result = unsafe { rd::rd_kafka_event_AlterConsumerGroupOffsets_result(event) };
        if result.is_null() {
            return Err(AdminError::UnexpectedEvent { request: REQUEST });
        }
        let mut count = 0usize;
        // SAFETY: live result; `count` receives the length of the returned array.
        let groups =
            unsafe { rd::rd_kafka_AlterConsumerGroupOffsets_result_groups(result, &mut count) };
        // SAFETY: just returned by the live result, with its count.
        let list = unsafe { first_group_partitions(REQUEST, groups, count) }?;
        if list.is_null() {
            return Ok(());
        }
        // SAFETY: a non-null list of the live result.
        let (cnt, elems) = unsafe { ((*list).cnt, (*list).elems) };
        for i in 0..usize::try_from(cnt).unwrap_or(0) {
            // SAFETY: `elems` holds `cnt` partitions owned by the list.
            let err = unsafe { (*elems.add(i)).err };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                let code: RDKafkaErrorCode = err.into();
                return Err(AdminError::Failed {
                    request: REQUEST,
                    message: code.to_string(),
                    code,
                });
            }
        }
        Ok(())
    };
    admin_request(client, REQUEST, op, timeout, send, read)
}
