//! Images and image members as rows: `img_images` (owner, visibility and
//! creation time as indexed columns, the record as JSON) and
//! `img_members` (by image and member project). An image is read by id,
//! its members by image, and a list reads only what the caller may see;
//! nothing holds every image in memory.

use crate::{s, KIND, MEMBER};
use serde_json::{Map, Value};
use sqlx::AnyConnection;
use ursa_core::error::{Error, Result};
use ursa_core::store::{Store, WriteTx};

type Rec = Map<String, Value>;

/// The image service's migrations (versions 4000 and up).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

fn db(e: sqlx::Error) -> Error {
    Error::Internal(format!("database error: {e}"))
}

fn bodies(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<Rec>> {
    Ok(ursa_core::store::json_records(&rows, 0)?)
}

/// The image `id`.
pub async fn get(c: &mut AnyConnection, id: &str) -> Result<Option<Rec>> {
    let rows = sqlx::query("SELECT body FROM img_images WHERE id = $1")
        .bind(id)
        .fetch_all(c)
        .await
        .map_err(db)?;
    Ok(bodies(rows)?.pop())
}

/// The images a project may be shown, oldest first: its own, the public
/// and community ones and those it is a member of (the caller narrows
/// further by visibility, member status and filters); every image for
/// `None` (a reader of every project).
pub async fn candidates(c: &mut AnyConnection, project: Option<&str>) -> Result<Vec<Rec>> {
    let rows = match project {
        None => {
            sqlx::query("SELECT body FROM img_images ORDER BY created_at, id")
                .fetch_all(c)
                .await
        }
        Some(p) => {
            sqlx::query(
                "SELECT body FROM img_images WHERE owner = $1 OR visibility IN ('public', 'community') \
                 OR id IN (SELECT image_id FROM img_members WHERE member_id = $2) ORDER BY created_at, id",
            )
            .bind(p)
            .bind(p)
            .fetch_all(c)
            .await
        }
    }
    .map_err(db)?;
    bodies(rows)
}

/// The public images, oldest first.
pub async fn public(c: &mut AnyConnection) -> Result<Vec<Rec>> {
    let rows = sqlx::query(
        "SELECT body FROM img_images WHERE visibility = 'public' ORDER BY created_at, id",
    )
    .fetch_all(c)
    .await
    .map_err(db)?;
    bodies(rows)
}

/// The images project `owner` owns, oldest first.
pub async fn of_owner(c: &mut AnyConnection, owner: &str) -> Result<Vec<Rec>> {
    let rows = sqlx::query("SELECT body FROM img_images WHERE owner = $1 ORDER BY created_at, id")
        .bind(owner)
        .fetch_all(c)
        .await
        .map_err(db)?;
    bodies(rows)
}

/// The members of image `id`.
pub async fn members(c: &mut AnyConnection, id: &str) -> Result<Vec<Rec>> {
    let rows = sqlx::query("SELECT body FROM img_members WHERE image_id = $1 ORDER BY member_id")
        .bind(id)
        .fetch_all(c)
        .await
        .map_err(db)?;
    bodies(rows)
}

/// Project `member`'s memberships, of every image.
pub async fn memberships(c: &mut AnyConnection, member: &str) -> Result<Vec<Rec>> {
    let rows = sqlx::query("SELECT body FROM img_members WHERE member_id = $1")
        .bind(member)
        .fetch_all(c)
        .await
        .map_err(db)?;
    bodies(rows)
}

/// Project `member`'s membership of image `id`.
pub async fn member(c: &mut AnyConnection, id: &str, member: &str) -> Result<Option<Rec>> {
    let rows = sqlx::query("SELECT body FROM img_members WHERE image_id = $1 AND member_id = $2")
        .bind(id)
        .bind(member)
        .fetch_all(c)
        .await
        .map_err(db)?;
    Ok(bodies(rows)?.pop())
}

/// Stores an image (new or changed).
pub async fn put(w: &mut WriteTx, r: &Rec) -> Result<()> {
    sqlx::query(
        "INSERT INTO img_images (id, owner, visibility, created_at, body) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, visibility = excluded.visibility, \
         created_at = excluded.created_at, body = excluded.body",
    )
    .bind(s(r, "id"))
    .bind(s(r, "owner"))
    .bind(s(r, "visibility"))
    .bind(s(r, "created_at"))
    .bind(Value::Object(r.clone()).to_string())
    .execute(w.conn())
    .await
    .map_err(db)?;
    w.touch(KIND, s(r, "id"));
    Ok(())
}

/// Removes an image and its members.
pub async fn delete(w: &mut WriteTx, id: &str) -> Result<()> {
    for text in [
        "DELETE FROM img_members WHERE image_id = $1",
        "DELETE FROM img_images WHERE id = $1",
    ] {
        sqlx::query(text)
            .bind(id)
            .execute(w.conn())
            .await
            .map_err(db)?;
    }
    w.touch(KIND, id);
    Ok(())
}

/// Stores a membership (new or changed).
pub async fn put_member(w: &mut WriteTx, m: &Rec) -> Result<()> {
    sqlx::query(
        "INSERT INTO img_members (image_id, member_id, body) VALUES ($1, $2, $3) \
         ON CONFLICT (image_id, member_id) DO UPDATE SET body = excluded.body",
    )
    .bind(s(m, "image_id"))
    .bind(s(m, "member_id"))
    .bind(Value::Object(m.clone()).to_string())
    .execute(w.conn())
    .await
    .map_err(db)?;
    w.touch(
        MEMBER,
        &format!("{}:{}", s(m, "image_id"), s(m, "member_id")),
    );
    Ok(())
}

/// Removes a membership.
pub async fn delete_member(w: &mut WriteTx, id: &str, member: &str) -> Result<()> {
    sqlx::query("DELETE FROM img_members WHERE image_id = $1 AND member_id = $2")
        .bind(id)
        .bind(member)
        .execute(w.conn())
        .await
        .map_err(db)?;
    w.touch(MEMBER, &format!("{id}:{member}"));
    Ok(())
}

/// Creates the tables and moves image and member documents (the layout
/// before images were rows) into them, once: run at start before the
/// model is loaded.
pub async fn prepare_store(store: &Store) -> Result<usize> {
    store.migrate(&MIGRATOR).await?;
    let n = store
        .move_documents(&[KIND, MEMBER], async |w, kind, r| {
            if kind == KIND {
                put(w, r).await
            } else {
                put_member(w, r).await
            }
        })
        .await?;
    if n > 0 {
        tracing::info!(
            records = n,
            "moved the images and members into their tables"
        );
    }
    Ok(n)
}
