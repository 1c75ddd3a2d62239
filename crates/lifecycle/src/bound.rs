//! What a provider may be paid, and nothing more.
//!
//! The most ever accepted on one agreement is
//! `start fee + price per hour × time served + price per request × requests + slack`, where the
//! time served runs from the requestor's first successful STATUS to the moment the node was
//! stopped or failed (measured by the requestor, frozen then), the start fee is owed only once the
//! node served (no service, no fee), requests are the most the node's STATUS ever reported, and
//! the slack is a fixed small amount of GLM for clocks and billing intervals. On top: the node's
//! budget, shared by its replacements, and the per-user and server-wide spend caps per period.
//! A payment document asking more is refused (or, where yagna cannot reject it, left unaccepted)
//! with the reason.

use serde::{Deserialize, Serialize};

use crate::money::Glm;
use crate::price::LinearPrice;

const MS_PER_HOUR: u64 = 3_600_000;

/// How much service the requestor saw: unix milliseconds by its own clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The first successful STATUS.
    pub served_from: Option<i64>,
    /// When the node was stopped or failed: billing is frozen there.
    pub served_until: Option<i64>,
    /// The most requests the node's STATUS reported (for per-request prices).
    pub requests: u64,
}

impl Service {
    /// Milliseconds served up to `now`.
    pub fn served_ms(&self, now: i64) -> u64 {
        let Some(from) = self.served_from else {
            return 0;
        };
        let until = self.served_until.map_or(now, |u| u.min(now));
        u64::try_from(until.saturating_sub(from)).unwrap_or(0)
    }
}

/// The most that may have been accepted on an agreement by `now`.
pub fn payable(price: &LinearPrice, service: &Service, now: i64, slack: &Glm) -> Glm {
    if service.served_from.is_none() {
        return slack.clone();
    }
    let time = price
        .per_hour
        .times_ratio(service.served_ms(now), MS_PER_HOUR);
    let requests = price
        .per_request
        .as_ref()
        .map_or_else(Glm::zero, |p| p.times(service.requests));
    (&(&(&price.start_fee + &time) + &requests) + slack).to_wei_precision()
}

/// Spent so far in the current period, and the cap (if any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    pub spent: Glm,
    pub cap: Option<Glm>,
}

impl Ledger {
    fn room(&self) -> Option<Glm> {
        self.cap.as_ref().map(|c| c.saturating_sub(&self.spent))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    /// Running total due on one activity, while it runs.
    DebitNote,
    /// The final amount of the agreement.
    Invoice,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::DebitNote => "debit_note",
            DocumentKind::Invoice => "invoice",
        }
    }
}

/// Everything a payment decision looks at.
#[derive(Debug, Clone)]
pub struct PaymentFacts<'a> {
    pub kind: DocumentKind,
    /// What the document asks for (the running total of the agreement); `Err` when it did not parse.
    pub amount: Result<&'a Glm, &'a str>,
    pub price: &'a LinearPrice,
    pub service: &'a Service,
    /// Accepted on this agreement so far (debit notes are running totals: the largest counts).
    pub accepted: &'a Glm,
    /// Its invoice was accepted already.
    pub settled: bool,
    /// We ended the agreement (or froze its billing): no more service is coming.
    pub ended: bool,
    /// The node's budget, shared by its replacements, and what they all accepted so far.
    pub budget: &'a Glm,
    pub budget_spent: &'a Glm,
    pub user: &'a Ledger,
    pub server: &'a Ledger,
    pub now: i64,
    pub slack: &'a Glm,
}

/// Why a document is not paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The provider asks more than its agreement allows: its fault.
    AboveTerms {
        amount: Glm,
        most: Glm,
        served_secs: u64,
    },
    Malformed(String),
    /// An invoice below what its debit notes already got accepted (yagna refuses to accept that).
    BelowAccepted {
        amount: Glm,
        accepted: Glm,
    },
    /// A further invoice after one was paid.
    AlreadySettled,
    Budget {
        budget: Glm,
        spent: Glm,
        increment: Glm,
    },
    UserCap {
        cap: Glm,
        spent: Glm,
        increment: Glm,
    },
    ServerCap {
        cap: Glm,
        spent: Glm,
        increment: Glm,
    },
}

impl Refusal {
    /// The provider broke its agreement (as opposed to our budget or caps running out).
    pub fn provider_at_fault(&self) -> bool {
        matches!(
            self,
            Refusal::AboveTerms { .. }
                | Refusal::Malformed(_)
                | Refusal::BelowAccepted { .. }
                | Refusal::AlreadySettled
        )
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::AboveTerms {
                amount,
                most,
                served_secs,
            } => write!(
                f,
                "{amount} GLM is more than the agreed price allows: at most {most} GLM for {served_secs} s served"
            ),
            Refusal::Malformed(why) => write!(f, "its amount is not a valid amount of GLM ({why})"),
            Refusal::BelowAccepted { amount, accepted } => write!(
                f,
                "the invoice of {amount} GLM is less than the {accepted} GLM its debit notes already got"
            ),
            Refusal::AlreadySettled => f.write_str("the agreement's invoice was paid already"),
            Refusal::Budget {
                budget,
                spent,
                increment,
            } => write!(
                f,
                "paying {increment} GLM more would exceed the node's budget of {budget} GLM ({spent} GLM spent)"
            ),
            Refusal::UserCap {
                cap,
                spent,
                increment,
            } => write!(
                f,
                "paying {increment} GLM more would exceed the owner's spend cap of {cap} GLM this period ({spent} GLM spent)"
            ),
            Refusal::ServerCap {
                cap,
                spent,
                increment,
            } => write!(
                f,
                "paying {increment} GLM more would exceed the server's spend cap of {cap} GLM this period ({spent} GLM spent)"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentDecision {
    /// Accept it: it pays `increment` GLM more than was accepted on the agreement before.
    Accept {
        increment: Glm,
    },
    Refuse(Refusal),
    /// Not yet: the node is still starting (not served, not ended) and the document asks no more
    /// than the start fee + slack it will be owed once it serves. Decide again when it serves or
    /// ends (a provider may bill its start fee before its node answers).
    Wait,
}

/// Accept or refuse one payment document.
pub fn decide_payment(f: &PaymentFacts<'_>) -> PaymentDecision {
    use PaymentDecision::{Accept, Refuse, Wait};
    let amount = match f.amount {
        Ok(a) => a,
        Err(why) => return Refuse(Refusal::Malformed(why.to_owned())),
    };
    if f.kind == DocumentKind::Invoice && f.settled {
        return Refuse(Refusal::AlreadySettled);
    }
    let most = payable(f.price, f.service, f.now, f.slack);
    let starting = f.service.served_from.is_none() && !f.ended;
    if amount > &most && starting && amount <= &(&f.price.start_fee + f.slack) {
        return Wait;
    }
    if amount > &most {
        return Refuse(Refusal::AboveTerms {
            amount: amount.clone(),
            most,
            served_secs: f.service.served_ms(f.now) / 1000,
        });
    }
    if f.kind == DocumentKind::Invoice && amount < f.accepted {
        return Refuse(Refusal::BelowAccepted {
            amount: amount.clone(),
            accepted: f.accepted.clone(),
        });
    }
    let increment = amount.saturating_sub(f.accepted);
    if &(f.budget_spent + &increment) > f.budget {
        return Refuse(Refusal::Budget {
            budget: f.budget.clone(),
            spent: f.budget_spent.clone(),
            increment,
        });
    }
    for (ledger, server) in [(f.user, false), (f.server, true)] {
        if ledger.room().is_some_and(|room| increment > room) {
            let (cap, spent) = (ledger.cap.clone().unwrap_or_default(), ledger.spent.clone());
            return Refuse(match server {
                false => Refusal::UserCap {
                    cap,
                    spent,
                    increment,
                },
                true => Refusal::ServerCap {
                    cap,
                    spent,
                    increment,
                },
            });
        }
    }
    Accept { increment }
}

/// Everything the "must this running node end now?" check looks at.
#[derive(Debug, Clone)]
pub struct EndingFacts<'a> {
    pub price: &'a LinearPrice,
    pub service: &'a Service,
    /// Accepted on this agreement so far.
    pub accepted: &'a Glm,
    pub budget: &'a Glm,
    /// Accepted on every agreement of the node's plan (this one included).
    pub budget_spent: &'a Glm,
    pub user: &'a Ledger,
    pub server: &'a Ledger,
    /// When the agreement expires (unix ms).
    pub agreement_ends_at: i64,
    pub now: i64,
    pub slack: &'a Glm,
}

/// A node is stopped this long before its money or its agreement runs out.
pub const ENDING_MARGIN_MS: i64 = 60_000;
/// And this long before its agreement expires.
pub const AGREEMENT_END_MARGIN_MS: i64 = 5 * 60_000;

/// Why a running node must be stopped now (before it runs unpaid or loses its agreement), if so.
pub fn must_end(f: &EndingFacts<'_>) -> Option<String> {
    let soon = f.now + ENDING_MARGIN_MS;
    // What this agreement would be owed a minute from now, beyond what it was paid.
    let due = payable(f.price, f.service, soon, f.slack).saturating_sub(f.accepted);
    let others = f.budget_spent.saturating_sub(f.accepted);
    if &(&others + &payable(f.price, f.service, soon, f.slack)) > f.budget {
        return Some(format!(
            "its budget of {} GLM is used up (at {} GLM/h)",
            f.budget, f.price.per_hour
        ));
    }
    for (ledger, whose) in [(f.user, "your"), (f.server, "the server's")] {
        if let Some(cap) = &ledger.cap {
            if &(&ledger.spent + &due) > cap {
                return Some(format!(
                    "{whose} spend cap of {cap} GLM for this period is reached"
                ));
            }
        }
    }
    if f.now >= f.agreement_ends_at - AGREEMENT_END_MARGIN_MS {
        return Some("its agreement with the provider ends".to_owned());
    }
    None
}

/// How many seconds the rest of the budget pays for at the agreed hourly price, while it runs.
pub fn runway_secs(price: &LinearPrice, budget_left: &Glm) -> Option<u64> {
    if price.per_hour.is_zero() {
        return None;
    }
    // budget_left / per_hour hours, in seconds, rounded down.
    let secs =
        budget_left.as_decimal() * bigdecimal::BigDecimal::from(3600) / price.per_hour.as_decimal();
    secs.with_scale(0).to_string().parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn g(s: &str) -> Glm {
        Glm::parse(s).unwrap()
    }

    fn price(per_hour: &str, start_fee: &str) -> LinearPrice {
        LinearPrice {
            per_hour: g(per_hour),
            start_fee: g(start_fee),
            per_request: None,
        }
    }

    const T0: i64 = 1_700_000_000_000;

    fn served(from: i64, until: Option<i64>) -> Service {
        Service {
            served_from: Some(from),
            served_until: until,
            requests: 0,
        }
    }

    #[test]
    fn the_bound_counts_only_time_served_and_freezes_at_the_stop() {
        let p = price("36", "0.5");
        let slack = g("0.01");
        // Not served yet: only the slack, not even the start fee.
        assert_eq!(payable(&p, &Service::default(), T0, &slack), g("0.01"));
        // 10 s served at 36 GLM/h = 0.1 GLM.
        let s = served(T0, None);
        assert_eq!(payable(&p, &s, T0 + 10_000, &slack), g("0.61"));
        // Frozen at the failure: later clocks add nothing.
        let failed = served(T0, Some(T0 + 10_000));
        assert_eq!(payable(&p, &failed, T0 + 3_600_000, &slack), g("0.61"));
        // A clock before the start counts as nothing served.
        assert_eq!(payable(&p, &s, T0 - 5_000, &slack), g("0.51"));
        // Per-request prices count the requests STATUS reported.
        let per_request = LinearPrice {
            per_request: Some(g("0.0001")),
            ..p.clone()
        };
        let busy = Service {
            requests: 1000,
            ..failed.clone()
        };
        assert_eq!(payable(&per_request, &busy, T0 + 10_000, &slack), g("0.71"));
    }

    #[derive(Clone, Copy)]
    struct Case {
        what: &'static str,
        kind: DocumentKind,
        amount: &'static str,
        accepted: &'static str,
        settled: bool,
        budget_spent: &'static str,
        /// (spent, cap)
        user: Option<(&'static str, &'static str)>,
        server: Option<(&'static str, &'static str)>,
        want: Result<&'static str, &'static str>,
    }

    fn no_cap() -> Ledger {
        Ledger::default()
    }

    fn cap(spent: &str, cap: &str) -> Ledger {
        Ledger {
            spent: g(spent),
            cap: Some(g(cap)),
        }
    }

    fn ledger(l: Option<(&str, &str)>) -> Ledger {
        l.map_or_else(no_cap, |(s, c)| cap(s, c))
    }

    /// 36 GLM/h + 0.5 start, 10 s served, slack 0.01: at most 0.61 GLM; budget 2 GLM.
    #[test]
    fn payment_documents_within_the_bound_budget_and_caps_are_paid_once_others_refused() {
        let base = Case {
            what: "",
            kind: DocumentKind::DebitNote,
            amount: "0.6",
            accepted: "0",
            settled: false,
            budget_spent: "0",
            user: None,
            server: None,
            want: Ok("0.6"),
        };
        let cases = [
            Case {
                what: "a debit note within the bound",
                ..base
            },
            Case {
                what: "a running total pays only what is new",
                accepted: "0.4",
                budget_spent: "0.4",
                want: Ok("0.2"),
                ..base
            },
            Case {
                what: "a lower or repeated note pays nothing more",
                amount: "0.3",
                accepted: "0.4",
                budget_spent: "0.4",
                want: Ok("0"),
                ..base
            },
            Case {
                what: "exactly the bound",
                amount: "0.61",
                want: Ok("0.61"),
                ..base
            },
            Case {
                what: "above price × time",
                amount: "0.62",
                want: Err("0.62 GLM is more than the agreed price allows: at most 0.61 GLM for 10 s served"),
                ..base
            },
            Case {
                what: "the whole budget as a start fee",
                amount: "1.99",
                want: Err("more than the agreed price allows"),
                ..base
            },
            Case {
                what: "an invoice within the bound",
                kind: DocumentKind::Invoice,
                accepted: "0.5",
                budget_spent: "0.5",
                want: Ok("0.1"),
                ..base
            },
            Case {
                what: "an invoice above the agreement",
                kind: DocumentKind::Invoice,
                amount: "5.6",
                want: Err("5.6 GLM is more than the agreed price allows"),
                ..base
            },
            Case {
                what: "an invoice below its accepted debit notes",
                kind: DocumentKind::Invoice,
                amount: "0.3",
                accepted: "0.4",
                want: Err("less than the 0.4 GLM"),
                ..base
            },
            Case {
                what: "a second invoice",
                kind: DocumentKind::Invoice,
                settled: true,
                want: Err("paid already"),
                ..base
            },
            Case {
                what: "replacements share the budget",
                budget_spent: "1.5",
                want: Err("would exceed the node's budget of 2 GLM (1.5 GLM spent)"),
                ..base
            },
            Case {
                what: "the owner's cap",
                user: Some(("0.9", "1")),
                want: Err("the owner's spend cap of 1 GLM this period (0.9 GLM spent)"),
                ..base
            },
            Case {
                what: "the server's cap",
                user: Some(("0", "10")),
                server: Some(("99.5", "100")),
                want: Err("the server's spend cap of 100 GLM"),
                ..base
            },
            Case {
                what: "within both caps",
                user: Some(("0.4", "1")),
                server: Some(("99.4", "100")),
                want: Ok("0.6"),
                ..base
            },
        ];
        let p = price("36", "0.5");
        let s = served(T0, None);
        for c in cases {
            let amount = g(c.amount);
            let decision = decide_payment(&PaymentFacts {
                kind: c.kind,
                amount: Ok(&amount),
                price: &p,
                service: &s,
                accepted: &g(c.accepted),
                settled: c.settled,
                ended: false,
                budget: &g("2"),
                budget_spent: &g(c.budget_spent),
                user: &ledger(c.user),
                server: &ledger(c.server),
                now: T0 + 10_000,
                slack: &g("0.01"),
            });
            match (decision, c.want) {
                (PaymentDecision::Accept { increment }, Ok(want)) => {
                    assert_eq!(increment, g(want), "{}", c.what)
                }
                (PaymentDecision::Refuse(r), Err(want)) => {
                    assert!(r.to_string().contains(want), "{}: {r}", c.what)
                }
                (got, want) => panic!("{}: got {got:?}, wanted {want:?}", c.what),
            }
        }
    }

    /// A start fee billed while the node is still starting waits for it to serve; once the
    /// agreement ended without service, only the slack was ever owed.
    #[test]
    fn a_start_fee_before_the_node_serves_waits_and_without_service_is_refused() {
        let p = price("3.6", "0.05");
        let not_yet = Service::default();
        let decide = |amount: &str, service: &Service, ended: bool| {
            let amount = g(amount);
            decide_payment(&PaymentFacts {
                kind: DocumentKind::DebitNote,
                amount: Ok(&amount),
                price: &p,
                service,
                accepted: &Glm::zero(),
                settled: false,
                ended,
                budget: &g("1"),
                budget_spent: &Glm::zero(),
                user: &no_cap(),
                server: &no_cap(),
                now: T0 + 2_000,
                slack: &g("0.01"),
            })
        };
        assert_eq!(decide("0.052", &not_yet, false), PaymentDecision::Wait);
        assert_eq!(
            decide("0.005", &not_yet, false),
            PaymentDecision::Accept {
                increment: g("0.005")
            },
            "within the slack: paid at once"
        );
        assert!(
            matches!(
                decide("0.07", &not_yet, false),
                PaymentDecision::Refuse(Refusal::AboveTerms { .. })
            ),
            "more than the start fee + slack is never owed before service"
        );
        assert!(
            matches!(
                decide("0.052", &not_yet, true),
                PaymentDecision::Refuse(Refusal::AboveTerms { .. })
            ),
            "ended without service: no start fee"
        );
        let served = served(T0, None);
        assert_eq!(
            decide("0.052", &served, false),
            PaymentDecision::Accept {
                increment: g("0.052")
            }
        );
    }

    #[test]
    fn only_the_providers_breaches_are_its_fault() {
        let g0 = Glm::zero();
        assert!(Refusal::AboveTerms {
            amount: g0.clone(),
            most: g0.clone(),
            served_secs: 0
        }
        .provider_at_fault());
        assert!(Refusal::Malformed("x".into()).provider_at_fault());
        assert!(!Refusal::Budget {
            budget: g0.clone(),
            spent: g0.clone(),
            increment: g0.clone()
        }
        .provider_at_fault());
        assert!(!Refusal::UserCap {
            cap: g0.clone(),
            spent: g0.clone(),
            increment: g0
        }
        .provider_at_fault());
        let p = price("1", "0");
        let s = Service::default();
        let decision = decide_payment(&PaymentFacts {
            kind: DocumentKind::DebitNote,
            amount: Err("\"abc\" is not a decimal"),
            price: &p,
            service: &s,
            accepted: &Glm::zero(),
            settled: false,
            ended: false,
            budget: &g("1"),
            budget_spent: &Glm::zero(),
            user: &no_cap(),
            server: &no_cap(),
            now: T0,
            slack: &g("0.01"),
        });
        assert!(matches!(
            decision,
            PaymentDecision::Refuse(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn a_running_node_ends_before_its_budget_caps_or_agreement_run_out() {
        let p = price("36", "0.5");
        let s = served(T0, None);
        let slack = g("0.01");
        let facts =
            |budget: &'static str, spent: &'static str, user: Ledger, ends: i64, now: i64| {
                let (budget, spent) = (g(budget), g(spent));
                let server = no_cap();
                must_end(&EndingFacts {
                    price: &p,
                    service: &s,
                    accepted: &spent,
                    budget: &budget,
                    budget_spent: &spent,
                    user: &user,
                    server: &server,
                    agreement_ends_at: ends,
                    now,
                    slack: &slack,
                })
            };
        let day = T0 + 86_400_000;
        // 10 s in, a minute more costs 0.6: 0.5 + 0.1 + 0.6 + 0.01 = 1.21.
        assert_eq!(facts("2", "0.6", no_cap(), day, T0 + 10_000), None);
        assert!(facts("1.2", "0.6", no_cap(), day, T0 + 10_000)
            .unwrap()
            .contains("budget of 1.2 GLM is used up (at 36 GLM/h)"));
        assert!(facts("2", "0.6", cap("0.9", "1"), day, T0 + 10_000)
            .unwrap()
            .contains("your spend cap of 1 GLM"));
        assert!(facts("2", "0.6", no_cap(), T0 + 300_000, T0 + 10_000)
            .unwrap()
            .contains("agreement with the provider ends"));
    }

    #[test]
    fn runway() {
        assert_eq!(runway_secs(&price("36", "0"), &g("1")), Some(100));
        assert_eq!(runway_secs(&price("0", "0"), &g("1")), None);
        assert_eq!(runway_secs(&price("0.36", "0"), &g("0.001")), Some(10));
    }
}
