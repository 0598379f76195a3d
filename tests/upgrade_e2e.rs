//! Upgrade in place: `ursa up` on a state directory written by the release
//! before ports were rows (tests/fixtures/upgrade-0.1) moves the port
//! documents into their tables once and keeps every user, project,
//! assignment, token key, network, subnet, port (addresses and MACs still
//! taken), router, floating IP, security group and rule, volume, image and
//! server (servers, key pairs, images and every network record moved into
//! their tables too).

mod common;

use common::Cloud;
use serde_json::{json, Value};
use std::path::Path;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/upgrade-0.1"
);

/// The fixture's state directory, written out: the store from its dump and
/// the token key.
fn unpack(dir: &Path) {
    let sql = std::fs::read_to_string(Path::new(FIXTURE).join("ursa.sql")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join("ursa.db"))
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::raw_sql(&sql).execute(&pool).await.unwrap();
        pool.close().await;
    });
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(Path::new(FIXTURE).join("keys/1"), keys.join("1")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(keys.join("1"), std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Runs one statement on the store (the cloud stopped); a SELECT's one
/// number, or the rows changed.
fn sql(dir: &Path, text: &str) -> i64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite:{}", dir.join("ursa.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let n = if text.starts_with("SELECT") {
            sqlx::query_scalar(text).fetch_one(&pool).await.unwrap()
        } else {
            sqlx::query(text)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected() as i64
        };
        pool.close().await;
        n
    })
}

/// Kinds of the documents left in the store (after the cloud stopped).
fn document_kinds(dir: &Path) -> Vec<(String, i64)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite:{}", dir.join("ursa.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT kind, COUNT(*) FROM documents GROUP BY kind ORDER BY kind")
                .fetch_all(&pool)
                .await
                .unwrap();
        let table: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'net_ports'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let ports: i64 = if table == 0 {
            0
        } else {
            sqlx::query_scalar("SELECT COUNT(*) FROM net_ports")
                .fetch_one(&pool)
                .await
                .unwrap()
        };
        let mut rows = rows;
        rows.push(("net_ports rows".into(), ports));
        if table > 0 {
            let servers: Vec<(String, String)> =
                sqlx::query_as("SELECT name, status FROM cmp_servers ORDER BY name")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            for (name, status) in servers {
                rows.push((format!("server {name} {status}"), 1));
            }
            let volumes: Vec<(String, String)> =
                sqlx::query_as("SELECT kind, status FROM vol_records ORDER BY kind, id")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            for (kind, status) in volumes {
                rows.push((format!("{kind} row {status}"), 1));
            }
        }
        pool.close().await;
        rows
    })
}

fn names(v: &Value, coll: &str) -> Vec<String> {
    v[coll]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|x| x["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The admin project's default security group in the fixture.
const UPG_SG: &str = "580d4442-b52e-4a85-bb9b-2c8eb2f8feeb";

#[test]
fn ursa_up_moves_an_earlier_release_state_into_the_new_tables() {
    let dir = tempfile::tempdir().unwrap();
    unpack(dir.path());
    // A key pair as the releases before key pairs were rows kept it.
    sql(
        dir.path(),
        "INSERT INTO documents VALUES('keypair', '69920aeb050d47e68185ae7d80392e02/upg-key', '', \
         '69920aeb050d47e68185ae7d80392e02/upg-key', '{\"id\":\"69920aeb050d47e68185ae7d80392e02/upg-key\",\
         \"name\":\"upg-key\",\"user_id\":\"69920aeb050d47e68185ae7d80392e02\",\"type\":\"ssh\",\
         \"public_key\":\"ssh-ed25519 AAAA upg\",\"fingerprint\":\"00\",\"created_at\":\"2026-12-01T00:00:00Z\"}')",
    );
    let before = document_kinds(dir.path());
    assert!(before.contains(&("port".to_string(), 10)), "{before:?}");
    assert!(
        before.contains(&("security_group".to_string(), 1)),
        "{before:?}"
    );
    assert!(
        before.contains(&("security_group_rule".to_string(), 4)),
        "{before:?}"
    );

    for round in 0..2 {
        let cloud = Cloud::start(dir.path(), "upgrade-admin");
        // Users, projects, assignments and the token key are kept: the
        // token the old release issued still validates, and the member
        // logs in to its project.
        let old = std::fs::read_to_string(Path::new(FIXTURE).join("token")).unwrap();
        let old = old.trim();
        let admin = cloud.admin_token();
        let r = reqwest::blocking::Client::new()
            .get(format!("{}/auth/tokens", cloud.url))
            .header("X-Auth-Token", &admin)
            .header("X-Subject-Token", old)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "the old token validates");
        let member = cloud
            .token("upg-user", "upg-pass", Some("upg"))
            .expect("upg-user logs in to upg");
        let (st, _) = cloud.service_call("GET", "/network/v2.0/networks", &member, None);
        assert_eq!(st, 200, "the member's role on upg is kept");
        let (_, projects) = cloud.call("GET", "/projects?name=upg", &admin, None);
        assert_eq!(names(&projects, "projects"), ["upg"]);

        // Networks, subnets and every port, with their addresses and MACs.
        let (st, nets) =
            cloud.service_call("GET", "/network/v2.0/networks?name=upg-net", &admin, None);
        assert_eq!(st, 200);
        let net = nets["networks"][0]["id"]
            .as_str()
            .expect("upg-net kept")
            .to_string();
        let (_, subs) =
            cloud.service_call("GET", "/network/v2.0/subnets?name=upg-sub", &admin, None);
        let sub = subs["subnets"][0]["id"]
            .as_str()
            .expect("upg-sub kept")
            .to_string();
        let (_, all) = cloud.service_call("GET", "/network/v2.0/ports", &admin, None);
        let all = all["ports"].as_array().unwrap().clone();
        assert_eq!(all.len(), 10 + round, "every port is kept: {all:?}");
        let by_name = |n: &str| {
            all.iter()
                .find(|p| p["name"] == n)
                .cloned()
                .unwrap_or(Value::Null)
        };
        assert_eq!(by_name("upg-p1")["fixed_ips"][0]["ip_address"], "10.9.0.3");
        assert_eq!(by_name("upg-p2")["fixed_ips"][0]["ip_address"], "10.9.0.50");
        assert_eq!(by_name("upg-p3")["mac_address"], "fa:16:3e:00:00:42");
        let (_, mine) = cloud.service_call(
            "GET",
            &format!("/network/v2.0/ports?network_id={net}&fixed_ips=ip_address%3D10.9.0.50"),
            &admin,
            None,
        );
        assert_eq!(
            names(&mine, "ports"),
            ["upg-p2"],
            "filters reach the moved rows"
        );

        // The moved addresses and MACs are taken.
        let (st, _) = cloud.service_call(
            "POST",
            "/network/v2.0/ports",
            &admin,
            Some(json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.9.0.50"}]}})),
        );
        assert_eq!(st, 409, "10.9.0.50 is still upg-p2's");
        let (st, _) = cloud.service_call(
            "POST",
            "/network/v2.0/ports",
            &admin,
            Some(json!({"port": {"network_id": net, "mac_address": "fa:16:3e:00:00:42"}})),
        );
        assert_eq!(st, 409, "upg-p3's MAC is still taken");
        if round == 0 {
            let (st, p) = cloud.service_call(
                "POST",
                "/network/v2.0/ports",
                &admin,
                Some(json!({"port": {"network_id": net, "name": "after-upgrade"}})),
            );
            assert_eq!(st, 201, "{p}");
            let ip = p["port"]["fixed_ips"][0]["ip_address"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(p["port"]["fixed_ips"][0]["subnet_id"], sub.as_str());
            let taken: Vec<String> = all
                .iter()
                .flat_map(|q| q["fixed_ips"].as_array().unwrap().clone())
                .map(|f| f["ip_address"].as_str().unwrap().to_string())
                .collect();
            assert!(
                !taken.contains(&ip),
                "a new port gets a free address, not {ip}"
            );
        }

        // Routers (their gateway addresses come from the port rows),
        // floating IPs, volumes and images.
        let (_, routers) =
            cloud.service_call("GET", "/network/v2.0/routers?name=upg-r", &admin, None);
        let gw = &routers["routers"][0]["external_gateway_info"];
        assert!(
            gw["external_fixed_ips"][0]["ip_address"]
                .as_str()
                .is_some_and(|a| a.starts_with("172.24.4.")),
            "{routers}"
        );
        // The admin project's default security group, with its rules.
        let (_, sgs) = cloud.service_call(
            "GET",
            &format!("/network/v2.0/security-groups?id={UPG_SG}"),
            &admin,
            None,
        );
        assert_eq!(sgs["security_groups"][0]["name"], "default", "{sgs}");
        assert_eq!(
            sgs["security_groups"][0]["security_group_rules"]
                .as_array()
                .map(Vec::len),
            Some(4),
            "{sgs}"
        );
        let (_, fips) = cloud.service_call("GET", "/network/v2.0/floatingips", &admin, None);
        assert_eq!(fips["floatingips"][0]["floating_ip_address"], "172.24.4.4");
        let (_, vols) = cloud.service_call(
            "GET",
            "/volume/v3/volumes/detail?all_tenants=1",
            &admin,
            None,
        );
        assert!(
            names(&vols, "volumes").contains(&"upg-vol".to_string()),
            "{vols}"
        );
        let (_, imgs) = cloud.service_call("GET", "/image/v2/images?name=upg-img", &admin, None);
        assert_eq!(names(&imgs, "images"), ["upg-img"]);
        // (The compute API answers only with a compute node, which needs
        // netd; the server is read from its table below.)
        assert!(cloud.stop().success());

        // Ports are rows now, and only rows; everything else is as it was.
        let after = document_kinds(dir.path());
        assert!(!after.iter().any(|(k, _)| k == "port"), "{after:?}");
        assert!(!after.iter().any(|(k, _)| k == "keypair"), "{after:?}");
        assert!(!after.iter().any(|(k, _)| k == "image"), "{after:?}");
        assert!(
            !after.iter().any(|(k, _)| k.starts_with("security_group")),
            "{after:?}"
        );
        assert_eq!(
            sql(
                dir.path(),
                &format!("SELECT COUNT(*) FROM net_sg_rules WHERE security_group_id = '{UPG_SG}'")
            ),
            4,
            "the group's rules are rows"
        );
        assert!(!after.iter().any(|(k, _)| k == "floatingip"), "{after:?}");
        assert_eq!(
            sql(dir.path(), "SELECT COUNT(*) FROM net_floating_ips"),
            1,
            "the floating IP is a row"
        );
        for kind in ["router", "network", "subnet"] {
            assert!(!after.iter().any(|(k, _)| k == kind), "{after:?}");
        }
        let count = |kind: &str| {
            before
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(0, |(_, n)| *n)
        };
        assert_eq!(
            sql(dir.path(), "SELECT COUNT(*) FROM net_networks"),
            count("network"),
            "the networks are rows"
        );
        assert_eq!(
            sql(dir.path(), "SELECT COUNT(*) FROM net_subnets"),
            count("subnet"),
            "the subnets are rows"
        );
        assert_eq!(
            sql(dir.path(), "SELECT COUNT(*) FROM net_routers"),
            2,
            "the routers are rows"
        );
        assert_eq!(
            sql(dir.path(), "SELECT COUNT(*) FROM img_images"),
            1,
            "the image is a row"
        );
        assert_eq!(
            sql(
                dir.path(),
                "SELECT COUNT(*) FROM cmp_keypairs WHERE name = 'upg-key'"
            ),
            1,
            "the key pair is a row"
        );
        assert!(
            after.contains(&("net_ports rows".to_string(), 11)),
            "{after:?}"
        );
        assert!(
            after.iter().any(|(k, _)| k.starts_with("volume row ")),
            "{after:?}"
        );
        assert!(
            !after.iter().any(|(k, _)| k == "volume"),
            "volumes are rows: {after:?}"
        );
        for kind in ["user", "project", "assignment"] {
            let n = |v: &Vec<(String, i64)>| v.iter().find(|(k, _)| k == kind).map(|(_, n)| *n);
            assert!(n(&after) >= n(&before), "{kind}: {before:?} → {after:?}");
        }
    }
}
