//! Temporary URLs (Swift's `tempurl` middleware): a request carrying
//! `temp_url_sig` and `temp_url_expires` is let in without a token when
//! the signature is an HMAC, under one of the account's or the container's
//! `Temp-URL-Key`s, of `<method>\n<expires>\n<path>` (or, with
//! `temp_url_prefix`, of `prefix:<path to the prefix>`; with
//! `temp_url_ip_range`, preceded by `ip=<range>\n`). HMAC-SHA256 and
//! -SHA512, hex or `<digest>:<base64>`; anything else is a 401.

use super::{Ctx, Fail};
use crate::table;
use axum::http::StatusCode;
use base64::Engine;
use hmac::{Hmac, Mac};

/// The digests accepted (Swift's default `allowed_digests`).
pub const DIGESTS: &[&str] = &["sha256", "sha512"];
pub const METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "DELETE"];

/// What a valid temporary URL grants beyond access.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// `Content-Disposition` for GET answers.
    pub disposition: Option<Disposition>,
    /// Signed with an account key: reaches the whole account (a large
    /// object's segments elsewhere in it); a container key reaches only
    /// its container.
    pub account_wide: bool,
    /// A prefix URL's prefix and the query its listing links carry.
    pub listing: Option<Listing>,
}

#[derive(Debug, Clone)]
pub struct Listing {
    pub prefix: String,
    pub query: String,
}

/// A GET answer's `Content-Disposition`.
#[derive(Debug, Clone)]
pub enum Disposition {
    /// Asked for with `filename` or `inline`.
    Set(String),
    /// Unless the object has one of its own.
    Default(String),
}

fn invalid() -> Fail {
    Fail::msg(StatusCode::UNAUTHORIZED, "Temp URL invalid")
}

/// `temp_url_expires`: seconds since the epoch, or ISO 8601 in UTC.
fn expires_of(v: &str) -> Option<i64> {
    if let Ok(n) = v.parse::<i64>() {
        return Some(n);
    }
    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%SZ")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// The digest and raw bytes of a signature.
fn signature_of(sig: &str) -> Option<(&'static str, Vec<u8>)> {
    if let Some((d, b64)) = sig.split_once(':') {
        let digest = DIGESTS.iter().find(|x| **x == d)?;
        let b64 = b64.trim_end_matches('=');
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64))
            .ok()?;
        return Some((digest, raw));
    }
    let raw = hex::decode(sig).ok()?;
    match raw.len() {
        32 => Some(("sha256", raw)),
        64 => Some(("sha512", raw)),
        _ => None,
    }
}

fn verify(digest: &str, key: &str, msg: &str, sig: &[u8]) -> bool {
    match digest {
        "sha256" => Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes())
            .map(|mut m| {
                m.update(msg.as_bytes());
                m.verify_slice(sig).is_ok()
            })
            .unwrap_or(false),
        "sha512" => Hmac::<sha2::Sha512>::new_from_slice(key.as_bytes())
            .map(|mut m| {
                m.update(msg.as_bytes());
                m.verify_slice(sig).is_ok()
            })
            .unwrap_or(false),
        _ => false,
    }
}

fn client_ip_in(range: &str, ip: Option<std::net::IpAddr>) -> bool {
    let Some(ip) = ip else { return false };
    let (net, bits) = match range.split_once('/') {
        Some((n, b)) => (n, b.parse::<u32>().ok()),
        None => (range, None),
    };
    match (net.parse::<std::net::IpAddr>(), ip) {
        (Ok(std::net::IpAddr::V4(n)), std::net::IpAddr::V4(i)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (Ok(std::net::IpAddr::V6(n)), std::net::IpAddr::V6(i)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// The keys a temporary URL (or a form upload) may be signed with: the
/// account's two, then the container's two; `true` for an account key.
pub async fn keys(ctx: &Ctx) -> Result<Vec<(String, bool)>, Fail> {
    let store = &ctx.state.objects.store;
    let account = table::account_meta(store, &ctx.target.account).await?;
    let mut keys: Vec<(String, bool)> = [
        "x-account-meta-temp-url-key",
        "x-account-meta-temp-url-key-2",
    ]
    .iter()
    .filter_map(|k| account.get(*k).map(|v| (v.clone(), true)))
    .collect();
    if let Some(c) = table::container(store, &ctx.target.account, ctx.container()).await? {
        keys.extend(
            [
                "x-container-meta-temp-url-key",
                "x-container-meta-temp-url-key-2",
            ]
            .iter()
            .filter_map(|k| c.meta.get(*k).map(|v| (v.clone(), false))),
        );
    }
    Ok(keys)
}

/// Checks a request's temporary-URL parameters; `Ok` is the grant.
pub async fn check(ctx: &Ctx, client_ip: Option<std::net::IpAddr>) -> Result<Grant, Fail> {
    let (Some(sig), Some(expires)) = (ctx.q("temp_url_sig"), ctx.q("temp_url_expires")) else {
        return Err(invalid());
    };
    let method = ctx.method.as_str();
    // A container path only with a prefix URL (a static web listing).
    let container_get = ctx.target.object.is_none()
        && ctx.q("temp_url_prefix").is_some()
        && matches!(method, "GET" | "HEAD");
    if !METHODS.contains(&method)
        || ctx.target.container.is_none()
        || (ctx.target.object.is_none() && !container_get)
    {
        return Err(invalid());
    }
    let expires = expires_of(expires).ok_or_else(invalid)?;
    if expires < crate::time::now_secs() {
        return Err(invalid());
    }
    let (digest, raw) = signature_of(sig).ok_or_else(invalid)?;
    let object = ctx.object();
    let base = format!("/v1/{}/{}/", ctx.target.account, ctx.container());
    let path = match ctx.q("temp_url_prefix") {
        Some(p) => {
            if !object.starts_with(p) {
                return Err(invalid());
            }
            format!("prefix:{base}{p}")
        }
        None => format!("{base}{object}"),
    };
    let ip_line = match ctx.q("temp_url_ip_range") {
        Some(r) => {
            if !client_ip_in(r, client_ip) {
                return Err(invalid());
            }
            format!("ip={r}\n")
        }
        None => String::new(),
    };
    // GET and PUT URLs also allow HEAD.
    let methods: &[&str] = if method == "HEAD" {
        &["HEAD", "GET", "PUT"]
    } else {
        &[method]
    };
    let keys = keys(ctx).await?;
    let matched = keys.iter().find(|(k, _)| {
        methods.iter().any(|m| {
            let msg = format!("{ip_line}{m}\n{expires}\n{path}");
            verify(digest, k, &msg, &raw)
        })
    });
    let Some((_, account_wide)) = matched else {
        return Err(invalid());
    };
    let account_wide = *account_wide;
    if method == "PUT" && ctx.h("x-symlink-target").is_some() {
        return Err(Fail::bad(
            "Symlinks may not be made through a temporary URL",
        ));
    }
    if let Some(m) = ctx.h("x-object-manifest") {
        // A manifest made through a temporary URL stays in its container.
        let same = super::large::manifest_ref(m).is_some_and(|(c, _)| c == ctx.container());
        if !same {
            return Err(Fail::bad(
                "X-Object-Manifest via a temporary URL must name its own container",
            ));
        }
    }
    let disposition = if method != "GET" {
        None
    } else {
        let filename = ctx.q("filename");
        let name = filename
            .map(str::to_string)
            .unwrap_or_else(|| object.rsplit('/').next().unwrap_or(object).to_string());
        let format = |kind: &str| {
            let quoted = super::quote(&name);
            format!(
                "{kind}; filename=\"{}\"; filename*=UTF-8''{quoted}",
                name.replace('"', "\\\"")
            )
        };
        Some(match (ctx.q("inline").is_some(), filename.is_some()) {
            (true, true) => Disposition::Set(format("inline")),
            (true, false) => Disposition::Set("inline".into()),
            (false, true) => Disposition::Set(format("attachment")),
            (false, false) => Disposition::Default(format("attachment")),
        })
    };
    // What links in a static web listing carry to stay inside the grant.
    let listing = ctx.q("temp_url_prefix").map(|p| Listing {
        prefix: p.to_string(),
        query: format!(
            "?temp_url_prefix={p}&amp;temp_url_expires={}&amp;temp_url_sig={}{}",
            super::quote(ctx.q("temp_url_expires").unwrap_or("")),
            ctx.q("temp_url_sig").unwrap_or(""),
            if ctx.q("inline").is_some() {
                "&amp;inline"
            } else {
                ""
            }
        ),
    });
    Ok(Grant {
        disposition,
        account_wide,
        listing,
    })
}

/// `/info`'s `tempurl` section.
pub fn info() -> serde_json::Value {
    serde_json::json!({
        "methods": METHODS,
        "incoming_remove_headers": ["x-timestamp"],
        "incoming_allow_headers": [],
        "outgoing_remove_headers": ["x-object-meta-*"],
        "outgoing_allow_headers": ["x-object-meta-public-*"],
        "allowed_digests": DIGESTS,
    })
}
