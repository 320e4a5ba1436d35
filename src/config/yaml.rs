//! A strict reader over a YAML tree that collects every problem instead of stopping at the first.
//!
//! serde stops at the first error, and an operator fixing a config at 3 a.m. wants the whole
//! list at once. So the file is parsed into a position-annotated tree (saphyr) without type
//! resolution, and the schema in `config/mod.rs` walks it through [`Section`] and [`Field`],
//! which record a [`ConfigError`] (key path, line, what was expected) and carry on.

use std::collections::BTreeMap;
use std::time::Duration;

use saphyr::{MarkedYamlOwned, ScalarStyle, YamlDataOwned, YamlLoader};

use super::{ConfigError, Secret};

/// Looks up an environment variable; injected so tests need not touch the process environment.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Shared state of one config read: the error list and the environment.
pub(crate) struct Reader<'a> {
    errors: Vec<ConfigError>,
    env: EnvLookup<'a>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(env: EnvLookup<'a>) -> Self {
        Self {
            errors: Vec::new(),
            env,
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
            message: message.into(),
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
        path: String::new(),
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
                r.error(
                    self.child_path(key),
                    line_of(node),
                    format!("unknown key; expected one of: {}", known.join(", ")),
                );
            }
        }
    }
}

/// One value being read; each accessor reports a wrong type or value and returns `None`.
pub(crate) struct Field<'n> {
    path: String,
    line: Option<usize>,
    node: &'n MarkedYamlOwned,
}

impl<'n> Field<'n> {
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn line(&self) -> Option<usize> {
        self.line
    }

    pub(crate) fn error(&self, r: &mut Reader<'_>, message: impl Into<String>) {
        r.error(self.path.clone(), self.line, message);
    }

    fn raw_scalar(&self, r: &mut Reader<'_>, expected: &str) -> Option<(&'n str, bool)> {
        match scalar(self.node) {
            Some(s) => Some(s),
            None => {
                self.error(
                    r,
                    format!("expected {expected}, found {}", describe(self.node)),
                );
                None
            }
        }
    }

    /// A string, with `${ENV}` references resolved.
    pub(crate) fn string(&self, r: &mut Reader<'_>) -> Option<String> {
        let (text, _) = self.raw_scalar(r, "a string")?;
        r.interpolate(&self.path, self.line, text)
    }

    /// A string that must not be empty after interpolation.
    pub(crate) fn non_empty_string(&self, r: &mut Reader<'_>) -> Option<String> {
        let value = self.string(r)?;
        if value.trim().is_empty() {
            self.error(r, "must not be empty");
            return None;
        }
        Some(value)
    }

    /// A secret string: like [`Field::string`], but its value never appears in an error.
    pub(crate) fn secret(&self, r: &mut Reader<'_>) -> Option<Secret> {
        let value = self.string(r)?;
        if value.is_empty() {
            self.error(r, "must not be empty");
            return None;
        }
        Some(Secret::new(value))
    }

    /// A boolean: `true` or `false`.
    pub(crate) fn bool(&self, r: &mut Reader<'_>) -> Option<bool> {
        let (text, plain) = self.raw_scalar(r, "true or false")?;
        let text = if plain {
            text.to_owned()
        } else {
            r.interpolate(&self.path, self.line, text)?
        };
        match text.as_str() {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            other => {
                self.error(
                    r,
                    format!("{other:?} is not a boolean; expected true or false"),
                );
                None
            }
        }
    }

    /// A whole number within `min..=max`.
    pub(crate) fn integer(&self, r: &mut Reader<'_>, min: i64, max: i64) -> Option<i64> {
        let text = self.string(r)?;
        match text.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            Ok(n) => {
                self.error(
                    r,
                    format!("{n} is out of range; expected a whole number from {min} to {max}"),
                );
                None
            }
            Err(_) => {
                self.error(
                    r,
                    format!(
                        "{text:?} is not a whole number; expected a number from {min} to {max}"
                    ),
                );
                None
            }
        }
    }

    /// A duration with a unit (`500ms`, `5s`, `1h`), at least `min`.
    pub(crate) fn duration(&self, r: &mut Reader<'_>, min: Duration) -> Option<Duration> {
        let text = self.string(r)?;
        let trimmed = text.trim();
        if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
            self.error(
                r,
                format!("{trimmed:?} has no unit; expected a duration like 500ms, 5s, 1m or 1h"),
            );
            return None;
        }
        match humantime::parse_duration(trimmed) {
            Ok(d) if d >= min => Some(d),
            Ok(d) => {
                self.error(
                    r,
                    format!(
                        "{} is too short; expected at least {}",
                        humantime::format_duration(d),
                        humantime::format_duration(min)
                    ),
                );
                None
            }
            Err(_) => {
                self.error(
                    r,
                    format!("{trimmed:?} is not a duration; expected a number with a unit, like 500ms, 5s, 1m or 1h"),
                );
                None
            }
        }
    }

    /// One of `choices`, compared as written (case-sensitive unless `fold_case`).
    pub(crate) fn choice<T: Copy>(
        &self,
        r: &mut Reader<'_>,
        choices: &[(&str, T)],
        fold_case: bool,
    ) -> Option<T> {
        let text = self.string(r)?;
        let found = choices.iter().find(|(name, _)| {
            if fold_case {
                name.eq_ignore_ascii_case(text.trim())
            } else {
                *name == text.trim()
            }
        });
        match found {
            Some((_, value)) => Some(*value),
            None => {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                self.error(
                    r,
                    format!(
                        "{text:?} is not valid; expected one of: {}",
                        names.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// A list of strings; a single comma-separated string is accepted too.
    pub(crate) fn string_list(&self, r: &mut Reader<'_>) -> Option<Vec<String>> {
        match &self.node.data {
            YamlDataOwned::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    let field = Field {
                        path: format!("{}[{i}]", self.path),
                        line: line_of(item),
                        node: item,
                    };
                    match field.non_empty_string(r) {
                        Some(s) => out.push(s),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ => {
                let text = self.string(r)?;
                Some(
                    text.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect(),
                )
            }
        }
    }

    /// A mapping of string keys to scalar values (as strings, interpolated).
    pub(crate) fn string_map(&self, r: &mut Reader<'_>) -> Option<BTreeMap<String, String>> {
        let YamlDataOwned::Mapping(map) = &self.node.data else {
            self.error(
                r,
                format!(
                    "expected a mapping of names to values, found {}",
                    describe(self.node)
                ),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in map {
            let Some((name, _)) = scalar(key) else {
                r.error(
                    self.path.clone(),
                    line_of(key),
                    "keys must be plain strings",
                );
                ok = false;
                continue;
            };
            let field = Field {
                path: format!("{}.{name}", self.path),
                line: line_of(value),
                node: value,
            };
            if out.contains_key(name) {
                field.error(r, "key appears twice");
                ok = false;
                continue;
            }
            match field.string(r) {
                Some(v) => {
                    out.insert(name.to_owned(), v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// The items of a list, each as a section (for lists of mappings).
    pub(crate) fn sections(&self, r: &mut Reader<'_>) -> Option<Vec<Section<'n>>> {
        let YamlDataOwned::Sequence(items) = &self.node.data else {
            self.error(r, format!("expected a list, found {}", describe(self.node)));
            return None;
        };
        Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| Section::from_node(r, format!("{}[{i}]", self.path), item))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn interpolation_resolves_defaults_escapes_and_reports_undefined_variables() {
        let mut r = Reader::new(&env);
        assert_eq!(
            r.interpolate("k", None, "a-${SET}-b").as_deref(),
            Some("a-value-b")
        );
        assert_eq!(
            r.interpolate("k", None, "${MISSING:-fallback}").as_deref(),
            Some("fallback")
        );
        assert_eq!(
            r.interpolate("k", None, "${EMPTY:-fallback}").as_deref(),
            Some("")
        );
        assert_eq!(
            r.interpolate("k", None, "cost $$5 and $x").as_deref(),
            Some("cost $5 and $x")
        );
        assert_eq!(r.interpolate("k", Some(3), "${MISSING}"), None);
        let errors = r.into_errors();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "k (line 3): environment variable MISSING is not set (referenced as ${MISSING})"
        );
    }

    #[test]
    fn unknown_and_duplicate_keys_are_reported_with_lines() {
        let doc = parse_document("a: 1\nb: 2\nzzz: 3\n").unwrap().unwrap();
        let mut r = Reader::new(&env);
        let mut s = Section::from_node(&mut r, "", &doc);
        assert!(s.field("a").is_some());
        assert!(s.field("b").is_some());
        s.finish(&mut r);
        let errors = r.into_errors();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "zzz (line 3): unknown key; expected one of: a, b"
        );
    }

    #[test]
    fn durations_need_a_unit() {
        let doc = parse_document("a: 5\nb: 5s\nc: soon\nd: 1ms\n")
            .unwrap()
            .unwrap();
        let mut r = Reader::new(&env);
        let mut s = Section::from_node(&mut r, "x", &doc);
        let min = Duration::from_millis(10);
        assert_eq!(s.field("a").unwrap().duration(&mut r, min), None);
        assert_eq!(
            s.field("b").unwrap().duration(&mut r, min),
            Some(Duration::from_secs(5))
        );
        assert_eq!(s.field("c").unwrap().duration(&mut r, min), None);
        assert_eq!(s.field("d").unwrap().duration(&mut r, min), None);
        let errors: Vec<String> = r.into_errors().iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "x.a (line 1): \"5\" has no unit; expected a duration like 500ms, 5s, 1m or 1h",
                "x.c (line 3): \"soon\" is not a duration; expected a number with a unit, like 500ms, 5s, 1m or 1h",
                "x.d (line 4): 1ms is too short; expected at least 10ms",
            ]
        );
    }

    #[test]
    fn string_fields_keep_their_text_exactly() {
        let doc = parse_document("a: 0123\nb: 'true'\n").unwrap().unwrap();
        let mut r = Reader::new(&env);
        let mut s = Section::from_node(&mut r, "", &doc);
        assert_eq!(
            s.field("a").unwrap().string(&mut r).as_deref(),
            Some("0123")
        );
        assert_eq!(
            s.field("b").unwrap().string(&mut r).as_deref(),
            Some("true")
        );
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let err = parse_document("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.line.is_some());
        assert!(err.message.starts_with("not valid YAML"), "{err}");
    }
}
