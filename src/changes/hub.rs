//! Wake-ups. A watch sleeps until its tenant's feed may have moved:
//!
//! - in `relay` mode the sequencer, once a batch is numbered and committed,
//!   wakes the watches of its own process directly and sends
//!   `NOTIFY crm_changes, '<tenant>'` for every other process, which
//!   LISTENs and fans the tenant out to its watches. A local commit wakes the sequencer at once
//!   if it runs here, and is announced on `crm_outbox` for the sequencer of
//!   another process.
//! - in `counter` mode a commit's events are final at once: local watches
//!   are woken directly, and the tenants are announced on `crm_changes` for
//!   other processes.
//!
//! Announcements are batched: one statement for the commits of a moment,
//! outside the writes' transactions (a NOTIFY inside each write would
//! serialize commits: PostgreSQL takes a global lock to queue
//! notifications). Watches and the sequencer also re-check on their own, so
//! a lost notification delays an event, never loses it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast};

use super::Sequencing;

/// The channel the feed's wake-ups travel on.
pub const CHANNEL: &str = "crm_changes";
/// The channel on which commits wake the sequencer of another process.
pub const OUTBOX_CHANNEL: &str = "crm_outbox";
/// A payload meaning "every tenant".
pub const ALL: &str = "*";

/// Wake-ups for the feed's readers and workers in this process.
pub struct Hub {
    mode: Sequencing,
    /// This process holds the sequencer role (its commits need no
    /// announcement for it).
    sequencing_here: AtomicBool,
    /// The backend pid of the sequencer's connection when it runs here
    /// (0: elsewhere): its NOTIFYs need not wake this process's watches,
    /// which it wakes directly.
    sequencer_pid: AtomicI32,
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
            sequencing_here: AtomicBool::new(false),
            sequencer_pid: AtomicI32::new(0),
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
        }
        if self.mode == Sequencing::Counter || !self.sequencing_here.load(Ordering::Relaxed) {
            self.pending
                .lock()
                .expect("the pending set is never poisoned")
                .insert(tenant.to_owned());
            self.to_notify.notify_one();
        }
    }

    /// Whether the sequencer runs in this process, on the connection of
    /// backend `pid` (set by it).
    pub fn set_sequencing_here(&self, pid: Option<i32>) {
        self.sequencer_pid
            .store(pid.unwrap_or(0), Ordering::Relaxed);
        self.sequencing_here.store(pid.is_some(), Ordering::Relaxed);
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
                    if let Err(e) = listener.listen_all([CHANNEL, OUTBOX_CHANNEL]).await {
                        tracing::warn!(error = %e, "LISTEN crm_changes failed");
                    } else {
                        self.moved(ALL);
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(n)) if n.channel() == OUTBOX_CHANNEL => {
                                    self.committed.notify_one()
                                }
                                Ok(Some(n))
                                    if n.process_id() as i32
                                        == self.sequencer_pid.load(Ordering::Relaxed) => {}
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

    /// Tells other processes of this process's commits, one statement per
    /// batch: in `counter` mode, which tenants' feeds moved (for their
    /// watches); in `relay` mode, that the outbox has rows (for the
    /// sequencer, wherever it runs).
    pub async fn announce(self: Arc<Self>, pool: PgPool) {
        let channel = match self.mode {
            Sequencing::Counter => CHANNEL,
            Sequencing::Relay => OUTBOX_CHANNEL,
        };
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
                .bind(channel)
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
