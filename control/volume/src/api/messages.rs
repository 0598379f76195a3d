//! messages: Cinder's user messages (3.3): what went wrong with a
//! request that was accepted but could not be carried out (today: a
//! volume no storage node can take). Rows of `vol_records` (kind
//! `volume_message`, the project's, `volume_id` the resource), kept 30
//! days as Cinder's `guaranteed_until` says, and deletable.

use super::*;

use crate::MESSAGE;

/// Records a user message about volume `vol` (event VOLUME_VOLUME_001_002,
/// Cinder's "schedule allocate volume").
pub(super) async fn record(s: &Volumes, vol: &Rec, request_id: &str, detail: &str) -> Result<()> {
    let now = chrono::Utc::now();
    let until = now + chrono::Duration::days(30);
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    let m = json!({"id": uuid::Uuid::new_v4().to_string(), "project_id": st(vol, "project_id"),
        "status": "", "volume_id": st(vol, "id"), "created_at": fmt(now),
        "guaranteed_until": fmt(until), "request_id": request_id, "message_level": "ERROR",
        "event_id": "VOLUME_VOLUME_001_002", "resource_type": "VOLUME",
        "resource_uuid": st(vol, "id"),
        "user_message": "schedule allocate volume:Could not find any available weighted backend.",
        "ursa:detail": detail});
    s.put(MESSAGE, m.as_object().cloned().unwrap_or_default())
        .await
}

fn view(state: &AppState, m: &Rec) -> Value {
    let id = st(m, "id");
    json!({"id": id, "request_id": st(m, "request_id"), "message_level": st(m, "message_level"),
        "event_id": st(m, "event_id"), "created_at": st(m, "created_at"),
        "guaranteed_until": st(m, "guaranteed_until"), "resource_uuid": st(m, "resource_uuid"),
        "resource_type": st(m, "resource_type"), "user_message": st(m, "user_message"),
        "links": [{"href": format!("{}/volume/v3/{}/messages/{id}", state.base_url, st(m, "project_id")), "rel": "self"}]})
}

fn since_3(mv: Micro) -> Result<()> {
    if mv.0 < 3 {
        return Err(Error::NotFound("Messages need microversion 3.3.".into()));
    }
    Ok(())
}

async fn find_message(s: &Volumes, auth: &Auth, id: &str) -> Result<Rec> {
    s.record(MESSAGE, id)
        .await?
        .filter(|m| may_see(auth, m))
        .ok_or_else(|| Error::NotFound(format!("Message {id} could not be found.")))
}

pub(super) async fn list_messages(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    since_3(mv)?;
    let s = svc(&state)?;
    let all = auth.0.is_reader_everywhere() && q.contains_key("all_tenants");
    let f = crate::record_table::Filter {
        project: if all { None } else { Some(project(&auth)?) },
        ..Default::default()
    };
    let list: Vec<Value> = s
        .records(MESSAGE, &f)
        .await?
        .iter()
        .filter(|m| {
            q.get("resource_uuid")
                .is_none_or(|r| st(m, "resource_uuid") == r)
        })
        .filter(|m| q.get("event_id").is_none_or(|e| st(m, "event_id") == e))
        .map(|m| view(&state, m))
        .collect();
    Ok(Json(json!({"messages": list})))
}

pub(super) async fn show_message(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Json<Value>> {
    since_3(mv)?;
    let s = svc(&state)?;
    let m = find_message(s, &auth, &p["id"]).await?;
    Ok(Json(json!({"message": view(&state, &m)})))
}

pub(super) async fn delete_message(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Response> {
    since_3(mv)?;
    let s = svc(&state)?;
    write_access(&auth)?;
    let m = find_message(s, &auth, &p["id"]).await?;
    s.forget(MESSAGE, st(&m, "id")).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
