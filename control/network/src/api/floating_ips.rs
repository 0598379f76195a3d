//! Floating IPs.

use super::*;

/// Floating IPs as Neutron shows them, with `port_details` (the
/// `fip-port-details` extension: the associated port's name, network,
/// MAC, state, status and device, read from the port table when shown).
async fn with_port_details(app: &AppState, auth: &Auth, fips: Vec<Rec>) -> Result<Vec<Rec>> {
    let s = svc(app);
    let mut c = s.conn().await?;
    let mut out = Vec::with_capacity(fips.len());
    for f in fips {
        let mut v = fip_view(&f);
        let details = match st(&f, "port_id") {
            "" => Value::Null,
            pid => match port_table::get(&mut c, pid).await? {
                Some(p) => {
                    let pv = port_view(s, auth, &p);
                    json!({"name": pv.get("name"), "network_id": pv.get("network_id"),
                           "mac_address": pv.get("mac_address"),
                           "admin_state_up": pv.get("admin_state_up"), "status": pv.get("status"),
                           "device_id": pv.get("device_id"), "device_owner": pv.get("device_owner")})
                }
                None => Value::Null,
            },
        };
        v.insert("port_details".into(), details);
        out.push(v);
    }
    Ok(out)
}

pub(super) async fn find_fip(c: &mut sqlx::AnyConnection, auth: &Auth, id: &str) -> Result<Rec> {
    rows::FIPS
        .get(c, id)
        .await?
        .filter(|f| owns(auth, f))
        .ok_or_else(|| not_found("Floating IP", id))
}

pub(super) async fn list_fips(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    // A project's own (by index); an admin's every one.
    let items = {
        let mut c = svc(&app).conn().await?;
        if is_admin(&auth) {
            rows::FIPS.all(&mut c).await?
        } else {
            rows::FIPS
                .where_eq(&mut c, "project_id", project(&auth))
                .await?
        }
    };
    let items = with_port_details(&app, &auth, items).await?;
    list_response(&app, raw, "floatingips", FIP_FIELDS, items)
}

pub(super) async fn show_fip(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let f = find_fip(&mut *svc(&app).conn().await?, &auth, &id).await?;
    let v = with_port_details(&app, &auth, vec![f]).await?.remove(0);
    Ok(Json(json!({"floatingip": show_fields(&raw, v)})))
}

/// What associating needs from the tables: the port, the router
/// interfaces on its subnets and their routers, and the port's floating
/// IPs.
pub(super) struct AssocPorts {
    port: Option<Rec>,
    router_ifaces: Vec<Rec>,
    routers: Vec<Rec>,
    fips: Vec<Rec>,
}

pub(super) async fn assoc_ports(c: &mut sqlx::AnyConnection, port_id: &str) -> Result<AssocPorts> {
    let port = port_table::get(c, port_id).await?;
    let mut router_ifaces = Vec::new();
    if let Some(p) = &port {
        for (sid, _) in fixed_ips(p) {
            router_ifaces.extend(
                port_table::on_subnet(c, &sid)
                    .await?
                    .into_iter()
                    .filter(|q| st(q, "device_owner") == OWNER_ROUTER_IF),
            );
        }
    }
    let ids: Vec<String> = router_ifaces
        .iter()
        .map(|q| st(q, "device_id").to_string())
        .collect();
    let routers = rows::ROUTERS.where_in(c, "id", &ids).await?;
    Ok(AssocPorts {
        port,
        router_ifaces,
        routers,
        fips: rows::FIPS.where_eq(c, "port_id", port_id).await?,
    })
}

/// Points a floating IP at a port (and one of its addresses), through the
/// router that joins the port's subnet to the floating IP's network.
pub(super) fn associate(
    auth: &Auth,
    f: &mut Rec,
    port_id: &str,
    fixed: Option<String>,
    pre: AssocPorts,
) -> Result<()> {
    let p = pre
        .port
        .filter(|p| owns(auth, p))
        .ok_or_else(|| not_found("Port", port_id))?;
    let v4: Vec<(String, String)> = fixed_ips(&p)
        .into_iter()
        .filter(|(_, ip)| ip.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    let (sid, ip) = match fixed {
        Some(want) => {
            ipam::parse_ip(&want, "fixed_ip_address")?;
            v4.iter()
                .find(|(_, ip)| *ip == want)
                .cloned()
                .ok_or_else(|| {
                    Error::BadRequest(format!(
                        "Bad floatingip request: Port {port_id} does not have fixed ip {want}."
                    ))
                })?
        }
        None => v4.first().cloned().ok_or_else(|| {
            Error::BadRequest(format!(
                "Bad floatingip request: Port {port_id} does not have any IPv4 address."
            ))
        })?,
    };
    let ext = st(f, "floating_network_id").to_string();
    let router = pre.routers.iter().find(|r| {
        r.get("external_gateway_info")
            .and_then(|g| g.get("network_id"))
            .and_then(|v| v.as_str())
            == Some(ext.as_str())
            && pre.router_ifaces.iter().any(|q| {
                st(q, "device_id") == st(r, "id")
                    && st(q, "device_owner") == OWNER_ROUTER_IF
                    && fixed_ips(q).iter().any(|(s2, _)| *s2 == sid)
            })
    });
    let router = router.ok_or_else(|| {
        Error::NotFound(format!(
            "External network {ext} is not reachable from subnet {sid}. Therefore, cannot associate Port {port_id} with a Floating IP."
        ))
    })?;
    if let Some(other) = pre.fips.iter().find(|o| {
        st(o, "id") != st(f, "id")
            && st(o, "fixed_ip_address") == ip
            && st(o, "floating_network_id") == ext
    }) {
        return Err(Error::Conflict(format!(
            "Cannot associate floating IP {} ({}) with port {port_id} using fixed IP {ip}, as that fixed IP already has a floating IP on external network {ext}.",
            st(f, "floating_ip_address"),
            st(other, "id")
        )));
    }
    f.insert("port_id".into(), json!(port_id));
    f.insert("fixed_ip_address".into(), json!(ip));
    f.insert("router_id".into(), json!(st(router, "id")));
    Ok(())
}

pub(super) async fn create_fip(
    State(app): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let b = body_obj(&body, "floatingip")?;
    check_keys(
        &b,
        &[
            "floating_network_id",
            "floating_ip_address",
            "subnet_id",
            "port_id",
            "fixed_ip_address",
            "description",
            "tenant_id",
            "project_id",
            "dns_domain",
            "dns_name",
            "qos_policy_id",
        ],
    )?;
    let s = svc(&app);
    let a = &auth;
    let owner = owner_for(a, &b)?;
    let net_id = opt_str(&b, "floating_network_id")?.ok_or_else(|| {
        Error::BadRequest("Invalid input: 'floating_network_id' is required.".into())
    })?;
    let want = opt_str(&b, "floating_ip_address")?;
    let sub = opt_str(&b, "subnet_id")?;
    let target = opt_str(&b, "port_id")?;
    let mut w = s.write().await?;
    let pre = match &target {
        Some(pid) => Some(assoc_ports(w.conn(), pid).await?),
        None => None,
    };
    Networks::check_row_quota(&mut w, &owner, "floatingip", 1).await?;
    let n = find_network(w.conn(), a, &net_id).await?;
    if n["router:external"] != true {
        return Err(Error::BadRequest(format!(
            "Bad floatingip request: Network {net_id} is not a valid external network."
        )));
    }
    if let Some(sid) = &sub {
        let s2 = rows::SUBNETS
            .get(w.conn(), sid)
            .await?
            .ok_or_else(|| not_found("Subnet", sid))?;
        if st(&s2, "network_id") != net_id {
            return Err(Error::BadRequest(format!(
                "Bad floatingip request: Subnet {sid} is not on network {net_id}."
            )));
        }
    }
    let req = IpRequest {
        subnet_id: sub.clone(),
        ip_address: want.clone(),
    };
    let subnets =
        port_table::Subnets::load(w.conn(), &net_id, Some(std::slice::from_ref(&req))).await?;
    let mut f = {
        let mut f = standard(&owner);
        f.insert(
            "description".into(),
            json!(opt_str(&b, "description")?.unwrap_or_default()),
        );
        f.insert("floating_network_id".into(), json!(net_id));
        f.insert("fixed_ip_address".into(), Value::Null);
        f.insert("port_id".into(), Value::Null);
        f.insert("router_id".into(), Value::Null);
        f.insert("dns_domain".into(), json!(""));
        f.insert("dns_name".into(), json!(""));
        f.insert("port_forwardings".into(), json!([]));
        f.insert("qos_policy_id".into(), Value::Null);
        if let (Some(pid), Some(pre)) = (&target, pre) {
            associate(a, &mut f, pid, opt_str(&b, "fixed_ip_address")?, pre)?;
        }
        f
    };
    let port = service_port("", &net_id, OWNER_FIP, st(&f, "id"), String::new(), vec![]);
    let made = if want.is_some() || sub.is_some() {
        let req = IpRequest {
            subnet_id: sub.clone(),
            ip_address: want.clone(),
        };
        port_table::create(w.tx(), &subnets, port, Some(&[req])).await?
    } else {
        let mut got = Err(Error::Conflict(format!(
            "No more IP addresses available on network {net_id}."
        )));
        for s2 in subnets.list.iter().filter(|x| x["ip_version"] == 4) {
            let req = [IpRequest {
                subnet_id: Some(st(s2, "id").into()),
                ip_address: None,
            }];
            got = port_table::create(w.tx(), &subnets, port.clone(), Some(&req)).await;
            if !matches!(got, Err(Error::Conflict(_))) {
                break;
            }
        }
        got?
    };
    let addr = fixed_ips(&made)
        .first()
        .map(|(_, ip)| ip.clone())
        .ok_or_else(|| Error::Conflict("No address could be allocated.".into()))?;
    f.insert("floating_ip_address".into(), json!(addr));
    w.commit(&[put(FIP, &f)]).await?;
    let v = with_port_details(&app, &auth, vec![f]).await?.remove(0);
    Ok(created("floatingip", Value::Object(v)))
}

pub(super) async fn update_fip(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "floatingip")?;
    check_keys(
        &b,
        &[
            "port_id",
            "fixed_ip_address",
            "description",
            "qos_policy_id",
        ],
    )?;
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    let mut pre = match b.get("port_id") {
        Some(Value::String(pid)) => Some(assoc_ports(w.conn(), pid).await?),
        _ => None,
    };
    let mut f = find_fip(w.conn(), a, &id).await?;
    let (ops, f) = w.plan(|_| {
        if_match.check(&f)?;
        if let Some(v) = opt_str(&b, "description")? {
            f.insert("description".into(), json!(v));
        }
        match b.get("port_id") {
            Some(Value::Null) => disassociate(&mut f),
            Some(Value::String(pid)) => {
                let pre = pre
                    .take()
                    .ok_or_else(|| Error::Internal("port not read".into()))?;
                associate(a, &mut f, pid, opt_str(&b, "fixed_ip_address")?, pre)?
            }
            Some(_) => return Err(Error::BadRequest("Invalid input for port_id.".into())),
            None => {}
        }
        bump(&mut f);
        Ok((vec![put(FIP, &f)], f))
    })?;
    w.commit(&ops).await?;
    let v = with_port_details(&app, &auth, vec![f]).await?.remove(0);
    Ok(Json(json!({"floatingip": v})))
}

pub(super) async fn delete_fip(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    let ports = port_table::of_device(w.conn(), &id).await?;
    let cur = find_fip(w.conn(), a, &id).await?;
    if_match.check(&cur)?;
    let mut ops: Vec<Op> = ports
        .iter()
        .filter(|p| st(p, "device_owner") == OWNER_FIP)
        .map(|p| Op::delete(PORT, st(p, "id")))
        .collect();
    ops.push(Op::delete(FIP, &id));
    w.commit(&ops).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
