//! Swift's `bulk` middleware: `?bulk-delete` (a list of paths in the body)
//! and the answer shape it shares with `?multipart-manifest=delete`.

use super::{set, Ctx};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// A bulk answer: counts and errors, as JSON, XML or plain text by `Accept`.
pub fn report(ctx: &Ctx, deleted: usize, missing: usize, errors: &[(String, String)]) -> Response {
    let status = if errors.is_empty() {
        "200 OK"
    } else {
        "400 Bad Request"
    };
    let accept = ctx.h("accept").unwrap_or("");
    let mut h = HeaderMap::new();
    let body = if accept.contains("application/json") {
        set(&mut h, "content-type", "application/json; charset=utf-8");
        let errs: Vec<[&str; 2]> = errors
            .iter()
            .map(|(p, e)| [p.as_str(), e.as_str()])
            .collect();
        serde_json::json!({
            "Number Deleted": deleted, "Number Not Found": missing,
            "Response Body": "", "Response Status": status, "Errors": errs,
        })
        .to_string()
    } else if accept.contains("xml") {
        set(&mut h, "content-type", "application/xml; charset=utf-8");
        let mut x = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<delete><number_deleted>{deleted}</number_deleted><number_not_found>{missing}</number_not_found><response_body></response_body><response_status>{status}</response_status><errors>"
        );
        for (p, e) in errors {
            x.push_str(&format!(
                "<object><name>{}</name><status>{}</status></object>",
                crate::listing::xml_escape(p),
                crate::listing::xml_escape(e)
            ));
        }
        x.push_str("</errors></delete>\n");
        x
    } else {
        set(&mut h, "content-type", "text/plain; charset=utf-8");
        let mut t = format!(
            "Number Deleted: {deleted}\nNumber Not Found: {missing}\nResponse Body: \nResponse Status: {status}\nErrors:\n"
        );
        for (p, e) in errors {
            t.push_str(&format!("{p}, {e}\n"));
        }
        t
    };
    (StatusCode::OK, h, body).into_response()
}

/// The most paths one bulk delete takes.
pub const MAX_DELETES: usize = 10_000;

/// `?bulk-delete`: the body lists URL-encoded `container/object` or
/// `container` paths of the account, one a line; each is deleted as if
/// on its own (with the caller's rights), and one report answers.
pub async fn delete(ctx: &Ctx, body: axum::body::Body) -> super::Res {
    let bytes = axum::body::to_bytes(body, MAX_DELETES * 2048)
        .await
        .map_err(|_| super::Fail::of(StatusCode::PAYLOAD_TOO_LARGE))?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() > MAX_DELETES {
        return Err(super::Fail::of(StatusCode::PAYLOAD_TOO_LARGE));
    }
    let (mut deleted, mut missing, mut errors) = (0, 0, Vec::new());
    for line in lines {
        let path = percent_encoding::percent_decode_str(line)
            .decode_utf8_lossy()
            .to_string();
        let path = path.trim_start_matches('/');
        let (c, o) = match path.split_once('/') {
            Some((c, o)) => (c, o),
            None => (path, ""),
        };
        if c.is_empty() {
            errors.push((line.to_string(), "400 Bad Request".to_string()));
            continue;
        }
        let t = ctx.at(&ctx.target.account, c, o)?;
        let outcome = if o.is_empty() {
            if !t.is_owner() {
                Err(t.denied())
            } else {
                match crate::table::delete_container(
                    &ctx.state.objects.store,
                    &ctx.target.account,
                    c,
                )
                .await?
                {
                    crate::table::Deleted::Done => Ok(true),
                    crate::table::Deleted::NotFound => Ok(false),
                    crate::table::Deleted::NotEmpty => Err(super::Fail::of(StatusCode::CONFLICT)),
                }
            }
        } else {
            match super::object::may_write(&t).await {
                Ok(()) => super::object::remove(&t, c, o).await,
                Err(f) => Err(f),
            }
        };
        match outcome {
            Ok(true) => deleted += 1,
            Ok(false) => missing += 1,
            Err(f) => errors.push((
                format!("/{path}"),
                format!(
                    "{} {}",
                    f.status.as_u16(),
                    f.status.canonical_reason().unwrap_or("")
                ),
            )),
        }
    }
    Ok(report(ctx, deleted, missing, &errors))
}
