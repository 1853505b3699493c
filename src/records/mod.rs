//! The shared record mechanism: everything that is the same for the six
//! entities is written here once, driven by each entity's proto descriptor.
//!
//! - [`schema`]: per-entity metadata read from the descriptor (fields,
//!   `google.api.field_behavior`, storage columns, SQL statements).
//! - [`convert`]: record ↔ row JSON.
//! - [`fields`]: generic normalization and validation (trimming, bounds,
//!   required fields, `source`/`source_type`, references' formats).
//! - [`mask`]: update masks (AIP-134/161).
//! - [`page`]: tamper-evident keyset page tokens.
//! - [`idempotency`]: `request_id` handling.
//! - [`store`]: the operations — get, list, create, update, delete, undelete —
//!   with stamps, tenant + app scoping, versions and error mapping.
//! - [`effects`]: the writes a write makes to other records (rollups,
//!   exclusive flags, stamps), stamped and scoped the same way.
//!
//! An entity plugs in with its proto, its migration and an [`Entity`] impl
//! holding only its own rules (`crate::entities`).

pub mod batch;
pub mod convert;
pub mod effects;
pub mod erasure;
pub mod fields;
pub mod filter;
pub mod history;
pub mod idempotency;
pub mod mask;
pub mod page;
pub mod rules;
pub mod schema;
pub mod store;

use std::future::Future;
use std::sync::OnceLock;

use prost_types::Timestamp;

use crate::db::TenantTx;
use crate::error::Error;

pub use fields::Checker;
pub use idempotency::Idempotency;
pub use schema::Meta;
pub use store::{ListParams, Page, Store};

/// Static facts about an entity.
pub struct Kind {
    /// Full proto message name, e.g. `crm.v1.Account`.
    pub message: &'static str,
    /// Table name.
    pub table: &'static str,
    /// Id prefix without the underscore, e.g. `acc`.
    pub prefix: &'static str,
    /// Resource name as used in request paths and errors, e.g. `account`.
    pub resource: &'static str,
    /// Fields that name other records.
    pub references: &'static [Reference],
    /// Free-text fields: not trimmed, and allowed to be long.
    pub long_text: &'static [&'static str],
    /// Columns Postgres computes on every write, as SQL expressions over the
    /// incoming record `r` (exact `numeric` arithmetic).
    pub computed: &'static [(&'static str, &'static str)],
    /// The text fields `search` looks in, the first being the record's name
    /// (exact and prefix name matches rank first). Migration 0002 indexes the
    /// same document.
    pub search: &'static [&'static str],
    meta: OnceLock<Meta>,
}

impl Kind {
    /// Declares an entity kind.
    pub const fn new(
        message: &'static str,
        table: &'static str,
        prefix: &'static str,
        resource: &'static str,
        references: &'static [Reference],
        long_text: &'static [&'static str],
    ) -> Self {
        Self {
            message,
            table,
            prefix,
            resource,
            references,
            long_text,
            computed: &[],
            search: &[],
            meta: OnceLock::new(),
        }
    }

    /// The same kind with the fields `search` looks in.
    pub const fn with_search(mut self, search: &'static [&'static str]) -> Self {
        self.search = search;
        self
    }

    /// The same kind with columns computed by Postgres.
    pub const fn with_computed(
        mut self,
        computed: &'static [(&'static str, &'static str)],
    ) -> Self {
        self.computed = computed;
        self
    }

    /// The metadata derived from the descriptor (built on first use).
    pub fn meta(&'static self) -> &'static Meta {
        self.meta.get_or_init(|| Meta::build(self))
    }
}

/// A field naming another record (`account_id`, `contact_ids`, ...). Its value
/// must be an id of `target` that a caller of the same tenant (and app) can
/// see; the mechanism checks this on every write that changes it.
pub struct Reference {
    /// The field (a string or a repeated string).
    pub field: &'static str,
    /// The kind it names.
    pub target: &'static Kind,
}

/// The operation a write performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create.
    Create,
    /// Update (mask or populated fields).
    Update,
    /// Soft delete.
    Delete,
    /// Undelete.
    Undelete,
}

/// A write in progress, handed to an entity's hooks.
#[derive(Clone)]
pub struct Change<E> {
    /// What is being done.
    pub op: Op,
    /// The stored record (absent on create).
    pub old: Option<E>,
    /// The record as it will be (hooks may complete it before the write;
    /// after the write it is the stored row).
    pub new: E,
}

/// Mutable access to the header fields (1–14) that every resource shares.
pub struct Header<'a> {
    /// `id`.
    pub id: &'a mut String,
    /// `tenant_id`.
    pub tenant_id: &'a mut String,
    /// `app_id`.
    pub app_id: &'a mut Option<String>,
    /// `created_at`.
    pub created_at: &'a mut Option<Timestamp>,
    /// `updated_at`.
    pub updated_at: &'a mut Option<Timestamp>,
    /// `created_by`.
    pub created_by: &'a mut String,
    /// `updated_by`.
    pub updated_by: &'a mut String,
    /// `source`.
    pub source: &'a mut String,
    /// `source_type`.
    pub source_type: &'a mut String,
    /// `is_deleted`.
    pub is_deleted: &'a mut bool,
    /// `deleted_at`.
    pub deleted_at: &'a mut Option<Timestamp>,
    /// `deleted_by`.
    pub deleted_by: &'a mut Option<String>,
    /// `schema_version`.
    pub schema_version: &'a mut i32,
    /// `version`.
    pub version: &'a mut i32,
}

/// The shared header of a resource message.
pub trait Record {
    /// The record's id.
    fn id(&self) -> &str;
    /// The record's version.
    fn version(&self) -> i32;
    /// The caller's own key for the record (empty: none).
    fn external_id(&self) -> &str;
    /// Whether it is soft-deleted.
    fn is_deleted(&self) -> bool;
    /// When it was created.
    fn created_at(&self) -> Option<&Timestamp>;
    /// Mutable access to all header fields.
    fn header(&mut self) -> Header<'_>;
}

macro_rules! impl_record {
    ($($t:ty),* $(,)?) => {$(
        impl Record for $t {
            fn id(&self) -> &str { &self.id }
            fn version(&self) -> i32 { self.version }
            fn external_id(&self) -> &str { &self.external_id }
            fn is_deleted(&self) -> bool { self.is_deleted }
            fn created_at(&self) -> Option<&Timestamp> { self.created_at.as_ref() }
            fn header(&mut self) -> Header<'_> {
                Header {
                    id: &mut self.id,
                    tenant_id: &mut self.tenant_id,
                    app_id: &mut self.app_id,
                    created_at: &mut self.created_at,
                    updated_at: &mut self.updated_at,
                    created_by: &mut self.created_by,
                    updated_by: &mut self.updated_by,
                    source: &mut self.source,
                    source_type: &mut self.source_type,
                    is_deleted: &mut self.is_deleted,
                    deleted_at: &mut self.deleted_at,
                    deleted_by: &mut self.deleted_by,
                    schema_version: &mut self.schema_version,
                    version: &mut self.version,
                }
            }
        }
    )*};
}

use crate::proto::{Account, Activity, Contact, Deal, LineItem, Quote};
impl_record!(Account, Contact, Deal, Activity, Quote, LineItem);

/// An entity: a resource message with its own rules. Everything else comes
/// from the mechanism.
pub trait Entity:
    prost::Message + Default + Clone + PartialEq + Record + Send + Sync + 'static
{
    /// Static facts about the entity.
    fn kind() -> &'static Kind;

    /// Normalizes and validates the record's own fields, without the
    /// database: on create with the new record, on update with the merged one
    /// (`old` is then the stored record). Report problems on `v`.
    fn check(&mut self, old: Option<&Self>, v: &mut Checker);

    /// Rules that read or write other records, run in the write's
    /// transaction before the row is stored (generated numbers, cycles,
    /// exclusive flags). Runs for every [`Op`].
    fn before_write(
        _tx: &mut TenantTx,
        _change: &mut Change<Self>,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }

    /// Effects on other records after the row is stored (rollups), in the
    /// same transaction. Runs for every [`Op`].
    fn after_write(
        _tx: &mut TenantTx,
        _change: &Change<Self>,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }

    /// [`Entity::before_write`] for the changes of a batch (all of one
    /// [`Op`], or creates and updates of an upsert). `prefixes[i]` starts the
    /// request paths of item `i` (`requests[3].`). The default runs the
    /// single hook per item and collects every item's violations; entities
    /// whose hook queries override it with set-based statements.
    fn before_batch(
        tx: &mut TenantTx,
        changes: &mut [Change<Self>],
        prefixes: &[String],
    ) -> impl Future<Output = Result<(), Error>> + Send {
        async move {
            let mut all = crate::error::Violations::new();
            for (change, prefix) in changes.iter_mut().zip(prefixes) {
                match Self::before_write(tx, change).await {
                    Ok(()) => {}
                    Err(Error::Invalid(v)) => all.extend_prefixed(prefix, v),
                    Err(e) => return Err(e),
                }
            }
            all.into_result()
        }
    }

    /// [`Entity::after_write`] for the stored changes of a batch: side
    /// effects on other records, once per batch where the entity overrides
    /// it (the default runs the single hook per item).
    fn after_batch(
        tx: &mut TenantTx,
        changes: &[Change<Self>],
        prefixes: &[String],
    ) -> impl Future<Output = Result<(), Error>> + Send {
        async move {
            let mut all = crate::error::Violations::new();
            for (change, prefix) in changes.iter().zip(prefixes) {
                match Self::after_write(tx, change).await {
                    Ok(()) => {}
                    Err(Error::Invalid(v)) => all.extend_prefixed(prefix, v),
                    Err(e) => return Err(e),
                }
            }
            all.into_result()
        }
    }
}
