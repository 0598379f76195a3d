//! Server snapshots: `createImage` and `createBackup` write a server's root
//! disk, flattened, into a new private image (the agent converts the disk
//! and uploads it over HTTP; the image API hashes and keeps the result), and shelving offloads a
//! server into such an image and frees its node, as Nova does;
//! unshelving boots it again from a full copy of that image and deletes it.

use super::{st, BootOpts, Compute, Rec};
use crate::AppState;
use axum::http::Method;
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::internal;

/// Creates the image record (as the caller, through the image API) and
/// marks it saving; returns its id.
async fn new_image(
    app: &AppState,
    s: &Compute,
    tok: &str,
    srv: &Rec,
    name: &str,
    meta: Map<String, Value>,
) -> Result<String> {
    let mut body = json!({"name": name, "disk_format": "qcow2", "container_format": "bare",
        "visibility": "private", "instance_uuid": st(srv, "id"), "image_type": "snapshot",
        "base_image_ref": st(srv, "ursa:image_id")});
    for (k, v) in meta {
        body[k] = v;
    }
    let (status, v) = internal(
        &app.inproc,
        Method::POST,
        "/image/v2/images",
        tok,
        Some(body),
    )
    .await;
    if !status.is_success() {
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or("the image could not be created")
            .to_string();
        return Err(match status.as_u16() {
            400 => Error::BadRequest(msg),
            403 | 413 => Error::Forbidden(msg),
            _ => Error::Internal(msg),
        });
    }
    let id = v["id"].as_str().unwrap_or_default().to_string();
    s.images
        .update(&id, |img| {
            img.insert("status".into(), json!("saving"));
            Ok(())
        })
        .await?;
    Ok(id)
}

/// Has the agent write the disk, then takes it into the image store.
async fn save(s: &Compute, srv: &Rec, image: &str) -> std::result::Result<(), String> {
    let id = st(srv, "id");
    let node = s
        .node(st(srv, "ursa:node"))
        .ok_or("the server's node has no agent")?;
    // The node writes the disk and uploads it through a ticket URL; the
    // image API hashes it, stores it and makes the image active.
    let url = s.images.upload_url(
        &s.image_base,
        image,
        std::time::Duration::from_secs(6 * 3600),
    );
    let r = node.agent.snapshot(id, &url).await;
    if let Err(e) = &r {
        tracing::warn!(server = id, image, error = %e, "snapshot failed");
        // As Glance does with a failed upload: the image goes.
        let _ = s.images.delete(image).await;
    }
    r
}

async fn set_task(s: &Compute, id: &str, task: Option<&'static str>) -> Result<()> {
    s.update(id, move |r| {
        r.insert("OS-EXT-STS:task_state".into(), json!(task));
        Ok(())
    })
    .await
    .map(|_| ())
}

/// `createImage` (and `createBackup`, with its rotation: the backup type
/// and how many such backups of the server to keep): returns the new
/// image's id at once; the data follows.
pub async fn start(
    app: &AppState,
    s: &Compute,
    tok: &str,
    srv: &Rec,
    name: &str,
    meta: Map<String, Value>,
    rotate: Option<(String, usize)>,
) -> Result<String> {
    let image = new_image(app, s, tok, srv, name, meta).await?;
    let id = st(srv, "id").to_string();
    set_task(s, &id, Some("image_snapshot")).await?;
    let (me, srv, img) = (s.clone(), srv.clone(), image.clone());
    tokio::spawn(async move {
        if save(&me, &srv, &img).await.is_ok() {
            if let Some((kind, keep)) = rotate {
                rotate_backups(&me, st(&srv, "tenant_id"), &id, &kind, keep).await;
            }
        }
        if let Err(e) = set_task(&me, &id, None).await {
            tracing::warn!(server = %id, error = %e, "recording the end of a snapshot");
        }
    });
    Ok(image)
}

/// Deletes a server's oldest backups of one type beyond `keep`.
async fn rotate_backups(s: &Compute, project: &str, server: &str, kind: &str, keep: usize) {
    let owned = match s.images.owned_by(project).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(server, error = %e, "reading the backups to rotate");
            return;
        }
    };
    let mut backups: Vec<Rec> = owned
        .into_iter()
        .filter(|i| {
            st(i, "instance_uuid") == server
                && st(i, "image_type") == "backup"
                && st(i, "backup_type") == kind
        })
        .collect();
    backups.sort_by(|a, b| st(b, "created_at").cmp(st(a, "created_at")));
    for old in backups.iter().skip(keep) {
        if let Err(e) = s.images.delete(st(old, "id")).await {
            tracing::warn!(image = st(old, "id"), error = %e, "rotating a backup out");
        }
    }
}

/// `shelve`: snapshot to `<name>-shelved`, then the guest and its disk go
/// (SHELVED_OFFLOADED); the server keeps its ports.
pub async fn shelve(app: &AppState, s: &Compute, tok: &str, srv: &Rec) -> Result<()> {
    let name = format!("{}-shelved", st(srv, "name"));
    let image = new_image(app, s, tok, srv, &name, Map::new()).await?;
    let id = st(srv, "id").to_string();
    set_task(s, &id, Some("shelving")).await?;
    let (me, srv) = (s.clone(), srv.clone());
    tokio::spawn(async move {
        let saved = save(&me, &srv, &image).await;
        if saved.is_ok() {
            if let Some(n) = me.node(st(&srv, "ursa:node")) {
                n.agent.destroy(&id).await;
            }
        }
        let r = me
            .update(&id, move |r| {
                match saved.clone() {
                    Ok(()) => {
                        super::actions::set_state(r, "SHELVED_OFFLOADED", "shelved_offloaded", 4);
                        r.insert("ursa:shelved_image".into(), json!(image));
                    }
                    Err(e) => {
                        r.insert("OS-EXT-STS:task_state".into(), Value::Null);
                        r.insert(
                            "fault".into(),
                            json!({"code": 500, "created": super::now(), "message": e}),
                        );
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(server = %id, error = %e, "recording a shelve");
        }
    });
    Ok(())
}

/// `unshelve`: boots the server from a full copy of its shelved image,
/// which is deleted once the guest runs.
pub async fn unshelve(s: &Compute, srv: &Rec) -> Result<()> {
    let id = st(srv, "id").to_string();
    let image = st(srv, "ursa:shelved_image").to_string();
    if image.is_empty() || s.images.get(&image).await?.is_none() {
        return Err(Error::Conflict(format!(
            "Server {id} has no shelved image to start from."
        )));
    }
    let img2 = image.clone();
    let r = s
        .update(&id, move |r| {
            r.insert("ursa:disk_image_id".into(), json!(img2));
            r.remove("ursa:shelved_image");
            r.insert("OS-EXT-STS:task_state".into(), json!("spawning"));
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("Instance {id} could not be found.")))?;
    s.spawn_boot_with(
        r,
        BootOpts {
            standalone: true,
            delete_image_after: Some(image),
            ..Default::default()
        },
    );
    Ok(())
}
