//! Black-box tests against the real server and a real Postgres, one database
//! per test.

mod accounts;
mod activities;
mod auth;
mod batch;
mod catalog;
mod changes;
mod cluster;
mod contacts;
mod deals;
mod decode_props;
mod explorer;
mod fields;
mod hardening;
mod helpers;
mod history;
mod hostile;
mod lists;
mod platform;
mod quotes;
mod relay;
mod reliability;
mod rest;
mod roles;
mod scopes;
mod statements;
mod tenancy;
mod webhook_delivery;
mod webhooks;
