//! Compute microversions: 2.1 up to [`MAX`] (2.104: pinned availability
//! zones updatable, the newest Tempest exercises). The
//! version asked for (`OpenStack-API-Version: compute 2.N` or the older
//! `X-OpenStack-Nova-API-Version: 2.N`, `latest` meaning [`MAX`]) is
//! parsed once at the edge into an [`Mv`] that handlers take as an
//! extractor, and the version answered is echoed in both headers.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use ursa_core::error::Error;

/// The highest compute microversion served.
pub const MAX: u16 = 104;

/// The microversion a request is served at, as its minor number (the
/// major is always 2). Absent a header it is 2.1, as in Nova.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mv(pub u16);

impl Default for Mv {
    fn default() -> Self {
        Mv(1)
    }
}

impl Mv {
    /// Whether the request is at 2.`minor` or above.
    pub fn at(self, minor: u16) -> bool {
        self.0 >= minor
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Mv {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Mv>().copied().unwrap_or_default())
    }
}

/// The version the headers ask for, `None` when they ask for none.
fn asked(h: &HeaderMap) -> Option<String> {
    // `OpenStack-API-Version` may name several services: "compute 2.47,
    // volume 3.1". One naming another service only is no request here.
    let new = h
        .get_all("openstack-api-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|item| {
            let mut w = item.split_whitespace();
            match (w.next(), w.next()) {
                (Some(s), Some(v)) if s.eq_ignore_ascii_case("compute") => Some(v.to_string()),
                _ => None,
            }
        });
    new.or_else(|| {
        h.get("x-openstack-nova-api-version")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
    })
}

/// Parses a version string as Nova does: `latest`, or `2.N` within range.
pub fn parse(v: &str) -> Result<Mv, Error> {
    if v.eq_ignore_ascii_case("latest") {
        return Ok(Mv(MAX));
    }
    let bad = || {
        Error::BadRequest(format!(
            "API Version String {v} is of invalid format. Must be of format MajorNum.MinorNum."
        ))
    };
    let (major, minor) = v.split_once('.').ok_or_else(bad)?;
    let num = |s: &str| -> Result<u32, Error> {
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (major, minor) = (num(major)?, num(minor)?);
    // 2.0 is the API before microversions, which 2.1 equals.
    if (major, minor) == (2, 0) {
        return Ok(Mv(1));
    }
    if major != 2 || minor < 1 || minor > u32::from(MAX) {
        return Err(Error::NotAcceptable(format!(
            "Version {v} is not supported by the API. Minimum is 2.1 and maximum is 2.{MAX}."
        )));
    }
    Ok(Mv(minor as u16))
}

/// The layer over every compute route: reads the version, answers 400 or
/// 406 for one Ursa cannot serve, and echoes the one it served.
pub async fn layer(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mv = match asked(req.headers()).map(|v| parse(&v)) {
        None => Mv::default(),
        Some(Ok(mv)) => mv,
        Some(Err(e)) => return e.into_response(),
    };
    req.extensions_mut().insert(mv);
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("compute 2.{}", mv.0)) {
        h.insert("openstack-api-version", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("2.{}", mv.0)) {
        h.insert("x-openstack-nova-api-version", v);
    }
    h.insert(
        "vary",
        HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_nova_parses_them() {
        assert_eq!(parse("2.1").unwrap(), Mv(1));
        assert_eq!(parse("2.47").unwrap(), Mv(47));
        assert_eq!(parse("latest").unwrap(), Mv(MAX));
        assert!(matches!(parse("2.105"), Err(Error::NotAcceptable(_))));
        assert!(matches!(parse("3.1"), Err(Error::NotAcceptable(_))));
        assert_eq!(parse("2.0").unwrap(), Mv(1));
        for bad in ["2", "2.", "two.one", "2.01", "2.1.1", " ", "2.-1"] {
            assert!(matches!(parse(bad), Err(Error::BadRequest(_))), "{bad}");
        }
    }

    #[test]
    fn the_compute_entry_of_a_shared_header_is_the_one_read() {
        let mut h = HeaderMap::new();
        h.insert(
            "openstack-api-version",
            HeaderValue::from_static("volume 3.5"),
        );
        assert_eq!(asked(&h), None);
        h.insert(
            "openstack-api-version",
            HeaderValue::from_static("volume 3.5, compute 2.60"),
        );
        assert_eq!(asked(&h).as_deref(), Some("2.60"));
        let mut h = HeaderMap::new();
        h.insert(
            "x-openstack-nova-api-version",
            HeaderValue::from_static("2.12"),
        );
        assert_eq!(asked(&h).as_deref(), Some("2.12"));
    }
}
