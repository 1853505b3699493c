//! crm: a multi-tenant CRM backend — accounts, contacts, deals, activities,
//! quotes and line items — served over gRPC from the `crm.v1` protos and
//! stored in PostgreSQL.
//!
//! Where things are:
//!
//! - [`cli`], [`config`], [`app`]: the `crm` binary, its settings, start-up
//!   and shutdown.
//! - [`net`]: the listeners' connection cap and the HTTP server loop.
//! - [`grpc`]: transport. [`grpc::layer`] is where every call enters: request
//!   id, authentication, the log line. The service shells call the records.
//! - [`auth`]: JWT verification; produces the [`auth::Caller`] (tenant, person,
//!   app) that every data path requires.
//! - [`changes`]: the change feed — its readers, sequencer, relay and
//!   retention.
//! - [`records`]: the shared record mechanism (stamps, scoping, versions,
//!   soft delete, idempotency, masks, paging, validation), written once.
//! - [`entities`]: each entity's own rules.
//! - [`db`]: pools, migrations, roles, and the tenant-bound transaction.
//! - [`sql`]: every piece of SQL text built at run time.
//! - [`proto`]: the generated `crm.v1` code and descriptor set.
//! - [`error`]: the error type; [`error::transport`] makes every status a
//!   caller sees (gRPC and REST).

pub mod app;
pub mod auth;
pub mod changes;
pub mod cli;
pub mod config;
pub mod custom;
pub mod db;
pub mod entities;
pub mod error;
pub mod failpoint;
pub mod grpc;
pub mod metrics;
pub mod net;
pub mod proto;
pub mod records;
pub mod rest;
pub mod sql;
pub mod webhooks;
