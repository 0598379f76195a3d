//! Policy: who may do what, with OpenStack's default roles.
//!
//! Bootstrap creates `admin`, `member` and `reader` with `admin ⇒ member ⇒
//! reader` implied, so a token's role list always holds the weaker roles of
//! the strongest it has. The rules follow Keystone's defaults:
//!
//! - a cloud admin (`admin` on a project or on the system) may do anything;
//! - a system reader may read anything;
//! - a domain-scoped `admin` manages users, groups, projects and grants inside
//!   that domain, a domain-scoped `reader` reads them;
//! - everyone may read and act on their own user (password, projects,
//!   groups, application and EC2 credentials) and read the project or domain
//!   their token is scoped to.
//!
//! A member therefore never reads or changes another project's or domain's
//! objects. Every refusal names the action, as Keystone does.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What a token is scoped to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    Unscoped,
    Project(String),
    Domain(String),
    System,
}

/// The authenticated caller, from a validated token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub user_domain_id: String,
    pub scope: Scope,
    /// The domain of the scoped project, if project-scoped.
    pub project_domain_id: Option<String>,
    /// Role names, implied roles included.
    pub roles: BTreeSet<String>,
    pub audit_ids: Vec<String>,
    pub app_cred_id: Option<String>,
    /// The access rules of the application credential the token came
    /// from, if it has any: then only requests one of them names pass.
    pub access_rules: Option<std::sync::Arc<Vec<AccessRule>>>,
}

/// One access rule of an application credential (Keystone's): a service
/// type, an HTTP method and a path relative to the service's endpoint,
/// where `*` stands for one path segment and `**` for any number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRule {
    pub id: String,
    pub service: String,
    pub method: String,
    pub path: String,
}

/// The service types each of Ursa's URL prefixes serves (as the catalog
/// names them), and how much of the path the endpoint takes.
const SERVICES: &[(&str, &[&str])] = &[
    ("compute", &["compute"]),
    ("volume", &["volumev3", "block-storage", "volume"]),
    ("image", &["image"]),
    ("network", &["network"]),
    ("object-store", &["object-store"]),
    ("placement", &["placement"]),
];

impl AccessRule {
    fn path_matches(&self, path: &str) -> bool {
        let want: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let got: Vec<&str> = path.trim_matches('/').split('/').collect();
        fn walk(w: &[&str], g: &[&str]) -> bool {
            match (w.first(), g.first()) {
                (None, None) => true,
                (Some(&"**"), _) => (0..=g.len()).any(|i| walk(&w[1..], &g[i..])),
                (Some(x), Some(y)) if *x == "*" || x == y => walk(&w[1..], &g[1..]),
                _ => false,
            }
        }
        walk(&want, &got)
    }
}

/// Whether access rules let `method` on `path` (the request's whole path,
/// e.g. `/compute/v2.1/servers/x/ips`) through. The identity API (`/v3…`)
/// is the `identity` service; the others are named by their prefix.
pub fn rules_permit(rules: &[AccessRule], method: &str, path: &str) -> bool {
    let trimmed = path.trim_start_matches('/');
    let (types, rest): (&[&str], &str) = match trimmed.split_once('/') {
        Some((first, rest)) => match SERVICES.iter().find(|(p, _)| *p == first) {
            Some((_, t)) => (t, rest),
            None => (&["identity"], trimmed),
        },
        None => match SERVICES.iter().find(|(p, _)| *p == trimmed) {
            Some((_, t)) => (t, ""),
            None => (&["identity"], trimmed),
        },
    };
    let rest = format!("/{rest}");
    rules.iter().any(|r| {
        types.contains(&r.service.as_str())
            && r.method.eq_ignore_ascii_case(method)
            && r.path_matches(&rest)
    })
}

impl Caller {
    pub fn has(&self, role: &str) -> bool {
        self.roles.contains(role)
    }

    pub fn is_admin(&self) -> bool {
        self.has("admin") && matches!(self.scope, Scope::Project(_) | Scope::System)
    }

    pub fn is_reader_everywhere(&self) -> bool {
        self.is_admin() || (matches!(self.scope, Scope::System) && self.has("reader"))
    }

    /// The domain a domain-scoped token is for.
    pub fn scoped_domain(&self) -> Option<&str> {
        match &self.scope {
            Scope::Domain(d) => Some(d),
            _ => None,
        }
    }

    /// Where a new object goes when the request names no domain: the
    /// scoped project's domain, else the caller's own.
    pub fn default_domain(&self) -> String {
        self.project_domain_id
            .clone()
            .unwrap_or_else(|| self.user_domain_id.clone())
    }

    /// Reading objects owned by `domain_id`.
    pub fn may_read_domain(&self, domain_id: &str) -> bool {
        self.is_reader_everywhere()
            || (self.scoped_domain() == Some(domain_id) && self.has("reader"))
    }

    /// Changing objects owned by `domain_id`.
    pub fn may_manage_domain(&self, domain_id: &str) -> bool {
        self.is_admin() || (self.scoped_domain() == Some(domain_id) && self.has("admin"))
    }

    pub fn is_user(&self, user_id: &str) -> bool {
        self.user_id == user_id
    }

    pub fn project_id(&self) -> Option<&str> {
        match &self.scope {
            Scope::Project(p) => Some(p),
            _ => None,
        }
    }
}

pub fn deny(action: &str) -> Error {
    Error::Forbidden(format!(
        "You are not authorized to perform the requested action: identity:{action}."
    ))
}

/// Fails unless `ok`, naming the action.
pub fn enforce(ok: bool, action: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(deny(action))
    }
}
