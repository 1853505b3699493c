//! Quote rules.

use crate::proto::Quote;
use crate::records::{Checker, Entity, Kind};

/// The quote kind.
pub static KIND: Kind = Kind::new(
    "crm.v1.Quote",
    "quotes",
    "qte",
    "quote",
    &[],
    &["description"],
);

impl Entity for Quote {
    fn kind() -> &'static Kind {
        &KIND
    }

    fn check(&mut self, _old: Option<&Self>, _v: &mut Checker) {}
}
