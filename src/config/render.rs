//! Renders the effective config as YAML with every secret replaced by `<redacted>`.
//!
//! Secrets are redacted by their type ([`super::Secret`] serializes as the placeholder), so a
//! new secret field cannot leak here by being forgotten.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use super::Config;

pub(super) fn duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

pub(super) fn bytes<S: serde::Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::yaml::format_bytes(*n))
}

pub(super) fn url<S: serde::Serializer>(u: &url::Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(u.as_str())
}

/// A URL fit to show: credentials in it and query values replaced by `redacted`.
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        // Not a URL (the config refuses those): show nothing of it that could be a secret.
        return if text.contains('@') || text.contains('?') {
            "<redacted>".to_owned()
        } else {
            text.to_owned()
        };
    };
    let credentials = !url.username().is_empty() || url.password().is_some();
    if !credentials && url.query().is_none() {
        return text.to_owned();
    }
    if credentials {
        let _ = url.set_username("redacted");
        let _ = url.set_password(None);
    }
    if url.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(keys.iter().map(|k| (k.as_str(), "redacted")));
    }
    url.to_string()
}

pub(super) fn redacted_url<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(text))
}

/// The effective config as YAML, secrets redacted.
pub fn render_redacted(config: &Config) -> String {
    let value = serde_json::to_value(config).unwrap_or(Value::Null);
    let mut out = String::new();
    write_value(&mut out, &value, 0);
    out
}

fn write_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                write_entry(out, k, v, indent);
            }
        }
        Value::Array(items) => {
            for item in items {
                let pad = " ".repeat(indent);
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // First key on the dash line, the rest aligned under it.
                        let mut first = true;
                        for (k, v) in map {
                            if first {
                                out.push_str(&pad);
                                out.push_str("- ");
                                write_entry_inline(out, k, v, indent + 2);
                                first = false;
                            } else {
                                write_entry(out, k, v, indent + 2);
                            }
                        }
                    }
                    other => {
                        let _ = writeln!(out, "{pad}- {}", scalar(other));
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{}{}", " ".repeat(indent), scalar(other));
        }
    }
}

fn write_entry(out: &mut String, key: &str, value: &Value, indent: usize) {
    out.push_str(&" ".repeat(indent));
    write_entry_inline(out, key, value, indent);
}

fn write_entry_inline(out: &mut String, key: &str, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if map.is_empty() => {
            let _ = writeln!(out, "{}: {{}}", scalar_str(key));
        }
        Value::Array(items) if items.is_empty() => {
            let _ = writeln!(out, "{}: []", scalar_str(key));
        }
        Value::Object(_) | Value::Array(_) => {
            let _ = writeln!(out, "{}:", scalar_str(key));
            write_value(out, value, indent + 2);
        }
        other => {
            let _ = writeln!(out, "{}: {}", scalar_str(key), scalar(other));
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_str(s),
        Value::Array(_) | Value::Object(_) => String::new(),
    }
}

/// A string as plain YAML when that reads back as the same string, else double-quoted.
fn scalar_str(s: &str) -> String {
    let safe_chars = s.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(c, '_' | '-' | '.' | '/' | ':' | '<' | '>' | '@' | '+')
    });
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_'));
    let looks_typed = s.parse::<f64>().is_ok()
        || matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "~" | "yes" | "no" | "on" | "off"
        );
    if safe_chars && first_ok && !looks_typed && !s.contains(": ") && !s.ends_with(':') {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_that_would_change_type_are_quoted() {
        assert_eq!(scalar_str("cc-heartbeat"), "cc-heartbeat");
        assert_eq!(scalar_str("http://localhost:4317"), "http://localhost:4317");
        assert_eq!(scalar_str("true"), "\"true\"");
        assert_eq!(scalar_str("0123"), "\"0123\"");
        assert_eq!(scalar_str("<redacted>"), "\"<redacted>\"");
        assert_eq!(scalar_str("a b"), "\"a b\"");
    }

    #[test]
    fn urls_lose_their_credentials_and_query_values() {
        assert_eq!(
            redact_url("http://user:hunter2@collector:4317"),
            "http://redacted@collector:4317/"
        );
        assert_eq!(
            redact_url("https://otlp.example/v1/metrics?api_key=hunter2&team=x"),
            "https://otlp.example/v1/metrics?api_key=redacted&team=redacted"
        );
        assert_eq!(redact_url("http://localhost:4317"), "http://localhost:4317");
        assert_eq!(redact_url("not a url with secret@host"), "<redacted>");
    }
}
