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
/// present (empty strings become NULL in SQL) but a field with presence that
/// is unset, which is left out (NULL). Written in one pass from the record's protobuf encoding,
/// without a dynamic message (only JSON columns — Struct, Value and other
/// messages — go through prost-reflect, each on its own bytes).
pub fn to_row_json<E: Entity>(rec: &E) -> String {
    let meta = E::kind().meta();
    let bytes = rec.encode_to_vec();
    let mut values: Vec<Vec<Raw>> = vec![Vec::new(); meta.fields.len()];
    let mut buf = bytes.as_slice();
    let mut next = 0;
    while !buf.is_empty() {
        let (tag, wire) = prost::encoding::decode_key(&mut buf)
            .expect("a record's own encoding has well-formed keys");
        let n = meta.fields.len();
        let found = (0..n)
            .map(|i| (next + i) % n)
            .find(|&i| meta.fields[i].desc.number() == tag);
        let raw = Raw::read(wire, &mut buf);
        if let Some(i) = found {
            values[i].push(raw);
            next = i + 1;
        }
    }
    let mut out = Vec::with_capacity(bytes.len() * 2 + 64 * meta.fields.len());
    out.push(b'{');
    let mut first = true;
    for (f, raw) in meta.fields.iter().zip(&values) {
        // Unset, as prost-reflect leaves it out (NULL in the row).
        if raw.is_empty() && f.desc.supports_presence() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        push_json_str(&mut out, &f.name);
        out.push(b':');
        write_column(&mut out, f, raw);
    }
    out.push(b'}');
    String::from_utf8(out).expect("the columns are written as UTF-8")
}

/// One field's value as it sits in the encoding.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

impl<'a> Raw<'a> {
    fn read(wire: prost::encoding::WireType, buf: &mut &'a [u8]) -> Self {
        use prost::encoding::{WireType, decode_varint};
        let bad = "a record's own encoding is well formed";
        match wire {
            WireType::Varint => Raw::Varint(decode_varint(buf).expect(bad)),
            WireType::SixtyFourBit => {
                let (v, rest) = buf.split_at(8);
                *buf = rest;
                Raw::Fixed64(u64::from_le_bytes(v.try_into().expect(bad)))
            }
            WireType::LengthDelimited => {
                let len = decode_varint(buf).expect(bad) as usize;
                let (v, rest) = buf.split_at(len);
                *buf = rest;
                Raw::Bytes(v)
            }
            w => panic!("records hold no {w:?} fields"),
        }
    }

    fn text(self) -> &'a str {
        match self {
            Raw::Bytes(b) => std::str::from_utf8(b).expect("protobuf strings are UTF-8"),
            _ => unreachable!("a string field is length-delimited"),
        }
    }
}

/// Writes the column of `f` holding `raw` (its occurrences, last wins).
fn write_column(out: &mut Vec<u8>, f: &super::schema::FieldMeta, raw: &[Raw]) {
    use super::schema::Shape;
    let last = raw.last().copied();
    match f.shape {
        Shape::String => push_json_str(out, last.map(Raw::text).unwrap_or_default()),
        Shape::StringList => {
            out.push(b'[');
            for (i, r) in raw.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_str(out, r.text());
            }
            out.push(b']');
        }
        Shape::Double => match last {
            None => out.push(b'0'),
            Some(Raw::Fixed64(bits)) => {
                let x = f64::from_bits(bits);
                if x.is_finite() {
                    // serde_json's shortest round-trip form.
                    serde_json::to_writer(&mut *out, &x).expect("a finite double");
                } else {
                    // protojson's names, as prost-reflect writes them.
                    push(
                        out,
                        match x {
                            x if x.is_nan() => "\"NaN\"",
                            x if x > 0.0 => "\"Infinity\"",
                            _ => "\"-Infinity\"",
                        },
                    );
                }
            }
            Some(_) => unreachable!("a double is fixed 64-bit"),
        },
        Shape::Int32 => match last {
            None => out.push(b'0'),
            Some(Raw::Varint(n)) => {
                push(out, &(n as i32).to_string());
            }
            Some(_) => unreachable!("an int32 is a varint"),
        },
        Shape::Bool => match last {
            None | Some(Raw::Varint(0)) => push(out, "false"),
            Some(_) => push(out, "true"),
        },
        Shape::Timestamp => match last {
            None => unreachable!("an unset timestamp is left out"),
            Some(Raw::Bytes(b)) => {
                let ts = <prost_types::Timestamp as prost::Message>::decode(b)
                    .expect("a record's own timestamp decodes");
                let t = chrono::DateTime::from_timestamp(ts.seconds, ts.nanos.max(0) as u32)
                    .expect("a stored timestamp is in chrono's range");
                out.push(b'"');
                push(out, &t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
                out.push(b'"');
            }
            Some(_) => unreachable!("a timestamp is length-delimited"),
        },
        Shape::Struct | Shape::Value | Shape::Json => {
            let prost_reflect::Kind::Message(m) = f.desc.kind() else {
                unreachable!("a JSON column holds a message")
            };
            let one = |b: &[u8], out: &mut Vec<u8>| {
                let msg = DynamicMessage::decode(m.clone(), b)
                    .expect("a record's own message decodes with its descriptor");
                msg.serialize_with_options(
                    &mut serde_json::Serializer::new(&mut *out),
                    &row_options(),
                )
                .expect("a valid message serializes to JSON");
            };
            fn bytes<'a>(r: &Raw<'a>) -> &'a [u8] {
                match *r {
                    Raw::Bytes(b) => b,
                    _ => unreachable!("a message is length-delimited"),
                }
            }
            if f.desc.is_list() {
                out.push(b'[');
                for (i, r) in raw.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    one(bytes(r), out);
                }
                out.push(b']');
            } else {
                match raw {
                    [] => unreachable!("an unset message is left out"),
                    // Occurrences of a message field merge.
                    [r] => one(bytes(r), out),
                    _ => one(
                        &raw.iter()
                            .flat_map(|r| bytes(r).iter().copied())
                            .collect::<Vec<u8>>(),
                        out,
                    ),
                }
            }
        }
    }
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
}

fn push(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

/// How rows are written: proto field names, every field, numbers as numbers.
fn row_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(false)
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
    let mut msg = DynamicMessage::deserialize_with_options(meta.desc.clone(), &mut de, &lenient())
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

/// The record of a `row_to_json` row, decoded straight into the protobuf
/// encoding of `E` and from there into `E`, in one pass over the text: a
/// row's plain columns (text, numbers, booleans, timestamps, text lists)
/// never pass through a JSON tree or a dynamic message; only JSON-typed
/// columns (Struct, Value, other messages) are read by prost-reflect. NULL
/// columns are unset fields, as is a JSON `null` in a `google.protobuf.Value`
/// column; unknown keys (e.g. generated columns) are skipped.
pub fn from_row_json<E: Entity>(json: &str) -> Result<E, Error> {
    let meta = E::kind().meta();
    let bad =
        |why: String| Error::internal(anyhow::anyhow!("reading a {} row: {why}", E::kind().table));
    let mut buf = Vec::with_capacity(json.len());
    let mut de = serde_json::Deserializer::from_str(json);
    serde::Deserializer::deserialize_map(
        &mut de,
        RowVisitor {
            meta,
            buf: &mut buf,
        },
    )
    .and_then(|()| de.end())
    .map_err(|e| bad(e.to_string()))?;
    E::decode(buf.as_slice()).map_err(|e| bad(e.to_string()))
}

/// Walks a row's columns, appending each field's encoding to `buf`.
struct RowVisitor<'a> {
    meta: &'a super::Meta,
    buf: &'a mut Vec<u8>,
}

impl<'de> serde::de::Visitor<'de> for RowVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a row as a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let fields = &self.meta.fields;
        // Columns come in the table's order, which mostly follows the
        // fields': look from after the last one found.
        let mut next = 0;
        while let Some(found) = map.next_key_seed(Key { fields, next })? {
            let Some(i) = found else {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            };
            next = i + 1;
            let field = &fields[i].desc;
            match field.kind() {
                prost_reflect::Kind::Message(m) if m.full_name() != "google.protobuf.Timestamp" => {
                    let v: serde_json::Value = map.next_value()?;
                    encode_json(field, m, v, self.buf).map_err(serde::de::Error::custom)?;
                }
                _ => map.next_value_seed(Column {
                    field,
                    buf: self.buf,
                    element: false,
                })?,
            }
        }
        Ok(())
    }
}

/// A column's name, as the index of its field (`None`: not a field), found
/// without copying the name.
struct Key<'a> {
    fields: &'a [super::schema::FieldMeta],
    next: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a column name")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Option<usize>, E> {
        let n = self.fields.len();
        Ok((0..n)
            .map(|i| (self.next + i) % n)
            .find(|&i| self.fields[i].name == s))
    }
}

/// One plain column's value, encoded as it is read.
struct Column<'a> {
    field: &'a prost_reflect::FieldDescriptor,
    buf: &'a mut Vec<u8>,
    /// An element of the list the field holds (a list field takes only
    /// those).
    element: bool,
}

impl Column<'_> {
    fn text(&mut self, s: &str) -> Result<(), String> {
        use prost::encoding::{WireType, encode_key, encode_varint};
        use prost_reflect::Kind;
        if self.field.is_list() != self.element {
            return Err(format!("{}: text where a list is due", self.field.name()));
        }
        let tag = self.field.number();
        match self.field.kind() {
            Kind::String => {
                encode_key(tag, WireType::LengthDelimited, self.buf);
                encode_varint(s.len() as u64, self.buf);
                self.buf.extend_from_slice(s.as_bytes());
            }
            Kind::Message(_) => {
                let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| e.to_string())?;
                let ts = prost_types::Timestamp {
                    seconds: t.timestamp(),
                    nanos: t.timestamp_subsec_nanos() as i32,
                };
                prost::encoding::message::encode(tag, &ts, self.buf);
            }
            k => return Err(format!("{}: a {k:?} field holds text", self.field.name())),
        }
        Ok(())
    }

    fn number(&mut self, x: f64, int: Option<i64>) -> Result<(), String> {
        use prost::encoding;
        use prost_reflect::Kind;
        let tag = self.field.number();
        match self.field.kind() {
            Kind::Double => encoding::double::encode(tag, &x, self.buf),
            Kind::Int32 => {
                let n = int
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| format!("{}: {x} is not an int32", self.field.name()))?;
                encoding::int32::encode(tag, &n, self.buf)
            }
            k => {
                return Err(format!(
                    "{}: a {k:?} field holds a number",
                    self.field.name()
                ));
            }
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Column<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Column<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "the column {}", self.field.name())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(mut self, s: &str) -> Result<(), E> {
        self.text(s).map_err(E::custom)
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<(), E> {
        match self.field.kind() {
            prost_reflect::Kind::Bool => {
                prost::encoding::bool::encode(self.field.number(), &b, self.buf);
                Ok(())
            }
            k => Err(E::custom(format!(
                "{}: a {k:?} field holds a boolean",
                self.field.name()
            ))),
        }
    }

    fn visit_f64<E: serde::de::Error>(mut self, x: f64) -> Result<(), E> {
        self.number(x, None).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(mut self, n: i64) -> Result<(), E> {
        self.number(n as f64, Some(n)).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(mut self, n: u64) -> Result<(), E> {
        self.number(n as f64, i64::try_from(n).ok())
            .map_err(E::custom)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.element
            || !(self.field.is_list() && self.field.kind() == prost_reflect::Kind::String)
        {
            return Err(serde::de::Error::custom(format!(
                "{}: not a list field",
                self.field.name()
            )));
        }
        while seq
            .next_element_seed(Column {
                field: self.field,
                buf: self.buf,
                element: true,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// Appends the encoding of the message-typed `field` (not a Timestamp)
/// holding the JSON column value `v`: one message, or one per element of a
/// repeated field.
fn encode_json(
    field: &prost_reflect::FieldDescriptor,
    m: prost_reflect::MessageDescriptor,
    v: serde_json::Value,
    buf: &mut Vec<u8>,
) -> Result<(), String> {
    let tag = field.number();
    let one = |v: serde_json::Value, buf: &mut Vec<u8>| -> Result<(), String> {
        let msg = DynamicMessage::deserialize_with_options(m.clone(), v, &lenient())
            .map_err(|e| format!("{}: {e}", field.name()))?;
        prost::encoding::message::encode(tag, &msg, buf);
        Ok(())
    };
    match v {
        serde_json::Value::Null => Ok(()),
        serde_json::Value::Array(items) if field.is_list() => {
            items.into_iter().try_for_each(|item| one(item, buf))
        }
        v if !field.is_list() => one(v, buf),
        v => Err(format!("{}: a list field holds {v}", field.name())),
    }
}

/// Stored JSON may hold keys a newer schema wrote: they are skipped.
fn lenient() -> DeserializeOptions {
    DeserializeOptions::new().deny_unknown_fields(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Quote;

    /// The old way: the whole row through prost-reflect.
    fn through_reflect<E: Entity>(json: &str) -> E {
        let mut de = serde_json::Deserializer::from_str(json);
        let mut msg = DynamicMessage::deserialize_with_options(
            E::kind().meta().desc.clone(),
            &mut de,
            &lenient(),
        )
        .unwrap();
        super::super::fields::clear_null_values(&mut msg, E::kind().meta());
        from_dynamic(&msg)
    }

    /// The old way: the whole record through prost-reflect.
    fn row_through_reflect<E: Entity>(rec: &E) -> serde_json::Value {
        to_dynamic(rec)
            .serialize_with_options(serde_json::value::Serializer, &row_options())
            .unwrap()
    }

    #[test]
    fn rows_encode_as_prost_reflect_writes_them() {
        use crate::proto::{Account, Contact, Deal, LineItem};
        let row = r#"{"tenant_id":"t1","id":"quo_01ARZ3NDEKTSV4RRFFQ69G5FAV","app_id":"app_1",
            "created_at":"2026-12-01T09:30:00.123456+00:00","updated_at":"1969-12-31T23:59:59.5-02:00",
            "deleted_at":"2026-12-01T09:30:00Z","created_by":"u \"q\" \u00e9\n","version":-7,
            "name":"Q","value":1234.5,"total":0,"is_primary":false,
            "line_items":[{"id":"li_1","quantity":2,"unit_price":0.1,"total":0.2},{"id":"li_2"}],
            "custom_fields":{"tier":"gold","n":[1,{"a":null}],"e":{}},"tags":["a","","b"]}"#;
        let full: Quote = from_row_json(row).unwrap();
        for q in [
            full.clone(),
            Quote::default(),
            Quote {
                total: Some(f64::NAN),
                value: Some(-0.0),
                ..full
            },
        ] {
            let fast: serde_json::Value = serde_json::from_str(&to_row_json(&q)).unwrap();
            assert_eq!(fast.to_string(), row_through_reflect(&q).to_string());
        }
        fn same<E: Entity + Default>() {
            let rec = E::default();
            let fast: serde_json::Value = serde_json::from_str(&to_row_json(&rec)).unwrap();
            assert_eq!(fast, row_through_reflect(&rec), "{}", E::kind().table);
        }
        same::<Account>();
        same::<Contact>();
        same::<Deal>();
        same::<LineItem>();
        same::<crate::proto::Activity>();
    }

    #[test]
    fn rows_decode_as_prost_reflect_reads_them() {
        // As row_to_json writes a quote: offsets on timestamps, numerics as
        // numbers, NULLs, a jsonb array of summaries, a Struct, a text[].
        let row = r#"{"tenant_id":"t1","id":"quo_01ARZ3NDEKTSV4RRFFQ69G5FAV","app_id":null,
            "created_at":"2026-12-01T09:30:00.123456+00:00","updated_at":"1969-12-31T23:59:59.5-02:00",
            "created_by":"u","updated_by":"u","is_deleted":false,"deleted_at":null,"deleted_by":null,
            "schema_version":1,"version":7,"name":"Q","value":1234.5,"total":0,
            "line_items":[{"id":"li_1","quantity":2,"unit_price":0.1,"total":0.2,"discount_type":"percent","extra":1}],
            "custom_fields":{"tier":"gold","n":[1,{"a":null}]},"tags":["a","b"],
            "valid_until":null,"an_unknown_column":3}"#;
        let fast: Quote = from_row_json(row).unwrap();
        assert_eq!(fast, through_reflect::<Quote>(row));
        assert_eq!(fast.total, Some(0.0));
        assert_eq!(fast.app_id, None);
        assert_eq!(fast.updated_at.unwrap().nanos, 500_000_000);
        assert_eq!(fast.line_items.len(), 1);
        // A record the mechanism wrote reads back as itself.
        let again: Quote = from_row_json(&to_row_json(&fast)).unwrap();
        assert_eq!(again, fast);
        // Escapes in names and values, columns in any order.
        let row = r#"{"tags":["a\"b","\u00e9"],"name":"Tab\there \\ \"q\"","version":-3,"tenant_id":"t"}"#;
        let fast: Quote = from_row_json(row).unwrap();
        assert_eq!(fast, through_reflect::<Quote>(row));
        assert_eq!(fast.tags, ["a\"b", "é"]);
        // A column of the wrong type is an internal error, not a panic.
        assert!(from_row_json::<Quote>(r#"{"tags":"a"}"#).is_err());
        assert!(from_row_json::<Quote>(r#"{"name":1}"#).is_err());
        assert!(from_row_json::<Quote>(r#"{"name":"x"} trailing"#).is_err());
        assert!(from_row_json::<Quote>(r#"{"version":"seven"}"#).is_err());
        assert!(from_row_json::<Quote>(r#"{"created_at":"yesterday"}"#).is_err());
    }
}
