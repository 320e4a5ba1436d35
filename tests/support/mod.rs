//! Test harness: real brokers (librdkafka's mock cluster in-process, tansu as a process), the
//! agent run in-process with an in-memory metric reader, and helpers to read what it recorded.
#![allow(dead_code, unreachable_pub, clippy::print_stderr)] // the harness says what it started

pub mod collector;
pub mod groups;
pub mod http;
pub mod kafka;
pub mod ledger;
pub mod local;
pub mod metrics;
pub mod oidc;
pub mod otlp;
pub mod process;
pub mod prometheus;
pub mod registry;
pub mod tansu;
pub mod tls;
pub mod yaml;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cc_heartbeat::app::{self, RunOptions};
use cc_heartbeat::config::{self, Config};
use cc_heartbeat::health::Readiness;
use cc_heartbeat::probe::heartbeat::Observation;
use cc_heartbeat::telemetry::{Identity, Telemetry};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, DefaultProducerContext, Producer as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Builds a validated config from YAML text, without the process environment.
#[track_caller]
pub fn config(text: &str) -> Config {
    match config::from_str("test", text, &|_| None) {
        Ok(c) => c,
        Err(e) => panic!("test config invalid: {e}\n{text}"),
    }
}

/// An agent config against the mock cluster: fast probes, no export.
pub fn mock_agent_config(mock: &MockKafka, topic: &str) -> Config {
    config(&format!(
        "clusters:\n  - name: mock\n    bootstrap_servers: '{}'\n    librdkafka: {{fetch.wait.max.ms: '10'}}\n\
         heartbeat: {{topic: {topic}, interval: 250ms, loss_timeout: 3s, message_timeout: 1s}}\n\
         checks: {{connectivity: {{interval: 1s, timeout: 500ms}}, metadata: {{interval: 1s}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        mock.bootstrap()
    ))
}

/// librdkafka's mock cluster, owned through a client so the raw handle is reachable for
/// fault injection the safe API does not offer.
pub struct MockKafka {
    client: BaseProducer<DefaultProducerContext>,
    pub brokers: i32,
}

impl MockKafka {
    pub fn new(brokers: i32) -> Self {
        let client: BaseProducer<DefaultProducerContext> = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.to_string())
            .create()
            .expect("mock cluster client");
        Self { client, brokers }
    }

    fn mock(&self) -> MockCluster<'_, DefaultProducerContext> {
        self.client
            .client()
            .mock_cluster()
            .expect("client owns a mock cluster")
    }

    pub fn bootstrap(&self) -> String {
        self.mock().bootstrap_servers()
    }

    /// Creates `topic` with partition `p` led by broker `p % brokers + 1`, so tests know the leaders.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let mock = self.mock();
        mock.create_topic(topic, partitions, self.brokers)
            .expect("create topic");
        for p in 0..partitions {
            mock.partition_leader(topic, p, Some(self.leader_of(p)))
                .expect("set leader");
        }
    }

    pub fn leader_of(&self, partition: i32) -> i32 {
        partition % self.brokers + 1
    }

    /// Makes `broker` the leader of `partition`.
    pub fn move_leader(&self, topic: &str, partition: i32, broker: i32) {
        self.mock()
            .partition_leader(topic, partition, Some(broker))
            .expect("set leader");
    }

    pub fn broker_down(&self, broker: i32) {
        self.mock().broker_down(broker).expect("broker down");
    }

    pub fn broker_up(&self, broker: i32) {
        self.mock().broker_up(broker).expect("broker up");
    }

    pub fn round_trip_time(&self, broker: i32, rtt: Duration) {
        self.mock()
            .broker_round_trip_time(broker, rtt)
            .expect("broker rtt");
    }

    /// Delays the next `count` Fetch responses of `broker` by `delay` each (no error):
    /// produce to it still works, but what it acks is consumed late.
    #[allow(unsafe_code)]
    pub fn delay_fetches(&self, broker: i32, count: usize, delay: Duration) {
        let delay_ms = i32::try_from(delay.as_millis()).expect("delay fits i32");
        let fetch = rdkafka::types::RDKafkaApiKey::Fetch as i16;
        for _ in 0..count {
            // SAFETY: the handle belongs to `self.client`, which outlives this call, and the
            // variadic arguments are one (rd_kafka_resp_err_t, int) pair as `cnt = 1` declares.
            let err = unsafe {
                let rk = self.client.client().native_ptr();
                let mcluster = rdkafka::bindings::rd_kafka_handle_mock_cluster(rk);
                assert!(!mcluster.is_null(), "mock cluster handle");
                rdkafka::bindings::rd_kafka_mock_broker_push_request_error_rtts(
                    mcluster,
                    broker,
                    fetch,
                    1,
                    rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                    delay_ms,
                )
            };
            assert_eq!(
                err,
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            );
        }
    }

    /// The cluster id the mock reports.
    pub fn cluster_id(&self) -> String {
        self.client
            .client()
            .fetch_cluster_id(Duration::from_secs(5))
            .expect("mock cluster id")
    }
}

/// The agent running in-process, with its metrics read through an in-memory exporter and
/// its observations collected from the tap.
pub struct TestAgent {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), cc_heartbeat::error::BuildError>>,
    provider: opentelemetry_sdk::metrics::SdkMeterProvider,
    exporter: InMemoryMetricExporter,
    observations: Arc<Mutex<Vec<(std::time::Instant, Observation)>>>,
    pub readiness: Readiness,
    pub identity: Identity,
}

impl TestAgent {
    pub fn start(config: Config) -> Self {
        let identity = Identity::resolve(&|_| None);
        let exporter = InMemoryMetricExporter::default();
        let reader = PeriodicReader::builder(exporter.clone())
            .with_interval(Duration::from_secs(3600))
            .build();
        let telemetry = Telemetry::build(
            &identity,
            &config.export,
            config.http.prometheus,
            Some(Box::new(move |b| b.with_reader(reader))),
        )
        .expect("telemetry");
        let provider = telemetry
            .extra_provider()
            .expect("the test's reader")
            .clone();
        let (tap, mut rx) = mpsc::channel(65_536);
        let observations = Arc::new(Mutex::new(Vec::new()));
        {
            let observations = Arc::clone(&observations);
            tokio::spawn(async move {
                while let Some(o) = rx.recv().await {
                    observations
                        .lock()
                        .unwrap()
                        .push((std::time::Instant::now(), o));
                }
            });
        }
        let stop = CancellationToken::new();
        let readiness = Readiness::new();
        let task = {
            let stop = stop.clone();
            let identity = identity.clone();
            let readiness = readiness.clone();
            tokio::spawn(async move {
                let options = RunOptions {
                    tap: Some(tap),
                    health: false,
                    readiness: Some(readiness),
                    prometheus: None,
                };
                let result = app::run(
                    &config,
                    &identity,
                    &telemetry.instruments,
                    options,
                    stop.cancelled_owned(),
                )
                .await;
                // Kept spans leave before the agent counts as stopped, as in the binary.
                let traces = telemetry.instruments.traces.clone();
                let _ =
                    tokio::task::spawn_blocking(move || traces.shutdown(Duration::from_secs(5)))
                        .await;
                drop(telemetry);
                result
            })
        };
        Self {
            stop,
            task,
            provider,
            exporter,
            observations,
            readiness,
            identity,
        }
    }

    pub fn observations(&self) -> Vec<Observation> {
        self.observations
            .lock()
            .unwrap()
            .iter()
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Observations with when the test received each (within microseconds of the event).
    pub fn observations_at(&self) -> Vec<(std::time::Instant, Observation)> {
        self.observations.lock().unwrap().clone()
    }

    /// Waits until `count` own heartbeats made the round trip on every one of `partitions`.
    pub async fn wait_round_trips(&self, partitions: &[i32], count: usize, timeout: Duration) {
        eventually(
            timeout,
            &format!("{count} round trips on partitions {partitions:?}"),
            || {
                let obs = self.observations();
                partitions
                    .iter()
                    .all(|p| round_trips(&obs, *p).len() >= count)
                    .then_some(())
            },
        )
        .await;
    }

    /// Exports now and returns the latest metrics, if anything was recorded yet.
    pub fn try_metrics(&self) -> Option<ResourceMetrics> {
        self.provider.force_flush().ok()?;
        self.exporter.get_finished_metrics().ok()?.pop()
    }

    /// Exports now and returns the latest (cumulative) metrics.
    pub fn metrics(&self) -> ResourceMetrics {
        self.provider.force_flush().expect("flush");
        self.exporter
            .get_finished_metrics()
            .expect("finished metrics")
            .pop()
            .expect("at least one export")
    }

    /// Stops the agent (as on SIGTERM) and waits for it.
    pub async fn stop(mut self) -> (ResourceMetrics, Vec<Observation>) {
        self.stop.cancel();
        let task = std::mem::replace(&mut self.task, tokio::spawn(async { Ok(()) }));
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("agent stops within 15 s")
            .expect("agent task")
            .expect("agent ran");
        let metrics = {
            self.provider.force_flush().expect("flush");
            self.exporter
                .get_finished_metrics()
                .expect("metrics")
                .pop()
                .expect("an export")
        };
        let observations = self.observations();
        (metrics, observations)
    }
}

impl Drop for TestAgent {
    /// A failing test drops the agent without `stop`: cancel it so its threads end too.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// End-to-end latencies of the round trips on `partition`.
pub fn round_trips(observations: &[Observation], partition: i32) -> Vec<Duration> {
    observations
        .iter()
        .filter_map(|o| match o {
            Observation::RoundTrip {
                partition: p,
                end_to_end,
                ..
            } if *p == partition => Some(*end_to_end),
            _ => None,
        })
        .collect()
}

/// Successful produce latencies on `partition`.
pub fn acks(observations: &[Observation], partition: i32) -> Vec<Duration> {
    observations
        .iter()
        .filter_map(|o| match o {
            Observation::Acked {
                partition: p,
                latency,
                error: None,
                ..
            } if *p == partition => Some(*latency),
            _ => None,
        })
        .collect()
}

pub fn median(mut samples: Vec<Duration>) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// A topic name unique to the test.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
pub use local::free_port;
pub mod kafka_proxy;
pub mod witness;
