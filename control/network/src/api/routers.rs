//! Routers.

use super::*;

pub(super) async fn find_router(c: &mut sqlx::AnyConnection, auth: &Auth, id: &str) -> Result<Rec> {
    rows::ROUTERS
        .get(c, id)
        .await?
        .filter(|r| owns(auth, r))
        .ok_or_else(|| not_found("Router", id))
}

pub(super) async fn list_routers(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    // A project's own (by index); an admin's every one.
    let mut c = svc(&app).conn().await?;
    let routers = if is_admin(&auth) {
        rows::ROUTERS.all(&mut c).await?
    } else {
        rows::ROUTERS
            .where_eq(&mut c, "project_id", project(&auth))
            .await?
    };
    let ids: Vec<String> = routers.iter().map(|r| st(r, "id").to_string()).collect();
    let ports = port_table::of_devices(&mut c, &ids).await?;
    drop(c);
    let items: Vec<Rec> = {
        let m = app.identity.model();
        routers
            .iter()
            .map(|r| router_view(svc(&app), &m, &auth, r, &ports))
            .collect()
    };
    list_response(&app, raw, "routers", ROUTER_FIELDS, items)
}

pub(super) async fn show_router(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let mut c = svc(&app).conn().await?;
    let ports = router_ports(&mut c, &id).await?;
    let r = find_router(&mut c, &auth, &id).await?;
    drop(c);
    let m = app.identity.model();
    Ok(Json(
        json!({"router": show_fields(&raw, router_view(svc(&app), &m, &auth, &r, &ports))}),
    ))
}

pub(super) fn service_port(
    project: &str,
    net: &str,
    owner: &str,
    device: &str,
    mac: String,
    ips: Vec<Value>,
) -> Rec {
    let mut p = standard(project);
    for (k, v) in [
        ("name", json!("")),
        ("description", json!("")),
        ("network_id", json!(net)),
        ("mac_address", json!(mac)),
        ("admin_state_up", json!(true)),
        ("device_owner", json!(owner)),
        ("device_id", json!(device)),
        ("fixed_ips", Value::Array(ips)),
        ("allowed_address_pairs", json!([])),
        ("extra_dhcp_opts", json!([])),
        ("security_groups", json!([])),
        ("port_security_enabled", json!(false)),
        ("binding:host_id", json!("")),
        ("binding:profile", json!({})),
        ("binding:vnic_type", json!("normal")),
        ("binding:vif_details", json!({})),
        ("ip_allocation", json!("immediate")),
        ("propagate_uplink_status", json!(false)),
        ("dns_name", json!("")),
    ] {
        p.insert(k.into(), v);
    }
    p
}

/// A router's own ports (its interfaces and gateway), from their table.
pub(super) async fn router_ports(c: &mut sqlx::AnyConnection, rid: &str) -> Result<Vec<Rec>> {
    Ok(port_table::of_device(c, rid)
        .await?
        .into_iter()
        .filter(|p| matches!(st(p, "device_owner"), OWNER_ROUTER_IF | OWNER_ROUTER_GW))
        .collect())
}

/// What setting a gateway does to ports, decided against the model by
/// [`plan_gateway`] and done in the write by [`apply_gateway`].
#[derive(Default)]
pub(super) struct GatewayPlan {
    /// The old gateway port to remove.
    drop_old: Option<String>,
    /// The network of a new gateway port, its requested addresses, and
    /// the network's subnets.
    make: Option<(String, Option<Vec<IpRequest>>, port_table::Subnets)>,
    router: String,
}

/// Sets, replaces or clears a router's external gateway in `r`; `ports`
/// are the router's own ports, `has_fips` whether floating IPs go through
/// it.
pub(super) async fn plan_gateway(
    c: &mut sqlx::AnyConnection,
    auth: &Auth,
    r: &mut Rec,
    g: &Value,
    ports: &[Rec],
    has_fips: bool,
) -> Result<GatewayPlan> {
    let rid = st(r, "id").to_string();
    let mut plan = GatewayPlan {
        router: rid.clone(),
        ..Default::default()
    };
    let old_port = ports
        .iter()
        .find(|p| st(p, "device_owner") == OWNER_ROUTER_GW)
        .cloned();
    let clear = g.is_null()
        || g.as_object()
            .is_some_and(|o| o.is_empty() || o.get("network_id").is_none_or(|v| v.is_null()));
    if clear {
        if has_fips {
            return Err(Error::Conflict(format!(
                "Gateway cannot be updated for router {rid}, since a gateway to an external network is required by one or more floating IPs."
            )));
        }
        plan.drop_old = old_port.map(|p| st(&p, "id").to_string());
        r.insert("external_gateway_info".into(), Value::Null);
        return Ok(plan);
    }
    let o = g.as_object().ok_or_else(|| {
        Error::BadRequest("Invalid input for external_gateway_info: an object is expected.".into())
    })?;
    check_keys(o, &["network_id", "enable_snat", "external_fixed_ips"])?;
    let net_id = opt_str(o, "network_id")?.unwrap_or_default();
    let n = rows::NETWORKS
        .get(c, &net_id)
        .await?
        .ok_or_else(|| not_found("Network", &net_id))?;
    if n["router:external"] != true {
        return Err(Error::BadRequest(format!(
            "Bad router request: Network {net_id} is not an external network."
        )));
    }
    let snat = opt_bool(o, "enable_snat")?;
    if snat.is_some() && !is_admin(auth) {
        return Err(Error::Forbidden(
            "rule:update_router:external_gateway_info:enable_snat is disallowed by policy".into(),
        ));
    }
    let fixed = match o.get("external_fixed_ips") {
        Some(v) if !v.is_null() => {
            if !is_admin(auth) {
                return Err(Error::Forbidden("rule:update_router:external_gateway_info:external_fixed_ips is disallowed by policy".into()));
            }
            Some(parse_fixed_ips(v)?)
        }
        _ => None,
    };
    let same_net = old_port
        .as_ref()
        .is_some_and(|p| st(p, "network_id") == net_id);
    if let Some(p) = &old_port {
        if !same_net || fixed.is_some() {
            if !same_net && has_fips {
                return Err(Error::Conflict(format!(
                    "Gateway cannot be updated for router {rid}, since a gateway to an external network is required by one or more floating IPs."
                )));
            }
            plan.drop_old = Some(st(p, "id").to_string());
        }
    }
    if !same_net || fixed.is_some() {
        let subnets = port_table::Subnets::load(c, &net_id, fixed.as_deref()).await?;
        plan.make = Some((net_id.clone(), fixed, subnets));
    }
    let prev_snat = r
        .get("external_gateway_info")
        .and_then(|g| g.get("enable_snat"))
        .and_then(|v| v.as_bool());
    r.insert(
        "external_gateway_info".into(),
        json!({"network_id": net_id, "enable_snat": snat.or(if same_net { prev_snat } else { None }).unwrap_or(true)}),
    );
    Ok(plan)
}

/// Removes the old gateway port and makes the new one (its addresses as
/// requested, else one from the first IPv4 subnet with room).
pub(super) async fn apply_gateway(w: &mut NetWriter<'_>, plan: GatewayPlan) -> Result<()> {
    if let Some(old) = &plan.drop_old {
        port_table::delete(w.tx(), old).await?;
    }
    let Some((net_id, fixed, subnets)) = plan.make else {
        return Ok(());
    };
    let port = service_port(
        "",
        &net_id,
        OWNER_ROUTER_GW,
        &plan.router,
        String::new(),
        vec![],
    );
    if fixed.is_some() {
        port_table::create(w.tx(), &subnets, port, fixed.as_deref()).await?;
        return Ok(());
    }
    // An external network without an IPv4 subnet still takes a gateway,
    // without addresses (as Neutron does).
    if !subnets.list.iter().any(|s| s["ip_version"] == 4) {
        port_table::create(w.tx(), &subnets, port, None).await?;
        return Ok(());
    }
    for s in subnets.list.iter().filter(|s| s["ip_version"] == 4) {
        let req = [IpRequest {
            subnet_id: Some(st(s, "id").into()),
            ip_address: None,
        }];
        match port_table::create(w.tx(), &subnets, port.clone(), Some(&req)).await {
            Err(Error::Conflict(_)) => continue,
            other => return other.map(|_| ()),
        }
    }
    Err(Error::BadRequest(format!(
        "Bad router request: No IPv4 subnet on external network {net_id}."
    )))
}

pub(super) async fn create_router(
    State(app): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let b = body_obj(&body, "router")?;
    check_keys(
        &b,
        &[
            "name",
            "description",
            "admin_state_up",
            "external_gateway_info",
            "distributed",
            "ha",
            "availability_zone_hints",
            "flavor_id",
            "tenant_id",
            "project_id",
        ],
    )?;
    for k in ["distributed", "ha"] {
        if b.contains_key(k) && !is_admin(&auth) {
            return Err(Error::Forbidden(format!(
                "rule:create_router:{k} is disallowed by policy"
            )));
        }
        if opt_bool(&b, k)? == Some(true) {
            return Err(Error::BadRequest(format!(
                "Routers here are neither distributed nor HA ({k})."
            )));
        }
    }
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    let owner = owner_for(a, &b)?;
    Networks::check_row_quota(&mut w, &owner, "router", 1).await?;
    let (r, mut ops, plan) = {
        let mut r = standard(&owner);
        r.insert(
            "name".into(),
            json!(opt_str(&b, "name")?.unwrap_or_default()),
        );
        r.insert(
            "description".into(),
            json!(opt_str(&b, "description")?.unwrap_or_default()),
        );
        r.insert(
            "admin_state_up".into(),
            json!(opt_bool(&b, "admin_state_up")?.unwrap_or(true)),
        );
        r.insert("status".into(), json!("ACTIVE"));
        r.insert("external_gateway_info".into(), Value::Null);
        r.insert("routes".into(), json!([]));
        r.insert("distributed".into(), json!(false));
        r.insert("ha".into(), json!(false));
        r.insert(
            "availability_zone_hints".into(),
            b.get("availability_zone_hints")
                .cloned()
                .unwrap_or(json!([])),
        );
        r.insert("availability_zones".into(), json!(["nova"]));
        r.insert("flavor_id".into(), Value::Null);
        let plan = match b.get("external_gateway_info") {
            Some(g) => plan_gateway(w.conn(), a, &mut r, g, &[], false).await?,
            None => GatewayPlan::default(),
        };
        (r, Vec::new(), plan)
    };
    apply_gateway(&mut w, plan).await?;
    ops.push(put(ROUTER, &r));
    let ports = router_ports(w.conn(), st(&r, "id")).await?;
    w.commit(&ops).await?;
    let m = app.identity.model();
    Ok(created(
        "router",
        Value::Object(router_view(svc(&app), &m, &auth, &r, &ports)),
    ))
}

/// Subnets a router is attached to (interfaces and gateway).
pub(super) async fn router_subnets(c: &mut sqlx::AnyConnection, ports: &[Rec]) -> Result<Vec<Rec>> {
    let ids: Vec<String> = ports.iter().flat_map(fixed_ips).map(|(s, _)| s).collect();
    Ok(rows::SUBNETS.by_ids(c, &ids).await?.into_values().collect())
}

/// The routes asked for, each through one of `attached` (the router's
/// subnets, [`router_subnets`]).
pub(super) fn parse_extra_routes(attached: &[Rec], v: &Value) -> Result<Vec<Value>> {
    let a = v
        .as_array()
        .ok_or_else(|| Error::BadRequest("Invalid input for routes: a list is expected.".into()))?;
    let nets: Vec<ipnet::IpNet> = attached
        .iter()
        .filter_map(|s| st(s, "cidr").parse().ok())
        .collect();
    let mut out: Vec<Value> = Vec::new();
    for r in a {
        let o = r.as_object().ok_or_else(|| {
            Error::BadRequest("Invalid input for routes: objects are expected.".into())
        })?;
        check_keys(o, &["destination", "nexthop"])?;
        let d = opt_str(o, "destination")?.unwrap_or_default();
        let n = opt_str(o, "nexthop")?.unwrap_or_default();
        let dn: ipnet::IpNet = d.parse().map_err(|_| {
            Error::BadRequest(format!(
                "Invalid input for routes. Reason: '{d}' is not a valid IP subnet."
            ))
        })?;
        let nh = ipam::parse_ip(&n, "routes")?;
        if !nets.iter().any(|x| x.contains(&nh)) {
            return Err(Error::BadRequest(format!(
                "Invalid format for routes: [{{'destination': '{d}', 'nexthop': '{n}'}}], the nexthop is not connected with router"
            )));
        }
        let item = json!({"destination": dn.trunc().to_string(), "nexthop": nh.to_string()});
        if !out.contains(&item) {
            out.push(item);
        }
    }
    if out.len() > 30 {
        return Err(Error::BadRequest("Too many routes (30 at most).".into()));
    }
    Ok(out)
}

pub(super) async fn update_router(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "router")?;
    check_keys(
        &b,
        &[
            "name",
            "description",
            "admin_state_up",
            "external_gateway_info",
            "routes",
            "distributed",
            "ha",
        ],
    )?;
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    let ports = router_ports(w.conn(), &id).await?;
    let has_fips = rows::FIPS.count(w.conn(), "router_id", &id).await? > 0;
    let mut r = find_router(w.conn(), a, &id).await?;
    let attached = router_subnets(w.conn(), &ports).await?;
    let (r, plan) = {
        if_match.check(&r)?;
        for k in ["distributed", "ha"] {
            if b.contains_key(k) && !is_admin(a) {
                return Err(Error::Forbidden(format!(
                    "rule:update_router:{k} is disallowed by policy"
                )));
            }
            if opt_bool(&b, k)? == Some(true) {
                return Err(Error::BadRequest(format!(
                    "Routers here are neither distributed nor HA ({k})."
                )));
            }
        }
        for k in ["name", "description"] {
            if let Some(v) = opt_str(&b, k)? {
                r.insert(k.into(), json!(v));
            }
        }
        if let Some(v) = opt_bool(&b, "admin_state_up")? {
            r.insert("admin_state_up".into(), json!(v));
        }
        let plan = match b.get("external_gateway_info") {
            Some(g) => plan_gateway(w.conn(), a, &mut r, g, &ports, has_fips).await?,
            None => GatewayPlan::default(),
        };
        if let Some(v) = b.get("routes") {
            let routes = if v.is_null() {
                Vec::new()
            } else {
                parse_extra_routes(&attached, v)?
            };
            r.insert("routes".into(), Value::Array(routes));
        }
        bump(&mut r);
        (r, plan)
    };
    apply_gateway(&mut w, plan).await?;
    let ports = router_ports(w.conn(), &id).await?;
    w.commit(&[put(ROUTER, &r)]).await?;
    let m = app.identity.model();
    Ok(Json(
        json!({"router": router_view(svc(&app), &m, &auth, &r, &ports)}),
    ))
}

pub(super) async fn delete_router(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    let ports = router_ports(w.conn(), &id).await?;
    let has_fips = rows::FIPS.count(w.conn(), "router_id", &id).await? > 0;
    let cur = find_router(w.conn(), a, &id).await?;
    let ops = {
        if_match.check(&cur)?;
        if ports
            .iter()
            .any(|p| st(p, "device_owner") == OWNER_ROUTER_IF)
        {
            return Err(Error::Conflict(format!("Router {id} still has ports")));
        }
        if has_fips {
            return Err(Error::Conflict(format!(
                "Router {id} still has floating IPs associated"
            )));
        }
        let mut ops: Vec<Op> = ports
            .iter()
            .filter(|p| st(p, "device_owner") == OWNER_ROUTER_GW)
            .map(|p| Op::delete(PORT, st(p, "id")))
            .collect();
        ops.push(Op::delete(ROUTER, &id));
        ops
    };
    w.commit(&ops).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub(super) fn interface_info(r: &Rec, p: &Rec) -> Value {
    let subnets: Vec<String> = fixed_ips(p).into_iter().map(|(s, _)| s).collect();
    json!({
        "id": st(r, "id"),
        "tenant_id": st(r, "project_id"),
        "project_id": st(r, "project_id"),
        "port_id": st(p, "id"),
        "network_id": st(p, "network_id"),
        "subnet_id": subnets.first().cloned().unwrap_or_default(),
        "subnet_ids": subnets,
    })
}

pub(super) fn interface_target(body: &Bytes) -> Result<(Option<String>, Option<String>)> {
    let v: Value = parse_body(body)?;
    let o = v
        .as_object()
        .ok_or_else(|| Error::BadRequest("Invalid input: a JSON object is expected.".into()))?;
    let sid = opt_str(o, "subnet_id")?;
    let pid = opt_str(o, "port_id")?;
    Ok((sid, pid))
}

pub(super) async fn add_interface(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let (sid, pid) = interface_target(&body)?;
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    let ports = router_ports(w.conn(), &id).await?;
    let given = match &pid {
        Some(pid) => port_table::get(w.conn(), pid).await?,
        None => None,
    };
    let r = find_router(w.conn(), a, &id).await?;
    let planned = {
        let attached = router_subnets(w.conn(), &ports).await?;
        let overlaps = |cidr: &str| -> Option<String> {
            let n: ipnet::IpNet = cidr.parse().ok()?;
            attached
                .iter()
                .find(|x| {
                    st(x, "cidr")
                        .parse::<ipnet::IpNet>()
                        .is_ok_and(|o| o.contains(&n.network()) || n.contains(&o.network()))
                })
                .map(|x| st(x, "cidr").to_string())
        };
        match (sid.clone(), pid.clone()) {
            (Some(_), Some(_)) => Err(Error::BadRequest(
                "Bad router request: Cannot specify both subnet-id and port-id".into(),
            )),
            (None, None) => Err(Error::BadRequest(
                "Bad router request: Either subnet_id or port_id must be specified".into(),
            )),
            (Some(sid), None) => {
                let sub = find_subnet(w.conn(), a, &sid).await?;
                let net = rows::NETWORKS
                    .get(w.conn(), st(&sub, "network_id"))
                    .await?
                    .ok_or_else(|| not_found("Network", st(&sub, "network_id")))?;
                if net["router:external"] == true && !is_admin(a) {
                    return Err(Error::BadRequest(format!("Bad router request: Router {id} cannot be connected to external network subnet {sid}.")));
                }
                let gw = sub
                    .get("gateway_ip")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| {
                        Error::BadRequest(format!(
                            "Bad router request: Subnet {sid} does not have a gateway IP."
                        ))
                    })?
                    .to_string();
                if attached.iter().any(|x| st(x, "id") == sid) {
                    return Err(Error::BadRequest(format!(
                        "Bad router request: Router already has a port on subnet {sid}."
                    )));
                }
                if let Some(c) = overlaps(st(&sub, "cidr")) {
                    return Err(Error::BadRequest(format!(
                            "Bad router request: Cidr {} of subnet {sid} overlaps with cidr {c} of another subnet of the router.",
                            st(&sub, "cidr")
                        )));
                }
                let net_id = st(&sub, "network_id").to_string();
                let req = IpRequest {
                    subnet_id: Some(sid.clone()),
                    ip_address: Some(gw),
                };
                let subnets =
                    port_table::Subnets::load(w.conn(), &net_id, Some(std::slice::from_ref(&req)))
                        .await?;
                let p = service_port(
                    st(&r, "project_id"),
                    &net_id,
                    OWNER_ROUTER_IF,
                    &id,
                    String::new(),
                    vec![],
                );
                Ok((r, p, Some((subnets, req))))
            }
            (None, Some(pid)) => {
                let mut p = find_port(w.conn(), a, &pid, given).await?;
                if !st(&p, "device_id").is_empty() || !st(&p, "device_owner").is_empty() {
                    return Err(Error::Conflict(format!(
                            "Unable to complete operation on port {pid} for network {}. Port already has an attached device {}.",
                            st(&p, "network_id"),
                            st(&p, "device_id")
                        )));
                }
                let ips = fixed_ips(&p);
                if ips.is_empty() {
                    return Err(Error::BadRequest(format!(
                        "Bad router request: Router port {pid} must have at least one fixed IP."
                    )));
                }
                let ids: Vec<String> = ips.iter().map(|(s2, _)| s2.clone()).collect();
                let subs = rows::SUBNETS.by_ids(w.conn(), &ids).await?;
                for (s2, _) in &ips {
                    if let Some(sub) = subs.get(s2) {
                        if let Some(c) = overlaps(st(sub, "cidr")) {
                            return Err(Error::BadRequest(format!(
                                    "Bad router request: Cidr {} of subnet {s2} overlaps with cidr {c} of another subnet of the router.",
                                    st(sub, "cidr")
                                )));
                        }
                    }
                }
                p.insert("device_owner".into(), json!(OWNER_ROUTER_IF));
                p.insert("device_id".into(), json!(id));
                p.insert("security_groups".into(), json!([]));
                p.insert("allowed_address_pairs".into(), json!([]));
                p.insert("port_security_enabled".into(), json!(false));
                bump(&mut p);
                Ok((r, p, None))
            }
        }
    };
    let (r, p, new) = planned?;
    let p = match new {
        Some((subnets, req)) => port_table::create(w.tx(), &subnets, p, Some(&[req])).await?,
        None => {
            port_table::put(w.tx(), &p).await?;
            p
        }
    };
    w.commit(&[]).await?;
    Ok(Json(interface_info(&r, &p)))
}

pub(super) async fn remove_interface(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let (sid, pid) = interface_target(&body)?;
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    let ports = router_ports(w.conn(), &id).await?;
    // The floating IPs through this router, and the ports they point at.
    let fips = rows::FIPS.where_eq(w.conn(), "router_id", &id).await?;
    let fip_ports: Vec<String> = fips.iter().map(|f| st(f, "port_id").to_string()).collect();
    let mut fip_targets = Vec::new();
    for pid in &fip_ports {
        fip_targets.extend(port_table::get(w.conn(), pid).await?);
    }
    let r = find_router(w.conn(), a, &id).await?;
    if let (Some(sid), None) = (&sid, &pid) {
        find_subnet(w.conn(), a, sid).await?;
    }
    let planned = {
        let ifaces: Vec<&Rec> = ports
            .iter()
            .filter(|p| st(p, "device_owner") == OWNER_ROUTER_IF)
            .collect();
        let port = match (&sid, &pid) {
            (None, None) => {
                return Err(Error::BadRequest(
                    "Bad router request: Either subnet_id or port_id must be specified".into(),
                ))
            }
            (_, Some(pid)) => {
                let p = ifaces.iter().find(|p| st(p, "id") == pid).ok_or_else(|| {
                    Error::NotFound(format!(
                        "Router {id} does not have an interface with id {pid}"
                    ))
                })?;
                if let Some(sid) = &sid {
                    if !fixed_ips(p).iter().any(|(s2, _)| s2 == sid) {
                        return Err(Error::Conflict(format!(
                            "Subnet {sid} is not on port {pid}."
                        )));
                    }
                }
                (*p).clone()
            }
            (Some(sid), None) => ifaces
                .iter()
                .find(|p| fixed_ips(p).iter().any(|(s2, _)| s2 == sid))
                .map(|p| (*p).clone())
                .ok_or_else(|| {
                    Error::NotFound(format!("Router {id} has no interface on subnet {sid}"))
                })?,
        };
        let on: Vec<String> = fixed_ips(&port).into_iter().map(|(s, _)| s).collect();
        let fip_uses = fips.iter().any(|f| {
            fip_targets
                .iter()
                .find(|p| st(p, "id") == st(f, "port_id"))
                .is_some_and(|p| {
                    fixed_ips(p)
                        .iter()
                        .any(|(s2, ip)| on.contains(s2) && ip == st(f, "fixed_ip_address"))
                })
        });
        if fip_uses {
            return Err(Error::Conflict(format!(
                    "Router interface for subnet {} on router {id} cannot be deleted, as it is required by one or more floating IPs.",
                    on.first().cloned().unwrap_or_default()
                )));
        }
        Ok::<_, Error>((interface_info(&r, &port), st(&port, "id").to_string()))
    };
    let (info, port): (Value, String) = planned?;
    w.commit(&[Op::delete(PORT, &port)]).await?;
    Ok(Json(info))
}

pub(super) async fn change_extraroutes(
    app: &AppState,
    auth: &Auth,
    id: &str,
    body: &Bytes,
    add: bool,
) -> Result<Json<Value>> {
    write_access(auth)?;
    let b = body_obj(body, "router")?;
    check_keys(&b, &["routes"])?;
    let s = svc(app);
    let mut w = s.write().await?;
    let ports = router_ports(w.conn(), id).await?;
    let mut r = find_router(w.conn(), auth, id).await?;
    let attached = router_subnets(w.conn(), &ports).await?;
    let (ops, r) = w.plan(|_| {
        let given =
            parse_extra_routes(&attached, b.get("routes").unwrap_or(&json!([]))).or_else(|e| {
                if add {
                    Err(e)
                } else {
                    Ok(b.get("routes")
                        .and_then(|v| v.as_array())
                        .cloned()
                        .unwrap_or_default())
                }
            })?;
        let mut routes = r
            .get("routes")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        if add {
            for x in given {
                if !routes.contains(&x) {
                    routes.push(x);
                }
            }
        } else {
            routes.retain(|x| !given.contains(x));
        }
        r.insert("routes".into(), Value::Array(routes));
        bump(&mut r);
        Ok((vec![put(ROUTER, &r)], r))
    })?;
    w.commit(&ops).await?;
    let m = app.identity.model();
    Ok(Json(
        json!({"router": router_view(svc(app), &m, auth, &r, &ports)}),
    ))
}

pub(super) async fn add_extraroutes(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    change_extraroutes(&app, &auth, &id, &body, true).await
}

pub(super) async fn remove_extraroutes(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    change_extraroutes(&app, &auth, &id, &body, false).await
}
