//! Line item rules: quantity > 0, unit price and discount not negative, a
//! percentage discount at most 100, a discount no larger than the line,
//! `quote_id` fixed for life (IMMUTABLE in the proto), the quote's currency.
//! `total` is computed by Postgres in exact decimals; every write rolls the
//! quote's totals up in the same transaction.

use std::collections::HashMap;

use crate::db::TenantTx;
use crate::error::{Error, Violations};
use crate::proto::LineItem;
use crate::records::{Change, Checker, Entity, Kind, Reference};

use super::quote::LineEffect;

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
        // quantity > 0, unit_price and discount ≥ 0: the proto's
        // buf.validate rules.
        if self.discount_type == "percent" && self.discount.is_some_and(|d| d > 100.0) {
            v.add(
                "discount",
                "must be at most 100 when discount_type is percent",
            );
        }
    }

    async fn before_write(tx: &mut TenantTx, change: &mut Change<Self>) -> Result<(), Error> {
        Self::before_batch(tx, std::slice::from_mut(change), &[String::new()]).await
    }

    async fn after_write(tx: &mut TenantTx, change: &Change<Self>) -> Result<(), Error> {
        Self::after_batch(tx, std::slice::from_ref(change), &[String::new()]).await
    }

    /// Locks the batch's quotes (in id order: line-item writes on one quote
    /// then run one at a time, and each rollup sees every committed line;
    /// `FOR NO KEY UPDATE`, which the writes' own reference check on the
    /// quote, `FOR KEY SHARE`, does not conflict with),
    /// takes each line's currency from its quote, and compares amount
    /// discounts with their lines in exact decimals: three statements for
    /// any number of lines.
    async fn before_batch(
        tx: &mut TenantTx,
        changes: &mut [Change<Self>],
        prefixes: &[String],
    ) -> Result<(), Error> {
        let caller = tx.caller().clone();
        let mut ids: Vec<&str> = changes.iter().map(|c| c.new.quote_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let quotes: Vec<(String, Option<String>, bool)> = tx
            .across_apps(async |conn| {
                Ok(sqlx::query_as(
                    "SELECT id, currency, is_deleted FROM quotes WHERE tenant_id = $1 AND id = ANY($2) \
                     ORDER BY id FOR NO KEY UPDATE",
                )
                .bind(caller.tenant_id())
                .bind(&ids)
                .fetch_all(conn)
                .await?)
            })
            .await?;
        let quotes: HashMap<String, (String, bool)> = quotes
            .into_iter()
            .map(|(id, currency, deleted)| (id, (currency.unwrap_or_default(), deleted)))
            .collect();
        let mut all = Violations::new();
        // Lines with an amount discount: (item, quantity, unit price, discount).
        let mut amounts: Vec<(i32, String, String, String)> = Vec::new();
        for (i, (change, prefix)) in changes.iter_mut().zip(prefixes).enumerate() {
            let is_new = change.old.is_none();
            let new = &mut change.new;
            let Some((currency, deleted)) = quotes.get(&new.quote_id) else {
                all.add(
                    format!("{prefix}line_item.quote_id"),
                    "must name an existing quote of this tenant",
                );
                continue;
            };
            if *deleted && is_new {
                all.add(
                    format!("{prefix}line_item.quote_id"),
                    "names a deleted quote",
                );
                continue;
            }
            if new.currency.is_empty() {
                new.currency = currency.clone();
            } else if &new.currency != currency {
                all.add(
                    format!("{prefix}line_item.currency"),
                    format!("must equal the quote's currency ({currency})"),
                );
            }
            let d = new.discount.unwrap_or_default();
            if new.discount_type == "amount" && d > 0.0 {
                amounts.push((
                    i as i32,
                    new.quantity.unwrap_or_default().to_string(),
                    new.unit_price.unwrap_or_default().to_string(),
                    d.to_string(),
                ));
            }
        }
        if !amounts.is_empty() {
            // Compared in exact decimals, as the total will be computed (no
            // discount cannot exceed anything: no round trip).
            let (items, q, p, d): (Vec<i32>, Vec<String>, Vec<String>, Vec<String>) = amounts
                .into_iter()
                .fold(Default::default(), |mut acc, (i, q, p, d)| {
                    acc.0.push(i);
                    acc.1.push(q);
                    acc.2.push(p);
                    acc.3.push(d);
                    acc
                });
            let exceeding: Vec<i32> = sqlx::query_scalar(
                "SELECT u.i FROM unnest($1::int[], $2::text[]::numeric[], $3::text[]::numeric[], \
                 $4::text[]::numeric[]) AS u(i, q, p, d) WHERE u.d > u.q * u.p ORDER BY u.i",
            )
            .bind(&items)
            .bind(&q)
            .bind(&p)
            .bind(&d)
            .fetch_all(tx.conn())
            .await?;
            for i in exceeding {
                all.add(
                    format!("{}line_item.discount", prefixes[i as usize]),
                    "must not exceed quantity × unit_price",
                );
            }
        }
        all.into_result()
    }

    /// Moves the batch's quotes by their lines' changes in one statement,
    /// however many lines the batch wrote, at a cost that does not grow with
    /// a quote's size (see [`super::quote::rollup`]).
    async fn after_batch(
        tx: &mut TenantTx,
        changes: &[Change<Self>],
        prefixes: &[String],
    ) -> Result<(), Error> {
        // A line's part of its quote's total: its total while it is live.
        fn live(line: &LineItem) -> f64 {
            if line.is_deleted {
                0.0
            } else {
                line.total.unwrap_or_default()
            }
        }
        let effects: Vec<LineEffect> = changes
            .iter()
            .map(|c| {
                LineEffect {
                    quote_id: &c.new.quote_id,
                    line_id: &c.new.id,
                    // At most 15 significant digits (the stored rule): the
                    // shortest texts are the exact values.
                    before: c.old.as_ref().map_or(0.0, live).to_string(),
                    after: live(&c.new).to_string(),
                    existed: c.old.is_some(),
                    live: !c.new.is_deleted,
                }
            })
            .collect();
        super::quote::rollup(tx, &effects)
            .await
            .map_err(|e| match e {
                // A quote's total out of range: one statement cannot say which
                // quote, so the error names the batch's first item.
                Error::Invalid(v) => {
                    let mut all = Violations::new();
                    all.extend_prefixed(prefixes.first().map_or("", String::as_str), v);
                    Error::Invalid(all)
                }
                e => e,
            })
    }
}
