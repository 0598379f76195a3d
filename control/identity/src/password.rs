//! Password hashing with argon2id.
//!
//! The default cost is OWASP's recommended minimum for argon2id (19 MiB of
//! memory, 2 iterations, 1 lane); both numbers are configurable. Stored
//! hashes are PHC strings that carry their own parameters, so raising the
//! cost later keeps old passwords working.
//!
//! Hashing runs on the blocking pool behind a semaphore of one permit per
//! core, and each hash borrows its working memory from a small pool instead
//! of allocating 19 MiB afresh: a burst of logins costs at most
//! `cores × memory`, that memory is allocated once, and the async workers
//! never stall.

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::{Arc, Mutex};
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

/// Working memory for argon2, reused between hashes.
#[derive(Default)]
struct MemoryPool {
    free: Mutex<Vec<Vec<Block>>>,
}

impl MemoryPool {
    fn with<R>(&self, blocks: usize, keep: usize, f: impl FnOnce(&mut [Block]) -> R) -> R {
        let mut mem = {
            let mut free = self.free.lock().expect("pool lock");
            match free.iter().position(|m| m.len() == blocks) {
                Some(i) => free.swap_remove(i),
                None => vec![Block::default(); blocks],
            }
        };
        let r = f(&mut mem);
        let mut free = self.free.lock().expect("pool lock");
        if free.len() < keep {
            free.push(mem);
        }
        r
    }
}

#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    cores: usize,
    pool: Arc<MemoryPool>,
    /// A hash of nothing, verified when the user does not exist so that the
    /// answer takes as long as for a real user.
    decoy: Arc<String>,
}

impl Hasher {
    pub fn new(cost: Cost) -> Result<Hasher, String> {
        let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
            .map_err(|e| format!("argon2 parameters: {e}"))?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut h = Hasher {
            params,
            permits: Arc::new(Semaphore::new(cores)),
            cores,
            pool: Arc::new(MemoryPool::default()),
            decoy: Arc::new(String::new()),
        };
        h.decoy = Arc::new(h.hash_now("decoy password")?);
        Ok(h)
    }

    fn hash_now(&self, pw: &str) -> Result<String, String> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let mut salt_buf = [0u8; 64];
        let salt_bytes = salt
            .as_salt()
            .decode_b64(&mut salt_buf)
            .map_err(|e| e.to_string())?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        self.pool
            .with(self.params.block_count(), self.cores, |mem| {
                argon.hash_password_into_with_memory(pw.as_bytes(), salt_bytes, &mut out, mem)
            })
            .map_err(|e| e.to_string())?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|e| e.to_string())?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
        };
        Ok(phc.to_string())
    }

    fn verify_now(&self, pw: &str, stored: &str) -> bool {
        let check = || -> Option<bool> {
            let phc = PasswordHash::new(stored).ok()?;
            let params = Params::try_from(&phc).ok()?;
            let alg = Algorithm::try_from(phc.algorithm).ok()?;
            let version = match phc.version {
                Some(v) => Version::try_from(v).ok()?,
                None => Version::default(),
            };
            let expected = phc.hash?;
            let mut salt_buf = [0u8; 64];
            let salt = phc.salt?.decode_b64(&mut salt_buf).ok()?;
            let mut out = vec![0u8; expected.len()];
            let argon = Argon2::new(alg, version, params.clone());
            self.pool
                .with(params.block_count(), self.cores, |mem| {
                    argon.hash_password_into_with_memory(pw.as_bytes(), salt, &mut out, mem)
                })
                .ok()?;
            // Output's equality is constant-time.
            Some(Output::new(&out).ok()? == expected)
        };
        check().unwrap_or(false)
    }

    pub async fn hash(&self, password: &str) -> String {
        let _permit = self.permits.acquire().await.expect("semaphore open");
        let me = self.clone();
        let pw = password.to_string();
        tokio::task::spawn_blocking(move || me.hash_now(&pw))
            .await
            .expect("hash task")
            .expect("argon2 hashes any password")
    }

    /// Checks a password against a stored hash; with `None` it checks the
    /// decoy and answers false, taking the same time.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        let _permit = self.permits.acquire().await.expect("semaphore open");
        let me = self.clone();
        let pw = password.to_string();
        let (hash, real) = match stored {
            Some(h) => (h.to_string(), true),
            None => (self.decoy.to_string(), false),
        };
        tokio::task::spawn_blocking(move || me.verify_now(&pw, &hash) && real)
            .await
            .expect("verify task")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = Hasher::new(Cost {
            memory_kib: 1024,
            iterations: 1,
        })
        .unwrap();
        let stored = h.hash("s3cret").await;
        assert!(
            stored.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
            "{stored}"
        );
        assert!(h.verify("s3cret", Some(&stored)).await);
        assert!(!h.verify("wrong", Some(&stored)).await);
        assert!(!h.verify("decoy password", None).await);
        assert!(!h.verify("s3cret", Some("not a phc string")).await);
    }

    #[tokio::test]
    async fn interoperates_with_the_reference_verifier_and_other_costs() {
        let h = Hasher::new(Cost {
            memory_kib: 2048,
            iterations: 2,
        })
        .unwrap();
        let stored = h.hash("pw").await;
        let phc = PasswordHash::new(&stored).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &phc).is_ok());
        // A hash made at another cost still verifies (its parameters travel with it).
        let other = Hasher::new(Cost {
            memory_kib: 1024,
            iterations: 1,
        })
        .unwrap()
        .hash("pw")
        .await;
        assert!(h.verify("pw", Some(&other)).await);
    }

    #[test]
    fn default_cost_is_owasp_minimum() {
        let c = Cost::default();
        assert!(c.memory_kib >= 19 * 1024 && c.iterations >= 2);
    }
}
