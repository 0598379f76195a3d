//! Unified limits: registered limits (a service's default for a resource,
//! per region) and limits (a project's own value), written by admins and
//! read by anyone with a role on what they name, as Keystone's flat
//! enforcement model has them. The services that keep Keystone-backed
//! quotas read them through [`effective_limit`] (compute: `servers`,
//! `class:VCPU`, `class:MEMORY_MB`; block storage: `volumes`, `gigabytes`).

use super::{collection_links, self_link, Query};
use crate::model::Model;
use crate::new_id;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{Auth, Body};
use ursa_core::policy::{enforce, Caller};
use ursa_core::store::Op;

pub const REGISTERED_LIMIT: &str = "registered_limit";
pub const LIMIT: &str = "limit";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v3/registered_limits",
            get(list_registered).post(create_registered),
        )
        .route(
            "/v3/registered_limits/{id}",
            get(show_registered)
                .patch(update_registered)
                .delete(delete_registered),
        )
        .route("/v3/limits", get(list_limits).post(create_limits))
        .route(
            "/v3/limits/{id}",
            get(show_limit).patch(update_limit).delete(delete_limit),
        )
        .route("/v3/limits/model", get(model))
}

async fn model(_: Auth) -> Json<Value> {
    Json(json!({"model": {"name": "flat",
        "description": "Limit enforcement and validation does not take project hierarchy into consideration."}}))
}

/// The limit a project has for a resource of a service of one of
/// `service_types` (e.g. "compute"; "volumev3", "block-storage"): its own
/// limit, else the registered default; `None` when Keystone says nothing
/// about it.
pub fn effective_limit(
    m: &Model,
    service_types: &[&str],
    project: &str,
    resource: &str,
) -> Option<i64> {
    let services: Vec<&str> = m
        .docs_of("service")
        .filter(|s| {
            s["type"]
                .as_str()
                .is_some_and(|t| service_types.contains(&t))
        })
        .filter_map(|s| s["id"].as_str())
        .collect();
    let of_service = |d: &&Value| {
        d["resource_name"] == resource
            && d["service_id"]
                .as_str()
                .is_some_and(|s| services.contains(&s))
    };
    m.docs_of(LIMIT)
        .filter(of_service)
        .find(|l| l["project_id"] == project)
        .and_then(|l| l["resource_limit"].as_i64())
        .or_else(|| {
            m.docs_of(REGISTERED_LIMIT)
                .find(of_service)
                .and_then(|r| r["default_limit"].as_i64())
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRegistered {
    service_id: String,
    #[serde(default)]
    region_id: Option<String>,
    resource_name: String,
    default_limit: i64,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct RegisteredBody {
    registered_limits: Vec<NewRegistered>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisteredChange {
    service_id: Option<String>,
    region_id: Option<String>,
    resource_name: Option<String>,
    default_limit: Option<i64>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct RegisteredChangeBody {
    registered_limit: RegisteredChange,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLimit {
    service_id: String,
    #[serde(default)]
    region_id: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    domain_id: Option<String>,
    resource_name: String,
    resource_limit: i64,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct LimitsBody {
    limits: Vec<NewLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitChange {
    resource_limit: Option<i64>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct LimitChangeBody {
    limit: LimitChange,
}

fn present(state: &AppState, path: &str, d: &Value) -> Value {
    let mut v = d.clone();
    let id = v["id"].as_str().unwrap_or_default().to_string();
    v["links"] = self_link(state, &format!("{path}/{id}"));
    v
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 {
        return Err(Error::BadRequest(
            "resource_name must be 1 to 255 characters.".into(),
        ));
    }
    Ok(())
}

fn check_value(v: i64, what: &str) -> Result<()> {
    if v < -1 {
        return Err(Error::BadRequest(format!(
            "{what} must be -1 (unlimited) or more."
        )));
    }
    Ok(())
}

fn check_refs(m: &Model, service: &str, region: Option<&str>) -> Result<()> {
    if m.doc("service", service).is_none() {
        return Err(Error::BadRequest(format!(
            "Invalid input: service {service} does not exist."
        )));
    }
    if let Some(r) = region {
        if m.doc("region", r).is_none() {
            return Err(Error::BadRequest(format!(
                "Invalid input: region {r} does not exist."
            )));
        }
    }
    Ok(())
}

fn same_key(d: &Value, service: &str, region: Option<&str>, resource: &str) -> bool {
    d["service_id"] == service
        && d["region_id"].as_str() == region
        && d["resource_name"] == resource
}

async fn list_registered(
    State(state): State<AppState>,
    Auth(_): Auth,
    q: Query,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let out: Vec<Value> = m
        .docs_of(REGISTERED_LIMIT)
        .filter(|d| {
            ["service_id", "region_id", "resource_name"]
                .iter()
                .all(|f| q.get(*f).is_none_or(|w| d[*f].as_str() == Some(w.as_str())))
        })
        .map(|d| present(&state, "registered_limits", d))
        .collect();
    Ok(Json(
        json!({"registered_limits": out, "links": collection_links(&state, "registered_limits")}),
    ))
}

async fn create_registered(
    State(state): State<AppState>,
    Auth(c): Auth,
    Body(body): Body<RegisteredBody>,
) -> Result<(StatusCode, Json<Value>)> {
    enforce(c.is_admin(), "create_registered_limits")?;
    if body.registered_limits.is_empty() {
        return Err(Error::BadRequest("registered_limits is empty.".into()));
    }
    let docs = state
        .identity
        .change(|m| {
            let mut ops = Vec::new();
            let mut docs = Vec::new();
            for r in &body.registered_limits {
                check_name(&r.resource_name)?;
                check_value(r.default_limit, "default_limit")?;
                check_refs(m, &r.service_id, r.region_id.as_deref())?;
                let taken = m
                    .docs_of(REGISTERED_LIMIT)
                    .chain(docs.iter())
                    .any(|d| same_key(d, &r.service_id, r.region_id.as_deref(), &r.resource_name));
                if taken {
                    return Err(Error::Conflict(format!(
                        "Duplicate entry: a registered limit for {} of service {} exists.",
                        r.resource_name, r.service_id
                    )));
                }
                let id = new_id();
                let d = json!({"id": id, "service_id": r.service_id, "region_id": r.region_id,
                    "resource_name": r.resource_name, "default_limit": r.default_limit,
                    "description": r.description});
                ops.push(Op::put(REGISTERED_LIMIT, &id, "", &id, &d));
                docs.push(d);
            }
            Ok((ops, docs))
        })
        .await?;
    let out: Vec<Value> = docs
        .iter()
        .map(|d| present(&state, "registered_limits", d))
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "registered_limits": out })),
    ))
}

async fn show_registered(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let d = m
        .doc(REGISTERED_LIMIT, &id)
        .ok_or_else(|| Error::not_found("registered limit", &id))?;
    Ok(Json(
        json!({"registered_limit": present(&state, "registered_limits", d)}),
    ))
}

async fn update_registered(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(body): Body<RegisteredChangeBody>,
) -> Result<Json<Value>> {
    enforce(c.is_admin(), "update_registered_limit")?;
    let ch = body.registered_limit;
    let d = state
        .identity
        .change(|m| {
            let old = m
                .doc(REGISTERED_LIMIT, &id)
                .ok_or_else(|| Error::not_found("registered limit", &id))?;
            let mut d = old.clone();
            if let Some(s) = &ch.service_id {
                d["service_id"] = json!(s);
            }
            if let Some(r) = &ch.region_id {
                d["region_id"] = json!(r);
            }
            if let Some(n) = &ch.resource_name {
                check_name(n)?;
                d["resource_name"] = json!(n);
            }
            if let Some(v) = ch.default_limit {
                check_value(v, "default_limit")?;
                d["default_limit"] = json!(v);
            }
            if let Some(x) = &ch.description {
                d["description"] = json!(x);
            }
            let (svc, reg, res) = (
                d["service_id"].as_str().unwrap_or_default().to_string(),
                d["region_id"].as_str().map(str::to_string),
                d["resource_name"].as_str().unwrap_or_default().to_string(),
            );
            check_refs(m, &svc, reg.as_deref())?;
            if m.docs_of(REGISTERED_LIMIT)
                .any(|o| o["id"] != id.as_str() && same_key(o, &svc, reg.as_deref(), &res))
            {
                return Err(Error::Conflict(
                    "Duplicate entry: that registered limit exists.".into(),
                ));
            }
            // The key of a registered limit that limits refer to stays.
            let keyed = ch.service_id.is_some() || ch.region_id.is_some() || ch.resource_name.is_some();
            if keyed
                && m.docs_of(LIMIT).any(|l| {
                    same_key(
                        l,
                        old["service_id"].as_str().unwrap_or_default(),
                        old["region_id"].as_str(),
                        old["resource_name"].as_str().unwrap_or_default(),
                    )
                })
            {
                return Err(Error::Forbidden(
                    "Cannot change the service, region or resource of a registered limit that project limits refer to.".into(),
                ));
            }
            Ok((vec![Op::put(REGISTERED_LIMIT, &id, "", &id, &d)], d))
        })
        .await?;
    Ok(Json(
        json!({"registered_limit": present(&state, "registered_limits", &d)}),
    ))
}

async fn delete_registered(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    enforce(c.is_admin(), "delete_registered_limit")?;
    state
        .identity
        .change(|m| {
            let d = m
                .doc(REGISTERED_LIMIT, &id)
                .ok_or_else(|| Error::not_found("registered limit", &id))?;
            if m.docs_of(LIMIT).any(|l| {
                same_key(
                    l,
                    d["service_id"].as_str().unwrap_or_default(),
                    d["region_id"].as_str(),
                    d["resource_name"].as_str().unwrap_or_default(),
                )
            }) {
                return Err(Error::Forbidden(
                    "Cannot delete a registered limit that project limits refer to.".into(),
                ));
            }
            Ok((vec![Op::delete(REGISTERED_LIMIT, &id)], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who may read a limit: readers everywhere, and members of its project.
fn may_read(c: &Caller, d: &Value) -> bool {
    c.is_reader_everywhere()
        || d["project_id"]
            .as_str()
            .is_some_and(|p| c.project_id() == Some(p))
}

async fn list_limits(
    State(state): State<AppState>,
    Auth(c): Auth,
    q: Query,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let out: Vec<Value> = m
        .docs_of(LIMIT)
        .filter(|d| may_read(&c, d))
        .filter(|d| {
            [
                "service_id",
                "region_id",
                "resource_name",
                "project_id",
                "domain_id",
            ]
            .iter()
            .all(|f| q.get(*f).is_none_or(|w| d[*f].as_str() == Some(w.as_str())))
        })
        .map(|d| present(&state, "limits", d))
        .collect();
    Ok(Json(
        json!({"limits": out, "links": collection_links(&state, "limits")}),
    ))
}

async fn create_limits(
    State(state): State<AppState>,
    Auth(c): Auth,
    Body(body): Body<LimitsBody>,
) -> Result<(StatusCode, Json<Value>)> {
    enforce(c.is_admin(), "create_limits")?;
    if body.limits.is_empty() {
        return Err(Error::BadRequest("limits is empty.".into()));
    }
    let docs = state
        .identity
        .change(|m| {
            let mut ops = Vec::new();
            let mut docs = Vec::new();
            for l in &body.limits {
                check_name(&l.resource_name)?;
                check_value(l.resource_limit, "resource_limit")?;
                check_refs(m, &l.service_id, l.region_id.as_deref())?;
                let (project, domain) = match (&l.project_id, &l.domain_id) {
                    (Some(p), None) if m.project(p).is_some() => (Some(p), None),
                    (None, Some(d)) if m.domain(d).is_some() => (None, Some(d)),
                    _ => {
                        return Err(Error::BadRequest(
                            "A limit names one existing project or domain.".into(),
                        ))
                    }
                };
                if !m
                    .docs_of(REGISTERED_LIMIT)
                    .any(|r| same_key(r, &l.service_id, l.region_id.as_deref(), &l.resource_name))
                {
                    return Err(Error::Forbidden(format!(
                        "No registered limit for {} of service {}: register it first.",
                        l.resource_name, l.service_id
                    )));
                }
                let taken = m.docs_of(LIMIT).chain(docs.iter()).any(|d| {
                    same_key(d, &l.service_id, l.region_id.as_deref(), &l.resource_name)
                        && d["project_id"].as_str() == project.map(String::as_str)
                        && d["domain_id"].as_str() == domain.map(String::as_str)
                });
                if taken {
                    return Err(Error::Conflict(format!(
                        "Duplicate entry: a limit for {} exists there.",
                        l.resource_name
                    )));
                }
                let id = new_id();
                let d = json!({"id": id, "service_id": l.service_id, "region_id": l.region_id,
                    "project_id": project, "domain_id": domain, "resource_name": l.resource_name,
                    "resource_limit": l.resource_limit, "description": l.description});
                ops.push(Op::put(LIMIT, &id, "", &id, &d));
                docs.push(d);
            }
            Ok((ops, docs))
        })
        .await?;
    let out: Vec<Value> = docs.iter().map(|d| present(&state, "limits", d)).collect();
    Ok((StatusCode::CREATED, Json(json!({ "limits": out }))))
}

async fn show_limit(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let d = m
        .doc(LIMIT, &id)
        .filter(|d| may_read(&c, d))
        .ok_or_else(|| Error::not_found("limit", &id))?;
    Ok(Json(json!({"limit": present(&state, "limits", d)})))
}

async fn update_limit(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(body): Body<LimitChangeBody>,
) -> Result<Json<Value>> {
    enforce(c.is_admin(), "update_limit")?;
    let ch = body.limit;
    let d = state
        .identity
        .change(|m| {
            let mut d = m
                .doc(LIMIT, &id)
                .cloned()
                .ok_or_else(|| Error::not_found("limit", &id))?;
            if let Some(v) = ch.resource_limit {
                check_value(v, "resource_limit")?;
                d["resource_limit"] = json!(v);
            }
            if let Some(x) = &ch.description {
                d["description"] = json!(x);
            }
            Ok((vec![Op::put(LIMIT, &id, "", &id, &d)], d))
        })
        .await?;
    Ok(Json(json!({"limit": present(&state, "limits", &d)})))
}

async fn delete_limit(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    enforce(c.is_admin(), "delete_limit")?;
    state
        .identity
        .change(|m| {
            m.doc(LIMIT, &id)
                .ok_or_else(|| Error::not_found("limit", &id))?;
            Ok((vec![Op::delete(LIMIT, &id)], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
