//! Nova v2.1 over HTTP at `/compute/v2.1`: servers (create with networks,
//! an image, a flavor, a key pair, user data and metadata; list, detail,
//! show, update, delete; start, stop, reboot, console output), flavors
//! (with extra specs), key pairs, limits and availability zones, at every
//! microversion from 2.1 to 2.100 ([`microversion`]).

use crate::AppState;
use crate::{flavor_record, now, st, Compute, Rec, FLAVOR, QUOTA_KEYPAIRS};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{empty, parse_body, Auth, RequestId};

mod flavors;
mod hypervisors;
mod keypairs;
mod limits;
pub mod microversion;
mod server_versions;
mod servers;
mod volume_attachments;
pub(crate) use flavors::*;
pub(crate) use hypervisors::*;
use keypairs::*;
pub(crate) use limits::*;
pub use microversion::Mv;
pub(crate) use server_versions::*;
pub(crate) use servers::*;
pub(crate) use volume_attachments::*;

pub fn routes() -> Router<AppState> {
    let v = Router::new()
        .route("/servers", get(list_servers).post(create_server))
        .route("/servers/detail", get(list_servers_detail))
        .route(
            "/servers/{id}",
            get(show_server).put(update_server).delete(delete_server),
        )
        .route("/servers/{id}/action", post(crate::actions::server_action))
        .route(
            "/servers/{id}/os-volume_attachments",
            get(list_attachments).post(attach_volume),
        )
        .route(
            "/servers/{id}/os-volume_attachments/{volume_id}",
            get(show_attachment).put(swap_volume).delete(detach_volume),
        )
        .route(
            "/os-assisted-volume-snapshots",
            post(create_assisted_snapshot),
        )
        .route(
            "/os-assisted-volume-snapshots/{id}",
            axum::routing::delete(delete_assisted_snapshot),
        )
        .route("/flavors", get(list_flavors).post(create_flavor))
        .route("/flavors/detail", get(list_flavors_detail))
        .route(
            "/flavors/{id}",
            get(show_flavor).put(update_flavor).delete(delete_flavor),
        )
        .route(
            "/flavors/{id}/os-extra_specs",
            get(flavor_specs).post(set_flavor_specs),
        )
        .route("/os-keypairs", get(list_keypairs).post(create_keypair))
        .route(
            "/os-keypairs/{name}",
            get(show_keypair).delete(delete_keypair),
        )
        .route("/limits", get(limits))
        .route("/os-hypervisors", get(hypervisors))
        .route("/os-hypervisors/detail", get(hypervisors_detail))
        .route("/os-hypervisors/statistics", get(hypervisor_stats))
        .route("/os-hypervisors/{hid}", get(hypervisor_show))
        .route("/os-services", get(services))
        .route("/os-availability-zone", get(zones))
        .route("/os-availability-zone/detail", get(zones_detail))
        .merge(crate::proxy::routes())
        .merge(crate::admin::routes())
        .merge(crate::server_parts::routes())
        .merge(crate::server_tags::routes());
    Router::new()
        .route("/compute", get(versions))
        .route("/compute/", get(versions))
        .route("/compute/v2", get(version20))
        .route("/compute/v2/", get(version20))
        .route("/compute/v2.1", get(version))
        .route("/compute/v2.1/", get(version))
        .nest("/compute/v2.1/{project_id}", v.clone())
        .nest("/compute/v2.1", v)
        .layer(axum::middleware::from_fn(microversion::layer))
}

fn version_doc(app: &AppState) -> Value {
    json!({"id": "v2.1", "status": "CURRENT", "version": format!("2.{}", microversion::MAX), "min_version": "2.1",
           "updated": "2013-07-23T11:33:21Z",
           "links": [{"rel": "self", "href": format!("{}/compute/v2.1/", app.base_url)}],
           "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]})
}

/// v2.0 is the same API without microversions (Nova serves both).
fn v20_doc(app: &AppState) -> Value {
    json!({"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
           "updated": "2011-01-21T11:33:21Z",
           "links": [{"rel": "self", "href": format!("{}/compute/v2/", app.base_url)}],
           "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}]})
}

async fn version20(State(app): State<AppState>) -> Json<Value> {
    Json(json!({"version": v20_doc(&app)}))
}

async fn versions(State(app): State<AppState>) -> Json<Value> {
    Json(json!({"versions": [v20_doc(&app), version_doc(&app)]}))
}

async fn version(State(app): State<AppState>) -> Json<Value> {
    Json(json!({"version": version_doc(&app)}))
}

pub(super) fn svc(app: &AppState) -> Result<&Compute> {
    app.compute
        .as_ref()
        .ok_or_else(|| Error::NotFound("The compute service has no compute node here.".into()))
}

pub(super) fn project(auth: &Auth) -> Result<String> {
    auth.0.project_id().map(str::to_string).ok_or_else(|| {
        Error::Forbidden("Servers belong to projects: use a project-scoped token.".into())
    })
}

pub(super) fn write_access(auth: &Auth) -> Result<()> {
    if auth.0.has("member") || auth.0.is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "Policy doesn't allow this operation to be performed.".into(),
        ))
    }
}

pub(super) fn body_obj(bytes: &Bytes, key: &str) -> Result<Rec> {
    let v: Value = parse_body(bytes)?;
    match v.get(key) {
        Some(Value::Object(o)) => Ok(o.clone()),
        _ => Err(Error::BadRequest(format!(
            "Invalid input for field/attribute {key}."
        ))),
    }
}

pub(super) fn query(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}
