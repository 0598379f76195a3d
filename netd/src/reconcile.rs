//! Reconcile: compare desired state with what the kernel has and plan only
//! the difference. [`plan`] is a pure function of the two, so it is tested
//! without a kernel; [`crate::kernel`] observes and applies.
//!
//! An object that already matches produces no action, so a restart or a
//! periodic pass on a correct node changes nothing (no link is re-created, no
//! ifindex moves, no packet is lost).

use crate::model::{fmt_mac, parse_cidr, Desired, Mac, NodeConfig, PortKind, Segment};
use crate::names;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

pub const VXLAN_PORT: u16 = 4789;

/// A link as the kernel shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub master: Option<u32>,
    pub up: bool,
    pub mtu: u32,
    pub vxlan: Option<VxlanState>,
    pub vlan: Option<(u16, u32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VxlanState {
    pub vni: u32,
    pub local: Option<Ipv4Addr>,
    pub port: u16,
    pub learning: bool,
    pub proxy: bool,
}

/// What the kernel has of the objects netd cares about.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub links: BTreeMap<String, LinkState>,
    /// ifindex → name.
    pub index: BTreeMap<u32, String>,
    /// Remote FDB entries (with a destination) per VXLAN device.
    pub fdb: BTreeMap<String, BTreeSet<(Mac, Ipv4Addr)>>,
    /// Permanent neighbour entries per VXLAN device.
    pub neigh: BTreeMap<String, BTreeSet<(IpAddr, Mac)>>,
}

impl Observed {
    pub fn name_of(&self, index: u32) -> Option<&str> {
        match self.index.get(&index) {
            Some(n) => Some(n),
            None => self
                .links
                .values()
                .find(|l| l.index == index)
                .map(|l| l.name.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Delete {
        name: String,
    },
    CreateBridge {
        name: String,
        mtu: u32,
    },
    CreateVxlan {
        name: String,
        vni: u32,
        local: Ipv4Addr,
        underlay: String,
        mtu: u32,
        bridge: String,
    },
    CreateVlan {
        name: String,
        parent: String,
        vlan_id: u16,
        mtu: u32,
        bridge: String,
    },
    CreateVeth {
        name: String,
        bridge: String,
        mtu: u32,
        up: bool,
        netns: String,
        ifname: String,
        mac: Mac,
        /// Also bring the far end up, from inside its namespace.
        peer_up: bool,
    },
    CreateTap {
        name: String,
        bridge: String,
        mtu: u32,
        up: bool,
    },
    /// Changes what differs on an existing link.
    Set {
        name: String,
        master: Option<String>,
        mtu: Option<u32>,
        up: Option<bool>,
    },
    AddFdb {
        dev: String,
        mac: Mac,
        dst: Ipv4Addr,
    },
    DelFdb {
        dev: String,
        mac: Mac,
        dst: Ipv4Addr,
    },
    AddNeigh {
        dev: String,
        ip: IpAddr,
        mac: Mac,
    },
    DelNeigh {
        dev: String,
        ip: IpAddr,
        mac: Mac,
    },
}

impl Action {
    /// 0: deletes, 1: bridges, 2: links on bridges, 3: FDB and neighbours.
    pub fn phase(&self) -> u8 {
        match self {
            Action::Delete { .. } | Action::DelFdb { .. } | Action::DelNeigh { .. } => 0,
            Action::CreateBridge { .. } => 1,
            Action::Set { name, .. } if name.starts_with(names::BRIDGE) => 1,
            Action::AddFdb { .. } | Action::AddNeigh { .. } => 3,
            _ => 2,
        }
    }

    /// The link the action is about.
    pub fn device(&self) -> &str {
        match self {
            Action::Delete { name }
            | Action::CreateBridge { name, .. }
            | Action::CreateVxlan { name, .. }
            | Action::CreateVlan { name, .. }
            | Action::CreateVeth { name, .. }
            | Action::CreateTap { name, .. }
            | Action::Set { name, .. } => name,
            Action::AddFdb { dev, .. }
            | Action::DelFdb { dev, .. }
            | Action::AddNeigh { dev, .. }
            | Action::DelNeigh { dev, .. } => dev,
        }
    }

    pub fn kind(&self) -> Change {
        match self {
            Action::Delete { .. } | Action::DelFdb { .. } | Action::DelNeigh { .. } => {
                Change::Removed
            }
            Action::Set { .. } => Change::Changed,
            _ => Change::Added,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Changed,
    Removed,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Delete { name } => write!(f, "delete link {name}"),
            Action::CreateBridge { name, mtu } => write!(f, "create bridge {name} mtu {mtu}"),
            Action::CreateVxlan {
                name,
                vni,
                local,
                underlay,
                mtu,
                bridge,
            } => {
                write!(f, "create vxlan {name} vni {vni} local {local} dev {underlay} mtu {mtu} master {bridge}")
            }
            Action::CreateVlan {
                name,
                parent,
                vlan_id,
                mtu,
                bridge,
            } => {
                write!(
                    f,
                    "create vlan {name} on {parent} id {vlan_id} mtu {mtu} master {bridge}"
                )
            }
            Action::CreateVeth {
                name,
                bridge,
                mtu,
                up,
                netns,
                ifname,
                mac,
                peer_up,
            } => write!(
                f,
                "create veth {name} master {bridge} mtu {mtu} {} peer {ifname} in {netns} mac {}{}",
                if *up { "up" } else { "down" },
                fmt_mac(mac),
                if *peer_up { " up" } else { "" }
            ),
            Action::CreateTap {
                name,
                bridge,
                mtu,
                up,
            } => {
                write!(
                    f,
                    "create tap {name} master {bridge} mtu {mtu} {}",
                    if *up { "up" } else { "down" }
                )
            }
            Action::Set {
                name,
                master,
                mtu,
                up,
            } => {
                write!(f, "set {name}")?;
                if let Some(m) = master {
                    write!(f, " master {m}")?;
                }
                if let Some(m) = mtu {
                    write!(f, " mtu {m}")?;
                }
                if let Some(u) = up {
                    write!(f, " {}", if *u { "up" } else { "down" })?;
                }
                Ok(())
            }
            Action::AddFdb { dev, mac, dst } => {
                write!(f, "fdb add {} dst {dst} dev {dev}", fmt_mac(mac))
            }
            Action::DelFdb { dev, mac, dst } => {
                write!(f, "fdb del {} dst {dst} dev {dev}", fmt_mac(mac))
            }
            Action::AddNeigh { dev, ip, mac } => {
                write!(f, "neigh add {ip} lladdr {} dev {dev}", fmt_mac(mac))
            }
            Action::DelNeigh { dev, ip, mac } => {
                write!(f, "neigh del {ip} lladdr {} dev {dev}", fmt_mac(mac))
            }
        }
    }
}

/// The underlay as this node found it.
#[derive(Debug, Clone, Default)]
pub struct Underlay {
    pub dev: String,
    pub mtu: u32,
}

/// A network's MTU: as asked, capped for VXLAN at the underlay's minus 50;
/// by default that maximum (VXLAN) or 1500.
pub fn network_mtu(n: &crate::model::Network, underlay: Option<&Underlay>) -> u32 {
    match &n.segment {
        Segment::Vxlan { .. } => {
            let max = underlay.map_or(1450, |u| u.mtu.saturating_sub(50));
            if n.mtu != 0 {
                n.mtu.min(max)
            } else {
                max
            }
        }
        _ => {
            if n.mtu != 0 {
                n.mtu
            } else {
                1500
            }
        }
    }
}

/// Plans the changes that make `obs` match `want`.
pub fn plan(
    want: &Desired,
    obs: &Observed,
    node: &NodeConfig,
    underlay: Option<&Underlay>,
) -> Vec<Action> {
    let mut out = Vec::new();
    let mut wanted_links: BTreeSet<String> = BTreeSet::new();
    let master_name = |l: &LinkState| l.master.and_then(|m| obs.name_of(m)).map(str::to_string);

    // Fixes mtu / master / up on an existing link.
    let settle =
        |out: &mut Vec<Action>, l: &LinkState, master: Option<&str>, mtu: u32, up: bool| {
            let want_master = master
                .filter(|m| master_name(l).as_deref() != Some(*m))
                .map(str::to_string);
            let want_mtu = (mtu != 0 && l.mtu != mtu).then_some(mtu);
            let want_up = (l.up != up).then_some(up);
            if want_master.is_some() || want_mtu.is_some() || want_up.is_some() {
                out.push(Action::Set {
                    name: l.name.clone(),
                    master: want_master,
                    mtu: want_mtu,
                    up: want_up,
                });
            }
        };

    let mut net_mtu: BTreeMap<&str, u32> = BTreeMap::new();
    for n in want.networks.values() {
        let br = names::bridge(&n.id);
        wanted_links.insert(br.clone());
        let mtu = network_mtu(n, underlay);
        net_mtu.insert(&n.id, mtu);
        match obs.links.get(&br) {
            Some(l) if l.kind.as_deref() == Some("bridge") => settle(&mut out, l, None, mtu, true),
            Some(_) => {
                out.push(Action::Delete { name: br.clone() });
                out.push(Action::CreateBridge {
                    name: br.clone(),
                    mtu,
                });
            }
            None => out.push(Action::CreateBridge {
                name: br.clone(),
                mtu,
            }),
        }
        match &n.segment {
            Segment::Vxlan { vni } => {
                let (Some(local), Some(u)) = (node.vtep, underlay) else {
                    continue;
                };
                let vx = names::vxlan(&n.id);
                wanted_links.insert(vx.clone());
                let right = |l: &LinkState| {
                    l.kind.as_deref() == Some("vxlan")
                        && l.vxlan.as_ref().is_some_and(|x| {
                            x.vni == *vni
                                && x.local == Some(local)
                                && x.port == VXLAN_PORT
                                && !x.learning
                                && x.proxy
                        })
                };
                let create = Action::CreateVxlan {
                    name: vx.clone(),
                    vni: *vni,
                    local,
                    underlay: u.dev.clone(),
                    mtu,
                    bridge: br.clone(),
                };
                match obs.links.get(&vx) {
                    Some(l) if right(l) => settle(&mut out, l, Some(&br), mtu, true),
                    Some(_) => {
                        out.push(Action::Delete { name: vx.clone() });
                        out.push(create);
                    }
                    None => out.push(create),
                }
                // l2population: FDB and neighbour entries on the VXLAN device.
                let r = want.remotes.get(&n.id).cloned().unwrap_or_default();
                let mut fdb: BTreeSet<(Mac, Ipv4Addr)> =
                    r.vteps.iter().map(|v| ([0u8; 6], *v)).collect();
                let mut neigh: BTreeSet<(IpAddr, Mac)> = BTreeSet::new();
                for p in &r.ports {
                    fdb.insert((p.mac, p.vtep));
                    for ip in &p.ips {
                        neigh.insert((*ip, p.mac));
                    }
                }
                let empty = BTreeSet::new();
                let have_fdb = obs.fdb.get(&vx).unwrap_or(&empty);
                for (mac, dst) in have_fdb.difference(&fdb) {
                    out.push(Action::DelFdb {
                        dev: vx.clone(),
                        mac: *mac,
                        dst: *dst,
                    });
                }
                for (mac, dst) in fdb.difference(have_fdb) {
                    out.push(Action::AddFdb {
                        dev: vx.clone(),
                        mac: *mac,
                        dst: *dst,
                    });
                }
                let empty = BTreeSet::new();
                let have_neigh = obs.neigh.get(&vx).unwrap_or(&empty);
                for (ip, mac) in have_neigh.difference(&neigh) {
                    out.push(Action::DelNeigh {
                        dev: vx.clone(),
                        ip: *ip,
                        mac: *mac,
                    });
                }
                for (ip, mac) in neigh.difference(have_neigh) {
                    out.push(Action::AddNeigh {
                        dev: vx.clone(),
                        ip: *ip,
                        mac: *mac,
                    });
                }
            }
            Segment::Flat { physnet } => {
                if let Some(phys) = node.physnets.get(physnet).and_then(|i| obs.links.get(i)) {
                    settle(&mut out, phys, Some(&br), 0, true);
                }
            }
            Segment::Vlan { physnet, vlan_id } => {
                let Some(parent) = node.physnets.get(physnet) else {
                    continue;
                };
                let vl = names::vlan(&n.id);
                wanted_links.insert(vl.clone());
                let create = Action::CreateVlan {
                    name: vl.clone(),
                    parent: parent.clone(),
                    vlan_id: *vlan_id,
                    mtu,
                    bridge: br.clone(),
                };
                match obs.links.get(&vl) {
                    Some(l) if l.vlan.map(|v| v.0) == Some(*vlan_id) => {
                        settle(&mut out, l, Some(&br), mtu, true)
                    }
                    Some(_) => {
                        out.push(Action::Delete { name: vl.clone() });
                        out.push(create);
                    }
                    None => out.push(create),
                }
            }
        }
    }

    for p in want.ports.values() {
        let Some(&mtu) = net_mtu.get(p.network_id.as_str()) else {
            continue;
        };
        let br = names::bridge(&p.network_id);
        let up = !p.admin_down;
        let (name, kind) = match &p.kind {
            PortKind::Veth { .. } => (names::veth(&p.id), "veth"),
            PortKind::Tap => (names::tap(&p.id), "tun"),
        };
        wanted_links.insert(name.clone());
        let create = match &p.kind {
            PortKind::Veth {
                netns,
                ifname,
                up: peer_up,
            } => Action::CreateVeth {
                name: name.clone(),
                bridge: br.clone(),
                mtu,
                up,
                netns: netns.clone(),
                ifname: ifname.clone(),
                mac: p.mac,
                peer_up: *peer_up,
            },
            PortKind::Tap => Action::CreateTap {
                name: name.clone(),
                bridge: br.clone(),
                mtu,
                up,
            },
        };
        match obs.links.get(&name) {
            Some(l) if l.kind.as_deref() == Some(kind) => settle(&mut out, l, Some(&br), mtu, up),
            Some(_) => {
                out.push(Action::Delete { name: name.clone() });
                out.push(create);
            }
            None => out.push(create),
        }
        // Addresses are validated on entry; nothing in the kernel carries them
        // on this node except the remote entries above.
        debug_assert!(p.fixed_ips.iter().all(|c| parse_cidr(c).is_ok()));
    }

    // Everything with our prefix that is not wanted goes: ports first, then
    // segments, then bridges, so nothing is left dangling.
    let mut stale: Vec<&LinkState> = obs
        .links
        .values()
        .filter(|l| names::owned(&l.name) && !wanted_links.contains(&l.name))
        .collect();
    stale.sort_by_key(|l| {
        if l.name.starts_with(names::BRIDGE) {
            2
        } else if l.name.starts_with(names::VXLAN) || l.name.starts_with(names::VLAN) {
            1
        } else {
            0
        }
    });
    out.extend(stale.into_iter().map(|l| Action::Delete {
        name: l.name.clone(),
    }));
    // A physical interface released from a deleted flat network stays as it is.
    out.sort_by_key(|a| a.phase());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Network, Port, RemotePort, Remotes};

    const N1: &str = "11111111-1111-4111-8111-111111111111";
    const P1: &str = "33333333-3333-4333-8333-333333333333";

    fn node() -> NodeConfig {
        NodeConfig {
            vtep: Some(Ipv4Addr::new(198, 18, 0, 1)),
            underlay_mtu: 1500,
            ..Default::default()
        }
    }

    fn underlay() -> Underlay {
        Underlay {
            dev: "ul0".into(),
            mtu: 1500,
        }
    }

    fn desired() -> Desired {
        let mut d = Desired::default();
        d.networks.insert(
            N1.into(),
            Network {
                id: N1.into(),
                segment: Segment::Vxlan { vni: 7 },
                mtu: 0,
                subnets: vec![],
                dns_domain: String::new(),
                dhcp_hosts: vec![],
            },
        );
        d.ports.insert(
            P1.into(),
            Port {
                id: P1.into(),
                network_id: N1.into(),
                mac: [2, 0, 0, 0, 0, 1],
                fixed_ips: vec![],
                kind: PortKind::Veth {
                    netns: "vm".into(),
                    ifname: "eth0".into(),
                    up: true,
                },
                admin_down: false,
                hostname: String::new(),
                ..Default::default()
            },
        );
        d.remotes.insert(
            N1.into(),
            Remotes {
                vteps: vec![Ipv4Addr::new(198, 18, 0, 2)],
                ports: vec![RemotePort {
                    mac: [2, 0, 0, 0, 0, 2],
                    ips: vec!["10.0.0.2".parse().unwrap()],
                    vtep: Ipv4Addr::new(198, 18, 0, 2),
                    port_id: String::new(),
                    device_id: String::new(),
                    project_id: String::new(),
                }],
            },
        );
        d
    }

    /// What the kernel would show after applying `plan` to nothing.
    fn converged() -> Observed {
        let mut o = Observed::default();
        let br = names::bridge(N1);
        o.links.insert(
            br.clone(),
            LinkState {
                index: 10,
                name: br,
                kind: Some("bridge".into()),
                up: true,
                mtu: 1450,
                ..Default::default()
            },
        );
        let vx = names::vxlan(N1);
        o.links.insert(
            vx.clone(),
            LinkState {
                index: 11,
                name: vx.clone(),
                kind: Some("vxlan".into()),
                master: Some(10),
                up: true,
                mtu: 1450,
                vxlan: Some(VxlanState {
                    vni: 7,
                    local: Some(Ipv4Addr::new(198, 18, 0, 1)),
                    port: 4789,
                    learning: false,
                    proxy: true,
                }),
                vlan: None,
            },
        );
        let ve = names::veth(P1);
        o.links.insert(
            ve.clone(),
            LinkState {
                index: 12,
                name: ve,
                kind: Some("veth".into()),
                master: Some(10),
                up: true,
                mtu: 1450,
                ..Default::default()
            },
        );
        o.fdb.insert(
            vx.clone(),
            [
                ([0; 6], Ipv4Addr::new(198, 18, 0, 2)),
                ([2, 0, 0, 0, 0, 2], Ipv4Addr::new(198, 18, 0, 2)),
            ]
            .into(),
        );
        o.neigh.insert(
            vx,
            [("10.0.0.2".parse().unwrap(), [2, 0, 0, 0, 0, 2])].into(),
        );
        o
    }

    #[test]
    fn from_nothing_everything_is_created_in_order() {
        let p = plan(&desired(), &Observed::default(), &node(), Some(&underlay()));
        let phases: Vec<u8> = p.iter().map(Action::phase).collect();
        assert!(phases.windows(2).all(|w| w[0] <= w[1]), "{p:?}");
        assert!(matches!(p[0], Action::CreateBridge { mtu: 1450, .. }));
        assert_eq!(
            p.iter()
                .filter(|a| matches!(a, Action::AddFdb { .. }))
                .count(),
            2
        );
        assert_eq!(
            p.iter()
                .filter(|a| matches!(a, Action::AddNeigh { .. }))
                .count(),
            1
        );
    }

    #[test]
    fn a_converged_node_plans_nothing() {
        assert_eq!(
            plan(&desired(), &converged(), &node(), Some(&underlay())),
            vec![]
        );
    }

    #[test]
    fn drift_is_repaired_and_strangers_removed() {
        let mut o = converged();
        o.links.get_mut(&names::veth(P1)).unwrap().up = false;
        o.links.insert(
            "ubr-deadbeef000".into(),
            LinkState {
                index: 99,
                name: "ubr-deadbeef000".into(),
                kind: Some("bridge".into()),
                ..Default::default()
            },
        );
        o.links.insert(
            "eth9".into(),
            LinkState {
                index: 98,
                name: "eth9".into(),
                ..Default::default()
            },
        );
        o.fdb
            .get_mut(&names::vxlan(N1))
            .unwrap()
            .insert(([2, 0, 0, 0, 0, 9], Ipv4Addr::new(198, 18, 0, 9)));
        let p = plan(&desired(), &o, &node(), Some(&underlay()));
        assert!(p.contains(&Action::Delete {
            name: "ubr-deadbeef000".into()
        }));
        assert!(!p
            .iter()
            .any(|a| matches!(a, Action::Delete { name } if name == "eth9")));
        assert!(p.contains(&Action::Set {
            name: names::veth(P1),
            master: None,
            mtu: None,
            up: Some(true)
        }));
        assert!(p.iter().any(|a| matches!(a, Action::DelFdb { .. })));
        assert_eq!(p.len(), 3, "{p:#?}");
    }

    #[test]
    fn a_vxlan_with_the_wrong_vni_is_recreated() {
        let mut o = converged();
        o.links
            .get_mut(&names::vxlan(N1))
            .unwrap()
            .vxlan
            .as_mut()
            .unwrap()
            .vni = 8;
        let p = plan(&desired(), &o, &node(), Some(&underlay()));
        assert!(matches!(&p[0], Action::Delete { name } if *name == names::vxlan(N1)));
        assert!(p
            .iter()
            .any(|a| matches!(a, Action::CreateVxlan { vni: 7, .. })));
    }
}
