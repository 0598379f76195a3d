//! The dashboard: Horizon's job, served by `ursa up` at `/dashboard`.
//!
//! Pages are rendered on the server from templates ([`minijinja`], with
//! HTML auto-escaping: every name, description and metadata value is
//! text), with one small script of our own (`static/dashboard.js`: live
//! status, confirmations, the upload's progress) and no build step or
//! anything fetched from outside.
//!
//! The dashboard has no back door: every read and every change goes to
//! the services' own APIs in-process ([`client::Api`]), with the logged-in
//! user's token, so policy and project scoping are exactly the CLI's.
//! Sessions are rows of the control plane's database ([`session`]), so
//! any controller serves any session; a session ends with its token, and
//! logging out revokes the token.
//!
//! Every request passes [`guard`]: it finds the session (or sends a
//! browser to the login page), checks the CSRF token of every non-GET
//! request (403 without it) and sets the security headers (a strict
//! Content-Security-Policy with no inline script, `frame-ancestors
//! 'none'`). Panels ([`views`]) turn API answers, parsed into typed
//! structs, into the [`page`] shapes the templates draw; tables page, sort
//! and filter through the APIs' own `limit`/`marker`/`sort_key`.

pub mod client;
pub mod page;
pub mod session;
pub mod views;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Router;
use client::{Api, ApiError};
use serde::Serialize;
use session::Session;
use std::sync::Arc;
use ursa_core::http::InProcess;
use ursa_core::store::Store;

/// The session cookie.
pub const COOKIE: &str = "ursa_session";
/// The login form's CSRF cookie (double submit: there is no session yet).
pub const LOGIN_COOKIE: &str = "ursa_login_csrf";

/// The dashboard's state; cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    pub store: Store,
    pub app: InProcess,
    /// Cookies are `Secure` (the public URL is HTTPS).
    pub secure: bool,
    views: Arc<minijinja::Environment<'static>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DashError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("session store: {0}")]
    Session(#[from] session::SessionError),
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(&'static str),
}

pub type Result<T> = std::result::Result<T, DashError>;

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let status = match &self {
            // The session's token stopped working: log in again.
            DashError::Api(e) if e.status == StatusCode::UNAUTHORIZED => {
                return Redirect::to("/dashboard/auth/login").into_response()
            }
            DashError::Api(e) => e.status,
            DashError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DashError::Forbidden(_) => StatusCode::FORBIDDEN,
            DashError::Session(_) | DashError::Template(_) => {
                tracing::error!(error = %self, "dashboard");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Error - Ursa\
             </title><link rel=\"stylesheet\" href=\"/dashboard/static/dashboard.css\"></head>\
             <body><main class=\"error\"><h1>{} {}</h1><div class=\"alert err\">Error: {}</div>\
             <p><a href=\"/dashboard/\">Back to the dashboard</a></p></main></body></html>",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            escape(&self.to_string())
        );
        secured(
            (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                body,
            )
                .into_response(),
        )
    }
}

/// HTML-escapes text for the few pages drawn without a template.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#x27;"),
            c => o.push(c),
        }
    }
    o
}

impl Dashboard {
    /// Runs the dashboard's migrations (before [`Dashboard::new`]).
    pub async fn migrate(store: &Store) -> Result<()> {
        Ok(session::migrate(store).await?)
    }

    /// The dashboard over `app` (the whole application, set once it is
    /// assembled); loads its templates.
    pub fn new(store: Store, app: InProcess, base_url: &str) -> Result<Dashboard> {
        Ok(Dashboard {
            store,
            app,
            secure: base_url.starts_with("https://"),
            views: Arc::new(views::templates()?),
        })
    }

    /// The `Set-Cookie` value for `name`.
    pub fn cookie(&self, name: &str, value: &str, path: &str, max_age: Option<i64>) -> String {
        let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
        if let Some(a) = max_age {
            c.push_str(&format!("; Max-Age={a}"));
        }
        if self.secure {
            c.push_str("; Secure");
        }
        c
    }

    pub fn render(&self, name: &str, ctx: impl Serialize) -> Result<Response> {
        let html = self
            .views
            .get_template(name)?
            .render(minijinja::Value::from(minijinja::value::Serde(&ctx)))?;
        Ok((
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response())
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie_of<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The security headers every dashboard answer carries.
fn secured(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// Finds the session, checks CSRF, sets the security headers.
pub async fn guard(State(d): State<Dashboard>, req: Request, next: Next) -> Response {
    match check(&d, req).await {
        Ok(req) => secured(next.run(req).await),
        Err(r) => secured(r),
    }
}

async fn check(d: &Dashboard, req: Request) -> std::result::Result<Request, Response> {
    let path = req.uri().path().to_string();
    if path.starts_with("/dashboard/static/") {
        return Ok(req);
    }
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD);
    if path == "/dashboard/auth/login" {
        if !writes {
            return Ok(req);
        }
        let want = cookie_of(req.headers(), LOGIN_COOKIE).map(str::to_string);
        return csrf_checked(req, want.as_deref()).await;
    }
    let found = match cookie_of(req.headers(), COOKIE) {
        Some(c) => session::find(&d.store, c)
            .await
            .map_err(|e| DashError::from(e).into_response())?,
        None => None,
    };
    let Some(s) = found else {
        if writes {
            return Err(
                DashError::Forbidden("Your session has ended: log in again.").into_response(),
            );
        }
        let next = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/dashboard/");
        return Err(
            Redirect::to(&format!("/dashboard/auth/login?next={}", client::enc(next)))
                .into_response(),
        );
    };
    let mut req = if writes {
        csrf_checked(req, Some(&s.csrf)).await?
    } else {
        req
    };
    req.extensions_mut().insert(s);
    Ok(req)
}

/// The request, when it carries `want` as its `X-CSRF-Token` header or
/// its form's `csrf` field; 403 otherwise.
async fn csrf_checked(req: Request, want: Option<&str>) -> std::result::Result<Request, Response> {
    let refuse = || DashError::Forbidden("CSRF verification failed.").into_response();
    let Some(want) = want.filter(|w| !w.is_empty()) else {
        return Err(refuse());
    };
    if let Some(h) = req.headers().get("x-csrf-token") {
        return match h.to_str() {
            Ok(v) if session::same(v, want) => Ok(req),
            _ => Err(refuse()),
        };
    }
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Err(refuse());
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.map_err(|_| {
        DashError::BadRequest("The form is larger than 1 MiB.".into()).into_response()
    })?;
    let ok = form_urlencoded::parse(&bytes).any(|(k, v)| k == "csrf" && session::same(&v, want));
    if !ok {
        return Err(refuse());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// What a panel handler works with: the dashboard, the session, the
/// user's view of the APIs, and the message of the last change.
pub struct Ctx {
    /// The page's path (the navigation marks it).
    pub path: String,
    pub d: Dashboard,
    pub s: Session,
    pub api: Api,
    pub flash: Flash,
}

/// The outcome of the change a redirect follows (`?ok=` / `?err=`).
#[derive(Serialize, serde::Deserialize, Default, Clone)]
pub struct Flash {
    pub ok: Option<String>,
    pub err: Option<String>,
}

impl FromRequestParts<Dashboard> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        d: &Dashboard,
    ) -> std::result::Result<Ctx, Response> {
        let Some(s) = parts.extensions.get::<Session>().cloned() else {
            return Err(Redirect::to("/dashboard/auth/login").into_response());
        };
        let flash = parts.uri.query().map(flash_of).unwrap_or_default();
        Ok(Ctx {
            path: parts.uri.path().to_string(),
            api: Api::new(d.app.clone(), &s.token),
            d: d.clone(),
            s,
            flash,
        })
    }
}

fn flash_of(q: &str) -> Flash {
    let mut f = Flash::default();
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        match &*k {
            "ok" => f.ok = Some(v.into_owned()),
            "err" => f.err = Some(v.into_owned()),
            _ => {}
        }
    }
    f
}

impl Ctx {
    /// Draws `template` inside the frame (navigation, switcher, messages).
    pub fn page(&self, template: &str, title: &str, body: impl Serialize) -> Result<Response> {
        #[derive(Serialize)]
        struct Frame<'a, B> {
            title: &'a str,
            path: &'a str,
            user: &'a str,
            project: &'a str,
            project_id: &'a str,
            projects: &'a [session::ProjectRef],
            csrf: &'a str,
            nav: Vec<page::NavGroup>,
            flash: &'a Flash,
            admin: bool,
            body: B,
        }
        self.d.render(
            template,
            Frame {
                title,
                path: &self.path,
                user: &self.s.user_name,
                project: &self.s.detail.project_name,
                project_id: &self.s.project_id,
                projects: &self.s.detail.projects,
                csrf: &self.s.csrf,
                nav: page::grouped(&self.s),
                flash: &self.flash,
                admin: self.s.is_admin(),
                body,
            },
        )
    }

    pub fn panel(&self, p: page::Panel) -> Result<Response> {
        let title = p.title.clone();
        self.page("panel.html", &title, p)
    }
}

/// After a change: back to `to`, saying how it went (Horizon's
/// "Success: …" / "Error: …" messages).
pub fn back(to: &str, outcome: std::result::Result<String, ApiError>) -> Response {
    let (k, v) = match outcome {
        Ok(m) => ("ok", m),
        Err(e) => ("err", e.message),
    };
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{sep}{k}={}", client::enc(&v))).into_response()
}

/// A form body parsed once into `T` (repeated fields into lists); a body
/// that does not fit is a 400 naming why.
pub struct Form<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Form<T> {
    type Rejection = DashError;

    async fn from_request(req: Request, state: &S) -> Result<Form<T>> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| DashError::BadRequest(format!("The form could not be read: {e}")))?;
        serde_html_form::from_bytes(&bytes)
            .map(Form)
            .map_err(|e| DashError::BadRequest(format!("The form is not valid: {e}")))
    }
}

/// Every dashboard route, behind [`guard`].
pub fn routes(d: Dashboard) -> Router {
    views::routes()
        .layer(axum::middleware::from_fn_with_state(d.clone(), guard))
        .with_state(d)
}

/// Removes the expired sessions (run now and then by a duty).
pub async fn prune(d: &Dashboard) -> Result<u64> {
    Ok(session::prune(&d.store).await?)
}
