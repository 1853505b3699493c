//! List queries: the one builder that turns a filter (compiled by
//! [`super::filter`]), an order and a search into parameterized SQL. Field names come only from the entity's
//! descriptor-derived fields; every value is a bind parameter
//! (`sqlx::QueryBuilder::push_bind`); the only text pushed is static SQL and
//! those known column names.
//!
//! Order: `field [asc|desc]` over scalar fields, always ending with `id`;
//! empty values sort first ascending and last descending. Keyset pages
//! compare the last row's keys exactly (as text from Postgres).

use sqlx::postgres::PgRow;
use sqlx::{Execute, PgConnection, Postgres, QueryBuilder, Row as _};

use super::filter::compile;
use crate::custom::{FieldType, ResourceSchema};
use crate::error::{Error, invalid};
use crate::records::filter::{self, Expr};
use crate::records::schema::{FieldMeta, Meta, Shape};

/// Where a page is read: an entity's table, scoped to one caller.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    /// The entity.
    pub meta: &'a Meta,
    /// Its table.
    pub table: &'a str,
    /// The caller's tenant.
    pub tenant: &'a str,
    /// The caller's app, for integration tokens.
    pub app: Option<&'a str>,
    /// Whether soft-deleted records are listed too.
    pub show_deleted: bool,
}

impl Scope<'_> {
    /// Pushes ` FROM "<table>" t WHERE <tenant, app, deleted>`.
    fn push_from(&self, qb: &mut QueryBuilder<Postgres>) {
        qb.push(" FROM \"")
            .push(self.table)
            .push("\" t WHERE t.tenant_id = ");
        qb.push_bind(self.tenant.to_owned());
        if let Some(app) = self.app {
            qb.push(" AND t.app_id = ").push_bind(app.to_owned());
        }
        if !self.show_deleted {
            qb.push(" AND NOT t.is_deleted");
        }
    }
}

/// The SELECT of one page of `table` in one statement: each row as JSON
/// followed by its sort keys as text, scoped to `tenant` (and `app`), after
/// `after` when given. This is the plan the planner chooses; [`fetch_page`]
/// runs it, or the walk-then-gather pair where the planner's choice depends
/// on how many rows match (see there). A search ordered by relevance has no
/// single statement: this is its first tier's.
#[allow(clippy::too_many_arguments)]
pub fn select_page(
    meta: &Meta,
    table: &str,
    plan: &Plan,
    tenant: &str,
    app: Option<&str>,
    show_deleted: bool,
    after: Option<&[Option<String>]>,
    limit: i64,
) -> Result<QueryBuilder<Postgres>, Error> {
    let scope = Scope {
        meta,
        table,
        tenant,
        app,
        show_deleted,
    };
    let tier = plan.tiered().then_some(Tier::Exact);
    let after = match after {
        Some(a) if plan.tiered() => Some(&a[1..]),
        other => other,
    };
    plan.direct(&scope, tier, after, limit)
}

/// One row of a page: the record as JSON, and its sort keys as text
/// (`None` for NULL), the cursor of the next page when it is the last.
#[derive(Clone, Debug)]
pub struct Row {
    /// `row_to_json` of the record.
    pub json: String,
    /// The sort keys ([`Plan::keys`]), as text.
    pub keys: Vec<Option<String>>,
}

/// How search results are ranked when no `order_by` is given: by tier, and
/// newest first within a tier. Each tier is a condition an index can find
/// in its own order (see [`fetch_page`]), so the first page of a word that
/// is in 90 % of the records costs what a page of a rare word does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The name (the entity's first search field) equals the search.
    Exact = 3,
    /// The name starts with the search.
    Prefix = 2,
    /// Every word occurs in the document (substring; the name does not start
    /// with the search).
    Words = 1,
    /// Every word occurs or is close to a word of the document, but not all
    /// occur as written: typo matches.
    Typo = 0,
}

impl Tier {
    const ALL: [Tier; 4] = [Tier::Exact, Tier::Prefix, Tier::Words, Tier::Typo];

    fn parse(text: Option<&str>) -> Result<Self, Error> {
        Tier::ALL
            .into_iter()
            .find(|t| text == Some((*t as u8).to_string().as_str()))
            .ok_or_else(|| invalid("page_token", "is not a page token of this list"))
    }
}

/// Rows a walk of the order's index looks at before the page is gathered
/// through the filter's own indexes instead. A walked row costs about a
/// tenth of a gathered one (read in index order, against a match fetched at
/// random and sorted: measured at 1M rows, 0.5–1 µs against 6 µs), so the
/// walk goes on for the page size × 200 rows (a filter matching 0.5 % of the
/// rows fills a page there), at least 10 000 and at most 50 000. Typo
/// matching costs several µs a row (word similarity), so the typo tier
/// walks the page size × 20 rows, at least 1000 and at most 20 000.
fn walk_budget(limit: i64, typo: bool) -> i64 {
    if typo {
        (limit * 20).clamp(1000, 20_000)
    } else {
        (limit * 200).clamp(10_000, 50_000)
    }
}

/// Reads one page (`limit` rows at most) of `plan` after `after`.
///
/// A condition served by an unordered index (GIN: list membership,
/// `custom_fields`, search) makes the planner choose between walking the
/// order's index and filtering (fast when many rows match) and fetching the
/// matches through the GIN index and sorting them (fast when few do), on
/// statistics that cannot know a rare tag from an absent one, nor one
/// tenant's values from another's. So this does not let it guess: where the
/// order has an index, it first walks at most [`walk_budget`] rows of it
/// (the *walk*); a page filled there is the answer. Otherwise the walk has
/// also returned the last row it looked at (the *horizon*; none when it saw
/// every remaining row), and this fetches the remaining matches after it
/// through the indexes of the conditions, with ordered index scans turned
/// off for that statement (the *gather*), which costs what the matches
/// cost. Either way the work is bounded by the budget plus the matches.
///
/// A search without `order_by` runs once per [`Tier`] from the cursor's
/// down, until the page is full. With `explain`, each statement run is
/// also run under `EXPLAIN (ANALYZE, COSTS OFF)` and its plan appended.
pub async fn fetch_page(
    conn: &mut PgConnection,
    scope: &Scope<'_>,
    plan: &Plan,
    after: Option<&[Option<String>]>,
    limit: i64,
    mut explain: Option<&mut String>,
) -> Result<Vec<Row>, Error> {
    if let Some(a) = after
        && a.len() != plan.keys.len()
    {
        return Err(invalid("page_token", "is not a page token of this list"));
    }
    let tiers: Vec<Option<Tier>> = if plan.tiered() {
        let first = match after {
            Some(a) => Tier::parse(a[0].as_deref())?,
            None => Tier::Exact,
        };
        Tier::ALL
            .into_iter()
            .filter(|t| (*t as u8) <= first as u8)
            .map(Some)
            .collect()
    } else {
        vec![None]
    };
    let mut rows = Vec::new();
    for (i, tier) in tiers.into_iter().enumerate() {
        let after = match after {
            Some(a) if i == 0 => Some(if plan.tiered() { &a[1..] } else { a }),
            _ => None,
        };
        let want = limit - rows.len() as i64;
        rows.extend(
            plan.fetch_part(conn, scope, tier, after, want, &mut explain)
                .await?,
        );
        if rows.len() as i64 >= limit {
            break;
        }
    }
    Ok(rows)
}

/// Sets planner `settings` for the transaction's next statements and
/// returns what they were, for [`restore_settings`].
async fn plan_settings(
    conn: &mut PgConnection,
    settings: &[(&'static str, &'static str)],
) -> Result<Vec<(String, String)>, Error> {
    let names: Vec<&str> = settings.iter().map(|(n, _)| *n).collect();
    let values: Vec<&str> = settings.iter().map(|(_, v)| *v).collect();
    // Each row reads its setting, then sets it (left to right).
    let previous: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT n, current_setting(n), set_config(n, v, true) \
         FROM unnest($1::text[], $2::text[]) AS s(n, v)",
    )
    .bind(&names)
    .bind(&values)
    .fetch_all(&mut *conn)
    .await?;
    Ok(previous.into_iter().map(|(n, old, _)| (n, old)).collect())
}

/// Puts back the settings [`plan_settings`] changed.
async fn restore_settings(
    conn: &mut PgConnection,
    previous: Vec<(String, String)>,
) -> Result<(), Error> {
    let (names, values): (Vec<String>, Vec<String>) = previous.into_iter().unzip();
    sqlx::query("SELECT set_config(n, v, true) FROM unnest($1::text[], $2::text[]) AS s(n, v)")
        .bind(&names)
        .bind(&values)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Runs `qb` (under EXPLAIN too when `explain` is given) and returns its rows.
async fn run(
    conn: &mut PgConnection,
    explain: &mut Option<&mut String>,
    what: &str,
    build: impl Fn() -> Result<QueryBuilder<Postgres>, Error>,
) -> Result<Vec<PgRow>, Error> {
    if let Some(out) = explain.as_deref_mut() {
        let mut qb = build()?;
        let sql = format!("EXPLAIN (ANALYZE, COSTS OFF) {}", qb.sql().as_str());
        let args = qb
            .build()
            .take_arguments()
            .map_err(|e| Error::Internal(anyhow::anyhow!(e)))?
            .unwrap_or_default();
        let lines: Vec<String> = sqlx::query_scalar_with(sqlx::AssertSqlSafe(sql), args)
            .persistent(false)
            .fetch_all(&mut *conn)
            .await?;
        out.push_str(&format!("-- {what}\n{}\n", lines.join("\n")));
    }
    let mut qb = build()?;
    // Not a cached prepared statement: planned with the actual values every
    // time (a generic plan cannot use the trigram index for an unknown
    // search, or know how selective a filter is), and the endless variety
    // of filters does not fill the statement cache.
    Ok(qb.build().persistent(false).fetch_all(&mut *conn).await?)
}

fn rows_of(rows: &[PgRow], keys: usize) -> Result<Vec<Row>, Error> {
    rows.iter()
        .map(|r| {
            Ok(Row {
                json: r.try_get::<String, _>(0)?,
                keys: (1..=keys)
                    .map(|i| r.try_get::<Option<String>, _>(i))
                    .collect::<Result<Vec<_>, _>>()?,
            })
        })
        .collect()
}

/// Longest `search`, in characters.
pub const MAX_SEARCH_CHARS: usize = 200;
/// Words of `search` that must all match (the rest are ignored).
pub const MAX_SEARCH_WORDS: usize = 8;
/// Most `order_by` keys.
pub const MAX_ORDER_KEYS: usize = 5;

/// One key of the sort order.
#[derive(Clone, Debug, PartialEq)]
pub enum Key {
    /// A column of the entity.
    Column {
        /// Column name (a known field).
        name: String,
        /// Postgres type to cast cursor text to.
        cast: &'static str,
        /// Whether the column can be NULL.
        nullable: bool,
    },
    /// A defined custom field (`custom_fields.<key>`), as its type
    /// compares (the expression of the definition's index).
    Custom {
        /// The key.
        key: String,
        /// Its type.
        ty: FieldType,
    },
    /// Search relevance tier (see [`Tier`]): the first key of a search
    /// without `order_by`, followed by `created_at desc`.
    Tier,
}

/// A sort key and its direction.
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    /// What is sorted.
    pub key: Key,
    /// Descending.
    pub desc: bool,
}

/// Everything a List needs beyond scope and paging.
#[derive(Clone, Debug)]
pub struct Plan {
    filter: Option<Expr>,
    schema: std::sync::Arc<ResourceSchema>,
    /// The sort keys, ending with `id`.
    pub keys: Vec<SortKey>,
    search: Option<String>,
}

const NOT_NULL: [&str; 6] = [
    "id",
    "created_at",
    "updated_at",
    "version",
    "schema_version",
    "is_deleted",
];

fn cast(shape: Shape) -> Option<&'static str> {
    Some(match shape {
        Shape::String => "text",
        Shape::Double => "numeric",
        Shape::Int32 => "integer",
        Shape::Bool => "boolean",
        Shape::Timestamp => "timestamptz",
        _ => return None,
    })
}

fn column_key(f: &FieldMeta, desc: bool) -> Option<SortKey> {
    Some(SortKey {
        key: Key::Column {
            name: f.name.clone(),
            cast: cast(f.shape)?,
            nullable: !NOT_NULL.contains(&f.name.as_str()),
        },
        desc,
    })
}

pub(super) fn field<'m>(meta: &'m Meta, name: &str) -> Option<&'m FieldMeta> {
    meta.position(name).map(|i| &meta.fields[i])
}

/// The sort key of `custom_fields.<key>`, a key of `schema`.
fn custom_key(schema: &ResourceSchema, name: &str, desc: bool) -> Result<SortKey, Error> {
    let key = &name["custom_fields.".len()..];
    let d = schema.get(key).ok_or_else(|| {
        invalid(
            "order_by",
            format!(
                "{name} is not a defined custom field: define it (FieldDefinitionService) to sort on it"
            ),
        )
    })?;
    if !d.ty.sortable() {
        return Err(invalid(
            "order_by",
            format!(
                "{name} is {}, which cannot be sorted on",
                crate::records::fields::article(d.ty.as_str())
            ),
        ));
    }
    Ok(SortKey {
        key: Key::Custom {
            key: d.key.clone(),
            ty: d.ty,
        },
        desc,
    })
}

/// Parses `order_by` into sort keys ending with `id`.
fn order(
    meta: &Meta,
    schema: &ResourceSchema,
    order_by: &str,
    search: bool,
) -> Result<Vec<SortKey>, Error> {
    let mut keys = Vec::new();
    for part in order_by.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut words = part.split_whitespace();
        let name = words.next().unwrap_or_default();
        let desc = match words.next().map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(invalid(
                    "order_by",
                    format!("\"{part}\": expected asc or desc, found \"{other}\""),
                ));
            }
        };
        if words.next().is_some() {
            return Err(invalid(
                "order_by",
                format!("\"{part}\": expected \"field [asc|desc]\""),
            ));
        }
        if name.starts_with("custom_fields.") && meta.field("custom_fields").is_some() {
            let key = custom_key(schema, name, desc)?;
            if keys.iter().any(|k: &SortKey| k.key == key.key) {
                return Err(invalid("order_by", format!("{name} is named twice")));
            }
            keys.push(key);
            continue;
        }
        let f = field(meta, name)
            .ok_or_else(|| invalid("order_by", format!("unknown field \"{name}\"")))?;
        if f.long_text {
            return Err(invalid(
                "order_by",
                format!("{} is free text and cannot be sorted on", f.name),
            ));
        }
        let key = column_key(f, desc).ok_or_else(|| {
            invalid(
                "order_by",
                format!("{} cannot be sorted on (only single values can)", f.name),
            )
        })?;
        if keys.iter().any(|k: &SortKey| k.key == key.key) {
            return Err(invalid("order_by", format!("{} is named twice", f.name)));
        }
        if f.name == "id" {
            keys.push(key);
            return Ok(keys);
        }
        keys.push(key);
    }
    if keys.len() > MAX_ORDER_KEYS {
        return Err(invalid(
            "order_by",
            format!("at most {MAX_ORDER_KEYS} fields"),
        ));
    }
    if keys.is_empty() {
        if search {
            keys.push(SortKey {
                key: Key::Tier,
                desc: true,
            });
        }
        let created = meta
            .field("created_at")
            .expect("every entity has created_at");
        keys.push(column_key(created, true).expect("a timestamp sorts"));
    }
    // id makes the order total; it follows the first key's direction so the
    // default order matches the (tenant_id, created_at DESC, id DESC) index.
    let id = meta.field("id").expect("every entity has id");
    keys.push(column_key(id, keys[0].desc).expect("text sorts"));
    Ok(keys)
}

impl Plan {
    /// Checks and prepares `filter`, `order_by` and `search`.
    pub fn new(
        meta: &Meta,
        schema: std::sync::Arc<ResourceSchema>,
        filter_text: &str,
        order_by: &str,
        search: &str,
        show_deleted: bool,
    ) -> Result<Self, Error> {
        let filter = filter::parse(filter_text).map_err(|e| invalid("filter", e.to_string()))?;
        if let Some(f) = &filter {
            // Compile once to report unknown fields and type errors now.
            let mut qb = QueryBuilder::<Postgres>::new("");
            compile(meta, &schema, "", f, show_deleted, &mut qb)?;
        }
        let search = search.trim();
        if search.chars().count() > MAX_SEARCH_CHARS {
            return Err(invalid(
                "search",
                format!("must be at most {MAX_SEARCH_CHARS} characters"),
            ));
        }
        if search.contains('\0') {
            return Err(invalid("search", "must not contain NUL characters"));
        }
        let search = (!search.is_empty()).then(|| search.to_owned());
        let keys = order(meta, &schema, order_by, search.is_some())?;
        Ok(Self {
            filter,
            schema,
            keys,
            search,
        })
    }

    /// The types of the custom fields it sorts on (`key:type,…`).
    pub fn custom_types(&self) -> String {
        self.keys
            .iter()
            .filter_map(|k| match &k.key {
                Key::Custom { key, ty } => Some(format!("{key}:{}", ty.as_str())),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether this is a search ranked by [`Tier`] (no `order_by`).
    pub fn tiered(&self) -> bool {
        self.keys[0].key == Key::Tier
    }

    /// The keys rows are sorted by within a tier: all but [`Key::Tier`].
    fn order_keys(&self) -> &[SortKey] {
        if self.tiered() {
            &self.keys[1..]
        } else {
            &self.keys
        }
    }

    /// Whether the order is one a B-tree index of `table` serves as it is
    /// (tenant first, then the key, then `id`), so that a walk reads rows in
    /// order without sorting. The test `the_planner_uses_the_indexes`
    /// checks each against the migrations.
    fn index_ordered(&self, table: &str) -> bool {
        let [first, _id] = self.order_keys() else {
            return false;
        };
        let Key::Column { name, .. } = &first.key else {
            return false;
        };
        matches!(
            (table, name.as_str()),
            (_, "created_at" | "updated_at")
                | ("accounts" | "deals", "name")
                | ("contacts", "last_name")
                | ("deals", "value")
                | ("activities", "occurred_at")
        )
    }

    /// Whether a condition of this plan (of `tier`) is served by an
    /// unordered (GIN) index: a search, a list membership, a
    /// `custom_fields` path. (The name's tiers are B-tree conditions whose
    /// statistics the planner has: the index's expression.)
    fn unordered_conditions(&self, meta: &Meta, tier: Option<Tier>) -> bool {
        fn any(meta: &Meta, e: &Expr) -> bool {
            match e {
                Expr::And(items) | Expr::Or(items) => items.iter().any(|e| any(meta, e)),
                Expr::Not(inner) => any(meta, inner),
                Expr::Cmp { path, .. } => {
                    path.len() > 1
                        || field(meta, &path[0]).is_some_and(|f| f.shape == Shape::StringList)
                }
            }
        }
        (self.search.is_some() && !matches!(tier, Some(Tier::Exact | Tier::Prefix)))
            || self.filter.as_ref().is_some_and(|f| any(meta, f))
    }

    /// One tier's (or the whole list's) rows: see [`fetch_page`].
    async fn fetch_part(
        &self,
        conn: &mut PgConnection,
        scope: &Scope<'_>,
        tier: Option<Tier>,
        after: Option<&[Option<String>]>,
        limit: i64,
        explain: &mut Option<&mut String>,
    ) -> Result<Vec<Row>, Error> {
        let nkeys = self.keys.len();
        let walk = self.unordered_conditions(scope.meta, tier) && self.index_ordered(scope.table);
        if !walk {
            let rows = run(conn, explain, "page", || {
                self.direct(scope, tier, after, limit)
            })
            .await?;
            return rows_of(&rows, nkeys);
        }
        // The typo tier, and a search in another order, test similarity.
        let typo = self.search.is_some() && matches!(tier, None | Some(Tier::Typo));
        let budget = walk_budget(limit, typo);
        // After a cursor, the rest of the order may look small enough to
        // the planner to sort it instead of reading the index in order (a
        // by-name page near the end: 100,000 rows sorted on disk for one
        // page). A walk never sorts: only ordered index scans, for this
        // statement. (Page 1 spans the whole tenant: the index wins anyway.)
        let walk_plan = match after {
            Some(_) => Some(
                plan_settings(
                    conn,
                    &[
                        ("enable_sort", "off"),
                        ("enable_bitmapscan", "off"),
                        ("enable_seqscan", "off"),
                    ],
                )
                .await?,
            ),
            None => None,
        };
        let rows = run(conn, explain, "walk", || {
            self.walk(scope, tier, after, budget, limit)
        })
        .await;
        if let Some(previous) = walk_plan {
            restore_settings(conn, previous).await?;
        }
        let rows = rows?;
        let mut found = Vec::new();
        let mut horizon = None;
        for (row, r) in rows_of(&rows, nkeys)?.into_iter().zip(&rows) {
            let walked: i64 = r.try_get(nkeys + 1)?;
            // NULL (a condition on a NULL) does not match, as in WHERE.
            let matched = r.try_get::<Option<bool>, _>(nkeys + 2)? == Some(true);
            if walked == budget {
                horizon = Some(row.keys[nkeys - self.order_keys().len()..].to_vec());
            }
            if matched {
                found.push(row);
            }
        }
        if found.len() as i64 >= limit {
            return Ok(found);
        }
        let Some(h) = horizon else {
            // Fewer rows than the budget remained: the walk saw them all.
            return Ok(found);
        };
        // For this statement only (the settings are put back as they were).
        let previous = plan_settings(
            conn,
            &[("enable_indexscan", "off"), ("enable_seqscan", "off")],
        )
        .await?;
        let rows = run(conn, explain, "gather", || {
            self.direct(scope, tier, Some(&h), limit - found.len() as i64)
        })
        .await;
        restore_settings(conn, previous).await?;
        found.extend(rows_of(&rows?, nkeys)?);
        Ok(found)
    }

    /// Pushes the select list: the row's JSON, the tier, the order's keys.
    fn push_select(&self, tier: Option<Tier>, qb: &mut QueryBuilder<Postgres>, meta: &Meta) {
        qb.push("SELECT row_to_json(t)::text");
        if let Some(tier) = tier {
            qb.push(", ").push_bind((tier as u8).to_string());
        }
        for k in self.order_keys() {
            qb.push(", (");
            self.push_key(&k.key, meta, qb);
            qb.push(")::text");
        }
    }

    /// The page in one statement: the matches of `tier` after `after`,
    /// sorted, `limit` of them.
    fn direct(
        &self,
        scope: &Scope<'_>,
        tier: Option<Tier>,
        after: Option<&[Option<String>]>,
        limit: i64,
    ) -> Result<QueryBuilder<Postgres>, Error> {
        let mut qb = QueryBuilder::<Postgres>::new("");
        self.push_select(tier, &mut qb, scope.meta);
        // A plan that sorts the matches (a selective filter served by
        // another index than the order's) builds the JSON of the first page
        // only: migration 0013 marks row_to_json expensive, so the planner
        // evaluates it after the sort and the limit.
        scope.push_from(&mut qb);
        self.push_conditions(scope.meta, scope.tenant, tier, scope.show_deleted, &mut qb)?;
        if let Some(keys) = after {
            self.push_after(keys, scope.meta, &mut qb)?;
        }
        self.push_order(scope.meta, &mut qb);
        qb.push(" LIMIT ").push_bind(limit);
        Ok(qb)
    }

    /// The walk: the first `budget` rows after `after` in the order's index,
    /// of which the matches, `limit` at most, each followed by `crm_walked`
    /// (its place in the walk) and whether it matches; and the walk's last
    /// row (place `budget`) whether it matches or not, which is the
    /// *horizon*: the keys the gather continues after. One statement reads
    /// the index once, and stops as soon as the page is full.
    fn walk(
        &self,
        scope: &Scope<'_>,
        tier: Option<Tier>,
        after: Option<&[Option<String>]>,
        budget: i64,
        limit: i64,
    ) -> Result<QueryBuilder<Postgres>, Error> {
        let mut qb = QueryBuilder::<Postgres>::new("");
        self.push_select(tier, &mut qb, scope.meta);
        qb.push(", t.crm_walked, (TRUE");
        self.push_conditions(scope.meta, scope.tenant, tier, scope.show_deleted, &mut qb)?;
        // row_number() in the order the rows stream from the index numbers
        // them as they come: no sort, no reading ahead, and the order is
        // kept for the outer ORDER BY.
        qb.push(") FROM (SELECT t.*, row_number() OVER (");
        self.push_order(scope.meta, &mut qb);
        qb.push(") AS crm_walked FROM (SELECT t.*");
        scope.push_from(&mut qb);
        if let Some(keys) = after {
            self.push_after(keys, scope.meta, &mut qb)?;
        }
        self.push_order(scope.meta, &mut qb);
        qb.push(" LIMIT ")
            .push_bind(budget)
            .push(") t) t WHERE ((TRUE");
        self.push_conditions(scope.meta, scope.tenant, tier, scope.show_deleted, &mut qb)?;
        qb.push(") OR t.crm_walked = ").push_bind(budget).push(")");
        self.push_order(scope.meta, &mut qb);
        qb.push(" LIMIT ").push_bind(limit);
        Ok(qb)
    }

    /// Adds `AND <filter> AND <search of tier>` to the WHERE clause.
    pub fn push_conditions(
        &self,
        meta: &Meta,
        tenant: &str,
        tier: Option<Tier>,
        show_deleted: bool,
        qb: &mut QueryBuilder<Postgres>,
    ) -> Result<(), Error> {
        if let Some(f) = &self.filter {
            qb.push(" AND ");
            compile(meta, &self.schema, tenant, f, show_deleted, qb)?;
        }
        let (Some(q), Some(doc), Some(name)) = (
            &self.search,
            meta.search_doc.as_deref(),
            meta.name_doc.as_deref(),
        ) else {
            return Ok(());
        };
        let words: Vec<&str> = q.split_whitespace().take(MAX_SEARCH_WORDS).collect();
        // Every word occurs (as a substring, so prefixes too): served by the
        // trigram index, and the rarest word narrows the most.
        let all_words = |qb: &mut QueryBuilder<Postgres>| {
            qb.push("(TRUE");
            for word in &words {
                qb.push(" AND ").push(doc).push(" LIKE '%' || ");
                push_folded_like(qb, word);
                qb.push(" || '%'");
            }
            qb.push(")");
        };
        let name_prefix = |qb: &mut QueryBuilder<Postgres>| {
            qb.push(name).push(" LIKE ");
            push_folded_like(qb, q);
            qb.push(" || '%'");
        };
        // The name's tiers need not repeat the words: a name that starts
        // with the search contains each of its words, and the name is the
        // start of the document. (Repeating them would offer the planner
        // the trigram index, which finds a common word's every record.)
        match tier {
            Some(Tier::Exact) => {
                qb.push(" AND ")
                    .push(name)
                    .push(" = crm_search_norm(")
                    .push_bind(q.clone())
                    .push(")");
            }
            Some(Tier::Prefix) => {
                qb.push(" AND ");
                name_prefix(qb);
                qb.push(" AND ")
                    .push(name)
                    .push(" <> crm_search_norm(")
                    .push_bind(q.clone())
                    .push(")");
            }
            Some(Tier::Words) => {
                qb.push(" AND ");
                all_words(qb);
                qb.push(" AND NOT (");
                name_prefix(qb);
                qb.push(")");
            }
            None | Some(Tier::Typo) => {
                // Every word occurs or is close to a word of the document.
                for word in &words {
                    qb.push(" AND (").push(doc).push(" LIKE '%' || ");
                    push_folded_like(qb, word);
                    qb.push(" || '%'");
                    // Typos are looked for in words, not in numbers or very
                    // short words (where "close" matches nearly everything).
                    if typo_tolerant(word) {
                        qb.push(" OR crm_search_norm(")
                            .push_bind(word.to_string())
                            .push(") <% ")
                            .push(doc);
                    }
                    qb.push(")");
                }
                if tier == Some(Tier::Typo) {
                    qb.push(" AND NOT ");
                    all_words(qb);
                }
            }
        }
        Ok(())
    }

    /// Pushes the SQL of the order key `key` (a column of `t`).
    fn push_key(&self, key: &Key, _meta: &Meta, qb: &mut QueryBuilder<Postgres>) {
        match key {
            Key::Column { name, .. } => {
                qb.push("t.\"").push(name).push('"');
            }
            Key::Custom { key, ty } => {
                qb.push(crate::custom::index::expression(*ty, key, "t."));
            }
            Key::Tier => unreachable!("the tier is no column: each statement reads one tier"),
        }
    }

    /// Pushes `ORDER BY …` (within a tier).
    fn push_order(&self, meta: &Meta, qb: &mut QueryBuilder<Postgres>) {
        qb.push(" ORDER BY ");
        for (i, k) in self.order_keys().iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            self.push_key(&k.key, meta, qb);
            // Empty (NULL) sorts as the smallest value; non-null keys keep
            // Postgres' default so that the indexes' order matches.
            let nullable = nullable(&k.key);
            qb.push(match (k.desc, nullable) {
                (true, true) => " DESC NULLS LAST",
                (false, true) => " ASC NULLS FIRST",
                (true, false) => " DESC",
                (false, false) => " ASC",
            });
        }
    }

    /// Pushes the keyset condition "after the row whose order keys are
    /// `after`" (as text, `None` for NULL).
    fn push_after(
        &self,
        after: &[Option<String>],
        meta: &Meta,
        qb: &mut QueryBuilder<Postgres>,
    ) -> Result<(), Error> {
        let keys = self.order_keys();
        if after.len() != keys.len() {
            return Err(invalid("page_token", "is not a page token of this list"));
        }
        let cast_of = |k: &Key| match k {
            Key::Column { cast, .. } => *cast,
            Key::Custom { ty, .. } if ty.numeric() => "numeric",
            Key::Custom { .. } | Key::Tier => "text",
        };
        let same_dir = keys.iter().all(|k| k.desc == keys[0].desc);
        if same_dir && keys.iter().all(|k| !nullable(&k.key)) && after.iter().all(Option::is_some) {
            // Row comparison: one index range when the index matches.
            qb.push(" AND (");
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    qb.push(", ");
                }
                self.push_key(&k.key, meta, qb);
            }
            qb.push(if keys[0].desc { ") < (" } else { ") > (" });
            for (i, (k, v)) in keys.iter().zip(after).enumerate() {
                if i > 0 {
                    qb.push(", ");
                }
                qb.push_bind(v.clone()).push("::").push(cast_of(&k.key));
            }
            qb.push(")");
            return Ok(());
        }
        // A bound on the first key, which the OR below cannot give: without
        // it an ordered index scan starts at the tenant's first row and
        // filters its way to the cursor (a page's cost grew with its
        // position). Ascending, empty values sort first, so every row after
        // a set key has a key >= it; descending, empty values sort last, so
        // only a key that cannot be empty bounds them.
        if let Some(v) = &after[0] {
            let k = &keys[0];
            if !k.desc || !nullable(&k.key) {
                qb.push(" AND ");
                self.push_key(&k.key, meta, qb);
                qb.push(if k.desc { " <= " } else { " >= " })
                    .push_bind(v.clone())
                    .push("::")
                    .push(cast_of(&k.key));
            }
        }
        // OR over i of (keys before i equal AND key i after).
        qb.push(" AND (");
        for i in 0..keys.len() {
            if i > 0 {
                qb.push(" OR ");
            }
            qb.push("(TRUE");
            for (k, v) in keys[..i].iter().zip(after) {
                qb.push(" AND ");
                self.push_key(&k.key, meta, qb);
                match v {
                    None => qb.push(" IS NULL"),
                    Some(v) => qb
                        .push(" = ")
                        .push_bind(v.clone())
                        .push("::")
                        .push(cast_of(&k.key)),
                };
            }
            let k = &keys[i];
            qb.push(" AND ");
            match (&after[i], k.desc) {
                (None, false) => {
                    self.push_key(&k.key, meta, qb);
                    qb.push(" IS NOT NULL");
                }
                (None, true) => {
                    qb.push("FALSE");
                }
                (Some(v), false) => {
                    self.push_key(&k.key, meta, qb);
                    qb.push(" > ")
                        .push_bind(v.clone())
                        .push("::")
                        .push(cast_of(&k.key));
                }
                (Some(v), true) => {
                    qb.push("(");
                    self.push_key(&k.key, meta, qb);
                    qb.push(" < ")
                        .push_bind(v.clone())
                        .push("::")
                        .push(cast_of(&k.key))
                        .push(" OR ");
                    self.push_key(&k.key, meta, qb);
                    qb.push(" IS NULL)");
                }
            }
            qb.push(")");
        }
        qb.push(")");
        Ok(())
    }
}

/// Whether a sort key can be empty (NULL). A custom field's cannot: no
/// value sorts below every value (see `custom::index::expression`).
fn nullable(k: &Key) -> bool {
    matches!(k, Key::Column { nullable: true, .. })
}

/// Whether a search word may match with a typo: 4 characters or more, with
/// at least one letter.
fn typo_tolerant(word: &str) -> bool {
    word.chars().count() >= 4 && word.chars().any(char::is_alphabetic)
}

/// `crm_search_norm(word)` escaped for LIKE, the escaping done after the
/// folding: folding maps fullwidth `％` and `＿` (and others) to `%` and `_`,
/// which must then match themselves, not act as wildcards.
fn push_folded_like(qb: &mut QueryBuilder<Postgres>, word: &str) {
    qb.push("replace(replace(replace(crm_search_norm(")
        .push_bind(word.to_owned())
        .push(r"), '\', '\\'), '%', '\%'), '_', '\_')");
}

pub(super) fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Entity;
    use crate::records::filter::Literal;
    use crate::sql::filter::{canonical, check_number};

    fn typed() -> std::sync::Arc<ResourceSchema> {
        use crate::custom::Definition;
        let d = |key: &str, ty| Definition {
            id: format!("fld_{key}"),
            key: key.into(),
            ty,
            options: vec!["emea".into()],
            required: false,
            unique: false,
            max_length: None,
            minimum: None,
            maximum: None,
        };
        std::sync::Arc::new(ResourceSchema::new([
            d("seats", FieldType::Integer),
            d("renewal", FieldType::Date),
            d("signed", FieldType::Datetime),
            d("vip", FieldType::Boolean),
            d("regions", FieldType::MultiEnum),
        ]))
    }

    fn typed_sql(filter: &str, order_by: &str) -> Result<String, String> {
        let meta = crate::proto::Account::kind().meta();
        let plan =
            Plan::new(meta, typed(), filter, order_by, "", false).map_err(|e| format!("{e:?}"))?;
        let mut qb = QueryBuilder::<Postgres>::new("");
        plan.push_conditions(meta, "t1", None, false, &mut qb)
            .map_err(|e| format!("{e:?}"))?;
        plan.push_order(meta, &mut qb);
        Ok(qb.into_string())
    }

    #[test]
    fn defined_custom_fields_compare_by_type_and_sort() {
        assert_eq!(
            typed_sql("custom_fields.seats > 9", "").unwrap(),
            " AND (crm_cf_number(t.custom_fields, 'seats') > $1::numeric) ORDER BY t.\"created_at\" DESC, t.\"id\" DESC"
        );
        assert_eq!(
            typed_sql("custom_fields.seats = 10", "custom_fields.seats desc").unwrap(),
            " AND (crm_cf_number(t.custom_fields, 'seats') = $1::numeric AND t.\"tenant_custom_fields\" @> $2::jsonb) \
             ORDER BY crm_cf_number(t.custom_fields, 'seats') DESC, t.\"id\" DESC"
        );
        assert_eq!(
            typed_sql(
                r#"custom_fields.renewal >= "2026-01-01""#,
                "custom_fields.renewal"
            )
            .unwrap(),
            " AND (crm_cf_text(t.custom_fields, 'renewal') >= $1) \
             ORDER BY crm_cf_text(t.custom_fields, 'renewal') ASC, t.\"id\" ASC"
        );
        assert_eq!(
            typed_sql(r#"custom_fields.regions:"emea""#, "").unwrap(),
            " AND (t.\"tenant_custom_fields\" @> $1::jsonb) ORDER BY t.\"created_at\" DESC, t.\"id\" DESC"
        );
        // Untyped forms stay for presence, booleans and undefined keys.
        assert!(
            typed_sql("custom_fields.vip = true", "")
                .unwrap()
                .contains("t.\"tenant_custom_fields\" @>")
        );
        assert!(
            typed_sql("custom_fields.other > 1", "")
                .unwrap()
                .contains("jsonb_typeof")
        );
        for (filter, order, want) in [
            (
                "custom_fields.seats > \"9\"",
                "",
                "custom_fields.seats is an integer: compare it with a number",
            ),
            (
                "custom_fields.renewal > 2026",
                "",
                "custom_fields.renewal is a date: compare it with a quoted string",
            ),
            (
                "custom_fields.renewal > \"2026-13-01\"",
                "",
                "is not YYYY-MM-DD",
            ),
            (
                "custom_fields.signed > \"2026-01-01\"",
                "",
                "is not an RFC 3339 time",
            ),
            (
                "custom_fields.regions = \"emea\"",
                "",
                "use custom_fields.regions:",
            ),
            (
                "",
                "custom_fields.other",
                "custom_fields.other is not a defined custom field",
            ),
            (
                "",
                "custom_fields.vip",
                "custom_fields.vip is a boolean, which cannot be sorted on",
            ),
            (
                "",
                "custom_fields.seats, custom_fields.seats desc",
                "custom_fields.seats is named twice",
            ),
        ] {
            let e = typed_sql(filter, order).unwrap_err();
            assert!(e.contains(want), "{filter} / {order}: {e}");
        }
    }

    #[test]
    fn custom_pages_continue_in_one_index_range_both_ways() {
        let meta = crate::proto::Account::kind().meta();
        for (order, cmp) in [
            ("custom_fields.seats", ">"),
            ("custom_fields.seats desc", "<"),
        ] {
            let plan = Plan::new(meta, typed(), "", order, "", false).unwrap();
            let mut qb = QueryBuilder::<Postgres>::new("");
            // Records without a value continue the order too ('-Infinity').
            plan.push_after(
                &[Some("-Infinity".into()), Some("acc_x".into())],
                meta,
                &mut qb,
            )
            .unwrap();
            assert_eq!(
                qb.into_string(),
                format!(
                    " AND (crm_cf_number(t.custom_fields, 'seats'), t.\"id\") {cmp} ($1::numeric, $2::text)"
                )
            );
            assert_eq!(plan.custom_types(), "seats:integer");
        }
        // Below a bound: above the value of records without one.
        assert_eq!(
            typed_sql("custom_fields.seats <= 9", "").unwrap(),
            " AND (crm_cf_number(t.custom_fields, 'seats') > '-Infinity'::numeric AND \
             crm_cf_number(t.custom_fields, 'seats') <= $1::numeric) ORDER BY t.\"created_at\" DESC, t.\"id\" DESC"
        );
    }

    #[test]
    fn pages_of_nullable_orders_are_bounded_by_their_first_key() {
        let meta = crate::proto::Account::kind().meta();
        let after = |order: &str, first: Option<&str>| {
            let plan =
                Plan::new(meta, crate::custom::values::empty(), "", order, "", false).unwrap();
            let mut qb = QueryBuilder::<Postgres>::new("");
            plan.push_after(
                &[first.map(Into::into), Some("acc_x".into())],
                meta,
                &mut qb,
            )
            .unwrap();
            qb.into_string()
        };
        // Ascending: every row after a named one has a name >= it (empty
        // names sort first): the index range starts at the cursor.
        assert!(
            after("name", Some("Acme")).starts_with(" AND t.\"name\" >= $1::text AND ("),
            "{}",
            after("name", Some("Acme"))
        );
        // Descending, empty names come after every named one: no bound; a
        // cursor among the empty names: none either.
        assert!(after("name desc", Some("Acme")).starts_with(" AND (("));
        assert!(after("name", None).starts_with(" AND (("));
    }

    fn sql(filter: &str) -> Result<String, String> {
        let meta = crate::proto::Account::kind().meta();
        let plan = Plan::new(meta, crate::custom::values::empty(), filter, "", "", false)
            .map_err(|e| format!("{e:?}"))?;
        let mut qb = QueryBuilder::<Postgres>::new("");
        plan.push_conditions(meta, "t1", None, false, &mut qb)
            .map_err(|e| format!("{e:?}"))?;
        Ok(qb.into_string())
    }

    #[test]
    fn values_are_always_bound() {
        let s = sql(r#"name = "x'; drop table accounts; --""#).unwrap();
        assert!(!s.contains("drop table"), "{s}");
        assert!(s.contains("$1"), "{s}");
        let s = sql(r#"custom_fields.a = "'x" AND tags:"'y""#).unwrap();
        assert!(!s.contains("'x") && !s.contains("'y"), "{s}");
    }

    #[test]
    fn fields_and_types_are_checked() {
        assert!(sql("nope = 1").unwrap_err().contains("unknown field"));
        assert!(
            sql("annual_revenue = abc")
                .unwrap_err()
                .contains("takes a number")
        );
        assert!(
            sql("employee_count = 1.5")
                .unwrap_err()
                .contains("whole number")
        );
        assert!(
            sql("created_at > \"yesterday\"")
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(sql("tags = vip").unwrap_err().contains("is a list"));
        assert!(
            sql("is_deleted = true")
                .unwrap_err()
                .contains("show_deleted")
        );
        assert!(sql("name.first = 1").unwrap_err().contains("no subfields"));
        assert!(
            sql("addresses = 1")
                .unwrap_err()
                .contains("cannot be filtered")
        );
        assert!(sql("is_deleted = true").is_err());
        assert!(
            sql("legalName = \"x\"").is_ok(),
            "camelCase names are accepted"
        );
    }

    #[test]
    fn numbers_postgres_cannot_hold_are_refused() {
        for f in [
            "annual_revenue > 1e999999",
            "annual_revenue > 1e-999999",
            "custom_fields.n > 1e999999",
            "custom_fields.n = 1e-999999",
        ] {
            assert!(sql(f).unwrap_err().contains("out of range"), "{f}");
        }
        assert!(sql("annual_revenue > 1e-300").is_ok());
        assert!(sql("annual_revenue > 0.000").is_ok());
        assert_eq!(check_number("0e5"), Ok(()));
    }

    #[test]
    fn id_filters_are_canonical() {
        let s = sql("parent_account_id = acc_01hxz3k8q9w2x4y6z8a0b1c2d3").unwrap();
        assert!(s.contains("$1"), "{s}");
        let meta = crate::proto::Account::kind().meta();
        let f = meta.field("parent_account_id").unwrap();
        assert_eq!(
            canonical(f, &Literal::Text("acc_01hxz3k8q9w2x4y6z8a0b1c2d3".into())),
            Literal::Text("acc_01HXZ3K8Q9W2X4Y6Z8A0B1C2D3".into())
        );
        assert_eq!(
            canonical(f, &Literal::Text("acc_8ZZZZZZZZZZZZZZZZZZZZZZZZZ".into())),
            Literal::Text("acc_8ZZZZZZZZZZZZZZZZZZZZZZZZZ".into())
        );
    }

    #[test]
    fn orders_end_with_id() {
        let meta = crate::proto::Account::kind().meta();
        let p = Plan::new(
            meta,
            crate::custom::values::empty(),
            "",
            "name desc, annual_revenue",
            "",
            false,
        )
        .unwrap();
        let names: Vec<String> = p
            .keys
            .iter()
            .map(|k| match &k.key {
                Key::Column { name, .. } => format!("{name}{}", if k.desc { " desc" } else { "" }),
                Key::Custom { key, .. } => format!("custom_fields.{key}"),
                Key::Tier => "tier".into(),
            })
            .collect();
        assert_eq!(names, vec!["name desc", "annual_revenue", "id desc"]);
        assert!(Plan::new(meta, crate::custom::values::empty(), "", "tags", "", false).is_err());
        assert!(
            Plan::new(
                meta,
                crate::custom::values::empty(),
                "",
                "description",
                "",
                false
            )
            .is_err()
        );
        assert!(
            Plan::new(
                meta,
                crate::custom::values::empty(),
                "",
                "name sideways",
                "",
                false
            )
            .is_err()
        );
        assert!(Plan::new(meta, crate::custom::values::empty(), "", "nope", "", false).is_err());
        assert!(
            Plan::new(
                meta,
                crate::custom::values::empty(),
                "",
                "name, name desc",
                "",
                false
            )
            .is_err()
        );
        let d = Plan::new(meta, crate::custom::values::empty(), "", "", "", false).unwrap();
        assert_eq!(d.keys.len(), 2);
        let s = Plan::new(meta, crate::custom::values::empty(), "", "", "acme", false).unwrap();
        assert_eq!(s.keys[0].key, Key::Tier);
        assert_eq!(s.keys.len(), 3);
    }
}
