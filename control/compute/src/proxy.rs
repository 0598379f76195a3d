//! Nova's proxy APIs: security groups, floating IPs, images, volumes,
//! snapshots and networks as the compute API has shown them since
//! nova-network days. Each goes, as the caller, through the network,
//! image or volume API ([`ursa_core::http::internal`]), the way Nova calls
//! Neutron, Glance and Cinder, and reshapes the answer. From 2.36 they are
//! gone (404), as in Nova.

use super::api::{body_obj, find_server, last, query, svc};
use super::st;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{empty, internal, Auth, Token};

/// The proxies, which Nova removed at 2.36 (a request at 2.36 or later
/// gets 404, as if the route were not there); a server's own security
/// groups stay.
pub fn routes() -> Router<AppState> {
    proxies()
        .route_layer(axum::middleware::from_fn(gone_at_2_36))
        .route("/servers/{id}/os-security-groups", get(server_groups))
}

async fn gone_at_2_36(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::response::IntoResponse;
    let mv = req
        .extensions()
        .get::<super::api::Mv>()
        .copied()
        .unwrap_or_default();
    if mv.at(36) {
        return Error::NotFound("The resource could not be found.".into()).into_response();
    }
    next.run(req).await
}

fn proxies() -> Router<AppState> {
    Router::new()
        .route("/os-security-groups", get(list_groups).post(create_group))
        .route(
            "/os-security-groups/{id}",
            get(show_group).put(update_group).delete(delete_group),
        )
        .route("/os-security-group-rules", axum::routing::post(create_rule))
        .route(
            "/os-security-group-rules/{id}",
            axum::routing::delete(delete_rule),
        )
        .route("/os-floating-ips", get(list_fips).post(create_fip))
        .route("/os-floating-ips/{id}", get(show_fip).delete(delete_fip))
        .route("/os-floating-ip-pools", get(fip_pools))
        .route("/images", get(list_images))
        .route("/images/detail", get(list_images_detail))
        .route("/images/{id}", get(show_image).delete(delete_image))
        .route(
            "/images/{id}/metadata",
            get(image_meta)
                .put(replace_image_meta)
                .post(update_image_meta),
        )
        .route(
            "/images/{id}/metadata/{key}",
            get(image_meta_item)
                .put(set_image_meta_item)
                .delete(delete_image_meta_item),
        )
        .route("/os-volumes", get(list_volumes).post(create_volume))
        .route("/os-volumes/detail", get(list_volumes))
        .route("/os-volumes/{id}", get(show_volume).delete(delete_volume))
        .route("/os-snapshots", get(list_snapshots).post(create_snapshot))
        .route("/os-snapshots/detail", get(list_snapshots))
        .route(
            "/os-snapshots/{id}",
            get(show_snapshot).delete(delete_snapshot),
        )
        .route("/os-networks", get(list_networks))
        .route("/os-networks/{id}", get(show_network))
        .route("/os-tenant-networks", get(list_networks))
        .route("/os-tenant-networks/{id}", get(show_network))
}

/// A call to another service; its error becomes ours with the same status.
async fn call(
    app: &AppState,
    method: Method,
    path: &str,
    tok: &str,
    body: Option<Value>,
) -> Result<Value> {
    let (status, v) = internal(&app.inproc, method, path, tok, body).await;
    if status.is_success() {
        return Ok(v);
    }
    let msg = v["error"]["message"]
        .as_str()
        .or_else(|| v["NeutronError"]["message"].as_str())
        .unwrap_or("The request failed.")
        .to_string();
    Err(match status.as_u16() {
        400 => Error::BadRequest(msg),
        401 => Error::Unauthorized(msg),
        403 => Error::Forbidden(msg),
        404 => Error::NotFound(msg),
        409 => Error::Conflict(msg),
        413 => Error::Forbidden(format!("Quota exceeded: {msg}")),
        503 => Error::ServiceUnavailable(msg),
        _ => Error::Internal(msg),
    })
}

fn qs(raw: &Option<String>) -> String {
    raw.as_deref()
        .filter(|q| !q.is_empty())
        .map(|q| format!("?{q}"))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------
// Security groups and rules.

fn rule_view(r: &Value) -> Value {
    let proto = r["protocol"].as_str().map(|p| p.to_string());
    let (from, to) = match proto.as_deref() {
        Some("icmp") => (
            r["port_range_min"].as_i64().unwrap_or(-1),
            r["port_range_max"].as_i64().unwrap_or(-1),
        ),
        _ => (
            r["port_range_min"].as_i64().unwrap_or(1),
            r["port_range_max"].as_i64().unwrap_or(65535),
        ),
    };
    let group = if r["remote_group_id"].is_string() {
        json!({"name": r["remote_group_id"], "tenant_id": r["tenant_id"]})
    } else {
        json!({})
    };
    let range = match r["remote_ip_prefix"].as_str() {
        Some(c) => json!({ "cidr": c }),
        None if r["remote_group_id"].is_string() => json!({}),
        None => json!({"cidr": "0.0.0.0/0"}),
    };
    json!({"id": r["id"], "parent_group_id": r["security_group_id"], "ip_protocol": proto,
           "from_port": if proto.is_some() { json!(from) } else { Value::Null },
           "to_port": if proto.is_some() { json!(to) } else { Value::Null },
           "ip_range": range, "group": group})
}

fn group_view(g: &Value) -> Value {
    group_view_named(g, &std::collections::HashMap::new())
}

/// A group with its rules, remote groups shown by name.
fn group_view_named(g: &Value, names: &std::collections::HashMap<String, Value>) -> Value {
    let rules: Vec<Value> = g["security_group_rules"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["direction"] == "ingress")
                .map(|r| {
                    let mut v = rule_view(r);
                    if let Some(n) = r["remote_group_id"].as_str().and_then(|g| names.get(g)) {
                        v["group"]["name"] = n.clone();
                    }
                    v
                })
                .collect()
        })
        .unwrap_or_default();
    json!({"id": g["id"], "name": g["name"], "description": g["description"],
           "tenant_id": g["tenant_id"], "rules": rules})
}

async fn list_groups(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let all = query(&raw)
        .iter()
        .any(|(k, v)| k == "all_tenants" && !matches!(v.to_lowercase().as_str(), "0" | "false"));
    let v = call(
        &app,
        Method::GET,
        "/network/v2.0/security-groups",
        &tok,
        None,
    )
    .await?;
    let mut groups: Vec<Value> = v["security_groups"].as_array().cloned().unwrap_or_default();
    if !all {
        if let Some(p) = _auth.0.project_id() {
            groups.retain(|g| g["tenant_id"] == p);
        }
    }
    let names: std::collections::HashMap<String, Value> = v["security_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| Some((g["id"].as_str()?.to_string(), g["name"].clone())))
        .collect();
    Ok(Json(
        json!({"security_groups": groups.iter().map(|g| group_view_named(g, &names)).collect::<Vec<_>>()}),
    ))
}

fn group_body(bytes: &Bytes) -> Result<Map<String, Value>> {
    let b = body_obj(bytes, "security_group")?;
    let mut out = Map::new();
    for k in ["name", "description"] {
        match b.get(k) {
            Some(Value::String(v)) if v.len() <= 255 && !(k == "name" && v.trim().is_empty()) => {
                out.insert(k.into(), json!(v));
            }
            None if k == "description" => {}
            _ => {
                return Err(Error::BadRequest(format!(
                    "Invalid input for field/attribute {k}."
                )))
            }
        }
    }
    Ok(out)
}

async fn create_group(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let b = group_body(&bytes)?;
    let v = call(
        &app,
        Method::POST,
        "/network/v2.0/security-groups",
        &tok,
        Some(json!({ "security_group": b })),
    )
    .await?;
    Ok(Json(
        json!({"security_group": group_view(&v["security_group"])}),
    ))
}

fn uuid_or_404(id: &str, what: &str) -> Result<()> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| Error::NotFound(format!("{what} {id} could not be found.")))
}

async fn show_group(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let id = last(&p);
    uuid_or_404(&id, "Security group")?;
    let v = call(
        &app,
        Method::GET,
        &format!("/network/v2.0/security-groups/{id}"),
        &tok,
        None,
    )
    .await?;
    Ok(Json(
        json!({"security_group": group_view(&v["security_group"])}),
    ))
}

async fn update_group(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let id = last(&p);
    uuid_or_404(&id, "Security group")?;
    let b = group_body(&bytes)?;
    let v = call(
        &app,
        Method::PUT,
        &format!("/network/v2.0/security-groups/{id}"),
        &tok,
        Some(json!({ "security_group": b })),
    )
    .await?;
    Ok(Json(
        json!({"security_group": group_view(&v["security_group"])}),
    ))
}

async fn delete_group(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    let id = last(&p);
    uuid_or_404(&id, "Security group")?;
    let v = call(
        &app,
        Method::GET,
        &format!("/network/v2.0/security-groups/{id}"),
        &tok,
        None,
    )
    .await?;
    if v["security_group"]["name"] == "default" {
        return Err(Error::BadRequest(
            "Removing the default security group is not allowed.".into(),
        ));
    }
    call(
        &app,
        Method::DELETE,
        &format!("/network/v2.0/security-groups/{id}"),
        &tok,
        None,
    )
    .await
    .map_err(|e| match e {
        Error::Conflict(m) => Error::BadRequest(m),
        other => other,
    })?;
    Ok(empty(StatusCode::ACCEPTED))
}

fn port_num(v: Option<&Value>, what: &str) -> Result<Option<i64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| Error::BadRequest(format!("Invalid {what}."))),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| Error::BadRequest(format!("Invalid {what}: {s} is not a number."))),
        Some(_) => Err(Error::BadRequest(format!("Invalid {what}."))),
    }
}

async fn create_rule(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let b = body_obj(&bytes, "security_group_rule")?;
    let parent = match b.get("parent_group_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(Error::BadRequest("Invalid parent_group_id.".into())),
    };
    if uuid::Uuid::parse_str(&parent).is_err() {
        return Err(Error::BadRequest(format!(
            "Invalid parent_group_id: {parent} is not a security group id."
        )));
    }
    let proto = b
        .get("ip_protocol")
        .and_then(|v| v.as_str())
        .map(|p| p.to_lowercase());
    let from = port_num(b.get("from_port"), "from_port")?;
    let to = port_num(b.get("to_port"), "to_port")?;
    let mut rule =
        json!({"security_group_id": parent, "direction": "ingress", "ethertype": "IPv4"});
    match proto.as_deref() {
        Some("tcp") | Some("udp") => {
            let (f, t) = (from.unwrap_or(1), to.unwrap_or(65535));
            if !(1..=65535).contains(&f) || !(1..=65535).contains(&t) || f > t {
                return Err(Error::BadRequest(format!(
                    "Invalid port range {f}:{t}. Valid TCP ports should be between 1-65535"
                )));
            }
            rule["protocol"] = json!(proto);
            rule["port_range_min"] = json!(f);
            rule["port_range_max"] = json!(t);
        }
        Some("icmp") => {
            let (f, t) = (from.unwrap_or(-1), to.unwrap_or(-1));
            if !(-1..=255).contains(&f) || !(-1..=255).contains(&t) {
                return Err(Error::BadRequest(format!(
                    "Invalid ICMP type/code {f}:{t}."
                )));
            }
            rule["protocol"] = json!("icmp");
            if f != -1 {
                rule["port_range_min"] = json!(f);
            }
            if t != -1 {
                rule["port_range_max"] = json!(t);
            }
        }
        Some(other) => return Err(Error::BadRequest(format!("Invalid IP protocol {other}."))),
        None => {}
    }
    if let Some(g) = b.get("group_id").and_then(|v| v.as_str()) {
        rule["remote_group_id"] = json!(g);
    } else {
        let cidr = b
            .get("cidr")
            .and_then(|v| v.as_str())
            .unwrap_or("0.0.0.0/0");
        if cidr.parse::<ipnet::IpNet>().is_err() {
            return Err(Error::BadRequest(format!("Invalid cidr {cidr}.")));
        }
        rule["remote_ip_prefix"] = json!(cidr);
    }
    let v = call(
        &app,
        Method::POST,
        "/network/v2.0/security-group-rules",
        &tok,
        Some(json!({ "security_group_rule": rule })),
    )
    .await
    .map_err(|e| match e {
        Error::Conflict(m) => Error::BadRequest(m),
        other => other,
    })?;
    let mut rule = rule_view(&v["security_group_rule"]);
    if let Some(g) = v["security_group_rule"]["remote_group_id"].as_str() {
        if let Ok(gv) = call(
            &app,
            Method::GET,
            &format!("/network/v2.0/security-groups/{g}"),
            &tok,
            None,
        )
        .await
        {
            rule["group"]["name"] = gv["security_group"]["name"].clone();
        }
    }
    Ok(Json(json!({ "security_group_rule": rule })))
}

async fn delete_rule(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    let id = last(&p);
    uuid_or_404(&id, "Security group rule")?;
    call(
        &app,
        Method::DELETE,
        &format!("/network/v2.0/security-group-rules/{id}"),
        &tok,
        None,
    )
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

async fn server_groups(
    State(app): State<AppState>,
    auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let id = last(&p);
    find_server(s, &auth, &id).await?;
    let v = call(
        &app,
        Method::GET,
        &format!("/network/v2.0/ports?device_id={id}"),
        &tok,
        None,
    )
    .await?;
    let mut ids: Vec<String> = Vec::new();
    for port in v["ports"].as_array().into_iter().flatten() {
        for g in port["security_groups"].as_array().into_iter().flatten() {
            if let Some(g) = g.as_str() {
                if !ids.iter().any(|x| x == g) {
                    ids.push(g.to_string());
                }
            }
        }
    }
    let mut out = Vec::new();
    for g in ids {
        let v = call(
            &app,
            Method::GET,
            &format!("/network/v2.0/security-groups/{g}"),
            &tok,
            None,
        )
        .await?;
        out.push(group_view(&v["security_group"]));
    }
    Ok(Json(json!({ "security_groups": out })))
}

// ---------------------------------------------------------------------
// Floating IPs.

async fn fip_view(app: &AppState, tok: &str, f: &Value) -> Value {
    let mut instance = Value::Null;
    if let Some(port) = f["port_id"].as_str() {
        if let Ok(p) = call(
            app,
            Method::GET,
            &format!("/network/v2.0/ports/{port}"),
            tok,
            None,
        )
        .await
        {
            if p["port"]["device_owner"]
                .as_str()
                .is_some_and(|o| o.starts_with("compute:"))
            {
                instance = p["port"]["device_id"].clone();
            }
        }
    }
    let pool = match f["floating_network_id"].as_str() {
        Some(n) => call(
            app,
            Method::GET,
            &format!("/network/v2.0/networks/{n}"),
            tok,
            None,
        )
        .await
        .map(|v| v["network"]["name"].clone())
        .unwrap_or(Value::Null),
        None => Value::Null,
    };
    json!({"id": f["id"], "ip": f["floating_ip_address"], "fixed_ip": f["fixed_ip_address"],
           "instance_id": instance, "pool": pool})
}

async fn list_fips(
    State(app): State<AppState>,
    auth: Auth,
    Token(tok): Token,
) -> Result<Json<Value>> {
    let v = call(&app, Method::GET, "/network/v2.0/floatingips", &tok, None).await?;
    let mut out = Vec::new();
    for f in v["floatingips"].as_array().into_iter().flatten() {
        if auth.0.project_id().is_some_and(|p| f["tenant_id"] != p) {
            continue;
        }
        out.push(fip_view(&app, &tok, f).await);
    }
    Ok(Json(json!({ "floating_ips": out })))
}

async fn external_networks(app: &AppState, tok: &str) -> Result<Vec<Value>> {
    let v = call(
        app,
        Method::GET,
        "/network/v2.0/networks?router:external=True",
        tok,
        None,
    )
    .await?;
    Ok(v["networks"].as_array().cloned().unwrap_or_default())
}

async fn create_fip(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let pool = if bytes.is_empty() {
        None
    } else {
        let v: Value = ursa_core::http::parse_body(&bytes)?;
        v.get("pool").and_then(|p| p.as_str()).map(str::to_string)
    };
    let nets = external_networks(&app, &tok).await?;
    let net = match &pool {
        Some(p) => nets
            .iter()
            .find(|n| n["name"] == p.as_str() || n["id"] == p.as_str())
            .ok_or_else(|| Error::NotFound(format!("Floating IP pool not found: {p}")))?,
        None => nets
            .first()
            .ok_or_else(|| Error::NotFound("No floating IP pool is configured.".into()))?,
    };
    let v = call(
        &app,
        Method::POST,
        "/network/v2.0/floatingips",
        &tok,
        Some(json!({"floatingip": {"floating_network_id": net["id"]}})),
    )
    .await?;
    Ok(Json(
        json!({"floating_ip": fip_view(&app, &tok, &v["floatingip"]).await}),
    ))
}

async fn show_fip(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let id = last(&p);
    uuid_or_404(&id, "Floating IP")?;
    let v = call(
        &app,
        Method::GET,
        &format!("/network/v2.0/floatingips/{id}"),
        &tok,
        None,
    )
    .await?;
    Ok(Json(
        json!({"floating_ip": fip_view(&app, &tok, &v["floatingip"]).await}),
    ))
}

async fn delete_fip(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    let id = last(&p);
    uuid_or_404(&id, "Floating IP")?;
    call(
        &app,
        Method::DELETE,
        &format!("/network/v2.0/floatingips/{id}"),
        &tok,
        None,
    )
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

async fn fip_pools(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
) -> Result<Json<Value>> {
    let nets = external_networks(&app, &tok).await?;
    Ok(Json(
        json!({"floating_ip_pools": nets.iter().map(|n| json!({"name": n["name"]})).collect::<Vec<_>>()}),
    ))
}

/// `addFloatingIp` / `removeFloatingIp` on a server.
pub async fn floating_ip_action(
    app: &AppState,
    tok: &str,
    server: &str,
    add: bool,
    args: &Value,
) -> Result<()> {
    let address = args
        .get("address")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute address.".into()))?;
    let v = call(
        app,
        Method::GET,
        &format!("/network/v2.0/floatingips?floating_ip_address={address}"),
        tok,
        None,
    )
    .await?;
    let f = v["floatingips"]
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("floating IP not found for address {address}")))?;
    let fid = st(f.as_object().unwrap_or(&Map::new()), "id").to_string();
    if !add {
        let ports = call(
            app,
            Method::GET,
            &format!("/network/v2.0/ports?device_id={server}"),
            tok,
            None,
        )
        .await?;
        let mine = ports["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["id"] == f["port_id"]);
        if !mine {
            return Err(Error::Conflict(format!(
                "Floating IP {address} is not associated with instance {server}."
            )));
        }
        call(
            app,
            Method::PUT,
            &format!("/network/v2.0/floatingips/{fid}"),
            tok,
            Some(json!({"floatingip": {"port_id": null}})),
        )
        .await?;
        return Ok(());
    }
    let ports = call(
        app,
        Method::GET,
        &format!("/network/v2.0/ports?device_id={server}"),
        tok,
        None,
    )
    .await?;
    let fixed = args.get("fixed_address").and_then(|v| v.as_str());
    let port = ports["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            fixed.is_none_or(|ip| {
                p["fixed_ips"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x["ip_address"] == ip)
            })
        })
        .cloned()
        .ok_or_else(|| Error::BadRequest("The server has no port for this address.".into()))?;
    let mut body = json!({"floatingip": {"port_id": port["id"]}});
    if let Some(ip) = fixed {
        body["floatingip"]["fixed_ip_address"] = json!(ip);
    }
    call(
        app,
        Method::PUT,
        &format!("/network/v2.0/floatingips/{fid}"),
        tok,
        Some(body),
    )
    .await
    .map_err(|e| match e {
        Error::Conflict(m) => Error::BadRequest(m),
        other => other,
    })?;
    Ok(())
}

/// `addSecurityGroup` / `removeSecurityGroup` on a server: the group is
/// added to (or taken from) each of its ports.
pub async fn security_group_action(
    app: &AppState,
    tok: &str,
    server: &str,
    add: bool,
    args: &Value,
) -> Result<()> {
    let name = args
        .get("name")
        .and_then(|v| v.as_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute name.".into()))?;
    let groups = call(app, Method::GET, "/network/v2.0/security-groups", tok, None).await?;
    let g = groups["security_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"] == name || g["id"] == name)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("Security group {name} not found.")))?;
    let ports = call(
        app,
        Method::GET,
        &format!("/network/v2.0/ports?device_id={server}"),
        tok,
        None,
    )
    .await?;
    let mut found = false;
    for p in ports["ports"].as_array().into_iter().flatten() {
        let mut now: Vec<Value> = p["security_groups"].as_array().cloned().unwrap_or_default();
        let has = now.contains(&g["id"]);
        found |= has;
        if add == has {
            continue;
        }
        if add {
            now.push(g["id"].clone());
        } else {
            now.retain(|x| x != &g["id"]);
        }
        call(
            app,
            Method::PUT,
            &format!("/network/v2.0/ports/{}", p["id"].as_str().unwrap_or("")),
            tok,
            Some(json!({"port": {"security_groups": now}})),
        )
        .await?;
    }
    if !add && !found {
        return Err(Error::BadRequest(format!(
            "Security group {name} not associated with the instance {server}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Images.

fn image_view(app: &AppState, i: &Value, detail: bool) -> Value {
    let id = i["id"].as_str().unwrap_or("");
    let links = json!([
        {"rel": "self", "href": format!("{}/compute/v2.1/images/{id}", app.base_url)},
        {"rel": "bookmark", "href": format!("{}/compute/images/{id}", app.base_url)},
        {"rel": "alternate", "type": "application/vnd.openstack.image",
         "href": format!("{}/image/v2/images/{id}", app.base_url)}
    ]);
    if !detail {
        return json!({"id": id, "name": i["name"], "links": links});
    }
    let status = match i["status"].as_str().unwrap_or("") {
        "active" => "ACTIVE",
        "queued" | "saving" | "importing" | "uploading" => "SAVING",
        "deleted" | "pending_delete" => "DELETED",
        "killed" => "ERROR",
        _ => "UNKNOWN",
    };
    let mut v = json!({"id": id, "name": i["name"], "status": status,
        "progress": if status == "ACTIVE" { 100 } else { 25 },
        "minDisk": i["min_disk"].as_u64().unwrap_or(0), "minRam": i["min_ram"].as_u64().unwrap_or(0),
        "created": i["created_at"], "updated": i["updated_at"], "links": links,
        "metadata": image_meta_of(i), "OS-EXT-IMG-SIZE:size": i["size"]});
    if let Some(srv) = i["instance_uuid"].as_str() {
        v["server"] = json!({"id": srv, "links": [
            {"rel": "self", "href": format!("{}/compute/v2.1/servers/{srv}", app.base_url)},
            {"rel": "bookmark", "href": format!("{}/compute/servers/{srv}", app.base_url)}]});
    }
    v
}

/// Glance's own attributes; everything else is an image's metadata.
const GLANCE_CORE: &[&str] = &[
    "id",
    "name",
    "status",
    "visibility",
    "protected",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "owner",
    "size",
    "virtual_size",
    "min_ram",
    "min_disk",
    "created_at",
    "updated_at",
    "tags",
    "self",
    "file",
    "schema",
    "disk_format",
    "container_format",
    "direct_url",
    "locations",
    "os_hidden",
    "stores",
];

fn image_meta_of(i: &Value) -> Value {
    let mut m = Map::new();
    if let Some(o) = i.as_object() {
        for (k, v) in o {
            if !GLANCE_CORE.contains(&k.as_str()) && !v.is_null() {
                m.insert(
                    k.clone(),
                    match v {
                        Value::String(_) => v.clone(),
                        other => json!(other.to_string()),
                    },
                );
            }
        }
    }
    Value::Object(m)
}

async fn images_any(
    app: &AppState,
    tok: &str,
    raw: &Option<String>,
    detail: bool,
) -> Result<Value> {
    let q = query(raw);
    let mut glance = Vec::new();
    for (k, v) in &q {
        match k.as_str() {
            "limit" | "marker" | "name" => glance.push(format!(
                "{k}={}",
                form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            )),
            "status" => glance.push(format!("status={}", v.to_lowercase())),
            _ => {}
        }
    }
    let path = if glance.is_empty() {
        "/image/v2/images".to_string()
    } else {
        format!("/image/v2/images?{}", glance.join("&"))
    };
    let v = call(app, Method::GET, &path, tok, None).await?;
    let mut imgs: Vec<Value> = v["images"].as_array().cloned().unwrap_or_default();
    for (k, val) in &q {
        match k.as_str() {
            "server" => imgs.retain(|i| {
                i["instance_uuid"] == val.as_str()
                    || val.ends_with(i["instance_uuid"].as_str().unwrap_or("\u{0}"))
            }),
            "type" => imgs.retain(|i| {
                let snap = i["image_type"] == "snapshot";
                (val == "snapshot") == snap
            }),
            "minDisk" => {
                imgs.retain(|i| i["min_disk"].as_u64().unwrap_or(0) >= val.parse().unwrap_or(0))
            }
            "minRam" => {
                imgs.retain(|i| i["min_ram"].as_u64().unwrap_or(0) >= val.parse().unwrap_or(0))
            }
            "changes-since" => {
                imgs.retain(|i| i["updated_at"].as_str().unwrap_or("") >= val.as_str())
            }
            _ => {}
        }
    }
    Ok(json!({"images": imgs.iter().map(|i| image_view(app, i, detail)).collect::<Vec<_>>()}))
}

async fn list_images(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    Ok(Json(images_any(&app, &tok, &raw, false).await?))
}

async fn list_images_detail(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    Ok(Json(images_any(&app, &tok, &raw, true).await?))
}

async fn get_image(app: &AppState, tok: &str, id: &str) -> Result<Value> {
    uuid_or_404(id, "Image")?;
    call(
        app,
        Method::GET,
        &format!("/image/v2/images/{id}"),
        tok,
        None,
    )
    .await
    .map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound(format!("Image {id} could not be found.")),
        other => other,
    })
}

async fn show_image(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let i = get_image(&app, &tok, &last(&p)).await?;
    Ok(Json(json!({"image": image_view(&app, &i, true)})))
}

async fn delete_image(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    let id = last(&p);
    get_image(&app, &tok, &id).await?;
    call(
        &app,
        Method::DELETE,
        &format!("/image/v2/images/{id}"),
        &tok,
        None,
    )
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn image_meta(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let i = get_image(&app, &tok, &last(&p)).await?;
    Ok(Json(json!({"metadata": image_meta_of(&i)})))
}

fn meta_body(bytes: &Bytes) -> Result<Map<String, Value>> {
    let v: Value = ursa_core::http::parse_body(bytes)?;
    let m = v
        .get("metadata")
        .and_then(|m| m.as_object())
        .cloned()
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute metadata.".into()))?;
    for (k, v) in &m {
        if k.is_empty() || k.len() > 255 || !v.is_string() || GLANCE_CORE.contains(&k.as_str()) {
            return Err(Error::BadRequest(format!(
                "Invalid metadata key or value: {k}"
            )));
        }
    }
    Ok(m)
}

/// Applies metadata to an image with one JSON-patch (replace drops the
/// keys not given).
async fn patch_image_meta(
    app: &AppState,
    tok: &str,
    id: &str,
    set: &Map<String, Value>,
    remove_others: bool,
) -> Result<Value> {
    let i = get_image(app, tok, id).await?;
    let old = image_meta_of(&i);
    let mut ops = Vec::new();
    if let Some(o) = old.as_object() {
        for k in o.keys() {
            if remove_others && !set.contains_key(k) {
                ops.push(json!({"op": "remove", "path": format!("/{k}")}));
            }
        }
    }
    for (k, v) in set {
        let op = if old.get(k).is_some() {
            "replace"
        } else {
            "add"
        };
        ops.push(json!({"op": op, "path": format!("/{k}"), "value": v}));
    }
    let (status, v) = internal_patch(app, id, tok, Value::Array(ops)).await;
    if !status.is_success() {
        return Err(Error::BadRequest(
            v["error"]["message"]
                .as_str()
                .unwrap_or("metadata update failed")
                .to_string(),
        ));
    }
    Ok(image_meta_of(&v))
}

async fn internal_patch(app: &AppState, id: &str, tok: &str, ops: Value) -> (StatusCode, Value) {
    ursa_core::http::internal_as(
        &app.inproc,
        Method::PATCH,
        &format!("/image/v2/images/{id}"),
        tok,
        Some(ops),
        "application/openstack-images-v2.1-json-patch",
    )
    .await
}

async fn replace_image_meta(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let m = meta_body(&bytes)?;
    let out = patch_image_meta(&app, &tok, &last(&p), &m, true).await?;
    Ok(Json(json!({ "metadata": out })))
}

async fn update_image_meta(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let m = meta_body(&bytes)?;
    let out = patch_image_meta(&app, &tok, &last(&p), &m, false).await?;
    Ok(Json(json!({ "metadata": out })))
}

fn id_and_key(p: &[(String, String)]) -> (String, String) {
    let get = |n: &str| {
        p.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    (get("id"), get("key"))
}

async fn image_meta_item(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let (id, key) = id_and_key(&p);
    let i = get_image(&app, &tok, &id).await?;
    let m = image_meta_of(&i);
    let v = m
        .get(&key)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("Image {id} has no metadata item {key}.")))?;
    Ok(Json(json!({"meta": { key: v }})))
}

async fn set_image_meta_item(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let (id, key) = id_and_key(&p);
    let v: Value = ursa_core::http::parse_body(&bytes)?;
    let meta = v
        .get("meta")
        .and_then(|m| m.as_object())
        .cloned()
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute meta.".into()))?;
    if meta.len() != 1 || !meta.contains_key(&key) {
        return Err(Error::BadRequest("Request body and URI mismatch".into()));
    }
    let out = patch_image_meta(&app, &tok, &id, &meta, false).await?;
    Ok(Json(
        json!({"meta": { key.clone(): out.get(&key).cloned().unwrap_or(Value::Null) }}),
    ))
}

async fn delete_image_meta_item(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    let (id, key) = id_and_key(&p);
    let i = get_image(&app, &tok, &id).await?;
    if image_meta_of(&i).get(&key).is_none() {
        return Err(Error::NotFound(format!(
            "Image {id} has no metadata item {key}."
        )));
    }
    let (status, _) = internal_patch(
        &app,
        &id,
        &tok,
        json!([{"op": "remove", "path": format!("/{key}")}]),
    )
    .await;
    if !status.is_success() {
        return Err(Error::BadRequest("metadata update failed".into()));
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------------
// Volumes and snapshots.

fn volume_view(v: &Value) -> Value {
    let id = v["id"].clone();
    let attachments: Vec<Value> = v["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            json!({"id": a["attachment_id"].as_str().map(|_| id.clone()).unwrap_or(id.clone()),
                        "volumeId": id, "serverId": a["server_id"], "device": a["device"]})
        })
        .collect();
    json!({"id": id, "status": v["status"], "size": v["size"], "availabilityZone": v["availability_zone"],
           "createdAt": v["created_at"], "displayName": v["name"], "displayDescription": v["description"],
           "volumeType": v["volume_type"], "snapshotId": v["snapshot_id"],
           "metadata": v.get("metadata").cloned().unwrap_or(json!({})),
           "attachments": if attachments.is_empty() { json!([{}]) } else { json!(attachments) }})
}

/// Nova's attribute names to Cinder's: each present, non-null `from` of
/// `b` goes into `out` as `to`.
fn copy_renamed(b: &Map<String, Value>, out: &mut Value, names: &[(&str, &str)]) {
    for (from, to) in names {
        if let Some(v) = b.get(*from).filter(|v| !v.is_null()) {
            out[*to] = v.clone();
        }
    }
}

fn volume_path(auth: &Auth, rest: &str) -> Result<String> {
    let p = auth
        .0
        .project_id()
        .ok_or_else(|| Error::Forbidden("Volumes belong to projects.".into()))?;
    Ok(format!("/volume/v3/{p}{rest}"))
}

async fn list_volumes(
    State(app): State<AppState>,
    auth: Auth,
    Token(tok): Token,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let path = volume_path(&auth, &format!("/volumes/detail{}", qs(&raw)))?;
    let v = call(&app, Method::GET, &path, &tok, None).await?;
    Ok(Json(
        json!({"volumes": v["volumes"].as_array().into_iter().flatten().map(volume_view).collect::<Vec<_>>()}),
    ))
}

async fn show_volume(
    State(app): State<AppState>,
    auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let id = last(&p);
    uuid_or_404(&id, "Volume")?;
    let v = call(
        &app,
        Method::GET,
        &volume_path(&auth, &format!("/volumes/{id}"))?,
        &tok,
        None,
    )
    .await?;
    Ok(Json(json!({"volume": volume_view(&v["volume"])})))
}

async fn create_volume(
    State(app): State<AppState>,
    auth: Auth,
    Token(tok): Token,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let b = body_obj(&bytes, "volume")?;
    let size = match b.get("size") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .filter(|s| *s >= 1)
    .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute size.".into()))?;
    let mut body = json!({"size": size});
    copy_renamed(
        &b,
        &mut body,
        &[
            ("display_name", "name"),
            ("display_description", "description"),
            ("volume_type", "volume_type"),
            ("snapshot_id", "snapshot_id"),
            ("metadata", "metadata"),
            ("availability_zone", "availability_zone"),
        ],
    );
    let v = call(
        &app,
        Method::POST,
        &volume_path(&auth, "/volumes")?,
        &tok,
        Some(json!({ "volume": body })),
    )
    .await?;
    Ok(Json(json!({"volume": volume_view(&v["volume"])})))
}

async fn delete_volume(
    State(app): State<AppState>,
    auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    let id = last(&p);
    uuid_or_404(&id, "Volume")?;
    call(
        &app,
        Method::DELETE,
        &volume_path(&auth, &format!("/volumes/{id}"))?,
        &tok,
        None,
    )
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

fn snapshot_view(s: &Value) -> Value {
    json!({"id": s["id"], "volumeId": s["volume_id"], "status": s["status"], "size": s["size"],
           "createdAt": s["created_at"], "displayName": s["name"], "displayDescription": s["description"]})
}

async fn list_snapshots(
    State(app): State<AppState>,
    auth: Auth,
    Token(tok): Token,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let path = volume_path(&auth, &format!("/snapshots/detail{}", qs(&raw)))?;
    let v = call(&app, Method::GET, &path, &tok, None).await?;
    Ok(Json(
        json!({"snapshots": v["snapshots"].as_array().into_iter().flatten().map(snapshot_view).collect::<Vec<_>>()}),
    ))
}

async fn show_snapshot(
    State(app): State<AppState>,
    auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let id = last(&p);
    uuid_or_404(&id, "Snapshot")?;
    let v = call(
        &app,
        Method::GET,
        &volume_path(&auth, &format!("/snapshots/{id}"))?,
        &tok,
        None,
    )
    .await?;
    Ok(Json(json!({"snapshot": snapshot_view(&v["snapshot"])})))
}

async fn create_snapshot(
    State(app): State<AppState>,
    auth: Auth,
    Token(tok): Token,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let b = body_obj(&bytes, "snapshot")?;
    let vol = b
        .get("volume_id")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute volume_id.".into()))?;
    let mut body = json!({ "volume_id": vol });
    copy_renamed(
        &b,
        &mut body,
        &[
            ("display_name", "name"),
            ("display_description", "description"),
            ("force", "force"),
        ],
    );
    let v = call(
        &app,
        Method::POST,
        &volume_path(&auth, "/snapshots")?,
        &tok,
        Some(json!({ "snapshot": body })),
    )
    .await?;
    Ok(Json(json!({"snapshot": snapshot_view(&v["snapshot"])})))
}

async fn delete_snapshot(
    State(app): State<AppState>,
    auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    let id = last(&p);
    uuid_or_404(&id, "Snapshot")?;
    call(
        &app,
        Method::DELETE,
        &volume_path(&auth, &format!("/snapshots/{id}"))?,
        &tok,
        None,
    )
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

// ---------------------------------------------------------------------
// Networks (nova-network's shape, from Neutron).

async fn network_view(app: &AppState, tok: &str, n: &Value) -> Value {
    let mut cidr = Value::Null;
    if let Some(s) = n["subnets"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|s| s.as_str())
    {
        if let Ok(v) = call(
            app,
            Method::GET,
            &format!("/network/v2.0/subnets/{s}"),
            tok,
            None,
        )
        .await
        {
            cidr = v["subnet"]["cidr"].clone();
        }
    }
    json!({"id": n["id"], "label": n["name"], "cidr": cidr})
}

async fn list_networks(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
) -> Result<Json<Value>> {
    let v = call(&app, Method::GET, "/network/v2.0/networks", &tok, None).await?;
    let mut out = Vec::new();
    for n in v["networks"].as_array().into_iter().flatten() {
        out.push(network_view(&app, &tok, n).await);
    }
    Ok(Json(json!({ "networks": out })))
}

async fn show_network(
    State(app): State<AppState>,
    _auth: Auth,
    Token(tok): Token,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let id = last(&p);
    uuid_or_404(&id, "Network")?;
    let v = call(
        &app,
        Method::GET,
        &format!("/network/v2.0/networks/{id}"),
        &tok,
        None,
    )
    .await?;
    Ok(Json(
        json!({"network": network_view(&app, &tok, &v["network"]).await}),
    ))
}
