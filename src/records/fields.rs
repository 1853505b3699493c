//! Generic field rules, applied to every entity from its descriptor:
//! trimming and de-duplication, enumerated values and defaults from the
//! proto options (`crm.v1.allowed_values`, `crm.v1.default_value`), length and
//! size bounds, finite numbers, representable timestamps, REQUIRED fields,
//! and the id format of reference fields. Entity-specific rules live in
//! `crate::entities`.

use prost::Message;
use prost_reflect::{DynamicMessage, MapKey, ReflectMessage, Value};

use super::Kind;
use super::schema::{Meta, Shape};
use crate::error::Violations;

// Every check below that walks a caller's collection runs after (or is) a
// bound on its size: nothing here is quadratic, and nothing runs long on a
// large request before refusing it.

/// Longest single-line text field, in characters.
pub const MAX_TEXT_CHARS: usize = 1_024;
/// Longest single-line text field (and string-list entry), in UTF-8 bytes:
/// such values are indexed, and a B-tree entry must fit a third of a page.
pub const MAX_TEXT_BYTES: usize = 2_048;
/// Longest free-text field (descriptions, notes), in characters.
pub const MAX_LONG_TEXT_CHARS: usize = 65_536;
/// Longest `external_id`, in characters.
pub const MAX_EXTERNAL_ID_CHARS: usize = 255;
/// Most entries in a string list (tags, ids), as sent.
pub const MAX_LIST_LEN: usize = 1_000;
/// Largest free-form JSON field (custom_fields, addresses, ...), encoded.
pub const MAX_JSON_BYTES: usize = 65_536;
/// Deepest nesting of objects and lists in a free-form JSON field.
pub const MAX_JSON_DEPTH: usize = 20;
/// Money and quantities are below this in magnitude...
pub const MAX_MAGNITUDE: f64 = 1e15;
/// ...and have at most this many significant digits, so that they cross the
/// wire as a double exactly.
pub const MAX_SIGNIFICANT_DIGITS: usize = 15;

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

    /// The prefix of this checker's paths.
    pub fn prefix(&self) -> &str {
        &self.prefix
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
    canonical_id_with(kind.prefix, s).is_some()
}

/// The canonical form (uppercase ULID) of an id of `kind`, or `None` when `s`
/// is not one.
pub fn canonical_id(kind: &Kind, s: &str) -> Option<String> {
    canonical_id_with(kind.prefix, s)
}

/// A record id as the id parser produced it: `<prefix>_` and a canonical
/// ULID, so only `[a-z_0-9A-Z]`. Constructed nowhere else, which is what lets
/// the single-message read ([`crate::db::Db::read_one`]) inline it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordId(String);

impl RecordId {
    /// `s` as an id of `kind`, canonicalized; `None` if it is not one.
    pub fn parse(kind: &Kind, s: &str) -> Option<Self> {
        canonical_id(kind, s).map(Self)
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// The canonical form of `<prefix>_<ULID>`. 26 base-32 characters hold 130
/// bits; a ULID is 128, so the first character is at most `7` (a larger one
/// would silently wrap around to another id).
pub fn canonical_id_with(prefix: &str, s: &str) -> Option<String> {
    let ulid = s.strip_prefix(prefix)?.strip_prefix('_')?;
    if !ulid.starts_with(|c: char| ('0'..='7').contains(&c)) {
        return None;
    }
    let ulid = ulid::Ulid::from_string(ulid).ok()?;
    Some(format!("{prefix}_{ulid}"))
}

/// How many significant digits the shortest decimal form of `x` has
/// (`0.1` has 1, `0.30000000000000004` has 17).
pub fn significant_digits(x: f64) -> usize {
    let e = format!("{:e}", x.abs());
    let mantissa = e.split('e').next().unwrap_or_default();
    mantissa.bytes().filter(u8::is_ascii_digit).count()
}

/// What is wrong with a money or quantity value, if anything: it must be
/// finite, below 10^15 in magnitude, with at most 15 significant digits.
pub fn number_problem(x: f64) -> Option<String> {
    if !x.is_finite() {
        return Some("must be a finite number".into());
    }
    if x.abs() >= MAX_MAGNITUDE {
        return Some("must be below 10^15 in magnitude".into());
    }
    if significant_digits(x) > MAX_SIGNIFICANT_DIGITS {
        return Some(format!(
            "must have at most {MAX_SIGNIFICANT_DIGITS} significant digits"
        ));
    }
    None
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
                    if let Some(id) = f.id_prefix.and_then(|p| canonical_id_with(p, s)) {
                        *s = id;
                    }
                }
            }
            Shape::StringList => {
                if let Value::List(items) = msg.get_field_mut(&f.desc) {
                    // Linear: the entry count was bounded by `check_sizes`.
                    let mut seen = std::collections::HashSet::with_capacity(items.len());
                    items.retain_mut(|v| match v {
                        Value::String(s) => {
                            let t = s.trim();
                            let t = f
                                .id_prefix
                                .and_then(|p| canonical_id_with(p, t))
                                .unwrap_or_else(|| t.to_owned());
                            *s = t;
                            seen.insert(s.clone())
                        }
                        _ => true,
                    });
                }
            }
            Shape::Timestamp => {
                // Stored to the microsecond: truncate, so that Postgres never
                // rounds a time past 9999-12-31.
                if let Value::Message(ts) = msg.get_field_mut(&f.desc)
                    && let Some(Value::I32(nanos)) = ts.get_field_by_name_mut("nanos")
                    && (0..1_000_000_000).contains(nanos)
                {
                    *nanos -= *nanos % 1000;
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

/// What is wrong inside a free-form JSON value (a `Struct`, `Value`,
/// `ListValue` or a message holding them), if anything: nesting deeper than
/// [`MAX_JSON_DEPTH`] (checked before going deeper) or a number that is not
/// finite (JSON has none).
pub fn json_problem(v: &Value, depth: usize) -> Option<String> {
    if depth > MAX_JSON_DEPTH {
        return Some(format!(
            "must not nest objects and lists more than {MAX_JSON_DEPTH} levels deep"
        ));
    }
    match v {
        Value::F64(x) if !x.is_finite() => Some("must not hold NaN or infinite numbers".into()),
        Value::List(items) => items.iter().find_map(|i| json_problem(i, depth)),
        Value::Map(entries) => entries.values().find_map(|i| json_problem(i, depth + 1)),
        Value::Message(m) => {
            // A ListValue is a level of its own; Value and Struct wrappers
            // count once (the Struct's map is the level).
            let deeper = usize::from(m.descriptor().full_name() == "google.protobuf.ListValue");
            m.fields()
                .find_map(|(_, v)| json_problem(v, depth + deeper))
        }
        _ => None,
    }
}

/// The size limits of every writable field of `msg`: text length (in
/// characters and, for single-line text, bytes), list lengths, JSON size,
/// depth and numbers, NUL characters. Run on a request's record before any
/// work proportional to its size (normalizing, merging, references), and
/// again on the record about to be stored. Server-maintained fields are never
/// held to the client's limits.
pub fn check_sizes(msg: &DynamicMessage, meta: &Meta, v: &mut Checker) {
    for f in meta.fields.iter().filter(|f| f.writable()) {
        if !msg.has_field(&f.desc) {
            continue;
        }
        let value = msg.get_field(&f.desc);
        match (f.shape, value.as_ref()) {
            (Shape::String, Value::String(s)) => {
                if s.contains('\0') {
                    v.add(&f.name, "must not contain NUL characters");
                } else if let Some(problem) = text_problem(s, f.long_text) {
                    v.add(&f.name, problem);
                }
            }
            (Shape::StringList, Value::List(items)) => {
                if items.len() > MAX_LIST_LEN {
                    v.add(&f.name, format!("must have at most {MAX_LIST_LEN} entries"));
                    continue;
                }
                for (i, item) in items.iter().enumerate() {
                    let Value::String(s) = item else { continue };
                    let problem = if s.contains('\0') {
                        Some("must not contain NUL characters".to_owned())
                    } else {
                        text_problem(s, false)
                    };
                    if let Some(problem) = problem {
                        v.add(&format!("{}[{i}]", f.name), problem);
                    }
                }
            }
            (Shape::Struct | Shape::Value | Shape::Json, _) => {
                let size = match value.as_ref() {
                    Value::Message(m) => m.encoded_len(),
                    Value::List(items) => items
                        .iter()
                        .filter_map(|i| i.as_message())
                        .map(|m| m.encoded_len())
                        .sum(),
                    _ => 0,
                };
                if size > MAX_JSON_BYTES {
                    v.add(&f.name, format!("must be at most {MAX_JSON_BYTES} bytes"));
                } else if let Some(problem) = json_problem(&value, 0) {
                    v.add(&f.name, problem);
                } else if contains_nul(&value) {
                    v.add(&f.name, "must not contain NUL characters");
                }
            }
            (Shape::Double, Value::F64(x)) => {
                if let Some(problem) = number_problem(*x) {
                    v.add(&f.name, problem);
                }
            }
            _ => {}
        }
    }
}

/// What is wrong with the length of a text value, if anything.
fn text_problem(s: &str, long_text: bool) -> Option<String> {
    if long_text {
        // A cheap bound first: a character is at most 4 bytes.
        if s.len() > MAX_LONG_TEXT_CHARS && s.chars().count() > MAX_LONG_TEXT_CHARS {
            return Some(format!("must be at most {MAX_LONG_TEXT_CHARS} characters"));
        }
        return None;
    }
    if s.len() > MAX_TEXT_CHARS && s.chars().count() > MAX_TEXT_CHARS {
        return Some(format!("must be at most {MAX_TEXT_CHARS} characters"));
    }
    if s.len() > MAX_TEXT_BYTES {
        return Some(format!(
            "must be at most {MAX_TEXT_BYTES} bytes in UTF-8 (this text has {})",
            s.len()
        ));
    }
    None
}

/// The limits a request's record must meet before anything else is done
/// with it: the violations of [`check_sizes`], as an error.
pub fn precheck(
    msg: &DynamicMessage,
    meta: &Meta,
    prefix: &str,
) -> Result<(), crate::error::Error> {
    let mut v = Checker::new(prefix);
    check_sizes(msg, meta, &mut v);
    v.into_violations().into_result()
}

/// Checks every generic rule on a normalized record and reports on `v`.
pub fn validate(msg: &DynamicMessage, meta: &Meta, kind: &Kind, v: &mut Checker) {
    check_sizes(msg, meta, v);
    for f in &meta.fields {
        let present = msg.has_field(&f.desc);
        let value = msg.get_field(&f.desc);
        match (f.shape, value.as_ref()) {
            (Shape::String, Value::String(s)) => {
                if f.behavior.required && s.is_empty() && f.writable() {
                    v.add(&f.name, "is required");
                }
                if !s.is_empty() && !f.allowed.is_empty() && !f.allowed.contains(s) {
                    v.add(&f.name, format!("must be one of {}", f.allowed.join(", ")));
                }
                if f.name == "external_id" && s.chars().count() > MAX_EXTERNAL_ID_CHARS {
                    v.add(
                        &f.name,
                        format!("must be at most {MAX_EXTERNAL_ID_CHARS} characters"),
                    );
                }
            }
            (Shape::StringList, Value::List(items)) if f.writable() => {
                for (i, item) in items.iter().enumerate() {
                    if item.as_str().is_some_and(str::is_empty) {
                        v.add(&format!("{}[{i}]", f.name), "must not be empty");
                    }
                }
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
            Value::List(items) if items.len() <= MAX_LIST_LEN => {
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
