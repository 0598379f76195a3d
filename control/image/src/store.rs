//! Where image bytes live (`ursa up --image-store`):
//!
//! - [`ImageStore::Object`] (the default): object `<id>` in container
//!   `images` of the object service's account `ursa:images`, so image data
//!   sits in the blob store object storage uses (a directory, or an S3
//!   bucket every controller reads), like Glance's Swift store;
//! - [`ImageStore::File`]: `<state>/images/<id>`, written through a
//!   `.part` file and renamed when complete.
//!
//! Either way the bytes stream through at constant memory, with their MD5
//! (`checksum`) and SHA-512 (`os_hash_value`) computed on the way. Compute
//! nodes never read these files: they fetch an image over HTTP with a
//! ticket ([`crate::Images::fetch_url`]).

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use md5::Digest as _;
use std::path::PathBuf;
use ursa_core::error::{Error, Result};
use ursa_object::Objects;

/// The object service account and container image data is kept in.
pub const ACCOUNT: &str = "ursa:images";
pub const CONTAINER: &str = "images";

/// Largest image accepted.
pub const MAX_IMAGE: u64 = 1 << 40;

#[derive(Clone)]
pub enum ImageStore {
    File {
        dir: PathBuf,
    },
    Object {
        objects: Objects,
        /// Where a file store kept images before: still read from.
        legacy: PathBuf,
    },
}

/// What an upload produced.
pub struct Uploaded {
    pub size: u64,
    pub md5: String,
    pub sha512: String,
}

/// A file holding an image's bytes ([`ImageStore::local_copy`]).
pub struct LocalCopy {
    pub path: PathBuf,
    temporary: bool,
}

impl Drop for LocalCopy {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// An image's bytes, for reading.
pub struct Data {
    pub size: u64,
    pub bytes: BoxStream<'static, std::io::Result<Bytes>>,
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("image store: {e}"))
}

impl ImageStore {
    /// A file store in `dir` (uploads a crash interrupted are removed).
    pub fn file(dir: PathBuf) -> std::io::Result<ImageStore> {
        std::fs::create_dir_all(&dir)?;
        for e in std::fs::read_dir(&dir)?.flatten() {
            if e.path().extension().is_some_and(|x| x == "part") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(ImageStore::File { dir })
    }

    /// The object store; images a file store kept in `legacy` stay
    /// readable.
    pub async fn object(objects: Objects, legacy: PathBuf) -> Result<ImageStore> {
        objects
            .ensure_container(ACCOUNT, CONTAINER)
            .await
            .map_err(internal)?;
        Ok(ImageStore::Object { objects, legacy })
    }

    /// `object` or `file`, for logs and the note `ursa up` prints.
    pub fn kind(&self) -> &'static str {
        match self {
            ImageStore::File { .. } => "file",
            ImageStore::Object { .. } => "object",
        }
    }

    fn file_path(dir: &std::path::Path, id: &str) -> PathBuf {
        dir.join(id)
    }

    /// Streams `body` in as image `id`'s data, hashing it.
    pub async fn receive<S, E>(&self, id: &str, body: S) -> Result<Uploaded>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let mut md5 = md5::Md5::new();
        let mut sha = <sha2::Sha512 as sha2::Digest>::new();
        let mut size = 0u64;
        let mut too_large = false;
        let hashed = body.map(|chunk| {
            let chunk = chunk.map_err(|e| format!("reading the upload: {e}"))?;
            size += chunk.len() as u64;
            if size > MAX_IMAGE {
                too_large = true;
                return Err(format!(
                    "Image exceeds the storage limit of {MAX_IMAGE} bytes."
                ));
            }
            md5.update(&chunk);
            sha2::Digest::update(&mut sha, &chunk);
            Ok::<Bytes, String>(chunk)
        });
        let r = match self {
            ImageStore::File { dir } => write_file(dir, id, hashed).await,
            ImageStore::Object { objects, .. } => objects
                .put_named(ACCOUNT, CONTAINER, id, hashed)
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    ursa_object::service::ServiceError::Blob(
                        ursa_object::blob::BlobError::Body(m),
                    ) => Error::BadRequest(m),
                    e => internal(e),
                }),
        };
        if too_large {
            return Err(Error::PayloadTooLarge(format!(
                "Image exceeds the storage limit of {MAX_IMAGE} bytes."
            )));
        }
        r?;
        Ok(Uploaded {
            size,
            md5: crate::hex(&md5.finalize()),
            sha512: crate::hex(&sha2::Digest::finalize(sha)),
        })
    }

    /// Image `id`'s data, if it has any.
    pub async fn open(&self, id: &str) -> Result<Option<Data>> {
        let dir = match self {
            ImageStore::File { dir } => dir,
            ImageStore::Object { objects, legacy } => {
                if let Some(f) = objects
                    .get_named(ACCOUNT, CONTAINER, id)
                    .await
                    .map_err(internal)?
                {
                    return Ok(Some(Data {
                        size: f.size,
                        bytes: f.bytes,
                    }));
                }
                legacy
            }
        };
        let Ok(f) = tokio::fs::File::open(Self::file_path(dir, id)).await else {
            return Ok(None);
        };
        let size = f.metadata().await.map(|m| m.len()).unwrap_or(0);
        Ok(Some(Data {
            size,
            bytes: Box::pin(tokio_util::io::ReaderStream::with_capacity(f, 256 << 10)),
        }))
    }

    /// Image `id`'s data as a file on this host, for tools that read
    /// files (qemu-img): the file itself in a file store, else a copy in
    /// `<state>/images/tmp` that goes when the value drops.
    pub async fn local_copy(&self, id: &str) -> Result<LocalCopy> {
        // A file of a file store, or one a file store left: the file itself.
        let (dir, file_store) = match self {
            ImageStore::File { dir } => (dir, true),
            ImageStore::Object { legacy, .. } => (legacy, false),
        };
        if file_store || Self::file_path(dir, id).exists() {
            return Ok(LocalCopy {
                path: Self::file_path(dir, id),
                temporary: false,
            });
        }
        let data = self
            .open(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("Image {id} has no data.")))?;
        let tmp = dir.join("tmp");
        tokio::fs::create_dir_all(&tmp).await.map_err(internal)?;
        let copy = LocalCopy {
            path: tmp.join(format!("{id}-{}", uuid::Uuid::new_v4().simple())),
            temporary: true,
        };
        let mut f = tokio::fs::File::create(&copy.path)
            .await
            .map_err(internal)?;
        let mut r = tokio_util::io::StreamReader::new(data.bytes);
        tokio::io::copy(&mut r, &mut f).await.map_err(internal)?;
        Ok(copy)
    }

    /// Removes image `id`'s data (none is fine).
    pub async fn remove(&self, id: &str) {
        let dir = match self {
            ImageStore::File { dir } => dir,
            ImageStore::Object { objects, legacy } => {
                if let Err(e) = objects.delete_named(ACCOUNT, CONTAINER, id).await {
                    tracing::warn!(image = id, error = %e, "removing image data");
                }
                legacy
            }
        };
        let _ = tokio::fs::remove_file(Self::file_path(dir, id)).await;
        let _ = tokio::fs::remove_file(dir.join(format!("{id}.part"))).await;
    }
}

async fn write_file<S>(dir: &std::path::Path, id: &str, mut body: S) -> Result<()>
where
    S: Stream<Item = std::result::Result<Bytes, String>> + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let part = dir.join(format!("{id}.part"));
    let fail = |e: std::io::Error| Error::Internal(format!("{}: {e}", part.display()));
    let mut f = tokio::fs::File::create(&part).await.map_err(fail)?;
    let r: Result<()> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Error::BadRequest)?;
            f.write_all(&chunk).await.map_err(fail)?;
        }
        f.sync_all().await.map_err(fail)
    }
    .await;
    if let Err(e) = r {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(e);
    }
    tokio::fs::rename(&part, ImageStore::file_path(dir, id))
        .await
        .map_err(fail)
}
