//! The metadata API guests read at 169.254.169.254, served to netd's
//! metadata proxy (never to guests directly) on its own listener.
//!
//! The proxy names the guest with `X-Instance-ID` and proves it with
//! `X-Instance-ID-Signature`, the hex HMAC-SHA256 of the id under the
//! secret `ursa up` shares with netd (`<state>/metadata-secret`); a request
//! without a valid signature is refused. Served: OpenStack's
//! `/openstack/latest/{meta_data.json, user_data, network_data.json,
//! vendor_data.json}` and EC2's `/latest/meta-data/...` and
//! `/latest/user-data` (also under their dated versions).

use super::{st, Compute};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Clone)]
pub struct Metadata {
    pub compute: Compute,
    pub secret: Arc<Vec<u8>>,
}

pub fn router(m: Metadata) -> Router {
    Router::new()
        .route("/", get(|| async { "latest\n" }))
        .route(
            "/openstack",
            get(|| async { "2012-08-10\n2013-04-04\n2016-06-30\n2018-08-27\nlatest\n" }),
        )
        .route(
            "/openstack/{version}",
            get(|| async { "meta_data.json\nnetwork_data.json\nuser_data\nvendor_data.json\n" }),
        )
        .route("/openstack/{version}/{file}", get(openstack))
        .route("/{version}/meta-data", get(ec2_index))
        .route("/{version}/meta-data/", get(ec2_index))
        .route("/{version}/meta-data/{*key}", get(ec2_key))
        .route("/{version}/user-data", get(ec2_user_data))
        .with_state(m)
}

pub fn sign(secret: &[u8], instance_id: &str) -> String {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    m.update(instance_id.as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The server the proxy vouches for, or the refusal.
async fn caller(
    m: &Metadata,
    h: &HeaderMap,
) -> Result<serde_json::Map<String, Value>, (StatusCode, &'static str)> {
    let id = h
        .get("x-instance-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let sig = h
        .get("x-instance-id-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if id.is_empty() || sig.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "X-Instance-ID and its signature are required\n",
        ));
    }
    let want = sign(&m.secret, id);
    // Constant-time enough for hex of equal length: compare every byte.
    let same = want.len() == sig.len()
        && want
            .bytes()
            .zip(sig.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err((StatusCode::FORBIDDEN, "Invalid proxy request signature.\n"));
    }
    m.compute
        .server(id)
        .await
        .ok()
        .flatten()
        .ok_or((StatusCode::NOT_FOUND, "no such instance\n"))
}

pub(crate) fn hostname(s: &serde_json::Map<String, Value>) -> String {
    let h: String = st(s, "name")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    h.trim_matches('-').to_string()
}

fn user_data(s: &serde_json::Map<String, Value>) -> Option<Vec<u8>> {
    s.get("ursa:user_data")
        .and_then(|v| v.as_str())
        .and_then(|u| {
            base64::engine::general_purpose::STANDARD
                .decode(u.trim())
                .ok()
        })
}

async fn key(c: &Compute, s: &serde_json::Map<String, Value>) -> Option<(String, String)> {
    let name = s.get("key_name")?.as_str()?;
    let k = c.keypair(st(s, "user_id"), name).await.ok()??;
    Some((name.to_string(), st(&k, "public_key").to_string()))
}

async fn ports(c: &Compute, id: &str) -> Vec<serde_json::Map<String, Value>> {
    match ursa_network::api::device_ports(&c.networks, &[id.to_string()]).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(server = id, error = %e, "could not read the server's ports");
            Vec::new()
        }
    }
}

async fn openstack(
    State(m): State<Metadata>,
    h: HeaderMap,
    Path((_v, file)): Path<(String, String)>,
) -> Response {
    let s = match caller(&m, &h).await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let id = st(&s, "id").to_string();
    match file.as_str() {
        "meta_data.json" => axum::Json(meta_data(&m.compute, &s).await).into_response(),
        "user_data" => match user_data(&s) {
            Some(u) => u.into_response(),
            None => (StatusCode::NOT_FOUND, "no user data\n").into_response(),
        },
        "vendor_data.json" | "vendor_data2.json" => axum::Json(json!({})).into_response(),
        "network_data.json" => {
            axum::Json(network_data(&ports(&m.compute, &id).await)).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

async fn meta_data(c: &Compute, s: &serde_json::Map<String, Value>) -> Value {
    let (keys, public_keys) = match key(c, s).await {
        Some((n, k)) => (
            json!([{"name": n, "type": "ssh", "data": k}]),
            json!({ n: k }),
        ),
        None => (json!([]), json!({})),
    };
    json!({
        "uuid": s["id"], "name": s["name"], "hostname": crate::api::hostname(s), "availability_zone": "nova",
        "project_id": s["tenant_id"], "launch_index": 0, "keys": keys, "public_keys": public_keys,
        "meta": s.get("metadata").cloned().unwrap_or(json!({})), "devices": [],
    })
}

fn network_data(ps: &[serde_json::Map<String, Value>]) -> Value {
    let links: Vec<Value> = ps
        .iter()
        .map(|p| {
            json!({"id": ursa_proto::netd::tap_device(st(p, "id")), "vif_id": p["id"],
                        "type": "phy", "ethernet_mac_address": p["mac_address"], "mtu": 1450})
        })
        .collect();
    let nets: Vec<Value> = ps
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"id": format!("network{i}"), "type": "ipv4_dhcp",
                             "link": ursa_proto::netd::tap_device(st(p, "id")), "network_id": p["network_id"]}))
        .collect();
    json!({"links": links, "networks": nets, "services": []})
}

/// A server's config drive: the same documents the metadata API serves,
/// under `openstack/latest/` and `openstack/2012-08-10/`.
pub async fn config_drive_files(
    c: &Compute,
    s: &serde_json::Map<String, Value>,
) -> Vec<(String, Vec<u8>)> {
    let id = st(s, "id");
    let ps = ports(c, id).await;
    let mut docs = vec![
        (
            "meta_data.json",
            meta_data(c, s).await.to_string().into_bytes(),
        ),
        (
            "network_data.json",
            network_data(&ps).to_string().into_bytes(),
        ),
        ("vendor_data.json", b"{}".to_vec()),
    ];
    if let Some(u) = user_data(s) {
        docs.push(("user_data", u));
    }
    let mut out = Vec::new();
    for v in ["latest", "2012-08-10"] {
        for (name, data) in &docs {
            out.push((format!("openstack/{v}/{name}"), data.clone()));
        }
    }
    out
}

async fn ec2_values(m: &Metadata, s: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    let id = st(s, "id");
    let ip = ports(&m.compute, id)
        .await
        .iter()
        .flat_map(ursa_network::fixed_ips)
        .map(|(_, ip)| ip)
        .find(|ip| !ip.contains(':'))
        .unwrap_or_default();
    let mut v = vec![
        (
            "ami-id".into(),
            format!(
                "ami-{}",
                &st(s, "ursa:image_id").chars().take(8).collect::<String>()
            ),
        ),
        ("hostname".into(), crate::api::hostname(s)),
        (
            "instance-id".into(),
            format!("i-{}", &id.chars().take(8).collect::<String>()),
        ),
        ("instance-type".into(), st(s, "ursa:flavor_id").to_string()),
        ("local-hostname".into(), crate::api::hostname(s)),
        ("local-ipv4".into(), ip),
        ("placement/availability-zone".into(), "nova".into()),
    ];
    if let Some((n, k)) = key(&m.compute, s).await {
        v.push(("public-keys/0/openssh-key".into(), k));
        v.push(("public-keys".into(), format!("0={n}")));
    }
    v
}

async fn ec2_index(State(m): State<Metadata>, h: HeaderMap) -> Response {
    let s = match caller(&m, &h).await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let mut keys: Vec<String> = ec2_values(&m, &s)
        .await
        .into_iter()
        .map(|(k, _)| match k.split_once('/') {
            Some((d, _)) => format!("{d}/"),
            None => k,
        })
        .collect();
    keys.dedup();
    (keys.join("\n") + "\n").into_response()
}

async fn ec2_key(
    State(m): State<Metadata>,
    h: HeaderMap,
    Path((_v, key)): Path<(String, String)>,
) -> Response {
    let s = match caller(&m, &h).await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let key = key.trim_end_matches('/');
    match ec2_values(&m, &s).await.into_iter().find(|(k, _)| k == key) {
        Some((_, v)) => v.into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

async fn ec2_user_data(State(m): State<Metadata>, h: HeaderMap) -> Response {
    let s = match caller(&m, &h).await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match user_data(&s) {
        Some(u) => u.into_response(),
        None => (StatusCode::NOT_FOUND, "no user data\n").into_response(),
    }
}
