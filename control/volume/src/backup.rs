//! Volume backups (Cinder's backup API), kept in object storage.
//!
//! A backup is a record (kind `volume_backup`, a row of `vol_records`) and
//! objects in container `volumebackups` (or the one asked for) of the
//! object service's account `ursa:backups`: one object per [`CHUNK`] of
//! the volume that holds data, `<backup>/<chunk index>`, and a manifest
//! `<backup>/manifest` naming, for every chunk of the volume, the backup
//! whose object holds it (a chunk it does not name reads as zeros).
//!
//! Taking one: blockd snapshots the volume (the backup's *base*, kept
//! until the next backup of the volume is taken), then says which ranges
//! differ from the previous backup's base ([`pb::ChangedExtentsRequest`]:
//! from its thin maps, so nothing unchanged is read) or, for a full
//! backup, which are allocated. Only the chunks those ranges touch are
//! read (streamed from blockd) and stored; an all-zero chunk is stored as
//! an absence. An incremental backup's manifest is its parent's with those
//! chunks replaced. Restoring streams the manifest's chunks into a volume
//! (zeros where it names none, on an existing volume). Deleting a backup
//! deletes the objects it owns; one that an incremental backup depends on
//! cannot be deleted.

use crate::{exists_ok, grpc, now, st, Source, Volumes, GIB, VOLUME};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use ursa_proto::blockd::v1 as pb;

pub const BACKUP: &str = "volume_backup";
/// The object service account backups are kept in.
pub const ACCOUNT: &str = "ursa:backups";
/// Cinder's default container.
pub const CONTAINER: &str = "volumebackups";
/// Bytes per backup object.
pub const CHUNK: u64 = 1 << 20;

type Rec = Map<String, Value>;
type R<T> = std::result::Result<T, String>;

/// What a backup holds: for every chunk with data, the backup whose object
/// has it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The volume's size in bytes.
    pub size: u64,
    pub chunk: u64,
    pub chunks: BTreeMap<u64, String>,
    /// What a restore gives the volume back besides its bytes, as Cinder's
    /// drivers keep it: `metadata`, `bootable`, `volume_image_metadata`.
    #[serde(default)]
    pub volume: Map<String, Value>,
}

fn chunk_name(backup: &str, i: u64) -> String {
    format!("{backup}/{i:010}")
}

fn manifest_name(backup: &str) -> String {
    format!("{backup}/manifest")
}

/// The backup whose manifest and objects `b` reads: itself, unless it was
/// imported from another's exported record (both then share the data).
pub fn data_id(b: &Rec) -> &str {
    match st(b, "ursa:data_id") {
        "" => st(b, "id"),
        d => d,
    }
}

fn container(b: &Rec) -> &str {
    match st(b, "container") {
        "" => CONTAINER,
        c => c,
    }
}

impl Volumes {
    fn objects(&self) -> R<&ursa_object::Objects> {
        self.objects
            .as_ref()
            .ok_or_else(|| "this cloud has no object storage for backups".to_string())
    }

    async fn manifest(&self, b: &Rec) -> R<Manifest> {
        let found = self
            .objects()?
            .get_named(ACCOUNT, container(b), &manifest_name(data_id(b)))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("backup {} has no manifest", data_id(b)))?;
        let bytes = found.read_all().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| format!("backup manifest: {e}"))
    }

    /// Takes backup `b` (stored as `creating`) in the background; `parent`
    /// is the backup an incremental one builds on.
    pub fn spawn_backup(&self, b: Rec, parent: Option<Rec>) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = st(&b, "id").to_string();
            let r = me.take_backup(&b, parent.as_ref()).await;
            if let Err(e) = &r {
                tracing::warn!(backup = %id, error = %e, "backup failed");
            }
            let _ = me
                .update(BACKUP, &id, move |rec| {
                    match &r {
                        Ok(fields) => rec.extend(fields.clone()),
                        Err(e) => {
                            rec.insert("status".into(), json!("error"));
                            rec.insert("fail_reason".into(), json!(e));
                        }
                    }
                    Ok(())
                })
                .await;
        });
    }

    async fn take_backup(&self, b: &Rec, parent: Option<&Rec>) -> R<Rec> {
        let objects = self.objects()?;
        let bid = st(b, "id");
        let vol = self
            .record(VOLUME, st(b, "volume_id"))
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the volume is gone")?;
        let node = self
            .node(st(&vol, "ursa:node"))
            .ok_or("the volume's node is not configured")?;
        let mut c = node.client.clone();
        let base = st(b, "ursa:base_snapshot").to_string();
        let source = match st(b, "snapshot_id") {
            "" => st(&vol, "id"),
            s => s,
        };
        c.create_snapshot(pb::CreateSnapshotRequest {
            volume_id: source.to_string(),
            snapshot_id: base.clone(),
        })
        .await
        .map(|_| ())
        .or_else(exists_ok)?;
        // What changed since the parent's base; with no parent base (a
        // full backup, or a parent whose base went), everything allocated.
        let parent_base = parent
            .map(|p| st(p, "ursa:base_snapshot").to_string())
            .filter(|s| !s.is_empty());
        let mut manifest = match (parent, &parent_base) {
            (Some(p), Some(_)) => self.manifest(p).await?,
            _ => Manifest::default(),
        };
        let changed = c
            .changed_extents(pb::ChangedExtentsRequest {
                id: base.clone(),
                base: parent_base.clone().unwrap_or_default(),
            })
            .await
            .map_err(grpc)?
            .into_inner();
        let size = changed.size_bytes;
        manifest.size = size;
        manifest.volume = ["metadata", "bootable", "volume_image_metadata"]
            .iter()
            .filter_map(|k| vol.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect();
        manifest.chunk = CHUNK;
        let n_chunks = size.div_ceil(CHUNK);
        manifest.chunks.retain(|i, _| *i < n_chunks);
        let mut touched = BTreeSet::new();
        for r in &changed.ranges {
            if r.length == 0 {
                continue;
            }
            touched.extend(r.offset / CHUNK..=(r.offset + r.length - 1) / CHUNK);
        }
        let mut ranges: Vec<pb::ByteRange> = Vec::new();
        for i in &touched {
            let (start, len) = (i * CHUNK, CHUNK.min(size - i * CHUNK));
            match ranges.last_mut() {
                Some(r) if r.offset + r.length == start => r.length += len,
                _ => ranges.push(pb::ByteRange {
                    offset: start,
                    length: len,
                }),
            }
        }
        let cont = container(b).to_string();
        objects
            .ensure_container(ACCOUNT, &cont)
            .await
            .map_err(|e| e.to_string())?;
        let (mut moved, mut count) = (0u64, 0u64);
        if !ranges.is_empty() {
            let mut pieces = c
                .read_volume(pb::ReadVolumeRequest {
                    id: base.clone(),
                    ranges,
                })
                .await
                .map_err(grpc)?
                .into_inner();
            let mut cur: Option<(u64, Vec<u8>)> = None;
            loop {
                let piece = pieces.message().await.map_err(grpc)?;
                // A chunk is complete when the next piece starts another.
                let next_chunk = piece.as_ref().map(|p| p.offset / CHUNK);
                if let Some((i, data)) = cur.take_if(|(i, _)| Some(*i) != next_chunk) {
                    moved += data.len() as u64;
                    if data.iter().all(|b| *b == 0) {
                        manifest.chunks.remove(&i);
                    } else {
                        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(
                            bytes::Bytes::from(data),
                        )]);
                        objects
                            .put_named(ACCOUNT, &cont, &chunk_name(bid, i), body)
                            .await
                            .map_err(|e| e.to_string())?;
                        manifest.chunks.insert(i, bid.to_string());
                        count += 1;
                    }
                }
                let Some(p) = piece else { break };
                match cur.as_mut() {
                    Some((_, data)) => data.extend_from_slice(&p.data),
                    None => cur = Some((p.offset / CHUNK, p.data)),
                }
            }
        }
        let text = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        objects
            .put_named(
                ACCOUNT,
                &cont,
                &manifest_name(bid),
                futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(text))]),
            )
            .await
            .map_err(|e| e.to_string())?;
        // The parent's base served its purpose: this backup's is newer.
        if let (Some(p), Some(pb_id)) = (parent, parent_base) {
            let _ = c.delete_volume(pb::VolumeRef { id: pb_id }).await;
            let _ = self
                .update(BACKUP, st(p, "id"), |r| {
                    r.insert("ursa:base_snapshot".into(), json!(""));
                    Ok(())
                })
                .await;
        }
        tracing::info!(backup = bid, moved, objects = count, "backup taken");
        let mut out = Rec::new();
        out.insert("status".into(), json!("available"));
        out.insert(
            "object_count".into(),
            json!(manifest.chunks.values().filter(|o| *o == bid).count() + 1),
        );
        out.insert("size".into(), json!(size.div_ceil(GIB).max(1)));
        out.insert("ursa:bytes_moved".into(), json!(moved));
        out.insert("data_timestamp".into(), json!(now()));
        Ok(out)
    }

    /// Restores backup `b` onto volume `vol` (`new`: a volume made for it,
    /// whose backing is created first) in the background.
    pub fn spawn_restore(&self, b: Rec, vol: Rec, new: bool) {
        let me = self.clone();
        tokio::spawn(async move {
            let (bid, vid) = (st(&b, "id").to_string(), st(&vol, "id").to_string());
            let r = me.restore(&b, &vol, new).await;
            if let Err(e) = &r {
                tracing::warn!(backup = %bid, volume = %vid, error = %e, "restore failed");
            }
            let _ = me
                .update(VOLUME, &vid, move |rec| match &r {
                    Ok(saved) => {
                        rec.insert("status".into(), json!("available"));
                        for (k, v) in saved {
                            match (k.as_str(), rec.get_mut(k)) {
                                // The volume's own metadata stays; the
                                // backup's is added over it.
                                ("metadata", Some(Value::Object(m))) => {
                                    if let Value::Object(add) = v {
                                        m.extend(add.clone());
                                    }
                                }
                                _ => {
                                    rec.insert(k.clone(), v.clone());
                                }
                            }
                        }
                        Ok(())
                    }
                    Err(_) => {
                        rec.insert("status".into(), json!("error_restoring"));
                        Ok(())
                    }
                })
                .await;
            let _ = me
                .update(BACKUP, &bid, |rec| {
                    rec.insert("status".into(), json!("available"));
                    Ok(())
                })
                .await;
        });
    }

    /// Writes the backup's bytes; what the volume record gets back.
    async fn restore(&self, b: &Rec, vol: &Rec, new: bool) -> R<Map<String, Value>> {
        let objects = self.objects()?.clone();
        let manifest = self.manifest(b).await?;
        let saved = manifest.volume.clone();
        if new {
            self.create_backing(vol, Source::Blank).await?;
        }
        let node = self
            .node(st(vol, "ursa:node"))
            .ok_or("the volume's node is not configured")?;
        let vid = st(vol, "id").to_string();
        let size = manifest.size;
        let cont = container(b).to_string();
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::DataPiece>(4);
        let producer = tokio::spawn(async move {
            let mut first = true;
            let mut zeros: Option<(u64, u64)> = None;
            let piece = |offset: u64, data: Vec<u8>, zero_length: u64, first: &mut bool| {
                let id = if *first { vid.clone() } else { String::new() };
                *first = false;
                pb::DataPiece {
                    id,
                    offset,
                    data,
                    zero_length,
                }
            };
            for i in 0..size.div_ceil(CHUNK) {
                let (off, len) = (i * CHUNK, CHUNK.min(size - i * CHUNK));
                let Some(owner) = manifest.chunks.get(&i) else {
                    // A new volume reads zeros already.
                    if !new {
                        match zeros.as_mut() {
                            Some((o, n)) if *o + *n == off => *n += len,
                            _ => {
                                if let Some((o, n)) = zeros.replace((off, len)) {
                                    let p = piece(o, Vec::new(), n, &mut first);
                                    if tx.send(p).await.is_err() {
                                        return Err("the write stream closed".to_string());
                                    }
                                }
                            }
                        }
                    }
                    continue;
                };
                let found = objects
                    .get_named(ACCOUNT, &cont, &chunk_name(owner, i))
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("chunk {i} of backup {owner} is missing"))?;
                let data = found.read_all().await.map_err(|e| e.to_string())?;
                if tx.send(piece(off, data, 0, &mut first)).await.is_err() {
                    return Err("the write stream closed".to_string());
                }
            }
            if let Some((o, n)) = zeros {
                let _ = tx.send(piece(o, Vec::new(), n, &mut first)).await;
            }
            Ok(())
        });
        let written = node
            .client
            .clone()
            .write_volume(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(grpc);
        let produced = producer
            .await
            .map_err(|e| format!("reading the backup: {e}"))?;
        produced?;
        written.map(|_| saved)
    }

    /// Deletes backup `b`'s objects and base, then its record.
    pub fn spawn_delete_backup(&self, b: Rec) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = st(&b, "id").to_string();
            match me.delete_backup(&b).await {
                Ok(()) => {
                    if let Err(e) = me.forget(BACKUP, &id).await {
                        tracing::error!(error = %e, "forgetting a deleted backup");
                    }
                }
                Err(e) => {
                    let _ = me
                        .update(BACKUP, &id, move |r| {
                            r.insert("status".into(), json!("error_deleting"));
                            r.insert("fail_reason".into(), json!(e));
                            Ok(())
                        })
                        .await;
                }
            }
        });
    }

    /// Whether backup `b`'s data is in object storage (its manifest is).
    pub async fn has_data(&self, b: &Rec) -> bool {
        self.manifest(b).await.is_ok()
    }

    async fn delete_backup(&self, b: &Rec) -> R<()> {
        let bid = data_id(b);
        let objects = self.objects()?;
        let cont = container(b);
        // An imported record shares its data with the one it came from:
        // the data goes with the last record that reads it.
        let of = crate::record_table::Filter {
            volume: Some(st(b, "volume_id").to_string()),
            ..Default::default()
        };
        let shared = self
            .records(BACKUP, &of)
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .any(|o| st(o, "id") != st(b, "id") && data_id(o) == bid);
        if !shared {
            if let Ok(m) = self.manifest(b).await {
                for (i, owner) in &m.chunks {
                    if owner == bid {
                        objects
                            .delete_named(ACCOUNT, cont, &chunk_name(bid, *i))
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
            objects
                .delete_named(ACCOUNT, cont, &manifest_name(bid))
                .await
                .map_err(|e| e.to_string())?;
        }
        let base = st(b, "ursa:base_snapshot");
        if !base.is_empty() {
            let vol = self.record(VOLUME, st(b, "volume_id")).await.ok().flatten();
            let node = vol.and_then(|v| self.node(st(&v, "ursa:node")));
            if let Some(n) = node {
                match n
                    .client
                    .clone()
                    .delete_volume(pb::VolumeRef {
                        id: base.to_string(),
                    })
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.code() == tonic::Code::NotFound => {}
                    Err(e) => return Err(grpc(e)),
                }
            }
        }
        let parent = st(b, "ursa:parent_id");
        if !parent.is_empty() {
            let _ = self
                .update(BACKUP, parent, |r| {
                    r.insert("has_dependent_backups".into(), json!(false));
                    Ok(())
                })
                .await;
        }
        Ok(())
    }
}
