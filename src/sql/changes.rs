//! The change feed's reads of `change_events`.

use sqlx::{Postgres, QueryBuilder};

/// The columns an event is read with.
macro_rules! columns {
    () => {
        "sequence, committed_at, resource_type, record_id, record_version, operation, \
         changed_fields, record::text AS record, actor, app_id, request_id, transaction_id"
    };
}

/// A tenant's events after `$2`, ascending, at most `$3` (`$1` the tenant).
pub const TENANT_EVENTS: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM change_events WHERE tenant_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
);

/// Events of `tenant` (and of `app` only, when given) after `after` up to
/// `until` (inclusive, when given), ascending, at most `limit`; with
/// `filter`, only those of its (resource types, operations): one index
/// range per pair, so the cost follows the matching events, not the events
/// skipped.
pub fn scoped_events(
    tenant: &str,
    app: Option<&str>,
    filter: Option<(&[&str], &[&str])>,
    after: i64,
    until: Option<i64>,
    limit: i64,
) -> QueryBuilder<Postgres> {
    let where_ = |qb: &mut QueryBuilder<Postgres>| {
        qb.push(" FROM change_events WHERE tenant_id = ")
            .push_bind(tenant.to_owned());
        if let Some(app) = app {
            qb.push(" AND app_id = ").push_bind(app.to_owned());
        }
        qb.push(" AND sequence > ").push_bind(after);
        if let Some(until) = until {
            qb.push(" AND sequence <= ").push_bind(until);
        }
    };
    let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
    match filter {
        Some((types, ops)) => {
            qb.push("* FROM (");
            let mut first = true;
            for t in types {
                for o in ops {
                    if !first {
                        qb.push(" UNION ALL ");
                    }
                    first = false;
                    qb.push("(SELECT ").push(columns!());
                    where_(&mut qb);
                    qb.push(" AND resource_type = ")
                        .push_bind(t.to_string())
                        .push(" AND operation = ")
                        .push_bind(o.to_string())
                        .push(" ORDER BY sequence LIMIT ")
                        .push_bind(limit)
                        .push(")");
                }
            }
            qb.push(") e ORDER BY sequence LIMIT ").push_bind(limit);
        }
        None => {
            qb.push(columns!());
            where_(&mut qb);
            qb.push(" ORDER BY sequence LIMIT ").push_bind(limit);
        }
    }
    qb
}
