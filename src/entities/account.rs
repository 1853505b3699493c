//! Account rules: name (required by the proto), website URL, domain hostname,
//! non-negative revenue and head count, and a parent account of the same
//! tenant that never forms a cycle.

use crate::db::TenantTx;
use crate::error::{Error, invalid};
use crate::proto::Account;
use crate::records::{Change, Checker, Entity, Kind, Op, Reference};

/// The account kind.
pub static KIND: Kind = Kind::new(
    "crm.v1.Account",
    "accounts",
    "acc",
    "account",
    &[Reference {
        field: "parent_account_id",
        target: &KIND,
    }],
    &["description"],
)
.with_search(&["name", "legal_name", "domain", "website", "description"]);

/// Deepest account hierarchy walked when looking for cycles.
const MAX_DEPTH: i32 = 1000;

impl Entity for Account {
    fn kind() -> &'static Kind {
        &KIND
    }

    fn check(&mut self, _old: Option<&Self>, v: &mut Checker) {
        // website, domain, annual_revenue, employee_count: the proto's
        // buf.validate rules.
        self.domain = self.domain.to_ascii_lowercase();
        if !self.parent_account_id.is_empty() && self.parent_account_id == self.id {
            v.add("parent_account_id", "cannot be the account itself");
        }
    }

    async fn before_write(tx: &mut TenantTx, change: &mut Change<Self>) -> Result<(), Error> {
        let new_parent = &change.new.parent_account_id;
        let changed = change
            .old
            .as_ref()
            .is_some_and(|old| &old.parent_account_id != new_parent);
        if change.op != Op::Update || !changed || new_parent.is_empty() {
            return Ok(());
        }
        // Serialize hierarchy changes per tenant, so that two concurrent
        // re-parentings cannot close a cycle between them.
        super::lock(tx, "account_tree").await?;
        let tenant = tx.caller().tenant_id().to_owned();
        let cycle: bool = tx
            .across_apps(async |conn| {
                Ok(sqlx::query_scalar(
                    "WITH RECURSIVE up(id, parent, depth) AS ( \
                 SELECT id, parent_account_id, 1 FROM accounts WHERE tenant_id = $1 AND id = $2 \
                 UNION ALL \
                 SELECT a.id, a.parent_account_id, up.depth + 1 FROM accounts a \
                 JOIN up ON a.tenant_id = $1 AND a.id = up.parent WHERE up.depth < $4) \
             SELECT EXISTS (SELECT 1 FROM up WHERE id = $3)",
                )
                .bind(&tenant)
                .bind(new_parent)
                .bind(&change.new.id)
                .bind(MAX_DEPTH)
                .fetch_one(conn)
                .await?)
            })
            .await?;
        if cycle {
            return Err(invalid(
                "account.parent_account_id",
                format!(
                    "would make a cycle: {} is below {} in the hierarchy",
                    new_parent, change.new.id
                ),
            ));
        }
        Ok(())
    }
}
