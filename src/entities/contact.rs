//! Contact rules: a name or an email; `display_name` computed from the names;
//! a valid email, unique within (tenant, account) among live contacts; E.164
//! phone; one primary contact per account; `opted_in_at` stamped on opt-in.

use crate::db::TenantTx;
use crate::error::Error;
use crate::proto::Contact;
use crate::records::effects::SideWrite;
use crate::records::store::now;
use crate::records::{Change, Checker, Entity, Kind, Op, Reference};

use super::{Flag, FlagChange};

/// The contact kind.
pub static KIND: Kind = Kind::new(
    "crm.v1.Contact",
    "contacts",
    "con",
    "contact",
    &[
        Reference {
            field: "account_id",
            target: &super::account::KIND,
        },
        Reference {
            field: "reports_to_contact_id",
            target: &KIND,
        },
    ],
    &[],
)
.with_search(&["display_name", "first_name", "last_name", "email"]);

fn full_name(c: &Contact) -> String {
    let name = format!("{} {}", c.first_name, c.last_name);
    let name = name.trim();
    let name = if name.is_empty() { &c.email } else { name };
    // Two names at their bounds are longer than display_name's: the computed
    // name is cut to its declared bounds, never refused.
    let rules = KIND
        .meta()
        .field("display_name")
        .and_then(|f| f.rules.string.as_ref());
    let max_chars = rules.and_then(|r| r.max_len).unwrap_or(u64::MAX);
    let max_bytes = rules.and_then(|r| r.max_bytes).unwrap_or(u64::MAX);
    let mut end = 0;
    for (chars, (i, ch)) in name.char_indices().enumerate() {
        if chars as u64 >= max_chars || (i + ch.len_utf8()) as u64 > max_bytes {
            break;
        }
        end = i + ch.len_utf8();
    }
    name[..end].trim_end().to_owned()
}

/// Clears the primary flag of an account's other live contacts: `$3` the
/// accounts, `$4` the contacts being written.
static CLEAR_PRIMARY: SideWrite = SideWrite::new(
    "contacts",
    "c",
    "is_primary = false",
    "c.account_id = ANY($3) AND c.id <> ALL($4) AND c.is_primary AND NOT c.is_deleted",
);

impl Entity for Contact {
    fn kind() -> &'static Kind {
        &KIND
    }

    fn check(&mut self, old: Option<&Self>, v: &mut Checker) {
        self.email = self.email.to_lowercase();
        // At least one of first_name, last_name, email: the proto's
        // (crm.v1.at_least_one_of).
        // Computed when blank, and kept computed while the client never set
        // it: a stored name equal to the old computed one follows the names.
        let was_computed = old.is_some_and(|o| o.display_name == full_name(o));
        if self.display_name.is_empty()
            || (was_computed && old.is_some_and(|o| o.display_name == self.display_name))
        {
            self.display_name = full_name(self);
        }
        if !self.reports_to_contact_id.is_empty() && self.reports_to_contact_id == self.id {
            v.add("reports_to_contact_id", "cannot be the contact itself");
        }
        if self.opted_in != Some(true) {
            // Opting out (or never opting in) leaves no opt-in to record.
            self.opted_in_at = None;
        }
    }

    async fn before_write(tx: &mut TenantTx, change: &mut Change<Self>) -> Result<(), Error> {
        Self::before_batch(tx, std::slice::from_mut(change), &[String::new()]).await
    }

    /// Stamps opt-ins, then keeps one primary contact per account for the
    /// whole batch: one lock statement and one clearing update.
    async fn before_batch(
        tx: &mut TenantTx,
        changes: &mut [Change<Self>],
        prefixes: &[String],
    ) -> Result<(), Error> {
        for change in changes.iter_mut() {
            if change.new.opted_in == Some(true) && change.new.opted_in_at.is_none() {
                // The write's own time.
                change.new.opted_in_at = Some(change.new.updated_at.unwrap_or_else(now));
            }
        }
        fn flag(c: &Contact) -> Flag<'_> {
            Flag {
                id: &c.id,
                set: c.is_primary,
                deleted: c.is_deleted,
                scope: &c.account_id,
            }
        }
        let items: Vec<FlagChange<'_>> = changes
            .iter()
            .map(|c| FlagChange {
                old: c.old.as_ref().map(flag),
                new: flag(&c.new),
                undelete: c.op == Op::Undelete,
            })
            .collect();
        let demoted = super::make_exclusive(
            tx,
            "primary_contact",
            &CLEAR_PRIMARY,
            &items,
            "contact.is_primary",
            prefixes,
        )
        .await?;
        for i in demoted {
            changes[i].new.is_primary = Some(false);
        }
        Ok(())
    }
}
