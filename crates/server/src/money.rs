//! The server's money policy (defaults, caps, spend limits per period) and what the API shows of
//! a node's money. The decisions themselves are `erigolem_lifecycle::{price, bound}`.

use std::time::Duration;

use erigolem_lifecycle::bound::{self, Ledger};
use erigolem_lifecycle::{Caps, Expected, Glm};
use erigolem_store::{DealRecord, NewPlan, PlanRecord, Store, StoreError, SERVER_LEDGER};

/// What nodes on a paying backend may cost. `erigolem serve` flags: `--budget`,
/// `--max-price-per-hour`, `--max-start-fee`, `--max-price-per-request`, `--expected-hours`,
/// `--expected-requests-per-hour`, `--payment-slack`, `--max-replacements`, `--spend-period`,
/// `--max-spend-per-user`, `--max-spend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentPolicy {
    /// GLM per node (shared with its replacements): the default, and the most a user may ask.
    pub budget: Glm,
    /// The server's caps; a user may only lower them.
    pub caps: Caps,
    /// What offers are compared on, unless the user says how long the node will run.
    pub expected: Expected,
    /// Fixed GLM allowed above start fee + price × time served (clocks, billing intervals).
    pub slack: Glm,
    /// Most replacements of a failed node (auto-replace).
    pub max_replacements: u32,
    /// Spend caps count per period of this length (aligned to the Unix epoch: UTC days).
    pub spend_period: Duration,
    pub max_spend_per_user: Option<Glm>,
    pub max_spend: Option<Glm>,
}

impl Default for PaymentPolicy {
    fn default() -> Self {
        let g = |s: &str| Glm::parse(s).unwrap_or_default();
        Self {
            budget: Glm::whole(5),
            caps: Caps {
                max_price_per_hour: Some(Glm::whole(1)),
                max_start_fee: Some(g("0.1")),
                max_price_per_request: Some(g("0.0001")),
            },
            expected: Expected {
                hours: 1,
                requests_per_hour: 1000,
            },
            slack: g("0.01"),
            max_replacements: 2,
            spend_period: Duration::from_secs(24 * 3600),
            max_spend_per_user: None,
            max_spend: None,
        }
    }
}

/// What a user asked for a node beyond its network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AskedTerms {
    pub budget: Option<Glm>,
    pub max_price_per_hour: Option<Glm>,
    pub max_start_fee: Option<Glm>,
    pub expected_hours: Option<u32>,
    pub auto_replace: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TermsError {
    #[error("budget, max_price_per_hour, max_start_fee and expected_hours apply only where nodes are paid for (the golem backend)")]
    NotSupported,
    #[error("{0} must be more than 0 GLM")]
    Zero(&'static str),
    #[error("expected_hours must be between 1 and 8784")]
    Hours,
}

/// Why no node may be started now, when the owner's or the server's spend cap is reached.
pub(crate) fn cap_reached(user: &Ledger, server: &Ledger) -> Option<String> {
    [(user, "your"), (server, "the server's")]
        .into_iter()
        .find_map(|(ledger, whose)| {
            let cap = ledger.cap.as_ref()?;
            (&ledger.spent >= cap).then(|| {
                format!(
                    "{whose} spend cap of {cap} GLM for this period is reached ({} GLM spent)",
                    ledger.spent
                )
            })
        })
}

impl PaymentPolicy {
    /// The plan of a new node: what the user asked, within the server's policy (a user may ask
    /// for less budget than the server's and lower caps, never more).
    pub fn plan(&self, pays: bool, asked: AskedTerms) -> Result<NewPlan, TermsError> {
        let money = asked.budget.is_some()
            || asked.max_price_per_hour.is_some()
            || asked.max_start_fee.is_some()
            || asked.expected_hours.is_some();
        if !pays && money {
            return Err(TermsError::NotSupported);
        }
        for (name, value) in [
            ("budget", &asked.budget),
            ("max_price_per_hour", &asked.max_price_per_hour),
        ] {
            if value.as_ref().is_some_and(Glm::is_zero) {
                return Err(TermsError::Zero(name));
            }
        }
        if asked
            .expected_hours
            .is_some_and(|h| !(1..=24 * 366).contains(&h))
        {
            return Err(TermsError::Hours);
        }
        Ok(NewPlan {
            budget: pays.then(|| {
                asked
                    .budget
                    .map_or(self.budget.clone(), |b| b.min(self.budget.clone()))
            }),
            max_price_per_hour: asked.max_price_per_hour,
            max_start_fee: asked.max_start_fee,
            expected_hours: asked.expected_hours,
            auto_replace: asked.auto_replace,
            max_replacements: self.max_replacements,
        })
    }

    /// Start of the spend period `now` (unix ms) falls in.
    pub fn period_start(&self, now: i64) -> i64 {
        let len = i64::try_from(self.spend_period.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        now - now.rem_euclid(len)
    }

    /// The owner's and the server's spend this period, with their caps.
    pub(crate) async fn ledgers(
        &self,
        store: &Store,
        owner: &str,
        now: i64,
    ) -> Result<(Ledger, Ledger), StoreError> {
        let period = self.period_start(now);
        Ok((
            Ledger {
                spent: store.spent(owner, period).await?,
                cap: self.max_spend_per_user.clone(),
            },
            Ledger {
                spent: store.spent(SERVER_LEDGER, period).await?,
                cap: self.max_spend.clone(),
            },
        ))
    }
}

pub use erigolem_api::Billing;

/// The node's money as the API shows it, when it is on a paying backend and had an agreement.
pub(crate) fn billing(
    deals: &[DealRecord],
    plan: &PlanRecord,
    live: bool,
    slack: &Glm,
    now: i64,
) -> Option<Billing> {
    let latest = deals.first()?;
    let budget = plan.budget.clone()?;
    let payable = bound::payable(&latest.price, &latest.service, now, slack);
    let others = plan.spent.saturating_sub(&latest.accepted);
    let left = budget.saturating_sub(&(&others + &payable));
    Some(Billing {
        provider_id: latest.provider_id.clone(),
        provider_name: latest
            .provider_name
            .as_deref()
            .map(erigolem_lifecycle::text::provider_text),
        agreement_id: latest.agreement_id.clone(),
        price_per_hour: latest.price.per_hour.clone(),
        start_fee: latest.price.start_fee.clone(),
        price_per_request: latest.price.per_request.clone(),
        spent: deals.iter().map(|d| d.accepted.clone()).sum(),
        budget_spent: plan.spent.clone(),
        budget,
        payable,
        served_secs: latest.service.served_ms(now) / 1000,
        runway_secs: live
            .then(|| bound::runway_secs(&latest.price, &left))
            .flatten(),
        settled: latest.settled,
        refused: deals.iter().find_map(|d| d.refused.clone()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn g(s: &str) -> Glm {
        Glm::parse(s).unwrap()
    }

    #[test]
    fn a_plan_is_the_users_terms_within_the_servers() {
        let policy = PaymentPolicy::default();
        let asked = |budget: Option<&str>| AskedTerms {
            budget: budget.map(g),
            auto_replace: true,
            ..AskedTerms::default()
        };
        assert_eq!(policy.plan(true, asked(None)).unwrap().budget, Some(g("5")));
        assert_eq!(
            policy.plan(true, asked(Some("2"))).unwrap().budget,
            Some(g("2"))
        );
        assert_eq!(
            policy.plan(true, asked(Some("50"))).unwrap().budget,
            Some(g("5")),
            "never more than the server's"
        );
        let plan = policy.plan(true, asked(None)).unwrap();
        assert!(plan.auto_replace);
        assert_eq!(plan.max_replacements, 2);
        assert_eq!(policy.plan(false, asked(None)).unwrap().budget, None);
        assert_eq!(
            policy.plan(false, asked(Some("1"))),
            Err(TermsError::NotSupported)
        );
        assert_eq!(
            policy.plan(true, asked(Some("0"))),
            Err(TermsError::Zero("budget"))
        );
        let hours = AskedTerms {
            expected_hours: Some(0),
            ..AskedTerms::default()
        };
        assert_eq!(policy.plan(true, hours), Err(TermsError::Hours));
    }

    #[test]
    fn caps_and_periods() {
        let open = Ledger::default();
        let reached = Ledger {
            spent: g("1"),
            cap: Some(g("1")),
        };
        let room = Ledger {
            spent: g("0.5"),
            cap: Some(g("1")),
        };
        assert_eq!(cap_reached(&open, &room), None);
        assert!(cap_reached(&reached, &open)
            .unwrap()
            .starts_with("your spend cap of 1 GLM"));
        assert!(cap_reached(&open, &reached)
            .unwrap()
            .starts_with("the server's"));
        let day = PaymentPolicy::default();
        assert_eq!(day.period_start(86_400_000 * 3 + 5), 86_400_000 * 3);
    }
}
