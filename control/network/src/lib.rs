//! The network service (Neutron v2.0): networks with provider segments,
//! subnets and their addresses, ports, routers, floating IPs, security
//! groups, quotas and tags; every change is stored first, then pushed to
//! the netd of each node it reaches as that node's whole desired state
//! ([`push`], [`push_scope`]).
//!
//! Ports, the records there are most of, are rows of the service's own
//! tables ([`port_table`]: `net_ports` and `net_ip_allocations`, migrated
//! by this crate's `migrations/`), read by indexed queries and listed page
//! by page in SQL ([`port_list`]). Networks, subnets, routers, floating
//! IPs, security groups and their rules are rows too ([`rows`]: one table
//! per kind with the columns its queries select on, and the record as
//! JSON), written from the same `Op`s a handler plans for any record and
//! read by indexed queries; nothing holds them in memory. Network quotas,
//! subnet pools and address scopes (what admins set, not what the cloud
//! grows by) are still documents in the control plane's store, cached in
//! identity's model.
//! Every change is one write ([`Networks::write`]): it holds the store's
//! revision row from its first read to its commit, so an address is
//! allocated, a MAC or segment id taken or a quota counted against what
//! is stored, and committed with the rest of the change, also with several
//! controllers. A record holds its API attributes as Neutron shows them,
//! plus internal ones prefixed `ursa:` that views leave out. Derived
//! attributes (a network's `subnets`, a group's `security_group_rules`, a
//! port's `status`) are computed when shown.
//!
//! Where Neutron has agents, Ursa has netd: the first node (or the one
//! named with `--network-node`) hosts DHCP and routers; a node hosts a
//! network when one of the network's ports is bound to it (its
//! `binding:host_id`). A port bound with `binding:profile`
//! `{"ursa_netns": NAME}` is a veth into that namespace (used by tests and
//! containers); any other bound port is a tap device for QEMU.

pub mod api;
pub mod dhcp_push;
pub mod ipam;
pub mod port_list;
pub mod port_table;
pub mod push;
pub mod push_scope;
pub mod query;
pub mod rows;
pub mod sg_table;

/// A write of the network service (see [`Networks::write`]): the model,
/// the transaction for port rows, and a push once it committed anything.
pub struct NetWriter<'a> {
    w: ursa_identity::Writer<'a>,
    pusher: &'a push::Pusher,
}

impl NetWriter<'_> {
    /// The model as this write sees it (do not hold it across an await).
    pub fn model(&self) -> std::sync::RwLockReadGuard<'_, Model> {
        self.w.model()
    }

    /// Decides a change against the model (what `change` closures do).
    pub fn plan<T>(&self, f: impl FnOnce(&Model) -> Result<(Vec<Op>, T)>) -> Result<(Vec<Op>, T)> {
        f(&self.model())
    }

    pub fn tx(&mut self) -> &mut ursa_core::store::WriteTx {
        self.w.tx()
    }

    pub fn conn(&mut self) -> &mut sqlx::AnyConnection {
        self.w.tx().conn()
    }

    /// Commits `ops` and the port rows written, then kicks the pusher. A
    /// port in `ops` (kind [`PORT`]) is written to its table, taking the
    /// addresses its `fixed_ips` name; a kind kept as rows ([`rows::TABLES`]:
    /// security groups, rules, floating IPs) to its table; the rest are
    /// documents.
    pub async fn commit(mut self, ops: &[Op]) -> Result<()> {
        let mut docs = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put(d) if d.kind == PORT => {
                    let p = d.body.as_object().cloned().unwrap_or_default();
                    let subnets = subnets_of(self.conn(), st(&p, "network_id")).await?;
                    port_table::release(self.tx(), &d.id).await?;
                    port_table::claim(self.tx(), &subnets, &p).await?;
                    port_table::put(self.tx(), &p).await?;
                }
                Op::Delete { kind, id } if kind == PORT => {
                    port_table::delete(self.tx(), id).await?;
                }
                _ => {
                    if !rows::apply(self.tx(), op).await? {
                        docs.push(op.clone());
                    }
                }
            }
        }
        let dirty = !docs.is_empty() || self.w.tx().is_touched();
        self.w.commit(&docs).await?;
        if dirty {
            self.pusher.kick();
        }
        Ok(())
    }
}

use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
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

/// Creates or updates the network service's tables, and moves ports an
/// earlier release kept as documents into them (once). Run at start,
/// before the identity model is loaded.
pub async fn prepare_store(store: &ursa_core::store::Store) -> Result<()> {
    store.migrate(&port_table::MIGRATOR).await?;
    let moved = port_table::upgrade(store).await?;
    if moved > 0 {
        tracing::info!(ports = moved, "moved the ports into their table");
    }
    let filled = port_table::fill_groups(store).await?;
    if filled > 0 {
        tracing::info!(ports = filled, "indexed the ports' security groups");
    }
    let moved = rows::upgrade(store).await?;
    if moved > 0 {
        tracing::info!(
            records = moved,
            "moved the security groups, rules and floating IPs into their tables"
        );
    }
    Ok(())
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

/// A network's subnets, by creation.
pub async fn subnets_of(c: &mut sqlx::AnyConnection, net: &str) -> Result<Vec<Rec>> {
    rows::SUBNETS.where_eq(c, "network_id", net).await
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

impl Networks {
    pub fn new(identity: Identity, cfg: NetConfig, pusher: push::Pusher) -> Networks {
        Networks {
            identity,
            cfg: Arc::new(cfg),
            pusher,
        }
    }

    /// Runs a change of documents only (no port rows) under the write
    /// lock and, when it stored anything, asks the pusher to bring the
    /// nodes up to date.
    pub async fn change<T>(&self, f: impl FnOnce(&Model) -> Result<(Vec<Op>, T)>) -> Result<T> {
        let w = self.write().await?;
        let (ops, out) = f(&w.model())?;
        w.commit(&ops).await?;
        Ok(out)
    }

    /// Begins a write that may read and write port rows (see
    /// [`port_table`]) as well as documents.
    pub async fn write(&self) -> Result<NetWriter<'_>> {
        Ok(NetWriter {
            w: self.identity.write().await?,
            pusher: &self.pusher,
        })
    }

    /// A connection for reads of the network tables outside a write.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.identity.store().conn().await?)
    }

    /// A new default security group for `project` (its id and what to
    /// commit), for a project that has none yet.
    pub fn default_sg_ops(project: &str) -> (String, Vec<Op>) {
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
        (gid, ops)
    }

    /// Makes `project`'s default security group exist (inside the write
    /// `w`, so once however many ask at once); returns its id.
    pub async fn ensure_default_sg(w: &mut NetWriter<'_>, project: &str) -> Result<Option<String>> {
        if project.is_empty() {
            return Ok(None);
        }
        if let Some(id) = sg_table::default_of(w.conn(), project).await? {
            return Ok(Some(id));
        }
        let (id, ops) = Self::default_sg_ops(project);
        for op in &ops {
            rows::apply(w.tx(), op).await?;
        }
        Ok(Some(id))
    }

    /// 409 when `project` would go over its limit of `what` (a quota
    /// resource of a kind kept as rows: "security_group",
    /// "security_group_rule", "floatingip", "router") by adding `n`,
    /// counted inside the write.
    pub async fn check_row_quota(
        w: &mut NetWriter<'_>,
        project: &str,
        what: &str,
        n: i64,
    ) -> Result<()> {
        let Some(t) = rows::TABLES.iter().find(|t| t.quota == what) else {
            return Err(Error::Internal(format!("no table counts {what}")));
        };
        let limit = Self::quota(&w.model(), project, what);
        if limit >= 0 && t.count(w.conn(), "project_id", project).await? + n > limit {
            return Err(Error::Conflict(format!(
                "Quota exceeded for resources: ['{what}']."
            )));
        }
        Ok(())
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

    /// Whether a network has this segment (type, physical network, id;
    /// "" where it has none).
    pub async fn segment_in_use(
        c: &mut sqlx::AnyConnection,
        ty: &str,
        physnet: &str,
        id: &str,
    ) -> Result<bool> {
        use sqlx::Row;
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) FROM net_networks WHERE network_type = $1 \
             AND physical_network = $2 AND segmentation_id = $3",
        )
        .bind(ty)
        .bind(physnet)
        .bind(id)
        .fetch_one(c)
        .await
        .map_err(rows::db)?
        .try_get(0)
        .map_err(rows::db)?;
        Ok(n > 0)
    }

    /// Takes the lowest free segmentation id of a type (reading the ids
    /// taken on that type and physical network).
    pub async fn allocate_segment(
        &self,
        c: &mut sqlx::AnyConnection,
        ty: &str,
        physnet: Option<&str>,
    ) -> Result<u32> {
        use sqlx::Row;
        let rows = match physnet {
            Some(p) => sqlx::query(
                "SELECT segmentation_id FROM net_networks WHERE network_type = $1 AND physical_network = $2",
            )
            .bind(ty)
            .bind(p)
            .fetch_all(&mut *c)
            .await,
            None => sqlx::query("SELECT segmentation_id FROM net_networks WHERE network_type = $1")
                .bind(ty)
                .fetch_all(&mut *c)
                .await,
        }
        .map_err(rows::db)?;
        let mut taken = BTreeSet::new();
        for r in &rows {
            let v: String = r.try_get(0).map_err(rows::db)?;
            if let Ok(n) = v.parse::<u64>() {
                taken.insert(n);
            }
        }
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
