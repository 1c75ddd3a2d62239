//! Small measurement helpers shared by the benchmarks.

use std::time::Duration;

/// The `p` quantile (0–1) of sorted durations (zero for none).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// Resident memory of a process in KiB (`VmRSS`), 0 if it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The result of a load run: throughput, latency quantiles, failed requests.
#[derive(Debug, Clone)]
pub struct Load {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: usize,
}

impl Load {
    /// Combines each client's `(latencies, errors)` measured over `measured`.
    pub fn from_clients(
        clients: impl IntoIterator<Item = (Vec<Duration>, usize)>,
        measured: Duration,
    ) -> Self {
        let (mut all, mut errors) = (Vec::new(), 0);
        for (latencies, e) in clients {
            all.extend(latencies);
            errors += e;
        }
        all.sort();
        Load {
            rps: all.len() as f64 / measured.as_secs_f64(),
            p50: percentile(&all, 0.5),
            p99: percentile(&all, 0.99),
            errors,
        }
    }
}
