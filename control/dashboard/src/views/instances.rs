//! Project → Instances: the list (paged by the API's `limit`/`marker`),
//! the detail page with its forms, row actions, the console log, and the
//! live status the script polls. The Launch Instance wizard is in
//! [`super::launch`].

use super::{Addr, Named};
use crate::client::{enc, ApiResult};
use crate::page::{action, cell, col, field, form, link, live, Paging, Panel, Row, Table};
use crate::{back, Ctx, DashError, Form, Result};
use axum::extract::{Path, Query, RawQuery};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

const C: &str = "/compute/v2.1";

/// A server as the compute API (2.79) lists it.
#[derive(Deserialize, Clone)]
pub struct Server {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub addresses: BTreeMap<String, Vec<Addr>>,
    #[serde(default)]
    pub flavor: Option<FlavorRef>,
    #[serde(default)]
    pub image: ImageRef,
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub key_name: Option<String>,
    #[serde(default, rename = "OS-EXT-STS:task_state")]
    pub task: Option<String>,
    #[serde(default, rename = "OS-EXT-STS:power_state")]
    pub power: Option<i64>,
    #[serde(default)]
    pub locked: bool,
    #[serde(default, rename = "os-extended-volumes:volumes_attached")]
    pub volumes: Vec<IdOnly>,
    #[serde(default)]
    pub tenant_id: String,
}

#[derive(Deserialize, Clone)]
pub struct FlavorRef {
    #[serde(default)]
    pub original_name: String,
}

/// `""` (booted from a volume) or `{"id": …}`.
#[derive(Deserialize, Clone, Default)]
#[serde(untagged)]
pub enum ImageRef {
    Id(IdOnly),
    #[default]
    None,
    #[allow(dead_code)]
    Text(String),
}

#[derive(Deserialize, Clone)]
pub struct IdOnly {
    pub id: String,
}

#[derive(Deserialize)]
struct Servers {
    servers: Vec<Server>,
}

#[derive(Deserialize)]
struct OneServer {
    server: Server,
}

/// Statuses that change by themselves: the script polls these rows.
pub fn busy(status: &str, task: Option<&str>) -> bool {
    task.is_some()
        || matches!(
            status,
            "BUILD" | "REBOOT" | "HARD_REBOOT" | "MIGRATING" | "RESIZE" | "REBUILD" | "DELETED"
        )
}

pub fn addresses(s: &Server) -> String {
    s.addresses
        .values()
        .flatten()
        .map(|a| a.addr.clone())
        .collect::<Vec<_>>()
        .join(", ")
}

const POWER: [&str; 8] = [
    "NOSTATE",
    "Running",
    "",
    "Paused",
    "Shut Down",
    "",
    "Crashed",
    "Suspended",
];

/// The names of the images the servers boot from (one lookup each).
async fn image_names(c: &Ctx, servers: &[Server]) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for s in servers {
        if let ImageRef::Id(i) = &s.image {
            if names.contains_key(&i.id) {
                continue;
            }
            let n: ApiResult<Named> = c.api.get(&format!("/image/v2/images/{}", i.id)).await;
            names.insert(
                i.id.clone(),
                n.map(|n| n.name).unwrap_or_else(|_| i.id.clone()),
            );
        }
    }
    names
}

fn row_actions(base: &str, s: &Server) -> Vec<crate::page::Action> {
    let url = format!("{base}/{}/action", s.id);
    let mut a = Vec::new();
    match s.status.as_str() {
        "SHUTOFF" => {
            a.push(action("Start", &url, &[("action", "start")]));
            a.push(action("Shelve", &url, &[("action", "shelve")]));
        }
        "ACTIVE" => {
            a.push(action("Stop", &url, &[("action", "stop")]));
            a.push(action("Reboot", &url, &[("action", "reboot")]));
            a.push(action("Pause", &url, &[("action", "pause")]));
            a.push(action("Suspend", &url, &[("action", "suspend")]));
            a.push(action("Shelve", &url, &[("action", "shelve")]));
        }
        "PAUSED" => a.push(action("Resume", &url, &[("action", "unpause")])),
        "SUSPENDED" => a.push(action("Resume", &url, &[("action", "resume")])),
        "SHELVED" | "SHELVED_OFFLOADED" => {
            a.push(action("Unshelve", &url, &[("action", "unshelve")]))
        }
        _ => {}
    }
    if s.locked {
        a.push(action("Unlock", &url, &[("action", "unlock")]));
    } else {
        a.push(action("Lock", &url, &[("action", "lock")]));
    }
    a.push(action("Delete Instance", &url, &[("action", "delete")]));
    a
}

pub fn server_rows(
    base: &str,
    servers: &[Server],
    images: &BTreeMap<String, String>,
    with_project: bool,
) -> Vec<Row> {
    servers
        .iter()
        .map(|s| {
            let image = match &s.image {
                ImageRef::Id(i) => images.get(&i.id).cloned().unwrap_or_default(),
                _ => "(volume)".into(),
            };
            let mut cells = vec![link(&s.name, format!("{base}/{}", s.id))];
            if with_project {
                cells.push(cell(&s.tenant_id));
            }
            cells.extend([
                cell(image),
                live("addresses", addresses(s)),
                cell(
                    s.flavor
                        .as_ref()
                        .map(|f| f.original_name.clone())
                        .unwrap_or_default(),
                ),
                cell(s.key_name.clone().unwrap_or_default()),
                live("status", &s.status),
                live("task", s.task.clone().unwrap_or_else(|| "None".into())),
                live(
                    "power",
                    POWER
                        .get(s.power.unwrap_or(0) as usize)
                        .copied()
                        .unwrap_or(""),
                ),
                cell(crate::page::age(&s.created)),
            ]);
            Row {
                id: s.id.clone(),
                cells,
                actions: row_actions(base, s),
                busy: busy(&s.status, s.task.as_deref()),
            }
        })
        .collect()
}

/// A page of servers: the compute API pages by creation time (newest
/// first); the name filter is Nova's.
pub async fn server_table(c: &Ctx, p: &Paging, base: &str, all: bool) -> Result<Table> {
    let mut q = format!("limit={}", p.limit());
    if let Some(m) = &p.marker {
        q.push_str(&format!("&marker={}", enc(m)));
    }
    if let Some(n) = p.filter() {
        q.push_str(&format!("&name={}", enc(&regex_quote(n))));
    }
    if all {
        q.push_str("&all_tenants=1");
    }
    let list: Servers = c.api.get(&format!("{C}/servers/detail?{q}")).await?;
    let images = image_names(c, &list.servers).await;
    let mut cols = vec![col("Instance Name")];
    if all {
        cols.push(col("Project"));
    }
    cols.extend([
        col("Image Name"),
        col("IP Address"),
        col("Flavor"),
        col("Key Pair"),
        col("Status"),
        col("Task"),
        col("Power State"),
        col("Age"),
    ]);
    let mut t = Table {
        name: "instances".into(),
        cols,
        rows: server_rows("/dashboard/project/instances", &list.servers, &images, all),
        poll: Some("/dashboard/status?kind=server".into()),
        ..Table::default()
    };
    p.finish(&mut t, base, &["created_at"]);
    Ok(t)
}

/// Nova filters names by regular expression; the dashboard's filter is a
/// plain substring.
fn regex_quote(s: &str) -> String {
    let mut o = String::new();
    for ch in s.chars() {
        if "\\.+*?()|[]{}^$".contains(ch) {
            o.push('\\');
        }
        o.push(ch);
    }
    o
}

pub async fn list(c: Ctx, Query(p): Query<Paging>) -> Result<Response> {
    let t = server_table(&c, &p, "/dashboard/project/instances", false).await?;
    let mut panel = Panel {
        title: "Instances".into(),
        tables: vec![t],
        ..Panel::default()
    };
    panel.buttons.push((
        "Launch Instance".into(),
        "/dashboard/project/instances/launch".into(),
        "launch".into(),
    ));
    c.panel(panel)
}

#[derive(Deserialize)]
struct Attachments {
    #[serde(rename = "volumeAttachments")]
    attachments: Vec<Attachment>,
}

#[derive(Deserialize)]
struct Attachment {
    #[serde(rename = "volumeId")]
    volume: String,
    #[serde(default)]
    device: Option<String>,
}

pub async fn detail(c: Ctx, Path(id): Path<String>) -> Result<Response> {
    let s: OneServer = c.api.get(&format!("{C}/servers/{}", enc(&id))).await?;
    let s = s.server;
    let base = format!("/dashboard/project/instances/{}", s.id);
    let act = format!("{base}/action");
    let images = image_names(&c, std::slice::from_ref(&s)).await;
    let att: Attachments = c
        .api
        .get(&format!("{C}/servers/{}/os-volume_attachments", s.id))
        .await
        .unwrap_or(Attachments {
            attachments: vec![],
        });
    let vols: super::Volumes = c
        .api
        .get(&format!(
            "/volume/v3/{}/volumes/detail?status=available&limit=100",
            c.s.project_id
        ))
        .await
        .unwrap_or_default();
    let nets: super::Networks = c.api.get("/network/v2.0/networks?limit=200").await?;
    let ports: super::Ports = c
        .api
        .get(&format!("/network/v2.0/ports?device_id={}", s.id))
        .await?;
    let fips: super::FloatingIps = c.api.get("/network/v2.0/floatingips?limit=200").await?;
    let port_opts: Vec<(String, String)> = ports
        .ports
        .iter()
        .map(|p| (p.id.clone(), p.label()))
        .collect();
    let mut facts = vec![
        ("Name".into(), s.name.clone()),
        ("ID".into(), s.id.clone()),
        ("Status".into(), s.status.clone()),
        ("Locked".into(), s.locked.to_string()),
        ("IP Addresses".into(), addresses(&s)),
        (
            "Flavor".into(),
            s.flavor
                .as_ref()
                .map(|f| f.original_name.clone())
                .unwrap_or_default(),
        ),
        (
            "Image".into(),
            match &s.image {
                ImageRef::Id(i) => images.get(&i.id).cloned().unwrap_or_default(),
                _ => "(booted from a volume)".into(),
            },
        ),
        ("Key Pair".into(), s.key_name.clone().unwrap_or_default()),
        ("Created".into(), s.created.clone()),
    ];
    for a in &att.attachments {
        facts.push((
            "Volume attached".into(),
            format!("{} on {}", a.volume, a.device.clone().unwrap_or_default()),
        ));
    }
    let images: super::storage::Images = c
        .api
        .get("/image/v2/images?status=active&limit=200&sort_key=name&sort_dir=asc")
        .await
        .unwrap_or(super::storage::Images { images: vec![] });
    let forms = vec![
        form(
            "Rebuild Instance",
            &act,
            vec![
                field("action", "", "hidden").value("rebuild"),
                field("image", "Select Image", "select")
                    .options(super::options(&images.images, |i| {
                        (i.id.clone(), i.name.clone().unwrap_or_default())
                    })),
            ],
        ),
        form(
            "Create Snapshot",
            &act,
            vec![
                field("action", "", "hidden").value("snapshot"),
                field("name", "Snapshot Name", "text").required(),
            ],
        ),
        form(
            "Attach Volume",
            &act,
            vec![
                field("action", "", "hidden").value("attach_volume"),
                field("volume", "Volume", "select")
                    .options(super::options(&vols.volumes, |v| (v.id.clone(), v.label()))),
            ],
        ),
        form(
            "Detach Volume",
            &act,
            vec![
                field("action", "", "hidden").value("detach_volume"),
                field("volume", "Volume", "select").options(
                    att.attachments
                        .iter()
                        .map(|a| (a.volume.clone(), a.volume.clone()))
                        .collect(),
                ),
            ],
        ),
        form(
            "Attach Interface",
            &act,
            vec![
                field("action", "", "hidden").value("attach_interface"),
                field("network", "Network", "select").options(
                    nets.networks
                        .iter()
                        .filter(|n| !n.external)
                        .map(|n| (n.id.clone(), n.name.clone()))
                        .collect(),
                ),
            ],
        ),
        form(
            "Detach Interface",
            &act,
            vec![
                field("action", "", "hidden").value("detach_interface"),
                field("port", "Port", "select").options(port_opts.clone()),
            ],
        ),
        form(
            "Associate Floating IP",
            &act,
            vec![
                field("action", "", "hidden").value("associate"),
                field("floating_ip", "IP Address", "select").options(
                    fips.floatingips
                        .iter()
                        .filter(|f| f.port_id.is_none())
                        .map(|f| (f.id.clone(), f.floating_ip_address.clone()))
                        .collect(),
                ),
                field("port", "Port to be associated", "select").options(port_opts),
            ],
        ),
        form(
            "Disassociate Floating IP",
            &act,
            vec![
                field("action", "", "hidden").value("disassociate"),
                field("floating_ip", "IP Address", "select").options(
                    fips.floatingips
                        .iter()
                        .filter(|f| {
                            f.port_id
                                .as_ref()
                                .is_some_and(|p| ports.ports.iter().any(|q| &q.id == p))
                        })
                        .map(|f| (f.id.clone(), f.floating_ip_address.clone()))
                        .collect(),
                ),
            ],
        ),
    ];
    let mut t = Table {
        name: "instance".into(),
        cols: vec![col("Name"), col("Status"), col("Task")],
        rows: vec![Row {
            id: s.id.clone(),
            cells: vec![
                cell(&s.name),
                live("status", &s.status),
                live("task", s.task.clone().unwrap_or_else(|| "None".into())),
            ],
            actions: row_actions("/dashboard/project/instances", &s),
            busy: busy(&s.status, s.task.as_deref()),
        }],
        poll: Some("/dashboard/status?kind=server".into()),
        ..Table::default()
    };
    t.base = base.clone();
    facts.push(("Console".into(), format!("{base}/console")));
    c.panel(Panel {
        title: format!("Instance: {}", s.name),
        forms,
        tables: vec![t],
        facts,
        ..Panel::default()
    })
}

#[derive(Deserialize)]
pub struct ActForm {
    action: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    volume: String,
    #[serde(default)]
    network: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    floating_ip: String,
    #[serde(default)]
    image: String,
}

pub async fn act(c: Ctx, Path(id): Path<String>, Form(f): Form<ActForm>) -> Result<Response> {
    let sv = format!("{C}/servers/{}", enc(&id));
    let a = format!("{sv}/action");
    let none = serde_json::Value::Null;
    let api = &c.api;
    let r: ApiResult<String> = match f.action.as_str() {
        "start" => api
            .act(&a, &json!({"os-start": none}))
            .await
            .map(|_| "Started instance.".into()),
        "stop" => api
            .act(&a, &json!({"os-stop": none}))
            .await
            .map(|_| "Stopped instance.".into()),
        "reboot" => api
            .act(&a, &json!({"reboot": {"type": "SOFT"}}))
            .await
            .map(|_| "Rebooted instance.".into()),
        "pause" => api
            .act(&a, &json!({"pause": none}))
            .await
            .map(|_| "Paused instance.".into()),
        "unpause" => api
            .act(&a, &json!({"unpause": none}))
            .await
            .map(|_| "Resumed instance.".into()),
        "suspend" => api
            .act(&a, &json!({"suspend": none}))
            .await
            .map(|_| "Suspended instance.".into()),
        "resume" => api
            .act(&a, &json!({"resume": none}))
            .await
            .map(|_| "Resumed instance.".into()),
        "shelve" => api
            .act(&a, &json!({"shelve": none}))
            .await
            .map(|_| "Shelved instance.".into()),
        "unshelve" => api
            .act(&a, &json!({"unshelve": none}))
            .await
            .map(|_| "Unshelved instance.".into()),
        "rebuild" => api
            .act(&a, &json!({"rebuild": {"imageRef": f.image}}))
            .await
            .map(|_| "Rebuilding instance.".into()),
        "lock" => api
            .act(&a, &json!({"lock": none}))
            .await
            .map(|_| "Locked instance.".into()),
        "unlock" => api
            .act(&a, &json!({"unlock": none}))
            .await
            .map(|_| "Unlocked instance.".into()),
        "delete" => api
            .delete(&sv)
            .await
            .map(|_| "Scheduled deletion of instance.".into()),
        "snapshot" => api
            .act(&a, &json!({"createImage": {"name": f.name}}))
            .await
            .map(|_| format!("Snapshot \"{}\" created.", f.name)),
        "attach_volume" => api
            .act(
                &format!("{sv}/os-volume_attachments"),
                &json!({"volumeAttachment": {"volumeId": f.volume}}),
            )
            .await
            .map(|_| "Attaching volume.".into()),
        "detach_volume" => api
            .delete(&format!("{sv}/os-volume_attachments/{}", enc(&f.volume)))
            .await
            .map(|_| "Detaching volume.".into()),
        "attach_interface" => api
            .act(
                &format!("{sv}/os-interface"),
                &json!({"interfaceAttachment": {"net_id": f.network}}),
            )
            .await
            .map(|_| "Attached interface.".into()),
        "detach_interface" => api
            .delete(&format!("{sv}/os-interface/{}", enc(&f.port)))
            .await
            .map(|_| "Detached interface.".into()),
        "associate" => api
            .put(
                &format!("/network/v2.0/floatingips/{}", enc(&f.floating_ip)),
                &json!({"floatingip": {"port_id": f.port}}),
            )
            .await
            .map(|_| "Associated floating IP.".into()),
        "disassociate" => api
            .put(
                &format!("/network/v2.0/floatingips/{}", enc(&f.floating_ip)),
                &json!({"floatingip": {"port_id": none}}),
            )
            .await
            .map(|_| "Disassociated floating IP.".into()),
        other => return Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    };
    let to = if f.action == "delete" || f.action == "snapshot" {
        "/dashboard/project/instances".to_string()
    } else {
        format!("/dashboard/project/instances/{}", enc(&id))
    };
    Ok(back(&to, r))
}

#[derive(Deserialize)]
struct Console {
    output: String,
}

pub async fn console(c: Ctx, Path(id): Path<String>) -> Result<Response> {
    let s: OneServer = c.api.get(&format!("{C}/servers/{}", enc(&id))).await?;
    let out: Console = c
        .api
        .post(
            &format!("{C}/servers/{}/action", s.server.id),
            &json!({"os-getConsoleOutput": {"length": 500}}),
        )
        .await?;
    c.panel(Panel {
        title: format!("Console Log: {}", s.server.name),
        pre: Some(out.output),
        facts: vec![(
            "Instance".into(),
            format!("/dashboard/project/instances/{}", s.server.id),
        )],
        ..Panel::default()
    })
}

/// What the script shows of one row.
#[derive(Serialize)]
pub struct Live {
    status: String,
    fields: BTreeMap<&'static str, String>,
    busy: bool,
}

#[derive(serde::Deserialize)]
struct OneBackup {
    backup: BackupState,
}

#[derive(serde::Deserialize)]
struct BackupState {
    #[serde(default)]
    status: String,
}

/// `GET /dashboard/status?kind=server|volume|backup&id=…`: the rows' state
/// now (at most 50; a row the API no longer shows is `DELETED`).
pub async fn status(c: Ctx, RawQuery(q): RawQuery) -> Result<Response> {
    let q = q.unwrap_or_default();
    let mut kind = String::new();
    let mut ids = Vec::new();
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        match &*k {
            "kind" => kind = v.into_owned(),
            "id" if ids.len() < 50 => ids.push(v.into_owned()),
            _ => {}
        }
    }
    let mut out: BTreeMap<String, Live> = BTreeMap::new();
    for id in ids {
        let live = match kind.as_str() {
            "server" => match c
                .api
                .get::<OneServer>(&format!("{C}/servers/{}", enc(&id)))
                .await
            {
                Ok(s) => {
                    let s = s.server;
                    let mut fields = BTreeMap::new();
                    fields.insert("status", s.status.clone());
                    fields.insert("addresses", addresses(&s));
                    fields.insert("task", s.task.clone().unwrap_or_else(|| "None".into()));
                    fields.insert(
                        "power",
                        POWER
                            .get(s.power.unwrap_or(0) as usize)
                            .copied()
                            .unwrap_or("")
                            .into(),
                    );
                    Live {
                        busy: busy(&s.status, s.task.as_deref()),
                        status: s.status,
                        fields,
                    }
                }
                Err(e) if e.status.as_u16() == 404 => gone(),
                Err(e) => return Err(e.into()),
            },
            "volume" => match c
                .api
                .get::<super::OneVolume>(&format!(
                    "/volume/v3/{}/volumes/{}",
                    c.s.project_id,
                    enc(&id)
                ))
                .await
            {
                Ok(v) => {
                    let v = v.volume;
                    let mut fields = BTreeMap::new();
                    fields.insert("status", v.status.clone());
                    fields.insert("attached", v.attached_to());
                    Live {
                        busy: super::volume_busy(&v.status),
                        status: v.status,
                        fields,
                    }
                }
                Err(e) if e.status.as_u16() == 404 => gone(),
                Err(e) => return Err(e.into()),
            },
            "backup" => match c
                .api
                .get::<OneBackup>(&format!(
                    "/volume/v3/{}/backups/{}",
                    c.s.project_id,
                    enc(&id)
                ))
                .await
            {
                Ok(b) => {
                    let status = b.backup.status;
                    let mut fields = BTreeMap::new();
                    fields.insert("status", status.clone());
                    Live {
                        busy: matches!(status.as_str(), "creating" | "restoring" | "deleting"),
                        status,
                        fields,
                    }
                }
                Err(e) if e.status.as_u16() == 404 => gone(),
                Err(e) => return Err(e.into()),
            },
            _ => {
                return Err(DashError::BadRequest(
                    "kind is server, volume or backup".into(),
                ))
            }
        };
        out.insert(id, live);
    }
    Ok(Json(out).into_response())
}

fn gone() -> Live {
    let mut fields = BTreeMap::new();
    fields.insert("status", "DELETED".to_string());
    Live {
        status: "DELETED".into(),
        fields,
        busy: false,
    }
}
