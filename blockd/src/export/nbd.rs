//! NBD export: the fixed-newstyle handshake and the transmission phase, as
//! the protocol document of the NBD project defines them, over any byte
//! stream (TCP or a unix socket).
//!
//! Options: EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY,
//! LIST_META_CONTEXT and SET_META_CONTEXT (`base:allocation`); others get
//! NBD_REP_ERR_UNSUP. Commands: READ, WRITE (FUA), FLUSH, TRIM,
//! WRITE_ZEROES (NO_HOLE), BLOCK_STATUS (REQ_ONE) and DISC. With structured
//! replies, reads send holes as OFFSET_HOLE chunks, so sparse reads cost no
//! bytes on the wire.
//!
//! Malformed input is answered with a protocol error where the framing is
//! still trustworthy, and by closing the connection where it is not; a
//! connection never panics the server and never affects another.

mod ring;

pub use ring::set_poll;

use crate::volume::Volume;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const CLIENT_NO_ZEROES: u32 = 2;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;
const OPT_STRUCTURED_REPLY: u32 = 8;
const OPT_LIST_META_CONTEXT: u32 = 9;
const OPT_SET_META_CONTEXT: u32 = 10;

const REP_ACK: u32 = 1;
const REP_SERVER: u32 = 2;
const REP_INFO: u32 = 3;
const REP_META_CONTEXT: u32 = 4;
const REP_ERR_UNSUP: u32 = 0x8000_0001;
const REP_ERR_INVALID: u32 = 0x8000_0003;
const REP_ERR_UNKNOWN: u32 = 0x8000_0006;
const REP_ERR_TOO_BIG: u32 = 0x8000_0009;

const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

const TFLAG_HAS_FLAGS: u16 = 1;
const TFLAG_READ_ONLY: u16 = 2;
const TFLAG_SEND_FLUSH: u16 = 4;
const TFLAG_SEND_FUA: u16 = 8;
const TFLAG_SEND_TRIM: u16 = 32;
const TFLAG_SEND_WRITE_ZEROES: u16 = 64;
const TFLAG_CAN_MULTI_CONN: u16 = 256;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_TRIM: u16 = 4;
const CMD_WRITE_ZEROES: u16 = 6;
const CMD_BLOCK_STATUS: u16 = 7;

const CMD_FLAG_FUA: u16 = 1;
const CMD_FLAG_NO_HOLE: u16 = 2;
const CMD_FLAG_REQ_ONE: u16 = 8;

const REPLY_FLAG_DONE: u16 = 1;
const REPLY_TYPE_NONE: u16 = 0;
const REPLY_TYPE_OFFSET_DATA: u16 = 1;
const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
const REPLY_TYPE_ERROR: u16 = 0x8001;

const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;
const ENOSPC: u32 = 28;
const EOVERFLOW: u32 = 75;
const ENOTSUP: u32 = 95;

const STATE_HOLE: u32 = 1;
const STATE_ZERO: u32 = 2;

/// The one metadata context served.
const BASE_ALLOCATION: &str = "base:allocation";
const BASE_ALLOCATION_ID: u32 = 1;

/// Largest READ/WRITE payload and option payload accepted.
pub const MAX_REQUEST: u32 = 32 << 20;
const MAX_OPTION: u32 = 64 << 10;

/// The exports a server offers, by name. Shared and changeable while the
/// server runs: a client that already negotiated keeps its volume until it
/// disconnects.
#[derive(Clone, Default)]
pub struct ExportTable(Arc<std::sync::RwLock<BTreeMap<String, Arc<dyn Volume>>>>);

impl ExportTable {
    pub fn insert(&self, name: &str, v: Arc<dyn Volume>) {
        self.0
            .write()
            .expect("export table")
            .insert(name.to_string(), v);
    }

    pub fn remove(&self, name: &str) -> bool {
        self.0.write().expect("export table").remove(name).is_some()
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Volume>> {
        self.0.read().expect("export table").get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.0
            .read()
            .expect("export table")
            .keys()
            .cloned()
            .collect()
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

#[derive(Debug, Clone, Copy)]
struct Session {
    structured: bool,
    meta: bool,
}

/// A client connection the server can take over as a plain socket once
/// the handshake is done: the transmission phase runs on a thread of its
/// own (`ring`).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn into_fd(self) -> io::Result<OwnedFd>;
}

impl Stream for tokio::net::UnixStream {
    fn into_fd(self) -> io::Result<OwnedFd> {
        Ok(self.into_std()?.into())
    }
}

impl Stream for tokio::net::TcpStream {
    fn into_fd(self) -> io::Result<OwnedFd> {
        Ok(self.into_std()?.into())
    }
}

/// Connections in their transmission phase (each has a thread and a ring)
/// at most.
pub const MAX_CONNECTIONS: usize = 1024;

static CONNECTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One of the [`MAX_CONNECTIONS`]; given back when dropped.
struct ConnectionSlot;

impl ConnectionSlot {
    fn take() -> Option<ConnectionSlot> {
        use std::sync::atomic::Ordering;
        CONNECTIONS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CONNECTIONS).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        CONNECTIONS.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Serves one client connection to the end: the handshake here, the
/// transmission phase on the connection's own thread and ring.
pub async fn serve<S: Stream>(stream: S, exports: ExportTable) -> io::Result<()> {
    let (r, w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let mut w = BufWriter::new(w);
    w.write_u64(NBDMAGIC).await?;
    w.write_u64(IHAVEOPT).await?;
    w.write_u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).await?;
    w.flush().await?;
    let client_flags = r.read_u32().await?;
    let no_zeroes = client_flags & CLIENT_NO_ZEROES != 0;
    let mut s = Session {
        structured: false,
        meta: false,
    };
    let Some(volume) = negotiate(&mut r, &mut w, &exports, &mut s, no_zeroes).await? else {
        return Ok(());
    };
    w.flush().await?;
    // Requests the client sent right after GO may sit in the reader.
    let early = r.buffer().to_vec();
    let stream = r.into_inner().unsplit(w.into_inner());
    let fd = stream.into_fd()?;
    let Some(slot) = ConnectionSlot::take() else {
        // The client sees its connection close; the others go on.
        return Err(io::Error::other("too many NBD connections"));
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("blockd-nbd".into())
        .spawn(move || {
            let _ = tx.send(ring::run(fd, early, volume, s));
            drop(slot);
        })?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("NBD connection thread died")))
}

async fn opt_reply<W: AsyncWrite + Unpin>(
    w: &mut W,
    opt: u32,
    kind: u32,
    data: &[u8],
) -> io::Result<()> {
    w.write_u64(REPLY_MAGIC).await?;
    w.write_u32(opt).await?;
    w.write_u32(kind).await?;
    w.write_u32(data.len() as u32).await?;
    w.write_all(data).await
}

async fn opt_error<W: AsyncWrite + Unpin>(
    w: &mut W,
    opt: u32,
    kind: u32,
    msg: &str,
) -> io::Result<()> {
    opt_reply(w, opt, kind, msg.as_bytes()).await?;
    w.flush().await
}

fn transmission_flags(v: &dyn Volume) -> u16 {
    let ro = if v.read_only() { TFLAG_READ_ONLY } else { 0 };
    ro | TFLAG_HAS_FLAGS
        | TFLAG_SEND_FLUSH
        | TFLAG_SEND_FUA
        | TFLAG_SEND_TRIM
        | TFLAG_SEND_WRITE_ZEROES
        | TFLAG_CAN_MULTI_CONN
}

/// A cursor over an option's payload that fails instead of panicking.
struct Cur<'a>(&'a [u8]);

impl Cur<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .map(|b| u16::from_be_bytes(b.try_into().expect("2 bytes")))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// The option phase; returns the chosen export, or None if the client left.
async fn negotiate<R, W>(
    r: &mut R,
    w: &mut W,
    exports: &ExportTable,
    s: &mut Session,
    no_zeroes: bool,
) -> io::Result<Option<Arc<dyn Volume>>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if r.read_u64().await? != IHAVEOPT {
            return Err(bad("option without IHAVEOPT magic"));
        }
        let opt = r.read_u32().await?;
        let len = r.read_u32().await?;
        if len > MAX_OPTION {
            // The payload cannot be trusted to be read; give up on this client.
            opt_error(w, opt, REP_ERR_TOO_BIG, "option too large").await?;
            return Err(bad("option too large"));
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data).await?;
        let mut c = Cur(&data);
        match opt {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data).to_string();
                let Some(v) = exports.get(&name) else {
                    // No error reply exists for this option: close.
                    return Err(bad("unknown export"));
                };
                w.write_u64(v.size()).await?;
                w.write_u16(transmission_flags(v.as_ref())).await?;
                if !no_zeroes {
                    w.write_all(&[0u8; 124]).await?;
                }
                w.flush().await?;
                return Ok(Some(v));
            }
            OPT_ABORT => {
                let _ = opt_error(w, opt, REP_ACK, "").await;
                return Ok(None);
            }
            OPT_LIST => {
                if len != 0 {
                    opt_error(w, opt, REP_ERR_INVALID, "LIST takes no data").await?;
                    continue;
                }
                for name in exports.names() {
                    let mut d = (name.len() as u32).to_be_bytes().to_vec();
                    d.extend_from_slice(name.as_bytes());
                    opt_reply(w, opt, REP_SERVER, &d).await?;
                }
                opt_error(w, opt, REP_ACK, "").await?;
            }
            OPT_INFO | OPT_GO => {
                let parsed = (|| {
                    let name = c.string()?;
                    let n = c.u16()?;
                    let mut reqs = Vec::new();
                    for _ in 0..n {
                        reqs.push(c.u16()?);
                    }
                    c.0.is_empty().then_some((name, reqs))
                })();
                let Some((name, _reqs)) = parsed else {
                    opt_error(w, opt, REP_ERR_INVALID, "malformed INFO/GO request").await?;
                    continue;
                };
                let Some(v) = exports.get(&name) else {
                    opt_error(
                        w,
                        opt,
                        REP_ERR_UNKNOWN,
                        &format!("no export named {name:?}"),
                    )
                    .await?;
                    continue;
                };
                let mut d = INFO_EXPORT.to_be_bytes().to_vec();
                d.extend_from_slice(&v.size().to_be_bytes());
                d.extend_from_slice(&transmission_flags(v.as_ref()).to_be_bytes());
                opt_reply(w, opt, REP_INFO, &d).await?;
                let mut b = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                b.extend_from_slice(&1u32.to_be_bytes());
                b.extend_from_slice(&4096u32.to_be_bytes());
                b.extend_from_slice(&MAX_REQUEST.to_be_bytes());
                opt_reply(w, opt, REP_INFO, &b).await?;
                opt_error(w, opt, REP_ACK, "").await?;
                if opt == OPT_GO {
                    return Ok(Some(v));
                }
            }
            OPT_STRUCTURED_REPLY => {
                if len != 0 {
                    opt_error(w, opt, REP_ERR_INVALID, "STRUCTURED_REPLY takes no data").await?;
                    continue;
                }
                s.structured = true;
                opt_error(w, opt, REP_ACK, "").await?;
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                if !s.structured {
                    opt_error(
                        w,
                        opt,
                        REP_ERR_INVALID,
                        "meta contexts need structured replies",
                    )
                    .await?;
                    continue;
                }
                let parsed = (|| {
                    let name = c.string()?;
                    let n = c.u32()?;
                    let mut qs = Vec::new();
                    for _ in 0..n {
                        qs.push(c.string()?);
                    }
                    c.0.is_empty().then_some((name, qs))
                })();
                let Some((name, queries)) = parsed else {
                    opt_error(w, opt, REP_ERR_INVALID, "malformed meta context request").await?;
                    continue;
                };
                if exports.get(&name).is_none() {
                    opt_error(
                        w,
                        opt,
                        REP_ERR_UNKNOWN,
                        &format!("no export named {name:?}"),
                    )
                    .await?;
                    continue;
                }
                let wanted = queries.iter().any(|q| q == BASE_ALLOCATION || q == "base:")
                    || (queries.is_empty() && opt == OPT_LIST_META_CONTEXT);
                if wanted {
                    let mut d = BASE_ALLOCATION_ID.to_be_bytes().to_vec();
                    d.extend_from_slice(BASE_ALLOCATION.as_bytes());
                    opt_reply(w, opt, REP_META_CONTEXT, &d).await?;
                }
                if opt == OPT_SET_META_CONTEXT {
                    s.meta = wanted;
                }
                opt_error(w, opt, REP_ACK, "").await?;
            }
            _ => opt_error(w, opt, REP_ERR_UNSUP, "option not supported").await?,
        }
    }
}

/// Runs a blocking volume call: volume calls on the slow path run on the
/// connection's helper thread, where blocking is what is wanted.
use crate::volume::blocking;

/// A request's header.
#[derive(Debug, Clone, Copy)]
struct Request {
    flags: u16,
    kind: u16,
    cookie: u64,
    offset: u64,
    len: u32,
}

/// Size of a request header on the wire.
const REQUEST_LEN: usize = 28;

impl Request {
    /// Parses a header; None when the magic is wrong.
    fn parse(b: &[u8; REQUEST_LEN]) -> Option<Request> {
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        (u32_at(0) == REQUEST_MAGIC).then(|| Request {
            flags: u16_at(4),
            kind: u16_at(6),
            cookie: u64_at(8),
            offset: u64_at(16),
            len: u32_at(24),
        })
    }
}

fn simple_reply(w: &mut Vec<u8>, cookie: u64, err: u32, data: &[u8]) {
    w.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    w.extend_from_slice(&err.to_be_bytes());
    w.extend_from_slice(&cookie.to_be_bytes());
    w.extend_from_slice(data);
}

/// A structured reply chunk's header, for a payload of `len` bytes.
fn chunk_head(w: &mut Vec<u8>, cookie: u64, flags: u16, kind: u16, len: usize) {
    w.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    w.extend_from_slice(&flags.to_be_bytes());
    w.extend_from_slice(&kind.to_be_bytes());
    w.extend_from_slice(&cookie.to_be_bytes());
    w.extend_from_slice(&(len as u32).to_be_bytes());
}

fn chunk(w: &mut Vec<u8>, cookie: u64, flags: u16, kind: u16, payload: &[&[u8]]) {
    let len: usize = payload.iter().map(|p| p.len()).sum();
    chunk_head(w, cookie, flags, kind, len);
    for p in payload {
        w.extend_from_slice(p);
    }
}

fn error_reply(w: &mut Vec<u8>, s: &Session, cookie: u64, err: u32, msg: &str) {
    if s.structured {
        let m = msg.as_bytes();
        let m = &m[..m.len().min(4096)];
        let head = [
            err.to_be_bytes().as_slice(),
            (m.len() as u16).to_be_bytes().as_slice(),
        ]
        .concat();
        chunk(w, cookie, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, &[&head, m])
    } else {
        simple_reply(w, cookie, err, &[])
    }
}

fn ok_reply(w: &mut Vec<u8>, s: &Session, cookie: u64) {
    if s.structured {
        chunk(w, cookie, REPLY_FLAG_DONE, REPLY_TYPE_NONE, &[])
    } else {
        simple_reply(w, cookie, 0, &[])
    }
}

fn io_errno(e: &io::Error) -> u32 {
    match e.raw_os_error() {
        Some(1) => EPERM,
        Some(28) => ENOSPC,
        Some(22) => EINVAL,
        Some(95) => ENOTSUP,
        _ => EIO,
    }
}

/// FLUSH's reply, rendered into `w` once every write before it is covered.
fn flush(w: &mut Vec<u8>, v: &dyn Volume, s: &Session, cookie: u64) {
    match blocking(|| v.flush()) {
        Ok(()) => ok_reply(w, s, cookie),
        Err(e) => error_reply(w, s, cookie, io_errno(&e), &e.to_string()),
    }
}

/// One request (anything but DISC and FLUSH) the slow way, through the
/// volume's own calls, its reply rendered into `w`. The ring
/// ([`ring`]) sends here what it does not do itself: trims, zeroing,
/// block status, writes that copy, and requests it rejects.
async fn handle(
    w: &mut Vec<u8>,
    v: &dyn Volume,
    s: &Session,
    req: &Request,
    size: u64,
    payload: Vec<u8>,
) {
    let end = req.offset.checked_add(req.len as u64);
    let in_range = end.is_some_and(|e| e <= size);
    match req.kind {
        CMD_WRITE => {
            if !in_range {
                error_reply(w, s, req.cookie, ENOSPC, "write past the end of the export")
            } else {
                match v
                    .write_vec(payload, req.offset, req.flags & CMD_FLAG_FUA != 0)
                    .await
                {
                    Ok(()) => ok_reply(w, s, req.cookie),
                    Err(e) => error_reply(w, s, req.cookie, io_errno(&e), &e.to_string()),
                }
            }
        }
        CMD_READ => {
            if req.len > MAX_REQUEST {
                error_reply(w, s, req.cookie, EOVERFLOW, "read too large")
            } else if !in_range {
                error_reply(w, s, req.cookie, EINVAL, "read past the end of the export")
            } else {
                read(w, v, s, req).await
            }
        }
        CMD_TRIM | CMD_WRITE_ZEROES => {
            if !in_range {
                return error_reply(w, s, req.cookie, ENOSPC, "range past the end of the export");
            }
            let res = if req.kind == CMD_TRIM {
                blocking(|| v.trim(req.offset, req.len as u64))
            } else {
                blocking(|| {
                    v.write_zeroes(
                        req.offset,
                        req.len as u64,
                        req.flags & CMD_FLAG_NO_HOLE == 0,
                    )
                })
            };
            let res = res.and_then(|()| {
                if req.flags & CMD_FLAG_FUA != 0 {
                    blocking(|| v.flush())
                } else {
                    Ok(())
                }
            });
            match res {
                Ok(()) => ok_reply(w, s, req.cookie),
                Err(e) => error_reply(w, s, req.cookie, io_errno(&e), &e.to_string()),
            }
        }
        CMD_BLOCK_STATUS => {
            if !s.meta {
                return error_reply(w, s, req.cookie, EINVAL, "no metadata context negotiated");
            }
            if !in_range || req.len == 0 {
                return error_reply(w, s, req.cookie, EINVAL, "block status past the end");
            }
            match blocking(|| v.extents(req.offset, req.len as u64)) {
                Ok(ex) => {
                    let mut d = BASE_ALLOCATION_ID.to_be_bytes().to_vec();
                    let take = if req.flags & CMD_FLAG_REQ_ONE != 0 {
                        1
                    } else {
                        ex.len()
                    };
                    for e in ex.iter().take(take) {
                        let len = e.len.min(u32::MAX as u64) as u32;
                        d.extend_from_slice(&len.to_be_bytes());
                        let st = if e.hole { STATE_HOLE | STATE_ZERO } else { 0 };
                        d.extend_from_slice(&st.to_be_bytes());
                    }
                    chunk(
                        w,
                        req.cookie,
                        REPLY_FLAG_DONE,
                        REPLY_TYPE_BLOCK_STATUS,
                        &[&d],
                    )
                }
                Err(e) => error_reply(w, s, req.cookie, io_errno(&e), &e.to_string()),
            }
        }
        _ => error_reply(w, s, req.cookie, EINVAL, "unknown command"),
    }
}

async fn read(w: &mut Vec<u8>, v: &dyn Volume, s: &Session, req: &Request) {
    let len = req.len as usize;
    if !s.structured {
        return match v.read_vec(req.offset, len).await {
            Ok(b) => simple_reply(w, req.cookie, 0, &b),
            Err(e) => simple_reply(w, req.cookie, io_errno(&e), &[]),
        };
    }
    if len == 0 {
        return ok_reply(w, s, req.cookie);
    }
    // Holes go out as OFFSET_HOLE chunks: a sparse read moves no zeros.
    let extents = match blocking(|| v.extents(req.offset, len as u64)) {
        Ok(e) => e,
        Err(e) => return error_reply(w, s, req.cookie, io_errno(&e), &e.to_string()),
    };
    let mut pos = req.offset;
    let end = req.offset + len as u64;
    let n = extents.len();
    for (i, e) in extents.into_iter().enumerate() {
        let elen = e.len.min(end - pos);
        if elen == 0 {
            continue;
        }
        let last = i + 1 == n || pos + elen >= end;
        let flags = if last { REPLY_FLAG_DONE } else { 0 };
        if e.hole {
            let p = [
                pos.to_be_bytes().as_slice(),
                (elen as u32).to_be_bytes().as_slice(),
            ]
            .concat();
            chunk(w, req.cookie, flags, REPLY_TYPE_OFFSET_HOLE, &[&p]);
        } else {
            let buf = match v.read_vec(pos, elen as usize).await {
                Ok(b) => b,
                Err(e) => return error_reply(w, s, req.cookie, io_errno(&e), &e.to_string()),
            };
            chunk(
                w,
                req.cookie,
                flags,
                REPLY_TYPE_OFFSET_DATA,
                &[&pos.to_be_bytes(), &buf[..]],
            );
        }
        pos += elen;
        if last {
            break;
        }
    }
    if pos < end {
        // The extents stopped short (the file shrank?): say so rather than hang.
        error_reply(w, s, req.cookie, EIO, "short read")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::FileVolume;
    use proptest::prelude::*;

    fn exports(dir: &std::path::Path) -> ExportTable {
        let v = FileVolume::create(&dir.join("v"), 1 << 20).unwrap();
        let e = ExportTable::default();
        e.insert("vol", Arc::new(v));
        e
    }

    /// Runs the server against `input` as everything the client sends.
    fn feed(input: Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let ex = exports(dir.path());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, server) = tokio::net::UnixStream::pair().unwrap();
            let srv = tokio::spawn(serve(server, ex));
            let (mut cr, mut cw) = tokio::io::split(client);
            let drain = tokio::spawn(async move {
                let mut sink = vec![0u8; 1 << 16];
                while let Ok(n) = cr.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            });
            let _ = cw.write_all(&input).await;
            let _ = cw.shutdown().await;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), srv)
                .await
                .expect("server ends");
            drain.abort();
        });
    }

    fn handshake_prefix() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&3u32.to_be_bytes()); // client flags
                                                  // OPT_STRUCTURED_REPLY
        v.extend_from_slice(&IHAVEOPT.to_be_bytes());
        v.extend_from_slice(&OPT_STRUCTURED_REPLY.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        // OPT_GO "vol"
        v.extend_from_slice(&IHAVEOPT.to_be_bytes());
        v.extend_from_slice(&OPT_GO.to_be_bytes());
        v.extend_from_slice(&(4 + 3 + 2u32).to_be_bytes());
        v.extend_from_slice(&3u32.to_be_bytes());
        v.extend_from_slice(b"vol");
        v.extend_from_slice(&0u16.to_be_bytes());
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn garbage_handshakes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            feed(bytes);
        }

        #[test]
        fn garbage_requests_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let mut input = handshake_prefix();
            input.extend_from_slice(&bytes);
            feed(input);
        }

        #[test]
        fn well_framed_requests_with_wild_fields_never_panic(
            reqs in prop::collection::vec((any::<u16>(), 0u16..10, any::<u64>(), prop_oneof![any::<u32>(), 0u32..70000]), 1..8)
        ) {
            let mut input = handshake_prefix();
            for (flags, kind, offset, len) in reqs {
                if kind == CMD_DISC { continue; }
                input.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
                input.extend_from_slice(&flags.to_be_bytes());
                input.extend_from_slice(&kind.to_be_bytes());
                input.extend_from_slice(&7u64.to_be_bytes());
                input.extend_from_slice(&(offset % (2 << 20)).to_be_bytes());
                input.extend_from_slice(&len.to_be_bytes());
                if kind == CMD_WRITE && len <= 70000 {
                    input.extend(std::iter::repeat_n(0xabu8, len as usize));
                }
            }
            feed(input);
        }
    }
}
