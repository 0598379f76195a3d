//! The contracts: gRPC services between Ursa's control plane and its node
//! daemons, generated at build time from the `.proto` files beside this crate
//! (protox compiles them, tonic/prost generate the Rust), so no system
//! `protoc` is needed.
//!
//! This crate depends on nothing of ours. `control` uses the clients;
//! `netd`, `blockd` and the compute agent implement the servers. Every call is
//! idempotent and keyed by the resource's UUID, so retries are always safe.
//!
//! - [`node::v1`]: what every daemon serves: its name, version and the
//!   kernel capabilities it found.
//! - [`netd::v1`]: the network node daemon: networks, ports, l2population,
//!   whole-node sync and port status events.
//! - [`blockd::v1`]: the storage node daemon: volumes, exports (connection
//!   info as Cinder returns it), pools.
//! - [`compute::v1`]: the compute agent: guests under QEMU (boot, power,
//!   console, volume hot-plug).

pub mod node {
    pub mod v1 {
        tonic::include_proto!("ursa.node.v1");
    }
}

pub mod netd {
    pub mod v1 {
        tonic::include_proto!("ursa.netd.v1");
    }

    /// The tap device netd makes for a `Tap` port, which a guest's QEMU
    /// opens by name: `utp-` and the first 11 hex digits of the port id
    /// (fits IFNAMSIZ, the same on every start).
    pub fn tap_device(port_id: &str) -> String {
        let short: String = port_id
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .take(11)
            .collect::<String>()
            .to_ascii_lowercase();
        format!("utp-{short}")
    }
}

pub mod blockd {
    pub mod v1 {
        tonic::include_proto!("ursa.blockd.v1");
    }
}

pub mod compute {
    pub mod v1 {
        tonic::include_proto!("ursa.compute.v1");
    }
}
