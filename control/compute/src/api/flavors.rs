//! Flavors.

use super::*;

/// A flavor at version `mv`: 2.55 adds its description (to every view),
/// 2.61 its extra specs (detailed views), 2.75 shows no swap as 0.
pub(super) fn flavor_view(app: &AppState, f: &Rec, detail: bool, mv: Mv) -> Value {
    let id = st(f, "id");
    let links = json!([
        {"rel": "self", "href": format!("{}/compute/v2.1/flavors/{id}", app.base_url)},
        {"rel": "bookmark", "href": format!("{}/compute/flavors/{id}", app.base_url)}
    ]);
    let description = f.get("description").cloned().unwrap_or(Value::Null);
    if !detail {
        let mut v = json!({"id": id, "name": f["name"], "links": links});
        if mv.at(55) {
            v["description"] = description;
        }
        return v;
    }
    let mut v = f.clone();
    v.remove("extra_specs");
    v.remove("description");
    v.retain(|k, _| !k.starts_with("ursa:"));
    v.insert("links".into(), links);
    if mv.at(55) {
        v.insert("description".into(), description);
    }
    if mv.at(61) {
        v.insert(
            "extra_specs".into(),
            f.get("extra_specs").cloned().unwrap_or(json!({})),
        );
    }
    if mv.at(75) && v.get("swap") == Some(&json!("")) {
        v.insert("swap".into(), json!(0));
    }
    Value::Object(v)
}

/// A flavor description (2.55): printable, at most 65,535 characters.
fn flavor_description(b: &Rec, mv: Mv) -> Result<Option<Value>> {
    match b.get("description") {
        None => Ok(None),
        Some(_) if !mv.at(55) => Err(Error::BadRequest(
            "Invalid input for field/attribute flavor. Value: Additional properties are not allowed ('description' was unexpected)".into(),
        )),
        Some(Value::Null) => Ok(Some(Value::Null)),
        Some(Value::String(d))
            if d.chars().count() <= 65535
                && !d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') =>
        {
            Ok(Some(json!(d)))
        }
        Some(_) => Err(Error::BadRequest(
            "Invalid input for field/attribute description.".into(),
        )),
    }
}

/// `PUT /flavors/{id}` (2.55): an admin changes a flavor's description,
/// the only thing about a flavor that changes.
pub(super) async fn update_flavor(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    if !mv.at(55) {
        return Err(Error::NotFound("The resource could not be found.".into()));
    }
    if !auth.0.is_admin() {
        return Err(Error::Forbidden(
            "Policy doesn't allow os_compute_api:os-flavor-manage:update to be performed.".into(),
        ));
    }
    let s = svc(&app)?;
    let mut f = find_flavor(s, &auth, &last(&p))?;
    let b = body_obj(&bytes, "flavor")?;
    if let Some(k) = b.keys().find(|k| *k != "description") {
        return Err(Error::BadRequest(format!(
            "Invalid input for field/attribute flavor. Value: Additional properties are not allowed ('{k}' was unexpected)"
        )));
    }
    let d = flavor_description(&b, mv)?.ok_or_else(|| {
        Error::BadRequest(
            "Invalid input for field/attribute flavor: 'description' is a required property".into(),
        )
    })?;
    f.insert("description".into(), d);
    s.put(FLAVOR, f.clone()).await?;
    Ok(Json(json!({"flavor": flavor_view(&app, &f, true, mv)})))
}

/// Whether a project may use a flavor: public ones, and private ones it
/// was given access to.
pub(crate) fn flavor_usable(auth: &Auth, f: &Rec) -> bool {
    f["os-flavor-access:is_public"] == true
        || auth.0.is_admin()
        || auth.0.project_id().is_some_and(|p| {
            f.get("ursa:access")
                .and_then(|a| a.as_array())
                .is_some_and(|a| a.iter().any(|x| x == p))
        })
}

/// A listing's flavors: as Nova does, `is_public` (default true) picks
/// public flavors, plus for a project the private ones it may use;
/// `is_public=none` (admins) shows all.
pub(super) fn flavors_listed(s: &Compute, auth: &Auth, q: &[(String, String)]) -> Vec<Rec> {
    let want = q
        .iter()
        .find(|(k, _)| k == "is_public")
        .map(|(_, v)| v.to_lowercase());
    let mut v: Vec<Rec> = s
        .docs(FLAVOR)
        .into_iter()
        .filter(|f| {
            let public = f["os-flavor-access:is_public"] == true;
            match want.as_deref() {
                Some("none") if auth.0.is_admin() => true,
                Some("false" | "0" | "f" | "no") if auth.0.is_admin() => !public,
                _ => public || (!auth.0.is_admin() && flavor_usable(auth, f)),
            }
        })
        .collect();
    v.sort_by_key(|f| (f["ram"].as_u64().unwrap_or(0), st(f, "id").to_string()));
    v
}

pub(super) fn filter_flavors(v: Vec<Rec>, q: &[(String, String)]) -> Vec<Rec> {
    let mut v = filter_flavor_attrs(v, q);
    if let Some((_, m)) = q.iter().find(|(k, _)| k == "marker") {
        if let Some(pos) = v.iter().position(|f| st(f, "id") == m) {
            v = v.split_off(pos + 1);
        }
    }
    if let Some(l) = q
        .iter()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, l)| l.parse::<usize>().ok())
    {
        v.truncate(l);
    }
    v
}

pub(super) fn filter_flavor_attrs(v: Vec<Rec>, q: &[(String, String)]) -> Vec<Rec> {
    v.into_iter()
        .filter(|f| {
            q.iter().all(|(k, val)| match k.as_str() {
                "minRam" => val
                    .parse::<u64>()
                    .is_ok_and(|m| f["ram"].as_u64().unwrap_or(0) >= m),
                "minDisk" => val
                    .parse::<u64>()
                    .is_ok_and(|m| f["disk"].as_u64().unwrap_or(0) >= m),
                _ => true,
            })
        })
        .collect()
}

pub(super) async fn list_flavors(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let q = query(&raw);
    let v = filter_flavors(flavors_listed(s, &auth, &q), &q);
    Ok(Json(
        json!({"flavors": v.iter().map(|f| flavor_view(&app, f, false, mv)).collect::<Vec<_>>()}),
    ))
}

pub(super) async fn list_flavors_detail(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let q = query(&raw);
    let v = filter_flavors(flavors_listed(s, &auth, &q), &q);
    Ok(Json(
        json!({"flavors": v.iter().map(|f| flavor_view(&app, f, true, mv)).collect::<Vec<_>>()}),
    ))
}

pub(crate) fn find_flavor(s: &Compute, auth: &Auth, id: &str) -> Result<Rec> {
    s.doc(FLAVOR, id)
        .filter(|f| flavor_usable(auth, f))
        .ok_or_else(|| Error::NotFound(format!("Flavor {id} could not be found.")))
}

pub(super) async fn show_flavor(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let id = last(&p);
    let s = svc(&app)?;
    let f = find_flavor(s, &auth, &id)?;
    Ok(Json(json!({"flavor": flavor_view(&app, &f, true, mv)})))
}

/// The last path parameter (routes are nested under an optional project id).
pub(crate) fn last(p: &[(String, String)]) -> String {
    p.last().map(|(_, v)| v.clone()).unwrap_or_default()
}

pub(crate) fn param(p: &[(String, String)], name: &str) -> String {
    p.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

pub(super) async fn create_flavor(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    bytes: Bytes,
) -> Result<Response> {
    if !auth.0.is_admin() {
        return Err(Error::Forbidden(
            "Policy doesn't allow os_compute_api:os-flavor-manage:create to be performed.".into(),
        ));
    }
    let s = svc(&app)?;
    let b = body_obj(&bytes, "flavor")?;
    let name = b
        .get("name")
        .and_then(|v| v.as_str())
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute name.".into()))?;
    let int = |k: &str, min: u64| -> Result<u64> {
        let v = b.get(k).and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        });
        v.filter(|x| *x >= min)
            .ok_or_else(|| Error::BadRequest(format!("Invalid input for field/attribute {k}.")))
    };
    let (ram, vcpus) = (int("ram", 1)?, int("vcpus", 1)?);
    let disk = int("disk", 0)?;
    let id = match b.get("id") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(v)) if !v.is_empty() && v.len() <= 255 => v.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute id.".into(),
            ))
        }
    };
    let public = match b.get("os-flavor-access:is_public") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(v)) => *v,
        Some(Value::String(v)) => !matches!(v.to_lowercase().as_str(), "false" | "0" | "no"),
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute os-flavor-access:is_public.".into(),
            ))
        }
    };
    let swap = match b.get("swap") {
        None | Some(Value::Null) => 0,
        Some(_) => int("swap", 0)?,
    };
    let ephemeral = match b.get("OS-FLV-EXT-DATA:ephemeral") {
        None | Some(Value::Null) => 0,
        Some(_) => int("OS-FLV-EXT-DATA:ephemeral", 0)?,
    };
    let rxtx = match b.get("rxtx_factor") {
        None | Some(Value::Null) => 1.0,
        // Taken until 2.101 (as the openstack client says).
        Some(_) if mv.at(102) => return Err(super::unexpected("rxtx_factor")),
        Some(v) => v
            .as_f64()
            .or_else(|| v.as_str().and_then(|x| x.parse().ok()))
            .filter(|x| *x > 0.0)
            .ok_or_else(|| {
                Error::BadRequest("Invalid input for field/attribute rxtx_factor.".into())
            })?,
    };
    if s.docs(FLAVOR)
        .iter()
        .any(|f| st(f, "id") == id || st(f, "name") == name)
    {
        return Err(Error::Conflict(format!(
            "Flavor with name {name} or ID {id} already exists."
        )));
    }
    let mut f = flavor_record(&id, name, ram, vcpus, disk, public);
    f.insert(
        "swap".into(),
        if swap == 0 { json!("") } else { json!(swap) },
    );
    f.insert("OS-FLV-EXT-DATA:ephemeral".into(), json!(ephemeral));
    f.insert("rxtx_factor".into(), json!(rxtx));
    if let Some(d) = flavor_description(&b, mv)? {
        f.insert("description".into(), d);
    }
    s.put(FLAVOR, f.clone()).await?;
    Ok(Json(json!({"flavor": flavor_view(&app, &f, true, mv)})).into_response())
}

pub(super) async fn delete_flavor(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    if !auth.0.is_admin() {
        return Err(Error::Forbidden(
            "Policy doesn't allow os_compute_api:os-flavor-manage:delete to be performed.".into(),
        ));
    }
    let id = last(&p);
    let s = svc(&app)?;
    find_flavor(s, &auth, &id)?;
    let id2 = id.clone();
    s.identity
        .change(move |_| Ok((vec![ursa_core::store::Op::delete(FLAVOR, &id2)], ())))
        .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

pub(super) async fn flavor_specs(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let f = find_flavor(s, &auth, &param(&p, "id"))?;
    Ok(Json(
        json!({"extra_specs": f.get("extra_specs").cloned().unwrap_or(json!({}))}),
    ))
}

pub(super) async fn set_flavor_specs(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    if !auth.0.is_admin() {
        return Err(Error::Forbidden(
            "Policy doesn't allow os_compute_api:os-flavor-extra-specs:create to be performed."
                .into(),
        ));
    }
    let s = svc(&app)?;
    let mut f = find_flavor(s, &auth, &param(&p, "id"))?;
    let specs = body_obj(&bytes, "extra_specs")?;
    let mut all = f
        .get("extra_specs")
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    for (k, v) in specs {
        let v = v
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::BadRequest(format!("Invalid input for extra spec {k}.")))?;
        all.insert(k, json!(v));
    }
    f.insert("extra_specs".into(), Value::Object(all.clone()));
    s.put(FLAVOR, f).await?;
    Ok(Json(json!({"extra_specs": all})))
}
