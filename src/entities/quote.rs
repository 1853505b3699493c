//! Quote rules: account required, deal (if any) of the same account, status
//! one of draft/sent/accepted/rejected/expired, a per-tenant `Q-<year>-<n>`
//! number, `validity_date`/`valid_until` mirrored, one primary quote per deal,
//! membership in the deal's `quote_ids`. `value`, `total` and `line_items`
//! are maintained from the live line items by [`rollup`].

use crate::db::TenantTx;
use crate::error::{Error, invalid};
use crate::proto::Quote;
use crate::records::{Change, Checker, Entity, Kind, Op, Reference};

use super::Flag;
use super::rules::is_currency;

/// Currency of a quote that names none and has no deal currency to inherit.
pub const DEFAULT_CURRENCY: &str = "USD";

/// The quote kind.
pub static KIND: Kind = Kind::new(
    "crm.v1.Quote",
    "quotes",
    "qte",
    "quote",
    &[
        Reference {
            field: "account_id",
            target: &super::account::KIND,
        },
        Reference {
            field: "deal_id",
            target: &super::deal::KIND,
        },
    ],
    &["notes"],
)
.with_search(&["name", "quote_number", "notes"]);

impl Entity for Quote {
    fn kind() -> &'static Kind {
        &KIND
    }

    fn check(&mut self, old: Option<&Self>, v: &mut Checker) {
        self.currency = self.currency.to_ascii_uppercase();
        if !self.currency.is_empty() && !is_currency(&self.currency) {
            v.add("currency", "must be an ISO 4217 currency code, e.g. USD");
        }
        match (self.validity_date, self.valid_until) {
            (Some(a), Some(b)) if a != b => {
                // On update, the one the client changed wins.
                let changed_until = old.is_some_and(|o| o.valid_until != self.valid_until);
                let changed_validity = old.is_some_and(|o| o.validity_date != self.validity_date);
                match (changed_validity, changed_until) {
                    (true, false) => self.valid_until = Some(a),
                    (false, true) => self.validity_date = Some(b),
                    _ => v.add(
                        "valid_until",
                        "must equal validity_date (they mirror each other)",
                    ),
                }
            }
            (Some(a), None) => self.valid_until = Some(a),
            (None, Some(b)) => self.validity_date = Some(b),
            _ => {}
        }
        if self.is_primary == Some(true) && self.deal_id.is_empty() {
            v.add(
                "is_primary",
                "requires deal_id: a quote is primary on its deal",
            );
        }
        if old.is_some() && self.quote_number.is_empty() {
            v.add(
                "quote_number",
                "cannot be cleared: every quote keeps a number",
            );
        }
        if old.is_none() {
            self.value = Some(0.0);
            self.total = Some(0.0);
        }
    }

    async fn before_write(tx: &mut TenantTx, change: &mut Change<Self>) -> Result<(), Error> {
        let caller = tx.caller().clone();
        let old = change.old.as_ref();
        let new = &mut change.new;
        let deal_moved =
            old.is_none_or(|o| o.deal_id != new.deal_id || o.account_id != new.account_id);
        let mut deal_currency = None;
        if !new.deal_id.is_empty() && deal_moved {
            let deal: Option<(String, Option<String>)> = sqlx::query_as(
                "SELECT account_id, currency FROM deals WHERE tenant_id = $1 AND id = $2",
            )
            .bind(caller.tenant_id())
            .bind(&new.deal_id)
            .fetch_optional(tx.conn())
            .await?;
            if let Some((account, currency)) = deal {
                if account != new.account_id {
                    return Err(invalid(
                        "quote.deal_id",
                        format!(
                            "must be a deal of account {} (this deal belongs to {account})",
                            new.account_id
                        ),
                    ));
                }
                deal_currency = currency;
            }
        }
        if new.currency.is_empty() {
            new.currency = deal_currency.unwrap_or_else(|| DEFAULT_CURRENCY.to_owned());
        }
        if let Some(o) = old
            && o.currency != new.currency
        {
            let lines: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM line_items WHERE tenant_id = $1 AND quote_id = $2 AND NOT is_deleted",
            )
            .bind(caller.tenant_id())
            .bind(&new.id)
            .fetch_one(tx.conn())
            .await?;
            if lines > 0 {
                return Err(invalid(
                    "quote.currency",
                    "cannot change while the quote has line items (they are priced in the quote's currency)",
                ));
            }
        }
        super::keep_number(
            tx,
            "quote",
            "Q",
            "SELECT quote_number FROM quotes WHERE tenant_id = $1 AND quote_number = ANY($2)",
            old.map(|o| o.quote_number.as_str()),
            &mut new.quote_number,
        )
        .await?;
        fn flag(q: &Quote) -> Flag<'_> {
            Flag {
                id: &q.id,
                set: q.is_primary,
                deleted: q.is_deleted,
                scope: &q.deal_id,
            }
        }
        super::make_exclusive(
            tx,
            "primary_quote",
            "UPDATE quotes SET is_primary = false, version = version + 1, updated_at = now(), updated_by = $4 \
             WHERE tenant_id = $1 AND deal_id = $2 AND id <> $3 AND is_primary AND NOT is_deleted",
            change.old.as_ref().map(flag),
            flag(&change.new),
            change.op == Op::Undelete,
        )
        .await
    }

    async fn after_write(tx: &mut TenantTx, change: &Change<Self>) -> Result<(), Error> {
        let old_deal = change
            .old
            .as_ref()
            .map(|o| o.deal_id.as_str())
            .unwrap_or("");
        let new = &change.new;
        if old_deal == new.deal_id {
            return Ok(());
        }
        let caller = tx.caller().clone();
        tx.lift_app_scope().await?;
        if !old_deal.is_empty() {
            sqlx::query(
                "UPDATE deals SET quote_ids = array_remove(quote_ids, $3), version = version + 1, \
                 updated_at = now(), updated_by = $4 \
                 WHERE tenant_id = $1 AND id = $2 AND $3 = ANY(quote_ids)",
            )
            .bind(caller.tenant_id())
            .bind(old_deal)
            .bind(&new.id)
            .bind(caller.sub())
            .execute(tx.conn())
            .await?;
        }
        if !new.deal_id.is_empty() {
            sqlx::query(
                "UPDATE deals SET quote_ids = array_append(quote_ids, $3), version = version + 1, \
                 updated_at = now(), updated_by = $4 \
                 WHERE tenant_id = $1 AND id = $2 AND NOT ($3 = ANY(quote_ids))",
            )
            .bind(caller.tenant_id())
            .bind(&new.deal_id)
            .bind(&new.id)
            .bind(caller.sub())
            .execute(tx.conn())
            .await?;
        }
        tx.restore_app_scope().await
    }
}

/// Recomputes `value`, `total` and `line_items` of the quotes `quote_ids`
/// from their live line items, exactly, and bumps their versions: one
/// statement for any number of quotes. The caller must hold the quotes' row
/// locks (see `line_item`), so each sum sees every committed line.
pub async fn rollup(tx: &mut TenantTx, quote_ids: &[&str]) -> Result<(), Error> {
    let caller = tx.caller().clone();
    sqlx::query(
        "UPDATE quotes q SET value = s.total, total = s.total, line_items = s.items, \
             version = q.version + 1, updated_at = now(), updated_by = $3 \
         FROM (SELECT w.id, COALESCE(sum(li.total), 0) AS total, \
                      COALESCE(jsonb_agg(jsonb_build_object( \
                          'id', li.id, 'description', COALESCE(li.description, ''), \
                          'quantity', li.quantity, 'unit_price', li.unit_price, \
                          'discount', COALESCE(li.discount, 0), 'discount_type', li.discount_type, \
                          'total', li.total, 'currency', COALESCE(li.currency, '')) \
                        ORDER BY li.created_at, li.id) FILTER (WHERE li.id IS NOT NULL), '[]'::jsonb) AS items \
               FROM unnest($2::text[]) AS w(id) \
               LEFT JOIN line_items li \
                 ON li.tenant_id = $1 AND li.quote_id = w.id AND NOT li.is_deleted \
               GROUP BY w.id) s \
         WHERE q.tenant_id = $1 AND q.id = s.id",
    )
    .bind(caller.tenant_id())
    .bind(quote_ids)
    .bind(caller.sub())
    .execute(tx.conn())
    .await
    .map_err(|e| match &e {
        // quotes_total_representable / quotes_value_representable: the sum
        // of the lines is beyond what reads back exactly.
        sqlx::Error::Database(d)
            if d.constraint().is_some_and(|c| c.ends_with("_representable")) =>
        {
            invalid(
                "line_item.total",
                format!(
                    "would make the quote's total (the sum of its line totals) break its rule: it {}",
                    crate::records::store::NUMBER_RULE
                ),
            )
        }
        _ => Error::from(e),
    })?;
    Ok(())
}
