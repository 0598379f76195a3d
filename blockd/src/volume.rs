//! Volumes as the exports see them: a byte range with read, write, flush,
//! trim, write-zeroes and allocation status.
//!
//! [`FileVolume`] serves a plain (sparse) file on the io_uring engine:
//! unwritten ranges are holes that read as zeros, TRIM punches holes,
//! WRITE_ZEROES punches or zero-ranges, and allocation status comes from
//! `SEEK_DATA`/`SEEK_HOLE`. Volumes of the control plane live in thin
//! pools ([`crate::thin::ThinVolume`]), which implement the same trait.

use nix::fcntl::{fallocate, FallocateFlags};
use nix::unistd::{lseek, Whence};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// One extent of allocation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub len: u64,
    /// Not allocated (reads as zeros and costs no space).
    pub hole: bool,
}

/// Runs blocking volume I/O from async code: on the multi-threaded
/// runtime through `block_in_place`, elsewhere directly.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Where a piece of an I/O lives in the volume's backing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    /// Bytes `[pos, pos+len)` of the request are at byte `at` of the file.
    Data { pos: usize, len: usize, at: u64 },
    /// Bytes `[pos, pos+len)` of the request read as zeros (reads only).
    Zero { pos: usize, len: usize },
}

/// An I/O planned for an export that does it itself, on its own ring,
/// against [`Volume::backing`]. `keep` must live until the I/O has
/// finished (it holds the chunks the plan points at).
pub struct Plan {
    pub segs: Vec<Seg>,
    pub keep: Option<crate::engine::KeepAlive>,
    /// A write that changed the volume's map.
    pub changed: bool,
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

pub trait Volume: Send + Sync {
    fn size(&self) -> u64;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// `fua`: durable before returning.
    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()>;
    fn flush(&self) -> io::Result<()>;
    fn trim(&self, offset: u64, len: u64) -> io::Result<()>;
    /// `may_unmap`: the range may become a hole rather than allocated zeros.
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()>;
    /// Allocation of `[offset, offset + len)`, in order, covering at least
    /// the first byte.
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>>;
    /// `read_at` for async callers, on an owned buffer (volumes on the
    /// engine do it without blocking a thread).
    fn read_vec(&self, offset: u64, len: usize) -> BoxFuture<'_, io::Result<Vec<u8>>> {
        Box::pin(async move {
            let mut b = vec![0u8; len];
            blocking(|| self.read_at(&mut b, offset))?;
            Ok(b)
        })
    }
    /// `write_at` for async callers.
    fn write_vec(&self, data: Vec<u8>, offset: u64, fua: bool) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move { blocking(|| self.write_at(&data, offset, fua)) })
    }
    /// Writes are refused (a snapshot).
    fn read_only(&self) -> bool {
        false
    }
    /// The QoS limiter requests to this volume go through, if any.
    fn qos(&self) -> Option<&crate::qos::Limiter> {
        None
    }
    /// The file that [`Plan`]s point into, for exports with a ring of
    /// their own.
    fn backing(&self) -> Option<&crate::engine::EngineFile> {
        None
    }
    /// Plans a read of `[offset, offset+len)` (in range, aligned to the
    /// backing file) for direct I/O; None when it cannot be planned
    /// without waiting (the caller uses `read_vec`).
    fn plan_read(&self, _offset: u64, _len: usize) -> Option<Plan> {
        None
    }
    /// Plans a write like [`Volume::plan_read`]: every piece is `Data`.
    /// None when the write needs more than plain writes (a copy on
    /// write, a read-only volume): the caller uses `write_vec`.
    fn plan_write(&self, _offset: u64, _len: usize) -> Option<Plan> {
        None
    }
    /// A planned write is on disk (with `RWF_DSYNC` when `fua`): whether
    /// the volume must be flushed before the write is acknowledged.
    fn wrote(&self, _plan: Plan, _fua: bool) -> bool {
        false
    }
}

/// I/O counters of an exported volume (since it was exported in this run
/// of blockd). Reads count each data extent read.
#[derive(Debug, Default)]
pub struct IoStats {
    read_ops: AtomicU64,
    read_bytes: AtomicU64,
    write_ops: AtomicU64,
    write_bytes: AtomicU64,
    flush_ops: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    pub read_ops: u64,
    pub read_bytes: u64,
    pub write_ops: u64,
    pub write_bytes: u64,
    pub flush_ops: u64,
}

impl IoStats {
    pub fn snapshot(&self) -> IoCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IoCounters {
            read_ops: g(&self.read_ops),
            read_bytes: g(&self.read_bytes),
            write_ops: g(&self.write_ops),
            write_bytes: g(&self.write_bytes),
            flush_ops: g(&self.flush_ops),
        }
    }

    fn count(&self, ops: &AtomicU64, bytes: Option<(&AtomicU64, usize)>) {
        ops.fetch_add(1, Ordering::Relaxed);
        if let Some((b, n)) = bytes {
            b.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// An exported volume: behind its QoS limiter (shared with the service,
/// which changes its limits while the volume is exported) and counted.
pub struct Throttled {
    pub inner: Box<dyn Volume>,
    pub limiter: std::sync::Arc<crate::qos::Limiter>,
    pub stats: std::sync::Arc<IoStats>,
}

impl Volume for Throttled {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)?;
        let s = &self.stats;
        s.count(&s.read_ops, Some((&s.read_bytes, buf.len())));
        Ok(())
    }
    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.inner.write_at(data, offset, fua)?;
        let s = &self.stats;
        s.count(&s.write_ops, Some((&s.write_bytes, data.len())));
        Ok(())
    }
    fn read_vec(&self, offset: u64, len: usize) -> BoxFuture<'_, io::Result<Vec<u8>>> {
        Box::pin(async move {
            let b = self.inner.read_vec(offset, len).await?;
            let s = &self.stats;
            s.count(&s.read_ops, Some((&s.read_bytes, len)));
            Ok(b)
        })
    }
    fn write_vec(&self, data: Vec<u8>, offset: u64, fua: bool) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let n = data.len();
            self.inner.write_vec(data, offset, fua).await?;
            let s = &self.stats;
            s.count(&s.write_ops, Some((&s.write_bytes, n)));
            Ok(())
        })
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()?;
        self.stats.count(&self.stats.flush_ops, None);
        Ok(())
    }
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.trim(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()> {
        self.inner.write_zeroes(offset, len, may_unmap)
    }
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.inner.extents(offset, len)
    }
    fn qos(&self) -> Option<&crate::qos::Limiter> {
        Some(&self.limiter)
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn backing(&self) -> Option<&crate::engine::EngineFile> {
        self.inner.backing()
    }
    fn plan_read(&self, offset: u64, len: usize) -> Option<Plan> {
        let p = self.inner.plan_read(offset, len)?;
        let s = &self.stats;
        s.count(&s.read_ops, Some((&s.read_bytes, len)));
        Some(p)
    }
    fn plan_write(&self, offset: u64, len: usize) -> Option<Plan> {
        let p = self.inner.plan_write(offset, len)?;
        let s = &self.stats;
        s.count(&s.write_ops, Some((&s.write_bytes, len)));
        Some(p)
    }
    fn wrote(&self, plan: Plan, fua: bool) -> bool {
        self.inner.wrote(plan, fua)
    }
}

/// A volume that is a plain file (or block device), served as it is, on
/// the io_uring engine.
pub struct FileVolume {
    file: crate::engine::EngineFile,
    size: u64,
}

impl FileVolume {
    /// Opens a volume file (it must exist; its length is the volume size).
    pub fn open(path: &Path) -> io::Result<FileVolume> {
        let file = crate::engine::EngineFile::open(crate::engine::Engine::global()?, path, false)?;
        let size = file.file().metadata()?.len();
        Ok(FileVolume { file, size })
    }

    /// Creates a thin volume of `size` bytes (a file that is all hole).
    pub fn create(path: &Path, size: u64) -> io::Result<FileVolume> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?
            .set_len(size)?;
        Self::open(path)
    }

    fn fd(&self) -> std::os::fd::RawFd {
        self.file.file().as_raw_fd()
    }
}

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Volume for FileVolume {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_at(buf, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.file.write_at(data, offset, fua)
    }

    fn read_vec(&self, offset: u64, len: usize) -> BoxFuture<'_, io::Result<Vec<u8>>> {
        Box::pin(self.file.read_vec(offset, len, None))
    }

    fn write_vec(&self, data: Vec<u8>, offset: u64, fua: bool) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(self.file.write_vec(data, offset, fua, None))
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        fallocate(
            self.fd(),
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            offset as i64,
            len as i64,
        )
        .map_err(errno)
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()> {
        let flags = if may_unmap {
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE
        } else {
            FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE
        };
        match fallocate(self.fd(), flags, offset as i64, len as i64) {
            Ok(()) => Ok(()),
            // A filesystem without zero-range: write the zeros.
            Err(nix::errno::Errno::EOPNOTSUPP) => {
                let zeros = vec![0u8; 1 << 20];
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(zeros.len() as u64) as usize;
                    self.file.write_at(&zeros[..n], offset + done, false)?;
                    done += n as u64;
                }
                Ok(())
            }
            Err(e) => Err(errno(e)),
        }
    }

    fn backing(&self) -> Option<&crate::engine::EngineFile> {
        Some(&self.file)
    }

    fn plan_read(&self, offset: u64, len: usize) -> Option<Plan> {
        Some(Plan {
            segs: vec![Seg::Data {
                pos: 0,
                len,
                at: offset,
            }],
            keep: None,
            changed: false,
        })
    }

    fn plan_write(&self, offset: u64, len: usize) -> Option<Plan> {
        self.plan_read(offset, len)
    }

    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let end = (offset + len).min(self.size);
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let data = match lseek(self.fd(), pos as i64, Whence::SeekData) {
                Ok(d) => d as u64,
                Err(nix::errno::Errno::ENXIO) => self.size,
                Err(e) => return Err(errno(e)),
            };
            if data > pos {
                out.push(Extent {
                    len: data.min(end) - pos,
                    hole: true,
                });
                pos = data.min(end);
                continue;
            }
            let hole = match lseek(self.fd(), pos as i64, Whence::SeekHole) {
                Ok(h) => h as u64,
                Err(e) => return Err(errno(e)),
            };
            out.push(Extent {
                len: hole.min(end) - pos,
                hole: false,
            });
            pos = hole.min(end);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thin_file_reads_zeros_and_reports_holes() {
        let d = tempfile::tempdir().unwrap();
        let v = FileVolume::create(&d.path().join("v"), 64 << 20).unwrap();
        let mut buf = vec![1u8; 4096];
        v.read_at(&mut buf, 10 << 20).unwrap();
        assert!(buf.iter().all(|b| *b == 0));
        assert_eq!(
            v.extents(0, 64 << 20).unwrap(),
            vec![Extent {
                len: 64 << 20,
                hole: true
            }]
        );
        v.write_at(&[7u8; 1 << 20], 8 << 20, true).unwrap();
        let ex = v.extents(0, 64 << 20).unwrap();
        assert!(ex.iter().any(|e| !e.hole), "{ex:?}");
        assert_eq!(ex.iter().map(|e| e.len).sum::<u64>(), 64 << 20);
        v.trim(8 << 20, 1 << 20).unwrap();
        v.read_at(&mut buf, 8 << 20).unwrap();
        assert!(buf.iter().all(|b| *b == 0), "trimmed range reads zeros");
        assert_eq!(
            v.extents(0, 64 << 20).unwrap(),
            vec![Extent {
                len: 64 << 20,
                hole: true
            }]
        );
    }
}
