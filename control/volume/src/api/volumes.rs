//! volumes

use super::*;

pub(super) async fn create_volume(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    req_id: ursa_core::http::RequestId,
    body: axum::body::Bytes,
) -> Result<Response> {
    let s = svc(&state)?;
    write_access(&auth)?;
    let project = project(&auth)?;
    let body: Map<String, Value> = parse_body(&body)?;
    let b = body
        .get("volume")
        .and_then(|v| v.as_object())
        .ok_or_else(|| {
            Error::BadRequest("Missing required element 'volume' in request body.".into())
        })?;
    let name = opt_string(b, "name", 255)?;
    let description = opt_string(b, "description", 255)?;
    let meta = metadata(b)?;
    let snapshot_id = b
        .get("snapshot_id")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let source_volid = b
        .get("source_volid")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let image = b
        .get("imageRef")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    if [&snapshot_id, &source_volid, &image]
        .iter()
        .filter(|x| x.is_some())
        .count()
        > 1
    {
        return Err(Error::BadRequest(
            "Give at most one of snapshot_id, source_volid and imageRef.".into(),
        ));
    }
    if let Some(z) = b.get("availability_zone").and_then(|v| v.as_str()) {
        if z != ZONE {
            return Err(Error::BadRequest(format!(
                "Availability zone '{z}' is invalid."
            )));
        }
    }
    // The source decides the minimum size and the node.
    let (source, min_gib, host) = if let Some(sid) = &snapshot_id {
        let snap = find(s, &auth, SNAPSHOT, sid).await?;
        if st(&snap, "status") != "available" {
            return Err(Error::BadRequest(format!(
                "Snapshot {sid} is not available."
            )));
        }
        let host = s
            .record(VOLUME, st(&snap, "volume_id"))
            .await?
            .map(|v| st(&v, "ursa:node").to_string())
            .unwrap_or_else(|| st(&snap, "ursa:host").to_string());
        (
            Source::Copy(sid.clone()),
            snap.get("size").and_then(|v| v.as_u64()).unwrap_or(1),
            Some(host),
        )
    } else if let Some(vid) = &source_volid {
        let src = find(s, &auth, VOLUME, vid).await?;
        if !matches!(st(&src, "status"), "available" | "in-use") {
            return Err(Error::BadRequest(format!("Volume {vid} is not available.")));
        }
        (
            Source::Copy(vid.clone()),
            src.get("size").and_then(|v| v.as_u64()).unwrap_or(1),
            Some(st(&src, "ursa:node").to_string()),
        )
    } else if let Some(iid) = &image {
        let (img, _) = state.images.visible(&auth.0, iid).await.map_err(|_| {
            Error::BadRequest(format!(
                "Invalid image identifier or unable to access requested image {iid}."
            ))
        })?;
        if st(&img, "status") != "active" {
            return Err(Error::BadRequest(format!("Image {iid} is not active.")));
        }
        let bytes = img.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
        let min_disk = img.get("min_disk").and_then(|v| v.as_u64()).unwrap_or(0);
        (
            Source::Image(iid.clone()),
            bytes.div_ceil(GIB).max(min_disk).max(1),
            None,
        )
    } else {
        (Source::Blank, 1, None)
    };
    let size = match b.get("size").filter(|v| !v.is_null()) {
        None if matches!(source, Source::Copy(_)) => min_gib,
        None => {
            return Err(Error::BadRequest(
                "Invalid input received: size is required.".into(),
            ))
        }
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|n| *n >= 1 && *n <= 1 << 20)
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "Invalid input received: size {v} must be a positive integer."
                ))
            })?,
    };
    if size < min_gib {
        return Err(Error::BadRequest(format!(
            "Invalid input received: volume size {size} GiB is smaller than its source ({min_gib} GiB)."
        )));
    }
    let vtype = match b.get("volume_type").and_then(|v| v.as_str()) {
        // The project's default type (3.62), else __DEFAULT__.
        None => default_type_of(s, &project)
            .ok_or_else(|| Error::Internal("no default volume type".into()))?,
        Some(t) => s
            .docs(TYPE)
            .into_iter()
            .find(|x| st(x, "id") == t || st(x, "name") == t)
            // A private type is for admins and the projects given it.
            .filter(|x| may_use_type(&auth, x))
            .ok_or_else(|| Error::NotFound(format!("Volume type {t} could not be found.")))?,
    };
    if encryption_of(&vtype).is_some() {
        return Err(Error::BadRequest(format!(
            "Invalid volume type: {} is encrypted, and this cloud has no key manager to hold volume keys.",
            st(&vtype, "name")
        )));
    }
    let group_id = match b.get("group_id") {
        None | Some(Value::Null) => None,
        Some(_) if mv.0 < 13 => {
            return Err(Error::BadRequest(
                "Invalid input received: group_id needs microversion 3.13.".into(),
            ))
        }
        Some(g) => {
            let gid = g.as_str().unwrap_or_default();
            let grp = s
                .record(crate::GROUP, gid)
                .await?
                .filter(|r| may_see(&auth, r))
                .ok_or_else(|| Error::NotFound(format!("Group {gid} could not be found.")))?;
            let typed = grp
                .get("volume_types")
                .and_then(|t| t.as_array())
                .is_some_and(|t| t.iter().any(|x| x == st(&vtype, "id")));
            if st(&grp, "status") != "available" || !typed {
                return Err(Error::BadRequest(format!(
                    "Invalid input received: group {gid} must be available and allow volume type {}.",
                    st(&vtype, "name")
                )));
            }
            Some(gid.to_string())
        }
    };
    let vol = create_record(
        s,
        NewVolume {
            group_id,
            request_id: Some(req_id.0.clone()),
            project: project.clone(),
            user: auth.0.user_id.clone(),
            name,
            description,
            size,
            vtype,
            snapshot_id,
            source_volid,
            image: match image {
                Some(iid) => state.images.get(&iid).await?.map(|i| (iid, i)),
                None => None,
            },
            meta,
            host,
        },
        source,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"volume": volume_view(&state, &auth, mv, &vol, true, false)})),
    )
        .into_response())
}

/// What a new volume is made of (the API's request, or compute's
/// boot-from-volume).
pub struct NewVolume {
    pub project: String,
    pub user: String,
    pub name: Value,
    pub description: Value,
    pub size: u64,
    pub vtype: Rec,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    /// The image it is made from: id and record.
    pub image: Option<(String, Rec)>,
    pub meta: Value,
    /// The storage node, when the source decides it.
    pub host: Option<String>,
    /// The generic volume group it is made in (3.13).
    pub group_id: Option<String>,
    /// The API request that asks for it (named by a user message if it
    /// cannot be placed).
    pub request_id: Option<String>,
}

/// Checks the project's quota, places and records a volume, and starts
/// making its backing: the record says "creating" until it is there.
///
/// A volume no node can take (its type asks what blockd does not offer)
/// is recorded in `error`, with a user message saying why, as Cinder's
/// scheduler leaves it.
pub async fn create_record(s: &Volumes, n: NewVolume, source: Source) -> Result<Rec> {
    let request = n.request_id.clone().unwrap_or_default();
    let vol = new_record(s, n).await?;
    s.put(VOLUME, vol.clone()).await?;
    if st(&vol, "status") == "error" {
        super::messages::record(s, &vol, &request, st(&vol, "ursa:error")).await?;
    } else {
        s.spawn_create(vol.clone(), source);
    }
    Ok(vol)
}

/// A new volume's record (status "creating"), placed and within the
/// project's quota; not stored yet.
pub(super) async fn new_record(s: &Volumes, n: NewVolume) -> Result<Rec> {
    let (nv, _, gib) = usage(s, &n.project).await?;
    let quota = quota_of(s, &n.project);
    let (qv, qg, qp) = (
        limit(&quota, "volumes"),
        limit(&quota, "gigabytes"),
        limit(&quota, "per_volume_gigabytes"),
    );
    if qv >= 0 && nv as i64 + 1 > qv {
        return Err(Error::PayloadTooLarge(format!(
            "VolumeLimitExceeded: Maximum number of volumes allowed ({qv}) exceeded for quota 'volumes'."
        )));
    }
    if (qg >= 0 && (gib + n.size) as i64 > qg) || (qp >= 0 && n.size as i64 > qp) {
        return Err(Error::PayloadTooLarge(format!(
            "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested {}G, quota is {qg}G and {gib}G has been consumed.",
            n.size
        )));
    }
    let vtype = st(&n.vtype, "name");
    if limit(&quota, &format!("volumes_{vtype}")) >= 0
        || limit(&quota, &format!("gigabytes_{vtype}")) >= 0
    {
        let of = crate::record_table::Filter {
            project: Some(n.project.clone()),
            ..Default::default()
        };
        let vols: Vec<(String, u64)> = s
            .records(VOLUME, &of)
            .await?
            .iter()
            .map(|v| {
                let size = v.get("size").and_then(|x| x.as_u64()).unwrap_or(0);
                (st(v, "volume_type").to_string(), size)
            })
            .collect();
        check_type_quota(&quota, vtype, &vols, n.size)?;
    }
    let specs = n
        .vtype
        .get("extra_specs")
        .and_then(|v| v.as_object())
        .cloned()
        .unwrap_or_default();
    let placed = match n.host {
        Some(h) => Ok(h),
        None => match crate::scheduler::unmet(&specs) {
            Some(why) => Err(format!(
                "No valid backend was found: the volume type asks {why}."
            )),
            None => s
                .schedule(n.size * GIB)
                .await
                .map(|n| n.name)
                .map_err(|e| format!("No valid backend was found: {e}")),
        },
    };
    let (host, status, why) = match placed {
        Ok(h) => (h, "creating", None),
        Err(e) => (String::new(), "error", Some(e)),
    };
    // A copy of a volume (or of its snapshot) is bootable as it was, and
    // keeps the image metadata it came with (as Cinder's copies do).
    let origin = match (&n.source_volid, &n.snapshot_id) {
        (Some(v), _) => s.record(VOLUME, v).await?,
        (None, Some(sn)) => match s.record(SNAPSHOT, sn).await? {
            Some(snap) => s.record(VOLUME, st(&snap, "volume_id")).await?,
            None => None,
        },
        _ => None,
    };
    let bootable =
        n.image.is_some() || origin.as_ref().is_some_and(|o| st(o, "bootable") == "true");
    let now = now();
    let id = uuid::Uuid::new_v4().to_string();
    let mut vol = json!({
        "id": id, "name": n.name, "description": n.description, "status": status, "size": n.size,
        "availability_zone": ZONE, "created_at": now, "updated_at": now,
        "volume_type": st(&n.vtype, "name"), "volume_type_id": st(&n.vtype, "id"),
        "group_id": n.group_id,
        "ursa:qos": blockd_limits(s, &n.vtype),
        "snapshot_id": n.snapshot_id, "source_volid": n.source_volid, "metadata": n.meta,
        "bootable": if bootable { "true" } else { "false" }, "encrypted": false, "multiattach": false,
        "attachments": [], "user_id": n.user, "project_id": n.project,
        "replication_status": "disabled", "consistencygroup_id": null, "migration_status": null,
        "ursa:node": host, "shared_targets": false,
        "os-vol-mig-status-attr:migstat": null, "os-vol-mig-status-attr:name_id": null,
    })
    .as_object()
    .cloned()
    .expect("object");
    if let Some(why) = why {
        vol.insert("ursa:error".into(), json!(why));
    }
    if let Some(m) = origin.as_ref().and_then(|o| o.get("volume_image_metadata")) {
        vol.insert("volume_image_metadata".into(), m.clone());
    }
    if let Some((iid, img)) = &n.image {
        vol.insert(
            "volume_image_metadata".into(),
            json!({"image_id": iid, "image_name": img.get("name").cloned().unwrap_or(Value::Null),
                   "disk_format": img.get("disk_format"), "container_format": img.get("container_format"),
                   "checksum": img.get("checksum"), "size": img.get("size")}),
        );
    }
    Ok(vol)
}

pub(super) fn page(
    mut recs: Vec<Rec>,
    q: &HashMap<String, String>,
    filters: &[&str],
) -> Result<(Vec<Rec>, bool)> {
    for k in filters {
        if let Some(want) = q.get(*k) {
            recs.retain(|r| match r.get(*k) {
                Some(Value::String(s)) => s == want,
                Some(v) => want.as_str() == v.to_string().as_str(),
                None => false,
            });
        }
    }
    // sort=key:dir,… or sort_key/sort_dir; default created_at desc.
    let mut keys: Vec<(String, bool)> = Vec::new();
    if let Some(sort) = q.get("sort") {
        for p in sort.split(',') {
            let (k, d) = p.split_once(':').unwrap_or((p, "desc"));
            keys.push((k.to_string(), d != "asc"));
        }
    } else if let Some(k) = q.get("sort_key") {
        keys.push((
            k.clone(),
            q.get("sort_dir").map(String::as_str) != Some("asc"),
        ));
    }
    for (k, _) in &keys {
        if !matches!(
            k.as_str(),
            "created_at" | "updated_at" | "id" | "name" | "size" | "status" | "display_name"
        ) {
            return Err(Error::BadRequest(format!(
                "Invalid input received: Invalid sort key {k}."
            )));
        }
    }
    if keys.is_empty() {
        keys.push(("created_at".into(), true));
    }
    keys.push(("id".into(), keys.last().map(|k| k.1).unwrap_or(true)));
    recs.sort_by(|a, b| {
        for (k, desc) in &keys {
            let k = if k == "display_name" {
                "name"
            } else {
                k.as_str()
            };
            let o = match (a.get(k), b.get(k)) {
                (Some(Value::Number(x)), Some(Value::Number(y))) => x
                    .as_f64()
                    .partial_cmp(&y.as_f64())
                    .unwrap_or(std::cmp::Ordering::Equal),
                (x, y) => x.map(|v| v.to_string()).cmp(&y.map(|v| v.to_string())),
            };
            if o != std::cmp::Ordering::Equal {
                return if *desc { o.reverse() } else { o };
            }
        }
        std::cmp::Ordering::Equal
    });
    let start = match q.get("marker") {
        None => 0,
        Some(m) => {
            recs.iter()
                .position(|r| st(r, "id") == m)
                .ok_or_else(|| Error::NotFound(format!("Marker {m} could not be found.")))?
                + 1
        }
    };
    let offset = match q.get("offset") {
        None => 0,
        Some(o) => o
            .parse::<usize>()
            .map_err(|_| Error::BadRequest(format!("Invalid input received: offset {o}")))?,
    };
    let limit = match q.get("limit") {
        None => 1000,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| Error::BadRequest(format!("Invalid input received: limit {l}")))?,
    };
    let page: Vec<Rec> = recs.into_iter().skip(start + offset).take(limit).collect();
    // Like Cinder: a full page links to the next one (which may be empty).
    let full = limit > 0 && page.len() == limit;
    Ok((page, full))
}

/// The `next` link of a page that was cut short.
pub(super) fn next_link(
    state: &AppState,
    what: &str,
    q: &HashMap<String, String>,
    last: Option<&Rec>,
    more: bool,
) -> Option<Value> {
    let last = last.filter(|_| more)?;
    let mut params: Vec<String> = q
        .iter()
        .filter(|(k, _)| k.as_str() != "marker" && k.as_str() != "offset")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    params.push(format!("marker={}", st(last, "id")));
    Some(
        json!([{"rel": "next", "href": format!("{}/volume/v3/{what}?{}", state.base_url, params.join("&"))}]),
    )
}

/// The snapshots of a volume.
async fn snapshots_of(s: &Volumes, volume: &str) -> Result<Vec<Rec>> {
    let of = crate::record_table::Filter {
        volume: Some(volume.to_string()),
        ..Default::default()
    };
    s.records(SNAPSHOT, &of).await
}

pub(super) async fn visible(
    s: &Volumes,
    auth: &Auth,
    kind: &str,
    q: &HashMap<String, String>,
) -> Result<Vec<Rec>> {
    let all_tenants = auth.0.is_admin()
        && q.get("all_tenants")
            .is_some_and(|v| v != "0" && v != "false");
    let project = auth.0.project_id().unwrap_or("");
    let filter = crate::record_table::Filter {
        project: if all_tenants {
            q.get("project_id").cloned()
        } else {
            Some(project.to_string())
        },
        ..Default::default()
    };
    s.records(kind, &filter).await
}

pub(super) async fn list_volumes_any(
    state: &AppState,
    auth: &Auth,
    mv: Micro,
    q: &HashMap<String, String>,
    detail: bool,
) -> Result<Json<Value>> {
    let s = svc(state)?;
    let (recs, more) = page(
        visible(s, auth, VOLUME, q).await?,
        q,
        &[
            "name",
            "status",
            "bootable",
            "availability_zone",
            "volume_type",
        ],
    )?;
    let vols: Vec<Value> = recs
        .iter()
        .map(|v| volume_view(state, auth, mv, v, detail, detail))
        .collect();
    let mut out = json!({"volumes": vols});
    let what = if detail { "volumes/detail" } else { "volumes" };
    if let Some(l) = next_link(state, what, q, recs.last(), more) {
        out["volumes_links"] = l;
    }
    Ok(Json(out))
}

/// `GET /volumes/summary` (3.12): how many volumes the caller sees and
/// their total size in GiB; from 3.36 every metadata key with its values.
pub(super) async fn volume_summary(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    if mv.0 < 12 {
        return Err(Error::NotFound(
            "The resource could not be found (volume summary needs 3.12).".into(),
        ));
    }
    let s = svc(&state)?;
    let vols = visible(s, &auth, VOLUME, &q.0).await?;
    let total_size: u64 = vols.iter().map(|v| v["size"].as_u64().unwrap_or(0)).sum();
    let mut out = json!({"total_count": vols.len(), "total_size": total_size});
    if mv.0 >= 36 {
        let mut meta: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for v in &vols {
            for (k, val) in v
                .get("metadata")
                .and_then(|m| m.as_object())
                .into_iter()
                .flatten()
            {
                let val = val.as_str().unwrap_or_default().to_string();
                let e = meta.entry(k.clone()).or_default();
                if !e.contains(&val) {
                    e.push(val);
                }
            }
        }
        out["metadata"] = json!(meta);
    }
    Ok(Json(json!({ "volume-summary": out })))
}

pub(super) async fn list_volumes(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    list_volumes_any(&state, &auth, mv, &q.0, false).await
}

pub(super) async fn list_volumes_detail(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    list_volumes_any(&state, &auth, mv, &q.0, true).await
}

pub(super) async fn show_volume(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let v = find(s, &auth, VOLUME, &p["id"]).await?;
    Ok(Json(
        json!({"volume": volume_view(&state, &auth, mv, &v, true, true)}),
    ))
}

pub(super) async fn update_volume(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    write_access(&auth)?;
    find(s, &auth, VOLUME, &p["id"]).await?;
    let body: Map<String, Value> = parse_body(&body)?;
    let b = body
        .get("volume")
        .and_then(|v| v.as_object())
        .ok_or_else(|| {
            Error::BadRequest("Missing required element 'volume' in request body.".into())
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
    let meta = if b.contains_key("metadata") {
        Some(metadata(&b)?)
    } else {
        None
    };
    let v = s
        .update(VOLUME, &p["id"], move |v| {
            if let Some(n) = name.clone() {
                v.insert("name".into(), n);
            }
            if let Some(d) = desc.clone() {
                v.insert("description".into(), d);
            }
            if let Some(m) = meta.clone() {
                v.insert("metadata".into(), m);
            }
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("Volume {} could not be found.", p["id"])))?;
    Ok(Json(
        json!({"volume": volume_view(&state, &auth, mv, &v, true, false)}),
    ))
}

pub(super) async fn delete_volume(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    q: Query,
) -> Result<Response> {
    let s = svc(&state)?;
    write_access(&auth)?;
    let id = p["id"].clone();
    let v = find(s, &auth, VOLUME, &id).await?;
    let status = st(&v, "status");
    if !matches!(
        status,
        "available" | "error" | "error_restoring" | "error_extending" | "error_managing"
    ) {
        return Err(Error::BadRequest(format!(
            "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots or be disassociated from snapshots after volume transfer. (status {status})"
        )));
    }
    let snaps: Vec<Rec> = snapshots_of(s, &id).await?;
    let cascade = q
        .get("cascade")
        .is_some_and(|v| v == "true" || v == "True" || v == "1");
    if !snaps.is_empty() && !cascade {
        return Err(Error::BadRequest(format!(
            "Invalid volume: Volume {id} still has dependent snapshots."
        )));
    }
    for sn in snaps {
        let sn = s
            .update(SNAPSHOT, st(&sn, "id"), |r| {
                r.insert("status".into(), json!("deleting"));
                Ok(())
            })
            .await?;
        if let Some(sn) = sn {
            s.spawn_delete(SNAPSHOT, sn);
        }
    }
    let v = s
        .update(VOLUME, &id, |r| {
            r.insert("status".into(), json!("deleting"));
            Ok(())
        })
        .await?;
    if let Some(v) = v {
        s.spawn_delete(VOLUME, v);
    }
    Ok(empty(StatusCode::ACCEPTED))
}

#[derive(serde::Deserialize)]
struct ImageMetaArgs {
    metadata: HashMap<String, String>,
}

#[derive(serde::Deserialize)]
struct ImageKeyArgs {
    key: String,
}

#[derive(serde::Deserialize)]
struct ReadonlyArgs {
    readonly: Flag,
}

/// `os-reimage` (3.68).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReimageArgs {
    image_id: String,
    #[serde(default)]
    reimage_reserved: bool,
}

#[derive(serde::Deserialize)]
struct RetypeArgs {
    new_type: String,
    #[serde(default)]
    #[allow(dead_code)]
    migration_policy: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadArgs {
    image_name: String,
    #[serde(default)]
    disk_format: Option<String>,
    #[serde(default)]
    container_format: Option<String>,
    #[serde(default)]
    force: Flag,
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default)]
    protected: Flag,
}

/// An action's arguments as their typed form (400 when they do not fit).
fn typed<T: serde::de::DeserializeOwned>(args: &Value) -> Result<T> {
    serde_json::from_value(args.clone())
        .map_err(|e| Error::BadRequest(format!("Invalid input received: {e}.")))
}

/// `os-volume_upload_image`: a new image of the volume's bytes.
async fn upload_image(
    s: &Volumes,
    auth: &Auth,
    mv: Micro,
    v: Rec,
    args: &Value,
) -> Result<Response> {
    let a: UploadArgs = typed(args)?;
    let id = st(&v, "id").to_string();
    let fmt = a.disk_format.unwrap_or_else(|| "raw".into());
    if !matches!(
        fmt.as_str(),
        "raw" | "qcow2" | "vmdk" | "vdi" | "vhd" | "vhdx"
    ) {
        return Err(Error::BadRequest(format!(
            "Invalid input received: disk format {fmt} is not supported."
        )));
    }
    let container = a.container_format.unwrap_or_else(|| "bare".into());
    let status = st(&v, "status").to_string();
    if !(status == "available" || (status == "in-use" && a.force.0)) {
        return Err(Error::BadRequest(format!(
            "Invalid volume: Volume {id} status must be available or in-use (with force), but the current status is: {status}."
        )));
    }
    if (a.visibility.is_some() || a.protected.0) && mv.0 < 1 {
        return Err(Error::BadRequest(
            "Invalid input received: visibility and protected need 3.1.".into(),
        ));
    }
    let visibility = a.visibility.unwrap_or_else(|| "private".into());
    if !matches!(
        visibility.as_str(),
        "public" | "private" | "shared" | "community"
    ) {
        return Err(Error::BadRequest(format!(
            "Invalid input received: visibility {visibility}."
        )));
    }
    if visibility == "public" && !auth.0.is_admin() {
        return Err(Error::Forbidden(
            "Policy doesn't allow publicizing an image.".into(),
        ));
    }
    let image_id = uuid::Uuid::new_v4().to_string();
    let mut img = ursa_image::new_record(&image_id, st(&v, "project_id"));
    img.insert("name".into(), json!(a.image_name));
    img.insert("disk_format".into(), json!(fmt));
    img.insert("container_format".into(), json!(container));
    img.insert("visibility".into(), json!(visibility));
    img.insert("protected".into(), json!(a.protected.0));
    img.insert("status".into(), json!("saving"));
    // What the volume was made from goes with the image (as Cinder does).
    if let Some(Value::Object(m)) = v.get("volume_image_metadata") {
        for (k, val) in m {
            if !img.contains_key(k) && !k.starts_with("os_hash") && k != "checksum" && k != "size" {
                img.insert(k.clone(), val.clone());
            }
        }
    }
    s.images.put(img).await?;
    let (img_id, st2) = (image_id.clone(), status.clone());
    let vol = s
        .update(VOLUME, &id, move |r| {
            if st(r, "status") != st2 {
                return Err(Error::Conflict(format!(
                    "The volume {} changed status meanwhile.",
                    st(r, "id")
                )));
            }
            r.insert("status".into(), json!("uploading"));
            r.insert("ursa:upload_from".into(), json!(st2));
            r.insert("ursa:upload_image".into(), json!(img_id));
            Ok(())
        })
        .await;
    let vol = match vol {
        Ok(Some(v)) => v,
        Ok(None) | Err(_) => {
            let _ = s.images.delete(&image_id).await;
            return Err(vol
                .err()
                .unwrap_or_else(|| Error::NotFound(format!("Volume {id} could not be found."))));
        }
    };
    s.spawn_upload(vol.clone(), image_id.clone(), fmt.clone());
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"os-volume_upload_image": {
            "id": id, "updated_at": vol.get("updated_at"), "status": "uploading",
            "display_description": vol.get("description"), "size": vol.get("size"),
            "volume_type": vol.get("volume_type"), "image_id": image_id,
            "container_format": container, "disk_format": fmt, "image_name": a.image_name,
            "protected": a.protected.0, "visibility": visibility}})),
    )
        .into_response())
}

pub(super) async fn volume_action(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    let s = svc(&state)?;
    write_access(&auth)?;
    let id = p["id"].clone();
    let v = find(s, &auth, VOLUME, &id).await?;
    let body: Map<String, Value> = parse_body(&body)?;
    let (action, args) = body
        .iter()
        .next()
        .ok_or_else(|| Error::BadRequest("An action is required.".into()))?;
    match action.as_str() {
        "os-extend" | "extend" => {
            let new = args
                .get("new_size")
                .and_then(|n| {
                    n.as_u64()
                        .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
                })
                .ok_or_else(|| {
                    Error::BadRequest("Invalid input received: new_size must be an integer.".into())
                })?;
            let cur = v.get("size").and_then(|x| x.as_u64()).unwrap_or(0);
            if st(&v, "status") != "available" {
                return Err(Error::BadRequest(format!(
                    "Invalid volume: Volume {id} status must be available to extend."
                )));
            }
            if new <= cur {
                return Err(Error::BadRequest(format!(
                    "Invalid input received: New size for extend must be greater than current size. (current: {cur}, extended: {new})."
                )));
            }
            let (_, _, gib) = usage(s, st(&v, "project_id")).await?;
            let qg = limit(&quota_of(s, st(&v, "project_id")), "gigabytes");
            if qg >= 0 && (gib + (new - cur)) as i64 > qg {
                return Err(Error::PayloadTooLarge(
                    "VolumeSizeExceedsAvailableQuota: gigabytes quota exceeded.".into(),
                ));
            }
            let v = s
                .update(VOLUME, &id, |r| {
                    r.insert("status".into(), json!("extending"));
                    // So that another controller can finish it (tasks).
                    r.insert("ursa:extend_to".into(), json!(new));
                    Ok(())
                })
                .await?;
            if let Some(v) = v {
                s.spawn_extend(v, new);
            }
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-reset_status" if auth.0.is_admin() => {
            let status = args
                .get("status")
                .and_then(|x| x.as_str())
                .ok_or_else(|| Error::BadRequest("status is required.".into()))?
                .to_string();
            s.update(VOLUME, &id, move |r| {
                r.insert("status".into(), json!(status));
                Ok(())
            })
            .await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-force_delete" if auth.0.is_admin() => {
            let dependents = snapshots_of(s, &id).await?;
            if !dependents.is_empty() {
                return Err(Error::BadRequest(format!(
                    "Invalid volume: Volume {id} still has dependent snapshots."
                )));
            }
            let v = s
                .update(VOLUME, &id, |r| {
                    r.insert("status".into(), json!("deleting"));
                    Ok(())
                })
                .await?;
            if let Some(v) = v {
                s.spawn_delete(VOLUME, v);
            }
            Ok(empty(StatusCode::ACCEPTED))
        }
        // The reservation steps of an attachment (Nova's old flow).
        "os-reserve" | "os-unreserve" | "os-begin_detaching" | "os-roll_detaching" => {
            let (from, to) = match action.as_str() {
                "os-reserve" => ("available", "attaching"),
                "os-unreserve" => ("attaching", "available"),
                "os-begin_detaching" => ("in-use", "detaching"),
                _ => ("detaching", "in-use"),
            };
            let a2 = action.clone();
            s.update(VOLUME, &id, move |r| {
                let now = st(r, "status").to_string();
                if now != from {
                    return Err(Error::BadRequest(format!(
                        "Invalid volume: {a2} needs status {from}, the volume is {now}."
                    )));
                }
                r.insert("status".into(), json!(to));
                Ok(())
            })
            .await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-volume_upload_image" => upload_image(s, &auth, mv, v, args).await,
        "os-set_image_metadata" => {
            let a: ImageMetaArgs = typed(args)?;
            if a.metadata.iter().any(|(k, v)| !metadata_item_ok(k, v)) {
                return Err(Error::BadRequest("Invalid image metadata.".into()));
            }
            let v = s
                .update(VOLUME, &id, move |r| {
                    let mut m = r
                        .get("volume_image_metadata")
                        .and_then(|m| m.as_object())
                        .cloned()
                        .unwrap_or_default();
                    for (k, val) in &a.metadata {
                        m.insert(k.clone(), json!(val));
                    }
                    r.insert("volume_image_metadata".into(), Value::Object(m));
                    Ok(())
                })
                .await?;
            let m = v.and_then(|v| v.get("volume_image_metadata").cloned());
            Ok(Json(json!({"metadata": m.unwrap_or(json!({}))})).into_response())
        }
        "os-unset_image_metadata" => {
            let a: ImageKeyArgs = typed(args)?;
            let has = v
                .get("volume_image_metadata")
                .and_then(|m| m.get(&a.key))
                .is_some();
            if !has {
                return Err(Error::NotFound(format!(
                    "Glance metadata for volume {id} cannot be found."
                )));
            }
            s.update(VOLUME, &id, move |r| {
                if let Some(m) = r
                    .get_mut("volume_image_metadata")
                    .and_then(|m| m.as_object_mut())
                {
                    m.remove(&a.key);
                }
                Ok(())
            })
            .await?;
            Ok(empty(StatusCode::OK))
        }
        "os-show_image_metadata" => Ok(Json(
            json!({"metadata": v.get("volume_image_metadata").cloned().unwrap_or(json!({}))}),
        )
        .into_response()),
        "os-update_readonly_flag" => {
            let a: ReadonlyArgs = typed(args)?;
            s.update(VOLUME, &id, move |r| {
                let mut m = r.get("metadata").cloned().unwrap_or(json!({}));
                m["readonly"] = json!(if a.readonly.0 { "True" } else { "False" });
                r.insert("metadata".into(), m);
                Ok(())
            })
            .await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-retype" => {
            let a: RetypeArgs = typed(args)?;
            let t = find_type(s, &a.new_type)
                .ok()
                .filter(|t| may_use_type(&auth, t))
                .ok_or_else(|| {
                    Error::NotFound(format!("Volume type {} could not be found.", a.new_type))
                })?;
            if !matches!(st(&v, "status"), "available" | "in-use") {
                return Err(Error::BadRequest(format!(
                    "Invalid volume: Volume {id} status must be available or in-use to retype."
                )));
            }
            if st(&v, "volume_type_id") == st(&t, "id") {
                return Err(Error::BadRequest(
                    "Invalid input received: Retype requested to the same volume type.".into(),
                ));
            }
            // One backend: a retype changes the record, never moves data
            // (any migration_policy is met without migrating).
            let (name, tid) = (st(&t, "name").to_string(), st(&t, "id").to_string());
            s.update(VOLUME, &id, move |r| {
                r.insert("volume_type".into(), json!(name));
                r.insert("volume_type_id".into(), json!(tid));
                Ok(())
            })
            .await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-reimage" => {
            super::since(mv, 68, "os-reimage")?;
            let a: ReimageArgs = typed(args)?;
            state
                .images
                .visible(&auth.0, &a.image_id)
                .await
                .map_err(|_| {
                    Error::BadRequest(format!(
                        "Invalid image identifier or unable to access requested image {}.",
                        a.image_id
                    ))
                })?;
            let from: &[&str] = if a.reimage_reserved {
                &["available", "error", "reserved"]
            } else {
                &["available", "error"]
            };
            let vol = s.reimage(&id, &a.image_id, from).await?;
            s.spawn_reimage(vol);
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-set_bootable" => {
            let b = args
                .get("bootable")
                .and_then(|x| x.as_bool())
                .unwrap_or(false);
            s.update(VOLUME, &id, move |r| {
                r.insert("bootable".into(), json!(if b { "true" } else { "false" }));
                Ok(())
            })
            .await?;
            Ok(empty(StatusCode::OK))
        }
        "os-initialize_connection" => {
            // The connection info a client (Nova, a test) attaches with.
            let vhost = args
                .pointer("/connector/ursa_vhost_user")
                .and_then(|x| x.as_bool())
                .unwrap_or(false);
            let c = s.export(&v, vhost).await?;
            let data = json!({"export_name": c.export_name, "uri": c.uri,
                              "socket_path": c.socket_path, "host": c.host, "port": c.port});
            Ok(Json(json!({"connection_info": {"driver_volume_type": c.driver_volume_type, "data": data}})).into_response())
        }
        other => Err(Error::BadRequest(format!(
            "Invalid action: {other} is not supported."
        ))),
    }
}
