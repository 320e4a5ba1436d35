//! Where a problem sits when the reader did not see it at a node: the key path of a YAML
//! syntax error (or of the first byte that is not UTF-8), and the line of a key path that a
//! check across fields reports.

use saphyr::{MarkedYamlOwned, YamlDataOwned};
use saphyr_parser::{Event, Parser};

/// One open mapping or list while the parser's events are replayed.
enum Frame {
    /// `key`: the last key read; `in_value`: its value is being read.
    Mapping { key: Option<String>, in_value: bool },
    /// Items started so far.
    List { items: usize },
}

/// The key path of the node at character `index` of `text`, as far as the parser got: the
/// path of the key being read (or of a key found twice there), `clusters[0].sasl.password`.
/// Empty when the problem is outside every mapping.
pub(super) fn path_at(text: &str, index: usize) -> String {
    let mut frames: Vec<Frame> = Vec::new();
    // A key the position falls on: found twice, or holding the position.
    let mut duplicate: Option<String> = None;
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else { break };
        if span.start.index() >= index {
            // A key that appears twice is reported where the second one starts.
            if let (
                Event::Scalar(key, ..),
                Some(Frame::Mapping {
                    in_value: false, ..
                }),
            ) = (&event, frames.last())
            {
                duplicate = Some(key.to_string());
            }
            break;
        }
        if let Event::Scalar(text, ..) = &event
            && span.end.index() > index
        {
            // The position is inside this scalar: the path is its key's (or its own, a key).
            if let Some(Frame::Mapping {
                in_value: false, ..
            }) = frames.last()
            {
                duplicate = Some(text.to_string());
            } else {
                node_started(&mut frames);
            }
            break;
        }
        match event {
            Event::Scalar(text, ..) => {
                if let Some(Frame::Mapping { key, in_value }) = frames.last_mut()
                    && !*in_value
                {
                    *key = Some(text.to_string());
                    *in_value = true;
                } else {
                    node_started(&mut frames);
                    value_done(&mut frames);
                }
            }
            Event::Alias(_) => {
                node_started(&mut frames);
                value_done(&mut frames);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                node_started(&mut frames);
                frames.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Mapping {
                        key: None,
                        in_value: false,
                    }
                } else {
                    Frame::List { items: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                frames.pop();
                value_done(&mut frames);
            }
            _ => {}
        }
    }
    let mut path = String::new();
    for frame in &frames {
        match frame {
            Frame::Mapping {
                key: Some(key),
                in_value: true,
            } => push_key(&mut path, key),
            Frame::List { items } if *items > 0 => path.push_str(&format!("[{}]", items - 1)),
            _ => {}
        }
    }
    if let Some(key) = duplicate {
        push_key(&mut path, &key);
    }
    path
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

/// A node (not a mapping's key) starts inside the innermost frame: a list counts an item.
fn node_started(frames: &mut [Frame]) {
    if let Some(Frame::List { items }) = frames.last_mut() {
        *items += 1;
    }
}

/// A node is complete: the mapping it was the value of waits for its next key.
fn value_done(frames: &mut [Frame]) {
    if let Some(Frame::Mapping { in_value, .. }) = frames.last_mut() {
        *in_value = false;
    }
}

/// The line of the deepest node on key path `path` (`clusters[1].sasl.password`) that the
/// file has: the key's own line, or its nearest ancestor's when the key is absent.
pub(crate) fn line_of_path(root: &MarkedYamlOwned, path: &str) -> Option<usize> {
    let mut node = root;
    let mut line = None;
    for segment in segments(path) {
        let next = match (segment, &node.data) {
            (Segment::Key(name), YamlDataOwned::Mapping(map)) => map.iter().find_map(|(k, v)| {
                (super::scalar(k).map(|(text, _)| text) == Some(name)).then_some((k, v))
            }),
            (Segment::Index(i), YamlDataOwned::Sequence(items)) => items.get(i).map(|v| (v, v)),
            _ => None,
        };
        let Some((at, value)) = next else { break };
        line = super::line_of(at).or(line);
        node = value;
    }
    line
}

enum Segment<'p> {
    Key(&'p str),
    Index(usize),
}

/// `clusters[1].sasl` → `clusters`, `1`, `sasl`. A path that is not a key path (an
/// environment variable's name) gives its text as one key, which no file holds.
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.parse() {
                out.push(Segment::Index(i));
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn char_index(text: &str, needle: &str) -> usize {
        text[..text.find(needle).unwrap()].chars().count()
    }

    #[test]
    fn the_path_of_a_position_in_block_and_flow_style() {
        let text = "clusters:\n  - name: a\n    sasl:\n      password: x\n  - {name: b, tls: {ca_file: y}}\nheartbeat:\n  topic: t\n";
        assert_eq!(
            path_at(text, char_index(text, "x\n")),
            "clusters[0].sasl.password"
        );
        assert_eq!(
            path_at(text, char_index(text, "y}")),
            "clusters[1].tls.ca_file"
        );
        assert_eq!(path_at(text, char_index(text, "t\n")), "heartbeat.topic");
        // Inside a scalar, not only at its start.
        assert_eq!(
            path_at(text, char_index(text, "ssword")),
            "clusters[0].sasl.password"
        );
        assert_eq!(
            path_at(text, char_index(text, "ame: b") + 1),
            "clusters[1].name"
        );
        assert_eq!(path_at(text, 0), "");
    }

    #[test]
    fn a_key_found_twice_is_named() {
        let text = "heartbeat:\n  topic: a\n  topic: b\n";
        let second = text.rfind("topic").unwrap();
        assert_eq!(path_at(text, second), "heartbeat.topic");
    }

    #[test]
    fn the_line_of_a_path_or_of_its_nearest_ancestor() {
        let text = "clusters:\n  - name: a\n  - name: b\n    sasl:\n      mechanism: PLAIN\nhttp:\n  prometheus: true\n";
        let root = super::super::parse_document(text).unwrap().unwrap();
        assert_eq!(line_of_path(&root, "clusters[1].sasl.mechanism"), Some(5));
        assert_eq!(line_of_path(&root, "clusters[1].sasl.password"), Some(4));
        assert_eq!(line_of_path(&root, "clusters[1].name"), Some(3));
        assert_eq!(line_of_path(&root, "clusters[0].tls"), Some(2));
        assert_eq!(line_of_path(&root, "http.prometheus"), Some(7));
        assert_eq!(line_of_path(&root, "OTEL_EXPORTER_OTLP_ENDPOINT"), None);
    }
}
