//! The parts of a server below `/servers/{id}`: metadata and its items,
//! addresses (`ips`), instance actions, the password and diagnostics; and
//! server groups (`os-server-groups`), whose policies the scheduler honours.

use super::api::{body_obj, find_server, last, param, svc, write_access, Mv};
use super::{now, st, Compute, Rec};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{empty, parse_body, Auth};
use ursa_core::store::Op;

pub const SERVER_GROUP: &str = "server_group";
/// Most metadata items a server holds (Nova's quota).
pub const MAX_METADATA: usize = 128;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/servers/{id}/metadata",
            get(list_meta).put(replace_meta).post(update_meta),
        )
        .route(
            "/servers/{id}/metadata/{key}",
            get(show_meta).put(set_meta).delete(delete_meta),
        )
        .route("/servers/{id}/ips", get(ips))
        .route("/servers/{id}/ips/{network}", get(ips_of))
        .route("/servers/{id}/os-instance-actions", get(actions))
        .route("/servers/{id}/os-instance-actions/{req}", get(action))
        .route(
            "/servers/{id}/os-server-password",
            get(password).delete(clear_password),
        )
        .route("/servers/{id}/diagnostics", get(diagnostics))
        .route(
            "/servers/{id}/os-interface",
            get(list_interfaces).post(attach_interface),
        )
        .route(
            "/servers/{id}/os-interface/{port}",
            get(show_interface).delete(detach_interface),
        )
        .route("/os-server-groups", get(list_groups).post(create_group))
        .route(
            "/os-server-groups/{gid}",
            get(show_group).delete(delete_group),
        )
}

/// Checks metadata as Nova does: keys 1–255 characters, string values of
/// at most 255, at most [`MAX_METADATA`] items.
pub fn check_metadata(m: &Map<String, Value>) -> Result<()> {
    for (k, v) in m {
        if k.is_empty() || k.len() > 255 {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute metadata: keys are 1 to 255 characters.".into(),
            ));
        }
        match v {
            Value::String(s) if s.len() <= 255 => {}
            _ => {
                return Err(Error::BadRequest(format!(
                    "Invalid input for field/attribute metadata. Value of {k} is not a string of at most 255 characters."
                )))
            }
        }
    }
    if m.len() > MAX_METADATA {
        return Err(Error::Forbidden(format!(
            "Quota exceeded for metadata_items: at most {MAX_METADATA} items."
        )));
    }
    Ok(())
}

fn meta_of(r: &Rec) -> Map<String, Value> {
    r.get("metadata")
        .and_then(|v| v.as_object())
        .cloned()
        .unwrap_or_default()
}

async fn change_meta(
    s: &Compute,
    id: &str,
    mut f: impl FnMut(&mut Map<String, Value>) -> Result<()> + Send + 'static,
) -> Result<Map<String, Value>> {
    let r = s
        .update(id, move |r| {
            let mut m = meta_of(r);
            f(&mut m)?;
            check_metadata(&m)?;
            r.insert("metadata".into(), Value::Object(m));
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("Instance {id} could not be found.")))?;
    Ok(meta_of(&r))
}

fn meta_body(bytes: &Bytes, key: &str) -> Result<Map<String, Value>> {
    let v: Value = parse_body(bytes)?;
    match v.get(key) {
        Some(Value::Object(m)) => Ok(m.clone()),
        _ => Err(Error::BadRequest(format!(
            "Invalid input for field/attribute {key}."
        ))),
    }
}

async fn list_meta(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let r = find_server(svc(&app)?, &auth, &last(&p)).await?;
    Ok(Json(json!({"metadata": meta_of(&r)})))
}

async fn replace_meta(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    write_meta(&app, &auth, &last(&p), &bytes, true).await
}

async fn update_meta(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    write_meta(&app, &auth, &last(&p), &bytes, false).await
}

/// `PUT` (replace all) or `POST` (merge) of a server's metadata.
async fn write_meta(
    app: &AppState,
    auth: &Auth,
    id: &str,
    bytes: &Bytes,
    replace: bool,
) -> Result<Json<Value>> {
    write_access(auth)?;
    let s = svc(app)?;
    find_server(s, auth, id).await?;
    let new = meta_body(bytes, "metadata")?;
    let m = change_meta(s, id, move |m| {
        if replace {
            *m = new.clone();
        } else {
            m.extend(new.clone());
        }
        Ok(())
    })
    .await?;
    Ok(Json(json!({ "metadata": m })))
}

async fn show_meta(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let (id, key) = (param(&p, "id"), param(&p, "key"));
    let r = find_server(svc(&app)?, &auth, &id).await?;
    let v = meta_of(&r)
        .get(&key)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("Metadata item was not found: {key}")))?;
    Ok(Json(json!({"meta": { key: v }})))
}

async fn set_meta(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let (id, key) = (param(&p, "id"), param(&p, "key"));
    find_server(s, &auth, &id).await?;
    let item = meta_body(&bytes, "meta")?;
    if item.len() != 1 {
        return Err(Error::BadRequest(
            "Request body contains too many items.".into(),
        ));
    }
    if !item.contains_key(&key) {
        return Err(Error::BadRequest("Request body and URI mismatch".into()));
    }
    let m = change_meta(s, &id, move |m| {
        m.extend(item.clone());
        Ok(())
    })
    .await?;
    Ok(Json(
        json!({"meta": { key.clone(): m.get(&key).cloned().unwrap_or(Value::Null) }}),
    ))
}

async fn delete_meta(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let (id, key) = (param(&p, "id"), param(&p, "key"));
    let r = find_server(s, &auth, &id).await?;
    if !meta_of(&r).contains_key(&key) {
        return Err(Error::NotFound(format!(
            "Metadata item was not found: {key}"
        )));
    }
    change_meta(s, &id, move |m| {
        m.remove(&key);
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn addresses(s: &Compute, id: &str) -> Result<Value> {
    let ports = server_ports(s, id).await?;
    let book = ursa_network::api::address_book(&s.networks, &ports).await?;
    Ok(ursa_network::api::addresses(&book, &ports, id))
}

async fn ips(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<Value>> {
    super::api::strict_query(mv, &raw)?;
    let s = svc(&app)?;
    let id = last(&p);
    find_server(s, &auth, &id).await?;
    Ok(Json(json!({"addresses": addresses(s, &id).await?})))
}

async fn ips_of(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<Value>> {
    super::api::strict_query(mv, &raw)?;
    let s = svc(&app)?;
    let (id, net) = (param(&p, "id"), param(&p, "network"));
    find_server(s, &auth, &id).await?;
    let a = addresses(s, &id).await?;
    let v = a
        .get(&net)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("Network {net} could not be found.")))?;
    Ok(Json(json!({ net: v })))
}

fn action_list(r: &Rec) -> Vec<Value> {
    r.get("ursa:actions")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default()
}

/// A server's instance actions; from 2.21 also a deleted server's (what
/// its delete kept of them).
async fn actions_of(app: &AppState, auth: &Auth, mv: Mv, id: &str) -> Result<Vec<Value>> {
    let s = svc(app)?;
    match find_server(s, auth, id).await {
        Ok(r) => Ok(action_list(&r)),
        Err(Error::NotFound(m)) if mv.at(21) => {
            let kept =
                crate::server_table::deleted_actions(&mut *s.identity.store().conn().await?, id)
                    .await?
                    .filter(|(p, _)| {
                        auth.0.is_reader_everywhere() || auth.0.project_id() == Some(p)
                    });
            kept.map(|(_, a)| a).ok_or(Error::NotFound(m))
        }
        Err(e) => Err(e),
    }
}

async fn actions(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let mut a = actions_of(&app, &auth, mv, &last(&p)).await?;
    a.reverse();
    Ok(Json(json!({ "instanceActions": a })))
}

async fn action(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let (id, req) = (param(&p, "id"), param(&p, "req"));
    let mut a = actions_of(&app, &auth, mv, &id)
        .await?
        .into_iter()
        .find(|a| a["request_id"] == req.as_str())
        .ok_or_else(|| {
            Error::NotFound(format!(
                "Action {req} could not be found for instance {id}."
            ))
        })?;
    if auth.0.is_admin() {
        a["events"] = json!([{"event": format!("compute_{}", a["action"].as_str().unwrap_or("")),
            "start_time": a["start_time"], "finish_time": a["start_time"], "result": "Success",
            "traceback": null}]);
    }
    Ok(Json(json!({ "instanceAction": a })))
}

async fn password(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let r = find_server(svc(&app)?, &auth, &last(&p)).await?;
    Ok(Json(json!({"password": st(&r, "ursa:password")})))
}

async fn clear_password(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let id = last(&p);
    find_server(s, &auth, &id).await?;
    s.update(&id, |r| {
        r.insert("ursa:password".into(), json!(""));
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn diagnostics(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    if !auth.0.is_admin() {
        return Err(Error::Forbidden(
            "Policy doesn't allow os_compute_api:os-server-diagnostics to be performed.".into(),
        ));
    }
    let s = svc(&app)?;
    let id = last(&p);
    let r = find_server(s, &auth, &id).await?;
    let running = match s.node(st(&r, "ursa:node")) {
        Some(n) => n.agent.running(&id).await,
        None => false,
    };
    let flavor = s
        .doc(super::FLAVOR, st(&r, "ursa:flavor_id"))
        .unwrap_or_default();
    if mv.at(48) {
        // 2.48's standard form. `driver` is an enumeration in Nova's API
        // (libvirt, xenapi, …): Ursa's QEMU guests report as libvirt's
        // QEMU domains do; counters a guest does not expose are null.
        let ports = server_ports(s, &id).await?;
        let vols = super::api::attached_count(s, &id).await?;
        let nics: Vec<Value> = ports
            .iter()
            .map(|p| {
                json!({"mac_address": p["mac_address"], "rx_octets": null, "rx_errors": null,
                       "rx_drop": null, "rx_packets": null, "rx_rate": null, "tx_octets": null,
                       "tx_errors": null, "tx_drop": null, "tx_packets": null, "tx_rate": null})
            })
            .collect();
        // The local root disk, unless the root is a volume (attached).
        let local = usize::from(!crate::volume_backed(&r));
        let disks: Vec<Value> = (0..vols + local)
            .map(|_| {
                json!({"read_bytes": null, "read_requests": null, "write_bytes": null,
                       "write_requests": null, "errors_count": null})
            })
            .collect();
        let cpus = flavor.get("vcpus").and_then(|v| v.as_i64()).unwrap_or(1);
        return Ok(Json(json!({
            "state": if running { "running" } else { "shutdown" },
            "driver": "libvirt", "hypervisor": "qemu", "hypervisor_os": "linux", "uptime": null,
            "config_drive": false, "num_cpus": cpus, "num_nics": nics.len(),
            "num_disks": disks.len(),
            "memory_details": {"maximum": flavor.get("ram").cloned().unwrap_or(json!(0)), "used": null},
            "cpu_details": (0..cpus).map(|i| json!({"id": i, "time": null, "utilisation": null})).collect::<Vec<_>>(),
            "nic_details": nics, "disk_details": disks,
        })));
    }
    Ok(Json(json!({
        "state": if running { "running" } else { "shutdown" },
        "driver": "qemu", "hypervisor": "qemu", "hypervisor_os": "linux",
        "num_cpus": flavor.get("vcpus").cloned().unwrap_or(json!(1)),
        "memory_details": {"maximum": flavor.get("ram").cloned().unwrap_or(json!(0)), "used": 0},
        "config_drive": false,
    })))
}

// ---------------------------------------------------------------------
// Interfaces (`os-interface`): a server's ports, hot-plugged.

fn interface_view(s: &Compute, p: &Rec) -> Value {
    let ips: Vec<Value> = p
        .get("fixed_ips")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .map(|x| json!({"subnet_id": x["subnet_id"], "ip_address": x["ip_address"]}))
        .collect();
    let host = st(p, "binding:host_id");
    let up = !host.is_empty() && s.networks.pusher.node_ok(host) == Some(true);
    json!({"port_state": if up { "ACTIVE" } else { "DOWN" }, "fixed_ips": ips,
           "port_id": p["id"], "net_id": p["network_id"], "mac_addr": p["mac_address"]})
}

async fn server_ports(s: &Compute, id: &str) -> Result<Vec<Rec>> {
    ursa_network::api::device_ports(&s.networks, &[id.to_string()]).await
}

async fn list_interfaces(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let id = last(&p);
    find_server(s, &auth, &id).await?;
    let v: Vec<Value> = server_ports(s, &id)
        .await?
        .iter()
        .map(|p| interface_view(s, p))
        .collect();
    Ok(Json(json!({ "interfaceAttachments": v })))
}

async fn show_interface(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let (id, port) = (param(&p, "id"), param(&p, "port"));
    find_server(s, &auth, &id).await?;
    let pr = server_ports(s, &id)
        .await?
        .into_iter()
        .find(|x| st(x, "id") == port)
        .ok_or_else(|| Error::NotFound(format!("Port {port} is not attached to instance {id}.")))?;
    Ok(Json(json!({"interfaceAttachment": interface_view(s, &pr)})))
}

async fn attach_interface(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let id = last(&p);
    let r = find_server(s, &auth, &id).await?;
    if !matches!(st(&r, "status"), "ACTIVE" | "SHUTOFF" | "PAUSED") {
        return Err(Error::Conflict(format!(
            "Cannot 'attach_interface' instance {id} while it is in vm_state {}",
            st(&r, "OS-EXT-STS:vm_state")
        )));
    }
    let b = body_obj(&bytes, "interfaceAttachment")?;
    let node_name = st(&r, "ursa:node").to_string();
    let node = s
        .node(&node_name)
        .cloned()
        .ok_or_else(|| Error::Conflict("The server has no compute node.".into()))?;
    let net_id = b.get("net_id").and_then(|v| v.as_str());
    let port_id = b.get("port_id").and_then(|v| v.as_str());
    let fixed_ip = b
        .get("fixed_ips")
        .and_then(|v| v.as_array())
        .and_then(|a| a.first())
        .and_then(|x| x.get("ip_address"))
        .and_then(|v| v.as_str());
    let port = match (port_id, net_id) {
        (Some(pid), None) => {
            ursa_network::api::bind_server_port(&s.networks, &auth, pid, &id, &node_name)
                .await
                .map_err(|e| match e {
                    Error::NotFound(m) => Error::NotFound(m),
                    Error::Conflict(m) => Error::Conflict(m),
                    other => other,
                })?
        }
        (None, net) => {
            let net = match net {
                Some(n) => n.to_string(),
                None => {
                    let nets = ursa_network::api::usable_networks(&s.networks, &auth).await?;
                    match nets.as_slice() {
                        [one] => one.clone(),
                        _ => return Err(Error::BadRequest("Give a net_id or a port_id.".into())),
                    }
                }
            };
            ursa_network::api::create_server_port(
                &s.networks,
                &auth,
                &net,
                fixed_ip,
                &[],
                &id,
                &node_name,
            )
            .await
            .map_err(|e| match e {
                Error::NotFound(m) => Error::NotFound(m),
                Error::Conflict(m) => Error::Conflict(m),
                Error::Forbidden(m) => Error::NotFound(m),
                other => other,
            })?
        }
        (Some(_), Some(_)) => {
            return Err(Error::BadRequest(
                "Give a net_id or a port_id, not both.".into(),
            ))
        }
    };
    let pid = st(&port, "id").to_string();
    let tap = ursa_proto::netd::tap_device(&pid);
    s.networks.pusher.kick();
    let plugged = async {
        node.agent
            .wait_tap(&tap, std::time::Duration::from_secs(30))
            .await?;
        node.agent
            .attach_nic(&id, &tap, st(&port, "mac_address"))
            .await
    }
    .await;
    if let Err(e) = plugged {
        let _ = ursa_network::api::release_port(&s.networks, &pid).await;
        return Err(Error::Internal(format!(
            "Failed to attach network adapter device to {id}: {e}"
        )));
    }
    let port = ursa_network::api::port(&s.networks, &pid)
        .await?
        .unwrap_or(port);
    Ok(Json(
        json!({"interfaceAttachment": interface_view(s, &port)}),
    ))
}

async fn detach_interface(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let (id, port) = (param(&p, "id"), param(&p, "port"));
    let r = find_server(s, &auth, &id).await?;
    if !server_ports(s, &id)
        .await?
        .iter()
        .any(|x| st(x, "id") == port)
    {
        return Err(Error::NotFound(format!(
            "Port {port} is not attached to instance {id}."
        )));
    }
    if let Some(n) = s.node(st(&r, "ursa:node")) {
        n.agent
            .detach_nic(&id, &ursa_proto::netd::tap_device(&port))
            .await
            .map_err(|e| Error::Internal(format!("Failed to detach interface: {e}")))?;
    }
    ursa_network::api::release_port(&s.networks, &port).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

// ---------------------------------------------------------------------
// Server groups.

/// A server group at version `mv`: 2.13 adds its project and user, 2.64
/// shows one `policy` and its `rules` instead of `policies` and `metadata`.
async fn group_view(g: &Rec, s: &Compute, mv: Mv) -> Result<Value> {
    let id = st(g, "id");
    let members: Vec<Value> = s
        .servers(&crate::server_table::Filter {
            group: Some(id.to_string()),
            ..Default::default()
        })
        .await?
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    let mut v = json!({"id": id, "name": g["name"], "members": members});
    if mv.at(64) {
        v["policy"] = g["policies"][0].clone();
        v["rules"] = g.get("rules").cloned().unwrap_or(json!({}));
    } else {
        v["policies"] = g["policies"].clone();
        v["metadata"] = json!({});
    }
    if mv.at(13) {
        v["project_id"] = g["project_id"].clone();
        v["user_id"] = g["user_id"].clone();
    }
    Ok(v)
}

fn may_see_group(auth: &Auth, g: &Rec) -> bool {
    auth.0.is_admin() || auth.0.project_id() == Some(st(g, "project_id"))
}

async fn list_groups(State(app): State<AppState>, auth: Auth, mv: Mv) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let mut out: Vec<Value> = Vec::new();
    for g in s
        .docs(SERVER_GROUP)
        .iter()
        .filter(|g| auth.0.project_id() == Some(st(g, "project_id")))
    {
        out.push(group_view(g, s, mv).await?);
    }
    Ok(Json(json!({ "server_groups": out })))
}

async fn create_group(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    bytes: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let b = body_obj(&bytes, "server_group")?;
    let name = b
        .get("name")
        .and_then(|v| v.as_str())
        .filter(|n| !n.trim().is_empty() && n.len() <= 255)
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute name.".into()))?;
    // Up to 2.63 a list `policies` of one; from 2.64 one `policy` and
    // optional `rules` (max_server_per_host, for anti-affinity).
    let unexpected = |k: &str| {
        Error::BadRequest(format!(
            "Invalid input for field/attribute server_group. Value: Additional properties are not allowed ('{k}' was unexpected)"
        ))
    };
    let policies: Vec<String> = if mv.at(64) {
        if b.contains_key("policies") {
            return Err(unexpected("policies"));
        }
        b.get("policy")
            .and_then(|v| v.as_str())
            .map(|p| vec![p.to_string()])
            .unwrap_or_default()
    } else {
        if b.contains_key("policy") {
            return Err(unexpected("policy"));
        }
        b.get("policies")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Soft policies came with 2.15.
    let known: &[&str] = if mv.at(15) {
        &[
            "affinity",
            "anti-affinity",
            "soft-affinity",
            "soft-anti-affinity",
        ]
    } else {
        &["affinity", "anti-affinity"]
    };
    if policies.len() != 1 || !known.contains(&policies[0].as_str()) {
        return Err(Error::BadRequest(format!(
            "Invalid input for field/attribute policies: one of {}.",
            known.join(", ")
        )));
    }
    let rules = match b.get("rules") {
        None => json!({}),
        Some(_) if !mv.at(64) => return Err(unexpected("rules")),
        Some(Value::Object(r)) if r.is_empty() => json!({}),
        Some(Value::Object(r))
            if policies[0] == "anti-affinity"
                && r.len() == 1
                && r.get("max_server_per_host")
                    .and_then(|m| m.as_u64().or_else(|| m.as_str().and_then(|x| x.parse().ok())))
                    .is_some_and(|m| m >= 1) =>
        {
            json!({"max_server_per_host": r["max_server_per_host"]
                .as_u64()
                .or_else(|| r["max_server_per_host"].as_str().and_then(|x| x.parse().ok()))})
        }
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute rules: only max_server_per_host (1 or more), for anti-affinity.".into(),
            ))
        }
    };
    let project = auth.0.project_id().unwrap_or("").to_string();
    let id = uuid::Uuid::new_v4().to_string();
    let g: Rec = json!({"id": id, "name": name, "policies": policies, "project_id": project,
                        "user_id": auth.0.user_id, "created": now(), "rules": rules})
    .as_object()
    .cloned()
    .unwrap_or_default();
    s.put(SERVER_GROUP, g.clone()).await?;
    Ok(Json(json!({"server_group": group_view(&g, s, mv).await?})))
}

fn find_group(s: &Compute, auth: &Auth, id: &str) -> Result<Rec> {
    s.doc(SERVER_GROUP, id)
        .filter(|g| may_see_group(auth, g))
        .ok_or_else(|| Error::NotFound(format!("Instance group {id} could not be found.")))
}

async fn show_group(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let g = find_group(s, &auth, &last(&p))?;
    Ok(Json(json!({"server_group": group_view(&g, s, mv).await?})))
}

async fn delete_group(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let id = last(&p);
    find_group(s, &auth, &id)?;
    s.identity
        .change(move |_| Ok((vec![Op::delete(SERVER_GROUP, &id)], ())))
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// A server group a create names, as the scheduler needs it.
#[derive(Clone, Debug)]
pub struct GroupHint {
    pub id: String,
    pub policy: String,
    /// Anti-affinity's most members on one node (2.64's
    /// `max_server_per_host`; 1 without it).
    pub max_per_host: usize,
}

/// The group a server create names in `os:scheduler_hints.group`, checked.
pub fn hinted_group(s: &Compute, auth: &Auth, hints: Option<&Value>) -> Result<Option<GroupHint>> {
    let Some(gid) = hints.and_then(|h| h.get("group")).and_then(|g| g.as_str()) else {
        return Ok(None);
    };
    let g = find_group(s, auth, gid).map_err(|_| {
        Error::BadRequest(format!(
            "Invalid server group {gid}: it could not be found."
        ))
    })?;
    Ok(Some(GroupHint {
        id: gid.to_string(),
        policy: g["policies"][0].as_str().unwrap_or("").to_string(),
        max_per_host: g["rules"]["max_server_per_host"]
            .as_u64()
            .unwrap_or(1)
            .max(1) as usize,
    }))
}
