//! Kafka clients: librdkafka settings per role, and the context that routes librdkafka's logs.
//!
//! A cluster costs two librdkafka clients: the producer, which also carries the agent's
//! cluster-level requests ([`admin`]), and the heartbeat consumer. The measurement rules live
//! here as settings: the producer sends with acks=all, no retries and no linger; the consumer
//! has no group (it reads by assignment and never commits); no client ever auto-creates a
//! topic. The rest keeps an idle agent quiet: no client telemetry push, no statistics, long
//! fetch waits (a broker answers a waiting fetch as soon as data arrives), and the clients'
//! own metadata refresh at the agent's metadata interval.

pub mod admin;
pub mod error_codes;
pub mod metadata;
pub mod native;
pub mod producer;
pub mod reach;
pub mod record_time;
pub mod tls;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{debug, info, warn};

use crate::config::{ClusterConfig, SaslMechanism};
use crate::error::{Classified, ErrorKind};

/// What a client is for; names it in logs and in `client.id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Producer,
    Consumer,
    /// Reads the record at a group's committed offset, for its time stamp (lag in seconds).
    RecordReader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::Consumer => "consumer",
            Self::RecordReader => "record-reader",
        }
    }
}

/// The timings from the config that the clients' settings follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientTiming {
    /// How long a send may wait for its ack.
    pub message_timeout: Duration,
    /// The agent's metadata interval: the clients refresh their own metadata as often.
    pub metadata_interval: Duration,
}

impl ClientTiming {
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            message_timeout: config.heartbeat.message_timeout,
            metadata_interval: config.checks.metadata.interval,
        }
    }
}

/// Fetches wait this long for data when a partition has none; a broker answers at once when
/// data arrives, so it bounds only an idle wait (and the fetch requests of an idle agent).
pub const FETCH_WAIT: Duration = Duration::from_millis(500);

/// librdkafka settings for one role of one cluster.
pub fn client_config(cluster: &ClusterConfig, role: Role, timing: ClientTiming) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cluster.bootstrap_servers.join(","));
    c.set("client.id", format!("cc-heartbeat-{}", role.as_str()));
    c.set("security.protocol", cluster.security_protocol.as_str());
    // The agent creates the heartbeat topic itself, with the settings it was given.
    c.set("allow.auto.create.topics", "false");
    // A broker that comes back is used within a second, not after librdkafka's default
    // backoff of up to 10 s, which would read as produce failures after the outage ended.
    c.set("reconnect.backoff.max.ms", "1000");
    // Quiet: no client telemetry pushed to the brokers (its per-broker histograms cost
    // memory), no statistics, and the clients' own metadata refresh at the agent's pace.
    c.set("enable.metrics.push", "false");
    c.set("statistics.interval.ms", "0");
    c.set(
        "topic.metadata.refresh.interval.ms",
        timing.metadata_interval.as_millis().to_string(),
    );
    if let Some(sasl) = &cluster.sasl {
        c.set("sasl.mechanism", sasl.mechanism.as_str());
        if let Some(username) = &sasl.username {
            c.set("sasl.username", username);
        }
        if let Some(password) = &sasl.password {
            c.set("sasl.password", password.expose());
        }
        if let (SaslMechanism::OAuthBearer, Some(oauth)) = (sasl.mechanism, &sasl.oauthbearer) {
            c.set("sasl.oauthbearer.method", "oidc");
            c.set(
                "sasl.oauthbearer.token.endpoint.url",
                &oauth.token_endpoint_url,
            );
            c.set("sasl.oauthbearer.client.id", &oauth.client_id);
            c.set(
                "sasl.oauthbearer.client.secret",
                oauth.client_secret.expose(),
            );
            if let Some(scope) = &oauth.scope {
                c.set("sasl.oauthbearer.scope", scope);
            }
            if !oauth.extensions.is_empty() {
                let extensions: Vec<String> = oauth
                    .extensions
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                c.set("sasl.oauthbearer.extensions", extensions.join(","));
            }
        }
    }
    let tls = &cluster.tls;
    if let Some(ca) = &tls.ca_file {
        c.set("ssl.ca.location", ca.display().to_string());
    }
    if let Some(cert) = &tls.cert_file {
        c.set("ssl.certificate.location", cert.display().to_string());
    }
    if let Some(key) = &tls.key_file {
        c.set("ssl.key.location", key.display().to_string());
    }
    if let Some(password) = &tls.key_password {
        c.set("ssl.key.password", password.expose());
    }
    if !tls.verify {
        c.set("enable.ssl.certificate.verification", "false");
        c.set("ssl.endpoint.identification.algorithm", "none");
    }
    let timeout_ms = timing.message_timeout.as_millis().to_string();
    match role {
        Role::Producer => {
            c.set("acks", "all");
            c.set("enable.idempotence", "false");
            c.set("message.send.max.retries", "0");
            c.set("linger.ms", "0");
            // One heartbeat per record batch: each ack times one heartbeat, and heartbeats
            // queued behind a slow request are not merged into one batch.
            c.set("batch.num.messages", "1");
            c.set("message.timeout.ms", &timeout_ms);
            c.set("request.timeout.ms", &timeout_ms);
        }
        Role::Consumer => {
            c.set("enable.auto.commit", "false");
            c.set("enable.auto.offset.store", "false");
            // The end of a partition says its fetch is under way: the heartbeat waits for it
            // before a partition's first send.
            c.set("enable.partition.eof", "true");
            // A position outside a partition's log (the topic was recreated, or retention
            // passed it) is reported to the agent, which reads the partition again from its
            // start, instead of jumping to the end and skipping what is there.
            c.set("auto.offset.reset", "error");
            c.set("fetch.wait.max.ms", FETCH_WAIT.as_millis().to_string());
        }
        Role::RecordReader => {
            c.set("enable.auto.commit", "false");
            c.set("enable.auto.offset.store", "false");
            c.set("enable.partition.eof", "false");
            c.set("auto.offset.reset", "earliest");
            // It reads what is already there: a fetch that finds nothing need not wait.
            c.set("fetch.wait.max.ms", "100");
        }
    }
    for (k, v) in &cluster.librdkafka {
        c.set(k, v.expose());
    }
    c
}

/// Drops `client` (its last handle) off the runtime's worker threads when called on one:
/// librdkafka's destroy waits for the client's threads, a second or more for a consumer.
pub fn drop_off_runtime<T: Send + 'static>(client: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(client));
        }
        Err(_) => drop(client),
    }
}

/// Routes librdkafka's log lines and errors into `tracing` (target `librdkafka`).
///
/// librdkafka repeats a warning every reconnect attempt while a broker is away, and reports
/// most of them twice (log line and error event). The first of a kind is logged at WARN and
/// its repeats within [`REPEAT_WINDOW`] at DEBUG: the probes' metrics carry the ongoing state.
#[derive(Clone, Debug)]
pub struct LibrdkafkaLog {
    cluster: String,
    role: Role,
    recent: Arc<Mutex<HashMap<String, Instant>>>,
    /// librdkafka's last report that the brokers refuse this client (its connections fail
    /// the TLS handshake or authentication, or an ACL refuses its requests), until a request
    /// succeeds again: requests that fail meanwhile fail because of it, though librdkafka
    /// reports them as timeouts or broken connections.
    refusal: Arc<Mutex<Option<(ErrorKind, String)>>>,
    /// Text librdkafka prints that must not reach the log (a token endpoint URL with query
    /// values), with what to print instead.
    redactions: Arc<[(String, String)]>,
}

/// How long a repeated librdkafka warning stays at DEBUG after it was logged at WARN.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(300);

impl LibrdkafkaLog {
    pub fn new(cluster: &str, role: Role) -> Self {
        Self {
            cluster: cluster.to_owned(),
            role,
            recent: Arc::default(),
            refusal: Arc::default(),
            redactions: Arc::new([]),
        }
    }

    /// The log of one client of `cluster`, hiding the secrets librdkafka may print.
    pub fn for_cluster(cluster: &ClusterConfig, role: Role) -> Self {
        let redactions: Vec<(String, String)> = cluster
            .sasl
            .as_ref()
            .and_then(|sasl| sasl.oauthbearer.as_ref())
            .map(|oauth| &oauth.token_endpoint_url)
            .map(|url| (url.clone(), crate::config::redact_url(url)))
            .filter(|(url, shown)| url != shown)
            .into_iter()
            .collect();
        Self {
            redactions: redactions.into(),
            ..Self::new(&cluster.name, role)
        }
    }

    fn redacted<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let mut text = std::borrow::Cow::Borrowed(text);
        for (secret, shown) in self.redactions.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), shown).into();
            }
        }
        text
    }

    /// Why the brokers last refused this client (`tls`, `auth` or `authorization`, and
    /// librdkafka's reason), if no request succeeded since.
    pub fn refusal(&self) -> Option<(ErrorKind, String)> {
        self.refusal.lock().ok().and_then(|f| f.clone())
    }

    /// What a request that failed meanwhile really failed on, if the brokers refuse this client.
    pub fn refused(&self) -> Option<Refused> {
        self.refusal()
            .map(|(kind, reason)| Refused(Classified::new(kind, reason)))
    }

    /// A request went through: the brokers take this client's requests.
    pub fn accepted(&self) {
        if let Ok(mut failure) = self.refusal.lock() {
            *failure = None;
        }
    }

    /// Whether this warning was not logged at WARN within the window. Digits are ignored, so
    /// "after 3ms" and "after 5ms" are the same warning, and so is the thread prefix of a log
    /// line, so the log line and the error event librdkafka sends for one failure are one
    /// warning.
    fn first_in_window(&self, text: &str) -> bool {
        let text = strip_thread(text);
        let key: String = text.chars().filter(|c| !c.is_ascii_digit()).collect();
        // librdkafka's own count of repeats ("…, 3 identical error(s) suppressed").
        let key = key.replace(",  identical error(s) suppressed", "");
        let now = Instant::now();
        let Ok(mut recent) = self.recent.lock() else {
            return true;
        };
        if recent.len() > 256 {
            recent.retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);
        }
        match recent.get(&key) {
            Some(at) if now.duration_since(*at) < REPEAT_WINDOW => false,
            _ => {
                recent.insert(key, now);
                true
            }
        }
    }

    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let (cluster, client) = (self.cluster.as_str(), self.role.as_str());
        let message = &*self.redacted(message);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                // One librdkafka map goes to every client, so a property of the other role is expected.
                let other_role = fac == "CONFWARN" && message.contains("will be ignored by this");
                if !other_role && self.first_in_window(message) {
                    warn!(name: "librdkafka.log", target: "librdkafka", cluster, client, facility = fac, "{message}");
                } else {
                    debug!(target: "librdkafka", cluster, client, facility = fac, "{message}");
                }
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(name: "librdkafka.log", target: "librdkafka", cluster, client, facility = fac, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                debug!(target: "librdkafka", cluster, client, facility = fac, "{message}")
            }
        }
    }

    /// Client-level errors (broker down, auth failed). The probes measure and report these,
    /// so this is a WARN, not an ERROR that pages someone.
    pub fn error(&self, error: &KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
            || matches!(error, KafkaError::PartitionEOF(_))
        {
            // The heartbeat consumer asks for these (enable.partition.eof): not a failure.
            return;
        }
        let (cluster, client) = (self.cluster.as_str(), self.role.as_str());
        let reason = &*self.redacted(reason);
        if self.role == Role::Consumer
            && error.rdkafka_error_code() == Some(RDKafkaErrorCode::GroupAuthorizationFailed)
        {
            // librdkafka looks up the coordinator of the group id it needs to assign
            // partitions, though the consumer never joins or commits.
            if self.first_in_window(reason) {
                info!(
                    name: "librdkafka.group_describe_refused",
                    target: "librdkafka",
                    cluster,
                    client,
                    "The heartbeat consumer may not describe its own consumer group ({reason}). Harmless: it reads by assignment and never joins or commits. Grant DESCRIBE on groups prefixed cc-heartbeat- to silence this."
                );
            }
            return;
        }
        if let Some(kind) = refusal_kind(error)
            && let Ok(mut failure) = self.refusal.lock()
        {
            *failure = Some((kind, without_repeat_count(strip_thread(reason))));
        }
        if self.first_in_window(reason) {
            warn!(name: "librdkafka.error", target: "librdkafka", cluster, client, %error, "{reason}");
        } else {
            debug!(target: "librdkafka", cluster, client, %error, "{reason}");
        }
    }
}

/// The brokers refuse this client: its connections fail the TLS handshake or SASL
/// authentication, or an ACL refuses what it asks (librdkafka's reason is the source, with its
/// kind: `tls`, `auth` or `authorization`). librdkafka reports the requests and records that
/// fail meanwhile as timed out or as broken connections, which would hide the cause.
#[derive(Debug, thiserror::Error)]
#[error("{}", match .0.kind {
    ErrorKind::Tls => "TLS handshake failed",
    ErrorKind::Authorization => "not authorized",
    _ => "authentication failed",
})]
pub struct Refused(#[source] Classified);

impl Refused {
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }
}

/// The kind of a client-level refusal librdkafka reports: a TLS handshake that failed
/// (unknown CA, wrong name), authentication (bad credentials, a mechanism the broker does not
/// offer), or an ACL (a fetch from a topic the principal may not read).
fn refusal_kind(error: &KafkaError) -> Option<ErrorKind> {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code()? {
        C::SSL => Some(ErrorKind::Tls),
        // The heartbeat consumer's own group (see `LibrdkafkaLog::error`): nothing it needs.
        C::GroupAuthorizationFailed => None,
        code => match ErrorKind::from_rdkafka_code(code) {
            kind @ (ErrorKind::Auth | ErrorKind::Authorization) => Some(kind),
            _ => None,
        },
    }
}

/// A reason without librdkafka's count of repeats (`, 3 identical error(s) suppressed`).
fn without_repeat_count(reason: &str) -> String {
    let Some(end) = reason.find(" identical error(s) suppressed") else {
        return reason.to_owned();
    };
    let digits = reason[..end].trim_end_matches(|c: char| c.is_ascii_digit());
    match digits.strip_suffix(", ") {
        Some(head) if digits.len() < end => format!("{head}{}", &reason[end + 30..]),
        _ => reason.to_owned(),
    }
}

/// A log line without librdkafka's `[thrd:…]: ` prefix (the error event for the same failure
/// has none).
fn strip_thread(text: &str) -> &str {
    text.strip_prefix("[thrd:")
        .and_then(|rest| rest.split_once("]: "))
        .map_or(text, |(_, message)| message)
}

/// Client context of the heartbeat consumer.
#[derive(Clone, Debug)]
pub struct AgentContext {
    log: LibrdkafkaLog,
}

impl AgentContext {
    pub fn new(cluster: &ClusterConfig, role: Role) -> Self {
        Self {
            log: LibrdkafkaLog::for_cluster(cluster, role),
        }
    }

    pub fn log(&self) -> &LibrdkafkaLog {
        &self.log
    }
}

impl ClientContext for AgentContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&error, reason);
    }
}

impl ConsumerContext for AgentContext {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_str;

    #[test]
    fn repeated_warnings_are_logged_once_per_window() {
        let log = LibrdkafkaLog::new("c", Role::Consumer);
        assert!(log.first_in_window("Connect to ipv4#127.0.0.1:41953 failed (after 0ms)"));
        assert!(!log.first_in_window("Connect to ipv4#127.0.0.1:41953 failed (after 12ms)"));
        assert!(log.first_in_window("SASL authentication failed"));
        // The log line and the error event of one failure are one warning.
        assert!(log.first_in_window(
            "[thrd:127.0.0.1:9/bootstrap]: 127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused"
        ));
        assert!(!log.first_in_window(
            "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused"
        ));
        assert!(!log.first_in_window(
            "[thrd:127.0.0.1:9/bootstrap]: 127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused, 1 identical error(s) suppressed"
        ));
    }

    #[test]
    fn a_token_endpoint_url_with_query_values_is_logged_redacted() {
        let config = from_str(
            "t",
            "clusters:\n  - name: a\n    bootstrap_servers: x:1\n    security_protocol: SASL_SSL\n    sasl:\n      mechanism: OAUTHBEARER\n      oauthbearer: {token_endpoint_url: 'https://idp/token?key=qs-secret', client_id: i, client_secret: s}\n",
            &|_| None,
        )
        .unwrap();
        let log = LibrdkafkaLog::for_cluster(&config.clusters[0], Role::Producer);
        assert_eq!(
            log.redacted(
                "Failed to retrieve OIDC token from \"https://idp/token?key=qs-secret\": 401"
            ),
            "Failed to retrieve OIDC token from \"https://idp/token?key=redacted\": 401"
        );
    }

    #[test]
    fn refusals_are_kept_with_their_kind_until_a_request_succeeds() {
        let log = LibrdkafkaLog::new("c", Role::Producer);
        log.error(
            &KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "b:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed",
        );
        assert_eq!(log.refusal(), None, "a transport failure is not one");
        log.error(
            &KafkaError::Global(RDKafkaErrorCode::Authentication),
            "[thrd:b]: b:9/bootstrap: SASL authentication error: Authentication failed (after 0ms in state AUTH_REQ, 3 identical error(s) suppressed)",
        );
        assert_eq!(
            log.refusal(),
            Some((
                ErrorKind::Auth,
                "b:9/bootstrap: SASL authentication error: Authentication failed (after 0ms in state AUTH_REQ)".to_owned()
            ))
        );
        log.accepted();
        assert_eq!(log.refusal(), None);
        log.error(
            &KafkaError::Global(RDKafkaErrorCode::SSL),
            "b:9/bootstrap: SSL handshake failed: certificate verify failed",
        );
        let refused = log.refused().map(|r| (r.kind(), r.to_string()));
        assert_eq!(
            refused,
            Some((ErrorKind::Tls, "TLS handshake failed".to_owned()))
        );
        log.accepted();
        log.error(
            &KafkaError::Global(RDKafkaErrorCode::TopicAuthorizationFailed),
            "Fetch from broker 2 failed: Broker: Topic authorization failed",
        );
        assert_eq!(log.refusal().map(|r| r.0), Some(ErrorKind::Authorization));
    }

    #[test]
    fn the_consumers_own_group_refused_is_no_refusal() {
        let log = LibrdkafkaLog::new("c", Role::Consumer);
        log.error(
            &KafkaError::Global(RDKafkaErrorCode::GroupAuthorizationFailed),
            "FindCoordinator response error: Group authorization failed.",
        );
        assert_eq!(log.refusal(), None);
    }

    #[test]
    fn producer_settings_follow_the_measurement_rules() {
        let config = from_str(
            "t",
            "clusters:\n  - name: a\n    bootstrap_servers: [x:1, y:2]\n    security_protocol: SASL_SSL\n    sasl: {username: u, password: p}\n    librdkafka: {socket.keepalive.enable: 'true'}\n",
            &|_| None,
        )
        .unwrap();
        let timing = ClientTiming {
            message_timeout: Duration::from_secs(5),
            metadata_interval: Duration::from_secs(60),
        };
        let c = client_config(&config.clusters[0], Role::Producer, timing);
        assert_eq!(c.get("bootstrap.servers"), Some("x:1,y:2"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("message.send.max.retries"), Some("0"));
        assert_eq!(c.get("linger.ms"), Some("0"));
        assert_eq!(c.get("message.timeout.ms"), Some("5000"));
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(c.get("allow.auto.create.topics"), Some("false"));
        assert_eq!(c.get("enable.metrics.push"), Some("false"));
        assert_eq!(c.get("topic.metadata.refresh.interval.ms"), Some("60000"));
        c.create_native_config()
            .expect("librdkafka accepts the producer settings");

        let consumer = client_config(&config.clusters[0], Role::Consumer, timing);
        assert_eq!(consumer.get("group.id"), None);
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("500"));
        consumer
            .create_native_config()
            .expect("librdkafka accepts the consumer settings");
    }
}
