//! The floor for a 4 KiB read at queue depth 1 over NBD on a unix socket,
//! on this machine: what a server that does nothing else can reach.
//!
//! [`server`] is that server. It runs in a process of its own (the bench
//! starts itself again with `--floor-server SOCKET FILE`), answers the
//! newstyle handshake with the least it can, and then, for each request,
//! polls the socket, reads the block from FILE with one O_DIRECT read on
//! an io_uring it polls, and sends the simple reply in one `writev`. No
//! planning, no copies, no other thread.
//!
//! [`client`] is a client just as small: one request, `poll`, `recv` until
//! the reply is whole, the next request; it times each read from the
//! request sent to the reply whole, as fio's `clat` (and so fio-jobs.sh's
//! p50) does, so the floor compares with raw's p50. It measures the same way against
//! the floor server and against blockd, so the difference between the two
//! is what blockd costs above the floor. Neither process is pinned: the
//! scheduler places them as it places fio and a server.

use io_uring::{opcode, types, IoUring};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

const REQ_MAGIC: u32 = 0x2560_9513;
const REPLY_MAGIC: u32 = 0x6744_6698;
const BS: usize = 4096;

/// Page-aligned block buffer.
#[repr(C, align(4096))]
struct Block([u8; BS]);

/// Serves the clients that connect to `sock` from `file`, one after the
/// other, until it is killed.
pub fn server(sock: &Path, file: &Path) -> io::Result<()> {
    let _ = std::fs::remove_file(sock);
    let l = UnixListener::bind(sock)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(file)?;
    loop {
        let (s, _) = l.accept()?;
        // A client that only probes the socket hangs up in the handshake.
        let _ = serve(s, &f);
    }
}

fn serve(mut s: UnixStream, f: &std::fs::File) -> io::Result<()> {
    let size = f.metadata()?.len();
    // Handshake: greeting, the client's flags, NBD_OPT_EXPORT_NAME, then
    // size and transmission flags (NO_ZEROES asked for by the client).
    let mut g = Vec::new();
    g.extend_from_slice(b"NBDMAGIC");
    g.extend_from_slice(&0x4948_4156_454F_5054u64.to_be_bytes());
    g.extend_from_slice(&3u16.to_be_bytes());
    s.write_all(&g)?;
    let mut h = [0u8; 20];
    s.read_exact(&mut h)?;
    let name_len = u32::from_be_bytes(h[16..20].try_into().expect("4 bytes")) as usize;
    let mut name = vec![0u8; name_len];
    s.read_exact(&mut name)?;
    let mut r = size.to_be_bytes().to_vec();
    r.extend_from_slice(&1u16.to_be_bytes());
    s.write_all(&r)?;
    s.set_nonblocking(true)?;

    let mut ring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(8)?;
    let mut block = Box::new(Block([0; BS]));
    let mut head = [0u8; 16];
    head[..4].copy_from_slice(&REPLY_MAGIC.to_be_bytes());
    let fd = s.as_raw_fd();
    let mut req = [0u8; 28];
    loop {
        let mut got = 0;
        while got < req.len() {
            // SAFETY: reads into our own buffer.
            let n = unsafe {
                libc::recv(
                    fd,
                    req[got..].as_mut_ptr().cast(),
                    req.len() - got,
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                0 => return Ok(()),
                n if n > 0 => got += n as usize,
                _ if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock => {
                    std::hint::spin_loop()
                }
                _ => return Err(io::Error::last_os_error()),
            }
        }
        if u32::from_be_bytes(req[..4].try_into().expect("4 bytes")) != REQ_MAGIC {
            return Err(io::Error::other("bad request magic"));
        }
        if u16::from_be_bytes([req[6], req[7]]) == 2 {
            return Ok(()); // NBD_CMD_DISC
        }
        let offset = u64::from_be_bytes(req[16..24].try_into().expect("8 bytes"));
        let e = opcode::Read::new(types::Fd(f.as_raw_fd()), block.0.as_mut_ptr(), BS as u32)
            .offset(offset)
            .build();
        // SAFETY: the block outlives the read, which is reaped below.
        unsafe { ring.submission().push(&e) }.map_err(|_| io::Error::other("ring full"))?;
        ring.submit()?;
        while ring.completion().is_empty() {
            // Entering the ring runs the completion's task work.
            ring.submit()?;
        }
        let res = ring
            .completion()
            .next()
            .map_or(-libc::EIO, |c: io_uring::cqueue::Entry| c.result());
        let err: u32 = if res == BS as i32 { 0 } else { 5 };
        head[4..8].copy_from_slice(&err.to_be_bytes());
        head[8..16].copy_from_slice(&req[8..16]);
        let iov = [
            libc::iovec {
                iov_base: head.as_mut_ptr().cast(),
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: block.0.as_mut_ptr().cast(),
                iov_len: BS,
            },
        ];
        // The reply is small: a socket buffer takes it whole, or not at
        // all while the client has not read the last one.
        loop {
            // SAFETY: both iovecs point at our buffers.
            let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
            if n == (head.len() + BS) as isize {
                break;
            }
            let e = io::Error::last_os_error();
            if n < 0 && e.kind() == io::ErrorKind::WouldBlock {
                continue;
            }
            return Err(if n < 0 {
                e
            } else {
                io::Error::other("short reply write")
            });
        }
    }
}

/// Reads 4 KiB blocks at random offsets of the first `span` bytes of
/// export `name` at `sock`, one at a time, for `secs`; the median time
/// from a request sent to its whole reply, in microseconds (what fio
/// reports as `clat`, and fio-jobs.sh as p50).
pub fn client(sock: &Path, name: &str, span: u64, secs: f64) -> io::Result<f64> {
    let mut s = UnixStream::connect(sock)?;
    let mut greet = [0u8; 18];
    s.read_exact(&mut greet)?;
    // NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES, NBD_OPT_EXPORT_NAME.
    let mut o = 3u32.to_be_bytes().to_vec();
    o.extend_from_slice(&0x4948_4156_454F_5054u64.to_be_bytes());
    o.extend_from_slice(&1u32.to_be_bytes());
    o.extend_from_slice(&(name.len() as u32).to_be_bytes());
    o.extend_from_slice(name.as_bytes());
    s.write_all(&o)?;
    let mut info = [0u8; 10];
    s.read_exact(&mut info)?;
    let blocks = (span / BS as u64).max(1);
    let mut reply = vec![0u8; 16 + BS];
    let mut lat = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let t_end = Instant::now() + Duration::from_secs_f64(secs);
    let fd = s.as_raw_fd();
    while Instant::now() < t_end {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut q = [0u8; 28];
        q[..4].copy_from_slice(&REQ_MAGIC.to_be_bytes());
        q[8..16].copy_from_slice(&(lat.len() as u64).to_be_bytes());
        q[16..24].copy_from_slice(&((x % blocks) * BS as u64).to_be_bytes());
        q[24..28].copy_from_slice(&(BS as u32).to_be_bytes());
        s.write_all(&q)?;
        // As fio's clat: from the request sent to the reply whole.
        let t0 = Instant::now();
        let mut got = 0;
        while got < reply.len() {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd of ours.
            unsafe { libc::poll(&mut p, 1, -1) };
            let n = s.read(&mut reply[got..])?;
            if n == 0 {
                return Err(io::Error::other("server hung up"));
            }
            got += n;
        }
        lat.push(t0.elapsed().as_nanos() as u64);
        if reply[4..8] != [0; 4] {
            return Err(io::Error::other("server answered an error"));
        }
    }
    // NBD_CMD_DISC.
    let mut q = [0u8; 28];
    q[..4].copy_from_slice(&REQ_MAGIC.to_be_bytes());
    q[6..8].copy_from_slice(&2u16.to_be_bytes());
    let _ = s.write_all(&q);
    if lat.is_empty() {
        return Err(io::Error::other("no request finished"));
    }
    lat.sort_unstable();
    Ok(lat[lat.len() / 2] as f64 / 1e3)
}
