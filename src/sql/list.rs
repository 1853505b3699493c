//! List queries: the one builder that turns a filter (compiled by
//! [`super::filter`]), an order and a search into parameterized SQL. Field names come only from the entity's
//! descriptor-derived fields; every value is a bind parameter
//! (`sqlx::QueryBuilder::push_bind`); the only text pushed is static SQL and
//! those known column names.
//!
//! Order: `field [asc|desc]` over scalar fields, always ending with `id`;
//! empty values sort first ascending and last descending. Keyset pages
//! compare the last row's keys exactly (as text from Postgres).

use sqlx::{Postgres, QueryBuilder};

use super::filter::compile;
use crate::custom::{FieldType, ResourceSchema};
use crate::error::{Error, invalid};
use crate::records::filter::{self, Expr};
use crate::records::schema::{FieldMeta, Meta, Shape};

/// The SELECT of one page of `table`: each row as JSON followed by its sort
/// keys as text, scoped to `tenant` (and `app`), after `after` when given.
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
    let (name_doc, doc) = (meta.name_doc.as_deref(), meta.search_doc.as_deref());
    let mut qb = QueryBuilder::<Postgres>::new("SELECT row_to_json(t)::text");
    for k in &plan.keys {
        qb.push(", (");
        plan.push_key(&k.key, name_doc, doc, &mut qb);
        qb.push(")::text");
    }
    // A plan that sorts the matches (a selective filter served by another
    // index than the order's) builds the JSON of the first page only:
    // migration 0013 marks row_to_json expensive, so the planner evaluates
    // it after the sort and the limit. (A subquery choosing the page first
    // does the same but costs 1.5 ms more planning on every list.)
    qb.push(" FROM \"")
        .push(table)
        .push("\" t WHERE t.tenant_id = ");
    qb.push_bind(tenant.to_owned());
    if let Some(app) = app {
        qb.push(" AND t.app_id = ").push_bind(app.to_owned());
    }
    if !show_deleted {
        qb.push(" AND NOT t.is_deleted");
    }
    plan.push_conditions(meta, doc, show_deleted, &mut qb)?;
    if let Some(keys) = after {
        plan.push_after(keys, name_doc, doc, &mut qb)?;
    }
    plan.push_order(name_doc, doc, &mut qb);
    qb.push(" LIMIT ").push_bind(limit);
    Ok(qb)
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
    /// Search relevance.
    Rank,
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
                key: Key::Rank,
                desc: true,
            });
        } else {
            let created = meta
                .field("created_at")
                .expect("every entity has created_at");
            keys.push(column_key(created, true).expect("a timestamp sorts"));
        }
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
            compile(meta, &schema, f, show_deleted, &mut qb)?;
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

    /// Adds `AND <filter> AND <search>` to the WHERE clause.
    pub fn push_conditions(
        &self,
        meta: &Meta,
        search_doc: Option<&str>,
        show_deleted: bool,
        qb: &mut QueryBuilder<Postgres>,
    ) -> Result<(), Error> {
        if let Some(f) = &self.filter {
            qb.push(" AND ");
            compile(meta, &self.schema, f, show_deleted, qb)?;
        }
        if let (Some(q), Some(doc)) = (&self.search, search_doc) {
            // Every word must occur (as a substring, so prefixes too) or be
            // close to a word of the document (typos): both are served by
            // the trigram index, and the rarest word narrows the most.
            for word in q.split_whitespace().take(MAX_SEARCH_WORDS) {
                qb.push(" AND (").push(doc).push(" LIKE '%' || ");
                push_folded_like(qb, word);
                qb.push(" || '%'");
                // Typos are looked for in words, not in numbers or very
                // short words (where "close" matches nearly everything).
                if typo_tolerant(word) {
                    qb.push(" OR crm_search_norm(")
                        .push_bind(word.to_owned())
                        .push(") <% ")
                        .push(doc);
                }
                qb.push(")");
            }
        }
        Ok(())
    }

    /// Pushes the SQL of `key` (a column of `t`, or the search rank).
    pub fn push_key(
        &self,
        key: &Key,
        name_doc: Option<&str>,
        search_doc: Option<&str>,
        qb: &mut QueryBuilder<Postgres>,
    ) {
        match key {
            Key::Column { name, .. } => {
                qb.push("t.\"").push(name).push('"');
            }
            Key::Custom { key, ty } => {
                qb.push(crate::custom::index::expression(*ty, key, "t."));
            }
            Key::Rank => {
                let q = self.search.clone().unwrap_or_default();
                let (name_doc, doc) = (name_doc.unwrap_or("''"), search_doc.unwrap_or("''"));
                // Exact name first, then name prefix, then similarity.
                qb.push("((CASE WHEN ")
                    .push(name_doc)
                    .push(" = crm_search_norm(")
                    .push_bind(q.clone())
                    .push(") THEN 2 WHEN ")
                    .push(name_doc)
                    .push(" LIKE ");
                push_folded_like(qb, &q);
                qb.push(" || '%' THEN 1 ELSE 0 END) + word_similarity(crm_search_norm(")
                    .push_bind(q)
                    .push("), ")
                    .push(doc)
                    .push("))::real");
            }
        }
    }

    /// Pushes `ORDER BY …`.
    pub fn push_order(
        &self,
        name_doc: Option<&str>,
        search_doc: Option<&str>,
        qb: &mut QueryBuilder<Postgres>,
    ) {
        qb.push(" ORDER BY ");
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            self.push_key(&k.key, name_doc, search_doc, qb);
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

    /// Pushes the keyset condition "after the row whose keys are `after`"
    /// (as text, `None` for NULL).
    pub fn push_after(
        &self,
        after: &[Option<String>],
        name_doc: Option<&str>,
        search_doc: Option<&str>,
        qb: &mut QueryBuilder<Postgres>,
    ) -> Result<(), Error> {
        if after.len() != self.keys.len() {
            return Err(invalid("page_token", "is not a page token of this list"));
        }
        let cast_of = |k: &Key| match k {
            Key::Column { cast, .. } => *cast,
            Key::Custom { ty, .. } if ty.numeric() => "numeric",
            Key::Custom { .. } => "text",
            Key::Rank => "real",
        };
        let same_dir = self.keys.iter().all(|k| k.desc == self.keys[0].desc);
        if same_dir
            && self.keys.iter().all(|k| !nullable(&k.key))
            && after.iter().all(Option::is_some)
        {
            // Row comparison: one index range when the index matches.
            qb.push(" AND (");
            for (i, k) in self.keys.iter().enumerate() {
                if i > 0 {
                    qb.push(", ");
                }
                self.push_key(&k.key, name_doc, search_doc, qb);
            }
            qb.push(if self.keys[0].desc { ") < (" } else { ") > (" });
            for (i, (k, v)) in self.keys.iter().zip(after).enumerate() {
                if i > 0 {
                    qb.push(", ");
                }
                qb.push_bind(v.clone()).push("::").push(cast_of(&k.key));
            }
            qb.push(")");
            return Ok(());
        }
        // OR over i of (keys before i equal AND key i after).
        qb.push(" AND (");
        for i in 0..self.keys.len() {
            if i > 0 {
                qb.push(" OR ");
            }
            qb.push("(TRUE");
            for (k, v) in self.keys[..i].iter().zip(after) {
                qb.push(" AND ");
                self.push_key(&k.key, name_doc, search_doc, qb);
                match v {
                    None => qb.push(" IS NULL"),
                    Some(v) => qb
                        .push(" = ")
                        .push_bind(v.clone())
                        .push("::")
                        .push(cast_of(&k.key)),
                };
            }
            let k = &self.keys[i];
            qb.push(" AND ");
            match (&after[i], k.desc) {
                (None, false) => {
                    self.push_key(&k.key, name_doc, search_doc, qb);
                    qb.push(" IS NOT NULL");
                }
                (None, true) => {
                    qb.push("FALSE");
                }
                (Some(v), false) => {
                    self.push_key(&k.key, name_doc, search_doc, qb);
                    qb.push(" > ")
                        .push_bind(v.clone())
                        .push("::")
                        .push(cast_of(&k.key));
                }
                (Some(v), true) => {
                    qb.push("(");
                    self.push_key(&k.key, name_doc, search_doc, qb);
                    qb.push(" < ")
                        .push_bind(v.clone())
                        .push("::")
                        .push(cast_of(&k.key))
                        .push(" OR ");
                    self.push_key(&k.key, name_doc, search_doc, qb);
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
        plan.push_conditions(meta, None, false, &mut qb)
            .map_err(|e| format!("{e:?}"))?;
        plan.push_order(None, None, &mut qb);
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
            " AND (crm_cf_number(t.custom_fields, 'seats') = $1::numeric AND t.custom_fields @> $2::jsonb) \
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
            " AND (t.custom_fields @> $1::jsonb) ORDER BY t.\"created_at\" DESC, t.\"id\" DESC"
        );
        // Untyped forms stay for presence, booleans and undefined keys.
        assert!(
            typed_sql("custom_fields.vip = true", "")
                .unwrap()
                .contains("t.\"custom_fields\" @>")
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
                None,
                None,
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

    fn sql(filter: &str) -> Result<String, String> {
        let meta = crate::proto::Account::kind().meta();
        let plan = Plan::new(meta, crate::custom::values::empty(), filter, "", "", false)
            .map_err(|e| format!("{e:?}"))?;
        let mut qb = QueryBuilder::<Postgres>::new("");
        plan.push_conditions(meta, None, false, &mut qb)
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
                Key::Rank => "rank".into(),
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
        assert_eq!(s.keys[0].key, Key::Rank);
    }
}
