//! Project → Networks (with subnets and ports), Routers (gateway,
//! interfaces), Security Groups and their rules, Floating IPs.

use super::{options, FloatingIps, Network, Networks, Ports};
use crate::client::{enc, ApiResult};
use crate::page::{action, cell, col, field, form, link, Paging, Panel, Row, Table};
use crate::{back, Ctx, DashError, Form, Result};
use axum::extract::{Path, Query};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

const N: &str = "/network/v2.0";
const NET_SORT: &[&str] = &["name", "status"];

#[derive(Deserialize, Clone)]
pub struct Subnet {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub cidr: String,
    #[serde(default)]
    pub ip_version: i64,
    #[serde(default)]
    pub gateway_ip: Option<String>,
    #[serde(default)]
    pub network_id: String,
}

#[derive(Deserialize)]
pub struct Subnets {
    pub subnets: Vec<Subnet>,
}

pub fn network_rows(nets: &[Network], subnets: &[Subnet], with_project: bool) -> Vec<Row> {
    nets.iter()
        .map(|n| {
            let subs = subnets
                .iter()
                .filter(|s| s.network_id == n.id)
                .map(|s| format!("{} {}", s.name, s.cidr))
                .collect::<Vec<_>>()
                .join(", ");
            let mut cells = vec![link(
                &n.name,
                format!("/dashboard/project/networks/{}", n.id),
            )];
            if with_project {
                cells.push(cell(&n.project_id));
            }
            cells.extend([
                cell(subs),
                cell(if n.shared { "Yes" } else { "No" }),
                cell(if n.external { "Yes" } else { "No" }),
                cell(&n.status),
                cell(if n.admin_state_up { "UP" } else { "DOWN" }),
            ]);
            Row {
                id: n.id.clone(),
                cells,
                actions: vec![action(
                    "Delete Network",
                    format!("/dashboard/project/networks/{}/action", n.id),
                    &[("action", "delete")],
                )],
                busy: false,
            }
        })
        .collect()
}

pub async fn network_table(c: &Ctx, p: &Paging, base: &str, all: bool) -> Result<Table> {
    let nets: Networks = c
        .api
        .get(&format!("{N}/networks?{}", p.query(NET_SORT, "name")))
        .await?;
    let subnets: Subnets = c.api.get(&format!("{N}/subnets?limit=500")).await?;
    let mut cols = vec![crate::page::sortable("Name", "name")];
    if all {
        cols.push(col("Project"));
    }
    cols.extend([
        col("Subnets Associated"),
        col("Shared"),
        col("External"),
        crate::page::sortable("Status", "status"),
        col("Admin State"),
    ]);
    let mut t = Table {
        name: "networks".into(),
        cols,
        rows: network_rows(&nets.networks, &subnets.subnets, all),
        ..Table::default()
    };
    p.finish(&mut t, base, NET_SORT);
    Ok(t)
}

pub async fn networks(c: Ctx, Query(p): Query<Paging>) -> Result<Response> {
    let t = network_table(&c, &p, "/dashboard/project/networks", false).await?;
    c.panel(Panel {
        title: "Networks".into(),
        forms: vec![form(
            "Create Network",
            "/dashboard/project/networks",
            vec![
                field("name", "Network Name", "text").required(),
                field("subnet_name", "Subnet Name", "text"),
                field("cidr", "Network Address (CIDR)", "text"),
                field("gateway", "Gateway IP", "text"),
                field("dhcp", "Enable DHCP", "checkbox").value("on"),
            ],
        )],
        tables: vec![t],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
pub struct NetworkForm {
    name: String,
    #[serde(default)]
    subnet_name: String,
    #[serde(default)]
    cidr: String,
    #[serde(default)]
    gateway: String,
    #[serde(default)]
    dhcp: Option<String>,
}

#[derive(Deserialize)]
struct OneNetwork {
    network: Network,
}

/// Creates the network and, given a CIDR, its subnet (as Horizon's
/// workflow does: a failed subnet leaves the network and says so).
pub async fn network_create(c: Ctx, Form(f): Form<NetworkForm>) -> Result<Response> {
    let net: OneNetwork = match c
        .api
        .post(
            &format!("{N}/networks"),
            &json!({"network": {"name": f.name}}),
        )
        .await
    {
        Ok(n) => n,
        Err(e) => return Ok(back("/dashboard/project/networks", Err(e))),
    };
    let mut msg = format!("Created network \"{}\".", f.name);
    if !f.cidr.trim().is_empty() {
        let version = if f.cidr.contains(':') { 6 } else { 4 };
        let mut s = json!({"network_id": net.network.id, "cidr": f.cidr.trim(),
            "ip_version": version, "enable_dhcp": f.dhcp.is_some(),
            "name": if f.subnet_name.is_empty() { format!("{}-subnet", f.name) } else { f.subnet_name.clone() }});
        if !f.gateway.trim().is_empty() {
            s["gateway_ip"] = json!(f.gateway.trim());
        }
        if let Err(e) = c
            .api
            .act(&format!("{N}/subnets"), &json!({ "subnet": s }))
            .await
        {
            return Ok(back(
                "/dashboard/project/networks",
                Err(crate::client::ApiError {
                    status: e.status,
                    message: format!(
                        "Created network \"{}\", but not its subnet: {}",
                        f.name, e.message
                    ),
                }),
            ));
        }
        msg = format!("Created network \"{}\" with its subnet.", f.name);
    }
    Ok(back("/dashboard/project/networks", Ok(msg)))
}

pub async fn network_detail(c: Ctx, Path(id): Path<String>) -> Result<Response> {
    let n: OneNetwork = c.api.get(&format!("{N}/networks/{}", enc(&id))).await?;
    let n = n.network;
    let subs: Subnets = c
        .api
        .get(&format!("{N}/subnets?network_id={}", n.id))
        .await?;
    let ports: Ports = c
        .api
        .get(&format!("{N}/ports?network_id={}&limit=200", n.id))
        .await?;
    let url = format!("/dashboard/project/networks/{}/action", n.id);
    let subnet_rows = subs
        .subnets
        .iter()
        .map(|s| Row {
            id: s.id.clone(),
            cells: vec![
                cell(&s.name),
                cell(&s.cidr),
                cell(format!("IPv{}", s.ip_version)),
                cell(s.gateway_ip.clone().unwrap_or_default()),
            ],
            actions: vec![action(
                "Delete Subnet",
                &url,
                &[("action", "delete_subnet"), ("subnet", &s.id)],
            )],
            busy: false,
        })
        .collect();
    let port_rows = ports
        .ports
        .iter()
        .map(|p| Row {
            id: p.id.clone(),
            cells: vec![
                cell(if p.name.is_empty() {
                    format!("({})", &p.id[..8.min(p.id.len())])
                } else {
                    p.name.clone()
                }),
                cell(
                    p.fixed_ips
                        .iter()
                        .map(|f| f.ip_address.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                cell(&p.mac_address),
                cell(&p.device_owner),
                cell(&p.status),
            ],
            actions: vec![],
            busy: false,
        })
        .collect();
    c.panel(Panel {
        title: format!("Network: {}", n.name),
        facts: vec![
            ("ID".into(), n.id.clone()),
            ("Status".into(), n.status.clone()),
            ("Shared".into(), n.shared.to_string()),
            ("External".into(), n.external.to_string()),
        ],
        forms: vec![form(
            "Create Subnet",
            &url,
            vec![
                field("action", "", "hidden").value("subnet"),
                field("name", "Subnet Name", "text"),
                field("cidr", "Network Address (CIDR)", "text").required(),
                field("gateway", "Gateway IP", "text"),
            ],
        )],
        tables: vec![
            Table {
                name: "subnets".into(),
                cols: vec![
                    col("Name"),
                    col("CIDR"),
                    col("IP Version"),
                    col("Gateway IP"),
                ],
                rows: subnet_rows,
                ..Table::default()
            },
            Table {
                name: "ports".into(),
                cols: vec![
                    col("Name"),
                    col("Fixed IPs"),
                    col("MAC Address"),
                    col("Attached Device"),
                    col("Status"),
                ],
                rows: port_rows,
                ..Table::default()
            },
        ],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
pub struct NetAct {
    action: String,
    #[serde(default)]
    subnet: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    cidr: String,
    #[serde(default)]
    gateway: String,
}

pub async fn network_act(
    c: Ctx,
    Path(id): Path<String>,
    Form(f): Form<NetAct>,
) -> Result<Response> {
    let back_to = format!("/dashboard/project/networks/{}", enc(&id));
    let r: ApiResult<String> = match f.action.as_str() {
        "delete" => {
            let r = c.api.delete(&format!("{N}/networks/{}", enc(&id))).await;
            return Ok(back(
                "/dashboard/project/networks",
                r.map(|_| "Deleted network.".into()),
            ));
        }
        "delete_subnet" => c
            .api
            .delete(&format!("{N}/subnets/{}", enc(&f.subnet)))
            .await
            .map(|_| "Deleted subnet.".into()),
        "subnet" => {
            let mut s = json!({"network_id": id, "cidr": f.cidr.trim(),
                "ip_version": if f.cidr.contains(':') { 6 } else { 4 }, "name": f.name});
            if !f.gateway.trim().is_empty() {
                s["gateway_ip"] = json!(f.gateway.trim());
            }
            c.api
                .act(&format!("{N}/subnets"), &json!({ "subnet": s }))
                .await
                .map(|_| "Created subnet.".into())
        }
        other => return Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    };
    Ok(back(&back_to, r))
}

#[derive(Deserialize)]
pub struct Router {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub external_gateway_info: Option<Gateway>,
    #[serde(default)]
    pub project_id: String,
}

#[derive(Deserialize)]
pub struct Gateway {
    #[serde(default)]
    pub network_id: String,
}

#[derive(Deserialize)]
pub struct Routers {
    pub routers: Vec<Router>,
}

pub fn router_rows(rs: &[Router], nets: &[Network], with_project: bool) -> Vec<Row> {
    rs.iter()
        .map(|r| {
            let gw = r
                .external_gateway_info
                .as_ref()
                .map(|g| {
                    nets.iter()
                        .find(|n| n.id == g.network_id)
                        .map(|n| n.name.clone())
                        .unwrap_or_else(|| g.network_id.clone())
                })
                .unwrap_or_else(|| "-".into());
            let url = format!("/dashboard/project/routers/{}/action", r.id);
            let mut cells = vec![cell(&r.name)];
            if with_project {
                cells.push(cell(&r.project_id));
            }
            cells.extend([cell(&r.status), cell(gw)]);
            let mut actions = vec![];
            if r.external_gateway_info.is_some() {
                actions.push(action(
                    "Clear Gateway",
                    &url,
                    &[("action", "clear_gateway")],
                ));
            }
            actions.push(action("Delete Router", &url, &[("action", "delete")]));
            Row {
                id: r.id.clone(),
                cells,
                actions,
                busy: false,
            }
        })
        .collect()
}

pub async fn routers(c: Ctx, Query(p): Query<Paging>) -> Result<Response> {
    let rs: Routers = c
        .api
        .get(&format!("{N}/routers?{}", p.query(NET_SORT, "name")))
        .await?;
    let nets: Networks = c.api.get(&format!("{N}/networks?limit=500")).await?;
    let subnets: super::network::Subnets = c.api.get(&format!("{N}/subnets?limit=500")).await?;
    let externals: Vec<(String, String)> = nets
        .networks
        .iter()
        .filter(|n| n.external)
        .map(|n| (n.id.clone(), n.name.clone()))
        .collect();
    let mut ext_opts = vec![(String::new(), "(none)".to_string())];
    ext_opts.extend(externals.clone());
    let router_opts = options(&rs.routers, |r| (r.id.clone(), r.name.clone()));
    let subnet_opts = subnets
        .subnets
        .iter()
        .filter(|s| {
            !nets
                .networks
                .iter()
                .any(|n| n.external && n.id == s.network_id)
        })
        .map(|s| (s.id.clone(), format!("{} {}", s.name, s.cidr)))
        .collect();
    let url = "/dashboard/project/routers";
    let mut t = Table {
        name: "routers".into(),
        cols: vec![
            crate::page::sortable("Name", "name"),
            crate::page::sortable("Status", "status"),
            col("External Network"),
        ],
        rows: router_rows(&rs.routers, &nets.networks, false),
        ..Table::default()
    };
    p.finish(&mut t, url, NET_SORT);
    c.panel(Panel {
        title: "Routers".into(),
        forms: vec![
            form(
                "Create Router",
                url,
                vec![
                    field("name", "Router Name", "text").required(),
                    field("external_network", "External Network", "select").options(ext_opts),
                ],
            ),
            form(
                "Set Gateway",
                url,
                vec![
                    field("action", "", "hidden").value("set_gateway"),
                    field("router", "Router", "select").options(router_opts.clone()),
                    field("external_network", "External Network", "select").options(externals),
                ],
            ),
            form(
                "Add Interface",
                url,
                vec![
                    field("action", "", "hidden").value("add_interface"),
                    field("router", "Router", "select").options(router_opts.clone()),
                    field("subnet", "Subnet", "select").options(subnet_opts),
                ],
            ),
            form(
                "Remove Interface",
                url,
                vec![
                    field("action", "", "hidden").value("remove_interface"),
                    field("router", "Router", "select").options(router_opts),
                    field("subnet", "Subnet ID", "text").required(),
                ],
            ),
        ],
        tables: vec![t],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
pub struct RouterForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    router: String,
    #[serde(default)]
    external_network: String,
    #[serde(default)]
    subnet: String,
}

async fn router_change(c: &Ctx, id: &str, f: &RouterForm) -> ApiResult<String> {
    let r = format!("{N}/routers/{}", enc(id));
    match f.action.as_str() {
        "" => {
            let mut body = json!({"name": f.name});
            if !f.external_network.is_empty() {
                body["external_gateway_info"] = json!({"network_id": f.external_network});
            }
            c.api
                .act(&format!("{N}/routers"), &json!({ "router": body }))
                .await
                .map(|_| format!("Router \"{}\" was successfully created.", f.name))
        }
        "set_gateway" => c
            .api
            .put(
                &r,
                &json!({"router": {"external_gateway_info": {"network_id": f.external_network}}}),
            )
            .await
            .map(|_| "Gateway set.".into()),
        "clear_gateway" => c
            .api
            .put(
                &r,
                &json!({"router": {"external_gateway_info": Value::Null}}),
            )
            .await
            .map(|_| "Gateway cleared.".into()),
        "add_interface" => c
            .api
            .put(
                &format!("{r}/add_router_interface"),
                &json!({"subnet_id": f.subnet}),
            )
            .await
            .map(|_| "Interface added.".into()),
        "remove_interface" => c
            .api
            .put(
                &format!("{r}/remove_router_interface"),
                &json!({"subnet_id": f.subnet}),
            )
            .await
            .map(|_| "Interface removed.".into()),
        "delete" => c.api.delete(&r).await.map(|_| "Deleted router.".into()),
        other => Err(crate::client::ApiError {
            status: axum::http::StatusCode::BAD_REQUEST,
            message: format!("Unknown action {other:?}."),
        }),
    }
}

pub async fn router_create(c: Ctx, Form(f): Form<RouterForm>) -> Result<Response> {
    let r = router_change(&c, &f.router.clone(), &f).await;
    Ok(back("/dashboard/project/routers", r))
}

pub async fn router_act(
    c: Ctx,
    Path(id): Path<String>,
    Form(f): Form<RouterForm>,
) -> Result<Response> {
    let r = router_change(&c, &id, &f).await;
    Ok(back("/dashboard/project/routers", r))
}

#[derive(Deserialize)]
struct Rule {
    id: String,
    #[serde(default)]
    direction: String,
    #[serde(default)]
    ethertype: String,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    port_range_min: Option<i64>,
    #[serde(default)]
    port_range_max: Option<i64>,
    #[serde(default)]
    remote_ip_prefix: Option<String>,
    #[serde(default)]
    remote_group_id: Option<String>,
}

#[derive(Deserialize)]
struct Group {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    security_group_rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Groups {
    security_groups: Vec<Group>,
}

pub async fn security_groups(c: Ctx) -> Result<Response> {
    let gs: Groups = c
        .api
        .get(&format!(
            "{N}/security-groups?project_id={}",
            c.s.project_id
        ))
        .await?;
    let rows = gs
        .security_groups
        .iter()
        .map(|g| Row {
            id: g.id.clone(),
            cells: vec![
                link(
                    &g.name,
                    format!("/dashboard/project/security_groups/{}", g.id),
                ),
                cell(&g.description),
                cell(g.security_group_rules.len().to_string()),
            ],
            actions: vec![action(
                "Delete Security Group",
                format!("/dashboard/project/security_groups/{}", g.id),
                &[("action", "delete")],
            )],
            busy: false,
        })
        .collect();
    c.panel(Panel {
        title: "Security Groups".into(),
        forms: vec![form(
            "Create Security Group",
            "/dashboard/project/security_groups",
            vec![
                field("name", "Name", "text").required(),
                field("description", "Description", "text"),
            ],
        )],
        tables: vec![Table {
            name: "security_groups".into(),
            cols: vec![col("Name"), col("Description"), col("Rules")],
            rows,
            ..Table::default()
        }],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
pub struct GroupForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    direction: String,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    cidr: String,
}

pub async fn security_group_create(c: Ctx, Form(f): Form<GroupForm>) -> Result<Response> {
    let r = c
        .api
        .act(
            &format!("{N}/security-groups"),
            &json!({"security_group": {"name": f.name, "description": f.description}}),
        )
        .await
        .map(|_| format!("Created security group \"{}\".", f.name));
    Ok(back("/dashboard/project/security_groups", r))
}

pub async fn security_group_detail(c: Ctx, Path(id): Path<String>) -> Result<Response> {
    #[derive(Deserialize)]
    struct One {
        security_group: Group,
    }
    let g: One = c
        .api
        .get(&format!("{N}/security-groups/{}", enc(&id)))
        .await?;
    let g = g.security_group;
    let url = format!("/dashboard/project/security_groups/{}", g.id);
    let rows = g
        .security_group_rules
        .iter()
        .map(|r| Row {
            id: r.id.clone(),
            cells: vec![
                cell(&r.direction),
                cell(&r.ethertype),
                cell(r.protocol.clone().unwrap_or_else(|| "Any".into())),
                cell(match (r.port_range_min, r.port_range_max) {
                    (Some(a), Some(b)) if a == b => a.to_string(),
                    (Some(a), Some(b)) => format!("{a}-{b}"),
                    _ => "Any".into(),
                }),
                cell(r.remote_ip_prefix.clone().unwrap_or_else(|| {
                    r.remote_group_id
                        .clone()
                        .map(|g| format!("group {g}"))
                        .unwrap_or("-".into())
                })),
            ],
            actions: vec![action(
                "Delete Rule",
                &url,
                &[("action", "delete_rule"), ("rule", &r.id)],
            )],
            busy: false,
        })
        .collect();
    let choice = |v: &[&str]| v.iter().map(|s| (s.to_string(), s.to_string())).collect();
    c.panel(Panel {
        title: format!("Manage Security Group Rules: {}", g.name),
        forms: vec![form(
            "Add Rule",
            &url,
            vec![
                field("action", "", "hidden").value("add_rule"),
                field("direction", "Direction", "select").options(choice(&["ingress", "egress"])),
                field("protocol", "Protocol", "select")
                    .options(choice(&["tcp", "udp", "icmp", "any"])),
                field("port", "Port or range (22 or 8000-8080)", "text"),
                field("cidr", "CIDR", "text").value("0.0.0.0/0"),
            ],
        )],
        tables: vec![Table {
            name: "rules".into(),
            cols: vec![
                col("Direction"),
                col("Ether Type"),
                col("IP Protocol"),
                col("Port Range"),
                col("Remote"),
            ],
            rows,
            ..Table::default()
        }],
        ..Panel::default()
    })
}

pub async fn security_group_act(
    c: Ctx,
    Path(id): Path<String>,
    Form(f): Form<GroupForm>,
) -> Result<Response> {
    let here = format!("/dashboard/project/security_groups/{}", enc(&id));
    let r: ApiResult<String> = match f.action.as_str() {
        "delete" => {
            let r = c
                .api
                .delete(&format!("{N}/security-groups/{}", enc(&id)))
                .await;
            return Ok(back(
                "/dashboard/project/security_groups",
                r.map(|_| "Deleted security group.".into()),
            ));
        }
        "delete_rule" => c
            .api
            .delete(&format!("{N}/security-group-rules/{}", enc(&f.rule)))
            .await
            .map(|_| "Deleted rule.".into()),
        "add_rule" => {
            let mut rule = json!({"security_group_id": id, "direction": f.direction});
            if f.protocol != "any" && !f.protocol.is_empty() {
                rule["protocol"] = json!(f.protocol);
            }
            let port = f.port.trim();
            if !port.is_empty() {
                let (a, b) = port.split_once('-').unwrap_or((port, port));
                let p = |s: &str| {
                    s.trim()
                        .parse::<u16>()
                        .map_err(|_| DashError::BadRequest(format!("{s:?} is not a port.")))
                };
                rule["port_range_min"] = json!(p(a)?);
                rule["port_range_max"] = json!(p(b)?);
            }
            if !f.cidr.trim().is_empty() {
                rule["remote_ip_prefix"] = json!(f.cidr.trim());
                if f.cidr.contains(':') {
                    rule["ethertype"] = json!("IPv6");
                }
            }
            c.api
                .act(
                    &format!("{N}/security-group-rules"),
                    &json!({ "security_group_rule": rule }),
                )
                .await
                .map(|_| "Added rule.".into())
        }
        other => return Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    };
    Ok(back(&here, r))
}

pub fn fip_rows(f: &FloatingIps, nets: &[Network], with_project: bool) -> Vec<Row> {
    f.floatingips
        .iter()
        .map(|ip| {
            let pool = nets
                .iter()
                .find(|n| n.id == ip.floating_network_id)
                .map(|n| n.name.clone())
                .unwrap_or_default();
            let mut cells = vec![cell(&ip.floating_ip_address)];
            if with_project {
                cells.push(cell(&ip.project_id));
            }
            cells.extend([
                cell(ip.fixed_ip_address.clone().unwrap_or_else(|| "-".into())),
                cell(pool),
                cell(&ip.status),
            ]);
            let mut actions = vec![];
            if ip.port_id.is_some() {
                actions.push(action(
                    "Disassociate",
                    "/dashboard/project/floating_ips",
                    &[("action", "disassociate"), ("id", &ip.id)],
                ));
            }
            actions.push(action(
                "Release Floating IP",
                "/dashboard/project/floating_ips",
                &[("action", "release"), ("id", &ip.id)],
            ));
            Row {
                id: ip.id.clone(),
                cells,
                actions,
                busy: false,
            }
        })
        .collect()
}

pub async fn floating_ips(c: Ctx) -> Result<Response> {
    let f: FloatingIps = c
        .api
        .get(&format!("{N}/floatingips?project_id={}", c.s.project_id))
        .await?;
    let nets: Networks = c
        .api
        .get(&format!("{N}/networks?router:external=true"))
        .await?;
    let ports: Ports = c
        .api
        .get(&format!(
            "{N}/ports?project_id={}&limit=500",
            c.s.project_id
        ))
        .await?;
    let url = "/dashboard/project/floating_ips";
    let port_opts = ports
        .ports
        .iter()
        .filter(|p| p.device_owner.starts_with("compute:"))
        .map(|p| (p.id.clone(), p.label()))
        .collect();
    let fip_opts = f
        .floatingips
        .iter()
        .filter(|i| i.port_id.is_none())
        .map(|i| (i.id.clone(), i.floating_ip_address.clone()))
        .collect();
    c.panel(Panel {
        title: "Floating IPs".into(),
        forms: vec![
            form(
                "Allocate IP To Project",
                url,
                vec![
                    field("action", "", "hidden").value("allocate"),
                    field("pool", "Pool", "select")
                        .options(options(&nets.networks, |n| (n.id.clone(), n.name.clone()))),
                ],
            ),
            form(
                "Associate",
                url,
                vec![
                    field("action", "", "hidden").value("associate"),
                    field("id", "IP Address", "select").options(fip_opts),
                    field("port", "Port to be associated", "select").options(port_opts),
                ],
            ),
        ],
        tables: vec![Table {
            name: "floating_ips".into(),
            cols: vec![
                col("IP Address"),
                col("Mapped Fixed IP Address"),
                col("Pool"),
                col("Status"),
            ],
            rows: fip_rows(&f, &nets.networks, false),
            ..Table::default()
        }],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
pub struct FipForm {
    action: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    pool: String,
    #[serde(default)]
    port: String,
}

#[derive(Deserialize)]
struct OneFip {
    floatingip: super::FloatingIp,
}

pub async fn floating_ip_act(c: Ctx, Form(f): Form<FipForm>) -> Result<Response> {
    let one = format!("{N}/floatingips/{}", enc(&f.id));
    let r: ApiResult<String> = match f.action.as_str() {
        "allocate" => c
            .api
            .post::<_, OneFip>(
                &format!("{N}/floatingips"),
                &json!({"floatingip": {"floating_network_id": f.pool}}),
            )
            .await
            .map(|v| {
                format!(
                    "Allocated floating IP {}.",
                    v.floatingip.floating_ip_address
                )
            }),
        "associate" => c
            .api
            .put(&one, &json!({"floatingip": {"port_id": f.port}}))
            .await
            .map(|_| "Associated floating IP.".into()),
        "disassociate" => c
            .api
            .put(&one, &json!({"floatingip": {"port_id": Value::Null}}))
            .await
            .map(|_| "Disassociated floating IP.".into()),
        "release" => c
            .api
            .delete(&one)
            .await
            .map(|_| "Released floating IP.".into()),
        other => return Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    };
    Ok(back("/dashboard/project/floating_ips", r))
}
