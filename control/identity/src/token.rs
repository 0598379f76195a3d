//! Tokens: stateless, encrypted and authenticated, in the spirit of
//! Keystone's Fernet tokens.
//!
//! A token is `base64url(version ‖ key_id ‖ nonce ‖ XChaCha20-Poly1305(payload))`
//! where the version byte and key id are authenticated as associated data and
//! the payload is a compact postcard encoding of [`Payload`]. Validation is a
//! decryption and a few lookups in memory: no database read.
//!
//! Keys live in `<state>/keys/` as files named by a number; the highest number
//! is the primary key that new tokens are encrypted with, and every key in the
//! directory decrypts. `ursa keys rotate` writes a new primary and removes the
//! oldest keys beyond `max_active`, so live tokens stay valid as long as
//! `max_active` rotations take longer than the token lifetime. A running
//! server notices rotated keys within seconds (it rereads the directory when
//! it changes, and whenever a token names a key id it does not know).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload as AeadPayload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

const VERSION: u8 = 1;
/// The first byte of a ticket ([`TokenCodec::seal_ticket`]).
const TICKET: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token was not issued by this cloud or was tampered with")]
    BadSeal,
    #[error("the ticket has expired")]
    Expired,
    #[error("key repository {path}: {source}")]
    Keys {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key repository {0} holds no key")]
    NoKeys(PathBuf),
}

/// How the token's holder authenticated (a bit per method).
pub mod method {
    pub const PASSWORD: u8 = 1;
    pub const TOKEN: u8 = 2;
    pub const APPLICATION_CREDENTIAL: u8 = 4;

    pub fn names(bits: u8) -> Vec<&'static str> {
        let mut v = Vec::new();
        if bits & PASSWORD != 0 {
            v.push("password");
        }
        if bits & TOKEN != 0 {
            v.push("token");
        }
        if bits & APPLICATION_CREDENTIAL != 0 {
            v.push("application_credential");
        }
        v
    }
}

pub use ursa_core::policy::Scope;

/// What a token carries. Everything else (names, roles, catalog) is looked
/// up in memory when the token is validated, so it is always current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub user_id: String,
    pub methods: u8,
    pub scope: Scope,
    /// µs since the epoch.
    pub issued_at: i64,
    pub expires_at: i64,
    /// This token's audit id first, then the one of the token it was
    /// re-scoped from, if any: revoking either revokes the chain.
    pub audit_ids: Vec<[u8; 16]>,
    pub app_cred_id: Option<String>,
}

impl Payload {
    pub fn audit_strings(&self) -> Vec<String> {
        self.audit_ids
            .iter()
            .map(|a| URL_SAFE_NO_PAD.encode(a))
            .collect()
    }
}

pub fn new_audit_id() -> [u8; 16] {
    let mut a = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut a);
    a
}

/// The key repository on disk.
#[derive(Debug, Clone)]
pub struct KeyRepo {
    dir: PathBuf,
}

impl KeyRepo {
    pub fn new(dir: impl Into<PathBuf>) -> KeyRepo {
        KeyRepo { dir: dir.into() }
    }

    fn err(&self, source: std::io::Error) -> TokenError {
        TokenError::Keys {
            path: self.dir.clone(),
            source,
        }
    }

    /// Creates the directory and a first key if there is none.
    pub fn ensure(&self) -> Result<(), TokenError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.err(e))?;
        set_mode(&self.dir, 0o700);
        if self.load()?.is_empty() {
            self.write_key(1)?;
        }
        Ok(())
    }

    fn write_key(&self, id: u32) -> Result<(), TokenError> {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        let tmp = self.dir.join(format!(".{id}.tmp"));
        std::fs::write(&tmp, URL_SAFE_NO_PAD.encode(k)).map_err(|e| self.err(e))?;
        set_mode(&tmp, 0o600);
        std::fs::rename(&tmp, self.dir.join(id.to_string())).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every key, by id.
    pub fn load(&self) -> Result<BTreeMap<u32, [u8; 32]>, TokenError> {
        let mut keys = BTreeMap::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
            Err(e) => return Err(self.err(e)),
        };
        for ent in rd {
            let ent = ent.map_err(|e| self.err(e))?;
            let Some(id) = ent.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let text = std::fs::read_to_string(ent.path()).map_err(|e| self.err(e))?;
            match URL_SAFE_NO_PAD.decode(text.trim()) {
                Ok(b) if b.len() == 32 => {
                    let mut k = [0u8; 32];
                    k.copy_from_slice(&b);
                    keys.insert(id, k);
                }
                _ => tracing::warn!(key = id, "ignoring unreadable token key"),
            }
        }
        Ok(keys)
    }

    /// Adds a new primary key and drops the oldest beyond `max_active`.
    /// Returns the new primary's id.
    pub fn rotate(&self, max_active: usize) -> Result<u32, TokenError> {
        self.ensure()?;
        let keys = self.load()?;
        let next = keys.keys().next_back().copied().unwrap_or(0) + 1;
        self.write_key(next)?;
        let mut ids: Vec<u32> = keys.keys().copied().collect();
        ids.push(next);
        let max_active = max_active.max(2);
        while ids.len() > max_active {
            let old = ids.remove(0);
            std::fs::remove_file(self.dir.join(old.to_string())).map_err(|e| self.err(e))?;
        }
        Ok(next)
    }

    /// A fingerprint of the directory, to notice rotation cheaply.
    fn fingerprint(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| n.parse::<u32>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

struct Ring {
    primary: u32,
    ciphers: BTreeMap<u32, XChaCha20Poly1305>,
    fingerprint: Vec<String>,
}

/// Seals and opens tokens with the keys of a [`KeyRepo`].
#[derive(Clone)]
pub struct TokenCodec {
    repo: KeyRepo,
    ring: Arc<RwLock<Arc<Ring>>>,
}

impl TokenCodec {
    pub fn open(repo: KeyRepo) -> Result<TokenCodec, TokenError> {
        repo.ensure()?;
        let ring = Self::read_ring(&repo)?;
        Ok(TokenCodec {
            repo,
            ring: Arc::new(RwLock::new(Arc::new(ring))),
        })
    }

    fn read_ring(repo: &KeyRepo) -> Result<Ring, TokenError> {
        let fingerprint = repo.fingerprint();
        let keys = repo.load()?;
        let primary = *keys
            .keys()
            .next_back()
            .ok_or_else(|| TokenError::NoKeys(repo.dir.clone()))?;
        let ciphers = keys
            .iter()
            .map(|(id, k)| (*id, XChaCha20Poly1305::new(k.into())))
            .collect();
        Ok(Ring {
            primary,
            ciphers,
            fingerprint,
        })
    }

    fn ring(&self) -> Arc<Ring> {
        self.ring.read().expect("key ring lock").clone()
    }

    /// Rereads the key directory if it changed since the last read.
    pub fn refresh(&self) {
        if self.repo.fingerprint() == self.ring().fingerprint {
            return;
        }
        match Self::read_ring(&self.repo) {
            Ok(r) => {
                tracing::info!(
                    primary = r.primary,
                    keys = r.ciphers.len(),
                    "token keys reloaded"
                );
                *self.ring.write().expect("key ring lock") = Arc::new(r);
            }
            Err(e) => tracing::error!(error = %e, "token keys not reloaded"),
        }
    }

    pub fn seal(&self, p: &Payload) -> String {
        let body = postcard::to_stdvec(p).expect("payload encodes");
        self.seal_raw(VERSION, b"", &body)
    }

    pub fn open_token(&self, token: &str) -> Result<Payload, TokenError> {
        let body = self.open_raw(VERSION, b"", token)?;
        postcard::from_bytes(&body).map_err(|_| TokenError::Malformed)
    }

    /// A ticket: `msg` sealed for `purpose` until `expires_at` (seconds
    /// since the epoch), which only a controller of this cloud can make or
    /// read (the URLs a compute node fetches an image from or uploads a
    /// snapshot to). It opens only for the same purpose, and never as a
    /// token.
    pub fn seal_ticket(&self, purpose: &str, msg: &str, expires_at: i64) -> String {
        let body = postcard::to_stdvec(&(msg, expires_at)).expect("ticket encodes");
        self.seal_raw(TICKET, purpose.as_bytes(), &body)
    }

    /// What a ticket sealed for `purpose` says, if it has not expired at
    /// `now`.
    pub fn open_ticket(&self, purpose: &str, ticket: &str, now: i64) -> Result<String, TokenError> {
        let body = self.open_raw(TICKET, purpose.as_bytes(), ticket)?;
        let (msg, expires_at): (String, i64) =
            postcard::from_bytes(&body).map_err(|_| TokenError::Malformed)?;
        if now > expires_at {
            return Err(TokenError::Expired);
        }
        Ok(msg)
    }

    /// `version`, the key id, a nonce, then `body` encrypted and
    /// authenticated (with the header and `purpose`) by the primary key.
    fn seal_raw(&self, version: u8, purpose: &[u8], body: &[u8]) -> String {
        let ring = self.ring();
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut head = [0u8; 5];
        head[0] = version;
        head[1..5].copy_from_slice(&ring.primary.to_be_bytes());
        let aad = [&head[..], purpose].concat();
        let ct = ring.ciphers[&ring.primary]
            .encrypt(
                XNonce::from_slice(&nonce),
                AeadPayload {
                    msg: body,
                    aad: &aad,
                },
            )
            .expect("encryption cannot fail");
        let mut out = Vec::with_capacity(5 + 24 + ct.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        URL_SAFE_NO_PAD.encode(out)
    }

    fn open_raw(&self, version: u8, purpose: &[u8], token: &str) -> Result<Vec<u8>, TokenError> {
        if token.len() > 1024 {
            return Err(TokenError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| TokenError::Malformed)?;
        if raw.len() < 5 + 24 + 16 || raw[0] != version {
            return Err(TokenError::Malformed);
        }
        let key_id = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]);
        let mut ring = self.ring();
        if !ring.ciphers.contains_key(&key_id) {
            self.refresh();
            ring = self.ring();
        }
        let cipher = ring.ciphers.get(&key_id).ok_or(TokenError::BadSeal)?;
        let aad = [&raw[..5], purpose].concat();
        cipher
            .decrypt(
                XNonce::from_slice(&raw[5..29]),
                AeadPayload {
                    msg: &raw[29..],
                    aad: &aad,
                },
            )
            .map_err(|_| TokenError::BadSeal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Payload {
        Payload {
            user_id: "u1".into(),
            methods: method::PASSWORD,
            scope: Scope::Project("p1".into()),
            issued_at: 1,
            expires_at: 2,
            audit_ids: vec![new_audit_id()],
            app_cred_id: None,
        }
    }

    #[test]
    fn tickets_open_for_their_purpose_until_they_expire() {
        let d = tempfile::tempdir().unwrap();
        let c = TokenCodec::open(KeyRepo::new(d.path().join("keys"))).unwrap();
        let t = c.seal_ticket("image-fetch", "img-1", 100);
        assert_eq!(c.open_ticket("image-fetch", &t, 99).unwrap(), "img-1");
        assert!(matches!(
            c.open_ticket("image-fetch", &t, 101),
            Err(TokenError::Expired)
        ));
        assert!(matches!(
            c.open_ticket("image-upload", &t, 99),
            Err(TokenError::BadSeal)
        ));
        assert!(c.open_token(&t).is_err());
        assert!(c.open_ticket("", &c.seal(&payload()), 0).is_err());
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let d = tempfile::tempdir().unwrap();
        let c = TokenCodec::open(KeyRepo::new(d.path().join("keys"))).unwrap();
        let p = payload();
        let t = c.seal(&p);
        assert_eq!(c.open_token(&t).unwrap(), p);
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let n = raw.len();
        raw[n - 1] ^= 1;
        assert!(matches!(
            c.open_token(&URL_SAFE_NO_PAD.encode(raw)),
            Err(TokenError::BadSeal)
        ));
        assert!(c.open_token("garbage!").is_err());
    }

    #[test]
    fn rotation_keeps_live_tokens() {
        let d = tempfile::tempdir().unwrap();
        let repo = KeyRepo::new(d.path().join("keys"));
        let c = TokenCodec::open(repo.clone()).unwrap();
        let t = c.seal(&payload());
        repo.rotate(3).unwrap();
        c.refresh();
        assert!(c.open_token(&t).is_ok(), "old key still decrypts");
        let t2 = c.seal(&payload());
        assert_ne!(t[..7], t2[..7], "new tokens use the new primary");
        repo.rotate(3).unwrap();
        repo.rotate(3).unwrap();
        c.refresh();
        assert!(c.open_token(&t).is_err(), "key 1 rotated out");
        assert!(c.open_token(&t2).is_ok());
    }
}
