//! Groups (`/v3/groups`) and their membership.

use super::{check_name, collection_links, member, opt_str, self_link, Query};
use crate::model::{kind, Group, Membership, Model, Removal};
use crate::new_id;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{Auth, Body};
use ursa_core::policy::enforce;
use ursa_core::store::Op;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/groups", get(list).post(create))
        .route("/v3/groups/{id}", get(show).patch(update).delete(delete))
        .route("/v3/groups/{id}/users", get(members))
        .route(
            "/v3/groups/{id}/users/{user}",
            get(check_member).put(add_member).delete(remove_member),
        )
}

pub fn group_json(state: &AppState, g: &Group) -> Value {
    super::merge_extra(
        json!({"id": g.id, "name": g.name, "domain_id": g.domain_id, "description": g.description,
               "links": self_link(state, &format!("groups/{}", g.id))}),
        &g.extra,
    )
}

fn found<'a>(m: &'a Model, id: &str) -> Result<&'a Group> {
    m.groups
        .get(id)
        .ok_or_else(|| Error::not_found("group", id))
}

fn put_group(g: &Group) -> Op {
    Op::put(kind::GROUP, &g.id, &g.domain_id, &g.name, g)
}

async fn list(State(state): State<AppState>, Auth(c): Auth, q: Query) -> Result<Json<Value>> {
    enforce(
        c.is_reader_everywhere() || matches!(c.scope, crate::token::Scope::Domain(_)),
        "list_groups",
    )?;
    let m = state.identity.model();
    let mut out: Vec<&Group> = m
        .groups
        .values()
        .filter(|g| c.may_read_domain(&g.domain_id))
        .filter(|g| q.get("domain_id").is_none_or(|d| *d == g.domain_id))
        .filter(|g| q.get("name").is_none_or(|n| *n == g.name))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(json!({
        "groups": out.iter().map(|g| group_json(&state, g)).collect::<Vec<_>>(),
        "links": collection_links(&state, "groups"),
    })))
}

async fn create(
    State(state): State<AppState>,
    Auth(c): Auth,
    Body(body): Body<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let b = member(body, "group")?;
    let name = check_name(b.get("name"), "name", 64, true)?.expect("required");
    let domain_id = opt_str(b.get("domain_id"), "domain_id")?.unwrap_or_else(|| c.default_domain());
    enforce(c.may_manage_domain(&domain_id), "create_group")?;
    let g = Group {
        id: new_id(),
        name,
        domain_id,
        description: opt_str(b.get("description"), "description")?.unwrap_or_default(),
        extra: super::take_extra(&b, &["name", "domain_id", "description"]),
    };
    let g = state
        .identity
        .change(|m| {
            if m.domain(&g.domain_id).is_none() {
                return Err(Error::BadRequest(format!(
                    "Domain {} does not exist.",
                    g.domain_id
                )));
            }
            if m.groups
                .values()
                .any(|x| x.domain_id == g.domain_id && x.name == g.name)
            {
                return Err(Error::Conflict(format!(
                    "Duplicate entry found with name {}.",
                    g.name
                )));
            }
            Ok((vec![put_group(&g)], g.clone()))
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"group": group_json(&state, &g)})),
    ))
}

async fn show(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let g = found(&m, &id)?;
    let member = m.memberships.contains(&(id.clone(), c.user_id.clone()));
    enforce(member || c.may_read_domain(&g.domain_id), "get_group")?;
    Ok(Json(json!({"group": group_json(&state, g)})))
}

async fn update(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(body): Body<Value>,
) -> Result<Json<Value>> {
    let b = member(body, "group")?;
    let g = state
        .identity
        .change(|m| {
            let mut g = found(m, &id)?.clone();
            enforce(c.may_manage_domain(&g.domain_id), "update_group")?;
            if let Some(n) = check_name(b.get("name"), "name", 64, false)? {
                if m.groups
                    .values()
                    .any(|x| x.domain_id == g.domain_id && x.name == n && x.id != id)
                {
                    return Err(Error::Conflict(format!(
                        "Duplicate entry found with name {n}."
                    )));
                }
                g.name = n;
            }
            if b.contains_key("description") {
                g.description = opt_str(b.get("description"), "description")?.unwrap_or_default();
            }
            g.extra
                .extend(super::take_extra(&b, &["name", "domain_id", "description"]));
            Ok((vec![put_group(&g)], g))
        })
        .await?;
    Ok(Json(json!({"group": group_json(&state, &g)})))
}

async fn delete(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state
        .identity
        .change(|m| {
            enforce(
                c.may_manage_domain(&found(m, &id)?.domain_id),
                "delete_group",
            )?;
            let mut ops = m.dependents(&Removal {
                groups: vec![&id],
                ..Default::default()
            });
            ops.push(Op::delete(kind::GROUP, &id));
            Ok((ops, ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn members(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    enforce(
        c.may_read_domain(&found(&m, &id)?.domain_id),
        "list_users_in_group",
    )?;
    let users: Vec<Value> = m
        .memberships
        .iter()
        .filter(|(g, _)| *g == id)
        .filter_map(|(_, u)| m.users.get(u))
        .map(|u| super::users::user_json(&state, u))
        .collect();
    Ok(Json(
        json!({"users": users, "links": collection_links(&state, &format!("groups/{id}/users"))}),
    ))
}

async fn check_member(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, user)): Path<(String, String)>,
) -> Result<StatusCode> {
    let m = state.identity.model();
    let g = found(&m, &id)?;
    enforce(
        c.is_user(&user) || c.may_read_domain(&g.domain_id),
        "check_user_in_group",
    )?;
    if !m.users.contains_key(&user) {
        return Err(Error::not_found("user", &user));
    }
    if m.memberships.contains(&(id.clone(), user.clone())) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound(format!(
            "User {user} is not a member of group {id}."
        )))
    }
}

async fn add_member(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, user)): Path<(String, String)>,
) -> Result<StatusCode> {
    state
        .identity
        .change(|m| {
            enforce(
                c.may_manage_domain(&found(m, &id)?.domain_id),
                "add_user_to_group",
            )?;
            if !m.users.contains_key(&user) {
                return Err(Error::not_found("user", &user));
            }
            Ok((vec![Membership::op_put(&id, &user)], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_member(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, user)): Path<(String, String)>,
) -> Result<StatusCode> {
    state
        .identity
        .change(|m| {
            enforce(
                c.may_manage_domain(&found(m, &id)?.domain_id),
                "remove_user_from_group",
            )?;
            if !m.memberships.contains(&(id.clone(), user.clone())) {
                return Err(Error::NotFound(format!(
                    "User {user} is not a member of group {id}."
                )));
            }
            Ok((vec![Membership::op_delete(&id, &user)], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
