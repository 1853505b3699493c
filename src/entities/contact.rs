//! Contact rules.

use crate::proto::Contact;
use crate::records::{Checker, Entity, Kind};

/// The contact kind.
pub static KIND: Kind = Kind::new(
    "crm.v1.Contact",
    "contacts",
    "con",
    "contact",
    &[],
    &["description"],
);

impl Entity for Contact {
    fn kind() -> &'static Kind {
        &KIND
    }

    fn check(&mut self, _old: Option<&Self>, _v: &mut Checker) {}
}
