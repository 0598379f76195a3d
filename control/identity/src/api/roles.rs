//! Roles (`/v3/roles`, global or domain-specific) and implied roles
//! (`/v3/roles/{prior}/implies/{implied}`, `/v3/role_inferences`).

use super::{check_name, collection_links, member, opt_str, self_link, Query};
use crate::model::{kind, ImpliedRole, Model, Removal, Role};
use crate::new_id;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{Auth, Body};
use ursa_core::policy::{enforce, Caller};
use ursa_core::store::Op;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/roles", get(list).post(create))
        .route("/v3/roles/{id}", get(show).patch(update).delete(delete))
        .route("/v3/roles/{id}/implies", get(list_implies))
        .route(
            "/v3/roles/{prior}/implies/{implied}",
            get(show_implied)
                .head(check_implied)
                .put(create_implied)
                .delete(delete_implied),
        )
        .route("/v3/role_inferences", get(list_inferences))
}

pub fn role_json(state: &AppState, r: &Role) -> Value {
    super::merge_extra(
        json!({"id": r.id, "name": r.name, "domain_id": r.domain_id, "description": r.description,
               "options": r.options, "links": self_link(state, &format!("roles/{}", r.id))}),
        &r.extra,
    )
}

fn brief(state: &AppState, r: &Role) -> Value {
    json!({"id": r.id, "name": r.name, "links": self_link(state, &format!("roles/{}", r.id))})
}

pub fn found<'a>(m: &'a Model, id: &str) -> Result<&'a Role> {
    m.roles.get(id).ok_or_else(|| Error::not_found("role", id))
}

fn may_manage(c: &Caller, r_domain: Option<&str>) -> bool {
    match r_domain {
        None => c.is_admin(),
        Some(d) => c.may_manage_domain(d),
    }
}

fn put_role(r: &Role) -> Op {
    Op::put(
        kind::ROLE,
        &r.id,
        r.domain_id.as_deref().unwrap_or(""),
        &r.name,
        r,
    )
}

async fn list(State(state): State<AppState>, Auth(c): Auth, q: Query) -> Result<Json<Value>> {
    let domain = q.get("domain_id").cloned();
    enforce(
        c.is_reader_everywhere()
            || matches!(c.scope, crate::token::Scope::Domain(_))
            || c.has("reader"),
        "list_roles",
    )?;
    let m = state.identity.model();
    let mut out: Vec<&Role> = m
        .roles
        .values()
        .filter(|r| r.domain_id == domain)
        .filter(|r| q.get("name").is_none_or(|n| *n == r.name))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(json!({
        "roles": out.iter().map(|r| role_json(&state, r)).collect::<Vec<_>>(),
        "links": collection_links(&state, "roles"),
    })))
}

async fn create(
    State(state): State<AppState>,
    Auth(c): Auth,
    Body(body): Body<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let b = member(body, "role")?;
    let name = check_name(b.get("name"), "name", 255, true)?.expect("required");
    let domain_id = opt_str(b.get("domain_id"), "domain_id")?;
    enforce(may_manage(&c, domain_id.as_deref()), "create_role")?;
    let r = Role {
        id: new_id(),
        name,
        domain_id,
        description: opt_str(b.get("description"), "description")?,
        options: b
            .get("options")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        extra: super::take_extra(&b, &["name", "domain_id", "description", "options"]),
    };
    let r = state
        .identity
        .change(|m| {
            if let Some(d) = &r.domain_id {
                if m.domain(d).is_none() {
                    return Err(Error::BadRequest(format!("Domain {d} does not exist.")));
                }
            }
            if m.roles
                .values()
                .any(|x| x.name == r.name && x.domain_id == r.domain_id)
            {
                return Err(Error::Conflict(format!(
                    "Duplicate entry found with name {}.",
                    r.name
                )));
            }
            Ok((vec![put_role(&r)], r.clone()))
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"role": role_json(&state, &r)})),
    ))
}

async fn show(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let r = found(&m, &id)?;
    enforce(c.is_reader_everywhere() || c.has("reader"), "get_role")?;
    Ok(Json(json!({"role": role_json(&state, r)})))
}

async fn update(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(body): Body<Value>,
) -> Result<Json<Value>> {
    let b = member(body, "role")?;
    let r = state
        .identity
        .change(|m| {
            let mut r = found(m, &id)?.clone();
            enforce(may_manage(&c, r.domain_id.as_deref()), "update_role")?;
            if b.contains_key("domain_id")
                && opt_str(b.get("domain_id"), "domain_id")? != r.domain_id
            {
                return Err(Error::BadRequest(
                    "A role cannot move to another domain.".into(),
                ));
            }
            if let Some(n) = check_name(b.get("name"), "name", 255, false)? {
                if m.roles
                    .values()
                    .any(|x| x.name == n && x.domain_id == r.domain_id && x.id != id)
                {
                    return Err(Error::Conflict(format!(
                        "Duplicate entry found with name {n}."
                    )));
                }
                r.name = n;
            }
            if b.contains_key("description") {
                r.description = opt_str(b.get("description"), "description")?;
            }
            if let Some(o) = b.get("options").and_then(Value::as_object) {
                r.options.extend(o.clone());
            }
            r.extra.extend(super::take_extra(
                &b,
                &["name", "domain_id", "description", "options"],
            ));
            Ok((vec![put_role(&r)], r))
        })
        .await?;
    Ok(Json(json!({"role": role_json(&state, &r)})))
}

async fn delete(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state
        .identity
        .change(|m| {
            let r = found(m, &id)?;
            enforce(may_manage(&c, r.domain_id.as_deref()), "delete_role")?;
            let mut ops = m.dependents(&Removal {
                roles: vec![&id],
                ..Default::default()
            });
            ops.push(Op::delete(kind::ROLE, &id));
            Ok((ops, ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn inference(state: &AppState, m: &Model, prior: &str, implied: &str) -> Result<Value> {
    let p = found(m, prior)?;
    let i = found(m, implied)?;
    if !m
        .implied
        .contains(&(prior.to_string(), implied.to_string()))
    {
        return Err(Error::NotFound(format!(
            "Role {prior} does not imply {implied}."
        )));
    }
    Ok(
        json!({"role_inference": {"prior_role": brief(state, p), "implies": brief(state, i)},
              "links": self_link(state, &format!("roles/{prior}/implies/{implied}"))}),
    )
}

async fn show_implied(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((p, i)): Path<(String, String)>,
) -> Result<Json<Value>> {
    enforce(c.is_reader_everywhere(), "get_implied_role")?;
    Ok(Json(inference(&state, &state.identity.model(), &p, &i)?))
}

async fn check_implied(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((p, i)): Path<(String, String)>,
) -> Result<StatusCode> {
    enforce(c.is_reader_everywhere(), "check_implied_role")?;
    inference(&state, &state.identity.model(), &p, &i)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_implied(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((p, i)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>)> {
    enforce(c.is_admin(), "create_implied_role")?;
    state
        .identity
        .change(|m| {
            let prior = found(m, &p)?;
            let implied = found(m, &i)?;
            if implied.name == "admin" && implied.domain_id.is_none() {
                return Err(Error::Forbidden(
                    "The admin role may not be implied.".into(),
                ));
            }
            if prior.domain_id.is_none() && implied.domain_id.is_some() {
                return Err(Error::Forbidden(
                    "A global role may not imply a domain-specific role.".into(),
                ));
            }
            Ok((vec![ImpliedRole::op_put(&p, &i)], ()))
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(inference(&state, &state.identity.model(), &p, &i)?),
    ))
}

async fn delete_implied(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((p, i)): Path<(String, String)>,
) -> Result<StatusCode> {
    enforce(c.is_admin(), "delete_implied_role")?;
    state
        .identity
        .change(|m| {
            if !m.implied.contains(&(p.clone(), i.clone())) {
                return Err(Error::NotFound(format!("Role {p} does not imply {i}.")));
            }
            Ok((vec![ImpliedRole::op_delete(&p, &i)], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn implies_of(state: &AppState, m: &Model, prior: &Role) -> Value {
    let implies: Vec<Value> = m
        .implied
        .iter()
        .filter(|(p, _)| *p == prior.id)
        .filter_map(|(_, i)| m.roles.get(i))
        .map(|r| brief(state, r))
        .collect();
    json!({"prior_role": brief(state, prior), "implies": implies})
}

async fn list_implies(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    enforce(c.is_reader_everywhere(), "list_implied_roles")?;
    let m = state.identity.model();
    let prior = found(&m, &id)?;
    Ok(Json(
        json!({"role_inference": implies_of(&state, &m, prior),
                   "links": self_link(&state, &format!("roles/{id}/implies"))}),
    ))
}

async fn list_inferences(State(state): State<AppState>, Auth(c): Auth) -> Result<Json<Value>> {
    enforce(c.is_reader_everywhere(), "list_role_inference_rules")?;
    let m = state.identity.model();
    let mut priors: Vec<&String> = m.implied.iter().map(|(p, _)| p).collect();
    priors.dedup();
    let out: Vec<Value> = priors
        .into_iter()
        .filter_map(|p| m.roles.get(p))
        .map(|r| implies_of(&state, &m, r))
        .collect();
    Ok(Json(
        json!({"role_inferences": out, "links": collection_links(&state, "role_inferences")}),
    ))
}
