//! The Instances panel of a project with 1,000 servers (records in the
//! store, no guests), Ursa's dashboard beside OpenStack Horizon 27 (from
//! PyPI, `python -m django runserver`, sessions in the local-memory cache)
//! logged in to the same Ursa, in one run:
//!
//! - server time of the page (p50 of sequential GETs over HTTP, after
//!   login), target ≥ 10× Horizon's;
//! - time to DOMContentLoaded in headless Chromium (p50 of navigations,
//!   from the navigation's start), target ≤ 500 ms for Ursa's.
//!
//! Needs root (the compute API needs a compute node, which needs netd in
//! a namespace of its own), `cargo build --release --bins`, chromium and
//! chromium-driver, and python3-venv; installs Horizon into
//! `target/tmp/horizon-venv` on first use. `URSA_BENCH_SERVERS` changes
//! the 1,000.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{free_port, Cloud, Daemon, Netns};
use fantoccini::ClientBuilder;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn wait_port(port: u16, what: &str, secs: u64) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{what} never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Horizon 27 in a venv of its own (installed once).
fn horizon_venv() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("horizon-venv");
    if !venv.join("bin/python").exists()
        || !Command::new(venv.join("bin/python"))
            .args(["-c", "import openstack_dashboard"])
            .status()
            .is_ok_and(|s| s.success())
    {
        println!("installing Horizon 27 from PyPI into {}", venv.display());
        assert!(Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap()
            .success());
        assert!(Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "horizon>=27,<28"])
            .status()
            .unwrap()
            .success());
    }
    venv
}

/// Writes Horizon's `local_settings.py` (Keystone = Ursa's identity URL,
/// sessions in the local-memory cache) and starts `runserver`.
fn start_horizon(venv: &Path, keystone: &str, port: u16) -> Daemon {
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import openstack_dashboard, os; print(os.path.dirname(openstack_dashboard.__file__))",
        ])
        .output()
        .unwrap();
    let pkg = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let local = venv.join("horizon-local");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(
        pkg.join("local/local_settings.py"),
        format!(
            "DEBUG = False\nALLOWED_HOSTS = ['*']\nSECRET_KEY = 'ursa-bench'\n\
             OPENSTACK_KEYSTONE_URL = '{keystone}'\nOPENSTACK_KEYSTONE_DEFAULT_DOMAIN = 'Default'\n\
             SESSION_ENGINE = 'django.contrib.sessions.backends.cache'\n\
             CACHES = {{'default': {{'BACKEND': 'django.core.cache.backends.locmem.LocMemCache'}}}}\n\
             COMPRESS_OFFLINE = False\nCOMPRESS_ENABLED = False\nLOCAL_PATH = '{}'\n",
            local.display()
        ),
    )
    .unwrap();
    let log =
        std::fs::File::create(Path::new(env!("CARGO_TARGET_TMPDIR")).join("horizon.log")).unwrap();
    let child = Command::new(venv.join("bin/python"))
        .args([
            "-W",
            "ignore",
            "-m",
            "django",
            "runserver",
            "--noreload",
            "--insecure",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .env("DJANGO_SETTINGS_MODULE", "openstack_dashboard.settings")
        .current_dir(&local)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("horizon starts");
    let p = Daemon(child);
    wait_port(port, "Horizon", 120);
    p
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// The value of cookie `name` among the answer's `Set-Cookie` headers.
fn set_cookie(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.strip_prefix(&format!("{name}="))
                .map(|v| v.split(';').next().unwrap_or("").to_string())
        })
}

/// Logs in to Horizon; returns the Cookie header.
fn horizon_login(base: &str, password: &str) -> String {
    let h = http();
    let page = h.get(format!("{base}/auth/login/")).send().unwrap();
    let csrf = set_cookie(&page, "csrftoken").unwrap();
    let html = page.text().unwrap();
    let token = html
        .split("name=\"csrfmiddlewaretoken\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let r = h
        .post(format!("{base}/auth/login/"))
        .header("cookie", format!("csrftoken={csrf}"))
        .header("referer", format!("{base}/auth/login/"))
        .form(&[
            ("csrfmiddlewaretoken", token.as_str()),
            ("region", "default"),
            ("domain", "Default"),
            ("username", "admin"),
            ("password", password),
        ])
        .send()
        .unwrap();
    let session = set_cookie(&r, "sessionid").unwrap_or_else(|| {
        panic!(
            "Horizon did not log in against Ursa ({}): see target/tmp/horizon.log",
            r.status()
        )
    });
    format!("csrftoken={csrf}; sessionid={session}")
}

/// Server time of `url` (ms, whole answer read), `n` times.
fn server_times(url: &str, cookie: &str, n: usize, must_list: &str) -> Vec<f64> {
    let h = http();
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = h.get(url).header("cookie", cookie).send().unwrap();
            let status = r.status().as_u16();
            let body = r.text().unwrap();
            let ms = t.elapsed().as_secs_f64() * 1e3;
            assert_eq!(status, 200, "{url}");
            assert!(body.contains(must_list), "{url} does not list {must_list}");
            ms
        })
        .collect()
}

/// DOMContentLoaded of `url` in Chromium (ms from navigation start), `n`
/// navigations, after logging in through the login page at `login`.
async fn dom_times(driver: u16, login: &str, url: &str, password: &str, n: usize) -> Vec<f64> {
    use fantoccini::Locator;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-crash-reporter", "--disable-breakpad",
                        "--window-size=1366,768"]}),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver}"))
        .await
        .expect("chromedriver");
    // Both login pages name their fields and button alike.
    c.goto(login).await.unwrap();
    c.find(Locator::Id("id_username"))
        .await
        .unwrap()
        .send_keys("admin")
        .await
        .unwrap();
    c.find(Locator::Id("id_password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Id("loginBtn"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let t0 = Instant::now();
    while c.current_url().await.unwrap().path().contains("login") {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "login at {login} never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut out = Vec::new();
    for i in 0..n + 1 {
        c.goto(url).await.unwrap();
        assert!(
            c.source().await.unwrap().contains("seed-"),
            "{url} lists no servers"
        );
        let v = c
            .execute(
                "const e = performance.getEntriesByType('navigation')[0]; \
                 return e.domContentLoadedEventEnd - e.startTime;",
                vec![],
            )
            .await
            .unwrap();
        // The first navigation warms the browser's cache of static files.
        if i > 0 {
            out.push(v.as_f64().unwrap_or(f64::NAN));
        }
    }
    let _ = c.close().await;
    out
}

fn main() {
    let servers: usize = std::env::var("URSA_BENCH_SERVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let netd = Path::new(env!("CARGO_BIN_EXE_ursa")).with_file_name("ursa-netd");
    let missing = if unsafe { libc::geteuid() } != 0 {
        Some("needs root (netd in a namespace, for the compute API)".to_string())
    } else if !netd.exists() {
        Some("run `cargo build --release --bins` first (ursa-netd)".into())
    } else if common::browser_missing().is_some() {
        Some("needs chromium and chromium-driver".into())
    } else {
        None
    };
    if let Some(why) = missing {
        println!("SKIP dashboard bench: {why}");
        return;
    }
    let venv = horizon_venv();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _ns = Netns::enter(&format!("udbn{}", std::process::id() % 100000), &state);
    let cloud = Cloud::start_with_nodes(&state, "bench-pw", &["--physical-network=ext"]);
    let admin = cloud.admin_token();
    // Router namespaces netd made outside ours go at the end.
    let _cleanup = common::Cleanup {
        cloud: &cloud,
        admin: admin.clone(),
    };
    let (_, p) = cloud.call("GET", "/projects?name=admin", &admin, None);
    let project = p["projects"][0]["id"].as_str().unwrap().to_string();
    common::seed_servers(
        &format!("sqlite:{}", state.join("ursa.db").display()),
        &project,
        servers,
    );
    let base = cloud.url.trim_end_matches("/v3").to_string();
    let hport = free_port();
    let _horizon = start_horizon(&venv, &cloud.url, hport);
    let hbase = format!("http://127.0.0.1:{hport}");

    if std::env::var("URSA_BENCH_HOLD").is_ok_and(|v| v == "1") {
        println!(
            "holding: ursa {base}, horizon {hbase} (namespace udbn{})",
            std::process::id() % 100000
        );
        std::thread::sleep(Duration::from_secs(3600));
    }
    let ours_cookie = cloud.dashboard_login("admin", "bench-pw");
    let peer_cookie = horizon_login(&hbase, "bench-pw");
    let ours_url = format!("{base}/dashboard/project/instances");
    let peer_url = format!("{hbase}/project/instances/");
    // Warm both (templates, caches), then measure.
    server_times(&ours_url, &ours_cookie, 3, "seed-");
    server_times(&peer_url, &peer_cookie, 2, "seed-");
    let ours = p50(server_times(&ours_url, &ours_cookie, 50, "seed-"));
    let peer = p50(server_times(&peer_url, &peer_cookie, 10, "seed-"));
    println!("{servers} servers in the project; the Instances panel's first page (20 rows, as both page)");
    println!(
        "BENCH dashboard-instances-server-p50 ours={ours:.1} peer={peer:.1} ratio={:.1} unit=ms (peer: Horizon 27; peer/ours, target >= 10)",
        peer / ours
    );

    let (_driver, dport) = common::chromedriver();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ours_dom = p50(rt.block_on(dom_times(
        dport,
        &format!("{base}/dashboard/auth/login"),
        &ours_url,
        "bench-pw",
        10,
    )));
    let peer_dom = p50(rt.block_on(dom_times(
        dport,
        &format!("{hbase}/auth/login/"),
        &peer_url,
        "bench-pw",
        5,
    )));
    println!(
        "BENCH dashboard-instances-domcontentloaded-p50 ours={ours_dom:.0} peer={peer_dom:.0} ratio={:.1} unit=ms (peer: Horizon 27; peer/ours; target ours <= 500)",
        peer_dom / ours_dom
    );
}
