//! Objects made of other objects' bytes: answering any object as a run of
//! [`Piece`]s of blobs (ranges applied across the run), and dynamic large
//! objects (`X-Object-Manifest: <container>/<prefix>`: the objects of that
//! container whose names start with the prefix, in name order).

use super::object::conditions;
use super::range;
use super::{set, Ctx, Fail, Res};
use crate::blob::Blobs;
use crate::table::{self, Bound, Object, Page};
use crate::time;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use std::sync::Arc;

/// Bytes `[offset, offset + len)` of a blob.
#[derive(Debug, Clone)]
pub struct Piece {
    pub blob: String,
    pub offset: u64,
    pub len: u64,
    /// Bytes carried in a manifest itself (an SLO's `data` segment);
    /// `offset` is then into these.
    pub inline: Option<Bytes>,
}

impl Piece {
    pub fn of_blob(blob: &str, len: u64) -> Piece {
        Piece {
            blob: blob.to_string(),
            offset: 0,
            len,
            inline: None,
        }
    }

    pub fn inline(data: Vec<u8>) -> Piece {
        Piece {
            blob: String::new(),
            offset: 0,
            len: data.len() as u64,
            inline: Some(Bytes::from(data)),
        }
    }
}

/// The pieces covering bytes `[a, b)` of a run.
pub fn slice(pieces: &[Piece], a: u64, b: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for p in pieces {
        let (lo, hi) = (at, at + p.len);
        at = hi;
        if hi <= a || lo >= b {
            continue;
        }
        let start = a.max(lo) - lo;
        let end = b.min(hi) - lo;
        out.push(Piece {
            blob: p.blob.clone(),
            offset: p.offset + start,
            len: end - start,
            inline: p.inline.clone(),
        });
    }
    out
}

/// Answers a conditional request (`If-Match`, …) that fails: 412, or 304
/// with the object's validators.
pub fn conditional(ctx: &Ctx, etag: &str, ts: i64, h: &HeaderMap) -> Option<Response> {
    let f = conditions(ctx, etag, ts)?;
    let not_modified = f.status == StatusCode::NOT_MODIFIED;
    // Both answers carry the object's validators and metadata, as Swift's do.
    let mut r = if not_modified {
        super::empty(StatusCode::NOT_MODIFIED, HeaderMap::new())
    } else {
        f.into_response()
    };
    for (k, v) in h {
        if k != "content-length" && k != "content-type" {
            r.headers_mut().insert(k.clone(), v.clone());
        }
    }
    if not_modified {
        if let Some(v) = h.get("content-type") {
            r.headers_mut().insert("content-type", v.clone());
        }
    }
    Some(r)
}

/// The bytes `[a, b)` of the run of pieces, as a stream.
fn stream_range(
    blobs: Arc<Blobs>,
    pieces: Arc<Vec<Piece>>,
    a: u64,
    b: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let parts = slice(&pieces, a, b);
    futures_util::stream::iter(parts)
        .then(move |p| {
            let blobs = blobs.clone();
            async move {
                if let Some(data) = p.inline {
                    let o = p.offset as usize;
                    let chunk = data.slice(o..o + p.len as usize);
                    return futures_util::stream::once(async move { Ok(chunk) })
                        .left_stream()
                        .left_stream();
                }
                match blobs.read(&p.blob, p.offset, p.len).await {
                    Ok(s) => s.right_stream().left_stream(),
                    Err(e) => futures_util::stream::once(async move { Err(e) }).right_stream(),
                }
            }
        })
        .flatten()
}

/// Answers with the run of pieces, honouring `Range` (one range, several
/// as `multipart/byteranges`, or 416).
pub async fn serve_pieces(ctx: &Ctx, pieces: Vec<Piece>, h: &mut HeaderMap, head: bool) -> Res {
    let len: u64 = pieces.iter().map(|p| p.len).sum();
    let blobs = ctx.state.objects.blobs.clone();
    let pieces = Arc::new(pieces);
    let Some(specs) = ctx.h("range").and_then(range::parse) else {
        set(h, "content-length", len.to_string());
        let body = if head {
            Body::empty()
        } else {
            Body::from_stream(stream_range(blobs, pieces, 0, len))
        };
        return Ok((StatusCode::OK, h.clone(), body).into_response());
    };
    let parts = range::resolve(&specs, len);
    if parts.is_empty() {
        let mut f = Fail::of(StatusCode::RANGE_NOT_SATISFIABLE).into_response();
        set(f.headers_mut(), "content-range", format!("bytes */{len}"));
        return Ok(f);
    }
    if parts.len() == 1 {
        let (a, b) = parts[0];
        set(h, "content-range", format!("bytes {}-{}/{}", a, b - 1, len));
        set(h, "content-length", (b - a).to_string());
        let body = if head {
            Body::empty()
        } else {
            Body::from_stream(stream_range(blobs, pieces, a, b))
        };
        return Ok((StatusCode::PARTIAL_CONTENT, h.clone(), body).into_response());
    }
    let boundary = uuid::Uuid::new_v4().simple().to_string();
    let ct = h
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let mut total = 0u64;
    let mut leads = Vec::new();
    for (i, (a, b)) in parts.iter().enumerate() {
        let lead = format!(
            "{}--{boundary}\r\nContent-Type: {ct}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
            if i == 0 { "" } else { "\r\n" },
            a,
            b - 1
        );
        total += lead.len() as u64 + (b - a);
        leads.push((lead, *a, *b));
    }
    let tail = format!("\r\n--{boundary}--");
    total += tail.len() as u64;
    set(
        h,
        "content-type",
        format!("multipart/byteranges;boundary={boundary}"),
    );
    set(h, "content-length", total.to_string());
    if head {
        return Ok((StatusCode::PARTIAL_CONTENT, h.clone(), Body::empty()).into_response());
    }
    let stream =
        futures_util::stream::iter(leads)
            .flat_map(move |(lead, a, b)| {
                futures_util::stream::once(async move { Ok(Bytes::from(lead)) })
                    .chain(stream_range(blobs.clone(), pieces.clone(), a, b))
            })
            .chain(futures_util::stream::once(
                async move { Ok(Bytes::from(tail)) },
            ));
    Ok((
        StatusCode::PARTIAL_CONTENT,
        h.clone(),
        Body::from_stream(stream),
    )
        .into_response())
}

/// The `(container, prefix)` of an `X-Object-Manifest` value.
pub fn manifest_ref(value: &str) -> Option<(String, String)> {
    let v = percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .ok()?;
    let (c, p) = v.trim_start_matches('/').split_once('/')?;
    (!c.is_empty()).then(|| (c.to_string(), p.to_string()))
}

/// The live objects of `container` in `account` whose names start with
/// `prefix`, in name order.
pub async fn segments(
    ctx: &Ctx,
    account: &str,
    container: &str,
    prefix: &str,
) -> Result<Vec<Object>, Fail> {
    let store = &ctx.state.objects.store;
    let now = time::now_secs();
    let mut out = Vec::new();
    let mut lo = Some(Bound {
        name: prefix.to_string(),
        inclusive: true,
    });
    loop {
        let page = Page {
            lo: lo.clone(),
            hi: None,
            reverse: false,
            limit: 1000,
        };
        let rows = table::objects(store, account, container, page).await?;
        let n = rows.len();
        let mut past = false;
        for o in rows {
            if !o.name.starts_with(prefix) {
                past = true;
                break;
            }
            lo = Some(Bound {
                name: o.name.clone(),
                inclusive: false,
            });
            if o.delete_at.is_none_or(|d| d > now) {
                out.push(o);
            }
        }
        if past || n < 1000 {
            return Ok(out);
        }
    }
}

/// GET or HEAD of a dynamic large object: its segments' bytes in order,
/// its ETag the MD5 of their ETags (quoted, as Swift sends it).
pub async fn get_dlo(ctx: &Ctx, manifest: &Object, value: &str, mut h: HeaderMap) -> Res {
    let (container, prefix) = manifest_ref(value)
        .ok_or_else(|| Fail::bad("X-Object-Manifest must be in the format container/prefix"))?;
    let seg_ctx = ctx.at(&ctx.target.account, &container, "")?;
    super::object::may_read(&seg_ctx).await?;
    let segs = segments(ctx, &ctx.target.account, &container, &prefix).await?;
    let mut md5 = Md5::new();
    let mut ts = manifest.ts;
    let mut pieces = Vec::with_capacity(segs.len());
    for s in &segs {
        md5.update(s.etag.as_bytes());
        ts = ts.max(s.ts);
        pieces.push(Piece::of_blob(&s.blob, s.size as u64));
    }
    let etag = hex::encode(md5.finalize());
    set(&mut h, "etag", format!("\"{etag}\""));
    if let Some(r) = conditional(ctx, &etag, ts, &h) {
        return Ok(r);
    }
    let head = ctx.method == "HEAD";
    super::object::disposition(ctx, &mut h);
    // Swift answers a DLO asked for several ranges with all of it.
    let several = ctx
        .h("range")
        .and_then(range::parse)
        .is_some_and(|r| r.len() > 1);
    if several {
        let mut plain = ctx.at(&ctx.target.account, ctx.container(), ctx.object())?;
        plain.headers.remove("range");
        return serve_pieces(&plain, pieces, &mut h, head).await;
    }
    serve_pieces(ctx, pieces, &mut h, head).await
}

/// The pieces an object's bytes are when read: its own blob, or, for a
/// dynamic large object read without `?multipart-manifest=get`, its
/// segments'. Also whether it was a manifest that was expanded.
pub async fn pieces_of(ctx: &Ctx, account: &str, o: &Object) -> Result<(Vec<Piece>, bool), Fail> {
    if ctx.q("multipart-manifest") != Some("get") && super::slo::is_slo(o) {
        return Ok((super::slo::pieces(ctx, o).await?, true));
    }
    if ctx.q("multipart-manifest") != Some("get") {
        if let Some(m) = o.meta.get("x-object-manifest") {
            let (container, prefix) = manifest_ref(m).ok_or_else(|| {
                Fail::bad("X-Object-Manifest must be in the format container/prefix")
            })?;
            let segs = segments(ctx, account, &container, &prefix).await?;
            let pieces = segs
                .into_iter()
                .map(|s| Piece::of_blob(&s.blob, s.size as u64))
                .collect();
            return Ok((pieces, true));
        }
    }
    Ok((vec![Piece::of_blob(&o.blob, o.size as u64)], false))
}

/// Writes the bytes `[a, b)` of a run of pieces as a new blob.
pub async fn materialize(
    ctx: &Ctx,
    pieces: Vec<Piece>,
    a: u64,
    b: u64,
) -> Result<crate::blob::Written, Fail> {
    let blobs = ctx.state.objects.blobs.clone();
    let stream = Box::pin(stream_range(blobs.clone(), Arc::new(pieces), a, b));
    Ok(blobs
        .put(stream, Some(b - a), crate::constraints::MAX_FILE_SIZE)
        .await?)
}
