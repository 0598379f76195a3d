//! group_types: the types of Cinder's generic volume groups (3.11) and
//! their group specs: documents of kind `group_type`
//! (`default_group_type` is made at start, as Cinder's migration makes
//! it). The groups themselves are in [`super::groups`].

use super::*;
use crate::{GROUP, GROUP_TYPE};
use serde::Deserialize;

// ---------------------------------------------------------------------
// Group types.

fn group_type_view(t: &Rec) -> Value {
    json!({"id": st(t, "id"), "name": st(t, "name"), "description": t.get("description"),
           "is_public": t.get("is_public") != Some(&json!(false)),
           "group_specs": t.get("group_specs").cloned().unwrap_or(json!({}))})
}

fn find_group_type(s: &Volumes, auth: &Auth, id: &str) -> Result<Rec> {
    s.docs(GROUP_TYPE)
        .into_iter()
        .find(|t| st(t, "id") == id || st(t, "name") == id)
        .filter(|t| auth.0.is_admin() || t.get("is_public") != Some(&json!(false)))
        .ok_or_else(|| Error::NotFound(format!("Group type {id} could not be found.")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupTypeBody {
    group_type: GroupTypeFields,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupTypeFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    is_public: Option<Flag>,
    #[serde(default)]
    group_specs: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecsBody {
    group_specs: HashMap<String, String>,
}

pub(super) async fn list_group_types(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    since(mv, 11, "Group types")?;
    let s = svc(&state)?;
    let mut all = s.docs(GROUP_TYPE);
    all.retain(|t| auth.0.is_admin() || t.get("is_public") != Some(&json!(false)));
    // `is_public=None` (admins): every type.
    match q.get("is_public").map(|p| p.to_ascii_lowercase()) {
        Some(p) if p == "none" => {}
        Some(p) => {
            let want = !matches!(p.as_str(), "false" | "f" | "0" | "no");
            all.retain(|t| (t.get("is_public") != Some(&json!(false))) == want);
        }
        None => {}
    }
    // `sort=name:asc` (or sort_key / sort_dir), by name, id or description.
    let (key, dir) = match q.get("sort") {
        Some(s) => {
            let mut it = s.split(',').next().unwrap_or("").split(':');
            (
                it.next().unwrap_or("name").to_string(),
                it.next().unwrap_or("asc").to_string(),
            )
        }
        None => (
            q.get("sort_key").cloned().unwrap_or_else(|| "name".into()),
            q.get("sort_dir").cloned().unwrap_or_else(|| "asc".into()),
        ),
    };
    if !matches!(key.as_str(), "name" | "id" | "description")
        || !matches!(dir.as_str(), "asc" | "desc")
    {
        return Err(Error::BadRequest(format!(
            "Invalid input received: cannot sort group types by {key}:{dir}."
        )));
    }
    all.sort_by(|a, b| st(a, &key).cmp(st(b, &key)));
    if dir == "desc" {
        all.reverse();
    }
    if let Some(l) = q.get("limit").and_then(|l| l.parse::<usize>().ok()) {
        all.truncate(l);
    }
    Ok(Json(
        json!({"group_types": all.iter().map(group_type_view).collect::<Vec<_>>()}),
    ))
}

pub(super) async fn show_group_type(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Json<Value>> {
    since(mv, 11, "Group types")?;
    let s = svc(&state)?;
    Ok(Json(
        json!({"group_type": group_type_view(&find_group_type(s, &auth, &p["id"])?)}),
    ))
}

pub(super) async fn default_group_type(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
) -> Result<Json<Value>> {
    since(mv, 11, "Group types")?;
    let s = svc(&state)?;
    let t = find_group_type(s, &auth, crate::DEFAULT_GROUP_TYPE)
        .map_err(|_| Error::NotFound("Default group type can not be found.".into()))?;
    Ok(Json(json!({"group_type": group_type_view(&t)})))
}

pub(super) async fn create_group_type(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    body: axum::body::Bytes,
) -> Result<Response> {
    since(mv, 11, "Group types")?;
    let s = svc(&state)?;
    admin(&auth)?;
    let f = parse_body::<GroupTypeBody>(&body)?.group_type;
    let name = f
        .name
        .clone()
        .filter(|n| !n.trim().is_empty() && n.len() <= 255)
        .ok_or_else(|| Error::BadRequest("Group type name can not be empty.".into()))?;
    if s.docs(GROUP_TYPE).iter().any(|t| st(t, "name") == name) {
        return Err(Error::Conflict(format!(
            "Group Type {name} already exists."
        )));
    }
    let t = json!({"id": uuid::Uuid::new_v4().to_string(), "name": name,
        "description": short(&f.description, "description")?,
        "is_public": f.is_public.is_none_or(|p| p.0),
        "group_specs": f.group_specs.unwrap_or_default()});
    let t = t.as_object().cloned().unwrap_or_default();
    s.put(GROUP_TYPE, t.clone()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"group_type": group_type_view(&t)})),
    )
        .into_response())
}

pub(super) async fn update_group_type(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    since(mv, 11, "Group types")?;
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_group_type(s, &auth, &p["id"])?;
    let f = parse_body::<GroupTypeBody>(&body)?.group_type;
    if let Some(n) = &f.name {
        if n.trim().is_empty() || n.len() > 255 {
            return Err(Error::BadRequest(
                "Group type name can not be empty.".into(),
            ));
        }
        if s.docs(GROUP_TYPE)
            .iter()
            .any(|x| st(x, "name") == n && st(x, "id") != st(&t, "id"))
        {
            return Err(Error::Conflict(format!("Group Type {n} already exists.")));
        }
    }
    let desc = f
        .description
        .as_ref()
        .map(|d| short(&Some(d.clone()), "description"))
        .transpose()?;
    let t = s
        .update(GROUP_TYPE, st(&t, "id"), move |r| {
            if let Some(n) = &f.name {
                r.insert("name".into(), json!(n));
            }
            if let Some(d) = &desc {
                r.insert("description".into(), d.clone());
            }
            if let Some(p) = f.is_public {
                r.insert("is_public".into(), json!(p.0));
            }
            r.remove("updated_at");
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("Group type {} could not be found.", p["id"])))?;
    Ok(Json(json!({"group_type": group_type_view(&t)})))
}

pub(super) async fn delete_group_type(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Response> {
    since(mv, 11, "Group types")?;
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_group_type(s, &auth, &p["id"])?;
    let f = crate::record_table::Filter::default();
    // (A scan of every group: only deleting a group type asks.)
    if s.records(GROUP, &f)
        .await?
        .iter()
        .any(|g| st(g, "group_type") == st(&t, "id"))
    {
        return Err(Error::BadRequest(format!(
            "Group Type {} deletion is not allowed with groups present with the type.",
            st(&t, "id")
        )));
    }
    s.forget(GROUP_TYPE, st(&t, "id")).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

pub(super) async fn group_specs(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Json<Value>> {
    since(mv, 11, "Group specs")?;
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_group_type(s, &auth, &p["id"])?;
    Ok(Json(
        json!({"group_specs": t.get("group_specs").cloned().unwrap_or(json!({}))}),
    ))
}

pub(super) async fn set_group_specs(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    since(mv, 11, "Group specs")?;
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_group_type(s, &auth, &p["id"])?;
    let new = parse_body::<SpecsBody>(&body)?.group_specs;
    if new.keys().any(|k| k.is_empty() || k.len() > 255) {
        return Err(Error::BadRequest("Invalid group_specs key.".into()));
    }
    let out = json!(new.clone());
    s.update(GROUP_TYPE, st(&t, "id"), move |r| {
        let mut cur = r
            .get("group_specs")
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default();
        for (k, v) in &new {
            cur.insert(k.clone(), json!(v));
        }
        r.insert("group_specs".into(), Value::Object(cur));
        r.remove("updated_at");
        Ok(())
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"group_specs": out}))).into_response())
}

pub(super) async fn group_spec(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Json<Value>> {
    since(mv, 11, "Group specs")?;
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_group_type(s, &auth, &p["id"])?;
    let key = p["key"].clone();
    let v = t
        .get("group_specs")
        .and_then(|g| g.get(&key))
        .cloned()
        .ok_or_else(|| {
            Error::NotFound(format!(
                "Group Type {} has no specs with key {key}.",
                p["id"]
            ))
        })?;
    Ok(Json(json!({ key: v })))
}

pub(super) async fn put_group_spec(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    since(mv, 11, "Group specs")?;
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_group_type(s, &auth, &p["id"])?;
    let key = p["key"].clone();
    let b: HashMap<String, String> = parse_body(&body)?;
    let v = match (b.len(), b.get(&key)) {
        (1, Some(v)) => v.clone(),
        _ => return Err(Error::BadRequest("Request body and URI mismatch".into())),
    };
    let (k2, v2) = (key.clone(), v.clone());
    s.update(GROUP_TYPE, st(&t, "id"), move |r| {
        let mut cur = r
            .get("group_specs")
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default();
        cur.insert(k2.clone(), json!(v2));
        r.insert("group_specs".into(), Value::Object(cur));
        r.remove("updated_at");
        Ok(())
    })
    .await?;
    Ok(Json(json!({ key: v })))
}

pub(super) async fn delete_group_spec(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Response> {
    since(mv, 11, "Group specs")?;
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_group_type(s, &auth, &p["id"])?;
    let key = p["key"].clone();
    if t.get("group_specs").and_then(|g| g.get(&key)).is_none() {
        return Err(Error::NotFound(format!(
            "Group Type {} has no specs with key {key}.",
            p["id"]
        )));
    }
    s.update(GROUP_TYPE, st(&t, "id"), move |r| {
        if let Some(g) = r.get_mut("group_specs").and_then(|v| v.as_object_mut()) {
            g.remove(&key);
        }
        r.remove("updated_at");
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}
