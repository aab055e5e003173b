//! Overlays: a file merged over the topology before it is decoded.
//!
//! Mappings merge key by key, recursively; scalars and lists replace; `key: null` (or `~`)
//! removes the key. A service's `target` is replaced whole when the overlay names a different
//! kind, so switching a service from `process` to `docker` leaves no process fields behind.
//! Every node keeps the file it came from, so errors in merged parts point at the overlay.

use super::decode::TARGET_KINDS;
use super::parse::{Node, Value};

/// Merges `overlay` over `base`.
pub(crate) fn merge(base: Node, overlay: Node) -> Node {
    merge_at(base, overlay, &[])
}

fn merge_at(base: Node, overlay: Node, path: &[&str]) -> Node {
    let (mut entries, overlay_entries) = match (base.value, overlay.value) {
        (Value::Map(base_entries), Value::Map(overlay_entries)) => (base_entries, overlay_entries),
        // An empty overlay file changes nothing.
        (base_value, Value::Null) if path.is_empty() => {
            return Node {
                span: base.span,
                value: base_value,
            };
        }
        (_, value) => {
            return Node {
                span: overlay.span,
                value,
            };
        }
    };
    let is_service = path.len() == 2 && path[0] == "services";
    for (key, value) in overlay_entries {
        let existing = entries.iter().position(|(k, _)| k.name == key.name);
        if matches!(value.value, Value::Null) {
            // A service cannot lose its target: the null stays, so that decoding reports an
            // empty target at the overlay's line.
            if is_service && key.name == "target" {
                match existing {
                    Some(i) => entries[i] = (key, value),
                    None => entries.push((key, value)),
                }
                continue;
            }
            if let Some(i) = existing {
                entries.remove(i);
            }
            continue;
        }
        match existing {
            None => entries.push((key, value)),
            Some(i) => {
                let replace_target =
                    is_service && key.name == "target" && kinds(&entries[i].1) != kinds(&value);
                if replace_target {
                    entries[i] = (key, value);
                } else {
                    let (base_key, base_value) = entries.remove(i);
                    let mut child_path = path.to_vec();
                    child_path.push(&key.name);
                    let merged = merge_at(base_value, value, &child_path);
                    entries.insert(i, (base_key, merged));
                }
            }
        }
    }
    Node {
        span: base.span,
        value: Value::Map(entries),
    }
}

/// The target kinds a `target:` node names, in order.
fn kinds(node: &Node) -> Vec<&str> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .map(|(k, _)| k.name.as_str())
            .filter(|k| TARGET_KINDS.contains(k))
            .collect(),
        _ => Vec::new(),
    }
}
