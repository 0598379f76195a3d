//! The network service (Neutron v2.0): networks with provider segments,
//! subnets and their addresses, ports, routers, floating IPs, security
//! groups, quotas and tags; every change is stored first, then pushed to
//! the netd of each node as that node's whole desired state ([`push`]).
//!
//! Records are documents (kinds `network`, `subnet`, `port`, `router`,
//! `floatingip`, `security_group`, `security_group_rule`,
//! `network_quota`) in the control plane's store, written through its
//! single writer, so an address is allocated, a segment id taken or a
//! quota counted under the same lock that stores the result. A record
//! holds its API attributes as Neutron shows them, plus internal ones
//! prefixed `ursa:` that views leave out. Derived attributes (a network's
//! `subnets`, a group's `security_group_rules`, a port's `status`) are
//! computed when shown.
//!
//! Where Neutron has agents, Ursa has netd: the first node (or the one
//! named with `--network-node`) hosts DHCP and routers; a node hosts a
//! network when one of the network's ports is bound to it (its
//! `binding:host_id`). A port bound with `binding:profile`
//! `{"ursa_netns": NAME}` is a veth into that namespace (used by tests and
//! containers); any other bound port is a tap device for QEMU.

pub mod api;
pub mod ipam;
pub mod push;
pub mod query;

use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use ursa_core::error::{Error, Result};
use ursa_core::store::Op;
use ursa_identity::model::Model;
use ursa_identity::Identity;

pub const NETWORK: &str = "network";
pub const SUBNET: &str = "subnet";
pub const PORT: &str = "port";
pub const ROUTER: &str = "router";
pub const FIP: &str = "floatingip";
pub const SG: &str = "security_group";
pub const RULE: &str = "security_group_rule";
pub const QUOTA: &str = "network_quota";

pub const OWNER_DHCP: &str = "network:dhcp";
pub const OWNER_ROUTER_IF: &str = "network:router_interface";
pub const OWNER_ROUTER_GW: &str = "network:router_gateway";
pub const OWNER_FIP: &str = "network:floatingip";

/// Neutron's default per-project limits.
pub const QUOTA_DEFAULTS: &[(&str, i64)] = &[
    ("network", 100),
    ("subnet", 100),
    ("port", 500),
    ("router", 10),
    ("floatingip", 50),
    ("security_group", 10),
    ("security_group_rule", 100),
    ("subnetpool", -1),
    ("rbac_policy", 10),
];

pub type Rec = Map<String, Value>;

/// What the network API's handlers share.
#[derive(Clone)]
pub struct AppState {
    pub identity: Identity,
    pub networks: Networks,
    /// Base URL clients reach us at, without a trailing slash.
    pub base_url: String,
}

impl ursa_core::http::Authenticate for AppState {
    fn authenticate(&self, token: &str) -> ursa_core::error::Result<ursa_core::policy::Caller> {
        self.identity.caller(token)
    }
}

/// Segment settings of the deployment.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// VXLAN VNIs tenant networks get, inclusive ranges.
    pub vni_ranges: Vec<(u32, u32)>,
    /// VLAN ids per physical network for tenant VLAN networks.
    pub vlan_ranges: Vec<(String, u16, u16)>,
    /// Physical networks flat and VLAN networks may use.
    pub physnets: Vec<String>,
    pub dns_domain: String,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            vni_ranges: vec![(1, 65535)],
            vlan_ranges: Vec::new(),
            physnets: vec!["public".into()],
            dns_domain: "openstacklocal.".into(),
        }
    }
}

/// The network service; cheap to clone.
#[derive(Clone)]
pub struct Networks {
    pub identity: Identity,
    pub cfg: Arc<NetConfig>,
    pub pusher: push::Pusher,
}

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn st<'a>(m: &'a Rec, k: &str) -> &'a str {
    m.get(k).and_then(|v| v.as_str()).unwrap_or("")
}

pub fn recs<'a>(m: &'a Model, kind: &str) -> impl Iterator<Item = &'a Rec> + 'a {
    m.docs_of(kind).filter_map(|v| v.as_object())
}

pub fn rec(m: &Model, kind: &str, id: &str) -> Option<Rec> {
    m.doc(kind, id).and_then(|v| v.as_object().cloned())
}

pub fn put(kind: &str, r: &Rec) -> Op {
    let id = st(r, "id");
    Op::put(kind, id, "", id, Value::Object(r.clone()))
}

/// The attributes every Neutron resource has.
pub fn standard(project: &str) -> Rec {
    let t = now();
    let mut r = Map::new();
    r.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    r.insert("tenant_id".into(), json!(project));
    r.insert("project_id".into(), json!(project));
    r.insert("created_at".into(), json!(t));
    r.insert("updated_at".into(), json!(t));
    r.insert("revision_number".into(), json!(0));
    r.insert("tags".into(), json!([]));
    r
}

/// Marks a record changed.
pub fn bump(r: &mut Rec) {
    let n = r
        .get("revision_number")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    r.insert("revision_number".into(), json!(n + 1));
    r.insert("updated_at".into(), json!(now()));
}

/// Neutron's `If-Match: revision_number=N[, revision_number=M]` on an
/// update or delete: it applies only while the record is at one of those
/// revisions (checked inside the change, so against what is stored), else
/// 412. No header: no constraint.
#[derive(Debug, Default)]
pub struct IfMatch(Option<Vec<u64>>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IfMatch {
    type Rejection = ursa_core::error::Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        let Some(h) = parts.headers.get(axum::http::header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let bad = || {
            ursa_core::error::Error::BadRequest(format!(
                "Unrecognized If-Match header {h:?}: expected revision_number=N."
            ))
        };
        let text = h.to_str().map_err(|_| bad())?;
        let mut revs = Vec::new();
        for part in text.split(',') {
            let n = part
                .trim()
                .strip_prefix("revision_number=")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .ok_or_else(bad)?;
            revs.push(n);
        }
        Ok(IfMatch(Some(revs)))
    }
}

impl IfMatch {
    /// 412 unless the record is at a revision the header names.
    pub fn check(&self, r: &Rec) -> ursa_core::error::Result<()> {
        let Some(want) = &self.0 else {
            return Ok(());
        };
        let have = r
            .get("revision_number")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if want.contains(&have) {
            return Ok(());
        }
        let want: Vec<String> = want.iter().map(u64::to_string).collect();
        Err(ursa_core::error::Error::PreconditionFailed(format!(
            "Constrained to {}, but current revision is {have}",
            want.join(", ")
        )))
    }
}

/// The record without its internal attributes.
pub fn public(r: &Rec) -> Rec {
    r.iter()
        .filter(|(k, _)| !k.starts_with("ursa:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Sorted by creation, then id: the order subnets and rules are shown in.
pub fn by_creation(mut v: Vec<&Rec>) -> Vec<&Rec> {
    v.sort_by(|a, b| (st(a, "created_at"), st(a, "id")).cmp(&(st(b, "created_at"), st(b, "id"))));
    v
}

pub fn subnets_of<'a>(m: &'a Model, net: &str) -> Vec<&'a Rec> {
    by_creation(
        recs(m, SUBNET)
            .filter(|s| st(s, "network_id") == net)
            .collect(),
    )
}

pub fn ports_of<'a>(m: &'a Model, net: &str) -> Vec<&'a Rec> {
    recs(m, PORT)
        .filter(|p| st(p, "network_id") == net)
        .collect()
}

/// Fixed IPs of a port as (subnet id, address).
pub fn fixed_ips(p: &Rec) -> Vec<(String, String)> {
    p.get("fixed_ips")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["subnet_id"].as_str().unwrap_or("").to_string(),
                        f["ip_address"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Subnet pools as numeric ranges.
pub fn pools_of(s: &Rec) -> ipam::Pools {
    s.get("allocation_pools")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let lo: std::net::IpAddr = p["start"].as_str()?.parse().ok()?;
                    let hi: std::net::IpAddr = p["end"].as_str()?.parse().ok()?;
                    Some((ipam::to_u128(lo), ipam::to_u128(hi)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One requested fixed IP of a port.
#[derive(Debug, Clone, Default)]
pub struct IpRequest {
    pub subnet_id: Option<String>,
    pub ip_address: Option<String>,
}

fn slaac(s: &Rec) -> bool {
    matches!(st(s, "ipv6_address_mode"), "slaac" | "dhcpv6-stateless")
}

/// Picks a port's addresses on `net`: the requested ones, or by default one
/// IPv4 address, one stateful IPv6 address and every SLAAC address.
/// `except` is the port being changed (its own addresses are free to it).
pub fn allocate(
    m: &Model,
    net: &str,
    mac: &str,
    want: Option<&[IpRequest]>,
    except: Option<&str>,
) -> Result<Vec<Value>> {
    let subnets = subnets_of(m, net);
    let mut used: HashMap<String, BTreeSet<u128>> = HashMap::new();
    for p in ports_of(m, net) {
        if Some(st(p, "id")) == except {
            continue;
        }
        for (sid, ip) in fixed_ips(p) {
            if let Ok(a) = ip.parse::<std::net::IpAddr>() {
                used.entry(sid).or_default().insert(ipam::to_u128(a));
            }
        }
    }
    let net_of = |s: &Rec| -> Option<ipnet::IpNet> { st(s, "cidr").parse().ok() };
    let mut out: Vec<Value> = Vec::new();
    let mut take = |sid: &str, ip: std::net::IpAddr, used: &mut HashMap<String, BTreeSet<u128>>| {
        used.entry(sid.to_string())
            .or_default()
            .insert(ipam::to_u128(ip));
        out.push(json!({"subnet_id": sid, "ip_address": ip.to_string()}));
    };
    let pick = |s: &Rec, used: &HashMap<String, BTreeSet<u128>>| -> Result<std::net::IpAddr> {
        let n = net_of(s).ok_or_else(|| Error::Internal("stored subnet without a cidr".into()))?;
        if slaac(s) {
            return ipam::eui64(&n, mac)
                .ok_or_else(|| Error::BadRequest("A SLAAC address needs a /64 and a MAC.".into()));
        }
        let empty = BTreeSet::new();
        ipam::first_free(&pools_of(s), used.get(st(s, "id")).unwrap_or(&empty))
            .map(|a| ipam::from_u128(a, ipam::version(&n.network())))
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "No more IP addresses available for subnet {}.",
                    st(s, "id")
                ))
            })
    };
    match want {
        None => {
            if let Some(s) = subnets.iter().find(|s| s["ip_version"] == 4) {
                let v4: Vec<&&Rec> = subnets.iter().filter(|s| s["ip_version"] == 4).collect();
                let mut got = None;
                for s in &v4 {
                    if let Ok(ip) = pick(s, &used) {
                        got = Some((st(s, "id").to_string(), ip));
                        break;
                    }
                }
                match got {
                    Some((sid, ip)) => take(&sid, ip, &mut used),
                    None => {
                        return Err(Error::Conflict(format!(
                            "No more IP addresses available on network {net} (subnet {} is full).",
                            st(s, "id")
                        )))
                    }
                }
            }
            let mut stateful_done = false;
            for s in subnets.iter().filter(|s| s["ip_version"] == 6) {
                if slaac(s) {
                    let ip = pick(s, &used)?;
                    take(st(s, "id"), ip, &mut used);
                } else if !stateful_done {
                    if let Ok(ip) = pick(s, &used) {
                        take(st(s, "id"), ip, &mut used);
                        stateful_done = true;
                    }
                }
            }
        }
        Some(reqs) => {
            for r in reqs {
                let subnet = match (&r.subnet_id, &r.ip_address) {
                    (Some(sid), _) => Some(
                        subnets
                            .iter()
                            .find(|s| st(s, "id") == sid)
                            .copied()
                            .ok_or_else(|| {
                                if m.doc(SUBNET, sid).is_some() {
                                    Error::BadRequest(format!(
                                        "Invalid input for operation: Failed to create port on network {net}, because fixed_ips included invalid subnet {sid}."
                                    ))
                                } else {
                                    Error::NotFound(format!("Subnet {sid} could not be found."))
                                }
                            })?,
                    ),
                    (None, Some(_)) => None,
                    (None, None) => {
                        return Err(Error::BadRequest(
                            "Invalid input for fixed_ips: a subnet_id or an ip_address is required.".into(),
                        ))
                    }
                };
                match &r.ip_address {
                    Some(a) => {
                        let ip = ipam::parse_ip(a, "ip_address")?;
                        let s = match subnet {
                            Some(s) => {
                                if !net_of(s).is_some_and(|n| n.contains(&ip)) {
                                    return Err(Error::BadRequest(format!(
                                        "IP address {a} is not a valid IP for the specified subnet."
                                    )));
                                }
                                s
                            }
                            None => subnets
                                .iter()
                                .find(|s| net_of(s).is_some_and(|n| n.contains(&ip)))
                                .copied()
                                .ok_or_else(|| {
                                    Error::BadRequest(format!(
                                        "IP address {a} is not a valid IP for any of the subnets on the specified network."
                                    ))
                                })?,
                        };
                        let n = net_of(s).expect("checked");
                        let (lo, hi) = ipam::host_range(&n);
                        let v = ipam::to_u128(ip);
                        if v < lo || v > hi {
                            return Err(Error::BadRequest(format!(
                                "IP address {a} is not a valid IP for the specified subnet."
                            )));
                        }
                        if used.get(st(s, "id")).is_some_and(|u| u.contains(&v)) {
                            return Err(Error::Conflict(format!(
                                "Unable to complete operation for network {net}. The IP address {a} is in use."
                            )));
                        }
                        take(st(s, "id"), ip, &mut used);
                    }
                    None => {
                        let s = subnet.expect("subnet given");
                        let ip = pick(s, &used)?;
                        take(st(s, "id"), ip, &mut used);
                    }
                }
            }
        }
    }
    Ok(out)
}

impl Networks {
    pub fn new(identity: Identity, cfg: NetConfig, pusher: push::Pusher) -> Networks {
        Networks {
            identity,
            cfg: Arc::new(cfg),
            pusher,
        }
    }

    /// Runs a change under the writer lock and, when it stored anything,
    /// asks the pusher to bring the nodes up to date.
    pub async fn change<T>(&self, mut f: impl FnMut(&Model) -> Result<(Vec<Op>, T)>) -> Result<T> {
        let dirty = Arc::new(Mutex::new(false));
        let d2 = dirty.clone();
        let out = self
            .identity
            .change(move |m| {
                let (ops, out) = f(m)?;
                *d2.lock().expect("flag") = !ops.is_empty();
                Ok((ops, out))
            })
            .await?;
        if *dirty.lock().expect("flag") {
            self.pusher.kick();
        }
        Ok(out)
    }

    /// The project's default security group, made when first needed.
    pub fn default_sg_ops(m: &Model, project: &str) -> Vec<Op> {
        if project.is_empty()
            || recs(m, SG).any(|g| st(g, "project_id") == project && st(g, "name") == "default")
        {
            return Vec::new();
        }
        let mut g = standard(project);
        g.insert("name".into(), json!("default"));
        g.insert("description".into(), json!("Default security group"));
        g.insert("stateful".into(), json!(true));
        g.insert("shared".into(), json!(false));
        let gid = st(&g, "id").to_string();
        let mut ops = vec![put(SG, &g)];
        for (dir, eth, remote) in [
            ("ingress", "IPv4", true),
            ("ingress", "IPv6", true),
            ("egress", "IPv4", false),
            ("egress", "IPv6", false),
        ] {
            let mut r = standard(project);
            r.remove("tags");
            for (k, v) in [
                ("security_group_id", json!(gid)),
                ("direction", json!(dir)),
                ("ethertype", json!(eth)),
                ("protocol", Value::Null),
                ("port_range_min", Value::Null),
                ("port_range_max", Value::Null),
                ("remote_ip_prefix", Value::Null),
                (
                    "remote_group_id",
                    if remote { json!(gid) } else { Value::Null },
                ),
                ("remote_address_group_id", Value::Null),
                ("normalized_cidr", Value::Null),
                ("description", json!("")),
                ("belongs_to_default_sg", json!(true)),
            ] {
                r.insert(k.into(), v);
            }
            ops.push(put(RULE, &r));
        }
        ops
    }

    /// The project's limit for a resource.
    pub fn quota(m: &Model, project: &str, what: &str) -> i64 {
        m.doc(QUOTA, project)
            .and_then(|q| q.get(what))
            .and_then(|v| v.as_i64())
            .unwrap_or_else(|| {
                QUOTA_DEFAULTS
                    .iter()
                    .find(|(k, _)| *k == what)
                    .map(|(_, v)| *v)
                    .unwrap_or(-1)
            })
    }

    pub fn used(m: &Model, project: &str, what: &str) -> i64 {
        let kind = match what {
            "network" => NETWORK,
            "subnet" => SUBNET,
            "port" => PORT,
            "router" => ROUTER,
            "floatingip" => FIP,
            "security_group" => SG,
            "security_group_rule" => RULE,
            _ => return 0,
        };
        recs(m, kind)
            .filter(|r| st(r, "project_id") == project)
            .count() as i64
    }

    /// 409 when `project` would go over its limit by adding `n`.
    pub fn check_quota(m: &Model, project: &str, what: &str, n: i64) -> Result<()> {
        let limit = Self::quota(m, project, what);
        if limit >= 0 && Self::used(m, project, what) + n > limit {
            return Err(Error::Conflict(format!(
                "Quota exceeded for resources: ['{what}']."
            )));
        }
        Ok(())
    }

    /// Takes the lowest free segmentation id of a type.
    pub fn allocate_segment(&self, m: &Model, ty: &str, physnet: Option<&str>) -> Result<u32> {
        let taken: BTreeSet<u64> = recs(m, NETWORK)
            .filter(|n| st(n, "provider:network_type") == ty)
            .filter(|n| physnet.is_none_or(|p| st(n, "provider:physical_network") == p))
            .filter_map(|n| n.get("provider:segmentation_id").and_then(|v| v.as_u64()))
            .collect();
        let ranges: Vec<(u32, u32)> = match ty {
            "vxlan" => self.cfg.vni_ranges.clone(),
            _ => self
                .cfg
                .vlan_ranges
                .iter()
                .filter(|(p, _, _)| physnet.is_none_or(|x| x == p))
                .map(|(_, a, b)| (*a as u32, *b as u32))
                .collect(),
        };
        for (lo, hi) in ranges {
            for id in lo..=hi {
                if !taken.contains(&(id as u64)) {
                    return Ok(id);
                }
            }
        }
        Err(Error::ServiceUnavailable(
            "Unable to create the network. No tenant network is available for allocation.".into(),
        ))
    }
}
