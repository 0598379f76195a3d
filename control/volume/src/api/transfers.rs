//! transfers: Cinder's volume transfers (`/os-volume-transfer`, and
//! `/volume-transfers` from 3.55 with `no_snapshots`; 3.57 shows the
//! source and destination projects). A transfer is a row of
//! `vol_records` (kind `volume_transfer`, the source project's); while it
//! is pending the volume is `awaiting-transfer`. Accepting it with its
//! auth key (kept only as a salted SHA-256) moves the volume (and its
//! snapshots unless `no_snapshots`) to the caller's project in one write,
//! within that project's quota.

use super::*;
use crate::record_table;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::TRANSFER;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    transfer: NewTransfer,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTransfer {
    volume_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    no_snapshots: Flag,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    accept: Accept,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Accept {
    auth_key: String,
}

/// The microversion a transfer is shown at: `/volume-transfers` (3.55+)
/// shows the fields of its version; `/os-volume-transfer` keeps the
/// original view at any version, as Cinder's two controllers do.
fn api_version(uri: &axum::http::Uri, mv: Micro) -> Result<Micro> {
    if !uri.path().contains("/volume-transfers") {
        return Ok(Micro(0));
    }
    if mv.0 < 55 {
        return Err(Error::NotFound(
            "/volume-transfers needs microversion 3.55.".into(),
        ));
    }
    Ok(mv)
}

fn hash(salt: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(key.as_bytes());
    ursa_image::hex(&h.finalize())
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    ursa_image::hex(&b)
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("Transfer {id} could not be found."))
}

fn view(state: &AppState, t: &Rec, mv: Micro, detail: bool) -> Value {
    let id = st(t, "id");
    let mut v = json!({"id": id, "name": t.get("name"), "volume_id": st(t, "volume_id"),
        "links": [{"href": format!("{}/volume/v3/{}/os-volume-transfer/{id}", state.base_url, st(t, "project_id")), "rel": "self"}]});
    if detail {
        v["created_at"] = json!(st(t, "created_at"));
    }
    if mv.0 >= 55 {
        v["no_snapshots"] = json!(t.get("no_snapshots") == Some(&json!(true)));
    }
    if mv.0 >= 57 {
        v["source_project_id"] = json!(st(t, "project_id"));
        v["destination_project_id"] = t
            .get("destination_project_id")
            .cloned()
            .unwrap_or(Value::Null);
        v["accepted"] = json!(t.get("accepted") == Some(&json!(true)));
    }
    v
}

async fn find_transfer(s: &Volumes, auth: &Auth, id: &str) -> Result<Rec> {
    s.record(TRANSFER, id)
        .await?
        .filter(|t| may_see(auth, t))
        .ok_or_else(|| not_found(id))
}

pub(super) async fn create_transfer(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Result<Response> {
    let mv = api_version(&uri, mv)?;
    let s = svc(&state)?;
    write_access(&auth)?;
    let n = parse_body::<CreateBody>(&body)?.transfer;
    if n.name.as_ref().is_some_and(|x| x.chars().count() > 255) {
        return Err(Error::BadRequest(
            "Invalid input for field/attribute name: longer than 255 characters.".into(),
        ));
    }
    if n.no_snapshots.0 && mv.0 < 55 {
        return Err(Error::BadRequest(
            "Invalid input for the transfer: no_snapshots needs microversion 3.55.".into(),
        ));
    }
    let vol = find(s, &auth, VOLUME, &n.volume_id).await?;
    let key = random_hex(8);
    let salt = random_hex(8);
    let id = uuid::Uuid::new_v4().to_string();
    let t = json!({"id": id, "name": n.name, "volume_id": n.volume_id,
        "project_id": st(&vol, "project_id"), "status": "pending", "created_at": now(),
        "no_snapshots": n.no_snapshots.0, "destination_project_id": null, "accepted": false,
        "ursa:salt": salt, "ursa:hash": hash(&salt, &key)});
    let t = t.as_object().cloned().unwrap_or_default();
    // One write: the volume must still be available, and becomes
    // awaiting-transfer with the transfer stored.
    let mut w = s.identity.write().await?;
    let mut v = record_table::get(w.tx().conn(), VOLUME, &n.volume_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("Volume {} could not be found.", n.volume_id)))?;
    if st(&v, "status") != "available" {
        return Err(Error::BadRequest(format!(
            "Invalid volume: Status of volume {} must be available to transfer, but the current status is: {}.",
            n.volume_id,
            st(&v, "status")
        )));
    }
    v.insert("status".into(), json!("awaiting-transfer"));
    v.insert("updated_at".into(), json!(now()));
    record_table::put(w.tx(), VOLUME, &v).await?;
    record_table::put(w.tx(), TRANSFER, &t).await?;
    w.commit(&[]).await?;
    let mut out = view(&state, &t, mv, true);
    out["auth_key"] = json!(key);
    Ok((StatusCode::ACCEPTED, Json(json!({"transfer": out}))).into_response())
}

async fn list_any(
    state: &AppState,
    auth: &Auth,
    mv: Micro,
    q: &HashMap<String, String>,
    detail: bool,
) -> Result<Json<Value>> {
    let s = svc(state)?;
    let all = auth.0.is_reader_everywhere() && q.contains_key("all_tenants");
    let f = record_table::Filter {
        project: if all { None } else { Some(project(auth)?) },
        ..Default::default()
    };
    let list: Vec<Value> = s
        .records(TRANSFER, &f)
        .await?
        .iter()
        .filter(|t| {
            q.get("name")
                .is_none_or(|n| t.get("name") == Some(&json!(n)))
        })
        .filter(|t| q.get("volume_id").is_none_or(|v| st(t, "volume_id") == v))
        .map(|t| view(state, t, mv, detail))
        .collect();
    Ok(Json(json!({"transfers": list})))
}

pub(super) async fn list_transfers(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    uri: axum::http::Uri,
    q: Query,
) -> Result<Json<Value>> {
    let mv = api_version(&uri, mv)?;
    list_any(&state, &auth, mv, &q.0, false).await
}

pub(super) async fn list_transfers_detail(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    uri: axum::http::Uri,
    q: Query,
) -> Result<Json<Value>> {
    let mv = api_version(&uri, mv)?;
    list_any(&state, &auth, mv, &q.0, true).await
}

pub(super) async fn show_transfer(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    uri: axum::http::Uri,
    Path(p): Params,
) -> Result<Json<Value>> {
    let mv = api_version(&uri, mv)?;
    let s = svc(&state)?;
    let t = find_transfer(s, &auth, &p["id"]).await?;
    Ok(Json(json!({"transfer": view(&state, &t, mv, true)})))
}

/// Cancels a transfer: the volume is available to its owner again.
pub(super) async fn delete_transfer(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Params,
) -> Result<Response> {
    let s = svc(&state)?;
    write_access(&auth)?;
    let t = find_transfer(s, &auth, &p["id"]).await?;
    let mut w = s.identity.write().await?;
    if let Some(mut v) = record_table::get(w.tx().conn(), VOLUME, st(&t, "volume_id")).await? {
        if st(&v, "status") == "awaiting-transfer" {
            v.insert("status".into(), json!("available"));
            v.insert("updated_at".into(), json!(now()));
            record_table::put(w.tx(), VOLUME, &v).await?;
        }
    }
    record_table::delete(w.tx(), TRANSFER, st(&t, "id")).await?;
    w.commit(&[]).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

/// Accepts a transfer with its auth key: the volume (and its snapshots,
/// unless the transfer said `no_snapshots`) become the caller project's.
pub(super) async fn accept_transfer(
    State(state): State<AppState>,
    auth: Auth,
    Extension(mv): Mv,
    uri: axum::http::Uri,
    Path(p): Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    let mv = api_version(&uri, mv)?;
    let s = svc(&state)?;
    write_access(&auth)?;
    let dest = project(&auth)?;
    let a = parse_body::<AcceptBody>(&body)?.accept;
    let id = p["id"].clone();
    let quota = quota_of(s, &dest);
    let mut w = s.identity.write().await?;
    let t = record_table::get(w.tx().conn(), TRANSFER, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    if hash(st(&t, "ursa:salt"), &a.auth_key) != st(&t, "ursa:hash") {
        return Err(Error::BadRequest(format!(
            "Invalid auth key: Attempt to transfer {id} with invalid auth key."
        )));
    }
    let vid = st(&t, "volume_id").to_string();
    let mut v = record_table::get(w.tx().conn(), VOLUME, &vid)
        .await?
        .ok_or_else(|| Error::NotFound(format!("Volume {vid} could not be found.")))?;
    if st(&v, "status") != "awaiting-transfer" {
        return Err(Error::BadRequest(format!(
            "Invalid volume: Transfer {id} failed: the volume is {}.",
            st(&v, "status")
        )));
    }
    let size = v.get("size").and_then(|x| x.as_u64()).unwrap_or(0);
    let mine = record_table::Filter {
        project: Some(dest.clone()),
        ..Default::default()
    };
    let theirs = record_table::select(w.tx().conn(), VOLUME, &mine).await?;
    let used: u64 = theirs.iter().filter_map(|x| x.get("size")?.as_u64()).sum();
    let (qv, qg) = (limit(&quota, "volumes"), limit(&quota, "gigabytes"));
    if (qv >= 0 && theirs.len() as i64 + 1 > qv) || (qg >= 0 && (used + size) as i64 > qg) {
        return Err(Error::PayloadTooLarge(format!(
            "VolumeLimitExceeded: the volume {vid} ({size}G) does not fit project {dest}'s quota."
        )));
    }
    let t_now = now();
    let move_to = |r: &mut Rec| {
        r.insert("project_id".into(), json!(dest));
        r.insert("user_id".into(), json!(auth.0.user_id));
        r.insert("updated_at".into(), json!(t_now));
    };
    move_to(&mut v);
    v.insert("status".into(), json!("available"));
    record_table::put(w.tx(), VOLUME, &v).await?;
    if t.get("no_snapshots") != Some(&json!(true)) {
        let of = record_table::Filter {
            volume: Some(vid.clone()),
            ..Default::default()
        };
        for mut sn in record_table::select(w.tx().conn(), SNAPSHOT, &of).await? {
            move_to(&mut sn);
            record_table::put(w.tx(), SNAPSHOT, &sn).await?;
        }
    }
    record_table::delete(w.tx(), TRANSFER, &id).await?;
    w.commit(&[]).await?;
    let mut done = t.clone();
    done.insert("destination_project_id".into(), json!(dest));
    done.insert("accepted".into(), json!(true));
    let mut out = view(&state, &done, mv, false);
    if let Some(o) = out.as_object_mut() {
        o.retain(|k, _| matches!(k.as_str(), "id" | "name" | "volume_id" | "links"));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"transfer": out}))).into_response())
}
