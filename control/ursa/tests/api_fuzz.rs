//! Property tests over the request parsers, through the whole in-process
//! HTTP stack: whatever bytes, JSON or paths arrive, the answer is never a
//! 5xx and every error is Keystone-shaped with the status it carries.

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use serde_json::Value;
use std::sync::OnceLock;
use tower::ServiceExt;
use ursa::app::{router, Services};
use ursa_core::store::Store;
use ursa_identity::bootstrap::Bootstrap;
use ursa_identity::password::Cost;
use ursa_identity::token::{KeyRepo, TokenCodec};
use ursa_identity::{Identity, Settings};

struct Fixture {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    token: String,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (app, token) = rt.block_on(async {
            let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
            ursa_network::prepare_store(&store).await.unwrap();
            ursa_compute::server_table::prepare_store(&store).await.unwrap();
            ursa_volume::record_table::prepare_store(&store).await.unwrap();
            ursa_image::image_table::prepare_store(&store).await.unwrap();
            let codec = TokenCodec::open(KeyRepo::new(dir.path().join("keys"))).unwrap();
            let settings = Settings { password_cost: Cost { memory_kib: 1024, iterations: 1 }, ..Default::default() };
            let objects = ursa_object::Objects::open(store.clone(), ursa_object::blob::Blobs::open(&dir.path().join("objects")).unwrap()).await.unwrap();
            ursa_dashboard::Dashboard::migrate(&store).await.unwrap();
            let id = Identity::open(store.clone(), codec, settings).await.unwrap();
            Bootstrap { admin_user: "admin", admin_project: "admin", admin_password: "pw", identity_url: "http://x/v3", base_url: "http://x", services: &[] }
                .run(&id)
                .await
                .unwrap();
            let images = ursa_image::Images::new(id.clone(), &dir.path().join("images")).unwrap();
            let networks = ursa_network::Networks::new(id.clone(), Default::default(), ursa_network::push::Pusher::new(Vec::new()));
            let app = router(Services { store, identity: id, images, objects, volumes: None, networks, compute: None, base_url: "http://x".into() }).unwrap();
            let body = r#"{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"pw"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}"#;
            let resp = app
                .clone()
                .oneshot(Request::post("/v3/auth/tokens").body(Body::from(body)).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), 201);
            let token = resp.headers()["x-subject-token"].to_str().unwrap().to_string();
            (app, token)
        });
        Fixture { rt, app, token, _dir: dir }
    })
}

/// Sends one request and checks the invariants.
fn check(method: &str, path: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
    let f = fixture();
    let Ok(req) = Request::builder()
        .method(method)
        .uri(path)
        .header("x-auth-token", &f.token)
        .header("content-type", "application/json")
        .body(Body::from(body))
    else {
        return Ok(()); // not a request a client could send
    };
    let (status, bytes) = f.rt.block_on(async {
        let resp = f.app.clone().oneshot(req).await.unwrap();
        let st = resp.status();
        (
            st,
            axum::body::to_bytes(resp.into_body(), 4 << 20)
                .await
                .unwrap(),
        )
    });
    prop_assert!(
        !status.is_server_error(),
        "{method} {path} -> {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if status.is_client_error() && method != "HEAD" {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("{method} {path} {status}: not JSON: {e}")))?;
        prop_assert_eq!(
            v["error"]["code"].as_u64(),
            Some(status.as_u16() as u64),
            "{}",
            v
        );
        prop_assert!(v["error"]["message"].is_string());
    }
    Ok(())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|n| serde_json::json!(n)),
        ".{0,80}".prop_map(Value::String),
        prop_oneof![
            Just("default"),
            Just("admin"),
            Just("password"),
            Just("token"),
            Just("name"),
            Just("id")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("auth".to_string()),
                    Just("identity".to_string()),
                    Just("methods".to_string()),
                    Just("password".to_string()),
                    Just("user".to_string()),
                    Just("scope".to_string()),
                    Just("project".to_string()),
                    Just("domain".to_string()),
                    Just("name".to_string()),
                    Just("id".to_string()),
                    Just("enabled".to_string()),
                    Just("tags".to_string()),
                    Just("config".to_string()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const WRITES: &[(&str, &str, &str)] = &[
    ("POST", "/v3/auth/tokens", "auth"),
    ("POST", "/v3/projects", "project"),
    ("POST", "/v3/domains", "domain"),
    ("POST", "/v3/users", "user"),
    ("POST", "/v3/groups", "group"),
    ("POST", "/v3/roles", "role"),
    ("POST", "/v3/regions", "region"),
    ("POST", "/v3/services", "service"),
    ("POST", "/v3/endpoints", "endpoint"),
    ("POST", "/v3/credentials", "credential"),
    ("POST", "/v3/policies", "policy"),
    ("POST", "/v3/OS-EP-FILTER/endpoint_groups", "endpoint_group"),
    ("PATCH", "/v3/domains/default", "domain"),
    ("PUT", "/v3/domains/default/config", "config"),
    ("PUT", "/v3/projects/x/tags", "tags"),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_break_a_parser(i in 0..WRITES.len(), body in prop::collection::vec(any::<u8>(), 0..512)) {
        let (m, p, _) = WRITES[i];
        check(m, p, body)?;
    }

    #[test]
    fn arbitrary_json_never_breaks_a_handler(i in 0..WRITES.len(), v in json_value(), wrap in any::<bool>()) {
        let (m, p, key) = WRITES[i];
        let body = if wrap { serde_json::json!({ key: v }) } else { v };
        check(m, p, serde_json::to_vec(&body).unwrap())?;
    }

    #[test]
    fn arbitrary_paths_and_queries_never_break_routing(
        m in prop_oneof![Just("GET"), Just("HEAD"), Just("DELETE"), Just("PUT"), Just("PATCH")],
        a in prop_oneof![
            prop::sample::select(vec!["projects", "users", "domains", "roles", "groups", "role_assignments", "OS-INHERIT", "system"])
                .prop_map(String::from),
            "[a-zA-Z0-9%._~-]{0,20}",
        ],
        b in "[a-zA-Z0-9%._~'-]{0,40}",
        c in prop_oneof![
            prop::sample::select(vec!["", "/users/x/roles/y", "/tags/t", "/config/ldap/url"]).prop_map(String::from),
            "/[a-z%0-9]{0,10}",
        ],
        q in "[a-zA-Z0-9.=&%_:-]{0,40}",
    ) {
        check(m, &format!("/v3/{a}/{b}{c}?{q}"), Vec::new())?;
    }
}
