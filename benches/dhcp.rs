//! `cargo bench --bench dhcp`: netd's DHCP beside dnsmasq configured as
//! Neutron's DHCP agent runs it, on the same veth, driven by perfdhcp through
//! ../shared/bench/dhcp-bench.sh; then 1,000 DHCP networks in one netd
//! against 1,000 dnsmasq processes (resident memory).
//!
//! perfdhcp plays a relay agent on the segment (giaddr = its address) with
//! 60,000 simulated clients whose MACs are 00:0c:01:02:xx:xx. netd gets a
//! static reservation for each of the 65,536 such MACs through the
//! network's `dhcp_hosts` (the same path as ports plugged on other nodes):
//! no dynamic pool and no benchmark switch in netd. dnsmasq runs with
//! Neutron's flags, twice: with a dynamic range (its best case; this is the
//! `peer` figure) and with the same 65,536 static reservations in a
//! Neutron-style hosts file (how Neutron would configure it).
//!
//! Prints `BENCH dhcp ours=… peer=… ratio=… unit=DORA/s` (peak rates),
//! `BENCH dhcp-overload …` (what each delivers when offered far more than
//! its peak) and `BENCH dhcp-scale-rss …` (peer/ours, lower memory is better).

#[path = "../tests/netlab/mod.rs"]
mod netlab;

use netlab::*;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use ursa_proto::netd::v1 as pb;

const NET: &str = "d0000000-0000-4000-8000-0000000000d1";
/// perfdhcp's simulated clients: MACs 00:0c:01:02:xx:xx.
const HOSTS: u32 = 65_536;
const CLIENTS: u32 = 60_000;

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn host(i: u32) -> (String, String) {
    let mac = format!("00:0c:01:02:{:02x}:{:02x}", i >> 8, i & 0xff);
    let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 200, 4, 0)) + i);
    (mac, ip.to_string())
}

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    offered: u32,
    rate: f64,
    drops: f64,
}

/// CPU seconds a process has used (user + system).
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn perfdhcp(script: &str, ns: &str, rate: u32, secs: u32, server: Option<u32>) -> Run {
    let c0 = server.map(cpu_secs);
    let t0 = Instant::now();
    // perfdhcp on CPU 0, the server on CPU 1: neither starves the other.
    if let Some(p) = server {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &p.to_string()])
            .output();
    }
    let o = Command::new("taskset")
        .args([
            "-c",
            "0",
            "bash",
            script,
            ns,
            "eth0",
            &rate.to_string(),
            &secs.to_string(),
            &std::env::var("DHCP_BENCH_CLIENTS").unwrap_or_else(|_| CLIENTS.to_string()),
        ])
        .output()
        .expect("dhcp-bench.sh runs");
    let s = String::from_utf8_lossy(&o.stdout);
    let field = |k: &str| -> f64 {
        s.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let r = Run {
        offered: rate,
        rate: field("rate"),
        drops: field("drops_pct"),
    };
    let cpu = match (server, c0) {
        (Some(p), Some(c0)) => format!(
            " server CPU {:.0}%",
            (cpu_secs(p) - c0) / t0.elapsed().as_secs_f64() * 100.0
        ),
        _ => String::new(),
    };
    println!("  offered {rate:>6}/s: {}{cpu}", s.trim());
    r
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn dnsmasq_args(
    dir: &std::path::Path,
    tag: &str,
    iface: &str,
    range: &str,
    pid: &str,
) -> Vec<String> {
    // The flags Neutron's DHCP agent starts dnsmasq with (static reservations only).
    vec![
        "--no-hosts".into(),
        "--no-resolv".into(),
        "--keep-in-foreground".into(),
        format!("--pid-file={}", dir.join(pid).display()),
        format!("--dhcp-hostsfile={}", dir.join("host").display()),
        format!("--addn-hosts={}", dir.join("addn_hosts").display()),
        format!("--dhcp-optsfile={}", dir.join("opts").display()),
        format!(
            "--dhcp-leasefile={}",
            dir.join(format!("leases-{tag}")).display()
        ),
        "--dhcp-match=set:ipxe,175".into(),
        "--dhcp-userclass=set:ipxe6,iPXE".into(),
        "--local-service".into(),
        "--bind-dynamic".into(),
        format!("--interface={iface}"),
        format!("--dhcp-range=set:subnet-{tag},{range},static,255.254.0.0,86400s"),
        "--dhcp-option-force=option:mtu,1450".into(),
        format!("--dhcp-lease-max={}", HOSTS),
        "--conf-file=/dev/null".into(),
        "--domain=openstacklocal".into(),
        "--port=0".into(),
        format!(
            "--log-facility={}",
            dir.join(format!("log-{tag}")).display()
        ),
    ]
}

/// Runs dnsmasq on cl0 (mode "dyn": a dynamic range; "static": the hosts
/// file), measures each rate, and returns the runs and dnsmasq's RSS.
fn run_dnsmasq(
    srv: &str,
    cli: &str,
    dir: &std::path::Path,
    mode: &str,
    script: &str,
    rates: &[u32],
    secs: u32,
) -> (Vec<Run>, u64) {
    let mut args = dnsmasq_args(dir, mode, "cl0", "10.200.0.0", &format!("pid-{mode}"));
    let mut extra = Vec::new();
    if mode == "dyn" {
        for a in args.iter_mut() {
            if a.starts_with("--dhcp-range") {
                *a = format!(
                    "--dhcp-range=set:subnet-{mode},10.200.4.0,10.201.255.200,255.254.0.0,86400s"
                );
            }
            if a.starts_with("--dhcp-hostsfile") {
                *a = format!("--dhcp-hostsfile={}", dir.join("host-empty").display());
            }
        }
        std::fs::write(dir.join("host-empty"), "").unwrap();
        // No ping before each offer: dnsmasq's fastest dynamic mode.
        extra.push("--no-ping".to_string());
    }
    args.extend(extra);
    let mut procs = Kill(vec![Command::new("ip")
        .args(["netns", "exec", srv, "dnsmasq"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq starts")]);
    // dnsmasq checks each reservation against the others as it reads them:
    // wait until its hosts file is loaded.
    let t0 = Instant::now();
    let log = dir.join(format!("log-{mode}"));
    while t0.elapsed() < Duration::from_secs(300) {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("read ")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("  ready in {:.1} s", t0.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(2));
    let runs: Vec<Run> = rates
        .iter()
        .map(|r| perfdhcp(script, cli, *r, secs, Some(procs.0[0].id())))
        .collect();
    let rss = rss_kib(procs.0[0].id());
    if runs.iter().all(|r| r.rate == 0.0) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for l in text.lines().rev().take(8) {
            println!("  dnsmasq: {l}");
        }
    }
    drop(procs.0.pop().map(|mut c| {
        let _ = c.kill();
        c.wait()
    }));
    (runs, rss)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/bench/dhcp-bench.sh"
    );
    let have = |t: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !can_run() || !have("perfdhcp") || !have("dnsmasq") || !std::path::Path::new(script).exists()
    {
        println!("SKIP dhcp bench: needs root, perfdhcp (apt-get install kea-admin), dnsmasq and {script}");
        return;
    }
    let rates: Vec<u32> = std::env::var("DHCP_BENCH_RATES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1200, 6000, 10000, 14000, 20000]);
    let secs: u32 = std::env::var("DHCP_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut lab = Lab::new("d", 1);
    let srv = lab.hv(1);
    let cli = lab.vm("c");
    ok(&[
        "ip", "-n", &srv, "link", "add", "cl0", "type", "veth", "peer", "name", "eth0", "netns",
        &cli,
    ]);
    ok(&["ip", "-n", &srv, "link", "set", "cl0", "up"]);
    ok(&["ip", "-n", &cli, "link", "set", "eth0", "up"]);
    ok(&[
        "ip",
        "-n",
        &cli,
        "addr",
        "add",
        "10.200.0.2/15",
        "dev",
        "eth0",
    ]);

    // ---- netd ----
    lab.start_netd_with(1, &["--physical-interface", "phys:cl0"]);
    let mut c = lab.client(1);
    let hosts: Vec<pb::DhcpHost> = (0..HOSTS)
        .map(|i| {
            let (mac, ip) = host(i);
            pb::DhcpHost {
                mac,
                ip_address: ip,
                hostname: format!("host-{i}"),
            }
        })
        .collect();
    let net = pb::Network {
        id: NET.into(),
        segment: Some(pb::network::Segment::Flat(pb::Flat {
            physical_network: "phys".into(),
        })),
        subnets: vec![pb::Subnet {
            cidr: "10.200.0.0/15".into(),
            gateway_ip: "10.200.0.1".into(),
            dns_nameservers: vec!["10.200.0.1".into()],
            enable_dhcp: true,
            dhcp_server_ip: "10.201.255.254".into(),
            ..Default::default()
        }],
        dns_domain: "openstacklocal".into(),
        dhcp_hosts: hosts,
        ..Default::default()
    };
    let t0 = Instant::now();
    lab.rt.block_on(c.ensure_network(net)).expect("network");
    println!(
        "netd: network with {HOSTS} reservations in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    std::thread::sleep(Duration::from_millis(500));
    let netd_pid = lab.netds[0].as_ref().unwrap().id();
    println!("netd (perfdhcp, {secs} s per rate):");
    let ours: Vec<Run> = rates
        .iter()
        .map(|r| perfdhcp(script, &cli, *r, secs, Some(netd_pid)))
        .collect();
    let ours_rss = rss_kib(netd_pid);
    lab.stop_netd(1, libc::SIGTERM);
    // netd leaves the kernel as it is; free cl0 for dnsmasq.
    let br = format!("ubr-{}", &NET.replace('-', "")[..11]);
    ok(&["ip", "-n", &srv, "link", "del", &br]);

    if std::env::var("DHCP_BENCH_OURS_ONLY").is_ok() {
        return;
    }
    // ---- dnsmasq, as Neutron runs it ----
    let dir = lab.dir.path().join("dnsmasq");
    std::fs::create_dir_all(&dir).unwrap();
    let mut f = std::fs::File::create(dir.join("host")).unwrap();
    for i in 0..HOSTS {
        let (mac, ip) = host(i);
        writeln!(f, "{mac},host-{i}.openstacklocal,{ip}").unwrap();
    }
    drop(f);
    std::fs::write(dir.join("addn_hosts"), "").unwrap();
    std::fs::write(
        dir.join("opts"),
        "tag:subnet-a,option:dns-server,10.200.0.1\ntag:subnet-a,option:router,10.200.0.1\n",
    )
    .unwrap();
    ok(&[
        "ip",
        "-n",
        &srv,
        "addr",
        "add",
        "10.201.255.254/15",
        "dev",
        "cl0",
    ]);
    // As Neutron configures it: static reservations in a hosts file.
    println!("dnsmasq with {HOSTS} static reservations, as Neutron configures it:");
    let (stat, _) = run_dnsmasq(&srv, &cli, &dir, "static", script, &[rates[0]], secs);
    // Its best case: a dynamic range, nothing to look up.
    println!("dnsmasq with a dynamic range (perfdhcp, {secs} s per rate):");
    let (peer, peer_rss) = run_dnsmasq(&srv, &cli, &dir, "dyn", script, &rates, secs);

    let peak = |runs: &[Run]| {
        runs.iter()
            .copied()
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
            .unwrap_or_default()
    };
    let (po, pp) = (peak(&ours), peak(&peer));
    println!(
        "peaks: netd {:.0}/s ({:.2}% drops, offered {}), dnsmasq {:.0}/s ({:.2}% drops, offered {})",
        po.rate, po.drops, po.offered, pp.rate, pp.drops, pp.offered
    );
    let clean = |runs: &[Run]| {
        runs.iter()
            .filter(|r| r.drops < 1.0)
            .map(|r| r.rate)
            .fold(0.0, f64::max)
    };
    println!(
        "highest rate with < 1% drops: netd {:.0}/s, dnsmasq {:.0}/s",
        clean(&ours),
        clean(&peer)
    );
    println!(
        "BENCH dhcp ours={:.0} peer={:.0} ratio={:.2} unit=DORA/s",
        po.rate,
        pp.rate,
        po.rate / pp.rate.max(1.0)
    );
    let (lo, lp) = (ours.last().copied().unwrap(), peer.last().copied().unwrap());
    println!(
        "BENCH dhcp-overload ours={:.0} peer={:.0} ratio={:.2} unit=DORA/s (offered {}/s; drops ours {:.2}% peer {:.2}%)",
        lo.rate,
        lp.rate,
        lo.rate / lp.rate.max(1.0),
        lo.offered,
        lo.drops,
        lp.drops
    );
    println!(
        "BENCH dhcp-neutron-static ours={:.0} peer={:.0} ratio={:.2} unit=DORA/s (offered {}/s, {HOSTS} reservations each)",
        ours[0].rate,
        stat[0].rate,
        ours[0].rate / stat[0].rate.max(1.0),
        rates[0]
    );
    println!(
        "one network with {HOSTS} reservations: netd RSS {:.1} MiB, dnsmasq RSS {:.1} MiB",
        ours_rss as f64 / 1024.0,
        peer_rss as f64 / 1024.0
    );

    // ---- scale: many DHCP networks ----
    let n: u32 = std::env::var("DHCP_BENCH_NETWORKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let _ = std::fs::remove_dir_all(lab.dir.path().join("h1"));
    lab.start_netd(1);
    let mut c = lab.client(1);
    let mut state = pb::NodeState::default();
    for i in 0..n {
        let id = format!("{:08x}-d100-4000-8000-000000000000", 0xd100_0000u32 + i);
        let cidr = format!("10.{}.{}.0/24", 100 + i / 256, i % 256);
        state.networks.push(pb::Network {
            id,
            segment: Some(pb::network::Segment::Vxlan(pb::Vxlan { vni: 20_000 + i })),
            subnets: vec![pb::Subnet {
                cidr,
                gateway_ip: format!("10.{}.{}.1", 100 + i / 256, i % 256),
                enable_dhcp: true,
                ..Default::default()
            }],
            dhcp_hosts: vec![pb::DhcpHost {
                mac: format!("02:dd:00:00:{:02x}:{:02x}", i >> 8, i & 0xff),
                ip_address: format!("10.{}.{}.5", 100 + i / 256, i % 256),
                hostname: String::new(),
            }],
            ..Default::default()
        });
    }
    let t0 = Instant::now();
    let rep = lab
        .rt
        .block_on(c.sync(state))
        .expect("sync of many networks")
        .into_inner();
    println!(
        "netd: {n} DHCP networks (bridge + VXLAN + responder each) in {:.1} s, {} errors",
        t0.elapsed().as_secs_f64(),
        rep.errors.len()
    );
    let pid = lab.netds[0].as_ref().unwrap().id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    let mut sockets = fds();
    while t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_secs(1));
        let now = fds();
        println!(
            "  {:.0} s: {now} descriptors, RSS {} KiB",
            t0.elapsed().as_secs_f64(),
            rss_kib(pid)
        );
        if now == sockets && now as u32 >= 2 * n {
            break;
        }
        sockets = now;
    }
    let ours_scale = rss_kib(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    for l in status
        .lines()
        .filter(|l| l.starts_with("Rss") || l.starts_with("Threads"))
    {
        println!("  netd {l}");
    }
    let log = std::fs::read_to_string(lab.log(1)).unwrap_or_default();
    for l in log.lines().filter(|l| l.contains("WARN")).take(5) {
        println!("  netd: {l}");
    }
    println!(
        "netd: RSS {:.1} MiB for {n} networks ({sockets} open descriptors)",
        ours_scale as f64 / 1024.0
    );
    lab.stop_netd(1, libc::SIGTERM);

    // The peer: one dnsmasq per network, each on its own bridge.
    let peer_ns = lab.vm("m");
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!(
            "link add um{i} type bridge\nlink set um{i} up\naddr add 10.{}.{}.2/24 dev um{i}\n",
            100 + i / 256,
            i % 256
        ));
    }
    let bf = lab.dir.path().join("bridges.batch");
    std::fs::write(&bf, batch).unwrap();
    ok(&["ip", "-n", &peer_ns, "-batch", &bf.display().to_string()]);
    let mut procs = Kill(vec![]);
    let t0 = Instant::now();
    for i in 0..n {
        let d = lab.dir.path().join(format!("dm{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("host"),
            format!(
                "02:dd:00:00:{:02x}:{:02x},host-{i},10.{}.{}.5\n",
                i >> 8,
                i & 0xff,
                100 + i / 256,
                i % 256
            ),
        )
        .unwrap();
        std::fs::write(d.join("addn_hosts"), "").unwrap();
        std::fs::write(d.join("opts"), "").unwrap();
        let mut args = dnsmasq_args(
            &d,
            &i.to_string(),
            &format!("um{i}"),
            &format!("10.{}.{}.0", 100 + i / 256, i % 256),
            "pid",
        );
        for a in args.iter_mut() {
            if a.starts_with("--dhcp-range") {
                *a = a.replace("255.254.0.0", "255.255.255.0");
            }
        }
        procs.0.push(
            Command::new("ip")
                .args(["netns", "exec", &peer_ns, "dnsmasq"])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq starts"),
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    // `ip netns exec` execs dnsmasq in place, so the child pid is dnsmasq.
    let (mut rss, mut pss, mut alive) = (0u64, 0u64, 0);
    for p in &procs.0 {
        let r = rss_kib(p.id());
        if r > 0 {
            alive += 1;
        }
        rss += r;
        pss += pss_kib(p.id());
    }
    println!(
        "dnsmasq: {alive}/{n} processes started in {:.1} s; RSS sum {:.1} MiB, PSS sum {:.1} MiB",
        t0.elapsed().as_secs_f64(),
        rss as f64 / 1024.0,
        pss as f64 / 1024.0
    );
    drop(procs);
    println!(
        "BENCH dhcp-scale-rss ours={:.1} peer={:.1} ratio={:.1} unit=MiB (peer/ours: {n} networks; peer PSS {:.1} MiB)",
        ours_scale as f64 / 1024.0,
        rss as f64 / 1024.0,
        rss as f64 / ours_scale.max(1) as f64,
        pss as f64 / 1024.0
    );
}
