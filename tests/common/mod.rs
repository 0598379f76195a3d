//! Shared helpers for the end-to-end tests: start the real `ursa` binary on
//! a free loopback port with its own state directory, get tokens, stop it
//! with SIGTERM. Every process started here is killed on drop, so a failing
//! test leaves nothing behind.
#![allow(dead_code)]

pub mod s3;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Cloud {
    child: Option<Child>,
    /// The identity URL, ending in `/v3`.
    pub url: String,
    pub state_dir: PathBuf,
    pub password: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

pub fn ursa_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ursa")
}

impl Cloud {
    pub fn start(state_dir: &Path, password: &str) -> Cloud {
        Self::start_with(state_dir, password, &[])
    }

    /// Starts `ursa up` and waits for the openrc block on stdout.
    pub fn start_with(state_dir: &Path, password: &str, extra: &[&str]) -> Cloud {
        Self::start_inner(false, state_dir, password, extra)
    }

    /// Starts `ursa up` with its own netd and compute node: call it from a
    /// thread that entered a network namespace made for the test, so that
    /// bridges, taps, nftables tables and guests stay in there.
    pub fn start_with_nodes(state_dir: &Path, password: &str, extra: &[&str]) -> Cloud {
        Self::start_inner(true, state_dir, password, extra)
    }

    /// As [`Cloud::start_with_nodes`], with extra environment (e.g. a PATH
    /// that lacks a tool).
    pub fn start_with_nodes_env(
        state_dir: &Path,
        password: &str,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Cloud {
        Self::start_full(true, state_dir, password, extra, env)
    }

    /// As [`Cloud::start_with`], with extra environment.
    pub fn start_env(
        state_dir: &Path,
        password: &str,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Cloud {
        Self::start_full(false, state_dir, password, extra, env)
    }

    fn start_inner(nodes: bool, state_dir: &Path, password: &str, extra: &[&str]) -> Cloud {
        Self::start_full(nodes, state_dir, password, extra, &[])
    }

    fn start_full(
        nodes: bool,
        state_dir: &Path,
        password: &str,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Cloud {
        let database = if extra.iter().any(|a| a.starts_with("--database-url")) {
            None
        } else {
            std::env::var("URSA_TEST_DATABASE_URL")
                .ok()
                .map(|u| database_of(&u, state_dir))
        };
        let mut child = Command::new(ursa_bin())
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .args(["up", "--state-dir"])
            .arg(state_dir)
            .args(database.iter().flat_map(|u| ["--database-url", u.as_str()]))
            .args(["--admin-password", password])
            .args(if extra.iter().any(|a| a.starts_with("--bind")) {
                &[][..]
            } else {
                &["--bind", "127.0.0.1:0"][..]
            })
            .args(extra)
            // Tests register the images they boot; none builds `tiny` itself.
            .args(if extra.iter().any(|a| a.starts_with("--tiny-image")) {
                &[][..]
            } else {
                &["--no-tiny-image"][..]
            })
            // Tests that do not plug networks run no netd (it would leave
            // bridges and router namespaces on the host).
            .args(if nodes || extra.iter().any(|a| a.starts_with("--netd")) {
                &[][..]
            } else {
                &["--no-netd"][..]
            })
            // What compute does to guests is worth reading when a test fails.
            .env(
                "URSA_LOG",
                std::env::var("URSA_LOG").unwrap_or_else(|_| {
                    "warn,ursa_compute=info,ursa_core::duty=info,ursa_volume=info".into()
                }),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ursa starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push_str(&line);
                log2.lock().unwrap().push('\n');
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(u) = line.strip_prefix("export OS_AUTH_URL=") {
                    let _ = tx.send(u.to_string());
                }
            }
        });
        let mut cloud = Cloud {
            child: Some(child),
            url: String::new(),
            state_dir: state_dir.to_path_buf(),
            password: password.to_string(),
            stderr: log,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(u) => cloud.url = u,
            Err(_) => panic!(
                "ursa did not print OS_AUTH_URL; stderr:\n{}",
                cloud.stderr()
            ),
        }
        cloud
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then wait (at most 20 s) for a clean exit.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        for _ in 0..200 {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!("ursa did not stop within 20 s of SIGTERM");
    }

    pub fn http(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// A project-scoped token for a user of the Default domain.
    pub fn token(&self, user: &str, password: &str, project: Option<&str>) -> Result<String, u16> {
        let mut auth = json!({"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}}});
        if let Some(p) = project {
            auth["scope"] = json!({"project": {"name": p, "domain": {"id": "default"}}});
        }
        let r = self
            .http()
            .post(format!("{}/auth/tokens", self.url))
            .json(&json!({ "auth": auth }))
            .send()
            .unwrap();
        if r.status().as_u16() != 201 {
            return Err(r.status().as_u16());
        }
        Ok(r.headers()["x-subject-token"].to_str().unwrap().to_string())
    }

    /// A user with the member role on a new project: its token and the
    /// project id.
    pub fn member_of(&self, admin: &str, project: &str) -> (String, String) {
        let cloud = self;
        let (st, p) = cloud.call(
            "POST",
            "/projects",
            admin,
            Some(json!({"project": {"name": project, "domain_id": "default"}})),
        );
        assert_eq!(st, 201, "{p}");
        let pid = p["project"]["id"].as_str().unwrap().to_string();
        let (st, u) = cloud.call(
            "POST",
            "/users",
            admin,
            Some(json!({"user": {"name": format!("{project}-user"), "password": "pw-pw-pw", "domain_id": "default"}})),
        );
        assert_eq!(st, 201, "{u}");
        let uid = u["user"]["id"].as_str().unwrap();
        let (_, roles) = cloud.call("GET", "/roles?name=member", admin, None);
        let rid = roles["roles"][0]["id"].as_str().unwrap();
        let (st, _) = cloud.call(
            "PUT",
            &format!("/projects/{pid}/users/{uid}/roles/{rid}"),
            admin,
            None,
        );
        assert_eq!(st, 204);
        let tok = cloud
            .token(&format!("{project}-user"), "pw-pw-pw", Some(project))
            .unwrap();
        (tok, pid)
    }

    /// Logs `user` in to the dashboard (domain Default) through its login
    /// form; returns the `Cookie` header of the session.
    pub fn dashboard_login(&self, user: &str, password: &str) -> String {
        let base = self.url.trim_end_matches("/v3");
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let cookie = |r: &reqwest::blocking::Response, name: &str| {
            r.headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|c| c.strip_prefix(&format!("{name}=")))
                .and_then(|c| c.split(';').next())
                .map(str::to_string)
        };
        let page = http
            .get(format!("{base}/dashboard/auth/login"))
            .send()
            .unwrap();
        let csrf = cookie(&page, "ursa_login_csrf").expect("the login page sets its CSRF cookie");
        let r = http
            .post(format!("{base}/dashboard/auth/login"))
            .header("cookie", format!("ursa_login_csrf={csrf}"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("domain", "Default"),
                ("username", user),
                ("password", password),
            ])
            .send()
            .unwrap();
        let session = cookie(&r, "ursa_session")
            .unwrap_or_else(|| panic!("{user} could not log in to the dashboard: {}", r.status()));
        format!("ursa_session={session}")
    }

    pub fn admin_token(&self) -> String {
        self.token("admin", &self.password.clone(), Some("admin"))
            .expect("admin logs in")
    }

    /// Sends a request; returns the status and the JSON body (Null if none).
    pub fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .http()
            .request(m, format!("{}{}", self.url, path))
            .header("X-Auth-Token", token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().unwrap();
        let st = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        (st, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Like `call`, for a path under the endpoint's root (`/network/…`,
    /// `/compute/…`) rather than under `/v3`.
    pub fn service_call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let base = self.url.trim_end_matches("/v3");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .http()
            .request(m, format!("{base}{path}"))
            .header("X-Auth-Token", token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().unwrap();
        let st = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        (st, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Validates `subject` with `token`: the status of GET /v3/auth/tokens.
    pub fn validate(&self, token: &str, subject: &str) -> u16 {
        self.http()
            .get(format!("{}/auth/tokens", self.url))
            .header("X-Auth-Token", token)
            .header("X-Subject-Token", subject)
            .send()
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        // A failing test shows what the cloud said (the last 200 lines), so
        // a CI failure can be read without re-running it.
        if std::thread::panicking() {
            let log = self.stderr();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(200);
            eprintln!(
                "---- ursa up stderr (last {} lines) ----\n{}",
                lines.len() - from,
                lines[from..].join("\n")
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Asserts a Keystone-shaped error body with this status.
pub fn assert_keystone_error(status: u16, body: &Value, want: u16) {
    assert_eq!(status, want, "body: {body}");
    assert_eq!(body["error"]["code"], want, "error body: {body}");
    assert!(body["error"]["title"].is_string(), "error body: {body}");
    assert!(body["error"]["message"].is_string(), "error body: {body}");
}

pub fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("command runs")
}

/// A child process killed (and reaped) when the test lets go of it, also
/// when the test fails.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `ursa-netd` in a network namespace of the test's own (named
/// `<prefix><pid>`, with its loopback up), listening on `<dir>/netd.sock`,
/// its state in `<dir>/netd`. Controllers stay outside the namespace and
/// reach netd by its socket. Dropping it stops netd, then deletes the
/// namespace.
pub struct NsNetd {
    pub ns: String,
    pub sock: PathBuf,
    netd: Option<Daemon>,
}

impl NsNetd {
    pub fn start(prefix: &str, netd_bin: &Path, dir: &Path) -> NsNetd {
        let ns = format!("{prefix}{}", std::process::id() % 100000);
        assert!(
            sh(&["ip", "netns", "add", &ns]).status.success(),
            "ip netns add {ns}"
        );
        let mut me = NsNetd {
            ns: ns.clone(),
            sock: dir.join("netd.sock"),
            netd: None,
        };
        assert!(sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])
            .status
            .success());
        me.netd = Some(Daemon(
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{ns}"))
                .arg(netd_bin)
                .arg("--listen")
                .arg(format!("unix:{}", me.sock.display()))
                .arg("--state-dir")
                .arg(dir.join("netd"))
                .args(["--vtep-address", "127.0.0.1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("netd starts"),
        ));
        let t0 = std::time::Instant::now();
        while !me.sock.exists() {
            assert!(t0.elapsed() < Duration::from_secs(20), "netd listens");
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }
}

impl Drop for NsNetd {
    fn drop(&mut self) {
        self.netd.take();
        let _ = sh(&["ip", "netns", "del", &self.ns]);
    }
}

/// Builds the tiny guest's bootable disk (images/tiny/build.sh) into `dir`.
pub fn build_tiny(dir: &Path) -> PathBuf {
    let build = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/tiny/build.sh"))
        .arg(dir)
        .output()
        .unwrap();
    let disk = dir.join("tiny.raw");
    assert!(
        build.status.success() && disk.exists(),
        "building the tiny guest: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    disk
}

/// The test's network namespace; this thread (and what it starts) lives in
/// it. Guests started under the state directory are killed on drop.
pub struct Netns {
    name: String,
    state: PathBuf,
}

impl Netns {
    pub fn enter(name: &str, state: &Path) -> Netns {
        assert!(sh(&["ip", "netns", "add", name]).status.success());
        let ns = Netns {
            name: name.to_string(),
            state: state.to_path_buf(),
        };
        assert!(sh(&["ip", "-n", name, "link", "set", "lo", "up"])
            .status
            .success());
        let f = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        ns
    }
}

/// QEMU processes whose command line names this directory.
pub fn guests_under(dir: &Path) -> Vec<i32> {
    let needle = dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.starts_with("qemu-system") && cmd.contains(&needle) {
            out.push(pid);
        }
    }
    out
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in guests_under(&self.state) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

pub fn link_exists(name: &str) -> bool {
    let c = std::ffi::CString::new(name).unwrap();
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

pub fn tiny_guest_missing() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, taps)".into());
    }
    for (tool, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-img", "qemu-utils"),
        ("syslinux", "syslinux"),
        ("mcopy", "mtools"),
        ("mkfs.vfat", "dosfstools"),
        ("busybox", "busybox-static"),
    ] {
        if sh(&["sh", "-c", &format!("command -v {tool}")])
            .stdout
            .is_empty()
        {
            return Some(format!("needs {tool} (package {pkg})"));
        }
    }
    let kernels = std::fs::read_dir("/boot")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        })
        .unwrap_or(false);
    if !kernels {
        return Some("needs a kernel in /boot (package linux-image-amd64)".into());
    }
    let netd = Path::new(ursa_bin()).with_file_name("ursa-netd");
    if !netd.exists() {
        return Some(format!("{} is not built", netd.display()));
    }
    None
}

/// When dropped (also when the test fails): deletes the routers, ports and
/// networks the test made, waits for netd to remove the namespaces it made
/// for them (one per router and per DHCP network, outside the test's own
/// namespace; netd lists them in `<state>/netd/state/namespaces.json`), and
/// removes any that are left.
pub struct Cleanup<'a> {
    pub cloud: &'a Cloud,
    pub admin: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        // A router's interfaces go first: neither the router nor its
        // interface ports can be deleted while attached.
        let (_, ports) = self
            .cloud
            .service_call("GET", "/network/v2.0/ports", &self.admin, None);
        for p in ports["ports"].as_array().into_iter().flatten() {
            if p["device_owner"] == "network:router_interface" {
                let router = p["device_id"].as_str().unwrap_or_default();
                let path = format!("/network/v2.0/routers/{router}/remove_router_interface");
                let body = json!({"port_id": p["id"]});
                let _ = self
                    .cloud
                    .service_call("PUT", &path, &self.admin, Some(body));
            }
        }
        for collection in ["routers", "ports", "networks"] {
            let path = format!("/network/v2.0/{collection}");
            let (_, list) = self.cloud.service_call("GET", &path, &self.admin, None);
            for r in list[collection].as_array().into_iter().flatten() {
                if r["device_owner"] == "network:dhcp" {
                    continue; // goes with its network
                }
                let id = r["id"].as_str().unwrap_or_default();
                let (st, v) =
                    self.cloud
                        .service_call("DELETE", &format!("{path}/{id}"), &self.admin, None);
                if st != 204 {
                    eprintln!("deleting {collection}/{id}: {st} {v}");
                }
            }
        }
        let file = self.cloud.state_dir.join("netd/state/namespaces.json");
        let owned = || -> Vec<String> {
            std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default()
        };
        let t0 = std::time::Instant::now();
        while !owned().is_empty() && t0.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(200));
        }
        for n in owned() {
            eprintln!("netd left namespace {n}: removing it");
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &n])
                .status();
        }
    }
}

/// A PostgreSQL database of its own for one test, dropped with it.
pub struct FreshDb {
    admin_url: String,
    name: String,
}

impl FreshDb {
    /// Creates `<prefix>_<pid>` next to the database `url` names; returns
    /// its URL.
    pub fn create(url: &str, prefix: &str) -> (String, FreshDb) {
        let name = format!("{prefix}_{}", std::process::id());
        let sql = |q: String| {
            let url = url.to_string();
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    use sqlx::Connection;
                    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                    sqlx::query(&q).execute(&mut c).await.map(|_| ())
                })
        };
        sql(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
        sql(format!("CREATE DATABASE {name}")).unwrap();
        let db_url = format!("{}/{name}", url.rsplit_once('/').unwrap().0);
        (
            db_url,
            FreshDb {
                admin_url: url.to_string(),
                name,
            },
        )
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await
            });
    }
}

/// The PostgreSQL database of the cloud in `state_dir` when the tests run
/// every cloud on PostgreSQL (`URSA_TEST_DATABASE_URL`, a URL of a
/// database whose user may create others; the Unix socket form,
/// `postgres://ursa:ursa@localhost/ursa_test?host=/var/run/postgresql`,
/// reaches it also from a test's own network namespace): one per state directory,
/// created on its first start and kept across restarts of that cloud
/// (named `ursa_t_<hash of the directory>`; drop them after the run).
fn database_of(url: &str, state_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::path::absolute(state_dir)
        .unwrap_or_else(|_| state_dir.to_path_buf())
        .hash(&mut h);
    let name = format!("ursa_t_{:016x}", h.finish());
    let admin = url.to_string();
    let n = name.clone();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            use sqlx::{Connection, Row};
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&n)
                .fetch_optional(&mut c)
                .await
                .unwrap()
                .map(|r| r.get::<i32, _>(0));
            if exists.is_none() {
                sqlx::query(&format!("CREATE DATABASE {n}"))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        });
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = base.rsplit_once('/').unwrap().0;
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
}

/// Gives `to` the token keys of `from` (two controllers of one cloud).
pub fn share_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("keys")).unwrap();
    for k in std::fs::read_dir(from.join("keys")).unwrap().flatten() {
        std::fs::copy(k.path(), to.join("keys").join(k.file_name())).unwrap();
    }
}

/// Stores `n` server records of `project` as the compute API keeps them
/// (no guests), straight into the compute service's table.
pub fn seed_servers(db_url: &str, project: &str, n: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(db_url).await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        for i in 0..n {
            let id = uuid::Uuid::new_v4().to_string();
            let t = format!("2026-01-01T{:02}:{:02}:{:02}Z", (i / 3600) % 24, (i / 60) % 60, i % 60);
            let body = json!({"id": id, "name": format!("seed-{i}"), "status": "SHUTOFF",
                "tenant_id": project, "user_id": "seed", "metadata": {}, "hostId": "",
                "created": t, "updated": t, "key_name": null, "OS-EXT-STS:vm_state": "stopped",
                "OS-EXT-STS:task_state": null, "OS-EXT-STS:power_state": 4,
                "ursa:node": "seeded", "ursa:flavor_id": "1", "ursa:image_id": "",
                "accessIPv4": "", "accessIPv6": "", "OS-DCF:diskConfig": "MANUAL",
                "reservation_id": "r-seed", "config_drive": ""});
            sqlx::query(
                "INSERT INTO cmp_servers (id, project_id, name, status, node, flavor_id, group_id, created, updated, body) \
                 VALUES ($1, $2, $3, 'SHUTOFF', 'seeded', '1', '', $4, $5, $6)",
            )
            .bind(&id)
            .bind(project)
            .bind(format!("seed-{i}"))
            .bind(&t)
            .bind(&t)
            .bind(body.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        pool.close().await;
    });
}

/// Why the browser tests cannot run here (chromium or chromedriver
/// missing), if they cannot.
pub fn browser_missing() -> Option<String> {
    for (tool, pkg) in [
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
    ] {
        if sh(&["sh", "-c", &format!("command -v {tool}")])
            .stdout
            .is_empty()
        {
            return Some(format!("needs {tool} (package {pkg})"));
        }
    }
    None
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver, and every browser it starts, in a process group of its
/// own: dropped (also when a test fails before closing its session), the
/// whole group is killed, so no Chromium outlives the test.
pub struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port, once it listens.
pub fn chromedriver() -> (Driver, u16) {
    use std::os::unix::process::CommandExt;
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let d = Driver(child);
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "chromedriver never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (d, port)
}

/// Files under `dir` (recursively), of exactly `len` bytes when given.
pub fn files_under(dir: &Path, len: Option<u64>) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => files_under(&e.path(), len),
                    Ok(m) if len.is_none_or(|l| m.len() == l) => 1,
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Serves `body` to every HTTP GET on a loopback port (the web a
/// `web-download` import reads from); its URL.
pub fn serve_bytes(body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://127.0.0.1:{port}/disk.raw")
}
