//! A device of a pool as the exports see it: the [`Volume`] trait over
//! [`ThinPool`]'s reads, writes, flushes, trims and zeroes.

use super::*;

/// One device of a pool, as the exports use it.
pub struct ThinVolume {
    pub(super) pool: Arc<ThinPool>,
    pub(super) no: u32,
    pub(super) read_only: bool,
}

fn to_io(e: Error) -> io::Error {
    match e {
        Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl ThinVolume {
    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        if offset.checked_add(len).is_none_or(|e| e > self.size()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "request past the end of the volume",
            ));
        }
        Ok(())
    }

    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(())
    }

    /// Commits when writes have left too much uncommitted.
    fn bound_pending(&self) -> io::Result<()> {
        if self.pool.pending_len() > MAX_PENDING {
            self.pool.flush().map_err(to_io)?;
        }
        Ok(())
    }
}

impl Volume for ThinVolume {
    fn size(&self) -> u64 {
        self.pool.size_of(self.no)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        self.pool.read(self.no, buf, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.writable()?;
        self.check(offset, data.len() as u64)?;
        let changed = self.pool.write(self.no, data, offset, fua)?;
        if fua && changed {
            self.pool.flush().map_err(to_io)?;
        }
        self.bound_pending()
    }

    fn read_vec(&self, offset: u64, len: usize) -> BoxFuture<'_, io::Result<Vec<u8>>> {
        Box::pin(async move {
            self.check(offset, len as u64)?;
            self.pool.read_vec(self.no, offset, len).await
        })
    }

    fn write_vec(&self, data: Vec<u8>, offset: u64, fua: bool) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            self.writable()?;
            self.check(offset, data.len() as u64)?;
            let changed = self.pool.write_vec(self.no, data, offset, fua).await?;
            if (fua && changed) || self.pool.pending_len() > MAX_PENDING {
                let pool = self.pool.clone();
                crate::volume::blocking(move || pool.flush()).map_err(to_io)?;
            }
            Ok(())
        })
    }

    fn flush(&self) -> io::Result<()> {
        self.pool.flush().map_err(to_io)
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.writable()?;
        self.check(offset, len)?;
        self.pool.discard(self.no, offset, len)?;
        self.bound_pending()
    }

    fn write_zeroes(&self, offset: u64, len: u64, _may_unmap: bool) -> io::Result<()> {
        // Unmapped chunks read as zeros: metadata only, except at the ends.
        self.trim(offset, len)
    }

    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        Ok(self.pool.extents(self.no, offset, len))
    }

    fn backing(&self) -> Option<&EngineFile> {
        Some(&self.pool.data)
    }

    // The caller keeps plans in range (the `Volume` contract), so they
    // take the pool's lock once.
    fn plan_read(&self, offset: u64, len: usize) -> Option<Plan> {
        let (segs, ticket) = self.pool.plan_read(self.no, offset, len, false)?;
        Some(Plan {
            segs,
            keep: Some(Box::new(ticket)),
            changed: false,
        })
    }

    fn plan_write(&self, offset: u64, len: usize) -> Option<Plan> {
        self.writable().ok()?;
        let (puts, changed, ticket) = self.pool.plan_write(self.no, offset, len, false, false)?;
        let segs = puts
            .into_iter()
            .map(|p| match p {
                Put::Direct { pos, len, at } => Some(Seg::Data { pos, len, at }),
                Put::Cow { .. } => None,
            })
            .collect::<Option<Vec<_>>>()
            .expect("plans without copies have only direct pieces");
        Some(Plan {
            segs,
            keep: Some(Box::new(ticket)),
            changed,
        })
    }

    fn wrote(&self, plan: Plan, fua: bool) -> bool {
        (fua && plan.changed) || self.pool.pending_len() > MAX_PENDING
    }
}
