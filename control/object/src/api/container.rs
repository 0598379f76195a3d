//! Containers: PUT (create, or update its metadata), HEAD, GET (the object
//! listing), POST (metadata, ACLs), DELETE (409 while it holds objects).

use super::account::{listing_format, listing_query};
use super::{apply_meta, empty, set, Ctx, Fail, Res};
use crate::access::{self, clean_acl};
use crate::listing::{self, Entry, Format};
use crate::table::{self, Meta};
use crate::{constraints, time};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

const META: &str = "x-container-meta-";

/// Container headers stored as they are sent (besides `X-Container-Meta-*`).
const SYSTEM: &[&str] = &[
    "x-container-read",
    "x-container-write",
    "x-container-sync-to",
    "x-container-sync-key",
    "x-versions-location",
    "x-history-location",
];

/// Headers only the owner sees.
const OWNER_ONLY: &[&str] = &[
    "x-container-read",
    "x-container-write",
    "x-container-sync-to",
    "x-container-sync-key",
];

pub async fn handle(ctx: Ctx) -> Res {
    match ctx.method.as_str() {
        "PUT" => put(ctx).await,
        "HEAD" | "GET" => get(ctx).await,
        "POST" => post(ctx).await,
        "DELETE" => delete(ctx).await,
        "OPTIONS" => {
            let mut h = HeaderMap::new();
            set(&mut h, "allow", "HEAD, GET, PUT, POST, DELETE, OPTIONS");
            Ok(empty(StatusCode::OK, h))
        }
        _ => Err(Fail::of(StatusCode::METHOD_NOT_ALLOWED)),
    }
}

/// Checks a PUT's or POST's headers and applies them to the stored ones.
fn change(ctx: &Ctx, m: &mut Meta) -> Result<(), String> {
    apply_meta(&ctx.headers, META, m);
    for name in [
        "x-remove-versions-location",
        "x-remove-history-location",
        "x-remove-container-read",
        "x-remove-container-write",
    ] {
        if ctx.headers.contains_key(name) {
            m.remove(&format!("x-{}", &name["x-remove-".len()..]));
        }
    }
    for name in SYSTEM {
        let Some(v) = ctx.headers.get(*name) else {
            continue;
        };
        let v = String::from_utf8_lossy(v.as_bytes()).trim().to_string();
        let v = if name.starts_with("x-container-read") || name.starts_with("x-container-write") {
            clean_acl(name, &v)?
        } else {
            v
        };
        if v.is_empty() {
            m.remove(*name);
        } else {
            m.insert(name.to_string(), v);
        }
    }
    if ctx.headers.contains_key("x-versions-location")
        && !ctx.headers.contains_key("x-history-location")
    {
        m.remove("x-history-location");
    } else if ctx.headers.contains_key("x-history-location")
        && !ctx.headers.contains_key("x-versions-location")
    {
        m.remove("x-versions-location");
    }
    if m.contains_key("x-versions-location") && m.contains_key("x-history-location") {
        return Err(
            "Only one of X-Versions-Location or X-History-Location may be specified".into(),
        );
    }
    for q in [
        "x-container-meta-quota-bytes",
        "x-container-meta-quota-count",
    ] {
        if let Some(v) = m.get(q) {
            if v.parse::<u64>().is_err() {
                return Err(format!("Invalid {q}: must be a non-negative integer"));
            }
        }
    }
    constraints::check_merged(m.iter(), META)
}

/// Keeps the container's sync row in step with its stored headers.
async fn sync_row(ctx: &Ctx) -> Result<(), Fail> {
    let store = &ctx.state.objects.store;
    let c = table::container(store, &ctx.target.account, ctx.container()).await?;
    let meta = c.map(|c| c.meta).unwrap_or_default();
    let to = match (
        meta.get("x-container-sync-to"),
        meta.get("x-container-sync-key"),
    ) {
        (Some(t), Some(k)) => Some((t.as_str(), k.as_str())),
        _ => None,
    };
    table::set_sync(store, &ctx.target.account, ctx.container(), to).await?;
    Ok(())
}

fn check_policy(ctx: &Ctx) -> Result<(), Fail> {
    if let Some(p) = ctx.h("x-storage-policy") {
        if !p.trim().is_empty() && !p.trim().eq_ignore_ascii_case("policy-0") {
            return Err(Fail::bad(format!(
                "Invalid X-Storage-Policy {:?}",
                p.trim()
            )));
        }
    }
    Ok(())
}

async fn put(ctx: Ctx) -> Res {
    if !ctx.is_owner() {
        return Err(ctx.denied());
    }
    constraints::check_metadata(&ctx.headers, META).map_err(Fail::bad)?;
    check_policy(&ctx)?;
    let created = table::put_container(
        &ctx.state.objects.store,
        &ctx.target.account,
        ctx.container(),
        time::now(),
        |m| change(&ctx, m),
    )
    .await?
    .map_err(Fail::bad)?;
    sync_row(&ctx).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok(empty(status, HeaderMap::new()))
}

async fn post(ctx: Ctx) -> Res {
    if !ctx.is_owner() {
        return Err(ctx.denied());
    }
    constraints::check_metadata(&ctx.headers, META).map_err(Fail::bad)?;
    let found = table::update_container(
        &ctx.state.objects.store,
        &ctx.target.account,
        ctx.container(),
        |m| change(&ctx, m),
    )
    .await?
    .map_err(Fail::bad)?;
    if !found {
        return Err(Fail::not_found());
    }
    sync_row(&ctx).await?;
    Ok(empty(StatusCode::NO_CONTENT, HeaderMap::new()))
}

async fn delete(ctx: Ctx) -> Res {
    if !ctx.is_owner() {
        return Err(ctx.denied());
    }
    match table::delete_container(
        &ctx.state.objects.store,
        &ctx.target.account,
        ctx.container(),
    )
    .await?
    {
        table::Deleted::Done => {
            table::set_sync(
                &ctx.state.objects.store,
                &ctx.target.account,
                ctx.container(),
                None,
            )
            .await?;
            Ok(empty(StatusCode::NO_CONTENT, HeaderMap::new()))
        }
        table::Deleted::NotFound => Err(Fail::not_found()),
        table::Deleted::NotEmpty => Err(Fail::of(StatusCode::CONFLICT)),
    }
}

/// The container's response headers, as the caller may see them.
fn headers(ctx: &Ctx, c: &table::Container) -> HeaderMap {
    let mut h = HeaderMap::new();
    set(
        &mut h,
        "x-container-object-count",
        c.object_count.to_string(),
    );
    set(&mut h, "x-container-bytes-used", c.bytes_used.to_string());
    set(&mut h, "x-timestamp", time::x_timestamp(c.created));
    set(&mut h, "x-put-timestamp", time::x_timestamp(c.put_ts));
    set(&mut h, "last-modified", time::http_date(c.put_ts));
    set(&mut h, "x-storage-policy", "Policy-0");
    set(&mut h, "accept-ranges", "bytes");
    let owner = ctx.is_owner();
    let visible: Meta = c
        .meta
        .iter()
        .filter(|(k, _)| owner || !OWNER_ONLY.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    super::put_meta(&mut h, &visible);
    h
}

/// The container, if the caller may read it (listing it with `listing`).
pub async fn readable(ctx: &Ctx, listing: bool) -> Result<table::Container, Fail> {
    let c = table::container(
        &ctx.state.objects.store,
        &ctx.target.account,
        ctx.container(),
    )
    .await?;
    let allowed = ctx.may_read_account()
        || c.as_ref().is_some_and(|c| {
            access::read_allowed(
                c.meta.get("x-container-read").map(String::as_str),
                ctx.who.as_ref(),
                ctx.h("referer"),
                listing,
            )
        });
    if !allowed {
        return Err(ctx.denied());
    }
    c.ok_or_else(Fail::not_found)
}

async fn get(ctx: Ctx) -> Res {
    let c = readable(&ctx, true).await?;
    let format = listing_format(&ctx)?;
    let mut h = headers(&ctx, &c);
    if ctx.method == "HEAD" {
        set(&mut h, "content-type", format.content_type());
        return Ok(empty(StatusCode::NO_CONTENT, h));
    }
    let q = listing_query(&ctx, constraints::CONTAINER_LISTING_LIMIT)?;
    let store = &ctx.state.objects.store;
    let (account, container) = (ctx.target.account.clone(), ctx.container().to_string());
    // What decides the page: the query (sorted) and the format, which may
    // come from the Accept header.
    let mut key: Vec<String> = ctx.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    key.sort();
    key.push(format.content_type().to_string());
    let key = key.join("\n");
    let cache = &ctx.state.objects.listings;
    let state = (c.created, c.rev);
    set(&mut h, "content-type", format.content_type());
    if let Some(body) = cache.get(&account, &container, &key, state) {
        return Ok((StatusCode::OK, h, body).into_response());
    }
    let entries =
        listing::list(&q, |page| table::objects(store, &account, &container, page)).await?;
    if entries.is_empty() && format == Format::Plain {
        return Ok(empty(StatusCode::NO_CONTENT, h));
    }
    let body = bytes::Bytes::from(render(&account, &container, &entries, format));
    cache.put(&account, &container, &key, state, body.clone());
    Ok((StatusCode::OK, h, body).into_response())
}

/// An object as a listing shows it (JSON), serialized straight into the
/// body (a listing may hold 10,000 of them).
#[derive(serde::Serialize)]
struct Listed<'a> {
    name: &'a str,
    hash: &'a str,
    bytes: i64,
    content_type: &'a str,
    last_modified: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    slo_etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    symlink_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    symlink_etag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    symlink_bytes: Option<u64>,
}

/// One entry of a JSON listing.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum ListedEntry<'a> {
    Item(Listed<'a>),
    Subdir { subdir: &'a str },
}

fn listed<'a>(o: &'a table::Object, account: &str) -> Listed<'a> {
    let mut v = Listed {
        name: &o.name,
        hash: &o.etag,
        bytes: o.size,
        content_type: &o.content_type,
        last_modified: time::iso(o.ts),
        slo_etag: None,
        symlink_path: None,
        symlink_etag: None,
        symlink_bytes: None,
    };
    if o.meta.is_empty() {
        return v;
    }
    if super::slo::is_slo(o) {
        if let Some(n) = o
            .meta
            .get(super::slo::SLO_SIZE)
            .and_then(|n| n.parse::<i64>().ok())
        {
            v.bytes = n;
        }
        v.slo_etag = o.meta.get(super::slo::SLO_ETAG).map(|e| format!("\"{e}\""));
    }
    if let Some((a, c, n)) = super::symlink::target_of(o, account) {
        v.symlink_path = Some(super::symlink::location(&a, &c, &n));
        v.symlink_etag = o.meta.get(super::symlink::TARGET_ETAG).map(String::as_str);
        if let Some(e) = o.meta.get(super::symlink::TARGET_SLO_ETAG) {
            v.slo_etag = Some(format!("\"{e}\""));
        }
        v.symlink_bytes = o
            .meta
            .get(super::symlink::TARGET_BYTES)
            .and_then(|b| b.parse::<u64>().ok());
    }
    v
}

fn render(
    account: &str,
    container: &str,
    entries: &[Entry<table::Object>],
    format: Format,
) -> String {
    match format {
        Format::Plain => entries
            .iter()
            .map(|e| match e {
                Entry::Item(o) => format!("{}\n", o.name),
                Entry::Subdir(s) => format!("{s}\n"),
            })
            .collect(),
        Format::Json => {
            let v: Vec<ListedEntry> = entries
                .iter()
                .map(|e| match e {
                    Entry::Item(o) => ListedEntry::Item(listed(o, account)),
                    Entry::Subdir(s) => ListedEntry::Subdir { subdir: s },
                })
                .collect();
            serde_json::to_string(&v).unwrap_or_default()
        }
        Format::Xml => {
            let mut x = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<container name=\"{}\">",
                listing::xml_escape(container)
            );
            for e in entries {
                match e {
                    Entry::Item(o) => x.push_str(&format!(
                        "<object><name>{}</name><hash>{}</hash><bytes>{}</bytes><content_type>{}</content_type><last_modified>{}</last_modified></object>",
                        listing::xml_escape(&o.name),
                        o.etag,
                        o.size,
                        listing::xml_escape(&o.content_type),
                        time::iso(o.ts)
                    )),
                    Entry::Subdir(s) => {
                        let s = listing::xml_escape(s);
                        x.push_str(&format!("<subdir name=\"{s}\"><name>{s}</name></subdir>"))
                    }
                }
            }
            x.push_str("</container>");
            x
        }
    }
}
