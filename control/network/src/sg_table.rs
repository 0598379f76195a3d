//! Security groups and their rules as rows ([`rows::GROUPS`] in
//! `net_security_groups`: by project and name, one group named "default"
//! per project by a unique index; [`rows::RULES`] in `net_sg_rules`: by
//! group, by remote group and by project), and the queries the service
//! asks of them. Nothing holds them in memory, so a cloud with many
//! projects (one default group and four rules each) costs no controller
//! memory for them.

use crate::rows::{self, select, GROUPS, RULES};
use crate::{st, Rec};
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;
use ursa_core::error::Result;

/// The group `id`.
pub async fn group(c: &mut AnyConnection, id: &str) -> Result<Option<Rec>> {
    GROUPS.get(c, id).await
}

/// The groups among `ids` that exist, by id.
pub async fn groups(c: &mut AnyConnection, ids: &[String]) -> Result<HashMap<String, Rec>> {
    GROUPS.by_ids(c, ids).await
}

/// A project's groups (every group with `None`), in creation order.
pub async fn listed(c: &mut AnyConnection, project: Option<&str>) -> Result<Vec<Rec>> {
    match project {
        Some(p) => GROUPS.where_eq(c, "project_id", p).await,
        None => GROUPS.all(c).await,
    }
}

/// The project's group called `name` (the first made, when several are).
pub async fn named(c: &mut AnyConnection, project: &str, name: &str) -> Result<Option<Rec>> {
    Ok(select(
        c,
        "SELECT body FROM net_security_groups WHERE project_id = $1 AND name = $2 \
         ORDER BY created_at, id LIMIT 1",
        &[project, name],
    )
    .await?
    .pop())
}

/// The id of the project's default group, if it has been made.
pub async fn default_of(c: &mut AnyConnection, project: &str) -> Result<Option<String>> {
    Ok(named(c, project, "default")
        .await?
        .map(|g| st(&g, "id").to_string()))
}

/// The rule `id`.
pub async fn rule(c: &mut AnyConnection, id: &str) -> Result<Option<Rec>> {
    RULES.get(c, id).await
}

/// The rules of the groups `ids`, in creation order within each group.
pub async fn rules_of(c: &mut AnyConnection, ids: &[String]) -> Result<Vec<Rec>> {
    RULES.where_in(c, "security_group_id", ids).await
}

/// The ids of the rules of a group and of the rules naming it as their
/// remote group (what goes with it).
pub async fn rules_with(c: &mut AnyConnection, group: &str) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT id FROM net_sg_rules WHERE security_group_id = $1 \
         UNION SELECT id FROM net_sg_rules WHERE remote_group_id = $1",
    )
    .bind(group)
    .fetch_all(c)
    .await
    .map_err(rows::db)?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(rows::db))
        .collect()
}

/// The rules a project sees (its own, and those of its groups); every
/// rule with `None`.
pub async fn visible_rules(c: &mut AnyConnection, project: Option<&str>) -> Result<Vec<Rec>> {
    match project {
        Some(p) => {
            select(
                c,
                "SELECT body FROM net_sg_rules WHERE project_id = $1 \
                 UNION SELECT r.body FROM net_sg_rules r JOIN net_security_groups g \
                 ON g.id = r.security_group_id WHERE g.project_id = $1",
                &[p],
            )
            .await
        }
        None => RULES.all(c).await,
    }
}
