//! Server actions (`POST /servers/{id}/action`): power (start, stop,
//! reboot, pause, suspend), lock, shelve, rebuild, snapshots, reset state,
//! console output, and the network actions Nova proxies (floating IPs,
//! security groups). Each records an instance action with the request id.

use super::api::{
    access_ip, description, disk_config, find_server, hostname_field, param, server_view, svc,
    update_view, write_access, Mv,
};
use super::{now, st, Rec};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{empty, parse_body, Auth, RequestId, Token};

/// Sets a server's status, vm_state and power_state together.
pub(super) fn set_state(r: &mut Rec, status: &str, vm: &str, power: i64) {
    r.insert("status".into(), json!(status));
    r.insert("OS-EXT-STS:vm_state".into(), json!(vm));
    r.insert("OS-EXT-STS:power_state".into(), json!(power));
    r.insert("OS-EXT-STS:task_state".into(), Value::Null);
}

/// Appends an instance action (`os-instance-actions`) to a server record.
pub(super) fn record_action(r: &mut Rec, action: &str, req: &RequestId, auth: &Auth) {
    let entry = json!({"action": action, "instance_uuid": r["id"], "request_id": req.0,
        "user_id": auth.0.user_id, "project_id": auth.0.project_id(), "start_time": now(),
        "message": null});
    match r.get_mut("ursa:actions").and_then(|v| v.as_array_mut()) {
        Some(a) => a.push(entry),
        None => {
            r.insert("ursa:actions".into(), json!([entry]));
        }
    }
}

/// Actions a locked server refuses to anyone but an admin.
const LOCKABLE: &[&str] = &[
    "os-stop",
    "os-start",
    "reboot",
    "pause",
    "unpause",
    "suspend",
    "resume",
    "shelve",
    "shelveOffload",
    "unshelve",
    "rebuild",
    "createImage",
    "createBackup",
    "resize",
];

pub(super) async fn server_action(
    State(app): State<AppState>,
    auth: Auth,
    Token(tok): Token,
    req_id: RequestId,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let id = param(&p, "id");
    let r = find_server(s, &auth, &id).await?;
    let body: Map<String, Value> = parse_body(&bytes)?;
    let (action, args) = body
        .iter()
        .next()
        .ok_or_else(|| Error::BadRequest("An action is required.".into()))?;
    let node = s.node(st(&r, "ursa:node")).cloned();
    let status = st(&r, "status").to_string();
    let conflict = |what: &str| {
        Error::Conflict(format!(
            "Cannot '{what}' instance {id} while it is in vm_state {}",
            st(&r, "OS-EXT-STS:vm_state")
        ))
    };
    let need = |ok: &[&str], what: &str| -> Result<()> {
        if ok.contains(&status.as_str()) {
            Ok(())
        } else {
            Err(conflict(what))
        }
    };
    let no_node = || Error::Conflict("The server has no compute node.".into());
    if r.get("locked") == Some(&json!(true))
        && !auth.0.is_admin()
        && LOCKABLE.contains(&action.as_str())
    {
        return Err(Error::Conflict(format!("Instance {id} is locked")));
    }
    // A volume-backed server's root disk is not a local disk these copy or
    // remake.
    if super::volume_backed(&r)
        && matches!(
            action.as_str(),
            "createImage" | "createBackup" | "shelve" | "shelveOffload"
        )
    {
        return Err(Error::BadRequest(format!(
            "'{action}' of a volume-backed server (instance {id}) is not supported by Ursa."
        )));
    }
    // The state a successful action leaves, recorded with the action.
    let mut to: Option<(&str, &str, i64)> = None;
    let mut reply: Option<Response> = None;
    match action.as_str() {
        "os-getConsoleOutput" => {
            let n = node.ok_or_else(no_node)?;
            let lines = match args.get("length") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_i64()
                        .or_else(|| v.as_str().and_then(|x| x.parse().ok()))
                        .filter(|n| *n >= -1)
                        .ok_or_else(|| {
                            Error::BadRequest("Invalid input for field/attribute length.".into())
                        })?,
                ),
            }
            .filter(|n| *n >= 0)
            .map(|v| v as usize);
            let output = n.agent.console(&id, lines).await.map_err(|e| {
                Error::ServiceUnavailable(format!("The compute node does not answer: {e}"))
            })?;
            return Ok(Json(json!({ "output": output })).into_response());
        }
        "os-stop" => {
            need(&["ACTIVE", "ERROR"], "stop")?;
            node.ok_or_else(no_node)?.agent.power_off(&id).await;
            to = Some(("SHUTOFF", "stopped", 4));
        }
        "os-start" => {
            need(&["SHUTOFF"], "start")?;
            let n = node.ok_or_else(no_node)?;
            n.agent.launch(&id).await.map_err(Error::Internal)?;
            to = Some(("ACTIVE", "active", 1));
        }
        "reboot" => {
            need(&["ACTIVE", "SHUTOFF", "PAUSED", "SUSPENDED"], "reboot")?;
            let n = node.ok_or_else(no_node)?;
            if status == "ACTIVE" {
                n.agent.reboot(&id).await.map_err(Error::Internal)?;
            } else {
                // A hard reboot starts a guest that was not running.
                n.agent.power_off(&id).await;
                n.agent.launch(&id).await.map_err(Error::Internal)?;
            }
            to = Some(("ACTIVE", "active", 1));
        }
        "pause" | "suspend" => {
            need(&["ACTIVE"], action)?;
            let n = node.ok_or_else(no_node)?;
            n.agent.pause(&id).await.map_err(Error::Internal)?;
            to = Some(if action == "pause" {
                ("PAUSED", "paused", 3)
            } else {
                ("SUSPENDED", "suspended", 4)
            });
        }
        "unpause" | "resume" => {
            need(
                &[if action == "unpause" {
                    "PAUSED"
                } else {
                    "SUSPENDED"
                }],
                action,
            )?;
            let n = node.ok_or_else(no_node)?;
            n.agent.unpause(&id).await.map_err(Error::Internal)?;
            to = Some(("ACTIVE", "active", 1));
        }
        "lock" | "unlock" => {
            let lock = action == "lock";
            // 2.73: a lock may say why.
            let reason = match args.get("locked_reason") {
                None | Some(Value::Null) => Value::Null,
                Some(_) if !mv.at(73) || !lock => {
                    return Err(super::api::unexpected("locked_reason"))
                }
                Some(Value::String(why)) if why.chars().count() <= 255 => json!(why),
                Some(_) => {
                    return Err(Error::BadRequest(
                        "Invalid input for field/attribute locked_reason.".into(),
                    ))
                }
            };
            s.update(&id, move |r| {
                r.insert("locked".into(), json!(lock));
                r.insert("locked_reason".into(), reason.clone());
                Ok(())
            })
            .await?;
        }
        "os-resetState" => {
            if !auth.0.is_admin() {
                return Err(Error::Forbidden(
                    "Policy doesn't allow os_compute_api:os-admin-actions:reset_state to be performed.".into(),
                ));
            }
            to = match args.get("state").and_then(|v| v.as_str()) {
                Some("active") => Some(("ACTIVE", "active", st_power(&r))),
                Some("error") => Some(("ERROR", "error", st_power(&r))),
                _ => {
                    return Err(Error::BadRequest(
                        "Invalid input for field/attribute state.".into(),
                    ))
                }
            };
        }
        "restore" => {
            // Nothing is soft-deleted here: there is never anything to restore.
            return Err(conflict("restore"));
        }
        "forceDelete" => {
            return Err(conflict("forceDelete"));
        }
        "injectNetworkInfo" | "resetNetwork" => {
            if !auth.0.is_admin() {
                return Err(Error::Forbidden(format!(
                    "Policy doesn't allow {action} to be performed."
                )));
            }
        }
        "addFloatingIp" | "removeFloatingIp" => {
            super::proxy::floating_ip_action(&app, &tok, &id, action == "addFloatingIp", args)
                .await?;
        }
        "addSecurityGroup" | "removeSecurityGroup" => {
            super::proxy::security_group_action(
                &app,
                &tok,
                &id,
                action == "addSecurityGroup",
                args,
            )
            .await?;
        }
        "createImage" | "createBackup" => {
            need(&["ACTIVE", "SHUTOFF", "PAUSED", "SUSPENDED"], action)?;
            if r.get("OS-EXT-STS:task_state").is_some_and(|t| !t.is_null()) {
                return Err(Error::Conflict(format!(
                    "Cannot '{action}' instance {id} while it is in task_state {}",
                    st(&r, "OS-EXT-STS:task_state")
                )));
            }
            let name = args
                .get("name")
                .and_then(|v| v.as_str())
                .filter(|n| !n.trim().is_empty() && n.len() <= 255)
                .ok_or_else(|| {
                    Error::BadRequest("Invalid input for field/attribute name.".into())
                })?;
            let mut meta = match args.get("metadata") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m))
                    if m.iter().all(|(k, v)| {
                        !k.is_empty()
                            && k.len() <= 255
                            && v.as_str().is_some_and(|v| v.len() <= 255)
                    }) =>
                {
                    m.clone()
                }
                Some(_) => {
                    return Err(Error::BadRequest(
                        "Invalid input for field/attribute metadata.".into(),
                    ))
                }
            };
            let mut rotate = None;
            if action == "createBackup" {
                let kind = args.get("backup_type").and_then(|v| v.as_str());
                let rotation = args.get("rotation").and_then(|v| v.as_i64());
                let (Some(kind), Some(rotation)) = (kind, rotation.filter(|r| *r >= 0)) else {
                    return Err(Error::BadRequest(
                        "createBackup needs backup_type and a rotation of 0 or more.".into(),
                    ));
                };
                meta.insert("backup_type".into(), json!(kind));
                meta.insert("image_type".into(), json!("backup"));
                rotate = Some((kind.to_string(), rotation as usize));
            }
            let image = super::snapshot::start(&app, s, &tok, &r, name, meta, rotate).await?;
            // 2.45: the image id in the body instead of a Location header.
            reply = Some(if mv.at(45) {
                (StatusCode::ACCEPTED, Json(json!({ "image_id": image }))).into_response()
            } else {
                let loc = format!("{}/image/v2/images/{image}", app.base_url);
                let mut resp = empty(StatusCode::ACCEPTED);
                if let Ok(v) = HeaderValue::from_str(&loc) {
                    resp.headers_mut().insert("location", v);
                }
                resp
            });
        }
        "shelve" => {
            need(&["ACTIVE", "SHUTOFF", "PAUSED", "SUSPENDED"], "shelve")?;
            super::snapshot::shelve(&app, s, &tok, &r).await?;
        }
        "shelveOffload" => {
            need(&["SHELVED", "SHELVED_OFFLOADED"], "shelveOffload")?;
        }
        "unshelve" => {
            need(&["SHELVED", "SHELVED_OFFLOADED"], "unshelve")?;
            super::snapshot::unshelve(s, &r).await?;
        }
        "rebuild" => {
            need(&["ACTIVE", "SHUTOFF", "ERROR"], "rebuild")?;
            let image_ref = args.get("imageRef").and_then(|v| v.as_str()).unwrap_or("");
            let image_id = image_ref.rsplit('/').next().unwrap_or("").to_string();
            super::api::bootable_image(&app, &auth, &image_id).await?;
            // A volume-backed server keeps its root volume: from 2.93 the
            // volume is re-imaged; below, only the image it has will do
            // (the guest is made again from the volume as it is).
            let reimage = if super::volume_backed(&r) {
                let now = s.root_image(&r).await.unwrap_or_default();
                if !mv.at(93) && now != image_id {
                    return Err(Error::BadRequest(format!(
                        "Image {image_id} is unacceptable: Unable to rebuild with a different image for a volume-backed server."
                    )));
                }
                mv.at(93).then(|| image_id.clone())
            } else {
                None
            };
            let volume_backed = super::volume_backed(&r);
            let name = match args.get("name") {
                None => None,
                Some(Value::String(n)) if !n.trim().is_empty() && n.len() <= 255 => Some(n.clone()),
                Some(_) => {
                    return Err(Error::BadRequest(
                        "Invalid input for field/attribute name.".into(),
                    ))
                }
            };
            let meta = match args.get("metadata") {
                None => None,
                Some(Value::Object(m)) if m.values().all(|v| v.is_string()) => Some(m.clone()),
                Some(_) => {
                    return Err(Error::BadRequest(
                        "Invalid input for field/attribute metadata.".into(),
                    ))
                }
            };
            let empty_args = Map::new();
            let o = args.as_object().unwrap_or(&empty_args);
            let ip4 = access_ip(o, "accessIPv4")?;
            let ip6 = access_ip(o, "accessIPv6")?;
            let disk_config = disk_config(o)?;
            let desc = description(o, mv)?;
            let host = hostname_field(o, mv)?;
            // 2.54 lets a rebuild set (or, with null, unset) the key pair,
            // 2.57 the user data.
            let key_name = match o.get("key_name") {
                None => None,
                Some(_) if !mv.at(54) => return Err(super::api::unexpected("key_name")),
                Some(Value::Null) => Some(Value::Null),
                Some(Value::String(k)) => {
                    if s.keypair(&auth.0.user_id, k).await?.is_none() {
                        return Err(Error::BadRequest(format!("Invalid key_name provided: {k}")));
                    }
                    Some(json!(k))
                }
                Some(_) => {
                    return Err(Error::BadRequest(
                        "Invalid input for field/attribute key_name.".into(),
                    ))
                }
            };
            let user_data = match o.get("user_data") {
                None => None,
                Some(_) if !mv.at(57) => return Err(super::api::unexpected("user_data")),
                Some(Value::Null) => Some(Value::Null),
                Some(Value::String(u))
                    if u.len() <= 65535
                        && base64::Engine::decode(
                            &base64::engine::general_purpose::STANDARD,
                            u.trim(),
                        )
                        .is_ok() =>
                {
                    Some(json!(u))
                }
                Some(_) => {
                    return Err(Error::BadRequest(
                        "User data needs to be valid base 64.".into(),
                    ))
                }
            };
            if mv.at(57) && o.contains_key("personality") {
                return Err(super::api::unexpected("personality"));
            }
            let was_stopped = status == "SHUTOFF";
            let req2 = req_id.clone();
            let a2 = Auth(auth.0.clone());
            let img2 = image_id.clone();
            let r2 = s
                .update(&id, move |r| {
                    if !volume_backed {
                        r.insert("ursa:image_id".into(), json!(img2));
                    }
                    if let Some(n) = name.clone() {
                        r.insert("name".into(), json!(n));
                    }
                    if let Some(m) = meta.clone() {
                        r.insert("metadata".into(), Value::Object(m));
                    }
                    if let Some(v) = ip4.clone() {
                        r.insert("accessIPv4".into(), json!(v));
                    }
                    if let Some(v) = ip6.clone() {
                        r.insert("accessIPv6".into(), json!(v));
                    }
                    if let Some(d) = disk_config.clone() {
                        r.insert("OS-DCF:diskConfig".into(), json!(d));
                    }
                    if let Some(d) = desc.clone() {
                        r.insert("description".into(), d);
                    }
                    if let Some(h) = host.clone() {
                        r.insert("hostname".into(), json!(h));
                    }
                    if let Some(k) = key_name.clone() {
                        r.insert("key_name".into(), k);
                    }
                    if let Some(u) = user_data.clone() {
                        r.insert("ursa:user_data".into(), u);
                    }
                    r.insert("status".into(), json!("REBUILD"));
                    r.insert("OS-EXT-STS:task_state".into(), json!("rebuilding"));
                    record_action(r, "rebuild", &req2, &a2);
                    Ok(())
                })
                .await?
                .ok_or_else(|| Error::NotFound(format!("Instance {id} could not be found.")))?;
            s.spawn_rebuild(r2.clone(), was_stopped, reimage);
            let full = server_view(&app, s, &auth, &r2, mv).await?;
            let mut v = update_view(full.clone(), mv);
            if mv.at(54) {
                v["key_name"] = full["key_name"].clone();
            }
            if mv.at(57) {
                v["user_data"] = r2.get("ursa:user_data").cloned().unwrap_or(Value::Null);
            }
            // The 2.1 rebuild reply: addresses without the extended keys,
            // and the (given or new) admin password.
            if let Some(nets) = v["addresses"].as_object_mut().filter(|_| !mv.at(75)) {
                for ips in nets.values_mut() {
                    for ip in ips.as_array_mut().into_iter().flatten() {
                        if let Some(o) = ip.as_object_mut() {
                            o.retain(|k, _| k == "addr" || k == "version");
                        }
                    }
                }
            }
            v["adminPass"] = json!(args
                .get("adminPass")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| {
                    use rand::distributions::{Alphanumeric, DistString};
                    Alphanumeric.sample_string(&mut rand::thread_rng(), 12)
                }));
            return Ok((StatusCode::ACCEPTED, Json(json!({ "server": v }))).into_response());
        }
        other => {
            return Err(Error::BadRequest(format!(
                "There is no such action: {other}"
            )))
        }
    }
    let name = match action.as_str() {
        "os-stop" => "stop",
        "os-start" => "start",
        "addFloatingIp"
        | "removeFloatingIp"
        | "addSecurityGroup"
        | "removeSecurityGroup"
        | "injectNetworkInfo"
        | "resetNetwork"
        | "os-resetState" => "",
        a => a,
    }
    .to_string();
    let a2 = Auth(auth.0.clone());
    s.update(&id, move |r| {
        if let Some((st, vm, pw)) = to {
            set_state(r, st, vm, pw);
        }
        if !name.is_empty() {
            record_action(r, &name, &req_id, &a2);
        }
        Ok(())
    })
    .await?;
    Ok(reply.unwrap_or_else(|| empty(StatusCode::ACCEPTED)))
}

fn st_power(r: &Rec) -> i64 {
    r.get("OS-EXT-STS:power_state")
        .and_then(|v| v.as_i64())
        .unwrap_or(0)
}
