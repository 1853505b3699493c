//! Per-entity rules: each module declares its [`Kind`](crate::records::Kind)
//! (table, id prefix, references) and implements
//! [`Entity`](crate::records::Entity) with only what is particular to it.
//! Helpers used by several entities live here and in [`rules`].

pub mod account;
pub mod activity;
pub mod contact;
pub mod deal;
pub mod line_item;
pub mod quote;

use sqlx::SqlSafeStr;

use crate::db::TenantTx;
use crate::error::Error;
use crate::records::Kind;
use crate::records::effects::{self, SideWrite};

/// The six kinds of record.
pub fn kinds() -> impl Iterator<Item = &'static Kind> {
    [
        &account::KIND,
        &contact::KIND,
        &deal::KIND,
        &activity::KIND,
        &quote::KIND,
        &line_item::KIND,
    ]
    .into_iter()
}

/// The kind whose resource name is `resource` (`account`, `line_item`, ...).
pub fn kind_of(resource: &str) -> Option<&'static Kind> {
    kinds().find(|k| k.resource == resource)
}

/// Keeps a record's human-readable number (`deal_number`, `quote_number`):
/// generates one on create when the client gave none; when the client sets
/// one (on create, or changes it), takes the same per-tenant lock the
/// generator holds until commit, so a generator running at the same moment
/// sees the client's number and skips it instead of colliding with it.
/// `taken` is a query taking (tenant, numbers) and returning those in use.
pub async fn keep_number(
    tx: &mut TenantTx,
    sequence: &'static str,
    prefix: &str,
    taken: impl SqlSafeStr + Copy,
    old: Option<&str>,
    new: &mut String,
) -> Result<(), Error> {
    keep_numbers(tx, sequence, prefix, taken, &mut [(old, new)]).await
}

/// [`keep_number`] for the records of a batch, each given as (stored number
/// if any, number to store): one lock, and numbers for every record that
/// needs one from a few statements, whatever the batch size.
pub async fn keep_numbers(
    tx: &mut TenantTx,
    sequence: &'static str,
    prefix: &str,
    taken: impl SqlSafeStr + Copy,
    items: &mut [(Option<&str>, &mut String)],
) -> Result<(), Error> {
    let generate = |old: &Option<&str>, new: &String| old.is_none() && new.is_empty();
    let wanted = items.iter().filter(|(o, n)| generate(o, n)).count();
    let chosen = items
        .iter()
        .any(|(o, n)| !generate(o, n) && *o != Some(n.as_str()));
    if wanted == 0 && !chosen {
        return Ok(());
    }
    // Held until commit: clients choosing numbers and generators wait for
    // each other.
    lock(tx, &format!("number:{sequence}")).await?;
    if wanted == 0 {
        return Ok(());
    }
    // Numbers the batch's other records bring are not in the table yet.
    let chosen: std::collections::HashSet<String> = items
        .iter()
        .filter(|(o, n)| !generate(o, n))
        .map(|(_, n)| n.to_string())
        .collect();
    let numbers = next_numbers(tx, sequence, prefix, taken, &chosen, wanted).await?;
    let mut numbers = numbers.into_iter();
    for (old, new) in items.iter_mut() {
        if generate(old, new) {
            **new = numbers.next().unwrap_or_default();
        }
    }
    Ok(())
}

/// The next `n` human-readable numbers `<prefix>-<year>-<n, 5 digits>` from
/// the tenant's counter for `sequence`, skipping numbers a client already
/// used (and `also_taken`, those of the batch being written). The caller holds the number lock and the counter row stays locked
/// until commit, so concurrent creates get distinct numbers.
async fn next_numbers(
    tx: &mut TenantTx,
    sequence: &'static str,
    prefix: &str,
    taken: impl SqlSafeStr + Copy,
    also_taken: &std::collections::HashSet<String>,
    n: usize,
) -> Result<Vec<String>, Error> {
    let tenant = tx.caller().tenant_id().to_owned();
    let year = chrono::Datelike::year(&chrono::Utc::now());
    // Numbers are unique per tenant, across apps.
    tx.across_apps(async |conn| {
        let mut numbers = Vec::with_capacity(n);
        while numbers.len() < n {
            let k = (n - numbers.len()) as i32;
            let last: i32 = sqlx::query_scalar(
                "INSERT INTO number_sequences AS s (tenant_id, kind, year, last_value) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, kind, year) DO UPDATE SET last_value = s.last_value + $4 \
                 RETURNING last_value",
            )
            .bind(&tenant)
            .bind(sequence)
            .bind(year)
            .bind(k)
            .fetch_one(&mut *conn)
            .await?;
            let candidates: Vec<String> = (last - k + 1..=last)
                .map(|i| format!("{prefix}-{year}-{i:05}"))
                .collect();
            let used: std::collections::HashSet<String> = sqlx::query_scalar(taken)
                .bind(&tenant)
                .bind(&candidates)
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .collect();
            numbers.extend(
                candidates
                    .into_iter()
                    .filter(|c| !used.contains(c) && !also_taken.contains(c)),
            );
        }
        Ok(numbers)
    })
    .await
}

/// Where a record's exclusive flag (`is_primary`) lives: the record's id, its
/// flag and the scope it is exclusive in (an account, a deal).
pub struct Flag<'a> {
    /// The record.
    pub id: &'a str,
    /// Its flag.
    pub set: Option<bool>,
    /// Whether it is deleted.
    pub deleted: bool,
    /// The scope value (account or deal id).
    pub scope: &'a str,
}

/// One batch item's exclusive flag: the stored record's (if any), the new
/// record's, and whether the write undeletes.
pub struct FlagChange<'a> {
    /// The stored record's flag.
    pub old: Option<Flag<'a>>,
    /// The record as it will be stored.
    pub new: Flag<'a>,
    /// The write undeletes the record.
    pub undelete: bool,
}

impl FlagChange<'_> {
    /// The record becomes flagged: set now, moved to another scope, or
    /// undeleted while set.
    fn becomes(&self) -> bool {
        self.new.set == Some(true)
            && !self.new.deleted
            && match &self.old {
                None => true,
                Some(_) if self.undelete => true,
                Some(o) => o.set != Some(true) || o.scope != self.new.scope,
            }
    }
}

/// Keeps a flag exclusive within its scope for the items of a write (one,
/// or a batch): for every scope where an item becomes flagged, takes the
/// scope's advisory lock (one statement, in key order) and clears the flag
/// of every other live record of the scope outside the write, across apps
/// (one side write; `clear` takes `$3` the scopes, `$4` the write's ids).
/// Two items becoming flagged in one scope are a violation of the later
/// (`field`, under its prefix). Returns the items that keep a stored flag in
/// a scope another item takes over: the caller clears their flag.
pub async fn make_exclusive(
    tx: &mut TenantTx,
    lock_key: &str,
    clear: &'static SideWrite,
    items: &[FlagChange<'_>],
    field: &str,
    prefixes: &[String],
) -> Result<Vec<usize>, Error> {
    let mut winner: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut all = crate::error::Violations::new();
    for (i, item) in items.iter().enumerate() {
        if !item.becomes() {
            continue;
        }
        if let Some(first) = winner.insert(item.new.scope, i) {
            all.add(
                format!("{}{field}", prefixes[i]),
                format!(
                    "is also set by {}{field}, and only one record of {} may have it",
                    prefixes[first], item.new.scope
                ),
            );
        }
    }
    all.into_result()?;
    if winner.is_empty() {
        return Ok(Vec::new());
    }
    let mut scopes: Vec<&str> = winner.keys().copied().collect();
    scopes.sort_unstable();
    let keys: Vec<String> = scopes.iter().map(|s| format!("{lock_key}:{s}")).collect();
    let caller = tx.caller().clone();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || k, 0)) \
         FROM (SELECT k FROM unnest($2::text[]) AS k ORDER BY k) s",
    )
    .bind(caller.tenant_id())
    .bind(&keys)
    .execute(tx.conn())
    .await?;
    let ids: Vec<&str> = items.iter().map(|i| i.new.id).collect();
    effects::apply(tx, clear, |q| q.bind(&scopes).bind(&ids)).await?;
    Ok(items
        .iter()
        .enumerate()
        .filter(|(i, item)| {
            item.new.set == Some(true) && winner.get(item.new.scope).is_some_and(|w| w != i)
        })
        .map(|(i, _)| i)
        .collect())
}

/// Takes a transaction-scoped advisory lock on `key` within the caller's
/// tenant, serializing writers that must see each other's effects (exclusive
/// flags, hierarchy changes).
pub async fn lock(tx: &mut TenantTx, key: &str) -> Result<(), Error> {
    let tenant = tx.caller().tenant_id().to_owned();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))")
        .bind(&tenant)
        .bind(key)
        .execute(tx.conn())
        .await?;
    Ok(())
}
