//! The `ursa` binary's library: what only the binary knows, every service
//! at once.
//!
//! A request flows one way: `ursa_core::http` (body limits, tracing,
//! extractors) → a service's handlers (parse, check policy) → the service
//! (state and rules) → `ursa_core::store` for durability. Errors of every
//! layer are one type, `ursa_core::error::Error`, turned into OpenStack's
//! error body in exactly one place.
//!
//! The services are crates of their own under `control/`: `ursa-identity`
//! (Keystone v3), `ursa-image` (Glance v2), `ursa-network` (Neutron v2.0,
//! pushed to netd), `ursa-volume` (Cinder v3, on blockd) and
//! `ursa-compute` (Nova v2.1 and the compute agent), each over
//! `ursa-core`. This crate holds:
//!
//! - [`app`]: every service's routes merged into one application.
//! - [`server`]: `ursa up`: state directory, bootstrap, the HTTP listener,
//!   the node daemons it starts, `clouds.yaml`/`openrc`, clean shutdown.
//! - [`doctor`]: the host's prerequisites (root, nftables, QEMU, qemu-img,
//!   memlock, kernel modules): the table `ursa up` prints once at start and
//!   `ursa doctor` prints.

pub mod app;
pub mod doctor;
pub mod server;
