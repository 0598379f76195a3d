//! The kernel side: one rtnetlink connection that observes links, FDB and
//! neighbour entries, and applies planned [`Action`]s. Requests of one phase
//! are pipelined on the connection (many in flight, answers matched by
//! sequence number), which is where most of the speed over one `ip` process
//! per step comes from. Taps are the one thing netlink cannot create: they
//! are made persistent through `/dev/net/tun` and then handled by netlink.

use crate::error::{Error, Result};
use crate::model::Mac;
use crate::names;
use crate::reconcile::{Action, LinkState, Observed, Underlay, VxlanState, VXLAN_PORT};
use futures::stream::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVlan, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVlan, LinkVxlan,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

/// How many requests are in flight at once on the connection.
const PIPELINE: usize = 64;

#[derive(Clone)]
pub struct Kernel {
    handle: Handle,
    /// Connections opened inside other network namespaces, by the
    /// namespace file's (device, inode), which a re-created namespace of the
    /// same name does not share.
    netns: std::sync::Arc<std::sync::Mutex<BTreeMap<(u64, u64), Handle>>>,
}

fn nl(e: rtnetlink::Error) -> Error {
    Error::Netlink(e.to_string())
}

/// A link message as netd sees it.
pub fn link_state(m: &LinkMessage) -> LinkState {
    parse_link(m)
}

fn parse_link(m: &LinkMessage) -> LinkState {
    let mut l = LinkState {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        ..Default::default()
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Controller(c) => l.master = Some(*c),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(xs)) => {
                            let mut v = VxlanState {
                                vni: 0,
                                local: None,
                                port: 0,
                                learning: true,
                                proxy: false,
                            };
                            for x in xs {
                                match x {
                                    InfoVxlan::Id(id) => v.vni = *id,
                                    InfoVxlan::Local(ip) => v.local = Some(*ip),
                                    InfoVxlan::Port(p) => v.port = *p,
                                    InfoVxlan::Learning(b) => v.learning = *b,
                                    InfoVxlan::Proxy(b) => v.proxy = *b,
                                    _ => {}
                                }
                            }
                            l.vxlan = Some(v);
                        }
                        LinkInfo::Data(InfoData::Vlan(vs)) => {
                            for v in vs {
                                if let InfoVlan::Id(id) = v {
                                    l.vlan = Some((*id, 0));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn neigh_parts(m: &NeighbourMessage) -> (Option<Mac>, Option<IpAddr>) {
    let mut mac = None;
    let mut dst = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                let mut x = [0u8; 6];
                x.copy_from_slice(b);
                mac = Some(x);
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                dst = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                dst = Some(IpAddr::V6(*v6))
            }
            // Bridge-family (FDB) messages carry the VTEP as raw bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                dst = Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
            }
            _ => {}
        }
    }
    (mac, dst)
}

/// The result of applying a plan.
#[derive(Debug, Default)]
pub struct Applied {
    pub done: Vec<Action>,
    pub errors: Vec<(Action, String)>,
}

impl Kernel {
    /// Opens a netlink connection in the current network namespace.
    pub fn connect() -> Result<Kernel> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| Error::Io {
            context: "netlink socket".into(),
            source: e,
        })?;
        tokio::spawn(conn);
        Ok(Kernel {
            handle,
            netns: Default::default(),
        })
    }

    /// A channel that receives a unit whenever the kernel announces a link
    /// change (RTNLGRP_LINK), for prompt port status.
    pub fn link_changes() -> Result<futures::channel::mpsc::UnboundedReceiver<()>> {
        use rtnetlink::sys::{AsyncSocket, SocketAddr};
        const RTMGRP_LINK: u32 = 1;
        let (mut conn, _handle, mut messages) =
            rtnetlink::new_connection().map_err(|e| Error::Io {
                context: "netlink monitor socket".into(),
                source: e,
            })?;
        conn.socket_mut()
            .socket_mut()
            .bind(&SocketAddr::new(0, RTMGRP_LINK))
            .map_err(|e| Error::Io {
                context: "netlink monitor bind".into(),
                source: e,
            })?;
        tokio::spawn(conn);
        let (tx, rx) = futures::channel::mpsc::unbounded();
        tokio::spawn(async move {
            while let Some((m, _)) = messages.next().await {
                if let NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_),
                ) = m.payload
                {
                    if tx.unbounded_send(()).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// A netlink handle inside the namespace at `path`. The socket is made on
    /// a short-lived thread that enters the namespace, so no thread of the
    /// runtime ever changes namespace.
    /// Drops the cached handle into a namespace that is about to go.
    pub fn forget_ns(&self, path: &std::path::Path) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(path) {
            self.netns
                .lock()
                .expect("netns cache")
                .remove(&(meta.dev(), meta.ino()));
        }
    }

    pub async fn handle_in(&self, path: &std::path::Path) -> Result<Handle> {
        use std::os::unix::fs::MetadataExt;
        let io = |e: std::io::Error| {
            Error::FailedPrecondition(format!("network namespace {}: {e}", path.display()))
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let key = (meta.dev(), meta.ino());
        if let Some(h) = self.netns.lock().expect("netns cache").get(&key) {
            return Ok(h.clone());
        }
        let rt = tokio::runtime::Handle::current();
        let (conn, handle) = crate::router::in_ns(path, move || {
            let _g = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection()?;
            Ok((conn, handle))
        })?;
        tokio::spawn(conn);
        self.netns
            .lock()
            .expect("netns cache")
            .insert(key, handle.clone());
        Ok(handle)
    }

    pub async fn links(&self) -> Result<Vec<LinkState>> {
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(|m| parse_link(&m))
            .try_collect()
            .await
            .map_err(nl)
    }

    /// Links (owned ones and the ones they reference), and the FDB and
    /// neighbour entries of netd's VXLAN devices.
    pub async fn observe(&self) -> Result<Observed> {
        let mut o = Observed::default();
        for l in self.links().await? {
            o.index.insert(l.index, l.name.clone());
            o.links.insert(l.name.clone(), l);
        }
        let vx: BTreeMap<u32, String> = o
            .links
            .values()
            .filter(|l| l.name.starts_with(names::VXLAN))
            .map(|l| (l.index, l.name.clone()))
            .collect();
        if vx.is_empty() {
            return Ok(o);
        }
        let mut req = self.handle.neighbours().get();
        req = req.set_address_family(AddressFamily::Bridge);
        let mut fdb = req.execute();
        while let Some(m) = fdb.try_next().await.map_err(nl)? {
            let Some(dev) = vx.get(&m.header.ifindex) else {
                continue;
            };
            if let (Some(mac), Some(IpAddr::V4(dst))) = neigh_parts(&m) {
                o.fdb.entry(dev.clone()).or_default().insert((mac, dst));
            }
        }
        let mut neigh = self.handle.neighbours().get().execute();
        while let Some(m) = neigh.try_next().await.map_err(nl)? {
            let Some(dev) = vx.get(&m.header.ifindex) else {
                continue;
            };
            if m.header.state != NeighbourState::Permanent {
                continue;
            }
            if let (Some(mac), Some(ip)) = neigh_parts(&m) {
                o.neigh.entry(dev.clone()).or_default().insert((ip, mac));
            }
        }
        Ok(o)
    }

    /// The interface that holds `vtep`, with its MTU.
    pub async fn underlay(&self, vtep: Ipv4Addr) -> Result<Underlay> {
        let mut addrs = self.handle.address().get().execute();
        let mut index = None;
        while let Some(a) = addrs.try_next().await.map_err(nl)? {
            if a.attributes.iter().any(|x| matches!(x, AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) if *ip == vtep)) {
                index = Some(a.header.index);
            }
        }
        let index = index.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "no interface on this node holds the VTEP address {vtep}"
            ))
        })?;
        let l = self
            .links()
            .await?
            .into_iter()
            .find(|l| l.index == index)
            .ok_or_else(|| {
                Error::FailedPrecondition(format!("the interface holding {vtep} vanished"))
            })?;
        Ok(Underlay {
            dev: l.name,
            mtu: l.mtu,
        })
    }

    /// Whether this kernel can create 802.1q devices. Creating one on `lo`
    /// fails with "unknown device type" when 8021q is missing and with some
    /// other error (or not at all) when it is there.
    pub async fn probe_vlan(&self) -> (bool, String) {
        let msg = LinkVlan::new("uprobe-vlan", 1, 4094).build();
        match self.handle.link().add(msg).execute().await {
            Ok(()) => {
                if let Ok(Some(l)) = self
                    .handle
                    .link()
                    .get()
                    .match_name("uprobe-vlan")
                    .execute()
                    .try_next()
                    .await
                {
                    let _ = self.handle.link().del(l.header.index).execute().await;
                }
                (true, String::new())
            }
            Err(e) => {
                let s = e.to_string();
                let missing = s.contains("Operation not supported")
                    || s.contains("-95")
                    || s.contains("Unknown device type");
                if missing {
                    (
                        false,
                        format!("the kernel refused to create a vlan link ({s}): no 8021q"),
                    )
                } else {
                    (true, String::new())
                }
            }
        }
    }

    async fn index_map(&self) -> Result<BTreeMap<String, u32>> {
        Ok(self
            .links()
            .await?
            .into_iter()
            .map(|l| (l.name, l.index))
            .collect())
    }

    /// Applies a plan phase by phase; within a phase, requests are pipelined.
    pub async fn apply(&self, actions: Vec<Action>, observed: &Observed) -> Applied {
        let mut applied = Applied::default();
        let mut idx: BTreeMap<String, u32> = observed
            .links
            .iter()
            .map(|(n, l)| (n.clone(), l.index))
            .collect();
        for phase in 0..=3u8 {
            let batch: Vec<Action> = actions
                .iter()
                .filter(|a| a.phase() == phase)
                .cloned()
                .collect();
            if batch.is_empty() {
                continue;
            }
            if phase >= 2 {
                // Bridges (and anything else) created by the previous phase.
                if let Ok(m) = self.index_map().await {
                    idx = m;
                }
            }
            let idx_ref = &idx;
            let results: Vec<(Action, Result<()>)> = futures::stream::iter(batch)
                .map(|a| async move {
                    let r = self.exec(&a, idx_ref).await;
                    (a, r)
                })
                .buffer_unordered(PIPELINE)
                .collect()
                .await;
            for (a, r) in results {
                match r {
                    Ok(()) => applied.done.push(a),
                    Err(e) => applied.errors.push((a, e.to_string())),
                }
            }
        }
        applied
    }

    fn index(idx: &BTreeMap<String, u32>, name: &str) -> Result<u32> {
        idx.get(name)
            .copied()
            .ok_or_else(|| Error::Netlink(format!("link {name} does not exist")))
    }

    async fn exec(&self, a: &Action, idx: &BTreeMap<String, u32>) -> Result<()> {
        let links = self.handle.link();
        match a {
            Action::Delete { name } => links
                .del(Self::index(idx, name)?)
                .execute()
                .await
                .map_err(nl),
            Action::CreateBridge { name, mtu } => links
                .add(LinkBridge::new(name).mtu(*mtu).up().build())
                .execute()
                .await
                .map_err(nl),
            Action::CreateVxlan {
                name,
                vni,
                local,
                underlay,
                mtu,
                bridge,
            } => {
                let msg = LinkVxlan::new(name, *vni)
                    .dev(Self::index(idx, underlay)?)
                    .local(*local)
                    .port(VXLAN_PORT)
                    .learning(false)
                    .proxy(true)
                    .mtu(*mtu)
                    .controller(Self::index(idx, bridge)?)
                    .up()
                    .build();
                links.add(msg).execute().await.map_err(nl)
            }
            Action::CreateVlan {
                name,
                parent,
                vlan_id,
                mtu,
                bridge,
            } => {
                let msg = LinkVlan::new(name, Self::index(idx, parent)?, *vlan_id)
                    .mtu(*mtu)
                    .controller(Self::index(idx, bridge)?)
                    .up()
                    .build();
                links.add(msg).execute().await.map_err(nl)
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
            } => {
                let ns = std::fs::File::open(crate::model::netns_path(netns)).map_err(|e| {
                    Error::FailedPrecondition(format!("network namespace {netns}: {e}"))
                })?;
                // The peer is born in the guest's namespace with its final
                // name and MAC: no rename or move afterwards. (Asking for it
                // to be up at birth fails with ENOTCONN on 6.x kernels, so
                // it is brought up from inside the namespace.)
                let peer = LinkMessageBuilder::<LinkUnspec>::new()
                    .name(ifname.clone())
                    .address(mac.to_vec())
                    .mtu(*mtu)
                    .setns_by_fd(ns.as_raw_fd())
                    .append_extra_attribute(LinkAttribute::NumTxQueues(1))
                    .append_extra_attribute(LinkAttribute::NumRxQueues(1))
                    .build();
                let mut b = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                    .name(name.clone())
                    .mtu(*mtu)
                    .controller(Self::index(idx, bridge)?)
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    // One queue pair per end: half the per-device kernel
                    // objects, and a namespace port gains nothing from more.
                    .append_extra_attribute(LinkAttribute::NumTxQueues(1))
                    .append_extra_attribute(LinkAttribute::NumRxQueues(1));
                b = if *up { b.up() } else { b.down() };
                links.add(b.build()).execute().await.map_err(nl)?;
                drop(ns);
                if !peer_up {
                    return Ok(());
                }
                let inside = self.handle_in(&crate::model::netns_path(netns)).await?;
                let peer = inside
                    .link()
                    .get()
                    .match_name(ifname.clone())
                    .execute()
                    .try_next()
                    .await
                    .map_err(nl)?
                    .ok_or_else(|| Error::Netlink(format!("{ifname} vanished from {netns}")))?;
                inside
                    .link()
                    .set(LinkUnspec::new_with_index(peer.header.index).up().build())
                    .execute()
                    .await
                    .map_err(nl)
            }
            Action::CreateTap {
                name,
                bridge,
                mtu,
                up,
            } => {
                create_persistent_tap(name)?;
                let mut b = LinkUnspec::new_with_name(name)
                    .mtu(*mtu)
                    .controller(Self::index(idx, bridge)?);
                b = if *up { b.up() } else { b.down() };
                links.set(b.build()).execute().await.map_err(nl)
            }
            Action::Set {
                name,
                master,
                mtu,
                up,
            } => {
                let mut b = LinkUnspec::new_with_index(Self::index(idx, name)?);
                if let Some(m) = master {
                    b = b.controller(Self::index(idx, m)?);
                }
                if let Some(m) = mtu {
                    b = b.mtu(*m);
                }
                b = match up {
                    Some(true) => b.up(),
                    Some(false) => b.down(),
                    None => b,
                };
                links.set(b.build()).execute().await.map_err(nl)
            }
            Action::AddFdb { dev, mac, dst } => {
                let m = fdb_message(Self::index(idx, dev)?, mac, *dst);
                // Several all-zeros entries (one per remote VTEP) need APPEND.
                let flags = if *mac == [0; 6] {
                    NLM_F_APPEND
                } else {
                    NLM_F_REPLACE
                };
                self.raw(
                    RouteNetlinkMessage::NewNeighbour(m),
                    NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | flags,
                )
                .await
            }
            Action::DelFdb { dev, mac, dst } => {
                let m = fdb_message(Self::index(idx, dev)?, mac, *dst);
                self.handle.neighbours().del(m).execute().await.map_err(nl)
            }
            Action::AddNeigh { dev, ip, mac } => self
                .handle
                .neighbours()
                .add(Self::index(idx, dev)?, *ip)
                .link_layer_address(mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(nl),
            Action::DelNeigh { dev, ip, mac } => {
                let mut m = NeighbourMessage::default();
                m.header.family = if ip.is_ipv4() {
                    AddressFamily::Inet
                } else {
                    AddressFamily::Inet6
                };
                m.header.ifindex = Self::index(idx, dev)?;
                m.attributes.push(NeighbourAttribute::Destination(match ip {
                    IpAddr::V4(v) => NeighbourAddress::Inet(*v),
                    IpAddr::V6(v) => NeighbourAddress::Inet6(*v),
                }));
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
                self.handle.neighbours().del(m).execute().await.map_err(nl)
            }
        }
    }

    async fn raw(&self, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut handle = self.handle.clone();
        let mut resp = handle.request(req).map_err(nl)?;
        while let Some(m) = resp.next().await {
            if let NetlinkPayload::Error(e) = m.payload {
                if e.code.is_some() {
                    return Err(Error::Netlink(e.to_string()));
                }
            }
        }
        Ok(())
    }
}

fn fdb_message(ifindex: u32, mac: &Mac, dst: Ipv4Addr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = ifindex;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    m
}

/// Creates (or finds) a persistent tap device with a vnet header, the way
/// QEMU opens it later (`-netdev tap,ifname=NAME,script=no,vhost=on`).
fn create_persistent_tap(name: &str) -> Result<()> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    const IFF_VNET_HDR: libc::c_short = 0x4000;
    let io = |what: &str| Error::Io {
        context: format!("tap {name}: {what}"),
        source: std::io::Error::last_os_error(),
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| Error::Io {
            context: "/dev/net/tun".into(),
            source: e,
        })?;
    // SAFETY: ifreq is plain data; the name fits (checked by names::tap).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in name.bytes().take(15).enumerate() {
        req.ifr_name[i] = b as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: valid fd and a valid ifreq for TUNSETIFF / TUNSETPERSIST.
    unsafe {
        if libc::ioctl(f.as_raw_fd(), TUNSETIFF as _, &mut req) < 0 {
            return Err(io("TUNSETIFF"));
        }
        if libc::ioctl(f.as_raw_fd(), TUNSETPERSIST as _, 1 as libc::c_ulong) < 0 {
            return Err(io("TUNSETPERSIST"));
        }
    }
    Ok(())
}
