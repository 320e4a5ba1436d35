#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The deploy files: Kubernetes overlays rendered by `kubectl kustomize` and checked object
//! by object, the compose file and the collector config parsed and their references checked,
//! the Dockerfile's structure, and what the binary needs at run time.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::yaml::{document, uncommented};

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
    support::yaml::kustomize(overlay)
}

fn find<'a>(objects: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    support::yaml::object(objects, kind, name_prefix)
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
    // The credentials are the Secret the README has the user create, with exactly the keys
    // the config needs; no Secret is rendered, so applying never overwrites it.
    assert_eq!(
        c["envFrom"][0]["secretRef"]["name"], "cc-heartbeat-credentials",
        "{overlay}"
    );
    assert!(
        !objects.iter().any(|o| o["kind"] == "Secret"),
        "{overlay}: no Secret in the repository's manifests"
    );
    let env: BTreeMap<String, String> = readme_secret_keys("cc-heartbeat-credentials")
        .into_iter()
        .map(|k| (k, "x:1".to_owned()))
        .collect();
    assert_eq!(
        env.keys().cloned().collect::<BTreeSet<_>>(),
        env_references(config_map["data"]["config.yaml"].as_str().unwrap()),
        "{overlay}: the README's Secret has the keys the config uses"
    );
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

/// The keys of Secret `name` in the README's `kubectl create secret generic` command.
fn readme_secret_keys(name: &str) -> BTreeSet<String> {
    let readme = read("README.md");
    let start = readme
        .find(&format!("create secret generic {name} "))
        .unwrap_or_else(|| panic!("the README creates Secret {name}"));
    // The command runs until the first line that does not continue it.
    let mut command = String::new();
    for line in readme[start..].lines() {
        command.push_str(line);
        if !line.trim_end().ends_with('\\') {
            break;
        }
    }
    let keys: BTreeSet<String> = regex::Regex::new(r"--from-literal=([A-Z0-9_]+)=")
        .unwrap()
        .captures_iter(&command)
        .map(|c| c[1].to_owned())
        .collect();
    assert!(!keys.is_empty(), "{command}");
    keys
}

/// The `${VAR}` (agent config) and `${env:VAR}` (collector config) references of a text that
/// have no default (`${VAR:-default}` is left out): what must be set.
fn env_references(text: &str) -> BTreeSet<String> {
    regex::Regex::new(r"\$\{(?:env:)?([A-Z0-9_]+)\}")
        .unwrap()
        .captures_iter(text)
        .map(|c| c[1].to_owned())
        .collect()
}

/// `overlay` with `components` added, as a user's own overlay would: rendered from a copy of
/// deploy/kubernetes (with `extra` files written into it first).
fn render_with(overlay: &str, components: &[&str], extra: &[(&str, &str)]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kubernetes");
    let status = std::process::Command::new("cp")
        .args([
            "-r",
            repo("deploy/kubernetes").to_str().unwrap(),
            copy.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    for (path, text) in extra {
        std::fs::write(copy.join(path), text).unwrap();
    }
    let mine = copy.join("mine");
    std::fs::create_dir(&mine).unwrap();
    let components: Vec<String> = components
        .iter()
        .map(|c| format!("  - ../components/{c}\n"))
        .collect();
    std::fs::write(
        mine.join("kustomization.yaml"),
        format!(
            "resources: [../overlays/{overlay}]\ncomponents:\n{}",
            components.concat()
        ),
    )
    .unwrap();
    support::yaml::kustomize(mine.to_str().unwrap())
}

/// Each backend's component, on either overlay: its collector config fragment becomes the
/// collector's third `--config` (merged into the same ConfigMap), and every variable the
/// fragment uses comes from the Secret the README has the user create, key by key; nothing
/// else changes and no Secret is rendered.
#[test]
fn each_backend_component_adds_its_pipelines_and_credentials_to_either_collector() {
    for overlay in ["daemonset", "deployment"] {
        let kind = if overlay == "daemonset" {
            "DaemonSet"
        } else {
            "Deployment"
        };
        let plain = render(&format!("deploy/kubernetes/overlays/{overlay}"));
        for (component, file, secret) in [
            ("datadog", "datadog.yaml", "otel-collector-datadog"),
            ("honeycomb", "honeycomb.yaml", "otel-collector-honeycomb"),
            (
                "grafana-cloud",
                "grafana-cloud.yaml",
                "otel-collector-grafana-cloud",
            ),
        ] {
            let what = format!("{overlay} + {component}");
            let objects = render_with(overlay, &[component], &[]);
            assert_eq!(objects.len(), plain.len(), "{what}: nothing added or lost");
            assert!(!objects.iter().any(|o| o["kind"] == "Secret"), "{what}");
            let collector = find(&objects, kind, "otel-collector");
            let c = &collector["spec"]["template"]["spec"]["containers"][0];
            let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
            let args: Vec<&str> = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(
                args,
                [
                    format!("--config={mount}/otel-collector.yaml"),
                    format!("--config={mount}/k8s.yaml"),
                    format!("--config={mount}/{file}"),
                ],
                "{what}"
            );
            let volume = &collector["spec"]["template"]["spec"]["volumes"][0];
            let config_map = find(
                &objects,
                "ConfigMap",
                volume["configMap"]["name"].as_str().unwrap(),
            );
            let fragment = read(&format!("deploy/kubernetes/components/{component}/{file}"));
            assert_eq!(config_map["data"][file], fragment.as_str(), "{what}");
            assert!(config_map["data"]["otel-collector.yaml"].is_string());
            let wanted = env_references(&fragment);
            assert_eq!(
                wanted,
                readme_secret_keys(secret),
                "{what}: the README's Secret"
            );
            for var in &wanted {
                let entry = c["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == var.as_str())
                    .unwrap_or_else(|| panic!("{what}: {var} in the collector's env"));
                assert_eq!(
                    entry["valueFrom"]["secretKeyRef"],
                    serde_json::json!({"name": secret, "key": var}),
                    "{what}"
                );
            }
            // The exporter's own keys, and its pipelines with the Kubernetes attributes.
            let config = document(&fragment);
            if component == "datadog" {
                assert_datadog_block(&what, &config["exporters"]["datadog"]);
            }
            for (name, pipeline) in config["service"]["pipelines"].as_object().unwrap() {
                assert_eq!(
                    pipeline["processors"],
                    serde_json::json!(["memory_limiter", "k8s_attributes", "resource_detection"]),
                    "{what}: {name}"
                );
            }
        }
    }
}

/// The credentials component makes the agents' Secret from an untracked file (its example's
/// keys are the config's), in the agents' namespace, and the agents use it by its new name.
#[test]
fn the_credentials_component_makes_the_secret_from_an_untracked_file() {
    let example = read("deploy/kubernetes/components/credentials-env-file/credentials.env.example");
    let keys: BTreeSet<String> = example
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
        .collect();
    assert_eq!(keys, readme_secret_keys("cc-heartbeat-credentials"));
    assert_eq!(
        read("deploy/kubernetes/components/credentials-env-file/.gitignore").trim(),
        "credentials.env"
    );
    let objects = render_with(
        "daemonset",
        &["credentials-env-file"],
        &[("components/credentials-env-file/credentials.env", &example)],
    );
    let secret = find(&objects, "Secret", "cc-heartbeat-credentials-");
    assert_eq!(secret["metadata"]["namespace"], "cc-heartbeat");
    let data: BTreeSet<String> = secret["data"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(data, keys);
    for (kind, name) in [
        ("DaemonSet", "cc-heartbeat"),
        ("Deployment", "cc-heartbeat-round-trip"),
    ] {
        let c = &find(&objects, kind, name)["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["envFrom"][0]["secretRef"]["name"], secret["metadata"]["name"],
            "{kind}"
        );
    }
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
    let overlay = "deploy/kubernetes/overlays/daemonset";
    check_overlay(overlay, "DaemonSet", "http://otel-collector-node:4317");
    // The round-trip agents beside it, exporting to their node's collector too.
    check_overlay(overlay, "Deployment", "http://otel-collector-node:4317");
    let objects = render(overlay);
    let container = |kind: &str| {
        find(&objects, kind, "cc-heartbeat")["spec"]["template"]["spec"]["containers"][0].clone()
    };
    // The per-node agents produce only, to a topic of their own; the round-trip agents read
    // back the config's default topic.
    let node = container("DaemonSet");
    assert_eq!(env_value(&node, "CC_HEARTBEAT_READ_BACK"), "false");
    assert_eq!(env_value(&node, "CC_HEARTBEAT_TOPIC"), "cc-heartbeat-nodes");
    let round_trip = container("Deployment");
    for name in ["CC_HEARTBEAT_READ_BACK", "CC_HEARTBEAT_TOPIC"] {
        assert!(
            round_trip["env"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["name"] != name),
            "the round-trip agents take the config's {name} default"
        );
    }
    let config_map = find(&objects, "ConfigMap", "cc-heartbeat-config");
    let text = config_map["data"]["config.yaml"].as_str().unwrap();
    let secret: BTreeMap<String, String> = [
        ("CC_BOOTSTRAP_SERVERS", "pkc-1.example:9092"),
        ("CC_API_KEY", "key"),
        ("CC_API_SECRET", "secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config_with = |extra: &[(&str, &str)]| {
        let mut env = secret.clone();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        cc_heartbeat::config::from_str("config.yaml", text, &|k| env.get(k).cloned()).unwrap()
    };
    let per_node = config_with(&[
        ("CC_HEARTBEAT_READ_BACK", "false"),
        ("CC_HEARTBEAT_TOPIC", "cc-heartbeat-nodes"),
    ]);
    assert!(!per_node.heartbeat.read_back);
    assert_eq!(per_node.heartbeat.topic, "cc-heartbeat-nodes");
    let complete = config_with(&[]);
    assert!(complete.heartbeat.read_back);
    assert_eq!(complete.heartbeat.topic, "cc-heartbeat");
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
    // Agents not ready (a Kafka outage makes them so) do not hold a node drain.
    assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
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

/// The labels of every pod template in `objects`, by workload name.
fn pod_labels(objects: &[Value]) -> Vec<(String, &serde_json::Map<String, Value>)> {
    objects
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "DaemonSet")))
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_owned(),
                o["spec"]["template"]["metadata"]["labels"]
                    .as_object()
                    .unwrap(),
            )
        })
        .collect()
}

fn selects(
    selector: &serde_json::Map<String, Value>,
    labels: &serde_json::Map<String, Value>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Every selector in an overlay (workloads, zone spreading, disruption budgets, Services,
/// PodMonitors) selects the pods of exactly one workload.
#[test]
fn every_selector_of_every_overlay_selects_exactly_one_workloads_pods() {
    for overlay in ["daemonset", "deployment", "prometheus-operator"] {
        let objects = render(&format!("deploy/kubernetes/overlays/{overlay}"));
        let pods = pod_labels(&objects);
        let workloads = if overlay == "daemonset" { 3 } else { 2 };
        assert_eq!(
            pods.len(),
            workloads,
            "{overlay}: the agents (per node and round trip, or round trip) and the collector"
        );
        let mut selectors = Vec::new();
        for o in &objects {
            let kind = o["kind"].as_str().unwrap();
            let name = o["metadata"]["name"].as_str().unwrap();
            let spec = &o["spec"];
            let found: Vec<&Value> = match kind {
                "Deployment" | "DaemonSet" => {
                    let mut v = vec![&spec["selector"]["matchLabels"]];
                    for spread in spec["template"]["spec"]["topologySpreadConstraints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        v.push(&spread["labelSelector"]["matchLabels"]);
                    }
                    v
                }
                "PodDisruptionBudget" => vec![&spec["selector"]["matchLabels"]],
                "Service" => vec![&spec["selector"]],
                "PodMonitor" => vec![&spec["selector"]["matchLabels"]],
                _ => vec![],
            };
            for selector in found {
                selectors.push((format!("{kind} {name}"), selector.as_object().unwrap()));
            }
        }
        assert!(selectors.len() >= 2, "{overlay}: {selectors:?}");
        for (owner, selector) in selectors {
            assert!(
                selector.contains_key("app.kubernetes.io/name"),
                "{overlay}: {owner} selects by the app's name"
            );
            let matched: Vec<&str> = pods
                .iter()
                .filter(|(_, labels)| selects(selector, labels))
                .map(|(name, _)| name.as_str())
                .collect();
            assert_eq!(matched.len(), 1, "{overlay}: {owner} selects {matched:?}");
        }
    }
}

/// `kubectl apply -k` of either overlay gives a working pipeline: a collector the agents'
/// endpoint reaches, configured from the repository's files, on the pinned image.
#[test]
fn both_overlays_deploy_the_collector_the_agents_export_to() {
    for (overlay, kind) in [("daemonset", "DaemonSet"), ("deployment", "Deployment")] {
        let objects = render(&format!("deploy/kubernetes/overlays/{overlay}"));
        let agent =
            &find(&objects, kind, "cc-heartbeat")["spec"]["template"]["spec"]["containers"][0];
        let endpoint = env_value(agent, "OTEL_EXPORTER_OTLP_ENDPOINT");
        let collector = find(&objects, kind, "otel-collector");
        let pod = &collector["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["image"], collector_image(), "{overlay}: the pinned image");
        let port = |name: &str| {
            c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{overlay}: port {name}"))
        };
        assert_eq!(port("otlp-grpc")["containerPort"], 4317);
        // No port on the node's address: the collector is reached through a Service.
        assert!(
            c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p.get("hostPort").is_none()),
            "{overlay}: no hostPort"
        );
        let service_name = if kind == "DaemonSet" {
            "otel-collector-node"
        } else {
            "otel-collector"
        };
        assert_eq!(endpoint, format!("http://{service_name}:4317"), "{overlay}");
        let service = find(&objects, "Service", service_name);
        let ports = service["spec"]["ports"].as_array().unwrap();
        assert!(
            ports
                .iter()
                .any(|p| p["port"] == 4317 && p["targetPort"] == "otlp-grpc")
        );
        assert!(selects(
            service["spec"]["selector"].as_object().unwrap(),
            collector["spec"]["template"]["metadata"]["labels"]
                .as_object()
                .unwrap()
        ));
        if kind == "DaemonSet" {
            // Each agent's exports stay on its node, and the round-trip agents use it too.
            assert_eq!(service["spec"]["internalTrafficPolicy"], "Local");
            let round_trip = &find(&objects, "Deployment", "cc-heartbeat-round-trip")["spec"]["template"]
                ["spec"]["containers"][0];
            assert_eq!(
                env_value(round_trip, "OTEL_EXPORTER_OTLP_ENDPOINT"),
                "http://otel-collector-node:4317"
            );
        } else {
            // Drains keep one of the two collectors, and never wait on an unhealthy one.
            let pdb = find(&objects, "PodDisruptionBudget", "otel-collector");
            assert_eq!(pdb["spec"]["minAvailable"], 1);
            assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
            assert!(selects(
                pdb["spec"]["selector"]["matchLabels"].as_object().unwrap(),
                collector["spec"]["template"]["metadata"]["labels"]
                    .as_object()
                    .unwrap()
            ));
            assert!(collector["spec"]["replicas"].as_i64().unwrap() > 1);
        }
        // The Go runtime's soft memory limit sits below the container's.
        let limit = c["resources"]["limits"]["memory"].as_str().unwrap();
        let soft = env_value(c, "GOMEMLIMIT");
        let mib = |v: &str, unit: &str| v.strip_suffix(unit).unwrap().parse::<f64>().unwrap();
        let ratio = mib(soft, "MiB") / mib(limit, "Mi");
        assert!(
            (0.7..0.9).contains(&ratio),
            "{overlay}: GOMEMLIMIT {soft} of {limit}"
        );
        // Health probes on the health_check extension's port.
        assert_eq!(port("health")["containerPort"], 13133);
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], "health");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "health");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);

        // Its config is the repository's two files, given in order.
        let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
        assert_eq!(
            c["args"],
            serde_json::json!([
                format!("--config={mount}/otel-collector.yaml"),
                format!("--config={mount}/k8s.yaml")
            ])
        );
        let config_map = find(
            &objects,
            "ConfigMap",
            pod["volumes"][0]["configMap"]["name"].as_str().unwrap(),
        );
        for file in ["otel-collector.yaml", "k8s.yaml"] {
            assert_eq!(
                config_map["data"][file].as_str().unwrap(),
                read(&format!("{COLLECTOR_DIR}/{file}")),
                "{overlay}: {file}"
            );
        }

        // k8sattributes may read what it needs, as the collector's own service account.
        let account = pod["serviceAccountName"].as_str().unwrap();
        let sa = find(&objects, "ServiceAccount", account);
        let binding = find(
            &objects,
            "ClusterRoleBinding",
            "cc-heartbeat-otel-collector",
        );
        assert_eq!(binding["subjects"][0]["name"], account);
        assert_eq!(
            binding["subjects"][0]["namespace"], sa["metadata"]["namespace"],
            "{overlay}: the binding names the account's namespace"
        );
        let role = find(
            &objects,
            "ClusterRole",
            binding["roleRef"]["name"].as_str().unwrap(),
        );
        let readable: Vec<&Value> = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["resources"].as_array().unwrap())
            .collect();
        for resource in ["pods", "namespaces", "nodes", "replicasets"] {
            assert!(readable.contains(&&Value::from(resource)), "{resource}");
        }
        for rule in role["rules"].as_array().unwrap() {
            assert_eq!(rule["verbs"], serde_json::json!(["get", "watch", "list"]));
        }
    }
    let compose = document(&read("deploy/docker-compose.yaml"));
    assert_eq!(
        compose["services"]["otel-collector"]["image"],
        collector_image(),
        "compose pins the same collector"
    );
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
    assert_eq!(
        services["cc-heartbeat"]["healthcheck"]["test"],
        serde_json::json!(["CMD", "/usr/local/bin/cc-heartbeat", "healthcheck"]),
        "compose checks the agent with its own subcommand"
    );
    let build = &services["cc-heartbeat"]["build"];
    let context = repo("deploy").join(build["context"].as_str().unwrap());
    assert!(
        context
            .join(build["dockerfile"].as_str().unwrap())
            .is_file(),
        "the Dockerfile"
    );
    // The collector: a stable host name (Datadog's host), and every variable its config's
    // backend blocks use, passed in from the shell or an .env file.
    let collector = &services["otel-collector"];
    assert_eq!(collector["hostname"], "otel-collector");
    let config = read(&format!("{COLLECTOR_DIR}/otel-collector.yaml"));
    let used: BTreeSet<String> = regex::Regex::new(r"\$\{env:([A-Z0-9_]+)\}")
        .unwrap()
        .captures_iter(&config)
        .map(|c| c[1].to_owned())
        .collect();
    assert!(used.len() >= 5, "{used:?}");
    for var in &used {
        let expected = match var.as_str() {
            "DD_SITE" => "${DD_SITE:-datadoghq.com}".to_owned(),
            _ => format!("${{{var}:-}}"),
        };
        assert_eq!(
            collector["environment"][var],
            expected.as_str(),
            "otel-collector gets {var}"
        );
    }
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

/// The contrib image the deploy files pin: the release the test collector is built at.
fn collector_image() -> String {
    let manifest = document(&read("tests/otelcol/builder.yaml"));
    let version = manifest["dist"]["version"].as_str().unwrap().to_owned();
    format!("otel/opentelemetry-collector-contrib:{version}")
}

const COLLECTOR_DIR: &str = "deploy/kubernetes/collector/config";

/// The Datadog exporter's block uses only keys the exporter has (the one component the test
/// collector cannot load: tests/data/datadog-exporter.yaml).
#[track_caller]
fn assert_datadog_block(name: &str, block: &Value) {
    let known = document(&read("tests/data/datadog-exporter.yaml"));
    assert_known_keys(&format!("{name}: exporters.datadog"), block, &known["keys"]);
}

/// Every key of `value` is one of `known` (a tree of keys, `"*"` for anything below).
#[track_caller]
fn assert_known_keys(path: &str, value: &Value, known: &Value) {
    match (value, known) {
        (_, Value::Null) | (Value::Null, _) => {}
        (_, Value::String(any)) if any == "*" => {}
        (Value::Array(items), Value::Object(_)) => {
            for (i, item) in items.iter().enumerate() {
                assert_known_keys(&format!("{path}[{i}]"), item, known);
            }
        }
        (Value::Object(map), Value::Object(keys)) => {
            for (key, inner) in map {
                let sub = keys
                    .get(key)
                    .unwrap_or_else(|| panic!("{path}.{key} is not a key of this component"));
                assert_known_keys(&format!("{path}.{key}"), inner, sub);
            }
        }
        (other, _) => panic!("{path}: expected a mapping, got {other}"),
    }
}

/// The collector's merge of several --config files: mappings merge, anything else is
/// replaced by the later file's value.
fn merged(base: &Value, later: &Value) -> Value {
    match (base, later) {
        (Value::Object(a), Value::Object(b)) => {
            let mut out = a.clone();
            for (k, v) in b {
                let merged_value = match a.get(k) {
                    Some(existing) => merged(existing, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged_value);
            }
            Value::Object(out)
        }
        (_, later) => later.clone(),
    }
}

/// How the shipped collector configs are wired (their validity is the real collector's to
/// say, in tests/collector.rs): the listeners, a pipeline per backend, the variables each
/// backend reads, batching in each exporter's queue, and the Kubernetes additions.
#[test]
fn the_collector_configs_are_wired_as_the_readme_says() {
    let text = read(&format!("{COLLECTOR_DIR}/otel-collector.yaml"));
    assert_eq!(
        read("otel-collector.yaml"),
        text,
        "the repository root's otel-collector.yaml is the same file"
    );
    let config = document(&text);
    assert_eq!(
        config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        "0.0.0.0:4317"
    );
    assert_eq!(
        config["exporters"]["prometheus"]["endpoint"],
        "0.0.0.0:8889"
    );
    // The exporter's queue batches; the discouraged batch processor is gone.
    assert!(config["processors"].get("batch").is_none());

    // Every backend block, once uncommented, in its own pipeline. Datadog's exporter turns
    // cumulative counters into deltas itself (no stateful processor before it), and tags the
    // points with the resource's attributes.
    let all = document(&uncommented(&text));
    assert_datadog_block(
        "otel-collector.yaml, uncommented",
        &all["exporters"]["datadog"],
    );
    let pipelines = &all["service"]["pipelines"];
    for (pipeline, exporter) in [
        ("metrics", "prometheus"),
        ("metrics/datadog", "datadog"),
        ("metrics/honeycomb", "otlp_grpc/honeycomb"),
        ("metrics/grafana_cloud", "otlp_http/grafana_cloud"),
    ] {
        assert_eq!(
            pipelines[pipeline]["exporters"],
            serde_json::json!([exporter]),
            "{pipeline}"
        );
    }
    assert_eq!(
        pipelines["metrics/datadog"]["processors"],
        serde_json::json!(["memory_limiter"])
    );
    assert!(all["processors"].get("cumulative_to_delta").is_none());
    assert_eq!(
        all["exporters"]["datadog"]["metrics"]["resource_attributes_as_tags"],
        true
    );
    let exporters = &all["exporters"];
    assert_eq!(
        exporters["otlp_grpc/honeycomb"]["headers"]["x-honeycomb-team"],
        "${env:HONEYCOMB_API_KEY}"
    );
    assert_eq!(exporters["datadog"]["api"]["key"], "${env:DD_API_KEY}");
    for id in ["datadog", "otlp_grpc/honeycomb", "otlp_http/grafana_cloud"] {
        assert!(
            exporters[id]["sending_queue"]["batch"].is_object(),
            "{id} batches in its queue"
        );
    }

    // Kubernetes: the second --config adds the pod's metadata and the node's zone.
    let k8s = merged(
        &config,
        &document(&read(&format!("{COLLECTOR_DIR}/k8s.yaml"))),
    );
    assert_eq!(
        k8s["service"]["pipelines"]["metrics"]["processors"],
        serde_json::json!(["memory_limiter", "k8s_attributes", "resource_detection"])
    );
    let labels = k8s["processors"]["k8s_attributes"]["extract"]["labels"]
        .as_array()
        .unwrap();
    assert!(
        labels
            .iter()
            .any(|l| l["key"] == "topology.kubernetes.io/zone"
                && l["from"] == "node"
                && l["tag_name"] == "cloud.availability_zone")
    );
}

#[test]
fn a_misspelled_datadog_key_is_caught() {
    let block = document("api: {key: x, site: y}\nhost_name: z\n");
    let caught = std::panic::catch_unwind(|| assert_datadog_block("case", &block));
    let message = caught
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(
        message.contains("exporters.datadog.host_name is not a key"),
        "got {message:?}"
    );
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
    // BuildKit: the registry and target directory are cache mounts, so a source change does
    // not rebuild librdkafka; the image says what it is (OCI labels), its version and licence
    // those of Cargo.toml.
    assert_eq!(text.lines().next(), Some("# syntax=docker/dockerfile:1"));
    let build_run = text
        .split("RUN ")
        .find(|r| r.contains("cargo build --release --locked"))
        .expect("the build step");
    for target in ["/usr/local/cargo/registry", "/src/target"] {
        assert!(
            build_run.contains(&format!("--mount=type=cache,target={target}")),
            "cache mount for {target}"
        );
    }
    // Cargo.toml's [package] fields come first, one per line.
    let manifest = read("Cargo.toml");
    let package = |key: &str| -> String {
        manifest
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("Cargo.toml's {key}"))
            .to_owned()
    };
    let label = |key: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("org.opencontainers.image.{key}=")))
            .unwrap_or_else(|| panic!("label {key}"));
        let value = line.split_once('=').unwrap().1;
        value.trim_end_matches(" \\").trim_matches('"').to_owned()
    };
    assert_eq!(label("licenses"), package("license"));
    assert_eq!(label("revision"), "$VCS_REVISION");
    assert_eq!(label("version"), "$VERSION");
    assert!(text.contains(&format!("ARG VERSION={}", package("version"))));
    assert_eq!(label("title"), "cc-heartbeat");
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
    // No shell or curl in the image: the HEALTHCHECK is the binary's own subcommand
    // (tests/cli.rs tests it).
    let healthcheck = final_stage
        .split("HEALTHCHECK ")
        .nth(1)
        .expect("a HEALTHCHECK");
    let command = healthcheck
        .split("CMD ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    let exec_form: Vec<String> = serde_json::from_str(command).expect("exec form");
    assert_eq!(exec_form, ["/usr/local/bin/cc-heartbeat", "healthcheck"]);
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
        copied.contains(&"src") && copied.contains(&"third_party"),
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

/// The librdkafka built into the binary is the one in third_party/, with the fix of
/// docs/librdkafka-fetch-leader-crash.md: Cargo.lock takes rdkafka-sys from the path, not from a
/// registry (a bump of rdkafka to another rdkafka-sys would leave the patch unused, and cargo
/// only warns about that), and the binary carries the fix's own text.
#[test]
fn the_binary_is_built_with_the_patched_librdkafka() {
    let lock = read("Cargo.lock");
    let entry = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"rdkafka-sys\""))
        .expect("rdkafka-sys in Cargo.lock");
    assert!(
        !entry.contains("source ="),
        "rdkafka-sys comes from third_party/, not a registry:\n{entry}"
    );
    let version = entry
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        read("third_party/rdkafka-sys/Cargo.toml").contains(&format!("version = \"{version}\"")),
        "third_party/rdkafka-sys is version {version}"
    );
    let binary = std::fs::read(env!("CARGO_BIN_EXE_cc-heartbeat")).unwrap();
    let fix = b"Skipping leader update of a topic without id or name";
    assert!(
        binary.windows(fix.len()).any(|w| w == fix),
        "the fix is compiled in"
    );
}

/// The runtime image has glibc and OpenSSL and nothing else the binary could need.
#[test]
fn the_binary_needs_only_what_the_distroless_image_has() {
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_cc-heartbeat"))
        .output()
        .expect("ldd");
    assert!(out.status.success(), "ldd failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // A dynamically linked binary lists at least the C library and the loader: an empty
    // answer would check nothing.
    assert!(
        text.contains("libc.so") && text.contains("ld-linux"),
        "ldd listed no libraries:\n{text}"
    );
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

/// The Prometheus Operator overlay keeps each agent's own labels through the collector
/// (`honorLabels`), and ships the alerts as a PrometheusRule: the same groups as
/// deploy/prometheus/alerts.yaml, and the committed file exactly what
/// scripts/generate-prometheus-rule writes from it.
#[test]
fn the_operator_overlay_keeps_the_agents_labels_and_ships_the_alerts() {
    let objects = render("deploy/kubernetes/overlays/prometheus-operator");
    let monitor = find(&objects, "PodMonitor", "otel-collector");
    let endpoints = monitor["spec"]["podMetricsEndpoints"].as_array().unwrap();
    assert!(!endpoints.is_empty());
    for endpoint in endpoints {
        assert_eq!(endpoint["honorLabels"], Value::Bool(true), "{endpoint}");
    }
    let rule = find(&objects, "PrometheusRule", "cc-heartbeat");
    let alerts = document(&read("deploy/prometheus/alerts.yaml"));
    assert_eq!(rule["spec"]["groups"], alerts["groups"]);
    assert!(
        !alerts["groups"][0]["rules"].as_array().unwrap().is_empty(),
        "alerts.yaml has rules"
    );

    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("prometheusrule.yaml");
    let status = Command::new(repo("scripts/generate-prometheus-rule"))
        .arg(&generated)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        std::fs::read_to_string(&generated).unwrap()
            == read("deploy/kubernetes/overlays/prometheus-operator/prometheusrule.yaml"),
        "prometheusrule.yaml is not what alerts.yaml makes: run scripts/generate-prometheus-rule"
    );
}
