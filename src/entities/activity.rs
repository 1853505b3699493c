//! Activity rules.

use crate::proto::Activity;
use crate::records::{Checker, Entity, Kind};

/// The activity kind.
pub static KIND: Kind = Kind::new(
    "crm.v1.Activity",
    "activities",
    "act",
    "activity",
    &[],
    &["description"],
);

impl Entity for Activity {
    fn kind() -> &'static Kind {
        &KIND
    }

    fn check(&mut self, _old: Option<&Self>, _v: &mut Checker) {}
}
