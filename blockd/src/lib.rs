//! blockd: the storage node daemon.
//!
//! A request flows one way: [`grpc`] (proto/ursa/blockd/v1 over tonic) →
//! [`service`] (pools, the durable registry of volumes, which volume is
//! exported how) → [`thin`] (the on-disk pool format: per-device chunk
//! maps, a CRC-framed journal and checkpoints, copy-on-write snapshots and
//! clones) → [`engine`] (io_uring rings, one per worker thread; O_DIRECT,
//! registered files and buffers, FSYNC and RWF_DSYNC through the ring).
//!
//! Exports see volumes through the [`volume::Volume`] trait (read, write
//! with FUA, flush, trim, write-zeroes, allocation extents; async variants
//! for the NBD server), wrapped in [`volume::Throttled`] for the per-volume
//! [`qos`] limiter and I/O counters:
//!
//! - [`export::nbd`]: an NBD server (fixed newstyle; LIST/INFO/GO,
//!   structured replies with sparse reads, `base:allocation` block status,
//!   concurrent requests per connection) for qemu-img, qemu-io, nbdinfo,
//!   nbdcopy and fio. After the handshake a connection runs on a thread
//!   with an io_uring of its own: volumes plan reads and writes
//!   ([`volume::Volume::plan_read`]) into their backing file and the
//!   connection does the I/O itself, with no hand-off between threads.
//! - [`export::vhost_user`]: vhost-user-blk for local QEMU guests, on the
//!   rust-vmm crates.
//!
//! [`volume::FileVolume`] serves a plain file as it is (`--export`), on the
//! same engine.

pub mod engine;
pub mod export;
pub mod grpc;
pub mod qos;
pub mod service;
pub mod thin;
pub mod volume;
