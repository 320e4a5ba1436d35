//! The agent's configuration: the YAML file's schema, its defaults, and validation.
//!
//! [`load`] reads the file, resolves `${ENV}` references, secret files and `OTEL_*`
//! variables, and returns a [`Config`] in which every value is parsed and checked, or the
//! full list of problems. Later code never re-checks a value.

mod render;
mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use render::render_redacted;
use yaml::{Field, Reader, Section};

/// Heartbeat topic when none is configured (the original app's name).
pub const DEFAULT_TOPIC: &str = "cc-heartbeat";
/// One heartbeat per partition per second.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// An acked heartbeat not consumed back within this long is counted lost.
pub const DEFAULT_LOSS_TIMEOUT: Duration = Duration::from_secs(20);
/// The producer's `message.timeout.ms`: how long a send may wait for its ack.
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Replication factor of a topic the agent creates (Confluent Cloud requires 3).
pub const DEFAULT_REPLICATION_FACTOR: i16 = 3;
/// Retention of a topic the agent creates.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Per-broker connectivity probe interval and timeout.
pub const DEFAULT_CONNECTIVITY_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_CONNECTIVITY_TIMEOUT: Duration = Duration::from_secs(2);
/// Metadata watch interval.
pub const DEFAULT_METADATA_INTERVAL: Duration = Duration::from_secs(60);
/// Topic check interval.
pub const DEFAULT_TOPIC_INTERVAL: Duration = Duration::from_secs(3600);
/// OTLP endpoints per protocol, as the OpenTelemetry specification sets them.
pub const DEFAULT_OTLP_GRPC_ENDPOINT: &str = "http://localhost:4317";
pub const DEFAULT_OTLP_HTTP_ENDPOINT: &str = "http://localhost:4318/v1/metrics";
/// How often metrics are pushed, and how long one push may take.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Health listener address (the original app's port).
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
/// Default explicit histogram boundaries, in seconds (design contract).
pub const DEFAULT_HISTOGRAM_BOUNDARIES: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Shortest interval accepted for any periodic probe; below it the agent would load the cluster.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A validated configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub clusters: Vec<ClusterConfig>,
    pub heartbeat: HeartbeatConfig,
    pub checks: ChecksConfig,
    pub export: ExportConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterConfig {
    /// Label on every metric (`kafka.cluster.name`).
    pub name: String,
    pub bootstrap_servers: Vec<String>,
    pub security_protocol: SecurityProtocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslConfig>,
    pub tls: TlsConfig,
    /// Extra librdkafka properties for every client of this cluster.
    pub librdkafka: BTreeMap<String, LibrdkafkaValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SecurityProtocol {
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[serde(rename = "SSL")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "OAUTHBEARER")]
    OAuthBearer,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OAuthBearer => "OAUTHBEARER",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauthbearer: Option<OAuthBearerConfig>,
}

/// OAUTHBEARER with an OIDC token endpoint (client credentials), as Confluent Cloud uses.
#[derive(Clone, Debug, Serialize)]
pub struct OAuthBearerConfig {
    pub token_endpoint_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// SASL extensions, e.g. `logicalCluster` and `identityPoolId` on Confluent Cloud.
    pub extensions: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TlsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_password: Option<Secret>,
    /// Verify the broker certificate and host name (on unless explicitly switched off).
    pub verify: bool,
}

/// A pass-through librdkafka value; values of sensitive keys are kept as secrets.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum LibrdkafkaValue {
    Plain(String),
    Secret(Secret),
}

impl LibrdkafkaValue {
    pub fn expose(&self) -> &str {
        match self {
            Self::Plain(v) => v,
            Self::Secret(s) => s.expose(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct HeartbeatConfig {
    pub topic: String,
    #[serde(serialize_with = "render::duration")]
    pub interval: Duration,
    #[serde(serialize_with = "render::duration")]
    pub loss_timeout: Duration,
    #[serde(serialize_with = "render::duration")]
    pub message_timeout: Duration,
    pub create_topic: bool,
    /// Partitions of a created topic; `None` means one per broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replication factor of a created topic; capped at the broker count.
    pub replication_factor: i16,
    #[serde(serialize_with = "render::duration")]
    pub retention: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChecksConfig {
    pub connectivity: ConnectivityConfig,
    pub metadata: IntervalConfig,
    pub topic: IntervalConfig,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct ConnectivityConfig {
    #[serde(serialize_with = "render::duration")]
    pub interval: Duration,
    #[serde(serialize_with = "render::duration")]
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct IntervalConfig {
    #[serde(serialize_with = "render::duration")]
    pub interval: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExportConfig {
    pub otlp: OtlpConfig,
}

#[derive(Clone, Debug, Serialize)]
pub struct OtlpConfig {
    /// Off with `enabled: false` or `OTEL_METRICS_EXPORTER=none`.
    pub enabled: bool,
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    #[serde(serialize_with = "render::duration")]
    pub interval: Duration,
    #[serde(serialize_with = "render::duration")]
    pub timeout: Duration,
    pub headers: BTreeMap<String, Secret>,
    pub compression: Compression,
    pub temporality: Temporality,
    pub histogram: HistogramKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    Cumulative,
    Delta,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HistogramKind {
    /// Explicit buckets at [`DEFAULT_HISTOGRAM_BOUNDARIES`].
    Explicit,
    /// Base-2 exponential buckets.
    Exponential,
}

#[derive(Clone, Debug, Serialize)]
pub struct HttpConfig {
    /// Address of the health listener (`/healthz`, `/readyz`).
    pub listen: SocketAddr,
    /// Also serve the metrics for Prometheus to scrape, at `/metrics`.
    pub prometheus: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct LogConfig {
    /// A `tracing` filter: a level (`info`) or directives (`info,librdkafka=debug`).
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret value: redacted in `Debug` and in serialized output; read with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub const REDACTED: &'static str = "<redacted>";

    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Self::REDACTED)
    }
}

/// One problem in the config: where, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `clusters[0].sasl.mechanism`; empty for the whole file.
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => f.write_str(&self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors {
    pub source_name: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

/// Reads and validates the config file at `path`, using the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        source_name: name.clone(),
        errors: vec![ConfigError {
            path: String::new(),
            line: None,
            message: format!("cannot read the config file: {e}"),
        }],
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
    let clusters = read_clusters(&mut r, &mut top);
    let section = top.section(&mut r, "heartbeat");
    let heartbeat = read_heartbeat(&mut r, section);
    let section = top.section(&mut r, "checks");
    let checks = read_checks(&mut r, section);
    let section = top.section(&mut r, "export");
    let export = read_export(&mut r, section);
    let section = top.section(&mut r, "http");
    let http = read_http(&mut r, section);
    let section = top.section(&mut r, "log");
    let log = read_log(&mut r, section);
    top.finish(&mut r);
    if let (Some(export), Some(http)) = (&export, &http)
        && http.prometheus
        && export.otlp.histogram == HistogramKind::Exponential
    {
        r.error(
            "http.prometheus",
            None,
            "the Prometheus endpoint cannot expose exponential histograms; set export.otlp.histogram: explicit, or scrape them through a collector",
        );
    }

    let errors = r.into_errors();
    match (clusters, heartbeat, checks, export, http, log) {
        (Some(clusters), Some(heartbeat), Some(checks), Some(export), Some(http), Some(log))
            if errors.is_empty() =>
        {
            Ok(Config {
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

/// Reads an optional field with `read`, falling back to `default` when absent.
fn or_default<T>(
    field: Option<Field<'_>>,
    default: T,
    read: impl FnOnce(&Field<'_>) -> Option<T>,
) -> Option<T> {
    match field {
        Some(f) => read(&f),
        None => Some(default),
    }
}

fn read_clusters(r: &mut Reader<'_>, top: &mut Section<'_>) -> Option<Vec<ClusterConfig>> {
    let Some(field) = top.field("clusters") else {
        r.error(
            "clusters",
            None,
            "required; expected a list of clusters, each with a name and bootstrap_servers",
        );
        return None;
    };
    let sections = field.sections(r)?;
    if sections.is_empty() {
        field.error(r, "expected at least one cluster");
        return None;
    }
    let mut clusters = Vec::new();
    let mut ok = true;
    for section in sections {
        match read_cluster(r, section) {
            Some(c) => clusters.push(c),
            None => ok = false,
        }
    }
    for (i, c) in clusters.iter().enumerate() {
        if clusters[..i].iter().any(|other| other.name == c.name) {
            r.error(
                format!("clusters[{i}].name"),
                None,
                format!(
                    "{:?} is used by another cluster; names label the metrics and must be unique",
                    c.name
                ),
            );
            ok = false;
        }
    }
    ok.then_some(clusters)
}

const SECURITY_PROTOCOLS: [(&str, SecurityProtocol); 4] = [
    ("PLAINTEXT", SecurityProtocol::Plaintext),
    ("SSL", SecurityProtocol::Ssl),
    ("SASL_PLAINTEXT", SecurityProtocol::SaslPlaintext),
    ("SASL_SSL", SecurityProtocol::SaslSsl),
];

const SASL_MECHANISMS: [(&str, SaslMechanism); 4] = [
    ("PLAIN", SaslMechanism::Plain),
    ("SCRAM-SHA-256", SaslMechanism::ScramSha256),
    ("SCRAM-SHA-512", SaslMechanism::ScramSha512),
    ("OAUTHBEARER", SaslMechanism::OAuthBearer),
];

/// librdkafka properties the agent sets itself, either from typed keys or because the
/// measurement rules depend on them (acks=all, no retries, no linger, no consumer group).
const RESERVED_LIBRDKAFKA: [(&str, &str); 20] = [
    ("bootstrap.servers", "use bootstrap_servers"),
    ("metadata.broker.list", "use bootstrap_servers"),
    ("security.protocol", "use security_protocol"),
    ("sasl.mechanism", "use sasl.mechanism"),
    ("sasl.mechanisms", "use sasl.mechanism"),
    ("sasl.username", "use sasl.username"),
    ("sasl.password", "use sasl.password or sasl.password_file"),
    ("acks", "heartbeats are always sent with acks=all"),
    (
        "request.required.acks",
        "heartbeats are always sent with acks=all",
    ),
    (
        "retries",
        "heartbeats are never retried, so failures are seen",
    ),
    (
        "message.send.max.retries",
        "heartbeats are never retried, so failures are seen",
    ),
    (
        "enable.idempotence",
        "heartbeats are never retried, so failures are seen",
    ),
    ("linger.ms", "heartbeats are sent without linger"),
    (
        "queue.buffering.max.ms",
        "heartbeats are sent without linger",
    ),
    ("message.timeout.ms", "use heartbeat.message_timeout"),
    ("delivery.timeout.ms", "use heartbeat.message_timeout"),
    (
        "group.id",
        "the heartbeat consumer reads by assignment, without a group",
    ),
    ("enable.auto.commit", "the heartbeat consumer never commits"),
    (
        "auto.offset.reset",
        "the heartbeat consumer starts at the end it looked up itself",
    ),
    ("enable.ssl.certificate.verification", "use tls.verify"),
];

/// Whether a librdkafka property holds a secret, so its value is redacted.
pub(crate) fn is_sensitive_property(key: &str) -> bool {
    [
        "password",
        "secret",
        "pem",
        "jaas",
        "sasl.oauthbearer.config",
        "token",
    ]
    .iter()
    .any(|needle| key.contains(needle))
}

fn read_cluster(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<ClusterConfig> {
    let path = s.path().to_owned();
    let name = match s.field("name") {
        Some(f) => f.non_empty_string(r),
        None => {
            r.error(
                format!("{path}.name"),
                s.line(),
                "required; expected the name that labels this cluster's metrics",
            );
            None
        }
    };
    let bootstrap_servers = match s.field("bootstrap_servers") {
        Some(f) => read_bootstrap_servers(r, &f),
        None => {
            r.error(
                format!("{path}.bootstrap_servers"),
                s.line(),
                "required; expected host:port, or a list of them",
            );
            None
        }
    };
    let protocol = or_default(
        s.field("security_protocol"),
        SecurityProtocol::Plaintext,
        |f| f.choice(r, &SECURITY_PROTOCOLS, true),
    );
    let sasl_present = s.has("sasl");
    let section = s.section(r, "sasl");
    let sasl = if sasl_present {
        read_sasl(r, section)
    } else {
        None
    };
    let section = s.section(r, "tls");
    let tls = read_tls(r, section);
    let librdkafka = s.field("librdkafka").and_then(|f| read_librdkafka(r, &f));
    let librdkafka_ok = !s.has("librdkafka") || librdkafka.is_some();
    s.finish(r);

    let protocol = protocol?;
    let sasl = match (protocol.uses_sasl(), sasl_present) {
        (true, false) => {
            r.error(
                format!("{path}.sasl"),
                None,
                format!(
                    "required with security_protocol {}; expected mechanism and credentials",
                    protocol.as_str()
                ),
            );
            return None;
        }
        (false, true) => {
            r.error(
                format!("{path}.sasl"),
                None,
                format!(
                    "not used with security_protocol {}; use SASL_SSL or SASL_PLAINTEXT, or remove sasl",
                    protocol.as_str()
                ),
            );
            return None;
        }
        (true, true) => Some(sasl?),
        (false, false) => None,
    };
    let tls = tls?;
    if !protocol.uses_tls() && (tls.ca_file.is_some() || tls.cert_file.is_some()) {
        r.error(
            format!("{path}.tls"),
            None,
            format!(
                "not used with security_protocol {}; use SSL or SASL_SSL",
                protocol.as_str()
            ),
        );
        return None;
    }
    if !librdkafka_ok {
        return None;
    }
    Some(ClusterConfig {
        name: name?,
        bootstrap_servers: bootstrap_servers?,
        security_protocol: protocol,
        sasl,
        tls,
        librdkafka: librdkafka.unwrap_or_default(),
    })
}

fn read_bootstrap_servers(r: &mut Reader<'_>, f: &Field<'_>) -> Option<Vec<String>> {
    let servers = f.string_list(r)?;
    if servers.is_empty() {
        f.error(
            r,
            "must not be empty; expected host:port, or a list of them",
        );
        return None;
    }
    let mut ok = true;
    for server in &servers {
        let valid = server.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            f.error(r, format!("{server:?} is not host:port; expected e.g. pkc-xxxxx.us-east-1.aws.confluent.cloud:9092"));
            ok = false;
        }
    }
    ok.then_some(servers)
}

fn read_sasl(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<SaslConfig> {
    let path = s.path().to_owned();
    let mechanism = match s.field("mechanism") {
        Some(f) => f.choice(r, &SASL_MECHANISMS, true),
        None => Some(SaslMechanism::Plain),
    };
    let username = s.field("username").and_then(|f| f.non_empty_string(r));
    let username_given = s.has("username");
    let password = s.field("password").and_then(|f| f.secret(r));
    let password_given = s.has("password");
    let password_file = s
        .field("password_file")
        .and_then(|f| read_secret_file(r, &f));
    let password_file_given = s.has("password_file");
    let oauth_given = s.has("oauthbearer");
    let section = s.section(r, "oauthbearer");
    let oauth = if oauth_given {
        read_oauthbearer(r, section)
    } else {
        None
    };
    s.finish(r);

    let mechanism = mechanism?;
    if password_given && password_file_given {
        r.error(
            format!("{path}.password_file"),
            None,
            "give either password or password_file, not both",
        );
        return None;
    }
    let password = password.or(password_file);
    match mechanism {
        SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let mut ok = true;
            if !username_given {
                r.error(
                    format!("{path}.username"),
                    None,
                    format!(
                        "required with mechanism {}; expected the user name or API key",
                        mechanism.as_str()
                    ),
                );
                ok = false;
            }
            if !password_given && !password_file_given {
                r.error(
                    format!("{path}.password"),
                    None,
                    format!(
                        "required with mechanism {}; expected password (or password_file) holding the secret",
                        mechanism.as_str()
                    ),
                );
                ok = false;
            }
            if oauth_given {
                r.error(
                    format!("{path}.oauthbearer"),
                    None,
                    "only used with mechanism OAUTHBEARER",
                );
                ok = false;
            }
            if !ok {
                return None;
            }
            Some(SaslConfig {
                mechanism,
                username: Some(username?),
                password: Some(password?),
                oauthbearer: None,
            })
        }
        SaslMechanism::OAuthBearer => {
            if !oauth_given {
                r.error(
                    format!("{path}.oauthbearer"),
                    None,
                    "required with mechanism OAUTHBEARER; expected token_endpoint_url, client_id and client_secret",
                );
                return None;
            }
            if username_given || password_given || password_file_given {
                r.error(
                    format!("{path}.username"),
                    None,
                    "username and password are not used with OAUTHBEARER; use oauthbearer.client_id and client_secret",
                );
                return None;
            }
            Some(SaslConfig {
                mechanism,
                username: None,
                password: None,
                oauthbearer: Some(oauth?),
            })
        }
    }
}

fn read_oauthbearer(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<OAuthBearerConfig> {
    let path = s.path().to_owned();
    let required = |s: &mut Section<'_>, r: &mut Reader<'_>, key: &'static str, what: &str| match s
        .field(key)
    {
        Some(f) => f.non_empty_string(r),
        None => {
            r.error(
                format!("{path}.{key}"),
                None,
                format!("required; expected {what}"),
            );
            None
        }
    };
    let token_endpoint_url = required(
        &mut s,
        r,
        "token_endpoint_url",
        "the OIDC token endpoint URL",
    );
    let client_id = required(&mut s, r, "client_id", "the OAuth client id");
    let secret = s.field("client_secret").and_then(|f| f.secret(r));
    let secret_given = s.has("client_secret");
    let secret_file = s
        .field("client_secret_file")
        .and_then(|f| read_secret_file(r, &f));
    let secret_file_given = s.has("client_secret_file");
    let scope = s.field("scope").and_then(|f| f.non_empty_string(r));
    let extensions = or_default(s.field("extensions"), BTreeMap::new(), |f| f.string_map(r));
    s.finish(r);
    let client_secret = match (secret_given, secret_file_given) {
        (true, true) => {
            r.error(
                format!("{path}.client_secret_file"),
                None,
                "give either client_secret or client_secret_file, not both",
            );
            None
        }
        (false, false) => {
            r.error(
                format!("{path}.client_secret"),
                None,
                "required; expected client_secret (or client_secret_file)",
            );
            None
        }
        _ => secret.or(secret_file),
    };
    Some(OAuthBearerConfig {
        token_endpoint_url: token_endpoint_url?,
        client_id: client_id?,
        client_secret: client_secret?,
        scope,
        extensions: extensions?,
    })
}

/// Reads a secret from the file a field names (e.g. a mounted Kubernetes secret).
fn read_secret_file(r: &mut Reader<'_>, f: &Field<'_>) -> Option<Secret> {
    let path = f.non_empty_string(r)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            // Mounted secrets often end in a newline that is not part of the secret.
            let value = text.trim_end_matches(['\n', '\r']);
            if value.is_empty() {
                f.error(r, format!("file {path} is empty; expected the secret"));
                None
            } else {
                Some(Secret::new(value))
            }
        }
        Err(e) => {
            f.error(r, format!("cannot read file {path}: {e}"));
            None
        }
    }
}

fn read_existing_file(r: &mut Reader<'_>, f: &Field<'_>) -> Option<PathBuf> {
    let path = PathBuf::from(f.non_empty_string(r)?);
    if !path.is_file() {
        f.error(
            r,
            format!("file {} does not exist or is not a file", path.display()),
        );
        return None;
    }
    Some(path)
}

fn read_tls(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<TlsConfig> {
    let path = s.path().to_owned();
    let given = ["ca_file", "cert_file", "key_file", "key_password"].map(|k| s.has(k));
    let ca_file = s.field("ca_file").and_then(|f| read_existing_file(r, &f));
    let cert_file = s.field("cert_file").and_then(|f| read_existing_file(r, &f));
    let key_file = s.field("key_file").and_then(|f| read_existing_file(r, &f));
    let key_password = s.field("key_password").and_then(|f| f.secret(r));
    let verify = or_default(s.field("verify"), true, |f| f.bool(r));
    s.finish(r);
    let read = [
        ca_file.is_some(),
        cert_file.is_some(),
        key_file.is_some(),
        key_password.is_some(),
    ];
    if given != read {
        // An error was already recorded for each value that did not read.
        return None;
    }
    if cert_file.is_some() != key_file.is_some() {
        let missing = if cert_file.is_some() {
            "key_file"
        } else {
            "cert_file"
        };
        r.error(
            format!("{path}.{missing}"),
            None,
            "mTLS needs both cert_file and key_file",
        );
        return None;
    }
    Some(TlsConfig {
        ca_file,
        cert_file,
        key_file,
        key_password,
        verify: verify?,
    })
}

fn read_librdkafka(r: &mut Reader<'_>, f: &Field<'_>) -> Option<BTreeMap<String, LibrdkafkaValue>> {
    let map = f.string_map(r)?;
    let mut ok = true;
    for key in map.keys() {
        if let Some((_, why)) = RESERVED_LIBRDKAFKA.iter().find(|(k, _)| k == key) {
            r.error(
                format!("{}.{key}", f.path()),
                f.line(),
                format!("set by cc-heartbeat and cannot be overridden: {why}"),
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    // Check names and values against librdkafka itself, offline, so a typo fails here
    // rather than at the first connection. Values are never echoed: some are secrets.
    let mut client = rdkafka::ClientConfig::new();
    for (k, v) in &map {
        client.set(k, v);
        if let Err(e) = client.create_native_config() {
            let message = match e {
                rdkafka::error::KafkaError::ClientConfig(_, desc, _, _) => {
                    if is_sensitive_property(k) {
                        "librdkafka rejected this property".to_owned()
                    } else {
                        format!("librdkafka rejected this property: {desc}")
                    }
                }
                other => format!("librdkafka rejected this property: {other}"),
            };
            r.error(format!("{}.{k}", f.path()), f.line(), message);
            client.remove(k);
            ok = false;
        }
    }
    ok.then(|| {
        map.into_iter()
            .map(|(k, v)| {
                let value = if is_sensitive_property(&k) {
                    LibrdkafkaValue::Secret(Secret::new(v))
                } else {
                    LibrdkafkaValue::Plain(v)
                };
                (k, value)
            })
            .collect()
    })
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
        f.duration(r, MIN_INTERVAL)
    });
    let loss_timeout = or_default(s.field("loss_timeout"), DEFAULT_LOSS_TIMEOUT, |f| {
        f.duration(r, MIN_INTERVAL)
    });
    let message_timeout = or_default(s.field("message_timeout"), DEFAULT_MESSAGE_TIMEOUT, |f| {
        f.duration(r, MIN_INTERVAL)
    });
    let create_topic = or_default(s.field("create_topic"), true, |f| f.bool(r));
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
        f.duration(r, Duration::from_secs(60))
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
        partitions: partitions?,
        replication_factor: replication_factor?,
        retention: retention?,
    })
}

fn read_checks(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<ChecksConfig> {
    let mut c = s.section(r, "connectivity");
    let c_path = c.path().to_owned();
    let interval = or_default(c.field("interval"), DEFAULT_CONNECTIVITY_INTERVAL, |f| {
        f.duration(r, MIN_INTERVAL)
    });
    let timeout = or_default(c.field("timeout"), DEFAULT_CONNECTIVITY_TIMEOUT, |f| {
        f.duration(r, Duration::from_millis(10))
    });
    c.finish(r);
    let mut m = s.section(r, "metadata");
    let metadata = or_default(m.field("interval"), DEFAULT_METADATA_INTERVAL, |f| {
        f.duration(r, Duration::from_secs(1))
    });
    m.finish(r);
    let mut t = s.section(r, "topic");
    let topic = or_default(t.field("interval"), DEFAULT_TOPIC_INTERVAL, |f| {
        f.duration(r, Duration::from_secs(1))
    });
    t.finish(r);
    s.finish(r);
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
    })
}

/// Parses an `OTEL_*` value holding milliseconds, reporting a bad one under the variable's name.
fn env_millis(r: &mut Reader<'_>, var: &str) -> Option<Option<Duration>> {
    let Some(text) = r.env(var) else {
        return Some(None);
    };
    match text.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Some(Some(Duration::from_millis(ms))),
        _ => {
            r.error(
                var,
                None,
                format!("{text:?} is not valid; expected a whole number of milliseconds"),
            );
            None
        }
    }
}

/// The first of the metric-specific and the generic `OTEL_EXPORTER_OTLP_*` variables that is set.
fn otlp_env(r: &Reader<'_>, suffix: &str) -> Option<(String, String)> {
    [
        format!("OTEL_EXPORTER_OTLP_METRICS_{suffix}"),
        format!("OTEL_EXPORTER_OTLP_{suffix}"),
    ]
    .into_iter()
    .find_map(|var| {
        r.env(&var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (var, v))
    })
}

/// Parses `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`, values URL-encoded).
fn parse_env_headers(
    r: &mut Reader<'_>,
    var: &str,
    text: &str,
) -> Option<BTreeMap<String, Secret>> {
    let mut out = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            r.error(var, None, "expected comma-separated key=value pairs");
            return None;
        };
        out.insert(
            k.trim().to_ascii_lowercase(),
            Secret::new(percent_decode(v.trim())),
        );
    }
    Some(out)
}

/// Decodes `%XX` escapes (as in `OTEL_EXPORTER_OTLP_HEADERS` values); other text is kept.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const OTLP_PROTOCOLS: [(&str, OtlpProtocol); 3] = [
    ("grpc", OtlpProtocol::Grpc),
    ("http/protobuf", OtlpProtocol::HttpProtobuf),
    ("http", OtlpProtocol::HttpProtobuf),
];
const COMPRESSIONS: [(&str, Compression); 2] =
    [("gzip", Compression::Gzip), ("none", Compression::None)];
const TEMPORALITIES: [(&str, Temporality); 2] = [
    ("cumulative", Temporality::Cumulative),
    ("delta", Temporality::Delta),
];
const HISTOGRAMS: [(&str, HistogramKind); 2] = [
    ("explicit", HistogramKind::Explicit),
    ("exponential", HistogramKind::Exponential),
];

/// Resolves one export setting: the config file first, then an `OTEL_*` variable, then the default.
fn choose_env<T: Copy>(
    r: &mut Reader<'_>,
    field: Option<Field<'_>>,
    env: Option<(String, String)>,
    choices: &[(&str, T)],
    default: T,
) -> Option<T> {
    if let Some(f) = field {
        return f.choice(r, choices, true);
    }
    match env {
        Some((var, value)) => match choices
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(value.trim()))
        {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                r.error(
                    var,
                    None,
                    format!(
                        "{value:?} is not valid; expected one of: {}",
                        names.join(", ")
                    ),
                );
                None
            }
        },
        None => Some(default),
    }
}

fn read_export(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<ExportConfig> {
    let mut o = s.section(r, "otlp");
    let path = o.path().to_owned();

    let enabled = match o.field("enabled") {
        Some(f) => f.bool(r),
        None => match r.env("OTEL_METRICS_EXPORTER").as_deref().map(str::trim) {
            Some("none") => Some(false),
            Some("otlp") | Some("") | None => {
                Some(r.env("OTEL_SDK_DISABLED").as_deref() != Some("true"))
            }
            Some(other) => {
                r.error(
                    "OTEL_METRICS_EXPORTER",
                    None,
                    format!("{other:?} is not supported; expected otlp or none"),
                );
                None
            }
        },
    };

    let protocol_env = otlp_env(r, "PROTOCOL");
    let protocol = choose_env(
        r,
        o.field("protocol"),
        protocol_env,
        &OTLP_PROTOCOLS,
        OtlpProtocol::Grpc,
    );

    let endpoint = match o.field("endpoint") {
        Some(f) => f
            .non_empty_string(r)
            .map(|e| (e, Some(f.path().to_owned()), false)),
        None => {
            let specific = r
                .env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
                .filter(|v| !v.trim().is_empty());
            let generic = r
                .env("OTEL_EXPORTER_OTLP_ENDPOINT")
                .filter(|v| !v.trim().is_empty());
            match (specific, generic) {
                (Some(e), _) => {
                    Some((e, Some("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT".into()), false))
                }
                // The generic variable is a base URL for every signal over HTTP.
                (None, Some(e)) => Some((e, Some("OTEL_EXPORTER_OTLP_ENDPOINT".into()), true)),
                (None, None) => Some((String::new(), None, false)),
            }
        }
    };

    let interval = match o.field("interval") {
        Some(f) => f.duration(r, Duration::from_secs(1)),
        None => env_millis(r, "OTEL_METRIC_EXPORT_INTERVAL")
            .map(|d| d.unwrap_or(DEFAULT_EXPORT_INTERVAL)),
    };
    let timeout_explicit = o.has("timeout");
    let timeout = match o.field("timeout") {
        Some(f) => f.duration(r, Duration::from_millis(100)),
        None => match env_millis(r, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT") {
            Some(Some(d)) => Some(d),
            Some(None) => env_millis(r, "OTEL_EXPORTER_OTLP_TIMEOUT")
                .map(|d| d.unwrap_or(DEFAULT_EXPORT_TIMEOUT)),
            None => None,
        },
    };

    // Headers from the environment and the file are merged; the file wins per header.
    let mut headers = match otlp_env(r, "HEADERS") {
        Some((var, text)) => parse_env_headers(r, &var, &text),
        None => Some(BTreeMap::new()),
    };
    if let Some(f) = o.field("headers") {
        match (f.string_map(r), headers.as_mut()) {
            (Some(map), Some(h)) => {
                for (k, v) in map {
                    if http_header_name_is_valid(&k) {
                        h.insert(k.to_ascii_lowercase(), Secret::new(v));
                    } else {
                        r.error(
                            format!("{}.{k}", f.path()),
                            f.line(),
                            "not a valid HTTP header name",
                        );
                        headers = None;
                        break;
                    }
                }
            }
            _ => headers = None,
        }
    }

    let compression_env = otlp_env(r, "COMPRESSION");
    let compression = choose_env(
        r,
        o.field("compression"),
        compression_env,
        &COMPRESSIONS,
        Compression::Gzip,
    );
    let temporality_env = r
        .env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
        .map(|v| {
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE".to_owned(),
                v,
            )
        });
    let temporality = choose_env(
        r,
        o.field("temporality"),
        temporality_env,
        &TEMPORALITIES,
        Temporality::Cumulative,
    );
    let histogram_env = r
        .env("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION")
        .map(|v| {
            let v = match v.trim() {
                "explicit_bucket_histogram" => "explicit".to_owned(),
                "base2_exponential_bucket_histogram" => "exponential".to_owned(),
                other => other.to_owned(),
            };
            (
                "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION".to_owned(),
                v,
            )
        });
    let histogram = choose_env(
        r,
        o.field("histogram"),
        histogram_env,
        &HISTOGRAMS,
        HistogramKind::Explicit,
    );
    o.finish(r);
    s.finish(r);

    let protocol = protocol?;
    let (endpoint, source, is_base) = endpoint?;
    let endpoint = if source.is_none() {
        match protocol {
            OtlpProtocol::Grpc => DEFAULT_OTLP_GRPC_ENDPOINT.to_owned(),
            OtlpProtocol::HttpProtobuf => DEFAULT_OTLP_HTTP_ENDPOINT.to_owned(),
        }
    } else {
        let trimmed = endpoint.trim().to_owned();
        let scheme_ok = trimmed.starts_with("http://") || trimmed.starts_with("https://");
        let host_ok = trimmed
            .split_once("://")
            .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
        if !scheme_ok || !host_ok {
            r.error(
                source.unwrap_or_default(),
                None,
                format!(
                    "{trimmed:?} is not an OTLP endpoint; expected a URL like http://collector:4317"
                ),
            );
            return None;
        }
        match protocol {
            // Over HTTP, a base URL (the generic variable, or a URL without a path) gets the signal path.
            OtlpProtocol::HttpProtobuf if is_base || url_path_is_empty(&trimmed) => {
                format!("{}/v1/metrics", trimmed.trim_end_matches('/'))
            }
            _ => trimmed,
        }
    };
    // A default timeout shrinks to fit a short interval; only a contradiction in the file is an error.
    let timeout = match (interval, timeout) {
        (Some(interval), Some(timeout)) if !timeout_explicit => Some(timeout.min(interval)),
        (_, timeout) => timeout,
    };
    if let (Some(interval), Some(timeout)) = (interval, timeout)
        && timeout > interval
    {
        r.error(
            format!("{path}.timeout"),
            None,
            format!(
                "{} must not be longer than {path}.interval ({})",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        );
        return None;
    }
    Some(ExportConfig {
        otlp: OtlpConfig {
            enabled: enabled?,
            endpoint,
            protocol,
            interval: interval?,
            timeout: timeout?,
            headers: headers?,
            compression: compression?,
            temporality: temporality?,
            histogram: histogram?,
        },
    })
}

fn url_path_is_empty(url: &str) -> bool {
    url.split_once("://")
        .is_none_or(|(_, rest)| match rest.find('/') {
            None => true,
            Some(i) => rest[i..].trim_end_matches('/').is_empty(),
        })
}

fn http_header_name_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
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
    s.finish(r);
    Some(HttpConfig {
        listen: listen?,
        prometheus: prometheus?,
    })
}

fn read_log(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<LogConfig> {
    let level = or_default(s.field("level"), "info".to_owned(), |f| {
        let text = f.non_empty_string(r)?;
        // A level, or directives like `info,librdkafka=debug`; a bare word must be a level
        // (the filter syntax would take it for a target name and silently log everything).
        let levels = ["off", "error", "warn", "info", "debug", "trace"];
        let valid = text
            .split(',')
            .map(str::trim)
            .all(|d| match d.rsplit_once('=') {
                Some((target, level)) => {
                    !target.is_empty() && levels.contains(&level.to_ascii_lowercase().as_str())
                }
                None => levels.contains(&d.to_ascii_lowercase().as_str()),
            });
        match tracing_subscriber::EnvFilter::builder().parse(&text) {
            Ok(_) if valid => Some(text),
            _ => {
                f.error(
                    r,
                    format!(
                        "{text:?} is not a log level; expected error, warn, info, debug or trace"
                    ),
                );
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
