//! Ports.

use super::*;

pub(super) const PORT_CREATE: &[&str] = &[
    "name",
    "description",
    "network_id",
    "mac_address",
    "admin_state_up",
    "fixed_ips",
    "device_id",
    "device_owner",
    "security_groups",
    "port_security_enabled",
    "allowed_address_pairs",
    "extra_dhcp_opts",
    "binding:host_id",
    "binding:profile",
    "binding:vnic_type",
    "tenant_id",
    "project_id",
    "dns_name",
    "propagate_uplink_status",
];

/// Whether the caller sees (and may change) a port: its own, or one on
/// its network.
pub(super) async fn port_visible(
    c: &mut sqlx::AnyConnection,
    auth: &Auth,
    p: &Rec,
) -> Result<bool> {
    if owns(auth, p) {
        return Ok(true);
    }
    let n = rows::NETWORKS.get(c, st(p, "network_id")).await?;
    Ok(n.is_some_and(|n| owns(auth, &n)))
}

/// The port as the caller may see it (`p` read from its table), or 404.
pub(super) async fn find_port(
    c: &mut sqlx::AnyConnection,
    auth: &Auth,
    id: &str,
    p: Option<Rec>,
) -> Result<Rec> {
    match p {
        Some(p) if port_visible(c, auth, &p).await? => Ok(p),
        _ => Err(not_found("Port", id)),
    }
}

/// Which ports the caller sees, for a query.
pub(super) async fn port_visibility(
    c: &mut sqlx::AnyConnection,
    auth: &Auth,
) -> Result<crate::port_list::Visible> {
    let project = project(auth).to_string();
    let networks = if is_admin(auth) || project.is_empty() {
        Vec::new()
    } else {
        rows::NETWORKS
            .where_eq(c, "project_id", &project)
            .await?
            .iter()
            .map(|n| st(n, "id").to_string())
            .collect()
    };
    Ok(crate::port_list::Visible {
        all: is_admin(auth),
        networks,
        project,
    })
}

pub(super) async fn list_ports(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let s = svc(&app);
    let q = ListQuery::parse(raw.as_deref())?;
    let mut c = s.conn().await?;
    let vis = port_visibility(&mut c, &auth).await?;
    let backend = app.identity.store().backend();
    match crate::port_list::page(&mut c, backend, &q, &vis, PORT_FIELDS).await? {
        Some((rows, more)) => {
            let page = rows.iter().map(|p| port_view(s, &auth, p)).collect();
            Ok(Json(query::page_answer(
                &q,
                page,
                more,
                "ports",
                &url(&app, "ports"),
            )))
        }
        None => {
            let rows = crate::port_list::visible_matching(&mut c, &q, &vis).await?;
            drop(c);
            let items = rows.iter().map(|p| port_view(s, &auth, p)).collect();
            list_response(&app, raw, "ports", PORT_FIELDS, items)
        }
    }
}

pub(super) async fn show_port(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let s = svc(&app);
    let mut c = s.conn().await?;
    let got = port_table::get(&mut c, &id).await?;
    let p = find_port(&mut c, &auth, &id, got).await?;
    drop(c);
    Ok(Json(
        json!({"port": show_fields(&raw, port_view(s, &auth, &p))}),
    ))
}

pub(super) fn parse_fixed_ips(v: &Value) -> Result<Vec<IpRequest>> {
    let a = v.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for fixed_ips. Reason: a list is expected.".into())
    })?;
    let mut out = Vec::new();
    for x in a {
        let o = x.as_object().ok_or_else(|| {
            Error::BadRequest("Invalid input for fixed_ips. Reason: objects are expected.".into())
        })?;
        if let Some(k) = o.keys().find(|k| *k != "subnet_id" && *k != "ip_address") {
            return Err(Error::BadRequest(format!(
                "Invalid input for fixed_ips. Reason: unexpected key '{k}'."
            )));
        }
        out.push(IpRequest {
            subnet_id: opt_str(o, "subnet_id")?,
            ip_address: opt_str(o, "ip_address")?,
        });
    }
    Ok(out)
}

pub(super) fn parse_pairs(v: &Value) -> Result<Value> {
    let a = v.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for allowed_address_pairs: a list is expected.".into())
    })?;
    let mut out: Vec<Value> = Vec::new();
    for x in a {
        let o = x.as_object().ok_or_else(|| {
            Error::BadRequest(
                "Invalid input for allowed_address_pairs: objects are expected.".into(),
            )
        })?;
        if let Some(k) = o.keys().find(|k| *k != "ip_address" && *k != "mac_address") {
            return Err(Error::BadRequest(format!(
                "Unrecognized attribute(s) '{k}'"
            )));
        }
        let ip = opt_str(o, "ip_address")?.ok_or_else(|| {
            Error::BadRequest("AllowedAddressPair must contain ip_address".into())
        })?;
        if ip.parse::<std::net::IpAddr>().is_err() && ip.parse::<ipnet::IpNet>().is_err() {
            return Err(Error::BadRequest(format!(
                "'{ip}' is not a valid IP address or CIDR."
            )));
        }
        let mut item = json!({"ip_address": ip});
        if let Some(mac) = opt_str(o, "mac_address")? {
            if !ipam::valid_mac(&mac) {
                return Err(Error::BadRequest(format!(
                    "'{mac}' is not a valid MAC address"
                )));
            }
            item["mac_address"] = json!(mac.to_lowercase());
        }
        if out.iter().any(|y| {
            y["ip_address"] == item["ip_address"] && y.get("mac_address") == item.get("mac_address")
        }) {
            return Err(Error::BadRequest(
                "Request contains duplicate address pair.".into(),
            ));
        }
        out.push(item);
    }
    Ok(Value::Array(out))
}

/// Security groups named for a port: each must be one the caller may use.
pub(super) async fn check_groups(
    c: &mut sqlx::AnyConnection,
    auth: &Auth,
    v: &Value,
) -> Result<Vec<String>> {
    let a = v.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for security_groups: a list is expected.".into())
    })?;
    let mut ids = Vec::new();
    for x in a {
        let id = x.as_str().ok_or_else(|| {
            Error::BadRequest("Invalid input for security_groups: ids expected.".into())
        })?;
        ids.push(id.to_string());
    }
    let found = sg_table::groups(c, &ids).await?;
    let mut out = Vec::new();
    for id in &ids {
        match found.get(id) {
            Some(g) if owns(auth, g) => {
                if !out.contains(id) {
                    out.push(id.clone());
                }
            }
            _ => {
                return Err(Error::NotFound(format!(
                    "Security group {id} does not exist"
                )))
            }
        }
    }
    Ok(out)
}

pub(super) fn check_binding_policy(auth: &Auth, b: &Rec) -> Result<()> {
    for k in ["binding:host_id", "binding:profile"] {
        if b.contains_key(k) && !is_admin(auth) {
            return Err(Error::Forbidden(format!(
                "rule:create_port:{k} is disallowed by policy"
            )));
        }
    }
    if let Some(v) = b.get("binding:profile") {
        if !v.is_object() && !v.is_null() {
            return Err(Error::BadRequest(
                "Invalid input for binding:profile: an object is expected.".into(),
            ));
        }
    }
    if let Some(v) = opt_str(b, "binding:vnic_type")? {
        if ![
            "normal",
            "direct",
            "macvtap",
            "baremetal",
            "direct-physical",
            "virtio-forwarder",
            "smart-nic",
            "remote-managed",
            "vdpa",
        ]
        .contains(&v.as_str())
        {
            return Err(Error::BadRequest(format!(
                "Invalid input for binding:vnic_type. Reason: '{v}' is not in the valid values."
            )));
        }
    }
    Ok(())
}

/// Creates a port inside the write `w`: checked against the model, its
/// MAC, addresses and quota decided on the stored rows (and its project's
/// default security group made, when it is to be in it).
pub(super) async fn insert_port(w: &mut NetWriter<'_>, auth: &Auth, b: &Rec) -> Result<Rec> {
    check_keys(b, PORT_CREATE)?;
    let net_id = opt_str(b, "network_id")?
        .ok_or_else(|| Error::BadRequest("Invalid input: 'network_id' is required.".into()))?;
    let reqs = match b.get("fixed_ips") {
        Some(v) if !v.is_null() => Some(parse_fixed_ips(v)?),
        _ => None,
    };
    let groups = match b.get("security_groups") {
        Some(v) if !v.is_null() => Some(check_groups(w.conn(), auth, v).await?),
        _ => None,
    };
    // What the create reads of the tables, in one statement (it runs
    // while every other write waits, so round trips count).
    let owner = owner_for(auth, b)?;
    let ctx = port_table::context(w.conn(), &net_id, &owner).await?;
    let n = ctx
        .network
        .filter(|n| net_visible(auth, n))
        .ok_or_else(|| not_found("Network", &net_id))?;
    let (mut p, needs_default) = draft_port(auth, b, n, groups)?;
    let subnets =
        port_table::Subnets::from_list(w.conn(), &net_id, ctx.subnets, reqs.as_deref()).await?;
    if needs_default {
        let g = match ctx.default_sg {
            Some(g) => Some(g),
            None => Networks::ensure_default_sg(w, &owner).await?,
        };
        p.insert(
            "security_groups".into(),
            json!(g.into_iter().collect::<Vec<_>>()),
        );
    }
    let limit = Networks::quota(&w.model(), &owner, "port");
    if limit >= 0 && port_table::count_of_project(w.conn(), &owner).await? + 1 > limit {
        return Err(Error::Conflict(
            "Quota exceeded for resources: ['port'].".into(),
        ));
    }
    let mac = match opt_str(b, "mac_address")? {
        Some(mac) => {
            let mac = mac.to_lowercase();
            if port_table::mac_in_use(w.conn(), &net_id, &mac, None).await? {
                return Err(Error::Conflict(format!(
                    "Unable to complete operation for network {net_id}. The mac address {mac} is in use."
                )));
            }
            mac
        }
        None => port_table::fresh_mac(w.conn(), &net_id).await?,
    };
    let id = st(&p, "id").to_string();
    let ips = port_table::allocate(w.tx(), &subnets, &id, &mac, reqs.as_deref()).await?;
    p.insert("mac_address".into(), json!(mac));
    p.insert("fixed_ips".into(), Value::Array(ips));
    port_table::put_new(w.tx(), &p).await?;
    Ok(p)
}

/// A new port's record from the request, checked against the model (its
/// MAC and addresses are decided by [`insert_port`]), with `groups` the
/// security groups it asked for (checked). True when it is to be in its
/// project's default group, which [`insert_port`] finds or makes.
fn draft_port(auth: &Auth, b: &Rec, n: Rec, groups: Option<Vec<String>>) -> Result<(Rec, bool)> {
    let net_id = st(&n, "id").to_string();
    let owner = owner_for(auth, b)?;
    check_binding_policy(auth, b)?;
    let device_owner = opt_str(b, "device_owner")?.unwrap_or_default();
    if device_owner.starts_with("network:") && !is_admin(auth) && !owns(auth, &n) {
        return Err(Error::Forbidden(
            "rule:create_port:device_owner is disallowed by policy".into(),
        ));
    }
    if n["shared"] != true && !owns(auth, &n) && !n["router:external"].as_bool().unwrap_or(false) {
        return Err(not_found("Network", &net_id));
    }
    if let Some(mac) = opt_str(b, "mac_address")? {
        if !ipam::valid_mac(&mac) {
            return Err(Error::BadRequest(format!(
                "Invalid input for mac_address. Reason: '{mac}' is not a valid MAC address."
            )));
        }
    }
    let security =
        opt_bool(b, "port_security_enabled")?.unwrap_or(n["port_security_enabled"] != false);
    let needs_default = groups.is_none() && !device_owner.starts_with("network:") && security;
    let groups = groups.unwrap_or_default();
    let pairs = match b.get("allowed_address_pairs") {
        Some(v) if !v.is_null() => parse_pairs(v)?,
        _ => json!([]),
    };
    if !security && (!groups.is_empty() || pairs.as_array().is_some_and(|a| !a.is_empty())) {
        return Err(Error::Conflict(
            "Port security must be enabled and port must have an IP address in order to use security groups or allowed address pairs.".into(),
        ));
    }
    let mut p = standard(&owner);
    p.insert(
        "name".into(),
        json!(opt_str(b, "name")?.unwrap_or_default()),
    );
    p.insert(
        "description".into(),
        json!(opt_str(b, "description")?.unwrap_or_default()),
    );
    p.insert("network_id".into(), json!(net_id));
    p.insert(
        "admin_state_up".into(),
        json!(opt_bool(b, "admin_state_up")?.unwrap_or(true)),
    );
    p.insert(
        "device_id".into(),
        json!(opt_str(b, "device_id")?.unwrap_or_default()),
    );
    p.insert("device_owner".into(), json!(device_owner));
    p.insert("fixed_ips".into(), json!([]));
    p.insert("allowed_address_pairs".into(), pairs);
    p.insert(
        "extra_dhcp_opts".into(),
        b.get("extra_dhcp_opts")
            .cloned()
            .filter(|v| v.is_array())
            .unwrap_or(json!([])),
    );
    p.insert("security_groups".into(), json!(groups));
    p.insert("port_security_enabled".into(), json!(security));
    p.insert(
        "binding:host_id".into(),
        json!(opt_str(b, "binding:host_id")?.unwrap_or_default()),
    );
    p.insert(
        "binding:profile".into(),
        b.get("binding:profile")
            .cloned()
            .filter(|v| v.is_object())
            .unwrap_or(json!({})),
    );
    p.insert(
        "binding:vnic_type".into(),
        json!(opt_str(b, "binding:vnic_type")?.unwrap_or_else(|| "normal".into())),
    );
    p.insert("binding:vif_details".into(), json!({}));
    p.insert("ip_allocation".into(), json!("immediate"));
    p.insert(
        "propagate_uplink_status".into(),
        json!(opt_bool(b, "propagate_uplink_status")?.unwrap_or(false)),
    );
    p.insert(
        "dns_name".into(),
        json!(opt_str(b, "dns_name")?.unwrap_or_default()),
    );
    Ok((p, needs_default))
}

pub(super) async fn create_ports(
    State(app): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let (items, bulk) = body_many(&body, "port", "ports")?;
    let mut out = Vec::new();
    for b in items {
        let mut w = s.write().await?;
        let p = insert_port(&mut w, &auth, &b).await?;
        w.commit(&[]).await?;
        out.push(Value::Object(port_view(s, &auth, &p)));
    }
    Ok(if bulk {
        created("ports", Value::Array(out))
    } else {
        created("port", out.pop().unwrap_or(Value::Null))
    })
}

pub(super) async fn update_port(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "port")?;
    if b.contains_key("network_id") {
        return Err(Error::BadRequest(
            "Cannot update read-only attribute network_id".into(),
        ));
    }
    check_keys(
        &b,
        &[
            "name",
            "description",
            "admin_state_up",
            "fixed_ips",
            "device_id",
            "device_owner",
            "security_groups",
            "port_security_enabled",
            "allowed_address_pairs",
            "extra_dhcp_opts",
            "binding:host_id",
            "binding:profile",
            "binding:vnic_type",
            "mac_address",
            "dns_name",
            "propagate_uplink_status",
        ],
    )?;
    check_binding_policy(&auth, &b)?;
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    let got = port_table::get(w.conn(), &id).await?;
    let new_mac = match opt_str(&b, "mac_address")? {
        Some(mac) => {
            if !is_admin(a) {
                return Err(Error::Forbidden(
                    "rule:update_port:mac_address is disallowed by policy".into(),
                ));
            }
            if !ipam::valid_mac(&mac) {
                return Err(Error::BadRequest(format!(
                    "Invalid input for mac_address. Reason: '{mac}' is not a valid MAC address."
                )));
            }
            Some(mac.to_lowercase())
        }
        None => None,
    };
    let reqs = match b.get("fixed_ips") {
        Some(v) if v.is_null() => Some(Vec::new()),
        Some(v) => Some(parse_fixed_ips(v)?),
        None => None,
    };
    let groups = match b.get("security_groups") {
        Some(v) if !v.is_null() => check_groups(w.conn(), a, v).await?,
        _ => Vec::new(),
    };
    let mut p = find_port(w.conn(), a, &id, got).await?;
    let p_net = st(&p, "network_id").to_string();
    let subnets = port_table::Subnets::load(w.conn(), &p_net, reqs.as_deref()).await?;
    let mut p = {
        if_match.check(&p)?;
        for k in [
            "name",
            "description",
            "device_id",
            "device_owner",
            "dns_name",
            "binding:host_id",
            "binding:vnic_type",
        ] {
            if let Some(v) = opt_str(&b, k)? {
                p.insert(k.into(), json!(v));
            }
        }
        if let Some(v) = opt_bool(&b, "admin_state_up")? {
            p.insert("admin_state_up".into(), json!(v));
        }
        if let Some(v) = opt_bool(&b, "propagate_uplink_status")? {
            p.insert("propagate_uplink_status".into(), json!(v));
        }
        if let Some(v) = b.get("binding:profile") {
            p.insert(
                "binding:profile".into(),
                if v.is_null() { json!({}) } else { v.clone() },
            );
        }
        if let Some(v) = b.get("extra_dhcp_opts") {
            p.insert(
                "extra_dhcp_opts".into(),
                if v.is_array() { v.clone() } else { json!([]) },
            );
        }
        if let Some(v) = opt_bool(&b, "port_security_enabled")? {
            p.insert("port_security_enabled".into(), json!(v));
        }
        if b.contains_key("security_groups") {
            p.insert("security_groups".into(), json!(groups));
        }
        if let Some(v) = b.get("allowed_address_pairs") {
            p.insert(
                "allowed_address_pairs".into(),
                if v.is_null() {
                    json!([])
                } else {
                    parse_pairs(v)?
                },
            );
        }
        let secure = p["port_security_enabled"] != false;
        let has_groups = p["security_groups"]
            .as_array()
            .is_some_and(|x| !x.is_empty());
        let has_pairs = p["allowed_address_pairs"]
            .as_array()
            .is_some_and(|x| !x.is_empty());
        if !secure && (has_groups || has_pairs) {
            return Err(Error::Conflict(
                "Port security must be enabled and port must have an IP address in order to use security groups or allowed address pairs.".into(),
            ));
        }
        p
    };
    let net_id = st(&p, "network_id").to_string();
    if let Some(mac) = new_mac {
        if port_table::mac_in_use(w.conn(), &net_id, &mac, Some(&id)).await? {
            return Err(Error::Conflict(format!("Unable to complete operation for network {net_id}. The mac address {mac} is in use.")));
        }
        p.insert("mac_address".into(), json!(mac));
    }
    if let Some(reqs) = &reqs {
        // Addresses the port keeps stay as they are: it gives them all
        // back, then takes what it asks for.
        port_table::release(w.tx(), &id).await?;
        let mac = st(&p, "mac_address").to_string();
        let ips = port_table::allocate(w.tx(), &subnets, &id, &mac, Some(reqs)).await?;
        p.insert("fixed_ips".into(), Value::Array(ips));
    }
    bump(&mut p);
    port_table::put(w.tx(), &p).await?;
    // A floating IP follows its fixed address: drop it when the address goes.
    let mut ops = Vec::new();
    let now: Vec<String> = fixed_ips(&p).into_iter().map(|(_, ip)| ip).collect();
    for mut f in rows::FIPS.where_eq(w.conn(), "port_id", &id).await? {
        if !now.iter().any(|ip| ip == st(&f, "fixed_ip_address")) {
            disassociate(&mut f);
            ops.push(put(FIP, &f));
        }
    }
    w.commit(&ops).await?;
    Ok(Json(json!({"port": port_view(s, &auth, &p)})))
}

pub(super) fn disassociate(f: &mut Rec) {
    f.insert("port_id".into(), Value::Null);
    f.insert("fixed_ip_address".into(), Value::Null);
    f.insert("router_id".into(), Value::Null);
    bump(f);
}

pub(super) async fn delete_port(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    let got = port_table::get(w.conn(), &id).await?;
    let fips = rows::FIPS.where_eq(w.conn(), "port_id", &id).await?;
    let p = find_port(w.conn(), a, &id, got).await?;
    let ops = {
        if_match.check(&p)?;
        let owner = st(&p, "device_owner");
        if owner == OWNER_ROUTER_IF || owner == OWNER_ROUTER_GW || owner == OWNER_FIP {
            return Err(Error::Conflict(format!(
                "Port {id} cannot be deleted directly via the port API: has device owner {owner}."
            )));
        }
        let mut ops = vec![Op::delete(PORT, &id)];
        for mut f in fips {
            disassociate(&mut f);
            ops.push(put(FIP, &f));
        }
        ops
    };
    w.commit(&ops).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
