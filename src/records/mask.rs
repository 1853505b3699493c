//! Update masks (AIP-134, AIP-161): which fields an update writes.
//!
//! - No mask (or an empty one): the fields populated in the request.
//! - `*`: every writable field (absent ones go back to their defaults).
//! - Otherwise the named fields, in proto (snake_case) or JSON (camelCase)
//!   spelling; a field named but absent in the request is cleared. For
//!   `google.protobuf.Struct` fields, `custom_fields.<key>` sets or removes one
//!   key.
//!
//! Paths naming output-only fields, the identifier or `version` are ignored;
//! unknown paths are INVALID_ARGUMENT.

use prost_reflect::{DynamicMessage, MapKey, Value};

use super::schema::{Meta, Shape};
use crate::error::{Error, Violations};

/// One resolved mask path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// A whole field, by index into `Meta::fields`.
    Field(usize),
    /// One key of a Struct field.
    StructKey(usize, String),
}

fn snake_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
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
        let head = if meta.field(head).is_some() {
            head.to_owned()
        } else {
            snake_case(head)
        };
        let Some(i) = meta.fields.iter().position(|f| f.name == head) else {
            violations.add("update_mask", format!("unknown field \"{p}\""));
            continue;
        };
        let f = &meta.fields[i];
        if !f.writable() {
            continue;
        }
        match rest {
            None => paths.push(Path::Field(i)),
            Some(key) if f.shape == Shape::Struct && !key.is_empty() => {
                paths.push(Path::StructKey(i, key.to_owned()))
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

fn struct_entries(v: &mut Value) -> Option<&mut std::collections::HashMap<MapKey, Value>> {
    match v {
        Value::Message(m) => match m.get_field_by_name_mut("fields") {
            Some(Value::Map(entries)) => Some(entries),
            _ => None,
        },
        _ => None,
    }
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
            Path::StructKey(i, key) => {
                let f = &meta.fields[*i].desc;
                let mut from = patch.get_field(f).into_owned();
                let value =
                    struct_entries(&mut from).and_then(|e| e.remove(&MapKey::String(key.clone())));
                let target = out.get_field_mut(f);
                if let Some(entries) = struct_entries(target) {
                    match value {
                        Some(v) => {
                            entries.insert(MapKey::String(key.clone()), v);
                        }
                        None => {
                            entries.remove(&MapKey::String(key.clone()));
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_paths_become_snake_case() {
        assert_eq!(snake_case("annualRevenue"), "annual_revenue");
        assert_eq!(snake_case("name"), "name");
    }
}
