//! Generic field rules, applied to every entity from its descriptor: the
//! `buf.validate` rules the protos declare (lengths, patterns — reference
//! ids, emails, URLs… —, enumerations, bounds; see [`super::rules`]),
//! trimming and de-duplication, defaults (`crm.v1.default_value`), the size
//! of free-form JSON, finite numbers of at most 15 significant digits, NUL
//! characters, and REQUIRED fields. Entity-specific rules (those between
//! fields, or that need the database) live in `crate::entities`.

use prost::Message;
use prost_reflect::{DynamicMessage, MapKey, ReflectMessage, Value};

use super::Kind;
use super::schema::{Meta, Shape};
use crate::error::Violations;

// Every check below that walks a caller's collection runs after (or is) a
// bound on its size: nothing here is quadratic, and nothing runs long on a
// large request before refusing it.

/// Most entries in a string list (tags, ids), as sent: every list field
/// declares at most this as its `repeated.max_items`.
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

    /// Adds violations already prefixed (from [`precheck`]), once each.
    pub fn absorb(&mut self, other: Violations) {
        for v in other.iter() {
            if !self
                .violations
                .iter()
                .any(|w| w.field == v.field && w.description == v.description)
            {
                self.violations.add(v.field.clone(), v.description.clone());
            }
        }
    }

    /// True when `field` (relative to the resource) was reported.
    pub fn has(&self, field: &str) -> bool {
        let full = format!("{}.{field}", self.prefix);
        self.violations.iter().any(|v| v.field == full)
    }

    /// The prefix of this checker's paths.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Reports that `field` (relative to the resource) is invalid. The same
    /// violation found twice (on the record as sent and as normalized) is
    /// reported once.
    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        let field = format!("{}.{field}", self.prefix);
        let description = description.into();
        if !self
            .violations
            .iter()
            .any(|v| v.field == field && v.description == description)
        {
            self.violations.add(field, description);
        }
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

/// Trims text (except free-text fields; ASCII whitespace, the `\s` of the
/// declared patterns, so that a value that passed its pattern as sent never
/// trims to one that would not), canonicalizes ids, fills
/// `(crm.v1.default_value)` defaults, drops duplicate list entries and
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
                    let t = s.trim_ascii();
                    if t.len() != s.len() {
                        *s = t.to_owned();
                    }
                    if let Some(id) = f.id_prefix.and_then(|p| canonical_id_with(p, s)) {
                        *s = id;
                    }
                }
            }
            Shape::StringList => {
                if let Value::List(items) = msg.get_field_mut(&f.desc) {
                    // Linear: the entry count was bounded by `check_fields`.
                    let mut seen = std::collections::HashSet::with_capacity(items.len());
                    items.retain_mut(|v| match v {
                        Value::String(s) => {
                            let t = s.trim_ascii();
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

/// How much of [`check_fields`] to run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only the bounds on size (text length, list length, JSON size and
    /// depth): what must hold before any work proportional to a request.
    Sizes,
    /// Every rule.
    All,
}

/// The `(buf.validate.field)` rules and the size limits of every writable
/// field of `msg` (text length and pattern, enumerations, list lengths,
/// number and time bounds, JSON size, depth and numbers, NUL characters).
/// Run on a request's record as sent (sizes first, before any work
/// proportional to its size: normalizing, merging, references), and again on
/// the normalized record about to be stored. An absent or empty field is
/// exempt (`required` is checked by [`validate`]; `Meta::build` makes sure
/// every rule that the empty value breaks is on a required field or one
/// declared `IGNORE_IF_ZERO_VALUE`, so that this is protovalidate's
/// semantics). Server-maintained fields are never held to the client's
/// limits.
pub fn check_fields(msg: &DynamicMessage, meta: &Meta, scope: Scope, v: &mut Checker) {
    let all = scope == Scope::All;
    for f in meta
        .fields
        .iter()
        .filter(|f| f.writable() || f.name == "version")
    {
        if !msg.has_field(&f.desc) {
            continue;
        }
        let rules = &f.rules;
        let value = msg.get_field(&f.desc);
        match (f.shape, value.as_ref()) {
            (Shape::String, Value::String(s)) => {
                let problem = match rules.string.as_ref() {
                    Some(r) if all => r.problem(s),
                    Some(r) => r.size_problem(s),
                    None => None,
                };
                if let Some(problem) = problem {
                    v.add(&f.name, problem);
                } else if all && s.contains('\0') {
                    v.add(&f.name, "must not contain NUL characters");
                }
            }
            (Shape::StringList, Value::List(items)) => {
                let repeated = rules.repeated.as_ref();
                if let Some(max) = repeated.and_then(|r| r.max_items)
                    && items.len() as u64 > max
                {
                    v.add(&f.name, format!("must have at most {max} entries"));
                    continue;
                }
                if all && repeated.is_some_and(|r| r.unique) {
                    // Linear: the entry count was bounded just above.
                    let mut seen = std::collections::HashSet::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        if let Value::String(s) = item
                            && !seen.insert(s.as_str())
                        {
                            v.add(
                                &format!("{}[{i}]", f.name),
                                "must not repeat an earlier entry",
                            );
                        }
                    }
                }
                let item_rules = repeated
                    .and_then(|r| r.items.as_deref())
                    .and_then(|r| r.string.as_ref());
                for (i, item) in items.iter().enumerate() {
                    let Value::String(s) = item else { continue };
                    let problem = match item_rules {
                        Some(r) if all => r.problem(s),
                        Some(r) => r.size_problem(s),
                        None => None,
                    }
                    .or_else(|| {
                        (all && s.contains('\0')).then(|| "must not contain NUL characters".into())
                    });
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
                } else if all && contains_nul(&value) {
                    v.add(&f.name, "must not contain NUL characters");
                }
            }
            (Shape::Double, Value::F64(x)) if all => {
                let problem = match rules.number.and_then(|b| b.problem(*x)) {
                    Some(p) => Some(p),
                    None => number_problem(*x),
                };
                if let Some(problem) = problem {
                    v.add(&f.name, problem);
                }
            }
            (Shape::Int32, Value::I32(x)) if all => {
                if let Some(problem) = rules.number.and_then(|b| b.problem(f64::from(*x))) {
                    v.add(&f.name, problem);
                }
            }
            (Shape::Timestamp, Value::Message(ts)) if all => {
                if let Some(problem) = timestamp_problem(ts, rules) {
                    v.add(&f.name, problem);
                }
            }
            _ => {}
        }
    }
}

/// What is wrong with a timestamp, if anything: nanoseconds out of range
/// (not a valid `google.protobuf.Timestamp`), or outside the field's
/// `(buf.validate.field).timestamp` bounds (0001-01-01 to 9999-12-31 UTC,
/// what RFC 3339 and Postgres can both hold).
fn timestamp_problem(ts: &DynamicMessage, rules: &super::rules::Rules) -> Option<String> {
    let seconds = ts
        .get_field_by_name("seconds")
        .and_then(|s| s.as_i64())
        .unwrap_or(0);
    let nanos = ts
        .get_field_by_name("nanos")
        .and_then(|n| n.as_i32())
        .unwrap_or(0);
    let bounds = rules.timestamp?;
    if !(0..1_000_000_000).contains(&nanos) {
        return Some(bounds.describe());
    }
    bounds.problem((seconds, nanos))
}

/// The rules a request's record must meet, checked on the record as sent:
/// over a size bound, the request is refused at once (`Err`), before any
/// work proportional to it; otherwise the violations of the other rules are
/// returned, to be reported together with the rest (see [`Checker::with`]).
pub fn precheck(
    msg: &DynamicMessage,
    meta: &Meta,
    prefix: &str,
) -> Result<crate::error::Violations, crate::error::Error> {
    let mut v = Checker::new(prefix);
    check_fields(msg, meta, Scope::Sizes, &mut v);
    if !v.is_empty() {
        return Err(v.into_violations().into_result().unwrap_err());
    }
    check_fields(msg, meta, Scope::All, &mut v);
    Ok(v.into_violations())
}

/// Checks every generic rule on a normalized record and reports on `v`:
/// the declared rules ([`check_fields`]; reference ids included, by their
/// declared pattern) and the required fields.
pub fn validate(msg: &DynamicMessage, meta: &Meta, v: &mut Checker) {
    check_fields(msg, meta, Scope::All, v);
    for f in meta.fields.iter().filter(|f| f.writable()) {
        if !(f.behavior.required || f.rules.required) {
            continue;
        }
        let missing = match (f.shape, msg.get_field(&f.desc).as_ref()) {
            (Shape::String, Value::String(s)) => s.is_empty(),
            _ => !msg.has_field(&f.desc),
        };
        // A blank value reported by its pattern is not reported twice.
        if missing && !v.has(&f.name) {
            v.add(&f.name, "is required");
        }
    }
    let set = |name: &str| {
        meta.field(name)
            .is_some_and(|f| match msg.get_field(&f.desc).as_ref() {
                Value::String(s) => !s.is_empty(),
                _ => msg.has_field(&f.desc),
            })
    };
    for f in &meta.fields {
        if let Some(target) = &f.requires_when_true
            && msg.get_field(&f.desc).as_bool() == Some(true)
            && !set(target)
        {
            v.add(&f.name, format!("requires {target} to be set"));
        }
    }
    if let Some(first) = meta.at_least_one_of.first()
        && !meta.at_least_one_of.iter().any(|n| set(n))
    {
        v.add(
            first,
            format!(
                "at least one of {} is required",
                meta.at_least_one_of.join(", ")
            ),
        );
    }
}

/// "an account", "a deal".
pub fn article(word: &str) -> String {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {word}"),
        _ => format!("a {word}"),
    }
}
