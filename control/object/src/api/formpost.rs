//! Browser uploads (Swift's `formpost` middleware): a `multipart/form-data`
//! POST to a container or object-prefix path, with the form's `redirect`,
//! `max_file_size`, `max_file_count`, `expires` and an HMAC `signature` of
//! `<path>\n<redirect>\n<max_file_size>\n<max_file_count>\n<expires>`
//! under one of the account's or container's `Temp-URL-Key`s, stores each
//! file as `<prefix><filename>` without a token. Files stream into the
//! blob store as they arrive.

use super::{set, Ctx, Fail, Res};
use crate::table::Object;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};

/// Whether a request is a form upload.
pub fn is_form(ctx: &Ctx) -> bool {
    ctx.method == "POST"
        && ctx.target.container.is_some()
        && ctx
            .h("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("multipart/form-data"))
}

fn fail(status: StatusCode, why: &str) -> Fail {
    Fail::msg(status, format!("FormPost: {why}"))
}

fn verify(key: &str, msg: &str, sig: &str) -> bool {
    let (digest, raw) = match sig.split_once(':') {
        Some((d, b64)) => {
            use base64::Engine;
            let b64 = b64.trim_end_matches('=');
            let raw = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64));
            match raw {
                Ok(r) => (d.to_string(), r),
                Err(_) => return false,
            }
        }
        None => match hex::decode(sig) {
            Ok(r) => (
                match r.len() {
                    20 => "sha1",
                    32 => "sha256",
                    64 => "sha512",
                    _ => return false,
                }
                .to_string(),
                r,
            ),
            Err(_) => return false,
        },
    };
    macro_rules! check {
        ($h:ty) => {
            Hmac::<$h>::new_from_slice(key.as_bytes())
                .map(|mut m| {
                    m.update(msg.as_bytes());
                    m.verify_slice(&raw).is_ok()
                })
                .unwrap_or(false)
        };
    }
    match digest.as_str() {
        "sha1" => check!(sha1::Sha1),
        "sha256" => check!(sha2::Sha256),
        "sha512" => check!(sha2::Sha512),
        _ => false,
    }
}

/// The form's fields before its first file.
#[derive(Default)]
struct Form {
    redirect: String,
    max_file_size: String,
    max_file_count: String,
    expires: String,
    signature: String,
}

impl Form {
    fn set(&mut self, name: &str, value: String) {
        match name {
            "redirect" => self.redirect = value,
            "max_file_size" => self.max_file_size = value,
            "max_file_count" => self.max_file_count = value,
            "expires" => self.expires = value,
            "signature" => self.signature = value,
            _ => {}
        }
    }

    /// Checks the form's signature and time; the limits it grants.
    async fn check(&self, ctx: &Ctx) -> Result<(u64, usize), Fail> {
        let expires: i64 = self
            .expires
            .parse()
            .map_err(|_| fail(StatusCode::UNAUTHORIZED, "Invalid Signature"))?;
        if expires < crate::time::now_secs() {
            return Err(fail(StatusCode::UNAUTHORIZED, "Form Expired"));
        }
        let path = match &ctx.target.object {
            Some(o) => format!("/v1/{}/{}/{}", ctx.target.account, ctx.container(), o),
            None => format!("/v1/{}/{}", ctx.target.account, ctx.container()),
        };
        let msg = format!(
            "{path}\n{}\n{}\n{}\n{}",
            self.redirect, self.max_file_size, self.max_file_count, self.expires
        );
        let keys = super::tempurl::keys(ctx).await?;
        if !keys.iter().any(|(k, _)| verify(k, &msg, &self.signature)) {
            return Err(fail(StatusCode::UNAUTHORIZED, "Invalid Signature"));
        }
        let size = self
            .max_file_size
            .parse()
            .map_err(|_| fail(StatusCode::BAD_REQUEST, "max_file_size not an integer"))?;
        let count = self
            .max_file_count
            .parse()
            .map_err(|_| fail(StatusCode::BAD_REQUEST, "max_file_count not an integer"))?;
        Ok((size, count))
    }
}

/// Handles a form upload.
pub async fn post(ctx: &Ctx, body: Body) -> Res {
    let boundary = ctx
        .h("content-type")
        .and_then(|c| multer::parse_boundary(c).ok())
        .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "invalid starting boundary"))?;
    let mut parts = multer::Multipart::new(body.into_data_stream(), boundary);
    let mut form = Form::default();
    let mut limits: Option<(u64, usize)> = None;
    let mut stored = 0usize;
    // The upload acts as the account's owner, within what the form grants.
    let mut owner = ctx.at(&ctx.target.account, ctx.container(), ctx.object())?;
    owner.standing = crate::access::Standing::Owner;
    let prefix = ctx.target.object.clone().unwrap_or_default();
    let outcome: Result<(), Fail> = async {
        while let Some(field) = parts
            .next_field()
            .await
            .map_err(|e| fail(StatusCode::BAD_REQUEST, &e.to_string()))?
        {
            let name = field.name().unwrap_or("").to_string();
            let Some(filename) = field.file_name().map(str::to_string) else {
                let value = field
                    .text()
                    .await
                    .map_err(|e| fail(StatusCode::BAD_REQUEST, &e.to_string()))?;
                form.set(&name, value);
                continue;
            };
            if limits.is_none() {
                limits = Some(form.check(ctx).await?);
            }
            let (max_size, max_count) = limits.unwrap_or((0, 0));
            if filename.is_empty() {
                continue;
            }
            if stored >= max_count {
                return Err(fail(StatusCode::BAD_REQUEST, "max_file_count exceeded"));
            }
            let content_type = field
                .content_type()
                .map(|m| m.to_string())
                .unwrap_or_else(|| super::object::guess_type(&filename).to_string());
            let w = ctx
                .state
                .objects
                .blobs
                .put(Box::pin(field), None, max_size)
                .await
                .map_err(|e| match e {
                    crate::blob::BlobError::TooLarge(_) => {
                        fail(StatusCode::BAD_REQUEST, "max_file_size exceeded")
                    }
                    other => Fail::from(other),
                })?;
            let obj_name = format!("{prefix}{filename}");
            let obj = Object {
                name: obj_name,
                ts: crate::time::now(),
                size: w.size as i64,
                etag: w.md5,
                content_type,
                blob: w.id,
                inline: w.inline,
                meta: Default::default(),
                delete_at: None,
            };
            super::object::store(&owner, ctx.container(), obj, false).await?;
            stored += 1;
        }
        if limits.is_none() {
            form.check(ctx).await?;
        }
        Ok(())
    }
    .await;
    let (status, message) = match &outcome {
        Ok(()) => (StatusCode::CREATED, String::new()),
        Err(f) => (
            f.status,
            f.body.trim_start_matches("FormPost: ").to_string(),
        ),
    };
    if let Err(f) = outcome {
        if form.redirect.is_empty() || f.status == StatusCode::UNAUTHORIZED {
            return Err(f);
        }
    }
    if !form.redirect.is_empty() {
        let sep = if form.redirect.contains('?') {
            '&'
        } else {
            '?'
        };
        let mut h = HeaderMap::new();
        set(
            &mut h,
            "location",
            format!(
                "{}{sep}status={}&message={}",
                form.redirect,
                status.as_u16(),
                percent_encoding::utf8_percent_encode(&message, percent_encoding::NON_ALPHANUMERIC)
            ),
        );
        return Ok(super::empty(StatusCode::SEE_OTHER, h));
    }
    let body = format!(
        "<html><body><p><h1>{} {}</h1>FormPost: {message}</p></body></html>",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut h = HeaderMap::new();
    set(&mut h, "content-type", "text/html; charset=UTF-8");
    Ok((status, h, body).into_response())
}
