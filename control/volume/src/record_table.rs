//! Volumes and snapshots as rows: `vol_records` (by kind; project,
//! status, source volume and creation time as indexed columns, the record
//! as JSON) and `vol_attachments` (volume → server, kept from each
//! volume's `attachments`). Read by indexed queries; nothing holds every
//! volume in memory.

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
    kind == VOLUME || kind == SNAPSHOT || kind == crate::backup::BACKUP
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
             (SELECT volume_id FROM vol_attachments WHERE server_id IN ({})) ORDER BY created_at, id",
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

/// Stores a record (new or changed), and a volume's attachments.
pub async fn put(w: &mut WriteTx, kind: &str, r: &Rec) -> Result<()> {
    let id = st(r, "id").to_string();
    sqlx::query(
        "INSERT INTO vol_records (kind, id, project_id, status, volume_id, created_at, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (kind, id) DO UPDATE SET project_id = excluded.project_id, status = excluded.status, \
         volume_id = excluded.volume_id, created_at = excluded.created_at, body = excluded.body",
    )
    .bind(kind)
    .bind(&id)
    .bind(st(r, "project_id"))
    .bind(st(r, "status"))
    .bind(st(r, "volume_id"))
    .bind(st(r, "created_at"))
    .bind(Value::Object(r.clone()).to_string())
    .execute(w.conn())
    .await
    .map_err(db)?;
    if kind == VOLUME {
        sqlx::query("DELETE FROM vol_attachments WHERE volume_id = $1")
            .bind(&id)
            .execute(w.conn())
            .await
            .map_err(db)?;
        let servers: Vec<String> = r
            .get("attachments")
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["server_id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for s in servers {
            sqlx::query(
                "INSERT INTO vol_attachments (volume_id, server_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&id)
            .bind(s)
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
        sqlx::query("DELETE FROM vol_attachments WHERE volume_id = $1")
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
    let mut moved = 0;
    for kind in [VOLUME, SNAPSHOT] {
        let mut w = store.begin_write().await?;
        let docs = w.documents(kind).await?;
        if docs.is_empty() {
            continue;
        }
        let mut ops = Vec::new();
        for d in &docs {
            if let Some(r) = d.body.as_object() {
                put(&mut w, kind, r).await?;
            }
            ops.push(ursa_core::store::Op::delete(kind, &d.id));
        }
        w.commit(&ops).await?;
        moved += docs.len();
    }
    if moved > 0 {
        tracing::info!(
            records = moved,
            "moved the volumes and snapshots into their table"
        );
    }
    Ok(moved)
}
