//! Deal rules.

use crate::proto::Deal;
use crate::records::{Checker, Entity, Kind};

/// The deal kind.
pub static KIND: Kind = Kind::new(
    "crm.v1.Deal",
    "deals",
    "deal",
    "deal",
    &[],
    &["description"],
);

impl Entity for Deal {
    fn kind() -> &'static Kind {
        &KIND
    }

    fn check(&mut self, _old: Option<&Self>, _v: &mut Checker) {}
}
