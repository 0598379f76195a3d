//! Admin: usage of every project, hypervisors and compute services, host
//! aggregates, every project's instances, images, volumes, networks,
//! routers and floating IPs, flavors (with extra specs and access),
//! volume types, default quotas and system information. The APIs decide
//! who may see these: a non-admin who types the URL gets their 403.

use super::{Flavor, Flavors, FloatingIps, Named, Networks};
use crate::client::{enc, ApiResult};
use crate::page::{action, cell, col, field, form, Paging, Panel, Row, Table};
use crate::{back, Ctx, DashError, Form, Result};
use axum::extract::Query;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn simple(name: &str, cols: Vec<crate::page::Col>, rows: Vec<Vec<String>>) -> Table {
    Table {
        name: name.into(),
        cols,
        rows: rows
            .into_iter()
            .enumerate()
            .map(|(i, r)| Row {
                id: i.to_string(),
                cells: r.into_iter().map(cell).collect(),
                actions: vec![],
                busy: false,
            })
            .collect(),
        ..Table::default()
    }
}

#[derive(Deserialize)]
struct Usages {
    tenant_usages: Vec<Usage>,
}

#[derive(Deserialize)]
struct Usage {
    tenant_id: String,
    #[serde(default)]
    total_vcpus_usage: f64,
    #[serde(default)]
    total_memory_mb_usage: f64,
    #[serde(default)]
    total_local_gb_usage: f64,
    #[serde(default)]
    total_hours: f64,
}

pub async fn overview(c: Ctx) -> Result<Response> {
    let u: Usages = if c.s.has("compute") {
        c.api
            .get("/compute/v2.1/os-simple-tenant-usage?detailed=0")
            .await?
    } else {
        Usages {
            tenant_usages: vec![],
        }
    };
    let rows = u
        .tenant_usages
        .iter()
        .map(|u| {
            vec![
                u.tenant_id.clone(),
                format!("{:.2}", u.total_vcpus_usage),
                format!("{:.2}", u.total_memory_mb_usage),
                format!("{:.2}", u.total_local_gb_usage),
                format!("{:.2}", u.total_hours),
            ]
        })
        .collect();
    c.panel(Panel {
        title: "Overview (all projects)".into(),
        tables: vec![simple(
            "usage",
            vec![
                col("Project"),
                col("VCPU Hours"),
                col("RAM MB-Hours"),
                col("Disk GB-Hours"),
                col("Hours"),
            ],
            rows,
        )],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
struct Hypervisors {
    hypervisors: Vec<Hypervisor>,
}

#[derive(Deserialize)]
struct Hypervisor {
    #[serde(default)]
    hypervisor_hostname: String,
    #[serde(default)]
    hypervisor_type: String,
    #[serde(default)]
    vcpus: i64,
    #[serde(default)]
    vcpus_used: i64,
    #[serde(default)]
    memory_mb: i64,
    #[serde(default)]
    memory_mb_used: i64,
    #[serde(default)]
    running_vms: i64,
    #[serde(default)]
    state: String,
    #[serde(default)]
    status: String,
}

#[derive(Deserialize)]
struct Services {
    services: Vec<Service>,
}

#[derive(Deserialize)]
struct Service {
    #[serde(default)]
    binary: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    updated_at: Option<String>,
}

async fn compute_services(c: &Ctx) -> Result<Table> {
    let s: Services = c.api.get("/compute/v2.1/os-services").await?;
    Ok(simple(
        "compute_services",
        vec![
            col("Name"),
            col("Host"),
            col("Zone"),
            col("Status"),
            col("State"),
            col("Last Updated"),
        ],
        s.services
            .into_iter()
            .map(|s| {
                vec![
                    s.binary,
                    s.host,
                    s.zone,
                    s.status,
                    s.state,
                    s.updated_at.unwrap_or_default(),
                ]
            })
            .collect(),
    ))
}

pub async fn hypervisors(c: Ctx) -> Result<Response> {
    // Hypervisor details as 2.1 lists them (2.88 dropped the usage fields).
    let h: Hypervisors = c
        .api
        .send_json::<()>(
            axum::http::Method::GET,
            "/compute/v2.1/os-hypervisors/detail",
            None,
        )
        .await
        .and_then(|a| {
            serde_json::from_slice(&a.body).map_err(|e| crate::client::ApiError {
                status: axum::http::StatusCode::BAD_GATEWAY,
                message: e.to_string(),
            })
        })?;
    let rows = h
        .hypervisors
        .into_iter()
        .map(|h| {
            vec![
                h.hypervisor_hostname,
                h.hypervisor_type,
                format!("{} of {}", h.vcpus_used, h.vcpus),
                format!("{} of {} MB", h.memory_mb_used, h.memory_mb),
                h.running_vms.to_string(),
                h.state,
                h.status,
            ]
        })
        .collect();
    let services = compute_services(&c).await?;
    c.panel(Panel {
        title: "All Hypervisors".into(),
        tables: vec![
            simple(
                "hypervisors",
                vec![
                    col("Hostname"),
                    col("Type"),
                    col("VCPUs (used)"),
                    col("RAM (used)"),
                    col("Instances"),
                    col("State"),
                    col("Status"),
                ],
                rows,
            ),
            services,
        ],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
struct Aggregates {
    aggregates: Vec<Aggregate>,
}

#[derive(Deserialize)]
struct Aggregate {
    #[serde(default)]
    id: i64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    availability_zone: Option<String>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

pub async fn aggregates(c: Ctx) -> Result<Response> {
    let a: Aggregates = c.api.get("/compute/v2.1/os-aggregates").await?;
    let s: Services = c.api.get("/compute/v2.1/os-services").await?;
    let url = "/dashboard/admin/aggregates";
    let aggregate_opts = a
        .aggregates
        .iter()
        .map(|a| (a.id.to_string(), a.name.clone()))
        .collect();
    let host_opts = s
        .services
        .iter()
        .filter(|s| s.binary == "nova-compute")
        .map(|s| (s.host.clone(), s.host.clone()))
        .collect();
    let rows = a
        .aggregates
        .into_iter()
        .map(|a| {
            vec![
                a.name,
                a.availability_zone.unwrap_or_default(),
                a.hosts.join(", "),
                a.metadata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    c.panel(Panel {
        title: "Host Aggregates".into(),
        forms: vec![
            form(
                "Create Host Aggregate",
                url,
                vec![
                    field("name", "Name", "text").required(),
                    field("zone", "Availability Zone", "text"),
                ],
            ),
            form(
                "Manage Hosts",
                url,
                vec![
                    field("action", "", "hidden").value("add_host"),
                    field("aggregate", "Host Aggregate", "select").options(aggregate_opts),
                    field("host", "Host", "select").options(host_opts),
                ],
            ),
        ],
        tables: vec![simple(
            "aggregates",
            vec![
                col("Name"),
                col("Availability Zone"),
                col("Hosts"),
                col("Metadata"),
            ],
            rows,
        )],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
pub struct AggregateForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    aggregate: String,
    #[serde(default)]
    host: String,
}

pub async fn aggregate_act(c: Ctx, Form(f): Form<AggregateForm>) -> Result<Response> {
    let r = match f.action.as_str() {
        "" => {
            let mut a = json!({"name": f.name});
            if !f.zone.trim().is_empty() {
                a["availability_zone"] = json!(f.zone.trim());
            }
            c.api
                .act("/compute/v2.1/os-aggregates", &json!({ "aggregate": a }))
                .await
                .map(|_| format!("Created host aggregate \"{}\".", f.name))
        }
        "add_host" => c
            .api
            .act(
                &format!("/compute/v2.1/os-aggregates/{}/action", enc(&f.aggregate)),
                &json!({"add_host": {"host": f.host}}),
            )
            .await
            .map(|_| format!("Added host {} to the aggregate.", f.host)),
        other => return Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    };
    Ok(back("/dashboard/admin/aggregates", r))
}

pub async fn instances(c: Ctx, Query(p): Query<Paging>) -> Result<Response> {
    let t = super::instances::server_table(&c, &p, "/dashboard/admin/instances", true).await?;
    c.panel(Panel::of("All Instances", vec![t]))
}

pub async fn flavors(c: Ctx) -> Result<Response> {
    let f: Flavors = c
        .api
        .get("/compute/v2.1/flavors/detail?is_public=None")
        .await?;
    let rows = f
        .flavors
        .iter()
        .map(|f| Row {
            id: f.id.clone(),
            cells: vec![
                cell(&f.name),
                cell(f.vcpus.to_string()),
                cell(format!("{}MB", f.ram)),
                cell(format!("{}GB", f.disk)),
                cell(&f.id),
                cell(if f.public { "Yes" } else { "No" }),
                cell(
                    f.extra_specs
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            ],
            actions: vec![action(
                "Delete Flavor",
                "/dashboard/admin/flavors",
                &[("action", "delete"), ("id", &f.id)],
            )],
            busy: false,
        })
        .collect();
    let private: Vec<(String, String)> = f
        .flavors
        .iter()
        .filter(|f| !f.public)
        .map(|f| (f.id.clone(), f.name.clone()))
        .collect();
    let projects: Projects = c
        .api
        .get("/v3/projects")
        .await
        .unwrap_or(Projects { projects: vec![] });
    let mut project_opts = vec![(String::new(), "(none)".to_string())];
    project_opts.extend(
        projects
            .projects
            .iter()
            .map(|p| (p.id.clone(), p.name.clone())),
    );
    c.panel(Panel {
        title: "Flavors".into(),
        forms: vec![
            form(
                "Update Flavor Access",
                "/dashboard/admin/flavors",
                vec![
                    field("id", "Flavor (private ones)", "select").options(private),
                    field("project", "Project", "select").options(project_opts.clone()),
                    field("action", "Access", "select").options(vec![
                        ("grant".into(), "Grant".into()),
                        ("revoke".into(), "Revoke".into()),
                    ]),
                ],
            ),
            form(
                "Create Flavor",
                "/dashboard/admin/flavors",
                vec![
                    field("name", "Name", "text").required(),
                    field("vcpus", "VCPUs", "number").value("1").required(),
                    field("ram", "RAM (MB)", "number").value("512").required(),
                    field("disk", "Root Disk (GB)", "number")
                        .value("1")
                        .required(),
                    field(
                        "extra_specs",
                        "Extra specs (key=value, one per line)",
                        "textarea",
                    ),
                    field("public", "Public", "checkbox").value("on"),
                    field("project", "Flavor access (a project)", "select").options(project_opts),
                ],
            ),
        ],
        tables: vec![Table {
            name: "flavors".into(),
            cols: vec![
                col("Flavor Name"),
                col("VCPUs"),
                col("RAM"),
                col("Root Disk"),
                col("ID"),
                col("Public"),
                col("Metadata"),
            ],
            rows,
            ..Table::default()
        }],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
struct Projects {
    projects: Vec<Named>,
}

#[derive(Deserialize)]
pub struct FlavorForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    vcpus: String,
    #[serde(default)]
    ram: String,
    #[serde(default)]
    disk: String,
    #[serde(default)]
    extra_specs: String,
    #[serde(default)]
    public: Option<String>,
    #[serde(default)]
    project: String,
}

fn number(what: &str, s: &str) -> std::result::Result<i64, DashError> {
    s.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| DashError::BadRequest(format!("{what} is a whole number.")))
}

/// Extra specs from `key=value` lines.
fn specs(text: &str) -> std::result::Result<BTreeMap<String, String>, DashError> {
    let mut m = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| DashError::BadRequest(format!("{line:?} is not key=value.")))?;
        m.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(m)
}

#[derive(Deserialize)]
struct OneFlavor {
    flavor: Flavor,
}

pub async fn flavor_act(c: Ctx, Form(f): Form<FlavorForm>) -> Result<Response> {
    let access = |verb: &str| json!({ verb: {"tenant": f.project} });
    let r: ApiResult<String> = if f.action == "delete" {
        c.api
            .delete(&format!("/compute/v2.1/flavors/{}", enc(&f.id)))
            .await
            .map(|_| "Deleted flavor.".into())
    } else if f.action == "grant" || f.action == "revoke" {
        let verb = if f.action == "grant" {
            "addTenantAccess"
        } else {
            "removeTenantAccess"
        };
        c.api
            .act(
                &format!("/compute/v2.1/flavors/{}/action", enc(&f.id)),
                &access(verb),
            )
            .await
            .map(|_| "Updated the flavor's access.".into())
    } else {
        let extra = specs(&f.extra_specs)?;
        let body = json!({"flavor": {"name": f.name, "vcpus": number("VCPUs", &f.vcpus)?,
            "ram": number("RAM", &f.ram)?, "disk": number("Root Disk", &f.disk)?,
            "os-flavor-access:is_public": f.public.is_some()}});
        match c
            .api
            .post::<_, OneFlavor>("/compute/v2.1/flavors", &body)
            .await
        {
            Err(e) => Err(e),
            Ok(created) => {
                let id = created.flavor.id;
                let mut r = Ok(format!("Created new flavor \"{}\".", f.name));
                if !extra.is_empty() {
                    if let Err(e) = c
                        .api
                        .act(
                            &format!("/compute/v2.1/flavors/{id}/os-extra_specs"),
                            &json!({"extra_specs": extra}),
                        )
                        .await
                    {
                        r = Err(e);
                    }
                }
                if !f.project.is_empty() && f.public.is_none() {
                    if let Err(e) = c
                        .api
                        .act(
                            &format!("/compute/v2.1/flavors/{id}/action"),
                            &json!({"addTenantAccess": {"tenant": f.project}}),
                        )
                        .await
                    {
                        r = Err(e);
                    }
                }
                r
            }
        }
    };
    Ok(back("/dashboard/admin/flavors", r))
}

pub async fn images(c: Ctx, Query(p): Query<Paging>) -> Result<Response> {
    let t = super::storage::image_table(&c, &p, "/dashboard/admin/images", false).await?;
    c.panel(Panel::of("Images (all projects)", vec![t]))
}

pub async fn volumes(c: Ctx, Query(p): Query<Paging>) -> Result<Response> {
    let t = super::storage::volume_table(&c, &p, "/dashboard/admin/volumes", true).await?;
    c.panel(Panel::of("Volumes (all projects)", vec![t]))
}

#[derive(Deserialize)]
struct VolumeTypes {
    volume_types: Vec<VolumeType>,
}

#[derive(Deserialize)]
struct VolumeType {
    id: String,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    is_public: bool,
}

pub async fn volume_types(c: Ctx) -> Result<Response> {
    let p = &c.s.project_id;
    let t: VolumeTypes = c.api.get(&format!("/volume/v3/{p}/types")).await?;
    let rows = t
        .volume_types
        .iter()
        .map(|t| Row {
            id: t.id.clone(),
            cells: vec![
                cell(&t.name),
                cell(t.description.clone().unwrap_or_default()),
                cell(if t.is_public { "Yes" } else { "No" }),
            ],
            actions: vec![action(
                "Delete Volume Type",
                "/dashboard/admin/volume_types",
                &[("action", "delete"), ("id", &t.id)],
            )],
            busy: false,
        })
        .collect();
    c.panel(Panel {
        title: "Volume Types".into(),
        forms: vec![form(
            "Create Volume Type",
            "/dashboard/admin/volume_types",
            vec![
                field("name", "Name", "text").required(),
                field("description", "Description", "text"),
            ],
        )],
        tables: vec![Table {
            name: "volume_types".into(),
            cols: vec![col("Name"), col("Description"), col("Public")],
            rows,
            ..Table::default()
        }],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
pub struct TypeForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
}

pub async fn volume_type_act(c: Ctx, Form(f): Form<TypeForm>) -> Result<Response> {
    let p = &c.s.project_id;
    let r = if f.action == "delete" {
        c.api
            .delete(&format!("/volume/v3/{p}/types/{}", enc(&f.id)))
            .await
            .map(|_| "Deleted volume type.".to_string())
    } else {
        c.api
            .act(
                &format!("/volume/v3/{p}/types"),
                &json!({"volume_type": {"name": f.name, "description": f.description}}),
            )
            .await
            .map(|_| format!("Created volume type \"{}\".", f.name))
    };
    Ok(back("/dashboard/admin/volume_types", r))
}

pub async fn networks(c: Ctx, Query(p): Query<Paging>) -> Result<Response> {
    let t = super::network::network_table(&c, &p, "/dashboard/admin/networks", true).await?;
    c.panel(Panel::of("Networks (all projects)", vec![t]))
}

pub async fn routers(c: Ctx) -> Result<Response> {
    let rs: super::network::Routers = c.api.get("/network/v2.0/routers?limit=200").await?;
    let nets: Networks = c
        .api
        .get("/network/v2.0/networks?router:external=true")
        .await?;
    c.panel(Panel {
        title: "Routers (all projects)".into(),
        tables: vec![Table {
            name: "routers".into(),
            cols: vec![
                col("Name"),
                col("Project"),
                col("Status"),
                col("External Network"),
            ],
            rows: super::network::router_rows(&rs.routers, &nets.networks, true),
            ..Table::default()
        }],
        ..Panel::default()
    })
}

pub async fn floating_ips(c: Ctx) -> Result<Response> {
    let f: FloatingIps = c.api.get("/network/v2.0/floatingips?limit=200").await?;
    let nets: Networks = c
        .api
        .get("/network/v2.0/networks?router:external=true")
        .await?;
    c.panel(Panel {
        title: "Floating IPs (all projects)".into(),
        tables: vec![Table {
            name: "floating_ips".into(),
            cols: vec![
                col("IP Address"),
                col("Project"),
                col("Mapped Fixed IP Address"),
                col("Pool"),
                col("Status"),
            ],
            rows: super::network::fip_rows(&f, &nets.networks, true),
            ..Table::default()
        }],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
struct QuotaSet {
    quota_set: BTreeMap<String, Value>,
}

pub async fn defaults(c: Ctx) -> Result<Response> {
    let q: QuotaSet = c
        .api
        .get(&format!(
            "/compute/v2.1/os-quota-sets/{}/defaults",
            c.s.project_id
        ))
        .await?;
    let rows = q
        .quota_set
        .into_iter()
        .filter(|(k, _)| k != "id")
        .map(|(k, v)| vec![k, v.to_string()])
        .collect();
    c.panel(Panel {
        title: "Default Quotas".into(),
        tables: vec![simple(
            "defaults",
            vec![col("Quota Name"), col("Limit")],
            rows,
        )],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
struct Catalog {
    services: Vec<CatalogService>,
}

#[derive(Deserialize)]
struct CatalogService {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    enabled: bool,
}

#[derive(Deserialize)]
struct Endpoints {
    endpoints: Vec<Endpoint>,
}

#[derive(Deserialize)]
struct Endpoint {
    service_id: String,
    interface: String,
    url: String,
    #[serde(default)]
    region: Option<String>,
}

#[derive(Deserialize)]
struct Agents {
    agents: Vec<Agent>,
}

#[derive(Deserialize)]
struct Agent {
    #[serde(default)]
    agent_type: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    alive: bool,
    #[serde(default)]
    admin_state_up: bool,
}

pub async fn info(c: Ctx) -> Result<Response> {
    let s: Catalog = c.api.get("/v3/services").await?;
    let e: Endpoints = c.api.get("/v3/endpoints").await?;
    let services = s
        .services
        .iter()
        .map(|s| {
            let eps = e
                .endpoints
                .iter()
                .filter(|e| e.service_id == s.id)
                .map(|e| format!("{}: {}", e.interface, e.url))
                .collect::<Vec<_>>()
                .join(" | ");
            let region = e
                .endpoints
                .iter()
                .find(|e| e.service_id == s.id)
                .and_then(|e| e.region.clone())
                .unwrap_or_default();
            vec![
                s.name.clone(),
                s.kind.clone(),
                if s.enabled {
                    "Enabled".into()
                } else {
                    "Disabled".into()
                },
                region,
                eps,
            ]
        })
        .collect();
    let mut tables = vec![simple(
        "services",
        vec![
            col("Name"),
            col("Service"),
            col("Status"),
            col("Region"),
            col("Endpoints"),
        ],
        services,
    )];
    if c.s.has("compute") {
        tables.push(compute_services(&c).await?);
    }
    if let Ok(a) = c.api.get::<Agents>("/network/v2.0/agents").await {
        tables.push(simple(
            "network_agents",
            vec![col("Type"), col("Host"), col("Status"), col("State")],
            a.agents
                .into_iter()
                .map(|a| {
                    vec![
                        a.agent_type,
                        a.host,
                        if a.admin_state_up {
                            "Enabled".into()
                        } else {
                            "Disabled".into()
                        },
                        if a.alive { "Up".into() } else { "Down".into() },
                    ]
                })
                .collect(),
        ));
    }
    c.panel(Panel {
        title: "System Information".into(),
        tables,
        ..Panel::default()
    })
}
