//! The image service (Glance v2): image records, members and the image
//! store.
//!
//! Records are documents in the control plane's store (kind `image`, and
//! `image_member` with id `<image>:<project>`), changed through the same
//! single writer as identity ([`Identity::change`]), so one revision counter
//! orders every change. Image data lives in an [`ImageStore`] ([`store`]):
//! objects in the object service (the default, so in its blob store,
//! directory or S3) or files under the state dir, streamed in at constant
//! memory with its MD5 (`checksum`) and SHA-512 (`os_hash_value`) computed
//! on the way. Compute nodes share no file system with the controllers:
//! they fetch an image, and upload a snapshot, over HTTP through ticket
//! URLs ([`Images::fetch_url`], [`Images::upload_url`]) that name one
//! image and one direction, sealed with the token keys, for a limited time.
//! Imports ([`tasks`]): `glance-direct` (staged data), `web-download` (an
//! http(s) URL) and the tasks API, each recorded as a task.

pub mod api;
pub mod metadefs;
pub mod store;
pub mod tasks;

pub use store::{ImageStore, Uploaded, MAX_IMAGE};

use serde_json::{json, Map, Value};
use std::path::Path;
use ursa_core::error::{Error, Result};
use ursa_core::policy::Caller;
use ursa_core::store::Op;
use ursa_identity::Identity;

pub const KIND: &str = "image";
pub const MEMBER: &str = "image_member";

pub const DISK_FORMATS: &[&str] = &[
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];
pub const CONTAINER_FORMATS: &[&str] = &[
    "ami",
    "ari",
    "aki",
    "bare",
    "ovf",
    "ova",
    "docker",
    "compressed",
];
/// Properties the service sets; clients may not.
pub const READ_ONLY: &[&str] = &[
    "status",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "direct_url",
    "locations",
];

/// The image service.
/// What the image API's handlers share.
#[derive(Clone)]
pub struct AppState {
    pub identity: ursa_identity::Identity,
    pub images: Images,
    /// Base URL clients reach us at, without a trailing slash.
    pub base_url: String,
}

impl ursa_core::http::Authenticate for AppState {
    fn authenticate(&self, token: &str) -> ursa_core::error::Result<ursa_core::policy::Caller> {
        self.identity.caller(token)
    }
}

#[derive(Clone)]
pub struct Images {
    pub identity: Identity,
    pub store: ImageStore,
}

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(crate) fn s<'a>(img: &'a Map<String, Value>, k: &str) -> &'a str {
    img.get(k).and_then(|v| v.as_str()).unwrap_or("")
}

/// The caller's relation to an image.
pub struct Access {
    /// The caller may see it.
    pub visible: bool,
    /// The caller may change it (owner or admin).
    pub owns: bool,
    /// The caller's membership status, if it is a member.
    pub member_status: Option<String>,
}

impl Images {
    /// The service over a file store in `dir`.
    pub fn new(identity: Identity, dir: &Path) -> std::io::Result<Images> {
        Ok(Images {
            identity,
            store: ImageStore::file(dir.to_path_buf())?,
        })
    }

    pub fn with_store(identity: Identity, store: ImageStore) -> Images {
        Images { identity, store }
    }

    pub fn get(&self, id: &str) -> Option<Map<String, Value>> {
        self.identity
            .model()
            .doc(KIND, id)
            .and_then(|v| v.as_object().cloned())
    }

    pub fn all(&self) -> Vec<Map<String, Value>> {
        self.identity
            .model()
            .docs_of(KIND)
            .filter_map(|v| v.as_object().cloned())
            .collect()
    }

    pub fn members(&self, image_id: &str) -> Vec<Map<String, Value>> {
        self.identity
            .model()
            .docs_of(MEMBER)
            .filter_map(|v| v.as_object())
            .filter(|m| s(m, "image_id") == image_id)
            .cloned()
            .collect()
    }

    pub fn member(&self, image_id: &str, project: &str) -> Option<Map<String, Value>> {
        self.identity
            .model()
            .doc(MEMBER, &format!("{image_id}:{project}"))
            .and_then(|v| v.as_object().cloned())
    }

    pub fn access(&self, c: &Caller, img: &Map<String, Value>) -> Access {
        let project = c.project_id().unwrap_or("");
        let owns = c.is_admin() || (!project.is_empty() && s(img, "owner") == project);
        let member_status = if project.is_empty() {
            None
        } else {
            self.member(s(img, "id"), project)
                .map(|m| s(&m, "status").to_string())
        };
        let visible = owns
            || c.is_reader_everywhere()
            || matches!(s(img, "visibility"), "public" | "community")
            || (s(img, "visibility") == "shared" && member_status.is_some());
        Access {
            visible,
            owns,
            member_status,
        }
    }

    /// The image if the caller may see it, else 404 (never 403: one
    /// project does not learn of another's private images).
    pub fn visible(&self, c: &Caller, id: &str) -> Result<(Map<String, Value>, Access)> {
        let img = self
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("No image found with ID {id}")))?;
        let a = self.access(c, &img);
        if !a.visible {
            return Err(Error::NotFound(format!("No image found with ID {id}")));
        }
        Ok((img, a))
    }

    /// Stores an image record (whole).
    pub async fn put(&self, img: Map<String, Value>) -> Result<Map<String, Value>> {
        let id = s(&img, "id").to_string();
        let owner = s(&img, "owner").to_string();
        let out = img.clone();
        self.identity
            .change(move |_| {
                Ok((
                    vec![Op::put(KIND, &id, &owner, &id, Value::Object(img.clone()))],
                    (),
                ))
            })
            .await?;
        Ok(out)
    }

    /// Changes a record under the writer lock: `f` sees the current one.
    pub async fn update(
        &self,
        id: &str,
        mut f: impl FnMut(&mut Map<String, Value>) -> Result<()>,
    ) -> Result<Map<String, Value>> {
        let id = id.to_string();
        self.identity
            .change(move |m| {
                let mut img = m
                    .doc(KIND, &id)
                    .and_then(|v| v.as_object().cloned())
                    .ok_or_else(|| Error::NotFound(format!("No image found with ID {id}")))?;
                f(&mut img)?;
                img.insert("updated_at".into(), json!(now()));
                let owner = s(&img, "owner").to_string();
                Ok((
                    vec![Op::put(KIND, &id, &owner, &id, Value::Object(img.clone()))],
                    img,
                ))
            })
            .await
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        let members: Vec<String> = self
            .members(id)
            .iter()
            .map(|m| format!("{id}:{}", s(m, "member_id")))
            .collect();
        let id2 = id.to_string();
        self.identity
            .change(move |_| {
                let mut ops = vec![Op::delete(KIND, &id2)];
                ops.extend(members.iter().map(|m| Op::delete(MEMBER, m)));
                Ok((ops, ()))
            })
            .await?;
        self.store.remove(id).await;
        Ok(())
    }

    pub async fn put_member(&self, m: Map<String, Value>) -> Result<()> {
        let id = format!("{}:{}", s(&m, "image_id"), s(&m, "member_id"));
        self.identity
            .change(move |_| {
                Ok((
                    vec![Op::put(MEMBER, &id, "", &id, Value::Object(m.clone()))],
                    (),
                ))
            })
            .await
    }

    pub async fn delete_member(&self, image_id: &str, project: &str) -> Result<()> {
        let id = format!("{image_id}:{project}");
        self.identity
            .change(move |_| Ok((vec![Op::delete(MEMBER, &id)], ())))
            .await
    }
}

/// The purposes of the tickets in compute nodes' image URLs.
pub const FETCH: &str = "image-fetch";
pub const UPLOAD: &str = "image-upload";

impl Images {
    /// A URL under `base` that serves image `id`'s bytes, without a token,
    /// for `ttl` (what a compute node fetches an image from).
    pub fn fetch_url(&self, base: &str, id: &str, ttl: std::time::Duration) -> String {
        self.ticket_url(FETCH, base, id, ttl)
    }

    /// A URL under `base` that takes image `id`'s bytes while it is
    /// `saving` (what a compute node uploads a snapshot to).
    pub fn upload_url(&self, base: &str, id: &str, ttl: std::time::Duration) -> String {
        self.ticket_url(UPLOAD, base, id, ttl)
    }

    fn ticket_url(&self, purpose: &str, base: &str, id: &str, ttl: std::time::Duration) -> String {
        let until = chrono::Utc::now().timestamp() + ttl.as_secs() as i64;
        let t = self.identity.codec().seal_ticket(purpose, id, until);
        format!("{}/image/ursa/data/{t}", base.trim_end_matches('/'))
    }

    /// The image id a ticket names (404 when it does not open).
    pub fn open_ticket(&self, purpose: &str, ticket: &str) -> Result<String> {
        self.identity
            .codec()
            .open_ticket(purpose, ticket, chrono::Utc::now().timestamp())
            .map_err(|e| Error::NotFound(format!("The image URL is not valid: {e}.")))
    }

    /// Takes `body` as image `id`'s data: hashed, stored, and the image
    /// made active (its data dropped again if it was deleted meanwhile).
    pub async fn take_data<S, E>(&self, id: &str, body: S) -> Result<()>
    where
        S: futures_util::Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let u = self.store.receive(id, body).await?;
        let r = self
            .update(id, move |img| {
                img.insert("status".into(), json!("active"));
                img.insert("size".into(), json!(u.size));
                img.insert("virtual_size".into(), json!(u.size));
                img.insert("checksum".into(), json!(u.md5));
                img.insert("os_hash_algo".into(), json!("sha512"));
                img.insert("os_hash_value".into(), json!(u.sha512));
                Ok(())
            })
            .await;
        if r.is_err() {
            // Deleted while it was being saved.
            self.store.remove(id).await;
        }
        r.map(|_| ())
    }

    /// Takes `body` as image `id`'s staged data (interoperable import's
    /// `glance-direct`): stored and hashed, the image `uploading` until
    /// [`Images::activate_staged`].
    pub async fn stage_data<S, E>(&self, id: &str, body: S) -> Result<()>
    where
        S: futures_util::Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let u = self.store.receive(id, body).await?;
        let r = self
            .update(id, move |img| {
                img.insert("status".into(), json!("uploading"));
                img.insert(
                    "ursa:staged".into(),
                    json!({"size": u.size, "md5": u.md5, "sha512": u.sha512}),
                );
                Ok(())
            })
            .await;
        if r.is_err() {
            self.store.remove(id).await;
        }
        r.map(|_| ())
    }

    /// Makes an image's staged data its own: `active`, with its hashes.
    pub async fn activate_staged(&self, id: &str) -> Result<()> {
        self.update(id, |img| {
            let staged = img
                .remove("ursa:staged")
                .ok_or_else(|| Error::Conflict("The image has no staged data.".into()))?;
            img.insert("status".into(), json!("active"));
            img.insert("size".into(), staged["size"].clone());
            img.insert("virtual_size".into(), staged["size"].clone());
            img.insert("checksum".into(), staged["md5"].clone());
            img.insert("os_hash_algo".into(), json!("sha512"));
            img.insert("os_hash_value".into(), staged["sha512"].clone());
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Takes a file made here as image `id`'s data ([`Images::take_data`]).
    pub async fn import_file(&self, id: &str, path: &Path) -> Result<()> {
        let f = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
        self.take_data(id, tokio_util::io::ReaderStream::new(f))
            .await
    }
}

/// A new image record as `POST /v2/images` starts it: Glance's defaults,
/// `queued`, owned by `owner`.
pub fn new_record(id: &str, owner: &str) -> Map<String, Value> {
    let now = now();
    let mut img = Map::new();
    for (k, v) in [
        ("id", json!(id)),
        ("name", Value::Null),
        ("status", json!("queued")),
        ("visibility", json!("shared")),
        ("protected", json!(false)),
        ("os_hidden", json!(false)),
        ("checksum", Value::Null),
        ("os_hash_algo", Value::Null),
        ("os_hash_value", Value::Null),
        ("owner", json!(owner)),
        ("size", Value::Null),
        ("virtual_size", Value::Null),
        ("min_ram", json!(0)),
        ("min_disk", json!(0)),
        ("disk_format", Value::Null),
        ("container_format", Value::Null),
        ("created_at", json!(now)),
        ("updated_at", json!(now)),
        ("tags", json!([])),
    ] {
        img.insert(k.into(), v);
    }
    img
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
