//! Domains (`/v3/domains`) and per-domain configuration
//! (`/v3/domains/{id}/config`). A domain is stored as a project with
//! `is_domain`, as Keystone does, so names and ids share one space.

use super::{
    check_name, collection_links, member, opt_bool, opt_str, query_bool, self_link, Query,
};
use crate::model::{kind, Model, Project, Removal};
use crate::new_id;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{Auth, Body};
use ursa_core::policy::{enforce, Caller};
use ursa_core::store::Op;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/domains", get(list).post(create))
        .route("/v3/domains/{id}", get(show).patch(update).delete(delete))
        .route("/v3/domains/config/default", get(default_config))
        .route("/v3/domains/config/{group}/default", get(default_group))
        .route(
            "/v3/domains/config/{group}/{option}/default",
            get(default_option),
        )
        .route(
            "/v3/domains/{id}/config",
            get(config_show)
                .put(config_create)
                .patch(config_update)
                .delete(config_delete),
        )
        .route(
            "/v3/domains/{id}/config/{group}",
            get(group_show).patch(group_update).delete(group_delete),
        )
        .route(
            "/v3/domains/{id}/config/{group}/{option}",
            get(option_show).patch(option_update).delete(option_delete),
        )
}

pub fn domain_json(state: &AppState, d: &Project) -> Value {
    super::merge_extra(
        json!({
            "id": d.id, "name": d.name, "description": d.description, "enabled": d.enabled,
            "tags": d.tags, "options": d.options, "links": self_link(state, &format!("domains/{}", d.id)),
        }),
        &d.extra,
    )
}

/// May the caller see this domain? Admins and system readers see all;
/// everyone sees the domain they belong to or are scoped into.
fn may_see(c: &Caller, d: &str) -> bool {
    c.may_read_domain(d) || c.user_domain_id == d || c.project_domain_id.as_deref() == Some(d)
}

fn found<'a>(m: &'a Model, id: &str) -> Result<&'a Project> {
    m.domain(id).ok_or_else(|| Error::not_found("domain", id))
}

async fn list(State(state): State<AppState>, Auth(c): Auth, q: Query) -> Result<Json<Value>> {
    enforce(
        c.is_reader_everywhere() || matches!(c.scope, crate::token::Scope::Domain(_)),
        "list_domains",
    )?;
    let m = state.identity.model();
    let mut out: Vec<&Project> = m
        .projects
        .values()
        .filter(|p| p.is_domain && may_see(&c, &p.id))
        .filter(|p| q.get("name").is_none_or(|n| *n == p.name))
        .filter(|p| q.get("enabled").is_none_or(|e| query_bool(e) == p.enabled))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(json!({
        "domains": out.iter().map(|d| domain_json(&state, d)).collect::<Vec<_>>(),
        "links": collection_links(&state, "domains"),
    })))
}

/// Builds a domain from a request body (`POST /v3/domains`, or a project
/// with `is_domain`).
pub fn new_domain(b: &Map<String, Value>) -> Result<Project> {
    let name = check_name(b.get("name"), "name", 64, true)?.expect("required");
    let id = opt_str(b.get("explicit_domain_id"), "explicit_domain_id")?.unwrap_or_else(new_id);
    Ok(Project {
        id,
        name,
        domain_id: String::new(),
        parent_id: None,
        description: opt_str(b.get("description"), "description")?.unwrap_or_default(),
        enabled: opt_bool(b.get("enabled"), "enabled")?.unwrap_or(true),
        is_domain: true,
        tags: super::projects::check_tags(b.get("tags"))?,
        options: b
            .get("options")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        extra: super::take_extra(
            b,
            &[
                "name",
                "description",
                "enabled",
                "tags",
                "options",
                "explicit_domain_id",
                "is_domain",
                "parent_id",
                "domain_id",
            ],
        ),
    })
}

pub fn put_project(p: &Project) -> Op {
    Op::put(kind::PROJECT, &p.id, p.name_scope(), &p.name, p)
}

async fn create(
    State(state): State<AppState>,
    Auth(c): Auth,
    Body(body): Body<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    enforce(c.is_admin(), "create_domain")?;
    let d = new_domain(&member(body, "domain")?)?;
    let d = state
        .identity
        .change(|m| {
            if m.domain_by_name(&d.name).is_some() || m.projects.contains_key(&d.id) {
                return Err(Error::Conflict(format!("Conflict occurred attempting to store domain - Duplicate entry found with name {}.", d.name)));
            }
            Ok((vec![put_project(&d)], d.clone()))
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"domain": domain_json(&state, &d)})),
    ))
}

async fn show(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let d = found(&m, &id)?;
    enforce(may_see(&c, &id), "get_domain")?;
    Ok(Json(json!({"domain": domain_json(&state, d)})))
}

async fn update(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(body): Body<Value>,
) -> Result<Json<Value>> {
    enforce(c.is_admin(), "update_domain")?;
    let b = member(body, "domain")?;
    let d = state
        .identity
        .change(|m| {
            let mut d = found(m, &id)?.clone();
            if let Some(n) = check_name(b.get("name"), "name", 64, false)? {
                if m.domain_by_name(&n).is_some_and(|o| o.id != id) {
                    return Err(Error::Conflict(format!(
                        "Duplicate entry found with name {n}."
                    )));
                }
                d.name = n;
            }
            if b.contains_key("description") {
                d.description = opt_str(b.get("description"), "description")?.unwrap_or_default();
            }
            if let Some(e) = opt_bool(b.get("enabled"), "enabled")? {
                d.enabled = e;
            }
            if b.contains_key("tags") {
                d.tags = super::projects::check_tags(b.get("tags"))?;
            }
            if let Some(o) = b.get("options").and_then(Value::as_object) {
                d.options.extend(o.clone());
            }
            d.extra.extend(super::take_extra(
                &b,
                &["name", "description", "enabled", "tags", "options"],
            ));
            Ok((vec![put_project(&d)], d))
        })
        .await?;
    Ok(Json(json!({"domain": domain_json(&state, &d)})))
}

/// Everything that goes when a domain goes: its projects, users, groups,
/// domain-specific roles, and every assignment and membership naming them.
pub fn cascade_delete_domain(m: &Model, id: &str) -> Vec<Op> {
    let gone = Removal {
        projects: m
            .projects
            .values()
            .filter(|p| p.domain_id == id)
            .map(|p| p.id.as_str())
            .collect(),
        users: m
            .users
            .values()
            .filter(|u| u.domain_id == id)
            .map(|u| u.id.as_str())
            .collect(),
        groups: m
            .groups
            .values()
            .filter(|g| g.domain_id == id)
            .map(|g| g.id.as_str())
            .collect(),
        roles: m
            .roles
            .values()
            .filter(|r| r.domain_id.as_deref() == Some(id))
            .map(|r| r.id.as_str())
            .collect(),
        domains: vec![id],
    };
    let mut ops = m.dependents(&gone);
    ops.extend(gone.projects.iter().map(|p| Op::delete(kind::PROJECT, p)));
    ops.extend(gone.users.iter().map(|u| Op::delete(kind::USER, u)));
    ops.extend(gone.groups.iter().map(|g| Op::delete(kind::GROUP, g)));
    ops.extend(gone.roles.iter().map(|r| Op::delete(kind::ROLE, r)));
    ops.push(Op::delete("domain_config", id));
    ops.push(Op::delete(kind::PROJECT, id));
    ops
}

async fn delete(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    enforce(c.is_admin(), "delete_domain")?;
    state
        .identity
        .change(|m| {
            let d = found(m, &id)?;
            if d.enabled {
                return Err(Error::Forbidden(
                    "Cannot delete a domain that is enabled, please disable it first.".into(),
                ));
            }
            Ok((cascade_delete_domain(m, &id), ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- domain configuration ----------------------------------------------

fn defaults() -> Value {
    json!({
        "identity": {"driver": "sql", "list_limit": null},
        "ldap": {"url": "ldap://localhost", "user": null, "suffix": "cn=example,cn=com",
                 "user_tree_dn": null, "group_tree_dn": null, "query_scope": "one"}
    })
}

fn check_group(group: &str) -> Result<()> {
    match group {
        "identity" | "ldap" => Ok(()),
        _ => Err(Error::Forbidden(format!(
            "Group {group} is not supported for domain specific configurations."
        ))),
    }
}

async fn default_config(Auth(c): Auth) -> Result<Json<Value>> {
    enforce(c.is_reader_everywhere(), "get_domain_config_default")?;
    Ok(Json(json!({"config": defaults()})))
}

async fn default_group(Auth(c): Auth, Path(group): Path<String>) -> Result<Json<Value>> {
    enforce(c.is_reader_everywhere(), "get_domain_config_default")?;
    check_group(&group)?;
    Ok(Json(json!({"config": {group.clone(): defaults()[&group]}})))
}

async fn default_option(
    Auth(c): Auth,
    Path((group, option)): Path<(String, String)>,
) -> Result<Json<Value>> {
    enforce(c.is_reader_everywhere(), "get_domain_config_default")?;
    check_group(&group)?;
    let v = defaults()[&group].get(&option).cloned().ok_or_else(|| {
        Error::Forbidden(format!(
            "Option {option} is not supported in group {group}."
        ))
    })?;
    Ok(Json(json!({"config": {option: v}})))
}

fn config_of(m: &Model, id: &str) -> Result<Map<String, Value>> {
    found(m, id)?;
    m.doc("domain_config", id)
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("Could not find config for domain {id}.")))
}

fn check_config(cfg: &Map<String, Value>) -> Result<()> {
    for (g, opts) in cfg {
        check_group(g)?;
        if !opts.is_object() {
            return Err(Error::BadRequest(format!(
                "Config group {g} must be an object."
            )));
        }
    }
    Ok(())
}

fn put_config(id: &str, cfg: &Map<String, Value>) -> Op {
    Op::put("domain_config", id, "", id, Value::Object(cfg.clone()))
}

async fn config_show(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    enforce(c.is_reader_everywhere(), "get_domain_config")?;
    let cfg = config_of(&state.identity.model(), &id)?;
    Ok(Json(json!({"config": cfg})))
}

async fn config_create(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(body): Body<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    enforce(c.is_admin(), "create_domain_config")?;
    let cfg = member(body, "config")?;
    check_config(&cfg)?;
    let existed = state
        .identity
        .change(|m| {
            found(m, &id)?;
            let existed = m.doc("domain_config", &id).is_some();
            Ok((vec![put_config(&id, &cfg)], existed))
        })
        .await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(json!({"config": cfg}))))
}

/// Merges a change into the stored configuration and returns the result.
async fn merge_config(
    state: &AppState,
    id: &str,
    mut f: impl FnMut(&mut Map<String, Value>) -> Result<()>,
) -> Result<Map<String, Value>> {
    state
        .identity
        .change(|m| {
            let mut cfg = config_of(m, id)?;
            f(&mut cfg)?;
            check_config(&cfg)?;
            Ok((vec![put_config(id, &cfg)], cfg))
        })
        .await
}

fn merge_groups(cfg: &mut Map<String, Value>, new: &Map<String, Value>) {
    for (g, opts) in new {
        let slot = cfg.entry(g.clone()).or_insert_with(|| json!({}));
        if let (Some(slot), Some(opts)) = (slot.as_object_mut(), opts.as_object()) {
            slot.extend(opts.clone());
        }
    }
}

async fn config_update(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(body): Body<Value>,
) -> Result<Json<Value>> {
    enforce(c.is_admin(), "update_domain_config")?;
    let new = member(body, "config")?;
    check_config(&new)?;
    let cfg = merge_config(&state, &id, |cfg| {
        merge_groups(cfg, &new);
        Ok(())
    })
    .await?;
    Ok(Json(json!({"config": cfg})))
}

async fn config_delete(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    enforce(c.is_admin(), "delete_domain_config")?;
    state
        .identity
        .change(|m| {
            config_of(m, &id)?;
            Ok((vec![Op::delete("domain_config", &id)], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn group_of(cfg: &Map<String, Value>, group: &str) -> Result<Value> {
    check_group(group)?;
    cfg.get(group)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("Could not find config group {group}.")))
}

async fn group_show(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, group)): Path<(String, String)>,
) -> Result<Json<Value>> {
    enforce(c.is_reader_everywhere(), "get_domain_config")?;
    let cfg = config_of(&state.identity.model(), &id)?;
    Ok(Json(
        json!({"config": {group.clone(): group_of(&cfg, &group)?}}),
    ))
}

async fn group_update(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, group)): Path<(String, String)>,
    Body(body): Body<Value>,
) -> Result<Json<Value>> {
    enforce(c.is_admin(), "update_domain_config")?;
    check_group(&group)?;
    let new = member(body, "config")?;
    if new.keys().any(|g| *g != group) {
        return Err(Error::BadRequest(format!(
            "The body may only change group {group}."
        )));
    }
    let cfg = merge_config(&state, &id, |cfg| {
        group_of(cfg, &group)?;
        merge_groups(cfg, &new);
        Ok(())
    })
    .await?;
    Ok(Json(json!({"config": {group.clone(): cfg[&group]}})))
}

async fn group_delete(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, group)): Path<(String, String)>,
) -> Result<StatusCode> {
    enforce(c.is_admin(), "delete_domain_config")?;
    merge_config(&state, &id, |cfg| {
        group_of(cfg, &group)?;
        cfg.remove(&group);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn option_of(cfg: &Map<String, Value>, group: &str, option: &str) -> Result<Value> {
    group_of(cfg, group)?
        .get(option)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("Could not find option {option} in group {group}.")))
}

async fn option_show(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, group, option)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    enforce(c.is_reader_everywhere(), "get_domain_config")?;
    let cfg = config_of(&state.identity.model(), &id)?;
    Ok(Json(
        json!({"config": {option.clone(): option_of(&cfg, &group, &option)?}}),
    ))
}

async fn option_update(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, group, option)): Path<(String, String, String)>,
    Body(body): Body<Value>,
) -> Result<Json<Value>> {
    enforce(c.is_admin(), "update_domain_config")?;
    let new = member(body, "config")?;
    let v = new
        .get(&option)
        .cloned()
        .ok_or_else(|| Error::BadRequest(format!("The body must set option {option}.")))?;
    let cfg = merge_config(&state, &id, |cfg| {
        option_of(cfg, &group, &option)?;
        if let Some(g) = cfg.get_mut(&group).and_then(Value::as_object_mut) {
            g.insert(option.clone(), v.clone());
        }
        Ok(())
    })
    .await?;
    Ok(Json(json!({"config": {group.clone(): cfg[&group]}})))
}

async fn option_delete(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, group, option)): Path<(String, String, String)>,
) -> Result<StatusCode> {
    enforce(c.is_admin(), "delete_domain_config")?;
    merge_config(&state, &id, |cfg| {
        option_of(cfg, &group, &option)?;
        if let Some(g) = cfg.get_mut(&group).and_then(Value::as_object_mut) {
            g.remove(&option);
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
