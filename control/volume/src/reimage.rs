//! Writing an image onto a volume: the copy a volume made from an image
//! gets, and re-imaging (`os-reimage`, 3.68), which Nova's rebuild of a
//! volume-backed server (2.93) asks for. A re-imaged volume is
//! `downloading` meanwhile (in flight: a controller that dies mid-copy
//! leaves it to the next, which copies again from the start), then goes
//! back to the status it had with the new image's metadata, or to `error`.

use crate::{grpc, st, Volumes, VOLUME};
use serde_json::{json, Map, Value};
use tonic::transport::Channel;
use ursa_core::error::{Error, Result};
use ursa_proto::blockd::v1 as pb;
use ursa_proto::blockd::v1::blockd_client::BlockdClient;

/// The status of a volume being re-imaged.
pub const REIMAGING: &str = "downloading";

impl Volumes {
    /// Copies image `image_id` onto volume `id` over an NBD export of it
    /// (`qemu-img convert -n`, the image's format to raw), then ends the
    /// volume's exports.
    pub(crate) async fn write_image(
        &self,
        c: &mut BlockdClient<Channel>,
        id: &str,
        image_id: &str,
    ) -> std::result::Result<(), String> {
        let copy = self
            .images
            .store
            .local_copy(image_id)
            .await
            .map_err(|e| format!("reading image {image_id}: {e}"))?;
        let fmt = self
            .images
            .get(image_id)
            .await
            .map_err(|e| e.to_string())?
            .map(|i| st(&i, "disk_format").to_string())
            .unwrap_or_else(|| "raw".into());
        let conn = c
            .export_volume(pb::ExportVolumeRequest {
                id: id.to_string(),
                kind: 0,
            })
            .await
            .map_err(grpc)?
            .into_inner();
        let fmt = if fmt == "qcow2" { "qcow2" } else { "raw" };
        let out = tokio::process::Command::new("qemu-img")
            .args(["convert", "-n", "-t", "none", "-f", fmt, "-O", "raw"])
            .arg(&copy.path)
            .arg(&conn.uri)
            .output()
            .await
            .map_err(|e| format!("qemu-img (qemu-utils) is needed for volumes from images: {e}"));
        let _ = c
            .unexport_volume(pb::VolumeRef { id: id.to_string() })
            .await;
        let out = out?;
        if !out.status.success() {
            return Err(format!(
                "copying image {image_id} onto the volume: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Marks volume `id` as being re-imaged with `image_id` and starts the
    /// copy. `from` are the statuses it may be in (the API: `available`
    /// and `error`, and `reserved` when asked; compute, for the root
    /// volume of a server it rebuilds: `in-use`). The image must be active
    /// and fit the volume.
    pub async fn reimage(
        &self,
        id: &str,
        image_id: &str,
        from: &[&str],
    ) -> Result<Map<String, Value>> {
        let img = self.images.get(image_id).await?.ok_or_else(|| {
            Error::BadRequest(format!(
                "Invalid image identifier or unable to access requested image: {image_id}."
            ))
        })?;
        if st(&img, "status") != "active" {
            return Err(Error::BadRequest(format!(
                "Image {image_id} is not active."
            )));
        }
        let need = img
            .get("virtual_size")
            .and_then(|v| v.as_u64())
            .or_else(|| img.get("size").and_then(|v| v.as_u64()))
            .unwrap_or(0);
        let meta = json!({"image_id": image_id,
            "image_name": img.get("name").cloned().unwrap_or(Value::Null),
            "disk_format": img.get("disk_format"), "container_format": img.get("container_format"),
            "checksum": img.get("checksum"), "size": img.get("size")});
        let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
        let img_id = image_id.to_string();
        let vol = self
            .update(VOLUME, id, move |r| {
                let now = st(r, "status").to_string();
                if !from.contains(&now) {
                    return Err(Error::BadRequest(format!(
                        "Invalid volume: Volume status must be {} to reimage, but current status is: {now}.",
                        from.join(" or ")
                    )));
                }
                let size = r.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
                if need > size * crate::GIB {
                    return Err(Error::BadRequest(format!(
                        "Invalid input received: Image {img_id} ({need} bytes) does not fit volume {} ({size} GiB).",
                        st(r, "id")
                    )));
                }
                r.insert("status".into(), json!(REIMAGING));
                r.insert("ursa:reimage_from".into(), json!(now));
                r.insert("ursa:reimage_image".into(), json!(img_id));
                r.insert("ursa:reimage_meta".into(), meta.clone());
                Ok(())
            })
            .await?
            .ok_or_else(|| Error::NotFound(format!("Volume {id} could not be found.")))?;
        Ok(vol)
    }

    /// Carries a marked re-image out: the copy, then the volume's status
    /// and image metadata. Returns what failed.
    pub async fn finish_reimage(&self, vol: Map<String, Value>) -> std::result::Result<(), String> {
        let id = st(&vol, "id").to_string();
        let image = st(&vol, "ursa:reimage_image").to_string();
        let r = match self.node(st(&vol, "ursa:node")) {
            Some(n) => self.write_image(&mut n.client.clone(), &id, &image).await,
            None => Err("the volume's node is not configured".to_string()),
        };
        let r2 = r.clone();
        let done = self
            .update(VOLUME, &id, move |rec| {
                let back = match st(rec, "ursa:reimage_from") {
                    "" | "error" | "reserved" => "available".to_string(),
                    s => s.to_string(),
                };
                let meta = rec.remove("ursa:reimage_meta");
                rec.remove("ursa:reimage_from");
                rec.remove("ursa:reimage_image");
                match &r2 {
                    Ok(()) => {
                        rec.insert("status".into(), json!(back));
                        rec.insert("bootable".into(), json!("true"));
                        if let Some(m) = meta {
                            rec.insert("volume_image_metadata".into(), m);
                        }
                        rec.remove("ursa:error");
                    }
                    Err(e) => {
                        rec.insert("status".into(), json!("error"));
                        rec.insert("ursa:error".into(), json!(format!("re-imaging: {e}")));
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = done {
            tracing::error!(volume = %id, error = %e, "recording a re-image");
        }
        r
    }

    /// [`Self::finish_reimage`] in the background.
    pub fn spawn_reimage(&self, vol: Map<String, Value>) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = st(&vol, "id").to_string();
            if let Err(e) = me.finish_reimage(vol).await {
                tracing::warn!(volume = %id, error = %e, "re-imaging a volume failed");
            }
        });
    }
}
