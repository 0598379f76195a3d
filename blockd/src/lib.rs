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
//! Still to come (issue: blockd): the copy-on-write on-disk format with
//! snapshots and clones, the io_uring engine, vhost-user-blk, QoS, and the
//! gRPC service (`proto/ursa/blockd`). Until that service exists the
//! `ursa-blockd` binary exports volume files named on its command line.

pub mod export;
pub mod volume;
