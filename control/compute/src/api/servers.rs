//! Servers.

use super::*;

pub(crate) fn server_links(app: &AppState, id: &str) -> Value {
    json!([
        {"rel": "self", "href": format!("{}/compute/v2.1/servers/{id}", app.base_url)},
        {"rel": "bookmark", "href": format!("{}/compute/servers/{id}", app.base_url)}
    ])
}

/// What a listing looks up once for all its servers: which servers have
/// ports, and the volumes attached to each.
#[derive(Default)]
pub(super) struct Related {
    with_ports: std::collections::HashSet<String>,
    /// The listed servers' ports.
    ports: Vec<Rec>,
    /// Their floating IPs and networks' names.
    book: ursa_network::api::AddressBook,
    volumes: std::collections::HashMap<String, Vec<Attached>>,
    /// Security group names of each server's ports.
    groups: std::collections::HashMap<String, Vec<String>>,
}

impl Related {
    /// What the views of these servers show besides their records.
    pub(super) async fn gather(s: &Compute, servers: &[String]) -> Result<Related> {
        let mut out = Related {
            ports: ursa_network::api::device_ports(&s.networks, servers).await?,
            ..Related::default()
        };
        let ids: Vec<String> = out
            .ports
            .iter()
            .flat_map(|p| ursa_network::str_list(p.get("security_groups")))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let names = ursa_network::api::security_group_names(&s.networks, &ids).await?;
        out.book = ursa_network::api::address_book(&s.networks, &out.ports).await?;
        for p in &out.ports {
            let dev = st(p, "device_id").to_string();
            out.with_ports.insert(dev.clone());
            let mine = out.groups.entry(dev).or_default();
            for g in ursa_network::str_list(p.get("security_groups")) {
                if let Some(n) = names.get(&g) {
                    if !mine.contains(n) {
                        mine.push(n.clone());
                    }
                }
            }
        }
        for a in attachments_of(s, servers).await? {
            out.volumes.entry(a.server.clone()).or_default().push(a);
        }
        Ok(out)
    }
}

/// One server's detailed view at version `mv`, as show, update and
/// rebuild answer it.
pub(crate) async fn server_view(
    app: &AppState,
    s: &Compute,
    auth: &Auth,
    r: &Rec,
    mv: Mv,
) -> Result<Value> {
    let rel = Related::gather(s, &[st(r, "id").to_string()]).await?;
    Ok(server_view_with(
        app,
        s,
        auth,
        r,
        Some(Shown::One),
        mv,
        &rel,
    ))
}

/// A server's view: the short one (id, name, links) when `detail` is
/// `None`, else the detailed one as a listing or a single server shows it.
pub(super) fn server_view_with(
    app: &AppState,
    s: &Compute,
    auth: &Auth,
    r: &Rec,
    detail: Option<Shown>,
    mv: Mv,
    rel: &Related,
) -> Value {
    let id = st(r, "id");
    let Some(shown) = detail else {
        return json!({"id": id, "name": r["name"], "links": server_links(app, id)});
    };
    let addresses = if rel.with_ports.contains(id) {
        ursa_network::api::addresses(&rel.book, &rel.ports, id)
    } else {
        json!({})
    };
    let image = st(r, "ursa:image_id");
    let flavor = st(r, "ursa:flavor_id");
    let mut v = json!({
        "id": id, "name": r["name"], "status": r["status"], "tenant_id": r["tenant_id"],
        "user_id": r["user_id"], "metadata": r.get("metadata").cloned().unwrap_or(json!({})),
        "hostId": r["hostId"], "created": r["created"], "updated": r["updated"],
        // A volume-backed server has no image (Nova says "").
        "image": if image.is_empty() { json!("") } else {
            json!({"id": image, "links": [{"rel": "bookmark", "href": format!("{}/compute/images/{image}", app.base_url)}]})
        },
        "flavor": {"id": flavor, "links": [{"rel": "bookmark", "href": format!("{}/compute/flavors/{flavor}", app.base_url)}]},
        "addresses": addresses, "accessIPv4": r.get("accessIPv4").cloned().unwrap_or(json!("")),
        "accessIPv6": r.get("accessIPv6").cloned().unwrap_or(json!("")), "links": server_links(app, id),
        "OS-DCF:diskConfig": r.get("OS-DCF:diskConfig").cloned().unwrap_or(json!("MANUAL")), "progress": 0, "OS-EXT-AZ:availability_zone": "nova",
        "config_drive": r.get("config_drive").cloned().unwrap_or(json!("")), "key_name": r.get("key_name").cloned().unwrap_or(Value::Null),
        "OS-SRV-USG:launched_at": r.get("OS-SRV-USG:launched_at").cloned().unwrap_or(Value::Null),
        "OS-SRV-USG:terminated_at": Value::Null,
        "OS-EXT-STS:task_state": r.get("OS-EXT-STS:task_state").cloned().unwrap_or(Value::Null),
        "OS-EXT-STS:vm_state": r["OS-EXT-STS:vm_state"], "OS-EXT-STS:power_state": r["OS-EXT-STS:power_state"],
        "os-extended-volumes:volumes_attached": rel.volumes.get(id).map(|a| a.iter().map(|a| {
            if mv.at(3) {
                // The root volume goes with the server when its mapping said so.
                let dot = if a.device == "/dev/vda" {
                    r.get("ursa:boot_volume").and_then(|b| b["delete_on_termination"].as_bool()).unwrap_or(false)
                } else {
                    a.delete_on_termination
                };
                json!({"id": a.volume, "delete_on_termination": dot})
            } else {
                json!({"id": a.volume})
            }
        }).collect::<Vec<_>>()).unwrap_or_default(),
    });
    if let Some(f) = r.get("fault") {
        v["fault"] = f.clone();
    }
    // Progress only while it means something (as Nova shows it).
    if !matches!(
        st(r, "status"),
        "ACTIVE" | "BUILD" | "REBUILD" | "RESIZE" | "VERIFY_RESIZE"
    ) {
        if let Some(o) = v.as_object_mut() {
            o.remove("progress");
        }
    }
    if let Some(g) = rel.groups.get(id).filter(|g| !g.is_empty()) {
        v["security_groups"] = json!(g.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>());
    }
    if auth.0.is_admin() {
        v["OS-EXT-SRV-ATTR:host"] = json!(st(r, "ursa:node"));
        v["OS-EXT-SRV-ATTR:hypervisor_hostname"] = json!(st(r, "ursa:node"));
        v["OS-EXT-SRV-ATTR:instance_name"] = json!(format!("instance-{}", &id[..8.min(id.len())]));
    }
    add_versioned(&mut v, s, auth, r, mv, shown);
    v
}

pub(crate) fn may_see(auth: &Auth, r: &Rec) -> bool {
    auth.0.is_admin() || auth.0.project_id() == Some(st(r, "tenant_id"))
}

pub(crate) async fn find_server(s: &Compute, auth: &Auth, id: &str) -> Result<Rec> {
    s.server(id)
        .await?
        .filter(|r| may_see(auth, r))
        .ok_or_else(|| Error::NotFound(format!("Instance {id} could not be found.")))
}

pub(super) async fn list_any(
    app: &AppState,
    auth: &Auth,
    raw: &Option<String>,
    detail: bool,
    mv: Mv,
) -> Result<Json<Value>> {
    let s = svc(app)?;
    let q = query(raw);
    let all = q
        .iter()
        .any(|(k, v)| k == "all_tenants" && v != "0" && v.to_lowercase() != "false");
    if all && !auth.0.is_admin() {
        return Err(Error::Forbidden(
            "Policy doesn't allow os_compute_api:servers:index:get_all_tenants to be performed."
                .into(),
        ));
    }
    // 2.38: a status Nova does not know is a 400.
    if let Some((_, st)) = q.iter().find(|(k, _)| k == "status").filter(|_| mv.at(38)) {
        const KNOWN: &[&str] = &[
            "ACTIVE",
            "BUILD",
            "DELETED",
            "ERROR",
            "HARD_REBOOT",
            "MIGRATING",
            "PASSWORD",
            "PAUSED",
            "REBOOT",
            "REBUILD",
            "RESCUE",
            "RESIZE",
            "REVERT_RESIZE",
            "SHELVED",
            "SHELVED_OFFLOADED",
            "SHUTOFF",
            "SOFT_DELETED",
            "SUSPENDED",
            "UNKNOWN",
            "VERIFY_RESIZE",
        ];
        if !KNOWN.contains(&st.to_uppercase().as_str()) {
            return Err(Error::BadRequest(format!("Invalid status value: {st}")));
        }
    }
    // What SQL narrows to: the project (or the one asked for), status,
    // flavor, image and node; a page in SQL when nothing else filters.
    let one = |k: &str| q.iter().rev().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    let filter = crate::server_table::Filter {
        project: if all {
            one("project_id").or_else(|| one("tenant_id"))
        } else {
            Some(auth.0.project_id().unwrap_or("").to_string())
        },
        status: one("status")
            .map(|v| vec![v.to_uppercase()])
            .unwrap_or_default(),
        flavor: one("flavor"),
        image: one("image"),
        node: if auth.0.is_admin() {
            one("host").or_else(|| one("node"))
        } else {
            None
        },
        ..Default::default()
    };
    let in_memory_only = q.iter().any(|(k, _)| {
        matches!(
            k.as_str(),
            "name"
                | "ip"
                | "ip6"
                | "changes-since"
                | "reservation_id"
                | "tags"
                | "tags-any"
                | "not-tags"
                | "not-tags-any"
                | "locked"
        )
    });
    let marker = one("marker");
    let limit =
        match one("limit") {
            Some(l) => Some(l.parse::<usize>().map_err(|_| {
                Error::BadRequest("Invalid input for query parameters limit.".into())
            })?),
            None => None,
        };
    let mut c = s.conn().await?;
    let (mut v, paged) = match limit {
        Some(l) if !in_memory_only => {
            let rows = crate::server_table::page(&mut c, &filter, marker.as_deref(), l)
                .await?
                .ok_or_else(|| {
                    Error::BadRequest(format!(
                        "marker [{}] not found",
                        marker.clone().unwrap_or_default()
                    ))
                })?;
            (rows, true)
        }
        _ => (crate::server_table::select(&mut c, &filter).await?, false),
    };
    drop(c);
    v.retain(|r| all || auth.0.project_id() == Some(st(r, "tenant_id")));
    // Filters Nova answers for: regular expressions on name and addresses.
    let mut res = Vec::new();
    for (k, val) in &q {
        if matches!(k.as_str(), "name" | "ip" | "ip6") {
            res.push((
                k.clone(),
                regex::Regex::new(val).map_err(|_| {
                    Error::BadRequest(format!("Invalid regular expression for {k}"))
                })?,
            ));
        }
    }
    let since = match q.iter().find(|(k, _)| k == "changes-since") {
        Some((_, v)) => Some(
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&chrono::Utc))
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f")
                        .map(|t| t.and_utc())
                })
                .map_err(|_| {
                    Error::BadRequest(format!(
                        "Invalid input for query parameters changes-since: {v}"
                    ))
                })?,
        ),
        None => None,
    };
    // Addresses are read only when a filter asks for them.
    let ports = if res.iter().any(|(k, _)| k != "name") {
        let ids: Vec<String> = v.iter().map(|r| st(r, "id").to_string()).collect();
        ursa_network::api::device_ports(&s.networks, &ids).await?
    } else {
        Vec::new()
    };
    v.retain(|r| {
        let addrs = || -> Vec<String> {
            ports
                .iter()
                .filter(|p| st(p, "device_id") == st(r, "id"))
                .flat_map(|p| {
                    p.get("fixed_ips")
                        .and_then(|f| f.as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|x| x["ip_address"].as_str().map(str::to_string))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let regex_ok = res.iter().all(|(k, re)| match k.as_str() {
            "name" => re.is_match(st(r, "name")),
            "ip" => addrs().iter().any(|a| a.contains('.') && re.is_match(a)),
            _ => addrs().iter().any(|a| a.contains(':') && re.is_match(a)),
        });
        let since_ok = since.is_none_or(|t| {
            chrono::DateTime::parse_from_rfc3339(st(r, "updated"))
                .is_ok_and(|u| u.with_timezone(&chrono::Utc) >= t)
        });
        regex_ok
            && since_ok
            && q.iter().all(|(k, val)| match k.as_str() {
                "status" => st(r, "status").eq_ignore_ascii_case(val),
                "flavor" => st(r, "ursa:flavor_id") == val,
                "image" => st(r, "ursa:image_id") == val,
                "tenant_id" | "project_id" => st(r, "tenant_id") == val,
                "host" | "node" => !auth.0.is_admin() || st(r, "ursa:node") == val,
                "reservation_id" => st(r, "reservation_id") == val,
                "availability_zone" => val == "nova",
                // 2.26's tag filters: comma-separated lists.
                "tags" | "tags-any" | "not-tags" | "not-tags-any" if mv.at(26) => {
                    let have: Vec<&str> = r
                        .get("tags")
                        .and_then(|t| t.as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str())
                        .collect();
                    let want = val.split(',').filter(|t| !t.is_empty());
                    let (mut all_in, mut any_in) = (true, false);
                    for t in want {
                        let inside = have.contains(&t);
                        all_in &= inside;
                        any_in |= inside;
                    }
                    match k.as_str() {
                        "tags" => all_in,
                        "tags-any" => any_in,
                        "not-tags" => !all_in,
                        _ => !any_in,
                    }
                }
                "locked" if mv.at(73) => {
                    let locked = r.get("locked") == Some(&json!(true));
                    locked == matches!(val.to_lowercase().as_str(), "true" | "1" | "yes" | "t")
                }
                _ => true,
            })
    });
    v.sort_by(|a, b| (st(b, "created"), st(b, "id")).cmp(&(st(a, "created"), st(a, "id"))));
    if let Some((_, m)) = q.iter().find(|(k, _)| k == "marker").filter(|_| !paged) {
        let pos = v
            .iter()
            .position(|r| st(r, "id") == m)
            .ok_or_else(|| Error::BadRequest(format!("marker [{m}] not found")))?;
        v = v.split_off(pos + 1);
    }
    let mut links = None;
    if let Some((_, l)) = q.iter().find(|(k, _)| k == "limit") {
        let l: usize = l
            .parse()
            .map_err(|_| Error::BadRequest("Invalid input for query parameters limit.".into()))?;
        if v.len() > l {
            v.truncate(l);
            if let Some(last) = v.last() {
                links = Some(
                    json!([{"rel": "next", "href": format!("{}/compute/v2.1/servers{}?limit={l}&marker={}",
                    app.base_url, if detail { "/detail" } else { "" }, st(last, "id"))}]),
                );
            }
        }
    }
    let rel = if detail {
        let ids: Vec<String> = v.iter().map(|r| st(r, "id").to_string()).collect();
        Related::gather(s, &ids).await?
    } else {
        Related::default()
    };
    let mut out = json!({"servers": v.iter().map(|r| server_view_with(app, s, auth, r, detail.then_some(Shown::List), mv, &rel)).collect::<Vec<_>>()});
    if let Some(l) = links {
        out["servers_links"] = l;
    }
    Ok(Json(out))
}

pub(super) async fn list_servers(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    list_any(&app, &auth, &raw, false, mv).await
}

pub(super) async fn list_servers_detail(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    list_any(&app, &auth, &raw, true, mv).await
}

pub(super) async fn show_server(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<Value>> {
    super::strict_query(mv, &raw)?;
    let s = svc(&app)?;
    let r = find_server(s, &auth, &last(&p)).await?;
    Ok(Json(
        json!({"server": server_view(&app, s, &auth, &r, mv).await?}),
    ))
}

/// What a server create asks for, checked before anything is made.
pub(super) struct Request {
    name: String,
    flavor: Rec,
    image_id: String,
    networks: Vec<NetReq>,
    key_name: Option<String>,
    user_data: Option<String>,
    metadata: Map<String, Value>,
    access_v4: Option<String>,
    access_v6: Option<String>,
    disk_config: Option<String>,
    admin_pass: Option<String>,
    min_count: u64,
    max_count: u64,
    /// Security group ids for the ports it makes (empty: the default).
    security_groups: Vec<String>,
    /// A server group (id, policy) from the scheduler hints.
    group: Option<crate::server_parts::GroupHint>,
    config_drive: bool,
    /// The root disk is a volume (boot from volume), as the server record's
    /// `ursa:boot_volume` keeps it: {source_type, uuid, volume_size,
    /// delete_on_termination}.
    boot_volume: Option<Value>,
    /// 2.19's description, 2.52's tags, 2.90's host name.
    description: Option<Value>,
    tags: Vec<String>,
    hostname: Option<String>,
    /// The scheduler hints as given (2.100 shows them).
    hints: Option<Value>,
    /// The availability zone asked for (2.96 shows it as pinned).
    zone: Option<String>,
    /// 2.74: the compute node an admin asked for (`host` or
    /// `hypervisor_hostname`: both name a node here).
    host: Option<String>,
}

/// One entry of a server's `networks`: a new port on a network (with an
/// address asked for, or not), or an existing port.
pub(super) enum NetReq {
    Network(String, Option<String>),
    Port(String),
}

/// 2.74's `host` and `hypervisor_hostname`: an admin puts the server on a
/// compute node of their choice (both must name the same node here).
fn requested_host(s: &Compute, auth: &Auth, b: &Rec, mv: Mv) -> Result<Option<String>> {
    let mut asked = None;
    for key in ["host", "hypervisor_hostname"] {
        let Some(v) = b.get(key) else { continue };
        if !mv.at(74) {
            return Err(super::server_versions::unexpected(key));
        }
        let name = v
            .as_str()
            .filter(|n| !n.is_empty() && n.len() <= 255)
            .ok_or_else(|| {
                Error::BadRequest(format!("Invalid input for field/attribute {key}."))
            })?;
        if !auth.0.is_admin() {
            return Err(Error::Forbidden(
                "Policy doesn't allow compute:servers:create:requested_destination to be performed."
                    .into(),
            ));
        }
        if s.node(name).is_none() {
            return Err(Error::BadRequest(format!(
                "Compute host {name} could not be found."
            )));
        }
        if asked.as_deref().is_some_and(|a| a != name) {
            return Err(Error::BadRequest(format!(
                "Compute host {name} is not the hypervisor asked for."
            )));
        }
        asked = Some(name.to_string());
    }
    Ok(asked)
}

pub(super) async fn parse_create(
    app: &AppState,
    s: &Compute,
    auth: &Auth,
    b: &Rec,
    hints: Option<&Value>,
    mv: Mv,
) -> Result<Request> {
    let name = b
        .get("name")
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= 255)
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute name.".into()))?
        .to_string();
    let flavor_ref = b
        .get("flavorRef")
        .and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.as_u64().map(|n| n.to_string()))
        })
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute flavorRef.".into()))?;
    let flavor_id = flavor_ref.rsplit('/').next().unwrap_or("").to_string();
    let flavor = find_flavor(s, auth, &flavor_id)
        .map_err(|_| Error::BadRequest(format!("Flavor {flavor_id} could not be found.")))?;
    let image_ref = b.get("imageRef").and_then(|v| v.as_str()).unwrap_or("");
    let mut image_id = image_ref.rsplit('/').next().unwrap_or("").to_string();
    if image_id.is_empty() {
        // The image may come as the boot block device instead.
        if let Some(u) = b
            .get("block_device_mapping_v2")
            .and_then(|v| v.as_array())
            .and_then(|a| {
                a.iter().find(|m| {
                    m.get("source_type").and_then(|v| v.as_str()) == Some("image")
                        && m.get("destination_type")
                            .and_then(|v| v.as_str())
                            .unwrap_or("local")
                            == "local"
                })
            })
            .and_then(|m| m.get("uuid"))
            .and_then(|v| v.as_str())
        {
            image_id = u.to_string();
        }
    }
    let boot_volume = boot_volume(s, auth, b).await?;
    if image_id.is_empty() && boot_volume.is_none() {
        return Err(Error::BadRequest(
            "Give an imageRef, or a block device mapping to boot from.".into(),
        ));
    }
    if let Some(bv) = &boot_volume {
        // The root disk is the volume: the image (if any) is its source.
        image_id = String::new();
        if bv["source_type"] == "image" {
            let img = bootable_image(app, auth, bv["uuid"].as_str().unwrap_or("")).await?;
            let min_disk = img.get("min_disk").and_then(|v| v.as_u64()).unwrap_or(0);
            let bytes = img.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
            let need = bytes.div_ceil(1 << 30).max(min_disk).max(1);
            if bv["volume_size"].as_u64().unwrap_or(0) < need {
                return Err(Error::BadRequest(format!(
                    "Volume size must be at least {need} GiB for the image."
                )));
            }
        }
    } else {
        let img = bootable_image(app, auth, &image_id).await?;
        let min_ram = img.get("min_ram").and_then(|v| v.as_u64()).unwrap_or(0);
        if flavor["ram"].as_u64().unwrap_or(0) < min_ram {
            return Err(Error::BadRequest(
                "Flavor's memory is too small for requested image.".into(),
            ));
        }
        let min_disk = img.get("min_disk").and_then(|v| v.as_u64()).unwrap_or(0);
        if flavor["disk"].as_u64().unwrap_or(0) < min_disk {
            return Err(Error::BadRequest(
                "Flavor's disk is too small for requested image.".into(),
            ));
        }
    }
    let networks = match b.get("networks") {
        None | Some(Value::String(_)) => {
            let auto = b.get("networks").and_then(|v| v.as_str());
            match auto {
                Some("none") => Vec::new(),
                _ => {
                    let nets = ursa_network::api::usable_networks(&s.networks, auth).await?;
                    if nets.len() > 1 {
                        return Err(Error::Conflict("Multiple possible networks found, use a Network ID to be more specific.".into()));
                    }
                    nets.into_iter().map(|n| NetReq::Network(n, None)).collect()
                }
            }
        }
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for n in a {
                if let Some(port) = n.get("port").filter(|v| !v.is_null()) {
                    let port = port.as_str().ok_or_else(|| {
                        Error::BadRequest("Invalid input for field/attribute port.".into())
                    })?;
                    let p = ursa_network::api::port(&s.networks, port)
                        .await?
                        .filter(|p| {
                            auth.0.is_admin() || auth.0.project_id() == Some(st(p, "project_id"))
                        })
                        .ok_or_else(|| {
                            Error::BadRequest(format!("Port {port} could not be found."))
                        })?;
                    if !st(&p, "device_id").is_empty() {
                        return Err(Error::Conflict(format!("Port {port} is still in use.")));
                    }
                    out.push(NetReq::Port(port.to_string()));
                    continue;
                }
                let id = n.get("uuid").and_then(|v| v.as_str()).ok_or_else(|| {
                    Error::BadRequest(
                        "Bad networks format: network uuid is not in proper format".into(),
                    )
                })?;
                ursa_network::api::check_network(&s.networks, auth, id)
                    .await
                    .map_err(|_| Error::BadRequest(format!("Network {id} could not be found.")))?;
                let fixed_ip = match n.get("fixed_ip") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(ip)) if ip.parse::<std::net::IpAddr>().is_ok() => {
                        Some(ip.clone())
                    }
                    Some(_) => {
                        return Err(Error::BadRequest(
                            "Invalid input for field/attribute fixed_ip.".into(),
                        ))
                    }
                };
                out.push(NetReq::Network(id.to_string(), fixed_ip));
            }
            out
        }
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute networks.".into(),
            ))
        }
    };
    let key_name = b
        .get("key_name")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    if let Some(k) = &key_name {
        if s.keypair(&auth.0.user_id, k).await?.is_none() {
            return Err(Error::BadRequest(format!("Invalid key_name provided: {k}")));
        }
    }
    let user_data = match b.get("user_data") {
        Some(Value::String(u)) => {
            base64::engine::general_purpose::STANDARD
                .decode(u.trim())
                .map_err(|_| Error::BadRequest("User data needs to be valid base 64.".into()))?;
            if u.len() > 65535 {
                return Err(Error::BadRequest("User data too large.".into()));
            }
            Some(u.clone())
        }
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute user_data.".into(),
            ))
        }
    };
    let metadata = match b.get("metadata") {
        Some(Value::Object(m)) => {
            crate::server_parts::check_metadata(m)?;
            m.clone()
        }
        None => Map::new(),
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute metadata.".into(),
            ))
        }
    };
    let access_v4 = access_ip(b, "accessIPv4")?;
    let access_v6 = access_ip(b, "accessIPv6")?;
    let disk_config = disk_config(b)?;
    let admin_pass = match b.get("adminPass") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute adminPass.".into(),
            ))
        }
    };
    let count = |k: &str| -> Result<Option<u64>> {
        match b.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|x| x.parse().ok()))
                .filter(|n| *n >= 1)
                .map(Some)
                .ok_or_else(|| {
                    Error::BadRequest(format!("Invalid input for field/attribute {k}."))
                }),
        }
    };
    let min_count = count("min_count")?.unwrap_or(1);
    let max_count = count("max_count")?.unwrap_or(min_count);
    if min_count > max_count {
        return Err(Error::BadRequest("min_count must be <= max_count".into()));
    }
    let mut security_groups = Vec::new();
    if let Some(g) = b.get("security_groups") {
        let list = g.as_array().ok_or_else(|| {
            Error::BadRequest("Invalid input for field/attribute security_groups.".into())
        })?;
        let project = auth.0.project_id().unwrap_or("");
        for x in list {
            let n = x.get("name").and_then(|v| v.as_str()).ok_or_else(|| {
                Error::BadRequest("Invalid input for field/attribute security_groups.".into())
            })?;
            let found =
                ursa_network::api::security_group_for(&s.networks, project, auth.0.is_admin(), n)
                    .await?;
            match found {
                Some(g) => security_groups.push(g),
                // The default group is made on first use.
                None if n == "default" => {}
                None => {
                    return Err(Error::BadRequest(format!(
                        "Security group {n} not found for project {project}."
                    )))
                }
            }
        }
    }
    let group = crate::server_parts::hinted_group(s, auth, hints)?;
    let config_drive = match b.get("config_drive") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(v)) => *v,
        Some(Value::String(v)) => match v.to_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            _ => {
                return Err(Error::BadRequest(
                    "Invalid input for field/attribute config_drive.".into(),
                ))
            }
        },
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute config_drive.".into(),
            ))
        }
    };
    if b.contains_key("block_device_mapping") {
        return Err(Error::BadRequest(
            "Legacy block device mappings are not supported: use block_device_mapping_v2.".into(),
        ));
    }
    let tags = match b.get("tags") {
        None => Vec::new(),
        Some(_) if !mv.at(52) => return Err(unexpected("tags")),
        Some(t) => crate::server_tags::check_tags(t)?,
    };
    let zone = match b.get("availability_zone") {
        None | Some(Value::Null) => None,
        Some(Value::String(z)) if z == "nova" => Some(z.clone()),
        Some(Value::String(z)) => {
            return Err(Error::BadRequest(format!(
                "The requested availability zone is not available: {z}"
            )))
        }
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute availability_zone.".into(),
            ))
        }
    };
    let host = requested_host(s, auth, b, mv)?;
    Ok(Request {
        host,
        description: description(b, mv)?,
        tags,
        hostname: hostname_field(b, mv)?,
        hints: hints.cloned(),
        zone,
        name,
        flavor,
        image_id,
        networks,
        key_name,
        user_data,
        metadata,
        access_v4,
        access_v6,
        disk_config,
        admin_pass,
        min_count,
        max_count,
        security_groups,
        group,
        config_drive,
        boot_volume,
    })
}

/// The root volume a server's block device mappings ask for, if any.
/// Ursa boots the image on a local disk (`source_type` image,
/// `destination_type` local: what `--image` sends), a new volume made from
/// an image (image → volume, `volume_size`), or an existing volume (volume →
/// volume); each as boot index 0. Blank, snapshot and swap disks, and more
/// than one mapping, are refused.
pub(super) async fn boot_volume(
    s: &Compute,
    auth: &Auth,
    b: &Map<String, Value>,
) -> Result<Option<Value>> {
    let Some(bdm) = b.get("block_device_mapping_v2") else {
        return Ok(None);
    };
    let bad = |what: &str| Error::BadRequest(format!("Invalid block device mapping: {what}."));
    let list = bdm.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for field/attribute block_device_mapping_v2.".into())
    })?;
    if list.len() > 1 {
        return Err(bad(
            "Ursa boots one disk (the image, or a volume); attach more volumes once the server is up",
        ));
    }
    let Some(m) = list.first() else {
        return Ok(None);
    };
    let m = m
        .as_object()
        .ok_or_else(|| bad("each mapping is an object"))?;
    let text = |k: &str| m.get(k).and_then(|v| v.as_str());
    let src = text("source_type").unwrap_or("");
    let dst = text("destination_type").unwrap_or("local");
    let boot = m.get("boot_index").and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|x| x.parse().ok()))
    });
    if boot != Some(0) {
        return Err(bad("the mapping must be the boot device (boot_index 0)"));
    }
    let uuid = text("uuid").unwrap_or("").to_string();
    let delete = match m.get("delete_on_termination") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(v)) => *v,
        Some(Value::String(v)) => matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
        Some(_) => return Err(bad("delete_on_termination is a boolean")),
    };
    match (src, dst) {
        ("image", "local") => Ok(None),
        ("image", "volume") => {
            let size = m
                .get("volume_size")
                .and_then(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|x| x.parse().ok()))
                })
                .filter(|n| (1..=1 << 20).contains(n))
                .ok_or_else(|| bad("volume_size (GiB, at least 1) is needed to make a volume"))?;
            if s.volumes.is_none() {
                return Err(bad("there is no volume service here"));
            }
            Ok(Some(
                json!({"source_type": "image", "uuid": uuid, "volume_size": size,
                           "delete_on_termination": delete}),
            ))
        }
        ("volume", "volume") => {
            let vols = s
                .volumes
                .as_ref()
                .ok_or_else(|| bad("there is no volume service here"))?;
            let vol = vols
                .record(ursa_volume::VOLUME, &uuid)
                .await?
                .filter(|v| auth.0.is_admin() || auth.0.project_id() == Some(st(v, "project_id")))
                .ok_or_else(|| Error::BadRequest(format!("Volume {uuid} could not be found.")))?;
            if st(&vol, "status") != "available" {
                return Err(Error::BadRequest(format!(
                    "Volume {uuid} status must be available, but current status is: {}",
                    st(&vol, "status")
                )));
            }
            if st(&vol, "bootable") != "true" {
                return Err(Error::BadRequest(format!(
                    "Block Device {uuid} is not bootable."
                )));
            }
            Ok(Some(
                json!({"source_type": "volume", "uuid": uuid, "volume_size": vol.get("size"),
                           "delete_on_termination": delete}),
            ))
        }
        _ => Err(bad(&format!(
            "{src} → {dst} is not supported (image → local, image → volume, volume → volume are)"
        ))),
    }
}

pub(super) async fn create_server(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    req_id: RequestId,
    bytes: Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let project = project(&auth)?;
    let top: Value = parse_body(&bytes)?;
    let b = body_obj(&bytes, "server")?;
    let hints = top
        .get("os:scheduler_hints")
        .or_else(|| top.get("OS-SCH-HNT:scheduler_hints"))
        .or_else(|| b.get("os:scheduler_hints"));
    let req = parse_create(&app, s, &auth, &b, hints, mv).await?;
    if req.max_count > 1
        && req
            .boot_volume
            .as_ref()
            .is_some_and(|v| v["source_type"] == "volume")
    {
        return Err(Error::BadRequest(
            "One volume cannot boot more than one server (max_count is above 1).".into(),
        ));
    }
    let ram = req.flavor["ram"].as_u64().unwrap_or(0);
    let vcpus = req.flavor["vcpus"].as_u64().unwrap_or(0);
    // Quotas: instances, cores, RAM, for as many as must be made.
    let (instances, cores, mem) = usage(s, &project).await?;
    let lim = crate::admin::limits(s, &project);
    let under = |key: &str, want: i64| {
        let l = lim.get(key).and_then(|v| v.as_i64()).unwrap_or(-1);
        l < 0 || want <= l
    };
    let fits = |n: i64| {
        under("instances", instances + n)
            && under("cores", cores + n * vcpus as i64)
            && under("ram", mem + n * ram as i64)
    };
    if !fits(req.min_count as i64) {
        return Err(Error::Forbidden(
            "Quota exceeded for instances, cores or ram.".into(),
        ));
    }
    let count = (req.min_count..=req.max_count)
        .rev()
        .find(|n| fits(*n as i64))
        .unwrap_or(req.min_count);
    let reservation = format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let admin_pass = req.admin_pass.clone().unwrap_or_else(|| {
        use rand::distributions::{Alphanumeric, DistString};
        Alphanumeric.sample_string(&mut rand::thread_rng(), 12)
    });
    let mut first = None;
    for i in 1..=count {
        let name = if count > 1 {
            format!("{}-{i}", req.name)
        } else {
            req.name.clone()
        };
        let id = create_one(
            s,
            &auth,
            &req,
            (&name, i - 1),
            &project,
            &reservation,
            &req_id,
        )
        .await?;
        first.get_or_insert(id);
    }
    let id = first.unwrap_or_default();
    if b.get("return_reservation_id") == Some(&json!(true)) {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "reservation_id": reservation })),
        )
            .into_response());
    }
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(
            json!({"server": {"id": id, "links": server_links(&app, &id),
            "OS-DCF:diskConfig": req.disk_config.as_deref().unwrap_or("MANUAL"),
            "security_groups": [{"name": "default"}], "adminPass": admin_pass}}),
        ),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/compute/v2.1/servers/{id}", app.base_url)) {
        resp.headers_mut().insert("location", v);
    }
    Ok(resp)
}

/// Stores one server, makes its ports on the node the scheduler chose,
/// and starts its boot; returns its id.
pub(super) async fn create_one(
    s: &Compute,
    auth: &Auth,
    req: &Request,
    (name, index): (&str, u64),
    project: &str,
    reservation: &str,
    req_id: &RequestId,
) -> Result<String> {
    let ram = req.flavor["ram"].as_u64().unwrap_or(0);
    let vcpus = req.flavor["vcpus"].as_u64().unwrap_or(0);
    let node = match &req.host {
        Some(h) => s.schedule_on(ram, vcpus, h).await?,
        None => s.schedule_in_group(ram, vcpus, req.group.as_ref()).await?,
    };
    let id = uuid::Uuid::new_v4().to_string();
    let host_id = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(format!("{project}{node}").as_bytes());
        d.iter()
            .take(28)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let t = now();
    let mut rec = json!({
        "id": id, "name": name, "status": "BUILD", "tenant_id": project, "user_id": auth.0.user_id,
        "metadata": req.metadata, "hostId": host_id, "created": t, "updated": t,
        "key_name": req.key_name, "OS-EXT-STS:vm_state": "building", "OS-EXT-STS:task_state": "spawning",
        "OS-EXT-STS:power_state": 0, "ursa:node": node, "ursa:flavor_id": st(&req.flavor, "id"),
        "ursa:image_id": req.image_id, "ursa:boot_volume": req.boot_volume, "ursa:user_data": req.user_data,
        "accessIPv4": req.access_v4.clone().unwrap_or_default(),
        "accessIPv6": req.access_v6.clone().unwrap_or_default(),
        "OS-DCF:diskConfig": req.disk_config.as_deref().unwrap_or("MANUAL"),
        "reservation_id": reservation, "ursa:password": "",
        "config_drive": if req.config_drive { "True" } else { "" },
        "ursa:group": req.group.as_ref().map(|g| g.id.clone()),
        "ursa:flavor": flavor_snapshot(&req.flavor), "ursa:launch_index": index,
        "description": req.description.clone().unwrap_or(Value::Null), "tags": req.tags,
        "ursa:scheduler_hints": req.hints.clone().unwrap_or(json!({})),
        "ursa:availability_zone": req.zone,
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    if let Some(h) = &req.hostname {
        rec.insert("hostname".into(), json!(h));
    }
    crate::actions::record_action(&mut rec, "create", req_id, auth);
    store_within_quota(s, &rec, project, ram, vcpus).await?;
    // Ports first (netd makes the taps while the agent makes the disk).
    for net in &req.networks {
        let made = match net {
            NetReq::Network(net, ip) => {
                ursa_network::api::create_server_port(
                    &s.networks,
                    auth,
                    net,
                    ip.as_deref(),
                    &req.security_groups,
                    &id,
                    &node,
                )
                .await
            }
            NetReq::Port(p) => {
                ursa_network::api::bind_server_port(&s.networks, auth, p, &id, &node).await
            }
        };
        if let Err(e) = made {
            s.release(&id, &node).await;
            let _ = s.delete_server(&id).await;
            return Err(match e {
                Error::Conflict(m) => Error::BadRequest(format!("Could not allocate a port: {m}")),
                other => other,
            });
        }
    }
    s.spawn_boot(rec);
    Ok(id)
}

pub(super) async fn update_server(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let id = last(&p);
    find_server(s, &auth, &id).await?;
    let b = body_obj(&bytes, "server")?;
    let name = match b.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n.len() <= 255 => Some(n.clone()),
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute name.".into(),
            ))
        }
        None => None,
    };
    let ip4 = access_ip(&b, "accessIPv4")?;
    let ip6 = access_ip(&b, "accessIPv6")?;
    let dc = disk_config(&b)?;
    let desc = description(&b, mv)?;
    let host = hostname_field(&b, mv)?;
    // 2.104: unpin (null) or pin the server to its availability zone (the
    // one zone, "nova", is the only one it can be pinned to).
    let pin = match b.get("pinned_availability_zone") {
        None => None,
        Some(_) if !mv.at(104) => return Err(super::unexpected("pinned_availability_zone")),
        Some(Value::Null) => Some(Value::Null),
        Some(Value::String(z)) if z == "nova" => Some(json!(z)),
        Some(Value::String(z)) => {
            return Err(Error::BadRequest(format!(
                "The requested availability zone is not available: {z}"
            )))
        }
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute pinned_availability_zone.".into(),
            ))
        }
    };
    let r = s
        .update(&id, move |r| {
            if let Some(z) = pin.clone() {
                r.insert("ursa:availability_zone".into(), z);
            }
            if let Some(n) = name.clone() {
                r.insert("name".into(), json!(n));
            }
            if let Some(d) = desc.clone() {
                r.insert("description".into(), d);
            }
            if let Some(h) = host.clone() {
                r.insert("hostname".into(), json!(h));
            }
            if let Some(v) = ip4.clone() {
                r.insert("accessIPv4".into(), json!(v));
            }
            if let Some(v) = ip6.clone() {
                r.insert("accessIPv6".into(), json!(v));
            }
            if let Some(v) = dc.clone() {
                r.insert("OS-DCF:diskConfig".into(), json!(v));
            }
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("Instance {id} could not be found.")))?;
    Ok(Json(
        json!({"server": update_view(server_view(&app, s, &auth, &r, mv).await?, mv)}),
    ))
}

pub(super) async fn delete_server(
    State(app): State<AppState>,
    auth: Auth,
    req_id: RequestId,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let id = last(&p);
    let r = find_server(s, &auth, &id).await?;
    if r.get("locked") == Some(&json!(true)) && !auth.0.is_admin() {
        return Err(Error::Conflict(format!("Instance {id} is locked")));
    }
    let a2 = Auth(auth.0.clone());
    let r = s
        .update(&id, move |r| {
            r.insert("OS-EXT-STS:task_state".into(), json!("deleting"));
            crate::actions::record_action(r, "delete", &req_id, &a2);
            Ok(())
        })
        .await?;
    if let Some(r) = r {
        s.spawn_delete(r);
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `accessIPv4` / `accessIPv6`: an address of that family, or empty.
pub(crate) fn access_ip(b: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) if v.is_empty() => Ok(Some(String::new())),
        Some(Value::String(v)) => {
            let norm = match key {
                "accessIPv4" => v.parse::<std::net::Ipv4Addr>().ok().map(|a| a.to_string()),
                _ => v.parse::<std::net::Ipv6Addr>().ok().map(|a| a.to_string()),
            };
            if let Some(n) = norm {
                Ok(Some(n))
            } else {
                Err(Error::BadRequest(format!(
                    "Invalid input for field/attribute {key}. Value: {v}."
                )))
            }
        }
        Some(_) => Err(Error::BadRequest(format!(
            "Invalid input for field/attribute {key}."
        ))),
    }
}

/// `OS-DCF:diskConfig`: AUTO or MANUAL.
pub(crate) fn disk_config(b: &Map<String, Value>) -> Result<Option<String>> {
    match b.get("OS-DCF:diskConfig") {
        None => Ok(None),
        Some(Value::String(v)) if v == "AUTO" || v == "MANUAL" => Ok(Some(v.clone())),
        Some(_) => Err(Error::BadRequest(
            "Invalid input for field/attribute OS-DCF:diskConfig.".into(),
        )),
    }
}
