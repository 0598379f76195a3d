//! Sessions and failed-login counters, as rows of the control plane's
//! database (`dash_sessions`, `dash_login_failures`), so that any
//! controller serves any session and a restart logs nobody out.
//!
//! The browser holds a random 256-bit cookie; the table is keyed by its
//! SHA-256, so reading the database hands out no working cookie. A session
//! carries the user's unscoped token (to switch projects), the scoped
//! token every API call goes out with, and the CSRF token every form and
//! non-GET request must carry. It ends when its token does.

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use ursa_core::store::Store;

/// The dashboard's migrations (versions 6000 and up).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store: {0}")]
    Store(#[from] ursa_core::store::StoreError),
}

pub type Result<T> = std::result::Result<T, SessionError>;

/// A project the user can switch to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectRef {
    pub id: String,
    pub name: String,
}

/// What the session knows beyond its tokens (one JSON column).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Detail {
    pub project_name: String,
    pub projects: Vec<ProjectRef>,
    pub roles: Vec<String>,
    /// The scoped token's catalog, by service type.
    pub services: Vec<String>,
}

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 of the cookie, hex.
    pub key: String,
    pub user_id: String,
    pub user_name: String,
    pub domain: String,
    pub unscoped: String,
    pub token: String,
    pub project_id: String,
    pub csrf: String,
    pub detail: Detail,
    pub expires_ms: i64,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.detail.roles.iter().any(|r| r == "admin")
    }

    pub fn has(&self, service: &str) -> bool {
        self.detail.services.iter().any(|s| s == service)
    }
}

/// A fresh random secret (cookie or CSRF token), URL-safe.
pub fn secret() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The table key of a cookie.
pub fn key_of(cookie: &str) -> String {
    let d = Sha256::digest(cookie.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal strings, compared in time that does not depend on where they
/// differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub async fn migrate(store: &Store) -> Result<()> {
    store.migrate(&MIGRATOR).await?;
    Ok(())
}

/// Stores a new session; returns nothing (the caller holds the cookie).
pub async fn insert(store: &Store, s: &Session) -> Result<()> {
    sqlx::query(
        "INSERT INTO dash_sessions (key, user_id, user_name, domain, unscoped, token, \
         project_id, csrf, detail, expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&s.key)
    .bind(&s.user_id)
    .bind(&s.user_name)
    .bind(&s.domain)
    .bind(&s.unscoped)
    .bind(&s.token)
    .bind(&s.project_id)
    .bind(&s.csrf)
    .bind(serde_json::to_string(&s.detail).unwrap_or_default())
    .bind(s.expires_ms)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// The live session of a cookie; an expired one is deleted and absent.
pub async fn find(store: &Store, cookie: &str) -> Result<Option<Session>> {
    let key = key_of(cookie);
    let row = sqlx::query(
        "SELECT user_id, user_name, domain, unscoped, token, project_id, csrf, detail, \
         expires_ms FROM dash_sessions WHERE key = $1",
    )
    .bind(&key)
    .fetch_optional(store.pool())
    .await?;
    let Some(r) = row else { return Ok(None) };
    let s = Session {
        key,
        user_id: r.try_get(0)?,
        user_name: r.try_get(1)?,
        domain: r.try_get(2)?,
        unscoped: r.try_get(3)?,
        token: r.try_get(4)?,
        project_id: r.try_get(5)?,
        csrf: r.try_get(6)?,
        detail: serde_json::from_str(&r.try_get::<String, _>(7)?).unwrap_or_default(),
        expires_ms: r.try_get(8)?,
    };
    if s.expires_ms <= now_ms() {
        delete(store, &s.key).await?;
        return Ok(None);
    }
    Ok(Some(s))
}

/// Points the session at another project's token.
pub async fn rescope(store: &Store, s: &Session) -> Result<()> {
    sqlx::query(
        "UPDATE dash_sessions SET token = $1, project_id = $2, detail = $3, expires_ms = $4 \
         WHERE key = $5",
    )
    .bind(&s.token)
    .bind(&s.project_id)
    .bind(serde_json::to_string(&s.detail).unwrap_or_default())
    .bind(s.expires_ms)
    .bind(&s.key)
    .execute(store.pool())
    .await?;
    Ok(())
}

pub async fn delete(store: &Store, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM dash_sessions WHERE key = $1")
        .bind(key)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Removes every session whose token has expired (an indexed range).
pub async fn prune(store: &Store) -> Result<u64> {
    let r = sqlx::query("DELETE FROM dash_sessions WHERE expires_ms <= $1")
        .bind(now_ms())
        .execute(store.pool())
        .await?;
    Ok(r.rows_affected())
}

/// Failed logins in a row before each further attempt waits.
pub const FREE_FAILURES: i64 = 3;
/// The longest wait between attempts, in seconds.
pub const MAX_WAIT_S: i64 = 300;

/// How long (ms) this user must still wait before a password is checked:
/// after [`FREE_FAILURES`] failures in a row, 2^(n-3) seconds from the
/// last one, up to [`MAX_WAIT_S`]. Counted per user, in the database, so
/// every controller slows the same guesser.
pub async fn wait_ms(store: &Store, who: &str) -> Result<i64> {
    let row = sqlx::query("SELECT failures, last_ms FROM dash_login_failures WHERE who = $1")
        .bind(who)
        .fetch_optional(store.pool())
        .await?;
    let Some(r) = row else { return Ok(0) };
    let (n, last): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
    if n < FREE_FAILURES {
        return Ok(0);
    }
    let wait = (1i64 << (n - FREE_FAILURES).min(20)).min(MAX_WAIT_S) * 1000;
    Ok((last + wait - now_ms()).max(0))
}

pub async fn failed(store: &Store, who: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO dash_login_failures (who, failures, last_ms) VALUES ($1, 1, $2) \
         ON CONFLICT (who) DO UPDATE SET failures = dash_login_failures.failures + 1, \
         last_ms = excluded.last_ms",
    )
    .bind(who)
    .bind(now_ms())
    .execute(store.pool())
    .await?;
    Ok(())
}

pub async fn succeeded(store: &Store, who: &str) -> Result<()> {
    sqlx::query("DELETE FROM dash_login_failures WHERE who = $1")
        .bind(who)
        .execute(store.pool())
        .await?;
    Ok(())
}
