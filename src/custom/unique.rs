//! Defined custom fields on the write path: the check of a record's
//! `custom_fields` in its dynamic form ([`apply`]), and `unique` keys
//! enforced among the tenant's live records ([`check`]).
//!
//! Uniqueness without races: a write takes a transaction-scoped advisory
//! lock per (tenant, table, key, value) it sets, in one order, and only then
//! looks for a live record holding the value. Two writes of one value take
//! turns; the second looks after the first committed (READ COMMITTED reads
//! a fresh snapshot per statement) and finds it. The look-up is a
//! containment query the shared GIN index of `custom_fields` serves.

use prost_reflect::{DynamicMessage, ReflectMessage, Value as RValue};
use prost_types::Struct;

use super::values::ResourceSchema;
use crate::db::TenantTx;
use crate::error::Error;
use crate::records::Checker;

/// The unique values a write sets, and the unique keys whose stored value
/// it replaces.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Writes {
    /// (key, value) set (or changed) by the write.
    pub claims: Vec<(String, serde_json::Value)>,
    /// Unique keys whose value the write changes (from anything).
    pub changed: Vec<String>,
}

/// The `custom_fields` of `msg`, if set.
pub fn struct_of(msg: &DynamicMessage) -> Option<Struct> {
    let field = msg.descriptor().get_field_by_name("custom_fields")?;
    if !msg.has_field(&field) {
        return None;
    }
    msg.get_field(&field).as_message()?.transcode_to().ok()
}

/// Checks the custom fields of `msg` (a record about to be written; `old`
/// the stored one for an update) against `schema`, rewriting values into
/// their stored form, reporting on `v`; returns the unique values it sets.
pub fn apply(
    schema: &ResourceSchema,
    msg: &mut DynamicMessage,
    old: Option<&DynamicMessage>,
    v: &mut Checker,
) -> Writes {
    let Some(field) = msg.descriptor().get_field_by_name("custom_fields") else {
        return Writes::default();
    };
    let mut new = struct_of(msg);
    let old = old.map(struct_of);
    let before = new.clone();
    schema.check(&mut new, old.as_ref(), v);
    if new != before
        && let Some(s) = &new
        && let Some(desc) = field.kind().as_message()
    {
        let mut m = DynamicMessage::new(desc.clone());
        if m.transcode_from(s).is_ok() {
            msg.set_field(&field, RValue::Message(m));
        }
    }
    let claims = schema
        .unique_values(new.as_ref(), old.as_ref().map(Option::as_ref))
        .into_iter()
        .map(|(d, json)| (d.key.clone(), json))
        .collect();
    let changed = match &old {
        None => Vec::new(),
        Some(old) => schema
            .iter()
            .filter(|d| d.unique)
            .filter(|d| {
                old.as_ref().and_then(|s| s.fields.get(&d.key))
                    != new.as_ref().and_then(|s| s.fields.get(&d.key))
            })
            .map(|d| d.key.clone())
            .collect(),
    };
    Writes { claims, changed }
}

/// The unique values a stored record holds (for an undelete).
pub fn held(schema: &ResourceSchema, msg: &DynamicMessage) -> Writes {
    let s = struct_of(msg);
    Writes {
        claims: schema
            .unique_values(s.as_ref(), None)
            .into_iter()
            .map(|(d, json)| (d.key.clone(), json))
            .collect(),
        changed: Vec::new(),
    }
}

/// One record of a write: its id, its unique writes, and its request path
/// prefix (`account`, `requests[3].account`).
pub struct Item<'a> {
    /// The record's id.
    pub id: &'a str,
    /// What it sets.
    pub writes: &'a Writes,
    /// Where it sits in the request.
    pub prefix: String,
}

/// Refuses (ALREADY_EXISTS) a write whose unique values another live
/// record of the tenant (any app's), or another record of the same write,
/// holds. Runs in the write's transaction, after its other checks.
pub async fn check(
    tx: &mut TenantTx,
    table: &str,
    resource: &'static str,
    items: &[Item<'_>],
) -> Result<(), Error> {
    if items.iter().all(|i| i.writes.claims.is_empty()) {
        return Ok(());
    }
    let path = |i: &Item, key: &str| format!("{}.custom_fields.{key}", i.prefix);
    // Within the write.
    let mut seen: std::collections::HashMap<(String, String), Vec<String>> =
        std::collections::HashMap::new();
    let mut order = Vec::new();
    for item in items {
        for (key, value) in &item.writes.claims {
            let k = (key.clone(), value.to_string());
            let paths = seen.entry(k.clone()).or_default();
            if paths.is_empty() {
                order.push(k);
            }
            paths.push(path(item, key));
        }
    }
    for k in &order {
        let paths = &seen[k];
        if paths.len() > 1 {
            return Err(Error::Duplicate {
                resource,
                field: paths[0].clone(),
                also: paths[1..].to_vec(),
            });
        }
    }
    let tenant = tx.caller().tenant_id().to_owned();
    let mut locks: Vec<String> = order
        .iter()
        .map(|(key, value)| format!("crm:unique:{tenant}:{table}:{key}:{value}"))
        .collect();
    locks.sort();
    let mut docs = Vec::new();
    let mut keys = Vec::new();
    let mut paths = Vec::new();
    for item in items {
        for (key, value) in &item.writes.claims {
            // Containment in the tenant-scoped column (migration 0016),
            // whose index holds this tenant's values only.
            docs.push(serde_json::json!({ &tenant: { key: value } }).to_string());
            keys.push(key.clone());
            paths.push(path(item, key));
        }
    }
    // Stored values this write replaces do not count.
    let replaced: Vec<String> = items
        .iter()
        .flat_map(|i| {
            i.writes
                .changed
                .iter()
                .map(move |k| format!("{k} {}", i.id))
        })
        .collect();
    let table = table.to_owned();
    let clashes: Vec<i64> = tx
        .across_apps(async |conn| {
            sqlx::query(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k",
            )
            .bind(&locks)
            .execute(&mut *conn)
            .await?;
            Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT c.i FROM unnest($2::jsonb[], $3::text[]) WITH ORDINALITY AS c(doc, key, i) \
                 WHERE EXISTS (SELECT 1 FROM \"{table}\" t WHERE t.tenant_id = $1 AND NOT t.is_deleted \
                     AND t.tenant_custom_fields @> c.doc AND (c.key || ' ' || t.id) <> ALL($4)) \
                 ORDER BY c.i"
            )))
            .bind(&tenant)
            .bind(&docs)
            .bind(&keys)
            .bind(&replaced)
            .fetch_all(&mut *conn)
            .await?)
        })
        .await?;
    if let Some((first, rest)) = clashes.split_first() {
        let at = |i: &i64| paths[(*i - 1) as usize].clone();
        return Err(Error::Duplicate {
            resource,
            field: at(first),
            also: rest.iter().map(at).collect(),
        });
    }
    Ok(())
}
