//! librdkafka calls the rdkafka crate does not wrap, made on the handle of a client the agent
//! already has (its producer), so cluster-level requests need no client of their own:
//! DescribeCluster (every broker with its rack, the controller, the cluster id),
//! DescribeTopics (the heartbeat topic's id), CreateTopics, the controller id from cached
//! metadata, and the broker a produced message went to; ListOffsets in [`offsets`], a
//! group's committed offsets in [`groups`], a group's coordinator and a commit in
//! [`coordinator`].
//!
//! With its submodules and `heap.rs`, the only code with `unsafe`. Each `unsafe` block holds one foreign call (or one read of
//! memory librdkafka hands out) and states why it is sound; everything around it is safe code.
#![allow(unsafe_code)]

pub mod coordinator;
pub mod groups;
pub mod offsets;
pub mod queue;

use std::ffi::{CStr, CString, c_char};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::RDKafkaErrorCode;

use super::metadata::Broker;
use crate::error::TimedOut;

/// What DescribeCluster reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: Option<String>,
    pub controller: Option<i32>,
    pub nodes: Vec<Broker>,
}

impl ClusterDescription {
    /// Racks by broker id, for the brokers that report one.
    pub fn racks(&self) -> std::collections::BTreeMap<i32, String> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.id, n.rack.clone()?)))
            .collect()
    }
}

/// An admin request made through librdkafka's raw API that failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{request} got no answer")]
    Timeout {
        request: &'static str,
        #[source]
        source: TimedOut,
    },
    #[error("librdkafka could not create the {request} request")]
    Setup { request: &'static str },
    #[error("{request} failed: {message}")]
    Failed {
        request: &'static str,
        message: String,
        #[source]
        code: RDKafkaErrorCode,
    },
    #[error("{request} answered with an unexpected event")]
    UnexpectedEvent { request: &'static str },
    #[error("the {request} request did not run")]
    Task {
        request: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

type Handle = *mut rd::rd_kafka_t;
type Options = *mut rd::rd_kafka_AdminOptions_t;
type Queue = *mut rd::rd_kafka_queue_t;
type Event = *mut rd::rd_kafka_event_t;

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// Copies a C string that librdkafka owns; `None` for NULL.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string valid for this call.
unsafe fn owned(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per this function's contract.
    let text = unsafe { CStr::from_ptr(ptr) };
    Some(text.to_string_lossy().into_owned())
}

/// A librdkafka error object (owned by a live result) as an [`AdminError`].
///
/// # Safety
/// `error` is non-null and owned by a result that outlives this call.
unsafe fn error_of(request: &'static str, error: *const rd::rd_kafka_error_t) -> AdminError {
    // SAFETY (both): per this function's contract; the text is copied at once.
    let code: RDKafkaErrorCode = unsafe { rd::rd_kafka_error_code(error) }.into();
    let message = unsafe { owned(rd::rd_kafka_error_string(error)) };
    AdminError::Failed {
        request,
        message: message.unwrap_or_default(),
        code,
    }
}

/// The partition list (possibly NULL) of the first group result of a group admin answer, once
/// that result's own error is checked.
///
/// # Safety
/// `groups` and `count` are what a live result's `…_result_groups` call returned: `groups`
/// points to `count` group results owned by that result, which outlives the list.
unsafe fn first_group_partitions(
    request: &'static str,
    groups: *mut *const rd::rd_kafka_group_result_t,
    count: usize,
) -> Result<*const rd::rd_kafka_topic_partition_list_t, AdminError> {
    if count == 0 || groups.is_null() {
        return Err(AdminError::UnexpectedEvent { request });
    }
    // SAFETY: `groups` points to `count` (at least one) pointers, per the contract.
    let first = unsafe { *groups };
    if first.is_null() {
        return Err(AdminError::UnexpectedEvent { request });
    }
    // SAFETY: a non-null group result of the live result.
    let error = unsafe { rd::rd_kafka_group_result_error(first) };
    if !error.is_null() {
        // SAFETY: non-null, owned by the live result.
        return Err(unsafe { error_of(request, error) });
    }
    // SAFETY: as above; the list (or NULL) belongs to the group result.
    Ok(unsafe { rd::rd_kafka_group_result_partitions(first) })
}

/// Frees what an admin request allocated, however the call ends.
struct Request {
    queue: *mut rd::rd_kafka_queue_t,
    options: *mut rd::rd_kafka_AdminOptions_t,
    event: *mut rd::rd_kafka_event_t,
}

impl Drop for Request {
    fn drop(&mut self) {
        // SAFETY (all three): each pointer is NULL or was returned by the matching librdkafka
        // constructor, is owned here only, and is destroyed once.
        if !self.event.is_null() {
            unsafe { rd::rd_kafka_event_destroy(self.event) };
        }
        if !self.options.is_null() {
            unsafe { rd::rd_kafka_AdminOptions_destroy(self.options) };
        }
        if !self.queue.is_null() {
            unsafe { rd::rd_kafka_queue_destroy(self.queue) };
        }
    }
}

/// Makes one admin request on `client`'s handle and waits up to `timeout` for its answer.
/// `send` issues it (given the handle, options carrying the timeout, and the reply queue);
/// `read` copies what is needed out of the answer's event, which is freed afterwards.
/// Blocking: call it from `spawn_blocking`.
fn admin_request<C: ClientContext, T>(
    client: &Client<C>,
    request: &'static str,
    op: rd::rd_kafka_admin_op_t,
    timeout: Duration,
    send: impl FnOnce(Handle, Options, Queue),
    read: impl FnOnce(Event) -> Result<T, AdminError>,
) -> Result<T, AdminError> {
    // `rk` is the live handle of `client`, borrowed for the whole call.
    let rk = client.native_ptr();
    let mut req = Request {
        // SAFETY: `rk` is a live client handle; the queue is freed by `Request`.
        queue: unsafe { rd::rd_kafka_queue_new(rk) },
        // SAFETY: as above; the options are freed by `Request`.
        options: unsafe { rd::rd_kafka_AdminOptions_new(rk, op) },
        event: std::ptr::null_mut(),
    };
    if req.queue.is_null() || req.options.is_null() {
        return Err(AdminError::Setup { request });
    }
    let mut errstr = [0 as c_char; 256];
    // SAFETY: live options; `errstr` is writable for its stated length. A bad timeout only
    // leaves the default in place, so the result is not needed.
    unsafe {
        rd::rd_kafka_AdminOptions_set_request_timeout(
            req.options,
            millis(timeout),
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    send(rk, req.options, req.queue);
    let wait = millis(timeout + Duration::from_millis(500));
    // SAFETY: live queue; the event returned is owned by `req` and destroyed with it.
    req.event = unsafe { rd::rd_kafka_queue_poll(req.queue, wait) };
    if req.event.is_null() {
        return Err(AdminError::Timeout {
            request,
            source: TimedOut {
                what: "no answer",
                after: timeout,
            },
        });
    }
    // SAFETY: live event.
    let code = unsafe { rd::rd_kafka_event_error(req.event) };
    if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: the error string belongs to the live event and is copied at once.
        let message = unsafe { owned(rd::rd_kafka_event_error_string(req.event)) };
        return Err(AdminError::Failed {
            request,
            message: message.unwrap_or_default(),
            code: code.into(),
        });
    }
    read(req.event)
}

/// Sends DescribeCluster and waits up to `timeout` for the answer. Blocking: call it from
/// `spawn_blocking`.
pub fn describe_cluster<C: ClientContext>(
    client: &Client<C>,
    timeout: Duration,
) -> Result<ClusterDescription, AdminError> {
    const REQUEST: &str = "DescribeCluster";
    let op = rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECLUSTER;
    let send = |rk: Handle, options: Options, queue: Queue| {
        // SAFETY: live handle, options and queue; librdkafka copies what it needs.
        unsafe { rd::rd_kafka_DescribeCluster(rk, options, queue) }
    };
    let read = |event: Event| {
        // SAFETY: live event; the result, and everything reached from it below, belongs to
        // the event, which outlives these reads.
        let result = unsafe { rd::rd_kafka_event_DescribeCluster_result(event) };
        if result.is_null() {
            return Err(AdminError::UnexpectedEvent { request: REQUEST });
        }
        let mut count = 0usize;
        // SAFETY: live result; `count` receives the length of the returned array.
        let nodes = unsafe { rd::rd_kafka_DescribeCluster_result_nodes(result, &mut count) };
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            // SAFETY: `nodes` points to `count` node pointers owned by the result.
            let node = unsafe { *nodes.add(i) };
            if !node.is_null() {
                // SAFETY: a non-null node of the live result.
                out.push(unsafe { node_of(node) });
            }
        }
        // SAFETY: live result; the controller node (or NULL) belongs to it.
        let controller = unsafe { rd::rd_kafka_DescribeCluster_result_controller(result) };
        // SAFETY: live result; its cluster id string is copied at once.
        let cluster_id = unsafe { owned(rd::rd_kafka_DescribeCluster_result_cluster_id(result)) };
        Ok(ClusterDescription {
            cluster_id,
            // SAFETY: a non-null node of the live result.
            controller: (!controller.is_null()).then(|| unsafe { node_of(controller) }.id),
            nodes: out,
        })
    };
    admin_request(client, REQUEST, op, timeout, send, read)
}

/// Copies one node out of a DescribeCluster result.
///
/// # Safety
/// `node` must be a non-null node of a result whose event is still alive.
unsafe fn node_of(node: *const rd::rd_kafka_Node_t) -> Broker {
    // SAFETY (all four): per this function's contract; the strings are copied at once.
    let id = unsafe { rd::rd_kafka_Node_id(node) };
    let host = unsafe { owned(rd::rd_kafka_Node_host(node)) };
    let port = unsafe { rd::rd_kafka_Node_port(node) };
    let rack = unsafe { owned(rd::rd_kafka_Node_rack(node)) };
    Broker {
        id,
        host: host.unwrap_or_default(),
        port,
        rack: rack.filter(|r| !r.is_empty()),
    }
}

/// The id of `topic`, from DescribeTopics; `None` when the topic does not exist or the
/// cluster reports no id. Blocking: call it from `spawn_blocking`.
pub fn topic_id<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<u128>, AdminError> {
    const REQUEST: &str = "DescribeTopics";
    let Ok(name) = CString::new(topic) else {
        return Ok(None);
    };
    let mut names = [name.as_ptr()];
    // SAFETY: `names` holds one pointer to a NUL-terminated string that outlives the call;
    // librdkafka copies the names. The collection is destroyed below.
    let topics = unsafe { rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1) };
    if topics.is_null() {
        return Err(AdminError::Setup { request: REQUEST });
    }
    let op = rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS;
    let send = |rk: Handle, options: Options, queue: Queue| {
        // SAFETY: live handle, options, queue and collection; librdkafka copies what it needs.
        unsafe { rd::rd_kafka_DescribeTopics(rk, topics, options, queue) }
    };
    let read = |event: Event| {
        // SAFETY: live event; the result and its descriptions belong to it.
        let result = unsafe { rd::rd_kafka_event_DescribeTopics_result(event) };
        if result.is_null() {
            return Err(AdminError::UnexpectedEvent { request: REQUEST });
        }
        let mut count = 0usize;
        // SAFETY: live result; `count` receives the length of the returned array.
        let descriptions = unsafe { rd::rd_kafka_DescribeTopics_result_topics(result, &mut count) };
        if count == 0 {
            return Ok(None);
        }
        // SAFETY: `descriptions` points to `count` (at least one) pointers owned by the result.
        let description = unsafe { *descriptions };
        if description.is_null() {
            return Ok(None);
        }
        // SAFETY: a non-null description of the live result.
        let error = unsafe { rd::rd_kafka_TopicDescription_error(description) };
        if !error.is_null() {
            // A topic that does not exist (or may not be described) has no id to report.
            return Ok(None);
        }
        // SAFETY: as above; the id (or NULL) belongs to the description.
        let id = unsafe { rd::rd_kafka_TopicDescription_topic_id(description) };
        if id.is_null() {
            return Ok(None);
        }
        // SAFETY (both): a non-null id of the live description.
        let high = unsafe { rd::rd_kafka_Uuid_most_significant_bits(id) };
        let low = unsafe { rd::rd_kafka_Uuid_least_significant_bits(id) };
        let id = (u128::from(high as u64) << 64) | u128::from(low as u64);
        Ok((id != 0).then_some(id))
    };
    let result = admin_request(client, REQUEST, op, timeout, send, read);
    // SAFETY: created above, not used after this, destroyed once.
    unsafe { rd::rd_kafka_TopicCollection_destroy(topics) };
    result
}

/// The broker a delivered (or failed) message was produced to, as librdkafka reports it.
pub fn message_broker(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<i32> {
    // SAFETY: the pointer of a message borrowed for this call; the call only reads it.
    let id = unsafe { rd::rd_kafka_message_broker_id(message.ptr()) };
    (id >= 0).then_some(id)
}

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Topic configs, e.g. `retention.ms`.
    pub configs: Vec<(String, String)>,
}

/// Frees a NewTopic however the call ends.
struct NewTopicHandle(*mut rd::rd_kafka_NewTopic_t);

impl Drop for NewTopicHandle {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by rd_kafka_NewTopic_new, owned here only, destroyed once.
            unsafe { rd::rd_kafka_NewTopic_destroy(self.0) };
        }
    }
}

/// Creates `topic` and waits up to `timeout` for the answer: the broker's error code for it,
/// `None` when it was created. Blocking: call it from `spawn_blocking`.
pub fn create_topic<C: ClientContext>(
    client: &Client<C>,
    topic: &NewTopic,
    timeout: Duration,
) -> Result<Option<RDKafkaErrorCode>, AdminError> {
    const REQUEST: &str = "CreateTopics";
    let setup = AdminError::Setup { request: REQUEST };
    let name =
        CString::new(topic.name.as_str()).map_err(|_| AdminError::Setup { request: REQUEST })?;
    let mut errstr = [0 as c_char; 256];
    // SAFETY: `name` is NUL-terminated and `errstr` writable for its length; librdkafka copies
    // the name. The result is freed by `NewTopicHandle`.
    let new_topic = NewTopicHandle(unsafe {
        rd::rd_kafka_NewTopic_new(
            name.as_ptr(),
            topic.partitions,
            topic.replication_factor,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    });
    if new_topic.0.is_null() {
        return Err(setup);
    }
    for (key, value) in &topic.configs {
        let (Ok(key), Ok(value)) = (CString::new(key.as_str()), CString::new(value.as_str()))
        else {
            return Err(AdminError::Setup { request: REQUEST });
        };
        // SAFETY: a live NewTopic and two NUL-terminated strings that librdkafka copies.
        unsafe { rd::rd_kafka_NewTopic_set_config(new_topic.0, key.as_ptr(), value.as_ptr()) };
    }
    let op = rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATETOPICS;
    let send = |rk: Handle, options: Options, queue: Queue| {
        let mut errstr = [0 as c_char; 256];
        // SAFETY: live options; `errstr` is writable for its length. A bad timeout leaves the
        // default in place.
        unsafe {
            rd::rd_kafka_AdminOptions_set_operation_timeout(
                options,
                millis(timeout),
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        let mut topics = [new_topic.0];
        // SAFETY: live handle, options and queue, and an array of one live NewTopic;
        // librdkafka copies what it needs.
        unsafe { rd::rd_kafka_CreateTopics(rk, topics.as_mut_ptr(), 1, options, queue) }
    };
    let read = |event: Event| {
        // SAFETY: live event; the result and its topic results belong to it.
        let result = unsafe { rd::rd_kafka_event_CreateTopics_result(event) };
        if result.is_null() {
            return Err(AdminError::UnexpectedEvent { request: REQUEST });
        }
        let mut count = 0usize;
        // SAFETY: live result; `count` receives the length of the returned array.
        let results = unsafe { rd::rd_kafka_CreateTopics_result_topics(result, &mut count) };
        if count == 0 {
            return Err(AdminError::UnexpectedEvent { request: REQUEST });
        }
        // SAFETY: `results` points to `count` (at least one) pointers owned by the result.
        let first = unsafe { *results };
        if first.is_null() {
            return Err(AdminError::UnexpectedEvent { request: REQUEST });
        }
        // SAFETY: a non-null topic result of the live event.
        let code = unsafe { rd::rd_kafka_topic_result_error(first) };
        Ok((code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| code.into()))
    };
    admin_request(client, REQUEST, op, timeout, send, read)
}

/// The controller id from the client's metadata (fetching it when not cached), if known.
/// Blocking: call it from `spawn_blocking`.
pub fn controller_id<C: ClientContext>(client: &Client<C>, timeout: Duration) -> Option<i32> {
    // SAFETY: the handle of a live client; the call only reads its metadata cache.
    let id = unsafe { rd::rd_kafka_controllerid(client.native_ptr(), millis(timeout)) };
    (id >= 0).then_some(id)
}
