//! A volume into a new image (`os-volume_upload_image`): the volume's
//! bytes are read over its NBD export with `qemu-img convert` into the
//! image's disk format, and the result is taken into the image store
//! (hashed, made `active`). The volume is `uploading` meanwhile and goes
//! back to the status it had (`ursa:upload_from`); an upload that fails,
//! or that a dead controller left, deletes its image, as Cinder does.

use crate::{st, Volumes, VOLUME};
use serde_json::{json, Map, Value};
use ursa_proto::blockd::v1 as pb;

impl Volumes {
    /// Writes the volume into image `image` (already created, `saving`)
    /// in `disk_format`, in the background.
    pub fn spawn_upload(&self, vol: Map<String, Value>, image: String, disk_format: String) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = st(&vol, "id").to_string();
            let r = me.upload(&vol, &image, &disk_format).await;
            if let Err(e) = &r {
                tracing::warn!(volume = %id, %image, error = %e, "uploading a volume failed");
                let _ = me.images.delete(&image).await;
            }
            me.end_upload(&id).await;
        });
    }

    /// Puts an uploading volume back in the status it had.
    pub(crate) async fn end_upload(&self, id: &str) {
        let r = self
            .update(VOLUME, id, |r| {
                if st(r, "status") == "uploading" {
                    let back = match st(r, "ursa:upload_from") {
                        "" => "available".to_string(),
                        s => s.to_string(),
                    };
                    r.insert("status".into(), json!(back));
                }
                r.remove("ursa:upload_from");
                r.remove("ursa:upload_image");
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::error!(volume = id, error = %e, "recording the end of an upload");
        }
    }

    async fn upload(
        &self,
        vol: &Map<String, Value>,
        image: &str,
        disk_format: &str,
    ) -> std::result::Result<(), String> {
        let id = st(vol, "id").to_string();
        let node = self
            .node(st(vol, "ursa:node"))
            .ok_or("the volume's node is not configured")?;
        let mut c = node.client.clone();
        let conn = c
            .export_volume(pb::ExportVolumeRequest {
                id: id.clone(),
                kind: 0,
            })
            .await
            .map_err(|e| format!("exporting the volume: {}", e.message()))?
            .into_inner();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out_file = dir.path().join("image");
        let out = tokio::process::Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", disk_format])
            .arg(&conn.uri)
            .arg(&out_file)
            .output()
            .await
            .map_err(|e| format!("qemu-img (qemu-utils) is needed to upload volumes: {e}"));
        // An attached volume keeps its export (the guest's).
        if st(vol, "ursa:upload_from") != "in-use" {
            let _ = c.unexport_volume(pb::VolumeRef { id: id.clone() }).await;
        }
        let out = out?;
        if !out.status.success() {
            return Err(format!(
                "converting the volume: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        self.images
            .import_file(image, &out_file)
            .await
            .map_err(|e| e.to_string())
    }
}
