//! Line item rules: quantity > 0, unit price and discount not negative, a
//! percentage discount at most 100, a discount no larger than the line,
//! `quote_id` fixed for life (IMMUTABLE in the proto), the quote's currency.
//! `total` is computed by Postgres in exact decimals; every write rolls the
//! quote's totals up in the same transaction.

use crate::db::TenantTx;
use crate::error::{Error, invalid};
use crate::proto::LineItem;
use crate::records::{Change, Checker, Entity, Kind, Reference};

/// The line item kind.
pub static KIND: Kind = Kind::new(
    "crm.v1.LineItem",
    "line_items",
    "li",
    "line_item",
    &[Reference {
        field: "quote_id",
        target: &super::quote::KIND,
    }],
    &["description"],
)
.with_search(&["description"])
.with_computed(&[(
    "total",
    "trim_scale(CASE WHEN r.discount_type = 'percent' \
         THEN r.quantity * r.unit_price * (100 - COALESCE(r.discount, 0)) / 100 \
         ELSE r.quantity * r.unit_price - COALESCE(r.discount, 0) END)",
)]);

impl Entity for LineItem {
    fn kind() -> &'static Kind {
        &KIND
    }

    fn check(&mut self, _old: Option<&Self>, v: &mut Checker) {
        self.currency = self.currency.to_ascii_uppercase();
        if self.quantity.is_some_and(|q| q <= 0.0) {
            v.add("quantity", "must be greater than 0");
        }
        if self.unit_price.is_some_and(|p| p < 0.0) {
            v.add("unit_price", "must not be negative");
        }
        match self.discount {
            Some(d) if d < 0.0 => v.add("discount", "must not be negative"),
            Some(d) if self.discount_type == "percent" && d > 100.0 => v.add(
                "discount",
                "must be at most 100 when discount_type is percent",
            ),
            _ => {}
        }
    }

    async fn before_write(tx: &mut TenantTx, change: &mut Change<Self>) -> Result<(), Error> {
        let caller = tx.caller().clone();
        let new = &mut change.new;
        // Lock the quote first: line-item writes on one quote then run one
        // at a time, and each rollup sees every committed line.
        tx.lift_app_scope().await?;
        let quote: Option<(Option<String>, bool)> = sqlx::query_as(
            "SELECT currency, is_deleted FROM quotes WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(caller.tenant_id())
        .bind(&new.quote_id)
        .fetch_optional(tx.conn())
        .await?;
        tx.restore_app_scope().await?;
        let Some((currency, deleted)) = quote else {
            return Err(invalid(
                "line_item.quote_id",
                "must name an existing quote of this tenant",
            ));
        };
        if deleted && change.old.is_none() {
            return Err(invalid("line_item.quote_id", "names a deleted quote"));
        }
        let currency = currency.unwrap_or_default();
        if new.currency.is_empty() {
            new.currency = currency.clone();
        } else if new.currency != currency {
            return Err(invalid(
                "line_item.currency",
                format!("must equal the quote's currency ({currency})"),
            ));
        }
        let (q, p, d) = (
            new.quantity.unwrap_or_default(),
            new.unit_price.unwrap_or_default(),
            new.discount.unwrap_or_default(),
        );
        if new.discount_type == "amount" && d > 0.0 {
            // Compared in exact decimals, as the total will be computed
            // (no discount cannot exceed anything: no round trip).
            let exceeds: bool =
                sqlx::query_scalar("SELECT $3::numeric > $1::numeric * $2::numeric")
                    .bind(q.to_string())
                    .bind(p.to_string())
                    .bind(d.to_string())
                    .fetch_one(tx.conn())
                    .await?;
            if exceeds {
                return Err(invalid(
                    "line_item.discount",
                    "must not exceed quantity × unit_price",
                ));
            }
        }
        Ok(())
    }

    async fn after_write(tx: &mut TenantTx, change: &Change<Self>) -> Result<(), Error> {
        tx.lift_app_scope().await?;
        super::quote::rollup(tx, &change.new.quote_id).await?;
        tx.restore_app_scope().await
    }
}
