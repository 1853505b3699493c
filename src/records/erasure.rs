//! Erasure (SPEC §15): `PurgeRecord` removes a record and every copy of its
//! values in one transaction — the row, its history, the stored responses of
//! idempotent writes that returned it, its change events' `record`, its
//! copies in other records (summaries are recomputed, references cleared)
//! and in those records' history and events — then adds a `purged` event
//! and an audit row without values.
//!
//! Children (records that belong to the erased one, [`CHILDREN`]) are
//! erased with it: soft-deleted ones always, live ones only with `cascade`
//! (else FAILED_PRECONDITION). Every other reference to it is cleared in the
//! referring record, stamped like any side write (version + 1), so that the
//! feed and history show the change.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;

use super::convert::from_row_json;
use super::history::{collection, record_id};
use super::store::{deletion, now};
use super::{Entity, Kind};
use crate::auth::Caller;
use crate::db::{Db, TenantTx, WriteContext};
use crate::entities::{activity, contact, deal, line_item, quote};
use crate::error::Error;
use crate::proto::{Account, Activity, Contact, Deal, LineItem, Quote};

/// The scope erasure needs (never implied).
pub const SCOPE: &str = "crm:purge";

/// Records that belong to another: (child kind, its field naming the
/// parent). Erasing the parent erases them.
pub static CHILDREN: &[(&Kind, &str)] = &[
    (&contact::KIND, "account_id"),
    (&deal::KIND, "account_id"),
    (&quote::KIND, "account_id"),
    (&activity::KIND, "account_id"),
    (&quote::KIND, "deal_id"),
    (&activity::KIND, "deal_id"),
    (&activity::KIND, "contact_id"),
    (&line_item::KIND, "quote_id"),
];

/// Free JSON fields that may hold copies of another record (holder kind,
/// field, the kind whose ids it may hold): an activity's `participants`
/// (typically contacts: ids with names and emails). Erasing such a record
/// takes every element that names it out of them (`crm_scrub`). Found by
/// scanning the tenant's rows of the holder kind.
pub static JSON_COPIES: &[(&Kind, &str, &Kind)] =
    &[(&activity::KIND, "participants", &contact::KIND)];

/// Rows erased or rewritten, per kind.
pub type Erased = BTreeMap<String, i64>;

struct Purge<'a> {
    tx: &'a mut TenantTx,
    cascade: bool,
    /// The app of the integration token erasing (None: a person's token).
    app: Option<String>,
    erased: Erased,
    /// The erased ids, and the kinds whose records may hold copies of them.
    ids: Vec<String>,
    holders: BTreeSet<&'static str>,
}

impl Purge<'_> {
    fn count(&mut self, kind: &str, rows: u64) {
        *self.erased.entry(kind.to_owned()).or_default() += rows as i64;
    }
}

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

impl super::Store {
    /// Erases the record `id` of the REST collection `collection_name` for
    /// `caller`, who must hold [`SCOPE`]. Returns the rows erased per kind.
    pub async fn purge(
        &self,
        caller: &Caller,
        collection_name: &str,
        id: &str,
        cascade: bool,
    ) -> Result<Erased, Error> {
        caller.require(SCOPE)?;
        let mut attempt = 0;
        let erased = loop {
            attempt += 1;
            match purge(self.db(), caller, collection_name, id, cascade).await {
                // A deadlock with concurrent writes: the transaction is gone;
                // do it again.
                Err(Error::Contention) if attempt < super::store::WRITE_ATTEMPTS => continue,
                other => break other?,
            }
        };
        self.committed(caller.tenant_id());
        Ok(erased)
    }
}

async fn purge(
    db: &Db,
    caller: &Caller,
    collection_name: &str,
    id: &str,
    cascade: bool,
) -> Result<Erased, Error> {
    let kind = collection(collection_name)?;
    let id = record_id(kind, id)?.as_str().to_owned();
    // The record must be the caller's to see; what it takes with it (its
    // children, the references to it) is found across the tenant's apps.
    let tenant_wide = caller.across_apps();
    let mut tx = db
        .begin_write(&tenant_wide, &WriteContext::new(None))
        .await?;
    let owner: Option<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT app_id FROM {} WHERE tenant_id = $1 AND id = $2",
        kind.table
    )))
    .bind(caller.tenant_id())
    .bind(&id)
    .fetch_optional(tx.conn())
    .await?;
    let visible = match (&owner, caller.app_id()) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(app), Some(mine)) => app.as_deref() == Some(mine),
    };
    if !visible {
        return Err(Error::NotFound {
            resource: kind.resource,
            id,
        });
    }
    let mut p = Purge {
        tx: &mut tx,
        cascade,
        erased: Erased::new(),
        app: caller.app_id().map(str::to_owned),
        ids: Vec::new(),
        holders: BTreeSet::new(),
    };
    purge_one(&mut p, kind, id.clone(), true).await?;
    scrub_copies(&mut p).await?;
    let erased = std::mem::take(&mut p.erased);
    drop(p);
    sqlx::query(
        "INSERT INTO purge_audit (tenant_id, resource_type, record_id, purged_by, app_id, cascade, erased) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(caller.tenant_id())
    .bind(kind.resource)
    .bind(&id)
    .bind(caller.sub())
    .bind(caller.app_id())
    .bind(cascade)
    .bind(sqlx::types::Json(&erased))
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(erased)
}

/// Erases one record (`top`: the one asked for, which must exist).
fn purge_one<'a, 'p>(p: &'a mut Purge<'p>, kind: &'static Kind, id: String, top: bool) -> Boxed<'a>
where
    'p: 'a,
{
    Box::pin(async move {
        let tenant = p.tx.caller().tenant_id().to_owned();
        let sub = p.tx.caller().sub().to_owned();
        let row: Option<(String, i32, bool, Option<String>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT row_to_json(t)::text, version, is_deleted, app_id FROM {} t \
             WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                kind.table
            )))
            .bind(&tenant)
            .bind(&id)
            .fetch_optional(p.tx.conn())
            .await?;
        let Some((row, version, deleted, app)) = row else {
            return if top {
                Err(Error::NotFound {
                    resource: kind.resource,
                    id,
                })
            } else {
                Ok(()) // erased already, through another parent
            };
        };
        // Children first: they name this record.
        for (child, field) in CHILDREN.iter().filter(|(c, f)| kind.references_to(c, f)) {
            let rows: Vec<(String, bool, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT id, is_deleted, app_id FROM {} WHERE tenant_id = $1 AND {field} = $2 ORDER BY id FOR UPDATE",
                child.table
            )))
            .bind(&tenant)
            .bind(&id)
            .fetch_all(p.tx.conn())
            .await?;
            // An integration token may not see other apps' records: it
            // neither erases them nor learns how many there are.
            if let Some(app) = &p.app
                && rows
                    .iter()
                    .any(|(_, _, a)| a.as_deref() != Some(app.as_str()))
            {
                return Err(Error::Precondition {
                    reason: "HAS_CHILDREN",
                    message: format!(
                        "{} {id} has records that belong to it written by others than this app; \
                         a person's token can erase it",
                        kind.resource
                    ),
                });
            }
            let live = rows.iter().filter(|(_, d, _)| !d).count();
            if live > 0 && !p.cascade {
                return Err(Error::Precondition {
                    reason: "HAS_CHILDREN",
                    message: format!(
                        "{} {id} has {live} live {} record(s) ({}.{field}); erase them first, or pass cascade=true to erase them with it",
                        kind.resource, child.resource, child.resource
                    ),
                });
            }
            for (child_id, _, _) in rows {
                purge_one(p, child, child_id, false).await?;
            }
        }
        // Every other reference to it is cleared in the referring record,
        // all of a record's fields in one stamped update (one version).
        for referrer in crate::entities::kinds() {
            let (mut sets, mut matches) = (Vec::new(), Vec::new());
            for r in referrer.references {
                if !std::ptr::eq(r.target, kind)
                    || CHILDREN
                        .iter()
                        .any(|(c, f)| std::ptr::eq(*c, referrer) && *f == r.field)
                {
                    continue;
                }
                let list = referrer
                    .meta()
                    .field(r.field)
                    .is_some_and(|f| f.desc.is_list());
                if list {
                    sets.push(format!("{0} = array_remove({0}, $2)", r.field));
                    matches.push(format!("{} @> ARRAY[$2]::text[]", r.field));
                } else {
                    sets.push(format!(
                        "{0} = CASE WHEN {0} = $2 THEN NULL ELSE {0} END",
                        r.field
                    ));
                    matches.push(format!("{} = $2", r.field));
                }
            }
            for (holder, field, target) in JSON_COPIES {
                if std::ptr::eq(*holder, referrer) && std::ptr::eq(*target, kind) {
                    sets.push(format!("{field} = crm_scrub({field}, ARRAY[$2]::text[])"));
                    matches.push(format!("strpos({field}::text, $2) > 0"));
                }
            }
            if sets.is_empty() {
                continue;
            }
            let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "UPDATE {} SET {}, version = version + 1, updated_at = now(), updated_by = $3 \
                 WHERE tenant_id = $1 AND ({}) RETURNING id",
                referrer.table,
                sets.join(", "),
                matches.join(" OR ")
            )))
            .bind(&tenant)
            .bind(&id)
            .bind(&sub)
            .fetch_all(p.tx.conn())
            .await?;
            p.count("references", ids.len() as u64);
        }
        // Who may hold a copy of it: the kinds that name it (reference
        // fields, participants) and the kinds it names (a quote embeds its
        // line items) — now or in any earlier version.
        p.ids.push(id.clone());
        p.holders.extend(
            crate::entities::kinds()
                .filter(|k| k.references.iter().any(|r| std::ptr::eq(r.target, kind)))
                .map(|k| k.resource),
        );
        p.holders
            .extend(kind.references.iter().map(|r| r.target.resource));
        p.holders.extend(
            JSON_COPIES
                .iter()
                .filter(|(_, _, t)| std::ptr::eq(*t, kind))
                .map(|(h, _, _)| h.resource),
        );
        // Request roles cannot DELETE a record row; this function (migration
        // 0014) can, for the caller's tenant only. It returns the version
        // the row had when it went (children erased before it may have
        // changed it), which its `purged` event follows.
        let gone: Option<i32> = sqlx::query_scalar("SELECT crm_purge_row($1, $2)")
            .bind(kind.table)
            .bind(&id)
            .fetch_one(p.tx.conn())
            .await?;
        p.count("records", u64::from(gone.is_some()));
        let version = gone.unwrap_or(version);
        // Summaries and rollups of the records it counted in, as a delete
        // would have left them (it no longer exists to be counted).
        if !deleted {
            rollups(p.tx, kind, &row).await?;
        }
        let done =
            sqlx::query("DELETE FROM record_history WHERE tenant_id = $1 AND record_id = $2")
                .bind(&tenant)
                .bind(&id)
                .execute(p.tx.conn())
                .await?;
        p.count("history", done.rows_affected());
        let mut events = 0;
        for table in ["change_outbox", "change_events"] {
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET record = NULL \
                 WHERE tenant_id = $1 AND resource_type = $2 AND record_id = $3 AND record IS NOT NULL"
            )))
            .bind(&tenant)
            .bind(kind.resource)
            .bind(&id)
            .execute(p.tx.conn())
            .await?;
            events += done.rows_affected();
        }
        p.count("change_events", events);
        // The key stays (a retry is told the record was erased, instead of
        // writing it again); the response goes.
        let done = sqlx::query(
            "UPDATE idempotency_keys SET response = '\\x'::bytea \
             WHERE tenant_id = $1 AND position(convert_to($2, 'UTF8') IN response) > 0",
        )
        .bind(&tenant)
        .bind(&id)
        .execute(p.tx.conn())
        .await?;
        p.count("idempotent_responses", done.rows_affected());
        sqlx::query("SELECT crm_record_purged($1, $2, $3, $4, $5)")
            .bind(&tenant)
            .bind(kind.resource)
            .bind(&id)
            .bind(version + 1)
            .bind(app)
            .execute(p.tx.conn())
            .await?;
        Ok(())
    })
}

/// Takes the erased ids out of the history and change events of the other
/// records that hold or held a copy of them — found by scanning the
/// tenant's history and events of the kinds that can (after the rollups and
/// reference clearing above wrote their last entries).
async fn scrub_copies(p: &mut Purge<'_>) -> Result<(), Error> {
    let tenant = p.tx.caller().tenant_id().to_owned();
    let ids = std::mem::take(&mut p.ids);
    let kinds: Vec<&str> = std::mem::take(&mut p.holders).into_iter().collect();
    if ids.is_empty() || kinds.is_empty() {
        return Ok(());
    }
    let done = sqlx::query(
        "UPDATE record_history \
         SET old_values = crm_scrub(old_values, $3), new_values = crm_scrub(new_values, $3) \
         WHERE tenant_id = $1 AND resource_type = ANY ($2) \
           AND EXISTS (SELECT 1 FROM unnest($3::text[]) AS e (id) \
                       WHERE strpos(old_values::text, e.id) > 0 OR strpos(new_values::text, e.id) > 0)",
    )
    .bind(&tenant)
    .bind(&kinds)
    .bind(&ids)
    .execute(p.tx.conn())
    .await?;
    p.count("history_rewritten", done.rows_affected());
    let mut events = 0;
    for table in ["change_outbox", "change_events"] {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET record = crm_scrub(record, $3) \
             WHERE tenant_id = $1 AND resource_type = ANY ($2) AND record IS NOT NULL \
               AND EXISTS (SELECT 1 FROM unnest($3::text[]) AS e (id) \
                           WHERE strpos(record::text, e.id) > 0)"
        )))
        .bind(&tenant)
        .bind(&kinds)
        .bind(&ids)
        .execute(p.tx.conn())
        .await?;
        events += done.rows_affected();
    }
    p.count("change_events", events);
    Ok(())
}

/// Runs the entity's effects of deleting the stored `row` (rollups on
/// the records it counted in), now that the row is gone.
async fn rollups(tx: &mut TenantTx, kind: &'static Kind, row: &str) -> Result<(), Error> {
    match kind.resource {
        "account" => deleted::<Account>(tx, row).await,
        "contact" => deleted::<Contact>(tx, row).await,
        "deal" => deleted::<Deal>(tx, row).await,
        "activity" => deleted::<Activity>(tx, row).await,
        "quote" => deleted::<Quote>(tx, row).await,
        "line_item" => deleted::<LineItem>(tx, row).await,
        other => Err(Error::internal(anyhow::anyhow!("no record kind {other}"))),
    }
}

async fn deleted<E: Entity>(tx: &mut TenantTx, row: &str) -> Result<(), Error> {
    let old: E = from_row_json(row)?;
    let change = deletion(old, true, tx.caller(), &now());
    E::after_write(tx, &change).await
}

impl Kind {
    /// Whether `child`'s field `field` is a reference to this kind.
    fn references_to(&'static self, child: &Kind, field: &str) -> bool {
        child
            .references
            .iter()
            .any(|r| r.field == field && std::ptr::eq(r.target, self))
    }
}

/// Where a value survives: a table (with its row count) or the relay's
/// stream (`stream:CRM_CHANGES`, with its message count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survivor {
    /// The value looked for.
    pub value: String,
    /// The table, or `stream:CRM_CHANGES`.
    pub place: String,
    /// Rows or messages holding it.
    pub count: i64,
}

/// `crm purge-check`: looks for each of `values` (an erased record's
/// values: an email, a name, its id) in every row of every table of the
/// database at `owner_url` — the tenant's rows of tenant tables (row-level
/// security admits the owner to that tenant's), every row of the others —
/// and, with `nats_url`, in every relayed message of the tenant. Returns
/// where any survives (nothing: erased) and how many places were searched.
pub async fn survivors(
    owner_url: &str,
    tenant: &str,
    values: &[String],
    nats_url: Option<&str>,
) -> anyhow::Result<(Vec<Survivor>, usize)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(owner_url).await?;
    sqlx::query(
        "SELECT set_config('crm.tenant_id', $1, false), set_config('crm.app_id', '', false)",
    )
    .bind(tenant)
    .execute(&mut conn)
    .await?;
    // Every table holding rows (partitions included, their parents not),
    // and whether it has a tenant_id column.
    let tables: Vec<(String, bool)> = sqlx::query_as(
        "SELECT format('%I.%I', n.nspname, c.relname), \
                EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid \
                        AND a.attname = 'tenant_id' AND NOT a.attisdropped) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut found = Vec::new();
    for value in values.iter().filter(|v| !v.is_empty()) {
        for (table, tenanted) in &tables {
            let scope = if *tenanted {
                "x.tenant_id = $2 AND "
            } else {
                ""
            };
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} x WHERE {scope}strpos(x::text, $1) > 0"
            )))
            .bind(value)
            .bind(tenant)
            .fetch_one(&mut conn)
            .await?;
            if n > 0 {
                found.push(Survivor {
                    value: value.clone(),
                    place: table.clone(),
                    count: n,
                });
            }
        }
    }
    let mut places = tables.len();
    if let Some(url) = nats_url {
        let js = crate::changes::relay::jetstream(url).await?;
        for value in values.iter().filter(|v| !v.is_empty()) {
            let held = crate::changes::relay::holding(&js, tenant, &[value.as_str()]).await?;
            if !held.is_empty() {
                found.push(Survivor {
                    value: value.clone(),
                    place: format!("stream:{}", crate::changes::relay::STREAM),
                    count: held.len() as i64,
                });
            }
        }
        places += 1;
    }
    Ok((found, places))
}
