//! Pays what is due and nothing more. Every debit note and invoice of our agreements is decided
//! once by the lifecycle core (`erigolem_lifecycle::bound::decide_payment`) on the numbers in the
//! store, reserved there (document row + totals, compare-and-set), then accepted at yagna and
//! confirmed; or refused with the reason shown on the node. Documents of agreements the store does
//! not know are left alone (not ours: another program on the same yagna). A restarted server
//! reads the events again from the oldest open agreement on: the store's document ids make sure
//! nothing is decided, counted or paid twice.

use std::sync::Arc;
use std::time::Duration;

use erigolem_lifecycle::bound::{self, PaymentFacts};
use erigolem_lifecycle::{DocumentKind, Event, Glm, PaymentDecision};
use erigolem_store::{
    DocumentRecord, DocumentState, NewDocument, Reservation, Reserved, StoreError,
};

use crate::backend::{BackendError, Cursor, Payer, PaymentDocument};
use crate::reconciler;
use crate::AppState;

/// Decisions retried when the totals they read moved meanwhile.
const DECIDE_ATTEMPTS: usize = 8;

pub(crate) fn spawn(state: Arc<AppState>) -> Option<tokio::task::JoinHandle<()>> {
    state.backend.as_ref()?.payer()?;
    Some(crate::spawn_until(
        state.shutting_down.subscribe(),
        run(state),
    ))
}

async fn run(state: Arc<AppState>) {
    let mut cursor = match first_cursor(&state).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("payments: cannot read the open agreements: {e}");
            return;
        }
    };
    // Documents that wait for their node to serve or end, decided again each round.
    let mut waiting: Vec<PaymentDocument> = Vec::new();
    loop {
        let Some(payer) = state.backend.as_ref().and_then(|b| b.payer()) else {
            return;
        };
        if let Err(e) = carry_out_reserved(&state, payer).await {
            tracing::warn!("payments: {e}");
        }
        let fresh = match payer.documents(&mut cursor).await {
            Ok(documents) => documents,
            Err(e) => {
                tracing::debug!("payment events: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Vec::new()
            }
        };
        let mut again: Vec<PaymentDocument> = Vec::new();
        for document in std::mem::take(&mut waiting).into_iter().chain(fresh) {
            match process(&state, payer, &document).await {
                Ok(Processed::Wait) => {
                    if !again.iter().any(|d| d.id == document.id) {
                        again.push(document);
                    }
                }
                Ok(Processed::Done) => {}
                Err(e) => tracing::warn!(document = %document.id, "payments: {e}"),
            }
        }
        waiting = again;
    }
}

/// What became of a document.
enum Processed {
    Done,
    /// Its node is still starting, or is another replica's: looked at again next round (the
    /// holder decides it; if that replica dies, whoever takes the node over does).
    Wait,
}

/// From a few seconds ago, or from the oldest agreement still open (after a restart: its
/// documents may have come while the server was down).
async fn first_cursor(state: &AppState) -> Result<Cursor, StoreError> {
    let mut from = erigolem_store::now_ms() - 5_000;
    for deal in state.store.open_deals().await? {
        from = from.min(deal.created_at);
    }
    Ok(Cursor {
        debit_notes: from * 1000,
        invoices: from * 1000,
    })
}

/// Decides one document (once) and carries the decision out.
async fn process(
    state: &Arc<AppState>,
    payer: &dyn Payer,
    document: &PaymentDocument,
) -> Result<Processed, StoreError> {
    let store = &state.store;
    if let Some(decided) = store.document(&document.id).await? {
        if decided.state == DocumentState::Accepting {
            carry_out(state, payer, &decided).await?;
        }
        return Ok(Processed::Done);
    }
    let policy = &state.config.payments;
    for _ in 0..DECIDE_ATTEMPTS {
        let Some(deal) = store.deal(&document.agreement_id).await? else {
            tracing::debug!(document = %document.id, agreement = %document.agreement_id, "not an agreement of ours: left alone");
            return Ok(Processed::Done);
        };
        if !state.leases.holds(&deal.node_id) {
            return Ok(Processed::Wait);
        }

        let Some(plan) = store.plan(&deal.plan_id).await? else {
            return Err(StoreError::Corrupt(format!(
                "deal {} names plan {} which does not exist",
                deal.agreement_id, deal.plan_id
            )));
        };
        let budget = plan.budget.clone().unwrap_or_default();
        let now = erigolem_store::now_ms();
        let period_start = policy.period_start(now);
        let (user, server) = policy.ledgers(store, &deal.owner, now).await?;
        let decision = bound::decide_payment(&PaymentFacts {
            kind: document.kind,
            amount: document.amount.as_ref().map_err(String::as_str),
            price: &deal.price,
            service: &deal.service,
            accepted: &deal.accepted,
            settled: deal.settled,
            ended: deal.ended_at.is_some() || deal.service.served_until.is_some(),
            budget: &budget,
            budget_spent: &plan.spent,
            user: &user,
            server: &server,
            now,
            slack: &policy.slack,
        });
        let record = NewDocument {
            id: document.id.clone(),
            kind: document.kind,
            agreement_id: document.agreement_id.clone(),
            owner: deal.owner.clone(),
            amount: document.amount_text.clone(),
        };
        match decision {
            PaymentDecision::Accept { increment } => {
                let reserved = store
                    .reserve_payment(&Reservation {
                        document: &record,
                        increment: &increment,
                        period_start,
                        deal_accepted: &deal.accepted,
                        plan_spent: &plan.spent,
                        user_spent: &user.spent,
                        server_spent: &server.spent,
                    })
                    .await?;
                match reserved {
                    Reserved::Stale => continue,
                    Reserved::Duplicate => return Ok(Processed::Done),
                    Reserved::Done => {}
                }
                tracing::info!(document = %document.id, node = %deal.node_id, amount = %document.amount_text, %increment, "accepting");
                if let Some(decided) = store.document(&document.id).await? {
                    carry_out(state, payer, &decided).await?;
                }
                if document.kind == DocumentKind::Invoice && deal.ended_at.is_none() {
                    // The provider invoiced an agreement we did not end: it ended it.
                    reconciler::spawn_handle(
                        state.clone(),
                        deal.node_id.clone(),
                        Event::ProviderEnded {
                            reason: "the provider ended the agreement (its final invoice came)"
                                .into(),
                        },
                    );
                }
            }
            PaymentDecision::Wait => return Ok(Processed::Wait),
            PaymentDecision::Refuse(refusal) => {
                let reason = refusal.to_string();
                if !store.refuse_payment(&record, &reason, period_start).await? {
                    return Ok(Processed::Done);
                }
                tracing::warn!(document = %document.id, node = %deal.node_id, "refused: {reason}");
                if let Err(e) = payer.refuse(document, &reason).await {
                    tracing::warn!(document = %document.id, "telling the provider: {e}");
                }
                state.notify_owner(&deal.owner);
                // A breach on a live agreement fails its node; on one already ended (a failed
                // start attempt, a stopped node) the refusal is all there is to do.
                if refusal.provider_at_fault() && deal.ended_at.is_none() {
                    let kind = match document.kind {
                        DocumentKind::DebitNote => "a debit note",
                        DocumentKind::Invoice => "an invoice",
                    };
                    reconciler::spawn_handle(
                        state.clone(),
                        deal.node_id.clone(),
                        Event::Overbilled {
                            reason: format!(
                                "the provider sent {kind} the agreement does not allow ({reason})"
                            ),
                        },
                    );
                }
            }
        }
        return Ok(Processed::Done);
    }
    tracing::warn!(document = %document.id, "the totals kept moving: decided again next round");
    Ok(Processed::Wait)
}

/// Reserved documents whose acceptance yagna has not confirmed (a crash or an unreachable yagna in
/// between): accepted again — yagna answers an accepted document with OK — and confirmed.
async fn carry_out_reserved(state: &Arc<AppState>, payer: &dyn Payer) -> Result<(), StoreError> {
    for decided in state
        .store
        .documents_in_state(DocumentState::Accepting)
        .await?
    {
        carry_out(state, payer, &decided).await?;
    }
    Ok(())
}

async fn carry_out(
    state: &Arc<AppState>,
    payer: &dyn Payer,
    decided: &DocumentRecord,
) -> Result<(), StoreError> {
    let store = &state.store;
    let Some(deal) = store.deal(&decided.agreement_id).await? else {
        return Ok(());
    };
    // Only the replica holding the node accepts at yagna (once).
    if !state.leases.holds(&deal.node_id) {
        return Ok(());
    }
    let document = PaymentDocument {
        id: decided.id.clone(),
        kind: decided.kind,
        agreement_id: decided.agreement_id.clone(),
        amount_text: decided.amount.clone(),
        amount: Glm::parse(&decided.amount).map_err(|e| e.to_string()),
    };
    match payer.accept(&document, &deal.allocation_id).await {
        Ok(()) => {
            store.confirm_payment(&decided.id).await?;
            state.notify_owner(&deal.owner);
            if decided.kind == DocumentKind::Invoice {
                // Nothing more to pay on this set-aside unless another open agreement uses it.
                let shared = store.open_deals().await?.iter().any(|d| {
                    d.allocation_id == deal.allocation_id && d.agreement_id != deal.agreement_id
                });
                if !shared {
                    payer.release(&deal.allocation_id).await;
                }
            }
            tracing::info!(document = %decided.id, node = %deal.node_id, amount = %decided.amount, "accepted");
        }
        // yagna refused to accept it (e.g. not enough left in the allocation): given back.
        Err(BackendError::Start(why)) => {
            tracing::warn!(document = %decided.id, "yagna did not accept it: {why}");
            for _ in 0..DECIDE_ATTEMPTS {
                if store
                    .release_payment(&decided.id, &format!("yagna did not accept it: {why}"))
                    .await?
                {
                    break;
                }
            }
        }
        Err(e) => tracing::warn!(document = %decided.id, "accepting (will retry): {e}"),
    }
    Ok(())
}
