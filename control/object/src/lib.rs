//! The object storage service: OpenStack Swift's API v1 at
//! `/object/v1/AUTH_<project_id>`, with Keystone tokens as Swift's
//! keystoneauth middleware sees them.
//!
//! Names, metadata and listings are rows of the control plane's database
//! ([`table`]: `obj_accounts`, `obj_containers`, `obj_objects`), read by
//! indexed queries, so a listing of a container of millions of objects
//! costs what one page costs. Object bytes live in a [`blob::Blobs`] store
//! (`--blob-store`): a directory under the state dir (written to a
//! temporary name, fsynced and renamed) or an S3 bucket (Garage, MinIO,
//! AWS), durable before the row that names them commits, so no listing
//! ever shows an object whose bytes are not durable. Bodies up to 32 KiB
//! are kept inline, in the database, written in the transaction of their
//! row. Rendered container listings are cached per controller while the
//! container's revision is unchanged ([`listing_cache`]). A container's
//! object and byte counts change in the same transaction as the object
//! row; an account's are the sum of its containers'.
//!
//! Object PUTs commit in groups ([`batch`]: one writer task, one
//! transaction and one commit for every PUT waiting). Two duties run in
//! every controller: the expirer (`X-Delete-At`) and container sync
//! ([`sync`]), each acting only on rows that name their work.
//!
//! The HTTP side ([`api`]) parses each request once into a typed
//! [`api::Target`] and answers with Swift's status codes, headers and
//! bodies; [`access`] decides who may do what (owner, reader, container
//! ACLs, anonymous referrer grants). Several controllers serve one object
//! store when they share the rows (PostgreSQL) and the bytes (S3).

pub mod access;
pub mod api;
pub mod batch;
pub mod blob;
pub mod constraints;
pub mod listing;
pub mod listing_cache;
pub mod service;
pub mod sync;
pub mod table;
pub mod time;

use std::sync::Arc;
use ursa_core::store::Store;
use ursa_identity::Identity;

/// The object service's state: the store its tables live in and the blob
/// store its bytes live in. Cheap to clone.
#[derive(Clone)]
pub struct Objects {
    pub store: Store,
    pub blobs: Arc<blob::Blobs>,
    /// Object PUTs, committed in groups.
    pub puts: batch::PutQueue,
    /// Rendered container listings ([`listing_cache`]).
    pub listings: Arc<listing_cache::ListingCache>,
}

impl Objects {
    /// Opens the service: runs its migrations and removes what a crash
    /// left half-done (blobs dropped by a committed change but not yet
    /// deleted, uploads that never finished).
    pub async fn open(store: Store, blobs: blob::Blobs) -> Result<Objects, table::TableError> {
        table::migrate(&store).await?;
        blobs.attach(store.clone());
        let o = Objects {
            puts: batch::PutQueue::start(store.clone()),
            store,
            blobs: Arc::new(blobs),
            listings: Default::default(),
        };
        o.collect_garbage().await?;
        Ok(o)
    }

    /// Deletes the blobs no row names any more.
    pub async fn collect_garbage(&self) -> Result<usize, table::TableError> {
        let blobs = table::garbage(&self.store).await?;
        for b in &blobs {
            self.blobs.delete(b).await;
            table::forget_garbage(&self.store, b).await?;
        }
        Ok(blobs.len())
    }
}

/// Everything the object API's handlers need.
#[derive(Clone)]
pub struct AppState {
    pub identity: Identity,
    pub objects: Objects,
}

impl Objects {
    /// Every few seconds: syncs containers ([`Objects::sync_once`]) and
    /// removes objects past their `X-Delete-At`, as Swift's object expirer
    /// does (reads already treat them as gone). On
    /// several controllers each may run it: a delete names the expiry it
    /// acts on, so only one of them deletes an object, and never one a
    /// newer write gave another expiry.
    pub fn spawn_expirer(&self) -> tokio::task::JoinHandle<()> {
        let o = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                if let Err(e) = o.expire_once().await {
                    tracing::warn!(error = %e, "object expirer");
                }
                if let Err(e) = o.sync_once().await {
                    tracing::warn!(error = %e, "container sync");
                }
            }
        })
    }

    /// One round of the expirer; how many objects it removed.
    pub async fn expire_once(&self) -> Result<usize, table::TableError> {
        let due = table::expired(&self.store, time::now_secs(), 1000).await?;
        let mut n = 0;
        for (account, container, name, at) in due {
            if let Some(o) =
                table::delete_object(&self.store, &account, &container, &name, Some(at)).await?
            {
                self.blobs.delete(&o.blob).await;
                table::forget_garbage(&self.store, &o.blob).await?;
                n += 1;
            }
        }
        self.collect_garbage().await?;
        Ok(n)
    }
}
