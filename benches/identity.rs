//! `cargo bench --bench identity`: Ursa's identity beside OpenStack's
//! Keystone, in one run, loaded the same way.
//!
//! Starts Keystone with ../shared/bench/keystone-peer.sh (SQLite, Fernet,
//! gunicorn; installed from PyPI on first use) and `ursa up` (release build,
//! argon2id at the default OWASP cost), runs ../shared/bench/keystone-bench.sh
//! (wrk: token validation, re-scope, password authentication) against each,
//! and reads both processes' peak resident memory. Ends in `BENCH` lines:
//! rates as ours/peer, latency and memory as peer/ours (higher is better for
//! Ursa either way).
//!
//! Environment: URSA_BENCH_SECONDS (10) per workload, URSA_BENCH_CONNECTIONS (16).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Workload {
    rps: f64,
    p99_ms: f64,
    errors: u64,
}

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

fn parse_bench(out: &str) -> HashMap<String, Workload> {
    let mut m = HashMap::new();
    for line in out.lines() {
        let mut it = line.split_whitespace();
        let Some(name) = it.next() else { continue };
        let kv: HashMap<&str, &str> = it.filter_map(|w| w.split_once('=')).collect();
        if let (Some(r), Some(p)) = (kv.get("rps"), kv.get("p99_ms")) {
            m.insert(
                name.to_string(),
                Workload {
                    rps: r.parse().unwrap_or(0.0),
                    p99_ms: p.parse().unwrap_or(0.0),
                    errors: kv.get("errors").and_then(|e| e.parse().ok()).unwrap_or(0),
                },
            );
        }
    }
    m
}

fn load(url: &str, password: &str, secs: &str, conns: &str) -> HashMap<String, Workload> {
    let out = Command::new("bash")
        .arg(shared().join("bench/keystone-bench.sh"))
        .args([url, "admin", password, secs, conns])
        .output()
        .expect("keystone-bench.sh runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{url}:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "keystone-bench.sh failed against {url}"
    );
    parse_bench(&text)
}

/// Peak resident set (VmHWM) of a process and its children, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let mut pids = vec![pid];
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .sum::<f64>()
        / 1024.0
}

struct Ursa(Child);

impl Drop for Ursa {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_ursa(dir: &Path) -> (Ursa, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ursa"))
        .args(["up", "--state-dir"])
        .arg(dir)
        .args([
            "--admin-password",
            "secret",
            "--bind",
            "127.0.0.1:0",
            "--no-netd",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ursa starts");
    let out = child.stdout.take().unwrap();
    let url = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("export OS_AUTH_URL=").map(str::to_string))
        .expect("ursa prints OS_AUTH_URL");
    (Ursa(child), url)
}

fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("SKIP identity bench: wrk is missing (apt-get install wrk)");
        return;
    }
    let secs = std::env::var("URSA_BENCH_SECONDS").unwrap_or_else(|_| "10".into());
    let conns = std::env::var("URSA_BENCH_CONNECTIONS").unwrap_or_else(|_| "16".into());

    let peer = Command::new("bash")
        .arg(shared().join("bench/keystone-peer.sh"))
        .arg("start")
        .output()
        .expect("keystone-peer.sh runs");
    let peer_line = String::from_utf8_lossy(&peer.stdout).to_string();
    assert!(
        peer.status.success(),
        "Keystone did not start: {}",
        String::from_utf8_lossy(&peer.stderr)
    );
    let field = |k: &str| {
        peer_line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("keystone-peer.sh printed no {k}: {peer_line}"))
    };
    let (peer_url, peer_pw, peer_pid) = (field("url"), field("password"), field("pid"));
    let peer_pid: u32 = peer_pid.parse().unwrap();

    let dir = std::env::temp_dir().join(format!("ursa-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ursa, ours_url) = start_ursa(&dir);
    std::thread::sleep(Duration::from_millis(300));

    let peer_res = load(&peer_url, &peer_pw, &secs, &conns);
    let peer_rss = peak_rss_mib(peer_pid);
    let ours_res = load(&ours_url, "secret", &secs, &conns);
    let ours_rss = peak_rss_mib(ursa.0.id());

    let _ = Command::new("bash")
        .arg(shared().join("bench/keystone-peer.sh"))
        .arg("stop")
        .status();
    drop(ursa);
    let _ = std::fs::remove_dir_all(&dir);

    for name in ["token-validate", "token-rescope", "password-auth"] {
        let (o, p) = (&ours_res[name], &peer_res[name]);
        if o.errors > 0 || p.errors > 0 {
            eprintln!("note: {name} errors ours={} peer={}", o.errors, p.errors);
        }
        println!(
            "BENCH {name} ours={:.1} peer={:.1} ratio={:.1} unit=req/s",
            o.rps,
            p.rps,
            o.rps / p.rps.max(0.001)
        );
    }
    for name in ["token-validate", "token-rescope", "password-auth"] {
        let (o, p) = (&ours_res[name], &peer_res[name]);
        println!(
            "BENCH {name}-p99 ours={:.2} peer={:.2} ratio={:.1} unit=ms",
            o.p99_ms,
            p.p99_ms,
            p.p99_ms / o.p99_ms.max(0.001)
        );
    }
    println!(
        "BENCH peak-rss ours={:.1} peer={:.1} ratio={:.1} unit=MiB",
        ours_rss,
        peer_rss,
        peer_rss / ours_rss.max(0.001)
    );
}
