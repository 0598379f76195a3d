//! The thin pool: blockd's on-disk volume format, with copy-on-write
//! snapshots and clones.
//!
//! # Format
//!
//! A pool is a directory with three files:
//!
//! - `data`: chunks of [`CHUNK`] bytes; physical chunk `p` is at byte
//!   `p * CHUNK`. A chunk no volume maps is a hole (punched when freed), so
//!   a newly allocated chunk reads as zeros where it has not been written.
//! - `meta.log`: the journal. A sequence of records, each
//!   `magic "UJR1" | len: u32 LE | crc32: u32 LE | payload[len]`, the
//!   payload a postcard-encoded [`Record`] (`seq` and a list of [`Op`]s).
//!   Replay stops at the first record whose magic, length or CRC is wrong
//!   (a torn append); the file is cut back there on open.
//! - `meta.ckpt`: a checkpoint, same framing with magic `"UCK1"`: every
//!   device with its size and map, and the `seq` of the last record it
//!   contains. Written to `meta.ckpt.tmp`, synced, renamed, directory
//!   synced; records with a `seq` at or below it are skipped on replay, so
//!   the journal may be truncated (or not) after a checkpoint.
//!
//! A device (a volume, a snapshot or a clone) is a sparse map from logical
//! chunk to physical chunk. Reference counts of physical chunks are not
//! stored: they are counted from the maps on open. A snapshot or a clone
//! copies the source's map (one `Copy` op in the journal), so it costs
//! metadata only; the chunks become shared, and a write to a shared chunk
//! copies it first (copy-on-write) and remaps the writer's logical chunk.
//!
//! # Ordering and crash consistency
//!
//! Map changes from writes (`Map`, `Unmap`) collect in memory and are
//! committed by FLUSH (or a FUA write that changed the map, or when many
//! are pending): take the pending ops, `fdatasync` the data file, append
//! the record, `fdatasync` the journal. So every map entry on disk points
//! at data that was durable before it (a copied chunk is written before its
//! `Map` op is queued). Administrative changes (create, delete, resize,
//! snapshot, clone) commit at once, after the pending map ops.
//!
//! A chunk whose count drops to zero is not reused before the record that
//! drops it is durable and every I/O that was in flight when it was
//! dropped has finished; then it is punched and goes to the free list. On
//! open every unreferenced chunk (and everything past the highest one) is
//! punched again, so data of writes that never committed cannot surface in
//! another volume.

use crate::engine::{Engine, EngineFile};
use crate::volume::{BoxFuture, Extent, Plan, Seg, Volume};
use nix::fcntl::{fallocate, FallocateFlags};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Allocation unit: 64 KiB.
pub const CHUNK: u64 = 64 << 10;
const JOURNAL_MAGIC: &[u8; 4] = b"UJR1";
const CKPT_MAGIC: &[u8; 4] = b"UCK1";
/// Commit without waiting for a FLUSH once this many map ops are pending.
const MAX_PENDING: usize = 1 << 16;
/// Checkpoint once the journal is this large.
const CHECKPOINT_AT: u64 = 16 << 20;
/// The largest volume: 2^32 chunks.
pub const MAX_SIZE: u64 = CHUNK << 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no device {0} in the pool")]
    NotFound(String),
    #[error("device {0} already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("pool metadata is damaged: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// One change to the metadata, as the journal stores it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Op {
    Create {
        no: u32,
        id: String,
        size: u64,
        read_only: bool,
    },
    Delete {
        no: u32,
    },
    Resize {
        no: u32,
        size: u64,
    },
    /// `dst` (new, number `no`) gets `src`'s map and size.
    Copy {
        src: u32,
        no: u32,
        id: String,
        read_only: bool,
    },
    Map {
        no: u32,
        l: u32,
        p: u32,
    },
    Unmap {
        no: u32,
        l: u32,
        n: u32,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub ops: Vec<Op>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CkptDevice {
    no: u32,
    id: String,
    size: u64,
    read_only: bool,
    /// Runs of (logical, physical, length) chunks.
    runs: Vec<(u32, u32, u32)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    seq: u64,
    devices: Vec<CkptDevice>,
}

#[derive(Debug, Clone)]
struct Dev {
    id: String,
    size: u64,
    read_only: bool,
    map: BTreeMap<u32, u32>,
}

#[derive(Default)]
struct State {
    devs: HashMap<u32, Dev>,
    by_id: HashMap<String, u32>,
    next_no: u32,
    /// Reference count of each physical chunk below `high`.
    refs: Vec<u32>,
    /// Punched chunks ready for reuse.
    free: Vec<u32>,
    /// Map ops not yet in the journal.
    pending: Vec<Op>,
    /// Chunks whose count reached zero, not yet committed.
    dropped: Vec<u32>,
    /// (device, logical chunk) being copied for a write.
    copying: HashSet<(u32, u32)>,
    seq: u64,
}

impl State {
    /// Applies a journal op to the maps (reference counts are recounted
    /// after replay).
    fn replay(&mut self, op: &Op) -> Result<()> {
        match op {
            Op::Create {
                no,
                id,
                size,
                read_only,
            } => {
                self.devs.insert(
                    *no,
                    Dev {
                        id: id.clone(),
                        size: *size,
                        read_only: *read_only,
                        map: BTreeMap::new(),
                    },
                );
                self.by_id.insert(id.clone(), *no);
                self.next_no = self.next_no.max(no + 1);
            }
            Op::Delete { no } => {
                if let Some(d) = self.devs.remove(no) {
                    self.by_id.remove(&d.id);
                }
            }
            Op::Resize { no, size } => {
                self.dev_mut(*no)?.size = *size;
            }
            Op::Copy {
                src,
                no,
                id,
                read_only,
            } => {
                let s = self
                    .devs
                    .get(src)
                    .ok_or_else(|| Error::Corrupt(format!("copy of missing device {src}")))?;
                let d = Dev {
                    id: id.clone(),
                    size: s.size,
                    read_only: *read_only,
                    map: s.map.clone(),
                };
                self.devs.insert(*no, d);
                self.by_id.insert(id.clone(), *no);
                self.next_no = self.next_no.max(no + 1);
            }
            Op::Map { no, l, p } => {
                self.dev_mut(*no)?.map.insert(*l, *p);
            }
            Op::Unmap { no, l, n } => {
                let d = self.dev_mut(*no)?;
                let keys: Vec<u32> = d
                    .map
                    .range(*l..l.saturating_add(*n))
                    .map(|(k, _)| *k)
                    .collect();
                for k in keys {
                    d.map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn dev_mut(&mut self, no: u32) -> Result<&mut Dev> {
        self.devs
            .get_mut(&no)
            .ok_or_else(|| Error::Corrupt(format!("op on missing device {no}")))
    }

    fn incref(&mut self, p: u32) {
        if self.refs.len() <= p as usize {
            self.refs.resize(p as usize + 1, 0);
        }
        self.refs[p as usize] += 1;
    }

    fn decref(&mut self, p: u32) {
        let r = &mut self.refs[p as usize];
        *r -= 1;
        if *r == 0 {
            self.dropped.push(p);
        }
    }

    fn alloc(&mut self) -> u32 {
        let p = match self.free.pop() {
            Some(p) => p,
            None => {
                self.refs.push(0);
                (self.refs.len() - 1) as u32
            }
        };
        self.refs[p as usize] = 1;
        p
    }

    fn allocated_chunks(&self) -> u64 {
        self.refs.iter().filter(|r| **r > 0).count() as u64
    }
}

struct Journal {
    file: File,
    len: u64,
}

/// A pool of thin volumes in one directory.
pub struct ThinPool {
    dir: PathBuf,
    /// Held for the pool's lifetime: one process per pool.
    _lock: File,
    data: EngineFile,
    state: Mutex<State>,
    changed: Condvar,
    /// Wakes async I/O that found a chunk being copied.
    copied: tokio::sync::Notify,
    journal: Mutex<Journal>,
    /// Every data I/O holds a ticket from its map lookup to its completion;
    /// dropped chunks are reused only after the I/O that may use them.
    gate: Arc<Gate>,
}

fn frame(magic: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of the frame at the start of `b`, and the frame's length;
/// `None` if it is torn or damaged.
fn unframe<'a>(magic: &[u8; 4], b: &'a [u8]) -> Option<(&'a [u8], usize)> {
    if b.len() < 12 || &b[..4] != magic {
        return None;
    }
    let len = u32::from_le_bytes(b[4..8].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b[8..12].try_into().ok()?);
    let payload = b.get(12..12 + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, 12 + len))
}

fn punch(file: &File, first: u32, count: u32) -> io::Result<()> {
    fallocate(
        file.as_raw_fd(),
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        (first as u64 * CHUNK) as i64,
        (count as u64 * CHUNK) as i64,
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// Punches a set of chunks, a run at a time.
fn punch_all(file: &File, chunks: &mut [u32]) -> io::Result<()> {
    chunks.sort_unstable();
    let mut i = 0;
    while i < chunks.len() {
        let mut j = i + 1;
        while j < chunks.len() && chunks[j] == chunks[j - 1] + 1 {
            j += 1;
        }
        punch(file, chunks[i], (j - i) as u32)?;
        i = j;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a caller learns of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub id: String,
    pub size: u64,
    pub read_only: bool,
    /// Bytes of chunks it maps (shared chunks count in every device).
    pub mapped: u64,
}

/// Where a piece of a write goes.
enum Put {
    /// Straight to byte `at` of the data file.
    Direct { pos: usize, len: usize, at: u64 },
    /// Into a copy of shared chunk `old` made in `new`, then remapped.
    Cow {
        l: u32,
        old: u32,
        new: u32,
        within: u64,
        pos: usize,
        len: usize,
    },
}

/// A grace-period counter (two epochs, like RCU): I/O enters the current
/// epoch; `wait_out` flips the epoch and waits for the old one to drain,
/// so every I/O that started before the call has finished after it.
#[derive(Default)]
struct Gate {
    epoch: AtomicUsize,
    inflight: [AtomicUsize; 2],
    flip: Mutex<()>,
}

/// An I/O's place in the gate; leaving is dropping it.
pub struct Ticket {
    gate: Arc<Gate>,
    e: usize,
}

impl Gate {
    fn enter(self: &Arc<Self>) -> Ticket {
        loop {
            let e = self.epoch.load(Ordering::SeqCst) & 1;
            self.inflight[e].fetch_add(1, Ordering::SeqCst);
            if self.epoch.load(Ordering::SeqCst) & 1 == e {
                return Ticket {
                    gate: self.clone(),
                    e,
                };
            }
            self.inflight[e].fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn wait_out(&self) {
        let _one = self.flip.lock().expect("gate");
        let old = self.epoch.fetch_add(1, Ordering::SeqCst) & 1;
        while self.inflight[old].load(Ordering::SeqCst) != 0 {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.inflight[self.e].fetch_sub(1, Ordering::SeqCst);
    }
}

/// A copy-on-write in progress; if it is abandoned (an error, a dropped
/// future) the new chunk is given back and waiters are woken.
struct CowGuard<'a> {
    pool: &'a ThinPool,
    no: u32,
    l: u32,
    old: u32,
    new: u32,
    done: bool,
}

impl CowGuard<'_> {
    /// The copy is on disk: remap.
    fn finish(mut self) {
        let mut st = self.pool.state.lock().expect("state");
        st.copying.remove(&(self.no, self.l));
        st.decref(self.old);
        if let Some(d) = st.devs.get_mut(&self.no) {
            d.map.insert(self.l, self.new);
        }
        st.pending.push(Op::Map {
            no: self.no,
            l: self.l,
            p: self.new,
        });
        self.done = true;
        self.pool.changed.notify_all();
        self.pool.copied.notify_waiters();
    }
}

impl Drop for CowGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut st = self.pool.state.lock().expect("state");
            st.copying.remove(&(self.no, self.l));
            st.decref(self.new);
            self.pool.changed.notify_all();
            self.pool.copied.notify_waiters();
        }
    }
}

impl ThinPool {
    /// Opens the pool in `dir` (creating an empty one) and recovers it.
    pub fn open(engine: Arc<Engine>, dir: &Path) -> Result<Arc<ThinPool>> {
        std::fs::create_dir_all(dir)?;
        let lock = File::create(dir.join("lock"))?;
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::Invalid(format!(
                "pool {} is in use by another process",
                dir.display()
            )));
        }
        let data = EngineFile::open(engine, &dir.join("data"), true)?;
        let mut st = State::default();
        let mut ckpt_seq = 0;
        match std::fs::read(dir.join("meta.ckpt")) {
            Ok(b) => {
                let (payload, _) = unframe(CKPT_MAGIC, &b)
                    .ok_or_else(|| Error::Corrupt("checkpoint frame".into()))?;
                let ck: Checkpoint = postcard::from_bytes(payload)
                    .map_err(|e| Error::Corrupt(format!("checkpoint: {e}")))?;
                ckpt_seq = ck.seq;
                for d in ck.devices {
                    let mut map = BTreeMap::new();
                    for (l, p, n) in d.runs {
                        for k in 0..n {
                            map.insert(l + k, p + k);
                        }
                    }
                    st.by_id.insert(d.id.clone(), d.no);
                    st.next_no = st.next_no.max(d.no + 1);
                    st.devs.insert(
                        d.no,
                        Dev {
                            id: d.id,
                            size: d.size,
                            read_only: d.read_only,
                            map,
                        },
                    );
                }
                st.seq = ck.seq;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let log_path = dir.join("meta.log");
        let mut log = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        let mut at = 0;
        while let Some((payload, n)) = unframe(JOURNAL_MAGIC, &bytes[at..]) {
            let Ok(rec) = postcard::from_bytes::<Record>(payload) else {
                break;
            };
            if rec.seq > ckpt_seq {
                for op in &rec.ops {
                    st.replay(op)?;
                }
                st.seq = rec.seq;
            }
            at += n;
        }
        if at < bytes.len() {
            tracing::warn!(
                pool = %dir.display(),
                valid = at,
                len = bytes.len(),
                "journal ends in a torn record; cut back"
            );
            log.set_len(at as u64)?;
            log.sync_all()?;
        }
        // Count references; everything else is free and punched.
        let maps: Vec<u32> = st
            .devs
            .values()
            .flat_map(|d| d.map.values().copied())
            .collect();
        for p in maps {
            st.incref(p);
        }
        let mut free: Vec<u32> = (0..st.refs.len() as u32)
            .filter(|p| st.refs[*p as usize] == 0)
            .collect();
        punch_all(data.file(), &mut free)?;
        let end = st.refs.len() as u64 * CHUNK;
        let flen = data.file().metadata()?.len();
        if flen > end {
            fallocate(
                data.file().as_raw_fd(),
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                end as i64,
                (flen - end) as i64,
            )
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        }
        free.reverse();
        st.free = free;
        st.dropped.clear();
        Ok(Arc::new(ThinPool {
            dir: dir.to_path_buf(),
            _lock: lock,
            data,
            state: Mutex::new(st),
            changed: Condvar::new(),
            copied: tokio::sync::Notify::new(),
            journal: Mutex::new(Journal {
                file: log,
                len: at as u64,
            }),
            gate: Arc::new(Gate::default()),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Commits pending map ops and, when given, an administrative change
    /// made under the state lock (it returns the ops to record after them).
    fn commit_with<F>(&self, change: F) -> Result<()>
    where
        F: FnOnce(&mut State) -> Result<Vec<Op>>,
    {
        let mut j = self.journal.lock().expect("journal");
        let (ops, dropped, seq, ckpt) = {
            let mut st = self.state.lock().expect("state");
            let mut ops = std::mem::take(&mut st.pending);
            ops.extend(change(&mut st)?);
            if ops.is_empty() {
                return Ok(());
            }
            st.seq += 1;
            let seq = st.seq;
            let dropped = std::mem::take(&mut st.dropped);
            let ckpt = (j.len > CHECKPOINT_AT).then(|| Checkpoint {
                seq,
                devices: st
                    .devs
                    .iter()
                    .map(|(no, d)| CkptDevice {
                        no: *no,
                        id: d.id.clone(),
                        size: d.size,
                        read_only: d.read_only,
                        runs: runs(&d.map),
                    })
                    .collect(),
            });
            (ops, dropped, seq, ckpt)
        };
        // Data first: every map entry in this record points at data that
        // is durable before the record is.
        self.data.sync_data()?;
        let payload = postcard::to_allocvec(&Record { seq, ops })
            .map_err(|e| Error::Invalid(format!("encoding a journal record: {e}")))?;
        let rec = frame(JOURNAL_MAGIC, &payload);
        j.file.write_all(&rec)?;
        j.file.sync_data()?;
        j.len += rec.len() as u64;
        if let Some(ck) = ckpt {
            self.checkpoint(&mut j, &ck)?;
        }
        drop(j);
        if !dropped.is_empty() {
            self.release(dropped)?;
        }
        Ok(())
    }

    fn checkpoint(&self, j: &mut Journal, ck: &Checkpoint) -> Result<()> {
        let payload = postcard::to_allocvec(ck)
            .map_err(|e| Error::Invalid(format!("encoding a checkpoint: {e}")))?;
        let tmp = self.dir.join("meta.ckpt.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&frame(CKPT_MAGIC, &payload))?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join("meta.ckpt"))?;
        sync_dir(&self.dir)?;
        j.file.set_len(0)?;
        j.file.sync_all()?;
        j.len = 0;
        Ok(())
    }

    /// Dropped chunks become free once no I/O that might still use them
    /// is in flight: wait for the gate, punch, hand them out again.
    fn release(&self, mut dropped: Vec<u32>) -> Result<()> {
        self.gate.wait_out();
        punch_all(self.data.file(), &mut dropped)?;
        let mut st = self.state.lock().expect("state");
        // A chunk may have been referenced again meanwhile? No: a dropped
        // chunk is in neither a map nor the free list until now.
        st.free.extend(dropped);
        Ok(())
    }

    /// Commits pending map changes (FLUSH).
    pub fn flush(&self) -> Result<()> {
        self.commit_with(|_| Ok(Vec::new()))
    }

    pub fn create(&self, id: &str, size: u64, read_only: bool) -> Result<()> {
        check_size(size)?;
        self.commit_with(|st| {
            if st.by_id.contains_key(id) {
                return Err(Error::Exists(id.into()));
            }
            let no = st.next_no;
            let op = Op::Create {
                no,
                id: id.into(),
                size,
                read_only,
            };
            st.replay(&op)?;
            Ok(vec![op])
        })
    }

    /// A snapshot (`read_only`) or clone of `src` named `id`: metadata only.
    pub fn copy(&self, src: &str, id: &str, read_only: bool) -> Result<()> {
        self.commit_with(|st| {
            let s = *st
                .by_id
                .get(src)
                .ok_or_else(|| Error::NotFound(src.into()))?;
            if st.by_id.contains_key(id) {
                return Err(Error::Exists(id.into()));
            }
            let no = st.next_no;
            let op = Op::Copy {
                src: s,
                no,
                id: id.into(),
                read_only,
            };
            st.replay(&op)?;
            let shared: Vec<u32> = st.devs[&no].map.values().copied().collect();
            for p in shared {
                st.incref(p);
            }
            Ok(vec![op])
        })
    }

    pub fn delete(&self, id: &str) -> Result<()> {
        self.commit_with(|st| {
            let no = *st.by_id.get(id).ok_or_else(|| Error::NotFound(id.into()))?;
            let op = Op::Delete { no };
            let d = st.devs.get(&no).cloned().expect("indexed device");
            st.replay(&op)?;
            for p in d.map.values() {
                st.decref(*p);
            }
            Ok(vec![op])
        })
    }

    pub fn resize(&self, id: &str, size: u64) -> Result<()> {
        check_size(size)?;
        self.commit_with(|st| {
            let no = *st.by_id.get(id).ok_or_else(|| Error::NotFound(id.into()))?;
            let cur = st.devs[&no].size;
            if size < cur {
                return Err(Error::Invalid(format!(
                    "volumes only grow: {size} is smaller than {cur}"
                )));
            }
            if size == cur {
                return Ok(Vec::new());
            }
            let op = Op::Resize { no, size };
            st.replay(&op)?;
            Ok(vec![op])
        })
    }

    pub fn info(&self, id: &str) -> Option<DeviceInfo> {
        let st = self.state.lock().expect("state");
        let no = st.by_id.get(id)?;
        let d = &st.devs[no];
        Some(DeviceInfo {
            id: d.id.clone(),
            size: d.size,
            read_only: d.read_only,
            mapped: d.map.len() as u64 * CHUNK,
        })
    }

    pub fn devices(&self) -> Vec<DeviceInfo> {
        let st = self.state.lock().expect("state");
        let mut v: Vec<DeviceInfo> = st
            .devs
            .values()
            .map(|d| DeviceInfo {
                id: d.id.clone(),
                size: d.size,
                read_only: d.read_only,
                mapped: d.map.len() as u64 * CHUNK,
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The byte ranges `(offset, length)` of `id` whose data may differ
    /// from `base`'s (a snapshot `id` descends from): the logical chunks
    /// the two map differently, since a write after the snapshot copied or
    /// newly allocated its chunk, and a trim unmapped it. Without a base:
    /// every allocated range. Adjacent chunks come as one range; the last
    /// range stops at `id`'s size. What an incremental backup moves.
    pub fn changed(&self, base: Option<&str>, id: &str) -> Result<Vec<(u64, u64)>> {
        let st = self.state.lock().expect("state");
        let dev = |name: &str| -> Result<&Dev> {
            let no = st
                .by_id
                .get(name)
                .ok_or_else(|| Error::NotFound(name.into()))?;
            Ok(&st.devs[no])
        };
        let d = dev(id)?;
        let empty = BTreeMap::new();
        let b = match base {
            Some(b) => &dev(b)?.map,
            None => &empty,
        };
        let mut chunks: Vec<u32> = d
            .map
            .iter()
            .filter(|(l, p)| b.get(l) != Some(p))
            .map(|(l, _)| *l)
            .collect();
        chunks.extend(b.keys().filter(|l| !d.map.contains_key(l)));
        chunks.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for l in chunks {
            let start = l as u64 * CHUNK;
            if start >= d.size {
                continue;
            }
            let len = CHUNK.min(d.size - start);
            match out.last_mut() {
                Some((o, n)) if *o + *n == start => *n += len,
                _ => out.push((start, len)),
            }
        }
        Ok(out)
    }

    /// Bytes of data chunks in use (each shared chunk once).
    pub fn allocated(&self) -> u64 {
        self.state.lock().expect("state").allocated_chunks() * CHUNK
    }

    /// Bytes the pool's files take on disk.
    pub fn disk_usage(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        ["data", "meta.log", "meta.ckpt"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.blocks() * 512)
            .sum()
    }

    /// A handle on a device for I/O.
    pub fn volume(self: &Arc<Self>, id: &str) -> Result<ThinVolume> {
        let st = self.state.lock().expect("state");
        let no = *st.by_id.get(id).ok_or_else(|| Error::NotFound(id.into()))?;
        Ok(ThinVolume {
            pool: self.clone(),
            no,
            read_only: st.devs[&no].read_only,
        })
    }

    fn size_of(&self, no: u32) -> u64 {
        self.state
            .lock()
            .expect("state")
            .devs
            .get(&no)
            .map_or(0, |d| d.size)
    }

    /// Waits until no write is copying `(no, l)`.
    fn settled<'a>(
        &'a self,
        mut st: std::sync::MutexGuard<'a, State>,
        no: u32,
        l: u32,
    ) -> std::sync::MutexGuard<'a, State> {
        while st.copying.contains(&(no, l)) {
            st = self.changed.wait(st).expect("state");
        }
        st
    }

    /// Where the bytes of a read are, with the ticket that keeps them.
    fn plan_read(
        &self,
        no: u32,
        offset: u64,
        len: usize,
        block: bool,
    ) -> Option<(Vec<Seg>, Ticket)> {
        let mut segs: Vec<Seg> = Vec::new();
        let mut st = self.state.lock().expect("state");
        if !block && busy(&st, no, offset, len) {
            return None;
        }
        let ticket = self.gate.enter();
        let mut pos = 0usize;
        while pos < len {
            let off = offset + pos as u64;
            let l = (off / CHUNK) as u32;
            let within = off % CHUNK;
            let n = ((CHUNK - within) as usize).min(len - pos);
            st = self.settled(st, no, l);
            let p = st.devs.get(&no).and_then(|d| d.map.get(&l).copied());
            match (p, segs.last_mut()) {
                (
                    Some(p),
                    Some(Seg::Data {
                        len: pl,
                        at,
                        pos: pp,
                    }),
                ) if *at + *pl as u64 == p as u64 * CHUNK + within && *pp + *pl == pos => *pl += n,
                (Some(p), _) => segs.push(Seg::Data {
                    pos,
                    len: n,
                    at: p as u64 * CHUNK + within,
                }),
                (None, Some(Seg::Zero { len: zl, .. })) => *zl += n,
                (None, _) => segs.push(Seg::Zero { pos, len: n }),
            }
            pos += n;
        }
        Some((segs, ticket))
    }

    fn read(&self, no: u32, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let (segs, _ticket) = self
            .plan_read(no, offset, buf.len(), true)
            .expect("blocking plans always succeed");
        for s in segs {
            match s {
                Seg::Data { pos, len, at } => self.data.read_at(&mut buf[pos..pos + len], at)?,
                Seg::Zero { pos, len } => buf[pos..pos + len].fill(0),
            }
        }
        Ok(())
    }

    async fn read_vec(&self, no: u32, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let (segs, ticket) = self
            .plan_async(|| self.plan_read(no, offset, len, false))
            .await;
        let ticket = Arc::new(ticket);
        let keep = || Some(Box::new(ticket.clone()) as crate::engine::KeepAlive);
        if let [Seg::Data { len: n, at, .. }] = segs[..] {
            // One extent: the engine's buffer is the reply.
            return self.data.read_vec(at, n, keep()).await;
        }
        let mut buf = vec![0u8; len];
        for s in segs {
            if let Seg::Data { pos, len, at } = s {
                let b = self.data.read_vec(at, len, keep()).await?;
                buf[pos..pos + len].copy_from_slice(&b);
            }
        }
        Ok(buf)
    }

    /// Where the bytes of a write go: allocates and maps unmapped chunks,
    /// marks shared ones for copying. Returns whether the map changed.
    fn plan_write(
        &self,
        no: u32,
        offset: u64,
        len: usize,
        block: bool,
        cow: bool,
    ) -> Option<(Vec<Put>, bool, Ticket)> {
        let mut changed = false;
        let mut puts: Vec<Put> = Vec::new();
        let mut st = self.state.lock().expect("state");
        if !block && busy(&st, no, offset, len) {
            return None;
        }
        if !cow && needs_copy(&st, no, offset, len) {
            return None;
        }
        let ticket = self.gate.enter();
        let mut pos = 0usize;
        while pos < len {
            let off = offset + pos as u64;
            let l = (off / CHUNK) as u32;
            let within = off % CHUNK;
            let n = ((CHUNK - within) as usize).min(len - pos);
            st = self.settled(st, no, l);
            let cur = st.devs.get(&no).and_then(|d| d.map.get(&l).copied());
            let p = match cur {
                Some(p) if st.refs[p as usize] == 1 => p,
                Some(old) => {
                    // Shared: the write goes to a new chunk, mapped once it
                    // is on disk (a copy first, unless wholly overwritten),
                    // so a crash leaves the old data or the new.
                    let new = st.alloc();
                    st.copying.insert((no, l));
                    puts.push(Put::Cow {
                        l,
                        old,
                        new,
                        within,
                        pos,
                        len: n,
                    });
                    pos += n;
                    continue;
                }
                None => {
                    // Unmapped: a new chunk (a hole until written, so the
                    // map may be committed before the data is).
                    let new = st.alloc();
                    st.devs.get_mut(&no).expect("dev").map.insert(l, new);
                    st.pending.push(Op::Map { no, l, p: new });
                    changed = true;
                    new
                }
            };
            let at = p as u64 * CHUNK + within;
            match puts.last_mut() {
                Some(Put::Direct {
                    len: pl,
                    at: pa,
                    pos: pp,
                }) if *pa + *pl as u64 == at && *pp + *pl == pos => *pl += n,
                _ => puts.push(Put::Direct { pos, len: n, at }),
            }
            pos += n;
        }
        Some((puts, changed, ticket))
    }

    /// Plans without blocking the thread: while a chunk of the range is
    /// being copied, awaits the copy.
    async fn plan_async<T>(&self, mut plan: impl FnMut() -> Option<T>) -> T {
        loop {
            let n = self.copied.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if let Some(p) = plan() {
                return p;
            }
            n.await;
        }
    }

    fn guard(&self, no: u32, l: u32, old: u32, new: u32) -> CowGuard<'_> {
        CowGuard {
            pool: self,
            no,
            l,
            old,
            new,
            done: false,
        }
    }

    /// Writes; returns whether the map changed.
    fn write(&self, no: u32, data: &[u8], offset: u64, fua: bool) -> io::Result<bool> {
        let (puts, mut changed, _ticket) = self
            .plan_write(no, offset, data.len(), true, true)
            .expect("blocking plans always succeed");
        let mut guards = Vec::new();
        for p in &puts {
            if let Put::Cow { l, old, new, .. } = *p {
                guards.push(self.guard(no, l, old, new));
            }
        }
        let mut guards = guards.into_iter();
        for p in puts {
            match p {
                Put::Direct { pos, len, at } => {
                    self.data.write_at(&data[pos..pos + len], at, fua)?
                }
                Put::Cow {
                    old,
                    new,
                    within,
                    pos,
                    len,
                    ..
                } => {
                    let g = guards.next().expect("a guard per copy");
                    let mut chunk = vec![0u8; CHUNK as usize];
                    if len as u64 != CHUNK {
                        self.data.read_at(&mut chunk, old as u64 * CHUNK)?;
                    }
                    chunk[within as usize..within as usize + len]
                        .copy_from_slice(&data[pos..pos + len]);
                    self.data.write_at(&chunk, new as u64 * CHUNK, fua)?;
                    g.finish();
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    async fn write_vec(&self, no: u32, data: Vec<u8>, offset: u64, fua: bool) -> io::Result<bool> {
        let len = data.len();
        let (puts, mut changed, ticket) = self
            .plan_async(|| self.plan_write(no, offset, len, false, true))
            .await;
        let mut guards = Vec::new();
        for p in &puts {
            if let Put::Cow { l, old, new, .. } = *p {
                guards.push(self.guard(no, l, old, new));
            }
        }
        let ticket = Arc::new(ticket);
        let keep = || Some(Box::new(ticket.clone()) as crate::engine::KeepAlive);
        if let [Put::Direct { at, .. }] = puts[..] {
            self.data.write_vec(data, at, fua, keep()).await?;
            return Ok(changed);
        }
        let mut guards = guards.into_iter();
        for p in puts {
            match p {
                Put::Direct { pos, len, at } => {
                    self.data
                        .write_vec(data[pos..pos + len].to_vec(), at, fua, keep())
                        .await?
                }
                Put::Cow {
                    old,
                    new,
                    within,
                    pos,
                    len,
                    ..
                } => {
                    let g = guards.next().expect("a guard per copy");
                    let mut chunk = if len as u64 == CHUNK {
                        vec![0u8; CHUNK as usize]
                    } else {
                        self.data
                            .read_vec(old as u64 * CHUNK, CHUNK as usize, keep())
                            .await?
                    };
                    chunk[within as usize..within as usize + len]
                        .copy_from_slice(&data[pos..pos + len]);
                    self.data
                        .write_vec(chunk, new as u64 * CHUNK, fua, keep())
                        .await?;
                    g.finish();
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    /// Drops whole chunks of `[offset, offset+len)` from the map and zeroes
    /// the partial ends (which may copy).
    fn discard(&self, no: u32, offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        let first_whole = offset.div_ceil(CHUNK);
        let end_whole = end / CHUNK;
        let zero_piece = |from: u64, to: u64| -> io::Result<()> {
            if to <= from {
                return Ok(());
            }
            let l = (from / CHUNK) as u32;
            let mapped = {
                let st = self.state.lock().expect("state");
                st.devs.get(&no).is_some_and(|d| d.map.contains_key(&l))
            };
            if mapped {
                self.write(no, &vec![0u8; (to - from) as usize], from, false)?;
            }
            Ok(())
        };
        if first_whole >= end_whole {
            // Inside one chunk (or straddling two without a whole one).
            let mid = (offset / CHUNK + 1) * CHUNK;
            if mid >= end {
                return zero_piece(offset, end);
            }
            zero_piece(offset, mid)?;
            return zero_piece(mid, end);
        }
        zero_piece(offset, first_whole * CHUNK)?;
        zero_piece(end_whole * CHUNK, end)?;
        let mut st = self.state.lock().expect("state");
        let (l0, l1) = (first_whole as u32, end_whole as u32);
        for l in l0..l1 {
            st = self.settled(st, no, l);
        }
        let Some(d) = st.devs.get_mut(&no) else {
            return Ok(());
        };
        let gone: Vec<(u32, u32)> = d.map.range(l0..l1).map(|(l, p)| (*l, *p)).collect();
        for (l, _) in &gone {
            d.map.remove(l);
        }
        if !gone.is_empty() {
            for (_, p) in &gone {
                st.decref(*p);
            }
            st.pending.push(Op::Unmap {
                no,
                l: l0,
                n: l1 - l0,
            });
        }
        Ok(())
    }

    fn extents(&self, no: u32, offset: u64, len: u64) -> Vec<Extent> {
        let st = self.state.lock().expect("state");
        let Some(d) = st.devs.get(&no) else {
            return Vec::new();
        };
        let end = (offset + len).min(d.size);
        let mut out: Vec<Extent> = Vec::new();
        let mut pos = offset;
        let mut push = |len: u64, hole: bool| match out.last_mut() {
            Some(e) if e.hole == hole => e.len += len,
            _ => out.push(Extent { len, hole }),
        };
        while pos < end {
            let l = (pos / CHUNK) as u32;
            let next = ((l as u64 + 1) * CHUNK).min(end);
            if d.map.contains_key(&l) {
                push(next - pos, false);
                pos = next;
            } else {
                // Skip to the next mapped chunk.
                let nm = d
                    .map
                    .range(l..)
                    .next()
                    .map_or(end, |(k, _)| (*k as u64 * CHUNK).min(end));
                push(nm - pos, true);
                pos = nm;
            }
        }
        out
    }

    fn pending_len(&self) -> usize {
        self.state.lock().expect("state").pending.len()
    }
}

/// Whether a chunk of `[offset, offset+len)` of device `no` is being
/// copied.
fn busy(st: &State, no: u32, offset: u64, len: usize) -> bool {
    if st.copying.is_empty() || len == 0 {
        return false;
    }
    let first = (offset / CHUNK) as u32;
    let last = ((offset + len as u64 - 1) / CHUNK) as u32;
    (first..=last).any(|l| st.copying.contains(&(no, l)))
}

/// Whether a write of `[offset, offset+len)` to device `no` touches a
/// shared chunk (which it must copy, or at least remap once written).
fn needs_copy(st: &State, no: u32, offset: u64, len: usize) -> bool {
    let Some(d) = st.devs.get(&no) else {
        return false;
    };
    if len == 0 {
        return false;
    }
    let first = (offset / CHUNK) as u32;
    let last = ((offset + len as u64 - 1) / CHUNK) as u32;
    d.map
        .range(first..=last)
        .any(|(_, p)| st.refs[*p as usize] > 1)
}

fn check_size(size: u64) -> Result<()> {
    if size == 0 || !size.is_multiple_of(512) || size > MAX_SIZE {
        return Err(Error::Invalid(format!(
            "size {size} must be a positive multiple of 512 bytes, at most {MAX_SIZE}"
        )));
    }
    Ok(())
}

fn runs(map: &BTreeMap<u32, u32>) -> Vec<(u32, u32, u32)> {
    let mut out: Vec<(u32, u32, u32)> = Vec::new();
    for (l, p) in map {
        match out.last_mut() {
            Some((rl, rp, n)) if *rl + *n == *l && *rp + *n == *p => *n += 1,
            _ => out.push((*l, *p, 1)),
        }
    }
    out
}

mod volume;
pub use volume::ThinVolume;

#[cfg(test)]
mod tests;
