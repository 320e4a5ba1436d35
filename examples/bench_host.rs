#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)] // a bench helper: it fails loudly and reports on stdout

//! What `bench/scale` runs the agent against, in a process of its own so its CPU is not the
//! agent's: N librdkafka mock clusters of B brokers, each with the heartbeat topic already
//! there (one partition per broker, partition p led by broker p + 1), and an OTLP/gRPC metrics
//! receiver that sums what the agent reports.
//!
//!   cargo run --release --example bench_host -- CLUSTERS BROKERS TOPIC LIFETIME_SECONDS
//!
//! Prints `otlp 127.0.0.1:PORT`, then `bootstrap ADDRESSES` per cluster, then per export
//! received `export t=T sent=S lost=L`: seconds since start, and the heartbeats sent (without
//! error) and lost, summed over every cluster and partition. Stops when stdin closes or after LIFETIME_SECONDS.

use std::io::Read as _;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, DefaultProducerContext, Producer as _};

/// Sums the heartbeat counters of each export and prints them, with when it came.
struct Sink {
    started: std::time::Instant,
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let (mut sent, mut lost) = (0.0, 0.0);
        let metrics = request
            .get_ref()
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics);
        for m in metrics {
            let Some(metric::Data::Sum(sum)) = &m.data else {
                continue;
            };
            for point in &sum.data_points {
                let failed = point.attributes.iter().any(|a| a.key == "error.type");
                let value = match point.value {
                    Some(number_data_point::Value::AsInt(v)) => v as f64,
                    Some(number_data_point::Value::AsDouble(v)) => v,
                    None => 0.0,
                };
                match m.name.as_str() {
                    "kafka.heartbeat.messages.sent" if !failed => sent += value,
                    "kafka.heartbeat.messages.lost" => lost += value,
                    _ => {}
                }
            }
        }
        let at = self.started.elapsed().as_secs_f64();
        println!("export t={at:.3} sent={sent} lost={lost}");
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [clusters, brokers, topic, lifetime] = args.as_slice() else {
        eprintln!("usage: bench_host CLUSTERS BROKERS TOPIC LIFETIME_SECONDS");
        std::process::exit(2);
    };
    let clusters: usize = clusters.parse().expect("CLUSTERS: a number");
    let brokers: i32 = brokers.parse().expect("BROKERS: a number");
    let lifetime = Duration::from_secs(lifetime.parse().expect("LIFETIME_SECONDS: a number"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the OTLP receiver");
    println!("otlp {}", listener.local_addr().expect("address"));
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(
                MetricsServiceServer::new(Sink {
                    started: std::time::Instant::now(),
                })
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // Each mock cluster lives inside the client that owns it.
    let owners: Vec<BaseProducer<DefaultProducerContext>> = (0..clusters)
        .map(|_| {
            let owner: BaseProducer<DefaultProducerContext> = ClientConfig::new()
                .set("test.mock.num.brokers", brokers.to_string())
                .create()
                .expect("mock cluster");
            {
                let mock = owner.client().mock_cluster().expect("mock cluster handle");
                mock.create_topic(topic, brokers, brokers.min(3))
                    .expect("create the heartbeat topic");
                for p in 0..brokers {
                    mock.partition_leader(topic, p, Some(p + 1))
                        .expect("set a leader");
                }
                println!("bootstrap {}", mock.bootstrap_servers());
            }
            owner
        })
        .collect();

    // Until the bench closes stdin, or the lifetime ends, whichever comes first.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = done_tx.send(());
    });
    let _ = done_rx.recv_timeout(lifetime);
    drop(owners);
    runtime.shutdown_timeout(Duration::from_secs(1));
}
