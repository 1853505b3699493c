//! From HTTP to the gRPC request message: path variables and query
//! parameters parsed by the field's type (grpc-gateway's rules), JSON bodies
//! decoded with the failing field named, and the update mask a PATCH body
//! implies.

use bytes::Bytes;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    Value,
};

use crate::error::{Error, Violations};
use crate::records::mask;

pub(super) fn invalid(field: &str, description: impl Into<String>) -> Error {
    let mut v = Violations::new();
    v.add(field, description);
    Error::Invalid(v)
}

pub(super) fn field_by_name(desc: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_name(name)
        .or_else(|| desc.get_field_by_json_name(name))
}

/// Converts the text of a path variable or query parameter to a value of
/// `field`'s type (grpc-gateway's `runtime/query.go` rules).
pub(super) fn parse_scalar(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let bad = || format!("{text:?} is not a valid {:?}", field.kind());
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bool => Value::Bool(match text {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => return Err(bad()),
        }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(text.parse().map_err(|_| bad())?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(text.parse().map_err(|_| bad())?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(text.parse().map_err(|_| bad())?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(text.parse().map_err(|_| bad())?),
        Kind::Double => Value::F64(text.parse().map_err(|_| bad())?),
        Kind::Float => Value::F32(text.parse().map_err(|_| bad())?),
        Kind::Bytes => Value::Bytes(Bytes::from(text.as_bytes().to_vec())),
        Kind::Enum(e) => match e.get_value_by_name(text) {
            Some(v) => Value::EnumNumber(v.number()),
            None => Value::EnumNumber(text.parse().map_err(|_| bad())?),
        },
        Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask" => {
            let mut mask = DynamicMessage::new(m);
            let paths = crate::records::mask::split_paths(text)
                .into_iter()
                .map(Value::String)
                .collect();
            mask.set_field_by_name("paths", Value::List(paths));
            Value::Message(mask)
        }
        Kind::Message(m) => {
            // Well-known types take their JSON form: a quoted string for
            // Timestamp/Duration, raw JSON for Struct/Value, the scalar for
            // wrappers.
            let json = match m.full_name() {
                "google.protobuf.Timestamp" | "google.protobuf.Duration" => {
                    serde_json::Value::String(text.to_owned()).to_string()
                }
                "google.protobuf.StringValue" | "google.protobuf.BytesValue" => {
                    serde_json::Value::String(text.to_owned()).to_string()
                }
                _ => text.to_owned(),
            };
            let mut de = serde_json::Deserializer::from_str(&json);
            Value::Message(
                DynamicMessage::deserialize(m, &mut de).map_err(|e| format!("{text:?}: {e}"))?,
            )
        }
    })
}

/// How a value from the path or query meets a value already set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bind {
    /// A query parameter: a singular field given twice is an error.
    Once,
    /// A path variable: it wins over the body (grpc-gateway), so a client
    /// can PATCH back the JSON a GET returned, `id` and all.
    Overwrite,
}

/// Sets the field at `path` (through singular message fields) from `text`.
/// Repeated fields gain one entry per call; a singular field already set is
/// an error or overwritten, as `bind` says.
pub(super) fn set_path(
    msg: &mut DynamicMessage,
    path: &[String],
    text: &str,
    display: &str,
    bind: Bind,
) -> Result<bool, Error> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(false);
    };
    let Some(field) = field_by_name(&msg.descriptor(), first) else {
        return Ok(false);
    };
    if !rest.is_empty() {
        if field.is_list() || field.is_map() {
            return Ok(false);
        }
        return match msg.get_field_mut(&field) {
            Value::Message(child) if !is_well_known(&child.descriptor()) => {
                set_path(child, rest, text, display, bind)
            }
            _ => Ok(false),
        };
    }
    if field.is_map() {
        return Ok(false);
    }
    let value =
        parse_scalar(&field, text).map_err(|e| invalid(display, format!("parsing field: {e}")))?;
    if field.is_list() {
        if let Value::List(items) = msg.get_field_mut(&field) {
            items.push(value);
        }
    } else {
        if msg.has_field(&field) && bind == Bind::Once {
            return Err(invalid(display, "is given more than once"));
        }
        msg.set_field(&field, value);
    }
    Ok(true)
}

/// Decodes a JSON body as `desc` (proto3 JSON, both name spellings, unknown
/// fields ignored). A failure names the field it happened at, under
/// `prefix` (the request field the body binds to).
pub(super) fn decode_json(
    desc: &MessageDescriptor,
    body: &[u8],
    prefix: &str,
) -> Result<DynamicMessage, Error> {
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let result = DynamicMessage::deserialize_with_options(
        desc.clone(),
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
        &options,
    )
    .and_then(|m| de.end().map(|()| m));
    result.map_err(|e| {
        let path = track.path().to_string();
        let field = match (prefix, path.as_str()) {
            ("", "." | "") => "body".to_owned(),
            (p, "." | "") => p.to_owned(),
            ("", f) => f.to_owned(),
            (p, f) => format!("{p}.{f}"),
        };
        // serde_json's message ends with the position; keep it, it helps.
        invalid(&field, format!("is not valid JSON for this field: {e}"))
    })
}

/// The first free-form JSON field (Struct, Value, ListValue) in `msg` that
/// nests too deeply or holds a non-finite number, with its path.
pub(super) fn deep_json(msg: &DynamicMessage, prefix: &str) -> Option<(String, String)> {
    for (field, value) in msg.fields() {
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        let Kind::Message(m) = field.kind() else {
            continue;
        };
        if matches!(
            m.full_name(),
            "google.protobuf.Struct" | "google.protobuf.Value" | "google.protobuf.ListValue"
        ) {
            if let Some(problem) = crate::records::fields::json_problem(value, 0) {
                return Some((path, problem));
            }
            continue;
        }
        if is_well_known(&m) || field.is_map() {
            continue;
        }
        match value {
            Value::Message(child) => {
                if let Some(found) = deep_json(child, &path) {
                    return Some(found);
                }
            }
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(found) = item
                        .as_message()
                        .and_then(|c| deep_json(c, &format!("{path}[{i}]")))
                    {
                        return Some(found);
                    }
                }
            }
            _ => {}
        }
    }
    None
}

pub(super) fn is_well_known(desc: &MessageDescriptor) -> bool {
    desc.full_name().starts_with("google.protobuf.")
}

/// The update mask grpc-gateway derives from a PATCH body: the paths of the
/// keys present, recursing into singular messages and (by key) into Struct
/// fields; unknown keys are INVALID_ARGUMENT.
pub(super) fn mask_from_body(
    desc: &MessageDescriptor,
    body: &serde_json::Value,
    prefix: &str,
    out: &mut Vec<String>,
) -> Result<(), Error> {
    let serde_json::Value::Object(map) = body else {
        return Ok(());
    };
    for (key, value) in map {
        let Some(field) = field_by_name(desc, key) else {
            return Err(invalid(
                "update_mask",
                format!("could not find field {key:?} in {}", desc.full_name()),
            ));
        };
        let path = format!("{prefix}{}", field.name());
        match field.kind() {
            Kind::Message(m)
                if m.full_name() == "google.protobuf.Struct"
                    && value.is_object()
                    && !field.is_list() =>
            {
                struct_paths(&path, value, out)?
            }
            Kind::Message(m)
                if !is_well_known(&m)
                    && !field.is_list()
                    && !field.is_map()
                    && value.is_object() =>
            {
                mask_from_body(&m, value, &format!("{path}."), out)?
            }
            _ => out.push(path),
        }
    }
    Ok(())
}

/// The mask paths of a Struct value's leaves under `prefix` (keys holding
/// dots or commas in backticks), at most [`mask::MAX_PATHS`] of them.
pub(super) fn struct_paths(
    prefix: &str,
    value: &serde_json::Value,
    out: &mut Vec<String>,
) -> Result<(), Error> {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                struct_paths(&format!("{prefix}.{}", mask::quote_segment(k)), v, out)?;
            }
        }
        _ => {
            if out.len() >= mask::MAX_PATHS {
                return Err(invalid(
                    "update_mask",
                    format!("the body names more than {} fields", mask::MAX_PATHS),
                ));
            }
            out.push(prefix.to_owned())
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::DESCRIPTOR_POOL;

    fn account() -> MessageDescriptor {
        DESCRIPTOR_POOL
            .get_message_by_name("crm.v1.Account")
            .unwrap()
    }

    #[test]
    fn body_keys_make_the_mask() {
        let body = serde_json::json!({"name": "x", "legalName": "y", "custom_fields": {"a": 1, "b": {"c": 2}}, "tags": []});
        let mut paths = Vec::new();
        mask_from_body(&account(), &body, "", &mut paths).unwrap();
        paths.sort();
        assert_eq!(
            paths,
            vec![
                "custom_fields.a",
                "custom_fields.b.c",
                "legal_name",
                "name",
                "tags"
            ]
        );
        let err = mask_from_body(
            &account(),
            &serde_json::json!({"nope": 1}),
            "",
            &mut Vec::new(),
        );
        assert!(err.is_err());
        // An empty or null Struct replaces the whole field.
        let mut paths = Vec::new();
        mask_from_body(
            &account(),
            &serde_json::json!({"custom_fields": null}),
            "",
            &mut paths,
        )
        .unwrap();
        assert_eq!(paths, vec!["custom_fields"]);
    }

    #[test]
    fn query_values_parse_by_type() {
        let list = DESCRIPTOR_POOL
            .get_message_by_name("crm.v1.ListAccountsRequest")
            .unwrap();
        let mut m = DynamicMessage::new(list);
        assert!(set_path(&mut m, &["pageSize".into()], "10", "pageSize", Bind::Once).unwrap());
        assert!(
            set_path(
                &mut m,
                &["show_deleted".into()],
                "true",
                "show_deleted",
                Bind::Once
            )
            .unwrap()
        );
        assert!(set_path(&mut m, &["page_size".into()], "20", "page_size", Bind::Once).is_err());
        assert!(!set_path(&mut m, &["unknown".into()], "1", "unknown", Bind::Once).unwrap());
        let mut m = DynamicMessage::new(list_req("crm.v1.ListAccountsRequest"));
        assert!(
            set_path(
                &mut m,
                &["page_size".into()],
                "ten",
                "page_size",
                Bind::Once
            )
            .is_err()
        );
    }

    fn list_req(name: &str) -> MessageDescriptor {
        DESCRIPTOR_POOL.get_message_by_name(name).unwrap()
    }
}
