//! Writes, and how concurrent ones share a commit.
//!
//! Every write of the control plane (any service's) holds this
//! controller's writer lock and the store's revision row from its first
//! read to its commit, so it decides against what is stored. That makes
//! writes take turns, and a turn that ends in its own commit pays for the
//! revision row, the change feed and a flush to disk every time.
//!
//! Group commit: when a write that changed only service rows (no
//! documents, so the in-memory model is untouched) finishes while other
//! writes wait for the lock, it does not commit. It hands its open
//! transaction to the next write, which continues it after a savepoint,
//! and waits. The group is committed, once, by the first write that has
//! nobody behind it, that writes documents, or that fills the group; or
//! by a closer task queued behind the writes that were waiting when the
//! group began, so a group never outlives them. Every write of the group
//! answers only after that commit, with its outcome: a write that fails
//! is rolled back to its savepoint and the others go on; a commit that
//! fails fails them all (none of them was answered before).

use crate::Identity;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{watch, OwnedMutexGuard};
use ursa_core::error::{Error, Result};
use ursa_core::store::{Op, WriteTx};

/// The most writes one commit holds.
const MAX_GROUP: usize = 64;

/// What the writer lock guards: the revision the model is at, and the
/// transaction of a group commit in progress.
pub(crate) struct Slot {
    pub(crate) rev: i64,
    open: Option<Group>,
}

impl Slot {
    pub(crate) fn new(rev: i64) -> Slot {
        Slot { rev, open: None }
    }
}

/// The outcome of a group's commit, as every member hears it.
type Outcome = Option<std::result::Result<i64, String>>;

/// A group commit in progress: its transaction, how many writes it holds
/// and where they hear its outcome.
struct Group {
    tx: WriteTx,
    members: usize,
    done: Arc<watch::Sender<Outcome>>,
}

/// A write in progress (see [`Identity::write`]).
pub struct Writer<'a> {
    identity: &'a Identity,
    slot: Option<OwnedMutexGuard<Slot>>,
    tx: Option<WriteTx>,
    /// The group this write continues (it began after a savepoint), or
    /// None when it began the transaction.
    group: Option<(usize, Arc<watch::Sender<Outcome>>)>,
}

/// Counts a write waiting for the lock while it waits (also when the wait
/// is abandoned).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Identity {
    /// Begins a write: this controller's writer lock, then the store's
    /// revision row (which other controllers' writes wait for), then the
    /// model brought up to what they committed before. The [`Writer`] reads
    /// the model and the service tables as they are until it commits or is
    /// dropped (which writes nothing). When a group commit is open (see the
    /// module), the write continues its transaction.
    pub async fn write(&self) -> Result<Writer<'_>> {
        let inner = &self.inner;
        inner.waiting.fetch_add(1, Ordering::SeqCst);
        let waiting = Waiting(&inner.waiting);
        let mut slot = inner.writer.clone().lock_owned().await;
        drop(waiting);
        if let Some(mut g) = slot.open.take() {
            if let Err(e) = g.tx.savepoint().await {
                g.done.send_replace(Some(Err(e.to_string())));
                return Err(e.into());
            }
            return Ok(Writer {
                identity: self,
                slot: Some(slot),
                tx: Some(g.tx),
                group: Some((g.members, g.done)),
            });
        }
        let tx = inner.store.begin_write().await?;
        if tx.rev() != slot.rev {
            slot.rev = self.catch_up(slot.rev).await?;
        }
        Ok(Writer {
            identity: self,
            slot: Some(slot),
            tx: Some(tx),
            group: None,
        })
    }

    /// This controller's writer lock with no group commit open (one that
    /// was is committed first).
    pub(crate) async fn settled(&self) -> OwnedMutexGuard<Slot> {
        settle(self.inner.writer.clone()).await
    }
}

/// Takes the writer lock and commits the group open in it, if any.
async fn settle(lock: Arc<tokio::sync::Mutex<Slot>>) -> OwnedMutexGuard<Slot> {
    let mut slot = lock.lock_owned().await;
    if let Some(g) = slot.open.take() {
        finish(&mut slot, g.tx, &g.done).await.ok();
    }
    slot
}

/// Commits a group's transaction and tells its members the outcome.
async fn finish(
    slot: &mut Slot,
    tx: WriteTx,
    done: &watch::Sender<Outcome>,
) -> std::result::Result<i64, String> {
    let r = tx.finish().await.map_err(|e| e.to_string());
    if let Ok(rev) = r {
        slot.rev = rev;
    }
    done.send_replace(Some(r.clone()));
    r
}

/// Waits for the commit of the group a write handed its work to.
async fn outcome(mut rx: watch::Receiver<Outcome>) -> Result<()> {
    let got = rx
        .wait_for(Option::is_some)
        .await
        .map_err(|_| Error::Internal("the write's commit was abandoned".into()))?;
    match got.as_ref() {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(Error::Internal(format!("the commit failed: {e}"))),
        None => unreachable!("waited for an outcome"),
    }
}

impl Writer<'_> {
    /// The model as this write sees it (do not hold it across an await).
    pub fn model(&self) -> std::sync::RwLockReadGuard<'_, crate::model::Model> {
        self.identity.model()
    }

    /// The store transaction, for a service's reads and writes of its own
    /// tables.
    pub fn tx(&mut self) -> &mut WriteTx {
        self.tx.as_mut().expect("an open write has its transaction")
    }

    /// Makes `ops` (and the rows written through [`Writer::tx`]) durable,
    /// then applies `ops` to the model; returns once they are committed
    /// (see the module for when that commit is shared).
    pub async fn commit(mut self, ops: &[Op]) -> Result<()> {
        // On an error here the write is dropped, which undoes it.
        self.tx().stage(ops).await?;
        let members = self.group.as_ref().map_or(1, |(n, _)| n + 1);
        let waiting = self.identity.inner.waiting.load(Ordering::SeqCst);
        let tx = self.tx.take().expect("an open write has its transaction");
        let mut slot = self.slot.take().expect("an open write holds the lock");
        let group = self.group.take();
        if ops.is_empty() && tx.is_touched() && waiting > 0 && members < MAX_GROUP {
            let done = match group {
                Some((_, done)) => done,
                None => {
                    // A new group: its closer queues behind the writes
                    // waiting now.
                    let done = Arc::new(watch::channel(None).0);
                    tokio::spawn(settle(self.identity.inner.writer.clone()));
                    done
                }
            };
            let rx = done.subscribe();
            slot.open = Some(Group { tx, members, done });
            drop(slot);
            return outcome(rx).await;
        }
        match &group {
            Some((_, done)) => {
                finish(&mut slot, tx, done)
                    .await
                    .map_err(|e| Error::Internal(format!("the commit failed: {e}")))?;
            }
            None => slot.rev = tx.finish().await?,
        }
        let mut m = self.identity.inner.model.write().expect("model lock");
        for op in ops {
            m.apply(op);
        }
        Ok(())
    }
}

impl Drop for Writer<'_> {
    /// A write dropped before its commit writes nothing: the transaction
    /// rolls back, or, when the write continued a group, rolls back to its
    /// savepoint and goes back to the group (asynchronously, still holding
    /// the lock).
    fn drop(&mut self) {
        let (Some(mut tx), Some(mut slot)) = (self.tx.take(), self.slot.take()) else {
            return;
        };
        let Some((members, done)) = self.group.take() else {
            return;
        };
        tokio::spawn(async move {
            match tx.rollback_to_savepoint().await {
                Ok(()) => slot.open = Some(Group { tx, members, done }),
                Err(e) => {
                    done.send_replace(Some(Err(e.to_string())));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::password::Cost;
    use crate::token::{KeyRepo, TokenCodec};
    use crate::{Identity, Settings};
    use sqlx::Row;
    use std::time::Duration;
    use ursa_core::store::{Op, Store};

    /// Forty writes at once, every seventh of which fails after writing
    /// its row, one of which writes a document: the others' rows are all
    /// stored, the failed ones' are not, they shared commits (fewer
    /// revisions than writes) and every row is in the change feed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        sqlx::query("CREATE TABLE gc_rows (id TEXT PRIMARY KEY)")
            .execute(store.pool())
            .await
            .unwrap();
        let codec = TokenCodec::open(KeyRepo::new(dir.path().join("keys"))).unwrap();
        let settings = Settings {
            password_cost: Cost {
                memory_kib: 1024,
                iterations: 1,
            },
            ..Default::default()
        };
        let id = Identity::open(store.clone(), codec, settings)
            .await
            .unwrap();
        let rev0 = store.revision().await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let mut w = id.write().await.unwrap();
                let row = format!("r{i}");
                sqlx::query("INSERT INTO gc_rows (id) VALUES ($1)")
                    .bind(&row)
                    .execute(w.tx().conn())
                    .await
                    .unwrap();
                w.tx().touch("gc_rows", &row);
                tokio::time::sleep(Duration::from_millis(2)).await;
                if i % 7 == 3 {
                    drop(w);
                    return false;
                }
                let ops = if i == 20 {
                    vec![Op::put("gc_doc", "d20", "", "d20", serde_json::json!({}))]
                } else {
                    Vec::new()
                };
                w.commit(&ops).await.unwrap();
                true
            }));
        }
        let mut committed = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            if t.await.unwrap() {
                committed.push(format!("r{i}"));
            }
        }
        let rows: Vec<String> = sqlx::query("SELECT id FROM gc_rows ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        committed.sort();
        assert_eq!(rows, committed, "exactly the committed writes' rows");
        let revs = store.revision().await.unwrap() - rev0;
        assert!(
            revs >= 1 && (revs as usize) < committed.len(),
            "{revs} commits for {} writes",
            committed.len()
        );
        let fed: i64 =
            sqlx::query("SELECT COUNT(*) FROM changes WHERE kind = 'gc_rows' AND rev > $1")
                .bind(rev0)
                .fetch_one(store.pool())
                .await
                .unwrap()
                .get(0);
        assert_eq!(fed as usize, committed.len());
        assert!(store.get("gc_doc", "d20").await.unwrap().is_some());
        // The lock is free and no group is left open.
        let mut w = id.write().await.unwrap();
        w.tx().touch("gc_rows", "none");
        w.commit(&[]).await.unwrap();
    }
}
