//! Image import: Glance's interoperable import (`PUT /v2/images/{id}/stage`
//! then `POST /v2/images/{id}/import` with `glance-direct`, or
//! `web-download` from a URL) and the older tasks API (`/v2/tasks`, type
//! `import`, admins only as in Glance). Each import is a task (documents
//! of kind `image_task`) that goes `pending` → `processing` → `success`
//! (its `result` names the image) or `failure` (its `message` says why),
//! and is kept for 48 hours (`expires_at`; the next task stored deletes
//! the expired ones), as Glance keeps them.
//!
//! A download reads `http`/`https` URLs only, streams the body into the
//! image store (hashed on the way), and makes the image `active`.

use crate::api::images;
use crate::{now, s, AppState, Images};
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{empty, parse_body, Auth, RequestId};
use ursa_core::store::Op;

const TASK: &str = "image_task";

/// The import methods offered (`GET /v2/info/import`).
pub const METHODS: &[&str] = &["glance-direct", "web-download"];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/image/v2/tasks", get(list).post(create))
        .route("/image/v2/tasks/{id}", get(show))
        .route("/image/v2/images/{id}/import", post(import))
        .route("/image/v2/images/{id}/tasks", get(image_tasks))
        .route("/image/v2/schemas/task", get(task_schema))
        .route("/image/v2/schemas/tasks", get(tasks_schema))
}

/// The staging route (no body limit, as image data).
pub fn data_routes() -> Router<AppState> {
    Router::new().route("/image/v2/images/{id}/stage", put(stage))
}

fn view(t: &Map<String, Value>, with_image: bool) -> Value {
    let mut v = json!({"id": t["id"], "type": t["type"], "status": t["status"],
        "input": t.get("input").cloned().unwrap_or(json!({})),
        "result": t.get("result").cloned().unwrap_or(Value::Null),
        "owner": t["owner"], "message": t.get("message").cloned().unwrap_or(json!("")),
        "expires_at": t.get("expires_at").cloned().unwrap_or(Value::Null),
        "created_at": t["created_at"], "updated_at": t["updated_at"],
        "self": format!("/v2/tasks/{}", s(t, "id")), "schema": "/v2/schemas/task"});
    if with_image {
        v["image_id"] = t["image_id"].clone();
        v["request_id"] = t["request_id"].clone();
        v["user_id"] = t["user_id"].clone();
    }
    v
}

/// Stores a task; tasks past their `expires_at` go in the same write
/// (Glance's task time to live), so they never pile up.
async fn put_task(imgs: &Images, t: Map<String, Value>) -> Result<()> {
    let id = s(&t, "id").to_string();
    let owner = s(&t, "owner").to_string();
    let now = now();
    imgs.identity
        .change(move |m| {
            let mut ops: Vec<Op> = m
                .docs_of(TASK)
                .filter(|x| x["expires_at"].as_str().is_some_and(|e| e < now.as_str()))
                .filter_map(|x| x["id"].as_str())
                .filter(|x| *x != id)
                .map(|x| Op::delete(TASK, x))
                .collect();
            ops.push(Op::put(TASK, &id, &owner, &id, Value::Object(t.clone())));
            Ok((ops, ()))
        })
        .await
}

/// Records a task's progress (status, and result or message).
async fn settle(imgs: &Images, id: &str, status: &str, result: Value, message: &str) {
    let Some(mut t) = imgs
        .identity
        .model()
        .doc(TASK, id)
        .and_then(|v| v.as_object().cloned())
    else {
        return;
    };
    let now = now();
    t.insert("status".into(), json!(status));
    t.insert("result".into(), result);
    t.insert("message".into(), json!(message));
    t.insert("updated_at".into(), json!(now));
    if matches!(status, "success" | "failure") {
        let until = chrono::Utc::now() + chrono::Duration::hours(48);
        t.insert(
            "expires_at".into(),
            json!(until.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        );
    }
    if let Err(e) = put_task(imgs, t).await {
        tracing::error!(task = id, error = %e, "recording an import task");
    }
}

fn new_task(
    kind: &str,
    input: Value,
    owner: &str,
    image: &str,
    auth: &Auth,
    req: &str,
) -> Map<String, Value> {
    let now = now();
    json!({"id": uuid::Uuid::new_v4().to_string(), "type": kind, "status": "pending",
        "input": input, "result": null, "owner": owner, "message": "", "expires_at": null,
        "created_at": now, "updated_at": now, "image_id": image, "request_id": req,
        "user_id": auth.0.user_id})
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// Streams `url` into image `id` (made active); the task records how it
/// went.
fn spawn_download(imgs: Images, task: String, id: String, url: String) {
    tokio::spawn(async move {
        settle(&imgs, &task, "processing", Value::Null, "").await;
        let r: std::result::Result<(), String> = async {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{url} is not an http(s) URL"));
            }
            let resp = reqwest::get(&url).await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("GET {url}: {}", resp.status()));
            }
            imgs.take_data(&id, resp.bytes_stream())
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match r {
            Ok(()) => settle(&imgs, &task, "success", json!({"image_id": id}), "").await,
            Err(e) => {
                tracing::warn!(image = %id, error = %e, "image import failed");
                // Back to queued, and said the way Glance says a store
                // failed to import (what clients wait on).
                let _ = imgs
                    .update(&id, |img| {
                        if s(img, "status") == "importing" {
                            img.insert("status".into(), json!("queued"));
                        }
                        img.insert("os_glance_failed_import".into(), json!("default"));
                        img.insert("os_glance_importing_to_stores".into(), json!(""));
                        Ok(())
                    })
                    .await;
                settle(&imgs, &task, "failure", Value::Null, &e).await;
            }
        }
    });
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskBody {
    #[serde(rename = "type")]
    kind: String,
    input: TaskInput,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct TaskInput {
    import_from: String,
    #[serde(default)]
    import_from_format: Option<String>,
    #[serde(default)]
    image_properties: Map<String, Value>,
}

fn admin(auth: &Auth) -> Result<()> {
    if auth.0.is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "You are not authorized to complete tasks_api_access action.".into(),
        ))
    }
}

/// `POST /v2/tasks` (type `import`): a new image from a URL.
async fn create(
    State(state): State<AppState>,
    auth: Auth,
    req: RequestId,
    bytes: Bytes,
) -> Result<Response> {
    admin(&auth)?;
    let b: TaskBody = parse_body(&bytes)?;
    if b.kind != "import" {
        return Err(Error::BadRequest(format!(
            "Task type {} is not supported (import is).",
            b.kind
        )));
    }
    let project = auth.0.project_id().unwrap_or_default().to_string();
    let imgs = images(&state).clone();
    let image_id = uuid::Uuid::new_v4().to_string();
    let mut img = crate::new_record(&image_id, &project);
    for (k, v) in &b.input.image_properties {
        if !matches!(k.as_str(), "id" | "status" | "owner" | "size" | "checksum") {
            img.insert(k.clone(), v.clone());
        }
    }
    if let Some(f) = &b.input.import_from_format {
        img.entry("disk_format").or_insert(json!(f));
        if img["disk_format"].is_null() {
            img.insert("disk_format".into(), json!(f));
        }
    }
    if img["container_format"].is_null() {
        img.insert("container_format".into(), json!("bare"));
    }
    img.insert("status".into(), json!("importing"));
    imgs.put(img).await?;
    let input = serde_json::to_value(&b.input).unwrap_or(Value::Null);
    let t = new_task("import", input, &project, &image_id, &auth, &req.0);
    let tid = s(&t, "id").to_string();
    put_task(&imgs, t.clone()).await?;
    spawn_download(imgs, tid, image_id, b.input.import_from.clone());
    Ok((StatusCode::CREATED, Json(view(&t, false))).into_response())
}

async fn list(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    admin(&auth)?;
    let m = images(&state).identity.model();
    let mut v: Vec<Value> = m
        .docs_of(TASK)
        .filter_map(|t| t.as_object())
        .map(|t| {
            let mut v = view(t, false);
            if let Some(o) = v.as_object_mut() {
                o.remove("input");
                o.remove("result");
            }
            v
        })
        .collect();
    v.sort_by(|a, b| b["created_at"].as_str().cmp(&a["created_at"].as_str()));
    Ok(Json(
        json!({"tasks": v, "first": "/v2/tasks", "schema": "/v2/schemas/tasks"}),
    ))
}

async fn show(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    admin(&auth)?;
    let m = images(&state).identity.model();
    let t = m
        .doc(TASK, &id)
        .and_then(|t| t.as_object())
        .ok_or_else(|| Error::NotFound(format!("Task with the given id {id} not found")))?;
    Ok(Json(view(t, false)))
}

/// `GET /v2/images/{id}/tasks`: the image's import tasks.
async fn image_tasks(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let imgs = images(&state);
    imgs.visible(&auth.0, &id).await?;
    let m = imgs.identity.model();
    let mut v: Vec<Value> = m
        .docs_of(TASK)
        .filter_map(|t| t.as_object())
        .filter(|t| t["image_id"] == id.as_str())
        .map(|t| view(t, true))
        .collect();
    v.sort_by(|a, b| a["created_at"].as_str().cmp(&b["created_at"].as_str()));
    Ok(Json(json!({ "tasks": v })))
}

/// `PUT /v2/images/{id}/stage`: the data a `glance-direct` import makes
/// the image's; the image is `uploading` until then.
async fn stage(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response> {
    let imgs = images(&state);
    let (img, a) = imgs.visible(&auth.0, &id).await?;
    if !a.owns {
        return Err(Error::Forbidden(format!(
            "You are not permitted to modify image {id}."
        )));
    }
    if s(&img, "status") != "queued" {
        return Err(Error::Conflict(format!(
            "Image {id} is {}: only a queued image takes staged data.",
            s(&img, "status")
        )));
    }
    imgs.stage_data(&id, req.into_body().into_data_stream())
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[derive(Deserialize)]
struct ImportBody {
    method: ImportMethod,
    #[serde(default)]
    #[allow(dead_code)]
    stores: Option<Vec<String>>,
    #[serde(default)]
    #[allow(dead_code)]
    all_stores: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    all_stores_must_succeed: Option<bool>,
}

#[derive(Deserialize)]
struct ImportMethod {
    name: String,
    #[serde(default)]
    uri: Option<String>,
}

/// `POST /v2/images/{id}/import`: `glance-direct` (the staged data) or
/// `web-download` (a URL).
async fn import(
    State(state): State<AppState>,
    auth: Auth,
    req: RequestId,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response> {
    let imgs = images(&state).clone();
    let (img, a) = imgs.visible(&auth.0, &id).await?;
    if !a.owns {
        return Err(Error::Forbidden(format!(
            "You are not permitted to modify image {id}."
        )));
    }
    let b: ImportBody = parse_body(&bytes)?;
    if img.get("disk_format").is_none_or(|v| v.is_null())
        || img.get("container_format").is_none_or(|v| v.is_null())
    {
        return Err(Error::BadRequest(
            "'disk_format' and 'container_format' must be set prior to importing data.".into(),
        ));
    }
    let owner = s(&img, "owner").to_string();
    let input = json!({"import_req": {"method": {"name": b.method.name, "uri": b.method.uri}}});
    match b.method.name.as_str() {
        "glance-direct" => {
            if s(&img, "status") != "uploading" {
                return Err(Error::Conflict(format!(
                    "Image needs to be staged before 'glance-direct' method can be used (it is {}).",
                    s(&img, "status")
                )));
            }
            let t = new_task("api_image_import", input, &owner, &id, &auth, &req.0);
            let tid = s(&t, "id").to_string();
            put_task(&imgs, t).await?;
            match imgs.activate_staged(&id).await {
                Ok(()) => settle(&imgs, &tid, "success", json!({"image_id": id}), "").await,
                Err(e) => {
                    settle(&imgs, &tid, "failure", Value::Null, &e.to_string()).await;
                    return Err(e);
                }
            }
        }
        "web-download" => {
            let uri = b
                .method
                .uri
                .clone()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| Error::BadRequest("web-download needs the method's uri.".into()))?;
            if s(&img, "status") != "queued" {
                return Err(Error::Conflict(format!(
                    "Image {id} is {}: only a queued image can be imported.",
                    s(&img, "status")
                )));
            }
            imgs.update(&id, |i| {
                i.insert("status".into(), json!("importing"));
                i.remove("os_glance_failed_import");
                Ok(())
            })
            .await?;
            let t = new_task("api_image_import", input, &owner, &id, &auth, &req.0);
            let tid = s(&t, "id").to_string();
            put_task(&imgs, t).await?;
            spawn_download(imgs, tid, id.clone(), uri);
        }
        other => {
            return Err(Error::BadRequest(format!(
                "Import method {other} is not one of {METHODS:?}."
            )))
        }
    }
    Ok(empty(StatusCode::ACCEPTED))
}

async fn task_schema() -> Json<Value> {
    Json(json!({"name": "task", "properties": {
        "id": {"type": "string"}, "type": {"type": "string", "enum": ["import"]},
        "status": {"type": "string", "enum": ["pending", "processing", "success", "failure"]},
        "input": {"type": ["null", "object"]}, "result": {"type": ["null", "object"]},
        "owner": {"type": "string"}, "message": {"type": "string"},
        "expires_at": {"type": ["null", "string"]}, "created_at": {"type": "string"},
        "updated_at": {"type": "string"}, "self": {"type": "string"}, "schema": {"type": "string"}}}))
}

async fn tasks_schema() -> Json<Value> {
    let t = task_schema().await.0;
    Json(
        json!({"name": "tasks", "properties": {"tasks": {"type": "array", "items": t},
        "schema": {"type": "string"}, "first": {"type": "string"}, "next": {"type": "string"}}}),
    )
}
