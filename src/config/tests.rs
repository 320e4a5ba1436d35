use std::io::Write as _;

use super::*;

fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

fn errors_of(text: &str, env: &[(&'static str, &'static str)]) -> Vec<String> {
    let env: &'static [(&str, &str)] = Box::leak(env.to_vec().into_boxed_slice());
    match from_str("test.yaml", text, &env_of(env)) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

const MINIMAL: &str = "clusters:\n  - name: dev\n    bootstrap_servers: localhost:9092\n";

#[test]
fn minimal_config_takes_every_default() {
    let c = from_str("t", MINIMAL, &|_| None).unwrap();
    assert_eq!(c.clusters[0].bootstrap_servers, ["localhost:9092"]);
    assert_eq!(c.clusters[0].security_protocol, SecurityProtocol::Plaintext);
    assert!(c.clusters[0].tls.verify);
    assert_eq!(c.heartbeat.topic, DEFAULT_TOPIC);
    assert_eq!(c.heartbeat.interval, DEFAULT_HEARTBEAT_INTERVAL);
    assert_eq!(c.heartbeat.loss_timeout, DEFAULT_LOSS_TIMEOUT);
    assert_eq!(c.heartbeat.message_timeout, DEFAULT_MESSAGE_TIMEOUT);
    assert!(c.heartbeat.create_topic);
    assert_eq!(c.heartbeat.replication_factor, 3);
    assert_eq!(
        c.checks.connectivity.interval,
        DEFAULT_CONNECTIVITY_INTERVAL
    );
    assert_eq!(c.checks.metadata.interval, DEFAULT_METADATA_INTERVAL);
    assert_eq!(c.checks.topic.interval, DEFAULT_TOPIC_INTERVAL);
    assert!(c.export.otlp.enabled);
    assert_eq!(c.export.otlp.endpoint, DEFAULT_OTLP_GRPC_ENDPOINT);
    assert_eq!(c.export.otlp.protocol, OtlpProtocol::Grpc);
    assert_eq!(c.export.otlp.interval, DEFAULT_EXPORT_INTERVAL);
    assert_eq!(c.export.otlp.compression, Compression::Gzip);
    assert_eq!(c.export.otlp.temporality, Temporality::Cumulative);
    assert_eq!(c.export.otlp.histogram, HistogramKind::Explicit);
    assert_eq!(c.http.listen.to_string(), DEFAULT_HTTP_LISTEN);
    assert!(
        !c.http.prometheus,
        "the Prometheus endpoint is off by default"
    );
    assert_eq!(c.log.format, LogFormat::Text);
}

/// Case name, config text, environment, and exactly the errors expected.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

/// Each bad config and exactly the errors it must produce, all at once.
#[test]
fn bad_configs_report_every_problem_with_its_key() {
    let cases: &[Case] = &[
        (
            "empty file",
            "",
            &[],
            &["the config is empty; expected a mapping with at least a `clusters` list"],
        ),
        (
            "not a mapping",
            "- a\n- b\n",
            &[],
            &[
                "line 1: expected a mapping of keys to values, found a list",
                "clusters: required; expected a list of clusters, each with a name and bootstrap_servers",
            ],
        ),
        (
            "missing clusters",
            "heartbeat: {interval: 1s}\n",
            &[],
            &[
                "clusters: required; expected a list of clusters, each with a name and bootstrap_servers",
            ],
        ),
        (
            "missing required cluster keys",
            "clusters:\n  - security_protocol: PLAINTEXT\n",
            &[],
            &[
                "clusters[0].name (line 2): required; expected the name that labels this cluster's metrics",
                "clusters[0].bootstrap_servers (line 2): required; expected host:port, or a list of them",
            ],
        ),
        (
            "unknown keys at several levels, bad values, undefined env",
            "clusters:\n  - name: dev\n    bootstrap_servers: ${BOOTSTRAP}\n    colour: blue\nheartbeat:\n  interval: 5\n  intervall: 1s\nexport:\n  otlp: {protocol: carrier-pigeon}\nlogging: {}\n",
            &[],
            &[
                "clusters[0].bootstrap_servers (line 3): environment variable BOOTSTRAP is not set (referenced as ${BOOTSTRAP})",
                "clusters[0].colour (line 4): unknown key; expected one of: bootstrap_servers, consumer_groups, labels, librdkafka, name, sasl, schema_registry, security_protocol, tls, topics",
                "heartbeat.interval (line 6): \"5\" has no unit; expected a duration like 500ms, 5s, 1m or 1h",
                "heartbeat.intervall (line 7): unknown key; expected one of: create_topic, interval, loss_timeout, message_timeout, partitions, replication_factor, retention, topic",
                "export.otlp.protocol (line 9): \"carrier-pigeon\" is not valid; expected one of: grpc, http/protobuf, http",
                "logging (line 10): unknown key; expected one of: checks, clusters, export, heartbeat, http, log",
            ],
        ),
        (
            "bad bootstrap server and protocol",
            "clusters:\n  - name: dev\n    bootstrap_servers: [broker1, 'b2:99999']\n    security_protocol: TLS\n",
            &[],
            &[
                "clusters[0].bootstrap_servers (line 3): \"broker1\" is not host:port; expected e.g. pkc-xxxxx.us-east-1.aws.confluent.cloud:9092",
                "clusters[0].bootstrap_servers (line 3): \"b2:99999\" is not host:port; expected e.g. pkc-xxxxx.us-east-1.aws.confluent.cloud:9092",
                "clusters[0].security_protocol (line 4): \"TLS\" is not valid; expected one of: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
            ],
        ),
        (
            "SASL protocol without credentials",
            "clusters:\n  - name: cc\n    bootstrap_servers: x:9092\n    security_protocol: SASL_SSL\n",
            &[],
            &[
                "clusters[0].sasl: required with security_protocol SASL_SSL; expected mechanism and credentials",
            ],
        ),
        (
            "PLAIN without password",
            "clusters:\n  - name: cc\n    bootstrap_servers: x:9092\n    security_protocol: SASL_SSL\n    sasl: {mechanism: PLAIN, username: key}\n",
            &[],
            &[
                "clusters[0].sasl.password: required with mechanism PLAIN; expected password (or password_file) holding the secret",
            ],
        ),
        (
            "unknown mechanism",
            "clusters:\n  - name: cc\n    bootstrap_servers: x:9092\n    security_protocol: SASL_SSL\n    sasl: {mechanism: GSSAPI, username: a, password: b}\n",
            &[],
            &[
                "clusters[0].sasl.mechanism (line 5): \"GSSAPI\" is not valid; expected one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER",
            ],
        ),
        (
            "OAUTHBEARER missing parts",
            "clusters:\n  - name: cc\n    bootstrap_servers: x:9092\n    security_protocol: SASL_SSL\n    sasl:\n      mechanism: OAUTHBEARER\n      oauthbearer: {client_id: id}\n",
            &[],
            &[
                "clusters[0].sasl.oauthbearer.token_endpoint_url: required; expected the OIDC token endpoint URL",
                "clusters[0].sasl.oauthbearer.client_secret: required; expected client_secret (or client_secret_file)",
            ],
        ),
        (
            "sasl with a plaintext protocol",
            "clusters:\n  - name: cc\n    bootstrap_servers: x:9092\n    sasl: {mechanism: PLAIN, username: a, password: b}\n",
            &[],
            &[
                "clusters[0].sasl: not used with security_protocol PLAINTEXT; use SASL_SSL or SASL_PLAINTEXT, or remove sasl",
            ],
        ),
        (
            "missing secret file and CA file",
            "clusters:\n  - name: cc\n    bootstrap_servers: x:9092\n    security_protocol: SASL_SSL\n    sasl: {username: a, password_file: /nonexistent/secret}\n    tls: {ca_file: /nonexistent/ca.pem}\n",
            &[],
            &[
                "clusters[0].sasl.password_file (line 5): cannot read file /nonexistent/secret: No such file or directory (os error 2)",
                "clusters[0].tls.ca_file (line 6): file /nonexistent/ca.pem does not exist or is not a file",
            ],
        ),
        (
            "reserved and unknown librdkafka properties",
            "clusters:\n  - name: dev\n    bootstrap_servers: x:9092\n    librdkafka: {acks: '1', socket.keepalive.enable: 'true', no.such.property: x}\n",
            &[],
            &[
                "clusters[0].librdkafka.acks (line 4): set by cc-heartbeat and cannot be overridden: heartbeats are always sent with acks=all",
            ],
        ),
        (
            "unknown librdkafka property",
            "clusters:\n  - name: dev\n    bootstrap_servers: x:9092\n    librdkafka: {socket.keepalive.enable: 'true', no.such.property: x}\n",
            &[],
            &[
                "clusters[0].librdkafka.no.such.property (line 4): librdkafka rejected this property: No such configuration property: \"no.such.property\"",
            ],
        ),
        (
            "duplicate cluster names",
            "clusters:\n  - {name: a, bootstrap_servers: 'x:1'}\n  - {name: a, bootstrap_servers: 'y:1'}\n",
            &[],
            &[
                "clusters[1].name: \"a\" is used by another cluster; names label the metrics and must be unique",
            ],
        ),
        (
            "timeouts that contradict each other",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nheartbeat: {loss_timeout: 2s, message_timeout: 5s}\nchecks: {connectivity: {interval: 1s, timeout: 2s}}\n",
            &[],
            &[
                "heartbeat.loss_timeout: 2s must be longer than heartbeat.message_timeout (5s), or an unacked heartbeat would count as lost",
                "checks.connectivity.timeout: 2s must be shorter than checks.connectivity.interval (1s)",
            ],
        ),
        (
            "bad export values",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nexport:\n  otlp: {endpoint: 'localhost:4317', temporality: sometimes, histogram: log, compression: zip}\nhttp: {listen: 'everywhere'}\nlog: {level: loud, format: xml}\n",
            &[],
            &[
                "export.otlp.compression (line 3): \"zip\" is not valid; expected one of: gzip, none",
                "export.otlp.temporality (line 3): \"sometimes\" is not valid; expected one of: cumulative, delta",
                "export.otlp.histogram (line 3): \"log\" is not valid; expected one of: explicit, exponential, explicit_bucket_histogram, base2_exponential_bucket_histogram",
                "export.otlp.endpoint: \"localhost:4317\" is not an OTLP endpoint; expected a URL like http://collector:4317",
                "http.listen (line 4): \"everywhere\" is not an address; expected ip:port like 0.0.0.0:8080",
                "log.level (line 5): \"loud\" is not a log level; expected error, warn, info, debug, trace or off, or directives like info,librdkafka=debug",
                "log.format (line 5): \"xml\" is not valid; expected one of: text, json",
            ],
        ),
        (
            "bad OTEL environment variables",
            MINIMAL,
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "ten"),
            ],
            &[
                "OTEL_EXPORTER_OTLP_PROTOCOL: \"http/json\" is not valid; expected one of: grpc, http/protobuf, http",
                "OTEL_METRIC_EXPORT_INTERVAL: \"ten\" is not valid; expected a whole number of milliseconds from 1000 to 3600000",
            ],
        ),
        (
            "OTEL durations out of bounds",
            MINIMAL,
            &[
                ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "99999999999"),
            ],
            &[
                "OTEL_METRIC_EXPORT_INTERVAL: \"0\" is not valid; expected a whole number of milliseconds from 1000 to 3600000",
                "OTEL_EXPORTER_OTLP_TIMEOUT: \"99999999999\" is not valid; expected a whole number of milliseconds from 100 to 300000",
            ],
        ),
        (
            "durations beyond each key's maximum",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nheartbeat: {interval: 100000000y, message_timeout: 2h, loss_timeout: 2d, retention: 30d 1h}\nchecks:\n  connectivity: {interval: 61m, timeout: 301s}\n  metadata: {interval: 25h}\n  topic: {interval: 8d}\n  offsets: {interval: 2d}\n  consumer_groups: {interval: 2d}\n  schema_registry: {interval: 2d, timeout: 1h}\nexport:\n  otlp: {interval: 2h, timeout: 6m, delta_buffer: 2d}\n",
            &[],
            &[
                "heartbeat.interval (line 2): 100000000years is too long; expected from 100ms to 1h",
                "heartbeat.loss_timeout (line 2): 2days is too long; expected from 100ms to 1day",
                "heartbeat.message_timeout (line 2): 2h is too long; expected from 100ms to 1h",
                "heartbeat.retention (line 2): 30days 1h is too long; expected from 1m to 30days",
                "checks.connectivity.interval (line 4): 1h 1m is too long; expected from 100ms to 1h",
                "checks.connectivity.timeout (line 4): 5m 1s is too long; expected from 10ms to 5m",
                "checks.metadata.interval (line 5): 1day 1h is too long; expected from 1s to 1day",
                "checks.topic.interval (line 6): 8days is too long; expected from 1s to 1day",
                "checks.offsets.interval (line 7): 2days is too long; expected from 1s to 1day",
                "checks.consumer_groups.interval (line 8): 2days is too long; expected from 1s to 1day",
                "checks.schema_registry.interval (line 9): 2days is too long; expected from 1s to 1day",
                "checks.schema_registry.timeout (line 9): 1h is too long; expected from 10ms to 5m",
                "export.otlp.interval (line 11): 2h is too long; expected from 1s to 1h",
                "export.otlp.timeout (line 11): 6m is too long; expected from 100ms to 5m",
                "export.otlp.delta_buffer (line 11): 2days is too long; expected from 0s to 1day",
            ],
        ),
        (
            "Prometheus endpoint with exponential histograms",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nexport: {otlp: {histogram: exponential}}\nhttp: {prometheus: true}\n",
            &[],
            &[
                "http.prometheus: the Prometheus endpoint cannot expose exponential histograms; set export.otlp.histogram: explicit, or scrape them through a collector",
            ],
        ),
        (
            "bad labels",
            "clusters:\n  - name: a\n    bootstrap_servers: x:1\n    labels: {env: prod, kafka.cluster.id: x, topic: t, 9lives: x, empty: '', ok_name: fine}\n",
            &[],
            &[
                "clusters[0].labels.9lives (line 4): not a label name; expected up to 64 letters, digits, '_' or '.', starting with a letter or '_' (e.g. env)",
                "clusters[0].labels.empty (line 4): expected a value of 1 to 256 characters",
                "clusters[0].labels.kafka.cluster.id (line 4): set by cc-heartbeat itself; choose a name outside kafka.*, messaging.*, schema_registry.*, server.*, service.*, cc_heartbeat.* and error.type, group, topic, partition",
                "clusters[0].labels.topic (line 4): set by cc-heartbeat itself; choose a name outside kafka.*, messaging.*, schema_registry.*, server.*, service.*, cc_heartbeat.* and error.type, group, topic, partition",
            ],
        ),
        (
            "a name too long, a key that is no key",
            "clusters:\n  - name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n    bootstrap_servers: x:1\nroot:$y$j9T$secrethash:19000:0: 1\n",
            &[],
            &[
                "clusters[0].name (line 2): 132 characters; expected a name of at most 128 (it labels every metric)",
                "<a key of 30 characters, not shown> (line 4): unknown key; expected one of: checks, clusters, export, heartbeat, http, log",
            ],
        ),
        (
            "a bootstrap server written as a URL",
            "clusters:\n  - name: a\n    bootstrap_servers: ['http://broker:9092', 'SASL_SSL://b:9093']\n",
            &[],
            &[
                "clusters[0].bootstrap_servers (line 3): \"http://broker:9092\" starts with http://; bootstrap servers are host:port without a scheme (the protocol goes in security_protocol), e.g. pkc-xxxxx.us-east-1.aws.confluent.cloud:9092",
                "clusters[0].bootstrap_servers (line 3): \"SASL_SSL://b:9093\" starts with SASL_SSL://; bootstrap servers are host:port without a scheme (the protocol goes in security_protocol), e.g. pkc-xxxxx.us-east-1.aws.confluent.cloud:9092",
            ],
        ),
        (
            "bad schema registries, credentials never echoed",
            "clusters:\n  - name: a\n    bootstrap_servers: x:1\n    schema_registry: {url: 'https://key:hunter2@sr.example'}\n  - name: b\n    bootstrap_servers: x:1\n    schema_registry: {url: 'ftp://sr.example', basic_auth: {username: key}}\n",
            &[],
            &[
                "clusters[0].schema_registry.url (line 4): the URL holds credentials; put them under basic_auth; expected e.g. https://psrc-xxxxx.us-east-2.aws.confluent.cloud",
                "clusters[1].schema_registry.url (line 7): scheme \"ftp\" is not http or https; expected e.g. https://psrc-xxxxx.us-east-2.aws.confluent.cloud",
                "clusters[1].schema_registry.basic_auth: expected username and password (or password_file): the registry's API key and secret",
            ],
        ),
        (
            "invalid YAML",
            "clusters:\n  - name: a\n   bootstrap_servers: x\n",
            &[],
            &[
                "line 3: not valid YAML: while parsing a block collection, did not find expected '-' indicator",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, text, env, expected) in cases {
        let got = errors_of(text, env);
        if got != *expected {
            failures.push(format!(
                "case {name:?}:\n  expected {expected:#?}\n  got {got:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn env_references_and_otel_variables_resolve() {
    let text = "clusters:\n  - name: cc\n    bootstrap_servers: ${BOOT}\n    security_protocol: SASL_SSL\n    sasl: {username: '${KEY}', password: '${SECRET}'}\n";
    let env = env_of(&[
        ("BOOT", "a:9092,b:9092"),
        ("KEY", "ABC"),
        ("SECRET", "s3cr3t"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=abc%3D%3D,other=1"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "2500"),
        ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
    ]);
    let c = from_str("t", text, &env).unwrap();
    let cluster = &c.clusters[0];
    assert_eq!(cluster.bootstrap_servers, ["a:9092", "b:9092"]);
    let sasl = cluster.sasl.as_ref().unwrap();
    assert_eq!(sasl.username.as_deref(), Some("ABC"));
    assert_eq!(sasl.password.as_ref().unwrap().expose(), "s3cr3t");
    let otlp = &c.export.otlp;
    assert_eq!(otlp.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(otlp.endpoint, "http://collector:4318/v1/metrics");
    assert_eq!(otlp.interval, Duration::from_millis(2500));
    assert_eq!(otlp.temporality, Temporality::Delta);
    assert_eq!(otlp.headers["x-api-key"].expose(), "abc==");
    assert_eq!(otlp.headers["other"].expose(), "1");
}

#[test]
fn the_config_file_wins_over_otel_variables() {
    let text =
        format!("{MINIMAL}export:\n  otlp: {{endpoint: 'http://file:4317', interval: 3s}}\n");
    let env = env_of(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
    ]);
    let c = from_str("t", &text, &env).unwrap();
    assert_eq!(c.export.otlp.endpoint, "http://file:4317");
    assert_eq!(c.export.otlp.interval, Duration::from_secs(3));
}

#[test]
fn otel_metrics_exporter_none_switches_export_off() {
    let c = from_str("t", MINIMAL, &env_of(&[("OTEL_METRICS_EXPORTER", "none")])).unwrap();
    assert!(!c.export.otlp.enabled);
}

#[test]
fn secrets_are_read_from_files_and_never_rendered() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "from-a-file-secret").unwrap();
    let text = format!(
        "clusters:\n  - name: cc\n    bootstrap_servers: x:9092\n    security_protocol: SASL_SSL\n    sasl: {{mechanism: SCRAM-SHA-512, username: u, password_file: {}}}\n    librdkafka: {{ssl.key.password: librdkafka-secret, client.id: visible-id}}\n    schema_registry: {{url: 'https://sr.example', basic_auth: {{username: key, password: registry-secret}}}}\nexport:\n  otlp: {{headers: {{x-honeycomb-team: '${{HC_KEY}}'}}}}\n",
        file.path().display()
    );
    let c = from_str("t", &text, &env_of(&[("HC_KEY", "header-secret")])).unwrap();
    let sasl = c.clusters[0].sasl.as_ref().unwrap();
    assert_eq!(
        sasl.password.as_ref().unwrap().expose(),
        "from-a-file-secret"
    );
    let rendered = render_redacted(&c);
    for secret in [
        "from-a-file-secret",
        "librdkafka-secret",
        "header-secret",
        "registry-secret",
    ] {
        assert!(
            !rendered.contains(secret),
            "{secret} leaked into:\n{rendered}"
        );
        assert!(
            !format!("{c:?}").contains(secret),
            "{secret} leaked into Debug"
        );
    }
    assert!(rendered.contains("visible-id"), "{rendered}");
    assert!(
        rendered.contains("x-honeycomb-team: \"<redacted>\""),
        "{rendered}"
    );
    assert!(rendered.contains("password: \"<redacted>\""), "{rendered}");
}

#[test]
fn errors_never_echo_secret_values() {
    // A secret that fails validation (empty after interpolation) is named, not shown.
    let text = "clusters:\n  - name: cc\n    bootstrap_servers: x:9092\n    security_protocol: SASL_SSL\n    sasl: {username: u, password: '${EMPTY}'}\n    librdkafka: {ssl.key.password: [not, scalar]}\n";
    let errors = errors_of(text, &[("EMPTY", "")]).join("\n");
    assert!(
        errors.contains("clusters[0].sasl.password (line 5): must not be empty"),
        "{errors}"
    );
}

/// A config in which every key differs from its default, so a key that `render` drops reads
/// back as its default and the comparison fails.
fn config_without_defaults() -> (Config, tempfile::NamedTempFile) {
    let mut pem = tempfile::NamedTempFile::new().unwrap();
    writeln!(pem, "pem").unwrap();
    let p = pem.path().display();
    let text = format!(
        "clusters:
  - name: everything
    bootstrap_servers: [a.example:9093, b.example:9094]
    security_protocol: SASL_SSL
    sasl: {{mechanism: SCRAM-SHA-512, username: u, password: p}}
    tls: {{ca_file: {p}, cert_file: {p}, key_file: {p}, key_password: k, verify: false}}
    librdkafka: {{socket.keepalive.enable: 'true'}}
    labels: {{env: prod, cost.center: '42'}}
    topics: {{include: ['^orders-'], exclude: ['-dlq$']}}
    consumer_groups: {{include: ['^billing'], exclude: [], lag_duration: false}}
    schema_registry: {{url: 'https://sr.example:8443/base', basic_auth: {{username: key, password: registry-secret}}, tls: {{ca_file: {p}, verify: false}}}}
  - name: oauth
    bootstrap_servers: c.example:9095
    security_protocol: SASL_PLAINTEXT
    sasl:
      mechanism: OAUTHBEARER
      oauthbearer: {{token_endpoint_url: 'https://idp/token', client_id: i, client_secret: s, scope: kafka, extensions: {{logicalCluster: lkc-1}}}}
heartbeat: {{topic: hb, interval: 2s, loss_timeout: 30s, message_timeout: 7s, create_topic: false, partitions: 9, replication_factor: 2, retention: 2h}}
checks:
  connectivity: {{interval: 7s, timeout: 3s}}
  metadata: {{interval: 45s}}
  topic: {{interval: 2h}}
  offsets: {{enabled: false, interval: 2m, max_series: 500}}
  consumer_groups: {{enabled: true, interval: 45s, max_series: 700}}
  schema_registry: {{interval: 20s, timeout: 3s}}
export:
  otlp: {{enabled: false, endpoint: 'http://collector:4318', protocol: http/protobuf, interval: 20s, timeout: 4s, headers: {{x-key: v}}, compression: none, temporality: delta, histogram: explicit, delta_buffer: 10m}}
http: {{listen: '127.0.0.1:9999', prometheus: true}}
log: {{level: debug, format: json}}
"
    );
    (from_str("t", &text, &|_| None).unwrap(), pem)
}

#[test]
fn rendered_config_reads_back_to_the_same_config() {
    let (c, _pem) = config_without_defaults();
    let rendered = render_redacted(&c);
    let again =
        from_str("rendered", &rendered, &|_| None).unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    // Debug shows every field (secrets as <redacted>, which is also what they read back as).
    assert_eq!(format!("{again:#?}"), format!("{c:#?}"), "{rendered}");
}

const EXAMPLE: &str = include_str!("../../config.example.yaml");

#[test]
fn the_example_config_is_valid() {
    let env = env_of(&[("CC_API_KEY", "key"), ("CC_API_SECRET", "secret")]);
    let c = from_str("config.example.yaml", EXAMPLE, &env).unwrap();
    assert_eq!(c.clusters[0].name, "prod-east");
    assert_eq!(c.clusters[0].security_protocol, SecurityProtocol::SaslSsl);
}

/// Every key path the agent knows, from a rendered config: user-named keys (librdkafka
/// properties, headers, extensions) are not descended into.
fn key_paths(
    value: &serde_json::Value,
    prefix: &str,
    out: &mut std::collections::BTreeSet<String>,
) {
    const FREE_FORM: [&str; 4] = ["librdkafka", "headers", "extensions", "labels"];
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone());
                if !FREE_FORM.contains(&k.as_str()) {
                    key_paths(v, &path, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                key_paths(item, prefix, out);
            }
        }
        _ => {}
    }
}

/// Every key path written in a YAML document by indentation, commented-out keys included
/// (`  # key: value` documents `key` at the indentation after the `# `).
fn documented_paths(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    for line in text.lines() {
        let lead = line.len() - line.trim_start().len();
        let mut rest = line.trim_start();
        let mut indent = lead;
        if let Some(uncommented) = rest.strip_prefix('#') {
            let uncommented = uncommented.strip_prefix(' ').unwrap_or(uncommented);
            indent += uncommented.len() - uncommented.trim_start().len();
            rest = uncommented.trim_start();
        }
        if let Some(item) = rest.strip_prefix("- ") {
            indent += 2;
            rest = item;
        }
        let Some((key, _)) = rest.split_once(':') else {
            continue;
        };
        let is_key = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !is_key {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).chain([key]).collect();
        out.insert(path.join("."));
        stack.push((indent, key.to_owned()));
    }
    out
}

/// Every key the agent knows shows up in the example (commented out or not), at its place.
#[test]
fn the_example_config_documents_every_key() {
    let (c, _pem) = config_without_defaults();
    let mut known = std::collections::BTreeSet::new();
    key_paths(&serde_json::to_value(&c).unwrap(), "", &mut known);
    // Keys that are read but render under another name.
    known.extend(
        [
            "clusters.sasl.password_file",
            "clusters.sasl.oauthbearer.client_secret_file",
            "clusters.schema_registry.basic_auth.password_file",
        ]
        .map(String::from),
    );
    let documented = documented_paths(EXAMPLE);
    let missing: Vec<&String> = known.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "config.example.yaml does not document {missing:?}"
    );
}

#[test]
fn documented_paths_follow_indentation_and_comments() {
    let paths = documented_paths(
        "a:\n  # b: 1\n  c:\n    #   d: 2\n    - e: 3\n      f: 4\ng: 5\n# Text: not a key path here\n",
    );
    let expected = ["a", "a.b", "a.c", "a.c.d", "a.c.e", "a.c.f", "g", "Text"];
    assert_eq!(paths, expected.iter().map(|s| s.to_string()).collect());
}
