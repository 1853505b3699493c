//! `request_id` idempotency (AIP-155), inside the write's own transaction.
//!
//! The key is claimed first (`INSERT … ON CONFLICT DO NOTHING`): a concurrent
//! duplicate blocks on the claim until the first transaction ends, then finds
//! its committed response. The response is stored with the write, so the
//! record, its side effects and its idempotency entry commit or vanish
//! together.

use sha2::{Digest, Sha256};

use crate::db::TenantTx;
use crate::error::{Error, invalid};

/// A write's idempotency key and what it is a key for.
#[derive(Clone, Debug)]
pub struct Idempotency {
    /// The client's `request_id`.
    pub request_id: uuid::Uuid,
    /// The full gRPC method name.
    pub method: &'static str,
    /// Hash of the request (without its request_id) and the caller's app.
    pub hash: [u8; 32],
}

impl Idempotency {
    /// Parses `request_id` (empty: none) and fingerprints the request.
    /// `request` is the encoded request message with `request_id` cleared.
    pub fn new(
        request_id: &str,
        method: &'static str,
        app_id: Option<&str>,
        request: &[u8],
    ) -> Result<Option<Self>, Error> {
        if request_id.is_empty() {
            return Ok(None);
        }
        // The hyphenated form only (36 characters), as the proto's pattern
        // declares: the same key always has the same spelling.
        let request_id = Some(request_id)
            .filter(|r| r.len() == 36)
            .and_then(|r| uuid::Uuid::try_parse(r).ok())
            .ok_or_else(|| {
                invalid(
                    "request_id",
                    "must be a UUID in its hyphenated form, e.g. 0b6f1f3e-8d3a-4c52-9f3e-2a1c5d7e9b10",
                )
            })?;
        let mut h = Sha256::new();
        h.update(method.as_bytes());
        h.update([0]);
        h.update(app_id.unwrap_or("").as_bytes());
        h.update([0]);
        h.update(request);
        Ok(Some(Self {
            request_id,
            method,
            hash: h.finalize().into(),
        }))
    }
}

/// Claims the key. `Ok(None)`: first use, go ahead. `Ok(Some(bytes))`: a
/// retry; `bytes` is the encoded first response. A different request under the
/// same key is REQUEST_ID_REUSED.
pub async fn claim(tx: &mut TenantTx, key: &Idempotency) -> Result<Option<Vec<u8>>, Error> {
    let tenant = tx.caller().tenant_id().to_owned();
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, request_id, method, request_hash) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(&tenant)
    .bind(key.request_id)
    .bind(key.method)
    .bind(&key.hash[..])
    .execute(tx.conn())
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    let (method, hash, response): (String, Vec<u8>, Option<Vec<u8>>) = sqlx::query_as(
        "SELECT method, request_hash, response FROM idempotency_keys \
         WHERE tenant_id = $1 AND request_id = $2",
    )
    .bind(&tenant)
    .bind(key.request_id)
    .fetch_one(tx.conn())
    .await?;
    if method != key.method || hash != key.hash {
        return Err(Error::RequestIdReused);
    }
    match response {
        // Erasure emptied the stored response of a write that returned an
        // erased record: a retry must not write it again.
        Some(bytes) if bytes.is_empty() => Err(Error::Precondition {
            reason: "RECORD_ERASED",
            message: "the response of this request_id held a record that was since erased; \
                      use a new request_id to write again"
                .into(),
        }),
        Some(bytes) => Ok(Some(bytes)),
        None => Err(Error::internal(anyhow::anyhow!(
            "idempotency key without a response"
        ))),
    }
}

/// Stores the response of a claimed key.
pub async fn record(tx: &mut TenantTx, key: &Idempotency, response: &[u8]) -> Result<(), Error> {
    let tenant = tx.caller().tenant_id().to_owned();
    sqlx::query(
        "UPDATE idempotency_keys SET response = $3 WHERE tenant_id = $1 AND request_id = $2",
    )
    .bind(&tenant)
    .bind(key.request_id)
    .bind(response)
    .execute(tx.conn())
    .await?;
    Ok(())
}
