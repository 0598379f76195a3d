//! Access rules of application credentials (`/v3/users/{id}/access_rules`):
//! a user's rules are kept once each (documents of kind `access_rule`)
//! and shared by the credentials that name them; a credential holds a
//! copy of its own, which every token made from it carries to the
//! services (`Caller::access_rules`, checked by the auth extractor on
//! each request). A rule in use by a credential cannot be deleted.

use super::{collection_links, self_link};
use crate::model::Model;
use crate::new_id;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::Auth;
use ursa_core::policy::{enforce, AccessRule, Caller};
use ursa_core::store::Op;

/// Access rules' document kind.
pub const ACCESS_RULE: &str = "access_rule";

/// An access rule as a request names it (by id, or by what it allows).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RuleIn {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

impl RuleIn {
    /// Keystone's schema: an id, or a service, a method and a path.
    pub fn check(&self) -> Result<()> {
        if self.id.is_some() {
            return Ok(());
        }
        let bad = |m: &str| Err(Error::BadRequest(format!("Invalid access rule: {m}")));
        match (&self.service, &self.method, &self.path) {
            (Some(s), Some(m), Some(p)) => {
                if s.is_empty() || s.len() > 64 {
                    return bad("service must be a service type");
                }
                if !matches!(
                    m.as_str(),
                    "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE"
                ) {
                    return bad("method must be GET, HEAD, POST, PUT, PATCH or DELETE");
                }
                if !p.starts_with('/') || p.len() > 225 {
                    return bad("path must start with /");
                }
                Ok(())
            }
            _ => bad("give an id, or service, method and path"),
        }
    }
}

pub fn rule_json(r: &AccessRule) -> Value {
    json!({"id": r.id, "service": r.service, "method": r.method, "path": r.path})
}

fn of_user<'a>(m: &'a Model, user: &'a str) -> impl Iterator<Item = AccessRule> + 'a {
    m.docs_of(ACCESS_RULE)
        .filter(move |d| d["user_id"] == user)
        .filter_map(|d| {
            Some(AccessRule {
                id: d["id"].as_str()?.to_string(),
                service: d["service"].as_str()?.to_string(),
                method: d["method"].as_str()?.to_string(),
                path: d["path"].as_str()?.to_string(),
            })
        })
}

/// The rules a new credential of `user` gets: existing ones by id or by
/// what they allow, new ones stored (the ops to store them).
pub fn resolve(m: &Model, user: &str, wanted: &[RuleIn]) -> Result<(Vec<AccessRule>, Vec<Op>)> {
    let mine: Vec<AccessRule> = of_user(m, user).collect();
    let (mut out, mut ops) = (Vec::new(), Vec::new());
    for w in wanted {
        let rule = match &w.id {
            Some(id) => mine
                .iter()
                .find(|r| &r.id == id)
                .cloned()
                .ok_or_else(|| Error::not_found("access rule", id))?,
            None => {
                let (s, me, p) = (
                    w.service.clone().unwrap_or_default(),
                    w.method.clone().unwrap_or_default(),
                    w.path.clone().unwrap_or_default(),
                );
                match mine
                    .iter()
                    .chain(out.iter())
                    .find(|r| r.service == s && r.method == me && r.path == p)
                {
                    Some(r) => r.clone(),
                    None => {
                        let r = AccessRule {
                            id: new_id(),
                            service: s,
                            method: me,
                            path: p,
                        };
                        let mut doc = rule_json(&r);
                        doc["user_id"] = json!(user);
                        ops.push(Op::put(ACCESS_RULE, &r.id, user, &r.id, doc));
                        r
                    }
                }
            }
        };
        if !out.iter().any(|r: &AccessRule| r.id == rule.id) {
            out.push(rule);
        }
    }
    Ok((out, ops))
}

fn may_read(c: &Caller, m: &Model, user: &str) -> Result<()> {
    let u = m
        .users
        .get(user)
        .ok_or_else(|| Error::not_found("user", user))?;
    enforce(
        c.is_user(user) || c.may_read_domain(&u.domain_id),
        "list_access_rules",
    )
}

pub async fn list(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    may_read(&c, &m, &id)?;
    let mut rules: Vec<Value> = of_user(&m, &id).map(|r| rule_json(&r)).collect();
    rules.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Json(
        json!({"access_rules": rules, "links": collection_links(&state, &format!("users/{id}/access_rules"))}),
    ))
}

pub async fn show(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, rule)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    may_read(&c, &m, &id)?;
    let r = of_user(&m, &id)
        .find(|r| r.id == rule)
        .ok_or_else(|| Error::not_found("access rule", &rule))?;
    let mut v = rule_json(&r);
    v["links"] = self_link(&state, &format!("users/{id}/access_rules/{rule}"));
    Ok(Json(json!({ "access_rule": v })))
}

pub async fn delete(
    State(state): State<AppState>,
    Auth(c): Auth,
    Path((id, rule)): Path<(String, String)>,
) -> Result<StatusCode> {
    state
        .identity
        .change(|m| {
            let u = m
                .users
                .get(&id)
                .ok_or_else(|| Error::not_found("user", &id))?;
            enforce(
                c.is_user(&id) || c.may_manage_domain(&u.domain_id),
                "delete_access_rule",
            )?;
            if !of_user(m, &id).any(|r| r.id == rule) {
                return Err(Error::not_found("access rule", &rule));
            }
            if m.app_creds
                .values()
                .any(|a| a.access_rules.iter().any(|r| r.id == rule))
            {
                return Err(Error::Forbidden(format!(
                    "Cannot delete access rule {rule}: it is in use by an application credential."
                )));
            }
            Ok((vec![Op::delete(ACCESS_RULE, &rule)], ()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
