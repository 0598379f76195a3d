//! The Swift API v1. One handler takes every request under `/v1/` (the
//! path Swift's clients and its own functional tests expect: they take the
//! account from the storage URL's second segment) and `/object/v1/`, parses its path once into a [`Target`] (account,
//! container, object: percent-decoded, checked for UTF-8, NUL and length),
//! identifies the caller from `X-Auth-Token`, and hands a [`Ctx`] to the
//! account, container or object handler. Errors are [`Fail`]s, answered
//! with Swift's status codes and bodies.

pub mod account;
pub mod bulk;
pub mod container;
pub mod cors;
pub mod formpost;
pub mod large;
pub mod object;
pub mod range;
pub mod slo;
pub mod staticweb;
pub mod symlink;
pub mod tempurl;
pub mod versions;

use crate::access::{self, Standing, Who};
use crate::blob::BlobError;
use crate::constraints;
use crate::table::TableError;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use ursa_core::policy::Scope;

/// The prefix of every account name (Swift's reseller prefix).
pub const RESELLER_PREFIX: &str = "AUTH_";

/// The object API's routes (`/object/v1/...` and Swift's `/info`), with
/// their own layers: object bodies stream, unlimited by the JSON APIs' body
/// limit, and errors keep Swift's plain bodies.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/info", get(info))
        .route("/object/info", get(info))
        .route("/object/v1/{*rest}", any(dispatch))
        .route("/v1/{*rest}", any(dispatch))
        .route("/crossdomain.xml", get(crossdomain))
        .route("/healthcheck", get(healthcheck))
        .with_state(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<_>| {
                    tracing::info_span!("object", method = %req.method(), path = %req.uri().path(), trans_id = tracing::field::Empty)
                },
            ),
        )
}

/// A fresh transaction id in Swift's form: "tx", 21 hex digits, "-", the
/// time in 10 hex digits.
fn trans_id() -> String {
    format!(
        "tx{}-{:010x}",
        &uuid::Uuid::new_v4().simple().to_string()[..21],
        crate::time::now_secs()
    )
}

/// A plain answer with Swift's transaction headers.
fn plain(content_type: &'static str, body: &'static str) -> Response {
    let t = trans_id();
    (
        StatusCode::OK,
        [
            ("content-type", content_type),
            ("x-trans-id", t.as_str()),
            ("x-openstack-request-id", t.as_str()),
        ],
        body,
    )
        .into_response()
}

/// Swift's `crossdomain` middleware: the Flash/Silverlight policy.
async fn crossdomain() -> Response {
    plain(
        "application/xml; charset=utf-8",
        "<?xml version=\"1.0\"?>\n<!DOCTYPE cross-domain-policy SYSTEM \"http://www.adobe.com/xml/dtds/cross-domain-policy.dtd\" >\n<cross-domain-policy>\n<allow-access-from domain=\"*\" secure=\"false\" />\n</cross-domain-policy>",
    )
}

/// Swift's `healthcheck` middleware.
async fn healthcheck() -> Response {
    plain("text/plain; charset=UTF-8", "OK")
}

/// `/info`: the constraints and what is on.
async fn info() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "swift": constraints::info(),
        "tempurl": tempurl::info(),
        "slo": slo::info(),
        "bulk_upload": {"max_containers_per_extraction": 10000, "max_failed_extractions": 1000},
        "bulk_delete": {"max_deletes_per_request": bulk::MAX_DELETES, "max_failed_deletes": bulk::MAX_DELETES},
        "container_quotas": {},
        "staticweb": {},
        "account_quotas": {},
        "container_sync": {"realms": {}},
        "crossdomain": {},
        "formpost": {"allowed_digests": ["sha1", "sha256", "sha512"]},
        "symlink": {"symloop_max": symlink::SYMLOOP_MAX, "static_links": true},
        "versioned_writes": {},
    }))
}

/// A failed request: Swift's status and body.
#[derive(Debug)]
pub struct Fail {
    pub status: StatusCode,
    pub body: String,
}

impl Fail {
    /// A failure with the status's standard body.
    pub fn of(status: StatusCode) -> Fail {
        let (title, text) = match status.as_u16() {
            400 => ("Bad Request", "The server could not comply with the request since it is either malformed or otherwise incorrect."),
            401 => ("Unauthorized", "This server could not verify that you are authorized to access the document you requested."),
            403 => ("Forbidden", "Access was denied to this resource."),
            404 => ("Not Found", "The resource could not be found."),
            405 => ("Method Not Allowed", "The method is not allowed for this resource."),
            406 => ("Not Acceptable", "The request is not acceptable."),
            408 => ("Request Timeout", "The server has waited too long for the request to be sent by the client."),
            409 => ("Conflict", "There was a conflict when trying to complete your request."),
            411 => ("Length Required", "Length Required"),
            412 => ("Precondition Failed", "A precondition for this request was not met."),
            413 => ("Request Entity Too Large", "The body of your request was too large for this server."),
            416 => ("Requested Range Not Satisfiable", "The Range requested is not available."),
            422 => ("Unprocessable Entity", "Unable to process the contained instructions"),
            499 => ("Client Disconnect", "The client was disconnected during request."),
            503 => ("Service Unavailable", "The server is currently unavailable. Please try again at a later time."),
            _ => ("Internal Error", "The server has either erred or is incapable of performing the requested operation."),
        };
        Fail {
            status,
            body: format!("<html><h1>{title}</h1><p>{text}</p></html>"),
        }
    }

    /// A failure with a message of its own.
    pub fn msg(status: StatusCode, body: impl Into<String>) -> Fail {
        Fail {
            status,
            body: body.into(),
        }
    }

    pub fn bad(body: impl Into<String>) -> Fail {
        Fail::msg(StatusCode::BAD_REQUEST, body)
    }

    pub fn not_found() -> Fail {
        Fail::of(StatusCode::NOT_FOUND)
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (
            self.status,
            [("content-type", "text/html; charset=UTF-8")],
            self.body,
        )
            .into_response()
    }
}

impl From<TableError> for Fail {
    fn from(e: TableError) -> Fail {
        tracing::error!(error = %e, "object tables");
        Fail::of(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<BlobError> for Fail {
    fn from(e: BlobError) -> Fail {
        match e {
            BlobError::TooLarge(_) => Fail::of(StatusCode::PAYLOAD_TOO_LARGE),
            BlobError::Short { .. } | BlobError::Body(_) => {
                Fail::of(StatusCode::from_u16(499).expect("499 is a status"))
            }
            BlobError::Long => Fail::bad("The body is longer than its Content-Length"),
            BlobError::Io(e) => {
                tracing::error!(error = %e, "blob store");
                Fail::of(StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Fail {
        BlobError::Io(e).into()
    }
}

pub type Res = Result<Response, Fail>;

/// What a request's path names.
#[derive(Debug, Clone)]
pub struct Target {
    /// The account (`AUTH_<project>`).
    pub account: String,
    /// The project that owns the account.
    pub project: String,
    pub container: Option<String>,
    pub object: Option<String>,
}

fn decode(raw: &str) -> Result<String, Fail> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    match String::from_utf8(bytes) {
        Ok(s) if !s.contains('\0') => Ok(s),
        _ => Err(Fail::msg(
            StatusCode::PRECONDITION_FAILED,
            "Invalid UTF8 or contains NULL",
        )),
    }
}

impl Target {
    /// Parses `/v1/<account>[/<container>[/<object>]]` (also under
    /// `/object`).
    pub fn parse(path: &str) -> Result<Target, Fail> {
        let rest = path
            .strip_prefix("/object/v1/")
            .or_else(|| path.strip_prefix("/v1/"))
            .ok_or_else(Fail::not_found)?;
        let rest = decode(rest)?;
        let mut parts = rest.splitn(3, '/');
        let account = parts.next().unwrap_or("").to_string();
        let container = parts.next().filter(|c| !c.is_empty()).map(str::to_string);
        let object = parts.next().filter(|o| !o.is_empty()).map(str::to_string);
        if account.is_empty() || (container.is_none() && object.is_some()) {
            return Err(Fail::not_found());
        }
        if account.len() > constraints::MAX_ACCOUNT_NAME_LENGTH {
            return Err(Fail::bad(format!(
                "Account name length of {} longer than {}",
                account.len(),
                constraints::MAX_ACCOUNT_NAME_LENGTH
            )));
        }
        if let Some(c) = &container {
            if c.len() > constraints::MAX_CONTAINER_NAME_LENGTH {
                return Err(Fail::bad(format!(
                    "Container name length of {} longer than {}",
                    c.len(),
                    constraints::MAX_CONTAINER_NAME_LENGTH
                )));
            }
        }
        if let Some(o) = &object {
            if o.len() > constraints::MAX_OBJECT_NAME_LENGTH {
                return Err(Fail::bad(format!(
                    "Object name length of {} longer than {}",
                    o.len(),
                    constraints::MAX_OBJECT_NAME_LENGTH
                )));
            }
        }
        let project = account
            .strip_prefix(RESELLER_PREFIX)
            .unwrap_or_default()
            .to_string();
        Ok(Target {
            account,
            project,
            container,
            object,
        })
    }
}

/// One request, parsed: what the handlers of accounts, containers and
/// objects work from.
pub struct Ctx {
    pub state: AppState,
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    pub target: Target,
    pub who: Option<Who>,
    pub standing: Standing,
    /// A valid temporary URL's grant (the caller is then anonymous).
    pub grant: Option<tempurl::Grant>,
}

impl Ctx {
    /// A query parameter.
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A request header as text.
    pub fn h(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
    }

    pub fn is_owner(&self) -> bool {
        self.standing == Standing::Owner
    }

    /// Refused: 401 for an anonymous caller, 403 for a known one.
    pub fn denied(&self) -> Fail {
        if self.who.is_some() {
            Fail::of(StatusCode::FORBIDDEN)
        } else {
            Fail::of(StatusCode::UNAUTHORIZED)
        }
    }

    /// The caller may read the account or container as its owner or reader.
    pub fn may_read_account(&self) -> bool {
        matches!(self.standing, Standing::Owner | Standing::Reader)
    }

    /// The same request and caller, aimed at another object (or, with an
    /// empty `object`, container) and judged afresh for that account.
    pub fn at(&self, account: &str, container: &str, object: &str) -> Result<Ctx, Fail> {
        let t = Target::parse(&format!("/v1/{account}/{container}/x"))?;
        let mut standing = access::standing(self.who.as_ref(), &t.project);
        // A temporary URL reaches its container, or with an account key
        // its account.
        let grant = self.grant.clone().filter(|g| {
            account == self.target.account
                && (g.account_wide || Some(container) == self.target.container.as_deref())
        });
        if grant.is_some() {
            standing = Standing::Owner;
        }
        Ok(Ctx {
            state: self.state.clone(),
            method: self.method.clone(),
            headers: self.headers.clone(),
            query: self.query.clone(),
            target: Target {
                container: Some(container.to_string()),
                object: (!object.is_empty()).then(|| object.to_string()),
                ..t
            },
            who: self.who.clone(),
            standing,
            grant,
        })
    }

    pub fn container(&self) -> &str {
        self.target.container.as_deref().unwrap_or_default()
    }

    pub fn object(&self) -> &str {
        self.target.object.as_deref().unwrap_or_default()
    }
}

fn who_of(state: &AppState, token: &str) -> Result<Who, Fail> {
    let c = state
        .identity
        .caller(token)
        .map_err(|_| Fail::of(StatusCode::UNAUTHORIZED))?;
    let m = state.identity.model();
    let project_id = match &c.scope {
        Scope::Project(p) => Some(p.clone()),
        _ => None,
    };
    Ok(Who {
        user_name: m
            .users
            .get(&c.user_id)
            .map(|u| u.name.clone())
            .unwrap_or_default(),
        project_name: project_id
            .as_ref()
            .and_then(|p| m.projects.get(p))
            .map(|p| p.name.clone())
            .unwrap_or_default(),
        user_id: c.user_id,
        project_id,
        roles: c.roles.iter().map(|r| r.to_ascii_lowercase()).collect(),
    })
}

async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let trans = trans_id();
    tracing::Span::current().record("trans_id", trans.as_str());
    let mut resp = match handle(state, req).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    };
    let h = resp.headers_mut();
    h.entry("content-type")
        .or_insert(HeaderValue::from_static("text/html; charset=UTF-8"));
    if let Ok(v) = HeaderValue::from_str(&trans) {
        h.insert("x-trans-id", v.clone());
        h.insert("x-openstack-request-id", v);
    }
    resp
}

async fn handle(state: AppState, req: Request) -> Res {
    let (parts, body) = req.into_parts();
    let trailing_slash = parts.uri.path().ends_with('/');
    if let Some((name, _)) = parts
        .headers
        .iter()
        .find(|(_, v)| v.len() > constraints::MAX_HEADER_SIZE)
    {
        return Err(Fail::bad(format!(
            "Header value too long: {}",
            name.as_str()
        )));
    }
    let target = Target::parse(parts.uri.path())?;
    let query: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let token = parts
        .headers
        .get("x-auth-token")
        .or_else(|| parts.headers.get("x-storage-token"))
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty());
    let who = match token {
        Some(t) => Some(who_of(&state, t)?),
        None => None,
    };
    let standing = if target.project.is_empty() {
        Standing::Other
    } else {
        access::standing(who.as_ref(), &target.project)
    };
    let client_ip = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let mut ctx = Ctx {
        state,
        method: parts.method,
        headers: parts.headers,
        query,
        target,
        who,
        standing,
        grant: None,
    };
    if ctx.target.project.is_empty() {
        return Err(ctx.denied());
    }
    if formpost::is_form(&ctx) {
        return formpost::post(&ctx, body).await;
    }
    if ctx.q("temp_url_sig").is_some() || ctx.q("temp_url_expires").is_some() {
        let grant = tempurl::check(&ctx, client_ip).await?;
        ctx.who = None;
        ctx.standing = Standing::Owner;
        ctx.grant = Some(grant);
        ctx.headers.remove("x-timestamp");
        if ctx.target.object.is_none() || ctx.object().ends_with('/') {
            let c = crate::table::container(
                &ctx.state.objects.store,
                &ctx.target.account,
                ctx.container(),
            )
            .await?;
            if let Some(c) = c.filter(|c| staticweb::applies(&ctx, &c.meta)) {
                if let Some(r) = staticweb::answer(&ctx, &c, trailing_slash).await {
                    return r;
                }
            }
            if ctx.target.object.is_none() {
                return Err(Fail::of(StatusCode::UNAUTHORIZED));
            }
        }
        let mut resp = object::handle(ctx, body).await?;
        // What the object's owner wrote for themselves stays with them.
        let private: Vec<HeaderName> = resp
            .headers()
            .keys()
            .filter(|k| {
                k.as_str().starts_with("x-object-meta-")
                    && !k.as_str().starts_with("x-object-meta-public-")
            })
            .cloned()
            .collect();
        for k in private {
            resp.headers_mut().remove(k);
        }
        return Ok(resp);
    }
    if ctx.q("bulk-delete").is_some()
        && (ctx.method == Method::POST || ctx.method == Method::DELETE)
    {
        return bulk::delete(&ctx, body).await;
    }
    if ctx.q("extract-archive").is_some() && ctx.method == Method::PUT {
        return bulk::extract(&ctx, body).await;
    }
    let origin = ctx.h("origin").map(str::to_string);
    let container = ctx.target.container.clone();
    if let (Some(o), Some(_)) = (&origin, &container) {
        if ctx.method == Method::OPTIONS {
            return cors::preflight(&ctx, o).await;
        }
    }
    if container.is_some() && matches!(ctx.method, Method::GET | Method::HEAD) {
        let web_mode = ctx
            .h("x-web-mode")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if web_mode || (ctx.who.is_none() && ctx.grant.is_none()) {
            let c = crate::table::container(
                &ctx.state.objects.store,
                &ctx.target.account,
                ctx.container(),
            )
            .await?;
            if let Some(c) = c.filter(|c| staticweb::applies(&ctx, &c.meta)) {
                if let Some(r) = staticweb::answer(&ctx, &c, trailing_slash).await {
                    return r;
                }
            }
        }
    }
    let cors = origin
        .zip(container)
        .map(|(o, c)| (o, c, ctx.target.account.clone(), ctx.state.clone()));
    let result = if ctx.target.object.is_some() {
        object::handle(ctx, body).await
    } else if ctx.target.container.is_some() {
        container::handle(ctx).await
    } else {
        account::handle(ctx).await
    };
    match cors {
        Some((origin, container, account, state)) => {
            let resp = result.unwrap_or_else(|f| f.into_response());
            Ok(cors::decorate(&state, &account, &container, &origin, resp).await)
        }
        None => result,
    }
}

/// What Python's `urllib.parse.quote` leaves as it is (unreserved
/// characters and `/`): how Swift quotes the paths it shows.
const QUOTE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Quotes a name or path as Swift shows it in headers, links and locations.
pub fn quote(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUOTE).to_string()
}

/// Copies the stored headers of `meta` into a response's headers.
pub fn put_meta(h: &mut HeaderMap, meta: &crate::table::Meta) {
    for (k, v) in meta {
        if k.starts_with("x-object-sysmeta-") {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(n, v);
        }
    }
}

/// Sets a response header from text (skipped if it is not a valid value).
pub fn set(h: &mut HeaderMap, name: &'static str, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_bytes(value.as_ref().as_bytes()) {
        h.insert(name, v);
    }
}

/// A response with no body and these headers.
pub fn empty(status: StatusCode, headers: HeaderMap) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    // Swift says so even on a 204 (and its clients read it).
    r.headers_mut()
        .entry("content-length")
        .or_insert(HeaderValue::from_static("0"));
    r
}

/// Applies a request's metadata headers with `prefix` to stored ones:
/// a value sets, an empty value or `X-Remove-…` removes.
pub fn apply_meta(headers: &HeaderMap, prefix: &str, meta: &mut crate::table::Meta) {
    let remove_prefix = format!("x-remove-{}", &prefix[2..]);
    for (name, value) in headers {
        let n = name.as_str();
        if let Some(k) = n.strip_prefix(prefix) {
            let v = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
            if v.is_empty() {
                meta.remove(n);
            } else {
                meta.insert(format!("{prefix}{k}"), v);
            }
        } else if let Some(k) = n.strip_prefix(remove_prefix.as_str()) {
            meta.remove(&format!("{prefix}{k}"));
        }
    }
}
