//! Background work that outlives the controller that started it.
//!
//! A volume or snapshot change is stored first, in a status a background
//! task then carries to its end (`creating`, `deleting`, `extending`), on
//! the controller that took the request. Every such record names that
//! controller (`ursa:task_by`, stamped by [`Volumes::put`] and
//! [`Volumes::update`]); every controller holds a lease saying it is
//! alive (`ursa_core::duty::alive_lease`). The controller holding the
//! `volume-tasks` duty looks, every few seconds, for records in such a
//! status whose controller is no longer alive (killed, even by SIGKILL),
//! claims each one (naming itself, through the single writer, so that one
//! controller takes it) and does the work again. The work is safe to do
//! twice: a create that finds its volume made, or a delete that finds it
//! gone, carries on.

use super::{st, Source, Volumes, SNAPSHOT, VOLUME};
use serde_json::{json, Map, Value};
use std::time::Duration;
use ursa_core::duty::Duty;

/// The statuses a background task carries a record out of.
pub const IN_FLIGHT: &[&str] = &[
    "creating",
    "deleting",
    "extending",
    "uploading",
    crate::reimage::REIMAGING,
];

/// How often the duty's holder looks for work left by a dead controller.
pub const SWEEP: Duration = Duration::from_secs(3);

/// Names `controller` on a record a task of its is about to carry on.
pub fn stamp(rec: &mut Map<String, Value>, controller: &str) {
    if IN_FLIGHT.contains(&st(rec, "status")) {
        rec.insert("ursa:task_by".into(), json!(controller));
    }
}

/// Where a volume in `creating` is made from, as its record says.
fn source_of(v: &Map<String, Value>) -> Source {
    if let Some(s) = v.get("snapshot_id").and_then(|x| x.as_str()) {
        return Source::Copy(s.to_string());
    }
    if let Some(s) = v.get("source_volid").and_then(|x| x.as_str()) {
        return Source::Copy(s.to_string());
    }
    match v
        .get("volume_image_metadata")
        .and_then(|m| m.get("image_id"))
        .and_then(|i| i.as_str())
    {
        Some(i) => Source::Image(i.to_string()),
        None => Source::Blank,
    }
}

impl Volumes {
    /// Takes over, while `duty` is held, the work of controllers that died.
    pub fn spawn_recovery(&self, duty: Duty) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                duty.wait_held().await;
                me.recover_once().await;
                tokio::time::sleep(SWEEP).await;
            }
        })
    }

    /// One sweep: the records left in flight by dead controllers, each
    /// claimed and carried on. Returns how many were taken over.
    pub async fn recover_once(&self) -> usize {
        let store = self.identity.store().clone();
        let mut taken = 0;
        for kind in [VOLUME, SNAPSHOT, crate::backup::BACKUP] {
            let in_flight = super::record_table::Filter {
                status: IN_FLIGHT.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            let left: Vec<Map<String, Value>> = match self.records(kind, &in_flight).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "volume tasks could not read the records");
                    continue;
                }
            };
            let left: Vec<Map<String, Value>> = left
                .into_iter()
                .filter(|r| st(r, "ursa:task_by") != self.controller)
                .collect();
            for r in left {
                let by = st(&r, "ursa:task_by").to_string();
                match ursa_core::duty::is_alive(&store, &by).await {
                    Ok(false) => {}
                    Ok(true) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not tell whether a controller is alive");
                        return taken;
                    }
                }
                let id = st(&r, "id").to_string();
                // Claimed through the single writer: one controller wins.
                let claimed = self
                    .update(kind, &id, |rec| {
                        if st(rec, "ursa:task_by") == by && IN_FLIGHT.contains(&st(rec, "status")) {
                            Ok(())
                        } else {
                            Err(ursa_core::error::Error::Conflict("taken".into()))
                        }
                    })
                    .await;
                let Ok(Some(rec)) = claimed else { continue };
                tracing::info!(kind, %id, status = st(&rec, "status"), dead = %by,
                    "carrying on a volume task a stopped controller left");
                self.resume(kind, rec).await;
                taken += 1;
            }
        }
        taken
    }

    async fn resume(&self, kind: &'static str, rec: Map<String, Value>) {
        let id = st(&rec, "id").to_string();
        match (kind, st(&rec, "status")) {
            (crate::backup::BACKUP, "deleting") => self.spawn_delete_backup(rec),
            (crate::backup::BACKUP, "creating") => {
                // Taken again from the start: the same base snapshot and
                // object names, so what the stopped attempt stored is
                // overwritten.
                let parent = match st(&rec, "ursa:parent_id") {
                    "" => None,
                    p => self.record(crate::backup::BACKUP, p).await.ok().flatten(),
                };
                self.spawn_backup(rec, parent);
            }
            (_, "deleting") => self.spawn_delete(kind, rec),
            (VOLUME, "creating") => {
                let source = source_of(&rec);
                self.spawn_create(rec, source);
            }
            (VOLUME, "extending") => match rec.get("ursa:extend_to").and_then(|v| v.as_u64()) {
                Some(gib) => self.spawn_extend(rec, gib),
                None => {
                    self.settle(
                        kind,
                        &id,
                        Err("the controller extending it stopped; extend it again".into()),
                    )
                    .await
                }
            },
            (VOLUME, "uploading") => {
                // The image a dead controller was writing goes (as a
                // failed upload's does); the volume is as it was.
                if let Some(img) = rec.get("ursa:upload_image").and_then(|v| v.as_str()) {
                    let _ = self.images.delete(img).await;
                }
                self.end_upload(&id).await;
            }
            // Copied again from the start.
            (VOLUME, crate::reimage::REIMAGING) => self.spawn_reimage(rec),
            (SNAPSHOT, "creating") => {
                let host = self
                    .record(VOLUME, st(&rec, "volume_id"))
                    .await
                    .ok()
                    .flatten()
                    .map(|v| st(&v, "ursa:node").to_string())
                    .unwrap_or_default();
                self.spawn_snapshot(rec, host);
            }
            _ => {}
        }
    }
}
