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
    Ok(Network {
        id: n.id,
        segment,
        mtu: n.mtu,
        subnets,
        dns_domain: n.dns_domain,
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
        let d = state_from(s)?;
        Ok(Response::new(report(self.0.sync(d, dry).await?)))
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
        Ok(Response::new(pb::Capabilities {
            segmentation_types: types,
            missing,
            vtep_address: node.vtep.map(|v| v.to_string()).unwrap_or_default(),
            underlay_mtu: node.underlay_mtu,
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
