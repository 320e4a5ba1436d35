//! `cc-heartbeat demo`: the real agent against an in-process mock cluster of three brokers,
//! with a live summary on the terminal and optional faults injected mid-run.

mod summary;

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::app::{self, RunOptions};
use crate::config::{self, Config};
use crate::error::BuildError;
use crate::output;
use crate::telemetry::{Identity, Telemetry};
use summary::secs;
pub use summary::{Summary, Totals};

/// Brokers in the mock cluster.
pub const BROKERS: i32 = 3;

/// A fault to inject while the demo runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// The broker refuses connections.
    BrokerDown { broker: i32 },
    /// Every request to the broker takes this much longer.
    Latency { broker: i32, added: Duration },
}

impl Fault {
    fn describe(&self) -> String {
        match self {
            Self::BrokerDown { broker } => format!("broker {broker} down"),
            Self::Latency { broker, added } => {
                format!(
                    "{} added round-trip time on broker {broker}",
                    humantime::format_duration(*added)
                )
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Stop on its own after this long (else on Ctrl-C).
    pub duration: Option<Duration>,
    pub partitions: i32,
    pub interval: Duration,
    pub report_every: Duration,
    pub fault: Option<Fault>,
    pub fault_at: Duration,
    pub fault_for: Duration,
    /// Also push the metrics to this OTLP endpoint.
    pub otlp_endpoint: Option<String>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            duration: None,
            partitions: BROKERS,
            interval: Duration::from_secs(1),
            report_every: Duration::from_secs(5),
            fault: None,
            fault_at: Duration::from_secs(10),
            fault_for: Duration::from_secs(10),
            otlp_endpoint: None,
        }
    }
}

/// The agent's config for the demo, built through the same validation as a config file.
pub fn demo_config(bootstrap: &str, options: &DemoOptions) -> Result<Config, config::ConfigErrors> {
    let export = match &options.otlp_endpoint {
        Some(endpoint) => format!("{{enabled: true, endpoint: '{endpoint}', interval: 5s}}"),
        None => "{enabled: false}".to_owned(),
    };
    let text = format!(
        "clusters:\n  - name: demo\n    bootstrap_servers: '{bootstrap}'\n\
         \x20   librdkafka: {{fetch.wait.max.ms: '10'}}\n\
         \x20   commit_probe: {{enabled: false}}\n\
         heartbeat:\n  interval: {interval}\n  loss_timeout: 10s\n  message_timeout: 3s\n\
         checks:\n  metadata: {{interval: 5s}}\n\
         export:\n  otlp: {export}\n",
        interval = humantime::format_duration(options.interval),
    );
    // The mock cluster answers an empty fetch only after the fetch wait, even when a message
    // arrives meanwhile (a real broker answers at once), so a short wait keeps e2e honest here.
    // The demo ignores OTEL_* variables: its export is what its options say. The mock cluster
    // does not describe consumer groups, so the commit probe stays off.
    config::from_str("demo", &text, &|_| None)
}

/// Runs the demo until its duration passes or `shutdown` completes.
pub async fn run(
    options: DemoOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Totals, BuildError> {
    let mock: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(BROKERS).map_err(BuildError::MockCluster)?;
    // A rack per broker, as managed clusters name their zones: the racks reach every
    // per-broker point, as they do on a real cluster.
    for broker in 1..=BROKERS {
        mock.broker_rack(
            broker,
            &format!("zone-{}", char::from(b'a' + broker as u8 - 1)),
        )
        .map_err(BuildError::MockCluster)?;
    }
    let partitions = options.partitions.max(1);
    mock.create_topic(config::DEFAULT_TOPIC, partitions, BROKERS)
        .map_err(BuildError::MockCluster)?;
    // Leaders in turn (partition 0 on broker 1, ...), so a broker fault hits its partitions
    // and the others show what healthy looks like.
    for p in 0..partitions {
        mock.partition_leader(config::DEFAULT_TOPIC, p, Some(p % BROKERS + 1))
            .map_err(BuildError::MockCluster)?;
    }
    let config =
        demo_config(&mock.bootstrap_servers(), &options).map_err(BuildError::DemoSettings)?;

    output::report(&header(&options, partitions));

    let identity = Identity::from_env();
    let telemetry = Telemetry::build(&identity, &config.export, false, None)?;
    let (tap, mut observations) = mpsc::channel(16_384);
    let stop_agent = CancellationToken::new();
    let agent = {
        let config = config.clone();
        let identity = identity.clone();
        let instruments = telemetry.instruments.clone();
        let stop = stop_agent.clone();
        tokio::spawn(async move {
            let options = RunOptions {
                tap: Some(tap),
                ..RunOptions::default()
            };
            app::run(
                &config,
                &identity,
                &instruments,
                options,
                stop.cancelled_owned(),
            )
            .await
        })
    };

    let start = Instant::now();
    let mut summary = Summary::default();
    let mut report = tokio::time::interval_at(start + options.report_every, options.report_every);
    let end = options.duration.map(|d| start + d);
    let fault_start = options.fault.map(|_| start + options.fault_at);
    let fault_end = options
        .fault
        .map(|_| start + options.fault_at + options.fault_for);
    let mut fault_active = false;
    tokio::pin!(shutdown);
    loop {
        let next_fault = if fault_active {
            fault_end
        } else {
            fault_start.filter(|_| summary.faults == 0)
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = sleep_until_opt(end) => break,
            Some(observation) = observations.recv() => summary.add(observation),
            _ = report.tick() => output::report(&summary.take_window(start.elapsed())),
            () = sleep_until_opt(next_fault) => {
                let (Some(fault), elapsed) = (options.fault, start.elapsed()) else { continue };
                if fault_active {
                    clear_fault(&mock, fault);
                    output::report(&format!("[{}] fault cleared: {} is over", secs(elapsed), fault.describe()));
                    fault_active = false;
                } else {
                    inject_fault(&mock, fault);
                    output::report(&format!(
                        "[{}] fault injected: {} for {}",
                        secs(elapsed),
                        fault.describe(),
                        humantime::format_duration(options.fault_for)
                    ));
                    info!(name: "demo.fault", fault = %fault.describe(), "Demo fault injected.");
                    summary.faults += 1;
                    fault_active = true;
                }
            }
        }
    }
    stop_agent.cancel();
    let result = agent.await.unwrap_or(Ok(()));
    while let Ok(observation) = observations.try_recv() {
        summary.add(observation);
    }
    telemetry.shutdown().await;
    drop(mock);
    result?;
    let totals = summary.totals;
    output::report(&totals.describe(start.elapsed()));
    Ok(totals)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn inject_fault(mock: &MockCluster<'static, DefaultProducerContext>, fault: Fault) {
    let _ = match fault {
        Fault::BrokerDown { broker } => mock.broker_down(broker),
        Fault::Latency { broker, added } => mock.broker_round_trip_time(broker, added),
    };
}

fn clear_fault(mock: &MockCluster<'static, DefaultProducerContext>, fault: Fault) {
    let _ = match fault {
        Fault::BrokerDown { broker } => mock.broker_up(broker),
        Fault::Latency { broker, .. } => mock.broker_round_trip_time(broker, Duration::ZERO),
    };
}

fn header(options: &DemoOptions, partitions: i32) -> String {
    let mut text = format!(
        "cc-heartbeat demo: mock cluster of {BROKERS} brokers, topic {} with {partitions} partitions, \
         one heartbeat per partition every {}.\n",
        config::DEFAULT_TOPIC,
        humantime::format_duration(options.interval)
    );
    if let Some(fault) = options.fault {
        let _ = writeln!(
            text,
            "Fault plan: {} from {} to {}.",
            fault.describe(),
            secs(options.fault_at),
            secs(options.fault_at + options.fault_for)
        );
    }
    let _ = write!(
        text,
        "A summary follows every {}: ack = produce latency (send until acks=all), \
         e2e = send until consumed back.",
        humantime::format_duration(options.report_every)
    );
    text
}
