//! Endpoint filtering (Keystone's OS-EP-FILTER): endpoints associated
//! with a project directly, or through an endpoint group (whose filters
//! pick endpoints by interface, service and region). A project with any
//! association sees only those endpoints in its tokens' catalog (and in
//! `/v3/auth/catalog`); a project with none sees them all. Associations
//! are documents of kinds `project_endpoint` and `project_endpoint_group`
//! (`<project>:<endpoint or group>`).

use super::{collection_links, self_link};
use crate::model::Model;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use ursa_core::error::{Error, Result};
use ursa_core::http::Auth;
use ursa_core::policy::enforce;
use ursa_core::store::Op;

const BY_ENDPOINT: &str = "project_endpoint";
const BY_GROUP: &str = "project_endpoint_group";

pub fn routes() -> Router<AppState> {
    let p = "/v3/OS-EP-FILTER";
    Router::new()
        .route(
            &format!("{p}/projects/{{pid}}/endpoints/{{eid}}"),
            get(check_endpoint)
                .put(add_endpoint)
                .delete(remove_endpoint),
        )
        .route(
            &format!("{p}/projects/{{pid}}/endpoints"),
            get(project_endpoints),
        )
        .route(
            &format!("{p}/endpoints/{{eid}}/projects"),
            get(endpoint_projects),
        )
        .route(
            &format!("{p}/endpoint_groups/{{gid}}/endpoints"),
            get(group_endpoints),
        )
        .route(
            &format!("{p}/endpoint_groups/{{gid}}/projects"),
            get(group_projects),
        )
        .route(
            &format!("{p}/endpoint_groups/{{gid}}/projects/{{pid}}"),
            get(check_group).put(add_group).delete(remove_group),
        )
        .route(
            &format!("{p}/projects/{{pid}}/endpoint_groups"),
            get(project_groups),
        )
}

fn doc_strs<'a>(m: &'a Model, kind: &str, key: &'a str, is: &'a str, want: &'a str) -> Vec<String> {
    m.docs_of(kind)
        .filter(|d| d[key] == is)
        .filter_map(|d| d[want].as_str().map(str::to_string))
        .collect()
}

/// Whether endpoint `e` passes a group's filters.
fn in_group(e: &Value, g: &Value) -> bool {
    g["filters"]
        .as_object()
        .is_none_or(|f| f.iter().all(|(k, v)| &e[k.as_str()] == v))
}

fn group_members<'a>(m: &'a Model, g: &'a Value) -> impl Iterator<Item = &'a Value> + 'a {
    m.docs_of("endpoint").filter(move |e| in_group(e, g))
}

/// The endpoints a project's catalog is limited to; `None` when it has no
/// association (it sees every endpoint).
/// Runs at every project-scoped token: the project's associations are read
/// by their ids' prefix, not by a scan of every association.
pub fn allowed_endpoints(m: &Model, project: &str) -> Option<BTreeSet<String>> {
    let mine = |kind: &str, want: &str| -> Vec<String> {
        m.docs_prefixed(kind, &format!("{project}:"))
            .filter(|d| d["project_id"] == project)
            .filter_map(|d| d[want].as_str().map(str::to_string))
            .collect()
    };
    let direct = mine(BY_ENDPOINT, "endpoint_id");
    let groups = mine(BY_GROUP, "endpoint_group_id");
    if direct.is_empty() && groups.is_empty() {
        return None;
    }
    let mut out: BTreeSet<String> = direct.into_iter().collect();
    for gid in groups {
        if let Some(g) = m.doc("endpoint_group", &gid) {
            out.extend(group_members(m, g).filter_map(|e| e["id"].as_str().map(str::to_string)));
        }
    }
    Some(out)
}

fn may_read(c: &ursa_core::policy::Caller) -> Result<()> {
    enforce(c.is_reader_everywhere(), "list_endpoint_filters")
}

fn may_write(c: &ursa_core::policy::Caller) -> Result<()> {
    enforce(c.is_admin(), "update_endpoint_filters")
}

fn need_project(m: &Model, pid: &str) -> Result<()> {
    m.projects
        .get(pid)
        .filter(|p| !p.is_domain)
        .map(|_| ())
        .ok_or_else(|| Error::not_found("project", pid))
}

fn need_doc(m: &Model, kind: &str, id: &str, what: &str) -> Result<Value> {
    m.doc(kind, id)
        .cloned()
        .ok_or_else(|| Error::not_found(what, id))
}

fn endpoint_json(state: &AppState, e: &Value) -> Value {
    let mut v = e.clone();
    v["links"] = self_link(
        state,
        &format!("endpoints/{}", e["id"].as_str().unwrap_or("")),
    );
    v
}

fn project_json(state: &AppState, m: &Model, pid: &str) -> Option<Value> {
    m.projects
        .get(pid)
        .map(|p| super::projects::project_json(state, p))
}

async fn add_endpoint(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((pid, eid)): Path<(String, String)>,
) -> Result<StatusCode> {
    may_write(&c)?;
    state
        .identity
        .change(|m| {
            need_project(m, &pid)?;
            need_doc(m, "endpoint", &eid, "endpoint")?;
            let id = format!("{pid}:{eid}");
            let d = json!({"id": id, "project_id": pid, "endpoint_id": eid});
            Ok((vec![Op::put(BY_ENDPOINT, &id, &pid, &id, d)], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn check_endpoint(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((pid, eid)): Path<(String, String)>,
) -> Result<StatusCode> {
    may_read(&c)?;
    let m = state.identity.model();
    need_doc(&m, BY_ENDPOINT, &format!("{pid}:{eid}"), "project endpoint")?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_endpoint(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((pid, eid)): Path<(String, String)>,
) -> Result<StatusCode> {
    may_write(&c)?;
    let id = format!("{pid}:{eid}");
    state
        .identity
        .change(|m| {
            need_doc(m, BY_ENDPOINT, &id, "project endpoint")?;
            Ok((vec![Op::delete(BY_ENDPOINT, &id)], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn project_endpoints(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(pid): Path<String>,
) -> Result<Json<Value>> {
    may_read(&c)?;
    let m = state.identity.model();
    need_project(&m, &pid)?;
    let allowed = allowed_endpoints(&m, &pid).unwrap_or_default();
    let list: Vec<Value> = allowed
        .iter()
        .filter_map(|e| m.doc("endpoint", e))
        .map(|e| endpoint_json(&state, e))
        .collect();
    Ok(Json(json!({"endpoints": list,
        "links": collection_links(&state, &format!("OS-EP-FILTER/projects/{pid}/endpoints"))})))
}

async fn endpoint_projects(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(eid): Path<String>,
) -> Result<Json<Value>> {
    may_read(&c)?;
    let m = state.identity.model();
    need_doc(&m, "endpoint", &eid, "endpoint")?;
    let list: Vec<Value> = doc_strs(&m, BY_ENDPOINT, "endpoint_id", &eid, "project_id")
        .iter()
        .filter_map(|p| project_json(&state, &m, p))
        .collect();
    Ok(Json(json!({"projects": list,
        "links": collection_links(&state, &format!("OS-EP-FILTER/endpoints/{eid}/projects"))})))
}

async fn group_endpoints(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(gid): Path<String>,
) -> Result<Json<Value>> {
    may_read(&c)?;
    let m = state.identity.model();
    let g = need_doc(&m, "endpoint_group", &gid, "endpoint group")?;
    let list: Vec<Value> = group_members(&m, &g)
        .map(|e| endpoint_json(&state, e))
        .collect();
    Ok(Json(json!({"endpoints": list,
        "links": collection_links(&state, &format!("OS-EP-FILTER/endpoint_groups/{gid}/endpoints"))})))
}

async fn group_projects(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(gid): Path<String>,
) -> Result<Json<Value>> {
    may_read(&c)?;
    let m = state.identity.model();
    need_doc(&m, "endpoint_group", &gid, "endpoint group")?;
    let list: Vec<Value> = doc_strs(&m, BY_GROUP, "endpoint_group_id", &gid, "project_id")
        .iter()
        .filter_map(|p| project_json(&state, &m, p))
        .collect();
    Ok(Json(json!({"projects": list,
        "links": collection_links(&state, &format!("OS-EP-FILTER/endpoint_groups/{gid}/projects"))})))
}

async fn add_group(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((gid, pid)): Path<(String, String)>,
) -> Result<StatusCode> {
    may_write(&c)?;
    state
        .identity
        .change(|m| {
            need_project(m, &pid)?;
            need_doc(m, "endpoint_group", &gid, "endpoint group")?;
            let id = format!("{pid}:{gid}");
            let d = json!({"id": id, "project_id": pid, "endpoint_group_id": gid});
            Ok((vec![Op::put(BY_GROUP, &id, &pid, &id, d)], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn check_group(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((gid, pid)): Path<(String, String)>,
) -> Result<Json<Value>> {
    may_read(&c)?;
    let m = state.identity.model();
    need_doc(
        &m,
        BY_GROUP,
        &format!("{pid}:{gid}"),
        "project endpoint group",
    )?;
    Ok(Json(
        json!({"project_endpoint_group": {"project_id": pid, "endpoint_group_id": gid}}),
    ))
}

async fn remove_group(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((gid, pid)): Path<(String, String)>,
) -> Result<StatusCode> {
    may_write(&c)?;
    let id = format!("{pid}:{gid}");
    state
        .identity
        .change(|m| {
            need_doc(m, BY_GROUP, &id, "project endpoint group")?;
            Ok((vec![Op::delete(BY_GROUP, &id)], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn project_groups(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(pid): Path<String>,
) -> Result<Json<Value>> {
    may_read(&c)?;
    let m = state.identity.model();
    need_project(&m, &pid)?;
    let list: Vec<Value> = doc_strs(&m, BY_GROUP, "project_id", &pid, "endpoint_group_id")
        .iter()
        .filter_map(|g| m.doc("endpoint_group", g).cloned())
        .collect();
    Ok(Json(json!({"endpoint_groups": list,
        "links": collection_links(&state, &format!("OS-EP-FILTER/projects/{pid}/endpoint_groups"))})))
}
