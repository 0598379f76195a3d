//! What a new cloud needs before anyone can log in, as `keystone-manage
//! bootstrap` makes it: the `Default` domain (id `default`), the `admin`
//! project, the roles `admin ⇒ member ⇒ reader`, the admin user with the admin
//! role on the admin project and on the system, region `RegionOne`, and the
//! identity service in the catalog (and the other services `ursa up`
//! serves).
//!
//! It runs at every start and only adds what is missing, so a second start
//! keeps everything; the identity endpoints follow the current public URL and
//! the admin password follows `--admin-password` when one is given.

use super::model::{kind, Actor, Assignment, ImpliedRole, Project, Role, Target, User};
use super::{new_id, Identity};
use serde_json::{json, Map};
use ursa_core::error::Result;
use ursa_core::store::Op;

pub const DEFAULT_DOMAIN: &str = "default";
pub const REGION: &str = "RegionOne";

pub struct Bootstrap<'a> {
    pub admin_user: &'a str,
    pub admin_project: &'a str,
    /// Sets (or resets) the admin's password.
    pub admin_password: &'a str,
    /// The identity endpoint URL, ending in `/v3`.
    pub identity_url: &'a str,
    /// Where the other services are mounted (`{base}/image`, …).
    pub base_url: &'a str,
    /// The services served besides identity: catalog type, name, path
    /// under the base URL. Services of [`OPTIONAL`] not listed leave the
    /// catalog.
    pub services: &'a [(&'a str, &'a str, &'a str)],
}

/// Services that come and go with their node daemons.
pub const OPTIONAL: &[&str] = &["volumev3", "block-storage"];

impl Bootstrap<'_> {
    pub async fn run(&self, id: &Identity) -> Result<()> {
        let needs_hash = {
            let m = id.model();
            m.user_by_name(DEFAULT_DOMAIN, self.admin_user)
                .and_then(|u| u.password_hash.clone())
        };
        let hash = match needs_hash {
            Some(h) if id.hasher().verify(self.admin_password, Some(&h)).await => None,
            _ => Some(id.hasher().hash(self.admin_password).await),
        };
        id.change(|m| {
            let mut ops = Vec::new();
            if m.domain(DEFAULT_DOMAIN).is_none() {
                let d = Project {
                    id: DEFAULT_DOMAIN.into(),
                    name: "Default".into(),
                    domain_id: String::new(),
                    parent_id: None,
                    description: "The default domain".into(),
                    enabled: true,
                    is_domain: true,
                    tags: vec![],
                    options: Map::new(),
                    extra: Map::new(),
                };
                ops.push(Op::put(kind::PROJECT, &d.id, d.name_scope(), &d.name, &d));
            }
            let project_id = match m.project_by_name(DEFAULT_DOMAIN, self.admin_project) {
                Some(p) => p.id.clone(),
                None => {
                    let p = Project {
                        id: new_id(),
                        name: self.admin_project.into(),
                        domain_id: DEFAULT_DOMAIN.into(),
                        parent_id: Some(DEFAULT_DOMAIN.into()),
                        description: "Bootstrap project for initializing the cloud.".into(),
                        enabled: true,
                        is_domain: false,
                        tags: vec![],
                        options: Map::new(),
                        extra: Map::new(),
                    };
                    ops.push(Op::put(kind::PROJECT, &p.id, &p.domain_id, &p.name, &p));
                    p.id
                }
            };
            let role_id = |name: &str, ops: &mut Vec<Op>| -> String {
                match m.roles.values().find(|r| r.name == name && r.domain_id.is_none()) {
                    Some(r) => r.id.clone(),
                    None => {
                        let r = Role {
                            id: new_id(),
                            name: name.into(),
                            domain_id: None,
                            description: None,
                            options: Map::new(),
                            extra: Map::new(),
                        };
                        ops.push(Op::put(kind::ROLE, &r.id, "", &r.name, &r));
                        r.id
                    }
                }
            };
            let admin = role_id("admin", &mut ops);
            let member = role_id("member", &mut ops);
            let reader = role_id("reader", &mut ops);
            // As keystone-manage bootstrap makes them: a project manager
            // (a member, and more), and the role services' users hold.
            let manager = role_id("manager", &mut ops);
            role_id("service", &mut ops);
            // As devstack makes it with Swift: the role that owns every
            // object storage account (and alone sets account quotas).
            if self.services.iter().any(|(t, _, _)| *t == "object-store") {
                role_id("ResellerAdmin", &mut ops);
            }
            for (p, i) in [(&admin, &member), (&member, &reader), (&manager, &member)] {
                if !m.implied.contains(&(p.clone(), i.clone())) {
                    ops.push(ImpliedRole::op_put(p, i));
                }
            }
            let user = match m.user_by_name(DEFAULT_DOMAIN, self.admin_user) {
                Some(u) => {
                    let mut u = u.clone();
                    if let Some(h) = &hash {
                        u.password_hash = Some(h.clone());
                        u.enabled = true;
                        ops.push(Op::put(kind::USER, &u.id, &u.domain_id, &u.name, &u));
                    }
                    u
                }
                None => {
                    let u = User {
                        id: new_id(),
                        name: self.admin_user.into(),
                        domain_id: DEFAULT_DOMAIN.into(),
                        enabled: true,
                        default_project_id: None,
                        password_hash: hash.clone(),
                        options: Map::new(),
                        extra: Map::new(),
                    };
                    ops.push(Op::put(kind::USER, &u.id, &u.domain_id, &u.name, &u));
                    u
                }
            };
            for target in [Target::Project(project_id.clone()), Target::System] {
                let a = Assignment {
                    actor: Actor::User(user.id.clone()),
                    target,
                    role_id: admin.clone(),
                    inherited: false,
                };
                if !m.assignments.contains(&a) {
                    ops.push(a.op_put());
                }
            }
            if m.doc("region", REGION).is_none() {
                ops.push(Op::put(
                    "region",
                    REGION,
                    "",
                    REGION,
                    json!({"id": REGION, "description": "", "parent_region_id": null}),
                ));
            }
            let mut services = vec![(
                "identity",
                "keystone",
                self.identity_url.to_string(),
            )];
            for (ty, name, path) in self.services {
                services.push((ty, name, format!("{}{path}", self.base_url)));
            }
            for ty in OPTIONAL {
                if self.services.iter().any(|(t, _, _)| t == ty) {
                    continue;
                }
                for s in m.docs_of("service").filter(|s| s["type"] == *ty) {
                    if let Some(id) = s["id"].as_str() {
                        ops.push(Op::delete("service", id));
                    }
                    for iface in ["public", "internal", "admin"] {
                        let eid = format!("ursa-{ty}-{iface}");
                        if m.doc("endpoint", &eid).is_some() {
                            ops.push(Op::delete("endpoint", &eid));
                        }
                    }
                }
            }
            for (ty, name, url) in services {
                let svc_id = match m
                    .docs_of("service")
                    .find(|s| s["type"] == ty)
                    .and_then(|s| s["id"].as_str())
                {
                    Some(s) => s.to_string(),
                    None => {
                        let s = new_id();
                        ops.push(Op::put(
                            "service",
                            &s,
                            "",
                            &s,
                            json!({"id": s, "type": ty, "name": name, "enabled": true, "description": format!("Ursa {ty}")}),
                        ));
                        s
                    }
                };
                for iface in ["public", "internal", "admin"] {
                    // Deterministic ids: the same endpoint is updated on each start.
                    let eid = format!("ursa-{ty}-{iface}");
                    let ep = json!({
                        "id": eid, "service_id": svc_id, "interface": iface, "url": url,
                        "region": REGION, "region_id": REGION, "enabled": true
                    });
                    if m.doc("endpoint", &eid) != Some(&ep) {
                        ops.push(Op::put("endpoint", &eid, "", &eid, ep));
                    }
                }
            }
            Ok((ops, ()))
        })
        .await
    }
}
