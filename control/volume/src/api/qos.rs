//! qos: Cinder's QoS specs (`/qos-specs`: create, list, show, set and
//! unset keys, delete, associate with volume types). Specs are documents
//! of kind `volume_qos`; a type names its spec as `qos_specs_id`.
//!
//! A spec whose consumer is `back-end` or `both` is enforced by blockd:
//! a new volume of an associated type is created with blockd's limits
//! from `total_iops_sec` (or `read_iops_sec` + `write_iops_sec`) and
//! `total_bytes_sec` (or the read and write sums). `front-end` specs are
//! kept and shown; the compute side (QEMU's throttling) does not read them.

use super::*;

/// QoS specs' kind.
pub(super) const QOS: &str = "volume_qos";

fn qos_view(state: &AppState, q: &Rec) -> Value {
    json!({"qos_specs": {"name": st(q, "name"), "id": st(q, "id"), "consumer": st(q, "consumer"),
                          "specs": q.get("specs").cloned().unwrap_or(json!({}))},
           "links": [{"href": format!("{}/volume/v3/qos-specs/{}", state.base_url, st(q, "id")), "rel": "self"}]})
}

fn find_qos(s: &Volumes, id: &str) -> Result<Rec> {
    s.doc(QOS, id)
        .ok_or_else(|| Error::NotFound(format!("QoS Specs {id} could not be found.")))
}

/// The blockd limits a volume of type `t` is created with, if its QoS
/// spec is enforced at the back end.
pub(super) fn blockd_limits(s: &Volumes, t: &Rec) -> Option<Value> {
    let q = s.doc(QOS, st(t, "qos_specs_id"))?;
    if !matches!(st(&q, "consumer"), "back-end" | "both") {
        return None;
    }
    let specs = q.get("specs")?.as_object()?.clone();
    let num = |k: &str| specs.get(k)?.as_str()?.parse::<u64>().ok();
    let sum = |a: &str, b: &str| match (num(a), num(b)) {
        (None, None) => None,
        (x, y) => Some(x.unwrap_or(0) + y.unwrap_or(0)),
    };
    let iops = num("total_iops_sec").or_else(|| sum("read_iops_sec", "write_iops_sec"));
    let bytes = num("total_bytes_sec").or_else(|| sum("read_bytes_sec", "write_bytes_sec"));
    if iops.is_none() && bytes.is_none() {
        return None;
    }
    Some(json!({"iops": iops.unwrap_or(0), "bytes_per_second": bytes.unwrap_or(0)}))
}

fn spec_values(m: &Map<String, Value>) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for (k, v) in m {
        let v = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(Error::BadRequest(format!(
                    "Invalid input received: the value of {k} must be a string."
                )))
            }
        };
        if k.is_empty() || k.len() > 255 || v.len() > 255 {
            return Err(Error::BadRequest(format!("Invalid QoS spec key {k}.")));
        }
        out.insert(k.clone(), json!(v));
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecsBody {
    qos_specs: Map<String, Value>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysBody {
    keys: Vec<String>,
}

pub(super) async fn create_qos(
    State(state): State<AppState>,
    auth: Auth,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let mut b = parse_body::<SpecsBody>(&body)?.qos_specs;
    let name = match b.remove("name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n.len() <= 255 => n,
        _ => {
            return Err(Error::BadRequest(
                "Invalid input received: the QoS specs need a name.".into(),
            ))
        }
    };
    let consumer = match b.remove("consumer") {
        None => "back-end".to_string(),
        Some(Value::String(c)) if matches!(c.as_str(), "front-end" | "back-end" | "both") => c,
        Some(c) => {
            return Err(Error::BadRequest(format!(
                "Invalid input received: consumer {c} must be front-end, back-end or both."
            )))
        }
    };
    if s.docs(QOS).iter().any(|q| st(q, "name") == name) {
        return Err(Error::Conflict(format!("QoS Specs {name} already exists.")));
    }
    let q = json!({"id": uuid::Uuid::new_v4().to_string(), "name": name, "consumer": consumer,
                   "specs": spec_values(&b)?});
    let q = q.as_object().cloned().unwrap_or_default();
    s.put(QOS, q.clone()).await?;
    Ok(Json(qos_view(&state, &q)))
}

pub(super) async fn list_qos(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let mut all = s.docs(QOS);
    all.sort_by(|a, b| st(a, "name").cmp(st(b, "name")));
    let list: Vec<Value> = all
        .iter()
        .map(|q| qos_view(&state, q)["qos_specs"].clone())
        .collect();
    Ok(Json(json!({"qos_specs": list})))
}

pub(super) async fn show_qos(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    Ok(Json(qos_view(&state, &find_qos(s, &p["id"])?)))
}

/// `PUT /qos-specs/{id}`: sets keys.
pub(super) async fn set_qos_keys(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    find_qos(s, &p["id"])?;
    let new = spec_values(&parse_body::<SpecsBody>(&body)?.qos_specs)?;
    let n2 = new.clone();
    s.update(QOS, &p["id"], move |q| {
        let mut specs = q
            .get("specs")
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default();
        specs.extend(n2.clone());
        q.insert("specs".into(), Value::Object(specs));
        q.remove("updated_at");
        Ok(())
    })
    .await?;
    Ok(Json(json!({"qos_specs": new})))
}

pub(super) async fn unset_qos_keys(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    let s = svc(&state)?;
    admin(&auth)?;
    let q = find_qos(s, &p["id"])?;
    let keys = parse_body::<KeysBody>(&body)?.keys;
    let specs = q
        .get("specs")
        .and_then(|v| v.as_object())
        .cloned()
        .unwrap_or_default();
    if let Some(k) = keys.iter().find(|k| !specs.contains_key(*k)) {
        return Err(Error::NotFound(format!(
            "QoS spec {k} cannot be found in QoS specs {}.",
            p["id"]
        )));
    }
    s.update(QOS, &p["id"], move |q| {
        if let Some(m) = q.get_mut("specs").and_then(|v| v.as_object_mut()) {
            for k in &keys {
                m.remove(k);
            }
        }
        q.remove("updated_at");
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

fn associated(s: &Volumes, id: &str) -> Vec<Rec> {
    s.docs(TYPE)
        .into_iter()
        .filter(|t| st(t, "qos_specs_id") == id)
        .collect()
}

pub(super) async fn delete_qos(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    q: Query,
) -> Result<Response> {
    let s = svc(&state)?;
    admin(&auth)?;
    find_qos(s, &p["id"])?;
    let force = q
        .get("force")
        .is_some_and(|f| f.eq_ignore_ascii_case("true"));
    let types = associated(s, &p["id"]);
    if !types.is_empty() && !force {
        return Err(Error::BadRequest(format!(
            "QoS Specs {} is still associated with entities.",
            p["id"]
        )));
    }
    for t in types {
        s.update(TYPE, st(&t, "id"), |r| {
            r.remove("qos_specs_id");
            r.remove("updated_at");
            Ok(())
        })
        .await?;
    }
    s.forget(QOS, &p["id"]).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

pub(super) async fn qos_associations(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    find_qos(s, &p["id"])?;
    let list: Vec<Value> = associated(s, &p["id"])
        .iter()
        .map(|t| json!({"association_type": "volume_type", "id": st(t, "id"), "name": st(t, "name")}))
        .collect();
    Ok(Json(json!({"qos_associations": list})))
}

async fn set_association(s: &Volumes, qos: &str, vtype: &str, on: bool) -> Result<()> {
    let t = find_type(s, vtype)?;
    if on && !st(&t, "qos_specs_id").is_empty() && st(&t, "qos_specs_id") != qos {
        return Err(Error::BadRequest(format!(
            "Type {vtype} is already associated with another qos specs: {}",
            st(&t, "qos_specs_id")
        )));
    }
    let q = qos.to_string();
    s.update(TYPE, st(&t, "id"), move |r| {
        if on {
            r.insert("qos_specs_id".into(), json!(q));
        } else if st(r, "qos_specs_id") == q {
            r.remove("qos_specs_id");
        }
        r.remove("updated_at");
        Ok(())
    })
    .await?;
    Ok(())
}

fn vol_type_arg(q: &Query) -> Result<String> {
    q.get("vol_type_id")
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or_else(|| Error::BadRequest("Missing required parameter vol_type_id.".into()))
}

pub(super) async fn associate_qos(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    q: Query,
) -> Result<Response> {
    let s = svc(&state)?;
    admin(&auth)?;
    find_qos(s, &p["id"])?;
    set_association(s, &p["id"], &vol_type_arg(&q)?, true).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

pub(super) async fn disassociate_qos(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
    q: Query,
) -> Result<Response> {
    let s = svc(&state)?;
    admin(&auth)?;
    find_qos(s, &p["id"])?;
    set_association(s, &p["id"], &vol_type_arg(&q)?, false).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

pub(super) async fn disassociate_all_qos(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Response> {
    let s = svc(&state)?;
    admin(&auth)?;
    find_qos(s, &p["id"])?;
    for t in associated(s, &p["id"]) {
        set_association(s, &p["id"], st(&t, "id"), false).await?;
    }
    Ok(empty(StatusCode::ACCEPTED))
}
