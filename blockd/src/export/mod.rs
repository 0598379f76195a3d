//! Exports: how volumes leave the node. [`nbd`] serves them over the NBD
//! protocol (TCP or unix socket); vhost-user-blk for local guests follows.

pub mod nbd;
