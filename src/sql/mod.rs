//! All the SQL text the service builds at run time, in one place. Values
//! are bind parameters, except where Postgres takes none (`SET`, the
//! single-message read), and there only ids checked against a fixed charset
//! ([`session`]). Identifiers come only from the protos' descriptors or from
//! the code, never from a request.
//!
//! - [`statements`]: the fixed statements of the record tables (get, insert,
//!   update, live ids...), derived from each entity's columns.
//! - [`list`]: List's queries (order, keyset page, search); [`filter`]
//!   compiles a parsed filter into them.
//! - [`side_write`]: the writes a write makes to other records, stamped and
//!   tenant-bound.
//! - [`session`]: the caller's row-level-security settings and the
//!   single-message read.
//! - [`changes`]: the change feed's reads.

pub mod changes;
pub mod filter;
pub mod list;
pub mod session;
pub mod side_write;
pub mod statements;
