//! Views.

use super::*;

/// A network as shown; `subnets` holds (at least) its subnets.
pub(super) fn network_view(auth: &Auth, n: &Rec, subnets: &[Rec]) -> Rec {
    let mut v = public(n);
    let mine: Vec<Value> = subnets
        .iter()
        .filter(|s| st(s, "network_id") == st(n, "id"))
        .map(|s| json!(st(s, "id")))
        .collect();
    v.insert("subnets".into(), Value::Array(mine));
    if !is_admin(auth) {
        v.retain(|k, _| !k.starts_with("provider:"));
    }
    v
}

/// Networks as shown, their subnets read in one query.
pub(super) async fn network_views(
    c: &mut sqlx::AnyConnection,
    auth: &Auth,
    nets: Vec<Rec>,
) -> Result<Vec<Rec>> {
    let ids: Vec<String> = nets.iter().map(|n| st(n, "id").to_string()).collect();
    let subnets = rows::SUBNETS.where_in(c, "network_id", &ids).await?;
    Ok(nets
        .iter()
        .map(|n| network_view(auth, n, &subnets))
        .collect())
}

pub(super) fn port_view(s: &Networks, auth: &Auth, p: &Rec) -> Rec {
    let mut v = public(p);
    let host = st(p, "binding:host_id");
    let owner = st(p, "device_owner");
    // Security groups its node cannot apply: the port is not bound, as
    // Neutron shows a port no agent could wire (binding_failed).
    let sg_failed = !host.is_empty()
        && p["port_security_enabled"] != false
        && !owner.starts_with("network:")
        && s.pusher.security_group_error(host).is_some();
    let router_failed = (owner == crate::OWNER_ROUTER_IF || owner == crate::OWNER_ROUTER_GW)
        && s.pusher.router_error(st(p, "device_id")).is_some();
    let status = if p["admin_state_up"] == false || sg_failed || router_failed {
        "DOWN"
    } else if owner.starts_with("network:")
        || (!host.is_empty() && s.pusher.node_ok(host) == Some(true))
    {
        "ACTIVE"
    } else {
        "DOWN"
    };
    v.insert("status".into(), json!(status));
    let vif = if host.is_empty() {
        "unbound"
    } else if sg_failed {
        "binding_failed"
    } else if p
        .get("binding:profile")
        .and_then(|x| x.get("ursa_netns"))
        .is_some()
    {
        "other"
    } else {
        "tap"
    };
    v.insert("binding:vif_type".into(), json!(vif));
    if !is_admin(auth) {
        for k in [
            "binding:host_id",
            "binding:profile",
            "binding:vif_type",
            "binding:vif_details",
        ] {
            v.remove(k);
        }
    }
    v
}

/// A router as shown; `ports` holds (at least) its own ports.
pub(super) fn router_view(s: &Networks, _m: &Model, auth: &Auth, r: &Rec, ports: &[Rec]) -> Rec {
    let mut v = public(r);
    // A router its node could not apply (e.g. no nftables for its NAT) is
    // in ERROR, as Neutron's L3 agent leaves it; admins see why.
    if let Some(why) = s.pusher.router_error(st(r, "id")) {
        v.insert("status".into(), json!("ERROR"));
        if is_admin(auth) {
            v.insert("ursa:fault".into(), json!(why));
        }
    }
    if let Some(Value::Object(g)) = r.get("external_gateway_info") {
        let mut g = g.clone();
        let ips: Vec<Value> = ports
            .iter()
            .filter(|p| {
                st(p, "device_id") == st(r, "id") && st(p, "device_owner") == OWNER_ROUTER_GW
            })
            .flat_map(fixed_ips)
            .map(|(s, ip)| json!({"subnet_id": s, "ip_address": ip}))
            .collect();
        g.insert("external_fixed_ips".into(), Value::Array(ips));
        v.insert("external_gateway_info".into(), Value::Object(g));
    }
    if !is_admin(auth) {
        v.remove("distributed");
        v.remove("ha");
    }
    v
}

pub(super) fn fip_view(f: &Rec) -> Rec {
    let mut v = public(f);
    let status = if st(f, "port_id").is_empty() {
        "DOWN"
    } else {
        "ACTIVE"
    };
    v.insert("status".into(), json!(status));
    v
}

/// A group as shown: its record with its rules (`rules` may hold other
/// groups' rules too; they are left out).
pub(super) fn sg_view(g: &Rec, rules: &[Rec]) -> Rec {
    let mut v = public(g);
    let mine: Vec<Value> = crate::by_creation(
        rules
            .iter()
            .filter(|r| st(r, "security_group_id") == st(g, "id"))
            .collect(),
    )
    .into_iter()
    .map(|r| Value::Object(public(r)))
    .collect();
    v.insert("security_group_rules".into(), Value::Array(mine));
    v
}

/// Groups as shown, their rules read in one query.
pub(super) async fn sg_views(c: &mut sqlx::AnyConnection, groups: Vec<Rec>) -> Result<Vec<Rec>> {
    let ids: Vec<String> = groups.iter().map(|g| st(g, "id").to_string()).collect();
    let rules = crate::sg_table::rules_of(c, &ids).await?;
    let mut by_group: std::collections::HashMap<&str, Vec<Rec>> = Default::default();
    for r in &rules {
        by_group
            .entry(st(r, "security_group_id"))
            .or_default()
            .push(r.clone());
    }
    Ok(groups
        .iter()
        .map(|g| sg_view(g, by_group.get(st(g, "id")).map_or(&[][..], |v| v)))
        .collect())
}
