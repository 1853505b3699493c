//! Field history (SPEC §15): reading what the change trigger
//! (`crm_record_changed`, migration 0014) wrote — one `record_history` row
//! per changed field per version, values as the row held them — in Get's
//! JSON shape, a page at a time, and the record as it was at an instant.
//!
//! Visibility is GetX's: the record must be readable by the caller (tenant,
//! and app for integration tokens) in the same transaction, and row-level
//! security scopes `record_history` the same way.

use prost_types::{Struct, Timestamp, Value};
use serde_json::Map;

use super::Kind;
use super::convert::{json_to_value, row_to_struct};
use super::fields::RecordId;
use super::page::{Cursor, PageKey};
use crate::auth::Caller;
use crate::db::{Db, TenantTx};
use crate::error::{Error, invalid};
use crate::proto::HistoryEntry;

/// Most entries per page; 0 asks for [`DEFAULT_PAGE`].
pub const MAX_PAGE: i32 = 1000;
/// Entries per page when the request names none.
pub const DEFAULT_PAGE: i32 = 100;
/// Most fields one request may filter on.
pub const MAX_FIELDS: usize = 100;
const CUSTOM: &str = "custom_fields.";

/// The record kind of a REST collection name (`accounts`, `line-items`).
pub fn collection(name: &str) -> Result<&'static Kind, Error> {
    crate::entities::kinds()
        .find(|k| collection_name(k) == name)
        .ok_or_else(|| {
            invalid(
                "collection",
                "must be one of accounts, contacts, deals, activities, quotes, line-items",
            )
        })
}

/// The REST collection of `kind` (its table, with `-` for `_`).
pub fn collection_name(kind: &Kind) -> String {
    kind.table.replace('_', "-")
}

/// `id` as an id of `kind`, or INVALID_ARGUMENT naming `id`.
pub fn record_id(kind: &Kind, id: &str) -> Result<RecordId, Error> {
    super::store::parse_kind_id(kind, "id", id)
}

/// The stored row (`row_to_json` text) of the record `id` if the caller can
/// see it (soft-deleted too), else NOT_FOUND.
pub async fn visible_row(
    tx: &mut TenantTx,
    kind: &'static Kind,
    id: &str,
) -> Result<String, Error> {
    let caller = tx.caller().clone();
    let row: Option<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(kind.meta().sql.select_one.clone()))
            .bind(caller.tenant_id())
            .bind(caller.app_id())
            .bind(id)
            .fetch_optional(tx.conn())
            .await?;
    row.ok_or_else(|| Error::NotFound {
        resource: kind.resource,
        id: id.to_owned(),
    })
}

/// A stored value of `field` (a column's JSON, or a custom field's) as
/// Get's JSON has it; null stays null.
fn shaped(
    kind: &'static Kind,
    field: &str,
    stored: Option<serde_json::Value>,
) -> Result<Value, Error> {
    let null = || Value {
        kind: Some(prost_types::value::Kind::NullValue(0)),
    };
    let Some(stored) = stored else {
        return Ok(null());
    };
    if field.starts_with(CUSTOM) {
        return Ok(json_to_value(stored));
    }
    let mut row = Map::new();
    row.insert(field.to_owned(), stored);
    let mut record = row_to_struct(kind.meta(), &serde_json::Value::Object(row).to_string())?;
    Ok(record.fields.remove(field).unwrap_or_else(null))
}

/// Checks a `fields` filter: proto field names of `kind` or
/// `custom_fields.<key>`.
fn check_fields(kind: &'static Kind, fields: &[String]) -> Result<(), Error> {
    if fields.len() > MAX_FIELDS {
        return Err(invalid(
            "fields",
            format!("names {} fields; at most {MAX_FIELDS}", fields.len()),
        ));
    }
    let mut v = crate::error::Violations::new();
    for (i, f) in fields.iter().enumerate() {
        // custom_fields' entries are per key: the field itself is never one.
        let ok = match f.strip_prefix(CUSTOM) {
            Some(key) => !key.is_empty() && key.len() <= 256,
            None => f != "custom_fields" && kind.meta().field(f).is_some(),
        };
        if !ok {
            v.add(
                format!("fields[{i}]"),
                format!(
                    "{f:?} is not a field of {} (a proto field name, or custom_fields.<key>)",
                    super::fields::article(kind.resource)
                ),
            );
        }
    }
    v.into_result()
}

/// History reads.
#[derive(Clone)]
pub struct History {
    db: Db,
    pages: PageKey,
}

/// A stored object of field values.
type Values = sqlx::types::Json<Map<String, serde_json::Value>>;

type ChangeRow = (
    i32,
    chrono::DateTime<chrono::Utc>,
    String,
    Option<String>,
    Option<String>,
    Option<Values>,
    Values,
);

/// A stored value, JSON null as none.
fn value_of(map: Option<&Map<String, serde_json::Value>>, key: &str) -> Option<serde_json::Value> {
    map.and_then(|m| m.get(key))
        .filter(|v| !v.is_null())
        .cloned()
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

impl History {
    /// Reads over `db`, signing page tokens with `pages`.
    pub fn new(db: Db, pages: PageKey) -> Self {
        Self { db, pages }
    }

    /// One page of the record's history, newest first, and the next
    /// page's token (empty on the last page).
    pub async fn list(
        &self,
        caller: &Caller,
        collection_name: &str,
        id: &str,
        page_size: i32,
        page_token: &str,
        fields: &[String],
    ) -> Result<(Vec<HistoryEntry>, String), Error> {
        let kind = collection(collection_name)?;
        let id = record_id(kind, id)?;
        if page_size < 0 {
            return Err(invalid("page_size", "must not be negative"));
        }
        let size = match page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        check_fields(kind, fields)?;
        let joined = fields.join("\n");
        let binding = [
            caller.tenant_id(),
            caller.app_id().unwrap_or_default(),
            "history",
            id.as_str(),
            &joined,
        ];
        let after = if page_token.is_empty() {
            None
        } else {
            let cursor = self.pages.decode(&binding, page_token)?;
            match cursor.keys.as_slice() {
                [Some(v), Some(f)] => Some((
                    v.parse::<i32>()
                        .map_err(|_| invalid("page_token", "is not a page token of this list"))?,
                    f.clone(),
                )),
                _ => return Err(invalid("page_token", "is not a page token of this list")),
            }
        };
        let mut tx = self.db.begin(caller).await?;
        visible_row(&mut tx, kind, id.as_str()).await?;
        let (after_version, after_field) = match &after {
            Some((v, f)) => (Some(*v), f.as_str()),
            None => (None, ""),
        };
        // One row per change; each yields an entry per changed field (in
        // field order). The first row may be the cursor's, partly read.
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "SELECT record_version, changed_at, changed_by, app_id, request_id, old_values, new_values \
             FROM record_history \
             WHERE tenant_id = $1 AND record_id = $2 \
               AND (cardinality($3::text[]) = 0 OR new_values ?| $3) \
               AND ($4::integer IS NULL OR record_version <= $4) \
             ORDER BY record_version DESC \
             LIMIT $5",
        )
        .bind(caller.tenant_id())
        .bind(id.as_str())
        .bind(fields)
        .bind(after_version)
        .bind(i64::from(size) + 2)
        .fetch_all(tx.conn())
        .await?;
        tx.end_read();
        let wanted = |f: &str| fields.is_empty() || fields.iter().any(|w| w == f);
        let mut entries = Vec::with_capacity(size as usize + 1);
        'rows: for (version, at, by, app, request, old, new) in rows {
            let mut keys: Vec<&String> = new.keys().filter(|k| wanted(k)).collect();
            keys.sort_unstable();
            for field in keys {
                if after_version == Some(version) && field.as_str() <= after_field {
                    continue;
                }
                if entries.len() > size as usize {
                    break 'rows;
                }
                entries.push(HistoryEntry {
                    old_value: Some(shaped(kind, field, value_of(old.as_deref(), field))?),
                    new_value: Some(shaped(kind, field, value_of(Some(&new), field))?),
                    field: field.clone(),
                    record_version: version,
                    changed_at: Some(timestamp(at)),
                    changed_by: by.clone(),
                    app_id: app.clone().unwrap_or_default(),
                    request_id: request.clone().unwrap_or_default(),
                });
            }
        }
        let more = entries.len() > size as usize;
        entries.truncate(size as usize);
        let next = match (more, entries.last()) {
            (true, Some(last)) => self.pages.encode(
                &binding,
                &Cursor {
                    keys: vec![
                        Some(last.record_version.to_string()),
                        Some(last.field.clone()),
                    ],
                },
            ),
            _ => String::new(),
        };
        Ok((entries, next))
    }

    /// The record as it was at `time`, shaped like Get's JSON: the stored
    /// row with every change after `time` undone, newest first.
    pub async fn at(
        &self,
        caller: &Caller,
        collection_name: &str,
        id: &str,
        time: Option<Timestamp>,
    ) -> Result<Struct, Error> {
        let kind = collection(collection_name)?;
        let id = record_id(kind, id)?;
        let time = time.ok_or_else(|| invalid("time", "is required"))?;
        // Timestamps are 0001-01-01 to 9999-12-31 (google.protobuf.Timestamp).
        let at = chrono::DateTime::from_timestamp(time.seconds, time.nanos.max(0) as u32)
            .filter(|_| (0..1_000_000_000).contains(&time.nanos))
            .filter(|_| (-62_135_596_800..=253_402_300_799).contains(&time.seconds))
            .ok_or_else(|| {
                invalid(
                    "time",
                    "must be a valid instant between 0001-01-01 and 9999-12-31",
                )
            })?;
        let mut tx = self.db.begin(caller).await?;
        let row = visible_row(&mut tx, kind, id.as_str()).await?;
        // Cut by version, not by each row's time: a side write's stamp
        // (the database's transaction start) may be older than the version
        // before it, so every version after the last one stamped at or
        // before `time` is undone.
        let later: Vec<(Option<Values>,)> = sqlx::query_as(
            "SELECT old_values FROM record_history \
             WHERE tenant_id = $1 AND record_id = $2 \
               AND record_version > coalesce((SELECT max(record_version) FROM record_history \
                    WHERE tenant_id = $1 AND record_id = $2 AND changed_at <= $3), 0) \
             ORDER BY record_version DESC",
        )
        .bind(caller.tenant_id())
        .bind(id.as_str())
        .bind(at)
        .fetch_all(tx.conn())
        .await?;
        tx.end_read();
        let not_found = || Error::NotFound {
            resource: kind.resource,
            id: id.as_str().to_owned(),
        };
        let mut row: Map<String, serde_json::Value> =
            serde_json::from_str(&row).map_err(Error::internal)?;
        let created = row
            .get("created_at")
            .and_then(|v| v.as_str())
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .ok_or_else(|| Error::internal(anyhow::anyhow!("a row without created_at")))?;
        if at < created {
            return Err(not_found());
        }
        for (old,) in later {
            for (field, old) in old.map(|o| o.0).unwrap_or_default() {
                match field.strip_prefix(CUSTOM) {
                    Some(key) => {
                        let doc = row
                            .entry("custom_fields")
                            .or_insert_with(|| serde_json::Value::Object(Map::new()));
                        if !doc.is_object() {
                            *doc = serde_json::Value::Object(Map::new());
                        }
                        if let Some(doc) = doc.as_object_mut() {
                            if old.is_null() {
                                doc.remove(key);
                            } else {
                                doc.insert(key.to_owned(), old);
                            }
                        }
                    }
                    None => {
                        row.insert(field, old);
                    }
                }
            }
        }
        row_to_struct(kind.meta(), &serde_json::Value::Object(row).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_name_the_six_kinds() {
        assert_eq!(collection("line-items").unwrap().resource, "line_item");
        assert_eq!(collection("accounts").unwrap().resource, "account");
        assert!(collection("line_items").is_err());
        assert!(collection("webhooks").is_err());
    }

    #[test]
    fn field_filters_name_fields() {
        let kind = collection("deals").unwrap();
        assert!(check_fields(kind, &["stage".into(), "custom_fields.tier".into()]).is_ok());
        assert!(check_fields(kind, &["custom_fields.".into()]).is_err());
        let Err(Error::Invalid(v)) = check_fields(kind, &["stage".into(), "nope".into()]) else {
            panic!("an unknown field passed");
        };
        assert_eq!(v.iter().next().unwrap().field, "fields[1]");
        let many: Vec<String> = (0..=MAX_FIELDS).map(|_| "stage".to_owned()).collect();
        assert!(check_fields(kind, &many).is_err());
    }

    #[test]
    fn values_take_get_shape() {
        let kind = collection("deals").unwrap();
        let v = shaped(kind, "stage", Some(serde_json::json!("won"))).unwrap();
        assert_eq!(
            v.kind,
            Some(prost_types::value::Kind::StringValue("won".into()))
        );
        let v = shaped(kind, "custom_fields.n", Some(serde_json::json!(7))).unwrap();
        assert_eq!(v.kind, Some(prost_types::value::Kind::NumberValue(7.0)));
        let v = shaped(kind, "stage", None).unwrap();
        assert_eq!(v.kind, Some(prost_types::value::Kind::NullValue(0)));
    }
}
