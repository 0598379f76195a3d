//! netd's L3 services end to end on the real kernel: a router namespace with
//! SNAT, floating IPs, extra routes and the metadata proxy; security groups
//! with conntrack, remote groups and anti-spoofing; and an established TCP
//! connection that survives a netd restart. "VM"s and the "internet" are
//! namespaces; the test talks to them with `ip`, `ping`, `curl` and small
//! Python TCP programs (Debian's python3).

mod netlab;
use netlab::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use tonic::transport::Channel;
use ursa_proto::netd::v1 as pb;
use ursa_proto::netd::v1::netd_client::NetdClient;

const EXT: &str = "e0000000-0000-4000-8000-00000000000e";
const N1: &str = "11000000-0000-4000-8000-000000000001";
const N2: &str = "22000000-0000-4000-8000-000000000002";
const N3: &str = "33000000-0000-4000-8000-000000000003";
const SECRET: &str = "test-metadata-secret";

/// Answers each connection with the peer address it sees, then echoes lines.
const ECHO: &str = r#"
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        c, a = s.accept()
        def run(c=c, a=a):
            f = c.makefile("rwb", buffering=0)
            f.write((a[0] + "\n").encode())
            for line in f:
                f.write(line)
        threading.Thread(target=run, daemon=True).start()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// Connects, prints what the server said, then relays stdin lines and
/// prints each echo (one connection for its whole life).
const CLIENT: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
f = c.makefile("rwb", buffering=0)
print(f.readline().decode().strip(), flush=True)
for line in sys.stdin:
    f.write(line.encode())
    print(f.readline().decode().strip(), flush=True)
"#;

/// Echoes the request's headers back as the body ("Name: value" lines).
const UPSTREAM: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = "".join(f"{k}: {v}\n" for k, v in self.headers.items()).encode()
        body += f"path: {self.path}\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

fn tools() -> bool {
    let ok = ["python3", "curl", "nft", "nsenter"]
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok());
    if !ok {
        eprintln!("SKIP netd services: needs python3, curl, nft (nftables) and nsenter");
    }
    ok
}

/// Waits until the upstream stand-in answers in the hypervisor's namespace.
fn wait_upstream(hv: &str, port: &str) {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(20) {
        let o = sh(&[
            "ip",
            "netns",
            "exec",
            hv,
            "curl",
            "-s",
            "--max-time",
            "1",
            &format!("http://127.0.0.1:{port}/"),
        ]);
        if o.status.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the metadata upstream stand-in did not start");
}

/// Starts the metadata API stand-in on `port` in the hypervisor's
/// namespace (where netd runs) and returns it with the netd flags that
/// point the proxy at it.
fn metadata_upstream(lab: &Lab, port: &str) -> (Procs, Vec<String>) {
    let hv = lab.hv(1);
    let up = script(lab, "upstream.py", UPSTREAM);
    let procs = Procs(vec![Command::new("ip")
        .args(["netns", "exec", &hv, "python3", &up, port])
        .spawn()
        .unwrap()]);
    wait_upstream(&hv, port);
    let secret = lab.dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let args = vec![
        "--metadata-upstream".to_string(),
        format!("http://127.0.0.1:{port}"),
        "--metadata-secret-file".to_string(),
        secret.display().to_string(),
    ];
    (procs, args)
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn script(lab: &Lab, name: &str, text: &str) -> String {
    let p = lab.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Starts the echo server in `ns` on `ports` and waits until it listens.
fn echo_server(lab: &Lab, ns: &str, ports: &[&str]) -> Child {
    let s = script(lab, "echo.py", ECHO);
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns, "python3", &s])
        .args(ports)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    std::thread::sleep(std::time::Duration::from_millis(200));
    c
}

/// Opens one TCP connection from `ns`; returns what the server saw as our address.
fn whoami(ns: &str, host: &str, port: &str) -> Option<String> {
    let o = sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "timeout",
        "4",
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{host}/{port}; head -1 <&3"),
    ]);
    let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !s.is_empty()).then_some(s)
}

fn connects(ns: &str, host: &str, port: &str) -> bool {
    whoami(ns, host, port).is_some()
}

struct Conn {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    pub hello: String,
}

impl Conn {
    fn open(lab: &Lab, ns: &str, host: &str, port: &str) -> Conn {
        let s = script(lab, "client.py", CLIENT);
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", &s, host, port])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut hello = String::new();
        out.read_line(&mut hello).unwrap();
        Conn {
            child,
            stdin,
            out,
            hello: hello.trim().to_string(),
        }
    }

    fn echo(&mut self, s: &str) -> String {
        writeln!(self.stdin, "{s}").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vxlan_net(id: &str, vni: u32, cidr: &str, gw: &str) -> pb::Network {
    pb::Network {
        id: id.into(),
        segment: Some(pb::network::Segment::Vxlan(pb::Vxlan { vni })),
        subnets: vec![pb::Subnet {
            cidr: cidr.into(),
            gateway_ip: gw.into(),
            enable_dhcp: false,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A VM namespace with a port on `net`, its address and default route set by hand.
struct VmSpec<'a> {
    name: &'a str,
    port: &'a str,
    net: &'a str,
    mac: &'a str,
    ip: &'a str,
    gw: &'a str,
}

fn vm_on(
    lab: &Lab,
    c: &mut NetdClient<Channel>,
    v: VmSpec,
    tune: impl FnOnce(&mut pb::Port),
) -> String {
    let VmSpec {
        name,
        port: port_id,
        net,
        mac,
        ip,
        gw,
    } = v;
    let ns = lab.vm(name);
    let mut p = pb::Port {
        id: port_id.into(),
        network_id: net.into(),
        mac: mac.into(),
        fixed_ips: vec![format!("{ip}/24")],
        kind: Some(pb::port::Kind::Veth(pb::Veth {
            netns: ns.clone(),
            ifname: "eth0".into(),
            up: true,
        })),
        ..Default::default()
    };
    tune(&mut p);
    lab.rt.block_on(c.ensure_port(p)).expect("ensure port");
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
    ok(&["ip", "-n", &ns, "route", "add", "default", "via", gw]);
    ns
}

fn leg(port: &str, net: &str, mac: &str, ip: &str) -> pb::RouterInterface {
    pb::RouterInterface {
        port_id: port.into(),
        network_id: net.into(),
        mac: mac.into(),
        ip_address: ip.into(),
    }
}

#[test]
fn router_snat_floating_ips_metadata_and_restart() {
    if !can_run() || !tools() {
        return;
    }
    let mut lab = Lab::new("r", 1);
    let hv = lab.hv(1);
    // The "internet": a namespace on the far side of the hypervisor's ext0.
    let inet = lab.vm("inet");
    ok(&[
        "ip", "-n", &hv, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns",
        &inet,
    ]);
    ok(&["ip", "-n", &hv, "link", "set", "ext0", "up"]);
    ok(&[
        "ip",
        "-n",
        &inet,
        "addr",
        "add",
        "203.0.113.1/24",
        "dev",
        "eth0",
    ]);
    ok(&["ip", "-n", &inet, "link", "set", "eth0", "up"]);
    let (mut procs, md) = metadata_upstream(&lab, "18775");
    let mut args = vec!["--physical-interface", "ext:ext0"];
    args.extend(md.iter().map(String::as_str));
    lab.start_netd_with(1, &args);
    let mut c = lab.client(1);
    let ext = pb::Network {
        id: EXT.into(),
        segment: Some(pb::network::Segment::Flat(pb::Flat {
            physical_network: "ext".into(),
        })),
        ..Default::default()
    };
    for n in [
        ext,
        vxlan_net(N1, 7001, "10.61.1.0/24", "10.61.1.1"),
        vxlan_net(N2, 7002, "10.61.2.0/24", "10.61.2.1"),
        vxlan_net(N3, 7003, "10.61.3.0/24", "10.61.3.1"),
    ] {
        lab.rt.block_on(c.ensure_network(n)).expect("network");
    }
    let a = vm_on(
        &lab,
        &mut c,
        VmSpec {
            name: "a",
            port: "a0000000-0000-4000-8000-00000000000a",
            net: N1,
            mac: "02:61:00:00:00:0a",
            ip: "10.61.1.5",
            gw: "10.61.1.1",
        },
        |p| {
            p.device_id = "instance-a".into();
            p.project_id = "project-a".into();
        },
    );
    let b = vm_on(
        &lab,
        &mut c,
        VmSpec {
            name: "b",
            port: "b0000000-0000-4000-8000-00000000000b",
            net: N2,
            mac: "02:61:00:00:00:0b",
            ip: "10.61.2.5",
            gw: "10.61.2.1",
        },
        |_| {},
    );
    let vc = vm_on(
        &lab,
        &mut c,
        VmSpec {
            name: "c",
            port: "c0000000-0000-4000-8000-00000000000c",
            net: N3,
            mac: "02:61:00:00:00:0c",
            ip: "10.61.3.5",
            gw: "10.61.3.1",
        },
        |_| {},
    );
    let router_id = "f0000000-0000-4000-8000-0000000000f1";
    lab.extra_ns
        .borrow_mut()
        .push(format!("urt-{}", &router_id.replace('-', "")[..11]));
    let router = pb::Router {
        id: router_id.into(),
        interfaces: vec![
            leg(
                "f1000000-0000-4000-8000-000000000001",
                N1,
                "02:61:00:00:01:01",
                "10.61.1.1/24",
            ),
            leg(
                "f2000000-0000-4000-8000-000000000002",
                N2,
                "02:61:00:00:01:02",
                "10.61.2.1/24",
            ),
        ],
        gateway: Some(pb::RouterGateway {
            port_id: "f3000000-0000-4000-8000-000000000003".into(),
            network_id: EXT.into(),
            mac: "02:61:00:00:01:03".into(),
            ip_address: "203.0.113.10/24".into(),
            nexthop: "203.0.113.1".into(),
            enable_snat: true,
        }),
        routes: vec![],
        floating_ips: vec![pb::FloatingIp {
            floating_ip: "203.0.113.20".into(),
            fixed_ip: "10.61.1.5".into(),
        }],
    };
    let r = lab
        .rt
        .block_on(c.ensure_router(router.clone()))
        .expect("ensure router")
        .into_inner();
    let ns = r.devices[0].clone();
    assert!(ns.starts_with("urt-"), "{r:?}");
    let addrs = ok(&["ip", "-n", &ns, "-br", "addr"]);
    assert!(
        addrs.contains("10.61.1.1/24") && addrs.contains("203.0.113.20/32"),
        "{addrs}"
    );

    // Legs: a VM pings its router; the router joins N1 and N2 only.
    assert!(lab.ping(&a, "10.61.1.1"), "a cannot reach its router");
    assert!(
        lab.ping(&a, "10.61.2.5"),
        "a cannot reach b through the router"
    );
    assert!(
        lab.ping(&b, "10.61.1.5"),
        "b cannot reach a through the router"
    );
    assert!(
        !lab.ping(&a, "10.61.3.5"),
        "a reached c, whose network the router does not join"
    );
    assert!(!lab.ping(&vc, "10.61.1.5"), "c reached a without a router");

    // SNAT and floating IPs, as the internet sees them.
    procs.0.push(echo_server(&lab, &inet, &["7000"]));
    assert_eq!(
        whoami(&b, "203.0.113.1", "7000").as_deref(),
        Some("203.0.113.10"),
        "b does not leave through the router's SNAT address"
    );
    assert_eq!(
        whoami(&a, "203.0.113.1", "7000").as_deref(),
        Some("203.0.113.20"),
        "a does not leave through its floating IP"
    );
    procs.0.push(echo_server(&lab, &a, &["7100"]));
    assert_eq!(
        whoami(&inet, "203.0.113.20", "7100").as_deref(),
        Some("203.0.113.1"),
        "the floating IP does not reach a from outside"
    );
    // Hairpin: b reaches a's floating IP from inside, and a sees the router.
    assert_eq!(
        whoami(&b, "203.0.113.20", "7100").as_deref(),
        Some("10.61.1.1"),
        "a floating IP is not reachable from inside"
    );
    assert!(
        !connects(&inet, "10.61.1.5", "7100"),
        "a's fixed IP is reachable from outside"
    );

    // Metadata: the proxy adds who the caller is, signed; forged headers are dropped.
    let md = ok(&[
        "ip",
        "netns",
        "exec",
        &a,
        "curl",
        "-sS",
        "--max-time",
        "5",
        "-H",
        "X-Instance-ID: someone-else",
        "http://169.254.169.254/openstack/latest/meta_data.json",
    ]);
    let sig = ursa_netd::metadata::sign(SECRET.as_bytes(), "instance-a");
    for want in [
        "X-Instance-ID: instance-a\n".to_string(),
        "X-Tenant-ID: project-a\n".to_string(),
        format!("X-Instance-ID-Signature: {sig}\n"),
        "X-Forwarded-For: 10.61.1.5\n".to_string(),
        "path: /openstack/latest/meta_data.json\n".to_string(),
    ] {
        let want = want.to_ascii_lowercase();
        assert!(
            md.to_ascii_lowercase().contains(&want),
            "upstream did not get {want:?}:\n{md}"
        );
    }
    assert!(
        !md.contains("someone-else"),
        "a forged header went through:\n{md}"
    );

    // Restart: NAT sessions survive, and everything still works after.
    let mut snat = Conn::open(&lab, &b, "203.0.113.1", "7000");
    assert_eq!(snat.hello, "203.0.113.10");
    assert_eq!(snat.echo("before"), "before");
    let mut dnat = Conn::open(&lab, &inet, "203.0.113.20", "7100");
    assert_eq!(dnat.echo("before"), "before");
    lab.stop_netd(1, libc::SIGTERM);
    assert_eq!(snat.echo("while-down"), "while-down");
    lab.start_netd_with(1, &args);
    let mut c = lab.client(1);
    lab.rt
        .block_on(c.ensure_router(router.clone()))
        .expect("router again");
    assert_eq!(
        snat.echo("after"),
        "after",
        "SNAT session lost across restart"
    );
    assert_eq!(
        dnat.echo("after"),
        "after",
        "floating IP session lost across restart"
    );
    assert!(lab.ping(&inet, "203.0.113.20"));
    let md = ok(&[
        "ip",
        "netns",
        "exec",
        &a,
        "curl",
        "-sS",
        "--max-time",
        "5",
        "http://169.254.169.254/latest/meta-data/",
    ]);
    assert!(
        md.to_ascii_lowercase()
            .contains("x-instance-id: instance-a"),
        "{md}"
    );

    // Extra routes: the router sends 10.61.9.0/24 to b (which does not
    // forward, so only the route itself is checked).
    let mut r2 = router.clone();
    r2.routes = vec![pb::HostRoute {
        destination: "10.61.9.0/24".into(),
        nexthop: "10.61.2.5".into(),
    }];
    lab.rt.block_on(c.ensure_router(r2)).expect("extra route");
    let routes = ok(&["ip", "-n", &ns, "route"]);
    assert!(routes.contains("10.61.9.0/24 via 10.61.2.5"), "{routes}");
    assert!(routes.contains("default via 203.0.113.1"), "{routes}");

    // Bad input changes nothing.
    let mut bad = router.clone();
    bad.floating_ips[0].fixed_ip = "10.61.3.5".into();
    let e = lab.rt.block_on(c.ensure_router(bad)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(lab.ping(&inet, "203.0.113.20"));

    // Deleting the router removes its namespace and the paths through it.
    lab.rt
        .block_on(c.delete_router(pb::DeleteRequest {
            id: router_id.into(),
        }))
        .expect("delete router");
    assert!(!std::path::Path::new("/run/netns").join(&ns).exists());
    assert!(!lab.ping(&a, "10.61.2.5"));
    drop(procs);
}

const NS_NET: &str = "55000000-0000-4000-8000-000000000005";
const SG_WEB: &str = "5e000000-0000-4000-8000-0000000000e1";
const SG_CLI: &str = "5c000000-0000-4000-8000-0000000000c1";
const SG_ADMIN: &str = "5a000000-0000-4000-8000-0000000000a1";

fn rule(dir: &str, proto: &str, min: u32, max: u32, remote_group: &str) -> pb::SecurityGroupRule {
    pb::SecurityGroupRule {
        direction: dir.into(),
        ethertype: "IPv4".into(),
        protocol: proto.into(),
        port_range_min: min,
        port_range_max: max,
        remote_group_id: remote_group.into(),
        ..Default::default()
    }
}

fn chain_handles(hv: &str) -> String {
    let out = ok(&[
        "ip", "netns", "exec", hv, "nft", "-a", "list", "table", "inet", "ursa_sg",
    ]);
    // Rules and their handles, without the set elements.
    out.lines()
        .filter(|l| l.contains("# handle") && !l.contains("elements"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn security_groups_filter_statefully_follow_membership_and_stop_spoofing() {
    if !can_run() || !tools() {
        return;
    }
    let mut lab = Lab::new("s", 1);
    let hv = lab.hv(1);
    lab.start_netd(1);
    let mut c = lab.client(1);
    lab.rt
        .block_on(c.ensure_network(vxlan_net(NS_NET, 7101, "10.62.0.0/24", "")))
        .unwrap();
    let web = pb::SecurityGroup {
        id: SG_WEB.into(),
        rules: vec![
            rule("ingress", "tcp", 8080, 8080, ""),
            rule("ingress", "icmp", 0, 0, ""),
            rule("ingress", "tcp", 9999, 9999, SG_ADMIN),
            rule("egress", "", 0, 0, ""),
        ],
        remote_members: vec![],
    };
    let cli = pb::SecurityGroup {
        id: SG_CLI.into(),
        rules: vec![
            rule("egress", "", 0, 0, ""),
            rule("ingress", "icmp", 0, 0, ""),
        ],
        remote_members: vec![],
    };
    let admin = pb::SecurityGroup {
        id: SG_ADMIN.into(),
        rules: vec![],
        remote_members: vec![],
    };
    for g in [web.clone(), cli.clone(), admin.clone()] {
        lab.rt.block_on(c.ensure_security_group(g)).unwrap();
    }
    let secure = |groups: Vec<&str>| {
        let groups: Vec<String> = groups.into_iter().map(String::from).collect();
        move |p: &mut pb::Port| {
            p.port_security = true;
            p.security_groups = groups;
        }
    };
    let sp = "5f100000-0000-4000-8000-000000000001";
    let xp = "5f200000-0000-4000-8000-000000000002";
    let s = vm_on(
        &lab,
        &mut c,
        VmSpec {
            name: "srv",
            port: sp,
            net: NS_NET,
            mac: "02:62:00:00:00:05",
            ip: "10.62.0.5",
            gw: "10.62.0.1",
        },
        secure(vec![SG_WEB]),
    );
    let x = vm_on(
        &lab,
        &mut c,
        VmSpec {
            name: "cli",
            port: xp,
            net: NS_NET,
            mac: "02:62:00:00:00:06",
            ip: "10.62.0.6",
            gw: "10.62.0.1",
        },
        secure(vec![SG_CLI]),
    );
    let _srv = Procs(vec![echo_server(&lab, &s, &["8080", "9090", "9999"])]);

    assert!(
        lab.ping(&x, "10.62.0.5"),
        "ICMP allowed by the server's group"
    );
    assert!(connects(&x, "10.62.0.5", "8080"), "tcp/8080 is allowed");
    assert!(
        !connects(&x, "10.62.0.5", "9090"),
        "tcp/9090 is not allowed"
    );
    assert!(
        !connects(&x, "10.62.0.5", "9999"),
        "tcp/9999 is for the admin group"
    );
    assert!(
        !connects(&s, "10.62.0.6", "8080"),
        "nothing may enter the client unasked"
    );

    // A member joins the admin group (on another node): one set update,
    // the rules keep their handles.
    let before = chain_handles(&hv);
    let mut admin2 = admin.clone();
    admin2.remote_members = vec!["10.62.0.6".into()];
    let rep = lab
        .rt
        .block_on(c.ensure_security_group(admin2))
        .unwrap()
        .into_inner();
    assert_eq!(
        chain_handles(&hv),
        before,
        "a membership change rewrote rules"
    );
    assert!(
        rep.report
            .unwrap()
            .actions
            .iter()
            .any(|a| a.contains("security groups")),
        "no nftables transaction reported"
    );
    assert!(
        connects(&x, "10.62.0.5", "9999"),
        "the new admin member is refused"
    );
    lab.rt
        .block_on(c.ensure_security_group(admin.clone()))
        .unwrap();
    assert!(
        !connects(&x, "10.62.0.5", "9999"),
        "the old admin member still connects"
    );
    // The same through the port itself joining the group.
    let mut xport = pb::Port {
        id: xp.into(),
        network_id: NS_NET.into(),
        mac: "02:62:00:00:00:06".into(),
        fixed_ips: vec!["10.62.0.6/24".into()],
        kind: Some(pb::port::Kind::Veth(pb::Veth {
            netns: x.clone(),
            ifname: "eth0".into(),
            up: true,
        })),
        port_security: true,
        security_groups: vec![SG_CLI.into(), SG_ADMIN.into()],
        ..Default::default()
    };
    lab.rt.block_on(c.ensure_port(xport.clone())).unwrap();
    assert!(
        connects(&x, "10.62.0.5", "9999"),
        "the port that joined is refused"
    );

    // An established flow survives a netd restart (the ruleset is replaced
    // whole when netd starts).
    let mut conn = Conn::open(&lab, &x, "10.62.0.5", "8080");
    assert_eq!(conn.echo("one"), "one");
    lab.stop_netd(1, libc::SIGKILL);
    lab.start_netd(1);
    let mut c = lab.client(1);
    lab.rt.block_on(c.ensure_port(xport.clone())).unwrap();
    assert_eq!(
        conn.echo("two"),
        "two",
        "established flow cut by the restart"
    );
    assert!(!connects(&x, "10.62.0.5", "9090"));

    // Spoofing: another source address, then another MAC.
    ok(&[
        "ip",
        "-n",
        &x,
        "addr",
        "add",
        "10.62.0.66/24",
        "dev",
        "eth0",
    ]);
    let spoofed = sh(&[
        "ip",
        "netns",
        "exec",
        &x,
        "ping",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "1",
        "-I",
        "10.62.0.66",
        "10.62.0.5",
    ]);
    assert!(
        !spoofed.status.success(),
        "a spoofed source address got through"
    );
    assert!(lab.ping(&x, "10.62.0.5"));
    ok(&[
        "ip",
        "-n",
        &x,
        "addr",
        "del",
        "10.62.0.66/24",
        "dev",
        "eth0",
    ]);
    ok(&[
        "ip",
        "-n",
        &x,
        "link",
        "set",
        "eth0",
        "address",
        "02:62:00:00:00:99",
    ]);
    ok(&["ip", "-n", &x, "neigh", "flush", "all"]);
    ok(&["ip", "-n", &s, "neigh", "flush", "all"]);
    assert!(!lab.ping(&x, "10.62.0.5"), "a spoofed MAC got through");
    // An allowed address pair lets the port use the other MAC and address.
    xport.allowed_address_pairs = vec![pb::AddressPair {
        ip_address: "10.62.0.66".into(),
        mac_address: "02:62:00:00:00:99".into(),
    }];
    lab.rt.block_on(c.ensure_port(xport)).unwrap();
    // (The failed attempt left the neighbour FAILED; start afresh.) The
    // pair is exact: the other MAC with the other address passes, the
    // other MAC with the port's own address does not.
    ok(&["ip", "-n", &x, "neigh", "flush", "all"]);
    ok(&[
        "ip",
        "-n",
        &x,
        "addr",
        "add",
        "10.62.0.66/24",
        "dev",
        "eth0",
    ]);
    let from = |src: &str| {
        sh(&[
            "ip",
            "netns",
            "exec",
            &x,
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            "-I",
            src,
            "10.62.0.5",
        ])
        .status
        .success()
    };
    assert!(from("10.62.0.66"), "an allowed address pair is refused");
    assert!(
        !from("10.62.0.6"),
        "the pair's MAC passed with another address"
    );

    // Removing the group from the server leaves it unreachable (default drop).
    let sport = pb::Port {
        id: sp.into(),
        network_id: NS_NET.into(),
        mac: "02:62:00:00:00:05".into(),
        fixed_ips: vec!["10.62.0.5/24".into()],
        kind: Some(pb::port::Kind::Veth(pb::Veth {
            netns: s.clone(),
            ifname: "eth0".into(),
            up: true,
        })),
        port_security: true,
        security_groups: vec![],
        ..Default::default()
    };
    lab.rt.block_on(c.ensure_port(sport)).unwrap();
    assert!(!connects(&x, "10.62.0.5", "8080"));
}

const NI: &str = "66000000-0000-4000-8000-000000000006";

#[test]
fn a_network_without_router_gets_dhcp_and_metadata_from_its_namespace() {
    if !can_run() || !tools() {
        return;
    }
    if Command::new("busybox").arg("--help").output().is_err() {
        eprintln!("SKIP isolated metadata: needs busybox (udhcpc)");
        return;
    }
    let mut lab = Lab::new("i", 1);
    let (procs, md) = metadata_upstream(&lab, "18776");
    let args: Vec<&str> = md.iter().map(String::as_str).collect();
    lab.start_netd_with(1, &args);
    let mut c = lab.client(1);
    let mut net = vxlan_net(NI, 7401, "10.64.0.0/24", "");
    net.subnets[0].enable_dhcp = true;
    let rep = lab
        .rt
        .block_on(c.ensure_network(net))
        .expect("network")
        .into_inner();
    // The metadata namespace holds the DHCP address.
    let ns = ursa_netd::names::router_ns(&ursa_netd::model::derived_id(NI, "metadata-namespace"));
    assert!(
        format!("{rep:?}").contains(&ns) || std::path::Path::new("/run/netns").join(&ns).exists(),
        "no metadata namespace {ns}"
    );
    lab.extra_ns.borrow_mut().push(ns.clone());
    let addrs = ok(&["ip", "-n", &ns, "-br", "addr"]);
    assert!(addrs.contains("10.64.0.254/24"), "{addrs}");

    let vm = lab.vm("v");
    lab.rt
        .block_on(c.ensure_port(pb::Port {
            id: "66100000-0000-4000-8000-000000000001".into(),
            network_id: NI.into(),
            mac: "02:64:00:00:00:05".into(),
            fixed_ips: vec!["10.64.0.5/24".into()],
            kind: Some(pb::port::Kind::Veth(pb::Veth {
                netns: vm.clone(),
                ifname: "eth0".into(),
                up: true,
            })),
            device_id: "instance-iso".into(),
            project_id: "project-iso".into(),
            ..Default::default()
        }))
        .expect("port");
    // udhcpc applies the lease: the address and the classless routes.
    let dir = lab.dir.path();
    let hook = dir.join("apply.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nip addr add $ip/$mask dev $interface\n\
             set -- $staticroutes\nwhile [ $# -ge 2 ]; do ip route add $1 via $2 dev $interface; shift 2; done\n\
             env > {}/iso.env\n",
            dir.display()
        ),
    )
    .unwrap();
    ok(&["chmod", "+x", &hook.display().to_string()]);
    let o = sh(&[
        "timeout",
        "30",
        "ip",
        "netns",
        "exec",
        &vm,
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
        &hook.display().to_string(),
        "-O",
        "staticroutes",
    ]);
    assert!(
        o.status.success(),
        "no lease from the metadata namespace: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let routes = ok(&["ip", "-n", &vm, "route"]);
    assert!(
        routes.contains("169.254.169.254 via 10.64.0.254"),
        "{routes}"
    );
    let md = ok(&[
        "ip",
        "netns",
        "exec",
        &vm,
        "curl",
        "-sS",
        "--max-time",
        "5",
        "http://169.254.169.254/openstack/latest/meta_data.json",
    ])
    .to_ascii_lowercase();
    assert!(md.contains("x-instance-id: instance-iso"), "{md}");
    assert!(md.contains("x-tenant-id: project-iso"), "{md}");
    // Asking again for the same address is answered the same.
    let o = sh(&[
        "timeout",
        "30",
        "ip",
        "netns",
        "exec",
        &vm,
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-t",
        "4",
        "-T",
        "1",
        "-r",
        "10.64.0.5",
        "-s",
        "/bin/true",
    ]);
    assert!(
        o.status.success(),
        "no answer to a request for the same address"
    );
    drop(procs);
}
