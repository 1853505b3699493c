//! The REST/JSON ↔ gRPC transcoder, driven by the protos' `google.api.http`
//! rules with grpc-gateway v2's behaviour:
//!
//! - body → auto update_mask (PATCH) → path variables → query parameters,
//!   the query never overriding fields bound by the body or the path;
//! - query keys in proto or JSON spelling, nested `a.b`, repeated keys for
//!   repeated fields; unknown keys ignored;
//! - output with proto field names and proto3 JSON; errors as
//!   `{"code", "message", "details"}` with grpc-gateway's status table.
//!
//! Every call is forwarded, as a real gRPC request, through the same tower
//! stack the gRPC port serves (request id, authentication, logging, the
//! services), so a REST call gets exactly the checks a gRPC call gets.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions, Value,
};
use tonic::Code;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use super::template::Template;
use crate::error::{Error, Violations};
use crate::grpc::layer::{CallOutcome, Transcoded};
use crate::proto::DESCRIPTOR_POOL;
use crate::records::mask;

/// The gRPC stack requests are forwarded to.
pub type GrpcService = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    Infallible,
>;

/// Where the JSON body goes.
#[derive(Clone, Debug)]
enum BodyRule {
    /// No body.
    None,
    /// The whole request message.
    Whole,
    /// One field of it (`body: "account"`): the JSON is that field's message.
    Field(FieldDescriptor),
}

/// One HTTP binding of a gRPC method.
#[derive(Clone, Debug)]
struct Route {
    method: Method,
    template: Template,
    body: BodyRule,
    grpc_path: String,
    input: MessageDescriptor,
    output: MessageDescriptor,
    /// The request's one `google.protobuf.FieldMask` field, for PATCH.
    mask_field: Option<FieldDescriptor>,
    /// A server-streaming method: answered as newline-delimited JSON.
    streaming: bool,
}

/// Routes HTTP requests to gRPC methods.
#[derive(Clone)]
pub struct Transcoder {
    /// Shared: the transcoder is cloned per request (axum state).
    routes: Arc<[Route]>,
    grpc: GrpcService,
    body_limit: usize,
}

/// A JSON response.
pub type JsonResponse = http::Response<axum::body::Body>;

fn output_options() -> SerializeOptions {
    crate::records::convert::rest_options()
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

fn json_response(
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

/// `r` with its body dropped and its length kept in `Content-Length`, as the
/// answer to a HEAD request.
fn without_body(mut r: JsonResponse) -> JsonResponse {
    use axum::body::HttpBody as _;
    if let Some(len) = r.body().size_hint().exact() {
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    *r.body_mut() = axum::body::Body::empty();
    r
}

/// `status` as JSON: a `google.rpc.Status` with its details. Built through
/// serde_json's (sorted) maps: the ErrorInfo metadata map comes out in one
/// order every time, so the same error is the same bytes.
fn status_json(status: &tonic::Status) -> serde_json::Value {
    let desc = DESCRIPTOR_POOL
        .get_message_by_name("google.rpc.Status")
        .expect("google/rpc/status.proto is in the descriptor set");
    let mut msg = DynamicMessage::decode(desc.clone(), status.details())
        .unwrap_or_else(|_| DynamicMessage::new(desc));
    msg.set_field_by_name("code", Value::I32(status.code() as i32));
    msg.set_field_by_name("message", Value::String(status.message().to_owned()));
    msg.serialize_with_options(serde_json::value::Serializer, &output_options())
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
fn routing_status(code: Code, reason: &str, message: String) -> tonic::Status {
    crate::error::status(code, reason, message, Default::default(), None)
}

fn error_response(e: Error, request_id: Option<&HeaderValue>) -> JsonResponse {
    let rid = request_id.and_then(|v| v.to_str().ok()).unwrap_or_default();
    status_response(&e.into_status(rid), request_id)
}

fn invalid(field: &str, description: impl Into<String>) -> Error {
    let mut v = Violations::new();
    v.add(field, description);
    Error::Invalid(v)
}

fn field_by_name(desc: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_name(name)
        .or_else(|| desc.get_field_by_json_name(name))
}

/// Converts the text of a path variable or query parameter to a value of
/// `field`'s type (grpc-gateway's `runtime/query.go` rules).
fn parse_scalar(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let bad = || format!("{text:?} is not a valid {:?}", field.kind());
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bool => Value::Bool(match text {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => return Err(bad()),
        }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(text.parse().map_err(|_| bad())?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(text.parse().map_err(|_| bad())?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(text.parse().map_err(|_| bad())?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(text.parse().map_err(|_| bad())?),
        Kind::Double => Value::F64(text.parse().map_err(|_| bad())?),
        Kind::Float => Value::F32(text.parse().map_err(|_| bad())?),
        Kind::Bytes => Value::Bytes(Bytes::from(text.as_bytes().to_vec())),
        Kind::Enum(e) => match e.get_value_by_name(text) {
            Some(v) => Value::EnumNumber(v.number()),
            None => Value::EnumNumber(text.parse().map_err(|_| bad())?),
        },
        Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask" => {
            let mut mask = DynamicMessage::new(m);
            let paths = crate::records::mask::split_paths(text)
                .into_iter()
                .map(Value::String)
                .collect();
            mask.set_field_by_name("paths", Value::List(paths));
            Value::Message(mask)
        }
        Kind::Message(m) => {
            // Well-known types take their JSON form: a quoted string for
            // Timestamp/Duration, raw JSON for Struct/Value, the scalar for
            // wrappers.
            let json = match m.full_name() {
                "google.protobuf.Timestamp" | "google.protobuf.Duration" => {
                    serde_json::Value::String(text.to_owned()).to_string()
                }
                "google.protobuf.StringValue" | "google.protobuf.BytesValue" => {
                    serde_json::Value::String(text.to_owned()).to_string()
                }
                _ => text.to_owned(),
            };
            let mut de = serde_json::Deserializer::from_str(&json);
            Value::Message(
                DynamicMessage::deserialize(m, &mut de).map_err(|e| format!("{text:?}: {e}"))?,
            )
        }
    })
}

/// How a value from the path or query meets a value already set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bind {
    /// A query parameter: a singular field given twice is an error.
    Once,
    /// A path variable: it wins over the body (grpc-gateway), so a client
    /// can PATCH back the JSON a GET returned, `id` and all.
    Overwrite,
}

/// Sets the field at `path` (through singular message fields) from `text`.
/// Repeated fields gain one entry per call; a singular field already set is
/// an error or overwritten, as `bind` says.
fn set_path(
    msg: &mut DynamicMessage,
    path: &[String],
    text: &str,
    display: &str,
    bind: Bind,
) -> Result<bool, Error> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(false);
    };
    let Some(field) = field_by_name(&msg.descriptor(), first) else {
        return Ok(false);
    };
    if !rest.is_empty() {
        if field.is_list() || field.is_map() {
            return Ok(false);
        }
        return match msg.get_field_mut(&field) {
            Value::Message(child) if !is_well_known(&child.descriptor()) => {
                set_path(child, rest, text, display, bind)
            }
            _ => Ok(false),
        };
    }
    if field.is_map() {
        return Ok(false);
    }
    let value =
        parse_scalar(&field, text).map_err(|e| invalid(display, format!("parsing field: {e}")))?;
    if field.is_list() {
        if let Value::List(items) = msg.get_field_mut(&field) {
            items.push(value);
        }
    } else {
        if msg.has_field(&field) && bind == Bind::Once {
            return Err(invalid(display, "is given more than once"));
        }
        msg.set_field(&field, value);
    }
    Ok(true)
}

/// Decodes a JSON body as `desc` (proto3 JSON, both name spellings, unknown
/// fields ignored). A failure names the field it happened at, under
/// `prefix` (the request field the body binds to).
fn decode_json(
    desc: &MessageDescriptor,
    body: &[u8],
    prefix: &str,
) -> Result<DynamicMessage, Error> {
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let result = DynamicMessage::deserialize_with_options(
        desc.clone(),
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
        &options,
    )
    .and_then(|m| de.end().map(|()| m));
    result.map_err(|e| {
        let path = track.path().to_string();
        let field = match (prefix, path.as_str()) {
            ("", "." | "") => "body".to_owned(),
            (p, "." | "") => p.to_owned(),
            ("", f) => f.to_owned(),
            (p, f) => format!("{p}.{f}"),
        };
        // serde_json's message ends with the position; keep it, it helps.
        invalid(&field, format!("is not valid JSON for this field: {e}"))
    })
}

/// The first free-form JSON field (Struct, Value, ListValue) in `msg` that
/// nests too deeply or holds a non-finite number, with its path.
fn deep_json(msg: &DynamicMessage, prefix: &str) -> Option<(String, String)> {
    for (field, value) in msg.fields() {
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        let Kind::Message(m) = field.kind() else {
            continue;
        };
        if matches!(
            m.full_name(),
            "google.protobuf.Struct" | "google.protobuf.Value" | "google.protobuf.ListValue"
        ) {
            if let Some(problem) = crate::records::fields::json_problem(value, 0) {
                return Some((path, problem));
            }
            continue;
        }
        if is_well_known(&m) || field.is_map() {
            continue;
        }
        match value {
            Value::Message(child) => {
                if let Some(found) = deep_json(child, &path) {
                    return Some(found);
                }
            }
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(found) = item
                        .as_message()
                        .and_then(|c| deep_json(c, &format!("{path}[{i}]")))
                    {
                        return Some(found);
                    }
                }
            }
            _ => {}
        }
    }
    None
}

fn is_well_known(desc: &MessageDescriptor) -> bool {
    desc.full_name().starts_with("google.protobuf.")
}

/// The update mask grpc-gateway derives from a PATCH body: the paths of the
/// keys present, recursing into singular messages and (by key) into Struct
/// fields; unknown keys are INVALID_ARGUMENT.
fn mask_from_body(
    desc: &MessageDescriptor,
    body: &serde_json::Value,
    prefix: &str,
    out: &mut Vec<String>,
) -> Result<(), Error> {
    let serde_json::Value::Object(map) = body else {
        return Ok(());
    };
    for (key, value) in map {
        let Some(field) = field_by_name(desc, key) else {
            return Err(invalid(
                "update_mask",
                format!("could not find field {key:?} in {}", desc.full_name()),
            ));
        };
        let path = format!("{prefix}{}", field.name());
        match field.kind() {
            Kind::Message(m)
                if m.full_name() == "google.protobuf.Struct"
                    && value.is_object()
                    && !field.is_list() =>
            {
                struct_paths(&path, value, out)?
            }
            Kind::Message(m)
                if !is_well_known(&m)
                    && !field.is_list()
                    && !field.is_map()
                    && value.is_object() =>
            {
                mask_from_body(&m, value, &format!("{path}."), out)?
            }
            _ => out.push(path),
        }
    }
    Ok(())
}

/// The mask paths of a Struct value's leaves under `prefix` (keys holding
/// dots or commas in backticks), at most [`mask::MAX_PATHS`] of them.
fn struct_paths(
    prefix: &str,
    value: &serde_json::Value,
    out: &mut Vec<String>,
) -> Result<(), Error> {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                struct_paths(&format!("{prefix}.{}", mask::quote_segment(k)), v, out)?;
            }
        }
        _ => {
            if out.len() >= mask::MAX_PATHS {
                return Err(invalid(
                    "update_mask",
                    format!("the body names more than {} fields", mask::MAX_PATHS),
                ));
            }
            out.push(prefix.to_owned())
        }
    }
    Ok(())
}

impl Transcoder {
    /// Reads every `google.api.http` rule of the `crm.v1` services. Bodies
    /// larger than `body_limit` bytes are refused with 413.
    pub fn new(grpc: GrpcService, body_limit: usize) -> Self {
        let http_ext = DESCRIPTOR_POOL
            .get_extension_by_name("google.api.http")
            .expect("google/api/annotations.proto is in the descriptor set");
        let mut routes = Vec::new();
        for service in DESCRIPTOR_POOL
            .services()
            .filter(|s| s.package_name() == "crm.v1")
        {
            for method in service.methods() {
                let options = method.options();
                let Value::Message(rule) = options.get_extension(&http_ext).into_owned() else {
                    continue;
                };
                let Some((verb, template)) = ["get", "post", "patch", "put", "delete"]
                    .iter()
                    .find_map(|v| {
                        rule.get_field_by_name(v).and_then(|t| {
                            t.as_str()
                                .filter(|s| !s.is_empty())
                                .map(|s| (*v, s.to_owned()))
                        })
                    })
                else {
                    continue;
                };
                let input = method.input();
                let body = match rule
                    .get_field_by_name("body")
                    .as_deref()
                    .and_then(Value::as_str)
                {
                    None | Some("") => BodyRule::None,
                    Some("*") => BodyRule::Whole,
                    Some(f) => BodyRule::Field(
                        input
                            .get_field_by_name(f)
                            .expect("body names a request field"),
                    ),
                };
                let masks: Vec<FieldDescriptor> = input
                    .fields()
                    .filter(|f| matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask"))
                    .collect();
                routes.push(Route {
                    method: verb.to_uppercase().parse().expect("an HTTP method"),
                    template: Template::parse(&template).expect("valid http rule template"),
                    body,
                    grpc_path: format!("/{}/{}", service.full_name(), method.name()),
                    output: method.output(),
                    mask_field: (masks.len() == 1).then(|| masks[0].clone()),
                    streaming: method.is_server_streaming(),
                    input,
                });
            }
        }
        Self {
            routes: routes.into(),
            grpc,
            body_limit,
        }
    }

    /// Serves one HTTP request.
    pub async fn handle(&self, req: http::Request<axum::body::Body>) -> JsonResponse {
        let (parts, body) = req.into_parts();
        let request_id = parts.headers.get("x-request-id").cloned();
        let path = parts.uri.path();
        // HEAD is served as GET, without the body.
        let head = parts.method == Method::HEAD;
        let wanted = if head { &Method::GET } else { &parts.method };
        let mut allowed: Vec<&str> = Vec::new();
        let mut found = None;
        for route in self.routes.iter() {
            if let Some(bound) = route.template.matches(path) {
                allowed.push(route.method.as_str());
                if route.method == Method::GET {
                    allowed.push("HEAD");
                }
                if route.method == *wanted {
                    found = Some((route, bound));
                    break;
                }
            }
        }
        let Some((route, bound)) = found else {
            if allowed.is_empty() {
                let status = routing_status(
                    Code::NotFound,
                    "ROUTE_NOT_FOUND",
                    format!("no route for {} {path}", parts.method),
                );
                return status_response(&status, request_id.as_ref());
            }
            // grpc-gateway answers 501 here; 405 with Allow is what HTTP
            // clients and tools expect for a known path (the body still
            // carries the gRPC code UNIMPLEMENTED).
            let status = routing_status(
                Code::Unimplemented,
                "METHOD_NOT_ALLOWED",
                format!(
                    "method {} is not allowed on {path}; allowed: {}",
                    parts.method,
                    allowed.join(", ")
                ),
            );
            let mut r = status_response(&status, request_id.as_ref());
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return r;
        };
        let body = match http_body_util::Limited::new(body, self.body_limit)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                let status = routing_status(
                    Code::OutOfRange,
                    "MESSAGE_TOO_LARGE",
                    format!(
                        "request body exceeds {} bytes or is unreadable",
                        self.body_limit
                    ),
                );
                let mut r = status_response(&status, request_id.as_ref());
                *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                return r;
            }
        };
        let response = match self.build(route, &bound, parts.uri.query(), &body, &parts.method) {
            Ok(msg) => self.call(route, msg, &parts.headers).await,
            Err(e) => error_response(e, request_id.as_ref()),
        };
        if head {
            without_body(response)
        } else {
            response
        }
    }

    /// The request message of `route` from the body, path and query.
    fn build(
        &self,
        route: &Route,
        bound: &[(Vec<String>, String)],
        query: Option<&str>,
        body: &Bytes,
        method: &Method,
    ) -> Result<DynamicMessage, Error> {
        let mut msg = DynamicMessage::new(route.input.clone());
        let has_body = body.iter().any(|b| !b.is_ascii_whitespace());
        match &route.body {
            BodyRule::None => {}
            BodyRule::Whole if has_body => {
                msg = decode_json(&route.input, body, "")?;
            }
            BodyRule::Whole => {}
            BodyRule::Field(field) if has_body => {
                let Kind::Message(desc) = field.kind() else {
                    return Err(invalid(field.name(), "body field is not a message"));
                };
                let value = decode_json(&desc, body, field.name())?;
                msg.set_field(field, Value::Message(value));
                if *method == Method::PATCH
                    && let Some(mask) = &route.mask_field
                {
                    let json: serde_json::Value = serde_json::from_slice(body)
                        .map_err(|e| invalid(field.name(), e.to_string()))?;
                    let mut paths = Vec::new();
                    mask_from_body(&desc, &json, "", &mut paths)?;
                    paths.sort();
                    if !paths.is_empty() {
                        set_path(
                            &mut msg,
                            &[mask.name().to_owned()],
                            &paths.join(","),
                            "update_mask",
                            Bind::Once,
                        )?;
                    }
                }
            }
            BodyRule::Field(_) => {}
        }
        for (field_path, value) in bound {
            let display = field_path.join(".");
            if !set_path(&mut msg, field_path, value, &display, Bind::Overwrite)? {
                return Err(invalid(&display, "cannot be bound from the path"));
            }
        }
        if let Some((field, problem)) = deep_json(&msg, "") {
            // Refused here, with the field named: encoded, it would be deeper
            // than a protobuf decoder accepts.
            return Err(invalid(&field, problem));
        }
        if matches!(route.body, BodyRule::Whole) {
            return Ok(msg);
        }
        let mut taken: Vec<&str> = route.template.bound_fields().collect();
        if let BodyRule::Field(f) = &route.body {
            taken.push(f.name());
        }
        let mut mask_from_query = false;
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            let Some(top) = field_by_name(&route.input, &path[0]) else {
                continue; // unknown parameters are ignored
            };
            if taken.contains(&top.name()) {
                continue;
            }
            if route.mask_field.as_ref().is_some_and(|m| m == &top) && !mask_from_query {
                // An explicit ?update_mask= replaces the one derived from the body.
                msg.clear_field(&top);
                mask_from_query = true;
            }
            set_path(&mut msg, &path, &value, &key, Bind::Once)?;
        }
        Ok(msg)
    }

    /// Forwards `msg` to the gRPC method of `route` and renders the answer.
    async fn call(&self, route: &Route, msg: DynamicMessage, headers: &HeaderMap) -> JsonResponse {
        let payload = msg.encode_to_vec();
        let mut frame = BytesMut::with_capacity(5 + payload.len());
        frame.put_u8(0);
        frame.put_u32(payload.len() as u32);
        frame.put_slice(&payload);
        let mut req = http::Request::new(tonic::body::Body::new(Full::new(frame.freeze())));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = route.grpc_path.parse().expect("a gRPC path is a valid URI");
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        for name in [
            header::AUTHORIZATION.as_str(),
            "x-request-id",
            "grpc-timeout",
        ] {
            if let Some(v) = headers.get(name) {
                h.insert(name, v.clone());
            }
        }
        req.extensions_mut().insert(Transcoded);
        let response = match self.grpc.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let outcome = parts.extensions.get::<CallOutcome>().cloned();
        let mut response = if route.streaming {
            render_stream(route, parts, body)
        } else {
            self.render(route, parts, body).await
        };
        if let Some(o) = outcome {
            response.extensions_mut().insert(o);
        }
        response
    }

    /// The JSON answer of a gRPC response.
    async fn render(
        &self,
        route: &Route,
        parts: http::response::Parts,
        body: tonic::body::Body,
    ) -> JsonResponse {
        let request_id = parts.headers.get("x-request-id").cloned();
        let collected = match body.collect().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reading the in-process gRPC response");
                return status_response(
                    &routing_status(Code::Internal, "INTERNAL_ERROR", "internal error".into()),
                    request_id.as_ref(),
                );
            }
        };
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let mut data = collected.to_bytes();
        let status = tonic::Status::from_header_map(&parts.headers)
            .or_else(|| tonic::Status::from_header_map(&trailers));
        if let Some(status) = status.filter(|s| s.code() != Code::Ok) {
            return status_response(&status, request_id.as_ref());
        }
        if data.len() < 5 || data[0] != 0 {
            return status_response(
                &routing_status(
                    Code::Internal,
                    "INTERNAL_ERROR",
                    "malformed gRPC response".into(),
                ),
                request_id.as_ref(),
            );
        }
        data.advance(1);
        let len = data.get_u32() as usize;
        let Ok(out) =
            DynamicMessage::decode(route.output.clone(), data.slice(..len.min(data.len())))
        else {
            return status_response(
                &routing_status(
                    Code::Internal,
                    "INTERNAL_ERROR",
                    "undecodable gRPC response".into(),
                ),
                request_id.as_ref(),
            );
        };
        let mut json = Vec::with_capacity(512);
        if out
            .serialize_with_options(
                &mut serde_json::Serializer::new(&mut json),
                &output_options(),
            )
            .is_err()
        {
            return status_response(
                &routing_status(
                    Code::Internal,
                    "INTERNAL_ERROR",
                    "unrenderable response".into(),
                ),
                request_id.as_ref(),
            );
        }
        json_response(StatusCode::OK, json, request_id.as_ref())
    }
}

/// The answer of a server-streaming method: an error status before the first
/// message is an ordinary error response; otherwise 200 and, as grpc-gateway
/// streams, one JSON object per line — `{"result": <message>}` for each
/// message, `{"error": <status>}` if the stream fails. Each line is sent as
/// soon as its message arrives.
fn render_stream(
    route: &Route,
    parts: http::response::Parts,
    body: tonic::body::Body,
) -> JsonResponse {
    let request_id = parts.headers.get("x-request-id").cloned();
    if let Some(status) =
        tonic::Status::from_header_map(&parts.headers).filter(|s| s.code() != Code::Ok)
    {
        return status_response(&status, request_id.as_ref());
    }
    let output = route.output.clone();
    let lines = futures_util::stream::unfold(Some((body, BytesMut::new())), move |state| {
        let output = output.clone();
        async move {
            let (mut body, mut buf) = state?;
            let line = |v: serde_json::Value| {
                let mut text = serde_json::to_vec(&v).unwrap_or_default();
                text.push(b'\n');
                Ok::<_, Infallible>(Bytes::from(text))
            };
            loop {
                if buf.len() >= 5 {
                    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                    if buf.len() >= 5 + len {
                        let frame = buf.split_to(5 + len).freeze();
                        let json = DynamicMessage::decode(output.clone(), frame.slice(5..))
                            .ok()
                            .and_then(|m| {
                                m.serialize_with_options(
                                    serde_json::value::Serializer,
                                    &output_options(),
                                )
                                .ok()
                            });
                        return Some(match json {
                            Some(v) => {
                                (line(serde_json::json!({ "result": v })), Some((body, buf)))
                            }
                            None => {
                                let s = routing_status(
                                    Code::Internal,
                                    "INTERNAL_ERROR",
                                    "undecodable stream message".into(),
                                );
                                (line(serde_json::json!({ "error": status_json(&s) })), None)
                            }
                        });
                    }
                }
                match body.frame().await {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => buf.extend_from_slice(&data),
                        Err(frame) => {
                            let failed = frame
                                .into_trailers()
                                .ok()
                                .and_then(|t| tonic::Status::from_header_map(&t))
                                .filter(|s| s.code() != Code::Ok);
                            if let Some(status) = failed {
                                return Some((
                                    line(serde_json::json!({ "error": status_json(&status) })),
                                    None,
                                ));
                            }
                        }
                    },
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "a streamed gRPC response failed");
                        return None;
                    }
                    None => return None,
                }
            }
        }
    });
    let mut r = http::Response::new(axum::body::Body::from_stream(lines));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = request_id {
        r.headers_mut().insert("x-request-id", id);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> MessageDescriptor {
        DESCRIPTOR_POOL
            .get_message_by_name("crm.v1.Account")
            .unwrap()
    }

    #[test]
    fn body_keys_make_the_mask() {
        let body = serde_json::json!({"name": "x", "legalName": "y", "custom_fields": {"a": 1, "b": {"c": 2}}, "tags": []});
        let mut paths = Vec::new();
        mask_from_body(&account(), &body, "", &mut paths).unwrap();
        paths.sort();
        assert_eq!(
            paths,
            vec![
                "custom_fields.a",
                "custom_fields.b.c",
                "legal_name",
                "name",
                "tags"
            ]
        );
        let err = mask_from_body(
            &account(),
            &serde_json::json!({"nope": 1}),
            "",
            &mut Vec::new(),
        );
        assert!(err.is_err());
        // An empty or null Struct replaces the whole field.
        let mut paths = Vec::new();
        mask_from_body(
            &account(),
            &serde_json::json!({"custom_fields": null}),
            "",
            &mut paths,
        )
        .unwrap();
        assert_eq!(paths, vec!["custom_fields"]);
    }

    #[test]
    fn query_values_parse_by_type() {
        let list = DESCRIPTOR_POOL
            .get_message_by_name("crm.v1.ListAccountsRequest")
            .unwrap();
        let mut m = DynamicMessage::new(list);
        assert!(set_path(&mut m, &["pageSize".into()], "10", "pageSize", Bind::Once).unwrap());
        assert!(
            set_path(
                &mut m,
                &["show_deleted".into()],
                "true",
                "show_deleted",
                Bind::Once
            )
            .unwrap()
        );
        assert!(set_path(&mut m, &["page_size".into()], "20", "page_size", Bind::Once).is_err());
        assert!(!set_path(&mut m, &["unknown".into()], "1", "unknown", Bind::Once).unwrap());
        let mut m = DynamicMessage::new(list_req("crm.v1.ListAccountsRequest"));
        assert!(
            set_path(
                &mut m,
                &["page_size".into()],
                "ten",
                "page_size",
                Bind::Once
            )
            .is_err()
        );
    }

    fn list_req(name: &str) -> MessageDescriptor {
        DESCRIPTOR_POOL.get_message_by_name(name).unwrap()
    }

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
}
