//! The network node's DHCP reservations, pushed in proportion to the
//! change.
//!
//! Every port of a network with DHCP is a reservation on the network node,
//! wherever the port runs: at scale most of what a node is told. They are
//! not part of the synced node state; netd holds them a port at a time
//! (`UpdateDhcpHosts`, see netd's `dhcp_hosts`). Each round reads, in one
//! snapshot of the store, the ports the change feed names since the
//! revision last pushed and sends just those (nothing, when nothing
//! changed: the reply still says whether netd restarted); networks that
//! gained or lost DHCP are sent or cleared whole. Once per [`AUDIT`] the round also
//! streams every reservation's digest from the rows (constant memory) and
//! compares it with the node's: on a mismatch, or when netd restarted (a
//! new boot id), the node gets everything again.

use crate::port_table::KIND;
use sqlx::Row;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use ursa_core::store::{Snapshot, Store};
use ursa_proto::netd::v1 as pb;
use ursa_proto::netd::v1::netd_client::NetdClient;
use ursa_proto::netd::{dhcp_port_digest as port_digest, xor_into as xor};

/// How often the node's digest is checked against the rows.
pub const AUDIT: Duration = Duration::from_secs(60);

/// Ports per update message when sending many.
const CHUNK: usize = 2000;

/// What a node holds, as far as this controller knows.
#[derive(Debug, Clone)]
pub struct Pushed {
    boot: String,
    rev: i64,
    networks: BTreeSet<String>,
    audited: Instant,
}

/// The reservations of the ports on `networks` (all of them, or those
/// named by `ids`), a port at a time in port order, without the service's
/// own ports and without IPv6 addresses (DHCPv4 only). Streamed: memory
/// does not grow with the number of ports.
async fn each_port(
    snap: &mut Snapshot,
    networks: &[String],
    ids: Option<&[String]>,
    mut f: impl FnMut(pb::DhcpPortHosts) -> Option<pb::DhcpHostsUpdate>,
    client: Option<&mut NetdClient<Channel>>,
) -> Result<(), String> {
    use futures_util::TryStreamExt;
    let (col, keys) = match ids {
        Some(ids) => ("p.id", ids),
        None => ("p.network_id", networks),
    };
    let mut client = client;
    for chunk in keys.chunks(500) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT p.id, p.network_id, p.mac_address, a.ip_address FROM net_ports p \
             JOIN net_ip_allocations a ON a.port_id = p.id WHERE {col} IN ({}) \
             AND NOT (p.device_owner >= 'network:' AND p.device_owner < 'network;') \
             AND a.ip_address NOT LIKE '%:%' ORDER BY p.id, a.ip_address",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for k in chunk {
            q = q.bind(k);
        }
        let mut rows = q.fetch(snap.conn());
        let mut cur: Option<pb::DhcpPortHosts> = None;
        let mut pending = Vec::new();
        loop {
            let row = rows.try_next().await.map_err(|e| e.to_string())?;
            let next = match &row {
                Some(r) => {
                    let id: String = r.try_get(0).map_err(|e| e.to_string())?;
                    let ip: String = r.try_get(3).map_err(|e| e.to_string())?;
                    if let Some(c) = cur.as_mut().filter(|c| c.port_id == id) {
                        c.ip_addresses.push(ip);
                        continue;
                    }
                    Some(pb::DhcpPortHosts {
                        port_id: id,
                        network_id: r.try_get(1).map_err(|e| e.to_string())?,
                        mac: r.try_get(2).map_err(|e| e.to_string())?,
                        hostname: format!("host-{}", ip.replace('.', "-")),
                        ip_addresses: vec![ip],
                    })
                }
                None => None,
            };
            if let Some(done) = cur.take() {
                if let Some(u) = f(done) {
                    pending.push(u);
                }
            }
            // Sent between rows: the stream holds the snapshot's
            // connection, the client is another.
            for u in pending.drain(..) {
                if let Some(c) = client.as_deref_mut() {
                    c.update_dhcp_hosts(u)
                        .await
                        .map_err(|s| s.message().to_string())?;
                }
            }
            match next {
                Some(n) => cur = Some(n),
                None => break,
            }
        }
    }
    Ok(())
}

/// Brings the node's reservations for `networks` up to the store. `was`
/// is what the node held after the last push (None: unknown, send all).
pub async fn push(
    store: &Store,
    client: &mut NetdClient<Channel>,
    networks: &BTreeSet<String>,
    was: Option<Pushed>,
) -> Result<Pushed, String> {
    let mut snap = store.snapshot().await.map_err(|e| e.to_string())?;
    let Some(was) = was else {
        return send_all(&mut snap, client, networks).await;
    };
    let touched = snap
        .touched_since(KIND, was.rev)
        .await
        .map_err(|e| e.to_string())?;
    let Some(touched) = touched else {
        return send_all(&mut snap, client, networks).await;
    };
    let gained: Vec<String> = networks.difference(&was.networks).cloned().collect();
    let lost = was.networks.difference(networks).cloned();
    let mut u = pb::DhcpHostsUpdate {
        clear_networks: gained.iter().cloned().chain(lost).collect(),
        ..Default::default()
    };
    // Sent even when empty: the reply's boot id tells a netd that lost
    // what it held (restarted) at the next round.
    let audit = was.audited.elapsed() >= AUDIT;
    // The touched ports as they are now; those not found (deleted, or no
    // longer on a DHCP network) are forgotten.
    let kept: Vec<String> = networks.iter().cloned().collect();
    let mut found = Vec::new();
    each_port(
        &mut snap,
        &kept,
        Some(&touched),
        |p| {
            if networks.contains(&p.network_id) && !gained.contains(&p.network_id) {
                found.push(p);
            }
            None
        },
        None,
    )
    .await?;
    let seen: BTreeSet<&str> = found.iter().map(|p| p.port_id.as_str()).collect();
    let gone: Vec<pb::DhcpPortHosts> = touched
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .map(|id| pb::DhcpPortHosts {
            port_id: id.clone(),
            ..Default::default()
        })
        .collect();
    u.ports = gone.into_iter().chain(found).collect();
    let mut reply = client
        .update_dhcp_hosts(u)
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    if reply.boot_id != was.boot {
        tracing::info!("netd restarted: sending every DHCP reservation again");
        return send_all(&mut snap, client, networks).await;
    }
    if !gained.is_empty() {
        send_networks(&mut snap, client, &gained, false).await?;
        reply = client
            .update_dhcp_hosts(pb::DhcpHostsUpdate::default())
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
    }
    let mut audited = was.audited;
    if audit {
        let mut want = [0u8; 32];
        each_port(
            &mut snap,
            &kept,
            None,
            |p| {
                xor(&mut want, &port_digest(&p));
                None
            },
            None,
        )
        .await?;
        if reply.digest != want {
            tracing::warn!(
                held = reply.ports,
                "the network node's DHCP reservations differ from the rows: sending them all"
            );
            return send_all(&mut snap, client, networks).await;
        }
        audited = Instant::now();
    }
    Ok(Pushed {
        boot: reply.boot_id,
        rev: snap.rev(),
        networks: networks.clone(),
        audited,
    })
}

/// Sends every reservation of `networks` in chunks (the first replacing
/// what the node holds when `replace`); returns the digest sent.
async fn send_networks(
    snap: &mut Snapshot,
    client: &mut NetdClient<Channel>,
    networks: &[String],
    replace: bool,
) -> Result<[u8; 32], String> {
    let mut digest = [0u8; 32];
    let mut batch = Vec::with_capacity(CHUNK);
    let mut first = replace;
    let cut = |batch: &mut Vec<pb::DhcpPortHosts>, first: &mut bool| pb::DhcpHostsUpdate {
        replace: std::mem::take(first),
        clear_networks: Vec::new(),
        ports: std::mem::take(batch),
    };
    each_port(
        snap,
        networks,
        None,
        |p| {
            xor(&mut digest, &port_digest(&p));
            batch.push(p);
            (batch.len() >= CHUNK).then(|| cut(&mut batch, &mut first))
        },
        Some(client),
    )
    .await?;
    if !batch.is_empty() || first {
        client
            .update_dhcp_hosts(cut(&mut batch, &mut first))
            .await
            .map_err(|s| s.message().to_string())?;
    }
    Ok(digest)
}

/// Replaces everything the node holds with the rows of `networks`.
async fn send_all(
    snap: &mut Snapshot,
    client: &mut NetdClient<Channel>,
    networks: &BTreeSet<String>,
) -> Result<Pushed, String> {
    let all: Vec<String> = networks.iter().cloned().collect();
    let want = send_networks(snap, client, &all, true).await?;
    let reply = client
        .update_dhcp_hosts(pb::DhcpHostsUpdate::default())
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    if reply.digest != want {
        // Another pusher (a controller that has not yet seen that it lost
        // the duty) may have written in between; the next audit settles it.
        tracing::warn!("the network node's DHCP reservations moved while they were sent");
    }
    Ok(Pushed {
        boot: reply.boot_id,
        rev: snap.rev(),
        networks: networks.clone(),
        audited: Instant::now(),
    })
}
