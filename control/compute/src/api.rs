//! Nova v2.1 over HTTP at `/compute/v2.1`: servers (create with networks,
//! an image, a flavor, a key pair, user data and metadata; list, detail,
//! show, update, delete; start, stop, reboot, console output), flavors
//! (with extra specs), key pairs, limits and availability zones. The API
//! answers at microversion 2.1.

use super::{flavor_record, now, st, Compute, Rec, FLAVOR, KEYPAIR, QUOTA_KEYPAIRS, SERVER};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{empty, parse_body, Auth, RequestId};

pub fn routes() -> Router<AppState> {
    let v = Router::new()
        .route("/servers", get(list_servers).post(create_server))
        .route("/servers/detail", get(list_servers_detail))
        .route(
            "/servers/{id}",
            get(show_server).put(update_server).delete(delete_server),
        )
        .route("/servers/{id}/action", post(super::actions::server_action))
        .route(
            "/servers/{id}/os-volume_attachments",
            get(list_attachments).post(attach_volume),
        )
        .route(
            "/servers/{id}/os-volume_attachments/{volume_id}",
            get(show_attachment).put(swap_volume).delete(detach_volume),
        )
        .route("/flavors", get(list_flavors).post(create_flavor))
        .route("/flavors/detail", get(list_flavors_detail))
        .route("/flavors/{id}", get(show_flavor).delete(delete_flavor))
        .route(
            "/flavors/{id}/os-extra_specs",
            get(flavor_specs).post(set_flavor_specs),
        )
        .route("/os-keypairs", get(list_keypairs).post(create_keypair))
        .route(
            "/os-keypairs/{name}",
            get(show_keypair).delete(delete_keypair),
        )
        .route("/limits", get(limits))
        .route("/os-hypervisors", get(hypervisors))
        .route("/os-hypervisors/detail", get(hypervisors_detail))
        .route("/os-hypervisors/statistics", get(hypervisor_stats))
        .route("/os-hypervisors/{hid}", get(hypervisor_show))
        .route("/os-services", get(services))
        .route("/os-availability-zone", get(zones))
        .route("/os-availability-zone/detail", get(zones_detail))
        .merge(super::proxy::routes())
        .merge(super::admin::routes())
        .merge(super::server_parts::routes());
    Router::new()
        .route("/compute", get(versions))
        .route("/compute/", get(versions))
        .route("/compute/v2", get(version20))
        .route("/compute/v2/", get(version20))
        .route("/compute/v2.1", get(version))
        .route("/compute/v2.1/", get(version))
        .nest("/compute/v2.1/{project_id}", v.clone())
        .nest("/compute/v2.1", v)
        .layer(axum::middleware::from_fn(microversion))
}

fn version_doc(app: &AppState) -> Value {
    json!({"id": "v2.1", "status": "CURRENT", "version": "2.1", "min_version": "2.1",
           "updated": "2013-07-23T11:33:21Z",
           "links": [{"rel": "self", "href": format!("{}/compute/v2.1/", app.base_url)}],
           "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]})
}

/// v2.0 is the same API without microversions (Nova serves both).
fn v20_doc(app: &AppState) -> Value {
    json!({"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
           "updated": "2011-01-21T11:33:21Z",
           "links": [{"rel": "self", "href": format!("{}/compute/v2/", app.base_url)}],
           "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}]})
}

async fn version20(State(app): State<AppState>) -> Json<Value> {
    Json(json!({"version": v20_doc(&app)}))
}

async fn versions(State(app): State<AppState>) -> Json<Value> {
    Json(json!({"versions": [v20_doc(&app), version_doc(&app)]}))
}

async fn version(State(app): State<AppState>) -> Json<Value> {
    Json(json!({"version": version_doc(&app)}))
}

/// Ursa answers at 2.1; a client asking for more gets 2.1 said plainly
/// (asking for an unknown version is a 406, as Nova does).
async fn microversion(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let asked = req
        .headers()
        .get("openstack-api-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("compute"))
        .map(|v| v.trim().to_string())
        .or_else(|| {
            req.headers()
                .get("x-openstack-nova-api-version")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        });
    if let Some(v) = asked.as_deref() {
        if v != "2.1" && v != "latest" && v != "2.0" {
            return Error::NotAcceptable(format!(
                "Version {v} is not supported by the API. Minimum is 2.1 and maximum is 2.1."
            ))
            .into_response();
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        "openstack-api-version",
        HeaderValue::from_static("compute 2.1"),
    );
    h.insert(
        "x-openstack-nova-api-version",
        HeaderValue::from_static("2.1"),
    );
    h.insert(
        "vary",
        HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
    );
    resp
}

pub(super) fn svc(app: &AppState) -> Result<&Compute> {
    app.compute
        .as_ref()
        .ok_or_else(|| Error::NotFound("The compute service has no compute node here.".into()))
}

pub(super) fn project(auth: &Auth) -> Result<String> {
    auth.0.project_id().map(str::to_string).ok_or_else(|| {
        Error::Forbidden("Servers belong to projects: use a project-scoped token.".into())
    })
}

pub(super) fn write_access(auth: &Auth) -> Result<()> {
    if auth.0.has("member") || auth.0.is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "Policy doesn't allow this operation to be performed.".into(),
        ))
    }
}

pub(super) fn body_obj(bytes: &Bytes, key: &str) -> Result<Rec> {
    let v: Value = parse_body(bytes)?;
    match v.get(key) {
        Some(Value::Object(o)) => Ok(o.clone()),
        _ => Err(Error::BadRequest(format!(
            "Invalid input for field/attribute {key}."
        ))),
    }
}

pub(super) fn query(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------
// Flavors.

fn flavor_view(app: &AppState, f: &Rec, detail: bool) -> Value {
    let id = st(f, "id");
    let links = json!([
        {"rel": "self", "href": format!("{}/compute/v2.1/flavors/{id}", app.base_url)},
        {"rel": "bookmark", "href": format!("{}/compute/flavors/{id}", app.base_url)}
    ]);
    if !detail {
        return json!({"id": id, "name": f["name"], "links": links});
    }
    let mut v = f.clone();
    v.remove("extra_specs");
    v.remove("description");
    v.retain(|k, _| !k.starts_with("ursa:"));
    v.insert("links".into(), links);
    Value::Object(v)
}

/// Whether a project may use a flavor: public ones, and private ones it
/// was given access to.
pub(super) fn flavor_usable(auth: &Auth, f: &Rec) -> bool {
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
fn flavors_listed(s: &Compute, auth: &Auth, q: &[(String, String)]) -> Vec<Rec> {
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

fn filter_flavors(v: Vec<Rec>, q: &[(String, String)]) -> Vec<Rec> {
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

fn filter_flavor_attrs(v: Vec<Rec>, q: &[(String, String)]) -> Vec<Rec> {
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

async fn list_flavors(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let q = query(&raw);
    let v = filter_flavors(flavors_listed(s, &auth, &q), &q);
    Ok(Json(
        json!({"flavors": v.iter().map(|f| flavor_view(&app, f, false)).collect::<Vec<_>>()}),
    ))
}

async fn list_flavors_detail(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let q = query(&raw);
    let v = filter_flavors(flavors_listed(s, &auth, &q), &q);
    Ok(Json(
        json!({"flavors": v.iter().map(|f| flavor_view(&app, f, true)).collect::<Vec<_>>()}),
    ))
}

pub(super) fn find_flavor(s: &Compute, auth: &Auth, id: &str) -> Result<Rec> {
    s.doc(FLAVOR, id)
        .filter(|f| flavor_usable(auth, f))
        .ok_or_else(|| Error::NotFound(format!("Flavor {id} could not be found.")))
}

async fn show_flavor(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let id = last(&p);
    let s = svc(&app)?;
    let f = find_flavor(s, &auth, &id)?;
    Ok(Json(json!({"flavor": flavor_view(&app, &f, true)})))
}

/// The last path parameter (routes are nested under an optional project id).
pub(super) fn last(p: &[(String, String)]) -> String {
    p.last().map(|(_, v)| v.clone()).unwrap_or_default()
}

pub(super) fn param(p: &[(String, String)], name: &str) -> String {
    p.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

async fn create_flavor(State(app): State<AppState>, auth: Auth, bytes: Bytes) -> Result<Response> {
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
    s.put(FLAVOR, f.clone()).await?;
    Ok(Json(json!({"flavor": flavor_view(&app, &f, true)})).into_response())
}

async fn delete_flavor(
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

async fn flavor_specs(
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

async fn set_flavor_specs(
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

// ---------------------------------------------------------------------
// Key pairs.

fn keypair_id(user: &str, name: &str) -> String {
    format!("{user}/{name}")
}

/// Nova's fingerprint: MD5 of the key blob, colon-separated.
fn fingerprint(public_key: &str) -> Result<String> {
    use md5::Digest;
    ssh_key::PublicKey::from_openssh(public_key.trim())
        .map_err(|e| Error::BadRequest(format!("Keypair data is invalid: {e}")))?;
    let blob = public_key
        .split_whitespace()
        .nth(1)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or_else(|| {
            Error::BadRequest("Keypair data is invalid: failed to generate fingerprint".into())
        })?;
    let d = md5::Md5::digest(&blob);
    Ok(d.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// A key pair as microversion 2.1 shows it (no `type`: that is 2.2).
fn keypair_view(k: &Rec, with_private: bool) -> Value {
    let mut v = json!({"name": k["name"], "public_key": k["public_key"], "fingerprint": k["fingerprint"],
                       "user_id": k["user_id"]});
    if with_private {
        v["private_key"] = k.get("ursa:private_key").cloned().unwrap_or(Value::Null);
    }
    v
}

async fn list_keypairs(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let v: Vec<Value> = s
        .docs(KEYPAIR)
        .iter()
        .filter(|k| st(k, "user_id") == auth.0.user_id)
        .map(|k| json!({"keypair": {"name": k["name"], "public_key": k["public_key"], "fingerprint": k["fingerprint"]}}))
        .collect();
    Ok(Json(json!({"keypairs": v})))
}

async fn create_keypair(State(app): State<AppState>, auth: Auth, bytes: Bytes) -> Result<Response> {
    let s = svc(&app)?;
    let b = body_obj(&bytes, "keypair")?;
    let name = b
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    if name.trim().is_empty()
        || name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_. @".contains(c))
    {
        return Err(Error::BadRequest(
            "Keypair data is invalid: Keypair name contains unsafe characters".into(),
        ));
    }
    let user = auth.0.user_id.clone();
    let (public, private) = match b.get("public_key").and_then(|v| v.as_str()) {
        Some(p) => (p.trim().to_string(), None),
        None => {
            let k = ssh_key::PrivateKey::random(
                &mut ssh_key::rand_core::OsRng,
                ssh_key::Algorithm::Ed25519,
            )
            .map_err(|e| Error::Internal(format!("key generation: {e}")))?;
            let public = k
                .public_key()
                .to_openssh()
                .map_err(|e| Error::Internal(e.to_string()))?;
            let private = k
                .to_openssh(ssh_key::LineEnding::LF)
                .map_err(|e| Error::Internal(e.to_string()))?
                .to_string();
            (public, Some(private))
        }
    };
    let fp = fingerprint(&public)?;
    let id = keypair_id(&user, &name);
    let mut k = json!({"id": id, "name": name, "user_id": user, "public_key": public,
                       "fingerprint": fp, "type": b.get("type").cloned().unwrap_or(json!("ssh")),
                       "created_at": now()})
    .as_object()
    .cloned()
    .unwrap_or_default();
    let view = {
        let mut k2 = k.clone();
        if let Some(p) = &private {
            k2.insert("ursa:private_key".into(), json!(p));
        }
        keypair_view(&k2, private.is_some())
    };
    k.remove("ursa:private_key");
    let (id2, user2) = (id.clone(), user.clone());
    s.identity
        .change(move |m| {
            if m.doc(KEYPAIR, &id2).is_some() {
                return Err(Error::Conflict(format!(
                    "Key pair '{}' already exists.",
                    id2.rsplit('/').next().unwrap_or("")
                )));
            }
            let n = m
                .docs_of(KEYPAIR)
                .filter(|x| x["user_id"] == user2.as_str())
                .count() as i64;
            if n >= QUOTA_KEYPAIRS {
                return Err(Error::Forbidden(
                    "Quota exceeded, too many key pairs.".into(),
                ));
            }
            Ok((
                vec![ursa_core::store::Op::put(
                    KEYPAIR,
                    &id2,
                    "",
                    &id2,
                    Value::Object(k.clone()),
                )],
                (),
            ))
        })
        .await?;
    Ok(Json(json!({"keypair": view})).into_response())
}

async fn show_keypair(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let name = param(&p, "name");
    let k = s
        .doc(KEYPAIR, &keypair_id(&auth.0.user_id, &name))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "Keypair {name} not found for user {}",
                auth.0.user_id
            ))
        })?;
    let mut v = keypair_view(&k, false);
    v["created_at"] = k["created_at"].clone();
    v["updated_at"] = Value::Null;
    v["deleted_at"] = Value::Null;
    v["deleted"] = json!(false);
    v["id"] = json!(1);
    Ok(Json(json!({"keypair": v})))
}

async fn delete_keypair(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    let s = svc(&app)?;
    let name = param(&p, "name");
    let id = keypair_id(&auth.0.user_id, &name);
    if s.doc(KEYPAIR, &id).is_none() {
        return Err(Error::NotFound(format!(
            "Keypair {name} not found for user {}",
            auth.0.user_id
        )));
    }
    s.identity
        .change(move |_| Ok((vec![ursa_core::store::Op::delete(KEYPAIR, &id)], ())))
        .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

// ---------------------------------------------------------------------
// Servers.

pub(super) fn server_links(app: &AppState, id: &str) -> Value {
    json!([
        {"rel": "self", "href": format!("{}/compute/v2.1/servers/{id}", app.base_url)},
        {"rel": "bookmark", "href": format!("{}/compute/servers/{id}", app.base_url)}
    ])
}

/// What a listing looks up once for all its servers: which servers have
/// ports, and the volumes attached to each.
#[derive(Default)]
struct Related {
    with_ports: std::collections::HashSet<String>,
    volumes: std::collections::HashMap<String, Vec<Value>>,
    /// Security group names of each server's ports.
    groups: std::collections::HashMap<String, Vec<String>>,
}

impl Related {
    fn gather(s: &Compute) -> Related {
        let mut out = Related::default();
        {
            let m = s.identity.model();
            for p in ursa_network::recs(&m, ursa_network::PORT) {
                let dev = st(p, "device_id").to_string();
                out.with_ports.insert(dev.clone());
                let names = out.groups.entry(dev).or_default();
                for g in p
                    .get("security_groups")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    let name = g
                        .as_str()
                        .and_then(|g| ursa_network::rec(&m, ursa_network::SG, g))
                        .map(|g| st(&g, "name").to_string());
                    if let Some(n) = name {
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                }
            }
        }
        for (server, vol) in all_attachments(s) {
            out.volumes
                .entry(server)
                .or_default()
                .push(json!({"id": vol}));
        }
        out
    }
}

pub(super) fn server_view(
    app: &AppState,
    s: &Compute,
    auth: &Auth,
    r: &Rec,
    detail: bool,
) -> Value {
    server_view_with(app, s, auth, r, detail, &Related::gather(s))
}

fn server_view_with(
    app: &AppState,
    s: &Compute,
    auth: &Auth,
    r: &Rec,
    detail: bool,
    rel: &Related,
) -> Value {
    let id = st(r, "id");
    if !detail {
        return json!({"id": id, "name": r["name"], "links": server_links(app, id)});
    }
    let addresses = if rel.with_ports.contains(id) {
        let m = s.identity.model();
        ursa_network::api::addresses(&m, id)
    } else {
        json!({})
    };
    let image = st(r, "ursa:image_id");
    let flavor = st(r, "ursa:flavor_id");
    let mut v = json!({
        "id": id, "name": r["name"], "status": r["status"], "tenant_id": r["tenant_id"],
        "user_id": r["user_id"], "metadata": r.get("metadata").cloned().unwrap_or(json!({})),
        "hostId": r["hostId"], "created": r["created"], "updated": r["updated"],
        // A volume-backed server has no image (Nova says "").
        "image": if image.is_empty() { json!("") } else {
            json!({"id": image, "links": [{"rel": "bookmark", "href": format!("{}/compute/images/{image}", app.base_url)}]})
        },
        "flavor": {"id": flavor, "links": [{"rel": "bookmark", "href": format!("{}/compute/flavors/{flavor}", app.base_url)}]},
        "addresses": addresses, "accessIPv4": r.get("accessIPv4").cloned().unwrap_or(json!("")),
        "accessIPv6": r.get("accessIPv6").cloned().unwrap_or(json!("")), "links": server_links(app, id),
        "OS-DCF:diskConfig": r.get("OS-DCF:diskConfig").cloned().unwrap_or(json!("MANUAL")), "progress": 0, "OS-EXT-AZ:availability_zone": "nova",
        "config_drive": r.get("config_drive").cloned().unwrap_or(json!("")), "key_name": r.get("key_name").cloned().unwrap_or(Value::Null),
        "OS-SRV-USG:launched_at": r.get("OS-SRV-USG:launched_at").cloned().unwrap_or(Value::Null),
        "OS-SRV-USG:terminated_at": Value::Null,
        "OS-EXT-STS:task_state": r.get("OS-EXT-STS:task_state").cloned().unwrap_or(Value::Null),
        "OS-EXT-STS:vm_state": r["OS-EXT-STS:vm_state"], "OS-EXT-STS:power_state": r["OS-EXT-STS:power_state"],
        "os-extended-volumes:volumes_attached": rel.volumes.get(id).cloned().unwrap_or_default(),
    });
    if let Some(f) = r.get("fault") {
        v["fault"] = f.clone();
    }
    // Progress only while it means something (as Nova shows it).
    if !matches!(
        st(r, "status"),
        "ACTIVE" | "BUILD" | "REBUILD" | "RESIZE" | "VERIFY_RESIZE"
    ) {
        if let Some(o) = v.as_object_mut() {
            o.remove("progress");
        }
    }
    if let Some(g) = rel.groups.get(id).filter(|g| !g.is_empty()) {
        v["security_groups"] = json!(g.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>());
    }
    if auth.0.is_admin() {
        v["OS-EXT-SRV-ATTR:host"] = json!(st(r, "ursa:node"));
        v["OS-EXT-SRV-ATTR:hypervisor_hostname"] = json!(st(r, "ursa:node"));
        v["OS-EXT-SRV-ATTR:instance_name"] = json!(format!("instance-{}", &id[..8.min(id.len())]));
    }
    v
}

pub(super) fn may_see(auth: &Auth, r: &Rec) -> bool {
    auth.0.is_admin() || auth.0.project_id() == Some(st(r, "tenant_id"))
}

pub(super) fn find_server(s: &Compute, auth: &Auth, id: &str) -> Result<Rec> {
    s.doc(SERVER, id)
        .filter(|r| may_see(auth, r))
        .ok_or_else(|| Error::NotFound(format!("Instance {id} could not be found.")))
}

async fn list_any(
    app: &AppState,
    auth: &Auth,
    raw: &Option<String>,
    detail: bool,
) -> Result<Json<Value>> {
    let s = svc(app)?;
    let q = query(raw);
    let all = auth.0.is_admin()
        && q.iter()
            .any(|(k, v)| k == "all_tenants" && v != "0" && v.to_lowercase() != "false");
    let mut v: Vec<Rec> = s
        .docs(SERVER)
        .into_iter()
        .filter(|r| {
            if all {
                true
            } else {
                auth.0.project_id() == Some(st(r, "tenant_id"))
            }
        })
        .collect();
    // Filters Nova answers for: regular expressions on name and addresses.
    let mut res = Vec::new();
    for (k, val) in &q {
        if matches!(k.as_str(), "name" | "ip" | "ip6") {
            res.push((
                k.clone(),
                regex::Regex::new(val).map_err(|_| {
                    Error::BadRequest(format!("Invalid regular expression for {k}"))
                })?,
            ));
        }
    }
    let since = match q.iter().find(|(k, _)| k == "changes-since") {
        Some((_, v)) => Some(
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&chrono::Utc))
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f")
                        .map(|t| t.and_utc())
                })
                .map_err(|_| {
                    Error::BadRequest(format!(
                        "Invalid input for query parameters changes-since: {v}"
                    ))
                })?,
        ),
        None => None,
    };
    let model = s.identity.model();
    v.retain(|r| {
        let addrs = || -> Vec<String> {
            ursa_network::recs(&model, ursa_network::PORT)
                .filter(|p| st(p, "device_id") == st(r, "id"))
                .flat_map(|p| {
                    p.get("fixed_ips")
                        .and_then(|f| f.as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|x| x["ip_address"].as_str().map(str::to_string))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let regex_ok = res.iter().all(|(k, re)| match k.as_str() {
            "name" => re.is_match(st(r, "name")),
            "ip" => addrs().iter().any(|a| a.contains('.') && re.is_match(a)),
            _ => addrs().iter().any(|a| a.contains(':') && re.is_match(a)),
        });
        let since_ok = since.is_none_or(|t| {
            chrono::DateTime::parse_from_rfc3339(st(r, "updated"))
                .is_ok_and(|u| u.with_timezone(&chrono::Utc) >= t)
        });
        regex_ok
            && since_ok
            && q.iter().all(|(k, val)| match k.as_str() {
                "status" => st(r, "status").eq_ignore_ascii_case(val),
                "flavor" => st(r, "ursa:flavor_id") == val,
                "image" => st(r, "ursa:image_id") == val,
                "tenant_id" | "project_id" => st(r, "tenant_id") == val,
                "host" | "node" => !auth.0.is_admin() || st(r, "ursa:node") == val,
                "reservation_id" => st(r, "reservation_id") == val,
                "availability_zone" => val == "nova",
                _ => true,
            })
    });
    drop(model);
    v.sort_by(|a, b| (st(b, "created"), st(b, "id")).cmp(&(st(a, "created"), st(a, "id"))));
    if let Some((_, m)) = q.iter().find(|(k, _)| k == "marker") {
        let pos = v
            .iter()
            .position(|r| st(r, "id") == m)
            .ok_or_else(|| Error::BadRequest(format!("marker [{m}] not found")))?;
        v = v.split_off(pos + 1);
    }
    let mut links = None;
    if let Some((_, l)) = q.iter().find(|(k, _)| k == "limit") {
        let l: usize = l
            .parse()
            .map_err(|_| Error::BadRequest("Invalid input for query parameters limit.".into()))?;
        if v.len() > l {
            v.truncate(l);
            if let Some(last) = v.last() {
                links = Some(
                    json!([{"rel": "next", "href": format!("{}/compute/v2.1/servers{}?limit={l}&marker={}",
                    app.base_url, if detail { "/detail" } else { "" }, st(last, "id"))}]),
                );
            }
        }
    }
    let rel = if detail {
        Related::gather(s)
    } else {
        Related::default()
    };
    let mut out = json!({"servers": v.iter().map(|r| server_view_with(app, s, auth, r, detail, &rel)).collect::<Vec<_>>()});
    if let Some(l) = links {
        out["servers_links"] = l;
    }
    Ok(Json(out))
}

async fn list_servers(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    list_any(&app, &auth, &raw, false).await
}

async fn list_servers_detail(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    list_any(&app, &auth, &raw, true).await
}

async fn show_server(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let r = find_server(s, &auth, &last(&p))?;
    Ok(Json(
        json!({"server": server_view(&app, s, &auth, &r, true)}),
    ))
}

/// What a server create asks for, checked before anything is made.
struct Request {
    name: String,
    flavor: Rec,
    image_id: String,
    networks: Vec<NetReq>,
    key_name: Option<String>,
    user_data: Option<String>,
    metadata: Map<String, Value>,
    access_v4: Option<String>,
    access_v6: Option<String>,
    disk_config: Option<String>,
    admin_pass: Option<String>,
    min_count: u64,
    max_count: u64,
    /// Security group ids for the ports it makes (empty: the default).
    security_groups: Vec<String>,
    /// A server group (id, policy) from the scheduler hints.
    group: Option<(String, String)>,
    config_drive: bool,
    /// The root disk is a volume (boot from volume), as the server record's
    /// `ursa:boot_volume` keeps it: {source_type, uuid, volume_size,
    /// delete_on_termination}.
    boot_volume: Option<Value>,
}

/// One entry of a server's `networks`: a new port on a network (with an
/// address asked for, or not), or an existing port.
enum NetReq {
    Network(String, Option<String>),
    Port(String),
}

fn parse_create(
    app: &AppState,
    s: &Compute,
    auth: &Auth,
    b: &Rec,
    hints: Option<&Value>,
) -> Result<Request> {
    let name = b
        .get("name")
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= 255)
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute name.".into()))?
        .to_string();
    let flavor_ref = b
        .get("flavorRef")
        .and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.as_u64().map(|n| n.to_string()))
        })
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute flavorRef.".into()))?;
    let flavor_id = flavor_ref.rsplit('/').next().unwrap_or("").to_string();
    let flavor = find_flavor(s, auth, &flavor_id)
        .map_err(|_| Error::BadRequest(format!("Flavor {flavor_id} could not be found.")))?;
    let image_ref = b.get("imageRef").and_then(|v| v.as_str()).unwrap_or("");
    let mut image_id = image_ref.rsplit('/').next().unwrap_or("").to_string();
    if image_id.is_empty() {
        // The image may come as the boot block device instead.
        if let Some(u) = b
            .get("block_device_mapping_v2")
            .and_then(|v| v.as_array())
            .and_then(|a| {
                a.iter().find(|m| {
                    m.get("source_type").and_then(|v| v.as_str()) == Some("image")
                        && m.get("destination_type")
                            .and_then(|v| v.as_str())
                            .unwrap_or("local")
                            == "local"
                })
            })
            .and_then(|m| m.get("uuid"))
            .and_then(|v| v.as_str())
        {
            image_id = u.to_string();
        }
    }
    let boot_volume = boot_volume(s, auth, b)?;
    if image_id.is_empty() && boot_volume.is_none() {
        return Err(Error::BadRequest(
            "Give an imageRef, or a block device mapping to boot from.".into(),
        ));
    }
    if let Some(bv) = &boot_volume {
        // The root disk is the volume: the image (if any) is its source.
        image_id = String::new();
        if bv["source_type"] == "image" {
            let img = bootable_image(app, auth, bv["uuid"].as_str().unwrap_or(""))?;
            let min_disk = img.get("min_disk").and_then(|v| v.as_u64()).unwrap_or(0);
            let bytes = img.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
            let need = bytes.div_ceil(1 << 30).max(min_disk).max(1);
            if bv["volume_size"].as_u64().unwrap_or(0) < need {
                return Err(Error::BadRequest(format!(
                    "Volume size must be at least {need} GiB for the image."
                )));
            }
        }
    } else {
        let img = bootable_image(app, auth, &image_id)?;
        let min_ram = img.get("min_ram").and_then(|v| v.as_u64()).unwrap_or(0);
        if flavor["ram"].as_u64().unwrap_or(0) < min_ram {
            return Err(Error::BadRequest(
                "Flavor's memory is too small for requested image.".into(),
            ));
        }
        let min_disk = img.get("min_disk").and_then(|v| v.as_u64()).unwrap_or(0);
        if flavor["disk"].as_u64().unwrap_or(0) < min_disk {
            return Err(Error::BadRequest(
                "Flavor's disk is too small for requested image.".into(),
            ));
        }
    }
    let networks = match b.get("networks") {
        None | Some(Value::String(_)) => {
            let auto = b.get("networks").and_then(|v| v.as_str());
            match auto {
                Some("none") => Vec::new(),
                _ => {
                    let nets = ursa_network::api::usable_networks(&s.networks, auth);
                    if nets.len() > 1 {
                        return Err(Error::Conflict("Multiple possible networks found, use a Network ID to be more specific.".into()));
                    }
                    nets.into_iter().map(|n| NetReq::Network(n, None)).collect()
                }
            }
        }
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for n in a {
                if let Some(port) = n.get("port").filter(|v| !v.is_null()) {
                    let port = port.as_str().ok_or_else(|| {
                        Error::BadRequest("Invalid input for field/attribute port.".into())
                    })?;
                    let m = s.identity.model();
                    let p = ursa_network::rec(&m, ursa_network::PORT, port)
                        .filter(|p| {
                            auth.0.is_admin() || auth.0.project_id() == Some(st(p, "project_id"))
                        })
                        .ok_or_else(|| {
                            Error::BadRequest(format!("Port {port} could not be found."))
                        })?;
                    if !st(&p, "device_id").is_empty() {
                        return Err(Error::Conflict(format!("Port {port} is still in use.")));
                    }
                    out.push(NetReq::Port(port.to_string()));
                    continue;
                }
                let id = n.get("uuid").and_then(|v| v.as_str()).ok_or_else(|| {
                    Error::BadRequest(
                        "Bad networks format: network uuid is not in proper format".into(),
                    )
                })?;
                ursa_network::api::check_network(&s.networks, auth, id)
                    .map_err(|_| Error::BadRequest(format!("Network {id} could not be found.")))?;
                let fixed_ip = match n.get("fixed_ip") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(ip)) if ip.parse::<std::net::IpAddr>().is_ok() => {
                        Some(ip.clone())
                    }
                    Some(_) => {
                        return Err(Error::BadRequest(
                            "Invalid input for field/attribute fixed_ip.".into(),
                        ))
                    }
                };
                out.push(NetReq::Network(id.to_string(), fixed_ip));
            }
            out
        }
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute networks.".into(),
            ))
        }
    };
    let key_name = b
        .get("key_name")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    if let Some(k) = &key_name {
        if s.doc(KEYPAIR, &keypair_id(&auth.0.user_id, k)).is_none() {
            return Err(Error::BadRequest(format!("Invalid key_name provided: {k}")));
        }
    }
    let user_data = match b.get("user_data") {
        Some(Value::String(u)) => {
            base64::engine::general_purpose::STANDARD
                .decode(u.trim())
                .map_err(|_| Error::BadRequest("User data needs to be valid base 64.".into()))?;
            if u.len() > 65535 {
                return Err(Error::BadRequest("User data too large.".into()));
            }
            Some(u.clone())
        }
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute user_data.".into(),
            ))
        }
    };
    let metadata = match b.get("metadata") {
        Some(Value::Object(m)) => {
            super::server_parts::check_metadata(m)?;
            m.clone()
        }
        None => Map::new(),
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute metadata.".into(),
            ))
        }
    };
    let access_v4 = access_ip(b, "accessIPv4")?;
    let access_v6 = access_ip(b, "accessIPv6")?;
    let disk_config = disk_config(b)?;
    let admin_pass = match b.get("adminPass") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute adminPass.".into(),
            ))
        }
    };
    let count = |k: &str| -> Result<Option<u64>> {
        match b.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|x| x.parse().ok()))
                .filter(|n| *n >= 1)
                .map(Some)
                .ok_or_else(|| {
                    Error::BadRequest(format!("Invalid input for field/attribute {k}."))
                }),
        }
    };
    let min_count = count("min_count")?.unwrap_or(1);
    let max_count = count("max_count")?.unwrap_or(min_count);
    if min_count > max_count {
        return Err(Error::BadRequest("min_count must be <= max_count".into()));
    }
    let mut security_groups = Vec::new();
    if let Some(g) = b.get("security_groups") {
        let list = g.as_array().ok_or_else(|| {
            Error::BadRequest("Invalid input for field/attribute security_groups.".into())
        })?;
        let m = s.identity.model();
        let project = auth.0.project_id().unwrap_or("");
        for x in list {
            let n = x.get("name").and_then(|v| v.as_str()).ok_or_else(|| {
                Error::BadRequest("Invalid input for field/attribute security_groups.".into())
            })?;
            let found = ursa_network::recs(&m, ursa_network::SG).find(|g| {
                (st(g, "name") == n && st(g, "project_id") == project) || st(g, "id") == n
            });
            match found {
                Some(g) => security_groups.push(st(g, "id").to_string()),
                // The default group is made on first use.
                None if n == "default" => {}
                None => {
                    return Err(Error::BadRequest(format!(
                        "Security group {n} not found for project {project}."
                    )))
                }
            }
        }
    }
    let group = super::server_parts::hinted_group(s, auth, hints)?;
    let config_drive = match b.get("config_drive") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(v)) => *v,
        Some(Value::String(v)) => match v.to_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            _ => {
                return Err(Error::BadRequest(
                    "Invalid input for field/attribute config_drive.".into(),
                ))
            }
        },
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute config_drive.".into(),
            ))
        }
    };
    if b.contains_key("block_device_mapping") {
        return Err(Error::BadRequest(
            "Legacy block device mappings are not supported: use block_device_mapping_v2.".into(),
        ));
    }
    Ok(Request {
        name,
        flavor,
        image_id,
        networks,
        key_name,
        user_data,
        metadata,
        access_v4,
        access_v6,
        disk_config,
        admin_pass,
        min_count,
        max_count,
        security_groups,
        group,
        config_drive,
        boot_volume,
    })
}

/// The root volume a server's block device mappings ask for, if any.
/// Ursa boots the image on a local disk (`source_type` image,
/// `destination_type` local: what `--image` sends), a new volume made from
/// an image (image → volume, `volume_size`), or an existing volume (volume →
/// volume); each as boot index 0. Blank, snapshot and swap disks, and more
/// than one mapping, are refused.
fn boot_volume(s: &Compute, auth: &Auth, b: &Map<String, Value>) -> Result<Option<Value>> {
    let Some(bdm) = b.get("block_device_mapping_v2") else {
        return Ok(None);
    };
    let bad = |what: &str| Error::BadRequest(format!("Invalid block device mapping: {what}."));
    let list = bdm.as_array().ok_or_else(|| {
        Error::BadRequest("Invalid input for field/attribute block_device_mapping_v2.".into())
    })?;
    if list.len() > 1 {
        return Err(bad(
            "Ursa boots one disk (the image, or a volume); attach more volumes once the server is up",
        ));
    }
    let Some(m) = list.first() else {
        return Ok(None);
    };
    let m = m
        .as_object()
        .ok_or_else(|| bad("each mapping is an object"))?;
    let text = |k: &str| m.get(k).and_then(|v| v.as_str());
    let src = text("source_type").unwrap_or("");
    let dst = text("destination_type").unwrap_or("local");
    let boot = m.get("boot_index").and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|x| x.parse().ok()))
    });
    if boot != Some(0) {
        return Err(bad("the mapping must be the boot device (boot_index 0)"));
    }
    let uuid = text("uuid").unwrap_or("").to_string();
    let delete = match m.get("delete_on_termination") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(v)) => *v,
        Some(Value::String(v)) => matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
        Some(_) => return Err(bad("delete_on_termination is a boolean")),
    };
    match (src, dst) {
        ("image", "local") => Ok(None),
        ("image", "volume") => {
            let size = m
                .get("volume_size")
                .and_then(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|x| x.parse().ok()))
                })
                .filter(|n| (1..=1 << 20).contains(n))
                .ok_or_else(|| bad("volume_size (GiB, at least 1) is needed to make a volume"))?;
            if s.volumes.is_none() {
                return Err(bad("there is no volume service here"));
            }
            Ok(Some(
                json!({"source_type": "image", "uuid": uuid, "volume_size": size,
                           "delete_on_termination": delete}),
            ))
        }
        ("volume", "volume") => {
            let vols = s
                .volumes
                .as_ref()
                .ok_or_else(|| bad("there is no volume service here"))?;
            let vol = vols
                .doc(ursa_volume::VOLUME, &uuid)
                .filter(|v| auth.0.is_admin() || auth.0.project_id() == Some(st(v, "project_id")))
                .ok_or_else(|| Error::BadRequest(format!("Volume {uuid} could not be found.")))?;
            if st(&vol, "status") != "available" {
                return Err(Error::BadRequest(format!(
                    "Volume {uuid} status must be available, but current status is: {}",
                    st(&vol, "status")
                )));
            }
            Ok(Some(
                json!({"source_type": "volume", "uuid": uuid, "volume_size": vol.get("size"),
                           "delete_on_termination": delete}),
            ))
        }
        _ => Err(bad(&format!(
            "{src} → {dst} is not supported (image → local, image → volume, volume → volume are)"
        ))),
    }
}

async fn create_server(
    State(app): State<AppState>,
    auth: Auth,
    req_id: RequestId,
    bytes: Bytes,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let project = project(&auth)?;
    let top: Value = parse_body(&bytes)?;
    let b = body_obj(&bytes, "server")?;
    let hints = top
        .get("os:scheduler_hints")
        .or_else(|| top.get("OS-SCH-HNT:scheduler_hints"))
        .or_else(|| b.get("os:scheduler_hints"));
    let req = parse_create(&app, s, &auth, &b, hints)?;
    if req.max_count > 1
        && req
            .boot_volume
            .as_ref()
            .is_some_and(|v| v["source_type"] == "volume")
    {
        return Err(Error::BadRequest(
            "One volume cannot boot more than one server (max_count is above 1).".into(),
        ));
    }
    let ram = req.flavor["ram"].as_u64().unwrap_or(0);
    let vcpus = req.flavor["vcpus"].as_u64().unwrap_or(0);
    // Quotas: instances, cores, RAM, for as many as must be made.
    let (instances, cores, mem) = usage(s, &project);
    let lim = super::admin::limits(s, &project);
    let under = |key: &str, want: i64| {
        let l = lim.get(key).and_then(|v| v.as_i64()).unwrap_or(-1);
        l < 0 || want <= l
    };
    let fits = |n: i64| {
        under("instances", instances + n)
            && under("cores", cores + n * vcpus as i64)
            && under("ram", mem + n * ram as i64)
    };
    if !fits(req.min_count as i64) {
        return Err(Error::Forbidden(
            "Quota exceeded for instances, cores or ram.".into(),
        ));
    }
    let count = (req.min_count..=req.max_count)
        .rev()
        .find(|n| fits(*n as i64))
        .unwrap_or(req.min_count);
    let reservation = format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let admin_pass = req.admin_pass.clone().unwrap_or_else(|| {
        use rand::distributions::{Alphanumeric, DistString};
        Alphanumeric.sample_string(&mut rand::thread_rng(), 12)
    });
    let mut first = None;
    for i in 1..=count {
        let name = if count > 1 {
            format!("{}-{i}", req.name)
        } else {
            req.name.clone()
        };
        let id = create_one(s, &auth, &req, &name, &project, &reservation, &req_id).await?;
        first.get_or_insert(id);
    }
    let id = first.unwrap_or_default();
    if b.get("return_reservation_id") == Some(&json!(true)) {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "reservation_id": reservation })),
        )
            .into_response());
    }
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(
            json!({"server": {"id": id, "links": server_links(&app, &id),
            "OS-DCF:diskConfig": req.disk_config.as_deref().unwrap_or("MANUAL"),
            "security_groups": [{"name": "default"}], "adminPass": admin_pass}}),
        ),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/compute/v2.1/servers/{id}", app.base_url)) {
        resp.headers_mut().insert("location", v);
    }
    Ok(resp)
}

/// Stores one server, makes its ports on the node the scheduler chose,
/// and starts its boot; returns its id.
async fn create_one(
    s: &Compute,
    auth: &Auth,
    req: &Request,
    name: &str,
    project: &str,
    reservation: &str,
    req_id: &RequestId,
) -> Result<String> {
    let ram = req.flavor["ram"].as_u64().unwrap_or(0);
    let vcpus = req.flavor["vcpus"].as_u64().unwrap_or(0);
    let node = s.schedule_in_group(ram, vcpus, req.group.as_ref())?;
    let id = uuid::Uuid::new_v4().to_string();
    let host_id = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(format!("{project}{node}").as_bytes());
        d.iter()
            .take(28)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let t = now();
    let mut rec = json!({
        "id": id, "name": name, "status": "BUILD", "tenant_id": project, "user_id": auth.0.user_id,
        "metadata": req.metadata, "hostId": host_id, "created": t, "updated": t,
        "key_name": req.key_name, "OS-EXT-STS:vm_state": "building", "OS-EXT-STS:task_state": "spawning",
        "OS-EXT-STS:power_state": 0, "ursa:node": node, "ursa:flavor_id": st(&req.flavor, "id"),
        "ursa:image_id": req.image_id, "ursa:boot_volume": req.boot_volume, "ursa:user_data": req.user_data,
        "accessIPv4": req.access_v4.clone().unwrap_or_default(),
        "accessIPv6": req.access_v6.clone().unwrap_or_default(),
        "OS-DCF:diskConfig": req.disk_config.as_deref().unwrap_or("MANUAL"),
        "reservation_id": reservation, "ursa:password": "",
        "config_drive": if req.config_drive { "True" } else { "" },
        "ursa:group": req.group.as_ref().map(|g| g.0.clone()),
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    super::actions::record_action(&mut rec, "create", req_id, auth);
    s.put(SERVER, rec.clone()).await?;
    // Ports first (netd makes the taps while the agent makes the disk).
    for net in &req.networks {
        let made = match net {
            NetReq::Network(net, ip) => {
                ursa_network::api::create_server_port(
                    &s.networks,
                    auth,
                    net,
                    ip.as_deref(),
                    &req.security_groups,
                    &id,
                    &node,
                )
                .await
            }
            NetReq::Port(p) => {
                ursa_network::api::bind_server_port(&s.networks, auth, p, &id, &node).await
            }
        };
        if let Err(e) = made {
            s.release(&id, &node).await;
            let id2 = id.clone();
            let _ = s
                .identity
                .change(move |_| Ok((vec![ursa_core::store::Op::delete(SERVER, &id2)], ())))
                .await;
            return Err(match e {
                Error::Conflict(m) => Error::BadRequest(format!("Could not allocate a port: {m}")),
                other => other,
            });
        }
    }
    s.spawn_boot(rec);
    Ok(id)
}

async fn update_server(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let id = last(&p);
    find_server(s, &auth, &id)?;
    let b = body_obj(&bytes, "server")?;
    let name = match b.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n.len() <= 255 => Some(n.clone()),
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute name.".into(),
            ))
        }
        None => None,
    };
    let ip4 = access_ip(&b, "accessIPv4")?;
    let ip6 = access_ip(&b, "accessIPv6")?;
    let dc = disk_config(&b)?;
    let r = s
        .update(&id, move |r| {
            if let Some(n) = name.clone() {
                r.insert("name".into(), json!(n));
            }
            if let Some(v) = ip4.clone() {
                r.insert("accessIPv4".into(), json!(v));
            }
            if let Some(v) = ip6.clone() {
                r.insert("accessIPv6".into(), json!(v));
            }
            if let Some(v) = dc.clone() {
                r.insert("OS-DCF:diskConfig".into(), json!(v));
            }
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("Instance {id} could not be found.")))?;
    Ok(Json(
        json!({"server": core_view(server_view(&app, s, &auth, &r, true))}),
    ))
}

/// At 2.1 an update or a rebuild answers with the core attributes only.
pub(super) fn core_view(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        const CORE: &[&str] = &[
            "OS-DCF:diskConfig",
            "accessIPv4",
            "accessIPv6",
            "addresses",
            "created",
            "fault",
            "flavor",
            "hostId",
            "id",
            "image",
            "links",
            "metadata",
            "name",
            "progress",
            "status",
            "tenant_id",
            "updated",
            "user_id",
        ];
        o.retain(|k, _| CORE.contains(&k.as_str()));
    }
    v
}

async fn delete_server(
    State(app): State<AppState>,
    auth: Auth,
    req_id: RequestId,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let id = last(&p);
    let r = find_server(s, &auth, &id)?;
    if r.get("locked") == Some(&json!(true)) && !auth.0.is_admin() {
        return Err(Error::Conflict(format!("Instance {id} is locked")));
    }
    let a2 = Auth(auth.0.clone());
    let r = s
        .update(&id, move |r| {
            r.insert("OS-EXT-STS:task_state".into(), json!("deleting"));
            super::actions::record_action(r, "delete", &req_id, &a2);
            Ok(())
        })
        .await?;
    if let Some(r) = r {
        s.spawn_delete(r);
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `accessIPv4` / `accessIPv6`: an address of that family, or empty.
pub(super) fn access_ip(b: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) if v.is_empty() => Ok(Some(String::new())),
        Some(Value::String(v)) => {
            let norm = match key {
                "accessIPv4" => v.parse::<std::net::Ipv4Addr>().ok().map(|a| a.to_string()),
                _ => v.parse::<std::net::Ipv6Addr>().ok().map(|a| a.to_string()),
            };
            if let Some(n) = norm {
                Ok(Some(n))
            } else {
                Err(Error::BadRequest(format!(
                    "Invalid input for field/attribute {key}. Value: {v}."
                )))
            }
        }
        Some(_) => Err(Error::BadRequest(format!(
            "Invalid input for field/attribute {key}."
        ))),
    }
}

/// `OS-DCF:diskConfig`: AUTO or MANUAL.
pub(super) fn disk_config(b: &Map<String, Value>) -> Result<Option<String>> {
    match b.get("OS-DCF:diskConfig") {
        None => Ok(None),
        Some(Value::String(v)) if v == "AUTO" || v == "MANUAL" => Ok(Some(v.clone())),
        Some(_) => Err(Error::BadRequest(
            "Invalid input for field/attribute OS-DCF:diskConfig.".into(),
        )),
    }
}

// ---------------------------------------------------------------------
// Limits and zones.

/// A project's servers, and the cores and RAM their flavors take.
pub(super) fn usage(s: &Compute, project: &str) -> (i64, i64, i64) {
    let flavors = s.docs(FLAVOR);
    s.docs(SERVER)
        .iter()
        .filter(|r| st(r, "tenant_id") == project)
        .fold((0, 0, 0), |(n, c, m), r| {
            let f = flavors
                .iter()
                .find(|f| st(f, "id") == st(r, "ursa:flavor_id"));
            let get = |k: &str| f.and_then(|f| f[k].as_i64()).unwrap_or(0);
            (n + 1, c + get("vcpus"), m + get("ram"))
        })
}

async fn limits(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let project = auth.0.project_id().unwrap_or("").to_string();
    let (instances, cores, ram) = usage(s, &project);
    let l = super::admin::limits(s, &project);
    Ok(Json(json!({"limits": {"rate": [], "absolute": {
        "maxServerMeta": l["metadata_items"], "maxPersonality": l["injected_files"],
        "maxPersonalitySize": l["injected_file_content_bytes"], "maxImageMeta": 128,
        "maxTotalKeypairs": l["key_pairs"], "maxSecurityGroupRules": 20, "maxSecurityGroups": 10,
        "maxServerGroups": l["server_groups"], "maxServerGroupMembers": l["server_group_members"],
        "maxTotalFloatingIps": 10,
        "maxTotalInstances": l["instances"], "maxTotalCores": l["cores"], "maxTotalRAMSize": l["ram"],
        "totalInstancesUsed": instances, "totalCoresUsed": cores, "totalRAMUsed": ram,
        "totalSecurityGroupsUsed": 0, "totalFloatingIpsUsed": 0, "totalServerGroupsUsed": 0}}})))
}

async fn zones(_auth: Auth) -> Json<Value> {
    Json(
        json!({"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": true}, "hosts": null}]}),
    )
}

async fn zones_detail(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    if !auth.0.is_admin() {
        return Err(Error::Forbidden(
            "Policy doesn't allow os_compute_api:os-availability-zone:detail to be performed."
                .into(),
        ));
    }
    let s = svc(&app)?;
    let hosts: Map<String, Value> = s
        .nodes
        .iter()
        .map(|n| {
            (
                n.agent.node().to_string(),
                json!({"nova-compute": {"available": true, "active": true, "updated_at": now()}}),
            )
        })
        .collect();
    Ok(Json(
        json!({"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": true}, "hosts": hosts}]}),
    ))
}

// ---------------------------------------------------------------------
// Volume attachments: blockd's vhost-user-blk export, hot-plugged.

/// The volumes attached to a server, as (volume id, device) pairs.
fn attached(s: &Compute, server: &str) -> Vec<(String, String)> {
    let Some(v) = &s.volumes else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = v
        .docs(ursa_volume::VOLUME)
        .iter()
        .filter_map(|vol| {
            vol.get("attachments")?
                .as_array()?
                .iter()
                .find(|a| a["server_id"] == server)
                .map(|a| {
                    (
                        st(vol, "id").to_string(),
                        a["device"].as_str().unwrap_or("").to_string(),
                    )
                })
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// Every attachment as (server id, volume id), in one pass over volumes.
fn all_attachments(s: &Compute) -> Vec<(String, String)> {
    let Some(v) = &s.volumes else {
        return Vec::new();
    };
    let m = v.identity.model();
    m.docs_of(ursa_volume::VOLUME)
        .filter_map(|vol| {
            let a = vol.get("attachments")?.as_array()?;
            let vid = vol.get("id")?.as_str()?.to_string();
            Some(
                a.iter()
                    .filter_map(|x| {
                        x["server_id"]
                            .as_str()
                            .map(|sid| (sid.to_string(), vid.clone()))
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect()
}

fn attachment_view(server: &str, vol: &str, dev: &str) -> Value {
    json!({"id": vol, "serverId": server, "volumeId": vol, "device": dev})
}

async fn list_attachments(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let id = param(&p, "id");
    find_server(s, &auth, &id)?;
    let v: Vec<Value> = attached(s, &id)
        .iter()
        .map(|(vol, dev)| attachment_view(&id, vol, dev))
        .collect();
    Ok(Json(json!({"volumeAttachments": v})))
}

/// The image `image_id` if the caller may boot it (admin, public,
/// community or its own) and it is active; 400 otherwise, as Nova says.
pub(super) fn bootable_image(app: &AppState, auth: &Auth, image_id: &str) -> Result<Rec> {
    let img = app
        .images
        .get(image_id)
        .filter(|i| {
            let vis = st(i, "visibility");
            auth.0.is_admin()
                || vis == "public"
                || vis == "community"
                || auth.0.project_id() == Some(st(i, "owner"))
        })
        .ok_or_else(|| Error::BadRequest(format!("Image {image_id} could not be found.")))?;
    if st(&img, "status") != "active" {
        return Err(Error::BadRequest(format!(
            "Image {image_id} is not active."
        )));
    }
    Ok(img)
}

async fn show_attachment(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let (id, vol) = (param(&p, "id"), param(&p, "volume_id"));
    find_server(s, &auth, &id)?;
    attached(s, &id)
        .into_iter()
        .find(|(v, _)| *v == vol)
        .map(|(v, dev)| Json(json!({"volumeAttachment": attachment_view(&id, &v, &dev)})))
        .ok_or_else(|| Error::NotFound(format!("volume_id not found: {vol}")))
}

async fn attach_volume(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let id = param(&p, "id");
    let srv = find_server(s, &auth, &id)?;
    let vols = s
        .volumes
        .as_ref()
        .ok_or_else(|| Error::Conflict("There is no volume service here.".into()))?;
    let b = body_obj(&bytes, "volumeAttachment")?;
    let vol_id = b
        .get("volumeId")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute volumeId.".into()))?
        .to_string();
    if !matches!(st(&srv, "status"), "ACTIVE" | "SHUTOFF") {
        return Err(Error::Conflict(format!(
            "Cannot 'attach_volume' instance {id} while it is in vm_state {}",
            st(&srv, "status")
        )));
    }
    let node = s
        .node(st(&srv, "ursa:node"))
        .cloned()
        .ok_or_else(|| Error::Conflict("The server has no compute node.".into()))?;
    // Claim the volume: only an available one of the caller's project.
    let project = project(&auth)?;
    let admin = auth.0.is_admin();
    let vid = vol_id.clone();
    let vol = vols
        .update(ursa_volume::VOLUME, &vol_id, move |r| {
            if !admin && st(r, "project_id") != project {
                return Err(Error::NotFound(format!("Volume {vid} could not be found.")));
            }
            if st(r, "status") != "available" {
                return Err(Error::BadRequest(format!(
                    "Invalid volume: volume {vid} status must be available, but current status is: {}",
                    st(r, "status")
                )));
            }
            r.insert("status".into(), json!("attaching"));
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("Volume {vol_id} could not be found.")))?;
    let used: Vec<String> = attached(s, &id).into_iter().map(|(_, d)| d).collect();
    let dev = (b'b'..=b'z')
        .map(|c| format!("/dev/vd{}", c as char))
        .find(|d| !used.contains(d))
        .unwrap_or_else(|| "/dev/vdz".into());
    let plugged = async {
        let conn = vols.export(&vol, true).await?;
        node.agent
            .attach_disk(&id, &vol_id, &conn.socket_path)
            .await
            .map_err(Error::Internal)
    }
    .await;
    let (sid, d2) = (id.clone(), dev.clone());
    let host = node.agent.node().to_string();
    let ok = plugged.is_ok();
    let r = vols
        .update(ursa_volume::VOLUME, &vol_id, move |r| {
            match ok {
                true => {
                    r.insert("status".into(), json!("in-use"));
                    r.insert(
                        "attachments".into(),
                        json!([super::attachment(&sid, st(r, "id"), &d2, &host)]),
                    );
                }
                false => {
                    r.insert("status".into(), json!("available"));
                }
            }
            Ok(())
        })
        .await;
    if let Err(e) = plugged {
        let _ = vols.unexport(&vol).await;
        return Err(e);
    }
    r?;
    Ok(Json(
        json!({"volumeAttachment": attachment_view(&id, &vol_id, &dev)}),
    ))
}

/// `PUT …/os-volume_attachments/{volume}` (swap volume): admins only;
/// the attachment must exist; swapping itself is not offered here.
async fn swap_volume(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Response> {
    admin_only(&auth, "os_compute_api:os-volumes-attachments:swap")?;
    let s = svc(&app)?;
    let (id, vol_id) = (param(&p, "id"), param(&p, "volume_id"));
    find_server(s, &auth, &id)?;
    body_obj(&bytes, "volumeAttachment")?;
    if !attached(s, &id).iter().any(|(v, _)| *v == vol_id) {
        return Err(Error::NotFound(format!("volume_id not found: {vol_id}")));
    }
    Err(Error::Conflict(
        "Swapping a server's volume for another is not supported.".into(),
    ))
}

async fn detach_volume(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    write_access(&auth)?;
    let s = svc(&app)?;
    let (id, vol_id) = (param(&p, "id"), param(&p, "volume_id"));
    let srv = find_server(s, &auth, &id)?;
    let vols = s
        .volumes
        .as_ref()
        .ok_or_else(|| Error::Conflict("There is no volume service here.".into()))?;
    let at = attached(s, &id);
    if !at.iter().any(|(v, _)| *v == vol_id) {
        return Err(Error::NotFound(format!("volume_id not found: {vol_id}")));
    }
    if at.iter().any(|(v, d)| *v == vol_id && d == "/dev/vda") && super::volume_backed(&srv) {
        return Err(Error::BadRequest(
            "Cannot detach a root device volume".into(),
        ));
    }
    let vol = vols
        .update(ursa_volume::VOLUME, &vol_id, |r| {
            r.insert("status".into(), json!("detaching"));
            Ok(())
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("volume_id not found: {vol_id}")))?;
    // As Nova does: 202 now; the guest lets go of the disk (a guest still
    // booting may take a while), then the volume is available again.
    let node = s.node(st(&srv, "ursa:node")).cloned();
    let vols = vols.clone();
    tokio::spawn(async move {
        if let Some(n) = node {
            if let Err(e) = n.agent.detach_disk(&id, &vol_id).await {
                tracing::warn!(server = %id, volume = %vol_id, error = %e, "detach failed");
                let _ = vols
                    .update(ursa_volume::VOLUME, &vol_id, |r| {
                        r.insert("status".into(), json!("in-use"));
                        Ok(())
                    })
                    .await;
                return;
            }
        }
        let _ = vols.unexport(&vol).await;
        let r = vols
            .update(ursa_volume::VOLUME, &vol_id, |r| {
                r.insert("status".into(), json!("available"));
                r.insert("attachments".into(), json!([]));
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(volume = %vol_id, error = %e, "recording a detach");
        }
    });
    Ok(empty(StatusCode::ACCEPTED))
}

// ---------------------------------------------------------------------
// Hypervisors, services and quotas (read-only views of what exists).

pub(super) fn admin_only(auth: &Auth, what: &str) -> Result<()> {
    if auth.0.is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "Policy doesn't allow {what} to be performed."
        )))
    }
}

/// One compute node as a hypervisor (ids are the node's position, from 1).
pub(super) fn hypervisor(s: &Compute, i: usize) -> Value {
    let n = &s.nodes[i];
    let servers: Vec<Rec> = s
        .docs(SERVER)
        .into_iter()
        .filter(|r| st(r, "ursa:node") == n.agent.node())
        .collect();
    let flavors = s.docs(FLAVOR);
    let (mut ram, mut cpu, mut disk) = (0u64, 0u64, 0u64);
    for r in &servers {
        if let Some(f) = flavors
            .iter()
            .find(|f| st(f, "id") == st(r, "ursa:flavor_id"))
        {
            ram += f["ram"].as_u64().unwrap_or(0);
            cpu += f["vcpus"].as_u64().unwrap_or(0);
            disk += f["disk"].as_u64().unwrap_or(0);
        }
    }
    let local_gb = 100u64;
    json!({"id": i + 1, "hypervisor_hostname": n.agent.node(), "state": "up", "status": "enabled",
           "hypervisor_type": "QEMU", "hypervisor_version": 7002000, "host_ip": "127.0.0.1",
           "cpu_info": "{}", "current_workload": 0, "running_vms": servers.len(),
           "vcpus": n.vcpus, "vcpus_used": cpu, "memory_mb": n.ram_mb, "memory_mb_used": ram,
           "free_ram_mb": n.ram_mb as i64 - ram as i64, "local_gb": local_gb, "local_gb_used": disk,
           "free_disk_gb": local_gb as i64 - disk as i64, "disk_available_least": local_gb as i64 - disk as i64,
           "service": {"host": n.agent.node(), "id": i + 1, "disabled_reason": null}})
}

async fn hypervisors(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-hypervisors:list")?;
    let s = svc(&app)?;
    let v: Vec<Value> = (0..s.nodes.len())
        .map(|i| {
            let h = hypervisor(s, i);
            json!({"id": h["id"], "hypervisor_hostname": h["hypervisor_hostname"], "state": "up", "status": "enabled"})
        })
        .collect();
    Ok(Json(json!({"hypervisors": v})))
}

async fn hypervisors_detail(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-hypervisors:list-detail")?;
    let s = svc(&app)?;
    Ok(Json(
        json!({"hypervisors": (0..s.nodes.len()).map(|i| hypervisor(s, i)).collect::<Vec<_>>()}),
    ))
}

async fn hypervisor_show(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-hypervisors:show")?;
    let s = svc(&app)?;
    let hid = param(&p, "hid");
    let i = hid
        .parse::<usize>()
        .ok()
        .filter(|i| *i >= 1 && *i <= s.nodes.len())
        .ok_or_else(|| Error::NotFound(format!("Hypervisor {hid} could not be found.")))?;
    Ok(Json(json!({"hypervisor": hypervisor(s, i - 1)})))
}

async fn hypervisor_stats(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-hypervisors:statistics")?;
    let s = svc(&app)?;
    let mut sum = json!({"count": s.nodes.len()});
    for i in 0..s.nodes.len() {
        let h = hypervisor(s, i);
        for k in [
            "current_workload",
            "disk_available_least",
            "free_disk_gb",
            "free_ram_mb",
            "local_gb",
            "local_gb_used",
            "memory_mb",
            "memory_mb_used",
            "running_vms",
            "vcpus",
            "vcpus_used",
        ] {
            let add = h[k].as_i64().unwrap_or(0) + sum.get(k).and_then(|v| v.as_i64()).unwrap_or(0);
            sum[k] = json!(add);
        }
    }
    Ok(Json(json!({"hypervisor_statistics": sum})))
}

async fn services(
    State(app): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-services:list")?;
    let s = svc(&app)?;
    let mut v = vec![
        json!({"id": 1, "binary": "nova-scheduler", "host": "ursa", "zone": "internal",
        "status": "enabled", "state": "up", "updated_at": now(), "disabled_reason": null}),
    ];
    for (i, n) in s.nodes.iter().enumerate() {
        v.push(
            json!({"id": i + 2, "binary": "nova-compute", "host": n.agent.node(), "zone": "nova",
            "status": "enabled", "state": "up", "updated_at": now(), "disabled_reason": null}),
        );
    }
    let q = query(&raw);
    v.retain(|x| {
        q.iter().all(|(k, val)| match k.as_str() {
            "host" | "binary" => x[k.as_str()] == val.as_str(),
            _ => true,
        })
    });
    Ok(Json(json!({"services": v})))
}
