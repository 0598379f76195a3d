//! groups: Cinder's generic volume groups (3.13; `volumes` from 3.25),
//! group snapshots (3.14), groups made from a group snapshot or another
//! group (3.14), and reset status (3.19, 3.20).
//!
//! Groups and group snapshots are rows of `vol_records` (kinds
//! `volume_group`, `group_snapshot`, the project's). A volume names its
//! group as `group_id`; a group's members are found among its project's
//! volumes. A group snapshot is one snapshot per member volume (each a
//! snapshot record with `group_snapshot_id`, made by blockd as any
//! other), and its status follows theirs; a group made from it clones
//! each of them on its node.

use super::*;
use crate::{GROUP, GROUP_SNAPSHOT, GROUP_TYPE};
use serde::Deserialize;

/// The volumes of a group (among its project's).
pub(super) async fn members(s: &Volumes, g: &Rec) -> Result<Vec<Rec>> {
    let f = crate::record_table::Filter {
        group: Some(st(g, "id").to_string()),
        ..Default::default()
    };
    s.records(VOLUME, &f).await
}

async fn find_group(s: &Volumes, auth: &Auth, id: &str) -> Result<Rec> {
    s.record(GROUP, id)
        .await?
        .filter(|g| may_see(auth, g))
        .ok_or_else(|| Error::NotFound(format!("Group {id} could not be found.")))
}

async fn group_view(s: &Volumes, g: &Rec, mv: Micro, detail: bool) -> Result<Value> {
    if !detail {
        return Ok(json!({"id": st(g, "id"), "name": g.get("name")}));
    }
    let vols = members(s, g).await?;
    let mut status = st(g, "status").to_string();
    if status == "available" && vols.iter().any(|v| st(v, "status") == "creating") {
        status = "creating".into();
    }
    let mut v = json!({"id": st(g, "id"), "name": g.get("name"), "description": g.get("description"),
        "status": status, "availability_zone": ZONE, "created_at": st(g, "created_at"),
        "group_type": st(g, "group_type"), "volume_types": g.get("volume_types"),
        "group_snapshot_id": g.get("group_snapshot_id"), "source_group_id": g.get("source_group_id")});
    if mv.0 >= 25 {
        v["volumes"] = json!(vols.iter().map(|x| st(x, "id")).collect::<Vec<_>>());
    }
    if mv.0 >= 38 {
        v["replication_status"] = json!("disabled");
    }
    if mv.0 >= 58 {
        v["project_id"] = json!(st(g, "project_id"));
    }
    Ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    group: NewGroup,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    group_type: String,
    volume_types: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    availability_zone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    group: GroupChange,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupChange {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    add_volumes: Option<String>,
    #[serde(default)]
    remove_volumes: Option<String>,
}

#[derive(Deserialize)]
enum GroupAction {
    #[serde(rename = "delete")]
    Delete(DeleteArgs),
    #[serde(rename = "reset_status")]
    ResetStatus(StatusArgs),
}

#[derive(Deserialize, Default)]
struct DeleteArgs {
    #[serde(default, rename = "delete-volumes")]
    delete_volumes: Flag,
}

#[derive(Deserialize)]
struct StatusArgs {
    status: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FromSourceBody {
    #[serde(rename = "create-from-src")]
    src: FromSource,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FromSource {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    group_snapshot_id: Option<String>,
    #[serde(default)]
    source_group_id: Option<String>,
}

/// A new group's record, within the project's `groups` quota.
async fn new_group(
    s: &Volumes,
    project: &str,
    name: &Option<String>,
    description: &Option<String>,
    group_type: &str,
    volume_types: Vec<String>,
) -> Result<Rec> {
    let q = limit(&quota_of(s, project), "groups");
    let f = crate::record_table::Filter {
        project: Some(project.to_string()),
        ..Default::default()
    };
    if q >= 0 && s.records(GROUP, &f).await?.len() as i64 + 1 > q {
        return Err(Error::PayloadTooLarge(format!(
            "GroupLimitExceeded: Maximum number of groups allowed ({q}) exceeded."
        )));
    }
    let g = json!({"id": uuid::Uuid::new_v4().to_string(), "name": short(name, "name")?,
        "description": short(description, "description")?, "status": "available",
        "group_type": group_type, "volume_types": volume_types, "group_snapshot_id": null,
        "source_group_id": null, "project_id": project, "created_at": now(), "volume_id": ""});
    Ok(g.as_object().cloned().unwrap_or_default())
}

pub(super) async fn create_group(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    body: axum::body::Bytes,
) -> Result<Response> {
    since(mv, 13, "Groups")?;
    let s = svc(&state)?;
    write_access(&auth)?;
    let project = project(&auth)?;
    let n = parse_body::<CreateBody>(&body)?.group;
    if n.availability_zone.as_deref().is_some_and(|z| z != ZONE) {
        return Err(Error::BadRequest("Invalid availability zone.".into()));
    }
    let gt = s
        .docs(GROUP_TYPE)
        .into_iter()
        .find(|t| st(t, "id") == n.group_type || st(t, "name") == n.group_type)
        .ok_or_else(|| {
            Error::NotFound(format!("Group type {} could not be found.", n.group_type))
        })?;
    if n.volume_types.is_empty() {
        return Err(Error::BadRequest(
            "Invalid input received: volume_types must not be empty.".into(),
        ));
    }
    let mut types = Vec::new();
    for t in &n.volume_types {
        let vt = find_type(s, t)?;
        if !may_use_type(&auth, &vt) {
            return Err(Error::NotFound(format!(
                "Volume type {t} could not be found."
            )));
        }
        types.push(st(&vt, "id").to_string());
    }
    let g = new_group(s, &project, &n.name, &n.description, st(&gt, "id"), types).await?;
    s.put(GROUP, g.clone()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"group": {"id": st(&g, "id"), "name": g.get("name")}})),
    )
        .into_response())
}

async fn list_any(
    state: &AppState,
    auth: &Auth,
    mv: Micro,
    q: &HashMap<String, String>,
    detail: bool,
) -> Result<Json<Value>> {
    since(mv, 13, "Groups")?;
    let s = svc(state)?;
    let all = auth.0.is_reader_everywhere() && q.contains_key("all_tenants");
    let f = crate::record_table::Filter {
        project: if all { None } else { Some(project(auth)?) },
        ..Default::default()
    };
    let mut out = Vec::new();
    for g in s.records(GROUP, &f).await? {
        if q.get("name")
            .is_some_and(|n| g.get("name") != Some(&json!(n)))
        {
            continue;
        }
        out.push(group_view(s, &g, mv, detail).await?);
    }
    Ok(Json(json!({"groups": out})))
}

pub(super) async fn list_groups(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    list_any(&state, &auth, mv, &q.0, false).await
}

pub(super) async fn list_groups_detail(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    list_any(&state, &auth, mv, &q.0, true).await
}

pub(super) async fn show_group(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Json<Value>> {
    since(mv, 13, "Groups")?;
    let s = svc(&state)?;
    let g = find_group(s, &auth, &p["id"]).await?;
    Ok(Json(json!({"group": group_view(s, &g, mv, true).await?})))
}

fn ids(list: &Option<String>) -> Vec<String> {
    list.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// Name, description, and volumes in or out of the group.
pub(super) async fn update_group(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    since(mv, 13, "Groups")?;
    let s = svc(&state)?;
    write_access(&auth)?;
    let g = find_group(s, &auth, &p["id"]).await?;
    let c = parse_body::<UpdateBody>(&body)?.group;
    let (add, remove) = (ids(&c.add_volumes), ids(&c.remove_volumes));
    if c.name.is_none() && c.description.is_none() && add.is_empty() && remove.is_empty() {
        return Err(Error::BadRequest(
            "Name, description, add_volumes, and remove_volumes can not be all empty in the request body."
                .into(),
        ));
    }
    if st(&g, "status") != "available" {
        return Err(Error::BadRequest(format!(
            "Invalid group: Group {} status must be available.",
            st(&g, "id")
        )));
    }
    let gid = st(&g, "id").to_string();
    let types: Vec<Value> = g
        .get("volume_types")
        .and_then(|t| t.as_array())
        .cloned()
        .unwrap_or_default();
    for v in &add {
        let vol = find(s, &auth, VOLUME, v).await?;
        let ok_type = types.iter().any(|t| t == st(&vol, "volume_type_id"));
        let free = st(&vol, "group_id").is_empty();
        if !ok_type || !free || !matches!(st(&vol, "status"), "available" | "in-use") {
            return Err(Error::BadRequest(format!(
                "Invalid volume: Cannot add volume {v} to group {gid}: it must be available or in-use, of one of the group's volume types, and in no other group."
            )));
        }
        if st(&vol, "project_id") != st(&g, "project_id") {
            return Err(Error::BadRequest(format!(
                "Invalid volume: Volume {v} is not in the group's project."
            )));
        }
    }
    for v in &remove {
        let vol = find(s, &auth, VOLUME, v).await?;
        if st(&vol, "group_id") != gid {
            return Err(Error::BadRequest(format!(
                "Invalid volume: Volume {v} is not in group {gid}."
            )));
        }
    }
    for (list, to) in [(&add, json!(gid)), (&remove, Value::Null)] {
        for v in list {
            let to = to.clone();
            s.update(VOLUME, v, move |r| {
                r.insert("group_id".into(), to.clone());
                Ok(())
            })
            .await?;
        }
    }
    let (name, desc) = (
        c.name
            .as_ref()
            .map(|n| short(&Some(n.clone()), "name"))
            .transpose()?,
        c.description
            .as_ref()
            .map(|d| short(&Some(d.clone()), "description"))
            .transpose()?,
    );
    s.update(GROUP, &gid, move |r| {
        if let Some(n) = &name {
            r.insert("name".into(), n.clone());
        }
        if let Some(d) = &desc {
            r.insert("description".into(), d.clone());
        }
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

/// `delete` (with `delete-volumes`) and `reset_status` (3.20, admins).
pub(super) async fn group_action(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    since(mv, 13, "Groups")?;
    let s = svc(&state)?;
    write_access(&auth)?;
    let g = find_group(s, &auth, &p["id"]).await?;
    let gid = st(&g, "id").to_string();
    match parse_body::<GroupAction>(&body)? {
        GroupAction::ResetStatus(a) => {
            since(mv, 20, "Resetting a group's status")?;
            admin(&auth)?;
            s.update(GROUP, &gid, move |r| {
                r.insert("status".into(), json!(a.status));
                Ok(())
            })
            .await?;
        }
        GroupAction::Delete(a) => {
            let f = crate::record_table::Filter {
                group: Some(gid.clone()),
                ..Default::default()
            };
            if !s.records(GROUP_SNAPSHOT, &f).await?.is_empty() {
                return Err(Error::BadRequest(format!(
                    "Invalid group: Group {gid} still has group snapshots."
                )));
            }
            let vols = members(s, &g).await?;
            if !vols.is_empty() && !a.delete_volumes.0 {
                return Err(Error::BadRequest(format!(
                    "Invalid group: Group {gid} still contains volumes. The delete-volumes flag is required to delete it."
                )));
            }
            for v in &vols {
                if !matches!(st(v, "status"), "available" | "error" | "error_restoring") {
                    return Err(Error::BadRequest(format!(
                        "Invalid volume: Volume {} of group {gid} is {}.",
                        st(v, "id"),
                        st(v, "status")
                    )));
                }
                let deps = crate::record_table::Filter {
                    volume: Some(st(v, "id").to_string()),
                    ..Default::default()
                };
                if !s.records(SNAPSHOT, &deps).await?.is_empty() {
                    return Err(Error::BadRequest(format!(
                        "Invalid volume: Volume {} of group {gid} still has snapshots.",
                        st(v, "id")
                    )));
                }
            }
            for v in vols {
                let r = s
                    .update(VOLUME, st(&v, "id"), |r| {
                        r.insert("status".into(), json!("deleting"));
                        Ok(())
                    })
                    .await?;
                if let Some(r) = r {
                    s.spawn_delete(VOLUME, r);
                }
            }
            s.forget(GROUP, &gid).await?;
        }
    }
    Ok(empty(StatusCode::ACCEPTED))
}

/// `POST /groups/action` `create-from-src`: a group of clones of a group
/// snapshot's snapshots or of another group's volumes.
pub(super) async fn create_group_from_src(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    body: axum::body::Bytes,
) -> Result<Response> {
    since(mv, 14, "Creating a group from a source")?;
    let s = svc(&state)?;
    write_access(&auth)?;
    let project = project(&auth)?;
    let src = parse_body::<FromSourceBody>(&body)?.src;
    // (source record, kind of each source, the sources' ids)
    let (gtype, vtypes, sources): (String, Vec<String>, Vec<(Rec, &'static str)>) =
        match (&src.group_snapshot_id, &src.source_group_id) {
            (Some(gs), None) => {
                let r = find_group_snapshot(s, &auth, gs).await?;
                let mut snaps = Vec::new();
                for id in snapshot_ids(&r) {
                    if let Some(sn) = s.record(SNAPSHOT, &id).await? {
                        snaps.push((sn, SNAPSHOT));
                    }
                }
                (
                    st(&r, "group_type_id").to_string(),
                    strings(&r, "ursa:volume_types"),
                    snaps,
                )
            }
            (None, Some(gid)) => {
                let g = find_group(s, &auth, gid).await?;
                let vols = members(s, &g)
                    .await?
                    .into_iter()
                    .map(|v| (v, VOLUME))
                    .collect();
                (
                    st(&g, "group_type").to_string(),
                    strings(&g, "volume_types"),
                    vols,
                )
            }
            _ => {
                return Err(Error::BadRequest(
                    "Invalid input received: give either group_snapshot_id or source_group_id."
                        .into(),
                ))
            }
        };
    if let Some((bad, _)) = sources
        .iter()
        .find(|(r, _)| st(r, "status") != "available" && st(r, "status") != "in-use")
    {
        return Err(Error::BadRequest(format!(
            "Invalid input received: source {} is {}.",
            st(bad, "id"),
            st(bad, "status")
        )));
    }
    let mut g = new_group(s, &project, &src.name, &src.description, &gtype, vtypes).await?;
    g.insert("group_snapshot_id".into(), json!(src.group_snapshot_id));
    g.insert("source_group_id".into(), json!(src.source_group_id));
    s.put(GROUP, g.clone()).await?;
    let gid = st(&g, "id").to_string();
    for (r, kind) in sources {
        // The type and node of the volume it comes from.
        let origin = if kind == SNAPSHOT {
            s.record(VOLUME, st(&r, "volume_id"))
                .await?
                .unwrap_or_default()
        } else {
            r.clone()
        };
        let vtype = find_type(s, st(&origin, "volume_type_id"))
            .or_else(|_| find_type(s, DEFAULT_TYPE_ID))?;
        let host = match st(&origin, "ursa:node") {
            "" => st(&r, "ursa:host").to_string(),
            h => h.to_string(),
        };
        let n = NewVolume {
            project: project.clone(),
            user: auth.0.user_id.clone(),
            name: r.get("name").cloned().unwrap_or(Value::Null),
            description: Value::Null,
            size: r.get("size").and_then(|x| x.as_u64()).unwrap_or(1),
            vtype,
            snapshot_id: (kind == SNAPSHOT).then(|| st(&r, "id").to_string()),
            source_volid: (kind == VOLUME).then(|| st(&r, "id").to_string()),
            image: None,
            meta: json!({}),
            host: Some(host),
            group_id: Some(gid.clone()),
            request_id: None,
        };
        create_record(s, n, crate::Source::Copy(st(&r, "id").to_string())).await?;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"group": {"id": gid, "name": g.get("name")}})),
    )
        .into_response())
}

fn strings(r: &Rec, k: &str) -> Vec<String> {
    r.get(k)
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------------
// Group snapshots.

fn snapshot_ids(gs: &Rec) -> Vec<String> {
    strings(gs, "ursa:snapshots")
}

async fn find_group_snapshot(s: &Volumes, auth: &Auth, id: &str) -> Result<Rec> {
    s.record(GROUP_SNAPSHOT, id)
        .await?
        .filter(|g| may_see(auth, g))
        .ok_or_else(|| Error::NotFound(format!("GroupSnapshot {id} could not be found.")))
}

/// A group snapshot's status: a reset one's, else its snapshots'.
async fn gs_status(s: &Volumes, gs: &Rec) -> Result<String> {
    if let Some(x) = gs.get("ursa:status").and_then(|v| v.as_str()) {
        return Ok(x.to_string());
    }
    let mut all = Vec::new();
    for id in snapshot_ids(gs) {
        if let Some(sn) = s.record(SNAPSHOT, &id).await? {
            all.push(st(&sn, "status").to_string());
        }
    }
    Ok(if all.iter().any(|x| x.starts_with("error")) {
        "error"
    } else if all.iter().any(|x| x == "creating") {
        "creating"
    } else if st(gs, "status") == "deleting" {
        "deleting"
    } else {
        "available"
    }
    .into())
}

async fn gs_view(s: &Volumes, gs: &Rec, mv: Micro, detail: bool) -> Result<Value> {
    if !detail {
        return Ok(json!({"id": st(gs, "id"), "name": gs.get("name")}));
    }
    let mut v = json!({"id": st(gs, "id"), "name": gs.get("name"), "description": gs.get("description"),
        "status": gs_status(s, gs).await?, "created_at": st(gs, "created_at"),
        "group_id": st(gs, "group_id"), "group_type_id": st(gs, "group_type_id")});
    if mv.0 >= 58 {
        v["project_id"] = json!(st(gs, "project_id"));
    }
    Ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGsBody {
    group_snapshot: NewGs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGs {
    group_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
enum GsAction {
    #[serde(rename = "reset_status")]
    ResetStatus(StatusArgs),
}

pub(super) async fn create_group_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    body: axum::body::Bytes,
) -> Result<Response> {
    since(mv, 14, "Group snapshots")?;
    let s = svc(&state)?;
    write_access(&auth)?;
    let project = project(&auth)?;
    let n = parse_body::<NewGsBody>(&body)?.group_snapshot;
    let g = find_group(s, &auth, &n.group_id).await?;
    if st(&g, "status") != "available" {
        return Err(Error::BadRequest(format!(
            "Invalid group: Group {} status must be available.",
            n.group_id
        )));
    }
    let vols = members(s, &g).await?;
    if let Some(v) = vols
        .iter()
        .find(|v| !matches!(st(v, "status"), "available" | "in-use"))
    {
        return Err(Error::BadRequest(format!(
            "Invalid volume: Volume {} of the group is {}.",
            st(v, "id"),
            st(v, "status")
        )));
    }
    let (_, ns, gib) = usage(s, &project).await?;
    let quota = quota_of(s, &project);
    let size: u64 = vols.iter().filter_map(|v| v.get("size")?.as_u64()).sum();
    let (qs, qg) = (limit(&quota, "snapshots"), limit(&quota, "gigabytes"));
    if (qs >= 0 && (ns + vols.len() as u64) as i64 > qs) || (qg >= 0 && (gib + size) as i64 > qg) {
        return Err(Error::PayloadTooLarge(
            "SnapshotLimitExceeded: Maximum number of snapshots allowed exceeded.".into(),
        ));
    }
    let gsid = uuid::Uuid::new_v4().to_string();
    let mut snaps = Vec::new();
    for v in &vols {
        let t = now();
        let snap = json!({"id": uuid::Uuid::new_v4().to_string(),
            "name": format!("snapshot-{}", st(v, "id")), "description": null, "status": "creating",
            "size": v.get("size"), "volume_id": st(v, "id"), "created_at": t, "updated_at": t,
            "metadata": {}, "ursa:progress": "0%", "project_id": project,
            "ursa:user_id": auth.0.user_id, "ursa:host": st(v, "ursa:node"),
            "group_snapshot_id": gsid});
        snaps.push(snap.as_object().cloned().unwrap_or_default());
    }
    let gs = json!({"id": gsid, "name": short(&n.name, "name")?,
        "description": short(&n.description, "description")?, "status": "creating",
        "group_id": st(&g, "id"), "group_type_id": st(&g, "group_type"),
        "project_id": project, "created_at": now(), "volume_id": "",
        "ursa:snapshots": snaps.iter().map(|x| st(x, "id")).collect::<Vec<_>>(),
        "ursa:volume_types": g.get("volume_types")});
    let gs = gs.as_object().cloned().unwrap_or_default();
    s.put(GROUP_SNAPSHOT, gs.clone()).await?;
    for snap in snaps {
        s.put(SNAPSHOT, snap.clone()).await?;
        let host = st(&snap, "ursa:host").to_string();
        s.spawn_snapshot(snap, host);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"group_snapshot": {"id": gsid, "name": gs.get("name"),
                                       "group_type_id": st(&g, "group_type")}}),
        ),
    )
        .into_response())
}

async fn list_gs_any(
    state: &AppState,
    auth: &Auth,
    mv: Micro,
    q: &HashMap<String, String>,
    detail: bool,
) -> Result<Json<Value>> {
    since(mv, 14, "Group snapshots")?;
    let s = svc(state)?;
    let all = auth.0.is_reader_everywhere() && q.contains_key("all_tenants");
    let f = crate::record_table::Filter {
        project: if all { None } else { Some(project(auth)?) },
        ..Default::default()
    };
    let mut out = Vec::new();
    for gs in s.records(GROUP_SNAPSHOT, &f).await? {
        if q.get("group_id").is_some_and(|g| st(&gs, "group_id") != g) {
            continue;
        }
        out.push(gs_view(s, &gs, mv, detail).await?);
    }
    Ok(Json(json!({"group_snapshots": out})))
}

pub(super) async fn list_group_snapshots(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    list_gs_any(&state, &auth, mv, &q.0, false).await
}

pub(super) async fn list_group_snapshots_detail(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    list_gs_any(&state, &auth, mv, &q.0, true).await
}

pub(super) async fn show_group_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Json<Value>> {
    since(mv, 14, "Group snapshots")?;
    let s = svc(&state)?;
    let gs = find_group_snapshot(s, &auth, &p["id"]).await?;
    Ok(Json(
        json!({"group_snapshot": gs_view(s, &gs, mv, true).await?}),
    ))
}

/// Deletes a group snapshot's snapshots (in the background), then it.
pub(super) async fn delete_group_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Response> {
    since(mv, 14, "Group snapshots")?;
    let s = svc(&state)?;
    write_access(&auth)?;
    let gs = find_group_snapshot(s, &auth, &p["id"]).await?;
    if gs_status(s, &gs).await? == "creating" {
        return Err(Error::BadRequest(format!(
            "Invalid group snapshot: {} is being created.",
            p["id"]
        )));
    }
    for id in snapshot_ids(&gs) {
        let r = s
            .update(SNAPSHOT, &id, |r| {
                r.insert("status".into(), json!("deleting"));
                Ok(())
            })
            .await?;
        if let Some(r) = r {
            s.spawn_delete(SNAPSHOT, r);
        }
    }
    s.forget(GROUP_SNAPSHOT, st(&gs, "id")).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

pub(super) async fn group_snapshot_action(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    since(mv, 19, "Resetting a group snapshot's status")?;
    let s = svc(&state)?;
    admin(&auth)?;
    find_group_snapshot(s, &auth, &p["id"]).await?;
    let GsAction::ResetStatus(a) = parse_body::<GsAction>(&body)?;
    s.update(GROUP_SNAPSHOT, &p["id"], move |r| {
        r.insert("ursa:status".into(), json!(a.status));
        r.insert("status".into(), json!(a.status));
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}
