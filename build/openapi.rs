//! Generates the OpenAPI 3.1 document of the REST surface from the protos'
//! descriptors (run by `build.rs`). Schemas describe what the server emits:
//! proto field names, proto3 JSON types, the `buf.validate` rules the server
//! enforces (`string.in` as `enum`, `pattern`, `max_len`/`min_len` as
//! `maxLength`/`minLength`, `repeated.max_items` as `maxItems`, number bounds
//! as `minimum`/`maximum`/`exclusive…`, `required`), `(crm.v1.default_value)`
//! as `default`, REQUIRED fields as `required`, OUTPUT_ONLY/IDENTIFIER fields
//! as `readOnly`, and the `google.rpc.Status` error body.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};
use serde_json::{Map, Value as Json, json};

const REQUIRED: i32 = 2;
const OUTPUT_ONLY: i32 = 3;
const IDENTIFIER: i32 = 8;

fn comment(file: &prost_reflect::FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let loc = info.location.iter().find(|l| l.path == path)?;
    let text = loc.leading_comments.as_deref()?.trim();
    (!text.is_empty()).then(|| text.lines().map(str::trim).collect::<Vec<_>>().join("\n"))
}

fn behaviors(pool: &DescriptorPool, field: &FieldDescriptor) -> Vec<i32> {
    let ext = pool
        .get_extension_by_name("google.api.field_behavior")
        .expect("field_behavior");
    match field.options().get_extension(&ext).as_ref() {
        Value::List(v) => v.iter().filter_map(Value::as_enum_number).collect(),
        _ => vec![],
    }
}

fn string_values(pool: &DescriptorPool, field: &FieldDescriptor, name: &str) -> Vec<String> {
    let ext = pool.get_extension_by_name(name).expect("crm.v1 option");
    match field.options().get_extension(&ext).as_ref() {
        Value::List(v) => v
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        Value::String(s) if !s.is_empty() => vec![s.clone()],
        _ => vec![],
    }
}

/// The decimal digits of 0..=i64::MAX (leading zeros allowed, as the
/// server's parser allows them): a number of at most 18 digits, or 19 digits
/// not above 9223372036854775807, digit by digit.
const I64_DIGITS: &str = "0*([0-9]{1,18}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}|9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}|922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}|922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}|922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-6]|9223372036854775807)";

/// Text that is not blank: a character other than the ASCII whitespace the
/// server trims (src/records/rules.rs NON_BLANK).
const NON_BLANK: &str = "[^\\t\\n\\f\\r ]";

/// A crm.v1 resource message (it has an `id` and a `version`).
fn is_resource(m: &MessageDescriptor) -> bool {
    m.package_name() == "crm.v1"
        && m.get_field_by_name("id").is_some()
        && m.get_field_by_name("version").is_some()
}

/// A bool field option of `f`.
fn bool_option(pool: &DescriptorPool, f: &FieldDescriptor, name: &str) -> bool {
    pool.get_extension_by_name(name)
        .is_some_and(|ext| f.options().get_extension(&ext).as_bool() == Some(true))
}

/// A repeated string message option of `m`.
fn message_strings(pool: &DescriptorPool, m: &MessageDescriptor, name: &str) -> Vec<String> {
    let Some(ext) = pool.get_extension_by_name(name) else {
        return Vec::new();
    };
    match m.options().get_extension(&ext).as_ref() {
        Value::List(v) => v
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// `(crm.v1.required_subfields)` of the resource field `f`, added to its
/// schema (`empty_subfields` is added by `field_schema`, to list items).
fn subfield_rules(pool: &DescriptorPool, f: &FieldDescriptor, schema: &mut Json) {
    let required = string_values(pool, f, "crm.v1.required_subfields");
    if !required.is_empty() {
        let props: Map<String, Json> = required
            .iter()
            .map(|n| (n.clone(), json!({"type": "string", "pattern": NON_BLANK})))
            .collect();
        let base = schema.take();
        *schema = json!({"allOf": [base, {"required": required, "properties": props}]});
    }
}

/// The JSON Schema of an update mask naming fields of the resource `r`:
/// comma-separated paths, each a field's name or `*`, a Struct field's
/// optionally followed by `.key`s. `json` is the proto3 JSON form (body
/// fields: lowerCamelCase names, empty paths skipped); otherwise the query
/// parameter's (proto or JSON names).
fn mask_pattern(r: &MessageDescriptor, json: bool) -> String {
    let mut plain = Vec::new();
    let mut structs = Vec::new();
    let output_only = |f: &FieldDescriptor| {
        f.parent_pool()
            .get_extension_by_name("google.api.field_behavior")
            .is_some_and(|ext| match f.options().get_extension(&ext).as_ref() {
                Value::List(v) => v
                    .iter()
                    .any(|b| matches!(b.as_enum_number(), Some(OUTPUT_ONLY | IDENTIFIER))),
                _ => false,
            })
    };
    // `version` is a precondition, not a field to write.
    for f in r
        .fields()
        .filter(|f| !output_only(f) && f.name() != "version")
    {
        let is_struct =
            matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.Struct");
        let names = if json {
            vec![f.json_name().to_owned()]
        } else {
            let mut v = vec![f.name().to_owned()];
            if f.json_name() != f.name() {
                v.push(f.json_name().to_owned());
            }
            v
        };
        if is_struct {
            structs.extend(names)
        } else {
            plain.extend(names)
        }
    }
    let key = if json { "[^,._`]+" } else { "[^,.`]+" };
    let mut alternatives = vec!["\\*".to_owned()];
    alternatives.extend(plain);
    if !structs.is_empty() {
        alternatives.push(format!("({})(\\.{key})*", structs.join("|")));
    }
    let path = format!("({})", alternatives.join("|"));
    if json {
        format!("^{path}?(,{path}?)*$")
    } else {
        format!("^({path}(,{path})*)?$")
    }
}

/// Lets a body field be JSON `null`, which the proto3 JSON mapping reads as
/// the field's default (unset), as the server does.
fn nullable(schema: &mut Json) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(r) = obj.remove("$ref") {
        obj.insert("anyOf".into(), json!([{"$ref": r}, {"type": "null"}]));
        return;
    }
    if let Some(Json::Array(types)) = obj.get_mut("type") {
        types.push(json!("null"));
    } else if let Some(Json::String(t)) = obj.get("type").cloned() {
        obj.insert("type".into(), json!([t, "null"]));
        if let Some(Json::Array(values)) = obj.get_mut("enum") {
            values.push(Json::Null);
        }
    }
}

/// The `(buf.validate.field)` rules of `field`, if it declares any.
fn field_rules(pool: &DescriptorPool, field: &FieldDescriptor) -> Option<DynamicMessage> {
    let ext = pool.get_extension_by_name("buf.validate.field")?;
    match field.options().get_extension(&ext).into_owned() {
        Value::Message(m) => Some(m),
        _ => None,
    }
}

/// Adds the JSON Schema form of `rules` (a `buf.validate.FieldRules`) to
/// `schema`. The server (src/records/rules.rs) enforces exactly these rules
/// and refuses to start on any other, so only they need a translation here.
fn constrain(schema: &mut Json, rules: &DynamicMessage, list: bool) {
    fn set(m: &DynamicMessage, name: &str) -> Option<Value> {
        m.has_field_by_name(name)
            .then(|| m.get_field_by_name(name).map(|v| v.into_owned()))
            .flatten()
    }
    let ignore_zero = rules
        .get_field_by_name("ignore")
        .and_then(|v| v.as_enum_number())
        == Some(1);
    if let Some(Value::Message(r)) = set(rules, "repeated") {
        if let Some(Value::U64(n)) = set(&r, "max_items") {
            schema["maxItems"] = json!(n);
        }
        if let Some(Value::Bool(true)) = set(&r, "unique") {
            schema["uniqueItems"] = json!(true);
        }
        if let Some(Value::Message(items)) = set(&r, "items") {
            constrain(&mut schema["items"], &items, false);
        }
        return;
    }
    if list {
        return;
    }
    if let Some(Value::Message(r)) = set(rules, "string") {
        if let Some(Value::U64(n)) = set(&r, "max_len") {
            schema["maxLength"] = json!(n);
        }
        if let Some(Value::U64(n)) = set(&r, "min_len") {
            schema["minLength"] = json!(n);
        }
        if let Some(Value::U64(n)) = set(&r, "max_bytes") {
            // No JSON Schema keyword counts bytes.
            schema["x-max-bytes"] = json!(n);
        }
        if let Some(Value::String(p)) = set(&r, "pattern") {
            // IGNORE_IF_ZERO_VALUE: the empty string is valid too.
            let p = if ignore_zero { format!("^$|{p}") } else { p };
            schema["pattern"] = json!(p);
        }
        if let Some(Value::List(values)) = set(&r, "in") {
            let mut values: Vec<Json> = values
                .iter()
                .filter_map(|v| v.as_str().map(|s| json!(s)))
                .collect();
            if ignore_zero {
                values.push(json!(""));
            }
            schema["enum"] = json!(values);
        }
    }
    if let Some(Value::Message(r)) = set(rules, "int64")
        && matches!(set(&r, "gte"), Some(Value::I64(n)) if n >= 0)
    {
        // The decimal-string form of a non-negative int64.
        schema["pattern"] = json!(format!("^{I64_DIGITS}$"));
    }
    for kind in ["double", "int32", "int64"] {
        if let Some(Value::Message(r)) = set(rules, kind) {
            for (rule, keyword) in [
                ("gt", "exclusiveMinimum"),
                ("gte", "minimum"),
                ("lt", "exclusiveMaximum"),
                ("lte", "maximum"),
            ] {
                match set(&r, rule) {
                    Some(Value::F64(x)) => schema[keyword] = json!(x),
                    Some(Value::I32(x)) => schema[keyword] = json!(x),
                    Some(Value::I64(x)) => schema[keyword] = json!(x),
                    _ => {}
                }
            }
        }
    }
    if let Some(Value::Message(r)) = set(rules, "timestamp") {
        let mut parts = Vec::new();
        for (rule, words) in [
            ("gte", "at or after"),
            ("gt", "after"),
            ("lt", "before"),
            ("lte", "at or before"),
        ] {
            if let Some(Value::Message(t)) = set(&r, rule) {
                let secs = t
                    .get_field_by_name("seconds")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0);
                let nanos = t
                    .get_field_by_name("nanos")
                    .and_then(|v| v.as_i32())
                    .unwrap_or(0);
                parts.push(format!("{words} {}", rfc3339(secs, nanos)));
            }
        }
        if !parts.is_empty() {
            schema["x-time-range"] = json!(parts.join(" and "));
        }
    }
}

/// Seconds since the epoch as an RFC 3339 UTC time.
fn rfc3339(secs: i64, nanos: i32) -> String {
    chrono::DateTime::from_timestamp(secs, nanos.max(0) as u32)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{secs} s after 1970-01-01T00:00:00Z"))
}

/// The OpenAPI name of a path variable: its last field name.
fn param_name(var: &str) -> &str {
    var.rsplit('.').next().unwrap_or(var)
}

/// The template with variables renamed by [`param_name`].
fn openapi_path(template: &str) -> String {
    template
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.split_once('}')) {
                Some((var, rest)) => format!(
                    "{{{}}}{rest}",
                    param_name(var.split('=').next().unwrap_or(var))
                ),
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The component name of a message.
fn schema_name(m: &MessageDescriptor) -> String {
    match m.package_name() {
        "crm.v1" | "google.rpc" => m.name().to_owned(),
        _ => m.full_name().replace('.', "_"),
    }
}

struct Gen<'a> {
    pool: &'a DescriptorPool,
    schemas: BTreeMap<String, Json>,
    pending: BTreeSet<String>,
}

impl Gen<'_> {
    /// The schema of one value of `field` (ignoring repetition).
    fn value_schema(&mut self, field: &FieldDescriptor) -> Json {
        match field.kind() {
            Kind::String => json!({"type": "string"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0})
            }
            // The proto3 JSON form of a 64-bit integer: a decimal string (or a
            // number, which loses precision past 2^53 in many clients).
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({
                "type": ["string", "integer"], "format": "int64",
                "pattern": format!("^-?{I64_DIGITS}$"),
                "minimum": i64::MIN, "maximum": i64::MAX
            }),
            Kind::Uint64 | Kind::Fixed64 => json!({
                "type": ["string", "integer"], "format": "uint64",
                "pattern": "^0*[0-9]{1,19}$", "minimum": 0, "maximum": i64::MAX
            }),
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Bytes => json!({"type": "string", "format": "byte"}),
            Kind::Enum(e) => {
                json!({"type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()})
            }
            Kind::Message(m) => match m.full_name() {
                "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
                "google.protobuf.Duration" => {
                    json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"})
                }
                "google.protobuf.FieldMask" => {
                    json!({"type": "string", "description": "Comma-separated field paths."})
                }
                "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
                "google.protobuf.Value" => json!({"description": "Any JSON value."}),
                "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
                "google.protobuf.Any" => json!({
                    "type": "object",
                    "properties": {"@type": {"type": "string"}},
                    "required": ["@type"],
                    "additionalProperties": true
                }),
                _ => {
                    let name = schema_name(&m);
                    if !self.schemas.contains_key(&name) {
                        self.pending.insert(m.full_name().to_owned());
                    }
                    json!({"$ref": format!("#/components/schemas/{name}")})
                }
            },
        }
    }

    fn field_schema(&mut self, field: &FieldDescriptor) -> Json {
        let mut s = self.value_schema(field);
        if let Kind::Message(m) = field.kind()
            && m.full_name() == "google.protobuf.FieldMask"
            && let Some(r) = field
                .parent_message()
                .fields()
                .find_map(|f| match f.kind() {
                    Kind::Message(r) if is_resource(&r) => Some(r),
                    _ => None,
                })
        {
            s["pattern"] = json!(mask_pattern(&r, true));
        }
        let empty = string_values(self.pool, field, "crm.v1.empty_subfields");
        if !empty.is_empty() {
            let props: Map<String, Json> = empty
                .iter()
                .map(|n| {
                    (
                        n.clone(),
                        json!({"type": ["string", "null"], "maxLength": 0}),
                    )
                })
                .collect();
            s = json!({"allOf": [s, {"properties": props}]});
        }
        if field.is_list() {
            s = json!({"type": "array", "items": s});
        } else if field.is_map() {
            s = json!({"type": "object", "additionalProperties": true});
        }
        if let Some(rules) = field_rules(self.pool, field) {
            constrain(&mut s, &rules, field.is_list());
        }
        let obj = s.as_object_mut().expect("schemas are objects");
        if let Some(d) = string_values(self.pool, field, "crm.v1.default_value")
            .into_iter()
            .next()
        {
            obj.insert("default".into(), json!(d));
        }
        let b = behaviors(self.pool, field);
        if b.contains(&OUTPUT_ONLY) || b.contains(&IDENTIFIER) {
            obj.insert("readOnly".into(), json!(true));
        }
        if let Some(c) = comment(&field.parent_file(), field.path()) {
            // A $ref keeps its own description next to it (OpenAPI 3.1).
            obj.insert("description".into(), json!(c));
        }
        s
    }

    /// The object schema of `m`; with `patch`, nothing is required.
    fn message_schema(&mut self, m: &MessageDescriptor, skip: &[&str], patch: bool) -> Json {
        let mut props = Map::new();
        let mut required = Vec::new();
        for f in m.fields() {
            if skip.contains(&f.name()) {
                continue;
            }
            let rules_required = field_rules(self.pool, &f)
                .and_then(|r| r.get_field_by_name("required").and_then(|v| v.as_bool()))
                .unwrap_or(false);
            let is_required = rules_required || behaviors(self.pool, &f).contains(&REQUIRED);
            let mut schema = self.field_schema(&f);
            if let Kind::Message(r) = f.kind()
                && is_resource(&r)
            {
                // An update request's resource is a patch: nothing required.
                if m.name().starts_with("Update") && m.name().ends_with("Request") {
                    schema = self.patch_reference(&r, false);
                }
                subfield_rules(self.pool, &f, &mut schema);
            }
            let keep_set = patch && bool_option(self.pool, &f, "crm.v1.keep_set");
            if keep_set {
                // An update cannot clear it.
                schema["minLength"] = json!(1);
            }
            // null is unset (in a patch: cleared), so not for a required field.
            if !is_required && !keep_set {
                nullable(&mut schema);
            }
            props.insert(f.name().to_owned(), schema);
            if !patch && is_required {
                required.push(f.name().to_owned());
            }
        }
        let mut s = json!({"type": "object", "properties": props});
        if !required.is_empty() {
            s["required"] = json!(required);
        }
        let conditions: Vec<Json> = m
            .fields()
            .filter_map(|f| {
                let target = string_values(self.pool, &f, "crm.v1.requires_when_true")
                    .into_iter()
                    .next()?;
                Some(json!({
                    "if": {"required": [f.name()], "properties": {f.name(): {"const": true}}},
                    "then": {"required": [target], "properties": {target.as_str(): {"type": "string", "pattern": NON_BLANK}}}
                }))
            })
            .collect();
        if !conditions.is_empty() && !patch {
            s["allOf"] = json!(conditions);
        }
        let any = message_strings(self.pool, m, "crm.v1.at_least_one_of");
        if !any.is_empty() && !patch {
            // Set means non-blank (text is trimmed) or, for other kinds, present.
            let branches: Vec<Json> = any
                .iter()
                .map(|name| {
                    let set = match m.get_field_by_name(name).map(|f| f.kind()) {
                        Some(Kind::String) => json!({"type": "string", "pattern": NON_BLANK}),
                        _ => json!({"not": {"type": "null"}}),
                    };
                    json!({"required": [name], "properties": {name.as_str(): set}})
                })
                .collect();
            s["anyOf"] = json!(branches);
        }
        if let Some(c) = comment(&m.parent_file(), m.path()) {
            s["description"] = json!(c);
        }
        s
    }

    /// The schema of `m` as an update's: nothing required. `body`: as the
    /// body of a PATCH, whose keys make the update mask, so that an unknown
    /// one is refused ("could not find field") where elsewhere it is ignored.
    fn patch_reference(&mut self, m: &MessageDescriptor, body: bool) -> Json {
        let name = format!(
            "{}{}",
            schema_name(m),
            if body { "Patch" } else { "Update" }
        );
        if !self.schemas.contains_key(&name) {
            let mut s = self.message_schema(m, &[], true);
            if body {
                s["additionalProperties"] = json!(false);
            }
            s["description"] = json!(
                "The fields to change. Without update_mask, exactly the keys present are written; \
                 a key with an empty value clears the field."
            );
            self.schemas.insert(name.clone(), s);
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    fn reference(&mut self, m: &MessageDescriptor) -> Json {
        let name = schema_name(m);
        if !self.schemas.contains_key(&name) {
            self.pending.insert(m.full_name().to_owned());
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    fn drain(&mut self) {
        while let Some(full) = self.pending.pop_first() {
            let m = self.pool.get_message_by_name(&full).expect("known message");
            let name = schema_name(&m);
            if self.schemas.contains_key(&name) {
                continue;
            }
            self.schemas.insert(name.clone(), json!({}));
            let s = self.message_schema(&m, &[], false);
            self.schemas.insert(name, s);
        }
    }

    fn operation(
        &mut self,
        method: &MethodDescriptor,
        rule: &prost_reflect::DynamicMessage,
        template: &str,
        verb: &str,
    ) -> Json {
        let input = method.input();
        let vars: Vec<String> = template
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.split('}').next()))
            .map(|v| v.split('=').next().unwrap_or(v).to_owned())
            .collect();
        let body = rule
            .get_field_by_name("body")
            .and_then(|b| b.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut params = Vec::new();
        for v in &vars {
            let mut msg = input.clone();
            let mut field = None;
            for seg in v.split('.') {
                let f = msg
                    .get_field_by_name(seg)
                    .expect("path variable names a field");
                if let Kind::Message(m) = f.kind() {
                    msg = m;
                }
                field = Some(f);
            }
            let field = field.expect("a path variable");
            let mut schema = self.value_schema(&field);
            if let Some(rules) = field_rules(self.pool, &field) {
                constrain(&mut schema, &rules, false);
            }
            // A path segment is never empty.
            if let Some(p) = schema["pattern"]
                .as_str()
                .and_then(|p| p.strip_prefix("^$|"))
            {
                schema["pattern"] = json!(p);
            }
            schema.as_object_mut().map(|o| o.remove("readOnly"));
            // `{account.id}` is documented as `{id}`: the URL is the same, and
            // dotted parameter names break common OpenAPI tooling.
            params.push(
                json!({"name": param_name(v), "in": "path", "required": true, "schema": schema,
                "description": comment(&field.parent_file(), field.path()).unwrap_or_default()}),
            );
        }
        let top_vars: Vec<&str> = vars
            .iter()
            .map(|v| v.split('.').next().unwrap_or(v))
            .collect();
        if body != "*" {
            for f in input.fields() {
                if top_vars.contains(&f.name()) || f.name() == body {
                    continue;
                }
                let mut schema = self.field_schema(&f);
                if schema.get("pattern").is_some()
                    && let Kind::Message(m) = f.kind()
                    && m.full_name() == "google.protobuf.FieldMask"
                    && let Some(r) = input.fields().find_map(|f| match f.kind() {
                        Kind::Message(r) if is_resource(&r) => Some(r),
                        _ => None,
                    })
                {
                    // ?update_mask=: proto or JSON names, as the REST bridge reads them.
                    schema["pattern"] = json!(mask_pattern(&r, false));
                }
                let description = schema
                    .as_object_mut()
                    .and_then(|o| o.remove("description"))
                    .unwrap_or(json!(""));
                // A REQUIRED field the path does not bind is a required parameter.
                let required = behaviors(self.pool, &f).contains(&REQUIRED)
                    || field_rules(self.pool, &f)
                        .and_then(|r| r.get_field_by_name("required").and_then(|v| v.as_bool()))
                        .unwrap_or(false);
                let mut p = json!({"name": f.name(), "in": "query", "required": required, "schema": schema, "description": description});
                if f.is_list() {
                    p["style"] = json!("form");
                    p["explode"] = json!(true);
                }
                params.push(p);
            }
        }
        let ok = if method.is_server_streaming() {
            // grpc-gateway's streaming form: one JSON object per line, each
            // {"result": <message>} or, if the stream fails, {"error": <Status>}.
            json!({"description": "A stream of newline-delimited JSON objects, one per message: \
             {\"result\": <message>}, or {\"error\": <google.rpc.Status>} if the stream fails. \
             It stays open until the client closes it.",
            "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {
                    "result": self.reference(&method.output()),
                    "error": {"$ref": "#/components/schemas/Status"}
                }}}}})
        } else {
            json!({"description": "OK", "content": {"application/json": {"schema": self.reference(&method.output())}}})
        };
        let mut op = json!({
            "operationId": method.name(),
            "tags": [method.parent_service().name()],
            "parameters": params,
            "responses": {
                "200": ok,
                "default": {"description": "An error: a google.rpc.Status with ErrorInfo (and BadRequest) details.",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}}
            }
        });
        if let Some(c) = comment(&method.parent_file(), method.path()) {
            op["summary"] = json!(c.lines().next().unwrap_or_default());
            op["description"] = json!(c);
        }
        // The scope the token must grant (the method's required_scope
        // option, which the server enforces): a role name of the bearer
        // scheme, as OpenAPI 3.1 allows for non-OAuth schemes.
        let ext = method
            .parent_pool()
            .get_extension_by_name("crm.v1.required_scope")
            .expect("crm.v1.required_scope");
        let options = method.options();
        let scope = options.get_extension(&ext);
        let scope = scope
            .as_str()
            .expect("build.rs checked every method's scope");
        op["security"] = json!([{"bearerAuth": [scope]}]);
        let needs = if scope == "crm:purge" {
            "Requires a token whose `scope` claim holds `crm:purge`.".to_owned()
        } else {
            format!(
                "Requires a token whose `scope` claim grants `{scope}`, or one without a `scope` claim."
            )
        };
        op["description"] = json!(match op["description"].as_str() {
            Some(d) => format!("{d}\n\n{needs}"),
            None => needs,
        });
        if body == "*" {
            let schema = self.message_schema(&input, &top_vars, false);
            // A body is needed when the message has a required field.
            let needed = schema["required"].as_array().is_some_and(|r| !r.is_empty());
            op["requestBody"] =
                json!({"required": needed, "content": {"application/json": {"schema": schema}}});
        } else if !body.is_empty() {
            let field = input.get_field_by_name(&body).expect("body field");
            let Kind::Message(m) = field.kind() else {
                panic!("body field is a message")
            };
            let schema = if verb == "patch" {
                self.patch_reference(&m, true)
            } else {
                self.reference(&m)
            };
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        op
    }
}

/// Where a method's response carries the id of a record: `/id`, or
/// `/<field>/id` when the response wraps the record (Upsert).
fn id_pointer(output: &MessageDescriptor) -> Option<String> {
    if output
        .get_field_by_name("id")
        .is_some_and(|f| f.kind() == Kind::String)
    {
        return Some("/id".into());
    }
    output.fields().find_map(|f| match f.kind() {
        Kind::Message(m) if !f.is_list() && m.get_field_by_name("id").is_some() => {
            Some(format!("/{}/id", f.name()))
        }
        _ => None,
    })
}

/// OpenAPI `links` (for stateful testing and generated clients): the 200
/// response of every operation that returns a record links to each operation
/// of the same service addressed by that record's `{id}` (Get, Update,
/// Delete, Undelete), passing `$response.body#/id`.
fn add_links(pool: &DescriptorPool, paths: &mut BTreeMap<String, Map<String, Json>>) {
    // (service, operationId) of every operation whose only path parameter is {id}.
    let mut by_id: Vec<(String, String)> = Vec::new();
    for (path, ops) in paths.iter() {
        let params: Vec<&str> = path.split('{').skip(1).collect();
        if params.len() == 1 && params[0].starts_with("id}") {
            for op in ops.values() {
                by_id.push((
                    op["tags"][0].as_str().unwrap_or_default().to_owned(),
                    op["operationId"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    for ops in paths.values_mut() {
        for op in ops.values_mut() {
            let service = op["tags"][0].as_str().unwrap_or_default().to_owned();
            let id = op["operationId"].as_str().unwrap_or_default().to_owned();
            let Some(method) = pool
                .get_service_by_name(&format!("crm.v1.{service}"))
                .and_then(|s| s.methods().find(|m| m.name() == id))
            else {
                continue;
            };
            if method.is_server_streaming() {
                continue;
            }
            let Some(pointer) = id_pointer(&method.output()) else {
                continue;
            };
            let links: Map<String, Json> = by_id
                .iter()
                .filter(|(s, _)| *s == service)
                .map(|(_, target)| {
                    (
                        target.clone(),
                        json!({"operationId": target,
                               "parameters": {"id": format!("$response.body#{pointer}")},
                               "description": format!("The record's {target}.")}),
                    )
                })
                .collect();
            if !links.is_empty() {
                op["responses"]["200"]["links"] = Json::Object(links);
            }
        }
    }
}

/// The OpenAPI document of every `crm.v1` service in `pool`.
pub fn generate(pool: &DescriptorPool) -> Json {
    let http = pool
        .get_extension_by_name("google.api.http")
        .expect("google.api.http");
    let mut g = Gen {
        pool,
        schemas: BTreeMap::new(),
        pending: BTreeSet::new(),
    };
    let mut paths: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    let mut tags = Vec::new();
    for service in pool.services().filter(|s| s.package_name() == "crm.v1") {
        tags.push(json!({"name": service.name(),
            "description": comment(&service.parent_file(), service.path()).unwrap_or_default()}));
        for method in service.methods() {
            let Value::Message(rule) = method.options().get_extension(&http).into_owned() else {
                continue;
            };
            for verb in ["get", "post", "patch", "put", "delete"] {
                let Some(template) = rule
                    .get_field_by_name(verb)
                    .and_then(|t| t.as_str().map(str::to_owned))
                else {
                    continue;
                };
                if template.is_empty() {
                    continue;
                }
                let op = g.operation(&method, &rule, &template, verb);
                paths
                    .entry(openapi_path(&template))
                    .or_default()
                    .insert(verb.to_owned(), op);
            }
        }
    }
    add_links(pool, &mut paths);
    g.drain();
    let status = pool
        .get_message_by_name("google.rpc.Status")
        .expect("google.rpc.Status");
    let mut status_schema = g.message_schema(&status, &[], false);
    status_schema["required"] = json!(["code", "message", "details"]);
    status_schema["properties"]["code"]["description"] =
        json!("The gRPC status code (google.rpc.Code).");
    g.schemas.insert("Status".into(), status_schema);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "crm",
            "version": "v1",
            "description": "Multi-tenant CRM API: accounts, contacts, deals, activities, quotes and line items. \
                The REST surface is transcoded from the crm.v1 gRPC services (grpc-gateway conventions): \
                field names are the proto names, every success is 200 with the resource, errors are \
                google.rpc.Status bodies whose `code` is the gRPC code."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": tags,
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": g.schemas
        }
    })
}
