//! A compute node's image cache: `<dir>/images/<id>`, fetched over HTTP
//! from the image API (a ticket URL the controller hands the node with the
//! boot), streamed to disk at constant memory, its MD5 checked against the
//! image's `checksum` before it is used, and kept for the next guest of the
//! same image (a guest's root disk is an overlay on it). Snapshots go the
//! other way: written here, then uploaded with one streamed PUT. A node
//! shares no file system with the controllers.

use md5::{Digest, Md5};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

type R<T> = std::result::Result<T, String>;

/// An image a guest boots from.
#[derive(Debug, Clone, Default)]
pub struct ImageRef {
    pub id: String,
    /// Where its bytes are served (GET).
    pub url: String,
    /// Lower-case hex MD5 of its bytes; empty: not checked.
    pub md5: String,
}

/// An image id as a file name: letters, digits and `-`, nothing else.
pub fn checked(id: &str) -> R<&str> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    ok.then_some(id)
        .ok_or_else(|| format!("{id:?} is not an image id"))
}

/// The cached file of `img`, fetched first if this node lacks it. `lock`
/// keeps two boots of one image from fetching it twice at once.
pub async fn ensure(
    dir: &Path,
    http: &reqwest::Client,
    img: &ImageRef,
    lock: &tokio::sync::Mutex<()>,
) -> R<PathBuf> {
    let id = checked(&img.id)?;
    let cache = dir.join("images");
    let path = cache.join(id);
    let stamp = cache.join(format!("{id}.md5"));
    let _held = lock.lock().await;
    let have = tokio::fs::read_to_string(&stamp).await.unwrap_or_default();
    if path.exists() && (img.md5.is_empty() || have.trim() == img.md5) {
        return Ok(path);
    }
    tokio::fs::create_dir_all(&cache)
        .await
        .map_err(|e| format!("creating {}: {e}", cache.display()))?;
    let part = cache.join(format!("{id}.part"));
    let r = fetch(http, &img.url, &part).await;
    let got = match r {
        Ok(m) => m,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(format!("fetching image {id}: {e}"));
        }
    };
    if !img.md5.is_empty() && got != img.md5 {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(format!(
            "image {id} arrived with MD5 {got}, not its checksum {}",
            img.md5
        ));
    }
    tokio::fs::rename(&part, &path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tokio::fs::write(&stamp, &got)
        .await
        .map_err(|e| format!("{}: {e}", stamp.display()))?;
    tracing::info!(image = id, "image fetched into this node's cache");
    Ok(path)
}

/// GETs `url` into `dest` (fsynced); the MD5 of what arrived.
async fn fetch(http: &reqwest::Client, url: &str, dest: &Path) -> R<String> {
    let mut resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("the image API answered {}", resp.status()));
    }
    let expected = resp.content_length();
    let f = tokio::fs::File::create(dest)
        .await
        .map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut f = tokio::io::BufWriter::with_capacity(1 << 20, f);
    let mut md5 = Md5::new();
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        md5.update(&chunk);
        n += chunk.len() as u64;
        f.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    if expected.is_some_and(|e| e != n) {
        return Err(format!("got {n} of {} bytes", expected.unwrap_or(0)));
    }
    f.flush().await.map_err(|e| e.to_string())?;
    f.get_ref().sync_all().await.map_err(|e| e.to_string())?;
    Ok(hex(&md5.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// PUTs the file at `path` to `url`, streamed.
pub async fn upload(http: &reqwest::Client, path: &Path, url: &str) -> R<()> {
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
    let resp = http
        .put(url)
        .header(reqwest::header::CONTENT_LENGTH, len)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("uploading the snapshot: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "the image API refused the snapshot: {status} {text}"
        ));
    }
    Ok(())
}
