//! What a push round recomputes, and what it reads for one node.
//!
//! A round reads the change feed since the revision its last round saw.
//! A port write leaves marks there ([`crate::port_table::PUSH_MARK`]): the
//! node a bound port was or is on, its network, its security groups; a
//! service port (a router's, DHCP's) marks every node, and so does any
//! change of a network, subnet, router, floating IP, security group or
//! rule. A node is recomputed when a mark names it, a network it hosts or
//! a group its state carries (its ports' groups and the groups their rules
//! name as remote: whose members it is told), or when its periodic resync
//! is due. Unbound ports (most of a large cloud's creates) mark nothing and
//! cost a round nothing but the DHCP reservations ([`crate::dhcp_push`]).
//!
//! A recomputed node's state is computed from the ports it names, read by
//! index ([`ports_for`]), not from every bound port of the cloud.

use crate::port_table::PUSH_MARK;
use crate::rows::select_in;
use crate::{st, str_list, Rec, FIP, NETWORK, ROUTER, RULE, SG, SUBNET};
use crate::{OWNER_ROUTER_GW, OWNER_ROUTER_IF};
use sqlx::AnyConnection;
use std::collections::{BTreeSet, HashMap};
use ursa_core::error::Result;
use ursa_core::store::Snapshot;

/// Kinds whose change may alter any node's state.
const ANY_NODE: &[&str] = &[NETWORK, SUBNET, ROUTER, FIP, SG, RULE];

/// What changed since the last round, as far as the nodes are concerned.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    /// Every node is to be recomputed.
    pub all: bool,
    hosts: BTreeSet<String>,
    nets: BTreeSet<String>,
    groups: BTreeSet<String>,
}

impl Marks {
    fn all() -> Marks {
        Marks {
            all: true,
            ..Marks::default()
        }
    }

    /// Whether a node with this last computed summary is named.
    pub fn touch(&self, node: &str, hosted: &BTreeSet<String>, groups: &BTreeSet<String>) -> bool {
        self.all
            || self.hosts.contains(node)
            || !self.nets.is_disjoint(hosted)
            || !self.groups.is_disjoint(groups)
    }
}

/// The marks of the revisions after `since` up to the snapshot's (every
/// node, without a `since` or when the feed no longer reaches back).
pub(crate) async fn marks_since(snap: &mut Snapshot, since: Option<i64>) -> Result<Marks> {
    let Some(since) = since else {
        return Ok(Marks::all());
    };
    let mut kinds = ANY_NODE.to_vec();
    kinds.push(PUSH_MARK);
    let Some(touched) = snap.kinds_touched_since(&kinds, since).await? else {
        return Ok(Marks::all());
    };
    let mut m = Marks::default();
    for (kind, id) in touched {
        if kind != PUSH_MARK {
            return Ok(Marks::all());
        }
        match id.split_once(':') {
            Some(("host", h)) => m.hosts.insert(h.to_string()),
            Some(("net", n)) => m.nets.insert(n.to_string()),
            Some(("group", g)) => m.groups.insert(g.to_string()),
            _ => return Ok(Marks::all()),
        };
    }
    Ok(m)
}

const SERVICE: &str = "(device_owner >= 'network:' AND device_owner < 'network;')";

/// The ports node `node`'s state is computed from: its own; every service
/// port on the network node (routers, DHCP); the bound and service ports
/// of the networks it hosts (its remotes); and the bound and service
/// members of the groups its ports are in or their rules name (its
/// remote members). `subnets` are every subnet (the network node hosts
/// those with DHCP).
pub(crate) async fn ports_for(
    c: &mut AnyConnection,
    node: &str,
    network_node: bool,
    subnets: &[Rec],
) -> Result<Vec<Rec>> {
    let own = crate::rows::select(c, "SELECT body FROM net_ports WHERE host = $1", &[node]).await?;
    let mut nets: BTreeSet<String> = own
        .iter()
        .filter(|p| !st(p, "device_owner").starts_with("network:"))
        .map(|p| st(p, "network_id").to_string())
        .collect();
    let mut ports: HashMap<String, Rec> = HashMap::new();
    if network_node {
        let service = crate::rows::select(
            c,
            &format!("SELECT body FROM net_ports WHERE {SERVICE}"),
            &[],
        )
        .await?;
        for p in &service {
            if matches!(st(p, "device_owner"), OWNER_ROUTER_IF | OWNER_ROUTER_GW) {
                nets.insert(st(p, "network_id").to_string());
            }
        }
        for s in subnets {
            if s["ip_version"] == 4 && s["enable_dhcp"] == true {
                nets.insert(st(s, "network_id").to_string());
            }
        }
        ports.extend(service.into_iter().map(|p| (st(&p, "id").to_string(), p)));
    }
    let nets: Vec<String> = nets.into_iter().collect();
    let neighbours = select_in(
        c,
        &format!("SELECT body FROM net_ports WHERE (host > '' OR {SERVICE}) AND network_id IN (…)"),
        &nets,
    )
    .await?;
    let mut groups: BTreeSet<String> = own
        .iter()
        .filter(|p| p["port_security_enabled"] != false)
        .flat_map(|p| str_list(p.get("security_groups")))
        .collect();
    let local: Vec<String> = groups.iter().cloned().collect();
    for r in crate::sg_table::rules_of(c, &local).await? {
        let g = st(&r, "remote_group_id");
        if !g.is_empty() {
            groups.insert(g.to_string());
        }
    }
    let members = select_in(
        c,
        "SELECT p.body FROM net_port_groups g JOIN net_ports p ON p.id = g.port_id \
         WHERE (p.host > '' OR (p.device_owner >= 'network:' AND p.device_owner < 'network;')) \
         AND g.group_id IN (…)",
        &groups.into_iter().collect::<Vec<_>>(),
    )
    .await?;
    for p in own.into_iter().chain(neighbours).chain(members) {
        ports.insert(st(&p, "id").to_string(), p);
    }
    let mut out: Vec<Rec> = ports.into_values().collect();
    out.sort_by(|a, b| st(a, "id").cmp(st(b, "id")));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port_table;
    use serde_json::json;
    use ursa_core::store::Store;

    fn port(id: &str, host: &str, owner: &str, groups: &[&str]) -> Rec {
        json!({"id": id, "project_id": "p", "network_id": "n1", "mac_address": format!("02:00:00:00:00:{}", &id[id.len() - 2..]),
            "device_id": "", "device_owner": owner, "name": "", "binding:host_id": host,
            "created_at": "2026-12-06T00:00:00Z", "security_groups": groups, "fixed_ips": []})
        .as_object()
        .cloned()
        .unwrap()
    }

    async fn marks_after(store: &Store, since: i64) -> Marks {
        let mut snap = store.snapshot().await.unwrap();
        marks_since(&mut snap, Some(since)).await.unwrap()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// Which nodes a port write names: none for an unbound port; the old
    /// and new node, the network and the groups for a bound one; every
    /// node for a service port, for any other network record, and when
    /// there is no revision to read from.
    #[tokio::test]
    async fn port_writes_name_the_nodes_their_change_reaches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        crate::prepare_store(&store).await.unwrap();
        let write = |ops: Vec<(Rec, bool)>| {
            let store = store.clone();
            async move {
                let mut w = store.begin_write().await.unwrap();
                for (p, fresh) in ops {
                    if fresh {
                        port_table::put_new(&mut w, &p).await.unwrap();
                    } else {
                        port_table::put(&mut w, &p).await.unwrap();
                    }
                }
                w.commit(&[]).await.unwrap()
            }
        };
        let r0 = store.revision().await.unwrap();
        let r1 = write(vec![(port("pt-01", "", "", &["g1"]), true)]).await;
        let m = marks_after(&store, r0).await;
        assert!(
            !m.all && !m.touch("h1", &set(&["n1"]), &set(&["g1"])),
            "{m:?}"
        );

        let r2 = write(vec![(port("pt-01", "h1", "compute:nova", &["g1"]), false)]).await;
        let m = marks_after(&store, r1).await;
        assert!(!m.all, "{m:?}");
        assert!(m.touch("h1", &set(&[]), &set(&[])), "its node");
        assert!(
            m.touch("h2", &set(&["n1"]), &set(&[])),
            "a node hosting its network"
        );
        assert!(
            m.touch("h3", &set(&[]), &set(&["g1"])),
            "a node told its group's members"
        );
        assert!(
            !m.touch("h4", &set(&["n2"]), &set(&["g2"])),
            "a node it does not reach"
        );

        let r3 = write(vec![(port("pt-01", "h2", "compute:nova", &["g2"]), false)]).await;
        let m = marks_after(&store, r2).await;
        assert!(m.touch("h1", &set(&[]), &set(&[])), "the node it left");
        assert!(m.touch("h2", &set(&[]), &set(&[])), "the node it is on");
        assert!(m.touch("h5", &set(&[]), &set(&["g1"])), "its old group");
        assert!(m.touch("h5", &set(&[]), &set(&["g2"])), "its new group");

        let mut w = store.begin_write().await.unwrap();
        port_table::delete(&mut w, "pt-01").await.unwrap();
        let r4 = w.commit(&[]).await.unwrap();
        let m = marks_after(&store, r3).await;
        assert!(
            !m.all && m.touch("h2", &set(&[]), &set(&[])),
            "deleted from h2: {m:?}"
        );

        write(vec![(port("pt-02", "", "network:dhcp", &[]), true)]).await;
        assert!(
            marks_after(&store, r4).await.all,
            "a service port reaches every node"
        );

        let mut snap = store.snapshot().await.unwrap();
        assert!(marks_since(&mut snap, None).await.unwrap().all);
    }
}
