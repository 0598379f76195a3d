//! Key pairs.

use super::*;

use crate::keypair_table::id as keypair_id;

/// An x509 certificate's fingerprint as Nova shows it: the SHA-1 of its
/// DER bytes, hex pairs joined by colons. The PEM must hold one
/// certificate (a DER SEQUENCE).
fn x509_fingerprint(pem: &str) -> Result<String> {
    use base64::Engine as _;
    use sha1::Digest as _;
    let bad = || Error::BadRequest("Keypair data is invalid: not a PEM x509 certificate.".into());
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN CERTIFICATE-----")
        .and_then(|r| r.trim_end().strip_suffix("-----END CERTIFICATE-----"))
        .ok_or_else(bad)?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad())?;
    if der.first() != Some(&0x30) || der.len() < 64 {
        return Err(bad());
    }
    let d = sha1::Sha1::digest(&der);
    Ok(d.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// A key pair Nova would generate for `type: x509` (below 2.92): a
/// self-signed client certificate for WinRM, its subject the user's id, a
/// UPN `<user>@localhost` as its alternative name, client authentication
/// as its extended use, valid ten years. Returns (certificate PEM, private
/// key PEM). Nova's key is RSA-2048; Ursa's is ECDSA P-256, which rcgen
/// makes without an RSA generator.
fn generate_x509(user: &str) -> Result<(String, String)> {
    use chrono::Datelike as _;
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
    let fail = |e: rcgen::Error| Error::Internal(format!("x509 key pair generation: {e}"));
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, user);
    // 1.3.6.1.4.1.311.20.2.3: Microsoft's user principal name.
    params.subject_alt_names = vec![SanType::OtherName((
        vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
        format!("{user}@localhost").into(),
    ))];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let today = chrono::Utc::now().date_naive();
    let (m, d) = (today.month() as u8, today.day().min(28) as u8);
    params.not_before = rcgen::date_time_ymd(today.year(), m, d);
    params.not_after = rcgen::date_time_ymd(today.year() + 10, m, d);
    let key = KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok((cert.pem(), key.serialize_pem()))
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

/// A key pair at version `mv` (2.2 adds its `type`).
pub(super) fn keypair_view(k: &Rec, with_private: bool, mv: Mv) -> Value {
    let mut v = json!({"name": k["name"], "public_key": k["public_key"], "fingerprint": k["fingerprint"],
                       "user_id": k["user_id"]});
    if with_private {
        v["private_key"] = k.get("ursa:private_key").cloned().unwrap_or(Value::Null);
    }
    if mv.at(2) {
        v["type"] = k.get("type").cloned().unwrap_or(json!("ssh"));
    }
    v
}

/// Whose key pairs a request is about: the caller's, or from 2.10 the
/// user an admin names (`user_id`).
fn owner(auth: &Auth, mv: Mv, asked: Option<&str>) -> Result<String> {
    match asked {
        Some(u) if u != auth.0.user_id => {
            if !mv.at(10) {
                return Ok(auth.0.user_id.clone());
            }
            if !auth.0.is_admin() {
                return Err(Error::Forbidden(
                    "Policy doesn't allow os_compute_api:os-keypairs to be performed for another user."
                        .into(),
                ));
            }
            Ok(u.to_string())
        }
        _ => Ok(auth.0.user_id.clone()),
    }
}

pub(super) async fn list_keypairs(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let q = query(&raw);
    let one = |k: &str| q.iter().rev().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    let user = owner(&auth, mv, one("user_id").as_deref())?;
    let mut links = None;
    // 2.35: pages by name.
    let (mut after, mut limit) = (None, None);
    if mv.at(35) {
        if let Some(m) = one("marker") {
            if s.keypair(&user, &m).await?.is_none() {
                return Err(Error::BadRequest(format!("marker [{m}] not found")));
            }
            after = Some(m);
        }
        if let Some(l) = one("limit") {
            let l: usize = l.parse().map_err(|_| {
                Error::BadRequest("Invalid input for query parameters limit.".into())
            })?;
            limit = Some(l);
        }
    }
    let mut keys = crate::keypair_table::of_user(
        &mut *s.conn().await?,
        &user,
        after.as_deref(),
        limit.map(|l| l + 1),
    )
    .await?;
    if let Some(l) = limit.filter(|l| keys.len() > *l) {
        keys.truncate(l);
        if let Some(last) = keys.last() {
            links = Some(json!([{"rel": "next", "href": format!(
                "{}/compute/v2.1/os-keypairs?limit={l}&marker={}", app.base_url, st(last, "name"))}]));
        }
    }
    let v: Vec<Value> = keys
        .iter()
        .map(|k| {
            let mut v = json!({"name": k["name"], "public_key": k["public_key"], "fingerprint": k["fingerprint"]});
            if mv.at(2) {
                v["type"] = k.get("type").cloned().unwrap_or(json!("ssh"));
            }
            json!({ "keypair": v })
        })
        .collect();
    let mut out = json!({ "keypairs": v });
    if let Some(l) = links {
        out["keypairs_links"] = l;
    }
    Ok(Json(out))
}

pub(super) async fn create_keypair(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
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
    let kind = match b.get("type") {
        None => json!("ssh"),
        Some(_) if !mv.at(2) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute keypair. Value: Additional properties are not allowed ('type' was unexpected)".into(),
            ))
        }
        Some(Value::String(t)) if t == "ssh" => json!("ssh"),
        Some(Value::String(t)) if t == "x509" => json!("x509"),
        Some(_) => {
            return Err(Error::BadRequest(
                "Invalid input for field/attribute type.".into(),
            ))
        }
    };
    let user = owner(&auth, mv, b.get("user_id").and_then(|u| u.as_str()))?;
    let (public, private) =
        match b.get("public_key").and_then(|v| v.as_str()) {
            Some(p) => (p.trim().to_string(), None),
            // 2.92: Nova no longer makes key pairs.
            None if mv.at(92) => return Err(Error::BadRequest(
                "Invalid input for field/attribute keypair: 'public_key' is a required property"
                    .into(),
            )),
            None if kind == "x509" => {
                let (cert, key) = generate_x509(&user)?;
                (cert, Some(key))
            }
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
    let fp = if kind == "x509" {
        x509_fingerprint(&public)?
    } else {
        fingerprint(&public)?
    };
    let id = keypair_id(&user, &name);
    let mut k = json!({"id": id, "name": name, "user_id": user, "public_key": public,
                       "fingerprint": fp, "type": kind,
                       "created_at": now()})
    .as_object()
    .cloned()
    .unwrap_or_default();
    let view = {
        let mut k2 = k.clone();
        if let Some(p) = &private {
            k2.insert("ursa:private_key".into(), json!(p));
        }
        keypair_view(&k2, private.is_some(), mv)
    };
    k.remove("ursa:private_key");
    {
        // Checked and stored in one write: two creates of a name, or past
        // the quota, cannot both pass.
        let mut w = s.identity.write().await?;
        if crate::keypair_table::get(w.tx().conn(), &id)
            .await?
            .is_some()
        {
            return Err(Error::Conflict(format!(
                "Key pair '{name}' already exists."
            )));
        }
        if crate::keypair_table::count(w.tx().conn(), &user).await? >= QUOTA_KEYPAIRS {
            return Err(Error::Forbidden(
                "Quota exceeded, too many key pairs.".into(),
            ));
        }
        crate::keypair_table::put(w.tx(), &k).await?;
        w.commit(&[]).await?;
    }
    // 2.2 fixed the status to 201.
    let status = if mv.at(2) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "keypair": view }))).into_response())
}

pub(super) async fn show_keypair(
    State(app): State<AppState>,
    auth: Auth,
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let s = svc(&app)?;
    let name = param(&p, "name");
    let q = query(&raw);
    let user = owner(
        &auth,
        mv,
        q.iter()
            .find(|(k, _)| k == "user_id")
            .map(|(_, v)| v.as_str()),
    )?;
    let k = s
        .keypair(&user, &name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("Keypair {name} not found for user {user}")))?;
    let mut v = keypair_view(&k, false, mv);
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
    mv: Mv,
    Path(p): Path<Vec<(String, String)>>,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let s = svc(&app)?;
    let name = param(&p, "name");
    let q = query(&raw);
    let user = owner(
        &auth,
        mv,
        q.iter()
            .find(|(k, _)| k == "user_id")
            .map(|(_, v)| v.as_str()),
    )?;
    let mut w = s.identity.write().await?;
    if !crate::keypair_table::delete(w.tx(), &keypair_id(&user, &name)).await? {
        return Err(Error::NotFound(format!(
            "Keypair {name} not found for user {user}"
        )));
    }
    w.commit(&[]).await?;
    // 2.2 fixed the status to 204.
    Ok(empty(if mv.at(2) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::ACCEPTED
    }))
}

#[cfg(test)]
mod x509_tests {
    /// A self-signed certificate and its SHA-1 fingerprint as
    /// `openssl x509 -fingerprint -sha1` prints it.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBfjCCASWgAwIBAgIUEJt82KK5mMFdu6xtx5lIu1V498gwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJdXJzYS10ZXN0MCAXDTI2MTIwNTIyMTg1N1oYDzIxMjYxMTEx
MjIxODU3WjAUMRIwEAYDVQQDDAl1cnNhLXRlc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAR9P/ZwfqPXZrg2jBuTGZHsGbQybwFwFHNFsRAx1CxiO+gK/GTHyjXb
ZnGUIt0aZaQg9860g/0H/A/hKb5H6xr2o1MwUTAdBgNVHQ4EFgQU9gqeuOqcrULq
0Z4zEHGSbHJZ5ucwHwYDVR0jBBgwFoAU9gqeuOqcrULq0Z4zEHGSbHJZ5ucwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiBLO4JT/jXMFbT8EghDwzLF
0ad3O4TRr9ktgNU8hhG3IwIgUdiy451b1slMWyHuWyQCCew9ZFfwssJ32ivYtj1E
nwY=
-----END CERTIFICATE-----
";

    #[test]
    fn generated_x509_is_a_certificate_with_its_key() {
        let (cert, key) = super::generate_x509("u-1").unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(super::x509_fingerprint(&cert).unwrap().len(), 59);
    }

    #[test]
    fn x509_fingerprint_is_sha1_of_der() {
        assert_eq!(
            super::x509_fingerprint(CERT).unwrap(),
            "6d:f9:96:73:9a:72:c4:ef:dc:e9:be:7e:7a:8c:e8:58:fd:8b:7b:d8"
        );
        assert!(super::x509_fingerprint("ssh-ed25519 AAAA").is_err());
        assert!(super::x509_fingerprint(
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----"
        )
        .is_err());
    }
}
