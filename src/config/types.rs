//! The validated configuration's types, their defaults, and config errors.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::render;

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
/// Partition offsets and replication, read this often.
pub const DEFAULT_OFFSETS_INTERVAL: Duration = Duration::from_secs(60);
/// Series one check may export per cluster before it drops the rest.
pub const DEFAULT_MAX_SERIES: usize = 10_000;
/// Topics left out unless a config says otherwise: internal ones (`__consumer_offsets`,
/// `_confluent-*`, `_schemas`).
pub const DEFAULT_TOPIC_EXCLUDE: &str = "^_";
/// Consumer groups left out unless a config says otherwise: Confluent's internal ones.
pub const DEFAULT_GROUP_EXCLUDE: &str = "^_confluent";
/// Consumer group lag, read this often.
pub const DEFAULT_CONSUMER_GROUPS_INTERVAL: Duration = Duration::from_secs(30);
/// Schema Registry probe interval and timeout.
pub const DEFAULT_SCHEMA_REGISTRY_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_SCHEMA_REGISTRY_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The commit probe's group, before the agent's `service.instance.id`.
pub const COMMIT_GROUP_PREFIX: &str = "cc-heartbeat-commit-";
/// OTLP endpoints per protocol, as the OpenTelemetry specification sets them.
pub const DEFAULT_OTLP_GRPC_ENDPOINT: &str = "http://localhost:4317";
pub const DEFAULT_OTLP_HTTP_ENDPOINT: &str = "http://localhost:4318/v1/metrics";
/// How often metrics are pushed, and how long one push may take.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// With delta temporality, how much of a collector outage is held and delivered afterwards.
pub const DEFAULT_DELTA_BUFFER: Duration = Duration::from_secs(3600);
/// At most this many bytes of encoded delta requests are held (`export.otlp.delta_buffer_size`).
pub const DEFAULT_DELTA_BUFFER_SIZE: u64 = 16 * MIB;
pub(super) const MIB: u64 = 1024 * 1024;
/// Health listener address (the original app's port).
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
/// Default explicit histogram boundaries, in seconds (design contract).
pub const DEFAULT_HISTOGRAM_BOUNDARIES: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The durations each key accepts. The minima keep the agent from loading the cluster; the
/// maxima catch a wrong unit (`5000h` for `5000ms`) that would switch a probe off for good,
/// and keep every deadline well inside the timers' range. README lists them per key.
pub(super) const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// `heartbeat.interval`, `heartbeat.message_timeout`, `checks.connectivity.interval`.
pub(super) const FAST_INTERVAL: RangeInclusive<Duration> = MIN_INTERVAL..=HOUR;
/// `heartbeat.loss_timeout`.
pub(super) const LOSS_TIMEOUT: RangeInclusive<Duration> = MIN_INTERVAL..=DAY;
/// `heartbeat.retention`.
pub(super) const RETENTION: RangeInclusive<Duration> = MINUTE..=Duration::from_secs(30 * 86_400);
/// `checks.{metadata,topic,offsets,consumer_groups,schema_registry}.interval`.
pub(super) const SLOW_INTERVAL: RangeInclusive<Duration> = Duration::from_secs(1)..=DAY;
/// `checks.commit.timeout`: long enough for librdkafka to look the coordinator up again
/// once the one it knew stopped answering (it waits a second before asking).
pub(super) const COMMIT_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_secs(2)..=Duration::from_secs(300);
/// `checks.connectivity.timeout`, `checks.schema_registry.timeout`.
pub(super) const PROBE_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(300);
/// `export.otlp.interval` (and `OTEL_METRIC_EXPORT_INTERVAL`).
pub(super) const EXPORT_INTERVAL: RangeInclusive<Duration> = Duration::from_secs(1)..=HOUR;
/// `export.otlp.timeout` (and `OTEL_EXPORTER_OTLP_*TIMEOUT`).
pub(super) const EXPORT_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(300);
/// `export.otlp.delta_buffer`.
pub(super) const DELTA_BUFFER: RangeInclusive<Duration> = Duration::ZERO..=DAY;
/// `export.otlp.delta_buffer_size`.
pub(super) const DELTA_BUFFER_SIZE: RangeInclusive<u64> = 0..=1024 * MIB;

/// A validated configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub agent: AgentConfig,
    pub clusters: Vec<ClusterConfig>,
    pub heartbeat: HeartbeatConfig,
    pub checks: ChecksConfig,
    pub export: ExportConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
}

/// Where the agent itself runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentConfig {
    /// The agent's availability zone (`agent.zone`, else `CC_HEARTBEAT_ZONE`): the resource's
    /// `cloud.availability_zone` and `kafka.client.zone` on every point, the client side of a
    /// zone x rack view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
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
    /// Attributes on every point of this cluster (e.g. `env: prod`).
    pub labels: BTreeMap<String, String>,
    /// The agent's zone (`agent.zone`), carried here for the cluster's points.
    #[serde(skip)]
    pub client_zone: Option<String>,
    /// Topics whose partition offsets and replication are reported.
    pub topics: NameFilter,
    /// Consumer groups whose lag is reported.
    pub consumer_groups: ConsumerGroupsConfig,
    /// The cluster's Schema Registry, probed when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_registry: Option<SchemaRegistryConfig>,
    pub commit_probe: CommitProbeConfig,
}

/// A Schema Registry to probe.
#[derive(Clone, Debug, Serialize)]
pub struct SchemaRegistryConfig {
    #[serde(serialize_with = "render::url")]
    pub url: url::Url,
    #[serde(skip)]
    pub https: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    pub tls: TlsConfig,
}

/// HTTP basic authentication (a Confluent Cloud API key and secret).
#[derive(Clone, Debug, Serialize)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

/// `clusters[].commit_probe`: whether the commit probe runs, and the group it commits in.
#[derive(Clone, Debug, Serialize)]
pub struct CommitProbeConfig {
    pub enabled: CommitProbeMode,
    /// Its own group; by default `cc-heartbeat-commit-` and the agent's
    /// `service.instance.id` (set when the agent starts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Default for CommitProbeConfig {
    fn default() -> Self {
        Self {
            enabled: CommitProbeMode::Auto,
            group: None,
        }
    }
}

/// When the commit probe runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitProbeMode {
    /// Runs; a refusal of its group (no ACL) turns it off, said once.
    Auto,
    /// Runs; refusals are failures like any other.
    On,
    Off,
}

impl CommitProbeMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "true",
            Self::Off => "false",
        }
    }
}

impl Serialize for CommitProbeMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which consumer groups the lag check reports, and how.
#[derive(Clone, Debug, Serialize)]
pub struct ConsumerGroupsConfig {
    #[serde(flatten)]
    pub filter: NameFilter,
    /// Also report lag in seconds (a bounded fetch per lagging partition).
    pub lag_duration: bool,
    /// Per partition (the kafkametricsreceiver's series) or per topic only.
    pub granularity: LagGranularity,
}

/// How finely consumer group lag is reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LagGranularity {
    /// Lag, committed offset and lag in seconds per partition, and sums per topic.
    #[default]
    Partition,
    /// Per group and topic only: lag and offsets summed, lag in seconds the oldest of the
    /// topic's partitions. Fewer series where a backend charges by the series.
    Topic,
}

/// Names matching an `include` pattern (any, when there is none) and no `exclude` pattern.
#[derive(Clone, Debug, Serialize)]
pub struct NameFilter {
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
}

impl NameFilter {
    pub fn matches(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.0.is_match(name)))
            && !self.exclude.iter().any(|p| p.0.is_match(name))
    }
}

/// A regular expression from the config; renders as written.
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::Regex);

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
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
    /// Query values may be secrets: shown redacted.
    #[serde(serialize_with = "render::redacted_url")]
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
    /// Consume the heartbeats back (end-to-end latency, loss). Off, the agent only produces
    /// them (ack latency and failures), as the DaemonSet's per-node agents do so that a
    /// fleet's cost on the cluster grows with its size, not its square.
    pub read_back: bool,
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
    pub offsets: SeriesCheckConfig,
    pub consumer_groups: SeriesCheckConfig,
    pub schema_registry: ConnectivityConfig,
    /// The commit probe's rounds (`clusters[].commit_probe` says where it runs).
    pub commit: ConnectivityConfig,
}

/// A check that reports series per topic or group: how often, and how many at most.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SeriesCheckConfig {
    pub enabled: bool,
    #[serde(serialize_with = "render::duration")]
    pub interval: Duration,
    pub max_series: usize,
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
    pub traces: TracesConfig,
    pub logs: LogsConfig,
    /// Which names the heartbeat's send and receive metrics go by (`messaging_names`, else
    /// `OTEL_SEMCONV_STABILITY_OPT_IN`).
    pub messaging_names: MessagingNames,
}

/// `export.traces`: a heartbeat is a trace (its send and its receive), kept by the agent's own
/// rules once its outcome is known: every failed, lost, ambiguous, duplicated, late or slow
/// one, and healthy ones at `sample_ratio`. Sent with the metrics' settings (headers, TLS,
/// compression, timeout) to the same collector.
#[derive(Clone, Debug, Serialize)]
pub struct TracesConfig {
    /// Off with `enabled: false`, `OTEL_TRACES_EXPORTER=none`, or with the OTLP export off.
    pub enabled: bool,
    /// The share of healthy heartbeats kept, from 0 to 1.
    pub sample_ratio: f64,
    pub slow: SlowConfig,
    /// `endpoint`, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else the metrics' endpoint
    /// (with the traces path over HTTP). Its protocol, headers and TLS are the metrics'.
    #[serde(serialize_with = "render::redacted_url")]
    pub endpoint: String,
}

/// `export.logs`: the agent's log events as OTLP log records, beside stderr, with the
/// metrics' settings and resource.
#[derive(Clone, Debug, Serialize)]
pub struct LogsConfig {
    /// Off with `enabled: false`, `OTEL_LOGS_EXPORTER=none`, or with the OTLP export off.
    pub enabled: bool,
    /// What is sent: a level or directives, as `log.level` takes them.
    pub level: String,
    /// `endpoint`, else `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`, else the metrics' endpoint (with
    /// the logs path over HTTP).
    #[serde(serialize_with = "render::redacted_url")]
    pub endpoint: String,
}

/// Over these, a heartbeat or a connection probe is slow: its trace is kept.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SlowConfig {
    /// From the send to the ack.
    #[serde(serialize_with = "render::duration")]
    pub produce: Duration,
    /// From the send to reading it back.
    #[serde(serialize_with = "render::duration")]
    pub end_to_end: Duration,
    /// A broker's (or the Schema Registry's) connection stages, DNS to the last, together.
    #[serde(serialize_with = "render::duration")]
    pub connection: Duration,
}

pub const DEFAULT_SAMPLE_RATIO: f64 = 0.01;
pub const DEFAULT_SLOW_PRODUCE: Duration = Duration::from_millis(250);
pub const DEFAULT_SLOW_END_TO_END: Duration = Duration::from_millis(500);
pub const DEFAULT_SLOW_CONNECTION: Duration = Duration::from_secs(1);
pub(super) const SLOW: RangeInclusive<Duration> = Duration::from_millis(1)..=HOUR;

/// The names of the heartbeat's send and receive metrics: the agent's own
/// (`kafka.heartbeat.*`), the OpenTelemetry messaging conventions'
/// (`messaging.client.*`), or both, as `OTEL_SEMCONV_STABILITY_OPT_IN=messaging` and
/// `messaging/dup` choose in other instrumentations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessagingNames {
    #[default]
    Agent,
    Semconv,
    Both,
}

impl MessagingNames {
    pub fn agent(self) -> bool {
        self != Self::Semconv
    }

    pub fn semconv(self) -> bool {
        self != Self::Agent
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct OtlpConfig {
    /// Off with `enabled: false` or `OTEL_METRICS_EXPORTER=none`.
    pub enabled: bool,
    /// Shown with credentials and query values redacted.
    #[serde(serialize_with = "render::redacted_url")]
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
    /// With delta temporality: exports that fail are held this long's worth (in export
    /// intervals) and sent in order when the collector is back.
    #[serde(serialize_with = "render::duration")]
    pub delta_buffer: Duration,
    /// ... and at most this many bytes of them, encoded.
    #[serde(serialize_with = "render::bytes")]
    pub delta_buffer_size: u64,
    /// A private CA and a client certificate for an https endpoint.
    #[serde(skip_serializing_if = "OtlpTls::is_empty")]
    pub tls: OtlpTls,
}

/// TLS towards the collector: the CA to trust besides the system's, and the client
/// certificate for mTLS (both files or neither).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OtlpTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl OtlpTls {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
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
    /// The specification's memory-saving choice: counters and histograms delta, up-down
    /// counters and observable counters cumulative.
    LowMemory,
}

impl Temporality {
    /// Whether exports carry delta points, so that each one matters and a failed one is held.
    pub fn has_delta(self) -> bool {
        self != Self::Cumulative
    }
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
    /// What `/readyz` follows.
    pub readiness: ReadinessMode,
}

/// What `/readyz` follows (`/readyz/kafka` always follows Kafka).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadinessMode {
    /// Ready while the agent runs: Kafka's health is in the metrics, and a rollout or a drain
    /// does not wait for a cluster.
    #[default]
    Agent,
    /// Ready once every cluster's metadata and first heartbeat are in, and while the clusters
    /// can be used and their heartbeat topics exist.
    Kafka,
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
