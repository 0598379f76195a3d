//! Subnet pools (with prefix allocation for subnets made from a pool),
//! address scopes and service providers, as Neutron's `subnet_allocation`,
//! `default-subnetpools`, `address-scope` and `service-type` extensions
//! define them.

use super::*;
use ipnet::IpNet;

pub const SUBNETPOOL: &str = "subnetpool";
pub const ADDRESS_SCOPE: &str = "address_scope";

const POOL_CREATE: &[&str] = &[
    "name",
    "description",
    "prefixes",
    "default_prefixlen",
    "min_prefixlen",
    "max_prefixlen",
    "address_scope_id",
    "shared",
    "is_default",
    "default_quota",
    "tenant_id",
    "project_id",
];
const POOL_UPDATE: &[&str] = &[
    "name",
    "description",
    "prefixes",
    "default_prefixlen",
    "min_prefixlen",
    "max_prefixlen",
    "address_scope_id",
    "is_default",
    "default_quota",
];
const POOL_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "tenant_id",
    "project_id",
    "prefixes",
    "default_prefixlen",
    "min_prefixlen",
    "max_prefixlen",
    "address_scope_id",
    "ip_version",
    "shared",
    "is_default",
    "default_quota",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];
const SCOPE_FIELDS: &[&str] = &[
    "id",
    "name",
    "tenant_id",
    "project_id",
    "shared",
    "ip_version",
];

fn visible(auth: &Auth, r: &Rec) -> bool {
    owns(auth, r) || r["shared"] == true
}

pub(super) fn find_pool(m: &Model, auth: &Auth, id: &str) -> Result<Rec> {
    rec(m, SUBNETPOOL, id)
        .filter(|p| visible(auth, p))
        .ok_or_else(|| Error::NotFound(format!("Subnet pool {id} could not be found.")))
}

fn find_scope(m: &Model, auth: &Auth, id: &str) -> Result<Rec> {
    rec(m, ADDRESS_SCOPE, id)
        .filter(|s| visible(auth, s))
        .ok_or_else(|| Error::NotFound(format!("Address scope {id} could not be found.")))
}

/// A pool or scope the caller may change: its own (a shared one it does
/// not own is as good as missing, as in Neutron).
fn owned(r: Result<Rec>, auth: &Auth, what: &str, id: &str) -> Result<Rec> {
    r.and_then(|r| {
        if owns(auth, &r) {
            Ok(r)
        } else {
            Err(Error::NotFound(format!("{what} {id} could not be found.")))
        }
    })
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadRequest(format!("Invalid input for operation: {}", msg.into()))
}

/// A pool's prefixes: valid CIDRs of one IP version, as networks.
fn parse_prefixes(v: &Value) -> Result<Vec<IpNet>> {
    let a = v
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| bad("prefixes must be a non-empty list of CIDRs."))?;
    let mut out: Vec<IpNet> = Vec::new();
    for p in a {
        let n: IpNet = p
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("'{p}' is not a valid CIDR.")))?;
        out.push(n.trunc());
    }
    if out
        .iter()
        .any(|n| n.max_prefix_len() != out[0].max_prefix_len())
    {
        return Err(bad(
            "Illegal subnetpool prefix: the prefixes mix IPv4 and IPv6.",
        ));
    }
    Ok(IpNet::aggregate(&out))
}

/// Reads and checks a pool's prefix lengths against its prefixes.
fn prefix_lens(b: &Rec, old: Option<&Rec>, version: u8) -> Result<(i64, i64, i64)> {
    let max_len = if version == 4 { 32 } else { 128 };
    let pick = |k: &str, dflt: i64| -> Result<i64> {
        Ok(opt_int(b, k)?
            .or_else(|| old.and_then(|o| o[k].as_i64()))
            .unwrap_or(dflt))
    };
    let min = pick("min_prefixlen", if version == 4 { 8 } else { 64 })?;
    let max = pick("max_prefixlen", max_len)?;
    let default = pick("default_prefixlen", min)?;
    if !(0..=max_len).contains(&min)
        || !(0..=max_len).contains(&max)
        || min > max
        || default < min
        || default > max
    {
        return Err(bad(format!(
            "Illegal prefix bounds: min_prefixlen={min}, default_prefixlen={default}, max_prefixlen={max}."
        )));
    }
    Ok((min, default, max))
}

fn version_of(n: &IpNet) -> u8 {
    if n.max_prefix_len() == 32 {
        4
    } else {
        6
    }
}

fn prefixes_of(p: &Rec) -> Vec<IpNet> {
    p["prefixes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// The subnets a pool has handed out.
async fn used_by(c: &mut sqlx::AnyConnection, pool: &str) -> Result<Vec<IpNet>> {
    Ok(rows::SUBNETS
        .where_eq(c, "subnetpool_id", pool)
        .await?
        .iter()
        .filter_map(|s| st(s, "cidr").parse().ok())
        .collect())
}

/// The first block of length `len` inside the pool's prefixes that no
/// subnet of the pool overlaps: candidates are walked in order, jumping
/// past each subnet in the way (at most one step per subnet).
fn first_free(prefixes: &[IpNet], used: &[IpNet], len: u8) -> Option<IpNet> {
    for p in prefixes {
        if len < p.prefix_len() || len > p.max_prefix_len() {
            continue;
        }
        let bits = u32::from(p.max_prefix_len() - len);
        let size: u128 = if bits >= 128 {
            u128::MAX
        } else {
            1u128 << bits
        };
        let end = ipam::to_u128(p.broadcast());
        let mut start = ipam::to_u128(p.network());
        loop {
            let last = start.checked_add(size - 1)?;
            if last > end {
                break;
            }
            let blocker = used.iter().find(|u| {
                let (us, ue) = (ipam::to_u128(u.network()), ipam::to_u128(u.broadcast()));
                us <= last && ue >= start
            });
            match blocker {
                None => {
                    let ip = ipam::from_u128(start, version_of(p));
                    return IpNet::new(ip, len).ok();
                }
                Some(u) => {
                    let ue = ipam::to_u128(u.broadcast());
                    // The next aligned block after the one in the way.
                    start = match ue.checked_add(1) {
                        Some(n) => n.div_ceil(size).checked_mul(size)?,
                        None => break,
                    };
                }
            }
        }
    }
    None
}

/// For a subnet create that names a pool (`subnetpool_id`, or
/// `use_default_subnetpool`): the CIDR it gets (the one asked for, if it
/// lies in the pool and is free; else the first free block of
/// `prefixlen`) and the pool's id. `None` when no pool is named.
pub(super) async fn cidr_from_pool(
    w: &mut NetWriter<'_>,
    auth: &Auth,
    b: &Rec,
) -> Result<Option<(IpNet, String)>> {
    let asked_version = opt_int(b, "ip_version")?.unwrap_or(4);
    let pool = {
        let m = w.model();
        match (
            b.get("subnetpool_id"),
            opt_bool(b, "use_default_subnetpool")?,
        ) {
            (Some(Value::String(id)), _) => find_pool(&m, auth, id)?,
            (_, Some(true)) => recs(&m, SUBNETPOOL)
                .find(|p| p["is_default"] == true && p["ip_version"] == asked_version)
                .cloned()
                .ok_or_else(|| {
                    bad(format!(
                        "No default subnetpool found for IPv{asked_version}."
                    ))
                })?,
            _ => return Ok(None),
        }
    };
    let pid = st(&pool, "id").to_string();
    let prefixes = prefixes_of(&pool);
    let used = used_by(w.conn(), &pid).await?;
    let (min, max) = (
        pool["min_prefixlen"].as_i64().unwrap_or(0),
        pool["max_prefixlen"].as_i64().unwrap_or(128),
    );
    if let Some(c) = opt_str(b, "cidr")? {
        let net = ipam::parse_cidr(&c)?;
        let inside = prefixes.iter().any(|p| p.contains(&net));
        let len = i64::from(net.prefix_len());
        if !inside || len < min || len > max {
            return Err(bad(format!(
                "Cidr {net} is not within subnet pool {pid}'s prefixes and prefix bounds."
            )));
        }
        if used
            .iter()
            .any(|u| u.contains(&net.network()) || net.contains(&u.network()))
        {
            return Err(Error::Conflict(format!(
                "Unable to allocate subnet with prefix {net}: it overlaps a subnet of pool {pid}."
            )));
        }
        return Ok(Some((net, pid)));
    }
    let len = opt_int(b, "prefixlen")?
        .or_else(|| pool["default_prefixlen"].as_i64())
        .unwrap_or(min);
    if len < min || len > max {
        return Err(bad(format!(
            "Requested prefixlen {len} is outside the pool's bounds [{min}, {max}]."
        )));
    }
    let net = first_free(&prefixes, &used, len as u8).ok_or_else(|| {
        Error::Conflict(format!(
            "Unable to allocate subnet with prefix length {len}, subnet pool {pid} is exhausted."
        ))
    })?;
    Ok(Some((net, pid)))
}

pub(super) async fn list_pools(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let items: Vec<Rec> = {
        let m = app.identity.model();
        recs(&m, SUBNETPOOL)
            .filter(|p| visible(&auth, p))
            .map(public)
            .collect()
    };
    list_response(&app, raw, "subnetpools", POOL_FIELDS, items)
}

pub(super) async fn show_pool(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let p = find_pool(&m, &auth, &id)?;
    Ok(Json(json!({"subnetpool": show_fields(&raw, public(&p))})))
}

/// Checks an `address_scope_id` for a pool of `version`.
fn scope_for(m: &Model, auth: &Auth, b: &Rec, version: u8) -> Result<Option<Value>> {
    match b.get("address_scope_id") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(Value::Null)),
        Some(Value::String(id)) => {
            let s = find_scope(m, auth, id)?;
            if s["ip_version"] != version {
                return Err(bad(format!(
                    "Illegal subnetpool association: address scope {id} is not IPv{version}."
                )));
            }
            Ok(Some(json!(id)))
        }
        Some(v) => Err(bad(format!("'{v}' is not a valid address scope id."))),
    }
}

pub(super) async fn create_pool(
    State(app): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let b = body_obj(&body, "subnetpool")?;
    check_keys(&b, POOL_CREATE)?;
    let a = &auth;
    let p = svc(&app)
        .change(|m| {
            let owner = owner_for(a, &b)?;
            let name = opt_str(&b, "name")?
                .ok_or_else(|| bad("'name' is required for a subnet pool."))?;
            let prefixes = parse_prefixes(b.get("prefixes").unwrap_or(&Value::Null))?;
            let version = version_of(&prefixes[0]);
            let (min, default, max) = prefix_lens(&b, None, version)?;
            let shared = opt_bool(&b, "shared")?.unwrap_or(false);
            let is_default = opt_bool(&b, "is_default")?.unwrap_or(false);
            if (shared || is_default) && !is_admin(a) {
                return Err(Error::Forbidden(
                    "rule:create_subnetpool:shared (or :is_default) is disallowed by policy".into(),
                ));
            }
            if is_default && recs(m, SUBNETPOOL).any(|x| x["is_default"] == true && x["ip_version"] == version) {
                return Err(Error::BadRequest(format!(
                    "Invalid input for operation: A default subnetpool for this IP family (IPv{version}) has already been set."
                )));
            }
            let scope = scope_for(m, a, &b, version)?.unwrap_or(Value::Null);
            let mut p = standard(&owner);
            p.insert("name".into(), json!(name));
            p.insert(
                "description".into(),
                json!(opt_str(&b, "description")?.unwrap_or_default()),
            );
            p.insert(
                "prefixes".into(),
                json!(prefixes.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
            );
            p.insert("ip_version".into(), json!(version));
            p.insert("min_prefixlen".into(), json!(min));
            p.insert("default_prefixlen".into(), json!(default));
            p.insert("max_prefixlen".into(), json!(max));
            p.insert("address_scope_id".into(), scope);
            p.insert("shared".into(), json!(shared));
            p.insert("is_default".into(), json!(is_default));
            p.insert(
                "default_quota".into(),
                opt_int(&b, "default_quota")?.map_or(Value::Null, |q| json!(q)),
            );
            Ok((vec![put(SUBNETPOOL, &p)], p))
        })
        .await?;
    Ok(created("subnetpool", Value::Object(public(&p))))
}

pub(super) async fn update_pool(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "subnetpool")?;
    check_keys(&b, POOL_UPDATE)?;
    let a = &auth;
    let p = svc(&app)
        .change(|m| {
            let mut p = owned(find_pool(m, a, &id), a, "Subnet pool", &id)?;
            if_match.check(&p)?;
            let version = p["ip_version"].as_u64().unwrap_or(4) as u8;
            if let Some(v) = b.get("prefixes") {
                // Prefixes may grow, never shrink (subnets may use them).
                let new = parse_prefixes(v)?;
                let old = prefixes_of(&p);
                if version_of(&new[0]) != version
                    || !old.iter().all(|o| new.iter().any(|n| n.contains(o)))
                {
                    return Err(bad(
                        "Illegal update to prefixes: existing prefixes must stay covered.",
                    ));
                }
                p.insert(
                    "prefixes".into(),
                    json!(new.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
                );
            }
            let (min, default, max) = prefix_lens(&b, Some(&p), version)?;
            p.insert("min_prefixlen".into(), json!(min));
            p.insert("default_prefixlen".into(), json!(default));
            p.insert("max_prefixlen".into(), json!(max));
            for k in ["name", "description"] {
                if let Some(v) = opt_str(&b, k)? {
                    p.insert(k.into(), json!(v));
                }
            }
            if let Some(d) = opt_bool(&b, "is_default")? {
                if !is_admin(a) {
                    return Err(Error::Forbidden(
                        "rule:update_subnetpool:is_default is disallowed by policy".into(),
                    ));
                }
                p.insert("is_default".into(), json!(d));
            }
            if let Some(s) = scope_for(m, a, &b, version)? {
                p.insert("address_scope_id".into(), s);
            }
            if b.contains_key("default_quota") {
                p.insert(
                    "default_quota".into(),
                    opt_int(&b, "default_quota")?.map_or(Value::Null, |q| json!(q)),
                );
            }
            bump(&mut p);
            Ok((vec![put(SUBNETPOOL, &p)], p))
        })
        .await?;
    Ok(Json(json!({"subnetpool": public(&p)})))
}

pub(super) async fn delete_pool(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let a = &auth;
    let mut w = svc(&app).write().await?;
    let in_use = !used_by(w.conn(), &id).await?.is_empty();
    let (ops, ()) = w.plan(|m| {
            let p = owned(find_pool(m, a, &id), a, "Subnet pool", &id)?;
            if_match.check(&p)?;
            if in_use {
                return Err(Error::Conflict(format!(
                    "Unable to complete operation on subnetpool {id}. The subnetpool is in use by subnets."
                )));
            }
            Ok((vec![Op::delete(SUBNETPOOL, &id)], ()))
        })?;
    w.commit(&ops).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub(super) async fn list_scopes(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let items: Vec<Rec> = {
        let m = app.identity.model();
        recs(&m, ADDRESS_SCOPE)
            .filter(|s| visible(&auth, s))
            .map(public)
            .collect()
    };
    list_response(&app, raw, "address_scopes", SCOPE_FIELDS, items)
}

pub(super) async fn show_scope(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let s = find_scope(&m, &auth, &id)?;
    Ok(Json(
        json!({"address_scope": show_fields(&raw, public(&s))}),
    ))
}

pub(super) async fn create_scope(
    State(app): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let b = body_obj(&body, "address_scope")?;
    check_keys(
        &b,
        &["name", "ip_version", "shared", "tenant_id", "project_id"],
    )?;
    let a = &auth;
    let s = svc(&app)
        .change(|_| {
            let owner = owner_for(a, &b)?;
            let name = opt_str(&b, "name")?
                .ok_or_else(|| bad("'name' is required for an address scope."))?;
            let version = opt_int(&b, "ip_version")?
                .filter(|v| *v == 4 || *v == 6)
                .ok_or_else(|| bad("ip_version must be 4 or 6."))?;
            let shared = opt_bool(&b, "shared")?.unwrap_or(false);
            if shared && !is_admin(a) {
                return Err(Error::Forbidden(
                    "rule:create_address_scope:shared is disallowed by policy".into(),
                ));
            }
            let mut s = standard(&owner);
            for k in [
                "description",
                "tags",
                "created_at",
                "updated_at",
                "revision_number",
            ] {
                s.remove(k);
            }
            s.insert("name".into(), json!(name));
            s.insert("ip_version".into(), json!(version));
            s.insert("shared".into(), json!(shared));
            Ok((vec![put(ADDRESS_SCOPE, &s)], s))
        })
        .await?;
    Ok(created("address_scope", Value::Object(public(&s))))
}

pub(super) async fn update_scope(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "address_scope")?;
    check_keys(&b, &["name", "shared"])?;
    let a = &auth;
    let s = svc(&app)
        .change(|m| {
            let mut s = owned(find_scope(m, a, &id), a, "Address scope", &id)?;
            if let Some(n) = opt_str(&b, "name")? {
                s.insert("name".into(), json!(n));
            }
            if let Some(sh) = opt_bool(&b, "shared")? {
                // Neutron lets a scope become shared, never private again.
                if !sh && s["shared"] == true {
                    return Err(bad("Unsharing an address scope is not allowed."));
                }
                if sh && !is_admin(a) {
                    return Err(Error::Forbidden(
                        "rule:update_address_scope:shared is disallowed by policy".into(),
                    ));
                }
                s.insert("shared".into(), json!(sh));
            }
            Ok((vec![put(ADDRESS_SCOPE, &s)], s))
        })
        .await?;
    Ok(Json(json!({"address_scope": public(&s)})))
}

pub(super) async fn delete_scope(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let a = &auth;
    svc(&app)
        .change(|m| {
            owned(find_scope(m, a, &id), a, "Address scope", &id)?;
            if recs(m, SUBNETPOOL).any(|p| st(p, "address_scope_id") == id) {
                return Err(Error::Conflict(format!(
                    "Unable to complete operation on address scope {id}. There are one or more subnet pools in use on the address scope."
                )));
            }
            Ok((vec![Op::delete(ADDRESS_SCOPE, &id)], ()))
        })
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /service-providers`: the one L3 provider Ursa has.
pub(super) async fn service_providers(_auth: Auth) -> Json<Value> {
    Json(json!({"service_providers": [
        {"service_type": "L3_ROUTER_NAT", "name": "ursa-netd", "default": true}
    ]}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_come_first_free_and_aligned() {
        let pool = [n("10.10.0.0/16")];
        assert_eq!(first_free(&pool, &[], 24), Some(n("10.10.0.0/24")));
        let used = [n("10.10.0.0/24"), n("10.10.1.0/25")];
        assert_eq!(first_free(&pool, &used, 24), Some(n("10.10.2.0/24")));
        assert_eq!(first_free(&pool, &used, 25), Some(n("10.10.1.128/25")));
        assert_eq!(first_free(&pool, &[n("10.10.0.0/16")], 24), None);
        let v6 = [n("2001:db8::/32")];
        assert_eq!(
            first_free(&v6, &[n("2001:db8::/33")], 64),
            Some(n("2001:db8:8000::/64"))
        );
        // A length outside the prefix is no block.
        assert_eq!(first_free(&pool, &[], 8), None);
    }
}
