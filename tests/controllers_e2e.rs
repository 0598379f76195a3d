//! Three controllers serving one cloud on one PostgreSQL, end to end:
//! the real `ursa` binary three times (shared token keys, one database),
//! one `ursa-netd` in a namespace of the test's own and one `ursa-blockd`,
//! both named by every controller.
//!
//! 16 clients spread 3,000 creates (projects, users, networks, ports and
//! volume records) over the three; the controller holding the netd push
//! duty is killed with SIGKILL a third of the way in. No answer may be a
//! 409 or a 5xx (a request in flight to the killed controller may fail to
//! connect, nothing else may fail); every create answered 2xx must be
//! readable on both survivors afterwards; an object made on one controller
//! must be readable on the others within 1 s; a token of each validates on
//! the others; a dashboard session made on one is served by the others
//! and ends on all at its logout; and a port made after the kill is plugged
//! by netd within 10 s (the push duty moved).

mod common;

use common::{sh, Cloud, Daemon};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 188; // 3,008 creates in all

/// One request that may fail to connect (the controller may be dead).
fn try_call(
    http: &reqwest::blocking::Client,
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = http
        .request(m, format!("{base}{path}"))
        .header("X-Auth-Token", token);
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let r = rb.send().ok()?;
    let st = r.status().as_u16();
    let text = r.text().ok()?;
    Some((st, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn wait_for(path: &std::path::Path, what: &str) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "{what} listens");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What one create is: the path, the body, the key of the answer and
/// where the object is read back.
fn create_of(
    kind: usize,
    tag: &str,
    net: &str,
) -> (&'static str, Value, &'static str, &'static str) {
    match kind {
        0 => (
            "/v3/projects",
            json!({"project": {"name": tag}}),
            "project",
            "/v3/projects/",
        ),
        1 => (
            "/v3/users",
            json!({"user": {"name": tag, "domain_id": "default"}}),
            "user",
            "/v3/users/",
        ),
        2 => (
            "/network/v2.0/networks",
            json!({"network": {"name": tag}}),
            "network",
            "/network/v2.0/networks/",
        ),
        3 => (
            "/network/v2.0/ports",
            json!({"port": {"name": tag, "network_id": net}}),
            "port",
            "/network/v2.0/ports/",
        ),
        _ => (
            "/volume/v3/volumes",
            json!({"volume": {"name": tag, "size": 1}}),
            "volume",
            "/volume/v3/volumes/",
        ),
    }
}

#[test]
fn three_controllers_on_postgres_serve_one_cloud() {
    let Ok(pg) = std::env::var("URSA_TEST_POSTGRES_URL") else {
        eprintln!("SKIP three controllers: URSA_TEST_POSTGRES_URL is not set");
        return;
    };
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP three controllers: needs root (a namespace for netd)");
        return;
    }
    let bin_dir = std::path::Path::new(common::ursa_bin()).parent().unwrap();
    let (netd_bin, blockd_bin) = (bin_dir.join("ursa-netd"), bin_dir.join("ursa-blockd"));
    if !netd_bin.exists() || !blockd_bin.exists() {
        eprintln!(
            "SKIP three controllers: ursa-netd and ursa-blockd are not built beside the tests"
        );
        return;
    }
    let (db_url, _db) = common::FreshDb::create(&pg, "ursa_three");
    let dir = tempfile::tempdir().unwrap();

    let netd = common::NsNetd::start("uthr", &netd_bin, dir.path());
    let (ns, netd_sock) = (netd.ns.clone(), netd.sock.clone());
    let blockd_sock = dir.path().join("blockd.sock");
    let _blockd = Daemon(
        Command::new(&blockd_bin)
            .arg("--listen")
            .arg(format!("unix:{}", blockd_sock.display()))
            .arg("--state-dir")
            .arg(dir.path().join("blockd"))
            .arg("--pool")
            .arg(format!("default={}", dir.path().join("pool").display()))
            .arg("--nbd-unix")
            .arg(dir.path().join("nbd.sock"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(&blockd_sock, "blockd");

    let netd_arg = format!("--netd=n1=unix:{}", netd_sock.display());
    let blockd_arg = format!("--blockd=st1=unix:{}", blockd_sock.display());
    let args = [
        "--database-url",
        db_url.as_str(),
        netd_arg.as_str(),
        blockd_arg.as_str(),
        "--no-compute",
        "--physical-network=ext",
    ];
    // Object bytes live in one S3 bucket all three reach.
    let s3 = common::s3::S3Server::start(&dir.path().join("s3"), "ursa-three");
    let s3_env = s3.ursa_env();
    let env: Vec<(&str, &std::ffi::OsStr)> =
        s3_env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let dirs: Vec<_> = (0..3).map(|i| dir.path().join(format!("c{i}"))).collect();
    let first = Cloud::start_env(&dirs[0], "three-pw", &args, &env);
    common::share_keys(&dirs[0], &dirs[1]);
    common::share_keys(&dirs[0], &dirs[2]);
    let clouds = [
        first,
        Cloud::start_env(&dirs[1], "three-pw", &args, &env),
        Cloud::start_env(&dirs[2], "three-pw", &args, &env),
    ];
    let bases: Vec<String> = clouds
        .iter()
        .map(|c| c.url.trim_end_matches("/v3").to_string())
        .collect();
    let token = clouds[0].admin_token();

    // A token of each validates on the others.
    let tokens: Vec<String> = clouds.iter().map(|c| c.admin_token()).collect();
    for (i, t) in tokens.iter().enumerate() {
        for (j, c) in clouds.iter().enumerate() {
            if i != j {
                assert_eq!(c.validate(t, t), 200, "a token of controller {i} on {j}");
            }
        }
    }

    // A dashboard session made on one controller is served by the others
    // (sessions are rows), and a logout on one ends it on all of them.
    let session = clouds[0].dashboard_login("admin", "three-pw");
    let plain = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = |base: &str| {
        let r = plain
            .get(format!("{base}/dashboard/identity/projects"))
            .header("cookie", &session)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    for base in &bases {
        let (st, body) = page(base);
        assert!(st == 200 && body.contains("admin"), "{base}: {st}");
    }
    let (_, body) = page(&bases[2]);
    let csrf = body
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let r = plain
        .post(format!("{}/dashboard/auth/logout", bases[2]))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    for base in &bases {
        assert_eq!(
            page(base).0,
            303,
            "{base} still serves a session ended elsewhere"
        );
    }

    // The admin project may hold what the load makes.
    let (_, p) = clouds[0].call("GET", "/projects?name=admin", &token, None);
    let admin_project = p["projects"][0]["id"].as_str().unwrap().to_string();
    let (st, v) = clouds[0].service_call(
        "PUT",
        &format!("/network/v2.0/quotas/{admin_project}"),
        &token,
        Some(json!({"quota": {"network": -1, "port": -1, "subnet": -1}})),
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = clouds[1].service_call(
        "PUT",
        &format!("/volume/v3/os-quota-sets/{admin_project}"),
        &token,
        Some(json!({"quota_set": {"volumes": -1, "gigabytes": -1}})),
    );
    assert_eq!(st, 200, "{v}");
    let (st, n) = clouds[1].service_call(
        "POST",
        "/network/v2.0/networks",
        &token,
        Some(json!({"network": {"name": "three-load"}})),
    );
    assert_eq!(st, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (st, s) = clouds[2].service_call(
        "POST",
        "/network/v2.0/subnets",
        &token,
        Some(json!({"subnet": {"network_id": net, "cidr": "10.90.0.0/20", "ip_version": 4}})),
    );
    assert_eq!(st, 201, "{s}");

    // Which controller pushes to netd: that one is killed.
    let pushes = |c: &Cloud| {
        c.stderr()
            .lines()
            .any(|l| l.contains("this controller holds the duty") && l.contains("netd-push"))
    };
    let t0 = Instant::now();
    let victim = loop {
        let holders: Vec<usize> = (0..3).filter(|&i| pushes(&clouds[i])).collect();
        if holders.len() == 1 {
            break holders[0];
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "exactly one controller takes the push duty: {holders:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // The load: 16 clients, creates spread over the live controllers.
    let dead = [
        AtomicBool::new(false),
        AtomicBool::new(false),
        AtomicBool::new(false),
    ];
    let done = AtomicUsize::new(0);
    struct Answer {
        controller: usize,
        kind: usize,
        status: Option<u16>,
        id: String,
        body: String,
    }
    let started = Instant::now();
    let answers: Vec<Answer> = std::thread::scope(|sc| {
        let killer = sc.spawn(|| {
            while done.load(Ordering::Relaxed) < CLIENTS * PER_CLIENT / 3 {
                std::thread::sleep(Duration::from_millis(5));
            }
            dead[victim].store(true, Ordering::SeqCst);
            unsafe { libc::kill(clouds[victim].pid() as i32, libc::SIGKILL) };
            Instant::now()
        });
        let handles: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let (bases, token, net, dead, done) = (&bases, &token, &net, &dead, &done);
                sc.spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(60))
                        .build()
                        .unwrap();
                    let mut out = Vec::new();
                    for i in 0..PER_CLIENT {
                        let mut c = (t + i) % 3;
                        while dead[c].load(Ordering::SeqCst) {
                            c = (c + 1) % 3;
                        }
                        let kind = (t + i) % 5;
                        let tag = format!("three-{t}-{i}");
                        let (path, body, key, _) = create_of(kind, &tag, net);
                        let r = try_call(&http, &bases[c], "POST", path, token, Some(&body));
                        let (status, id, text) = match r {
                            Some((st, v)) => (
                                Some(st),
                                v[key]["id"].as_str().unwrap_or_default().to_string(),
                                v.to_string(),
                            ),
                            None => (None, String::new(), "no answer".into()),
                        };
                        out.push(Answer {
                            controller: c,
                            kind,
                            status,
                            id,
                            body: text,
                        });
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    out
                })
            })
            .collect();
        let answers = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        killer.join().unwrap();
        answers
    });
    let took = started.elapsed();
    let ok = answers
        .iter()
        .filter(|a| a.status.is_some_and(|s| (200..300).contains(&s)))
        .count();
    eprintln!(
        "three controllers: {} creates in {:.1} s ({:.0}/s), {ok} answered 2xx; controller {victim} killed after {}",
        answers.len(),
        took.as_secs_f64(),
        answers.len() as f64 / took.as_secs_f64(),
        CLIENTS * PER_CLIENT / 3
    );
    let bad: Vec<_> = answers
        .iter()
        .filter(|a| match a.status {
            Some(s) => !(200..300).contains(&s),
            // Only a request to the killed controller may go unanswered.
            None => a.controller != victim,
        })
        .map(|a| (a.controller, a.kind, a.status, &a.body))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} creates failed: {:?}",
        bad.len(),
        answers.len(),
        &bad[..bad.len().min(8)]
    );
    let unanswered = answers.iter().filter(|a| a.status.is_none()).count();
    assert!(
        unanswered <= CLIENTS,
        "{unanswered} requests went unanswered: at most the ones in flight at the kill"
    );

    // Every create answered 2xx is there, on both survivors.
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let http = reqwest::blocking::Client::new();
    for a in answers.iter().filter(|a| a.status.is_some()) {
        let (_, _, _, read) = create_of(a.kind, "", &net);
        for &c in &survivors {
            let t0 = Instant::now();
            loop {
                let (st, v) = try_call(
                    &http,
                    &bases[c],
                    "GET",
                    &format!("{read}{}", a.id),
                    &token,
                    None,
                )
                .expect("a survivor answers");
                if st == 200 {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(1),
                    "{read}{} (answered {:?} by controller {}) on controller {c}: {st} {v}",
                    a.id,
                    a.status,
                    a.controller
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    // Every volume gets made, also those whose creation the killed
    // controller had under way (the volume-tasks duty carries them on).
    let t0 = Instant::now();
    let vols: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.kind == 4 && a.status.is_some())
        .collect();
    for a in &vols {
        loop {
            let (st, v) = try_call(
                &http,
                &bases[survivors[0]],
                "GET",
                &format!("/volume/v3/volumes/{}", a.id),
                &token,
                None,
            )
            .expect("a survivor answers");
            assert_eq!(st, 200, "{v}");
            if v["volume"]["status"] == "available" {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "volume {} (made through controller {}) is still {}",
                a.id,
                a.controller,
                v["volume"]["status"]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let taken: usize = survivors
        .iter()
        .map(|&i| {
            clouds[i]
                .stderr()
                .matches("carrying on a volume task a stopped controller left")
                .count()
        })
        .sum();
    eprintln!(
        "three controllers: all {} volumes available after {:?}; {taken} taken over from the killed controller",
        vols.len(),
        t0.elapsed()
    );

    // An object made on one survivor is readable on the other within 1 s.
    let mut slowest = Duration::ZERO;
    for k in 0..10 {
        let (from, to) = (survivors[k % 2], survivors[(k + 1) % 2]);
        let (st, v) = try_call(
            &http,
            &bases[from],
            "POST",
            "/network/v2.0/networks",
            &token,
            Some(&json!({"network": {"name": format!("three-probe-{k}")}})),
        )
        .unwrap();
        assert_eq!(st, 201, "{v}");
        let id = v["network"]["id"].as_str().unwrap().to_string();
        let t0 = Instant::now();
        loop {
            let (st, _) = try_call(
                &http,
                &bases[to],
                "GET",
                &format!("/network/v2.0/networks/{id}"),
                &token,
                None,
            )
            .unwrap();
            if st == 200 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "network {id} made on controller {from} is on {to} within 1 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        slowest = slowest.max(t0.elapsed());
    }
    eprintln!("three controllers: the slowest of 10 objects was on the other controller after {slowest:?}");

    // A Swift object stored through one survivor reads back, byte for
    // byte, through the other: its bytes are in the shared S3 bucket.
    let (st, v) = try_call(
        &http,
        &bases[survivors[0]],
        "GET",
        "/v3/auth/projects",
        &token,
        None,
    )
    .unwrap();
    assert_eq!(st, 200, "{v}");
    let project = v["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .and_then(|p| p["id"].as_str())
        .unwrap()
        .to_string();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let obj = |c: usize, path: &str| format!("{}/v1/AUTH_{project}{path}", bases[c]);
    let put = |c: usize, path: &str, body: Vec<u8>| {
        http.put(obj(c, path))
            .header("X-Auth-Token", &token)
            .body(body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(put(survivors[0], "/shared", Vec::new()), 201);
    assert_eq!(put(survivors[0], "/shared/blob", data.clone()), 201);
    let r = http
        .get(obj(survivors[1], "/shared/blob"))
        .header("X-Auth-Token", &token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().unwrap()[..] == data[..],
        "the same bytes on the other controller"
    );
    // A listing one controller rendered (and keeps) shows an object
    // another controller stored right after.
    let list = |c: usize| -> Vec<String> {
        let v: Value = http
            .get(obj(c, "/shared?format=json"))
            .header("X-Auth-Token", &token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(list(survivors[1]), ["blob"]);
    assert_eq!(list(survivors[1]), ["blob"]);
    assert_eq!(put(survivors[0], "/shared/later", b"x".to_vec()), 201);
    assert_eq!(list(survivors[1]), ["blob", "later"]);

    // The push duty moved: a port made now is plugged within 10 s.
    let (st, p) = try_call(
        &http,
        &bases[survivors[0]],
        "POST",
        "/network/v2.0/ports",
        &token,
        Some(&json!({"port": {"network_id": net, "binding:host_id": "n1"}})),
    )
    .unwrap();
    assert_eq!(st, 201, "{p}");
    let port = p["port"]["id"].as_str().unwrap().replace('-', "");
    let tap = format!("utp-{}", &port[..11]);
    let t0 = Instant::now();
    while !sh(&["ip", "-n", &ns, "link", "show", &tap])
        .status
        .success()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the port made after the kill is plugged within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "three controllers: the port made after the kill was plugged after {:?}",
        t0.elapsed()
    );
    assert!(
        survivors.iter().any(|&i| pushes(&clouds[i])),
        "a survivor took the push duty"
    );
}
