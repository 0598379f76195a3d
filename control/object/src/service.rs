//! Objects the other services keep in object storage (image data; volume
//! backups later): stored, read and deleted by name, in accounts no API
//! caller can address (an API account is always `AUTH_<project>`; these
//! are `ursa:<service>`). They get everything a Swift object gets: bytes in
//! the blob store (directory or S3, so every controller reads them), the
//! row written only once the bytes are durable, counts kept with the row.

use crate::blob::{BlobError, BlobStream, Written};
use crate::table::{self, Object, Stored};
use crate::{time, Objects};
use bytes::Bytes;
use futures_util::Stream;

/// Why a service object could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Table(#[from] table::TableError),
    #[error("blob store: {0}")]
    Io(#[from] std::io::Error),
}

/// A stored object, for reading.
pub struct Found {
    pub size: u64,
    /// The MD5 of the bytes, lower-case hex.
    pub etag: String,
    pub bytes: BlobStream,
}

impl Found {
    /// All its bytes, for the small objects read whole (manifests, chunks).
    pub async fn read_all(self) -> std::io::Result<Vec<u8>> {
        use futures_util::TryStreamExt;
        self.bytes
            .try_fold(
                Vec::with_capacity(self.size as usize),
                |mut acc, c| async move {
                    acc.extend_from_slice(&c);
                    Ok(acc)
                },
            )
            .await
    }
}

/// The largest service object (as Swift's largest object is the API's).
pub const MAX: u64 = 1 << 40;

impl Objects {
    /// Makes `container` in service account `account` if it is not there.
    pub async fn ensure_container(
        &self,
        account: &str,
        container: &str,
    ) -> Result<(), ServiceError> {
        if table::container(&self.store, account, container)
            .await?
            .is_none()
        {
            table::put_container(&self.store, account, container, time::now(), |_| {
                Ok::<(), std::convert::Infallible>(())
            })
            .await?
            .unwrap_or_else(|never| match never {});
        }
        Ok(())
    }

    /// Streams `body` into object `name` (replacing one of that name).
    pub async fn put_named<S, E>(
        &self,
        account: &str,
        container: &str,
        name: &str,
        body: S,
    ) -> Result<Written, ServiceError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let w = self.blobs.put(body, None, MAX).await?;
        let obj = Object {
            name: name.to_string(),
            ts: time::now(),
            size: w.size as i64,
            etag: w.md5.clone(),
            content_type: "application/octet-stream".into(),
            blob: w.id.clone(),
            inline: w.inline.clone(),
            meta: Default::default(),
            delete_at: None,
        };
        let mut stored = self.insert(account, container, &obj).await;
        if matches!(stored, Ok(Stored::NoContainer)) {
            stored = match self.ensure_container(account, container).await {
                Ok(()) => self.insert(account, container, &obj).await,
                Err(e) => Err(e),
            };
        }
        match stored {
            Ok(Stored::Done { replaced }) => {
                if let Some(b) = replaced {
                    self.blobs.delete(&b).await;
                    table::forget_garbage(&self.store, &b).await?;
                }
                Ok(w)
            }
            Ok(Stored::NoContainer) => {
                self.blobs.delete(&w.id).await;
                Err(ServiceError::Io(std::io::Error::other(format!(
                    "container {account}/{container} is gone"
                ))))
            }
            Ok(Stored::Refused(never)) => match never {},
            Err(e) => {
                self.blobs.delete(&w.id).await;
                Err(e)
            }
        }
    }

    async fn insert(
        &self,
        account: &str,
        container: &str,
        obj: &Object,
    ) -> Result<Stored<std::convert::Infallible>, ServiceError> {
        Ok(table::put_object(&self.store, account, container, obj, |_| Ok(())).await?)
    }

    /// Object `name`'s bytes, if it exists.
    pub async fn get_named(
        &self,
        account: &str,
        container: &str,
        name: &str,
    ) -> Result<Option<Found>, ServiceError> {
        let Some(o) = table::object(&self.store, account, container, name).await? else {
            return Ok(None);
        };
        let size = o.size.max(0) as u64;
        Ok(Some(Found {
            size,
            etag: o.etag,
            bytes: self.blobs.read(&o.blob, 0, size).await?,
        }))
    }

    /// Deletes object `name`; whether it existed.
    pub async fn delete_named(
        &self,
        account: &str,
        container: &str,
        name: &str,
    ) -> Result<bool, ServiceError> {
        match table::delete_object(&self.store, account, container, name, None).await? {
            Some(o) => {
                self.blobs.delete(&o.blob).await;
                table::forget_garbage(&self.store, &o.blob).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
