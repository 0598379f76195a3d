//! Server tags (microversion 2.26): `/servers/{id}/tags` and its items.
//! Tags live in the server's record; below 2.26 the routes are 404, as
//! in Nova.

use super::api::{find_server, param, svc, write_access, Mv};
use super::Compute;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{empty, parse_body, Auth};

/// Most tags one server holds (Nova's limit).
pub const MAX_TAGS: usize = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/servers/{id}/tags", get(list).put(replace).delete(clear))
        .route(
            "/servers/{id}/tags/{tag}",
            get(check).put(add).delete(remove),
        )
}

/// Checks a list of tags as Nova does: strings of 1–60 characters without
/// `/` or `,`, at most [`MAX_TAGS`]; duplicates are kept once.
pub fn check_tags(v: &Value) -> Result<Vec<String>> {
    let bad =
        |why: &str| Error::BadRequest(format!("Invalid input for field/attribute tags. {why}"));
    let a = v.as_array().ok_or_else(|| bad("Tags are a list."))?;
    let mut out: Vec<String> = Vec::new();
    for t in a {
        let t = t.as_str().ok_or_else(|| bad("Each tag is a string."))?;
        check_tag(t)?;
        if !out.iter().any(|x| x == t) {
            out.push(t.to_string());
        }
    }
    if out.len() > MAX_TAGS {
        return Err(bad(&format!("At most {MAX_TAGS} tags.")));
    }
    Ok(out)
}

fn check_tag(t: &str) -> Result<()> {
    if t.is_empty() || t.chars().count() > 60 || t.contains('/') || t.contains(',') {
        return Err(Error::BadRequest(format!(
            "Invalid tag '{t}': tags are 1 to 60 characters without '/' or ','."
        )));
    }
    Ok(())
}

fn no_such_tag(tag: &str, id: &str) -> Error {
    Error::NotFound(format!("Tag {tag} does not exist for instance {id}"))
}

fn need_version(mv: Mv) -> Result<()> {
    if mv.at(26) {
        Ok(())
    } else {
        Err(Error::NotFound("The resource could not be found.".into()))
    }
}

fn tags_of(r: &super::Rec) -> Vec<String> {
    r.get("tags")
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect()
}

async fn change(
    s: &Compute,
    id: &str,
    mut f: impl FnMut(&mut Vec<String>) -> Result<()> + Send + 'static,
) -> Result<Vec<String>> {
    let r = s
        .update(id, move |r| {
            let mut t = tags_of(r);
            f(&mut t)?;
            if t.len() > MAX_TAGS {
                return Err(Error::BadRequest(format!(
                    "A server holds at most {MAX_TAGS} tags."
                )));
            }
            r.insert("tags".into(), json!(t));
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("Instance {id} could not be found.")))?;
    Ok(tags_of(&r))
}

async fn list(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    need_version(mv)?;
    let s = svc(&app)?;
    let r = find_server(s, &auth, &param(&p, "id")).await?;
    Ok(Json(json!({ "tags": tags_of(&r) })))
}

#[derive(Deserialize)]
struct Tags {
    tags: Value,
}

async fn replace(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    need_version(mv)?;
    write_access(&auth)?;
    let s = svc(&app)?;
    let id = param(&p, "id");
    find_server(s, &auth, &id).await?;
    let body: Tags = parse_body(&bytes)?;
    let new = check_tags(&body.tags)?;
    let t = change(s, &id, move |t| {
        *t = new.clone();
        Ok(())
    })
    .await?;
    Ok(Json(json!({ "tags": t })))
}

async fn clear(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    need_version(mv)?;
    write_access(&auth)?;
    let s = svc(&app)?;
    let id = param(&p, "id");
    find_server(s, &auth, &id).await?;
    change(s, &id, |t| {
        t.clear();
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn check(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    need_version(mv)?;
    let s = svc(&app)?;
    let (id, tag) = (param(&p, "id"), param(&p, "tag"));
    let r = find_server(s, &auth, &id).await?;
    if tags_of(&r).contains(&tag) {
        Ok(empty(StatusCode::NO_CONTENT))
    } else {
        Err(no_such_tag(&tag, &id))
    }
}

async fn add(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    need_version(mv)?;
    write_access(&auth)?;
    let s = svc(&app)?;
    let (id, tag) = (param(&p, "id"), param(&p, "tag"));
    check_tag(&tag)?;
    let r = find_server(s, &auth, &id).await?;
    if tags_of(&r).contains(&tag) {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    let t2 = tag.clone();
    change(s, &id, move |t| {
        if !t.contains(&t2) {
            t.push(t2.clone());
        }
        Ok(())
    })
    .await?;
    let mut resp = StatusCode::CREATED.into_response();
    let loc = format!("{}/compute/v2.1/servers/{id}/tags/{tag}", app.base_url);
    if let Ok(v) = HeaderValue::from_str(&loc) {
        resp.headers_mut().insert("location", v);
    }
    Ok(resp)
}

async fn remove(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    need_version(mv)?;
    write_access(&auth)?;
    let s = svc(&app)?;
    let (id, tag) = (param(&p, "id"), param(&p, "tag"));
    let r = find_server(s, &auth, &id).await?;
    if !tags_of(&r).contains(&tag) {
        return Err(no_such_tag(&tag, &id));
    }
    change(s, &id, move |t| {
        t.retain(|x| *x != tag);
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_checked_as_nova_checks_them() {
        assert_eq!(check_tags(&json!(["a", "b", "a"])).unwrap(), vec!["a", "b"]);
        assert!(check_tags(&json!(["a/b"])).is_err());
        assert!(check_tags(&json!(["a,b"])).is_err());
        assert!(check_tags(&json!([""])).is_err());
        assert!(check_tags(&json!(["x".repeat(61)])).is_err());
        assert!(check_tags(&json!("a")).is_err());
        let many: Vec<String> = (0..51).map(|i| i.to_string()).collect();
        assert!(check_tags(&json!(many)).is_err());
    }
}
