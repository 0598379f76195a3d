//! metadata

use super::*;

/// Which record a metadata route is on.
pub(super) trait MetaKind {
    const KIND: &'static str;
}

pub(super) struct OnVolume;
impl MetaKind for OnVolume {
    const KIND: &'static str = VOLUME;
}

pub(super) struct OnSnapshot;
impl MetaKind for OnSnapshot {
    const KIND: &'static str = SNAPSHOT;
}

pub(super) fn meta_of(r: &Rec) -> Map<String, Value> {
    r.get("metadata")
        .and_then(|m| m.as_object())
        .cloned()
        .unwrap_or_default()
}

pub(super) async fn show_metadata<K: MetaKind>(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let r = find(svc(&state)?, &auth, K::KIND, &p["id"]).await?;
    Ok(Json(json!({"metadata": meta_of(&r)})))
}

/// Replaces (`replace`) or merges a record's metadata.
pub(super) async fn change_metadata<K: MetaKind>(
    state: &AppState,
    auth: &Auth,
    id: &str,
    body: &[u8],
    replace: bool,
) -> Result<Json<Value>> {
    let s = svc(state)?;
    write_access(auth)?;
    find(s, auth, K::KIND, id).await?;
    let b: Map<String, Value> = parse_body(body)?;
    let new = metadata(&b)?;
    if !b.contains_key("metadata") {
        return Err(Error::BadRequest(
            "Malformed request body: metadata is required.".into(),
        ));
    }
    let r = s
        .update(K::KIND, id, move |r| {
            let mut cur = if replace { Map::new() } else { meta_of(r) };
            if let Value::Object(n) = new.clone() {
                cur.extend(n);
            }
            r.insert("metadata".into(), Value::Object(cur));
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("{id} could not be found.")))?;
    Ok(Json(json!({"metadata": meta_of(&r)})))
}

pub(super) async fn add_metadata<K: MetaKind>(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    change_metadata::<K>(&state, &auth, &p["id"], &body, false).await
}

pub(super) async fn set_metadata<K: MetaKind>(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    change_metadata::<K>(&state, &auth, &p["id"], &body, true).await
}

pub(super) async fn show_metadata_item<K: MetaKind>(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let r = find(svc(&state)?, &auth, K::KIND, &p["id"]).await?;
    let key = &p["key"];
    let val = meta_of(&r)
        .get(key.as_str())
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("Metadata item was not found: {key}")))?;
    Ok(Json(json!({"meta": { key.clone(): val }})))
}

pub(super) async fn put_metadata_item<K: MetaKind>(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    write_access(&auth)?;
    find(s, &auth, K::KIND, &p["id"]).await?;
    let b: Map<String, Value> = parse_body(&body)?;
    let key = p["key"].clone();
    let meta = b
        .get("meta")
        .and_then(|m| m.as_object())
        .filter(|m| {
            m.len() == 1
                && m.get(&key)
                    .is_some_and(|v| v.as_str().is_some_and(|x| x.len() <= 255))
        })
        .cloned()
        .ok_or_else(|| Error::BadRequest("Request body and URI mismatch".into()))?;
    let out = meta.clone();
    s.update(K::KIND, &p["id"], move |r| {
        let mut cur = meta_of(r);
        cur.extend(meta.clone());
        r.insert("metadata".into(), Value::Object(cur));
        Ok(())
    })
    .await?;
    Ok(Json(json!({"meta": out})))
}

pub(super) async fn delete_metadata_item<K: MetaKind>(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Response> {
    let s = svc(&state)?;
    write_access(&auth)?;
    let r = find(s, &auth, K::KIND, &p["id"]).await?;
    let key = p["key"].clone();
    if !meta_of(&r).contains_key(&key) {
        return Err(Error::NotFound(format!(
            "Metadata item was not found: {key}"
        )));
    }
    s.update(K::KIND, &p["id"], move |r| {
        if let Some(Value::Object(m)) = r.get_mut("metadata") {
            m.remove(&key);
        }
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::OK))
}

pub(super) async fn snapshot_action(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    let s = svc(&state)?;
    let id = p["id"].clone();
    let sn = find(s, &auth, SNAPSHOT, &id).await?;
    let body: Map<String, Value> = parse_body(&body)?;
    let (action, args) = body
        .iter()
        .next()
        .ok_or_else(|| Error::BadRequest("An action is required.".into()))?;
    const STATES: &[&str] = &[
        "available",
        "creating",
        "deleting",
        "error",
        "error_deleting",
    ];
    match action.as_str() {
        "os-reset_status" | "os-update_snapshot_status" => {
            if action == "os-reset_status" {
                admin(&auth)?;
            }
            let status = args
                .get("status")
                .and_then(|x| x.as_str())
                .filter(|x| STATES.contains(x))
                .ok_or_else(|| {
                    Error::BadRequest("Invalid input received: a valid status is required.".into())
                })?
                .to_string();
            let progress = args
                .get("progress")
                .and_then(|x| x.as_str())
                .map(str::to_string);
            s.update(SNAPSHOT, &id, move |r| {
                r.insert("status".into(), json!(status));
                if let Some(pr) = progress.clone() {
                    r.insert("ursa:progress".into(), json!(pr));
                }
                Ok(())
            })
            .await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-force_delete" => {
            admin(&auth)?;
            let sn2 = s
                .update(SNAPSHOT, st(&sn, "id"), |r| {
                    r.insert("status".into(), json!("deleting"));
                    Ok(())
                })
                .await?;
            if let Some(sn2) = sn2 {
                s.spawn_delete(SNAPSHOT, sn2);
            }
            Ok(empty(StatusCode::ACCEPTED))
        }
        other => Err(Error::BadRequest(format!(
            "Invalid action: {other} is not supported."
        ))),
    }
}

pub(super) async fn update_type(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    let body: Map<String, Value> = parse_body(&body)?;
    let b = body
        .get("volume_type")
        .and_then(|v| v.as_object())
        .ok_or_else(|| {
            Error::BadRequest("Missing required element 'volume_type' in request body.".into())
        })?
        .clone();
    if let Some(n) = b.get("name").and_then(|v| v.as_str()) {
        if n.trim().is_empty() || n.len() > 255 {
            return Err(Error::BadRequest(
                "Volume type name can not be empty.".into(),
            ));
        }
        if s.docs(TYPE)
            .iter()
            .any(|x| st(x, "name") == n && st(x, "id") != st(&t, "id"))
        {
            return Err(Error::Conflict(format!("Volume Type {n} already exists.")));
        }
    }
    let desc = if b.contains_key("description") {
        Some(opt_string(&b, "description", 255)?)
    } else {
        None
    };
    let public = b
        .get("is_public")
        .and_then(|v| v.as_bool().or_else(|| v.as_str().map(|x| x == "true")));
    let name = b.get("name").and_then(|v| v.as_str()).map(str::to_string);
    let t = s
        .update(TYPE, st(&t, "id"), move |r| {
            if let Some(n) = name.clone() {
                r.insert("name".into(), json!(n));
            }
            if let Some(d) = desc.clone() {
                r.insert("description".into(), d);
            }
            if let Some(p) = public {
                r.insert("is_public".into(), json!(p));
                r.insert("os-volume-type-access:is_public".into(), json!(p));
            }
            r.remove("updated_at");
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("Volume type {} could not be found.", p["id"])))?;
    // The update reply has no access attribute (Cinder's schema).
    let mut v = type_view(&t);
    if let Some(o) = v.as_object_mut() {
        o.remove("os-volume-type-access:is_public");
    }
    Ok(Json(json!({"volume_type": v})))
}

pub(super) async fn capabilities(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let host = p["host"].clone();
    let node = host.split('@').next().unwrap_or("");
    if s.node(node).is_none() {
        return Err(Error::NotFound(format!("Host {host} could not be found.")));
    }
    Ok(Json(
        json!({"namespace": format!("OS::Storage::Capabilities::{host}"),
        "vendor_name": "Open Source", "volume_backend_name": "blockd", "pool_name": "default",
        "driver_version": "0.1", "storage_protocol": "nbd", "display_name": null,
        "description": null, "visibility": null, "replication_targets": [], "properties": {
            "thin_provisioning": {"title": "Thin Provisioning", "description": "Sets thin provisioning.", "type": "boolean"},
            "compression": {"title": "Compression", "description": "Enables compression.", "type": "boolean"},
            "qos": {"title": "QoS", "description": "Enables QoS.", "type": "boolean"},
            "replication": {"title": "Replication", "description": "Enables replication.", "type": "boolean"}}}),
    ))
}
