//! Reading the `clusters` list: bootstrap servers, security protocol, TLS files, and the
//! librdkafka pass-through map (SASL is read in `sasl`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::filters::read_name_filter;
use super::labels::read_labels;
use super::or_default;
use super::sasl::read_sasl;
use super::schema_registry::read_schema_registry;
use super::types::{
    ClusterConfig, CommitProbeConfig, CommitProbeMode, ConsumerGroupsConfig, DEFAULT_GROUP_EXCLUDE,
    DEFAULT_TOPIC_EXCLUDE, LagGranularity, LibrdkafkaValue, Secret, SecurityProtocol, TlsConfig,
};
use super::yaml::{Field, Reader, Section};

/// Most clusters one agent runs: each has clients of its own, with a thread per broker.
pub(super) const MAX_CLUSTERS: usize = 1000;

pub(super) fn read_clusters(
    r: &mut Reader<'_>,
    top: &mut Section<'_>,
) -> Option<Vec<ClusterConfig>> {
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
    if sections.len() > MAX_CLUSTERS {
        // Refused before any is read: each costs a few KiB here and clients when running.
        field.error(
            r,
            format!(
                "{} clusters; expected at most {MAX_CLUSTERS} in one agent (run several agents, each with a share)",
                sections.len()
            ),
        );
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
    // A set, not a scan of the ones before: validation stays linear in the number of clusters.
    let mut names = std::collections::HashSet::with_capacity(clusters.len());
    for (i, c) in clusters.iter().enumerate() {
        if !names.insert(c.name.as_str()) {
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

/// librdkafka properties the agent sets itself, either from typed keys or because the
/// measurement rules depend on them (acks=all, no retries, no linger, no consumer group).
const RESERVED_LIBRDKAFKA: [(&str, &str); 21] = [
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
        "batch.num.messages",
        "each heartbeat is a record batch of its own",
    ),
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
fn is_sensitive_property(key: &str) -> bool {
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

/// At most this long, a cluster's name.
const MAX_NAME: usize = 128;

fn read_cluster(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<ClusterConfig> {
    let path = s.path().to_owned();
    let name = match s.field("name") {
        Some(f) => f.non_empty_string(r).and_then(|name| {
            if name.chars().count() > MAX_NAME {
                f.error(
                    r,
                    format!("{} characters; expected a name of at most {MAX_NAME} (it labels every metric)", name.chars().count()),
                );
                None
            } else {
                Some(name)
            }
        }),
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
    let labels = match s.field("labels") {
        Some(f) => read_labels(r, &f),
        None => Some(BTreeMap::new()),
    };
    let mut section = s.section(r, "topics");
    let topics = read_name_filter(r, &mut section, &[DEFAULT_TOPIC_EXCLUDE]);
    section.finish(r);
    let mut section = s.section(r, "consumer_groups");
    let groups = read_name_filter(r, &mut section, &[DEFAULT_GROUP_EXCLUDE]);
    let lag_duration = or_default(section.field("lag_duration"), true, |f| f.bool(r));
    let granularity = match section.field("granularity") {
        Some(f) => f.choice(
            r,
            &[
                ("partition", LagGranularity::Partition),
                ("topic", LagGranularity::Topic),
            ],
            true,
        ),
        None => Some(LagGranularity::Partition),
    };
    section.finish(r);
    let registry_given = s.has("schema_registry");
    let section = s.section(r, "schema_registry");
    let schema_registry = registry_given.then(|| read_schema_registry(r, section));
    let mut section = s.section(r, "commit_probe");
    let commit_enabled = or_default(section.field("enabled"), CommitProbeMode::Auto, |f| {
        f.choice(
            r,
            &[
                ("auto", CommitProbeMode::Auto),
                ("true", CommitProbeMode::On),
                ("false", CommitProbeMode::Off),
            ],
            true,
        )
    });
    let commit_group = section.field("group").map(|f| {
        let group = f.string(r)?;
        if group.trim().is_empty() {
            f.error(
                r,
                "empty; expected the consumer group id the commit probe commits in",
            );
            return None;
        }
        Some(group)
    });
    section.finish(r);
    s.finish(r);

    let protocol = protocol?;
    // The pass-through can turn host-name checks off; the effective setting is what the
    // config shows, and what the agent's own TLS connections do too.
    let host_check_off = librdkafka.as_ref().is_some_and(|map| {
        map.get("ssl.endpoint.identification.algorithm")
            .is_some_and(|v| v.expose().eq_ignore_ascii_case("none"))
    });
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
    let mut tls = tls?;
    if host_check_off {
        tls.verify = false;
    }
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
    let labels = labels?;
    let topics = topics?;
    let schema_registry = match schema_registry {
        Some(read) => Some(read?),
        None => None,
    };
    let consumer_groups = ConsumerGroupsConfig {
        filter: groups?,
        lag_duration: lag_duration?,
        granularity: granularity?,
    };
    let commit_probe = CommitProbeConfig {
        enabled: commit_enabled?,
        group: match commit_group {
            Some(group) => Some(group?),
            None => None,
        },
    };
    Some(ClusterConfig {
        name: name?,
        bootstrap_servers: bootstrap_servers?,
        security_protocol: protocol,
        sasl,
        tls,
        librdkafka: librdkafka.unwrap_or_default(),
        labels,
        client_zone: None,
        topics,
        consumer_groups,
        schema_registry,
        commit_probe,
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
        if let Some((scheme, _)) = server.split_once("://") {
            f.error(
                r,
                format!("{server:?} starts with {scheme}://; bootstrap servers are host:port without a scheme (the protocol goes in security_protocol), e.g. pkc-xxxxx.us-east-1.aws.confluent.cloud:9092"),
            );
            ok = false;
            continue;
        }
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

/// Reads a secret from the file a field names (e.g. a mounted Kubernetes secret).
pub(super) fn read_secret_file(r: &mut Reader<'_>, f: &Field<'_>) -> Option<Secret> {
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

pub(super) fn read_tls(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<TlsConfig> {
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
    if !client_pair_complete(
        r,
        &path,
        cert_file.is_some(),
        key_file.is_some(),
        "mTLS needs both cert_file and key_file",
    ) {
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

/// Whether a client certificate and its key are both given or both absent; otherwise says
/// which one is missing, under `path`.
pub(super) fn client_pair_complete(
    r: &mut Reader<'_>,
    path: &str,
    cert_file: bool,
    key_file: bool,
    message: &str,
) -> bool {
    if cert_file == key_file {
        return true;
    }
    let missing = if cert_file { "key_file" } else { "cert_file" };
    r.error(format!("{path}.{missing}"), None, message);
    false
}
