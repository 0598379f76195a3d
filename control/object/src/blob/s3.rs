//! The S3 backend: each blob is one object `<prefix>blobs/<id>` in a bucket
//! of an S3-compatible store, through the `object_store` crate.
//!
//! A body of up to one part ([`PART`]) goes up in one PUT; a longer one in
//! a multipart upload whose parts are sent while the body still streams in
//! (at most [`IN_FLIGHT`] parts held, so memory stays bounded whatever the
//! size), aborted if the body fails. S3 answers a PUT or a completed upload
//! only once the object is durable, which is the moment a row may name it.

use super::{BlobError, BlobStream, Intake, Written};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{GetOptions, GetRange, ObjectStore, WriteMultipart};
use std::io;
use std::sync::Arc;

/// Bytes per multipart part (S3's minimum is 5 MiB).
pub const PART: usize = 8 << 20;
/// Parts uploading at once, per body.
pub const IN_FLIGHT: usize = 2;

pub struct S3 {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3").field("url", &self.url).finish()
    }
}

fn other(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        e => io::Error::other(e),
    }
}

impl S3 {
    /// Connects to `s3://BUCKET[/PREFIX]` and checks the bucket answers.
    pub async fn open(url: &str) -> io::Result<S3> {
        let rest = url.strip_prefix("s3://").unwrap_or(url);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{url:?} names no bucket"),
            ));
        }
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // `AWS_ENDPOINT_URL` is what the AWS tools read; object_store reads
        // `AWS_ENDPOINT`. Either works here.
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .ok();
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            b = b.with_region("us-east-1");
        }
        let store = b.build().map_err(io::Error::other)?;
        let s3 = S3 {
            store: Arc::new(store),
            prefix,
            url: url.to_string(),
        };
        // A blob that does not exist: NotFound proves the bucket is there
        // and the credentials work.
        match s3.store.head(&s3.key("probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(s3),
            Err(e) => Err(io::Error::other(format!(
                "the S3 blob store {url} does not answer: {e}"
            ))),
        }
    }

    fn key(&self, id: &str) -> Key {
        Key::from(format!("{}blobs/{id}", self.prefix))
    }

    pub(super) async fn put<S, E>(
        &self,
        mut body: S,
        mut intake: Intake,
    ) -> Result<Written, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let id = super::new_id();
        let key = self.key(&id);
        let mut first = BytesMut::new();
        let mut upload: Option<WriteMultipart> = None;
        let result: Result<(), BlobError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
                intake.take(&chunk)?;
                match upload.as_mut() {
                    Some(w) => {
                        w.wait_for_capacity(IN_FLIGHT).await.map_err(other)?;
                        w.put(chunk);
                    }
                    None => {
                        first.extend_from_slice(&chunk);
                        if first.len() > PART {
                            let m = self.store.put_multipart(&key).await.map_err(other)?;
                            let mut w = WriteMultipart::new_with_chunk_size(m, PART);
                            w.put(std::mem::take(&mut first).freeze());
                            upload = Some(w);
                        }
                    }
                }
            }
            intake.end()
        }
        .await;
        match (result, upload) {
            (Err(e), Some(w)) => {
                let _ = w.abort().await;
                Err(e)
            }
            (Err(e), None) => Err(e),
            (Ok(()), Some(w)) => {
                w.finish().await.map_err(other)?;
                Ok(intake.written(id))
            }
            (Ok(()), None) if first.is_empty() => Ok(intake.written(String::new())),
            (Ok(()), None) => {
                self.store
                    .put(&key, first.freeze().into())
                    .await
                    .map_err(other)?;
                Ok(intake.written(id))
            }
        }
    }

    /// S3's server-side copy.
    pub(super) async fn duplicate(&self, id: &str, new: &str) -> io::Result<()> {
        self.store
            .copy(&self.key(id), &self.key(new))
            .await
            .map_err(other)
    }

    pub(super) async fn read(&self, id: &str, start: u64, len: u64) -> io::Result<BlobStream> {
        let opts = GetOptions {
            range: Some(GetRange::Bounded(start..start + len)),
            ..Default::default()
        };
        let got = self
            .store
            .get_opts(&self.key(id), opts)
            .await
            .map_err(other)?;
        Ok(Box::pin(got.into_stream().map_err(other)))
    }

    pub(super) async fn delete(&self, id: &str) -> io::Result<()> {
        self.store.delete(&self.key(id)).await.map_err(other)
    }
}
