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
