//! Accounts: HEAD (counts and metadata), GET (the container listing),
//! POST (metadata). An account exists from its owner's first use (Swift's
//! `account_autocreate`); PUT and DELETE are not offered, as on a Swift
//! without `allow_account_management`.

use super::{empty, put_meta, set, Ctx, Fail, Res};
use crate::listing::{self, Entry, Format};
use crate::{constraints, table, time};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

const META: &str = "x-account-meta-";

pub async fn handle(ctx: Ctx) -> Res {
    match ctx.method.as_str() {
        "HEAD" | "GET" => get(ctx).await,
        "POST" => post(ctx).await,
        "OPTIONS" => Ok(empty(StatusCode::OK, allow_header())),
        _ => Err(Fail::of(StatusCode::METHOD_NOT_ALLOWED)),
    }
}

fn allow_header() -> HeaderMap {
    let mut h = HeaderMap::new();
    set(&mut h, "allow", "HEAD, GET, POST, OPTIONS");
    h
}

fn headers(a: &table::Account) -> HeaderMap {
    let mut h = HeaderMap::new();
    set(
        &mut h,
        "x-account-container-count",
        a.containers.to_string(),
    );
    set(&mut h, "x-account-object-count", a.objects.to_string());
    set(&mut h, "x-account-bytes-used", a.bytes.to_string());
    set(
        &mut h,
        "x-account-storage-policy-policy-0-container-count",
        a.containers.to_string(),
    );
    set(
        &mut h,
        "x-account-storage-policy-policy-0-object-count",
        a.objects.to_string(),
    );
    set(
        &mut h,
        "x-account-storage-policy-policy-0-bytes-used",
        a.bytes.to_string(),
    );
    let ts = if a.exists { a.created } else { time::now() };
    set(&mut h, "x-timestamp", time::x_timestamp(ts));
    set(
        &mut h,
        "x-put-timestamp",
        time::x_timestamp(if a.exists { a.put_ts } else { ts }),
    );
    put_meta(&mut h, &a.meta);
    h
}

/// The listing parameters common to accounts and containers.
pub fn listing_query(ctx: &Ctx, max: usize) -> Result<listing::Query, Fail> {
    let limit = match ctx.q("limit") {
        None | Some("") => max,
        Some(l) => {
            let n: i64 = l.parse().map_err(|_| {
                Fail::msg(
                    StatusCode::PRECONDITION_FAILED,
                    "Value of limit must be a positive integer",
                )
            })?;
            if n < 0 {
                return Err(Fail::msg(
                    StatusCode::PRECONDITION_FAILED,
                    "Value of limit must be a positive integer",
                ));
            }
            if n as usize > max {
                return Err(Fail::msg(
                    StatusCode::PRECONDITION_FAILED,
                    format!("Maximum limit is {max}"),
                ));
            }
            n as usize
        }
    };
    for p in ["prefix", "marker", "end_marker", "delimiter"] {
        if ctx.q(p).is_some_and(|v| v.contains('\0')) {
            return Err(Fail::msg(
                StatusCode::PRECONDITION_FAILED,
                "Invalid UTF8 or contains NULL",
            ));
        }
    }
    let delimiter = ctx
        .q("delimiter")
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    Ok(listing::Query {
        prefix: ctx.q("prefix").unwrap_or("").to_string(),
        delimiter,
        marker: ctx
            .q("marker")
            .filter(|m| !m.is_empty())
            .map(str::to_string),
        end_marker: ctx
            .q("end_marker")
            .filter(|m| !m.is_empty())
            .map(str::to_string),
        reverse: ctx.q("reverse").is_some_and(|r| {
            matches!(
                r.to_ascii_lowercase().as_str(),
                "true" | "1" | "yes" | "on" | "t" | "y"
            )
        }),
        limit,
    })
}

/// The listing's format, or 406.
pub fn listing_format(ctx: &Ctx) -> Result<Format, Fail> {
    Format::choose(ctx.q("format"), ctx.h("accept"))
        .ok_or_else(|| Fail::of(StatusCode::NOT_ACCEPTABLE))
}

async fn get(ctx: Ctx) -> Res {
    if !ctx.may_read_account() {
        return Err(ctx.denied());
    }
    let format = listing_format(&ctx)?;
    let q = listing_query(&ctx, constraints::ACCOUNT_LISTING_LIMIT)?;
    let store = &ctx.state.objects.store;
    let account = ctx.target.account.clone();
    let a = table::account(store, &account).await?;
    let mut h = headers(&a);
    if ctx.method == "HEAD" {
        set(&mut h, "content-type", format.content_type());
        return Ok(empty(StatusCode::NO_CONTENT, h));
    }
    let entries = listing::list(&q, |page| table::containers(store, &account, page)).await?;
    render(&ctx.target.account, entries, format, h)
}

fn render(
    account: &str,
    entries: Vec<Entry<table::Container>>,
    format: Format,
    mut h: HeaderMap,
) -> Res {
    if entries.is_empty() && format == Format::Plain {
        set(&mut h, "content-type", format.content_type());
        return Ok(empty(StatusCode::NO_CONTENT, h));
    }
    let body = match format {
        Format::Plain => entries
            .iter()
            .map(|e| match e {
                Entry::Item(c) => format!("{}\n", c.name),
                Entry::Subdir(s) => format!("{s}\n"),
            })
            .collect::<String>(),
        Format::Json => {
            let v: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| match e {
                    Entry::Item(c) => serde_json::json!({
                        "name": c.name, "count": c.object_count, "bytes": c.bytes_used,
                        "last_modified": time::iso(c.put_ts),
                    }),
                    Entry::Subdir(s) => serde_json::json!({"subdir": s}),
                })
                .collect();
            serde_json::to_string(&v).unwrap_or_default()
        }
        Format::Xml => {
            let mut x = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<account name=\"{}\">",
                listing::xml_escape(account)
            );
            for e in &entries {
                match e {
                    Entry::Item(c) => x.push_str(&format!(
                        "<container><name>{}</name><count>{}</count><bytes>{}</bytes><last_modified>{}</last_modified></container>",
                        listing::xml_escape(&c.name),
                        c.object_count,
                        c.bytes_used,
                        time::iso(c.put_ts)
                    )),
                    Entry::Subdir(s) => {
                        let s = listing::xml_escape(s);
                        x.push_str(&format!("<subdir name=\"{s}\"><name>{s}</name></subdir>"))
                    }
                }
            }
            x.push_str("</account>");
            x
        }
    };
    set(&mut h, "content-type", format.content_type());
    Ok((StatusCode::OK, h, body).into_response())
}

/// Whether a header sets or removes an account quota.
fn is_quota(name: &str) -> bool {
    let n = name
        .strip_prefix("x-remove-")
        .map(|r| format!("x-{r}"))
        .unwrap_or_else(|| name.to_string());
    n == "x-account-meta-quota-bytes"
        || n.starts_with("x-account-quota-bytes")
        || n.starts_with("x-account-quota-count")
}

/// Applies the quota headers of a reseller admin's POST.
fn apply_quotas(headers: &HeaderMap, m: &mut table::Meta) -> Result<(), String> {
    for (name, value) in headers {
        let n = name.as_str();
        if !is_quota(n) {
            continue;
        }
        if let Some(r) = n.strip_prefix("x-remove-") {
            m.remove(&format!("x-{r}"));
            continue;
        }
        let v = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
        if v.is_empty() {
            m.remove(n);
        } else if v.parse::<u64>().is_ok() {
            m.insert(n.to_string(), v);
        } else {
            return Err(format!("Invalid {n}: must be a non-negative integer"));
        }
    }
    Ok(())
}

/// The account's quotas (bytes, objects), if it has them.
pub fn quotas(meta: &table::Meta) -> (Option<i64>, Option<i64>) {
    let get = |k: &str| meta.get(k).and_then(|v| v.parse::<i64>().ok());
    let bytes = get("x-account-quota-bytes").or_else(|| get("x-account-meta-quota-bytes"));
    (bytes, get("x-account-quota-count"))
}

async fn post(ctx: Ctx) -> Res {
    if !ctx.is_owner() {
        return Err(ctx.denied());
    }
    // Quotas are the reseller admin's to set, never the account owner's.
    let reseller = ctx.who.as_ref().is_some_and(crate::access::is_reseller);
    if !reseller && ctx.headers.keys().any(|k| is_quota(k.as_str())) {
        return Err(Fail::of(StatusCode::FORBIDDEN));
    }
    constraints::check_metadata(&ctx.headers, META).map_err(Fail::bad)?;
    table::update_account(
        &ctx.state.objects.store,
        &ctx.target.account,
        time::now(),
        |m| {
            let legacy = m.remove("x-account-meta-quota-bytes");
            super::apply_meta(&ctx.headers, META, m);
            if let Some(q) = legacy {
                m.insert("x-account-meta-quota-bytes".into(), q);
            }
            apply_quotas(&ctx.headers, m)?;
            constraints::check_merged(m.iter(), META)
        },
    )
    .await?
    .map_err(Fail::bad)?;
    Ok(empty(StatusCode::NO_CONTENT, HeaderMap::new()))
}
