//! Glance v2 over HTTP at `/image`: images (create, list with filters,
//! sorting and pagination, show, JSON-patch update, delete), data (upload
//! streamed to the store, download streamed back), tags, members,
//! deactivate/reactivate, and the schemas clients ask for.

use super::{now, Images, CONTAINER_FORMATS, DISK_FORMATS, READ_ONLY};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use ursa_core::error::{Error, Result};
use ursa_core::http::{empty, parse_body, Auth};

type Query = axum::extract::Query<HashMap<String, String>>;
type Img = Map<String, Value>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/image", get(versions))
        .route("/image/", get(versions))
        .route("/image/versions", get(versions))
        .route("/image/v2/images", get(list).post(create))
        .route(
            "/image/v2/images/{id}",
            get(show).patch(update).delete(remove),
        )
        .route(
            "/image/v2/images/{id}/tags/{tag}",
            put(add_tag).delete(remove_tag),
        )
        .route(
            "/image/v2/images/{id}/members",
            get(list_members).post(add_member),
        )
        .route(
            "/image/v2/images/{id}/members/{member}",
            get(show_member).put(set_member).delete(remove_member),
        )
        .route("/image/v2/images/{id}/actions/deactivate", post(deactivate))
        .route("/image/v2/images/{id}/actions/reactivate", post(reactivate))
        .route("/image/v2/schemas/image", get(schema_image))
        .route("/image/v2/schemas/images", get(schema_images))
        .route("/image/v2/schemas/member", get(schema_member))
        .route("/image/v2/schemas/members", get(schema_members))
        .route("/image/v2/info/import", get(import_info))
        .merge(crate::tasks::routes())
}

/// Data routes: no body limit on upload. Besides Glance's, the ticket
/// URLs compute nodes fetch images from and upload snapshots to
/// ([`Images::fetch_url`], [`Images::upload_url`]): the ticket is the
/// credential, good for one image, one direction and a limited time.
pub fn data_routes() -> Router<AppState> {
    Router::new()
        .route("/image/v2/images/{id}/file", put(upload).get(download))
        .merge(crate::tasks::data_routes())
        .route(
            "/image/ursa/data/{ticket}",
            get(ticket_download).put(ticket_upload),
        )
}

async fn ticket_download(
    State(state): State<AppState>,
    Path(ticket): Path<String>,
) -> Result<Response> {
    let id = images(&state).open_ticket(crate::FETCH, &ticket)?;
    let img = images(&state)
        .get(&id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("No image found with ID {id}")))?;
    data_response(&state, &img, &id).await
}

async fn ticket_upload(
    State(state): State<AppState>,
    Path(ticket): Path<String>,
    req: Request,
) -> Result<Response> {
    let id = images(&state).open_ticket(crate::UPLOAD, &ticket)?;
    let img = images(&state)
        .get(&id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("No image found with ID {id}")))?;
    if st(&img, "status") != "saving" {
        return Err(Error::Conflict(format!(
            "Image {id} is {}, not saving.",
            st(&img, "status")
        )));
    }
    images(&state)
        .take_data(&id, req.into_body().into_data_stream())
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub(crate) fn images(state: &AppState) -> &Images {
    &state.images
}

async fn versions(State(st): State<AppState>) -> Response {
    let v = |id: &str, status: &str| {
        json!({"id": id, "status": status,
               "links": [{"rel": "self", "href": format!("{}/image/v2/", st.base_url)}]})
    };
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": [
            v("v2.9", "CURRENT"), v("v2.8", "SUPPORTED"), v("v2.7", "SUPPORTED"),
            v("v2.6", "SUPPORTED"), v("v2.5", "SUPPORTED"), v("v2.4", "SUPPORTED"),
            v("v2.3", "SUPPORTED"), v("v2.2", "SUPPORTED"), v("v2.1", "SUPPORTED"),
            v("v2.0", "SUPPORTED")
        ]})),
    )
        .into_response()
}

/// The image as the API shows it.
fn view(img: &Img) -> Value {
    let mut out = img.clone();
    let id = img.get("id").and_then(|v| v.as_str()).unwrap_or("");
    out.insert("self".into(), json!(format!("/v2/images/{id}")));
    out.insert("file".into(), json!(format!("/v2/images/{id}/file")));
    out.insert("schema".into(), json!("/v2/schemas/image"));
    Value::Object(out)
}

fn st<'a>(img: &'a Img, k: &str) -> &'a str {
    img.get(k).and_then(|v| v.as_str()).unwrap_or("")
}

fn check_format(field: &str, v: &Value, allowed: &[&str]) -> Result<()> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) if allowed.contains(&s.as_str()) => Ok(()),
        _ => Err(Error::BadRequest(format!(
            "Invalid value for '{field}': {v}; one of {allowed:?} expected."
        ))),
    }
}

fn check_visibility(v: &Value) -> Result<()> {
    match v.as_str() {
        Some("public" | "private" | "shared" | "community") => Ok(()),
        _ => Err(Error::BadRequest(format!("Invalid visibility value: {v}"))),
    }
}

/// Checks one property a client sets (create or patch).
fn check_prop(auth: &Auth, k: &str, v: &Value) -> Result<()> {
    if k.starts_with("os_glance") {
        return Err(Error::Forbidden(format!("Attribute '{k}' is reserved.")));
    }
    if READ_ONLY.contains(&k) {
        return Err(Error::Forbidden(format!("Attribute '{k}' is read-only.")));
    }
    match k {
        "name" if !(v.is_null() || v.as_str().is_some_and(|s| s.chars().count() <= 255)) => {
            Err(Error::BadRequest(format!("Invalid name: {v}")))
        }
        "disk_format" => check_format(k, v, DISK_FORMATS),
        "container_format" => check_format(k, v, CONTAINER_FORMATS),
        "visibility" => {
            check_visibility(v)?;
            if v == "public" && !auth.0.is_admin() {
                return Err(Error::Forbidden(
                    "You are not authorized to publicize images.".into(),
                ));
            }
            Ok(())
        }
        "protected" | "os_hidden" if !v.is_boolean() => {
            Err(Error::BadRequest(format!("Invalid value for '{k}': {v}")))
        }
        "min_ram" | "min_disk" if v.as_i64().is_none_or(|n| n < 0) => Err(Error::BadRequest(
            format!("Invalid value for '{k}': {v}; a non-negative integer expected."),
        )),
        "tags" => {
            let ok = v.as_array().is_some_and(|a| {
                a.len() <= 128
                    && a.iter()
                        .all(|t| t.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 255))
            });
            if ok {
                Ok(())
            } else {
                Err(Error::BadRequest(format!("Invalid tags: {v}")))
            }
        }
        "id" => Err(Error::Forbidden("Attribute 'id' is read-only.".into())),
        "owner" if !auth.0.is_admin() => {
            Err(Error::Forbidden("Attribute 'owner' is reserved.".into()))
        }
        "owner" | "kernel_id" | "ramdisk_id" if !(v.is_null() || v.is_string()) => {
            Err(not_a_string(v))
        }
        _ if k.len() > 255 => Err(Error::BadRequest("Property name too long.".into())),
        "name" | "owner" | "kernel_id" | "ramdisk_id" | "protected" | "os_hidden" | "min_ram"
        | "min_disk" => Ok(()),
        // Glance's schema: every other property of an image is a string.
        _ if !v.is_string() => Err(not_a_string(v)),
        _ => Ok(()),
    }
}

fn not_a_string(v: &Value) -> Error {
    let mut shown = v.to_string();
    if shown.len() > 80 {
        shown = format!("{}…", shown.chars().take(80).collect::<String>());
    }
    Error::BadRequest(format!(
        "Provided object does not match schema 'image': {shown} is not of type 'string'"
    ))
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    body: axum::body::Bytes,
) -> Result<Response> {
    let body: Map<String, Value> = parse_body(&body)?;
    let project = auth.0.project_id().map(str::to_string).ok_or_else(|| {
        Error::Forbidden("Images belong to projects: use a project-scoped token.".into())
    })?;
    let id = match body.get("id") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(s)) if uuid::Uuid::parse_str(s).is_ok() => s.clone(),
        Some(v) => return Err(Error::BadRequest(format!("Invalid id: {v}"))),
    };
    if state.images.get(&id).await?.is_some() {
        return Err(Error::Conflict(format!(
            "An image with identifier {id} already exists"
        )));
    }
    let mut img: Img = crate::new_record(&id, &project);
    for (k, v) in body {
        if k == "id" {
            continue;
        }
        check_prop(&auth, &k, &v)?;
        if k == "tags" {
            let mut tags: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
            tags.sort();
            tags.dedup();
            img.insert(k, json!(tags));
        } else {
            img.insert(k, v);
        }
    }
    let img = images(&state).put(img).await?;
    Ok((StatusCode::CREATED, Json(view(&img))).into_response())
}

async fn show(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let (img, _) = images(&state).visible(&auth.0, &id).await?;
    Ok(Json(view(&img)))
}

async fn owned(state: &AppState, auth: &Auth, id: &str) -> Result<Img> {
    let (img, a) = images(state).visible(&auth.0, id).await?;
    if !a.owns {
        return Err(Error::Forbidden(format!(
            "You are not permitted to modify image {id}."
        )));
    }
    Ok(img)
}

async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    let img = owned(&state, &auth, &id).await?;
    if img.get("protected") == Some(&Value::Bool(true)) {
        return Err(Error::Forbidden(format!(
            "Image {id} is protected and cannot be deleted."
        )));
    }
    images(&state).delete(&id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn parse_sort(q: &HashMap<String, String>) -> Result<Vec<(String, bool)>> {
    const KEYS: &[&str] = &[
        "name",
        "status",
        "container_format",
        "disk_format",
        "size",
        "id",
        "created_at",
        "updated_at",
        "visibility",
        "owner",
        "min_disk",
        "min_ram",
    ];
    let mut out = Vec::new();
    if let Some(sort) = q.get("sort") {
        if q.contains_key("sort_key") || q.contains_key("sort_dir") {
            return Err(Error::BadRequest(
                "The 'sort' parameter cannot be combined with sort_key/sort_dir.".into(),
            ));
        }
        for part in sort.split(',') {
            let (k, d) = part.split_once(':').unwrap_or((part, "desc"));
            let k = k.trim();
            if !KEYS.contains(&k) {
                return Err(Error::BadRequest(format!("Invalid sort key: {k}.")));
            }
            let desc = match d.trim() {
                "asc" => false,
                "desc" => true,
                other => {
                    return Err(Error::BadRequest(format!(
                        "Invalid sort direction: {other}"
                    )))
                }
            };
            out.push((k.to_string(), desc));
        }
    } else {
        let keys: Vec<&str> = q
            .get("sort_key")
            .map(|s| s.split(',').collect())
            .unwrap_or_default();
        let dirs: Vec<&str> = q
            .get("sort_dir")
            .map(|s| s.split(',').collect())
            .unwrap_or_default();
        for (i, k) in keys.iter().enumerate() {
            let k = k.trim();
            if !KEYS.contains(&k) {
                return Err(Error::BadRequest(format!("Invalid sort key: {k}.")));
            }
            let d = dirs.get(i).or(dirs.first()).copied().unwrap_or("desc");
            let desc = match d {
                "asc" => false,
                "desc" => true,
                other => {
                    return Err(Error::BadRequest(format!(
                        "Invalid sort direction: {other}"
                    )))
                }
            };
            out.push((k.to_string(), desc));
        }
        if keys.is_empty() {
            if let Some(d) = dirs.first() {
                if !matches!(*d, "asc" | "desc") {
                    return Err(Error::BadRequest(format!("Invalid sort direction: {d}")));
                }
                out.push(("created_at".into(), *d == "desc"));
            }
        }
    }
    if out.is_empty() {
        out.push(("created_at".into(), true));
    }
    if !out.iter().any(|(k, _)| k == "id") {
        let last = out.last().map(|(_, d)| *d).unwrap_or(true);
        out.push(("id".into(), last));
    }
    Ok(out)
}

fn cmp_values(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// `in:a,b` or a plain value.
fn matches_filter(v: Option<&Value>, want: &str) -> bool {
    let cur = match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => return false,
        Some(x) => x.to_string(),
    };
    match want.strip_prefix("in:") {
        Some(list) => list.split(',').any(|w| w.trim() == cur),
        None => cur == want,
    }
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    q: Query,
    uri: axum::http::Uri,
) -> Result<Json<Value>> {
    let q = q.0;
    let svc = images(&state);
    let limit = match q.get("limit") {
        None => 25,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| Error::BadRequest(format!("limit param must be an integer: {l}")))?
            .min(1000),
    };
    let sort = parse_sort(&q)?;
    let vis = q.get("visibility").map(String::as_str);
    if let Some(v) = vis {
        if !matches!(v, "public" | "private" | "shared" | "community" | "all") {
            return Err(Error::BadRequest(format!("Invalid visibility value: {v}")));
        }
    }
    let member_status = q
        .get("member_status")
        .map(String::as_str)
        .unwrap_or("accepted");
    if !matches!(member_status, "accepted" | "pending" | "rejected" | "all") {
        return Err(Error::BadRequest(format!(
            "Invalid member_status: {member_status}"
        )));
    }
    let project = auth.0.project_id().unwrap_or("").to_string();
    let admin = auth.0.is_admin();
    let tags: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("tag="))
        .collect();
    let tags: Vec<String> = tags.iter().map(|t| percent_decode(t)).collect();
    let mut out: Vec<Img> = Vec::new();
    let mine = svc.memberships(&project).await?;
    for img in svc.listable(&auth.0).await? {
        let status = mine.get(st(&img, "id")).cloned();
        let a = crate::access_given(&auth.0, &img, status);
        if !a.visible {
            continue;
        }
        let v = st(&img, "visibility");
        let owner_is_me = st(&img, "owner") == project;
        let member_ok = a
            .member_status
            .as_deref()
            .is_some_and(|s| member_status == "all" || s == member_status);
        let listed = match vis {
            Some("all") => admin || owner_is_me || v == "public" || v == "community" || member_ok,
            Some(want) => {
                v == want
                    && match want {
                        "shared" => owner_is_me || member_ok || admin,
                        "private" => owner_is_me || admin,
                        _ => true,
                    }
            }
            None => {
                (admin && v != "community")
                    || match v {
                        "public" => true,
                        "community" => owner_is_me,
                        "shared" => owner_is_me || member_ok,
                        _ => owner_is_me,
                    }
            }
        };
        if !listed {
            continue;
        }
        if img.get("os_hidden") == Some(&Value::Bool(true))
            && q.get("os_hidden").map(String::as_str) != Some("true")
        {
            continue;
        }
        let mut keep = true;
        for (k, want) in &q {
            match k.as_str() {
                "limit" | "marker" | "sort" | "sort_key" | "sort_dir" | "visibility"
                | "member_status" | "tag" => {}
                "os_hidden" => {
                    let hidden = img.get("os_hidden") == Some(&Value::Bool(true));
                    keep &= want == "true" && hidden || want == "false" && !hidden;
                }
                "size_min" => {
                    let min: u64 = want
                        .parse()
                        .map_err(|_| Error::BadRequest(format!("Invalid size_min: {want}")))?;
                    keep &= img
                        .get("size")
                        .and_then(|v| v.as_u64())
                        .is_some_and(|s| s >= min);
                }
                "size_max" => {
                    let max: u64 = want
                        .parse()
                        .map_err(|_| Error::BadRequest(format!("Invalid size_max: {want}")))?;
                    keep &= img
                        .get("size")
                        .and_then(|v| v.as_u64())
                        .is_some_and(|s| s <= max);
                }
                "protected" => {
                    if want != "true" && want != "false" {
                        return Err(Error::BadRequest(format!("Invalid protected: {want}")));
                    }
                    keep &= img.get("protected").map(|v| v.to_string()).as_deref() == Some(want);
                }
                "created_at" | "updated_at" => {
                    // gt:/gte:/lt:/lte:/eq:/neq: TIME
                    let (op, t) = want.split_once(':').unwrap_or(("eq", want));
                    let cur = st(&img, k);
                    keep &= match op {
                        "gt" => cur > t,
                        "gte" => cur >= t,
                        "lt" => cur < t,
                        "lte" => cur <= t,
                        "neq" => cur != t,
                        _ => cur == t,
                    };
                }
                other => keep &= matches_filter(img.get(other), want),
            }
        }
        for t in &tags {
            keep &= img
                .get("tags")
                .and_then(|v| v.as_array())
                .is_some_and(|a| a.iter().any(|x| x == t.as_str()));
        }
        if keep {
            out.push(img);
        }
    }
    out.sort_by(|a, b| {
        for (k, desc) in &sort {
            let o = cmp_values(a.get(k), b.get(k));
            if o != std::cmp::Ordering::Equal {
                return if *desc { o.reverse() } else { o };
            }
        }
        std::cmp::Ordering::Equal
    });
    let start = match q.get("marker") {
        None => 0,
        Some(m) => {
            out.iter().position(|i| st(i, "id") == m).ok_or_else(|| {
                Error::BadRequest(format!("Invalid marker. Image {m} could not be found."))
            })? + 1
        }
    };
    let page: Vec<Value> = out.iter().skip(start).take(limit).map(view).collect();
    let mut body = json!({"images": page, "schema": "/v2/schemas/images", "first": "/v2/images"});
    if start + limit < out.len() && limit > 0 {
        if let Some(last) = out.get(start + limit - 1) {
            let mut params: Vec<String> = q
                .iter()
                .filter(|(k, _)| k.as_str() != "marker")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            params.push(format!("marker={}", st(last, "id")));
            body["next"] = json!(format!("/v2/images?{}", params.join("&")));
        }
    }
    Ok(Json(body))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(x) => {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// JSON patch (RFC 6902 subset Glance takes: add, replace, remove on
/// top-level properties and whole `/tags`).
async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/openstack-images-v2.1-json-patch")
        && !ct.starts_with("application/openstack-images-v2.0-json-patch")
    {
        return Err(Error::UnsupportedMediaType(format!(
            "Unsupported Content-Type {ct:?}: use application/openstack-images-v2.1-json-patch"
        )));
    }
    owned(&state, &auth, &id).await?;
    let ops: Vec<Value> = parse_body(&body)?;
    let mut checked = Vec::new();
    for op in &ops {
        let o = op
            .as_object()
            .ok_or_else(|| Error::BadRequest("A patch operation must be an object.".into()))?;
        // RFC 6902 ({"op": "replace", "path": "/name"}) or Glance's short
        // form ({"replace": "/name"}).
        let (kind, path) = match o.get("op").and_then(|v| v.as_str()) {
            Some(k) => (
                k,
                o.get("path")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| Error::BadRequest("A patch operation needs a path.".into()))?,
            ),
            None => ["add", "replace", "remove"]
                .iter()
                .find_map(|k| o.get(*k).and_then(|v| v.as_str()).map(|p| (*k, p)))
                .ok_or_else(|| {
                    Error::BadRequest("A patch operation needs an op and a path.".into())
                })?,
        };
        let name = path
            .strip_prefix('/')
            .filter(|p| !p.is_empty() && !p.contains('/'))
            .ok_or_else(|| {
                Error::BadRequest(format!("Invalid JSON pointer for this resource: '{path}'"))
            })?
            .replace("~1", "/")
            .replace("~0", "~");
        let value = o.get("value").cloned();
        match kind {
            "add" | "replace" => {
                let v =
                    value.ok_or_else(|| Error::BadRequest(format!("'{kind}' needs a value.")))?;
                check_prop(&auth, &name, &v)?;
                checked.push((kind.to_string(), name, Some(v)));
            }
            "remove" => {
                if name.starts_with("os_glance") {
                    return Err(Error::Forbidden(format!("Attribute '{name}' is reserved.")));
                }
                if READ_ONLY.contains(&name.as_str())
                    || matches!(
                        name.as_str(),
                        "id" | "name"
                            | "visibility"
                            | "protected"
                            | "disk_format"
                            | "container_format"
                            | "min_ram"
                            | "min_disk"
                            | "owner"
                            | "tags"
                            | "os_hidden"
                    )
                {
                    return Err(Error::Forbidden(format!(
                        "Property '{name}' cannot be removed."
                    )));
                }
                checked.push((kind.to_string(), name, None));
            }
            other => {
                return Err(Error::BadRequest(format!(
                    "Invalid operation: '{other}'; add, replace or remove expected."
                )))
            }
        }
    }
    let img = images(&state)
        .update(&id, move |img| {
            for (kind, name, v) in checked.clone() {
                match (kind.as_str(), v) {
                    ("replace", Some(_)) if !img.contains_key(&name) => {
                        return Err(Error::Conflict(format!("Property {name} does not exist.")))
                    }
                    (_, Some(mut v)) => {
                        if name == "tags" {
                            let mut t: Vec<String> = v
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect();
                            t.sort();
                            t.dedup();
                            v = json!(t);
                        }
                        img.insert(name, v);
                    }
                    (_, None) => {
                        if img.remove(&name).is_none() {
                            return Err(Error::Conflict(format!(
                                "Property {name} does not exist."
                            )));
                        }
                    }
                }
            }
            Ok(())
        })
        .await?;
    Ok(Json(view(&img)))
}

async fn add_tag(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response> {
    owned(&state, &auth, &id).await?;
    if tag.is_empty() || tag.len() > 255 {
        return Err(Error::BadRequest("Invalid tag.".into()));
    }
    images(&state)
        .update(&id, move |img| {
            let mut tags: Vec<Value> = img
                .get("tags")
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default();
            if !tags.iter().any(|t| t == tag.as_str()) {
                if tags.len() >= 128 {
                    return Err(Error::PayloadTooLarge("Maximum tags exceeded.".into()));
                }
                tags.push(json!(tag));
            }
            img.insert("tags".into(), json!(tags));
            Ok(())
        })
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn remove_tag(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response> {
    owned(&state, &auth, &id).await?;
    images(&state)
        .update(&id, move |img| {
            let mut tags: Vec<Value> = img
                .get("tags")
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default();
            let n = tags.len();
            tags.retain(|t| t != tag.as_str());
            if tags.len() == n {
                return Err(Error::NotFound(format!("Tag {tag} not found.")));
            }
            img.insert("tags".into(), json!(tags));
            Ok(())
        })
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn set_status(
    state: &AppState,
    auth: &Auth,
    id: &str,
    from: &str,
    to: &'static str,
) -> Result<Response> {
    let img = owned(state, auth, id).await?;
    let cur = st(&img, "status");
    if cur == to {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    if cur != from {
        return Err(Error::Forbidden(format!(
            "Image {id} is {cur}; only {from} images can become {to}."
        )));
    }
    images(state)
        .update(id, move |img| {
            img.insert("status".into(), json!(to));
            Ok(())
        })
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn deactivate(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    set_status(&state, &auth, &id, "active", "deactivated").await
}

async fn reactivate(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    set_status(&state, &auth, &id, "deactivated", "active").await
}

async fn upload(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response> {
    let img = owned(&state, &auth, &id).await?;
    match st(&img, "status") {
        "queued" => {}
        "saving" => return Err(Error::Conflict(format!("Image {id} is being uploaded."))),
        s => {
            return Err(Error::Conflict(format!(
                "Image status transition from {s} to saving is not allowed"
            )))
        }
    }
    if img.get("disk_format").is_none_or(|v| v.is_null())
        || img.get("container_format").is_none_or(|v| v.is_null())
    {
        return Err(Error::BadRequest(
            "Properties disk_format, container_format must be set prior to saving data.".into(),
        ));
    }
    let svc = images(&state);
    svc.update(&id, |img| {
        img.insert("status".into(), json!("saving"));
        Ok(())
    })
    .await?;
    let stream = req.into_body().into_data_stream();
    match svc.take_data(&id, stream).await {
        Ok(()) => Ok(empty(StatusCode::NO_CONTENT)),
        Err(Error::NotFound(m)) => Err(Error::NotFound(m)),
        Err(e) => {
            let _ = svc
                .update(&id, |img| {
                    img.insert("status".into(), json!("queued"));
                    Ok(())
                })
                .await;
            Err(e)
        }
    }
}

async fn download(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    let (img, a) = images(&state).visible(&auth.0, &id).await?;
    match st(&img, "status") {
        "active" => {}
        "deactivated" if !a.owns || !auth.0.is_admin() => {
            return Err(Error::Forbidden(format!("Image {id} is deactivated.")))
        }
        "deactivated" => {}
        _ => return Ok(empty(StatusCode::NO_CONTENT)),
    }
    data_response(&state, &img, &id).await
}

/// Image `id`'s bytes, streamed, with their length and MD5.
async fn data_response(state: &AppState, img: &Img, id: &str) -> Result<Response> {
    let data = images(state)
        .store
        .open(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("Image {id} has no data.")))?;
    let len = data.size;
    let mut resp = Response::new(Body::from_stream(data.bytes));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().expect("static"),
    );
    h.insert(
        header::CONTENT_LENGTH,
        len.to_string().parse().expect("number"),
    );
    if let Ok(v) = st(img, "checksum").parse() {
        h.insert("content-md5", v);
    }
    Ok(resp)
}

fn member_view(m: &Img) -> Value {
    let mut out = m.clone();
    out.insert("schema".into(), json!("/v2/schemas/member"));
    Value::Object(out)
}

async fn list_members(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let (img, a) = images(&state).visible(&auth.0, &id).await?;
    if st(&img, "visibility") != "shared" {
        return Err(Error::Forbidden(format!(
            "Image {id} is not shared; it has no members."
        )));
    }
    let me = auth.0.project_id().unwrap_or("");
    let members: Vec<Value> = images(&state)
        .members(&id)
        .await?
        .iter()
        .filter(|m| a.owns || st(m, "member_id") == me)
        .map(member_view)
        .collect();
    Ok(Json(
        json!({"members": members, "schema": "/v2/schemas/members"}),
    ))
}

async fn add_member(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let img = owned(&state, &auth, &id).await?;
    let body: Map<String, Value> = parse_body(&body)?;
    let member = body
        .get("member")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or_else(|| Error::BadRequest("'member' (a project id) is required.".into()))?
        .to_string();
    if st(&img, "visibility") != "shared" {
        return Err(Error::Forbidden(format!(
            "Image {id} is not shared (visibility {}); members need shared images.",
            st(&img, "visibility")
        )));
    }
    if images(&state).member(&id, &member).await?.is_some() {
        return Err(Error::Conflict(format!(
            "Project {member} is already a member of image {id}."
        )));
    }
    let now = now();
    let m: Img = json!({"image_id": id, "member_id": member, "status": "pending",
                        "created_at": now, "updated_at": now})
    .as_object()
    .cloned()
    .expect("object");
    images(&state).put_member(m.clone()).await?;
    Ok(Json(member_view(&m)))
}

async fn show_member(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, member)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let (_, a) = images(&state).visible(&auth.0, &id).await?;
    let me = auth.0.project_id().unwrap_or("");
    let m = images(&state)
        .member(&id, &member)
        .await?
        .filter(|_| a.owns || member == me)
        .ok_or_else(|| Error::NotFound(format!("Member {member} of image {id} not found.")))?;
    Ok(Json(member_view(&m)))
}

async fn set_member(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, member)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let (_, a) = images(&state).visible(&auth.0, &id).await?;
    let body: Map<String, Value> = parse_body(&body)?;
    let status = body
        .get("status")
        .and_then(|v| v.as_str())
        .filter(|s| matches!(*s, "accepted" | "rejected" | "pending"))
        .ok_or_else(|| Error::BadRequest("'status' must be accepted, rejected or pending.".into()))?
        .to_string();
    let me = auth.0.project_id().unwrap_or("");
    let mut m = images(&state)
        .member(&id, &member)
        .await?
        .filter(|_| a.owns || member == me)
        .ok_or_else(|| Error::NotFound(format!("Member {member} of image {id} not found.")))?;
    if member != me {
        return Err(Error::Forbidden(
            "Only the member itself may change its status.".into(),
        ));
    }
    m.insert("status".into(), json!(status));
    m.insert("updated_at".into(), json!(now()));
    images(&state).put_member(m.clone()).await?;
    Ok(Json(member_view(&m)))
}

async fn remove_member(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, member)): Path<(String, String)>,
) -> Result<Response> {
    let (_, a) = images(&state).visible(&auth.0, &id).await?;
    if images(&state).member(&id, &member).await?.is_none() {
        return Err(Error::NotFound(format!(
            "Member {member} of image {id} not found."
        )));
    }
    if !a.owns {
        return Err(Error::Forbidden(
            "Only the image owner may remove members.".into(),
        ));
    }
    images(&state).delete_member(&id, &member).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn image_schema() -> Value {
    let s = |t: Value| json!({"type": t});
    let mut props = Map::new();
    for (k, t) in [
        ("id", json!("string")),
        ("name", json!(["null", "string"])),
        ("status", json!("string")),
        ("visibility", json!("string")),
        ("protected", json!("boolean")),
        ("os_hidden", json!("boolean")),
        ("checksum", json!(["null", "string"])),
        ("os_hash_algo", json!(["null", "string"])),
        ("os_hash_value", json!(["null", "string"])),
        ("owner", json!(["null", "string"])),
        ("size", json!(["null", "integer"])),
        ("virtual_size", json!(["null", "integer"])),
        ("min_ram", json!("integer")),
        ("min_disk", json!("integer")),
        ("disk_format", json!(["null", "string"])),
        ("container_format", json!(["null", "string"])),
        ("created_at", json!("string")),
        ("updated_at", json!("string")),
        ("tags", json!("array")),
        ("self", json!("string")),
        ("file", json!("string")),
        ("schema", json!("string")),
    ] {
        props.insert(k.into(), s(t));
    }
    json!({"name": "image", "properties": props, "additionalProperties": {"type": "string"},
           "links": [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
                     {"rel": "describedby", "href": "{schema}"}]})
}

async fn schema_image() -> Json<Value> {
    Json(image_schema())
}

async fn schema_images() -> Json<Value> {
    Json(json!({"name": "images", "properties": {
        "images": {"type": "array", "items": image_schema()},
        "schema": {"type": "string"}, "first": {"type": "string"}, "next": {"type": "string"}},
        "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"},
                  {"rel": "describedby", "href": "{schema}"}]}))
}

fn member_schema() -> Value {
    json!({"name": "member", "properties": {
        "image_id": {"type": "string"}, "member_id": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "accepted", "rejected"]},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"},
        "schema": {"type": "string"}}})
}

async fn schema_member() -> Json<Value> {
    Json(member_schema())
}

async fn schema_members() -> Json<Value> {
    Json(json!({"name": "members", "properties": {
        "members": {"type": "array", "items": member_schema()}, "schema": {"type": "string"}}}))
}

async fn import_info() -> Json<Value> {
    Json(json!({"import-methods": {
        "description": "Import methods available.", "type": "array",
        "value": crate::tasks::METHODS}}))
}
