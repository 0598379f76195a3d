//! The daemon's core: pools (each a [`ThinPool`]), the registry of volumes
//! (durable in `<state>/volumes.json`, written atomically), and which
//! volumes are exported. Exports survive a restart: on open, every exported
//! volume is put back into the export table.
//!
//! The pool's metadata says which devices exist; the registry adds what
//! the control plane asked for (export, QoS, lineage). A device is made in
//! the pool before the registry names it and leaves the registry before
//! the pool, so after a crash the pool may hold a device the registry does
//! not name (a create that never answered): it is deleted on open.

use crate::export::nbd::ExportTable;
use crate::thin::ThinPool;
use crate::volume::Volume;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let m = e.to_string();
        match e {
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(m),
            Error::NotFound(_) => tonic::Status::not_found(m),
            Error::AlreadyExists(_) => tonic::Status::already_exists(m),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(m),
            Error::Unimplemented(_) => tonic::Status::unimplemented(m),
            Error::Io { .. } => tonic::Status::internal(m),
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeRecord {
    pub id: String,
    pub pool: String,
    pub size: u64,
    pub exported: bool,
    #[serde(default)]
    pub qos: crate::qos::Limits,
    /// A snapshot of this volume (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_of: Option<String>,
    /// A clone of this snapshot or volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_of: Option<String>,
    /// Served to a local guest over vhost-user-blk.
    #[serde(default)]
    pub vhost_user: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Registry {
    volumes: BTreeMap<String, VolumeRecord>,
}

/// Where NBD clients reach this node.
#[derive(Debug, Clone, Default)]
pub struct NbdEndpoint {
    pub socket: Option<PathBuf>,
    pub tcp: Option<std::net::SocketAddr>,
}

pub struct Config {
    pub state_dir: PathBuf,
    pub pools: BTreeMap<String, PathBuf>,
    pub nbd: NbdEndpoint,
    /// Where vhost-user-blk sockets go (`<dir>/<volume>.sock`).
    pub vhost_user_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeInfo {
    pub record: VolumeRecord,
    pub allocated: u64,
    /// I/O counters while exported (in this run of blockd).
    pub stats: Option<crate::volume::IoCounters>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolInfo {
    pub name: String,
    pub path: PathBuf,
    pub capacity: u64,
    pub free: u64,
    pub provisioned: u64,
    pub allocated: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    pub uri: String,
    pub export_name: String,
    pub socket: Option<PathBuf>,
    pub tcp: Option<std::net::SocketAddr>,
}

#[derive(Clone)]
pub struct Blockd {
    inner: Arc<Inner>,
}

struct Inner {
    reg: Mutex<Registry>,
    state_file: PathBuf,
    pools: BTreeMap<String, Pool>,
    exports: ExportTable,
    nbd: NbdEndpoint,
    vhost_user_dir: Option<PathBuf>,
    /// Each exported volume: its I/O handle behind its limiter (shared by
    /// its NBD and vhost-user exports).
    live: std::sync::Mutex<BTreeMap<String, Exported>>,
    vhost: std::sync::Mutex<BTreeMap<String, crate::export::vhost_user::VhostExport>>,
}

struct Pool {
    dir: PathBuf,
    thin: Arc<ThinPool>,
}

impl From<crate::thin::Error> for Error {
    fn from(e: crate::thin::Error) -> Self {
        use crate::thin::Error as T;
        let m = e.to_string();
        match e {
            T::NotFound(_) => Error::NotFound(m),
            T::Exists(_) => Error::AlreadyExists(m),
            T::Invalid(_) => Error::InvalidArgument(m),
            T::Corrupt(_) => Error::Io {
                context: "pool metadata".into(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, m),
            },
            T::Io(source) => Error::Io {
                context: "pool".into(),
                source,
            },
        }
    }
}

/// What the service keeps of an exported volume: its limiter and counters.
#[derive(Clone)]
struct Exported {
    limiter: Arc<crate::qos::Limiter>,
    stats: Arc<crate::volume::IoStats>,
    volume: Arc<dyn Volume>,
}

fn check_id(id: &str) -> Result<()> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| Error::InvalidArgument(format!("volume id {id:?} is not a UUID")))
}

fn check_size(size: u64) -> Result<()> {
    if size == 0 || !size.is_multiple_of(512) || size > crate::thin::MAX_SIZE {
        return Err(Error::InvalidArgument(format!(
            "size {size} must be a positive multiple of 512 bytes, at most {}",
            crate::thin::MAX_SIZE
        )));
    }
    Ok(())
}

impl Blockd {
    pub fn open(cfg: Config, exports: ExportTable) -> Result<Blockd> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(io(cfg.state_dir.display().to_string()))?;
        if cfg.pools.is_empty() {
            return Err(Error::InvalidArgument(
                "at least one pool (--pool NAME=DIR) is needed".into(),
            ));
        }
        let engine = crate::engine::Engine::global().map_err(io("the io_uring engine"))?;
        let mut pools = BTreeMap::new();
        for (name, dir) in &cfg.pools {
            let thin = ThinPool::open(engine.clone(), dir)?;
            pools.insert(
                name.clone(),
                Pool {
                    dir: dir.clone(),
                    thin,
                },
            );
        }
        let state_file = cfg.state_dir.join("volumes.json");
        let mut reg: Registry = match std::fs::read(&state_file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Io {
                context: state_file.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Registry::default(),
            Err(e) => return Err(io(state_file.display().to_string())(e)),
        };
        for (name, p) in &pools {
            for d in p.thin.devices() {
                if reg.volumes.get(&d.id).is_none_or(|r| r.pool != *name) {
                    tracing::warn!(pool = %name, device = %d.id, "device no volume names (an unfinished create): deleted");
                    p.thin.delete(&d.id)?;
                }
            }
        }
        let lost: Vec<String> = reg
            .volumes
            .values()
            .filter(|r| {
                pools
                    .get(&r.pool)
                    .is_none_or(|p| p.thin.info(&r.id).is_none())
            })
            .map(|r| r.id.clone())
            .collect();
        for id in lost {
            tracing::error!(volume = %id, "volume is in the registry but not in its pool: forgotten");
            reg.volumes.remove(&id);
        }
        let b = Blockd {
            inner: Arc::new(Inner {
                reg: Mutex::new(Registry::default()),
                state_file,
                pools,
                exports,
                nbd: cfg.nbd,
                vhost_user_dir: cfg.vhost_user_dir,
                live: Default::default(),
                vhost: Default::default(),
            }),
        };
        b.save(&reg)?;
        for r in reg.volumes.values() {
            if r.exported {
                let v = b.exported(r)?;
                b.inner.exports.insert(&r.id, v);
            }
            if r.vhost_user {
                b.start_vhost(r)?;
            }
        }
        *b.inner.reg.try_lock().expect("fresh lock") = reg;
        Ok(b)
    }

    fn pool(&self, r: &VolumeRecord) -> Result<&Pool> {
        self.inner.pools.get(&r.pool).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "pool {} of volume {} is not configured",
                r.pool, r.id
            ))
        })
    }

    /// The I/O handle of an exported volume behind its QoS limiter (one
    /// per volume, shared by its exports).
    fn exported(&self, r: &VolumeRecord) -> Result<Arc<dyn Volume>> {
        let mut live = self.inner.live.lock().expect("live");
        if let Some(e) = live.get(&r.id) {
            return Ok(e.volume.clone());
        }
        let limiter = Arc::new(crate::qos::Limiter::new(r.qos));
        let stats: Arc<crate::volume::IoStats> = Default::default();
        let volume: Arc<dyn Volume> = Arc::new(crate::volume::Throttled {
            inner: Box::new(self.pool(r)?.thin.volume(&r.id)?),
            limiter: limiter.clone(),
            stats: stats.clone(),
        });
        live.insert(
            r.id.clone(),
            Exported {
                limiter,
                stats,
                volume: volume.clone(),
            },
        );
        Ok(volume)
    }

    fn vhost_socket(&self, id: &str) -> Result<PathBuf> {
        self.inner
            .vhost_user_dir
            .as_ref()
            .map(|d| d.join(format!("{id}.sock")))
            .ok_or_else(|| {
                Error::FailedPrecondition(
                    "this node serves no vhost-user-blk (--vhost-user-dir)".into(),
                )
            })
    }

    fn start_vhost(&self, r: &VolumeRecord) -> Result<PathBuf> {
        let sock = self.vhost_socket(&r.id)?;
        let mut vh = self.inner.vhost.lock().expect("vhost");
        if !vh.contains_key(&r.id) {
            if let Some(d) = sock.parent() {
                std::fs::create_dir_all(d).map_err(io(d.display().to_string()))?;
            }
            let v = self.exported(r)?;
            let e = crate::export::vhost_user::VhostExport::start(&sock, &r.id, v)
                .map_err(io(sock.display().to_string()))?;
            vh.insert(r.id.clone(), e);
        }
        Ok(sock)
    }

    fn save(&self, reg: &Registry) -> Result<()> {
        use std::io::Write;
        let tmp = self.inner.state_file.with_extension("json.tmp");
        let ctx = self.inner.state_file.display().to_string();
        let mut f = std::fs::File::create(&tmp).map_err(io(ctx.clone()))?;
        f.write_all(&serde_json::to_vec_pretty(reg).expect("serializes"))
            .map_err(io(ctx.clone()))?;
        f.sync_all().map_err(io(ctx.clone()))?;
        std::fs::rename(&tmp, &self.inner.state_file).map_err(io(ctx))?;
        Ok(())
    }

    fn info(&self, r: &VolumeRecord) -> VolumeInfo {
        let allocated = self
            .pool(r)
            .ok()
            .and_then(|p| p.thin.info(&r.id))
            .map_or(0, |d| d.mapped);
        let stats = self
            .inner
            .live
            .lock()
            .expect("live")
            .get(&r.id)
            .map(|e| e.stats.snapshot());
        VolumeInfo {
            record: r.clone(),
            allocated,
            stats,
        }
    }

    fn free_space(dir: &Path) -> (u64, u64) {
        match nix::sys::statvfs::statvfs(dir) {
            Ok(s) => {
                let f = s.fragment_size();
                (s.blocks() * f, s.blocks_available() * f)
            }
            Err(_) => (0, 0),
        }
    }

    pub async fn create(
        &self,
        id: &str,
        size: u64,
        pool: &str,
        qos: crate::qos::Limits,
    ) -> Result<VolumeInfo> {
        check_id(id)?;
        check_size(size)?;
        let mut reg = self.inner.reg.lock().await;
        if let Some(r) = reg.volumes.get(id) {
            if r.size == size && (pool.is_empty() || r.pool == pool) && r.qos == qos {
                return Ok(self.info(r));
            }
            return Err(Error::AlreadyExists(format!(
                "volume {id} exists with size {} in pool {}",
                r.size, r.pool
            )));
        }
        let pool = if pool.is_empty() {
            self.inner
                .pools
                .iter()
                .max_by_key(|(_, p)| Self::free_space(&p.dir).1)
                .map(|(n, _)| n.clone())
                .expect("at least one pool")
        } else if self.inner.pools.contains_key(pool) {
            pool.to_string()
        } else {
            return Err(Error::NotFound(format!("no pool named {pool:?}")));
        };
        let r = VolumeRecord {
            id: id.to_string(),
            pool,
            size,
            exported: false,
            qos,
            snapshot_of: None,
            clone_of: None,
            vhost_user: false,
        };
        let thin = &self.pool(&r)?.thin;
        if thin.info(id).is_some() {
            // Left by a create that never answered: it is ours, start over.
            thin.delete(id)?;
        }
        thin.create(id, size, false)?;
        reg.volumes.insert(id.to_string(), r.clone());
        if let Err(e) = self.save(&reg) {
            reg.volumes.remove(id);
            let _ = thin.delete(id);
            return Err(e);
        }
        tracing::info!(volume = id, size, pool = %r.pool, "volume created");
        Ok(self.info(&r))
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let mut reg = self.inner.reg.lock().await;
        let Some(r) = reg.volumes.get(id).cloned() else {
            return Ok(()); // already gone: deletes are idempotent
        };
        if r.exported || r.vhost_user {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is exported; unexport it first"
            )));
        }
        reg.volumes.remove(id);
        self.save(&reg)?;
        match self.pool(&r)?.thin.delete(id) {
            Ok(()) | Err(crate::thin::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(volume = id, "volume deleted");
        Ok(())
    }

    pub async fn resize(&self, id: &str, size: u64) -> Result<VolumeInfo> {
        check_id(id)?;
        check_size(size)?;
        let mut reg = self.inner.reg.lock().await;
        let r = reg
            .volumes
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no volume {id}")))?;
        if size < r.size {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is {} bytes; volumes only grow",
                r.size
            )));
        }
        if r.snapshot_of.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "{id} is a snapshot; snapshots do not change"
            )));
        }
        // New connections see the new size; open ones keep the old one.
        self.pool(&r)?.thin.resize(id, size)?;
        let r = VolumeRecord { size, ..r };
        reg.volumes.insert(id.to_string(), r.clone());
        self.save(&reg)?;
        Ok(self.info(&r))
    }

    pub async fn get(&self, id: &str) -> Result<VolumeInfo> {
        check_id(id)?;
        let reg = self.inner.reg.lock().await;
        reg.volumes
            .get(id)
            .map(|r| self.info(r))
            .ok_or_else(|| Error::NotFound(format!("no volume {id}")))
    }

    pub async fn list(&self) -> Vec<VolumeInfo> {
        let reg = self.inner.reg.lock().await;
        reg.volumes.values().map(|r| self.info(r)).collect()
    }

    pub async fn export_nbd(&self, id: &str) -> Result<Connection> {
        check_id(id)?;
        if self.inner.nbd.socket.is_none() && self.inner.nbd.tcp.is_none() {
            return Err(Error::FailedPrecondition(
                "this node serves no NBD (--nbd-unix / --nbd-listen)".into(),
            ));
        }
        let mut reg = self.inner.reg.lock().await;
        let r = reg
            .volumes
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no volume {id}")))?;
        if self.inner.exports.get(id).is_none() {
            let v = self.exported(&r)?;
            self.inner.exports.insert(id, v);
        }
        if !r.exported {
            reg.volumes.insert(
                id.to_string(),
                VolumeRecord {
                    exported: true,
                    ..r
                },
            );
            self.save(&reg)?;
        }
        let uri = match (&self.inner.nbd.socket, &self.inner.nbd.tcp) {
            (Some(s), _) => format!("nbd+unix:///{id}?socket={}", s.display()),
            (None, Some(a)) => format!("nbd://{a}/{id}"),
            (None, None) => unreachable!("checked above"),
        };
        Ok(Connection {
            uri,
            export_name: id.to_string(),
            socket: self.inner.nbd.socket.clone(),
            tcp: self.inner.nbd.tcp,
        })
    }

    /// Changes a volume's QoS limits, durably, and at once for its export.
    pub async fn set_qos(&self, id: &str, qos: crate::qos::Limits) -> Result<VolumeInfo> {
        check_id(id)?;
        let mut reg = self.inner.reg.lock().await;
        let mut r = reg
            .volumes
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no volume {id}")))?;
        if r.qos != qos {
            r.qos = qos;
            let old = reg.volumes.insert(id.to_string(), r.clone());
            if let Err(e) = self.save(&reg) {
                if let Some(o) = old {
                    reg.volumes.insert(id.to_string(), o);
                }
                return Err(e);
            }
        }
        if let Some(e) = self.inner.live.lock().expect("live").get(id) {
            e.limiter.set(qos);
        }
        tracing::info!(
            volume = id,
            iops = qos.iops,
            bytes_per_second = qos.bytes_per_second,
            "QoS set"
        );
        Ok(self.info(&r))
    }

    pub async fn unexport(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let mut reg = self.inner.reg.lock().await;
        self.inner.exports.remove(id);
        let vhost = self.inner.vhost.lock().expect("vhost").remove(id);
        // Stops the listener and drops a connected guest.
        tokio::task::block_in_place(|| drop(vhost));
        self.inner.live.lock().expect("live").remove(id);
        if let Some(r) = reg.volumes.get(id).cloned() {
            if r.exported || r.vhost_user {
                reg.volumes.insert(
                    id.to_string(),
                    VolumeRecord {
                        exported: false,
                        vhost_user: false,
                        ..r
                    },
                );
                self.save(&reg)?;
            }
        }
        Ok(())
    }

    /// Serves a volume to a local QEMU over vhost-user-blk; the reply
    /// names the socket for `-chardev socket,path=…`.
    pub async fn export_vhost_user(&self, id: &str) -> Result<PathBuf> {
        check_id(id)?;
        let mut reg = self.inner.reg.lock().await;
        let r = reg
            .volumes
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no volume {id}")))?;
        let sock = tokio::task::block_in_place(|| self.start_vhost(&r))?;
        if !r.vhost_user {
            reg.volumes.insert(
                id.to_string(),
                VolumeRecord {
                    vhost_user: true,
                    ..r
                },
            );
            self.save(&reg)?;
        }
        Ok(sock)
    }

    /// A read-only point-in-time copy of `volume_id` named `snapshot_id`
    /// (metadata only: it shares every chunk with the volume).
    pub async fn snapshot(&self, volume_id: &str, snapshot_id: &str) -> Result<VolumeInfo> {
        self.copy(volume_id, snapshot_id, true).await
    }

    /// A writable copy of a snapshot or volume (metadata only).
    pub async fn clone_volume(&self, source_id: &str, id: &str) -> Result<VolumeInfo> {
        self.copy(source_id, id, false).await
    }

    async fn copy(&self, src: &str, id: &str, snapshot: bool) -> Result<VolumeInfo> {
        check_id(src)?;
        check_id(id)?;
        let mut reg = self.inner.reg.lock().await;
        let s = reg
            .volumes
            .get(src)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no volume or snapshot {src}")))?;
        let (snapshot_of, clone_of) = if snapshot {
            (Some(src.to_string()), None)
        } else {
            (None, Some(src.to_string()))
        };
        if let Some(r) = reg.volumes.get(id) {
            if r.snapshot_of == snapshot_of && r.clone_of == clone_of {
                return Ok(self.info(r));
            }
            return Err(Error::AlreadyExists(format!("{id} exists")));
        }
        let r = VolumeRecord {
            id: id.to_string(),
            pool: s.pool.clone(),
            size: s.size,
            exported: false,
            qos: if snapshot { Default::default() } else { s.qos },
            snapshot_of,
            clone_of,
            vhost_user: false,
        };
        let thin = &self.pool(&r)?.thin;
        if thin.info(id).is_some() {
            thin.delete(id)?;
        }
        let t0 = std::time::Instant::now();
        thin.copy(src, id, snapshot)?;
        reg.volumes.insert(id.to_string(), r.clone());
        if let Err(e) = self.save(&reg) {
            reg.volumes.remove(id);
            let _ = thin.delete(id);
            return Err(e);
        }
        tracing::info!(
            source = src,
            id,
            snapshot,
            took_us = t0.elapsed().as_micros() as u64,
            "copy made"
        );
        Ok(self.info(&r))
    }

    /// The ranges of `id` that differ from snapshot `base` (all allocated
    /// ranges without one), and `id`'s size.
    pub async fn changed(&self, id: &str, base: Option<&str>) -> Result<(Vec<(u64, u64)>, u64)> {
        check_id(id)?;
        if let Some(b) = base {
            check_id(b)?;
        }
        let reg = self.inner.reg.lock().await;
        let r = reg
            .volumes
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no volume {id}")))?;
        if let Some(b) = base {
            match reg.volumes.get(b) {
                Some(br) if br.pool == r.pool => {}
                Some(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "{b} is in another pool than {id}"
                    )))
                }
                None => return Err(Error::NotFound(format!("no snapshot {b}"))),
            }
        }
        let ranges = self.pool(&r)?.thin.changed(base, id)?;
        Ok((ranges, r.size))
    }

    /// An I/O handle on a volume or snapshot for bulk reads and writes
    /// (backups and restores): its export's, behind its QoS limits, when it
    /// is exported.
    pub async fn handle(&self, id: &str) -> Result<Arc<dyn Volume>> {
        check_id(id)?;
        let reg = self.inner.reg.lock().await;
        let r = reg
            .volumes
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no volume {id}")))?;
        if let Some(e) = self.inner.live.lock().expect("live").get(id) {
            return Ok(e.volume.clone());
        }
        Ok(Arc::new(self.pool(&r)?.thin.volume(id)?))
    }

    pub async fn pools(&self) -> Vec<PoolInfo> {
        let reg = self.inner.reg.lock().await;
        self.inner
            .pools
            .iter()
            .map(|(name, pool)| {
                let (capacity, free) = Self::free_space(&pool.dir);
                let vols: Vec<VolumeInfo> = reg
                    .volumes
                    .values()
                    .filter(|r| r.pool == *name)
                    .map(|r| self.info(r))
                    .collect();
                PoolInfo {
                    name: name.clone(),
                    path: pool.dir.clone(),
                    capacity,
                    free,
                    provisioned: vols.iter().map(|v| v.record.size).sum(),
                    // Shared chunks count once.
                    allocated: pool.thin.allocated(),
                }
            })
            .collect()
    }
}
