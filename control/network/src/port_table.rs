//! Ports as rows: the `net_ports` table (indexed columns plus the record
//! as JSON) and `net_ip_allocations` (one row per fixed IP, unique per
//! subnet and address), read by indexed queries and written inside the
//! write transaction of [`ursa_identity::Writer`], so that an address, a
//! MAC or a quota is decided on what is stored and committed with the rest
//! of the change.
//!
//! Nothing here keeps ports in memory: a create costs a handful of indexed
//! statements whatever the number of ports stored.

use crate::{ipam, st, IpRequest, Rec, SUBNET};
use serde_json::{json, Value};
use sqlx::{AnyConnection, Row};
use std::collections::HashSet;
use std::net::IpAddr;
use ursa_core::error::{Error, Result};
use ursa_core::store::{Store, WriteTx};

/// The network service's migrations (versions 1000 and up).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The change-feed kind of a port row.
pub const KIND: &str = crate::PORT;

fn db(e: sqlx::Error) -> Error {
    Error::Internal(format!("database error: {e}"))
}

fn bodies(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<Rec>> {
    Ok(ursa_core::store::json_records(&rows, 0)?)
}

/// The ports a query with one text parameter selects (`SELECT body …`).
async fn select_by(c: &mut AnyConnection, sql: &str, arg: &str) -> Result<Vec<Rec>> {
    bodies(sqlx::query(sql).bind(arg).fetch_all(c).await.map_err(db)?)
}

/// The port `id`.
pub async fn get(c: &mut AnyConnection, id: &str) -> Result<Option<Rec>> {
    Ok(select_by(c, "SELECT body FROM net_ports WHERE id = $1", id)
        .await?
        .pop())
}

/// Every port of a device (a server, a router, a DHCP service).
pub async fn of_device(c: &mut AnyConnection, device: &str) -> Result<Vec<Rec>> {
    select_by(
        c,
        "SELECT body FROM net_ports WHERE device_id = $1 ORDER BY created_at, id",
        device,
    )
    .await
}

/// Every port of any of `devices`.
pub async fn of_devices(c: &mut AnyConnection, devices: &[String]) -> Result<Vec<Rec>> {
    let mut out = Vec::new();
    for chunk in devices.chunks(200) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT body FROM net_ports WHERE device_id IN ({}) ORDER BY created_at, id",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for d in chunk {
            q = q.bind(d);
        }
        out.extend(bodies(q.fetch_all(&mut *c).await.map_err(db)?)?);
    }
    Ok(out)
}

/// Every port with an address on a subnet.
pub async fn on_subnet(c: &mut AnyConnection, subnet: &str) -> Result<Vec<Rec>> {
    select_by(
        c,
        "SELECT p.body FROM net_ports p WHERE p.id IN \
         (SELECT port_id FROM net_ip_allocations WHERE subnet_id = $1) ORDER BY p.id",
        subnet,
    )
    .await
}

/// The ports holding `address` on any subnet.
pub async fn with_address(c: &mut AnyConnection, address: &str) -> Result<Vec<Rec>> {
    select_by(
        c,
        "SELECT p.body FROM net_ports p WHERE p.id IN \
         (SELECT port_id FROM net_ip_allocations WHERE ip_address = $1) ORDER BY p.id",
        address,
    )
    .await
}

/// How many ports a project has (its quota use).
pub async fn count_of_project(c: &mut AnyConnection, project: &str) -> Result<i64> {
    sqlx::query("SELECT COUNT(*) FROM net_ports WHERE project_id = $1")
        .bind(project)
        .fetch_one(c)
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)
}

/// The ports of a network whose device owner is one of `owners`.
pub async fn of_network_owned(
    c: &mut AnyConnection,
    net: &str,
    owners: &[&str],
) -> Result<Vec<Rec>> {
    let marks: Vec<String> = (2..owners.len() + 2).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT body FROM net_ports WHERE network_id = $1 AND device_owner IN ({}) ORDER BY id",
        marks.join(", ")
    );
    let mut q = sqlx::query(&sql).persistent(false).bind(net);
    for o in owners {
        q = q.bind(*o);
    }
    bodies(q.fetch_all(c).await.map_err(db)?)
}

/// Whether a network has a port whose device owner is none of `owners`.
pub async fn network_has_other(c: &mut AnyConnection, net: &str, owners: &[&str]) -> Result<bool> {
    let marks: Vec<String> = (2..owners.len() + 2).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT 1 FROM net_ports WHERE network_id = $1 AND device_owner NOT IN ({}) LIMIT 1",
        marks.join(", ")
    );
    let mut q = sqlx::query(&sql).persistent(false).bind(net);
    for o in owners {
        q = q.bind(*o);
    }
    Ok(q.fetch_optional(c).await.map_err(db)?.is_some())
}

/// Whether `mac` is taken on `net` by a port other than `except`.
pub async fn mac_in_use(
    c: &mut AnyConnection,
    net: &str,
    mac: &str,
    except: Option<&str>,
) -> Result<bool> {
    let row = sqlx::query("SELECT id FROM net_ports WHERE network_id = $1 AND mac_address = $2")
        .bind(net)
        .bind(mac)
        .fetch_optional(c)
        .await
        .map_err(db)?;
    Ok(match row {
        Some(r) => Some(r.try_get::<String, _>(0).map_err(db)?.as_str()) != except,
        None => false,
    })
}

/// A MAC no port of `net` has.
pub async fn fresh_mac(c: &mut AnyConnection, net: &str) -> Result<String> {
    loop {
        let mac = ipam::random_mac();
        if !mac_in_use(c, net, &mac, None).await? {
            return Ok(mac);
        }
    }
}

fn row_values(p: &Rec) -> [String; 9] {
    [
        st(p, "id").to_string(),
        st(p, "project_id").to_string(),
        st(p, "network_id").to_string(),
        st(p, "mac_address").to_string(),
        st(p, "device_id").to_string(),
        st(p, "device_owner").to_string(),
        st(p, "name").to_string(),
        st(p, "binding:host_id").to_string(),
        st(p, "created_at").to_string(),
    ]
}

/// Stores a port (new or changed). Its addresses must already be in
/// `net_ip_allocations` (see [`allocate`] and [`claim`]).
pub async fn put(w: &mut WriteTx, p: &Rec) -> Result<()> {
    store(w, p, false).await
}

/// Stores a port that is not stored yet (one statement fewer than
/// [`put`]: it has no security group rows to replace).
pub async fn put_new(w: &mut WriteTx, p: &Rec) -> Result<()> {
    store(w, p, true).await
}

/// The kind of the marks a port write leaves in the change feed for the
/// pusher ([`crate::push`]), naming what the port was and is to the nodes:
/// `host:H` (a port bound to node H), `net:N` and `group:G` (its network
/// and security groups, which other nodes' states name), `*` (a service
/// port, e.g. a router's or DHCP's: any node). An unbound port leaves none:
/// no node's state names it.
pub const PUSH_MARK: &str = "net_push";

fn mark(w: &mut WriteTx, host: &str, owner: &str, network: &str, groups: &[String]) {
    if owner.starts_with("network:") {
        w.touch(PUSH_MARK, "*");
        return;
    }
    if host.is_empty() {
        return;
    }
    w.touch(PUSH_MARK, &format!("host:{host}"));
    w.touch(PUSH_MARK, &format!("net:{network}"));
    for g in groups {
        w.touch(PUSH_MARK, &format!("group:{g}"));
    }
}

/// Marks what the stored port `id` is to the nodes (before it changes).
async fn mark_stored(w: &mut WriteTx, id: &str) -> Result<()> {
    let rows = sqlx::query(
        "SELECT p.host, p.device_owner, p.network_id, g.group_id FROM net_ports p \
         LEFT JOIN net_port_groups g ON g.port_id = p.id WHERE p.id = $1",
    )
    .bind(id)
    .fetch_all(w.conn())
    .await
    .map_err(db)?;
    let Some(r) = rows.first() else {
        return Ok(());
    };
    let (host, owner, network): (String, String, String) = (
        r.try_get(0).map_err(db)?,
        r.try_get(1).map_err(db)?,
        r.try_get(2).map_err(db)?,
    );
    let groups: Vec<String> = rows
        .iter()
        .filter_map(|r| r.try_get::<Option<String>, _>(3).ok().flatten())
        .collect();
    mark(w, &host, &owner, &network, &groups);
    Ok(())
}

async fn store(w: &mut WriteTx, p: &Rec, fresh: bool) -> Result<()> {
    let v = row_values(p);
    if !fresh {
        mark_stored(w, &v[0]).await?;
    }
    mark(
        w,
        &v[7],
        &v[5],
        &v[2],
        &crate::str_list(p.get("security_groups")),
    );
    let body = Value::Object(p.clone()).to_string();
    let r = sqlx::query(
        "INSERT INTO net_ports (id, project_id, network_id, mac_address, device_id, device_owner, name, host, created_at, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET project_id = excluded.project_id, network_id = excluded.network_id, \
         mac_address = excluded.mac_address, device_id = excluded.device_id, device_owner = excluded.device_owner, \
         name = excluded.name, host = excluded.host, created_at = excluded.created_at, body = excluded.body",
    )
    .bind(&v[0])
    .bind(&v[1])
    .bind(&v[2])
    .bind(&v[3])
    .bind(&v[4])
    .bind(&v[5])
    .bind(&v[6])
    .bind(&v[7])
    .bind(&v[8])
    .bind(body)
    .execute(w.conn())
    .await;
    if let Err(e) = r {
        if ursa_core::store::unique_violation(&e) {
            return Err(Error::Conflict(format!(
                "Unable to complete operation for network {}. The mac address {} is in use.",
                v[2], v[3]
            )));
        }
        return Err(db(e));
    }
    if !fresh {
        sqlx::query("DELETE FROM net_port_groups WHERE port_id = $1")
            .bind(&v[0])
            .execute(w.conn())
            .await
            .map_err(db)?;
    }
    add_groups(w.conn(), p).await?;
    w.touch(KIND, &v[0]);
    Ok(())
}

/// Gives the port its rows in `net_port_groups` (one per group of its
/// `security_groups`; those it has stay).
async fn add_groups(c: &mut AnyConnection, p: &Rec) -> Result<()> {
    let id = st(p, "id");
    for g in crate::str_list(p.get("security_groups")) {
        sqlx::query(
            "INSERT INTO net_port_groups (port_id, group_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(g)
        .execute(&mut *c)
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Gives the ports stored before `net_port_groups` existed their rows
/// there, once (while migration 1006's 'port_groups' is pending).
pub async fn fill_groups(store: &Store) -> Result<usize> {
    let mut w = store.begin_write().await?;
    let pending = sqlx::query("SELECT 1 FROM net_pending WHERE name = 'port_groups'")
        .fetch_optional(w.conn())
        .await
        .map_err(db)?
        .is_some();
    if !pending {
        return Ok(0);
    }
    let mut n = 0;
    let mut after = String::new();
    loop {
        let page = select_by(
            w.conn(),
            "SELECT body FROM net_ports WHERE id > $1 ORDER BY id LIMIT 1000",
            &after,
        )
        .await?;
        let Some(last) = page.last() else { break };
        after = st(last, "id").to_string();
        for p in &page {
            add_groups(w.conn(), p).await?;
        }
        n += page.len();
    }
    sqlx::query("DELETE FROM net_pending WHERE name = 'port_groups'")
        .execute(w.conn())
        .await
        .map_err(db)?;
    w.touch("net_pending", "port_groups");
    w.commit(&[]).await?;
    Ok(n)
}

/// Removes a port and frees its addresses.
pub async fn delete(w: &mut WriteTx, id: &str) -> Result<()> {
    mark_stored(w, id).await?;
    release(w, id).await?;
    for sql in [
        "DELETE FROM net_ports WHERE id = $1",
        "DELETE FROM net_port_groups WHERE port_id = $1",
    ] {
        sqlx::query(sql)
            .bind(id)
            .execute(w.conn())
            .await
            .map_err(db)?;
    }
    w.touch(KIND, id);
    Ok(())
}

/// Frees every address of a port (before it is given new ones).
pub async fn release(w: &mut WriteTx, port: &str) -> Result<()> {
    sqlx::query("DELETE FROM net_ip_allocations WHERE port_id = $1")
        .bind(port)
        .execute(w.conn())
        .await
        .map_err(db)?;
    Ok(())
}

/// An address's distance from its subnet's network address, as stored.
fn offset(net: &ipnet::IpNet, ip: IpAddr) -> i64 {
    let d = ipam::to_u128(ip).wrapping_sub(ipam::to_u128(net.network()));
    i64::try_from(d).unwrap_or(-1)
}

/// Takes `ip` on `subnet` for `port`; a Conflict when it is taken.
async fn take(w: &mut WriteTx, s: &Rec, ip: IpAddr, port: &str, net_id: &str) -> Result<Value> {
    let n: ipnet::IpNet = st(s, "cidr")
        .parse()
        .map_err(|_| Error::Internal("stored subnet without a cidr".into()))?;
    let r = sqlx::query(
        "INSERT INTO net_ip_allocations (subnet_id, ip_address, ip_offset, port_id, network_id) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(st(s, "id"))
    .bind(ip.to_string())
    .bind(offset(&n, ip))
    .bind(port)
    .bind(net_id)
    .execute(w.conn())
    .await;
    match r {
        Ok(_) => Ok(json!({"subnet_id": st(s, "id"), "ip_address": ip.to_string()})),
        Err(e) if ursa_core::store::unique_violation(&e) => Err(Error::Conflict(format!(
            "Unable to complete operation for network {net_id}. The IP address {ip} is in use."
        ))),
        Err(e) => Err(db(e)),
    }
}

async fn offset_taken(c: &mut AnyConnection, subnet: &str, off: i64) -> Result<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM net_ip_allocations WHERE subnet_id = $1 AND ip_offset = $2")
            .bind(subnet)
            .bind(off)
            .fetch_optional(c)
            .await
            .map_err(db)?
            .is_some(),
    )
}

/// The lowest free offset of one pool (`lo..=hi`, offsets), if any: after
/// the highest taken one when the pool's tail is free (the usual case, one
/// indexed lookup), else the first gap.
async fn free_in_pool(
    c: &mut AnyConnection,
    subnet: &str,
    lo: i64,
    hi: i64,
) -> Result<Option<i64>> {
    let max: Option<i64> = sqlx::query(
        "SELECT MAX(ip_offset) FROM net_ip_allocations WHERE subnet_id = $1 AND ip_offset >= $2 AND ip_offset <= $3",
    )
    .bind(subnet)
    .bind(lo)
    .bind(hi)
    .fetch_one(&mut *c)
    .await
    .map_err(db)?
    .try_get(0)
    .map_err(db)?;
    let Some(max) = max else {
        return Ok(Some(lo));
    };
    if max < hi {
        return Ok(Some(max + 1));
    }
    if !offset_taken(c, subnet, lo).await? {
        return Ok(Some(lo));
    }
    let gap: Option<i64> = sqlx::query(
        "SELECT MIN(a.ip_offset) + 1 FROM net_ip_allocations a WHERE a.subnet_id = $1 \
         AND a.ip_offset >= $2 AND a.ip_offset < $3 AND NOT EXISTS \
         (SELECT 1 FROM net_ip_allocations b WHERE b.subnet_id = $1 AND b.ip_offset = a.ip_offset + 1)",
    )
    .bind(subnet)
    .bind(lo)
    .bind(hi)
    .fetch_one(c)
    .await
    .map_err(db)?
    .try_get(0)
    .map_err(db)?;
    Ok(gap)
}

fn slaac(s: &Rec) -> bool {
    matches!(st(s, "ipv6_address_mode"), "slaac" | "dhcpv6-stateless")
}

/// A free address of a subnet: its EUI-64 address for SLAAC, else the
/// first free one of its pools.
async fn pick(c: &mut AnyConnection, s: &Rec, mac: &str) -> Result<Option<IpAddr>> {
    let n: ipnet::IpNet = st(s, "cidr")
        .parse()
        .map_err(|_| Error::Internal("stored subnet without a cidr".into()))?;
    if slaac(s) {
        return ipam::eui64(&n, mac)
            .map(Some)
            .ok_or_else(|| Error::BadRequest("A SLAAC address needs a /64 and a MAC.".into()));
    }
    let base = ipam::to_u128(n.network());
    for (lo, hi) in crate::pools_of(s) {
        let lo = i64::try_from(lo.saturating_sub(base)).unwrap_or(i64::MAX);
        let hi = i64::try_from(hi.saturating_sub(base)).unwrap_or(i64::MAX);
        if lo > hi {
            continue;
        }
        if let Some(off) = free_in_pool(c, st(s, "id"), lo, hi).await? {
            return Ok(Some(ipam::from_u128(
                base + off as u128,
                ipam::version(&n.network()),
            )));
        }
    }
    Ok(None)
}

/// What a port create reads before it decides (see [`context`]).
#[derive(Debug, Default)]
pub struct PortContext {
    pub network: Option<Rec>,
    /// The network's subnets, by creation.
    pub subnets: Vec<Rec>,
    /// The project's default security group, if it has one.
    pub default_sg: Option<String>,
}

/// The network `net`, its subnets and `project`'s default security group,
/// in one statement (a create runs it while the other writes wait, so
/// round trips count).
pub async fn context(c: &mut AnyConnection, net: &str, project: &str) -> Result<PortContext> {
    let rows = sqlx::query(
        "SELECT 'n', body FROM net_networks WHERE id = $1 \
         UNION ALL SELECT 's', body FROM net_subnets WHERE network_id = $1 \
         UNION ALL SELECT 'g', id FROM net_security_groups WHERE project_id = $2 AND name = 'default'",
    )
    .bind(net)
    .bind(project)
    .fetch_all(c)
    .await
    .map_err(db)?;
    let mut ctx = PortContext::default();
    let parse = |v: &str| -> Result<Rec> {
        serde_json::from_str(v).map_err(|e| Error::Internal(format!("stored record: {e}")))
    };
    for r in &rows {
        let tag: String = r.try_get(0).map_err(db)?;
        let v: String = r.try_get(1).map_err(db)?;
        match tag.as_str() {
            "n" => ctx.network = Some(parse(&v)?),
            "s" => ctx.subnets.push(parse(&v)?),
            _ => ctx.default_sg = ctx.default_sg.or(Some(v)),
        }
    }
    ctx.subnets.sort_by(|a, b| {
        (st(a, "created_at"), st(a, "id")).cmp(&(st(b, "created_at"), st(b, "id")))
    });
    Ok(ctx)
}

/// What an allocation on a network needs to know of its subnets: the
/// network's subnets (by creation) and which other requested subnet ids
/// exist elsewhere (a 400 rather than a 404).
pub struct Subnets {
    pub net: String,
    pub list: Vec<Rec>,
    pub elsewhere: HashSet<String>,
}

impl Subnets {
    /// Reads them for an allocation of `want` on `net`.
    pub async fn load(
        c: &mut AnyConnection,
        net: &str,
        want: Option<&[IpRequest]>,
    ) -> Result<Subnets> {
        let list = crate::subnets_of(c, net).await?;
        Self::from_list(c, net, list, want).await
    }

    /// From the network's subnets (`list`, by creation) already read.
    pub async fn from_list(
        c: &mut AnyConnection,
        net: &str,
        list: Vec<Rec>,
        want: Option<&[IpRequest]>,
    ) -> Result<Subnets> {
        let asked: Vec<String> = want
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r.subnet_id.clone())
            .filter(|sid| !list.iter().any(|s| st(s, "id") == sid))
            .collect();
        let elsewhere = crate::rows::SUBNETS
            .by_ids(c, &asked)
            .await?
            .into_keys()
            .collect();
        Ok(Subnets {
            net: net.to_string(),
            list,
            elsewhere,
        })
    }
}

/// Takes a port's addresses on its network and returns them as its
/// `fixed_ips`: the requested ones, or by default one IPv4 address, one
/// stateful IPv6 address and every SLAAC address. A port that is given new
/// addresses is first [`release`]d, so the addresses it keeps are free to
/// it.
pub async fn allocate(
    w: &mut WriteTx,
    subnets: &Subnets,
    port: &str,
    mac: &str,
    want: Option<&[IpRequest]>,
) -> Result<Vec<Value>> {
    let net = subnets.net.as_str();
    let net_of = |s: &Rec| -> Option<ipnet::IpNet> { st(s, "cidr").parse().ok() };
    let mut out = Vec::new();
    match want {
        None => {
            let v4: Vec<&Rec> = subnets
                .list
                .iter()
                .filter(|s| s["ip_version"] == 4)
                .collect();
            if let Some(first) = v4.first() {
                let mut got = false;
                for s in &v4 {
                    if let Some(ip) = pick(w.conn(), s, mac).await? {
                        out.push(take(w, s, ip, port, net).await?);
                        got = true;
                        break;
                    }
                }
                if !got {
                    return Err(Error::Conflict(format!(
                        "No more IP addresses available on network {net} (subnet {} is full).",
                        st(first, "id")
                    )));
                }
            }
            let mut stateful_done = false;
            for s in subnets.list.iter().filter(|s| s["ip_version"] == 6) {
                if slaac(s) {
                    if let Some(ip) = pick(w.conn(), s, mac).await? {
                        out.push(take(w, s, ip, port, net).await?);
                    }
                } else if !stateful_done {
                    if let Some(ip) = pick(w.conn(), s, mac).await? {
                        out.push(take(w, s, ip, port, net).await?);
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
                            .list
                            .iter()
                            .find(|s| st(s, "id") == sid)
                            .ok_or_else(|| {
                                if subnets.elsewhere.contains(sid) {
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
                                .list
                                .iter()
                                .find(|s| net_of(s).is_some_and(|n| n.contains(&ip)))
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
                        out.push(take(w, s, ip, port, net).await?);
                    }
                    None => {
                        let s = subnet.expect("subnet given");
                        let ip = pick(w.conn(), s, mac).await?.ok_or_else(|| {
                            Error::Conflict(format!(
                                "No more IP addresses available for subnet {}.",
                                st(s, "id")
                            ))
                        })?;
                        out.push(take(w, s, ip, port, net).await?);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Takes the addresses a port already names (a port moved into the table
/// from a document, or one whose `fixed_ips` are decided elsewhere).
pub async fn claim(w: &mut WriteTx, subnets: &[Rec], p: &Rec) -> Result<()> {
    for (sid, ip) in crate::fixed_ips(p) {
        let Some(s) = subnets.iter().find(|s| st(s, "id") == sid) else {
            continue;
        };
        let Ok(ip) = ip.parse::<IpAddr>() else {
            continue;
        };
        take(w, s, ip, st(p, "id"), st(p, "network_id")).await?;
    }
    Ok(())
}

/// Moves port documents (the layout before ports were rows) into the
/// tables, once: run at start before the model is loaded.
pub async fn upgrade(store: &Store) -> Result<usize> {
    let mut w = store.begin_write().await?;
    let docs = w.documents(KIND).await?;
    if docs.is_empty() {
        return Ok(0);
    }
    let subnets: Vec<Rec> = w
        .documents(SUBNET)
        .await?
        .into_iter()
        .filter_map(|d| d.body.as_object().cloned())
        .collect();
    let mut ops = Vec::new();
    for d in &docs {
        let Some(p) = d.body.as_object() else {
            continue;
        };
        claim(&mut w, &subnets, p).await?;
        put(&mut w, p).await?;
        ops.push(ursa_core::store::Op::delete(KIND, &d.id));
    }
    w.commit(&ops).await?;
    Ok(docs.len())
}

/// Gives a new port (built without a MAC and addresses) a fresh MAC and
/// its addresses on its network (`reqs`, or the default ones), and stores
/// it.
pub async fn create(
    w: &mut WriteTx,
    subnets: &Subnets,
    mut p: Rec,
    reqs: Option<&[IpRequest]>,
) -> Result<Rec> {
    let id = st(&p, "id").to_string();
    let mac = fresh_mac(w.conn(), &subnets.net).await?;
    let ips = allocate(w, subnets, &id, &mac, reqs).await?;
    p.insert("mac_address".into(), json!(mac));
    p.insert("fixed_ips".into(), Value::Array(ips));
    put_new(w, &p).await?;
    Ok(p)
}

/// Whether any port is in the security group `sg` (by `net_port_groups`).
pub async fn group_in_use(c: &mut AnyConnection, sg: &str) -> Result<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM net_port_groups WHERE group_id = $1 LIMIT 1")
            .bind(sg)
            .fetch_optional(c)
            .await
            .map_err(db)?
            .is_some(),
    )
}
