#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The deploy files: Kubernetes overlays rendered by `kubectl kustomize` and checked object
//! by object, the compose file and the collector config parsed and their references checked,
//! the Dockerfile's structure, and what the binary needs at run time.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::yaml::{document, documents};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A cc-heartbeat config file's text must pass the agent's own validation.
#[track_caller]
fn assert_valid_config(name: &str, text: &str, env: &BTreeMap<String, String>) {
    if let Err(e) = cc_heartbeat::config::from_str(name, text, &|k| env.get(k).cloned()) {
        panic!("{name} is not a valid cc-heartbeat config: {e}");
    }
}

fn render(overlay: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", repo(overlay).to_str().unwrap()])
        .output()
        .expect("kubectl (./scripts/test checks it is installed)");
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    documents(&String::from_utf8(out.stdout).unwrap())
}

fn find<'a>(objects: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(name_prefix)
        })
        .unwrap_or_else(|| panic!("no {kind} named {name_prefix}*"))
}

fn check_overlay(overlay: &str, kind: &str, otlp_endpoint: &str) {
    let objects = render(overlay);
    let workload = find(&objects, kind, "cc-heartbeat");
    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    for (k, v) in workload["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &labels[k], v,
            "{overlay}: the selector matches the pod labels"
        );
    }
    // The pods carry the app's name and instance, and every selector of the workload (its
    // own, zone spreading) selects them and nothing less specific than the app's name.
    for key in ["app.kubernetes.io/name", "app.kubernetes.io/instance"] {
        assert_eq!(labels[key], "cc-heartbeat", "{overlay}: pod label {key}");
        assert_eq!(
            workload["spec"]["selector"]["matchLabels"][key], "cc-heartbeat",
            "{overlay}: the selector names {key}"
        );
    }
    let spreads = workload["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for spread in &spreads {
        let selects = spread["labelSelector"]["matchLabels"].as_object().unwrap();
        assert!(
            !selects.is_empty(),
            "{overlay}: a spread constraint selects something"
        );
        for (k, v) in selects {
            assert_eq!(
                &labels[k], v,
                "{overlay}: the spread constraint selects the pods"
            );
        }
    }
    let pod = &workload["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{overlay}");
    assert_eq!(pod["automountServiceAccountToken"], false, "{overlay}");
    find(
        &objects,
        "ServiceAccount",
        pod["serviceAccountName"].as_str().unwrap(),
    );

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert!(c["image"].as_str().is_some_and(|i| !i.is_empty()));
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"], "/healthz",
        "{overlay}"
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"], "/readyz",
        "{overlay}"
    );
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    // Sized from bench/footprint, as quantities Kubernetes accepts.
    let quantity = |section: &str, key: &str| {
        c["resources"][section][key]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    for section in ["requests", "limits"] {
        let cpu = quantity(section, "cpu");
        let memory = quantity(section, "memory");
        assert!(
            cpu.strip_suffix('m')
                .is_some_and(|n| n.parse::<u32>().is_ok()),
            "{overlay}: {section}.cpu {cpu:?}"
        );
        assert!(
            memory
                .strip_suffix("Mi")
                .is_some_and(|n| n.parse::<u32>().is_ok()),
            "{overlay}: {section}.memory {memory:?}"
        );
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{overlay}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{overlay}");
    assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{overlay}");

    // Environment: variables are defined before the ones that refer to them.
    let env: Vec<&Value> = c["env"].as_array().unwrap().iter().collect();
    let position = |name: &str| {
        env.iter()
            .position(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{overlay}: env {name}"))
    };
    assert_eq!(
        env[position("K8S_NODE_NAME")]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    let attrs = env[position("OTEL_RESOURCE_ATTRIBUTES")]["value"]
        .as_str()
        .unwrap();
    for expected in [
        "service.instance.id=$(K8S_POD_NAME)",
        "k8s.node.name=$(K8S_NODE_NAME)",
        "k8s.pod.name=$(K8S_POD_NAME)",
    ] {
        assert!(
            attrs.contains(expected),
            "{overlay}: OTEL_RESOURCE_ATTRIBUTES has {expected}"
        );
    }
    for var in [
        "K8S_NODE_NAME",
        "K8S_POD_NAME",
        "K8S_POD_UID",
        "K8S_NAMESPACE_NAME",
    ] {
        assert!(
            position(var) < position("OTEL_RESOURCE_ATTRIBUTES"),
            "{overlay}: {var} is defined first"
        );
    }
    assert_eq!(
        env[position("OTEL_EXPORTER_OTLP_ENDPOINT")]["value"],
        otlp_endpoint
    );

    // The mounted config is the generated ConfigMap, and it is a valid config once the
    // Secret's variables are set.
    let volume = &pod["volumes"][0];
    let config_map = find(
        &objects,
        "ConfigMap",
        volume["configMap"]["name"].as_str().unwrap(),
    );
    assert_eq!(
        config_map["metadata"]["name"], volume["configMap"]["name"],
        "{overlay}: the volume names the generated ConfigMap"
    );
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/cc-heartbeat");
    let secret_name = c["envFrom"][0]["secretRef"]["name"].as_str().unwrap();
    let secret = find(&objects, "Secret", secret_name);
    let env: BTreeMap<String, String> = secret["stringData"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert_valid_config(
        overlay,
        config_map["data"]["config.yaml"].as_str().unwrap(),
        &env,
    );
    assert_eq!(
        env_value(c, "CC_HEARTBEAT_CONFIG"),
        "/etc/cc-heartbeat/config.yaml"
    );
}

fn env_value<'a>(container: &'a Value, name: &str) -> &'a str {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap()["value"]
        .as_str()
        .unwrap()
}

#[test]
fn the_daemonset_overlay_renders_with_probes_limits_and_a_locked_down_pod() {
    check_overlay(
        "deploy/kubernetes/overlays/daemonset",
        "DaemonSet",
        "http://$(K8S_NODE_IP):4317",
    );
}

#[test]
fn the_deployment_overlay_renders_with_probes_limits_and_a_locked_down_pod() {
    check_overlay(
        "deploy/kubernetes/overlays/deployment",
        "Deployment",
        "http://otel-collector:4317",
    );
    let objects = render("deploy/kubernetes/overlays/deployment");
    let spread = &find(&objects, "Deployment", "cc-heartbeat")["spec"]["template"]["spec"]["topologySpreadConstraints"]
        [0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
    // The disruption budget keeps an agent through drains, and selects exactly its pods.
    let pdb = find(&objects, "PodDisruptionBudget", "cc-heartbeat");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let pods =
        &find(&objects, "Deployment", "cc-heartbeat")["spec"]["template"]["metadata"]["labels"];
    let selects = pdb["spec"]["selector"]["matchLabels"].as_object().unwrap();
    assert!(
        selects.contains_key("app.kubernetes.io/name"),
        "{selects:?}"
    );
    for (k, v) in selects {
        assert_eq!(&pods[k], v, "the budget selects the agent's pods");
    }
}

#[test]
fn the_compose_file_references_files_images_and_ports_that_exist() {
    let compose = document(&read("deploy/docker-compose.yaml"));
    let services = compose["services"].as_object().unwrap();
    for name in [
        "kafka",
        "cc-heartbeat",
        "otel-collector",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(name), "service {name}");
    }
    for (name, service) in services {
        let image = service["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has an image"));
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest",
            "{name}: pinned image, got {image}"
        );
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            assert!(
                repo("deploy").join(source).exists(),
                "{name}: mounted {source} exists"
            );
        }
    }
    let build = &services["cc-heartbeat"]["build"];
    let context = repo("deploy").join(build["context"].as_str().unwrap());
    assert!(
        context
            .join(build["dockerfile"].as_str().unwrap())
            .is_file(),
        "the Dockerfile"
    );
    let published: Vec<String> = services
        .values()
        .flat_map(|s| s["ports"].as_array().into_iter().flatten())
        .map(|p| p.as_str().unwrap().split(':').next().unwrap().to_owned())
        .collect();
    for port in ["3000", "9090", "8080", "4317"] {
        assert!(
            published.contains(&port.to_owned()),
            "port {port} published"
        );
    }

    // The agent's config is valid and exports to the collector service.
    assert_valid_config(
        "deploy/compose/cc-heartbeat.yaml",
        &read("deploy/compose/cc-heartbeat.yaml"),
        &BTreeMap::new(),
    );
    assert_eq!(
        services["cc-heartbeat"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://otel-collector:4317"
    );

    // Prometheus scrapes the collector's exporter and loads the alerts: promtool agrees.
    let config = read("deploy/compose/prometheus.yaml");
    assert!(config.contains("otel-collector:8889"));
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("prometheus.yml");
    std::fs::write(
        &local,
        config.replace(
            "/etc/prometheus/alerts.yaml",
            repo("deploy/prometheus/alerts.yaml").to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = Command::new("promtool")
        .args(["check", "config", local.to_str().unwrap()])
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Grafana's datasource is the compose Prometheus, and its dashboard is the repository's.
    let datasources = document(&read(
        "deploy/grafana/provisioning/datasources/prometheus.yaml",
    ));
    assert_eq!(
        datasources["datasources"][0]["url"],
        "http://prometheus:9090"
    );
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/cc-heartbeat.json")).unwrap();
    assert_eq!(dashboard["uid"], "cc-heartbeat");
}

/// Component types of the official contrib distribution this config may use.
const CONTRIB: &[&str] = &[
    "otlp",
    "memory_limiter",
    "batch",
    "prometheus",
    "datadog",
    "otlphttp",
    "debug",
    "health_check",
];

fn component_type(id: &str) -> &str {
    id.split('/').next().unwrap()
}

#[test]
fn the_collector_config_uses_contrib_components_and_wires_them() {
    let text = read("otel-collector.yaml");
    let config = document(&text);
    let pipeline = &config["service"]["pipelines"]["metrics"];
    for (section, list) in [
        ("receivers", "receivers"),
        ("processors", "processors"),
        ("exporters", "exporters"),
    ] {
        for id in pipeline[list].as_array().unwrap() {
            let id = id.as_str().unwrap();
            assert!(
                config[section].get(id).is_some(),
                "pipeline {list} entry {id} is defined"
            );
        }
    }
    for section in ["receivers", "processors", "exporters", "extensions"] {
        for id in config[section].as_object().unwrap().keys() {
            assert!(
                CONTRIB.contains(&component_type(id)),
                "{section}.{id} is a contrib component"
            );
        }
    }
    assert_eq!(
        config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        "0.0.0.0:4317"
    );
    assert_eq!(
        config["exporters"]["prometheus"]["endpoint"],
        "0.0.0.0:8889"
    );

    // The commented exporter blocks are ready to enable: uncommented, they parse and use
    // contrib components with ${env:...} secrets.
    let exporters_block: String = text
        .lines()
        .skip_while(|l| *l != "exporters:")
        .take_while(|l| *l != "extensions:")
        .map(|l| match l.strip_prefix("  # ") {
            // Commented-out configuration (`key:` or `- item`), not prose.
            Some(rest) if looks_like_config(rest) => format!("  {rest}"),
            _ => l.to_owned(),
        })
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let uncommented = document(&exporters_block);
    let ids: Vec<&String> = uncommented["exporters"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    for expected in [
        "prometheus",
        "datadog",
        "otlp/honeycomb",
        "otlphttp/backend",
    ] {
        assert!(
            ids.iter().any(|id| *id == expected),
            "exporter {expected} offered: {ids:?}"
        );
    }
    for id in ids {
        assert!(CONTRIB.contains(&component_type(id)), "{id}");
    }
    assert_eq!(
        uncommented["exporters"]["otlp/honeycomb"]["headers"]["x-honeycomb-team"],
        "${env:HONEYCOMB_API_KEY}"
    );
    assert_eq!(
        uncommented["exporters"]["datadog"]["api"]["key"],
        "${env:DD_API_KEY}"
    );
}

fn looks_like_config(line: &str) -> bool {
    let line = line.trim_start();
    let key_end = line.find(':').unwrap_or(0);
    line.starts_with("- ")
        || (key_end > 0
            && line[..key_end]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-./".contains(c))
            && line[key_end + 1..].chars().next().is_none_or(|c| c == ' '))
}

#[test]
fn the_dockerfile_builds_a_release_and_runs_it_non_root_without_a_shell() {
    let text = read("Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage");
    for from in &froms {
        let image = from.split_whitespace().nth(1).unwrap();
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "pinned: {from}"
        );
    }
    let runtime = froms.last().unwrap();
    assert!(
        runtime.contains("gcr.io/distroless/") && runtime.contains(":nonroot"),
        "distroless, no shell: {runtime}"
    );
    assert!(text.contains("cargo build --release --locked"));
    let final_stage = text.rsplit("FROM ").next().unwrap();
    assert!(
        final_stage.lines().any(|l| l.starts_with("USER nonroot")),
        "runs as nonroot"
    );
    let entrypoint = final_stage
        .lines()
        .find(|l| l.starts_with("ENTRYPOINT "))
        .unwrap();
    let exec_form: Vec<String> =
        serde_json::from_str(entrypoint.trim_start_matches("ENTRYPOINT ")).expect("exec form");
    assert_eq!(exec_form, ["/usr/local/bin/cc-heartbeat"]);
    // Everything the build stage copies from the repository exists and gets past
    // .dockerignore (which lets in only what is named).
    let ignore = read(".dockerignore");
    let copied: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().skip(1).collect();
            parts[..parts.len() - 1].to_vec()
        })
        .collect();
    assert!(
        copied.contains(&"src") && copied.contains(&"patches"),
        "{copied:?}"
    );
    for copied in copied {
        assert!(repo(copied).exists(), "{copied} exists");
        let name = copied.trim_end_matches('/');
        assert!(
            ignore
                .lines()
                .any(|l| l.trim_end_matches('/') == format!("!{name}")),
            ".dockerignore lets {copied} in"
        );
    }
}

/// The runtime image has glibc and OpenSSL and nothing else the binary could need.
#[test]
fn the_binary_needs_only_what_the_distroless_image_has() {
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_cc-heartbeat"))
        .output()
        .expect("ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let allowed = [
        "linux-vdso",
        "ld-linux",
        "libc.so",
        "libm.so",
        "libgcc_s.so",
        "libssl.so",
        "libcrypto.so",
        "libpthread.so",
        "libdl.so",
    ];
    for line in text.lines() {
        let lib = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("");
        assert!(
            allowed.iter().any(|a| lib.starts_with(a)),
            "unexpected run-time library {lib}:\n{text}"
        );
    }
}
