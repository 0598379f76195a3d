//! Objects: PUT (streamed into the blob store, its MD5 checked against
//! `ETag`), GET and HEAD (conditional requests, single and multiple
//! ranges), POST (metadata), DELETE, COPY and `X-Copy-From`.

use super::large::{serve_pieces, Piece};
use super::range;
use super::{empty, put_meta, set, Ctx, Fail, Res, Target};
use crate::access;
use crate::table::{self, Meta, Object, Stored};
use crate::{constraints, time};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

pub const META: &str = "x-object-meta-";

/// Headers an object keeps as they were sent (besides `X-Object-Meta-*`).
pub const STORED: &[&str] = &[
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
    "x-robots-tag",
    "x-object-manifest",
];

pub async fn handle(ctx: Ctx, body: Body) -> Res {
    match ctx.method.as_str() {
        "PUT" => put(ctx, body).await,
        "GET" | "HEAD" => get(ctx).await,
        "POST" => post(ctx).await,
        "DELETE" => delete(ctx).await,
        "COPY" => copy_method(ctx).await,
        "OPTIONS" => {
            let mut h = HeaderMap::new();
            set(
                &mut h,
                "allow",
                "HEAD, GET, PUT, POST, DELETE, COPY, OPTIONS",
            );
            Ok(empty(StatusCode::OK, h))
        }
        _ => Err(Fail::of(StatusCode::METHOD_NOT_ALLOWED)),
    }
}

/// The caller may change objects of the target's container.
pub async fn may_write(ctx: &Ctx) -> Result<(), Fail> {
    if ctx.is_owner() {
        return Ok(());
    }
    if ctx.who.is_some() {
        let c = table::container(
            &ctx.state.objects.store,
            &ctx.target.account,
            ctx.container(),
        )
        .await?;
        if c.is_some_and(|c| {
            access::write_allowed(
                c.meta.get("x-container-write").map(String::as_str),
                ctx.who.as_ref(),
            )
        }) {
            return Ok(());
        }
    }
    Err(ctx.denied())
}

/// The caller may read objects of the target's container.
pub async fn may_read(ctx: &Ctx) -> Result<(), Fail> {
    if ctx.may_read_account() {
        return Ok(());
    }
    super::container::readable(ctx, false).await.map(|_| ())
}

/// The object, unless it is missing or past its `X-Delete-At`.
pub async fn live(
    ctx: &Ctx,
    account: &str,
    container: &str,
    name: &str,
) -> Result<Option<Object>, Fail> {
    let o = table::object(&ctx.state.objects.store, account, container, name).await?;
    Ok(o.filter(|o| o.delete_at.is_none_or(|d| d > time::now_secs())))
}

/// An object's response headers (without `Content-Length`).
pub fn headers(o: &Object) -> HeaderMap {
    let mut h = HeaderMap::new();
    set(&mut h, "content-type", &o.content_type);
    set(&mut h, "etag", &o.etag);
    set(&mut h, "last-modified", time::http_date(o.ts));
    set(&mut h, "x-timestamp", time::x_timestamp(o.ts));
    set(&mut h, "accept-ranges", "bytes");
    if let Some(d) = o.delete_at {
        set(&mut h, "x-delete-at", d.to_string());
    }
    put_meta(&mut h, &o.meta);
    super::symlink::link_headers(o, &mut h);
    h
}

fn etags(list: &str) -> Vec<String> {
    list.split(',')
        .map(|e| {
            e.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string()
        })
        .filter(|e| !e.is_empty())
        .collect()
}

fn etag_matches(list: &str, etag: &str) -> bool {
    etags(list).iter().any(|e| e == "*" || e == etag)
}

/// Swift's conditional GET/HEAD: `None` to go on, or the answer (304/412).
pub fn conditions(ctx: &Ctx, etag: &str, ts: i64) -> Option<Fail> {
    let last = (ts + time::PER_SEC - 1) / time::PER_SEC;
    if let Some(m) = ctx.h("if-match") {
        if !etag_matches(m, etag) {
            return Some(Fail::of(StatusCode::PRECONDITION_FAILED));
        }
    }
    // Swift checks this one even when If-Match passed.
    if let Some(t) = ctx.h("if-unmodified-since").and_then(time::parse_http_date) {
        if last > t {
            return Some(Fail::of(StatusCode::PRECONDITION_FAILED));
        }
    }
    if let Some(m) = ctx.h("if-none-match") {
        if etag_matches(m, etag) {
            return Some(Fail::msg(StatusCode::NOT_MODIFIED, String::new()));
        }
    } else if let Some(t) = ctx.h("if-modified-since").and_then(time::parse_http_date) {
        if last <= t {
            return Some(Fail::msg(StatusCode::NOT_MODIFIED, String::new()));
        }
    }
    None
}

async fn get(ctx: Ctx) -> Res {
    may_read(&ctx).await?;
    let o = live(&ctx, &ctx.target.account, ctx.container(), ctx.object())
        .await?
        .ok_or_else(Fail::not_found)?;
    if super::symlink::is_link(&o) && ctx.q("symlink") != Some("get") {
        return super::symlink::follow(&ctx, &o, 0).await;
    }
    answer(&ctx, &o).await
}

/// A GET or HEAD of `o` (readable by the caller): a large object's
/// bytes, or its own, after the conditions of the request.
pub async fn answer(ctx: &Ctx, o: &Object) -> Res {
    let ctx = ctx.at(&ctx.target.account, ctx.container(), ctx.object())?;
    let o = o.clone();
    let mut h = headers(&o);
    if super::slo::is_slo(&o) {
        return super::slo::get(&ctx, &o, h).await;
    }
    if ctx.q("part-number").is_some() {
        // A part number of an object that is no manifest: all of it.
        set(&mut h, "x-parts-count", "1");
    }
    if ctx.q("multipart-manifest") != Some("get") {
        if let Some(m) = o.meta.get("x-object-manifest") {
            return super::large::get_dlo(&ctx, &o, m, h).await;
        }
    }
    if let Some(r) = super::large::conditional(&ctx, &o.etag, o.ts, &h) {
        return Ok(r);
    }
    let head = ctx.method == "HEAD";
    disposition(&ctx, &mut h);
    serve(&ctx, &o.blob, o.size as u64, &mut h, head).await
}

/// A temporary URL's `Content-Disposition`.
pub fn disposition(ctx: &Ctx, h: &mut HeaderMap) {
    use super::tempurl::Disposition;
    match ctx.grant.as_ref().and_then(|g| g.disposition.as_ref()) {
        Some(Disposition::Set(d)) => set(h, "content-disposition", d),
        Some(Disposition::Default(d)) if !h.contains_key("content-disposition") => {
            set(h, "content-disposition", d)
        }
        _ => {}
    }
}

/// Answers with the bytes of a blob, honouring `Range`.
pub async fn serve(ctx: &Ctx, blob: &str, len: u64, h: &mut HeaderMap, head: bool) -> Res {
    let pieces = vec![Piece::of_blob(blob, len)];
    serve_pieces(ctx, pieces, h, head).await
}

/// `X-Delete-At` / `X-Delete-After` of a request (seconds since the epoch).
pub fn delete_at(ctx: &Ctx) -> Result<Option<i64>, Fail> {
    let now = time::now_secs();
    if let Some(v) = ctx.h("x-delete-after") {
        let n: i64 = v
            .trim()
            .parse()
            .map_err(|_| Fail::bad("Non-integer X-Delete-After"))?;
        if n < 0 {
            return Err(Fail::bad("X-Delete-After in past"));
        }
        return Ok(Some(now + n));
    }
    if let Some(v) = ctx.h("x-delete-at") {
        let digits = v.trim().split('.').next().unwrap_or("");
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Fail::bad("Non-integer X-Delete-At"));
        }
        // Swift caps far-future times at its largest timestamp.
        let at = digits
            .parse::<i64>()
            .unwrap_or(MAX_DELETE_AT)
            .min(MAX_DELETE_AT);
        if at <= now {
            return Err(Fail::bad("X-Delete-At in past"));
        }
        return Ok(Some(at));
    }
    Ok(None)
}

/// The latest `X-Delete-At` (Swift's largest timestamp, 10 digits).
const MAX_DELETE_AT: i64 = 9_999_999_999;

/// Guesses a content type from a name's extension.
pub fn guess_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "text" | "log" => "text/plain",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "csv" => "text/csv",
        "js" => "application/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp4" => "video/mp4",
        "iso" => "application/x-iso9660-image",
        _ => "application/octet-stream",
    }
}

/// The stored headers a PUT or POST sets.
pub fn meta_of(ctx: &Ctx) -> Meta {
    // An object keeps a metadata item even with an empty value (unlike a
    // container or an account, where empty removes).
    let mut m = Meta::new();
    for (name, value) in &ctx.headers {
        if name.as_str().starts_with(META) {
            let v = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
            m.insert(name.as_str().to_string(), v);
        }
    }
    for k in STORED {
        if let Some(v) = ctx.h(k) {
            m.insert(k.to_string(), v.to_string());
        }
    }
    m
}

pub fn content_type(ctx: &Ctx, name: &str) -> String {
    let detect = ctx
        .h("x-detect-content-type")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    match ctx
        .h("content-type")
        .filter(|c| !c.trim().is_empty() && !detect)
    {
        Some(c) => c.to_string(),
        None => guess_type(name).to_string(),
    }
}

/// Refuses a PUT whose `If-None-Match` the stored object fails.
pub fn if_none_match(ctx: &Ctx) -> Result<bool, Fail> {
    match ctx.h("if-none-match").map(str::trim) {
        None => Ok(false),
        Some("*") => Ok(true),
        Some(_) => Err(Fail::bad("If-None-Match only supports *")),
    }
}

/// Stores `obj` at the target, deleting what it replaced; `Err` and the
/// new blob deleted if it could not be stored.
pub async fn store(
    ctx: &Ctx,
    container: &str,
    obj: Object,
    none_match: bool,
) -> Result<Object, Fail> {
    let objects = &ctx.state.objects;
    let meta = table::account_meta(&objects.store, &ctx.target.account).await?;
    let (max_bytes, max_count) = super::account::quotas(&meta);
    if max_bytes.is_some() || max_count.is_some() {
        let account = table::account(&objects.store, &ctx.target.account).await?;
        let old = live(ctx, &ctx.target.account, container, &obj.name).await?;
        let old_size = old.as_ref().map_or(0, |o| o.size);
        let over_bytes = max_bytes.is_some_and(|q| account.bytes - old_size + obj.size > q);
        let over_count = max_count.is_some_and(|q| old.is_none() && account.objects + 1 > q);
        if over_bytes || over_count {
            objects.blobs.delete(&obj.blob).await;
            return Err(Fail::msg(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Upload exceeds quota.",
            ));
        }
    }
    let Some(c) = table::container(&objects.store, &ctx.target.account, container).await? else {
        objects.blobs.delete(&obj.blob).await;
        return Err(Fail::not_found());
    };
    if !none_match {
        if let Err(f) = super::versions::before_overwrite(ctx, &c.meta, &obj.name).await {
            objects.blobs.delete(&obj.blob).await;
            return Err(f);
        }
    }
    store_plain(ctx, container, obj, none_match).await
}

/// Stores `obj` as [`store`] does, without keeping the version it replaces.
pub async fn store_plain(
    ctx: &Ctx,
    container: &str,
    obj: Object,
    none_match: bool,
) -> Result<Object, Fail> {
    let objects = &ctx.state.objects;
    let size = obj.size;
    let check: crate::batch::Check = Box::new(move |v: &table::WriteView| {
        if none_match
            && v.old
                .is_some_and(|o| o.delete_at.is_none_or(|d| d > time::now_secs()))
        {
            return Err(crate::batch::Refusal::Exists);
        }
        quota(v, size)
    });
    let res = objects
        .puts
        .put(&ctx.target.account, container, obj.clone(), check)
        .await;
    let fail = match res {
        Ok(Stored::Done { replaced }) => {
            if let Some(b) = replaced {
                objects.blobs.delete(&b).await;
                let _ = table::forget_garbage(&objects.store, &b).await;
            }
            return Ok(obj);
        }
        Ok(Stored::NoContainer) => Fail::not_found(),
        Ok(Stored::Refused(crate::batch::Refusal::Exists)) => {
            Fail::of(StatusCode::PRECONDITION_FAILED)
        }
        Ok(Stored::Refused(crate::batch::Refusal::OverQuota)) => {
            Fail::msg(StatusCode::PAYLOAD_TOO_LARGE, "Upload exceeds quota.")
        }
        Err(e) => e.into(),
    };
    objects.blobs.delete(&obj.blob).await;
    Err(fail)
}

/// Container quotas (`X-Container-Meta-Quota-Bytes`, `-Count`) for an
/// object of `size` bytes.
fn quota(v: &table::WriteView, size: i64) -> Result<(), crate::batch::Refusal> {
    let meta = &v.container.meta;
    let limit = |k: &str| meta.get(k).and_then(|q| q.parse::<i64>().ok());
    let old_size = v.old.map_or(0, |o| o.size);
    if limit("x-container-meta-quota-bytes")
        .is_some_and(|q| v.container.bytes_used - old_size + size > q)
    {
        return Err(crate::batch::Refusal::OverQuota);
    }
    if v.old.is_none()
        && limit("x-container-meta-quota-count").is_some_and(|q| v.container.object_count + 1 > q)
    {
        return Err(crate::batch::Refusal::OverQuota);
    }
    Ok(())
}

fn created(o: &Object) -> Response {
    let mut h = HeaderMap::new();
    set(&mut h, "etag", &o.etag);
    set(&mut h, "last-modified", time::http_date(o.ts));
    set(&mut h, "content-type", "text/html; charset=UTF-8");
    empty(StatusCode::CREATED, h)
}

async fn put(ctx: Ctx, body: Body) -> Res {
    may_write(&ctx).await?;
    if ctx.q("multipart-manifest") == Some("put") {
        return super::slo::put(&ctx, body).await;
    }
    if let Some(src) = ctx.h("x-copy-from").map(str::to_string) {
        let account = ctx.h("x-copy-from-account").map(str::to_string);
        return copy(
            &ctx,
            &src,
            account.as_deref(),
            ctx.container(),
            ctx.object(),
        )
        .await;
    }
    let len = match ctx.h("content-length") {
        Some(l) => Some(
            l.trim()
                .parse::<u64>()
                .map_err(|_| Fail::bad("Invalid Content-Length"))?,
        ),
        None => None,
    };
    let chunked = ctx
        .h("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    if len.is_none() && !chunked {
        return Err(Fail::of(StatusCode::LENGTH_REQUIRED));
    }
    if len.is_some_and(|l| l > constraints::MAX_FILE_SIZE) {
        return Err(Fail::of(StatusCode::PAYLOAD_TOO_LARGE));
    }
    constraints::check_metadata(&ctx.headers, META).map_err(Fail::bad)?;
    check_manifest(&ctx)?;
    let link = super::symlink::on_put(&ctx, len).await?;
    let delete_at = delete_at(&ctx)?;
    let none_match = if_none_match(&ctx)?;
    if none_match
        && live(&ctx, &ctx.target.account, ctx.container(), ctx.object())
            .await?
            .is_some()
    {
        return Err(Fail::of(StatusCode::PRECONDITION_FAILED));
    }
    let expect = ctx
        .h("etag")
        .map(|e| e.trim().trim_matches('"').to_ascii_lowercase());
    let w = ctx
        .state
        .objects
        .blobs
        .put(
            body.into_data_stream(),
            if chunked { None } else { len },
            constraints::MAX_FILE_SIZE,
        )
        .await?;
    if expect.as_deref().is_some_and(|e| e != w.md5) {
        ctx.state.objects.blobs.delete(&w.id).await;
        return Err(Fail::of(StatusCode::UNPROCESSABLE_ENTITY));
    }
    let mut obj = Object {
        name: ctx.object().to_string(),
        ts: time::now(),
        size: w.size as i64,
        etag: w.md5,
        content_type: content_type(&ctx, ctx.object()),
        blob: w.id,
        inline: w.inline,
        meta: meta_of(&ctx),
        delete_at,
    };
    if let Some((keep, target_type)) = link {
        obj.meta.extend(keep);
        if ctx.h("content-type").is_none_or(|c| c.trim().is_empty()) {
            obj.content_type = target_type.unwrap_or_else(|| "application/symlink".into());
        }
    }
    let container = ctx.container().to_string();
    let o = store(&ctx, &container, obj, none_match).await?;
    Ok(created(&o))
}

/// An `X-Object-Manifest` names `<container>/<prefix>`.
fn check_manifest(ctx: &Ctx) -> Result<(), Fail> {
    match ctx.h("x-object-manifest") {
        Some(v) if super::large::manifest_ref(v).is_none() => Err(Fail::bad(
            "X-Object-Manifest must be in the format container/prefix",
        )),
        _ => Ok(()),
    }
}

async fn post(ctx: Ctx) -> Res {
    may_write(&ctx).await?;
    if ctx.h("x-symlink-target").is_some() {
        return Err(Fail::bad(
            "A PUT request is required to set a symlink target",
        ));
    }
    constraints::check_metadata(&ctx.headers, META).map_err(Fail::bad)?;
    check_manifest(&ctx)?;
    let delete_at = delete_at(&ctx)?;
    let remove_delete_at = ctx.headers.contains_key("x-remove-delete-at");
    let meta = meta_of(&ctx);
    let ct = ctx
        .h("content-type")
        .filter(|c| !c.trim().is_empty())
        .map(str::to_string);
    let now_secs = time::now_secs();
    let found = table::update_object(
        &ctx.state.objects.store,
        &ctx.target.account,
        ctx.container(),
        ctx.object(),
        |o| {
            if o.delete_at.is_some_and(|d| d <= now_secs) {
                return;
            }
            o.ts = time::now();
            // System metadata (a large object's, a symlink's) outlives a POST.
            let kept: Vec<(String, String)> = o
                .meta
                .iter()
                .filter(|(k, _)| k.starts_with("x-object-sysmeta-") || *k == super::slo::MARK)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            o.meta = meta;
            o.meta.extend(kept);
            if let Some(ct) = ct {
                o.content_type = ct;
            }
            if delete_at.is_some() || remove_delete_at {
                o.delete_at = delete_at;
            }
        },
    )
    .await?;
    match found {
        Some(o) if super::symlink::is_link(&o) && o.delete_at.is_none_or(|d| d > now_secs) => {
            super::symlink::redirect(&ctx, &o)
        }
        Some(o) if o.delete_at.is_none_or(|d| d > now_secs) => {
            let mut h = HeaderMap::new();
            set(&mut h, "content-type", "text/html; charset=UTF-8");
            Ok(empty(StatusCode::ACCEPTED, h))
        }
        _ => Err(Fail::not_found()),
    }
}

async fn delete(ctx: Ctx) -> Res {
    may_write(&ctx).await?;
    if ctx.q("multipart-manifest") == Some("delete") {
        return super::slo::delete(&ctx).await;
    }
    let objects = &ctx.state.objects;
    let if_delete_at = match ctx.h("x-if-delete-at") {
        Some(v) => Some(
            v.trim()
                .parse::<i64>()
                .map_err(|_| Fail::bad("Bad X-If-Delete-At header value"))?,
        ),
        None => None,
    };
    if let Some(at) = if_delete_at {
        let o = live(&ctx, &ctx.target.account, ctx.container(), ctx.object())
            .await?
            .ok_or_else(Fail::not_found)?;
        if o.delete_at != Some(at) {
            return Err(Fail::of(StatusCode::PRECONDITION_FAILED));
        }
    } else if let Some(c) =
        table::container(&objects.store, &ctx.target.account, ctx.container()).await?
    {
        if let Some(r) = super::versions::delete(&ctx, &c.meta).await? {
            return r;
        }
    }
    let gone = table::delete_object(
        &objects.store,
        &ctx.target.account,
        ctx.container(),
        ctx.object(),
        if_delete_at,
    )
    .await?;
    let Some(o) = gone else {
        return Err(Fail::not_found());
    };
    objects.blobs.delete(&o.blob).await;
    table::forget_garbage(&objects.store, &o.blob).await?;
    if o.delete_at.is_some_and(|d| d <= time::now_secs()) {
        return Err(Fail::not_found());
    }
    let mut h = HeaderMap::new();
    set(&mut h, "content-type", "text/html; charset=UTF-8");
    Ok(empty(StatusCode::NO_CONTENT, h))
}

/// `container/object` of a `Destination` or `X-Copy-From` header.
fn split_ref(v: &str, header: &str) -> Result<(String, String), Fail> {
    let v = percent_encoding::percent_decode_str(v.trim())
        .decode_utf8()
        .map_err(|_| {
            Fail::msg(
                StatusCode::PRECONDITION_FAILED,
                "Invalid UTF8 or contains NULL",
            )
        })?;
    let v = v.trim_start_matches('/');
    match v.split_once('/') {
        Some((c, o)) if !c.is_empty() && !o.is_empty() => Ok((c.to_string(), o.to_string())),
        _ => Err(Fail::msg(
            StatusCode::PRECONDITION_FAILED,
            format!("{header} header must be of the form <container name>/<object name>"),
        )),
    }
}

async fn copy_method(ctx: Ctx) -> Res {
    let dest = ctx
        .h("destination")
        .ok_or_else(|| {
            Fail::msg(
                StatusCode::PRECONDITION_FAILED,
                "Destination header required",
            )
        })?
        .to_string();
    let (dc, dobj) = split_ref(&dest, "Destination")?;
    let src = format!("{}/{}", ctx.container(), ctx.object());
    let src_account = ctx.target.account.clone();
    let dest_account = ctx.h("destination-account").map(str::to_string);
    let mut ctx = ctx;
    if let Some(a) = dest_account {
        let t = Target::parse(&format!("/object/v1/{a}/{dc}/x"))?;
        ctx.standing = access::standing(ctx.who.as_ref(), &t.project);
        ctx.target.account = t.account;
        ctx.target.project = t.project;
    }
    ctx.target.container = Some(dc.clone());
    ctx.target.object = Some(dobj.clone());
    may_write(&ctx).await?;
    copy(&ctx, &src, Some(&src_account), &dc, &dobj).await
}

/// Copies the object `src` (`container/object`, in `src_account` or the
/// target's) to `dc/dobj` of the target's account.
async fn copy(ctx: &Ctx, src: &str, src_account: Option<&str>, dc: &str, dobj: &str) -> Res {
    let (sc, so) = split_ref(src, "X-Copy-From")?;
    let account = src_account.unwrap_or(&ctx.target.account).to_string();
    let t = Target::parse(&format!("/object/v1/{account}/{sc}/x"))?;
    let standing = access::standing(ctx.who.as_ref(), &t.project);
    let src_ctx = Ctx {
        state: ctx.state.clone(),
        method: ctx.method.clone(),
        headers: ctx.headers.clone(),
        query: ctx.query.clone(),
        target: Target {
            container: Some(sc.clone()),
            object: Some(so.clone()),
            ..t
        },
        who: ctx.who.clone(),
        standing,
        grant: None,
    };
    may_read(&src_ctx).await?;
    let s = live(&src_ctx, &account, &sc, &so)
        .await?
        .ok_or_else(Fail::not_found)?;
    let (src_ctx, s, account) = if super::symlink::is_link(&s) && ctx.q("symlink") != Some("get") {
        super::symlink::resolve(&src_ctx, &s).await?
    } else {
        (src_ctx, s, account)
    };
    if let Some(f) = conditions(&src_ctx, &s.etag, s.ts) {
        if f.status == StatusCode::NOT_MODIFIED {
            return Err(Fail::of(StatusCode::PRECONDITION_FAILED));
        }
        return Err(f);
    }
    constraints::check_metadata(&ctx.headers, META).map_err(Fail::bad)?;
    let fresh = ctx
        .h("x-fresh-metadata")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut meta = if fresh { Meta::new() } else { s.meta.clone() };
    // Metadata sent with a copy replaces the source's of the same name.
    meta.extend(meta_of(ctx));
    let (pieces, expanded) = super::large::pieces_of(&src_ctx, &account, &s).await?;
    if expanded {
        // The copy is the bytes, no longer a manifest.
        meta.remove("x-object-manifest");
        meta.retain(|k, _| k != super::slo::MARK && !k.starts_with("x-object-sysmeta-slo-"));
    }
    let len: u64 = pieces.iter().map(|p| p.len).sum();
    if !expanded && super::slo::is_slo(&s) && account != ctx.target.account {
        // The manifest's segments are named within its account: in another
        // account it must hold as a new manifest there.
        return super::slo::copy_manifest(ctx, &src_ctx, &s).await;
    }
    let part = match ctx.q("part-number") {
        Some(n) if expanded && super::slo::is_slo(&s) => {
            let n = n
                .parse::<usize>()
                .map_err(|_| Fail::bad("Part number must be an integer greater than 0"))?;
            Some(
                super::slo::part_span(&src_ctx, &s, n)
                    .await?
                    .ok_or_else(|| {
                        Fail::msg(
                            StatusCode::RANGE_NOT_SATISFIABLE,
                            "The requested part number is not satisfiable",
                        )
                    })?,
            )
        }
        _ => None,
    };
    let span = match ctx.h("range").and_then(range::parse) {
        _ if part.is_some() => part,
        Some(specs) => match range::resolve(&specs, len).as_slice() {
            [] => {
                let mut f = Fail::of(StatusCode::RANGE_NOT_SATISFIABLE);
                f.body = format!("bytes */{len}");
                return Err(f);
            }
            [one] => Some(*one),
            _ => None,
        },
        None => None,
    };
    let (blob, size, etag, inline) = match span {
        None if !expanded => (
            ctx.state.objects.blobs.duplicate(&s.blob).await?,
            s.size,
            s.etag.clone(),
            None,
        ),
        span => {
            let (a, b) = span.unwrap_or((0, len));
            let w = super::large::materialize(ctx, pieces, a, b).await?;
            (w.id, w.size as i64, w.md5, w.inline)
        }
    };
    let obj = Object {
        name: dobj.to_string(),
        ts: time::now(),
        size,
        etag,
        content_type: ctx
            .h("content-type")
            .filter(|c| !c.trim().is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| s.content_type.clone()),
        blob,
        inline,
        meta,
        delete_at: delete_at(ctx)?,
    };
    let o = store(ctx, dc, obj, if_none_match(ctx)?).await?;
    let mut r = created(&o);
    put_meta(r.headers_mut(), &o.meta);
    let h = r.headers_mut();
    let quoted = super::quote;
    set(
        h,
        "x-copied-from",
        format!("{}/{}", quoted(&sc), quoted(&so)),
    );
    set(h, "x-copied-from-last-modified", time::http_date(s.ts));
    if account != ctx.target.account {
        set(h, "x-copied-from-account", &account);
    }
    Ok(r)
}

/// Deletes an object (its blob then); whether there was one.
pub async fn remove(ctx: &Ctx, container: &str, name: &str) -> Result<bool, Fail> {
    let store = &ctx.state.objects.store;
    match table::delete_object(store, &ctx.target.account, container, name, None).await? {
        Some(o) => {
            ctx.state.objects.blobs.delete(&o.blob).await;
            table::forget_garbage(store, &o.blob).await?;
            Ok(o.delete_at.is_none_or(|d| d > time::now_secs()))
        }
        None => Ok(false),
    }
}
