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
    // Cinder's per-volume-type quotas: unlimited unless set.
    let types: Vec<String> = s
        .docs(TYPE)
        .iter()
        .map(|t| st(t, "name").to_string())
        .collect();
    for t in &types {
        for k in TYPED {
            q.insert(format!("{k}{t}"), json!(-1));
        }
    }
    for id in ["class:default".to_string(), project.to_string()] {
        if let Some(o) = s.doc(QUOTA, &id) {
            for (k, v) in &o {
                if QUOTA_KEYS.contains(&k.as_str()) || q.contains_key(k) {
                    q.insert(k.clone(), v.clone());
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

/// The prefixes of the per-volume-type quotas (`volumes_gold`).
const TYPED: [&str; 3] = ["volumes_", "snapshots_", "gigabytes_"];

/// Whether a new volume of `vtype` fits its type's quotas, given the
/// project's volumes (`vols`: type name and size of each).
pub(super) fn check_type_quota(
    q: &Map<String, Value>,
    vtype: &str,
    vols: &[(String, u64)],
    size: u64,
) -> Result<()> {
    let of: Vec<u64> = vols.iter().filter(|v| v.0 == vtype).map(|v| v.1).collect();
    let (qv, qg) = (
        limit(q, &format!("volumes_{vtype}")),
        limit(q, &format!("gigabytes_{vtype}")),
    );
    if qv >= 0 && of.len() as i64 + 1 > qv {
        return Err(Error::PayloadTooLarge(format!(
            "VolumeLimitExceeded: Maximum number of volumes allowed ({qv}) exceeded for quota 'volumes_{vtype}'."
        )));
    }
    let used: u64 = of.iter().sum();
    if qg >= 0 && (used + size) as i64 > qg {
        return Err(Error::PayloadTooLarge(format!(
            "VolumeSizeExceedsAvailableQuota: Requested volume exceeds allowed gigabytes_{vtype} quota. Requested {size}G, quota is {qg}G and {used}G has been consumed."
        )));
    }
    Ok(())
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
        let used = in_use(s, &project).await?;
        let keys: Vec<String> = out.keys().cloned().collect();
        for k in keys {
            let l = limit(&out, &k);
            let n = used.get(&k).copied().unwrap_or(0);
            out.insert(k, json!({"limit": l, "in_use": n, "reserved": 0}));
        }
    }
    out.insert("id".into(), json!(project));
    Ok(Json(json!({"quota_set": out})))
}

/// What a project uses of each quota, the per-type ones included.
async fn in_use(s: &Volumes, project: &str) -> Result<HashMap<String, u64>> {
    let of = crate::record_table::Filter {
        project: Some(project.to_string()),
        ..Default::default()
    };
    let vols = s.records(VOLUME, &of).await?;
    let snaps = s.records(SNAPSHOT, &of).await?;
    let backups = s.records(crate::backup::BACKUP, &of).await?;
    let groups = s.records(crate::GROUP, &of).await?;
    let mut m: HashMap<String, u64> = HashMap::new();
    let mut add = |k: String, n: u64| *m.entry(k).or_default() += n;
    let size = |r: &Rec| r.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
    let mut type_of = HashMap::new();
    for v in &vols {
        let t = st(v, "volume_type").to_string();
        add("volumes".into(), 1);
        add("gigabytes".into(), size(v));
        add(format!("volumes_{t}"), 1);
        add(format!("gigabytes_{t}"), size(v));
        type_of.insert(st(v, "id").to_string(), t);
    }
    for sn in &snaps {
        add("snapshots".into(), 1);
        add("gigabytes".into(), size(sn));
        if let Some(t) = type_of.get(st(sn, "volume_id")) {
            add(format!("snapshots_{t}"), 1);
            add(format!("gigabytes_{t}"), size(sn));
        }
    }
    for b in &backups {
        add("backups".into(), 1);
        add("backup_gigabytes".into(), size(b));
    }
    add("groups".into(), groups.len() as u64);
    Ok(m)
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
        let typed = TYPED.iter().any(|p| k.starts_with(p));
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
