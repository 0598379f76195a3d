//! types

use super::*;

pub(super) fn type_view(t: &Rec) -> Value {
    let mut out = Map::new();
    for k in [
        "id",
        "name",
        "description",
        "is_public",
        "os-volume-type-access:is_public",
        "extra_specs",
    ] {
        out.insert(k.into(), t.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

pub(super) async fn list_types(
    State(state): State<AppState>,
    auth: Auth,
    q: Query,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let mut t = s.docs(TYPE);
    t.retain(|t| listed(&auth, t, q.get("is_public").map(String::as_str)));
    t.sort_by(|a, b| st(a, "name").cmp(st(b, "name")));
    Ok(Json(
        json!({"volume_types": t.iter().map(type_view).collect::<Vec<_>>()}),
    ))
}

pub(super) async fn default_type(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let t = default_type_of(s, auth.0.project_id().unwrap_or_default())
        .ok_or_else(|| Error::NotFound("Default volume type can not be found.".into()))?;
    Ok(Json(json!({"volume_type": type_view(&t)})))
}

pub(super) fn find_type(s: &Volumes, id: &str) -> Result<Rec> {
    s.docs(TYPE)
        .into_iter()
        .find(|t| st(t, "id") == id || st(t, "name") == id)
        .ok_or_else(|| Error::NotFound(format!("Volume type {id} could not be found.")))
}

pub(super) async fn show_type(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let t = find_type(s, &p["id"])?;
    if !may_use_type(&auth, &t) {
        return Err(Error::NotFound(format!(
            "Volume type {} could not be found.",
            p["id"]
        )));
    }
    Ok(Json(json!({"volume_type": type_view(&t)})))
}

pub(super) fn admin(auth: &Auth) -> Result<()> {
    if auth.0.is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "Policy doesn't allow this operation to be performed.".into(),
        ))
    }
}

pub(super) fn specs(v: Option<&Value>) -> Result<Map<String, Value>> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m))
            if m.iter()
                .all(|(k, v)| !k.is_empty() && k.len() <= 255 && v.is_string()) =>
        {
            Ok(m.clone())
        }
        Some(v) => Err(Error::BadRequest(format!("Invalid extra_specs: {v}"))),
    }
}

pub(super) async fn create_type(
    State(state): State<AppState>,
    auth: Auth,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let body: Map<String, Value> = parse_body(&body)?;
    let b = body
        .get("volume_type")
        .and_then(|v| v.as_object())
        .ok_or_else(|| {
            Error::BadRequest("Missing required element 'volume_type' in request body.".into())
        })?;
    let name = b
        .get("name")
        .and_then(|v| v.as_str())
        .filter(|n| !n.trim().is_empty() && n.len() <= 255)
        .ok_or_else(|| Error::BadRequest("Volume type name can not be empty.".into()))?;
    if s.docs(TYPE).iter().any(|t| st(t, "name") == name) {
        return Err(Error::Conflict(format!(
            "Volume Type {name} already exists."
        )));
    }
    let public = b
        .get("os-volume-type-access:is_public")
        .and_then(|v| v.as_bool().or_else(|| v.as_str().map(|s| s == "true")))
        .unwrap_or(true);
    let t = json!({"id": uuid::Uuid::new_v4().to_string(), "name": name,
    "description": opt_string(b, "description", 255)?, "is_public": public,
    "os-volume-type-access:is_public": public, "extra_specs": specs(b.get("extra_specs"))?,
    })
    .as_object()
    .cloned()
    .expect("object");
    s.put(TYPE, t.clone()).await?;
    Ok(Json(json!({"volume_type": type_view(&t)})))
}

pub(super) async fn delete_type(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Response> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    if st(&t, "id") == DEFAULT_TYPE_ID {
        return Err(Error::BadRequest(format!(
            "The {DEFAULT_TYPE} type cannot be deleted."
        )));
    }
    // (A scan of every volume: only deleting a type asks.)
    if s.records(VOLUME, &Default::default())
        .await?
        .iter()
        .any(|v| st(v, "volume_type_id") == st(&t, "id"))
    {
        return Err(Error::BadRequest(
            "Target volume type is still in use.".into(),
        ));
    }
    s.forget(TYPE, st(&t, "id")).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

pub(super) async fn type_specs(
    State(state): State<AppState>,
    _auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    let t = find_type(s, &p["id"])?;
    Ok(Json(
        json!({"extra_specs": t.get("extra_specs").cloned().unwrap_or(json!({}))}),
    ))
}

pub(super) async fn set_type_specs(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    let body: Map<String, Value> = parse_body(&body)?;
    if !body.get("extra_specs").is_some_and(|v| v.is_object()) {
        return Err(Error::BadRequest(
            "Missing required element 'extra_specs' in request body.".into(),
        ));
    }
    let new = specs(body.get("extra_specs"))?;
    let out = new.clone();
    s.update(TYPE, st(&t, "id"), move |r| {
        let mut cur = r
            .get("extra_specs")
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default();
        cur.extend(new.clone());
        r.insert("extra_specs".into(), Value::Object(cur));
        Ok(())
    })
    .await?;
    Ok(Json(json!({"extra_specs": out})))
}
