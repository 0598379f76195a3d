//! Cinder v3 over HTTP at `/volume/v3` (with or without the project id in
//! the path): volumes (create blank, from a snapshot, a volume or an
//! image; list with filters, sorting and pagination; show, update,
//! extend, delete), snapshots, volume types with extra specs,
//! availability zones, limits and quotas. Microversions are negotiated with
//! `OpenStack-API-Version: volume 3.x` (3.0 to 3.70).

use crate::AppState;
use crate::{
    now, st, Source, Volumes, DEFAULT_TYPE, DEFAULT_TYPE_ID, GIB, QUOTA, QUOTA_GIGABYTES,
    QUOTA_SNAPSHOTS, QUOTA_VOLUMES, SNAPSHOT, TYPE, VOLUME, ZONE,
};
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use ursa_core::error::{Error, Result};
use ursa_core::http::{empty, parse_body, Auth};

mod attachments;
mod backups;
mod defaults;
mod group_types;
mod groups;
mod messages;
mod metadata;
mod qos;
mod quotas;
mod services;
mod snapshots;
mod transfers;
mod type_access;
mod types;
mod volumes;
use attachments::*;
use backups::*;
use defaults::*;
use group_types::*;
use groups::*;
use messages::*;
use metadata::*;
use qos::*;
pub use quotas::*;
use services::*;
use snapshots::*;
use transfers::*;
use type_access::*;
use types::*;
pub use volumes::*;

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
        .route("/volumes/summary", get(volume_summary))
        .route(
            "/attachments",
            get(list_attachments).post(create_attachment),
        )
        .route("/attachments/detail", get(list_attachments_detail))
        .route(
            "/attachments/{id}",
            get(show_attachment)
                .put(update_attachment)
                .delete(delete_attachment),
        )
        .route("/attachments/{id}/action", post(attachment_action))
        .route(
            "/os-volume-transfer",
            get(list_transfers).post(create_transfer),
        )
        .route("/os-volume-transfer/detail", get(list_transfers_detail))
        .route(
            "/os-volume-transfer/{id}",
            get(show_transfer).delete(delete_transfer),
        )
        .route("/os-volume-transfer/{id}/accept", post(accept_transfer))
        .route(
            "/volume-transfers",
            get(list_transfers).post(create_transfer),
        )
        .route("/volume-transfers/detail", get(list_transfers_detail))
        .route(
            "/volume-transfers/{id}",
            get(show_transfer).delete(delete_transfer),
        )
        .route("/volume-transfers/{id}/accept", post(accept_transfer))
        .route(
            "/group_types",
            get(list_group_types).post(create_group_type),
        )
        .route("/group_types/default", get(default_group_type))
        .route(
            "/group_types/{id}",
            get(show_group_type)
                .put(update_group_type)
                .delete(delete_group_type),
        )
        .route(
            "/group_types/{id}/group_specs",
            get(group_specs).post(set_group_specs),
        )
        .route(
            "/group_types/{id}/group_specs/{key}",
            get(group_spec)
                .put(put_group_spec)
                .delete(delete_group_spec),
        )
        .route("/groups", get(list_groups).post(create_group))
        .route("/groups/detail", get(list_groups_detail))
        .route("/groups/action", post(create_group_from_src))
        .route("/groups/{id}", get(show_group).put(update_group))
        .route("/groups/{id}/action", post(group_action))
        .route(
            "/group_snapshots",
            get(list_group_snapshots).post(create_group_snapshot),
        )
        .route("/group_snapshots/detail", get(list_group_snapshots_detail))
        .route(
            "/group_snapshots/{id}",
            get(show_group_snapshot).delete(delete_group_snapshot),
        )
        .route("/group_snapshots/{id}/action", post(group_snapshot_action))
        .route("/default-types", get(list_default_types))
        .route(
            "/default-types/{project}",
            get(show_default_type)
                .put(set_default_type)
                .delete(unset_default_type),
        )
        .route("/resource_filters", get(resource_filters))
        .route("/messages", get(list_messages))
        .route("/messages/{id}", get(show_message).delete(delete_message))
        .route("/backups", get(list_backups).post(create_backup))
        .route("/backups/detail", get(list_backups_detail))
        .route(
            "/backups/{id}",
            get(show_backup).put(update_backup).delete(delete_backup),
        )
        .route("/backups/{id}/restore", post(restore_backup))
        .route("/backups/{id}/export_record", get(export_record))
        .route("/backups/import_record", post(import_record))
        .route("/backups/{id}/action", post(backup_action))
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
        .route("/types/{id}/action", post(type_action))
        .route("/qos-specs", get(list_qos).post(create_qos))
        .route(
            "/qos-specs/{id}",
            get(show_qos).put(set_qos_keys).delete(delete_qos),
        )
        .route(
            "/qos-specs/{id}/delete_keys",
            axum::routing::put(unset_qos_keys),
        )
        .route("/qos-specs/{id}/associations", get(qos_associations))
        .route("/qos-specs/{id}/associate", get(associate_qos))
        .route("/qos-specs/{id}/disassociate", get(disassociate_qos))
        .route(
            "/qos-specs/{id}/disassociate_all",
            get(disassociate_all_qos),
        )
        .route("/types/{id}/os-volume-type-access", get(type_access))
        .route(
            "/types/{id}/encryption",
            get(show_encryption).post(create_encryption),
        )
        .route(
            "/types/{id}/encryption/{key}",
            get(show_encryption_item)
                .put(update_encryption)
                .delete(delete_encryption),
        )
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
        .route("/os-services", get(services))
        .route("/os-services/{action}", axum::routing::put(service_action))
        .route("/os-hosts", get(hosts))
        .route("/os-hosts/{host}", get(show_host));
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

async fn find(s: &Volumes, auth: &Auth, kind: &str, id: &str) -> Result<Rec> {
    let what = if kind == VOLUME { "Volume" } else { "Snapshot" };
    s.record(kind, id)
        .await?
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
    // Only attached entries are shown (not reservations), and what Ursa
    // keeps on one (`ursa:` keys) is not Cinder's.
    if let Some(list) = out.get_mut("attachments").and_then(|a| a.as_array_mut()) {
        list.retain(crate::attach::shown);
        for a in list.iter_mut().filter_map(|a| a.as_object_mut()) {
            a.retain(|k, _| !k.starts_with("ursa:"));
        }
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

/// A 404 for an API below the microversion that brought it.
fn since(mv: Micro, minor: u32, what: &str) -> Result<()> {
    if mv.0 < minor {
        return Err(Error::NotFound(format!(
            "{what} needs microversion 3.{minor}."
        )));
    }
    Ok(())
}

/// An optional name or description: at most 255 characters.
fn short(v: &Option<String>, field: &str) -> Result<Value> {
    match v {
        Some(s) if s.chars().count() > 255 => Err(Error::BadRequest(format!(
            "Invalid input for field/attribute {field}: longer than 255 characters."
        ))),
        Some(s) => Ok(json!(s)),
        None => Ok(Value::Null),
    }
}

/// Cinder's rule for one metadata item: a key of 1 to 255 characters, a
/// value of at most 255.
fn metadata_item_ok(k: &str, v: &str) -> bool {
    !k.is_empty() && k.len() <= 255 && v.len() <= 255
}

fn metadata(b: &Map<String, Value>) -> Result<Value> {
    match b.get("metadata") {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if !v.as_str().is_some_and(|v| metadata_item_ok(k, v)) {
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

/// Cinder's boolean: a JSON boolean or a string such as "true", "False".
#[derive(Debug, Default, Clone, Copy)]
struct Flag(bool);

impl<'de> serde::Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Flag, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            B(bool),
            S(String),
        }
        match <Raw as serde::Deserialize>::deserialize(d)? {
            Raw::B(b) => Ok(Flag(b)),
            Raw::S(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" | "y" | "t" => Ok(Flag(true)),
                "false" | "0" | "no" | "off" | "n" | "f" => Ok(Flag(false)),
                _ => Err(serde::de::Error::custom(format!("{s:?} is not a boolean"))),
            },
        }
    }
}

async fn usage(s: &Volumes, project: &str) -> Result<(u64, u64, u64)> {
    let of = crate::record_table::Filter {
        project: Some(project.to_string()),
        ..Default::default()
    };
    let vols: Vec<Rec> = s.records(VOLUME, &of).await?;
    let snaps: Vec<Rec> = s.records(SNAPSHOT, &of).await?;
    let gib: u64 = vols
        .iter()
        .chain(snaps.iter())
        .filter_map(|v| v.get("size")?.as_u64())
        .sum();
    Ok((vols.len() as u64, snaps.len() as u64, gib))
}
