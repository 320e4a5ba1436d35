//! The `tracing` subscriber: human text or JSON on stderr, filtered by the configured level;
//! and, once the telemetry is built, the same events as OTLP log records (`export.logs`),
//! filtered by their own level.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::LogFormat;

/// The OTLP log bridge, empty until [`attach_otlp`]; its level filter is set at [`init`] (a
/// filter cannot be given to a layer already installed, a layer under one can be swapped).
type OtlpBridge = Option<OpenTelemetryTracingBridge<SdkLoggerProvider, SdkLogger>>;

/// Where [`attach_otlp`] puts the bridge, once the subscriber is installed.
static OTLP_LOGS: OnceLock<reload::Handle<OtlpBridge, Registry>> = OnceLock::new();

/// Defaults appended to every filter: librdkafka's own chatter stays at WARN, and the HTTP/gRPC
/// stacks under the exporter stay quiet, unless the level names them explicitly.
const QUIET_DEPENDENCIES: &[&str] = &[
    "librdkafka=warn",
    "rdkafka=warn",
    "h2=warn",
    "hyper=warn",
    "tonic=warn",
    "reqwest=warn",
];

/// The levels a filter may name.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a level or directive list such as `info` or `info,librdkafka=debug`. A bare word
/// must be a level: the filter syntax would take `warnn` for a target name and silently turn
/// every other log line off.
pub fn check_filter(text: &str) -> Result<(), String> {
    let valid = !text.trim().is_empty()
        && text
            .split(',')
            .map(str::trim)
            .all(|d| match d.rsplit_once('=') {
                Some((target, level)) => {
                    !target.is_empty() && LEVELS.contains(&level.to_ascii_lowercase().as_str())
                }
                None => LEVELS.contains(&d.to_ascii_lowercase().as_str()),
            });
    match EnvFilter::builder().parse(text) {
        Ok(_) if valid => Ok(()),
        _ => Err(format!(
            "{text:?} is not a log level; expected error, warn, info, debug, trace or off, or directives like info,librdkafka=debug"
        )),
    }
}

/// Builds the filter from a level or directive list such as `info` or `debug,librdkafka=info`.
pub fn filter(level: &str) -> EnvFilter {
    let mut directives: Vec<String> = vec![level.to_owned()];
    // At debug and trace, librdkafka's own lines come through too (its `debug` property's
    // output among them).
    let verbose = level
        .split(',')
        .any(|d| matches!(d.trim().to_ascii_lowercase().as_str(), "debug" | "trace"));
    for quiet in QUIET_DEPENDENCIES {
        let target = quiet.split('=').next().unwrap_or_default();
        let librdkafka = target == "librdkafka" || target == "rdkafka";
        if !(level.contains(target) || verbose && librdkafka) {
            directives.push((*quiet).to_owned());
        }
    }
    EnvFilter::builder().parse_lossy(directives.join(","))
}

/// Installs the global subscriber: stderr at `level`, and OTLP log records at `otlp_level`
/// once [`attach_otlp`] gives them a provider (`None`: never). A second call (tests) is a
/// no-op.
pub fn init(level: &str, format: LogFormat, otlp_level: Option<&str>) {
    let (otlp, handle) = reload::Layer::new(OtlpBridge::None);
    // The log export's own failures stay on stderr: exported, they would fail alike.
    let otlp_filter = match otlp_level {
        Some(level) => filter(level).add_directive(
            format!("{}=off", crate::events::export::LOG_EXPORT_TARGET)
                .parse()
                .unwrap_or_default(),
        ),
        None => EnvFilter::new("off"),
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let stderr = match format {
        LogFormat::Text => stderr.boxed(),
        LogFormat::Json => stderr
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    };
    let installed = Registry::default()
        .with(otlp.with_filter(otlp_filter))
        .with(stderr.with_filter(filter(level)))
        .try_init();
    if installed.is_ok() {
        let _ = OTLP_LOGS.set(handle);
    }
}

/// From now on, events at the level given to [`init`] also go to `provider` as OTLP log
/// records. A no-op without the subscriber of [`init`] (tests that install none).
pub fn attach_otlp(provider: &SdkLoggerProvider) {
    if let Some(handle) = OTLP_LOGS.get() {
        let _ = handle.reload(Some(OpenTelemetryTracingBridge::new(provider)));
    }
}
