//! L3 routers. A router is a network namespace (`/run/netns/urt-…`) with a
//! leg on each network it joins: a veth whose host end sits on the
//! network's bridge (made by the link planner like any port) and whose far
//! end, `qr-…` (internal) or `qg-…` (gateway), carries the router's address
//! there. Inside the namespace netd sets, through netlink, the addresses
//! (floating IPs as /32s on the gateway leg, so the router answers ARP for
//! them), the default route through the external network's gateway, the
//! extra routes (protocol static, so netd knows which routes are its own),
//! IPv4 forwarding, and one nftables table `ip ursa_router`, replaced in one
//! transaction: SNAT of the internal subnets to the gateway address,
//! 1:1 DNAT/SNAT for floating IPs, and the redirect of 169.254.169.254:80
//! from internal legs to the metadata proxy that netd runs inside the
//! namespace on port 9697.
//!
//! Two tenant networks reach each other only through a router that joins
//! both; the router forwards between its legs and NATs only on the gateway.

use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::model::{Router, NETNS_DIR};
use crate::names;
use crate::nft::{self, Batch};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteProtocol};
use rtnetlink::{LinkUnspec, RouteMessageBuilder};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const TABLE: &str = "ursa_router";
pub const METADATA_PORT: u16 = 9697;
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub fn ns_path(router_id: &str) -> PathBuf {
    crate::model::netns_path(&names::router_ns(router_id))
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        context: what.to_string(),
        source: e,
    }
}

/// Creates the named namespace (if missing) the way `ip netns add` does: a
/// thread unshares its network namespace and bind-mounts it under
/// /run/netns, then ends. IPv4 forwarding is turned on inside.
pub fn create_ns(name: &str) -> Result<()> {
    let path = crate::model::netns_path(name);
    if is_netns(&path) {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_DIR).map_err(io(NETNS_DIR))?;
    let p = path.clone();
    std::thread::spawn(move || -> std::io::Result<()> {
        // SAFETY: affects only this short-lived thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // A file left without its mount (the mount namespace it lived in
        // is gone) is reused as the mount point.
        std::fs::File::create(&p)?;
        let src = std::ffi::CString::new("/proc/thread-self/ns/net").expect("no NUL");
        let dst = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("no NUL");
        // SAFETY: valid C strings; a plain bind mount.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_file(&p);
            return Err(e);
        }
        Ok(())
    })
    .join()
    .map_err(|_| Error::Netlink("namespace thread panicked".into()))?
    .map_err(io(name))
}

/// Whether `path` is a mounted network namespace (nsfs), not just a file.
pub fn is_netns(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct, with a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) }) == 0 && st.f_type as i64 == NSFS_MAGIC
}

/// Removes a router namespace; everything inside it (its legs) goes with it
/// once nothing holds it open.
pub fn delete_ns(name: &str) -> Result<()> {
    let path = crate::model::netns_path(name);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: a valid C string; detaching an unused mount.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(name)(e)),
    }
}

/// Runs `f` on a thread inside the namespace at `path`.
pub fn in_ns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let p = path.to_path_buf();
    let shown = path.display().to_string();
    std::thread::spawn(move || -> std::io::Result<T> {
        let ns = std::fs::File::open(&p)?;
        // SAFETY: changes the namespace of this thread only, which ends after `f`.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| Error::Netlink("namespace thread panicked".into()))?
    .map_err(|e| Error::FailedPrecondition(format!("network namespace {shown}: {e}")))
}

/// The nftables table of one router.
pub fn ruleset(r: &Router) -> Batch {
    let (f, t) = ("ip", TABLE);
    let mut b = Batch::default();
    b.replace_table(f, t);
    b.push(nft::base_chain(f, t, "pre", "nat", "prerouting", -100));
    b.push(nft::base_chain(f, t, "out", "nat", "output", -100));
    b.push(nft::base_chain(f, t, "post", "nat", "postrouting", 100));
    b.push(nft::base_chain(f, t, "in", "filter", "input", 0));
    for l in &r.interfaces {
        b.push(nft::rule(
            f,
            t,
            "pre",
            vec![
                nft::eq(nft::meta("iifname"), json!(names::router_leg(&l.port_id))),
                nft::eq(nft::payload("ip", "daddr"), json!(METADATA_IP.to_string())),
                nft::eq(nft::payload("tcp", "dport"), json!(80)),
                json!({"redirect": {"port": METADATA_PORT}}),
            ],
        ));
    }
    if let Some(g) = &r.gateway {
        let qg = names::router_gateway(&g.leg.port_id);
        // Nothing from outside reaches the metadata proxy.
        b.push(nft::rule(
            f,
            t,
            "in",
            vec![
                nft::eq(nft::meta("iifname"), json!(qg)),
                nft::eq(nft::payload("tcp", "dport"), json!(METADATA_PORT)),
                nft::verdict("drop"),
            ],
        ));
        for (fip, fixed) in &r.floating_ips {
            for chain in ["pre", "out"] {
                b.push(nft::rule(
                    f,
                    t,
                    chain,
                    vec![
                        nft::eq(nft::payload("ip", "daddr"), json!(fip.to_string())),
                        json!({"dnat": {"addr": fixed.to_string()}}),
                    ],
                ));
            }
            b.push(nft::rule(
                f,
                t,
                "post",
                vec![
                    nft::eq(nft::meta("oifname"), json!(qg)),
                    nft::eq(nft::payload("ip", "saddr"), json!(fixed.to_string())),
                    json!({"snat": {"addr": fip.to_string()}}),
                ],
            ));
        }
        if g.enable_snat && !r.interfaces.is_empty() {
            let nets: Vec<_> = r
                .interfaces
                .iter()
                .map(|l| nft::prefix(&ipnet::IpNet::V4(l.net())))
                .collect();
            b.push(nft::rule(
                f,
                t,
                "post",
                vec![
                    nft::eq(nft::meta("oifname"), json!(qg)),
                    nft::eq(nft::payload("ip", "saddr"), nft::set(nets)),
                    json!({"snat": {"addr": g.leg.ip.to_string()}}),
                ],
            ));
        }
        if !r.floating_ips.is_empty() {
            // Hairpin: a guest reaching a floating IP from inside is
            // masqueraded to the router's leg, so the reply comes back
            // through the router even when both guests share a network.
            b.push(nft::rule(
                f,
                t,
                "post",
                vec![
                    nft::eq(nft::meta("iifname"), json!("qr-*")),
                    nft::ne(nft::meta("oifname"), json!(qg)),
                    nft::within(nft::ct("status"), json!("dnat")),
                    json!({"masquerade": null}),
                ],
            ));
        }
    }
    b
}

/// Makes the inside of a router's namespace match: legs up with their
/// addresses, netd's routes, the NAT table (only when it changed since
/// `last`, which is updated).
pub async fn configure(
    kernel: &Kernel,
    r: &Router,
    last: &mut BTreeMap<String, String>,
) -> Result<()> {
    let path = ns_path(&r.id);
    let h = kernel.handle_in(&path).await?;
    let nl = |e: rtnetlink::Error| Error::Netlink(e.to_string());
    // Links inside, by name.
    let mut links = BTreeMap::new();
    let mut s = h.link().get().execute();
    while let Some(m) = s.try_next().await.map_err(nl)? {
        let st = crate::kernel::link_state(&m);
        links.insert(st.name.clone(), st);
    }
    if let Some(lo) = links.get("lo") {
        if !lo.up {
            h.link()
                .set(LinkUnspec::new_with_index(lo.index).up().build())
                .execute()
                .await
                .map_err(nl)?;
        }
    }
    for (leg, ifname) in r.legs() {
        let link = links.get(&ifname).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "{ifname} is missing from {}",
                names::router_ns(&r.id)
            ))
        })?;
        if !link.up {
            h.link()
                .set(LinkUnspec::new_with_index(link.index).up().build())
                .execute()
                .await
                .map_err(nl)?;
        }
        let mut want: BTreeSet<(Ipv4Addr, u8)> = BTreeSet::from([(leg.ip, leg.prefix)]);
        if r.gateway
            .as_ref()
            .is_some_and(|g| g.leg.port_id == leg.port_id)
        {
            want.extend(r.floating_ips.iter().map(|(fip, _)| (*fip, 32)));
        }
        let mut have = BTreeMap::new();
        let mut s = h
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute();
        while let Some(m) = s.try_next().await.map_err(nl)? {
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = addr {
                have.insert((ip, m.header.prefix_len), m);
            }
        }
        for (k, m) in &have {
            if !want.contains(k) {
                h.address().del(m.clone()).execute().await.map_err(nl)?;
            }
        }
        for (ip, p) in &want {
            if !have.contains_key(&(*ip, *p)) {
                h.address()
                    .add(link.index, IpAddr::V4(*ip), *p)
                    .execute()
                    .await
                    .map_err(nl)?;
            }
        }
    }
    // Routes: the default through the external gateway, and extra routes.
    let mut want: BTreeSet<(Ipv4Addr, u8, Ipv4Addr)> = BTreeSet::new();
    if let Some(nh) = r.gateway.as_ref().and_then(|g| g.nexthop) {
        want.insert((Ipv4Addr::UNSPECIFIED, 0, nh));
    }
    for (dst, nh) in &r.routes {
        want.insert((dst.network(), dst.prefix_len(), *nh));
    }
    let mut have = BTreeMap::new();
    let mut s = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(m) = s.try_next().await.map_err(nl)? {
        if m.header.table != RouteHeader::RT_TABLE_MAIN
            || m.header.protocol != RouteProtocol::Static
        {
            continue;
        }
        let mut dst = Ipv4Addr::UNSPECIFIED;
        let mut gw = None;
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                _ => {}
            }
        }
        if let Some(gw) = gw {
            have.insert((dst, m.header.destination_prefix_length, gw), m);
        }
    }
    for (k, m) in &have {
        if !want.contains(k) {
            h.route().del(m.clone()).execute().await.map_err(nl)?;
        }
    }
    for (dst, len, nh) in &want {
        if !have.contains_key(&(*dst, *len, *nh)) {
            let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(*dst, *len)
                .gateway(*nh)
                .protocol(RouteProtocol::Static)
                .build();
            h.route().add(msg).execute().await.map_err(|e| {
                Error::FailedPrecondition(format!("route {dst}/{len} via {nh}: {e}"))
            })?;
        }
    }
    let batch = ruleset(r);
    let doc = batch.to_json();
    if last.get(&r.id) != Some(&doc) {
        // Forwarding is on from birth; set again in case someone turned it off.
        in_ns(&path, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        })?;
        batch.apply(Some(&path)).await?;
        last.insert(r.id.clone(), doc);
    }
    Ok(())
}
