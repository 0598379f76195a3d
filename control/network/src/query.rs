//! Neutron's list semantics, shared by every collection: filters on any
//! attribute (repeated keys mean "any of"), `fields`, tag filters,
//! `sort_key`/`sort_dir`, and pagination with `limit`, `marker` and
//! `page_reverse`, answered with `<collection>_links`.

use serde_json::{json, Map, Value};
use std::cmp::Ordering;
use ursa_core::error::{Error, Result};

const CONTROL: &[&str] = &[
    "fields",
    "limit",
    "marker",
    "page_reverse",
    "sort_key",
    "sort_dir",
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
    "all_tenants",
];

/// The parsed query string of a list request.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub pairs: Vec<(String, String)>,
}

impl ListQuery {
    /// The query's pairs; a NUL character in one is bad input (no stored
    /// value holds one, and PostgreSQL refuses it in a parameter).
    pub fn parse(raw: Option<&str>) -> ursa_core::error::Result<ListQuery> {
        let pairs: Vec<(String, String)> = raw
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        if pairs
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(ursa_core::error::Error::BadRequest(
                "Invalid input: the query holds a NUL character.".into(),
            ));
        }
        Ok(ListQuery { pairs })
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn one(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The attribute filters (everything that is not a control key).
    fn filters(&self) -> Vec<(&str, Vec<&str>)> {
        let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
        for (k, v) in &self.pairs {
            if CONTROL.contains(&k.as_str()) {
                continue;
            }
            match out.iter_mut().find(|(kk, _)| *kk == k) {
                Some((_, vs)) => vs.push(v),
                None => out.push((k, vec![v])),
            }
        }
        out
    }
}

fn scalar_eq(have: &Value, want: &str) -> bool {
    match have {
        Value::Null => want.is_empty() || want.eq_ignore_ascii_case("none") || want == "null",
        Value::Bool(b) => want.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
        Value::Number(n) => n.to_string() == want,
        Value::String(s) => s == want,
        _ => false,
    }
}

/// Whether an attribute value matches one filter value. Lists match when
/// an element does; `fixed_ips=ip_address=…` matches inside objects.
fn matches(have: &Value, want: &str) -> bool {
    match have {
        Value::Array(items) => items.iter().any(|it| match it {
            Value::Object(o) => match want.split_once('=') {
                Some((k, v)) => o.get(k).is_some_and(|x| scalar_eq(x, v)),
                None => false,
            },
            other => scalar_eq(other, want),
        }),
        Value::Object(o) => match want.split_once('=') {
            Some((k, v)) => o.get(k).is_some_and(|x| scalar_eq(x, v)),
            None => false,
        },
        other => scalar_eq(other, want),
    }
}

fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (x, y) => x.to_string().cmp(&y.to_string()),
    }
}

fn tag_list(o: &Map<String, Value>) -> Vec<&str> {
    o.get("tags")
        .and_then(|t| t.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default()
}

fn split_tags(q: &ListQuery, key: &str) -> Vec<String> {
    q.all(key)
        .iter()
        .flat_map(|v| v.split(','))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Answers a list: `items` are the views the caller may see; `known`
/// names the attributes of the resource (filters and sort keys outside
/// it are a 400, as with Neutron's filter validation).
pub fn answer(
    q: &ListQuery,
    mut items: Vec<Map<String, Value>>,
    known: &[&str],
    collection: &str,
    url: &str,
) -> Result<Value> {
    for (k, wants) in q.filters() {
        if !known.contains(&k) {
            return Err(Error::BadRequest(format!(
                "['{k}'] is invalid attribute for filtering"
            )));
        }
        items.retain(|o| {
            let have = o.get(k).unwrap_or(&Value::Null);
            wants.iter().any(|w| matches(have, w))
        });
    }
    let (all, any, not_all, not_any) = (
        split_tags(q, "tags"),
        split_tags(q, "tags-any"),
        split_tags(q, "not-tags"),
        split_tags(q, "not-tags-any"),
    );
    if !(all.is_empty() && any.is_empty() && not_all.is_empty() && not_any.is_empty()) {
        items.retain(|o| {
            let t = tag_list(o);
            let has = |x: &String| t.contains(&x.as_str());
            (all.is_empty() || all.iter().all(has))
                && (any.is_empty() || any.iter().any(has))
                && (not_all.is_empty() || !not_all.iter().all(has))
                && (not_any.is_empty() || !not_any.iter().any(has))
        });
    }
    let order = sort_order(q, known)?;
    items.sort_by(|a, b| {
        for (k, asc) in &order {
            let c = cmp_values(
                a.get(k).unwrap_or(&Value::Null),
                b.get(k).unwrap_or(&Value::Null),
            );
            if c != Ordering::Equal {
                return if *asc { c } else { c.reverse() };
            }
        }
        Ordering::Equal
    });
    // Pagination.
    let limit = limit(q)?;
    let reverse = reverse(q);
    let marker = q.one("marker").filter(|m| !m.is_empty());
    let mut page = items;
    if let Some(m) = marker {
        let pos = page.iter().position(|o| id_of(o) == m);
        page = match (pos, reverse) {
            (Some(p), false) => page.split_off(p + 1),
            (Some(p), true) => {
                page.truncate(p);
                page
            }
            (None, _) => page,
        };
    }
    let mut more = false;
    if let Some(l) = limit {
        if page.len() > l {
            more = true;
            if reverse {
                page = page.split_off(page.len() - l);
            } else {
                page.truncate(l);
            }
        }
    }
    Ok(page_answer(q, page, more, collection, url))
}

/// Keeps only the asked-for fields (all when none are asked for).
pub fn select(o: Map<String, Value>, fields: &[&str]) -> Map<String, Value> {
    if fields.is_empty() {
        return o;
    }
    o.into_iter()
        .filter(|(k, _)| fields.contains(&k.as_str()))
        .collect()
}

fn id_of(o: &Map<String, Value>) -> String {
    o.get("id")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The sort order a list asks for: `(key, ascending)` pairs, ending with
/// `id` (in the first key's direction) to break ties.
pub fn sort_order(q: &ListQuery, known: &[&str]) -> Result<Vec<(String, bool)>> {
    let keys = q.all("sort_key");
    let dirs = q.all("sort_dir");
    let mut order: Vec<(String, bool)> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if !known.contains(k) {
            return Err(Error::BadRequest(format!(
                "{k} is an invalid attribute for sort_key"
            )));
        }
        let asc = match dirs.get(i).copied().unwrap_or("asc") {
            "asc" => true,
            "desc" => false,
            d => {
                return Err(Error::BadRequest(format!(
                    "{d} is an invalid value for sort_dir, valid values are 'asc' and 'desc'"
                )))
            }
        };
        order.push((k.to_string(), asc));
    }
    if dirs.len() > keys.len() {
        return Err(Error::BadRequest(
            "The number of sort_keys and sort_dirs must be same".into(),
        ));
    }
    // Ties are broken by id, unless id is already a key (twice would make
    // a keyset condition no index can serve).
    if !order.iter().any(|(k, _)| k == "id") {
        order.push(("id".into(), order.first().is_none_or(|(_, a)| *a)));
    }
    Ok(order)
}

/// The `limit` of a list (none for absent or 0).
pub fn limit(q: &ListQuery) -> Result<Option<usize>> {
    Ok(match q.one("limit") {
        None | Some("") => None,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as usize),
            Ok(0) => None,
            _ => {
                return Err(Error::BadRequest(format!(
                    "Bad limit request: Limit must be an integer 0 or greater and not '{l}'"
                )))
            }
        },
    })
}

/// Whether the list goes backwards from its marker.
pub fn reverse(q: &ListQuery) -> bool {
    q.one("page_reverse")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The page's answer: its items (with `fields` applied) and the links to
/// the next and previous pages. `more` says items exist beyond the page
/// in the direction of travel.
pub fn page_answer(
    q: &ListQuery,
    page: Vec<Map<String, Value>>,
    more: bool,
    collection: &str,
    url: &str,
) -> Value {
    let limit = limit(q).ok().flatten();
    let reverse = reverse(q);
    let marker = q.one("marker").filter(|m| !m.is_empty());
    let mut links = Vec::new();
    if limit.is_some() {
        let base: Vec<String> = q
            .pairs
            .iter()
            .filter(|(k, _)| k != "marker" && k != "page_reverse")
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect();
        let href = |marker: &str, rev: bool| {
            let mut p = base.clone();
            p.push(format!("marker={marker}"));
            if rev {
                p.push("page_reverse=True".into());
            }
            format!("{url}?{}", p.join("&"))
        };
        let (first, last) = (page.first().map(id_of), page.last().map(id_of));
        let (has_next, has_prev) = if reverse {
            (marker.is_some(), more)
        } else {
            (more, marker.is_some())
        };
        if has_next {
            if let Some(l) = &last {
                links.push(json!({"rel": "next", "href": href(l, false)}));
            }
        }
        if has_prev {
            if let Some(f) = &first {
                links.push(json!({"rel": "previous", "href": href(f, true)}));
            }
        }
    }
    let fields = q.all("fields");
    let page: Vec<Value> = page
        .into_iter()
        .map(|o| Value::Object(select(o, &fields)))
        .collect();
    let mut out = Map::new();
    out.insert(collection.into(), Value::Array(page));
    if !links.is_empty() {
        out.insert(format!("{collection}_links"), Value::Array(links));
    }
    Value::Object(out)
}

impl ListQuery {
    /// The attribute filters, with repeated keys gathered.
    pub fn filter_pairs(&self) -> Vec<(&str, Vec<&str>)> {
        self.filters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<Map<String, Value>> {
        (0..5)
            .map(|i| {
                json!({"id": format!("id{i}"), "name": format!("n{}", 4 - i), "admin_state_up": i % 2 == 0,
                       "fixed_ips": [{"ip_address": format!("10.0.0.{i}"), "subnet_id": "s"}], "tags": ["a"]})
                .as_object()
                .unwrap()
                .clone()
            })
            .collect()
    }

    const KNOWN: &[&str] = &["id", "name", "admin_state_up", "fixed_ips", "tags"];

    #[test]
    fn filters_sort_and_pages() {
        let q = ListQuery::parse(Some(
            "admin_state_up=True&sort_key=name&sort_dir=asc&limit=2",
        ))
        .unwrap();
        let v = answer(&q, items(), KNOWN, "ports", "u").unwrap();
        let names: Vec<&str> = v["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["n0", "n2"]);
        assert_eq!(v["ports_links"][0]["rel"], "next");
        let q = ListQuery::parse(Some("fixed_ips=ip_address%3D10.0.0.3&fields=id")).unwrap();
        let v = answer(&q, items(), KNOWN, "ports", "u").unwrap();
        assert_eq!(v["ports"], json!([{"id": "id3"}]));
        assert!(answer(
            &ListQuery::parse(Some("bogus=1")).unwrap(),
            items(),
            KNOWN,
            "ports",
            "u"
        )
        .is_err());
        let q = ListQuery::parse(Some("not-tags=a")).unwrap();
        assert_eq!(
            answer(&q, items(), KNOWN, "ports", "u").unwrap()["ports"],
            json!([])
        );
    }

    #[test]
    fn a_nul_in_the_query_is_bad_input() {
        assert!(ListQuery::parse(Some("name=a%00b")).is_err());
        assert!(ListQuery::parse(Some("na%00me=a")).is_err());
        assert!(ListQuery::parse(Some("name=ab")).is_ok());
    }
}
