//! The requestor's side of a Golem deal, as plain steps on [`Yagna`]: publish a demand for runtime
//! `erigon` on a network, negotiate with the offers that answer, sign an agreement. Used by the
//! server's golem backend and by the provider agent's tests.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::model::market::{proposal::State, NewDemand, Proposal, RequestorEvent};
use crate::{Utc, Yagna, YagnaError};

pub use crate::props::linear_coeffs;

/// What a requestor asks for.
#[derive(Debug, Clone)]
pub struct DemandSpec {
    pub network: String,
    pub mode: Option<String>,
    pub subnet: String,
    pub payment_platform: String,
    /// The requestor's node id (the payer's address on the platform).
    pub payer: String,
    /// How long agreements made from this demand may last.
    pub expiration: Duration,
}

impl DemandSpec {
    pub fn demand(&self) -> NewDemand {
        let expiration = Utc::now().timestamp_millis() + self.expiration.as_millis() as i64;
        let mut properties = json!({
            "golem.srv.comp.expiration": expiration,
            "golem.node.debug.subnet": self.subnet,
            "golem.com.payment.chosen-platform": self.payment_platform,
            format!("golem.com.payment.platform.{}.address", self.payment_platform): self.payer,
            "golem.com.payment.debit-notes.accept-timeout?": 240,
            "erigolem.network": self.network,
        });
        if let Some(mode) = &self.mode {
            properties["erigolem.mode"] = json!(mode);
        }
        // Only linear prices can be bounded (as yapapi's LeastExpensiveLinearPayuMS asks too).
        // Caps on the coefficients cannot be constraints: yagna's resolver answers false to any
        // ordering operator on a list property; every proposal is judged by `DealOptions::accept`.
        NewDemand::new(
            properties,
            format!(
                "(&(golem.runtime.name=erigon)(golem.node.debug.subnet={})(golem.com.pricing.model=linear))",
                self.subnet
            ),
        )
    }
}

/// An agreement both sides signed.
#[derive(Debug, Clone)]
pub struct Deal {
    pub agreement_id: String,
    pub provider_id: String,
    /// The provider's final proposal (its offer's properties: price, name, networks).
    pub offer: Proposal,
    /// Time from publishing the demand to the first offer, and to the approved agreement.
    pub first_offer_after: Duration,
    pub approved_after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DealError {
    #[error(transparent)]
    Yagna(#[from] YagnaError),
    #[error("no provider agreed within {waited:?}{}", reasons(.rejections))]
    NoDeal {
        waited: Duration,
        rejections: Vec<String>,
    },
}

fn reasons(rejections: &[String]) -> String {
    if rejections.is_empty() {
        " (no offers)".to_owned()
    } else {
        format!(": {}", rejections.join("; "))
    }
}

/// How a requestor picks among the providers that answer.
pub struct DealOptions<'a> {
    /// Give up (with [`DealError::NoDeal`] and every reason heard) after this long.
    pub timeout: Duration,
    /// After the first provider's answer, wait at least this long for others, and on until every
    /// provider whose offer we answered has answered too (or `max_window` has passed); then sign
    /// with the cheapest. A provider that answers fast does not win for being fast.
    pub window: Duration,
    pub max_window: Duration,
    /// Whether a proposal (the provider's first offer, and its answer to our demand) is
    /// acceptable, or why not (price caps, allow/deny lists, …).
    pub accept: &'a (dyn Fn(&Proposal) -> Result<(), String> + Send + Sync),
    /// Which of two answers to sign with first (`Less` = `a`): the cheaper one.
    pub order: &'a (dyn Fn(&Proposal, &Proposal) -> std::cmp::Ordering + Send + Sync),
}

impl std::fmt::Debug for DealOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DealOptions")
            .field("timeout", &self.timeout)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// Publishes `spec`'s demand, answers initial offers with it, and signs an agreement with the first
/// provider whose counter-proposal `accept` takes. Gives up after `timeout`.
pub async fn make_deal(
    yagna: &Yagna,
    spec: &DemandSpec,
    timeout: Duration,
    accept: impl Fn(&Proposal) -> bool + Send + Sync,
) -> Result<Deal, DealError> {
    let accept = move |p: &Proposal| {
        if accept(p) {
            Ok(())
        } else {
            Err("not accepted".to_owned())
        }
    };
    let options = DealOptions {
        timeout,
        window: Duration::ZERO,
        max_window: Duration::ZERO,
        accept: &accept,
        order: &|_, _| std::cmp::Ordering::Equal,
    };
    make_deal_with(yagna, spec, &options).await
}

/// [`make_deal`] choosing among the answers that arrive within `options.window`, cheapest first
/// (the next one if an agreement fails). The demand is unsubscribed at the end either way.
pub async fn make_deal_with(
    yagna: &Yagna,
    spec: &DemandSpec,
    options: &DealOptions<'_>,
) -> Result<Deal, DealError> {
    let demand = spec.demand();
    let started = Instant::now();
    let subscription = yagna.subscribe_demand(&demand).await?;
    let result = async {
        let mut rejections = Vec::new();
        let mut first_offer_after = None;
        // Providers' answers to our counter-proposals, and when the first came.
        let mut answers: Vec<Proposal> = Vec::new();
        let mut first_answer: Option<Instant> = None;
        // Our counter-proposals not answered yet: their id → the provider.
        let mut waiting: std::collections::HashMap<String, String> = Default::default();
        while started.elapsed() < options.timeout {
            let left = options.timeout.saturating_sub(started.elapsed());
            let poll = match first_answer {
                Some(at) => options.window.saturating_sub(at.elapsed()),
                None => Duration::from_secs(2),
            }
            .min(left)
            .max(Duration::from_millis(50));
            for event in yagna.demand_events(&subscription, poll, 16).await? {
                match event {
                    RequestorEvent::ProposalEvent { proposal, .. } => {
                        first_offer_after.get_or_insert(started.elapsed());
                        if let Err(why) = (options.accept)(&proposal) {
                            rejections.push(format!("{}: {why}", proposal.issuer_id));
                            continue;
                        }
                        let issuer = proposal.issuer_id.to_string().to_lowercase();
                        if proposal.state == State::Initial {
                            // Answer with our demand; the provider counters if it can serve it.
                            match yagna
                                .counter_demand(&subscription, &proposal.proposal_id, &demand)
                                .await
                            {
                                Ok(ours) => {
                                    waiting.insert(ours, issuer);
                                }
                                Err(e) => rejections.push(format!("{}: {e}", proposal.issuer_id)),
                            }
                            continue;
                        }
                        waiting.retain(|_, who| who != &issuer);
                        first_answer.get_or_insert_with(Instant::now);
                        answers.push(proposal);
                    }
                    RequestorEvent::ProposalRejectedEvent {
                        proposal_id,
                        reason,
                        ..
                    } => {
                        waiting.remove(&proposal_id);
                        rejections.push(
                            reason
                                .map(|r| r.message)
                                .unwrap_or_else(|| format!("proposal {proposal_id} rejected")),
                        );
                    }
                    RequestorEvent::PropertyQueryEvent { .. } => {}
                }
            }
            let decided = first_answer.is_some_and(|at| {
                at.elapsed() >= options.window
                    && (waiting.is_empty() || at.elapsed() >= options.max_window)
            });
            if decided && !answers.is_empty() {
                answers.sort_by(|a, b| (options.order)(a, b));
                for proposal in answers.drain(..) {
                    match sign(yagna, &proposal.proposal_id, spec.expiration).await {
                        Ok(agreement_id) => {
                            return Ok(Deal {
                                agreement_id,
                                provider_id: proposal.issuer_id.to_string().to_lowercase(),
                                offer: proposal,
                                first_offer_after: first_offer_after.unwrap_or_default(),
                                approved_after: started.elapsed(),
                            });
                        }
                        Err(e) => rejections.push(format!("{}: {e}", proposal.issuer_id)),
                    }
                }
                first_answer = None;
                waiting.clear();
            }
        }
        Err(DealError::NoDeal {
            waited: started.elapsed(),
            rejections,
        })
    }
    .await;
    let _ = yagna.unsubscribe_demand(&subscription).await;
    result
}

/// How long the provider has to approve.
const APPROVAL_WAIT: Duration = Duration::from_secs(15);

async fn sign(yagna: &Yagna, proposal_id: &str, validity: Duration) -> Result<String, YagnaError> {
    let valid_to = Utc::now() + crate::chrono::Duration::milliseconds(validity.as_millis() as i64);
    let agreement_id = yagna.create_agreement(proposal_id, valid_to).await?;
    yagna.confirm_agreement(&agreement_id).await?;
    yagna
        .wait_for_approval(&agreement_id, APPROVAL_WAIT)
        .await?;
    Ok(agreement_id)
}
