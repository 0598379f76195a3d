//! The HTTP plumbing every service shares. One listener serves every
//! service: identity answers at the root (`/v3`, like Keystone on port
//! 5000), the others under their own prefix (`/compute/v2.1`,
//! `/network/v2.0`, …), advertised through the catalog; each service's
//! routes carry their own state, and the `ursa` binary merges them and
//! wraps them in [`finish`].
//!
//! This module owns what every request shares: the body limit (1 MiB, 413
//! beyond), a `tracing` span per request, the typed extractors that turn a
//! body or a token into Rust values with OpenStack-shaped errors, and the
//! 404/405 fallbacks.

use crate::error::Error;
use crate::policy::Caller;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use std::sync::{Arc, OnceLock};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// A handler state that can turn a token into its caller: every service's
/// state does, by asking identity (which reads no database to do it).
pub trait Authenticate {
    fn authenticate(&self, token: &str) -> Result<Caller, Error>;
}

/// The layers every request passes, around the routes of every service:
/// the 404/405 fallbacks, a panic costs one request a 500 (never the
/// connection or the process), plain-text errors of the layers below get
/// OpenStack's JSON shape, every answer carries a request id, and every
/// request runs in a `tracing` span that names it.
pub fn finish(routes: Router) -> Router {
    spans(
        routes
            .fallback(|| async { Error::NotFound("The resource could not be found.".into()) })
            .method_not_allowed_fallback(|| async {
                Error::MethodNotAllowed("The method is not allowed for the requested URL.".into())
            })
            .layer(tower_http::catch_panic::CatchPanicLayer::new())
            .layer(axum::middleware::from_fn(shape_errors)),
    )
}

/// The layers every request passes, for routes that answer in their own
/// shape (the dashboard's HTML): a caught panic is a 500, and a request
/// has its id and its `tracing` span.
pub fn traced(routes: Router) -> Router {
    spans(routes.layer(tower_http::catch_panic::CatchPanicLayer::new()))
}

fn spans(routes: Router) -> Router {
    routes
        .layer(axum::middleware::from_fn(request_id))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<_>| {
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), user = tracing::field::Empty, request_id = tracing::field::Empty)
                },
            ),
        )
}

/// The JSON routes' body limit (1 MiB, 413 beyond).
pub fn limit_body(routes: Router) -> Router {
    routes.layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
}

/// Every answer carries a request id (`x-openstack-request-id`, and for
/// compute also `x-compute-request-id`), as OpenStack services do; it is
/// also recorded on the request's span.
async fn request_id(mut req: Request, next: axum::middleware::Next) -> Response {
    let id = format!("req-{}", uuid::Uuid::new_v4());
    req.extensions_mut().insert(RequestId(id.clone()));
    let compute = req.uri().path().starts_with("/compute");
    tracing::Span::current().record("request_id", id.as_str());
    let mut resp = next.run(req).await;
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        if compute {
            resp.headers_mut().insert("x-compute-request-id", v.clone());
        }
        resp.headers_mut().insert("x-openstack-request-id", v);
    }
    resp
}

/// Gives the plain-text errors of the layers and extractors below (the
/// body limit's 413, a path or query that does not parse) Keystone's JSON
/// shape, keeping their status.
async fn shape_errors(req: Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let (_, body) = resp.into_parts();
        let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&text).trim().to_string();
        let err = match status {
            StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge("Request is too large.".into()),
            StatusCode::NOT_FOUND => Error::NotFound("The resource could not be found.".into()),
            StatusCode::METHOD_NOT_ALLOWED => {
                Error::MethodNotAllowed("The method is not allowed for the requested URL.".into())
            }
            s if s.is_server_error() => return Error::Internal(text).into_response(),
            _ => Error::BadRequest(if text.is_empty() {
                "Bad request.".into()
            } else {
                text
            }),
        };
        let mut out = err.into_response();
        *out.status_mut() = status;
        return out;
    }
    resp
}

/// A JSON body, parsed into `T`, with a 400 that says what is wrong.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge("Request is too large.".into())
            } else {
                Error::BadRequest(format!("Could not read the request body: {e}"))
            }
        })?;
        parse_body(&bytes).map(Body)
    }
}

/// Parses a JSON request body; the error names the path of the bad field.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.is_empty() {
        return Err(Error::BadRequest(
            "The request body is empty; a JSON object is expected.".into(),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            Error::BadRequest(format!("Invalid input: {inner}"))
        } else {
            Error::BadRequest(format!("Invalid input for field '{path}': {inner}"))
        }
    })
}

/// The authenticated caller (`X-Auth-Token`), or 401.
pub struct Auth(pub Caller);

impl<S: Authenticate + Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let token = auth_token(parts).ok_or_else(|| {
            Error::Unauthorized("The request you have made requires authentication.".into())
        })?;
        let caller = state.authenticate(token)?;
        tracing::Span::current().record("user", caller.user_id.as_str());
        // An application credential's access rules (checked on the path
        // the client asked for; a call one service makes to another for
        // the request is let through, as a service token lets it in
        // Keystone's middleware).
        if let Some(rules) = &caller.access_rules {
            let path = parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .map(|u| u.0.path().to_string())
                .unwrap_or_else(|| parts.uri.path().to_string());
            let inproc = parts.extensions.get::<InProcessCall>().is_some();
            if !inproc && !crate::policy::rules_permit(rules, parts.method.as_str(), &path) {
                return Err(Error::Unauthorized(
                    "The request you have made requires authentication: the application credential's access rules do not allow it.".into(),
                ));
            }
        }
        Ok(Auth(caller))
    }
}

/// Marks a request one service makes to another in this process (see
/// [`internal`]); no client can set it.
#[derive(Clone, Copy, Debug)]
pub struct InProcessCall;

/// The request's id (`x-openstack-request-id`), for records that name the
/// request that made them (Nova's instance actions).
#[derive(Clone, Debug, Default)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The caller's raw token, for calls the compute API makes to the other
/// services on its behalf ([`internal`]), as Nova calls Neutron and Cinder.
pub struct Token(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Token {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        auth_token(parts)
            .map(|t| Token(t.to_string()))
            .ok_or_else(|| {
                Error::Unauthorized("The request you have made requires authentication.".into())
            })
    }
}

/// This process's whole HTTP application, for calls one service makes to
/// another as the caller. The `ursa` binary sets it once it has assembled
/// every service's routes; a service that calls another holds a clone.
/// (The application holds that service's state, which holds this handle:
/// the cycle lives as long as the process, as the application does.)
#[derive(Clone, Default)]
pub struct InProcess(Arc<OnceLock<Router>>);

impl InProcess {
    /// Names the assembled application; only the first call counts.
    pub fn set(&self, app: Router) {
        let _ = self.0.set(app);
    }

    /// Sends one whole request through this process's application, as
    /// any client's would go (the dashboard calls every API this way, as
    /// the logged-in user). 503 before the application is assembled.
    pub async fn call(&self, req: axum::http::Request<axum::body::Body>) -> Response {
        use tower::ServiceExt;
        let Some(router) = self.0.get() else {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        match router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        }
    }
}

/// One request to this process's own API, as the caller: the compute
/// API's proxies (security groups, floating IPs, images, volumes) go
/// through the network, image and volume APIs this way, with their
/// validation, policy and project scoping. Returns the status and the
/// JSON body (Null when empty).
pub async fn internal(
    app: &InProcess,
    method: axum::http::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    internal_as(app, method, path, token, body, "application/json").await
}

/// [`internal`] with a body of another JSON media type (Glance's
/// JSON-patch).
pub async fn internal_as(
    app: &InProcess,
    method: axum::http::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
    content_type: &str,
) -> (StatusCode, serde_json::Value) {
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("x-auth-token", token);
    let body = match body {
        Some(b) => {
            req = req.header("content-type", content_type);
            axum::body::Body::from(b.to_string())
        }
        None => axum::body::Body::empty(),
    };
    let Ok(mut req) = req.body(body) else {
        return (StatusCode::BAD_REQUEST, serde_json::Value::Null);
    };
    req.extensions_mut().insert(InProcessCall);
    let Some(router) = app.0.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, serde_json::Value::Null);
    };
    let resp = match router.clone().oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, v)
}

pub fn auth_token(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

/// An empty answer with a status (204 for deletes, 200 for HEAD checks).
pub fn empty(status: StatusCode) -> Response {
    status.into_response()
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish (up to 10 s). HTTP/1 header names go out in
/// Title-Case, as OpenStack's services (eventlet, Apache) write them:
/// some clients (Swift's own tests among them) compare names by case.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().title_case_headers(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of descriptors and the like: back off, go on.
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // The peer's address, as axum's ConnectInfo (temporary URLs
                // limited to an IP range read it).
                let svc = tower::ServiceBuilder::new()
                    .map_request(move |mut r: axum::http::Request<hyper::body::Incoming>| {
                        r.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                        r
                    })
                    .service(app.clone());
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
    }
    Ok(())
}
