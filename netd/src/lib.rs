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
//!   each bridge, or on a metadata namespace's leg; static reservations
//!   from the desired state; relayed requests answered to the relay).
//! - [`dhcp_hosts`]: the reservations of ports plugged elsewhere, kept a
//!   port at a time beside the synced state, with a digest and a boot id.
//! - [`router`]: L3 routers as namespaces: legs, addresses, routes, and
//!   the NAT table (SNAT, floating IPs, hairpin, metadata redirect).
//! - [`firewall`]: security groups and anti-spoofing compiled to two
//!   nftables tables; rules and remote groups live in sets.
//! - [`nft`]: nftables JSON batches, one `nft -j -f -` transaction each
//!   (the one subprocess netd runs, chosen for the stable JSON interface).
//! - [`metadata`]: the metadata proxy in each router or metadata
//!   namespace, forwarding with signed identity headers.
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
//! Routers are namespaces `/run/netns/urt-…` whose legs are veth ports
//! planned like any other; a DHCP network that no router joins gets a
//! one-leg "metadata namespace" holding its DHCP address when a metadata
//! upstream is configured. Security groups filter bridged traffic with
//! conntrack through br_netfilter (this kernel has no bridge conntrack).
//!
//! netd knows nothing of projects or tokens. Restarting it changes nothing
//! in a kernel that already matches, so traffic keeps flowing.

pub mod dhcp;
pub mod dhcp_hosts;
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
