//! Webhooks (SPEC §12): a tenant's HTTP callbacks for its change events.
//! This module serves their definitions, delivery logs and redelivery;
//! every query runs in the caller's tenant transaction, so row-level
//! security confines it to the tenant (and an integration token to its
//! app's webhooks). [`delivery`] is the worker that POSTs the events.

pub mod delivery;
pub mod target;

use base64::Engine;
use chrono::{DateTime, Utc};

use crate::auth::Caller;
use crate::changes::feed::{OPERATIONS, RESOURCE_TYPES, may_read_type, pick, timestamp};
use crate::db::Db;
use crate::error::{Error, Violations, invalid};
use crate::proto::{
    ListWebhookDeliveriesResponse, RedeliverWebhookResponse, Webhook, WebhookDelivery,
};

/// Webhooks per tenant.
pub const MAX_PER_TENANT: i64 = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Default and largest page of ListWebhooks.
pub const DEFAULT_PAGE: i64 = 50;
/// Largest page of ListWebhooks.
pub const MAX_PAGE: i64 = 100;
/// Default page of ListWebhookDeliveries.
pub const DEFAULT_DELIVERY_PAGE: i64 = 50;
/// Largest page of ListWebhookDeliveries.
pub const MAX_DELIVERY_PAGE: i64 = 500;
/// The fields UpdateWebhook may change.
pub const UPDATABLE: [&str; 5] = [
    "url",
    "resource_types",
    "operations",
    "description",
    "enabled",
];

const COLUMNS: &str = "id, app_id, url, resource_types, operations, description, enabled, \
                       disabled_reason, created_at, updated_at, created_by, updated_by, version";

type Row = (
    String,
    Option<String>,
    String,
    Vec<String>,
    Vec<String>,
    String,
    bool,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    String,
    i32,
);

fn from_row(r: Row) -> Webhook {
    Webhook {
        id: r.0,
        app_id: r.1,
        url: r.2,
        resource_types: r.3,
        operations: r.4,
        description: r.5,
        enabled: Some(r.6),
        disabled_reason: r.7,
        secret: String::new(),
        created_at: Some(timestamp(r.8)),
        updated_at: Some(timestamp(r.9)),
        created_by: r.10,
        updated_by: r.11,
        version: r.12,
    }
}

/// A new signing secret: `whsec_` and the base64 of 32 random bytes.
fn new_secret() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal(anyhow::anyhow!("{e}")))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// The canonical form of a webhook id, or NOT_FOUND-worthy `None`.
fn webhook_id(id: &str) -> Option<String> {
    crate::records::fields::canonical_id_with("whk", id.trim())
}

/// The webhooks of callers, with the setting that lets them point at
/// private addresses (`CRM_WEBHOOKS_ALLOW_PRIVATE`).
#[derive(Clone)]
pub struct Webhooks {
    db: Db,
    allow_private: bool,
}

/// The resource types `caller`'s token may read, `None` when it may read
/// all: a webhook delivers only what every token that created or changed
/// it could read (migration 0017).
fn readable_types(caller: &Caller) -> Option<Vec<String>> {
    let types: Vec<String> = RESOURCE_TYPES
        .iter()
        .filter(|t| may_read_type(caller, t))
        .map(|t| (*t).to_owned())
        .collect();
    (types.len() < RESOURCE_TYPES.len()).then_some(types)
}

impl Webhooks {
    /// Webhooks stored in `db`.
    pub fn new(db: Db, allow_private: bool) -> Self {
        Self { db, allow_private }
    }

    /// Normalizes and checks the writable fields of `w` (those in `paths`),
    /// reporting every problem; resolves the URL when it is among them.
    async fn check(&self, w: &mut Webhook, paths: &[&str]) -> Result<(), Error> {
        let mut v = Violations::new();
        if paths.contains(&"url") {
            w.url = w.url.trim().to_owned();
            if w.url.is_empty() {
                v.add("webhook.url", "is required");
            } else {
                match target::check_form(&w.url) {
                    Err(e) => v.add("webhook.url", e),
                    Ok(parsed) => {
                        if let Err(e) = target::resolve(&parsed, self.allow_private).await {
                            v.add("webhook.url", e);
                        }
                    }
                }
            }
        }
        if paths.contains(&"resource_types") {
            w.resource_types = pick(
                "webhook.resource_types",
                &w.resource_types,
                &RESOURCE_TYPES,
                &mut v,
            )
            .into_iter()
            .map(str::to_owned)
            .collect();
        }
        if paths.contains(&"operations") {
            w.operations = pick("webhook.operations", &w.operations, &OPERATIONS, &mut v)
                .into_iter()
                .map(str::to_owned)
                .collect();
        }
        if paths.contains(&"description") {
            if w.description.chars().count() > MAX_DESCRIPTION_CHARS {
                v.add(
                    "webhook.description",
                    format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
                );
            } else if w.description.contains('\0') {
                v.add("webhook.description", "must not contain NUL");
            }
        }
        v.into_result()
    }

    /// CreateWebhook: the stored webhook with its secret (the only time it
    /// is shown).
    pub async fn create(&self, caller: &Caller, mut w: Webhook) -> Result<Webhook, Error> {
        self.check(
            &mut w,
            &["url", "resource_types", "operations", "description"],
        )
        .await?;
        let secret = new_secret()?;
        let id = format!("whk_{}", ulid::Ulid::generate());
        let mut tx = self.db.begin(caller).await?;
        // One tenant's creations take turns, so the cap holds.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('webhooks:' || $1, 0))")
            .bind(caller.tenant_id())
            .execute(tx.conn())
            .await?;
        let count: i64 = tx
            .across_apps(async |conn| {
                Ok(
                    sqlx::query_scalar("SELECT count(*) FROM webhooks WHERE tenant_id = $1")
                        .bind(caller.tenant_id())
                        .fetch_one(conn)
                        .await?,
                )
            })
            .await?;
        if count >= MAX_PER_TENANT {
            return Err(Error::Precondition {
                reason: "WEBHOOK_LIMIT",
                message: format!(
                    "a tenant has at most {MAX_PER_TENANT} webhooks; delete one first"
                ),
            });
        }
        let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhooks (tenant_id, id, app_id, url, resource_types, operations, description, \
                                   enabled, secret, created_at, updated_at, created_by, updated_by, position, \
                                   readable_types) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), now(), $10, $10, \
                     COALESCE((SELECT last_sequence FROM change_heads WHERE tenant_id = $1), 0), $11) \
             RETURNING {COLUMNS}"
        )))
        .bind(caller.tenant_id())
        .bind(&id)
        .bind(caller.app_id())
        .bind(&w.url)
        .bind(&w.resource_types)
        .bind(&w.operations)
        .bind(&w.description)
        .bind(w.enabled.unwrap_or(true))
        .bind(&secret)
        .bind(caller.sub())
        .bind(readable_types(caller))
        .fetch_one(tx.conn())
        .await?;
        tx.commit().await?;
        let mut stored = from_row(row);
        stored.secret = secret;
        Ok(stored)
    }

    /// GetWebhook.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<Webhook, Error> {
        let not_found = || Error::NotFound {
            resource: "webhook",
            id: id.to_owned(),
        };
        let id = webhook_id(id).ok_or_else(not_found)?;
        let mut tx = self.db.begin(caller).await?;
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM webhooks WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(caller.tenant_id())
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?;
        tx.end_read();
        row.map(from_row).ok_or_else(not_found)
    }

    /// ListWebhooks: newest first; the page token is the last webhook's id
    /// (ULIDs order by creation).
    pub async fn list(
        &self,
        caller: &Caller,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<Webhook>, String), Error> {
        if page_size < 0 {
            return Err(invalid("page_size", "must not be negative"));
        }
        let limit = match i64::from(page_size) {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let before = if page_token.is_empty() {
            None
        } else {
            Some(
                webhook_id(page_token)
                    .ok_or_else(|| invalid("page_token", "is not a token this method returned"))?,
            )
        };
        let mut tx = self.db.begin(caller).await?;
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM webhooks WHERE tenant_id = $1 AND ($2::text IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        )))
        .bind(caller.tenant_id())
        .bind(&before)
        .bind(limit + 1)
        .fetch_all(tx.conn())
        .await?;
        tx.end_read();
        let mut hooks: Vec<Webhook> = rows.into_iter().map(from_row).collect();
        let next = if hooks.len() as i64 > limit {
            hooks.truncate(limit as usize);
            hooks.last().map(|w| w.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((hooks, next))
    }

    /// UpdateWebhook: the fields of `mask` (or those `patch` populates).
    pub async fn update(
        &self,
        caller: &Caller,
        mut patch: Webhook,
        mask: &[String],
    ) -> Result<Webhook, Error> {
        let given_id = patch.id.clone();
        let not_found = || Error::NotFound {
            resource: "webhook",
            id: given_id.clone(),
        };
        let id = webhook_id(&patch.id).ok_or_else(not_found)?;
        let paths: Vec<&str> = if mask.is_empty() {
            let mut p = Vec::new();
            if !patch.url.is_empty() {
                p.push("url");
            }
            if !patch.resource_types.is_empty() {
                p.push("resource_types");
            }
            if !patch.operations.is_empty() {
                p.push("operations");
            }
            if !patch.description.is_empty() {
                p.push("description");
            }
            if patch.enabled.is_some() {
                p.push("enabled");
            }
            p
        } else {
            let mut v = Violations::new();
            let mut p = Vec::new();
            for (i, path) in mask.iter().enumerate() {
                // `version` is a precondition, not a field: as for records,
                // naming it writes nothing.
                if path == "version" {
                    continue;
                }
                match UPDATABLE.iter().find(|u| **u == path.as_str()) {
                    Some(u) => p.push(*u),
                    None => v.add(
                        format!("update_mask.paths[{i}]"),
                        format!("must be one of {}", UPDATABLE.join(", ")),
                    ),
                }
            }
            v.into_result()?;
            p
        };
        self.check(&mut patch, &paths).await?;
        let mut tx = self.db.begin(caller).await?;
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM webhooks WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        )))
        .bind(caller.tenant_id())
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?;
        let old = from_row(row.ok_or_else(not_found)?);
        if patch.version != 0 && patch.version != old.version {
            return Err(Error::VersionMismatch {
                resource: "webhook",
                id,
                expected: patch.version,
                current: old.version,
            });
        }
        let mut new = old.clone();
        for p in &paths {
            match *p {
                "url" => new.url = patch.url.clone(),
                "resource_types" => new.resource_types = patch.resource_types.clone(),
                "operations" => new.operations = patch.operations.clone(),
                "description" => new.description = patch.description.clone(),
                _ => new.enabled = Some(patch.enabled.unwrap_or(true)),
            }
        }
        if new == old {
            tx.end_read();
            return Ok(old);
        }
        let enabled = new.enabled.unwrap_or(true);
        let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE webhooks SET url = $3, resource_types = $4, operations = $5, description = $6, \
                 enabled = $7, disabled_reason = CASE WHEN $7 THEN '' ELSE disabled_reason END, \
                 next_attempt_at = CASE WHEN $9 THEN '-infinity' ELSE next_attempt_at END, \
                 failing_since = CASE WHEN $9 THEN NULL ELSE failing_since END, \
                 readable_types = CASE WHEN $10::text[] IS NULL THEN readable_types \
                     WHEN readable_types IS NULL THEN $10 \
                     ELSE ARRAY(SELECT unnest(readable_types) INTERSECT SELECT unnest($10::text[])) END, \
                 updated_at = now(), updated_by = $8, version = version + 1 \
             WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
        )))
        .bind(caller.tenant_id())
        .bind(&id)
        .bind(&new.url)
        .bind(&new.resource_types)
        .bind(&new.operations)
        .bind(&new.description)
        .bind(enabled)
        .bind(caller.sub())
        // Enabling it again or pointing it elsewhere: the pending event is
        // tried at once, and the 5 days of failure start over.
        .bind(enabled && (old.enabled == Some(false) || new.url != old.url))
        .bind(readable_types(caller))
        .fetch_one(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(from_row(row))
    }

    /// DeleteWebhook.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), Error> {
        let not_found = || Error::NotFound {
            resource: "webhook",
            id: id.to_owned(),
        };
        let id = webhook_id(id).ok_or_else(not_found)?;
        let mut tx = self.db.begin(caller).await?;
        let deleted = sqlx::query("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2")
            .bind(caller.tenant_id())
            .bind(&id)
            .execute(tx.conn())
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(not_found());
        }
        tx.commit().await
    }

    /// The canonical id of a webhook of the caller, or NOT_FOUND.
    async fn visible(&self, tx: &mut crate::db::TenantTx, id: &str) -> Result<String, Error> {
        let not_found = || Error::NotFound {
            resource: "webhook",
            id: id.to_owned(),
        };
        let canonical = webhook_id(id).ok_or_else(not_found)?;
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM webhooks WHERE tenant_id = $1 AND id = $2")
                .bind(tx.caller().tenant_id().to_owned())
                .bind(&canonical)
                .fetch_optional(tx.conn())
                .await?;
        found.map(|_| canonical).ok_or_else(not_found)
    }

    /// ListWebhookDeliveries: newest first; the page token is the last
    /// entry's number.
    pub async fn deliveries(
        &self,
        caller: &Caller,
        id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<ListWebhookDeliveriesResponse, Error> {
        if page_size < 0 {
            return Err(invalid("page_size", "must not be negative"));
        }
        let limit = match i64::from(page_size) {
            0 => DEFAULT_DELIVERY_PAGE,
            n => n.min(MAX_DELIVERY_PAGE),
        };
        let before: Option<i64> = if page_token.is_empty() {
            None
        } else {
            Some(
                page_token
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid("page_token", "is not a token this method returned"))?,
            )
        };
        let mut tx = self.db.begin(caller).await?;
        let id = self.visible(&mut tx, id).await?;
        type DRow = (
            i64,
            String,
            i64,
            i32,
            i32,
            String,
            DateTime<Utc>,
            i64,
            Option<DateTime<Utc>>,
        );
        let rows: Vec<DRow> = sqlx::query_as(
            "SELECT id, event_id, sequence, attempt, status_code, error, attempted_at, duration_ms, \
                    next_attempt_at \
             FROM webhook_deliveries WHERE tenant_id = $1 AND webhook_id = $2 \
               AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
        )
        .bind(caller.tenant_id())
        .bind(&id)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(tx.conn())
        .await?;
        tx.end_read();
        let more = rows.len() as i64 > limit;
        let rows = &rows[..rows.len().min(limit as usize)];
        let next_page_token = if more {
            rows.last().map(|r| r.0.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        let deliveries = rows
            .iter()
            .map(|r| WebhookDelivery {
                event_id: r.1.clone(),
                sequence: r.2,
                attempt: r.3,
                status_code: r.4,
                error: r.5.clone(),
                attempted_at: Some(timestamp(r.6)),
                duration_ms: r.7,
                next_attempt_at: r.8.map(timestamp),
            })
            .collect();
        Ok(ListWebhookDeliveriesResponse {
            deliveries,
            next_page_token,
        })
    }

    /// RedeliverWebhook: moves the webhook's position to `after_sequence`
    /// and drops any pending retry; a worker in the middle of an attempt
    /// (another generation) leaves the new position alone.
    pub async fn redeliver(
        &self,
        caller: &Caller,
        id: &str,
        after_sequence: i64,
    ) -> Result<RedeliverWebhookResponse, Error> {
        if after_sequence < 0 {
            return Err(invalid("after_sequence", "must not be negative"));
        }
        let mut tx = self.db.begin(caller).await?;
        let id = self.visible(&mut tx, id).await?;
        let (latest, oldest) = crate::changes::feed::head(&mut tx).await?;
        if after_sequence > latest {
            return Err(invalid(
                "after_sequence",
                format!("must be at most the latest sequence, {latest}"),
            ));
        }
        crate::changes::feed::check_position(after_sequence, oldest)?;
        sqlx::query(
            "UPDATE webhooks SET position = $3, attempt = 0, first_attempt_at = NULL, \
                 next_attempt_at = '-infinity', generation = generation + 1 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(caller.tenant_id())
        .bind(&id)
        .bind(after_sequence)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(RedeliverWebhookResponse {
            after_sequence,
            latest_sequence: latest,
        })
    }
}
