//! The directory backend: `<root>/<2 hex>/<id>`, uploads under
//! `<root>/tmp`, each written, fsynced and renamed into place (and its
//! directory fsynced) before it is answered.

use super::{BlobError, BlobStream, Intake, Written};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

#[derive(Debug)]
pub struct Dir {
    root: PathBuf,
}

impl Dir {
    /// Opens (creating) the store at `root`; uploads a crash interrupted
    /// are removed.
    pub fn open(root: &Path) -> io::Result<Dir> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        for e in std::fs::read_dir(&tmp)?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        Ok(Dir {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        let shard = id.get(..2).unwrap_or("00");
        self.root.join(shard).join(id)
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
        let tmp = self.root.join("tmp").join(&id);
        let mut file: Option<tokio::io::BufWriter<tokio::fs::File>> = None;
        let result: Result<(), BlobError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
                intake.take(&chunk)?;
                if file.is_none() {
                    let f = tokio::fs::File::create(&tmp).await?;
                    file = Some(tokio::io::BufWriter::with_capacity(256 * 1024, f));
                }
                if let Some(f) = file.as_mut() {
                    f.write_all(&chunk).await?;
                }
            }
            intake.end()
        }
        .await;
        if let Err(e) = result {
            drop(file);
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let Some(mut f) = file else {
            return Ok(intake.written(String::new()));
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
        Ok(intake.written(id))
    }

    /// A hard link, since blobs never change.
    pub(super) async fn duplicate(&self, id: &str, new: &str) -> io::Result<()> {
        let dest = self.path(new);
        let dir = dest
            .parent()
            .expect("a blob path has a parent")
            .to_path_buf();
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::hard_link(self.path(id), &dest).await?;
        tokio::fs::File::open(&dir).await?.sync_all().await
    }

    pub(super) async fn read(&self, id: &str, start: u64, len: u64) -> io::Result<BlobStream> {
        let mut f = tokio::fs::File::open(self.path(id)).await?;
        if start > 0 {
            f.seek(io::SeekFrom::Start(start)).await?;
        }
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            f.take(len),
            256 * 1024,
        )))
    }

    pub(super) async fn delete(&self, id: &str) -> io::Result<()> {
        tokio::fs::remove_file(self.path(id)).await
    }
}
