//! `cargo bench --bench object`: Ursa's object storage beside OpenStack
//! Swift, in one run, loaded the same way.
//!
//! Starts Swift 2.38 with ../shared/bench/swift-peer.sh (proxy, object,
//! container and account servers, memcached; installed from PyPI on first
//! use) and `ursa up` (this build, SQLite, no network node), runs
//! ../shared/bench/object-bench.sh against each (wrk and ab: 4 KiB and
//! 1 MiB PUT/GET, HEAD, a 10,000-object listing), and sums each one's
//! resident memory afterwards (every Swift process; `ursa` and the node
//! daemons it started). Ends in `BENCH` lines: rates as ours/peer,
//! latencies and memory as peer/ours (higher is better for Ursa).
//!
//! Needs wrk, ab (apache2-utils) and memcached; skips with a reason
//! otherwise. Environment: URSA_BENCH_SECONDS (10), URSA_BENCH_CONNECTIONS (16).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// `name key=value ...` lines of object-bench.sh.
fn parse(out: &str) -> HashMap<String, HashMap<String, f64>> {
    out.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next()?.to_string();
            let kv: HashMap<String, f64> = it
                .filter_map(|w| w.split_once('='))
                .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                .collect();
            (!kv.is_empty()).then_some((name, kv))
        })
        .collect()
}

fn load(
    args: &[&str],
    env: &[(&str, &str)],
    secs: &str,
    conns: &str,
) -> HashMap<String, HashMap<String, f64>> {
    let mut cmd = Command::new("bash");
    cmd.arg(shared().join("bench/object-bench.sh"))
        .args(args)
        .args([secs, conns]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("object-bench.sh runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{args:?}:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "object-bench.sh failed");
    parse(&text)
}

/// Resident memory (VmRSS) of the processes `pick` selects, in MiB.
fn rss_mib(pick: impl Fn(u32, u32, u32) -> bool) -> f64 {
    let mut kib = 0.0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name: state, ppid, pgrp, …
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let (ppid, pgrp) = (
            f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
            f.get(2).and_then(|v| v.parse().ok()).unwrap_or(0),
        );
        if !pick(pid, ppid, pgrp) {
            continue;
        }
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            kib += s
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    kib / 1024.0
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
            "--no-compute",
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
    for tool in ["wrk", "ab", "memcached"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            eprintln!("SKIP object bench: {tool} is missing (apt-get install wrk apache2-utils memcached)");
            return;
        }
    }
    let secs = std::env::var("URSA_BENCH_SECONDS").unwrap_or_else(|_| "10".into());
    let conns = std::env::var("URSA_BENCH_CONNECTIONS").unwrap_or_else(|_| "16".into());

    let peer = Command::new("bash")
        .arg(shared().join("bench/swift-peer.sh"))
        .arg("start")
        .output()
        .expect("swift-peer.sh runs");
    let line = String::from_utf8_lossy(&peer.stdout).to_string();
    assert!(
        peer.status.success(),
        "Swift did not start: {}",
        String::from_utf8_lossy(&peer.stderr)
    );
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("swift-peer.sh printed no {k}: {line}"))
    };
    let (peer_url, peer_user, peer_key) = (field("url"), field("user"), field("key"));
    let swift_dir = std::env::var("SWIFT_DIR").unwrap_or_else(|_| "/tmp/swift-peer".into());
    let groups: Vec<u32> = std::fs::read_dir(format!("{swift_dir}/run"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect();

    let dir = std::env::temp_dir().join(format!("ursa-object-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ursa, ours_url) = start_ursa(&dir);
    std::thread::sleep(Duration::from_millis(300));

    let peer_res = load(&[&peer_url, &peer_user, &peer_key], &[], &secs, &conns);
    let peer_rss = rss_mib(|_, _, pgrp| groups.contains(&pgrp));
    let ours_res = load(&[&ours_url, "admin:admin", "secret"], &[], &secs, &conns);
    let upid = ursa.0.id();
    let ours_rss = rss_mib(|pid, ppid, _| pid == upid || ppid == upid);

    let _ = Command::new("bash")
        .arg(shared().join("bench/swift-peer.sh"))
        .arg("stop")
        .status();
    drop(ursa);
    let _ = std::fs::remove_dir_all(&dir);

    let get = |r: &HashMap<String, HashMap<String, f64>>, n: &str, k: &str| {
        r.get(n).and_then(|m| m.get(k)).copied().unwrap_or(0.0)
    };
    for (name, key, unit) in [
        ("put-4k", "rps", "req/s"),
        ("get-4k", "rps", "req/s"),
        ("head-4k", "rps", "req/s"),
        ("put-1m", "mib_s", "MiB/s"),
        ("get-1m", "mib_s", "MiB/s"),
    ] {
        let (o, p) = (get(&ours_res, name, key), get(&peer_res, name, key));
        let errs = (
            get(&ours_res, name, "errors"),
            get(&peer_res, name, "errors"),
        );
        if errs.0 > 0.0 || errs.1 > 0.0 {
            eprintln!("note: {name} errors ours={} peer={}", errs.0, errs.1);
        }
        println!(
            "BENCH {name} ours={o:.1} peer={p:.1} ratio={:.2} unit={unit}",
            o / p.max(0.001)
        );
    }
    for (name, key) in [
        ("put-4k", "p99_ms"),
        ("get-4k", "p99_ms"),
        ("list-10k", "p50_ms"),
    ] {
        let (o, p) = (get(&ours_res, name, key), get(&peer_res, name, key));
        let label = if key == "p99_ms" {
            format!("{name}-p99")
        } else {
            format!("{name}-p50")
        };
        println!(
            "BENCH {label} ours={o:.2} peer={p:.2} ratio={:.2} unit=ms",
            p / o.max(0.001)
        );
    }
    println!(
        "BENCH rss ours={ours_rss:.1} peer={peer_rss:.1} ratio={:.2} unit=MiB",
        peer_rss / ours_rss.max(0.001)
    );
}
