//! ListConsumerGroupOffsets: a consumer group's committed offsets, for every partition it
//! committed to (librdkafka asks the group's coordinator).

use std::ffi::CString;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

use super::{
    AdminError, Event, Handle, Options, Queue, admin_request, first_group_partitions, owned,
};

/// One committed offset of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Frees the request object however the call ends.
struct GroupRequest(*mut rd::rd_kafka_ListConsumerGroupOffsets_t);

impl Drop for GroupRequest {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by rd_kafka_ListConsumerGroupOffsets_new, owned here only,
            // destroyed once.
            unsafe { rd::rd_kafka_ListConsumerGroupOffsets_destroy(self.0) };
        }
    }
}

/// The offsets `group` committed, waiting up to `timeout`. Partitions without a commit are
/// left out. Blocking: call it from `spawn_blocking`.
pub fn committed_offsets<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    timeout: Duration,
) -> Result<Vec<CommittedOffset>, AdminError> {
    const REQUEST: &str = "ListConsumerGroupOffsets";
    let name = CString::new(group).map_err(|_| AdminError::Setup { request: REQUEST })?;
    // SAFETY: `name` is NUL-terminated and copied by librdkafka; a NULL partition list asks
    // for every partition the group committed to.
    let request = GroupRequest(unsafe {
        rd::rd_kafka_ListConsumerGroupOffsets_new(name.as_ptr(), std::ptr::null())
    });
    if request.0.is_null() {
        return Err(AdminError::Setup { request: REQUEST });
    }
    let op = rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS;
    let send = |rk: Handle, options: Options, queue: Queue| {
        let mut requests = [request.0];
        // SAFETY: live handle, options and queue, and an array of one live request;
        // librdkafka copies what it needs.
        unsafe {
            rd::rd_kafka_ListConsumerGroupOffsets(rk, requests.as_mut_ptr(), 1, options, queue)
        }
    };
    let read = |event: Event| {
        // SAFETY: live event; the result, its groups and their partitions belong to it.
        let result = unsafe { rd::rd_kafka_event_ListConsumerGroupOffsets_result(event) };
        if result.is_null() {
            return Err(AdminError::UnexpectedEvent { request: REQUEST });
        }
        let mut count = 0usize;
        // SAFETY: live result; `count` receives the length of the returned array.
        let groups =
            unsafe { rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count) };
        // SAFETY: just returned by the live result, with its count.
        let list = unsafe { first_group_partitions(REQUEST, groups, count) }?;
        if list.is_null() {
            return Ok(Vec::new());
        }
        // SAFETY: a non-null list of the live result.
        let (cnt, elems) = unsafe { ((*list).cnt, (*list).elems) };
        let mut out = Vec::new();
        for i in 0..usize::try_from(cnt).unwrap_or(0) {
            // SAFETY: `elems` holds `cnt` partitions owned by the list; fields are read and
            // the topic name copied at once.
            let (topic, partition, offset, err) = unsafe {
                let tp = &*elems.add(i);
                (owned(tp.topic), tp.partition, tp.offset, tp.err)
            };
            // A negative offset is "no commit" (-1001).
            if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && offset >= 0 {
                out.push(CommittedOffset {
                    topic: topic.unwrap_or_default(),
                    partition,
                    offset,
                });
            }
        }
        Ok(out)
    };
    admin_request(client, REQUEST, op, timeout, send, read)
}

/// One consumer group as the brokers describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSummary {
    pub name: String,
    /// `Stable`, `Empty`, `Dead`, `PreparingRebalance`, …
    pub state: String,
    /// `consumer` for Kafka consumers; empty for a group that only has commits.
    pub protocol_type: String,
    pub members: usize,
}

/// Every consumer group, from every broker (ListGroups and DescribeGroups), waiting up to
/// `timeout`. `partial` is true when some broker did not answer in time. Blocking: call it
/// from `spawn_blocking`.
pub fn list_groups<C: ClientContext>(
    client: &Client<C>,
    timeout: Duration,
) -> Result<(Vec<GroupSummary>, bool), AdminError> {
    const REQUEST: &str = "ListGroups";
    let mut list: *const rd::rd_kafka_group_list = std::ptr::null();
    // SAFETY: the handle of a live client; `list` receives a list this function destroys.
    let code = unsafe {
        rd::rd_kafka_list_groups(
            client.native_ptr(),
            std::ptr::null(),
            &mut list,
            super::millis(timeout),
        )
    };
    let partial = code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTIAL;
    if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !partial {
        if !list.is_null() {
            // SAFETY: returned by rd_kafka_list_groups, destroyed once.
            unsafe { rd::rd_kafka_group_list_destroy(list) };
        }
        return Err(AdminError::Failed {
            request: REQUEST,
            message: "the brokers answered with an error".to_owned(),
            code: code.into(),
        });
    }
    if list.is_null() {
        return Ok((Vec::new(), partial));
    }
    // SAFETY: a non-null list returned above, alive until destroyed below.
    let (groups, count) = unsafe { ((*list).groups, (*list).group_cnt) };
    let mut out = Vec::new();
    for i in 0..usize::try_from(count).unwrap_or(0) {
        // SAFETY: `groups` holds `count` entries owned by the list; strings are copied.
        let group = unsafe {
            let g = &*groups.add(i);
            (g.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| GroupSummary {
                name: owned(g.group).unwrap_or_default(),
                state: owned(g.state).unwrap_or_default(),
                protocol_type: owned(g.protocol_type).unwrap_or_default(),
                members: usize::try_from(g.member_cnt).unwrap_or(0),
            })
        };
        out.extend(group.filter(|g| !g.name.is_empty()));
    }
    // SAFETY: returned by rd_kafka_list_groups, not used after this, destroyed once.
    unsafe { rd::rd_kafka_group_list_destroy(list) };
    Ok((out, partial))
}
