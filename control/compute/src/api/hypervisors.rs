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

/// One compute node as a hypervisor (ids are the node's position, from 1);
/// `counts` from [`node_counts`].
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

pub(super) async fn hypervisors(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-hypervisors:list")?;
    let s = svc(&app)?;
    let counts = node_counts(s).await?;
    let v: Vec<Value> = (0..s.nodes.len())
        .map(|i| {
            let h = hypervisor(s, i, &counts);
            json!({"id": h["id"], "hypervisor_hostname": h["hypervisor_hostname"], "state": "up", "status": "enabled"})
        })
        .collect();
    Ok(Json(json!({"hypervisors": v})))
}

pub(super) async fn hypervisors_detail(
    State(app): State<AppState>,
    auth: Auth,
) -> Result<Json<Value>> {
    admin_only(&auth, "os_compute_api:os-hypervisors:list-detail")?;
    let s = svc(&app)?;
    let counts = node_counts(s).await?;
    Ok(Json(
        json!({"hypervisors": (0..s.nodes.len()).map(|i| hypervisor(s, i, &counts)).collect::<Vec<_>>()}),
    ))
}

pub(super) async fn hypervisor_show(
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
    let counts = node_counts(s).await?;
    Ok(Json(json!({"hypervisor": hypervisor(s, i - 1, &counts)})))
}

pub(super) async fn hypervisor_stats(
    State(app): State<AppState>,
    auth: Auth,
) -> Result<Json<Value>> {
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
