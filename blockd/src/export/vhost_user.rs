//! vhost-user-blk: a volume as a virtio-blk disk of a local QEMU guest, on
//! the rust-vmm crates (vhost-user-backend, virtio-queue, vm-memory).
//!
//! Each exported volume listens on `<dir>/<volume>.sock`. QEMU connects
//! (`-chardev socket,path=… -device vhost-user-blk-pci,chardev=…`, guest
//! RAM shared: `memory-backend-memfd,share=on`), hands over its memory
//! map and the virtqueue, and the backend serves requests straight from
//! guest memory through the volume (and so the io_uring engine): IN, OUT
//! (FUA-free: the guest flushes), FLUSH, GET_ID, DISCARD and WRITE_ZEROES.
//! The requests of one kick are all in flight at once (the volume's async
//! calls on a runtime of the connection's thread), so a guest's queue
//! depth reaches the disk.
//! When the guest goes away the socket listens again, so a restarted QEMU
//! reconnects; unexporting stops the listener and drops any connection.

use crate::volume::Volume;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueOwnedT;
use vm_memory::{
    ByteValued, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

const SECTOR: u64 = 512;
const QUEUE_SIZE: usize = 256;

// virtio-blk request types.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;
// Status.
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

// Feature bits.
const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_DISCARD: u64 = 1 << 13;
const F_WRITE_ZEROES: u64 = 1 << 14;
const F_INDIRECT_DESC: u64 = 1 << 28;
const F_EVENT_IDX: u64 = 1 << 29;
const F_PROTOCOL_FEATURES: u64 = 1 << 30;
const F_VERSION_1: u64 = 1 << 32;

/// Largest DISCARD/WRITE_ZEROES in sectors (1 GiB).
const MAX_DISCARD_SECTORS: u32 = 1 << 21;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ReqHeader {
    kind: u32,
    _reserved: u32,
    sector: u64,
}
// SAFETY: plain old data of fixed layout.
unsafe impl ByteValued for ReqHeader {}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct DiscardSeg {
    sector: u64,
    num_sectors: u32,
    flags: u32,
}
// SAFETY: plain old data of fixed layout.
unsafe impl ByteValued for DiscardSeg {}

type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

struct Backend {
    volume: Arc<dyn Volume>,
    id: String,
    mem: Option<Mem>,
    event_idx: bool,
    /// Runs a kick's requests concurrently (the volume's async calls).
    rt: tokio::runtime::Runtime,
}

/// The virtio-blk configuration space (virtio spec 5.2.4).
fn config(size: u64) -> Vec<u8> {
    let mut c = vec![0u8; 60];
    c[0..8].copy_from_slice(&(size / SECTOR).to_le_bytes());
    c[12..16].copy_from_slice(&128u32.to_le_bytes()); // seg_max
    c[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes()); // blk_size
    c[34..36].copy_from_slice(&1u16.to_le_bytes()); // num_queues
    c[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
    c[40..44].copy_from_slice(&1u32.to_le_bytes()); // max_discard_seg
    c[44..48].copy_from_slice(&((64 << 10) / SECTOR as u32).to_le_bytes());
    c[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
    c[52..56].copy_from_slice(&1u32.to_le_bytes()); // max_write_zeroes_seg
    c[56] = 1; // write_zeroes_may_unmap
    c
}

impl Backend {
    /// Serves one request; returns the bytes written into guest memory.
    async fn request(
        &self,
        chain: virtio_queue::DescriptorChain<GuestMemoryLoadGuard<GuestMemoryMmap<()>>>,
        mem: &GuestMemoryMmap<()>,
    ) -> io::Result<u32> {
        let mut reader = chain.clone().reader(mem).map_err(io::Error::other)?;
        let mut writer = chain.writer(mem).map_err(io::Error::other)?;
        let hdr: ReqHeader = reader.read_obj()?;
        if writer.available_bytes() == 0 {
            return Err(io::Error::other("request without a status byte"));
        }
        let data_in = writer.available_bytes() - 1;
        let offset = hdr.sector.checked_mul(SECTOR);
        let size = self.volume.size();
        let in_range = |len: u64| {
            offset
                .and_then(|o| o.checked_add(len))
                .is_some_and(|e| e <= size)
        };
        let q = self.volume.qos();
        let status = match hdr.kind {
            T_IN => {
                if let Some(q) = q {
                    q.acquire(data_in as u64).await;
                }
                if !in_range(data_in as u64) {
                    S_IOERR
                } else {
                    match self.volume.read_vec(offset.unwrap_or(0), data_in).await {
                        Ok(buf) => {
                            writer.write_all(&buf)?;
                            S_OK
                        }
                        Err(_) => S_IOERR,
                    }
                }
            }
            T_OUT => {
                let len = reader.available_bytes();
                if let Some(q) = q {
                    q.acquire(len as u64).await;
                }
                if self.volume.read_only() || !in_range(len as u64) {
                    S_IOERR
                } else {
                    let mut buf = vec![0u8; len];
                    reader.read_exact(&mut buf)?;
                    match self.volume.write_vec(buf, offset.unwrap_or(0), false).await {
                        Ok(()) => S_OK,
                        Err(_) => S_IOERR,
                    }
                }
            }
            T_FLUSH => match self.volume.flush() {
                Ok(()) => S_OK,
                Err(_) => S_IOERR,
            },
            T_GET_ID => {
                let mut id = [0u8; 20];
                let b = self.id.as_bytes();
                let n = b.len().min(20);
                id[..n].copy_from_slice(&b[..n]);
                writer.write_all(&id[..data_in.min(20)])?;
                S_OK
            }
            T_DISCARD | T_WRITE_ZEROES => {
                if let Some(q) = q {
                    q.acquire(0).await;
                }
                let mut st = S_OK;
                while reader.available_bytes() >= std::mem::size_of::<DiscardSeg>() {
                    let seg: DiscardSeg = reader.read_obj()?;
                    let (off, len) = (
                        seg.sector.saturating_mul(SECTOR),
                        seg.num_sectors as u64 * SECTOR,
                    );
                    let ok = !self.volume.read_only()
                        && seg.num_sectors <= MAX_DISCARD_SECTORS
                        && off.checked_add(len).is_some_and(|e| e <= size)
                        && if hdr.kind == T_DISCARD {
                            self.volume.trim(off, len).is_ok()
                        } else {
                            self.volume
                                .write_zeroes(off, len, seg.flags & 1 != 0)
                                .is_ok()
                        };
                    if !ok {
                        st = S_IOERR;
                        break;
                    }
                }
                st
            }
            _ => S_UNSUPP,
        };
        let written = writer.bytes_written();
        // The status byte is the last byte the device may write.
        let mut rest = writer.available_bytes();
        if rest > 1 {
            // A short read (error): skip to the status byte.
            let pad = vec![0u8; rest - 1];
            writer.write_all(&pad)?;
            rest = 1;
        }
        debug_assert_eq!(rest, 1);
        writer.write_all(&[status])?;
        Ok((written + 1) as u32)
    }

    fn process(&self, vring: &VringRwLock) -> io::Result<()> {
        let Some(mem) = &self.mem else {
            return Ok(());
        };
        let guard = mem.memory();
        let chains: Vec<_> = vring
            .get_mut()
            .get_queue_mut()
            .iter(mem.memory())
            .map_err(io::Error::other)?
            .collect();
        // Every request of the kick is in flight at once; each is
        // answered as the batch completes.
        let done = self
            .rt
            .block_on(futures::future::join_all(chains.into_iter().map(|chain| {
                let guard = &guard;
                async move {
                    let head = chain.head_index();
                    let len = match self.request(chain, guard).await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(volume = %self.id, error = %e, "bad virtio-blk request");
                            0
                        }
                    };
                    (head, len)
                }
            })));
        for (head, len) in done {
            vring.add_used(head, len).map_err(io::Error::other)?;
        }
        vring.signal_used_queue()
    }
}

impl VhostUserBackendMut for Backend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        1
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        let ro = if self.volume.read_only() { F_RO } else { 0 };
        ro | F_SEG_MAX
            | F_BLK_SIZE
            | F_FLUSH
            | F_DISCARD
            | F_WRITE_ZEROES
            | F_INDIRECT_DESC
            | F_EVENT_IDX
            | F_PROTOCOL_FEATURES
            | F_VERSION_1
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let c = config(self.volume.size());
        let start = (offset as usize).min(c.len());
        let end = start.saturating_add(size as usize).min(c.len());
        let mut out = c[start..end].to_vec();
        out.resize(size as usize, 0);
        out
    }

    fn update_memory(&mut self, mem: Mem) -> io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::empty()).ok()
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN || device_event != 0 {
            return Ok(());
        }
        let vring = &vrings[0];
        if self.event_idx {
            loop {
                vring.disable_notification().map_err(io::Error::other)?;
                self.process(vring)?;
                if !vring.enable_notification().map_err(io::Error::other)? {
                    break;
                }
            }
        } else {
            self.process(vring)?;
        }
        Ok(())
    }
}

/// One exported volume's listener.
pub struct VhostExport {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    daemon: Arc<Mutex<Option<vhost_user_backend::ShutdownHandle>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl VhostExport {
    /// Listens on `socket` for QEMU, serving `volume` until dropped.
    pub fn start(socket: &Path, id: &str, volume: Arc<dyn Volume>) -> io::Result<VhostExport> {
        let _ = std::fs::remove_file(socket);
        let stop = Arc::new(AtomicBool::new(false));
        let daemon: Arc<Mutex<Option<vhost_user_backend::ShutdownHandle>>> = Default::default();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread = {
            let (socket, stop, daemon, id) = (
                socket.to_path_buf(),
                stop.clone(),
                daemon.clone(),
                id.to_string(),
            );
            std::thread::Builder::new()
                .name(format!("vhost-{}", &id[..id.len().min(8)]))
                .spawn(move || {
                    let mut ready = Some(ready_tx);
                    while !stop.load(Ordering::Acquire) {
                        let rt = match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt,
                            Err(e) => {
                                tracing::error!(volume = %id, error = %e, "vhost-user runtime");
                                return;
                            }
                        };
                        let backend = Arc::new(RwLock::new(Backend {
                            volume: volume.clone(),
                            id: id.clone(),
                            mem: None,
                            event_idx: false,
                            rt,
                        }));
                        let mut d = match VhostUserDaemon::new(
                            format!("vhost-user-blk-{id}"),
                            backend,
                            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
                        ) {
                            Ok(d) => d,
                            Err(e) => {
                                tracing::error!(volume = %id, error = %e, "vhost-user daemon");
                                return;
                            }
                        };
                        let mut listener = match vhost::vhost_user::Listener::new(&socket, true) {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::error!(volume = %id, error = %e, "vhost-user socket");
                                return;
                            }
                        };
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                        if let Err(e) = d.start(&mut listener) {
                            tracing::warn!(volume = %id, error = %e, "vhost-user accept");
                            continue;
                        }
                        if stop.load(Ordering::Acquire) {
                            d.request_shutdown();
                        } else {
                            *daemon.lock().expect("daemon") = d.shutdown_handle();
                        }
                        tracing::info!(volume = %id, "vhost-user frontend connected");
                        let r = d.wait();
                        *daemon.lock().expect("daemon") = None;
                        tracing::info!(volume = %id, result = ?r.err().map(|e| e.to_string()), "vhost-user frontend gone");
                    }
                })?
        };
        let _ = ready_rx.recv_timeout(std::time::Duration::from_secs(5));
        Ok(VhostExport {
            socket: socket.to_path_buf(),
            stop,
            daemon,
            thread: Some(thread),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for VhostExport {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.daemon.lock().expect("daemon").take() {
            h.shutdown();
        }
        // Wake a listener blocked in accept, again until the thread is
        // gone: it may be between two connections, about to listen anew,
        // and miss one wake-up. A thread that does not end is left behind
        // rather than hang the caller (an unexport, or blockd's exit).
        if let Some(t) = self.thread.take() {
            let t0 = std::time::Instant::now();
            while !t.is_finished() && t0.elapsed() < std::time::Duration::from_secs(5) {
                let _ = std::os::unix::net::UnixStream::connect(&self.socket);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!(socket = %self.socket.display(), "a vhost-user export thread did not stop");
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}
