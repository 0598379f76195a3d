//! netd end to end on the real kernel: "hypervisor" network namespaces joined
//! by an underlay bridge, each running its own `ursa-netd`, "VM" namespaces
//! attached through netd ports, real pings. Everything lives in namespaces
//! named with a test-unique prefix and is deleted on drop, also when a test
//! fails. `ip` and `ping` are the test's own tools; the product uses netlink.

mod netlab;
use netlab::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use ursa_proto::netd::v1 as pb;

#[test]
fn overlapping_tenant_networks_across_three_nodes() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new("t", 3);
    for i in 1..=3 {
        lab.start_netd(i);
    }
    let (mut c1, mut c2, mut c3) = (lab.client(1), lab.client(2), lab.client(3));
    for (c, nets) in [
        (&mut c1, vec![(NET_A, 5001), (NET_B, 5002)]),
        (&mut c2, vec![(NET_A, 5001)]),
        (&mut c3, vec![(NET_B, 5002)]),
    ] {
        for (id, vni) in nets {
            lab.rt
                .block_on(c.ensure_network(vxlan(id, vni)))
                .expect("ensure network");
        }
    }
    // Same CIDR on both networks; a1 and b1 even share an address.
    let (a1, a2, b1, b3) = (lab.vm("a1"), lab.vm("a2"), lab.vm("b1"), lab.vm("b3"));
    let pa1 = "a1000000-0000-4000-8000-0000000000a1";
    let pa2 = "a2000000-0000-4000-8000-0000000000a2";
    let pb1 = "b1000000-0000-4000-8000-0000000000b1";
    let pb3 = "b3000000-0000-4000-8000-0000000000b3";
    plug(
        &lab,
        &mut c1,
        veth_port(pa1, NET_A, "02:aa:00:00:00:11", "10.99.0.11", &a1),
        "10.99.0.11",
        &a1,
    );
    plug(
        &lab,
        &mut c2,
        veth_port(pa2, NET_A, "02:aa:00:00:00:12", "10.99.0.12", &a2),
        "10.99.0.12",
        &a2,
    );
    plug(
        &lab,
        &mut c1,
        veth_port(pb1, NET_B, "02:bb:00:00:00:11", "10.99.0.11", &b1),
        "10.99.0.11",
        &b1,
    );
    plug(
        &lab,
        &mut c3,
        veth_port(pb3, NET_B, "02:bb:00:00:00:13", "10.99.0.13", &b3),
        "10.99.0.13",
        &b3,
    );
    // l2population, as control will send it.
    lab.rt
        .block_on(c1.set_remotes(remotes(
            NET_A,
            &lab.vtep(2),
            "02:aa:00:00:00:12",
            "10.99.0.12",
        )))
        .unwrap();
    lab.rt
        .block_on(c2.set_remotes(remotes(
            NET_A,
            &lab.vtep(1),
            "02:aa:00:00:00:11",
            "10.99.0.11",
        )))
        .unwrap();
    lab.rt
        .block_on(c1.set_remotes(remotes(
            NET_B,
            &lab.vtep(3),
            "02:bb:00:00:00:13",
            "10.99.0.13",
        )))
        .unwrap();
    lab.rt
        .block_on(c3.set_remotes(remotes(
            NET_B,
            &lab.vtep(1),
            "02:bb:00:00:00:11",
            "10.99.0.11",
        )))
        .unwrap();

    assert!(
        lab.ping(&a1, "10.99.0.12"),
        "a1 → a2 across nodes on network A"
    );
    assert!(lab.ping(&a2, "10.99.0.11"), "a2 → a1 reaches a1, not b1");
    assert!(
        lab.ping(&b1, "10.99.0.13"),
        "b1 → b3 across nodes on network B"
    );
    assert!(
        !lab.ping(&a1, "10.99.0.13"),
        "network A never reaches network B"
    );
    assert!(
        !lab.ping(&b1, "10.99.0.12"),
        "network B never reaches network A"
    );

    // The overlay MTU is the underlay's minus 50, inside the guest too.
    let mtu = ok(&["ip", "-n", &a1, "-o", "link", "show", "eth0"]);
    assert!(mtu.contains("mtu 1450"), "{mtu}");

    // Bad input changes nothing.
    let before = lab
        .rt
        .block_on(c1.sync(pb::NodeState {
            dry_run: true,
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    let code = |r: Result<tonic::Response<pb::EnsureReply>, tonic::Status>| {
        r.expect_err("must fail").code()
    };
    let rt = &lab.rt;
    use tonic::Code;
    assert_eq!(
        code(rt.block_on(c1.ensure_port(veth_port(
            "ff000000-0000-4000-8000-0000000000ff",
            "cccccccc-0000-4000-8000-000000000003",
            "02:cc:00:00:00:01",
            "10.99.0.50",
            &a1
        )))),
        Code::NotFound
    );
    assert_eq!(
        code(rt.block_on(c1.ensure_port(veth_port(
            "fe000000-0000-4000-8000-0000000000fe",
            NET_A,
            "02:aa:00:00:00:11",
            "10.99.0.51",
            &a1
        )))),
        Code::AlreadyExists
    );
    assert_eq!(
        code(rt.block_on(c1.ensure_network(vxlan("dddddddd-0000-4000-8000-000000000004", 5001)))),
        Code::AlreadyExists
    );
    let mut bad_cidr = veth_port(
        "fd000000-0000-4000-8000-0000000000fd",
        NET_A,
        "02:aa:00:00:00:99",
        "10.99.0.52",
        &a1,
    );
    bad_cidr.fixed_ips = vec!["10.99.0/33".into()];
    assert_eq!(
        code(rt.block_on(c1.ensure_port(bad_cidr))),
        Code::InvalidArgument
    );
    let mut bad_name = veth_port(
        "fc000000-0000-4000-8000-0000000000fc",
        NET_A,
        "02:aa:00:00:00:98",
        "10.99.0.53",
        &a1,
    );
    bad_name.kind = Some(pb::port::Kind::Veth(pb::Veth {
        netns: a1.clone(),
        ifname: "this-name-is-far-too-long".into(),
        up: true,
    }));
    assert_eq!(
        code(rt.block_on(c1.ensure_port(bad_name))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(c1.ensure_network(pb::Network {
            id: "not-a-uuid".into(),
            ..vxlan(NET_A, 5001)
        }))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(c1.ensure_port(pb::Port {
            mac: "zz:zz".into(),
            ..veth_port(pa1, NET_A, "", "", &a1)
        }))),
        Code::InvalidArgument
    );
    let vlan = pb::Network {
        id: "eeeeeeee-0000-4000-8000-000000000005".into(),
        segment: Some(pb::network::Segment::Vlan(pb::Vlan {
            physical_network: "phys".into(),
            vlan_id: 10,
        })),
        mtu: 0,
        ..Default::default()
    };
    assert_eq!(
        code(rt.block_on(c1.ensure_network(vlan))),
        Code::FailedPrecondition
    );
    let caps = rt
        .block_on(c1.get_capabilities(pb::CapabilitiesRequest {}))
        .unwrap()
        .into_inner();
    assert!(caps.segmentation_types.contains(&"vxlan".to_string()));
    if !caps.segmentation_types.contains(&"vlan".to_string()) {
        eprintln!("note: this kernel has no 8021q: {:?}", caps.missing);
    }
    let after = rt
        .block_on(c1.sync(pb::NodeState {
            dry_run: true,
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    assert_eq!(
        before.actions, after.actions,
        "failed calls changed the desired state"
    );
    assert!(
        lab.ping(&a1, "10.99.0.12"),
        "traffic unaffected by bad input"
    );

    // A deleted port stops passing traffic.
    lab.rt
        .block_on(c2.delete_port(pb::DeleteRequest { id: pa2.into() }))
        .unwrap();
    assert!(
        !lab.ping(&a1, "10.99.0.12"),
        "deleted port still passes traffic"
    );
    assert!(lab.ping(&b1, "10.99.0.13"), "other ports keep working");
}

fn ifindexes(ns: &str) -> Vec<String> {
    let out = ok(&["ip", "-n", ns, "-o", "link", "show"]);
    let mut v: Vec<String> = out
        .lines()
        .map(|l| {
            let mut it = l.split(':');
            format!(
                "{}:{}",
                it.next().unwrap_or("").trim(),
                it.next().unwrap_or("").trim()
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn restart_and_kill_keep_traffic_flowing() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new("r", 2);
    lab.start_netd(1);
    lab.start_netd(2);
    let (mut c1, mut c2) = (lab.client(1), lab.client(2));
    lab.rt
        .block_on(c1.ensure_network(vxlan(NET_A, 6001)))
        .unwrap();
    lab.rt
        .block_on(c2.ensure_network(vxlan(NET_A, 6001)))
        .unwrap();
    let (a1, a2) = (lab.vm("a1"), lab.vm("a2"));
    plug(
        &lab,
        &mut c1,
        veth_port(
            "a1000000-0000-4000-8000-0000000000a1",
            NET_A,
            "02:aa:00:00:01:11",
            "10.98.0.11",
            &a1,
        ),
        "10.98.0.11",
        &a1,
    );
    plug(
        &lab,
        &mut c2,
        veth_port(
            "a2000000-0000-4000-8000-0000000000a2",
            NET_A,
            "02:aa:00:00:01:12",
            "10.98.0.12",
            &a2,
        ),
        "10.98.0.12",
        &a2,
    );
    lab.rt
        .block_on(c1.set_remotes(remotes(
            NET_A,
            &lab.vtep(2),
            "02:aa:00:00:01:12",
            "10.98.0.12",
        )))
        .unwrap();
    lab.rt
        .block_on(c2.set_remotes(remotes(
            NET_A,
            &lab.vtep(1),
            "02:aa:00:00:01:11",
            "10.98.0.11",
        )))
        .unwrap();
    assert!(lab.ping(&a1, "10.98.0.12"));
    drop((c1, c2));
    let before = (ifindexes(&lab.hv(1)), ifindexes(&lab.hv(2)));

    // 300 pings, 50 ms apart: 15 s of traffic across the restarts.
    let pinger = Command::new("ip")
        .args([
            "netns",
            "exec",
            &a1,
            "ping",
            "-c",
            "300",
            "-i",
            "0.05",
            "-W",
            "1",
            "10.98.0.12",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for (i, sig) in [
        (1, libc::SIGTERM),
        (2, libc::SIGTERM),
        (1, libc::SIGKILL),
        (2, libc::SIGKILL),
    ] {
        lab.stop_netd(i, sig);
        std::thread::sleep(Duration::from_millis(300));
        lab.start_netd(i);
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    let (sent, got) = (nums[0], nums[1]);
    eprintln!("restart ping: {line}");
    assert!(
        sent - got <= 1,
        "lost {} of {sent} packets across restarts",
        sent - got
    );

    let after = (ifindexes(&lab.hv(1)), ifindexes(&lab.hv(2)));
    assert_eq!(before, after, "restarts re-created links");
    for i in 1..=2 {
        let log = std::fs::read_to_string(lab.log(i)).unwrap();
        let starts: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("start reconcile"))
            .collect();
        assert!(starts.len() >= 3, "{log}");
        assert!(
            starts[1..]
                .iter()
                .all(|l| l.contains("added=0 changed=0 removed=0 errors=0")),
            "a restart changed the kernel:\n{log}"
        );
    }
}

#[test]
fn taps_flat_networks_port_events_and_plan() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new("f", 1);
    let hv = lab.hv(1);
    // The "physical" NIC of a flat network (this kernel has no dummy links).
    ok(&[
        "ip",
        "-n",
        &hv,
        "link",
        "add",
        "phys0",
        "type",
        "veth",
        "peer",
        "name",
        "phys0-wire",
    ]);
    // Restart netd with the physical network mapped.
    let _ = std::fs::remove_file(lab.sock(1));
    let log = std::fs::File::create(lab.log(1)).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &hv, env!("CARGO_BIN_EXE_ursa-netd")])
        .arg("--listen")
        .arg(format!("unix:{}", lab.sock(1).display()))
        .args(["--physical-interface", "physnet1:phys0"])
        .arg("--state-dir")
        .arg(lab.dir.path().join("h1"))
        .stderr(log)
        .spawn()
        .unwrap();
    lab.netds[0] = Some(child);
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(lab.sock(1)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "netd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = lab.client(1);
    let flat = "f1a70000-0000-4000-8000-000000000001";
    let net = pb::Network {
        id: flat.into(),
        segment: Some(pb::network::Segment::Flat(pb::Flat {
            physical_network: "physnet1".into(),
        })),
        mtu: 0,
        ..Default::default()
    };
    let r = lab
        .rt
        .block_on(c.ensure_network(net.clone()))
        .unwrap()
        .into_inner();
    let bridge = r.devices[0].clone();
    let phys = ok(&["ip", "-n", &hv, "-o", "link", "show", "phys0"]);
    assert!(
        phys.contains(&format!("master {bridge}")),
        "phys0 not bridged: {phys}"
    );

    // Port events: the stream starts with current statuses, then changes.
    let mut events = lab
        .rt
        .block_on(c.watch_ports(pb::WatchPortsRequest {}))
        .unwrap()
        .into_inner();
    let tap_id = "7a900000-0000-4000-8000-000000000001";
    let tap = pb::Port {
        id: tap_id.into(),
        network_id: flat.into(),
        mac: "02:7a:00:00:00:01".into(),
        fixed_ips: vec![],
        kind: Some(pb::port::Kind::Tap(pb::Tap {})),
        admin_down: false,
        ..Default::default()
    };
    let dev = lab
        .rt
        .block_on(c.ensure_port(tap.clone()))
        .unwrap()
        .into_inner()
        .devices[0]
        .clone();
    let shown = ok(&["ip", "-n", &hv, "-d", "-o", "link", "show", &dev]);
    assert!(
        shown.contains(&format!("master {bridge}"))
            && shown.contains("tun")
            && shown.contains(",UP"),
        "{shown}"
    );
    let next = |events: &mut tonic::Streaming<pb::PortEvent>| {
        lab.rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), events.message()).await
            })
            .expect("an event in time")
            .unwrap()
            .unwrap()
    };
    let e = next(&mut events);
    assert_eq!(
        (e.port_id.as_str(), e.status),
        (tap_id, pb::port_event::Status::Active as i32),
        "{e:?}"
    );
    // A change behind netd's back is reported from the kernel's notifications,
    // well before the next periodic pass.
    ok(&["ip", "-n", &hv, "link", "set", &dev, "down"]);
    let e = next(&mut events);
    assert_eq!(
        (e.port_id.as_str(), e.status),
        (tap_id, pb::port_event::Status::Down as i32),
        "{e:?}"
    );
    lab.rt
        .block_on(c.delete_port(pb::DeleteRequest { id: tap_id.into() }))
        .unwrap();
    let e = next(&mut events);
    assert_eq!(
        (e.port_id.as_str(), e.status),
        (tap_id, pb::port_event::Status::Removed as i32),
        "{e:?}"
    );
    assert!(
        !sh(&["ip", "-n", &hv, "link", "show", &dev])
            .status
            .success(),
        "tap left behind"
    );

    // A dry-run sync of an empty node plans the network's removal and changes nothing.
    let plan = lab
        .rt
        .block_on(c.sync(pb::NodeState {
            dry_run: true,
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    assert!(
        plan.actions
            .iter()
            .any(|a| a.contains(&format!("delete link {bridge}"))),
        "{plan:?}"
    );
    assert!(sh(&["ip", "-n", &hv, "link", "show", &bridge])
        .status
        .success());

    // A Sync leaves the digest of the state it gave (what the controller's
    // periodic resync compares before sending a node everything again);
    // another call that changes the state forgets it, as does a restart.
    let state = pb::NodeState {
        networks: vec![net.clone()],
        ..Default::default()
    };
    lab.rt.block_on(c.sync(state.clone())).unwrap();
    let held = |rt: &tokio::runtime::Runtime, c: &mut pb::netd_client::NetdClient<_>| {
        rt.block_on(c.get_state_digest(pb::StateDigestRequest {}))
            .unwrap()
            .into_inner()
            .digest
    };
    let want = {
        use prost::Message;
        use sha2::Digest;
        sha2::Sha256::digest(state.encode_to_vec()).to_vec()
    };
    assert_eq!(
        held(&lab.rt, &mut c),
        want,
        "the digest of the state synced"
    );
    lab.rt.block_on(c.sync(state.clone())).unwrap();
    assert_eq!(held(&lab.rt, &mut c), want, "the same state again");
    lab.rt
        .block_on(c.ensure_port(pb::Port {
            id: "7a900000-0000-4000-8000-000000000002".into(),
            mac: "02:7a:00:00:00:02".into(),
            ..tap.clone()
        }))
        .unwrap();
    assert!(
        held(&lab.rt, &mut c).is_empty(),
        "a port added since: no digest"
    );
    lab.rt.block_on(c.sync(state.clone())).unwrap();
    assert_eq!(held(&lab.rt, &mut c), want, "synced again");

    // `ursa-netd --plan` on the stored state of a stopped daemon: nothing to
    // do. (The watch stream stays open: SIGTERM must not wait for it.)
    lab.stop_netd(1, libc::SIGTERM);
    drop(events);
    let out = ok(&[
        "ip",
        "netns",
        "exec",
        &hv,
        env!("CARGO_BIN_EXE_ursa-netd"),
        "--plan",
        "--physical-interface",
        "physnet1:phys0",
        "--state-dir",
        lab.dir.path().join("h1").to_str().unwrap(),
    ]);
    assert!(
        out.contains("plan: 0 to add, 0 to change, 0 to remove"),
        "{out}"
    );
    lab.start_netd_with(1, &["--physical-interface", "physnet1:phys0"]);
    let mut c = lab.client(1);
    assert!(
        held(&lab.rt, &mut c).is_empty(),
        "a restarted netd holds no digest"
    );
    lab.rt
        .block_on(c.delete_network(pb::DeleteRequest { id: flat.into() }))
        .unwrap();
    assert!(
        !sh(&["ip", "-n", &hv, "link", "show", &bridge])
            .status
            .success(),
        "bridge left behind"
    );
    let phys = ok(&["ip", "-n", &hv, "-o", "link", "show", "phys0"]);
    assert!(!phys.contains("master"), "phys0 still enslaved: {phys}");
}

fn dhcp_network(id: &str, vni: u32) -> pb::Network {
    pb::Network {
        id: id.into(),
        segment: Some(pb::network::Segment::Vxlan(pb::Vxlan { vni })),
        subnets: vec![pb::Subnet {
            cidr: "10.97.0.0/24".into(),
            gateway_ip: "10.97.0.1".into(),
            dns_nameservers: vec!["10.97.0.53".into()],
            host_routes: vec![pb::HostRoute {
                destination: "172.30.99.0/24".into(),
                nexthop: "10.97.0.1".into(),
            }],
            enable_dhcp: true,
            ..Default::default()
        }],
        dns_domain: "ursa.test".into(),
        ..Default::default()
    }
}

fn env_file(path: &std::path::Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

#[test]
fn dhcp_gives_known_ports_their_address_and_options_and_unknown_macs_nothing() {
    if !can_run() {
        return;
    }
    let have = |t: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("busybox") || !have("dhclient") {
        eprintln!("SKIP dhcp e2e: needs busybox (udhcpc) and dhclient (isc-dhcp-client)");
        return;
    }
    let mut lab = Lab::new("d", 1);
    lab.start_netd(1);
    let mut c = lab.client(1);
    let net = "d4c90000-0000-4000-8000-000000000001";
    lab.rt
        .block_on(c.ensure_network(dhcp_network(net, 7001)))
        .unwrap();
    let (vm1, vm2, vm3) = (lab.vm("v1"), lab.vm("v2"), lab.vm("v3"));
    let port = |id: &str, mac: &str, ip: &str, ns: &str, host: &str| pb::Port {
        hostname: host.into(),
        ..veth_port(id, net, mac, ip, ns)
    };
    lab.rt
        .block_on(c.ensure_port(port(
            "d1000000-0000-4000-8000-000000000001",
            "02:97:00:00:00:21",
            "10.97.0.21",
            &vm1,
            "vm-one",
        )))
        .unwrap();
    lab.rt
        .block_on(c.ensure_port(port(
            "d2000000-0000-4000-8000-000000000002",
            "02:97:00:00:00:22",
            "10.97.0.22",
            &vm2,
            "",
        )))
        .unwrap();
    lab.rt
        .block_on(c.ensure_port(port(
            "d3000000-0000-4000-8000-000000000003",
            "02:97:00:00:00:23",
            "10.97.0.23",
            &vm3,
            "",
        )))
        .unwrap();
    let dir = lab.dir.path().to_path_buf();

    // busybox udhcpc: the script records what the lease said.
    let script = dir.join("udhcpc.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && env > {}/udhcpc.env\nexit 0\n",
            dir.display()
        ),
    )
    .unwrap();
    ok(&["chmod", "+x", script.to_str().unwrap()]);
    let udhcpc = |ns: &str| {
        sh(&[
            "timeout",
            "30",
            "ip",
            "netns",
            "exec",
            ns,
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-f",
            "-n",
            "-q",
            "-t",
            "4",
            "-T",
            "1",
            "-s",
            script.to_str().unwrap(),
            "-O",
            "mtu",
            "-O",
            "staticroutes",
            "-O",
            "hostname",
            "-O",
            "domain",
        ])
    };
    let o = udhcpc(&vm1);
    assert!(
        o.status.success(),
        "udhcpc got no lease: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let e = env_file(&dir.join("udhcpc.env"));
    assert_eq!(e.get("ip").map(String::as_str), Some("10.97.0.21"), "{e:?}");
    assert_eq!(e.get("subnet").map(String::as_str), Some("255.255.255.0"));
    assert_eq!(e.get("router").map(String::as_str), Some("10.97.0.1"));
    assert_eq!(e.get("dns").map(|s| s.trim()), Some("10.97.0.53"));
    assert_eq!(e.get("mtu").map(String::as_str), Some("1450"));
    assert_eq!(e.get("hostname").map(String::as_str), Some("vm-one"));
    assert_eq!(e.get("domain").map(String::as_str), Some("ursa.test"));
    let routes = e.get("staticroutes").cloned().unwrap_or_default();
    assert!(
        routes.contains("172.30.99.0/24 10.97.0.1") && routes.contains("0.0.0.0/0 10.97.0.1"),
        "{routes}"
    );

    // The DHCP address answers ARP, so clients can renew by unicast.
    ok(&[
        "ip",
        "-n",
        &vm1,
        "addr",
        "add",
        "10.97.0.21/24",
        "dev",
        "eth0",
    ]);
    let o = sh(&[
        "ip",
        "netns",
        "exec",
        &vm1,
        "busybox",
        "arping",
        "-c",
        "2",
        "-w",
        "4",
        "-I",
        "eth0",
        "10.97.0.254",
    ]);
    assert!(
        o.status.success(),
        "no ARP answer for the DHCP address: {}",
        String::from_utf8_lossy(&o.stdout)
    );

    // ISC dhclient, asked for MTU and classless routes.
    let conf = dir.join("dhclient.conf");
    std::fs::write(&conf, "option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;\n\
        request subnet-mask, routers, domain-name-servers, domain-name, host-name, interface-mtu, rfc3442-classless-static-routes;\n").unwrap();
    let dscript = dir.join("dhclient.sh");
    std::fs::write(
        &dscript,
        format!(
            "#!/bin/sh\n[ \"$reason\" = BOUND ] && env > {}/dhclient.env\nexit 0\n",
            dir.display()
        ),
    )
    .unwrap();
    ok(&["chmod", "+x", dscript.to_str().unwrap()]);
    let pid = dir.join("dhclient.pid");
    let o = sh(&[
        "timeout",
        "40",
        "ip",
        "netns",
        "exec",
        &vm2,
        "dhclient",
        "-1",
        "-cf",
        conf.to_str().unwrap(),
        "-sf",
        dscript.to_str().unwrap(),
        "-lf",
        dir.join("dhclient.leases").to_str().unwrap(),
        "-pf",
        pid.to_str().unwrap(),
        "eth0",
    ]);
    if let Ok(p) = std::fs::read_to_string(&pid) {
        let _ = sh(&["kill", p.trim()]);
    }
    assert!(
        o.status.success(),
        "dhclient got no lease: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let e = env_file(&dir.join("dhclient.env"));
    assert_eq!(
        e.get("new_ip_address").map(String::as_str),
        Some("10.97.0.22"),
        "{e:?}"
    );
    assert_eq!(e.get("new_routers").map(String::as_str), Some("10.97.0.1"));
    assert_eq!(e.get("new_interface_mtu").map(String::as_str), Some("1450"));
    assert_eq!(
        e.get("new_host_name").map(String::as_str),
        Some("host-10-97-0-22")
    );
    let r = e
        .get("new_rfc3442_classless_static_routes")
        .cloned()
        .unwrap_or_default();
    assert!(r.contains("24 172 30 99 10 97 0 1"), "{r}");

    // A MAC netd does not know gets nothing.
    ok(&["ip", "-n", &vm3, "link", "set", "eth0", "down"]);
    ok(&[
        "ip",
        "-n",
        &vm3,
        "link",
        "set",
        "eth0",
        "address",
        "02:97:00:00:00:99",
    ]);
    let _ = std::fs::remove_file(dir.join("udhcpc.env"));
    let o = udhcpc(&vm3);
    assert!(
        !o.status.success() && !dir.join("udhcpc.env").exists(),
        "an unknown MAC got a lease"
    );

    // Leases come from the desired state: a restarted netd answers the same.
    lab.stop_netd(1, libc::SIGKILL);
    lab.start_netd(1);
    let o = udhcpc(&vm1);
    assert!(o.status.success(), "no lease after restart");
    assert_eq!(
        env_file(&dir.join("udhcpc.env"))
            .get("ip")
            .map(String::as_str),
        Some("10.97.0.21")
    );
}
