//! Prometheus from Debian's package: `promtool`, and a real server scraping the agents (or a
//! collector) with the shipped alert rules, for the tests of the rules, the dashboard and the
//! zone x rack view.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;
use super::process::http_get;

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; ./scripts/test installs it)");
    if let Some(text) = stdin {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A Prometheus server on a free loopback port, with its own storage, stopped when dropped.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `scrape_target` (one or more `host:port`, comma-separated); `honor_labels` as
    /// for a collector, whose points carry each agent's `instance`.
    pub fn start(scrape_target: &str, rules: &Path, honor_labels: bool) -> Self {
        let targets: Vec<String> = scrape_target.split(',').map(|t| format!("'{t}'")).collect();
        let targets = targets.join(", ");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 rule_files: ['{}']\n\
                 scrape_configs:\n  - job_name: cc-heartbeat\n    honor_labels: {honor_labels}\n    static_configs: [{{targets: [{targets}]}}]\n",
                rules.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package; ./scripts/test installs it)");
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// Waits for the server's readiness endpoint.
    pub async fn ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/-/ready", self.port);
        for _ in 0..200 {
            if http_get(&url).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "prometheus exited"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("prometheus not ready within 10 s");
    }

    pub async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}",
            self.port,
            url_encode(expr)
        );
        let text = http_get(&url).await.unwrap().text().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["status"], "success", "query {expr}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The exemplars stored for `selector` over the last ten minutes: (trace id, value).
    pub async fn exemplars(&self, selector: &str) -> Vec<(String, f64)> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query_exemplars?query={}&start={}&end={}",
            self.port,
            url_encode(selector),
            now - 600,
            now + 60
        );
        let text = http_get(&url).await.unwrap().text().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["status"], "success", "exemplars of {selector}: {body}");
        body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .map(|e| {
                (
                    e["labels"]["trace_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    e["value"]
                        .as_str()
                        .unwrap_or_default()
                        .parse()
                        .unwrap_or(f64::NAN),
                )
            })
            .collect()
    }

    /// Waits until every alert of `expected` is firing (others may fire too).
    pub async fn wait_firing(&self, expected: &[&str], timeout: Duration) {
        let expected: BTreeSet<String> = expected.iter().map(|a| (*a).to_owned()).collect();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let firing = self.firing().await;
            if firing.is_superset(&expected) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "after {timeout:?}, firing {firing:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn firing(&self) -> BTreeSet<String> {
        self.query(r#"ALERTS{alertstate="firing"}"#)
            .await
            .iter()
            .filter_map(|r| r["metric"]["alertname"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The alert rules as the Prometheus Operator overlay ships them (its PrometheusRule, which
/// tests/deploy.rs checks is alerts.yaml), with every `for:` set to zero: the expressions are
/// what is tested here, the durations are tested by promtool's unit tests. Written as JSON,
/// which Prometheus reads as YAML.
pub fn rules_without_delays(dir: &Path) -> PathBuf {
    let objects = super::yaml::kustomize("deploy/kubernetes/overlays/prometheus-operator");
    let rule = super::yaml::object(&objects, "PrometheusRule", "cc-heartbeat");
    let mut spec = rule["spec"].clone();
    for group in spec["groups"].as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            if rule.get("for").is_some() {
                rule["for"] = serde_json::Value::from("0s");
            }
        }
    }
    let path = dir.join("alerts.json");
    std::fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    let (ok, out) = promtool(&["check", "rules", path.to_str().unwrap()], None);
    assert!(ok, "the PrometheusRule's rules load: {out}");
    path
}

/// Every PromQL expression of the dashboard, with its variables set to "all".
pub fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("deploy/grafana/cc-heartbeat.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            // As Grafana would: every cluster, and a rate window of four scrape intervals.
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$cluster", ".*")
                .replace("$__rate_interval", "1m");
            queries.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = variable["query"]["query"].as_str() {
            // label_values(metric, label): the metric must exist.
            let metric = q
                .trim_start_matches("label_values(")
                .split(',')
                .next()
                .unwrap()
                .to_owned();
            queries.push((format!("variable {}", variable["name"]), metric));
        }
    }
    assert!(queries.len() >= 20, "found {} queries", queries.len());
    queries
}
