//! Quotas.

use super::*;

pub(super) fn quota_doc(m: &Model, project: &str) -> Map<String, Value> {
    QUOTA_DEFAULTS
        .iter()
        .map(|(k, _)| (k.to_string(), json!(Networks::quota(m, project, k))))
        .collect()
}

pub(super) fn may_read_quota(auth: &Auth, p: &str) -> Result<()> {
    if is_admin(auth) || project(auth) == p {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "rule:get_quota is disallowed by policy".into(),
        ))
    }
}

pub(super) async fn list_quotas(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    if !is_admin(&auth) {
        return Err(Error::Forbidden(
            "rule:get_quota is disallowed by policy".into(),
        ));
    }
    let m = app.identity.model();
    let q: Vec<Value> = m
        .docs_of(QUOTA)
        .filter_map(|v| {
            v.get("project_id")
                .and_then(|p| p.as_str())
                .map(str::to_string)
        })
        .map(|p| {
            let mut d = quota_doc(&m, &p);
            d.insert("project_id".into(), json!(p));
            d.insert("tenant_id".into(), json!(p));
            Value::Object(d)
        })
        .collect();
    Ok(Json(json!({"quotas": q})))
}

pub(super) async fn show_quota(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<String>,
) -> Result<Json<Value>> {
    may_read_quota(&auth, &p)?;
    let m = app.identity.model();
    Ok(Json(json!({"quota": quota_doc(&m, &p)})))
}

pub(super) async fn default_quota(
    _app: State<AppState>,
    auth: Auth,
    Path(p): Path<String>,
) -> Result<Json<Value>> {
    may_read_quota(&auth, &p)?;
    let d: Map<String, Value> = QUOTA_DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Ok(Json(json!({"quota": d})))
}

pub(super) async fn quota_details(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<String>,
) -> Result<Json<Value>> {
    may_read_quota(&auth, &p)?;
    let mut c = svc(&app).conn().await?;
    let mut used: std::collections::HashMap<&str, i64> = Default::default();
    used.insert("port", port_table::count_of_project(&mut c, &p).await?);
    for t in rows::TABLES {
        used.insert(t.quota, t.count(&mut c, "project_id", &p).await?);
    }
    drop(c);
    let m = app.identity.model();
    let d: Map<String, Value> = QUOTA_DEFAULTS
        .iter()
        .map(|(k, _)| {
            // (subnet pools and RBAC policies are not counted)
            let used = used.get(k).copied().unwrap_or(0);
            (
                k.to_string(),
                json!({"limit": Networks::quota(&m, &p, k), "used": used, "reserved": 0}),
            )
        })
        .collect();
    Ok(Json(json!({"quota": d})))
}

pub(super) async fn update_quota(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    if !is_admin(&auth) {
        return Err(Error::Forbidden(
            "rule:update_quota is disallowed by policy".into(),
        ));
    }
    let b = body_obj(&body, "quota")?;
    let mut vals = Vec::new();
    for (k, v) in &b {
        if k == "force" || k == "check_limit" {
            continue;
        }
        if !QUOTA_DEFAULTS.iter().any(|(q, _)| q == k) {
            return Err(Error::BadRequest(format!(
                "Unrecognized attribute(s) '{k}'"
            )));
        }
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse::<i64>().ok(),
            _ => None,
        }
        .filter(|n| *n >= -1)
        .ok_or_else(|| Error::BadRequest(format!("Invalid input for {k}. Reason: '{v}' is not a valid quota (an integer, -1 for unlimited).")))?;
        vals.push((k.clone(), n));
    }
    let s = svc(&app);
    let doc = s
        .change(|m| {
            let mut d: Rec = m
                .doc(QUOTA, &p)
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default();
            d.insert("id".into(), json!(p));
            d.insert("project_id".into(), json!(p));
            for (k, n) in vals.clone() {
                d.insert(k, json!(n));
            }
            Ok((vec![put(QUOTA, &d)], ()))
        })
        .await;
    doc?;
    let m = app.identity.model();
    Ok(Json(json!({"quota": quota_doc(&m, &p)})))
}

pub(super) async fn delete_quota(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<String>,
) -> Result<Response> {
    if !is_admin(&auth) {
        return Err(Error::Forbidden(
            "rule:delete_quota is disallowed by policy".into(),
        ));
    }
    svc(&app)
        .change(|_| Ok((vec![Op::delete(QUOTA, &p)], ())))
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
