//! Networks.

use super::*;

pub(super) const NETWORK_CREATE: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "shared",
    "router:external",
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
    "mtu",
    "port_security_enabled",
    "tenant_id",
    "project_id",
    "availability_zone_hints",
    "dns_domain",
];

pub(super) async fn list_networks(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    // A project's own, the shared and the external ones (by index); an
    // admin's every one.
    let mut c = svc(&app).conn().await?;
    let nets = if is_admin(&auth) {
        rows::NETWORKS.all(&mut c).await?
    } else {
        rows::select(
            &mut c,
            "SELECT body FROM net_networks WHERE project_id = $1 \
             UNION SELECT body FROM net_networks WHERE shared = 'true' \
             UNION SELECT body FROM net_networks WHERE external = 'true'",
            &[project(&auth)],
        )
        .await?
    };
    let items = network_views(&mut c, &auth, nets).await?;
    drop(c);
    list_response(&app, raw, "networks", NETWORK_FIELDS, items)
}

pub(super) async fn find_network(
    c: &mut sqlx::AnyConnection,
    auth: &Auth,
    id: &str,
) -> Result<Rec> {
    rows::NETWORKS
        .get(c, id)
        .await?
        .filter(|n| net_visible(auth, n))
        .ok_or_else(|| not_found("Network", id))
}

pub(super) async fn show_network(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let mut c = svc(&app).conn().await?;
    let n = find_network(&mut c, &auth, &id).await?;
    let v = network_views(&mut c, &auth, vec![n]).await?.remove(0);
    Ok(Json(json!({"network": show_fields(&raw, v)})))
}

pub(super) fn validate_mtu(ty: &str, mtu: i64) -> Result<()> {
    let max = if ty == "vxlan" { 1450 } else { 1500 };
    if !(68..=max).contains(&mtu) {
        return Err(Error::BadRequest(format!(
            "Invalid input for operation: Requested MTU {mtu} is not valid for a {ty} network (68 to {max})."
        )));
    }
    Ok(())
}

/// A new network from the request, checked inside the write `w` (its
/// quota and segment against what is stored).
pub(super) async fn plan_network(
    s: &Networks,
    w: &mut NetWriter<'_>,
    auth: &Auth,
    b: &Rec,
) -> Result<(Vec<Op>, Rec)> {
    check_keys(b, NETWORK_CREATE)?;
    let owner = owner_for(auth, b)?;
    for k in [
        "shared",
        "router:external",
        "provider:network_type",
        "provider:physical_network",
        "provider:segmentation_id",
    ] {
        if b.contains_key(k) && !is_admin(auth) {
            return Err(Error::Forbidden(format!(
                "(rule:create_network and rule:create_network:{k}) is disallowed by policy"
            )));
        }
    }
    Networks::check_row_quota(w, &owner, "network", 1).await?;
    let physnet = opt_str(b, "provider:physical_network")?;
    let seg = opt_int(b, "provider:segmentation_id")?;
    let ty = opt_str(b, "provider:network_type")?.unwrap_or_else(|| "vxlan".into());
    let (physnet, seg): (Option<String>, Option<i64>) = match ty.as_str() {
        "vxlan" => {
            if physnet.is_some() {
                return Err(Error::BadRequest(
                    "provider:physical_network specified for vxlan network".into(),
                ));
            }
            let id = match seg {
                Some(v) if (1..=16_777_215).contains(&v) => {
                    if Networks::segment_in_use(w.conn(), "vxlan", "", &v.to_string()).await? {
                        return Err(Error::Conflict(format!(
                            "Unable to create the network. The tunnel ID {v} is in use."
                        )));
                    }
                    v
                }
                Some(v) => {
                    return Err(Error::BadRequest(format!(
                        "Invalid input for operation: VXLAN segmentation_id {v} is outside 1 to 16777215."
                    )))
                }
                None => s.allocate_segment(w.conn(), "vxlan", None).await? as i64,
            };
            (None, Some(id))
        }
        "flat" => {
            let p = physnet.ok_or_else(|| {
                Error::BadRequest("provider:physical_network required for flat network".into())
            })?;
            if seg.is_some() {
                return Err(Error::BadRequest(
                    "provider:segmentation_id specified for flat network".into(),
                ));
            }
            if !s.cfg.physnets.contains(&p) {
                return Err(Error::BadRequest(format!(
                    "Invalid input for operation: physical_network '{p}' unknown for flat provider network."
                )));
            }
            if Networks::segment_in_use(w.conn(), "flat", &p, "").await? {
                return Err(Error::Conflict(format!(
                    "Unable to create the flat network. Physical network {p} is in use."
                )));
            }
            (Some(p), None)
        }
        "vlan" => {
            let (p, v) = match (physnet, seg) {
                (Some(p), Some(v)) => (p, v),
                (None, None) => {
                    let p = s
                        .cfg
                        .vlan_ranges
                        .first()
                        .map(|r| r.0.clone())
                        .ok_or_else(|| {
                            Error::ServiceUnavailable("No VLAN ranges are configured.".into())
                        })?;
                    let v = s.allocate_segment(w.conn(), "vlan", Some(&p)).await? as i64;
                    (p, v)
                }
                (Some(p), None) => {
                    let v = s.allocate_segment(w.conn(), "vlan", Some(&p)).await? as i64;
                    (p, v)
                }
                (None, Some(_)) => {
                    return Err(Error::BadRequest(
                        "provider:physical_network required for vlan network".into(),
                    ))
                }
            };
            if !(1..=4094).contains(&v) {
                return Err(Error::BadRequest(format!(
                    "Invalid input for operation: VLAN id {v} is outside 1 to 4094."
                )));
            }
            if !s.cfg.physnets.contains(&p) {
                return Err(Error::BadRequest(format!("Invalid input for operation: physical_network '{p}' unknown for VLAN provider network.")));
            }
            if Networks::segment_in_use(w.conn(), "vlan", &p, &v.to_string()).await? {
                return Err(Error::Conflict(format!(
                    "Unable to create the network. The VLAN {v} on physical network {p} is in use."
                )));
            }
            (Some(p), Some(v))
        }
        other => {
            return Err(Error::BadRequest(format!(
                "Invalid input for operation: network_type value '{other}' not supported."
            )))
        }
    };
    let mtu = match opt_int(b, "mtu")? {
        Some(v) => {
            validate_mtu(&ty, v)?;
            v
        }
        None if ty == "vxlan" => 1450,
        None => 1500,
    };
    let mut n = standard(&owner);
    n.insert(
        "name".into(),
        json!(opt_str(b, "name")?.unwrap_or_default()),
    );
    n.insert(
        "description".into(),
        json!(opt_str(b, "description")?.unwrap_or_default()),
    );
    n.insert(
        "admin_state_up".into(),
        json!(opt_bool(b, "admin_state_up")?.unwrap_or(true)),
    );
    n.insert("status".into(), json!("ACTIVE"));
    n.insert(
        "shared".into(),
        json!(opt_bool(b, "shared")?.unwrap_or(false)),
    );
    n.insert(
        "router:external".into(),
        json!(opt_bool(b, "router:external")?.unwrap_or(false)),
    );
    n.insert("mtu".into(), json!(mtu));
    n.insert(
        "port_security_enabled".into(),
        json!(opt_bool(b, "port_security_enabled")?.unwrap_or(true)),
    );
    n.insert("provider:network_type".into(), json!(ty));
    n.insert("provider:physical_network".into(), json!(physnet));
    n.insert("provider:segmentation_id".into(), json!(seg));
    n.insert(
        "availability_zone_hints".into(),
        b.get("availability_zone_hints")
            .cloned()
            .unwrap_or(json!([])),
    );
    n.insert("availability_zones".into(), json!(["nova"]));
    n.insert("ipv4_address_scope".into(), Value::Null);
    n.insert("ipv6_address_scope".into(), Value::Null);
    n.insert(
        "dns_domain".into(),
        json!(opt_str(b, "dns_domain")?.unwrap_or_default()),
    );
    n.insert("l2_adjacency".into(), json!(true));
    Ok((vec![put(NETWORK, &n)], n))
}

pub(super) async fn create_networks(
    State(app): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let (items, bulk) = body_many(&body, "network", "networks")?;
    let mut out = Vec::new();
    for b in items {
        let a = &auth;
        let mut w = s.write().await?;
        let (ops, n) = plan_network(s, &mut w, a, &b).await?;
        // Neutron makes the project's default security group with its
        // first network.
        Networks::ensure_default_sg(&mut w, st(&n, "project_id")).await?;
        w.commit(&ops).await?;
        out.push(Value::Object(network_view(&auth, &n, &[])));
    }
    Ok(if bulk {
        created("networks", Value::Array(out))
    } else {
        created("network", out.pop().unwrap_or(Value::Null))
    })
}

pub(super) async fn update_network(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "network")?;
    check_keys(
        &b,
        &[
            "name",
            "description",
            "admin_state_up",
            "shared",
            "router:external",
            "mtu",
            "port_security_enabled",
            "dns_domain",
        ],
    )?;
    for k in [
        "provider:network_type",
        "provider:physical_network",
        "provider:segmentation_id",
    ] {
        if b.contains_key(k) {
            return Err(Error::BadRequest(format!("Invalid input for operation: Plugin does not support updating provider attributes ({k}).")));
        }
    }
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    let external_users = if opt_bool(&b, "router:external")? == Some(false) {
        port_table::of_network_owned(w.conn(), &id, &[OWNER_ROUTER_GW, OWNER_FIP]).await?
    } else {
        Vec::new()
    };
    let mut n = find_network(w.conn(), a, &id).await?;
    let (ops, n) = w
        .plan(|_| {
            if_match.check(&n)?;
            if !owns(a, &n) {
                return Err(Error::Forbidden(format!("Network {id}: changing it is disallowed by policy")));
            }
            for k in ["shared", "router:external"] {
                if b.contains_key(k) && !is_admin(a) {
                    return Err(Error::Forbidden(format!("rule:update_network:{k} is disallowed by policy")));
                }
            }
            if opt_bool(&b, "router:external")? == Some(false)
                && n["router:external"] == true
                && !external_users.is_empty()
            {
                return Err(Error::Conflict(format!(
                    "Unable to reconfigure sharing settings for network {id}. Multiple tenants are using it."
                )));
            }
            for k in ["name", "description", "dns_domain"] {
                if let Some(v) = opt_str(&b, k)? {
                    n.insert(k.into(), json!(v));
                }
            }
            for k in ["admin_state_up", "shared", "router:external", "port_security_enabled"] {
                if let Some(v) = opt_bool(&b, k)? {
                    n.insert(k.into(), json!(v));
                }
            }
            if let Some(mtu) = opt_int(&b, "mtu")? {
                validate_mtu(st(&n, "provider:network_type"), mtu)?;
                n.insert("mtu".into(), json!(mtu));
            }
            bump(&mut n);
            Ok((vec![put(NETWORK, &n)], n))
        })
        ?;
    w.commit(&ops).await?;
    let v = network_views(&mut *s.conn().await?, &auth, vec![n])
        .await?
        .remove(0);
    Ok(Json(json!({ "network": v })))
}

pub(super) async fn delete_network(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    let in_use = port_table::network_has_other(w.conn(), &id, &[OWNER_DHCP, OWNER_FIP]).await?;
    let ports = port_table::of_network_owned(w.conn(), &id, &[OWNER_DHCP, OWNER_FIP]).await?;
    let fips = rows::FIPS
        .where_eq(w.conn(), "floating_network_id", &id)
        .await?;
    let n = find_network(w.conn(), a, &id).await?;
    let subnets = crate::subnets_of(w.conn(), &id).await?;
    let ops = {
        if_match.check(&n)?;
        if !owns(a, &n) {
            return Err(Error::Forbidden(format!(
                "Network {id}: deleting it is disallowed by policy"
            )));
        }
        if in_use {
            return Err(Error::Conflict(format!(
                "Unable to complete operation on network {id}. There are one or more ports still in use on the network."
            )));
        }
        let mut ops: Vec<Op> = ports
            .iter()
            .map(|p| Op::delete(PORT, st(p, "id")))
            .collect();
        // Floating IPs of an external network go with it.
        ops.extend(fips.iter().map(|f| Op::delete(FIP, st(f, "id"))));
        ops.extend(subnets.iter().map(|x| Op::delete(SUBNET, st(x, "id"))));
        ops.push(Op::delete(NETWORK, &id));
        ops
    };
    w.commit(&ops).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
