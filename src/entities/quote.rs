//! Quote rules: account required, deal (if any) of the same account, status
//! one of draft/sent/accepted/rejected/expired, a per-tenant `Q-<year>-<n>`
//! number, `validity_date`/`valid_until` mirrored, one primary quote per deal,
//! membership in the deal's `quote_ids`. `value`, `total` and `line_items`
//! are maintained from the live line items by [`rollup`], incrementally.

use std::collections::{HashMap, HashSet};

use crate::db::TenantTx;
use crate::error::{Error, Violations, invalid};
use crate::proto::Quote;
use crate::records::effects::{self, SideWrite};
use crate::records::{Change, Checker, Entity, Kind, Op, Reference};

use super::{Flag, FlagChange};

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

/// Clears the primary flag of a deal's other live quotes: `$3` the deals,
/// `$4` the quotes being written.
static CLEAR_PRIMARY: SideWrite = SideWrite::new(
    "quotes",
    "q",
    "is_primary = false",
    "q.deal_id = ANY($3) AND q.id <> ALL($4) AND q.is_primary AND NOT q.is_deleted",
);

/// Takes quotes off the deals they left: `$3` deals, `$4` quotes (pairs).
static LEAVE_DEALS: SideWrite = SideWrite::new(
    "deals",
    "d",
    "quote_ids = ARRAY(SELECT q FROM unnest(d.quote_ids) WITH ORDINALITY AS u(q, o) \
         WHERE q <> ALL(r.qs) ORDER BY o)",
    "d.id = r.deal AND d.quote_ids && r.qs",
)
.from(
    "(SELECT deal, array_agg(quote) AS qs FROM unnest($3::text[], $4::text[]) AS x(deal, quote) \
      GROUP BY deal) r",
);

/// Adds quotes, in the batch's order, to the deals they joined: `$3` deals,
/// `$4` quotes (pairs).
static JOIN_DEALS: SideWrite = SideWrite::new(
    "deals",
    "d",
    "quote_ids = d.quote_ids || ARRAY(SELECT q FROM unnest(r.qs) WITH ORDINALITY AS u(q, o) \
         WHERE q <> ALL(d.quote_ids) ORDER BY o)",
    "d.id = r.deal AND NOT (r.qs <@ d.quote_ids)",
)
.from(
    "(SELECT deal, array_agg(quote ORDER BY i) AS qs \
      FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS x(deal, quote, i) GROUP BY deal) r",
);

impl Entity for Quote {
    fn kind() -> &'static Kind {
        &KIND
    }

    fn check(&mut self, old: Option<&Self>, v: &mut Checker) {
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
        if old.is_none() {
            self.value = Some(0.0);
            self.total = Some(0.0);
        }
    }

    async fn before_write(tx: &mut TenantTx, change: &mut Change<Self>) -> Result<(), Error> {
        Self::before_batch(tx, std::slice::from_mut(change), &[String::new()]).await
    }

    async fn after_write(tx: &mut TenantTx, change: &Change<Self>) -> Result<(), Error> {
        Self::after_batch(tx, std::slice::from_ref(change), &[String::new()]).await
    }

    /// For any number of quotes, a fixed number of statements: their deals
    /// (account and currency) in one read, the line counts of quotes whose
    /// currency changes in one, numbers from one counter update, one
    /// primary flag per deal from one lock and one clearing update.
    async fn before_batch(
        tx: &mut TenantTx,
        changes: &mut [Change<Self>],
        prefixes: &[String],
    ) -> Result<(), Error> {
        let caller = tx.caller().clone();
        let moved = |c: &Change<Self>| {
            !c.new.deal_id.is_empty()
                && c.old
                    .as_ref()
                    .is_none_or(|o| o.deal_id != c.new.deal_id || o.account_id != c.new.account_id)
        };
        let deal_ids: Vec<&str> = changes
            .iter()
            .filter(|c| moved(c))
            .map(|c| c.new.deal_id.as_str())
            .collect();
        let deals: HashMap<String, (String, Option<String>)> = if deal_ids.is_empty() {
            HashMap::new()
        } else {
            sqlx::query_as::<_, (String, String, Option<String>)>(
                "SELECT id, account_id, currency FROM deals WHERE tenant_id = $1 AND id = ANY($2)",
            )
            .bind(caller.tenant_id())
            .bind(&deal_ids)
            .fetch_all(tx.conn())
            .await?
            .into_iter()
            .map(|(id, account, currency)| (id, (account, currency)))
            .collect()
        };
        let mut all = Violations::new();
        for (change, prefix) in changes.iter_mut().zip(prefixes) {
            let mut deal_currency = None;
            if moved(change)
                && let Some((account, currency)) = deals.get(&change.new.deal_id)
            {
                if *account != change.new.account_id {
                    all.add(
                        format!("{prefix}quote.deal_id"),
                        format!(
                            "must be a deal of account {} (this deal belongs to {account})",
                            change.new.account_id
                        ),
                    );
                    continue;
                }
                deal_currency = currency.clone();
            }
            if change.new.currency.is_empty() {
                change.new.currency = deal_currency.unwrap_or_else(|| DEFAULT_CURRENCY.to_owned());
            }
        }
        let repriced: Vec<&str> = changes
            .iter()
            .filter(|c| c.old.as_ref().is_some_and(|o| o.currency != c.new.currency))
            .map(|c| c.new.id.as_str())
            .collect();
        if !repriced.is_empty() {
            let priced: HashSet<String> = sqlx::query_scalar(
                "SELECT DISTINCT quote_id FROM line_items \
                 WHERE tenant_id = $1 AND quote_id = ANY($2) AND NOT is_deleted",
            )
            .bind(caller.tenant_id())
            .bind(&repriced)
            .fetch_all(tx.conn())
            .await?
            .into_iter()
            .collect();
            for (change, prefix) in changes.iter().zip(prefixes) {
                if priced.contains(&change.new.id)
                    && change
                        .old
                        .as_ref()
                        .is_some_and(|o| o.currency != change.new.currency)
                {
                    all.add(
                        format!("{prefix}quote.currency"),
                        "cannot change while the quote has line items (they are priced in the quote's currency)",
                    );
                }
            }
        }
        all.into_result()?;
        let mut numbers: Vec<(Option<&str>, &mut String)> = changes
            .iter_mut()
            .map(|c| {
                (
                    c.old.as_ref().map(|o| o.quote_number.as_str()),
                    &mut c.new.quote_number,
                )
            })
            .collect();
        super::keep_numbers(
            tx,
            "quote",
            "Q",
            "SELECT quote_number FROM quotes WHERE tenant_id = $1 AND quote_number = ANY($2)",
            &mut numbers,
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
            "primary_quote",
            &CLEAR_PRIMARY,
            &items,
            "quote.is_primary",
            prefixes,
        )
        .await?;
        for i in demoted {
            changes[i].new.is_primary = Some(false);
        }
        Ok(())
    }

    /// Keeps the deals' `quote_ids` in step with the quotes that moved: one
    /// statement takes the batch's quotes off the deals they left, one adds
    /// them (in batch order) to the deals they joined, across apps.
    async fn after_batch(
        tx: &mut TenantTx,
        changes: &[Change<Self>],
        _prefixes: &[String],
    ) -> Result<(), Error> {
        let (mut left, mut joined): (Vec<[&str; 2]>, Vec<[&str; 2]>) = (Vec::new(), Vec::new());
        for c in changes {
            let old_deal = c.old.as_ref().map_or("", |o| o.deal_id.as_str());
            if old_deal == c.new.deal_id {
                continue;
            }
            if !old_deal.is_empty() {
                left.push([old_deal, &c.new.id]);
            }
            if !c.new.deal_id.is_empty() {
                joined.push([&c.new.deal_id, &c.new.id]);
            }
        }
        if left.is_empty() && joined.is_empty() {
            return Ok(());
        }
        for (pairs, write) in [(left, &LEAVE_DEALS), (joined, &JOIN_DEALS)] {
            if pairs.is_empty() {
                continue;
            }
            let (deals, quotes): (Vec<&str>, Vec<&str>) =
                pairs.iter().map(|[d, q]| (*d, *q)).unzip();
            effects::apply(tx, write, |q| q.bind(&deals).bind(&quotes)).await?;
        }
        Ok(())
    }
}

/// How many line summaries a quote embeds (`Quote.line_items`): its first
/// live lines by creation. The rest are read with ListLineItems.
pub const EMBEDDED_LINES: i64 = 100;

/// One line item's effect on its quote, for [`rollup`].
pub struct LineEffect<'a> {
    /// The line's quote.
    pub quote_id: &'a str,
    /// The line's id.
    pub line_id: &'a str,
    /// The line's part of the quote's total before the write (its total
    /// while live, else 0), as exact decimal text.
    pub before: String,
    /// Same, after the write.
    pub after: String,
    /// The line existed before the write (its summary may be in the list).
    pub existed: bool,
    /// The line is live after the write (it may belong in the list).
    pub live: bool,
}

/// The quote rollup of [`rollup`]: `$3` quotes, `$4` lines, `$5` and `$6`
/// their parts of the total before and after (exact decimal text), `$7`
/// whether each existed, `$8` whether each is live, `$9` [`EMBEDDED_LINES`].
/// Whether to rebuild `line_items` is decided apart from the UPDATE, from
/// plain columns: under row-level security a condition holding a
/// non-leakproof function (jsonb's ->>) cannot use an index. Every line is
/// found by its key (LIMIT 1 keeps each lookup a lookup): a generic plan (a
/// prepared statement's sixth run) would otherwise compare (created_at, id)
/// along the tenant's whole list index.
static ROLLUP: SideWrite = SideWrite::new(
    "quotes",
    "q",
    "value = COALESCE(q.value, 0) + r.delta, total = COALESCE(q.total, 0) + r.delta, \
     line_items = CASE WHEN r.rebuild \
       THEN (SELECT COALESCE(jsonb_agg(jsonb_build_object( \
                  'id', s.id, 'description', COALESCE(s.description, ''), \
                  'quantity', s.quantity, 'unit_price', s.unit_price, \
                  'discount', COALESCE(s.discount, 0), 'discount_type', s.discount_type, \
                  'total', s.total, 'currency', COALESCE(s.currency, '')) \
                ORDER BY s.created_at, s.id), '[]'::jsonb) \
             FROM (SELECT li.* FROM line_items li \
                   WHERE li.tenant_id = $1 AND li.quote_id = q.id AND NOT li.is_deleted \
                   ORDER BY li.created_at, li.id LIMIT $9) s) \
       ELSE q.line_items END",
    "q.id = r.quote_id",
)
.from("r")
.with(
    "d AS (SELECT c.quote_id, sum(c.after::numeric - c.before::numeric) AS delta, \
                  array_agg(c.line_id) FILTER (WHERE c.existed) AS changed, \
                  array_agg(c.line_id) FILTER (WHERE c.live) AS live \
           FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::bool[]) \
                AS c(quote_id, line_id, before, after, existed, live) \
           GROUP BY c.quote_id), \
     w AS MATERIALIZED (SELECT d.*, jsonb_array_length(q.line_items) AS embedded, \
                  q.line_items->-1->>'id' AS last, \
                  ARRAY(SELECT e->>'id' FROM jsonb_array_elements(q.line_items) e) AS ids \
           FROM d JOIN quotes q ON q.tenant_id = $1 AND q.id = d.quote_id), \
     r AS (SELECT w.quote_id, w.delta, \
                  w.embedded <> $9 OR w.ids && w.changed \
                  OR EXISTS (SELECT 1 FROM unnest(w.live) AS x(id) \
                             CROSS JOIN LATERAL (SELECT n.created_at FROM line_items n \
                                  WHERE n.tenant_id = $1 AND n.id = x.id LIMIT 1) n \
                             WHERE (n.created_at, x.id) < (l.created_at, w.last)) AS rebuild \
           FROM w LEFT JOIN LATERAL (SELECT l.created_at FROM line_items l \
                WHERE l.tenant_id = $1 AND l.id = w.last LIMIT 1) l ON true)",
)
.refusing(|constraint| {
    // quotes_total_representable / quotes_value_representable: the sum of
    // the lines is beyond what reads back exactly.
    constraint.ends_with("_representable").then(|| {
        invalid(
            "line_item.total",
            format!(
                "would make the quote's total (the sum of its line totals) break its rule: it {}",
                crate::records::store::NUMBER_RULE
            ),
        )
    })
});

/// Moves the quotes of `changes` by their lines' changes, exactly, and bumps
/// their versions: one statement for any number of lines and quotes, whose
/// cost does not grow with a quote's size. `value` and `total` move by the
/// lines' deltas (exact decimals: every stored total has at most 15
/// significant digits, which a double's shortest text gives back exactly).
/// `line_items` is rebuilt (at most [`EMBEDDED_LINES`] rows, read by index)
/// only when it could change: it is not full, a line in it changed, or a
/// live changed line sorts before its last (an undeleted line, or one whose
/// transaction began before the last's). Appending to a long quote leaves
/// it alone. The caller must hold the quotes' row locks (see `line_item`).
pub async fn rollup(tx: &mut TenantTx, changes: &[LineEffect<'_>]) -> Result<(), Error> {
    let mut quotes = Vec::with_capacity(changes.len());
    let mut lines = Vec::with_capacity(changes.len());
    let mut before = Vec::with_capacity(changes.len());
    let mut after = Vec::with_capacity(changes.len());
    let mut existed = Vec::with_capacity(changes.len());
    let mut live = Vec::with_capacity(changes.len());
    for e in changes {
        quotes.push(e.quote_id);
        lines.push(e.line_id);
        before.push(e.before.as_str());
        after.push(e.after.as_str());
        existed.push(e.existed);
        live.push(e.live);
    }
    effects::apply(tx, &ROLLUP, |q| {
        q.bind(&quotes)
            .bind(&lines)
            .bind(&before)
            .bind(&after)
            .bind(&existed)
            .bind(&live)
            .bind(EMBEDDED_LINES as i32)
    })
    .await?;
    Ok(())
}
