//! The record operations shared by every entity: get, list, create, update,
//! delete, undelete. Each write is one transaction holding the row lock,
//! the version check, the entity's rules and side effects, the reference
//! checks and the idempotency entry.

use chrono::Utc;
use prost_types::Timestamp;

use super::convert::{from_dynamic, from_row_json, to_dynamic, to_row_json};
use super::fields::{self, Checker, RecordId, article};
use super::idempotency::{self, Idempotency};
use super::page::{Cursor, PageKey};
use super::{Change, Entity, Kind, Op, mask};
use crate::auth::Caller;
use crate::custom::unique::{self as unique, Writes};
use crate::custom::{ResourceSchema, Schemas};
use crate::db::{Db, TenantTx, WriteContext};
use crate::error::{Error, invalid};
use crate::sql::list::{Plan, Scope, fetch_page};

/// Default page size.
pub const DEFAULT_PAGE_SIZE: i32 = 50;
/// Largest page size; larger requests are served this many.
pub const MAX_PAGE_SIZE: i32 = 1000;
/// Attempts of a write that hit a deadlock.
pub(super) const WRITE_ATTEMPTS: usize = 3;

/// The parameters of a List call.
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    /// Requested page size.
    pub page_size: i32,
    /// Previous page's token.
    pub page_token: String,
    /// AIP-160 filter.
    pub filter: String,
    /// Sort order.
    pub order_by: String,
    /// Free-text search.
    pub search: String,
    /// Include soft-deleted records.
    pub show_deleted: bool,
}

/// One page of records.
#[derive(Debug)]
pub struct Page<E> {
    /// The records.
    pub items: Vec<E>,
    /// Token of the next page, empty on the last.
    pub next_page_token: String,
}

/// The operations, over the request pool.
#[derive(Clone)]
pub struct Store {
    db: Db,
    pages: PageKey,
    hub: Option<std::sync::Arc<crate::changes::Hub>>,
    schemas: std::sync::Arc<Schemas>,
}

/// A write's answer, as its idempotency entry stores it (a retry with the
/// same `request_id` gets it back).
pub trait Replay: Sized {
    /// The answer as bytes.
    fn to_bytes(&self) -> Vec<u8>;
    /// The answer of `to_bytes`.
    fn from_bytes(bytes: &[u8]) -> Result<Self, Error>;
}

impl<E: Entity> Replay for E {
    fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        E::decode(bytes).map_err(Error::internal)
    }
}

/// The current time, at the microsecond precision Postgres stores.
pub fn now() -> Timestamp {
    let now = Utc::now();
    // Postgres keeps microseconds; stamp what will be stored.
    Timestamp {
        seconds: now.timestamp(),
        nanos: (now.timestamp_subsec_micros() * 1000) as i32,
    }
}

/// The canonical id of `E` in `value`, or INVALID_ARGUMENT on `field`.
pub fn parse_id<E: Entity>(field: &str, value: &str) -> Result<String, Error> {
    parse_record_id::<E>(field, value).map(RecordId::into_string)
}

/// [`parse_id`], typed.
pub fn parse_record_id<E: Entity>(field: &str, value: &str) -> Result<RecordId, Error> {
    parse_kind_id(E::kind(), field, value)
}

/// [`parse_record_id`] for a kind known only at run time.
pub fn parse_kind_id(kind: &Kind, field: &str, value: &str) -> Result<RecordId, Error> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    RecordId::parse(kind, value).ok_or_else(|| {
        invalid(
            field,
            format!(
                "must be {} id ({}_ followed by a 26-character ULID)",
                article(kind.resource),
                kind.prefix
            ),
        )
    })
}

pub(super) fn not_found<E: Entity>(id: &str) -> Error {
    Error::NotFound {
        resource: E::kind().resource,
        id: id.to_owned(),
    }
}

/// What a stored money or quantity value (given or computed) must be.
pub const NUMBER_RULE: &str = "must be finite, below 10^15 in magnitude and have at most 15 significant digits (computed values too)";

/// Maps a database error of a write on `E`'s table: named unique and foreign
/// key constraints (`<table>_<field>_key`, `<table>_<field>_fkey`) become
/// errors on that field; deadlocks become [`Error::Contention`].
pub(super) fn db_error<E: Entity>(e: sqlx::Error) -> Error {
    let kind = E::kind();
    if let sqlx::Error::Database(d) = &e {
        let code = d.code();
        if matches!(code.as_deref(), Some("40P01" | "40001")) {
            return Error::Contention;
        }
        let field = |suffix: &str| {
            d.constraint()
                .and_then(|c| c.strip_prefix(kind.table))
                .and_then(|c| c.strip_prefix('_'))
                .and_then(|c| c.strip_suffix(suffix))
                .filter(|f| kind.meta().field(f).is_some())
                .map(|f| format!("{}.{f}", kind.resource))
        };
        match code.as_deref() {
            Some("23514") => {
                // <table>_<field>_representable: a computed number (a line
                // total) beyond what reads back exactly.
                if let Some(field) = field("_representable") {
                    return invalid(field, NUMBER_RULE);
                }
                if let Some(field) = field("_check") {
                    return invalid(field, "is out of range");
                }
            }
            Some("23502") => {
                let column = d
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|pg| pg.column())
                    .filter(|c| kind.meta().field(c).is_some());
                if let Some(column) = column {
                    return invalid(format!("{}.{column}", kind.resource), "is required");
                }
            }
            Some("23505") => {
                if let Some(field) = field("_key") {
                    return Error::Duplicate {
                        resource: kind.resource,
                        field,
                        also: Vec::new(),
                    };
                }
            }
            Some("23503") => {
                if let Some(field) = field("_fkey") {
                    return invalid(field, "must name an existing record of this tenant");
                }
            }
            _ => {}
        }
    }
    Error::from(e)
}

/// Reads one row of `E` visible to the transaction's caller.
pub async fn fetch<E: Entity>(tx: &mut TenantTx, id: &str) -> Result<Option<E>, Error> {
    let caller = tx.caller().clone();
    let row: Option<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(E::kind().meta().sql.select_one.clone()))
            .bind(caller.tenant_id())
            .bind(caller.app_id())
            .bind(id)
            .fetch_optional(tx.conn())
            .await?;
    row.map(|json| from_row_json(&json)).transpose()
}

/// Reads the row `id` for a write that names `expected` as its version (0:
/// any), locking it if it is at that version. A row returned unlocked is at
/// another version (versions only grow), so the caller's version check fails
/// it after its other checks. NOT_FOUND if there is none.
async fn fetch_for_write<E: Entity>(
    tx: &mut TenantTx,
    id: &str,
    expected: i32,
) -> Result<E, Error> {
    let caller = tx.caller().clone();
    let row: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(
        E::kind().meta().sql.select_one_for_update.clone(),
    ))
    .bind(caller.tenant_id())
    .bind(caller.app_id())
    .bind(id)
    .bind(expected)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(json) = row {
        return from_row_json(&json);
    }
    fetch::<E>(tx, id).await?.ok_or_else(|| not_found::<E>(id))
}

/// Writes `rec` as a new row of `E` and returns the stored row.
pub async fn insert<E: Entity>(tx: &mut TenantTx, rec: &E) -> Result<E, Error> {
    let caller = tx.caller().clone();
    let row: Option<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(E::kind().meta().sql.insert.clone()))
            .bind(caller.tenant_id())
            .bind(caller.app_id())
            .bind(to_row_json(rec))
            .fetch_optional(tx.conn())
            .await
            .map_err(db_error::<E>)?;
    let row = row.ok_or_else(|| {
        Error::internal(anyhow::anyhow!(
            "insert into {} matched no scope",
            E::kind().table
        ))
    })?;
    from_row_json(&row)
}

/// Overwrites the stored row of `rec` and returns it.
pub async fn write<E: Entity>(tx: &mut TenantTx, rec: &E) -> Result<E, Error> {
    let caller = tx.caller().clone();
    let row: Option<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(E::kind().meta().sql.update.clone()))
            .bind(caller.tenant_id())
            .bind(caller.app_id())
            .bind(rec.id())
            .bind(to_row_json(rec))
            .fetch_optional(tx.conn())
            .await
            .map_err(db_error::<E>)?;
    from_row_json(&row.ok_or_else(|| not_found::<E>(rec.id()))?)
}

/// The ids a record's reference fields hold, in the order of its kind's
/// `references`: whether the field is a list, and its ids. Read from the
/// dynamic form the generic rules checked, so that the reference check needs
/// no conversion of its own.
#[derive(Clone, Debug, Default)]
pub(super) struct RefIds(Vec<(bool, Vec<String>)>);

impl RefIds {
    fn of<E: Entity>(msg: &prost_reflect::DynamicMessage) -> Self {
        RefIds(
            E::kind()
                .references
                .iter()
                .map(|r| match msg.get_field_by_name(r.field).as_deref() {
                    Some(prost_reflect::Value::String(s)) if !s.is_empty() => {
                        (false, vec![s.clone()])
                    }
                    Some(prost_reflect::Value::List(items)) => (
                        true,
                        items
                            .iter()
                            .filter_map(|i| i.as_str().map(str::to_owned))
                            .collect(),
                    ),
                    _ => (false, vec![]),
                })
                .collect(),
        )
    }
}

/// A change the generic and entity rules have checked, with the reference
/// ids of its new record and of the stored one.
#[derive(Clone)]
pub(super) struct Draft<E> {
    pub change: Change<E>,
    refs: RefIds,
    old_refs: RefIds,
    /// The unique custom-field values it sets.
    pub unique: Writes,
}

/// Checks that every reference field of `draft`'s new record whose value
/// changed names a live record of the right kind that the caller can see,
/// reporting on `v` (ids of the wrong format were reported by [`prepare`]; a
/// list over its size limit was reported too, and is not looked up).
async fn check_references<E: Entity>(
    tx: &mut TenantTx,
    draft: &Draft<E>,
    v: &mut Checker,
) -> Result<(), Error> {
    check_references_many(tx, std::slice::from_ref(draft), std::slice::from_mut(v)).await
}

/// [`check_references`] for the drafts of a batch, each reporting on its
/// own checker: one query per reference field for the whole batch.
pub(super) async fn check_references_many<E: Entity>(
    tx: &mut TenantTx,
    drafts: &[Draft<E>],
    checkers: &mut [Checker],
) -> Result<(), Error> {
    use std::collections::HashSet;
    let kind = E::kind();
    if kind.references.is_empty() || drafts.is_empty() {
        return Ok(());
    }
    for (k, r) in kind.references.iter().enumerate() {
        // Per item: whether the field is a list, its ids, and the ids it
        // held before (those need no check).
        let mut items = Vec::with_capacity(drafts.len());
        let mut wanted: HashSet<&str> = HashSet::new();
        for d in drafts {
            let (list, now) = &d.refs.0[k];
            if now.len() > fields::MAX_LIST_LEN {
                items.push((*list, &[][..], HashSet::new()));
                continue;
            }
            let before: HashSet<&str> = d
                .old_refs
                .0
                .get(k)
                .map(|(_, ids)| ids.iter().map(String::as_str).collect())
                .unwrap_or_default();
            wanted.extend(
                now.iter()
                    .map(String::as_str)
                    .filter(|id| !before.contains(id) && fields::is_id_of(r.target, id)),
            );
            items.push((*list, now.as_slice(), before));
        }
        if wanted.is_empty() {
            continue;
        }
        let wanted: Vec<&str> = wanted.into_iter().collect();
        let caller = tx.caller().clone();
        let found: HashSet<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(r.target.meta().sql.live_ids.clone()))
                .bind(caller.tenant_id())
                .bind(caller.app_id())
                .bind(&wanted)
                .fetch_all(tx.conn())
                .await?
                .into_iter()
                .collect();
        for ((list, now, before), v) in items.iter().zip(checkers.iter_mut()) {
            for (i, id) in now.iter().enumerate() {
                if before.contains(id.as_str())
                    || found.contains(id)
                    || !fields::is_id_of(r.target, id)
                {
                    continue;
                }
                let field = if *list {
                    format!("{}[{i}]", r.field)
                } else {
                    r.field.to_owned()
                };
                v.add(
                    &field,
                    format!(
                        "must name an existing {} of this tenant ({id} was not found)",
                        r.target.resource
                    ),
                );
            }
        }
    }
    Ok(())
}

/// The record `msg` holds about to be written, normalized and checked:
/// generic rules, then the entity's own (`stamp` completes the typed record
/// first, so that rules may use its id and times). Violations are reported
/// on `v`, so that the reference checks can add theirs and every problem is
/// reported at once. The generic rules work on the dynamic form, the
/// entity's on the typed one: one conversion to the typed record, and one
/// back after the entity's rules (which may complete it), whose result the
/// generic validation and the reference check share. Returns the record and
/// its reference ids.
fn prepare<E: Entity>(
    mut msg: prost_reflect::DynamicMessage,
    old: Option<(&E, &prost_reflect::DynamicMessage)>,
    schema: &ResourceSchema,
    stamp: impl FnOnce(&mut E),
    v: &mut Checker,
) -> (E, RefIds, Writes) {
    let kind = E::kind();
    let meta = kind.meta();
    fields::normalize(&mut msg, meta);
    // The tenant's custom-field definitions (nothing to do without any).
    let unique = if schema.is_empty() {
        Writes::default()
    } else {
        unique::apply(schema, &mut msg, old.map(|(_, m)| m), v)
    };
    let mut rec: E = from_dynamic(&msg);
    stamp(&mut rec);
    rec.check(old.map(|(o, _)| o), v);
    let checked = to_dynamic(&rec);
    fields::validate(&checked, meta, v);
    (rec, RefIds::of::<E>(&checked), unique)
}

/// Refuses a draft whose unique custom-field values a live record holds;
/// `prefix` starts its paths.
async fn check_unique<E: Entity>(
    tx: &mut TenantTx,
    draft: &Draft<E>,
    prefix: String,
) -> Result<(), Error> {
    if draft.unique.claims.is_empty() {
        return Ok(());
    }
    let item = unique::Item {
        id: draft.change.new.id(),
        writes: &draft.unique,
        prefix,
    };
    unique::check(tx, E::kind().table, E::kind().resource, &[item]).await
}

/// Runs the entity's hooks around storing `change.new` (inserted on
/// create, overwritten otherwise) and returns the stored record.
async fn store_change<E: Entity>(tx: &mut TenantTx, mut change: Change<E>) -> Result<E, Error> {
    E::before_write(tx, &mut change).await?;
    change.new = if change.op == Op::Create {
        insert(tx, &change.new).await?
    } else {
        write(tx, &change.new).await?
    };
    E::after_write(tx, &change).await?;
    Ok(change.new)
}

/// A new record from a create request's record (in its dynamic form `msg`):
/// output-only fields cleared, normalized, the header stamped for `caller`
/// at `at`, then checked (violations on `v`). A record over the size limits is refused at once,
/// before any work proportional to it.
pub(super) fn new_record<E: Entity>(
    caller: &Caller,
    mut msg: prost_reflect::DynamicMessage,
    at: Timestamp,
    schema: &ResourceSchema,
    v: &mut Checker,
) -> Result<Draft<E>, Error> {
    let kind = E::kind();
    let meta = kind.meta();
    v.absorb(fields::precheck(&msg, meta, v.prefix())?);
    for f in meta
        .fields
        .iter()
        .filter(|f| !f.writable() && f.name != "version")
    {
        msg.clear_field(&f.desc);
    }
    // Stamped before the entity's rules, so that they may use the id and
    // creation time.
    let (new, refs, unique) = prepare::<E>(
        msg,
        None,
        schema,
        |rec| {
            let h = rec.header();
            *h.id = format!("{}_{}", kind.prefix, ulid::Ulid::generate());
            *h.tenant_id = caller.tenant_id().to_owned();
            *h.app_id = caller.app_id().map(str::to_owned);
            *h.created_at = Some(at);
            *h.updated_at = Some(at);
            *h.created_by = caller.sub().to_owned();
            *h.updated_by = caller.sub().to_owned();
            *h.is_deleted = false;
            *h.deleted_at = None;
            *h.deleted_by = None;
            *h.schema_version = 1;
            *h.version = 1;
        },
        v,
    );
    Ok(Draft {
        change: Change {
            op: Op::Create,
            old: None,
            new,
        },
        refs,
        old_refs: RefIds::default(),
        unique,
    })
}

/// `old` with the fields `paths` of `patch` applied, normalized, checked
/// (violations on `v`, immutable fields included) and stamped as a change by
/// `caller` at `at`.
pub(super) fn merge<E: Entity>(
    old: E,
    patch: &prost_reflect::DynamicMessage,
    paths: &[mask::Path],
    caller: &Caller,
    at: &Timestamp,
    schema: &ResourceSchema,
    v: &mut Checker,
) -> Merged<E> {
    let meta = E::kind().meta();
    let old_msg = to_dynamic(&old);
    let merged = mask::apply(meta, &old_msg, patch, paths);
    for f in meta.fields.iter().filter(|f| f.behavior.immutable) {
        if merged.get_field(&f.desc) != old_msg.get_field(&f.desc) {
            v.add(&f.name, "cannot be changed");
        }
    }
    for f in meta.fields.iter().filter(|f| f.keep_set) {
        let blank = |m: &prost_reflect::DynamicMessage| {
            m.get_field(&f.desc)
                .as_str()
                .is_none_or(|s| s.trim_ascii().is_empty())
        };
        if blank(&merged) && !blank(&old_msg) {
            v.add(&f.name, "cannot be cleared once set");
        }
    }
    let (mut new, refs, unique) = prepare::<E>(merged, Some((&old, &old_msg)), schema, |_| {}, v);
    if new == old && v.is_empty() {
        return Merged::Unchanged(old);
    }
    stamp_change(&mut new, caller, at, old.version());
    Merged::Changed(Draft {
        change: Change {
            op: Op::Update,
            old: Some(old),
            new,
        },
        refs,
        old_refs: RefIds::of::<E>(&old_msg),
        unique,
    })
}

/// What [`merge`] makes of an update.
pub(super) enum Merged<E> {
    /// Nothing would change: no write, no new version.
    Unchanged(E),
    /// The checked change.
    Changed(Draft<E>),
}

/// The change that soft-deletes (`deleted`) or restores `old`, by `caller`
/// at `at`.
pub(super) fn deletion<E: Entity>(
    old: E,
    deleted: bool,
    caller: &Caller,
    at: &Timestamp,
) -> Change<E> {
    let mut new = old.clone();
    {
        let h = new.header();
        *h.is_deleted = deleted;
        *h.deleted_at = deleted.then_some(*at);
        *h.deleted_by = deleted.then(|| caller.sub().to_owned());
    }
    stamp_change(&mut new, caller, at, old.version());
    Change {
        op: if deleted { Op::Delete } else { Op::Undelete },
        old: Some(old),
        new,
    }
}

pub(super) fn check_version<E: Entity>(stored: &E, expected: i32) -> Result<(), Error> {
    if expected != 0 && expected != stored.version() {
        return Err(Error::VersionMismatch {
            resource: E::kind().resource,
            id: stored.id().to_owned(),
            expected,
            current: stored.version(),
        });
    }
    Ok(())
}

pub(super) fn stamp_change<E: Entity>(
    rec: &mut E,
    caller: &Caller,
    at: &Timestamp,
    old_version: i32,
) {
    let h = rec.header();
    *h.updated_at = Some(*at);
    *h.updated_by = caller.sub().to_owned();
    *h.version = old_version + 1;
}

impl Store {
    /// Operations over `db`, signing page tokens with `pages`.
    pub fn new(db: Db, pages: PageKey) -> Self {
        Self {
            db,
            pages,
            hub: None,
            schemas: Schemas::new(),
        }
    }

    /// The custom-field definitions the writes check (shared with the
    /// definitions' service and its change listener).
    pub fn schemas(&self) -> &std::sync::Arc<Schemas> {
        &self.schemas
    }

    /// The caller's tenant's custom-field definitions of `E`.
    pub(super) async fn schema<E: Entity>(
        &self,
        caller: &Caller,
    ) -> Result<std::sync::Arc<ResourceSchema>, Error> {
        let kind = E::kind();
        if kind.meta().field("custom_fields").is_none() {
            return Ok(crate::custom::values::empty());
        }
        self.schemas.of(&self.db, caller, kind.resource).await
    }

    /// The same store, telling `hub` of every write it commits (the change
    /// feed's wake-ups).
    pub fn with_changes(mut self, hub: std::sync::Arc<crate::changes::Hub>) -> Self {
        self.hub = Some(hub);
        self
    }

    /// Tells the change feed's wake-ups of a commit for `tenant` made
    /// outside [`Store::write_tx`].
    pub(super) fn committed(&self, tenant: &str) {
        if let Some(hub) = &self.hub {
            hub.committed(tenant);
        }
    }

    /// The key page tokens are signed with.
    pub fn pages(&self) -> &PageKey {
        &self.pages
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Runs a write transaction, retrying it when it lost a deadlock.
    pub(super) async fn write_tx<R, F, Fut>(
        &self,
        caller: &Caller,
        idem: Option<&Idempotency>,
        mut body: F,
    ) -> Result<R, Error>
    where
        R: Replay,
        F: FnMut(TenantTx) -> Fut,
        Fut: Future<Output = Result<(R, TenantTx), Error>>,
    {
        self.db.failpoints().pause("before_db").await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let write = WriteContext::new(idem.map(|k| k.request_id));
                let mut tx = self.db.begin_write(caller, &write).await?;
                if let Some(key) = idem
                    && let Some(bytes) = idempotency::claim(&mut tx, key).await?
                {
                    tx.commit().await?;
                    return R::from_bytes(&bytes);
                }
                let (rec, mut tx) = body(tx).await?;
                if let Some(key) = idem {
                    idempotency::record(&mut tx, key, &rec.to_bytes()).await?;
                }
                tx.commit().await?;
                if let Some(hub) = &self.hub {
                    hub.committed(caller.tenant_id());
                }
                self.db.failpoints().pause("after_commit").await;
                Ok(rec)
            }
            .await;
            match result {
                Err(Error::Contention) if attempt < WRITE_ATTEMPTS => continue,
                other => return other,
            }
        }
    }

    /// Returns the record `id` (soft-deleted ones too).
    pub async fn get<E: Entity>(&self, caller: &Caller, id: &str) -> Result<E, Error> {
        let id = parse_record_id::<E>("id", id)?;
        self.db.failpoints().pause("before_db").await;
        let row = self
            .db
            .read_one(caller, &E::kind().meta().sql.get_name, &id)
            .await?;
        row.map(|json| from_row_json::<E>(&json))
            .transpose()?
            .ok_or_else(|| not_found::<E>(id.as_str()))
    }

    /// Lists the caller's records: filtered, searched, ordered, one keyset
    /// page at a time (see [`crate::sql::list`]).
    pub async fn list<E: Entity>(&self, caller: &Caller, p: &ListParams) -> Result<Page<E>, Error> {
        let kind = E::kind();
        let meta = kind.meta();
        if p.page_size < 0 {
            return Err(invalid("page_size", "must not be negative"));
        }
        let size = match p.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let schema = self.schema::<E>(caller).await?;
        let plan = Plan::new(
            meta,
            schema,
            &p.filter,
            &p.order_by,
            &p.search,
            p.show_deleted,
        )?;
        let show_deleted = if p.show_deleted { "1" } else { "0" };
        // A token names the types of its custom sort keys: a key defined
        // again with another type does not take it.
        let sorted_as = plan.custom_types();
        let binding = [
            caller.tenant_id(),
            caller.app_id().unwrap_or(""),
            kind.table,
            p.filter.as_str(),
            p.order_by.as_str(),
            p.search.as_str(),
            show_deleted,
            sorted_as.as_str(),
        ];
        let cursor = if p.page_token.is_empty() {
            None
        } else {
            Some(self.pages.decode(&binding, &p.page_token)?)
        };
        let scope = Scope {
            meta,
            table: kind.table,
            tenant: caller.tenant_id(),
            app: caller.app_id(),
            show_deleted: p.show_deleted,
        };

        self.db.failpoints().pause("before_db").await;
        let mut tx = self.db.begin(caller).await?;
        let rows = fetch_page(
            tx.conn(),
            &scope,
            &plan,
            cursor.as_ref().map(|c| c.keys.as_slice()),
            i64::from(size) + 1,
            None,
        )
        .await?;
        tx.end_read();
        let more = rows.len() > size as usize;
        let mut items = Vec::with_capacity(rows.len().min(size as usize));
        let mut last_keys = None;
        for row in rows.into_iter().take(size as usize) {
            items.push(from_row_json::<E>(&row.json)?);
            last_keys = Some(row.keys);
        }
        let next_page_token = match last_keys {
            Some(keys) if more => self.pages.encode(&binding, &Cursor { keys }),
            _ => String::new(),
        };
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Creates a record. Output-only fields of `rec` are ignored.
    pub async fn create<E: Entity>(
        &self,
        caller: &Caller,
        rec: E,
        idem: Option<Idempotency>,
    ) -> Result<E, Error> {
        let kind = E::kind();
        let mut v = Checker::new(kind.resource);
        let schema = self.schema::<E>(caller).await?;
        let draft: Draft<E> = new_record(caller, to_dynamic(&rec), now(), &schema, &mut v)?;
        let violations = v.into_violations();
        self.write_tx(caller, idem.as_ref(), |mut tx| {
            let (draft, violations) = (draft.clone(), violations.clone());
            async move {
                let mut v = Checker::with(kind.resource, violations);
                check_references(&mut tx, &draft, &mut v).await?;
                v.into_violations().into_result()?;
                check_unique(&mut tx, &draft, kind.resource.to_owned()).await?;
                let stored = store_change(&mut tx, draft.change).await?;
                Ok((stored, tx))
            }
        })
        .await
    }

    /// Updates the record named by `patch.id`: the fields in `mask` (see
    /// [`mask`]), checked against `patch.version` when non-zero.
    pub async fn update<E: Entity>(
        &self,
        caller: &Caller,
        patch: E,
        update_mask: &[String],
        idem: Option<Idempotency>,
    ) -> Result<E, Error> {
        let kind = E::kind();
        let meta = kind.meta();
        let id = parse_id::<E>(&format!("{}.id", kind.resource), patch.id())?;
        let patch_msg = to_dynamic(&patch);
        let raw = fields::precheck(&patch_msg, meta, kind.resource)?;
        let paths = mask::resolve(meta, &patch_msg, update_mask)?;
        let expected = patch.version();
        let schema = self.schema::<E>(caller).await?;
        self.write_tx(caller, idem.as_ref(), |mut tx| {
            let (id, patch_msg, paths, raw) =
                (id.clone(), patch_msg.clone(), paths.clone(), raw.clone());
            let schema = schema.clone();
            async move {
                let old = fetch_for_write::<E>(&mut tx, &id, expected).await?;
                if old.is_deleted() {
                    return Err(Error::Deleted {
                        resource: kind.resource,
                        id,
                    });
                }
                check_version(&old, expected)?;
                let mut v = Checker::with(kind.resource, raw);
                let caller = tx.caller().clone();
                let draft = match merge(old, &patch_msg, &paths, &caller, &now(), &schema, &mut v) {
                    Merged::Unchanged(old) => return Ok((old, tx)),
                    Merged::Changed(draft) => draft,
                };
                check_references(&mut tx, &draft, &mut v).await?;
                v.into_violations().into_result()?;
                check_unique(&mut tx, &draft, kind.resource.to_owned()).await?;
                let stored = store_change(&mut tx, draft.change).await?;
                Ok((stored, tx))
            }
        })
        .await
    }

    /// Soft-deletes the record `id`.
    pub async fn delete<E: Entity>(
        &self,
        caller: &Caller,
        id: &str,
        version: i32,
        idem: Option<Idempotency>,
    ) -> Result<E, Error> {
        self.set_deleted(caller, id, version, idem, true).await
    }

    /// Restores the soft-deleted record `id`.
    pub async fn undelete<E: Entity>(
        &self,
        caller: &Caller,
        id: &str,
        version: i32,
    ) -> Result<E, Error> {
        self.set_deleted(caller, id, version, None, false).await
    }

    /// Soft-deletes (`deleted`) or restores the record `id`.
    async fn set_deleted<E: Entity>(
        &self,
        caller: &Caller,
        id: &str,
        version: i32,
        idem: Option<Idempotency>,
        deleted: bool,
    ) -> Result<E, Error> {
        let id = parse_id::<E>("id", id)?;
        // Undeleting takes the record's unique custom-field values back.
        let schema = if deleted {
            crate::custom::values::empty()
        } else {
            self.schema::<E>(caller).await?
        };
        self.write_tx(caller, idem.as_ref(), |mut tx| {
            let id = id.clone();
            let schema = schema.clone();
            async move {
                let old = fetch_for_write::<E>(&mut tx, &id, version).await?;
                let resource = E::kind().resource;
                match (deleted, old.is_deleted()) {
                    (true, true) => return Err(Error::Deleted { resource, id }),
                    (false, false) => return Err(Error::NotDeleted { resource, id }),
                    _ => {}
                }
                check_version(&old, version)?;
                if schema.iter().any(|d| d.unique) {
                    let held = unique::held(&schema, &to_dynamic(&old));
                    let item = unique::Item {
                        id: old.id(),
                        writes: &held,
                        prefix: E::kind().resource.to_owned(),
                    };
                    unique::check(&mut tx, E::kind().table, E::kind().resource, &[item]).await?;
                }
                let change = deletion(old, deleted, tx.caller(), &now());
                let stored = store_change(&mut tx, change).await?;
                Ok((stored, tx))
            }
        })
        .await
    }
}
