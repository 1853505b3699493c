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
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions, Value,
};
use tonic::Code;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use super::request::{
    Bind, decode_json, deep_json, field_by_name, invalid, mask_from_body, set_path,
};
use super::template::Template;
use crate::error::Error;
use crate::error::transport::{
    JsonResponse, error_response, json_response, routing_status, status_json, status_response,
};
use crate::grpc::layer::{CallOutcome, Transcoded};
use crate::proto::DESCRIPTOR_POOL;

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

fn output_options() -> SerializeOptions {
    crate::records::convert::rest_options()
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

impl Transcoder {
    /// Serves a gRPC-Web call (`application/grpc-web`, `+proto`, or the
    /// base64 `-text` form) through the same gRPC stack, so that browsers
    /// reach the services from the explorer's origin.
    pub async fn grpc_web(&self, req: axum::extract::Request) -> axum::response::Response {
        use tower::Layer;
        let web = tonic_web::GrpcWebLayer::new().layer(self.grpc.clone());
        match web.oneshot(req.map(tonic::body::Body::new)).await {
            Ok(r) => r.map(axum::body::Body::new),
            Err(never) => match never {},
        }
    }

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
        // `…/{id}:undelete` is the verb's path only (as grpc-gateway reads
        // it): `{id}` does not also take `acc_1:undelete` as an id.
        let verb = self
            .routes
            .iter()
            .any(|r| r.template.verb.is_some() && r.template.matches(path).is_some());
        for route in self
            .routes
            .iter()
            .filter(|r| r.template.verb.is_some() == verb)
        {
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
        // No credentials: refused before the body is read or judged, as the
        // gRPC layer would refuse the call (a caller without a token learns
        // nothing about what the request should hold).
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return error_response(
                Error::Unauthenticated {
                    reason: "MISSING_CREDENTIALS",
                    message: "missing bearer token (authorization: Bearer <JWT>)".into(),
                },
                request_id.as_ref(),
            );
        }
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
        // Only an empty body is no body; anything else must be JSON.
        let has_body = !body.is_empty();
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
            BodyRule::Field(field) => {
                // The operation's body is the resource: an absent body is a
                // mistake, not an empty write (`{}` is the empty one).
                return Err(invalid(
                    field.name(),
                    "is required: send it as the JSON request body",
                ));
            }
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
            if route.mask_field.as_ref().is_some_and(|m| m == &top) {
                // An empty ?update_mask= is no mask: the body's keys make it.
                if value.is_empty() {
                    continue;
                }
                // An explicit one replaces the one derived from the body.
                if !mask_from_query {
                    msg.clear_field(&top);
                    mask_from_query = true;
                }
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
