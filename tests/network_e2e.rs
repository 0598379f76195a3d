//! The network API (Neutron v2.0 at /network/v2.0) end to end.
//!
//! - Isolation and bad input against `ursa up` (no data plane): one
//!   project never sees another's networks, subnets, ports, routers,
//!   floating IPs or security groups; bad CIDRs, exhausted pools,
//!   duplicate addresses and quotas get Neutron's 400/404/409 and change
//!   nothing; everything survives a restart.
//! - The data plane: `ursa up` driving two real `ursa-netd` nodes (each in
//!   its own "hypervisor" namespace joined by an underlay); "VM"
//!   namespaces plugged through ports created and bound through the API
//!   get their DHCP leases with the API's addresses, reach each other
//!   across nodes and through the router, and keep doing so while the
//!   control plane restarts.

mod common;
#[path = "netlab/mod.rs"]
mod netlab;

use common::Cloud;
use netlab::{ok, sh, Lab};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct Net<'a>(&'a Cloud);

impl Net<'_> {
    fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        self.0
            .service_call(method, &format!("/network/v2.0{path}"), token, body)
    }

    fn raw(&self, method: &str, path: &str, token: &str, body: &str) -> u16 {
        let base = self.0.url.trim_end_matches("/v3");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        self.0
            .http()
            .request(m, format!("{base}/network/v2.0{path}"))
            .header("X-Auth-Token", token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
            .status()
            .as_u16()
    }

    /// POSTs and expects 201; returns the created object.
    fn create(&self, coll: &str, key: &str, token: &str, body: Value) -> Value {
        let (st, v) = self.call(
            "POST",
            &format!("/{coll}"),
            token,
            Some(json!({ key: body })),
        );
        assert_eq!(st, 201, "create {coll}: {v}");
        v[key].clone()
    }

    fn ids(&self, coll: &str, token: &str) -> Vec<String> {
        let (st, v) = self.call("GET", &format!("/{coll}"), token, None);
        assert_eq!(st, 200, "{v}");
        let key = coll.replace('-', "_");
        v[&key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn network_api_isolation_bad_input_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path(), "secret");
    let admin = cloud.admin_token();
    let (a, _) = cloud.member_of(&admin, "net-a");
    let (b, pb) = cloud.member_of(&admin, "net-b");
    let net = Net(&cloud);

    // ursa up made the external network and a private one with a router.
    let (_, pubs) = net.call("GET", "/networks?router:external=true", &admin, None);
    let public = pubs["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "public")
        .expect("ursa up creates the external network `public`")
        .clone();
    assert_eq!(public["provider:network_type"], "flat");
    let (_, routers) = net.call("GET", "/routers?name=router1", &admin, None);
    assert_eq!(
        routers["routers"][0]["external_gateway_info"]["network_id"],
        public["id"]
    );

    // Project B's resources.
    let nb = net.create("networks", "network", &b, json!({"name": "b-net"}));
    assert_eq!(
        nb["provider:network_type"],
        Value::Null,
        "provider attributes are admin-only: {nb}"
    );
    let sb = net.create(
        "subnets",
        "subnet",
        &b,
        json!({"network_id": id(&nb), "ip_version": 4, "cidr": "10.50.0.0/24"}),
    );
    // An IPv4 CIDR with host bits set names its network, as in Neutron.
    let nh = net.create("networks", "network", &b, json!({"name": "b-hostbits"}));
    let sh = net.create(
        "subnets",
        "subnet",
        &b,
        json!({"network_id": id(&nh), "ip_version": 4, "cidr": "10.99.99.0/16"}),
    );
    assert_eq!(sh["cidr"], "10.99.0.0/16", "{sh}");
    // Subnet pools hand out prefixes; address scopes group pools.
    let scope = net.create(
        "address-scopes",
        "address_scope",
        &admin,
        json!({"name": "scope4", "ip_version": 4, "shared": true}),
    );
    let pool = net.create(
        "subnetpools",
        "subnetpool",
        &b,
        json!({"name": "b-pool", "prefixes": ["10.120.0.0/16"], "default_prefixlen": 24,
               "address_scope_id": scope["id"]}),
    );
    assert_eq!(pool["ip_version"], 4, "{pool}");
    let (st, _) = net.call(
        "PUT",
        &format!("/subnetpools/{}/tags/red", id(&pool)),
        &b,
        None,
    );
    assert_eq!(st, 201, "a subnet pool takes tags");
    let (_, t) = net.call("GET", &format!("/subnetpools/{}/tags", id(&pool)), &b, None);
    assert_eq!(t["tags"], json!(["red"]), "{t}");
    let from_pool = |extra: Value| -> Value {
        let mut body = json!({"network_id": id(&nh), "ip_version": 4, "subnetpool_id": pool["id"]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        net.create("subnets", "subnet", &b, body)
    };
    assert_eq!(from_pool(json!({}))["cidr"], "10.120.0.0/24");
    let s2 = from_pool(json!({}));
    assert_eq!(s2["cidr"], "10.120.1.0/24");
    assert_eq!(s2["subnetpool_id"], pool["id"]);
    assert_eq!(from_pool(json!({"prefixlen": 26}))["cidr"], "10.120.2.0/26");
    let (st, e) = net.call("DELETE", &format!("/subnetpools/{}", id(&pool)), &b, None);
    assert_eq!(st, 409, "a pool in use: {e}");
    let (st, e) = net.call(
        "DELETE",
        &format!("/address-scopes/{}", id(&scope)),
        &admin,
        None,
    );
    assert_eq!(st, 409, "a scope in use: {e}");
    let (st, sp) = net.call("GET", "/service-providers", &b, None);
    assert_eq!(st, 200);
    assert!(
        !sp["service_providers"].as_array().unwrap().is_empty(),
        "{sp}"
    );
    // An external network without a subnet still takes a router gateway.
    let ext = net.create(
        "networks",
        "network",
        &admin,
        json!({"name": "ext-nosub", "router:external": true}),
    );
    let rg = net.create(
        "routers",
        "router",
        &admin,
        json!({"name": "r-nosub", "external_gateway_info": {"network_id": id(&ext)}}),
    );
    assert_eq!(rg["external_gateway_info"]["network_id"], ext["id"], "{rg}");
    assert_eq!(rg["external_gateway_info"]["external_fixed_ips"], json!([]));
    let pb_port = net.create("ports", "port", &b, json!({"network_id": id(&nb)}));
    assert!(pb_port["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .starts_with("10.50.0."));
    let rb = net.create(
        "routers",
        "router",
        &b,
        json!({"name": "b-r", "external_gateway_info": {"network_id": public["id"]}}),
    );
    let (st, v) = net.call(
        "PUT",
        &format!("/routers/{}/add_router_interface", id(&rb)),
        &b,
        Some(json!({"subnet_id": id(&sb)})),
    );
    assert_eq!(st, 200, "{v}");
    let fb = net.create(
        "floatingips",
        "floatingip",
        &b,
        json!({"floating_network_id": public["id"], "port_id": id(&pb_port)}),
    );
    assert_eq!(fb["router_id"], id(&rb));
    assert_eq!(
        fb["fixed_ip_address"],
        pb_port["fixed_ips"][0]["ip_address"]
    );
    let gb = net.create(
        "security-groups",
        "security_group",
        &b,
        json!({"name": "b-sg"}),
    );

    // Project A sees none of them, by id or in lists.
    for (coll, obj) in [
        ("networks", &nb),
        ("subnets", &sb),
        ("ports", &pb_port),
        ("routers", &rb),
        ("floatingips", &fb),
        ("security-groups", &gb),
    ] {
        let (st, v) = net.call("GET", &format!("/{coll}/{}", id(obj)), &a, None);
        assert_eq!(st, 404, "A reads B's {coll}: {v}");
        let (st, _) = net.call("DELETE", &format!("/{coll}/{}", id(obj)), &a, None);
        assert_eq!(st, 404, "A deletes B's {coll}");
        assert!(!net.ids(coll, &a).contains(&id(obj)), "A lists B's {coll}");
        assert!(net.ids(coll, &b).contains(&id(obj)), "B lists its {coll}");
    }
    // A group a port is in cannot go (409) until the port leaves it.
    let gb2 = net.create(
        "security-groups",
        "security_group",
        &b,
        json!({"name": "b-sg2"}),
    );
    let member = net.create(
        "ports",
        "port",
        &b,
        json!({"network_id": id(&nb), "security_groups": [id(&gb2)]}),
    );
    let (st, v) = net.call(
        "DELETE",
        &format!("/security-groups/{}", id(&gb2)),
        &b,
        None,
    );
    assert_eq!(st, 409, "a group in use goes: {v}");
    let (st, v) = net.call(
        "PUT",
        &format!("/ports/{}", id(&member)),
        &b,
        Some(json!({"port": {"security_groups": [id(&gb)]}})),
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = net.call(
        "DELETE",
        &format!("/security-groups/{}", id(&gb2)),
        &b,
        None,
    );
    assert_eq!(st, 204, "a group no port is in goes: {v}");
    let (st, _) = net.call("DELETE", &format!("/ports/{}", id(&member)), &b, None);
    assert_eq!(st, 204);

    // A may not plug into B's network either.
    let (st, _) = net.call(
        "POST",
        "/ports",
        &a,
        Some(json!({"port": {"network_id": id(&nb)}})),
    );
    assert_eq!(st, 404);

    // Overlapping CIDRs across projects are fine.
    let na = net.create("networks", "network", &a, json!({"name": "a-net"}));
    let sa = net.create(
        "subnets",
        "subnet",
        &a,
        json!({"network_id": id(&na), "ip_version": 4, "cidr": "10.50.0.0/24"}),
    );
    // Bad input: 400s that change nothing.
    let before = net.ids("subnets", &a).len();
    for cidr in [
        "10.50.0.0/33",
        "10.50.0.5/24",
        "not-a-cidr",
        "2001:db8::/64",
    ] {
        let (st, v) = net.call(
            "POST",
            "/subnets",
            &a,
            Some(json!({"subnet": {"network_id": id(&na), "ip_version": 4, "cidr": cidr}})),
        );
        assert_eq!(st, 400, "cidr {cidr}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let (st, _) = net.call(
        "POST",
        "/subnets",
        &a,
        Some(json!({"subnet": {"network_id": id(&na), "ip_version": 4, "cidr": "10.50.0.128/25"}})),
    );
    assert_eq!(st, 400, "overlapping subnets on one network");
    assert_eq!(net.raw("POST", "/networks", &a, "{\"network\": "), 400);
    assert_eq!(
        net.raw("POST", "/networks", &a, "{\"network\": {\"bogus\": 1}}"),
        400
    );
    assert_eq!(net.ids("subnets", &a).len(), before);

    // Duplicate address: 409; the port that has it keeps it.
    let taken = net.create(
        "ports",
        "port",
        &a,
        json!({"network_id": id(&na), "fixed_ips": [{"ip_address": "10.50.0.77"}]}),
    );
    let (st, v) = net.call(
        "POST",
        "/ports",
        &a,
        Some(json!({"port": {"network_id": id(&na), "fixed_ips": [{"ip_address": "10.50.0.77"}]}})),
    );
    assert_eq!(st, 409, "{v}");
    let (_, still) = net.call("GET", &format!("/ports/{}", id(&taken)), &a, None);
    assert_eq!(still["port"]["fixed_ips"][0]["ip_address"], "10.50.0.77");

    // An exhausted pool: 409 once the two addresses are taken.
    let small = net.create("networks", "network", &a, json!({"name": "small"}));
    net.create(
        "subnets",
        "subnet",
        &a,
        json!({"network_id": id(&small), "ip_version": 4, "cidr": "10.51.0.0/29", "enable_dhcp": false,
               "allocation_pools": [{"start": "10.51.0.2", "end": "10.51.0.3"}]}),
    );
    net.create("ports", "port", &a, json!({"network_id": id(&small)}));
    net.create("ports", "port", &a, json!({"network_id": id(&small)}));
    let (st, v) = net.call(
        "POST",
        "/ports",
        &a,
        Some(json!({"port": {"network_id": id(&small)}})),
    );
    assert_eq!(st, 409, "{v}");

    // Quotas: over the limit is a 409.
    let (st, _) = net.call(
        "PUT",
        &format!("/quotas/{pb}"),
        &admin,
        Some(json!({"quota": {"network": 1}})),
    );
    assert_eq!(st, 200);
    let (st, v) = net.call(
        "POST",
        "/networks",
        &b,
        Some(json!({"network": {"name": "b-2"}})),
    );
    assert_eq!(st, 409, "{v}");
    let (st, _) = net.call(
        "PUT",
        &format!("/quotas/{pb}"),
        &b,
        Some(json!({"quota": {"network": 50}})),
    );
    assert_eq!(st, 403, "members do not set quotas");

    // A network in use is not deleted; its subnet neither.
    let (st, _) = net.call("DELETE", &format!("/networks/{}", id(&nb)), &b, None);
    assert_eq!(st, 409);
    let (st, _) = net.call("DELETE", &format!("/subnets/{}", id(&sb)), &b, None);
    assert_eq!(st, 409);

    // Restart: everything is still there.
    let snapshot: Vec<(String, Vec<String>)> = [
        "networks",
        "subnets",
        "ports",
        "routers",
        "floatingips",
        "security-groups",
    ]
    .iter()
    .map(|c| {
        let mut v = net.ids(c, &admin);
        v.sort();
        (c.to_string(), v)
    })
    .collect();
    let _ = net;
    assert!(cloud.stop().success());
    let cloud = Cloud::start(dir.path(), "secret");
    let admin = cloud.admin_token();
    let net = Net(&cloud);
    for (c, want) in snapshot {
        let mut got = net.ids(&c, &admin);
        got.sort();
        assert_eq!(got, want, "{c} after restart");
    }
    let (_, f) = net.call("GET", &format!("/floatingips/{}", id(&fb)), &admin, None);
    assert_eq!(f["floatingip"]["port_id"], id(&pb_port));
    let _ = sa;
}

fn busybox_ok() -> bool {
    sh(&["busybox", "--help"]).status.success()
}

/// Runs udhcpc in a VM namespace; returns the leased address.
fn dhcp(lab: &Lab, vm: &str) -> String {
    let dir = lab.dir.path();
    let hook = dir.join(format!("{vm}.sh"));
    std::fs::write(
        &hook,
        "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nip addr add $ip/$mask dev $interface\n\
         set -- $staticroutes\nwhile [ $# -ge 2 ]; do ip route add $1 via $2 dev $interface; shift 2; done\n\
         [ -n \"$router\" ] && [ -z \"$staticroutes\" ] && ip route add default via $router dev $interface\n\
         echo $ip > $0.ip\n",
    )
    .unwrap();
    ok(&["chmod", "+x", &hook.display().to_string()]);
    let o = sh(&[
        "timeout",
        "60",
        "ip",
        "netns",
        "exec",
        vm,
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-f",
        "-n",
        "-q",
        "-t",
        "20",
        "-T",
        "1",
        "-s",
        &hook.display().to_string(),
        "-O",
        "staticroutes",
    ]);
    if !o.status.success() && std::env::var("URSA_TEST_HOLD").is_ok() {
        eprintln!("HOLD: {vm} got no lease; lab {}", lab.p);
        std::thread::sleep(Duration::from_secs(150));
    }
    assert!(
        o.status.success(),
        "{vm} got no lease: {}\nnetd h1:\n{}\ndesired h1:\n{}",
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(lab.log(1)).unwrap_or_default(),
        std::fs::read_to_string(lab.dir.path().join("h1/desired.json")).unwrap_or_default()
    );
    std::fs::read_to_string(format!("{}.ip", hook.display()))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn api_networks_reach_vms_on_two_netd_nodes() {
    if !netlab::can_run() {
        return;
    }
    if !busybox_ok() {
        eprintln!("SKIP network data plane: needs busybox (udhcpc), package busybox-static");
        return;
    }
    if !netlab::netd_bin().exists() {
        eprintln!("SKIP network data plane: ursa-netd is not built beside the tests");
        return;
    }
    let mut lab = Lab::new("ne", 2);
    // The outside world: a host at 203.0.113.1 behind h1's interface ext0,
    // which h1's netd bridges into physical network `ext`.
    let outside = lab.vm("x");
    ok(&[
        "ip",
        "-n",
        &lab.hv(1),
        "link",
        "add",
        "ext0",
        "type",
        "veth",
        "peer",
        "name",
        "x0",
        "netns",
        &outside,
    ]);
    ok(&["ip", "-n", &lab.hv(1), "link", "set", "ext0", "up"]);
    ok(&[
        "ip",
        "-n",
        &outside,
        "addr",
        "add",
        "203.0.113.1/24",
        "dev",
        "x0",
    ]);
    ok(&["ip", "-n", &outside, "link", "set", "x0", "up"]);
    lab.start_netd_with(1, &["--physical-interface", "ext:ext0"]);
    lab.start_netd(2);
    let dir = tempfile::tempdir().unwrap();
    let nodes = [
        format!("--netd=h1=unix:{}", lab.sock(1).display()),
        format!("--netd=h2=unix:{}", lab.sock(2).display()),
        "--physical-network=ext".to_string(),
    ];
    let args: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let cloud = Cloud::start_with(dir.path(), "secret", &args);
    let admin = cloud.admin_token();
    let net = Net(&cloud);

    let n1 = net.create("networks", "network", &admin, json!({"name": "e2e-1"}));
    let s1 = net.create(
        "subnets",
        "subnet",
        &admin,
        json!({"network_id": id(&n1), "ip_version": 4, "cidr": "10.91.0.0/24"}),
    );
    let n2 = net.create("networks", "network", &admin, json!({"name": "e2e-2"}));
    let s2 = net.create(
        "subnets",
        "subnet",
        &admin,
        json!({"network_id": id(&n2), "ip_version": 4, "cidr": "10.92.0.0/24"}),
    );
    let r = net.create("routers", "router", &admin, json!({"name": "e2e-r"}));
    for s in [&s1, &s2] {
        let (st, v) = net.call(
            "PUT",
            &format!("/routers/{}/add_router_interface", id(&r)),
            &admin,
            Some(json!({"subnet_id": id(s)})),
        );
        assert_eq!(st, 200, "{v}");
    }
    // netd makes a namespace per router (ours and ursa up's router1): the
    // lab removes them at the end.
    for rid in net.ids("routers", &admin) {
        lab.extra_ns
            .borrow_mut()
            .push(format!("urt-{}", &rid.replace('-', "")[..11]));
    }

    // Three VMs: two on network 1 (one per node), one on network 2 (node 2).
    let vms: Vec<(String, Value)> = [("v1", &n1, "h1"), ("v2", &n1, "h2"), ("v3", &n2, "h2")]
        .iter()
        .map(|(name, n, host)| {
            let ns = lab.vm(name);
            let p = net.create(
                "ports",
                "port",
                &admin,
                json!({"network_id": id(n), "binding:host_id": host,
                       "binding:profile": {"ursa_netns": ns, "ifname": "eth0", "up": true}}),
            );
            (ns, p)
        })
        .collect();
    // netd creates the veths as the pusher brings the nodes up to date.
    let t0 = Instant::now();
    for (ns, _) in &vms {
        while !sh(&["ip", "-n", ns, "link", "show", "eth0"])
            .status
            .success()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{ns} never got its eth0; netd logs:\n{}\n{}\n{}",
                std::fs::read_to_string(lab.log(1)).unwrap_or_default(),
                std::fs::read_to_string(lab.log(2)).unwrap_or_default(),
                cloud.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Each VM's DHCP lease is the address the API gave its port.
    for (ns, p) in &vms {
        let leased = dhcp(&lab, ns);
        assert_eq!(
            leased,
            p["fixed_ips"][0]["ip_address"].as_str().unwrap(),
            "{ns}'s lease"
        );
    }
    let ip = |i: usize| {
        vms[i].1["fixed_ips"][0]["ip_address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Across nodes on one network, and through the router to the other.
    assert!(
        lab.ping(&vms[0].0, &ip(1)),
        "v1 → v2 across the VXLAN overlay"
    );
    assert!(lab.ping(&vms[0].0, "10.91.0.1"), "v1 → its gateway");
    assert!(lab.ping(&vms[0].0, &ip(2)), "v1 → v3 through the router");
    assert!(lab.ping(&vms[2].0, &ip(0)), "v3 → v1 back");
    // The external network: SNAT out through the router's gateway, and a
    // floating IP in.
    let ext = net.create(
        "networks",
        "network",
        &admin,
        json!({"name": "ext", "router:external": true, "provider:network_type": "flat",
               "provider:physical_network": "ext"}),
    );
    net.create(
        "subnets",
        "subnet",
        &admin,
        json!({"network_id": id(&ext), "ip_version": 4, "cidr": "203.0.113.0/24", "enable_dhcp": false,
               "gateway_ip": "203.0.113.1", "allocation_pools": [{"start": "203.0.113.10", "end": "203.0.113.99"}]}),
    );
    let (st, v) = net.call(
        "PUT",
        &format!("/routers/{}", id(&r)),
        &admin,
        Some(json!({"router": {"external_gateway_info": {"network_id": id(&ext)}}})),
    );
    assert_eq!(st, 200, "{v}");
    let gw = v["router"]["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let t0 = Instant::now();
    while !lab.ping(&vms[0].0, "203.0.113.1") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "v1 never reached the outside through SNAT"
        );
    }
    let fip = net.create(
        "floatingips",
        "floatingip",
        &admin,
        json!({"floating_network_id": id(&ext), "port_id": id(&vms[2].1)}),
    );
    let fip_ip = fip["floating_ip_address"].as_str().unwrap().to_string();
    // As in any OpenStack cloud, the default group lets in only its own
    // members: open ICMP for the outside.
    net.create(
        "security-group-rules",
        "security_group_rule",
        &admin,
        json!({"security_group_id": vms[2].1["security_groups"][0], "direction": "ingress",
               "protocol": "icmp", "remote_ip_prefix": "0.0.0.0/0"}),
    );
    assert_ne!(fip_ip, gw);
    let t0 = Instant::now();
    while !lab.ping(&outside, &fip_ip) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the outside never reached v3 at its floating IP {fip_ip}"
        );
    }
    // The API shows the bound ports active.
    let (_, p) = net.call("GET", &format!("/ports/{}", id(&vms[0].1)), &admin, None);
    assert_eq!(p["port"]["status"], "ACTIVE", "{p}");

    // Restart the control plane while v1 pings v2: no packet is lost.
    let pinger = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &vms[0].0,
            "ping",
            "-c",
            "50",
            "-i",
            "0.1",
            "-W",
            "1",
            &ip(1),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _ = net;
    assert!(cloud.stop().success());
    let cloud = Cloud::start_with(dir.path(), "secret", &args);
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(" 0% packet loss"),
        "traffic was disturbed by the restart: {text}"
    );
    let admin = cloud.admin_token();
    let net = Net(&cloud);
    assert!(net.ids("ports", &admin).contains(&id(&vms[2].1)));
    // A change after the restart reaches the nodes: unplugging v2.
    let (st, _) = net.call("DELETE", &format!("/ports/{}", id(&vms[1].1)), &admin, None);
    assert_eq!(st, 204);
    let t0 = Instant::now();
    while sh(&["ip", "-n", &vms[1].0, "link", "show", "eth0"])
        .status
        .success()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "v2's port was never unplugged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lab.ping(&vms[0].0, &ip(2)), "v1 → v3 still works");

    // The network node holds DHCP reservations a port at a time: a port
    // made now on the other node gets its lease from it (a delta after the
    // new controller's first full push), and so it does again after the
    // network node's netd is killed and comes back empty-handed (its new
    // boot id makes the pusher send every reservation again).
    let v4 = lab.vm("v4");
    let p4 = net.create(
        "ports",
        "port",
        &admin,
        json!({"network_id": id(&n1), "binding:host_id": "h2",
               "binding:profile": {"ursa_netns": v4, "ifname": "eth0", "up": true}}),
    );
    let want = p4["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let t0 = Instant::now();
    while !sh(&["ip", "-n", &v4, "link", "show", "eth0"])
        .status
        .success()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "v4 never got its eth0"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(dhcp(&lab, &v4), want, "v4's lease, pushed as a delta");
    ok(&["ip", "-n", &v4, "addr", "flush", "dev", "eth0"]);
    lab.stop_netd(1, libc::SIGKILL);
    lab.start_netd_with(1, &["--physical-interface", "ext:ext0"]);
    assert_eq!(dhcp(&lab, &v4), want, "v4's lease from the restarted netd");
}

/// Two controllers on one PostgreSQL drive one netd: one of them holds the
/// push duty; SIGKILL it, and a port created on the other is plugged by
/// netd within 10 s (the lease ran out and the survivor took the duty).
#[test]
fn the_push_duty_moves_when_its_controller_is_killed() {
    let Ok(pg) = std::env::var("URSA_TEST_POSTGRES_URL") else {
        eprintln!("SKIP push duty takeover: URSA_TEST_POSTGRES_URL is not set");
        return;
    };
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP push duty takeover: needs root (a namespace for netd)");
        return;
    }
    let netd_bin = std::path::Path::new(common::ursa_bin()).with_file_name("ursa-netd");
    if !netd_bin.exists() {
        eprintln!("SKIP push duty takeover: ursa-netd is not built beside the tests");
        return;
    }
    let (db_url, _db) = common::FreshDb::create(&pg, "ursa_duty");
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    // netd lives in a namespace of the test's own; the controllers stay
    // outside it, where PostgreSQL is (they reach netd by its socket).
    let netd = common::NsNetd::start("udty", &netd_bin, dir.path());
    let (ns, sock) = (netd.ns.clone(), netd.sock.clone());
    let netd_arg = format!("--netd=n1=unix:{}", sock.display());
    let args = [
        "--database-url",
        db_url.as_str(),
        netd_arg.as_str(),
        "--no-compute",
        "--physical-network=ext",
    ];
    let a = Cloud::start_with(&a_dir, "duty-pw", &args);
    common::share_keys(&a_dir, &b_dir);
    let b = Cloud::start_with(&b_dir, "duty-pw", &args);
    let token = a.admin_token();
    let on = |c: &Cloud, m: &str, p: &str, body: Option<Value>| {
        c.service_call(m, &format!("/network/v2.0{p}"), &token, body)
    };
    let (st, n) = on(
        &a,
        "POST",
        "/networks",
        Some(json!({"network": {"name": "duty"}})),
    );
    assert_eq!(st, 201, "{n}");
    let net = id(&n["network"]);
    let (st, s) = on(
        &a,
        "POST",
        "/subnets",
        Some(json!({"subnet": {"network_id": net, "cidr": "10.78.0.0/24", "ip_version": 4}})),
    );
    assert_eq!(st, 201, "{s}");
    let tap = |port: &str| format!("utp-{}", &port.replace('-', "")[..11]);
    let plugged_within = |port: &str, secs: u64| -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            if sh(&["ip", "-n", &ns, "link", "show", &tap(port)])
                .status
                .success()
            {
                return Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    };
    let bound = json!({"port": {"network_id": net, "binding:host_id": "n1"}});
    let (st, p1) = on(&a, "POST", "/ports", Some(bound.clone()));
    assert_eq!(st, 201, "{p1}");
    let p1 = id(&p1["port"]);
    assert!(
        plugged_within(&p1, 20).is_some(),
        "the first port is plugged"
    );
    // The other controller shows the port as the pushing one found it.
    let t0 = Instant::now();
    loop {
        let (_, v) = on(&b, "GET", &format!("/ports/{p1}"), None);
        if v["port"]["status"] == "ACTIVE" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "ACTIVE on the other controller: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // One controller pushes; kill it, and the other must take over.
    let pushes = |c: &Cloud| {
        c.stderr()
            .lines()
            .any(|l| l.contains("this controller holds the duty") && l.contains("netd-push"))
    };
    assert!(pushes(&a) != pushes(&b), "exactly one controller pushes");
    let (dead, alive) = if pushes(&a) { (a, b) } else { (b, a) };
    unsafe { libc::kill(dead.pid() as i32, libc::SIGKILL) };
    let (st, p2) = on(&alive, "POST", "/ports", Some(bound));
    assert_eq!(st, 201, "{p2}");
    let p2 = id(&p2["port"]);
    let took = plugged_within(&p2, 10);
    println!("a port created after SIGKILL of the pushing controller was plugged in {took:?}");
    assert!(took.is_some(), "plugged within 10 s of the kill");
    assert!(pushes(&alive), "the survivor took the push duty");
    let _cleanup = common::Cleanup {
        cloud: &alive,
        admin: token.clone(),
    };
    drop(dead);
}

/// Neutron's `If-Match: revision_number=N`: an update or delete applies
/// only at that revision (412 otherwise, and nothing changes).
#[test]
fn if_match_constrains_updates_and_deletes_to_a_revision() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path(), "ifm-pw");
    let token = cloud.admin_token();
    let net = Net(&cloud);
    let n = net.create("networks", "network", &token, json!({"name": "ifm"}));
    let nid = id(&n);
    let rev = n["revision_number"].as_u64().unwrap();
    let base = cloud.url.trim_end_matches("/v3").to_string();
    let send = |m: reqwest::Method, if_match: &str, body: Option<Value>| -> (u16, Value) {
        let mut rb = cloud
            .http()
            .request(m, format!("{base}/network/v2.0/networks/{nid}"))
            .header("X-Auth-Token", &token)
            .header("If-Match", if_match);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().unwrap();
        let st = r.status().as_u16();
        (st, r.json().unwrap_or(Value::Null))
    };
    let rename = |name: &str| Some(json!({"network": {"name": name}}));
    let (st, v) = send(
        reqwest::Method::PUT,
        &format!("revision_number={rev}"),
        rename("ifm2"),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["network"]["revision_number"], rev + 1);
    let (st, v) = send(
        reqwest::Method::PUT,
        &format!("revision_number={rev}"),
        rename("stale"),
    );
    assert_eq!(st, 412, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("current revision is"),
        "{v}"
    );
    let (st, _) = send(
        reqwest::Method::DELETE,
        &format!("revision_number={rev}"),
        None,
    );
    assert_eq!(st, 412);
    let (st, _) = send(reqwest::Method::PUT, "etag-ish", rename("bad"));
    assert_eq!(st, 400);
    let (_, v) = net.call("GET", &format!("/networks/{nid}"), &token, None);
    assert_eq!(
        v["network"]["name"], "ifm2",
        "the refused writes changed nothing"
    );
    let (st, _) = send(
        reqwest::Method::DELETE,
        &format!("revision_number={}", rev + 1),
        None,
    );
    assert_eq!(st, 204);
}

/// Ports are rows: addresses come from the allocation table (the next one
/// after the highest, then a freed one, then 409 when the pool is full; a
/// taken address or MAC is a 409), and lists filter, sort and page in SQL
/// with the same answers as Neutron's.
#[test]
fn ports_take_addresses_from_rows_and_page_in_sql() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path(), "rows-pw");
    let admin = cloud.admin_token();
    let (member, _) = cloud.member_of(&admin, "rows");
    let net = Net(&cloud);
    let n = net.create("networks", "network", &member, json!({"name": "small"}));
    let nid = n["id"].as_str().unwrap().to_string();
    // A /29: gateway .1, pool .2 – .6.
    net.create(
        "subnets",
        "subnet",
        &member,
        json!({"network_id": nid, "cidr": "10.77.0.0/29", "ip_version": 4, "enable_dhcp": false}),
    );
    let mut ports = Vec::new();
    for i in 0..5 {
        let p = net.create(
            "ports",
            "port",
            &member,
            json!({"network_id": nid, "name": format!("r{i}")}),
        );
        ports.push(p);
    }
    let ips: Vec<String> = ports
        .iter()
        .map(|p| {
            p["fixed_ips"][0]["ip_address"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        ips,
        [
            "10.77.0.2",
            "10.77.0.3",
            "10.77.0.4",
            "10.77.0.5",
            "10.77.0.6"
        ]
    );
    let (st, full) = net.call(
        "POST",
        "/ports",
        &member,
        Some(json!({"port": {"network_id": nid}})),
    );
    assert_eq!(st, 409, "the pool is full: {full}");
    // A freed address is given again; a taken one or a taken MAC is a 409.
    let second = ports[1]["id"].as_str().unwrap();
    assert_eq!(
        net.call("DELETE", &format!("/ports/{second}"), &member, None)
            .0,
        204
    );
    let again = net.create(
        "ports",
        "port",
        &member,
        json!({"network_id": nid, "name": "again"}),
    );
    assert_eq!(again["fixed_ips"][0]["ip_address"], "10.77.0.3");
    let (st, _) = net.call(
        "POST",
        "/ports",
        &admin,
        Some(json!({"port": {"network_id": nid, "fixed_ips": [{"ip_address": "10.77.0.4"}]}})),
    );
    assert_eq!(st, 409, "10.77.0.4 is taken");
    let mac = ports[0]["mac_address"].as_str().unwrap();
    let (st, _) = net.call(
        "PUT",
        &format!("/ports/{}", again["id"].as_str().unwrap()),
        &admin,
        Some(json!({"port": {"mac_address": mac}})),
    );
    assert_eq!(st, 409, "the MAC is taken on this network");
    // Changing a port's addresses frees the old one in the same write.
    let (st, moved) = net.call(
        "PUT",
        &format!("/ports/{}", again["id"].as_str().unwrap()),
        &member,
        Some(json!({"port": {"fixed_ips": [{"ip_address": "10.77.0.3"}]}})),
    );
    assert_eq!(st, 200, "a port keeps its own address: {moved}");

    // Lists: filters, fixed_ips, sort and pages (forwards and back).
    let names = |v: &Value| -> Vec<String> {
        v["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, v) = net.call(
        "GET",
        &format!("/ports?network_id={nid}&sort_key=name&sort_dir=asc"),
        &member,
        None,
    );
    assert_eq!(names(&v), ["again", "r0", "r2", "r3", "r4"]);
    let (_, v) = net.call(
        "GET",
        &format!("/ports?network_id={nid}&fixed_ips=ip_address%3D10.77.0.5"),
        &member,
        None,
    );
    assert_eq!(names(&v), ["r3"]);
    let (_, v) = net.call("GET", "/ports?name=r2&name=r4&sort_key=name", &member, None);
    assert_eq!(names(&v), ["r2", "r4"], "repeated keys mean any of");
    let mut seen = Vec::new();
    let mut path = format!("/ports?network_id={nid}&sort_key=name&sort_dir=desc&limit=2");
    loop {
        let (st, v) = net.call("GET", &path, &member, None);
        assert_eq!(st, 200);
        seen.extend(names(&v));
        let next = v["ports_links"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["rel"] == "next"))
            .map(|x| x["href"].as_str().unwrap().to_string());
        match next {
            Some(href) => path = href.split("/v2.0").nth(1).unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["r4", "r3", "r2", "r0", "again"],
        "pages in order, each once"
    );
    let last = ports[4]["id"].as_str().unwrap();
    let (_, v) = net.call(
        "GET",
        &format!("/ports?network_id={nid}&sort_key=name&limit=2&marker={last}&page_reverse=True"),
        &member,
        None,
    );
    assert_eq!(names(&v), ["r2", "r3"], "the page before r4");
    // A filter no column answers is still answered (in memory).
    let (st, v) = net.call(
        "GET",
        &format!("/ports?network_id={nid}&status=DOWN"),
        &member,
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(names(&v).len(), 5);
    let (st, _) = net.call("GET", "/ports?bogus=1", &member, None);
    assert_eq!(st, 400, "an unknown filter is refused");
    // Another project sees none of them.
    let (other, _) = cloud.member_of(&admin, "rows-other");
    let (_, v) = net.call("GET", &format!("/ports?network_id={nid}"), &other, None);
    assert!(names(&v).is_empty());
}
