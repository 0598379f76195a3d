//! `cargo bench --bench scale`: the control plane as the cloud grows.
//!
//! Starts `ursa up` (release build; SQLite in a temporary state directory,
//! or a fresh database next to `URSA_BENCH_DATABASE_URL=postgres://…`).
//! As root it runs in a network namespace of its own with its netd and a
//! compute node (no guests are started), so the compute API answers;
//! otherwise `--no-netd --no-compute`. It lifts the admin project's port
//! quota and has 16 clients create `URSA_BENCH_PORTS` ports (default
//! 100,000) on one network whose subnet has DHCP off, or on
//! (`URSA_BENCH_DHCP=1`: every port is then a DHCP host netd is told of).
//! It then reads `GET /v2.0/ports?limit=100` with a marker deep in the
//! list, reads `ursa`'s resident memory empty and full, stores
//! `URSA_BENCH_SERVERS` server records (default 100,000; no guests) and
//! reads `GET /servers/detail?limit=100`.
//!
//! The peer of each line is the cloud at its start or issue 17's target:
//! creates/s over the last tenth of the ports against the first tenth (the
//! last at least 0.8x the first), create p99 against 50 ms, the deep page's
//! p50 against 10 ms, RSS empty against RSS full (at most 1.5x), the
//! servers page's p50 against 20 ms. Each ends in a `BENCH` line.
//! Environment: URSA_BENCH_PORTS, URSA_BENCH_CLIENTS (16),
//! URSA_BENCH_SERVERS, URSA_BENCH_DATABASE_URL, URSA_BENCH_DHCP,
//! URSA_BENCH_NETD=0 (no namespace, no netd, no servers line; also so on
//! PostgreSQL, which the namespace's loopback does not reach). The netd
//! runs need `ursa-netd` beside `ursa`: `cargo build --release --bins`.

#[path = "../tests/common/mod.rs"]
mod common;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Ursa(Child);

impl Drop for Ursa {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Where `ursa up`'s log goes: `target/tmp/scale-ursa.log`, kept after
/// the run (a failed line can be read there).
fn ursa_log() -> Stdio {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scale-ursa.log");
    println!("ursa's log: {}", path.display());
    std::fs::File::create(&path).map_or_else(|_| Stdio::null(), Stdio::from)
}

/// VmRSS's parts (anonymous, file-backed, shared memory), for the log.
fn rss_parts(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Rss"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let n: usize = std::env::var("URSA_BENCH_PORTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let clients: usize = std::env::var("URSA_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let servers: usize = std::env::var("URSA_BENCH_SERVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dhcp = std::env::var("URSA_BENCH_DHCP").is_ok_and(|v| v == "1");
    let root = unsafe { libc::geteuid() } == 0;
    // netd must sit beside `ursa` (`cargo build --release --bins`).
    let netd_built = std::path::Path::new(env!("CARGO_BIN_EXE_ursa"))
        .with_file_name("ursa-netd")
        .exists();
    if root && !netd_built {
        println!("no ursa-netd beside ursa: run `cargo build --release --bins` first for the netd and servers lines");
    }
    // The namespace has its own loopback: a PostgreSQL on the host's is
    // out of its reach, so a PostgreSQL run has no netd (nor servers line).
    let on_postgres = std::env::var("URSA_BENCH_DATABASE_URL").is_ok();
    let with_netd = root
        && netd_built
        && !on_postgres
        && std::env::var("URSA_BENCH_NETD").map_or(true, |v| v != "0");
    let dir = tempfile::tempdir().unwrap();
    // A namespace of its own for netd's bridges (and the clients).
    let _ns = with_netd.then(|| {
        common::Netns::enter(
            &format!("uscale{}", std::process::id() % 100000),
            dir.path(),
        )
    });
    let fresh = std::env::var("URSA_BENCH_DATABASE_URL")
        .ok()
        .map(|u| common::FreshDb::create(&u, "ursa_scale"));
    let db_url = match &fresh {
        Some((u, _)) => u.clone(),
        None => format!("sqlite:{}", dir.path().join("ursa.db").display()),
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ursa"));
    cmd.args(["up", "--state-dir"])
        .arg(dir.path())
        .args(["--bind", "127.0.0.1:0", "--admin-password", "scale-pw"])
        .arg("--no-tiny-image")
        .args(if with_netd {
            // No external network: nothing outside the namespace.
            &["--physical-network=ext"][..]
        } else {
            &["--no-netd", "--no-compute"][..]
        })
        .stdout(Stdio::piped())
        .stderr(ursa_log());
    if fresh.is_some() {
        cmd.args(["--database-url", &db_url]);
    }
    let mut child = cmd.spawn().expect("ursa starts");
    let stdout = child.stdout.take().unwrap();
    let ursa = Ursa(child);
    let mut lines = BufReader::new(stdout).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("export OS_AUTH_URL=").map(str::to_string))
        .expect("ursa prints OS_AUTH_URL");
    // Keep reading what ursa prints, so its stdout never breaks.
    std::thread::spawn(move || lines.for_each(drop));
    let base = url.trim_end_matches("/v3").to_string();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let auth = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": "scale-pw"}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}});
    let r = http
        .post(format!("{url}/auth/tokens"))
        .json(&auth)
        .send()
        .unwrap();
    let token = r.headers()["x-subject-token"].to_str().unwrap().to_string();
    let project = r.json::<Value>().unwrap()["token"]["project"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let net = |m: reqwest::Method, p: &str, b: Option<Value>| -> (u16, Value) {
        let mut rb = http
            .request(m, format!("{base}/network/v2.0{p}"))
            .header("X-Auth-Token", &token);
        if let Some(b) = b {
            rb = rb.json(&b);
        }
        let r = rb.send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    };
    let (st, _) = net(
        reqwest::Method::PUT,
        &format!("/quotas/{project}"),
        Some(json!({"quota": {"port": -1}})),
    );
    assert_eq!(st, 200, "quota lifted");
    let (_, n0) = net(
        reqwest::Method::POST,
        "/networks",
        Some(json!({"network": {"name": "scale"}})),
    );
    let network = n0["network"]["id"].as_str().unwrap().to_string();
    let (st, _) = net(
        reqwest::Method::POST,
        "/subnets",
        Some(
            json!({"subnet": {"network_id": network, "cidr": "10.64.0.0/14", "ip_version": 4,
            "enable_dhcp": dhcp}}),
        ),
    );
    assert_eq!(st, 201, "subnet");
    std::thread::sleep(Duration::from_secs(1));
    let rss_empty = rss_kib(ursa.0.id());
    println!("RSS empty: {}", rss_parts(ursa.0.id()));

    // (finish time, latency ms) of every create, and one id deep in the list.
    let done = Mutex::new(Vec::with_capacity(n));
    let next = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let t = Instant::now();
                let (st, _) = net(
                    reqwest::Method::POST,
                    "/ports",
                    Some(json!({"port": {"network_id": network, "name": format!("p{i}")}})),
                );
                if st != 201 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let ms = t.elapsed().as_secs_f64() * 1e3;
                done.lock().unwrap().push((t0.elapsed().as_secs_f64(), ms));
                if i % 10_000 == 9_999 {
                    eprintln!("{} ports, {:.0} s", i + 1, t0.elapsed().as_secs_f64());
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap();
    done.sort_by(|a, b| a.0.total_cmp(&b.0));
    let tenth = (n / 10).clamp(1, 10_000);
    let rate = |w: &[(f64, f64)]| {
        let span = w.last().unwrap().0 - w.first().unwrap().0;
        w.len() as f64 / span.max(1e-3)
    };
    let first = rate(&done[..tenth]);
    let last = rate(&done[done.len() - tenth..]);
    let mut lat: Vec<f64> = done.iter().map(|d| d.1).collect();
    lat.sort_by(f64::total_cmp);
    let p99 = pct(&lat, 0.99);
    let rss_full = rss_kib(ursa.0.id());
    println!("RSS full: {}", rss_parts(ursa.0.id()));

    // A page deep in the list: the marker is the port 9/10 of the way down.
    let (_, all) = net(reqwest::Method::GET, "/ports?fields=id&sort_key=id", None);
    let ids: Vec<String> = all["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let marker = ids.get(ids.len() * 9 / 10).cloned().unwrap_or_default();
    let mut page = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let (st, _) = net(
            reqwest::Method::GET,
            &format!("/ports?limit=100&sort_key=id&marker={marker}"),
            None,
        );
        assert_eq!(st, 200);
        page.push(t.elapsed().as_secs_f64() * 1e3);
    }
    page.sort_by(f64::total_cmp);
    let backend = if fresh.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let setup = match (with_netd, dhcp) {
        (false, _) => "no netd",
        (true, false) => "netd attached, DHCP off",
        (true, true) => "netd attached, DHCP on",
    };
    println!(
        "{n} ports ({backend}, {setup}, {clients} clients) in {:.0} s, {} errors",
        t0.elapsed().as_secs_f64(),
        errors.load(Ordering::Relaxed)
    );
    println!("BENCH scale-creates-last-vs-first ours={last:.1} peer={first:.1} ratio={:.2} unit=creates_per_s (peer: the first {tenth})", last / first);
    println!("BENCH scale-create-p99 ours={p99:.1} peer=50 ratio={:.2} unit=ms (peer: the 50 ms target; peer/ours)", 50.0 / p99);
    let p50 = pct(&page, 0.5);
    println!("BENCH scale-ports-page-deep-p50 ours={p50:.1} peer=10 ratio={:.2} unit=ms (peer: the 10 ms target; peer/ours)", 10.0 / p50);
    println!(
        "BENCH scale-rss ours={rss_full} peer={rss_empty} ratio={:.2} unit=KiB (peer: empty; peer/ours, target >= 0.67)",
        rss_empty as f64 / rss_full.max(1) as f64
    );
    if !with_netd {
        println!("SKIP scale-servers-detail: the compute API needs a compute node, which needs netd (root, ursa-netd built beside ursa, URSA_BENCH_NETD not 0)");
        return;
    }
    common::seed_servers(&db_url, &project, servers);
    let mut detail = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let r = http
            .get(format!("{base}/compute/v2.1/servers/detail?limit=100"))
            .header("X-Auth-Token", &token)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().unwrap();
        assert_eq!(
            v["servers"].as_array().map(Vec::len),
            Some(100.min(servers))
        );
        detail.push(t.elapsed().as_secs_f64() * 1e3);
    }
    detail.sort_by(f64::total_cmp);
    let d50 = pct(&detail, 0.5);
    println!("BENCH scale-servers-detail-p50 ours={d50:.1} peer=20 ratio={:.2} unit=ms (peer: the 20 ms target with {servers} servers; peer/ours)", 20.0 / d50);
    drop(ursa);
}
