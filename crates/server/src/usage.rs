//! Usage over time. Each STATUS poll of a running node carries the endpoint guard's cumulative
//! counters (`usage`); the difference to the previous poll's ([`delta`]) is added to the node's
//! minute and hour steps in the store, with the height and lag of the poll, and sent to the
//! owner's event streams with `event: progress`. `GET /nodes/{id}/usage?window=…` reads the
//! steps back and groups them per window step ([`points`]). Decisions here are pure; the
//! reconciler and the route carry them out.

use std::collections::BTreeMap;

use erigolem_api::{UsageDelta, UsagePoint, UsageTotals, UsageWindow};
use erigolem_primitives::{LatencyHistogram, Usage, OTHER_METHODS};
use erigolem_store::{cap_methods, Tier, UsageSample};

/// What the endpoint served between `prev` and `now` (two cumulative snapshots of one endpoint).
/// A counter smaller than before means the endpoint started over (a runtime restart, a
/// replacement): then all of `now` is new. Method counts always add up to `requests`: names in
/// both snapshots by their difference; a name new to the runtime's top list by what its count
/// exceeds the previous `other` (where it was counted before, if at all); the rest under `other`.
pub(crate) fn delta(prev: &Usage, now: &Usage) -> UsageSample {
    let restarted = now.requests < prev.requests
        || now.errors < prev.errors
        || now.bytes_in < prev.bytes_in
        || now.bytes_out < prev.bytes_out
        || now.refused.total() < prev.refused.total()
        || now.latency.total() < prev.latency.total();
    let zero = Usage::default();
    let prev = if restarted { &zero } else { prev };
    let requests = now.requests - prev.requests;
    let mut methods = BTreeMap::new();
    let mut named = 0;
    for (name, n) in &now.methods {
        if name == OTHER_METHODS {
            continue;
        }
        // A name the previous snapshot did not list was counted under its `other` then, if at
        // all: at most that much of its count is old.
        let before = prev
            .methods
            .get(name)
            .or_else(|| prev.methods.get(OTHER_METHODS))
            .copied()
            .unwrap_or(0);
        let d = n.saturating_sub(before).min(requests - named);
        if d > 0 {
            methods.insert(name.clone(), d);
            named += d;
        }
    }
    if requests > named {
        methods.insert(OTHER_METHODS.to_owned(), requests - named);
    }
    cap_methods(&mut methods);
    let same_buckets = prev.latency.le_us == now.latency.le_us || restarted;
    let latency = now
        .latency
        .counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let before = match same_buckets {
                true => prev.latency.counts.get(i).copied().unwrap_or(0),
                false => 0,
            };
            n.saturating_sub(before)
        })
        .collect();
    UsageSample {
        at: 0,
        requests,
        errors: now.errors - prev.errors,
        refused: now.refused.total() - prev.refused.total(),
        bytes_in: now.bytes_in - prev.bytes_in,
        bytes_out: now.bytes_out - prev.bytes_out,
        methods,
        latency,
        block: None,
        head: None,
        behind_seconds: None,
    }
}

/// A latency quantile (µs) of bucket counts in the runtime's buckets.
fn quantile(counts: &[u64], q: f64) -> Option<u64> {
    let histogram = LatencyHistogram {
        counts: counts.to_vec(),
        ..LatencyHistogram::default()
    };
    histogram.quantile_us(q)
}

/// The delta as `event: progress` carries it.
pub(crate) fn delta_view(sample: &UsageSample, secs: u64) -> UsageDelta {
    UsageDelta {
        secs,
        requests: sample.requests,
        errors: sample.errors,
        refused: sample.refused,
        bytes_in: sample.bytes_in,
        bytes_out: sample.bytes_out,
        methods: sample.methods.clone(),
        latency_p50_us: quantile(&sample.latency, 0.5),
        latency_p99_us: quantile(&sample.latency, 0.99),
    }
}

/// The store tier a window is read from.
pub(crate) fn tier(window: UsageWindow) -> Tier {
    match window {
        UsageWindow::Week => Tier::Hour,
        _ => Tier::Minute,
    }
}

/// Where a window of `window` ending at `now` (unix ms) starts: at a step boundary, so that the
/// first point is a whole step.
pub(crate) fn window_start(window: UsageWindow, now: i64) -> i64 {
    let step = window.step_secs() as i64 * 1_000;
    (now - window.secs() as i64 * 1_000).div_euclid(step) * step + step
}

/// `samples` (oldest first, all at or after the window's start) grouped per window step, and
/// their totals.
pub(crate) fn points(
    samples: &[UsageSample],
    window: UsageWindow,
) -> (Vec<UsagePoint>, UsageTotals) {
    let step = window.step_secs() as i64 * 1_000;
    let mut steps: Vec<UsageSample> = Vec::new();
    let mut all = UsageSample::default();
    for s in samples {
        let at = s.at.div_euclid(step) * step;
        match steps.last_mut() {
            Some(last) if last.at == at => last.merge(s),
            _ => steps.push(UsageSample { at, ..s.clone() }),
        }
        all.merge(s);
    }
    let points = steps
        .iter()
        .map(|s| UsagePoint {
            at: s.at,
            requests: s.requests,
            errors: s.errors,
            refused: s.refused,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            methods: s.methods.clone(),
            latency_p50_us: quantile(&s.latency, 0.5),
            latency_p99_us: quantile(&s.latency, 0.99),
            block: s.block,
            head: s.head,
            behind_seconds: s.behind_seconds,
        })
        .collect();
    let totals = UsageTotals {
        requests: all.requests,
        errors: all.errors,
        refused: all.refused,
        bytes_in: all.bytes_in,
        bytes_out: all.bytes_out,
        methods: all.methods.clone(),
        latency_p50_us: quantile(&all.latency, 0.5),
        latency_p99_us: quantile(&all.latency, 0.99),
    };
    (points, totals)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn usage(requests: u64, methods: &[(&str, u64)]) -> Usage {
        Usage {
            requests,
            methods: methods.iter().map(|(m, n)| (m.to_string(), *n)).collect(),
            ..Usage::default()
        }
    }

    #[test]
    fn deltas_by_method_add_up_to_the_requests() {
        /// Name, previous and current snapshot, expected requests and methods.
        type Case<'a> = (&'a str, Usage, Usage, u64, &'a [(&'a str, u64)]);
        let cases: &[Case] = &[
            (
                "steady",
                usage(5, &[("eth_call", 3), ("eth_blockNumber", 2)]),
                usage(9, &[("eth_call", 6), ("eth_blockNumber", 3)]),
                4,
                &[("eth_blockNumber", 1), ("eth_call", 3)],
            ),
            (
                "first poll of a new endpoint",
                Usage::default(),
                usage(3, &[("eth_chainId", 3)]),
                3,
                &[("eth_chainId", 3)],
            ),
            (
                "the endpoint restarted: counters went down",
                usage(100, &[("eth_call", 100)]),
                usage(2, &[("eth_call", 2)]),
                2,
                &[("eth_call", 2)],
            ),
            (
                "a name newly in the top list: what was under other is not counted again",
                usage(10, &[("eth_call", 8), ("other", 2)]),
                usage(12, &[("eth_call", 9), ("eth_getLogs", 3)]),
                2,
                &[("eth_call", 1), ("eth_getLogs", 1)],
            ),
        ];
        for (name, prev, now, requests, methods) in cases {
            let d = delta(prev, now);
            assert_eq!(d.requests, *requests, "{name}");
            let want: BTreeMap<String, u64> =
                methods.iter().map(|(m, n)| (m.to_string(), *n)).collect();
            assert_eq!(d.methods, want, "{name}");
            assert_eq!(d.methods.values().sum::<u64>(), d.requests, "{name}");
        }
    }

    #[test]
    fn points_group_minutes_into_the_windows_steps() {
        let minute = |m: i64, requests: u64| UsageSample {
            at: m * 60_000,
            requests,
            methods: [("eth_call".to_owned(), requests)].into(),
            latency: {
                let mut l = vec![0; 15];
                l[3] = requests;
                l
            },
            block: Some(m as u64),
            ..UsageSample::default()
        };
        let samples: Vec<_> = (0..12).map(|m| minute(m, 1)).collect();
        let (points, totals) = points(&samples, UsageWindow::SixHours);
        assert_eq!(points.len(), 3, "12 minutes are three 5-minute steps");
        assert_eq!(points[0].requests, 5);
        assert_eq!(points[2].requests, 2);
        assert_eq!(points[2].block, Some(11));
        assert_eq!(totals.requests, 12);
        assert_eq!(totals.methods["eth_call"], 12);
        assert_eq!(totals.latency_p50_us, Some(1_000));
    }

    #[test]
    fn a_window_starts_on_a_step_boundary() {
        let now = 10 * 3_600_000 + 123_456;
        let start = window_start(UsageWindow::Hour, now);
        assert_eq!(start % 60_000, 0);
        assert!(now - start <= 3_600_000 && now - start > 3_540_000);
    }
}
