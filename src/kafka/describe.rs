//! librdkafka calls the rdkafka crate does not wrap: DescribeCluster (every broker with its
//! rack, the controller, the cluster id) and the controller id from cached metadata.
//!
//! The only module with `unsafe`. Each `unsafe` block holds one foreign call (or one read of
//! memory librdkafka hands out) and states why it is sound; everything around it is safe code.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::RDKafkaErrorCode;

use crate::error::TimedOut;

/// What DescribeCluster reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: Option<String>,
    pub controller: Option<i32>,
    pub nodes: Vec<Node>,
}

/// One broker as DescribeCluster reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
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

#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    #[error("DescribeCluster got no answer")]
    Timeout(#[source] TimedOut),
    #[error("librdkafka could not create the DescribeCluster request")]
    Setup,
    #[error("DescribeCluster failed: {message}")]
    Failed {
        message: String,
        #[source]
        code: RDKafkaErrorCode,
    },
    #[error("DescribeCluster answered with an unexpected event")]
    UnexpectedEvent,
    #[error("the DescribeCluster request did not run")]
    Task(#[source] tokio::task::JoinError),
}

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

/// Frees what a DescribeCluster call allocated, however the call ends.
struct Resources {
    queue: *mut rd::rd_kafka_queue_t,
    options: *mut rd::rd_kafka_AdminOptions_t,
    event: *mut rd::rd_kafka_event_t,
}

impl Drop for Resources {
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

/// Sends DescribeCluster and waits up to `timeout` for the answer. Blocking: call it from
/// `spawn_blocking`.
pub fn describe_cluster<C: ClientContext>(
    client: &Client<C>,
    timeout: Duration,
) -> Result<ClusterDescription, DescribeError> {
    // `rk` is the live handle of `client`, borrowed for the whole call.
    let rk = client.native_ptr();
    let op = rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECLUSTER;
    let mut res = Resources {
        // SAFETY: `rk` is a live client handle; the queue is freed by `Resources`.
        queue: unsafe { rd::rd_kafka_queue_new(rk) },
        // SAFETY: as above; the options are freed by `Resources`.
        options: unsafe { rd::rd_kafka_AdminOptions_new(rk, op) },
        event: std::ptr::null_mut(),
    };
    if res.queue.is_null() || res.options.is_null() {
        return Err(DescribeError::Setup);
    }
    let mut errstr = [0 as c_char; 256];
    // SAFETY: live options; `errstr` is writable for its stated length. A bad timeout only
    // leaves the default in place, so the result is not needed.
    unsafe {
        rd::rd_kafka_AdminOptions_set_request_timeout(
            res.options,
            millis(timeout),
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    // SAFETY: live handle, options and queue; librdkafka copies what it needs from them.
    unsafe { rd::rd_kafka_DescribeCluster(rk, res.options, res.queue) };
    let wait = millis(timeout + Duration::from_millis(500));
    // SAFETY: live queue; the event returned is owned by `res` and destroyed with it.
    res.event = unsafe { rd::rd_kafka_queue_poll(res.queue, wait) };
    if res.event.is_null() {
        return Err(DescribeError::Timeout(TimedOut {
            what: "no answer",
            after: timeout,
        }));
    }
    // SAFETY: live event.
    let code = unsafe { rd::rd_kafka_event_error(res.event) };
    if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: the error string belongs to the live event and is copied at once.
        let message = unsafe { owned(rd::rd_kafka_event_error_string(res.event)) };
        return Err(DescribeError::Failed {
            message: message.unwrap_or_default(),
            code: code.into(),
        });
    }
    // SAFETY: live event; the result, and everything reached from it below, belongs to the
    // event, which outlives this function's reads of it.
    let result = unsafe { rd::rd_kafka_event_DescribeCluster_result(res.event) };
    if result.is_null() {
        return Err(DescribeError::UnexpectedEvent);
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
}

/// Copies one node out of a DescribeCluster result.
///
/// # Safety
/// `node` must be a non-null node of a result whose event is still alive.
unsafe fn node_of(node: *const rd::rd_kafka_Node_t) -> Node {
    // SAFETY (all four): per this function's contract; the strings are copied at once.
    let id = unsafe { rd::rd_kafka_Node_id(node) };
    let host = unsafe { owned(rd::rd_kafka_Node_host(node)) };
    let port = unsafe { rd::rd_kafka_Node_port(node) };
    let rack = unsafe { owned(rd::rd_kafka_Node_rack(node)) };
    Node {
        id,
        host: host.unwrap_or_default(),
        port,
        rack: rack.filter(|r| !r.is_empty()),
    }
}

/// The controller id from the client's metadata (fetching it when not cached), if known.
/// Blocking: call it from `spawn_blocking`.
pub fn controller_id<C: ClientContext>(client: &Client<C>, timeout: Duration) -> Option<i32> {
    // SAFETY: the handle of a live client; the call only reads its metadata cache.
    let id = unsafe { rd::rd_kafka_controllerid(client.native_ptr(), millis(timeout)) };
    (id >= 0).then_some(id)
}
