//! services: Cinder's `os-services` (the scheduler and one
//! `cinder-volume` per blockd node; disable/enable with a reason, freeze,
//! thaw), `os-hosts` and the extension list. A disabled node takes no new
//! volumes; its state is the document `volume_service/<host>`.

use super::*;
use serde::Deserialize;

use crate::SERVICE;

/// The extensions Cinder lists that Ursa offers.
const EXTENSIONS: &[(&str, &str, &str)] = &[
    ("os-hosts", "Hosts", "Admin-only host administration."),
    ("os-services", "Services", "Services support."),
    (
        "os-availability-zone",
        "AvailabilityZones",
        "Describe Availability Zones.",
    ),
    ("os-quota-sets", "Quotas", "Quota management support."),
    (
        "os-quota-class-sets",
        "QuotaClasses",
        "Quota classes management support.",
    ),
    ("os-types-manage", "TypesManage", "Types manage support."),
    (
        "os-types-extra-specs",
        "TypesExtraSpecs",
        "Type extra specs support.",
    ),
    (
        "os-volume-actions",
        "VolumeActions",
        "Enable volume actions.",
    ),
    ("os-admin-actions", "AdminActions", "Enable admin actions."),
    (
        "os-extended-snapshot-attributes",
        "ExtendedSnapshotAttributes",
        "Extended attributes for snapshots.",
    ),
    (
        "os-vol-tenant-attr",
        "VolumeTenantAttribute",
        "Expose the internal project_id as an attribute of a volume.",
    ),
    (
        "os-vol-host-attr",
        "VolumeHostAttribute",
        "Expose host as an attribute of a volume.",
    ),
    (
        "os-vol-image-meta",
        "VolumeImageMetadata",
        "Show image metadata associated with the volume.",
    ),
    (
        "os-vol-mig-status-attr",
        "VolumeMigStatusAttribute",
        "Expose migration_status as an attribute of a volume.",
    ),
    (
        "os-volume-transfer",
        "VolumeTransfer",
        "Volume transfer management support.",
    ),
    (
        "os-volume-type-access",
        "VolumeTypeAccess",
        "Volume type access support.",
    ),
    (
        "encryption",
        "VolumeTypeEncryption",
        "Encryption support for volume types.",
    ),
    ("qos-specs", "Qos_specs_manage", "QoS specs support."),
    ("backups", "Backups", "Backups support."),
    (
        "scheduler-stats",
        "Scheduler_stats",
        "Scheduler stats support.",
    ),
    ("capabilities", "Capabilities", "Capabilities support."),
];

pub(super) async fn extensions(_auth: Auth) -> Json<Value> {
    let list: Vec<Value> = EXTENSIONS
        .iter()
        .map(|(alias, name, desc)| {
            json!({"alias": alias, "name": name, "description": desc,
                   "links": [], "updated": "2012-01-01T00:00:00+00:00"})
        })
        .collect();
    Json(json!({"extensions": list}))
}

/// One service as `os-services` lists it.
struct Service {
    binary: &'static str,
    host: String,
    up: bool,
    disabled_reason: Option<String>,
    disabled: bool,
    frozen: bool,
}

async fn all(s: &Volumes) -> Vec<Service> {
    let mut out = vec![Service {
        binary: "cinder-scheduler",
        host: "ursa".into(),
        up: true,
        disabled_reason: None,
        disabled: false,
        frozen: false,
    }];
    for n in &s.nodes {
        let up = n
            .client
            .clone()
            .get_pools(ursa_proto::blockd::v1::GetPoolsRequest {})
            .await
            .is_ok();
        let host = format!("{}@blockd", n.name);
        let doc = s.doc(SERVICE, &host).unwrap_or_default();
        out.push(Service {
            binary: "cinder-volume",
            up,
            disabled: doc.get("disabled") == Some(&json!(true)),
            disabled_reason: doc
                .get("disabled_reason")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            frozen: doc.get("frozen") == Some(&json!(true)),
            host,
        });
    }
    out
}

fn service_view(x: &Service, mv: Micro) -> Value {
    let mut v = json!({"binary": x.binary, "host": x.host, "zone": ZONE,
        "status": if x.disabled { "disabled" } else { "enabled" },
        "state": if x.up { "up" } else { "down" }, "updated_at": now(),
        "disabled_reason": x.disabled_reason});
    if mv.0 >= 7 {
        v["cluster"] = Value::Null;
    }
    if x.binary == "cinder-volume" {
        v["frozen"] = json!(x.frozen);
        v["replication_status"] = json!("disabled");
        v["active_backend_id"] = Value::Null;
    }
    v
}

pub(super) async fn services(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let out: Vec<Value> = all(s)
        .await
        .iter()
        .filter(|x| {
            q.get("host")
                .is_none_or(|h| x.host == *h || x.host.split('@').next() == Some(h.as_str()))
                && q.get("binary").is_none_or(|b| x.binary == b.as_str())
        })
        .map(|x| service_view(x, mv))
        .collect();
    Ok(Json(json!({"services": out})))
}

#[derive(Deserialize)]
struct ServiceArgs {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    binary: Option<String>,
    #[serde(default)]
    disabled_reason: Option<String>,
}

/// `PUT /os-services/{action}`: enable, disable, disable-log-reason,
/// freeze, thaw.
pub(super) async fn service_action(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let action = p.get("action").cloned().unwrap_or_default();
    let a: ServiceArgs = parse_body(&body)?;
    let host = a.host.filter(|h| !h.is_empty()).ok_or_else(|| {
        Error::BadRequest("Missing required element 'host' in request body.".into())
    })?;
    let known = all(s).await;
    let target = known
        .iter()
        .find(|x| {
            x.binary == "cinder-volume"
                && (x.host == host || x.host.split('@').next() == Some(host.as_str()))
        })
        .map(|x| x.host.clone());
    let change = |doc: &mut Map<String, Value>| match action.as_str() {
        "enable" => {
            doc.insert("disabled".into(), json!(false));
            doc.insert("disabled_reason".into(), Value::Null);
            Ok(())
        }
        "disable" => {
            doc.insert("disabled".into(), json!(true));
            Ok(())
        }
        "disable-log-reason" => match a.disabled_reason.as_deref().map(str::trim) {
            Some(r) if !r.is_empty() && r.len() <= 255 => {
                doc.insert("disabled".into(), json!(true));
                doc.insert("disabled_reason".into(), json!(r));
                Ok(())
            }
            _ => Err(Error::BadRequest(
                "Disabled reason contains invalid characters or is too long".into(),
            )),
        },
        "freeze" => {
            doc.insert("frozen".into(), json!(true));
            Ok(())
        }
        "thaw" => {
            doc.insert("frozen".into(), json!(false));
            Ok(())
        }
        other => Err(Error::NotFound(format!("Unknown action {other}."))),
    };
    let Some(target) = target else {
        // Cinder: an unknown host is a 400 for freeze/thaw, a 404 else.
        return Err(match action.as_str() {
            "freeze" | "thaw" | "disable-log-reason" => {
                Error::BadRequest(format!("Host {host} could not be found."))
            }
            _ => Error::NotFound(format!("Host {host} could not be found.")),
        });
    };
    if a.binary.as_deref().is_some_and(|b| b != "cinder-volume") {
        return Err(Error::BadRequest(format!(
            "Only cinder-volume services of {host} can be changed."
        )));
    }
    let mut doc = s.doc(SERVICE, &target).unwrap_or_default();
    change(&mut doc)?;
    doc.insert("id".into(), json!(target));
    s.put(SERVICE, doc).await?;
    let now = all(s).await;
    let x = now
        .iter()
        .find(|x| x.host == target)
        .ok_or_else(|| Error::NotFound(format!("Host {host} could not be found.")))?;
    let mut v = service_view(x, mv);
    v["disabled"] = json!(x.disabled);
    Ok(Json(v))
}

/// `GET /os-hosts`: every service's host.
pub(super) async fn hosts(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let out: Vec<Value> = all(s)
        .await
        .iter()
        .map(|x| {
            json!({"service-status": if x.up { "available" } else { "unavailable" },
                   "service": x.binary, "zone": ZONE,
                   "service-state": if x.disabled { "disabled" } else { "enabled" },
                   "host_name": x.host, "last-update": now()})
        })
        .collect();
    Ok(Json(json!({"hosts": out})))
}

/// `GET /os-hosts/{host}`: what a volume host holds (from its blockd
/// node: every volume and snapshot, and what they provision).
pub(super) async fn show_host(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Json<Value>> {
    let s = svc(&state)?;
    admin(&auth)?;
    let host = p.get("host").cloned().unwrap_or_default();
    let name = host.split('@').next().unwrap_or_default();
    let node = s
        .node(name)
        .filter(|_| s.takes_volumes(name))
        .ok_or_else(|| Error::NotFound(format!("Host {host} could not be found.")))?;
    let mut c = node.client.clone();
    let pools = c
        .get_pools(ursa_proto::blockd::v1::GetPoolsRequest {})
        .await
        .map_err(|e| Error::Internal(format!("blockd: {}", e.message())))?
        .into_inner()
        .pools;
    let vols = c
        .list_volumes(ursa_proto::blockd::v1::ListVolumesRequest::default())
        .await
        .map_err(|e| Error::Internal(format!("blockd: {}", e.message())))?
        .into_inner()
        .volumes;
    let gb: u64 = pools.iter().map(|p| p.provisioned_bytes).sum::<u64>() / GIB;
    Ok(Json(json!({"host": [{"resource": {
        "volume_count": vols.len().to_string(), "total_volume_gb": gb.to_string(),
        "total_snapshot_gb": "0", "project": "(total)", "host": host, "snapshot_count": "0"}}]})))
}
