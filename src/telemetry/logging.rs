//! The `tracing` subscriber: human text or JSON on stderr, filtered by the configured level.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

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

/// Builds the filter from a level or directive list such as `info` or `debug,librdkafka=info`.
pub fn filter(level: &str) -> EnvFilter {
    let mut directives: Vec<String> = vec![level.to_owned()];
    for quiet in QUIET_DEPENDENCIES {
        let target = quiet.split('=').next().unwrap_or_default();
        if !level.contains(target) {
            directives.push((*quiet).to_owned());
        }
    }
    EnvFilter::builder().parse_lossy(directives.join(","))
}

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(level: &str, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
