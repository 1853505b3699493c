//! The sequencer (`relay` mode; in `counter` mode it only drains rows a
//! previous `relay` mode left behind). One statement per batch moves the
//! committed outbox rows it sees into `change_events` in outbox-id order,
//! numbering each tenant's rows on from its head, and NOTIFYs the tenants.
//! Readers never see outbox ids, only these numbers: a row committed later is
//! moved later and numbered higher, so a sequence, once a reader has seen it,
//! never gains an event below it; two writes of one record took their ids
//! under its row lock, so they come in commit order (migration 0006).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgConnection;

use super::Hub;
use super::hub::CHANNEL;

/// Rows moved per statement.
pub const BATCH: i64 = 1000;
/// After a wake-up, how long the sequencer lets more commits gather before
/// it moves them: one transaction (and one WAL flush) per batch instead of
/// one per commit, for a few milliseconds of latency.
pub const LINGER: Duration = Duration::from_millis(5);
/// The longest the sequencer sleeps without a wake-up (a local commit, or
/// another process's announcement on `crm_outbox`): a lost wake-up delays
/// events by at most this much.
pub const POLL: Duration = Duration::from_millis(500);

/// The statement: pick, move, number, advance heads, notify.
const SEQUENCE: &str = "
WITH horizon AS MATERIALIZED (
    SELECT clock_timestamp() AS at
), picked AS MATERIALIZED (
    SELECT o.tenant_id, o.id FROM change_outbox o ORDER BY o.id LIMIT $1
), moved AS (
    DELETE FROM change_outbox o USING picked p
    WHERE o.tenant_id = p.tenant_id AND o.id = p.id
    RETURNING o.*
), numbered AS (
    SELECT m.*, row_number() OVER (PARTITION BY m.tenant_id ORDER BY m.id) AS n,
           count(*) OVER (PARTITION BY m.tenant_id) AS cnt
    FROM moved m
), counts AS (
    SELECT tenant_id, max(cnt) AS cnt FROM numbered GROUP BY tenant_id
), heads AS (
    INSERT INTO change_heads AS h (tenant_id, last_sequence)
    SELECT tenant_id, cnt FROM counts
    ON CONFLICT (tenant_id) DO UPDATE SET last_sequence = h.last_sequence + EXCLUDED.last_sequence
    RETURNING h.tenant_id, h.last_sequence
), inserted AS (
    INSERT INTO change_events (tenant_id, sequence, committed_at, resource_type, record_id,
                               record_version, operation, changed_fields, record, actor,
                               app_id, request_id, transaction_id)
    SELECT nb.tenant_id, hd.last_sequence - c.cnt + nb.n, hz.at, nb.resource_type, nb.record_id,
           nb.record_version, nb.operation, nb.changed_fields, nb.record, nb.actor,
           nb.app_id, nb.request_id, nb.transaction_id
    FROM numbered nb
    JOIN counts c ON c.tenant_id = nb.tenant_id
    JOIN heads hd ON hd.tenant_id = nb.tenant_id
    CROSS JOIN horizon hz
    RETURNING tenant_id
), notified AS (
    SELECT pg_notify($2, d.tenant_id) FROM (SELECT DISTINCT tenant_id FROM inserted) d
)
SELECT (SELECT count(*) FROM inserted),
       (SELECT count(*) FROM notified),
       ARRAY(SELECT DISTINCT tenant_id FROM inserted)";

/// Numbers one batch (committed when this returns); returns how many rows
/// it moved and the tenants whose feeds moved.
pub async fn sequence_once(conn: &mut PgConnection) -> Result<(i64, Vec<String>), sqlx::Error> {
    let (moved, _notified, tenants): (i64, i64, Vec<String>) = sqlx::query_as(SEQUENCE)
        .bind(BATCH)
        .bind(CHANNEL)
        .fetch_one(conn)
        .await?;
    Ok((moved, tenants))
}

/// The sequencer's loop, on the connection that holds its role.
pub async fn run(mut conn: PgConnection, hub: Arc<Hub>) -> anyhow::Result<()> {
    // Its own NOTIFYs come back to this process's listener: the watches
    // here were woken directly already (see `sequence`).
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await?;
    hub.set_sequencing_here(Some(pid));
    let result = sequence(&mut conn, &hub).await;
    hub.set_sequencing_here(None);
    result
}

async fn sequence(conn: &mut PgConnection, hub: &Hub) -> anyhow::Result<()> {
    loop {
        let (moved, tenants) = sequence_once(conn).await?;
        // The batch is committed: this process's watches are woken now,
        // without waiting for the NOTIFY's round trip (other processes'
        // watches are woken by it).
        for tenant in &tenants {
            hub.moved(tenant);
        }
        if moved == BATCH {
            continue;
        }
        tokio::select! {
            () = hub.next_commit() => tokio::time::sleep(LINGER).await,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}
