//! The catalog and the other plain documents of identity: services,
//! endpoints, regions, policies (blobs), endpoint groups (OS-EP-FILTER),
//! OAuth1 consumers and credentials (unified limits: [`super::limits`]).
//!
//! These have no behaviour beyond validation, so one generic set of CRUD
//! handlers serves them all, driven by a [`Spec`] per resource.

use super::{collection_links, member, self_link, Query};
use crate::model::Model;
use crate::new_id;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{Auth, Body};
use ursa_core::policy::{enforce, Caller};
use ursa_core::store::Op;

/// Checks (and completes) a request body against the model and the stored
/// document (on update); returns extra changes to make with it.
pub type Validator = fn(&Model, &mut Map<String, Value>, Option<&Value>) -> Result<Vec<Op>>;

/// Describes one document resource.
pub struct Spec {
    pub kind: &'static str,
    /// URL path below `/v3`, e.g. `services` or `OS-EP-FILTER/endpoint_groups`.
    pub path: &'static str,
    pub member: &'static str,
    pub collection: &'static str,
    /// Query parameters that filter by equality on the field of that name.
    pub filters: &'static [&'static str],
    /// Checks (and completes) a body; `old` is the stored document on update.
    pub validate: Validator,
    /// Who may read one document.
    pub may_read: fn(&Caller, &Value) -> bool,
    /// Who may create, change or delete one document.
    pub may_write: fn(&Caller, &Value) -> bool,
    /// Fields returned only once, at creation (then dropped from storage view).
    pub secret_on_create: Option<&'static str>,
}

fn reader(c: &Caller, _: &Value) -> bool {
    c.is_reader_everywhere()
}

fn any_user(_: &Caller, _: &Value) -> bool {
    true
}

fn admin(c: &Caller, _: &Value) -> bool {
    c.is_admin()
}

fn req_str(b: &Map<String, Value>, f: &str, old: Option<&Value>) -> Result<()> {
    match b.get(f) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 1024 * 64 => Ok(()),
        None if old.is_some() => Ok(()),
        None => Err(Error::BadRequest(format!("'{f}' is a required property."))),
        Some(_) => Err(Error::BadRequest(format!(
            "'{f}' must be a non-empty string."
        ))),
    }
}

fn opt_bool_field(b: &mut Map<String, Value>, f: &str, old: Option<&Value>) -> Result<()> {
    match b.get(f) {
        Some(Value::Bool(_)) => Ok(()),
        None => {
            if old.is_none() {
                b.insert(f.into(), json!(true));
            }
            Ok(())
        }
        Some(_) => Err(Error::BadRequest(format!("'{f}' must be a boolean."))),
    }
}

fn validate_service(_: &Model, b: &mut Map<String, Value>, old: Option<&Value>) -> Result<Vec<Op>> {
    req_str(b, "type", old)?;
    if b.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.len() > 255)
    {
        return Err(Error::BadRequest(
            "'type' is longer than 255 characters.".into(),
        ));
    }
    opt_bool_field(b, "enabled", old)?;
    Ok(vec![])
}

fn validate_endpoint(
    m: &Model,
    b: &mut Map<String, Value>,
    old: Option<&Value>,
) -> Result<Vec<Op>> {
    req_str(b, "service_id", old)?;
    req_str(b, "interface", old)?;
    req_str(b, "url", old)?;
    if let Some(s) = b.get("service_id").and_then(Value::as_str) {
        if m.doc("service", s).is_none() {
            return Err(Error::BadRequest(format!("Service {s} does not exist.")));
        }
    }
    if let Some(i) = b.get("interface").and_then(Value::as_str) {
        if !["public", "internal", "admin"].contains(&i) {
            return Err(Error::BadRequest(
                "'interface' must be public, internal or admin.".into(),
            ));
        }
    }
    // Keystone accepts `region` (old, creating the region if it is new) and
    // `region_id` (which must exist), and returns both.
    let mut ops = vec![];
    let legacy = !b.contains_key("region_id");
    let region = b.get("region_id").or_else(|| b.get("region")).cloned();
    if let Some(r) = region {
        if !r.is_null() {
            let rid = r
                .as_str()
                .ok_or_else(|| Error::BadRequest("'region_id' must be a string.".into()))?;
            if m.doc("region", rid).is_none() {
                if !legacy {
                    return Err(Error::BadRequest(format!("Region {rid} does not exist.")));
                }
                ops.push(Op::put(
                    "region",
                    rid,
                    "",
                    rid,
                    json!({"id": rid, "description": "", "parent_region_id": null}),
                ));
            }
        }
        b.insert("region_id".into(), r.clone());
        b.insert("region".into(), r);
    } else if old.is_none() {
        b.insert("region_id".into(), Value::Null);
        b.insert("region".into(), Value::Null);
    }
    opt_bool_field(b, "enabled", old)?;
    Ok(ops)
}

fn validate_region(m: &Model, b: &mut Map<String, Value>, old: Option<&Value>) -> Result<Vec<Op>> {
    if let Some(p) = b.get("parent_region_id") {
        if let Some(p) = p.as_str() {
            if m.doc("region", p).is_none() {
                return Err(Error::BadRequest(format!(
                    "Parent region {p} does not exist."
                )));
            }
            if old.is_some_and(|o| o["id"] == p) {
                return Err(Error::BadRequest(
                    "A region cannot be its own parent.".into(),
                ));
            }
        } else if !p.is_null() {
            return Err(Error::BadRequest(
                "'parent_region_id' must be a string.".into(),
            ));
        }
    } else if old.is_none() {
        b.insert("parent_region_id".into(), Value::Null);
    }
    if old.is_none() && !b.contains_key("description") {
        b.insert("description".into(), json!(""));
    }
    Ok(vec![])
}

fn validate_policy(_: &Model, b: &mut Map<String, Value>, old: Option<&Value>) -> Result<Vec<Op>> {
    req_str(b, "blob", old)?;
    req_str(b, "type", old)?;
    Ok(vec![])
}

fn validate_endpoint_group(
    _: &Model,
    b: &mut Map<String, Value>,
    old: Option<&Value>,
) -> Result<Vec<Op>> {
    req_str(b, "name", old)?;
    match b.get("filters") {
        Some(Value::Object(f)) => {
            for k in f.keys() {
                if !["interface", "service_id", "region_id"].contains(&k.as_str()) {
                    return Err(Error::BadRequest(format!(
                        "Invalid endpoint group filter {k}."
                    )));
                }
            }
            Ok(vec![])
        }
        None if old.is_some() => Ok(vec![]),
        _ => Err(Error::BadRequest("'filters' must be an object.".into())),
    }
}

fn validate_consumer(
    _: &Model,
    b: &mut Map<String, Value>,
    old: Option<&Value>,
) -> Result<Vec<Op>> {
    if old.is_some() && b.contains_key("secret") {
        return Err(Error::BadRequest(
            "A consumer's secret cannot be changed.".into(),
        ));
    }
    if old.is_none() {
        b.insert(
            "secret".into(),
            json!(Alphanumeric.sample_string(&mut rand::thread_rng(), 32)),
        );
        b.entry("description").or_insert(Value::Null);
    }
    Ok(vec![])
}

pub const SERVICES: Spec = Spec {
    kind: "service",
    path: "services",
    member: "service",
    collection: "services",
    filters: &["type", "name"],
    validate: validate_service,
    may_read: any_user,
    may_write: admin,
    secret_on_create: None,
};
pub const ENDPOINTS: Spec = Spec {
    kind: "endpoint",
    path: "endpoints",
    member: "endpoint",
    collection: "endpoints",
    filters: &["interface", "service_id", "region_id"],
    validate: validate_endpoint,
    may_read: any_user,
    may_write: admin,
    secret_on_create: None,
};
pub const REGIONS: Spec = Spec {
    kind: "region",
    path: "regions",
    member: "region",
    collection: "regions",
    filters: &["parent_region_id"],
    validate: validate_region,
    may_read: any_user,
    may_write: admin,
    secret_on_create: None,
};
pub const POLICIES: Spec = Spec {
    kind: "policy",
    path: "policies",
    member: "policy",
    collection: "policies",
    filters: &["type"],
    validate: validate_policy,
    may_read: reader,
    may_write: admin,
    secret_on_create: None,
};
pub const ENDPOINT_GROUPS: Spec = Spec {
    kind: "endpoint_group",
    path: "OS-EP-FILTER/endpoint_groups",
    member: "endpoint_group",
    collection: "endpoint_groups",
    filters: &["name"],
    validate: validate_endpoint_group,
    may_read: reader,
    may_write: admin,
    secret_on_create: None,
};
pub const CONSUMERS: Spec = Spec {
    kind: "consumer",
    path: "OS-OAUTH1/consumers",
    member: "consumer",
    collection: "consumers",
    filters: &[],
    validate: validate_consumer,
    may_read: reader,
    may_write: admin,
    secret_on_create: Some("secret"),
};

pub fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for spec in [
        &SERVICES,
        &ENDPOINTS,
        &REGIONS,
        &POLICIES,
        &ENDPOINT_GROUPS,
        &CONSUMERS,
    ] {
        r = r.merge(doc_routes(spec));
    }
    r
}

/// CRUD routes for one spec.
pub fn doc_routes(spec: &'static Spec) -> Router<AppState> {
    let coll = format!("/v3/{}", spec.path);
    let one = format!("/v3/{}/{{id}}", spec.path);
    let r = Router::new()
        .route(
            &coll,
            get(move |s: State<AppState>, a: Auth, q: Query| list(spec, s, a, q)).post(
                move |s: State<AppState>, a: Auth, b: Body<Value>| create(spec, s, a, None, b),
            ),
        )
        .route(
            &one,
            get(move |s: State<AppState>, a: Auth, p: Path<String>| show(spec, s, a, p))
                .patch(
                    move |s: State<AppState>, a: Auth, p: Path<String>, b: Body<Value>| {
                        update(spec, s, a, p, b)
                    },
                )
                .delete(move |s: State<AppState>, a: Auth, p: Path<String>| delete(spec, s, a, p))
                .put(
                    move |s: State<AppState>, a: Auth, Path(id): Path<String>, b: Body<Value>| {
                        // Only regions are created with a chosen id (PUT /v3/regions/{id}).
                        async move {
                            if spec.kind != "region" {
                                return Err(Error::MethodNotAllowed(
                                    "The method is not allowed for the requested URL.".into(),
                                ));
                            }
                            create(spec, s, a, Some(id), b).await
                        }
                    },
                ),
        );
    r
}

fn present(state: &AppState, spec: &Spec, v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(s) = spec.secret_on_create {
        if let Some(o) = v.as_object_mut() {
            o.remove(s);
        }
    }
    let id = v["id"].as_str().unwrap_or_default().to_string();
    v["links"] = self_link(state, &format!("{}/{id}", spec.path));
    v
}

fn found<'a>(m: &'a Model, spec: &Spec, id: &str) -> Result<&'a Value> {
    m.doc(spec.kind, id)
        .ok_or_else(|| Error::not_found(spec.member, id))
}

async fn list(
    spec: &'static Spec,
    State(state): State<AppState>,
    Auth(c): Auth,
    q: Query,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let out: Vec<Value> = m
        .docs_of(spec.kind)
        .filter(|d| (spec.may_read)(&c, d))
        .filter(|d| {
            spec.filters.iter().all(|f| {
                q.get(*f)
                    .is_none_or(|want| d.get(*f).and_then(Value::as_str) == Some(want.as_str()))
            })
        })
        .map(|d| present(&state, spec, d))
        .collect();
    if out.is_empty()
        && !(spec.may_read)(&c, &Value::Null)
        && !c.is_reader_everywhere()
        && m.docs_of(spec.kind).next().is_some()
    {
        enforce(false, &format!("list_{}", spec.collection))?;
    }
    Ok(Json(
        json!({spec.collection: out, "links": collection_links(&state, spec.path)}),
    ))
}

async fn create(
    spec: &'static Spec,
    State(state): State<AppState>,
    Auth(c): Auth,
    id: Option<String>,
    Body(body): Body<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let mut b = member(body, spec.member)?;
    enforce(
        (spec.may_write)(&c, &Value::Object(b.clone())),
        &format!("create_{}", spec.member),
    )?;
    let id = match (id, b.get("id").and_then(Value::as_str)) {
        (Some(path_id), Some(body_id)) if path_id != body_id => {
            return Err(Error::BadRequest(
                "The id in the body does not match the URL.".into(),
            ))
        }
        (Some(path_id), _) => path_id,
        (None, Some(body_id)) if spec.kind == "region" => body_id.to_string(),
        _ => new_id(),
    };
    if id.len() > 255 {
        return Err(Error::BadRequest(
            "The id is longer than 255 characters.".into(),
        ));
    }
    b.insert("id".into(), json!(id));
    b.remove("links");
    let doc = state
        .identity
        .change(|m| {
            let mut ops = (spec.validate)(m, &mut b, None)?;
            if m.doc(spec.kind, &id).is_some() {
                return Err(Error::Conflict(format!("Duplicate ID, {id}.")));
            }
            let doc = Value::Object(b.clone());
            ops.push(Op::put(spec.kind, &id, "", &id, &doc));
            Ok((ops, doc))
        })
        .await?;
    let mut out = present(&state, spec, &doc);
    if let Some(s) = spec.secret_on_create {
        out[s] = doc[s].clone();
    }
    Ok((StatusCode::CREATED, Json(json!({spec.member: out}))))
}

async fn show(
    spec: &'static Spec,
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let d = found(&m, spec, &id)?;
    enforce((spec.may_read)(&c, d), &format!("get_{}", spec.member))?;
    Ok(Json(json!({spec.member: present(&state, spec, d)})))
}

async fn update(
    spec: &'static Spec,
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(body): Body<Value>,
) -> Result<Json<Value>> {
    let mut b = member(body, spec.member)?;
    if b.get("id").is_some_and(|x| x != id.as_str()) {
        return Err(Error::BadRequest("The id cannot change.".into()));
    }
    b.remove("links");
    let doc = state
        .identity
        .change(|m| {
            let old = found(m, spec, &id)?;
            enforce(
                (spec.may_write)(&c, old),
                &format!("update_{}", spec.member),
            )?;
            let mut ops = (spec.validate)(m, &mut b, Some(old))?;
            let mut doc = old.clone();
            if let Some(o) = doc.as_object_mut() {
                o.extend(b.clone());
            }
            ops.push(Op::put(spec.kind, &id, "", &id, &doc));
            Ok((ops, doc))
        })
        .await?;
    Ok(Json(json!({spec.member: present(&state, spec, &doc)})))
}

async fn delete(
    spec: &'static Spec,
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state
        .identity
        .change(|m| {
            let d = found(m, spec, &id)?;
            enforce((spec.may_write)(&c, d), &format!("delete_{}", spec.member))?;
            let mut ops = vec![Op::delete(spec.kind, &id)];
            match spec.kind {
                "service" => ops.extend(
                    m.docs_of("endpoint")
                        .filter(|e| e["service_id"] == id.as_str())
                        .filter_map(|e| e["id"].as_str())
                        .map(|e| Op::delete("endpoint", e)),
                ),
                "region"
                    if m.docs_of("region")
                        .any(|r| r["parent_region_id"] == id.as_str()) =>
                {
                    return Err(Error::Forbidden(
                        "Cannot delete a region that has child regions.".into(),
                    ));
                }
                _ => {}
            }
            Ok((ops, ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
