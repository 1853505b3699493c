//! Filters as SQL: a parsed filter (`records::filter`) compiled into a
//! list query, every value a bind parameter.
//!
//! Semantics by field shape:
//! - text: `= != < <= > >=`; `=`/`!=` with `""` test for empty (stored as
//!   NULL); a trailing `*` in `=` is a prefix match; `:` equals `=`, and
//!   `field:*` means "not empty". `!=` matches empty values too.
//! - numbers (`double`, `int32`), timestamps (RFC 3339): comparisons; an
//!   unset optional number matches nothing.
//! - booleans: `=`/`!=` with `true`/`false` (unset counts as false).
//! - string lists: `tags:vip` (membership), `tags:*` (non-empty).
//! - `custom_fields.<key>[.<key>…]`: `=`/`!=` by JSON containment (strings,
//!   numbers, booleans), ranges on numbers and strings, `:*` presence, `:`
//!   membership in an array value, prefix `*`.
//! - `custom_fields.<key>` of a key the tenant defined (`crate::custom`):
//!   compared by its type, as the definition's index has it
//!   (`crm_cf_number(custom_fields, '<key>') > 10`, dates and times as their
//!   stored ISO text; `<` and `<=` above the value of records without one);
//!   equality also by containment (the GIN index), and multi_enum
//!   membership `custom_fields.<key>:"x"` by containment.
//! - `is_deleted` only together with `show_deleted=true`.
//!

use sqlx::{Postgres, QueryBuilder};

use super::list::{field, like_escape};
use crate::custom::values::{FieldType, normalize_datetime, parse_date};
use crate::custom::{Definition, ResourceSchema};
use crate::error::{Error, invalid};
use crate::records::filter::{Expr, Literal, Op};
use crate::records::schema::{FieldMeta, Meta, Shape};

fn bad(pos: usize, message: impl Into<String>) -> Error {
    invalid("filter", format!("at position {pos}: {}", message.into()))
}

/// A literal as a SQL value of `cast`, bound.
fn push_value(
    qb: &mut QueryBuilder<Postgres>,
    value: &Literal,
    shape: Shape,
    pos: usize,
    name: &str,
) -> Result<(), Error> {
    match (shape, value) {
        (Shape::String, Literal::Text(s)) => {
            qb.push_bind(s.clone());
        }
        (Shape::String, Literal::Number(n)) => {
            qb.push_bind(n.clone());
        }
        (Shape::String, Literal::Bool(b)) => {
            qb.push_bind(b.to_string());
        }
        (Shape::Double, Literal::Number(n)) => {
            check_number(n).map_err(|e| bad(pos, format!("{name}: {e}")))?;
            qb.push_bind(n.clone()).push("::numeric");
        }
        (Shape::Int32, Literal::Number(n)) => {
            let v: i32 = n
                .parse()
                .map_err(|_| bad(pos, format!("{name}: {n} is not a whole number in range")))?;
            qb.push_bind(v);
        }
        (Shape::Bool, Literal::Bool(b)) => {
            qb.push_bind(*b);
        }
        (Shape::Timestamp, Literal::Text(s)) => {
            let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|_| {
                bad(
                    pos,
                    format!("{name}: \"{s}\" is not an RFC 3339 time such as 2026-01-02T03:04:05Z"),
                )
            })?;
            qb.push_bind(t.with_timezone(&chrono::Utc));
        }
        (shape, v) => {
            let want = match shape {
                Shape::Double | Shape::Int32 => "a number",
                Shape::Bool => "true or false",
                Shape::Timestamp => "a quoted RFC 3339 time",
                _ => "a string",
            };
            return Err(bad(pos, format!("{name} takes {want}, not {v:?}")));
        }
    }
    Ok(())
}

/// A number literal Postgres can represent: it reads as a finite double that
/// is not a non-zero value rounded to zero (`1e999999` and `1e-999999` are
/// out of range, not a database error).
pub(super) fn check_number(n: &str) -> Result<(), String> {
    let x: f64 = n.parse().map_err(|_| format!("{n} is not a number"))?;
    let mantissa = n.split(['e', 'E']).next().unwrap_or_default();
    let nonzero = mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
    if !x.is_finite() || (x == 0.0 && nonzero) {
        return Err(format!("{n} is out of range"));
    }
    Ok(())
}

/// `value` in canonical id form when `f` holds ids of a kind and `value` is
/// one (lowercase ULIDs are accepted everywhere ids are).
pub(super) fn canonical(f: &FieldMeta, value: &Literal) -> Literal {
    match (f.id_prefix, value) {
        (Some(prefix), Literal::Text(s)) => crate::records::fields::canonical_id_with(prefix, s)
            .map_or_else(|| value.clone(), Literal::Text),
        _ => value.clone(),
    }
}

fn sql_op(op: Op) -> &'static str {
    match op {
        Op::Eq | Op::Has => " = ",
        Op::Ne => " <> ",
        Op::Lt => " < ",
        Op::Le => " <= ",
        Op::Gt => " > ",
        Op::Ge => " >= ",
    }
}

/// Compiles one filter expression into `qb`.
pub fn compile(
    meta: &Meta,
    schema: &ResourceSchema,
    tenant: &str,
    e: &Expr,
    show_deleted: bool,
    qb: &mut QueryBuilder<Postgres>,
) -> Result<(), Error> {
    match e {
        Expr::And(items) | Expr::Or(items) => {
            let joiner = if matches!(e, Expr::And(_)) {
                " AND "
            } else {
                " OR "
            };
            qb.push("(");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    qb.push(joiner);
                }
                compile(meta, schema, tenant, item, show_deleted, qb)?;
            }
            qb.push(")");
        }
        Expr::Not(inner) => {
            qb.push("NOT COALESCE((");
            compile(meta, schema, tenant, inner, show_deleted, qb)?;
            qb.push("), FALSE)");
        }
        Expr::Cmp {
            path,
            op,
            value,
            pos,
        } => {
            qb.push("(");
            compile_cmp(
                meta,
                schema,
                tenant,
                path,
                *op,
                value,
                *pos,
                show_deleted,
                qb,
            )?;
            qb.push(")");
        }
    }
    Ok(())
}

/// Compiles one restriction.
#[allow(clippy::too_many_arguments)]
fn compile_cmp(
    meta: &Meta,
    schema: &ResourceSchema,
    tenant: &str,
    path: &[String],
    op: Op,
    value: &Literal,
    pos: usize,
    show_deleted: bool,
    qb: &mut QueryBuilder<Postgres>,
) -> Result<(), Error> {
    let op = &op;
    let head = &path[0];
    let f = field(meta, head).ok_or_else(|| bad(pos, format!("unknown field \"{head}\"")))?;
    if f.name == "is_deleted" && !show_deleted {
        return Err(bad(
            pos,
            "is_deleted can only be filtered with show_deleted=true",
        ));
    }
    let col = format!("t.\"{}\"", f.name);
    let value = &canonical(f, value);
    if path.len() > 1 {
        if f.shape != Shape::Struct {
            return Err(bad(pos, format!("{} has no subfields", f.name)));
        }
        if f.name == "custom_fields"
            && path.len() == 2
            && let Some(d) = schema.get(&path[1])
            && let Some(done) = compile_defined(qb, tenant, d, *op, value, pos)?
        {
            return Ok(done);
        }
        let scoped = (f.name == "custom_fields").then_some(tenant);
        return compile_json(qb, &col, scoped, &path[1..], *op, value, pos);
    }
    match (f.shape, op, value) {
        (Shape::StringList, Op::Has, Literal::Any) => {
            qb.push("cardinality(").push(&col).push(") > 0");
        }
        (Shape::StringList, Op::Has, Literal::Text(s) | Literal::Number(s)) if f.name == "tags" => {
            // The tenant-scoped keys (migration 0016): the GIN index's
            // posting list holds this tenant's records only.
            qb.push("t.\"tenant_tags\" @> ARRAY[")
                .push_bind(tenant_key(tenant, s))
                .push("]::text[]");
        }
        (Shape::StringList, Op::Has, Literal::Text(s) | Literal::Number(s)) => {
            // Containment, not = ANY(): the form GIN array indexes serve.
            qb.push(&col)
                .push(" @> ARRAY[")
                .push_bind(s.clone())
                .push("]::text[]");
        }
        (Shape::StringList, _, _) => {
            return Err(bad(
                pos,
                format!("{} is a list: use {}:value or {}:*", f.name, f.name, f.name),
            ));
        }
        (Shape::Struct | Shape::Value | Shape::Json, Op::Has, Literal::Any) => {
            qb.push(&col).push(" IS NOT NULL");
        }
        (Shape::Struct, _, _) => {
            return Err(bad(pos, format!("filter on {}.<key>", f.name)));
        }
        (Shape::Value | Shape::Json, _, _) => {
            return Err(bad(
                pos,
                format!("{} cannot be filtered on (only {}:*)", f.name, f.name),
            ));
        }
        (_, Op::Has, Literal::Any) => {
            qb.push(&col).push(" IS NOT NULL");
        }
        (Shape::String, Op::Eq | Op::Has, Literal::Text(s)) if s.is_empty() => {
            qb.push(&col).push(" IS NULL");
        }
        (Shape::String, Op::Ne, Literal::Text(s)) if s.is_empty() => {
            qb.push(&col).push(" IS NOT NULL");
        }
        (Shape::String, Op::Eq | Op::Has, Literal::Text(s))
            if s.ends_with('*') && !s.ends_with("\\*") =>
        {
            qb.push(&col)
                .push(" LIKE ")
                .push_bind(format!("{}%", like_escape(&s[..s.len() - 1])));
        }
        (Shape::String, Op::Ne, Literal::Text(s)) if s.ends_with('*') && !s.ends_with("\\*") => {
            qb.push(&col)
                .push(" NOT LIKE ")
                .push_bind(format!("{}%", like_escape(&s[..s.len() - 1])));
            qb.push(" OR ").push(&col).push(" IS NULL");
        }
        (Shape::String, _, Literal::Text(s)) if s.ends_with("\\*") => {
            let literal = Literal::Text(format!("{}*", &s[..s.len() - 2]));
            qb.push("(").push(&col).push(sql_op(*op));
            push_value(qb, &literal, f.shape, pos, &f.name)?;
            qb.push(")");
        }
        (Shape::String, Op::Ne, _) => {
            qb.push(&col).push(" IS DISTINCT FROM ");
            push_value(qb, value, f.shape, pos, &f.name)?;
        }
        (Shape::Bool, Op::Eq | Op::Ne | Op::Has, _) => {
            qb.push("COALESCE(")
                .push(&col)
                .push(", FALSE)")
                .push(sql_op(*op));
            push_value(qb, value, f.shape, pos, &f.name)?;
        }
        (Shape::Bool, _, _) => {
            return Err(bad(
                pos,
                format!("{} takes = or != with true or false", f.name),
            ));
        }
        _ => {
            qb.push(&col).push(sql_op(*op));
            push_value(qb, value, f.shape, pos, &f.name)?;
        }
    }
    Ok(())
}

/// `custom_fields.<key> op value` for a defined key; `None` when the
/// untyped form serves (presence, prefix matches, booleans).
fn compile_defined(
    qb: &mut QueryBuilder<Postgres>,
    tenant: &str,
    d: &Definition,
    op: Op,
    value: &Literal,
    pos: usize,
) -> Result<Option<()>, Error> {
    let name = format!("custom_fields.{}", d.key);
    if matches!(value, Literal::Any) {
        return Ok(None);
    }
    let containment = |qb: &mut QueryBuilder<Postgres>, v: serde_json::Value| {
        push_tenant_containment(qb, tenant, serde_json::json!({ &d.key: v }));
    };
    match d.ty {
        FieldType::Boolean => Ok(None),
        FieldType::MultiEnum => match (op, value) {
            (Op::Has, Literal::Text(s)) => {
                containment(qb, serde_json::json!([s]));
                Ok(Some(()))
            }
            _ => Err(bad(
                pos,
                format!("{name} is a multi_enum: use {name}:\"option\" (or {name}:*)"),
            )),
        },
        FieldType::Number | FieldType::Integer => {
            let Literal::Number(n) = value else {
                return Err(bad(
                    pos,
                    format!(
                        "{name} is {}: compare it with a number",
                        crate::records::fields::article(d.ty.as_str())
                    ),
                ));
            };
            check_number(n).map_err(|e| bad(pos, format!("{name}: {e}")))?;
            let expr = crate::custom::index::expression(d.ty, &d.key, "t.");
            match op {
                Op::Eq | Op::Has => {
                    let json: serde_json::Number = n
                        .parse()
                        .map_err(|_| bad(pos, format!("{n} is not a number")))?;
                    qb.push(&expr)
                        .push(" = ")
                        .push_bind(n.clone())
                        .push("::numeric AND ");
                    containment(qb, serde_json::Value::Number(json));
                }
                Op::Ne => {
                    qb.push(&expr)
                        .push(" <> ")
                        .push_bind(n.clone())
                        .push("::numeric");
                }
                _ => {
                    push_below_missing(qb, &expr, d.ty, op);
                    qb.push(&expr)
                        .push(sql_op(op))
                        .push_bind(n.clone())
                        .push("::numeric");
                }
            }
            Ok(Some(()))
        }
        FieldType::String | FieldType::Enum | FieldType::Date | FieldType::Datetime => {
            let Literal::Text(s) = value else {
                return Err(bad(
                    pos,
                    format!(
                        "{name} is {}: compare it with a quoted string",
                        crate::records::fields::article(d.ty.as_str())
                    ),
                ));
            };
            if s.ends_with('*') && matches!(d.ty, FieldType::String | FieldType::Enum) {
                return Ok(None);
            }
            let s = match d.ty {
                FieldType::Date => {
                    parse_date(s).ok_or_else(|| {
                        bad(pos, format!("{name} is a date: \"{s}\" is not YYYY-MM-DD"))
                    })?;
                    s.clone()
                }
                FieldType::Datetime => normalize_datetime(s).ok_or_else(|| {
                    bad(
                        pos,
                        format!(
                            "{name} is a datetime: \"{s}\" is not an RFC 3339 time with an offset"
                        ),
                    )
                })?,
                _ => s.clone(),
            };
            let expr = crate::custom::index::expression(d.ty, &d.key, "t.");
            match op {
                Op::Eq | Op::Has => {
                    qb.push(&expr)
                        .push(" = ")
                        .push_bind(s.clone())
                        .push(" AND ");
                    containment(qb, serde_json::Value::String(s));
                }
                Op::Ne => {
                    qb.push(&expr).push(" <> ").push_bind(s);
                }
                _ => {
                    push_below_missing(qb, &expr, d.ty, op);
                    qb.push(&expr).push(sql_op(op)).push_bind(s);
                }
            }
            Ok(Some(()))
        }
    }
}

/// For `<` and `<=` on a defined key: `expr > <missing> AND `, so that
/// records without a value (whose expression is below every value) are
/// left out, within the same index range.
fn push_below_missing(qb: &mut QueryBuilder<Postgres>, expr: &str, ty: FieldType, op: Op) {
    if matches!(op, Op::Lt | Op::Le) {
        qb.push(expr)
            .push(" > ")
            .push(crate::custom::index::missing(ty))
            .push(" AND ");
    }
}

/// A tag as a key of the tenant-scoped `tenant_tags` (migration 0016).
fn tenant_key(tenant: &str, tag: &str) -> String {
    format!("{tenant}\u{1f}{tag}")
}

/// `custom_fields @> doc` as the same test on the tenant-scoped
/// `tenant_custom_fields` (`{tenant: custom_fields}`, migration 0016), the
/// form its jsonb_path_ops index serves without other tenants' matches.
fn push_tenant_containment(qb: &mut QueryBuilder<Postgres>, tenant: &str, doc: serde_json::Value) {
    qb.push("t.\"tenant_custom_fields\" @> ")
        .push_bind(serde_json::json!({ tenant: doc }).to_string())
        .push("::jsonb");
}

/// `custom_fields.a.b op value`.
fn compile_json(
    qb: &mut QueryBuilder<Postgres>,
    col: &str,
    scoped: Option<&str>,
    keys: &[String],
    op: Op,
    value: &Literal,
    pos: usize,
) -> Result<(), Error> {
    let keys: Vec<String> = keys.to_vec();
    // {"a": {"b": v}} for containment.
    let nest = |v: serde_json::Value| {
        keys.iter()
            .rev()
            .fold(v, |acc, k| serde_json::json!({ k: acc }))
    };
    // `col @> doc`; custom_fields in its tenant-keyed copy (migration 0016).
    let contains = |qb: &mut QueryBuilder<Postgres>, doc: serde_json::Value| match scoped {
        Some(tenant) => push_tenant_containment(qb, tenant, doc),
        None => {
            qb.push(col)
                .push(" @> ")
                .push_bind(doc.to_string())
                .push("::jsonb");
        }
    };
    let json_value = match value {
        Literal::Text(s) => Some(serde_json::Value::String(s.clone())),
        Literal::Bool(b) => Some(serde_json::Value::Bool(*b)),
        Literal::Number(n) => {
            check_number(n).map_err(|e| bad(pos, e))?;
            Some(serde_json::Value::Number(
                n.parse::<serde_json::Number>()
                    .map_err(|_| bad(pos, format!("{n} is not a number")))?,
            ))
        }
        Literal::Any => None,
    };
    match (op, value, json_value) {
        (Op::Has, Literal::Any, _) => {
            qb.push("(")
                .push(col)
                .push(" #> ")
                .push_bind(keys)
                .push("::text[]) IS NOT NULL");
        }
        (Op::Eq | Op::Ne, Literal::Text(s), _) if s.ends_with('*') => {
            if op == Op::Ne {
                qb.push("NOT COALESCE(");
            }
            qb.push("(")
                .push(col)
                .push(" #>> ")
                .push_bind(keys)
                .push("::text[]) LIKE ")
                .push_bind(format!("{}%", like_escape(&s[..s.len() - 1])));
            if op == Op::Ne {
                qb.push(", FALSE)");
            }
        }
        (Op::Eq, _, Some(v)) => {
            // Bare containment (NULL acts as false; NOT handles it): the form
            // the jsonb_path_ops index serves.
            contains(qb, nest(v));
        }
        (Op::Ne, _, Some(v)) => {
            qb.push("NOT COALESCE(");
            contains(qb, nest(v));
            qb.push(", FALSE)");
        }
        (Op::Has, _, Some(v)) => {
            // Membership in an array value (or equality with a scalar).
            qb.push("COALESCE((")
                .push(col)
                .push(" #> ")
                .push_bind(keys)
                .push("::text[]) @> ")
                .push_bind(v.to_string())
                .push("::jsonb, FALSE)");
        }
        (_, Literal::Number(n), _) => {
            // Numeric ranges, only on JSON numbers (never a cast error).
            qb.push("(CASE WHEN jsonb_typeof(")
                .push(col)
                .push(" #> ")
                .push_bind(keys.clone())
                .push("::text[]) = 'number' THEN (")
                .push(col)
                .push(" #>> ")
                .push_bind(keys)
                .push("::text[])::numeric END)")
                .push(sql_op(op))
                .push_bind(n.clone())
                .push("::numeric");
        }
        (_, Literal::Text(s), _) => {
            qb.push("(CASE WHEN jsonb_typeof(")
                .push(col)
                .push(" #> ")
                .push_bind(keys.clone())
                .push("::text[]) = 'string' THEN ")
                .push(col)
                .push(" #>> ")
                .push_bind(keys)
                .push("::text[] END)")
                .push(sql_op(op))
                .push_bind(s.clone());
        }
        _ => {
            return Err(bad(
                pos,
                "custom fields compare with strings, numbers or booleans",
            ));
        }
    }
    Ok(())
}
