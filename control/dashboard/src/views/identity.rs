//! Identity: Domains, Projects (members), Users, Groups, Roles and the
//! user's own Application Credentials, through Keystone's v3 API.

use super::Named;
use crate::client::{enc, ApiResult};
use crate::page::{action, cell, col, field, form, Panel, Row, Table};
use crate::{back, Ctx, DashError, Form, Result};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, Clone)]
struct Entity {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    domain_id: Option<String>,
}

fn entity_rows(v: &[Entity], url: Option<&str>, what: &str) -> Vec<Row> {
    v.iter()
        .map(|e| Row {
            id: e.id.clone(),
            cells: vec![
                cell(&e.name),
                cell(e.description.clone().unwrap_or_default()),
                cell(&e.id),
                cell(e.domain_id.clone().unwrap_or_default()),
                cell(match e.enabled {
                    Some(false) => "No",
                    _ => "Yes",
                }),
            ],
            actions: url
                .map(|u| {
                    vec![action(
                        &format!("Delete {what}"),
                        u,
                        &[("action", "delete"), ("id", &e.id)],
                    )]
                })
                .unwrap_or_default(),
            busy: false,
        })
        .collect()
}

fn entity_table(name: &str, rows: Vec<Row>) -> Table {
    Table {
        name: name.into(),
        cols: vec![
            col("Name"),
            col("Description"),
            col("ID"),
            col("Domain"),
            col("Enabled"),
        ],
        rows,
        ..Table::default()
    }
}

#[derive(Deserialize)]
struct Domains {
    domains: Vec<Entity>,
}

pub async fn domains(c: Ctx) -> Result<Response> {
    let d: Domains = c.api.get("/v3/domains").await?;
    c.panel(Panel {
        title: "Domains".into(),
        tables: vec![entity_table(
            "domains",
            entity_rows(&d.domains, None, "Domain"),
        )],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
struct Projects {
    projects: Vec<Entity>,
}

#[derive(Deserialize)]
struct Users {
    users: Vec<Entity>,
}

#[derive(Deserialize)]
struct Roles {
    roles: Vec<Named>,
}

/// Admins see every project and manage them; anyone else sees their own.
pub async fn projects(c: Ctx) -> Result<Response> {
    let admin = c.s.is_admin();
    let path = if admin {
        "/v3/projects".to_string()
    } else {
        format!("/v3/users/{}/projects", c.s.user_id)
    };
    let p: Projects = c.api.get(&path).await?;
    let url = "/dashboard/identity/projects";
    let mut forms = vec![];
    if admin {
        let users: Users = c.api.get("/v3/users").await?;
        let roles: Roles = c.api.get("/v3/roles").await?;
        let role_opts: Vec<(String, String)> = roles
            .roles
            .iter()
            .map(|r| (r.id.clone(), r.name.clone()))
            .collect();
        forms.push(form(
            "Create Project",
            url,
            vec![
                field("name", "Name", "text").required(),
                field("description", "Description", "text"),
            ],
        ));
        forms.push(form(
            "Modify Quotas",
            url,
            vec![
                field("action", "", "hidden").value("quotas"),
                field("project", "Project", "select").options(
                    p.projects
                        .iter()
                        .map(|p| (p.id.clone(), p.name.clone()))
                        .collect(),
                ),
                field("instances", "Instances", "number"),
                field("cores", "VCPUs", "number"),
                field("ram", "RAM (MB)", "number"),
                field("volumes", "Volumes", "number"),
                field(
                    "gigabytes",
                    "Total Size of Volumes and Snapshots (GiB)",
                    "number",
                ),
                field("network", "Networks", "number"),
                field("port", "Ports", "number"),
                field("floatingip", "Floating IPs", "number"),
            ],
        ));
        forms.push(form(
            "Manage Members",
            url,
            vec![
                field("action", "", "hidden").value("member"),
                field("project", "Project", "select").options(
                    p.projects
                        .iter()
                        .map(|p| (p.id.clone(), p.name.clone()))
                        .collect(),
                ),
                field("user", "User", "select").options(
                    users
                        .users
                        .iter()
                        .map(|u| (u.id.clone(), u.name.clone()))
                        .collect(),
                ),
                field("role", "Role", "select").options(role_opts),
            ],
        ));
    }
    c.panel(Panel {
        title: "Projects".into(),
        forms,
        tables: vec![entity_table(
            "projects",
            entity_rows(&p.projects, admin.then_some(url), "Project"),
        )],
        ..Panel::default()
    })
}

/// Each service's quotas of one project: only the numbers given change,
/// each through its own service's API.
async fn quotas(c: &Ctx, f: &EntityForm) -> ApiResult<String> {
    let num = |v: &str| v.trim().parse::<i64>().ok();
    let pick = |pairs: &[(&str, &str)]| {
        let m: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .filter_map(|(k, v)| num(v).map(|n| (k.to_string(), json!(n))))
            .collect();
        m
    };
    let p = enc(&f.project);
    let compute = pick(&[
        ("instances", &f.instances),
        ("cores", &f.cores),
        ("ram", &f.ram),
    ]);
    if !compute.is_empty() && c.s.has("compute") {
        c.api
            .put(
                &format!("/compute/v2.1/os-quota-sets/{p}"),
                &json!({ "quota_set": compute }),
            )
            .await?;
    }
    let volume = pick(&[("volumes", &f.volumes), ("gigabytes", &f.gigabytes)]);
    if !volume.is_empty() && (c.s.has("volumev3") || c.s.has("block-storage")) {
        c.api
            .put(
                &format!("/volume/v3/{}/os-quota-sets/{p}", c.s.project_id),
                &json!({ "quota_set": volume }),
            )
            .await?;
    }
    let network = pick(&[
        ("network", &f.network),
        ("port", &f.port),
        ("floatingip", &f.floatingip),
    ]);
    if !network.is_empty() {
        c.api
            .put(
                &format!("/network/v2.0/quotas/{p}"),
                &json!({ "quota": network }),
            )
            .await?;
    }
    Ok("Modified the project's quotas.".into())
}

#[derive(Deserialize)]
pub struct EntityForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    instances: String,
    #[serde(default)]
    cores: String,
    #[serde(default)]
    ram: String,
    #[serde(default)]
    volumes: String,
    #[serde(default)]
    gigabytes: String,
    #[serde(default)]
    network: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    floatingip: String,
}

pub async fn project_act(c: Ctx, Form(f): Form<EntityForm>) -> Result<Response> {
    let r: ApiResult<String> = match f.action.as_str() {
        "" => c
            .api
            .act(
                "/v3/projects",
                &json!({"project": {"name": f.name, "description": f.description, "domain_id": "default"}}),
            )
            .await
            .map(|_| format!("Created new project \"{}\".", f.name)),
        "member" => c
            .api
            .put(
                &format!(
                    "/v3/projects/{}/users/{}/roles/{}",
                    enc(&f.project),
                    enc(&f.user),
                    enc(&f.role)
                ),
                &json!({}),
            )
            .await
            .map(|_| "Added the member.".into()),
        "delete" => c
            .api
            .delete(&format!("/v3/projects/{}", enc(&f.id)))
            .await
            .map(|_| "Deleted project.".into()),
        "quotas" => quotas(&c, &f).await,
        other => return Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    };
    Ok(back("/dashboard/identity/projects", r))
}

pub async fn users(c: Ctx) -> Result<Response> {
    let u: Users = c.api.get("/v3/users").await?;
    let p: Projects = c.api.get("/v3/projects").await?;
    let roles: Roles = c.api.get("/v3/roles").await?;
    let url = "/dashboard/identity/users";
    let mut project_opts = vec![(String::new(), "(none)".to_string())];
    project_opts.extend(p.projects.iter().map(|p| (p.id.clone(), p.name.clone())));
    c.panel(Panel {
        title: "Users".into(),
        forms: vec![form(
            "Create User",
            url,
            vec![
                field("name", "User Name", "text").required(),
                field("email", "Email", "text"),
                field("password", "Password", "password").required(),
                field("project", "Primary Project", "select").options(project_opts),
                field("role", "Role", "select").options(
                    roles
                        .roles
                        .iter()
                        .map(|r| (r.id.clone(), r.name.clone()))
                        .collect(),
                ),
            ],
        )],
        tables: vec![entity_table(
            "users",
            entity_rows(&u.users, Some(url), "User"),
        )],
        ..Panel::default()
    })
}

pub async fn user_act(c: Ctx, Form(f): Form<EntityForm>) -> Result<Response> {
    #[derive(Deserialize)]
    struct Created {
        user: Entity,
    }
    let url = "/dashboard/identity/users";
    let r: ApiResult<String> = match f.action.as_str() {
        "" => {
            let mut u = json!({"name": f.name, "password": f.password, "domain_id": "default"});
            if !f.email.is_empty() {
                u["email"] = json!(f.email);
            }
            if !f.project.is_empty() {
                u["default_project_id"] = json!(f.project);
            }
            match c
                .api
                .post::<_, Created>("/v3/users", &json!({ "user": u }))
                .await
            {
                Err(e) => Err(e),
                Ok(created) if !f.project.is_empty() && !f.role.is_empty() => c
                    .api
                    .put(
                        &format!(
                            "/v3/projects/{}/users/{}/roles/{}",
                            enc(&f.project),
                            created.user.id,
                            enc(&f.role)
                        ),
                        &json!({}),
                    )
                    .await
                    .map(|_| format!("User \"{}\" was successfully created.", f.name)),
                Ok(_) => Ok(format!("User \"{}\" was successfully created.", f.name)),
            }
        }
        "delete" => c
            .api
            .delete(&format!("/v3/users/{}", enc(&f.id)))
            .await
            .map(|_| "Deleted user.".into()),
        other => return Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    };
    Ok(back(url, r))
}

#[derive(Deserialize)]
struct Groups {
    groups: Vec<Entity>,
}

pub async fn groups(c: Ctx) -> Result<Response> {
    let g: Groups = c.api.get("/v3/groups").await?;
    let u: Users = c.api.get("/v3/users").await?;
    let url = "/dashboard/identity/groups";
    c.panel(Panel {
        title: "Groups".into(),
        forms: vec![
            form(
                "Create Group",
                url,
                vec![
                    field("name", "Name", "text").required(),
                    field("description", "Description", "text"),
                ],
            ),
            form(
                "Add Users",
                url,
                vec![
                    field("action", "", "hidden").value("add_user"),
                    field("id", "Group", "select").options(
                        g.groups
                            .iter()
                            .map(|g| (g.id.clone(), g.name.clone()))
                            .collect(),
                    ),
                    field("user", "User", "select").options(
                        u.users
                            .iter()
                            .map(|u| (u.id.clone(), u.name.clone()))
                            .collect(),
                    ),
                ],
            ),
        ],
        tables: vec![entity_table(
            "groups",
            entity_rows(&g.groups, Some(url), "Group"),
        )],
        ..Panel::default()
    })
}

pub async fn group_act(c: Ctx, Form(f): Form<EntityForm>) -> Result<Response> {
    let r: ApiResult<String> = match f.action.as_str() {
        "" => c
            .api
            .act(
                "/v3/groups",
                &json!({"group": {"name": f.name, "description": f.description, "domain_id": "default"}}),
            )
            .await
            .map(|_| format!("Created group \"{}\".", f.name)),
        "add_user" => c
            .api
            .put(
                &format!("/v3/groups/{}/users/{}", enc(&f.id), enc(&f.user)),
                &json!({}),
            )
            .await
            .map(|_| "Added the user to the group.".into()),
        "delete" => c
            .api
            .delete(&format!("/v3/groups/{}", enc(&f.id)))
            .await
            .map(|_| "Deleted group.".into()),
        other => return Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    };
    Ok(back("/dashboard/identity/groups", r))
}

pub async fn roles(c: Ctx) -> Result<Response> {
    let r: Roles = c.api.get("/v3/roles").await?;
    c.panel(Panel {
        title: "Roles".into(),
        tables: vec![Table {
            name: "roles".into(),
            cols: vec![col("Role Name"), col("ID")],
            rows: r
                .roles
                .iter()
                .map(|r| Row {
                    id: r.id.clone(),
                    cells: vec![cell(&r.name), cell(&r.id)],
                    ..Row::default()
                })
                .collect(),
            ..Table::default()
        }],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
struct AppCreds {
    application_credentials: Vec<AppCred>,
}

#[derive(Deserialize)]
struct AppCred {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    secret: Option<String>,
}

pub async fn app_creds(c: Ctx) -> Result<Response> {
    let a: AppCreds = c
        .api
        .get(&format!(
            "/v3/users/{}/application_credentials",
            c.s.user_id
        ))
        .await?;
    let url = "/dashboard/identity/application_credentials";
    c.panel(Panel {
        title: "Application Credentials".into(),
        forms: vec![form(
            "Create Application Credential",
            url,
            vec![
                field("name", "Name", "text").required(),
                field("description", "Description", "text"),
            ],
        )],
        tables: vec![Table {
            name: "application_credentials".into(),
            cols: vec![col("Name"), col("Description"), col("Expires"), col("ID")],
            rows: a
                .application_credentials
                .iter()
                .map(|a| Row {
                    id: a.id.clone(),
                    cells: vec![
                        cell(&a.name),
                        cell(a.description.clone().unwrap_or_default()),
                        cell(a.expires_at.clone().unwrap_or_else(|| "Never".into())),
                        cell(&a.id),
                    ],
                    actions: vec![action(
                        "Delete Application Credential",
                        url,
                        &[("action", "delete"), ("id", &a.id)],
                    )],
                    busy: false,
                })
                .collect(),
            ..Table::default()
        }],
        ..Panel::default()
    })
}

/// Creating one shows its secret once, as Horizon does.
pub async fn app_cred_act(c: Ctx, Form(f): Form<EntityForm>) -> Result<Response> {
    let base = format!("/v3/users/{}/application_credentials", c.s.user_id);
    let url = "/dashboard/identity/application_credentials";
    match f.action.as_str() {
        "" => {
            #[derive(Deserialize)]
            struct Created {
                application_credential: AppCred,
            }
            match c
                .api
                .post::<_, Created>(
                    &base,
                    &json!({"application_credential": {"name": f.name, "description": f.description}}),
                )
                .await
            {
                Ok(a) => c
                    .panel(Panel {
                        title: "Your Application Credential".into(),
                        facts: vec![
                            ("Name".into(), a.application_credential.name),
                            ("ID".into(), a.application_credential.id),
                            (
                                "Secret (shown once)".into(),
                                a.application_credential.secret.unwrap_or_default(),
                            ),
                        ],
                        ..Panel::default()
                    })
                    .map(IntoResponse::into_response),
                Err(e) => Ok(back(url, Err(e))),
            }
        }
        "delete" => Ok(back(
            url,
            c.api
                .delete(&format!("{base}/{}", enc(&f.id)))
                .await
                .map(|_| "Deleted application credential.".into()),
        )),
        other => Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    }
}
