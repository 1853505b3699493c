//! Errors on the wire, made in one place: the `google.rpc.Status` a gRPC
//! call answers (with its `ErrorInfo` and `BadRequest` details), the status
//! of an error tonic made itself, and the same status as a REST answer
//! (grpc-gateway's HTTP code table, the status as JSON).

use http::{HeaderValue, StatusCode, header};
use prost::Message;
use prost_reflect::{DynamicMessage, Value};
use std::collections::BTreeMap;
use tonic::Code;

use super::{DOMAIN, Error};
use crate::metrics::code_name;
use crate::proto::DESCRIPTOR_POOL;
use crate::proto::google::rpc;

/// A REST answer.
pub type JsonResponse = http::Response<axum::body::Body>;

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

/// A status with an `ErrorInfo` quoting the request id.
pub fn with_request_id(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    request_id: &str,
) -> tonic::Status {
    let meta = [("request_id".to_owned(), request_id.to_owned())].into();
    status(code, reason, message, meta, None)
}

/// The code and reason of an error tonic made itself (no details), given
/// its code and message. tonic reports an undecodable request message (bad
/// bytes, or nested deeper than prost's recursion limit) as INTERNAL; it is
/// the caller's input that is wrong, so it becomes INVALID_ARGUMENT. Framing
/// errors that the gRPC specification assigns to INTERNAL (a compressed flag
/// without `grpc-encoding`) stay INTERNAL.
pub(crate) fn tonic_error(code: Code, message: &str) -> (Code, &'static str) {
    match code {
        Code::Internal
            if message.starts_with("failed to decode")
                || message.starts_with("Unexpected EOF decoding") =>
        {
            (Code::InvalidArgument, "MALFORMED_MESSAGE")
        }
        Code::OutOfRange | Code::ResourceExhausted => (code, "MESSAGE_TOO_LARGE"),
        Code::Unimplemented => (code, "METHOD_NOT_FOUND"),
        _ => (code, code_name(code)),
    }
}

/// The status to send for an error tonic made itself (a response with a
/// `grpc-status` but no details, e.g. a message over the size limit): its
/// code and reason per [`tonic_error`], with the ErrorInfo every error
/// carries.
pub fn completed(code: Code, headers: &http::HeaderMap, request_id: &str) -> tonic::Status {
    let message = tonic::Status::from_header_map(headers)
        .map(|s| s.message().to_owned())
        .unwrap_or_default();
    let (code, reason) = tonic_error(code, &message);
    let message = match code {
        Code::InvalidArgument => format!("the request message could not be decoded: {message}"),
        _ => message,
    };
    with_request_id(code, reason, message, request_id)
}

/// grpc-gateway's `HTTPStatusFromCode`.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub fn json_response(
    status: StatusCode,
    body: Vec<u8>,
    request_id: Option<&HeaderValue>,
) -> JsonResponse {
    let mut r = http::Response::new(axum::body::Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = request_id {
        r.headers_mut().insert("x-request-id", id.clone());
    }
    r
}

/// `status` as JSON: a `google.rpc.Status` with its details. Built through
/// serde_json's (sorted) maps: the ErrorInfo metadata map comes out in one
/// order every time, so the same error is the same bytes.
pub fn status_json(status: &tonic::Status) -> serde_json::Value {
    let desc = DESCRIPTOR_POOL
        .get_message_by_name("google.rpc.Status")
        .expect("google/rpc/status.proto is in the descriptor set");
    let mut msg = DynamicMessage::decode(desc.clone(), status.details())
        .unwrap_or_else(|_| DynamicMessage::new(desc));
    msg.set_field_by_name("code", Value::I32(status.code() as i32));
    msg.set_field_by_name("message", Value::String(status.message().to_owned()));
    msg.serialize_with_options(
        serde_json::value::Serializer,
        &crate::records::convert::rest_options(),
    )
    .unwrap_or_else(|_| {
        serde_json::json!({
            "code": status.code() as i32, "message": status.message(), "details": []
        })
    })
}

/// The JSON error body of `status` (a `google.rpc.Status` with its details).
pub fn status_response(status: &tonic::Status, request_id: Option<&HeaderValue>) -> JsonResponse {
    let body = serde_json::to_vec(&status_json(status)).unwrap_or_default();
    let mut r = json_response(http_status(status.code()), body, request_id);
    if status.code() == Code::Unauthenticated {
        // grpc-gateway sets WWW-Authenticate to the status message.
        if let Ok(v) = HeaderValue::from_str(&format!(
            "Bearer realm=\"crm\", error_description=\"{}\"",
            status.message().replace('"', "'")
        )) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    r
}

/// A transcoder-level error (no gRPC method was reached), with its ErrorInfo.
pub fn routing_status(code: Code, reason: &str, message: String) -> tonic::Status {
    crate::error::status(code, reason, message, Default::default(), None)
}

pub fn error_response(e: Error, request_id: Option<&HeaderValue>) -> JsonResponse {
    let rid = request_id.and_then(|v| v.to_str().ok()).unwrap_or_default();
    status_response(&e.into_status(rid), request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_matches_grpc_gateway() {
        assert_eq!(http_status(Code::Aborted), StatusCode::CONFLICT);
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
        assert_eq!(
            http_status(Code::Unimplemented),
            StatusCode::NOT_IMPLEMENTED
        );
    }

    #[test]
    fn tonic_decode_errors_are_the_callers() {
        assert_eq!(
            tonic_error(
                Code::Internal,
                "failed to decode Protobuf message: recursion limit reached"
            )
            .0,
            Code::InvalidArgument
        );
        assert_eq!(
            tonic_error(Code::Internal, "Error encoding: x").0,
            Code::Internal
        );
        assert_eq!(
            tonic_error(Code::OutOfRange, "too large"),
            (Code::OutOfRange, "MESSAGE_TOO_LARGE")
        );
    }
}
