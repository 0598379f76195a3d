//! Identity: Keystone v3 for Ursa.
//!
//! - [`model`]: the whole identity state in memory, patched by the same
//!   store operations that make it durable.
//! - [`token`]: stateless encrypted tokens and their key repository.
//! - [`password`]: argon2id hashing on the blocking pool.
//! - [`bootstrap`]: the admin, roles, region and catalog a new cloud needs.
//! - [`api`]: the HTTP handlers, one module per resource; they parse and
//!   check policy, then read the model or commit changes through [`Identity`].
//!
//! The policy rules and the [`Caller`] live in `ursa-core`, which every
//! service shares; the in-memory model is still, for now, where every
//! service keeps its records (documents by kind, written through
//! [`Identity::change`]).
//!
//! Reads never touch the database: the model is loaded at start and every
//! change is written to the store first and then applied to memory. Writers
//! are serialised, so a change is computed against the state it replaces;
//! writes that wait for each other share one commit ([`Writer`], see the
//! `write` module).

pub mod api;
pub mod bootstrap;
pub mod model;
pub mod password;
pub mod token;
mod write;

pub use write::Writer;

use model::{AppCred, Model, Revocation, RevokeBy, Target};
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;
use token::{method, new_audit_id, Payload, Scope, TokenCodec};
use ursa_core::error::{Error, Result};
use ursa_core::policy::Caller;
use ursa_core::store::{Op, Store};

/// What the identity API's handlers share.
#[derive(Clone)]
pub struct AppState {
    pub identity: Identity,
    /// Base URL clients reach us at, without a trailing slash
    /// (e.g. `http://127.0.0.1:5000`).
    pub base_url: String,
}

impl AppState {
    pub fn v3(&self) -> String {
        format!("{}/v3", self.base_url)
    }
}

impl ursa_core::http::Authenticate for AppState {
    fn authenticate(&self, token: &str) -> Result<Caller> {
        self.identity.caller(token)
    }
}

/// A token that does not open is not found (404, as Keystone answers for
/// a subject token it cannot read); any other token failure is ours.
impl From<token::TokenError> for Error {
    fn from(e: token::TokenError) -> Error {
        match e {
            token::TokenError::Malformed
            | token::TokenError::BadSeal
            | token::TokenError::Expired => Error::NotFound(e.to_string()),
            _ => Error::Internal(e.to_string()),
        }
    }
}

/// Settings of the identity service.
#[derive(Debug, Clone)]
pub struct Settings {
    pub token_ttl: Duration,
    pub password_cost: password::Cost,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            token_ttl: Duration::from_secs(3600),
            password_cost: password::Cost::default(),
        }
    }
}

/// The identity service: state, tokens and passwords.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    model: RwLock<Model>,
    writer: Arc<tokio::sync::Mutex<write::Slot>>,
    /// Writes waiting for `writer` (see [`write`]).
    waiting: std::sync::atomic::AtomicUsize,
    codec: TokenCodec,
    hasher: password::Hasher,
    settings: Settings,
}

pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// What a token authenticates, once validated against current state.
#[derive(Debug, Clone)]
pub struct Validated {
    pub payload: Payload,
    /// Role ids on the scope, implied roles included.
    pub role_ids: Vec<String>,
}

/// A request to authenticate (`POST /v3/auth/tokens`), already parsed.
#[derive(Debug, Clone)]
pub enum Proof {
    Password {
        user: UserRef,
        password: String,
    },
    Token(String),
    AppCred {
        id: Option<String>,
        name: Option<String>,
        user: Option<UserRef>,
        secret: String,
    },
}

#[derive(Debug, Clone)]
pub enum UserRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

#[derive(Debug, Clone)]
pub enum DomainRef {
    Id(String),
    Name(String),
}

#[derive(Debug, Clone)]
pub enum ScopeRequest {
    None,
    ProjectId(String),
    ProjectName { name: String, domain: DomainRef },
    Domain(DomainRef),
    System,
}

fn unauthorized() -> Error {
    Error::Unauthorized("The request you have made requires authentication.".into())
}

impl Identity {
    /// Loads the identity state from the store.
    pub async fn open(store: Store, codec: TokenCodec, settings: Settings) -> Result<Identity> {
        let (rev, docs) = store.load_all().await?;
        let mut model = Model::default();
        for d in docs {
            model.apply(&Op::Put(d));
        }
        let hasher = password::Hasher::new(settings.password_cost).map_err(Error::BadRequest)?;
        Ok(Identity {
            inner: Arc::new(Inner {
                store,
                model: RwLock::new(model),
                writer: Arc::new(tokio::sync::Mutex::new(write::Slot::new(rev))),
                waiting: Default::default(),
                codec,
                hasher,
                settings,
            }),
        })
    }

    pub fn model(&self) -> RwLockReadGuard<'_, Model> {
        self.inner.model.read().expect("model lock")
    }

    /// The store the identity state (and, for now, every service's
    /// records) is kept in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn codec(&self) -> &TokenCodec {
        &self.inner.codec
    }

    pub fn hasher(&self) -> &password::Hasher {
        &self.inner.hasher
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Computes a change against the current state and makes it durable,
    /// then visible. `f` sees the model as it is under the write lock.
    ///
    /// The write holds the store's revision row from the start (see
    /// [`Identity::write`]), so with several controllers on one database
    /// the writes take turns instead of colliding: `f` always runs against
    /// what is really stored, and no client ever sees a conflict that is
    /// only another controller's concurrent write.
    pub async fn change<T>(&self, f: impl FnOnce(&Model) -> Result<(Vec<Op>, T)>) -> Result<T> {
        let w = self.write().await?;
        let (ops, out) = f(&w.model())?;
        w.commit(&ops).await?;
        Ok(out)
    }

    /// Replaces the model with the store's content; returns its revision.
    async fn reload(&self) -> Result<i64> {
        let (rev, docs) = self.inner.store.load_all().await?;
        let mut model = Model::default();
        for d in docs {
            model.apply(&Op::Put(d));
        }
        *self.inner.model.write().expect("model lock") = model;
        Ok(rev)
    }

    /// Brings the model up to the store's revision from `rev`: the change
    /// feed's deltas, or a whole reload when the feed does not reach back.
    async fn catch_up(&self, rev: i64) -> Result<i64> {
        match self.inner.store.changes_since(rev).await? {
            Some((now, ops)) => {
                let mut m = self.inner.model.write().expect("model lock");
                for op in &ops {
                    m.apply(op);
                }
                Ok(now)
            }
            None => {
                tracing::info!(
                    rev,
                    "the change feed does not reach back: reloading the store"
                );
                self.reload().await
            }
        }
    }

    /// Applies what other controllers changed in the store since this one
    /// last looked (deltas from the change feed).
    pub async fn sync_from_store(&self) -> Result<bool> {
        let mut slot = self.settled().await;
        let current = self.inner.store.revision().await?;
        if current == slot.rev {
            return Ok(false);
        }
        slot.rev = self.catch_up(slot.rev).await?;
        Ok(true)
    }

    /// Forgets the change feed beyond the last 100,000 revisions.
    pub async fn prune_changes(&self) -> Result<u64> {
        Ok(self.inner.store.prune_changes(100_000).await?)
    }

    /// Checks a token and the state it depends on: the user, the scope and
    /// the roles on it must all still be there, and no revocation matches.
    pub fn validate(&self, token: &str) -> Result<Validated> {
        let invalid = || Error::NotFound("The token is invalid, expired or revoked.".into());
        let p = self.inner.codec.open_token(token).map_err(|_| invalid())?;
        let now = now_us();
        if p.expires_at <= now {
            return Err(invalid());
        }
        let m = self.model();
        let audits = p.audit_strings();
        let project = match &p.scope {
            Scope::Project(id) => Some(id.as_str()),
            _ => None,
        };
        if m.is_revoked(&p.user_id, project, &audits, p.issued_at) {
            return Err(invalid());
        }
        let user = m.users.get(&p.user_id).ok_or_else(invalid)?;
        if !user.enabled || !m.domain(&user.domain_id).is_some_and(|d| d.enabled) {
            return Err(invalid());
        }
        let role_ids = scope_roles(&m, &p.user_id, &p.scope, p.app_cred_id.as_deref(), now)
            .ok_or_else(invalid)?;
        Ok(Validated {
            payload: p,
            role_ids,
        })
    }

    /// The caller behind a token, for policy checks.
    pub fn caller(&self, token: &str) -> Result<Caller> {
        let v = self.validate(token).map_err(|_| unauthorized())?;
        let m = self.model();
        let user_domain_id = m
            .users
            .get(&v.payload.user_id)
            .map(|u| u.domain_id.clone())
            .unwrap_or_default();
        let project_domain_id = match &v.payload.scope {
            Scope::Project(p) => m.projects.get(p).map(|p| p.domain_id.clone()),
            _ => None,
        };
        let roles = v
            .role_ids
            .iter()
            .filter_map(|r| m.roles.get(r).map(|r| r.name.clone()))
            .collect();
        Ok(Caller {
            user_id: v.payload.user_id.clone(),
            user_domain_id,
            scope: v.payload.scope.clone(),
            project_domain_id,
            roles,
            audit_ids: v.payload.audit_strings(),
            app_cred_id: v.payload.app_cred_id.clone(),
            access_rules: v
                .payload
                .app_cred_id
                .as_ref()
                .and_then(|a| m.app_creds.get(a))
                .filter(|a| !a.access_rules.is_empty())
                .map(|a| std::sync::Arc::new(a.access_rules.clone())),
        })
    }

    /// Authenticates and issues a token.
    pub async fn authenticate(
        &self,
        proofs: Vec<Proof>,
        scope: ScopeRequest,
    ) -> Result<(String, Validated)> {
        if proofs.is_empty() {
            return Err(Error::BadRequest(
                "identity.methods must name at least one method.".into(),
            ));
        }
        let now = now_us();
        let mut user_id: Option<String> = None;
        let mut methods = 0u8;
        let mut expires_at = now + self.inner.settings.token_ttl.as_micros() as i64;
        let mut parent_audit: Option<[u8; 16]> = None;
        let mut app_cred: Option<AppCred> = None;
        for proof in proofs {
            let uid = match proof {
                Proof::Password { user, password } => {
                    methods |= method::PASSWORD;
                    self.check_password(&user, &password).await?
                }
                Proof::Token(t) => {
                    methods |= method::TOKEN;
                    let v = self.validate(&t).map_err(|_| unauthorized())?;
                    if v.payload.app_cred_id.is_some() {
                        return Err(Error::Forbidden(
                            "A token created with an application credential cannot be re-scoped."
                                .into(),
                        ));
                    }
                    methods |= v.payload.methods;
                    expires_at = expires_at.min(v.payload.expires_at);
                    parent_audit = v.payload.audit_ids.first().copied();
                    v.payload.user_id
                }
                Proof::AppCred {
                    id,
                    name,
                    user,
                    secret,
                } => {
                    methods |= method::APPLICATION_CREDENTIAL;
                    let ac = self.check_app_cred(id, name, user, &secret)?;
                    if let Some(e) = ac.expires_at {
                        expires_at = expires_at.min(e);
                    }
                    let u = ac.user_id.clone();
                    app_cred = Some(ac);
                    u
                }
            };
            if user_id.as_ref().is_some_and(|u| *u != uid) {
                return Err(unauthorized());
            }
            user_id = Some(uid);
        }
        let user_id = user_id.ok_or_else(unauthorized)?;
        let scope = {
            let m = self.model();
            if let Some(ac) = &app_cred {
                if !matches!(scope, ScopeRequest::None) {
                    let wanted = resolve_scope(&m, &scope, &user_id)?;
                    if wanted != Scope::Project(ac.project_id.clone()) {
                        return Err(unauthorized());
                    }
                }
                Scope::Project(ac.project_id.clone())
            } else {
                resolve_scope(&m, &scope, &user_id)?
            }
        };
        let mut audit_ids = vec![new_audit_id()];
        audit_ids.extend(parent_audit);
        let payload = Payload {
            user_id,
            methods,
            scope,
            issued_at: now,
            expires_at,
            audit_ids,
            app_cred_id: app_cred.map(|a| a.id),
        };
        // The proofs above checked the user; what remains is whether the
        // scope admits them. No need to decrypt the token just sealed.
        let role_ids = {
            let m = self.model();
            scope_roles(
                &m,
                &payload.user_id,
                &payload.scope,
                payload.app_cred_id.as_deref(),
                now,
            )
        }
        .ok_or_else(|| {
            Error::Unauthorized("The user has no role on the requested scope.".into())
        })?;
        let token = self.inner.codec.seal(&payload);
        Ok((token, Validated { payload, role_ids }))
    }

    async fn check_password(&self, user: &UserRef, password: &str) -> Result<String> {
        let found = {
            let m = self.model();
            let u = match user {
                UserRef::Id(id) => m.users.get(id),
                UserRef::Name { name, domain } => {
                    resolve_domain(&m, domain).and_then(|d| m.user_by_name(&d, name))
                }
            };
            u.map(|u| {
                let domain_ok = m.domain(&u.domain_id).is_some_and(|d| d.enabled);
                (
                    u.id.clone(),
                    u.password_hash.clone(),
                    u.enabled && domain_ok,
                )
            })
        };
        // Verify even when the user is unknown: same work, same answer.
        let (id, hash, enabled) = match found {
            Some((id, h, e)) => (Some(id), h, e),
            None => (None, None, false),
        };
        let ok = self.inner.hasher.verify(password, hash.as_deref()).await;
        match id {
            Some(id) if ok && enabled => Ok(id),
            _ => Err(unauthorized()),
        }
    }

    fn check_app_cred(
        &self,
        id: Option<String>,
        name: Option<String>,
        user: Option<UserRef>,
        secret: &str,
    ) -> Result<AppCred> {
        let m = self.model();
        let ac = match (id, name) {
            (Some(id), _) => m.app_creds.get(&id),
            (None, Some(name)) => {
                let uid = match user {
                    Some(UserRef::Id(u)) => Some(u),
                    Some(UserRef::Name { name, domain }) => resolve_domain(&m, &domain)
                        .and_then(|d| m.user_by_name(&d, &name))
                        .map(|u| u.id.clone()),
                    None => None,
                };
                uid.and_then(|u| {
                    m.app_creds
                        .values()
                        .find(|a| a.user_id == u && a.name == name)
                })
            }
            _ => None,
        }
        .ok_or_else(unauthorized)?;
        if ac.secret_hash != sha256_hex(secret) {
            return Err(unauthorized());
        }
        if ac.expires_at.is_some_and(|e| e <= now_us()) {
            return Err(unauthorized());
        }
        if !m.users.get(&ac.user_id).is_some_and(|u| u.enabled) {
            return Err(unauthorized());
        }
        Ok(ac.clone())
    }

    /// Records a revocation durably.
    pub async fn revoke(&self, by: RevokeBy, value: &str) -> Result<()> {
        let now = now_us();
        let r = Revocation {
            by,
            value: value.to_string(),
            issued_before: now,
            expires_at: now + self.inner.settings.token_ttl.as_micros() as i64,
        };
        let id = new_id();
        self.change(|_| Ok((vec![Op::put(model::kind::REVOCATION, &id, "", &id, &r)], ())))
            .await
    }

    /// Removes revocations that can no longer match a live token.
    pub async fn prune_revocations(&self) -> Result<usize> {
        let now = now_us();
        self.change(|m| {
            let ops: Vec<Op> = m
                .revocations
                .iter()
                .filter(|(_, r)| r.expires_at < now)
                .map(|(id, _)| Op::delete(model::kind::REVOCATION, id))
                .collect();
            let n = ops.len();
            Ok((ops, n))
        })
        .await
    }
}

pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn resolve_domain(m: &Model, d: &DomainRef) -> Option<String> {
    match d {
        DomainRef::Id(id) => m.domain(id).map(|d| d.id.clone()),
        DomainRef::Name(n) => m.domain_by_name(n).map(|d| d.id.clone()),
    }
}

fn resolve_scope(m: &Model, s: &ScopeRequest, user_id: &str) -> Result<Scope> {
    let no_access = || Error::Unauthorized("The user has no access to the requested scope.".into());
    Ok(match s {
        ScopeRequest::None => {
            // Keystone scopes to the default project when the user has a role there.
            let default = m
                .users
                .get(user_id)
                .and_then(|u| u.default_project_id.clone())
                .filter(|p| {
                    m.project(p).is_some_and(|p| p.enabled)
                        && !m
                            .effective_roles(user_id, &Target::Project(p.clone()))
                            .is_empty()
                });
            match default {
                Some(p) => Scope::Project(p),
                None => Scope::Unscoped,
            }
        }
        ScopeRequest::ProjectId(id) => {
            let p = m.project(id).ok_or_else(no_access)?;
            Scope::Project(p.id.clone())
        }
        ScopeRequest::ProjectName { name, domain } => {
            let d = resolve_domain(m, domain).ok_or_else(no_access)?;
            Scope::Project(
                m.project_by_name(&d, name)
                    .ok_or_else(no_access)?
                    .id
                    .clone(),
            )
        }
        ScopeRequest::Domain(d) => Scope::Domain(resolve_domain(m, d).ok_or_else(no_access)?),
        ScopeRequest::System => Scope::System,
    })
}

/// Role ids on a token's scope, or None when the scope no longer admits it.
fn scope_roles(
    m: &Model,
    user_id: &str,
    scope: &Scope,
    app_cred: Option<&str>,
    now: i64,
) -> Option<Vec<String>> {
    let target = match scope {
        Scope::Unscoped => return Some(Vec::new()),
        Scope::Project(p) => {
            let p = m.project(p)?;
            if !p.enabled || !m.domain(&p.domain_id).is_some_and(|d| d.enabled) {
                return None;
            }
            Target::Project(p.id.clone())
        }
        Scope::Domain(d) => {
            if !m.domain(d)?.enabled {
                return None;
            }
            Target::Domain(d.clone())
        }
        Scope::System => Target::System,
    };
    let mut roles = m.effective_roles(user_id, &target);
    if let Some(ac) = app_cred {
        let ac = m.app_creds.get(ac)?;
        if ac.expires_at.is_some_and(|e| e <= now) {
            return None;
        }
        let mut allowed: BTreeSet<String> = ac.role_ids.iter().cloned().collect();
        m.expand_implied(&mut allowed);
        roles.retain(|r| allowed.contains(r));
    }
    if roles.is_empty() {
        None
    } else {
        Some(roles.into_iter().collect())
    }
}
