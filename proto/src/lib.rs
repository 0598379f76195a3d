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

    /// One port's DHCP reservation digest, as netd keeps it and the
    /// controller computes it from its rows: SHA-256 of
    /// "port_id\nnetwork_id\nmac\nip,ip\nhostname", the strings as sent.
    /// A node's digest is the XOR of its ports' ([`xor_into`]), so it
    /// follows each change in any order.
    pub fn dhcp_port_digest(p: &v1::DhcpPortHosts) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [&p.port_id, &p.network_id, &p.mac] {
            h.update(part.as_bytes());
            h.update(b"\n");
        }
        h.update(p.ip_addresses.join(",").as_bytes());
        h.update(b"\n");
        h.update(p.hostname.as_bytes());
        h.finalize().into()
    }

    /// XORs `b` into `a`.
    pub fn xor_into(a: &mut [u8; 32], b: &[u8; 32]) {
        for (x, y) in a.iter_mut().zip(b) {
            *x ^= y;
        }
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
