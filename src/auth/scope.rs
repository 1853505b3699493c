//! Scopes: what a token's `scope` claim grants, and what each method
//! requires — read from the methods' `(crm.v1.required_scope)` option, the
//! one source the enforcement (the call layer), the README's scope table and
//! the OpenAPI document all read.
//!
//! A token without the claim may make every call but erasure. With one
//! (even empty), only what its scopes grant: `crm:<collection>:read` /
//! `crm:<collection>:write` (REST collection names; write implies read),
//! `crm:read` / `crm:write` (every entity collection, their history, and
//! reading field definitions), `crm:changes:read`, `crm:webhooks:write`,
//! `crm:fields:write`, `crm:purge` (never implied). Case-sensitive; unknown
//! scopes grant nothing.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use prost_reflect::Value;

/// The entity collections (REST names) that scopes name.
pub const COLLECTIONS: [&str; 6] = [
    "accounts",
    "contacts",
    "deals",
    "activities",
    "quotes",
    "line-items",
];

/// The scope that erases (never granted by the absence of a claim, nor
/// implied by another scope).
pub const PURGE: &str = "crm:purge";

/// Where a method's required scope names the request's collection.
pub const COLLECTION_PLACEHOLDER: &str = "{collection}";

/// Whether a token whose claim holds `granted` (`None`: no claim) may make
/// a call that requires `required`.
pub fn grants(granted: Option<&[String]>, required: &str) -> bool {
    let Some(granted) = granted else {
        return required != PURGE;
    };
    let has = |s: &str| granted.iter().any(|g| g == s);
    if has(required) {
        return true;
    }
    match required
        .strip_prefix("crm:")
        .and_then(|r| r.rsplit_once(':'))
    {
        Some((c, "read")) if COLLECTIONS.contains(&c) => {
            has("crm:read") || has("crm:write") || has(&format!("crm:{c}:write"))
        }
        Some((c, "write")) if COLLECTIONS.contains(&c) => has("crm:write"),
        _ => required == "crm:read" && (has("crm:write") || has("crm:fields:write")),
    }
}

/// The scope reading `collection` (a REST collection name) requires.
pub fn read_of(collection: &str) -> String {
    format!("crm:{collection}:read")
}

/// `crm.v1` methods (`/crm.v1.DealService/GetDeal`) and the scope each
/// requires, from the descriptor. build.rs refuses a method without one.
pub fn table() -> &'static BTreeMap<String, String> {
    static TABLE: LazyLock<BTreeMap<String, String>> = LazyLock::new(|| {
        let pool = &*crate::proto::DESCRIPTOR_POOL;
        let ext = pool
            .get_extension_by_name("crm.v1.required_scope")
            .expect("common.proto defines crm.v1.required_scope");
        pool.services()
            .filter(|s| s.package_name() == "crm.v1")
            .flat_map(|s| s.methods().collect::<Vec<_>>())
            .filter_map(|m| {
                let options = m.options();
                let value = options.get_extension(&ext);
                let Value::String(scope) = value.as_ref() else {
                    return None;
                };
                Some((
                    format!("/{}/{}", m.parent_service().full_name(), m.name()),
                    scope.clone(),
                ))
            })
            .collect()
    });
    &TABLE
}

/// The scope `method` (a gRPC path) requires, if it is a `crm.v1` method.
pub fn required(method: &str) -> Option<&'static str> {
    table().get(method).map(String::as_str)
}

/// The table of the README's "Authorization" section (`crm scopes`): per
/// service and scope, the methods that need it.
pub fn markdown() -> String {
    let mut rows: Vec<(String, String, Vec<String>)> = Vec::new();
    for (method, scope) in table() {
        let (service, name) = method
            .trim_start_matches("/crm.v1.")
            .split_once('/')
            .expect("/crm.v1.Service/Method");
        match rows
            .iter_mut()
            .find(|(s, sc, _)| s == service && sc == scope)
        {
            Some(row) => row.2.push(name.to_owned()),
            None => rows.push((service.to_owned(), scope.clone(), vec![name.to_owned()])),
        }
    }
    let mut out = String::from("| service | scope | methods |\n|---|---|---|\n");
    for (service, scope, methods) in rows {
        out.push_str(&format!(
            "| {service} | `{scope}` | {} |\n",
            methods.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(scopes: &[&str]) -> Vec<String> {
        scopes.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_collections_are_the_entities_rest_collections() {
        let kinds: Vec<String> = crate::entities::kinds()
            .map(crate::records::history::collection_name)
            .collect();
        assert_eq!(kinds, COLLECTIONS);
    }

    #[test]
    fn no_claim_grants_all_but_purge() {
        assert!(grants(None, "crm:deals:write"));
        assert!(grants(None, "crm:changes:read"));
        assert!(!grants(None, PURGE));
    }

    #[test]
    fn collection_scopes_and_their_implications() {
        let read = g(&["crm:deals:read"]);
        assert!(grants(Some(&read), "crm:deals:read"));
        assert!(!grants(Some(&read), "crm:deals:write"));
        assert!(!grants(Some(&read), "crm:contacts:read"));
        assert!(!grants(Some(&read), "crm:read"));
        let write = g(&["crm:line-items:write"]);
        assert!(grants(Some(&write), "crm:line-items:read"));
        assert!(grants(Some(&write), "crm:line-items:write"));
        assert!(!grants(Some(&write), "crm:quotes:read"));
        let all_read = g(&["crm:read"]);
        assert!(grants(Some(&all_read), "crm:activities:read"));
        assert!(!grants(Some(&all_read), "crm:activities:write"));
        let all_write = g(&["crm:write"]);
        for c in COLLECTIONS {
            assert!(grants(Some(&all_write), &format!("crm:{c}:write")));
            assert!(grants(Some(&all_write), &read_of(c)));
        }
        assert!(grants(Some(&all_write), "crm:read"));
        assert!(grants(Some(&g(&["crm:fields:write"])), "crm:read"));
    }

    #[test]
    fn the_others_are_granted_by_themselves_only() {
        for s in [
            "crm:changes:read",
            "crm:webhooks:write",
            "crm:fields:write",
            PURGE,
        ] {
            assert!(grants(Some(&g(&[s])), s));
            let everything = g(&[
                "crm:read",
                "crm:write",
                "crm:deals:write",
                "crm:changes:read",
                "crm:webhooks:write",
                "crm:fields:write",
                "crm:purge",
            ]);
            let others: Vec<String> = everything.into_iter().filter(|e| e != s).collect();
            assert!(!grants(Some(&others), s), "{s} is implied by another");
        }
        // Case-sensitive, exact; an empty claim grants nothing.
        assert!(!grants(Some(&g(&["CRM:DEALS:READ"])), "crm:deals:read"));
        assert!(!grants(Some(&g(&["crm:deal:read"])), "crm:deals:read"));
        assert!(!grants(Some(&[]), "crm:deals:read"));
    }

    #[test]
    fn the_readme_shows_the_enforced_table() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let (_, rest) = readme
            .split_once("<!-- scopes:begin -->\n")
            .expect("the README's scope table markers");
        let (shown, _) = rest.split_once("<!-- scopes:end -->").expect("end marker");
        assert_eq!(
            shown,
            markdown(),
            "README.md's scope table is not the enforced one: scripts/readme-scopes.sh rewrites it"
        );
    }

    #[test]
    fn every_method_has_a_known_scope() {
        let t = table();
        assert!(t.len() > 70, "{} methods", t.len());
        for (method, scope) in t {
            let known = [
                "crm:read",
                "crm:changes:read",
                "crm:webhooks:write",
                "crm:fields:write",
                PURGE,
            ]
            .contains(&scope.as_str())
                || scope == &read_of(COLLECTION_PLACEHOLDER)
                || COLLECTIONS
                    .iter()
                    .any(|c| scope == &read_of(c) || scope == &format!("crm:{c}:write"));
            assert!(known, "{method}: {scope}");
        }
        assert_eq!(
            required("/crm.v1.DealService/GetDeal"),
            Some("crm:deals:read")
        );
        assert_eq!(
            required("/crm.v1.LineItemService/UpdateLineItem"),
            Some("crm:line-items:write")
        );
        assert_eq!(required("/crm.v1.ErasureService/PurgeRecord"), Some(PURGE));
        assert_eq!(required("/crm.v1.Nope/Nope"), None);
    }
}
