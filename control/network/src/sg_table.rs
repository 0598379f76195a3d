//! Security groups and their rules as rows: `net_security_groups` (by
//! project and name; one group named "default" per project, by a unique
//! index) and `net_sg_rules` (by group, by remote group and by project).
//! They are written by [`crate::NetWriter::commit`] from the same
//! `Op::Put`/`Op::Delete` a handler plans for any record, inside the
//! write's transaction, and read here by indexed queries: nothing holds
//! them in memory, so a cloud with many projects (one default group and
//! four rules each) costs no controller memory for them.

use crate::{st, Rec, RULE, SG};
use serde_json::Value;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;
use ursa_core::error::{Error, Result};
use ursa_core::store::{Store, WriteTx};

fn db(e: sqlx::Error) -> Error {
    Error::Internal(format!("database error: {e}"))
}

async fn select(c: &mut AnyConnection, sql: &str, args: &[&str]) -> Result<Vec<Rec>> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    let rows = q.fetch_all(c).await.map_err(db)?;
    Ok(ursa_core::store::json_records(&rows, 0)?)
}

/// Runs a `SELECT body … WHERE col IN (…)` over `ids`, in chunks.
async fn select_in(c: &mut AnyConnection, sql: &str, ids: &[String]) -> Result<Vec<Rec>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(200) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = sql.replace("{}", &marks.join(", "));
        let mut q = sqlx::query(&sql).persistent(false);
        for id in chunk {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&mut *c).await.map_err(db)?;
        out.extend(ursa_core::store::json_records(&rows, 0)?);
    }
    Ok(out)
}

/// The group `id`.
pub async fn group(c: &mut AnyConnection, id: &str) -> Result<Option<Rec>> {
    Ok(select(
        c,
        "SELECT body FROM net_security_groups WHERE id = $1",
        &[id],
    )
    .await?
    .pop())
}

/// The groups among `ids` that exist, by id.
pub async fn groups(c: &mut AnyConnection, ids: &[String]) -> Result<HashMap<String, Rec>> {
    let found = select_in(
        c,
        "SELECT body FROM net_security_groups WHERE id IN ({})",
        ids,
    )
    .await?;
    Ok(found
        .into_iter()
        .map(|g| (st(&g, "id").to_string(), g))
        .collect())
}

/// A project's groups (every group with `None`), in creation order.
pub async fn listed(c: &mut AnyConnection, project: Option<&str>) -> Result<Vec<Rec>> {
    match project {
        Some(p) => select(
            c,
            "SELECT body FROM net_security_groups WHERE project_id = $1 ORDER BY created_at, id",
            &[p],
        )
        .await,
        None => {
            select(
                c,
                "SELECT body FROM net_security_groups ORDER BY created_at, id",
                &[],
            )
            .await
        }
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
    Ok(
        select(c, "SELECT body FROM net_sg_rules WHERE id = $1", &[id])
            .await?
            .pop(),
    )
}

/// The rules of the groups `ids`, in creation order within each group.
pub async fn rules_of(c: &mut AnyConnection, ids: &[String]) -> Result<Vec<Rec>> {
    select_in(
        c,
        "SELECT body FROM net_sg_rules WHERE security_group_id IN ({}) \
         ORDER BY security_group_id, created_at, id",
        ids,
    )
    .await
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
    .map_err(db)?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(db))
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
        None => select(c, "SELECT body FROM net_sg_rules", &[]).await,
    }
}

/// How many groups (`SG`) or rules (`RULE`) a project has.
pub async fn count(c: &mut AnyConnection, kind: &str, project: &str) -> Result<i64> {
    let sql = match kind {
        SG => "SELECT COUNT(*) FROM net_security_groups WHERE project_id = $1",
        _ => "SELECT COUNT(*) FROM net_sg_rules WHERE project_id = $1",
    };
    sqlx::query(sql)
        .bind(project)
        .fetch_one(c)
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)
}

/// Stores a group or a rule (new or changed).
pub async fn put(w: &mut WriteTx, kind: &str, r: &Rec) -> Result<()> {
    let body = Value::Object(r.clone()).to_string();
    let q = match kind {
        SG => sqlx::query(
            "INSERT INTO net_security_groups (id, project_id, name, created_at, body) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET \
             project_id = excluded.project_id, name = excluded.name, \
             created_at = excluded.created_at, body = excluded.body",
        )
        .bind(st(r, "id"))
        .bind(st(r, "project_id"))
        .bind(st(r, "name")),
        _ => sqlx::query(
            "INSERT INTO net_sg_rules (id, security_group_id, remote_group_id, project_id, created_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET \
             security_group_id = excluded.security_group_id, remote_group_id = excluded.remote_group_id, \
             project_id = excluded.project_id, created_at = excluded.created_at, body = excluded.body",
        )
        .bind(st(r, "id"))
        .bind(st(r, "security_group_id"))
        .bind(st(r, "remote_group_id"))
        .bind(st(r, "project_id")),
    };
    let res = q
        .bind(st(r, "created_at"))
        .bind(body)
        .execute(w.conn())
        .await;
    if let Err(e) = res {
        if ursa_core::store::unique_violation(&e) {
            return Err(Error::Conflict(
                "Default security group already exists.".into(),
            ));
        }
        return Err(db(e));
    }
    w.touch(kind, st(r, "id"));
    Ok(())
}

/// Removes a group or a rule.
pub async fn delete(w: &mut WriteTx, kind: &str, id: &str) -> Result<()> {
    let sql = match kind {
        SG => "DELETE FROM net_security_groups WHERE id = $1",
        _ => "DELETE FROM net_sg_rules WHERE id = $1",
    };
    sqlx::query(sql)
        .bind(id)
        .execute(w.conn())
        .await
        .map_err(db)?;
    w.touch(kind, id);
    Ok(())
}

/// Moves the groups and rules an earlier release kept as documents into
/// their tables (once; see [`Store::move_documents`]).
pub async fn upgrade(store: &Store) -> Result<usize> {
    store
        .move_documents(&[SG, RULE], async |w, kind, r| put(w, kind, r).await)
        .await
}
