//! Activity rules: logged against an account, a deal or a contact; `type` one
//! of call/email/meeting/note/task (mirrored with `activity_type`);
//! `occurred_at` and `activity_date` mirrored. Logging one moves the
//! account's `last_activity_at` (directly, or through the deal's or the
//! contacts' account) and each involved contact's `last_interaction_at`.
//! Activities are immutable: the API has no update or delete for them.

use prost_types::Timestamp;

use crate::db::TenantTx;
use crate::error::Error;
use crate::proto::Activity;
use crate::records::effects::{self, SideWrite};
use crate::records::store::now;
use crate::records::{Change, Checker, Entity, Kind, Op, Reference};

/// The activity kind.
pub static KIND: Kind = Kind::new(
    "crm.v1.Activity",
    "activities",
    "act",
    "activity",
    &[
        Reference {
            field: "account_id",
            target: &super::account::KIND,
        },
        Reference {
            field: "deal_id",
            target: &super::deal::KIND,
        },
        Reference {
            field: "contact_id",
            target: &super::contact::KIND,
        },
        Reference {
            field: "contact_ids",
            target: &super::contact::KIND,
        },
    ],
    &["description", "notes"],
)
.with_search(&["subject", "description", "notes"]);

/// Moves accounts' `last_activity_at` to their latest new activity: the
/// activities' own accounts, their deals', and their contacts', of whichever
/// app. `$3` accounts, `$4` deals, `$5` times (per activity), `$6` contacts,
/// `$7` times (per involved contact).
static ACCOUNTS_ACTIVE: SideWrite = SideWrite::new(
    "accounts",
    "a",
    "last_activity_at = l.at",
    "a.id = l.id AND NOT a.is_deleted AND (a.last_activity_at IS NULL OR a.last_activity_at < l.at)",
)
.from(
    "(SELECT id, max(at) AS at FROM ( \
        SELECT NULLIF(i.account_id, '') AS id, i.at \
          FROM unnest($3::text[], $4::text[], $5::timestamptz[]) AS i(account_id, deal_id, at) \
        UNION ALL \
        SELECT d.account_id, i.at \
          FROM unnest($3::text[], $4::text[], $5::timestamptz[]) AS i(account_id, deal_id, at) \
          JOIN deals d ON d.tenant_id = $1 AND d.id = i.deal_id \
        UNION ALL \
        SELECT c.account_id, x.at \
          FROM unnest($6::text[], $7::timestamptz[]) AS x(id, at) \
          JOIN contacts c ON c.tenant_id = $1 AND c.id = x.id) t \
      WHERE id IS NOT NULL GROUP BY id) l",
);

/// Moves contacts' `last_interaction_at` to their latest new activity: `$3`
/// contacts, `$4` times.
static CONTACTS_MET: SideWrite = SideWrite::new(
    "contacts",
    "c",
    "last_interaction_at = l.at",
    "c.id = l.id AND NOT c.is_deleted \
     AND (c.last_interaction_at IS NULL OR c.last_interaction_at < l.at)",
)
.from(
    "(SELECT id, max(at) AS at FROM unnest($3::text[], $4::timestamptz[]) AS x(id, at) GROUP BY id) l",
);

fn to_chrono(ts: &Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(ts.seconds, ts.nanos as u32).unwrap_or_default()
}

impl Entity for Activity {
    fn kind() -> &'static Kind {
        &KIND
    }

    fn check(&mut self, _old: Option<&Self>, v: &mut Checker) {
        // At least one of account_id, deal_id, contact_id: the proto's
        // (crm.v1.at_least_one_of).
        // The allowed types are the proto's (buf.validate.field).string.in.
        let types = &KIND.meta().field("type").expect("Activity.type").allowed;
        let given = self.activity_type.to_lowercase();
        if self.r#type.is_empty() && types.contains(&given) {
            self.r#type = given;
        }
        if self.activity_type.is_empty() {
            self.activity_type = self.r#type.clone();
        }
        match (self.occurred_at, self.activity_date) {
            (Some(a), Some(b)) if a != b => v.add(
                "activity_date",
                "must equal occurred_at (they mirror each other)",
            ),
            (Some(a), None) => self.activity_date = Some(a),
            (None, Some(b)) => self.occurred_at = Some(b),
            (None, None) => {
                let at = self.created_at.unwrap_or_else(now);
                self.occurred_at = Some(at);
                self.activity_date = Some(at);
            }
            _ => {}
        }
    }

    async fn after_write(tx: &mut TenantTx, change: &Change<Self>) -> Result<(), Error> {
        Self::after_batch(tx, std::slice::from_ref(change), &[String::new()]).await
    }

    /// Moves `last_activity_at` of the accounts and `last_interaction_at`
    /// of the contacts the batch's new activities involve, each to its
    /// latest activity: two statements for any number of activities.
    async fn after_batch(
        tx: &mut TenantTx,
        changes: &[Change<Self>],
        _prefixes: &[String],
    ) -> Result<(), Error> {
        let (mut accounts, mut deals, mut ats) = (Vec::new(), Vec::new(), Vec::new());
        let (mut contacts, mut contact_ats) = (Vec::new(), Vec::new());
        for change in changes.iter().filter(|c| c.op == Op::Create) {
            let a = &change.new;
            let at = to_chrono(&a.occurred_at.unwrap_or_else(now));
            accounts.push(a.account_id.as_str());
            deals.push(a.deal_id.as_str());
            ats.push(at);
            let own = (!a.contact_id.is_empty() && !a.contact_ids.contains(&a.contact_id))
                .then_some(&a.contact_id);
            for c in a.contact_ids.iter().chain(own) {
                contacts.push(c.as_str());
                contact_ats.push(at);
            }
        }
        if ats.is_empty() {
            return Ok(());
        }
        effects::apply(tx, &ACCOUNTS_ACTIVE, |q| {
            q.bind(&accounts)
                .bind(&deals)
                .bind(&ats)
                .bind(&contacts)
                .bind(&contact_ats)
        })
        .await?;
        if !contacts.is_empty() {
            effects::apply(tx, &CONTACTS_MET, |q| q.bind(&contacts).bind(&contact_ats)).await?;
        }
        Ok(())
    }
}
