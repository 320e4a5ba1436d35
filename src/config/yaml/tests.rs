//! The YAML reader: interpolation, unknown keys, durations, strings, syntax errors.

use std::time::Duration;

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
fn durations_need_a_unit_and_stay_within_bounds() {
    let doc = parse_document("a: 5\nb: 5s\nc: soon\nd: 1ms\ne: 100000000y\nf: 1h\n")
        .unwrap()
        .unwrap();
    let mut r = Reader::new(&env);
    let mut s = Section::from_node(&mut r, "x", &doc);
    let bounds = Duration::from_millis(10)..=Duration::from_secs(3600);
    assert_eq!(s.field("a").unwrap().duration(&mut r, &bounds), None);
    assert_eq!(
        s.field("b").unwrap().duration(&mut r, &bounds),
        Some(Duration::from_secs(5))
    );
    assert_eq!(s.field("c").unwrap().duration(&mut r, &bounds), None);
    assert_eq!(s.field("d").unwrap().duration(&mut r, &bounds), None);
    assert_eq!(s.field("e").unwrap().duration(&mut r, &bounds), None);
    assert_eq!(
        s.field("f").unwrap().duration(&mut r, &bounds),
        Some(Duration::from_secs(3600)),
        "the maximum itself is accepted"
    );
    let errors: Vec<String> = r.into_errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "x.a (line 1): \"5\" has no unit; expected a duration like 500ms, 5s, 1m or 1h",
            "x.c (line 3): \"soon\" is not a duration; expected a number with a unit, like 500ms, 5s, 1m or 1h",
            "x.d (line 4): 1ms is too short; expected from 10ms to 1h",
            "x.e (line 5): 100000000years is too long; expected from 10ms to 1h",
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
