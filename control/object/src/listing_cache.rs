//! Rendered container listings, cached per controller: a page is kept
//! under its container, query and format with the container's `created`
//! and `rev` when it was rendered, and served again only while the
//! container's row (read by every request anyway) still has both. Every
//! write to the container's objects bumps `rev` in its own transaction, on
//! whichever controller makes it, so a cached page is never stale. Bounded
//! by bytes (least recently used pages go first); pages larger than
//! [`MAX_PAGE`] are not kept.

use bytes::Bytes;
use hashlink::LruCache;
use std::sync::Mutex;

/// Bytes of pages kept at most.
pub const CAPACITY: usize = 64 << 20;
/// The largest page kept.
pub const MAX_PAGE: usize = 8 << 20;

#[derive(Hash, PartialEq, Eq)]
struct Key {
    account: String,
    container: String,
    /// The query string as sent (prefix, delimiter, markers, limit,
    /// reverse, format all live there).
    query: String,
}

struct Page {
    created: i64,
    rev: i64,
    body: Bytes,
}

pub struct ListingCache {
    inner: Mutex<(LruCache<Key, Page>, usize)>,
}

impl Default for ListingCache {
    fn default() -> Self {
        ListingCache {
            inner: Mutex::new((LruCache::new_unbounded(), 0)),
        }
    }
}

impl ListingCache {
    /// The page rendered for this container, query and state, if kept.
    pub fn get(
        &self,
        account: &str,
        container: &str,
        query: &str,
        (created, rev): (i64, i64),
    ) -> Option<Bytes> {
        let key = Key {
            account: account.to_string(),
            container: container.to_string(),
            query: query.to_string(),
        };
        let mut g = self.inner.lock().expect("listing cache");
        match g.0.get(&key) {
            Some(p) if p.created == created && p.rev == rev => Some(p.body.clone()),
            _ => None,
        }
    }

    /// Keeps a page rendered at container state `(created, rev)`.
    pub fn put(
        &self,
        account: &str,
        container: &str,
        query: &str,
        (created, rev): (i64, i64),
        body: Bytes,
    ) {
        if body.len() > MAX_PAGE {
            return;
        }
        let key = Key {
            account: account.to_string(),
            container: container.to_string(),
            query: query.to_string(),
        };
        let mut g = self.inner.lock().expect("listing cache");
        let (cache, bytes) = &mut *g;
        *bytes += body.len();
        if let Some(old) = cache.insert(key, Page { created, rev, body }) {
            *bytes -= old.body.len();
        }
        while *bytes > CAPACITY {
            match cache.remove_lru() {
                Some((_, p)) => *bytes -= p.body.len(),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_serve_while_the_container_is_unchanged_and_stay_bounded() {
        let c = ListingCache::default();
        c.put("a", "c", "format=json", (1, 5), Bytes::from_static(b"[1]"));
        assert_eq!(
            c.get("a", "c", "format=json", (1, 5)).as_deref(),
            Some(&b"[1]"[..])
        );
        // Changed, recreated, or another query: not served.
        assert!(c.get("a", "c", "format=json", (1, 6)).is_none());
        assert!(c.get("a", "c", "format=json", (2, 5)).is_none());
        assert!(c.get("a", "c", "format=xml", (1, 5)).is_none());
        // Bounded by bytes: the least recently used go.
        let big = Bytes::from(vec![0u8; MAX_PAGE]);
        for i in 0..(CAPACITY / MAX_PAGE + 2) {
            c.put("a", &format!("c{i}"), "", (1, 1), big.clone());
        }
        let g = c.inner.lock().unwrap();
        assert!(g.1 <= CAPACITY);
        assert_eq!(
            g.1,
            g.0.len() * MAX_PAGE
                + if g.0.contains_key(&Key {
                    account: "a".into(),
                    container: "c".into(),
                    query: "format=json".into()
                }) {
                    3
                } else {
                    0
                }
        );
    }
}
