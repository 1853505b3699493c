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

fn to_chrono(ts: &Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(ts.seconds, ts.nanos as u32).unwrap_or_default()
}

impl Entity for Activity {
    fn kind() -> &'static Kind {
        &KIND
    }

    fn check(&mut self, _old: Option<&Self>, v: &mut Checker) {
        if self.account_id.is_empty() && self.deal_id.is_empty() && self.contact_id.is_empty() {
            v.add(
                "account_id",
                "at least one of account_id, deal_id, contact_id is required",
            );
        }
        // The allowed types are the proto's (crm.v1.allowed_values).
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
        if change.op != Op::Create {
            return Ok(());
        }
        let a = &change.new;
        let at = to_chrono(&a.occurred_at.unwrap_or_else(now));
        let caller = tx.caller().clone();
        let mut contacts: Vec<String> = a.contact_ids.clone();
        if !a.contact_id.is_empty() && !contacts.contains(&a.contact_id) {
            contacts.push(a.contact_id.clone());
        }
        // Accounts: the activity's own, its deal's, and its contacts', of
        // whichever app.
        tx.lift_app_scope().await?;
        sqlx::query(
            "UPDATE accounts SET last_activity_at = $5, version = version + 1, updated_at = now(), updated_by = $6 \
             WHERE tenant_id = $1 AND NOT is_deleted \
               AND (last_activity_at IS NULL OR last_activity_at < $5) \
               AND id IN (SELECT NULLIF($2, '') \
                          UNION SELECT account_id FROM deals WHERE tenant_id = $1 AND id = NULLIF($3, '') \
                          UNION SELECT account_id FROM contacts WHERE tenant_id = $1 AND id = ANY($4))",
        )
        .bind(caller.tenant_id())
        .bind(&a.account_id)
        .bind(&a.deal_id)
        .bind(&contacts)
        .bind(at)
        .bind(caller.sub())
        .execute(tx.conn())
        .await?;
        if !contacts.is_empty() {
            sqlx::query(
                "UPDATE contacts SET last_interaction_at = $3, version = version + 1, updated_at = now(), updated_by = $4 \
                 WHERE tenant_id = $1 AND id = ANY($2) AND NOT is_deleted \
                   AND (last_interaction_at IS NULL OR last_interaction_at < $3)",
            )
            .bind(caller.tenant_id())
            .bind(&contacts)
            .bind(at)
            .bind(caller.sub())
            .execute(tx.conn())
            .await?;
        }
        tx.restore_app_scope().await
    }
}
