//! The one error type of the service, named by meaning, and its single mapping
//! to `tonic::Status` with `google.rpc` details (`ErrorInfo` always,
//! `BadRequest` for validation). The REST bridge gets the same statuses.

use std::collections::BTreeMap;
use std::fmt;

use prost::Message;
use tonic::Code;

use crate::proto::google::rpc;

pub mod transport;

pub use transport::status;

/// `ErrorInfo.domain` of every error this service returns.
pub const DOMAIN: &str = "crm.v1";

/// One bad field of a request: `field` is a path into the request message
/// (`account.website`), `description` says what is wrong in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field in the request, e.g. `account.name`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// Every violation of a request, collected so that all of them are reported at
/// once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Adds `other`'s violations with `prefix` before their fields (a batch
    /// item's `requests[3].`).
    pub fn extend_prefixed(&mut self, prefix: &str, other: Violations) {
        self.0.extend(other.0.into_iter().map(|v| Violation {
            field: format!("{prefix}{}", v.field),
            description: v.description,
        }));
    }

    /// Orders the violations by the batch item they name (`requests[3].…`
    /// before `requests[12].…`), keeping the order within an item; fields
    /// outside any item come first.
    pub fn sort_by_item(&mut self) {
        fn item(field: &str) -> Option<usize> {
            let rest = &field[field.find('[')? + 1..];
            rest[..rest.find(']')?].parse().ok()
        }
        self.0.sort_by_key(|v| item(&v.field));
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recorded violations.
    pub fn iter(&self) -> impl Iterator<Item = &Violation> {
        self.0.iter()
    }

    /// `Ok(())` when empty, else `Error::Invalid` carrying them all.
    pub fn into_result(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(self))
        }
    }
}

/// Shorthand for a single-field validation error.
pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Error {
    let mut v = Violations::new();
    v.add(field, description);
    Error::Invalid(v)
}

/// Errors of the service, by meaning. Mapped to the transport once, in
/// [`Error::into_status`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: INVALID_ARGUMENT with every field violation.
    #[error("invalid request")]
    Invalid(Violations),
    /// No such record for this caller (missing, other tenant, other app).
    #[error("{resource} {id} not found")]
    NotFound {
        /// Resource type, e.g. `account`.
        resource: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The record exists but is soft-deleted, and the operation needs a live one.
    #[error("{resource} {id} is deleted")]
    Deleted {
        /// Resource type.
        resource: &'static str,
        /// The record's id.
        id: String,
    },
    /// The caller named a version other than the stored one.
    #[error("{resource} {id} is at version {current}, not {expected}")]
    VersionMismatch {
        /// Resource type.
        resource: &'static str,
        /// The record's id.
        id: String,
        /// The version the caller named.
        expected: i32,
        /// The stored version.
        current: i32,
    },
    /// Undelete of a record that is not deleted.
    #[error("{resource} {id} is not deleted")]
    NotDeleted {
        /// Resource type.
        resource: &'static str,
        /// The record's id.
        id: String,
    },
    /// A value that must be unique is already taken.
    #[error("{field} is already used by another {resource}")]
    Duplicate {
        /// Resource type.
        resource: &'static str,
        /// Request path of the field, e.g. `contact.email`.
        field: String,
        /// Further fields of the same request that clash too (a batch's
        /// other items: `requests[7].account.external_id`).
        also: Vec<String>,
    },
    /// The request is well formed but the state forbids it (a cap reached).
    #[error("{message}")]
    Precondition {
        /// ErrorInfo reason, e.g. `WEBHOOK_LIMIT`.
        reason: &'static str,
        /// What to do about it.
        message: String,
    },
    /// A quota is used up: RESOURCE_EXHAUSTED.
    #[error("{message}")]
    Exhausted {
        /// ErrorInfo reason, e.g. `FIELD_DEFINITION_LIMIT`.
        reason: &'static str,
        /// What to do about it.
        message: String,
    },
    /// A custom-field definition that live records violate.
    #[error("{message}")]
    DefinitionConflict {
        /// How many live records violate it.
        violating: i64,
        /// What to do about it.
        message: String,
    },
    /// The token lacks the scope the call needs: PERMISSION_DENIED, reason
    /// MISSING_SCOPE, metadata `required_scope`.
    #[error("this call needs the scope {required}")]
    MissingScope {
        /// The narrowest scope that grants the call.
        required: String,
    },
    /// The write lost a deadlock against concurrent writes (retried by the
    /// mechanism before it reaches a caller).
    #[error("concurrent modification")]
    Contention,
    /// A change-feed position older than the oldest event kept.
    #[error("changes after this position are no longer kept")]
    ChangesExpired {
        /// The oldest sequence still kept.
        oldest: i64,
    },
    /// The same `request_id` was used before for a different request.
    #[error("request_id was already used for a different request")]
    RequestIdReused,
    /// No usable credentials.
    #[error("{message}")]
    Unauthenticated {
        /// `MISSING_CREDENTIALS` or `INVALID_CREDENTIALS`.
        reason: &'static str,
        /// Short, safe description (never echoes the token).
        message: String,
    },
    /// A feature of the contract that this server does not serve yet.
    #[error("{0}")]
    Unimplemented(String),
    /// A statement ran past `statement_timeout` and Postgres cancelled it.
    #[error("statement timed out")]
    Timeout(#[source] sqlx::Error),
    /// The database is unreachable or shutting down; retry later.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else. The cause is logged, never returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    /// An internal error from any cause.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Error::Internal(cause.into())
    }

    /// The gRPC status for this error, with `ErrorInfo` (and `BadRequest`)
    /// details. `request_id` is quoted in internal errors so that a caller can
    /// find the log line; the cause itself goes to the log only.
    pub fn into_status(self, request_id: &str) -> tonic::Status {
        self.into_status_within(request_id, Some(GRPC_DETAILS_BUDGET))
    }

    /// The status for this error with every violation (or clashing field)
    /// listed in its details when `budget` is `None`; else as many as fit in
    /// `budget` bytes, the count of the others in the message and in the
    /// ErrorInfo (`violations`, `violations_listed`).
    pub fn into_status_within(self, request_id: &str, budget: Option<usize>) -> tonic::Status {
        let mut meta: BTreeMap<String, String> = BTreeMap::new();
        let budget = budget.unwrap_or(usize::MAX);
        let (code, reason, message, bad_request) = match self {
            Error::Invalid(violations) => {
                let total = violations.iter().count();
                let mut used = 0;
                let field_violations: Vec<_> = violations
                    .iter()
                    .map(|v| rpc::bad_request::FieldViolation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                        reason: "INVALID_FIELD".into(),
                        ..Default::default()
                    })
                    .take_while(|v| {
                        used += v.encoded_len() + 3;
                        used <= budget
                    })
                    .collect();
                let summary = summary(
                    violations
                        .iter()
                        .map(|v| format!("{}: {}", v.field, v.description)),
                    total,
                );
                let mut message = format!("invalid request: {summary}");
                if field_violations.len() < total {
                    meta.insert("violations".into(), total.to_string());
                    meta.insert(
                        "violations_listed".into(),
                        field_violations.len().to_string(),
                    );
                    message.push_str(&format!(
                        " ({total} violations; the details list the first {}: the rest exceed what a \
                         gRPC trailer carries. Fix these and retry, or send the request over REST, \
                         whose error body lists all)",
                        field_violations.len()
                    ));
                }
                (
                    Code::InvalidArgument,
                    "VALIDATION_FAILED",
                    message,
                    Some(rpc::BadRequest { field_violations }),
                )
            }
            Error::NotFound { resource, id } => {
                meta.insert("resource_type".into(), resource.into());
                meta.insert("id".into(), id.clone());
                (
                    Code::NotFound,
                    "RESOURCE_NOT_FOUND",
                    format!("{resource} {id} not found"),
                    None,
                )
            }
            Error::Deleted { resource, id } => {
                meta.insert("resource_type".into(), resource.into());
                meta.insert("id".into(), id.clone());
                (
                    Code::NotFound,
                    "RESOURCE_DELETED",
                    format!("{resource} {id} is deleted; undelete it first"),
                    None,
                )
            }
            Error::VersionMismatch {
                resource,
                id,
                expected,
                current,
            } => {
                meta.insert("resource_type".into(), resource.into());
                meta.insert("id".into(), id.clone());
                meta.insert("expected_version".into(), expected.to_string());
                meta.insert("current_version".into(), current.to_string());
                (
                    Code::Aborted,
                    "VERSION_MISMATCH",
                    format!("{resource} {id} is at version {current}, not {expected}"),
                    None,
                )
            }
            Error::NotDeleted { resource, id } => {
                meta.insert("resource_type".into(), resource.into());
                meta.insert("id".into(), id.clone());
                (
                    Code::AlreadyExists,
                    "RESOURCE_ALREADY_EXISTS",
                    format!("{resource} {id} is not deleted"),
                    None,
                )
            }
            Error::Duplicate {
                resource,
                field,
                also,
            } => {
                meta.insert("resource_type".into(), resource.into());
                meta.insert("field".into(), field.clone());
                let message = if also.is_empty() {
                    format!("{field} is already used by another {resource}")
                } else {
                    let all: Vec<String> = std::iter::once(field.clone()).chain(also).collect();
                    let mut used = 0;
                    let listed: Vec<&str> = all
                        .iter()
                        .map(String::as_str)
                        .take_while(|f| {
                            used += f.len() + 1;
                            used <= budget
                        })
                        .collect();
                    meta.insert("fields".into(), listed.join(","));
                    if listed.len() < all.len() {
                        meta.insert("fields_total".into(), all.len().to_string());
                    }
                    format!(
                        "{} are already used by other {resource} records",
                        summary(all.iter().cloned(), all.len())
                    )
                };
                (Code::AlreadyExists, "DUPLICATE_VALUE", message, None)
            }
            Error::Precondition { reason, message } => {
                (Code::FailedPrecondition, reason, message, None)
            }
            Error::Exhausted { reason, message } => {
                (Code::ResourceExhausted, reason, message, None)
            }
            Error::DefinitionConflict { violating, message } => {
                meta.insert("violating_records".into(), violating.to_string());
                (
                    Code::FailedPrecondition,
                    "FIELD_DEFINITION_CONFLICT",
                    message,
                    None,
                )
            }
            Error::MissingScope { required } => {
                meta.insert("required_scope".into(), required.clone());
                (
                    Code::PermissionDenied,
                    "MISSING_SCOPE",
                    format!("this call needs a token whose scope claim holds {required}"),
                    None,
                )
            }
            Error::Contention => (
                Code::Aborted,
                "CONCURRENT_MODIFICATION",
                "the write conflicted with concurrent writes; retry it".into(),
                None,
            ),
            Error::ChangesExpired { oldest } => {
                meta.insert("oldest_sequence".into(), oldest.to_string());
                (
                    Code::FailedPrecondition,
                    "CHANGES_EXPIRED",
                    format!(
                        "events after this position are no longer kept (retention); the oldest kept is {oldest}: \
                         resume from after_sequence = 0, or re-read the records and resume at the latest sequence"
                    ),
                    None,
                )
            }
            Error::RequestIdReused => (
                Code::AlreadyExists,
                "REQUEST_ID_REUSED",
                "request_id was already used for a different request".into(),
                None,
            ),
            Error::Unauthenticated { reason, message } => {
                (Code::Unauthenticated, reason, message, None)
            }
            Error::Unimplemented(message) => {
                (Code::Unimplemented, "NOT_IMPLEMENTED", message, None)
            }
            Error::Timeout(cause) => {
                tracing::warn!(request_id, error = %cause, "statement timeout");
                meta.insert("request_id".into(), request_id.into());
                (
                    Code::DeadlineExceeded,
                    "DEADLINE_EXCEEDED",
                    "the request took too long and was cancelled".into(),
                    None,
                )
            }
            Error::Unavailable(cause) => {
                tracing::warn!(request_id, error = %cause, "database unavailable");
                meta.insert("request_id".into(), request_id.into());
                (
                    Code::Unavailable,
                    "DATABASE_UNAVAILABLE",
                    "the database is unavailable; retry later".into(),
                    None,
                )
            }
            Error::Internal(cause) => {
                tracing::error!(request_id, error = ?cause, "internal error");
                meta.insert("request_id".into(), request_id.into());
                (
                    Code::Internal,
                    "INTERNAL_ERROR",
                    format!("internal error (request id {request_id})"),
                    None,
                )
            }
        };
        status(code, reason, message, meta, bad_request)
    }
}

/// How many bytes of violations (or clashing fields) a gRPC status carries
/// in its details: with the message and the ErrorInfo, the trailers stay
/// within 16 KiB, the smallest header-list limit of common HTTP/2 peers
/// (hyper's default; grpc-go and Envoy allow more). REST answers list all.
pub const GRPC_DETAILS_BUDGET: usize = 8 * 1024;

/// Longest message summary of a list, in bytes.
const SUMMARY_BUDGET: usize = 1024;

/// `items` joined with "; " up to [`SUMMARY_BUDGET`] bytes, then how many
/// more there are (`total` in all).
fn summary(items: impl Iterator<Item = String>, total: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for item in items {
        if !out.is_empty() && out.len() + item.len() + 2 > SUMMARY_BUDGET {
            break;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&item);
        shown += 1;
    }
    if shown < total {
        out.push_str(&format!("; and {} more", total - shown));
    }
    out
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e {
            match d.code().as_deref() {
                Some("57014") => return Error::Timeout(e),
                // Deadlock or serialization failure: whichever statement
                // meets it, the write is retried, then reported as ABORTED.
                Some("40P01" | "40001") => return Error::Contention,
                _ => {}
            }
        }
        if is_unavailable(&e) {
            Error::Unavailable(e)
        } else {
            Error::Internal(e.into())
        }
    }
}

/// True for errors that mean "the database is not answering right now":
/// connection loss, pool exhaustion, shutdown or crash recovery.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // 08: connection exception; 57P01-57P03: admin/crash shutdown,
            // cannot connect now; 53300: too many connections.
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

#[cfg(test)]
mod tests {
    use super::Violations;

    #[test]
    fn violations_sort_by_item_number_not_text() {
        let mut v = Violations::new();
        v.add("requests[12].account.name", "a");
        v.add("requests[3].account.website", "b");
        v.add("request_id", "c");
        v.add("requests[3].account.tags[20]", "d");
        v.add("requests[2].account.name", "e");
        v.sort_by_item();
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "request_id",
                "requests[2].account.name",
                "requests[3].account.website",
                "requests[3].account.tags[20]",
                "requests[12].account.name",
            ]
        );
    }
}
