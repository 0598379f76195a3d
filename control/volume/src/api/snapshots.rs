//! snapshots

use super::*;

pub(super) async fn create_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    body: axum::body::Bytes,
) -> Result<Response> {
    let s = svc(&state)?;
    write_access(&auth)?;
    let project = project(&auth)?;
    let body: Map<String, Value> = parse_body(&body)?;
    let b = body
        .get("snapshot")
        .and_then(|v| v.as_object())
        .ok_or_else(|| {
            Error::BadRequest("Missing required element 'snapshot' in request body.".into())
        })?;
    let vid = b
        .get("volume_id")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::NotFound("Volume None could not be found.".into()))?;
    let vol = find(s, &auth, VOLUME, vid)
        .await
        .map_err(|_| Error::NotFound(format!("Volume {vid} could not be found.")))?;
    let force = b
        .get("force")
        .is_some_and(|f| f == true || f == "true" || f == "True");
    match st(&vol, "status") {
        "available" => {}
        "in-use" if force => {}
        other => {
            return Err(Error::BadRequest(format!(
                "Invalid volume: Volume {vid} status must be available, but current status is: {other}."
            )))
        }
    }
    let (_, ns, gib) = usage(s, &project).await?;
    let size = vol.get("size").and_then(|v| v.as_u64()).unwrap_or(1);
    let quota = quota_of(s, &project);
    let (qs, qg) = (limit(&quota, "snapshots"), limit(&quota, "gigabytes"));
    if (qs >= 0 && ns as i64 + 1 > qs) || (qg >= 0 && (gib + size) as i64 > qg) {
        return Err(Error::PayloadTooLarge(
            "SnapshotLimitExceeded: Maximum number of snapshots allowed exceeded.".into(),
        ));
    }
    let now = now();
    let snap = json!({
        "id": uuid::Uuid::new_v4().to_string(), "name": opt_string(b, "name", 255)?,
        "description": opt_string(b, "description", 255)?, "status": "creating", "size": size,
        "volume_id": vid, "created_at": now, "updated_at": now, "metadata": metadata(b)?,
        "ursa:progress": "0%", "project_id": project, "ursa:user_id": auth.0.user_id,
        "ursa:host": st(&vol, "ursa:node"),
    })
    .as_object()
    .cloned()
    .expect("object");
    s.put(SNAPSHOT, snap.clone()).await?;
    s.spawn_snapshot(snap.clone(), st(&vol, "ursa:node").to_string());
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"snapshot": snapshot_view(&snap, false)})),
    )
        .into_response())
}

pub(super) async fn list_snapshots_any(
    state: &AppState,
    auth: &Auth,
    q: &HashMap<String, String>,
    detail: bool,
) -> Result<Json<Value>> {
    let s = svc(state)?;
    let (recs, more) = page(
        visible(s, auth, SNAPSHOT, q).await?,
        q,
        &["name", "status", "volume_id"],
    )?;
    let v: Vec<Value> = recs.iter().map(|r| snapshot_view(r, detail)).collect();
    let mut out = json!({"snapshots": v});
    let what = if detail {
        "snapshots/detail"
    } else {
        "snapshots"
    };
    if let Some(l) = next_link(state, what, q, recs.last(), more) {
        out["snapshots_links"] = l;
    }
    Ok(Json(out))
}

pub(super) async fn list_snapshots(
    State(state): State<AppState>,
    auth: Auth,
    q: Query,
) -> Result<Json<Value>> {
    list_snapshots_any(&state, &auth, &q.0, false).await
}

pub(super) async fn list_snapshots_detail(
    State(state): State<AppState>,
    auth: Auth,
    q: Query,
) -> Result<Json<Value>> {
    list_snapshots_any(&state, &auth, &q.0, true).await
}

pub(super) async fn show_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let sn = find(s, &auth, SNAPSHOT, &p["id"]).await?;
    Ok(Json(json!({"snapshot": snapshot_view(&sn, true)})))
}

pub(super) async fn update_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    write_access(&auth)?;
    find(s, &auth, SNAPSHOT, &p["id"]).await?;
    let body: Map<String, Value> = parse_body(&body)?;
    let b = body
        .get("snapshot")
        .and_then(|v| v.as_object())
        .ok_or_else(|| {
            Error::BadRequest("Missing required element 'snapshot' in request body.".into())
        })?
        .clone();
    let name = if b.contains_key("name") {
        Some(opt_string(&b, "name", 255)?)
    } else {
        None
    };
    let desc = if b.contains_key("description") {
        Some(opt_string(&b, "description", 255)?)
    } else {
        None
    };
    let sn = s
        .update(SNAPSHOT, &p["id"], move |r| {
            if let Some(n) = name.clone() {
                r.insert("name".into(), n);
            }
            if let Some(d) = desc.clone() {
                r.insert("description".into(), d);
            }
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("Snapshot {} could not be found.", p["id"])))?;
    Ok(Json(json!({"snapshot": snapshot_view(&sn, false)})))
}

pub(super) async fn delete_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Response> {
    let s = svc(&state)?;
    write_access(&auth)?;
    let sn = find(s, &auth, SNAPSHOT, &p["id"]).await?;
    if !matches!(st(&sn, "status"), "available" | "error" | "error_deleting") {
        return Err(Error::BadRequest(format!(
            "Invalid snapshot: Snapshot status must be available or error. (status {})",
            st(&sn, "status")
        )));
    }
    let sn = s
        .update(SNAPSHOT, &p["id"], |r| {
            r.insert("status".into(), json!("deleting"));
            Ok(())
        })
        .await?;
    if let Some(sn) = sn {
        s.spawn_delete(SNAPSHOT, sn);
    }
    Ok(empty(StatusCode::ACCEPTED))
}
