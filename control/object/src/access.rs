//! Who may do what, as Swift's keystoneauth decides it: a member or admin
//! of the account's project owns the account; a reader of it may read;
//! anyone else is let in only by a container's ACLs (`X-Container-Read`,
//! `X-Container-Write`): `project:user` (ids or names, `*` for either),
//! a role name, or, for reads, a referrer grant (`.r:*`, `.r:.example.com`,
//! `.r:-bad.example.com`) and `.rlistings` for listing.

use std::collections::BTreeSet;

/// The caller of an object request, as its token names it.
#[derive(Debug, Clone)]
pub struct Who {
    pub user_id: String,
    pub user_name: String,
    pub project_id: Option<String>,
    pub project_name: String,
    /// Lower-case role names (implied roles included).
    pub roles: BTreeSet<String>,
}

/// The roles that own a project's account, and those that read it.
const OPERATOR_ROLES: &[&str] = &["admin", "member", "swiftoperator"];
const READER_ROLES: &[&str] = &["reader"];

/// What the caller is to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Owner,
    Reader,
    Other,
}

/// The role that owns every account (Swift's `reseller_admin_role`): it
/// alone sets account quotas.
pub const RESELLER_ROLE: &str = "reselleradmin";

pub fn is_reseller(w: &Who) -> bool {
    w.roles.contains(RESELLER_ROLE)
}

/// The caller's standing in the account of `project_id`.
pub fn standing(who: Option<&Who>, project_id: &str) -> Standing {
    let Some(w) = who else {
        return Standing::Other;
    };
    if is_reseller(w) {
        return Standing::Owner;
    }
    if w.project_id.as_deref() != Some(project_id) {
        return Standing::Other;
    }
    if OPERATOR_ROLES.iter().any(|r| w.roles.contains(*r)) {
        Standing::Owner
    } else if READER_ROLES.iter().any(|r| w.roles.contains(*r)) {
        Standing::Reader
    } else {
        Standing::Other
    }
}

/// The host of a `Referer` URL.
fn referrer_host(referrer: &str) -> Option<String> {
    let rest = referrer
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(referrer);
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
    let host = host.split(':').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Whether the referrer grants of `acl` admit `referrer` (Swift's
/// `referrer_allowed`: later grants override earlier ones).
fn referrer_allowed(acl: &[&str], referrer: Option<&str>) -> bool {
    let host = referrer.and_then(referrer_host);
    let mut allow = false;
    for e in acl {
        let Some(m) = e.strip_prefix(".r:") else {
            continue;
        };
        let (deny, m) = match m.strip_prefix('-') {
            Some(m) => (true, m),
            None => (false, m),
        };
        let hit = m == "*"
            || host.as_deref().is_some_and(|h| {
                h == m
                    || (m.starts_with('.') && h.ends_with(m))
                    || (m.starts_with('.') && h == &m[1..])
            });
        if hit {
            allow = !deny;
        }
    }
    allow
}

fn user_matches(entry: &str, w: &Who) -> bool {
    if let Some((p, u)) = entry.split_once(':') {
        let pid = w.project_id.as_deref().unwrap_or("");
        let proj = p == "*" || p == pid || (!w.project_name.is_empty() && p == w.project_name);
        let user = u == "*" || u == w.user_id || u == w.user_name;
        proj && user && !pid.is_empty()
    } else {
        // A role name grants everyone holding it in their token's project.
        w.roles.contains(&entry.to_ascii_lowercase())
    }
}

/// Whether a container's read ACL lets the caller read an object (or, with
/// `listing`, list the container).
pub fn read_allowed(
    acl: Option<&str>,
    who: Option<&Who>,
    referrer: Option<&str>,
    listing: bool,
) -> bool {
    let Some(acl) = acl else { return false };
    let entries: Vec<&str> = acl
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if referrer_allowed(&entries, referrer) && (!listing || entries.contains(&".rlistings")) {
        return true;
    }
    who.is_some_and(|w| {
        entries
            .iter()
            .any(|e| !e.starts_with('.') && user_matches(e, w))
    })
}

/// Whether a container's write ACL lets the caller change its objects.
pub fn write_allowed(acl: Option<&str>, who: Option<&Who>) -> bool {
    let (Some(acl), Some(w)) = (acl, who) else {
        return false;
    };
    acl.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with('.'))
        .any(|e| user_matches(e, w))
}

/// Normalises an ACL header as Swift's `clean_acl` does; the error is a
/// 400's body.
pub fn clean_acl(header: &str, value: &str) -> Result<String, String> {
    let write = header.eq_ignore_ascii_case("x-container-write");
    let mut out = Vec::new();
    for raw in value.split(',') {
        let e = raw.trim();
        if e.is_empty() {
            continue;
        }
        if !e.starts_with('.') {
            out.push(e.to_string());
            continue;
        }
        if e == ".rlistings" {
            out.push(e.to_string());
            continue;
        }
        let Some((d, v)) = e.split_once(':') else {
            return Err(format!(
                "Error: No value after referrer designation in {e:?}"
            ));
        };
        if ![".r", ".ref", ".referer", ".referrer"].contains(&d.trim()) {
            return Err(format!("Error: Unknown designator {:?} in {e:?}", d.trim()));
        }
        if write {
            return Err(format!("Referrers not allowed in write ACL: {e:?}"));
        }
        let v = v.trim();
        let (neg, host) = match v.strip_prefix('-') {
            Some(h) => ("-", h.trim()),
            None => ("", v),
        };
        if host.is_empty() || host == "-" {
            return Err(format!(
                "Error: No host/domain value after referrer designation in {e:?}"
            ));
        }
        let host = host
            .strip_prefix("*.")
            .map(|h| format!(".{h}"))
            .unwrap_or_else(|| host.to_string());
        out.push(format!(".r:{neg}{host}"));
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(project: &str, roles: &[&str]) -> Who {
        Who {
            user_id: "u1".into(),
            user_name: "alice".into(),
            project_id: Some(project.into()),
            project_name: "proj".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn standings() {
        assert_eq!(
            standing(Some(&who("p", &["member", "reader"])), "p"),
            Standing::Owner
        );
        assert_eq!(
            standing(Some(&who("p", &["reader"])), "p"),
            Standing::Reader
        );
        assert_eq!(standing(Some(&who("q", &["admin"])), "p"), Standing::Other);
        assert_eq!(standing(None, "p"), Standing::Other);
    }

    #[test]
    fn acls() {
        let w = who("q", &["member"]);
        assert!(read_allowed(Some("q:u1"), Some(&w), None, true));
        assert!(read_allowed(Some("proj:alice"), Some(&w), None, false));
        assert!(read_allowed(Some("*:alice"), Some(&w), None, false));
        assert!(!read_allowed(Some("other:*"), Some(&w), None, false));
        assert!(read_allowed(Some(".r:*"), None, None, false));
        assert!(!read_allowed(Some(".r:*"), None, None, true));
        assert!(read_allowed(Some(".r:*,.rlistings"), None, None, true));
        assert!(read_allowed(
            Some(".r:.example.com"),
            None,
            Some("http://www.example.com/x"),
            false
        ));
        assert!(!read_allowed(
            Some(".r:*,.r:-bad.com"),
            None,
            Some("https://bad.com/"),
            false
        ));
        assert!(!write_allowed(Some(".r:*"), None));
        assert!(write_allowed(Some("q:*"), Some(&w)));
        assert!(write_allowed(Some("member"), Some(&w)));
        assert_eq!(
            clean_acl("X-Container-Read", " .r:*, .rlistings,p:u").unwrap(),
            ".r:*,.rlistings,p:u"
        );
        assert_eq!(
            clean_acl("X-Container-Read", ".referrer:*.example.com").unwrap(),
            ".r:.example.com"
        );
        assert!(clean_acl("X-Container-Write", ".r:*").is_err());
        assert!(clean_acl("X-Container-Read", ".r:").is_err());
        assert!(clean_acl("X-Container-Read", ".bogus:x").is_err());
    }
}
