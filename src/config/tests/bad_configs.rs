//! Every bad config the reader refuses, with the exact errors it gives.

use super::{MINIMAL, errors_of};

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
                "clusters[0].colour (line 4): unknown key; expected one of: bootstrap_servers, commit_probe, consumer_groups, labels, librdkafka, name, sasl, schema_registry, security_protocol, tls, topics",
                "heartbeat.interval (line 6): \"5\" has no unit; expected a duration like 500ms, 5s, 1m or 1h",
                "heartbeat.intervall (line 7): unknown key; expected one of: create_topic, interval, loss_timeout, message_timeout, partitions, read_back, replication_factor, retention, topic",
                "export.otlp.protocol (line 9): \"carrier-pigeon\" is not valid; expected one of: grpc, http/protobuf, http",
                "logging (line 10): unknown key; expected one of: agent, checks, clusters, export, heartbeat, http, log",
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
                "clusters[0].sasl (line 2): required with security_protocol SASL_SSL; expected mechanism and credentials",
            ],
        ),
        (
            "PLAIN without password",
            "clusters:\n  - name: cc\n    bootstrap_servers: x:9092\n    security_protocol: SASL_SSL\n    sasl: {mechanism: PLAIN, username: key}\n",
            &[],
            &[
                "clusters[0].sasl.password (line 5): required with mechanism PLAIN; expected password (or password_file) holding the secret",
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
                "clusters[0].sasl.oauthbearer.token_endpoint_url (line 7): required; expected the OIDC token endpoint URL",
                "clusters[0].sasl.oauthbearer.client_secret (line 7): required; expected client_secret (or client_secret_file)",
            ],
        ),
        (
            "sasl with a plaintext protocol",
            "clusters:\n  - name: cc\n    bootstrap_servers: x:9092\n    sasl: {mechanism: PLAIN, username: a, password: b}\n",
            &[],
            &[
                "clusters[0].sasl (line 4): not used with security_protocol PLAINTEXT; use SASL_SSL or SASL_PLAINTEXT, or remove sasl",
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
                "clusters[1].name (line 3): \"a\" is used by another cluster; names label the metrics and must be unique",
            ],
        ),
        (
            "timeouts that contradict each other",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nheartbeat: {loss_timeout: 2s, message_timeout: 5s}\nchecks: {connectivity: {interval: 1s, timeout: 2s}}\n",
            &[],
            &[
                "heartbeat.loss_timeout (line 2): 2s must be longer than heartbeat.message_timeout (5s), or an unacked heartbeat would count as lost",
                "checks.connectivity.timeout (line 3): 2s must be shorter than checks.connectivity.interval (1s)",
            ],
        ),
        (
            "bad export values",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nexport:\n  otlp: {endpoint: 'localhost:4317', temporality: sometimes, histogram: log, compression: zip}\nhttp: {listen: 'everywhere'}\nlog: {level: loud, format: xml}\n",
            &[],
            &[
                "export.otlp.compression (line 3): \"zip\" is not valid; expected one of: gzip, none",
                "export.otlp.temporality (line 3): \"sometimes\" is not valid; expected one of: cumulative, delta, lowmemory",
                "export.otlp.histogram (line 3): \"log\" is not valid; expected one of: explicit, exponential, explicit_bucket_histogram, base2_exponential_bucket_histogram",
                "export.otlp.endpoint (line 3): \"localhost:4317\" is not an OTLP endpoint; expected a URL like http://collector:4317",
                "http.listen (line 4): \"everywhere\" is not an address; expected ip:port like 0.0.0.0:8080",
                "log.level (line 5): \"loud\" is not a log level; expected error, warn, info, debug, trace or off, or directives like info,librdkafka=debug",
                "log.format (line 5): \"xml\" is not valid; expected one of: text, json",
            ],
        ),
        (
            "unknown choices of the metric names and the lag granularity",
            "clusters:\n  - name: a\n    bootstrap_servers: 'x:1'\n    consumer_groups: {granularity: row}\nexport: {messaging_names: otel}\n",
            &[],
            &[
                "clusters[0].consumer_groups.granularity (line 4): \"row\" is not valid; expected one of: partition, topic",
                "export.messaging_names (line 5): \"otel\" is not valid; expected one of: agent, semconv, both",
            ],
        ),
        (
            "TLS files to the collector that are not there",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nexport:\n  otlp:\n    endpoint: 'https://collector:4317'\n    tls: {ca_file: /nonexistent/ca.pem, cert_file: /nonexistent/agent.pem, key_file: Cargo.toml}\n",
            &[],
            &[
                "export.otlp.tls.ca_file (line 5): file /nonexistent/ca.pem does not exist or is not a file",
                "export.otlp.tls.cert_file (line 5): file /nonexistent/agent.pem does not exist or is not a file",
            ],
        ),
        (
            "half an mTLS pair to the collector",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nexport:\n  otlp:\n    endpoint: 'https://collector:4317'\n    tls: {cert_file: Cargo.toml}\n",
            &[],
            &[
                "export.otlp.tls.key_file (line 5): mTLS to the collector needs both cert_file and key_file (or OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY)",
            ],
        ),
        (
            "TLS settings on a plain-text endpoint",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nexport:\n  otlp:\n    endpoint: 'http://collector:4317'\n    tls: {ca_file: Cargo.toml}\n",
            &[],
            &["export.otlp.tls (line 5): TLS settings need an https:// endpoint"],
        ),
        (
            "OTEL TLS variables naming files that are not there",
            MINIMAL,
            &[
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
                    "/nonexistent/key.pem",
                ),
            ],
            &[
                "OTEL_EXPORTER_OTLP_CERTIFICATE: file /nonexistent/ca.pem does not exist or is not a file",
                "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY: file /nonexistent/key.pem does not exist or is not a file",
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
                "<a key of 30 characters, not shown> (line 4): unknown key; expected one of: agent, checks, clusters, export, heartbeat, http, log",
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
                "clusters[1].schema_registry.basic_auth (line 7): expected username and password (or password_file): the registry's API key and secret",
            ],
        ),
        (
            "a long value is echoed only in part",
            concat!(
                "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nlog: {format: ",
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                "}\n"
            ),
            &[],
            &[
                "log.format (line 2): \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\" (100 characters) is not valid; expected one of: text, json",
            ],
        ),
        (
            "a token endpoint URL with credentials or no URL at all, never echoed",
            "clusters:\n  - name: a\n    bootstrap_servers: x:1\n    security_protocol: SASL_SSL\n    sasl: {mechanism: OAUTHBEARER, oauthbearer: {token_endpoint_url: 'https://id:hunter2@idp/token', client_id: i, client_secret: s}}\n  - name: b\n    bootstrap_servers: x:1\n    security_protocol: SASL_SSL\n    sasl: {mechanism: OAUTHBEARER, oauthbearer: {token_endpoint_url: 'idp/token', client_id: i, client_secret: s}}\n",
            &[],
            &[
                "clusters[0].sasl.oauthbearer.token_endpoint_url (line 5): the URL holds credentials; put them under client_id and client_secret; expected e.g. https://idp.example.com/oauth2/token",
                "clusters[1].sasl.oauthbearer.token_endpoint_url (line 9): not a URL (relative URL without a base); expected e.g. https://idp.example.com/oauth2/token",
            ],
        ),
        (
            "invalid YAML",
            "clusters:\n  - name: a\n   bootstrap_servers: x\n",
            &[],
            &[
                "clusters[0] (line 3): not valid YAML: while parsing a block collection, did not find expected '-' indicator",
            ],
        ),
        (
            "traces: a ratio past 1, a bad threshold, an endpoint without a scheme, an unknown key",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nexport:\n  traces: {sample_ratio: 1.5, slow: {produce: 0s}, endpoint: 'collector:4317', ratio: 1}\n",
            &[],
            &[
                "export.traces.endpoint (line 3): \"collector:4317\" is not an OTLP endpoint; expected a URL like http://collector:4318/v1/traces",
                "export.traces.sample_ratio (line 3): \"1.5\" is not a share; expected a number from 0 to 1 (0.01) or a percentage (1%)",
                "export.traces.slow.produce (line 3): 0s is too short; expected from 1ms to 1h",
                "export.traces.ratio (line 3): unknown key; expected one of: enabled, endpoint, sample_ratio, slow",
            ],
        ),
        (
            "logs: a bad level, an endpoint without a scheme, an unknown key",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nexport:\n  logs: {level: loud, endpoint: 'loki:3100', format: json}\n",
            &[("OTEL_LOGS_EXPORTER", "syslog")],
            &[
                "OTEL_LOGS_EXPORTER: \"syslog\" is not supported; expected otlp or none",
                "export.logs.level (line 3): \"loud\" is not a log level; expected error, warn, info, debug, trace or off, or directives like info,librdkafka=debug",
                "export.logs.endpoint (line 3): \"loki:3100\" is not an OTLP endpoint; expected a URL like http://collector:4318/v1/logs",
                "export.logs.format (line 3): unknown key; expected one of: enabled, endpoint, level",
            ],
        ),
        (
            "traces: standard variables out of their range",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\n",
            &[
                ("OTEL_TRACES_EXPORTER", "zipkin"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "half"),
            ],
            &[
                "OTEL_TRACES_EXPORTER: \"zipkin\" is not supported; expected otlp or none",
                "OTEL_TRACES_SAMPLER_ARG: \"half\" is not a ratio; expected a number from 0 to 1",
            ],
        ),
        (
            "a delta buffer too large",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nexport:\n  otlp: {delta_buffer_size: 2GiB}\n",
            &[],
            &[
                "export.otlp.delta_buffer_size (line 3): 2GiB is too large; expected from 0B to 1GiB",
            ],
        ),
        (
            "a delta buffer size without a unit",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nexport:\n  otlp: {delta_buffer_size: 16777216}\n",
            &[],
            &[
                "export.otlp.delta_buffer_size (line 3): \"16777216\" is not a size; expected a number with a unit, like 512KiB, 16MiB or 1GiB",
            ],
        ),
        (
            "an agent zone empty, or with a control character, and an unknown agent key",
            "agent: {zone: '', region: x}\nclusters: [{name: a, bootstrap_servers: 'x:1'}]\n",
            &[],
            &[
                "agent.zone (line 1): must not be empty",
                "agent.region (line 1): unknown key; expected one of: zone",
            ],
        ),
        (
            "a key twice",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nheartbeat:\n  topic: a\n  topic: b\n",
            &[],
            &["heartbeat.topic (line 4): not valid YAML: duplicated key in mapping"],
        ),
        (
            "a key twice in a flow mapping in a list",
            "clusters:\n  - {name: a, bootstrap_servers: 'x:1'}\n  - {name: b, name: c, bootstrap_servers: 'x:1'}\n",
            &[],
            &["clusters[1].name (line 3): not valid YAML: duplicated key in mapping"],
        ),
        (
            "the commit probe's keys",
            "clusters:\n  - name: a\n    bootstrap_servers: 'x:1'\n    commit_probe: {enabled: maybe, group: ''}\nchecks:\n  commit: {interval: 5s, timeout: 500ms}\n",
            &[],
            &[
                "clusters[0].commit_probe.enabled (line 4): \"maybe\" is not valid; expected one of: auto, true, false",
                "clusters[0].commit_probe.group (line 4): empty; expected the consumer group id the commit probe commits in",
                "checks.commit.timeout (line 6): 500ms is too short; expected from 2s to 5m",
            ],
        ),
        (
            "a commit timeout as long as its interval",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nchecks:\n  commit: {interval: 5s, timeout: 5s}\n",
            &[],
            &[
                "checks.commit.timeout (line 3): 5s must be shorter than checks.commit.interval (5s)",
            ],
        ),
        (
            "an escaped surrogate",
            "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nheartbeat:\n  topic: \"\\ud800\"\n",
            &[],
            &[
                "heartbeat.topic (line 3): not valid YAML: while parsing a quoted scalar, found invalid Unicode character escape code",
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
