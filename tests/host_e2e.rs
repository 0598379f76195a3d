//! The host's prerequisites, as a new user meets them.
//!
//! - `ursa doctor` with a PATH that lacks `nft` names nftables missing,
//!   with its package, and exits non-zero; `ursa up` on that PATH (its netd
//!   in a test namespace) says so once: the router it is asked for shows
//!   ERROR and a port with port security shows `binding_failed` through
//!   the API, and no log repeats the failure while it lasts.
//! - `ursa up` as an ordinary user (`runuser -u nobody`) serves identity,
//!   images and volumes (blockd within the default memlock limit) within
//!   10 s and says what it leaves out.

mod common;

use common::{Cleanup, Cloud, Netns};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A directory of links to every program on PATH but `nft`.
fn path_without_nft(dir: &Path) -> OsString {
    std::fs::create_dir_all(dir).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name();
            if name == "nft" || dir.join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), dir.join(&name));
        }
    }
    dir.as_os_str().to_os_string()
}

/// Lines that mention nft, apart from the doctor table's own row.
fn nft_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("nft") && !l.starts_with("nftables "))
        .map(str::to_string)
        .collect()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> Option<Value>) -> Value {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{what} within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_missing_nft_is_named_once_and_shown_on_the_router_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_without_nft(&dir.path().join("bin"));
    let doctor = Command::new(common::ursa_bin())
        .arg("doctor")
        .env("PATH", &path)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&doctor.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("nftables "))
        .unwrap_or_else(|| panic!("a nftables row: {table}"));
    assert!(
        row.contains("MISSING") && row.contains("apt-get install nftables"),
        "{table}"
    );
    assert!(!doctor.status.success(), "doctor exits non-zero: {table}");

    if !is_root() {
        println!("SKIP ursa up without nft: needs root (a network namespace for netd)");
        return;
    }
    let state = dir.path().join("state");
    let _ns = Netns::enter(&format!("uhst{}", std::process::id() % 100000), &state);
    let cloud = Cloud::start_with_nodes_env(
        &state,
        "host-pw",
        &["--physical-network=ext", "--no-compute"],
        &[("PATH", &path)],
    );
    let admin = cloud.admin_token();
    let _cleanup = Cleanup {
        cloud: &cloud,
        admin: admin.clone(),
    };
    let net = |m: &str, p: &str, b: Option<Value>| {
        cloud.service_call(m, &format!("/network/v2.0{p}"), &admin, b)
    };
    let (st, n) = net(
        "POST",
        "/networks",
        Some(json!({"network": {"name": "hn"}})),
    );
    assert_eq!(st, 201, "{n}");
    let nid = n["network"]["id"].as_str().unwrap().to_string();
    let (st, s) = net(
        "POST",
        "/subnets",
        Some(json!({"subnet": {"network_id": nid, "cidr": "10.77.0.0/24", "ip_version": 4}})),
    );
    assert_eq!(st, 201, "{s}");
    let (st, r) = net("POST", "/routers", Some(json!({"router": {"name": "hr"}})));
    assert_eq!(st, 201, "{r}");
    let rid = r["router"]["id"].as_str().unwrap().to_string();
    let (st, v) = net(
        "PUT",
        &format!("/routers/{rid}/add_router_interface"),
        Some(json!({"subnet_id": s["subnet"]["id"]})),
    );
    assert_eq!(st, 200, "{v}");
    let (st, p) = net(
        "POST",
        "/ports",
        Some(json!({"port": {"network_id": nid, "binding:host_id": "local"}})),
    );
    assert_eq!(st, 201, "{p}");
    let pid = p["port"]["id"].as_str().unwrap().to_string();

    let router = wait_for("the router in ERROR", 30, || {
        let (_, v) = net("GET", &format!("/routers/{rid}"), None);
        (v["router"]["status"] == "ERROR").then(|| v["router"].clone())
    });
    assert!(
        router["ursa:fault"].as_str().unwrap_or("").contains("nft"),
        "the admin sees why: {router}"
    );
    let port = wait_for("the port binding_failed", 30, || {
        let (_, v) = net("GET", &format!("/ports/{pid}"), None);
        (v["port"]["binding:vif_type"] == "binding_failed").then(|| v["port"].clone())
    });
    assert_eq!(port["status"], "DOWN", "{port}");

    // The failure lasts; the logs do not repeat it (the pusher retries
    // every 5 s, netd reconciles every 30 s and on every push).
    let before = nft_lines(&cloud.stderr());
    std::thread::sleep(Duration::from_secs(12));
    let after = nft_lines(&cloud.stderr());
    assert_eq!(before, after, "ursa up's log repeats the nft failure");
    assert_eq!(after.len(), 1, "ursa up says it once: {after:?}");
    let netd_log = std::fs::read_to_string(state.join("netd/netd.log")).unwrap();
    let netd_nft = nft_lines(&netd_log);
    assert_eq!(netd_nft.len(), 1, "netd says it once: {netd_nft:?}");
}

#[test]
fn an_ordinary_user_gets_identity_images_and_volumes_within_10_s() {
    if !is_root() {
        println!("SKIP ursa up as nobody: needs root to become nobody (runuser)");
        return;
    }
    if Command::new("runuser").arg("--help").output().is_err() {
        println!("SKIP ursa up as nobody: no runuser (util-linux)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // The binaries where nobody can run them (the build tree may not be):
    // `ursa` runs the daemons next to it.
    let bin = Path::new(common::ursa_bin()).parent().unwrap();
    for b in ["ursa", "ursa-blockd", "ursa-netd"] {
        let to = root.join(b);
        if std::fs::hard_link(bin.join(b), &to).is_err() {
            std::fs::copy(bin.join(b), &to).unwrap();
        }
    }
    let state = root.join("state");
    let t0 = Instant::now();
    let mut child = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(root.join("ursa"))
        .args(["up", "--state-dir"])
        .arg(&state)
        .args(["--bind", "127.0.0.1:0", "--admin-password", "nobody-pw"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut g = log2.lock().unwrap();
            g.push_str(&l);
            g.push('\n');
        }
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(u) = l.strip_prefix("export OS_AUTH_URL=") {
                let _ = tx.send(u.to_string());
            }
        }
    });
    struct Kill(std::process::Child, std::path::PathBuf);
    impl Drop for Kill {
        fn drop(&mut self) {
            // runuser's child and its blockd: everything naming the state dir.
            let needle = self.1.display().to_string();
            for e in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmd).contains(&needle) {
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
            }
            let _ = self.0.wait();
        }
    }
    let guard = Kill(child, state.clone());
    let url = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(u) => u,
        Err(_) => panic!(
            "ursa up as nobody did not serve within 10 s:\n{}",
            log.lock().unwrap()
        ),
    };
    let served_in = t0.elapsed();
    let err = log.lock().unwrap().clone();
    assert!(
        err.contains("Not root") && err.contains("identity, images and volumes are served"),
        "says what it serves: {err}"
    );
    let http = reqwest::blocking::Client::new();
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": "nobody-pw"}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}});
    let r = http
        .post(format!("{url}/auth/tokens"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let token = r.headers()["x-subject-token"].to_str().unwrap().to_string();
    let v: Value = r.json().unwrap();
    let types: Vec<&str> = v["token"]["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["type"].as_str())
        .collect();
    for t in ["identity", "image", "network", "volumev3"] {
        assert!(types.contains(&t), "catalog has {t}: {types:?}");
    }
    assert!(
        !types.contains(&"compute"),
        "no compute as nobody: {types:?}"
    );
    // A volume made and served by blockd running as nobody.
    let base = url.trim_end_matches("/v3");
    let project = v["token"]["project"]["id"].as_str().unwrap();
    let vols = format!("{base}/volume/v3/{project}/volumes");
    let r = http
        .post(&vols)
        .header("X-Auth-Token", &token)
        .json(&json!({"volume": {"size": 1, "name": "nv"}}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let vid = r.json::<Value>().unwrap()["volume"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let vol = wait_for("the volume available", 30, || {
        let v: Value = http
            .get(format!("{vols}/{vid}"))
            .header("X-Auth-Token", &token)
            .send()
            .ok()?
            .json()
            .ok()?;
        (v["volume"]["status"] == "available").then_some(v)
    });
    assert_eq!(vol["volume"]["size"], 1);
    println!("ursa up as nobody served in {served_in:?}");
    drop(guard);
}

/// The README's `--state-dir ./ursa-state` is relative: everything under it
/// is named by its absolute path (qemu-img reads a relative backing file
/// relative to the overlay, so a guest's disk could not be made).
#[test]
fn a_relative_state_dir_is_used_as_an_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::ursa_bin())
        .current_dir(dir.path())
        .args(["up", "--state-dir", "./rel-state", "--bind", "127.0.0.1:0"])
        .args(["--admin-password", "rel-pw", "--no-netd", "--no-tiny-image"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let line = stderr
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("State directory: "))
        .unwrap_or_default();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let want = std::fs::canonicalize(dir.path().join("rel-state")).unwrap();
    assert!(
        line.starts_with(&format!("State directory: {} ", want.display())),
        "{line}"
    );
}
