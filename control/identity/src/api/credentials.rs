//! Credentials (`/v3/credentials`) and EC2 credentials
//! (`/v3/users/{id}/credentials/OS-EC2`), which Keystone keeps as
//! credentials of type `ec2` whose id is the SHA-256 of the access key.

use super::{collection_links, member, self_link, Query};
use crate::model::Model;
use crate::AppState;
use crate::{new_id, sha256_hex};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{Auth, Body};
use ursa_core::policy::{enforce, Caller};
use ursa_core::store::Op;

const KIND: &str = "credential";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/credentials", get(list).post(create))
        .route(
            "/v3/credentials/{id}",
            get(show).patch(update).delete(delete),
        )
        .route(
            "/v3/users/{user}/credentials/OS-EC2",
            get(ec2_list).post(ec2_create),
        )
        .route(
            "/v3/users/{user}/credentials/OS-EC2/{access}",
            get(ec2_show).delete(ec2_delete),
        )
}

fn may_use(c: &Caller, cred: &Value) -> bool {
    c.is_admin() || cred["user_id"].as_str() == Some(c.user_id.as_str())
}

fn present(state: &AppState, v: &Value) -> Value {
    let mut v = v.clone();
    v["links"] = self_link(
        state,
        &format!("credentials/{}", v["id"].as_str().unwrap_or_default()),
    );
    v
}

fn found<'a>(m: &'a Model, id: &str) -> Result<&'a Value> {
    m.doc(KIND, id)
        .ok_or_else(|| Error::not_found("credential", id))
}

fn validate(m: &Model, b: &Map<String, Value>, create: bool) -> Result<()> {
    for f in ["user_id", "type", "blob"] {
        match b.get(f) {
            Some(Value::String(s)) if !s.is_empty() => {}
            None if !create => {}
            _ => {
                return Err(Error::BadRequest(format!(
                    "'{f}' must be a non-empty string."
                )))
            }
        }
    }
    if let Some(u) = b.get("user_id").and_then(Value::as_str) {
        if !m.users.contains_key(u) {
            return Err(Error::BadRequest(format!("User {u} does not exist.")));
        }
    }
    if b.get("type").and_then(Value::as_str) == Some("ec2")
        && b.get("project_id").and_then(Value::as_str).is_none()
        && create
    {
        return Err(Error::BadRequest(
            "An ec2 credential needs a project_id.".into(),
        ));
    }
    Ok(())
}

async fn list(State(state): State<AppState>, Auth(c): Auth, q: Query) -> Result<Json<Value>> {
    let m = state.identity.model();
    let out: Vec<Value> = m
        .docs_of(KIND)
        .filter(|d| may_use(&c, d))
        .filter(|d| q.get("user_id").is_none_or(|u| d["user_id"] == u.as_str()))
        .filter(|d| q.get("type").is_none_or(|t| d["type"] == t.as_str()))
        .map(|d| present(&state, d))
        .collect();
    Ok(Json(
        json!({"credentials": out, "links": collection_links(&state, "credentials")}),
    ))
}

async fn create(
    State(state): State<AppState>,
    Auth(c): Auth,
    Body(body): Body<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let mut b = member(body, "credential")?;
    b.remove("links");
    enforce(may_use(&c, &Value::Object(b.clone())), "create_credential")?;
    let doc = state
        .identity
        .change(|m| {
            validate(m, &b, true)?;
            let id = if b["type"] == "ec2" {
                let blob: Value = serde_json::from_str(b["blob"].as_str().unwrap_or_default())
                    .map_err(|_| {
                        Error::BadRequest("An ec2 blob must be JSON with an access key.".into())
                    })?;
                sha256_hex(
                    blob["access"]
                        .as_str()
                        .ok_or_else(|| Error::BadRequest("An ec2 blob needs 'access'.".into()))?,
                )
            } else {
                new_id()
            };
            if m.doc(KIND, &id).is_some() {
                return Err(Error::Conflict(format!("Duplicate credential {id}.")));
            }
            b.insert("id".into(), json!(id));
            b.entry("project_id").or_insert(Value::Null);
            let doc = Value::Object(b.clone());
            Ok((vec![Op::put(KIND, &id, "", &id, &doc)], doc))
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"credential": present(&state, &doc)})),
    ))
}

async fn show(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let d = found(&m, &id)?;
    enforce(may_use(&c, d), "get_credential")?;
    Ok(Json(json!({"credential": present(&state, d)})))
}

async fn update(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(body): Body<Value>,
) -> Result<Json<Value>> {
    let mut b = member(body, "credential")?;
    b.remove("links");
    b.remove("id");
    let doc = state
        .identity
        .change(|m| {
            let old = found(m, &id)?;
            enforce(may_use(&c, old), "update_credential")?;
            validate(m, &b, false)?;
            let mut doc = old.clone();
            if let Some(o) = doc.as_object_mut() {
                o.extend(b.clone());
            }
            Ok((vec![Op::put(KIND, &id, "", &id, &doc)], doc))
        })
        .await?;
    Ok(Json(json!({"credential": present(&state, &doc)})))
}

async fn delete(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state
        .identity
        .change(|m| {
            enforce(may_use(&c, found(m, &id)?), "delete_credential")?;
            Ok((vec![Op::delete(KIND, &id)], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- EC2 ---------------------------------------------------------------

fn ec2_json(state: &AppState, cred: &Value) -> Option<Value> {
    let blob: Value = serde_json::from_str(cred["blob"].as_str()?).ok()?;
    let user = cred["user_id"].as_str()?;
    let access = blob["access"].as_str()?;
    Some(json!({
        "user_id": user, "tenant_id": cred["project_id"], "access": access, "secret": blob["secret"],
        "trust_id": blob.get("trust_id").cloned().unwrap_or(Value::Null),
        "links": {"self": format!("{}/users/{user}/credentials/OS-EC2/{access}", state.v3())},
    }))
}

fn ec2_allowed(c: &Caller, m: &Model, user: &str, action: &str) -> Result<()> {
    m.users
        .get(user)
        .ok_or_else(|| Error::not_found("user", user))?;
    enforce(c.is_admin() || c.is_user(user), action)
}

async fn ec2_create(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(user): Path<String>,
    Body(body): Body<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let project = body
        .get("tenant_id")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::BadRequest("'tenant_id' is a required property.".into()))?
        .to_string();
    let doc = state
        .identity
        .change(|m| {
            ec2_allowed(&c, m, &user, "ec2_create_credential")?;
            m.project(&project).ok_or_else(|| Error::not_found("project", &project))?;
            let access = new_id();
            let blob = json!({"access": access, "secret": new_id(), "trust_id": null}).to_string();
            let id = sha256_hex(&access);
            let doc = json!({"id": id, "user_id": user, "project_id": project, "type": "ec2", "blob": blob});
            Ok((vec![Op::put(KIND, &id, "", &id, &doc)], doc))
        })
        .await?;
    let out = ec2_json(&state, &doc).expect("well-formed");
    Ok((StatusCode::CREATED, Json(json!({"credential": out}))))
}

async fn ec2_list(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(user): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    ec2_allowed(&c, &m, &user, "ec2_list_credentials")?;
    let out: Vec<Value> = m
        .docs_of(KIND)
        .filter(|d| d["type"] == "ec2" && d["user_id"] == user.as_str())
        .filter_map(|d| ec2_json(&state, d))
        .collect();
    Ok(Json(
        json!({"credentials": out, "links": collection_links(&state, &format!("users/{user}/credentials/OS-EC2"))}),
    ))
}

fn ec2_found<'a>(m: &'a Model, user: &str, access: &str) -> Result<&'a Value> {
    m.doc(KIND, &sha256_hex(access))
        .filter(|d| d["type"] == "ec2" && d["user_id"] == user)
        .ok_or_else(|| Error::not_found("credential", access))
}

async fn ec2_show(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((user, access)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    ec2_allowed(&c, &m, &user, "ec2_get_credential")?;
    let d = ec2_found(&m, &user, &access)?;
    Ok(Json(json!({"credential": ec2_json(&state, d)})))
}

async fn ec2_delete(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((user, access)): Path<(String, String)>,
) -> Result<StatusCode> {
    state
        .identity
        .change(|m| {
            ec2_allowed(&c, m, &user, "ec2_delete_credential")?;
            ec2_found(m, &user, &access)?;
            Ok((vec![Op::delete(KIND, &sha256_hex(&access))], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
