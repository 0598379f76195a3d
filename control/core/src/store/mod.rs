//! Persistent state: one interface over SQLite (the default, embedded) and
//! PostgreSQL (for several controllers), chosen by the URL.
//!
//! The control plane keeps its working state in memory and treats the store
//! as the durable record of every change. The store therefore speaks in
//! documents: each object is a row `(kind, id, scope, name, body)` where
//! `body` is the object's JSON and `(kind, scope, name)` is unique, which is
//! how "a user name is unique within its domain" is enforced by the database
//! itself even with several controllers. Relations (role assignments, group
//! membership, implied roles) are documents too, with a composite id.
//!
//! Changes are applied as a batch of [`Op`]s in one transaction, and every
//! batch bumps a revision counter and records which documents it touched
//! under its revision (the `changes` table): another controller sharing a
//! PostgreSQL database reads [`Store::changes_since`] its revision and
//! applies those deltas, reloading everything only when it fell behind the
//! pruned feed.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::path::Path;
use std::str::FromStr;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A `(kind, scope, name)` that must be unique already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or refused the statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored body is not valid JSON (the row was damaged outside Ursa).
    #[error("corrupt document {kind}/{id}: {source}")]
    Corrupt {
        kind: String,
        id: String,
        source: serde_json::Error,
    },
    /// Another writer committed since the revision the batch was computed at.
    #[error("stale: the store moved past revision {0}")]
    Stale(i64),
    /// The URL names no supported database.
    #[error("unsupported store URL {0:?}: use sqlite:PATH or postgres://…")]
    BadUrl(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub kind: String,
    pub id: String,
    /// The namespace that `name` is unique in (a domain id, a user id, …).
    pub scope: String,
    pub name: String,
    pub body: serde_json::Value,
}

/// One change. A batch of them is applied atomically.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Insert or replace the document with this kind and id.
    Put(Doc),
    /// Remove the document (no error if absent).
    Delete { kind: String, id: String },
}

impl Op {
    pub fn put(kind: &str, id: &str, scope: &str, name: &str, body: impl serde::Serialize) -> Op {
        Op::Put(Doc {
            kind: kind.to_string(),
            id: id.to_string(),
            scope: scope.to_string(),
            name: name.to_string(),
            body: serde_json::to_value(body).expect("documents serialize to JSON"),
        })
    }

    pub fn delete(kind: &str, id: &str) -> Op {
        Op::Delete {
            kind: kind.to_string(),
            id: id.to_string(),
        }
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The PostgreSQL URL, for the connection that listens for other
    /// controllers' commits (it may hold a password: never printed).
    url: std::sync::Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The channel every commit is announced on (PostgreSQL NOTIFY), so that
/// the other controllers read the change feed at once instead of at their
/// next poll.
pub const CHANGES_CHANNEL: &str = "ursa_changes";

impl Store {
    /// Opens (creating if needed) the database at `url` and runs migrations.
    /// `url` is `sqlite:PATH` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        let pool = match backend {
            Backend::Sqlite => {
                // Create the file and use WAL so readers never block the writer.
                let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
                // Touch the file through the sqlite driver, then reach it through Any.
                let conn = sqlx::SqlitePool::connect_with(opts).await?;
                conn.close().await;
                AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA busy_timeout = 5000")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = FULL")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .connect(url)
                    .await?
            }
        };
        let store = Store {
            pool,
            backend,
            url: url.into(),
        };
        store.migrate(&MIGRATOR).await?;
        Ok(store)
    }

    /// The SQLite URL for a state directory.
    pub fn sqlite_url(state_dir: &Path) -> String {
        format!("sqlite:{}", state_dir.join("ursa.db").display())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies a batch atomically and bumps the revision. A unique-name
    /// violation rolls the whole batch back and returns [`StoreError::Conflict`].
    pub async fn apply(&self, ops: &[Op]) -> Result<i64> {
        self.apply_at(ops, None).await
    }

    /// Like [`Store::apply`], but only if the store is still at revision
    /// `expected` (optimistic concurrency between controllers); otherwise
    /// nothing is written and [`StoreError::Stale`] is returned.
    pub async fn apply_at(&self, ops: &[Op], expected: Option<i64>) -> Result<i64> {
        let w = self.begin_write().await?;
        if let Some(rev) = expected {
            if w.rev() != rev {
                return Err(StoreError::Stale(rev));
            }
        }
        w.commit(ops).await
    }

    /// Moves the documents of `kinds` (the layout before a service kept
    /// them as rows of its own) into that service's tables, once: `put`
    /// stores each record in the write that deletes the documents. Returns
    /// how many moved (none after the first start).
    pub async fn move_documents<E: From<StoreError>>(
        &self,
        kinds: &[&str],
        mut put: impl AsyncFnMut(
            &mut WriteTx,
            &str,
            &serde_json::Map<String, serde_json::Value>,
        ) -> std::result::Result<(), E>,
    ) -> std::result::Result<usize, E> {
        let mut w = self.begin_write().await?;
        let mut ops = Vec::new();
        for kind in kinds {
            for d in w.documents(kind).await? {
                if let Some(r) = d.body.as_object() {
                    put(&mut w, kind, r).await?;
                }
                ops.push(Op::delete(kind, &d.id));
            }
        }
        if ops.is_empty() {
            return Ok(0);
        }
        let n = ops.len();
        w.commit(&ops).await?;
        Ok(n)
    }

    /// Begins a write: takes the revision row, which serialises writers
    /// (every controller's) until this one commits or is dropped, so what
    /// the write reads inside [`WriteTx::conn`] stays true until it
    /// commits. A dropped [`WriteTx`] rolls back.
    pub async fn begin_write(&self) -> Result<WriteTx> {
        let mut tx = self.pool.begin().await?;
        let rev: i64 =
            sqlx::query("UPDATE revision SET value = value WHERE id = 1 RETURNING value")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        Ok(WriteTx {
            tx,
            rev,
            backend: self.backend,
            touched: Vec::new(),
            marks: Vec::new(),
        })
    }

    /// Begins a read of one consistent view of the store: every statement
    /// through [`Snapshot::conn`] sees the state at [`Snapshot::rev`] (a
    /// repeatable-read transaction on PostgreSQL; on SQLite in WAL mode a
    /// read transaction is one snapshot). Writers are not held up.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        let rev = revision_in(&mut tx).await?;
        Ok(Snapshot { tx, rev })
    }

    /// Runs a service's own migrations (a folder of its crate, numbered in
    /// the service's range so they never collide with another's).
    pub async fn migrate(&self, migrator: &sqlx::migrate::Migrator) -> Result<()> {
        // Each service's migrator knows only its own versions: the others'
        // rows in _sqlx_migrations are not "missing" to it. (The fields are
        // sqlx's, public for its macro; sqlx is pinned in Cargo.lock.)
        let m = sqlx::migrate::Migrator {
            migrations: migrator.migrations.clone(),
            ignore_missing: true,
            locking: migrator.locking,
            no_tx: migrator.no_tx,
        };
        m.run(&self.pool).await?;
        Ok(())
    }

    /// The pool, for a service's reads of its own tables.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A connection for a service's reads of its own tables outside a
    /// write.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.pool.acquire().await?)
    }

    /// Wakes `wake` whenever another writer commits (each commit on
    /// PostgreSQL is announced on [`CHANGES_CHANNEL`]); a burst of commits
    /// is one wake-up, and the caller then reads the change feed. The
    /// listening connection reconnects by itself when it drops. On SQLite
    /// (one process) there is no one else to hear, and nothing is spawned.
    pub fn listen(
        &self,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.backend != Backend::Postgres {
            return None;
        }
        let url = self.url.clone();
        Some(tokio::spawn(async move {
            loop {
                let listening = async {
                    let mut l = sqlx::postgres::PgListener::connect(&url).await?;
                    l.listen(CHANGES_CHANNEL).await.map(|()| l)
                };
                let mut listener = match listening.await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not listen for other controllers' changes; polling");
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                        continue;
                    }
                };
                loop {
                    match listener.recv().await {
                        Ok(_) => wake.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "the change listener failed; listening again");
                            // Whatever was missed is in the feed.
                            wake.notify_one();
                            break;
                        }
                    }
                }
            }
        }))
    }

    /// What changed after revision `since`, as the ops that bring a copy at
    /// `since` to the store's current state (each touched document as it is
    /// now, or its deletion), with the revision they bring it to. None when
    /// the change feed no longer reaches back to `since` (pruned, or written
    /// before the feed existed): the caller reloads instead.
    pub async fn changes_since(&self, since: i64) -> Result<Option<(i64, Vec<Op>)>> {
        let mut tx = self.pool.begin().await?;
        let rev: i64 = sqlx::query("SELECT value FROM revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if rev == since {
            tx.commit().await?;
            return Ok(Some((rev, Vec::new())));
        }
        let first: Option<i64> = sqlx::query("SELECT MIN(rev) FROM changes WHERE rev > $1")
            .bind(since)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if rev < since || first != Some(since + 1) {
            tx.commit().await?;
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT c.kind, c.id, d.scope, d.name, d.body \
             FROM (SELECT DISTINCT kind, id FROM changes WHERE rev > $1 AND rev <= $2) c \
             LEFT JOIN documents d ON d.kind = c.kind AND d.id = c.id",
        )
        .bind(since)
        .bind(rev)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut ops = Vec::with_capacity(rows.len());
        for r in &rows {
            let kind: String = r.try_get(0)?;
            let id: String = r.try_get(1)?;
            let body: Option<String> = r.try_get(4)?;
            ops.push(match body {
                None => Op::Delete { kind, id },
                Some(body) => {
                    let body =
                        serde_json::from_str(&body).map_err(|source| StoreError::Corrupt {
                            kind: kind.clone(),
                            id: id.clone(),
                            source,
                        })?;
                    Op::Put(Doc {
                        scope: r.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                        name: r.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                        kind,
                        id,
                        body,
                    })
                }
            });
        }
        Ok(Some((rev, ops)))
    }

    /// Whether the lease `name` is held and has not expired at `now_ms`.
    pub async fn lease_live(&self, name: &str, now_ms: i64) -> Result<bool> {
        let row = sqlx::query("SELECT expires_at FROM leases WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>(0)? >= now_ms,
            None => false,
        })
    }

    /// Takes or renews the lease `name` for `holder` until `now_ms +
    /// ttl_ms` when it is free, expired or already `holder`'s; returns
    /// whether `holder` holds it now.
    pub async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(now_ms + ttl_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        let h: String = sqlx::query("SELECT holder FROM leases WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(h == holder)
    }

    /// Forgets the lease `name` whoever holds it: for an embedded SQLite
    /// store, which one process at a time opens (`ursa up` holds the state
    /// directory's lock), so a holder left in it died with its process.
    pub async fn clear_lease(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Gives the lease up, if `holder` has it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets the change feed older than the last `keep` revisions.
    pub async fn prune_changes(&self, keep: i64) -> Result<u64> {
        let rev = self.revision().await?;
        Ok(sqlx::query("DELETE FROM changes WHERE rev <= $1")
            .bind(rev - keep)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Every document of one kind.
    pub async fn list(&self, kind: &str) -> Result<Vec<Doc>> {
        let rows = sqlx::query(
            "SELECT kind, id, scope, name, body FROM documents WHERE kind = $1 ORDER BY id",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_doc).collect()
    }

    /// Every document, for loading the in-memory state at start.
    pub async fn load_all(&self) -> Result<(i64, Vec<Doc>)> {
        let mut tx = self.pool.begin().await?;
        let rev: i64 = sqlx::query("SELECT value FROM revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let rows =
            sqlx::query("SELECT kind, id, scope, name, body FROM documents ORDER BY kind, id")
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok((rev, rows.iter().map(row_to_doc).collect::<Result<_>>()?))
    }

    /// One document.
    pub async fn get(&self, kind: &str, id: &str) -> Result<Option<Doc>> {
        let row = sqlx::query(
            "SELECT kind, id, scope, name, body FROM documents WHERE kind = $1 AND id = $2",
        )
        .bind(kind)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row_to_doc).transpose()
    }

    /// The revision: bumped by every applied batch.
    pub async fn revision(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT value FROM revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn row_to_doc(r: &AnyRow) -> Result<Doc> {
    let kind: String = r.try_get(0)?;
    let id: String = r.try_get(1)?;
    let body: String = r.try_get(4)?;
    let body = serde_json::from_str(&body).map_err(|source| StoreError::Corrupt {
        kind: kind.clone(),
        id: id.clone(),
        source,
    })?;
    Ok(Doc {
        scope: r.try_get(2)?,
        name: r.try_get(3)?,
        kind,
        id,
        body,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation)
                || db.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}

/// The store's revision as a transaction sees it.
async fn revision_in(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<i64> {
    Ok(sqlx::query("SELECT value FROM revision WHERE id = 1")
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?)
}

/// One consistent read (see [`Store::snapshot`]); dropping it ends it.
pub struct Snapshot {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    rev: i64,
}

impl Snapshot {
    /// The revision this view shows.
    pub fn rev(&self) -> i64 {
        self.rev
    }

    /// The transaction's connection.
    pub fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    /// The ids of kind `kind` that revisions after `since` (up to this
    /// view's) touched, each once; None when the change feed no longer
    /// reaches back to `since` (pruned): the caller starts over from the
    /// rows. Costs in proportion to the revisions read, not to the store.
    pub async fn touched_since(&mut self, kind: &str, since: i64) -> Result<Option<Vec<String>>> {
        Ok(self
            .kinds_touched_since(&[kind], since)
            .await?
            .map(|v| v.into_iter().map(|(_, id)| id).collect()))
    }

    /// Like [`Snapshot::touched_since`], for several kinds at once: each
    /// (kind, id) once.
    pub async fn kinds_touched_since(
        &mut self,
        kinds: &[&str],
        since: i64,
    ) -> Result<Option<Vec<(String, String)>>> {
        if since >= self.rev {
            return Ok((since == self.rev).then(Vec::new));
        }
        let first: Option<i64> = sqlx::query("SELECT MIN(rev) FROM changes WHERE rev > $1")
            .bind(since)
            .fetch_one(&mut *self.tx)
            .await?
            .try_get(0)?;
        if first != Some(since + 1) {
            return Ok(None);
        }
        let marks: Vec<String> = (3..kinds.len() + 3).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT DISTINCT kind, id FROM changes WHERE rev > $1 AND rev <= $2 AND kind IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(since).bind(self.rev);
        for k in kinds {
            q = q.bind(*k);
        }
        let rows = q.fetch_all(&mut *self.tx).await?;
        let touched = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_>>()?;
        Ok(Some(touched))
    }
}

/// One write in progress (see [`Store::begin_write`]): a service reads
/// and writes its own tables through [`WriteTx::conn`], names the rows it
/// changed with [`WriteTx::touch`], and [`WriteTx::commit`] stores the
/// documents, bumps the revision and records everything in the change
/// feed, all in the one transaction.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    rev: i64,
    backend: Backend,
    touched: Vec<(String, String)>,
    /// How many touched entries there were at each open savepoint.
    marks: Vec<usize>,
}

impl WriteTx {
    /// The revision the store was at when this write began.
    pub fn rev(&self) -> i64 {
        self.rev
    }

    /// The transaction's connection.
    pub fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    /// Records that the row `id` of a service's table `kind` changed, so
    /// the commit bumps the revision and other controllers hear of it.
    pub fn touch(&mut self, kind: &str, id: &str) {
        self.touched.push((kind.to_string(), id.to_string()));
    }

    /// The documents of a kind as this write sees them (a service moving
    /// its documents into its own tables reads them here, so that two
    /// controllers starting at once move them once).
    pub async fn documents(&mut self, kind: &str) -> Result<Vec<Doc>> {
        let rows = sqlx::query(
            "SELECT kind, id, scope, name, body FROM documents WHERE kind = $1 ORDER BY id",
        )
        .bind(kind)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(row_to_doc).collect()
    }

    /// Whether anything was written through [`WriteTx::touch`].
    pub fn is_touched(&self) -> bool {
        !self.touched.is_empty()
    }

    /// Stores `ops` and commits; returns the new revision (the old one
    /// when nothing at all was written).
    pub async fn commit(mut self, ops: &[Op]) -> Result<i64> {
        self.stage(ops).await?;
        self.finish().await
    }

    /// Opens a savepoint: a later [`WriteTx::rollback_to_savepoint`] undoes
    /// what was written after it and keeps what was written before (the
    /// earlier writes of a group commit).
    pub async fn savepoint(&mut self) -> Result<()> {
        sqlx::query("SAVEPOINT w").execute(&mut *self.tx).await?;
        self.marks.push(self.touched.len());
        Ok(())
    }

    /// Undoes everything since the last [`WriteTx::savepoint`].
    pub async fn rollback_to_savepoint(&mut self) -> Result<()> {
        sqlx::query("ROLLBACK TO SAVEPOINT w")
            .execute(&mut *self.tx)
            .await?;
        if let Some(n) = self.marks.pop() {
            self.touched.truncate(n);
        }
        Ok(())
    }

    /// Stores `ops` in the transaction without committing (a unique-name
    /// violation is [`StoreError::Conflict`]); [`WriteTx::finish`] commits
    /// them with everything else the transaction wrote.
    pub async fn stage(&mut self, ops: &[Op]) -> Result<()> {
        for op in ops {
            match op {
                Op::Put(d) => {
                    let body = d.body.to_string();
                    let r = sqlx::query(
                        "INSERT INTO documents (kind, id, scope, name, body) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (kind, id) DO UPDATE SET scope = excluded.scope, name = excluded.name, body = excluded.body",
                    )
                    .bind(&d.kind)
                    .bind(&d.id)
                    .bind(&d.scope)
                    .bind(&d.name)
                    .bind(body)
                    .execute(&mut *self.tx)
                    .await;
                    if let Err(e) = r {
                        if is_unique_violation(&e) {
                            return Err(StoreError::Conflict(format!(
                                "{} named {:?} already exists",
                                d.kind, d.name
                            )));
                        }
                        return Err(e.into());
                    }
                    self.touched.push((d.kind.clone(), d.id.clone()));
                }
                Op::Delete { kind, id } => {
                    sqlx::query("DELETE FROM documents WHERE kind = $1 AND id = $2")
                        .bind(kind)
                        .bind(id)
                        .execute(&mut *self.tx)
                        .await?;
                    self.touched.push((kind.clone(), id.clone()));
                }
            }
        }
        Ok(())
    }

    /// Commits what the transaction wrote: bumps the revision once and
    /// records every touched row and document under it in the change feed
    /// (a few rows per statement). Returns the new revision, or the old one
    /// when nothing was written (the transaction is then rolled back).
    pub async fn finish(mut self) -> Result<i64> {
        if self.touched.is_empty() {
            self.tx.rollback().await?;
            return Ok(self.rev);
        }
        let tx = &mut self.tx;
        sqlx::query("UPDATE revision SET value = value + 1 WHERE id = 1")
            .execute(&mut **tx)
            .await?;
        let rev = self.rev + 1;
        let mut changed: Vec<&(String, String)> = self.touched.iter().collect();
        changed.sort();
        changed.dedup();
        for chunk in changed.chunks(100) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("($1, ${}, ${})", 2 * i + 2, 2 * i + 3))
                .collect();
            let sql = format!(
                "INSERT INTO changes (rev, kind, id) VALUES {} ON CONFLICT DO NOTHING",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql).persistent(chunk.len() == 1).bind(rev);
            for (kind, id) in chunk {
                q = q.bind(kind.as_str()).bind(id.as_str());
            }
            q.execute(&mut **tx).await?;
        }
        if self.backend == Backend::Postgres {
            // Delivered at commit, to every controller listening.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANGES_CHANNEL)
                .bind(rev.to_string())
                .execute(&mut **tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(rev)
    }
}

/// The JSON records in column `col` of a service table's rows (its
/// `body`), each a JSON object.
pub fn json_records(
    rows: &[AnyRow],
    col: usize,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    rows.iter()
        .map(|r| {
            let body: String = r.try_get(col)?;
            serde_json::from_str(&body).map_err(|source| StoreError::Corrupt {
                kind: "row".into(),
                id: String::new(),
                source,
            })
        })
        .collect()
}

/// Whether a database error is a unique-constraint violation.
pub fn unique_violation(e: &sqlx::Error) -> bool {
    is_unique_violation(e)
}

#[cfg(test)]
mod tests {
    //! The same contract checked on SQLite and, when
    //! `URSA_TEST_POSTGRES_URL` is set (CI sets it), on PostgreSQL.
    use super::*;
    use serde_json::json;

    async fn backends() -> Vec<(String, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let mut v = vec![(Store::sqlite_url(dir.path()), dir)];
        match std::env::var("URSA_TEST_POSTGRES_URL") {
            Ok(u) if !u.is_empty() => v.push((u, tempfile::tempdir().unwrap())),
            _ => eprintln!("SKIP postgres store tests: URSA_TEST_POSTGRES_URL is not set"),
        }
        v
    }

    /// A kind unique to this test run, so runs sharing a database never meet.
    fn kind(name: &str) -> String {
        format!("test-{name}-{}", uuid::Uuid::new_v4().simple())
    }

    #[tokio::test]
    async fn put_get_list_delete_on_every_backend() {
        for (url, _dir) in backends().await {
            let s = Store::open(&url).await.unwrap();
            let k = kind("crud");
            let r0 = s.revision().await.unwrap();
            let r1 = s
                .apply(&[
                    Op::put(&k, "a", "d1", "alpha", json!({"n": 1})),
                    Op::put(
                        &k,
                        "b",
                        "d1",
                        "beta",
                        json!({"n": 2, "s": "x'); DROP TABLE documents;--"}),
                    ),
                ])
                .await
                .unwrap();
            assert!(r1 > r0, "{url}: revision moves");
            let all = s.list(&k).await.unwrap();
            assert_eq!(all.len(), 2, "{url}");
            assert_eq!(all[1].body["s"], "x'); DROP TABLE documents;--");
            s.apply(&[Op::put(&k, "a", "d1", "alpha", json!({"n": 3}))])
                .await
                .unwrap();
            assert_eq!(
                s.get(&k, "a").await.unwrap().unwrap().body["n"],
                3,
                "{url}: replace"
            );
            s.apply(&[Op::delete(&k, "a"), Op::delete(&k, "missing")])
                .await
                .unwrap();
            assert!(s.get(&k, "a").await.unwrap().is_none(), "{url}");
            assert_eq!(s.list(&k).await.unwrap().len(), 1);
            s.close().await;
        }
    }

    #[tokio::test]
    async fn the_change_feed_gives_each_touched_document_as_it_is_now() {
        for (url, _dir) in backends().await {
            let s = Store::open(&url).await.unwrap();
            let k = kind("feed");
            let r0 = s
                .apply(&[Op::put(&k, "a", "", "a", json!({"n": 1}))])
                .await
                .unwrap();
            s.apply(&[Op::put(&k, "b", "", "b", json!({"n": 2}))])
                .await
                .unwrap();
            s.apply(&[
                Op::put(&k, "a", "", "a", json!({"n": 3})),
                Op::delete(&k, "b"),
            ])
            .await
            .unwrap();
            let (now, ops) = s
                .changes_since(r0 - 1)
                .await
                .unwrap()
                .expect("the feed reaches back");
            assert!(now >= r0 + 2, "{url}");
            let mine: Vec<&Op> = ops
                .iter()
                .filter(|o| match o {
                    Op::Put(d) => d.kind == k,
                    Op::Delete { kind, .. } => *kind == k,
                })
                .collect();
            assert_eq!(mine.len(), 2, "{url}: one op per document: {mine:?}");
            assert!(
                mine.iter()
                    .any(|o| matches!(o, Op::Put(d) if d.id == "a" && d.body["n"] == 3)),
                "{url}: a as it is now"
            );
            assert!(
                mine.iter()
                    .any(|o| matches!(o, Op::Delete { id, .. } if id == "b")),
                "{url}: b deleted"
            );
            if s.backend() == Backend::Sqlite {
                // (PostgreSQL is shared with other tests: its feed moves.)
                assert_eq!(s.changes_since(now).await.unwrap(), Some((now, vec![])));
                s.prune_changes(0).await.unwrap();
                assert_eq!(
                    s.changes_since(r0 - 1).await.unwrap(),
                    None,
                    "pruned past: reload"
                );
            }
            s.close().await;
        }
    }

    #[tokio::test]
    async fn unique_names_conflict_and_roll_back_the_batch() {
        for (url, _dir) in backends().await {
            let s = Store::open(&url).await.unwrap();
            let k = kind("unique");
            s.apply(&[Op::put(&k, "a", "d1", "same", json!({}))])
                .await
                .unwrap();
            let err = s
                .apply(&[
                    Op::put(&k, "c", "d1", "other", json!({})),
                    Op::put(&k, "b", "d1", "same", json!({})),
                ])
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{url}: {err}");
            assert!(
                s.get(&k, "c").await.unwrap().is_none(),
                "{url}: whole batch rolled back"
            );
            // Same name in another scope is fine.
            s.apply(&[Op::put(&k, "b", "d2", "same", json!({}))])
                .await
                .unwrap();
            s.close().await;
        }
    }

    #[tokio::test]
    async fn data_survives_reopen_and_migrations_rerun() {
        for (url, _dir) in backends().await {
            let k = kind("reopen");
            {
                let s = Store::open(&url).await.unwrap();
                s.apply(&[Op::put(&k, "x", "", "x", json!({"kept": true}))])
                    .await
                    .unwrap();
                s.close().await;
            }
            let s = Store::open(&url).await.unwrap();
            let (_, docs) = s.load_all().await.unwrap();
            assert!(
                docs.iter().any(|d| d.kind == k && d.body["kept"] == true),
                "{url}"
            );
            s.close().await;
        }
    }

    #[tokio::test]
    async fn a_stale_writer_writes_nothing() {
        for (url, _dir) in backends().await {
            let s = Store::open(&url).await.unwrap();
            let k = kind("stale");
            // Other tests share a PostgreSQL database and move its revision
            // too: retry until this writer wins one round.
            let mut won = None;
            for _ in 0..100 {
                let rev = s.revision().await.unwrap();
                match s
                    .apply_at(&[Op::put(&k, "a", "", "a", json!({}))], Some(rev))
                    .await
                {
                    Ok(r) => {
                        won = Some((rev, r));
                        break;
                    }
                    Err(StoreError::Stale(_)) => continue,
                    Err(e) => panic!("{url}: {e}"),
                }
            }
            let (rev, r1) = won.expect("a write went through");
            assert_eq!(r1, rev + 1, "{url}");
            let e = s
                .apply_at(&[Op::put(&k, "b", "", "b", json!({}))], Some(rev))
                .await
                .unwrap_err();
            assert!(matches!(e, StoreError::Stale(_)), "{url}: {e}");
            assert!(s.get(&k, "b").await.unwrap().is_none(), "{url}");
            s.close().await;
        }
    }

    #[tokio::test]
    async fn bad_url_is_a_clear_error() {
        let e = Store::open("mysql://nope").await.unwrap_err();
        assert!(matches!(e, StoreError::BadUrl(_)));
    }
}
