//! Conversions between a record, its dynamic (descriptor-driven) form, and the
//! JSON a table row travels as. Rows use proto field names, which are the
//! column names; `row_to_json` output (timestamps with offsets, NULLs for
//! empty columns) reads back as proto3 JSON.

use prost_reflect::{DeserializeOptions, DynamicMessage, SerializeOptions};

use super::Entity;
use crate::error::Error;

/// The record as a dynamic message.
pub fn to_dynamic<E: Entity>(rec: &E) -> DynamicMessage {
    DynamicMessage::decode(
        E::kind().meta().desc.clone(),
        rec.encode_to_vec().as_slice(),
    )
    .expect("a generated message decodes with its own descriptor")
}

/// The typed record of a dynamic message of the same type.
pub fn from_dynamic<E: Entity>(msg: &DynamicMessage) -> E {
    msg.transcode_to()
        .expect("a dynamic message decodes into its generated type")
}

/// The record as a JSON object keyed by column names, for
/// `jsonb_populate_record`. Defaults are written out so that every column is
/// present (empty strings become NULL in SQL).
pub fn to_row_json<E: Entity>(rec: &E) -> String {
    let msg = to_dynamic(rec);
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    let mut out = Vec::with_capacity(512);
    let mut ser = serde_json::Serializer::new(&mut out);
    msg.serialize_with_options(&mut ser, &options)
        .expect("a valid message serializes to JSON");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// The options of every JSON answer (REST, the change feed's records):
/// proto field names, every field written, 64-bit integers as strings
/// (grpc-gateway's protojson).
pub fn rest_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(true)
}

/// A stored row (`row_to_json`/`to_jsonb` text) of the entity `meta`
/// describes, as the `google.protobuf.Struct` of its Get answer's JSON.
pub fn row_to_struct(meta: &super::Meta, json: &str) -> Result<prost_types::Struct, Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    let mut msg = DynamicMessage::deserialize_with_options(
        meta.desc.clone(),
        &mut de,
        &DeserializeOptions::new().deny_unknown_fields(false),
    )
    .map_err(|e| Error::internal(anyhow::anyhow!("reading a {} row: {e}", meta.desc.name())))?;
    super::fields::clear_null_values(&mut msg, meta);
    let value = msg
        .serialize_with_options(serde_json::value::Serializer, &rest_options())
        .map_err(Error::internal)?;
    match json_to_value(value).kind {
        Some(prost_types::value::Kind::StructValue(s)) => Ok(s),
        _ => Err(Error::internal(anyhow::anyhow!(
            "a record is not a JSON object"
        ))),
    }
}

/// A JSON value as a `google.protobuf.Value`.
pub fn json_to_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .into_iter()
                .map(|(k, v)| (k, json_to_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// The record of a `row_to_json` row.
pub fn from_row_json<E: Entity>(json: &str) -> Result<E, Error> {
    let desc = E::kind().meta().desc.clone();
    let mut de = serde_json::Deserializer::from_str(json);
    let mut msg = DynamicMessage::deserialize_with_options(
        desc,
        &mut de,
        &DeserializeOptions::new().deny_unknown_fields(false),
    )
    .map_err(|e| Error::internal(anyhow::anyhow!("reading a {} row: {e}", E::kind().table)))?;
    super::fields::clear_null_values(&mut msg, E::kind().meta());
    Ok(from_dynamic(&msg))
}
