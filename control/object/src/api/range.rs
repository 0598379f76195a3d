//! `Range: bytes=…` as Swift reads it: a header that does not parse is
//! ignored (the whole object is answered); one that parses but that no
//! part of the object satisfies is a 416.

/// The ranges a header asks for, before the object's length is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// `a-b` or `a-` (end `None`).
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// Parses a `Range` header; `None` if it is not a valid byte-range set.
pub fn parse(header: &str) -> Option<Vec<Spec>> {
    let set = header.trim().strip_prefix("bytes=")?;
    let mut out = Vec::new();
    for part in set.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (a, b) = part.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        let spec = if a.is_empty() {
            Spec::Suffix(b.parse().ok()?)
        } else {
            let a: u64 = a.parse().ok()?;
            let b = if b.is_empty() {
                None
            } else {
                Some(b.parse::<u64>().ok()?)
            };
            if b.is_some_and(|b| b < a) {
                return None;
            }
            Spec::From(a, b)
        };
        out.push(spec);
    }
    (!out.is_empty()).then_some(out)
}

/// The satisfiable ranges as `(start, end_exclusive)` for an object of
/// `len` bytes.
pub fn resolve(specs: &[Spec], len: u64) -> Vec<(u64, u64)> {
    specs
        .iter()
        .filter_map(|s| match *s {
            Spec::From(a, b) => (a < len).then(|| (a, b.map_or(len, |b| (b + 1).min(len)))),
            Spec::Suffix(n) => (n > 0 && len > 0).then(|| (len.saturating_sub(n), len)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse("bytes=0-9"), Some(vec![Spec::From(0, Some(9))]));
        assert_eq!(
            parse("bytes=5-,-3"),
            Some(vec![Spec::From(5, None), Spec::Suffix(3)])
        );
        assert_eq!(parse("bytes=9-0"), None);
        assert_eq!(parse("bites=0-1"), None);
        assert_eq!(parse("bytes=a-b"), None);
        let s = parse("bytes=0-9,95-200,-5,200-").unwrap();
        assert_eq!(resolve(&s, 100), vec![(0, 10), (95, 100), (95, 100)]);
        assert!(resolve(&parse("bytes=100-").unwrap(), 100).is_empty());
        assert!(resolve(&parse("bytes=-0").unwrap(), 100).is_empty());
    }
}
