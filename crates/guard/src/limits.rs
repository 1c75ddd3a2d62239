//! Per-endpoint limits: requests per second (HTTP calls and WebSocket calls alike, each call of a
//! batch counting one), concurrent calls, body and batch size, open WebSockets. Over a limit the
//! call is answered with a JSON-RPC error at once; nothing waits for capacity.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of one endpoint (runtime config `guard.shared` / `guard.dedicated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardLimits {
    /// Sustained JSON-RPC calls per second.
    pub requests_per_sec: u32,
    /// Calls that may come at once above the sustained rate.
    pub burst: u32,
    /// Calls being answered at once (HTTP and WebSocket).
    pub max_concurrent: u32,
    /// Largest HTTP body or WebSocket message.
    pub max_body_bytes: u32,
    /// Most calls in one batch.
    pub max_batch: u32,
    /// WebSockets open at once.
    pub max_websockets: u32,
    /// How long the node may take to answer an HTTP request.
    pub call_timeout_secs: u64,
}

impl GuardLimits {
    /// For an endpoint on a node several tenants share.
    pub const SHARED: GuardLimits = GuardLimits {
        requests_per_sec: 100,
        burst: 200,
        max_concurrent: 16,
        max_body_bytes: 1 << 20,
        max_batch: 100,
        max_websockets: 16,
        call_timeout_secs: 60,
    };

    /// For a node of its own: limits that only protect the provider's machine.
    pub const DEDICATED: GuardLimits = GuardLimits {
        requests_per_sec: 2_000,
        burst: 4_000,
        max_concurrent: 128,
        max_body_bytes: 10 << 20,
        max_batch: 1_000,
        max_websockets: 64,
        call_timeout_secs: 300,
    };

    /// Every limit at least 1.
    pub fn validate(&self) -> Result<(), String> {
        let zero = [
            ("requests_per_sec", u64::from(self.requests_per_sec)),
            ("burst", u64::from(self.burst)),
            ("max_concurrent", u64::from(self.max_concurrent)),
            ("max_body_bytes", u64::from(self.max_body_bytes)),
            ("max_batch", u64::from(self.max_batch)),
            ("max_websockets", u64::from(self.max_websockets)),
            ("call_timeout_secs", self.call_timeout_secs),
        ]
        .into_iter()
        .find(|(_, v)| *v == 0);
        match zero {
            Some((name, _)) => Err(format!("guard limit {name} must be at least 1")),
            None => Ok(()),
        }
    }

    /// What STATUS reports of them.
    pub fn view(&self) -> erigolem_primitives::EndpointLimits {
        erigolem_primitives::EndpointLimits {
            requests_per_sec: self.requests_per_sec,
            burst: self.burst,
            max_concurrent: self.max_concurrent,
            max_body_bytes: self.max_body_bytes,
            max_batch: self.max_batch,
            max_websockets: self.max_websockets,
        }
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.call_timeout_secs)
    }
}

/// The rate and concurrency state of one endpoint. The rate limiter runs on `Instant`: governor's
/// default clock (quanta) calibrates itself once per process, 0.6 ms of CPU on the start path of
/// every activity.
#[derive(Debug)]
pub(crate) struct Limiter {
    rate: RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<Instant>>,
    slots: Arc<Semaphore>,
}

impl Limiter {
    pub(crate) fn new(limits: &GuardLimits) -> Self {
        let one = NonZeroU32::MIN;
        let per_sec = NonZeroU32::new(limits.requests_per_sec).unwrap_or(one);
        let burst = NonZeroU32::new(limits.burst).unwrap_or(one);
        Self {
            rate: RateLimiter::direct_with_clock(
                Quota::per_second(per_sec).allow_burst(burst),
                MonotonicClock,
            ),
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1) as usize)),
        }
    }

    /// Takes `calls` from the rate budget, all or none.
    pub(crate) fn take(&self, calls: usize) -> bool {
        let Some(n) = u32::try_from(calls).ok().and_then(NonZeroU32::new) else {
            return true;
        };
        matches!(self.rate.check_n(n), Ok(Ok(())))
    }

    /// One slot of the concurrency limit, held until the answer is sent.
    pub(crate) fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rate_counts_calls_and_refuses_without_waiting() {
        let limits = GuardLimits {
            requests_per_sec: 1,
            burst: 5,
            ..GuardLimits::SHARED
        };
        let l = Limiter::new(&limits);
        assert!(l.take(3));
        assert!(!l.take(3), "a batch is all or nothing");
        assert!(l.take(2));
        assert!(!l.take(1));
        assert!(!l.take(6), "more than the burst never passes");
        assert!(l.take(0));
    }

    #[test]
    fn slots_are_released_on_drop() {
        let limits = GuardLimits {
            max_concurrent: 2,
            ..GuardLimits::SHARED
        };
        let l = Limiter::new(&limits);
        let a = l.slot().unwrap();
        let _b = l.slot().unwrap();
        assert!(l.slot().is_none());
        drop(a);
        assert!(l.slot().is_some());
    }

    #[test]
    fn zero_limits_are_refused() {
        let bad = GuardLimits {
            max_batch: 0,
            ..GuardLimits::SHARED
        };
        assert!(bad.validate().unwrap_err().contains("max_batch"));
        GuardLimits::DEDICATED.validate().unwrap();
    }
}
