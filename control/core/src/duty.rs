//! Background duties that one controller at a time performs for the whole
//! cloud (the netd push, the power-state sync), each under a lease in the
//! database ([`Store::hold_lease`]).
//!
//! Every controller runs a [`Duty`] for each: a task renews (or tries to
//! take) the lease every [`RENEW`]; the lease lasts [`TTL`], so when its
//! holder dies (even by SIGKILL) another controller takes the duty over
//! within `TTL + RENEW`. A clean stop gives the lease up at once. With one
//! controller the duty is simply always held (on SQLite, which one process
//! opens at a time, a restart takes it at once, even after a SIGKILL). Leases are timed by each
//! controller's clock: controllers must keep their clocks within a second
//! or so of each other (NTP).

use crate::store::Store;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(6);
/// How often the holder renews (and others try).
pub const RENEW: Duration = Duration::from_secs(2);

struct Inner {
    name: String,
    holder: String,
    store: Store,
    held: AtomicBool,
    changed: tokio::sync::Notify,
}

/// One duty's lease, as seen by this controller; cheap to clone.
#[derive(Clone)]
pub struct Duty(Arc<Inner>);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Duty {
    /// Tries the lease once, then keeps renewing or trying in the
    /// background for as long as the process lives.
    pub async fn start(store: Store, name: &str, holder: &str) -> Duty {
        let d = Duty(Arc::new(Inner {
            name: name.to_string(),
            holder: holder.to_string(),
            store,
            held: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }));
        if d.0.store.backend() == crate::store::Backend::Sqlite {
            // One process at a time opens SQLite: a lease left in it is a
            // dead process's (killed a moment ago); do not wait it out.
            if let Err(e) = d.0.store.clear_lease(name).await {
                tracing::warn!(duty = %name, error = %e, "could not clear a stale lease");
            }
        }
        d.try_hold().await;
        let me = d.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW).await;
                me.try_hold().await;
            }
        });
        d
    }

    async fn try_hold(&self) {
        let i = &self.0;
        let now = match i
            .store
            .hold_lease(&i.name, &i.holder, now_ms(), TTL.as_millis() as i64)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(duty = %i.name, error = %e, "could not renew the lease");
                false
            }
        };
        let was = i.held.swap(now, Ordering::SeqCst);
        if now != was {
            if now {
                tracing::info!(duty = %i.name, holder = %i.holder, "this controller holds the duty");
            } else {
                tracing::info!(duty = %i.name, "another controller holds the duty");
            }
            i.changed.notify_waiters();
        }
    }

    /// Whether this controller holds the duty now.
    pub fn held(&self) -> bool {
        self.0.held.load(Ordering::SeqCst)
    }

    /// Waits until this controller holds the duty.
    pub async fn wait_held(&self) {
        loop {
            let n = self.0.changed.notified();
            if self.held() {
                return;
            }
            n.await;
        }
    }

    /// Gives the lease up (on a clean stop), so another controller takes
    /// the duty at its next try.
    pub async fn release(&self) {
        let i = &self.0;
        i.held.store(false, Ordering::SeqCst);
        if let Err(e) = i.store.release_lease(&i.name, &i.holder).await {
            tracing::warn!(duty = %i.name, error = %e, "could not give the lease up");
        }
    }
}

/// The lease that says a controller is alive: every controller holds its
/// own ([`Duty::start`] with this name) for as long as it runs, so that
/// the holder of a duty can tell work another controller started and
/// left (it died) from work still under way.
pub fn alive_lease(holder: &str) -> String {
    format!("alive:{holder}")
}

/// Whether the controller named `holder` is alive: its [`alive_lease`]
/// has not expired. A name never seen (or empty) is not alive.
pub async fn is_alive(store: &Store, holder: &str) -> crate::store::Result<bool> {
    if holder.is_empty() {
        return Ok(false);
    }
    store.lease_live(&alive_lease(holder), now_ms()).await
}
