//! Limits and zones.

use super::*;

/// A project's servers, and the cores and RAM their flavors take.
pub(crate) async fn usage(s: &Compute, project: &str) -> Result<(i64, i64, i64)> {
    usage_on(s, &mut *s.conn().await?, project).await
}

/// [`usage`] read on `c` (inside a write, for a check that holds until
/// the write commits).
pub(crate) async fn usage_on(
    s: &Compute,
    c: &mut sqlx::AnyConnection,
    project: &str,
) -> Result<(i64, i64, i64)> {
    let filter = crate::server_table::Filter {
        project: Some(project.to_string()),
        ..Default::default()
    };
    let counts = crate::server_table::flavor_counts(c, &filter).await?;
    let flavors = s.docs(FLAVOR);
    Ok(counts.iter().fold((0, 0, 0), |(n, c, m), (fid, k)| {
        let f = flavors.iter().find(|f| st(f, "id") == fid);
        let get = |key: &str| f.and_then(|f| f[key].as_i64()).unwrap_or(0);
        (n + k, c + k * get("vcpus"), m + k * get("ram"))
    }))
}

/// Stores a new server if its project stays within its instances, cores
/// and RAM quota, counted inside the write that stores it (so concurrent
/// creates cannot pass the quota together).
pub(crate) async fn store_within_quota(
    s: &Compute,
    rec: &Rec,
    project: &str,
    ram: u64,
    vcpus: u64,
) -> Result<()> {
    let lim = crate::admin::limits(s, project);
    let mut w = s.identity.write().await?;
    let (instances, cores, mem) = usage_on(s, w.tx().conn(), project).await?;
    let under = |key: &str, want: i64| {
        let l = lim.get(key).and_then(|v| v.as_i64()).unwrap_or(-1);
        l < 0 || want <= l
    };
    if !(under("instances", instances + 1)
        && under("cores", cores + vcpus as i64)
        && under("ram", mem + ram as i64))
    {
        return Err(Error::Forbidden(
            "Quota exceeded for instances, cores or ram.".into(),
        ));
    }
    crate::server_table::put(w.tx(), rec).await?;
    w.commit(&[]).await
}

/// `GET /limits`, as the version asks: from 2.36 without the network
/// limits (Neutron's), from 2.39 without `maxImageMeta`, from 2.57 without
/// the file-injection ones. An admin may name another project
/// (`?tenant_id=`).
pub(super) async fn limits(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let asked = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "tenant_id")
        .map(|(_, v)| v.into_owned());
    let project = match asked {
        Some(p) if auth.0.is_admin() => p,
        _ => auth.0.project_id().unwrap_or("").to_string(),
    };
    let (instances, cores, ram) = usage(s, &project).await?;
    let l = crate::admin::limits(s, &project);
    let mut absolute = json!({
        "maxServerMeta": l["metadata_items"], "maxPersonality": l["injected_files"],
        "maxPersonalitySize": l["injected_file_content_bytes"], "maxImageMeta": 128,
        "maxTotalKeypairs": l["key_pairs"], "maxSecurityGroupRules": 20, "maxSecurityGroups": 10,
        "maxServerGroups": l["server_groups"], "maxServerGroupMembers": l["server_group_members"],
        "maxTotalFloatingIps": 10,
        "maxTotalInstances": l["instances"], "maxTotalCores": l["cores"], "maxTotalRAMSize": l["ram"],
        "totalInstancesUsed": instances, "totalCoresUsed": cores, "totalRAMUsed": ram,
        "totalSecurityGroupsUsed": 0, "totalFloatingIpsUsed": 0, "totalServerGroupsUsed": 0});
    let gone: &[(u16, &[&str])] = &[
        (
            36,
            &[
                "maxSecurityGroupRules",
                "maxSecurityGroups",
                "maxTotalFloatingIps",
                "totalSecurityGroupsUsed",
                "totalFloatingIpsUsed",
            ],
        ),
        (39, &["maxImageMeta"]),
        (57, &["maxPersonality", "maxPersonalitySize"]),
    ];
    if let Some(m) = absolute.as_object_mut() {
        for (from, keys) in gone {
            if mv.at(*from) {
                for k in *keys {
                    m.remove(*k);
                }
            }
        }
    }
    Ok(Json(json!({"limits": {"rate": [], "absolute": absolute}})))
}

pub(super) async fn zones(_auth: Auth) -> Json<Value> {
    Json(
        json!({"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": true}, "hosts": null}]}),
    )
}

pub(super) async fn zones_detail(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
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
