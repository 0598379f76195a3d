//! Hypervisors, services and quotas (read-only views of what exists).

use super::*;

pub(crate) fn admin_only(auth: &Auth, what: &str) -> Result<()> {
    if auth.0.is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "Policy doesn't allow {what} to be performed."
        )))
    }
}

/// How many servers of each flavor each node has (for [`hypervisor`]).
pub(crate) async fn node_counts(s: &Compute) -> Result<Vec<(String, String, i64)>> {
    crate::server_table::node_flavor_counts(&mut *s.conn().await?, true).await
}

/// A stable UUID for a compute node's hypervisor or service (2.53 shows
/// these instead of numbers), derived from the node's name.
pub(crate) fn node_uuid(kind: &str, node: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("ursa:{kind}:{node}").as_bytes(),
    )
    .to_string()
}

/// The node a hypervisor id names: its position from 1, or from 2.53 its
/// UUID.
pub(crate) fn node_index(s: &Compute, hid: &str, mv: Mv) -> Result<usize> {
    let found = if mv.at(53) {
        s.nodes
            .iter()
            .position(|n| node_uuid("hypervisor", n.agent.node()) == hid)
    } else {
        hid.parse::<usize>()
            .ok()
            .filter(|i| *i >= 1 && *i <= s.nodes.len())
            .map(|i| i - 1)
    };
    found.ok_or_else(|| {
        if mv.at(53) && uuid::Uuid::parse_str(hid).is_err() {
            Error::BadRequest(format!("Invalid uuid {hid}"))
        } else {
            Error::NotFound(format!("Hypervisor {hid} could not be found."))
        }
    })
}

/// One compute node as a hypervisor at version `mv` (ids are the node's
/// position from 1, UUIDs from 2.53; 2.28 shows `cpu_info` as an object;
/// 2.88 drops the resource counts, which belong to placement);
/// `counts` from [`node_counts`].
pub(crate) fn hypervisor_at(
    s: &Compute,
    i: usize,
    counts: &[(String, String, i64)],
    mv: Mv,
) -> Value {
    let mut h = hypervisor(s, i, counts);
    let node = s.nodes[i].agent.node();
    if mv.at(28) {
        h["cpu_info"] = json!({});
    }
    if mv.at(53) {
        h["id"] = json!(node_uuid("hypervisor", node));
        h["service"]["id"] = json!(node_uuid("service", node));
    }
    if mv.at(88) {
        if let Some(o) = h.as_object_mut() {
            for k in [
                "vcpus",
                "vcpus_used",
                "memory_mb",
                "memory_mb_used",
                "free_ram_mb",
                "local_gb",
                "local_gb_used",
                "free_disk_gb",
                "disk_available_least",
                "current_workload",
                "running_vms",
                "cpu_info",
            ] {
                o.remove(k);
            }
        }
    }
    h
}

/// One compute node as a hypervisor at 2.1 (ids are the node's position,
/// from 1); `counts` from [`node_counts`].
pub(crate) fn hypervisor(s: &Compute, i: usize, counts: &[(String, String, i64)]) -> Value {
    let n = &s.nodes[i];
    let flavors = s.docs(FLAVOR);
    let (mut ram, mut cpu, mut disk, mut vms) = (0u64, 0u64, 0u64, 0i64);
    for (_, fid, k) in counts.iter().filter(|(node, _, _)| node == n.agent.node()) {
        vms += k;
        if let Some(f) = flavors.iter().find(|f| st(f, "id") == fid) {
            let k = *k as u64;
            ram += k * f["ram"].as_u64().unwrap_or(0);
            cpu += k * f["vcpus"].as_u64().unwrap_or(0);
            disk += k * f["disk"].as_u64().unwrap_or(0);
        }
    }
    let local_gb = 100u64;
    json!({"id": i + 1, "hypervisor_hostname": n.agent.node(), "state": "up", "status": "enabled",
           "hypervisor_type": "QEMU", "hypervisor_version": 7002000, "host_ip": "127.0.0.1",
           "cpu_info": "{}", "current_workload": 0, "running_vms": vms,
           "vcpus": n.vcpus, "vcpus_used": cpu, "memory_mb": n.ram_mb, "memory_mb_used": ram,
           "free_ram_mb": n.ram_mb as i64 - ram as i64, "local_gb": local_gb, "local_gb_used": disk,
           "free_disk_gb": local_gb as i64 - disk as i64, "disk_available_least": local_gb as i64 - disk as i64,
           "service": {"host": n.agent.node(), "id": i + 1, "disabled_reason": null}})
}

pub(super) async fn hypervisors(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-hypervisors:list")?;
    let s = svc(&app)?;
    let counts = node_counts(s).await?;
    let v: Vec<Value> = (0..s.nodes.len())
        .map(|i| {
            let h = hypervisor_at(s, i, &counts, mv);
            json!({"id": h["id"], "hypervisor_hostname": h["hypervisor_hostname"], "state": "up", "status": "enabled"})
        })
        .collect();
    Ok(Json(json!({"hypervisors": v})))
}

pub(super) async fn hypervisors_detail(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-hypervisors:list-detail")?;
    let s = svc(&app)?;
    let counts = node_counts(s).await?;
    Ok(Json(
        json!({"hypervisors": (0..s.nodes.len()).map(|i| hypervisor_at(s, i, &counts, mv)).collect::<Vec<_>>()}),
    ))
}

pub(super) async fn hypervisor_show(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-hypervisors:show")?;
    let s = svc(&app)?;
    let i = node_index(s, &param(&p, "hid"), mv)?;
    let counts = node_counts(s).await?;
    let mut h = hypervisor_at(s, i, &counts, mv);
    // 2.88 moved the uptime here from …/uptime.
    if mv.at(88) {
        h["uptime"] = Value::Null;
    }
    Ok(Json(json!({ "hypervisor": h })))
}

pub(super) async fn hypervisor_stats(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
) -> Result<Json<Value>> {
    // Gone from 2.88 (placement answers it).
    if mv.at(88) {
        return Err(Error::NotFound("The resource could not be found.".into()));
    }
    admin_only(&auth, "os_compute_api:os-hypervisors:statistics")?;
    let s = svc(&app)?;
    let counts = node_counts(s).await?;
    let mut sum = json!({"count": s.nodes.len()});
    for i in 0..s.nodes.len() {
        let h = hypervisor(s, i, &counts);
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

pub(super) async fn services(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
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
    for x in &mut v {
        // 2.11: forced_down; 2.53: UUIDs for ids.
        if mv.at(11) {
            x["forced_down"] = json!(false);
        }
        if mv.at(53) {
            let host = x["host"].as_str().unwrap_or("").to_string();
            x["id"] = json!(node_uuid("service", &host));
        }
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
