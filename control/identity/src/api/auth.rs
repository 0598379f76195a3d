//! Authentication: `POST/GET/HEAD/DELETE /v3/auth/tokens` and what a token
//! can see (`/v3/auth/catalog`, `/projects`, `/domains`, `/system`).

use super::{collection_links, Query};
use crate::model::{Model, RevokeBy, Target};
use crate::token::{method, Scope};
use crate::AppState;
use crate::{DomainRef, Proof, ScopeRequest, UserRef, Validated};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{Auth, Body};
use ursa_core::policy::enforce;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v3/auth/tokens",
            get(validate).post(issue).head(check).delete(revoke),
        )
        .route("/v3/auth/catalog", get(auth_catalog))
        .route("/v3/auth/projects", get(auth_projects))
        .route("/v3/auth/domains", get(auth_domains))
        .route("/v3/auth/system", get(auth_system))
}

pub fn timestamp(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn bad(msg: &str) -> Error {
    Error::BadRequest(msg.to_string())
}

fn obj<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| bad(&format!("'{field}' must be an object.")))
}

fn string(v: Option<&Value>, field: &str) -> Result<Option<String>> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(bad(&format!("'{field}' must be a non-empty string."))),
    }
}

fn domain_ref(v: Option<&Value>, field: &str) -> Result<DomainRef> {
    let d = obj(
        v.ok_or_else(|| bad(&format!("'{field}' is required.")))?,
        field,
    )?;
    if let Some(id) = string(d.get("id"), "domain.id")? {
        Ok(DomainRef::Id(id))
    } else if let Some(n) = string(d.get("name"), "domain.name")? {
        Ok(DomainRef::Name(n))
    } else {
        Err(bad(&format!("'{field}' needs an id or a name.")))
    }
}

fn user_ref(v: &Value) -> Result<UserRef> {
    let u = obj(v, "user")?;
    if let Some(id) = string(u.get("id"), "user.id")? {
        Ok(UserRef::Id(id))
    } else if let Some(name) = string(u.get("name"), "user.name")? {
        Ok(UserRef::Name {
            name,
            domain: domain_ref(u.get("domain"), "user.domain")?,
        })
    } else {
        Err(bad("'user' needs an id or a name and a domain."))
    }
}

/// Parses the `auth` object of a token request.
pub fn parse_auth(body: &Value) -> Result<(Vec<Proof>, ScopeRequest)> {
    let auth = obj(
        body.get("auth")
            .ok_or_else(|| bad("'auth' is a required property."))?,
        "auth",
    )?;
    let identity = obj(
        auth.get("identity")
            .ok_or_else(|| bad("'identity' is a required property."))?,
        "identity",
    )?;
    let methods = identity
        .get("methods")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("'methods' must be a list."))?;
    let mut proofs = Vec::new();
    for m in methods {
        let name = m
            .as_str()
            .ok_or_else(|| bad("a method must be a string."))?;
        let section = identity.get(name);
        let proof = match name {
            "password" => {
                let p = obj(
                    section.ok_or_else(|| bad("'password' is required."))?,
                    "password",
                )?;
                let user = p
                    .get("user")
                    .ok_or_else(|| bad("'password.user' is required."))?;
                let password = match obj(user, "user")?.get("password") {
                    Some(Value::String(s)) => s.clone(),
                    _ => return Err(bad("'password.user.password' must be a string.")),
                };
                Proof::Password {
                    user: user_ref(user)?,
                    password,
                }
            }
            "token" => {
                let t = obj(section.ok_or_else(|| bad("'token' is required."))?, "token")?;
                Proof::Token(
                    string(t.get("id"), "token.id")?
                        .ok_or_else(|| bad("'token.id' is required."))?,
                )
            }
            "application_credential" => {
                let a = obj(
                    section.ok_or_else(|| bad("'application_credential' is required."))?,
                    "application_credential",
                )?;
                let secret = string(a.get("secret"), "secret")?
                    .ok_or_else(|| bad("'secret' is required."))?;
                let id = string(a.get("id"), "id")?;
                let name = string(a.get("name"), "name")?;
                if id.is_none() && name.is_none() {
                    return Err(bad("an application credential needs an id or a name."));
                }
                let user = a.get("user").map(user_ref).transpose()?;
                Proof::AppCred {
                    id,
                    name,
                    user,
                    secret,
                }
            }
            other => {
                return Err(Error::Unauthorized(format!(
                    "Attempted to authenticate with an unsupported method: {other}."
                )))
            }
        };
        proofs.push(proof);
    }
    let scope = match auth.get("scope") {
        None | Some(Value::Null) => ScopeRequest::None,
        Some(Value::String(s)) if s == "unscoped" => ScopeRequest::None,
        Some(s) => {
            let s = obj(s, "scope")?;
            if let Some(p) = s.get("project") {
                let p = obj(p, "project")?;
                if let Some(id) = string(p.get("id"), "project.id")? {
                    ScopeRequest::ProjectId(id)
                } else if let Some(name) = string(p.get("name"), "project.name")? {
                    ScopeRequest::ProjectName {
                        name,
                        domain: domain_ref(p.get("domain"), "project.domain")?,
                    }
                } else {
                    return Err(bad("'scope.project' needs an id or a name and a domain."));
                }
            } else if s.contains_key("domain") {
                ScopeRequest::Domain(domain_ref(s.get("domain"), "scope.domain")?)
            } else if let Some(sys) = s.get("system") {
                if sys.get("all") == Some(&Value::Bool(true)) {
                    ScopeRequest::System
                } else {
                    return Err(bad("'scope.system' must be {\"all\": true}."));
                }
            } else if s.contains_key("OS-TRUST:trust") {
                return Err(Error::NotImplemented("Trusts are not supported.".into()));
            } else {
                return Err(bad("'scope' must name a project, a domain or the system."));
            }
        }
    };
    Ok((proofs, scope))
}

/// The markers an endpoint URL may carry for the token's project
/// (Keystone's URL substitution: `$(project_id)s`, `%(tenant_id)s`, …).
const PROJECT_MARKERS: &[&str] = &[
    "$(project_id)s",
    "%(project_id)s",
    "$(tenant_id)s",
    "%(tenant_id)s",
];

fn templated(url: &str) -> bool {
    PROJECT_MARKERS.iter().any(|k| url.contains(k))
}

fn substitute(text: &str, project_id: &str) -> String {
    PROJECT_MARKERS
        .iter()
        .fold(text.to_string(), |t, k| t.replace(k, project_id))
}

/// The catalog as a token scoped to `project` shows it: endpoint URLs
/// that name the project get its id; without a project they are left out.
pub fn catalog_for(m: &Model, project: Option<&str>) -> Value {
    let mut v = catalog(m);
    // OS-EP-FILTER: a project with associations sees those endpoints only.
    if let Some(allowed) = project.and_then(|p| super::endpoint_filter::allowed_endpoints(m, p)) {
        if let Some(services) = v.as_array_mut() {
            for s in services.iter_mut() {
                if let Some(eps) = s["endpoints"].as_array_mut() {
                    eps.retain(|e| e["id"].as_str().is_some_and(|id| allowed.contains(id)));
                }
            }
            services.retain(|s| s["endpoints"].as_array().is_some_and(|e| !e.is_empty()));
        }
    }
    match project {
        Some(p) => serde_json::from_str(&substitute(&v.to_string(), p)).unwrap_or(v),
        None => {
            let mut v = v;
            if let Some(services) = v.as_array_mut() {
                for s in services {
                    if let Some(eps) = s["endpoints"].as_array_mut() {
                        eps.retain(|e| !templated(e["url"].as_str().unwrap_or("")));
                    }
                }
            }
            v
        }
    }
}

/// The catalog with URLs as stored (markers unreplaced).
fn catalog(m: &Model) -> Value {
    let mut services: Vec<&Value> = m
        .docs_of("service")
        .filter(|s| s["enabled"] != false)
        .collect();
    services.sort_by_key(|s| s["type"].as_str().unwrap_or_default().to_string());
    Value::Array(
        services
            .into_iter()
            .map(|s| {
                let eps: Vec<Value> = m
                    .docs_of("endpoint")
                    .filter(|e| e["service_id"] == s["id"] && e["enabled"] != false)
                    .map(|e| {
                        json!({"id": e["id"], "interface": e["interface"], "region": e["region_id"],
                               "region_id": e["region_id"], "url": e["url"]})
                    })
                    .collect();
                json!({"id": s["id"], "type": s["type"], "name": s.get("name").cloned().unwrap_or(json!("")), "endpoints": eps})
            })
            .collect(),
    )
}

/// The catalog rendered once per change to services and endpoints
/// ([`Model::catalog_cache`]): every token carries it.
fn cached_catalog(m: &Model) -> std::sync::Arc<serde_json::value::RawValue> {
    m.catalog_cache
        .get_or_init(|| {
            let raw = serde_json::value::to_raw_value(&catalog(m)).expect("a JSON value renders");
            std::sync::Arc::from(raw)
        })
        .clone()
}

/// A token's body: its fields, and the catalog spliced in as rendered.
#[derive(serde::Serialize)]
pub struct TokenBody {
    token: TokenFields,
}

#[derive(serde::Serialize)]
struct TokenFields {
    #[serde(flatten)]
    fields: serde_json::Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog: Option<Rendered>,
}

/// Already-rendered JSON, shared.
struct Rendered(std::sync::Arc<serde_json::value::RawValue>);

impl serde::Serialize for Rendered {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

fn name_ref(m: &Model, domain_id: &str) -> Value {
    json!({"id": domain_id, "name": m.projects.get(domain_id).map(|d| d.name.as_str()).unwrap_or("")})
}

/// The body of a token (`{"token": {...}}`), as Keystone renders it.
pub fn token_body(m: &Model, v: &Validated, with_catalog: bool) -> TokenBody {
    let p = &v.payload;
    let user = m.users.get(&p.user_id);
    let mut t = json!({
        "methods": method::names(p.methods),
        "user": {
            "id": p.user_id,
            "name": user.map(|u| u.name.as_str()).unwrap_or(""),
            "domain": name_ref(m, user.map(|u| u.domain_id.as_str()).unwrap_or("")),
            "password_expires_at": null,
        },
        "audit_ids": p.audit_strings(),
        "expires_at": timestamp(p.expires_at),
        "issued_at": timestamp(p.issued_at),
    });
    let mut catalog = None;
    let o = t.as_object_mut().expect("object");
    match &p.scope {
        Scope::Unscoped => {}
        Scope::Project(pid) => {
            if let Some(pr) = m.projects.get(pid) {
                o.insert(
                    "project".into(),
                    json!({"id": pr.id, "name": pr.name, "domain": name_ref(m, &pr.domain_id)}),
                );
                o.insert("is_domain".into(), json!(false));
            }
        }
        Scope::Domain(d) => {
            o.insert("domain".into(), name_ref(m, d));
        }
        Scope::System => {
            o.insert("system".into(), json!({"all": true}));
        }
    }
    if p.scope != Scope::Unscoped {
        let roles: Vec<Value> = v
            .role_ids
            .iter()
            .filter_map(|r| m.roles.get(r))
            .map(|r| json!({"id": r.id, "name": r.name}))
            .collect();
        o.insert("roles".into(), Value::Array(roles));
        let filtered = match &p.scope {
            Scope::Project(pid) => super::endpoint_filter::allowed_endpoints(m, pid).is_some(),
            _ => false,
        };
        if with_catalog && filtered {
            // A project with endpoint associations: its own catalog.
            let pid = match &p.scope {
                Scope::Project(pid) => Some(pid.as_str()),
                _ => None,
            };
            let raw = serde_json::value::to_raw_value(&catalog_for(m, pid))
                .expect("a JSON value renders");
            catalog = Some(Rendered(std::sync::Arc::from(raw)));
        } else if with_catalog {
            let raw = cached_catalog(m);
            catalog = Some(if !templated(raw.get()) {
                Rendered(raw)
            } else {
                let raw = match &p.scope {
                    Scope::Project(pid) => {
                        serde_json::value::RawValue::from_string(substitute(raw.get(), pid))
                            .expect("ids keep JSON valid")
                    }
                    _ => serde_json::value::to_raw_value(&catalog_for(m, None))
                        .expect("a JSON value renders"),
                };
                Rendered(std::sync::Arc::from(raw))
            });
        }
    }
    if let Some(ac) = p.app_cred_id.as_ref().and_then(|a| m.app_creds.get(a)) {
        o.insert(
            "application_credential".into(),
            json!({"id": ac.id, "name": ac.name, "restricted": !ac.unrestricted}),
        );
    }
    let Value::Object(fields) = t else {
        unreachable!("built as an object")
    };
    TokenBody {
        token: TokenFields { fields, catalog },
    }
}

fn with_subject(token: &str, status: StatusCode, body: Option<TokenBody>) -> Response {
    let mut resp = match body {
        Some(b) => (status, Json(b)).into_response(),
        None => status.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(token) {
        resp.headers_mut().insert("x-subject-token", v);
    }
    resp
}

async fn issue(
    State(state): State<AppState>,
    q: Query,
    Body(body): Body<Value>,
) -> Result<Response> {
    let (proofs, scope) = parse_auth(&body)?;
    let (token, v) = state.identity.authenticate(proofs, scope).await?;
    let m = state.identity.model();
    let body = token_body(&m, &v, !q.contains_key("nocatalog"));
    Ok(with_subject(&token, StatusCode::CREATED, Some(body)))
}

fn subject(headers: &HeaderMap) -> Result<String> {
    headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| Error::BadRequest("X-Subject-Token is required.".into()))
}

fn validated_subject(
    state: &AppState,
    auth: &Auth,
    headers: &HeaderMap,
) -> Result<(String, Validated)> {
    let subj = subject(headers)?;
    let v = state.identity.validate(&subj)?;
    let c = &auth.0;
    enforce(
        c.is_reader_everywhere() || c.is_user(&v.payload.user_id),
        "validate_token",
    )?;
    Ok((subj, v))
}

async fn validate(
    State(state): State<AppState>,
    auth: Auth,
    q: Query,
    headers: HeaderMap,
) -> Result<Response> {
    let (subj, v) = validated_subject(&state, &auth, &headers)?;
    let m = state.identity.model();
    let body = token_body(&m, &v, !q.contains_key("nocatalog"));
    Ok(with_subject(&subj, StatusCode::OK, Some(body)))
}

async fn check(State(state): State<AppState>, auth: Auth, headers: HeaderMap) -> Result<Response> {
    let (subj, _) = validated_subject(&state, &auth, &headers)?;
    Ok(with_subject(&subj, StatusCode::OK, None))
}

async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let subj = subject(&headers)?;
    let v = state.identity.validate(&subj)?;
    let c = &auth.0;
    enforce(
        c.is_admin() || c.is_user(&v.payload.user_id),
        "revoke_token",
    )?;
    let audit = v.payload.audit_strings().remove(0);
    state.identity.revoke(RevokeBy::Audit, &audit).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn auth_catalog(State(state): State<AppState>, Auth(c): Auth) -> Result<Json<Value>> {
    if c.scope == Scope::Unscoped {
        return Err(Error::Forbidden(
            "The service catalog needs a scoped token.".into(),
        ));
    }
    let m = state.identity.model();
    Ok(Json(
        json!({"catalog": catalog_for(&m, match &c.scope { Scope::Project(p) => Some(p.as_str()), _ => None }), "links": collection_links(&state, "auth/catalog")}),
    ))
}

async fn auth_projects(State(state): State<AppState>, Auth(c): Auth) -> Result<Json<Value>> {
    let m = state.identity.model();
    let mut out: Vec<Value> = m
        .projects
        .values()
        .filter(|p| !p.is_domain && p.enabled)
        .filter(|p| {
            !m.effective_roles(&c.user_id, &Target::Project(p.id.clone()))
                .is_empty()
        })
        .map(|p| super::projects::project_json(&state, p))
        .collect();
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(
        json!({"projects": out, "links": collection_links(&state, "auth/projects")}),
    ))
}

async fn auth_domains(State(state): State<AppState>, Auth(c): Auth) -> Result<Json<Value>> {
    let m = state.identity.model();
    let out: Vec<Value> = m
        .projects
        .values()
        .filter(|p| p.is_domain && p.enabled)
        .filter(|p| {
            !m.effective_roles(&c.user_id, &Target::Domain(p.id.clone()))
                .is_empty()
        })
        .map(|p| super::domains::domain_json(&state, p))
        .collect();
    Ok(Json(
        json!({"domains": out, "links": collection_links(&state, "auth/domains")}),
    ))
}

async fn auth_system(State(state): State<AppState>, Auth(c): Auth) -> Result<Json<Value>> {
    let m = state.identity.model();
    let sys = if m.effective_roles(&c.user_id, &Target::System).is_empty() {
        json!([])
    } else {
        json!([{"all": true}])
    };
    Ok(Json(
        json!({"system": sys, "links": collection_links(&state, "auth/system")}),
    ))
}
