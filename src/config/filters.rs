//! Reading `include`/`exclude` lists of regular expressions (`topics`, `consumer_groups`).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use super::types::{NameFilter, Pattern};
use super::yaml::{Field, Reader, Section};

/// The default patterns, compiled once: every cluster without its own list shares them
/// (compiling a regular expression per cluster made validation of many clusters slow).
fn default_pattern(text: &'static str) -> Option<Pattern> {
    static COMPILED: LazyLock<Mutex<HashMap<&'static str, regex::Regex>>> =
        LazyLock::new(Mutex::default);
    let mut compiled = COMPILED.lock().ok()?;
    if let Some(re) = compiled.get(text) {
        return Some(Pattern(re.clone()));
    }
    let re = regex::Regex::new(text).ok()?;
    compiled.insert(text, re.clone());
    Some(Pattern(re))
}

/// At most this many patterns in one `include` or `exclude` list.
const MAX_PATTERNS: usize = 64;
/// Different patterns in one config, at most: each compiled one takes about 10 KiB.
const MAX_DISTINCT_PATTERNS: usize = 1024;
/// Compiled size of one pattern, at most: a name pattern needs a few KiB; `\w{1000}` would
/// take megabytes.
const PATTERN_SIZE_LIMIT: usize = 64 * 1024;

/// `include` and `exclude` lists of regular expressions; `exclude` defaults to
/// `default_exclude`.
pub(super) fn read_name_filter(
    r: &mut Reader<'_>,
    s: &mut Section<'_>,
    default_exclude: &[&'static str],
) -> Option<NameFilter> {
    let patterns = |r: &mut Reader<'_>, f: Option<Field<'_>>, default: &[&'static str]| {
        let Some(f) = f else {
            return Some(default.iter().filter_map(|p| default_pattern(p)).collect());
        };
        let list = f.string_list(r)?;
        if list.len() > MAX_PATTERNS {
            f.error(
                r,
                format!(
                    "{} patterns; expected at most {MAX_PATTERNS} (join alternatives in one: '^(orders|payments)-')",
                    list.len()
                ),
            );
            return None;
        }
        let mut out = Vec::with_capacity(list.len());
        let mut ok = true;
        for text in list {
            if let Some(re) = r.regexes.get(&text) {
                out.push(Pattern(re.clone()));
                continue;
            }
            if r.regexes.len() >= MAX_DISTINCT_PATTERNS {
                f.error(
                    r,
                    format!(
                        "more than {MAX_DISTINCT_PATTERNS} different patterns in the config; expected fewer (the same pattern in several clusters counts once)"
                    ),
                );
                return None;
            }
            match regex::RegexBuilder::new(&text)
                .size_limit(PATTERN_SIZE_LIMIT)
                .build()
            {
                Ok(re) => {
                    r.regexes.insert(text, re.clone());
                    out.push(Pattern(re));
                }
                Err(e) => {
                    let why = match e {
                        regex::Error::CompiledTooBig(_) => "too large".to_owned(),
                        other => other
                            .to_string()
                            .lines()
                            .last()
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                    };
                    f.error(
                        r,
                        format!(
                            "{text:?} is not a regular expression ({why}); expected e.g. '^orders-'"
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    };
    let include = patterns(r, s.field("include"), &[]);
    let exclude = patterns(r, s.field("exclude"), default_exclude);
    Some(NameFilter {
        include: include?,
        exclude: exclude?,
    })
}
