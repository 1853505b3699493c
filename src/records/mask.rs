//! Update masks (AIP-134, AIP-161): which fields an update writes.
//!
//! - No mask (or an empty one): the fields populated in the request.
//! - `*`: every writable field (absent ones go back to their defaults).
//! - Otherwise the named fields, in proto (snake_case) or JSON (camelCase)
//!   spelling; a field named but absent in the request is cleared. For
//!   `google.protobuf.Struct` fields, `custom_fields.<key>` (or a deeper
//!   `custom_fields.<key>.<subkey>`) sets or removes one key, creating the
//!   objects on the way.
//!
//! Paths naming output-only fields, the identifier or `version` are ignored;
//! unknown paths are INVALID_ARGUMENT. A Struct key that holds a `.`, a `,`
//! or a backtick is written in backticks (AIP-161), a backtick inside doubled:
//! ``custom_fields.`a.b` `` names the key `a.b`. At most [`MAX_PATHS`] paths.

use std::collections::HashMap;

use prost_reflect::{DynamicMessage, MapKey, ReflectMessage, Value};

use super::schema::{Meta, Shape};
use crate::error::{Error, Violations};

/// One resolved mask path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// A whole field, by index into `Meta::fields`.
    Field(usize),
    /// One key (at any depth) of a Struct field.
    StructKey(usize, Vec<String>),
}

/// Most paths in one update mask (a PATCH body's JSON fields are at most
/// 64 KiB, so their keys are far fewer).
pub const MAX_PATHS: usize = 10_000;

/// Splits `s` at the commas that are not inside backticks, trimming each
/// path and dropping empty ones.
pub fn split_paths(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '`' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out.into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The segments of one path: split at `.` outside backticks; a backticked
/// segment is taken literally, with ``` `` ``` standing for one backtick
/// (and ``` `` ``` alone for the empty key, which a JSON object may have).
/// `None` when a backtick is left open or a segment is empty unquoted
/// (`custom_fields.`, `a..b`).
pub fn segments(path: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = path.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '`' if quoted && chars.peek() == Some(&'`') => {
                chars.next();
                current.push('`');
            }
            '`' => {
                quoted = !quoted;
                was_quoted = true;
            }
            '.' if !quoted => {
                if current.is_empty() && !was_quoted {
                    return None;
                }
                out.push(std::mem::take(&mut current));
                was_quoted = false;
            }
            _ => current.push(c),
        }
    }
    if quoted || (current.is_empty() && !was_quoted) {
        return None;
    }
    out.push(current);
    Some(out)
}

/// `key` as a mask path segment: plain when it can be, else backticked.
pub fn quote_segment(key: &str) -> String {
    if key.is_empty() || key.contains(['.', ',', '`']) || key.trim() != key {
        format!("`{}`", key.replace('`', "``"))
    } else {
        key.to_owned()
    }
}

/// Resolves the update mask of a request against the entity's fields.
pub fn resolve(meta: &Meta, patch: &DynamicMessage, mask: &[String]) -> Result<Vec<Path>, Error> {
    // Counted before any work per path.
    if mask.len() > MAX_PATHS
        || mask
            .iter()
            .map(|p| p.matches(',').count() + 1)
            .sum::<usize>()
            > MAX_PATHS
    {
        return Err(crate::error::invalid(
            "update_mask",
            format!("must have at most {MAX_PATHS} paths"),
        ));
    }
    let raw: Vec<String> = mask.iter().flat_map(|p| split_paths(p)).collect();
    let mut paths = Vec::new();
    if raw.is_empty() {
        for (i, f) in meta.fields.iter().enumerate() {
            if f.writable() && patch.has_field(&f.desc) {
                paths.push(Path::Field(i));
            }
        }
        return Ok(paths);
    }
    let mut violations = Violations::new();
    for p in raw.iter().map(String::as_str) {
        if p == "*" {
            for (i, f) in meta.fields.iter().enumerate() {
                if f.writable() {
                    paths.push(Path::Field(i));
                }
            }
            continue;
        }
        let Some(parts) = segments(p) else {
            violations.add(
                "update_mask",
                format!("\"{p}\": an empty segment or an unterminated backtick"),
            );
            continue;
        };
        let (head, rest) = (parts[0].as_str(), &parts[1..]);
        let Some(i) = meta.position(head) else {
            violations.add("update_mask", format!("unknown field \"{p}\""));
            continue;
        };
        let f = &meta.fields[i];
        if !f.writable() {
            continue;
        }
        match rest {
            [] => paths.push(Path::Field(i)),
            keys if f.shape == Shape::Struct => paths.push(Path::StructKey(i, keys.to_vec())),
            _ => violations.add(
                "update_mask",
                format!("\"{p}\": {} has no subfields that can be named", f.name),
            ),
        }
    }
    violations.into_result()?;
    paths.dedup();
    Ok(paths)
}

/// The entries of a Struct (or of a Value holding one), read-only.
fn struct_entries_ref(v: &Value) -> Option<&HashMap<MapKey, Value>> {
    let Value::Message(m) = v else { return None };
    let field = |name: &str| {
        m.fields()
            .find_map(|(d, v)| (d.name() == name).then_some(v))
    };
    match m.descriptor().full_name() {
        "google.protobuf.Struct" => field("fields")?.as_map(),
        "google.protobuf.Value" => struct_entries_ref(field("struct_value")?),
        _ => None,
    }
}

/// The value at `keys` inside a Struct, borrowed.
fn value_at<'a>(from: &'a Value, keys: &[String]) -> Option<&'a Value> {
    let (first, rest) = keys.split_first()?;
    let child = struct_entries_ref(from)?.get(&MapKey::String(first.clone()))?;
    if rest.is_empty() {
        Some(child)
    } else {
        value_at(child, rest)
    }
}

/// The entries of a Struct (or of a Value holding one).
fn struct_entries(v: &mut Value) -> Option<&mut HashMap<MapKey, Value>> {
    let Value::Message(m) = v else { return None };
    match m.descriptor().full_name() {
        "google.protobuf.Struct" => match m.get_field_by_name_mut("fields") {
            Some(Value::Map(entries)) => Some(entries),
            _ => None,
        },
        "google.protobuf.Value" => {
            let inner = m.get_field_by_name_mut("struct_value")?;
            struct_entries(inner)
        }
        _ => None,
    }
}

/// Sets (or with `None` removes) the value at `keys` inside a Struct,
/// creating intermediate objects.
fn put_at(into: &mut Value, keys: &[String], value: Option<Value>) {
    let Some((first, rest)) = keys.split_first() else {
        return;
    };
    let Some(entries) = struct_entries(into) else {
        return;
    };
    let key = MapKey::String(first.clone());
    if rest.is_empty() {
        match value {
            Some(v) => {
                entries.insert(key, v);
            }
            None => {
                entries.remove(&key);
            }
        }
        return;
    }
    let is_object = entries
        .get_mut(&key)
        .is_some_and(|c| struct_entries(c).is_some());
    if !is_object {
        if value.is_none() {
            return;
        }
        entries.insert(key.clone(), empty_object_value());
    }
    if let Some(child) = entries.get_mut(&key) {
        put_at(child, rest, value);
    }
}

/// A `google.protobuf.Value` holding an empty object.
fn empty_object_value() -> Value {
    let pool = &crate::proto::DESCRIPTOR_POOL;
    let mut value = DynamicMessage::new(
        pool.get_message_by_name("google.protobuf.Value")
            .expect("struct.proto is in the descriptor set"),
    );
    let object = DynamicMessage::new(
        pool.get_message_by_name("google.protobuf.Struct")
            .expect("struct.proto is in the descriptor set"),
    );
    value.set_field_by_name("struct_value", Value::Message(object));
    Value::Message(value)
}

/// `stored` with the masked fields taken from `patch`.
pub fn apply(
    meta: &Meta,
    stored: &DynamicMessage,
    patch: &DynamicMessage,
    paths: &[Path],
) -> DynamicMessage {
    let mut out = stored.clone();
    for p in paths {
        match p {
            Path::Field(i) => {
                let f = &meta.fields[*i].desc;
                if patch.has_field(f) {
                    out.set_field(f, patch.get_field(f).into_owned());
                } else {
                    out.clear_field(f);
                }
            }
            Path::StructKey(i, keys) => {
                // Borrowed from the patch: one copy of the value, never of
                // the whole field per path.
                let f = &meta.fields[*i].desc;
                let from = patch.get_field(f);
                let value = value_at(&from, keys).cloned();
                put_at(out.get_field_mut(f), keys, value);
            }
        }
    }
    out
}
