//! The one error type of the service, named by meaning, and its single mapping
//! to `tonic::Status` with `google.rpc` details (`ErrorInfo` always,
//! `BadRequest` for validation). The REST bridge gets the same statuses.

use std::collections::BTreeMap;
use std::fmt;

use prost::Message;
use tonic::Code;

use crate::proto::google::rpc;

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
        let mut meta: BTreeMap<String, String> = BTreeMap::new();
        let (code, reason, message, bad_request) = match self {
            Error::Invalid(violations) => {
                let summary = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                let field_violations = violations
                    .iter()
                    .map(|v| rpc::bad_request::FieldViolation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                        reason: "INVALID_FIELD".into(),
                        ..Default::default()
                    })
                    .collect();
                (
                    Code::InvalidArgument,
                    "VALIDATION_FAILED",
                    format!("invalid request: {summary}"),
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
            Error::Duplicate { resource, field } => {
                meta.insert("resource_type".into(), resource.into());
                meta.insert("field".into(), field.clone());
                (
                    Code::AlreadyExists,
                    "DUPLICATE_VALUE",
                    format!("{field} is already used by another {resource}"),
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

/// A `google.protobuf.Any` holding `msg`.
fn any(type_name: &str, msg: &impl Message) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/{type_name}"),
        value: msg.encode_to_vec(),
    }
}

/// The one way a status is made: `code` and `message` with an `ErrorInfo`
/// (`reason`, domain [`DOMAIN`], `metadata`) and, for validation errors, a
/// `BadRequest`. The details are encoded from ordered maps, so the same error
/// gives the same bytes every time (gRPC `grpc-status-details-bin` and the
/// REST body alike).
pub fn status(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: BTreeMap<String, String>,
    bad_request: Option<rpc::BadRequest>,
) -> tonic::Status {
    let message = message.into();
    let info = rpc::ErrorInfo {
        reason: reason.to_owned(),
        domain: DOMAIN.to_owned(),
        metadata,
    };
    let mut details = vec![any("google.rpc.ErrorInfo", &info)];
    if let Some(br) = bad_request {
        details.push(any("google.rpc.BadRequest", &br));
    }
    let body = rpc::Status {
        code: code as i32,
        message: message.clone(),
        details,
    };
    tonic::Status::with_details(code, message, body.encode_to_vec().into())
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
