//! Compute microversions against a real `ursa up` (its own netd and
//! compute node in a namespace made for the test): the version is read
//! from either header and echoed, out-of-range and malformed versions get
//! Nova's 406 and 400, and what 2.2 … 2.100 change shows exactly from its
//! version (flavors, key pairs, servers, tags, locks), never below. A
//! member asking for every project's servers gets 403. Where the tiny
//! guest can be built, a real server is booted and shown at 2.1 and 2.100.

mod common;

use common::{tiny_guest_missing, Cloud, Netns};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A compute request at a microversion (None: no header); status, the
/// echoed version header and the body.
fn at(
    cloud: &Cloud,
    mv: Option<&str>,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, String, Value) {
    let base = cloud.url.trim_end_matches("/v3");
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = cloud
        .http()
        .request(m, format!("{base}/compute/v2.1{path}"))
        .header("X-Auth-Token", token);
    if let Some(v) = mv {
        rb = rb.header("OpenStack-API-Version", format!("compute {v}"));
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().unwrap();
    let st = r.status().as_u16();
    let echoed = r
        .headers()
        .get("openstack-api-version")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = r.text().unwrap_or_default();
    (
        st,
        echoed,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyZhdCF2dTLxbEFpV6K7Z8gUTlmx7V6fhvSWQ1yBgNo test@ursa";

#[test]
fn compute_answers_each_microversion_as_nova_does() {
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIP compute versions: the compute node runs in a namespace, which needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let guest = match tiny_guest_missing() {
        None => Some(common::build_tiny(&dir.path().join("tiny"))),
        Some(why) => {
            eprintln!("SKIP the server part: {why}");
            None
        }
    };
    let state = dir.path().join("state");
    let _ns = Netns::enter(&format!("ucmv{}", std::process::id() % 100000), &state);
    let cloud = Cloud::start_with_nodes(&state, "mv-pw", &["--physical-network=ext"]);
    let admin = cloud.admin_token();
    // What netd made outside the test's namespace goes at the end, also
    // on failure.
    let _cleanup = common::Cleanup {
        cloud: &cloud,
        admin: admin.clone(),
    };

    // The version document names the range; headers are read and echoed.
    let (st, _, doc) = at(&cloud, None, "GET", "/", &admin, None);
    assert_eq!(st, 200);
    assert_eq!(doc["version"]["version"], "2.104", "{doc}");
    assert_eq!(doc["version"]["min_version"], "2.1", "{doc}");
    let (st, echoed, _) = at(&cloud, None, "GET", "/flavors", &admin, None);
    assert_eq!((st, echoed.as_str()), (200, "compute 2.1"));
    let (st, echoed, _) = at(&cloud, Some("latest"), "GET", "/flavors", &admin, None);
    assert_eq!((st, echoed.as_str()), (200, "compute 2.104"));
    let (st, _, e) = at(&cloud, Some("2.105"), "GET", "/flavors", &admin, None);
    assert_eq!(st, 406, "{e}");
    let (st, _, e) = at(&cloud, Some("2.x"), "GET", "/flavors", &admin, None);
    assert_eq!(st, 400, "{e}");
    // The older header, alone.
    let base = cloud.url.trim_end_matches("/v3");
    let r = cloud
        .http()
        .get(format!("{base}/compute/v2.1/flavors"))
        .header("X-Auth-Token", &admin)
        .header("X-OpenStack-Nova-API-Version", "2.60")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-openstack-nova-api-version"], "2.60");

    // Flavors: description from 2.55 (and PUT), extra specs from 2.61,
    // swap as 0 from 2.75.
    let (st, _, f) = at(
        &cloud,
        Some("2.55"),
        "POST",
        "/flavors",
        &admin,
        Some(
            json!({"flavor": {"name": "mvf", "ram": 64, "vcpus": 1, "disk": 1, "description": "first"}}),
        ),
    );
    assert_eq!(st, 200, "{f}");
    assert_eq!(f["flavor"]["description"], "first");
    assert!(f["flavor"].get("extra_specs").is_none(), "{f}");
    let fid = f["flavor"]["id"].as_str().unwrap().to_string();
    let (st, _, e) = at(
        &cloud,
        Some("2.54"),
        "POST",
        "/flavors",
        &admin,
        Some(
            json!({"flavor": {"name": "mvf2", "ram": 64, "vcpus": 1, "disk": 1, "description": "x"}}),
        ),
    );
    assert_eq!(st, 400, "a description below 2.55: {e}");
    // rxtx_factor is taken until 2.101.
    let (st, _, e) = at(
        &cloud,
        Some("2.102"),
        "POST",
        "/flavors",
        &admin,
        Some(
            json!({"flavor": {"name": "mvf3", "ram": 64, "vcpus": 1, "disk": 1, "rxtx_factor": 2.0}}),
        ),
    );
    assert_eq!(st, 400, "rxtx_factor from 2.102: {e}");
    let put = json!({"flavor": {"description": "second"}});
    let (st, _, _) = at(
        &cloud,
        Some("2.54"),
        "PUT",
        &format!("/flavors/{fid}"),
        &admin,
        Some(put.clone()),
    );
    assert_eq!(st, 404);
    let (st, _, f) = at(
        &cloud,
        Some("2.61"),
        "PUT",
        &format!("/flavors/{fid}"),
        &admin,
        Some(put),
    );
    assert_eq!(st, 200, "{f}");
    assert_eq!(f["flavor"]["description"], "second");
    assert_eq!(f["flavor"]["extra_specs"], json!({}));
    let (_, _, f) = at(
        &cloud,
        Some("2.1"),
        "GET",
        &format!("/flavors/{fid}"),
        &admin,
        None,
    );
    assert!(f["flavor"].get("description").is_none(), "{f}");
    assert_eq!(f["flavor"]["swap"], "");
    let (_, _, f) = at(
        &cloud,
        Some("2.75"),
        "GET",
        &format!("/flavors/{fid}"),
        &admin,
        None,
    );
    assert_eq!(f["flavor"]["swap"], 0);

    // Key pairs: 201 and a type from 2.2, 204 on delete; a key must be
    // given from 2.92.
    let (st, _, k) = at(
        &cloud,
        Some("2.2"),
        "POST",
        "/os-keypairs",
        &admin,
        Some(json!({"keypair": {"name": "k22", "public_key": KEY}})),
    );
    assert_eq!(st, 201, "{k}");
    assert_eq!(k["keypair"]["type"], "ssh");
    let (st, _, k) = at(&cloud, Some("2.1"), "GET", "/os-keypairs/k22", &admin, None);
    assert_eq!(st, 200);
    assert!(k["keypair"].get("type").is_none(), "{k}");
    // Below 2.92 Nova also makes an x509 key pair: a client certificate
    // for the user, with its private key.
    let (st, _, k) = at(
        &cloud,
        Some("2.2"),
        "POST",
        "/os-keypairs",
        &admin,
        Some(json!({"keypair": {"name": "kx", "type": "x509"}})),
    );
    assert_eq!(st, 201, "{k}");
    assert_eq!(k["keypair"]["type"], "x509");
    let private = k["keypair"]["private_key"].as_str().unwrap_or("");
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"), "{k}");
    let cert = k["keypair"]["public_key"].as_str().unwrap().to_string();
    let mut openssl = std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-fingerprint",
            "-sha1",
            "-ext",
            "subjectAltName,extendedKeyUsage",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(cert.as_bytes())
        .unwrap();
    let out = String::from_utf8(openssl.wait_with_output().unwrap().stdout).unwrap();
    let (_, users) = cloud.call("GET", "/users?name=admin", &admin, None);
    let user = users["users"][0]["id"].as_str().unwrap().to_string();
    assert!(out.contains(&format!("CN = {user}")), "{out}");
    assert!(out.contains("TLS Web Client Authentication"), "{out}");
    let fp = k["keypair"]["fingerprint"].as_str().unwrap().to_uppercase();
    assert!(
        out.to_uppercase()
            .contains(&format!("SHA1 FINGERPRINT={fp}")),
        "{fp} vs {out}"
    );
    let (st, _, _) = at(
        &cloud,
        Some("2.2"),
        "DELETE",
        "/os-keypairs/kx",
        &admin,
        None,
    );
    assert_eq!(st, 204);
    let (st, _, e) = at(
        &cloud,
        Some("2.92"),
        "POST",
        "/os-keypairs",
        &admin,
        Some(json!({"keypair": {"name": "k92"}})),
    );
    assert_eq!(st, 400, "{e}");
    let (st, _, _) = at(
        &cloud,
        Some("2.2"),
        "DELETE",
        "/os-keypairs/k22",
        &admin,
        None,
    );
    assert_eq!(st, 204);

    // Server groups: one policy and its rules from 2.64, owners from 2.13.
    let (st, _, g) = at(
        &cloud,
        Some("2.64"),
        "POST",
        "/os-server-groups",
        &admin,
        Some(
            json!({"server_group": {"name": "g64", "policy": "anti-affinity", "rules": {"max_server_per_host": 2}}}),
        ),
    );
    assert_eq!(st, 200, "{g}");
    assert_eq!(g["server_group"]["policy"], "anti-affinity");
    assert_eq!(g["server_group"]["rules"]["max_server_per_host"], 2);
    assert!(g["server_group"]["project_id"].is_string(), "{g}");
    assert!(g["server_group"].get("policies").is_none(), "{g}");
    let gid = g["server_group"]["id"].as_str().unwrap().to_string();
    let (_, _, g) = at(
        &cloud,
        None,
        "GET",
        &format!("/os-server-groups/{gid}"),
        &admin,
        None,
    );
    assert_eq!(
        g["server_group"]["policies"],
        json!(["anti-affinity"]),
        "{g}"
    );
    assert!(g["server_group"].get("project_id").is_none(), "{g}");
    let (st, _, _) = at(
        &cloud,
        Some("2.1"),
        "POST",
        "/os-server-groups",
        &admin,
        Some(json!({"server_group": {"name": "g1", "policies": ["soft-affinity"]}})),
    );
    assert_eq!(st, 400, "soft policies came with 2.15");

    // Hypervisors and services: UUIDs from 2.53; 2.88 drops the counts
    // and the statistics.
    let (_, _, h) = at(&cloud, Some("2.53"), "GET", "/os-hypervisors", &admin, None);
    let hid = h["hypervisors"][0]["id"]
        .as_str()
        .expect("a UUID at 2.53")
        .to_string();
    assert!(uuid::Uuid::parse_str(&hid).is_ok(), "{h}");
    let (st, _, h) = at(
        &cloud,
        Some("2.88"),
        "GET",
        &format!("/os-hypervisors/{hid}"),
        &admin,
        None,
    );
    assert_eq!(st, 200, "{h}");
    assert!(h["hypervisor"].get("vcpus").is_none(), "{h}");
    let (st, _, _) = at(
        &cloud,
        Some("2.88"),
        "GET",
        "/os-hypervisors/statistics",
        &admin,
        None,
    );
    assert_eq!(st, 404);
    let (_, _, h) = at(&cloud, None, "GET", "/os-hypervisors/1", &admin, None);
    assert!(h["hypervisor"]["vcpus"].is_number(), "{h}");
    let (_, _, sv) = at(&cloud, Some("2.53"), "GET", "/os-services", &admin, None);
    assert!(
        sv["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["id"].is_string() && x["forced_down"] == false),
        "{sv}"
    );

    // A member may not list every project's servers.
    let (member, _) = cloud.member_of(&admin, "mvproj");
    let (st, _, e) = at(
        &cloud,
        None,
        "GET",
        "/servers/detail?all_tenants=True",
        &member,
        None,
    );
    assert_eq!(st, 403, "{e}");
    let (st, _, _) = at(
        &cloud,
        None,
        "GET",
        "/servers/detail?all_tenants=True",
        &admin,
        None,
    );
    assert_eq!(st, 200);
    // Tags are 404 below 2.26.
    let (st, _, _) = at(
        &cloud,
        Some("2.25"),
        "GET",
        &format!("/servers/{}/tags", uuid::Uuid::new_v4()),
        &admin,
        None,
    );
    assert_eq!(st, 404);

    // Usage pages from 2.40 (limit, marker = the last instance, a next
    // link while the page is full): a client that follows the markers
    // (Horizon's overview does) ends, and sees every server once.
    // (Seeded as rows in a project of their own, which nothing else lists.)
    let (st, p) = cloud.call(
        "POST",
        "/projects",
        &admin,
        Some(json!({"project": {"name": "usage-pages", "domain_id": "default"}})),
    );
    assert_eq!(st, 201, "{p}");
    let project = p["project"]["id"].as_str().unwrap().to_string();
    common::seed_servers(
        &format!("sqlite:{}", state.join("ursa.db").display()),
        &project,
        5,
    );
    let window = "start=2020-01-01T00:00:00&end=2030-01-01T00:00:00";
    let usages = |mv: &str, marker: Option<&str>| {
        let m = marker.map(|m| format!("&marker={m}")).unwrap_or_default();
        at(
            &cloud,
            Some(mv),
            "GET",
            &format!("/os-simple-tenant-usage/{project}?{window}&limit=2{m}"),
            &admin,
            None,
        )
    };
    let (st, _, all) = usages("2.39", None);
    assert_eq!(st, 200);
    assert_eq!(
        all["tenant_usage"]["server_usages"]
            .as_array()
            .map(Vec::len),
        Some(5),
        "{all}"
    );
    let (mut seen, mut marker, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let (st, _, page) = usages("2.40", marker.as_deref());
        assert_eq!(st, 200, "{page}");
        let ids: Vec<String> = page["tenant_usage"]["server_usages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["instance_id"].as_str().unwrap().to_string())
            .collect();
        pages += 1;
        assert_eq!(
            page["tenant_usage_links"].is_array(),
            ids.len() == 2,
            "{page}"
        );
        let Some(last) = ids.last().cloned() else {
            break;
        };
        seen.extend(ids);
        marker = Some(last);
        assert!(pages < 10, "the usage pages never end");
    }
    seen.sort();
    seen.dedup();
    assert_eq!((seen.len(), pages), (5, 4));
    let (st, _, e) = usages("2.40", Some("no-such-server"));
    assert_eq!(st, 400, "{e}");
    let (st, _, list) = at(
        &cloud,
        Some("2.40"),
        "GET",
        &format!("/os-simple-tenant-usage?{window}&detailed=1&limit=2"),
        &admin,
        None,
    );
    assert_eq!(st, 200);
    assert!(list["tenant_usages_links"].is_array(), "{list}");

    // /limits drops what moved elsewhere at Nova's versions: the network
    // limits at 2.36, maxImageMeta at 2.39, file injection at 2.57.
    let limits = |mv: &str| {
        let (st, _, v) = at(&cloud, Some(mv), "GET", "/limits", &admin, None);
        assert_eq!(st, 200, "{v}");
        v["limits"]["absolute"].clone()
    };
    for (before, from, key) in [
        ("2.35", "2.36", "maxSecurityGroups"),
        ("2.35", "2.36", "totalFloatingIpsUsed"),
        ("2.38", "2.39", "maxImageMeta"),
        ("2.56", "2.57", "maxPersonality"),
        ("2.56", "2.57", "maxPersonalitySize"),
    ] {
        assert!(limits(before).get(key).is_some(), "{key} at {before}");
        assert!(limits(from).get(key).is_none(), "{key} at {from}");
    }
    assert!(limits("2.100")["maxTotalInstances"].is_number());
    // The proxies to the other services are gone from 2.36.
    for path in [
        "/os-security-groups",
        "/os-floating-ips",
        "/os-floating-ip-pools",
        "/images",
        "/os-volumes",
        "/os-snapshots",
        "/os-networks",
        "/os-tenant-networks",
    ] {
        let (st, _, v) = at(&cloud, Some("2.35"), "GET", path, &admin, None);
        assert_eq!(st, 200, "{path} at 2.35: {v}");
        let (st, _, v) = at(&cloud, Some("2.36"), "GET", path, &admin, None);
        assert_eq!(st, 404, "{path} at 2.36: {v}");
    }
    // An admin reads another project's limits.
    let (st, _, other) = at(
        &cloud,
        None,
        "GET",
        &format!("/limits?tenant_id={project}"),
        &admin,
        None,
    );
    assert_eq!(st, 200, "{other}");
    assert_eq!(
        other["limits"]["absolute"]["totalInstancesUsed"], 5,
        "{other}"
    );

    let Some(tiny_disk) = guest else { return };
    let tiny = {
        let (st, img) = cloud.service_call("POST", "/image/v2/images", &admin,
            Some(json!({"name": "tiny", "disk_format": "raw", "container_format": "bare", "visibility": "public"})));
        assert_eq!(st, 201, "{img}");
        let id = img["id"].as_str().unwrap().to_string();
        let r = cloud
            .http()
            .put(format!("{base}/image/v2/images/{id}/file"))
            .header("X-Auth-Token", &admin)
            .header("content-type", "application/octet-stream")
            .body(std::fs::read(&tiny_disk).unwrap())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        id
    };
    let (st, net) = cloud.service_call(
        "POST",
        "/network/v2.0/networks",
        &admin,
        Some(json!({"network": {"name": "mvn"}})),
    );
    assert_eq!(st, 201, "{net}");
    let net_id = net["network"]["id"].as_str().unwrap().to_string();
    let (st, _) = cloud.service_call(
        "POST",
        "/network/v2.0/subnets",
        &admin,
        Some(json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.79.0.0/24"}})),
    );
    assert_eq!(st, 201);
    let server = json!({"server": {"name": "mv1", "imageRef": tiny, "flavorRef": "1",
        "networks": [{"uuid": net_id}], "description": "made at 2.52", "tags": ["blue", "big"]}});
    let (st, _, e) = at(
        &cloud,
        Some("2.51"),
        "POST",
        "/servers",
        &admin,
        Some(server.clone()),
    );
    assert_eq!(st, 400, "tags below 2.52: {e}");
    let (st, _, made) = at(
        &cloud,
        Some("2.52"),
        "POST",
        "/servers",
        &admin,
        Some(server),
    );
    assert_eq!(st, 202, "{made}");
    let id = made["server"]["id"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    let shown = loop {
        let (_, _, v) = at(
            &cloud,
            Some("2.100"),
            "GET",
            &format!("/servers/{id}"),
            &admin,
            None,
        );
        if v["server"]["status"] == "ACTIVE" || v["server"]["status"] == "ERROR" {
            break v["server"].clone();
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "never ACTIVE: {v}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(shown["status"], "ACTIVE", "{shown}");
    assert_eq!(shown["description"], "made at 2.52");
    assert_eq!(shown["tags"], json!(["blue", "big"]));
    assert_eq!(shown["locked"], false);
    assert_eq!(shown["locked_reason"], Value::Null);
    assert_eq!(
        shown["flavor"]["vcpus"], 1,
        "2.47 embeds the flavor: {shown}"
    );
    assert_eq!(shown["flavor"]["original_name"], "m1.tiny");
    assert_eq!(shown["server_groups"], json!([]));
    assert_eq!(shown["pinned_availability_zone"], Value::Null);
    assert_eq!(shown["scheduler_hints"], json!({}));
    assert_eq!(shown["OS-EXT-SRV-ATTR:hostname"], "mv1");
    let (_, _, old) = at(&cloud, None, "GET", &format!("/servers/{id}"), &admin, None);
    for k in [
        "description",
        "tags",
        "locked",
        "locked_reason",
        "server_groups",
        "scheduler_hints",
    ] {
        assert!(old["server"].get(k).is_none(), "{k} at 2.1: {old}");
    }
    assert!(old["server"]["flavor"].get("links").is_some(), "{old}");

    // 2.104: the pinned availability zone is set and unset by an update;
    // below 2.104 the field is unexpected.
    let pin = |v: &str, z: Value| {
        at(
            &cloud,
            Some(v),
            "PUT",
            &format!("/servers/{id}"),
            &admin,
            Some(json!({"server": {"pinned_availability_zone": z}})),
        )
    };
    assert_eq!(pin("2.103", json!("nova")).0, 400);
    assert_eq!(pin("2.104", json!("elsewhere")).0, 400);
    let (st, _, v) = pin("2.104", json!("nova"));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["server"]["pinned_availability_zone"], "nova", "{v}");
    let (st, _, v) = pin("2.104", Value::Null);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["server"]["pinned_availability_zone"], Value::Null, "{v}");
    // 2.43 retired os-hosts.
    assert_eq!(
        at(&cloud, Some("2.42"), "GET", "/os-hosts", &admin, None).0,
        200
    );
    assert_eq!(
        at(&cloud, Some("2.43"), "GET", "/os-hosts", &admin, None).0,
        404
    );
    // 2.102: a server's GET takes no query parameters it does not define.
    let q = format!("/servers/{id}?bogus=1");
    assert_eq!(at(&cloud, Some("2.101"), "GET", &q, &admin, None).0, 200);
    assert_eq!(at(&cloud, Some("2.102"), "GET", &q, &admin, None).0, 400);

    // Tags: add one, filter by it, take all away.
    let (st, _, _) = at(
        &cloud,
        Some("2.26"),
        "PUT",
        &format!("/servers/{id}/tags/fast"),
        &admin,
        None,
    );
    assert_eq!(st, 201);
    let (st, _, _) = at(
        &cloud,
        Some("2.26"),
        "GET",
        &format!("/servers/{id}/tags/fast"),
        &admin,
        None,
    );
    assert_eq!(st, 204);
    let (_, _, l) = at(
        &cloud,
        Some("2.26"),
        "GET",
        "/servers?tags=fast,blue",
        &admin,
        None,
    );
    assert_eq!(l["servers"].as_array().unwrap().len(), 1, "{l}");
    let (_, _, l) = at(
        &cloud,
        Some("2.26"),
        "GET",
        "/servers?not-tags-any=fast",
        &admin,
        None,
    );
    assert_eq!(l["servers"], json!([]), "{l}");
    let (st, _, _) = at(
        &cloud,
        Some("2.26"),
        "DELETE",
        &format!("/servers/{id}/tags"),
        &admin,
        None,
    );
    assert_eq!(st, 204);
    let (_, _, t) = at(
        &cloud,
        Some("2.26"),
        "GET",
        &format!("/servers/{id}/tags"),
        &admin,
        None,
    );
    assert_eq!(t["tags"], json!([]));

    // A lock with a reason (2.73); an update answers as GET does (2.75).
    let (st, _, _) = at(
        &cloud,
        Some("2.73"),
        "POST",
        &format!("/servers/{id}/action"),
        &admin,
        Some(json!({"lock": {"locked_reason": "maintenance"}})),
    );
    assert_eq!(st, 202);
    let (st, _, up) = at(
        &cloud,
        Some("2.75"),
        "PUT",
        &format!("/servers/{id}"),
        &admin,
        Some(json!({"server": {"description": "renamed"}})),
    );
    assert_eq!(st, 200, "{up}");
    assert_eq!(up["server"]["description"], "renamed");
    assert_eq!(up["server"]["locked"], true);
    assert_eq!(up["server"]["locked_reason"], "maintenance");
    assert!(
        up["server"].get("OS-EXT-STS:vm_state").is_some(),
        "2.75: {up}"
    );
    let (_, _, up) = at(
        &cloud,
        Some("2.74"),
        "PUT",
        &format!("/servers/{id}"),
        &admin,
        Some(json!({"server": {"name": "mv1"}})),
    );
    assert!(
        up["server"].get("OS-EXT-STS:vm_state").is_none(),
        "2.74: {up}"
    );
    let (st, _, _) = at(
        &cloud,
        None,
        "POST",
        &format!("/servers/{id}/action"),
        &admin,
        Some(json!({"unlock": null})),
    );
    assert_eq!(st, 202);
    let (st, _, _) = at(
        &cloud,
        None,
        "DELETE",
        &format!("/servers/{id}"),
        &admin,
        None,
    );
    assert_eq!(st, 204);
    let t0 = Instant::now();
    while at(&cloud, None, "GET", &format!("/servers/{id}"), &admin, None).0 != 404 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the server stayed");
        std::thread::sleep(Duration::from_millis(300));
    }
}
