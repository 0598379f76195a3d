//! The compute API's admin side beyond servers: quota sets and quota
//! classes (stored, and enforced on server and key pair creation), flavor
//! access and extra-spec items, hosts, aggregates, usage reports, the usage
//! audit log, hypervisor uptime/search/servers, and the extension list.

use super::api::{
    admin_only, body_obj, find_flavor, hypervisor, hypervisor_at, last, node_index, param, query,
    svc, Mv,
};
use super::{now, st, Compute, Rec, FLAVOR};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::{empty, parse_body, Auth};
use ursa_core::store::Op;

pub const QUOTA: &str = "compute_quota";
pub const AGGREGATE: &str = "aggregate";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/os-quota-sets/{project}",
            get(quota_set).put(update_quota).delete(delete_quota),
        )
        .route("/os-quota-sets/{project}/defaults", get(quota_defaults))
        .route("/os-quota-sets/{project}/detail", get(quota_detail))
        .route(
            "/os-quota-class-sets/{class}",
            get(quota_class).put(update_quota_class),
        )
        .route(
            "/flavors/{id}/os-extra_specs/{key}",
            get(spec_item).put(set_spec_item).delete(delete_spec_item),
        )
        .route("/flavors/{id}/os-flavor-access", get(flavor_access))
        .route("/flavors/{id}/action", post(flavor_action))
        .route("/os-hosts", get(hosts))
        .route("/os-hosts/{host}", get(host_show).put(host_update))
        .route("/os-hosts/{host}/{power}", get(host_power))
        .route(
            "/os-aggregates",
            get(list_aggregates).post(create_aggregate),
        )
        .route(
            "/os-aggregates/{aid}",
            get(show_aggregate)
                .put(update_aggregate)
                .delete(delete_aggregate),
        )
        .route("/os-aggregates/{aid}/action", post(aggregate_action))
        .route("/os-simple-tenant-usage", get(usage_all))
        .route("/os-simple-tenant-usage/{project}", get(usage_one))
        .route("/os-instance_usage_audit_log", get(audit_logs))
        .route("/os-instance_usage_audit_log/{before}", get(audit_log))
        .route("/os-hypervisors/{hid}/uptime", get(hypervisor_uptime))
        .route("/os-hypervisors/{pat}/search", get(hypervisor_search))
        .route("/os-hypervisors/{pat}/servers", get(hypervisor_servers))
        .route("/os-migrations", get(migrations))
        .route("/os-server-external-events", post(external_events))
        .route("/extensions", get(extensions))
        .route("/extensions/{alias}", get(extension))
}

// ---------------------------------------------------------------------
// Quotas.

/// Nova's quota resources and their defaults.
const DEFAULTS: &[(&str, i64)] = &[
    ("instances", super::QUOTA_INSTANCES),
    ("cores", super::QUOTA_CORES),
    ("ram", super::QUOTA_RAM),
    ("metadata_items", 128),
    ("key_pairs", super::QUOTA_KEYPAIRS),
    ("injected_files", 5),
    ("injected_file_content_bytes", 10240),
    ("injected_file_path_bytes", 255),
    ("server_groups", 10),
    ("server_group_members", 10),
    ("floating_ips", -1),
    ("fixed_ips", -1),
    ("security_groups", -1),
    ("security_group_rules", -1),
];

fn stored(s: &Compute, id: &str) -> Map<String, Value> {
    s.doc(QUOTA, id).unwrap_or_default()
}

/// The class defaults (`default`), as changed by admins.
fn class_limits(s: &Compute) -> Map<String, Value> {
    let over = stored(s, "class:default");
    DEFAULTS
        .iter()
        .map(|(k, d)| (k.to_string(), over.get(*k).cloned().unwrap_or(json!(d))))
        .collect()
}

/// A project's limits: its own, else the class defaults.
pub fn limits(s: &Compute, project: &str) -> Map<String, Value> {
    let mut m = class_limits(s);
    for (k, v) in stored(s, &format!("project:{project}")) {
        if m.contains_key(&k) {
            m.insert(k, v);
        }
    }
    // Keystone's unified limits, where an admin set them, decide (the
    // resource names Nova's unified-limits driver uses).
    let model = s.identity.model();
    for (key, resource) in [
        ("instances", "servers"),
        ("cores", "class:VCPU"),
        ("ram", "class:MEMORY_MB"),
    ] {
        if let Some(v) =
            ursa_identity::api::limits::effective_limit(&model, &["compute"], project, resource)
        {
            m.insert(key.into(), json!(v));
        }
    }
    m
}

/// One limit (-1: unlimited).
pub fn limit(s: &Compute, project: &str, key: &str) -> i64 {
    limits(s, project)
        .get(key)
        .and_then(|v| v.as_i64())
        .unwrap_or(-1)
}

fn with_id(mut m: Map<String, Value>, id: &str) -> Value {
    m.insert("id".into(), json!(id));
    Value::Object(m)
}

fn may_read_quota(auth: &Auth, project: &str) -> Result<()> {
    if auth.0.is_admin() || auth.0.project_id() == Some(project) {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "Policy doesn't allow os_compute_api:os-quota-sets:show to be performed.".into(),
        ))
    }
}

/// A quota set as version `mv` shows it: from 2.36 without the network
/// quotas (they are Neutron's), from 2.57 without the file-injection ones.
fn quota_at(mut m: Map<String, Value>, mv: Mv) -> Map<String, Value> {
    if mv.at(36) {
        for k in [
            "fixed_ips",
            "floating_ips",
            "security_group_rules",
            "security_groups",
            "networks",
        ] {
            m.remove(k);
        }
    }
    if mv.at(57) {
        for k in [
            "injected_files",
            "injected_file_content_bytes",
            "injected_file_path_bytes",
        ] {
            m.remove(k);
        }
    }
    m
}

async fn quota_set(
    State(app): State<AppState>,
    mv: Mv,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let project = param(&p, "project");
    may_read_quota(&auth, &project)?;
    let s = svc(&app)?;
    Ok(Json(
        json!({"quota_set": with_id(quota_at(limits(s, &project), mv), &project)}),
    ))
}

async fn quota_defaults(
    State(app): State<AppState>,
    mv: Mv,
    _auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    Ok(Json(
        json!({"quota_set": with_id(quota_at(class_limits(s), mv), &param(&p, "project"))}),
    ))
}

async fn quota_detail(
    State(app): State<AppState>,
    mv: Mv,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let project = param(&p, "project");
    may_read_quota(&auth, &project)?;
    let s = svc(&app)?;
    let (instances, cores, ram) = super::api::usage(s, &project).await?;
    // Key pairs are a user's, counted against the quota when one is
    // made; a project's detail counts none of them.
    let keypairs = 0;
    let mut out = Map::new();
    for (k, v) in quota_at(limits(s, &project), mv) {
        let used = match k.as_str() {
            "instances" => instances,
            "cores" => cores,
            "ram" => ram,
            "key_pairs" => keypairs,
            _ => 0,
        };
        out.insert(k, json!({"limit": v, "in_use": used, "reserved": 0}));
    }
    Ok(Json(json!({"quota_set": with_id(out, &project)})))
}

/// Checks a quota body: known keys, integers of -1 or more.
fn quota_body(bytes: &Bytes, key: &str) -> Result<Map<String, Value>> {
    let b = body_obj(bytes, key)?;
    let mut out = Map::new();
    for (k, v) in b {
        if k == "force" || k == "id" {
            continue;
        }
        if !DEFAULTS.iter().any(|(d, _)| *d == k) {
            return Err(Error::BadRequest(format!(
                "Invalid input for field/attribute {key}. Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
        let n = v
            .as_i64()
            .or_else(|| v.as_str().and_then(|x| x.parse().ok()))
            .filter(|n| *n >= -1)
            .ok_or_else(|| Error::BadRequest(format!("Invalid input for field/attribute {k}.")))?;
        out.insert(k, json!(n));
    }
    Ok(out)
}

async fn put_quota(s: &Compute, id: String, m: Map<String, Value>) -> Result<()> {
    s.identity
        .change(move |model| {
            let mut cur = model
                .doc(QUOTA, &id)
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default();
            cur.extend(m.clone());
            Ok((vec![Op::put(QUOTA, &id, "", &id, Value::Object(cur))], ()))
        })
        .await
}

async fn update_quota(
    State(app): State<AppState>,
    mv: Mv,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-quota-sets:update")?;
    let s = svc(&app)?;
    let project = param(&p, "project");
    let m = quota_body(&bytes, "quota_set")?;
    put_quota(s, format!("project:{project}"), m).await?;
    let mut out = quota_at(limits(s, &project), mv);
    out.remove("id");
    Ok(Json(json!({ "quota_set": out })))
}

async fn delete_quota(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    admin_only(&auth, "os_compute_api:os-quota-sets:delete")?;
    let s = svc(&app)?;
    let id = format!("project:{}", param(&p, "project"));
    s.identity
        .change(move |_| Ok((vec![Op::delete(QUOTA, &id)], ())))
        .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

async fn quota_class(
    State(app): State<AppState>,
    mv: Mv,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-quota-class-sets:show")?;
    let s = svc(&app)?;
    Ok(Json(
        json!({"quota_class_set": with_id(quota_at(class_limits(s), mv), &param(&p, "class"))}),
    ))
}

async fn update_quota_class(
    State(app): State<AppState>,
    mv: Mv,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-quota-class-sets:update")?;
    let s = svc(&app)?;
    let class = param(&p, "class");
    let m = quota_body(&bytes, "quota_class_set")?;
    // Only the default class means anything (as in Nova).
    if class == "default" {
        put_quota(s, "class:default".into(), m).await?;
    }
    Ok(Json(
        json!({"quota_class_set": quota_at(class_limits(s), mv)}),
    ))
}

// ---------------------------------------------------------------------
// Flavor extra-spec items and access.

fn specs_of(f: &Rec) -> Map<String, Value> {
    f.get("extra_specs")
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

async fn spec_item(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let (id, key) = (param(&p, "id"), param(&p, "key"));
    let f = find_flavor(s, &auth, &id)?;
    let v = specs_of(&f).get(&key).cloned().ok_or_else(|| {
        Error::NotFound(format!("Flavor {id} has no extra specs with key {key}."))
    })?;
    Ok(Json(json!({ key: v })))
}

async fn set_spec_item(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-flavor-extra-specs:update")?;
    let s = svc(&app)?;
    let (id, key) = (param(&p, "id"), param(&p, "key"));
    let mut f = find_flavor(s, &auth, &id)?;
    let b: Map<String, Value> = parse_body(&bytes)?;
    if b.len() != 1 {
        return Err(Error::BadRequest(
            "Request body contains too many items.".into(),
        ));
    }
    let v = b
        .get(&key)
        .ok_or_else(|| Error::BadRequest("Request body and URI mismatch".into()))?;
    let v = v
        .as_str()
        .ok_or_else(|| Error::BadRequest(format!("Invalid input for extra spec {key}.")))?;
    let mut specs = specs_of(&f);
    specs.insert(key.clone(), json!(v));
    f.insert("extra_specs".into(), Value::Object(specs));
    s.put(FLAVOR, f).await?;
    Ok(Json(json!({ key: v })))
}

async fn delete_spec_item(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    admin_only(&auth, "os_compute_api:os-flavor-extra-specs:delete")?;
    let s = svc(&app)?;
    let (id, key) = (param(&p, "id"), param(&p, "key"));
    let mut f = find_flavor(s, &auth, &id)?;
    let mut specs = specs_of(&f);
    if specs.remove(&key).is_none() {
        return Err(Error::NotFound(format!(
            "Flavor {id} has no extra specs with key {key}."
        )));
    }
    f.insert("extra_specs".into(), Value::Object(specs));
    s.put(FLAVOR, f).await?;
    Ok(empty(StatusCode::OK))
}

fn access_of(f: &Rec) -> Vec<String> {
    f.get("ursa:access")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn access_view(f: &Rec) -> Value {
    let id = st(f, "id");
    json!({"flavor_access": access_of(f).iter()
        .map(|t| json!({"flavor_id": id, "tenant_id": t})).collect::<Vec<_>>()})
}

async fn flavor_access(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-flavor-access")?;
    let s = svc(&app)?;
    let id = last(&p);
    let f = find_flavor(s, &auth, &id)?;
    if f["os-flavor-access:is_public"] == true {
        return Err(Error::NotFound(
            "Access list not available for public flavors.".into(),
        ));
    }
    Ok(Json(access_view(&f)))
}

async fn flavor_action(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let id = last(&p);
    let body: Map<String, Value> = parse_body(&bytes)?;
    let (action, args) = body
        .iter()
        .next()
        .ok_or_else(|| Error::BadRequest("An action is required.".into()))?;
    let add = match action.as_str() {
        "addTenantAccess" => true,
        "removeTenantAccess" => false,
        other => {
            return Err(Error::BadRequest(format!(
                "There is no such action: {other}"
            )))
        }
    };
    admin_only(&auth, "os_compute_api:os-flavor-access")?;
    let mut f = find_flavor(s, &auth, &id)?;
    let tenant = args
        .get("tenant")
        .and_then(|v| v.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute tenant.".into()))?;
    if f["os-flavor-access:is_public"] == true {
        return Err(Error::Conflict(
            "Can not add access to a public flavor.".into(),
        ));
    }
    let mut acc = access_of(&f);
    let has = acc.iter().any(|t| t == tenant);
    if add && has {
        return Err(Error::Conflict(format!(
            "Flavor access already exists for flavor {id} and project {tenant} combination."
        )));
    }
    if !add && !has {
        return Err(Error::NotFound(format!(
            "Flavor access not found for {id} / {tenant} combination."
        )));
    }
    if add {
        acc.push(tenant.to_string());
    } else {
        acc.retain(|t| t != tenant);
    }
    f.insert("ursa:access".into(), json!(acc));
    s.put(FLAVOR, f.clone()).await?;
    Ok(Json(access_view(&f)))
}

// ---------------------------------------------------------------------
// Hosts.

fn host_list(s: &Compute) -> Vec<Value> {
    let mut v = vec![json!({"host_name": "ursa", "service": "scheduler", "zone": "internal"})];
    for n in s.nodes.iter() {
        v.push(json!({"host_name": n.agent.node(), "service": "compute", "zone": "nova"}));
    }
    v
}

/// 2.43 retired `os-hosts` (its answers live in os-hypervisors and
/// os-services): 404 from then on, as Nova answers.
fn hosts_api(mv: Mv) -> Result<()> {
    if mv.at(43) {
        return Err(Error::NotFound("The resource could not be found.".into()));
    }
    Ok(())
}

async fn hosts(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    hosts_api(mv)?;
    admin_only(&auth, "os_compute_api:os-hosts:list")?;
    let s = svc(&app)?;
    let zone = query(&raw)
        .into_iter()
        .find(|(k, _)| k == "zone")
        .map(|(_, v)| v);
    let v: Vec<Value> = host_list(s)
        .into_iter()
        .filter(|h| {
            zone.as_deref()
                .is_none_or(|z| z.is_empty() || h["zone"] == z)
        })
        .collect();
    Ok(Json(json!({ "hosts": v })))
}

async fn host_show(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    hosts_api(mv)?;
    admin_only(&auth, "os_compute_api:os-hosts:show")?;
    let s = svc(&app)?;
    let host = last(&p);
    let i = s
        .nodes
        .iter()
        .position(|n| n.agent.node() == host)
        .ok_or_else(|| Error::NotFound(format!("Compute host {host} could not be found.")))?;
    let counts = super::api::node_counts(s).await?;
    let h = hypervisor(s, i, &counts);
    let res = |project: &str, cpu: &Value, mem: &Value, disk: &Value| json!({"resource": {"host": host, "project": project, "cpu": cpu, "memory_mb": mem, "disk_gb": disk}});
    Ok(Json(json!({"host": [
        res("(total)", &h["vcpus"], &h["memory_mb"], &h["local_gb"]),
        res("(used_now)", &h["vcpus_used"], &h["memory_mb_used"], &h["local_gb_used"]),
        res("(used_max)", &h["vcpus_used"], &h["memory_mb_used"], &h["local_gb_used"]),
    ]})))
}

fn known_host(s: &Compute, host: &str) -> Result<()> {
    if s.nodes.iter().any(|n| n.agent.node() == host) {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "Compute host {host} could not be found."
        )))
    }
}

/// `PUT /os-hosts/{host}`: enable or disable a host, or its maintenance
/// mode. Ursa keeps scheduling on it (its one flag is the service state).
async fn host_update(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    hosts_api(mv)?;
    admin_only(&auth, "os_compute_api:os-hosts:update")?;
    let s = svc(&app)?;
    let host = last(&p);
    let b: Map<String, Value> = parse_body(&bytes)?;
    let mut out = json!({ "host": host });
    let mut any = false;
    for k in ["status", "maintenance_mode"] {
        if let Some(v) = b.get(k) {
            let v = v.as_str().unwrap_or("");
            let word = match (k, v) {
                ("status", "enable") => "enabled",
                ("status", "disable") => "disabled",
                ("maintenance_mode", "enable") => "on_maintenance",
                ("maintenance_mode", "disable") => "off_maintenance",
                _ => {
                    return Err(Error::BadRequest(format!(
                        "Invalid input for field/attribute {k}."
                    )))
                }
            };
            out[k] = json!(word);
            any = true;
        }
    }
    if !any || b.keys().any(|k| k != "status" && k != "maintenance_mode") {
        return Err(Error::BadRequest(
            "'status' or 'maintenance_mode' needed for host update".into(),
        ));
    }
    known_host(s, &host)?;
    Ok(Json(out))
}

/// `GET /os-hosts/{host}/reboot|shutdown|startup`: host power management,
/// which Ursa's QEMU nodes do not offer (as libvirt's driver does not).
async fn host_power(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let power = param(&p, "power");
    if !matches!(power.as_str(), "reboot" | "shutdown" | "startup") {
        return Err(Error::NotFound(format!("No such host action: {power}")));
    }
    hosts_api(mv)?;
    admin_only(&auth, &format!("os_compute_api:os-hosts:{power}"))?;
    let s = svc(&app)?;
    known_host(s, &param(&p, "host"))?;
    Err(Error::NotImplemented(
        "Virt driver does not implement host power management.".into(),
    ))
}

// ---------------------------------------------------------------------
// Aggregates.

fn aggregate_view(a: &Rec) -> Value {
    let mut v = a.clone();
    v.retain(|k, _| !k.starts_with("ursa:") && k != "uuid");
    Value::Object(v)
}

/// At 2.1 a created aggregate is answered without hosts and metadata.
fn created_aggregate_view(a: &Rec) -> Value {
    let mut v = a.clone();
    v.retain(|k, _| !matches!(k.as_str(), "hosts" | "metadata" | "uuid"));
    Value::Object(v)
}

fn find_aggregate(s: &Compute, id: &str) -> Result<Rec> {
    s.doc(AGGREGATE, id)
        .ok_or_else(|| Error::NotFound(format!("Aggregate {id} could not be found.")))
}

fn aggregate_name(b: &Map<String, Value>, required: bool) -> Result<Option<String>> {
    match b.get("name") {
        None if !required => Ok(None),
        Some(Value::String(n)) if !n.trim().is_empty() && n.len() <= 255 => Ok(Some(n.clone())),
        _ => Err(Error::BadRequest(
            "Invalid input for field/attribute name.".into(),
        )),
    }
}

fn aggregate_zone(b: &Map<String, Value>) -> Result<Option<Value>> {
    match b.get("availability_zone") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(Value::Null)),
        Some(Value::String(z)) if !z.is_empty() && z.len() <= 255 => Ok(Some(json!(z))),
        _ => Err(Error::BadRequest(
            "Invalid input for field/attribute availability_zone.".into(),
        )),
    }
}

async fn list_aggregates(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-aggregates:index")?;
    let s = svc(&app)?;
    let mut v = s.docs(AGGREGATE);
    v.sort_by_key(|a| a["id"].as_i64().unwrap_or(0));
    Ok(Json(
        json!({"aggregates": v.iter().map(aggregate_view).collect::<Vec<_>>()}),
    ))
}

async fn create_aggregate(
    State(app): State<AppState>,
    auth: Auth,
    bytes: Bytes,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-aggregates:create")?;
    let s = svc(&app)?;
    let b = body_obj(&bytes, "aggregate")?;
    let name = aggregate_name(&b, true)?.unwrap_or_default();
    let zone = aggregate_zone(&b)?.unwrap_or(Value::Null);
    let name2 = name.clone();
    let a = s
        .identity
        .change(move |m| {
            let all: Vec<Rec> = m
                .docs_of(AGGREGATE)
                .filter_map(|v| v.as_object().cloned())
                .collect();
            if all.iter().any(|a| st(a, "name") == name2) {
                return Err(Error::Conflict(format!(
                    "Aggregate {name2} already exists."
                )));
            }
            let id = all
                .iter()
                .filter_map(|a| a["id"].as_i64())
                .max()
                .unwrap_or(0)
                + 1;
            let a: Rec = json!({"id": id, "name": name2, "availability_zone": zone, "hosts": [],
                "metadata": {}, "created_at": now(), "updated_at": null, "deleted_at": null,
                "deleted": false, "uuid": uuid::Uuid::new_v4().to_string()})
            .as_object()
            .cloned()
            .unwrap_or_default();
            let key = id.to_string();
            Ok((
                vec![Op::put(AGGREGATE, &key, "", &key, Value::Object(a.clone()))],
                a,
            ))
        })
        .await?;
    Ok(Json(json!({"aggregate": created_aggregate_view(&a)})))
}

async fn show_aggregate(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-aggregates:show")?;
    let a = find_aggregate(svc(&app)?, &last(&p))?;
    Ok(Json(json!({"aggregate": aggregate_view(&a)})))
}

async fn change_aggregate(
    s: &Compute,
    id: &str,
    mut f: impl FnMut(&mut Rec, &[Rec]) -> Result<()> + Send + 'static,
) -> Result<Rec> {
    let id = id.to_string();
    s.identity
        .change(move |m| {
            let all: Vec<Rec> = m
                .docs_of(AGGREGATE)
                .filter_map(|v| v.as_object().cloned())
                .collect();
            let mut a = all
                .iter()
                .find(|a| a["id"].as_i64().map(|n| n.to_string()).as_deref() == Some(id.as_str()))
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("Aggregate {id} could not be found.")))?;
            f(&mut a, &all)?;
            a.insert("updated_at".into(), json!(now()));
            Ok((
                vec![Op::put(AGGREGATE, &id, "", &id, Value::Object(a.clone()))],
                a,
            ))
        })
        .await
}

async fn update_aggregate(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-aggregates:update")?;
    let s = svc(&app)?;
    let b = body_obj(&bytes, "aggregate")?;
    let name = aggregate_name(&b, false)?;
    let zone = aggregate_zone(&b)?;
    if name.is_none() && zone.is_none() {
        return Err(Error::BadRequest(
            "Give a name or an availability_zone.".into(),
        ));
    }
    let a = change_aggregate(s, &last(&p), move |a, all| {
        if let Some(n) = name.clone() {
            if all.iter().any(|o| o["id"] != a["id"] && st(o, "name") == n) {
                return Err(Error::Conflict(format!("Aggregate {n} already exists.")));
            }
            a.insert("name".into(), json!(n));
        }
        if let Some(z) = zone.clone() {
            a.insert("availability_zone".into(), z);
        }
        Ok(())
    })
    .await?;
    Ok(Json(json!({"aggregate": aggregate_view(&a)})))
}

async fn delete_aggregate(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    admin_only(&auth, "os_compute_api:os-aggregates:delete")?;
    let s = svc(&app)?;
    let id = last(&p);
    let a = find_aggregate(s, &id)?;
    if a["hosts"].as_array().is_some_and(|h| !h.is_empty()) {
        return Err(Error::BadRequest(format!(
            "Cannot remove aggregate {id}: it still has hosts."
        )));
    }
    s.identity
        .change(move |_| Ok((vec![Op::delete(AGGREGATE, &id)], ())))
        .await?;
    Ok(empty(StatusCode::OK))
}

async fn aggregate_action(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let body: Map<String, Value> = parse_body(&bytes)?;
    let (action, args) = body
        .into_iter()
        .next()
        .ok_or_else(|| Error::BadRequest("An action is required.".into()))?;
    admin_only(&auth, &format!("os_compute_api:os-aggregates:{action}"))?;
    let nodes: Vec<String> = s.nodes.iter().map(|n| n.agent.node().to_string()).collect();
    let a = match action.as_str() {
        "add_host" | "remove_host" => {
            let host = args
                .get("host")
                .and_then(|v| v.as_str())
                .filter(|h| !h.is_empty())
                .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute host.".into()))?
                .to_string();
            if !nodes.contains(&host) {
                return Err(Error::NotFound(format!(
                    "Compute host {host} could not be found."
                )));
            }
            let add = action == "add_host";
            change_aggregate(s, &last(&p), move |a, _| {
                let mut hosts: Vec<Value> = a["hosts"].as_array().cloned().unwrap_or_default();
                let has = hosts.iter().any(|h| h == host.as_str());
                if add && has {
                    return Err(Error::Conflict(format!(
                        "Aggregate {} already has host {host}.",
                        a["id"]
                    )));
                }
                if !add && !has {
                    return Err(Error::NotFound(format!(
                        "Cannot remove host {host} in aggregate {}",
                        a["id"]
                    )));
                }
                if add {
                    hosts.push(json!(host));
                } else {
                    hosts.retain(|h| h != host.as_str());
                }
                a.insert("hosts".into(), Value::Array(hosts));
                Ok(())
            })
            .await?
        }
        "set_metadata" => {
            let meta = args
                .get("metadata")
                .and_then(|v| v.as_object())
                .cloned()
                .ok_or_else(|| {
                    Error::BadRequest("Invalid input for field/attribute metadata.".into())
                })?;
            change_aggregate(s, &last(&p), move |a, _| {
                let mut m = a["metadata"].as_object().cloned().unwrap_or_default();
                for (k, v) in meta.clone() {
                    match v {
                        Value::Null => {
                            m.remove(&k);
                        }
                        Value::String(_) => {
                            m.insert(k, v);
                        }
                        other => {
                            m.insert(k, json!(other.to_string()));
                        }
                    }
                }
                if let Some(z) = m.get("availability_zone").cloned() {
                    a.insert("availability_zone".into(), z);
                }
                a.insert("metadata".into(), Value::Object(m));
                Ok(())
            })
            .await?
        }
        other => {
            return Err(Error::BadRequest(format!(
                "There is no such action: {other}"
            )))
        }
    };
    Ok(Json(json!({"aggregate": aggregate_view(&a)})))
}

// ---------------------------------------------------------------------
// Usage reports.

fn parse_time(q: &[(String, String)], key: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let Some((_, v)) = q.iter().find(|(k, _)| k == key) else {
        return Ok(None);
    };
    let t = chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc())
        })
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S").map(|t| t.and_utc())
        })
        .map_err(|_| Error::BadRequest(format!("Invalid {key}: {v}")))?;
    Ok(Some(t))
}

/// The usage window a request names (default: the last day).
fn window(
    q: &[(String, String)],
) -> Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    let now_t = chrono::Utc::now();
    let start = parse_time(q, "start")?.unwrap_or(now_t - chrono::Duration::days(1));
    let end = parse_time(q, "end")?.unwrap_or(now_t);
    if start > end {
        return Err(Error::BadRequest(
            "Invalid start time: the start is after the end.".into(),
        ));
    }
    Ok((start, end))
}

/// Nova's `max_limit`: the longest page of server usages from 2.40.
const USAGE_PAGE: usize = 1000;

/// From 2.40 the server usages are paged (`limit`, default 1,000, and
/// `marker`, an instance id), oldest first: the page of `rows` asked for,
/// and whether it is full (a next page may follow). Before 2.40, all.
fn usage_page(
    mut rows: Vec<Map<String, Value>>,
    q: &[(String, String)],
    mv: Mv,
) -> Result<(Vec<Map<String, Value>>, bool)> {
    if !mv.at(40) {
        return Ok((rows, false));
    }
    rows.sort_by(|a, b| (st(a, "created"), st(a, "id")).cmp(&(st(b, "created"), st(b, "id"))));
    let limit = match q.iter().find(|(k, _)| k == "limit") {
        Some((_, v)) => v
            .parse::<usize>()
            .map_err(|_| Error::BadRequest("Invalid input for query parameters limit.".into()))?
            .min(USAGE_PAGE),
        None => USAGE_PAGE,
    };
    let from = match q.iter().find(|(k, _)| k == "marker") {
        Some((_, m)) => {
            rows.iter()
                .position(|r| st(r, "id") == m)
                .ok_or_else(|| Error::BadRequest(format!("marker [{m}] not found")))?
                + 1
        }
        None => 0,
    };
    let page: Vec<Map<String, Value>> = rows.into_iter().skip(from).take(limit).collect();
    let full = limit > 0 && page.len() == limit;
    Ok((page, full))
}

/// One project's usage over the servers given.
fn usage_of(
    flavors: &[Map<String, Value>],
    project: &str,
    rows: &[&Map<String, Value>],
    window: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    detailed: bool,
) -> Value {
    let (start, end) = window;
    let now_t = chrono::Utc::now();
    let mut servers = Vec::new();
    let (mut hours, mut mem, mut cpu, mut disk) = (0f64, 0f64, 0f64, 0f64);
    for r in rows {
        let created = chrono::DateTime::parse_from_rfc3339(st(r, "created"))
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or(now_t);
        let from = created.max(start);
        let h = ((end - from).num_seconds().max(0) as f64) / 3600.0;
        let f = flavors
            .iter()
            .find(|f| st(f, "id") == st(r, "ursa:flavor_id"));
        let get = |k: &str| f.and_then(|f| f[k].as_f64()).unwrap_or(0.0);
        let int = |k: &str| f.and_then(|f| f[k].as_i64()).unwrap_or(0);
        hours += h;
        mem += h * get("ram");
        cpu += h * get("vcpus");
        disk += h * get("disk");
        servers.push(
            json!({"instance_id": r["id"], "name": r["name"], "hours": h,
            "memory_mb": int("ram"), "local_gb": int("disk"), "vcpus": int("vcpus"),
            "tenant_id": project, "flavor": f.map(|f| f["name"].clone()).unwrap_or(Value::Null),
            "started_at": r["created"], "ended_at": null, "state": st(r, "status").to_lowercase(),
            "uptime": (h * 3600.0) as i64}),
        );
    }
    let mut v = json!({"tenant_id": project, "start": start.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        "stop": end.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(), "total_hours": hours,
        "total_memory_mb_usage": mem, "total_vcpus_usage": cpu, "total_local_gb_usage": disk});
    if detailed {
        v["server_usages"] = json!(servers);
    }
    v
}

/// The `next` link of a full page: the same query with the last
/// instance as the marker.
fn usage_next(
    app: &AppState,
    path: &str,
    q: &[(String, String)],
    last: Option<&Map<String, Value>>,
) -> Value {
    let Some(last) = last else { return json!([]) };
    let mut pairs: Vec<(String, String)> =
        q.iter().filter(|(k, _)| k != "marker").cloned().collect();
    pairs.push(("marker".into(), st(last, "id").to_string()));
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    json!([{"rel": "next", "href": format!("{}/compute/v2.1/{path}?{query}", app.base_url)}])
}

async fn usage_all(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-simple-tenant-usage:list")?;
    let s = svc(&app)?;
    let q = query(&raw);
    let win = window(&q)?;
    let detailed = q.iter().any(|(k, v)| k == "detailed" && v == "1");
    let projects = crate::server_table::projects(&mut *s.conn().await?).await?;
    let mut rows = Vec::new();
    for p in &projects {
        rows.extend(
            s.servers(&crate::server_table::Filter {
                project: Some(p.clone()),
                ..Default::default()
            })
            .await?,
        );
    }
    let (page, full) = usage_page(rows, &q, mv)?;
    let flavors = s.docs(FLAVOR);
    let mut out = Vec::new();
    for p in &projects {
        let mine: Vec<&Map<String, Value>> =
            page.iter().filter(|r| st(r, "tenant_id") == p).collect();
        if !mine.is_empty() || !mv.at(40) {
            out.push(usage_of(&flavors, p, &mine, win, detailed));
        }
    }
    let mut body = json!({ "tenant_usages": out });
    if full {
        body["tenant_usages_links"] = usage_next(&app, "os-simple-tenant-usage", &q, page.last());
    }
    Ok(Json(body))
}

async fn usage_one(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let project = last(&p);
    if !auth.0.is_admin() && auth.0.project_id() != Some(project.as_str()) {
        return Err(Error::Forbidden(
            "Policy doesn't allow os_compute_api:os-simple-tenant-usage:show to be performed."
                .into(),
        ));
    }
    let s = svc(&app)?;
    let q = query(&raw);
    let win = window(&q)?;
    let rows = s
        .servers(&crate::server_table::Filter {
            project: Some(project.clone()),
            ..Default::default()
        })
        .await?;
    let (page, full) = usage_page(rows, &q, mv)?;
    let flavors = s.docs(FLAVOR);
    let refs: Vec<&Map<String, Value>> = page.iter().collect();
    let mut body = json!({"tenant_usage": usage_of(&flavors, &project, &refs, win, true)});
    if full {
        body["tenant_usage_links"] = usage_next(
            &app,
            &format!("os-simple-tenant-usage/{project}"),
            &q,
            page.last(),
        );
    }
    Ok(Json(body))
}

fn audit_doc(s: &Compute, total: i64, before: chrono::DateTime<chrono::Utc>) -> Value {
    let begin = before - chrono::Duration::days(30);
    let n = s.nodes.len();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    json!({"hosts_not_run": [], "log": {}, "num_hosts": n, "num_hosts_done": n,
           "num_hosts_not_run": 0, "num_hosts_running": 0,
           "overall_status": format!("ALL hosts done. 0 errors."),
           "period_beginning": fmt(begin), "period_ending": fmt(before), "total_errors": 0,
           "total_instances": total})
}

async fn audit_logs(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-instance-usage-audit-log:list")?;
    let s = svc(&app)?;
    Ok(Json(
        json!({"instance_usage_audit_logs": audit_doc(s, crate::server_table::count(&mut *s.conn().await?).await?, chrono::Utc::now())}),
    ))
}

async fn audit_log(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-instance-usage-audit-log:show")?;
    let s = svc(&app)?;
    let before = last(&p);
    let t = parse_time(&[("t".to_string(), before.clone())], "t")
        .ok()
        .flatten()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(&before, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|t| t.and_utc())
        })
        .ok_or_else(|| Error::BadRequest(format!("Invalid timestamp for date {before}")))?;
    Ok(Json(
        json!({"instance_usage_audit_log": audit_doc(s, crate::server_table::count(&mut *s.conn().await?).await?, t)}),
    ))
}

// ---------------------------------------------------------------------
// Hypervisors: uptime, search, servers.

async fn hypervisor_uptime(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-hypervisors:uptime")?;
    // 2.88 folded the uptime into the hypervisor's show.
    if mv.at(88) {
        return Err(Error::NotFound("The resource could not be found.".into()));
    }
    let s = svc(&app)?;
    let i = node_index(s, &last(&p), mv)? + 1;
    let up = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| {
            u.split_whitespace()
                .next()
                .and_then(|x| x.parse::<f64>().ok())
        })
        .unwrap_or(0.0) as u64;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let l: Vec<&str> = load.split_whitespace().take(3).collect();
    let uptime = format!(
        " {} up {} days, {:02}:{:02},  1 user,  load average: {}",
        chrono::Utc::now().format("%H:%M:%S"),
        up / 86400,
        up % 86400 / 3600,
        up % 3600 / 60,
        l.join(", ")
    );
    let counts = super::api::node_counts(s).await?;
    let h = hypervisor_at(s, i - 1, &counts, mv);
    Ok(Json(
        json!({"hypervisor": {"id": h["id"], "hypervisor_hostname": h["hypervisor_hostname"],
        "state": h["state"], "status": h["status"], "uptime": uptime}}),
    ))
}

fn matching(s: &Compute, pat: &str) -> Vec<usize> {
    (0..s.nodes.len())
        .filter(|i| s.nodes[*i].agent.node().contains(pat))
        .collect()
}

async fn hypervisor_search(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-hypervisors:search")?;
    let s = svc(&app)?;
    let pat = last(&p);
    let found = matching(s, &pat);
    if found.is_empty() {
        return Err(Error::NotFound(format!(
            "No hypervisor matching '{pat}' could be found."
        )));
    }
    let counts = super::api::node_counts(s).await?;
    Ok(Json(json!({"hypervisors": found.iter().map(|i| {
        let h = hypervisor(s, *i, &counts);
        json!({"id": h["id"], "hypervisor_hostname": h["hypervisor_hostname"], "state": h["state"], "status": h["status"]})
    }).collect::<Vec<_>>()})))
}

async fn hypervisor_servers(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-hypervisors:servers")?;
    let s = svc(&app)?;
    let pat = last(&p);
    let found = matching(s, &pat);
    if found.is_empty() {
        return Err(Error::NotFound(format!(
            "No hypervisor matching '{pat}' could be found."
        )));
    }
    let counts = super::api::node_counts(s).await?;
    let mut servers = Vec::new();
    for i in &found {
        servers.extend(
            s.servers(&crate::server_table::Filter {
                node: Some(s.nodes[*i].agent.node().to_string()),
                ..Default::default()
            })
            .await?,
        );
    }
    Ok(Json(json!({"hypervisors": found.iter().map(|i| {
        let h = hypervisor(s, *i, &counts);
        let node = s.nodes[*i].agent.node();
        let on: Vec<Value> = servers.iter().filter(|r| st(r, "ursa:node") == node)
            .map(|r| json!({"uuid": r["id"], "name": format!("instance-{}", &st(r, "id")[..8.min(st(r, "id").len())])}))
            .collect();
        let mut v = json!({"id": h["id"], "hypervisor_hostname": h["hypervisor_hostname"], "state": h["state"], "status": h["status"]});
        if !on.is_empty() { v["servers"] = json!(on); }
        v
    }).collect::<Vec<_>>()})))
}

// ---------------------------------------------------------------------
// Migrations (none: Ursa does not move guests) and external events.

async fn migrations(auth: Auth) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-migrations:index")?;
    Ok(Json(json!({"migrations": []})))
}

/// Events other services send about servers (Neutron's network-vif-plugged
/// and the like): each is acknowledged for a server that exists. Ursa's
/// own boot path does not wait for them.
async fn external_events(
    State(app): State<AppState>,
    auth: Auth,
    bytes: Bytes,
) -> Result<Json<Value>> {
    if !auth.0.is_admin() && !auth.0.has("service") {
        return Err(Error::Forbidden(
            "Policy doesn't allow os_compute_api:os-server-external-events:create to be performed."
                .into(),
        ));
    }
    let s = svc(&app)?;
    let b: Map<String, Value> = parse_body(&bytes)?;
    let events = b
        .get("events")
        .and_then(|v| v.as_array())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute events.".into()))?;
    let mut out = Vec::new();
    for e in events {
        let server = e.get("server_uuid").and_then(|v| v.as_str()).unwrap_or("");
        let name = e
            .get("name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::BadRequest("Invalid input for field/attribute name.".into()))?;
        let found = s.server(server).await?.is_some();
        let mut v = e.clone();
        v["name"] = json!(name);
        v["status"] = json!(if found { "completed" } else { "failed" });
        v["code"] = json!(if found { 200 } else { 404 });
        out.push(v);
    }
    if out.iter().all(|e| e["code"] == 404) {
        return Err(Error::NotFound("No instances found for any event".into()));
    }
    Ok(Json(json!({ "events": out })))
}

// ---------------------------------------------------------------------
// Extensions (the v2.1 API lists what it has; all of it is core).

const EXTENSIONS: &[(&str, &str)] = &[
    ("os-availability-zone", "AvailabilityZone"),
    ("os-flavor-access", "FlavorAccess"),
    ("os-flavor-extra-specs", "FlavorExtraSpecs"),
    ("os-flavor-manage", "FlavorManage"),
    ("os-hypervisors", "Hypervisors"),
    ("os-keypairs", "Keypairs"),
    ("os-quota-sets", "Quotas"),
    ("os-server-groups", "ServerGroups"),
    ("os-services", "Services"),
    ("os-volumes", "Volumes"),
    ("os-aggregates", "Aggregates"),
    ("os-hosts", "Hosts"),
    ("os-simple-tenant-usage", "SimpleTenantUsage"),
    ("os-instance-actions", "InstanceActions"),
    ("os-lock-server", "LockServer"),
    ("os-pause-server", "PauseServer"),
    ("os-suspend-server", "SuspendServer"),
    ("os-shelve", "Shelve"),
    ("os-security-groups", "SecurityGroups"),
    ("os-floating-ips", "FloatingIps"),
    ("os-consoles", "Consoles"),
    ("os-console-output", "ConsoleOutput"),
    ("os-interface", "AttachInterfaces"),
    ("os-server-password", "ServerPassword"),
    ("os-instance-usage-audit-log", "OSInstanceUsageAuditLog"),
];

fn extension_doc(alias: &str, name: &str) -> Value {
    json!({"alias": alias, "name": name, "namespace": format!("http://docs.openstack.org/compute/ext/{alias}/api/v1.1"),
           "description": name, "links": [], "updated": "2014-12-03T00:00:00Z"})
}

async fn extensions(_auth: Auth, mv: Mv, RawQuery(raw): RawQuery) -> Result<Json<Value>> {
    super::api::strict_query(mv, &raw)?;
    Ok(Json(
        json!({"extensions": EXTENSIONS.iter().map(|(a, n)| extension_doc(a, n)).collect::<Vec<_>>()}),
    ))
}

async fn extension(
    _auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    super::api::strict_query(mv, &raw)?;
    let alias = last(&p);
    let (a, n) = EXTENSIONS
        .iter()
        .find(|(a, _)| *a == alias)
        .ok_or_else(|| Error::NotFound(format!("Extension {alias} could not be found.")))?;
    Ok(Json(json!({"extension": extension_doc(a, n)})).into_response())
}
