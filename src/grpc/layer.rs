//! The tower layer every gRPC call passes first: it fixes the request id
//! (`x-request-id`, accepted or generated, echoed on the response),
//! authenticates calls to `crm.v1` services before anything else runs
//! (putting the [`Caller`] into the request's extensions), and writes one log
//! line per call with method, code, latency, tenant, app and request id.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::auth::{Authenticator, Caller};

/// Metadata key of the request id.
pub const REQUEST_ID: &str = "x-request-id";
/// Path prefix of the calls that need a token.
const PROTECTED: &str = "/crm.v1.";

/// Builds [`CallService`]s.
#[derive(Clone)]
pub struct CallLayer {
    auth: Arc<Authenticator>,
}

impl CallLayer {
    /// A layer authenticating with `auth`.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for CallLayer {
    type Service = CallService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct CallService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
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

        let mut caller: Option<Caller> = None;
        let mut rejected = None;
        if method.starts_with(PROTECTED) {
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match self.auth.authenticate(header) {
                Ok(c) => {
                    req.extensions_mut().insert(c.clone());
                    caller = Some(c);
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
                Some(status) => status.into_http(),
                None => inner.call(req).await?,
            };
            response.headers_mut().insert(REQUEST_ID, request_id);
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap_or(0);
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let tenant = caller.as_ref().map(|c| c.tenant_id()).unwrap_or("");
            let app = caller.as_ref().and_then(|c| c.app_id()).unwrap_or("");
            tracing::info!(
                target: "crm::request",
                method = %method,
                code = ?tonic::Code::from_i32(code),
                latency_ms,
                tenant,
                app,
                request_id = %rid,
                "grpc call"
            );
            Ok(response)
        })
    }
}
