//! Where object bytes live: immutable blobs named by a random id. A blob is
//! written under `tmp/`, fsynced, and renamed into place (its directory
//! fsynced too) before any row names it; a row that stops naming it hands
//! it to the garbage list, and it is deleted after that commit. An object
//! of no bytes has no blob (id `""`).
//!
//! The bytes stream through at constant memory whatever the object's size,
//! and their MD5 (Swift's ETag) is computed on the way.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Why a blob could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the object is larger than {0} bytes")]
    TooLarge(u64),
    /// The body ended before its `Content-Length`, or the client went away.
    #[error("the client sent {got} of {expected} bytes")]
    Short { got: u64, expected: u64 },
    #[error("the body has more bytes than its Content-Length")]
    Long,
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("blob store: {0}")]
    Io(#[from] io::Error),
}

/// A stored blob.
#[derive(Debug, Clone)]
pub struct Written {
    pub id: String,
    pub size: u64,
    /// Lower-case hex MD5 of the bytes.
    pub md5: String,
}

/// A directory of blobs: `<root>/<2 hex>/<id>`, uploads under `<root>/tmp`.
#[derive(Debug)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    /// Opens (creating) the store at `root`; uploads a crash interrupted
    /// are removed.
    pub fn open(root: &Path) -> io::Result<Blobs> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        for e in std::fs::read_dir(&tmp)?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        Ok(Blobs {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        let shard = id.get(..2).unwrap_or("00");
        self.root.join(shard).join(id)
    }

    /// Stores a body. `expected` is its `Content-Length` when the client
    /// gave one; `max` the largest object accepted.
    pub async fn put<S, E>(
        &self,
        mut body: S,
        expected: Option<u64>,
        max: u64,
    ) -> Result<Written, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if expected.is_some_and(|n| n > max) {
            return Err(BlobError::TooLarge(max));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let tmp = self.root.join("tmp").join(&id);
        let mut md5 = Md5::new();
        let mut size = 0u64;
        let mut file: Option<tokio::io::BufWriter<tokio::fs::File>> = None;
        let result: Result<(), BlobError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > max {
                    return Err(BlobError::TooLarge(max));
                }
                if expected.is_some_and(|n| size > n) {
                    return Err(BlobError::Long);
                }
                md5.update(&chunk);
                if file.is_none() {
                    let f = tokio::fs::File::create(&tmp).await?;
                    file = Some(tokio::io::BufWriter::with_capacity(256 * 1024, f));
                }
                if let Some(f) = file.as_mut() {
                    f.write_all(&chunk).await?;
                }
            }
            if let Some(n) = expected {
                if size < n {
                    return Err(BlobError::Short {
                        got: size,
                        expected: n,
                    });
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            drop(file);
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let md5 = hex::encode(md5.finalize());
        let Some(mut f) = file else {
            return Ok(Written {
                id: String::new(),
                size: 0,
                md5,
            });
        };
        let done: io::Result<()> = async {
            f.flush().await?;
            f.get_ref().sync_all().await?;
            drop(f);
            let dest = self.path(&id);
            let dir = dest
                .parent()
                .expect("a blob path has a parent")
                .to_path_buf();
            if tokio::fs::metadata(&dir).await.is_err() {
                tokio::fs::create_dir_all(&dir).await?;
            }
            tokio::fs::rename(&tmp, &dest).await?;
            tokio::fs::File::open(&dir).await?.sync_all().await?;
            Ok(())
        }
        .await;
        if let Err(e) = done {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e.into());
        }
        Ok(Written { id, size, md5 })
    }

    /// A new blob with the same bytes as `id` (a server-side copy): a hard
    /// link, since blobs never change.
    pub async fn duplicate(&self, id: &str) -> io::Result<String> {
        if id.is_empty() {
            return Ok(String::new());
        }
        let new = uuid::Uuid::new_v4().simple().to_string();
        let dest = self.path(&new);
        let dir = dest
            .parent()
            .expect("a blob path has a parent")
            .to_path_buf();
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::hard_link(self.path(id), &dest).await?;
        tokio::fs::File::open(&dir).await?.sync_all().await?;
        Ok(new)
    }

    /// The bytes `[start, start + len)` of blob `id`, as a stream.
    pub async fn read(
        &self,
        id: &str,
        start: u64,
        len: u64,
    ) -> io::Result<impl Stream<Item = io::Result<Bytes>> + Send + 'static> {
        let file = if id.is_empty() || len == 0 {
            None
        } else {
            let mut f = tokio::fs::File::open(self.path(id)).await?;
            if start > 0 {
                f.seek(io::SeekFrom::Start(start)).await?;
            }
            Some(f.take(len))
        };
        Ok(futures_util::stream::iter(file)
            .flat_map(|f| tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024)))
    }

    /// Deletes blob `id` (already gone is fine).
    pub async fn delete(&self, id: &str) {
        if !id.is_empty() {
            if let Err(e) = tokio::fs::remove_file(self.path(id)).await {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(blob = id, error = %e, "deleting a blob");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    async fn all(s: impl Stream<Item = io::Result<Bytes>>) -> Vec<u8> {
        let mut out = Vec::new();
        futures_util::pin_mut!(s);
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn put_read_copy_delete() {
        let dir = std::env::temp_dir().join(format!("ursa-blob-{}", uuid::Uuid::new_v4()));
        let b = Blobs::open(&dir).unwrap();
        let w = b
            .put(body(&[b"hello ", b"world"]), Some(11), 100)
            .await
            .unwrap();
        assert_eq!(w.size, 11);
        assert_eq!(w.md5, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(
            all(b.read(&w.id, 0, 11).await.unwrap()).await,
            b"hello world"
        );
        assert_eq!(all(b.read(&w.id, 6, 3).await.unwrap()).await, b"wor");
        let c = b.duplicate(&w.id).await.unwrap();
        b.delete(&w.id).await;
        assert_eq!(all(b.read(&c, 0, 11).await.unwrap()).await, b"hello world");
        // Wrong lengths and sizes store nothing.
        assert!(matches!(
            b.put(body(&[b"abc"]), Some(4), 100).await,
            Err(BlobError::Short { .. })
        ));
        assert!(matches!(
            b.put(body(&[b"abcde"]), Some(4), 100).await,
            Err(BlobError::Long)
        ));
        assert!(matches!(
            b.put(body(&[b"abcde"]), None, 4).await,
            Err(BlobError::TooLarge(4))
        ));
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        let empty = b.put(body(&[]), Some(0), 100).await.unwrap();
        assert_eq!(
            (empty.id.as_str(), empty.md5.as_str()),
            ("", "d41d8cd98f00b204e9800998ecf8427e")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
