//! Sweeps of every route of the REST API through the real `ursa` binary,
//! with its own blockd, netd and compute node (in a network namespace made
//! for the test; no guest is booted). The routes are read from the source
//! (`.route("…", get(…).post(…))` in control/*/src, under their service's
//! prefix), so a route added later is swept too.
//!
//! - Bad input: malformed and mistyped JSON, out-of-range numbers, huge
//!   strings, deep nesting, odd path parameters and query strings, as the
//!   admin and as a member of another project. Nothing may answer 5xx, and
//!   the process must live on.
//! - Isolation: the admin project owns one of each kind of resource; a
//!   member of another project tries every route on each of their ids.
//!   Nothing may answer 2xx, and every resource is still there afterwards.
//!   The dashboard's pages are tried with the member's dashboard session.

mod common;

use common::{Cleanup, Cloud, Netns};
use serde_json::{json, Value};
use std::time::Duration;

/// `(path, methods)` of every `.route(…)` call in control/*/src (one
/// crate per service).
fn routes() -> Vec<(String, Vec<String>)> {
    let control = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut files = vec![control.clone()];
    let mut out = Vec::new();
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        // Compute, network and volume routes are nested under their
        // service's versioned prefix; the metadata API has a port of its own.
        let module = p
            .strip_prefix(&control)
            .ok()
            .and_then(|r| r.components().next())
            .and_then(|c| c.as_os_str().to_str());
        let (service, prefix) = match module {
            Some("compute") if p.ends_with("metadata.rs") => continue,
            Some("compute") => ("/compute", "/compute/v2.1"),
            Some("network") => ("/network", "/network/v2.0"),
            Some("volume") => ("/volume", "/volume/v3"),
            _ => ("/", ""),
        };
        let src = std::fs::read_to_string(&p).unwrap();
        let mut rest = src.as_str();
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            let Some(q) = rest.find('"') else { break };
            if !rest[..q].trim().is_empty() {
                continue; // not a literal path
            }
            let Some(e) = rest[q + 1..].find('"') else {
                break;
            };
            let mut path = rest[q + 1..q + 1 + e].to_string();
            if !path.starts_with(service) {
                path = format!("{prefix}{path}");
            }
            // The method list runs to the paren that closes `.route(`.
            let mut depth = 1;
            let mut end = rest.len();
            for (k, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let args = &rest[q + 2 + e..end];
            let methods = ["get", "post", "put", "patch", "delete"]
                .into_iter()
                .filter(|m| {
                    args.match_indices(&format!("{m}(")).any(|(k, _)| {
                        k == 0
                            || !args.as_bytes()[k - 1].is_ascii_alphanumeric()
                                && args.as_bytes()[k - 1] != b'_'
                    })
                })
                .map(String::from)
                .collect();
            out.push((path, methods));
        }
    }
    out
}

/// `path` with every `{parameter}` replaced by `value`.
fn fill(path: &str, value: &str) -> String {
    let mut p = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                p.push_str(value);
            }
            '}' => in_param = false,
            '*' => {}
            c if !in_param => p.push(c),
            _ => {}
        }
    }
    p
}

/// A cloud with every service, in a namespace of its own (`tag` names it).
/// None (and why, printed) when the daemons are not built.
fn start(dir: &std::path::Path, tag: &str) -> Option<(Netns, Cloud)> {
    for d in ["ursa-blockd", "ursa-netd"] {
        let bin = std::path::Path::new(common::ursa_bin()).with_file_name(d);
        if !bin.exists() {
            eprintln!(
                "SKIP {tag} sweep: {} is not built (cargo build --workspace)",
                bin.display()
            );
            return None;
        }
    }
    let state = dir.join("state");
    let ns = Netns::enter(&format!("usw{tag}{}", std::process::id() % 100000), &state);
    let cloud = Cloud::start_with_nodes(&state, "sweep-pw", &["--physical-network=ext"]);
    Some((ns, cloud))
}

/// A client that opens a connection per request: a server may close a
/// kept-alive connection after refusing a body it did not read, and a
/// pooled request that lands on it fails in the client, not the server.
fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[test]
fn no_route_answers_bad_input_with_a_server_error() {
    let routes = routes();
    assert!(
        routes.len() > 150,
        "found only {} routes in control/*/src",
        routes.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let Some((_ns, cloud)) = start(dir.path(), "bad") else {
        return;
    };
    let admin = cloud.admin_token();
    let _cleanup = Cleanup {
        cloud: &cloud,
        admin: admin.clone(),
    };
    // The same sweep as a member of another project: the policy checks come
    // first there, and must not fail either.
    let (member, _) = cloud.member_of(&admin, "sweep-member");
    let base = cloud.url.trim_end_matches("/v3").to_string();
    let http = client();
    // The dashboard's routes get the same input inside a dashboard session
    // (with its CSRF token, so that the forms' handlers read it); logging
    // out would end the session, so that route is left out.
    let session = |user: &str, pw: &str| {
        let cookie = cloud.dashboard_login(user, pw);
        let page = http
            .get(format!("{base}/dashboard/identity/projects"))
            .header("cookie", &cookie)
            .send()
            .unwrap()
            .text()
            .unwrap();
        let csrf = page
            .split("name=\"csrf-token\" content=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("pages carry the session's CSRF token")
            .to_string();
        (cookie, csrf)
    };
    let sessions = [
        session("admin", &cloud.password),
        session("sweep-member-user", "pw-pw-pw"),
    ];
    let nested = format!("{{\"a\":{}{}}}", "[".repeat(3000), "]".repeat(3000));
    let raw: Vec<&str> = vec!["{", "[]", "null", "\"x\"", "123", "{\"a\":1}", &nested];
    let long = "x".repeat(300);
    let mut failures = Vec::new();
    let mut sent = 0;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for (i, (who, token)) in [("admin", &admin), ("member", &member)]
        .into_iter()
        .enumerate()
    {
        let (cookie, csrf) = &sessions[i];
        for (path, methods) in &routes {
            for param in ["00000000-0000-4000-8000-000000000000", long.as_str(), "-1"] {
                let p = fill(path, param);
                // The body's key: the resource the path names (`servers` →
                // `server`), so that the handler gets past its first check.
                let key = path
                    .split('/')
                    .rfind(|s| !s.is_empty() && !s.starts_with('{') && !s.starts_with('v'))
                    .unwrap_or("x")
                    .trim_end_matches('s')
                    .replace('-', "_");
                let wrap = |v: serde_json::Value| {
                    let mut m = serde_json::Map::new();
                    m.insert(key.clone(), v);
                    serde_json::Value::Object(m)
                };
                let typed = [
                    wrap(serde_json::Value::Null),
                    wrap(serde_json::json!([])),
                    wrap(serde_json::json!({
                        "name": 123, "size": -1, "id": [], "flavorRef": {},
                        "imageRef": 1e308, "networks": "auto2", "cidr": "999.1.1.1/99",
                        "ip_version": 7, "port_range_min": 70000, "volume_size": -5,
                        "min_count": 0, "max_count": 1e20, "password": {}, "enabled": "yes",
                    })),
                    wrap(serde_json::json!({ "name": "a".repeat(100_000) })),
                ];
                for m in methods {
                    let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
                    let mut attempts: Vec<reqwest::blocking::RequestBuilder> = Vec::new();
                    let url = format!("{base}{p}");
                    match m.as_str() {
                    "post" | "put" | "patch" => {
                        for r in &raw {
                            attempts.push(
                                http.request(method.clone(), &url)
                                    .header("Content-Type", "application/json")
                                    .body(r.to_string()),
                            );
                        }
                        for t in &typed {
                            attempts.push(http.request(method.clone(), &url).json(t));
                        }
                    }
                    "get" => attempts.push(http.get(format!(
                        "{url}?limit=-1&marker={param}&sort_key=%27&sort_dir=up&offset=-3&changes-since=bogus&name=%00"
                    ))),
                    // Deleting what does not exist; the UUID case could hit
                    // nothing real either, but keep the sweep read-mostly.
                    _ if param != "00000000-0000-4000-8000-000000000000" => {
                        attempts.push(http.delete(&url))
                    }
                    _ => {}
                }
                    for a in attempts {
                        sent += 1;
                        let mut a = a.header("X-Auth-Token", token);
                        if path.starts_with("/dashboard") && !path.ends_with("/logout") {
                            a = a.header("cookie", cookie).header("x-csrf-token", csrf);
                        }
                        let r = a.send();
                        let st = r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                        *statuses.entry(st).or_default() += 1;
                        if st == 0 || st >= 500 {
                            let body = match r {
                                Ok(r) => r.text().unwrap_or_default(),
                                Err(e) => format!("{e:?}"),
                            };
                            failures.push(format!("{who}: {m} {p}: {st} {body:.200}"));
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "bad-input sweep: {} routes, {sent} requests, answers by status: {statuses:?}",
        routes.len()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Still serving, and the admin still logs in.
    assert_eq!(cloud.validate(&admin, &cloud.admin_token()), 200);
}

#[test]
fn no_route_shows_a_member_another_projects_resources() {
    let routes = routes();
    let dir = tempfile::tempdir().unwrap();
    let Some((_ns, cloud)) = start(dir.path(), "iso") else {
        return;
    };
    let admin = cloud.admin_token();
    let _cleanup = Cleanup {
        cloud: &cloud,
        admin: admin.clone(),
    };
    let (member, _) = cloud.member_of(&admin, "iso-member");
    // The dashboard's routes are tried as the member's dashboard session.
    let member_session = cloud.dashboard_login("iso-member-user", "pw-pw-pw");
    let (_, ap) = cloud.call("GET", "/projects?name=admin", &admin, None);
    let admin_project = ap["projects"][0]["id"].as_str().unwrap().to_string();
    let made = |path: &str, body: Value, key: &str| -> String {
        let (st, v) = cloud.service_call("POST", path, &admin, Some(body));
        assert!((200..300).contains(&st), "POST {path}: {st} {v}");
        let r = if key.is_empty() { &v } else { &v[key] };
        r["id"].as_str().map_or_else(
            || r["name"].as_str().unwrap_or_default().to_string(),
            str::to_string,
        )
    };
    // One of each, in the admin project; `show` is where its owner reads it.
    let net = made(
        "/network/v2.0/networks",
        json!({"network": {"name": "iso-net"}}),
        "network",
    );
    let vols = format!("/volume/v3/{admin_project}/volumes");
    let owned = [
        ("network", "/network/v2.0/networks", net.clone()),
        (
            "image",
            "/image/v2/images",
            made(
                "/image/v2/images",
                json!({"name": "iso-img", "visibility": "private", "disk_format": "raw", "container_format": "bare"}),
                "",
            ),
        ),
        (
            "subnet",
            "/network/v2.0/subnets",
            made(
                "/network/v2.0/subnets",
                json!({"subnet": {"network_id": net, "cidr": "10.99.0.0/24", "ip_version": 4}}),
                "subnet",
            ),
        ),
        (
            "port",
            "/network/v2.0/ports",
            made(
                "/network/v2.0/ports",
                json!({"port": {"network_id": net}}),
                "port",
            ),
        ),
        (
            "security group",
            "/network/v2.0/security-groups",
            made(
                "/network/v2.0/security-groups",
                json!({"security_group": {"name": "iso-sg"}}),
                "security_group",
            ),
        ),
        (
            "router",
            "/network/v2.0/routers",
            made(
                "/network/v2.0/routers",
                json!({"router": {"name": "iso-router"}}),
                "router",
            ),
        ),
        (
            "volume",
            vols.as_str(),
            made(
                &vols,
                json!({"volume": {"size": 1, "name": "iso-vol"}}),
                "volume",
            ),
        ),
        (
            "keypair",
            "/compute/v2.1/os-keypairs",
            made(
                "/compute/v2.1/os-keypairs",
                json!({"keypair": {"name": "iso-kp"}}),
                "keypair",
            ),
        ),
        (
            "server group",
            "/compute/v2.1/os-server-groups",
            made(
                "/compute/v2.1/os-server-groups",
                json!({"server_group": {"name": "iso-group", "policies": ["affinity"]}}),
                "server_group",
            ),
        ),
        (
            "project",
            "/v3/projects",
            made(
                "/v3/projects",
                json!({"project": {"name": "iso-project"}}),
                "project",
            ),
        ),
        (
            "group",
            "/v3/groups",
            made(
                "/v3/groups",
                json!({"group": {"name": "iso-group"}}),
                "group",
            ),
        ),
    ];
    let http = client();
    let base = cloud.url.trim_end_matches("/v3").to_string();
    let mut leaks = Vec::new();
    let mut sent = 0;
    // Answers that do not depend on the id: Nova lets anyone read the
    // default quotas (`os_compute_api:os-quota-sets:defaults` is "@").
    let public = ["/compute/v2.1/os-quota-sets/{project}/defaults"];
    for (path, methods) in routes
        .iter()
        .filter(|(p, _)| p.contains('{') && !public.contains(&p.as_str()))
    {
        for (kind, _, id) in &owned {
            let url = format!("{base}{}", fill(path, id));
            for m in methods {
                let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
                let mut rb = http.request(method, &url).header("X-Auth-Token", &member);
                if path.starts_with("/dashboard") {
                    rb = rb.header("cookie", &member_session);
                }
                if m != "get" && m != "delete" {
                    rb = rb.json(&json!({}));
                }
                sent += 1;
                let st = rb.send().map(|r| r.status().as_u16()).unwrap_or(0);
                if (200..300).contains(&st) || st == 0 || st >= 500 {
                    leaks.push(format!("{m} {path} with the admin's {kind} {id}: {st}"));
                }
            }
        }
    }
    eprintln!(
        "isolation sweep: {} resources, {sent} requests",
        owned.len()
    );
    assert!(
        leaks.is_empty(),
        "{} requests got through:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    for (kind, collection, id) in &owned {
        let (st, v) = cloud.service_call("GET", &format!("{collection}/{id}"), &admin, None);
        assert_eq!(st, 200, "the admin's {kind} after the sweep: {v}");
    }
    // Asking for every project's servers is the admin's alone (Nova: 403).
    for q in ["/servers/detail?all_tenants=True", "/servers?all_tenants=1"] {
        let (st, v) = cloud.service_call("GET", &format!("/compute/v2.1{q}"), &member, None);
        assert_eq!(st, 403, "a member's {q}: {v}");
    }
}
