//! The SQL text that binds a connection to its caller: the row-level
//! security settings (tenant, app, role) and a write's change-feed context,
//! sent as simple-query text (`SET` takes no parameters), and the
//! single-message read. Every inlined value is checked here again.

use crate::auth::Caller;
use crate::db::{Roles, WriteContext};
use crate::error::Error;
use crate::records::fields::RecordId;

/// `s` as a SQL string literal, for the few values inlined into simple-query
/// text (which takes no parameters): only ids of the charset
/// `[A-Za-z0-9._:@-]` (tokens' ids by construction, see `auth`; record ids
/// after `parse_id`), checked again here, so no quoting is ever needed.
pub fn plain_literal(s: &str) -> Result<String, Error> {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b))
    {
        Ok(format!("'{s}'"))
    } else {
        Err(Error::internal(anyhow::anyhow!(
            "a value outside the id charset reached simple-query text"
        )))
    }
}

/// The statements that set the caller's row-level-security settings for the
/// current transaction: tenant and app (`crm_tenant()`, `crm_app_id()`, read
/// by every table's one policy), and for integration tokens the integration
/// role. `SET LOCAL`, not `set_config()`: Citus propagates `SET LOCAL` to
/// the workers that run a distributed query's shard statements (with
/// `citus.propagate_set_commands = 'local'`), never a function call. `SET`
/// takes no parameters, so the values are inlined: ids of the charset that
/// [`plain_literal`] checks, and a role name of [`Roles`].
fn scope_sql(caller: &Caller, roles: &Roles) -> Result<String, Error> {
    if caller.tenant_id().is_empty() {
        return Err(Error::internal(anyhow::anyhow!(
            "a caller without a tenant"
        )));
    }
    let tenant = plain_literal(caller.tenant_id())?;
    let app = plain_literal(caller.app_id().unwrap_or(""))?;
    let mut sql = format!("SET LOCAL crm.tenant_id = {tenant}; SET LOCAL crm.app_id = {app}");
    if caller.app_id().is_some() {
        sql.push_str("; SET LOCAL ROLE ");
        sql.push_str(roles.integration());
    }
    Ok(sql)
}

/// `s` as a standard SQL string literal (quotes doubled), for the writer's
/// `sub` in simple-query text. Safe because the connections run with
/// `standard_conforming_strings = on` (backslashes are plain characters),
/// and a NUL, which a literal cannot hold, is refused (the authenticator
/// already refuses control characters).
fn quoted_literal(s: &str) -> Result<String, Error> {
    if s.contains('\0') {
        return Err(Error::internal(anyhow::anyhow!(
            "a NUL reached simple-query text"
        )));
    }
    Ok(format!("'{}'", s.replace('\'', "''")))
}

/// The statement that lifts an integration token's app scope for the rest
/// of the transaction (or until [`app_scope_sql`] restores it).
pub const LIFT_APP_SCOPE: &str = "SET LOCAL crm.app_id = ''";

/// The statement that puts the caller's app scope `app` back.
pub fn app_scope_sql(app: &str) -> Result<String, Error> {
    Ok(format!("SET LOCAL crm.app_id = {}", plain_literal(app)?))
}

/// `BEGIN` and the caller's settings (and, for a write, its feed context) as
/// one simple-query message: one round trip instead of two.
pub fn begin_sql(
    caller: &Caller,
    roles: &Roles,
    write: Option<&WriteContext>,
) -> Result<String, Error> {
    let mut sql = format!("BEGIN; {}", scope_sql(caller, roles)?);
    if let Some(w) = write {
        let request_id = w.request_id.map(|u| u.to_string()).unwrap_or_default();
        sql.push_str(&format!(
            "; SET LOCAL crm.sub = {}; SET LOCAL crm.request_id = {}; \
             SET LOCAL crm.transaction_id = {}",
            quoted_literal(caller.sub())?,
            plain_literal(&request_id)?,
            plain_literal(&w.transaction_id)?,
        ));
    }
    Ok(sql)
}

/// One read as one simple-query message, which Postgres runs as one implicit
/// transaction: the caller's settings, then `EXECUTE` of the statement every
/// connection prepared as `name` (`$1` tenant, `$2` app, `$3` id), its plan
/// cached by Postgres. The id can only be one the id parser made
/// ([`RecordId`]); tenant and app are the authenticator's, checked again by
/// [`plain_literal`]; `name` is a `sql::statements` statement name (`[a-z_]`).
pub fn read_one_sql(
    caller: &Caller,
    roles: &Roles,
    name: &str,
    id: &RecordId,
) -> Result<String, Error> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(Error::internal(anyhow::anyhow!(
            "not a prepared statement's name: {name:?}"
        )));
    }
    let app = match caller.app_id() {
        Some(a) => plain_literal(a)?,
        None => "NULL".into(),
    };
    Ok(format!(
        "{}; EXECUTE {name}({}, {app}, {})",
        scope_sql(caller, roles)?,
        plain_literal(caller.tenant_id())?,
        plain_literal(id.as_str())?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Roles {
        Roles::new("crm_app_crm_1a2b3c4d", "crm_int_crm_1a2b3c4d").unwrap()
    }

    #[test]
    fn begin_sets_the_callers_scope_in_one_message() {
        let roles = roles();
        let person = begin_sql(&Caller::unchecked("acme-1", "u", None), &roles, None).unwrap();
        assert_eq!(
            person,
            "BEGIN; SET LOCAL crm.tenant_id = 'acme-1'; SET LOCAL crm.app_id = ''"
        );
        let app = begin_sql(
            &Caller::unchecked("acme-1", "u", Some("app:x@y.z")),
            &roles,
            None,
        )
        .unwrap();
        assert!(
            app.ends_with(
                "SET LOCAL crm.app_id = 'app:x@y.z'; SET LOCAL ROLE crm_int_crm_1a2b3c4d"
            )
        );
        // Ids the authenticator would never let through are refused here too.
        for (tenant, app) in [
            ("a'b", None),
            ("", None),
            ("ok", Some("x'; DROP TABLE accounts; --")),
            ("a\\b", None),
        ] {
            assert!(
                begin_sql(&Caller::unchecked(tenant, "u", app), &roles, None).is_err(),
                "{tenant:?} {app:?}"
            );
        }
    }

    #[test]
    fn a_write_records_its_context_with_the_writer_quoted() {
        let roles = roles();
        let write = WriteContext {
            request_id: Some(uuid::Uuid::nil()),
            transaction_id: "txn_01HX".into(),
        };
        let sql = begin_sql(
            &Caller::unchecked("acme-1", "O'Brien \\ x", None),
            &roles,
            Some(&write),
        )
        .unwrap();
        assert!(
            sql.ends_with(
                "SET LOCAL crm.sub = 'O''Brien \\ x'; SET LOCAL crm.request_id = \
                 '00000000-0000-0000-0000-000000000000'; SET LOCAL crm.transaction_id = 'txn_01HX'"
            ),
            "{sql}"
        );
        assert!(begin_sql(&Caller::unchecked("t", "a\0b", None), &roles, Some(&write)).is_err());
    }

    #[test]
    fn a_read_is_one_message_with_its_values_inlined() {
        let roles = roles();
        let kind = &crate::entities::account::KIND;
        let id = RecordId::parse(kind, "acc_01arz3ndektsv4rrffq69g5fav").unwrap();
        let person = Caller::unchecked("acme-1", "u", None);
        assert_eq!(
            read_one_sql(&person, &roles, "crm_get_accounts", &id).unwrap(),
            "SET LOCAL crm.tenant_id = 'acme-1'; SET LOCAL crm.app_id = ''; \
             EXECUTE crm_get_accounts('acme-1', NULL, 'acc_01ARZ3NDEKTSV4RRFFQ69G5FAV')"
        );
        let app = Caller::unchecked("acme-1", "u", Some("app-7"));
        assert_eq!(
            read_one_sql(&app, &roles, "crm_get_accounts", &id).unwrap(),
            "SET LOCAL crm.tenant_id = 'acme-1'; SET LOCAL crm.app_id = 'app-7'; \
             SET LOCAL ROLE crm_int_crm_1a2b3c4d; EXECUTE crm_get_accounts('acme-1', 'app-7', 'acc_01ARZ3NDEKTSV4RRFFQ69G5FAV')"
        );
        // Only the parser makes a RecordId: anything else is not one.
        for bad in [
            "acc_1' OR true --",
            "acc_01ARZ3NDEKTSV4RRFFQ69G5FAV'",
            "con_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        ] {
            assert!(RecordId::parse(kind, bad).is_none(), "{bad:?}");
        }
        assert!(read_one_sql(&person, &roles, "x; DROP TABLE accounts", &id).is_err());
    }
}
