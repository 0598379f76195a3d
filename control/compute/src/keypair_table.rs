//! Key pairs as rows: the `cmp_keypairs` table (id `<user>/<name>`, the
//! user and the name as indexed columns, the record as JSON). A user's
//! key pairs are listed and counted by index, one is read by id; nothing
//! holds every key pair in memory.

use crate::{st, Rec, KEYPAIR};
use serde_json::Value;
use sqlx::{AnyConnection, Row};
use ursa_core::error::{Error, Result};
use ursa_core::store::{Store, WriteTx};

fn db(e: sqlx::Error) -> Error {
    Error::Internal(format!("database error: {e}"))
}

/// A key pair's id: its user's, then its name.
pub fn id(user: &str, name: &str) -> String {
    format!("{user}/{name}")
}

/// The key pair `id` (`<user>/<name>`).
pub async fn get(c: &mut AnyConnection, id: &str) -> Result<Option<Rec>> {
    let rows = sqlx::query("SELECT body FROM cmp_keypairs WHERE id = $1")
        .bind(id)
        .fetch_all(c)
        .await
        .map_err(db)?;
    Ok(ursa_core::store::json_records(&rows, 0)?.pop())
}

/// A user's key pairs in name order, after the name `after`, at most
/// `limit` (all when None).
pub async fn of_user(
    c: &mut AnyConnection,
    user: &str,
    after: Option<&str>,
    limit: Option<usize>,
) -> Result<Vec<Rec>> {
    let limit = limit.map_or(String::new(), |l| format!(" LIMIT {l}"));
    let text = format!(
        "SELECT body FROM cmp_keypairs WHERE user_id = $1 AND name > $2 ORDER BY name{limit}"
    );
    let rows = sqlx::query(&text)
        .persistent(false)
        .bind(user)
        .bind(after.unwrap_or(""))
        .fetch_all(c)
        .await
        .map_err(db)?;
    Ok(ursa_core::store::json_records(&rows, 0)?)
}

/// How many key pairs a user has.
pub async fn count(c: &mut AnyConnection, user: &str) -> Result<i64> {
    sqlx::query("SELECT COUNT(*) FROM cmp_keypairs WHERE user_id = $1")
        .bind(user)
        .fetch_one(c)
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)
}

/// Stores a key pair.
pub async fn put(w: &mut WriteTx, r: &Rec) -> Result<()> {
    sqlx::query(
        "INSERT INTO cmp_keypairs (id, user_id, name, body) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, name = excluded.name, body = excluded.body",
    )
    .bind(st(r, "id"))
    .bind(st(r, "user_id"))
    .bind(st(r, "name"))
    .bind(Value::Object(r.clone()).to_string())
    .execute(w.conn())
    .await
    .map_err(db)?;
    w.touch(KEYPAIR, st(r, "id"));
    Ok(())
}

/// Removes a key pair; whether there was one.
pub async fn delete(w: &mut WriteTx, id: &str) -> Result<bool> {
    let n = sqlx::query("DELETE FROM cmp_keypairs WHERE id = $1")
        .bind(id)
        .execute(w.conn())
        .await
        .map_err(db)?
        .rows_affected();
    w.touch(KEYPAIR, id);
    Ok(n > 0)
}

/// Moves key pair documents (the layout before key pairs were rows) into
/// the table, once: run at start, after the compute migrations, before
/// the model is loaded.
pub async fn prepare_store(store: &Store) -> Result<usize> {
    let n = store
        .move_documents(&[KEYPAIR], async |w, _, r| put(w, r).await)
        .await?;
    if n > 0 {
        tracing::info!(key_pairs = n, "moved the key pairs into their table");
    }
    Ok(n)
}
