//! Security groups and anti-spoofing, as two nftables tables in the node's
//! namespace, rebuilt from the desired state and applied as one
//! transaction:
//!
//! - `bridge ursa_guard` (stateless, before the bridge learns a source):
//!   each filtered port may send only from its MAC and its fixed IPs (plus
//!   allowed address pairs), may not act as a DHCP server or an IPv6 router,
//!   and may send nothing but ARP, IPv4 and IPv6.
//! - `inet ursa_sg` (stateful): bridged IPv4/IPv6 reach the inet hooks
//!   through br_netfilter (`net.bridge.bridge-nf-call-iptables`, which netd
//!   turns on), where the bridge is the interface and the port is known by
//!   its MAC (already vouched for by the guard). Each network gets its own
//!   conntrack zone, so overlapping tenant addresses never share state.
//!   Established and related traffic passes first; a new flow must pass the
//!   sender's egress rules and then the receiver's ingress rules.
//!
//! Rules compile per group, not per port: a port's chain jumps to its
//! groups' chains. Address/protocol/port rules become elements of interval
//! sets (`ip saddr . meta l4proto . th dport @set`), so ten thousand rules
//! are one lookup, and remote groups are sets of member addresses. When a
//! change only touches set elements (a member joins, a rule is added), the
//! transaction only rewrites those sets; chains are untouched.

use crate::error::Result;
use crate::model::{Desired, Direction, PortKind, Rule};
use crate::names;
use crate::nft::{self, Batch};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub const GUARD: &str = "ursa_guard";
pub const FILTER: &str = "ursa_sg";

type SetKey = (&'static str, &'static str, String);

/// A compiled ruleset: the structure, and each named set's elements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compiled {
    pub shape: Vec<Value>,
    /// Elements as JSON text.
    pub sets: BTreeMap<SetKey, Vec<String>>,
    pub empty: bool,
}

impl Compiled {
    /// The whole ruleset as one transaction.
    pub fn full(&self) -> Batch {
        let mut b = Batch::default();
        if self.empty {
            b.drop_table("bridge", GUARD);
            b.drop_table("inet", FILTER);
            return b;
        }
        b.replace_table("bridge", GUARD);
        b.replace_table("inet", FILTER);
        // Sets first (rules refer to them), then chains and rules.
        let (sets, rest): (Vec<&Value>, Vec<&Value>) = self
            .shape
            .iter()
            .partition(|v| v["add"].get("set").is_some());
        for s in sets {
            b.push(s.clone());
        }
        for ((fam, table, name), elems) in &self.sets {
            if !elems.is_empty() {
                b.add_elements(fam, table, name, elems);
            }
        }
        let (chains, rules): (Vec<&Value>, Vec<&Value>) = rest
            .into_iter()
            .partition(|v| v["add"].get("chain").is_some());
        for c in chains.into_iter().chain(rules) {
            b.push(c.clone());
        }
        b
    }

    /// The smallest transaction from `old` to this: set updates only when
    /// the structure is unchanged.
    pub fn delta(&self, old: &Compiled) -> Batch {
        if self.shape != old.shape || self.empty != old.empty {
            return self.full();
        }
        let mut b = Batch::default();
        for (k, elems) in &self.sets {
            if old.sets.get(k) != Some(elems) {
                b.push(nft::flush_set(k.0, k.1, &k.2));
                if !elems.is_empty() {
                    b.add_elements(k.0, k.1, &k.2, elems);
                }
            }
        }
        b
    }
}

/// The conntrack zone of a network: stable across restarts, from its id.
pub fn zone(network_id: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in network_id.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h % 65_535) + 1) as u16
}

fn short(id: &str) -> String {
    names::veth(id)[4..].to_string()
}

fn mac_str(m: &crate::model::Mac) -> Value {
    json!(crate::model::fmt_mac(m))
}

struct PortView {
    short: String,
    dev: String,
    bridge: String,
    macs: BTreeSet<crate::model::Mac>,
    /// (MAC, source) pairs the port may send from: its MAC with each fixed
    /// IP, and each allowed address pair exactly.
    v4: Vec<(crate::model::Mac, ipnet::IpNet)>,
    v6: Vec<(crate::model::Mac, ipnet::IpNet)>,
    groups: Vec<String>,
}

/// Compiles the security of every filtered port in `want`.
pub fn compile(want: &Desired) -> Compiled {
    let mut ports = Vec::new();
    for p in want.ports.values().filter(|p| p.port_security) {
        if !want.networks.contains_key(&p.network_id) {
            continue;
        }
        let dev = match p.kind {
            PortKind::Tap => names::tap(&p.id),
            PortKind::Veth { .. } => names::veth(&p.id),
        };
        let mut macs = BTreeSet::from([p.mac]);
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for ip in &p.fixed_ips {
            if let Ok((a, _)) = crate::model::parse_cidr(ip) {
                let n = ipnet::IpNet::from(a);
                if a.is_ipv4() {
                    v4.push((p.mac, n))
                } else {
                    v6.push((p.mac, n))
                }
            }
        }
        for a in &p.allowed_address_pairs {
            let m = a.mac.unwrap_or(p.mac);
            macs.insert(m);
            if a.net.addr().is_ipv4() {
                v4.push((m, a.net))
            } else {
                v6.push((m, a.net))
            }
        }
        ports.push(PortView {
            short: short(&p.id),
            dev,
            bridge: names::bridge(&p.network_id),
            macs,
            v4,
            v6,
            groups: p
                .security_groups
                .iter()
                .filter(|g| want.security_groups.contains_key(*g))
                .cloned()
                .collect(),
        });
    }
    if ports.is_empty() {
        return Compiled {
            empty: true,
            ..Default::default()
        };
    }
    let mut c = Compiled::default();
    guard(&mut c, &ports);

    // Groups in use, and the groups their rules name as remotes.
    let mut used: BTreeSet<&str> = ports
        .iter()
        .flat_map(|p| p.groups.iter().map(String::as_str))
        .collect();
    let remotes: BTreeSet<&str> = used
        .iter()
        .filter_map(|g| want.security_groups.get(*g))
        .flat_map(|g| g.rules.iter().filter_map(|r| r.remote_group.as_deref()))
        .collect();
    // Members of every group that is used as a remote.
    let mut members: BTreeMap<&str, (BTreeSet<IpAddr>, BTreeSet<IpAddr>)> = BTreeMap::new();
    for g in &remotes {
        let e = members.entry(g).or_default();
        if let Some(sg) = want.security_groups.get(*g) {
            for ip in &sg.remote_members {
                if ip.is_ipv4() {
                    e.0.insert(*ip);
                } else {
                    e.1.insert(*ip);
                }
            }
        }
    }
    for p in want.ports.values() {
        for g in &p.security_groups {
            if let Some(e) = members.get_mut(g.as_str()) {
                for ip in &p.fixed_ips {
                    if let Ok((a, _)) = crate::model::parse_cidr(ip) {
                        if a.is_ipv4() {
                            e.0.insert(a);
                        } else {
                            e.1.insert(a);
                        }
                    }
                }
            }
        }
    }
    used.retain(|g| want.security_groups.contains_key(*g));

    let f = "inet";
    let t = FILTER;
    // Conntrack zones per network bridge, before conntrack sees the packet.
    let bridges: BTreeSet<&str> = ports.iter().map(|p| p.bridge.as_str()).collect();
    c.shape
        .push(nft::base_chain(f, t, "zone", "filter", "prerouting", -300));
    let zone_map: Vec<Value> = want
        .networks
        .keys()
        .filter(|n| bridges.contains(names::bridge(n).as_str()))
        .map(|n| json!([names::bridge(n), zone(n)]))
        .collect();
    c.shape.push(nft::rule(
        f,
        t,
        "zone",
        vec![json!({"mangle": {"key": nft::ct("zone"), "value":
            {"map": {"key": nft::meta("iifname"), "data": {"set": zone_map}}}}})],
    ));
    c.shape
        .push(nft::base_chain(f, t, "forward", "filter", "forward", 0));
    c.shape.push(nft::chain(f, t, "to_port"));
    c.shape.push(nft::rule(
        f,
        t,
        "forward",
        vec![
            nft::within(nft::ct("state"), json!(["established", "related"])),
            nft::verdict("accept"),
        ],
    ));
    c.shape.push(nft::rule(
        f,
        t,
        "forward",
        vec![
            nft::within(nft::ct("state"), json!("invalid")),
            nft::verdict("drop"),
        ],
    ));
    let key = |field: &str| nft::concat(vec![nft::meta("iifname"), nft::payload("ether", field)]);
    let mut from = Vec::new();
    let mut to = Vec::new();
    for p in &ports {
        for m in &p.macs {
            from.push(
                json!([{"concat": [p.bridge, mac_str(m)]}, nft::jump(&format!("e_{}", p.short))]),
            );
            to.push(
                json!([{"concat": [p.bridge, mac_str(m)]}, nft::goto(&format!("i_{}", p.short))]),
            );
        }
    }
    c.shape.push(nft::rule(
        f,
        t,
        "forward",
        vec![json!({"vmap": {"key": key("saddr"), "data": {"set": from}}})],
    ));
    c.shape
        .push(nft::rule(f, t, "forward", vec![nft::goto("to_port")]));
    c.shape.push(nft::rule(
        f,
        t,
        "to_port",
        vec![json!({"vmap": {"key": key("daddr"), "data": {"set": to}}})],
    ));
    c.shape
        .push(nft::rule(f, t, "to_port", vec![nft::verdict("accept")]));
    for p in &ports {
        let e = format!("e_{}", p.short);
        let i = format!("i_{}", p.short);
        c.shape.push(nft::chain(f, t, &e));
        c.shape.push(nft::chain(f, t, &i));
        // DHCP answers come from the network node's responder, a flow
        // conntrack cannot pair with the broadcast request: let them in,
        // as Neutron's firewall does (the guard keeps ports from serving).
        for (sport, dport) in [(67, 68), (547, 546)] {
            c.shape.push(nft::rule(
                f,
                t,
                &i,
                vec![
                    nft::eq(nft::payload("udp", "sport"), json!(sport)),
                    nft::eq(nft::payload("udp", "dport"), json!(dport)),
                    nft::verdict("accept"),
                ],
            ));
        }
        for g in p.groups.iter().filter(|g| used.contains(g.as_str())) {
            let gs = short(g);
            c.shape
                .push(nft::rule(f, t, &e, vec![nft::jump(&format!("sg_{gs}_eg"))]));
            c.shape
                .push(nft::rule(f, t, &i, vec![nft::jump(&format!("sg_{gs}_in"))]));
        }
        c.shape
            .push(nft::rule(f, t, &e, vec![nft::verdict("drop")]));
        c.shape
            .push(nft::rule(f, t, &i, vec![nft::verdict("drop")]));
    }
    for (g, (m4, m6)) in &members {
        let gs = short(g);
        for (fam_sfx, ty, ms) in [("4", "ipv4_addr", m4), ("6", "ipv6_addr", m6)] {
            let name = format!("rg_{gs}_{fam_sfx}");
            c.shape.push(nft::named_set(f, t, &name, json!(ty), true));
            c.sets.insert(
                ("inet", FILTER, name),
                ms.iter().map(|ip| format!("\"{ip}\"")).collect(),
            );
        }
    }
    for g in &used {
        let sg = &want.security_groups[*g];
        group_chains(&mut c, g, &sg.rules);
    }
    c
}

/// The guard chain of every filtered port (bridge family, stateless).
fn guard(c: &mut Compiled, ports: &[PortView]) {
    let (f, t) = ("bridge", GUARD);
    c.shape.push(nft::base_chain(
        f,
        t,
        "prerouting",
        "filter",
        "prerouting",
        -300,
    ));
    let mut map = Vec::new();
    for p in ports {
        let ch = format!("g_{}", p.short);
        map.push(json!([p.dev, nft::jump(&ch)]));
        c.shape.push(nft::chain(f, t, &ch));
        let r = |e: Vec<Value>| nft::rule(f, t, &ch, e);
        let macs: Vec<Value> = p.macs.iter().map(mac_str).collect();
        c.shape.push(r(vec![
            nft::ne(nft::payload("ether", "saddr"), nft::set(macs)),
            nft::verdict("drop"),
        ]));
        let pair =
            |m: &crate::model::Mac, n: &ipnet::IpNet| nft::concat(vec![mac_str(m), nft::prefix(n)]);
        let unspecified: ipnet::IpNet = "0.0.0.0/32".parse().expect("valid");
        let mut arp_ok: Vec<Value> = p.v4.iter().map(|(m, n)| pair(m, n)).collect();
        arp_ok.extend(p.macs.iter().map(|m| pair(m, &unspecified)));
        c.shape.push(r(vec![
            nft::ne(
                nft::concat(vec![
                    nft::payload("ether", "saddr"),
                    nft::payload("arp", "saddr ip"),
                ]),
                nft::set(arp_ok),
            ),
            nft::verdict("drop"),
        ]));
        c.shape.push(r(vec![
            nft::eq(nft::payload("ether", "type"), json!("arp")),
            nft::verdict("return"),
        ]));
        // A DHCP client may send from 0.0.0.0; a DHCP server may not run here.
        c.shape.push(r(vec![
            nft::eq(nft::payload("ether", "type"), json!("ip")),
            nft::eq(nft::payload("udp", "sport"), json!(68)),
            nft::eq(nft::payload("udp", "dport"), json!(67)),
            nft::verdict("return"),
        ]));
        for sport in [67, 547] {
            c.shape.push(r(vec![
                nft::eq(nft::payload("udp", "sport"), json!(sport)),
                nft::verdict("drop"),
            ]));
        }
        if p.v4.is_empty() {
            c.shape.push(r(vec![
                nft::eq(nft::payload("ether", "type"), json!("ip")),
                nft::verdict("drop"),
            ]));
        } else {
            c.shape.push(r(vec![
                nft::eq(nft::payload("ether", "type"), json!("ip")),
                nft::ne(
                    nft::concat(vec![
                        nft::payload("ether", "saddr"),
                        nft::payload("ip", "saddr"),
                    ]),
                    nft::set(p.v4.iter().map(|(m, n)| pair(m, n)).collect()),
                ),
                nft::verdict("drop"),
            ]));
        }
        c.shape.push(r(vec![
            nft::eq(nft::payload("ether", "type"), json!("ip")),
            nft::verdict("return"),
        ]));
        let link_local: ipnet::IpNet = "fe80::/10".parse().expect("valid");
        let unspecified6: ipnet::IpNet = "::/128".parse().expect("valid");
        let mut v6_ok: Vec<Value> = p.v6.iter().map(|(m, n)| pair(m, n)).collect();
        for m in &p.macs {
            v6_ok.push(pair(m, &link_local));
            v6_ok.push(pair(m, &unspecified6));
        }
        c.shape.push(r(vec![
            nft::eq(nft::payload("ether", "type"), json!("ip6")),
            nft::ne(
                nft::concat(vec![
                    nft::payload("ether", "saddr"),
                    nft::payload("ip6", "saddr"),
                ]),
                nft::set(v6_ok),
            ),
            nft::verdict("drop"),
        ]));
        c.shape.push(r(vec![
            nft::eq(nft::payload("icmpv6", "type"), json!("nd-router-advert")),
            nft::verdict("drop"),
        ]));
        c.shape.push(r(vec![
            nft::eq(nft::payload("ether", "type"), json!("ip6")),
            nft::verdict("return"),
        ]));
        c.shape.push(r(vec![nft::verdict("drop")]));
    }
    c.shape.push(nft::rule(
        f,
        t,
        "prerouting",
        vec![json!({"vmap": {"key": nft::meta("iifname"), "data": {"set": map}}})],
    ));
}

/// One group's ingress and egress chains. An allowed egress flow goes on to
/// the receiver's ingress check (`to_port`); an allowed ingress flow is accepted.
fn group_chains(c: &mut Compiled, g: &str, rules: &[Rule]) {
    let (f, t) = ("inet", FILTER);
    let gs = short(g);
    for dir in [Direction::Ingress, Direction::Egress] {
        let (ch, verdict, remote_field) = match dir {
            Direction::Ingress => (format!("sg_{gs}_in"), nft::verdict("accept"), "saddr"),
            Direction::Egress => (format!("sg_{gs}_eg"), nft::goto("to_port"), "daddr"),
        };
        c.shape.push(nft::chain(f, t, &ch));
        for v6 in [false, true] {
            let (proto, nfproto, addr_ty, any) = if v6 {
                ("ip6", "ipv6", "ipv6_addr", "::/0")
            } else {
                ("ip", "ipv4", "ipv4_addr", "0.0.0.0/0")
            };
            let any: ipnet::IpNet = any.parse().expect("valid");
            let sfx = if v6 { "6" } else { "4" };
            let dsfx = if dir == Direction::Ingress {
                "in"
            } else {
                "eg"
            };
            let ports_set = format!("sgp_{gs}_{dsfx}_{sfx}");
            let addr_set = format!("sga_{gs}_{dsfx}_{sfx}");
            let mut ports_elems = Vec::new();
            let mut addr_elems = Vec::new();
            let mut linear = Vec::new();
            for r in rules.iter().filter(|r| r.direction == dir && r.v6 == v6) {
                let remote = r.remote_net.unwrap_or(any);
                match (&r.remote_group, r.protocol) {
                    (None, Some(p @ (6 | 17 | 132))) => {
                        let (a, b) = r.ports.unwrap_or((0, 65535));
                        ports_elems.push(format!(
                            r#"{{"concat":[{},{p},{{"range":[{a},{b}]}}]}}"#,
                            prefix_text(&remote)
                        ));
                    }
                    (None, None) => addr_elems.push(prefix_text(&remote)),
                    _ => {
                        let mut e = vec![nft::eq(nft::meta("nfproto"), json!(nfproto))];
                        match &r.remote_group {
                            Some(rg) => e.push(nft::eq(
                                nft::payload(proto, remote_field),
                                json!(format!("@rg_{}_{sfx}", short(rg))),
                            )),
                            None if r.remote_net.is_some() => e.push(nft::eq(
                                nft::payload(proto, remote_field),
                                nft::prefix(&remote),
                            )),
                            None => {}
                        }
                        if let Some(p) = r.protocol {
                            e.push(nft::eq(nft::meta("l4proto"), json!(p)));
                            if let Some((a, b)) = r.ports {
                                e.push(nft::eq(nft::payload("th", "dport"), nft::range(a, b)));
                            }
                            let icmp = match p {
                                1 => Some("icmp"),
                                58 => Some("icmpv6"),
                                _ => None,
                            };
                            if let (Some(icmp), Some(ty)) = (icmp, r.icmp_type) {
                                e.push(nft::eq(nft::payload(icmp, "type"), json!(ty)));
                                if let Some(code) = r.icmp_code {
                                    e.push(nft::eq(nft::payload(icmp, "code"), json!(code)));
                                }
                            }
                        }
                        e.push(verdict.clone());
                        linear.push(e);
                    }
                }
            }
            if !ports_elems.is_empty() {
                c.shape.push(nft::named_set(
                    f,
                    t,
                    &ports_set,
                    json!([addr_ty, "inet_proto", "inet_service"]),
                    true,
                ));
                c.sets
                    .insert(("inet", FILTER, ports_set.clone()), ports_elems);
                c.shape.push(nft::rule(
                    f,
                    t,
                    &ch,
                    vec![
                        nft::eq(nft::meta("nfproto"), json!(nfproto)),
                        nft::eq(
                            nft::concat(vec![
                                nft::payload(proto, remote_field),
                                nft::meta("l4proto"),
                                nft::payload("th", "dport"),
                            ]),
                            json!(format!("@{ports_set}")),
                        ),
                        verdict.clone(),
                    ],
                ));
            }
            if !addr_elems.is_empty() {
                c.shape
                    .push(nft::named_set(f, t, &addr_set, json!(addr_ty), true));
                c.sets
                    .insert(("inet", FILTER, addr_set.clone()), addr_elems);
                c.shape.push(nft::rule(
                    f,
                    t,
                    &ch,
                    vec![
                        nft::eq(nft::meta("nfproto"), json!(nfproto)),
                        nft::eq(
                            nft::payload(proto, remote_field),
                            json!(format!("@{addr_set}")),
                        ),
                        verdict.clone(),
                    ],
                ));
            }
            for e in linear {
                c.shape.push(nft::rule(f, t, &ch, e));
            }
        }
    }
}

/// `nft::prefix` as JSON text, without building a value (sets hold
/// thousands of these).
fn prefix_text(net: &ipnet::IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        format!("\"{}\"", net.addr())
    } else {
        format!(
            r#"{{"prefix":{{"addr":"{}","len":{}}}}}"#,
            net.network(),
            net.prefix_len()
        )
    }
}

/// Applies compiled rulesets, remembering the last one so that the next
/// change can be a set update.
#[derive(Default)]
pub struct Firewall {
    last: tokio::sync::Mutex<Option<Compiled>>,
}

/// What one firewall pass did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applied {
    /// nftables commands in the transaction (0: nothing changed).
    pub commands: usize,
    pub compile_us: u64,
    pub nft_us: u64,
}

impl Firewall {
    pub async fn sync(&self, want: &Desired) -> Result<Applied> {
        let t0 = std::time::Instant::now();
        let next = compile(want);
        let mut last = self.last.lock().await;
        let batch = match last.as_ref() {
            Some(old) if *old == next => return Ok(Applied::default()),
            Some(old) => next.delta(old),
            None => next.full(),
        };
        let compile_us = t0.elapsed().as_micros() as u64;
        if !next.empty {
            bridge_nf_call(true)?;
        }
        let t1 = std::time::Instant::now();
        batch.apply(None).await?;
        let nft_us = t1.elapsed().as_micros() as u64;
        // The first pass of a node without filtered ports only makes sure no
        // stale tables are left; that is no change to report.
        let commands = if last.is_none() && next.empty {
            0
        } else {
            batch.cmds.len()
        };
        *last = Some(next);
        Ok(Applied {
            commands,
            compile_us,
            nft_us,
        })
    }
}

/// br_netfilter: bridged IP traffic passes the inet hooks (conntrack).
fn bridge_nf_call(on: bool) -> Result<()> {
    for f in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] {
        let p = format!("/proc/sys/net/bridge/{f}");
        std::fs::write(&p, if on { "1" } else { "0" }).map_err(|e| crate::error::Error::Io {
            context: p.clone(),
            source: e,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Network, Port, SecurityGroup, Segment};

    const N: &str = "11111111-1111-4111-8111-111111111111";
    const P: &str = "22222222-2222-4222-8222-222222222222";
    const G: &str = "33333333-3333-4333-8333-333333333333";
    const R: &str = "44444444-4444-4444-8444-444444444444";

    fn desired(members: Vec<IpAddr>, rules: u16) -> Desired {
        let mut d = Desired::default();
        d.networks.insert(
            N.into(),
            Network {
                id: N.into(),
                segment: Segment::Vxlan { vni: 5 },
                mtu: 0,
                subnets: vec![],
                dns_domain: String::new(),
                dhcp_hosts: vec![],
            },
        );
        d.ports.insert(
            P.into(),
            Port {
                id: P.into(),
                network_id: N.into(),
                mac: [2, 0, 0, 0, 0, 5],
                fixed_ips: vec!["10.0.0.5/24".into()],
                port_security: true,
                security_groups: vec![G.into()],
                ..Default::default()
            },
        );
        let mut rs: Vec<Rule> = (0..rules)
            .map(|i| Rule {
                direction: Direction::Ingress,
                v6: false,
                protocol: Some(6),
                ports: Some((1000 + i, 1000 + i)),
                icmp_type: None,
                icmp_code: None,
                remote_net: Some("172.16.0.0/12".parse().unwrap()),
                remote_group: None,
            })
            .collect();
        rs.push(Rule {
            direction: Direction::Ingress,
            v6: false,
            protocol: Some(6),
            ports: Some((22, 22)),
            icmp_type: None,
            icmp_code: None,
            remote_net: None,
            remote_group: Some(R.into()),
        });
        d.security_groups.insert(
            G.into(),
            SecurityGroup {
                id: G.into(),
                rules: rs,
                remote_members: vec![],
            },
        );
        d.security_groups.insert(
            R.into(),
            SecurityGroup {
                id: R.into(),
                rules: vec![],
                remote_members: members,
            },
        );
        d
    }

    #[test]
    fn membership_and_rule_changes_are_set_updates_only() {
        let a = compile(&desired(vec![], 10));
        let b = compile(&desired(vec!["10.0.0.9".parse().unwrap()], 10));
        let delta = b.delta(&a);
        assert!(!delta.is_empty());
        assert!(
            delta
                .cmds
                .iter()
                .all(|c| c.starts_with(r#"{"flush""#) || c.starts_with(r#"{"add":{"element""#)),
            "a member joining rewrote more than a set: {}",
            delta.to_json()
        );
        // Ten thousand port rules are elements of one set, not rules.
        let big = compile(&desired(vec![], 10_000));
        let rules = big
            .shape
            .iter()
            .filter(|c| c["add"].get("rule").is_some())
            .count();
        assert!(rules < 40, "{rules} rules for 10,000 security group rules");
        let elems: usize = big.sets.values().map(Vec::len).sum();
        assert_eq!(elems, 10_000);
        assert!(big.delta(&compile(&desired(vec![], 9_999))).cmds.len() <= 2);
        for e in big.sets.values().flatten().take(3) {
            let v: serde_json::Value = serde_json::from_str(e).expect("elements are JSON");
            assert!(v.get("concat").is_some(), "{e}");
        }
        assert_eq!(
            prefix_text(&"10.0.0.0/8".parse().unwrap()),
            nft::prefix(&"10.0.0.0/8".parse().unwrap()).to_string()
        );
    }

    #[test]
    fn no_filtered_ports_means_no_tables() {
        let mut d = desired(vec![], 1);
        d.ports.values_mut().for_each(|p| p.port_security = false);
        let c = compile(&d);
        assert!(c.empty);
        let full = c.full().to_json();
        assert!(full.contains("delete") && !full.contains("chain"));
    }
}
