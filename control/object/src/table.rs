//! The object service's tables and every query on them. Each write is one
//! transaction whose first statement writes (so that on SQLite it takes the
//! write lock before it reads, and on PostgreSQL it locks the container
//! row): what it reads stays true until it commits.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::collections::BTreeMap;
use ursa_core::store::{Backend, Store};

/// Stored headers, by lower-case name.
pub type Meta = BTreeMap<String, String>;

/// The object service's migrations (versions 5000 and up).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store: {0}")]
    Store(#[from] ursa_core::store::StoreError),
    #[error("a shared write failed: {0}")]
    Batch(String),
    #[error("a row did not decode: {0}")]
    Decode(String),
}

pub type Result<T> = std::result::Result<T, TableError>;

/// Runs the migrations; on PostgreSQL the name columns compare byte-wise.
pub async fn migrate(store: &Store) -> Result<()> {
    store.migrate(&MIGRATOR).await?;
    if store.backend() == Backend::Postgres {
        for (table, col) in [
            ("obj_accounts", "account"),
            ("obj_containers", "account"),
            ("obj_containers", "name"),
            ("obj_objects", "account"),
            ("obj_objects", "container"),
            ("obj_objects", "name"),
        ] {
            sqlx::query(&format!(
                "ALTER TABLE {table} ALTER COLUMN {col} TYPE TEXT COLLATE \"C\""
            ))
            .execute(store.pool())
            .await?;
        }
    }
    Ok(())
}

fn meta_of(s: &str) -> Meta {
    serde_json::from_str(s).unwrap_or_default()
}

fn meta_text(m: &Meta) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

/// An account: its row (absent until something is stored in it) and the
/// sums over its containers.
#[derive(Debug, Default, Clone)]
pub struct Account {
    pub exists: bool,
    pub created: i64,
    pub put_ts: i64,
    pub meta: Meta,
    pub containers: i64,
    pub objects: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    pub created: i64,
    pub put_ts: i64,
    pub object_count: i64,
    pub bytes_used: i64,
    pub meta: Meta,
    /// Bumped by every change to its objects (what a cached listing is
    /// checked against, with `created`).
    pub rev: i64,
}

#[derive(Debug, Clone)]
pub struct Object {
    pub name: String,
    pub ts: i64,
    pub size: i64,
    pub etag: String,
    pub content_type: String,
    pub blob: String,
    pub meta: Meta,
    pub delete_at: Option<i64>,
    /// When storing: the bytes of an inline blob (`blob` names it), written
    /// in the same transaction as the row. Never loaded with the row.
    pub inline: Option<bytes::Bytes>,
}

const CONTAINER_COLS: &str = "name, created, put_ts, object_count, bytes_used, meta, rev";
const OBJECT_COLS: &str = "name, ts, size, etag, content_type, blob, meta, delete_at";

fn container_of(r: &AnyRow) -> Result<Container> {
    Ok(Container {
        name: r.try_get(0)?,
        created: r.try_get(1)?,
        put_ts: r.try_get(2)?,
        object_count: r.try_get(3)?,
        bytes_used: r.try_get(4)?,
        meta: meta_of(&r.try_get::<String, _>(5)?),
        rev: r.try_get(6)?,
    })
}

fn object_of(r: &AnyRow) -> Result<Object> {
    Ok(Object {
        name: r.try_get(0)?,
        ts: r.try_get(1)?,
        size: r.try_get(2)?,
        etag: r.try_get(3)?,
        content_type: r.try_get(4)?,
        blob: r.try_get(5)?,
        meta: meta_of(&r.try_get::<String, _>(6)?),
        delete_at: r.try_get(7)?,
        inline: None,
    })
}

/// The account and its totals.
pub async fn account(store: &Store, account: &str) -> Result<Account> {
    let mut c = store.pool().acquire().await?;
    let row = sqlx::query("SELECT created, put_ts, meta FROM obj_accounts WHERE account = $1")
        .bind(account)
        .fetch_optional(&mut *c)
        .await?;
    let sums = sqlx::query(
        "SELECT COUNT(*), CAST(COALESCE(SUM(object_count), 0) AS BIGINT), \
         CAST(COALESCE(SUM(bytes_used), 0) AS BIGINT) FROM obj_containers WHERE account = $1",
    )
    .bind(account)
    .fetch_one(&mut *c)
    .await?;
    let mut a = Account {
        containers: sums.try_get(0)?,
        objects: sums.try_get(1)?,
        bytes: sums.try_get(2)?,
        ..Default::default()
    };
    if let Some(r) = row {
        a.exists = true;
        a.created = r.try_get(0)?;
        a.put_ts = r.try_get(1)?;
        a.meta = meta_of(&r.try_get::<String, _>(2)?);
    }
    Ok(a)
}

/// The account's stored headers alone (one indexed read; no sums).
pub async fn account_meta(store: &Store, account: &str) -> Result<Meta> {
    let meta: Option<String> =
        sqlx::query_scalar("SELECT meta FROM obj_accounts WHERE account = $1")
            .bind(account)
            .fetch_optional(store.pool())
            .await?;
    Ok(meta.map(|m| meta_of(&m)).unwrap_or_default())
}

async fn ensure_account(c: &mut AnyConnection, account: &str, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO obj_accounts (account, created, put_ts, meta) VALUES ($1, $2, $2, '{}') \
         ON CONFLICT (account) DO NOTHING",
    )
    .bind(account)
    .bind(now)
    .execute(c)
    .await?;
    Ok(())
}

/// Applies `change` to the account's stored headers (creating the account).
pub async fn update_account<E>(
    store: &Store,
    account: &str,
    now: i64,
    change: impl FnOnce(&mut Meta) -> std::result::Result<(), E>,
) -> Result<std::result::Result<(), E>> {
    let mut tx = store.pool().begin().await?;
    ensure_account(&mut tx, account, now).await?;
    let meta: String = sqlx::query_scalar("SELECT meta FROM obj_accounts WHERE account = $1")
        .bind(account)
        .fetch_one(&mut *tx)
        .await?;
    let mut meta = meta_of(&meta);
    if let Err(e) = change(&mut meta) {
        return Ok(Err(e));
    }
    sqlx::query("UPDATE obj_accounts SET meta = $2, put_ts = $3 WHERE account = $1")
        .bind(account)
        .bind(meta_text(&meta))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Ok(()))
}

pub async fn container(store: &Store, account: &str, name: &str) -> Result<Option<Container>> {
    let row = sqlx::query(&format!(
        "SELECT {CONTAINER_COLS} FROM obj_containers WHERE account = $1 AND name = $2"
    ))
    .bind(account)
    .bind(name)
    .fetch_optional(store.pool())
    .await?;
    row.as_ref().map(container_of).transpose()
}

/// Creates the container, or updates it: `change` edits its stored headers.
/// Returns whether it was created.
pub async fn put_container<E>(
    store: &Store,
    account: &str,
    name: &str,
    now: i64,
    change: impl FnOnce(&mut Meta) -> std::result::Result<(), E>,
) -> Result<std::result::Result<bool, E>> {
    let mut tx = store.pool().begin().await?;
    ensure_account(&mut tx, account, now).await?;
    let inserted = sqlx::query(
        "INSERT INTO obj_containers (account, name, created, put_ts, object_count, bytes_used, meta) \
         VALUES ($1, $2, $3, $3, 0, 0, '{}') ON CONFLICT (account, name) DO NOTHING",
    )
    .bind(account)
    .bind(name)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let meta: String =
        sqlx::query_scalar("SELECT meta FROM obj_containers WHERE account = $1 AND name = $2")
            .bind(account)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
    let mut meta = meta_of(&meta);
    if let Err(e) = change(&mut meta) {
        return Ok(Err(e));
    }
    sqlx::query(
        "UPDATE obj_containers SET meta = $3, put_ts = $4 WHERE account = $1 AND name = $2",
    )
    .bind(account)
    .bind(name)
    .bind(meta_text(&meta))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(inserted))
}

/// Edits an existing container's stored headers; `false` if there is none.
pub async fn update_container<E>(
    store: &Store,
    account: &str,
    name: &str,
    change: impl FnOnce(&mut Meta) -> std::result::Result<(), E>,
) -> Result<std::result::Result<bool, E>> {
    let mut tx = store.pool().begin().await?;
    let found =
        sqlx::query("UPDATE obj_containers SET put_ts = put_ts WHERE account = $1 AND name = $2")
            .bind(account)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
    if !found {
        return Ok(Ok(false));
    }
    let meta: String =
        sqlx::query_scalar("SELECT meta FROM obj_containers WHERE account = $1 AND name = $2")
            .bind(account)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
    let mut meta = meta_of(&meta);
    if let Err(e) = change(&mut meta) {
        return Ok(Err(e));
    }
    sqlx::query("UPDATE obj_containers SET meta = $3 WHERE account = $1 AND name = $2")
        .bind(account)
        .bind(name)
        .bind(meta_text(&meta))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Ok(true))
}

/// What deleting a container did.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    Done,
    NotFound,
    NotEmpty,
}

pub async fn delete_container(store: &Store, account: &str, name: &str) -> Result<Deleted> {
    let mut tx = store.pool().begin().await?;
    let n = sqlx::query(
        "DELETE FROM obj_containers WHERE account = $1 AND name = $2 AND object_count = 0",
    )
    .bind(account)
    .bind(name)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 1 {
        // No object row may outlive its container (counts said none).
        sqlx::query("DELETE FROM obj_objects WHERE account = $1 AND container = $2")
            .bind(account)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(Deleted::Done);
    }
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT object_count FROM obj_containers WHERE account = $1 AND name = $2",
    )
    .bind(account)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(if exists.is_some() {
        Deleted::NotEmpty
    } else {
        Deleted::NotFound
    })
}

pub async fn object(
    store: &Store,
    account: &str,
    container: &str,
    name: &str,
) -> Result<Option<Object>> {
    let row = sqlx::query(&format!(
        "SELECT {OBJECT_COLS} FROM obj_objects WHERE account = $1 AND container = $2 AND name = $3"
    ))
    .bind(account)
    .bind(container)
    .bind(name)
    .fetch_optional(store.pool())
    .await?;
    row.as_ref().map(object_of).transpose()
}

/// What a write sees of the container inside its transaction, for checks
/// (quotas, `If-None-Match`) that must hold at commit.
pub struct WriteView<'a> {
    pub container: &'a Container,
    pub old: Option<&'a Object>,
}

/// The outcome of storing an object.
#[derive(Debug)]
pub enum Stored<E> {
    /// Stored; the blob the previous version had (to delete).
    Done {
        replaced: Option<String>,
    },
    NoContainer,
    /// A check refused it; nothing changed.
    Refused(E),
}

/// Stores `obj` in `container` (replacing any object of that name), after
/// `check` approves with the container and the old object as they are
/// inside the transaction.
pub async fn put_object<E>(
    store: &Store,
    account: &str,
    container: &str,
    obj: &Object,
    check: impl FnOnce(&WriteView) -> std::result::Result<(), E>,
) -> Result<Stored<E>> {
    let mut tx = store.pool().begin().await?;
    let stored = put_object_in(&mut tx, account, container, obj, check).await?;
    if matches!(stored, Stored::Done { .. }) {
        tx.commit().await?;
    }
    Ok(stored)
}

/// [`put_object`] inside a transaction the caller commits (several PUTs
/// share one commit: [`crate::batch`]). A refusal or a missing container
/// has changed nothing: the only write before the checks leaves the
/// container row as it was.
pub async fn put_object_in<E>(
    tx: &mut AnyConnection,
    account: &str,
    container: &str,
    obj: &Object,
    check: impl FnOnce(&WriteView) -> std::result::Result<(), E>,
) -> Result<Stored<E>> {
    let found =
        sqlx::query("UPDATE obj_containers SET rev = rev + 1 WHERE account = $1 AND name = $2")
            .bind(account)
            .bind(container)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
    if !found {
        return Ok(Stored::NoContainer);
    }
    let row = sqlx::query(&format!(
        "SELECT {CONTAINER_COLS} FROM obj_containers WHERE account = $1 AND name = $2"
    ))
    .bind(account)
    .bind(container)
    .fetch_one(&mut *tx)
    .await?;
    let cont = container_of(&row)?;
    let old = sqlx::query(&format!(
        "SELECT {OBJECT_COLS} FROM obj_objects WHERE account = $1 AND container = $2 AND name = $3"
    ))
    .bind(account)
    .bind(container)
    .bind(&obj.name)
    .fetch_optional(&mut *tx)
    .await?;
    let old = old.as_ref().map(object_of).transpose()?;
    if let Err(e) = check(&WriteView {
        container: &cont,
        old: old.as_ref(),
    }) {
        return Ok(Stored::Refused(e));
    }
    sqlx::query(
        "INSERT INTO obj_objects (account, container, name, ts, size, etag, content_type, blob, meta, delete_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (account, container, name) DO UPDATE SET ts = excluded.ts, size = excluded.size, \
         etag = excluded.etag, content_type = excluded.content_type, blob = excluded.blob, \
         meta = excluded.meta, delete_at = excluded.delete_at",
    )
    .bind(account)
    .bind(container)
    .bind(&obj.name)
    .bind(obj.ts)
    .bind(obj.size)
    .bind(&obj.etag)
    .bind(&obj.content_type)
    .bind(&obj.blob)
    .bind(meta_text(&obj.meta))
    .bind(obj.delete_at)
    .execute(&mut *tx)
    .await?;
    if let Some(data) = &obj.inline {
        sqlx::query("INSERT INTO obj_inline (blob, data) VALUES ($1, $2)")
            .bind(&obj.blob)
            .bind(data.to_vec())
            .execute(&mut *tx)
            .await?;
    }
    let (dc, db) = match &old {
        Some(o) => (0, obj.size - o.size),
        None => (1, obj.size),
    };
    sqlx::query(
        "UPDATE obj_containers SET object_count = object_count + $3, bytes_used = bytes_used + $4 \
         WHERE account = $1 AND name = $2",
    )
    .bind(account)
    .bind(container)
    .bind(dc)
    .bind(db)
    .execute(&mut *tx)
    .await?;
    let replaced = old
        .map(|o| o.blob)
        .filter(|b| !b.is_empty() && *b != obj.blob);
    if let Some(b) = &replaced {
        add_garbage(tx, b).await?;
    }
    Ok(Stored::Done { replaced })
}

async fn add_garbage(c: &mut AnyConnection, blob: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO obj_garbage (blob, since) VALUES ($1, $2) ON CONFLICT (blob) DO NOTHING",
    )
    .bind(blob)
    .bind(crate::time::now())
    .execute(c)
    .await?;
    Ok(())
}

/// Replaces an object's metadata (a POST). `None` if there is no object.
pub async fn update_object(
    store: &Store,
    account: &str,
    container: &str,
    name: &str,
    change: impl FnOnce(&mut Object),
) -> Result<Option<Object>> {
    let mut tx = store.pool().begin().await?;
    let found = sqlx::query(
        "UPDATE obj_objects SET ts = ts WHERE account = $1 AND container = $2 AND name = $3",
    )
    .bind(account)
    .bind(container)
    .bind(name)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !found {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {OBJECT_COLS} FROM obj_objects WHERE account = $1 AND container = $2 AND name = $3"
    ))
    .bind(account)
    .bind(container)
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    let mut o = object_of(&row)?;
    change(&mut o);
    sqlx::query(
        "UPDATE obj_objects SET ts = $4, content_type = $5, meta = $6, delete_at = $7 \
         WHERE account = $1 AND container = $2 AND name = $3",
    )
    .bind(account)
    .bind(container)
    .bind(name)
    .bind(o.ts)
    .bind(&o.content_type)
    .bind(meta_text(&o.meta))
    .bind(o.delete_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE obj_containers SET rev = rev + 1 WHERE account = $1 AND name = $2")
        .bind(account)
        .bind(container)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(o))
}

/// Deletes an object; the deleted row (its blob is then garbage) or `None`.
/// With `only_if_delete_at`, only if it still expires at that time (the
/// expirer's delete, which a newer PUT or POST must win against).
pub async fn delete_object(
    store: &Store,
    account: &str,
    container: &str,
    name: &str,
    only_if_delete_at: Option<i64>,
) -> Result<Option<Object>> {
    let mut tx = store.pool().begin().await?;
    let row = sqlx::query(&format!(
        "DELETE FROM obj_objects WHERE account = $1 AND container = $2 AND name = $3 \
         AND ($4 IS NULL OR delete_at = $4) RETURNING {OBJECT_COLS}"
    ))
    .bind(account)
    .bind(container)
    .bind(name)
    .bind(only_if_delete_at)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let o = object_of(&row)?;
    sqlx::query(
        "UPDATE obj_containers SET object_count = object_count - 1, bytes_used = bytes_used - $3, rev = rev + 1 \
         WHERE account = $1 AND name = $2",
    )
    .bind(account)
    .bind(container)
    .bind(o.size)
    .execute(&mut *tx)
    .await?;
    if !o.blob.is_empty() {
        add_garbage(&mut tx, &o.blob).await?;
    }
    tx.commit().await?;
    Ok(Some(o))
}

/// Blobs waiting to be deleted.
pub async fn garbage(store: &Store) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT blob FROM obj_garbage ORDER BY since LIMIT 10000")
            .fetch_all(store.pool())
            .await?,
    )
}

pub async fn forget_garbage(store: &Store, blob: &str) -> Result<()> {
    sqlx::query("DELETE FROM obj_garbage WHERE blob = $1")
        .bind(blob)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Objects whose `X-Delete-At` has passed: (account, container, name, delete_at).
pub async fn expired(
    store: &Store,
    now_secs: i64,
    limit: i64,
) -> Result<Vec<(String, String, String, i64)>> {
    let rows = sqlx::query(
        "SELECT account, container, name, delete_at FROM obj_objects \
         WHERE delete_at IS NOT NULL AND delete_at <= $1 ORDER BY delete_at LIMIT $2",
    )
    .bind(now_secs)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect()
}

/// One bound of a page of names.
#[derive(Debug, Clone)]
pub struct Bound {
    pub name: String,
    pub inclusive: bool,
}

/// A page of names between `lo` and `hi`, ascending or (reverse) descending.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub lo: Option<Bound>,
    pub hi: Option<Bound>,
    pub reverse: bool,
    pub limit: usize,
}

impl Page {
    fn sql(&self, first_arg: usize) -> (String, Vec<String>) {
        let mut conds = String::new();
        let mut args = Vec::new();
        for (b, op) in [(&self.lo, [">", ">="]), (&self.hi, ["<", "<="])] {
            if let Some(b) = b {
                args.push(b.name.clone());
                conds.push_str(&format!(
                    " AND name {} ${}",
                    op[b.inclusive as usize],
                    first_arg + args.len() - 1
                ));
            }
        }
        let order = if self.reverse { "DESC" } else { "ASC" };
        (
            format!("{conds} ORDER BY name {order} LIMIT {}", self.limit),
            args,
        )
    }
}

/// A page of an account's containers.
pub async fn containers(store: &Store, account: &str, page: Page) -> Result<Vec<Container>> {
    let (tail, args) = page.sql(2);
    let sql = format!("SELECT {CONTAINER_COLS} FROM obj_containers WHERE account = $1{tail}");
    let mut q = sqlx::query(&sql).persistent(false).bind(account);
    for a in &args {
        q = q.bind(a);
    }
    q.fetch_all(store.pool())
        .await?
        .iter()
        .map(container_of)
        .collect()
}

/// A page of a container's objects.
pub async fn objects(
    store: &Store,
    account: &str,
    container: &str,
    page: Page,
) -> Result<Vec<Object>> {
    let (tail, args) = page.sql(3);
    // The page comes back as one JSON array in one row: SQLite's driver
    // hands every row across a thread, which cost a 10,000-object listing
    // most of its time.
    let agg = match store.backend() {
        Backend::Postgres => {
            "CAST(json_agg(json_build_array(name, ts, size, etag, content_type, blob, meta, delete_at)) AS TEXT)"
        }
        _ => "json_group_array(json_array(name, ts, size, etag, content_type, blob, meta, delete_at))",
    };
    let sql = format!(
        "SELECT {agg} FROM (SELECT {OBJECT_COLS} FROM obj_objects \
         WHERE account = $1 AND container = $2{tail}) AS page"
    );
    let mut q = sqlx::query(&sql)
        .persistent(false)
        .bind(account)
        .bind(container);
    for a in &args {
        q = q.bind(a);
    }
    let text: Option<String> = q.fetch_one(store.pool()).await?.try_get(0)?;
    type Packed = (
        String,
        i64,
        i64,
        String,
        String,
        String,
        String,
        Option<i64>,
    );
    let rows: Vec<Packed> = match text {
        Some(t) => serde_json::from_str(&t)
            .map_err(|e| TableError::Decode(format!("a listing page: {e}")))?,
        None => Vec::new(),
    };
    let mut out: Vec<Object> = rows
        .into_iter()
        .map(
            |(name, ts, size, etag, content_type, blob, meta, delete_at)| Object {
                name,
                ts,
                size,
                etag,
                content_type,
                blob,
                meta: meta_of(&meta),
                delete_at,
                inline: None,
            },
        )
        .collect();
    // An aggregate keeps no order of its own: the page's order, byte-wise.
    if page.reverse {
        out.sort_unstable_by(|a, b| b.name.as_bytes().cmp(a.name.as_bytes()));
    } else {
        out.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    }
    Ok(out)
}

/// A container that syncs to another.
#[derive(Debug, Clone)]
pub struct SyncRow {
    pub account: String,
    pub container: String,
    pub sync_to: String,
    pub sync_key: String,
    pub cursor: i64,
}

/// Records (or, with `None`, forgets) that a container syncs to another.
pub async fn set_sync(
    store: &Store,
    account: &str,
    container: &str,
    to: Option<(&str, &str)>,
) -> Result<()> {
    match to {
        Some((to, key)) => {
            sqlx::query(
                "INSERT INTO obj_sync (account, container, sync_to, sync_key, cursor) VALUES ($1, $2, $3, $4, 0) \
                 ON CONFLICT (account, container) DO UPDATE SET sync_to = excluded.sync_to, sync_key = excluded.sync_key",
            )
            .bind(account)
            .bind(container)
            .bind(to)
            .bind(key)
            .execute(store.pool())
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM obj_sync WHERE account = $1 AND container = $2")
                .bind(account)
                .bind(container)
                .execute(store.pool())
                .await?;
        }
    }
    Ok(())
}

/// The containers that sync.
pub async fn syncs(store: &Store) -> Result<Vec<SyncRow>> {
    let rows = sqlx::query(
        "SELECT account, container, sync_to, sync_key, cursor FROM obj_sync LIMIT 1000",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SyncRow {
                account: r.try_get(0)?,
                container: r.try_get(1)?,
                sync_to: r.try_get(2)?,
                sync_key: r.try_get(3)?,
                cursor: r.try_get(4)?,
            })
        })
        .collect()
}

pub async fn set_cursor(store: &Store, account: &str, container: &str, cursor: i64) -> Result<()> {
    sqlx::query(
        "UPDATE obj_sync SET cursor = $3 WHERE account = $1 AND container = $2 AND cursor < $3",
    )
    .bind(account)
    .bind(container)
    .bind(cursor)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// A container's objects written after `after`, oldest first.
pub async fn objects_since(
    store: &Store,
    account: &str,
    container: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Object>> {
    let rows = sqlx::query(&format!(
        "SELECT {OBJECT_COLS} FROM obj_objects WHERE account = $1 AND container = $2 AND ts > $3 ORDER BY ts LIMIT $4"
    ))
    .bind(account)
    .bind(container)
    .bind(after)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(object_of).collect()
}
