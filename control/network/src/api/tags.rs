//! Zones, agents, tags.

use super::*;

pub(super) async fn zones(_auth: Auth) -> Json<Value> {
    Json(json!({"availability_zones": [
        {"name": "nova", "resource": "network", "state": "available"},
        {"name": "nova", "resource": "router", "state": "available"}
    ]}))
}

pub(super) async fn agents(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    if !is_admin(&auth) {
        // Neutron filters what policy hides: a member sees no agents.
        return Ok(Json(json!({"agents": []})));
    }
    let s = svc(&app);
    let nn = s.pusher.network_node().unwrap_or("").to_string();
    let mut out = Vec::new();
    for (name, alive, error) in s.pusher.status() {
        let mut kinds = vec![("Open vSwitch agent", "ursa-netd")];
        if name == nn {
            kinds.push(("DHCP agent", "ursa-netd-dhcp"));
            kinds.push(("L3 agent", "ursa-netd-l3"));
            kinds.push(("Metadata agent", "ursa-netd-metadata"));
        }
        for (ty, binary) in kinds {
            out.push(json!({
                "id": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{name}/{ty}").as_bytes()).to_string(),
                "agent_type": ty, "binary": binary, "host": name, "alive": alive,
                "admin_state_up": true, "availability_zone": "nova", "topic": "N/A",
                "description": error, "configurations": {}, "resources_synced": alive,
                "created_at": "", "started_at": "", "heartbeat_timestamp": ""
            }));
        }
    }
    Ok(Json(json!({"agents": out})))
}

pub(super) fn tag_kind(coll: &str) -> Result<&'static str> {
    Ok(match coll {
        "networks" => NETWORK,
        "subnets" => SUBNET,
        "ports" => PORT,
        "routers" => ROUTER,
        "floatingips" => FIP,
        "security-groups" => SG,
        "subnetpools" => SUBNETPOOL,
        _ => return Err(Error::NotFound("The resource could not be found.".into())),
    })
}

/// The tagged resource, as the caller may see it; one kept as a row is
/// read from its table (`row`, see [`tagged_row`]).
pub(super) async fn tag_target(
    c: &mut sqlx::AnyConnection,
    pool: Option<Result<Rec>>,
    auth: &Auth,
    kind: &str,
    id: &str,
    row: Option<Rec>,
) -> Result<Rec> {
    let mine = |r: Option<Rec>, what: &str| {
        r.filter(|r| owns(auth, r))
            .ok_or_else(|| not_found(what, id))
    };
    match kind {
        NETWORK => find_network(c, auth, id).await,
        SUBNET => find_subnet(c, auth, id).await,
        PORT => find_port(c, auth, id, row).await,
        ROUTER => mine(row, "Router"),
        FIP => mine(row, "Floating IP"),
        SUBNETPOOL => pool.unwrap_or_else(|| Err(not_found("Subnetpool", id))),
        _ => row
            .filter(|g| owns(auth, g))
            .ok_or_else(|| Error::NotFound(format!("Security group {id} does not exist"))),
    }
}

/// The port, security group, floating IP or router to tag, read from its table
/// (None for kinds still kept as documents).
async fn tagged_row(c: &mut sqlx::AnyConnection, kind: &str, id: &str) -> Result<Option<Rec>> {
    match kind {
        PORT => port_table::get(c, id).await,
        _ => match rows::table_of(kind) {
            Some(t) => t.get(c, id).await,
            None => Ok(None),
        },
    }
}

pub(super) fn check_tag(t: &str) -> Result<()> {
    if t.is_empty() || t.len() > 255 || t.contains(',') || t.contains('/') {
        return Err(Error::BadRequest(format!(
            "Invalid input for tags: '{t}' is not a valid tag."
        )));
    }
    Ok(())
}

pub(super) async fn retag(
    app: &AppState,
    auth: &Auth,
    coll: &str,
    id: &str,
    mut f: impl FnMut(&mut Vec<String>) -> Result<()>,
) -> Result<Vec<String>> {
    write_access(auth)?;
    let kind = tag_kind(coll)?;
    let mut w = svc(app).write().await?;
    let row = tagged_row(w.conn(), kind, id).await?;
    let pool = (kind == SUBNETPOOL).then(|| find_pool(&w.model(), auth, id));
    let mut r = tag_target(w.conn(), pool, auth, kind, id, row).await?;
    let (ops, tags) = {
        if !owns(auth, &r) {
            return Err(Error::Forbidden(
                "Changing tags of this resource is disallowed by policy".into(),
            ));
        }
        let mut tags = str_list(r.get("tags"));
        f(&mut tags)?;
        r.insert("tags".into(), json!(tags));
        bump(&mut r);
        (vec![put(kind, &r)], tags)
    };
    w.commit(&ops).await?;
    Ok(tags)
}

/// The tagged resource as the caller sees it, outside a write.
async fn tagged(app: &AppState, auth: &Auth, kind: &str, id: &str) -> Result<Rec> {
    let mut c = svc(app).conn().await?;
    let row = tagged_row(&mut c, kind, id).await?;
    let pool = (kind == SUBNETPOOL).then(|| find_pool(&app.identity.model(), auth, id));
    tag_target(&mut c, pool, auth, kind, id, row).await
}

pub(super) type TagPath = Path<(String, String)>;
pub(super) type TagItemPath = Path<(String, String, String)>;

pub(super) async fn get_tags(
    State(app): State<AppState>,
    auth: Auth,
    Path((coll, id)): TagPath,
) -> Result<Json<Value>> {
    let kind = tag_kind(&coll)?;
    let r = tagged(&app, &auth, kind, &id).await?;
    Ok(Json(json!({"tags": str_list(r.get("tags"))})))
}

pub(super) async fn has_tag(
    State(app): State<AppState>,
    auth: Auth,
    Path((coll, id, tag)): TagItemPath,
) -> Result<Response> {
    let kind = tag_kind(&coll)?;
    let r = tagged(&app, &auth, kind, &id).await?;
    if str_list(r.get("tags")).contains(&tag) {
        Ok(empty(StatusCode::NO_CONTENT))
    } else {
        Err(Error::NotFound(format!(
            "Tag {tag} could not be found for {coll} {id}."
        )))
    }
}

pub(super) async fn set_tags(
    State(app): State<AppState>,
    auth: Auth,
    Path((coll, id)): TagPath,
    body: Bytes,
) -> Result<Json<Value>> {
    let v: Value = parse_body(&body)?;
    let tags = v
        .get("tags")
        .and_then(|t| t.as_array())
        .ok_or_else(|| Error::BadRequest("Invalid input: 'tags' must be a list.".into()))?
        .iter()
        .map(|t| {
            t.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::BadRequest("Invalid input: tags are strings.".into()))
        })
        .collect::<Result<Vec<String>>>()?;
    for t in &tags {
        check_tag(t)?;
    }
    let tags = retag(&app, &auth, &coll, &id, |cur| {
        let mut uniq: Vec<String> = Vec::new();
        for t in tags.clone() {
            if !uniq.contains(&t) {
                uniq.push(t);
            }
        }
        *cur = uniq;
        Ok(())
    })
    .await?;
    Ok(Json(json!({"tags": tags})))
}

pub(super) async fn add_tag(
    State(app): State<AppState>,
    auth: Auth,
    Path((coll, id, tag)): TagItemPath,
) -> Result<Response> {
    check_tag(&tag)?;
    retag(&app, &auth, &coll, &id, |cur| {
        if !cur.contains(&tag) {
            cur.push(tag.clone());
        }
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::CREATED))
}

pub(super) async fn remove_tag(
    State(app): State<AppState>,
    auth: Auth,
    Path((coll, id, tag)): TagItemPath,
) -> Result<Response> {
    retag(&app, &auth, &coll, &id, |cur| {
        let before = cur.len();
        cur.retain(|t| *t != tag);
        if cur.len() == before {
            return Err(Error::NotFound(format!("Tag {tag} could not be found.")));
        }
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub(super) async fn clear_tags(
    State(app): State<AppState>,
    auth: Auth,
    Path((coll, id)): TagPath,
) -> Result<Response> {
    retag(&app, &auth, &coll, &id, |cur| {
        cur.clear();
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
