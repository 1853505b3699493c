//! Wake-ups. A watch sleeps until its tenant's feed may have moved:
//!
//! - in `relay` mode the sequencer, after numbering a batch, sends
//!   `NOTIFY crm_changes, '<tenant>'`; every process LISTENs and fans the
//!   tenant out to its watches. Local commits only wake the sequencer.
//! - in `counter` mode a commit's events are final at once: local watches
//!   are woken directly, and the tenants are NOTIFYed for other processes
//!   by one batched statement (a NOTIFY inside each write would serialize
//!   commits: PostgreSQL takes a global lock to queue notifications).
//!
//! Watches also re-check on their own every few seconds, so a lost
//! notification delays an event, never loses it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast};

use super::Sequencing;

/// The channel the feed's wake-ups travel on.
pub const CHANNEL: &str = "crm_changes";
/// A payload meaning "every tenant".
pub const ALL: &str = "*";

/// Wake-ups for the feed's readers and workers in this process.
pub struct Hub {
    mode: Sequencing,
    moved: broadcast::Sender<Arc<str>>,
    committed: Notify,
    pending: Mutex<HashSet<String>>,
    to_notify: Notify,
}

impl Hub {
    /// A hub for `mode`.
    pub fn new(mode: Sequencing) -> Arc<Self> {
        Arc::new(Self {
            mode,
            moved: broadcast::channel(1024).0,
            committed: Notify::new(),
            pending: Mutex::new(HashSet::new()),
            to_notify: Notify::new(),
        })
    }

    /// A write of `tenant` committed in this process.
    pub fn committed(&self, tenant: &str) {
        self.committed.notify_one();
        if self.mode == Sequencing::Counter {
            self.moved(tenant);
            self.pending
                .lock()
                .expect("the pending set is never poisoned")
                .insert(tenant.to_owned());
            self.to_notify.notify_one();
        }
    }

    /// `tenant`'s feed moved (`ALL`: any tenant's may have).
    pub fn moved(&self, tenant: &str) {
        // No receiver is fine: nobody is watching.
        let _ = self.moved.send(Arc::from(tenant));
    }

    /// Wake-ups of tenants whose feed moved.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.moved.subscribe()
    }

    /// Resolves at the next local commit (the sequencer's wake-up).
    pub async fn next_commit(&self) {
        self.committed.notified().await;
    }

    /// Forwards `NOTIFY crm_changes` to this process's watches, for as long
    /// as the process runs (reconnecting; after a reconnect every watch
    /// re-checks, as notifications may have been missed meanwhile).
    pub async fn listen(self: Arc<Self>, pool: PgPool) {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN crm_changes failed");
                    } else {
                        self.moved(ALL);
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(n)) => self.moved(n.payload()),
                                // The connection was lost and re-made.
                                Ok(None) => self.moved(ALL),
                                Err(e) => {
                                    tracing::warn!(error = %e, "LISTEN crm_changes connection lost");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "connecting to LISTEN crm_changes"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// In `counter` mode, tells other processes which tenants' feeds moved:
    /// one statement per batch of local commits.
    pub async fn announce(self: Arc<Self>, pool: PgPool) {
        if self.mode != Sequencing::Counter {
            return;
        }
        loop {
            self.to_notify.notified().await;
            let tenants: Vec<String> = self
                .pending
                .lock()
                .expect("the pending set is never poisoned")
                .drain()
                .collect();
            if tenants.is_empty() {
                continue;
            }
            if let Err(e) = sqlx::query("SELECT pg_notify($1, t) FROM unnest($2::text[]) t")
                .bind(CHANNEL)
                .bind(&tenants)
                .execute(&pool)
                .await
            {
                // Other processes' watches find the events on their own
                // re-check a few seconds later.
                tracing::debug!(error = %e, "announcing feed changes");
            }
        }
    }
}
