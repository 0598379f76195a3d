//! The network service's records kept as rows of their own tables (every
//! kind but ports, which have [`crate::port_table`]): each table has the
//! record's `id`, the columns its queries select on (copied from the
//! record's attributes) and `created_at`, and the record as Neutron shows
//! it in `body`. [`crate::NetWriter::commit`] stores a kind listed in
//! [`TABLES`] here instead of as a document, inside the write's
//! transaction; reads are indexed queries (`SELECT … WHERE column = $1`),
//! so nothing holds these records in memory.

use crate::{st, Rec, FIP, NETWORK, ROUTER, RULE, SG, SUBNET};
use serde_json::Value;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;
use ursa_core::error::{Error, Result};
use ursa_core::store::WriteTx;

/// A kind's table: its name and its columns as (column, record attribute).
pub struct Table {
    pub kind: &'static str,
    pub name: &'static str,
    pub columns: &'static [(&'static str, &'static str)],
    /// What a unique-constraint violation means to the caller.
    pub conflict: &'static str,
    /// The quota resource its records count against.
    pub quota: &'static str,
}

pub const GROUPS: Table = Table {
    kind: SG,
    quota: "security_group",
    name: "net_security_groups",
    columns: &[("project_id", "project_id"), ("name", "name")],
    conflict: "Default security group already exists.",
};

pub const RULES: Table = Table {
    kind: RULE,
    quota: "security_group_rule",
    name: "net_sg_rules",
    columns: &[
        ("security_group_id", "security_group_id"),
        ("remote_group_id", "remote_group_id"),
        ("project_id", "project_id"),
    ],
    conflict: "Security group rule already exists.",
};

pub const FIPS: Table = Table {
    kind: FIP,
    quota: "floatingip",
    name: "net_floating_ips",
    columns: &[
        ("project_id", "project_id"),
        ("floating_network_id", "floating_network_id"),
        ("port_id", "port_id"),
        ("router_id", "router_id"),
    ],
    conflict: "Floating IP already exists.",
};

pub const ROUTERS: Table = Table {
    kind: ROUTER,
    quota: "router",
    name: "net_routers",
    columns: &[("project_id", "project_id"), ("name", "name")],
    conflict: "Router already exists.",
};

pub const NETWORKS: Table = Table {
    kind: NETWORK,
    quota: "network",
    name: "net_networks",
    columns: &[
        ("project_id", "project_id"),
        ("name", "name"),
        ("shared", "shared"),
        ("external", "router:external"),
        ("network_type", "provider:network_type"),
        ("physical_network", "provider:physical_network"),
        ("segmentation_id", "provider:segmentation_id"),
    ],
    conflict: "Network already exists.",
};

pub const SUBNETS: Table = Table {
    kind: SUBNET,
    quota: "subnet",
    name: "net_subnets",
    columns: &[
        ("project_id", "project_id"),
        ("network_id", "network_id"),
        ("name", "name"),
        ("subnetpool_id", "subnetpool_id"),
    ],
    conflict: "Subnet already exists.",
};

/// The kinds kept as rows here.
pub const TABLES: &[&Table] = &[&GROUPS, &RULES, &FIPS, &ROUTERS, &NETWORKS, &SUBNETS];

/// An attribute as its column holds it: text as it is, true/false,
/// numbers in decimal, "" for anything else (null, absent).
fn text_of(r: &Rec, field: &str) -> String {
    match r.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The table of `kind`, if it is kept as rows here.
pub fn table_of(kind: &str) -> Option<&'static Table> {
    TABLES.iter().copied().find(|t| t.kind == kind)
}

/// Stores `op` in its kind's table when the kind is kept as rows here;
/// false (nothing done) for any other kind.
pub async fn apply(w: &mut WriteTx, op: &ursa_core::store::Op) -> Result<bool> {
    use ursa_core::store::Op;
    match op {
        Op::Put(d) => match table_of(&d.kind) {
            Some(t) => {
                t.put(w, &d.body.as_object().cloned().unwrap_or_default())
                    .await?;
                Ok(true)
            }
            None => Ok(false),
        },
        Op::Delete { kind, id } => match table_of(kind) {
            Some(t) => {
                t.delete(w, id).await?;
                Ok(true)
            }
            None => Ok(false),
        },
    }
}

pub(crate) fn db(e: sqlx::Error) -> Error {
    Error::Internal(format!("database error: {e}"))
}

/// The records a `SELECT body …` with text parameters selects.
pub(crate) async fn select(c: &mut AnyConnection, sql: &str, args: &[&str]) -> Result<Vec<Rec>> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    let rows = q.fetch_all(c).await.map_err(db)?;
    Ok(ursa_core::store::json_records(&rows, 0)?)
}

/// The records `sql` selects for `values`, a few hundred at a time: `sql`
/// names them as `IN (…)`, which becomes each chunk's parameter list.
pub(crate) async fn select_in(
    c: &mut AnyConnection,
    sql: &str,
    values: &[String],
) -> Result<Vec<Rec>> {
    let mut out = Vec::new();
    for chunk in values.chunks(200) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let q = sql.replace("IN (…)", &format!("IN ({})", marks.join(", ")));
        let args: Vec<&str> = chunk.iter().map(String::as_str).collect();
        out.extend(select(c, &q, &args).await?);
    }
    Ok(out)
}

impl Table {
    /// The record `id`.
    pub async fn get(&self, c: &mut AnyConnection, id: &str) -> Result<Option<Rec>> {
        let sql = format!("SELECT body FROM {} WHERE id = $1", self.name);
        Ok(select(c, &sql, &[id]).await?.pop())
    }

    /// The records whose `column` is any of `values`, in creation order
    /// (by `column` first when there are several values).
    pub async fn where_in(
        &self,
        c: &mut AnyConnection,
        column: &str,
        values: &[String],
    ) -> Result<Vec<Rec>> {
        let sql = format!(
            "SELECT body FROM {} WHERE {column} IN (…) ORDER BY {column}, created_at, id",
            self.name
        );
        select_in(c, &sql, values).await
    }

    /// The records among `ids` that exist, by id.
    pub async fn by_ids(
        &self,
        c: &mut AnyConnection,
        ids: &[String],
    ) -> Result<HashMap<String, Rec>> {
        Ok(self
            .where_in(c, "id", ids)
            .await?
            .into_iter()
            .map(|r| (st(&r, "id").to_string(), r))
            .collect())
    }

    /// The records whose `column` is `value`, in creation order.
    pub async fn where_eq(
        &self,
        c: &mut AnyConnection,
        column: &str,
        value: &str,
    ) -> Result<Vec<Rec>> {
        self.where_in(c, column, &[value.to_string()]).await
    }

    /// Every record, in creation order.
    pub async fn all(&self, c: &mut AnyConnection) -> Result<Vec<Rec>> {
        let sql = format!("SELECT body FROM {} ORDER BY created_at, id", self.name);
        select(c, &sql, &[]).await
    }

    /// How many records have `column` = `value`.
    pub async fn count(&self, c: &mut AnyConnection, column: &str, value: &str) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {} WHERE {column} = $1", self.name);
        sqlx::query(&sql)
            .bind(value)
            .fetch_one(c)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)
    }

    /// Stores a record (new or changed).
    pub async fn put(&self, w: &mut WriteTx, r: &Rec) -> Result<()> {
        let cols: Vec<&str> = self.columns.iter().map(|(c, _)| *c).collect();
        let marks: Vec<String> = (1..=cols.len() + 3).map(|i| format!("${i}")).collect();
        let updates: Vec<String> = cols
            .iter()
            .chain(["created_at", "body"].iter())
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let sql = format!(
            "INSERT INTO {} (id, {}, created_at, body) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {}",
            self.name,
            cols.join(", "),
            marks.join(", "),
            updates.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(st(r, "id"));
        for (_, field) in self.columns {
            q = q.bind(text_of(r, field));
        }
        let res = q
            .bind(st(r, "created_at"))
            .bind(Value::Object(r.clone()).to_string())
            .execute(w.conn())
            .await;
        if let Err(e) = res {
            if ursa_core::store::unique_violation(&e) {
                return Err(Error::Conflict(self.conflict.into()));
            }
            return Err(db(e));
        }
        w.touch(self.kind, st(r, "id"));
        Ok(())
    }

    /// Removes a record.
    pub async fn delete(&self, w: &mut WriteTx, id: &str) -> Result<()> {
        let sql = format!("DELETE FROM {} WHERE id = $1", self.name);
        sqlx::query(&sql)
            .bind(id)
            .execute(w.conn())
            .await
            .map_err(db)?;
        w.touch(self.kind, id);
        Ok(())
    }
}

/// Moves the records of every kind in [`TABLES`] an earlier release kept
/// as documents into their tables (once; see
/// [`ursa_core::store::Store::move_documents`]).
pub async fn upgrade(store: &ursa_core::store::Store) -> Result<usize> {
    let kinds: Vec<&str> = TABLES.iter().map(|t| t.kind).collect();
    store
        .move_documents(&kinds, async |w, kind, r| match table_of(kind) {
            Some(t) => t.put(w, r).await,
            None => Ok(()),
        })
        .await
}
