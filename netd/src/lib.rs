//! netd: the network node daemon. One per node, it makes the kernel match
//! the desired state control sends over gRPC (proto/ursa/netd/v1).
//!
//! - [`model`]: desired state (networks, ports, remotes), its validation and
//!   its durable copy in `<state>/desired.json`.
//! - [`names`]: kernel names derived from UUIDs (`ubr-`, `uvx-`, `uvl-`,
//!   `uve-`, `utp-` + 11 hex digits); netd only touches links with these
//!   prefixes, plus the physical interfaces it was told to bridge.
//! - [`reconcile`]: the pure planner: desired vs observed → actions.
//! - [`kernel`]: rtnetlink on one connection: observe, apply (pipelined).
//! - [`service`]: validate → persist → reconcile, and port status events.
//! - [`grpc`]: the tonic service and message conversion.
//! - [`dhcp`]: DHCPv4 for every network from this process (AF_PACKET on
//!   each bridge, static reservations from the desired state).
//!
//! Per network: a Linux bridge; for VXLAN a vxlan device (learning off, UDP
//! 4789, ARP proxy on) enslaved to it, with FDB entries towards remote VTEPs
//! (all-zeros MAC for broadcast, unknown unicast and multicast; one per
//! remote port MAC) and permanent neighbour entries so ARP for known remote
//! ports is answered locally; flat networks bridge a physical interface;
//! VLAN networks an 802.1q device where the kernel has it. Ports are veth
//! pairs whose far end is born inside a named namespace, or persistent taps
//! for QEMU. The overlay MTU defaults to the underlay's minus 50.
//!
//! netd knows nothing of projects or tokens. Restarting it changes nothing
//! in a kernel that already matches, so traffic keeps flowing.

pub mod dhcp;
pub mod error;
pub mod firewall;
pub mod grpc;
pub mod kernel;
pub mod metadata;
pub mod model;
pub mod names;
pub mod nft;
pub mod reconcile;
pub mod router;
pub mod service;
