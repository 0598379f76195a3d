//! Static large objects (Swift's `slo` middleware): `PUT
//! ?multipart-manifest=put` with a JSON list of segments (`path`, `etag`,
//! `size_bytes`, `range`, or inline `data`) checks each segment and stores
//! the manifest as an object marked `X-Static-Large-Object`; reading it
//! streams the segments (nested manifests expanded, ranges applied);
//! `?multipart-manifest=get` answers the manifest itself,
//! `?multipart-manifest=delete` deletes it and its segments, and
//! `?part-number=N` reads one segment.

use super::large::{conditional, serve_pieces, Piece};
use super::object::live;
use super::{set, Ctx, Fail, Res};
use crate::table::Object;
use crate::{constraints, time};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

pub const MARK: &str = "x-static-large-object";
/// The MD5 of the segments' ETags, and the total size (system metadata:
/// never shown to clients as headers).
pub const SLO_ETAG: &str = "x-object-sysmeta-slo-etag";
pub const SLO_SIZE: &str = "x-object-sysmeta-slo-size";
pub const MAX_SEGMENTS: usize = 1000;
pub const MAX_MANIFEST_SIZE: usize = 8 * 1024 * 1024;
const MAX_DEPTH: usize = 10;

/// A segment as a client lists it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Asked {
    path: Option<String>,
    etag: Option<String>,
    size_bytes: Option<u64>,
    range: Option<String>,
    data: Option<String>,
}

/// A segment as the stored manifest keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Segment {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_slo: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Segment {
    /// How many bytes this segment adds.
    fn len(&self) -> u64 {
        if let Some(d) = &self.data {
            return b64(d).map(|v| v.len() as u64).unwrap_or(0);
        }
        match self
            .range
            .as_deref()
            .and_then(|r| parse_range(r, self.bytes.unwrap_or(0)))
        {
            Some((a, b)) => b - a,
            None => self.bytes.unwrap_or(0),
        }
    }
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
        .ok()
}

/// A segment's `range` (`a-b`, `a-`, `-n`) within `size` bytes.
fn parse_range(r: &str, size: u64) -> Option<(u64, u64)> {
    let specs = super::range::parse(&format!("bytes={r}"))?;
    if specs.len() != 1 {
        return None;
    }
    super::range::resolve(&specs, size).first().copied()
}

pub fn is_slo(o: &Object) -> bool {
    o.meta
        .get(MARK)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn errors(status: StatusCode, problems: &[(String, String)]) -> Fail {
    let mut body = String::from("Errors:\n");
    for (p, e) in problems {
        body.push_str(&format!("{p}, {e}\n"));
    }
    Fail::msg(status, body)
}

/// `PUT ?multipart-manifest=put`: checks the segments and stores the manifest.
pub async fn put(ctx: &Ctx, body: Body) -> Res {
    super::object::may_write(ctx).await?;
    if ctx.q("heartbeat") == Some("on") {
        return Ok(heartbeat(ctx, put_inner(ctx, body).await));
    }
    match put_inner(ctx, body).await {
        Ok(r) => Ok(r),
        Err(Refused(f, problems)) if !problems.is_empty() => Err(errors(f.status, &problems)),
        Err(Refused(f, _)) => Err(f),
    }
}

/// A refused manifest: the failure, and the segments at fault.
struct Refused(Fail, Vec<(String, String)>);

impl<E: Into<Fail>> From<E> for Refused {
    fn from(e: E) -> Refused {
        Refused(e.into(), Vec::new())
    }
}

/// `?heartbeat=on`: the answer goes out at once as a 202 and the result
/// follows in the body, as Swift's heartbeating PUT reports it.
fn heartbeat(
    ctx: &Ctx,
    result: Result<axum::response::Response, Refused>,
) -> axum::response::Response {
    let (status, body, problems, etag, modified) = match result {
        Ok(r) => {
            let h = r.headers();
            let get = |k: &str| {
                h.get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            (
                "201 Created".to_string(),
                String::new(),
                Vec::new(),
                Some(get("etag")),
                Some(get("last-modified")),
            )
        }
        Err(Refused(f, problems)) => {
            let reason = f.status.canonical_reason().unwrap_or("");
            let text = Fail::of(f.status).body;
            let detail = text
                .split("<p>")
                .nth(1)
                .and_then(|t| t.split("</p>").next())
                .unwrap_or("")
                .to_string();
            let body = if problems.is_empty() || ctx.h("accept").is_some_and(|a| a.contains("json"))
            {
                format!("{reason}\n{detail}")
            } else {
                reason.to_string()
            };
            (
                format!("{} {reason}", f.status.as_u16()),
                body,
                problems,
                None,
                None,
            )
        }
    };
    let text = if ctx
        .h("accept")
        .is_some_and(|a| a.contains("application/json"))
    {
        let mut v = serde_json::json!({
            "Response Status": status, "Response Body": body,
            "Errors": problems.iter().map(|(p, e)| [p, e]).collect::<Vec<_>>(),
        });
        if let (Some(e), Some(m)) = (&etag, &modified) {
            v["Etag"] = serde_json::json!(e);
            v["Last Modified"] = serde_json::json!(m);
        }
        v.to_string()
    } else {
        let mut t = format!("Response Status: {status}\nResponse Body: {body}\n");
        if let (Some(e), Some(m)) = (&etag, &modified) {
            t.push_str(&format!("Etag: {e}\nLast Modified: {m}\n"));
        }
        t.push_str("Errors:\n");
        for (p, e) in &problems {
            t.push_str(&format!("{p}, {e}\n"));
        }
        t
    };
    let chunks = vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b" ")),
        Ok(bytes::Bytes::from(format!("\r\n\r\n{text}"))),
    ];
    let mut h = HeaderMap::new();
    set(&mut h, "content-type", "text/plain; charset=utf-8");
    (
        StatusCode::ACCEPTED,
        h,
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}

async fn put_inner(ctx: &Ctx, body: Body) -> Result<axum::response::Response, Refused> {
    let no = |f: Fail| Refused(f, Vec::new());
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_SIZE)
        .await
        .map_err(|_| no(Fail::of(StatusCode::PAYLOAD_TOO_LARGE)))?;
    let asked: Vec<Asked> = serde_json::from_slice(&bytes)
        .map_err(|_| no(Fail::bad("Manifest must be valid JSON.\n")))?;
    if asked.is_empty() {
        return Err(no(Fail::bad("Manifest must have at least one segment.\n")));
    }
    if asked.len() > MAX_SEGMENTS {
        return Err(no(Fail::of(StatusCode::PAYLOAD_TOO_LARGE)));
    }
    let mut problems = Vec::new();
    let mut segs = Vec::with_capacity(asked.len());
    let mut md5 = Md5::new();
    let mut total = 0u64;
    for (i, a) in asked.iter().enumerate() {
        if let Some(d) = &a.data {
            if a.path.is_some() || a.etag.is_some() || a.size_bytes.is_some() || a.range.is_some() {
                problems.push((
                    format!("Index {i}"),
                    "Data segments may not have other keys".into(),
                ));
                continue;
            }
            let Some(raw) = b64(d) else {
                problems.push((format!("Index {i}"), "Invalid base64 data".into()));
                continue;
            };
            md5.update(hex::encode(Md5::digest(&raw)).as_bytes());
            total += raw.len() as u64;
            segs.push(Segment {
                name: None,
                hash: None,
                bytes: None,
                content_type: None,
                last_modified: None,
                range: None,
                sub_slo: None,
                data: Some(d.clone()),
            });
            continue;
        }
        let Some(path) = a.path.as_deref() else {
            problems.push((format!("Index {i}"), "Missing \"path\" or \"data\"".into()));
            continue;
        };
        let p = path.trim_start_matches('/');
        let Some((c, o)) = p
            .split_once('/')
            .filter(|(c, o)| !c.is_empty() && !o.is_empty())
        else {
            problems.push((path.to_string(), "Invalid path".into()));
            continue;
        };
        if c == ctx.container() && o == ctx.object() {
            problems.push((path.to_string(), "May not reference itself".into()));
            continue;
        }
        let seg_ctx = ctx.at(&ctx.target.account, c, o)?;
        if let Err(f) = super::object::may_read(&seg_ctx).await {
            problems.push((
                path.to_string(),
                format!(
                    "{} {}",
                    f.status.as_u16(),
                    f.status.canonical_reason().unwrap_or("")
                ),
            ));
            continue;
        }
        let Some(seg) = live(ctx, &ctx.target.account, c, o).await? else {
            problems.push((path.to_string(), "404 Not Found".into()));
            continue;
        };
        // A segment may be a link: what counts is what it leads to.
        let seg = if super::symlink::is_link(&seg) {
            match super::symlink::resolve(&seg_ctx, &seg).await {
                Ok((_, t, _)) => t,
                Err(f) => {
                    problems.push((
                        path.to_string(),
                        format!(
                            "{} {}",
                            f.status.as_u16(),
                            f.status.canonical_reason().unwrap_or("")
                        ),
                    ));
                    continue;
                }
            }
        } else {
            seg
        };
        let sub = is_slo(&seg);
        let (size, etag) = if sub {
            (
                seg.meta
                    .get(SLO_SIZE)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0u64),
                seg.meta.get(SLO_ETAG).cloned().unwrap_or_default(),
            )
        } else {
            (seg.size as u64, seg.etag.clone())
        };
        if let Some(want) = a.size_bytes {
            if want != size {
                problems.push((path.to_string(), "Size Mismatch".into()));
                continue;
            }
        }
        if let Some(want) = a.etag.as_deref() {
            if want.trim_matches('"') != etag {
                problems.push((path.to_string(), "Etag Mismatch".into()));
                continue;
            }
        }
        let range = match a.range.as_deref() {
            Some(r) => match parse_range(r, size) {
                Some((x, y)) => Some(format!("{}-{}", x, y - 1)),
                None => {
                    problems.push((path.to_string(), "Unsatisfiable Range".into()));
                    continue;
                }
            },
            None => None,
        };
        if size == 0 && range.is_none() {
            problems.push((
                path.to_string(),
                "Too small; each segment must be at least 1 byte.".into(),
            ));
            continue;
        }
        match &range {
            Some(r) => md5.update(format!("{etag}:{r};").as_bytes()),
            None => md5.update(etag.as_bytes()),
        }
        let s = Segment {
            name: Some(format!("/{c}/{o}")),
            hash: Some(etag),
            bytes: Some(size),
            content_type: Some(seg.content_type.clone()),
            last_modified: Some(time::iso(seg.ts)),
            range,
            sub_slo: sub.then_some(true),
            data: None,
        };
        total += s.len();
        segs.push(s);
    }
    if !problems.is_empty() {
        return Err(Refused(Fail::of(StatusCode::BAD_REQUEST), problems));
    }
    let slo_etag = hex::encode(md5.finalize());
    if let Some(want) = ctx.h("etag") {
        if want.trim_matches('"') != slo_etag {
            return Err(no(Fail::of(StatusCode::UNPROCESSABLE_ENTITY)));
        }
    }
    let manifest =
        serde_json::to_vec(&segs).map_err(|_| Fail::of(StatusCode::INTERNAL_SERVER_ERROR))?;
    let len = manifest.len() as u64;
    let w = ctx
        .state
        .objects
        .blobs
        .put(
            futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(manifest))]),
            Some(len),
            constraints::MAX_FILE_SIZE,
        )
        .await?;
    let mut meta = super::object::meta_of(ctx);
    meta.insert(MARK.into(), "True".into());
    meta.insert(SLO_ETAG.into(), slo_etag.clone());
    meta.insert(SLO_SIZE.into(), total.to_string());
    let obj = Object {
        name: ctx.object().to_string(),
        ts: time::now(),
        size: w.size as i64,
        etag: w.md5,
        content_type: super::object::content_type(ctx, ctx.object()),
        blob: w.id,
        inline: w.inline,
        meta,
        delete_at: super::object::delete_at(ctx)?,
    };
    let none_match = super::object::if_none_match(ctx)?;
    let o = super::object::store(ctx, ctx.container(), obj, none_match).await?;
    let mut h = HeaderMap::new();
    set(&mut h, "etag", format!("\"{slo_etag}\""));
    set(&mut h, "last-modified", time::http_date(o.ts));
    Ok(super::empty(StatusCode::CREATED, h))
}

/// The stored manifest's segments.
async fn manifest(ctx: &Ctx, o: &Object) -> Result<Vec<Segment>, Fail> {
    use futures_util::StreamExt;
    let mut s = ctx
        .state
        .objects
        .blobs
        .read(&o.blob, 0, o.size as u64)
        .await?;
    let mut buf = Vec::with_capacity(o.size as usize);
    while let Some(b) = s.next().await {
        buf.extend_from_slice(&b?);
    }
    serde_json::from_slice(&buf).map_err(|_| Fail::of(StatusCode::INTERNAL_SERVER_ERROR))
}

/// The pieces of a manifest's bytes, nested manifests expanded.
pub async fn pieces(ctx: &Ctx, o: &Object) -> Result<Vec<Piece>, Fail> {
    pieces_at(ctx, o, 0).await
}

async fn pieces_at(ctx: &Ctx, o: &Object, level: usize) -> Result<Vec<Piece>, Fail> {
    if level >= MAX_DEPTH {
        // Swift's slo answers this with the plain 409.
        return Err(Fail::of(StatusCode::CONFLICT));
    }
    let mut out = Vec::new();
    let mut stack: Vec<(Vec<Segment>, usize)> = vec![(manifest(ctx, o).await?, 0)];
    // (segments, next index); ranges of nested manifests are applied by
    // slicing the nested run afterwards.
    while let Some((segs, i)) = stack.pop() {
        if i >= segs.len() {
            continue;
        }
        let s = segs[i].clone();
        stack.push((segs, i + 1));
        if let Some(d) = &s.data {
            out.push(Piece::inline(b64(d).unwrap_or_default()));
            continue;
        }
        let name = s.name.clone().unwrap_or_default();
        let p = name.trim_start_matches('/');
        let Some((c, n)) = p.split_once('/') else {
            continue;
        };
        let seg_ctx = ctx.at(&ctx.target.account, c, n)?;
        // The manifest was readable; a segment that is not is a conflict.
        super::object::may_read(&seg_ctx).await.map_err(|_| {
            Fail::msg(
                StatusCode::CONFLICT,
                format!("Segment {name} is not readable"),
            )
        })?;
        let seg = live(ctx, &ctx.target.account, c, n)
            .await?
            .ok_or_else(|| Fail::msg(StatusCode::CONFLICT, format!("Segment {name} is missing")))?;
        // A link on the way is followed (it is no level of nesting).
        let (seg, level) = if super::symlink::is_link(&seg) {
            let t = super::symlink::resolve(&seg_ctx, &seg)
                .await
                .map_err(|_| {
                    Fail::msg(
                        StatusCode::CONFLICT,
                        format!("Segment {name} is a broken link"),
                    )
                })?
                .1;
            (t, level)
        } else {
            (seg, level)
        };
        let sub_pieces = if is_slo(&seg) {
            Box::pin(pieces_at(ctx, &seg, level + 1)).await?
        } else {
            vec![Piece {
                blob: seg.blob.clone(),
                offset: 0,
                len: seg.size as u64,
                inline: None,
            }]
        };
        let total: u64 = sub_pieces.iter().map(|p| p.len).sum();
        match s.range.as_deref().and_then(|r| parse_range(r, total)) {
            Some((a, b)) => out.extend(super::large::slice(&sub_pieces, a, b)),
            None => out.extend(sub_pieces),
        }
    }
    Ok(out)
}

/// GET or HEAD of a static large object.
pub async fn get(ctx: &Ctx, o: &Object, mut h: HeaderMap) -> Res {
    let head = ctx.method == "HEAD";
    h.remove("content-length");
    if ctx.q("multipart-manifest") == Some("get") {
        let segs = manifest(ctx, o).await?;
        let body = if ctx.q("format") == Some("raw") {
            raw(&segs)
        } else {
            serde_json::to_vec(&segs).unwrap_or_default()
        };
        if ctx.q("format") != Some("raw") {
            set(&mut h, "content-type", "application/json; charset=utf-8");
        }
        set(&mut h, "content-length", body.len().to_string());
        if ctx.q("format") == Some("raw") {
            h.remove("etag");
            set(&mut h, "etag", hex::encode(Md5::digest(&body)));
        }
        let b = if head {
            Body::empty()
        } else {
            Body::from(body)
        };
        return Ok((StatusCode::OK, h, b).into_response());
    }
    let slo_etag = o.meta.get(SLO_ETAG).cloned().unwrap_or_default();
    set(&mut h, "etag", format!("\"{slo_etag}\""));
    set(&mut h, "x-manifest-etag", &o.etag);
    if let Some(r) = conditional(ctx, &slo_etag, o.ts, &h) {
        return Ok(r);
    }
    super::object::disposition(ctx, &mut h);
    let all = pieces(ctx, o).await?;
    if let Some(n) = ctx.q("part-number") {
        return part(ctx, o, n, all, h, head).await;
    }
    serve_pieces(ctx, all, &mut h, head).await
}

/// `?part-number=N`: the Nth segment of the manifest (1-based).
async fn part(
    ctx: &Ctx,
    o: &Object,
    n: &str,
    all: Vec<Piece>,
    mut h: HeaderMap,
    head: bool,
) -> Res {
    let segs = manifest(ctx, o).await?;
    let total: u64 = o
        .meta
        .get(SLO_SIZE)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let n: usize = match n.parse() {
        Ok(n) if n > 0 => n,
        _ => {
            let body = if head {
                ""
            } else {
                "Part number must be an integer greater than 0"
            };
            return Err(Fail::msg(StatusCode::BAD_REQUEST, body));
        }
    };
    set(&mut h, "x-parts-count", segs.len().to_string());
    if n > segs.len() {
        let mut r = Fail::msg(
            StatusCode::RANGE_NOT_SATISFIABLE,
            if head {
                ""
            } else {
                "The requested part number is not satisfiable"
            },
        )
        .into_response();
        for (k, v) in h.iter() {
            if k == "x-parts-count"
                || k == "etag"
                || k == "x-manifest-etag"
                || k == "x-static-large-object"
            {
                r.headers_mut().insert(k.clone(), v.clone());
            }
        }
        set(r.headers_mut(), "content-range", format!("bytes */{total}"));
        return Ok(r);
    }
    let start: u64 = segs[..n - 1].iter().map(Segment::len).sum();
    let len = segs[n - 1].len();
    let mut c = ctx.at(&ctx.target.account, ctx.container(), ctx.object())?;
    c.headers.insert(
        "range",
        axum::http::HeaderValue::from_str(&format!("bytes={}-{}", start, start + len - 1))
            .map_err(|_| Fail::of(StatusCode::INTERNAL_SERVER_ERROR))?,
    );
    serve_pieces(&c, all, &mut h, head).await
}

/// `DELETE ?multipart-manifest=delete`: the manifest and its segments
/// (nested manifests' too), answered as a bulk delete is.
pub async fn delete(ctx: &Ctx) -> Res {
    super::object::may_write(ctx).await?;
    let o = live(ctx, &ctx.target.account, ctx.container(), ctx.object())
        .await?
        .ok_or_else(Fail::not_found)?;
    let mut targets: Vec<(String, String)> = Vec::new();
    if is_slo(&o) {
        collect(ctx, &o, &mut targets, 0).await?;
    }
    targets.push((ctx.container().to_string(), ctx.object().to_string()));
    let mut deleted = 0;
    let mut missing = 0;
    let mut errs = Vec::new();
    for (c, n) in &targets {
        let t = ctx.at(&ctx.target.account, c, n)?;
        if let Err(f) = super::object::may_write(&t).await {
            errs.push((
                format!("/{c}/{n}"),
                format!(
                    "{} {}",
                    f.status.as_u16(),
                    f.status.canonical_reason().unwrap_or("")
                ),
            ));
            continue;
        }
        match super::object::remove(&t, c, n).await? {
            true => deleted += 1,
            false => missing += 1,
        }
    }
    Ok(super::bulk::report(ctx, deleted, missing, &errs))
}

async fn collect(
    ctx: &Ctx,
    o: &Object,
    out: &mut Vec<(String, String)>,
    depth: usize,
) -> Result<(), Fail> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for s in manifest(ctx, o).await? {
        let Some(name) = s.name else { continue };
        let Some((c, n)) = name.trim_start_matches('/').split_once('/') else {
            continue;
        };
        if s.sub_slo == Some(true) {
            if let Some(sub) = live(ctx, &ctx.target.account, c, n).await? {
                Box::pin(collect(ctx, &sub, out, depth + 1)).await?;
            }
        }
        out.push((c.to_string(), n.to_string()));
    }
    Ok(())
}

/// `/info`'s `slo` section.
pub fn info() -> serde_json::Value {
    serde_json::json!({
        "max_manifest_segments": MAX_SEGMENTS,
        "max_manifest_size": MAX_MANIFEST_SIZE,
        "min_segment_size": 1,
        "yield_frequency": 10,
        "allow_async_delete": false,
    })
}

/// The bytes `[a, b)` of part `n` (1-based) of a manifest, if it has one.
pub async fn part_span(ctx: &Ctx, o: &Object, n: usize) -> Result<Option<(u64, u64)>, Fail> {
    let segs = manifest(ctx, o).await?;
    if n == 0 || n > segs.len() {
        return Ok(None);
    }
    let start: u64 = segs[..n - 1].iter().map(Segment::len).sum();
    Ok(Some((start, start + segs[n - 1].len())))
}

/// A manifest in the form a PUT takes.
fn raw(segs: &[Segment]) -> Vec<u8> {
    let raw: Vec<serde_json::Value> = segs
        .iter()
        .map(|s| match &s.data {
            Some(d) => serde_json::json!({"data": d}),
            None => {
                let mut v =
                    serde_json::json!({"path": s.name, "etag": s.hash, "size_bytes": s.bytes});
                if let Some(r) = &s.range {
                    v["range"] = serde_json::json!(r);
                }
                v
            }
        })
        .collect();
    serde_json::to_vec(&raw).unwrap_or_default()
}

/// Copies the manifest `o` (read through `src`) to the target of `ctx` in
/// another account: stored as a manifest PUT there would be, its segments
/// checked in that account.
pub async fn copy_manifest(ctx: &Ctx, src: &Ctx, o: &Object) -> Res {
    let body = raw(&manifest(src, o).await?);
    let mut dest = ctx.at(&ctx.target.account, ctx.container(), ctx.object())?;
    dest.query.retain(|(k, _)| k != "multipart-manifest");
    dest.headers.remove("range");
    put(&dest, Body::from(body)).await
}
