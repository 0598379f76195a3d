//! Security groups and rules.

use super::*;

pub(super) async fn find_sg(c: &mut sqlx::AnyConnection, auth: &Auth, id: &str) -> Result<Rec> {
    sg_table::group(c, id)
        .await?
        .filter(|g| owns(auth, g))
        .ok_or_else(|| Error::NotFound(format!("Security group {id} does not exist")))
}

/// Makes the caller's default group exist before it is looked for.
pub(super) async fn ensure_callers_sg(s: &Networks, auth: &Auth) -> Result<()> {
    let p = project(auth).to_string();
    if p.is_empty()
        || sg_table::default_of(&mut *s.conn().await?, &p)
            .await?
            .is_some()
    {
        return Ok(());
    }
    let mut w = s.write().await?;
    Networks::ensure_default_sg(&mut w, &p).await?;
    w.commit(&[]).await
}

/// The one value of a filter the query gives, if it gives exactly one.
fn only(raw: &Option<String>, key: &str) -> Option<String> {
    let q = ListQuery::parse(raw.as_deref()).ok()?;
    match q.all(key).as_slice() {
        [v] => Some(v.to_string()),
        _ => None,
    }
}

pub(super) async fn list_sgs(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    if auth.0.has("member") || is_admin(&auth) {
        ensure_callers_sg(svc(&app), &auth).await?;
    }
    // A project's list is its own groups; an admin's every group, or one
    // project's when the query names one (read by the index either way).
    let scope = if is_admin(&auth) {
        only(&raw, "project_id").or_else(|| only(&raw, "tenant_id"))
    } else {
        Some(project(&auth).to_string())
    };
    let mut c = svc(&app).conn().await?;
    let groups = sg_table::listed(&mut c, scope.as_deref()).await?;
    let items = sg_views(&mut c, groups).await?;
    list_response(&app, raw, "security_groups", SG_FIELDS, items)
}

pub(super) async fn show_sg(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let mut c = svc(&app).conn().await?;
    let g = find_sg(&mut c, &auth, &id).await?;
    let v = sg_views(&mut c, vec![g]).await?.pop().unwrap_or_default();
    Ok(Json(json!({"security_group": show_fields(&raw, v)})))
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
    ensure_callers_sg(s, &auth).await?;
    let owner = owner_for(&auth, &b)?;
    let name = opt_str(&b, "name")?.unwrap_or_default();
    let mut w = s.write().await?;
    if Networks::ensure_default_sg(&mut w, &owner).await?.is_some() && name == "default" {
        return Err(Error::Conflict(
            "Default security group already exists.".into(),
        ));
    }
    Networks::check_row_quota(&mut w, &owner, "security_group", 1).await?;
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
    let mut ops = vec![put(SG, &g)];
    let mut rules = Vec::new();
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
        rules.push(r);
    }
    w.commit(&ops).await?;
    Ok(created(
        "security_group",
        Value::Object(sg_view(&g, &rules)),
    ))
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
    let mut w = s.write().await?;
    let mut g = find_sg(w.conn(), &auth, &id).await?;
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
    let rules = sg_table::rules_of(w.conn(), std::slice::from_ref(&id)).await?;
    w.commit(&[put(SG, &g)]).await?;
    Ok(Json(json!({"security_group": sg_view(&g, &rules)})))
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
    let g = find_sg(w.conn(), a, &id).await?;
    if_match.check(&g)?;
    if st(&g, "name") == "default" && !is_admin(a) {
        return Err(Error::Conflict(
            "Removing default security group not allowed.".into(),
        ));
    }
    if port_table::group_in_use(w.conn(), &id).await? {
        return Err(Error::Conflict(format!("Security Group {id} in use.")));
    }
    // Its rules go, and so do other groups' rules naming it as their
    // remote group (Neutron cascades them).
    let mut ops: Vec<Op> = sg_table::rules_with(w.conn(), &id)
        .await?
        .iter()
        .map(|r| Op::delete(RULE, r))
        .collect();
    ops.push(Op::delete(SG, &id));
    w.commit(&ops).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// Whether the caller may see a rule: its own, or one of its group's.
async fn sees_rule(c: &mut sqlx::AnyConnection, auth: &Auth, r: &Rec) -> Result<bool> {
    if owns(auth, r) {
        return Ok(true);
    }
    let g = sg_table::group(c, st(r, "security_group_id")).await?;
    Ok(g.is_some_and(|g| owns(auth, &g)))
}

pub(super) async fn list_rules(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let mut c = svc(&app).conn().await?;
    // One group's rules when the query names one group (the CLI's `rule
    // list GROUP`), else every rule the caller sees; by index either way.
    let rules = match only(&raw, "security_group_id") {
        Some(g) => {
            let visible = match sg_table::group(&mut c, &g).await? {
                Some(group) => owns(&auth, &group),
                None => false,
            };
            let rules = sg_table::rules_of(&mut c, &[g]).await?;
            if visible {
                rules
            } else {
                rules.into_iter().filter(|r| owns(&auth, r)).collect()
            }
        }
        None => {
            let scope = (!is_admin(&auth)).then(|| project(&auth));
            sg_table::visible_rules(&mut c, scope).await?
        }
    };
    let items = rules.iter().map(public).collect();
    list_response(&app, raw, "security_group_rules", RULE_FIELDS, items)
}

pub(super) async fn find_rule(c: &mut sqlx::AnyConnection, auth: &Auth, id: &str) -> Result<Rec> {
    let missing = || Error::NotFound(format!("Security group rule {id} does not exist"));
    let r = sg_table::rule(c, id).await?.ok_or_else(missing)?;
    if sees_rule(c, auth, &r).await? {
        Ok(r)
    } else {
        Err(missing())
    }
}

pub(super) async fn show_rule(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let r = find_rule(&mut *svc(&app).conn().await?, &auth, &id).await?;
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

/// A new rule from the request, checked inside the write `w` (its group,
/// its remote group, duplicates and the quota against what is stored).
pub(super) async fn plan_rule(
    w: &mut NetWriter<'_>,
    auth: &Auth,
    b: &Rec,
) -> Result<(Vec<Op>, Rec)> {
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
    let g = find_sg(w.conn(), auth, &gid).await?;
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
        let remote = sg_table::group(w.conn(), rg).await?;
        if remote.filter(|x| owns(auth, x)).is_none() {
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
    let existing = sg_table::rules_of(w.conn(), std::slice::from_ref(&gid)).await?;
    if let Some(dup) = existing.iter().find(|r| same(r)) {
        return Err(Error::Conflict(format!(
            "Security group rule already exists. Rule id is {}.",
            st(dup, "id")
        )));
    }
    Networks::check_row_quota(w, &owner, "security_group_rule", 1).await?;
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
        let mut w = s.write().await?;
        let (ops, r) = plan_rule(&mut w, &auth, &b).await?;
        w.commit(&ops).await?;
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
    let mut w = svc(&app).write().await?;
    find_rule(w.conn(), &auth, &id).await?;
    w.commit(&[Op::delete(RULE, &id)]).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
