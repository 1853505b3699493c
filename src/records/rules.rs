//! The `buf.validate` (protovalidate) field rules declared in the protos,
//! read once per field and enforced by the record mechanism. The protos are
//! the one source of the rules: the server enforces them from the
//! annotations, `/openapi.json` publishes them (`build/openapi.rs`), and any
//! protovalidate runtime (Go, Java, Python, TypeScript…) checks the same ones
//! client-side.
//!
//! Only the rules below are understood; an annotation using any other rule
//! stops the server at start-up (and fails the unit tests), so no declared
//! rule is ever silently unenforced. Semantics are protovalidate's: lengths
//! in characters (`max_len`) or UTF-8 bytes (`max_bytes`), `pattern` a
//! search (anchor it to match the whole value) in the syntax RE2, Rust's
//! `regex` and ECMAScript share, rules applying to the value as sent
//! (before the server trims it), and `IGNORE_IF_ZERO_VALUE` exempting the
//! empty value.

use prost_reflect::{DynamicMessage, FieldDescriptor, Value};
use regex::Regex;

use crate::proto::DESCRIPTOR_POOL;

const FIELD_RULES: &str = "buf.validate.field";
const VALUE_DESCRIPTION: &str = "crm.v1.value_description";
/// The pattern of text that must not be blank: a character that is not
/// ASCII whitespace (the whitespace the server trims).
pub const NON_BLANK: &str = "[^\\t\\n\\f\\r ]";
// buf.validate.Ignore numbers.
const IGNORE_UNSPECIFIED: i32 = 0;
const IGNORE_IF_ZERO_VALUE: i32 = 1;

/// The rules of one field.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// `required`: the field must be set (a string non-empty).
    pub required: bool,
    /// `ignore = IGNORE_IF_ZERO_VALUE`: the empty value is always valid.
    pub ignore_zero: bool,
    /// `string` rules (also the rules of a list's items).
    pub string: Option<StringRules>,
    /// `repeated` rules.
    pub repeated: Option<RepeatedRules>,
    /// `double` or `int32` bounds.
    pub number: Option<Bounds>,
    /// `timestamp` bounds.
    pub timestamp: Option<TimeBounds>,
}

/// `buf.validate.StringRules` (the subset used).
#[derive(Clone, Debug, Default)]
pub struct StringRules {
    /// `min_len`, in characters.
    pub min_len: Option<u64>,
    /// `max_len`, in characters.
    pub max_len: Option<u64>,
    /// `max_bytes`, in UTF-8 bytes.
    pub max_bytes: Option<u64>,
    /// `pattern`, and what a matching value looks like (for messages).
    pub pattern: Option<Pattern>,
    /// `in`: the only values accepted.
    pub one_of: Vec<String>,
    /// `(crm.v1.value_description)`: what a valid value looks like ("an
    /// email address, e.g. …"), for the messages of `pattern` and `in`.
    pub description: Option<String>,
}

/// A `pattern` rule.
#[derive(Clone, Debug)]
pub struct Pattern {
    /// The regular expression as declared.
    pub source: String,
    /// Compiled.
    pub regex: Regex,
}

/// `buf.validate.RepeatedRules` (the subset used).
#[derive(Clone, Debug, Default)]
pub struct RepeatedRules {
    /// `max_items`.
    pub max_items: Option<u64>,
    /// `unique`: no entry twice.
    pub unique: bool,
    /// `items`: the rules of each entry.
    pub items: Option<Box<Rules>>,
}

/// Time bounds (`gt`, `gte`, `lt`, `lte`), as (seconds, nanos) since the
/// epoch: compared exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeBounds {
    /// Exclusive lower bound.
    pub gt: Option<(i64, i32)>,
    /// Inclusive lower bound.
    pub gte: Option<(i64, i32)>,
    /// Exclusive upper bound.
    pub lt: Option<(i64, i32)>,
    /// Inclusive upper bound.
    pub lte: Option<(i64, i32)>,
}

impl TimeBounds {
    /// What is wrong with the time `at`, if anything.
    pub fn problem(&self, at: (i64, i32)) -> Option<String> {
        let ok = self.gt.is_none_or(|b| at > b)
            && self.gte.is_none_or(|b| at >= b)
            && self.lt.is_none_or(|b| at < b)
            && self.lte.is_none_or(|b| at <= b);
        (!ok).then(|| self.describe())
    }

    /// "must be at or after 0001-01-01T00:00:00Z and at or before …".
    pub fn describe(&self) -> String {
        let show = |(s, n): (i64, i32)| {
            chrono::DateTime::from_timestamp(s, n as u32)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_else(|| format!("{s}s"))
        };
        let mut parts = Vec::new();
        for (bound, words) in [
            (self.gt, "after"),
            (self.gte, "at or after"),
            (self.lt, "before"),
            (self.lte, "at or before"),
        ] {
            if let Some(b) = bound {
                parts.push(format!("{words} {}", show(b)));
            }
        }
        format!("must be a time {}", parts.join(" and "))
    }
}

/// Numeric bounds (`gt`, `gte`, `lt`, `lte`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bounds {
    /// Exclusive lower bound.
    pub gt: Option<f64>,
    /// Inclusive lower bound.
    pub gte: Option<f64>,
    /// Exclusive upper bound.
    pub lt: Option<f64>,
    /// Inclusive upper bound.
    pub lte: Option<f64>,
}

impl Bounds {
    /// What is wrong with `x`, if anything (NaN is never in bounds).
    pub fn problem(&self, x: f64) -> Option<String> {
        let ok = self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b);
        (!ok).then(|| self.describe(&|b| num(b)))
    }

    /// "must be greater than or equal to 0 and less than 1e15".
    pub fn describe(&self, show: &dyn Fn(f64) -> String) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.gt {
            parts.push(format!("greater than {}", show(b)));
        }
        if let Some(b) = self.gte {
            parts.push(format!("greater than or equal to {}", show(b)));
        }
        if let Some(b) = self.lt {
            parts.push(format!("less than {}", show(b)));
        }
        if let Some(b) = self.lte {
            parts.push(format!("less than or equal to {}", show(b)));
        }
        format!("must be {}", parts.join(" and "))
    }
}

fn num(x: f64) -> String {
    if x.abs() >= 1e6 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

impl StringRules {
    /// What is wrong with the size of `s` (`max_len`, `max_bytes`), if
    /// anything: checked before any work proportional to a request.
    pub fn size_problem(&self, s: &str) -> Option<String> {
        // Cheap bounds first: a character is 1 to 4 bytes.
        if let Some(max) = self.max_len
            && s.len() as u64 > max
            && s.chars().count() as u64 > max
        {
            return Some(format!("must be at most {max} characters"));
        }
        if let Some(max) = self.max_bytes
            && s.len() as u64 > max
        {
            return Some(format!(
                "must be at most {max} bytes in UTF-8 (this text has {})",
                s.len()
            ));
        }
        None
    }

    /// What is wrong with `s` (every rule), if anything.
    pub fn problem(&self, s: &str) -> Option<String> {
        if let Some(p) = self.size_problem(s) {
            return Some(p);
        }
        if let Some(min) = self.min_len
            && (s.chars().count() as u64) < min
        {
            return Some(format!("must be at least {min} characters"));
        }
        if !self.one_of.is_empty() && !self.one_of.iter().any(|v| v == s) {
            return Some(if let Some(d) = &self.description {
                format!("must be {d}")
            } else if self.one_of.len() <= 12 {
                format!("must be one of {}", self.one_of.join(", "))
            } else {
                format!(
                    "must be one of the {} values listed in the field's documentation (e.g. {})",
                    self.one_of.len(),
                    self.one_of[..3].join(", ")
                )
            });
        }
        if let Some(p) = &self.pattern
            && !p.regex.is_match(s)
        {
            return Some(match &self.description {
                Some(d) => format!("must be {d}"),
                None if p.source == NON_BLANK => {
                    "must not be blank (it needs a character other than space, tab, CR, LF or FF)"
                        .to_owned()
                }
                None => format!("must match the pattern {}", p.source),
            });
        }
        None
    }
}

impl Rules {
    /// The rules `(buf.validate.field)` declares on `field`.
    ///
    /// # Panics
    ///
    /// On a rule this module does not enforce, or a pattern that does not
    /// compile: the protos and the server would disagree.
    pub fn of(field: &FieldDescriptor) -> Self {
        let ext = DESCRIPTOR_POOL
            .get_extension_by_name(FIELD_RULES)
            .expect("buf/validate/validate.proto is in the descriptor set");
        let options = field.options();
        let description = DESCRIPTOR_POOL
            .get_extension_by_name(VALUE_DESCRIPTION)
            .and_then(|d| {
                options
                    .get_extension(&d)
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            });
        match options.get_extension(&ext).as_ref() {
            Value::Message(m) => parse(m, field.full_name(), description.as_deref()),
            _ => Self::default(),
        }
    }

    /// Describes the valid values of the field (and of its items).
    pub fn describe_values(&mut self, description: &str) {
        let items = self.repeated.as_mut().and_then(|r| r.items.as_deref_mut());
        for s in [self.string.as_mut(), items.and_then(|i| i.string.as_mut())]
            .into_iter()
            .flatten()
        {
            s.description = Some(description.to_owned());
        }
    }
}

fn unsupported(field: &str, rule: &str) -> ! {
    panic!(
        "{field}: the buf.validate rule `{rule}` is not one the server enforces \
         (src/records/rules.rs): enforce it there or do not declare it"
    )
}

fn parse(m: &DynamicMessage, field: &str, description: Option<&str>) -> Rules {
    let mut rules = Rules::default();
    for (f, v) in m.fields() {
        match (f.name(), v) {
            ("required", Value::Bool(b)) => rules.required = *b,
            ("ignore", Value::EnumNumber(n)) => match *n {
                IGNORE_UNSPECIFIED => {}
                IGNORE_IF_ZERO_VALUE => rules.ignore_zero = true,
                _ => unsupported(field, "ignore (other than IGNORE_IF_ZERO_VALUE)"),
            },
            ("string", Value::Message(s)) => {
                rules.string = Some(string_rules(s, field, description))
            }
            ("repeated", Value::Message(r)) => {
                let mut out = RepeatedRules::default();
                for (f, v) in r.fields() {
                    match (f.name(), v) {
                        ("max_items", Value::U64(n)) => out.max_items = Some(*n),
                        ("unique", Value::Bool(b)) => out.unique = *b,
                        ("items", Value::Message(items)) => {
                            out.items = Some(Box::new(parse(items, field, description)));
                        }
                        (other, _) => unsupported(field, &format!("repeated.{other}")),
                    }
                }
                rules.repeated = Some(out);
            }
            ("double", Value::Message(d)) => {
                rules.number = Some(bounds(d, field, "double", &|v| v.as_f64()))
            }
            ("int32", Value::Message(d)) => {
                rules.number = Some(bounds(d, field, "int32", &|v| v.as_i32().map(f64::from)));
            }
            ("int64", Value::Message(d)) => {
                // Bounds this module reads as f64 must be exact there.
                rules.number = Some(bounds(d, field, "int64", &|v| {
                    v.as_i64()
                        .filter(|n| n.unsigned_abs() < 1 << 53)
                        .map(|n| n as f64)
                }));
            }
            ("timestamp", Value::Message(d)) => {
                let mut b = TimeBounds::default();
                for (f, v) in d.fields() {
                    let slot = match f.name() {
                        "gt" => &mut b.gt,
                        "gte" => &mut b.gte,
                        "lt" => &mut b.lt,
                        "lte" => &mut b.lte,
                        other => unsupported(field, &format!("timestamp.{other}")),
                    };
                    let at = v.as_message().and_then(|ts| {
                        Some((
                            ts.get_field_by_name("seconds")?.as_i64()?,
                            ts.get_field_by_name("nanos")?.as_i32()?,
                        ))
                    });
                    *slot = Some(at.unwrap_or_else(|| unsupported(field, "timestamp bound")));
                }
                rules.timestamp = Some(b);
            }
            (other, _) => unsupported(field, other),
        }
    }
    rules
}

fn string_rules(s: &DynamicMessage, field: &str, description: Option<&str>) -> StringRules {
    let mut out = StringRules {
        description: description.map(str::to_owned),
        ..StringRules::default()
    };
    for (f, v) in s.fields() {
        match (f.name(), v) {
            ("min_len", Value::U64(n)) => out.min_len = Some(*n),
            ("max_len", Value::U64(n)) => out.max_len = Some(*n),
            ("max_bytes", Value::U64(n)) => out.max_bytes = Some(*n),
            ("pattern", Value::String(p)) => {
                let regex = Regex::new(p)
                    .unwrap_or_else(|e| panic!("{field}: buf.validate pattern {p:?}: {e}"));
                out.pattern = Some(Pattern {
                    source: p.clone(),
                    regex,
                });
            }
            ("in", Value::List(values)) => {
                out.one_of = values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
            }
            (other, _) => unsupported(field, &format!("string.{other}")),
        }
    }
    out
}

fn bounds(
    m: &DynamicMessage,
    field: &str,
    kind: &str,
    value: &dyn Fn(&Value) -> Option<f64>,
) -> Bounds {
    let mut b = Bounds::default();
    for (f, v) in m.fields() {
        let slot = match f.name() {
            "gt" => &mut b.gt,
            "gte" => &mut b.gte,
            "lt" => &mut b.lt,
            "lte" => &mut b.lte,
            other => unsupported(field, &format!("{kind}.{other}")),
        };
        *slot =
            Some(value(v).unwrap_or_else(|| unsupported(field, &format!("{kind}.{}", f.name()))));
    }
    b
}

/// Parses the rules of every field of the descriptor set's messages (run at
/// start-up and by the tests): panics on any rule this module does not
/// enforce.
pub fn check_all() {
    for m in DESCRIPTOR_POOL.all_messages() {
        for f in m.fields() {
            let _ = Rules::of(&f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Entity;

    fn string_rules(kind: &'static crate::records::Kind, field: &str) -> StringRules {
        let meta = kind.meta();
        let f = meta.field(field).unwrap();
        f.rules.string.clone().unwrap_or_else(|| {
            f.rules
                .repeated
                .as_ref()
                .unwrap()
                .items
                .as_ref()
                .unwrap()
                .string
                .clone()
                .unwrap()
        })
    }

    #[test]
    fn every_declared_rule_is_one_the_server_enforces() {
        check_all();
    }

    #[test]
    fn formats_declared_in_the_protos() {
        let contact = crate::proto::Contact::kind();
        let account = crate::proto::Account::kind();
        let ok = |r: &StringRules, s: &str| r.problem(s).is_none();

        let url = string_rules(account, "website");
        assert!(ok(&url, "https://example.com"));
        assert!(ok(&url, "http://example.com/a?b=c"));
        assert!(ok(&url, "HTTPS://EXAMPLE.COM"));
        for bad in [
            "example.com",
            "ftp://example.com",
            "javascript:alert(1)",
            "https:// x",
            "https://",
        ] {
            assert_eq!(
                url.problem(bad).as_deref(),
                Some("must be an absolute http(s) URL, e.g. https://example.com"),
                "{bad}"
            );
        }

        let host = string_rules(account, "domain");
        for good in [
            "example.com",
            "mail.example.co.uk",
            "Example.com",
            "xn--bcher-kva.de",
        ] {
            assert!(ok(&host, good), "{good}");
        }
        for bad in [
            "localhost",
            "-a.com",
            "a..com",
            "exa mple.com",
            "1.2.3.4",
            "a.com.",
            "a-.com",
        ] {
            assert!(!ok(&host, bad), "{bad}");
        }

        let email = string_rules(contact, "email");
        for good in [
            "ada@example.com",
            "ada.lovelace+crm@mail.example.org",
            "Ada@Example.COM",
        ] {
            assert!(ok(&email, good), "{good}");
        }
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "a da@example.com",
            "ada@example",
            "a..b@example.com",
            ".ada@example.com",
            " ada@example.com",
        ] {
            assert!(!ok(&email, bad), "{bad}");
        }

        let phone = string_rules(contact, "phone");
        assert!(ok(&phone, "+14155550100"));
        assert!(ok(&phone, "+442071838750"));
        for bad in [
            "14155550100",
            "+1 415 555 0100",
            "+0123456789",
            "+1234567890123456",
            "+123456",
        ] {
            assert!(!ok(&phone, bad), "{bad}");
        }

        let currency = string_rules(crate::proto::Deal::kind(), "currency");
        assert!(ok(&currency, "USD") && ok(&currency, "EUR"));
        assert!(!ok(&currency, "usd") && !ok(&currency, "XYZ"));

        let tags = string_rules(account, "tags");
        assert!(ok(&tags, "vip") && ok(&tags, " vip "));
        assert!(
            tags.problem(" \t")
                .unwrap()
                .starts_with("must not be blank")
        );
        assert!(!ok(&tags, &"x".repeat(1025)));
        assert!(!ok(&tags, &"é".repeat(1025)));
        assert!(tags.problem(&"é".repeat(1024)).is_none());
        assert!(tags.problem(&"😀".repeat(513)).unwrap().contains("bytes"));
    }

    #[test]
    fn reference_patterns_accept_exactly_the_ids_the_server_parses() {
        use crate::records::fields::canonical_id_with;
        let contact = crate::proto::Contact::kind();
        let account_id = string_rules(contact, "account_id");
        let id = ulid::Ulid::generate().to_string();
        let mut samples = vec![
            format!("acc_{id}"),
            format!("acc_{}", id.to_lowercase()),
            format!("acc_8{}", &id[1..]),
            format!("acc_{}", &id[1..]),
            format!("acc_{id}0"),
            format!("con_{id}"),
            format!("acc-{id}"),
            format!(" acc_{id}"),
            "acc_".to_owned(),
        ];
        for c in ['I', 'L', 'O', 'U', 'i', 'l', 'o', 'u', '-', 'Z', 'z'] {
            samples.push(format!("acc_0{c}{}", &id[2..]));
        }
        for s in samples {
            assert_eq!(
                account_id.problem(&s).is_none(),
                canonical_id_with("acc", &s).is_some(),
                "{s}"
            );
        }
        assert_eq!(
            account_id.problem("acc_1").as_deref(),
            Some("must be an account id (acc_ followed by a 26-character ULID)")
        );
    }

    #[test]
    fn bounds_read_as_sentences() {
        let b = Bounds {
            gte: Some(0.0),
            lt: Some(1e15),
            ..Bounds::default()
        };
        assert_eq!(
            b.problem(-1.0).as_deref(),
            Some("must be greater than or equal to 0 and less than 1e15")
        );
        assert!(b.problem(f64::NAN).is_some());
        assert!(b.problem(0.0).is_none());
    }
}
