//! [`Field`]: one value being read, with a typed accessor per kind of value.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use saphyr::{MarkedYamlOwned, YamlDataOwned};

use super::{Reader, Section, describe, line_of, scalar};
use crate::config::Secret;

/// One value being read; each accessor reports a wrong type or value and returns `None`.
pub(crate) struct Field<'n> {
    pub(super) path: String,
    pub(super) line: Option<usize>,
    pub(super) node: &'n MarkedYamlOwned,
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
        // `${VAR:-true}` works unquoted as well, like every other value.
        let text = self.string(r)?;
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

    /// A share from 0 to 1, as a number (`0.01`) or a percentage (`1%`).
    pub(crate) fn fraction(&self, r: &mut Reader<'_>) -> Option<f64> {
        let text = self.string(r)?;
        let trimmed = text.trim();
        let parsed = match trimmed.strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
            None => trimmed.parse::<f64>(),
        };
        match parsed {
            Ok(x) if (0.0..=1.0).contains(&x) => Some(x),
            _ => {
                self.error(
                    r,
                    format!("{trimmed:?} is not a share; expected a number from 0 to 1 (0.01) or a percentage (1%)"),
                );
                None
            }
        }
    }

    /// A duration with a unit (`500ms`, `5s`, `1h`) within `bounds`.
    pub(crate) fn duration(
        &self,
        r: &mut Reader<'_>,
        bounds: &RangeInclusive<Duration>,
    ) -> Option<Duration> {
        let text = self.string(r)?;
        let trimmed = text.trim();
        if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
            self.error(
                r,
                format!("{trimmed:?} has no unit; expected a duration like 500ms, 5s, 1m or 1h"),
            );
            return None;
        }
        let (d, problem) = match humantime::parse_duration(trimmed) {
            Ok(d) if bounds.contains(&d) => return Some(d),
            Ok(d) if d < *bounds.start() => (d, "too short"),
            Ok(d) => (d, "too long"),
            Err(_) => {
                self.error(
                    r,
                    format!("{trimmed:?} is not a duration; expected a number with a unit, like 500ms, 5s, 1m or 1h"),
                );
                return None;
            }
        };
        self.error(
            r,
            format!(
                "{} is {problem}; expected from {} to {}",
                humantime::format_duration(d),
                humantime::format_duration(*bounds.start()),
                humantime::format_duration(*bounds.end())
            ),
        );
        None
    }

    /// A size in bytes with a unit: `512KiB`, `16MiB`, `1GiB` (or `kB`, `MB`, `GB`, `B`).
    pub(crate) fn bytes(&self, r: &mut Reader<'_>, bounds: &RangeInclusive<u64>) -> Option<u64> {
        let text = self.string(r)?;
        let trimmed = text.trim();
        let Some(n) = parse_bytes(trimmed) else {
            self.error(
                r,
                format!("{trimmed:?} is not a size; expected a number with a unit, like 512KiB, 16MiB or 1GiB"),
            );
            return None;
        };
        if bounds.contains(&n) {
            return Some(n);
        }
        self.error(
            r,
            format!(
                "{} is too {}; expected from {} to {}",
                format_bytes(n),
                if n < *bounds.start() {
                    "small"
                } else {
                    "large"
                },
                format_bytes(*bounds.start()),
                format_bytes(*bounds.end())
            ),
        );
        None
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

/// `16MiB` → 16 777 216; `None` without a known unit or past `u64`.
fn parse_bytes(text: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 7] = [
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("kB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("B", 1),
    ];
    let (number, scale) = UNITS
        .iter()
        .find_map(|(unit, scale)| Some((text.strip_suffix(unit)?.trim_end(), *scale)))?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// A size as the config would write it: the largest binary unit that divides it.
pub(crate) fn format_bytes(n: u64) -> String {
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= scale && n.is_multiple_of(scale) {
            return format!("{}{unit}", n / scale);
        }
    }
    format!("{n}B")
}
