//! Key pairs.

use super::*;

pub(super) fn keypair_id(user: &str, name: &str) -> String {
    format!("{user}/{name}")
}

/// Nova's fingerprint: MD5 of the key blob, colon-separated.
pub(super) fn fingerprint(public_key: &str) -> Result<String> {
    use md5::Digest;
    ssh_key::PublicKey::from_openssh(public_key.trim())
        .map_err(|e| Error::BadRequest(format!("Keypair data is invalid: {e}")))?;
    let blob = public_key
        .split_whitespace()
        .nth(1)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or_else(|| {
            Error::BadRequest("Keypair data is invalid: failed to generate fingerprint".into())
        })?;
    let d = md5::Md5::digest(&blob);
    Ok(d.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// A key pair as microversion 2.1 shows it (no `type`: that is 2.2).
pub(super) fn keypair_view(k: &Rec, with_private: bool) -> Value {
    let mut v = json!({"name": k["name"], "public_key": k["public_key"], "fingerprint": k["fingerprint"],
                       "user_id": k["user_id"]});
    if with_private {
        v["private_key"] = k.get("ursa:private_key").cloned().unwrap_or(Value::Null);
    }
    v
}

pub(super) async fn list_keypairs(State(app): State<AppState>, auth: Auth) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let v: Vec<Value> = s
        .docs(KEYPAIR)
        .iter()
        .filter(|k| st(k, "user_id") == auth.0.user_id)
        .map(|k| json!({"keypair": {"name": k["name"], "public_key": k["public_key"], "fingerprint": k["fingerprint"]}}))
        .collect();
    Ok(Json(json!({"keypairs": v})))
}

pub(super) async fn create_keypair(
    State(app): State<AppState>,
    auth: Auth,
    bytes: Bytes,
) -> Result<Response> {
    let s = svc(&app)?;
    let b = body_obj(&bytes, "keypair")?;
    let name = b
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    if name.trim().is_empty()
        || name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_. @".contains(c))
    {
        return Err(Error::BadRequest(
            "Keypair data is invalid: Keypair name contains unsafe characters".into(),
        ));
    }
    let user = auth.0.user_id.clone();
    let (public, private) = match b.get("public_key").and_then(|v| v.as_str()) {
        Some(p) => (p.trim().to_string(), None),
        None => {
            let k = ssh_key::PrivateKey::random(
                &mut ssh_key::rand_core::OsRng,
                ssh_key::Algorithm::Ed25519,
            )
            .map_err(|e| Error::Internal(format!("key generation: {e}")))?;
            let public = k
                .public_key()
                .to_openssh()
                .map_err(|e| Error::Internal(e.to_string()))?;
            let private = k
                .to_openssh(ssh_key::LineEnding::LF)
                .map_err(|e| Error::Internal(e.to_string()))?
                .to_string();
            (public, Some(private))
        }
    };
    let fp = fingerprint(&public)?;
    let id = keypair_id(&user, &name);
    let mut k = json!({"id": id, "name": name, "user_id": user, "public_key": public,
                       "fingerprint": fp, "type": b.get("type").cloned().unwrap_or(json!("ssh")),
                       "created_at": now()})
    .as_object()
    .cloned()
    .unwrap_or_default();
    let view = {
        let mut k2 = k.clone();
        if let Some(p) = &private {
            k2.insert("ursa:private_key".into(), json!(p));
        }
        keypair_view(&k2, private.is_some())
    };
    k.remove("ursa:private_key");
    let (id2, user2) = (id.clone(), user.clone());
    s.identity
        .change(move |m| {
            if m.doc(KEYPAIR, &id2).is_some() {
                return Err(Error::Conflict(format!(
                    "Key pair '{}' already exists.",
                    id2.rsplit('/').next().unwrap_or("")
                )));
            }
            let n = m
                .docs_of(KEYPAIR)
                .filter(|x| x["user_id"] == user2.as_str())
                .count() as i64;
            if n >= QUOTA_KEYPAIRS {
                return Err(Error::Forbidden(
                    "Quota exceeded, too many key pairs.".into(),
                ));
            }
            Ok((
                vec![ursa_core::store::Op::put(
                    KEYPAIR,
                    &id2,
                    "",
                    &id2,
                    Value::Object(k.clone()),
                )],
                (),
            ))
        })
        .await?;
    Ok(Json(json!({"keypair": view})).into_response())
}

pub(super) async fn show_keypair(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let name = param(&p, "name");
    let k = s
        .doc(KEYPAIR, &keypair_id(&auth.0.user_id, &name))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "Keypair {name} not found for user {}",
                auth.0.user_id
            ))
        })?;
    let mut v = keypair_view(&k, false);
    v["created_at"] = k["created_at"].clone();
    v["updated_at"] = Value::Null;
    v["deleted_at"] = Value::Null;
    v["deleted"] = json!(false);
    v["id"] = json!(1);
    Ok(Json(json!({"keypair": v})))
}

pub(super) async fn delete_keypair(
    State(app): State<AppState>,
    auth: Auth,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response> {
    let s = svc(&app)?;
    let name = param(&p, "name");
    let id = keypair_id(&auth.0.user_id, &name);
    if s.doc(KEYPAIR, &id).is_none() {
        return Err(Error::NotFound(format!(
            "Keypair {name} not found for user {}",
            auth.0.user_id
        )));
    }
    s.identity
        .change(move |_| Ok((vec![ursa_core::store::Op::delete(KEYPAIR, &id)], ())))
        .await?;
    Ok(empty(StatusCode::ACCEPTED))
}
