//! SQL text for the fixed statements of the record tables (List queries are
//! built by [`super::list`], on the same rules). Identifiers come
//! only from the entity's known columns (derived from its proto descriptor at
//! start-up) and are checked to be plain lowercase identifiers; every value is
//! a bind parameter. Rows travel as JSON: `row_to_json` out,
//! `jsonb_populate_record` in, so one statement shape serves every entity.

use std::sync::Arc;

/// How a proto field is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `text`; an empty string is stored as NULL.
    Text,
    /// `text[]`.
    TextArray,
    /// `numeric` (from `double`).
    Numeric,
    /// `integer` (from `int32`).
    Integer,
    /// `boolean`.
    Boolean,
    /// `timestamptz` (from `google.protobuf.Timestamp`).
    Timestamp,
    /// `jsonb` (Struct, Value, repeated messages).
    Json,
}

impl ColumnType {
    /// The Postgres type name as `information_schema` spells it.
    pub fn pg_type(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::TextArray => "ARRAY",
            ColumnType::Numeric => "numeric",
            ColumnType::Integer => "integer",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamp => "timestamp with time zone",
            ColumnType::Json => "jsonb",
        }
    }
}

/// A column of a record table.
#[derive(Clone, Debug)]
pub struct Column {
    /// Column (and proto field) name.
    pub name: String,
    /// Storage type.
    pub ty: ColumnType,
}

/// Columns that never change after insert.
const IMMUTABLE: [&str; 5] = ["tenant_id", "id", "app_id", "created_at", "created_by"];

/// Prepared statement texts of one record table. Parameters: `$1` tenant,
/// `$2` app scope (NULL for a person's token), then per statement.
#[derive(Debug)]
pub struct Statements {
    /// `$3` id → the row as JSON.
    pub select_one: Arc<str>,
    /// The name under which every request connection has `select_one`
    /// prepared (`crm_get_<table>`: `[a-z_]`), for the single-message read
    /// ([`crate::db::Db::read_one`]).
    pub get_name: Arc<str>,
    /// The `PREPARE` of `select_one` as `get_name`, run as each request
    /// connection opens.
    pub prepare_get: Arc<str>,
    /// Same, locking the row for a read-modify-write, if it is at version
    /// `$4` (0: any). `FOR NO KEY UPDATE`: the key never changes, so other
    /// transactions' foreign-key checks against the row (`FOR KEY SHARE`)
    /// need not wait for it — two records re-pointed at each other at the same
    /// moment do not deadlock. A row at another version is neither returned nor waited
    /// for (once the holder of its lock commits a new version, it no longer
    /// matches), so stale writers fail together instead of queueing.
    pub select_one_for_update: Arc<str>,
    /// `$3` row JSON → the inserted row as JSON (no row if the JSON's tenant
    /// or app differ from `$1`/`$2`).
    pub insert: Arc<str>,
    /// `$3` id, `$4` row JSON → the updated row as JSON.
    pub update: Arc<str>,
    /// `$3` ids (text[]) → the ids among them that name live records,
    /// held `FOR KEY SHARE` to the end of the write (as a foreign-key check
    /// holds them): a record a write names cannot be erased between the
    /// check and the commit (an erasure locks it `FOR UPDATE`), also where
    /// no foreign key exists (reference lists). Ordinary writes of the named
    /// records (`FOR NO KEY UPDATE`) do not wait for it.
    pub live_ids: Arc<str>,
    /// `$3` ids (text[]) → those rows as JSON, in no particular order.
    pub select_many: Arc<str>,
    /// Same, locking the rows in id order (`FOR NO KEY UPDATE`): batches
    /// writing overlapping records lock them in one order and never deadlock.
    pub select_many_for_update: Arc<str>,
    /// `$3` external ids (text[]) → the live rows of the caller's namespace
    /// (`$2`'s app, or none for a person) holding them, locked in id order.
    pub select_external_for_update: Arc<str>,
    /// `$3` external ids (text[]) → those held by live rows of the caller's
    /// namespace.
    pub taken_external_ids: Arc<str>,
    /// `$3` JSON array of rows → the inserted rows as JSON (none when a row's
    /// tenant or app differ from `$1`/`$2`). One statement for a batch.
    pub insert_many: Arc<str>,
    /// `$3` JSON array of rows → the overwritten rows as JSON, matched by id.
    pub update_many: Arc<str>,
}

fn ident(name: &str) -> String {
    assert!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "not a plain identifier: {name}"
    );
    format!("\"{name}\"")
}

impl Statements {
    /// Builds the statements of `table` with `columns`. `computed` maps
    /// columns to SQL expressions over the incoming record `r`; they are
    /// static text of the entity's own module, never request data.
    pub fn new(table: &str, columns: &[Column], computed: &[(&str, &str)]) -> Self {
        let t = ident(table);
        let scope = "t.tenant_id = $1 AND ($2::text IS NULL OR t.app_id = $2)";
        // External ids are unique per namespace: a person's records share
        // the '' one, each app has its own (migration 0007's index).
        let namespace = "t.tenant_id = $1 AND COALESCE(t.app_id, '') = COALESCE($2::text, '')";
        let value = |c: &Column| match (computed.iter().find(|(n, _)| *n == c.name), c.ty) {
            (Some((_, expr)), _) => format!("({expr})"),
            (None, ColumnType::Text) => format!("NULLIF(r.{0}, '')", ident(&c.name)),
            (None, _) => format!("r.{}", ident(&c.name)),
        };
        let all: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
        let all_values: Vec<String> = columns.iter().map(value).collect();
        let mutable: Vec<&Column> = columns
            .iter()
            .filter(|c| !IMMUTABLE.contains(&c.name.as_str()))
            .collect();
        let mutable_names: Vec<String> = mutable.iter().map(|c| ident(&c.name)).collect();
        let mutable_values: Vec<String> = mutable.iter().map(|c| value(c)).collect();
        let select = format!("SELECT row_to_json(t)::text FROM {t} t");
        let select_one = format!("{select} WHERE {scope} AND t.id = $3");
        let get_name = format!("crm_get_{table}");
        Self {
            prepare_get: format!("PREPARE {get_name}(text, text, text) AS {select_one}").into(),
            get_name: get_name.into(),
            select_one: select_one.into(),
            select_one_for_update: format!(
                "{select} WHERE {scope} AND t.id = $3 AND ($4::integer = 0 OR t.version = $4) FOR NO KEY UPDATE"
            )
                .into(),
            insert: format!(
                "INSERT INTO {t} AS t ({}) SELECT {} FROM jsonb_populate_record(NULL::{t}, $3::jsonb) r \
                 WHERE r.tenant_id = $1 AND r.app_id IS NOT DISTINCT FROM $2::text \
                 RETURNING row_to_json(t)::text",
                all.join(", "),
                all_values.join(", ")
            )
            .into(),
            update: format!(
                "UPDATE {t} AS t SET ({}) = (SELECT {} FROM jsonb_populate_record(NULL::{t}, $4::jsonb) r) \
                 WHERE {scope} AND t.id = $3 RETURNING row_to_json(t)::text",
                mutable_names.join(", "),
                mutable_values.join(", ")
            )
            .into(),
            live_ids: format!(
                "SELECT t.id FROM {t} t WHERE {scope} AND t.id = ANY($3) AND NOT t.is_deleted \
                 FOR KEY SHARE OF t"
            )
            .into(),
            select_many: format!("{select} WHERE {scope} AND t.id = ANY($3)").into(),
            select_many_for_update: format!(
                "{select} WHERE {scope} AND t.id = ANY($3) ORDER BY t.id FOR NO KEY UPDATE"
            )
            .into(),
            select_external_for_update: format!(
                "{select} WHERE {namespace} AND t.external_id = ANY($3) AND NOT t.is_deleted \
                 ORDER BY t.id FOR NO KEY UPDATE"
            )
            .into(),
            taken_external_ids: format!(
                "SELECT t.external_id FROM {t} t WHERE {namespace} AND t.external_id = ANY($3) \
                 AND NOT t.is_deleted"
            )
            .into(),
            insert_many: format!(
                "INSERT INTO {t} AS t ({}) SELECT {} FROM jsonb_populate_recordset(NULL::{t}, $3::jsonb) r \
                 WHERE r.tenant_id = $1 AND r.app_id IS NOT DISTINCT FROM $2::text \
                 RETURNING row_to_json(t)::text",
                all.join(", "),
                all_values.join(", ")
            )
            .into(),
            update_many: format!(
                "UPDATE {t} AS t SET ({}) = (SELECT {}) \
                 FROM jsonb_populate_recordset(NULL::{t}, $3::jsonb) r \
                 WHERE {scope} AND t.id = r.id RETURNING row_to_json(t)::text",
                mutable_names.join(", "),
                mutable_values.join(", ")
            )
            .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_quoted_statements() {
        let cols = vec![
            Column {
                name: "tenant_id".into(),
                ty: ColumnType::Text,
            },
            Column {
                name: "id".into(),
                ty: ColumnType::Text,
            },
            Column {
                name: "type".into(),
                ty: ColumnType::Text,
            },
            Column {
                name: "tags".into(),
                ty: ColumnType::TextArray,
            },
        ];
        let s = Statements::new("things", &cols, &[("tags", "ARRAY[r.id]")]);
        assert!(s.insert.contains("NULLIF(r.\"type\", '')"));
        assert!(s.insert.contains("(ARRAY[r.id])"));
        assert!(s.update.contains("SET (\"type\", \"tags\")"));
        assert!(!s.update.contains("\"tenant_id\","));
    }

    #[test]
    #[should_panic(expected = "not a plain identifier")]
    fn rejects_odd_identifiers() {
        ident("a; drop table x");
    }
}
