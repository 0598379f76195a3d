//! Listings of an account's containers and a container's objects:
//! `prefix`, `delimiter`, `marker`, `end_marker`, `reverse` and `limit`
//! become bounded, indexed pages ([`crate::table::Page`]); a delimiter
//! rolls a run of names into one `subdir` and the next page starts past it,
//! so a listing never reads the names it rolls up. Rendered as plain text,
//! JSON or XML.

use crate::table::{Bound, Page};
use std::future::Future;

/// How a listing is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Json,
    Xml,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Plain => "text/plain; charset=utf-8",
            Format::Json => "application/json; charset=utf-8",
            Format::Xml => "application/xml; charset=utf-8",
        }
    }

    /// From `?format=`, else the `Accept` header (q-values honoured, ties
    /// to the first of plain, JSON, XML); `None` if nothing we offer is
    /// acceptable.
    pub fn choose(format: Option<&str>, accept: Option<&str>) -> Option<Format> {
        match format.map(|f| f.to_ascii_lowercase()).as_deref() {
            Some("json") => return Some(Format::Json),
            Some("xml") => return Some(Format::Xml),
            Some("plain") => return Some(Format::Plain),
            _ => {}
        }
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Some(Format::Plain);
        };
        let offers = [
            ("text/plain", Format::Plain),
            ("application/json", Format::Json),
            ("application/xml", Format::Xml),
            ("text/xml", Format::Xml),
        ];
        let mut best: Option<(f32, usize, Format)> = None;
        for part in accept.split(',') {
            let mut bits = part.split(';');
            let media = bits.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0f32;
            for p in bits {
                if let Some(v) = p.trim().strip_prefix("q=") {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            if q <= 0.0 {
                continue;
            }
            for (i, (offer, f)) in offers.iter().enumerate() {
                let (ot, os) = offer.split_once('/').unwrap_or((offer, ""));
                let (mt, ms) = media.split_once('/').unwrap_or((&media, ""));
                let hit = media == *offer || media == "*/*" || (mt == ot && ms == "*");
                let _ = os;
                if hit && best.is_none_or(|(bq, bi, _)| q > bq || (q == bq && i < bi)) {
                    best = Some((q, i, *f));
                }
            }
        }
        best.map(|(_, _, f)| f)
    }
}

/// What a client asked a listing for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub marker: Option<String>,
    pub end_marker: Option<String>,
    pub reverse: bool,
    pub limit: usize,
}

/// A listed name: an item, or a `subdir` a delimiter rolled names into.
#[derive(Debug, Clone)]
pub enum Entry<T> {
    Item(T),
    Subdir(String),
}

/// Something a listing lists.
pub trait Named {
    fn name(&self) -> &str;
}

impl Named for crate::table::Container {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for crate::table::Object {
    fn name(&self) -> &str {
        &self.name
    }
}

/// The names just past every name that starts with `s` (`s` with its last
/// character incremented), when there is such a string.
fn successor(s: &str) -> Option<String> {
    let mut chars: Vec<char> = s.chars().collect();
    while let Some(c) = chars.pop() {
        let mut n = c as u32 + 1;
        if (0xD800..0xE000).contains(&n) {
            n = 0xE000;
        }
        if let Some(next) = char::from_u32(n) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn tighter_lo(a: Option<Bound>, b: Option<Bound>) -> Option<Bound> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.name > b.name || (a.name == b.name && !a.inclusive) {
            a
        } else {
            b
        }),
        (a, b) => a.or(b),
    }
}

fn tighter_hi(a: Option<Bound>, b: Option<Bound>) -> Option<Bound> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.name < b.name || (a.name == b.name && !a.inclusive) {
            a
        } else {
            b
        }),
        (a, b) => a.or(b),
    }
}

fn excl(s: &str) -> Bound {
    Bound {
        name: s.to_string(),
        inclusive: false,
    }
}

fn incl(s: String) -> Bound {
    Bound {
        name: s,
        inclusive: true,
    }
}

/// Lists by pages from `fetch`, as Swift's container and account servers
/// do.
pub async fn list<T, E, F, Fut>(q: &Query, mut fetch: F) -> Result<Vec<Entry<T>>, E>
where
    T: Named,
    F: FnMut(Page) -> Fut,
    Fut: Future<Output = Result<Vec<T>, E>>,
{
    let mut out: Vec<Entry<T>> = Vec::new();
    if q.limit == 0 {
        return Ok(out);
    }
    let (prefix_lo, prefix_hi) = if q.prefix.is_empty() {
        (None, None)
    } else {
        (
            Some(incl(q.prefix.clone())),
            successor(&q.prefix).map(|s| Bound {
                name: s,
                inclusive: false,
            }),
        )
    };
    // In reverse, the marker bounds from above and the end marker from below.
    let (marker_lo, marker_hi) = if q.reverse {
        (
            q.end_marker.as_deref().map(excl),
            q.marker.as_deref().map(excl),
        )
    } else {
        (
            q.marker.as_deref().map(excl),
            q.end_marker.as_deref().map(excl),
        )
    };
    let mut lo = tighter_lo(prefix_lo, marker_lo);
    let mut hi = tighter_hi(prefix_hi, marker_hi);
    let delim = q.delimiter.as_deref().filter(|d| !d.is_empty());
    loop {
        let want = q.limit - out.len();
        let page = Page {
            lo: lo.clone(),
            hi: hi.clone(),
            reverse: q.reverse,
            limit: want,
        };
        let rows = fetch(page).await?;
        let got = rows.len();
        let mut rolled = false;
        let mut last_seen = None;
        for row in rows {
            let name = row.name();
            last_seen = Some(name.to_string());
            if !name.starts_with(&q.prefix) {
                continue;
            }
            if let Some(d) = delim {
                if let Some(i) = name[q.prefix.len()..].find(d) {
                    let dir = name[..q.prefix.len() + i + d.len()].to_string();
                    if q.reverse {
                        hi = Some(excl(&dir));
                    } else {
                        match successor(&dir) {
                            Some(s) => lo = Some(incl(s)),
                            None => return Ok(out),
                        }
                    }
                    if q.marker.as_deref() != Some(dir.as_str()) {
                        out.push(Entry::Subdir(dir));
                    }
                    rolled = true;
                    break;
                }
            }
            out.push(Entry::Item(row));
        }
        if out.len() >= q.limit || (!rolled && got < want) || got == 0 {
            return Ok(out);
        }
        if !rolled {
            // A full page without a subdir: continue past its last name.
            let Some(last) = last_seen else {
                return Ok(out);
            };
            if q.reverse {
                hi = Some(excl(&last));
            } else {
                lo = Some(excl(&last));
            }
        }
    }
}

/// Escapes text for XML.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone)]
    struct N(String);
    impl Named for N {
        fn name(&self) -> &str {
            &self.0
        }
    }

    fn within(p: &Page, s: &str) -> bool {
        let lo_ok = p.lo.as_ref().is_none_or(|b| {
            if b.inclusive {
                s >= b.name.as_str()
            } else {
                s > b.name.as_str()
            }
        });
        let hi_ok = p.hi.as_ref().is_none_or(|b| {
            if b.inclusive {
                s <= b.name.as_str()
            } else {
                s < b.name.as_str()
            }
        });
        lo_ok && hi_ok
    }

    async fn run(names: &[&str], q: Query) -> Vec<String> {
        let mut sorted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        sorted.sort();
        let out = list(&q, |p: Page| {
            let mut v: Vec<N> = sorted
                .iter()
                .filter(|s| within(&p, s))
                .map(|s| N(s.clone()))
                .collect();
            if p.reverse {
                v.reverse();
            }
            v.truncate(p.limit);
            async move { Ok::<_, ()>(v) }
        })
        .await
        .unwrap();
        out.into_iter()
            .map(|e| match e {
                Entry::Item(n) => n.0,
                Entry::Subdir(s) => format!("[{s}]"),
            })
            .collect()
    }

    #[tokio::test]
    async fn prefixes_delimiters_markers() {
        let names = ["a", "a/1", "a/2", "a/b/c", "b", "b/x", "c"];
        let q = |f: fn(&mut Query)| {
            let mut q = Query {
                limit: 100,
                ..Default::default()
            };
            f(&mut q);
            q
        };
        assert_eq!(run(&names, q(|_| {})).await.len(), 7);
        assert_eq!(
            run(&names, q(|q| q.delimiter = Some("/".into()))).await,
            ["a", "[a/]", "b", "[b/]", "c"]
        );
        assert_eq!(
            run(
                &names,
                q(|q| {
                    q.delimiter = Some("/".into());
                    q.prefix = "a/".into();
                })
            )
            .await,
            ["a/1", "a/2", "[a/b/]"]
        );
        assert_eq!(
            run(
                &names,
                q(|q| {
                    q.delimiter = Some("/".into());
                    q.reverse = true;
                })
            )
            .await,
            ["c", "[b/]", "b", "[a/]", "a"]
        );
        assert_eq!(
            run(&names, q(|q| q.marker = Some("a/2".into()))).await,
            ["a/b/c", "b", "b/x", "c"]
        );
        assert_eq!(
            run(
                &names,
                q(|q| {
                    q.marker = Some("a".into());
                    q.end_marker = Some("b".into());
                })
            )
            .await,
            ["a/1", "a/2", "a/b/c"]
        );
        assert_eq!(
            run(
                &names,
                q(|q| {
                    q.reverse = true;
                    q.marker = Some("b".into());
                    q.limit = 2;
                })
            )
            .await,
            ["a/b/c", "a/2"]
        );
        assert_eq!(run(&names, q(|q| q.limit = 3)).await, ["a", "a/1", "a/2"]);
        assert_eq!(
            run(
                &names,
                q(|q| {
                    q.delimiter = Some("/".into());
                    q.limit = 2;
                })
            )
            .await,
            ["a", "[a/]"]
        );
    }

    #[test]
    fn formats() {
        assert_eq!(Format::choose(Some("json"), None), Some(Format::Json));
        assert_eq!(Format::choose(None, None), Some(Format::Plain));
        assert_eq!(
            Format::choose(None, Some("application/xml")),
            Some(Format::Xml)
        );
        assert_eq!(Format::choose(None, Some("*/*")), Some(Format::Plain));
        assert_eq!(
            Format::choose(None, Some("text/plain;q=0.5, application/json")),
            Some(Format::Json)
        );
        assert_eq!(Format::choose(None, Some("application/foo")), None);
    }
}
