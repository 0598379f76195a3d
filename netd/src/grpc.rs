//! The gRPC face of netd (proto/ursa/netd/v1): converts messages into the
//! model (rejecting malformed ones with INVALID_ARGUMENT) and calls the
//! service. Errors become statuses in `error.rs`, nowhere else.

use crate::error::{Error, Result};
use crate::model::{self, Desired, Network, Port, PortKind, RemotePort, Remotes, Segment};
use crate::names;
use crate::service::{Netd, PortStatus, Report};
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use ursa_proto::netd::v1 as pb;

pub struct Service(pub Netd);

fn ipv4(s: &str, what: &str) -> Result<Ipv4Addr> {
    s.parse()
        .map_err(|_| Error::InvalidArgument(format!("{what} {s:?} is not an IPv4 address")))
}

pub fn network_from(n: pb::Network) -> Result<Network> {
    let segment = match n.segment {
        Some(pb::network::Segment::Vxlan(v)) => Segment::Vxlan { vni: v.vni },
        Some(pb::network::Segment::Flat(f)) => Segment::Flat {
            physnet: f.physical_network,
        },
        Some(pb::network::Segment::Vlan(v)) => Segment::Vlan {
            physnet: v.physical_network,
            vlan_id: u16::try_from(v.vlan_id)
                .ok()
                .filter(|x| *x <= 4094)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("VLAN id {} is outside 1..4094", v.vlan_id))
                })?,
        },
        None => {
            return Err(Error::InvalidArgument(
                "a network needs a segment (vxlan, flat or vlan)".into(),
            ))
        }
    };
    let subnets = n
        .subnets
        .into_iter()
        .map(subnet_from)
        .collect::<Result<Vec<_>>>()?;
    let dhcp_hosts = n
        .dhcp_hosts
        .iter()
        .map(|h| {
            Ok((
                model::parse_mac(&h.mac)?,
                ipv4(&h.ip_address, "DHCP host address")?,
                h.hostname.clone(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Network {
        id: n.id,
        segment,
        mtu: n.mtu,
        subnets,
        dns_domain: n.dns_domain,
        dhcp_hosts,
    })
}

fn subnet_from(s: pb::Subnet) -> Result<model::Subnet> {
    let (net, prefix) = model::parse_v4_net(&s.cidr)?;
    let in_net = |ip: Ipv4Addr, what: &str| -> Result<Ipv4Addr> {
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        if u32::from(ip) & mask != u32::from(net) {
            return Err(Error::InvalidArgument(format!(
                "{what} {ip} is outside {}",
                s.cidr
            )));
        }
        Ok(ip)
    };
    let gateway = match s.gateway_ip.as_str() {
        "" => None,
        g => Some(in_net(ipv4(g, "gateway")?, "gateway")?),
    };
    let server = match s.dhcp_server_ip.as_str() {
        "" => {
            let host_bits = if prefix >= 31 {
                0
            } else {
                (1u32 << (32 - prefix)) - 2
            };
            Ipv4Addr::from(u32::from(net) + host_bits)
        }
        d => in_net(ipv4(d, "DHCP server address")?, "DHCP server address")?,
    };
    let dns = s
        .dns_nameservers
        .iter()
        .map(|d| ipv4(d, "DNS server"))
        .collect::<Result<Vec<_>>>()?;
    let mut routes = Vec::new();
    for r in &s.host_routes {
        let (dst, p) = model::parse_v4_net(&r.destination)?;
        routes.push((dst, p, ipv4(&r.nexthop, "route next hop")?));
    }
    Ok(model::Subnet {
        net,
        prefix,
        gateway,
        dns,
        routes,
        enable_dhcp: s.enable_dhcp,
        server,
        lease_seconds: if s.lease_seconds == 0 {
            86400
        } else {
            s.lease_seconds.max(60)
        },
    })
}

pub fn port_from(p: pb::Port) -> Result<Port> {
    let kind = match p.kind {
        Some(pb::port::Kind::Tap(_)) => PortKind::Tap,
        Some(pb::port::Kind::Veth(v)) => PortKind::Veth {
            netns: v.netns,
            ifname: v.ifname,
            up: v.up,
        },
        None => {
            return Err(Error::InvalidArgument(
                "a port needs a kind (tap or veth)".into(),
            ))
        }
    };
    Ok(Port {
        id: p.id,
        network_id: p.network_id,
        mac: model::parse_mac(&p.mac)?,
        fixed_ips: p.fixed_ips,
        kind,
        admin_down: p.admin_down,
        hostname: p.hostname,
        port_security: p.port_security,
        security_groups: p.security_groups,
        allowed_address_pairs: p
            .allowed_address_pairs
            .into_iter()
            .map(|a| {
                Ok(model::AddressPair {
                    net: ip_or_net(&a.ip_address, "allowed address")?,
                    mac: match a.mac_address.as_str() {
                        "" => None,
                        m => Some(model::parse_mac(m)?),
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?,
        device_id: p.device_id,
        project_id: p.project_id,
    })
}

/// "10.0.0.5" (a host) or "10.0.0.0/24".
fn ip_or_net(s: &str, what: &str) -> Result<ipnet::IpNet> {
    let bad = || Error::InvalidArgument(format!("{what} {s:?} is not an address or network"));
    if s.contains('/') {
        let n: ipnet::IpNet = s.parse().map_err(|_| bad())?;
        Ok(n.trunc())
    } else {
        let ip: IpAddr = s.parse().map_err(|_| bad())?;
        Ok(ipnet::IpNet::from(ip))
    }
}

fn leg_from(port_id: String, network_id: String, mac: &str, ip: &str) -> Result<model::RouterLeg> {
    let (addr, prefix) = model::parse_cidr(ip)?;
    let IpAddr::V4(addr) = addr else {
        return Err(Error::InvalidArgument(format!(
            "router address {ip:?} is not IPv4"
        )));
    };
    if prefix == 0 || prefix > 32 {
        return Err(Error::InvalidArgument(format!(
            "router address {ip:?} has a bad prefix"
        )));
    }
    Ok(model::RouterLeg {
        port_id,
        network_id,
        mac: model::parse_mac(mac)?,
        ip: addr,
        prefix,
    })
}

pub fn router_from(r: pb::Router) -> Result<model::Router> {
    let interfaces = r
        .interfaces
        .into_iter()
        .map(|i| leg_from(i.port_id, i.network_id, &i.mac, &i.ip_address))
        .collect::<Result<Vec<_>>>()?;
    let gateway = match r.gateway {
        None => None,
        Some(g) => Some(model::RouterGateway {
            leg: leg_from(g.port_id, g.network_id, &g.mac, &g.ip_address)?,
            nexthop: match g.nexthop.as_str() {
                "" => None,
                n => Some(ipv4(n, "gateway next hop")?),
            },
            enable_snat: g.enable_snat,
        }),
    };
    let routes = r
        .routes
        .iter()
        .map(|h| {
            let (dst, p) = model::parse_v4_net(&h.destination)?;
            Ok((
                ipnet::Ipv4Net::new(dst, p).expect("checked"),
                ipv4(&h.nexthop, "route next hop")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let floating_ips = r
        .floating_ips
        .iter()
        .map(|f| {
            Ok((
                ipv4(&f.floating_ip, "floating IP")?,
                ipv4(&f.fixed_ip, "fixed IP")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(model::Router {
        id: r.id,
        interfaces,
        gateway,
        routes,
        floating_ips,
        isolated: false,
    })
}

fn protocol_from(p: &str) -> Result<Option<u8>> {
    Ok(match p.to_ascii_lowercase().as_str() {
        "" | "any" => None,
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "sctp" => Some(132),
        "icmpv6" | "ipv6-icmp" => Some(58),
        n => Some(n.parse::<u8>().map_err(|_| {
            Error::InvalidArgument(format!("{p:?} is not a protocol name or number"))
        })?),
    })
}

pub fn security_group_from(g: pb::SecurityGroup) -> Result<model::SecurityGroup> {
    let mut rules = Vec::new();
    for r in g.rules {
        let direction = match r.direction.as_str() {
            "ingress" => model::Direction::Ingress,
            "egress" => model::Direction::Egress,
            d => {
                return Err(Error::InvalidArgument(format!(
                    "direction {d:?} is neither ingress nor egress"
                )))
            }
        };
        let v6 = match r.ethertype.as_str() {
            "" | "IPv4" => false,
            "IPv6" => true,
            e => {
                return Err(Error::InvalidArgument(format!(
                    "ethertype {e:?} is neither IPv4 nor IPv6"
                )))
            }
        };
        let protocol = protocol_from(&r.protocol)?;
        let (min, max) = (r.port_range_min, r.port_range_max);
        let mut ports = None;
        let (mut icmp_type, mut icmp_code) = (None, None);
        match protocol {
            Some(6 | 17 | 132) if min != 0 || max != 0 => {
                let max = if max == 0 { min } else { max };
                if min == 0 || min > max || max > 65535 {
                    return Err(Error::InvalidArgument(format!(
                        "port range {min}..{max} is not valid"
                    )));
                }
                ports = Some((min as u16, max as u16));
            }
            Some(1 | 58) => {
                if min > 255 || max > 255 {
                    return Err(Error::InvalidArgument(format!(
                        "ICMP type {min} / code {max} is outside 0..255"
                    )));
                }
                // Neutron: port_range_min is the type, port_range_max the code.
                if min != 0 || max != 0 {
                    icmp_type = Some(min as u8);
                    icmp_code = (max != 0).then_some(max as u8);
                }
            }
            _ if min != 0 || max != 0 => {
                return Err(Error::InvalidArgument(
                    "port ranges need protocol tcp, udp or sctp".into(),
                ))
            }
            _ => {}
        }
        let remote_net = match r.remote_ip_prefix.as_str() {
            "" => None,
            n => Some(ip_or_net(n, "remote IP prefix")?),
        };
        rules.push(model::Rule {
            direction,
            v6,
            protocol,
            ports,
            icmp_type,
            icmp_code,
            remote_net,
            remote_group: (!r.remote_group_id.is_empty()).then_some(r.remote_group_id),
        });
    }
    let remote_members = g
        .remote_members
        .iter()
        .map(|i| {
            i.parse::<IpAddr>()
                .map_err(|_| Error::InvalidArgument(format!("{i:?} is not an IP address")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(model::SecurityGroup {
        id: g.id,
        rules,
        remote_members,
    })
}

pub fn remotes_from(r: pb::NetworkRemotes) -> Result<(String, Remotes)> {
    let vteps = r
        .vteps
        .iter()
        .map(|v| ipv4(v, "VTEP"))
        .collect::<Result<Vec<_>>>()?;
    let mut ports = Vec::new();
    for p in r.ports {
        let ips = p
            .ips
            .iter()
            .map(|i| {
                i.parse::<IpAddr>()
                    .map_err(|_| Error::InvalidArgument(format!("{i:?} is not an IP address")))
            })
            .collect::<Result<Vec<_>>>()?;
        ports.push(RemotePort {
            mac: model::parse_mac(&p.mac)?,
            ips,
            vtep: ipv4(&p.vtep, "VTEP")?,
            port_id: p.port_id,
            device_id: p.device_id,
            project_id: p.project_id,
        });
    }
    Ok((r.network_id, Remotes { vteps, ports }))
}

pub fn state_from(s: pb::NodeState) -> Result<Desired> {
    let mut d = Desired::default();
    for n in s.networks {
        let n = network_from(n)?;
        d.networks.insert(n.id.clone(), n);
    }
    for p in s.ports {
        let p = port_from(p)?;
        d.ports.insert(p.id.clone(), p);
    }
    for r in s.remotes {
        let (id, r) = remotes_from(r)?;
        d.remotes.insert(id, r);
    }
    for r in s.routers {
        let r = router_from(r)?;
        d.routers.insert(r.id.clone(), r);
    }
    for g in s.security_groups {
        let g = security_group_from(g)?;
        d.security_groups.insert(g.id.clone(), g);
    }
    Ok(d)
}

fn report(r: Report) -> pb::SyncReport {
    pb::SyncReport {
        added: r.added,
        changed: r.changed,
        removed: r.removed,
        duration_us: r.duration_us,
        actions: r.actions,
        errors: r.errors,
    }
}

fn reply(devices: Vec<String>, r: Report) -> Response<pb::EnsureReply> {
    Response::new(pb::EnsureReply {
        devices,
        report: Some(report(r)),
    })
}

#[tonic::async_trait]
impl pb::netd_server::Netd for Service {
    #[tracing::instrument(skip_all, fields(network = %req.get_ref().id))]
    async fn ensure_network(
        &self,
        req: Request<pb::Network>,
    ) -> std::result::Result<Response<pb::EnsureReply>, Status> {
        let n = network_from(req.into_inner())?;
        let devs = vec![names::bridge(&n.id)];
        Ok(reply(devs, self.0.ensure_network(n).await?))
    }

    #[tracing::instrument(skip_all, fields(network = %req.get_ref().id))]
    async fn delete_network(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> std::result::Result<Response<pb::EnsureReply>, Status> {
        Ok(reply(
            vec![],
            self.0.delete_network(&req.into_inner().id).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(port = %req.get_ref().id))]
    async fn ensure_port(
        &self,
        req: Request<pb::Port>,
    ) -> std::result::Result<Response<pb::EnsureReply>, Status> {
        let p = port_from(req.into_inner())?;
        let dev = match p.kind {
            PortKind::Tap => names::tap(&p.id),
            PortKind::Veth { .. } => names::veth(&p.id),
        };
        let r = self.0.ensure_port(p).await?;
        if let Some(e) = r.errors.iter().find(|e| e.contains(&dev)) {
            return Err(Status::failed_precondition(e.clone()));
        }
        Ok(reply(vec![dev], r))
    }

    #[tracing::instrument(skip_all, fields(port = %req.get_ref().id))]
    async fn delete_port(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> std::result::Result<Response<pb::EnsureReply>, Status> {
        Ok(reply(
            vec![],
            self.0.delete_port(&req.into_inner().id).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(network = %req.get_ref().network_id))]
    async fn set_remotes(
        &self,
        req: Request<pb::NetworkRemotes>,
    ) -> std::result::Result<Response<pb::EnsureReply>, Status> {
        let (id, r) = remotes_from(req.into_inner())?;
        Ok(reply(vec![], self.0.set_remotes(&id, r).await?))
    }

    #[tracing::instrument(skip_all, fields(dry_run = req.get_ref().dry_run))]
    async fn sync(
        &self,
        req: Request<pb::NodeState>,
    ) -> std::result::Result<Response<pb::SyncReport>, Status> {
        let s = req.into_inner();
        let dry = s.dry_run;
        let digest = if dry {
            Vec::new()
        } else {
            use prost::Message;
            use sha2::Digest;
            sha2::Sha256::digest(s.encode_to_vec()).to_vec()
        };
        let d = state_from(s)?;
        Ok(Response::new(report(self.0.sync(d, dry, digest).await?)))
    }

    async fn get_state_digest(
        &self,
        _: Request<pb::StateDigestRequest>,
    ) -> std::result::Result<Response<pb::StateDigest>, Status> {
        Ok(Response::new(pb::StateDigest {
            digest: self.0.state_digest(),
        }))
    }

    #[tracing::instrument(skip_all, fields(ports = req.get_ref().ports.len(), replace = req.get_ref().replace))]
    async fn update_dhcp_hosts(
        &self,
        req: Request<pb::DhcpHostsUpdate>,
    ) -> std::result::Result<Response<pb::DhcpHostsReply>, Status> {
        Ok(Response::new(self.0.update_dhcp_hosts(req.into_inner())?))
    }

    #[tracing::instrument(skip_all, fields(router = %req.get_ref().id))]
    async fn ensure_router(
        &self,
        req: Request<pb::Router>,
    ) -> std::result::Result<Response<pb::EnsureReply>, Status> {
        let r = router_from(req.into_inner())?;
        let ns = names::router_ns(&r.id);
        let rep = self.0.ensure_router(r).await?;
        if let Some(e) = rep.errors.iter().find(|e| e.contains(&ns)) {
            return Err(Status::failed_precondition(e.clone()));
        }
        Ok(reply(vec![ns], rep))
    }

    #[tracing::instrument(skip_all, fields(router = %req.get_ref().id))]
    async fn delete_router(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> std::result::Result<Response<pb::EnsureReply>, Status> {
        Ok(reply(
            vec![],
            self.0.delete_router(&req.into_inner().id).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(security_group = %req.get_ref().id))]
    async fn ensure_security_group(
        &self,
        req: Request<pb::SecurityGroup>,
    ) -> std::result::Result<Response<pb::EnsureReply>, Status> {
        let g = security_group_from(req.into_inner())?;
        Ok(reply(vec![], self.0.ensure_security_group(g).await?))
    }

    #[tracing::instrument(skip_all, fields(security_group = %req.get_ref().id))]
    async fn delete_security_group(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> std::result::Result<Response<pb::EnsureReply>, Status> {
        Ok(reply(
            vec![],
            self.0.delete_security_group(&req.into_inner().id).await?,
        ))
    }

    async fn get_capabilities(
        &self,
        _: Request<pb::CapabilitiesRequest>,
    ) -> std::result::Result<Response<pb::Capabilities>, Status> {
        let node = self.0.node();
        let mut types = vec!["flat".to_string()];
        let mut missing = vec![];
        if node.vtep.is_some() {
            types.push("vxlan".into());
        } else {
            missing.push(pb::MissingFeature {
                name: "vxlan".into(),
                reason: "no --vtep-address given".into(),
            });
        }
        if node.vlan_supported {
            types.push("vlan".into());
        } else {
            missing.push(pb::MissingFeature {
                name: "vlan".into(),
                reason: node.vlan_missing_reason.clone(),
            });
        }
        if !crate::nft::installed() {
            missing.push(pb::MissingFeature {
                name: "nftables".into(),
                reason: format!(
                    "{}: routers' NAT and floating IPs and security groups are not applied",
                    crate::nft::NOT_INSTALLED
                ),
            });
        }
        Ok(Response::new(pb::Capabilities {
            segmentation_types: types,
            missing,
            vtep_address: node.vtep.map(|v| v.to_string()).unwrap_or_default(),
            underlay_mtu: node.underlay_mtu,
            physical_networks: node.physnets.keys().cloned().collect(),
        }))
    }

    type WatchPortsStream =
        Pin<Box<dyn Stream<Item = std::result::Result<pb::PortEvent, Status>> + Send>>;

    async fn watch_ports(
        &self,
        _: Request<pb::WatchPortsRequest>,
    ) -> std::result::Result<Response<Self::WatchPortsStream>, Status> {
        use tokio_stream::StreamExt;
        let (now, rx) = self.0.subscribe();
        let conv = |e: crate::service::PortEvent| pb::PortEvent {
            port_id: e.port_id,
            status: match e.status {
                PortStatus::Active => pb::port_event::Status::Active,
                PortStatus::Down => pb::port_event::Status::Down,
                PortStatus::Error => pb::port_event::Status::Error,
                PortStatus::Removed => pb::port_event::Status::Removed,
            } as i32,
            device: e.device,
            detail: e.detail,
        };
        let first = tokio_stream::iter(now.into_iter().map(conv).map(Ok));
        let rest = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(move |e| e.ok().map(|e| Ok(conv(e))));
        Ok(Response::new(Box::pin(first.chain(rest))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        dir: &str,
        eth: &str,
        proto: &str,
        min: u32,
        max: u32,
        remote: &str,
    ) -> pb::SecurityGroupRule {
        pb::SecurityGroupRule {
            direction: dir.into(),
            ethertype: eth.into(),
            protocol: proto.into(),
            port_range_min: min,
            port_range_max: max,
            remote_ip_prefix: remote.into(),
            ..Default::default()
        }
    }

    fn group(rules: Vec<pb::SecurityGroupRule>) -> pb::SecurityGroup {
        pb::SecurityGroup {
            id: "33333333-3333-4333-8333-333333333333".into(),
            rules,
            remote_members: vec![],
        }
    }

    #[test]
    fn malformed_security_group_rules_are_refused() {
        for bad in [
            rule("sideways", "IPv4", "tcp", 22, 22, ""),
            rule("ingress", "IPv5", "tcp", 22, 22, ""),
            rule("ingress", "IPv4", "tcpp", 22, 22, ""),
            rule("ingress", "IPv4", "tcp", 30, 20, ""),
            rule("ingress", "IPv4", "tcp", 0, 70000, ""),
            rule("ingress", "IPv4", "", 22, 22, ""),
            rule("ingress", "IPv4", "icmp", 300, 0, ""),
            rule("ingress", "IPv4", "tcp", 22, 22, "10.0.0.0/33"),
            rule("ingress", "IPv4", "tcp", 22, 22, "not-a-net"),
        ] {
            let shown = format!("{bad:?}");
            assert!(
                matches!(
                    security_group_from(group(vec![bad])),
                    Err(Error::InvalidArgument(_))
                ),
                "accepted {shown}"
            );
        }
        let ok = security_group_from(group(vec![
            rule("ingress", "IPv4", "tcp", 22, 0, "10.1.2.3/8"),
            rule("egress", "IPv6", "", 0, 0, ""),
            rule("ingress", "IPv4", "icmp", 8, 0, ""),
        ]))
        .unwrap();
        assert_eq!(ok.rules[0].ports, Some((22, 22)));
        assert_eq!(ok.rules[0].remote_net.unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(ok.rules[2].icmp_type, Some(8));
    }

    #[test]
    fn malformed_routers_are_refused() {
        let leg = |ip: &str, mac: &str| pb::RouterInterface {
            port_id: "44444444-4444-4444-8444-444444444444".into(),
            network_id: "11111111-1111-4111-8111-111111111111".into(),
            mac: mac.into(),
            ip_address: ip.into(),
        };
        for (ip, mac) in [
            ("10.0.0.1", "02:00:00:00:00:01"),
            ("10.0.0.1/0", "02:00:00:00:00:01"),
            ("fd00::1/64", "02:00:00:00:00:01"),
            ("10.0.0.1/24", "02:00:00:00:00"),
        ] {
            let r = pb::Router {
                id: "55555555-5555-4555-8555-555555555555".into(),
                interfaces: vec![leg(ip, mac)],
                ..Default::default()
            };
            assert!(router_from(r).is_err(), "accepted {ip} {mac}");
        }
        let r = pb::Router {
            id: "55555555-5555-4555-8555-555555555555".into(),
            interfaces: vec![leg("10.0.0.1/24", "02:00:00:00:00:01")],
            floating_ips: vec![pb::FloatingIp {
                floating_ip: "203.0.113.5".into(),
                fixed_ip: "10.0.0.300".into(),
            }],
            ..Default::default()
        };
        assert!(router_from(r).is_err());
    }
}
