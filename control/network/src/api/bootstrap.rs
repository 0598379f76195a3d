//! What `ursa up` creates on a fresh cloud.

use super::*;

/// Creates, once, the external flat network `public` (172.24.4.0/24, as
/// devstack does) and, in the admin project, a `private` network
/// (10.0.0.0/24) with a router `router1` joining it to `public`.
pub async fn bootstrap(s: &Networks, admin_project: &str) -> Result<()> {
    let exists = !rows::NETWORKS
        .where_eq(&mut *s.conn().await?, "name", "public")
        .await?
        .is_empty();
    if exists || !s.cfg.physnets.iter().any(|p| p == "public") {
        return Ok(());
    }
    let auth = service_caller(admin_project);
    let a = &auth;
    let obj = |v: Value| v.as_object().cloned().unwrap_or_default();
    let public_net = make_network(
        s,
        a,
        obj(
            json!({"name": "public", "router:external": true, "shared": false,
            "provider:network_type": "flat", "provider:physical_network": "public"}),
        ),
    )
    .await?;
    let pid = st(&public_net, "id").to_string();
    make_subnet(
        s,
        a,
        obj(
            json!({"name": "public-subnet", "network_id": pid, "ip_version": 4,
            "cidr": "172.24.4.0/24", "gateway_ip": "172.24.4.1", "enable_dhcp": false,
            "allocation_pools": [{"start": "172.24.4.2", "end": "172.24.4.254"}]}),
        ),
    )
    .await?;
    let private = make_network(s, a, obj(json!({"name": "private"}))).await?;
    let nid = st(&private, "id").to_string();
    let sub = make_subnet(
        s,
        a,
        obj(
            json!({"name": "private-subnet", "network_id": nid, "ip_version": 4,
            "cidr": "10.0.0.0/24", "dns_nameservers": []}),
        ),
    )
    .await?;
    sync_dhcp_port(s, &nid).await;
    let sid = st(&sub, "id").to_string();
    let mut w = s.write().await?;
    let gw = json!({"network_id": pid});
    let (r, mut ops, gw_plan) = {
        let mut r = standard(admin_project);
        for (k, v) in [
            ("name", json!("router1")),
            ("description", json!("")),
            ("admin_state_up", json!(true)),
            ("status", json!("ACTIVE")),
            ("external_gateway_info", Value::Null),
            ("routes", json!([])),
            ("distributed", json!(false)),
            ("ha", json!(false)),
            ("availability_zone_hints", json!([])),
            ("availability_zones", json!(["nova"])),
            ("flavor_id", Value::Null),
        ] {
            r.insert(k.into(), v);
        }
        let plan = plan_gateway(w.conn(), a, &mut r, &gw, &[], false).await?;
        (r, Vec::new(), plan)
    };
    apply_gateway(&mut w, gw_plan).await?;
    let subnets = port_table::Subnets::load(w.conn(), &nid, None).await?;
    port_table::create(
        w.tx(),
        &subnets,
        service_port(
            admin_project,
            &nid,
            OWNER_ROUTER_IF,
            st(&r, "id"),
            String::new(),
            vec![],
        ),
        Some(&[IpRequest {
            subnet_id: Some(sid.clone()),
            ip_address: Some("10.0.0.1".into()),
        }]),
    )
    .await?;
    ops.push(put(ROUTER, &r));
    w.commit(&ops).await?;
    Ok(())
}

async fn make_network(s: &Networks, a: &Auth, b: Rec) -> Result<Rec> {
    let mut w = s.write().await?;
    let (ops, n) = plan_network(s, &mut w, a, &b).await?;
    w.commit(&ops).await?;
    Ok(n)
}

async fn make_subnet(s: &Networks, a: &Auth, b: Rec) -> Result<Rec> {
    let mut w = s.write().await?;
    let (ops, sub) = plan_subnet(&mut w, a, &b).await?;
    w.commit(&ops).await?;
    Ok(sub)
}
