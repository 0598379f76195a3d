//! The I/O engine: io_uring rings, one per worker thread.
//!
//! Every file blockd reads or writes for a volume is opened here, and all
//! volume I/O but the NBD fast path goes through these rings (an NBD
//! connection does its reads and writes on a ring of its own, on the file
//! opened here: see `export::nbd::ring`):
//!
//! - Files are opened with `O_DIRECT` where the filesystem allows it (the
//!   page cache is bypassed, so a FLUSH means the device) and registered in
//!   every ring (`register_files_update` into a sparse table): requests name
//!   a slot, not a descriptor.
//! - Each worker owns a ring and an arena of page-aligned buffers registered
//!   with the ring (`READ_FIXED`/`WRITE_FIXED`; plain `READ`/`WRITE` of the
//!   same arena when RLIMIT_MEMLOCK is below it); a request is cut into
//!   buffer-sized chunks, copied in (writes) or out (reads) of the arena.
//! - Submission is batched: a worker drains its queue, pushes every chunk it
//!   has buffers for, and enters the kernel once (`submit_and_wait`) for
//!   the whole batch and its next completion.
//! - FLUSH is `IORING_OP_FSYNC` with `DATASYNC`; FUA is a write with
//!   `RWF_DSYNC`, both through the ring.
//!
//! Callers are synchronous (the NBD and vhost-user exports call volumes
//! from blocking contexts): they hand a worker a request through a channel,
//! wake it through an eventfd the ring is reading, and wait for the reply.
//! The caller's buffer stays borrowed until the reply comes, which is what
//! makes handing the worker a raw pointer to it sound.

use io_uring::{opcode, types, IoUring};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};

/// Size of one registered buffer, and so the largest piece of a request
/// that one submission carries.
pub const CHUNK: usize = 128 << 10;
const BUFFERS: usize = 64;
const RING_ENTRIES: u32 = 256;
const MAX_FILES: u32 = 4096;

/// The registered-file table's size: MAX_FILES, or less when
/// RLIMIT_NOFILE is lower (the kernel refuses a larger sparse table).
fn file_table_size() -> u32 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 256;
    }
    (r.rlim_cur.min(MAX_FILES as libc::rlim_t) as u32).max(16)
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (an NBD
/// connection holds a socket and a ring; the file table wants up to
/// MAX_FILES slots), as daemons do at start.
pub fn raise_nofile_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}
const WAKE: u64 = u64::MAX;
const NO_BUF: u32 = u32::MAX;

enum Kind {
    Read,
    Write { dsync: bool },
    Sync,
}

/// Anything a request keeps alive until it completes (see
/// [`EngineFile::read_vec`]).
pub type KeepAlive = Box<dyn std::any::Any + Send>;

/// How a request's completion reaches its caller.
enum Done {
    /// A blocked caller whose memory `ptr` points into.
    Sync(SyncSender<io::Result<()>>),
    /// An awaiting caller: the request owns the buffer `ptr` points into
    /// and hands it back, so dropping the future cannot free memory the
    /// kernel is still using.
    Async {
        tx: tokio::sync::oneshot::Sender<(io::Result<()>, Vec<u8>)>,
        buf: Vec<u8>,
        _keep: Option<KeepAlive>,
    },
}

impl Done {
    fn send(self, r: io::Result<()>) {
        match self {
            Done::Sync(tx) => {
                let _ = tx.send(r);
            }
            Done::Async { tx, buf, _keep } => {
                let _ = tx.send((r, buf));
            }
        }
    }
}

/// A request as a worker receives it. `ptr`/`len` are the caller's memory
/// (destination of a read, source of a write), valid until `done` fires.
struct Request {
    kind: Kind,
    slot: u32,
    offset: u64,
    ptr: *mut u8,
    len: usize,
    done: Done,
}

// SAFETY: the pointer is dereferenced only by the worker before `done`
// fires, and the memory it points to outlives that: a sync caller blocks
// until then, an async request owns the buffer.
unsafe impl Send for Request {}

enum Msg {
    Io(Request),
    File {
        slot: u32,
        fd: RawFd,
        done: SyncSender<io::Result<()>>,
    },
    Stop,
}

struct Worker {
    tx: Sender<Msg>,
    wake: OwnedFd,
}

/// The process's rings.
pub struct Engine {
    workers: Vec<Worker>,
    next: AtomicUsize,
    free_slots: Mutex<Vec<u32>>,
}

impl Engine {
    /// The engine of this process (one worker per CPU, at most four;
    /// `URSA_BLOCKD_RINGS` overrides).
    pub fn global() -> io::Result<Arc<Engine>> {
        static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
        if let Some(e) = ENGINE.get() {
            return Ok(e.clone());
        }
        let n = std::env::var("URSA_BLOCKD_RINGS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .clamp(1, 4);
        let e = Arc::new(Engine::new(n)?);
        Ok(ENGINE.get_or_init(|| e).clone())
    }

    pub fn new(workers: usize) -> io::Result<Engine> {
        let files = file_table_size();
        let mut ws = Vec::new();
        for i in 0..workers.max(1) {
            let ring = IoUring::new(RING_ENTRIES)?;
            // SAFETY: plain syscall; the result is checked.
            let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if efd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a descriptor we just created and own.
            let wake = unsafe { OwnedFd::from_raw_fd(efd) };
            let (tx, rx) = mpsc::channel();
            let (ready_tx, ready_rx) = mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name(format!("blockd-ring{i}"))
                .spawn(move || run(ring, rx, efd, ready_tx, files))?;
            ready_rx
                .recv()
                .map_err(|_| io::Error::other("ring worker died"))??;
            ws.push(Worker { tx, wake });
        }
        Ok(Engine {
            workers: ws,
            next: AtomicUsize::new(0),
            free_slots: Mutex::new((0..files).rev().collect()),
        })
    }

    fn send(&self, w: &Worker, m: Msg) -> io::Result<()> {
        w.tx.send(m)
            .map_err(|_| io::Error::other("I/O engine stopped"))?;
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        let r = unsafe {
            libc::write(
                w.wake.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn set_file(&self, slot: u32, fd: RawFd) -> io::Result<()> {
        for w in &self.workers {
            let (done, rx) = mpsc::sync_channel(1);
            self.send(w, Msg::File { slot, fd, done })?;
            rx.recv()
                .map_err(|_| io::Error::other("I/O engine stopped"))??;
        }
        Ok(())
    }

    fn submit(
        &self,
        kind: Kind,
        slot: u32,
        offset: u64,
        ptr: *mut u8,
        len: usize,
    ) -> io::Result<()> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let (done, rx) = mpsc::sync_channel(1);
        self.send(
            &self.workers[i],
            Msg::Io(Request {
                kind,
                slot,
                offset,
                ptr,
                len,
                done: Done::Sync(done),
            }),
        )?;
        rx.recv()
            .map_err(|_| io::Error::other("I/O engine stopped"))?
    }

    /// Submits a request on an owned buffer and awaits it.
    async fn submit_owned(
        &self,
        kind: Kind,
        slot: u32,
        offset: u64,
        mut buf: Vec<u8>,
        keep: Option<KeepAlive>,
    ) -> (io::Result<()>, Vec<u8>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ptr = buf.as_mut_ptr();
        let len = buf.len();
        if let Err(e) = self.send(
            &self.workers[i],
            Msg::Io(Request {
                kind,
                slot,
                offset,
                ptr,
                len,
                done: Done::Async {
                    tx,
                    buf,
                    _keep: keep,
                },
            }),
        ) {
            return (Err(e), Vec::new());
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => (Err(io::Error::other("I/O engine stopped")), Vec::new()),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = self.send(w, Msg::Stop);
        }
    }
}

/// A file registered with the engine.
pub struct EngineFile {
    engine: Arc<Engine>,
    slot: u32,
    file: File,
    /// Opened with O_DIRECT.
    pub direct: bool,
    /// Offsets and lengths the kernel accepts (the device's logical block
    /// size under O_DIRECT, 1 otherwise).
    pub align: u64,
}

impl EngineFile {
    /// Opens (or creates, when `create`) a file read-write, O_DIRECT where
    /// the filesystem supports it, and registers it.
    pub fn open(engine: Arc<Engine>, path: &Path, create: bool) -> io::Result<EngineFile> {
        let open = |direct: bool| {
            let mut o = std::fs::OpenOptions::new();
            o.read(true).write(true).create(create);
            if direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(path)
        };
        let (file, direct) = match open(true) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(false)?, false),
            Err(e) => return Err(e),
        };
        let align = if direct { probe_align(&file) } else { 1 };
        let slot = engine
            .free_slots
            .lock()
            .expect("slots")
            .pop()
            .ok_or_else(|| io::Error::other("too many open volume files"))?;
        if let Err(e) = engine.set_file(slot, file.as_raw_fd()) {
            engine.free_slots.lock().expect("slots").push(slot);
            return Err(e);
        }
        Ok(EngineFile {
            engine,
            slot,
            file,
            direct,
            align,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    fn aligned(&self, offset: u64, len: usize) -> bool {
        offset.is_multiple_of(self.align) && (len as u64).is_multiple_of(self.align)
    }

    /// Reads `buf.len()` bytes at `offset`; past the end of the file reads
    /// zeros.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.aligned(offset, buf.len()) {
            return self
                .engine
                .submit(Kind::Read, self.slot, offset, buf.as_mut_ptr(), buf.len());
        }
        let start = offset - offset % self.align;
        let end = (offset + buf.len() as u64).div_ceil(self.align) * self.align;
        let mut tmp = vec![0u8; (end - start) as usize];
        self.read_at(&mut tmp, start)?;
        let s = (offset - start) as usize;
        buf.copy_from_slice(&tmp[s..s + buf.len()]);
        Ok(())
    }

    /// Writes `data` at `offset`; `dsync`: durable before returning (FUA).
    /// Unaligned writes read, merge and write the blocks they touch.
    pub fn write_at(&self, data: &[u8], offset: u64, dsync: bool) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.aligned(offset, data.len()) {
            return self.engine.submit(
                Kind::Write { dsync },
                self.slot,
                offset,
                data.as_ptr() as *mut u8,
                data.len(),
            );
        }
        let start = offset - offset % self.align;
        let end = (offset + data.len() as u64).div_ceil(self.align) * self.align;
        let mut tmp = vec![0u8; (end - start) as usize];
        self.read_at(&mut tmp, start)?;
        let s = (offset - start) as usize;
        tmp[s..s + data.len()].copy_from_slice(data);
        self.write_at(&tmp, start, dsync)
    }

    /// Reads `len` bytes at `offset` without blocking the caller's thread;
    /// `keep` lives until the kernel is done with the request.
    pub async fn read_vec(
        &self,
        offset: u64,
        len: usize,
        keep: Option<KeepAlive>,
    ) -> io::Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        if self.aligned(offset, len) {
            let (r, buf) = self
                .engine
                .submit_owned(Kind::Read, self.slot, offset, vec![0u8; len], keep)
                .await;
            return r.map(|()| buf);
        }
        let start = offset - offset % self.align;
        let end = (offset + len as u64).div_ceil(self.align) * self.align;
        let (r, mut buf) = self
            .engine
            .submit_owned(
                Kind::Read,
                self.slot,
                start,
                vec![0u8; (end - start) as usize],
                keep,
            )
            .await;
        r?;
        buf.drain(..(offset - start) as usize);
        buf.truncate(len);
        Ok(buf)
    }

    /// Writes `data` at `offset` without blocking the caller's thread
    /// (unaligned writes, which read-modify-write, block it).
    pub async fn write_vec(
        &self,
        data: Vec<u8>,
        offset: u64,
        dsync: bool,
        keep: Option<KeepAlive>,
    ) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if !self.aligned(offset, data.len()) {
            let r = crate::volume::blocking(|| self.write_at(&data, offset, dsync));
            drop(keep);
            return r;
        }
        self.engine
            .submit_owned(Kind::Write { dsync }, self.slot, offset, data, keep)
            .await
            .0
    }

    /// fdatasync through the ring.
    pub fn sync_data(&self) -> io::Result<()> {
        self.engine
            .submit(Kind::Sync, self.slot, 0, std::ptr::null_mut(), 0)
    }
}

impl Drop for EngineFile {
    fn drop(&mut self) {
        // Every request on this file has completed (callers wait), so the
        // slot can be cleared and reused.
        if self.engine.set_file(self.slot, -1).is_ok() {
            self.engine
                .free_slots
                .lock()
                .expect("slots")
                .push(self.slot);
        }
    }
}

/// The logical block size O_DIRECT wants here: 512 if a 512-byte read at
/// an aligned address works, else 4096.
fn probe_align(file: &File) -> u64 {
    let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("layout");
    // SAFETY: a non-zero layout; freed below.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return 4096;
    }
    // SAFETY: p points to 4096 writable bytes.
    let r = unsafe { libc::pread(file.as_raw_fd(), p as *mut libc::c_void, 512, 0) };
    let err = io::Error::last_os_error();
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(p, layout) };
    if r < 0 && err.raw_os_error() == Some(libc::EINVAL) {
        4096
    } else {
        512
    }
}

/// A piece of a request in flight (or waiting for a buffer).
#[derive(Clone, Copy)]
struct Piece {
    req: usize,
    /// Where in the request's memory this piece starts.
    pos: usize,
    offset: u64,
    len: usize,
}

struct Pending {
    req: Request,
    left: usize,
    err: Option<io::Error>,
}

struct Arena {
    base: *mut u8,
    layout: std::alloc::Layout,
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `run`.
        unsafe { std::alloc::dealloc(self.base, self.layout) };
    }
}

fn run(
    mut ring: IoUring,
    rx: Receiver<Msg>,
    wake: RawFd,
    ready: SyncSender<io::Result<()>>,
    files: u32,
) {
    let layout = std::alloc::Layout::from_size_align(CHUNK * BUFFERS, 4096).expect("layout");
    // SAFETY: non-zero layout; owned by `arena`, freed on return.
    let base = unsafe { std::alloc::alloc_zeroed(layout) };
    if base.is_null() {
        let _ = ready.send(Err(io::Error::other("no memory for ring buffers")));
        return;
    }
    let arena = Arena { base, layout };
    let iovecs: Vec<libc::iovec> = (0..BUFFERS)
        .map(|i| libc::iovec {
            // SAFETY: inside the arena.
            iov_base: unsafe { arena.base.add(i * CHUNK) } as *mut libc::c_void,
            iov_len: CHUNK,
        })
        .collect();
    // Registered buffers are pinned and count against RLIMIT_MEMLOCK for
    // a user without CAP_IPC_LOCK (8 MiB by default, one ring's arena):
    // past it the ring reads and writes the same arena unregistered, a
    // little slower, and says so once.
    // SAFETY: the arena outlives the ring's use of it (both live to the
    // end of this function; the ring is dropped first).
    let fixed = match unsafe { ring.submitter().register_buffers(&iovecs) } {
        Ok(()) => true,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOMEM) | Some(libc::EPERM)) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    error = %e,
                    arena_kib = CHUNK * BUFFERS / 1024,
                    "io_uring buffers not registered: over RLIMIT_MEMLOCK (raise `ulimit -l`, or LimitMEMLOCK= in a unit, to at least {} KiB per ring for fixed buffers); using unregistered buffers",
                    CHUNK * BUFFERS / 1024
                )
            });
            false
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let setup = ring.submitter().register_files_sparse(files);
    let failed = setup.is_err();
    let _ = ready.send(setup);
    if failed {
        return;
    }
    let mut wake_buf = [0u8; 8];
    let mut reqs: Vec<Option<Pending>> = Vec::new();
    let mut free_reqs: Vec<usize> = Vec::new();
    let mut bufs: Vec<Option<Piece>> = vec![None; BUFFERS];
    let mut free_bufs: Vec<u32> = (0..BUFFERS as u32).rev().collect();
    let mut queue: VecDeque<Piece> = VecDeque::new();
    let mut syncs: VecDeque<usize> = VecDeque::new();
    let mut wake_armed = false;
    loop {
        if !wake_armed {
            let e = opcode::Read::new(types::Fd(wake), wake_buf.as_mut_ptr(), 8)
                .build()
                .user_data(WAKE);
            // SAFETY: wake_buf lives as long as the ring.
            if unsafe { ring.submission().push(&e) }.is_ok() {
                wake_armed = true;
            }
        }
        // Take in everything that has arrived.
        loop {
            match rx.try_recv() {
                Ok(Msg::Io(req)) => {
                    let id = match free_reqs.pop() {
                        Some(i) => i,
                        None => {
                            reqs.push(None);
                            reqs.len() - 1
                        }
                    };
                    let pieces = if matches!(req.kind, Kind::Sync) {
                        syncs.push_back(id);
                        1
                    } else {
                        let n = req.len.div_ceil(CHUNK);
                        for k in 0..n {
                            let pos = k * CHUNK;
                            queue.push_back(Piece {
                                req: id,
                                pos,
                                offset: req.offset + pos as u64,
                                len: CHUNK.min(req.len - pos),
                            });
                        }
                        n
                    };
                    reqs[id] = Some(Pending {
                        req,
                        left: pieces,
                        err: None,
                    });
                }
                Ok(Msg::File { slot, fd, done }) => {
                    let r = ring
                        .submitter()
                        .register_files_update(slot, &[fd])
                        .map(|_| ());
                    let _ = done.send(r);
                }
                Ok(Msg::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        // Push what we can.
        while let Some(&id) = syncs.front() {
            let p = reqs[id].as_ref().expect("live request");
            let e = opcode::Fsync::new(types::Fixed(p.req.slot))
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(((id as u64) << 32) | NO_BUF as u64);
            // SAFETY: no memory is referenced.
            if unsafe { ring.submission().push(&e) }.is_err() {
                break;
            }
            syncs.pop_front();
        }
        while !queue.is_empty() && !free_bufs.is_empty() && !ring.submission().is_full() {
            let piece = queue.pop_front().expect("non-empty");
            let b = free_bufs.pop().expect("non-empty");
            let p = &reqs[piece.req].as_ref().expect("live request").req;
            // SAFETY: inside the arena.
            let buf = unsafe { arena.base.add(b as usize * CHUNK) };
            let e = match p.kind {
                Kind::Read if !fixed => {
                    opcode::Read::new(types::Fixed(p.slot), buf, piece.len as u32)
                        .offset(piece.offset)
                        .build()
                }
                Kind::Read => {
                    opcode::ReadFixed::new(types::Fixed(p.slot), buf, piece.len as u32, b as u16)
                        .offset(piece.offset)
                        .build()
                }
                Kind::Write { dsync } => {
                    // SAFETY: the caller's memory is valid while it waits;
                    // the piece lies inside it and inside the buffer.
                    unsafe { std::ptr::copy_nonoverlapping(p.ptr.add(piece.pos), buf, piece.len) };
                    let flags = if dsync { libc::RWF_DSYNC } else { 0 };
                    if fixed {
                        opcode::WriteFixed::new(
                            types::Fixed(p.slot),
                            buf,
                            piece.len as u32,
                            b as u16,
                        )
                        .offset(piece.offset)
                        .rw_flags(flags)
                        .build()
                    } else {
                        opcode::Write::new(types::Fixed(p.slot), buf, piece.len as u32)
                            .offset(piece.offset)
                            .rw_flags(flags)
                            .build()
                    }
                }
                Kind::Sync => unreachable!("syncs are queued apart"),
            };
            // SAFETY: the buffer (registered or not) is in the arena and
            // owned by this piece until its completion.
            let _ = unsafe {
                ring.submission()
                    .push(&e.user_data(((piece.req as u64) << 32) | b as u64))
            };
            bufs[b as usize] = Some(piece);
        }
        if let Err(e) = ring.submit_and_wait(1) {
            if e.raw_os_error() != Some(libc::EINTR) && e.raw_os_error() != Some(libc::EBUSY) {
                tracing::error!(error = %e, "io_uring submit failed");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (ud, res) in done {
            if ud == WAKE {
                wake_armed = false;
                continue;
            }
            let id = (ud >> 32) as usize;
            let b = (ud & 0xffff_ffff) as u32;
            let mut finished = true;
            if b != NO_BUF {
                let piece = bufs[b as usize].take().expect("piece of buffer");
                let p = reqs[id].as_mut().expect("live request");
                // SAFETY: inside the arena.
                let buf = unsafe { arena.base.add(b as usize * CHUNK) };
                if res == -libc::EAGAIN || res == -libc::EINTR {
                    queue.push_front(piece);
                    free_bufs.push(b);
                    continue;
                }
                if res < 0 {
                    p.err.get_or_insert(io::Error::from_raw_os_error(-res));
                } else {
                    let n = res as usize;
                    match p.req.kind {
                        Kind::Read => {
                            // Short reads end at the end of the file:
                            // the rest reads as zeros.
                            // SAFETY: the caller's memory holds the piece.
                            unsafe {
                                let dst = p.req.ptr.add(piece.pos);
                                std::ptr::copy_nonoverlapping(buf, dst, n.min(piece.len));
                                if n < piece.len {
                                    std::ptr::write_bytes(dst.add(n), 0, piece.len - n);
                                }
                            }
                        }
                        _ if n < piece.len && n > 0 => {
                            // A short write: the rest goes again.
                            queue.push_front(Piece {
                                req: piece.req,
                                pos: piece.pos + n,
                                offset: piece.offset + n as u64,
                                len: piece.len - n,
                            });
                            finished = false;
                        }
                        _ if n == 0 => {
                            p.err.get_or_insert(io::Error::new(
                                io::ErrorKind::WriteZero,
                                "write made no progress",
                            ));
                        }
                        _ => {}
                    }
                }
                free_bufs.push(b);
            } else if res < 0 {
                let p = reqs[id].as_mut().expect("live request");
                p.err.get_or_insert(io::Error::from_raw_os_error(-res));
            }
            if finished {
                let p = reqs[id].as_mut().expect("live request");
                p.left -= 1;
                if p.left == 0 {
                    let p = reqs[id].take().expect("live request");
                    p.req.done.send(match p.err {
                        Some(e) => Err(e),
                        None => Ok(()),
                    });
                    free_reqs.push(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_wrote_aligned_or_not() {
        let d = tempfile::tempdir().unwrap();
        let e = Arc::new(Engine::new(2).unwrap());
        let f = EngineFile::open(e.clone(), &d.path().join("f"), true).unwrap();
        f.file().set_len(8 << 20).unwrap();
        let data: Vec<u8> = (0..(1 << 20) + 4096).map(|i| (i * 7 % 251) as u8).collect();
        f.write_at(&data, 4096, false).unwrap();
        f.write_at(b"hello", 3, true).unwrap();
        f.sync_data().unwrap();
        let mut back = vec![0u8; data.len()];
        f.read_at(&mut back, 4096).unwrap();
        assert_eq!(back, data);
        let mut h = [0u8; 5];
        f.read_at(&mut h, 3).unwrap();
        assert_eq!(&h, b"hello");
        // Past the end of the file reads zeros.
        let mut z = vec![1u8; 8192];
        f.read_at(&mut z, 8 << 20).unwrap();
        assert!(z.iter().all(|b| *b == 0));
        drop(f);
        // The slot is reused.
        let g = EngineFile::open(e, &d.path().join("f"), false).unwrap();
        g.read_at(&mut back, 4096).unwrap();
        assert_eq!(back, data);
    }
}
