//! The DHCP reservations of ports that are not plugged here, held a port
//! at a time (`UpdateDhcpHosts`) beside the synced state.
//!
//! Neutron's DHCP agent serves every port of a network wherever the port
//! runs, so the network node knows every port of every DHCP network: at
//! scale most of what it holds. Sent inside each `Sync` they would make a
//! change to one port cost as much as all of them; kept here, a change
//! costs its own port. The table keeps an order-independent digest (XOR of
//! each port's SHA-256) that the controller compares with one it computes
//! from its rows, and a boot id that tells it a restarted netd holds none.

use crate::error::{Error, Result};
use crate::model::{parse_mac, Mac};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
use ursa_proto::netd::v1 as pb;
use ursa_proto::netd::{dhcp_port_digest, xor_into as xor};

/// One port's reservation.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub ips: Vec<Ipv4Addr>,
    pub hostname: String,
}

#[derive(Default)]
struct Table {
    /// network → MAC → reservation
    by_network: HashMap<String, HashMap<Mac, Held>>,
    /// port → (network, MAC, its digest)
    by_port: HashMap<String, (String, Mac, [u8; 32])>,
    digest: [u8; 32],
}

/// The held reservations; cheap to clone (responders read it).
#[derive(Clone)]
pub struct DhcpHosts {
    table: Arc<RwLock<Table>>,
    boot_id: String,
}

impl Default for DhcpHosts {
    fn default() -> Self {
        DhcpHosts {
            table: Arc::default(),
            boot_id: uuid::Uuid::new_v4().to_string(),
        }
    }
}

impl DhcpHosts {
    /// Applies an update: all of it or, on a malformed entry, none of it.
    pub fn update(&self, u: pb::DhcpHostsUpdate) -> Result<pb::DhcpHostsReply> {
        let mut parsed = Vec::with_capacity(u.ports.len());
        for p in &u.ports {
            if p.port_id.is_empty() {
                return Err(Error::InvalidArgument(
                    "a DHCP host needs its port id".into(),
                ));
            }
            if p.network_id.is_empty() {
                parsed.push(None);
                continue;
            }
            let mac = parse_mac(&p.mac)?;
            let ips = p
                .ip_addresses
                .iter()
                .map(|s| {
                    s.parse::<Ipv4Addr>().map_err(|_| {
                        Error::InvalidArgument(format!("DHCP host address {s:?} is not IPv4"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let d = dhcp_port_digest(p);
            parsed.push(Some((mac, ips, d)));
        }
        let mut t = self.table.write().expect("dhcp hosts");
        if u.replace {
            *t = Table::default();
        }
        for net in &u.clear_networks {
            if t.by_network.remove(net).is_some() {
                let ids: Vec<String> = t
                    .by_port
                    .iter()
                    .filter(|(_, (n, _, _))| n == net)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    t.forget(&id);
                }
            }
        }
        for (p, parsed) in u.ports.into_iter().zip(parsed) {
            t.forget(&p.port_id);
            let Some((mac, ips, d)) = parsed else {
                continue;
            };
            t.by_network
                .entry(p.network_id.clone())
                .or_default()
                .insert(
                    mac,
                    Held {
                        ips,
                        hostname: p.hostname,
                    },
                );
            xor(&mut t.digest, &d);
            t.by_port.insert(p.port_id, (p.network_id, mac, d));
        }
        Ok(pb::DhcpHostsReply {
            boot_id: self.boot_id.clone(),
            ports: t.by_port.len() as u64,
            digest: t.digest.to_vec(),
        })
    }

    /// The reservation of `mac` on `network`, if one is held.
    pub fn get(&self, network: &str, mac: &Mac) -> Option<Held> {
        let t = self.table.read().expect("dhcp hosts");
        t.by_network.get(network)?.get(mac).cloned()
    }
}

/// Two handles are equal when they share one table.
impl PartialEq for DhcpHosts {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.table, &other.table)
    }
}

impl std::fmt::Debug for DhcpHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhcpHosts")
            .field("boot_id", &self.boot_id)
            .finish()
    }
}

impl Table {
    fn forget(&mut self, port: &str) {
        let Some((net, mac, d)) = self.by_port.remove(port) else {
            return;
        };
        xor(&mut self.digest, &d);
        if let Some(m) = self.by_network.get_mut(&net) {
            m.remove(&mac);
            if m.is_empty() {
                self.by_network.remove(&net);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(id: &str, net: &str, mac: &str, ip: &str) -> pb::DhcpPortHosts {
        pb::DhcpPortHosts {
            port_id: id.into(),
            network_id: net.into(),
            mac: mac.into(),
            ip_addresses: vec![ip.into()],
            hostname: format!("host-{}", ip.replace('.', "-")),
        }
    }

    fn update(ports: Vec<pb::DhcpPortHosts>) -> pb::DhcpHostsUpdate {
        pb::DhcpHostsUpdate {
            ports,
            ..Default::default()
        }
    }

    #[test]
    fn the_digest_follows_the_ports_held_in_any_order() {
        let a = DhcpHosts::default();
        let b = DhcpHosts::default();
        let p1 = port("p1", "n1", "fa:16:3e:00:00:01", "10.0.0.3");
        let p2 = port("p2", "n1", "fa:16:3e:00:00:02", "10.0.0.4");
        a.update(update(vec![p1.clone(), p2.clone()])).unwrap();
        b.update(update(vec![p2.clone()])).unwrap();
        let rb = b.update(update(vec![p1.clone()])).unwrap();
        let ra = a.update(update(vec![])).unwrap();
        assert_eq!(ra.digest, rb.digest);
        assert_eq!(ra.ports, 2);
        assert_ne!(ra.boot_id, rb.boot_id);
        // Moving p1 to another address changes the digest; forgetting it
        // leaves exactly p2's.
        let moved = a
            .update(update(vec![port(
                "p1",
                "n1",
                "fa:16:3e:00:00:01",
                "10.0.0.9",
            )]))
            .unwrap();
        assert_ne!(moved.digest, ra.digest);
        assert_eq!(
            a.get("n1", &[0xfa, 0x16, 0x3e, 0, 0, 1]).unwrap().ips,
            vec![Ipv4Addr::new(10, 0, 0, 9)]
        );
        let gone = a
            .update(update(vec![pb::DhcpPortHosts {
                port_id: "p1".into(),
                ..Default::default()
            }]))
            .unwrap();
        let only = DhcpHosts::default().update(update(vec![p2])).unwrap();
        assert_eq!(gone.digest, only.digest);
        assert!(a.get("n1", &[0xfa, 0x16, 0x3e, 0, 0, 1]).is_none());
    }

    #[test]
    fn clearing_a_network_and_replacing_forget_what_they_name() {
        let h = DhcpHosts::default();
        h.update(update(vec![
            port("p1", "n1", "fa:16:3e:00:00:01", "10.0.0.3"),
            port("p2", "n2", "fa:16:3e:00:00:02", "10.1.0.3"),
        ]))
        .unwrap();
        let r = h
            .update(pb::DhcpHostsUpdate {
                clear_networks: vec!["n1".into()],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.ports, 1);
        let r = h
            .update(pb::DhcpHostsUpdate {
                replace: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!((r.ports, r.digest), (0, vec![0; 32]));
    }

    #[test]
    fn a_malformed_entry_changes_nothing() {
        let h = DhcpHosts::default();
        h.update(update(vec![port(
            "p1",
            "n1",
            "fa:16:3e:00:00:01",
            "10.0.0.3",
        )]))
        .unwrap();
        let bad = h.update(update(vec![
            port("p2", "n1", "fa:16:3e:00:00:02", "10.0.0.4"),
            port("p3", "n1", "not-a-mac", "10.0.0.5"),
        ]));
        assert!(bad.is_err());
        let r = h.update(update(vec![])).unwrap();
        assert_eq!(r.ports, 1);
    }
}
