//! LineItem rules.

use crate::proto::LineItem;
use crate::records::{Checker, Entity, Kind};

/// The line_item kind.
pub static KIND: Kind = Kind::new(
    "crm.v1.LineItem",
    "line_items",
    "li",
    "line_item",
    &[],
    &["description"],
);

impl Entity for LineItem {
    fn kind() -> &'static Kind {
        &KIND
    }

    fn check(&mut self, _old: Option<&Self>, _v: &mut Checker) {}
}
