//! Desired state: what control asked this node to have, validated and kept
//! durably in `<state>/desired.json` (written atomically), so a restarted
//! netd knows what the kernel should look like before anyone asks again.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

pub type Mac = [u8; 6];

/// Where named network namespaces are mounted (as `ip netns` does).
pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Segment {
    Vxlan { vni: u32 },
    Flat { physnet: String },
    Vlan { physnet: String, vlan_id: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub segment: Segment,
    /// 0: derive from the underlay or physical interface.
    pub mtu: u32,
    #[serde(default)]
    pub subnets: Vec<Subnet>,
    #[serde(default)]
    pub dns_domain: String,
    /// DHCP reservations for ports not plugged here: (MAC, address, host name).
    #[serde(default)]
    pub dhcp_hosts: Vec<(Mac, Ipv4Addr, String)>,
}

/// An IPv4 subnet netd answers DHCP for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub net: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// (destination, prefix, nexthop)
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    pub enable_dhcp: bool,
    pub server: Ipv4Addr,
    pub lease_seconds: u32,
}

impl Subnet {
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.mask()) == u32::from(self.net)
    }
}

/// Parses "10.0.0.0/24" into a subnet base (host bits must be zero).
pub fn parse_v4_net(s: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || Error::InvalidArgument(format!("{s:?} is not an IPv4 network (10.0.0.0/24)"));
    let (ip, p) = parse_cidr(s)?;
    let IpAddr::V4(ip) = ip else {
        return Err(bad());
    };
    let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    if u32::from(ip) & !mask != 0 {
        return Err(bad());
    }
    Ok((ip, p))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortKind {
    #[default]
    Tap,
    /// `up`: netd also brings the far end up.
    Veth {
        netns: String,
        ifname: String,
        up: bool,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub id: String,
    pub network_id: String,
    pub mac: Mac,
    /// "10.0.0.5/24"
    pub fixed_ips: Vec<String>,
    pub kind: PortKind,
    pub admin_down: bool,
    #[serde(default)]
    pub hostname: String,
    /// Filtering on: anti-spoofing and the security groups' rules.
    #[serde(default)]
    pub port_security: bool,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub allowed_address_pairs: Vec<AddressPair>,
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub project_id: String,
}

/// Another address (or network) a port may send from, with its own MAC or another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPair {
    pub net: ipnet::IpNet,
    pub mac: Option<Mac>,
}

/// A router's leg on one network: a veth whose far end lives in the
/// router's namespace with the given address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterLeg {
    pub port_id: String,
    pub network_id: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

impl RouterLeg {
    pub fn net(&self) -> ipnet::Ipv4Net {
        ipnet::Ipv4Net::new(self.ip, self.prefix)
            .expect("prefix checked")
            .trunc()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterGateway {
    pub leg: RouterLeg,
    pub nexthop: Option<Ipv4Addr>,
    pub enable_snat: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Router {
    pub id: String,
    pub interfaces: Vec<RouterLeg>,
    pub gateway: Option<RouterGateway>,
    /// (destination, nexthop)
    pub routes: Vec<(ipnet::Ipv4Net, Ipv4Addr)>,
    /// (floating, fixed)
    pub floating_ips: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Not a tenant's router: the metadata namespace netd gives a DHCP
    /// network that no router joins (no forwarding, one leg).
    #[serde(default)]
    pub isolated: bool,
}

impl Router {
    /// Every leg with the name its far end has inside the namespace.
    pub fn legs(&self) -> impl Iterator<Item = (&RouterLeg, String)> {
        self.interfaces
            .iter()
            .map(|l| (l, crate::names::router_leg(&l.port_id)))
            .chain(
                self.gateway
                    .iter()
                    .map(|g| (&g.leg, crate::names::router_gateway(&g.leg.port_id))),
            )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

/// One security group rule, as Neutron defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub direction: Direction,
    pub v6: bool,
    /// IP protocol number; None: any.
    pub protocol: Option<u8>,
    /// tcp/udp/sctp destination ports (inclusive).
    pub ports: Option<(u16, u16)>,
    /// icmp type and code.
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub remote_net: Option<ipnet::IpNet>,
    pub remote_group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: String,
    pub rules: Vec<Rule>,
    pub remote_members: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePort {
    pub mac: Mac,
    pub ips: Vec<IpAddr>,
    pub vtep: Ipv4Addr,
    /// The port and its owner (for the metadata proxy).
    #[serde(default)]
    pub port_id: String,
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub project_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remotes {
    pub vteps: Vec<Ipv4Addr>,
    pub ports: Vec<RemotePort>,
}

/// Everything this node should have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub networks: BTreeMap<String, Network>,
    pub ports: BTreeMap<String, Port>,
    pub remotes: BTreeMap<String, Remotes>,
    #[serde(default)]
    pub routers: BTreeMap<String, Router>,
    #[serde(default)]
    pub security_groups: BTreeMap<String, SecurityGroup>,
}

/// What this node can do, found at start.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    pub vtep: Option<Ipv4Addr>,
    pub underlay_mtu: u32,
    /// physical network name → interface name
    pub physnets: BTreeMap<String, String>,
    pub vlan_supported: bool,
    pub vlan_missing_reason: String,
    /// Serve metadata on DHCP networks without a router (a metadata
    /// upstream is configured).
    pub isolated_metadata: bool,
}

pub fn parse_mac(s: &str) -> Result<Mac> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bad = || Error::InvalidArgument(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

pub fn fmt_mac(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Ids are UUIDs; kernel names are derived from them.
pub fn check_id(what: &str, id: &str) -> Result<()> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| Error::InvalidArgument(format!("{what} id {id:?} is not a UUID")))
}

/// "10.0.0.5/24" → (address, prefix).
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8)> {
    let bad = || {
        Error::InvalidArgument(format!(
            "{s:?} is not an address with a prefix length (10.0.0.5/24)"
        ))
    };
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = a.parse().map_err(|_| bad())?;
    let p: u8 = p.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if p > max {
        return Err(bad());
    }
    Ok((ip, p))
}

fn check_ifname(s: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 15
        || s.contains(['/', ' ', '\t', '\n', ':'])
        || s == "."
        || s == ".."
    {
        return Err(Error::InvalidArgument(format!(
            "{s:?} is not an interface name (1 to 15 characters, no '/', ':' or spaces)"
        )));
    }
    Ok(())
}

/// A stable UUID-shaped id derived from another id (for the kernel names
/// of objects netd makes on its own).
pub fn derived_id(id: &str, salt: &str) -> String {
    let fnv = |seed: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in salt.bytes().chain([0]).chain(id.bytes()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let hex = format!("{:016x}{:016x}", fnv(1), fnv(2));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn short_name(id: &str) -> String {
    crate::names::veth(id)[4..].to_string()
}

fn duplicate_mac(p: &Port, other: &str) -> Error {
    Error::AlreadyExists(format!(
        "MAC {} is already used by port {other} on network {}",
        fmt_mac(&p.mac),
        p.network_id
    ))
}

fn shared_name(p: &Port, other: &str) -> Error {
    Error::AlreadyExists(format!(
        "port {} would share kernel names with port {other}",
        p.id
    ))
}

/// Writes `value` as JSON atomically: a crash leaves the old or the new
/// file, never half.
pub fn save_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let io = |e: std::io::Error| Error::State(format!("{}: {e}", path.display()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&serde_json::to_vec(value).expect("serializes"))
        .map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Where a namespace name points.
pub fn netns_path(netns: &str) -> std::path::PathBuf {
    if netns.starts_with('/') {
        netns.into()
    } else {
        Path::new(NETNS_DIR).join(netns)
    }
}

impl Desired {
    pub fn load(path: &Path) -> Result<Desired> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::State(format!("{} is unreadable: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Desired::default()),
            Err(e) => Err(Error::State(format!("{}: {e}", path.display()))),
        }
    }

    /// Writes atomically: a crash leaves the old or the new file, never half.
    pub fn save(&self, path: &Path) -> Result<()> {
        save_json(path, self)
    }

    pub fn check_network(&self, n: &Network, node: &NodeConfig) -> Result<()> {
        check_id("network", &n.id)?;
        match &n.segment {
            Segment::Vxlan { vni } => {
                if *vni == 0 || *vni > 0xff_ffff {
                    return Err(Error::InvalidArgument(format!(
                        "VNI {vni} is outside 1..16777215"
                    )));
                }
                if node.vtep.is_none() {
                    return Err(Error::FailedPrecondition(
                        "this node has no VTEP address (--vtep-address), so it cannot carry VXLAN"
                            .into(),
                    ));
                }
                if let Some(o) = self.networks.values().find(|o| {
                    o.id != n.id && matches!(o.segment, Segment::Vxlan { vni: v } if v == *vni)
                }) {
                    return Err(Error::AlreadyExists(format!(
                        "VNI {vni} is already used by network {}",
                        o.id
                    )));
                }
                let max = node.underlay_mtu.saturating_sub(50);
                if n.mtu > max {
                    return Err(Error::InvalidArgument(format!(
                        "MTU {} exceeds the overlay maximum {max} (underlay {} - 50)",
                        n.mtu, node.underlay_mtu
                    )));
                }
            }
            Segment::Flat { physnet } => {
                if !node.physnets.contains_key(physnet) {
                    return Err(Error::FailedPrecondition(format!(
                        "this node maps no interface to physical network {physnet:?} (--physical-interface)"
                    )));
                }
                if let Some(o) = self.networks.values().find(|o| {
                    o.id != n.id
                        && matches!(&o.segment, Segment::Flat { physnet: p } if p == physnet)
                }) {
                    return Err(Error::AlreadyExists(format!(
                        "physical network {physnet} already carries flat network {}",
                        o.id
                    )));
                }
            }
            Segment::Vlan { physnet, vlan_id } => {
                if !node.vlan_supported {
                    return Err(Error::FailedPrecondition(format!(
                        "VLAN networks need the kernel's 8021q support, which this kernel lacks: {}",
                        node.vlan_missing_reason
                    )));
                }
                if *vlan_id == 0 || *vlan_id > 4094 {
                    return Err(Error::InvalidArgument(format!(
                        "VLAN id {vlan_id} is outside 1..4094"
                    )));
                }
                if !node.physnets.contains_key(physnet) {
                    return Err(Error::FailedPrecondition(format!(
                        "this node maps no interface to physical network {physnet:?}"
                    )));
                }
                if let Some(o) = self.networks.values().find(|o| {
                    o.id != n.id
                        && matches!(&o.segment, Segment::Vlan { physnet: p, vlan_id: v } if p == physnet && v == vlan_id)
                }) {
                    return Err(Error::AlreadyExists(format!("VLAN {vlan_id} on {physnet} is used by network {}", o.id)));
                }
            }
        }
        let short = crate::names::bridge(&n.id);
        if let Some(o) = self
            .networks
            .values()
            .find(|o| o.id != n.id && crate::names::bridge(&o.id) == short)
        {
            return Err(Error::AlreadyExists(format!(
                "network {} would share kernel names with network {}",
                n.id, o.id
            )));
        }
        if let Some(old) = self.networks.get(&n.id) {
            if old.segment != n.segment && self.ports.values().any(|p| p.network_id == n.id) {
                return Err(Error::FailedPrecondition(
                    "a network's segment cannot change while it has ports".into(),
                ));
            }
        }
        Ok(())
    }

    pub fn check_port(&self, p: &Port) -> Result<()> {
        self.check_port_fields(p)?;
        if let Some(o) = self
            .ports
            .values()
            .find(|o| o.id != p.id && o.network_id == p.network_id && o.mac == p.mac)
        {
            return Err(duplicate_mac(p, &o.id));
        }
        // Kernel names keep 44 bits of the UUID; two ids that share them
        // cannot both live on one node.
        let dev = short_name(&p.id);
        if let Some(o) = self
            .ports
            .values()
            .find(|o| o.id != p.id && short_name(&o.id) == dev)
        {
            return Err(shared_name(p, &o.id));
        }
        if let Some(r) = self.routers.values().find(|r| {
            r.legs()
                .any(|(l, _)| l.port_id == p.id || short_name(&l.port_id) == dev)
        }) {
            return Err(Error::AlreadyExists(format!(
                "port {} is (or shares kernel names with) a leg of router {}",
                p.id, r.id
            )));
        }
        Ok(())
    }

    /// Everything about a port but its uniqueness among the others.
    fn check_port_fields(&self, p: &Port) -> Result<()> {
        check_id("port", &p.id)?;
        check_id("network", &p.network_id)?;
        if !self.networks.contains_key(&p.network_id) {
            return Err(Error::NotFound(format!(
                "network {} is not known on this node",
                p.network_id
            )));
        }
        if p.mac[0] & 1 == 1 || p.mac == [0; 6] {
            return Err(Error::InvalidArgument(format!(
                "{} is not a unicast MAC address",
                fmt_mac(&p.mac)
            )));
        }
        for ip in &p.fixed_ips {
            parse_cidr(ip)?;
        }
        for g in &p.security_groups {
            check_id("security group", g)?;
        }
        if let PortKind::Veth { netns, ifname, .. } = &p.kind {
            check_ifname(ifname)?;
            if netns.is_empty()
                || netns.len() > 255
                || (!netns.starts_with('/') && netns.contains('/'))
                || netns.contains("..")
            {
                return Err(Error::InvalidArgument(format!(
                    "{netns:?} is not a network namespace name"
                )));
            }
            if !netns_path(netns).exists() {
                return Err(Error::FailedPrecondition(format!(
                    "network namespace {netns} does not exist"
                )));
            }
        }
        if let Some(old) = self.ports.get(&p.id) {
            if old.network_id != p.network_id || old.kind != p.kind {
                return Err(Error::FailedPrecondition(
                    "a port's network and kind cannot change; delete it and create it again".into(),
                ));
            }
        }
        Ok(())
    }

    pub fn check_remotes(&self, network_id: &str) -> Result<()> {
        check_id("network", network_id)?;
        match self.networks.get(network_id) {
            None => Err(Error::NotFound(format!(
                "network {network_id} is not known on this node"
            ))),
            Some(n) if !matches!(n.segment, Segment::Vxlan { .. }) => {
                Err(Error::FailedPrecondition(format!(
                    "network {network_id} is not a VXLAN network; remote VTEPs apply to VXLAN only"
                )))
            }
            Some(_) => Ok(()),
        }
    }

    /// Router legs as the ports the link planner makes: veths into the
    /// router's namespace, brought up there.
    pub fn router_ports(&self) -> impl Iterator<Item = Port> + '_ {
        self.routers.values().flat_map(|r| {
            let ns = crate::names::router_ns(&r.id);
            r.legs()
                .map(|(l, ifname)| Port {
                    id: l.port_id.clone(),
                    network_id: l.network_id.clone(),
                    mac: l.mac,
                    fixed_ips: vec![format!("{}/{}", l.ip, l.prefix)],
                    kind: PortKind::Veth {
                        netns: ns.clone(),
                        ifname,
                        up: true,
                    },
                    admin_down: false,
                    hostname: String::new(),
                    port_security: false,
                    security_groups: vec![],
                    allowed_address_pairs: vec![],
                    device_id: r.id.clone(),
                    project_id: String::new(),
                })
                .collect::<Vec<_>>()
        })
    }

    /// The desired state as the node serves it: with a metadata namespace
    /// for each DHCP network no router joins (when `isolated_metadata`),
    /// and with router legs among the ports (what the link planner, the
    /// DHCP responders and the metadata proxies see).
    pub fn effective(&self, isolated_metadata: bool) -> std::borrow::Cow<'_, Desired> {
        let isolated = if isolated_metadata {
            self.isolated_metadata_routers()
        } else {
            vec![]
        };
        if self.routers.is_empty() && isolated.is_empty() {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut d = self.clone();
        for r in isolated {
            d.routers.insert(r.id.clone(), r);
        }
        let legs: Vec<Port> = d.router_ports().collect();
        for p in legs {
            d.ports.insert(p.id.clone(), p);
        }
        std::borrow::Cow::Owned(d)
    }

    /// One single-leg namespace per DHCP network that no router joins: the
    /// leg holds the subnet's DHCP address, DHCP is answered there, and the
    /// metadata proxy behind 169.254.169.254 (which DHCP routes through
    /// that address) is reachable without a router.
    pub fn isolated_metadata_routers(&self) -> Vec<Router> {
        let routed: std::collections::BTreeSet<&str> = self
            .routers
            .values()
            .flat_map(|r| r.interfaces.iter().map(|l| l.network_id.as_str()))
            .collect();
        self.networks
            .values()
            .filter(|n| !routed.contains(n.id.as_str()))
            .filter_map(|n| {
                let s = n.subnets.iter().find(|s| s.enable_dhcp)?;
                let h = derived_id(&n.id, "metadata-mac");
                let mac = [
                    0xfa,
                    0x16,
                    0x3e,
                    u8::from_str_radix(&h[0..2], 16).ok()?,
                    u8::from_str_radix(&h[2..4], 16).ok()?,
                    u8::from_str_radix(&h[4..6], 16).ok()?,
                ];
                Some(Router {
                    id: derived_id(&n.id, "metadata-namespace"),
                    interfaces: vec![RouterLeg {
                        port_id: derived_id(&n.id, "metadata-port"),
                        network_id: n.id.clone(),
                        mac,
                        ip: s.server,
                        prefix: s.prefix,
                    }],
                    gateway: None,
                    routes: vec![],
                    floating_ips: vec![],
                    isolated: true,
                })
            })
            .collect()
    }

    pub fn check_router(&self, r: &Router) -> Result<()> {
        check_id("router", &r.id)?;
        let short = crate::names::router_ns(&r.id);
        if let Some(o) = self
            .routers
            .values()
            .find(|o| o.id != r.id && crate::names::router_ns(&o.id) == short)
        {
            return Err(Error::AlreadyExists(format!(
                "router {} would share kernel names with router {}",
                r.id, o.id
            )));
        }
        let mut nets = std::collections::BTreeSet::new();
        for (l, _) in r.legs() {
            check_id("router port", &l.port_id)?;
            if !self.networks.contains_key(&l.network_id) {
                return Err(Error::NotFound(format!(
                    "network {} is not known on this node",
                    l.network_id
                )));
            }
            if !nets.insert(l.network_id.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "router {} has two legs on network {}",
                    r.id, l.network_id
                )));
            }
            if l.prefix > 32 || l.prefix == 0 {
                return Err(Error::InvalidArgument(format!(
                    "router address {}/{} has a bad prefix",
                    l.ip, l.prefix
                )));
            }
            let dev = short_name(&l.port_id);
            if let Some(o) = self.ports.values().find(|o| short_name(&o.id) == dev) {
                return Err(Error::AlreadyExists(format!(
                    "router port {} would share kernel names with port {}",
                    l.port_id, o.id
                )));
            }
            if let Some(o) = self.routers.values().filter(|o| o.id != r.id).find(|o| {
                o.legs()
                    .any(|(ol, _)| short_name(&ol.port_id) == dev || ol.port_id == l.port_id)
            }) {
                return Err(Error::AlreadyExists(format!(
                    "router port {} is already a leg of router {}",
                    l.port_id, o.id
                )));
            }
        }
        if !r.floating_ips.is_empty() && r.gateway.is_none() {
            return Err(Error::FailedPrecondition(format!(
                "router {} has floating IPs but no external gateway",
                r.id
            )));
        }
        for (fip, fixed) in &r.floating_ips {
            if !r.interfaces.iter().any(|l| l.net().contains(fixed)) {
                return Err(Error::InvalidArgument(format!(
                    "floating IP {fip}: fixed address {fixed} is on no network the router joins"
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (fip, _) in &r.floating_ips {
            if !seen.insert(*fip) {
                return Err(Error::InvalidArgument(format!(
                    "floating IP {fip} is given twice"
                )));
            }
        }
        Ok(())
    }

    pub fn check_security_group(&self, g: &SecurityGroup) -> Result<()> {
        check_id("security group", &g.id)?;
        for r in &g.rules {
            if let Some(rg) = &r.remote_group {
                check_id("remote group", rg)?;
            }
            if r.remote_group.is_some() && r.remote_net.is_some() {
                return Err(Error::InvalidArgument(
                    "a rule has either a remote IP prefix or a remote group, not both".into(),
                ));
            }
            if let Some(n) = r.remote_net {
                if n.addr().is_ipv6() != r.v6 {
                    return Err(Error::InvalidArgument(format!(
                        "remote prefix {n} does not match the rule's ethertype"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Validates a whole state as if built call by call (in linear time:
    /// a resync carries every port of the node).
    pub fn check_all(&self, node: &NodeConfig) -> Result<()> {
        let mut built = Desired::default();
        for n in self.networks.values() {
            built.check_network(n, node)?;
            built.networks.insert(n.id.clone(), n.clone());
        }
        let mut macs = std::collections::HashMap::new();
        let mut short = std::collections::HashMap::new();
        for p in self.ports.values() {
            built.check_port_fields(p)?;
            if let Some(o) = macs.insert((p.network_id.as_str(), p.mac), p.id.as_str()) {
                return Err(duplicate_mac(p, o));
            }
            if let Some(o) = short.insert(short_name(&p.id), p.id.as_str()) {
                return Err(shared_name(p, o));
            }
        }
        built.ports = self.ports.clone();
        for id in self.remotes.keys() {
            built.check_remotes(id)?;
        }
        for g in self.security_groups.values() {
            built.check_security_group(g)?;
        }
        for r in self.routers.values() {
            built.check_router(r)?;
            built.routers.insert(r.id.clone(), r.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeConfig {
        NodeConfig {
            vtep: Some(Ipv4Addr::new(198, 18, 0, 1)),
            underlay_mtu: 1500,
            ..Default::default()
        }
    }

    fn net(id: &str, vni: u32) -> Network {
        Network {
            id: id.into(),
            segment: Segment::Vxlan { vni },
            mtu: 0,
            subnets: vec![],
            dns_domain: String::new(),
            dhcp_hosts: vec![],
        }
    }

    const N1: &str = "11111111-1111-4111-8111-111111111111";
    const N2: &str = "22222222-2222-4222-8222-222222222222";
    const P1: &str = "33333333-3333-4333-8333-333333333333";
    const P2: &str = "44444444-4444-4444-8444-444444444444";

    #[test]
    fn vni_reuse_and_bad_ids_are_refused() {
        let mut d = Desired::default();
        d.check_network(&net(N1, 100), &node()).unwrap();
        d.networks.insert(N1.into(), net(N1, 100));
        assert!(matches!(
            d.check_network(&net(N2, 100), &node()),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            d.check_network(&net("nope", 5), &node()),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            d.check_network(&net(N2, 0), &node()),
            Err(Error::InvalidArgument(_))
        ));
        let vlan = Network {
            id: N2.into(),
            segment: Segment::Vlan {
                physnet: "p".into(),
                vlan_id: 5,
            },
            mtu: 0,
            subnets: vec![],
            dns_domain: String::new(),
            dhcp_hosts: vec![],
        };
        assert!(matches!(
            d.check_network(&vlan, &node()),
            Err(Error::FailedPrecondition(_))
        ));
    }

    #[test]
    fn ports_need_their_network_and_a_unique_mac() {
        let mut d = Desired::default();
        let p = Port {
            id: P1.into(),
            network_id: N1.into(),
            mac: [2, 0, 0, 0, 0, 1],
            fixed_ips: vec!["10.0.0.5/24".into()],
            kind: PortKind::Tap,
            admin_down: false,
            hostname: String::new(),
            port_security: false,
            security_groups: vec![],
            allowed_address_pairs: vec![],
            device_id: String::new(),
            project_id: String::new(),
        };
        assert!(matches!(d.check_port(&p), Err(Error::NotFound(_))));
        d.networks.insert(N1.into(), net(N1, 100));
        d.check_port(&p).unwrap();
        d.ports.insert(P1.into(), p.clone());
        let dup = Port {
            id: P2.into(),
            ..p.clone()
        };
        assert!(matches!(d.check_port(&dup), Err(Error::AlreadyExists(_))));
        let bad_ip = Port {
            id: P2.into(),
            mac: [2, 0, 0, 0, 0, 2],
            fixed_ips: vec!["10.0.0/24".into()],
            ..p.clone()
        };
        assert!(matches!(
            d.check_port(&bad_ip),
            Err(Error::InvalidArgument(_))
        ));
        let bad_if = Port {
            id: P2.into(),
            mac: [2, 0, 0, 0, 0, 2],
            kind: PortKind::Veth {
                netns: "x".into(),
                ifname: "a/b".into(),
                up: true,
            },
            ..p
        };
        assert!(matches!(
            d.check_port(&bad_if),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn macs_and_cidrs_parse() {
        assert_eq!(
            parse_mac("02:AB:cd:00:00:01").unwrap(),
            [2, 0xab, 0xcd, 0, 0, 1]
        );
        assert!(parse_mac("02:ab:cd:00:00").is_err());
        assert!(parse_cidr("10.0.0.1/33").is_err());
        assert!(parse_cidr("10.0.0.1/24").is_ok());
    }
}
