//! attachments: Cinder's attachments API (3.27; complete 3.44, attach
//! mode 3.54) over [`crate::attach`]: reserve, connect, complete, list,
//! show, delete.

use super::*;
use crate::attach::{status_of, Asker};
use crate::record_table::AttachmentFilter;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    attachment: NewAttachment,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAttachment {
    #[serde(default)]
    volume_uuid: Option<String>,
    #[serde(default)]
    instance_uuid: Option<String>,
    #[serde(default)]
    connector: Option<Map<String, Value>>,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    attachment: AttachmentChange,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachmentChange {
    #[serde(default)]
    connector: Option<Map<String, Value>>,
}

/// The attachment's one action (`{"os-complete": null}`).
#[derive(Deserialize)]
enum Action {
    #[serde(rename = "os-complete")]
    Complete(#[allow(dead_code)] Option<Value>),
}

fn since_27(mv: Micro) -> Result<()> {
    if mv.0 < 27 {
        return Err(Error::NotFound(
            "The attachments API needs microversion 3.27.".into(),
        ));
    }
    Ok(())
}

fn asker(auth: &Auth) -> Asker {
    Asker {
        project: auth.0.project_id().map(str::to_string),
        admin: auth.0.is_admin(),
    }
}

fn reader(auth: &Auth) -> Asker {
    Asker {
        admin: auth.0.is_reader_everywhere(),
        ..asker(auth)
    }
}

fn bad(e: Error) -> Error {
    match e {
        Error::BadRequest(m) => Error::BadRequest(format!("Invalid input for the attachment: {m}")),
        e => e,
    }
}

fn time(v: &Value) -> Value {
    match v.as_str() {
        Some(t) if !t.is_empty() => json!(t),
        _ => json!(""),
    }
}

/// Cinder's attachment view (`detail`: with times, mode and connection).
fn view(a: &Value, detail: bool) -> Value {
    let mut out = json!({"id": a["attachment_id"], "status": status_of(a),
                         "instance": a["server_id"], "volume_id": a["volume_id"]});
    if detail {
        out["attached_at"] = time(&a["attached_at"]);
        out["detached_at"] = json!("");
        out["attach_mode"] = a
            .get("ursa:mode")
            .filter(|m| m.is_string())
            .cloned()
            .unwrap_or(json!("rw"));
        out["connection_info"] = a.get("ursa:connection_info").cloned().unwrap_or(json!({}));
    }
    out
}

async fn list_any(
    state: &AppState,
    auth: &Auth,
    mv: Micro,
    q: &HashMap<String, String>,
    detail: bool,
) -> Result<Json<Value>> {
    since_27(mv)?;
    let s = svc(state)?;
    let all = auth.0.is_reader_everywhere() && q.contains_key("all_tenants");
    let mut f = AttachmentFilter {
        project: if all { None } else { Some(project(auth)?) },
        ..Default::default()
    };
    for (k, v) in q {
        match k.as_str() {
            "volume_id" => f.volume = Some(v.clone()),
            "instance_id" | "instance_uuid" => f.server = Some(v.clone()),
            "status" | "attach_status" => f.status = Some(v.clone()),
            "limit" => {
                f.limit = Some(v.parse().map_err(|_| {
                    Error::BadRequest(format!("Invalid input received: limit {v:?}."))
                })?)
            }
            "offset" => {
                f.offset = v.parse().map_err(|_| {
                    Error::BadRequest(format!("Invalid input received: offset {v:?}."))
                })?
            }
            "marker" => f.marker = Some(v.clone()),
            "all_tenants" | "sort" | "sort_key" | "sort_dir" => {}
            other if mv.0 >= 31 && !auth.0.is_admin() => {
                return Err(Error::BadRequest(format!(
                    "Invalid filters {other} are found in query options."
                )))
            }
            _ => {}
        }
    }
    let ask = reader(auth);
    if let Some(m) = &f.marker {
        s.attachment(&ask, m).await?;
    }
    let ids = {
        let mut c = s.conn().await?;
        crate::record_table::attachment_ids(&mut c, &f).await?
    };
    let mut out = Vec::with_capacity(ids.len());
    let mut vols: HashMap<String, Rec> = HashMap::new();
    for (aid, vid) in ids {
        if !vols.contains_key(&vid) {
            if let Some(v) = s.record(crate::VOLUME, &vid).await? {
                vols.insert(vid.clone(), v);
            }
        }
        let entry = vols.get(&vid).and_then(|v| {
            v.get("attachments")?
                .as_array()?
                .iter()
                .find(|a| a["attachment_id"] == aid.as_str())
                .cloned()
        });
        if let Some(a) = entry {
            out.push(view(&a, detail));
        }
    }
    Ok(Json(json!({"attachments": out})))
}

pub(super) async fn list_attachments(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    list_any(&state, &auth, mv, &q.0, false).await
}

pub(super) async fn list_attachments_detail(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    list_any(&state, &auth, mv, &q.0, true).await
}

pub(super) async fn show_attachment(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Json<Value>> {
    since_27(mv)?;
    let s = svc(&state)?;
    let (_, a) = s.attachment(&reader(&auth), &p["id"]).await?;
    Ok(Json(json!({"attachment": view(&a, true)})))
}

/// Reserves the volume for the instance; with a connector, connects it
/// too (one call instead of two, as Cinder allows).
pub(super) async fn create_attachment(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    body: axum::body::Bytes,
) -> Result<Response> {
    since_27(mv)?;
    write_access(&auth)?;
    let s = svc(&state)?;
    let n = parse_body::<CreateBody>(&body).map_err(bad)?.attachment;
    let instance = n.instance_uuid.filter(|i| !i.is_empty()).ok_or_else(|| {
        Error::BadRequest("Must specify 'instance_uuid' to create attachment.".into())
    })?;
    let volume = n.volume_uuid.filter(|v| !v.is_empty()).ok_or_else(|| {
        Error::BadRequest("Must specify 'volume_uuid' to create attachment.".into())
    })?;
    let mode = match n.mode.as_deref() {
        None => "rw",
        Some(_) if mv.0 < 54 => {
            return Err(Error::BadRequest(
                "Invalid input for the attachment: mode needs microversion 3.54.".into(),
            ))
        }
        Some("rw") => "rw",
        Some("ro") => "ro",
        Some(m) => {
            return Err(Error::BadRequest(format!(
                "Invalid input for the attachment: mode {m:?} is not rw or ro."
            )))
        }
    };
    let ask = asker(&auth);
    let mut a = s.attachment_create(&ask, &volume, &instance, mode).await?;
    if let Some(c) = n.connector.filter(|c| !c.is_empty()) {
        let id = a["attachment_id"].as_str().unwrap_or_default().to_string();
        match s.attachment_update(&ask, &id, &c).await {
            Ok(x) => a = x,
            Err(e) => {
                let _ = s.attachment_delete(&ask, &id).await;
                return Err(e);
            }
        }
    }
    Ok((StatusCode::OK, Json(json!({"attachment": view(&a, true)}))).into_response())
}

/// Connects a reserved attachment for a connector.
pub(super) async fn update_attachment(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    since_27(mv)?;
    write_access(&auth)?;
    let s = svc(&state)?;
    let c = parse_body::<UpdateBody>(&body).map_err(bad)?.attachment;
    let connector = c.connector.filter(|c| !c.is_empty()).ok_or_else(|| {
        Error::BadRequest("Must specify 'connector' to update attachment.".into())
    })?;
    let a = s
        .attachment_update(&asker(&auth), &p["id"], &connector)
        .await?;
    Ok(Json(json!({"attachment": view(&a, true)})))
}

pub(super) async fn delete_attachment(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Json<Value>> {
    since_27(mv)?;
    write_access(&auth)?;
    let s = svc(&state)?;
    s.attachment_delete(&asker(&auth), &p["id"]).await?;
    Ok(Json(json!({"attachments": []})))
}

/// `os-complete` (3.44): the attacher says the volume is attached.
pub(super) async fn attachment_action(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    since_27(mv)?;
    write_access(&auth)?;
    let s = svc(&state)?;
    let Action::Complete(_) = parse_body::<Action>(&body).map_err(bad)?;
    if mv.0 < 44 {
        return Err(Error::BadRequest(
            "Invalid action: os-complete needs microversion 3.44.".into(),
        ));
    }
    s.attachment_complete(&asker(&auth), &p["id"], Map::new())
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
