//! Volume attachments: blockd's vhost-user-blk export, hot-plugged.

use super::*;

/// The volumes attached to a server, as (volume id, device) pairs.
pub(super) async fn attached(s: &Compute, server: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = attachments_of(s, &[server.to_string()])
        .await?
        .into_iter()
        .map(|(_, vol, dev)| (vol, dev))
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// The attachments of these servers as (server id, volume id, device).
pub(super) async fn attachments_of(
    s: &Compute,
    servers: &[String],
) -> Result<Vec<(String, String, String)>> {
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
            if servers.iter().any(|x| x == sid) {
                out.push((
                    sid.to_string(),
                    st(&vol, "id").to_string(),
                    a["device"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    Ok(out)
}

pub(super) fn attachment_view(server: &str, vol: &str, dev: &str) -> Value {
    json!({"id": vol, "serverId": server, "volumeId": vol, "device": dev})
}

pub(super) async fn list_attachments(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let id = param(&p, "id");
    find_server(s, &auth, &id).await?;
    let v: Vec<Value> = attached(s, &id)
        .await?
        .iter()
        .map(|(vol, dev)| attachment_view(&id, vol, dev))
        .collect();
    Ok(Json(json!({"volumeAttachments": v})))
}

/// The image `image_id` if the caller may boot it (admin, public,
/// community or its own) and it is active; 400 otherwise, as Nova says.
pub(crate) fn bootable_image(app: &AppState, auth: &Auth, image_id: &str) -> Result<Rec> {
    let img = app
        .images
        .get(image_id)
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
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let (id, vol) = (param(&p, "id"), param(&p, "volume_id"));
    find_server(s, &auth, &id).await?;
    attached(s, &id)
        .await?
        .into_iter()
        .find(|(v, _)| *v == vol)
        .map(|(v, dev)| Json(json!({"volumeAttachment": attachment_view(&id, &v, &dev)})))
        .ok_or_else(|| Error::NotFound(format!("volume_id not found: {vol}")))
}

pub(super) async fn attach_volume(
    State(app): State<AppState>,
    auth: Auth,
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
    if !matches!(st(&srv, "status"), "ACTIVE" | "SHUTOFF") {
        return Err(Error::Conflict(format!(
            "Cannot 'attach_volume' instance {id} while it is in vm_state {}",
            st(&srv, "status")
        )));
    }
    let node = s
        .node(st(&srv, "ursa:node"))
        .cloned()
        .ok_or_else(|| Error::Conflict("The server has no compute node.".into()))?;
    // Claim the volume: only an available one of the caller's project.
    let project = project(&auth)?;
    let admin = auth.0.is_admin();
    let vid = vol_id.clone();
    let vol = vols
        .update(ursa_volume::VOLUME, &vol_id, move |r| {
            if !admin && st(r, "project_id") != project {
                return Err(Error::NotFound(format!("Volume {vid} could not be found.")));
            }
            if st(r, "status") != "available" {
                return Err(Error::BadRequest(format!(
                    "Invalid volume: volume {vid} status must be available, but current status is: {}",
                    st(r, "status")
                )));
            }
            r.insert("status".into(), json!("attaching"));
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("Volume {vol_id} could not be found.")))?;
    let used: Vec<String> = attached(s, &id)
        .await?
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    let dev = (b'b'..=b'z')
        .map(|c| format!("/dev/vd{}", c as char))
        .find(|d| !used.contains(d))
        .unwrap_or_else(|| "/dev/vdz".into());
    let plugged = async {
        let conn = vols.export(&vol, true).await?;
        node.agent
            .attach_disk(&id, &vol_id, &conn.socket_path)
            .await
            .map_err(Error::Internal)
    }
    .await;
    let (sid, d2) = (id.clone(), dev.clone());
    let host = node.agent.node().to_string();
    let ok = plugged.is_ok();
    let r = vols
        .update(ursa_volume::VOLUME, &vol_id, move |r| {
            match ok {
                true => {
                    r.insert("status".into(), json!("in-use"));
                    r.insert(
                        "attachments".into(),
                        json!([crate::attachment(&sid, st(r, "id"), &d2, &host)]),
                    );
                }
                false => {
                    r.insert("status".into(), json!("available"));
                }
            }
            Ok(())
        })
        .await;
    if let Err(e) = plugged {
        let _ = vols.unexport(&vol).await;
        return Err(e);
    }
    r?;
    Ok(Json(
        json!({"volumeAttachment": attachment_view(&id, &vol_id, &dev)}),
    ))
}

/// `PUT …/os-volume_attachments/{volume}` (swap volume): admins only;
/// the attachment must exist; swapping itself is not offered here.
pub(super) async fn swap_volume(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Response> {
    admin_only(&auth, "os_compute_api:os-volumes-attachments:swap")?;
    let s = svc(&app)?;
    let (id, vol_id) = (param(&p, "id"), param(&p, "volume_id"));
    find_server(s, &auth, &id).await?;
    body_obj(&bytes, "volumeAttachment")?;
    if !attached(s, &id).await?.iter().any(|(v, _)| *v == vol_id) {
        return Err(Error::NotFound(format!("volume_id not found: {vol_id}")));
    }
    Err(Error::Conflict(
        "Swapping a server's volume for another is not supported.".into(),
    ))
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
    if !at.iter().any(|(v, _)| *v == vol_id) {
        return Err(Error::NotFound(format!("volume_id not found: {vol_id}")));
    }
    if at.iter().any(|(v, d)| *v == vol_id && d == "/dev/vda") && crate::volume_backed(&srv) {
        return Err(Error::BadRequest(
            "Cannot detach a root device volume".into(),
        ));
    }
    let vol = vols
        .update(ursa_volume::VOLUME, &vol_id, |r| {
            r.insert("status".into(), json!("detaching"));
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("volume_id not found: {vol_id}")))?;
    // As Nova does: 202 now; the guest lets go of the disk (a guest still
    // booting may take a while), then the volume is available again.
    let node = s.node(st(&srv, "ursa:node")).cloned();
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
        let _ = vols.unexport(&vol).await;
        let r = vols
            .update(ursa_volume::VOLUME, &vol_id, |r| {
                r.insert("status".into(), json!("available"));
                r.insert("attachments".into(), json!([]));
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(volume = %vol_id, error = %e, "recording a detach");
        }
    });
    Ok(empty(StatusCode::ACCEPTED))
}
