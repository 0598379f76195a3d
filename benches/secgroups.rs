//! `cargo bench --bench secgroups`: security groups with 10,000 rules,
//! netd (nftables: interval sets, one transaction) beside the iptables way
//! Neutron's hybrid firewall works (a linear chain per port behind
//! `physdev`, loaded with iptables-restore), on the same two ports of one
//! bridge:
//!
//! - `secgroups-install`: the time to put 10,000 rules in place: netd's
//!   whole EnsureSecurityGroup call (validate, persist, compile, one nft
//!   transaction) against one iptables-restore of the same rules.
//! - `secgroups-throughput`: one TCP stream (iperf3) into the filtered port.
//! - `secgroups-newconn`: new TCP connections per second into the filtered
//!   port, where every SYN is matched against the rules (the rule that
//!   allows it is the last of the 10,000).
//!
//! Each line is `BENCH <name> ours=… peer=… ratio=…` (higher is better for
//! Ursa; for the install time the ratio is peer/ours).

#[path = "../tests/netlab/mod.rs"]
mod netlab;

use netlab::*;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};
use ursa_proto::netd::v1 as pb;

const NET: &str = "9e000000-0000-4000-8000-0000000000e1";
const SG: &str = "9f000000-0000-4000-8000-0000000000f1";
const SRV_PORT: &str = "9a100000-0000-4000-8000-000000000001";
const CLI_PORT: &str = "9a200000-0000-4000-8000-000000000002";
const RULES: u32 = 10_000;
const CONN_PORT: u16 = 7777;

fn rules() -> Vec<(String, u16)> {
    // 9,999 rules that never match the test traffic, then the ones that do.
    let mut v: Vec<(String, u16)> = (0..RULES - 2)
        .map(|i| {
            (
                format!("172.{}.{}.0/24", 16 + i / 256 % 16, i % 256),
                (1000 + i % 4000) as u16,
            )
        })
        .collect();
    v.push(("10.63.0.6/32".into(), 5201));
    v.push(("10.63.0.6/32".into(), CONN_PORT));
    v
}

/// Runs `f` on a thread inside the named namespace.
fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let f_ns = std::fs::File::open(&path).expect("namespace");
        // SAFETY: changes only this thread's namespace.
        assert_eq!(
            unsafe { libc::setns(f_ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
}

/// New connections per second from `cli` to `srv` for `secs`.
fn conn_rate(srv: &str, cli: &str, secs: f64) -> f64 {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let server = in_ns(srv, move || {
        let l = std::net::TcpListener::bind(("0.0.0.0", CONN_PORT)).expect("listen");
        l.set_nonblocking(true).unwrap();
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            match l.accept() {
                Ok((c, _)) => drop(c),
                Err(_) => std::thread::sleep(Duration::from_micros(50)),
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let n = in_ns(cli, move || {
        let t0 = Instant::now();
        let mut n = 0u64;
        let to: std::net::SocketAddr = ([10, 63, 0, 5], CONN_PORT).into();
        while t0.elapsed().as_secs_f64() < secs {
            if let Ok(c) = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                // Close with RST: no TIME_WAIT to run out of ports.
                let l = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: setsockopt on a socket we own with a valid struct.
                unsafe {
                    libc::setsockopt(
                        c.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        &l as *const _ as *const libc::c_void,
                        std::mem::size_of::<libc::linger>() as u32,
                    );
                }
                n += 1;
            }
        }
        n as f64 / t0.elapsed().as_secs_f64()
    })
    .join()
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
    n
}

fn iperf(srv: &str, cli: &str) -> f64 {
    let mut server = Command::new("ip")
        .args(["netns", "exec", srv, "iperf3", "-s", "-1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = ok(&[
        "ip",
        "netns",
        "exec",
        cli,
        "iperf3",
        "-c",
        "10.63.0.5",
        "-t",
        "4",
        "-J",
    ]);
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let have = |t: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !can_run() || !have("iperf3") || !have("iptables-restore") || !have("nft") {
        println!(
            "SKIP secgroups bench: needs root, iperf3, iptables (iptables-restore) and nftables"
        );
        return;
    }
    let mut lab = Lab::new("g", 1);
    let hv = lab.hv(1);
    lab.start_netd(1);
    let mut c = lab.client(1);
    lab.rt
        .block_on(c.ensure_network(pb::Network {
            id: NET.into(),
            segment: Some(pb::network::Segment::Vxlan(pb::Vxlan { vni: 7301 })),
            ..Default::default()
        }))
        .unwrap();
    let mut port = |id: &str, name: &str, mac: &str, ip: &str, groups: Vec<String>| {
        let ns = lab.vm(name);
        lab.rt
            .block_on(c.ensure_port(pb::Port {
                id: id.into(),
                network_id: NET.into(),
                mac: mac.into(),
                fixed_ips: vec![format!("{ip}/24")],
                kind: Some(pb::port::Kind::Veth(pb::Veth {
                    netns: ns.clone(),
                    ifname: "eth0".into(),
                    up: true,
                })),
                port_security: true,
                security_groups: groups,
                ..Default::default()
            }))
            .unwrap();
        ok(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        ns
    };
    let srv = port(
        SRV_PORT,
        "srv",
        "02:63:00:00:00:05",
        "10.63.0.5",
        vec![SG.into()],
    );
    let cli = port(
        CLI_PORT,
        "cli",
        "02:63:00:00:00:06",
        "10.63.0.6",
        vec![SG.into()],
    );
    let rules = rules();
    let mut sg_rules: Vec<pb::SecurityGroupRule> = rules
        .iter()
        .map(|(cidr, p)| pb::SecurityGroupRule {
            direction: "ingress".into(),
            ethertype: "IPv4".into(),
            protocol: "tcp".into(),
            port_range_min: *p as u32,
            port_range_max: *p as u32,
            remote_ip_prefix: cidr.clone(),
            ..Default::default()
        })
        .collect();
    sg_rules.push(pb::SecurityGroupRule {
        direction: "egress".into(),
        ethertype: "IPv4".into(),
        ..Default::default()
    });
    let t0 = Instant::now();
    let rep = lab
        .rt
        .block_on(c.ensure_security_group(pb::SecurityGroup {
            id: SG.into(),
            rules: sg_rules,
            remote_members: vec![],
        }))
        .expect("security group")
        .into_inner();
    let ours_install = t0.elapsed().as_secs_f64() * 1e3;
    println!(
        "netd: {} rules in place in {ours_install:.1} ms ({:?})",
        rules.len() + 1,
        rep.report.map(|r| r.actions).unwrap_or_default()
    );
    let ours_tp = iperf(&srv, &cli);
    let ours_cr = conn_rate(&srv, &cli, 3.0);
    println!("netd: throughput {ours_tp:.2} Gbit/s, {ours_cr:.0} new connections/s");

    // The peer: the same rules the way Neutron's iptables firewall loads them.
    lab.stop_netd(1, libc::SIGKILL);
    ok(&[
        "ip", "netns", "exec", &hv, "nft", "delete", "table", "inet", "ursa_sg",
    ]);
    ok(&[
        "ip",
        "netns",
        "exec",
        &hv,
        "nft",
        "delete",
        "table",
        "bridge",
        "ursa_guard",
    ]);
    let dev = format!("uve-{}", &SRV_PORT.replace('-', "")[..11]);
    let mut doc = String::from("*filter\n:neutron-i-srv - [0:0]\n");
    doc.push_str("-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    doc.push_str(&format!(
        "-A FORWARD -m physdev --physdev-out {dev} --physdev-is-bridged -j neutron-i-srv\n"
    ));
    for (cidr, p) in &rules {
        doc.push_str(&format!(
            "-A neutron-i-srv -s {cidr} -p tcp -m tcp --dport {p} -j RETURN\n"
        ));
    }
    doc.push_str("-A neutron-i-srv -j DROP\nCOMMIT\n");
    let file = lab.dir.path().join("rules.v4");
    std::fs::write(&file, doc).unwrap();
    let version = ok(&["iptables-restore", "--version"]);
    let t0 = Instant::now();
    ok(&[
        "ip",
        "netns",
        "exec",
        &hv,
        "iptables-restore",
        "--noflush",
        &file.display().to_string(),
    ]);
    let peer_install = t0.elapsed().as_secs_f64() * 1e3;
    println!(
        "iptables-restore ({}): {} rules in {peer_install:.1} ms",
        version.trim(),
        rules.len()
    );
    // RETURN from the port chain falls through to FORWARD's ACCEPT policy.
    let peer_tp = iperf(&srv, &cli);
    let peer_cr = conn_rate(&srv, &cli, 3.0);
    println!("iptables: throughput {peer_tp:.2} Gbit/s, {peer_cr:.0} new connections/s");
    let _ = Command::new("ip")
        .args(["netns", "exec", &hv, "iptables", "-F"])
        .output();

    println!(
        "BENCH secgroups-install ours={ours_install:.1} peer={peer_install:.1} ratio={:.2} unit=ms",
        peer_install / ours_install.max(0.001)
    );
    println!(
        "BENCH secgroups-throughput ours={ours_tp:.2} peer={peer_tp:.2} ratio={:.2} unit=Gbit/s",
        ours_tp / peer_tp.max(1e-9)
    );
    println!(
        "BENCH secgroups-newconn ours={ours_cr:.0} peer={peer_cr:.0} ratio={:.2} unit=conn/s",
        ours_cr / peer_cr.max(1e-9)
    );
}
