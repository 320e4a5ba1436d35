use std::io::Write as _;

use super::*;

mod bad_configs;

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
    // Every secret-bearing key holds a non-empty value next to something wrong with the same
    // setting, so an error that quoted what it saw would quote the secret.
    let secrets = [
        "sasl-s3cret-81f",
        "key-s3cret-2b4",
        "sr-s3cret-93c",
        "url-s3cret-5d0",
        "hdr-s3cret-7e1",
        "oidc-s3cret-6a2",
        "env-s3cret-0c9",
    ];
    let text = "clusters:\n  - name: cc\n    bootstrap_servers: x:9092\n    security_protocol: SASL_SSL\n\
         \x20   sasl: {mechanism: PLAINN, username: u, password: 'sasl-s3cret-81f'}\n\
         \x20   tls: {key_password: 'key-s3cret-2b4', cert_file: /nonexistent/cert.pem}\n\
         \x20   schema_registry: {url: 'ftp://user:url-s3cret-5d0@sr.example', basic_auth: {username: k, password: 'sr-s3cret-93c', passwd: x}}\n\
         \x20   librdkafka: {ssl.key.password: [not, scalar]}\n\
         \x20 - name: oidc\n    bootstrap_servers: y:9092\n    security_protocol: SASL_SSL\n\
         \x20   sasl: {mechanism: OAUTHBEARER, oauthbearer: {token_endpoint_url: 'gopher://idp', client_id: i, client_secret: 'oidc-s3cret-6a2'}}\n\
         \x20 - name: env\n    bootstrap_servers: z:9092\n    security_protocol: SASL_SSL\n\
         \x20   sasl: {username: u, password: '${FROM_ENV}', password_file: /run/secret}\n\
         export: {otlp: {endpoint: 'http://c:4317', headers: {'bad header': 'hdr-s3cret-7e1'}}}\n";
    let errors = errors_of(text, &[("FROM_ENV", "env-s3cret-0c9")]);
    let all = errors.join("\n");
    // The errors are there, each naming its key.
    for key in [
        "clusters[0].sasl.mechanism",
        "clusters[0].tls.cert_file",
        "clusters[0].schema_registry.url",
        "clusters[0].schema_registry.basic_auth.passwd",
        "clusters[1].sasl.oauthbearer.token_endpoint_url",
        "clusters[2].sasl",
        "export.otlp.headers",
    ] {
        assert!(all.contains(key), "no error for {key}:\n{all}");
    }
    for secret in secrets {
        assert!(!all.contains(secret), "{secret} echoed:\n{all}");
    }
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
    consumer_groups: {{include: ['^billing'], exclude: [], lag_duration: false, granularity: topic}}
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

const EXAMPLE: &str = include_str!("../../../config.example.yaml");

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

#[test]
fn collector_tls_and_a_scheme_less_endpoint_come_from_the_standard_variables() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        from_str("t", MINIMAL, &env_of(vars)).unwrap().export.otlp
    };
    let secure = env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "Cargo.toml"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
            "Cargo.toml",
        ),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "Cargo.lock"),
    ]);
    assert_eq!(secure.endpoint, "https://collector:4317");
    assert_eq!(
        secure.tls,
        OtlpTls {
            ca_file: Some("Cargo.toml".into()),
            cert_file: Some("Cargo.toml".into()),
            key_file: Some("Cargo.lock".into()),
        }
    );
    let insecure = env(&[
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "collector:4317"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
    ]);
    assert_eq!(insecure.endpoint, "http://collector:4317");
    assert_eq!(insecure.tls, OtlpTls::default());
    // The file's key wins over the variable.
    let file = from_str(
        "t",
        "clusters: [{name: a, bootstrap_servers: 'x:1'}]\nexport: {otlp: {endpoint: 'https://c:4317', tls: {ca_file: Cargo.lock}, temporality: lowmemory}}\n",
        &env_of(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "Cargo.toml")]),
    )
    .unwrap()
    .export
    .otlp;
    assert_eq!(file.tls.ca_file, Some("Cargo.lock".into()));
    assert_eq!(file.temporality, Temporality::LowMemory);
}

#[test]
fn a_file_that_is_not_utf8_is_refused_at_its_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.yaml");
    std::fs::write(
        &path,
        b"clusters: [{name: a, bootstrap_servers: 'x:1'}]\nheartbeat:\n  topic: caf\xe9\n",
    )
    .unwrap();
    let errors = load(&path).unwrap_err().errors;
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        ["heartbeat.topic (line 3): not UTF-8; expected a YAML file in UTF-8"]
    );
}

#[test]
fn inputs_past_the_memory_budget_are_refused_with_their_limit() {
    let clusters: String = (0..1001)
        .map(|i| format!("  - {{name: c{i}, bootstrap_servers: 'b:1'}}\n"))
        .collect();
    assert_eq!(
        errors_of(&format!("clusters:\n{clusters}"), &[]),
        [
            "clusters (line 2): 1001 clusters; expected at most 1000 in one agent (run several agents, each with a share)"
        ]
    );
    let patterns: Vec<String> = (0..65).map(|i| format!("'^t{i}'")).collect();
    assert_eq!(
        errors_of(
            &format!(
                "clusters: [{{name: a, bootstrap_servers: 'b:1', topics: {{include: [{}]}}}}]\n",
                patterns.join(", ")
            ),
            &[]
        ),
        [
            "clusters[0].topics.include (line 1): 65 patterns; expected at most 64 (join alternatives in one: '^(orders|payments)-')"
        ]
    );
    // 17 clusters of 64 different patterns each: the 1,025th is refused; the same pattern
    // in every cluster counts once.
    let distinct: String = (0..17)
        .map(|c| {
            let list: Vec<String> = (0..64).map(|p| format!("'^c{c}p{p}'")).collect();
            format!(
                "  - {{name: c{c}, bootstrap_servers: 'b:1', topics: {{include: [{}]}}}}\n",
                list.join(", ")
            )
        })
        .collect();
    let errors = errors_of(&format!("clusters:\n{distinct}"), &[]);
    assert_eq!(
        errors,
        [
            "clusters[16].topics.include (line 18): more than 1024 different patterns in the config; expected fewer (the same pattern in several clusters counts once)"
        ]
    );
    let shared: String = (0..500)
        .map(|c| {
            format!(
                "  - {{name: c{c}, bootstrap_servers: 'b:1', topics: {{include: ['^orders-']}}}}\n"
            )
        })
        .collect();
    assert!(errors_of(&format!("clusters:\n{shared}"), &[]).is_empty());
    let blown =
        "clusters: [{name: a, bootstrap_servers: 'b:1', topics: {include: ['\\w{1000}']}}]\n";
    assert_eq!(
        errors_of(blown, &[]),
        [
            "clusters[0].topics.include (line 1): \"\\\\w{1000}\" is not a regular expression (too large); expected e.g. '^orders-'"
        ]
    );
}

#[test]
fn the_agents_zone_comes_from_the_config_else_the_environment_and_reaches_every_cluster() {
    let two =
        "clusters: [{name: a, bootstrap_servers: 'x:1'}, {name: b, bootstrap_servers: 'x:1'}]\n";
    let env = |name: &str| (name == "CC_HEARTBEAT_ZONE").then(|| "from-env".to_owned());
    let c = from_str("t", two, &env).unwrap();
    assert_eq!(c.agent.zone.as_deref(), Some("from-env"));
    assert!(
        c.clusters
            .iter()
            .all(|c| c.client_zone.as_deref() == Some("from-env"))
    );
    let c = from_str("t", &format!("agent: {{zone: eu-west-1b}}\n{two}"), &env).unwrap();
    assert_eq!(
        c.agent.zone.as_deref(),
        Some("eu-west-1b"),
        "the config over the variable"
    );
    assert!(
        c.clusters
            .iter()
            .all(|c| c.client_zone.as_deref() == Some("eu-west-1b"))
    );
    let c = from_str("t", two, &|_| None).unwrap();
    assert_eq!(c.agent.zone, None);
}

#[test]
fn traces_follow_the_metrics_endpoint_and_the_standard_variables() {
    let c = from_str("t", MINIMAL, &|_| None).unwrap();
    let t = &c.export.traces;
    assert!(t.enabled);
    assert_eq!(t.sample_ratio, 0.01);
    assert_eq!(
        t.endpoint, c.export.otlp.endpoint,
        "gRPC: the same endpoint"
    );
    let http = format!(
        "{MINIMAL}export:\n  otlp: {{protocol: http/protobuf, endpoint: 'https://c:4318/otlp/v1/metrics'}}\n"
    );
    let c = from_str("t", &http, &|_| None).unwrap();
    assert_eq!(c.export.traces.endpoint, "https://c:4318/otlp/v1/traces");
    let c = from_str(
        "t",
        &http,
        &env_of(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://tempo:4318/v1/traces",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]),
    )
    .unwrap();
    assert_eq!(c.export.traces.endpoint, "http://tempo:4318/v1/traces");
    assert_eq!(c.export.traces.sample_ratio, 0.25);
    let c = from_str("t", MINIMAL, &env_of(&[("OTEL_TRACES_EXPORTER", "none")])).unwrap();
    assert!(!c.export.traces.enabled);
    assert!(c.export.otlp.enabled, "metrics stay on");
    let c = from_str("t", MINIMAL, &env_of(&[("OTEL_METRICS_EXPORTER", "none")])).unwrap();
    assert!(!c.export.traces.enabled, "no OTLP export, no spans");
    let c = from_str(
        "t",
        &format!("{MINIMAL}export:\n  traces: {{sample_ratio: 5%}}\n"),
        &|_| None,
    )
    .unwrap();
    assert_eq!(c.export.traces.sample_ratio, 0.05);
}

#[test]
fn logs_follow_the_metrics_endpoint_and_the_standard_variables() {
    let c = from_str("t", MINIMAL, &|_| None).unwrap();
    let l = &c.export.logs;
    assert!(l.enabled);
    assert_eq!(l.level, "info");
    assert_eq!(l.endpoint, c.export.otlp.endpoint);
    let http =
        format!("{MINIMAL}export:\n  otlp: {{protocol: http/protobuf}}\n  logs: {{level: warn}}\n");
    let c = from_str("t", &http, &|_| None).unwrap();
    assert_eq!(c.export.logs.endpoint, "http://localhost:4318/v1/logs");
    assert_eq!(c.export.logs.level, "warn");
    let c = from_str("t", MINIMAL, &env_of(&[("OTEL_LOGS_EXPORTER", "none")])).unwrap();
    assert!(!c.export.logs.enabled);
    assert!(c.export.traces.enabled, "the other signals stay on");
    let c = from_str(
        "t",
        MINIMAL,
        &env_of(&[(
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            "http://loki:3100/otlp/v1/logs",
        )]),
    )
    .unwrap();
    assert_eq!(c.export.logs.endpoint, "http://loki:3100/otlp/v1/logs");
}
