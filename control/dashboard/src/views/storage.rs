//! Project → Images, Key Pairs, Volumes, Snapshots and Containers.

use super::{options, Volumes};
use crate::client::{enc, ApiResult};
use crate::page::{action, cell, col, field, form, link, live, Paging, Panel, Row, Table};
use crate::{back, Ctx, DashError, Form, Result};
use axum::body::Body;
use axum::extract::{Path, Query, Request};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, Clone)]
pub struct Image {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub visibility: String,
    #[serde(default)]
    pub disk_format: Option<String>,
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub protected: bool,
    /// Every other field: the image's properties.
    #[serde(flatten)]
    pub properties: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
pub struct Images {
    pub images: Vec<Image>,
}

const IMAGE_SORT: &[&str] = &["created_at", "name", "size"];

pub async fn image_table(c: &Ctx, p: &Paging, base: &str, mine: bool) -> Result<Table> {
    let list: Images = c
        .api
        .get(&format!("/image/v2/images?{}", p.query(IMAGE_SORT, "name")))
        .await?;
    let props = |i: &Image| {
        i.properties
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "created_at"
                        | "updated_at"
                        | "checksum"
                        | "container_format"
                        | "file"
                        | "schema"
                        | "self"
                        | "tags"
                        | "min_disk"
                        | "min_ram"
                        | "os_hash_algo"
                        | "os_hash_value"
                        | "virtual_size"
                        | "os_hidden"
                        | "direct_url"
                        | "locations"
                        | "stores"
                )
            })
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                v => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = list
        .images
        .iter()
        .map(|i| {
            let url = format!("/dashboard/project/images/{}/action", i.id);
            let mut actions = vec![];
            if mine && i.owner.as_deref() == Some(c.s.project_id.as_str()) || c.s.is_admin() {
                for v in ["public", "private", "shared", "community"] {
                    if v != i.visibility {
                        actions.push(action(
                            &format!("Make {v}"),
                            &url,
                            &[("action", "visibility"), ("visibility", v)],
                        ));
                    }
                }
                actions.push(action("Delete Image", &url, &[("action", "delete")]));
            }
            Row {
                id: i.id.clone(),
                cells: vec![
                    cell(i.name.clone().unwrap_or_default()),
                    cell(&i.status),
                    cell(&i.visibility),
                    cell(i.disk_format.clone().unwrap_or_default()),
                    cell(i.size.map(human).unwrap_or_default()),
                    cell(props(i)),
                ],
                actions,
                busy: false,
            }
        })
        .collect();
    let mut t = Table {
        name: "images".into(),
        cols: vec![
            crate::page::sortable("Name", "name"),
            col("Status"),
            col("Visibility"),
            col("Disk Format"),
            crate::page::sortable("Size", "size"),
            col("Properties"),
        ],
        rows,
        ..Table::default()
    };
    p.finish(&mut t, base, IMAGE_SORT);
    Ok(t)
}

pub fn human(b: i64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

pub async fn images(c: Ctx, Query(p): Query<Paging>) -> Result<Response> {
    let t = image_table(&c, &p, "/dashboard/project/images", true).await?;
    let upload = crate::page::Form {
        title: "Create Image".into(),
        url: "/dashboard/project/images/upload".into(),
        fields: vec![
            field("name", "Image Name", "text").required(),
            field("file", "File", "file").required(),
            field("disk_format", "Format", "select").options(
                ["qcow2", "raw", "iso", "vmdk", "vdi"]
                    .iter()
                    .map(|f| (f.to_string(), f.to_uppercase()))
                    .collect(),
            ),
            field("visibility", "Visibility", "select").options(
                ["private", "shared", "community", "public"]
                    .iter()
                    .map(|f| (f.to_string(), f.to_string()))
                    .collect(),
            ),
        ],
        submit: "Create Image",
        folded: true,
    };
    c.panel(Panel {
        title: "Images".into(),
        forms: vec![upload],
        tables: vec![t],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
pub struct UploadQuery {
    name: String,
    #[serde(default)]
    disk_format: Option<String>,
    #[serde(default)]
    visibility: Option<String>,
}

/// `PUT /dashboard/project/images/upload?name=…` with the file as the
/// body (the script sends it with progress): creates the image, then
/// streams the bytes to the image API's `PUT …/file` without holding them.
pub async fn upload(c: Ctx, Query(q): Query<UploadQuery>, req: Request) -> Result<Response> {
    let created: Image = c
        .api
        .post(
            "/image/v2/images",
            &json!({
                "name": q.name,
                "disk_format": q.disk_format.as_deref().unwrap_or("qcow2"),
                "container_format": "bare",
                "visibility": q.visibility.as_deref().unwrap_or("private"),
            }),
        )
        .await?;
    let body = Body::new(req.into_body());
    let r = c
        .api
        .send(
            Method::PUT,
            &format!("/image/v2/images/{}/file", created.id),
            &[("content-type", "application/octet-stream")],
            body,
        )
        .await;
    match r {
        Ok(_) => Ok((
            StatusCode::CREATED,
            Json(
                json!({"id": created.id, "message": format!("Image \"{}\" uploaded.", q.name),
                        "next": "/dashboard/project/images"}),
            ),
        )
            .into_response()),
        Err(e) => {
            let _ = c
                .api
                .delete(&format!("/image/v2/images/{}", created.id))
                .await;
            Ok((e.status, Json(json!({"message": e.message}))).into_response())
        }
    }
}

#[derive(Deserialize)]
pub struct ImageAct {
    action: String,
    #[serde(default)]
    visibility: String,
}

pub async fn image_act(
    c: Ctx,
    Path(id): Path<String>,
    Form(f): Form<ImageAct>,
) -> Result<Response> {
    let path = format!("/image/v2/images/{}", enc(&id));
    let r: ApiResult<String> = match f.action.as_str() {
        "delete" => c.api.delete(&path).await.map(|_| "Deleted image.".into()),
        "visibility" => {
            let patch = serde_json::to_vec(
                &json!([{"op": "replace", "path": "/visibility", "value": f.visibility}]),
            )
            .unwrap_or_default();
            c.api
                .send(
                    Method::PATCH,
                    &path,
                    &[(
                        "content-type",
                        "application/openstack-images-v2.1-json-patch",
                    )],
                    Body::from(patch),
                )
                .await
                .map(|_| format!("Image is now {}.", f.visibility))
        }
        other => return Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    };
    Ok(back("/dashboard/project/images", r))
}

#[derive(Deserialize)]
struct KeyPairs {
    keypairs: Vec<KeyPairItem>,
}

#[derive(Deserialize)]
struct KeyPairItem {
    keypair: KeyPair,
}

#[derive(Deserialize)]
struct KeyPair {
    name: String,
    #[serde(default)]
    fingerprint: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
}

pub async fn key_pairs(c: Ctx) -> Result<Response> {
    let list: KeyPairs = c.api.get("/compute/v2.1/os-keypairs").await?;
    let rows = list
        .keypairs
        .iter()
        .map(|k| Row {
            id: k.keypair.name.clone(),
            cells: vec![
                cell(&k.keypair.name),
                cell(k.keypair.kind.clone().unwrap_or_else(|| "ssh".into())),
                cell(&k.keypair.fingerprint),
            ],
            actions: vec![action(
                "Delete Key Pair",
                format!(
                    "/dashboard/project/key_pairs/{}/delete",
                    enc(&k.keypair.name)
                ),
                &[],
            )],
            busy: false,
        })
        .collect();
    c.panel(Panel {
        title: "Key Pairs".into(),
        forms: vec![
            form(
                "Create Key Pair",
                "/dashboard/project/key_pairs",
                vec![field("name", "Key Pair Name", "text").required()],
            ),
            form(
                "Import Public Key",
                "/dashboard/project/key_pairs",
                vec![
                    field("name", "Key Pair Name", "text").required(),
                    field("public_key", "Public Key", "textarea").required(),
                ],
            ),
        ],
        tables: vec![Table {
            name: "keypairs".into(),
            cols: vec![col("Name"), col("Type"), col("Fingerprint")],
            rows,
            ..Table::default()
        }],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
pub struct KeyPairForm {
    name: String,
    #[serde(default)]
    public_key: String,
}

/// Creates a key pair: a generated one's private key is the answer, as a
/// download, once (the API keeps only the public half); an imported one
/// goes back to the list.
pub async fn key_pair_create(c: Ctx, Form(f): Form<KeyPairForm>) -> Result<Response> {
    let mut kp = json!({"name": f.name});
    if !f.public_key.trim().is_empty() {
        kp["public_key"] = json!(f.public_key.trim());
    }
    #[derive(Deserialize)]
    struct Created {
        keypair: KeyPair,
    }
    match c
        .api
        .post::<_, Created>("/compute/v2.1/os-keypairs", &json!({ "keypair": kp }))
        .await
    {
        Ok(k) => match k.keypair.private_key {
            Some(pk) => {
                let file: String = k
                    .keypair
                    .name
                    .chars()
                    .map(|ch| {
                        if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' {
                            ch
                        } else {
                            '_'
                        }
                    })
                    .collect();
                Ok((
                    [
                        (header::CONTENT_TYPE, "application/x-pem-file".to_string()),
                        (
                            header::CONTENT_DISPOSITION,
                            format!("attachment; filename=\"{file}.pem\""),
                        ),
                        (header::CACHE_CONTROL, "no-store".to_string()),
                    ],
                    pk,
                )
                    .into_response())
            }
            None => Ok(back(
                "/dashboard/project/key_pairs",
                Ok(format!("Imported key pair \"{}\".", f.name)),
            )),
        },
        Err(e) => Ok(back("/dashboard/project/key_pairs", Err(e))),
    }
}

pub async fn key_pair_delete(c: Ctx, Path(name): Path<String>) -> Result<Response> {
    let r = c
        .api
        .delete(&format!("/compute/v2.1/os-keypairs/{}", enc(&name)))
        .await
        .map(|_| format!("Deleted key pair \"{name}\"."));
    Ok(back("/dashboard/project/key_pairs", r))
}

const VOLUME_SORT: &[&str] = &["created_at", "name", "size"];

pub async fn volume_table(c: &Ctx, p: &Paging, base: &str, all: bool) -> Result<Table> {
    let sort = format!("{}:{}", p.sort(VOLUME_SORT), p.dir());
    let mut q = format!("limit={}&sort={sort}", p.limit());
    if let Some(m) = &p.marker {
        q.push_str(&format!("&marker={}", enc(m)));
    }
    if let Some(n) = p.filter() {
        q.push_str(&format!("&name={}", enc(n)));
    }
    if all {
        q.push_str("&all_tenants=1");
    }
    let list: Volumes = c
        .api
        .get(&format!("/volume/v3/{}/volumes/detail?{q}", c.s.project_id))
        .await?;
    let rows = list
        .volumes
        .iter()
        .map(|v| {
            let url = format!("/dashboard/project/volumes/{}/action", v.id);
            let mut actions = vec![
                action("Create Snapshot", &url, &[("action", "snapshot")]),
                action("Create Backup", &url, &[("action", "backup")]),
                action(
                    "Create Incremental Backup",
                    &url,
                    &[("action", "incremental")],
                ),
            ];
            if v.status == "available" {
                actions.push(action("Delete Volume", &url, &[("action", "delete")]));
            }
            Row {
                id: v.id.clone(),
                cells: vec![
                    cell(v.name.clone().unwrap_or_else(|| v.id.clone())),
                    cell(format!("{}GiB", v.size)),
                    live("status", &v.status),
                    cell(v.volume_type.clone().unwrap_or_default()),
                    live("attached", v.attached_to()),
                    cell(&v.bootable),
                ],
                actions,
                busy: super::volume_busy(&v.status),
            }
        })
        .collect();
    let mut t = Table {
        name: "volumes".into(),
        cols: vec![
            crate::page::sortable("Name", "name"),
            crate::page::sortable("Size", "size"),
            col("Status"),
            col("Type"),
            col("Attached To"),
            col("Bootable"),
        ],
        rows,
        poll: Some("/dashboard/status?kind=volume".into()),
        ..Table::default()
    };
    p.finish(&mut t, base, VOLUME_SORT);
    Ok(t)
}

pub async fn volumes(c: Ctx, Query(p): Query<Paging>) -> Result<Response> {
    let t = volume_table(&c, &p, "/dashboard/project/volumes", false).await?;
    let images: Images = c
        .api
        .get("/image/v2/images?status=active&limit=200")
        .await
        .unwrap_or(Images { images: vec![] });
    let snaps: Snapshots = c
        .api
        .get(&format!(
            "/volume/v3/{}/snapshots?limit=200",
            c.s.project_id
        ))
        .await
        .unwrap_or_default();
    let servers: super::ServerNames = c
        .api
        .get("/compute/v2.1/servers?limit=200")
        .await
        .unwrap_or_default();
    let vols: Volumes = c
        .api
        .get(&format!(
            "/volume/v3/{}/volumes/detail?limit=200",
            c.s.project_id
        ))
        .await
        .unwrap_or_default();
    let none = || vec![(String::new(), "(none)".to_string())];
    let mut image_opts = none();
    image_opts.extend(options(&images.images, |i| {
        (i.id.clone(), i.name.clone().unwrap_or_default())
    }));
    let mut snap_opts = none();
    snap_opts.extend(options(&snaps.snapshots, |s| (s.id.clone(), s.label())));
    let vol_opts = options(&vols.volumes, |v| (v.id.clone(), v.label()));
    let url = "/dashboard/project/volumes";
    let act = |a: &'static str| field("action", "", "hidden").value(a);
    let forms = vec![
        form(
            "Create Volume",
            url,
            vec![
                field("name", "Volume Name", "text").required(),
                field("size", "Size (GiB)", "number").value("1").required(),
                field("image", "Use image as a source", "select").options(image_opts),
                field("snapshot", "Use snapshot as a source", "select").options(snap_opts),
            ],
        ),
        form(
            "Extend Volume",
            url,
            vec![
                act("extend"),
                field("volume", "Volume", "select").options(vol_opts.clone()),
                field("size", "New Size (GiB)", "number").required(),
            ],
        ),
        form(
            "Manage Attachments",
            url,
            vec![
                act("attach"),
                field("volume", "Volume", "select").options(vol_opts.clone()),
                field("server", "Attach to Instance", "select")
                    .options(options(&servers.servers, |s| {
                        (s.id.clone(), s.name.clone())
                    })),
            ],
        ),
        form(
            "Detach Volume",
            url,
            vec![
                act("detach"),
                field("volume", "Volume", "select").options(vol_opts),
            ],
        ),
    ];
    c.panel(Panel {
        title: "Volumes".into(),
        forms,
        tables: vec![t],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
pub struct VolumeForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    size: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    snapshot: String,
    #[serde(default)]
    volume: String,
    #[serde(default)]
    server: String,
}

fn size_of(s: &str) -> std::result::Result<i64, DashError> {
    s.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| DashError::BadRequest("The size is a whole number of GiB above 0.".into()))
}

/// Create (no action), extend, attach and detach.
pub async fn volume_create(c: Ctx, Form(f): Form<VolumeForm>) -> Result<Response> {
    let p = &c.s.project_id;
    let r: ApiResult<String> = match f.action.as_str() {
        "" => {
            let mut v = json!({"name": f.name, "size": size_of(&f.size)?});
            if !f.image.is_empty() {
                v["imageRef"] = json!(f.image);
            }
            if !f.snapshot.is_empty() {
                v["snapshot_id"] = json!(f.snapshot);
            }
            c.api
                .act(&format!("/volume/v3/{p}/volumes"), &json!({ "volume": v }))
                .await
                .map(|_| format!("Creating volume \"{}\".", f.name))
        }
        "extend" => c
            .api
            .act(
                &format!("/volume/v3/{p}/volumes/{}/action", enc(&f.volume)),
                &json!({"os-extend": {"new_size": size_of(&f.size)?}}),
            )
            .await
            .map(|_| "Extending volume.".into()),
        "attach" => c
            .api
            .act(
                &format!(
                    "/compute/v2.1/servers/{}/os-volume_attachments",
                    enc(&f.server)
                ),
                &json!({"volumeAttachment": {"volumeId": f.volume}}),
            )
            .await
            .map(|_| "Attaching volume.".into()),
        "detach" => {
            let v: super::OneVolume = c
                .api
                .get(&format!("/volume/v3/{p}/volumes/{}", enc(&f.volume)))
                .await?;
            match v.volume.attachments.first() {
                Some(a) => c
                    .api
                    .delete(&format!(
                        "/compute/v2.1/servers/{}/os-volume_attachments/{}",
                        enc(&a.server_id),
                        enc(&f.volume)
                    ))
                    .await
                    .map(|_| "Detaching volume.".into()),
                None => Ok("The volume is not attached.".into()),
            }
        }
        other => return Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    };
    Ok(back("/dashboard/project/volumes", r))
}

pub async fn volume_act(
    c: Ctx,
    Path(id): Path<String>,
    Form(f): Form<VolumeForm>,
) -> Result<Response> {
    let p = &c.s.project_id;
    let path = format!("/volume/v3/{p}/volumes/{}", enc(&id));
    let r: ApiResult<String> = match f.action.as_str() {
        "delete" => c.api.delete(&path).await.map(|_| "Scheduled deletion of volume.".into()),
        "snapshot" => c
            .api
            .act(
                &format!("/volume/v3/{p}/snapshots"),
                &json!({"snapshot": {"volume_id": id, "force": true,
                        "name": if f.name.is_empty() { format!("snapshot-of-{id}") } else { f.name.clone() }}}),
            )
            .await
            .map(|_| "Creating volume snapshot.".into()),
        "backup" | "incremental" => {
            let incremental = f.action == "incremental";
            c.api
                .act(
                    &format!("/volume/v3/{p}/backups"),
                    &json!({"backup": {"volume_id": id, "force": true, "incremental": incremental,
                            "name": if f.name.is_empty() { format!("backup-of-{id}") } else { f.name.clone() }}}),
                )
                .await
                .map(|_| "Creating volume backup.".into())
        }
        other => return Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    };
    let to = match f.action.as_str() {
        "snapshot" => "/dashboard/project/snapshots",
        "backup" | "incremental" => "/dashboard/project/backups",
        _ => "/dashboard/project/volumes",
    };
    Ok(back(to, r))
}

#[derive(Deserialize, Default)]
struct Snapshots {
    #[serde(default)]
    snapshots: Vec<Snapshot>,
}

#[derive(Deserialize)]
struct Snapshot {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: String,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    volume_id: String,
}

impl Snapshot {
    fn label(&self) -> String {
        format!(
            "{} ({} GiB)",
            self.name.clone().unwrap_or_else(|| self.id.clone()),
            self.size
        )
    }
}

pub async fn snapshots(c: Ctx, Query(p): Query<Paging>) -> Result<Response> {
    let mut q = format!("limit={}", p.limit());
    if let Some(m) = &p.marker {
        q.push_str(&format!("&marker={}", enc(m)));
    }
    let list: Snapshots = c
        .api
        .get(&format!(
            "/volume/v3/{}/snapshots/detail?{q}",
            c.s.project_id
        ))
        .await?;
    let rows = list
        .snapshots
        .iter()
        .map(|s| {
            let url = format!("/dashboard/project/snapshots/{}/action", s.id);
            Row {
                id: s.id.clone(),
                cells: vec![
                    cell(s.name.clone().unwrap_or_default()),
                    cell(format!("{}GiB", s.size)),
                    cell(&s.status),
                    link(&s.volume_id, "/dashboard/project/volumes"),
                ],
                actions: vec![
                    action("Create Volume", &url, &[("action", "volume")]),
                    action("Delete Volume Snapshot", &url, &[("action", "delete")]),
                ],
                busy: false,
            }
        })
        .collect();
    let mut t = Table {
        name: "snapshots".into(),
        cols: vec![col("Name"), col("Size"), col("Status"), col("Volume")],
        rows,
        ..Table::default()
    };
    p.finish(&mut t, "/dashboard/project/snapshots", &["created_at"]);
    c.panel(Panel::of("Volume Snapshots", vec![t]))
}

pub async fn snapshot_act(
    c: Ctx,
    Path(id): Path<String>,
    Form(f): Form<VolumeForm>,
) -> Result<Response> {
    let p = &c.s.project_id;
    let r: ApiResult<String> = match f.action.as_str() {
        "delete" => c
            .api
            .delete(&format!("/volume/v3/{p}/snapshots/{}", enc(&id)))
            .await
            .map(|_| "Scheduled deletion of volume snapshot.".into()),
        "volume" => c
            .api
            .act(
                &format!("/volume/v3/{p}/volumes"),
                &json!({"volume": {"snapshot_id": id, "name": format!("from-{id}")}}),
            )
            .await
            .map(|_| "Creating volume from the snapshot.".into()),
        other => return Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    };
    let to = if f.action == "volume" {
        "/dashboard/project/volumes"
    } else {
        "/dashboard/project/snapshots"
    };
    Ok(back(to, r))
}

#[derive(Deserialize, Default)]
struct Backups {
    #[serde(default)]
    backups: Vec<Backup>,
}

#[derive(Deserialize)]
struct Backup {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: String,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    volume_id: String,
    #[serde(default)]
    is_incremental: bool,
    #[serde(default)]
    object_count: i64,
}

/// Project → Backups: the project's volume backups, restored to a new
/// volume or deleted from here (made from a volume's row).
pub async fn backups(c: Ctx, Query(p): Query<Paging>) -> Result<Response> {
    let mut q = format!("limit={}", p.limit());
    if let Some(m) = &p.marker {
        q.push_str(&format!("&marker={}", enc(m)));
    }
    let list: Backups = c
        .api
        .get(&format!("/volume/v3/{}/backups/detail?{q}", c.s.project_id))
        .await?;
    let rows = list
        .backups
        .iter()
        .map(|b| {
            let url = format!("/dashboard/project/backups/{}/action", b.id);
            Row {
                id: b.id.clone(),
                cells: vec![
                    cell(b.name.clone().unwrap_or_default()),
                    cell(format!("{}GiB", b.size)),
                    live("status", &b.status),
                    cell(if b.is_incremental { "Yes" } else { "No" }),
                    cell(b.object_count.to_string()),
                    link(&b.volume_id, "/dashboard/project/volumes"),
                ],
                actions: vec![
                    action("Restore Backup", &url, &[("action", "restore")]),
                    action("Delete Volume Backup", &url, &[("action", "delete")]),
                ],
                busy: matches!(b.status.as_str(), "creating" | "restoring" | "deleting"),
            }
        })
        .collect();
    let mut t = Table {
        name: "backups".into(),
        cols: vec![
            col("Name"),
            col("Size"),
            col("Status"),
            col("Incremental"),
            col("Objects"),
            col("Volume"),
        ],
        rows,
        poll: Some("/dashboard/status?kind=backup".into()),
        ..Table::default()
    };
    p.finish(&mut t, "/dashboard/project/backups", &["created_at"]);
    c.panel(Panel::of("Volume Backups", vec![t]))
}

pub async fn backup_act(
    c: Ctx,
    Path(id): Path<String>,
    Form(f): Form<VolumeForm>,
) -> Result<Response> {
    let p = &c.s.project_id;
    let r: ApiResult<String> = match f.action.as_str() {
        "delete" => c
            .api
            .delete(&format!("/volume/v3/{p}/backups/{}", enc(&id)))
            .await
            .map(|_| "Scheduled deletion of volume backup.".into()),
        "restore" => c
            .api
            .act(
                &format!("/volume/v3/{p}/backups/{}/restore", enc(&id)),
                &json!({"restore": {"name": format!("restore-{id}")}}),
            )
            .await
            .map(|_| "Restoring the backup to a new volume.".into()),
        other => return Err(DashError::BadRequest(format!("Unknown action {other:?}."))),
    };
    let to = if f.action == "restore" {
        "/dashboard/project/volumes"
    } else {
        "/dashboard/project/backups"
    };
    Ok(back(to, r))
}

#[derive(Deserialize)]
struct Container {
    name: String,
    #[serde(default)]
    count: i64,
    #[serde(default)]
    bytes: i64,
}

#[derive(Deserialize)]
struct Object {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    subdir: Option<String>,
    #[serde(default)]
    bytes: i64,
    #[serde(default)]
    last_modified: String,
}

fn account(c: &Ctx) -> String {
    format!("/v1/AUTH_{}", c.s.project_id)
}

pub async fn containers(c: Ctx, Query(p): Query<Paging>) -> Result<Response> {
    let mut q = format!("format=json&limit={}", p.limit());
    if let Some(m) = &p.marker {
        q.push_str(&format!("&marker={}", enc(m)));
    }
    if let Some(n) = p.filter() {
        q.push_str(&format!("&prefix={}", enc(n)));
    }
    let list: Vec<Container> = c.api.get(&format!("{}?{q}", account(&c))).await?;
    let rows = list
        .iter()
        .map(|k| Row {
            id: k.name.clone(),
            cells: vec![
                link(
                    &k.name,
                    format!("/dashboard/project/containers/{}", enc(&k.name)),
                ),
                cell(k.count.to_string()),
                cell(human(k.bytes)),
            ],
            actions: vec![],
            busy: false,
        })
        .collect();
    let mut t = Table {
        name: "containers".into(),
        cols: vec![col("Container"), col("Objects"), col("Size")],
        rows,
        ..Table::default()
    };
    p.finish(&mut t, "/dashboard/project/containers", &["name"]);
    c.panel(Panel {
        title: "Containers".into(),
        forms: vec![form(
            "Create Container",
            "/dashboard/project/containers",
            vec![field("name", "Container Name", "text").required()],
        )],
        tables: vec![t],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
pub struct ContainerForm {
    name: String,
}

pub async fn container_create(c: Ctx, Form(f): Form<ContainerForm>) -> Result<Response> {
    let r = c
        .api
        .send(
            Method::PUT,
            &format!("{}/{}", account(&c), enc(&f.name)),
            &[],
            Body::empty(),
        )
        .await
        .map(|_| format!("Container \"{}\" created.", f.name));
    Ok(back("/dashboard/project/containers", r))
}

pub async fn objects(
    c: Ctx,
    Path(name): Path<String>,
    Query(p): Query<Paging>,
) -> Result<Response> {
    let mut q = format!("format=json&delimiter=/&limit={}", p.limit());
    if let Some(m) = &p.marker {
        q.push_str(&format!("&marker={}", enc(m)));
    }
    if let Some(n) = p.filter() {
        q.push_str(&format!("&prefix={}", enc(n)));
    }
    let list: Vec<Object> = c
        .api
        .get(&format!("{}/{}?{q}", account(&c), enc(&name)))
        .await?;
    let here = format!("/dashboard/project/containers/{}", enc(&name));
    let rows = list
        .iter()
        .map(|o| match (&o.name, &o.subdir) {
            (Some(n), _) => Row {
                id: n.clone(),
                cells: vec![
                    link(n, format!("{here}/object?name={}", enc(n))),
                    cell(human(o.bytes)),
                    cell(&o.last_modified),
                ],
                actions: vec![action(
                    "Delete Object",
                    format!("{here}/delete"),
                    &[("name", n)],
                )],
                busy: false,
            },
            (None, sub) => {
                let d = sub.clone().unwrap_or_default();
                Row {
                    id: d.clone(),
                    cells: vec![
                        link(&d, format!("{here}?name={}", enc(&d))),
                        cell(""),
                        cell(""),
                    ],
                    actions: vec![],
                    busy: false,
                }
            }
        })
        .collect();
    let mut t = Table {
        name: "objects".into(),
        cols: vec![col("Object"), col("Size"), col("Last Modified")],
        rows,
        ..Table::default()
    };
    p.finish(&mut t, &here, &["name"]);
    let upload = crate::page::Form {
        title: "Upload Object".into(),
        url: format!("{here}/upload"),
        fields: vec![
            field("name", "Object Name", "text").required(),
            field("file", "File", "file").required(),
        ],
        submit: "Upload Object",
        folded: true,
    };
    c.panel(Panel {
        title: format!("Container: {name}"),
        forms: vec![upload],
        tables: vec![t],
        ..Panel::default()
    })
}

#[derive(Deserialize)]
pub struct ObjectName {
    name: String,
}

fn object_path(c: &Ctx, container: &str, name: &str) -> String {
    format!("{}/{}/{}", account(c), enc(container), enc(name))
}

/// `PUT …/upload?name=` with the file as the body, streamed to the object
/// API's PUT.
pub async fn object_upload(
    c: Ctx,
    Path(container): Path<String>,
    Query(q): Query<ObjectName>,
    req: Request,
) -> Result<Response> {
    // The object API needs the length (or chunks): the browser's is
    // passed on with the body it describes.
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let framing = match &length {
        Some(l) => ("content-length", l.as_str()),
        None => ("transfer-encoding", "chunked"),
    };
    let r = c
        .api
        .send(
            Method::PUT,
            &object_path(&c, &container, &q.name),
            &[framing],
            Body::new(req.into_body()),
        )
        .await;
    Ok(match r {
        Ok(_) => (
            StatusCode::CREATED,
            Json(json!({"message": format!("Uploaded \"{}\".", q.name),
                        "next": format!("/dashboard/project/containers/{}", enc(&container))})),
        )
            .into_response(),
        Err(e) => (e.status, Json(json!({"message": e.message}))).into_response(),
    })
}

/// The object's bytes, streamed from the object API as a download.
pub async fn object_download(
    c: Ctx,
    Path(container): Path<String>,
    Query(q): Query<ObjectName>,
) -> Result<Response> {
    let resp = c
        .api
        .stream(Method::GET, &object_path(&c, &container, &q.name))
        .await?;
    let file: String = q
        .name
        .rsplit('/')
        .next()
        .unwrap_or("object")
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ".-_".contains(ch) {
                ch
            } else {
                '_'
            }
        })
        .collect();
    let mut out = Response::new(resp.into_body());
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = format!("attachment; filename=\"{file}\"").parse() {
        out.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(out)
}

pub async fn object_delete(
    c: Ctx,
    Path(container): Path<String>,
    Form(f): Form<ObjectName>,
) -> Result<Response> {
    let r = c
        .api
        .delete(&object_path(&c, &container, &f.name))
        .await
        .map(|_| format!("Deleted \"{}\".", f.name));
    Ok(back(
        &format!("/dashboard/project/containers/{}", enc(&container)),
        r,
    ))
}
