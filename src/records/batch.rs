//! Batch operations and upserts (AIP-231/233/234/235): up to [`MAX_BATCH`]
//! records per call, in one transaction, all or none. A rejected batch
//! reports every violation of every item at once, each path starting with
//! its item (`requests[3].account.website`).
//!
//! Set-based: whatever the batch size, a batch costs a fixed number of
//! statements — one lock of the rows it changes (in id order, so batches
//! over overlapping records never deadlock), one lookup per reference field,
//! one `INSERT` of every created row and one `UPDATE` of every changed one
//! (`jsonb_populate_recordset`), plus the entities' batch hooks
//! ([`Entity::before_batch`], [`Entity::after_batch`]), which run side
//! effects once per batch.
//!
//! Upserts find records by `external_id` under a row lock. Two upserts that
//! both create the same `external_id` meet at its unique index: the later
//! insert waits for the earlier transaction, fails on its commit, and the
//! whole transaction is retried, now finding (and updating) the record — two
//! records are never created, and the loser never sees an error unless it
//! keeps losing (then `ABORTED`, never a 5xx).

use std::collections::{HashMap, HashSet};

use prost_reflect::DynamicMessage;

use super::convert::{from_row_json, to_dynamic, to_row_json};
use super::fields::{self, Checker, canonical_id};
use super::idempotency::Idempotency;
use super::store::{
    Draft, Merged, Replay, check_references_many, check_version, db_error, deletion, merge,
    new_record, not_found, now, parse_id,
};
use super::{Change, Entity, Op, Store, mask};
use crate::auth::Caller;
use crate::db::TenantTx;
use crate::error::{Error, Violations, invalid};

/// Most items in one batch.
pub const MAX_BATCH: usize = 1000;

/// The answer of a batch write: the records in request order and, for
/// upserts, whether each was created.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch<E> {
    /// The records as stored.
    pub items: Vec<E>,
    /// Parallel to `items` for upserts (empty otherwise).
    pub created: Vec<bool>,
}

impl<E: Entity> Replay for Batch<E> {
    fn to_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        prost::encoding::encode_varint(self.items.len() as u64, &mut buf);
        for item in &self.items {
            item.encode_length_delimited(&mut buf)
                .expect("a Vec has room");
        }
        buf.extend(self.created.iter().map(|&c| u8::from(c)));
        buf
    }

    fn from_bytes(mut bytes: &[u8]) -> Result<Self, Error> {
        let n = prost::encoding::decode_varint(&mut bytes).map_err(Error::internal)? as usize;
        let mut items = Vec::with_capacity(n.min(MAX_BATCH));
        for _ in 0..n {
            items.push(E::decode_length_delimited(&mut bytes).map_err(Error::internal)?);
        }
        let created = bytes.iter().map(|&b| b != 0).collect();
        Ok(Self { items, created })
    }
}

/// `INVALID_ARGUMENT` on `field` when a batch holds more than [`MAX_BATCH`]
/// items (checked before anything is done per item).
pub fn check_count(field: &str, n: usize) -> Result<(), Error> {
    if n > MAX_BATCH {
        return Err(invalid(
            field,
            format!("must hold at most {MAX_BATCH} items ({n} given)"),
        ));
    }
    Ok(())
}

/// The path prefix of item `i` of `requests`.
pub fn item(i: usize) -> String {
    format!("requests[{i}].")
}

/// Adds an error of one item to the batch's violations, or passes on an
/// error that is not a validation error.
fn collect(all: &mut Violations, result: Result<(), Error>) -> Result<(), Error> {
    match result {
        Ok(()) => Ok(()),
        Err(Error::Invalid(v)) => {
            all.extend_prefixed("", v);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Reports each value of `keys` (item index, path, value) that an earlier
/// item already has.
fn duplicates<'a>(
    keys: impl Iterator<Item = (usize, String, &'a str)>,
    what: &str,
    all: &mut Violations,
) {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, path, key) in keys {
        if key.is_empty() {
            continue;
        }
        match first.get(key) {
            Some(j) => all.add(
                path,
                format!("{what} {key:?} is also in item {j} of this batch"),
            ),
            None => {
                first.insert(key, i);
            }
        }
    }
}

/// `ALREADY_EXISTS` naming every one of `items` (path, external id) whose
/// external id a live record of the caller's namespace holds.
async fn external_id_clashes<E: Entity>(
    tx: &mut TenantTx,
    items: &[(String, String)],
) -> Result<(), Error> {
    if items.is_empty() {
        return Ok(());
    }
    let caller = tx.caller().clone();
    let wanted: Vec<String> = items.iter().map(|(_, k)| k.clone()).collect();
    let taken: HashSet<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(
        E::kind().meta().sql.taken_external_ids.clone(),
    ))
    .bind(caller.tenant_id())
    .bind(caller.app_id())
    .bind(&wanted)
    .fetch_all(tx.conn())
    .await?
    .into_iter()
    .collect();
    let mut clashes = items
        .iter()
        .filter(|(_, k)| taken.contains(k))
        .map(|(path, _)| path.clone());
    match clashes.next() {
        Some(field) => Err(Error::Duplicate {
            resource: E::kind().resource,
            field,
            also: clashes.collect(),
        }),
        None => Ok(()),
    }
}

/// Reads the rows `ids` visible to the caller, locking them in id order.
async fn lock_rows<E: Entity>(
    tx: &mut TenantTx,
    ids: &[String],
) -> Result<HashMap<String, E>, Error> {
    let caller = tx.caller().clone();
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(
        E::kind().meta().sql.select_many_for_update.clone(),
    ))
    .bind(caller.tenant_id())
    .bind(caller.app_id())
    .bind(ids)
    .fetch_all(tx.conn())
    .await?;
    by_id(&rows)
}

fn by_id<E: Entity>(rows: &[String]) -> Result<HashMap<String, E>, Error> {
    rows.iter()
        .map(|json| from_row_json::<E>(json).map(|r| (r.id().to_owned(), r)))
        .collect()
}

/// Stores the changes of a batch: the entity's batch hooks around one
/// `INSERT` of the created rows and one `UPDATE` of the others. Returns the
/// changes with `new` as stored.
async fn store_batch<E: Entity>(
    tx: &mut TenantTx,
    mut changes: Vec<Change<E>>,
    prefixes: &[String],
) -> Result<Vec<Change<E>>, Error> {
    if changes.is_empty() {
        return Ok(changes);
    }
    E::before_batch(tx, &mut changes, prefixes).await?;
    let sql = &E::kind().meta().sql;
    let caller = tx.caller().clone();
    let mut stored: HashMap<String, E> = HashMap::with_capacity(changes.len());
    for (creates, statement) in [(true, &sql.insert_many), (false, &sql.update_many)] {
        let mut rows: Vec<(&str, String)> = changes
            .iter()
            .filter(|c| (c.op == Op::Create) == creates)
            .map(|c| (c.new.external_id(), to_row_json(&c.new)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        // New rows go in in external_id order: concurrent upserts creating
        // the same keys then meet at the unique index in one order — the
        // later waits for the earlier and retries — instead of deadlocking
        // (each deadlock costs deadlock_timeout before it is broken). The
        // stored rows are matched back by id.
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let rows: Vec<&str> = rows.iter().map(|(_, r)| r.as_str()).collect();
        let json = format!("[{}]", rows.join(","));
        let out: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(statement.clone()))
            .bind(caller.tenant_id())
            .bind(caller.app_id())
            .bind(json)
            .fetch_all(tx.conn())
            .await
            .map_err(db_error::<E>)?;
        stored.extend(by_id::<E>(&out)?);
    }
    for change in &mut changes {
        change.new = stored.remove(change.new.id()).ok_or_else(|| {
            Error::internal(anyhow::anyhow!(
                "a batch write of {} did not store {}",
                E::kind().table,
                change.new.id()
            ))
        })?;
    }
    E::after_batch(tx, &changes, prefixes).await?;
    Ok(changes)
}

/// One item of a batch update or upsert, checked before the transaction.
#[derive(Clone)]
struct Patch {
    /// The item's path prefix (`requests[3].`, or empty for a single call).
    prefix: String,
    /// The id it names (canonical), if any.
    id: Option<String>,
    /// Its external id (trimmed), for upserts.
    external_id: String,
    /// The version to check (0: none).
    version: i32,
    /// The patch as a dynamic message.
    msg: DynamicMessage,
    /// Its resolved update mask.
    paths: Vec<mask::Path>,
    /// The violations of its fields as sent, reported with the rest.
    raw: Violations,
}

/// Checks an update or upsert item's sizes and mask before any other work.
fn patch<E: Entity>(prefix: String, rec: &E, update_mask: &[String]) -> Result<Patch, Error> {
    let kind = E::kind();
    let meta = kind.meta();
    let msg = to_dynamic(rec);
    let raw = fields::precheck(&msg, meta, &format!("{prefix}{}", kind.resource))?;
    let paths = mask::resolve(meta, &msg, update_mask).map_err(|e| match e {
        Error::Invalid(v) => {
            let mut all = Violations::new();
            all.extend_prefixed(&prefix, v);
            Error::Invalid(all)
        }
        e => e,
    })?;
    let external_id = msg
        .get_field_by_name("external_id")
        .and_then(|v| v.as_str().map(|s| s.trim().to_owned()))
        .unwrap_or_default();
    Ok(Patch {
        prefix,
        id: None,
        external_id,
        version: rec.version(),
        msg,
        paths,
        raw,
    })
}

impl Store {
    /// Returns the records `ids` in the order asked (soft-deleted ones too);
    /// NOT_FOUND naming the first id that names none.
    pub async fn batch_get<E: Entity>(
        &self,
        caller: &Caller,
        ids: &[String],
    ) -> Result<Vec<E>, Error> {
        check_count("ids", ids.len())?;
        let mut all = Violations::new();
        let mut wanted = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            match parse_id::<E>(&format!("ids[{i}]"), id) {
                Ok(id) => wanted.push(id),
                Err(e) => collect(&mut all, Err(e))?,
            }
        }
        all.into_result()?;
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let unique: Vec<String> = wanted
            .iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        self.db().failpoints().pause("before_db").await;
        let mut tx = self.db().begin(caller).await?;
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(
            E::kind().meta().sql.select_many.clone(),
        ))
        .bind(caller.tenant_id())
        .bind(caller.app_id())
        .bind(&unique)
        .fetch_all(tx.conn())
        .await?;
        tx.end_read();
        let found = by_id::<E>(&rows)?;
        wanted
            .iter()
            .map(|id| found.get(id).cloned().ok_or_else(|| not_found::<E>(id)))
            .collect()
    }

    /// Creates `recs` (each as [`Store::create`] would), all or none.
    pub async fn batch_create<E: Entity>(
        &self,
        caller: &Caller,
        recs: Vec<E>,
        idem: Option<Idempotency>,
    ) -> Result<Vec<E>, Error> {
        check_count("requests", recs.len())?;
        let resource = E::kind().resource;
        let mut all = Violations::new();
        let mut items = Vec::with_capacity(recs.len());
        for (i, rec) in recs.iter().enumerate() {
            match patch(item(i), rec, &[]) {
                Ok(p) => items.push(p),
                Err(e) => collect(&mut all, Err(e))?,
            }
        }
        duplicates(
            items.iter().enumerate().map(|(i, p)| {
                let path = format!("{}{resource}.external_id", p.prefix);
                (i, path, p.external_id.as_str())
            }),
            "external_id",
            &mut all,
        );
        all.into_result()?;
        // Read before the transaction: a second connection while holding
        // one could exhaust the pool under load.
        let schema = self.schema::<E>(caller).await?;
        let out = self
            .write_tx(caller, idem.as_ref(), |mut tx| {
                let (items, schema) = (items.clone(), schema.clone());
                async move {
                    let creates = items.iter().map(|p| (p, None)).collect();
                    let result = self.apply(&mut tx, creates, true, &schema).await?;
                    Ok((result, tx))
                }
            })
            .await?;
        Ok(out.items)
    }

    /// Applies `patches` (each as [`Store::update`] would, with its own
    /// mask and version check), all or none.
    pub async fn batch_update<E: Entity>(
        &self,
        caller: &Caller,
        patches: Vec<(E, Vec<String>)>,
        idem: Option<Idempotency>,
    ) -> Result<Vec<E>, Error> {
        check_count("requests", patches.len())?;
        let resource = E::kind().resource;
        let mut all = Violations::new();
        let mut items = Vec::with_capacity(patches.len());
        for (i, (rec, update_mask)) in patches.iter().enumerate() {
            let id = parse_id::<E>(&format!("{}{resource}.id", item(i)), rec.id());
            match (patch(item(i), rec, update_mask), id) {
                (Ok(mut p), Ok(id)) => {
                    p.id = Some(id);
                    items.push(p);
                }
                (p, id) => {
                    collect(&mut all, p.map(|_| ()))?;
                    collect(&mut all, id.map(|_| ()))?;
                }
            }
        }
        duplicates(
            items.iter().enumerate().map(|(i, p)| {
                let id = p.id.as_deref().unwrap_or_default();
                (i, format!("{}{resource}.id", p.prefix), id)
            }),
            "id",
            &mut all,
        );
        all.into_result()?;
        let schema = self.schema::<E>(caller).await?;
        let out = self
            .write_tx(caller, idem.as_ref(), |mut tx| {
                let (items, schema) = (items.clone(), schema.clone());
                async move {
                    let ids: Vec<String> = items.iter().filter_map(|p| p.id.clone()).collect();
                    let mut olds = lock_rows::<E>(&mut tx, &ids).await?;
                    let mut pairs = Vec::with_capacity(items.len());
                    for p in &items {
                        let id = p.id.clone().unwrap_or_default();
                        let old = olds.remove(&id).ok_or_else(|| not_found::<E>(&id))?;
                        if old.is_deleted() {
                            return Err(Error::Deleted { resource, id });
                        }
                        check_version(&old, p.version)?;
                        pairs.push((p, old));
                    }
                    let pairs = pairs.into_iter().map(|(p, old)| (p, Some(old))).collect();
                    let result = self.apply(&mut tx, pairs, true, &schema).await?;
                    Ok((result, tx))
                }
            })
            .await?;
        Ok(out.items)
    }

    /// The common end of batch creates, updates and upserts: per item, the
    /// stored record to merge the patch into, or none to create it. External
    /// ids that records take are checked against the live records' (for
    /// created ones only with `new_keys`: an upsert has just looked its keys
    /// up, under lock).
    async fn apply<E: Entity>(
        &self,
        tx: &mut TenantTx,
        items: Vec<(&Patch, Option<E>)>,
        new_keys: bool,
        schema: &crate::custom::ResourceSchema,
    ) -> Result<Batch<E>, Error> {
        let resource = E::kind().resource;
        let caller = tx.caller().clone();
        let at = now();
        let mut all = Violations::new();
        // Per item: its answer if unchanged, else the index of its change.
        let mut answers: Vec<Result<E, usize>> = Vec::with_capacity(items.len());
        let mut created = Vec::with_capacity(items.len());
        let mut drafts = Vec::new();
        let mut prefixes = Vec::new();
        for (p, old) in items {
            let mut v = Checker::with(&format!("{}{resource}", p.prefix), p.raw.clone());
            created.push(old.is_none());
            match old {
                Some(old) => match merge(old, &p.msg, &p.paths, &caller, &at, schema, &mut v) {
                    Merged::Unchanged(old) => answers.push(Ok(old)),
                    Merged::Changed(draft) => {
                        answers.push(Err(drafts.len()));
                        drafts.push(draft);
                        prefixes.push(p.prefix.clone());
                    }
                },
                None => {
                    let draft = new_record::<E>(&caller, p.msg.clone(), at, schema, &mut v)?;
                    answers.push(Err(drafts.len()));
                    drafts.push(draft);
                    prefixes.push(p.prefix.clone());
                }
            }
            all.extend_prefixed("", v.into_violations());
        }
        check_all_references(tx, &drafts, &prefixes, &mut all).await?;
        all.sort_by_item();
        all.into_result()?;
        let unique_items: Vec<crate::custom::unique::Item> = drafts
            .iter()
            .zip(&prefixes)
            .map(|(d, p)| crate::custom::unique::Item {
                id: d.change.new.id(),
                writes: &d.unique,
                prefix: format!("{p}{resource}"),
            })
            .collect();
        crate::custom::unique::check(tx, E::kind().table, resource, &unique_items).await?;
        drop(unique_items);
        let changes: Vec<Change<E>> = drafts.into_iter().map(|d| d.change).collect();
        // Records given an external id another live record holds.
        let keys: Vec<(String, String)> = changes
            .iter()
            .zip(&prefixes)
            .filter(|(c, _)| {
                let key = c.new.external_id();
                !key.is_empty()
                    && match &c.old {
                        Some(old) => old.external_id() != key,
                        None => new_keys,
                    }
            })
            .map(|(c, p)| {
                (
                    format!("{p}{resource}.external_id"),
                    c.new.external_id().to_owned(),
                )
            })
            .collect();
        external_id_clashes::<E>(tx, &keys).await?;
        let mut stored: Vec<Option<E>> = store_batch(tx, changes, &prefixes)
            .await?
            .into_iter()
            .map(|c| Some(c.new))
            .collect();
        let items = answers
            .into_iter()
            .map(|a| match a {
                Ok(unchanged) => unchanged,
                Err(i) => stored[i].take().unwrap_or_default(),
            })
            .collect();
        Ok(Batch { items, created })
    }

    /// Soft-deletes the records `ids`, all or none.
    pub async fn batch_delete<E: Entity>(
        &self,
        caller: &Caller,
        ids: &[String],
        idem: Option<Idempotency>,
    ) -> Result<Vec<E>, Error> {
        check_count("ids", ids.len())?;
        let resource = E::kind().resource;
        let mut all = Violations::new();
        let mut wanted = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            match parse_id::<E>(&format!("ids[{i}]"), id) {
                Ok(id) => wanted.push((i, id)),
                Err(e) => collect(&mut all, Err(e))?,
            }
        }
        duplicates(
            wanted
                .iter()
                .map(|(i, id)| (*i, format!("ids[{i}]"), id.as_str())),
            "id",
            &mut all,
        );
        all.into_result()?;
        let out = self
            .write_tx(caller, idem.as_ref(), |mut tx| {
                let wanted = wanted.clone();
                async move {
                    let ids: Vec<String> = wanted.iter().map(|(_, id)| id.clone()).collect();
                    let mut olds = lock_rows::<E>(&mut tx, &ids).await?;
                    let caller = tx.caller().clone();
                    let at = now();
                    let mut changes = Vec::with_capacity(ids.len());
                    let mut prefixes = Vec::with_capacity(ids.len());
                    for (i, id) in wanted {
                        let old = olds.remove(&id).ok_or_else(|| not_found::<E>(&id))?;
                        if old.is_deleted() {
                            return Err(Error::Deleted { resource, id });
                        }
                        changes.push(deletion(old, true, &caller, &at));
                        prefixes.push(format!("ids[{i}]."));
                    }
                    let stored = store_batch(&mut tx, changes, &prefixes).await?;
                    let items = stored.into_iter().map(|c| c.new).collect();
                    Ok((
                        Batch {
                            items,
                            created: vec![],
                        },
                        tx,
                    ))
                }
            })
            .await?;
        Ok(out.items)
    }

    /// Upserts `requests` by external id (see the module comment), all or
    /// none. `single`: a one-item Upsert call, whose paths have no
    /// `requests[i].` prefix.
    pub async fn upsert<E: Entity>(
        &self,
        caller: &Caller,
        requests: Vec<(E, Vec<String>)>,
        single: bool,
        idem: Option<Idempotency>,
    ) -> Result<Batch<E>, Error> {
        check_count("requests", requests.len())?;
        let kind = E::kind();
        let resource = kind.resource;
        let mut all = Violations::new();
        let mut items = Vec::with_capacity(requests.len());
        for (i, (rec, update_mask)) in requests.iter().enumerate() {
            let prefix = if single { String::new() } else { item(i) };
            let mut p = match patch(prefix.clone(), rec, update_mask) {
                Ok(p) => p,
                Err(e) => {
                    collect(&mut all, Err(e))?;
                    continue;
                }
            };
            if p.external_id.is_empty() {
                all.add(
                    format!("{prefix}{resource}.external_id"),
                    "is required: Upsert finds the record by it",
                );
            }
            if !rec.id().is_empty() {
                match canonical_id(kind, rec.id()) {
                    Some(id) => p.id = Some(id),
                    None => collect(
                        &mut all,
                        parse_id::<E>(&format!("{prefix}{resource}.id"), rec.id()).map(|_| ()),
                    )?,
                }
            }
            items.push(p);
        }
        duplicates(
            items.iter().enumerate().map(|(i, p)| {
                let path = format!("{}{resource}.external_id", p.prefix);
                (i, path, p.external_id.as_str())
            }),
            "external_id",
            &mut all,
        );
        all.into_result()?;
        let schema = self.schema::<E>(caller).await?;
        self.write_tx(caller, idem.as_ref(), |mut tx| {
            let (items, schema) = (items.clone(), schema.clone());
            async move {
                let caller = tx.caller().clone();
                let keys: Vec<String> = items.iter().map(|p| p.external_id.clone()).collect();
                let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(
                    kind.meta().sql.select_external_for_update.clone(),
                ))
                .bind(caller.tenant_id())
                .bind(caller.app_id())
                .bind(&keys)
                .fetch_all(tx.conn())
                .await?;
                let mut found: HashMap<String, E> = rows
                    .iter()
                    .map(|json| from_row_json::<E>(json).map(|r| (r.external_id().to_owned(), r)))
                    .collect::<Result<_, _>>()?;
                let mut all = Violations::new();
                let mut pairs = Vec::with_capacity(items.len());
                for p in &items {
                    let old = found.remove(&p.external_id);
                    let id_path = format!("{}{resource}.id", p.prefix);
                    match (&old, &p.id) {
                        (Some(old), Some(id)) if id != old.id() => all.add(
                            id_path,
                            format!(
                                "names {id}, but external_id {:?} names {}",
                                p.external_id,
                                old.id()
                            ),
                        ),
                        (None, Some(_)) => all.add(
                            id_path,
                            format!(
                                "must be empty: no live {resource} has external_id {:?}, so one is \
                                 created, and ids are assigned by the server",
                                p.external_id
                            ),
                        ),
                        _ => {}
                    }
                    if let Some(old) = &old {
                        check_version(old, p.version)?;
                    }
                    pairs.push((p, old));
                }
                all.into_result()?;
                let batch = match self.apply(&mut tx, pairs, false, &schema).await {
                    // Another transaction created one of these external ids
                    // after the lookup: retried from the start, now finding it.
                    Err(Error::Duplicate { field, .. }) if field.ends_with(".external_id") => {
                        return Err(Error::Contention);
                    }
                    other => other?,
                };
                Ok((batch, tx))
            }
        })
        .await
    }
}

/// Checks the references of every change of a batch, reporting each item's
/// violations under its prefix.
async fn check_all_references<E: Entity>(
    tx: &mut TenantTx,
    drafts: &[Draft<E>],
    prefixes: &[String],
    all: &mut Violations,
) -> Result<(), Error> {
    let resource = E::kind().resource;
    let mut checkers: Vec<Checker> = prefixes
        .iter()
        .map(|p| Checker::new(&format!("{p}{resource}")))
        .collect();
    check_references_many(tx, drafts, &mut checkers).await?;
    for c in checkers {
        all.extend_prefixed("", c.into_violations());
    }
    Ok(())
}
