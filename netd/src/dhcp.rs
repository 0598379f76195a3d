//! DHCPv4 for every network on the node, from this one process (where
//! Neutron runs a dnsmasq per network).
//!
//! Each DHCP-enabled network gets a responder on its bridge: an `AF_PACKET`
//! datagram socket, so netd needs no address on the bridge (networks may
//! overlap) and answers from the subnet's DHCP address with hand-built
//! IPv4/UDP headers. Leases are static reservations, the way Neutron's are:
//! a known port's MAC gets exactly its fixed IP; unknown MACs get nothing.
//! Options: subnet mask, router, DNS servers, domain, lease time, MTU (26),
//! classless static routes (121: the default route, host routes, and the
//! metadata route through the DHCP address where there is no router) and
//! host name. Everything comes from the desired state, so leases survive a
//! restart with nothing else to keep.

use crate::model::{parse_cidr, Desired, Mac, Subnet};
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, RwLock};
use tokio::io::unix::AsyncFd;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const PACKET_OUTGOING: u8 = 4;
const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// What responders need to know about one network.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetView {
    pub subnets: Vec<Subnet>,
    pub domain: String,
    pub mtu: u32,
    /// MAC → (fixed IPv4 addresses, host name)
    pub ports: HashMap<Mac, (Vec<Ipv4Addr>, String)>,
    /// Metadata is served at the DHCP address (no router joins the
    /// network), so 169.254.169.254 is routed there even with a gateway.
    pub metadata_at_server: bool,
    /// The network's reservations for ports plugged elsewhere (asked after
    /// `ports`).
    pub held: Option<(String, crate::dhcp_hosts::DhcpHosts)>,
}

impl NetView {
    /// The fixed addresses and host name of `mac` on this network.
    fn lookup(&self, mac: &Mac) -> Option<(Vec<Ipv4Addr>, String)> {
        if let Some(p) = self.ports.get(mac) {
            return Some(p.clone());
        }
        let (net, held) = self.held.as_ref()?;
        held.get(net, mac).map(|h| (h.ips, h.hostname))
    }
}

type Views = Arc<RwLock<BTreeMap<String, Arc<NetView>>>>;

/// Where a network's responder listens.
#[derive(Debug, Clone, PartialEq)]
enum Place {
    /// On the bridge (by ifindex): the DHCP address is answered by netd,
    /// ARP included.
    Bridge(u32),
    /// On the leg of the network's metadata namespace (path, ifname),
    /// which holds the DHCP address itself.
    Netns(std::path::PathBuf, String),
}

/// Runs one responder per DHCP-enabled network.
#[derive(Default)]
pub struct Dhcp {
    views: Views,
    /// The reservations of ports plugged elsewhere (see [`crate::dhcp_hosts`]).
    pub held: crate::dhcp_hosts::DhcpHosts,
    responders: std::sync::Mutex<HashMap<String, (Place, tokio::task::JoinHandle<()>)>>,
}

impl Dhcp {
    /// Brings responders and their data in line with the desired state.
    /// `mtus` is each network's MTU; `bridges` maps bridge names to
    /// ifindexes; `in_ns` names the networks served inside a namespace
    /// (network id → namespace path, interface).
    pub fn sync(
        &self,
        want: &Desired,
        mtus: &BTreeMap<String, u32>,
        bridges: &HashMap<String, u32>,
        in_ns: &HashMap<String, (std::path::PathBuf, String)>,
    ) {
        let mut views = BTreeMap::new();
        for n in want.networks.values() {
            if !n.subnets.iter().any(|s| s.enable_dhcp) {
                continue;
            }
            let hosts = n
                .dhcp_hosts
                .iter()
                .map(|(mac, ip, name)| (*mac, (vec![*ip], name.clone())));
            let ports = hosts
                .chain(
                    want.ports
                        .values()
                        .filter(|p| p.network_id == n.id)
                        .map(|p| {
                            let ips = p
                                .fixed_ips
                                .iter()
                                .filter_map(|c| match parse_cidr(c) {
                                    Ok((IpAddr::V4(ip), _)) => Some(ip),
                                    _ => None,
                                })
                                .collect();
                            (p.mac, (ips, p.hostname.clone()))
                        }),
                )
                .collect();
            views.insert(
                n.id.clone(),
                Arc::new(NetView {
                    subnets: n.subnets.clone(),
                    domain: n.dns_domain.clone(),
                    mtu: mtus.get(&n.id).copied().unwrap_or(1500),
                    ports,
                    metadata_at_server: in_ns.contains_key(&n.id),
                    held: Some((n.id.clone(), self.held.clone())),
                }),
            );
        }
        let place = |id: &String| match in_ns.get(id) {
            Some((p, ifname)) => Some(Place::Netns(p.clone(), ifname.clone())),
            None => bridges
                .get(&crate::names::bridge(id))
                .map(|i| Place::Bridge(*i)),
        };
        let mut rs = self.responders.lock().expect("responders");
        rs.retain(|id, (at, task)| {
            let keep =
                views.contains_key(id) && place(id).as_ref() == Some(at) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for id in views.keys() {
            if rs.contains_key(id) {
                continue;
            }
            let Some(at) = place(id) else {
                continue;
            };
            let (views, id2, at2) = (self.views.clone(), id.clone(), at.clone());
            let task = tokio::spawn(async move {
                if let Err(e) = respond(at2, &id2, views).await {
                    tracing::warn!(network = %id2, error = %e, "DHCP responder stopped");
                }
            });
            rs.insert(id.clone(), (at, task));
        }
        *self.views.write().expect("views") = views;
    }
}

fn raw_socket(ifindex: u32, proto: u16) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket calls with checked results; the fd is owned at once.
    unsafe {
        // Protocol 0 at creation and the real one at bind: the socket is
        // hooked once, to its bridge only. (Created with a protocol, it is
        // hooked to every device first and bind then waits for an RCU grace
        // period to unhook it: milliseconds per socket, seconds for a
        // thousand networks.)
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto.to_be();
        sll.sll_ifindex = ifindex as i32;
        if libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if proto == ETH_P_IP {
            // Only UDP to port 67 wakes the responder; everything else the
            // bridge passes up is dropped in the kernel.
            let prog = dhcp_filter();
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_ptr() as *mut libc::sock_filter,
            };
            if libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                &fprog as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::sock_fprog>() as u32,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Room for bursts (thousands of clients booting at once).
            let size: libc::c_int = 4 << 20;
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
        Ok(fd)
    }
}

/// Classic BPF over the IPv4 header: UDP, first fragment, destination port 67.
fn dhcp_filter() -> [libc::sock_filter; 9] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    [
        op(0x30, 0, 0, 9),        // ldb [9]          protocol
        op(0x15, 0, 6, 17),       // jeq #17 (udp)    else drop
        op(0x28, 0, 0, 6),        // ldh [6]          flags + fragment offset
        op(0x45, 4, 0, 0x1fff),   // jset #0x1fff     a later fragment: drop
        op(0xb1, 0, 0, 0),        // ldxb 4*([0]&0xf) header length
        op(0x48, 0, 0, 2),        // ldh [x+2]        UDP destination port
        op(0x15, 0, 1, 67),       // jeq #67          else drop
        op(0x06, 0, 0, 0x4_0000), // ret: accept
        op(0x06, 0, 0, 0),        // ret: drop
    ]
}

/// The MAC of an interface, by index, in netd's namespace.
fn link_mac(ifindex: u32) -> std::io::Result<Mac> {
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes; the ioctl gets
    // a zeroed ifreq with that name and fills the hardware address.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        if libc::if_indextoname(ifindex, req.ifr_name.as_mut_ptr()).is_null() {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut mac = [0u8; 6];
        for (i, b) in req.ifr_ifru.ifru_hwaddr.sa_data[..6].iter().enumerate() {
            mac[i] = *b as u8;
        }
        Ok(mac)
    }
}

/// DHCP on the bridge, and ARP for the DHCP addresses so that clients can
/// renew by unicast; or DHCP on a metadata namespace's leg, whose kernel
/// answers ARP for the address it holds.
async fn respond(at: Place, network: &str, views: Views) -> std::io::Result<()> {
    let ifindex = match at {
        Place::Bridge(i) => i,
        Place::Netns(path, ifname) => {
            let (fd, idx) = crate::router::in_ns(&path, move || {
                let c = std::ffi::CString::new(ifname.as_str()).map_err(std::io::Error::other)?;
                // SAFETY: a valid C string.
                let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
                if idx == 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok((raw_socket(idx, ETH_P_IP)?, idx))
            })
            .map_err(std::io::Error::other)?;
            return packet_loop(fd, idx, ETH_P_IP, |pkt, from| {
                let view = views.read().expect("views").get(network).cloned()?;
                handle(pkt, &view, from)
            })
            .await;
        }
    };
    let mac = link_mac(ifindex)?;
    let net = network.to_string();
    let v2 = views.clone();
    let arp_sock = raw_socket(ifindex, ETH_P_ARP)?;
    let arp = tokio::spawn(async move {
        let r = packet_loop(arp_sock, ifindex, ETH_P_ARP, |pkt, _| {
            let view = v2.read().expect("views").get(&net).cloned()?;
            arp_reply(pkt, &view, mac)
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "ARP responder stopped");
        }
    });
    let r = packet_loop(
        raw_socket(ifindex, ETH_P_IP)?,
        ifindex,
        ETH_P_IP,
        |pkt, from| {
            let view = views.read().expect("views").get(network).cloned()?;
            handle(pkt, &view, from)
        },
    )
    .await;
    arp.abort();
    r
}

/// Receives packets of one protocol on a link and sends whatever `answer`
/// returns to the MAC it names.
async fn packet_loop(
    sock: OwnedFd,
    ifindex: u32,
    proto: u16,
    answer: impl Fn(&[u8], Mac) -> Option<(Vec<u8>, Mac)>,
) -> std::io::Result<()> {
    // SAFETY: the fd is owned by the AsyncFd for its whole life and is not
    // closed or duplicated elsewhere.
    let fd = unsafe { AsyncFd::register(sock) }.map_err(|e| e.into_parts().1)?;
    let mut buf = vec![0u8; 2048];
    loop {
        let mut guard = fd.readable().await?;
        // SAFETY: recvfrom into a buffer we own, with a correctly sized sockaddr_ll.
        let (n, sll) = unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let n = libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut _,
                buf.len(),
                0,
                &mut sll as *mut _ as *mut libc::sockaddr,
                &mut len,
            );
            (n, sll)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                guard.clear_ready();
                continue;
            }
            return Err(e);
        }
        if sll.sll_pkttype == PACKET_OUTGOING {
            continue;
        }
        let mut from = [0u8; 6];
        from.copy_from_slice(&sll.sll_addr[..6]);
        let Some((pkt, dst_mac)) = answer(&buf[..n as usize], from) else {
            continue;
        };
        // SAFETY: sendto from a buffer we own to a sockaddr_ll we built.
        unsafe {
            let mut to: libc::sockaddr_ll = std::mem::zeroed();
            to.sll_family = libc::AF_PACKET as u16;
            to.sll_protocol = proto.to_be();
            to.sll_ifindex = ifindex as i32;
            to.sll_halen = 6;
            to.sll_addr[..6].copy_from_slice(&dst_mac);
            let r = libc::sendto(
                fd.as_raw_fd(),
                pkt.as_ptr() as *const _,
                pkt.len(),
                0,
                &to as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if r < 0 {
                tracing::warn!(error = %std::io::Error::last_os_error(), "reply not sent");
            }
        }
    }
}

/// Answers an ARP request for one of the network's DHCP addresses.
pub fn arp_reply(pkt: &[u8], view: &NetView, mac: Mac) -> Option<(Vec<u8>, Mac)> {
    if pkt.len() < 28
        || pkt[0..2] != [0, 1]
        || pkt[2..4] != [8, 0]
        || pkt[4] != 6
        || pkt[5] != 4
        || pkt[6..8] != [0, 1]
    {
        return None;
    }
    let target = Ipv4Addr::new(pkt[24], pkt[25], pkt[26], pkt[27]);
    view.subnets
        .iter()
        .find(|s| s.enable_dhcp && s.server == target)?;
    let mut sha = [0u8; 6];
    sha.copy_from_slice(&pkt[8..14]);
    let mut r = Vec::with_capacity(28);
    r.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    r.extend_from_slice(&mac);
    r.extend_from_slice(&target.octets());
    r.extend_from_slice(&sha);
    r.extend_from_slice(&pkt[14..18]);
    Some((r, sha))
}

/// The UDP payload of an IPv4 packet to port 67, if it is one.
fn dhcp_payload(ip: &[u8]) -> Option<&[u8]> {
    if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ihl < 20 || total > ip.len() || total < ihl + 8 {
        return None;
    }
    let udp = &ip[ihl..total];
    if u16::from_be_bytes([udp[2], udp[3]]) != 67 {
        return None;
    }
    let ulen = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if ulen < 8 || ulen > udp.len() {
        return None;
    }
    Some(&udp[8..ulen])
}

/// Builds the answer to one DHCP packet (which came from the MAC `from`):
/// the IPv4 packet and the MAC to send it to. A request relayed by an
/// agent on the segment (giaddr set, RFC 2131 4.1) is answered to the
/// agent's server port, when the agent's address is in the subnet.
pub fn handle(ip_packet: &[u8], view: &NetView, from: Mac) -> Option<(Vec<u8>, Mac)> {
    let payload = dhcp_payload(ip_packet)?;
    let req = Message::decode(&mut Decoder::new(payload)).ok()?;
    if req.opcode() != Opcode::BootRequest || req.chaddr().len() < 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&req.chaddr()[..6]);
    let (ips, hostname) = view.lookup(&mac)?;
    let (ips, hostname) = (&ips, &hostname);
    let (ip, subnet) = ips.iter().find_map(|ip| {
        view.subnets
            .iter()
            .find(|s| s.enable_dhcp && s.contains(*ip))
            .map(|s| (*ip, s))
    })?;
    let relay = req.giaddr();
    if !relay.is_unspecified() && !subnet.contains(relay) {
        return None;
    }
    let kind = req.opts().msg_type()?;
    if let Some(DhcpOption::ServerIdentifier(sid)) =
        req.opts().get(dhcproto::v4::OptionCode::ServerIdentifier)
    {
        if *sid != subnet.server && kind == MessageType::Request {
            return None; // the client chose another server
        }
    }
    let reply_kind = match kind {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request => {
            let wanted = match req.opts().get(dhcproto::v4::OptionCode::RequestedIpAddress) {
                Some(DhcpOption::RequestedIpAddress(r)) => Some(*r),
                _ if !req.ciaddr().is_unspecified() => Some(req.ciaddr()),
                _ => None,
            };
            if wanted.is_some_and(|w| w != ip) {
                MessageType::Nak
            } else {
                MessageType::Ack
            }
        }
        MessageType::Inform => MessageType::Ack,
        // RELEASE and DECLINE need no answer: reservations are static.
        _ => return None,
    };
    let inform = kind == MessageType::Inform;
    let yiaddr = if reply_kind == MessageType::Nak || inform {
        Ipv4Addr::UNSPECIFIED
    } else {
        ip
    };
    let mut rep = Message::new_with_id(
        req.xid(),
        if inform {
            req.ciaddr()
        } else {
            Ipv4Addr::UNSPECIFIED
        },
        yiaddr,
        subnet.server,
        req.giaddr(),
        &req.chaddr()[..6],
    );
    rep.set_opcode(Opcode::BootReply);
    rep.set_flags(req.flags());
    let o = rep.opts_mut();
    o.insert(DhcpOption::MessageType(reply_kind));
    o.insert(DhcpOption::ServerIdentifier(subnet.server));
    if reply_kind != MessageType::Nak {
        if !inform {
            o.insert(DhcpOption::AddressLeaseTime(subnet.lease_seconds));
            o.insert(DhcpOption::Renewal(subnet.lease_seconds / 2));
            o.insert(DhcpOption::Rebinding(subnet.lease_seconds / 8 * 7));
        }
        o.insert(DhcpOption::SubnetMask(subnet.mask()));
        if let Some(g) = subnet.gateway {
            o.insert(DhcpOption::Router(vec![g]));
        }
        if !subnet.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(subnet.dns.clone()));
        }
        if !view.domain.is_empty() {
            o.insert(DhcpOption::DomainName(view.domain.clone()));
        }
        o.insert(DhcpOption::InterfaceMtu(
            view.mtu.min(u16::MAX as u32) as u16
        ));
        // With option 121 present clients ignore option 3, so the default
        // route goes in it too (RFC 3442).
        let mut routes: Vec<(Ipv4Net, Ipv4Addr)> = Vec::new();
        for (dst, p, via) in &subnet.routes {
            if let Ok(net) = Ipv4Net::new(*dst, *p) {
                routes.push((net, *via));
            }
        }
        if subnet.gateway.is_none() || view.metadata_at_server {
            routes.push((Ipv4Net::new(METADATA, 32).expect("valid"), subnet.server));
        }
        if let Some(g) = subnet.gateway {
            routes.push((Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("valid"), g));
        }
        o.insert(DhcpOption::ClasslessStaticRoute(routes));
        let name = if hostname.is_empty() {
            format!("host-{}", ip.to_string().replace('.', "-"))
        } else {
            hostname.clone()
        };
        o.insert(DhcpOption::Hostname(name));
    }
    let payload = rep.to_vec().ok()?;
    if !relay.is_unspecified() {
        return Some((udp_packet(subnet.server, relay, 67, 67, &payload), from));
    }
    let broadcast = req.flags().broadcast() || reply_kind == MessageType::Nak;
    let (dst_ip, dst_mac) = if broadcast {
        (Ipv4Addr::BROADCAST, [0xff; 6])
    } else if !req.ciaddr().is_unspecified() {
        (req.ciaddr(), mac)
    } else {
        (yiaddr, mac)
    };
    Some((udp_packet(subnet.server, dst_ip, 67, 68, &payload), dst_mac))
}

fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet carrying one UDP datagram, checksums filled in.
pub fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let ulen = (8 + payload.len()) as u16;
    let total = 20 + ulen;
    let mut p = Vec::with_capacity(total as usize);
    p.extend_from_slice(&[0x45, 0x10]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let mut udp = Vec::with_capacity(ulen as usize);
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&ulen.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo: u32 = 0;
    for w in [src.octets(), dst.octets()] {
        pseudo += u16::from_be_bytes([w[0], w[1]]) as u32 + u16::from_be_bytes([w[2], w[3]]) as u32;
    }
    pseudo += 17 + ulen as u32;
    let mut uc = checksum(&udp, pseudo);
    if uc == 0 {
        uc = 0xffff;
    }
    udp[6..8].copy_from_slice(&uc.to_be_bytes());
    p.extend_from_slice(&udp);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> NetView {
        let mut ports = HashMap::new();
        ports.insert(
            [2, 0, 0, 0, 0, 5],
            (vec![Ipv4Addr::new(10, 0, 0, 5)], "vm5".to_string()),
        );
        NetView {
            subnets: vec![Subnet {
                net: Ipv4Addr::new(10, 0, 0, 0),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                dns: vec![Ipv4Addr::new(10, 0, 0, 53)],
                routes: vec![],
                enable_dhcp: true,
                server: Ipv4Addr::new(10, 0, 0, 254),
                lease_seconds: 3600,
            }],
            domain: "example".into(),
            mtu: 1450,
            ports,
            metadata_at_server: false,
            held: None,
        }
    }

    fn discover(mac: Mac) -> Vec<u8> {
        let mut m = Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        udp_packet(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            68,
            67,
            &m.to_vec().unwrap(),
        )
    }

    #[test]
    fn a_known_mac_gets_its_address_and_options() {
        let (pkt, to) = handle(
            &discover([2, 0, 0, 0, 0, 5]),
            &view(),
            [2, 0, 0, 0, 0, 0x77],
        )
        .expect("an offer");
        assert_eq!(to, [2, 0, 0, 0, 0, 5]);
        let payload = dhcp_payload_any(&pkt);
        let m = Message::decode(&mut Decoder::new(payload)).unwrap();
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
        assert!(matches!(
            m.opts().get(dhcproto::v4::OptionCode::InterfaceMtu),
            Some(DhcpOption::InterfaceMtu(1450))
        ));
        assert_eq!(checksum(&pkt[..20], 0), 0, "IP header checksum verifies");
    }

    #[test]
    fn a_port_held_for_another_node_gets_its_address() {
        let held = crate::dhcp_hosts::DhcpHosts::default();
        held.update(ursa_proto::netd::v1::DhcpHostsUpdate {
            ports: vec![ursa_proto::netd::v1::DhcpPortHosts {
                port_id: "p9".into(),
                network_id: "n1".into(),
                mac: "02:00:00:00:00:09".into(),
                ip_addresses: vec!["10.0.0.9".into()],
                hostname: "host-10-0-0-9".into(),
            }],
            ..Default::default()
        })
        .unwrap();
        let mut v = view();
        v.held = Some(("n1".into(), held.clone()));
        let (pkt, to) =
            handle(&discover([2, 0, 0, 0, 0, 9]), &v, [2, 0, 0, 0, 0, 0x77]).expect("an offer");
        assert_eq!(to, [2, 0, 0, 0, 0, 9]);
        let m = Message::decode(&mut Decoder::new(dhcp_payload_any(&pkt))).unwrap();
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 0, 0, 9));
        // Held for another network: nothing.
        v.held = Some(("n2".into(), held));
        assert!(handle(&discover([2, 0, 0, 0, 0, 9]), &v, [2, 0, 0, 0, 0, 0x77]).is_none());
    }

    #[test]
    fn relayed_requests_go_back_to_the_relay_in_the_subnet_only() {
        let relayed = |giaddr: Ipv4Addr| {
            let mut m = Message::new(
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                giaddr,
                &[2, 0, 0, 0, 0, 5],
            );
            m.opts_mut()
                .insert(DhcpOption::MessageType(MessageType::Discover));
            udp_packet(giaddr, Ipv4Addr::BROADCAST, 67, 67, &m.to_vec().unwrap())
        };
        let relay_mac = [2, 0, 0, 0, 0, 0x77];
        let (pkt, to) =
            handle(&relayed(Ipv4Addr::new(10, 0, 0, 2)), &view(), relay_mac).expect("an offer");
        assert_eq!(to, relay_mac, "sent to the relay's MAC");
        assert_eq!(&pkt[16..20], &[10, 0, 0, 2], "addressed to giaddr");
        assert_eq!(
            u16::from_be_bytes([pkt[22], pkt[23]]),
            67,
            "to the server port"
        );
        assert!(
            handle(&relayed(Ipv4Addr::new(192, 168, 9, 9)), &view(), relay_mac).is_none(),
            "a relay outside the subnet is not answered"
        );
    }

    #[test]
    fn unknown_macs_and_garbage_get_nothing() {
        assert!(handle(
            &discover([2, 0, 0, 0, 0, 6]),
            &view(),
            [2, 0, 0, 0, 0, 0x77]
        )
        .is_none());
        assert!(handle(&[0x45; 40], &view(), [2, 0, 0, 0, 0, 0x77]).is_none());
        assert!(handle(&[], &view(), [2, 0, 0, 0, 0, 0x77]).is_none());
    }

    #[test]
    fn arp_is_answered_for_the_dhcp_address_only() {
        let mut req = vec![
            0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 5, 10, 0, 0, 5, 0, 0, 0, 0, 0, 0,
        ];
        let ours = [9, 9, 9, 9, 9, 9];
        let mut for_server = req.clone();
        for_server.extend_from_slice(&[10, 0, 0, 254]);
        let (r, to) = arp_reply(&for_server, &view(), ours).expect("an answer");
        assert_eq!(to, [2, 0, 0, 0, 0, 5]);
        assert_eq!(&r[6..8], &[0, 2]);
        assert_eq!(&r[8..14], &ours);
        assert_eq!(&r[14..18], &[10, 0, 0, 254]);
        req.extend_from_slice(&[10, 0, 0, 7]);
        assert!(arp_reply(&req, &view(), ours).is_none());
        assert!(arp_reply(&[1, 2, 3], &view(), ours).is_none());
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        /// Arbitrary bytes as an IP packet: never a panic, never an answer
        /// (no arbitrary packet is a well-formed request from the known MAC
        /// often enough to matter, and those that are must be answered right).
        #[test]
        fn garbage_packets_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
            if let Some((pkt, to)) = handle(&bytes, &view(), [2, 0, 0, 0, 0, 0x77]) {
                prop_assert_eq!(to, [2, 0, 0, 0, 0, 5]);
                prop_assert_eq!(checksum(&pkt[..20], 0), 0);
            }
            let _ = arp_reply(&bytes, &view(), [1; 6]);
        }

        /// Well-framed DHCP with random fields and options: an unknown MAC
        /// never gets an answer; the known one only gets its own address.
        #[test]
        fn only_the_known_mac_is_ever_answered(
            mac in prop::array::uniform6(any::<u8>()),
            known in any::<bool>(),
            kind in 1u8..=8,
            ciaddr in any::<u32>(),
            requested in prop::option::of(any::<u32>()),
            junk in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let mac = if known { [2, 0, 0, 0, 0, 5] } else { mac };
            let mut m = Message::new(Ipv4Addr::from(ciaddr), Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, &mac);
            m.opts_mut().insert(DhcpOption::MessageType(MessageType::from(kind)));
            if let Some(r) = requested {
                m.opts_mut().insert(DhcpOption::RequestedIpAddress(Ipv4Addr::from(r)));
            }
            let mut payload = m.to_vec().unwrap();
            payload.extend_from_slice(&junk);
            let pkt = udp_packet(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &payload);
            let answer = handle(&pkt, &view(), [2, 0, 0, 0, 0, 0x77]);
            if mac != [2, 0, 0, 0, 0, 5] {
                prop_assert!(answer.is_none());
            } else if let Some((rep, _)) = answer {
                let r = Message::decode(&mut Decoder::new(&rep[28..])).unwrap();
                let y = r.yiaddr();
                prop_assert!(y == Ipv4Addr::new(10, 0, 0, 5) || y.is_unspecified(), "{}", y);
            }
        }
    }

    fn dhcp_payload_any(ip: &[u8]) -> &[u8] {
        &ip[28..]
    }
}
