//! The image service (Glance v2): image records, members and the image
//! store.
//!
//! Records are rows ([`image_table`]: `img_images`, `img_members`), read
//! by indexed queries and written in the store's write transactions, so
//! one revision counter orders every change. Image data lives in an [`ImageStore`] ([`store`]):
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
pub mod image_table;
pub mod metadefs;
pub mod store;
pub mod tasks;

pub use store::{ImageStore, Uploaded, MAX_IMAGE};

use serde_json::{json, Map, Value};
use std::path::Path;
use ursa_core::error::{Error, Result};
use ursa_core::policy::Caller;
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

/// The caller's relation to `img`, given its membership status.
pub fn access_given(c: &Caller, img: &Map<String, Value>, member_status: Option<String>) -> Access {
    let project = c.project_id().unwrap_or("");
    let owns = c.is_admin() || (!project.is_empty() && s(img, "owner") == project);
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

    /// A connection for reads of the image tables.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.identity.store().conn().await?)
    }

    /// The image `id`, whoever may see it.
    pub async fn get(&self, id: &str) -> Result<Option<Map<String, Value>>> {
        image_table::get(&mut *self.conn().await?, id).await
    }

    /// The images `c` may be shown (its project's, the public and
    /// community ones, those it is a member of; all for a reader of every
    /// project), oldest first.
    pub async fn listable(&self, c: &Caller) -> Result<Vec<Map<String, Value>>> {
        let project = (!c.is_reader_everywhere()).then(|| c.project_id().unwrap_or(""));
        image_table::candidates(&mut *self.conn().await?, project).await
    }

    /// The public images.
    pub async fn public(&self) -> Result<Vec<Map<String, Value>>> {
        image_table::public(&mut *self.conn().await?).await
    }

    /// The images project `owner` owns.
    pub async fn owned_by(&self, owner: &str) -> Result<Vec<Map<String, Value>>> {
        image_table::of_owner(&mut *self.conn().await?, owner).await
    }

    pub async fn members(&self, image_id: &str) -> Result<Vec<Map<String, Value>>> {
        image_table::members(&mut *self.conn().await?, image_id).await
    }

    pub async fn member(
        &self,
        image_id: &str,
        project: &str,
    ) -> Result<Option<Map<String, Value>>> {
        image_table::member(&mut *self.conn().await?, image_id, project).await
    }

    /// The caller's relation to an image (its membership read only for a
    /// shared image: only those have members).
    pub async fn access(&self, c: &Caller, img: &Map<String, Value>) -> Result<Access> {
        let project = c.project_id().unwrap_or("");
        let member_status = if project.is_empty() || s(img, "visibility") != "shared" {
            None
        } else {
            self.member(s(img, "id"), project)
                .await?
                .map(|m| s(&m, "status").to_string())
        };
        Ok(access_given(c, img, member_status))
    }

    /// The status of each membership of `project` (by image), read at once
    /// for a list.
    pub async fn memberships(
        &self,
        project: &str,
    ) -> Result<std::collections::HashMap<String, String>> {
        Ok(image_table::memberships(&mut *self.conn().await?, project)
            .await?
            .iter()
            .map(|m| (s(m, "image_id").to_string(), s(m, "status").to_string()))
            .collect())
    }

    /// The image if the caller may see it, else 404 (never 403: one
    /// project does not learn of another's private images).
    pub async fn visible(&self, c: &Caller, id: &str) -> Result<(Map<String, Value>, Access)> {
        let img = self
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("No image found with ID {id}")))?;
        let a = self.access(c, &img).await?;
        if !a.visible {
            return Err(Error::NotFound(format!("No image found with ID {id}")));
        }
        Ok((img, a))
    }

    /// Stores an image record (whole).
    pub async fn put(&self, img: Map<String, Value>) -> Result<Map<String, Value>> {
        let mut w = self.identity.write().await?;
        image_table::put(w.tx(), &img).await?;
        w.commit(&[]).await?;
        Ok(img)
    }

    /// Changes a record inside one write: `f` sees the stored one.
    pub async fn update(
        &self,
        id: &str,
        mut f: impl FnMut(&mut Map<String, Value>) -> Result<()>,
    ) -> Result<Map<String, Value>> {
        let mut w = self.identity.write().await?;
        let mut img = image_table::get(w.tx().conn(), id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("No image found with ID {id}")))?;
        f(&mut img)?;
        img.insert("updated_at".into(), json!(now()));
        image_table::put(w.tx(), &img).await?;
        w.commit(&[]).await?;
        Ok(img)
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        let mut w = self.identity.write().await?;
        image_table::delete(w.tx(), id).await?;
        w.commit(&[]).await?;
        self.store.remove(id).await;
        Ok(())
    }

    pub async fn put_member(&self, m: Map<String, Value>) -> Result<()> {
        let mut w = self.identity.write().await?;
        image_table::put_member(w.tx(), &m).await?;
        w.commit(&[]).await
    }

    pub async fn delete_member(&self, image_id: &str, project: &str) -> Result<()> {
        let mut w = self.identity.write().await?;
        image_table::delete_member(w.tx(), image_id, project).await?;
        w.commit(&[]).await
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
