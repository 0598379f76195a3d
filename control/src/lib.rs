//! Ursa's control plane: the OpenStack REST APIs and the `ursa` binary.
//!
//! A request flows one way: [`api`] (HTTP: body limits, tracing, extractors)
//! → a service's handlers (parse, check policy) → the service (state and
//! rules, e.g. [`identity::Identity`]) → [`store`] for durability. Errors of
//! every layer are one type, [`error::Error`], turned into OpenStack's error
//! body in exactly one place.
//!
//! - [`compute`]: Nova v2.1 (flavors, key pairs, servers and their actions,
//!   quotas, hosts, aggregates, proxies) and the compute agent that runs
//!   guests with QEMU on taps netd made (in-process, or `ursa agent` over
//!   gRPC).
//! - [`identity`]: Keystone v3 (domains, projects, users, groups, roles,
//!   assignments, application credentials, catalog, tokens, policy).
//! - [`image`]: Glance v2 (images, data streamed to a local image store,
//!   members, tags, JSON-patch updates).
//! - [`network`]: Neutron v2.0 (networks, subnets and addresses, ports,
//!   routers, floating IPs, security groups, quotas, tags) pushed to netd
//!   nodes as each node's whole desired state.
//! - [`volume`]: Cinder v3 (volumes, snapshots, types, quotas) placed on
//!   blockd nodes and driven over their gRPC API.
//! - [`store`]: SQLite (embedded, the default) or PostgreSQL, behind one
//!   interface, with migrations.
//! - [`doctor`]: the host's prerequisites (root, nftables, QEMU, qemu-img,
//!   memlock, kernel modules): the table `ursa up` prints once at start and
//!   `ursa doctor` prints.
//! - [`duty`]: background duties (the netd push, the power-state sync) held
//!   by one controller at a time under a lease in the database.
//! - [`server`]: `ursa up`: state directory, bootstrap, the HTTP listener,
//!   `clouds.yaml`/`openrc`, clean shutdown.
//!
//! Each service drives the node daemons (`netd`, `blockd`, compute agents)
//! through the gRPC clients in `ursa-proto` ([`rpc`] makes the channels).

pub mod api;
pub mod compute;
pub mod doctor;
pub mod duty;
pub mod error;
pub mod identity;
pub mod image;
pub mod network;
pub mod rpc;
pub mod server;
pub mod store;
pub mod volume;
