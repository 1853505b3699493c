//! The rules of defined custom fields: a tenant's definitions of one
//! resource type ([`ResourceSchema`]) and the check of a record's
//! `custom_fields` against them. Pure: no database, unit-tested here.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost_types::value::Kind as V;
use prost_types::{Struct, Value};

use crate::records::Checker;
use crate::records::fields::number_problem;

/// Largest whole number an `integer` key holds (15 digits, exact as a double).
pub const MAX_INTEGER: f64 = 999_999_999_999_999.0;

/// The type of a defined key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// A JSON string.
    String,
    /// A JSON number.
    Number,
    /// A whole JSON number.
    Integer,
    /// true or false.
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    /// RFC 3339, stored as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    Datetime,
    /// One of the options.
    Enum,
    /// A list of distinct options.
    MultiEnum,
}

/// Every type's name, as the API spells it.
pub const TYPES: [&str; 8] = [
    "string",
    "number",
    "integer",
    "boolean",
    "date",
    "datetime",
    "enum",
    "multi_enum",
];

impl FieldType {
    /// The type named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => Self::String,
            "number" => Self::Number,
            "integer" => Self::Integer,
            "boolean" => Self::Boolean,
            "date" => Self::Date,
            "datetime" => Self::Datetime,
            "enum" => Self::Enum,
            "multi_enum" => Self::MultiEnum,
            _ => return None,
        })
    }

    /// The API's name of the type.
    pub fn as_str(self) -> &'static str {
        TYPES[self as usize]
    }

    /// Whether order_by and ranges apply (and the definition has an index
    /// of its own): every type but boolean and multi_enum.
    pub fn sortable(self) -> bool {
        !matches!(self, Self::Boolean | Self::MultiEnum)
    }

    /// Whether values compare as numbers (else as text).
    pub fn numeric(self) -> bool {
        matches!(self, Self::Number | Self::Integer)
    }

    /// Whether `unique` may be set.
    pub fn may_be_unique(self) -> bool {
        self.sortable()
    }
}

/// One definition, as the write path needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    /// `fld_…`.
    pub id: String,
    /// The key in `custom_fields`.
    pub key: String,
    /// Its type.
    pub ty: FieldType,
    /// The allowed values (enum, multi_enum).
    pub options: Vec<String>,
    /// A value must be present.
    pub required: bool,
    /// No two live records share a value.
    pub unique: bool,
    /// Longest string, in characters.
    pub max_length: Option<u32>,
    /// Smallest number, inclusive.
    pub minimum: Option<f64>,
    /// Largest number, inclusive.
    pub maximum: Option<f64>,
}

/// A tenant's definitions of one resource type, by key.
#[derive(Clone, Debug, Default)]
pub struct ResourceSchema {
    defs: BTreeMap<String, Definition>,
}

/// An empty schema, shared.
pub fn empty() -> Arc<ResourceSchema> {
    Arc::new(ResourceSchema::default())
}

/// Whether `v` counts as no value: absent, null, "" or an empty list.
fn blank(v: Option<&Value>) -> bool {
    match v.and_then(|v| v.kind.as_ref()) {
        None | Some(V::NullValue(_)) => true,
        Some(V::StringValue(s)) => s.is_empty(),
        Some(V::ListValue(l)) => l.values.is_empty(),
        _ => false,
    }
}

fn kind_name(v: &Value) -> &'static str {
    match &v.kind {
        None | Some(V::NullValue(_)) => "null",
        Some(V::NumberValue(_)) => "a number",
        Some(V::StringValue(_)) => "a string",
        Some(V::BoolValue(_)) => "a boolean",
        Some(V::StructValue(_)) => "an object",
        Some(V::ListValue(_)) => "a list",
    }
}

/// `options` for a message: the first few, quoted.
fn listed(options: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s: Vec<String> = options
        .iter()
        .take(SHOWN)
        .map(|o| format!("{o:?}"))
        .collect();
    if options.len() > SHOWN {
        s.push(format!("… ({} in all)", options.len()));
    }
    s.join(", ")
}

fn show(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// A `date` value: `YYYY-MM-DD`, a real day of years 0001 to 9999.
pub fn parse_date(s: &str) -> Option<chrono::NaiveDate> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape || s.starts_with("0000") {
        return None;
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// A `datetime` value in its stored form: RFC 3339 with an offset, in UTC
/// as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (years 0001 to 9999; digits past
/// microseconds are refused rather than rounded).
pub fn normalize_datetime(s: &str) -> Option<String> {
    use chrono::{Datelike, Timelike};
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    let utc = t.with_timezone(&chrono::Utc);
    if !(1..=9999).contains(&utc.year()) || utc.nanosecond() % 1000 != 0 {
        return None;
    }
    Some(utc.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

impl Definition {
    /// What is wrong with the present, non-null value `v`, if anything;
    /// `path` names it for list items. Datetimes are rewritten into their
    /// stored form.
    pub fn check(&self, v: &mut Value, path: &str, out: &mut Vec<(String, String)>) {
        let mut bad = |msg: String| out.push((path.to_owned(), msg));
        match (self.ty, v.kind.as_mut()) {
            (FieldType::String, Some(V::StringValue(s))) => {
                if let Some(max) = self.max_length
                    && s.chars().count() > max as usize
                {
                    bad(format!("must be at most {max} characters"));
                }
            }
            (FieldType::Number | FieldType::Integer, Some(V::NumberValue(x))) => {
                let x = *x;
                if self.ty == FieldType::Integer && (x.fract() != 0.0 || x.abs() > MAX_INTEGER) {
                    bad("must be a whole number of at most 15 digits".into());
                    return;
                }
                if let Some(p) = number_problem(x) {
                    bad(p);
                    return;
                }
                match (self.minimum, self.maximum) {
                    (Some(lo), Some(hi)) if x < lo || x > hi => {
                        bad(format!("must be between {} and {}", show(lo), show(hi)))
                    }
                    (Some(lo), _) if x < lo => bad(format!("must be at least {}", show(lo))),
                    (_, Some(hi)) if x > hi => bad(format!("must be at most {}", show(hi))),
                    _ => {}
                }
            }
            (FieldType::Boolean, Some(V::BoolValue(_))) => {}
            (FieldType::Date, Some(V::StringValue(s))) => {
                if parse_date(s).is_none() {
                    bad(format!(
                        "\"{}\" is not a date: expected YYYY-MM-DD, e.g. 2026-03-31",
                        clip(s)
                    ));
                }
            }
            (FieldType::Datetime, Some(V::StringValue(s))) => match normalize_datetime(s) {
                Some(n) => *s = n,
                None => bad(format!(
                    "\"{}\" is not an RFC 3339 time with an offset (e.g. 2026-03-31T09:30:00Z, at most microseconds)",
                    clip(s)
                )),
            },
            (FieldType::Enum, Some(V::StringValue(s))) => {
                if !self.options.iter().any(|o| o == s) {
                    bad(format!(
                        "\"{}\" is not an option: must be one of {}",
                        clip(s),
                        listed(&self.options)
                    ));
                }
            }
            (FieldType::MultiEnum, Some(V::ListValue(list))) => {
                let mut seen = std::collections::HashSet::new();
                for (i, item) in list.values.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    match &item.kind {
                        Some(V::StringValue(s)) if self.options.iter().any(|o| o == s) => {
                            if !seen.insert(s.as_str()) {
                                out.push((item_path, format!("\"{}\" is listed twice", clip(s))));
                            }
                        }
                        Some(V::StringValue(s)) => out.push((
                            item_path,
                            format!(
                                "\"{}\" is not an option: must be one of {}",
                                clip(s),
                                listed(&self.options)
                            ),
                        )),
                        _ => out.push((
                            item_path,
                            format!("must be a string (an option), not {}", kind_name(item)),
                        )),
                    }
                }
            }
            _ => {
                let want = match self.ty {
                    FieldType::String => "a string",
                    FieldType::Number => "a number",
                    FieldType::Integer => "a whole number",
                    FieldType::Boolean => "true or false",
                    FieldType::Date => "a date string (YYYY-MM-DD)",
                    FieldType::Datetime => "an RFC 3339 time string",
                    FieldType::Enum => "a string (one of the options)",
                    FieldType::MultiEnum => "a list of options",
                };
                bad(format!("must be {want}, not {}", kind_name(v)));
            }
        }
    }

    /// Whether the stored value `v` (absent: `None`) violates the
    /// definition, as a write would find it (for checks of live records).
    pub fn violated_by(&self, v: Option<&Value>) -> bool {
        if blank(v) {
            return self.required;
        }
        let mut v = v.cloned().unwrap_or_default();
        let mut out = Vec::new();
        self.check(&mut v, "", &mut out);
        !out.is_empty()
    }
}

/// At most 64 characters of `s`, for messages.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

impl ResourceSchema {
    /// A schema of `defs`.
    pub fn new(defs: impl IntoIterator<Item = Definition>) -> Self {
        Self {
            defs: defs.into_iter().map(|d| (d.key.clone(), d)).collect(),
        }
    }

    /// True when nothing is defined.
    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// The definition of `key`.
    pub fn get(&self, key: &str) -> Option<&Definition> {
        self.defs.get(key)
    }

    /// The definitions, by key.
    pub fn iter(&self) -> impl Iterator<Item = &Definition> {
        self.defs.values()
    }

    /// Checks the custom fields `new` of a record being created (`old`
    /// `None`) or updated, reporting on `v` with paths
    /// `custom_fields.<key>`: on create every defined key, on update the
    /// keys whose value changes. Datetimes are rewritten into their stored
    /// form.
    pub fn check(&self, new: &mut Option<Struct>, old: Option<&Option<Struct>>, v: &mut Checker) {
        if self.defs.is_empty() {
            return;
        }
        let empty = Struct::default();
        let old_fields = old.map(|o| o.as_ref().unwrap_or(&empty));
        let mut out = Vec::new();
        let had = new.is_some();
        let mut fields = new.take().unwrap_or_default();
        for d in self.defs.values() {
            let before = old_fields.and_then(|o| o.fields.get(&d.key));
            let now = fields.fields.get(&d.key);
            if old_fields.is_some() && before == now {
                continue;
            }
            let path = format!("custom_fields.{}", d.key);
            if blank(now) {
                if !d.required {
                    continue;
                }
                match old_fields {
                    None => out.push((path, "is required".to_owned())),
                    Some(_) if !blank(before) => {
                        out.push((path, "is required and cannot be removed".to_owned()))
                    }
                    // A record that never had it (it was undeleted after
                    // the key became required): writes may leave it out.
                    Some(_) => {}
                }
                continue;
            }
            if let Some(value) = fields.fields.get_mut(&d.key) {
                d.check(value, &path, &mut out);
            }
        }
        *new = had.then_some(fields);
        for (path, msg) in out {
            v.add(&path, msg);
        }
    }

    /// The unique keys whose value `new` holds (and, for an update, that
    /// changed from `old`): (key, value as JSON).
    pub fn unique_values(
        &self,
        new: Option<&Struct>,
        old: Option<Option<&Struct>>,
    ) -> Vec<(&Definition, serde_json::Value)> {
        let mut out = Vec::new();
        for d in self.defs.values().filter(|d| d.unique) {
            let now = new.and_then(|s| s.fields.get(&d.key));
            if blank(now) {
                continue;
            }
            if let Some(old) = old
                && old.and_then(|s| s.fields.get(&d.key)) == now
            {
                continue;
            }
            if let Some(json) = now.and_then(to_json) {
                out.push((d, json));
            }
        }
        out
    }
}

/// A scalar Value as JSON (lists and objects: `None`).
pub fn to_json(v: &Value) -> Option<serde_json::Value> {
    Some(match v.kind.as_ref()? {
        V::StringValue(s) => serde_json::Value::String(s.clone()),
        V::NumberValue(x) => serde_json::Number::from_f64(*x)?.into(),
        V::BoolValue(b) => serde_json::Value::Bool(*b),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(key: &str, ty: FieldType) -> Definition {
        Definition {
            id: "fld_x".into(),
            key: key.into(),
            ty,
            options: vec![],
            required: false,
            unique: false,
            max_length: None,
            minimum: None,
            maximum: None,
        }
    }

    fn s(x: &str) -> Value {
        Value {
            kind: Some(V::StringValue(x.into())),
        }
    }
    fn n(x: f64) -> Value {
        Value {
            kind: Some(V::NumberValue(x)),
        }
    }
    fn b(x: bool) -> Value {
        Value {
            kind: Some(V::BoolValue(x)),
        }
    }
    fn list(items: &[&str]) -> Value {
        Value {
            kind: Some(V::ListValue(prost_types::ListValue {
                values: items.iter().map(|i| s(i)).collect(),
            })),
        }
    }
    fn record(pairs: &[(&str, Value)]) -> Option<Struct> {
        Some(Struct {
            fields: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        })
    }

    fn problems(
        schema: &ResourceSchema,
        new: &mut Option<Struct>,
        old: Option<&Option<Struct>>,
    ) -> Vec<String> {
        let mut v = Checker::new("account");
        schema.check(new, old, &mut v);
        v.into_violations()
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect()
    }

    fn schema() -> ResourceSchema {
        let mut seats = def("seats", FieldType::Integer);
        seats.minimum = Some(0.0);
        seats.maximum = Some(10_000.0);
        let mut tier = def("tier", FieldType::Enum);
        tier.options = vec!["gold".into(), "silver".into()];
        tier.required = true;
        let mut regions = def("regions", FieldType::MultiEnum);
        regions.options = vec!["emea".into(), "apac".into()];
        let mut code = def("code", FieldType::String);
        code.max_length = Some(3);
        ResourceSchema::new([
            seats,
            tier,
            regions,
            code,
            def("renewal", FieldType::Date),
            def("signed_at", FieldType::Datetime),
            def("vip", FieldType::Boolean),
            def("score", FieldType::Number),
        ])
    }

    #[test]
    fn every_type_is_checked_and_every_violation_reported() {
        let mut rec = record(&[
            ("seats", s("7")),
            ("tier", s("platinum")),
            ("regions", list(&["emea", "mars", "emea"])),
            ("code", s("ABCD")),
            ("renewal", s("2026-02-30")),
            ("signed_at", s("yesterday")),
            ("vip", s("yes")),
            ("score", n(f64::from(0.1f32))),
            ("free", s("anything")),
        ]);
        let p = problems(&schema(), &mut rec, None);
        assert_eq!(
            p,
            vec![
                "account.custom_fields.code: must be at most 3 characters",
                "account.custom_fields.regions[1]: \"mars\" is not an option: must be one of \"emea\", \"apac\"",
                "account.custom_fields.regions[2]: \"emea\" is listed twice",
                "account.custom_fields.renewal: \"2026-02-30\" is not a date: expected YYYY-MM-DD, e.g. 2026-03-31",
                "account.custom_fields.score: must have at most 15 significant digits",
                "account.custom_fields.seats: must be a whole number, not a string",
                "account.custom_fields.signed_at: \"yesterday\" is not an RFC 3339 time with an offset (e.g. 2026-03-31T09:30:00Z, at most microseconds)",
                "account.custom_fields.tier: \"platinum\" is not an option: must be one of \"gold\", \"silver\"",
                "account.custom_fields.vip: must be true or false, not a string",
            ]
        );
    }

    #[test]
    fn valid_values_pass_and_datetimes_are_stored_in_utc() {
        let mut rec = record(&[
            ("seats", n(10_000.0)),
            ("tier", s("gold")),
            ("regions", list(&["apac", "emea"])),
            ("code", s("ÄÖÜ")),
            ("renewal", s("2028-02-29")),
            ("signed_at", s("2026-03-31T23:30:00.5-02:00")),
            ("vip", b(false)),
            ("score", n(-12.25)),
        ]);
        assert!(problems(&schema(), &mut rec, None).is_empty());
        assert_eq!(
            rec.unwrap().fields["signed_at"],
            s("2026-04-01T01:30:00.500000Z")
        );
    }

    #[test]
    fn bounds_and_whole_numbers() {
        for (x, want) in [
            (-1.0, "must be between 0 and 10000"),
            (10_001.0, "must be between 0 and 10000"),
            (2.5, "must be a whole number of at most 15 digits"),
            (1e15, "must be a whole number of at most 15 digits"),
        ] {
            let mut rec = record(&[("seats", n(x)), ("tier", s("gold"))]);
            assert_eq!(
                problems(&schema(), &mut rec, None),
                vec![format!("account.custom_fields.seats: {want}")],
                "{x}"
            );
        }
    }

    #[test]
    fn required_on_create_and_never_removed() {
        let mut rec = record(&[("free", n(1.0))]);
        assert_eq!(
            problems(&schema(), &mut rec, None),
            vec!["account.custom_fields.tier: is required"]
        );
        let mut none = None;
        assert_eq!(
            problems(&schema(), &mut none, None),
            vec!["account.custom_fields.tier: is required"]
        );
        let old = record(&[("tier", s("gold"))]);
        for cleared in [
            record(&[(
                "tier",
                Value {
                    kind: Some(V::NullValue(0)),
                },
            )]),
            record(&[("tier", s(""))]),
            record(&[]),
            None,
        ] {
            let mut rec = cleared;
            assert_eq!(
                problems(&schema(), &mut rec, Some(&old)),
                vec!["account.custom_fields.tier: is required and cannot be removed"]
            );
        }
        // A record that never had it may be updated without it.
        let legacy = record(&[("free", n(1.0))]);
        let mut rec = record(&[("free", n(2.0))]);
        assert!(problems(&schema(), &mut rec, Some(&legacy)).is_empty());
    }

    #[test]
    fn updates_check_only_what_they_change_and_undefined_keys_are_free() {
        // A stored value the definition no longer admits does not block an
        // update of another key.
        let old = record(&[("tier", s("gold")), ("seats", s("legacy"))]);
        let mut rec = record(&[
            ("tier", s("silver")),
            ("seats", s("legacy")),
            ("anything", list(&["x", "x"])),
        ]);
        assert!(problems(&schema(), &mut rec, Some(&old)).is_empty());
        let mut rec = record(&[("tier", s("silver")), ("seats", s("more"))]);
        assert_eq!(
            problems(&schema(), &mut rec, Some(&old)),
            vec!["account.custom_fields.seats: must be a whole number, not a string"]
        );
    }

    #[test]
    fn dates_and_times_are_strict() {
        for ok in ["2026-01-01", "0001-01-01", "9999-12-31", "2024-02-29"] {
            assert!(parse_date(ok).is_some(), "{ok}");
        }
        for bad in [
            "2026-1-01",
            "2026-13-01",
            "2023-02-29",
            "0000-01-01",
            "26-01-01",
            "2026-01-01T00:00:00Z",
            "+2026-01-01",
            " 2026-01-01",
        ] {
            assert!(parse_date(bad).is_none(), "{bad}");
        }
        assert_eq!(
            normalize_datetime("2026-01-01T00:00:00Z").as_deref(),
            Some("2026-01-01T00:00:00.000000Z")
        );
        assert_eq!(
            normalize_datetime("2026-01-01T00:00:00.123456+01:00").as_deref(),
            Some("2025-12-31T23:00:00.123456Z")
        );
        for bad in [
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.1234567Z",
            "0001-01-01T00:00:00+01:00",
        ] {
            assert!(normalize_datetime(bad).is_none(), "{bad}");
        }
        // Text order is time order in the stored form.
        let a = normalize_datetime("2026-01-01T00:00:05Z").unwrap();
        let b = normalize_datetime("2026-01-01T00:00:05.5Z").unwrap();
        assert!(a < b);
    }

    #[test]
    fn unique_values_are_those_set_or_changed() {
        let mut code = def("code", FieldType::String);
        code.unique = true;
        let schema = ResourceSchema::new([code]);
        let new = record(&[("code", s("A1"))]).unwrap();
        assert_eq!(schema.unique_values(Some(&new), None).len(), 1);
        assert_eq!(schema.unique_values(Some(&new), Some(Some(&new))).len(), 0);
        let blank = record(&[("code", s(""))]).unwrap();
        assert_eq!(schema.unique_values(Some(&blank), None).len(), 0);
    }
}
