//! Swift's versioned writes (its `versioned_writes` middleware): a
//! container with `X-Versions-Location: <c>` (stack mode) or
//! `X-History-Location: <c>` (history mode) keeps each overwritten
//! object in `<c>` as `<3 hex digits: name length><name>/<timestamp>`.
//! A DELETE in stack mode brings back the newest kept version; in history
//! mode it keeps the current one and leaves a delete marker.

use super::{Ctx, Fail, Res};
use crate::table::{self, Bound, Meta, Object, Page};
use crate::time;
use axum::http::StatusCode;

/// How a container keeps old versions.
#[derive(Debug, Clone)]
pub enum Mode {
    Stack(String),
    History(String),
}

impl Mode {
    pub fn of(meta: &Meta) -> Option<Mode> {
        let unquote = |v: &String| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .to_string()
        };
        if let Some(v) = meta.get("x-versions-location") {
            return Some(Mode::Stack(unquote(v)));
        }
        meta.get("x-history-location")
            .map(|v| Mode::History(unquote(v)))
    }

    fn container(&self) -> &str {
        match self {
            Mode::Stack(c) | Mode::History(c) => c,
        }
    }
}

/// The prefix of the kept versions of `name`.
fn prefix(name: &str) -> String {
    format!("{:03x}{}/", name.len(), name)
}

/// The versions container, as the caller's write to it. As Swift's
/// middleware does, the caller's right to write the versioned container
/// is what counts: the versions container needs no ACL of its own.
async fn check_write(ctx: &Ctx, mode: &Mode, name: &str) -> Result<Ctx, Fail> {
    let vctx = ctx.at(&ctx.target.account, mode.container(), name)?;
    if table::container(
        &ctx.state.objects.store,
        &ctx.target.account,
        mode.container(),
    )
    .await?
    .is_none()
    {
        return Err(Fail::msg(
            StatusCode::PRECONDITION_FAILED,
            "The versions container does not exist",
        ));
    }
    Ok(vctx)
}

/// Keeps a copy of `o` (the object about to be overwritten or deleted) in
/// the versions container.
async fn keep(ctx: &Ctx, mode: &Mode, o: &Object) -> Result<(), Fail> {
    let vctx = check_write(ctx, mode, &o.name).await?;
    let blob = ctx.state.objects.blobs.duplicate(&o.blob).await?;
    let kept = Object {
        name: format!("{}{}", prefix(&o.name), time::x_timestamp(o.ts)),
        blob,
        delete_at: None,
        ..o.clone()
    };
    super::object::store_plain(&vctx, mode.container(), kept, false).await?;
    Ok(())
}

/// Before `name` in the target's container is overwritten: keeps the
/// current object if the container versions its objects.
pub async fn before_overwrite(ctx: &Ctx, container_meta: &Meta, name: &str) -> Result<(), Fail> {
    let Some(mode) = Mode::of(container_meta) else {
        return Ok(());
    };
    if let Some(o) = super::object::live(ctx, &ctx.target.account, ctx.container(), name).await? {
        keep(ctx, &mode, &o).await?;
    }
    Ok(())
}

/// The newest kept version of `name`.
async fn newest(ctx: &Ctx, mode: &Mode, name: &str) -> Result<Option<Object>, Fail> {
    let p = prefix(name);
    let page = Page {
        lo: Some(Bound {
            name: p.clone(),
            inclusive: true,
        }),
        hi: Some(Bound {
            name: format!("{}0", &p[..p.len() - 1]),
            inclusive: false,
        }),
        reverse: true,
        limit: 1,
    };
    let rows = table::objects(
        &ctx.state.objects.store,
        &ctx.target.account,
        mode.container(),
        page,
    )
    .await?;
    Ok(rows.into_iter().next())
}

/// DELETE in a versioned container; `None` if it is not one.
pub async fn delete(ctx: &Ctx, container_meta: &Meta) -> Result<Option<Res>, Fail> {
    let Some(mode) = Mode::of(container_meta) else {
        return Ok(None);
    };
    let name = ctx.object().to_string();
    let store = &ctx.state.objects.store;
    if table::container(store, &ctx.target.account, mode.container())
        .await?
        .is_none()
    {
        // No versions container (any more): a plain delete.
        return Ok(None);
    }
    let current = super::object::live(ctx, &ctx.target.account, ctx.container(), &name).await?;
    match &mode {
        Mode::History(c) => {
            let vctx = check_write(ctx, &mode, &name).await?;
            if let Some(o) = &current {
                keep(ctx, &mode, o).await?;
            }
            let marker = Object {
                name: format!("{}{}", prefix(&name), time::x_timestamp(time::now())),
                ts: time::now(),
                size: 0,
                etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
                content_type: "application/x-deleted;swift_versions_deleted=1".into(),
                blob: String::new(),
                inline: None,
                meta: Meta::new(),
                delete_at: None,
            };
            super::object::store_plain(&vctx, c, marker, false).await?;
        }
        Mode::Stack(c) => {
            let vctx = check_write(ctx, &mode, &name).await?;
            let mut dropped_marker = false;
            while let Some(v) = newest(ctx, &mode, &name).await? {
                if v.content_type
                    .starts_with("application/x-deleted;swift_versions_deleted=1")
                {
                    // A delete marker (from history mode): drop it and look
                    // at the version before it, unless that is a marker too.
                    if dropped_marker {
                        break;
                    }
                    drop_object(&vctx, c, &v.name).await?;
                    dropped_marker = true;
                    continue;
                }
                let blob = ctx.state.objects.blobs.duplicate(&v.blob).await?;
                let restored = Object {
                    name: name.clone(),
                    ts: time::now(),
                    blob,
                    ..v.clone()
                };
                super::object::store_plain(ctx, ctx.container(), restored, false).await?;
                drop_object(&vctx, c, &v.name).await?;
                return Ok(Some(Ok(super::empty(
                    StatusCode::NO_CONTENT,
                    Default::default(),
                ))));
            }
            if dropped_marker && current.is_none() {
                return Ok(Some(Ok(super::empty(
                    StatusCode::NO_CONTENT,
                    Default::default(),
                ))));
            }
        }
    }
    let gone =
        table::delete_object(store, &ctx.target.account, ctx.container(), &name, None).await?;
    match gone {
        Some(o) => {
            ctx.state.objects.blobs.delete(&o.blob).await;
            table::forget_garbage(store, &o.blob).await?;
            Ok(Some(Ok(super::empty(
                StatusCode::NO_CONTENT,
                Default::default(),
            ))))
        }
        None if current.is_none() => Ok(Some(Err(Fail::not_found()))),
        None => Ok(Some(Ok(super::empty(
            StatusCode::NO_CONTENT,
            Default::default(),
        )))),
    }
}

async fn drop_object(ctx: &Ctx, container: &str, name: &str) -> Result<(), Fail> {
    let store = &ctx.state.objects.store;
    if let Some(o) = table::delete_object(store, &ctx.target.account, container, name, None).await?
    {
        ctx.state.objects.blobs.delete(&o.blob).await;
        table::forget_garbage(store, &o.blob).await?;
    }
    Ok(())
}
