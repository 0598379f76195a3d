//! backups: Cinder's backup API (create, incremental, list, show, update,
//! restore to a new or an existing volume, delete, reset status, force
//! delete), over [`crate::backup`].

use super::*;
use crate::backup::{BACKUP, CONTAINER};
use base64::Engine as _;

/// What `export_record` names as the service holding the data (Tempest
/// checks Cinder's driver prefix).
const BACKUP_SERVICE: &str = "cinder.backup.drivers.swift";
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    backup: NewBackup,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBackup {
    volume_id: String,
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    incremental: Flag,
    #[serde(default)]
    force: Flag,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    availability_zone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    backup: BackupChange,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupChange {
    #[serde(default)]
    name: Option<Option<String>>,
    #[serde(default)]
    description: Option<Option<String>>,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    restore: Restore,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Restore {
    #[serde(default)]
    volume_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    #[serde(rename = "backup-record")]
    record: BackupRecord,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRecord {
    backup_service: String,
    backup_url: String,
}

/// The fields of an exported record an import takes back.
#[derive(Deserialize)]
struct Exported {
    id: String,
    volume_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    object_count: Option<u64>,
    #[serde(default)]
    is_incremental: bool,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    data_timestamp: Option<String>,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
    #[serde(default, rename = "ursa:data_id")]
    data_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
enum BackupAction {
    #[serde(rename = "os-reset_status")]
    ResetStatus { status: String },
    #[serde(rename = "os-force_delete")]
    ForceDelete {},
}

fn bad_body(e: Error) -> Error {
    match e {
        Error::BadRequest(m) => Error::BadRequest(format!("Invalid input for the backup: {m}")),
        e => e,
    }
}

fn check_metadata(m: &HashMap<String, String>) -> Result<()> {
    match m.iter().find(|(k, v)| !metadata_item_ok(k, v)) {
        Some((k, _)) => Err(Error::BadRequest(format!("Invalid metadata: {k}"))),
        None => Ok(()),
    }
}

fn links(state: &AppState, b: &Rec) -> Value {
    let (p, id) = (st(b, "project_id"), st(b, "id"));
    json!([
        {"href": format!("{}/volume/v3/{p}/backups/{id}", state.base_url), "rel": "self"},
        {"href": format!("{}/volume/{p}/backups/{id}", state.base_url), "rel": "bookmark"}
    ])
}

/// A backup as create and update answer, and summary lists show it.
fn backup_summary(state: &AppState, b: &Rec, mv: Micro) -> Value {
    let mut out = json!({"id": st(b, "id"), "name": b.get("name").cloned().unwrap_or(Value::Null),
        "links": links(state, b)});
    if mv.0 >= 43 {
        out["metadata"] = b.get("metadata").cloned().unwrap_or(json!({}));
    }
    out
}

fn backup_view(state: &AppState, auth: &Auth, b: &Rec, mv: Micro) -> Value {
    let mut out = Map::new();
    for k in [
        "status",
        "object_count",
        "container",
        "description",
        "availability_zone",
        "created_at",
        "updated_at",
        "name",
        "has_dependent_backups",
        "volume_id",
        "fail_reason",
        "size",
        "id",
        "is_incremental",
        "data_timestamp",
        "snapshot_id",
    ] {
        out.insert(k.into(), b.get(k).cloned().unwrap_or(Value::Null));
    }
    out.insert("links".into(), links(state, b));
    if mv.0 >= 18 && auth.0.is_admin() {
        out.insert(
            "os-backup-project-attr:project_id".into(),
            json!(st(b, "project_id")),
        );
    }
    if mv.0 >= 43 {
        out.insert(
            "metadata".into(),
            b.get("metadata").cloned().unwrap_or(json!({})),
        );
    }
    if mv.0 >= 56 {
        out.insert("user_id".into(), json!(st(b, "user_id")));
    }
    Value::Object(out)
}

async fn find_backup(s: &Volumes, auth: &Auth, id: &str) -> Result<Rec> {
    s.record(BACKUP, id)
        .await?
        .filter(|r| may_see(auth, r))
        .ok_or_else(|| Error::NotFound(format!("Backup {id} could not be found.")))
}

/// The newest available backup of a volume: what an incremental one
/// builds on.
async fn latest_backup(s: &Volumes, volume: &str) -> Result<Option<Rec>> {
    let of = crate::record_table::Filter {
        volume: Some(volume.to_string()),
        status: vec!["available".into()],
        ..Default::default()
    };
    Ok(s.records(BACKUP, &of).await?.pop())
}

pub(super) async fn create_backup(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    body: axum::body::Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&state)?;
    let project = project(&auth)?;
    let b = parse_body::<CreateBody>(&body).map_err(bad_body)?.backup;
    if s.objects.is_none() {
        return Err(Error::NotFound(
            "Service cinder-backup could not be found: this cloud has no object storage.".into(),
        ));
    }
    let vid = b.volume_id.as_str();
    let vol = find(s, &auth, VOLUME, vid)
        .await
        .map_err(|_| Error::NotFound(format!("Volume {vid} could not be found.")))?;
    match st(&vol, "status") {
        "available" => {}
        "in-use" if b.force.0 => {}
        other => {
            return Err(Error::BadRequest(format!(
                "Invalid volume: Volume to be backed up must be available or in-use, but the current status is \"{other}\"."
            )))
        }
    }
    if let Some(sid) = &b.snapshot_id {
        let snap = find(s, &auth, SNAPSHOT, sid).await?;
        if st(&snap, "volume_id") != vid || st(&snap, "status") != "available" {
            return Err(Error::BadRequest(format!(
                "Invalid snapshot: snapshot {sid} is not an available snapshot of volume {vid}."
            )));
        }
    }
    if let Some(m) = &b.metadata {
        if mv.0 < 43 {
            return Err(Error::BadRequest(
                "Invalid input for the backup: metadata needs microversion 3.43.".into(),
            ));
        }
        check_metadata(m)?;
    }
    if b.availability_zone.as_deref().is_some_and(|z| z != ZONE) {
        return Err(Error::BadRequest(format!(
            "Invalid availability zone: {}",
            b.availability_zone.as_deref().unwrap_or("")
        )));
    }
    let container = match b.container.as_deref() {
        None | Some("") => CONTAINER.to_string(),
        Some(c) if c.len() <= 255 && !c.contains('/') => c.to_string(),
        Some(c) => return Err(Error::BadRequest(format!("Invalid container name: {c:?}"))),
    };
    let parent = if b.incremental.0 {
        Some(latest_backup(s, vid).await?.ok_or_else(|| {
            Error::BadRequest(
                "Invalid backup: No backups available to do an incremental backup.".into(),
            )
        })?)
    } else {
        None
    };
    let quota = quota_of(s, &project);
    let have = s
        .records(
            BACKUP,
            &crate::record_table::Filter {
                project: Some(project.clone()),
                ..Default::default()
            },
        )
        .await?;
    let q = limit(&quota, "backups");
    if q >= 0 && have.len() as i64 + 1 > q {
        return Err(Error::PayloadTooLarge(
            "BackupLimitExceeded: Maximum number of backups allowed exceeded.".into(),
        ));
    }
    let gib = |r: &Rec| r.get("size").and_then(|v| v.as_i64()).unwrap_or(0);
    let (used, want) = (have.iter().map(gib).sum::<i64>(), gib(&vol));
    let q = limit(&quota, "backup_gigabytes");
    if q >= 0 && used + want > q {
        return Err(Error::PayloadTooLarge(format!(
            "VolumeBackupSizeExceedsAvailableQuota: Requested backup exceeds allowed Backup gigabytes quota. Requested {want}G, quota is {q}G and {used}G has been consumed."
        )));
    }
    let now = now();
    let rec = json!({
        "id": uuid::Uuid::new_v4().to_string(), "name": short(&b.name, "name")?,
        "description": short(&b.description, "description")?, "status": "creating",
        "volume_id": vid, "snapshot_id": b.snapshot_id, "container": container,
        "availability_zone": ZONE, "size": vol.get("size").cloned().unwrap_or(json!(1)),
        "object_count": 0, "is_incremental": parent.is_some(), "has_dependent_backups": false,
        "fail_reason": null, "created_at": now, "updated_at": now, "data_timestamp": null,
        "metadata": b.metadata.unwrap_or_default(), "project_id": project,
        "user_id": auth.0.user_id,
        "ursa:parent_id": parent.as_ref().map(|p| st(p, "id").to_string()),
        "ursa:base_snapshot": uuid::Uuid::new_v4().to_string(),
    })
    .as_object()
    .cloned()
    .expect("object");
    s.put(BACKUP, rec.clone()).await?;
    if let Some(p) = &parent {
        s.update(BACKUP, st(p, "id"), |r| {
            r.insert("has_dependent_backups".into(), json!(true));
            Ok(())
        })
        .await?;
    }
    s.spawn_backup(rec.clone(), parent);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"backup": backup_summary(&state, &rec, mv)})),
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
    let s = svc(state)?;
    project(auth).or_else(|e| {
        if auth.0.is_admin() {
            Ok(String::new())
        } else {
            Err(e)
        }
    })?;
    let (recs, more) = page(
        visible(s, auth, BACKUP, q).await?,
        q,
        &["name", "status", "volume_id"],
    )?;
    let v: Vec<Value> = recs
        .iter()
        .map(|r| {
            if detail {
                backup_view(state, auth, r, mv)
            } else {
                json!({"id": st(r, "id"), "name": r.get("name").cloned().unwrap_or(Value::Null),
                       "links": links(state, r)})
            }
        })
        .collect();
    let mut out = json!({ "backups": v });
    let what = if detail { "backups/detail" } else { "backups" };
    if let Some(l) = next_link(state, what, q, recs.last(), more) {
        out["backups_links"] = l;
    }
    Ok(Json(out))
}

pub(super) async fn list_backups(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    list_any(&state, &auth, mv, &q.0, false).await
}

pub(super) async fn list_backups_detail(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    list_any(&state, &auth, mv, &q.0, true).await
}

pub(super) async fn show_backup(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let b = find_backup(s, &auth, &p["id"]).await?;
    Ok(Json(json!({"backup": backup_view(&state, &auth, &b, mv)})))
}

/// 3.9: name and description; 3.43: metadata.
pub(super) async fn update_backup(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    if mv.0 < 9 {
        return Err(Error::NotFound(
            "Updating a backup needs microversion 3.9.".into(),
        ));
    }
    write_access(&auth)?;
    let s = svc(&state)?;
    find_backup(s, &auth, &p["id"]).await?;
    let c = parse_body::<UpdateBody>(&body).map_err(bad_body)?.backup;
    let name = c.name.as_ref().map(|n| short(n, "name")).transpose()?;
    let desc = c
        .description
        .as_ref()
        .map(|d| short(d, "description"))
        .transpose()?;
    if let Some(m) = &c.metadata {
        if mv.0 < 43 {
            return Err(Error::BadRequest(
                "Invalid input for the backup: metadata needs microversion 3.43.".into(),
            ));
        }
        check_metadata(m)?;
    }
    let b = s
        .update(BACKUP, &p["id"], move |r| {
            if let Some(n) = &name {
                r.insert("name".into(), n.clone());
            }
            if let Some(d) = &desc {
                r.insert("description".into(), d.clone());
            }
            if let Some(m) = &c.metadata {
                r.insert("metadata".into(), json!(m));
            }
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("Backup {} could not be found.", p["id"])))?;
    Ok(Json(json!({"backup": backup_summary(&state, &b, mv)})))
}

pub(super) async fn delete_backup(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&state)?;
    let b = find_backup(s, &auth, &p["id"]).await?;
    start_delete(s, b, false).await
}

async fn start_delete(s: &Volumes, b: Rec, force: bool) -> Result<Response> {
    let id = st(&b, "id").to_string();
    if !force && !matches!(st(&b, "status"), "available" | "error") {
        return Err(Error::BadRequest(format!(
            "Invalid backup: Backup status must be available or error (it is {}).",
            st(&b, "status")
        )));
    }
    if b.get("has_dependent_backups") == Some(&json!(true)) {
        return Err(Error::BadRequest(
            "Invalid backup: Incremental backups exist for this backup.".into(),
        ));
    }
    let b = s
        .update(BACKUP, &id, |r| {
            r.insert("status".into(), json!("deleting"));
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("Backup {id} could not be found.")))?;
    s.spawn_delete_backup(b);
    Ok(empty(StatusCode::ACCEPTED))
}

pub(super) async fn restore_backup(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&state)?;
    let project = project(&auth)?;
    let b = find_backup(s, &auth, &p["id"]).await?;
    let r = parse_body::<RestoreBody>(&body).map_err(bad_body)?.restore;
    if st(&b, "status") != "available" {
        return Err(Error::BadRequest(format!(
            "Invalid backup: Backup status must be available (it is {}).",
            st(&b, "status")
        )));
    }
    let size = b.get("size").and_then(|v| v.as_u64()).unwrap_or(1);
    let (vol, new) = match &r.volume_id {
        Some(vid) => {
            let vol = find(s, &auth, VOLUME, vid).await?;
            if st(&vol, "status") != "available" {
                return Err(Error::BadRequest(format!(
                    "Invalid volume: Volume to be restored to must be available (it is {}).",
                    st(&vol, "status")
                )));
            }
            if vol.get("size").and_then(|v| v.as_u64()).unwrap_or(0) < size {
                return Err(Error::BadRequest(format!(
                    "Invalid volume: volume size {} is too small to restore backup of size {size}.",
                    vol.get("size").and_then(|v| v.as_u64()).unwrap_or(0)
                )));
            }
            (vol, false)
        }
        None => {
            let name = r
                .name
                .clone()
                .unwrap_or_else(|| format!("restore_backup_{}", st(&b, "id")));
            let n = NewVolume {
                group_id: None,
                request_id: None,
                project: project.clone(),
                user: auth.0.user_id.clone(),
                name: json!(name),
                description: json!(r.description),
                size,
                vtype: s
                    .doc(TYPE, DEFAULT_TYPE_ID)
                    .ok_or_else(|| Error::Internal("no default volume type".into()))?,
                snapshot_id: None,
                source_volid: None,
                image: None,
                meta: json!({}),
                host: None,
            };
            let v = new_record(s, n).await?;
            if st(&v, "status") == "error" {
                return Err(Error::BadRequest(format!(
                    "Invalid input received: {}",
                    st(&v, "ursa:error")
                )));
            }
            (v, true)
        }
    };
    let mut vol = vol;
    vol.insert("status".into(), json!("restoring-backup"));
    s.put(VOLUME, vol.clone()).await?;
    s.update(BACKUP, st(&b, "id"), |r| {
        r.insert("status".into(), json!("restoring"));
        Ok(())
    })
    .await?;
    s.spawn_restore(b.clone(), vol.clone(), new);
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"restore": {"backup_id": st(&b, "id"), "volume_id": st(&vol, "id"),
                                "volume_name": vol.get("name").cloned().unwrap_or(json!(""))}}),
        ),
    )
        .into_response())
}

pub(super) async fn backup_action(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    let s = svc(&state)?;
    let b = find_backup(s, &auth, &p["id"]).await?;
    let action: BackupAction = parse_body(&body).map_err(bad_body)?;
    if !auth.0.is_admin() {
        return Err(Error::Forbidden(
            "Policy doesn't allow this backup action to be performed.".into(),
        ));
    }
    match action {
        BackupAction::ResetStatus { status } => {
            if !matches!(status.as_str(), "available" | "error") {
                return Err(Error::BadRequest(format!(
                    "Invalid backup status: {status} (available or error)."
                )));
            }
            s.update(BACKUP, st(&b, "id"), move |r| {
                r.insert("status".into(), json!(status));
                Ok(())
            })
            .await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        BackupAction::ForceDelete {} => start_delete(s, b, true).await,
    }
}

fn admin_only(auth: &Auth) -> Result<()> {
    if auth.0.is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "Policy doesn't allow backup:export-import to be performed.".into(),
        ))
    }
}

/// An admin's copy of a backup's record, to import again after losing
/// the database (the data stays in object storage).
pub(super) async fn export_record(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    admin_only(&auth)?;
    let s = svc(&state)?;
    let b = find_backup(s, &auth, &p["id"]).await?;
    if st(&b, "status") != "available" {
        return Err(Error::BadRequest(format!(
            "Invalid backup: Backup status must be available (it is {}).",
            st(&b, "status")
        )));
    }
    let mut rec = b.clone();
    rec.insert(
        "ursa:data_id".into(),
        json!(crate::backup::data_id(&b).to_string()),
    );
    let url = base64::engine::general_purpose::STANDARD.encode(Value::Object(rec).to_string());
    Ok(Json(
        json!({"backup-record": {"backup_service": BACKUP_SERVICE, "backup_url": url}}),
    ))
}

pub(super) async fn import_record(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    body: axum::body::Bytes,
) -> Result<Response> {
    admin_only(&auth)?;
    let s = svc(&state)?;
    let project = project(&auth)?;
    let r = parse_body::<ImportBody>(&body).map_err(bad_body)?.record;
    if r.backup_service != BACKUP_SERVICE {
        return Err(Error::BadRequest(format!(
            "Invalid backup: the backup service {} is not this cloud's ({BACKUP_SERVICE}).",
            r.backup_service
        )));
    }
    let e: Exported = base64::engine::general_purpose::STANDARD
        .decode(r.backup_url.trim())
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or_else(|| {
            Error::BadRequest("Invalid backup: the backup URL does not decode.".into())
        })?;
    if uuid::Uuid::parse_str(&e.id).is_err() {
        return Err(Error::BadRequest(format!(
            "Invalid backup: {} is not a backup id.",
            e.id
        )));
    }
    if s.record(BACKUP, &e.id).await?.is_some() {
        return Err(Error::BadRequest(
            "Invalid backup: Backup already exists in database.".into(),
        ));
    }
    let now = now();
    let data_id = e.data_id.clone().unwrap_or_else(|| e.id.clone());
    let mut rec = json!({
        "id": e.id, "name": short(&e.name, "name")?, "description": short(&e.description, "description")?,
        "status": "creating", "volume_id": e.volume_id, "snapshot_id": e.snapshot_id,
        "container": e.container.unwrap_or_else(|| CONTAINER.to_string()), "availability_zone": ZONE,
        "size": e.size.unwrap_or(1), "object_count": e.object_count.unwrap_or(0),
        "is_incremental": e.is_incremental, "has_dependent_backups": false, "fail_reason": null,
        "created_at": now, "updated_at": now, "data_timestamp": e.data_timestamp,
        "metadata": e.metadata.unwrap_or_default(), "project_id": project,
        "user_id": auth.0.user_id, "ursa:data_id": data_id, "ursa:base_snapshot": "",
    })
    .as_object()
    .cloned()
    .expect("object");
    // Available only if its data is where the record says.
    let found = s.has_data(&rec).await;
    rec.insert(
        "status".into(),
        json!(if found { "available" } else { "error" }),
    );
    if !found {
        rec.insert(
            "fail_reason".into(),
            json!("the backup's data is not in object storage"),
        );
    }
    s.put(BACKUP, rec.clone()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"backup": backup_summary(&state, &rec, mv)})),
    )
        .into_response())
}
