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
