//! Cinder v3 over HTTP at `/volume/v3` (with or without the project id in
//! the path): volumes (create blank, from a snapshot, a volume or an
//! image; list with filters, sorting and pagination; show, update,
//! extend, delete), snapshots, volume types with extra specs,
//! availability zones, limits and quotas. Microversions are negotiated with
//! `OpenStack-API-Version: volume 3.x` (3.0 to 3.70).

use super::{
    now, st, Source, Volumes, DEFAULT_TYPE, DEFAULT_TYPE_ID, GIB, QUOTA, QUOTA_GIGABYTES,
    QUOTA_SNAPSHOTS, QUOTA_VOLUMES, SNAPSHOT, TYPE, VOLUME, ZONE,
};
use crate::AppState;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use ursa_core::error::{Error, Result};
use ursa_core::http::{empty, parse_body, Auth};

type Query = axum::extract::Query<HashMap<String, String>>;
type Params = Path<HashMap<String, String>>;
type Rec = Map<String, Value>;

const MAX_MICRO: u32 = 70;

/// The negotiated microversion (the minor number of 3.x).
#[derive(Clone, Copy, Debug)]
pub struct Micro(pub u32);

type Mv = Extension<Micro>;

/// Fields of a volume in a create/update reply (Cinder's schema).
const VOLUME_FIELDS: &[&str] = &[
    "migration_status",
    "attachments",
    "availability_zone",
    "encrypted",
    "updated_at",
    "replication_status",
    "snapshot_id",
    "id",
    "size",
    "user_id",
    "metadata",
    "status",
    "description",
    "multiattach",
    "source_volid",
    "consistencygroup_id",
    "name",
    "bootable",
    "created_at",
    "volume_type",
    "group_id",
    "provider_id",
    "service_uuid",
    "shared_targets",
];

pub fn routes() -> Router<AppState> {
    let inner = Router::new()
        .route("/volumes", get(list_volumes).post(create_volume))
        .route("/volumes/detail", get(list_volumes_detail))
        .route(
            "/volumes/{id}",
            get(show_volume).put(update_volume).delete(delete_volume),
        )
        .route("/volumes/{id}/action", post(volume_action))
        .route("/snapshots", get(list_snapshots).post(create_snapshot))
        .route("/snapshots/detail", get(list_snapshots_detail))
        .route(
            "/snapshots/{id}",
            get(show_snapshot)
                .put(update_snapshot)
                .delete(delete_snapshot),
        )
        .route("/snapshots/{id}/action", post(snapshot_action))
        .route(
            "/snapshots/{id}/metadata",
            get(show_metadata::<OnSnapshot>)
                .post(add_metadata::<OnSnapshot>)
                .put(set_metadata::<OnSnapshot>),
        )
        .route(
            "/snapshots/{id}/metadata/{key}",
            get(show_metadata_item::<OnSnapshot>)
                .put(put_metadata_item::<OnSnapshot>)
                .delete(delete_metadata_item::<OnSnapshot>),
        )
        .route("/types", get(list_types).post(create_type))
        .route("/types/default", get(default_type))
        .route(
            "/types/{id}",
            get(show_type).put(update_type).delete(delete_type),
        )
        .route("/capabilities/{host}", get(capabilities))
        .route(
            "/types/{id}/extra_specs",
            get(type_specs).post(set_type_specs),
        )
        .route(
            "/types/{id}/extra_specs/{key}",
            get(type_spec).put(put_type_spec).delete(delete_type_spec),
        )
        .route(
            "/volumes/{id}/metadata",
            get(show_metadata::<OnVolume>)
                .post(add_metadata::<OnVolume>)
                .put(set_metadata::<OnVolume>),
        )
        .route(
            "/volumes/{id}/metadata/{key}",
            get(show_metadata_item::<OnVolume>)
                .put(put_metadata_item::<OnVolume>)
                .delete(delete_metadata_item::<OnVolume>),
        )
        .route("/os-availability-zone", get(zones))
        .route("/limits", get(limits))
        .route(
            "/os-quota-sets/{project}",
            get(quotas).put(set_quotas).delete(delete_quotas),
        )
        .route("/os-quota-sets/{project}/defaults", get(quota_defaults))
        .route(
            "/os-quota-class-sets/{class}",
            get(quota_class).put(set_quota_class),
        )
        .route("/extensions", get(extensions))
        .route("/scheduler-stats/get_pools", get(get_pools))
        .route("/os-services", get(services));
    Router::new()
        .route("/volume", get(versions))
        .route("/volume/", get(versions))
        .route("/volume/v3", get(version))
        .route("/volume/v3/", get(version))
        .nest("/volume/v3/{project_id}", inner.clone())
        .nest("/volume/v3", inner)
        .layer(axum::middleware::from_fn(microversion))
}

fn version_doc(st: &AppState) -> Value {
    json!({"id": "v3.0", "status": "CURRENT", "version": format!("3.{MAX_MICRO}"),
           "min_version": "3.0", "updated": "2023-02-01T00:00:00Z",
           "media-types": [{"base": "application/json",
                            "type": "application/vnd.openstack.volume+json;version=3"}],
           "links": [{"rel": "self", "href": format!("{}/volume/v3/", st.base_url)}]})
}

async fn versions(State(st): State<AppState>) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": [version_doc(&st)]})),
    )
        .into_response()
}

async fn version(State(st): State<AppState>) -> Json<Value> {
    Json(json!({"versions": [version_doc(&st)]}))
}

/// Negotiates the microversion and says which one answered.
async fn microversion(req: Request, next: axum::middleware::Next) -> Response {
    let asked = req
        .headers()
        .get("openstack-api-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("volume"))
        .map(|v| v.trim().to_string());
    let minor = match asked.as_deref() {
        None | Some("") => 0,
        Some("latest") => MAX_MICRO,
        Some(v) => match v.strip_prefix("3.").and_then(|m| m.parse::<u32>().ok()) {
            Some(m) if m <= MAX_MICRO => m,
            _ => {
                return Error::NotAcceptable(format!(
                    "Version {v} is not supported by the API. Minimum is 3.0 and maximum is 3.{MAX_MICRO}."
                ))
                .into_response()
            }
        },
    };
    let mut req = req;
    req.extensions_mut().insert(Micro(minor));
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("volume 3.{minor}")) {
        h.insert("openstack-api-version", v);
    }
    h.insert("vary", HeaderValue::from_static("OpenStack-API-Version"));
    resp
}

fn svc(state: &AppState) -> Result<&Volumes> {
    state.volumes.as_ref().ok_or_else(|| {
        Error::NotFound("The volume service has no storage node (ursa-blockd) here.".into())
    })
}

fn project(auth: &Auth) -> Result<String> {
    auth.0.project_id().map(str::to_string).ok_or_else(|| {
        Error::Forbidden("Volumes belong to projects: use a project-scoped token.".into())
    })
}

fn may_see(auth: &Auth, rec: &Rec) -> bool {
    auth.0.is_reader_everywhere() || auth.0.project_id() == Some(st(rec, "project_id"))
}

fn find(s: &Volumes, auth: &Auth, kind: &str, id: &str) -> Result<Rec> {
    let what = if kind == VOLUME { "Volume" } else { "Snapshot" };
    s.doc(kind, id)
        .filter(|r| may_see(auth, r))
        .ok_or_else(|| Error::NotFound(format!("{what} {id} could not be found.")))
}

fn write_access(auth: &Auth) -> Result<()> {
    if auth.0.has("member") || auth.0.is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "Policy doesn't allow this operation to be performed.".into(),
        ))
    }
}

/// How a volume is shown: `full` for show and detailed lists (with the
/// extended attributes), else as create and update answer.
fn volume_view(
    state: &AppState,
    auth: &Auth,
    mv: Micro,
    v: &Rec,
    detail: bool,
    full: bool,
) -> Value {
    let id = st(v, "id");
    let links = json!([
        {"href": format!("{}/volume/v3/{}/volumes/{id}", state.base_url, st(v, "project_id")), "rel": "self"},
        {"href": format!("{}/volume/{}/volumes/{id}", state.base_url, st(v, "project_id")), "rel": "bookmark"}
    ]);
    if !detail {
        return json!({"id": id, "name": v.get("name").cloned().unwrap_or(Value::Null), "links": links});
    }
    let mut out = Map::new();
    for k in VOLUME_FIELDS {
        out.insert((*k).into(), v.get(*k).cloned().unwrap_or(Value::Null));
    }
    out.insert("links".into(), links);
    if full {
        out.insert(
            "os-vol-tenant-attr:tenant_id".into(),
            json!(st(v, "project_id")),
        );
        out.insert("os-vol-mig-status-attr:migstat".into(), Value::Null);
        out.insert("os-vol-mig-status-attr:name_id".into(), Value::Null);
        if auth.0.is_admin() {
            out.insert(
                "os-vol-host-attr:host".into(),
                json!(format!("{}@blockd#default", st(v, "ursa:node"))),
            );
        }
        if let Some(m) = v.get("volume_image_metadata") {
            out.insert("volume_image_metadata".into(), m.clone());
        }
    }
    if mv.0 >= 61 {
        out.insert(
            "volume_type_id".into(),
            v.get("volume_type_id").cloned().unwrap_or(Value::Null),
        );
    }
    if let Some(e) = v.get("ursa:error") {
        if full {
            out.insert("ursa:error".into(), e.clone());
        }
    }
    Value::Object(out)
}

fn snapshot_view(s: &Rec, detail: bool) -> Value {
    let mut out = Map::new();
    for k in [
        "status",
        "description",
        "created_at",
        "name",
        "volume_id",
        "metadata",
        "id",
        "size",
        "updated_at",
    ] {
        out.insert(k.into(), s.get(k).cloned().unwrap_or(Value::Null));
    }
    if detail {
        out.insert(
            "os-extended-snapshot-attributes:project_id".into(),
            json!(st(s, "project_id")),
        );
        out.insert(
            "os-extended-snapshot-attributes:progress".into(),
            s.get("ursa:progress").cloned().unwrap_or(json!("0%")),
        );
    }
    Value::Object(out)
}

fn opt_string(b: &Map<String, Value>, k: &str, max: usize) -> Result<Value> {
    match b.get(k) {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(json!(s)),
        Some(v) => Err(Error::BadRequest(format!(
            "Invalid input for field/attribute {k}. Value: {v}."
        ))),
    }
}

fn metadata(b: &Map<String, Value>) -> Result<Value> {
    match b.get("metadata") {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if k.is_empty() || k.len() > 255 || v.as_str().is_none_or(|s| s.len() > 255) {
                    return Err(Error::BadRequest(format!("Invalid metadata: {k}")));
                }
            }
            Ok(Value::Object(m.clone()))
        }
        Some(v) => Err(Error::BadRequest(format!(
            "Invalid input for field/attribute metadata. Value: {v}."
        ))),
    }
}

fn usage(s: &Volumes, project: &str) -> (u64, u64, u64) {
    let vols: Vec<Rec> = s
        .docs(VOLUME)
        .into_iter()
        .filter(|v| st(v, "project_id") == project)
        .collect();
    let snaps: Vec<Rec> = s
        .docs(SNAPSHOT)
        .into_iter()
        .filter(|v| st(v, "project_id") == project)
        .collect();
    let gib: u64 = vols
        .iter()
        .chain(snaps.iter())
        .filter_map(|v| v.get("size")?.as_u64())
        .sum();
    (vols.len() as u64, snaps.len() as u64, gib)
}

async fn create_volume(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
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
        let snap = find(s, &auth, SNAPSHOT, sid)?;
        if st(&snap, "status") != "available" {
            return Err(Error::BadRequest(format!(
                "Snapshot {sid} is not available."
            )));
        }
        let host = s
            .doc(VOLUME, st(&snap, "volume_id"))
            .map(|v| st(&v, "ursa:node").to_string())
            .unwrap_or_else(|| st(&snap, "ursa:host").to_string());
        (
            Source::Copy(sid.clone()),
            snap.get("size").and_then(|v| v.as_u64()).unwrap_or(1),
            Some(host),
        )
    } else if let Some(vid) = &source_volid {
        let src = find(s, &auth, VOLUME, vid)?;
        if !matches!(st(&src, "status"), "available" | "in-use") {
            return Err(Error::BadRequest(format!("Volume {vid} is not available.")));
        }
        (
            Source::Copy(vid.clone()),
            src.get("size").and_then(|v| v.as_u64()).unwrap_or(1),
            Some(st(&src, "ursa:node").to_string()),
        )
    } else if let Some(iid) = &image {
        let (img, _) = state.images.visible(&auth.0, iid).map_err(|_| {
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
        None => s
            .doc(TYPE, DEFAULT_TYPE_ID)
            .ok_or_else(|| Error::Internal("no default volume type".into()))?,
        Some(t) => s
            .docs(TYPE)
            .into_iter()
            .find(|x| st(x, "id") == t || st(x, "name") == t)
            // A private type is only for admins.
            .filter(|x| x.get("is_public") != Some(&Value::Bool(false)) || auth.0.is_admin())
            .ok_or_else(|| Error::NotFound(format!("Volume type {t} could not be found.")))?,
    };
    let vol = create_record(
        s,
        NewVolume {
            project: project.clone(),
            user: auth.0.user_id.clone(),
            name,
            description,
            size,
            vtype,
            snapshot_id,
            source_volid,
            image: image.and_then(|iid| state.images.get(&iid).map(|i| (iid, i))),
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
}

/// Checks the project's quota, places and records a volume, and starts
/// making its backing: the record says "creating" until it is there.
pub async fn create_record(s: &Volumes, n: NewVolume, source: Source) -> Result<Rec> {
    let (nv, _, gib) = usage(s, &n.project);
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
    let host = match n.host {
        Some(h) => h,
        None => s.schedule(n.size * GIB).await?.name,
    };
    let now = now();
    let id = uuid::Uuid::new_v4().to_string();
    let mut vol = json!({
        "id": id, "name": n.name, "description": n.description, "status": "creating", "size": n.size,
        "availability_zone": ZONE, "created_at": now, "updated_at": now,
        "volume_type": st(&n.vtype, "name"), "volume_type_id": st(&n.vtype, "id"),
        "snapshot_id": n.snapshot_id, "source_volid": n.source_volid, "metadata": n.meta,
        "bootable": if n.image.is_some() { "true" } else { "false" }, "encrypted": false, "multiattach": false,
        "attachments": [], "user_id": n.user, "project_id": n.project,
        "replication_status": "disabled", "consistencygroup_id": null, "migration_status": null,
        "group_id": null, "ursa:node": host, "shared_targets": false,
        "os-vol-mig-status-attr:migstat": null, "os-vol-mig-status-attr:name_id": null,
    })
    .as_object()
    .cloned()
    .expect("object");
    if let Some((iid, img)) = &n.image {
        vol.insert(
            "volume_image_metadata".into(),
            json!({"image_id": iid, "image_name": img.get("name").cloned().unwrap_or(Value::Null),
                   "disk_format": img.get("disk_format"), "container_format": img.get("container_format"),
                   "checksum": img.get("checksum"), "size": img.get("size")}),
        );
    }
    s.put(VOLUME, vol.clone()).await?;
    s.spawn_create(vol.clone(), source);
    Ok(vol)
}

fn page(
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
fn next_link(
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

fn visible(s: &Volumes, auth: &Auth, kind: &str, q: &HashMap<String, String>) -> Vec<Rec> {
    let all_tenants = auth.0.is_admin()
        && q.get("all_tenants")
            .is_some_and(|v| v != "0" && v != "false");
    let project = auth.0.project_id().unwrap_or("");
    s.docs(kind)
        .into_iter()
        .filter(|r| {
            (all_tenants && q.get("project_id").is_none_or(|p| p == st(r, "project_id")))
                || st(r, "project_id") == project
        })
        .collect()
}

async fn list_volumes_any(
    state: &AppState,
    auth: &Auth,
    mv: Micro,
    q: &HashMap<String, String>,
    detail: bool,
) -> Result<Json<Value>> {
    let s = svc(state)?;
    let (recs, more) = page(
        visible(s, auth, VOLUME, q),
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

async fn list_volumes(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    list_volumes_any(&state, &auth, mv, &q.0, false).await
}

async fn list_volumes_detail(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    list_volumes_any(&state, &auth, mv, &q.0, true).await
}

async fn show_volume(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let v = find(s, &auth, VOLUME, &p["id"])?;
    Ok(Json(
        json!({"volume": volume_view(&state, &auth, mv, &v, true, true)}),
    ))
}

async fn update_volume(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    write_access(&auth)?;
    find(s, &auth, VOLUME, &p["id"])?;
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

async fn delete_volume(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    q: Query,
) -> Result<Response> {
    let s = svc(&state)?;
    write_access(&auth)?;
    let id = p["id"].clone();
    let v = find(s, &auth, VOLUME, &id)?;
    let status = st(&v, "status");
    if !matches!(
        status,
        "available" | "error" | "error_restoring" | "error_extending" | "error_managing"
    ) {
        return Err(Error::BadRequest(format!(
            "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots or be disassociated from snapshots after volume transfer. (status {status})"
        )));
    }
    let snaps: Vec<Rec> = s
        .docs(SNAPSHOT)
        .into_iter()
        .filter(|x| st(x, "volume_id") == id)
        .collect();
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

async fn volume_action(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    let s = svc(&state)?;
    write_access(&auth)?;
    let id = p["id"].clone();
    let v = find(s, &auth, VOLUME, &id)?;
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
            let (_, _, gib) = usage(s, st(&v, "project_id"));
            let qg = limit(&quota_of(s, st(&v, "project_id")), "gigabytes");
            if qg >= 0 && (gib + (new - cur)) as i64 > qg {
                return Err(Error::PayloadTooLarge(
                    "VolumeSizeExceedsAvailableQuota: gigabytes quota exceeded.".into(),
                ));
            }
            let v = s
                .update(VOLUME, &id, |r| {
                    r.insert("status".into(), json!("extending"));
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
            if s.docs(SNAPSHOT).iter().any(|x| st(x, "volume_id") == id) {
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

async fn create_snapshot(
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
    let (_, ns, gib) = usage(s, &project);
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

async fn list_snapshots_any(
    state: &AppState,
    auth: &Auth,
    q: &HashMap<String, String>,
    detail: bool,
) -> Result<Json<Value>> {
    let s = svc(state)?;
    let (recs, more) = page(
        visible(s, auth, SNAPSHOT, q),
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

async fn list_snapshots(
    State(state): State<AppState>,
    auth: Auth,
    q: Query,
) -> Result<Json<Value>> {
    list_snapshots_any(&state, &auth, &q.0, false).await
}

async fn list_snapshots_detail(
    State(state): State<AppState>,
    auth: Auth,
    q: Query,
) -> Result<Json<Value>> {
    list_snapshots_any(&state, &auth, &q.0, true).await
}

async fn show_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let sn = find(s, &auth, SNAPSHOT, &p["id"])?;
    Ok(Json(json!({"snapshot": snapshot_view(&sn, true)})))
}

async fn update_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    write_access(&auth)?;
    find(s, &auth, SNAPSHOT, &p["id"])?;
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

async fn delete_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Response> {
    let s = svc(&state)?;
    write_access(&auth)?;
    let sn = find(s, &auth, SNAPSHOT, &p["id"])?;
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

fn type_view(t: &Rec) -> Value {
    let mut out = Map::new();
    for k in [
        "id",
        "name",
        "description",
        "is_public",
        "os-volume-type-access:is_public",
        "extra_specs",
    ] {
        out.insert(k.into(), t.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

async fn list_types(State(state): State<AppState>, _auth: Auth) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let mut t = s.docs(TYPE);
    t.sort_by(|a, b| st(a, "name").cmp(st(b, "name")));
    Ok(Json(
        json!({"volume_types": t.iter().map(type_view).collect::<Vec<_>>()}),
    ))
}

async fn default_type(State(state): State<AppState>, _auth: Auth) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let t = s
        .doc(TYPE, DEFAULT_TYPE_ID)
        .ok_or_else(|| Error::NotFound("Default volume type can not be found.".into()))?;
    Ok(Json(json!({"volume_type": type_view(&t)})))
}

fn find_type(s: &Volumes, id: &str) -> Result<Rec> {
    s.docs(TYPE)
        .into_iter()
        .find(|t| st(t, "id") == id || st(t, "name") == id)
        .ok_or_else(|| Error::NotFound(format!("Volume type {id} could not be found.")))
}

async fn show_type(
    State(state): State<AppState>,
    _auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    Ok(Json(
        json!({"volume_type": type_view(&find_type(s, &p["id"])?)}),
    ))
}

fn admin(auth: &Auth) -> Result<()> {
    if auth.0.is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "Policy doesn't allow this operation to be performed.".into(),
        ))
    }
}

fn specs(v: Option<&Value>) -> Result<Map<String, Value>> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m))
            if m.iter()
                .all(|(k, v)| !k.is_empty() && k.len() <= 255 && v.is_string()) =>
        {
            Ok(m.clone())
        }
        Some(v) => Err(Error::BadRequest(format!("Invalid extra_specs: {v}"))),
    }
}

async fn create_type(
    State(state): State<AppState>,
    auth: Auth,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let body: Map<String, Value> = parse_body(&body)?;
    let b = body
        .get("volume_type")
        .and_then(|v| v.as_object())
        .ok_or_else(|| {
            Error::BadRequest("Missing required element 'volume_type' in request body.".into())
        })?;
    let name = b
        .get("name")
        .and_then(|v| v.as_str())
        .filter(|n| !n.trim().is_empty() && n.len() <= 255)
        .ok_or_else(|| Error::BadRequest("Volume type name can not be empty.".into()))?;
    if s.docs(TYPE).iter().any(|t| st(t, "name") == name) {
        return Err(Error::Conflict(format!(
            "Volume Type {name} already exists."
        )));
    }
    let public = b
        .get("os-volume-type-access:is_public")
        .and_then(|v| v.as_bool().or_else(|| v.as_str().map(|s| s == "true")))
        .unwrap_or(true);
    let t = json!({"id": uuid::Uuid::new_v4().to_string(), "name": name,
    "description": opt_string(b, "description", 255)?, "is_public": public,
    "os-volume-type-access:is_public": public, "extra_specs": specs(b.get("extra_specs"))?,
    })
    .as_object()
    .cloned()
    .expect("object");
    s.put(TYPE, t.clone()).await?;
    Ok(Json(json!({"volume_type": type_view(&t)})))
}

async fn delete_type(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Response> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    if st(&t, "id") == DEFAULT_TYPE_ID {
        return Err(Error::BadRequest(format!(
            "The {DEFAULT_TYPE} type cannot be deleted."
        )));
    }
    if s.docs(VOLUME)
        .iter()
        .any(|v| st(v, "volume_type_id") == st(&t, "id"))
    {
        return Err(Error::BadRequest(
            "Target volume type is still in use.".into(),
        ));
    }
    s.forget(TYPE, st(&t, "id")).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

async fn type_specs(
    State(state): State<AppState>,
    _auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let t = find_type(s, &p["id"])?;
    Ok(Json(
        json!({"extra_specs": t.get("extra_specs").cloned().unwrap_or(json!({}))}),
    ))
}

async fn set_type_specs(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    let body: Map<String, Value> = parse_body(&body)?;
    if !body.get("extra_specs").is_some_and(|v| v.is_object()) {
        return Err(Error::BadRequest(
            "Missing required element 'extra_specs' in request body.".into(),
        ));
    }
    let new = specs(body.get("extra_specs"))?;
    let out = new.clone();
    s.update(TYPE, st(&t, "id"), move |r| {
        let mut cur = r
            .get("extra_specs")
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default();
        cur.extend(new.clone());
        r.insert("extra_specs".into(), Value::Object(cur));
        Ok(())
    })
    .await?;
    Ok(Json(json!({"extra_specs": out})))
}

async fn zones(State(state): State<AppState>, _auth: Auth) -> Result<Json<Value>> {
    svc(&state)?;
    Ok(Json(
        json!({"availabilityZoneInfo": [{"zoneName": ZONE, "zoneState": {"available": true}}]}),
    ))
}

async fn limits(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let (nv, ns, gib) = usage(s, auth.0.project_id().unwrap_or(""));
    Ok(Json(json!({"limits": {"rate": [], "absolute": {
        "maxTotalVolumes": QUOTA_VOLUMES, "maxTotalSnapshots": QUOTA_SNAPSHOTS,
        "maxTotalVolumeGigabytes": QUOTA_GIGABYTES, "maxTotalBackups": 0, "maxTotalBackupGigabytes": 0,
        "totalVolumesUsed": nv, "totalSnapshotsUsed": ns, "totalGigabytesUsed": gib,
        "totalBackupsUsed": 0, "totalBackupGigabytesUsed": 0}}})))
}

const QUOTA_KEYS: &[&str] = &[
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
    q
}

fn limit(q: &Map<String, Value>, k: &str) -> i64 {
    q.get(k).and_then(|v| v.as_i64()).unwrap_or(-1)
}

async fn quotas(
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
        let (nv, ns, gib) = usage(s, &project);
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
fn own_project_or_reader(auth: &Auth, project: &str) -> Result<()> {
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
async fn quota_defaults(
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

fn quota_body(body: &[u8], key: &str) -> Result<Map<String, Value>> {
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

async fn set_quotas(
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

async fn delete_quotas(
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
async fn quota_class(
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

async fn set_quota_class(
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

async fn extensions(_auth: Auth) -> Json<Value> {
    Json(json!({"extensions": []}))
}

async fn get_pools(State(state): State<AppState>, auth: Auth, q: Query) -> Result<Json<Value>> {
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

async fn services(State(state): State<AppState>, auth: Auth, q: Query) -> Result<Json<Value>> {
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

async fn type_spec(
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

async fn put_type_spec(
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

async fn delete_type_spec(
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

/// Which record a metadata route is on.
trait MetaKind {
    const KIND: &'static str;
}

struct OnVolume;
impl MetaKind for OnVolume {
    const KIND: &'static str = VOLUME;
}

struct OnSnapshot;
impl MetaKind for OnSnapshot {
    const KIND: &'static str = SNAPSHOT;
}

fn meta_of(r: &Rec) -> Map<String, Value> {
    r.get("metadata")
        .and_then(|m| m.as_object())
        .cloned()
        .unwrap_or_default()
}

async fn show_metadata<K: MetaKind>(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let r = find(svc(&state)?, &auth, K::KIND, &p["id"])?;
    Ok(Json(json!({"metadata": meta_of(&r)})))
}

/// Replaces (`replace`) or merges a record's metadata.
async fn change_metadata<K: MetaKind>(
    state: &AppState,
    auth: &Auth,
    id: &str,
    body: &[u8],
    replace: bool,
) -> Result<Json<Value>> {
    let s = svc(state)?;
    write_access(auth)?;
    find(s, auth, K::KIND, id)?;
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

async fn add_metadata<K: MetaKind>(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    change_metadata::<K>(&state, &auth, &p["id"], &body, false).await
}

async fn set_metadata<K: MetaKind>(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    change_metadata::<K>(&state, &auth, &p["id"], &body, true).await
}

async fn show_metadata_item<K: MetaKind>(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let r = find(svc(&state)?, &auth, K::KIND, &p["id"])?;
    let key = &p["key"];
    let val = meta_of(&r)
        .get(key.as_str())
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("Metadata item was not found: {key}")))?;
    Ok(Json(json!({"meta": { key.clone(): val }})))
}

async fn put_metadata_item<K: MetaKind>(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    write_access(&auth)?;
    find(s, &auth, K::KIND, &p["id"])?;
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

async fn delete_metadata_item<K: MetaKind>(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Response> {
    let s = svc(&state)?;
    write_access(&auth)?;
    let r = find(s, &auth, K::KIND, &p["id"])?;
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

async fn snapshot_action(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    let s = svc(&state)?;
    let id = p["id"].clone();
    let sn = find(s, &auth, SNAPSHOT, &id)?;
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

async fn update_type(
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

async fn capabilities(
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
