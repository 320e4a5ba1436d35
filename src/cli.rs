//! Command line: `run` (the default), `check`, `validate`, `healthcheck`, `demo`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::demo::{self, DemoOptions, Fault};

#[derive(Debug, Parser)]
#[command(
    name = "cc-heartbeat",
    version,
    about = "Kafka heartbeat agent: is the cluster reachable and working end to end from here? Pushes what it measures over OTLP."
)]
pub struct Cli {
    /// Config file (YAML); see config.example.yaml.
    #[arg(
        short,
        long,
        env = "CC_HEARTBEAT_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Log level or filter, e.g. `debug` or `info,librdkafka=debug`; overrides log.level.
    #[arg(long, global = true, value_name = "LEVEL", value_parser = log_filter)]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent until SIGTERM or SIGINT (the default).
    Run,
    /// Run every probe once and print a report: exit 0 healthy, 1 unhealthy, 2 bad config.
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the config and print it with every secret redacted; exit 2 when it is invalid.
    Validate,
    /// Ask a running agent's /healthz (for a container HEALTHCHECK): exit 0 when it answers
    /// 200, 1 otherwise. The address is http.listen from the config (0.0.0.0 asked on
    /// 127.0.0.1), or --address.
    Healthcheck {
        /// host:port of the agent's HTTP listener, instead of the config's http.listen.
        #[arg(long, value_name = "ADDR")]
        address: Option<std::net::SocketAddr>,
        /// How long the answer may take.
        #[arg(long, default_value = "3s", value_parser = duration, value_name = "DURATION")]
        timeout: Duration,
    },
    /// Run the agent against an embedded mock cluster of 3 brokers and show what it measures.
    Demo(DemoArgs),
}

/// The longest duration a demo option takes: a demo runs for minutes, and the cap keeps a
/// wrong unit from overflowing a deadline.
const DEMO_MAX_DURATION: Duration = Duration::from_secs(86_400);

fn duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; expected a duration like 500ms, 30s or 2m"))?;
    if d > DEMO_MAX_DURATION {
        return Err(format!(
            "{} is too long; expected at most {}",
            humantime::format_duration(d),
            humantime::format_duration(DEMO_MAX_DURATION)
        ));
    }
    Ok(d)
}

fn log_filter(text: &str) -> Result<String, String> {
    crate::telemetry::logging::check_filter(text).map(|()| text.to_owned())
}

/// A duration that is not zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d.is_zero() => Err("must be longer than 0; expected e.g. 5s".to_owned()),
        d => Ok(d),
    }
}

fn broker_id(text: &str) -> Result<i32, String> {
    match text.parse::<i32>() {
        Ok(id) if (1..=demo::BROKERS).contains(&id) => Ok(id),
        _ => Err(format!("expected a broker id from 1 to {}", demo::BROKERS)),
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Partitions of the heartbeat topic.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=64))]
    pub partitions: i32,

    /// Heartbeat interval.
    #[arg(long, default_value = "1s", value_parser = positive_duration, value_name = "DURATION")]
    pub interval: Duration,

    /// How often to print the summary.
    #[arg(long, default_value = "5s", value_parser = positive_duration, value_name = "DURATION")]
    pub report_every: Duration,

    /// Fault: take this broker down at --fault-at for --fault-for.
    #[arg(long, value_parser = broker_id, value_name = "BROKER", conflicts_with = "add_latency")]
    pub broker_down: Option<i32>,

    /// Fault: add this round-trip time to --latency-broker at --fault-at for --fault-for.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub add_latency: Option<Duration>,

    /// Broker that --add-latency slows down.
    #[arg(long, default_value_t = 1, value_parser = broker_id, value_name = "BROKER")]
    pub latency_broker: i32,

    /// When the fault starts.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    pub fault_at: Duration,

    /// How long the fault lasts.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    pub fault_for: Duration,

    /// Also push the metrics, spans and logs over OTLP/gRPC to this endpoint, e.g.
    /// http://localhost:4317 (a failed send in the summary then names its trace).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

impl DemoArgs {
    pub fn options(&self) -> DemoOptions {
        let fault = match (self.broker_down, self.add_latency) {
            (Some(broker), _) => Some(Fault::BrokerDown { broker }),
            (None, Some(added)) => Some(Fault::Latency {
                broker: self.latency_broker,
                added,
            }),
            (None, None) => None,
        };
        DemoOptions {
            duration: self.duration,
            partitions: self.partitions,
            interval: self.interval,
            report_every: self.report_every,
            fault,
            fault_at: self.fault_at,
            fault_for: self.fault_for,
            otlp_endpoint: self.otlp_endpoint.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn demo_fault_options_parse() {
        let cli = Cli::try_parse_from([
            "cc-heartbeat",
            "demo",
            "--duration",
            "30s",
            "--broker-down",
            "2",
        ])
        .unwrap();
        let Some(Command::Demo(args)) = cli.command else {
            panic!("demo expected")
        };
        let options = args.options();
        assert_eq!(options.duration, Some(Duration::from_secs(30)));
        assert_eq!(options.fault, Some(Fault::BrokerDown { broker: 2 }));
        assert!(Cli::try_parse_from(["cc-heartbeat", "demo", "--broker-down", "7"]).is_err());
        assert!(
            Cli::try_parse_from([
                "cc-heartbeat",
                "demo",
                "--broker-down",
                "1",
                "--add-latency",
                "1s"
            ])
            .is_err()
        );
    }
}
