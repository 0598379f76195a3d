//! Carrying the stored network state to the netd nodes.
//!
//! After every stored change (and every 20 s, so that a node that was
//! down or restarted empty is brought back) the pusher computes the
//! desired state (its networks, bound ports, routers and security groups;
//! unbound ports cost nothing) of each node the change reaches
//! ([`crate::push_scope`]: the marks port writes leave in the change feed
//! name them) and sends it with netd's `Sync`
//! call, which changes only what differs: traffic that already flows is
//! not disturbed. A node whose state's digest did not change since its
//! last successful sync is left alone; at the periodic resync it is asked
//! for the digest of the state it holds (`GetStateDigest`) and sent the
//! whole state only when that differs (it restarted, or another call
//! changed its state). The DHCP
//! reservations of every port, most of what the network node is told, go
//! separately and in proportion to the change ([`crate::dhcp_push`]).

use super::{fixed_ips, st, str_list, Rec, OWNER_DHCP, OWNER_ROUTER_GW, OWNER_ROUTER_IF};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tonic::transport::Channel;

use ursa_identity::Identity;
use ursa_proto::netd::v1 as pb;
use ursa_proto::netd::v1::netd_client::NetdClient;

/// The store kind of each node's published health (see [`Pusher::spawn`]).
const HEALTH: &str = "netd-health";

/// How often every node gets its whole state again.
const RESYNC: Duration = Duration::from_secs(20);

/// How long a round waits after the change that woke it, so that the
/// changes that come with it are pushed together.
const GATHER: Duration = Duration::from_millis(25);

/// Connects to netd at `unix:/path` or `http://host:port`.
pub async fn connect(endpoint: &str) -> std::result::Result<NetdClient<Channel>, String> {
    ursa_core::rpc::lazy(endpoint).map(NetdClient::new)
}

/// What a node told us about itself.
#[derive(Debug, Clone, Default)]
pub struct Caps {
    pub vtep: String,
    pub physnets: Vec<String>,
    pub types: Vec<String>,
}

pub struct NetNode {
    pub name: String,
    pub client: NetdClient<Channel>,
}

#[derive(Default)]
struct NodeHealth {
    caps: Option<Caps>,
    /// The digest of the state last sent (not the state: at scale it is as
    /// big as every DHCP host of the node).
    last: Option<[u8; 32]>,
    ok: bool,
    at: Option<Instant>,
    error: String,
    /// What the node could not apply at its last sync, by kind.
    failures: Failures,
    /// The DHCP reservations it holds (None: unknown, send them all).
    dhcp: Option<crate::dhcp_push::Pushed>,
    /// The networks and security groups its last computed state carries
    /// (which changes it is recomputed for, see [`crate::push_scope`]).
    hosted: BTreeSet<String>,
    groups: BTreeSet<String>,
}

/// A node's sync errors sorted by what they are about, so that the API can
/// show each failure on the resource it concerns (a router's `status`, a
/// port's `binding:vif_type`), as Neutron does.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Failures {
    /// router id -> why it is not (wholly) applied
    routers: BTreeMap<String, String>,
    /// why the node's security groups are not applied
    security_groups: Option<String>,
    /// anything else (links, namespaces): the node as a whole is unwell
    other: Vec<String>,
}

impl Failures {
    /// Sorts netd's report lines: "router ID (NS): …", "security groups: …",
    /// and the rest.
    fn from_errors(errors: &[String]) -> Failures {
        let mut f = Failures::default();
        for e in errors {
            if let Some(rest) = e.strip_prefix("router ") {
                let id = rest.split([' ', ':']).next().unwrap_or("");
                if !id.is_empty() {
                    f.routers.entry(id.to_string()).or_insert_with(|| e.clone());
                    continue;
                }
            }
            if e.starts_with("security groups:") {
                f.security_groups.get_or_insert_with(|| e.clone());
                continue;
            }
            f.other.push(e.clone());
        }
        f
    }

    /// Why things failed, without which router each line is about: one
    /// cause (e.g. nft missing) behind many routers is one cause.
    fn causes(&self) -> BTreeSet<String> {
        let routers = self
            .routers
            .values()
            .map(|e| e.split_once("): ").map_or(e.as_str(), |(_, c)| c));
        let sg = self
            .security_groups
            .iter()
            .map(|e| e.trim_start_matches("security groups: "));
        routers
            .chain(sg)
            .chain(self.other.iter().map(String::as_str))
            .map(str::to_string)
            .collect()
    }
}

struct Inner {
    nodes: Vec<NetNode>,
    kick: Notify,
    health: Mutex<HashMap<String, NodeHealth>>,
    /// The store revision the last round's states were computed at.
    seen: Mutex<Option<i64>>,
    /// Bumped after each round; tests and callers may wait on it.
    rounds: tokio::sync::watch::Sender<u64>,
}

/// The handle the service kicks; cheap to clone.
#[derive(Clone)]
pub struct Pusher(Arc<Inner>);

impl Pusher {
    pub fn new(nodes: Vec<NetNode>) -> Pusher {
        Pusher(Arc::new(Inner {
            nodes,
            kick: Notify::new(),
            health: Mutex::new(HashMap::new()),
            seen: Mutex::new(None),
            rounds: tokio::sync::watch::channel(0).0,
        }))
    }

    pub fn kick(&self) {
        self.0.kick.notify_one();
    }

    pub fn node_names(&self) -> Vec<String> {
        self.0.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The node that hosts DHCP and routers.
    pub fn network_node(&self) -> Option<&str> {
        self.0.nodes.first().map(|n| n.name.as_str())
    }

    /// Whether the node's last sync worked for its links (None: unknown
    /// node or not yet). Router and security-group failures do not count
    /// here: they are shown on those resources.
    pub fn node_ok(&self, name: &str) -> Option<bool> {
        let h = self.0.health.lock().expect("health");
        h.get(name)
            .filter(|x| x.at.is_some())
            .map(|x| x.failures.other.is_empty())
    }

    /// Why a router could not be applied on some node, if it could not.
    pub fn router_error(&self, id: &str) -> Option<String> {
        let h = self.0.health.lock().expect("health");
        h.values().find_map(|x| x.failures.routers.get(id).cloned())
    }

    /// Why the node's security groups could not be applied, if they could not.
    pub fn security_group_error(&self, node: &str) -> Option<String> {
        let h = self.0.health.lock().expect("health");
        h.get(node).and_then(|x| x.failures.security_groups.clone())
    }

    /// (node, alive, last error) for the agents list.
    pub fn status(&self) -> Vec<(String, bool, String)> {
        let h = self.0.health.lock().expect("health");
        self.0
            .nodes
            .iter()
            .map(|n| {
                let x = h.get(&n.name);
                (
                    n.name.clone(),
                    x.is_some_and(|x| x.ok),
                    x.map(|x| x.error.clone()).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Waits until a push round that started after this call has ended.
    pub async fn settle(&self) {
        let mut rx = self.0.rounds.subscribe();
        let start = *rx.borrow_and_update();
        self.kick();
        while *rx.borrow_and_update() < start + 2 {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Runs the push loop for as long as the process lives, while this
    /// controller holds the push duty (with several controllers, one
    /// pushes; the others take over when its lease runs out).
    pub fn spawn(
        &self,
        identity: Identity,
        duty: ursa_core::duty::Duty,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            if me.0.nodes.is_empty() {
                return;
            }
            loop {
                if !duty.held() {
                    // Another controller pushes: show what it found.
                    me.adopt_published(&identity);
                    let _ = tokio::time::timeout(ursa_core::duty::RENEW, duty.wait_held()).await;
                    me.0.rounds.send_modify(|r| *r += 1);
                    continue;
                }
                me.round(&identity).await;
                me.publish(&identity).await;
                me.0.rounds.send_modify(|r| *r += 1);
                if tokio::time::timeout(Duration::from_secs(5), me.0.kick.notified())
                    .await
                    .is_ok()
                {
                    // A burst of changes (many creates at once) is one
                    // round, not one per change.
                    tokio::time::sleep(GATHER).await;
                }
            }
        })
    }

    /// The pushing controller's view of a node, as the other controllers
    /// read it (a document per node, written only when it changes).
    fn published(&self, name: &str) -> Option<Value> {
        let h = self.0.health.lock().expect("health");
        let x = h.get(name).filter(|x| x.at.is_some())?;
        Some(serde_json::json!({"ok": x.ok, "error": x.error, "failures": x.failures}))
    }

    /// Writes each node's health where the other controllers read it.
    async fn publish(&self, identity: &Identity) {
        for n in &self.0.nodes {
            let Some(doc) = self.published(&n.name) else {
                continue;
            };
            let same = identity.model().doc(HEALTH, &n.name) == Some(&doc);
            if same {
                continue;
            }
            let name = n.name.clone();
            let r = identity
                .change(|_| {
                    Ok((
                        vec![ursa_core::store::Op::put(HEALTH, &name, "", &name, &doc)],
                        (),
                    ))
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(node = %n.name, error = %e, "could not publish the node's health");
            }
        }
    }

    /// Takes the pushing controller's published view of every node, and
    /// forgets what this one last sent (stale once it takes over).
    fn adopt_published(&self, identity: &Identity) {
        let m = identity.model();
        *self.0.seen.lock().expect("seen") = None;
        let mut h = self.0.health.lock().expect("health");
        for n in &self.0.nodes {
            let e = h.entry(n.name.clone()).or_default();
            e.last = None;
            e.caps = None;
            e.dhcp = None;
            match m.doc(HEALTH, &n.name) {
                Some(d) => {
                    e.ok = d["ok"] == true;
                    e.error = d["error"].as_str().unwrap_or("").to_string();
                    e.failures = serde_json::from_value(d["failures"].clone()).unwrap_or_default();
                    e.at = Some(Instant::now());
                }
                None => e.at = None,
            }
        }
    }

    async fn round(&self, identity: &Identity) {
        let mut caps_changed = false;
        for n in &self.0.nodes {
            let known = self
                .0
                .health
                .lock()
                .expect("health")
                .get(&n.name)
                .and_then(|h| h.caps.clone());
            if known.is_none() {
                let r = n
                    .client
                    .clone()
                    .get_capabilities(pb::CapabilitiesRequest {})
                    .await;
                let mut h = self.0.health.lock().expect("health");
                let e = h.entry(n.name.clone()).or_default();
                match r {
                    Ok(c) => {
                        let c = c.into_inner();
                        caps_changed = true;
                        e.caps = Some(Caps {
                            vtep: c.vtep_address,
                            physnets: c.physical_networks,
                            types: c.segmentation_types,
                        });
                    }
                    Err(s) => {
                        e.ok = false;
                        e.at = Some(Instant::now());
                        e.error = format!("netd {}: {}", n.name, s.message());
                        e.failures.other = vec![e.error.clone()];
                    }
                }
            }
        }
        let caps: BTreeMap<String, Caps> = {
            let h = self.0.health.lock().expect("health");
            self.0
                .nodes
                .iter()
                .filter_map(|n| {
                    h.get(&n.name)
                        .and_then(|x| x.caps.clone())
                        .map(|c| (n.name.clone(), c))
                })
                .collect()
        };
        if caps.is_empty() {
            return;
        }
        let (states, dhcp_networks, rev) =
            match self.plan_round(identity, &caps, caps_changed).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the state to push; trying again");
                    return;
                }
            };
        for (i, state) in states {
            let n = &self.0.nodes[i];
            let want = digest(&state);
            let (same, due) = {
                let h = self.0.health.lock().expect("health");
                h.get(&n.name).map_or((false, true), |x| {
                    (
                        x.ok && x.last == Some(want),
                        x.at.is_none_or(|t| t.elapsed() >= RESYNC),
                    )
                })
            };
            if same && !due {
                continue;
            }
            if same && self.holds(n, &want).await {
                // The periodic resync: the node still holds this state
                // (netd repairs the kernel against it by itself).
                let mut h = self.0.health.lock().expect("health");
                h.entry(n.name.clone()).or_default().at = Some(Instant::now());
                continue;
            }
            let r = n.client.clone().sync(state.clone()).await;
            let mut h = self.0.health.lock().expect("health");
            let e = h.entry(n.name.clone()).or_default();
            e.at = Some(Instant::now());
            match r {
                Ok(rep) => {
                    let rep = rep.into_inner();
                    e.ok = rep.errors.is_empty();
                    e.error = rep.errors.join("; ");
                    let failures = Failures::from_errors(&rep.errors);
                    // Said once per cause: a failure that lasts is shown on
                    // its resources (router status, port binding), not
                    // logged again at every retry or for every router.
                    let (was, now) = (e.failures.causes(), failures.causes());
                    for c in now.difference(&was) {
                        tracing::warn!(node = %n.name, cause = %c, "netd could not apply everything; the API shows what is affected");
                    }
                    for c in was.difference(&now) {
                        tracing::info!(node = %n.name, cause = %c, "netd applies this again");
                    }
                    tracing::debug!(node = %n.name, errors = ?rep.errors, "netd sync errors");
                    e.failures = failures;
                    if rep.errors.is_empty() && rep.added + rep.changed + rep.removed > 0 {
                        tracing::info!(node = %n.name, added = rep.added, changed = rep.changed, removed = rep.removed, "netd synced");
                    }
                    e.last = Some(want);
                }
                Err(s) => {
                    let failures = Failures {
                        other: vec![format!("netd {}: {}", n.name, s.message())],
                        ..Failures::default()
                    };
                    if failures != e.failures {
                        tracing::warn!(node = %n.name, error = %s.message(), "netd sync failed");
                        e.failures = failures;
                    }
                    e.ok = false;
                    e.error = s.message().to_string();
                    if s.code() == tonic::Code::Unavailable {
                        e.caps = None; // ask again: it may have restarted elsewhere
                    }
                }
            }
        }
        *self.0.seen.lock().expect("seen") = Some(rev);
        if let Some(node) = self.network_node().filter(|n| caps.contains_key(*n)) {
            self.push_dhcp(identity, node, &dhcp_networks).await;
        }
    }

    /// The states of the nodes this round recomputes (see
    /// [`crate::push_scope`]; every node with `all`), the networks whose
    /// DHCP reservations the network node holds, and the revision they
    /// were read at.
    async fn plan_round(
        &self,
        identity: &Identity,
        caps: &BTreeMap<String, Caps>,
        all: bool,
    ) -> ursa_core::error::Result<(Vec<(usize, pb::NodeState)>, BTreeSet<String>, i64)> {
        use crate::push_scope::{marks_since, ports_for};
        let started = Instant::now();
        let mut snap = identity.store().snapshot().await?;
        let since = if all {
            None
        } else {
            *self.0.seen.lock().expect("seen")
        };
        let marks = marks_since(&mut snap, since).await?;
        let mut rows = read_common(snap.conn()).await?;
        let network_node = self.network_node().unwrap_or("");
        let dhcp_networks = Plan::new(&rows, &[], network_node, caps).dhcp_networks();
        let mut states = Vec::new();
        for (i, n) in self.0.nodes.iter().enumerate() {
            if !caps.contains_key(&n.name) {
                continue;
            }
            let needed = {
                let h = self.0.health.lock().expect("health");
                h.get(&n.name).is_none_or(|x| {
                    !x.ok
                        || x.last.is_none()
                        || x.at.is_none_or(|t| t.elapsed() >= RESYNC)
                        || marks.touch(&n.name, &x.hosted, &x.groups)
                })
            };
            if !needed {
                continue;
            }
            let ports =
                ports_for(snap.conn(), &n.name, n.name == network_node, &rows.subnets).await?;
            read_groups(snap.conn(), &ports, &mut rows).await?;
            let state = Plan::new(&rows, &ports, network_node, caps).node_state(&n.name);
            {
                let mut h = self.0.health.lock().expect("health");
                let e = h.entry(n.name.clone()).or_default();
                e.hosted = state.networks.iter().map(|x| x.id.clone()).collect();
                e.groups = state.security_groups.iter().map(|x| x.id.clone()).collect();
            }
            states.push((i, state));
        }
        tracing::debug!(
            rev = snap.rev(),
            every_node = marks.all,
            recomputed = states.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "push round planned"
        );
        Ok((states, dhcp_networks, snap.rev()))
    }

    /// Whether the node says the state it holds is the one with `digest`
    /// (given by our last `Sync`, and nothing changed it since).
    async fn holds(&self, n: &NetNode, digest: &[u8; 32]) -> bool {
        n.client
            .clone()
            .get_state_digest(pb::StateDigestRequest {})
            .await
            .is_ok_and(|r| r.into_inner().digest == digest)
    }

    /// Brings the network node's DHCP reservations up to the rows.
    async fn push_dhcp(&self, identity: &Identity, node: &str, networks: &BTreeSet<String>) {
        let Some(n) = self.0.nodes.iter().find(|n| n.name == node) else {
            return;
        };
        let was = {
            let h = self.0.health.lock().expect("health");
            h.get(node).and_then(|x| x.dhcp.clone())
        };
        let r =
            crate::dhcp_push::push(identity.store(), &mut n.client.clone(), networks, was).await;
        let mut h = self.0.health.lock().expect("health");
        let e = h.entry(node.to_string()).or_default();
        match r {
            Ok(p) => e.dhcp = Some(p),
            Err(error) => {
                if e.dhcp.is_some() {
                    tracing::warn!(node, %error, "could not push the DHCP reservations; sending them all next round");
                }
                e.dhcp = None;
            }
        }
    }
}

/// What every node's state is computed with: the floating IPs routers
/// carry, every router, network and subnet (groups and rules come per
/// node, [`read_groups`]).
async fn read_common(c: &mut sqlx::AnyConnection) -> ursa_core::error::Result<RoundRows> {
    let mut out = RoundRows::default();
    let fips = crate::rows::select(
        c,
        "SELECT body FROM net_floating_ips WHERE router_id > ''",
        &[],
    )
    .await?;
    out.routers = crate::rows::ROUTERS.all(c).await?;
    out.networks = crate::rows::NETWORKS
        .all(c)
        .await?
        .into_iter()
        .map(|n| (st(&n, "id").to_string(), n))
        .collect();
    out.subnets = crate::rows::SUBNETS.all(c).await?;
    for f in fips {
        out.fips
            .entry(st(&f, "router_id").to_string())
            .or_default()
            .push(f);
    }
    Ok(out)
}

/// The security groups `ports` are in or their rules name, and their
/// rules, into `rows` (replacing the previous node's).
async fn read_groups(
    c: &mut sqlx::AnyConnection,
    ports: &[Rec],
    rows: &mut RoundRows,
) -> ursa_core::error::Result<()> {
    use crate::sg_table;
    let mut ids: BTreeSet<String> = ports
        .iter()
        .flat_map(|p| str_list(p.get("security_groups")))
        .collect();
    let mut rules = sg_table::rules_of(c, &ids.iter().cloned().collect::<Vec<_>>()).await?;
    let remote: Vec<String> = rules
        .iter()
        .map(|r| st(r, "remote_group_id").to_string())
        .filter(|g| !g.is_empty() && !ids.contains(g))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    rules.extend(sg_table::rules_of(c, &remote).await?);
    ids.extend(remote);
    let exist = sg_table::groups(c, &ids.into_iter().collect::<Vec<_>>()).await?;
    rows.groups = exist.into_keys().collect();
    rows.rules.clear();
    for r in rules {
        rows.rules
            .entry(st(&r, "security_group_id").to_string())
            .or_default()
            .push(r);
    }
    Ok(())
}

/// What a round reads from the tables besides the ports.
#[derive(Default)]
struct RoundRows {
    /// the security groups that exist among those needed
    groups: BTreeSet<String>,
    /// group id → its rules
    rules: HashMap<String, Vec<Rec>>,
    /// router id → the floating IPs through it
    fips: HashMap<String, Vec<Rec>>,
    /// every router (the network node hosts them all)
    routers: Vec<Rec>,
    /// every network, by id, and every subnet (by creation)
    networks: HashMap<String, Rec>,
    subnets: Vec<Rec>,
}

/// A node state's digest: SHA-256 of its encoding (its lists are sorted,
/// so one state has one encoding).
fn digest(s: &pb::NodeState) -> [u8; 32] {
    use prost::Message;
    use sha2::Digest;
    sha2::Sha256::digest(s.encode_to_vec()).into()
}

/// The bound node of a port ("" when unbound).
fn host(p: &Rec) -> &str {
    st(p, "binding:host_id")
}

fn is_service_port(p: &Rec) -> bool {
    st(p, "device_owner").starts_with("network:")
}

fn v4(ip: &str) -> bool {
    ip.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Every node's desired state, computed from one view of the records.
struct Plan<'a> {
    ports: &'a [Rec],
    network_node: &'a str,
    caps: &'a BTreeMap<String, Caps>,
    /// node → networks it hosts
    hosted: BTreeMap<String, BTreeSet<String>>,
    subnets: HashMap<String, &'a Rec>,
    /// A security group's member ports (id, address), once a round.
    members: HashMap<String, Vec<(&'a str, String)>>,
    rows: &'a RoundRows,
}

impl<'a> Plan<'a> {
    fn new(
        rows: &'a RoundRows,
        ports: &'a [Rec],
        network_node: &'a str,
        caps: &'a BTreeMap<String, Caps>,
    ) -> Plan<'a> {
        let subnets: HashMap<String, &Rec> = rows
            .subnets
            .iter()
            .map(|s| (st(s, "id").to_string(), s))
            .collect();
        let mut members: HashMap<String, Vec<(&str, String)>> = HashMap::new();
        for p in ports {
            for g in str_list(p.get("security_groups")) {
                let e = members.entry(g).or_default();
                e.extend(fixed_ips(p).into_iter().map(|(_, ip)| (st(p, "id"), ip)));
            }
        }
        let mut p = Plan {
            ports,
            network_node,
            caps,
            hosted: BTreeMap::new(),
            subnets,
            members,
            rows,
        };
        for node in caps.keys() {
            let mut nets = BTreeSet::new();
            for port in ports {
                if host(port) == node && !is_service_port(port) {
                    nets.insert(st(port, "network_id").to_string());
                }
            }
            if node == network_node {
                for s in &rows.subnets {
                    if s["ip_version"] == 4 && s["enable_dhcp"] == true {
                        nets.insert(st(s, "network_id").to_string());
                    }
                }
                for port in ports {
                    let o = st(port, "device_owner");
                    if o == OWNER_ROUTER_IF || o == OWNER_ROUTER_GW {
                        nets.insert(st(port, "network_id").to_string());
                    }
                }
            }
            nets.retain(|n| p.can_host(node, n));
            p.hosted.insert(node.clone(), nets);
        }
        p
    }

    /// A security group's rules.
    fn rules_of(&self, group: &str) -> impl Iterator<Item = &Rec> + '_ {
        self.rows.rules.get(group).into_iter().flatten()
    }

    fn network(&self, id: &str) -> Option<&'a Rec> {
        self.rows.networks.get(id)
    }

    fn can_host(&self, node: &str, net: &str) -> bool {
        let Some(n) = self.network(net) else {
            return false;
        };
        let Some(c) = self.caps.get(node) else {
            return false;
        };
        match st(n, "provider:network_type") {
            "vxlan" => c.types.iter().any(|t| t == "vxlan"),
            "vlan" => {
                c.types.iter().any(|t| t == "vlan")
                    && c.physnets
                        .iter()
                        .any(|p| p == st(n, "provider:physical_network"))
            }
            "flat" => c
                .physnets
                .iter()
                .any(|p| p == st(n, "provider:physical_network")),
            _ => false,
        }
    }

    /// The networks whose reservations the network node holds: those it
    /// hosts with an IPv4 subnet that has DHCP on.
    fn dhcp_networks(&self) -> BTreeSet<String> {
        self.rows
            .subnets
            .iter()
            .filter(|s| s["ip_version"] == 4 && s["enable_dhcp"] == true)
            .map(|s| st(s, "network_id").to_string())
            .filter(|n| self.hosts(self.network_node, n))
            .collect()
    }

    fn hosts(&self, node: &str, net: &str) -> bool {
        self.hosted.get(node).is_some_and(|s| s.contains(net))
    }

    /// "10.0.0.5/24" for a fixed IP.
    fn with_prefix(&self, subnet: &str, ip: &str) -> Option<String> {
        let s = self.subnets.get(subnet)?;
        let prefix = st(s, "cidr").split_once('/')?.1;
        Some(format!("{ip}/{prefix}"))
    }

    fn dhcp_ip(&self, net: &str, subnet: &str) -> String {
        self.ports
            .iter()
            .filter(|p| st(p, "network_id") == net && st(p, "device_owner") == OWNER_DHCP)
            .flat_map(fixed_ips)
            .find(|(s, _)| s == subnet)
            .map(|(_, ip)| ip)
            .unwrap_or_default()
    }

    fn node_state(&self, node: &str) -> pb::NodeState {
        let serves_dhcp = node == self.network_node;
        let hosted = self.hosted.get(node).cloned().unwrap_or_default();
        let mut networks = Vec::new();
        let mut remotes = Vec::new();
        for net in &hosted {
            let Some(n) = self.network(net) else { continue };
            let segment = match st(n, "provider:network_type") {
                "vxlan" => pb::network::Segment::Vxlan(pb::Vxlan {
                    vni: n["provider:segmentation_id"].as_u64().unwrap_or(0) as u32,
                }),
                "vlan" => pb::network::Segment::Vlan(pb::Vlan {
                    physical_network: st(n, "provider:physical_network").into(),
                    vlan_id: n["provider:segmentation_id"].as_u64().unwrap_or(0) as u32,
                }),
                _ => pb::network::Segment::Flat(pb::Flat {
                    physical_network: st(n, "provider:physical_network").into(),
                }),
            };
            let subnets = self
                .rows
                .subnets
                .iter()
                .filter(|s| st(s, "network_id") == net && s["ip_version"] == 4)
                .map(|s| pb::Subnet {
                    cidr: st(s, "cidr").into(),
                    gateway_ip: st(s, "gateway_ip").into(),
                    dns_nameservers: str_list(s.get("dns_nameservers")),
                    host_routes: s
                        .get("host_routes")
                        .and_then(|v| v.as_array())
                        .map(|a| {
                            a.iter()
                                .map(|r| pb::HostRoute {
                                    destination: r["destination"].as_str().unwrap_or("").into(),
                                    nexthop: r["nexthop"].as_str().unwrap_or("").into(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    enable_dhcp: serves_dhcp && s["enable_dhcp"] == true,
                    dhcp_server_ip: self.dhcp_ip(net, st(s, "id")),
                    lease_seconds: 0,
                })
                .collect();
            networks.push(pb::Network {
                id: net.clone(),
                segment: Some(segment),
                mtu: n["mtu"].as_u64().unwrap_or(0) as u32,
                subnets,
                dns_domain: st(n, "dns_domain").trim_end_matches('.').into(),
                // Held by netd a port at a time (crate::dhcp_push).
                dhcp_hosts: Vec::new(),
            });
            if st(n, "provider:network_type") == "vxlan" {
                let mut vteps = BTreeSet::new();
                let mut ports = Vec::new();
                for (other, c) in self.caps {
                    if other == node || !self.hosts(other, net) || c.vtep.is_empty() {
                        continue;
                    }
                    vteps.insert(c.vtep.clone());
                    for p in self.ports.iter().filter(|p| st(p, "network_id") == net) {
                        let lives_there = if is_service_port(p) {
                            other == self.network_node
                                && matches!(st(p, "device_owner"), OWNER_ROUTER_IF | OWNER_DHCP)
                        } else {
                            host(p) == other
                        };
                        if lives_there {
                            ports.push(pb::RemotePort {
                                mac: st(p, "mac_address").into(),
                                ips: fixed_ips(p)
                                    .into_iter()
                                    .map(|(_, ip)| ip)
                                    .filter(|ip| v4(ip))
                                    .collect(),
                                vtep: c.vtep.clone(),
                                port_id: st(p, "id").into(),
                                device_id: st(p, "device_id").into(),
                                project_id: st(p, "project_id").into(),
                            });
                        }
                    }
                }
                ports.sort_by(|a, b| a.mac.cmp(&b.mac));
                remotes.push(pb::NetworkRemotes {
                    network_id: net.clone(),
                    vteps: vteps.into_iter().collect(),
                    ports,
                });
            }
        }
        // Ports plugged on this node.
        let mut ports = Vec::new();
        let mut groups: BTreeSet<String> = BTreeSet::new();
        let mut local_ports: BTreeSet<String> = BTreeSet::new();
        for p in self.ports.iter() {
            if host(p) != node || is_service_port(p) || !hosted.contains(st(p, "network_id")) {
                continue;
            }
            let profile = p.get("binding:profile").and_then(|v| v.as_object());
            let kind = match profile
                .and_then(|o| o.get("ursa_netns"))
                .and_then(|v| v.as_str())
            {
                Some(ns) => pb::port::Kind::Veth(pb::Veth {
                    netns: ns.into(),
                    ifname: profile
                        .and_then(|o| o.get("ifname"))
                        .and_then(|v| v.as_str())
                        .unwrap_or("eth0")
                        .into(),
                    up: profile
                        .and_then(|o| o.get("up"))
                        .and_then(|v| v.as_bool())
                        .unwrap_or(false),
                }),
                None => pb::port::Kind::Tap(pb::Tap {}),
            };
            let secure = p["port_security_enabled"] != false;
            let sgs = str_list(p.get("security_groups"));
            if secure {
                groups.extend(sgs.iter().cloned());
            }
            local_ports.insert(st(p, "id").to_string());
            let ips = fixed_ips(p);
            ports.push(pb::Port {
                id: st(p, "id").into(),
                network_id: st(p, "network_id").into(),
                mac: st(p, "mac_address").into(),
                fixed_ips: ips
                    .iter()
                    .filter_map(|(s, ip)| self.with_prefix(s, ip))
                    .collect(),
                kind: Some(kind),
                admin_down: p["admin_state_up"] == false,
                hostname: ips
                    .iter()
                    .find(|(_, ip)| v4(ip))
                    .map(|(_, ip)| format!("host-{}", ip.replace('.', "-")))
                    .unwrap_or_default(),
                port_security: secure,
                security_groups: if secure { sgs } else { Vec::new() },
                allowed_address_pairs: p
                    .get("allowed_address_pairs")
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .map(|x| pb::AddressPair {
                                ip_address: x["ip_address"].as_str().unwrap_or("").into(),
                                mac_address: x["mac_address"].as_str().unwrap_or("").into(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                device_id: st(p, "device_id").into(),
                project_id: st(p, "project_id").into(),
            });
        }
        ports.sort_by(|a, b| a.id.cmp(&b.id));
        // Groups named by remote_group_id need their members too.
        let referenced: BTreeSet<String> = groups
            .iter()
            .flat_map(|g| self.rules_of(g))
            .filter_map(|r| {
                r.get("remote_group_id")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .collect();
        groups.extend(referenced);
        let security_groups = groups
            .iter()
            .filter(|g| self.rows.groups.contains(*g))
            .map(|g| {
                let mut rules: Vec<pb::SecurityGroupRule> = self
                    .rules_of(g)
                    .map(|r| pb::SecurityGroupRule {
                        id: st(r, "id").into(),
                        direction: st(r, "direction").into(),
                        ethertype: st(r, "ethertype").into(),
                        protocol: match r.get("protocol") {
                            Some(Value::String(s)) => s.clone(),
                            Some(Value::Number(n)) => n.to_string(),
                            _ => String::new(),
                        },
                        port_range_min: r["port_range_min"].as_u64().unwrap_or(0) as u32,
                        port_range_max: r["port_range_max"].as_u64().unwrap_or(0) as u32,
                        remote_ip_prefix: st(r, "remote_ip_prefix").into(),
                        remote_group_id: st(r, "remote_group_id").into(),
                    })
                    .collect();
                rules.sort_by(|a, b| a.id.cmp(&b.id));
                let mut remote_members: Vec<String> = self
                    .members
                    .get(g)
                    .into_iter()
                    .flatten()
                    .filter(|(port, _)| !local_ports.contains(*port))
                    .map(|(_, ip)| ip.clone())
                    .collect();
                remote_members.sort();
                remote_members.dedup();
                pb::SecurityGroup {
                    id: g.clone(),
                    rules,
                    remote_members,
                }
            })
            .collect();
        let routers = if node == self.network_node {
            self.routers(&hosted)
        } else {
            Vec::new()
        };
        pb::NodeState {
            networks,
            ports,
            remotes,
            dry_run: false,
            routers,
            security_groups,
        }
    }

    fn routers(&self, hosted: &BTreeSet<String>) -> Vec<pb::Router> {
        let mut out = Vec::new();
        for r in &self.rows.routers {
            let rid = st(r, "id");
            let mut interfaces = Vec::new();
            let mut gateway = None;
            for p in self.ports.iter().filter(|p| st(p, "device_id") == rid) {
                if !hosted.contains(st(p, "network_id")) {
                    continue;
                }
                let Some((sid, ip)) = fixed_ips(p).into_iter().find(|(_, ip)| v4(ip)) else {
                    continue;
                };
                let Some(ip_address) = self.with_prefix(&sid, &ip) else {
                    continue;
                };
                match st(p, "device_owner") {
                    OWNER_ROUTER_IF => interfaces.push(pb::RouterInterface {
                        port_id: st(p, "id").into(),
                        network_id: st(p, "network_id").into(),
                        mac: st(p, "mac_address").into(),
                        ip_address,
                    }),
                    OWNER_ROUTER_GW => {
                        let snat = r
                            .get("external_gateway_info")
                            .and_then(|g| g.get("enable_snat"))
                            .and_then(|v| v.as_bool())
                            .unwrap_or(true);
                        gateway = Some(pb::RouterGateway {
                            port_id: st(p, "id").into(),
                            network_id: st(p, "network_id").into(),
                            mac: st(p, "mac_address").into(),
                            ip_address,
                            nexthop: self
                                .subnets
                                .get(&sid)
                                .map(|s| st(s, "gateway_ip").to_string())
                                .unwrap_or_default(),
                            enable_snat: snat,
                        });
                    }
                    _ => {}
                }
            }
            interfaces.sort_by(|a, b| a.port_id.cmp(&b.port_id));
            let routes = r
                .get("routes")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter(|x| x["destination"].as_str().is_some_and(|d| !d.contains(':')))
                        .map(|x| pb::HostRoute {
                            destination: x["destination"].as_str().unwrap_or("").into(),
                            nexthop: x["nexthop"].as_str().unwrap_or("").into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut floating_ips: Vec<pb::FloatingIp> = if gateway.is_some() {
                self.rows
                    .fips
                    .get(rid)
                    .into_iter()
                    .flatten()
                    .filter(|f| !st(f, "fixed_ip_address").is_empty())
                    .map(|f| pb::FloatingIp {
                        floating_ip: st(f, "floating_ip_address").into(),
                        fixed_ip: st(f, "fixed_ip_address").into(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            floating_ips.sort_by(|a, b| a.floating_ip.cmp(&b.floating_ip));
            out.push(pb::Router {
                id: rid.into(),
                interfaces,
                gateway,
                routes,
                floating_ips,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}
