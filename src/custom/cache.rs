//! The definitions each write checks, cached per tenant and invalidated
//! across replicas: a definition change sends `NOTIFY
//! crm_field_definitions, '<tenant>'` in its transaction; every process
//! LISTENs and drops that tenant's entry, so the next write loads the
//! definitions again (a change is enforced everywhere as soon as the
//! notification arrives, typically within milliseconds). While the
//! listening connection is down nothing is cached (every write reads the
//! definitions), and when it comes back every entry is dropped: a
//! notification lost meanwhile cannot leave a stale entry behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use super::values::{Definition, FieldType, ResourceSchema, empty};
use crate::auth::Caller;
use crate::db::Db;
use crate::error::Error;

/// The channel definition changes are announced on (payload: the tenant).
pub const CHANNEL: &str = "crm_field_definitions";
/// Tenants kept at most; beyond, the cache starts over.
const MAX_TENANTS: usize = 100_000;

type TenantEntry = Arc<HashMap<String, Arc<ResourceSchema>>>;

/// Per-tenant definitions, by resource type.
pub struct Schemas {
    entries: Mutex<HashMap<String, TenantEntry>>,
    /// Bumped by every invalidation: a load that started before one does
    /// not store what it read.
    generation: AtomicU64,
    /// True while the listening connection is up (entries may be kept).
    listening: AtomicBool,
    /// Woken by every change announced (the index worker waits on it).
    pub changed: Notify,
}

/// One definition row: id, resource_type, key, type, options, required,
/// is_unique, max_length, minimum, maximum.
pub type DefRow = (
    String,
    String,
    String,
    String,
    Vec<String>,
    bool,
    bool,
    Option<i32>,
    Option<f64>,
    Option<f64>,
);

/// The columns of [`DefRow`].
pub const DEF_COLUMNS: &str =
    "id, resource_type, key, type, options, required, is_unique, max_length, minimum, maximum";

/// The definition of a row.
pub fn definition(r: DefRow) -> Option<(String, Definition)> {
    Some((
        r.1,
        Definition {
            id: r.0,
            key: r.2,
            ty: FieldType::parse(&r.3)?,
            options: r.4,
            required: r.5,
            unique: r.6,
            max_length: r.7.and_then(|n| u32::try_from(n).ok()),
            minimum: r.8,
            maximum: r.9,
        },
    ))
}

impl Schemas {
    /// An empty cache (nothing is kept until [`Schemas::listen`] runs).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    /// The caller's tenant's definitions of `resource`.
    pub async fn of(
        &self,
        db: &Db,
        caller: &Caller,
        resource: &str,
    ) -> Result<Arc<ResourceSchema>, Error> {
        let tenant = caller.tenant_id();
        if let Some(entry) = self.lock().get(tenant) {
            return Ok(entry.get(resource).cloned().unwrap_or_else(empty));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let mut tx = db.begin(caller).await?;
        let rows: Vec<DefRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DEF_COLUMNS} FROM field_definitions WHERE tenant_id = $1"
        )))
        .bind(tenant)
        .fetch_all(tx.conn())
        .await?;
        tx.end_read();
        let mut by_resource: HashMap<String, Vec<Definition>> = HashMap::new();
        for (resource, d) in rows.into_iter().filter_map(definition) {
            by_resource.entry(resource).or_default().push(d);
        }
        let entry: TenantEntry = Arc::new(
            by_resource
                .into_iter()
                .map(|(r, defs)| (r, Arc::new(ResourceSchema::new(defs))))
                .collect(),
        );
        let mut entries = self.lock();
        if self.listening.load(Ordering::Acquire)
            && self.generation.load(Ordering::Acquire) == generation
        {
            if entries.len() >= MAX_TENANTS {
                entries.clear();
            }
            entries.insert(tenant.to_owned(), entry.clone());
        }
        Ok(entry.get(resource).cloned().unwrap_or_else(empty))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets `tenant`'s definitions (they changed).
    pub fn invalidate(&self, tenant: &str) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(tenant);
        drop(entries);
        self.changed.notify_waiters();
    }

    /// Forgets every tenant's definitions.
    fn invalidate_all(&self) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
        drop(entries);
        self.changed.notify_waiters();
    }

    /// Listens for definition changes on the database at `url`, for as long
    /// as the process runs.
    pub async fn listen(self: Arc<Self>, url: String) {
        loop {
            match PgListener::connect(&url).await {
                Ok(mut listener) => match listener.listen(CHANNEL).await {
                    Ok(()) => {
                        // Anything announced before now is read afresh.
                        self.invalidate_all();
                        self.listening.store(true, Ordering::Release);
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(n)) => self.invalidate(n.payload()),
                                // The connection was lost: notifications may
                                // be lost too; start over.
                                Ok(None) => break,
                                Err(e) => {
                                    tracing::warn!(error = %e, "field definition notifications lost; not caching definitions until they are back");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot LISTEN for field definition changes")
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "cannot connect to LISTEN for field definition changes")
                }
            }
            self.listening.store(false, Ordering::Release);
            self.invalidate_all();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
