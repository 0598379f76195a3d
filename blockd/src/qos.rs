//! Per-volume QoS: a token bucket for operations per second and one for
//! bytes per second, shared by every connection to the volume's export. A
//! request is charged when it arrives and waits until both buckets are out
//! of debt, so a request larger than a second's worth still passes (it just
//! waits longer). Each bucket holds at most one second of capacity (the
//! burst). Limits change while the volume is exported; 0 means unlimited.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub iops: u64,
    pub bytes_per_second: u64,
}

impl Limits {
    pub fn unlimited(&self) -> bool {
        self.iops == 0 && self.bytes_per_second == 0
    }
}

#[derive(Debug)]
struct State {
    limits: Limits,
    ops: f64,
    bytes: f64,
    last: Instant,
}

#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
}

impl Limiter {
    pub fn new(limits: Limits) -> Limiter {
        Limiter {
            state: Mutex::new(State {
                limits,
                ops: limits.iops as f64,
                bytes: limits.bytes_per_second as f64,
                last: Instant::now(),
            }),
        }
    }

    pub fn limits(&self) -> Limits {
        self.state.lock().expect("qos").limits
    }

    /// New limits; the buckets start full at the new rates.
    pub fn set(&self, limits: Limits) {
        let mut s = self.state.lock().expect("qos");
        *s = State {
            limits,
            ops: limits.iops as f64,
            bytes: limits.bytes_per_second as f64,
            last: Instant::now(),
        };
    }

    /// Charges one operation of `bytes` at `now`; returns how long it must wait.
    pub fn reserve_at(&self, now: Instant, bytes: u64) -> Duration {
        let mut s = self.state.lock().expect("qos");
        let l = s.limits;
        if l.unlimited() {
            return Duration::ZERO;
        }
        let dt = now.saturating_duration_since(s.last).as_secs_f64();
        s.last = s.last.max(now);
        let mut wait: f64 = 0.0;
        if l.iops > 0 {
            let rate = l.iops as f64;
            s.ops = (s.ops + dt * rate).min(rate) - 1.0;
            if s.ops < 0.0 {
                wait = wait.max(-s.ops / rate);
            }
        }
        if l.bytes_per_second > 0 {
            let rate = l.bytes_per_second as f64;
            s.bytes = (s.bytes + dt * rate).min(rate) - bytes as f64;
            if s.bytes < 0.0 {
                wait = wait.max(-s.bytes / rate);
            }
        }
        Duration::from_secs_f64(wait)
    }

    /// Waits until an operation of `bytes` may proceed.
    pub async fn acquire(&self, bytes: u64) {
        let d = self.reserve_at(Instant::now(), bytes);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let l = Limiter::new(Limits::default());
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.reserve_at(t, 1 << 20), Duration::ZERO);
        }
    }

    #[test]
    fn iops_limit_spaces_operations_after_the_burst() {
        let l = Limiter::new(Limits {
            iops: 100,
            bytes_per_second: 0,
        });
        let t = Instant::now();
        // One second of burst passes at once...
        for _ in 0..100 {
            assert_eq!(l.reserve_at(t, 4096), Duration::ZERO);
        }
        // ...then each operation waits a hundredth of a second more.
        let w = l.reserve_at(t, 4096);
        assert!((w.as_secs_f64() - 0.01).abs() < 1e-6, "{w:?}");
        let w = l.reserve_at(t, 4096);
        assert!((w.as_secs_f64() - 0.02).abs() < 1e-6, "{w:?}");
        // Time pays the debt back.
        let later = t + Duration::from_secs(2);
        assert_eq!(l.reserve_at(later, 4096), Duration::ZERO);
    }

    #[test]
    fn bytes_limit_makes_large_requests_wait_in_proportion() {
        let l = Limiter::new(Limits {
            iops: 0,
            bytes_per_second: 1 << 20,
        });
        let t = Instant::now();
        assert_eq!(l.reserve_at(t, 1 << 20), Duration::ZERO);
        let w = l.reserve_at(t, 4 << 20);
        assert!((w.as_secs_f64() - 4.0).abs() < 1e-6, "{w:?}");
        l.set(Limits::default());
        assert_eq!(l.reserve_at(t, 64 << 20), Duration::ZERO);
    }
}
