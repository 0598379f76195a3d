//! The backends' shared contract, run against the directory store (and, in
//! the end-to-end tests, against an S3 server).

use super::*;
use futures_util::StreamExt;

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
