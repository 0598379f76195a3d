//! The volume service (Cinder v3): volumes, snapshots, volume types and
//! quotas, placed on blockd nodes and driven over their gRPC API.
//!
//! A change is stored first (status `creating`, `extending`, `deleting`),
//! then carried out on the volume's blockd node by a background task that
//! records the outcome (`available`, or `error` with the reason). Volumes,
//! snapshots, backups, transfers, groups, group snapshots and user messages
//! are rows of `vol_records` ([`record_table`]); volume types, QoS specs,
//! group types, default types and quotas are documents, all written through
//! the control plane's single writer. The [`scheduler`] puts a new volume
//! on a node whose capabilities meet its type's extra specs, the one with
//! the most free pool space (a volume from a snapshot or another volume
//! goes where its source is: clones share chunks). A volume from an image
//! is filled the way Cinder does it: `qemu-img convert` of the image (raw
//! or qcow2) onto the volume's NBD export ([`reimage`], which also writes
//! a new image over a volume); [`upload`] goes the other way.
//! Attachments ([`attach`]) are Cinder's steps, which compute uses too.
//! Backups ([`backup`]) go into object storage, incremental from blockd's
//! thin maps.

pub mod api;
pub mod attach;
pub mod backup;
pub mod record_table;
pub mod reimage;
pub mod scheduler;
pub mod tasks;
pub mod upload;

use serde_json::{json, Map, Value};
use tonic::transport::Channel;
use ursa_core::error::{Error, Result};
use ursa_core::store::Op;
use ursa_identity::Identity;
use ursa_proto::blockd::v1 as pb;
use ursa_proto::blockd::v1::blockd_client::BlockdClient;

pub const VOLUME: &str = "volume";
pub const SNAPSHOT: &str = "volume_snapshot";
pub const TYPE: &str = "volume_type";
pub const QUOTA: &str = "volume_quota";
pub const GIB: u64 = 1 << 30;
pub const DEFAULT_TYPE_ID: &str = "00000000-0000-4000-8000-00000000d3f7";
pub const DEFAULT_TYPE: &str = "__DEFAULT__";
pub const ZONE: &str = "nova";
/// A blockd node's `cinder-volume` state (disabled, frozen), by host.
pub const SERVICE: &str = "volume_service";
/// Volume transfers (rows of `vol_records`).
pub const TRANSFER: &str = "volume_transfer";
/// Generic volume groups and their snapshots (rows of `vol_records`), and
/// group types (documents).
pub const GROUP: &str = "volume_group";
pub const GROUP_SNAPSHOT: &str = "group_snapshot";
pub const GROUP_TYPE: &str = "group_type";
pub const DEFAULT_GROUP_TYPE: &str = "default_group_type";
/// User messages (rows of `vol_records`).
pub const MESSAGE: &str = "volume_message";

/// Per-project limits (Cinder's defaults).
pub const QUOTA_VOLUMES: u64 = 10;
pub const QUOTA_SNAPSHOTS: u64 = 10;
pub const QUOTA_GIGABYTES: u64 = 1000;

/// A blockd node the service places volumes on.
#[derive(Clone)]
pub struct Node {
    pub name: String,
    pub client: BlockdClient<Channel>,
}

/// Connects to blockd at `unix:/path` or `http://host:port`.
pub async fn connect(endpoint: &str) -> std::result::Result<BlockdClient<Channel>, String> {
    ursa_core::rpc::connect(endpoint)
        .await
        .map(BlockdClient::new)
}

/// What the volume API's handlers share.
#[derive(Clone)]
pub struct AppState {
    pub identity: ursa_identity::Identity,
    pub images: ursa_image::Images,
    /// Absent when no storage node is configured or reachable.
    pub volumes: Option<Volumes>,
    /// Base URL clients reach us at, without a trailing slash.
    pub base_url: String,
}

impl ursa_core::http::Authenticate for AppState {
    fn authenticate(&self, token: &str) -> ursa_core::error::Result<ursa_core::policy::Caller> {
        self.identity.caller(token)
    }
}

#[derive(Clone)]
pub struct Volumes {
    pub identity: Identity,
    pub nodes: Vec<Node>,
    /// Where image data is (for volumes from images).
    pub images: ursa_image::Images,
    /// This controller's name in the leases (see [`tasks`]): a record this
    /// controller puts in a status that a background task carries on
    /// (`creating`, `deleting`, `extending`) names it as `ursa:task_by`.
    pub controller: String,
    /// Where backups are kept (none: no backup service).
    pub objects: Option<ursa_object::Objects>,
}

pub fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

pub fn st<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(|v| v.as_str()).unwrap_or("")
}

fn grpc(e: tonic::Status) -> String {
    format!("blockd: {} ({:?})", e.message(), e.code())
}

/// blockd's "already exists" is success for a create that may be a
/// second attempt at the same id.
fn exists_ok(e: tonic::Status) -> std::result::Result<(), String> {
    if e.code() == tonic::Code::AlreadyExists {
        Ok(())
    } else {
        Err(grpc(e))
    }
}

impl Volumes {
    /// The documents of a kind that is not a row (types, quotas).
    pub fn docs(&self, kind: &str) -> Vec<Map<String, Value>> {
        debug_assert!(!record_table::is_row(kind), "{kind} records are rows");
        self.identity
            .model()
            .docs_of(kind)
            .filter_map(|v| v.as_object().cloned())
            .collect()
    }

    /// A document of a kind that is not a row (types, quotas).
    pub fn doc(&self, kind: &str, id: &str) -> Option<Map<String, Value>> {
        debug_assert!(!record_table::is_row(kind), "{kind} records are rows");
        self.identity
            .model()
            .doc(kind, id)
            .and_then(|v| v.as_object().cloned())
    }

    /// A connection for reads of the volume tables.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.identity.store().conn().await?)
    }

    /// A volume or snapshot.
    pub async fn record(&self, kind: &str, id: &str) -> Result<Option<Map<String, Value>>> {
        record_table::get(&mut *self.conn().await?, kind, id).await
    }

    /// The volumes or snapshots a filter selects.
    pub async fn records(
        &self,
        kind: &str,
        f: &record_table::Filter,
    ) -> Result<Vec<Map<String, Value>>> {
        record_table::select(&mut *self.conn().await?, kind, f).await
    }

    /// The volumes attached to any of these servers.
    pub async fn attached_to(&self, servers: &[String]) -> Result<Vec<Map<String, Value>>> {
        record_table::attached_to(&mut *self.conn().await?, servers).await
    }

    /// Stores a record whole.
    pub async fn put(&self, kind: &'static str, mut rec: Map<String, Value>) -> Result<()> {
        tasks::stamp(&mut rec, &self.controller);
        let id = st(&rec, "id").to_string();
        let mut w = self.identity.write().await?;
        if record_table::is_row(kind) {
            record_table::put(w.tx(), kind, &rec).await?;
            return w.commit(&[]).await;
        }
        w.commit(&[Op::put(kind, &id, "", &id, Value::Object(rec))])
            .await
    }

    /// Changes a record inside one write; `None` if it is gone.
    pub async fn update(
        &self,
        kind: &'static str,
        id: &str,
        mut f: impl FnMut(&mut Map<String, Value>) -> Result<()>,
    ) -> Result<Option<Map<String, Value>>> {
        let mut w = self.identity.write().await?;
        let found = if record_table::is_row(kind) {
            record_table::get(w.tx().conn(), kind, id).await?
        } else {
            w.model().doc(kind, id).and_then(|v| v.as_object().cloned())
        };
        let Some(mut rec) = found else {
            return Ok(None);
        };
        f(&mut rec)?;
        rec.insert("updated_at".into(), json!(now()));
        tasks::stamp(&mut rec, &self.controller);
        if record_table::is_row(kind) {
            record_table::put(w.tx(), kind, &rec).await?;
            w.commit(&[]).await?;
        } else {
            w.commit(&[Op::put(kind, id, "", id, Value::Object(rec.clone()))])
                .await?;
        }
        Ok(Some(rec))
    }

    pub async fn forget(&self, kind: &'static str, id: &str) -> Result<()> {
        let mut w = self.identity.write().await?;
        if record_table::is_row(kind) {
            record_table::delete(w.tx(), kind, id).await?;
            return w.commit(&[]).await;
        }
        w.commit(&[Op::delete(kind, id)]).await
    }

    /// Records an outcome of background work: a status (and an error
    /// reason for `error`).
    async fn settle(
        &self,
        kind: &'static str,
        id: &str,
        r: std::result::Result<Map<String, Value>, String>,
    ) {
        let res = self
            .update(kind, id, move |rec| {
                match r.clone() {
                    Ok(fields) => {
                        for (k, v) in fields {
                            rec.insert(k, v);
                        }
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, "volume operation failed");
                        rec.insert("status".into(), json!("error"));
                        rec.insert("ursa:error".into(), json!(reason));
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "recording a volume outcome");
        }
    }

    pub fn node(&self, name: &str) -> Option<Node> {
        self.nodes.iter().find(|n| n.name == name).cloned()
    }

    /// The node with the most free space that fits `bytes`.
    /// Whether new volumes may go to node `name` (its service neither
    /// disabled nor frozen).
    pub fn takes_volumes(&self, name: &str) -> bool {
        let doc = self
            .doc(SERVICE, &format!("{name}@blockd"))
            .unwrap_or_default();
        doc.get("disabled") != Some(&json!(true)) && doc.get("frozen") != Some(&json!(true))
    }

    pub async fn schedule(&self, bytes: u64) -> Result<Node> {
        let mut best: Option<(u64, Node)> = None;
        for n in self.nodes.iter().filter(|n| self.takes_volumes(&n.name)) {
            let Ok(r) = n.client.clone().get_pools(pb::GetPoolsRequest {}).await else {
                continue;
            };
            let free = r
                .into_inner()
                .pools
                .iter()
                .map(|p| p.free_bytes)
                .max()
                .unwrap_or(0);
            let _ = bytes; // thin: what fits is decided by what gets written
            if best.as_ref().is_none_or(|(f, _)| free > *f) {
                best = Some((free, n.clone()));
            }
        }
        best.map(|(_, n)| n)
            .ok_or_else(|| Error::Internal("no blockd node is reachable to hold the volume".into()))
    }

    /// Creates a volume's backing on its node, filled from its source;
    /// runs in the background after the record is stored.
    pub fn spawn_create(&self, vol: Map<String, Value>, source: Source) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = st(&vol, "id").to_string();
            let r = me.create_backing(&vol, source).await;
            me.settle(
                VOLUME,
                &id,
                r.map(|()| {
                    let mut m = Map::new();
                    m.insert("status".into(), json!("available"));
                    m
                }),
            )
            .await;
        });
    }

    pub(crate) async fn create_backing(
        &self,
        vol: &Map<String, Value>,
        source: Source,
    ) -> std::result::Result<(), String> {
        let id = st(vol, "id").to_string();
        let size = vol.get("size").and_then(|v| v.as_u64()).unwrap_or(1) * GIB;
        let node = self
            .node(st(vol, "ursa:node"))
            .ok_or("the volume's node is not configured")?;
        let mut c = node.client.clone();
        // Limits of its type's back-end QoS spec (see `api::qos`).
        let qos = vol
            .get("ursa:qos")
            .filter(|q| q.is_object())
            .map(|q| pb::Qos {
                iops: q["iops"].as_u64().unwrap_or(0),
                bytes_per_second: q["bytes_per_second"].as_u64().unwrap_or(0),
            });
        match &source {
            Source::Blank | Source::Image(_) => {
                // Made already by an attempt another controller left.
                c.create_volume(pb::CreateVolumeRequest {
                    id: id.clone(),
                    size_bytes: size,
                    pool: String::new(),
                    qos,
                })
                .await
                .map(|_| ())
                .or_else(exists_ok)?;
            }
            Source::Copy(src) => {
                c.clone_volume(pb::CloneVolumeRequest {
                    source_id: src.clone(),
                    id: id.clone(),
                })
                .await
                .map(|_| ())
                .or_else(exists_ok)?;
                let cur = c
                    .get_volume(pb::VolumeRef { id: id.clone() })
                    .await
                    .map_err(grpc)?
                    .into_inner()
                    .size_bytes;
                if cur < size {
                    c.resize_volume(pb::ResizeVolumeRequest {
                        id: id.clone(),
                        size_bytes: size,
                    })
                    .await
                    .map_err(grpc)?;
                }
                if let Some(q) = qos {
                    c.set_volume_qos(pb::SetVolumeQosRequest {
                        id: id.clone(),
                        qos: Some(q),
                    })
                    .await
                    .map_err(grpc)?;
                }
            }
        }
        if let Source::Image(image_id) = source {
            self.write_image(&mut c, &id, &image_id).await?;
        }
        Ok(())
    }

    /// Deletes the backing of a volume or snapshot, then the record.
    pub fn spawn_delete(&self, kind: &'static str, rec: Map<String, Value>) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = st(&rec, "id").to_string();
            let host = match kind {
                VOLUME => st(&rec, "ursa:node").to_string(),
                _ => me
                    .record(VOLUME, st(&rec, "volume_id"))
                    .await
                    .ok()
                    .flatten()
                    .map(|v| st(&v, "ursa:node").to_string())
                    .unwrap_or_else(|| st(&rec, "ursa:host").to_string()),
            };
            let r = match me.node(&host) {
                Some(n) => {
                    let mut c = n.client.clone();
                    let _ = c.unexport_volume(pb::VolumeRef { id: id.clone() }).await;
                    // Gone already: an attempt another controller left.
                    match c.delete_volume(pb::VolumeRef { id: id.clone() }).await {
                        Ok(_) => Ok(()),
                        Err(e) if e.code() == tonic::Code::NotFound => Ok(()),
                        Err(e) => Err(grpc(e)),
                    }
                }
                None => Ok(()), // never placed
            };
            match r {
                Ok(()) => {
                    if let Err(e) = me.forget(kind, &id).await {
                        tracing::error!(error = %e, "forgetting a deleted volume");
                    }
                }
                Err(e) => {
                    me.settle(kind, &id, Err(format!("deleting: {e}"))).await;
                    let _ = me
                        .update(kind, &id, |r| {
                            r.insert("status".into(), json!("error_deleting"));
                            Ok(())
                        })
                        .await;
                }
            }
        });
    }

    pub fn spawn_snapshot(&self, snap: Map<String, Value>, host: String) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = st(&snap, "id").to_string();
            let r = match me.node(&host) {
                Some(n) => n
                    .client
                    .clone()
                    .create_snapshot(pb::CreateSnapshotRequest {
                        volume_id: st(&snap, "volume_id").to_string(),
                        snapshot_id: id.clone(),
                    })
                    .await
                    .map(|_| ())
                    .or_else(exists_ok)
                    .map(|()| {
                        let mut m = Map::new();
                        m.insert("status".into(), json!("available"));
                        m.insert("ursa:progress".into(), json!("100%"));
                        m
                    }),
                None => Err("the volume's node is not configured".into()),
            };
            me.settle(SNAPSHOT, &id, r).await;
        });
    }

    pub fn spawn_extend(&self, vol: Map<String, Value>, new_gib: u64) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = st(&vol, "id").to_string();
            let r = match me.node(st(&vol, "ursa:node")) {
                Some(n) => n
                    .client
                    .clone()
                    .resize_volume(pb::ResizeVolumeRequest {
                        id: id.clone(),
                        size_bytes: new_gib * GIB,
                    })
                    .await
                    .map(|_| {
                        let mut m = Map::new();
                        m.insert("status".into(), json!("available"));
                        m.insert("size".into(), json!(new_gib));
                        m
                    })
                    .map_err(grpc),
                None => Err("the volume's node is not configured".into()),
            };
            me.settle(VOLUME, &id, r).await;
        });
    }

    /// Exports a volume for a client on this node's NBD endpoint.
    pub async fn export(
        &self,
        vol: &Map<String, Value>,
        vhost: bool,
    ) -> Result<pb::ConnectionInfo> {
        let node = self
            .node(st(vol, "ursa:node"))
            .ok_or_else(|| Error::Internal("the volume's node is not configured".into()))?;
        let kind = if vhost {
            pb::export_volume_request::Kind::VhostUserBlk as i32
        } else {
            0
        };
        Ok(node
            .client
            .clone()
            .export_volume(pb::ExportVolumeRequest {
                id: st(vol, "id").to_string(),
                kind,
            })
            .await
            .map_err(|e| Error::Internal(grpc(e)))?
            .into_inner())
    }

    /// Ends every export of a volume.
    pub async fn unexport(&self, vol: &Map<String, Value>) -> Result<()> {
        let node = self
            .node(st(vol, "ursa:node"))
            .ok_or_else(|| Error::Internal("the volume's node is not configured".into()))?;
        node.client
            .clone()
            .unexport_volume(pb::VolumeRef {
                id: st(vol, "id").to_string(),
            })
            .await
            .map_err(|e| Error::Internal(grpc(e)))?;
        Ok(())
    }

    /// Makes sure the default volume type exists.
    pub async fn bootstrap(&self) -> Result<()> {
        if self.doc(TYPE, DEFAULT_TYPE_ID).is_none() {
            let t = json!({"id": DEFAULT_TYPE_ID, "name": DEFAULT_TYPE, "description": "Default Volume Type",
                           "is_public": true, "extra_specs": {},
                           "os-volume-type-access:is_public": true});
            self.put(TYPE, t.as_object().cloned().expect("object"))
                .await?;
        }
        if !self
            .docs(GROUP_TYPE)
            .iter()
            .any(|t| st(t, "name") == DEFAULT_GROUP_TYPE)
        {
            let t = json!({"id": uuid::Uuid::new_v4().to_string(), "name": DEFAULT_GROUP_TYPE,
                           "description": "Default group type", "is_public": true,
                           "group_specs": {}});
            self.put(GROUP_TYPE, t.as_object().cloned().expect("object"))
                .await?;
        }
        Ok(())
    }
}

/// What a new volume is filled from.
pub enum Source {
    Blank,
    /// A snapshot or volume on the same node (a copy-on-write clone).
    Copy(String),
    /// An image of the image service.
    Image(String),
}
