//! type_access: private volume types and the projects that may use them
//! (`addProjectAccess` / `removeProjectAccess`, `os-volume-type-access`),
//! and volume types' encryption specs (`/types/{id}/encryption`). The
//! projects are the type document's `ursa:access`; the encryption spec
//! its `ursa:encryption`.
//!
//! Ursa has no key manager (Barbican), so, as Cinder without one, a
//! volume of an encrypted type cannot be made: the spec is kept and
//! shown, and volume create refuses such a type with 400.

use super::*;
use serde::Deserialize;

/// Whether `auth` may see and use type `t`: admins any; others a public
/// type or one their project was given.
pub(super) fn may_use_type(auth: &Auth, t: &Rec) -> bool {
    auth.0.is_admin() || t.get("is_public") != Some(&json!(false)) || has_access(auth, t)
}

fn has_access(auth: &Auth, t: &Rec) -> bool {
    let p = auth.0.project_id().unwrap_or_default();
    t.get("ursa:access")
        .and_then(|a| a.as_array())
        .is_some_and(|a| a.iter().any(|x| x == p))
}

/// Whether a listing shows type `t` (Cinder: public ones and those given
/// to the caller's project; an admin's `is_public=None` shows all).
pub(super) fn listed(auth: &Auth, t: &Rec, is_public: Option<&str>) -> bool {
    let public = t.get("is_public") != Some(&json!(false));
    if auth.0.is_admin() {
        return match is_public.map(str::to_ascii_lowercase).as_deref() {
            Some("none") => true,
            Some("false" | "f" | "0" | "no") => !public,
            _ => public || has_access(auth, t),
        };
    }
    public || has_access(auth, t)
}

/// The encryption spec of a type, if it has one.
pub(super) fn encryption_of(t: &Rec) -> Option<&Map<String, Value>> {
    t.get("ursa:encryption").and_then(|e| e.as_object())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
enum Action {
    #[serde(rename = "addProjectAccess")]
    Add { project: String },
    #[serde(rename = "removeProjectAccess")]
    Remove { project: String },
}

pub(super) async fn type_action(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    if t.get("is_public") != Some(&json!(false)) {
        return Err(Error::BadRequest(
            "Invalid volume type: Type access modification is not applicable to public volume type."
                .into(),
        ));
    }
    let action = parse_body::<Action>(&body)?;
    let tid = st(&t, "id").to_string();
    let id = tid.clone();
    s.update(TYPE, &id, move |r| {
        let mut list: Vec<Value> = r
            .get("ursa:access")
            .and_then(|a| a.as_array())
            .cloned()
            .unwrap_or_default();
        match &action {
            Action::Add { project } => {
                if list.iter().any(|x| x == project.as_str()) {
                    return Err(Error::Conflict(format!(
                        "Volume type access for {tid}/{project} combination already exists."
                    )));
                }
                list.push(json!(project));
            }
            Action::Remove { project } => {
                let before = list.len();
                list.retain(|x| x != project.as_str());
                if list.len() == before {
                    return Err(Error::NotFound(format!(
                        "Volume type access not found for {tid}/{project} combination."
                    )));
                }
            }
        }
        r.insert("ursa:access".into(), Value::Array(list));
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

pub(super) async fn type_access(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    if t.get("is_public") != Some(&json!(false)) {
        return Err(Error::NotFound(
            "Access list not available for public volume types.".into(),
        ));
    }
    let list: Vec<Value> = t
        .get("ursa:access")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .map(|p| json!({"volume_type_id": st(&t, "id"), "project_id": p}))
        .collect();
    Ok(Json(json!({"volume_type_access": list})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptionBody {
    encryption: EncryptionSpec,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct EncryptionSpec {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    cipher: Option<Option<String>>,
    #[serde(default)]
    key_size: Option<Option<u32>>,
    #[serde(default)]
    control_location: Option<String>,
}

fn spec_view(tid: &str, e: &Map<String, Value>) -> Value {
    let mut v = Value::Object(e.clone());
    v["volume_type_id"] = json!(tid);
    v
}

fn apply(e: &mut Map<String, Value>, spec: EncryptionSpec) -> Result<()> {
    if let Some(p) = spec.provider {
        if p.is_empty() {
            return Err(Error::BadRequest("provider must not be empty.".into()));
        }
        e.insert("provider".into(), json!(p));
    }
    if let Some(c) = spec.cipher {
        e.insert("cipher".into(), json!(c));
    }
    if let Some(k) = spec.key_size {
        e.insert("key_size".into(), json!(k));
    }
    if let Some(l) = spec.control_location {
        if !matches!(l.as_str(), "front-end" | "back-end") {
            return Err(Error::BadRequest(format!(
                "Invalid input received: control_location {l} must be front-end or back-end."
            )));
        }
        e.insert("control_location".into(), json!(l));
    }
    Ok(())
}

pub(super) async fn show_encryption(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    Ok(Json(match encryption_of(&t) {
        Some(e) => spec_view(st(&t, "id"), e),
        None => json!({}),
    }))
}

/// `GET /types/{id}/encryption/{key}`: one field of the spec.
pub(super) async fn show_encryption_item(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    let key = p["key"].clone();
    let v = encryption_of(&t)
        .and_then(|e| e.get(&key))
        .cloned()
        .ok_or_else(|| {
            Error::NotFound(format!(
                "Volume type encryption for type {} does not exist.",
                p["id"]
            ))
        })?;
    Ok(Json(json!({ key: v })))
}

pub(super) async fn create_encryption(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    let spec = parse_body::<EncryptionBody>(&body)?.encryption;
    if spec.provider.is_none() || spec.control_location.is_none() {
        return Err(Error::BadRequest(
            "Invalid input received: provider and control_location are required.".into(),
        ));
    }
    let mut e = Map::new();
    e.insert(
        "encryption_id".into(),
        json!(uuid::Uuid::new_v4().to_string()),
    );
    e.insert("cipher".into(), Value::Null);
    e.insert("key_size".into(), Value::Null);
    apply(&mut e, spec)?;
    let tid = st(&t, "id").to_string();
    let e2 = e.clone();
    s.update(TYPE, &tid, move |r| {
        if r.get("ursa:encryption").is_some_and(|x| x.is_object()) {
            return Err(Error::BadRequest(format!(
                "Volume type encryption for type {} already exists.",
                st(r, "id")
            )));
        }
        r.insert("ursa:encryption".into(), Value::Object(e2.clone()));
        Ok(())
    })
    .await?;
    Ok(Json(json!({"encryption": spec_view(&tid, &e)})))
}

pub(super) async fn update_encryption(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    let spec = parse_body::<EncryptionBody>(&body)?.encryption;
    let mut e = encryption_of(&t)
        .filter(|e| e.get("encryption_id") == Some(&json!(p["key"])))
        .cloned()
        .ok_or_else(|| {
            Error::NotFound(format!(
                "Volume type encryption for type {} does not exist.",
                p["id"]
            ))
        })?;
    let mut shown = Map::new();
    apply(&mut shown, spec.clone())?;
    apply(&mut e, spec)?;
    let e2 = e.clone();
    s.update(TYPE, st(&t, "id"), move |r| {
        r.insert("ursa:encryption".into(), Value::Object(e2.clone()));
        Ok(())
    })
    .await?;
    Ok(Json(json!({"encryption": shown})))
}

pub(super) async fn delete_encryption(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Response> {
    let s = svc(&state)?;
    admin(&auth)?;
    let t = find_type(s, &p["id"])?;
    if !encryption_of(&t).is_some_and(|e| e.get("encryption_id") == Some(&json!(p["key"]))) {
        return Err(Error::NotFound(format!(
            "Volume type encryption for type {} does not exist.",
            p["id"]
        )));
    }
    s.update(TYPE, st(&t, "id"), |r| {
        r.remove("ursa:encryption");
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}
