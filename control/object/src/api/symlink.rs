//! Symlinks (Swift's `symlink` middleware): a zero-byte object PUT with
//! `X-Symlink-Target: <container>/<object>` (and optionally
//! `X-Symlink-Target-Account`) answers reads with its target's bytes and a
//! `Content-Location` naming it, following at most two links; with
//! `X-Symlink-Target-Etag` it is a static link, refused (409) when the
//! target's ETag is not that one. `?symlink=get` reads the link itself;
//! a POST to a link changes the link and answers 307 to the target.

use super::{empty, quote, set, Ctx, Fail, Res};
use crate::table::Object;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

pub const TARGET: &str = "x-object-sysmeta-symlink-target";
pub const TARGET_ACCOUNT: &str = "x-object-sysmeta-symlink-target-account";
pub const TARGET_ETAG: &str = "x-object-sysmeta-symlink-target-etag";
pub const TARGET_BYTES: &str = "x-object-sysmeta-symlink-target-bytes";
/// A static link to a large object keeps its MD5 of MD5s for listings.
pub const TARGET_SLO_ETAG: &str = "x-object-sysmeta-symlink-target-slo-etag";
/// Links followed before a read gives up (Swift's `symloop_max`).
pub const SYMLOOP_MAX: usize = 2;

pub fn is_link(o: &Object) -> bool {
    o.meta.contains_key(TARGET)
}

/// The link's target: account, container, object.
pub fn target_of(o: &Object, own_account: &str) -> Option<(String, String, String)> {
    let t = o.meta.get(TARGET)?;
    let (c, n) = t.split_once('/')?;
    let account = o
        .meta
        .get(TARGET_ACCOUNT)
        .cloned()
        .unwrap_or_else(|| own_account.to_string());
    Some((account, c.to_string(), n.to_string()))
}

/// `/v1/<account>/<container>/<object>`, quoted, as listings and
/// `Content-Location` show a target.
pub fn location(account: &str, container: &str, object: &str) -> String {
    format!(
        "/v1/{}/{}/{}",
        quote(account),
        quote(container),
        quote(object)
    )
}

/// The headers a link shows of itself (`?symlink=get`, HEAD).
pub fn link_headers(o: &Object, h: &mut HeaderMap) {
    if let Some(t) = o.meta.get(TARGET) {
        set(h, "x-symlink-target", quote(t));
    }
    if let Some(a) = o.meta.get(TARGET_ACCOUNT) {
        set(h, "x-symlink-target-account", quote(a));
    }
    if let Some(e) = o.meta.get(TARGET_ETAG) {
        set(h, "x-symlink-target-etag", e);
    }
    if let Some(b) = o.meta.get(TARGET_BYTES) {
        set(h, "x-symlink-target-bytes", b);
    }
}

/// Checks a PUT that makes a link and returns the system metadata to keep
/// (and, for a static link, its target's content type).
pub async fn on_put(
    ctx: &Ctx,
    len: Option<u64>,
) -> Result<Option<(Vec<(String, String)>, Option<String>)>, Fail> {
    let Some(raw) = ctx.h("x-symlink-target") else {
        return Ok(None);
    };
    let form = || {
        Fail::msg(
            StatusCode::PRECONDITION_FAILED,
            "X-Symlink-Target header must be of the form <container name>/<object name>",
        )
    };
    let t = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| form())?
        .to_string();
    let (c, n) = t
        .split_once('/')
        .filter(|(c, n)| !c.is_empty() && !n.is_empty())
        .ok_or_else(form)?;
    if len.unwrap_or(0) != 0 {
        return Err(Fail::bad("Symlink requests require a zero byte body"));
    }
    let account = match ctx.h("x-symlink-target-account") {
        Some(a) => percent_encoding::percent_decode_str(a)
            .decode_utf8_lossy()
            .to_string(),
        None => ctx.target.account.clone(),
    };
    if account == ctx.target.account && c == ctx.container() && n == ctx.object() {
        return Err(Fail::bad("Symlink cannot target itself"));
    }
    let mut keep = vec![(TARGET.to_string(), format!("{c}/{n}"))];
    if ctx.h("x-symlink-target-account").is_some() {
        keep.push((TARGET_ACCOUNT.to_string(), account.clone()));
    }
    let mut target_type = None;
    if let Some(want) = ctx.h("x-symlink-target-etag") {
        let want = want.trim().trim_matches('"').to_string();
        let tctx = ctx.at(&account, c, n)?;
        super::object::may_read(&tctx).await?;
        let found = super::object::live(ctx, &account, c, n).await?;
        let Some(o) = found else {
            return Err(Fail::msg(
                StatusCode::CONFLICT,
                "X-Symlink-Target does not exist",
            ));
        };
        let (etag, bytes) = static_etag(&o);
        if etag != want {
            return Err(Fail::msg(
                StatusCode::CONFLICT,
                format!(
                    "Object Etag '{etag}' does not match X-Symlink-Target-Etag header '{want}'"
                ),
            ));
        }
        keep.push((TARGET_ETAG.to_string(), etag));
        keep.push((TARGET_BYTES.to_string(), bytes));
        if let Some(e) = o.meta.get(super::slo::SLO_ETAG) {
            keep.push((TARGET_SLO_ETAG.to_string(), e.clone()));
        }
        target_type = Some(o.content_type.clone());
    }
    Ok(Some((keep, target_type)))
}

/// A GET or HEAD through a link: the target's answer, with
/// `Content-Location`.
pub async fn follow(ctx: &Ctx, link: &Object, hops: usize) -> Res {
    let own = ctx.target.account.clone();
    let (account, c, n) = target_of(link, &own).ok_or_else(Fail::not_found)?;
    let loc = location(&account, &c, &n);
    let with_location = |mut r: axum::response::Response| {
        set(r.headers_mut(), "content-location", &loc);
        r
    };
    if hops >= SYMLOOP_MAX {
        return Ok(with_location(
            Fail::msg(
                StatusCode::CONFLICT,
                format!("Too many levels of symbolic links, maximum allowed is {SYMLOOP_MAX}"),
            )
            .into_response(),
        ));
    }
    let tctx = ctx.at(&account, &c, &n)?;
    if let Err(f) = super::object::may_read(&tctx).await {
        return Ok(with_location(f.into_response()));
    }
    let Some(t) = super::object::live(&tctx, &account, &c, &n).await? else {
        return Ok(with_location(Fail::not_found().into_response()));
    };
    if let Some(want) = link.meta.get(TARGET_ETAG) {
        let (etag, _) = static_etag(&t);
        if &etag != want {
            return Ok(with_location(
                Fail::msg(
                    StatusCode::CONFLICT,
                    format!(
                        "Object Etag '{etag}' does not match X-Symlink-Target-Etag header '{want}'"
                    ),
                )
                .into_response(),
            ));
        }
    }
    if is_link(&t) {
        let r = Box::pin(follow(&tctx, &t, hops + 1)).await?;
        return Ok(r);
    }
    let r = Box::pin(super::object::answer(&tctx, &t)).await?;
    Ok(with_location(r))
}

/// A POST to a link: its metadata changes; the answer sends the client
/// to the target.
pub fn redirect(ctx: &Ctx, link: &Object) -> Res {
    let (account, c, n) = target_of(link, &ctx.target.account).ok_or_else(Fail::not_found)?;
    let mut h = HeaderMap::new();
    set(&mut h, "location", location(&account, &c, &n));
    if let Some(e) = link.meta.get(TARGET_ETAG) {
        set(&mut h, "x-symlink-target-etag", e);
    }
    Ok(empty(StatusCode::TEMPORARY_REDIRECT, h))
}

/// The object a link leads to (at most [`SYMLOOP_MAX`] links on), read as
/// the caller: its context, the object and its account.
pub async fn resolve(ctx: &Ctx, link: &Object) -> Result<(Ctx, Object, String), Fail> {
    let mut link = link.clone();
    let mut at = ctx.at(&ctx.target.account, ctx.container(), ctx.object())?;
    for _ in 0..=SYMLOOP_MAX {
        let (account, c, n) = target_of(&link, &at.target.account).ok_or_else(Fail::not_found)?;
        let tctx = at.at(&account, &c, &n)?;
        super::object::may_read(&tctx).await?;
        let t = super::object::live(&tctx, &account, &c, &n)
            .await?
            .ok_or_else(Fail::not_found)?;
        if !is_link(&t) {
            return Ok((tctx, t, account));
        }
        link = t;
        at = tctx;
    }
    Err(Fail::msg(
        StatusCode::CONFLICT,
        format!("Too many levels of symbolic links, maximum allowed is {SYMLOOP_MAX}"),
    ))
}

/// What a static link to `o` records and checks: the ETag a client sees of
/// it without following (a manifest's own, a static link's target's) and
/// its length in bytes.
fn static_etag(o: &Object) -> (String, String) {
    if super::slo::is_slo(o) {
        let size = o
            .meta
            .get(super::slo::SLO_SIZE)
            .cloned()
            .unwrap_or_default();
        (o.etag.clone(), size)
    } else if let Some(e) = o.meta.get(TARGET_ETAG) {
        (
            e.clone(),
            o.meta.get(TARGET_BYTES).cloned().unwrap_or_default(),
        )
    } else {
        (o.etag.clone(), o.size.to_string())
    }
}
