//! Attachments: Cinder's attachments API (3.27) and what compute attaches
//! a volume with, one set of steps for both, as Nova uses Cinder.
//!
//! An attachment is an entry of its volume's `attachments` (so a volume
//! and its attachments change in one write) with a row of its own in
//! `vol_attachment_rows` (found by id, listed by project, volume, server,
//! status). Its life, as Cinder's:
//!
//! 1. **create** (reserve): attach status `reserved`; the volume
//!    `reserved` (an available volume, or any not-busy multiattach one);
//! 2. **update** with a connector: the volume is exported on its blockd
//!    node (NBD, or vhost-user-blk when the connector asks
//!    `ursa_vhost_user`), the connection info kept on the attachment;
//!    `attaching`;
//! 3. **complete**: `attached`; the volume `in-use`;
//! 4. **delete**: the entry goes; with none left attaching or attached the
//!    export ends, and the volume is `available` again (or `reserved`
//!    while another reservation remains).
//!
//! A volume's Cinder view lists only `attached` entries, as Cinder's does.

use crate::{now, st, Volumes, VOLUME};
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};

type Rec = Map<String, Value>;

/// Who asks: a project (only its volumes) or an admin (any).
#[derive(Clone, Debug)]
pub struct Asker {
    pub project: Option<String>,
    pub admin: bool,
}

impl Asker {
    /// The service itself (compute letting go of a server's volumes).
    pub const ANY: Asker = Asker {
        project: None,
        admin: true,
    };

    fn sees(&self, vol: &Rec) -> bool {
        self.admin || self.project.as_deref() == Some(st(vol, "project_id"))
    }
}

/// An entry's attach status (entries written before the attachments API
/// had none: they were attached).
pub fn status_of(a: &Value) -> &str {
    a["ursa:status"].as_str().unwrap_or("attached")
}

/// Whether a volume's Cinder view lists the entry.
pub fn shown(a: &Value) -> bool {
    status_of(a) == "attached"
}

fn entries(vol: &Rec) -> Vec<Value> {
    vol.get("attachments")
        .and_then(|a| a.as_array())
        .cloned()
        .unwrap_or_default()
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("Attachment {id} could not be found."))
}

/// The volume status that its remaining entries call for.
fn settled_status(list: &[Value]) -> &'static str {
    if list.iter().any(|a| status_of(a) == "attached") {
        "in-use"
    } else if list.iter().any(|a| status_of(a) == "attaching") {
        "attaching"
    } else if list.is_empty() {
        "available"
    } else {
        "reserved"
    }
}

impl Volumes {
    /// An attachment and its volume, if the asker may see them.
    pub async fn attachment(&self, asker: &Asker, id: &str) -> Result<(Rec, Value)> {
        let vol_id = crate::record_table::attachment_volume(&mut *self.conn().await?, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let vol = self
            .record(VOLUME, &vol_id)
            .await?
            .filter(|v| asker.sees(v))
            .ok_or_else(|| not_found(id))?;
        let a = entries(&vol)
            .into_iter()
            .find(|a| a["attachment_id"] == id)
            .ok_or_else(|| not_found(id))?;
        Ok((vol, a))
    }

    /// Reserves a volume for `instance` (step 1); the new entry.
    pub async fn attachment_create(
        &self,
        asker: &Asker,
        volume_id: &str,
        instance: &str,
        mode: &str,
    ) -> Result<Value> {
        let aid = uuid::Uuid::new_v4().to_string();
        let (asker, vid, inst, mode2, aid2) = (
            asker.clone(),
            volume_id.to_string(),
            instance.to_string(),
            mode.to_string(),
            aid.clone(),
        );
        let vol = self
            .update(VOLUME, volume_id, move |r| {
                if !asker.sees(r) {
                    return Err(Error::NotFound(format!("Volume {vid} could not be found.")));
                }
                let list = entries(r);
                let multi = r.get("multiattach") == Some(&json!(true));
                let status = st(r, "status");
                let free = status == "available"
                    || (multi && matches!(status, "in-use" | "reserved" | "attaching"));
                if !free {
                    return Err(Error::BadRequest(format!(
                        "Invalid volume: Volume {vid} status must be available or in-use (multiattach) to reserve, but the current status is: {status}."
                    )));
                }
                if list.iter().any(|a| a["server_id"] == inst.as_str()) {
                    return Err(Error::BadRequest(format!(
                        "Invalid volume: Volume {vid} is already attached to {inst}."
                    )));
                }
                let t = now();
                let entry = json!({"id": vid, "attachment_id": aid2, "volume_id": vid,
                                   "server_id": inst, "host_name": null, "device": null,
                                   "attached_at": null, "ursa:status": "reserved",
                                   "ursa:mode": mode2, "ursa:created_at": t});
                let mut list = list;
                list.push(entry);
                if status == "available" {
                    r.insert("status".into(), json!("reserved"));
                }
                r.insert("attachments".into(), Value::Array(list));
                Ok(())
            })
            .await?
            .ok_or_else(|| Error::NotFound(format!("Volume {volume_id} could not be found.")))?;
        entries(&vol)
            .into_iter()
            .find(|a| a["attachment_id"] == aid.as_str())
            .ok_or_else(|| not_found(&aid))
    }

    /// Connects a reserved (or connected) attachment for `connector`
    /// (step 2): the volume is exported; the entry with its connection
    /// info.
    pub async fn attachment_update(
        &self,
        asker: &Asker,
        id: &str,
        connector: &Map<String, Value>,
    ) -> Result<Value> {
        let (vol, _) = self.attachment(asker, id).await?;
        let vhost = connector.get("ursa_vhost_user") == Some(&json!(true));
        let c = self.export(&vol, vhost).await?;
        let info = json!({"driver_volume_type": c.driver_volume_type,
                          "data": {"export_name": c.export_name, "uri": c.uri,
                                   "socket_path": c.socket_path, "host": c.host, "port": c.port,
                                   "access_mode": "rw"}});
        let (aid, conn) = (id.to_string(), connector.clone());
        let vol = self
            .update(VOLUME, st(&vol, "id"), move |r| {
                let mut list = entries(r);
                let a = list
                    .iter_mut()
                    .find(|a| a["attachment_id"] == aid.as_str())
                    .ok_or_else(|| not_found(&aid))?;
                if status_of(a) == "reserved" {
                    a["ursa:status"] = json!("attaching");
                }
                let mut data = info.clone();
                data["data"]["access_mode"] = a["ursa:mode"].clone();
                a["ursa:connection_info"] = data;
                a["ursa:connector"] = Value::Object(conn.clone());
                if let Some(h) = conn.get("host") {
                    a["host_name"] = h.clone();
                }
                if let Some(m) = conn.get("mountpoint") {
                    a["device"] = m.clone();
                }
                let status = settled_status(&list);
                r.insert("status".into(), json!(status));
                r.insert("attachments".into(), Value::Array(list));
                Ok(())
            })
            .await?
            .ok_or_else(|| not_found(id))?;
        entries(&vol)
            .into_iter()
            .find(|a| a["attachment_id"] == id)
            .ok_or_else(|| not_found(id))
    }

    /// Marks an attachment attached (step 3), with what the attacher
    /// keeps on it (`extra`: compute's device, tag, delete-on-termination).
    pub async fn attachment_complete(
        &self,
        asker: &Asker,
        id: &str,
        extra: Map<String, Value>,
    ) -> Result<Value> {
        let (vol, _) = self.attachment(asker, id).await?;
        let aid = id.to_string();
        let vol = self
            .update(VOLUME, st(&vol, "id"), move |r| {
                let mut list = entries(r);
                let a = list
                    .iter_mut()
                    .find(|a| a["attachment_id"] == aid.as_str())
                    .ok_or_else(|| not_found(&aid))?;
                a["ursa:status"] = json!("attached");
                if a["attached_at"].is_null() {
                    a["attached_at"] = json!(now());
                }
                for (k, v) in &extra {
                    a[k.as_str()] = v.clone();
                }
                r.insert("status".into(), json!("in-use"));
                r.insert("attachments".into(), Value::Array(list));
                Ok(())
            })
            .await?
            .ok_or_else(|| not_found(id))?;
        entries(&vol)
            .into_iter()
            .find(|a| a["attachment_id"] == id)
            .ok_or_else(|| not_found(id))
    }

    /// Removes an attachment (step 4); the volume afterwards. The export
    /// ends when no other attachment is connected.
    pub async fn attachment_delete(&self, asker: &Asker, id: &str) -> Result<Rec> {
        let (vol, _) = self.attachment(asker, id).await?;
        let aid = id.to_string();
        let vol = self
            .update(VOLUME, st(&vol, "id"), move |r| {
                let mut list = entries(r);
                list.retain(|a| a["attachment_id"] != aid.as_str());
                let status = st(r, "status");
                // A volume being deleted or in error keeps that status.
                if matches!(
                    status,
                    "reserved" | "attaching" | "in-use" | "detaching" | "available"
                ) {
                    r.insert("status".into(), json!(settled_status(&list)));
                }
                r.insert("attachments".into(), Value::Array(list));
                Ok(())
            })
            .await?
            .ok_or_else(|| not_found(id))?;
        let connected = entries(&vol)
            .iter()
            .any(|a| matches!(status_of(a), "attaching" | "attached"));
        if !connected {
            if let Err(e) = self.unexport(&vol).await {
                tracing::warn!(volume = st(&vol, "id"), error = %e, "ending an export");
            }
        }
        Ok(vol)
    }

    /// The attachment of `volume` to `server`, if any.
    pub async fn attachment_of(&self, volume: &str, server: &str) -> Result<Option<Value>> {
        Ok(self
            .record(VOLUME, volume)
            .await?
            .and_then(|v| entries(&v).into_iter().find(|a| a["server_id"] == server)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_status_follows_its_attachments() {
        let a = |s: &str| json!({"ursa:status": s});
        assert_eq!(settled_status(&[]), "available");
        assert_eq!(settled_status(&[a("reserved")]), "reserved");
        assert_eq!(
            settled_status(&[a("reserved"), a("attaching")]),
            "attaching"
        );
        assert_eq!(settled_status(&[a("attaching"), a("attached")]), "in-use");
        // An entry from before the attachments API is attached.
        assert_eq!(settled_status(&[json!({"server_id": "s"})]), "in-use");
        assert!(shown(&json!({})) && !shown(&a("reserved")));
    }
}
