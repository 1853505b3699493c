//! The text of side writes (`records::effects`): what a write changes in
//! other records, with the stamps and the tenant predicate every one gets.

use std::sync::OnceLock;

use crate::error::Error;

/// One kind of side write: `UPDATE <table> <alias> SET <set> [FROM <from>]
/// WHERE <filter>`, optionally after a `WITH` prefix, to which the mechanism
/// adds the stamps and the tenant predicate.
pub struct SideWrite {
    with: &'static str,
    table: &'static str,
    alias: &'static str,
    set: &'static str,
    from: &'static str,
    filter: &'static str,
    refuse: Option<fn(&str) -> Option<Error>>,
    sql: OnceLock<String>,
}

impl SideWrite {
    /// `UPDATE table alias SET set WHERE filter` (stamps and tenant added).
    pub const fn new(
        table: &'static str,
        alias: &'static str,
        set: &'static str,
        filter: &'static str,
    ) -> Self {
        Self {
            with: "",
            table,
            alias,
            set,
            from: "",
            filter,
            refuse: None,
            sql: OnceLock::new(),
        }
    }

    /// The same write joining `from` (`FROM <from>`).
    pub const fn from(mut self, from: &'static str) -> Self {
        self.from = from;
        self
    }

    /// The same write after common table expressions (`WITH <with>`).
    pub const fn with(mut self, with: &'static str) -> Self {
        self.with = with;
        self
    }

    /// The same write, with the error that a violated constraint (named to
    /// `refuse`) means for the client; other constraints stay internal.
    pub const fn refusing(mut self, refuse: fn(&str) -> Option<Error>) -> Self {
        self.refuse = Some(refuse);
        self
    }

    /// What it means for the client that the write violated `constraint`
    /// (see [`SideWrite::refusing`]).
    pub fn refused(&self, constraint: &str) -> Option<Error> {
        self.refuse.and_then(|f| f(constraint))
    }

    /// The statement's text.
    pub fn sql(&self) -> &str {
        self.sql.get_or_init(|| {
            let a = self.alias;
            let mut sql = String::new();
            if !self.with.is_empty() {
                sql.push_str("WITH ");
                sql.push_str(self.with);
                sql.push(' ');
            }
            sql.push_str(&format!(
                "UPDATE {} {a} SET {}, version = {a}.version + 1, updated_at = now(), updated_by = $2",
                self.table, self.set
            ));
            if !self.from.is_empty() {
                sql.push_str(" FROM ");
                sql.push_str(self.from);
            }
            sql.push_str(&format!(" WHERE {a}.tenant_id = $1 AND ({})", self.filter));
            sql
        })
    }
}

#[cfg(test)]
mod tests {
    use super::SideWrite;

    static CLEAR: SideWrite = SideWrite::new(
        "contacts",
        "c",
        "is_primary = false",
        "c.account_id = ANY($3) AND c.is_primary",
    );

    static ROLLUP: SideWrite = SideWrite::new("quotes", "q", "total = r.total", "q.id = r.id")
        .from("r")
        .with("r AS (SELECT $3::text AS id, 1 AS total)");

    #[test]
    fn a_side_write_is_stamped_and_bound_to_its_tenant() {
        assert_eq!(
            CLEAR.sql(),
            "UPDATE contacts c SET is_primary = false, version = c.version + 1, updated_at = now(), \
             updated_by = $2 WHERE c.tenant_id = $1 AND (c.account_id = ANY($3) AND c.is_primary)"
        );
        assert_eq!(
            ROLLUP.sql(),
            "WITH r AS (SELECT $3::text AS id, 1 AS total) UPDATE quotes q SET total = r.total, \
             version = q.version + 1, updated_at = now(), updated_by = $2 FROM r \
             WHERE q.tenant_id = $1 AND (q.id = r.id)"
        );
    }
}
