//! Volumes and snapshots as rows: `vol_records` (by kind; project,
//! status, source volume and creation time as indexed columns, the record
//! as JSON) and `vol_attachment_rows` (one per entry of a volume's
//! `attachments`: its id, volume, server, project and attach status, kept
//! with the volume). Read by indexed queries; nothing holds every volume
//! in memory.

use crate::{st, SNAPSHOT, VOLUME};
use serde_json::{Map, Value};
use sqlx::AnyConnection;
use ursa_core::error::{Error, Result};
use ursa_core::store::{Store, WriteTx};

type Rec = Map<String, Value>;

/// The volume service's migrations (versions 3000 and up).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Whether records of `kind` are rows of this table.
pub fn is_row(kind: &str) -> bool {
    [
        VOLUME,
        SNAPSHOT,
        crate::backup::BACKUP,
        crate::TRANSFER,
        crate::GROUP,
        crate::GROUP_SNAPSHOT,
        crate::MESSAGE,
    ]
    .contains(&kind)
}

fn db(e: sqlx::Error) -> Error {
    Error::Internal(format!("database error: {e}"))
}

fn bodies(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<Rec>> {
    Ok(ursa_core::store::json_records(&rows, 0)?)
}

/// Which records a read selects (every field narrows).
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub project: Option<String>,
    pub status: Vec<String>,
    /// Snapshots of this volume.
    pub volume: Option<String>,
    /// Volumes (or group snapshots) of this generic group.
    pub group: Option<String>,
}

/// The record `kind`/`id`.
pub async fn get(c: &mut AnyConnection, kind: &str, id: &str) -> Result<Option<Rec>> {
    let rows = sqlx::query("SELECT body FROM vol_records WHERE kind = $1 AND id = $2")
        .bind(kind)
        .bind(id)
        .fetch_all(c)
        .await
        .map_err(db)?;
    Ok(bodies(rows)?.pop())
}

/// The records of `kind` the filter selects, oldest first.
pub async fn select(c: &mut AnyConnection, kind: &str, f: &Filter) -> Result<Vec<Rec>> {
    let mut args = vec![kind.to_string()];
    let mut conds = vec!["kind = $1".to_string()];
    let arg = |v: &str, args: &mut Vec<String>| {
        args.push(v.to_string());
        format!("${}", args.len())
    };
    if let Some(p) = &f.project {
        let m = arg(p, &mut args);
        conds.push(format!("project_id = {m}"));
    }
    if let Some(v) = &f.volume {
        let m = arg(v, &mut args);
        conds.push(format!("volume_id = {m}"));
    }
    if let Some(g) = &f.group {
        let m = arg(g, &mut args);
        conds.push(format!("group_id = {m}"));
    }
    if !f.status.is_empty() {
        let marks: Vec<String> = f.status.iter().map(|s| arg(s, &mut args)).collect();
        conds.push(format!("status IN ({})", marks.join(", ")));
    }
    let sql = format!(
        "SELECT body FROM vol_records WHERE {} ORDER BY created_at, id",
        conds.join(" AND ")
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for a in &args {
        q = q.bind(a);
    }
    bodies(q.fetch_all(c).await.map_err(db)?)
}

/// The volumes attached to any of `servers`.
pub async fn attached_to(c: &mut AnyConnection, servers: &[String]) -> Result<Vec<Rec>> {
    let mut out = Vec::new();
    for chunk in servers.chunks(200) {
        let marks: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT body FROM vol_records WHERE kind = $1 AND id IN \
             (SELECT volume_id FROM vol_attachment_rows WHERE server_id IN ({})) ORDER BY created_at, id",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql).persistent(false).bind(VOLUME);
        for s in chunk {
            q = q.bind(s);
        }
        out.extend(bodies(q.fetch_all(&mut *c).await.map_err(db)?)?);
    }
    Ok(out)
}

/// Whether records of `kind` may belong to a generic group (their
/// `group_id` is a column).
fn grouped(kind: &str) -> bool {
    kind == VOLUME || kind == crate::GROUP_SNAPSHOT
}

/// Stores a record (new or changed), and a volume's attachments.
pub async fn put(w: &mut WriteTx, kind: &str, r: &Rec) -> Result<()> {
    let id = st(r, "id").to_string();
    sqlx::query(
        "INSERT INTO vol_records (kind, id, project_id, status, volume_id, created_at, body, group_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (kind, id) DO UPDATE SET project_id = excluded.project_id, status = excluded.status, \
         volume_id = excluded.volume_id, created_at = excluded.created_at, body = excluded.body, \
         group_id = excluded.group_id",
    )
    .bind(kind)
    .bind(&id)
    .bind(st(r, "project_id"))
    .bind(st(r, "status"))
    .bind(st(r, "volume_id"))
    .bind(st(r, "created_at"))
    .bind(Value::Object(r.clone()).to_string())
    .bind(if grouped(kind) { st(r, "group_id") } else { "" })
    .execute(w.conn())
    .await
    .map_err(db)?;
    if kind == VOLUME {
        sqlx::query("DELETE FROM vol_attachment_rows WHERE volume_id = $1")
            .bind(&id)
            .execute(w.conn())
            .await
            .map_err(db)?;
        let entries = r.get("attachments").and_then(|a| a.as_array());
        for a in entries.into_iter().flatten() {
            let Some(aid) = a["attachment_id"].as_str() else {
                continue;
            };
            sqlx::query(
                "INSERT INTO vol_attachment_rows (attachment_id, volume_id, server_id, project_id, status, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(aid)
            .bind(&id)
            .bind(a["server_id"].as_str().unwrap_or(""))
            .bind(st(r, "project_id"))
            .bind(crate::attach::status_of(a))
            .bind(
                a["ursa:created_at"]
                    .as_str()
                    .or(a["attached_at"].as_str())
                    .unwrap_or(""),
            )
            .execute(w.conn())
            .await
            .map_err(db)?;
        }
    }
    w.touch(kind, &id);
    Ok(())
}

/// Removes a record.
pub async fn delete(w: &mut WriteTx, kind: &str, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM vol_records WHERE kind = $1 AND id = $2")
        .bind(kind)
        .bind(id)
        .execute(w.conn())
        .await
        .map_err(db)?;
    if kind == VOLUME {
        sqlx::query("DELETE FROM vol_attachment_rows WHERE volume_id = $1")
            .bind(id)
            .execute(w.conn())
            .await
            .map_err(db)?;
    }
    w.touch(kind, id);
    Ok(())
}

/// Creates the tables and moves volume and snapshot documents (the layout
/// before they were rows) into them, once: run at start before the model
/// is loaded.
pub async fn prepare_store(store: &Store) -> Result<usize> {
    store.migrate(&MIGRATOR).await?;
    let moved = store
        .move_documents(&[VOLUME, SNAPSHOT], async |w, kind, r| {
            put(w, kind, r).await
        })
        .await?;
    if moved > 0 {
        tracing::info!(
            records = moved,
            "moved the volumes and snapshots into their table"
        );
    }
    index_old_attachments(store).await?;
    index_group_members(store).await?;
    Ok(moved)
}

/// Gives the volumes and group snapshots stored before `group_id` was a
/// column (it is empty) and whose record names a group their column, by
/// rewriting them. Only
/// volumes of the one stop that had groups without the column match, so
/// after the first start this finds nothing.
async fn index_group_members(store: &Store) -> Result<()> {
    let mut w = store.begin_write().await?;
    let mut n = 0;
    for kind in [VOLUME, crate::GROUP_SNAPSHOT] {
        let rows = sqlx::query(
            "SELECT body FROM vol_records WHERE kind = $1 AND group_id = '' AND body LIKE $2",
        )
        .bind(kind)
        .bind("%\"group_id\":\"%")
        .fetch_all(w.conn())
        .await
        .map_err(db)?;
        for r in &bodies(rows)? {
            put(&mut w, kind, r).await?;
            n += 1;
        }
    }
    if n == 0 {
        return Ok(());
    }
    w.commit(&[]).await?;
    tracing::info!(
        records = n,
        "indexed the volumes' and group snapshots' groups"
    );
    Ok(())
}

/// Rewrites the volumes the old `vol_attachments` table names (the layout
/// before attachments had rows of their own), once, so that each of
/// their attachments gets its row; then empties that table.
async fn index_old_attachments(store: &Store) -> Result<()> {
    let mut w = store.begin_write().await?;
    let rows = sqlx::query(
        "SELECT body FROM vol_records WHERE kind = $1 AND id IN (SELECT volume_id FROM vol_attachments)",
    )
    .bind(VOLUME)
    .fetch_all(w.conn())
    .await
    .map_err(db)?;
    let vols = bodies(rows)?;
    if vols.is_empty() {
        return Ok(());
    }
    for v in &vols {
        put(&mut w, VOLUME, v).await?;
    }
    sqlx::query("DELETE FROM vol_attachments")
        .execute(w.conn())
        .await
        .map_err(db)?;
    w.commit(&[]).await?;
    tracing::info!(volumes = vols.len(), "indexed the volumes' attachments");
    Ok(())
}

/// Which attachments a list selects (every field narrows).
#[derive(Debug, Default, Clone)]
pub struct AttachmentFilter {
    pub project: Option<String>,
    pub volume: Option<String>,
    pub server: Option<String>,
    pub status: Option<String>,
    /// Only those after this attachment (in creation order).
    pub marker: Option<String>,
    pub limit: Option<usize>,
    pub offset: usize,
}

/// The volume an attachment belongs to.
pub async fn attachment_volume(c: &mut AnyConnection, attachment: &str) -> Result<Option<String>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT volume_id FROM vol_attachment_rows WHERE attachment_id = $1")
            .bind(attachment)
            .fetch_optional(c)
            .await
            .map_err(db)?;
    Ok(row.map(|r| r.0))
}

/// The attachments a filter selects, oldest first: (attachment, volume).
pub async fn attachment_ids(
    c: &mut AnyConnection,
    f: &AttachmentFilter,
) -> Result<Vec<(String, String)>> {
    let mut args: Vec<String> = Vec::new();
    let mut conds = vec!["1 = 1".to_string()];
    let mut arg = |v: &str| {
        args.push(v.to_string());
        format!("${}", args.len())
    };
    for (col, v) in [
        ("project_id", &f.project),
        ("volume_id", &f.volume),
        ("server_id", &f.server),
        ("status", &f.status),
    ] {
        if let Some(v) = v {
            let m = arg(v);
            conds.push(format!("{col} = {m}"));
        }
    }
    if let Some(m) = &f.marker {
        let m = arg(m);
        conds.push(format!(
            "(created_at, attachment_id) > (SELECT created_at, attachment_id FROM vol_attachment_rows WHERE attachment_id = {m})"
        ));
    }
    let mut sql = format!(
        "SELECT attachment_id, volume_id FROM vol_attachment_rows WHERE {} ORDER BY created_at, attachment_id",
        conds.join(" AND ")
    );
    if let Some(l) = f.limit {
        sql.push_str(&format!(" LIMIT {l}"));
    }
    if f.offset > 0 {
        if f.limit.is_none() {
            // OFFSET needs a LIMIT on SQLite; this one is portable.
            sql.push_str(" LIMIT 1000000000");
        }
        sql.push_str(&format!(" OFFSET {}", f.offset));
    }
    let mut q = sqlx::query_as::<_, (String, String)>(&sql).persistent(false);
    for a in &args {
        q = q.bind(a);
    }
    q.fetch_all(c).await.map_err(db)
}
