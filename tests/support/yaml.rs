//! YAML documents as `serde_json::Value`, for assertions on deploy files.

use saphyr::{LoadableYamlNode, ScalarOwned, YamlOwned};
use serde_json::Value;

fn to_json(node: &YamlOwned) -> Value {
    match node {
        YamlOwned::Value(ScalarOwned::Null) => Value::Null,
        YamlOwned::Value(ScalarOwned::Boolean(b)) => Value::Bool(*b),
        YamlOwned::Value(ScalarOwned::Integer(i)) => Value::from(*i),
        YamlOwned::Value(ScalarOwned::FloatingPoint(f)) => Value::from(f.into_inner()),
        YamlOwned::Value(ScalarOwned::String(s)) => Value::String(s.clone()),
        YamlOwned::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        YamlOwned::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        YamlOwned::Tagged(_, inner) => to_json(inner),
        other => panic!("unexpected YAML node {other:?}"),
    }
}

/// Every document in `text`.
pub fn documents(text: &str) -> Vec<Value> {
    YamlOwned::load_from_str(text)
        .unwrap_or_else(|e| panic!("invalid YAML: {e}"))
        .iter()
        .map(to_json)
        .filter(|v| !v.is_null())
        .collect()
}

/// The one document in `text`.
pub fn document(text: &str) -> Value {
    let mut docs = documents(text);
    assert_eq!(docs.len(), 1, "expected one YAML document");
    docs.remove(0)
}

/// The collector config with every commented-out configuration line enabled, as a user
/// would enable a backend: `  # key: value` becomes `  key: value`.
pub fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| {
            let indent = line.len() - line.trim_start().len();
            match line.trim_start().strip_prefix("# ") {
                Some(rest) if looks_like_config(rest) => format!("{}{rest}", &line[..indent]),
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
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

/// The objects `kubectl kustomize` renders from `dir` (a path under the repository).
pub fn kustomize(dir: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", path.to_str().unwrap()])
        .output()
        .expect("kubectl (./scripts/test checks it is installed)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    documents(&String::from_utf8(out.stdout).unwrap())
}

/// The first of `objects` of `kind` whose name starts with `name_prefix`.
pub fn object<'a>(objects: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
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
