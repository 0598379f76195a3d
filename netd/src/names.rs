//! Kernel object names, derived from resource UUIDs so that they fit in
//! IFNAMSIZ (15 characters) and are the same on every start: a 4-character
//! kind prefix and the first 11 hex digits of the UUID (44 bits).

/// Every prefix netd owns; links with other names are never touched
/// (except physical interfaces it was told to bridge).
pub const PREFIXES: [&str; 5] = [BRIDGE, VXLAN, VLAN, VETH, TAP];
pub const BRIDGE: &str = "ubr-";
pub const VXLAN: &str = "uvx-";
pub const VLAN: &str = "uvl-";
pub const VETH: &str = "uve-";
pub const TAP: &str = "utp-";

fn short(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(11)
        .collect::<String>()
        .to_ascii_lowercase()
}

pub fn bridge(network_id: &str) -> String {
    format!("{BRIDGE}{}", short(network_id))
}

pub fn vxlan(network_id: &str) -> String {
    format!("{VXLAN}{}", short(network_id))
}

pub fn vlan(network_id: &str) -> String {
    format!("{VLAN}{}", short(network_id))
}

pub fn veth(port_id: &str) -> String {
    format!("{VETH}{}", short(port_id))
}

/// The contract with the compute agent, which opens the tap by this name.
pub fn tap(port_id: &str) -> String {
    ursa_proto::netd::tap_device(port_id)
}

/// A router's network namespace (/run/netns/urt-…).
pub const ROUTER_NS: &str = "urt-";

pub fn router_ns(router_id: &str) -> String {
    format!("{ROUTER_NS}{}", short(router_id))
}

/// A router's leg on an internal network, inside its namespace.
pub fn router_leg(port_id: &str) -> String {
    format!("qr-{}", short(port_id))
}

/// A router's gateway leg, inside its namespace.
pub fn router_gateway(port_id: &str) -> String {
    format!("qg-{}", short(port_id))
}

pub fn owned(name: &str) -> bool {
    PREFIXES.iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_fit_ifnamsiz_and_are_stable() {
        let id = "6F9619FF-8B86-D011-B42D-00C04FC964FF";
        assert_eq!(super::bridge(id), "ubr-6f9619ff8b8");
        assert_eq!(super::tap(id).len(), 15);
        assert!(super::owned(&super::veth(id)));
        assert!(!super::owned("eth0"));
    }
}
