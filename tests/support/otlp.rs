//! An OTLP metrics, traces and logs receiver, over gRPC (tonic, opentelemetry-proto) or
//! HTTP/protobuf (axum): it decodes exactly what the agent sends over a real socket, keeps
//! every request with the time it came, and answers metrics as the test says: accept, accept
//! but refuse some points (partial success), refuse for good, or ask the sender to wait
//! (`RetryInfo`, `Retry-After`). Spans and log records are taken while metrics are, and
//! refused while they are refused or failed.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint, metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

/// How the receiver answers the next requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Accept,
    /// Takes the request but says it refused `rejected` points.
    PartlyRefuse {
        rejected: i64,
        message: String,
    },
    /// Refuses it for good: gRPC INVALID_ARGUMENT, HTTP 400.
    Refuse,
    /// Asks the sender to wait: gRPC RESOURCE_EXHAUSTED with a RetryInfo, HTTP 429 with
    /// Retry-After.
    Throttle {
        seconds: u64,
    },
    /// Fails it for now, to be sent again: gRPC UNAVAILABLE, HTTP 503 without Retry-After.
    Unavailable,
}

#[derive(Clone)]
struct Recorder {
    requests: Arc<Mutex<Vec<(Instant, ExportMetricsServiceRequest)>>>,
    headers: Arc<Mutex<Vec<tonic::metadata::MetadataMap>>>,
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    trace_headers: Arc<Mutex<Vec<tonic::metadata::MetadataMap>>>,
    logs: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
    answer: Arc<Mutex<Answer>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            requests: Arc::default(),
            headers: Arc::default(),
            traces: Arc::default(),
            trace_headers: Arc::default(),
            logs: Arc::default(),
            answer: Arc::new(Mutex::new(Answer::Accept)),
        }
    }
}

impl Recorder {
    /// Keeps a span request unless the receiver fails requests now; whether it took it.
    fn record_traces(&self, request: ExportTraceServiceRequest) -> bool {
        let taking = self.taking();
        if taking {
            self.traces.lock().unwrap().push(request);
        }
        taking
    }

    fn record_logs(&self, request: ExportLogsServiceRequest) -> bool {
        let taking = self.taking();
        if taking {
            self.logs.lock().unwrap().push(request);
        }
        taking
    }

    /// Whether spans and log records are taken now (while metrics are, even partly).
    fn taking(&self) -> bool {
        matches!(
            *self.answer.lock().unwrap(),
            Answer::Accept | Answer::PartlyRefuse { .. }
        )
    }
}

#[tonic::async_trait]
impl LogsService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        if self.record_logs(request.into_inner()) {
            Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
        } else {
            Err(tonic::Status::unavailable("away"))
        }
    }
}

/// `POST /v1/logs`.
async fn http_logs(
    axum::extract::State(recorder): axum::extract::State<Recorder>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let request = ExportLogsServiceRequest::decode(gunzipped(&headers, &body).as_slice()).unwrap();
    if recorder.record_logs(request) {
        (
            [("content-type", "application/x-protobuf")],
            ExportLogsServiceResponse::default().encode_to_vec(),
        )
            .into_response()
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "away").into_response()
    }
}

#[tonic::async_trait]
impl TraceService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.trace_headers
            .lock()
            .unwrap()
            .push(request.metadata().clone());
        if self.record_traces(request.into_inner()) {
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        } else {
            Err(tonic::Status::unavailable("away"))
        }
    }
}

/// `POST /v1/traces`.
async fn http_traces(
    axum::extract::State(recorder): axum::extract::State<Recorder>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let request = ExportTraceServiceRequest::decode(gunzipped(&headers, &body).as_slice()).unwrap();
    if recorder.record_traces(request) {
        (
            [("content-type", "application/x-protobuf")],
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
            .into_response()
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "away").into_response()
    }
}

/// A request body, gunzipped when its content encoding says gzip.
fn gunzipped(headers: &axum::http::HeaderMap, body: &[u8]) -> Vec<u8> {
    if headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip")
    {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut plain)
            .unwrap();
        plain
    } else {
        body.to_vec()
    }
}

impl Recorder {
    fn record(&self, request: ExportMetricsServiceRequest) -> Answer {
        self.requests
            .lock()
            .unwrap()
            .push((Instant::now(), request));
        self.answer.lock().unwrap().clone()
    }
}

fn partial(rejected: i64, message: &str) -> ExportMetricsServiceResponse {
    ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: rejected,
            error_message: message.to_owned(),
        }),
    }
}

/// A `google.rpc.Status` holding one `google.rpc.RetryInfo`, encoded field by field from the
/// protobuf definitions (independently of the agent's decoder).
fn retry_info_status(code: i32, seconds: u64) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let field = |tag: u32, bytes: &[u8], out: &mut Vec<u8>| {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    };
    let mut duration = Vec::new();
    encode_key(1, WireType::Varint, &mut duration);
    encode_varint(seconds, &mut duration);
    let mut retry_info = Vec::new();
    field(1, &duration, &mut retry_info);
    let mut any = Vec::new();
    field(1, b"type.googleapis.com/google.rpc.RetryInfo", &mut any);
    field(2, &retry_info, &mut any);
    let mut status = Vec::new();
    encode_key(1, WireType::Varint, &mut status);
    encode_varint(code as u64, &mut status);
    field(2, b"slow down", &mut status);
    field(3, &any, &mut status);
    status
}

#[tonic::async_trait]
impl MetricsService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.headers
            .lock()
            .unwrap()
            .push(request.metadata().clone());
        match self.record(request.into_inner()) {
            Answer::Accept => Ok(tonic::Response::new(ExportMetricsServiceResponse {
                partial_success: None,
            })),
            Answer::PartlyRefuse { rejected, message } => {
                Ok(tonic::Response::new(partial(rejected, &message)))
            }
            Answer::Refuse => Err(tonic::Status::invalid_argument("malformed")),
            Answer::Unavailable => Err(tonic::Status::unavailable("away")),
            Answer::Throttle { seconds } => Err(tonic::Status::with_details(
                tonic::Code::ResourceExhausted,
                "slow down",
                retry_info_status(tonic::Code::ResourceExhausted as i32, seconds).into(),
            )),
        }
    }
}

/// The HTTP receiver's handler: `POST /v1/metrics`, gzip or not.
async fn http_export(
    axum::extract::State(recorder): axum::extract::State<Recorder>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let request =
        ExportMetricsServiceRequest::decode(gunzipped(&headers, &body).as_slice()).unwrap();
    let protobuf = [("content-type", "application/x-protobuf")];
    match recorder.record(request) {
        Answer::Accept => (
            protobuf,
            ExportMetricsServiceResponse::default().encode_to_vec(),
        )
            .into_response(),
        Answer::PartlyRefuse { rejected, message } => {
            (protobuf, partial(rejected, &message).encode_to_vec()).into_response()
        }
        Answer::Refuse => (axum::http::StatusCode::BAD_REQUEST, "malformed").into_response(),
        Answer::Unavailable => {
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "away").into_response()
        }
        Answer::Throttle { seconds } => (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", seconds.to_string())],
            "slow down",
        )
            .into_response(),
    }
}

pub struct OtlpReceiver {
    pub addr: SocketAddr,
    recorder: Recorder,
    stop: CancellationToken,
    http: bool,
}

impl OtlpReceiver {
    /// Listens for OTLP/gRPC on `127.0.0.1:port` (0 for any free port).
    pub async fn start(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind OTLP receiver");
        let addr = listener.local_addr().unwrap();
        let recorder = Recorder::default();
        let stop = CancellationToken::new();
        let service = MetricsServiceServer::new(recorder.clone())
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let traces = TraceServiceServer::new(recorder.clone())
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let logs = LogsServiceServer::new(recorder.clone())
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .add_service(traces)
                .add_service(logs)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    shutdown,
                )
                .await
                .expect("OTLP receiver");
        });
        Self {
            addr,
            recorder,
            stop,
            http: false,
        }
    }

    /// Listens for OTLP/HTTP (protobuf) on a free port of 127.0.0.1.
    pub async fn start_http() -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind OTLP/HTTP receiver");
        let addr = listener.local_addr().unwrap();
        let recorder = Recorder::default();
        let stop = CancellationToken::new();
        let app = axum::Router::new()
            .route("/v1/metrics", axum::routing::post(http_export))
            .route("/v1/traces", axum::routing::post(http_traces))
            .route("/v1/logs", axum::routing::post(http_logs))
            .with_state(recorder.clone());
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .expect("OTLP/HTTP receiver");
        });
        Self {
            addr,
            recorder,
            stop,
            http: true,
        }
    }

    pub fn endpoint(&self) -> String {
        match self.http {
            false => format!("http://{}", self.addr),
            true => format!("http://{}/v1/metrics", self.addr),
        }
    }

    /// How to answer from now on.
    pub fn answer(&self, answer: Answer) {
        *self.recorder.answer.lock().unwrap() = answer;
    }

    pub fn requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.timed_requests().into_iter().map(|(_, r)| r).collect()
    }

    /// Every request with the time it came.
    pub fn timed_requests(&self) -> Vec<(Instant, ExportMetricsServiceRequest)> {
        self.recorder.requests.lock().unwrap().clone()
    }

    pub fn headers(&self) -> Vec<tonic::metadata::MetadataMap> {
        self.recorder.headers.lock().unwrap().clone()
    }

    /// The metadata of every span request over gRPC.
    pub fn trace_headers(&self) -> Vec<tonic::metadata::MetadataMap> {
        self.recorder.trace_headers.lock().unwrap().clone()
    }

    /// Every log record taken so far, with its resource's attributes.
    pub fn log_records(&self) -> Vec<(Vec<KeyValue>, LogRecord)> {
        self.recorder
            .logs
            .lock()
            .unwrap()
            .iter()
            .flat_map(|request| &request.resource_logs)
            .flat_map(|rl| {
                let resource = rl.resource.clone().unwrap_or_default().attributes;
                rl.scope_logs
                    .iter()
                    .flat_map(|sl| sl.log_records.iter().cloned())
                    .map(move |record| (resource.clone(), record))
            })
            .collect()
    }

    /// Every span taken so far, with its resource's attributes.
    pub fn spans(&self) -> Vec<(Vec<KeyValue>, Span)> {
        self.recorder
            .traces
            .lock()
            .unwrap()
            .iter()
            .flat_map(|request| &request.resource_spans)
            .flat_map(|rs| {
                let resource = rs.resource.clone().unwrap_or_default().attributes;
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| ss.spans.iter().cloned())
                    .map(move |span| (resource.clone(), span))
            })
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The longest gap between two requests that came after `since`.
pub fn longest_gap(
    requests: &[(Instant, ExportMetricsServiceRequest)],
    since: Instant,
) -> Duration {
    let times: Vec<Instant> = requests
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t >= since)
        .collect();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

pub fn string_value(v: &Option<AnyValue>) -> Option<String> {
    match v.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

pub fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string_value(&kv.value))
}

/// Every metric of a request, flattened.
pub fn metrics(request: &ExportMetricsServiceRequest) -> Vec<&Metric> {
    request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .collect()
}

pub fn find<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a Metric> {
    metrics(request).into_iter().find(|m| m.name == name)
}

/// Sum of a monotonic counter's points whose attributes match `filter` (`!` = key absent).
pub fn counter_value(
    request: &ExportMetricsServiceRequest,
    name: &str,
    filter: &[(&str, &str)],
) -> u64 {
    let Some(metric) = find(request, name) else {
        return 0;
    };
    let Some(metric::Data::Sum(sum)) = &metric.data else {
        panic!("{name} is not a sum: {:?}", metric.data)
    };
    sum.data_points
        .iter()
        .filter(|p| matches_filter(&p.attributes, filter))
        .map(number)
        .sum()
}

fn number(p: &NumberDataPoint) -> u64 {
    match p.value {
        Some(number_data_point::Value::AsInt(i)) => u64::try_from(i).unwrap(),
        Some(number_data_point::Value::AsDouble(d)) => d as u64,
        None => 0,
    }
}

pub fn matches_filter(attrs: &[KeyValue], filter: &[(&str, &str)]) -> bool {
    filter.iter().all(|(k, v)| match (*v, attr(attrs, k)) {
        ("!", found) => found.is_none(),
        ("*", found) => found.is_some(),
        (v, Some(found)) => found == v,
        (_, None) => false,
    })
}

/// The value of an integer gauge's points whose attributes match `filter`, with their
/// attributes.
pub fn gauge_points<'a>(
    request: &'a ExportMetricsServiceRequest,
    name: &str,
    filter: &[(&str, &str)],
) -> Vec<(i64, &'a [KeyValue])> {
    let Some(metric) = find(request, name) else {
        return Vec::new();
    };
    let Some(metric::Data::Gauge(gauge)) = &metric.data else {
        panic!("{name} is not a gauge: {:?}", metric.data)
    };
    gauge
        .data_points
        .iter()
        .filter(|p| matches_filter(&p.attributes, filter))
        .map(|p| (number(p) as i64, p.attributes.as_slice()))
        .collect()
}
