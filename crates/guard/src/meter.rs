//! Counts what an endpoint serves ([`Usage`]), in bounded memory: at most [`METHOD_SLOTS`]
//! method names are kept (later new names count as `other`), and STATUS reports the top
//! [`TOP_METHODS`] of them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use erigolem_primitives::{Usage, OTHER_METHODS, TOP_METHODS};

/// Distinct method names counted by name; every further name counts as `other`.
pub(crate) const METHOD_SLOTS: usize = 128;

/// Why the guard refused something (a field of [`erigolem_primitives::Refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Auth,
    Method,
    Invalid,
    Rate,
    Concurrency,
    Size,
    Batch,
    Origin,
    Ip,
    Websockets,
}

#[derive(Debug, Default)]
struct State {
    usage: Usage,
    methods: HashMap<String, u64>,
    other: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Meter {
    state: Mutex<State>,
}

impl Meter {
    fn with(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    /// Calls the node answered: their methods, how many of the answers were errors, and how long
    /// the answer took.
    pub(crate) fn answered<'a>(
        &self,
        methods: impl IntoIterator<Item = &'a str>,
        errors: u64,
        took: Option<Duration>,
    ) {
        self.with(|s| {
            for m in methods {
                s.usage.requests += 1;
                let room = s.methods.len() < METHOD_SLOTS;
                match s.methods.get_mut(m) {
                    Some(n) => *n += 1,
                    None if room => {
                        s.methods.insert(m.to_owned(), 1);
                    }
                    None => s.other += 1,
                }
            }
            s.usage.errors += errors;
            if let Some(took) = took {
                s.usage.latency.record(took);
            }
        });
    }

    /// Calls that got no answer from the node (unreachable, timed out).
    pub(crate) fn failed(&self, calls: u64) {
        self.with(|s| s.usage.errors += calls);
    }

    pub(crate) fn refused(&self, reason: Reason, n: u64) {
        self.with(|s| {
            let r = &mut s.usage.refused;
            let field = match reason {
                Reason::Auth => &mut r.auth,
                Reason::Method => &mut r.method,
                Reason::Invalid => &mut r.invalid,
                Reason::Rate => &mut r.rate,
                Reason::Concurrency => &mut r.concurrency,
                Reason::Size => &mut r.size,
                Reason::Batch => &mut r.batch,
                Reason::Origin => &mut r.origin,
                Reason::Ip => &mut r.ip,
                Reason::Websockets => &mut r.websockets,
            };
            *field += n;
        });
    }

    pub(crate) fn http_request(&self) {
        self.with(|s| s.usage.http_requests += 1);
    }

    pub(crate) fn bytes(&self, inbound: u64, outbound: u64) {
        self.with(|s| {
            s.usage.bytes_in += inbound;
            s.usage.bytes_out += outbound;
        });
    }

    pub(crate) fn ws_message(&self, inbound: bool, bytes: u64) {
        self.with(|s| {
            if inbound {
                s.usage.ws_messages_in += 1;
                s.usage.bytes_in += bytes;
            } else {
                s.usage.ws_messages_out += 1;
                s.usage.bytes_out += bytes;
            }
        });
    }

    pub(crate) fn websocket(&self, opened: bool) {
        self.with(|s| {
            let open = &mut s.usage.open_websockets;
            *open = if opened {
                *open + 1
            } else {
                open.saturating_sub(1)
            };
        });
    }

    pub(crate) fn requests(&self) -> u64 {
        self.state.lock().map(|s| s.usage.requests).unwrap_or(0)
    }

    pub(crate) fn snapshot(&self) -> Usage {
        let Ok(s) = self.state.lock() else {
            return Usage::default();
        };
        let mut usage = s.usage.clone();
        let mut by_count: Vec<(&String, &u64)> = s.methods.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut other = s.other;
        for (i, (name, n)) in by_count.into_iter().enumerate() {
            if i < TOP_METHODS && name != OTHER_METHODS {
                usage.methods.insert(name.clone(), *n);
            } else {
                other += n;
            }
        }
        if other > 0 {
            usage.methods.insert(OTHER_METHODS.to_owned(), other);
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_are_exact_and_methods_bounded() {
        let m = Meter::default();
        m.answered(
            ["eth_call", "eth_call", "eth_blockNumber"],
            1,
            Some(Duration::from_micros(300)),
        );
        m.refused(Reason::Method, 2);
        m.refused(Reason::Rate, 5);
        let u = m.snapshot();
        assert_eq!(u.requests, 3);
        assert_eq!(u.methods["eth_call"], 2);
        assert_eq!(u.methods["eth_blockNumber"], 1);
        assert!(!u.methods.contains_key(OTHER_METHODS));
        assert_eq!((u.errors, u.refused.method, u.refused.rate), (1, 2, 5));
        assert_eq!(u.refused.total(), 7);
        assert_eq!(u.latency.total(), 1);

        // A client inventing names fills the slots once; the rest counts as other.
        let m = Meter::default();
        for i in 0..(METHOD_SLOTS + 50) {
            m.answered([format!("x_{i}").as_str()], 0, None);
        }
        m.answered(["eth_call"; 7], 0, None);
        let u = m.snapshot();
        assert_eq!(u.methods.len(), TOP_METHODS + 1);
        assert_eq!(u.requests, (METHOD_SLOTS + 57) as u64);
        assert_eq!(u.methods.values().sum::<u64>(), u.requests, "nothing lost");
        assert_eq!(
            u.methods[OTHER_METHODS],
            (METHOD_SLOTS + 57 - TOP_METHODS) as u64
        );
    }

    #[test]
    fn a_method_called_other_does_not_hide_counts() {
        let m = Meter::default();
        m.answered(["other", "eth_call"], 0, None);
        let u = m.snapshot();
        assert_eq!(u.methods[OTHER_METHODS], 1);
        assert_eq!(u.methods.values().sum::<u64>(), 2);
    }
}
