//! An OTLP/gRPC metrics receiver (tonic, opentelemetry-proto): it decodes exactly what the
//! agent sends over a real socket and keeps every request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint, metric, number_data_point};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Recorder {
    requests: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    headers: Arc<Mutex<Vec<tonic::metadata::MetadataMap>>>,
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
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

pub struct OtlpReceiver {
    pub addr: SocketAddr,
    recorder: Recorder,
    stop: CancellationToken,
}

impl OtlpReceiver {
    /// Listens on `127.0.0.1:port` (0 for any free port).
    pub async fn start(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind OTLP receiver");
        let addr = listener.local_addr().unwrap();
        let recorder = Recorder::default();
        let stop = CancellationToken::new();
        let service = MetricsServiceServer::new(recorder.clone())
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
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
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.recorder.requests.lock().unwrap().clone()
    }

    pub fn headers(&self) -> Vec<tonic::metadata::MetadataMap> {
        self.recorder.headers.lock().unwrap().clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
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
