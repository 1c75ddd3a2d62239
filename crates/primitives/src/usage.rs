//! What an endpoint served: the STATUS document's `usage`, counted by the endpoint guard. Every
//! counter is cumulative since the endpoint started, so a poller takes differences.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The method counts keep at most this many names; the rest is counted under [`OTHER_METHODS`].
pub const TOP_METHODS: usize = 20;
/// The name the calls of less frequent methods are counted under.
pub const OTHER_METHODS: &str = "other";

/// Traffic through one endpoint since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// JSON-RPC calls the node answered (each element of a batch counts; refused calls do not).
    /// This is the Golem usage counter `golem.usage.erigolem.requests`.
    pub requests: u64,
    /// `requests` by method: the [`TOP_METHODS`] most frequent, and [`OTHER_METHODS`].
    #[serde(default)]
    pub methods: BTreeMap<String, u64>,
    /// Calls answered with a JSON-RPC error by the node, or not answered (node unreachable, timed out).
    #[serde(default)]
    pub errors: u64,
    /// Calls (or HTTP requests and WebSocket messages that carried none) the guard refused, by reason.
    #[serde(default)]
    pub refused: Refused,
    /// HTTP requests received (WebSocket upgrades included).
    #[serde(default)]
    pub http_requests: u64,
    /// WebSocket messages from clients, and to them (subscription notifications included).
    #[serde(default)]
    pub ws_messages_in: u64,
    #[serde(default)]
    pub ws_messages_out: u64,
    /// Body bytes from clients and to them (HTTP bodies and WebSocket payloads).
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
    /// WebSocket connections open now.
    #[serde(default)]
    pub open_websockets: u64,
    /// Time from a call's arrival to its answer's end (an HTTP request, or a WebSocket call).
    #[serde(default)]
    pub latency: LatencyHistogram,
}

/// Refusals by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Refused {
    /// Missing or wrong credentials (or credentials revoked by ROTATE).
    pub auth: u64,
    /// A method the provider's policy or the requestor's `methods` does not allow.
    pub method: u64,
    /// Not JSON-RPC: unparsable JSON, no method, an empty batch.
    pub invalid: u64,
    /// Over the requests-per-second limit.
    pub rate: u64,
    /// Over the concurrent-requests limit.
    pub concurrency: u64,
    /// A body or WebSocket message over the size limit.
    pub size: u64,
    /// A batch over the batch-size limit.
    pub batch: u64,
    /// An `Origin` not in `allow_origins`.
    pub origin: u64,
    /// A client address not in `allow_ips`.
    pub ip: u64,
    /// A WebSocket over the open-sockets limit.
    pub websockets: u64,
}

impl Refused {
    pub fn total(&self) -> u64 {
        let Refused {
            auth,
            method,
            invalid,
            rate,
            concurrency,
            size,
            batch,
            origin,
            ip,
            websockets,
        } = *self;
        auth + method + invalid + rate + concurrency + size + batch + origin + ip + websockets
    }
}

/// Upper bounds (µs, inclusive) of the latency buckets; one more bucket counts what is slower.
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000, 30_000_000,
];

/// Counts per latency bucket: `counts[i]` is the number of answers that took at most
/// `le_us[i]` µs and more than `le_us[i - 1]`; the last count is for those above every bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    pub le_us: Vec<u64>,
    pub counts: Vec<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            le_us: LATENCY_BOUNDS_US.to_vec(),
            counts: vec![0; LATENCY_BOUNDS_US.len() + 1],
        }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = self
            .le_us
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(self.le_us.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The bucket bound (µs) below which at least `q` (0–1) of the answers fall (`None` for no
    /// answers; `u64::MAX` when it is the last bucket).
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(self.le_us.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        for us in [50, 100, 300, 300, 2_000, 40_000_000] {
            h.record(std::time::Duration::from_micros(us));
        }
        assert_eq!(h.counts[0], 2, "0.05 and 0.1 are ≤ 0.1");
        assert_eq!(h.counts[2], 2);
        assert_eq!(h.counts[4], 1);
        assert_eq!(*h.counts.last().unwrap(), 1);
        assert_eq!(h.total(), 6);
        assert_eq!(h.quantile_us(0.5), Some(500));
        assert_eq!(h.quantile_us(1.0), Some(u64::MAX));
    }

    #[test]
    fn a_status_without_usage_fields_still_parses() {
        let u: Usage = serde_json::from_str(r#"{"requests": 3}"#).unwrap();
        assert_eq!(u.requests, 3);
        assert_eq!(u.latency, LatencyHistogram::default());
    }
}
