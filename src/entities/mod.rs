//! Per-entity rules: each module declares its [`Kind`](crate::records::Kind)
//! (table, id prefix, references) and implements
//! [`Entity`](crate::records::Entity) with only what is particular to it.

pub mod account;
pub mod activity;
pub mod contact;
pub mod deal;
pub mod line_item;
pub mod quote;
pub mod rules;
