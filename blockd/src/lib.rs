//! blockd: the storage node daemon.
//!
//! This first slice has the two ends that every later part plugs into:
//!
//! - [`volume`]: the `Volume` trait (read, write with FUA, flush, trim,
//!   write-zeroes, allocation extents) and `FileVolume`, a thin volume in a
//!   sparse file (holes cost nothing and read as zeros).
//! - [`export::nbd`]: an NBD server (fixed newstyle; LIST/INFO/GO,
//!   structured replies with sparse reads, `base:allocation` block status)
//!   that real clients (qemu-img, qemu-io, nbdinfo, nbdcopy) talk to.
//!
//! - [`service`]: pools and the durable registry of volumes (create thin,
//!   delete, grow, export/unexport over NBD, QoS limits; exports survive a
//!   restart).
//! - [`qos`]: per-volume token buckets (IOPS, bytes/s) shared by every
//!   connection to an export, changeable while exported.
//! - [`grpc`]: `proto/ursa/blockd/v1` over tonic.
//!
//! Still to come (issue: blockd): the copy-on-write on-disk format with
//! snapshots and clones (the RPCs answer UNIMPLEMENTED until then), the
//! io_uring engine and vhost-user-blk.

pub mod engine;
pub mod export;
pub mod grpc;
pub mod qos;
pub mod service;
pub mod thin;
pub mod volume;
