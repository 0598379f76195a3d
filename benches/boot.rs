//! `cargo bench --bench boot`: how long a server takes from `POST /servers`
//! to the guest holding its DHCP lease from netd (the tiny guest prints the
//! address on its serial console, which the bench reads through the API),
//! beside the same guest booted by QEMU alone with QEMU's built-in DHCP
//! (the peer: what the cloud adds). Also 10 servers booted at once, and
//! `GET /servers/detail` with 1,000 servers in the store (target < 50 ms).
//!
//! Runs as root inside a network namespace made for it (TCG here: /dev/kvm
//! hangs guests on this machine). Environment: URSA_BENCH_BOOTS (10).
//! Prints `BENCH` lines; for times, ratio = peer/ours.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{guests_under, Cloud, Netns};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Api<'a>(&'a Cloud);

impl Api<'_> {
    fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        self.0.service_call(method, path, token, body)
    }

    fn console(&self, token: &str, id: &str) -> String {
        let (_, v) = self.call(
            "POST",
            &format!("/compute/v2.1/servers/{id}/action"),
            token,
            Some(json!({"os-getConsoleOutput": {"length": null}})),
        );
        v["output"].as_str().unwrap_or("").to_string()
    }

    fn boot(&self, token: &str, body: &Value, name: &str) -> String {
        let mut b = body.clone();
        b["name"] = json!(name);
        let (st, v) = self.call(
            "POST",
            "/compute/v2.1/servers",
            token,
            Some(json!({"server": b})),
        );
        assert_eq!(st, 202, "{v}");
        v["server"]["id"].as_str().unwrap().to_string()
    }

    /// Waits until the guest says it holds an address.
    fn leased(&self, token: &str, id: &str) {
        let t0 = Instant::now();
        while !self.console(token, id).contains("URSA-TINY: address 10.") {
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "{id} never got its lease"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn delete_all(&self, token: &str, ids: &[String]) {
        for id in ids {
            self.call(
                "DELETE",
                &format!("/compute/v2.1/servers/{id}"),
                token,
                None,
            );
        }
        let t0 = Instant::now();
        while ids.iter().any(|id| {
            self.call("GET", &format!("/compute/v2.1/servers/{id}"), token, None)
                .0
                != 404
        }) {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "servers were not deleted"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The peer: QEMU alone boots the same disk with its user-mode network
/// (its own DHCP server); time to the same console line.
fn qemu_alone(disk: &Path, dir: &Path) -> f64 {
    let overlay = dir.join("peer.qcow2");
    let _ = std::fs::remove_file(&overlay);
    assert!(std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(disk)
        .arg(&overlay)
        .status()
        .unwrap()
        .success());
    let log = dir.join("peer.log");
    let _ = std::fs::remove_file(&log);
    let t0 = Instant::now();
    let mut child = std::process::Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "512",
            "-display",
            "none",
            "-nodefaults",
            "-no-user-config",
        ])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-drive")
        .arg(format!("file={},format=qcow2,if=virtio", overlay.display()))
        .args(["-nic", "user,model=virtio-net-pci"])
        .spawn()
        .unwrap();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("URSA-TINY: address 10.")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "QEMU alone never got a lease"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = t0.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    t
}

fn main() {
    if let Some(why) = common::tiny_guest_missing() {
        println!("SKIP boot bench: {why}");
        return;
    }
    let boots: usize = std::env::var("URSA_BENCH_BOOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let disk = common::build_tiny(&dir.path().join("tiny"));
    let state = dir.path().join("state");
    let _ns = Netns::enter(&format!("ubb{}", std::process::id() % 100000), &state);
    let cloud = Cloud::start_with_nodes(&state, "bench", &["--physical-network=ext"]);
    let admin = cloud.admin_token();
    let api = Api(&cloud);

    let (st, img) = api.call(
        "POST",
        "/image/v2/images",
        &admin,
        Some(json!({"name": "tiny", "disk_format": "raw", "container_format": "bare"})),
    );
    assert_eq!(st, 201);
    let image = img["id"].as_str().unwrap().to_string();
    let base = cloud.url.trim_end_matches("/v3").to_string();
    let r = cloud
        .http()
        .put(format!("{base}/image/v2/images/{image}/file"))
        .header("X-Auth-Token", &admin)
        .header("content-type", "application/octet-stream")
        .body(std::fs::read(&disk).unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (_, net) = api.call(
        "POST",
        "/network/v2.0/networks",
        &admin,
        Some(json!({"network": {"name": "bn"}})),
    );
    let net_id = net["network"]["id"].as_str().unwrap().to_string();
    let (st, _) = api.call(
        "POST",
        "/network/v2.0/subnets",
        &admin,
        Some(json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.90.0.0/22"}})),
    );
    assert_eq!(st, 201);
    let body = json!({"imageRef": image, "flavorRef": "1", "networks": [{"uuid": net_id}]});

    // One at a time, beside QEMU alone.
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    for i in 0..boots {
        let t0 = Instant::now();
        let id = api.boot(&admin, &body, &format!("b{i}"));
        api.leased(&admin, &id);
        ours.push(t0.elapsed().as_secs_f64());
        api.delete_all(&admin, &[id]);
        peer.push(qemu_alone(&disk, dir.path()));
    }
    let (o, p) = (median(ours.clone()), median(peer.clone()));
    println!("boot to DHCP lease, {boots} boots: ours {ours:.2?} s, QEMU alone {peer:.2?} s");
    println!(
        "BENCH boot_to_lease_s ours={o:.2} peer={p:.2} ratio={:.2} unit=s",
        p / o
    );

    // Ten at once.
    let t0 = Instant::now();
    let ids: Vec<String> = (0..10)
        .map(|i| api.boot(&admin, &body, &format!("p{i}")))
        .collect();
    for id in &ids {
        api.leased(&admin, id);
    }
    let all = t0.elapsed().as_secs_f64();
    api.delete_all(&admin, &ids);
    println!(
        "BENCH boot_10_at_once_s ours={all:.2} peer={:.2} ratio={:.2} unit=s",
        p * 10.0,
        p * 10.0 / all
    );
    assert!(guests_under(&state).is_empty());
    let (st, _) = api.call(
        "DELETE",
        &format!("/network/v2.0/networks/{net_id}"),
        &admin,
        None,
    );
    assert_eq!(st, 204);
    drop(cloud);

    // 1,000 servers in the store (records only: no guests), then list them.
    seed_servers(&state, &image, 1000);
    list_bench(&state);
}

/// Stores `n` server records in the admin project, as the API would.
fn seed_servers(state: &Path, image: &str, n: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = ursa_core::store::Store::open(&ursa_core::store::Store::sqlite_url(state))
            .await
            .unwrap();
        let mut ops = Vec::new();
        for i in 0..n {
            let id = uuid::Uuid::new_v4().to_string();
            let t = format!("2026-01-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60);
            let rec = json!({"id": id, "name": format!("seed-{i}"), "status": "SHUTOFF",
                "tenant_id": "SEED", "user_id": "seed", "metadata": {}, "hostId": "", "created": t,
                "updated": t, "key_name": null, "OS-EXT-STS:vm_state": "stopped", "OS-EXT-STS:task_state": null,
                "OS-EXT-STS:power_state": 4, "ursa:node": "elsewhere", "ursa:flavor_id": "1", "ursa:image_id": image});
            ops.push(ursa_core::store::Op::put("server", &id, "", &id, rec));
        }
        store.apply(&ops).await.unwrap();
        store.close().await;
    });
}

fn list_bench(state: &Path) {
    let cloud = Cloud::start_with_nodes(state, "bench", &["--physical-network=ext"]);
    let admin = cloud.admin_token();
    let api = Api(&cloud);
    let (st, v) = api.call(
        "GET",
        "/compute/v2.1/servers/detail?all_tenants=1",
        &admin,
        None,
    );
    assert_eq!(st, 200);
    assert!(v["servers"].as_array().unwrap().len() >= 1000);
    // The API's latency: request sent to the last byte received (the
    // client's JSON parsing is not the server's time).
    let base = cloud.url.trim_end_matches("/v3").to_string();
    let http = cloud.http();
    let mut times = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let body = http
            .get(format!("{base}/compute/v2.1/servers/detail?all_tenants=1"))
            .header("X-Auth-Token", &admin)
            .send()
            .unwrap()
            .bytes()
            .unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert!(body.len() > 1000 * 500);
    }
    let m = median(times);
    println!(
        "BENCH servers_detail_1000_ms ours={m:.1} peer=50.0 ratio={:.2} unit=ms",
        50.0 / m
    );
}
