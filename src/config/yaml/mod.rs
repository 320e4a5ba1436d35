//! A strict reader over a YAML tree that collects every problem instead of stopping at the first.
//!
//! serde stops at the first error, and an operator fixing a config at 3 a.m. wants the whole
//! list at once. So the file is parsed into a position-annotated tree (saphyr) without type
//! resolution, and the schema in `config` walks it through [`Section`] and [`Field`],
//! which record a [`ConfigError`] (key path, line, what was expected) and carry on.

use saphyr::{MarkedYamlOwned, ScalarStyle, YamlDataOwned, YamlLoader};

mod field;
mod locate;

pub(crate) use field::{Field, format_bytes};
pub(crate) use locate::line_of_path;

use super::ConfigError;

/// Looks up an environment variable; injected so tests need not touch the process environment.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Shared state of one config read: the error list, the environment, and the regular
/// expressions compiled so far (one compiled pattern per distinct text, shared by every
/// cluster that lists it).
pub(crate) struct Reader<'a> {
    errors: Vec<ConfigError>,
    env: EnvLookup<'a>,
    pub(crate) regexes: std::collections::HashMap<String, regex::Regex>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(env: EnvLookup<'a>) -> Self {
        Self {
            errors: Vec::new(),
            env,
            regexes: std::collections::HashMap::new(),
        }
    }

    pub(crate) fn env(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    pub(crate) fn error(
        &mut self,
        path: impl Into<String>,
        line: Option<usize>,
        message: impl Into<String>,
    ) {
        self.errors.push(ConfigError {
            path: path.into(),
            line,
            message: shortened(&message.into()),
        });
    }

    pub(crate) fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    /// Replaces `${NAME}` and `${NAME:-default}` with environment values; `$$` is a literal `$`.
    ///
    /// An undefined variable without a default is an error naming the key and the variable,
    /// never the value, since values are often secrets.
    fn interpolate(&mut self, path: &str, line: Option<usize>, text: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut ok = true;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                out.push('$');
                rest = stripped;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    self.error(
                        path,
                        line,
                        "unterminated ${...} reference; expected ${NAME} or ${NAME:-default}",
                    );
                    return None;
                };
                let reference = &body[..end];
                let (name, default) = match reference.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (reference, None),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    self.error(
                        path,
                        line,
                        format!("${{{name}}} is not a valid environment variable reference; expected letters, digits and _"),
                    );
                    ok = false;
                } else {
                    match (self.env(name), default) {
                        (Some(value), _) => out.push_str(&value),
                        (None, Some(default)) => out.push_str(default),
                        (None, None) => {
                            self.error(
                                path,
                                line,
                                format!("environment variable {name} is not set (referenced as ${{{name}}})"),
                            );
                            ok = false;
                        }
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        ok.then_some(out)
    }
}

/// Parses a document into its root node, or one error describing the syntax problem.
pub(crate) fn parse_document(text: &str) -> Result<Option<MarkedYamlOwned>, ConfigError> {
    let mut loader: YamlLoader<'_, MarkedYamlOwned> = YamlLoader::default();
    // Keep scalars as written: string fields get exactly the text, and numbers and
    // booleans are resolved by the schema that knows which type it wants.
    loader.early_parse(false);
    let mut parser = saphyr_parser::Parser::new_from_str(text);
    let syntax_error = |e: saphyr::ScanError| ConfigError {
        path: locate::path_at(text, e.marker().index()),
        line: Some(e.marker().line()),
        message: format!("not valid YAML: {}", e.info()),
    };
    parser.load(&mut loader, true).map_err(syntax_error)?;
    if let Some(e) = loader.error() {
        return Err(syntax_error(e.clone()));
    }
    let mut docs = loader.into_documents();
    if docs.len() > 1 {
        return Err(ConfigError {
            path: String::new(),
            line: Some(docs[1].span.start.line()),
            message: "more than one YAML document; expected exactly one".into(),
        });
    }
    Ok(docs.pop())
}

/// The error for a file that is not UTF-8: the line and key of its first bad byte (not the
/// byte: it may belong to a secret).
pub(crate) fn not_utf8(bytes: &[u8], error: &std::str::Utf8Error) -> ConfigError {
    let valid = &bytes[..error.valid_up_to()];
    let line = 1 + valid.iter().filter(|b| **b == b'\n').count();
    let lossy = String::from_utf8_lossy(bytes);
    let at = String::from_utf8_lossy(valid).chars().count();
    ConfigError {
        path: locate::path_at(&lossy, at),
        line: Some(line),
        message: "not UTF-8; expected a YAML file in UTF-8".to_owned(),
    }
}

fn line_of(node: &MarkedYamlOwned) -> Option<usize> {
    let line = node.span.start.line();
    (line > 0).then_some(line)
}

/// The scalar text of a node, its style, and whether it was a plain (unquoted) scalar.
fn scalar(node: &MarkedYamlOwned) -> Option<(&str, bool)> {
    match &node.data {
        YamlDataOwned::Representation(text, style, _) => {
            Some((text.as_str(), *style == ScalarStyle::Plain))
        }
        YamlDataOwned::Tagged(_, inner) => scalar(inner),
        _ => None,
    }
}

fn is_null(node: &MarkedYamlOwned) -> bool {
    matches!(scalar(node), Some((text, true)) if matches!(text, "" | "~" | "null" | "Null" | "NULL"))
}

fn describe(node: &MarkedYamlOwned) -> &'static str {
    match &node.data {
        YamlDataOwned::Mapping(_) => "a mapping",
        YamlDataOwned::Sequence(_) => "a list",
        _ if is_null(node) => "an empty value",
        _ => "a scalar",
    }
}

/// A mapping being read: every key taken is marked, and [`Section::finish`] reports the rest.
pub(crate) struct Section<'n> {
    path: String,
    line: Option<usize>,
    entries: Vec<(String, &'n MarkedYamlOwned, bool)>,
    known: Vec<&'static str>,
}

impl<'n> Section<'n> {
    /// An empty section, for a key that was absent: every field then takes its default.
    pub(crate) fn empty(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            entries: Vec::new(),
            known: Vec::new(),
        }
    }

    /// Reads `node` as a mapping; anything else is reported and read as empty.
    pub(crate) fn from_node(
        r: &mut Reader<'_>,
        path: impl Into<String>,
        node: &'n MarkedYamlOwned,
    ) -> Self {
        let path = path.into();
        let line = line_of(node);
        let mut section = Self {
            path,
            line,
            entries: Vec::new(),
            known: Vec::new(),
        };
        match &node.data {
            YamlDataOwned::Mapping(map) => {
                for (key, value) in map {
                    let Some((name, _)) = scalar(key) else {
                        r.error(
                            section.path.clone(),
                            line_of(key),
                            "keys must be plain strings",
                        );
                        continue;
                    };
                    if section.entries.iter().any(|(k, _, _)| k == name) {
                        r.error(section.child_path(name), line_of(key), "key appears twice");
                        continue;
                    }
                    section.entries.push((name.to_owned(), value, false));
                }
            }
            _ if is_null(node) => {}
            _ => r.error(
                section.path.clone(),
                line,
                format!(
                    "expected a mapping of keys to values, found {}",
                    describe(node)
                ),
            ),
        }
        section
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn line(&self) -> Option<usize> {
        self.line
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Takes `key`, marking it known; `None` when absent or explicitly null.
    pub(crate) fn field(&mut self, key: &'static str) -> Option<Field<'n>> {
        self.known.push(key);
        let path = self.child_path(key);
        let entry = self.entries.iter_mut().find(|(k, _, _)| k == key)?;
        entry.2 = true;
        let node = entry.1;
        if is_null(node) {
            return None;
        }
        Some(Field {
            path,
            line: line_of(node),
            node,
        })
    }

    /// Takes `key` as a nested section (empty when absent).
    pub(crate) fn section(&mut self, r: &mut Reader<'_>, key: &'static str) -> Section<'n> {
        let path = self.child_path(key);
        match self.field(key) {
            Some(field) => Section::from_node(r, path, field.node),
            None => Section::empty(path),
        }
    }

    /// Whether `key` is present (and not null).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.entries
            .iter()
            .any(|(k, node, _)| k == key && !is_null(node))
    }

    /// Reports every key that no [`Section::field`] call asked for.
    pub(crate) fn finish(self, r: &mut Reader<'_>) {
        let mut known = self.known.clone();
        known.sort_unstable();
        known.dedup();
        for (key, node, used) in &self.entries {
            if !used {
                // A key that could not be one of ours is not echoed: the file given may be
                // something else entirely (a password file, say).
                let looks_like_a_key = key.len() <= 64
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                let shown = if looks_like_a_key {
                    key.clone()
                } else {
                    format!("<a key of {} characters, not shown>", key.chars().count())
                };
                r.error(
                    self.child_path(&shown),
                    line_of(node),
                    format!("unknown key; expected one of: {}", known.join(", ")),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Longest quoted value an error message echoes in full; a longer one (a whole file pasted
/// into a key, a line of some other file) is cut, and its length said.
const ECHO_LIMIT: usize = 64;

/// `message` with each quoted value longer than [`ECHO_LIMIT`] characters cut short.
fn shortened(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(1024));
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        // A quoted value, as `{:?}` writes it: up to the next quote that is not escaped.
        let mut inner = String::new();
        let mut escaped = false;
        let mut closed = false;
        for c in chars.by_ref() {
            if c == '"' && !escaped {
                closed = true;
                break;
            }
            escaped = c == '\\' && !escaped;
            inner.push(c);
        }
        let length = inner.chars().count();
        if length > ECHO_LIMIT {
            let head: String = inner.chars().take(ECHO_LIMIT / 2).collect();
            out.push_str(head.trim_end_matches('\\'));
            out.push_str("…\"");
            out.push_str(&format!(" ({length} characters)"));
        } else {
            out.push_str(&inner);
            if closed {
                out.push('"');
            }
        }
    }
    out
}
