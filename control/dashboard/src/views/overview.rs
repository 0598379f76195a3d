//! Project → Overview: usage against quotas as charts (compute limits,
//! volume limits, network quota details), and the project's usage summary
//! (`os-simple-tenant-usage`).

use crate::{Ctx, Result};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One chart: used of limit (-1 = unlimited).
#[derive(Serialize)]
pub struct Chart {
    pub title: &'static str,
    pub used: i64,
    pub limit: i64,
    /// 0–100, for the ring's arc.
    pub percent: i64,
    /// The ring's dash length for `percent` (circumference 100).
    pub dash: String,
}

pub fn chart(title: &'static str, used: i64, limit: i64) -> Chart {
    let percent = if limit > 0 {
        (used * 100 / limit).clamp(0, 100)
    } else {
        0
    };
    Chart {
        title,
        used,
        limit,
        percent,
        dash: format!("{percent} {}", 100 - percent),
    }
}

#[derive(Deserialize)]
struct Limits {
    limits: LimitsInner,
}

#[derive(Deserialize)]
struct LimitsInner {
    absolute: BTreeMap<String, i64>,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(default)]
    used: i64,
    #[serde(default)]
    limit: i64,
}

#[derive(Deserialize)]
struct NetQuota {
    quota: BTreeMap<String, Detail>,
}

#[derive(Serialize)]
struct Overview {
    groups: Vec<(&'static str, Vec<Chart>)>,
}

pub async fn project(c: Ctx) -> Result<Response> {
    let mut groups = Vec::new();
    if c.s.has("compute") {
        if let Ok(l) = c.api.get::<Limits>("/compute/v2.1/limits").await {
            let a = |k: &str| l.limits.absolute.get(k).copied().unwrap_or(0);
            groups.push((
                "Compute",
                vec![
                    chart("Instances", a("totalInstancesUsed"), a("maxTotalInstances")),
                    chart("VCPUs", a("totalCoresUsed"), a("maxTotalCores")),
                    chart("RAM (MB)", a("totalRAMUsed"), a("maxTotalRAMSize")),
                ],
            ));
        }
    }
    if c.s.has("volumev3") || c.s.has("block-storage") {
        let path = format!("/volume/v3/{}/limits", c.s.project_id);
        if let Ok(l) = c.api.get::<Limits>(&path).await {
            let a = |k: &str| l.limits.absolute.get(k).copied().unwrap_or(0);
            groups.push((
                "Volume",
                vec![
                    chart("Volumes", a("totalVolumesUsed"), a("maxTotalVolumes")),
                    chart(
                        "Volume Snapshots",
                        a("totalSnapshotsUsed"),
                        a("maxTotalSnapshots"),
                    ),
                    chart(
                        "Volume Storage (GiB)",
                        a("totalGigabytesUsed"),
                        a("maxTotalVolumeGigabytes"),
                    ),
                ],
            ));
        }
    }
    if c.s.has("network") {
        let path = format!("/network/v2.0/quotas/{}/details", c.s.project_id);
        if let Ok(q) = c.api.get::<NetQuota>(&path).await {
            let d = |k: &str| q.quota.get(k).map(|d| (d.used, d.limit)).unwrap_or((0, 0));
            let mut v = Vec::new();
            for (title, key) in [
                ("Floating IPs", "floatingip"),
                ("Security Groups", "security_group"),
                ("Networks", "network"),
                ("Ports", "port"),
                ("Routers", "router"),
            ] {
                let (u, l) = d(key);
                v.push(chart(title, u, l));
            }
            groups.push(("Network", v));
        }
    }
    c.page("overview.html", "Overview", Overview { groups })
}

#[cfg(test)]
mod tests {
    #[test]
    fn charts_clamp_and_know_unlimited() {
        let c = super::chart("x", 5, 10);
        assert_eq!((c.percent, c.dash.as_str()), (50, "50 50"));
        assert_eq!(super::chart("x", 5, -1).percent, 0);
        assert_eq!(super::chart("x", 50, 10).percent, 100);
    }
}
