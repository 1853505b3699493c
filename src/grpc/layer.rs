//! The tower layer every call passes first — gRPC, and REST calls after the
//! transcoder turned them into gRPC requests. In order:
//!
//! 1. the request id (`x-request-id`, accepted or generated, echoed);
//! 2. for `crm.v1` methods: authentication, before anything else runs (the
//!    [`Caller`] goes into the request's extensions), then the global
//!    concurrency limit (over it: RESOURCE_EXHAUSTED at once, never a queue),
//!    then the request deadline (the configured one, or a shorter
//!    `grpc-timeout`): DEADLINE_EXCEEDED, and the handler — with its
//!    transaction — is dropped;
//! 3. a panicking handler becomes INTERNAL (cause logged, never returned);
//! 4. every error gets an `ErrorInfo` (errors made by tonic itself, such as
//!    an oversized message, come without one);
//! 5. one log line and the metrics, per call.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::sync::Semaphore;
use tonic::Code;
use tower::{Layer, Service};

use crate::auth::{Authenticator, Caller, scope};
use crate::error::transport;
use crate::metrics::{Metrics, code_name};

/// Metadata key of the request id.
pub const REQUEST_ID: &str = "x-request-id";
/// Path prefix of the calls that need a token (and count against limits).
const PROTECTED: &str = "/crm.v1.";

/// Marks a request the REST transcoder made: the HTTP layer logs it (one
/// line per request), so this layer does not.
#[derive(Clone, Copy, Debug)]
pub struct Transcoded;

/// The scope template (`crm:{collection}:read`) of a method whose request
/// names the collection: the handler fills it in (a request extension).
#[derive(Clone, Copy, Debug)]
pub struct CollectionScope(pub &'static str);

/// What became of a call, for the HTTP layer's log line (a response
/// extension).
#[derive(Clone, Debug)]
pub struct CallOutcome {
    /// The gRPC code.
    pub code: Code,
    /// The caller's tenant, if authenticated.
    pub tenant: Option<String>,
    /// The caller's app, for integration tokens.
    pub app: Option<String>,
}

/// Limits applied to `crm.v1` calls.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest a call may take.
    pub request_timeout: Duration,
    /// Calls served at once.
    pub max_concurrent: usize,
}

/// Builds [`CallService`]s.
#[derive(Clone)]
pub struct CallLayer {
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl CallLayer {
    /// A layer authenticating with `auth`, recording into `metrics`, within `limits`.
    pub fn new(auth: Arc<Authenticator>, metrics: Arc<Metrics>, limits: Limits) -> Self {
        Self {
            auth,
            metrics,
            permits: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            timeout: limits.request_timeout,
        }
    }
}

impl<S> Layer<S> for CallLayer {
    type Service = CallService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallService {
            inner,
            layer: self.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct CallService<S> {
    inner: S,
    layer: CallLayer,
}

fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// The `grpc-timeout` header (`<digits><H|M|S|m|u|n>`).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok().filter(|_| digits.len() <= 8)?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<Request<B>> for CallService<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let request_id = match req.headers().get(REQUEST_ID) {
            Some(v) if valid_request_id(v) => v.clone(),
            _ => {
                let v = HeaderValue::from_str(&ulid::Ulid::generate().to_string())
                    .expect("a ULID is a valid header value");
                req.headers_mut().insert(REQUEST_ID, v.clone());
                v
            }
        };
        let method = req.uri().path().to_owned();
        let rid = request_id.to_str().unwrap_or_default().to_owned();
        let layer = self.layer.clone();
        let transcoded = req.extensions().get::<Transcoded>().is_some();

        let mut caller: Option<Caller> = None;
        let mut rejected = None;
        let mut permit = None;
        let mut deadline = None;
        if method.starts_with(PROTECTED) {
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match layer.auth.authenticate(header) {
                Ok(c) => {
                    // The method's scope, before anything else runs: a
                    // method naming its collection in the request has it
                    // checked by the handler (Ctx::require_collection) from
                    // the same option.
                    let denied = match scope::required(&method) {
                        Some(r) if r.contains(scope::COLLECTION_PLACEHOLDER) => {
                            req.extensions_mut().insert(CollectionScope(r));
                            None
                        }
                        Some(r) => c.require(r).err(),
                        None => None,
                    };
                    req.extensions_mut().insert(c.clone());
                    caller = Some(c);
                    if let Some(e) = denied {
                        rejected = Some(e.into_status(&rid));
                    } else {
                        match layer.permits.clone().try_acquire_owned() {
                            Ok(p) => permit = Some(p),
                            Err(_) => {
                                layer.metrics.shed.inc();
                                rejected = Some(transport::with_request_id(
                                    Code::ResourceExhausted,
                                    "SERVER_BUSY",
                                    "the server is at its concurrency limit; retry with backoff",
                                    &rid,
                                ));
                            }
                        }
                    }
                    let client = grpc_timeout(req.headers());
                    deadline = Some(client.map_or(layer.timeout, |c| c.min(layer.timeout)));
                }
                Err(e) => rejected = Some(e.into_status(&rid)),
            }
        }

        // The ready inner service is the one that must be called; keep a
        // fresh clone for the next call (tower's usual clone-and-swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = match rejected {
                Some(s) => s.into_http(),
                None => {
                    let call = AssertUnwindSafe(inner.call(req)).catch_unwind();
                    let outcome = match deadline {
                        Some(d) => tokio::time::timeout(d, call).await.ok(),
                        None => Some(call.await),
                    };
                    match outcome {
                        None => transport::with_request_id(
                            Code::DeadlineExceeded,
                            "DEADLINE_EXCEEDED",
                            format!(
                                "the request did not finish within {} ms",
                                deadline.unwrap_or_default().as_millis()
                            ),
                            &rid,
                        )
                        .into_http(),
                        Some(Err(panic)) => {
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            tracing::error!(request_id = %rid, method = %method, panic = %what, "handler panicked");
                            transport::with_request_id(
                                Code::Internal,
                                "INTERNAL_ERROR",
                                format!("internal error (request id {rid})"),
                                &rid,
                            )
                            .into_http()
                        }
                        Some(Ok(result)) => result?,
                    }
                }
            };
            drop(permit);
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(Code::from_i32)
                .unwrap_or(Code::Ok);
            let mut code = code;
            if code != Code::Ok && !response.headers().contains_key("grpc-status-details-bin") {
                // An error tonic made itself (e.g. a message over the size
                // limit): give it the ErrorInfo every error carries.
                let status = transport::completed(code, response.headers(), &rid);
                code = status.code();
                response = status.into_http();
            }
            response.headers_mut().insert(REQUEST_ID, request_id);
            let seconds = started.elapsed().as_secs_f64();
            if method.starts_with(PROTECTED) {
                // Labelled by known method only: a caller inventing paths
                // must not create new series.
                layer.metrics.request(known_method(&method), code, seconds);
            }
            let tenant = caller.as_ref().map(|c| c.tenant_id()).unwrap_or("");
            let app = caller.as_ref().and_then(|c| c.app_id()).unwrap_or("");
            if transcoded {
                response.extensions_mut().insert(CallOutcome {
                    code,
                    tenant: caller.as_ref().map(|c| c.tenant_id().to_owned()),
                    app: caller.as_ref().and_then(|c| c.app_id()).map(str::to_owned),
                });
            } else {
                tracing::info!(
                    target: "crm::request",
                    transport = "grpc",
                    method = %method,
                    code = code_name(code),
                    latency_ms = seconds * 1000.0,
                    tenant,
                    app,
                    request_id = %rid,
                    "request"
                );
            }
            Ok(response)
        })
    }
}

/// `path` if it is a method of a `crm.v1` service, else `"unknown"`.
fn known_method(path: &str) -> &str {
    static KNOWN: std::sync::LazyLock<std::collections::HashSet<String>> =
        std::sync::LazyLock::new(|| {
            crate::proto::DESCRIPTOR_POOL
                .services()
                .filter(|s| s.package_name() == "crm.v1")
                .flat_map(|s| {
                    s.methods()
                        .map(|m| format!("/{}/{}", s.full_name(), m.name()))
                        .collect::<Vec<_>>()
                })
                .collect()
        });
    if KNOWN.contains(path) {
        path
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_known_methods_only() {
        assert_eq!(
            known_method("/crm.v1.AccountService/GetAccount"),
            "/crm.v1.AccountService/GetAccount"
        );
        for p in [
            "/crm.v1.AccountService/Nope",
            "/crm.v1.X/Y",
            "/crm.v1.",
            "/crm.v1.AccountService/GetAccount/",
        ] {
            assert_eq!(known_method(p), "unknown", "{p}");
        }
    }

    #[test]
    fn parses_grpc_timeouts() {
        let mut h = HeaderMap::new();
        for (v, d) in [
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("2M", Duration::from_secs(120)),
            ("100u", Duration::from_micros(100)),
        ] {
            h.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(grpc_timeout(&h), Some(d), "{v}");
        }
        for v in ["", "S", "5x", "123456789S", "-1S"] {
            h.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(grpc_timeout(&h), None, "{v:?}");
        }
    }
}
