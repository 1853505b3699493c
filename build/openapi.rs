//! Generates the OpenAPI 3.1 document of the REST surface from the protos'
//! descriptors (run by `build.rs`). Schemas describe what the server emits:
//! proto field names, proto3 JSON types, `(crm.v1.allowed_values)` as
//! `enum`, `(crm.v1.default_value)` as `default`, REQUIRED fields as
//! `required`, OUTPUT_ONLY/IDENTIFIER fields as `readOnly`, and the
//! `google.rpc.Status` error body.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{
    DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, Value,
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
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "int64"})
            }
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
        if field.is_list() {
            s = json!({"type": "array", "items": s});
        } else if field.is_map() {
            s = json!({"type": "object", "additionalProperties": true});
        }
        let obj = s.as_object_mut().expect("schemas are objects");
        let allowed = string_values(self.pool, field, "crm.v1.allowed_values");
        if !allowed.is_empty() {
            obj.insert("enum".into(), json!(allowed));
        }
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
            props.insert(f.name().to_owned(), self.field_schema(&f));
            if !patch && behaviors(self.pool, &f).contains(&REQUIRED) {
                required.push(f.name().to_owned());
            }
        }
        let mut s = json!({"type": "object", "properties": props});
        if !required.is_empty() {
            s["required"] = json!(required);
        }
        if let Some(c) = comment(&m.parent_file(), m.path()) {
            s["description"] = json!(c);
        }
        s
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
                let description = schema
                    .as_object_mut()
                    .and_then(|o| o.remove("description"))
                    .unwrap_or(json!(""));
                let mut p = json!({"name": f.name(), "in": "query", "required": false, "schema": schema, "description": description});
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
        if body == "*" {
            let schema = self.message_schema(&input, &top_vars, false);
            op["requestBody"] =
                json!({"required": false, "content": {"application/json": {"schema": schema}}});
        } else if !body.is_empty() {
            let field = input.get_field_by_name(&body).expect("body field");
            let Kind::Message(m) = field.kind() else {
                panic!("body field is a message")
            };
            let schema = if verb == "patch" {
                let name = format!("{}Patch", schema_name(&m));
                if !self.schemas.contains_key(&name) {
                    let mut s = self.message_schema(&m, &[], true);
                    s["description"] = json!(format!(
                        "The fields to change. Without update_mask, exactly the keys present are written; \
                         a key with an empty value clears the field."
                    ));
                    self.schemas.insert(name.clone(), s);
                }
                json!({"$ref": format!("#/components/schemas/{name}")})
            } else {
                self.reference(&m)
            };
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        op
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
