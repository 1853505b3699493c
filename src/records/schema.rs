//! Per-entity metadata read once from the proto descriptor: each field's
//! shape, its `google.api.field_behavior`, its storage column, and the SQL
//! statements of the entity's table.

use prost_reflect::{FieldDescriptor, Kind as ProtoKind, MessageDescriptor, Value};

use super::Kind;
use super::rules::Rules;
use crate::proto::DESCRIPTOR_POOL;
use crate::sql::statements::{Column, ColumnType, Statements};

/// The shape of a field, as far as the mechanism cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `string`.
    String,
    /// `repeated string`.
    StringList,
    /// `double` (money, quantities, percentages).
    Double,
    /// `int32`.
    Int32,
    /// `bool`.
    Bool,
    /// `google.protobuf.Timestamp`.
    Timestamp,
    /// `google.protobuf.Struct` (keys may be named in update masks).
    Struct,
    /// `google.protobuf.Value`; a JSON `null` is the same as unset.
    Value,
    /// Any other message or repeated message, stored as JSON.
    Json,
}

/// What `google.api.field_behavior` says about a field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Behavior {
    /// REQUIRED.
    pub required: bool,
    /// OUTPUT_ONLY.
    pub output_only: bool,
    /// IMMUTABLE.
    pub immutable: bool,
    /// IDENTIFIER.
    pub identifier: bool,
}

/// One field of an entity.
#[derive(Clone, Debug)]
pub struct FieldMeta {
    /// Its descriptor.
    pub desc: FieldDescriptor,
    /// Proto (and column) name.
    pub name: String,
    /// Shape.
    pub shape: Shape,
    /// Field behavior.
    pub behavior: Behavior,
    /// Free text: not trimmed, long bound.
    pub long_text: bool,
    /// `(buf.validate.field).string.in`: the only values a string field
    /// accepts.
    pub allowed: Vec<String>,
    /// Its `(buf.validate.field)` rules.
    pub rules: Rules,
    /// `(crm.v1.requires_when_true)`: the field that must be set when this
    /// bool is true.
    pub requires_when_true: Option<String>,
    /// `(crm.v1.keep_set)`: once set, an update cannot clear it.
    pub keep_set: bool,
    /// `(crm.v1.default_value)`: the value an empty string field takes.
    pub default: Option<String>,
    /// For the `id` field and reference fields: the id prefix of the kind
    /// they name (ids are canonicalized wherever they are accepted).
    pub id_prefix: Option<&'static str>,
}

impl FieldMeta {
    /// Whether a client may set it (on create, or through an update mask).
    /// `version` is a precondition, not data.
    pub fn writable(&self) -> bool {
        !self.behavior.output_only && !self.behavior.identifier && self.name != "version"
    }
}

/// Everything the mechanism knows about an entity.
pub struct Meta {
    /// The message descriptor.
    pub desc: MessageDescriptor,
    /// Fields in declaration order.
    pub fields: Vec<FieldMeta>,
    /// Storage columns, one per field.
    pub columns: Vec<Column>,
    /// SQL statements for its table.
    pub sql: Statements,
    /// The search document: the generated column `search_doc`
    /// (`crm_search_norm` of the search fields joined).
    pub search_doc: Option<String>,
    /// The normalized name (the first search field, its first 256
    /// characters), for search tiers.
    pub name_doc: Option<String>,
    /// `(crm.v1.at_least_one_of)`: fields of which at least one must be set.
    pub at_least_one_of: Vec<String>,
}

const FIELD_BEHAVIOR: &str = "google.api.field_behavior";
const DEFAULT_VALUE: &str = "crm.v1.default_value";
const AT_LEAST_ONE_OF: &str = "crm.v1.at_least_one_of";
const REQUIRES_WHEN_TRUE: &str = "crm.v1.requires_when_true";
const KEEP_SET: &str = "crm.v1.keep_set";

/// A string field option of `field` (empty: none).
fn string_option(field: &FieldDescriptor, name: &str) -> Option<String> {
    let ext = DESCRIPTOR_POOL
        .get_extension_by_name(name)
        .unwrap_or_else(|| panic!("{name} is declared in crm/v1/common.proto"));
    field
        .options()
        .get_extension(&ext)
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A repeated string message option of `desc`.
fn message_strings(desc: &MessageDescriptor, name: &str) -> Vec<String> {
    let ext = DESCRIPTOR_POOL
        .get_extension_by_name(name)
        .unwrap_or_else(|| panic!("{name} is declared in crm/v1/common.proto"));
    match desc.options().get_extension(&ext).as_ref() {
        Value::List(values) => values
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}
// google.api.FieldBehavior numbers.
const REQUIRED: i32 = 2;
const OUTPUT_ONLY: i32 = 3;
const IMMUTABLE: i32 = 5;
const IDENTIFIER: i32 = 8;

fn behavior(field: &FieldDescriptor) -> Behavior {
    let ext = DESCRIPTOR_POOL
        .get_extension_by_name(FIELD_BEHAVIOR)
        .expect("google/api/field_behavior.proto is in the descriptor set");
    let options = field.options();
    let mut b = Behavior::default();
    if let Value::List(values) = options.get_extension(&ext).as_ref() {
        for v in values {
            match v.as_enum_number() {
                Some(REQUIRED) => b.required = true,
                Some(OUTPUT_ONLY) => b.output_only = true,
                Some(IMMUTABLE) => b.immutable = true,
                Some(IDENTIFIER) => b.identifier = true,
                _ => {}
            }
        }
    }
    b
}

/// The `(crm.v1.default_value)` of a field.
fn default_value(field: &FieldDescriptor) -> Option<String> {
    string_option(field, DEFAULT_VALUE)
}

fn shape(field: &FieldDescriptor) -> Shape {
    match (field.kind(), field.is_list()) {
        (ProtoKind::String, false) => Shape::String,
        (ProtoKind::String, true) => Shape::StringList,
        (ProtoKind::Double, false) => Shape::Double,
        (ProtoKind::Int32, false) => Shape::Int32,
        (ProtoKind::Bool, false) => Shape::Bool,
        (ProtoKind::Message(m), false) if m.full_name() == "google.protobuf.Timestamp" => {
            Shape::Timestamp
        }
        (ProtoKind::Message(m), false) if m.full_name() == "google.protobuf.Struct" => {
            Shape::Struct
        }
        (ProtoKind::Message(m), false) if m.full_name() == "google.protobuf.Value" => Shape::Value,
        (ProtoKind::Message(_), _) => Shape::Json,
        (k, list) => panic!(
            "field {} has a type the record mechanism does not store: {k:?} (list: {list})",
            field.full_name()
        ),
    }
}

fn column_type(shape: Shape) -> ColumnType {
    match shape {
        Shape::String => ColumnType::Text,
        Shape::StringList => ColumnType::TextArray,
        Shape::Double => ColumnType::Numeric,
        Shape::Int32 => ColumnType::Integer,
        Shape::Bool => ColumnType::Boolean,
        Shape::Timestamp => ColumnType::Timestamp,
        Shape::Struct | Shape::Value | Shape::Json => ColumnType::Json,
    }
}

impl Meta {
    /// Reads the entity's metadata from the descriptor pool.
    pub fn build(kind: &Kind) -> Self {
        let desc = DESCRIPTOR_POOL
            .get_message_by_name(kind.message)
            .unwrap_or_else(|| panic!("{} is not in the descriptor set", kind.message));
        let fields: Vec<FieldMeta> = desc
            .fields()
            .map(|f| {
                let rules = Rules::of(&f);
                let allowed = rules
                    .string
                    .as_ref()
                    .map(|s| s.one_of.clone())
                    .unwrap_or_default();
                let default = default_value(&f);
                let requires_when_true = string_option(&f, REQUIRES_WHEN_TRUE);
                let keep_set = DESCRIPTOR_POOL
                    .get_extension_by_name(KEEP_SET)
                    .is_some_and(|ext| f.options().get_extension(&ext).as_bool() == Some(true));
                let id_prefix = if f.name() == "id" {
                    Some(kind.prefix)
                } else {
                    kind.references
                        .iter()
                        .find(|r| r.field == f.name())
                        .map(|r| r.target.prefix)
                };
                let mut rules = rules;
                if let Some(target) = kind.references.iter().find(|r| r.field == f.name()) {
                    let description = format!(
                        "{} id ({}_ followed by a 26-character ULID)",
                        super::fields::article(target.target.resource),
                        target.target.prefix
                    );
                    rules.describe_values(&description);
                }
                FieldMeta {
                    id_prefix,
                    name: f.name().to_owned(),
                    shape: shape(&f),
                    behavior: behavior(&f),
                    long_text: kind.long_text.contains(&f.name()),
                    allowed,
                    default,
                    rules,
                    requires_when_true,
                    keep_set,
                    desc: f,
                }
            })
            .collect();
        for (name, _) in kind.computed {
            assert!(
                fields
                    .iter()
                    .any(|f| f.name == *name && f.behavior.output_only),
                "{}: computed column {name} must be an output-only field",
                kind.message
            );
        }
        for f in fields.iter().filter(|f| f.writable()) {
            let string = f.rules.string.as_ref();
            let bounded = |s: &super::rules::StringRules| {
                s.max_len.is_some()
                    || !s.one_of.is_empty()
                    || s.pattern
                        .as_ref()
                        .is_some_and(|p| p.source.starts_with('^') && p.source.ends_with('$'))
            };
            // protovalidate checks the empty value too unless the field is
            // IGNORE_IF_ZERO_VALUE; the server exempts it (an update leaves
            // absent fields alone): the two agree when a rule the empty value
            // breaks is on a required or IGNORE_IF_ZERO_VALUE field.
            if f.shape == Shape::String && string.is_some_and(|s| s.problem("").is_some()) {
                assert!(
                    f.rules.required || f.rules.ignore_zero,
                    "{}.{}: a rule the empty value breaks needs required or IGNORE_IF_ZERO_VALUE",
                    kind.message,
                    f.name
                );
            }
            assert!(
                f.rules.required == f.behavior.required,
                "{}.{}: REQUIRED in field_behavior and buf.validate agree",
                kind.message,
                f.name
            );
            match f.shape {
                Shape::String => assert!(
                    string.is_some_and(bounded),
                    "{}.{}: a writable string declares a length bound",
                    kind.message,
                    f.name
                ),
                Shape::StringList => assert!(
                    f.rules.repeated.as_ref().is_some_and(|r| {
                        r.max_items
                            .is_some_and(|n| n <= super::fields::MAX_LIST_LEN as u64)
                            && r.items
                                .as_ref()
                                .and_then(|i| i.string.as_ref())
                                .is_some_and(bounded)
                    }),
                    "{}.{}: a writable list declares max_items (at most {}) and bounded items",
                    kind.message,
                    f.name,
                    super::fields::MAX_LIST_LEN
                ),
                _ => {}
            }
        }
        for r in kind.references {
            let f = fields
                .iter()
                .find(|f| f.name == r.field)
                .expect("reference fields are fields");
            let pattern = f
                .rules
                .string
                .as_ref()
                .or_else(|| {
                    f.rules
                        .repeated
                        .as_ref()
                        .and_then(|r| r.items.as_ref())
                        .and_then(|i| i.string.as_ref())
                })
                .and_then(|s| s.pattern.as_ref());
            assert!(
                pattern.is_some_and(|p| p.source.starts_with(&format!("^{}_", r.target.prefix))),
                "{}.{}: a reference declares the id pattern of {}",
                kind.message,
                r.field,
                r.target.resource
            );
        }
        for r in kind.references {
            assert!(
                fields
                    .iter()
                    .any(|f| f.name == r.field
                        && matches!(f.shape, Shape::String | Shape::StringList)),
                "{}: reference {} is not a string field",
                kind.message,
                r.field
            );
        }
        let columns: Vec<Column> = fields
            .iter()
            .map(|f| Column {
                name: f.name.clone(),
                ty: column_type(f.shape),
            })
            .collect();
        let sql = Statements::new(kind.table, &columns, kind.computed);
        for name in kind.search {
            assert!(
                fields
                    .iter()
                    .any(|f| f.name == *name && f.shape == Shape::String),
                "{}: search field {name} is not a string field",
                kind.message
            );
        }
        // The stored column migration 0002 computes from the same fields.
        let search_doc = (!kind.search.is_empty()).then(|| "t.\"search_doc\"".to_owned());
        // The first search field ("the name"), folded, its first 256
        // characters: the stored column migration 0015 computes and indexes.
        let name_doc = (!kind.search.is_empty()).then(|| "t.\"name_doc\"".to_owned());
        let at_least_one_of = message_strings(&desc, AT_LEAST_ONE_OF);
        for name in &at_least_one_of {
            assert!(
                fields.iter().any(|f| f.name == *name && f.writable()),
                "{}: at_least_one_of names {name}, not a writable field",
                kind.message
            );
        }
        Self {
            at_least_one_of,
            desc,
            fields,
            columns,
            sql,
            search_doc,
            name_doc,
        }
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldMeta> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The index of the field `name` names in its proto (snake_case) or JSON
    /// (lowerCamelCase) spelling, as masks, filters and orders accept both.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|f| f.name == name)
            .or_else(|| self.fields.iter().position(|f| f.desc.json_name() == name))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_are_named_in_proto_or_json_spelling() {
        use crate::records::Entity;
        let meta = crate::proto::Account::kind().meta();
        let revenue = meta.field("annual_revenue").unwrap();
        for name in ["annual_revenue", "annualRevenue"] {
            assert_eq!(meta.fields[meta.position(name).unwrap()].name, revenue.name);
        }
        assert_eq!(meta.fields[meta.position("name").unwrap()].name, "name");
        assert!(meta.position("AnnualRevenue").is_none());
        assert!(meta.position("annual__revenue").is_none());
    }
}
