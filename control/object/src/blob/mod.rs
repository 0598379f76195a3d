//! Where object bytes live: immutable blobs named by a random id, in one of
//! two backends behind [`Blobs`]:
//!
//! - [`dir::Dir`], a directory under the state dir (the default): a blob is
//!   written under `tmp/`, fsynced, and renamed into place (its directory
//!   fsynced too) before any row names it;
//! - [`s3::S3`], a bucket of any S3-compatible store (Garage, MinIO, AWS),
//!   for clouds that outgrow one disk or run several controllers: a blob is
//!   one S3 object, written with a single PUT or, past one part, a multipart
//!   upload, and an S3 store acknowledges a PUT only once it is durable.
//!
//! Either way no row names a blob before its bytes are durable; a row that
//! stops naming a blob hands it to the garbage list, and it is deleted after
//! that commit. An object of no bytes has no blob (id `""`). The bytes
//! stream through at constant memory whatever the object's size, and their
//! MD5 (Swift's ETag) is computed on the way.

pub mod dir;
pub mod s3;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use std::io;
use std::path::Path;

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
    /// The bytes of an inline blob: stored with the row that names it.
    pub inline: Option<Bytes>,
}

/// The bytes of a blob, streamed.
pub type BlobStream = BoxStream<'static, io::Result<Bytes>>;

/// Where blobs larger than [`INLINE_MAX`] go.
#[derive(Debug)]
pub enum Backend {
    Dir(dir::Dir),
    S3(s3::S3),
}

/// Bodies up to this size are kept inline: in the database, in the
/// transaction of the object row (table `obj_inline`).
pub const INLINE_MAX: u64 = 32 << 10;

/// The blob store the object service was opened with.
#[derive(Debug)]
pub struct Blobs {
    backend: Backend,
    /// Where inline blobs live (set when the service opens).
    store: std::sync::OnceLock<ursa_core::store::Store>,
}

/// An inline blob's id starts with this (a backend's never does: they are
/// hex).
const INLINE: &str = "i";

pub fn is_inline(id: &str) -> bool {
    id.starts_with(INLINE)
}

impl Blobs {
    fn with(backend: Backend) -> Blobs {
        Blobs {
            backend,
            store: Default::default(),
        }
    }

    /// A directory store at `root` (created; uploads a crash interrupted
    /// are removed).
    pub fn open(root: &Path) -> io::Result<Blobs> {
        Ok(Blobs::with(Backend::Dir(dir::Dir::open(root)?)))
    }

    /// Gives the store the database inline blobs live in.
    pub fn attach(&self, store: ursa_core::store::Store) {
        let _ = self.store.set(store);
    }

    fn db(&self) -> io::Result<&ursa_core::store::Store> {
        self.store
            .get()
            .ok_or_else(|| io::Error::other("the blob store has no database attached"))
    }

    /// The store a `--blob-store` value names: `dir` (or nothing) for
    /// `<state>/objects`, `s3://BUCKET[/PREFIX]` for an S3 bucket (endpoint
    /// and credentials from `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`).
    pub async fn from_spec(spec: Option<&str>, state_dir: &Path) -> io::Result<Blobs> {
        match spec.unwrap_or("dir") {
            "dir" | "" => Blobs::open(&state_dir.join("objects")),
            s if s.starts_with("s3://") => Ok(Blobs::with(Backend::S3(s3::S3::open(s).await?))),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("blob store {other:?} is neither `dir` nor `s3://BUCKET[/PREFIX]`"),
            )),
        }
    }

    /// Which backend, for logs and `/info`.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Dir(_) => "dir",
            Backend::S3(_) => "s3",
        }
    }

    /// Stores a body. `expected` is its `Content-Length` when the client
    /// gave one; `max` the largest object accepted.
    pub async fn put<S, E>(
        &self,
        body: S,
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
        let mut body = body;
        // A small body is read whole and kept inline; a larger one goes
        // to the backend, what was read first included.
        let mut head: Vec<Bytes> = Vec::new();
        if expected.is_none_or(|n| n <= INLINE_MAX) && self.store.get().is_some() {
            let mut got = 0u64;
            loop {
                match body.next().await {
                    None => {
                        let mut intake = Intake::new(expected, max);
                        let mut all = Vec::with_capacity(got as usize);
                        for c in &head {
                            intake.take(c)?;
                            all.extend_from_slice(c);
                        }
                        intake.end()?;
                        let mut w = intake.written(format!("{INLINE}{}", new_id()));
                        if w.size > 0 {
                            w.inline = Some(Bytes::from(all));
                        }
                        return Ok(w);
                    }
                    Some(Err(e)) => return Err(BlobError::Body(e.to_string())),
                    Some(Ok(c)) => {
                        got += c.len() as u64;
                        head.push(c);
                        if got > INLINE_MAX {
                            break;
                        }
                    }
                }
            }
        }
        let body = futures_util::stream::iter(head.into_iter().map(Ok)).chain(body);
        let intake = Intake::new(expected, max);
        match &self.backend {
            Backend::Dir(d) => d.put(body, intake).await,
            Backend::S3(s) => s.put(body, intake).await,
        }
    }

    /// A new blob with the same bytes as `id` (a server-side copy).
    pub async fn duplicate(&self, id: &str) -> io::Result<String> {
        if id.is_empty() {
            return Ok(String::new());
        }
        if is_inline(id) {
            let new = format!("{INLINE}{}", new_id());
            sqlx::query("INSERT INTO obj_inline (blob, data) SELECT $2, data FROM obj_inline WHERE blob = $1")
                .bind(id)
                .bind(&new)
                .execute(self.db()?.pool())
                .await
                .map_err(io::Error::other)?;
            return Ok(new);
        }
        let new = new_id();
        match &self.backend {
            Backend::Dir(d) => d.duplicate(id, &new).await?,
            Backend::S3(s) => s.duplicate(id, &new).await?,
        }
        Ok(new)
    }

    /// The bytes `[start, start + len)` of blob `id`, as a stream.
    pub async fn read(&self, id: &str, start: u64, len: u64) -> io::Result<BlobStream> {
        if id.is_empty() || len == 0 {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        if is_inline(id) {
            let data: Vec<u8> = sqlx::query_scalar("SELECT data FROM obj_inline WHERE blob = $1")
                .bind(id)
                .fetch_optional(self.db()?.pool())
                .await
                .map_err(io::Error::other)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such inline blob"))?;
            let data = Bytes::from(data);
            let (a, b) = (start as usize, (start + len) as usize);
            let piece = data.slice(a.min(data.len())..b.min(data.len()));
            return Ok(Box::pin(futures_util::stream::iter([Ok(piece)])));
        }
        match &self.backend {
            Backend::Dir(d) => d.read(id, start, len).await,
            Backend::S3(s) => s.read(id, start, len).await,
        }
    }

    /// Deletes blob `id` (already gone is fine).
    pub async fn delete(&self, id: &str) {
        if id.is_empty() {
            return;
        }
        let r = if is_inline(id) {
            match self.db() {
                Ok(db) => sqlx::query("DELETE FROM obj_inline WHERE blob = $1")
                    .bind(id)
                    .execute(db.pool())
                    .await
                    .map(|_| ())
                    .map_err(io::Error::other),
                Err(e) => Err(e),
            }
        } else {
            match &self.backend {
                Backend::Dir(d) => d.delete(id).await,
                Backend::S3(s) => s.delete(id).await,
            }
        };
        if let Err(e) = r {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(blob = id, error = %e, "deleting a blob");
            }
        }
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The checks and the hash every body goes through on its way to a
/// backend.
pub struct Intake {
    md5: Md5,
    size: u64,
    expected: Option<u64>,
    max: u64,
}

impl Intake {
    fn new(expected: Option<u64>, max: u64) -> Intake {
        Intake {
            md5: Md5::new(),
            size: 0,
            expected,
            max,
        }
    }

    /// Counts and hashes one chunk of the body.
    pub fn take(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.size += chunk.len() as u64;
        if self.size > self.max {
            return Err(BlobError::TooLarge(self.max));
        }
        if self.expected.is_some_and(|n| self.size > n) {
            return Err(BlobError::Long);
        }
        self.md5.update(chunk);
        Ok(())
    }

    /// The body ended: it had all its bytes?
    pub fn end(&self) -> Result<(), BlobError> {
        match self.expected {
            Some(n) if self.size < n => Err(BlobError::Short {
                got: self.size,
                expected: n,
            }),
            _ => Ok(()),
        }
    }

    /// The blob these bytes became.
    pub fn written(self, id: String) -> Written {
        Written {
            id: if self.size == 0 { String::new() } else { id },
            size: self.size,
            md5: hex::encode(self.md5.finalize()),
            inline: None,
        }
    }
}

#[cfg(test)]
mod tests;
