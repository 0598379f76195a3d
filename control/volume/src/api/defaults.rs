//! defaults: per-project default volume types (3.62, `/default-types`),
//! which a volume created without a type gets (and `/types/default`
//! shows to that project), and the resource filters the list APIs take
//! (3.33, `/resource_filters`). A project's default is the document
//! `volume_default_type/<project>`.

use super::*;
use serde::Deserialize;

/// Default types' document kind.
const DEFAULT_OF: &str = "volume_default_type";

/// The volume type a project's new volumes get: its own default, if an
/// admin set one (and the type still exists), else `__DEFAULT__`.
pub(super) fn default_type_of(s: &Volumes, project: &str) -> Option<Rec> {
    s.doc(DEFAULT_OF, project)
        .and_then(|d| s.doc(TYPE, st(&d, "volume_type_id")))
        .or_else(|| s.doc(TYPE, DEFAULT_TYPE_ID))
}

fn since_62(mv: Micro) -> Result<()> {
    if mv.0 < 62 {
        return Err(Error::NotFound(
            "Default types need microversion 3.62.".into(),
        ));
    }
    Ok(())
}

fn view(d: &Rec) -> Value {
    json!({"project_id": st(d, "id"), "volume_type_id": st(d, "volume_type_id")})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    default_type: SetDefault,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetDefault {
    volume_type: String,
}

pub(super) async fn set_default_type(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    since_62(mv)?;
    let s = svc(&state)?;
    admin(&auth)?;
    let project = p["project"].clone();
    if state.identity.model().project(&project).is_none() {
        return Err(Error::NotFound(format!(
            "Project {project} could not be found."
        )));
    }
    let b = parse_body::<SetBody>(&body)?.default_type;
    let t = find_type(s, &b.volume_type)?;
    let d = json!({"id": project, "volume_type_id": st(&t, "id")});
    let d = d.as_object().cloned().unwrap_or_default();
    s.put(DEFAULT_OF, d.clone()).await?;
    Ok(Json(json!({"default_type": view(&d)})))
}

pub(super) async fn show_default_type(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Json<Value>> {
    since_62(mv)?;
    let s = svc(&state)?;
    let project = p["project"].clone();
    own_project_or_reader(&auth, &project)?;
    let d = s.doc(DEFAULT_OF, &project).ok_or_else(|| {
        Error::NotFound(format!(
            "Default type for project {project} could not be found."
        ))
    })?;
    Ok(Json(json!({"default_type": view(&d)})))
}

pub(super) async fn list_default_types(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
) -> Result<Json<Value>> {
    since_62(mv)?;
    let s = svc(&state)?;
    admin(&auth)?;
    let list: Vec<Value> = s.docs(DEFAULT_OF).iter().map(view).collect();
    Ok(Json(json!({ "default_types": list })))
}

pub(super) async fn unset_default_type(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    Path(p): Params,
) -> Result<Response> {
    since_62(mv)?;
    let s = svc(&state)?;
    admin(&auth)?;
    s.forget(DEFAULT_OF, &p["project"]).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// What each list API filters on (Cinder's default resource_query_filters).
const FILTERS: &[(&str, &[&str])] = &[
    (
        "volume",
        &[
            "name",
            "status",
            "metadata",
            "bootable",
            "migration_status",
            "availability_zone",
            "group_id",
            "size",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "backup",
        &[
            "name",
            "status",
            "volume_id",
            "project_id",
            "availability_zone",
        ],
    ),
    (
        "snapshot",
        &[
            "name",
            "status",
            "volume_id",
            "metadata",
            "availability_zone",
        ],
    ),
    ("group", &[]),
    ("group_snapshot", &["status", "group_id"]),
    (
        "attachment",
        &["volume_id", "status", "instance_id", "attach_status"],
    ),
    (
        "message",
        &[
            "resource_uuid",
            "resource_type",
            "event_id",
            "request_id",
            "message_level",
        ],
    ),
    ("pool", &["name", "volume_type"]),
    ("volume_type", &["is_public"]),
];

pub(super) async fn resource_filters(
    State(state): State<AppState>,
    _auth: Auth,
    Extension(mv): Mv,
    q: Query,
) -> Result<Json<Value>> {
    if mv.0 < 33 {
        return Err(Error::NotFound(
            "Resource filters need microversion 3.33.".into(),
        ));
    }
    svc(&state)?;
    let list: Vec<Value> = FILTERS
        .iter()
        .filter(|(r, _)| q.get("resource").is_none_or(|w| w == r))
        .map(|(r, f)| json!({"resource": r, "filters": f}))
        .collect();
    Ok(Json(json!({ "resource_filters": list })))
}
