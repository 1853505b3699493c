//! Reading a tenant's feed, as the caller: `ListChanges` pages and the
//! `WatchChanges` pump (replay, then follow). Every query runs in a
//! [`TenantTx`] with the caller's tenant (and, for integration tokens, app)
//! set and named in its own WHERE clause; row-level security backs both.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::Hub;
use super::hub::ALL;
use crate::auth::Caller;
use crate::db::{Db, TenantTx};
use crate::error::{Error, Violations};
use crate::proto::{
    ChangeEvent, Heartbeat, ListChangesResponse, WatchChangesResponse, watch_changes_response,
};
use crate::records::convert;
use crate::sql::changes;

/// Default page size of ListChanges.
pub const DEFAULT_PAGE_SIZE: i32 = 100;
/// Largest page size; larger requests are served this many.
pub const MAX_PAGE_SIZE: i32 = 1000;
/// The resource types an event can have.
pub const RESOURCE_TYPES: [&str; 6] = [
    "account",
    "contact",
    "deal",
    "activity",
    "quote",
    "line_item",
];
/// The operations an event can have.
pub const OPERATIONS: [&str; 5] = ["created", "updated", "deleted", "undeleted", "purged"];
/// How often an idle watch looks for events on its own (a lost wake-up
/// delays an event by at most this much).
const RECHECK: Duration = Duration::from_secs(5);
/// Events a watch reads per query.
const WATCH_BATCH: i64 = 100;

/// What to read: after a position, optionally filtered.
#[derive(Clone, Debug)]
pub struct Query {
    after: i64,
    limit: i64,
    resource_types: Vec<&'static str>,
    operations: Vec<&'static str>,
}

/// The entries of `given` that are in `allowed` (de-duplicated, in
/// `allowed`'s order); each one that is not is reported on `v`.
pub fn pick(
    field: &str,
    given: &[String],
    allowed: &[&'static str],
    v: &mut Violations,
) -> Vec<&'static str> {
    if given.len() > 64 {
        v.add(field, "must have at most 64 entries");
        return Vec::new();
    }
    for (i, g) in given.iter().enumerate() {
        if !allowed.contains(&g.as_str()) {
            v.add(
                format!("{field}[{i}]"),
                format!("must be one of {}", allowed.join(", ")),
            );
        }
    }
    allowed
        .iter()
        .copied()
        .filter(|a| given.iter().any(|g| g == a))
        .collect()
}

impl Query {
    /// Checks a request's position, page size and filters.
    pub fn new(
        after_sequence: i64,
        page_size: i32,
        resource_types: &[String],
        operations: &[String],
    ) -> Result<Self, Error> {
        let mut v = Violations::new();
        if after_sequence < 0 {
            v.add("after_sequence", "must not be negative");
        }
        if page_size < 0 {
            v.add("page_size", "must not be negative");
        }
        let resource_types = pick("resource_types", resource_types, &RESOURCE_TYPES, &mut v);
        let operations = pick("operations", operations, &OPERATIONS, &mut v);
        v.into_result()?;
        let limit = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        Ok(Self {
            after: after_sequence,
            limit: i64::from(limit),
            resource_types,
            operations,
        })
    }

    /// A webhook's stored filters (checked when it was saved; anything
    /// unknown is left out).
    pub fn filters(resource_types: &[String], operations: &[String]) -> Self {
        let mut ignored = Violations::new();
        Self {
            after: 0,
            limit: i64::from(DEFAULT_PAGE_SIZE),
            resource_types: pick("", resource_types, &RESOURCE_TYPES, &mut ignored),
            operations: pick("", operations, &OPERATIONS, &mut ignored),
        }
    }

    /// The query narrowed to the resource types `readable` lets through;
    /// `None` when none of those asked for (all, without a filter) are.
    pub fn readable_by(&self, readable: impl Fn(&str) -> bool) -> Option<Self> {
        let asked: &[&'static str] = if self.resource_types.is_empty() {
            &RESOURCE_TYPES
        } else {
            &self.resource_types
        };
        let kept: Vec<&'static str> = asked.iter().copied().filter(|t| readable(t)).collect();
        if kept.is_empty() {
            return None;
        }
        let mut q = self.clone();
        if kept.len() < asked.len() {
            q.resource_types = kept;
        }
        Some(q)
    }

    fn filtered(&self) -> bool {
        !self.resource_types.is_empty() || !self.operations.is_empty()
    }
}

/// One stored event.
#[derive(sqlx::FromRow)]
struct Row {
    sequence: i64,
    committed_at: DateTime<Utc>,
    resource_type: String,
    record_id: String,
    record_version: i32,
    operation: String,
    changed_fields: Vec<String>,
    record: Option<String>,
    actor: String,
    app_id: Option<String>,
    request_id: Option<String>,
    transaction_id: String,
}

/// The id of the event at `sequence` of `tenant`: a ULID whose time is the
/// commit's and whose random part is drawn from (tenant, sequence) — the same
/// every time it is delivered, without being stored.
pub fn event_id(tenant: &str, sequence: i64, committed_at: DateTime<Utc>) -> String {
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(sequence.to_be_bytes());
    let digest = h.finalize();
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    let ulid = ulid::Ulid::from_parts(
        committed_at.timestamp_millis().max(0) as u64,
        u128::from_be_bytes(random),
    );
    format!("evt_{ulid}")
}

/// `t` as a protobuf timestamp.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

impl Row {
    fn into_event(self, tenant: &str) -> Result<ChangeEvent, Error> {
        let record = match &self.record {
            Some(json) => {
                let kind = crate::entities::kind_of(&self.resource_type).ok_or_else(|| {
                    Error::internal(anyhow::anyhow!(
                        "unknown resource type {}",
                        self.resource_type
                    ))
                })?;
                Some(convert::row_to_struct(kind.meta(), json)?)
            }
            None => None,
        };
        Ok(ChangeEvent {
            id: event_id(tenant, self.sequence, self.committed_at),
            sequence: self.sequence,
            resource_type: self.resource_type,
            record_id: self.record_id,
            record_version: self.record_version,
            operation: self.operation,
            changed_fields: self.changed_fields,
            record,
            committed_at: Some(timestamp(self.committed_at)),
            actor: self.actor,
            app_id: self.app_id,
            request_id: self.request_id.unwrap_or_default(),
            transaction_id: self.transaction_id,
        })
    }
}

/// The tenant's head: (latest sequence, oldest kept).
pub async fn head(tx: &mut TenantTx) -> Result<(i64, i64), Error> {
    let tenant = tx.caller().tenant_id().to_owned();
    let head: Option<(i64, i64)> = sqlx::query_as(
        "SELECT last_sequence, oldest_sequence FROM change_heads WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(tx.conn())
    .await?;
    Ok(head.unwrap_or((0, 1)))
}

/// CHANGES_EXPIRED when events after `after` are no longer all kept.
pub fn check_position(after: i64, oldest: i64) -> Result<(), Error> {
    if after > 0 && after < oldest - 1 {
        return Err(Error::ChangesExpired { oldest });
    }
    Ok(())
}

/// Events after `after` up to `until` (inclusive, when given), ascending,
/// at most `limit`, that the query's filters let through.
async fn events(
    tx: &mut TenantTx,
    q: &Query,
    after: i64,
    until: Option<i64>,
    limit: i64,
) -> Result<Vec<ChangeEvent>, Error> {
    let caller = tx.caller().clone();
    let scope = Scope {
        tenant: caller.tenant_id(),
        app: caller.app_id(),
    };
    // Only the collections the token may read: none → no events (an empty
    // page, not an error).
    let Some(q) = q.readable_by(|t| may_read_type(&caller, t)) else {
        return Ok(Vec::new());
    };
    scoped_events(tx.conn(), scope, &q, after, until, limit).await
}

/// Whether `caller`'s token may read records of `resource_type` (`deal`).
pub fn may_read_type(caller: &Caller, resource_type: &str) -> bool {
    crate::entities::kind_of(resource_type)
        .is_some_and(|k| caller.can_read(&crate::records::history::collection_name(k)))
}

/// Whose events: a tenant's, or one app's of a tenant.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// Only events written with this app's tokens, when set.
    pub app: Option<&'a str>,
}

/// Events of `scope` after `after` up to `until` (inclusive, when given),
/// ascending, at most `limit`, that the query's filters let through. The
/// caller's role decides what else applies (row-level security for
/// requests; webhook delivery reads as the background role).
pub async fn scoped_events(
    conn: &mut sqlx::PgConnection,
    scope: Scope<'_>,
    q: &Query,
    after: i64,
    until: Option<i64>,
    limit: i64,
) -> Result<Vec<ChangeEvent>, Error> {
    let filter = q.filtered().then(|| {
        // Empty lists mean every type / every operation.
        let types: &[&str] = if q.resource_types.is_empty() {
            &RESOURCE_TYPES
        } else {
            &q.resource_types
        };
        let ops: &[&str] = if q.operations.is_empty() {
            &OPERATIONS
        } else {
            &q.operations
        };
        (types, ops)
    });
    let mut qb = changes::scoped_events(scope.tenant, scope.app, filter, after, until, limit);
    let rows: Vec<Row> = qb
        .build_query_as()
        .persistent(false)
        .fetch_all(conn)
        .await?;
    rows.into_iter()
        .map(|r| r.into_event(scope.tenant))
        .collect()
}

/// Events of `tenant` after `after`, ascending, at most `limit`, read by
/// background work (the relay) on a background-role connection.
pub async fn tenant_events(
    conn: &mut sqlx::PgConnection,
    tenant: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<ChangeEvent>, Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(changes::TENANT_EVENTS))
        .bind(tenant)
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.into_iter().map(|r| r.into_event(tenant)).collect()
}

/// The feed, as callers read it.
#[derive(Clone)]
pub struct Feed {
    db: Db,
    hub: Arc<Hub>,
    heartbeat: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Counts the messages watches hand to the transport.
    sent: prometheus_client::metrics::counter::Counter,
}

impl Feed {
    /// Reads over `db`, woken by `hub`; idle watches send a heartbeat every
    /// `heartbeat`, and all end when `shutdown` turns true.
    pub fn new(
        db: Db,
        hub: Arc<Hub>,
        heartbeat: Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            db,
            hub,
            heartbeat,
            shutdown,
            sent: Default::default(),
        }
    }

    /// Counts the messages watches hand to the transport on `counter`.
    pub fn counting(mut self, counter: prometheus_client::metrics::counter::Counter) -> Self {
        self.sent = counter;
        self
    }

    /// The counter of messages handed to the transport.
    pub fn sent(&self) -> &prometheus_client::metrics::counter::Counter {
        &self.sent
    }

    /// One page of ListChanges.
    pub async fn list(&self, caller: &Caller, q: &Query) -> Result<ListChangesResponse, Error> {
        let mut tx = self.db.begin(caller).await?;
        let (last, oldest) = head(&mut tx).await?;
        check_position(q.after, oldest)?;
        let changes = events(&mut tx, q, q.after, None, q.limit).await?;
        tx.end_read();
        let last_sequence = changes.last().map_or(last, |c| c.sequence.max(last));
        Ok(ListChangesResponse {
            changes,
            last_sequence,
        })
    }

    /// Starts a watch: checks the position now (an expired one is an error,
    /// not a stream), then replays and follows in a task that feeds `out`
    /// until the receiver goes away. Each message waits for room in `out`,
    /// so a slow reader is held back by flow control, never buffered.
    pub async fn watch(
        &self,
        caller: &Caller,
        q: Query,
        out: mpsc::Sender<Result<WatchChangesResponse, Error>>,
    ) -> Result<(), Error> {
        let mut tx = self.db.begin(caller).await?;
        let (_, oldest) = head(&mut tx).await?;
        tx.end_read();
        check_position(q.after, oldest)?;
        let feed = self.clone();
        let caller = caller.clone();
        tokio::spawn(async move {
            if let Err(e) = feed.pump(&caller, &q, &out).await {
                let _ = out.send(Err(e)).await;
            }
        });
        Ok(())
    }

    /// Replay, then follow; returns when the reader is gone or the server
    /// shuts down.
    async fn pump(
        &self,
        caller: &Caller,
        q: &Query,
        out: &mpsc::Sender<Result<WatchChangesResponse, Error>>,
    ) -> Result<(), Error> {
        let mut wake = self.hub.subscribe();
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow_and_update() {
            return Ok(());
        }
        let mut position = q.after;
        let mut idle_since = tokio::time::Instant::now();
        loop {
            // Everything up to the head as read now; then the position is
            // the head, even where the filters let nothing through.
            loop {
                let mut tx = self.db.begin(caller).await?;
                let (last, _) = head(&mut tx).await?;
                let batch = events(&mut tx, q, position, Some(last), WATCH_BATCH).await?;
                tx.end_read();
                let full = batch.len() as i64 == WATCH_BATCH;
                for change in batch {
                    let sequence = change.sequence;
                    let msg = WatchChangesResponse {
                        kind: Some(watch_changes_response::Kind::Change(change)),
                    };
                    if out.send(Ok(msg)).await.is_err() {
                        return Ok(());
                    }
                    position = sequence;
                    idle_since = tokio::time::Instant::now();
                }
                if !full {
                    position = position.max(last);
                    break;
                }
            }
            let heartbeat_at = idle_since + self.heartbeat;
            let recheck_at = tokio::time::Instant::now() + RECHECK;
            tokio::select! {
                woke = wake.recv() => match woke {
                    Ok(t) if &*t == caller.tenant_id() || &*t == ALL => {}
                    Ok(_) => continue,
                    // Missed some: look anyway.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
                () = tokio::time::sleep_until(heartbeat_at) => {
                    let msg = WatchChangesResponse {
                        kind: Some(watch_changes_response::Kind::Heartbeat(Heartbeat {
                            sequence: position,
                            time: Some(timestamp(Utc::now())),
                        })),
                    };
                    if out.send(Ok(msg)).await.is_err() {
                        return Ok(());
                    }
                    idle_since = tokio::time::Instant::now();
                }
                () = tokio::time::sleep_until(recheck_at) => {}
                () = out.closed() => return Ok(()),
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_ulids() {
        let at = DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = event_id("t1", 7, at);
        assert_eq!(a, event_id("t1", 7, at));
        assert_ne!(a, event_id("t1", 8, at));
        assert_ne!(a, event_id("t2", 7, at));
        let ulid = ulid::Ulid::from_string(a.strip_prefix("evt_").unwrap()).unwrap();
        assert_eq!(ulid.timestamp_ms(), at.timestamp_millis() as u64);
    }

    #[test]
    fn queries_are_checked() {
        assert!(Query::new(-1, 0, &[], &[]).is_err());
        assert!(Query::new(0, -1, &[], &[]).is_err());
        assert_eq!(Query::new(0, 0, &[], &[]).unwrap().limit, 100);
        assert_eq!(Query::new(0, 5000, &[], &[]).unwrap().limit, 1000);
        let q = Query::new(0, 0, &["deal".into(), "account".into(), "deal".into()], &[]).unwrap();
        assert_eq!(q.resource_types, vec!["account", "deal"]);
        let e = Query::new(0, 0, &["accounts".into()], &["made".into()]).unwrap_err();
        let Error::Invalid(v) = e else { panic!() };
        assert_eq!(
            v.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(),
            vec!["resource_types[0]", "operations[0]"]
        );
        assert!(Query::new(0, 0, &vec!["deal".to_owned(); 65], &[]).is_err());
        assert!(check_position(0, 50).is_ok());
        assert!(check_position(49, 50).is_ok());
        assert!(matches!(
            check_position(48, 50),
            Err(Error::ChangesExpired { oldest: 50 })
        ));
    }
}
