//! The JetStream relay (only when `CRM_NATS_URL` is set): publishes every
//! event, per tenant in sequence order and at least once, to the stream
//! `CRM_CHANGES` — subject `crm.changes.<tenant>.<resource_type>` (each `.`
//! of the tenant id written `~`), header `Nats-Msg-Id` = the event id (the
//! server drops a repeat within its duplicate window), body the event as
//! REST shows it. Each tenant's position is kept in `change_relay` and moved
//! only past events JetStream acknowledged, so a restart of crm or an outage
//! of NATS loses nothing and reorders nothing: the relay picks up where the
//! acknowledgements stopped.
//!
//! Erasure: before it publishes a `purged` event, the relay deletes from the
//! stream every earlier message of that tenant whose body holds the erased
//! record's id — the record's own events and those of records that held a
//! copy of it (a reference list, a quote's line_items) — so that no relayed
//! message keeps the erased values. Published later, the earlier events
//! carry the database's scrubbed payloads. The deletions are idempotent: a
//! batch published again after a failure deletes nothing twice.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use prost::Message;
use prost_reflect::DynamicMessage;
use sqlx::PgConnection;

use super::Hub;
use super::feed::tenant_events;
use crate::proto::ChangeEvent;

/// The JetStream stream the relay publishes to.
pub const STREAM: &str = "CRM_CHANGES";
/// Events published per tenant before moving to the next one.
const BATCH: i64 = 500;
/// Tenants looked at per round.
const TENANTS: i64 = 100;
/// The longest the relay sleeps without a wake-up.
const POLL: Duration = Duration::from_secs(1);

/// The subject of an event of `tenant`.
pub fn subject(tenant: &str, resource_type: &str) -> String {
    format!("crm.changes.{}.{resource_type}", tenant.replace('.', "~"))
}

/// The event as REST shows it.
pub fn event_json(event: &ChangeEvent) -> anyhow::Result<Vec<u8>> {
    let desc = crate::proto::DESCRIPTOR_POOL
        .get_message_by_name("crm.v1.ChangeEvent")
        .context("ChangeEvent in the descriptor pool")?;
    let msg = DynamicMessage::decode(desc, event.encode_to_vec().as_slice())?;
    let mut out = Vec::with_capacity(1024);
    msg.serialize_with_options(
        &mut serde_json::Serializer::new(&mut out),
        &crate::records::convert::rest_options(),
    )?;
    Ok(out)
}

/// Connects to NATS and makes sure the stream exists.
async fn connect(url: &str) -> anyhow::Result<async_nats::jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: STREAM.to_owned(),
        subjects: vec!["crm.changes.>".to_owned()],
        ..Default::default()
    })
    .await
    .context("creating the CRM_CHANGES stream")?;
    Ok(js)
}

/// Deletes from the stream every message of `tenant` whose body holds one
/// of `ids` (erased records'); returns how many.
pub async fn forget(
    js: &async_nats::jetstream::Context,
    tenant: &str,
    ids: &[&str],
) -> anyhow::Result<u64> {
    let stream = js.get_stream(STREAM).await?;
    let doomed = holding(js, tenant, ids).await?;
    for seq in &doomed {
        stream.delete_message(*seq).await?;
    }
    Ok(doomed.len() as u64)
}

/// The stream sequences of the messages of `tenant` whose body holds one
/// of `needles`. Walks the tenant's subjects once, with an ephemeral
/// consumer that acknowledges nothing (and is deleted after).
pub async fn holding(
    js: &async_nats::jetstream::Context,
    tenant: &str,
    needles: &[&str],
) -> anyhow::Result<Vec<u64>> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    use futures_util::StreamExt;

    let stream = js.get_stream(STREAM).await?;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("crm.changes.{}.>", tenant.replace('.', "~")),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await?;
    let pending = consumer.info().await?.num_pending;
    let name = consumer.cached_info().name.clone();
    let mut found = Vec::new();
    let needles: Vec<&[u8]> = needles
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| n.as_bytes())
        .collect();
    if pending > 0 && !needles.is_empty() {
        let mut messages = consumer.messages().await?.take(pending as usize);
        while let Some(m) = messages.next().await {
            let m = m.map_err(|e| anyhow::anyhow!(e))?;
            if needles
                .iter()
                .any(|n| m.payload.windows(n.len()).any(|w| w == *n))
            {
                found.push(m.info().map_err(|e| anyhow::anyhow!(e))?.stream_sequence);
            }
        }
    }
    let _ = stream.delete_consumer(&name).await;
    Ok(found)
}

/// Connects to the relay's NATS server (the stream must exist).
pub async fn jetstream(url: &str) -> anyhow::Result<async_nats::jetstream::Context> {
    connect(url).await
}

/// Publishes `events` in order, then waits for their acknowledgements in
/// order; returns the sequence of the last one acknowledged with every one
/// before it (publishing stops at the first failure).
async fn publish(
    js: &async_nats::jetstream::Context,
    tenant: &str,
    events: &[ChangeEvent],
) -> (Option<i64>, Option<anyhow::Error>) {
    let mut acks = Vec::with_capacity(events.len());
    let mut failure = None;
    // The batch was read after the erasures it reports committed, so its
    // own events are already scrubbed: one walk of the stream before
    // publishing any of them deletes every earlier message holding an
    // erased id.
    let erased: Vec<&str> = events
        .iter()
        .filter(|e| e.operation == "purged")
        .map(|e| e.record_id.as_str())
        .collect();
    if !erased.is_empty()
        && let Err(err) = forget(js, tenant, &erased).await
    {
        return (None, Some(err.context("deleting erased records' messages")));
    }
    for e in events {
        let body = match event_json(e) {
            Ok(b) => b,
            Err(err) => {
                failure = Some(err);
                break;
            }
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", e.id.as_str());
        match js
            .publish_with_headers(
                subject(tenant, &e.resource_type),
                headers,
                Bytes::from(body),
            )
            .await
        {
            Ok(ack) => acks.push((e.sequence, ack)),
            Err(err) => {
                failure = Some(err.into());
                break;
            }
        }
    }
    let mut done = None;
    for (sequence, ack) in acks {
        match ack.await {
            Ok(_) => done = Some(sequence),
            Err(err) => {
                failure.get_or_insert(err.into());
                break;
            }
        }
    }
    (done, failure)
}

/// The relay's loop, on the connection that holds its role. Returns (and
/// gives up the role) when NATS fails; the role is taken again, and NATS
/// reconnected, a moment later.
pub async fn run(mut conn: PgConnection, hub: Arc<Hub>, url: String) -> anyhow::Result<()> {
    let js = connect(&url).await?;
    let mut wake = hub.subscribe();
    loop {
        let behind: Vec<(String, i64)> = sqlx::query_as(
            "SELECT h.tenant_id, COALESCE(r.last_sequence, 0) FROM change_heads h \
             LEFT JOIN change_relay r ON r.tenant_id = h.tenant_id \
             WHERE h.last_sequence > COALESCE(r.last_sequence, 0) \
             ORDER BY h.tenant_id LIMIT $1",
        )
        .bind(TENANTS)
        .fetch_all(&mut conn)
        .await?;
        for (tenant, position) in &behind {
            let events = tenant_events(&mut conn, tenant, *position, BATCH).await?;
            let (done, failure) = publish(&js, tenant, &events).await;
            if let Some(last) = done {
                sqlx::query(
                    "INSERT INTO change_relay AS r (tenant_id, last_sequence) VALUES ($1, $2) \
                     ON CONFLICT (tenant_id) DO UPDATE SET last_sequence = GREATEST(r.last_sequence, EXCLUDED.last_sequence)",
                )
                .bind(tenant)
                .bind(last)
                .execute(&mut conn)
                .await?;
            }
            if let Some(e) = failure {
                return Err(e.context("publishing to JetStream"));
            }
        }
        if behind.is_empty() {
            tokio::select! {
                _ = wake.recv() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_keep_one_token_per_tenant() {
        assert_eq!(subject("acme.eu", "deal"), "crm.changes.acme~eu.deal");
        assert_eq!(subject("t-1", "line_item"), "crm.changes.t-1.line_item");
    }
}
