//! Deal rules: account and name required (proto), probability 0–100, ISO 4217
//! currency, a per-tenant `DEAL-<year>-<n>` number, closed-lost reasons, the
//! close date stamped on closing, and the stage history in `audit_log`.

use prost_types::Timestamp;

use crate::db::TenantTx;
use crate::error::Error;
use crate::proto::{Deal, StageChange};
use crate::records::store::now;
use crate::records::{Change, Checker, Entity, Kind, Reference};

/// The deal kind.
pub static KIND: Kind = Kind::new(
    "crm.v1.Deal",
    "deals",
    "deal",
    "deal",
    &[
        Reference {
            field: "account_id",
            target: &super::account::KIND,
        },
        Reference {
            field: "primary_contact_id",
            target: &super::contact::KIND,
        },
        Reference {
            field: "contact_ids",
            target: &super::contact::KIND,
        },
        Reference {
            field: "quote_ids",
            target: &super::quote::KIND,
        },
    ],
    &["loss_reason", "closure_notes"],
)
.with_search(&["name", "deal_number"]);

/// The stage that wins a deal.
pub const CLOSED_WON: &str = "closed_won";
/// The stage that loses a deal (needs loss_reason and loss_category).
pub const CLOSED_LOST: &str = "closed_lost";

fn closed(stage: &str) -> bool {
    stage == CLOSED_WON || stage == CLOSED_LOST
}

impl Entity for Deal {
    fn kind() -> &'static Kind {
        &KIND
    }

    fn check(&mut self, _old: Option<&Self>, v: &mut Checker) {
        // currency, probability, value: the proto's buf.validate rules.
        if self.stage == CLOSED_LOST {
            for (field, value) in [
                ("loss_reason", &self.loss_reason),
                ("loss_category", &self.loss_category),
            ] {
                if value.trim().is_empty() {
                    v.add(field, "is required when stage is closed_lost");
                }
            }
        }
    }

    async fn before_write(tx: &mut TenantTx, change: &mut Change<Self>) -> Result<(), Error> {
        Self::before_batch(tx, std::slice::from_mut(change), &[String::new()]).await
    }

    /// Numbers for the batch's new deals from one counter update, then each
    /// deal's stage history.
    async fn before_batch(
        tx: &mut TenantTx,
        changes: &mut [Change<Self>],
        _prefixes: &[String],
    ) -> Result<(), Error> {
        let mut numbers: Vec<(Option<&str>, &mut String)> = changes
            .iter_mut()
            .map(|c| {
                (
                    c.old.as_ref().map(|o| o.deal_number.as_str()),
                    &mut c.new.deal_number,
                )
            })
            .collect();
        super::keep_numbers(
            tx,
            "deal",
            "DEAL",
            "SELECT deal_number FROM deals WHERE tenant_id = $1 AND deal_number = ANY($2)",
            &mut numbers,
        )
        .await?;
        let sub = tx.caller().sub().to_owned();
        for change in changes {
            record_stage(change, &sub);
        }
        Ok(())
    }
}

/// Appends a stage change to the deal's history (and sets its close date)
/// when the write moves it to another stage.
fn record_stage(change: &mut Change<Deal>, sub: &str) {
    let from = change
        .old
        .as_ref()
        .map(|o| o.stage.clone())
        .unwrap_or_default();
    if from != change.new.stage {
        // The write's own time, so the history and the record agree.
        let at: Timestamp = change.new.updated_at.unwrap_or_else(now);
        if closed(&change.new.stage) && change.new.actual_close_date.is_none() {
            change.new.actual_close_date = Some(at);
        }
        change.new.audit_log.push(StageChange {
            from_stage: from,
            to_stage: change.new.stage.clone(),
            changed_at: Some(at),
            changed_by: sub.to_owned(),
        });
    }
}
