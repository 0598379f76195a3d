//! The NBD transmission phase on one thread with its own io_uring.
//!
//! After the handshake a connection gets a thread of its own. The thread
//! never hands a request to another thread on the fast path:
//!
//! - It reads requests off the socket in batches (non-blocking `recv`
//!   into a 256 KiB buffer; a `POLL_ADD` on the ring when there is
//!   nothing to read), and a large write's payload straight into the
//!   page-aligned buffer the disk write is made from.
//! - READ and WRITE are planned by the volume ([`Volume::plan_read`],
//!   [`Volume::plan_write`]: where the bytes are in the backing file) and
//!   go to the disk as `READ`/`WRITE` on the backing file, registered in
//!   this ring, O_DIRECT, FUA as `RWF_DSYNC`. A read lands in the buffer
//!   the reply is sent from; no byte of data is copied on the way.
//! - Replies are gathered and sent with one `sendmsg` per turn of the
//!   loop, in the order requests finish (NBD matches them by cookie).
//! - Everything else (FLUSH, TRIM, WRITE_ZEROES, BLOCK_STATUS, writes that
//!   copy a shared chunk, requests the fast path rejects) goes to a helper
//!   thread that runs [`super::handle`] on the volume's own calls, and
//!   comes back through an eventfd the ring is reading.
//!
//! Ordering: FLUSH is a barrier. The loop stops taking requests, waits for
//! everything before it, then flushes; so every write acknowledged before
//! the flush was sent is covered by it. Requests in flight (payloads and
//! replies in memory) are bounded by [`BUDGET`] bytes.
//!
//! When the loop has just been busy it polls the socket and the ring for
//! a short while ([`set_poll`], 200 µs by default) before sleeping in the
//! kernel: a request or a disk completion that arrives within that window
//! is picked up without a wake-up, which on a virtual machine costs more
//! than the I/O (measured: 21k against 55k 4 KiB reads per second at
//! QD32 without and with polling).

use super::{
    chunk_head, error_reply, flush, handle, io_errno, ok_reply, simple_reply, Request, Session,
    CMD_DISC, CMD_FLAG_FUA, CMD_FLUSH, CMD_READ, CMD_WRITE, EIO, EOVERFLOW, MAX_REQUEST,
    REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE, REQUEST_LEN,
};
use crate::volume::{Plan, Seg, Volume};
use io_uring::{opcode, squeue, types, IoUring};
use std::alloc::Layout;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const UD_WAKE: u64 = u64::MAX;
const UD_POLLIN: u64 = u64::MAX - 1;
const UD_POLLOUT: u64 = u64::MAX - 2;
const RING_ENTRIES: u32 = 256;
const INBUF: usize = 256 << 10;
const MAX_IOV: usize = 256;
/// Bytes of requests a connection may have in flight.
const BUDGET: usize = 64 << 20;
/// How long the loop polls before sleeping after it last had work, by
/// default (`ursa-blockd --nbd-poll-us`).
const DEFAULT_POLL_US: u64 = 200;

/// Page-aligned memory for O_DIRECT I/O, in power-of-two sizes.
struct Buf {
    ptr: NonNull<u8>,
    cap: usize,
}

// SAFETY: plain owned memory.
unsafe impl Send for Buf {}

impl Buf {
    fn layout(cap: usize) -> Layout {
        Layout::from_size_align(cap, 4096).expect("buffer layout")
    }

    fn new(cap: usize) -> Buf {
        let layout = Self::layout(cap);
        // SAFETY: a non-zero layout.
        let p = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(p) else {
            std::alloc::handle_alloc_error(layout)
        };
        Buf { ptr, cap }
    }

    fn slice(&self, from: usize, len: usize) -> &[u8] {
        assert!(from + len <= self.cap);
        // SAFETY: inside the allocation; bytes are initialised before
        // they are read (the disk or the socket wrote them, or zero fill).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(from), len) }
    }

    fn slice_mut(&mut self, from: usize, len: usize) -> &mut [u8] {
        assert!(from + len <= self.cap);
        // SAFETY: inside the allocation, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(from), len) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) };
    }
}

/// Free buffers by size class, for reuse.
#[derive(Default)]
struct Bufs(Vec<Vec<Buf>>);

impl Bufs {
    fn class(len: usize) -> (usize, usize) {
        let cap = len.max(4096).next_power_of_two();
        (cap.trailing_zeros() as usize, cap)
    }

    fn get(&mut self, len: usize) -> Buf {
        let (k, cap) = Self::class(len);
        self.0
            .get_mut(k)
            .and_then(|l| l.pop())
            .unwrap_or_else(|| Buf::new(cap))
    }

    fn put(&mut self, b: Buf) {
        let (k, _) = Self::class(b.cap);
        if self.0.len() <= k {
            self.0.resize_with(k + 1, Vec::new);
        }
        if self.0[k].len() < 64 && b.cap <= 4 << 20 {
            self.0[k].push(b);
        }
    }
}

/// A READ or WRITE on the fast path.
struct Io {
    req: Request,
    buf: Buf,
    segs: Vec<Seg>,
    /// Bytes done of each piece.
    done: Vec<usize>,
    /// Pieces not finished.
    left: usize,
    err: Option<i32>,
    plan: Option<Plan>,
}

/// A reply waiting to be sent: bytes of `head` and of `body` in the order
/// of `parts` (`(from body, start, len)`).
struct Out {
    head: Vec<u8>,
    body: Option<Buf>,
    parts: Vec<(bool, usize, usize)>,
    sent: usize,
    /// Budget it gives back once sent.
    cost: usize,
}

impl Out {
    fn bytes(head: Vec<u8>, cost: usize) -> Out {
        let n = head.len();
        Out {
            head,
            body: None,
            parts: vec![(false, 0, n)],
            sent: 0,
            cost,
        }
    }
}

enum Job {
    Handle(Request, Vec<u8>),
    /// FLUSH; `barrier`: the loop waits for it before taking requests.
    Flush {
        cookie: u64,
        barrier: bool,
    },
}

struct Done {
    reply: Vec<u8>,
    barrier: bool,
    cost: usize,
}

/// A write whose payload is still arriving.
struct Partial {
    req: Request,
    buf: Buf,
    filled: usize,
}

struct Conn {
    ring: IoUring,
    sock: OwnedFd,
    v: Arc<dyn Volume>,
    s: Session,
    size: u64,
    /// Offsets and lengths the backing file takes directly (None: no
    /// backing file, everything goes the slow way).
    align: Option<u64>,
    inbuf: Vec<u8>,
    start: usize,
    end: usize,
    partial: Option<Partial>,
    ios: Vec<Option<Io>>,
    free_ios: Vec<usize>,
    disk_ios: usize,
    backlog: VecDeque<squeue::Entry>,
    bufs: Bufs,
    out: VecDeque<Out>,
    held: usize,
    wake: OwnedFd,
    wake_buf: Box<[u8; 8]>,
    wake_armed: bool,
    jobs: Option<mpsc::Sender<(Job, usize)>>,
    done_rx: Option<mpsc::Receiver<Done>>,
    slow: usize,
    barrier: Option<u64>,
    barrier_sent: bool,
    input_ready: bool,
    pollin_armed: bool,
    pollout_armed: bool,
    /// No more requests are taken (DISC, EOF, a protocol error).
    closing: bool,
    /// The socket failed: nothing more is sent either.
    dead: bool,
    /// Scratch for `reap` and `send`, kept to spare an allocation a turn.
    cqes: Vec<(u64, i32)>,
    iov: Vec<libc::iovec>,
}

/// Runs the transmission phase on `sock` (non-blocking) to the end;
/// `early` is what the handshake read past its end.
pub(super) fn run(sock: OwnedFd, early: Vec<u8>, v: Arc<dyn Volume>, s: Session) -> io::Result<()> {
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(RING_ENTRIES)
        .or_else(|_| IoUring::new(RING_ENTRIES))?;
    let align = match v.backing() {
        Some(f) => {
            ring.submitter().register_files(&[f.file().as_raw_fd()])?;
            Some(f.align.max(1))
        }
        None => None,
    };
    // SAFETY: plain syscall; the result is checked.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut inbuf = vec![0u8; INBUF.max(early.len())];
    inbuf[..early.len()].copy_from_slice(&early);
    let mut c = Conn {
        ring,
        sock,
        size: v.size(),
        v,
        s,
        align,
        inbuf,
        start: 0,
        end: early.len(),
        partial: None,
        ios: Vec::new(),
        free_ios: Vec::new(),
        disk_ios: 0,
        backlog: VecDeque::new(),
        bufs: Bufs::default(),
        out: VecDeque::new(),
        held: 0,
        // SAFETY: a descriptor we just created and own.
        wake: unsafe { OwnedFd::from_raw_fd(efd) },
        wake_buf: Box::new([0u8; 8]),
        wake_armed: false,
        jobs: None,
        done_rx: None,
        slow: 0,
        barrier: None,
        barrier_sent: false,
        input_ready: true,
        pollin_armed: false,
        pollout_armed: false,
        closing: false,
        dead: false,
        cqes: Vec::new(),
        iov: Vec::with_capacity(MAX_IOV),
    };
    let r = c.run();
    // The kernel may still be using buffers of requests in flight.
    c.drain();
    r
}

/// What a request holds of the budget: its payload (a READ's reply or a
/// WRITE's data), at least one byte.
fn cost(req: &Request) -> usize {
    match req.kind {
        CMD_READ | CMD_WRITE => (req.len as usize).max(1),
        _ => 1,
    }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl Conn {
    fn run(&mut self) -> io::Result<()> {
        let mut busy_at = Instant::now();
        let poll = Duration::from_micros(POLL.load(std::sync::atomic::Ordering::Relaxed));
        loop {
            // Go on until nothing moves without the kernel: then every
            // way forward is an armed poll or an I/O in flight.
            let mut worked = false;
            loop {
                // Replies first (they free the client), then the disk
                // reads and writes of new requests go to the kernel at once.
                let mut moved = self.send();
                if self.input_ready && !self.closing {
                    moved |= self.recv();
                }
                if self.parse() {
                    moved = true;
                    self.push_backlog();
                    if !self.ring.submission().is_empty() {
                        self.enter(0)?;
                    }
                }
                moved |= self.start_barrier();
                if !moved || self.dead {
                    break;
                }
                worked = true;
            }
            if self.dead {
                return Err(io::Error::other("connection lost"));
            }
            if self.closing
                && self.disk_ios == 0
                && self.slow == 0
                && self.barrier.is_none()
                && self.out.is_empty()
            {
                return Ok(());
            }
            if !self.wake_armed && self.jobs.is_some() {
                self.arm(UD_WAKE);
            }
            let want_input = !self.closing && !self.input_ready;
            if want_input && !self.pollin_armed {
                self.arm(UD_POLLIN);
            }
            self.push_backlog();
            if worked {
                busy_at = Instant::now();
            }
            // Poll for a while after work; then sleep in the kernel.
            let spin = !poll.is_zero() && busy_at.elapsed() < poll;
            let wait = if spin { 0 } else { 1 };
            if wait == 1 {
                tracing::trace!(
                    held = self.held,
                    disk = self.disk_ios,
                    slow = self.slow,
                    barrier = self.barrier.is_some(),
                    input_ready = self.input_ready,
                    pollin = self.pollin_armed,
                    pollout = self.pollout_armed,
                    wake = self.wake_armed,
                    out = self.out.len(),
                    buffered = self.end - self.start,
                    partial = self.partial.is_some(),
                    "NBD connection waits"
                );
            }
            self.enter(wait)?;
            if spin && want_input && self.ring.completion().is_empty() {
                // Look at the socket ourselves rather than wait for the poll.
                self.input_ready = true;
            }
            self.reap();
        }
    }

    /// Submits what is queued and waits for `wait` completions; an
    /// interrupted or busy ring is not an error (the loop comes back).
    fn enter(&mut self, wait: usize) -> io::Result<()> {
        match self.ring.submit_and_wait(wait) {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Waits until the kernel is done with every request of this ring.
    fn drain(&mut self) {
        while self.disk_ios > 0 {
            self.push_backlog();
            if self.ring.submit_and_wait(1).is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.dead = true;
            self.reap();
        }
    }

    fn arm(&mut self, ud: u64) {
        let fd = self.sock.as_raw_fd();
        let e = match ud {
            UD_WAKE => {
                self.wake_armed = true;
                opcode::Read::new(
                    types::Fd(self.wake.as_raw_fd()),
                    self.wake_buf.as_mut_ptr(),
                    8,
                )
                .build()
            }
            UD_POLLIN => {
                self.pollin_armed = true;
                opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build()
            }
            _ => {
                self.pollout_armed = true;
                opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32).build()
            }
        };
        self.push(e.user_data(ud));
    }

    fn push(&mut self, e: squeue::Entry) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(e);
            return;
        }
        // SAFETY: every entry points at memory that lives until its
        // completion (buffers owned by `ios`, `wake_buf`).
        if unsafe { self.ring.submission().push(&e) }.is_err() {
            self.backlog.push_back(e);
        }
    }

    fn push_backlog(&mut self) {
        while let Some(e) = self.backlog.front() {
            // SAFETY: as in `push`.
            if unsafe { self.ring.submission().push(e) }.is_err() {
                if self.ring.submit().is_err() {
                    return;
                }
                // SAFETY: as in `push`.
                if unsafe { self.ring.submission().push(e) }.is_err() {
                    return;
                }
            }
            self.backlog.pop_front();
        }
    }

    /// Reads what the socket has. Returns whether anything came.
    fn recv(&mut self) -> bool {
        let fd = self.sock.as_raw_fd();
        if let Some(p) = self.partial.as_mut() {
            let want = p.req.len as usize - p.filled;
            let dst = p.buf.slice_mut(p.filled, want);
            // SAFETY: reads into memory we own.
            let n = unsafe { libc::recv(fd, dst.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT) };
            return self.received(n, |c, n| {
                let p = c.partial.as_mut().expect("partial write");
                p.filled += n;
                if p.filled == p.req.len as usize {
                    let p = c.partial.take().expect("partial write");
                    c.start_write(p.req, p.buf);
                }
            });
        }
        if self.start > 0 {
            self.inbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.inbuf.len() {
            return false;
        }
        let dst = &mut self.inbuf[self.end..];
        // SAFETY: reads into memory we own.
        let n = unsafe { libc::recv(fd, dst.as_mut_ptr().cast(), dst.len(), libc::MSG_DONTWAIT) };
        self.received(n, |c, n| c.end += n)
    }

    fn received(&mut self, n: isize, got: impl FnOnce(&mut Self, usize)) -> bool {
        match n {
            0 => {
                self.closing = true;
                false
            }
            n if n > 0 => {
                got(self, n as usize);
                true
            }
            _ => {
                match errno() {
                    libc::EAGAIN | libc::EINTR => self.input_ready = false,
                    _ => {
                        self.closing = true;
                        self.dead = true;
                    }
                }
                false
            }
        }
    }

    /// Takes the requests that have arrived, as far as the budget and
    /// barriers allow. Returns whether it took any.
    fn parse(&mut self) -> bool {
        let mut took = false;
        while !self.closing && self.barrier.is_none() && self.partial.is_none() {
            if self.end - self.start < REQUEST_LEN {
                break;
            }
            let head: &[u8; REQUEST_LEN] = self.inbuf[self.start..self.start + REQUEST_LEN]
                .try_into()
                .expect("header");
            let Some(req) = Request::parse(head) else {
                tracing::debug!("NBD request without magic: closing");
                self.closing = true;
                break;
            };
            let cost = cost(&req);
            if self.held > 0 && self.held + cost > BUDGET {
                break;
            }
            self.start += REQUEST_LEN;
            took = true;
            if let Some(q) = self.v.qos() {
                let bytes = match req.kind {
                    CMD_READ | CMD_WRITE => Some(req.len as u64),
                    super::CMD_TRIM | super::CMD_WRITE_ZEROES => Some(0),
                    _ => None,
                };
                if let Some(b) = bytes {
                    let d = q.reserve_at(Instant::now(), b);
                    if !d.is_zero() {
                        // Throttled: this connection waits, replies first.
                        self.send();
                        std::thread::sleep(d);
                    }
                }
            }
            match req.kind {
                CMD_DISC => {
                    self.closing = true;
                }
                CMD_WRITE if req.len > MAX_REQUEST => {
                    // The payload cannot be skipped safely: reply and close.
                    let mut w = Vec::new();
                    error_reply(&mut w, &self.s, req.cookie, EOVERFLOW, "write too large");
                    self.reply(Out::bytes(w, 0));
                    self.closing = true;
                }
                CMD_FLUSH => {
                    self.barrier = Some(req.cookie);
                }
                CMD_WRITE => {
                    self.held += cost;
                    let len = req.len as usize;
                    let mut buf = self.bufs.get(len);
                    let have = (self.end - self.start).min(len);
                    buf.slice_mut(0, have)
                        .copy_from_slice(&self.inbuf[self.start..self.start + have]);
                    self.start += have;
                    if have == len {
                        self.start_write(req, buf);
                    } else {
                        self.partial = Some(Partial {
                            req,
                            buf,
                            filled: have,
                        });
                    }
                }
                CMD_READ => {
                    self.held += cost;
                    self.start_read(req);
                }
                _ => {
                    self.held += cost;
                    self.slow_path(Job::Handle(req, Vec::new()), cost);
                }
            }
        }
        took
    }

    /// Whether the fast path takes a READ or WRITE as it is.
    fn direct(&self, req: &Request) -> bool {
        let Some(align) = self.align else {
            return false;
        };
        let len = req.len as u64;
        len > 0
            && req.len <= MAX_REQUEST
            && req.offset.checked_add(len).is_some_and(|e| e <= self.size)
            && req.offset.is_multiple_of(align)
            && len.is_multiple_of(align)
    }

    fn start_read(&mut self, req: Request) {
        let cost = cost(&req);
        let plan = if self.direct(&req) {
            self.v.plan_read(req.offset, req.len as usize)
        } else {
            None
        };
        let Some(plan) = plan else {
            return self.slow_path(Job::Handle(req, Vec::new()), cost);
        };
        let mut buf = self.bufs.get(req.len as usize);
        if !self.s.structured {
            for s in &plan.segs {
                if let Seg::Zero { pos, len } = *s {
                    buf.slice_mut(pos, len).fill(0);
                }
            }
        }
        self.start_io(req, buf, plan);
    }

    fn start_write(&mut self, req: Request, buf: Buf) {
        let cost = cost(&req);
        let plan = if self.direct(&req) {
            self.v.plan_write(req.offset, req.len as usize)
        } else {
            None
        };
        let Some(plan) = plan else {
            let payload = buf.slice(0, req.len as usize).to_vec();
            self.bufs.put(buf);
            return self.slow_path(Job::Handle(req, payload), cost);
        };
        self.start_io(req, buf, plan);
    }

    fn start_io(&mut self, req: Request, buf: Buf, mut plan: Plan) {
        let segs = std::mem::take(&mut plan.segs);
        let left = segs
            .iter()
            .filter(|s| matches!(s, Seg::Data { .. }))
            .count();
        let io = Io {
            req,
            buf,
            done: vec![0; segs.len()],
            segs,
            left,
            err: None,
            plan: Some(plan),
        };
        let slot = match self.free_ios.pop() {
            Some(i) => {
                self.ios[i] = Some(io);
                i
            }
            None => {
                self.ios.push(Some(io));
                self.ios.len() - 1
            }
        };
        self.disk_ios += 1;
        if left == 0 {
            return self.finish(slot);
        }
        let n = self.ios[slot].as_ref().expect("io").segs.len();
        for k in 0..n {
            if let Some(e) = self.sqe(slot, k) {
                self.push(e);
            }
        }
    }

    /// The submission for what is left of piece `k` of I/O `slot`.
    fn sqe(&mut self, slot: usize, k: usize) -> Option<squeue::Entry> {
        let io = self.ios[slot].as_mut().expect("io");
        let Seg::Data { pos, len, at } = io.segs[k] else {
            return None;
        };
        let d = io.done[k];
        let n = (len - d) as u32;
        // SAFETY: inside the buffer, which the I/O owns until it finishes.
        let ptr = unsafe { io.buf.ptr.as_ptr().add(pos + d) };
        let e = if io.req.kind == CMD_WRITE {
            let flags = if io.req.flags & CMD_FLAG_FUA != 0 {
                libc::RWF_DSYNC
            } else {
                0
            };
            opcode::Write::new(types::Fixed(0), ptr, n)
                .offset(at + d as u64)
                .rw_flags(flags)
                .build()
        } else {
            opcode::Read::new(types::Fixed(0), ptr, n)
                .offset(at + d as u64)
                .build()
        };
        Some(e.user_data(((slot as u64) << 16) | k as u64))
    }

    fn reap(&mut self) {
        // Reused across turns: the loop runs this on every turn.
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &cqes {
            match ud {
                UD_WAKE => {
                    self.wake_armed = false;
                    self.take_done();
                }
                UD_POLLIN => {
                    self.pollin_armed = false;
                    self.input_ready = true;
                }
                UD_POLLOUT => self.pollout_armed = false,
                _ => self.completed((ud >> 16) as usize, (ud & 0xffff) as usize, res),
            }
        }
        self.cqes = cqes;
    }

    fn completed(&mut self, slot: usize, k: usize, res: i32) {
        let io = self.ios[slot].as_mut().expect("io in flight");
        let Seg::Data { pos, len, .. } = io.segs[k] else {
            return;
        };
        let write = io.req.kind == CMD_WRITE;
        let mut again = false;
        if res == -libc::EAGAIN || res == -libc::EINTR {
            again = true;
        } else if res < 0 {
            io.err.get_or_insert(-res);
        } else if res == 0 && write {
            io.err.get_or_insert(libc::EIO);
        } else if res == 0 {
            // Past the end of the backing file: zeros.
            let d = io.done[k];
            io.buf.slice_mut(pos + d, len - d).fill(0);
        } else {
            io.done[k] += res as usize;
            again = io.done[k] < len;
        }
        if again {
            if let Some(e) = self.sqe(slot, k) {
                self.push(e);
            }
            return;
        }
        io.left -= 1;
        if io.left == 0 {
            self.finish(slot);
        }
    }

    /// Every piece of I/O `slot` is done: reply (or commit first).
    fn finish(&mut self, slot: usize) {
        let io = self.ios[slot].take().expect("io in flight");
        self.free_ios.push(slot);
        self.disk_ios -= 1;
        let Io {
            req,
            buf,
            segs,
            err,
            plan,
            ..
        } = io;
        let cost = cost(&req);
        if self.dead {
            self.held -= cost;
            return;
        }
        if let Some(e) = err {
            drop(plan);
            self.bufs.put(buf);
            let e = io::Error::from_raw_os_error(e);
            let mut w = Vec::new();
            error_reply(&mut w, &self.s, req.cookie, io_errno(&e), &e.to_string());
            return self.reply(Out::bytes(w, cost));
        }
        if req.kind == CMD_WRITE {
            self.bufs.put(buf);
            let fua = req.flags & CMD_FLAG_FUA != 0;
            if self.v.wrote(plan.expect("plan"), fua) {
                // The map must be durable before the write is acknowledged.
                return self.slow_path(
                    Job::Flush {
                        cookie: req.cookie,
                        barrier: false,
                    },
                    cost,
                );
            }
            let mut w = Vec::new();
            ok_reply(&mut w, &self.s, req.cookie);
            return self.reply(Out::bytes(w, cost));
        }
        drop(plan);
        let len = req.len as usize;
        let mut head = Vec::new();
        let mut parts = Vec::new();
        if !self.s.structured {
            simple_reply(&mut head, req.cookie, 0, &[]);
            parts.push((false, 0, head.len()));
            parts.push((true, 0, len));
        } else {
            let n = segs.len();
            for (i, s) in segs.iter().enumerate() {
                let flags = if i + 1 == n { REPLY_FLAG_DONE } else { 0 };
                let h0 = head.len();
                match *s {
                    Seg::Data { pos, len, .. } => {
                        chunk_head(
                            &mut head,
                            req.cookie,
                            flags,
                            REPLY_TYPE_OFFSET_DATA,
                            8 + len,
                        );
                        head.extend_from_slice(&(req.offset + pos as u64).to_be_bytes());
                        parts.push((false, h0, head.len() - h0));
                        parts.push((true, pos, len));
                    }
                    Seg::Zero { pos, len } => {
                        chunk_head(&mut head, req.cookie, flags, REPLY_TYPE_OFFSET_HOLE, 12);
                        head.extend_from_slice(&(req.offset + pos as u64).to_be_bytes());
                        head.extend_from_slice(&(len as u32).to_be_bytes());
                        parts.push((false, h0, head.len() - h0));
                    }
                }
            }
            if n == 0 {
                let mut w = Vec::new();
                error_reply(&mut w, &self.s, req.cookie, EIO, "empty read plan");
                self.bufs.put(buf);
                return self.reply(Out::bytes(w, cost));
            }
        }
        self.reply(Out {
            head,
            body: Some(buf),
            parts,
            sent: 0,
            cost,
        });
    }

    fn reply(&mut self, o: Out) {
        if self.dead {
            self.release(o);
            return;
        }
        self.out.push_back(o);
    }

    fn release(&mut self, o: Out) {
        self.held -= o.cost;
        if let Some(b) = o.body {
            self.bufs.put(b);
        }
    }

    /// Sends what replies it can in one `sendmsg`. Returns whether it
    /// sent anything.
    fn send(&mut self) -> bool {
        let mut any = false;
        while !self.out.is_empty() && !self.dead {
            let mut iov = std::mem::take(&mut self.iov);
            iov.clear();
            'outs: for o in &self.out {
                let mut skip = o.sent;
                for &(body, start, len) in &o.parts {
                    if skip >= len {
                        skip -= len;
                        continue;
                    }
                    let b = if body {
                        o.body
                            .as_ref()
                            .expect("body")
                            .slice(start + skip, len - skip)
                    } else {
                        &o.head[start + skip..start + len]
                    };
                    skip = 0;
                    iov.push(libc::iovec {
                        iov_base: b.as_ptr() as *mut libc::c_void,
                        iov_len: b.len(),
                    });
                    if iov.len() == MAX_IOV {
                        break 'outs;
                    }
                }
            }
            // SAFETY: a zeroed msghdr is valid; it points at `iov`.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len() as _;
            // SAFETY: every iovec points into replies we own.
            let n = unsafe {
                libc::sendmsg(
                    self.sock.as_raw_fd(),
                    &msg,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            iov.clear();
            self.iov = iov;
            if n < 0 {
                match errno() {
                    libc::EINTR => continue,
                    libc::EAGAIN => {
                        if !self.pollout_armed {
                            self.arm(UD_POLLOUT);
                        }
                    }
                    _ => {
                        self.dead = true;
                        self.closing = true;
                        while let Some(o) = self.out.pop_front() {
                            self.release(o);
                        }
                    }
                }
                break;
            }
            any = true;
            let mut n = n as usize;
            while n > 0 {
                let o = self.out.front_mut().expect("sent bytes of a reply");
                let total: usize = o.parts.iter().map(|p| p.2).sum();
                let take = n.min(total - o.sent);
                o.sent += take;
                n -= take;
                if o.sent == total {
                    let o = self.out.pop_front().expect("reply");
                    self.release(o);
                }
            }
        }
        any
    }

    fn slow_path(&mut self, job: Job, cost: usize) {
        if self.jobs.is_none() {
            let (jtx, jrx) = mpsc::channel::<(Job, usize)>();
            let (dtx, drx) = mpsc::channel::<Done>();
            let wake = match self.wake.try_clone() {
                Ok(w) => w,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            };
            let (v, s, size) = (self.v.clone(), self.s, self.size);
            let spawned = std::thread::Builder::new()
                .name("blockd-nbd-slow".into())
                .spawn(move || helper(jrx, dtx, wake, v, s, size));
            if spawned.is_err() {
                self.dead = true;
                return;
            }
            self.jobs = Some(jtx);
            self.done_rx = Some(drx);
        }
        self.slow += 1;
        if self
            .jobs
            .as_ref()
            .expect("helper")
            .send((job, cost))
            .is_err()
        {
            self.slow -= 1;
            self.dead = true;
        }
    }

    fn take_done(&mut self) {
        let Some(rx) = self.done_rx.as_ref() else {
            return;
        };
        let done: Vec<Done> = rx.try_iter().collect();
        for d in done {
            self.slow -= 1;
            if d.barrier {
                self.barrier = None;
                self.barrier_sent = false;
            }
            self.reply(Out::bytes(d.reply, d.cost));
        }
    }

    /// A FLUSH waits for everything before it, then goes. Returns whether
    /// it went now.
    fn start_barrier(&mut self) -> bool {
        if let Some(cookie) = self.barrier {
            if !self.barrier_sent && self.disk_ios == 0 && self.slow == 0 {
                self.barrier_sent = true;
                self.held += 1;
                self.slow_path(
                    Job::Flush {
                        cookie,
                        barrier: true,
                    },
                    1,
                );
                return true;
            }
        }
        false
    }
}

/// The slow path: runs jobs one after another on the volume's own calls.
fn helper(
    jobs: mpsc::Receiver<(Job, usize)>,
    done: mpsc::Sender<Done>,
    wake: OwnedFd,
    v: Arc<dyn Volume>,
    s: Session,
    size: u64,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "NBD helper has no runtime");
            return;
        }
    };
    for (job, cost) in jobs {
        let mut reply = Vec::new();
        let barrier = match job {
            Job::Handle(req, payload) => {
                rt.block_on(handle(&mut reply, v.as_ref(), &s, &req, size, payload));
                false
            }
            Job::Flush { cookie, barrier } => {
                flush(&mut reply, v.as_ref(), &s, cookie);
                barrier
            }
        };
        if done
            .send(Done {
                reply,
                barrier,
                cost,
            })
            .is_err()
        {
            return;
        }
        signal(wake.as_raw_fd());
    }
}

fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to our eventfd.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

static POLL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(DEFAULT_POLL_US);

/// Sets how long connections poll after work (see the module docs).
pub fn set_poll(d: Duration) {
    POLL.store(
        d.as_micros().min(u64::MAX as u128) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}
