//! Projects (`/v3/projects`), their hierarchy (`parent_id`) and tags.

use super::{
    check_name, collection_links, member, opt_bool, opt_str, query_bool, self_link, Query,
};
use crate::api::domains::{cascade_delete_domain, new_domain, put_project};
use crate::model::{kind, Model, Project, Removal, RevokeBy};
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
        .route("/v3/projects", get(list).post(create))
        .route("/v3/projects/{id}", get(show).patch(update).delete(delete))
        .route(
            "/v3/projects/{id}/tags",
            get(tags_list).put(tags_replace).delete(tags_clear),
        )
        .route(
            "/v3/projects/{id}/tags/{tag}",
            get(tag_check).put(tag_add).delete(tag_remove),
        )
}

pub fn project_json(state: &AppState, p: &Project) -> Value {
    super::merge_extra(
        json!({
            "id": p.id, "name": p.name, "domain_id": p.domain_id, "parent_id": p.parent_id,
            "description": p.description, "enabled": p.enabled, "is_domain": p.is_domain,
            "tags": p.tags, "options": p.options,
            "links": self_link(state, &format!("projects/{}", p.id)),
        }),
        &p.extra,
    )
}

pub fn check_tags(v: Option<&Value>) -> Result<Vec<String>> {
    let Some(v) = v else { return Ok(vec![]) };
    let arr = v
        .as_array()
        .ok_or_else(|| Error::BadRequest("'tags' must be a list of strings.".into()))?;
    if arr.len() > 80 {
        return Err(Error::BadRequest(
            "A project may have at most 80 tags.".into(),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for t in arr {
        out.push(check_tag(t.as_str().ok_or_else(|| {
            Error::BadRequest("Tags must be strings.".into())
        })?)?);
    }
    out.dedup();
    Ok(out)
}

fn check_tag(t: &str) -> Result<String> {
    if t.is_empty() || t.chars().count() > 255 || t.contains('/') || t.contains(',') {
        return Err(Error::BadRequest(format!(
            "Tag {t:?} is invalid: 1 to 255 characters, without '/' or ','."
        )));
    }
    Ok(t.to_string())
}

/// May the caller see this project?
pub fn may_read(c: &Caller, p: &Project) -> bool {
    c.may_read_domain(&p.domain_id) || c.project_id() == Some(p.id.as_str())
}

fn found<'a>(m: &'a Model, id: &str) -> Result<&'a Project> {
    m.project(id).ok_or_else(|| Error::not_found("project", id))
}

fn tag_filter(q: &Query, p: &Project) -> bool {
    let split = |k: &str| -> Option<Vec<&str>> { q.get(k).map(|v| v.split(',').collect()) };
    let has = |t: &str| p.tags.iter().any(|x| x == t);
    split("tags").is_none_or(|ts| ts.iter().all(|t| has(t)))
        && split("tags-any").is_none_or(|ts| ts.iter().any(|t| has(t)))
        && split("not-tags").is_none_or(|ts| !ts.iter().all(|t| has(t)))
        && split("not-tags-any").is_none_or(|ts| !ts.iter().any(|t| has(t)))
}

async fn list(State(state): State<AppState>, Auth(c): Auth, q: Query) -> Result<Json<Value>> {
    let scoped_domain = c.scoped_domain().map(str::to_string);
    enforce(
        c.is_reader_everywhere() || (scoped_domain.is_some() && c.has("reader")),
        "list_projects",
    )?;
    let m = state.identity.model();
    let want_domain = q.get("is_domain").is_some_and(|v| query_bool(v));
    let mut out: Vec<&Project> = m
        .projects
        .values()
        .filter(|p| p.is_domain == want_domain)
        .filter(|p| c.is_reader_everywhere() || (Some(&p.domain_id) == scoped_domain.as_ref()))
        .filter(|p| q.get("domain_id").is_none_or(|d| *d == p.domain_id))
        .filter(|p| q.get("name").is_none_or(|n| *n == p.name))
        .filter(|p| q.get("enabled").is_none_or(|e| query_bool(e) == p.enabled))
        .filter(|p| {
            q.get("parent_id")
                .is_none_or(|x| Some(x) == p.parent_id.as_ref())
        })
        .filter(|p| tag_filter(&q, p))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(json!({
        "projects": out.iter().map(|p| project_json(&state, p)).collect::<Vec<_>>(),
        "links": collection_links(&state, "projects"),
    })))
}

async fn create(
    State(state): State<AppState>,
    Auth(c): Auth,
    Body(body): Body<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let b = member(body, "project")?;
    if opt_bool(b.get("is_domain"), "is_domain")? == Some(true) {
        enforce(c.is_admin(), "create_project")?;
        let d = new_domain(&b)?;
        let d = state
            .identity
            .change(|m| {
                if m.domain_by_name(&d.name).is_some() {
                    return Err(Error::Conflict(format!(
                        "Duplicate entry found with name {}.",
                        d.name
                    )));
                }
                Ok((vec![put_project(&d)], d.clone()))
            })
            .await?;
        return Ok((
            StatusCode::CREATED,
            Json(json!({"project": project_json(&state, &d)})),
        ));
    }
    let name = check_name(b.get("name"), "name", 64, true)?.expect("required");
    let description = opt_str(b.get("description"), "description")?.unwrap_or_default();
    let enabled = opt_bool(b.get("enabled"), "enabled")?.unwrap_or(true);
    let tags = check_tags(b.get("tags"))?;
    let domain_id = opt_str(b.get("domain_id"), "domain_id")?;
    let parent_id = opt_str(b.get("parent_id"), "parent_id")?;
    let extra = super::take_extra(
        &b,
        &[
            "name",
            "description",
            "enabled",
            "tags",
            "domain_id",
            "parent_id",
            "is_domain",
            "options",
        ],
    );
    let options = b
        .get("options")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let p = state
        .identity
        .change(|m| {
            let parent = match &parent_id {
                Some(pid) => Some(m.projects.get(pid).ok_or_else(|| {
                    Error::BadRequest(format!("Parent project {pid} does not exist."))
                })?),
                None => None,
            };
            let domain_id = match (&domain_id, parent) {
                (Some(d), _) => d.clone(),
                (None, Some(p)) if p.is_domain => p.id.clone(),
                (None, Some(p)) => p.domain_id.clone(),
                (None, None) => c.default_domain(),
            };
            if m.domain(&domain_id).is_none() {
                return Err(Error::BadRequest(format!("Domain {domain_id} does not exist.")));
            }
            if let Some(p) = parent {
                let pd = if p.is_domain { &p.id } else { &p.domain_id };
                if *pd != domain_id {
                    return Err(Error::BadRequest("A project must be in the same domain as its parent.".into()));
                }
            }
            enforce(c.may_manage_domain(&domain_id), "create_project")?;
            if m.project_by_name(&domain_id, &name).is_some() {
                return Err(Error::Conflict(format!(
                    "Conflict occurred attempting to store project - it is not permitted to have two projects with the same name in the same domain : {name}."
                )));
            }
            let p = Project {
                id: new_id(),
                name: name.clone(),
                parent_id: Some(parent_id.clone().unwrap_or_else(|| domain_id.clone())),
                domain_id,
                description: description.clone(),
                enabled,
                is_domain: false,
                tags: tags.clone(),
                options: options.clone(),
                extra: extra.clone(),
            };
            Ok((vec![put_project(&p)], p))
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"project": project_json(&state, &p)})),
    ))
}

async fn show(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let p = m
        .projects
        .get(&id)
        .ok_or_else(|| Error::not_found("project", &id))?;
    enforce(
        may_read(&c, p) || (p.is_domain && c.may_read_domain(&p.id)),
        "get_project",
    )?;
    Ok(Json(json!({"project": project_json(&state, p)})))
}

async fn update(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(body): Body<Value>,
) -> Result<Json<Value>> {
    let b = member(body, "project")?;
    let was_enabled = state
        .identity
        .model()
        .projects
        .get(&id)
        .is_some_and(|p| p.enabled);
    let p = state
        .identity
        .change(|m| {
            let mut p = m
                .projects
                .get(&id)
                .ok_or_else(|| Error::not_found("project", &id))?
                .clone();
            enforce(
                c.may_manage_domain(if p.is_domain { &p.id } else { &p.domain_id }),
                "update_project",
            )?;
            if let Some(d) = opt_str(b.get("domain_id"), "domain_id")? {
                if d != p.domain_id {
                    return Err(Error::BadRequest(
                        "A project cannot move to another domain.".into(),
                    ));
                }
            }
            if let Some(d) = opt_bool(b.get("is_domain"), "is_domain")? {
                if d != p.is_domain {
                    return Err(Error::BadRequest("is_domain cannot change.".into()));
                }
            }
            if let Some(n) = check_name(b.get("name"), "name", 64, false)? {
                let clash = if p.is_domain {
                    m.domain_by_name(&n)
                } else {
                    m.project_by_name(&p.domain_id, &n)
                };
                if clash.is_some_and(|o| o.id != p.id) {
                    return Err(Error::Conflict(format!(
                        "Duplicate entry found with name {n}."
                    )));
                }
                p.name = n;
            }
            if b.contains_key("description") {
                p.description = opt_str(b.get("description"), "description")?.unwrap_or_default();
            }
            if let Some(e) = opt_bool(b.get("enabled"), "enabled")? {
                p.enabled = e;
            }
            if b.contains_key("tags") {
                p.tags = check_tags(b.get("tags"))?;
            }
            if let Some(o) = b.get("options").and_then(Value::as_object) {
                p.options.extend(o.clone());
            }
            p.extra.extend(super::take_extra(
                &b,
                &[
                    "name",
                    "description",
                    "enabled",
                    "tags",
                    "domain_id",
                    "parent_id",
                    "is_domain",
                    "options",
                ],
            ));
            Ok((vec![put_project(&p)], p))
        })
        .await?;
    if was_enabled && !p.enabled && !p.is_domain {
        // Tokens for a disabled project stay invalid even if it is enabled again.
        state.identity.revoke(RevokeBy::Project, &p.id).await?;
    }
    Ok(Json(json!({"project": project_json(&state, &p)})))
}

async fn delete(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state
        .identity
        .change(|m| {
            let p = m
                .projects
                .get(&id)
                .ok_or_else(|| Error::not_found("project", &id))?;
            if p.is_domain {
                enforce(c.is_admin(), "delete_project")?;
                if p.enabled {
                    return Err(Error::Forbidden(
                        "Cannot delete a domain that is enabled, please disable it first.".into(),
                    ));
                }
                return Ok((cascade_delete_domain(m, &id), ()));
            }
            enforce(c.may_manage_domain(&p.domain_id), "delete_project")?;
            if m.projects
                .values()
                .any(|x| x.parent_id.as_deref() == Some(id.as_str()))
            {
                return Err(Error::Forbidden(format!(
                    "Cannot delete project {id}: it has child projects."
                )));
            }
            let mut ops = m.dependents(&Removal {
                projects: vec![&id],
                ..Default::default()
            });
            ops.push(Op::delete(kind::PROJECT, &id));
            Ok((ops, ()))
        })
        .await?;
    state.identity.revoke(RevokeBy::Project, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn tags_list(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let p = found(&m, &id)?;
    enforce(may_read(&c, p), "get_project_tags")?;
    Ok(Json(json!({"tags": p.tags})))
}

/// Changes a project's tags under policy and returns the new list.
async fn edit_tags(
    state: &AppState,
    c: &Caller,
    id: &str,
    mut f: impl FnMut(&mut Vec<String>) -> Result<()>,
) -> Result<Vec<String>> {
    state
        .identity
        .change(|m| {
            let mut p = found(m, id)?.clone();
            enforce(c.may_manage_domain(&p.domain_id), "update_project_tags")?;
            f(&mut p.tags)?;
            if p.tags.len() > 80 {
                return Err(Error::BadRequest(
                    "A project may have at most 80 tags.".into(),
                ));
            }
            let tags = p.tags.clone();
            Ok((vec![put_project(&p)], tags))
        })
        .await
}

async fn tags_replace(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(body): Body<Value>,
) -> Result<Json<Value>> {
    let tags = check_tags(Some(body.get("tags").unwrap_or(&Value::Null)))?;
    let tags = edit_tags(&state, &c, &id, |t| {
        *t = tags.clone();
        Ok(())
    })
    .await?;
    Ok(Json(json!({"tags": tags})))
}

async fn tags_clear(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    edit_tags(&state, &c, &id, |t| {
        t.clear();
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn tag_check(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode> {
    let m = state.identity.model();
    let p = found(&m, &id)?;
    enforce(may_read(&c, p), "get_project_tag")?;
    if p.tags.contains(&tag) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound(format!(
            "Tag {tag} not found on project {id}."
        )))
    }
}

async fn tag_add(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode> {
    let tag = check_tag(&tag)?;
    // 201 with an empty body, as the API working group's tag guideline says.
    edit_tags(&state, &c, &id, |t| {
        if !t.contains(&tag) {
            t.push(tag.clone());
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::CREATED)
}

async fn tag_remove(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode> {
    edit_tags(&state, &c, &id, |t| {
        let before = t.len();
        t.retain(|x| *x != tag);
        if t.len() == before {
            return Err(Error::NotFound(format!(
                "Tag {tag} not found on project {id}."
            )));
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
