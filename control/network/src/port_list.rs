//! `GET /v2.0/ports` as a query: the filters on indexed attributes, the
//! sort keys, `marker` (keyset: the rows after the marker's sort values)
//! and `limit` go into SQL, so a page costs the same at any depth and any
//! number of ports. A list that filters or sorts on what is not a column
//! (tags, status, security groups, …) reads the visible rows matching its
//! column filters and is answered in memory by [`crate::query::answer`].

use crate::query::{self, ListQuery};
use crate::Rec;
use sqlx::{AnyConnection, Row};
use ursa_core::error::{Error, Result};
use ursa_core::store::Backend;

/// Which ports the caller sees: all (admin), or those of its project and
/// those on networks its project owns.
pub struct Visible {
    pub all: bool,
    pub project: String,
    pub networks: Vec<String>,
}

/// API attribute → column, for filters and sort keys.
fn column(attr: &str, admin: bool) -> Option<&'static str> {
    Some(match attr {
        "id" => "id",
        "name" => "name",
        "network_id" => "network_id",
        "mac_address" => "mac_address",
        "device_id" => "device_id",
        "device_owner" => "device_owner",
        "project_id" | "tenant_id" => "project_id",
        "created_at" => "created_at",
        "binding:host_id" if admin => "host",
        _ => return None,
    })
}

/// SQL with numbered parameters, built up piece by piece.
#[derive(Default)]
struct Sql {
    text: String,
    args: Vec<String>,
}

impl Sql {
    fn arg(&mut self, v: &str) -> String {
        self.args.push(v.to_string());
        format!("${}", self.args.len())
    }

    fn any_of(&mut self, col: &str, vals: &[&str]) -> String {
        let marks: Vec<String> = vals.iter().map(|v| self.arg(v)).collect();
        format!("{col} IN ({})", marks.join(", "))
    }
}

/// The rows of the visible ports matching the column filters, or None
/// when a filter is not one a column answers.
fn conditions(q: &ListQuery, vis: &Visible, sql: &mut Sql) -> Option<Vec<String>> {
    let mut conds = Vec::new();
    if !vis.all {
        let p = sql.arg(&vis.project);
        if vis.networks.is_empty() {
            conds.push(format!("project_id = {p}"));
        } else {
            let nets: Vec<&str> = vis.networks.iter().map(String::as_str).collect();
            let on = sql.any_of("network_id", &nets);
            conds.push(format!("(project_id = {p} OR {on})"));
        }
    }
    for (k, wants) in q.filter_pairs() {
        if k == "fixed_ips" {
            for w in wants {
                let (key, val) = w.split_once('=')?;
                let col = match key {
                    "ip_address" => "ip_address",
                    "subnet_id" => "subnet_id",
                    _ => return None,
                };
                let v = sql.arg(val);
                conds.push(format!(
                    "id IN (SELECT port_id FROM net_ip_allocations WHERE {col} = {v})"
                ));
            }
            continue;
        }
        let col = column(k, vis.all)?;
        conds.push(sql.any_of(col, &wants));
    }
    if ["tags", "tags-any", "not-tags", "not-tags-any"]
        .iter()
        .any(|t| q.one(t).is_some())
    {
        return None;
    }
    Some(conds)
}

fn body(r: &sqlx::any::AnyRow) -> Result<Rec> {
    let b: String = r
        .try_get(0)
        .map_err(|e| Error::Internal(format!("database error: {e}")))?;
    serde_json::from_str(&b).map_err(|e| Error::Internal(format!("stored port unreadable: {e}")))
}

async fn fetch(c: &mut AnyConnection, sql: &Sql) -> Result<Vec<Rec>> {
    let mut qq = sqlx::query(&sql.text).persistent(false);
    for a in &sql.args {
        qq = qq.bind(a);
    }
    let rows = qq
        .fetch_all(c)
        .await
        .map_err(|e| Error::Internal(format!("database error: {e}")))?;
    rows.iter().map(body).collect()
}

/// One page of ports as stored records, and whether more lie beyond it;
/// None when the list must be answered in memory ([`visible_matching`]).
pub async fn page(
    c: &mut AnyConnection,
    backend: Backend,
    q: &ListQuery,
    vis: &Visible,
    known: &[&str],
) -> Result<Option<(Vec<Rec>, bool)>> {
    let mut sql = Sql::default();
    let Some(mut conds) = conditions(q, vis, &mut sql) else {
        return Ok(None);
    };
    let order = query::sort_order(q, known)?;
    let mut cols = Vec::new();
    for (k, asc) in &order {
        match column(k, vis.all) {
            Some(c) => cols.push((c, *asc)),
            None => return Ok(None),
        }
    }
    let limit = query::limit(q)?;
    let reverse = query::reverse(q);
    // Byte order, as the in-memory sort compares strings. Not for ids:
    // lowercase UUIDs (hyphens in fixed places) sort alike in any
    // collation, and so the primary key's index serves the common list.
    let collate = |col: &str| match backend {
        Backend::Postgres if col != "id" => " COLLATE \"C\"",
        _ => "",
    };
    if let Some(marker) = q.one("marker").filter(|m| !m.is_empty()) {
        let names: Vec<&str> = cols.iter().map(|(c, _)| *c).collect();
        let row = sqlx::query(&format!(
            "SELECT {} FROM net_ports WHERE id = $1",
            names.join(", ")
        ))
        .bind(marker)
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| Error::Internal(format!("database error: {e}")))?;
        if let Some(row) = row {
            conds.push(after_marker(&mut sql, &cols, reverse, &row, collate));
        }
    }
    let by: Vec<String> = cols
        .iter()
        .map(|(c, asc)| {
            let dir = if *asc != reverse { "ASC" } else { "DESC" };
            format!("{c}{} {dir}", collate(c))
        })
        .collect();
    sql.text = format!(
        "SELECT body FROM net_ports{} ORDER BY {}",
        if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        },
        by.join(", ")
    );
    if let Some(l) = limit {
        sql.text.push_str(&format!(" LIMIT {}", l + 1));
    }
    let mut rows = fetch(c, &sql).await?;
    let more = limit.is_some_and(|l| rows.len() > l);
    if let Some(l) = limit {
        rows.truncate(l);
    }
    if reverse {
        rows.reverse();
    }
    Ok(Some((rows, more)))
}

/// The condition "after the marker's sort values in the list's order".
/// With one direction for every key it is a row-value comparison, which
/// SQLite and PostgreSQL start an index range at; with mixed directions
/// it is spelled out, `(k0 > v0) OR (k0 = v0 AND k1 < v1) …`, under the
/// first key's own bound.
fn after_marker(
    sql: &mut Sql,
    cols: &[(&str, bool)],
    reverse: bool,
    row: &sqlx::any::AnyRow,
    collate: impl Fn(&str) -> &'static str,
) -> String {
    let vals: Vec<String> = (0..cols.len())
        .map(|j| row.try_get::<String, _>(j).unwrap_or_default())
        .collect();
    let forward = |asc: bool| asc != reverse;
    let keyed = |col: &str| format!("{col}{}", collate(col));
    if cols.iter().all(|(_, a)| forward(*a) == forward(cols[0].1)) {
        let op = if forward(cols[0].1) { ">" } else { "<" };
        let names: Vec<String> = cols.iter().map(|(c, _)| keyed(c)).collect();
        let marks: Vec<String> = vals.iter().map(|v| sql.arg(v)).collect();
        return format!("({}) {op} ({})", names.join(", "), marks.join(", "));
    }
    let mut alts = Vec::new();
    for i in 0..cols.len() {
        let mut parts = Vec::new();
        for (j, (col, asc)) in cols.iter().enumerate().take(i + 1) {
            let m = sql.arg(&vals[j]);
            let op = match (j < i, forward(*asc)) {
                (true, _) => "=",
                (false, true) => ">",
                (false, false) => "<",
            };
            parts.push(format!("{} {op} {m}", keyed(col)));
        }
        alts.push(format!("({})", parts.join(" AND ")));
    }
    let (c0, asc0) = cols[0];
    let m0 = sql.arg(&vals[0]);
    let op0 = if forward(asc0) { ">=" } else { "<=" };
    format!("{} {op0} {m0} AND ({})", keyed(c0), alts.join(" OR "))
}

/// Every visible port matching the column filters that apply (for a list
/// answered in memory).
pub async fn visible_matching(
    c: &mut AnyConnection,
    q: &ListQuery,
    vis: &Visible,
) -> Result<Vec<Rec>> {
    let mut sql = Sql::default();
    // Only the visibility and the plain column filters narrow the read;
    // everything else is the in-memory answer's job.
    let mut conds = Vec::new();
    if !vis.all {
        let p = sql.arg(&vis.project);
        let nets: Vec<&str> = vis.networks.iter().map(String::as_str).collect();
        if nets.is_empty() {
            conds.push(format!("project_id = {p}"));
        } else {
            let on = sql.any_of("network_id", &nets);
            conds.push(format!("(project_id = {p} OR {on})"));
        }
    }
    for (k, wants) in q.filter_pairs() {
        if let Some(col) = column(k, vis.all) {
            conds.push(sql.any_of(col, &wants));
        }
    }
    sql.text = format!(
        "SELECT body FROM net_ports{} ORDER BY id",
        if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        }
    );
    fetch(c, &sql).await
}
