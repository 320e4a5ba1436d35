//! Reading a cluster's `labels`: attributes on every point of that cluster.

use std::collections::BTreeMap;

use super::yaml::{Field, Reader};

/// At most this many labels per cluster: each is on every point the cluster exports.
const MAX_LABELS: usize = 32;
/// At most this long, a label's value.
const MAX_LABEL_VALUE: usize = 256;
/// Attribute namespaces the agent writes itself; a label there would shadow a measured one.
const RESERVED_LABEL_PREFIXES: [&str; 6] = [
    "kafka.",
    "messaging.",
    "schema_registry.",
    "server.",
    "service.",
    "cc_heartbeat.",
];
/// Attribute keys the agent writes itself (the kafkametricsreceiver's keys among them).
const RESERVED_LABELS: [&str; 4] = ["error.type", "group", "topic", "partition"];

pub(super) fn read_labels(r: &mut Reader<'_>, f: &Field<'_>) -> Option<BTreeMap<String, String>> {
    let map = f.string_map(r)?;
    let mut ok = true;
    if map.len() > MAX_LABELS {
        f.error(
            r,
            format!(
                "{} labels; expected at most {MAX_LABELS} (each is on every point of the cluster)",
                map.len()
            ),
        );
        ok = false;
    }
    for (key, value) in &map {
        let path = format!("{}.{key}", f.path());
        let well_formed = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.len() <= 64
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'));
        if !well_formed {
            r.error(
                path,
                f.line(),
                "not a label name; expected up to 64 letters, digits, '_' or '.', starting with a letter or '_' (e.g. env)",
            );
            ok = false;
        } else if RESERVED_LABELS.contains(&key.as_str())
            || RESERVED_LABEL_PREFIXES.iter().any(|p| key.starts_with(p))
        {
            r.error(
                path,
                f.line(),
                "set by cc-heartbeat itself; choose a name outside kafka.*, messaging.*, schema_registry.*, server.*, service.*, cc_heartbeat.* and error.type, group, topic, partition",
            );
            ok = false;
        } else if value.is_empty() || value.len() > MAX_LABEL_VALUE {
            r.error(
                path,
                f.line(),
                format!("expected a value of 1 to {MAX_LABEL_VALUE} characters"),
            );
            ok = false;
        }
    }
    ok.then_some(map)
}
