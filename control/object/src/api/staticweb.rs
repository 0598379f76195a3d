//! Static web sites (Swift's `staticweb` middleware): for GET and HEAD
//! without a token (or with `X-Web-Mode: true`), a container with
//! `X-Container-Meta-Web-Index` answers a directory path with its index
//! object, with `-Web-Listings: true` with an HTML listing (styled by
//! `-Web-Listings-CSS`), and with `-Web-Error` answers errors with the
//! object `<status><error name>`; a directory path without its slash is
//! redirected to it.

use super::{quote, set, Ctx, Fail, Res};
use crate::listing::{self, Entry, Query};
use crate::table::{self, Container, Meta};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

const INDEX: &str = "x-container-meta-web-index";
const LISTINGS: &str = "x-container-meta-web-listings";
const CSS: &str = "x-container-meta-web-listings-css";
const ERROR: &str = "x-container-meta-web-error";
const DIR_TYPE: &str = "x-container-meta-web-directory-type";

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "true" | "1" | "yes" | "on" | "t" | "y"
        )
    })
}

/// Whether the request is a web request this container answers as a site.
pub fn applies(ctx: &Ctx, meta: &Meta) -> bool {
    let web_mode = ctx
        .h("x-web-mode")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let anonymous = ctx.who.is_none();
    matches!(ctx.method.as_str(), "GET" | "HEAD")
        && (anonymous || web_mode)
        && (meta.contains_key(INDEX) || truthy(meta.get(LISTINGS)) || meta.contains_key(ERROR))
}

/// The request's path as the client sent it (for titles and redirects).
fn path_of(ctx: &Ctx, dir: &str) -> String {
    format!("/v1/{}/{}/{}", ctx.target.account, ctx.container(), dir)
}

/// Answers a web request on the container, or on a path inside it;
/// `None` to answer it as an ordinary request.
pub async fn answer(ctx: &Ctx, c: &Container, trailing_slash: bool) -> Option<Res> {
    let meta = &c.meta;
    let object = ctx.target.object.clone().unwrap_or_default();
    let can_list = ctx.may_read_account()
        || crate::access::read_allowed(
            meta.get("x-container-read").map(String::as_str),
            ctx.who.as_ref(),
            ctx.h("referer"),
            true,
        );
    let can_read = ctx.may_read_account()
        || crate::access::read_allowed(
            meta.get("x-container-read").map(String::as_str),
            ctx.who.as_ref(),
            ctx.h("referer"),
            false,
        );
    if !can_read {
        return Some(error(ctx, meta, StatusCode::UNAUTHORIZED).await);
    }
    let index = meta.get(INDEX).cloned();
    let listings = truthy(meta.get(LISTINGS));
    // The container itself, or a path that names a directory.
    let dir = if object.is_empty() {
        Some(String::new())
    } else if object.ends_with('/') {
        Some(object.clone())
    } else {
        None
    };
    let Some(dir) = dir else {
        // A path without its slash: a directory, if it has an index or
        // anything under it; else the object (or the error page).
        let o = super::object::live(ctx, &ctx.target.account, ctx.container(), &object)
            .await
            .ok()?;
        let dir_type = meta
            .get(DIR_TYPE)
            .map(String::as_str)
            .unwrap_or("application/directory");
        let is_dir_marker = o.as_ref().is_some_and(|o| o.content_type == dir_type);
        if o.is_some() && !is_dir_marker {
            return None;
        }
        if (index.is_some() || listings) && has_children(ctx, &format!("{object}/")).await {
            return Some(Ok(redirect(ctx, &format!("{object}/"))));
        }
        if o.is_none() && meta.contains_key(ERROR) {
            return Some(error(ctx, meta, StatusCode::NOT_FOUND).await);
        }
        return None;
    };
    if object.is_empty() && !trailing_slash && (index.is_some() || listings) {
        return Some(Ok(redirect(ctx, "")));
    }
    if let Some(ix) = &index {
        let name = format!("{dir}{ix}");
        if let Ok(Some(o)) =
            super::object::live(ctx, &ctx.target.account, ctx.container(), &name).await
        {
            let at = match ctx.at(&ctx.target.account, ctx.container(), &name) {
                Ok(a) => a,
                Err(f) => return Some(Err(f)),
            };
            return Some(super::object::answer(&at, &o).await);
        }
    }
    if listings {
        if !can_list {
            return Some(error(ctx, meta, StatusCode::UNAUTHORIZED).await);
        }
        return Some(listing(ctx, meta, &dir).await);
    }
    if index.is_some() || meta.contains_key(ERROR) {
        return Some(error(ctx, meta, StatusCode::NOT_FOUND).await);
    }
    None
}

async fn has_children(ctx: &Ctx, prefix: &str) -> bool {
    let page = table::Page {
        lo: Some(table::Bound {
            name: prefix.to_string(),
            inclusive: true,
        }),
        hi: None,
        reverse: false,
        limit: 1,
    };
    table::objects(
        &ctx.state.objects.store,
        &ctx.target.account,
        ctx.container(),
        page,
    )
    .await
    .is_ok_and(|v| v.first().is_some_and(|o| o.name.starts_with(prefix)))
}

fn redirect(ctx: &Ctx, dir: &str) -> axum::response::Response {
    let host = ctx.h("host").unwrap_or("localhost");
    let path = if dir.is_empty() {
        format!(
            "/v1/{}/{}/",
            quote(&ctx.target.account),
            quote(ctx.container())
        )
    } else {
        format!(
            "/v1/{}/{}/{}",
            quote(&ctx.target.account),
            quote(ctx.container()),
            quote(dir)
        )
    };
    let mut h = HeaderMap::new();
    set(&mut h, "location", format!("http://{host}{path}"));
    super::empty(StatusCode::MOVED_PERMANENTLY, h)
}

/// An error answered with the container's error page, if it has one.
async fn error(ctx: &Ctx, meta: &Meta, status: StatusCode) -> Res {
    if let Some(e) = meta.get(ERROR) {
        let name = format!("{}{e}", status.as_u16());
        if let Ok(Some(o)) =
            super::object::live(ctx, &ctx.target.account, ctx.container(), &name).await
        {
            let (pieces, _) = super::large::pieces_of(ctx, &ctx.target.account, &o).await?;
            let mut h = HeaderMap::new();
            set(&mut h, "content-type", &o.content_type);
            let mut r =
                super::large::serve_pieces(ctx, pieces, &mut h, ctx.method == "HEAD").await?;
            *r.status_mut() = status;
            return Ok(r);
        }
    }
    Err(Fail::of(status))
}

fn escape(s: &str) -> String {
    listing::xml_escape(s)
}

/// The HTML listing of `dir` (a prefix ending in `/`, or empty).
async fn listing(ctx: &Ctx, meta: &Meta, dir: &str) -> Res {
    let q = Query {
        prefix: dir.to_string(),
        delimiter: Some("/".into()),
        limit: crate::constraints::CONTAINER_LISTING_LIMIT,
        ..Default::default()
    };
    let store = &ctx.state.objects.store;
    let (account, container) = (ctx.target.account.clone(), ctx.container().to_string());
    let entries =
        listing::list(&q, |page| table::objects(store, &account, &container, page)).await?;
    let title = escape(&path_of(ctx, dir));
    let style = match meta.get(CSS) {
        Some(css) if css.starts_with('/') || css.contains("://") => {
            format!("<link rel=\"stylesheet\" type=\"text/css\" href=\"{}\" />", quote(css))
        }
        Some(css) => {
            let depth = dir.matches('/').count();
            format!(
                "<link rel=\"stylesheet\" type=\"text/css\" href=\"{}{}\" />",
                "../".repeat(depth),
                quote(css)
            )
        }
        None => "<style type=\"text/css\">\n   h1 {font-size: 1em; font-weight: bold;}\n   th {text-align: left; padding: 0px 1em 0px 1em;}\n   td {padding: 0px 1em 0px 1em;}\n   a {text-decoration: none;}\n  </style>".into(),
    };
    let grant = ctx.grant.as_ref().and_then(|g| g.listing.as_ref());
    let suffix = grant.map(|l| l.query.as_str()).unwrap_or("");
    let at_root = dir.is_empty() || grant.is_some_and(|l| l.prefix == dir);
    let mut rows = String::new();
    if !at_root {
        rows.push_str("   <tr id=\"parent\" class=\"item\">\n    <td class=\"colname\"><a href=\"../\">../</a></td>\n    <td class=\"colsize\">&nbsp;</td>\n    <td class=\"coldate\">&nbsp;</td>\n   </tr>\n");
    }
    for e in &entries {
        match e {
            Entry::Subdir(s) => {
                let rel = &s[dir.len()..];
                rows.push_str(&format!(
                    "   <tr class=\"item subdir\">\n    <td class=\"colname\"><a href=\"./{}{suffix}\">{}</a></td>\n    <td class=\"colsize\">&nbsp;</td>\n    <td class=\"coldate\">&nbsp;</td>\n   </tr>\n",
                    quote(rel),
                    escape(rel)
                ));
            }
            Entry::Item(o) => {
                let rel = &o.name[dir.len()..];
                let kind = o
                    .content_type
                    .split('/')
                    .map(|p| format!("type-{}", escape(p)))
                    .collect::<Vec<_>>()
                    .join(" ");
                rows.push_str(&format!(
                    "   <tr class=\"item {kind}\">\n    <td class=\"colname\"><a href=\"./{}{suffix}\">{}</a></td>\n    <td class=\"colsize\">{}</td>\n    <td class=\"coldate\">{}</td>\n   </tr>\n",
                    quote(rel),
                    escape(rel),
                    o.size,
                    crate::time::iso(o.ts).replace('T', " ").split('.').next().unwrap_or("")
                ));
            }
        }
    }
    let body = format!(
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01 Transitional//EN\" \"http://www.w3.org/TR/html4/loose.dtd\">\n<html>\n <head>\n  <title>Listing of {title}</title>\n  {style}\n </head>\n <body>\n  <h1 id=\"title\">Listing of {title}</h1>\n  <table id=\"listing\">\n   <tr id=\"heading\">\n    <th class=\"colname\">Name</th>\n    <th class=\"colsize\">Size</th>\n    <th class=\"coldate\">Date</th>\n   </tr>\n{rows}  </table>\n </body>\n</html>\n"
    );
    let mut h = HeaderMap::new();
    set(&mut h, "content-type", "text/html; charset=UTF-8");
    if ctx.method == "HEAD" {
        set(&mut h, "content-length", body.len().to_string());
        return Ok(super::empty(StatusCode::OK, h));
    }
    Ok((StatusCode::OK, h, body).into_response())
}
