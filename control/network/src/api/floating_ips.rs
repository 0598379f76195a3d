//! Floating IPs.

use super::*;

pub(super) fn find_fip(m: &Model, auth: &Auth, id: &str) -> Result<Rec> {
    rec(m, FIP, id)
        .filter(|f| owns(auth, f))
        .ok_or_else(|| not_found("Floating IP", id))
}

pub(super) async fn list_fips(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let items: Vec<Rec> = {
        let m = app.identity.model();
        recs(&m, FIP)
            .filter(|f| owns(&auth, f))
            .map(fip_view)
            .collect()
    };
    list_response(&app, raw, "floatingips", FIP_FIELDS, items)
}

pub(super) async fn show_fip(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let f = find_fip(&m, &auth, &id)?;
    Ok(Json(json!({"floatingip": show_fields(&raw, fip_view(&f))})))
}

/// Points a floating IP at a port (and one of its addresses), through the
/// router that joins the port's subnet to the floating IP's network.
pub(super) fn associate(
    m: &Model,
    auth: &Auth,
    f: &mut Rec,
    port_id: &str,
    fixed: Option<String>,
) -> Result<()> {
    let p = find_port(m, auth, port_id)?;
    if !owns(auth, &p) {
        return Err(not_found("Port", port_id));
    }
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
    let router = recs(m, ROUTER).find(|r| {
        r.get("external_gateway_info")
            .and_then(|g| g.get("network_id"))
            .and_then(|v| v.as_str())
            == Some(ext.as_str())
            && recs(m, PORT).any(|q| {
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
    if let Some(other) = recs(m, FIP).find(|o| {
        st(o, "id") != st(f, "id")
            && st(o, "port_id") == port_id
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
    let f = s
        .change(|m| {
            let owner = owner_for(a, &b)?;
            let net_id = opt_str(&b, "floating_network_id")?.ok_or_else(|| {
                Error::BadRequest("Invalid input: 'floating_network_id' is required.".into())
            })?;
            let n = rec(m, NETWORK, &net_id)
                .filter(|n| net_visible(a, n))
                .ok_or_else(|| not_found("Network", &net_id))?;
            if n["router:external"] != true {
                return Err(Error::BadRequest(format!(
                    "Bad floatingip request: Network {net_id} is not a valid external network."
                )));
            }
            Networks::check_quota(m, &owner, "floatingip", 1)?;
            let mac = fresh_mac(m);
            let want = opt_str(&b, "floating_ip_address")?;
            let sub = opt_str(&b, "subnet_id")?;
            let ips = if want.is_some() || sub.is_some() {
                if let Some(sid) = &sub {
                    let s2 = rec(m, SUBNET, sid).ok_or_else(|| not_found("Subnet", sid))?;
                    if st(&s2, "network_id") != net_id {
                        return Err(Error::BadRequest(format!(
                            "Bad floatingip request: Subnet {sid} is not on network {net_id}."
                        )));
                    }
                }
                allocate(
                    m,
                    &net_id,
                    &mac,
                    Some(&[IpRequest {
                        subnet_id: sub.clone(),
                        ip_address: want.clone(),
                    }]),
                    None,
                )?
            } else {
                let mut got = Err(Error::Conflict(format!(
                    "No more IP addresses available on network {net_id}."
                )));
                for s2 in crate::subnets_of(m, &net_id)
                    .into_iter()
                    .filter(|x| x["ip_version"] == 4)
                {
                    got = allocate(
                        m,
                        &net_id,
                        &mac,
                        Some(&[IpRequest {
                            subnet_id: Some(st(s2, "id").into()),
                            ip_address: None,
                        }]),
                        None,
                    );
                    if got.is_ok() {
                        break;
                    }
                }
                got?
            };
            let (sid, addr) = ips
                .first()
                .map(|v| {
                    (
                        v["subnet_id"].as_str().unwrap_or("").to_string(),
                        v["ip_address"].as_str().unwrap_or("").to_string(),
                    )
                })
                .ok_or_else(|| Error::Conflict("No address could be allocated.".into()))?;
            let _ = sid;
            let mut f = standard(&owner);
            f.insert(
                "description".into(),
                json!(opt_str(&b, "description")?.unwrap_or_default()),
            );
            f.insert("floating_network_id".into(), json!(net_id));
            f.insert("floating_ip_address".into(), json!(addr));
            f.insert("fixed_ip_address".into(), Value::Null);
            f.insert("port_id".into(), Value::Null);
            f.insert("router_id".into(), Value::Null);
            f.insert("dns_domain".into(), json!(""));
            f.insert("dns_name".into(), json!(""));
            f.insert("port_forwardings".into(), json!([]));
            f.insert("qos_policy_id".into(), Value::Null);
            if let Some(pid) = opt_str(&b, "port_id")? {
                associate(m, a, &mut f, &pid, opt_str(&b, "fixed_ip_address")?)?;
            }
            let port = service_port("", &net_id, OWNER_FIP, st(&f, "id"), mac, ips);
            Ok((vec![put(PORT, &port), put(FIP, &f)], f))
        })
        .await?;
    Ok(created("floatingip", Value::Object(fip_view(&f))))
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
    let f = s
        .change(|m| {
            let mut f = find_fip(m, a, &id)?;
            if_match.check(&f)?;
            if let Some(v) = opt_str(&b, "description")? {
                f.insert("description".into(), json!(v));
            }
            match b.get("port_id") {
                Some(Value::Null) => disassociate(&mut f),
                Some(Value::String(pid)) => {
                    associate(m, a, &mut f, pid, opt_str(&b, "fixed_ip_address")?)?
                }
                Some(_) => return Err(Error::BadRequest("Invalid input for port_id.".into())),
                None => {}
            }
            bump(&mut f);
            Ok((vec![put(FIP, &f)], f))
        })
        .await?;
    Ok(Json(json!({"floatingip": fip_view(&f)})))
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
    s.change(|m| {
        let cur = find_fip(m, a, &id)?;
        if_match.check(&cur)?;
        let mut ops: Vec<Op> = recs(m, PORT)
            .filter(|p| st(p, "device_id") == id && st(p, "device_owner") == OWNER_FIP)
            .map(|p| Op::delete(PORT, st(p, "id")))
            .collect();
        ops.push(Op::delete(FIP, &id));
        Ok((ops, ()))
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
