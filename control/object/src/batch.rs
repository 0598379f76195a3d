//! Group commit for object PUTs. Each PUT's row change is a few
//! statements, but its commit is an fsync of the database's log; under
//! load most of a PUT's time would be that commit, one at a time. So PUTs
//! queue here, and one writer task takes every PUT waiting, runs them in
//! one transaction and commits once, then answers each. A refused PUT
//! (its checks failed, or its container is gone) has changed nothing and
//! does not hold the others back; a database error fails the whole group
//! (none of it committed), each caller seeing the error. The bytes are
//! durable before a PUT queues, so a row never names bytes that are not.

use crate::table::{self, Object, Stored, TableError, WriteView};
use tokio::sync::{mpsc, oneshot};
use ursa_core::store::Store;

/// Why a PUT's checks refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `If-None-Match: *` and the object exists.
    Exists,
    /// Over the container's quota.
    OverQuota,
}

/// A PUT's checks, run inside the transaction.
pub type Check = Box<dyn FnOnce(&WriteView) -> Result<(), Refusal> + Send>;

struct Job {
    account: String,
    container: String,
    obj: Object,
    check: Check,
    reply: oneshot::Sender<Result<Stored<Refusal>, String>>,
}

/// The most PUTs one commit takes.
const MAX_GROUP: usize = 256;

/// The queue of PUTs waiting for the writer. Cheap to clone.
#[derive(Clone)]
pub struct PutQueue {
    tx: mpsc::Sender<Job>,
}

impl PutQueue {
    /// Starts the writer task.
    pub fn start(store: Store) -> PutQueue {
        let (tx, mut rx) = mpsc::channel::<Job>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                run(&store, jobs).await;
            }
        });
        PutQueue { tx }
    }

    /// Stores `obj` in `container` (as [`table::put_object`]), committed
    /// with the other PUTs waiting.
    pub async fn put(
        &self,
        account: &str,
        container: &str,
        obj: Object,
        check: Check,
    ) -> Result<Stored<Refusal>, TableError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            account: account.to_string(),
            container: container.to_string(),
            obj,
            check,
            reply,
        };
        self.tx
            .send(job)
            .await
            .map_err(|_| TableError::Batch("the writer stopped".into()))?;
        answer
            .await
            .map_err(|_| TableError::Batch("the writer stopped".into()))?
            .map_err(TableError::Batch)
    }
}

async fn run(store: &Store, jobs: Vec<Job>) {
    let mut tx = match store.pool().begin().await {
        Ok(t) => t,
        Err(e) => {
            for j in jobs {
                let _ = j.reply.send(Err(e.to_string()));
            }
            return;
        }
    };
    let mut done = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    while let Some(j) = jobs.next() {
        match table::put_object_in(&mut tx, &j.account, &j.container, &j.obj, j.check).await {
            Ok(stored) => done.push((j.reply, stored)),
            Err(e) => {
                let why = e.to_string();
                let _ = j.reply.send(Err(why.clone()));
                for (reply, _) in done {
                    let _ = reply.send(Err(why.clone()));
                }
                for rest in jobs {
                    let _ = rest.reply.send(Err(why.clone()));
                }
                return;
            }
        }
    }
    match tx.commit().await {
        Ok(()) => {
            for (reply, stored) in done {
                let _ = reply.send(Ok(stored));
            }
        }
        Err(e) => {
            for (reply, _) in done {
                let _ = reply.send(Err(e.to_string()));
            }
        }
    }
}
