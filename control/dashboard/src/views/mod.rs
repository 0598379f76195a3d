//! The panels: each handler asks the APIs as the user, parses the answers
//! into the typed records below, and draws a [`crate::page`] shape.

pub mod admin;
pub mod auth;
pub mod identity;
pub mod instances;
pub mod launch;
pub mod network;
pub mod overview;
pub mod storage;
pub mod topology;

use crate::Dashboard;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

/// The templates, compiled in (no files to find at run time).
pub fn templates() -> Result<minijinja::Environment<'static>, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    for (name, src) in [
        ("base.html", include_str!("../../templates/base.html")),
        ("login.html", include_str!("../../templates/login.html")),
        ("panel.html", include_str!("../../templates/panel.html")),
        (
            "overview.html",
            include_str!("../../templates/overview.html"),
        ),
        ("launch.html", include_str!("../../templates/launch.html")),
    ] {
        env.add_template(name, src)?;
    }
    Ok(env)
}

const SCRIPT: &str = include_str!("../../static/dashboard.js");
const STYLE: &str = include_str!("../../static/dashboard.css");

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
}

pub fn routes() -> Router<Dashboard> {
    Router::new()
        .route("/dashboard", get(auth::home))
        .route("/dashboard/", get(auth::home))
        .route("/dashboard/static/dashboard.js", get(script))
        .route("/dashboard/static/dashboard.css", get(style))
        .route(
            "/dashboard/auth/login",
            get(auth::login_page).post(auth::login),
        )
        .route("/dashboard/auth/logout", post(auth::logout))
        .route("/dashboard/auth/switch", post(auth::switch))
        .route("/dashboard/status", get(instances::status))
        .route("/dashboard/project/", get(overview::project))
        .route("/dashboard/project", get(overview::project))
        .route("/dashboard/project/instances", get(instances::list))
        .route(
            "/dashboard/project/instances/launch",
            get(launch::page).post(launch::launch),
        )
        .route("/dashboard/project/instances/{id}", get(instances::detail))
        .route(
            "/dashboard/project/instances/{id}/action",
            post(instances::act),
        )
        .route(
            "/dashboard/project/instances/{id}/console",
            get(instances::console),
        )
        .route("/dashboard/project/images", get(storage::images))
        .route(
            "/dashboard/project/images/upload",
            axum::routing::put(storage::upload),
        )
        .route(
            "/dashboard/project/images/{id}/action",
            post(storage::image_act),
        )
        .route(
            "/dashboard/project/key_pairs",
            get(storage::key_pairs).post(storage::key_pair_create),
        )
        .route(
            "/dashboard/project/key_pairs/{name}/delete",
            post(storage::key_pair_delete),
        )
        .route(
            "/dashboard/project/volumes",
            get(storage::volumes).post(storage::volume_create),
        )
        .route(
            "/dashboard/project/volumes/{id}/action",
            post(storage::volume_act),
        )
        .route("/dashboard/project/backups", get(storage::backups))
        .route(
            "/dashboard/project/backups/{id}/action",
            post(storage::backup_act),
        )
        .route("/dashboard/project/snapshots", get(storage::snapshots))
        .route(
            "/dashboard/project/snapshots/{id}/action",
            post(storage::snapshot_act),
        )
        .route(
            "/dashboard/project/containers",
            get(storage::containers).post(storage::container_create),
        )
        .route(
            "/dashboard/project/containers/{name}",
            get(storage::objects),
        )
        .route(
            "/dashboard/project/containers/{name}/upload",
            axum::routing::put(storage::object_upload),
        )
        .route(
            "/dashboard/project/containers/{name}/object",
            get(storage::object_download),
        )
        .route(
            "/dashboard/project/containers/{name}/delete",
            post(storage::object_delete),
        )
        .route(
            "/dashboard/project/networks",
            get(network::networks).post(network::network_create),
        )
        .route(
            "/dashboard/project/networks/{id}",
            get(network::network_detail),
        )
        .route(
            "/dashboard/project/networks/{id}/action",
            post(network::network_act),
        )
        .route(
            "/dashboard/project/routers",
            get(network::routers).post(network::router_create),
        )
        .route(
            "/dashboard/project/routers/{id}/action",
            post(network::router_act),
        )
        .route(
            "/dashboard/project/security_groups",
            get(network::security_groups).post(network::security_group_create),
        )
        .route(
            "/dashboard/project/security_groups/{id}",
            get(network::security_group_detail).post(network::security_group_act),
        )
        .route(
            "/dashboard/project/floating_ips",
            get(network::floating_ips).post(network::floating_ip_act),
        )
        .route("/dashboard/project/network_topology", get(topology::page))
        .route("/dashboard/admin/", get(admin::overview))
        .route("/dashboard/admin/hypervisors", get(admin::hypervisors))
        .route(
            "/dashboard/admin/aggregates",
            get(admin::aggregates).post(admin::aggregate_act),
        )
        .route("/dashboard/admin/instances", get(admin::instances))
        .route(
            "/dashboard/admin/flavors",
            get(admin::flavors).post(admin::flavor_act),
        )
        .route("/dashboard/admin/images", get(admin::images))
        .route("/dashboard/admin/volumes", get(admin::volumes))
        .route(
            "/dashboard/admin/volume_types",
            get(admin::volume_types).post(admin::volume_type_act),
        )
        .route("/dashboard/admin/networks", get(admin::networks))
        .route("/dashboard/admin/routers", get(admin::routers))
        .route("/dashboard/admin/floating_ips", get(admin::floating_ips))
        .route("/dashboard/admin/defaults", get(admin::defaults))
        .route("/dashboard/admin/info", get(admin::info))
        .route("/dashboard/identity/domains", get(identity::domains))
        .route(
            "/dashboard/identity/projects",
            get(identity::projects).post(identity::project_act),
        )
        .route(
            "/dashboard/identity/users",
            get(identity::users).post(identity::user_act),
        )
        .route(
            "/dashboard/identity/groups",
            get(identity::groups).post(identity::group_act),
        )
        .route("/dashboard/identity/roles", get(identity::roles))
        .route(
            "/dashboard/identity/application_credentials",
            get(identity::app_creds).post(identity::app_cred_act),
        )
        .route("/dashboard/{*rest}", get(auth::not_found))
}

/// Anything with an id and a name.
#[derive(Deserialize, Clone, Default)]
pub struct Named {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// One address of a server.
#[derive(Deserialize, Clone)]
pub struct Addr {
    pub addr: String,
    #[serde(default, rename = "OS-EXT-IPS:type")]
    pub kind: Option<String>,
}

#[derive(Deserialize, Clone, Default)]
pub struct Volume {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub bootable: String,
    #[serde(default)]
    pub volume_type: Option<String>,
    #[serde(default)]
    pub attachments: Vec<VolumeAttachment>,
    #[serde(default)]
    pub created_at: String,
    #[serde(default, rename = "os-vol-tenant-attr:tenant_id")]
    pub project: Option<String>,
}

#[derive(Deserialize, Clone, Default)]
pub struct VolumeAttachment {
    #[serde(default)]
    pub server_id: String,
    #[serde(default)]
    pub device: Option<String>,
}

impl Volume {
    pub fn label(&self) -> String {
        match self.name.as_deref() {
            Some(n) if !n.is_empty() => format!("{n} ({} GiB)", self.size),
            _ => format!("{} ({} GiB)", self.id, self.size),
        }
    }

    pub fn attached_to(&self) -> String {
        self.attachments
            .iter()
            .map(|a| {
                format!(
                    "{} on {}",
                    a.device.clone().unwrap_or_default(),
                    a.server_id
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn volume_busy(status: &str) -> bool {
    matches!(
        status,
        "creating"
            | "attaching"
            | "detaching"
            | "deleting"
            | "extending"
            | "downloading"
            | "uploading"
            | "reserved"
            | "backing-up"
            | "restoring-backup"
    )
}

#[derive(Deserialize, Default)]
pub struct Volumes {
    #[serde(default)]
    pub volumes: Vec<Volume>,
}

#[derive(Deserialize)]
pub struct OneVolume {
    pub volume: Volume,
}

#[derive(Deserialize, Clone)]
pub struct Network {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub shared: bool,
    #[serde(default, rename = "router:external")]
    pub external: bool,
    #[serde(default)]
    pub subnets: Vec<String>,
    #[serde(default)]
    pub admin_state_up: bool,
    #[serde(default)]
    pub project_id: String,
}

#[derive(Deserialize)]
pub struct Networks {
    pub networks: Vec<Network>,
}

#[derive(Deserialize, Clone)]
pub struct FixedIp {
    #[serde(default)]
    pub subnet_id: String,
    #[serde(default)]
    pub ip_address: String,
}

#[derive(Deserialize, Clone)]
pub struct Port {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub network_id: String,
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub device_owner: String,
    #[serde(default)]
    pub fixed_ips: Vec<FixedIp>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub mac_address: String,
}

impl Port {
    pub fn label(&self) -> String {
        let ips: Vec<&str> = self
            .fixed_ips
            .iter()
            .map(|f| f.ip_address.as_str())
            .collect();
        format!("{} ({})", ips.join(", "), self.id)
    }
}

#[derive(Deserialize)]
pub struct Ports {
    pub ports: Vec<Port>,
}

#[derive(Deserialize, Clone)]
pub struct FloatingIp {
    pub id: String,
    #[serde(default)]
    pub floating_ip_address: String,
    #[serde(default)]
    pub fixed_ip_address: Option<String>,
    #[serde(default)]
    pub port_id: Option<String>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub floating_network_id: String,
    #[serde(default)]
    pub project_id: String,
}

#[derive(Deserialize)]
pub struct FloatingIps {
    pub floatingips: Vec<FloatingIp>,
}

/// A flavor as the compute API lists it (`/flavors/detail`).
#[derive(Deserialize, serde::Serialize, Clone)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub vcpus: i64,
    #[serde(default)]
    pub ram: i64,
    #[serde(default)]
    pub disk: i64,
    #[serde(default, rename = "os-flavor-access:is_public")]
    pub public: bool,
    #[serde(default)]
    pub extra_specs: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
pub struct Flavors {
    pub flavors: Vec<Flavor>,
}

/// A server list without details (`GET /servers`): ids and names.
#[derive(Deserialize, Default)]
pub struct ServerNames {
    #[serde(default)]
    pub servers: Vec<Named>,
}

/// One option per record: `(id, label)`.
pub fn options<T>(v: &[T], f: impl Fn(&T) -> (String, String)) -> Vec<(String, String)> {
    v.iter().map(f).collect()
}
