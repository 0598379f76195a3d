//! Volume attachments: blockd's vhost-user-blk export, hot-plugged.

use super::*;
use ursa_volume::attach::Asker;

/// One volume attached to a server, as its volume record keeps it.
#[derive(Clone, Debug)]
pub(crate) struct Attached {
    pub server: String,
    pub volume: String,
    pub device: String,
    pub attachment_id: String,
    /// Set at attach (2.79) or by an update (2.85); a root volume's comes
    /// from the server's block device mapping instead.
    pub delete_on_termination: bool,
    /// The device tag given at attach (2.49).
    pub tag: Option<String>,
    /// The block device mapping's id (2.89).
    pub bdm_uuid: String,
}

/// The volumes attached to a server, ordered by device.
pub(super) async fn attached(s: &Compute, server: &str) -> Result<Vec<Attached>> {
    let mut out = attachments_of(s, &[server.to_string()]).await?;
    out.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(out)
}

/// How many volumes a server has attached.
pub(crate) async fn attached_count(s: &Compute, server: &str) -> Result<usize> {
    Ok(attached(s, server).await?.len())
}

/// The attachments of these servers.
pub(super) async fn attachments_of(s: &Compute, servers: &[String]) -> Result<Vec<Attached>> {
    let Some(v) = &s.volumes else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for vol in v.attached_to(servers).await? {
        for a in vol
            .get("attachments")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            let sid = a["server_id"].as_str().unwrap_or("");
            if servers.iter().any(|x| x == sid) && ursa_volume::attach::shown(a) {
                let text = |k: &str| a[k].as_str().unwrap_or("").to_string();
                let attachment_id = text("attachment_id");
                out.push(Attached {
                    server: sid.to_string(),
                    volume: st(&vol, "id").to_string(),
                    device: text("device"),
                    delete_on_termination: a["ursa:delete_on_termination"] == true,
                    tag: a["ursa:tag"].as_str().map(str::to_string),
                    bdm_uuid: a["ursa:bdm_uuid"]
                        .as_str()
                        .map_or_else(|| attachment_id.clone(), str::to_string),
                    attachment_id,
                });
            }
        }
    }
    Ok(out)
}

/// An attachment as `os-volume_attachments` shows it at version `mv`.
pub(super) fn attachment_view(srv: &Rec, a: &Attached, mv: Mv) -> Value {
    let mut v = json!({"serverId": a.server, "volumeId": a.volume, "device": a.device});
    if !mv.at(89) {
        v["id"] = json!(a.volume);
    }
    if mv.at(70) {
        v["tag"] = json!(a.tag);
    }
    if mv.at(79) {
        let dot = if a.device == "/dev/vda" && crate::volume_backed(srv) {
            srv.get("ursa:boot_volume")
                .and_then(|b| b["delete_on_termination"].as_bool())
                .unwrap_or(false)
        } else {
            a.delete_on_termination
        };
        v["delete_on_termination"] = json!(dot);
    }
    if mv.at(89) {
        v["attachment_id"] = json!(a.attachment_id);
        v["bdm_uuid"] = json!(a.bdm_uuid);
    }
    v
}

pub(super) async fn list_attachments(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let id = param(&p, "id");
    let srv = find_server(s, &auth, &id).await?;
    let v: Vec<Value> = attached(s, &id)
        .await?
        .iter()
        .map(|a| attachment_view(&srv, a, mv))
        .collect();
    Ok(Json(json!({"volumeAttachments": v})))
}

/// The image `image_id` if the caller may boot it (admin, public,
/// community or its own) and it is active; 400 otherwise, as Nova says.
pub(crate) async fn bootable_image(app: &AppState, auth: &Auth, image_id: &str) -> Result<Rec> {
    let img = app
        .images
        .get(image_id)
        .await?
        .filter(|i| {
            let vis = st(i, "visibility");
            auth.0.is_admin()
                || vis == "public"
                || vis == "community"
                || auth.0.project_id() == Some(st(i, "owner"))
        })
        .ok_or_else(|| Error::BadRequest(format!("Image {image_id} could not be found.")))?;
    if st(&img, "status") != "active" {
        return Err(Error::BadRequest(format!(
            "Image {image_id} is not active."
        )));
    }
    Ok(img)
}

pub(super) async fn show_attachment(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let (id, vol) = (param(&p, "id"), param(&p, "volume_id"));
    let srv = find_server(s, &auth, &id).await?;
    attached(s, &id)
        .await?
        .into_iter()
        .find(|a| a.volume == vol)
        .map(|a| Json(json!({"volumeAttachment": attachment_view(&srv, &a, mv)})))
        .ok_or_else(|| Error::NotFound(format!("volume_id not found: {vol}")))
}

pub(super) async fn attach_volume(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let id = param(&p, "id");
    let srv = find_server(s, &auth, &id).await?;
    let vols = s
        .volumes
        .as_ref()
        .ok_or_else(|| Error::Conflict("There is no volume service here.".into()))?;
    let b = body_obj(&bytes, "volumeAttachment")?;
    let vol_id = b
        .get("volumeId")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute volumeId.".into()))?
        .to_string();
    // 2.49: a device tag; 2.79: whether the volume goes with the server.
    let tag = match b.get("tag") {
        None => None,
        Some(_) if !mv.at(49) => return Err(unexpected("tag")),
        Some(Value::String(t)) if !t.is_empty() && t.len() <= 60 && !t.contains(['/', ',']) => {
            Some(t.clone())
        }
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute tag.".into(),
            ))
        }
    };
    let dot = match b.get("delete_on_termination") {
        None => false,
        Some(_) if !mv.at(79) => return Err(unexpected("delete_on_termination")),
        Some(Value::Bool(d)) => *d,
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute delete_on_termination.".into(),
            ))
        }
    };
    // 2.20: a shelved server takes the volume now and plugs it when it is
    // unshelved (its boot plugs every attached volume).
    let shelved = matches!(st(&srv, "status"), "SHELVED" | "SHELVED_OFFLOADED") && mv.at(20);
    if !matches!(st(&srv, "status"), "ACTIVE" | "SHUTOFF") && !shelved {
        return Err(Error::Conflict(format!(
            "Cannot 'attach_volume' instance {id} while it is in vm_state {}",
            st(&srv, "status")
        )));
    }
    if shelved {
        let asker = Asker {
            project: Some(project(&auth)?),
            admin: auth.0.is_admin(),
        };
        let used: Vec<String> = attached(s, &id)
            .await?
            .into_iter()
            .map(|a| a.device)
            .collect();
        let dev = (b'b'..=b'z')
            .map(|c| format!("/dev/vd{}", c as char))
            .find(|d| !used.contains(d))
            .unwrap_or_else(|| "/dev/vdz".into());
        let att = vols.attachment_create(&asker, &vol_id, &id, "rw").await?;
        let att_id = att["attachment_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let extra = json!({"device": dev, "ursa:delete_on_termination": dot, "ursa:tag": tag,
                           "ursa:bdm_uuid": uuid::Uuid::new_v4().to_string()});
        if let Err(e) = vols
            .attachment_complete(
                &asker,
                &att_id,
                extra.as_object().cloned().unwrap_or_default(),
            )
            .await
        {
            let _ = vols.attachment_delete(&asker, &att_id).await;
            return Err(e);
        }
        let a = attached(s, &id)
            .await?
            .into_iter()
            .find(|a| a.volume == vol_id)
            .ok_or_else(|| Error::Conflict(format!("Volume {vol_id} was detached meanwhile.")))?;
        return Ok(Json(
            json!({"volumeAttachment": attachment_view(&srv, &a, mv)}),
        ));
    }
    let node = s
        .node(st(&srv, "ursa:node"))
        .cloned()
        .ok_or_else(|| Error::Conflict("The server has no compute node.".into()))?;
    // As Nova does with Cinder: reserve the volume (only one the caller's
    // project may use), connect it for the node, plug it, complete.
    let asker = Asker {
        project: Some(project(&auth)?),
        admin: auth.0.is_admin(),
    };
    let att = vols.attachment_create(&asker, &vol_id, &id, "rw").await?;
    let att_id = att["attachment_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let used: Vec<String> = attached(s, &id)
        .await?
        .into_iter()
        .map(|a| a.device)
        .collect();
    let dev = (b'b'..=b'z')
        .map(|c| format!("/dev/vd{}", c as char))
        .find(|d| !used.contains(d))
        .unwrap_or_else(|| "/dev/vdz".into());
    let host = node.agent.node().to_string();
    let connector = json!({"host": host, "mountpoint": dev, "ursa_vhost_user": true});
    let plugged = async {
        let a = vols
            .attachment_update(
                &asker,
                &att_id,
                connector.as_object().unwrap_or(&Map::new()),
            )
            .await?;
        let socket = a["ursa:connection_info"]["data"]["socket_path"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        node.agent
            .attach_disk(&id, &vol_id, &socket)
            .await
            .map_err(Error::Internal)?;
        let extra = json!({"device": dev, "host_name": host,
                           "ursa:delete_on_termination": dot, "ursa:tag": tag,
                           "ursa:bdm_uuid": uuid::Uuid::new_v4().to_string()});
        vols.attachment_complete(
            &asker,
            &att_id,
            extra.as_object().cloned().unwrap_or_default(),
        )
        .await
    }
    .await;
    if let Err(e) = plugged {
        let _ = vols.attachment_delete(&asker, &att_id).await;
        return Err(e);
    }
    let a = attached(s, &id)
        .await?
        .into_iter()
        .find(|a| a.volume == vol_id)
        .ok_or_else(|| Error::Conflict(format!("Volume {vol_id} was detached meanwhile.")))?;
    Ok(Json(
        json!({"volumeAttachment": attachment_view(&srv, &a, mv)}),
    ))
}

#[derive(serde::Deserialize)]
struct AttachmentUpdate {
    #[serde(rename = "volumeAttachment")]
    attachment: AttachmentChange,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachmentChange {
    #[serde(rename = "volumeId")]
    volume_id: String,
    delete_on_termination: Option<bool>,
    // Named by 2.85's schema; nothing here changes with them.
    #[allow(dead_code)]
    id: Option<String>,
    #[allow(dead_code)]
    device: Option<String>,
    #[allow(dead_code)]
    tag: Option<String>,
    #[allow(dead_code)]
    #[serde(rename = "serverId")]
    server_id: Option<String>,
}

/// `PUT …/os-volume_attachments/{volume}`: from 2.85 a member may change
/// `delete_on_termination` of an attachment (the same volume in the
/// body); naming another volume asks for a swap, which admins only may
/// ask and Ursa does not offer.
pub(super) async fn swap_volume(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Response> {
    let s = svc(&app)?;
    let (id, vol_id) = (param(&p, "id"), param(&p, "volume_id"));
    let body: AttachmentUpdate = parse_body(&bytes)?;
    let change = body.attachment;
    let swap = change.volume_id != vol_id;
    if swap || !mv.at(85) {
        admin_only(&auth, "os_compute_api:os-volumes-attachments:swap")?;
    } else {
        write_access(&auth)?;
    }
    find_server(s, &auth, &id).await?;
    if !attached(s, &id).await?.iter().any(|a| a.volume == vol_id) {
        return Err(Error::NotFound(format!("volume_id not found: {vol_id}")));
    }
    if swap {
        return Err(Error::Conflict(
            "Swapping a server's volume for another is not supported.".into(),
        ));
    }
    if let (Some(dot), Some(vols)) = (change.delete_on_termination, s.volumes.as_ref()) {
        let sid = id.clone();
        vols.update(ursa_volume::VOLUME, &vol_id, move |r| {
            if let Some(list) = r.get_mut("attachments").and_then(|a| a.as_array_mut()) {
                for a in list.iter_mut().filter(|a| a["server_id"] == sid.as_str()) {
                    a["ursa:delete_on_termination"] = json!(dot);
                }
            }
            Ok(())
        })
        .await?;
    }
    Ok(empty(StatusCode::ACCEPTED))
}

pub(super) async fn detach_volume(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let (id, vol_id) = (param(&p, "id"), param(&p, "volume_id"));
    let srv = find_server(s, &auth, &id).await?;
    let vols = s
        .volumes
        .as_ref()
        .ok_or_else(|| Error::Conflict("There is no volume service here.".into()))?;
    let at = attached(s, &id).await?;
    if !at.iter().any(|a| a.volume == vol_id) {
        return Err(Error::NotFound(format!("volume_id not found: {vol_id}")));
    }
    if at
        .iter()
        .any(|a| a.volume == vol_id && a.device == "/dev/vda")
        && crate::volume_backed(&srv)
    {
        return Err(Error::BadRequest(
            "Cannot detach a root device volume".into(),
        ));
    }
    let att_id = at
        .iter()
        .find(|a| a.volume == vol_id)
        .map(|a| a.attachment_id.clone())
        .unwrap_or_default();
    vols.update(ursa_volume::VOLUME, &vol_id, |r| {
        r.insert("status".into(), json!("detaching"));
        Ok(())
    })
    .await?
    .ok_or_else(|| Error::NotFound(format!("volume_id not found: {vol_id}")))?;
    // As Nova does: 202 now; the guest lets go of the disk (a guest still
    // booting may take a while), then the volume is available again.
    // A shelved server's guest is gone: only the attachment goes.
    let node = match st(&srv, "status") {
        "SHELVED" | "SHELVED_OFFLOADED" => None,
        _ => s.node(st(&srv, "ursa:node")).cloned(),
    };
    let vols = vols.clone();
    tokio::spawn(async move {
        if let Some(n) = node {
            if let Err(e) = n.agent.detach_disk(&id, &vol_id).await {
                tracing::warn!(server = %id, volume = %vol_id, error = %e, "detach failed");
                let _ = vols
                    .update(ursa_volume::VOLUME, &vol_id, |r| {
                        r.insert("status".into(), json!("in-use"));
                        Ok(())
                    })
                    .await;
                return;
            }
        }
        // The attachment goes (the export with it): available again.
        let r = vols.attachment_delete(&Asker::ANY, &att_id).await;
        if let Err(e) = r {
            tracing::warn!(volume = %vol_id, error = %e, "recording a detach");
        }
    });
    Ok(empty(StatusCode::ACCEPTED))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AssistedBody {
    snapshot: AssistedSnapshot,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AssistedSnapshot {
    volume_id: String,
    create_info: CreateInfo,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInfo {
    snapshot_id: String,
    #[serde(rename = "type")]
    kind: String,
    new_file: String,
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<String>,
}

/// Whether some server has the volume attached.
async fn attached_anywhere(s: &Compute, volume: &str) -> Result<bool> {
    Ok(match &s.volumes {
        Some(v) => v
            .record(ursa_volume::VOLUME, volume)
            .await?
            .and_then(|r| r.get("attachments").and_then(|a| a.as_array()).cloned())
            .is_some_and(|a| a.iter().any(ursa_volume::attach::shown)),
        None => false,
    })
}

/// `POST /os-assisted-volume-snapshots` (admin or service): Cinder's
/// file-based drivers (NFS, GlusterFS) ask Nova to put a qcow2 overlay on
/// an attached volume's file. Ursa's volumes are blockd devices, which
/// blockd snapshots itself, so there is no file to overlay: as Nova does
/// for a guest whose disk is no such file, the request is checked and
/// accepted (200) and the node does nothing with it.
pub(super) async fn create_assisted_snapshot(
    State(app): State<AppState>,
    auth: Auth,
    bytes: Bytes,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-assisted-volume-snapshots:create")?;
    let s = svc(&app)?;
    let b = parse_body::<AssistedBody>(&bytes)?.snapshot;
    if b.create_info.kind != "qcow2" || b.create_info.new_file.is_empty() {
        return Err(Error::BadRequest(
            "Invalid input for field/attribute create_info: type must be qcow2, new_file a file name."
                .into(),
        ));
    }
    if !attached_anywhere(s, &b.volume_id).await? {
        return Err(Error::NotFound(format!(
            "No volume Block Device Mapping with id {}.",
            b.volume_id
        )));
    }
    Ok(Json(
        json!({"snapshot": {"id": b.create_info.snapshot_id, "volumeId": b.volume_id}}),
    ))
}

/// `DELETE /os-assisted-volume-snapshots/{id}?delete_info=…`: the
/// counterpart of [`create_assisted_snapshot`].
pub(super) async fn delete_assisted_snapshot(
    State(app): State<AppState>,
    auth: Auth,
    q: axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Response> {
    admin_only(&auth, "os_compute_api:os-assisted-volume-snapshots:delete")?;
    let s = svc(&app)?;
    let info: Value = q
        .get("delete_info")
        .and_then(|d| serde_json::from_str(d).ok())
        .ok_or_else(|| Error::BadRequest("delete_info must be given as JSON.".into()))?;
    let volume = info["volume_id"]
        .as_str()
        .ok_or_else(|| Error::BadRequest("delete_info needs a volume_id.".into()))?;
    if !attached_anywhere(s, volume).await? {
        return Err(Error::NotFound(format!(
            "No volume Block Device Mapping with id {volume}."
        )));
    }
    Ok(empty(StatusCode::NO_CONTENT))
}
