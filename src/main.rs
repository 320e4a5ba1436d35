//! The `cc-heartbeat` binary: parses the command line, sets up logging and the runtime,
//! dispatches, and turns the outcome into an exit code (0 ok, 1 failure, 2 bad config).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;

use cc_heartbeat::cli::{Cli, Command, DemoArgs};
use cc_heartbeat::config::{self, Config};
use cc_heartbeat::telemetry::traces::Traces;
use cc_heartbeat::telemetry::{CheckTraces, Identity, Telemetry, logging};
use cc_heartbeat::{app, demo, output, signal};

const EXIT_FAILURE: u8 = 1;
const EXIT_UNHEALTHY: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None | Some(Command::Run) => run(cli.config.as_deref(), cli.log_level.as_deref()),
        Some(Command::Check { json }) => {
            check(cli.config.as_deref(), cli.log_level.as_deref(), json)
        }
        Some(Command::Validate) => validate(cli.config.as_deref()),
        Some(Command::Healthcheck { address, timeout }) => {
            healthcheck(cli.config.as_deref(), address, timeout)
        }
        Some(Command::Demo(ref args)) => demo(args, cli.log_level.as_deref()),
    }
}

/// Loads the config or explains why not; `None` means exit 2.
fn load_config(path: Option<&Path>) -> Option<(PathBuf, Config)> {
    let Some(path) = path else {
        output::error(
            "no config file: pass --config FILE or set CC_HEARTBEAT_CONFIG (config.example.yaml documents every key)",
        );
        return None;
    };
    match config::load(path) {
        Ok(config) => Some((path.to_owned(), config)),
        Err(errors) => {
            output::error(&format!("invalid config {errors}"));
            None
        }
    }
}

fn validate(path: Option<&Path>) -> ExitCode {
    let Some((path, config)) = load_config(path) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    for warning in config::tls_weakened(&config) {
        output::error(&format!("warning: {warning}"));
    }
    output::report(&format!(
        "# {} is valid. Effective settings, secrets redacted:\n{}",
        path.display(),
        config::render_redacted(&config)
    ));
    ExitCode::SUCCESS
}

/// Asks the agent's /healthz: at `address`, else at the config's http.listen.
fn healthcheck(
    path: Option<&Path>,
    address: Option<std::net::SocketAddr>,
    timeout: Duration,
) -> ExitCode {
    let addr = match address {
        Some(addr) => addr,
        None => {
            let Some((_, config)) = load_config(path) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            cc_heartbeat::healthcheck::target(config.http.listen)
        }
    };
    match cc_heartbeat::healthcheck::check(addr, timeout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(unhealthy) => {
            output::error(&format!("unhealthy: {unhealthy}"));
            ExitCode::from(EXIT_UNHEALTHY)
        }
    }
}

/// Raises the soft open-file limit to the hard one (at most 2^20): every broker connection,
/// probe socket and HTTP client takes a file descriptor, and a soft limit of 1,024 is low for
/// many clusters.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let target = hard.min(1 << 20);
        if soft < target {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, target, hard);
        }
    }
}

/// How long exit waits for blocking work still running after the shutdown sequence.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// The agent's own work is light (its clients' I/O runs on librdkafka's threads): two workers
/// keep a slow task from delaying the time stamps of the others, whatever the node's core
/// count (tokio's default, one per core, is 64 threads on a large node).
const RUNTIME_WORKERS: usize = 2;

/// Runs `work` on a multi-threaded runtime (the OTLP exporter's I/O runs there while the SDK's
/// reader thread waits on it), then exits promptly even if a blocking librdkafka call, such as
/// a client closing towards a broker that is down, is still running: it does not hold the exit.
fn with_runtime<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKERS)
        .enable_all()
        .thread_name("cc-heartbeat")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(work);
    runtime.shutdown_timeout(EXIT_WAIT);
    result
}

fn run(path: Option<&Path>, log_level: Option<&str>) -> ExitCode {
    let Some((_, config)) = load_config(path) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    raise_open_file_limit();
    let otlp_logs = config
        .export
        .logs
        .enabled
        .then_some(config.export.logs.level.as_str());
    logging::init(
        log_level.unwrap_or(&config.log.level),
        config.log.format,
        otlp_logs,
    );
    let result = with_runtime(async {
        let identity = Identity::from_env().with_zone(config.agent.zone.as_deref());
        let telemetry = Telemetry::build(&identity, &config.export, config.http.prometheus, None)?;
        let options = app::RunOptions {
            health: true,
            prometheus: telemetry.prometheus.clone(),
            ..app::RunOptions::default()
        };
        let outcome = app::run(
            &config,
            &identity,
            &telemetry.instruments,
            options,
            signal::shutdown(),
        )
        .await;
        telemetry.shutdown().await;
        outcome?;
        anyhow::Ok(())
    });
    finish(result)
}

fn check(path: Option<&Path>, log_level: Option<&str>, json: bool) -> ExitCode {
    let Some((_, config)) = load_config(path) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    // The report goes to stdout; logs only when asked for, so it stays readable.
    logging::init(log_level.unwrap_or("error"), config.log.format, None);
    let result = with_runtime(async {
        let identity = Identity::from_env().with_zone(config.agent.zone.as_deref());
        // What fails is kept as spans and sent where the agent sends its traces, so the
        // report can name each failure's trace.
        let traces = CheckTraces::build(&identity, &config.export)?;
        let kept = traces
            .as_ref()
            .map_or_else(Traces::disabled, |t| t.traces.clone());
        let mut report = cc_heartbeat::check::run(&config, &identity.instance_id, &kept).await;
        if let Some(traces) = traces {
            report.traces = Some(traces.finish().await);
        }
        anyhow::Ok(report)
    });
    match result {
        Ok(report) => {
            let text = if json {
                serde_json::to_string_pretty(&report).unwrap_or_default()
            } else {
                cc_heartbeat::check::render_text(&report)
            };
            output::report(&text);
            if report.healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_UNHEALTHY)
            }
        }
        Err(error) => finish(Err(error)),
    }
}

fn demo(args: &DemoArgs, log_level: Option<&str>) -> ExitCode {
    logging::init(log_level.unwrap_or("info"), config::LogFormat::Text, None);
    let result = with_runtime(async {
        demo::run(args.options(), signal::shutdown()).await?;
        anyhow::Ok(())
    });
    finish(result)
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::error(&format!("error: {error:#}"));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
