//! Generic field rules, applied to every entity from its descriptor:
//! trimming and de-duplication, enumerated values and defaults from the
//! proto options (`crm.v1.allowed_values`, `crm.v1.default_value`), length and
//! size bounds, finite numbers, representable timestamps, REQUIRED fields,
//! and the id format of reference fields. Entity-specific rules live in
//! `crate::entities`.

use prost::Message;
use prost_reflect::{DynamicMessage, MapKey, Value};

use super::Kind;
use super::schema::{Meta, Shape};
use crate::error::Violations;

/// Longest single-line text field, in characters.
pub const MAX_TEXT_CHARS: usize = 1_024;
/// Longest free-text field (descriptions, notes), in characters.
pub const MAX_LONG_TEXT_CHARS: usize = 65_536;
/// Most entries in a string list (tags, ids).
pub const MAX_LIST_LEN: usize = 1_000;
/// Largest free-form JSON field (custom_fields, addresses, ...), encoded.
pub const MAX_JSON_BYTES: usize = 65_536;

// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the RFC 3339 range.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// Collects the violations of one resource in a request, with paths
/// prefixed by the resource's request field (`account.website`).
pub struct Checker {
    prefix: String,
    violations: Violations,
}

impl Checker {
    /// A checker whose paths start with `prefix` (e.g. `account`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            violations: Violations::new(),
        }
    }

    /// A checker continuing with `violations` already found.
    pub fn with(prefix: &str, violations: Violations) -> Self {
        Self {
            prefix: prefix.to_owned(),
            violations,
        }
    }

    /// Reports that `field` (relative to the resource) is invalid.
    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.violations
            .add(format!("{}.{field}", self.prefix), description);
    }

    /// True when nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations so far.
    pub fn into_violations(self) -> Violations {
        self.violations
    }
}

/// True if `s` is `<prefix>_` followed by a 26-character ULID.
pub fn is_id_of(kind: &Kind, s: &str) -> bool {
    s.strip_prefix(kind.prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|ulid| ulid::Ulid::from_string(ulid).is_ok())
}

/// The canonical form (uppercase ULID) of an id of `kind`, or `None` when `s`
/// is not one.
pub fn canonical_id(kind: &Kind, s: &str) -> Option<String> {
    let ulid = s.strip_prefix(kind.prefix)?.strip_prefix('_')?;
    let ulid = ulid::Ulid::from_string(ulid).ok()?;
    Some(format!("{}_{}", kind.prefix, ulid))
}

/// Clears `google.protobuf.Value` fields holding JSON `null`: a stored NULL
/// and an explicit `null` both mean "not set".
pub fn clear_null_values(msg: &mut DynamicMessage, meta: &Meta) {
    for f in meta.fields.iter().filter(|f| f.shape == Shape::Value) {
        let is_null = match msg.get_field(&f.desc).as_ref() {
            Value::Message(v) => !v.fields().any(|(d, _)| d.name() != "null_value"),
            _ => false,
        };
        if is_null && msg.has_field(&f.desc) {
            msg.clear_field(&f.desc);
        }
    }
}

/// Trims text (except free-text fields), lowercases enumerated strings,
/// fills `(crm.v1.default_value)` defaults, drops duplicate list entries and
/// clears null Values.
pub fn normalize(msg: &mut DynamicMessage, meta: &Meta) {
    clear_null_values(msg, meta);
    // get_field_mut would make an absent optional field present: skip those.
    for f in &meta.fields {
        if !msg.has_field(&f.desc) {
            continue;
        }
        match f.shape {
            Shape::String if !f.long_text => {
                if let Value::String(s) = msg.get_field_mut(&f.desc) {
                    let t = s.trim();
                    if t.len() != s.len() {
                        *s = t.to_owned();
                    }
                    if !f.allowed.is_empty() {
                        *s = s.to_lowercase();
                    }
                }
            }
            Shape::StringList => {
                if let Value::List(items) = msg.get_field_mut(&f.desc) {
                    let mut seen: Vec<String> = Vec::with_capacity(items.len());
                    items.retain_mut(|v| match v {
                        Value::String(s) => {
                            let t = s.trim().to_owned();
                            let keep = !seen.contains(&t);
                            if keep {
                                seen.push(t.clone());
                            }
                            *s = t;
                            keep
                        }
                        _ => true,
                    });
                }
            }
            _ => {}
        }
    }
    for f in &meta.fields {
        if let Some(default) = &f.default
            && msg.get_field(&f.desc).as_str() == Some("")
        {
            msg.set_field(&f.desc, Value::String(default.clone()));
        }
    }
}

fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::List(items) => items.iter().any(contains_nul),
        Value::Message(m) => m.fields().any(|(_, v)| contains_nul(v)),
        Value::Map(entries) => entries
            .iter()
            .any(|(k, v)| matches!(k, MapKey::String(s) if s.contains('\0')) || contains_nul(v)),
        _ => false,
    }
}

/// Checks every generic rule on a normalized record and reports on `v`.
pub fn validate(msg: &DynamicMessage, meta: &Meta, kind: &Kind, v: &mut Checker) {
    for f in &meta.fields {
        let value = msg.get_field(&f.desc);
        let present = msg.has_field(&f.desc);
        if contains_nul(&value) {
            v.add(&f.name, "must not contain NUL characters");
            continue;
        }
        match (f.shape, value.as_ref()) {
            (Shape::String, Value::String(s)) => {
                let max = if f.long_text {
                    MAX_LONG_TEXT_CHARS
                } else {
                    MAX_TEXT_CHARS
                };
                if s.chars().count() > max {
                    v.add(&f.name, format!("must be at most {max} characters"));
                }
                if f.behavior.required && s.is_empty() && f.writable() {
                    v.add(&f.name, "is required");
                }
                if !s.is_empty() && !f.allowed.is_empty() && !f.allowed.contains(s) {
                    v.add(&f.name, format!("must be one of {}", f.allowed.join(", ")));
                }
            }
            (Shape::StringList, Value::List(items)) => {
                if items.len() > MAX_LIST_LEN {
                    v.add(&f.name, format!("must have at most {MAX_LIST_LEN} entries"));
                }
                for (i, item) in items.iter().enumerate() {
                    if let Value::String(s) = item {
                        if s.is_empty() {
                            v.add(&format!("{}[{i}]", f.name), "must not be empty");
                        } else if s.chars().count() > MAX_TEXT_CHARS {
                            v.add(
                                &format!("{}[{i}]", f.name),
                                format!("must be at most {MAX_TEXT_CHARS} characters"),
                            );
                        }
                    }
                }
            }
            (Shape::Double, Value::F64(x)) if !x.is_finite() => {
                v.add(&f.name, "must be a finite number");
            }
            (Shape::Timestamp, Value::Message(ts)) if present => {
                let seconds = ts
                    .get_field_by_name("seconds")
                    .and_then(|s| s.as_i64())
                    .unwrap_or(0);
                let nanos = ts
                    .get_field_by_name("nanos")
                    .and_then(|n| n.as_i32())
                    .unwrap_or(0);
                if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds)
                    || !(0..1_000_000_000).contains(&nanos)
                {
                    v.add(
                        &f.name,
                        "must be a time between 0001-01-01 and 9999-12-31 (UTC)",
                    );
                }
            }
            (Shape::Struct | Shape::Value | Shape::Json, Value::Message(m))
                if present && m.encoded_len() > MAX_JSON_BYTES =>
            {
                v.add(&f.name, format!("must be at most {MAX_JSON_BYTES} bytes"));
            }
            (Shape::Json, Value::List(items)) => {
                let size: usize = items
                    .iter()
                    .filter_map(|i| i.as_message())
                    .map(|m| m.encoded_len())
                    .sum();
                if size > MAX_JSON_BYTES {
                    v.add(&f.name, format!("must be at most {MAX_JSON_BYTES} bytes"));
                }
            }
            _ => {}
        }
        if f.behavior.required && f.writable() && !matches!(f.shape, Shape::String) && !present {
            v.add(&f.name, "is required");
        }
    }
    for r in kind.references {
        let Some(value) = msg.get_field_by_name(r.field) else {
            continue;
        };
        let bad = |s: &str| !s.is_empty() && !is_id_of(r.target, s);
        let expected = format!(
            "must be {} id ({}_ followed by a 26-character ULID)",
            article(r.target.resource),
            r.target.prefix
        );
        match value.as_ref() {
            Value::String(s) if bad(s) => v.add(r.field, expected),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if item.as_str().is_some_and(bad) {
                        v.add(&format!("{}[{i}]", r.field), expected.clone());
                    }
                }
            }
            _ => {}
        }
    }
}

/// "an account", "a deal".
pub fn article(word: &str) -> String {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {word}"),
        _ => format!("a {word}"),
    }
}
