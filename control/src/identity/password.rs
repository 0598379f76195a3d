//! Password hashing with argon2id.
//!
//! The default cost is OWASP's recommended minimum for argon2id (19 MiB of
//! memory, 2 iterations, 1 lane); both numbers are configurable. Hashing runs
//! on the blocking pool behind a semaphore of one permit per core, so a burst
//! of logins cannot take more than `cores × memory` and never stalls the
//! async workers. Stored hashes carry their own parameters (PHC strings), so
//! raising the cost later keeps old passwords working.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl Default for Cost {
    fn default() -> Self {
        Cost {
            memory_kib: 19 * 1024,
            iterations: 2,
        }
    }
}

#[derive(Clone)]
pub struct Hasher {
    argon: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// A hash of nothing, verified when the user does not exist so that the
    /// answer takes as long as for a real user.
    decoy: Arc<String>,
}

impl Hasher {
    pub fn new(cost: Cost) -> Result<Hasher, String> {
        let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
            .map_err(|e| format!("argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let decoy = hash_with(&argon, "decoy password").map_err(|e| e.to_string())?;
        Ok(Hasher {
            argon,
            permits: Arc::new(Semaphore::new(cores)),
            decoy: Arc::new(decoy),
        })
    }

    pub async fn hash(&self, password: &str) -> String {
        let _permit = self.permits.acquire().await.expect("semaphore open");
        let argon = self.argon.clone();
        let pw = password.to_string();
        tokio::task::spawn_blocking(move || hash_with(&argon, &pw))
            .await
            .expect("hash task")
            .expect("argon2 hashes any password")
    }

    /// Checks a password against a stored hash; with `None` it checks the
    /// decoy and answers false, taking the same time.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        let _permit = self.permits.acquire().await.expect("semaphore open");
        let argon = self.argon.clone();
        let pw = password.to_string();
        let (hash, real) = match stored {
            Some(h) => (h.to_string(), true),
            None => (self.decoy.to_string(), false),
        };
        tokio::task::spawn_blocking(move || {
            let ok = PasswordHash::new(&hash)
                .map(|h| argon.verify_password(pw.as_bytes(), &h).is_ok())
                .unwrap_or(false);
            ok && real
        })
        .await
        .expect("verify task")
    }
}

fn hash_with(argon: &Argon2<'static>, pw: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(argon.hash_password(pw.as_bytes(), &salt)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = Hasher::new(Cost {
            memory_kib: 1024,
            iterations: 1,
        })
        .unwrap();
        let stored = h.hash("s3cret").await;
        assert!(stored.starts_with("$argon2id$"));
        assert!(h.verify("s3cret", Some(&stored)).await);
        assert!(!h.verify("wrong", Some(&stored)).await);
        assert!(!h.verify("decoy password", None).await);
    }

    #[test]
    fn default_cost_is_owasp_minimum() {
        let c = Cost::default();
        assert!(c.memory_kib >= 19 * 1024 && c.iterations >= 2);
    }
}
