//! Black-box tests against the real server and a real Postgres, one database
//! per test.

mod accounts;
mod auth;
mod helpers;
mod platform;
