//! Logging in (domain, user, password → Keystone), switching projects,
//! logging out (the tokens are revoked, the session row deleted).

use crate::client::{Api, ApiError, ApiResult};
use crate::session::{self, Detail, ProjectRef, Session};
use crate::{back, cookie_of, Ctx, DashError, Dashboard, Result, COOKIE, LOGIN_COOKIE};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    domain: String,
    username: String,
    password: String,
    #[serde(default)]
    next: String,
}

#[derive(Serialize)]
struct LoginPage<'a> {
    csrf: &'a str,
    next: &'a str,
    error: Option<String>,
    domain: &'a str,
    username: &'a str,
}

/// Only a path of the dashboard itself is a place to go after login.
fn safe_next(next: &str) -> &str {
    if next.starts_with("/dashboard/") && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/dashboard/project/"
    }
}

pub async fn login_page(
    State(d): State<Dashboard>,
    Query(q): Query<LoginQuery>,
) -> Result<Response> {
    login_form(
        &d,
        q.next.as_deref().unwrap_or(""),
        None,
        "Default",
        "",
        StatusCode::OK,
    )
}

fn login_form(
    d: &Dashboard,
    next: &str,
    error: Option<String>,
    domain: &str,
    username: &str,
    status: StatusCode,
) -> Result<Response> {
    let csrf = session::secret();
    let mut r = d.render(
        "login.html",
        LoginPage {
            csrf: &csrf,
            next,
            error,
            domain,
            username,
        },
    )?;
    *r.status_mut() = status;
    let c = d.cookie(LOGIN_COOKIE, &csrf, "/dashboard/auth", Some(3600));
    if let Ok(v) = c.parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// A token as Keystone returns it (only what the dashboard keeps).
#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: String,
    user: Named,
    #[serde(default)]
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Named>,
    #[serde(default)]
    catalog: Vec<CatalogEntry>,
}

#[derive(Deserialize)]
struct Named {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct CatalogEntry {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Projects {
    projects: Vec<Named>,
}

/// Asks Keystone for a token; returns it with what it says.
async fn issue(d: &Dashboard, auth: serde_json::Value) -> ApiResult<(String, TokenInfo)> {
    let api = Api::new(d.app.clone(), "");
    let a = api
        .send_json(
            Method::POST,
            "/v3/auth/tokens",
            Some(&json!({ "auth": auth })),
        )
        .await?;
    let token = a
        .headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: TokenBody = serde_json::from_slice(&a.body).map_err(|e| ApiError {
        status: StatusCode::BAD_GATEWAY,
        message: format!("unexpected token: {e}"),
    })?;
    Ok((token, body.token))
}

fn expires_ms(iso: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(iso)
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|_| session::now_ms() + 3_600_000)
}

/// A token for `project`, from the unscoped one.
async fn scoped(d: &Dashboard, unscoped: &str, project: &str) -> ApiResult<(String, TokenInfo)> {
    issue(
        d,
        json!({"identity": {"methods": ["token"], "token": {"id": unscoped}},
               "scope": {"project": {"id": project}}}),
    )
    .await
}

fn detail(t: &TokenInfo, projects: Vec<ProjectRef>) -> Detail {
    Detail {
        project_name: t
            .project
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
        projects,
        roles: t.roles.iter().map(|r| r.name.clone()).collect(),
        services: t.catalog.iter().map(|c| c.kind.clone()).collect(),
    }
}

pub async fn login(State(d): State<Dashboard>, Form(f): Form<LoginForm>) -> Result<Response> {
    let domain = if f.domain.trim().is_empty() {
        "Default"
    } else {
        f.domain.trim()
    };
    let who = format!("{}/{}", domain.to_lowercase(), f.username);
    let again = |msg: String| {
        login_form(
            &d,
            &f.next,
            Some(msg),
            domain,
            &f.username,
            StatusCode::UNAUTHORIZED,
        )
    };
    let wait = session::wait_ms(&d.store, &who).await?;
    if wait > 0 {
        let mut r = again(format!(
            "Too many failed logins for this user: try again in {} s.",
            (wait + 999) / 1000
        ))?;
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return Ok(r);
    }
    let auth = json!({"identity": {"methods": ["password"], "password": {"user": {
        "name": f.username, "password": f.password, "domain": {"name": domain}}}}});
    let (unscoped, info) = match issue(&d, auth).await {
        Ok(t) => t,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            session::failed(&d.store, &who).await?;
            return again("Invalid credentials.".into());
        }
        Err(e) => return again(e.message),
    };
    session::succeeded(&d.store, &who).await?;
    let projects: Projects = Api::new(d.app.clone(), &unscoped)
        .get("/v3/auth/projects")
        .await?;
    let mut projects: Vec<ProjectRef> = projects
        .projects
        .into_iter()
        .map(|p| ProjectRef {
            id: p.id,
            name: p.name,
        })
        .collect();
    projects.sort_by(|a, b| a.name.cmp(&b.name));
    let Some(first) = projects.first() else {
        return again("You are not authorized for any projects.".into());
    };
    let (token, t) = scoped(&d, &unscoped, &first.id).await?;
    let cookie = session::secret();
    let s = Session {
        key: session::key_of(&cookie),
        user_id: info.user.id.clone(),
        user_name: info.user.name.clone(),
        domain: domain.to_string(),
        unscoped,
        token,
        project_id: first.id.clone(),
        csrf: session::secret(),
        expires_ms: expires_ms(&t.expires_at).min(expires_ms(&info.expires_at)),
        detail: detail(&t, projects.clone()),
    };
    session::insert(&d.store, &s).await?;
    tracing::info!(user = %s.user_name, "dashboard login");
    let max_age = ((s.expires_ms - session::now_ms()) / 1000).max(1);
    let mut r = Redirect::to(safe_next(&f.next)).into_response();
    let set = [
        d.cookie(COOKIE, &cookie, "/dashboard", Some(max_age)),
        d.cookie(LOGIN_COOKIE, "", "/dashboard/auth", Some(0)),
    ];
    for c in set {
        if let Ok(v) = c.parse() {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(r)
}

/// Revokes the tokens, deletes the session, clears the cookie.
pub async fn logout(c: Ctx) -> Result<Response> {
    let api = Api::new(c.d.app.clone(), &c.s.unscoped);
    for t in [&c.s.token, &c.s.unscoped] {
        let _ = api
            .send(
                Method::DELETE,
                "/v3/auth/tokens",
                &[("x-subject-token", t)],
                axum::body::Body::empty(),
            )
            .await;
    }
    session::delete(&c.d.store, &c.s.key).await?;
    let mut r = Redirect::to("/dashboard/auth/login").into_response();
    if let Ok(v) = c.d.cookie(COOKIE, "", "/dashboard", Some(0)).parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

#[derive(Deserialize)]
pub struct SwitchForm {
    project: String,
    #[serde(default)]
    next: String,
}

pub async fn switch(c: Ctx, Form(f): Form<SwitchForm>) -> Result<Response> {
    let Some(p) = c.s.detail.projects.iter().find(|p| p.id == f.project) else {
        return Err(DashError::BadRequest("No such project of yours.".into()));
    };
    let (token, t) = match scoped(&c.d, &c.s.unscoped, &p.id).await {
        Ok(x) => x,
        Err(e) => return Ok(back("/dashboard/project/", Err(e))),
    };
    let mut s = c.s.clone();
    s.token = token;
    s.project_id = p.id.clone();
    s.expires_ms = expires_ms(&t.expires_at).min(s.expires_ms);
    s.detail = detail(&t, s.detail.projects.clone());
    session::rescope(&c.d.store, &s).await?;
    let to = if f.next.starts_with("/dashboard/identity") {
        f.next.as_str()
    } else {
        "/dashboard/project/"
    };
    Ok(back(to, Ok(format!("Switched to project \"{}\".", p.name))))
}

/// `/dashboard` and `/dashboard/`: the project overview (or the login).
pub async fn home(headers: HeaderMap) -> Response {
    if cookie_of(&headers, COOKIE).is_some() {
        Redirect::to("/dashboard/project/").into_response()
    } else {
        Redirect::to("/dashboard/auth/login").into_response()
    }
}

/// Text for a page that has nothing else (kept for the 404 of unknown
/// panels).
pub async fn not_found() -> Response {
    DashError::Api(ApiError {
        status: StatusCode::NOT_FOUND,
        message: "No such page.".into(),
    })
    .into_response()
}
