//! quotas

use super::*;

pub(super) async fn zones(State(state): State<AppState>, _auth: Auth) -> Result<Json<Value>> {
    svc(&state)?;
    Ok(Json(
        json!({"availabilityZoneInfo": [{"zoneName": ZONE, "zoneState": {"available": true}}]}),
    ))
}

pub(super) async fn limits(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let (nv, ns, gib) = usage(s, auth.0.project_id().unwrap_or("")).await?;
    Ok(Json(json!({"limits": {"rate": [], "absolute": {
        "maxTotalVolumes": QUOTA_VOLUMES, "maxTotalSnapshots": QUOTA_SNAPSHOTS,
        "maxTotalVolumeGigabytes": QUOTA_GIGABYTES, "maxTotalBackups": 0, "maxTotalBackupGigabytes": 0,
        "totalVolumesUsed": nv, "totalSnapshotsUsed": ns, "totalGigabytesUsed": gib,
        "totalBackupsUsed": 0, "totalBackupGigabytesUsed": 0}}})))
}

pub(super) const QUOTA_KEYS: &[&str] = &[
    "volumes",
    "snapshots",
    "gigabytes",
    "backups",
    "backup_gigabytes",
    "per_volume_gigabytes",
    "groups",
];

/// A project's limits: the defaults (the `default` quota class) with its
/// own overrides.
pub fn quota_of(s: &Volumes, project: &str) -> Map<String, Value> {
    let mut q: Map<String, Value> = json!({"volumes": QUOTA_VOLUMES, "snapshots": QUOTA_SNAPSHOTS,
        "gigabytes": QUOTA_GIGABYTES, "backups": 10, "backup_gigabytes": 1000,
        "per_volume_gigabytes": -1, "groups": 10})
    .as_object()
    .cloned()
    .expect("object");
    for id in ["class:default".to_string(), project.to_string()] {
        if let Some(o) = s.doc(QUOTA, &id) {
            for k in QUOTA_KEYS {
                if let Some(v) = o.get(*k) {
                    q.insert((*k).into(), v.clone());
                }
            }
        }
    }
    // Keystone's unified limits, where an admin set them, decide.
    let model = s.identity.model();
    for k in ["volumes", "gigabytes", "snapshots"] {
        if let Some(v) = ursa_identity::api::limits::effective_limit(
            &model,
            &["volumev3", "block-storage"],
            project,
            k,
        ) {
            q.insert(k.into(), json!(v));
        }
    }
    q
}

pub(super) fn limit(q: &Map<String, Value>, k: &str) -> i64 {
    q.get(k).and_then(|v| v.as_i64()).unwrap_or(-1)
}

pub(super) async fn quotas(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    q: Query,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let project = p.get("project").cloned().unwrap_or_default();
    own_project_or_reader(&auth, &project)?;
    let mut out = quota_of(s, &project);
    if q.get("usage").is_some_and(|v| v == "true" || v == "True") {
        let (nv, ns, gib) = usage(s, &project).await?;
        for k in QUOTA_KEYS {
            let used = match *k {
                "volumes" => nv,
                "snapshots" => ns,
                "gigabytes" => gib,
                _ => 0,
            };
            let l = limit(&out, k);
            out.insert(
                (*k).into(),
                json!({"limit": l, "in_use": used, "reserved": 0}),
            );
        }
    }
    out.insert("id".into(), json!(project));
    Ok(Json(json!({"quota_set": out})))
}

/// Cinder's `volume_extension:quotas:show`: a project's readers, or a
/// reader of every project.
pub(super) fn own_project_or_reader(auth: &Auth, project: &str) -> Result<()> {
    if auth.0.is_reader_everywhere() || auth.0.project_id() == Some(project) {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "Policy doesn't allow this operation to be performed.".into(),
        ))
    }
}

/// The defaults a project starts from; Cinder guards them as it guards the
/// project's own quotas.
pub(super) async fn quota_defaults(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    own_project_or_reader(&auth, p.get("project").map_or("", String::as_str))?;
    let mut out = quota_of(s, "");
    out.insert(
        "id".into(),
        json!(p.get("project").cloned().unwrap_or_default()),
    );
    Ok(Json(json!({"quota_set": out})))
}

pub(super) fn quota_body(body: &[u8], key: &str) -> Result<Map<String, Value>> {
    let body: Map<String, Value> = parse_body(body)?;
    let b = body.get(key).and_then(|v| v.as_object()).ok_or_else(|| {
        Error::BadRequest(format!("Missing required element '{key}' in request body."))
    })?;
    let mut out = Map::new();
    for (k, v) in b {
        if k == "id" || k == "tenant_id" {
            continue;
        }
        let typed = ["volumes_", "snapshots_", "gigabytes_"]
            .iter()
            .any(|p| k.starts_with(p));
        if !QUOTA_KEYS.contains(&k.as_str()) && !typed {
            return Err(Error::BadRequest(format!("Bad key(s) in quota set: {k}")));
        }
        let n = v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|n| *n >= -1)
            .ok_or_else(|| {
                Error::BadRequest(format!("Quota {k} must be an integer of at least -1."))
            })?;
        out.insert(k.clone(), json!(n));
    }
    Ok(out)
}

pub(super) async fn set_quotas(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let project = p.get("project").cloned().unwrap_or_default();
    let new = quota_body(&body, "quota_set")?;
    let mut cur = s.doc(QUOTA, &project).unwrap_or_default();
    cur.extend(new);
    cur.insert("id".into(), json!(project));
    s.put(QUOTA, cur).await?;
    let mut out = quota_of(s, &project);
    out.remove("id");
    Ok(Json(json!({"quota_set": out})))
}

pub(super) async fn delete_quotas(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Response> {
    let s = svc(&state)?;
    admin(&auth)?;
    s.forget(QUOTA, &p.get("project").cloned().unwrap_or_default())
        .await?;
    Ok(empty(StatusCode::OK))
}

/// Cinder's `volume_extension:quota_classes`: admins only.
pub(super) async fn quota_class(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let mut out = quota_of(s, "");
    out.insert(
        "id".into(),
        json!(p.get("class").cloned().unwrap_or_default()),
    );
    Ok(Json(json!({"quota_class_set": out})))
}

pub(super) async fn set_quota_class(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let class = p.get("class").cloned().unwrap_or_default();
    if class != "default" {
        return Err(Error::BadRequest(
            "Only the default quota class exists.".into(),
        ));
    }
    let new = quota_body(&body, "quota_class_set")?;
    let mut cur = s.doc(QUOTA, "class:default").unwrap_or_default();
    cur.extend(new);
    cur.insert("id".into(), json!("class:default"));
    s.put(QUOTA, cur).await?;
    let out = quota_of(s, "");
    Ok(Json(json!({"quota_class_set": out})))
}

pub(super) async fn extensions(_auth: Auth) -> Json<Value> {
    Json(json!({"extensions": []}))
}

pub(super) async fn get_pools(
    State(state): State<AppState>,
    auth: Auth,
    q: Query,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let detail = q.get("detail").is_some_and(|v| v == "True" || v == "true");
    let mut pools = Vec::new();
    for n in &s.nodes {
        let Ok(r) = n
            .client
            .clone()
            .get_pools(ursa_proto::blockd::v1::GetPoolsRequest {})
            .await
        else {
            continue;
        };
        for p in r.into_inner().pools {
            let name = format!("{}@blockd#{}", n.name, p.name);
            if detail {
                pools.push(json!({"name": name, "capabilities": {
                    "pool_name": p.name, "total_capacity_gb": p.capacity_bytes as f64 / GIB as f64,
                    "free_capacity_gb": p.free_bytes as f64 / GIB as f64,
                    "allocated_capacity_gb": p.allocated_bytes / GIB,
                    "provisioned_capacity_gb": p.provisioned_bytes / GIB,
                    "thin_provisioning_support": true, "thick_provisioning_support": false,
                    "volume_backend_name": "blockd", "storage_protocol": "nbd", "vendor_name": "Open Source",
                    "driver_version": "0.1", "reserved_percentage": 0, "QoS_support": true,
                    "multiattach": false, "timestamp": now()}}));
            } else {
                pools.push(json!({"name": name}));
            }
        }
    }
    Ok(Json(json!({"pools": pools})))
}

pub(super) async fn services(
    State(state): State<AppState>,
    auth: Auth,
    q: Query,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let mut out = vec![
        json!({"binary": "cinder-scheduler", "host": "ursa", "zone": ZONE, "status": "enabled",
                              "state": "up", "updated_at": now(), "disabled_reason": null}),
    ];
    for n in &s.nodes {
        let up = n
            .client
            .clone()
            .get_pools(ursa_proto::blockd::v1::GetPoolsRequest {})
            .await
            .is_ok();
        out.push(
            json!({"binary": "cinder-volume", "host": format!("{}@blockd", n.name), "zone": ZONE,
                        "status": "enabled", "state": if up { "up" } else { "down" },
                        "updated_at": now(), "disabled_reason": null}),
        );
    }
    out.retain(|x| {
        q.get("host").is_none_or(|h| {
            x["host"] == h.as_str()
                || x["host"]
                    .as_str()
                    .is_some_and(|xh| xh.split('@').next() == Some(h.as_str()))
        }) && q.get("binary").is_none_or(|b| x["binary"] == b.as_str())
    });
    Ok(Json(json!({"services": out})))
}

pub(super) async fn type_spec(
    State(state): State<AppState>,
    _auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let t = find_type(s, &p["id"])?;
    let key = &p["key"];
    let v = t
        .get("extra_specs")
        .and_then(|e| e.get(key.as_str()))
        .cloned()
        .ok_or_else(|| {
            Error::NotFound(format!(
                "Volume Type {} has no extra specs with key {key}.",
                p["id"]
            ))
        })?;
    Ok(Json(json!({ key.clone(): v })))
}

pub(super) async fn put_type_spec(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    let body: Map<String, Value> = parse_body(&body)?;
    let key = p["key"].clone();
    if body.len() != 1 || !body.get(&key).is_some_and(|v| v.is_string()) {
        return Err(Error::BadRequest("Request body and URI mismatch".into()));
    }
    let out = body.clone();
    s.update(TYPE, st(&t, "id"), move |r| {
        let mut cur = r
            .get("extra_specs")
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default();
        cur.extend(body.clone());
        r.insert("extra_specs".into(), Value::Object(cur));
        Ok(())
    })
    .await?;
    Ok(Json(Value::Object(out)))
}

pub(super) async fn delete_type_spec(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Response> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    let key = p["key"].clone();
    if t.get("extra_specs")
        .and_then(|e| e.get(key.as_str()))
        .is_none()
    {
        return Err(Error::NotFound(format!(
            "Volume Type {} has no extra specs with key {key}.",
            p["id"]
        )));
    }
    s.update(TYPE, st(&t, "id"), move |r| {
        if let Some(Value::Object(e)) = r.get_mut("extra_specs") {
            e.remove(&key);
        }
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}
