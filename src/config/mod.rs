//! The agent's configuration: the YAML file's schema, its defaults, and validation.
//!
//! [`load`] reads the file, resolves `${ENV}` references, secret files and `OTEL_*`
//! variables, and returns a [`Config`] in which every value is parsed and checked, or the
//! full list of problems. Later code never re-checks a value. The types are in [`types`]; the
//! clusters and the export settings (with their `OTEL_*` fallbacks) are read in modules of
//! their own.

mod cluster;
mod export;
mod filters;
mod labels;
mod render;
mod sasl;
mod schema_registry;
mod types;
mod yaml;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use render::{redact_url, render_redacted};
pub use types::*;
use yaml::{Field, Reader, Section};

/// Settings that weaken TLS verification, one sentence each: logged at start and shown by
/// `validate`.
pub fn tls_weakened(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for c in &config.clusters {
        if c.security_protocol.uses_tls() && !c.tls.verify {
            out.push(format!(
                "cluster {}: TLS certificate or host-name verification is off (tls.verify: false, or librdkafka ssl.endpoint.identification.algorithm: none); a man in the middle would go unnoticed",
                c.name
            ));
        }
        if c.schema_registry
            .as_ref()
            .is_some_and(|sr| sr.https && !sr.tls.verify)
        {
            out.push(format!(
                "cluster {}: the Schema Registry's TLS verification is off (schema_registry.tls.verify: false)",
                c.name
            ));
        }
    }
    out
}

/// Largest config file read: the parsed tree takes up to about 50 times the text, and the
/// agent must fit its pod's memory limit at start (1,000 clusters with SASL, labels and
/// librdkafka settings take about 250 KiB).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads and validates the config file at `path`, using the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let fail = |message: String| ConfigErrors {
        source_name: name.clone(),
        errors: vec![ConfigError {
            path: String::new(),
            line: None,
            message,
        }],
    };
    // A FIFO would block and /dev/zero never end: only a regular file of sensible size.
    let meta =
        std::fs::metadata(path).map_err(|e| fail(format!("cannot read the config file: {e}")))?;
    if !meta.is_file() {
        return Err(fail(
            "the config file is not a regular file; expected a YAML file".to_owned(),
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(fail(format!(
            "the config file is {} bytes; expected at most {MAX_CONFIG_BYTES} (1 MiB)",
            meta.len()
        )));
    }
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("cannot read the config file: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| ConfigErrors {
        source_name: name.clone(),
        errors: vec![yaml::not_utf8(e.as_bytes(), &e.utf8_error())],
    })?;
    from_str(&name, &text, &|var| std::env::var(var).ok())
}

/// Validates config `text`; `env` resolves `${VAR}` references and `OTEL_*` settings.
pub fn from_str(
    source_name: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        source_name: source_name.to_owned(),
        errors,
    };
    let root = yaml::parse_document(text).map_err(|e| fail(vec![e]))?;
    let Some(root) = root else {
        return Err(fail(vec![ConfigError {
            path: String::new(),
            line: None,
            message: "the config is empty; expected a mapping with at least a `clusters` list"
                .into(),
        }]));
    };
    let mut r = Reader::new(env);
    let mut top = Section::from_node(&mut r, "", &root);
    let section = top.section(&mut r, "agent");
    let agent = read_agent(&mut r, section);
    let clusters = cluster::read_clusters(&mut r, &mut top);
    let section = top.section(&mut r, "heartbeat");
    let heartbeat = read_heartbeat(&mut r, section);
    let section = top.section(&mut r, "checks");
    let checks = read_checks(&mut r, section);
    let section = top.section(&mut r, "export");
    let export = export::read_export(&mut r, section);
    let section = top.section(&mut r, "http");
    let http = read_http(&mut r, section);
    let section = top.section(&mut r, "log");
    let log = read_log(&mut r, section);
    top.finish(&mut r);

    let mut errors = r.into_errors();
    // Checks across fields name a key path; the line is the key's, or its nearest ancestor's.
    for error in errors.iter_mut().filter(|e| e.line.is_none()) {
        error.line = yaml::line_of_path(&root, &error.path);
    }
    match (agent, clusters, heartbeat, checks, export, http, log) {
        (
            Some(agent),
            Some(mut clusters),
            Some(heartbeat),
            Some(checks),
            Some(export),
            Some(http),
            Some(log),
        ) if errors.is_empty() => {
            for cluster in &mut clusters {
                cluster.client_zone.clone_from(&agent.zone);
            }
            Ok(Config {
                agent,
                clusters,
                heartbeat,
                checks,
                export,
                http,
                log,
            })
        }
        _ => Err(fail(errors)),
    }
}

/// An http(s) URL with a host and no credentials in it; `credentials_go` says where they
/// belong instead.
pub(super) fn http_url(text: &str, credentials_go: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "the URL holds credentials; put them under {credentials_go}"
        ));
    }
    Ok(url)
}

/// Reads an optional field with `read`, falling back to `default` when absent.
pub(super) fn or_default<T>(
    field: Option<Field<'_>>,
    default: T,
    read: impl FnOnce(&Field<'_>) -> Option<T>,
) -> Option<T> {
    match field {
        Some(f) => read(&f),
        None => Some(default),
    }
}

fn read_heartbeat(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<HeartbeatConfig> {
    let path = s.path().to_owned();
    let topic = or_default(s.field("topic"), DEFAULT_TOPIC.to_owned(), |f| {
        let topic = f.non_empty_string(r)?;
        let valid = topic.len() <= 249
            && topic != "."
            && topic != ".."
            && topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            f.error(r, format!("{topic:?} is not a valid Kafka topic name; expected up to 249 of a-z A-Z 0-9 . _ -"));
            return None;
        }
        Some(topic)
    });
    let interval = or_default(s.field("interval"), DEFAULT_HEARTBEAT_INTERVAL, |f| {
        f.duration(r, &FAST_INTERVAL)
    });
    let loss_timeout = or_default(s.field("loss_timeout"), DEFAULT_LOSS_TIMEOUT, |f| {
        f.duration(r, &LOSS_TIMEOUT)
    });
    let message_timeout = or_default(s.field("message_timeout"), DEFAULT_MESSAGE_TIMEOUT, |f| {
        f.duration(r, &FAST_INTERVAL)
    });
    let create_topic = or_default(s.field("create_topic"), true, |f| f.bool(r));
    let read_back = or_default(s.field("read_back"), true, |f| f.bool(r));
    let partitions = match s.field("partitions") {
        Some(f) => f.integer(r, 1, 10_000).map(|n| Some(n as i32)),
        None => Some(None),
    };
    let replication_factor = or_default(
        s.field("replication_factor"),
        DEFAULT_REPLICATION_FACTOR,
        |f| f.integer(r, 1, 32).map(|n| n as i16),
    );
    let retention = or_default(s.field("retention"), DEFAULT_RETENTION, |f| {
        f.duration(r, &RETENTION)
    });
    s.finish(r);

    let (interval, loss_timeout, message_timeout) = (interval?, loss_timeout?, message_timeout?);
    let mut ok = true;
    if loss_timeout <= message_timeout {
        r.error(
            format!("{path}.loss_timeout"),
            None,
            format!(
                "{} must be longer than heartbeat.message_timeout ({}), or an unacked heartbeat would count as lost",
                humantime::format_duration(loss_timeout),
                humantime::format_duration(message_timeout)
            ),
        );
        ok = false;
    }
    if loss_timeout < interval {
        r.error(
            format!("{path}.loss_timeout"),
            None,
            format!(
                "{} must be at least heartbeat.interval ({})",
                humantime::format_duration(loss_timeout),
                humantime::format_duration(interval)
            ),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(HeartbeatConfig {
        topic: topic?,
        interval,
        loss_timeout,
        message_timeout,
        create_topic: create_topic?,
        read_back: read_back?,
        partitions: partitions?,
        replication_factor: replication_factor?,
        retention: retention?,
    })
}

fn read_checks(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<ChecksConfig> {
    let mut c = s.section(r, "connectivity");
    let c_path = c.path().to_owned();
    let interval = or_default(c.field("interval"), DEFAULT_CONNECTIVITY_INTERVAL, |f| {
        f.duration(r, &FAST_INTERVAL)
    });
    let timeout = or_default(c.field("timeout"), DEFAULT_CONNECTIVITY_TIMEOUT, |f| {
        f.duration(r, &PROBE_TIMEOUT)
    });
    c.finish(r);
    let mut m = s.section(r, "metadata");
    let metadata = or_default(m.field("interval"), DEFAULT_METADATA_INTERVAL, |f| {
        f.duration(r, &SLOW_INTERVAL)
    });
    m.finish(r);
    let mut t = s.section(r, "topic");
    let topic = or_default(t.field("interval"), DEFAULT_TOPIC_INTERVAL, |f| {
        f.duration(r, &SLOW_INTERVAL)
    });
    t.finish(r);
    let o = s.section(r, "offsets");
    let offsets = read_series_check(r, o, DEFAULT_OFFSETS_INTERVAL);
    let g = s.section(r, "consumer_groups");
    let consumer_groups = read_series_check(r, g, DEFAULT_CONSUMER_GROUPS_INTERVAL);
    let mut sr = s.section(r, "schema_registry");
    let sr_interval = or_default(
        sr.field("interval"),
        DEFAULT_SCHEMA_REGISTRY_INTERVAL,
        |f| f.duration(r, &SLOW_INTERVAL),
    );
    let sr_timeout = or_default(sr.field("timeout"), DEFAULT_SCHEMA_REGISTRY_TIMEOUT, |f| {
        f.duration(r, &PROBE_TIMEOUT)
    });
    sr.finish(r);
    let mut cm = s.section(r, "commit");
    let commit_interval = or_default(cm.field("interval"), DEFAULT_COMMIT_INTERVAL, |f| {
        f.duration(r, &SLOW_INTERVAL)
    });
    let commit_timeout = or_default(cm.field("timeout"), DEFAULT_COMMIT_TIMEOUT, |f| {
        f.duration(r, &COMMIT_TIMEOUT)
    });
    let cm_path = cm.path().to_owned();
    cm.finish(r);
    s.finish(r);
    let commit = match (commit_interval, commit_timeout) {
        (Some(interval), Some(timeout)) if timeout >= interval => {
            r.error(
                format!("{cm_path}.timeout"),
                None,
                format!(
                    "{} must be shorter than {cm_path}.interval ({})",
                    humantime::format_duration(timeout),
                    humantime::format_duration(interval)
                ),
            );
            None
        }
        (Some(interval), Some(timeout)) => Some(ConnectivityConfig { interval, timeout }),
        _ => None,
    };
    let (interval, timeout) = (interval?, timeout?);
    if timeout >= interval {
        r.error(
            format!("{c_path}.timeout"),
            None,
            format!(
                "{} must be shorter than {c_path}.interval ({})",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        );
        return None;
    }
    Some(ChecksConfig {
        connectivity: ConnectivityConfig { interval, timeout },
        metadata: IntervalConfig {
            interval: metadata?,
        },
        topic: IntervalConfig { interval: topic? },
        offsets: offsets?,
        consumer_groups: consumer_groups?,
        schema_registry: ConnectivityConfig {
            interval: sr_interval?,
            timeout: sr_timeout?,
        },
        commit: commit?,
    })
}

fn read_series_check(
    r: &mut Reader<'_>,
    mut s: Section<'_>,
    default_interval: Duration,
) -> Option<SeriesCheckConfig> {
    let enabled = or_default(s.field("enabled"), true, |f| f.bool(r));
    let interval = or_default(s.field("interval"), default_interval, |f| {
        f.duration(r, &SLOW_INTERVAL)
    });
    let max_series = or_default(s.field("max_series"), DEFAULT_MAX_SERIES as i64, |f| {
        f.integer(r, 1, 1_000_000)
    });
    s.finish(r);
    Some(SeriesCheckConfig {
        enabled: enabled?,
        interval: interval?,
        max_series: usize::try_from(max_series?).ok()?,
    })
}

/// Environment variable for the agent's zone when `agent.zone` is not set.
pub const ZONE_VAR: &str = "CC_HEARTBEAT_ZONE";

fn read_agent(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<AgentConfig> {
    let zone = match s.field("zone") {
        Some(f) => f.non_empty_string(r).map(Some),
        None => Some(r.env(ZONE_VAR).filter(|z| !z.trim().is_empty())),
    };
    s.finish(r);
    let zone = zone?;
    if let Some(zone) = &zone
        && (zone.len() > 128 || zone.chars().any(char::is_control))
    {
        r.error(
            "agent.zone",
            None,
            "expected a zone name of at most 128 characters (e.g. us-east-1a)",
        );
        return None;
    }
    Some(AgentConfig { zone })
}

fn read_http(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<HttpConfig> {
    let listen = or_default(s.field("listen"), DEFAULT_HTTP_LISTEN.parse().ok()?, |f| {
        let text = f.non_empty_string(r)?;
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                f.error(
                    r,
                    format!("{text:?} is not an address; expected ip:port like 0.0.0.0:8080"),
                );
                None
            }
        }
    });
    let prometheus = or_default(s.field("prometheus"), false, |f| f.bool(r));
    let readiness = or_default(s.field("readiness"), ReadinessMode::Agent, |f| {
        f.choice(
            r,
            &[
                ("agent", ReadinessMode::Agent),
                ("kafka", ReadinessMode::Kafka),
            ],
            true,
        )
    });
    s.finish(r);
    Some(HttpConfig {
        listen: listen?,
        prometheus: prometheus?,
        readiness: readiness?,
    })
}

fn read_log(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<LogConfig> {
    let level = or_default(s.field("level"), "info".to_owned(), |f| {
        let text = f.non_empty_string(r)?;
        match crate::telemetry::logging::check_filter(&text) {
            Ok(()) => Some(text),
            Err(why) => {
                f.error(r, why);
                None
            }
        }
    });
    let format = or_default(s.field("format"), LogFormat::Text, |f| {
        f.choice(
            r,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            true,
        )
    });
    s.finish(r);
    Some(LogConfig {
        level: level?,
        format: format?,
    })
}

#[cfg(test)]
mod tests;
