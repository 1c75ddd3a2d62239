//! Money in the store: plans (a node's budget and caps, shared with its replacements), deals (one
//! agreement with a provider each), payment documents (each debit note and invoice decided once:
//! yagna's document id is the key) and spend per owner and period.
//!
//! Amounts are decimal text written by [`Glm`]'s `Display` (canonical), so every running total is
//! updated with a compare-and-set on the text its decision read: of two replicas or tasks deciding
//! at once, one commits and the other decides again on fresh numbers. A payment is first
//! *reserved* (the document row in `accepting`, every total raised, one transaction), then accepted
//! at yagna, then confirmed; a crash in between leaves an `accepting` row that is carried out
//! again, never counted twice.

use std::str::FromStr;

use bigdecimal::BigDecimal;
use erigolem_lifecycle::{DocumentKind, Glm, LinearPrice, Service};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{now_ms, Result, Store, StoreError};

/// The owner of the server-wide spend ledger.
pub const SERVER_LEDGER: &str = "*";

/// What the user ordered, beyond the network: kept for the node and its replacements.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPlan {
    /// GLM for the node and all its replacements; `None` where nodes are free.
    pub budget: Option<Glm>,
    pub max_price_per_hour: Option<Glm>,
    pub max_start_fee: Option<Glm>,
    pub expected_hours: Option<u32>,
    pub auto_replace: bool,
    pub max_replacements: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub id: String,
    pub owner: String,
    pub budget: Option<Glm>,
    /// GLM accepted (or being accepted) on every agreement of the plan.
    pub spent: Glm,
    pub max_price_per_hour: Option<Glm>,
    pub max_start_fee: Option<Glm>,
    pub expected_hours: Option<u32>,
    pub auto_replace: bool,
    pub max_replacements: u32,
    pub replacements: u32,
    pub created_at: i64,
}

impl PlanRecord {
    /// Whether a failure may start one more replacement.
    pub fn may_replace(&self) -> bool {
        self.auto_replace && self.replacements < self.max_replacements
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacementRecord {
    pub plan_id: String,
    pub seq: u32,
    pub failed_node: String,
    pub new_node: String,
    pub reason: String,
    pub at: i64,
}

/// An agreement just signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeal {
    pub agreement_id: String,
    pub node_id: String,
    pub plan_id: String,
    pub owner: String,
    pub provider_id: String,
    /// What the provider calls itself (shown, never trusted).
    pub provider_name: Option<String>,
    pub allocation_id: String,
    pub price: LinearPrice,
    /// When the agreement expires (unix ms).
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealRecord {
    pub agreement_id: String,
    pub node_id: String,
    pub plan_id: String,
    pub owner: String,
    pub provider_id: String,
    pub provider_name: Option<String>,
    pub allocation_id: String,
    pub activity_id: Option<String>,
    pub price: LinearPrice,
    /// The largest amount accepted (or being accepted) on the agreement.
    pub accepted: Glm,
    pub service: Service,
    /// When we ended the agreement (terminated it, destroyed its activity).
    pub ended_at: Option<i64>,
    pub expires_at: i64,
    /// Its invoice was accepted.
    pub settled: bool,
    /// The last document refused, and why.
    pub refused: Option<String>,
    /// How the start went (milliseconds per phase), for the benchmark.
    pub start_ms: Option<serde_json::Value>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentState {
    /// Reserved: the totals count it; yagna has not confirmed the acceptance yet.
    Accepting,
    Accepted,
    Refused,
    /// yagna would not accept it; the reservation was given back.
    Failed,
}

impl DocumentState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepting => "accepting",
            Self::Accepted => "accepted",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        [Self::Accepting, Self::Accepted, Self::Refused, Self::Failed]
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown document state {s:?}")))
    }
}

/// A payment document as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDocument {
    pub id: String,
    pub kind: DocumentKind,
    pub agreement_id: String,
    pub owner: String,
    /// What it asks, as text (kept even when it did not parse).
    pub amount: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentRecord {
    pub id: String,
    pub kind: DocumentKind,
    pub agreement_id: String,
    pub owner: String,
    pub amount: String,
    pub state: DocumentState,
    /// GLM it added to the totals (while `accepting` or `accepted`).
    pub increment: Glm,
    pub period_start: i64,
    pub reason: Option<String>,
    pub received_at: i64,
}

/// A payment decided on these numbers (as read): the compare-and-set of [`Store::reserve_payment`].
#[derive(Debug, Clone)]
pub struct Reservation<'a> {
    pub document: &'a NewDocument,
    /// What it adds to every total (zero for a repeated or lower running total).
    pub increment: &'a Glm,
    /// The spend period it counts in.
    pub period_start: i64,
    pub deal_accepted: &'a Glm,
    pub plan_spent: &'a Glm,
    pub user_spent: &'a Glm,
    pub server_spent: &'a Glm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    Done,
    /// The document was decided already (by another task, replica or run).
    Duplicate,
    /// A total moved since the decision read it: read and decide again.
    Stale,
}

fn glm_text(row: &AnyRow, col: &str) -> Result<Glm> {
    let text: String = row.try_get(col)?;
    parse_glm(&text, col)
}

fn glm_opt(row: &AnyRow, col: &str) -> Result<Option<Glm>> {
    row.try_get::<Option<String>, _>(col)?
        .map(|t| parse_glm(&t, col))
        .transpose()
}

fn parse_glm(text: &str, col: &str) -> Result<Glm> {
    BigDecimal::from_str(text)
        .ok()
        .and_then(|d| Glm::from_decimal(&d).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{col} is not an amount of GLM: {text:?}")))
}

fn u32_col(row: &AnyRow, col: &str) -> Result<u32> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} = {v}")))
}

const PLAN_COLS: &str = "id, owner, budget, spent, max_price_per_hour, max_start_fee, \
    expected_hours, auto_replace, max_replacements, replacements, created_at";

fn plan_from_row(row: &AnyRow) -> Result<PlanRecord> {
    Ok(PlanRecord {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        budget: glm_opt(row, "budget")?,
        spent: glm_text(row, "spent")?,
        max_price_per_hour: glm_opt(row, "max_price_per_hour")?,
        max_start_fee: glm_opt(row, "max_start_fee")?,
        expected_hours: row
            .try_get::<Option<i64>, _>("expected_hours")?
            .map(|h| u32::try_from(h).unwrap_or(u32::MAX)),
        auto_replace: row.try_get::<i64, _>("auto_replace")? != 0,
        max_replacements: u32_col(row, "max_replacements")?,
        replacements: u32_col(row, "replacements")?,
        created_at: row.try_get("created_at")?,
    })
}

const DEAL_COLS: &str = "agreement_id, node_id, plan_id, owner, provider_id, provider_name, \
    allocation_id, activity_id, price_per_hour, start_fee, price_per_request, accepted, requests, \
    served_from, served_until, ended_at, expires_at, settled, refused, start_ms, created_at";

fn deal_from_row(row: &AnyRow) -> Result<DealRecord> {
    Ok(DealRecord {
        agreement_id: row.try_get("agreement_id")?,
        node_id: row.try_get("node_id")?,
        plan_id: row.try_get("plan_id")?,
        owner: row.try_get("owner")?,
        provider_id: row.try_get("provider_id")?,
        provider_name: row.try_get("provider_name")?,
        allocation_id: row.try_get("allocation_id")?,
        activity_id: row.try_get("activity_id")?,
        price: LinearPrice {
            per_hour: glm_text(row, "price_per_hour")?,
            start_fee: glm_text(row, "start_fee")?,
            per_request: glm_opt(row, "price_per_request")?,
        },
        accepted: glm_text(row, "accepted")?,
        service: Service {
            served_from: row.try_get("served_from")?,
            served_until: row.try_get("served_until")?,
            requests: u64::try_from(row.try_get::<i64, _>("requests")?).unwrap_or(0),
        },
        ended_at: row.try_get("ended_at")?,
        expires_at: row.try_get("expires_at")?,
        settled: row.try_get::<i64, _>("settled")? != 0,
        refused: row.try_get("refused")?,
        start_ms: row
            .try_get::<Option<String>, _>("start_ms")?
            .map(|s| {
                serde_json::from_str(&s)
                    .map_err(|e| StoreError::Corrupt(format!("deals.start_ms: {e}")))
            })
            .transpose()?,
        created_at: row.try_get("created_at")?,
    })
}

const DOC_COLS: &str =
    "id, kind, agreement_id, owner, amount, state, increment, period_start, reason, received_at";

fn document_from_row(row: &AnyRow) -> Result<DocumentRecord> {
    let kind: String = row.try_get("kind")?;
    Ok(DocumentRecord {
        id: row.try_get("id")?,
        kind: match kind.as_str() {
            "debit_note" => DocumentKind::DebitNote,
            "invoice" => DocumentKind::Invoice,
            other => return Err(StoreError::Corrupt(format!("document kind {other:?}"))),
        },
        agreement_id: row.try_get("agreement_id")?,
        owner: row.try_get("owner")?,
        amount: row.try_get("amount")?,
        state: DocumentState::parse(&row.try_get::<String, _>("state")?)?,
        increment: glm_text(row, "increment")?,
        period_start: row.try_get("period_start")?,
        reason: row.try_get("reason")?,
        received_at: row.try_get("received_at")?,
    })
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

pub(crate) async fn insert_plan(
    tx: &mut Tx<'_>,
    id: &str,
    owner: &str,
    plan: &NewPlan,
) -> Result<PlanRecord> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO plans (id, owner, budget, spent, max_price_per_hour, max_start_fee, \
         expected_hours, auto_replace, max_replacements, replacements, created_at) \
         VALUES ($1, $2, $3, '0', $4, $5, $6, $7, $8, 0, $9)",
    )
    .bind(id)
    .bind(owner)
    .bind(plan.budget.as_ref().map(Glm::to_string))
    .bind(plan.max_price_per_hour.as_ref().map(Glm::to_string))
    .bind(plan.max_start_fee.as_ref().map(Glm::to_string))
    .bind(plan.expected_hours.map(i64::from))
    .bind(i64::from(plan.auto_replace))
    .bind(i64::from(plan.max_replacements))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(PlanRecord {
        id: id.to_owned(),
        owner: owner.to_owned(),
        budget: plan.budget.clone(),
        spent: Glm::zero(),
        max_price_per_hour: plan.max_price_per_hour.clone(),
        max_start_fee: plan.max_start_fee.clone(),
        expected_hours: plan.expected_hours,
        auto_replace: plan.auto_replace,
        max_replacements: plan.max_replacements,
        replacements: 0,
        created_at: now,
    })
}

/// Takes one replacement of the plan if it has one left; the replacement's number.
pub(crate) async fn take_replacement(tx: &mut Tx<'_>, plan_id: &str) -> Result<Option<u32>> {
    let taken: Option<i64> = sqlx::query_scalar(
        "UPDATE plans SET replacements = replacements + 1 \
         WHERE id = $1 AND auto_replace = 1 AND replacements < max_replacements \
         RETURNING replacements",
    )
    .bind(plan_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(taken.and_then(|n| u32::try_from(n).ok()))
}

pub(crate) async fn insert_replacement(
    tx: &mut Tx<'_>,
    plan_id: &str,
    seq: u32,
    failed: &str,
    new: &str,
    reason: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO replacements (plan_id, seq, failed_node, new_node, reason, at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(plan_id)
    .bind(i64::from(seq))
    .bind(failed)
    .bind(new)
    .bind(reason)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds `delta` to a decimal text column if it still reads `seen` (compare-and-set).
async fn cas_add(tx: &mut Tx<'_>, sql: &str, key: &[&str], seen: &Glm, new: &Glm) -> Result<bool> {
    let mut q = sqlx::query(sql).bind(new.to_string());
    for k in key {
        q = q.bind(*k);
    }
    let done = q.bind(seen.to_string()).execute(&mut **tx).await?;
    Ok(done.rows_affected() == 1)
}

impl Store {
    // ---- plans --------------------------------------------------------------------------------

    pub async fn plan(&self, id: &str) -> Result<Option<PlanRecord>> {
        let row = sqlx::query(&format!("SELECT {PLAN_COLS} FROM plans WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(plan_from_row).transpose()
    }

    /// The plan's replacements, in order.
    pub async fn replacements(&self, plan_id: &str) -> Result<Vec<ReplacementRecord>> {
        let rows = sqlx::query(
            "SELECT plan_id, seq, failed_node, new_node, reason, at FROM replacements \
             WHERE plan_id = $1 ORDER BY seq",
        )
        .bind(plan_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplacementRecord {
                    plan_id: r.try_get("plan_id")?,
                    seq: u32_col(r, "seq")?,
                    failed_node: r.try_get("failed_node")?,
                    new_node: r.try_get("new_node")?,
                    reason: r.try_get("reason")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    // ---- deals --------------------------------------------------------------------------------

    /// Records an agreement the moment it is signed: it may cost money from then on.
    pub async fn insert_deal(&self, deal: &NewDeal) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO deals (agreement_id, node_id, plan_id, owner, provider_id, provider_name, \
             allocation_id, price_per_hour, start_fee, price_per_request, accepted, requests, \
             expires_at, settled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, '0', 0, $11, 0, $12, $12)",
        )
        .bind(&deal.agreement_id)
        .bind(&deal.node_id)
        .bind(&deal.plan_id)
        .bind(&deal.owner)
        .bind(&deal.provider_id)
        .bind(&deal.provider_name)
        .bind(&deal.allocation_id)
        .bind(deal.price.per_hour.to_string())
        .bind(deal.price.start_fee.to_string())
        .bind(deal.price.per_request.as_ref().map(Glm::to_string))
        .bind(deal.expires_at)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn deal(&self, agreement_id: &str) -> Result<Option<DealRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {DEAL_COLS} FROM deals WHERE agreement_id = $1"
        ))
        .bind(agreement_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(deal_from_row).transpose()
    }

    /// The node's agreement that we have not ended yet (the newest, if there were several).
    pub async fn live_deal(&self, node_id: &str) -> Result<Option<DealRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {DEAL_COLS} FROM deals WHERE node_id = $1 AND ended_at IS NULL \
             ORDER BY created_at DESC, agreement_id DESC LIMIT 1"
        ))
        .bind(node_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(deal_from_row).transpose()
    }

    /// The node's agreements, newest first.
    pub async fn node_deals(&self, node_id: &str) -> Result<Vec<DealRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEAL_COLS} FROM deals WHERE node_id = $1 \
             ORDER BY created_at DESC, agreement_id DESC"
        ))
        .bind(node_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(deal_from_row).collect()
    }

    /// Every provider any node of the plan ever had an agreement with.
    pub async fn plan_providers(&self, plan_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT provider_id FROM deals WHERE plan_id = $1 ORDER BY provider_id",
        )
        .bind(plan_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Agreements not ended yet, or ended but not settled: what a restarted server still owes.
    pub async fn open_deals(&self) -> Result<Vec<DealRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEAL_COLS} FROM deals WHERE ended_at IS NULL OR settled = 0 \
             ORDER BY created_at, agreement_id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(deal_from_row).collect()
    }

    pub async fn set_deal_activity(&self, agreement_id: &str, activity_id: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE deals SET activity_id = $1, updated_at = $2 WHERE agreement_id = $3",
        )
        .bind(activity_id)
        .bind(now_ms())
        .bind(agreement_id)
        .execute(self.pool())
        .await?;
        crate::found(done.rows_affected())
    }

    pub async fn set_deal_start_times(
        &self,
        agreement_id: &str,
        start_ms: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query("UPDATE deals SET start_ms = $1, updated_at = $2 WHERE agreement_id = $3")
            .bind(start_ms.to_string())
            .bind(now_ms())
            .bind(agreement_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The first successful STATUS: service (and the start fee) begin. Later calls change nothing.
    pub async fn mark_served(&self, agreement_id: &str, at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE deals SET served_from = COALESCE(served_from, $1), updated_at = $2 \
             WHERE agreement_id = $3 AND served_until IS NULL",
        )
        .bind(at)
        .bind(now_ms())
        .bind(agreement_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Billing of the node's agreements is frozen at `at` (it stopped or failed): the time served
    /// ends there, whenever the backend finishes the stop. Earlier freezes stay.
    pub async fn freeze_billing(&self, node_id: &str, at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE deals SET served_until = COALESCE(served_until, $1), updated_at = $2 \
             WHERE node_id = $3 AND served_until IS NULL",
        )
        .bind(at)
        .bind(now_ms())
        .bind(node_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// One agreement's billing is frozen at `at` (it is being ended). Earlier freezes stay.
    pub async fn freeze_deal(&self, agreement_id: &str, at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE deals SET served_until = COALESCE(served_until, $1), updated_at = $2 \
             WHERE agreement_id = $3",
        )
        .bind(at)
        .bind(now_ms())
        .bind(agreement_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// We ended the agreement (terminated, activity destroyed) at `at`; its billing is frozen too.
    pub async fn end_deal(&self, agreement_id: &str, at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE deals SET ended_at = COALESCE(ended_at, $1), \
             served_until = COALESCE(served_until, $1), updated_at = $2 WHERE agreement_id = $3",
        )
        .bind(at)
        .bind(now_ms())
        .bind(agreement_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The node's STATUS reported `requests` served so far: the count only grows, until the
    /// agreement ends. Unlike the time served it is not frozen at the stop decision: the requests
    /// the endpoint answered until its activity was destroyed are owed, and the stop reads the
    /// count once more for them (the last poll may be seconds old).
    pub async fn note_requests(&self, agreement_id: &str, requests: u64) -> Result<()> {
        let n = i64::try_from(requests).unwrap_or(i64::MAX);
        sqlx::query(
            "UPDATE deals SET requests = $1, updated_at = $2 \
             WHERE agreement_id = $3 AND requests < $1 AND ended_at IS NULL",
        )
        .bind(n)
        .bind(now_ms())
        .bind(agreement_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    // ---- payment documents ----------------------------------------------------------------------

    pub async fn document(&self, id: &str) -> Result<Option<DocumentRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {DOC_COLS} FROM payment_documents WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(document_from_row).transpose()
    }

    /// Documents in `state`, oldest first.
    pub async fn documents_in_state(&self, state: DocumentState) -> Result<Vec<DocumentRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DOC_COLS} FROM payment_documents WHERE state = $1 ORDER BY received_at, id"
        ))
        .bind(state.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(document_from_row).collect()
    }

    /// The agreement's documents, oldest first.
    pub async fn agreement_documents(&self, agreement_id: &str) -> Result<Vec<DocumentRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DOC_COLS} FROM payment_documents WHERE agreement_id = $1 \
             ORDER BY received_at, id"
        ))
        .bind(agreement_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(document_from_row).collect()
    }

    /// GLM `owner` ([`SERVER_LEDGER`] for the whole server) spent in the period starting at
    /// `period_start`.
    pub async fn spent(&self, owner: &str, period_start: i64) -> Result<Glm> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT amount FROM spend WHERE owner = $1 AND period_start = $2")
                .bind(owner)
                .bind(period_start)
                .fetch_optional(self.pool())
                .await?;
        text.map_or(Ok(Glm::zero()), |t| parse_glm(&t, "spend.amount"))
    }

    /// Reserves a payment: the document row (`accepting`) and every total (the deal's accepted
    /// amount, the plan's, the owner's and the server's spend in the period) in one transaction,
    /// each a compare-and-set on what the decision read.
    pub async fn reserve_payment(&self, r: &Reservation<'_>) -> Result<Reserved> {
        let doc = r.document;
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO payment_documents (id, kind, agreement_id, owner, amount, state, increment, \
             period_start, received_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'accepting', $6, $7, $8, $8) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&doc.id)
        .bind(doc.kind.as_str())
        .bind(&doc.agreement_id)
        .bind(&doc.owner)
        .bind(&doc.amount)
        .bind(r.increment.to_string())
        .bind(r.period_start)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Reserved::Duplicate);
        }
        let Some(plan_id): Option<String> =
            sqlx::query_scalar("SELECT plan_id FROM deals WHERE agreement_id = $1")
                .bind(&doc.agreement_id)
                .fetch_optional(&mut *tx)
                .await?
        else {
            tx.rollback().await?;
            return Err(StoreError::NotFound);
        };
        let mut fresh = cas_add(
            &mut tx,
            "UPDATE deals SET accepted = $1 WHERE agreement_id = $2 AND accepted = $3",
            &[&doc.agreement_id],
            r.deal_accepted,
            &(r.deal_accepted + r.increment),
        )
        .await?;
        if fresh && !r.increment.is_zero() {
            fresh = cas_add(
                &mut tx,
                "UPDATE plans SET spent = $1 WHERE id = $2 AND spent = $3",
                &[&plan_id],
                r.plan_spent,
                &(r.plan_spent + r.increment),
            )
            .await?;
            for (owner, seen) in [
                (doc.owner.as_str(), r.user_spent),
                (SERVER_LEDGER, r.server_spent),
            ] {
                if !fresh {
                    break;
                }
                sqlx::query(
                    "INSERT INTO spend (owner, period_start, amount) VALUES ($1, $2, '0') \
                     ON CONFLICT (owner, period_start) DO NOTHING",
                )
                .bind(owner)
                .bind(r.period_start)
                .execute(&mut *tx)
                .await?;
                let done = sqlx::query(
                    "UPDATE spend SET amount = $1 WHERE owner = $2 AND period_start = $3 AND amount = $4",
                )
                .bind((seen + r.increment).to_string())
                .bind(owner)
                .bind(r.period_start)
                .bind(seen.to_string())
                .execute(&mut *tx)
                .await?;
                fresh = done.rows_affected() == 1;
            }
        }
        if !fresh {
            tx.rollback().await?;
            return Ok(Reserved::Stale);
        }
        tx.commit().await?;
        Ok(Reserved::Done)
    }

    /// yagna accepted the reserved document; an invoice settles its agreement.
    pub async fn confirm_payment(&self, id: &str) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(
            "UPDATE payment_documents SET state = 'accepted', updated_at = $1 \
             WHERE id = $2 AND state = 'accepting' RETURNING kind, agreement_id",
        )
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let kind: String = row.try_get("kind")?;
            let agreement: String = row.try_get("agreement_id")?;
            if kind == DocumentKind::Invoice.as_str() {
                sqlx::query(
                    "UPDATE deals SET settled = 1, updated_at = $1 WHERE agreement_id = $2",
                )
                .bind(now_ms())
                .bind(&agreement)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a refusal (once per document) and shows it on the deal; `false` if the document was
    /// decided already.
    pub async fn refuse_payment(
        &self,
        doc: &NewDocument,
        reason: &str,
        period_start: i64,
    ) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO payment_documents (id, kind, agreement_id, owner, amount, state, increment, \
             period_start, reason, received_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'refused', '0', $6, $7, $8, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&doc.id)
        .bind(doc.kind.as_str())
        .bind(&doc.agreement_id)
        .bind(&doc.owner)
        .bind(&doc.amount)
        .bind(period_start)
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let kind = match doc.kind {
            DocumentKind::DebitNote => "debit note",
            DocumentKind::Invoice => "invoice",
        };
        sqlx::query("UPDATE deals SET refused = $1, updated_at = $2 WHERE agreement_id = $3")
            .bind(format!("{kind} {}: {reason}", doc.id))
            .bind(now)
            .bind(&doc.agreement_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// yagna would not accept a reserved document: it is `failed` with `reason` and its increment
    /// is taken back from every total. `Ok(false)` if a total moved meanwhile (call again).
    pub async fn release_payment(&self, id: &str, reason: &str) -> Result<bool> {
        let Some(doc) = self.document(id).await? else {
            return Err(StoreError::NotFound);
        };
        if doc.state != DocumentState::Accepting {
            return Ok(true);
        }
        let deal = self
            .deal(&doc.agreement_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let plan = self
            .plan(&deal.plan_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let user = self.spent(&doc.owner, doc.period_start).await?;
        let server = self.spent(SERVER_LEDGER, doc.period_start).await?;
        let inc = &doc.increment;
        let mut tx = self.pool().begin().await?;
        let marked = sqlx::query(
            "UPDATE payment_documents SET state = 'failed', reason = $1, updated_at = $2 \
             WHERE id = $3 AND state = 'accepting'",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let mut fresh = marked.rows_affected() == 1
            && cas_add(
                &mut tx,
                "UPDATE deals SET accepted = $1 WHERE agreement_id = $2 AND accepted = $3",
                &[&doc.agreement_id],
                &deal.accepted,
                &deal.accepted.saturating_sub(inc),
            )
            .await?;
        if fresh && !inc.is_zero() {
            fresh = cas_add(
                &mut tx,
                "UPDATE plans SET spent = $1 WHERE id = $2 AND spent = $3",
                &[&plan.id],
                &plan.spent,
                &plan.spent.saturating_sub(inc),
            )
            .await?;
            for (owner, seen) in [(doc.owner.as_str(), &user), (SERVER_LEDGER, &server)] {
                if !fresh {
                    break;
                }
                let done = sqlx::query(
                    "UPDATE spend SET amount = $1 WHERE owner = $2 AND period_start = $3 AND amount = $4",
                )
                .bind(seen.saturating_sub(inc).to_string())
                .bind(owner)
                .bind(doc.period_start)
                .bind(seen.to_string())
                .execute(&mut *tx)
                .await?;
                fresh = done.rows_affected() == 1;
            }
        }
        if !fresh {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }
}
