//! Which replica controls which node, as pure functions. Several `erigolem serve` replicas share
//! one database; each node's control (STATUS polls, payments, stop, replacement) belongs to the
//! replica holding its lease there. A holder renews its leases every tick; a lease not renewed
//! within its time to live may be taken over by another replica (with row locks, in the store).
//! Every change of holder raises the lease's `epoch`, so a renewal is a compare-and-set on the
//! epoch the holder took: a replica that paused past its lease cannot renew what another took.
//!
//! [`plan`] decides one tick of a replica (what to renew, what it lost, what to hand back, how
//! many to take), [`fenced`] whether its own leases must be presumed lost, [`route`] where a
//! user's request about one node goes. Time is the database's clock, given as an argument.

use std::collections::BTreeMap;

/// A node's lease as the store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub node_id: String,
    /// The replica holding it; `None` once handed back.
    pub holder: Option<String>,
    pub epoch: i64,
    /// Unix ms (database clock).
    pub expires_at: i64,
}

impl Lease {
    /// Nobody holds it now: handed back, never taken, or not renewed in time.
    pub fn free(&self, now: i64) -> bool {
        self.holder.is_none() || self.expires_at <= now
    }
}

/// What one replica knows at a tick.
#[derive(Debug, Clone)]
pub struct Tick<'a> {
    pub me: &'a str,
    /// Database clock, unix ms.
    pub now: i64,
    /// How long a lease lasts unrenewed.
    pub ttl: i64,
    /// Replicas whose heartbeat is fresh, this one included (at least 1).
    pub replicas: usize,
    /// The leases of every node that needs a holder (active nodes, and nodes whose agreements
    /// are not settled), plus every lease the store says this replica holds.
    pub leases: &'a [Lease],
    /// Nodes that need a holder.
    pub needed: &'a [String],
    /// What this process believes it holds: node → the epoch it took.
    pub held: &'a BTreeMap<String, i64>,
}

/// The decisions of one tick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Held and still ours: renew (compare-and-set on the epoch).
    pub renew: Vec<String>,
    /// Believed held but another replica took it (or the row is gone): stop controlling it now.
    pub lost: Vec<String>,
    /// Held but no longer needing a holder (stopped and settled): hand back.
    pub release: Vec<String>,
    /// How many free leases to take this tick (the oldest free ones first).
    pub take: usize,
}

/// One tick: renew what is still ours, give up what was taken, hand back what needs nobody, and
/// take free leases up to a fair share (`⌈needed / replicas⌉`) — all of those that have been
/// free for a whole time to live whatever the share (never taken, or nobody else took them:
/// their replica is gone or full), so no node is left without a holder for long. A lease handed
/// back expires at that moment: it is shared out like one that just expired.
pub fn plan(t: &Tick<'_>) -> Plan {
    let mut out = Plan::default();
    let row = |id: &str| t.leases.iter().find(|l| l.node_id == id);
    let needed = |id: &str| t.needed.iter().any(|n| n == id);
    for (id, epoch) in t.held {
        match row(id) {
            Some(l) if l.holder.as_deref() == Some(t.me) && l.epoch == *epoch => {
                if needed(id) {
                    out.renew.push(id.clone());
                } else {
                    out.release.push(id.clone());
                }
            }
            _ => out.lost.push(id.clone()),
        }
    }
    let kept = out.renew.len();
    let share = t.needed.len().div_ceil(t.replicas.max(1));
    let free: Vec<&Lease> = t
        .leases
        .iter()
        .filter(|l| needed(&l.node_id) && !t.held.contains_key(&l.node_id))
        .filter(|l| l.free(t.now))
        .collect();
    // Handed back (expiring now) or just expired: shared out fairly among the live replicas.
    // Free for a whole ttl (never taken, or its taker is gone too): whoever sees it first.
    let orphaned = free
        .iter()
        .filter(|l| t.now - l.expires_at >= t.ttl)
        .count();
    let within_share = share.saturating_sub(kept);
    out.take = free.len().min(within_share.max(orphaned));
    out
}

/// Whether a replica must presume its leases lost: its last renewal went through `since_renewed`
/// ms ago, and others may take them once a time to live has passed since. It stops controlling
/// them a third of the time to live before that (a renewal it did not see answered counts as
/// not done).
pub fn fenced(since_renewed: i64, ttl: i64) -> bool {
    since_renewed >= ttl - ttl / 3
}

/// Where a user's request about one node is carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This replica holds the node.
    Here,
    /// Nobody holds it: take its lease, then carry the request out here.
    Take,
    /// Another replica holds it: hand the request to that one.
    Holder(String),
}

/// `lease` is the node's lease in the store (`None`: it has none yet); `held` whether this process
/// believes it holds it.
pub fn route(lease: Option<&Lease>, me: &str, held: bool, now: i64) -> Route {
    match lease {
        None => Route::Take,
        Some(l) if l.holder.as_deref() == Some(me) && held && l.expires_at > now => Route::Here,
        Some(l) if l.free(now) => Route::Take,
        Some(l) if l.holder.as_deref() == Some(me) => Route::Take,
        Some(l) => Route::Holder(l.holder.clone().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TTL: i64 = 6_000;
    const NOW: i64 = 1_000_000;

    fn lease(id: &str, holder: Option<&str>, epoch: i64, expires_at: i64) -> Lease {
        Lease {
            node_id: id.into(),
            holder: holder.map(Into::into),
            epoch,
            expires_at,
        }
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}")).collect()
    }

    struct Case {
        name: &'static str,
        replicas: usize,
        leases: Vec<Lease>,
        needed: Vec<String>,
        held: Vec<(&'static str, i64)>,
        want: Plan,
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn ticks() {
        let live = NOW + TTL;
        let cases = vec![
            Case {
                name: "a lone replica takes every node nobody holds",
                replicas: 1,
                leases: ids(5).iter().map(|id| lease(id, None, 0, 0)).collect(),
                needed: ids(5),
                held: vec![],
                want: Plan {
                    take: 5,
                    ..Plan::default()
                },
            },
            Case {
                name: "two replicas started at once each take a fair share (the store's row locks keep them apart)",
                replicas: 2,
                leases: ids(9)
                    .iter()
                    .map(|id| lease(id, Some("dead"), 1, NOW - 1))
                    .collect(),
                needed: ids(9),
                held: vec![],
                want: Plan {
                    take: 5,
                    ..Plan::default()
                },
            },
            Case {
                name: "leases just expired beyond the share wait for the other replicas",
                replicas: 3,
                leases: ids(6)
                    .iter()
                    .map(|id| lease(id, Some("dead"), 1, NOW - 10))
                    .collect(),
                needed: ids(6),
                held: vec![],
                want: Plan {
                    take: 2,
                    ..Plan::default()
                },
            },
            Case {
                name: "leases free for a whole ttl are taken whatever the share (their replica is gone)",
                replicas: 3,
                leases: ids(6)
                    .iter()
                    .map(|id| lease(id, Some("dead"), 1, NOW - TTL))
                    .collect(),
                needed: ids(6),
                held: vec![],
                want: Plan {
                    take: 6,
                    ..Plan::default()
                },
            },
            Case {
                name: "a live lease of another replica is never taken",
                replicas: 2,
                leases: vec![lease("n0", Some("b"), 4, live)],
                needed: ids(1),
                held: vec![],
                want: Plan::default(),
            },
            Case {
                name: "ours at the epoch we took: renewed",
                replicas: 2,
                leases: vec![lease("n0", Some("me"), 3, live), lease("n1", Some("me"), 7, NOW - 1)],
                needed: ids(2),
                held: vec![("n0", 3), ("n1", 7)],
                want: Plan {
                    renew: s(&["n0", "n1"]),
                    ..Plan::default()
                },
            },
            Case {
                name: "taken by another replica meanwhile (epoch moved): lost, not renewed",
                replicas: 2,
                leases: vec![lease("n0", Some("b"), 4, live)],
                needed: ids(1),
                held: vec![("n0", 3)],
                want: Plan {
                    lost: s(&["n0"]),
                    ..Plan::default()
                },
            },
            Case {
                name: "taken back by ourselves under a new epoch is not the lease we hold",
                replicas: 1,
                leases: vec![lease("n0", Some("me"), 5, live)],
                needed: ids(1),
                held: vec![("n0", 3)],
                want: Plan {
                    lost: s(&["n0"]),
                    ..Plan::default()
                },
            },
            Case {
                name: "a lease row that is gone is lost",
                replicas: 1,
                leases: vec![],
                needed: vec![],
                held: vec![("n0", 3)],
                want: Plan {
                    lost: s(&["n0"]),
                    ..Plan::default()
                },
            },
            Case {
                name: "a node that needs nobody any more is handed back",
                replicas: 1,
                leases: vec![lease("n0", Some("me"), 2, live)],
                needed: vec![],
                held: vec![("n0", 2)],
                want: Plan {
                    release: s(&["n0"]),
                    ..Plan::default()
                },
            },
            Case {
                name: "a replica at its share takes no more of the just expired",
                replicas: 2,
                leases: vec![
                    lease("n0", Some("me"), 1, live),
                    lease("n1", Some("me"), 1, live),
                    lease("n2", Some("dead"), 1, NOW - 1),
                    lease("n3", Some("b"), 1, live),
                ],
                needed: ids(4),
                held: vec![("n0", 1), ("n1", 1)],
                want: Plan {
                    renew: s(&["n0", "n1"]),
                    ..Plan::default()
                },
            },
            Case {
                name: "a new node (never held) is taken at once even by a replica at its share",
                replicas: 2,
                leases: vec![
                    lease("n0", Some("me"), 1, live),
                    lease("n1", Some("me"), 1, live),
                    lease("n2", None, 0, 0),
                ],
                needed: ids(3),
                held: vec![("n0", 1), ("n1", 1)],
                want: Plan {
                    renew: s(&["n0", "n1"]),
                    take: 1,
                    ..Plan::default()
                },
            },
            Case {
                name: "leases handed back just now are shared out, not grabbed by the first to look",
                replicas: 2,
                leases: ids(6).iter().map(|id| lease(id, None, 3, NOW - 5)).collect(),
                needed: ids(6),
                held: vec![],
                want: Plan {
                    take: 3,
                    ..Plan::default()
                },
            },
            Case {
                name: "free leases of nodes that need nobody are left alone",
                replicas: 1,
                leases: vec![lease("n0", None, 0, 0)],
                needed: vec![],
                held: vec![],
                want: Plan::default(),
            },
        ];
        for c in cases {
            let held: BTreeMap<String, i64> =
                c.held.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            let got = plan(&Tick {
                me: "me",
                now: NOW,
                ttl: TTL,
                replicas: c.replicas,
                leases: &c.leases,
                needed: &c.needed,
                held: &held,
            });
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    /// Every replica's fair share together covers every node: none is left over while all
    /// replicas live.
    #[test]
    fn fair_shares_cover_every_node() {
        for needed in 0..40usize {
            for replicas in 1..6usize {
                let all = ids(needed);
                let leases: Vec<Lease> = all
                    .iter()
                    .map(|id| lease(id, Some("x"), 1, NOW - 1))
                    .collect();
                let held = BTreeMap::new();
                let take = plan(&Tick {
                    me: "me",
                    now: NOW,
                    ttl: TTL,
                    replicas,
                    leases: &leases,
                    needed: &all,
                    held: &held,
                })
                .take;
                assert!(
                    take * replicas >= needed,
                    "{needed} nodes, {replicas} replicas: {take} each"
                );
                assert!(take <= needed);
            }
        }
    }

    #[test]
    fn fencing() {
        for (since, want) in [
            (0, false),
            (3_999, false),
            (4_000, true),
            (6_000, true),
            (60_000, true),
        ] {
            assert_eq!(
                fenced(since, TTL),
                want,
                "{since} ms since the last renewal"
            );
        }
    }

    #[test]
    fn routes() {
        let live = NOW + 1;
        let cases = [
            (None, false, Route::Take, "no lease yet"),
            (
                Some(lease("n", Some("me"), 1, live)),
                true,
                Route::Here,
                "ours",
            ),
            (
                Some(lease("n", Some("b"), 1, live)),
                false,
                Route::Holder("b".into()),
                "another's, live",
            ),
            (
                Some(lease("n", Some("b"), 1, NOW)),
                false,
                Route::Take,
                "another's, expired",
            ),
            (
                Some(lease("n", None, 1, 0)),
                false,
                Route::Take,
                "handed back",
            ),
            (
                Some(lease("n", Some("me"), 1, NOW)),
                true,
                Route::Take,
                "ours, but expired: taken again first",
            ),
            (
                Some(lease("n", Some("me"), 1, live)),
                false,
                Route::Take,
                "the store says ours, this process never took it",
            ),
        ];
        for (l, held, want, name) in cases {
            assert_eq!(route(l.as_ref(), "me", held, NOW), want, "{name}");
        }
    }
}
