//! Role grants on projects, domains and the system, for users and groups,
//! inherited grants (OS-INHERIT), and `/v3/role_assignments` with its
//! filters and `effective` expansion.

use super::{collection_links, query_bool, Query};
use crate::model::{kind, Actor, Assignment, Model, Target};
use crate::token::Scope;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use ursa_core::error::{Error, Result};
use ursa_core::http::Auth;
use ursa_core::policy::{enforce, Caller};
use ursa_core::store::Op;

#[derive(Clone, Copy)]
enum T {
    Project,
    Domain,
}

#[derive(Clone, Copy)]
enum A {
    User,
    Group,
}

fn target(t: T, id: String) -> Target {
    match t {
        T::Project => Target::Project(id),
        T::Domain => Target::Domain(id),
    }
}

fn actor(a: A, id: String) -> Actor {
    match a {
        A::User => Actor::User(id),
        A::Group => Actor::Group(id),
    }
}

macro_rules! grant_routes {
    ($r:expr, $prefix:literal, $t:expr, $a:expr) => {
        $r.route(
            concat!("/v3", $prefix, "/roles"),
            get(|s: State<AppState>, au: Auth, Path((t, a)): Path<(String, String)>| async move {
                list_grants(s, au, target($t, t), actor($a, a), false).await
            }),
        )
        .route(
            concat!("/v3", $prefix, "/roles/{role}"),
            put(|s: State<AppState>, au: Auth, Path((t, a, r)): Path<(String, String, String)>| async move {
                grant(s, au, Assignment { actor: actor($a, a), target: target($t, t), role_id: r, inherited: false }, true).await
            })
            .get(|s: State<AppState>, au: Auth, Path((t, a, r)): Path<(String, String, String)>| async move {
                check(s, au, Assignment { actor: actor($a, a), target: target($t, t), role_id: r, inherited: false }).await
            })
            .delete(|s: State<AppState>, au: Auth, Path((t, a, r)): Path<(String, String, String)>| async move {
                grant(s, au, Assignment { actor: actor($a, a), target: target($t, t), role_id: r, inherited: false }, false).await
            }),
        )
        .route(
            concat!("/v3/OS-INHERIT", $prefix, "/roles/inherited_to_projects"),
            get(|s: State<AppState>, au: Auth, Path((t, a)): Path<(String, String)>| async move {
                list_grants(s, au, target($t, t), actor($a, a), true).await
            }),
        )
        .route(
            concat!("/v3/OS-INHERIT", $prefix, "/roles/{role}/inherited_to_projects"),
            put(|s: State<AppState>, au: Auth, Path((t, a, r)): Path<(String, String, String)>| async move {
                grant(s, au, Assignment { actor: actor($a, a), target: target($t, t), role_id: r, inherited: true }, true).await
            })
            .get(|s: State<AppState>, au: Auth, Path((t, a, r)): Path<(String, String, String)>| async move {
                check(s, au, Assignment { actor: actor($a, a), target: target($t, t), role_id: r, inherited: true }).await
            })
            .delete(|s: State<AppState>, au: Auth, Path((t, a, r)): Path<(String, String, String)>| async move {
                grant(s, au, Assignment { actor: actor($a, a), target: target($t, t), role_id: r, inherited: true }, false).await
            }),
        )
    };
}

macro_rules! system_routes {
    ($r:expr, $prefix:literal, $a:expr) => {
        $r.route(
            concat!("/v3", $prefix, "/roles"),
            get(
                |s: State<AppState>, au: Auth, Path(a): Path<String>| async move {
                    list_grants(s, au, Target::System, actor($a, a), false).await
                },
            ),
        )
        .route(
            concat!("/v3", $prefix, "/roles/{role}"),
            put(
                |s: State<AppState>, au: Auth, Path((a, r)): Path<(String, String)>| async move {
                    grant(
                        s,
                        au,
                        Assignment {
                            actor: actor($a, a),
                            target: Target::System,
                            role_id: r,
                            inherited: false,
                        },
                        true,
                    )
                    .await
                },
            )
            .get(
                |s: State<AppState>, au: Auth, Path((a, r)): Path<(String, String)>| async move {
                    check(
                        s,
                        au,
                        Assignment {
                            actor: actor($a, a),
                            target: Target::System,
                            role_id: r,
                            inherited: false,
                        },
                    )
                    .await
                },
            )
            .delete(
                |s: State<AppState>, au: Auth, Path((a, r)): Path<(String, String)>| async move {
                    grant(
                        s,
                        au,
                        Assignment {
                            actor: actor($a, a),
                            target: Target::System,
                            role_id: r,
                            inherited: false,
                        },
                        false,
                    )
                    .await
                },
            ),
        )
    };
}

pub fn routes() -> Router<AppState> {
    let r = Router::new();
    let r = grant_routes!(r, "/projects/{target}/users/{actor}", T::Project, A::User);
    let r = grant_routes!(r, "/projects/{target}/groups/{actor}", T::Project, A::Group);
    let r = grant_routes!(r, "/domains/{target}/users/{actor}", T::Domain, A::User);
    let r = grant_routes!(r, "/domains/{target}/groups/{actor}", T::Domain, A::Group);
    let r = system_routes!(r, "/system/users/{actor}", A::User);
    let r = system_routes!(r, "/system/groups/{actor}", A::Group);
    r.route("/v3/role_assignments", get(list_assignments))
}

/// The domain that owns a target, for domain-scoped policy.
fn target_domain(m: &Model, t: &Target) -> Option<String> {
    match t {
        Target::Project(p) => m.projects.get(p).map(|p| p.domain_id.clone()),
        Target::Domain(d) => Some(d.clone()),
        Target::System => None,
    }
}

fn check_exists(m: &Model, a: &Assignment) -> Result<()> {
    match &a.target {
        Target::Project(p) => {
            m.project(p).ok_or_else(|| Error::not_found("project", p))?;
        }
        Target::Domain(d) => {
            m.domain(d).ok_or_else(|| Error::not_found("domain", d))?;
        }
        Target::System => {}
    }
    match &a.actor {
        Actor::User(u) => {
            m.users.get(u).ok_or_else(|| Error::not_found("user", u))?;
        }
        Actor::Group(g) => {
            m.groups
                .get(g)
                .ok_or_else(|| Error::not_found("group", g))?;
        }
    }
    let role = m
        .roles
        .get(&a.role_id)
        .ok_or_else(|| Error::not_found("role", &a.role_id))?;
    if let Some(rd) = &role.domain_id {
        if target_domain(m, &a.target).as_deref() != Some(rd.as_str()) {
            return Err(Error::Forbidden(format!(
                "Role {} is specific to domain {rd} and cannot be granted outside it.",
                role.id
            )));
        }
    }
    Ok(())
}

fn may_manage(c: &Caller, m: &Model, t: &Target) -> bool {
    c.is_admin() || target_domain(m, t).is_some_and(|d| c.may_manage_domain(&d))
}

fn may_read(c: &Caller, m: &Model, t: &Target) -> bool {
    c.is_reader_everywhere() || target_domain(m, t).is_some_and(|d| c.may_read_domain(&d))
}

async fn grant(
    State(state): State<AppState>,
    Auth(c): Auth,
    a: Assignment,
    add: bool,
) -> Result<StatusCode> {
    state
        .identity
        .change(|m| {
            check_exists(m, &a)?;
            enforce(
                may_manage(&c, m, &a.target),
                if add { "create_grant" } else { "revoke_grant" },
            )?;
            if add {
                Ok((vec![a.op_put()], ()))
            } else if m.assignments.contains(&a) {
                Ok((vec![Op::delete(kind::ASSIGNMENT, &a.doc_id())], ()))
            } else {
                Err(Error::NotFound(format!(
                    "Could not find role assignment with role: {}.",
                    a.role_id
                )))
            }
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn check(State(state): State<AppState>, Auth(c): Auth, a: Assignment) -> Result<StatusCode> {
    let m = state.identity.model();
    check_exists(&m, &a)?;
    enforce(may_read(&c, &m, &a.target), "check_grant")?;
    if m.assignments.contains(&a) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound(format!(
            "Could not find role assignment with role: {}.",
            a.role_id
        )))
    }
}

async fn list_grants(
    State(state): State<AppState>,
    Auth(c): Auth,
    t: Target,
    who: Actor,
    inherited: bool,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    check_exists(
        &m,
        &Assignment {
            actor: who.clone(),
            target: t.clone(),
            role_id: m.roles.keys().next().cloned().unwrap_or_default(),
            inherited,
        },
    )
    .or_else(|e| {
        if matches!(e, Error::Forbidden(_)) {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    enforce(may_read(&c, &m, &t), "list_grants")?;
    let roles: Vec<Value> = m
        .assignments
        .iter()
        .filter(|a| a.actor == who && a.target == t && a.inherited == inherited)
        .filter_map(|a| m.roles.get(&a.role_id))
        .map(|r| super::roles::role_json(&state, r))
        .collect();
    Ok(Json(
        json!({"roles": roles, "links": collection_links(&state, "roles")}),
    ))
}

/// One row of `/v3/role_assignments`, after expansion.
#[derive(Debug, Clone)]
struct Row {
    user: Option<String>,
    group: Option<String>,
    target: Target,
    role: String,
    inherited: bool,
    /// The assignment this row comes from (for links).
    source: Assignment,
    via_group: Option<String>,
    prior_role: Option<String>,
}

fn assignment_link(state: &AppState, a: &Assignment) -> String {
    let (at, aid) = match &a.actor {
        Actor::User(u) => ("users", u),
        Actor::Group(g) => ("groups", g),
    };
    let t = match &a.target {
        Target::Project(p) => format!("projects/{p}/"),
        Target::Domain(d) => format!("domains/{d}/"),
        Target::System => "system/".to_string(),
    };
    if a.inherited {
        format!(
            "{}/OS-INHERIT/{t}{at}/{aid}/roles/{}/inherited_to_projects",
            state.v3(),
            a.role_id
        )
    } else {
        format!("{}/{t}{at}/{aid}/roles/{}", state.v3(), a.role_id)
    }
}

fn expand(m: &Model, effective: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    for a in &m.assignments {
        if !effective {
            let (user, group) = match &a.actor {
                Actor::User(u) => (Some(u.clone()), None),
                Actor::Group(g) => (None, Some(g.clone())),
            };
            rows.push(Row {
                user,
                group,
                target: a.target.clone(),
                role: a.role_id.clone(),
                inherited: a.inherited,
                source: a.clone(),
                via_group: None,
                prior_role: None,
            });
            continue;
        }
        let users: Vec<(String, Option<String>)> = match &a.actor {
            Actor::User(u) => vec![(u.clone(), None)],
            Actor::Group(g) => m
                .memberships
                .iter()
                .filter(|(mg, _)| mg == g)
                .map(|(_, u)| (u.clone(), Some(g.clone())))
                .collect(),
        };
        let targets: Vec<Target> = if a.inherited {
            match &a.target {
                Target::Domain(d) => m
                    .projects
                    .values()
                    .filter(|p| !p.is_domain && p.domain_id == *d)
                    .map(|p| Target::Project(p.id.clone()))
                    .collect(),
                Target::Project(p) => m
                    .subtree(p)
                    .into_iter()
                    .map(|p| Target::Project(p.id.clone()))
                    .collect(),
                Target::System => vec![],
            }
        } else {
            vec![a.target.clone()]
        };
        for (u, g) in &users {
            for t in &targets {
                let base = Row {
                    user: Some(u.clone()),
                    group: None,
                    target: t.clone(),
                    role: a.role_id.clone(),
                    inherited: false,
                    source: a.clone(),
                    via_group: g.clone(),
                    prior_role: None,
                };
                let mut implied = std::collections::BTreeSet::from([a.role_id.clone()]);
                m.expand_implied(&mut implied);
                for r in implied {
                    // Domain-specific roles never reach a token; only what they imply does.
                    if m.roles.get(&r).is_none_or(|x| x.domain_id.is_some()) {
                        continue;
                    }
                    if r == a.role_id {
                        rows.push(base.clone());
                    } else {
                        rows.push(Row {
                            role: r,
                            prior_role: Some(a.role_id.clone()),
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    rows
}

fn named(m: &Model, kind: &str, id: &str) -> Value {
    let (name, domain) = match kind {
        "user" => m
            .users
            .get(id)
            .map(|u| (u.name.clone(), Some(u.domain_id.clone()))),
        "group" => m
            .groups
            .get(id)
            .map(|g| (g.name.clone(), Some(g.domain_id.clone()))),
        "project" => m
            .projects
            .get(id)
            .map(|p| (p.name.clone(), Some(p.domain_id.clone()))),
        "domain" => m.projects.get(id).map(|d| (d.name.clone(), None)),
        "role" => m
            .roles
            .get(id)
            .map(|r| (r.name.clone(), r.domain_id.clone())),
        _ => None,
    }
    .unwrap_or_default();
    let mut v = json!({"id": id, "name": name});
    if let Some(d) = domain {
        let dn = m
            .projects
            .get(&d)
            .map(|x| x.name.clone())
            .unwrap_or_default();
        v["domain"] = json!({"id": d, "name": dn});
    }
    v
}

async fn list_assignments(
    State(state): State<AppState>,
    Auth(c): Auth,
    q: Query,
) -> Result<Json<Value>> {
    let m = state.identity.model();
    let effective = q.contains_key("effective")
        && q.get("effective")
            .is_none_or(|v| v.is_empty() || query_bool(v));
    let names = q
        .get("include_names")
        .is_some_and(|v| v.is_empty() || query_bool(v));
    let subtree = q
        .get("include_subtree")
        .is_some_and(|v| v.is_empty() || query_bool(v));
    let own_only = q.get("user.id") == Some(&c.user_id);
    let scoped_domain = match &c.scope {
        Scope::Domain(d) if c.has("reader") => Some(d.clone()),
        _ => None,
    };
    enforce(
        c.is_reader_everywhere() || scoped_domain.is_some() || own_only,
        "list_role_assignments",
    )?;
    if effective && q.contains_key("group.id") {
        return Err(Error::BadRequest(
            "group.id cannot be combined with effective.".into(),
        ));
    }
    let project_filter: Option<Vec<String>> = q.get("scope.project.id").map(|p| {
        let mut v = vec![p.clone()];
        if subtree {
            v.extend(m.subtree(p).into_iter().map(|x| x.id.clone()));
        }
        v
    });
    let inherited_only = q.get("scope.OS-INHERIT:inherited_to").is_some();
    let rows: Vec<Row> = expand(&m, effective)
        .into_iter()
        .filter(|r| q.get("user.id").is_none_or(|u| r.user.as_ref() == Some(u)))
        .filter(|r| {
            q.get("group.id")
                .is_none_or(|g| r.group.as_ref() == Some(g))
        })
        .filter(|r| q.get("role.id").is_none_or(|x| *x == r.role))
        .filter(|r| match &project_filter {
            None => true,
            Some(ps) => matches!(&r.target, Target::Project(p) if ps.contains(p)),
        })
        .filter(|r| {
            q.get("scope.domain.id")
                .is_none_or(|d| r.target == Target::Domain(d.clone()))
        })
        .filter(|r| !q.contains_key("scope.system") || r.target == Target::System)
        .filter(|r| !inherited_only || r.inherited)
        .filter(|r| {
            c.is_reader_everywhere()
                || (own_only && r.user.as_deref() == Some(c.user_id.as_str()))
                || scoped_domain
                    .as_ref()
                    .is_some_and(|d| target_domain(&m, &r.target).as_ref() == Some(d))
        })
        .collect();
    let out: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = json!({});
            v["role"] = if names { named(&m, "role", &r.role) } else { json!({"id": r.role}) };
            if let Some(u) = &r.user {
                v["user"] = if names { named(&m, "user", u) } else { json!({"id": u}) };
            }
            if let Some(g) = &r.group {
                v["group"] = if names { named(&m, "group", g) } else { json!({"id": g}) };
            }
            let mut scope = match &r.target {
                Target::Project(p) => json!({"project": if names { named(&m, "project", p) } else { json!({"id": p}) }}),
                Target::Domain(d) => json!({"domain": if names { named(&m, "domain", d) } else { json!({"id": d}) }}),
                Target::System => json!({"system": {"all": true}}),
            };
            if r.inherited {
                scope["OS-INHERIT:inherited_to"] = json!("projects");
            }
            v["scope"] = scope;
            let mut links = json!({"assignment": assignment_link(&state, &r.source)});
            if let (Some(g), Some(u)) = (&r.via_group, &r.user) {
                links["membership"] = json!(format!("{}/groups/{g}/users/{u}", state.v3()));
            }
            if let Some(p) = &r.prior_role {
                v["prior_role"] = json!({"id": p});
                links["prior_role"] = json!(format!("{}/roles/{p}/implies/{}", state.v3(), r.role));
            }
            v["links"] = links;
            v
        })
        .collect();
    Ok(Json(
        json!({"role_assignments": out, "links": collection_links(&state, "role_assignments")}),
    ))
}
