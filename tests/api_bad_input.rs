//! Every route of the REST API against bad input, through the real `ursa`
//! binary (with its own blockd, without netd): malformed and mistyped JSON,
//! out-of-range numbers, huge strings, deep nesting, odd path parameters and
//! query strings, as the admin and as a member of another project. Nothing
//! may answer 5xx, and the process must live on.
//!
//! The routes are read from the source (`.route("…", get(…).post(…))` in
//! control/src, under their service's prefix), so a route added later is
//! swept too.

mod common;

use common::Cloud;
use std::time::Duration;

/// `(path, methods)` of every `.route(…)` call in control/src.
fn routes() -> Vec<(String, Vec<String>)> {
    let mut files = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
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
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str());
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

#[test]
fn no_route_answers_bad_input_with_a_server_error() {
    let blockd = std::path::Path::new(common::ursa_bin()).with_file_name("ursa-blockd");
    if !blockd.exists() {
        eprintln!(
            "SKIP bad-input sweep: {} is not built (cargo build --workspace)",
            blockd.display()
        );
        return;
    }
    let routes = routes();
    assert!(
        routes.len() > 150,
        "found only {} routes in control/src",
        routes.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path(), "sweep-pw");
    let admin = cloud.admin_token();
    // The same sweep as a member of another project: the policy checks come
    // first there, and must not fail either.
    let (member, _) = cloud.member_of(&admin, "sweep-member");
    let base = cloud.url.trim_end_matches("/v3").to_string();
    // A connection per request: a server may close a kept-alive connection
    // after refusing a body it did not read, and a pooled request that
    // lands on it fails in the client, not in the server.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let nested = format!("{{\"a\":{}{}}}", "[".repeat(3000), "]".repeat(3000));
    let raw: Vec<&str> = vec!["{", "[]", "null", "\"x\"", "123", "{\"a\":1}", &nested];
    let long = "x".repeat(300);
    let mut failures = Vec::new();
    let mut sent = 0;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for (who, token) in [("admin", &admin), ("member", &member)] {
        for (path, methods) in &routes {
            for param in ["00000000-0000-4000-8000-000000000000", long.as_str(), "-1"] {
                let mut p = String::new();
                let mut in_param = false;
                for c in path.chars() {
                    match c {
                        '{' => {
                            in_param = true;
                            p.push_str(param);
                        }
                        '}' => in_param = false,
                        '*' => {}
                        c if !in_param => p.push(c),
                        _ => {}
                    }
                }
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
                        let r = a.header("X-Auth-Token", token).send();
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
