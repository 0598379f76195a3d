//! `cargo bench --bench wire`: wiring N veth ports onto a bridge through
//! netd's library, beside ../shared/bench/wire-peer.sh (one `ip` process per
//! step, the way Neutron's linuxbridge agent works), in one run.
//!
//! Ours runs in a throwaway namespace: one network (its bridge and VXLAN
//! device) and N ports whose far ends are born in a second namespace, all
//! through one `Sync` of the desired state. Then it times a no-op reconcile
//! of those N ports and a full resync as a restarted daemon does it (load
//! desired.json, observe, plan, apply nothing). Environment: URSA_WIRE_PORTS
//! (1000).

use std::process::Command;
use std::time::Instant;
use ursa_netd::model::{Desired, Network, NodeConfig, Port, PortKind, Segment};
use ursa_netd::service::{Config, Netd};

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip runs");
    assert!(st.success(), "ip {args:?}");
}

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP wire bench: needs root");
        return;
    }
    let n: usize = std::env::var("URSA_WIRE_PORTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let pid = std::process::id();
    let (host, vms) = (format!("wireours{pid}"), format!("wirevms{pid}"));
    ip(&["netns", "add", &host]);
    let _cleanup = Cleanup(vec![host.clone(), vms.clone()]);
    ip(&["netns", "add", &vms]);
    ip(&["-n", &host, "link", "set", "lo", "up"]);
    ip(&["-n", &host, "addr", "add", "198.18.0.1/32", "dev", "lo"]);

    // Enter the bench namespace before the runtime starts its threads, so
    // every thread (and netlink socket) lives there.
    let f = std::fs::File::open(format!("/run/netns/{host}")).unwrap();
    assert_eq!(
        unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) },
        0
    );
    let state = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let net_id = "0a0a0a0a-0000-4000-8000-000000000001".to_string();
    let mut want = Desired::default();
    want.networks.insert(
        net_id.clone(),
        Network {
            id: net_id.clone(),
            segment: Segment::Vxlan { vni: 4242 },
            mtu: 0,
            subnets: vec![],
            dns_domain: String::new(),
            dhcp_hosts: vec![],
        },
    );
    for i in 0..n {
        let id = format!("{:08x}-0000-4000-8000-{:012x}", i + 1, i + 1);
        let mac = [
            0x02,
            0x42,
            0,
            ((i >> 16) & 0xff) as u8,
            ((i >> 8) & 0xff) as u8,
            (i & 0xff) as u8,
        ];
        want.ports.insert(
            id.clone(),
            Port {
                id,
                network_id: net_id.clone(),
                mac,
                fixed_ips: vec![],
                kind: PortKind::Veth {
                    netns: vms.clone(),
                    ifname: format!("p{i}"),
                    up: false,
                },
                admin_down: false,
                hostname: String::new(),
                ..Default::default()
            },
        );
    }
    let cfg = || Config {
        state_dir: state.path().to_path_buf(),
        node: NodeConfig {
            vtep: Some("198.18.0.1".parse().unwrap()),
            ..Default::default()
        },
        metadata: Default::default(),
    };
    let (wire_s, noop_ms, resync_ms, errors, rec_us) = rt.block_on(async {
        let netd = Netd::open(cfg()).await.expect("netd opens");
        let t0 = Instant::now();
        let r = netd.sync(want, false, Vec::new()).await.expect("sync");
        let wire_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let noop = netd.reconcile(false).await.expect("reconcile");
        let noop_ms = t1.elapsed().as_secs_f64() * 1e3;
        assert_eq!(
            noop.added + noop.changed + noop.removed,
            0,
            "no-op reconcile changed things: {:?}",
            noop.actions
        );
        drop(netd);
        // A restarted daemon: load, observe, plan; nothing to apply.
        let t2 = Instant::now();
        let again = Netd::open(cfg()).await.expect("netd reopens");
        let resync = again.reconcile(false).await.expect("resync");
        let resync_ms = t2.elapsed().as_secs_f64() * 1e3;
        assert_eq!(
            resync.added + resync.changed + resync.removed,
            0,
            "{:?}",
            resync.actions
        );
        (wire_s, noop_ms, resync_ms, r.errors, r.duration_us)
    });
    assert!(errors.is_empty(), "wiring errors: {errors:?}");
    let ours = n as f64 / wire_s;
    eprintln!("ours: {n} ports wired in {wire_s:.3} s (reconcile {:.3} s); no-op reconcile {noop_ms:.1} ms; restart resync {resync_ms:.1} ms", rec_us as f64 / 1e6);
    drop(rt);

    let peer_script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/bench/wire-peer.sh");
    let out = Command::new("bash")
        .arg(peer_script)
        .arg(n.to_string())
        .output()
        .expect("wire-peer.sh runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("peer: {}", text.trim());
    let peer: f64 = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ports_per_s="))
        .and_then(|v| v.parse().ok())
        .expect("wire-peer.sh printed ports_per_s");
    println!(
        "BENCH wire ours={ours:.0} peer={peer:.0} ratio={:.1} unit=ports/s",
        ours / peer
    );
    println!("RESULT noop-reconcile ports={n} ms={noop_ms:.1} target_ms=100");
    println!("RESULT restart-resync ports={n} ms={resync_ms:.1} target_ms=1000");
}
