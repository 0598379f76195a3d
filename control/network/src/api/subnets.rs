//! Subnets.

use super::*;

pub(super) const SUBNET_CREATE: &[&str] = &[
    "name",
    "description",
    "network_id",
    "ip_version",
    "cidr",
    "gateway_ip",
    "allocation_pools",
    "dns_nameservers",
    "host_routes",
    "enable_dhcp",
    "ipv6_ra_mode",
    "ipv6_address_mode",
    "tenant_id",
    "project_id",
    "subnetpool_id",
    "segment_id",
    "service_types",
    "use_default_subnetpool",
    "prefixlen",
    "dns_publish_fixed_ip",
];

/// Subnets of shared networks are everyone's to see; those of an external
/// network only its owner's (Neutron without subnet-external-network).
pub(super) async fn subnet_visible(
    c: &mut sqlx::AnyConnection,
    auth: &Auth,
    s: &Rec,
) -> Result<bool> {
    if owns(auth, s) {
        return Ok(true);
    }
    let n = rows::NETWORKS.get(c, st(s, "network_id")).await?;
    Ok(n.is_some_and(|n| n["shared"] == true))
}

pub(super) async fn find_subnet(c: &mut sqlx::AnyConnection, auth: &Auth, id: &str) -> Result<Rec> {
    match rows::SUBNETS.get(c, id).await? {
        Some(s) if subnet_visible(c, auth, &s).await? => Ok(s),
        _ => Err(not_found("Subnet", id)),
    }
}

pub(super) async fn list_subnets(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    // A project's own and those of shared networks (by index); an admin's
    // every one.
    let mut c = svc(&app).conn().await?;
    let subnets = if is_admin(&auth) {
        rows::SUBNETS.all(&mut c).await?
    } else {
        rows::select(
            &mut c,
            "SELECT body FROM net_subnets WHERE project_id = $1 \
             UNION SELECT s.body FROM net_subnets s JOIN net_networks n \
             ON n.id = s.network_id WHERE n.shared = 'true'",
            &[project(&auth)],
        )
        .await?
    };
    drop(c);
    let items = subnets.iter().map(public).collect();
    list_response(&app, raw, "subnets", SUBNET_FIELDS, items)
}

pub(super) async fn show_subnet(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let s = find_subnet(&mut *svc(&app).conn().await?, &auth, &id).await?;
    Ok(Json(json!({"subnet": show_fields(&raw, public(&s))})))
}

pub(super) fn parse_pools(v: &Value, net: &ipnet::IpNet) -> Result<ipam::Pools> {
    let a = v.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for allocation_pools: a list is expected.".into())
    })?;
    let mut out = Vec::new();
    for p in a {
        let (Some(s), Some(e)) = (
            p.get("start").and_then(|x| x.as_str()),
            p.get("end").and_then(|x| x.as_str()),
        ) else {
            return Err(Error::BadRequest(
                "Invalid input for allocation_pools: each pool needs start and end.".into(),
            ));
        };
        let (s, e) = (
            ipam::parse_ip(s, "allocation_pools")?,
            ipam::parse_ip(e, "allocation_pools")?,
        );
        if ipam::version(&s) != ipam::version(&net.network())
            || ipam::version(&e) != ipam::version(&net.network())
        {
            return Err(Error::BadRequest(
                "Invalid input for allocation_pools: the IP version does not match the subnet."
                    .into(),
            ));
        }
        out.push((ipam::to_u128(s), ipam::to_u128(e)));
    }
    Ok(out)
}

pub(super) fn pools_json(p: &ipam::Pools, version: u8) -> Value {
    Value::Array(
        p.iter()
            .map(|(s, e)| json!({"start": ipam::from_u128(*s, version).to_string(), "end": ipam::from_u128(*e, version).to_string()}))
            .collect(),
    )
}

pub(super) fn parse_dns(v: &Value, version: u8) -> Result<Value> {
    let a = v.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for dns_nameservers: a list is expected.".into())
    })?;
    let mut seen = Vec::new();
    for x in a {
        let s = x.as_str().ok_or_else(|| {
            Error::BadRequest("Invalid input for dns_nameservers: strings expected.".into())
        })?;
        let ip = ipam::parse_ip(s, "dns_nameservers")?;
        let _ = version;
        if seen.contains(&ip) {
            return Err(Error::BadRequest(format!(
                "Invalid input for dns_nameservers. Reason: Duplicate nameserver '{s}'."
            )));
        }
        seen.push(ip);
    }
    if seen.len() > 5 {
        return Err(Error::BadRequest(
            "Quota exceeded for resources: too many DNS nameservers (5 at most).".into(),
        ));
    }
    Ok(v.clone())
}

pub(super) fn parse_routes(v: &Value, version: u8) -> Result<Value> {
    let a = v.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for host_routes: a list is expected.".into())
    })?;
    let mut out: Vec<Value> = Vec::new();
    for r in a {
        let d = r.get("destination").and_then(|x| x.as_str()).unwrap_or("");
        let n = r.get("nexthop").and_then(|x| x.as_str()).unwrap_or("");
        let dn: ipnet::IpNet = d.parse().map_err(|_| {
            Error::BadRequest(format!(
                "Invalid input for destination. Reason: '{d}' is not a valid IP subnet."
            ))
        })?;
        let nh = ipam::parse_ip(n, "nexthop")?;
        if ipam::version(&dn.network()) != version || ipam::version(&nh) != version {
            return Err(Error::BadRequest(
                "Invalid input: the route's IP version does not match the subnet.".into(),
            ));
        }
        let item = json!({"destination": dn.trunc().to_string(), "nexthop": nh.to_string()});
        if out.contains(&item) {
            return Err(Error::BadRequest(format!(
                "Invalid input: duplicate host route {d} via {n}."
            )));
        }
        out.push(item);
    }
    if out.len() > 20 {
        return Err(Error::BadRequest(
            "Too many host routes (20 at most).".into(),
        ));
    }
    Ok(Value::Array(out))
}

pub(super) fn gateway_of(v: &Value, net: &ipnet::IpNet) -> Result<Option<std::net::IpAddr>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            let ip = ipam::parse_ip(s, "gateway_ip")?;
            if ipam::version(&ip) != ipam::version(&net.network()) {
                return Err(Error::BadRequest(format!(
                    "Invalid input for gateway_ip: {s} is not an address of {net}'s IP version."
                )));
            }
            if net.contains(&ip) {
                let (lo, hi) = ipam::host_range(net);
                let x = ipam::to_u128(ip);
                if x < lo || x > hi {
                    return Err(Error::BadRequest(format!("Invalid input for operation: Gateway is not valid on subnet. Reason: {s} is the network or broadcast address of {net}.")));
                }
            }
            Ok(Some(ip))
        }
        _ => Err(Error::BadRequest(
            "Invalid input for gateway_ip: a string or null is expected.".into(),
        )),
    }
}

pub(super) fn check_v6_modes(b: &Rec, version: u8) -> Result<()> {
    let ra = opt_str(b, "ipv6_ra_mode")?;
    let addr = opt_str(b, "ipv6_address_mode")?;
    for v in [&ra, &addr].into_iter().flatten() {
        if !["slaac", "dhcpv6-stateful", "dhcpv6-stateless"].contains(&v.as_str()) {
            return Err(Error::BadRequest(format!(
                "Invalid input for operation: '{v}' is not a valid IPv6 mode."
            )));
        }
        if version != 6 {
            return Err(Error::BadRequest("Invalid input for operation: ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False or the subnet is IPv4.".into()));
        }
    }
    if let (Some(r), Some(a)) = (&ra, &addr) {
        if r != a {
            return Err(Error::BadRequest(format!("Invalid input for operation: ipv6_ra_mode set to '{r}' with ipv6_address_mode set to '{a}' is not valid.")));
        }
    }
    Ok(())
}

/// A new subnet from the request, checked inside the write `w` (overlaps,
/// its pool's prefixes and the quota against what is stored).
pub(super) async fn plan_subnet(
    w: &mut NetWriter<'_>,
    auth: &Auth,
    b: &Rec,
) -> Result<(Vec<Op>, Rec)> {
    check_keys(b, SUBNET_CREATE)?;
    let net_id = opt_str(b, "network_id")?
        .ok_or_else(|| Error::BadRequest("Invalid input: 'network_id' is required.".into()))?;
    let n = find_network(w.conn(), auth, &net_id).await?;
    let owner = owner_for(auth, b)?;
    if !owns(auth, &n) {
        return Err(Error::Forbidden(format!(
            "Creating a subnet on network {net_id} is disallowed by policy"
        )));
    }
    // From a subnet pool (a prefix it hands out), or as given.
    let from_pool = super::subnet_pools::cidr_from_pool(w, auth, b).await?;
    let net = match &from_pool {
        Some((net, _)) => *net,
        None => {
            let cidr_s = opt_str(b, "cidr")?.ok_or_else(|| {
                Error::BadRequest(
                    "Bad subnets request: a cidr must be specified in the absence of a subnet pool."
                        .into(),
                )
            })?;
            ipam::parse_cidr(&cidr_s)?
        }
    };
    let version = ipam::version(&net.network());
    let asked = opt_int(b, "ip_version")?.unwrap_or(4);
    if asked != 4 && asked != 6 {
        return Err(Error::BadRequest(format!(
            "Invalid input for ip_version. Reason: {asked} is not in [4, 6]."
        )));
    }
    if asked as u8 != version {
        return Err(Error::BadRequest(
            "Invalid input for operation: the cidr's IP version does not match ip_version.".into(),
        ));
    }
    for other in crate::subnets_of(w.conn(), &net_id).await? {
        if let Ok(o) = st(&other, "cidr").parse::<ipnet::IpNet>() {
            if o.contains(&net.network()) || net.contains(&o.network()) {
                return Err(Error::BadRequest(format!(
                    "Invalid input for operation: Requested subnet with cidr: {net} for network: {net_id} overlaps with another subnet."
                )));
            }
        }
    }
    check_v6_modes(b, version)?;
    Networks::check_row_quota(w, &owner, "subnet", 1).await?;
    let gateway = match b.get("gateway_ip") {
        None => Some(ipam::from_u128(ipam::host_range(&net).0, version)),
        Some(v) => gateway_of(v, &net)?,
    };
    let g = gateway.map(ipam::to_u128);
    let pools = match b.get("allocation_pools") {
        Some(v) if !v.is_null() => {
            let p = parse_pools(v, &net)?;
            ipam::check_pools(&net, &p, g)?;
            p
        }
        _ => ipam::default_pools(&net, g),
    };
    let mut s = standard(&owner);
    s.insert(
        "name".into(),
        json!(opt_str(b, "name")?.unwrap_or_default()),
    );
    s.insert(
        "description".into(),
        json!(opt_str(b, "description")?.unwrap_or_default()),
    );
    s.insert("network_id".into(), json!(net_id));
    s.insert("ip_version".into(), json!(version));
    s.insert("cidr".into(), json!(net.to_string()));
    s.insert("gateway_ip".into(), json!(gateway.map(|x| x.to_string())));
    s.insert("allocation_pools".into(), pools_json(&pools, version));
    s.insert(
        "dns_nameservers".into(),
        match b.get("dns_nameservers") {
            Some(v) if !v.is_null() => parse_dns(v, version)?,
            _ => json!([]),
        },
    );
    s.insert(
        "host_routes".into(),
        match b.get("host_routes") {
            Some(v) if !v.is_null() => parse_routes(v, version)?,
            _ => json!([]),
        },
    );
    s.insert(
        "enable_dhcp".into(),
        json!(opt_bool(b, "enable_dhcp")?.unwrap_or(true)),
    );
    s.insert("ipv6_ra_mode".into(), json!(opt_str(b, "ipv6_ra_mode")?));
    s.insert(
        "ipv6_address_mode".into(),
        json!(opt_str(b, "ipv6_address_mode")?),
    );
    s.insert(
        "subnetpool_id".into(),
        from_pool.map_or(Value::Null, |(_, id)| json!(id)),
    );
    s.insert("segment_id".into(), Value::Null);
    s.insert("service_types".into(), json!([]));
    s.insert("dns_publish_fixed_ip".into(), json!(false));
    Ok((vec![put(SUBNET, &s)], s))
}

/// Keeps the network's DHCP port holding one address on each IPv4 subnet
/// that has DHCP on (the address netd answers from).
pub(super) async fn sync_dhcp_port(s: &Networks, net_id: &str) {
    if let Err(e) = try_sync_dhcp_port(s, net_id).await {
        tracing::warn!(network = net_id, error = %e, "could not give the network's DHCP port an address");
    }
}

async fn try_sync_dhcp_port(s: &Networks, net_id: &str) -> Result<()> {
    let mut w = s.write().await?;
    let port = port_table::of_network_owned(w.conn(), net_id, &[OWNER_DHCP])
        .await?
        .into_iter()
        .next();
    let Some(n) = rows::NETWORKS.get(w.conn(), net_id).await? else {
        return Ok(());
    };
    let subnets = port_table::Subnets::load(w.conn(), net_id, None).await?;
    let (p, keep, missing) = {
        let want: Vec<&Rec> = subnets
            .list
            .iter()
            .filter(|x| x["ip_version"] == 4 && x["enable_dhcp"] == true)
            .collect();
        let have: Vec<(String, String)> = port.as_ref().map(fixed_ips).unwrap_or_default();
        let keep: Vec<Value> = have
            .iter()
            .filter(|(sid, _)| want.iter().any(|w| st(w, "id") == sid))
            .map(|(sid, ip)| json!({"subnet_id": sid, "ip_address": ip}))
            .collect();
        let missing: Vec<IpRequest> = want
            .iter()
            .filter(|w| !have.iter().any(|(sid, _)| sid == st(w, "id")))
            .map(|w| IpRequest {
                subnet_id: Some(st(w, "id").to_string()),
                ip_address: None,
            })
            .collect();
        if missing.is_empty() && keep.len() == have.len() {
            return Ok(());
        }
        let p = match &port {
            Some(p) => p.clone(),
            None => service_port(
                st(&n, "project_id"),
                net_id,
                OWNER_DHCP,
                &format!("dhcp-{net_id}"),
                String::new(),
                Vec::new(),
            ),
        };
        (p, keep, missing)
    };
    let id = st(&p, "id").to_string();
    if keep.is_empty() && missing.is_empty() {
        if port.is_some() {
            port_table::delete(w.tx(), &id).await?;
        }
        return w.commit(&[]).await;
    }
    let mut p = p;
    if port.is_some() {
        port_table::release(w.tx(), &id).await?;
    } else {
        let mac = port_table::fresh_mac(w.conn(), net_id).await?;
        p.insert("mac_address".into(), json!(mac));
    }
    p.insert("fixed_ips".into(), Value::Array(keep.clone()));
    port_table::claim(w.tx(), &subnets.list, &p).await?;
    let mut ips = keep;
    if !missing.is_empty() {
        let mac = st(&p, "mac_address").to_string();
        ips.extend(port_table::allocate(w.tx(), &subnets, &id, &mac, Some(&missing)).await?);
    }
    p.insert("fixed_ips".into(), Value::Array(ips));
    bump(&mut p);
    port_table::put(w.tx(), &p).await?;
    w.commit(&[]).await
}

pub(super) async fn create_subnets(
    State(app): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let (items, bulk) = body_many(&body, "subnet", "subnets")?;
    let mut out = Vec::new();
    for b in items {
        let mut w = s.write().await?;
        let (ops, sub) = plan_subnet(&mut w, &auth, &b).await?;
        w.commit(&ops).await?;
        sync_dhcp_port(s, crate::st(&sub, "network_id")).await;
        out.push(Value::Object(public(&sub)));
    }
    Ok(if bulk {
        created("subnets", Value::Array(out))
    } else {
        created("subnet", out.pop().unwrap_or(Value::Null))
    })
}

pub(super) async fn update_subnet(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "subnet")?;
    for k in [
        "cidr",
        "ip_version",
        "network_id",
        "ipv6_ra_mode",
        "ipv6_address_mode",
        "subnetpool_id",
        "tenant_id",
        "project_id",
    ] {
        if b.contains_key(k) {
            return Err(Error::BadRequest(format!(
                "Cannot update read-only attribute {k}"
            )));
        }
    }
    check_keys(
        &b,
        &[
            "name",
            "description",
            "gateway_ip",
            "allocation_pools",
            "dns_nameservers",
            "host_routes",
            "enable_dhcp",
            "service_types",
            "segment_id",
            "dns_publish_fixed_ip",
        ],
    )?;
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    // The ports already holding a new gateway address.
    let gw_holders = match b.get("gateway_ip").and_then(|v| v.as_str()) {
        Some(g) => match g.parse::<std::net::IpAddr>() {
            Ok(ip) => port_table::with_address(w.conn(), &ip.to_string()).await?,
            Err(_) => Vec::new(),
        },
        None => Vec::new(),
    };
    let mut sub = find_subnet(w.conn(), a, &id).await?;
    let (ops, sub) = w.plan(|_| {
        if_match.check(&sub)?;
        if !owns(a, &sub) {
            return Err(Error::Forbidden(format!(
                "Subnet {id}: changing it is disallowed by policy"
            )));
        }
        let net: ipnet::IpNet = st(&sub, "cidr")
            .parse()
            .map_err(|_| Error::Internal("bad stored cidr".into()))?;
        let version = ipam::version(&net.network());
        for k in ["name", "description"] {
            if let Some(v) = opt_str(&b, k)? {
                sub.insert(k.into(), json!(v));
            }
        }
        if let Some(v) = opt_bool(&b, "enable_dhcp")? {
            sub.insert("enable_dhcp".into(), json!(v));
        }
        if let Some(v) = b.get("dns_nameservers") {
            sub.insert(
                "dns_nameservers".into(),
                if v.is_null() {
                    json!([])
                } else {
                    parse_dns(v, version)?
                },
            );
        }
        if let Some(v) = b.get("host_routes") {
            sub.insert(
                "host_routes".into(),
                if v.is_null() {
                    json!([])
                } else {
                    parse_routes(v, version)?
                },
            );
        }
        let gw = match b.get("gateway_ip") {
            Some(v) => gateway_of(v, &net)?,
            None => sub
                .get("gateway_ip")
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse().ok()),
        };
        let pools = match b.get("allocation_pools") {
            Some(v) if !v.is_null() => parse_pools(v, &net)?,
            _ => crate::pools_of(&sub),
        };
        ipam::check_pools(&net, &pools, gw.map(ipam::to_u128))?;
        if b.contains_key("gateway_ip") {
            if let Some(g) = gw {
                let used_by_port = gw_holders.iter().any(|p| {
                    st(p, "device_owner") != OWNER_ROUTER_IF
                        && fixed_ips(p)
                            .iter()
                            .any(|(sid, ip)| sid == &id && ip == &g.to_string())
                });
                if used_by_port {
                    return Err(Error::Conflict(format!(
                        "Gateway ip {g} conflicts with an address in use on subnet {id}."
                    )));
                }
            }
            sub.insert("gateway_ip".into(), json!(gw.map(|x| x.to_string())));
        }
        sub.insert("allocation_pools".into(), pools_json(&pools, version));
        bump(&mut sub);
        Ok((vec![put(SUBNET, &sub)], sub))
    })?;
    w.commit(&ops).await?;
    sync_dhcp_port(s, crate::st(&sub, "network_id")).await;
    Ok(Json(json!({"subnet": public(&sub)})))
}

pub(super) async fn delete_subnet(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    let on = port_table::on_subnet(w.conn(), &id).await?;
    let sub = find_subnet(w.conn(), a, &id).await?;
    let (ops, net) = w
        .plan(|_| {
            if_match.check(&sub)?;
            if !owns(a, &sub) {
                return Err(Error::Forbidden(format!("Subnet {id}: deleting it is disallowed by policy")));
            }
            let mut ops = Vec::new();
            for p in &on {
                let ips = fixed_ips(p);
                if !ips.iter().any(|(sid, _)| sid == &id) {
                    continue;
                }
                if st(p, "device_owner") == OWNER_DHCP {
                    let rest: Vec<Value> = ips
                        .iter()
                        .filter(|(sid, _)| sid != &id)
                        .map(|(sid, ip)| json!({"subnet_id": sid, "ip_address": ip}))
                        .collect();
                    if rest.is_empty() {
                        ops.push(Op::delete(PORT, st(p, "id")));
                    } else {
                        let mut p = p.clone();
                        p.insert("fixed_ips".into(), Value::Array(rest));
                        ops.push(put(PORT, &p));
                    }
                    continue;
                }
                return Err(Error::Conflict(format!(
                    "Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."
                )));
            }
            ops.push(Op::delete(SUBNET, &id));
            Ok((ops, st(&sub, "network_id").to_string()))
        })
        ?;
    w.commit(&ops).await?;
    let _ = net;
    Ok(empty(StatusCode::NO_CONTENT))
}
