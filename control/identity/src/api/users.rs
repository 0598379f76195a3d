//! Users (`/v3/users`), a user's own password change, groups and projects,
//! and application credentials (`/v3/users/{id}/application_credentials`).

use super::{
    check_name, collection_links, member, opt_bool, opt_str, query_bool, self_link, Query,
};
use crate::api::auth::timestamp;
use crate::model::{kind, AppCred, Model, Removal, RevokeBy, Target, User};
use crate::AppState;
use crate::{new_id, now_us, sha256_hex};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::distributions::{Alphanumeric, DistString};
use serde::Deserialize;
use serde_json::{json, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{Auth, Body};
use ursa_core::policy::{enforce, Caller};
use ursa_core::store::Op;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/users", get(list).post(create))
        .route("/v3/users/{id}", get(show).patch(update).delete(delete))
        .route("/v3/users/{id}/password", post(change_password))
        .route("/v3/users/{id}/groups", get(user_groups))
        .route("/v3/users/{id}/projects", get(user_projects))
        .route(
            "/v3/users/{id}/application_credentials",
            get(ac_list).post(ac_create),
        )
        .route(
            "/v3/users/{id}/application_credentials/{ac}",
            get(ac_show).delete(ac_delete),
        )
        .route(
            "/v3/users/{id}/access_rules",
            get(super::access_rules::list),
        )
        .route(
            "/v3/users/{id}/access_rules/{rule}",
            get(super::access_rules::show).delete(super::access_rules::delete),
        )
}

pub fn user_json(state: &AppState, u: &User) -> Value {
    let mut v = json!({
        "id": u.id, "name": u.name, "domain_id": u.domain_id, "enabled": u.enabled,
        "password_expires_at": null, "options": u.options,
        "links": self_link(state, &format!("users/{}", u.id)),
    });
    if let Some(p) = &u.default_project_id {
        v["default_project_id"] = json!(p);
    }
    super::merge_extra(v, &u.extra)
}

fn found<'a>(m: &'a Model, id: &str) -> Result<&'a User> {
    m.users.get(id).ok_or_else(|| Error::not_found("user", id))
}

fn put_user(u: &User) -> Op {
    Op::put(kind::USER, &u.id, &u.domain_id, &u.name, u)
}

const KNOWN: &[&str] = &[
    "name",
    "domain_id",
    "enabled",
    "default_project_id",
    "password",
    "options",
    "password_expires_at",
];

fn check_password_field(v: Option<&Value>) -> Result<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 4096 => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(Error::BadRequest("'password' is too long.".into())),
        Some(_) => Err(Error::BadRequest("'password' must be a string.".into())),
    }
}

async fn list(State(state): State<AppState>, Auth(c): Auth, q: Query) -> Result<Json<Value>> {
    let scoped_domain = c.scoped_domain().map(str::to_string);
    enforce(
        c.is_reader_everywhere() || (scoped_domain.is_some() && c.has("reader")),
        "list_users",
    )?;
    let m = state.identity.model();
    let mut out: Vec<&User> = m
        .users
        .values()
        .filter(|u| c.may_read_domain(&u.domain_id))
        .filter(|u| q.get("domain_id").is_none_or(|d| *d == u.domain_id))
        .filter(|u| q.get("name").is_none_or(|n| *n == u.name))
        .filter(|u| q.get("enabled").is_none_or(|e| query_bool(e) == u.enabled))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(json!({
        "users": out.iter().map(|u| user_json(&state, u)).collect::<Vec<_>>(),
        "links": collection_links(&state, "users"),
    })))
}

async fn create(
    State(state): State<AppState>,
    Auth(c): Auth,
    Body(body): Body<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let b = member(body, "user")?;
    let name = check_name(b.get("name"), "name", 255, true)?.expect("required");
    let domain_id = opt_str(b.get("domain_id"), "domain_id")?.unwrap_or_else(|| c.default_domain());
    enforce(c.may_manage_domain(&domain_id), "create_user")?;
    let password = check_password_field(b.get("password"))?;
    let hash = match &password {
        Some(p) => Some(state.identity.hasher().hash(p).await),
        None => None,
    };
    let u = User {
        id: new_id(),
        name,
        domain_id,
        enabled: opt_bool(b.get("enabled"), "enabled")?.unwrap_or(true),
        default_project_id: opt_str(b.get("default_project_id"), "default_project_id")?,
        password_hash: hash,
        options: b
            .get("options")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        extra: super::take_extra(&b, KNOWN),
    };
    let u = state
        .identity
        .change(|m| {
            if m.domain(&u.domain_id).is_none() {
                return Err(Error::not_found("domain", &u.domain_id));
            }
            if m.user_by_name(&u.domain_id, &u.name).is_some() {
                return Err(Error::Conflict(format!(
                    "Duplicate entry found with name {} in domain {}.",
                    u.name, u.domain_id
                )));
            }
            Ok((vec![put_user(&u)], u.clone()))
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": user_json(&state, &u)})),
    ))
}

async fn show(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let u = found(&m, &id)?;
    enforce(
        c.is_user(&id) || c.may_read_domain(&u.domain_id),
        "get_user",
    )?;
    Ok(Json(json!({"user": user_json(&state, u)})))
}

async fn update(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(body): Body<Value>,
) -> Result<Json<Value>> {
    let b = member(body, "user")?;
    {
        let m = state.identity.model();
        enforce(
            c.may_manage_domain(&found(&m, &id)?.domain_id),
            "update_user",
        )?;
    }
    let password = check_password_field(b.get("password"))?;
    let hash = match &password {
        Some(p) => Some(state.identity.hasher().hash(p).await),
        None => None,
    };
    let (u, revoke) = state
        .identity
        .change(|m| {
            let mut u = found(m, &id)?.clone();
            if let Some(d) = opt_str(b.get("domain_id"), "domain_id")? {
                if d != u.domain_id {
                    return Err(Error::BadRequest(
                        "A user cannot move to another domain.".into(),
                    ));
                }
            }
            if let Some(n) = check_name(b.get("name"), "name", 255, false)? {
                if m.user_by_name(&u.domain_id, &n).is_some_and(|o| o.id != id) {
                    return Err(Error::Conflict(format!(
                        "Duplicate entry found with name {n}."
                    )));
                }
                u.name = n;
            }
            let mut revoke = false;
            if let Some(e) = opt_bool(b.get("enabled"), "enabled")? {
                revoke |= u.enabled && !e;
                u.enabled = e;
            }
            if b.contains_key("default_project_id") {
                u.default_project_id = opt_str(b.get("default_project_id"), "default_project_id")?;
            }
            if let Some(h) = &hash {
                u.password_hash = Some(h.clone());
                revoke = true;
            }
            if let Some(o) = b.get("options").and_then(Value::as_object) {
                u.options.extend(o.clone());
            }
            u.extra.extend(super::take_extra(&b, KNOWN));
            Ok((vec![put_user(&u)], (u, revoke)))
        })
        .await?;
    if revoke {
        state.identity.revoke(RevokeBy::User, &u.id).await?;
    }
    Ok(Json(json!({"user": user_json(&state, &u)})))
}

async fn delete(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state
        .identity
        .change(|m| {
            let u = found(m, &id)?;
            enforce(c.may_manage_domain(&u.domain_id), "delete_user")?;
            let mut ops = m.dependents(&Removal {
                users: vec![&id],
                ..Default::default()
            });
            ops.push(Op::delete(kind::USER, &id));
            Ok((ops, ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    user: PasswordChangeUser,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChangeUser {
    password: String,
    original_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body<PasswordChange>,
) -> Result<StatusCode> {
    // Keystone lets a user change their own password with the old one as
    // proof, without a token.
    let stored = {
        let m = state.identity.model();
        found(&m, &id)?.password_hash.clone()
    };
    if !state
        .identity
        .hasher()
        .verify(&b.user.original_password, stored.as_deref())
        .await
    {
        return Err(Error::Unauthorized(
            "The request you have made requires authentication.".into(),
        ));
    }
    check_password_field(Some(&Value::String(b.user.password.clone())))?;
    let hash = state.identity.hasher().hash(&b.user.password).await;
    state
        .identity
        .change(|m| {
            let mut u = found(m, &id)?.clone();
            u.password_hash = Some(hash.clone());
            Ok((vec![put_user(&u)], ()))
        })
        .await?;
    state.identity.revoke(RevokeBy::User, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn check_self_or_reader(c: &Caller, m: &Model, id: &str, action: &str) -> Result<()> {
    let u = found(m, id)?;
    enforce(c.is_user(id) || c.may_read_domain(&u.domain_id), action)
}

async fn user_groups(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    check_self_or_reader(&c, &m, &id, "list_groups_for_user")?;
    let groups: Vec<Value> = m
        .user_groups(&id)
        .filter_map(|g| m.groups.get(g))
        .map(|g| super::groups::group_json(&state, g))
        .collect();
    Ok(Json(
        json!({"groups": groups, "links": collection_links(&state, &format!("users/{id}/groups"))}),
    ))
}

async fn user_projects(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    check_self_or_reader(&c, &m, &id, "list_user_projects")?;
    let mut out: Vec<Value> = m
        .projects
        .values()
        .filter(|p| !p.is_domain)
        .filter(|p| {
            !m.assignments_for(&id, &Target::Project(p.id.clone()))
                .is_empty()
        })
        .map(|p| super::projects::project_json(&state, p))
        .collect();
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(
        json!({"projects": out, "links": collection_links(&state, &format!("users/{id}/projects"))}),
    ))
}

// ---- application credentials -------------------------------------------

fn ac_json(m: &Model, ac: &AppCred) -> Value {
    json!({
        "id": ac.id, "name": ac.name, "description": ac.description, "user_id": ac.user_id,
        "project_id": ac.project_id, "unrestricted": ac.unrestricted,
        "access_rules": ac.access_rules.iter().map(super::access_rules::rule_json).collect::<Vec<_>>(),
        "expires_at": ac.expires_at.map(|t| timestamp(t).trim_end_matches('Z').to_string()),
        "roles": ac.role_ids.iter().filter_map(|r| m.roles.get(r))
            .map(|r| json!({"id": r.id, "name": r.name, "domain_id": r.domain_id})).collect::<Vec<_>>(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcCreate {
    application_credential: AcBody,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    roles: Option<Vec<RoleRef>>,
    #[serde(default)]
    unrestricted: Option<bool>,
    #[serde(default)]
    access_rules: Option<Vec<super::access_rules::RuleIn>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleRef {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain_id: Option<String>,
}

fn parse_time(s: &str) -> Result<i64> {
    let bad = || Error::BadRequest(format!("Invalid time {s:?}: use ISO 8601."));
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    let naive = s.trim_end_matches('Z');
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(naive, f) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    Err(bad())
}

async fn ac_create(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(b): Body<AcCreate>,
) -> Result<(StatusCode, Json<Value>)> {
    enforce(c.is_user(&id), "create_application_credential")?;
    if c.app_cred_id.is_some() {
        return Err(Error::Forbidden(
            "An application credential cannot create another.".into(),
        ));
    }
    let b = b.application_credential;
    check_name(Some(&Value::String(b.name.clone())), "name", 255, true)?;
    for r in b.access_rules.iter().flatten() {
        r.check()?;
    }
    let project_id = c
        .project_id()
        .ok_or_else(|| {
            Error::Forbidden("Application credentials need a project-scoped token.".into())
        })?
        .to_string();
    let expires_at = b.expires_at.as_deref().map(parse_time).transpose()?;
    if expires_at.is_some_and(|e| e <= now_us()) {
        return Err(Error::BadRequest("expires_at is in the past.".into()));
    }
    let secret = b
        .secret
        .clone()
        .unwrap_or_else(|| Alphanumeric.sample_string(&mut rand::thread_rng(), 64));
    let (ac, body) = state
        .identity
        .change(|m| {
            let mine = m.effective_roles(&id, &Target::Project(project_id.clone()));
            let role_ids: Vec<String> = match &b.roles {
                None => mine.iter().cloned().collect(),
                Some(refs) => {
                    let mut out = Vec::new();
                    for r in refs {
                        let role = match (&r.id, &r.name) {
                            (Some(rid), _) => m.roles.get(rid),
                            (None, Some(n)) => m
                                .roles
                                .values()
                                .find(|x| x.name == *n && x.domain_id == r.domain_id),
                            _ => None,
                        }
                        .ok_or_else(|| Error::NotFound("Could not find the role.".into()))?;
                        if !mine.contains(&role.id) {
                            return Err(Error::Forbidden(format!(
                                "You do not have role {} on the project.",
                                role.name
                            )));
                        }
                        out.push(role.id.clone());
                    }
                    out
                }
            };
            if m.app_creds
                .values()
                .any(|a| a.user_id == id && a.name == b.name)
            {
                return Err(Error::Conflict(format!(
                    "An application credential named {} already exists.",
                    b.name
                )));
            }
            let (access_rules, rule_ops) =
                super::access_rules::resolve(m, &id, b.access_rules.as_deref().unwrap_or(&[]))?;
            let ac = AppCred {
                access_rules,
                id: new_id(),
                name: b.name.clone(),
                user_id: id.clone(),
                project_id: project_id.clone(),
                description: b.description.clone(),
                secret_hash: sha256_hex(&secret),
                role_ids,
                expires_at,
                unrestricted: b.unrestricted.unwrap_or(false),
            };
            let body = ac_json(m, &ac);
            let mut ops = rule_ops;
            ops.push(Op::put(kind::APP_CRED, &ac.id, &ac.user_id, &ac.name, &ac));
            Ok((ops, (ac, body)))
        })
        .await?;
    let mut body = body;
    body["secret"] = json!(secret);
    body["links"] = self_link(
        &state,
        &format!("users/{id}/application_credentials/{}", ac.id),
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({"application_credential": body})),
    ))
}

fn ac_read_allowed(c: &Caller, m: &Model, user_id: &str) -> Result<()> {
    let u = found(m, user_id)?;
    enforce(
        c.is_user(user_id) || c.may_read_domain(&u.domain_id),
        "get_application_credential",
    )
}

async fn ac_list(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    q: Query,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    ac_read_allowed(&c, &m, &id)?;
    let out: Vec<Value> = m
        .app_creds
        .values()
        .filter(|a| a.user_id == id)
        .filter(|a| q.get("name").is_none_or(|n| *n == a.name))
        .map(|a| {
            let mut v = ac_json(&m, a);
            v["links"] = self_link(
                &state,
                &format!("users/{id}/application_credentials/{}", a.id),
            );
            v
        })
        .collect();
    Ok(Json(
        json!({"application_credentials": out, "links": collection_links(&state, &format!("users/{id}/application_credentials"))}),
    ))
}

async fn ac_show(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, ac)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    ac_read_allowed(&c, &m, &id)?;
    let a = m
        .app_creds
        .get(&ac)
        .filter(|a| a.user_id == id)
        .ok_or_else(|| Error::not_found("application credential", &ac))?;
    let mut v = ac_json(&m, a);
    v["links"] = self_link(&state, &format!("users/{id}/application_credentials/{ac}"));
    Ok(Json(json!({"application_credential": v})))
}

async fn ac_delete(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, ac)): Path<(String, String)>,
) -> Result<StatusCode> {
    state
        .identity
        .change(|m| {
            let u = found(m, &id)?;
            enforce(
                c.is_user(&id) || c.may_manage_domain(&u.domain_id),
                "delete_application_credential",
            )?;
            if m.app_creds.get(&ac).is_none_or(|a| a.user_id != id) {
                return Err(Error::not_found("application credential", &ac));
            }
            Ok((vec![Op::delete(kind::APP_CRED, &ac)], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
