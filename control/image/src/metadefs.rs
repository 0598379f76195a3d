//! Glance's metadata definitions catalog (`/v2/metadefs`): namespaces and,
//! inside each, properties, objects, tags and resource type associations;
//! the fixed list of resource types; their JSON schemas.
//!
//! A namespace is one document (kind `metadef_namespace`, keyed by its
//! name) holding everything inside it, so a rename or a delete is one
//! write. Admins write; everyone reads public namespaces, owners read
//! their private ones.

use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{empty, parse_body, Auth};
use ursa_core::store::Op;
use ursa_identity::model::Model;

const KIND: &str = "metadef_namespace";
/// Resource types beyond the built-in ones, made by associating a
/// namespace with a new name (as Glance makes them).
const RESOURCE_TYPE: &str = "metadef_resource_type";
const RESOURCE_TYPES: &[&str] = &[
    "OS::Cinder::Volume",
    "OS::Glance::Image",
    "OS::Nova::Aggregate",
    "OS::Nova::Flavor",
    "OS::Nova::Server",
];

type Doc = Map<String, Value>;

pub fn routes() -> Router<AppState> {
    let ns = "/image/v2/metadefs/namespaces/{ns}";
    Router::new()
        .route("/image/v2/metadefs/resource_types", get(resource_types))
        .route("/image/v2/metadefs/namespaces", get(list).post(create))
        .route(ns, get(show).put(update).delete(remove))
        .route(
            &format!("{ns}/properties"),
            get(list_props).post(create_prop),
        )
        .route(
            &format!("{ns}/properties/{{name}}"),
            get(show_prop).put(update_prop).delete(delete_prop),
        )
        .route(
            &format!("{ns}/objects"),
            get(list_objects).post(create_object),
        )
        .route(
            &format!("{ns}/objects/{{name}}"),
            get(show_object).put(update_object).delete(delete_object),
        )
        .route(
            &format!("{ns}/tags"),
            get(list_tags).post(create_tags).delete(delete_tags),
        )
        .route(
            &format!("{ns}/tags/{{name}}"),
            get(show_tag)
                .post(create_tag)
                .put(update_tag)
                .delete(delete_tag),
        )
        .route(
            &format!("{ns}/resource_types"),
            get(list_assocs).post(create_assoc),
        )
        .route(
            &format!("{ns}/resource_types/{{name}}"),
            axum::routing::delete(delete_assoc),
        )
        .route("/image/v2/schemas/metadefs/{what}", get(schema))
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn admin(auth: &Auth) -> Result<()> {
    if auth.0.is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "You are not authorized to change metadata definitions.".into(),
        ))
    }
}

fn visible(auth: &Auth, d: &Doc) -> bool {
    auth.0.is_admin()
        || d.get("visibility").and_then(|v| v.as_str()) == Some("public")
        || auth
            .0
            .project_id()
            .is_some_and(|p| d.get("owner").and_then(|v| v.as_str()) == Some(p))
}

fn find(m: &Model, auth: &Auth, ns: &str) -> Result<Doc> {
    m.doc(KIND, ns)
        .and_then(|v| v.as_object().cloned())
        .filter(|d| visible(auth, d))
        .ok_or_else(|| {
            Error::NotFound(format!("Metadata definition namespace={ns} was not found."))
        })
}

fn body(bytes: &Bytes) -> Result<Doc> {
    match parse_body::<Value>(bytes)? {
        Value::Object(o) => Ok(o),
        _ => Err(Error::BadRequest("A JSON object is expected.".into())),
    }
}

fn name_of(b: &Doc, key: &str) -> Result<String> {
    match b.get(key).and_then(|v| v.as_str()) {
        Some(s) if !s.is_empty() && s.len() <= 80 => Ok(s.to_string()),
        _ => Err(Error::BadRequest(format!(
            "'{key}' is required (a non-empty string of at most 80 characters)."
        ))),
    }
}

/// The namespace as shown: its attributes, links, and what it holds.
fn view(d: &Doc) -> Value {
    let mut out = d.clone();
    let ns = d.get("namespace").and_then(|v| v.as_str()).unwrap_or("");
    out.insert(
        "self".into(),
        json!(format!("/v2/metadefs/namespaces/{ns}")),
    );
    out.insert("schema".into(), json!("/v2/schemas/metadefs/namespace"));
    for k in [
        "properties",
        "objects",
        "tags",
        "resource_type_associations",
    ] {
        let empty = match out.get(k) {
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => true,
        };
        if empty {
            out.remove(k);
        }
    }
    Value::Object(out)
}

async fn write(app: &AppState, op: Vec<Op>) -> Result<()> {
    app.identity.change(move |_| Ok((op.clone(), ()))).await
}

/// Changes a namespace under the writer lock, stores it (under its new
/// name when renamed) and returns `f`'s answer.
async fn modify<T: Send + 'static>(
    app: &AppState,
    auth: &Auth,
    ns: &str,
    mut f: impl FnMut(&mut Doc) -> Result<T> + Send,
) -> Result<T> {
    admin(auth)?;
    app.identity
        .change(|m| {
            let mut d = find(m, auth, ns)?;
            let out = f(&mut d)?;
            d.insert("updated_at".into(), json!(now()));
            let name = d["namespace"].as_str().unwrap_or(ns).to_string();
            let mut ops = Vec::new();
            if name != ns {
                if m.doc(KIND, &name).is_some() {
                    return Err(Error::Conflict(format!(
                        "A namespace named {name} already exists."
                    )));
                }
                ops.push(Op::delete(KIND, ns));
            }
            ops.push(Op::put(KIND, &name, "", &name, Value::Object(d)));
            Ok((ops, out))
        })
        .await
}

async fn resource_types(State(app): State<AppState>, _auth: Auth) -> Json<Value> {
    let t = "2014-08-28T17:13:06Z";
    let mut list: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|n| json!({"name": n, "created_at": t, "updated_at": t}))
        .collect();
    let m = app.identity.model();
    list.extend(m.docs_of(RESOURCE_TYPE).cloned());
    Json(json!({ "resource_types": list }))
}

async fn list(State(app): State<AppState>, auth: Auth) -> Json<Value> {
    let m = app.identity.model();
    let mut v: Vec<Value> = m
        .docs_of(KIND)
        .filter_map(|d| d.as_object())
        .filter(|d| visible(&auth, d))
        .map(|d| {
            let mut d = d.clone();
            d.remove("properties");
            d.remove("objects");
            d.remove("tags");
            view(&d)
        })
        .collect();
    v.sort_by(|a, b| a["namespace"].as_str().cmp(&b["namespace"].as_str()));
    Json(
        json!({"namespaces": v, "first": "/v2/metadefs/namespaces", "schema": "/v2/schemas/metadefs/namespaces"}),
    )
}

fn check_visibility(b: &Doc) -> Result<()> {
    match b.get("visibility") {
        None => Ok(()),
        Some(Value::String(s)) if s == "public" || s == "private" => Ok(()),
        Some(v) => Err(Error::BadRequest(format!(
            "Invalid visibility {v}: public or private."
        ))),
    }
}

async fn create(State(app): State<AppState>, auth: Auth, bytes: Bytes) -> Result<Response> {
    admin(&auth)?;
    let b = body(&bytes)?;
    let ns = name_of(&b, "namespace")?;
    check_visibility(&b)?;
    let t = now();
    let mut d = Doc::new();
    d.insert("namespace".into(), json!(ns));
    d.insert(
        "display_name".into(),
        b.get("display_name").cloned().unwrap_or(json!(ns)),
    );
    d.insert(
        "description".into(),
        b.get("description").cloned().unwrap_or(json!("")),
    );
    d.insert(
        "visibility".into(),
        b.get("visibility").cloned().unwrap_or(json!("private")),
    );
    d.insert(
        "protected".into(),
        json!(b
            .get("protected")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)),
    );
    d.insert("owner".into(), json!(auth.0.project_id().unwrap_or("")));
    d.insert("created_at".into(), json!(t));
    d.insert("updated_at".into(), json!(t));
    let assocs: Vec<Value> = b
        .get("resource_type_associations")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .map(|r| {
                    let mut r = r.as_object().cloned().unwrap_or_default();
                    r.insert("created_at".into(), json!(t));
                    r.insert("updated_at".into(), json!(t));
                    Value::Object(r)
                })
                .collect()
        })
        .unwrap_or_default();
    d.insert("resource_type_associations".into(), Value::Array(assocs));
    d.insert(
        "properties".into(),
        b.get("properties")
            .cloned()
            .filter(|v| v.is_object())
            .unwrap_or(json!({})),
    );
    d.insert(
        "objects".into(),
        b.get("objects")
            .cloned()
            .filter(|v| v.is_array())
            .unwrap_or(json!([])),
    );
    d.insert("tags".into(), json!([]));
    let out = view(&d);
    let id = ns.clone();
    app.identity
        .change(move |m| {
            if m.doc(KIND, &id).is_some() {
                return Err(Error::Conflict(format!(
                    "A namespace named {id} already exists."
                )));
            }
            Ok((
                vec![Op::put(KIND, &id, "", &id, Value::Object(d.clone()))],
                (),
            ))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn show(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    Ok(Json(view(&find(&m, &auth, &ns)?)))
}

async fn update(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let b = body(&bytes)?;
    check_visibility(&b)?;
    let d = modify(&app, &auth, &ns, |d| {
        if let Some(n) = b.get("namespace") {
            let n = n
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Error::BadRequest("Invalid namespace name.".into()))?;
            d.insert("namespace".into(), json!(n));
        }
        for k in ["display_name", "description", "visibility"] {
            if let Some(v) = b.get(k) {
                d.insert(k.into(), v.clone());
            }
        }
        if let Some(p) = b.get("protected") {
            d.insert(
                "protected".into(),
                json!(p
                    .as_bool()
                    .ok_or_else(|| Error::BadRequest("protected is a boolean.".into()))?),
            );
        }
        Ok(d.clone())
    })
    .await?;
    Ok(Json(view(&d)))
}

async fn remove(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
) -> Result<Response> {
    admin(&auth)?;
    let d = {
        let m = app.identity.model();
        find(&m, &auth, &ns)?
    };
    if d.get("protected") == Some(&Value::Bool(true)) {
        return Err(Error::Forbidden(format!(
            "Namespace {ns} is protected and cannot be deleted."
        )));
    }
    write(&app, vec![Op::delete(KIND, &ns)]).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

// Properties: a map from name to definition.

fn prop_view(name: &str, p: &Value) -> Value {
    let mut p = p.as_object().cloned().unwrap_or_default();
    p.insert("name".into(), json!(name));
    Value::Object(p)
}

async fn list_props(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let d = find(&m, &auth, &ns)?;
    Ok(Json(
        json!({"properties": d.get("properties").cloned().unwrap_or(json!({}))}),
    ))
}

fn prop_def(b: &Doc) -> Result<(String, Value)> {
    let name = name_of(b, "name")?;
    if b.get("title").and_then(|v| v.as_str()).is_none()
        || b.get("type").and_then(|v| v.as_str()).is_none()
    {
        return Err(Error::BadRequest(
            "A property needs a title and a type.".into(),
        ));
    }
    let mut p = b.clone();
    p.remove("name");
    Ok((name, Value::Object(p)))
}

async fn create_prop(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
    bytes: Bytes,
) -> Result<Response> {
    let (name, p) = prop_def(&body(&bytes)?)?;
    let out = prop_view(&name, &p);
    modify(&app, &auth, &ns, |d| {
        let props = d.entry("properties").or_insert(json!({}));
        if props.get(&name).is_some() {
            return Err(Error::Conflict(format!(
                "A property named {name} already exists in {ns}."
            )));
        }
        props[&name] = p.clone();
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn show_prop(
    State(app): State<AppState>,
    auth: Auth,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let d = find(&m, &auth, &ns)?;
    d.get("properties")
        .and_then(|p| p.get(&name))
        .map(|p| Json(prop_view(&name, p)))
        .ok_or_else(|| Error::NotFound(format!("Property {name} not found in namespace {ns}.")))
}

async fn update_prop(
    State(app): State<AppState>,
    auth: Auth,
    Path((ns, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let (new, p) = prop_def(&body(&bytes)?)?;
    let out = prop_view(&new, &p);
    modify(&app, &auth, &ns, |d| {
        let props = d.entry("properties").or_insert(json!({}));
        let o = props
            .as_object_mut()
            .ok_or_else(|| Error::Internal("properties".into()))?;
        if o.remove(&name).is_none() {
            return Err(Error::NotFound(format!(
                "Property {name} not found in namespace {ns}."
            )));
        }
        o.insert(new.clone(), p.clone());
        Ok(())
    })
    .await?;
    Ok(Json(out))
}

async fn delete_prop(
    State(app): State<AppState>,
    auth: Auth,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response> {
    modify(&app, &auth, &ns, |d| {
        d.get_mut("properties")
            .and_then(|p| p.as_object_mut())
            .and_then(|o| o.remove(&name))
            .map(|_| ())
            .ok_or_else(|| Error::NotFound(format!("Property {name} not found in namespace {ns}.")))
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

// Objects and tags: lists of named entries.

fn entries<'a>(d: &'a mut Doc, key: &str) -> &'a mut Vec<Value> {
    let v = d.entry(key).or_insert(json!([]));
    if !v.is_array() {
        *v = json!([]);
    }
    v.as_array_mut().expect("made an array")
}

fn entry_named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|o| o["name"] == name)
}

fn object_view(ns: &str, o: &Value) -> Value {
    let mut o = o.clone();
    let name = o["name"].as_str().unwrap_or("").to_string();
    o["self"] = json!(format!("/v2/metadefs/namespaces/{ns}/objects/{name}"));
    o["schema"] = json!("/v2/schemas/metadefs/object");
    o
}

async fn list_objects(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let d = find(&m, &auth, &ns)?;
    let objs: Vec<Value> = d
        .get("objects")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().map(|o| object_view(&ns, o)).collect())
        .unwrap_or_default();
    Ok(Json(
        json!({"objects": objs, "schema": "v2/schemas/metadefs/objects"}),
    ))
}

fn new_entry(b: &Doc) -> Result<Value> {
    let name = name_of(b, "name")?;
    let t = now();
    let mut o = b.clone();
    o.insert("name".into(), json!(name));
    o.insert("created_at".into(), json!(t));
    o.insert("updated_at".into(), json!(t));
    Ok(Value::Object(o))
}

async fn create_object(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
    bytes: Bytes,
) -> Result<Response> {
    let o = new_entry(&body(&bytes)?)?;
    let out = object_view(&ns, &o);
    modify(&app, &auth, &ns, |d| {
        let list = entries(d, "objects");
        if entry_named(list, o["name"].as_str().unwrap_or("")).is_some() {
            return Err(Error::Conflict(format!(
                "An object named {} already exists in {ns}.",
                o["name"]
            )));
        }
        list.push(o.clone());
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn show_object(
    State(app): State<AppState>,
    auth: Auth,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let d = find(&m, &auth, &ns)?;
    d.get("objects")
        .and_then(|v| v.as_array())
        .and_then(|a| entry_named(a, &name))
        .map(|o| Json(object_view(&ns, o)))
        .ok_or_else(|| Error::NotFound(format!("Object {name} not found in namespace {ns}.")))
}

/// Replaces a named entry of a list with the request's version.
async fn replace_entry(
    app: &AppState,
    auth: &Auth,
    ns: &str,
    key: &'static str,
    name: &str,
    b: Doc,
) -> Result<Value> {
    let new_name = name_of(&b, "name")?;
    let (ns2, name2) = (ns.to_string(), name.to_string());
    modify(app, auth, ns, move |d| {
        let list = entries(d, key);
        let i = list
            .iter()
            .position(|o| o["name"] == name2.as_str())
            .ok_or_else(|| Error::NotFound(format!("{name2} not found in namespace {ns2}.")))?;
        if new_name != name2 && entry_named(list, &new_name).is_some() {
            return Err(Error::Conflict(format!(
                "{new_name} already exists in {ns2}."
            )));
        }
        let created = list[i]["created_at"].clone();
        let mut o = b.clone();
        o.insert("name".into(), json!(new_name));
        o.insert("created_at".into(), created);
        o.insert("updated_at".into(), json!(now()));
        list[i] = Value::Object(o);
        Ok(list[i].clone())
    })
    .await
}

async fn drop_entry(
    app: &AppState,
    auth: &Auth,
    ns: &str,
    key: &'static str,
    name: &str,
) -> Result<()> {
    let (ns2, name2) = (ns.to_string(), name.to_string());
    modify(app, auth, ns, move |d| {
        let list = entries(d, key);
        let before = list.len();
        list.retain(|o| o["name"] != name2.as_str());
        if list.len() == before {
            return Err(Error::NotFound(format!(
                "{name2} not found in namespace {ns2}."
            )));
        }
        Ok(())
    })
    .await
}

async fn update_object(
    State(app): State<AppState>,
    auth: Auth,
    Path((ns, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let o = replace_entry(&app, &auth, &ns, "objects", &name, body(&bytes)?).await?;
    Ok(Json(object_view(&ns, &o)))
}

async fn delete_object(
    State(app): State<AppState>,
    auth: Auth,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response> {
    drop_entry(&app, &auth, &ns, "objects", &name).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn list_tags(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let d = find(&m, &auth, &ns)?;
    Ok(Json(
        json!({"tags": d.get("tags").cloned().unwrap_or(json!([]))}),
    ))
}

/// `POST …/tags`: the namespace's tags become these, or, with
/// `X-Openstack-Append: True`, these are added to them (a name it has
/// already is a conflict).
async fn create_tags(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
    headers: axum::http::HeaderMap,
    bytes: Bytes,
) -> Result<Response> {
    let append = headers
        .get("x-openstack-append")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let b = body(&bytes)?;
    let tags: Vec<Value> = b
        .get("tags")
        .and_then(|v| v.as_array())
        .ok_or_else(|| Error::BadRequest("'tags' must be a list of {\"name\": ...}.".into()))?
        .iter()
        .map(|t| new_entry(&t.as_object().cloned().unwrap_or_default()))
        .collect::<Result<_>>()?;
    let out = json!({"tags": tags.iter().map(|t| json!({"name": t["name"]})).collect::<Vec<_>>()});
    modify(&app, &auth, &ns, |d| {
        let mut seen = std::collections::BTreeSet::new();
        for t in &tags {
            if !seen.insert(t["name"].as_str().unwrap_or("").to_string()) {
                return Err(Error::Conflict(format!(
                    "Duplicate tag {} in the request.",
                    t["name"]
                )));
            }
        }
        let list = entries(d, "tags");
        if append {
            if let Some(dup) = tags
                .iter()
                .find(|t| entry_named(list, t["name"].as_str().unwrap_or("")).is_some())
            {
                return Err(Error::Conflict(format!(
                    "A metadata tag with name={} already exists in namespace={ns}.",
                    dup["name"]
                )));
            }
            list.extend(tags.iter().cloned());
        } else {
            *list = tags.clone();
        }
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn delete_tags(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
) -> Result<Response> {
    modify(&app, &auth, &ns, |d| {
        entries(d, "tags").clear();
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn create_tag(
    State(app): State<AppState>,
    auth: Auth,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response> {
    let mut b = Doc::new();
    b.insert("name".into(), json!(name));
    let t = new_entry(&b)?;
    let out = t.clone();
    modify(&app, &auth, &ns, |d| {
        let list = entries(d, "tags");
        if entry_named(list, &name).is_some() {
            return Err(Error::Conflict(format!(
                "A tag named {name} already exists in {ns}."
            )));
        }
        list.push(t.clone());
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn show_tag(
    State(app): State<AppState>,
    auth: Auth,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let d = find(&m, &auth, &ns)?;
    d.get("tags")
        .and_then(|v| v.as_array())
        .and_then(|a| entry_named(a, &name))
        .map(|t| Json(t.clone()))
        .ok_or_else(|| Error::NotFound(format!("Tag {name} not found in namespace {ns}.")))
}

async fn update_tag(
    State(app): State<AppState>,
    auth: Auth,
    Path((ns, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let t = replace_entry(&app, &auth, &ns, "tags", &name, body(&bytes)?).await?;
    Ok(Json(t))
}

async fn delete_tag(
    State(app): State<AppState>,
    auth: Auth,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response> {
    drop_entry(&app, &auth, &ns, "tags", &name).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn list_assocs(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
) -> Result<Json<Value>> {
    let m = app.identity.model();
    let d = find(&m, &auth, &ns)?;
    Ok(Json(
        json!({"resource_type_associations": d.get("resource_type_associations").cloned().unwrap_or(json!([]))}),
    ))
}

async fn create_assoc(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
    bytes: Bytes,
) -> Result<Response> {
    let a = new_entry(&body(&bytes)?)?;
    let rt = a["name"].as_str().unwrap_or("").to_string();
    // A name Glance does not know yet becomes a resource type.
    let known = RESOURCE_TYPES.contains(&rt.as_str())
        || app.identity.model().doc(RESOURCE_TYPE, &rt).is_some();
    if !known {
        admin(&auth)?;
        let t = now();
        let doc = json!({"name": rt, "created_at": t, "updated_at": t});
        app.identity
            .change(move |_| Ok((vec![Op::put(RESOURCE_TYPE, &rt, "", &rt, doc.clone())], ())))
            .await?;
    }
    let out = a.clone();
    modify(&app, &auth, &ns, |d| {
        let list = entries(d, "resource_type_associations");
        if entry_named(list, a["name"].as_str().unwrap_or("")).is_some() {
            return Err(Error::Conflict(format!(
                "{ns} is already associated with {}.",
                a["name"]
            )));
        }
        list.push(a.clone());
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn delete_assoc(
    State(app): State<AppState>,
    auth: Auth,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response> {
    drop_entry(&app, &auth, &ns, "resource_type_associations", &name).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn schema(Path(what): Path<String>) -> Result<Json<Value>> {
    let name = match what.as_str() {
        "namespace" | "namespaces" | "object" | "objects" | "property" | "properties" | "tag"
        | "tags" => what.clone(),
        "resource_type" => "resource_type_association".into(),
        "resource_types" => "resource_type_associations".into(),
        _ => return Err(Error::NotFound(format!("No schema {what}."))),
    };
    let item = json!({"type": "object", "additionalProperties": true,
        "properties": {"name": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
                       "updated_at": {"type": "string", "format": "date-time"}}});
    Ok(Json(if name.ends_with('s') {
        json!({"name": name, "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"},
               {"rel": "describedby", "href": "{schema}"}],
               "properties": {name.clone(): {"type": "array", "items": item}}})
    } else {
        let mut s = item;
        s["name"] = json!(name);
        s
    }))
}
