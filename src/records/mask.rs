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
//! unknown paths are INVALID_ARGUMENT.

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

/// Resolves the update mask of a request against the entity's fields.
pub fn resolve(meta: &Meta, patch: &DynamicMessage, mask: &[String]) -> Result<Vec<Path>, Error> {
    let raw: Vec<&str> = mask
        .iter()
        .flat_map(|p| p.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
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
    for p in raw {
        if p == "*" {
            for (i, f) in meta.fields.iter().enumerate() {
                if f.writable() {
                    paths.push(Path::Field(i));
                }
            }
            continue;
        }
        let (head, rest) = match p.split_once('.') {
            Some((h, r)) => (h, Some(r)),
            None => (p, None),
        };
        let Some(i) = meta.position(head) else {
            violations.add("update_mask", format!("unknown field \"{p}\""));
            continue;
        };
        let f = &meta.fields[i];
        if !f.writable() {
            continue;
        }
        match rest {
            None => paths.push(Path::Field(i)),
            Some(keys) if f.shape == Shape::Struct && keys.split('.').all(|k| !k.is_empty()) => {
                paths.push(Path::StructKey(
                    i,
                    keys.split('.').map(str::to_owned).collect(),
                ))
            }
            Some(_) => violations.add(
                "update_mask",
                format!("\"{p}\": {} has no subfields that can be named", f.name),
            ),
        }
    }
    violations.into_result()?;
    paths.dedup();
    Ok(paths)
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

/// The value at `keys` inside a Struct, taken out of `from`.
fn take_at(from: &mut Value, keys: &[String]) -> Option<Value> {
    let (first, rest) = keys.split_first()?;
    let entries = struct_entries(from)?;
    let child = entries.get_mut(&MapKey::String(first.clone()))?;
    if rest.is_empty() {
        Some(std::mem::replace(child, Value::Bool(false)))
    } else {
        take_at(child, rest)
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
                let f = &meta.fields[*i].desc;
                let mut from = patch.get_field(f).into_owned();
                let value = take_at(&mut from, keys);
                put_at(out.get_field_mut(f), keys, value);
            }
        }
    }
    out
}
