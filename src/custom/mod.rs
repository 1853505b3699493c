//! Custom-field definitions (SPEC §14): a tenant's typed schema for the
//! `custom_fields` of a resource type. This module serves the definitions
//! (FieldDefinitionService); [`values`] holds the rules a write's values
//! are checked against, [`cache`] the per-tenant definitions the write path
//! reads (invalidated across replicas), [`index`] the background builder of
//! each definition's index. The record mechanism applies them on every
//! write (`records::store`), the list builder in typed filters and orders
//! (`sql::filter`, `sql::list`).

pub mod cache;
pub mod index;
pub mod unique;
pub mod values;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;

pub use cache::Schemas;
pub use values::{Definition, FieldType, ResourceSchema};

use crate::auth::Caller;
use crate::changes::feed::timestamp;
use crate::db::{Db, TenantTx};
use crate::error::{Error, Violations, invalid};
use crate::proto::{CheckFieldDefinitionResponse, FieldDefinition};
use crate::records::page::{Cursor, PageKey};

/// Definitions per tenant and resource type.
pub const MAX_PER_RESOURCE: i64 = 1000;
/// The resource types whose records have `custom_fields`.
pub const RESOURCE_TYPES: [&str; 5] = ["account", "contact", "deal", "activity", "quote"];
/// The fields UpdateFieldDefinition may change.
pub const UPDATABLE: [&str; 8] = [
    "label",
    "description",
    "options",
    "required",
    "unique",
    "max_length",
    "minimum",
    "maximum",
];
/// The fields set on create that never change: an update may name them
/// only with their stored values.
pub const IMMUTABLE: [&str; 3] = ["resource_type", "key", "type"];
/// Default page of ListFieldDefinitions.
pub const DEFAULT_PAGE: i64 = 100;
/// Largest page of ListFieldDefinitions.
pub const MAX_PAGE: i64 = 1000;
/// Most options of an enum.
pub const MAX_OPTIONS: usize = 500;
/// Longest option, label; description (characters).
const MAX_OPTION_CHARS: usize = 200;
const MAX_LABEL_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Longest max_length.
pub const MAX_MAX_LENGTH: i32 = 10_000;
/// Record ids a check shows.
pub const SAMPLE: usize = 20;

const COLUMNS: &str = "id, resource_type, key, label, description, type, options, required, \
                       is_unique, max_length, minimum, maximum, index_state, index_error, \
                       created_at, updated_at, created_by, updated_by, version";

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    resource_type: String,
    key: String,
    label: String,
    description: String,
    r#type: String,
    options: Vec<String>,
    required: bool,
    is_unique: bool,
    max_length: Option<i32>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    index_state: String,
    index_error: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    created_by: String,
    updated_by: String,
    version: i32,
}

fn from_row(r: Row) -> FieldDefinition {
    FieldDefinition {
        id: r.id,
        resource_type: r.resource_type,
        key: r.key,
        label: r.label,
        description: r.description,
        r#type: r.r#type,
        options: r.options,
        required: r.required,
        unique: r.is_unique,
        max_length: r.max_length,
        minimum: r.minimum,
        maximum: r.maximum,
        index_state: r.index_state,
        index_error: r.index_error,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        created_by: r.created_by,
        updated_by: r.updated_by,
        version: r.version,
    }
}

/// The rules' form of a stored or proposed definition (its type checked).
fn definition(d: &FieldDefinition) -> Option<Definition> {
    Some(Definition {
        id: d.id.clone(),
        key: d.key.clone(),
        ty: FieldType::parse(&d.r#type)?,
        options: d.options.clone(),
        required: d.required,
        unique: d.unique,
        max_length: d.max_length.and_then(|n| u32::try_from(n).ok()),
        minimum: d.minimum,
        maximum: d.maximum,
    })
}

/// The canonical form of a definition id, or NOT_FOUND-worthy `None`.
fn definition_id(id: &str) -> Option<String> {
    crate::records::fields::canonical_id_with("fld", id.trim())
}

fn not_found(id: &str) -> Error {
    Error::NotFound {
        resource: "field_definition",
        id: id.to_owned(),
    }
}

/// The table of a resource type's records.
fn table_of(resource: &str) -> Option<&'static str> {
    crate::entities::kinds()
        .find(|k| k.resource == resource)
        .map(|k| k.table)
}

fn text_problem(s: &str, max: usize) -> Option<String> {
    if s.chars().count() > max {
        Some(format!("must be at most {max} characters"))
    } else if s.contains('\0') {
        Some("must not contain NUL".into())
    } else {
        None
    }
}

/// Checks a whole definition (a new one, or a stored one with an update
/// applied), reporting every problem under `field_definition.`.
fn check(d: &mut FieldDefinition, v: &mut Violations) {
    let p = |f: &str| format!("field_definition.{f}");
    d.resource_type = d.resource_type.trim_ascii().to_owned();
    d.key = d.key.trim_ascii().to_owned();
    d.r#type = d.r#type.trim_ascii().to_owned();
    if d.resource_type.is_empty() {
        v.add(p("resource_type"), "is required");
    } else if !RESOURCE_TYPES.contains(&d.resource_type.as_str()) {
        v.add(
            p("resource_type"),
            format!(
                "must be one of {} (line items have no custom_fields)",
                RESOURCE_TYPES.join(", ")
            ),
        );
    }
    let key_ok = {
        let b = d.key.as_bytes();
        (1..=63).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
    };
    if d.key.is_empty() {
        v.add(p("key"), "is required");
    } else if !key_ok {
        v.add(
            p("key"),
            "must be a lowercase letter followed by at most 62 lowercase letters, digits or underscores",
        );
    }
    if let Some(e) = text_problem(&d.label, MAX_LABEL_CHARS) {
        v.add(p("label"), e);
    }
    if let Some(e) = text_problem(&d.description, MAX_DESCRIPTION_CHARS) {
        v.add(p("description"), e);
    }
    let ty = FieldType::parse(&d.r#type);
    match ty {
        None if d.r#type.is_empty() => v.add(p("type"), "is required"),
        None => v.add(
            p("type"),
            format!("must be one of {}", values::TYPES.join(", ")),
        ),
        Some(_) => {}
    }
    let Some(ty) = ty else { return };
    let enumerated = matches!(ty, FieldType::Enum | FieldType::MultiEnum);
    if enumerated {
        if d.options.is_empty() {
            v.add(p("options"), format!("is required for {}", ty.as_str()));
        } else if d.options.len() > MAX_OPTIONS {
            v.add(
                p("options"),
                format!("must have at most {MAX_OPTIONS} entries"),
            );
        } else {
            let mut seen = HashSet::new();
            for (i, o) in d.options.iter().enumerate() {
                let f = p(&format!("options[{i}]"));
                if o.is_empty() {
                    v.add(f, "must not be empty");
                } else if let Some(e) = text_problem(o, MAX_OPTION_CHARS) {
                    v.add(f, e);
                } else if !seen.insert(o.as_str()) {
                    v.add(f, format!("{o:?} is listed twice"));
                }
            }
        }
    } else if !d.options.is_empty() {
        v.add(p("options"), "is only for enum and multi_enum");
    }
    match d.max_length {
        Some(_) if ty != FieldType::String => v.add(p("max_length"), "is only for string"),
        Some(n) if !(1..=MAX_MAX_LENGTH).contains(&n) => {
            v.add(p("max_length"), format!("must be 1 to {MAX_MAX_LENGTH}"))
        }
        _ => {}
    }
    for (name, bound) in [("minimum", d.minimum), ("maximum", d.maximum)] {
        let Some(x) = bound else { continue };
        if !ty.numeric() {
            v.add(p(name), "is only for number and integer");
        } else if let Some(e) = crate::records::fields::number_problem(x) {
            v.add(p(name), e);
        } else if ty == FieldType::Integer && x.fract() != 0.0 {
            v.add(p(name), "must be a whole number for integer");
        }
    }
    if let (Some(lo), Some(hi)) = (d.minimum, d.maximum)
        && ty.numeric()
        && lo > hi
    {
        v.add(p("maximum"), "must not be below minimum");
    }
    if d.unique && !ty.may_be_unique() {
        v.add(p("unique"), "is not for boolean or multi_enum");
    }
}

/// Whether `new` admits a value or record that `old` did not reject...
/// conversely: whether `new` rejects something `old` admitted.
fn tightens(old: &FieldDefinition, new: &FieldDefinition) -> bool {
    let lower = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(a), Some(b)) => b > a,
    };
    let higher = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(a), Some(b)) => b < a,
    };
    old.options.iter().any(|o| !new.options.contains(o))
        || (new.required && !old.required)
        || (new.unique && !old.unique)
        || lower(
            old.max_length.map(f64::from).map(|x| -x),
            new.max_length.map(f64::from).map(|x| -x),
        )
        || lower(old.minimum, new.minimum)
        || higher(old.maximum, new.maximum)
}

/// The live records of the caller's tenant (every app's) that violate
/// `def`: their count and up to [`SAMPLE`] ids, oldest first.
async fn violators(
    tx: &mut TenantTx,
    table: &str,
    def: &Definition,
) -> Result<(i64, Vec<String>), Error> {
    let tenant = tx.caller().tenant_id().to_owned();
    let key = def.key.clone();
    let def = def.clone();
    let table = table.to_owned();
    tx.across_apps(async |conn| {
        let mut count = 0i64;
        let mut sample = Vec::new();
        let mut seen = HashSet::new();
        {
            // Required keys: every live record; otherwise those with the key.
            let mut rows = sqlx::query_as::<_, (String, Option<serde_json::Value>)>(
                sqlx::AssertSqlSafe(format!(
                    "SELECT id, custom_fields -> $2 FROM \"{table}\" \
                     WHERE tenant_id = $1 AND NOT is_deleted AND ($3 OR custom_fields ? $2) \
                     ORDER BY id"
                )),
            )
            .bind(&tenant)
            .bind(&key)
            .bind(def.required)
            .fetch(&mut *conn);
            while let Some((id, value)) = rows.try_next().await? {
                let value = value.map(crate::records::convert::json_to_value);
                if def.violated_by(value.as_ref()) {
                    count += 1;
                    if sample.len() < SAMPLE {
                        sample.push(id.clone());
                    }
                    if def.unique {
                        seen.insert(id);
                    }
                }
            }
        }
        if def.unique {
            // Records sharing a (non-blank) value with another live record.
            let dupes: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT id FROM (SELECT id, count(*) OVER (PARTITION BY custom_fields -> $2) AS n \
                 FROM \"{table}\" WHERE tenant_id = $1 AND NOT is_deleted AND custom_fields ? $2 \
                   AND jsonb_typeof(custom_fields -> $2) IN ('string', 'number') \
                   AND custom_fields -> $2 <> '\"\"'::jsonb) d \
                 WHERE n > 1 ORDER BY id"
            )))
            .bind(&tenant)
            .bind(&key)
            .fetch_all(&mut *conn)
            .await?;
            for id in dupes {
                if seen.insert(id.clone()) {
                    count += 1;
                    if sample.len() < SAMPLE {
                        sample.push(id);
                    }
                }
            }
            sample.sort();
        }
        Ok((count, sample))
    })
    .await
}

fn conflict(key: &str, count: i64) -> Error {
    Error::DefinitionConflict {
        violating: count,
        message: format!(
            "{count} live record(s) violate the definition of custom_fields.{key}; nothing changed. \
             CheckFieldDefinition lists some of them: fix them and retry"
        ),
    }
}

/// Tells every process (this one included) that `tenant`'s definitions
/// changed, when the transaction commits.
async fn announce(tx: &mut TenantTx) -> Result<(), Error> {
    let tenant = tx.caller().tenant_id().to_owned();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(cache::CHANNEL)
        .bind(&tenant)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// The paths of an update: the mask's, or the populated fields.
fn update_paths(patch: &FieldDefinition, mask: &[String]) -> Result<Vec<&'static str>, Error> {
    if mask.is_empty() {
        let mut p = Vec::new();
        if !patch.label.is_empty() {
            p.push("label");
        }
        if !patch.description.is_empty() {
            p.push("description");
        }
        if !patch.options.is_empty() {
            p.push("options");
        }
        if patch.required {
            p.push("required");
        }
        if patch.unique {
            p.push("unique");
        }
        if patch.max_length.is_some() {
            p.push("max_length");
        }
        if patch.minimum.is_some() {
            p.push("minimum");
        }
        if patch.maximum.is_some() {
            p.push("maximum");
        }
        return Ok(p);
    }
    let mut v = Violations::new();
    let mut p = Vec::new();
    for (i, path) in mask.iter().enumerate() {
        if path == "version" {
            continue;
        }
        match UPDATABLE
            .iter()
            .chain(&IMMUTABLE)
            .find(|u| **u == path.as_str())
        {
            Some(u) => p.push(*u),
            None => v.add(
                format!("update_mask.paths[{i}]"),
                format!("must be one of {}", UPDATABLE.join(", ")),
            ),
        }
    }
    v.into_result()?;
    Ok(p)
}

/// Reports the immutable fields `patch` would change: those `paths` name,
/// and (`populated`: no mask) those it sets.
fn unchanged(old: &FieldDefinition, patch: &FieldDefinition, paths: &[&str]) -> Result<(), Error> {
    let mut v = Violations::new();
    for (name, given, stored) in [
        ("resource_type", &patch.resource_type, &old.resource_type),
        ("key", &patch.key, &old.key),
        ("type", &patch.r#type, &old.r#type),
    ] {
        let named = paths.contains(&name);
        let given = given.trim_ascii();
        if (named || !given.is_empty()) && given != stored {
            v.add(format!("field_definition.{name}"), "cannot be changed");
        }
    }
    v.into_result()
}

fn apply(old: &FieldDefinition, patch: &FieldDefinition, paths: &[&str]) -> FieldDefinition {
    let mut new = old.clone();
    for p in paths {
        match *p {
            "resource_type" | "key" | "type" => {}
            "label" => new.label = patch.label.clone(),
            "description" => new.description = patch.description.clone(),
            "options" => new.options = patch.options.clone(),
            "required" => new.required = patch.required,
            "unique" => new.unique = patch.unique,
            "max_length" => new.max_length = patch.max_length,
            "minimum" => new.minimum = patch.minimum,
            _ => new.maximum = patch.maximum,
        }
    }
    new
}

/// The definitions of callers.
#[derive(Clone)]
pub struct FieldDefinitions {
    db: Db,
    schemas: Arc<Schemas>,
    pages: PageKey,
}

impl FieldDefinitions {
    /// Definitions stored in `db`, announced to `schemas`, listed with page
    /// tokens signed by `pages`.
    pub fn new(db: Db, schemas: Arc<Schemas>, pages: PageKey) -> Self {
        Self { db, schemas, pages }
    }

    async fn fetch(
        &self,
        tx: &mut TenantTx,
        id: &str,
        lock: bool,
    ) -> Result<FieldDefinition, Error> {
        let canonical = definition_id(id).ok_or_else(|| not_found(id))?;
        let tenant = tx.caller().tenant_id().to_owned();
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM field_definitions WHERE tenant_id = $1 AND id = $2{}",
            if lock { " FOR UPDATE" } else { "" }
        )))
        .bind(&tenant)
        .bind(&canonical)
        .fetch_optional(tx.conn())
        .await?;
        row.map(from_row).ok_or_else(|| not_found(id))
    }

    /// CreateFieldDefinition.
    pub async fn create(
        &self,
        caller: &Caller,
        mut d: FieldDefinition,
    ) -> Result<FieldDefinition, Error> {
        let mut v = Violations::new();
        check(&mut d, &mut v);
        v.into_result()?;
        let def = definition(&d).expect("checked");
        let table = table_of(&d.resource_type).expect("checked");
        let id = format!("fld_{}", ulid::Ulid::generate());
        let mut tx = self.db.begin(caller).await?;
        // One tenant's definitions of a type are made one at a time, so the
        // cap and the key's uniqueness hold.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('field_definitions:' || $1 || ':' || $2, 0))")
            .bind(caller.tenant_id())
            .bind(&d.resource_type)
            .execute(tx.conn())
            .await?;
        let (count, taken): (i64, bool) = sqlx::query_as(
            "SELECT count(*), COALESCE(bool_or(key = $3), false) FROM field_definitions \
             WHERE tenant_id = $1 AND resource_type = $2",
        )
        .bind(caller.tenant_id())
        .bind(&d.resource_type)
        .bind(&d.key)
        .fetch_one(tx.conn())
        .await?;
        if taken {
            return Err(Error::Duplicate {
                resource: "field_definition",
                field: "field_definition.key".into(),
                also: vec![],
            });
        }
        if count >= MAX_PER_RESOURCE {
            return Err(Error::Exhausted {
                reason: "FIELD_DEFINITION_LIMIT",
                message: format!(
                    "a tenant has at most {MAX_PER_RESOURCE} field definitions per resource type; delete one first"
                ),
            });
        }
        let (violating, _) = violators(&mut tx, table, &def).await?;
        if violating > 0 {
            return Err(conflict(&d.key, violating));
        }
        let state = if def.ty.sortable() {
            "building"
        } else {
            "none"
        };
        let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO field_definitions (tenant_id, id, resource_type, key, label, description, type, \
                 options, required, is_unique, max_length, minimum, maximum, index_state, \
                 created_at, updated_at, created_by, updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, now(), now(), $15, $15) \
             RETURNING {COLUMNS}"
        )))
        .bind(caller.tenant_id())
        .bind(&id)
        .bind(&d.resource_type)
        .bind(&d.key)
        .bind(&d.label)
        .bind(&d.description)
        .bind(&d.r#type)
        .bind(&d.options)
        .bind(d.required)
        .bind(d.unique)
        .bind(d.max_length)
        .bind(d.minimum)
        .bind(d.maximum)
        .bind(state)
        .bind(caller.sub())
        .fetch_one(tx.conn())
        .await?;
        announce(&mut tx).await?;
        tx.commit().await?;
        self.schemas.invalidate(caller.tenant_id());
        Ok(from_row(row))
    }

    /// GetFieldDefinition.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<FieldDefinition, Error> {
        let mut tx = self.db.begin(caller).await?;
        let d = self.fetch(&mut tx, id, false).await?;
        tx.end_read();
        Ok(d)
    }

    /// ListFieldDefinitions: by resource type, then key.
    pub async fn list(
        &self,
        caller: &Caller,
        page_size: i32,
        page_token: &str,
        resource_type: &str,
    ) -> Result<(Vec<FieldDefinition>, String), Error> {
        if page_size < 0 {
            return Err(invalid("page_size", "must not be negative"));
        }
        let resource_type = resource_type.trim_ascii();
        if !resource_type.is_empty() && !RESOURCE_TYPES.contains(&resource_type) {
            return Err(invalid(
                "resource_type",
                format!("must be one of {}", RESOURCE_TYPES.join(", ")),
            ));
        }
        let limit = match i64::from(page_size) {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let binding = [caller.tenant_id(), "field_definitions", resource_type];
        let after = if page_token.is_empty() {
            None
        } else {
            let c = self.pages.decode(&binding, page_token)?;
            match c.keys.as_slice() {
                [Some(r), Some(k)] => Some((r.clone(), k.clone())),
                _ => return Err(invalid("page_token", "is not a page token of this list")),
            }
        };
        let (after_resource, after_key) = after.unzip();
        let mut tx = self.db.begin(caller).await?;
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM field_definitions WHERE tenant_id = $1 \
               AND ($2 = '' OR resource_type = $2) \
               AND ($3::text IS NULL OR (resource_type, key) > ($3, $4)) \
             ORDER BY resource_type, key LIMIT $5"
        )))
        .bind(caller.tenant_id())
        .bind(resource_type)
        .bind(after_resource)
        .bind(after_key)
        .bind(limit + 1)
        .fetch_all(tx.conn())
        .await?;
        tx.end_read();
        let mut defs: Vec<FieldDefinition> = rows.into_iter().map(from_row).collect();
        let next = if defs.len() as i64 > limit {
            defs.truncate(limit as usize);
            let last = defs.last().expect("a full page");
            self.pages.encode(
                &binding,
                &Cursor {
                    keys: vec![Some(last.resource_type.clone()), Some(last.key.clone())],
                },
            )
        } else {
            String::new()
        };
        Ok((defs, next))
    }

    /// UpdateFieldDefinition.
    pub async fn update(
        &self,
        caller: &Caller,
        patch: FieldDefinition,
        mask: &[String],
    ) -> Result<FieldDefinition, Error> {
        let paths = update_paths(&patch, mask)?;
        let mut tx = self.db.begin(caller).await?;
        let old = self.fetch(&mut tx, &patch.id, true).await?;
        if patch.version != 0 && patch.version != old.version {
            return Err(Error::VersionMismatch {
                resource: "field_definition",
                id: old.id,
                expected: patch.version,
                current: old.version,
            });
        }
        unchanged(&old, &patch, &paths)?;
        let mut new = apply(&old, &patch, &paths);
        let mut v = Violations::new();
        check(&mut new, &mut v);
        v.into_result()?;
        if new == old {
            tx.end_read();
            return Ok(old);
        }
        if tightens(&old, &new) {
            let def = definition(&new).expect("checked");
            let table = table_of(&new.resource_type).expect("checked");
            let (violating, _) = violators(&mut tx, table, &def).await?;
            if violating > 0 {
                return Err(conflict(&new.key, violating));
            }
        }
        let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE field_definitions SET label = $3, description = $4, options = $5, required = $6, \
                 is_unique = $7, max_length = $8, minimum = $9, maximum = $10, updated_at = now(), \
                 updated_by = $11, version = version + 1 \
             WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
        )))
        .bind(caller.tenant_id())
        .bind(&old.id)
        .bind(&new.label)
        .bind(&new.description)
        .bind(&new.options)
        .bind(new.required)
        .bind(new.unique)
        .bind(new.max_length)
        .bind(new.minimum)
        .bind(new.maximum)
        .bind(caller.sub())
        .fetch_one(tx.conn())
        .await?;
        announce(&mut tx).await?;
        tx.commit().await?;
        self.schemas.invalidate(caller.tenant_id());
        Ok(from_row(row))
    }

    /// DeleteFieldDefinition: the values stay in the records.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), Error> {
        let canonical = definition_id(id).ok_or_else(|| not_found(id))?;
        let mut tx = self.db.begin(caller).await?;
        let deleted = sqlx::query("DELETE FROM field_definitions WHERE tenant_id = $1 AND id = $2")
            .bind(caller.tenant_id())
            .bind(&canonical)
            .execute(tx.conn())
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(not_found(id));
        }
        announce(&mut tx).await?;
        tx.commit().await?;
        self.schemas.invalidate(caller.tenant_id());
        Ok(())
    }

    /// CheckFieldDefinition: the records a create (no id) or an update
    /// would find in violation.
    pub async fn check(
        &self,
        caller: &Caller,
        patch: FieldDefinition,
        mask: &[String],
    ) -> Result<CheckFieldDefinitionResponse, Error> {
        let mut tx = self.db.begin(caller).await?;
        let mut proposed = if patch.id.trim().is_empty() {
            patch
        } else {
            let paths = update_paths(&patch, mask)?;
            let old = self.fetch(&mut tx, &patch.id, false).await?;
            unchanged(&old, &patch, &paths)?;
            apply(&old, &patch, &paths)
        };
        let mut v = Violations::new();
        check(&mut proposed, &mut v);
        v.into_result()?;
        let def = definition(&proposed).expect("checked");
        let table = table_of(&proposed.resource_type).expect("checked");
        let (violating_records, sample_record_ids) = violators(&mut tx, table, &def).await?;
        tx.end_read();
        Ok(CheckFieldDefinitionResponse {
            violating_records,
            sample_record_ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(ty: &str) -> FieldDefinition {
        FieldDefinition {
            resource_type: "account".into(),
            key: "seats".into(),
            r#type: ty.into(),
            ..Default::default()
        }
    }

    fn problems(mut d: FieldDefinition) -> Vec<String> {
        let mut v = Violations::new();
        check(&mut d, &mut v);
        v.iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect()
    }

    #[test]
    fn definitions_are_checked_whole() {
        assert!(problems(def("integer")).is_empty());
        let mut d = def("boolean");
        d.resource_type = "line_item".into();
        d.key = "Seats".into();
        d.options = vec!["a".into()];
        d.max_length = Some(5);
        d.minimum = Some(1.0);
        d.unique = true;
        assert_eq!(
            problems(d),
            vec![
                "field_definition.resource_type: must be one of account, contact, deal, activity, quote (line items have no custom_fields)",
                "field_definition.key: must be a lowercase letter followed by at most 62 lowercase letters, digits or underscores",
                "field_definition.options: is only for enum and multi_enum",
                "field_definition.max_length: is only for string",
                "field_definition.minimum: is only for number and integer",
                "field_definition.unique: is not for boolean or multi_enum",
            ]
        );
        let mut d = def("enum");
        d.options = vec!["a".into(), "".into(), "a".into()];
        assert_eq!(
            problems(d),
            vec![
                "field_definition.options[1]: must not be empty",
                "field_definition.options[2]: \"a\" is listed twice",
            ]
        );
        assert_eq!(
            problems(def("multi_enum")),
            vec!["field_definition.options: is required for multi_enum"]
        );
        let mut d = def("integer");
        d.minimum = Some(10.0);
        d.maximum = Some(2.5);
        assert_eq!(
            problems(d),
            vec![
                "field_definition.maximum: must be a whole number for integer",
                "field_definition.maximum: must not be below minimum",
            ]
        );
        assert_eq!(
            problems(def("text")),
            vec![
                "field_definition.type: must be one of string, number, integer, boolean, date, datetime, enum, multi_enum"
            ]
        );
    }

    #[test]
    fn tightening_is_recognized() {
        let mut old = def("enum");
        old.options = vec!["a".into(), "b".into()];
        let mut new = old.clone();
        new.options.push("c".into());
        new.label = "Tier".into();
        assert!(!tightens(&old, &new), "adding an option loosens");
        new.options = vec!["a".into()];
        assert!(tightens(&old, &new));
        let mut n = def("number");
        n.minimum = Some(0.0);
        let mut m = n.clone();
        m.minimum = None;
        assert!(!tightens(&n, &m));
        assert!(tightens(&m, &n));
        m.minimum = Some(-1.0);
        assert!(!tightens(&n, &m));
        m.maximum = Some(5.0);
        assert!(tightens(&n, &m));
        let mut s = def("string");
        s.max_length = Some(10);
        let mut t = s.clone();
        t.max_length = Some(11);
        assert!(!tightens(&s, &t));
        assert!(tightens(&t, &s));
        t.max_length = None;
        assert!(tightens(&t, &s));
        assert!(!tightens(&s, &t));
        let mut r = s.clone();
        r.required = true;
        assert!(tightens(&s, &r));
        r.required = false;
        r.unique = true;
        assert!(tightens(&s, &r));
    }
}
