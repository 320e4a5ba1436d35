//! librdkafka calls the rdkafka crate does not wrap: DescribeCluster (every broker with its
//! rack, the controller, the cluster id) and the controller id from cached metadata.
//!
//! The only module with `unsafe`: each block states why it is sound.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

/// What DescribeCluster reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: Option<String>,
    pub controller: Option<i32>,
    /// (id, host, port, rack).
    pub nodes: Vec<(i32, String, u16, Option<String>)>,
}

impl ClusterDescription {
    /// Racks by broker id, for the brokers that report one.
    pub fn racks(&self) -> std::collections::BTreeMap<i32, String> {
        self.nodes
            .iter()
            .filter_map(|(id, _, _, rack)| Some((*id, rack.clone()?)))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
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
    Some(
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Frees what a DescribeCluster call allocated, however the call ends.
struct Resources {
    queue: *mut rd::rd_kafka_queue_t,
    options: *mut rd::rd_kafka_AdminOptions_t,
    event: *mut rd::rd_kafka_event_t,
}

impl Drop for Resources {
    fn drop(&mut self) {
        // SAFETY: each pointer is NULL or was returned by the matching librdkafka constructor,
        // is owned here only, and is destroyed once.
        unsafe {
            if !self.event.is_null() {
                rd::rd_kafka_event_destroy(self.event);
            }
            if !self.options.is_null() {
                rd::rd_kafka_AdminOptions_destroy(self.options);
            }
            if !self.queue.is_null() {
                rd::rd_kafka_queue_destroy(self.queue);
            }
        }
    }
}

/// Sends DescribeCluster and waits up to `timeout` for the answer. Blocking: call it from
/// `spawn_blocking`.
pub fn describe_cluster<C: ClientContext>(
    client: &Client<C>,
    timeout: Duration,
) -> Result<ClusterDescription, DescribeError> {
    let rk = client.native_ptr();
    // SAFETY: `rk` is the live handle of `client`, borrowed for the whole call. Every object
    // created here is freed by `Resources`; the result and the nodes it points to belong to
    // the event, which is destroyed only after they have been copied out.
    unsafe {
        let mut res = Resources {
            queue: rd::rd_kafka_queue_new(rk),
            options: rd::rd_kafka_AdminOptions_new(
                rk,
                rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECLUSTER,
            ),
            event: std::ptr::null_mut(),
        };
        if res.queue.is_null() || res.options.is_null() {
            return Err(DescribeError::Failed(
                "librdkafka could not create the request".into(),
            ));
        }
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            res.options,
            millis(timeout),
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        rd::rd_kafka_DescribeCluster(rk, res.options, res.queue);
        res.event =
            rd::rd_kafka_queue_poll(res.queue, millis(timeout + Duration::from_millis(500)));
        if res.event.is_null() {
            return Err(DescribeError::Timeout(timeout));
        }
        if rd::rd_kafka_event_error(res.event)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            let text = owned(rd::rd_kafka_event_error_string(res.event)).unwrap_or_default();
            return Err(DescribeError::Failed(text));
        }
        let result = rd::rd_kafka_event_DescribeCluster_result(res.event);
        if result.is_null() {
            return Err(DescribeError::Failed("unexpected event type".into()));
        }
        let mut count = 0usize;
        let nodes = rd::rd_kafka_DescribeCluster_result_nodes(result, &mut count);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let node = *nodes.add(i);
            if node.is_null() {
                continue;
            }
            out.push((
                rd::rd_kafka_Node_id(node),
                owned(rd::rd_kafka_Node_host(node)).unwrap_or_default(),
                rd::rd_kafka_Node_port(node),
                owned(rd::rd_kafka_Node_rack(node)).filter(|r| !r.is_empty()),
            ));
        }
        let controller = rd::rd_kafka_DescribeCluster_result_controller(result);
        Ok(ClusterDescription {
            cluster_id: owned(rd::rd_kafka_DescribeCluster_result_cluster_id(result)),
            controller: (!controller.is_null()).then(|| rd::rd_kafka_Node_id(controller)),
            nodes: out,
        })
    }
}

/// The controller id from the client's metadata (fetching it when not cached), if known.
/// Blocking: call it from `spawn_blocking`.
pub fn controller_id<C: ClientContext>(client: &Client<C>, timeout: Duration) -> Option<i32> {
    // SAFETY: `rk` is the live handle of `client`; the call only reads its metadata cache.
    let id = unsafe { rd::rd_kafka_controllerid(client.native_ptr(), millis(timeout)) };
    (id >= 0).then_some(id)
}
