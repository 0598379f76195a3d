//! Security groups and rules.

use super::*;

pub(super) fn find_sg(m: &Model, auth: &Auth, id: &str) -> Result<Rec> {
    rec(m, SG, id)
        .filter(|g| owns(auth, g))
        .ok_or_else(|| Error::NotFound(format!("Security group {id} does not exist")))
}

/// Makes the caller's default group exist before it is looked for.
pub(super) async fn ensure_default_sg(s: &Networks, auth: &Auth) -> Result<()> {
    let p = project(auth).to_string();
    if p.is_empty() {
        return Ok(());
    }
    let missing = {
        let m = s.identity.model();
        default_sg_id(&m, &p).is_none()
    };
    if missing {
        s.change(|m| Ok((Networks::default_sg_ops(m, &p), ())))
            .await?;
    }
    Ok(())
}

pub(super) async fn list_sgs(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    if auth.0.has("member") || is_admin(&auth) {
        ensure_default_sg(svc(&app), &auth).await?;
    }
    let items: Vec<Rec> = {
        let m = app.identity.model();
        // An admin's list is every group; a project's, its own (by index).
        let groups: Vec<&Rec> = if is_admin(&auth) {
            recs(&m, SG).collect()
        } else {
            m.docs_where(SG, "project_id", project(&auth))
                .filter_map(|g| g.as_object())
                .filter(|g| owns(&auth, g))
                .collect()
        };
        groups.into_iter().map(|g| sg_view(&m, g)).collect()
    };
    list_response(&app, raw, "security_groups", SG_FIELDS, items)
}

pub(super) async fn show_sg(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let g = find_sg(&m, &auth, &id)?;
    Ok(Json(
        json!({"security_group": show_fields(&raw, sg_view(&m, &g))}),
    ))
}

pub(super) async fn create_sg(
    State(app): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let b = body_obj(&body, "security_group")?;
    check_keys(
        &b,
        &[
            "name",
            "description",
            "tenant_id",
            "project_id",
            "stateful",
            "shared",
        ],
    )?;
    let s = svc(&app);
    ensure_default_sg(s, &auth).await?;
    let a = &auth;
    let g = s
        .change(|m| {
            let owner = owner_for(a, &b)?;
            let name = opt_str(&b, "name")?.unwrap_or_default();
            let mut ops = Networks::default_sg_ops(m, &owner);
            if name == "default" && (!ops.is_empty() || default_sg_id(m, &owner).is_some()) {
                return Err(Error::Conflict(
                    "Default security group already exists.".into(),
                ));
            }
            Networks::check_quota(m, &owner, "security_group", 1)?;
            let mut g = standard(&owner);
            g.insert("name".into(), json!(name));
            g.insert(
                "description".into(),
                json!(opt_str(&b, "description")?.unwrap_or_default()),
            );
            g.insert(
                "stateful".into(),
                json!(opt_bool(&b, "stateful")?.unwrap_or(true)),
            );
            g.insert("shared".into(), json!(false));
            let gid = st(&g, "id").to_string();
            ops.push(put(SG, &g));
            for eth in ["IPv4", "IPv6"] {
                let mut r = standard(&owner);
                r.remove("tags");
                for (k, v) in [
                    ("security_group_id", json!(gid)),
                    ("direction", json!("egress")),
                    ("ethertype", json!(eth)),
                    ("protocol", Value::Null),
                    ("port_range_min", Value::Null),
                    ("port_range_max", Value::Null),
                    ("remote_ip_prefix", Value::Null),
                    ("remote_group_id", Value::Null),
                    ("remote_address_group_id", Value::Null),
                    ("normalized_cidr", Value::Null),
                    ("description", json!("")),
                    ("belongs_to_default_sg", json!(false)),
                ] {
                    r.insert(k.into(), v);
                }
                ops.push(put(RULE, &r));
            }
            Ok((ops, g))
        })
        .await?;
    let m = app.identity.model();
    Ok(created("security_group", Value::Object(sg_view(&m, &g))))
}

pub(super) async fn update_sg(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let b = body_obj(&body, "security_group")?;
    check_keys(&b, &["name", "description", "stateful"])?;
    let s = svc(&app);
    let a = &auth;
    let g = s
        .change(|m| {
            let mut g = find_sg(m, a, &id)?;
            if_match.check(&g)?;
            if let Some(n) = opt_str(&b, "name")? {
                if st(&g, "name") == "default" && n != "default" {
                    return Err(Error::Conflict(
                        "Updating default security group not allowed.".into(),
                    ));
                }
                if n == "default" && st(&g, "name") != "default" {
                    return Err(Error::Conflict(
                        "Default security group already exists.".into(),
                    ));
                }
                g.insert("name".into(), json!(n));
            }
            if let Some(v) = opt_str(&b, "description")? {
                g.insert("description".into(), json!(v));
            }
            if let Some(v) = opt_bool(&b, "stateful")? {
                g.insert("stateful".into(), json!(v));
            }
            bump(&mut g);
            Ok((vec![put(SG, &g)], g))
        })
        .await?;
    let m = app.identity.model();
    Ok(Json(json!({"security_group": sg_view(&m, &g)})))
}

pub(super) async fn delete_sg(
    State(app): State<AppState>,
    auth: Auth,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    let mut w = s.write().await?;
    let in_use = port_table::group_in_use(w.conn(), &id).await?;
    let (ops, ()) = w.plan(|m| {
        let g = find_sg(m, a, &id)?;
        if_match.check(&g)?;
        if st(&g, "name") == "default" && !is_admin(a) {
            return Err(Error::Conflict(
                "Removing default security group not allowed.".into(),
            ));
        }
        if in_use {
            return Err(Error::Conflict(format!("Security Group {id} in use.")));
        }
        // Its rules go, and so do other groups' rules naming it as their
        // remote group (Neutron cascades them).
        let rules: std::collections::BTreeSet<&str> = m
            .docs_where(RULE, "security_group_id", &id)
            .chain(m.docs_where(RULE, "remote_group_id", &id))
            .filter_map(|r| r["id"].as_str())
            .collect();
        let mut ops: Vec<Op> = rules.into_iter().map(|r| Op::delete(RULE, r)).collect();
        ops.push(Op::delete(SG, &id));
        Ok((ops, ()))
    })?;
    w.commit(&ops).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub(super) async fn list_rules(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let items: Vec<Rec> = {
        let m = app.identity.model();
        recs(&m, RULE)
            .filter(|r| {
                owns(&auth, r)
                    || rec(&m, SG, st(r, "security_group_id")).is_some_and(|g| owns(&auth, &g))
            })
            .map(public)
            .collect()
    };
    list_response(&app, raw, "security_group_rules", RULE_FIELDS, items)
}

pub(super) fn find_rule(m: &Model, auth: &Auth, id: &str) -> Result<Rec> {
    rec(m, RULE, id)
        .filter(|r| {
            owns(auth, r) || rec(m, SG, st(r, "security_group_id")).is_some_and(|g| owns(auth, &g))
        })
        .ok_or_else(|| Error::NotFound(format!("Security group rule {id} does not exist")))
}

pub(super) async fn show_rule(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let r = find_rule(&m, &auth, &id)?;
    Ok(Json(
        json!({"security_group_rule": show_fields(&raw, public(&r))}),
    ))
}

pub(super) const PROTOCOLS: &[(&str, u8)] = &[
    ("ah", 51),
    ("dccp", 33),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("icmp", 1),
    ("icmpv6", 58),
    ("igmp", 2),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", 132),
    ("tcp", 6),
    ("udp", 17),
    ("udplite", 136),
    ("vrrp", 112),
];

/// The protocol as stored (a name, or a number as a string) and its number.
pub(super) fn parse_protocol(v: Option<&Value>) -> Result<(Value, Option<u8>)> {
    let s = match v {
        None | Some(Value::Null) => return Ok((Value::Null, None)),
        Some(Value::String(s)) if s.is_empty() || s == "any" => return Ok((Value::Null, None)),
        Some(Value::String(s)) => s.to_lowercase(),
        Some(Value::Number(n)) => n.to_string(),
        Some(v) => {
            return Err(Error::BadRequest(format!(
                "Security group rule protocol {v} not supported."
            )))
        }
    };
    if let Some((name, n)) = PROTOCOLS.iter().find(|(p, _)| *p == s) {
        return Ok((json!(name), Some(*n)));
    }
    match s.parse::<u16>() {
        Ok(n) if n <= 255 => Ok((json!(s), Some(n as u8))),
        _ => Err(Error::BadRequest(format!(
            "Security group rule protocol {s} not supported. Only protocol values [None, {}] and integer representations [0 to 255] are supported.",
            PROTOCOLS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
        ))),
    }
}

pub(super) fn plan_rule(m: &Model, auth: &Auth, b: &Rec) -> Result<(Vec<Op>, Rec)> {
    check_keys(
        b,
        &[
            "security_group_id",
            "direction",
            "ethertype",
            "protocol",
            "port_range_min",
            "port_range_max",
            "remote_ip_prefix",
            "remote_group_id",
            "remote_address_group_id",
            "description",
            "tenant_id",
            "project_id",
        ],
    )?;
    let gid = opt_str(b, "security_group_id")?.ok_or_else(|| {
        Error::BadRequest("Invalid input: 'security_group_id' is required.".into())
    })?;
    let g = find_sg(m, auth, &gid)?;
    let owner = owner_for(auth, b).unwrap_or_else(|_| st(&g, "project_id").to_string());
    let owner = if owner.is_empty() {
        st(&g, "project_id").to_string()
    } else {
        owner
    };
    let direction = opt_str(b, "direction")?.unwrap_or_default();
    if direction != "ingress" && direction != "egress" {
        return Err(Error::BadRequest(format!(
            "Invalid input for direction. Reason: '{direction}' is not in ['ingress', 'egress']."
        )));
    }
    let ethertype = opt_str(b, "ethertype")?.unwrap_or_else(|| "IPv4".into());
    let ethertype = match ethertype.to_lowercase().as_str() {
        "ipv4" => "IPv4",
        "ipv6" => "IPv6",
        _ => {
            return Err(Error::BadRequest(format!(
                "Invalid input for ethertype. Reason: '{ethertype}' is not in ['IPv4', 'IPv6']."
            )))
        }
    };
    let (protocol, number) = parse_protocol(b.get("protocol"))?;
    let min = opt_int(b, "port_range_min")?;
    let max = opt_int(b, "port_range_max")?;
    match number {
        Some(6) | Some(17) | Some(132) | Some(33) | Some(136) => {
            for v in [min, max].into_iter().flatten() {
                if !(1..=65535).contains(&v) {
                    return Err(Error::BadRequest(format!("Invalid value for port {v}")));
                }
            }
            match (min, max) {
                (None, Some(_)) => {
                    return Err(Error::BadRequest(
                        "For TCP/UDP protocols, port_range_min must be <= port_range_max".into(),
                    ))
                }
                (Some(lo), Some(hi)) if lo > hi => {
                    return Err(Error::BadRequest(
                        "For TCP/UDP protocols, port_range_min must be <= port_range_max".into(),
                    ))
                }
                _ => {}
            }
        }
        Some(1) | Some(58) => {
            if max.is_some() && min.is_none() {
                return Err(Error::BadRequest(format!(
                    "ICMP code (port-range-max) {} is provided but ICMP type (port-range-min) is missing.",
                    max.unwrap_or(0)
                )));
            }
            if let Some(v) = min.filter(|v| !(0..=255).contains(v)) {
                return Err(Error::BadRequest(format!(
                    "Invalid value for ICMP type (port-range-min): {v}. It must be 0 to 255."
                )));
            }
            if let Some(v) = max.filter(|v| !(0..=255).contains(v)) {
                return Err(Error::BadRequest(format!(
                    "Invalid value for ICMP code (port-range-max): {v}. It must be 0 to 255."
                )));
            }
        }
        _ => {
            if min.is_some() || max.is_some() {
                return Err(Error::BadRequest(
                    "Port range is only allowed for protocols TCP, UDP, UDP-Lite, SCTP, DCCP, ICMP and ICMPv6.".into(),
                ));
            }
        }
    }
    if number == Some(58) && ethertype == "IPv4" {
        return Err(Error::BadRequest(
            "Protocol ipv6-icmp is not supported with IPv4 ethertype.".into(),
        ));
    }
    let prefix = opt_str(b, "remote_ip_prefix")?;
    let remote_group = opt_str(b, "remote_group_id")?;
    if prefix.is_some() && remote_group.is_some() {
        return Err(Error::BadRequest(
            "Only remote_ip_prefix or remote_group_id may be provided.".into(),
        ));
    }
    let (prefix, normalized) = match prefix {
        Some(p) => {
            let net: ipnet::IpNet = p
                .parse()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| Error::BadRequest(format!("Invalid input for remote_ip_prefix. Reason: '{p}' is not a valid IP subnet.")))?;
            let v = if net.max_prefix_len() == 32 {
                "IPv4"
            } else {
                "IPv6"
            };
            if v != ethertype {
                return Err(Error::BadRequest(format!(
                    "Conflicting value ethertype {ethertype} for CIDR {p}"
                )));
            }
            (json!(net.to_string()), json!(net.trunc().to_string()))
        }
        None => (Value::Null, Value::Null),
    };
    if let Some(rg) = &remote_group {
        if rec(m, SG, rg).filter(|x| owns(auth, x)).is_none() {
            return Err(Error::NotFound(format!(
                "Security group {rg} does not exist"
            )));
        }
    }
    let max = match number {
        Some(6) | Some(17) | Some(132) | Some(33) | Some(136) => max.or(min),
        _ => max,
    };
    let (pmin, pmax) = (
        min.map(|v| json!(v)).unwrap_or(Value::Null),
        max.map(|v| json!(v)).unwrap_or(Value::Null),
    );
    let same = |r: &Rec| {
        st(r, "security_group_id") == gid
            && st(r, "direction") == direction
            && st(r, "ethertype") == ethertype
            && r.get("protocol").unwrap_or(&Value::Null) == &protocol
            && r.get("port_range_min").unwrap_or(&Value::Null) == &pmin
            && r.get("port_range_max").unwrap_or(&Value::Null) == &pmax
            && r.get("normalized_cidr").unwrap_or(&Value::Null) == &normalized
            && r.get("remote_group_id").and_then(|v| v.as_str()) == remote_group.as_deref()
    };
    if let Some(dup) = m
        .docs_where(RULE, "security_group_id", &gid)
        .filter_map(|r| r.as_object())
        .find(|r| same(r))
    {
        return Err(Error::Conflict(format!(
            "Security group rule already exists. Rule id is {}.",
            st(dup, "id")
        )));
    }
    Networks::check_quota(m, &owner, "security_group_rule", 1)?;
    let mut r = standard(&owner);
    r.remove("tags");
    for (k, v) in [
        ("security_group_id", json!(gid)),
        ("direction", json!(direction)),
        ("ethertype", json!(ethertype)),
        ("protocol", protocol),
        ("port_range_min", pmin),
        ("port_range_max", pmax),
        ("remote_ip_prefix", prefix),
        ("remote_group_id", json!(remote_group)),
        ("remote_address_group_id", Value::Null),
        ("normalized_cidr", normalized),
        (
            "description",
            json!(opt_str(b, "description")?.unwrap_or_default()),
        ),
        ("belongs_to_default_sg", json!(st(&g, "name") == "default")),
    ] {
        r.insert(k.into(), v);
    }
    Ok((vec![put(RULE, &r)], r))
}

pub(super) async fn create_rule(
    State(app): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let (items, bulk) = body_many(&body, "security_group_rule", "security_group_rules")?;
    let mut out = Vec::new();
    for b in items {
        let a = &auth;
        let r = s.change(|m| plan_rule(m, a, &b)).await?;
        out.push(Value::Object(public(&r)));
    }
    Ok(if bulk {
        created("security_group_rules", Value::Array(out))
    } else {
        created("security_group_rule", out.pop().unwrap_or(Value::Null))
    })
}

pub(super) async fn delete_rule(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app);
    let a = &auth;
    s.change(|m| {
        find_rule(m, a, &id)?;
        Ok((vec![Op::delete(RULE, &id)], ()))
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
