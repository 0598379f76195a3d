//! Exports: how volumes leave the node. [`nbd`] serves them over the NBD
//! protocol (TCP or unix socket); [`vhost_user`] serves them to local QEMU
//! guests as vhost-user-blk disks.

pub mod nbd;
pub mod vhost_user;
