//! The identity model held in memory: every domain, project, user, group,
//! role, assignment and catalog entry. It is loaded from the store at start
//! and patched by the same [`Op`]s that are written to the store, so memory
//! and store cannot drift apart: there is one way for data to flow.
//!
//! Reads (token validation above all) never touch the database.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use ursa_core::store::{Doc, Op};

/// Scope key under which domains' names are unique (domains are projects
/// with `is_domain`, as in Keystone).
pub const DOMAIN_ROOT: &str = "<<domain-root>>";

pub mod kind {
    pub const PROJECT: &str = "project";
    pub const USER: &str = "user";
    pub const GROUP: &str = "group";
    pub const ROLE: &str = "role";
    pub const MEMBERSHIP: &str = "membership";
    pub const IMPLIED_ROLE: &str = "implied_role";
    pub const ASSIGNMENT: &str = "assignment";
    pub const APP_CRED: &str = "app_cred";
    pub const REVOCATION: &str = "revocation";
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Project {
    pub id: String,
    pub name: String,
    /// Owning domain; empty for a domain itself.
    #[serde(default)]
    pub domain_id: String,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub description: String,
    pub enabled: bool,
    #[serde(default)]
    pub is_domain: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub options: Map<String, Value>,
    /// Attributes Keystone keeps for unknown keys in the request.
    #[serde(default)]
    pub extra: Map<String, Value>,
}

impl Project {
    pub fn name_scope(&self) -> &str {
        if self.is_domain {
            DOMAIN_ROOT
        } else {
            &self.domain_id
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
    #[serde(default)]
    pub default_project_id: Option<String>,
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub options: Map<String, Value>,
    #[serde(default)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Role {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub domain_id: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub options: Map<String, Value>,
    #[serde(default)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(tag = "type", content = "id", rename_all = "lowercase")]
pub enum Actor {
    User(String),
    Group(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(tag = "type", content = "id", rename_all = "lowercase")]
pub enum Target {
    Project(String),
    Domain(String),
    System,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Assignment {
    pub actor: Actor,
    pub target: Target,
    pub role_id: String,
    /// OS-INHERIT: applies to the projects below the target, not the target.
    #[serde(default)]
    pub inherited: bool,
}

impl Assignment {
    pub fn doc_id(&self) -> String {
        let (at, a) = match &self.actor {
            Actor::User(u) => ("user", u.as_str()),
            Actor::Group(g) => ("group", g.as_str()),
        };
        let (tt, t) = match &self.target {
            Target::Project(p) => ("project", p.as_str()),
            Target::Domain(d) => ("domain", d.as_str()),
            Target::System => ("system", "all"),
        };
        format!("{at}:{a}:{tt}:{t}:{}:{}", self.role_id, self.inherited)
    }

    pub fn op_put(&self) -> Op {
        let id = self.doc_id();
        Op::put(kind::ASSIGNMENT, &id, "", &id, self)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Membership {
    pub group_id: String,
    pub user_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImpliedRole {
    pub prior_id: String,
    pub implied_id: String,
}

/// Relations are documents whose id joins their two ends; these are the
/// only places that spell it (and `Model::delete` the only one that parses it).
impl Membership {
    pub fn doc_id(group_id: &str, user_id: &str) -> String {
        format!("{group_id}:{user_id}")
    }

    pub fn op_put(group_id: &str, user_id: &str) -> Op {
        let id = Self::doc_id(group_id, user_id);
        let m = Membership {
            group_id: group_id.into(),
            user_id: user_id.into(),
        };
        Op::put(kind::MEMBERSHIP, &id, "", &id, &m)
    }

    pub fn op_delete(group_id: &str, user_id: &str) -> Op {
        Op::delete(kind::MEMBERSHIP, &Self::doc_id(group_id, user_id))
    }
}

impl ImpliedRole {
    pub fn doc_id(prior_id: &str, implied_id: &str) -> String {
        format!("{prior_id}:{implied_id}")
    }

    pub fn op_put(prior_id: &str, implied_id: &str) -> Op {
        let id = Self::doc_id(prior_id, implied_id);
        let r = ImpliedRole {
            prior_id: prior_id.into(),
            implied_id: implied_id.into(),
        };
        Op::put(kind::IMPLIED_ROLE, &id, "", &id, &r)
    }

    pub fn op_delete(prior_id: &str, implied_id: &str) -> Op {
        Op::delete(kind::IMPLIED_ROLE, &Self::doc_id(prior_id, implied_id))
    }
}

/// Objects about to be removed, for working out what must go with them.
#[derive(Debug, Default)]
pub struct Removal<'a> {
    pub users: Vec<&'a str>,
    pub groups: Vec<&'a str>,
    pub projects: Vec<&'a str>,
    pub domains: Vec<&'a str>,
    pub roles: Vec<&'a str>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppCred {
    pub id: String,
    pub name: String,
    pub user_id: String,
    pub project_id: String,
    #[serde(default)]
    pub description: Option<String>,
    /// SHA-256 of the secret, hex. Secrets are 64 random characters, so a
    /// fast hash is enough: there is nothing to guess.
    pub secret_hash: String,
    pub role_ids: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub unrestricted: bool,
    /// Requests its tokens may make (none: any).
    #[serde(default)]
    pub access_rules: Vec<ursa_core::policy::AccessRule>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RevokeBy {
    /// One token chain, by audit id.
    Audit,
    User,
    Project,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revocation {
    pub by: RevokeBy,
    pub value: String,
    /// Tokens issued at or before this instant (µs since the epoch) are revoked.
    pub issued_before: i64,
    /// After this instant (µs) every token it could match has expired.
    pub expires_at: i64,
}

/// The whole identity state.
#[derive(Debug, Default, Clone)]
pub struct Model {
    pub projects: HashMap<String, Project>,
    pub users: HashMap<String, User>,
    pub groups: HashMap<String, Group>,
    pub roles: HashMap<String, Role>,
    pub memberships: HashSet<(String, String)>,
    pub implied: BTreeSet<(String, String)>,
    pub assignments: BTreeSet<Assignment>,
    pub app_creds: HashMap<String, AppCred>,
    pub revocations: HashMap<String, Revocation>,
    /// Revoked audit ids, for the hot path.
    pub revoked_audit: HashSet<String>,
    /// Latest revocation instant per user and per project.
    pub revoked_user: HashMap<String, i64>,
    pub revoked_project: HashMap<String, i64>,
    /// Everything else (services, endpoints, regions, policies, credentials,
    /// …): schemaless documents by kind, then id.
    pub docs: HashMap<String, BTreeMap<String, Value>>,
    /// The service catalog as every token shows it, rendered once (by the
    /// API, on first use) and forgotten when a service or endpoint changes.
    pub catalog_cache: std::sync::OnceLock<std::sync::Arc<serde_json::value::RawValue>>,
}

fn parse<T: serde::de::DeserializeOwned>(d: &Doc) -> Option<T> {
    match serde_json::from_value(d.body.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(kind = %d.kind, id = %d.id, error = %e, "skipping unreadable document");
            None
        }
    }
}

impl Model {
    /// Applies one change, exactly as the store applied it.
    pub fn apply(&mut self, op: &Op) {
        let kind = match op {
            Op::Put(d) => d.kind.as_str(),
            Op::Delete { kind, .. } => kind.as_str(),
        };
        if kind == "service" || kind == "endpoint" {
            self.catalog_cache = std::sync::OnceLock::new();
        }
        match op {
            Op::Put(d) => self.put(d),
            Op::Delete { kind: k, id } => self.delete(k, id),
        }
    }

    fn put(&mut self, d: &Doc) {
        match d.kind.as_str() {
            kind::PROJECT => {
                if let Some(p) = parse(d) {
                    self.projects.insert(d.id.clone(), p);
                }
            }
            kind::USER => {
                if let Some(u) = parse(d) {
                    self.users.insert(d.id.clone(), u);
                }
            }
            kind::GROUP => {
                if let Some(g) = parse(d) {
                    self.groups.insert(d.id.clone(), g);
                }
            }
            kind::ROLE => {
                if let Some(r) = parse(d) {
                    self.roles.insert(d.id.clone(), r);
                }
            }
            kind::MEMBERSHIP => {
                if let Some(m) = parse::<Membership>(d) {
                    self.memberships.insert((m.group_id, m.user_id));
                }
            }
            kind::IMPLIED_ROLE => {
                if let Some(i) = parse::<ImpliedRole>(d) {
                    self.implied.insert((i.prior_id, i.implied_id));
                }
            }
            kind::ASSIGNMENT => {
                if let Some(a) = parse(d) {
                    self.assignments.insert(a);
                }
            }
            kind::APP_CRED => {
                if let Some(a) = parse(d) {
                    self.app_creds.insert(d.id.clone(), a);
                }
            }
            kind::REVOCATION => {
                if let Some(r) = parse::<Revocation>(d) {
                    match r.by {
                        RevokeBy::Audit => {
                            self.revoked_audit.insert(r.value.clone());
                        }
                        RevokeBy::User => {
                            let e = self.revoked_user.entry(r.value.clone()).or_default();
                            *e = (*e).max(r.issued_before);
                        }
                        RevokeBy::Project => {
                            let e = self.revoked_project.entry(r.value.clone()).or_default();
                            *e = (*e).max(r.issued_before);
                        }
                    }
                    self.revocations.insert(d.id.clone(), r);
                }
            }
            other => {
                self.docs
                    .entry(other.to_string())
                    .or_default()
                    .insert(d.id.clone(), d.body.clone());
            }
        }
    }

    fn delete(&mut self, k: &str, id: &str) {
        match k {
            kind::PROJECT => {
                self.projects.remove(id);
            }
            kind::USER => {
                self.users.remove(id);
            }
            kind::GROUP => {
                self.groups.remove(id);
            }
            kind::ROLE => {
                self.roles.remove(id);
            }
            kind::MEMBERSHIP => {
                if let Some((g, u)) = id.split_once(':') {
                    self.memberships.remove(&(g.to_string(), u.to_string()));
                }
            }
            kind::IMPLIED_ROLE => {
                if let Some((p, i)) = id.split_once(':') {
                    self.implied.remove(&(p.to_string(), i.to_string()));
                }
            }
            kind::ASSIGNMENT => self.assignments.retain(|a| a.doc_id() != id),
            kind::APP_CRED => {
                self.app_creds.remove(id);
            }
            kind::REVOCATION => {
                // Expired revocations are pruned; the in-memory indexes may
                // keep them, which only costs memory until restart.
                self.revocations.remove(id);
            }
            other => {
                if let Some(m) = self.docs.get_mut(other) {
                    m.remove(id);
                }
            }
        }
    }

    pub fn doc(&self, kind: &str, id: &str) -> Option<&Value> {
        self.docs.get(kind).and_then(|m| m.get(id))
    }

    pub fn docs_of(&self, kind: &str) -> impl Iterator<Item = &Value> {
        self.docs.get(kind).into_iter().flat_map(|m| m.values())
    }

    /// The documents of `kind` whose ids start with `prefix`: a range of
    /// the ordered ids, so documents keyed `<owner>:<…>` are found by
    /// owner without a scan of the kind.
    pub fn docs_prefixed(&self, kind: &str, prefix: &str) -> impl Iterator<Item = &Value> {
        let prefix = prefix.to_string();
        self.docs.get(kind).into_iter().flat_map(move |m| {
            let p = prefix.clone();
            m.range(prefix.clone()..)
                .take_while(move |(k, _)| k.starts_with(&p))
                .map(|(_, v)| v)
        })
    }

    pub fn domain(&self, id: &str) -> Option<&Project> {
        self.projects.get(id).filter(|p| p.is_domain)
    }

    pub fn project(&self, id: &str) -> Option<&Project> {
        self.projects.get(id).filter(|p| !p.is_domain)
    }

    pub fn domain_by_name(&self, name: &str) -> Option<&Project> {
        self.projects
            .values()
            .find(|p| p.is_domain && p.name == name)
    }

    pub fn project_by_name(&self, domain_id: &str, name: &str) -> Option<&Project> {
        self.projects
            .values()
            .find(|p| !p.is_domain && p.domain_id == domain_id && p.name == name)
    }

    pub fn user_by_name(&self, domain_id: &str, name: &str) -> Option<&User> {
        self.users
            .values()
            .find(|u| u.domain_id == domain_id && u.name == name)
    }

    pub fn user_groups<'a>(&'a self, user_id: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.memberships
            .iter()
            .filter(move |(_, u)| u == user_id)
            .map(|(g, _)| g.as_str())
    }

    /// Ancestors of a project, nearest first (projects only, not the domain).
    pub fn ancestors(&self, project_id: &str) -> Vec<&Project> {
        let mut out = Vec::new();
        let mut cur = self
            .projects
            .get(project_id)
            .and_then(|p| p.parent_id.clone());
        while let Some(id) = cur {
            match self.projects.get(&id) {
                Some(p) if !p.is_domain && !out.iter().any(|q: &&Project| q.id == p.id) => {
                    out.push(p);
                    cur = p.parent_id.clone();
                }
                _ => break,
            }
        }
        out
    }

    /// Projects below a project or a domain, at any depth.
    pub fn subtree(&self, root_id: &str) -> Vec<&Project> {
        let mut out: Vec<&Project> = Vec::new();
        let mut frontier = vec![root_id.to_string()];
        while let Some(id) = frontier.pop() {
            for p in self.projects.values() {
                if !p.is_domain
                    && p.parent_id.as_deref() == Some(id.as_str())
                    && !out.iter().any(|q| q.id == p.id)
                {
                    frontier.push(p.id.clone());
                    out.push(p);
                }
            }
        }
        out
    }

    /// Closure of a set of role ids under the implied-role rules.
    pub fn expand_implied(&self, roles: &mut BTreeSet<String>) {
        let mut frontier: Vec<String> = roles.iter().cloned().collect();
        while let Some(r) = frontier.pop() {
            for (p, i) in self.implied.range((r.clone(), String::new())..) {
                if *p != r {
                    break;
                }
                if roles.insert(i.clone()) {
                    frontier.push(i.clone());
                }
            }
        }
    }

    /// Assignments that give `user_id` roles on `target`, directly, through
    /// a group, or inherited from a domain or parent project.
    pub fn assignments_for(&self, user_id: &str, target: &Target) -> Vec<&Assignment> {
        let groups: HashSet<&str> = self.user_groups(user_id).collect();
        let actor_ok = |a: &Assignment| match &a.actor {
            Actor::User(u) => u == user_id,
            Actor::Group(g) => groups.contains(g.as_str()),
        };
        let mut inherited_from: Vec<Target> = Vec::new();
        if let Target::Project(pid) = target {
            if let Some(p) = self.projects.get(pid) {
                inherited_from.push(Target::Domain(p.domain_id.clone()));
            }
            for a in self.ancestors(pid) {
                inherited_from.push(Target::Project(a.id.clone()));
            }
        }
        self.assignments
            .iter()
            .filter(|a| actor_ok(a))
            .filter(|a| {
                (!a.inherited && &a.target == target)
                    || (a.inherited && inherited_from.contains(&a.target))
            })
            .collect()
    }

    /// Effective role ids of a user on a target, implied roles included and
    /// domain-specific roles left out (they only imply), as in a token.
    pub fn effective_roles(&self, user_id: &str, target: &Target) -> BTreeSet<String> {
        let mut roles: BTreeSet<String> = self
            .assignments_for(user_id, target)
            .into_iter()
            .map(|a| a.role_id.clone())
            .collect();
        self.expand_implied(&mut roles);
        roles.retain(|r| {
            self.roles
                .get(r)
                .map(|r| r.domain_id.is_none())
                .unwrap_or(false)
        });
        roles
    }

    /// Deletes for everything that refers to removed objects: role
    /// assignments, group memberships, implied-role rules, application
    /// credentials and credentials. Every delete handler goes through here,
    /// so no reference is left dangling whatever is removed.
    pub fn dependents(&self, r: &Removal) -> Vec<Op> {
        let has = |v: &[&str], x: &str| v.contains(&x);
        let mut ops: Vec<Op> = self
            .assignments
            .iter()
            .filter(|a| {
                has(&r.roles, &a.role_id)
                    || match &a.actor {
                        Actor::User(u) => has(&r.users, u),
                        Actor::Group(g) => has(&r.groups, g),
                    }
                    || match &a.target {
                        Target::Project(p) => has(&r.projects, p),
                        Target::Domain(d) => has(&r.domains, d),
                        Target::System => false,
                    }
            })
            .map(|a| Op::delete(kind::ASSIGNMENT, &a.doc_id()))
            .collect();
        ops.extend(
            self.memberships
                .iter()
                .filter(|(g, u)| has(&r.groups, g) || has(&r.users, u))
                .map(|(g, u)| Membership::op_delete(g, u)),
        );
        ops.extend(
            self.implied
                .iter()
                .filter(|(p, i)| has(&r.roles, p) || has(&r.roles, i))
                .map(|(p, i)| ImpliedRole::op_delete(p, i)),
        );
        ops.extend(
            self.app_creds
                .values()
                .filter(|a| {
                    has(&r.users, &a.user_id)
                        || has(&r.projects, &a.project_id)
                        || a.role_ids.iter().any(|x| has(&r.roles, x))
                })
                .map(|a| Op::delete(kind::APP_CRED, &a.id)),
        );
        ops.extend(
            self.docs_of("access_rule")
                .filter(|c| c["user_id"].as_str().is_some_and(|u| has(&r.users, u)))
                .filter_map(|c| c["id"].as_str())
                .map(|id| Op::delete("access_rule", id)),
        );
        ops.extend(
            self.docs_of("credential")
                .filter(|c| c["user_id"].as_str().is_some_and(|u| has(&r.users, u)))
                .filter_map(|c| c["id"].as_str())
                .map(|id| Op::delete("credential", id)),
        );
        ops
    }

    /// Whether a token issued at `issued_at` for this user/project/audit
    /// chain has been revoked.
    pub fn is_revoked(
        &self,
        user_id: &str,
        project_id: Option<&str>,
        audit_ids: &[String],
        issued_at: i64,
    ) -> bool {
        if audit_ids.iter().any(|a| self.revoked_audit.contains(a)) {
            return true;
        }
        if self
            .revoked_user
            .get(user_id)
            .is_some_and(|t| issued_at <= *t)
        {
            return true;
        }
        if let Some(p) = project_id {
            if self.revoked_project.get(p).is_some_and(|t| issued_at <= *t) {
                return true;
            }
        }
        false
    }
}
