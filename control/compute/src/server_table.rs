//! Servers as rows: the `cmp_servers` table (indexed columns plus the
//! record as JSON). Lists page in SQL (newest first, keyset after the
//! marker), quotas and the scheduler add up flavors with `GROUP BY`, and
//! the duties read only the servers they act on; nothing holds every
//! server in memory.

use crate::{st, Rec, SERVER};
use serde_json::Value;
use sqlx::{AnyConnection, Row};
use ursa_core::error::{Error, Result};
use ursa_core::store::{Store, WriteTx};

/// The compute service's migrations (versions 2000 and up).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

fn db(e: sqlx::Error) -> Error {
    Error::Internal(format!("database error: {e}"))
}

fn bodies(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<Rec>> {
    Ok(ursa_core::store::json_records(&rows, 0)?)
}

/// SQL with numbered parameters.
#[derive(Default)]
struct Sql {
    conds: Vec<String>,
    args: Vec<String>,
}

impl Sql {
    fn arg(&mut self, v: &str) -> String {
        self.args.push(v.to_string());
        format!("${}", self.args.len())
    }

    fn cond(&mut self, col: &str, vals: &[&str]) {
        let marks: Vec<String> = vals.iter().map(|v| self.arg(v)).collect();
        self.conds.push(format!("{col} IN ({})", marks.join(", ")));
    }

    fn where_clause(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conds.join(" AND "))
        }
    }

    async fn fetch(&self, c: &mut AnyConnection, text: &str) -> Result<Vec<sqlx::any::AnyRow>> {
        let mut q = sqlx::query(text).persistent(false);
        for a in &self.args {
            q = q.bind(a);
        }
        q.fetch_all(c).await.map_err(db)
    }
}

/// Which servers a read selects (every field narrows; empty: any).
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub project: Option<String>,
    pub node: Option<String>,
    pub group: Option<String>,
    pub status: Vec<String>,
    pub flavor: Option<String>,
    pub image: Option<String>,
    /// `updated` at or after (RFC 3339, as stored).
    pub changed_since: Option<String>,
}

impl Filter {
    fn sql(&self) -> Sql {
        let mut s = Sql::default();
        if let Some(p) = &self.project {
            s.cond("project_id", &[p]);
        }
        if let Some(n) = &self.node {
            s.cond("node", &[n]);
        }
        if let Some(g) = &self.group {
            s.cond("group_id", &[g]);
        }
        if !self.status.is_empty() {
            let v: Vec<&str> = self.status.iter().map(String::as_str).collect();
            s.cond("status", &v);
        }
        if let Some(f) = &self.flavor {
            s.cond("flavor_id", &[f]);
        }
        if let Some(i) = &self.image {
            // Not a column: narrowed in memory by the caller as well.
            let m = s.arg(&format!(
                "%\"ursa:image_id\":\"{}\"%",
                i.replace(['%', '_', '"'], "")
            ));
            s.conds.push(format!("body LIKE {m}"));
        }
        if let Some(t) = &self.changed_since {
            let m = s.arg(t);
            s.conds.push(format!("updated >= {m}"));
        }
        s
    }
}

/// The server `id`.
pub async fn get(c: &mut AnyConnection, id: &str) -> Result<Option<Rec>> {
    let rows = sqlx::query("SELECT body FROM cmp_servers WHERE id = $1")
        .bind(id)
        .fetch_all(c)
        .await
        .map_err(db)?;
    Ok(bodies(rows)?.pop())
}

/// Every server the filter selects, oldest first.
pub async fn select(c: &mut AnyConnection, f: &Filter) -> Result<Vec<Rec>> {
    let s = f.sql();
    let text = format!(
        "SELECT body FROM cmp_servers{} ORDER BY created, id",
        s.where_clause()
    );
    bodies(s.fetch(c, &text).await?)
}

/// One page, newest first (Nova's order: `created` then `id`, both
/// descending), after `marker`; `limit + 1` rows so the caller knows
/// whether more follow. None when the marker is no server.
pub async fn page(
    c: &mut AnyConnection,
    f: &Filter,
    marker: Option<&str>,
    limit: usize,
) -> Result<Option<Vec<Rec>>> {
    let mut s = f.sql();
    if let Some(m) = marker {
        let row = sqlx::query("SELECT created FROM cmp_servers WHERE id = $1")
            .bind(m)
            .fetch_optional(&mut *c)
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let created: String = row.try_get(0).map_err(db)?;
        let (a, b, d) = (s.arg(&created), s.arg(&created), s.arg(m));
        s.conds
            .push(format!("(created < {a} OR (created = {b} AND id < {d}))"));
    }
    let text = format!(
        "SELECT body FROM cmp_servers{} ORDER BY created DESC, id DESC LIMIT {}",
        s.where_clause(),
        limit + 1
    );
    Ok(Some(bodies(s.fetch(c, &text).await?)?))
}

/// How many servers of each flavor the filter selects.
pub async fn flavor_counts(c: &mut AnyConnection, f: &Filter) -> Result<Vec<(String, i64)>> {
    let s = f.sql();
    let text = format!(
        "SELECT flavor_id, COUNT(*) FROM cmp_servers{} GROUP BY flavor_id",
        s.where_clause()
    );
    s.fetch(c, &text)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?)))
        .collect()
}

/// How many servers each node runs of each flavor (with those in ERROR,
/// which take nothing from the scheduler's view, or without).
pub async fn node_flavor_counts(
    c: &mut AnyConnection,
    with_error: bool,
) -> Result<Vec<(String, String, i64)>> {
    let rows = sqlx::query(if with_error {
        "SELECT node, flavor_id, COUNT(*) FROM cmp_servers GROUP BY node, flavor_id"
    } else {
        "SELECT node, flavor_id, COUNT(*) FROM cmp_servers WHERE status <> 'ERROR' GROUP BY node, flavor_id"
    })
    .fetch_all(c)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0).map_err(db)?,
                r.try_get(1).map_err(db)?,
                r.try_get(2).map_err(db)?,
            ))
        })
        .collect()
}

/// The projects that have servers.
pub async fn projects(c: &mut AnyConnection) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT DISTINCT project_id FROM cmp_servers ORDER BY project_id")
        .fetch_all(c)
        .await
        .map_err(db)?;
    rows.iter().map(|r| r.try_get(0).map_err(db)).collect()
}

/// How many servers there are.
pub async fn count(c: &mut AnyConnection) -> Result<i64> {
    sqlx::query("SELECT COUNT(*) FROM cmp_servers")
        .fetch_one(c)
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)
}

fn s(r: &Rec, k: &str) -> String {
    st(r, k).to_string()
}

/// Stores a server (new or changed).
pub async fn put(w: &mut WriteTx, r: &Rec) -> Result<()> {
    let body = Value::Object(r.clone()).to_string();
    sqlx::query(
        "INSERT INTO cmp_servers (id, project_id, name, status, node, flavor_id, group_id, created, updated, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET project_id = excluded.project_id, name = excluded.name, \
         status = excluded.status, node = excluded.node, flavor_id = excluded.flavor_id, \
         group_id = excluded.group_id, created = excluded.created, updated = excluded.updated, body = excluded.body",
    )
    .bind(s(r, "id"))
    .bind(s(r, "tenant_id"))
    .bind(s(r, "name"))
    .bind(s(r, "status"))
    .bind(s(r, "ursa:node"))
    .bind(s(r, "ursa:flavor_id"))
    .bind(s(r, "ursa:group"))
    .bind(s(r, "created"))
    .bind(s(r, "updated"))
    .bind(body)
    .execute(w.conn())
    .await
    .map_err(db)?;
    w.touch(SERVER, st(r, "id"));
    Ok(())
}

/// Removes a server, keeping its instance actions (shown for deleted
/// servers from 2.21).
pub async fn delete(w: &mut WriteTx, id: &str) -> Result<()> {
    if let Some(r) = get(w.conn(), id).await? {
        let actions = r
            .get("ursa:actions")
            .cloned()
            .unwrap_or(Value::Array(vec![]));
        sqlx::query(
            "INSERT INTO cmp_deleted_servers (id, project_id, deleted_at, actions) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET actions = excluded.actions, deleted_at = excluded.deleted_at",
        )
        .bind(id)
        .bind(s(&r, "tenant_id"))
        .bind(crate::now())
        .bind(actions.to_string())
        .execute(w.conn())
        .await
        .map_err(db)?;
    }
    sqlx::query("DELETE FROM cmp_servers WHERE id = $1")
        .bind(id)
        .execute(w.conn())
        .await
        .map_err(db)?;
    w.touch(SERVER, id);
    Ok(())
}

/// A deleted server's project and instance actions.
pub async fn deleted_actions(
    c: &mut AnyConnection,
    id: &str,
) -> Result<Option<(String, Vec<Value>)>> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT project_id, actions FROM cmp_deleted_servers WHERE id = $1")
            .bind(id)
            .fetch_optional(c)
            .await
            .map_err(db)?;
    Ok(row.map(|(p, a)| {
        let list = serde_json::from_str::<Vec<Value>>(&a).unwrap_or_default();
        (p, list)
    }))
}

/// Creates the tables and moves server documents (the layout before
/// servers were rows) into them, once: run at start before the model is
/// loaded.
pub async fn prepare_store(store: &Store) -> Result<usize> {
    store.migrate(&MIGRATOR).await?;
    crate::keypair_table::prepare_store(store).await?;
    let n = store
        .move_documents(&[SERVER], async |w, _, r| put(w, r).await)
        .await?;
    if n > 0 {
        tracing::info!(servers = n, "moved the servers into their table");
    }
    Ok(n)
}
