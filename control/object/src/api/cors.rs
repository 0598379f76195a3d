//! Cross-origin requests as Swift answers them, from the container's
//! `X-Container-Meta-Access-Control-Allow-Origin` (space-separated origins,
//! or `*`), `-Max-Age` and `-Expose-Headers`: a preflight `OPTIONS` is
//! answered 200 or 401 without a token; an actual request from an allowed
//! origin gets `Access-Control-Allow-Origin` and the headers it may read
//! (strict mode: nothing for other origins).

use super::{set, Ctx, Fail, Res};
use crate::table::{self, Meta};
use crate::AppState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

const ALLOW_ORIGIN: &str = "x-container-meta-access-control-allow-origin";
const MAX_AGE: &str = "x-container-meta-access-control-max-age";
const EXPOSE: &str = "x-container-meta-access-control-expose-headers";
const METHODS: &[&str] = &["HEAD", "GET", "PUT", "POST", "DELETE", "COPY", "OPTIONS"];
/// What a browser may always read of an answer.
const EXPOSED: &[&str] = &[
    "cache-control",
    "content-language",
    "content-type",
    "expires",
    "last-modified",
    "pragma",
    "etag",
    "x-timestamp",
    "x-trans-id",
    "x-openstack-request-id",
];

/// The origin answer for `origin`, if the container allows it.
fn allowed(meta: &Meta, origin: &str) -> Option<String> {
    let list = meta.get(ALLOW_ORIGIN)?;
    let origins: Vec<&str> = list.split_whitespace().collect();
    if origins.contains(&"*") {
        Some("*".into())
    } else if origins.contains(&origin) {
        Some(origin.to_string())
    } else {
        None
    }
}

/// A preflight `OPTIONS` on a container or object.
pub async fn preflight(ctx: &Ctx, origin: &str) -> Res {
    let c = table::container(
        &ctx.state.objects.store,
        &ctx.target.account,
        ctx.container(),
    )
    .await?;
    let meta = c.map(|c| c.meta).unwrap_or_default();
    let Some(allow) = allowed(&meta, origin) else {
        return Err(Fail::of(StatusCode::UNAUTHORIZED));
    };
    let method = ctx.h("access-control-request-method").unwrap_or("");
    if !METHODS.contains(&method) {
        return Err(Fail::of(StatusCode::UNAUTHORIZED));
    }
    let mut h = HeaderMap::new();
    set(&mut h, "allow", METHODS.join(", "));
    set(&mut h, "access-control-allow-origin", allow);
    set(&mut h, "access-control-allow-methods", METHODS.join(", "));
    if let Some(req) = ctx.h("access-control-request-headers") {
        set(&mut h, "access-control-allow-headers", req);
    }
    if let Some(age) = meta.get(MAX_AGE) {
        set(&mut h, "access-control-max-age", age);
    }
    Ok(super::empty(StatusCode::OK, h))
}

/// Adds the CORS headers an answer to `origin` carries.
pub async fn decorate(
    state: &AppState,
    account: &str,
    container: &str,
    origin: &str,
    mut resp: Response,
) -> Response {
    let meta = match table::container(&state.objects.store, account, container).await {
        Ok(Some(c)) => c.meta,
        _ => return resp,
    };
    let Some(allow) = allowed(&meta, origin) else {
        return resp;
    };
    let mut expose: Vec<String> = EXPOSED.iter().map(|s| s.to_string()).collect();
    for name in resp.headers().keys() {
        let n = name.as_str();
        if n.starts_with("x-object-meta-") || n.starts_with("x-container-meta-") {
            expose.push(n.to_string());
        }
    }
    if let Some(extra) = meta.get(EXPOSE) {
        expose.extend(
            extra
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(|s| s.trim().to_ascii_lowercase()),
        );
    }
    let h = resp.headers_mut();
    set(h, "access-control-allow-origin", allow);
    set(h, "access-control-expose-headers", expose.join(", "));
    resp
}
