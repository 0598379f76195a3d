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
    answer(
        ctx,
        &[("Number Deleted", deleted), ("Number Not Found", missing)],
        "",
        status,
        errors,
        Some("delete"),
    )
}

/// The answer every bulk operation gives: its counts, a body text, the
/// status it reached and the paths that failed, as JSON, as XML (under
/// `xml_root`, when the operation has that form) or as plain text.
fn answer(
    ctx: &Ctx,
    counts: &[(&str, usize)],
    body_text: &str,
    status: &str,
    errors: &[(String, String)],
    xml_root: Option<&str>,
) -> Response {
    let accept = ctx.h("accept").unwrap_or("");
    let mut h = HeaderMap::new();
    let body = if accept.contains("application/json") {
        set(&mut h, "content-type", "application/json; charset=utf-8");
        let mut v = serde_json::Map::new();
        for (k, n) in counts {
            v.insert(k.to_string(), (*n).into());
        }
        let errs: Vec<[&str; 2]> = errors
            .iter()
            .map(|(p, e)| [p.as_str(), e.as_str()])
            .collect();
        v.insert("Response Body".into(), body_text.into());
        v.insert("Response Status".into(), status.into());
        v.insert("Errors".into(), serde_json::json!(errs));
        serde_json::Value::Object(v).to_string()
    } else if let Some(root) = xml_root.filter(|_| accept.contains("xml")) {
        set(&mut h, "content-type", "application/xml; charset=utf-8");
        let esc = crate::listing::xml_escape;
        let mut x = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root}>");
        for (k, n) in counts {
            let tag = k.to_ascii_lowercase().replace(' ', "_");
            x.push_str(&format!("<{tag}>{n}</{tag}>"));
        }
        x.push_str(&format!(
            "<response_body>{}</response_body><response_status>{status}</response_status><errors>",
            esc(body_text)
        ));
        for (p, e) in errors {
            x.push_str(&format!(
                "<object><name>{}</name><status>{}</status></object>",
                esc(p),
                esc(e)
            ));
        }
        x.push_str(&format!("</errors></{root}>\n"));
        x
    } else {
        set(&mut h, "content-type", "text/plain; charset=utf-8");
        let mut t = String::new();
        for (k, n) in counts {
            t.push_str(&format!("{k}: {n}\n"));
        }
        t.push_str(&format!(
            "Response Body: {body_text}\nResponse Status: {status}\nErrors:\n"
        ));
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

/// What the archive reader hands the storing side.
enum Msg {
    Start(String, u64),
    Chunk(bytes::Bytes),
    End,
}

/// `PUT ?extract-archive=tar|tar.gz`: every file of the archive becomes an
/// object (at the account, `<container>/<object>` of its path, containers
/// made as needed; at a container, the path is the object's name, under
/// the target's name as a prefix). The archive streams through: a blocking
/// reader walks it and hands each file's bytes to the blob store as they
/// come, so memory stays constant whatever the archive's size.
pub async fn extract(ctx: &Ctx, body: axum::body::Body) -> super::Res {
    use futures_util::TryStreamExt;
    use std::io::Read;
    let gz = match ctx.q("extract-archive").unwrap_or("") {
        "tar" => false,
        "tar.gz" | "tgz" => true,
        other => {
            return Err(super::Fail::bad(format!(
                "Unsupported archive format {other:?}"
            )))
        }
    };
    if ctx.target.container.is_none() && !ctx.is_owner() {
        return Err(ctx.denied());
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(4);
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let walker = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let r: Box<dyn Read> = if gz {
            Box::new(flate2::read::GzDecoder::new(reader))
        } else {
            Box::new(reader)
        };
        let mut archive = tar::Archive::new(r);
        for e in archive.entries()? {
            let mut e = e?;
            if !e.header().entry_type().is_file() {
                continue;
            }
            let path = e.path()?.to_string_lossy().to_string();
            let size = e.header().size()?;
            if tx.blocking_send(Msg::Start(path, size)).is_err() {
                return Ok(());
            }
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = e.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if tx
                    .blocking_send(Msg::Chunk(bytes::Bytes::copy_from_slice(&buf[..n])))
                    .is_err()
                {
                    return Ok(());
                }
            }
            if tx.blocking_send(Msg::End).is_err() {
                return Ok(());
            }
        }
        Ok(())
    });
    let (mut created, mut errors) = (0usize, Vec::new());
    while let Some(msg) = rx.recv().await {
        let Msg::Start(path, size) = msg else {
            continue;
        };
        let chunks = Box::pin(futures_util::stream::unfold(&mut rx, |rx| async move {
            match rx.recv().await {
                Some(Msg::Chunk(b)) => Some((Ok::<_, std::io::Error>(b), rx)),
                _ => None,
            }
        }));
        let path = path
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        let (c, o) = match (&ctx.target.container, &ctx.target.object) {
            (None, _) => match path.split_once('/') {
                Some((c, o)) => (c.to_string(), o.to_string()),
                None => (path.clone(), String::new()),
            },
            (Some(c), Some(prefix)) => (c.clone(), format!("{prefix}/{path}")),
            (Some(c), None) => (c.clone(), path.clone()),
        };
        let w = ctx
            .state
            .objects
            .blobs
            .put(chunks, Some(size), crate::constraints::MAX_FILE_SIZE)
            .await;
        let outcome = async {
            let w = w?;
            if c.is_empty() || o.is_empty() {
                ctx.state.objects.blobs.delete(&w.id).await;
                return Err(super::Fail::bad("Invalid path"));
            }
            if o.len() > crate::constraints::MAX_OBJECT_NAME_LENGTH
                || c.len() > crate::constraints::MAX_CONTAINER_NAME_LENGTH
            {
                ctx.state.objects.blobs.delete(&w.id).await;
                return Err(super::Fail::bad("Name too long"));
            }
            let t = ctx.at(&ctx.target.account, &c, &o)?;
            if ctx.target.container.is_none() {
                crate::table::put_container(
                    &ctx.state.objects.store,
                    &ctx.target.account,
                    &c,
                    crate::time::now(),
                    |_| Ok::<(), ()>(()),
                )
                .await?
                .ok();
            }
            if let Err(f) = super::object::may_write(&t).await {
                ctx.state.objects.blobs.delete(&w.id).await;
                return Err(f);
            }
            let obj = crate::table::Object {
                name: o.clone(),
                ts: crate::time::now(),
                size: w.size as i64,
                etag: w.md5,
                content_type: super::object::guess_type(&o).to_string(),
                blob: w.id,
                inline: w.inline,
                meta: Default::default(),
                delete_at: None,
            };
            super::object::store(&t, &c, obj, false).await.map(|_| ())
        }
        .await;
        match outcome {
            Ok(()) => created += 1,
            Err(f) => errors.push((
                format!("/{c}/{o}"),
                format!(
                    "{} {}",
                    f.status.as_u16(),
                    f.status.canonical_reason().unwrap_or("")
                ),
            )),
        }
    }
    let walked = walker
        .await
        .map_err(|_| super::Fail::of(StatusCode::INTERNAL_SERVER_ERROR))?;
    let status = match (&walked, errors.is_empty()) {
        (Err(_), _) => "400 Bad Request",
        (Ok(()), true) => "201 Created",
        (Ok(()), false) => "400 Bad Request",
    };
    let body_text = if walked.is_err() {
        "Invalid Tar File"
    } else {
        ""
    };
    Ok(answer(
        ctx,
        &[("Number Files Created", created)],
        body_text,
        status,
        &errors,
        None,
    ))
}
