//! Alerts of nodes, their rules, the users' webhooks and the durable queue of deliveries to them.
//!
//! At most one alert per node and kind is active (a partial unique index): a second firing —
//! from a restart, or another replica — changes nothing. Firing or resolving an alert enqueues
//! its delivery in the same transaction when the owner has a webhook, so none is lost between
//! the two. Deliveries are claimed one at a time with a single `UPDATE` that moves the row's
//! claim forward, so of several replicas exactly one sends each attempt; a claim whose replica
//! died expires and the row is sent again.

use erigolem_lifecycle::alert::{AlertRules, AlertType};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{cap_text, Result, Store, StoreError, MAX_TEXT_BYTES};

/// One row of `alerts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    pub id: i64,
    pub node_id: String,
    pub owner: String,
    pub kind: AlertType,
    pub message: String,
    pub fired_at: i64,
    pub resolved_at: Option<i64>,
}

/// A user's webhook, its secret decrypted.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    pub url: String,
    pub secret: String,
    pub created_at: i64,
    pub secret_rotated_at: i64,
}

impl std::fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A delivery to enqueue: its id, event name and the exact body to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub id: String,
    pub event: String,
    pub body: String,
}

/// One row of `webhook_deliveries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: String,
    pub owner: String,
    pub event: String,
    pub body: String,
    /// `pending`, `delivered` or `gave_up`.
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// A delivery claimed for one attempt, with where it goes.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery: DeliveryRecord,
    pub webhook: WebhookRecord,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub status: Option<u16>,
    pub error: Option<String>,
    /// `None`: delivered; `Some(t)`: try again at `t`; gives up when `retry_at` is `None` and
    /// `delivered` is false.
    pub delivered: bool,
    pub retry_at: Option<i64>,
}

const ALERT_COLS: &str = "id, node_id, owner, kind, message, fired_at, resolved_at";
const DELIVERY_COLS: &str = "id, owner, event, body, state, attempts, next_attempt_at, \
    last_status, last_error, created_at, delivered_at";

fn alert_from_row(row: &AnyRow) -> Result<AlertRecord> {
    let kind: String = row.try_get("kind")?;
    Ok(AlertRecord {
        id: row.try_get("id")?,
        node_id: row.try_get("node_id")?,
        owner: row.try_get("owner")?,
        kind: AlertType::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("alert kind {kind:?}")))?,
        message: row.try_get("message")?,
        fired_at: row.try_get("fired_at")?,
        resolved_at: row.try_get("resolved_at")?,
    })
}

fn delivery_from_row(row: &AnyRow) -> Result<DeliveryRecord> {
    let status: Option<i64> = row.try_get("last_status")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(DeliveryRecord {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        event: row.try_get("event")?,
        body: row.try_get("body")?,
        state: row.try_get("state")?,
        attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        delivered_at: row.try_get("delivered_at")?,
    })
}

fn webhook_aad(owner: &str) -> String {
    format!("webhook:{owner}")
}

impl Store {
    /// The node's rules; the defaults if none were set.
    pub async fn alert_rules(&self, node_id: &str) -> Result<AlertRules> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT rules FROM alert_rules WHERE node_id = $1")
                .bind(node_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match text {
            Some(t) => serde_json::from_str(&t)?,
            None => AlertRules::default(),
        })
    }

    pub async fn set_alert_rules(&self, node_id: &str, rules: &AlertRules, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO alert_rules (node_id, rules, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (node_id) DO UPDATE SET rules = excluded.rules, updated_at = excluded.updated_at",
        )
        .bind(node_id)
        .bind(serde_json::to_string(rules)?)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether the node was once within its lag thresholds (its first sync is over).
    pub async fn alerts_caught_up(&self, node_id: &str) -> Result<bool> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT at FROM alert_caught_up WHERE node_id = $1")
                .bind(node_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(at.is_some())
    }

    pub async fn set_alerts_caught_up(&self, node_id: &str, at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO alert_caught_up (node_id, at) VALUES ($1, $2) ON CONFLICT (node_id) DO NOTHING",
        )
        .bind(node_id)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The node's active alerts, oldest first.
    pub async fn active_alerts(&self, node_id: &str) -> Result<Vec<AlertRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE node_id = $1 AND resolved_at IS NULL ORDER BY id"
        ))
        .bind(node_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alert_from_row).collect()
    }

    /// The active alerts of all of `owner`'s nodes, oldest first (one query for a node list).
    pub async fn active_alerts_of(&self, owner: &str) -> Result<Vec<AlertRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE owner = $1 AND resolved_at IS NULL ORDER BY id"
        ))
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alert_from_row).collect()
    }

    /// The node's last `limit` alerts, newest first.
    pub async fn recent_alerts(&self, node_id: &str, limit: i64) -> Result<Vec<AlertRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE node_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(node_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alert_from_row).collect()
    }

    /// Fires `kind` for the node unless it is active already (`None` then: nothing changes).
    /// When the owner has a webhook, `delivery` of the new alert is enqueued in the same
    /// transaction.
    pub async fn fire_alert(
        &self,
        node_id: &str,
        owner: &str,
        kind: AlertType,
        message: &str,
        at: i64,
        delivery: impl FnOnce(&AlertRecord) -> NewDelivery,
    ) -> Result<Option<AlertRecord>> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO alerts (node_id, owner, kind, message, fired_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (node_id, kind) WHERE resolved_at IS NULL DO NOTHING RETURNING {ALERT_COLS}"
        ))
        .bind(node_id)
        .bind(owner)
        .bind(kind.as_str())
        .bind(cap_text(message, MAX_TEXT_BYTES).as_ref())
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let alert = alert_from_row(&row)?;
        self.enqueue_in(&mut tx, owner, at, || delivery(&alert))
            .await?;
        tx.commit().await?;
        Ok(Some(alert))
    }

    /// Resolves the node's active `kind` (`None` if none is active), enqueueing `delivery` as
    /// [`Store::fire_alert`] does.
    pub async fn resolve_alert(
        &self,
        node_id: &str,
        kind: AlertType,
        at: i64,
        delivery: impl FnOnce(&AlertRecord) -> NewDelivery,
    ) -> Result<Option<AlertRecord>> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE alerts SET resolved_at = $1 WHERE node_id = $2 AND kind = $3 \
             AND resolved_at IS NULL RETURNING {ALERT_COLS}"
        ))
        .bind(at)
        .bind(node_id)
        .bind(kind.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let alert = alert_from_row(&row)?;
        self.enqueue_in(&mut tx, &alert.owner.clone(), at, || delivery(&alert))
            .await?;
        tx.commit().await?;
        Ok(Some(alert))
    }

    /// Forgets the node's alerts and rules (the node was deleted).
    pub async fn delete_alerts(&self, node_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["alerts", "alert_rules", "alert_caught_up"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE node_id = $1"))
                .bind(node_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One statement, a write from the start: on SQLite a transaction that read first and then
    /// writes fails at once when another connection wrote in between (no busy wait).
    async fn enqueue_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        owner: &str,
        now: i64,
        delivery: impl FnOnce() -> NewDelivery,
    ) -> Result<bool> {
        let d = delivery();
        let queued = sqlx::query(
            "INSERT INTO webhook_deliveries (id, owner, event, body, state, next_attempt_at, created_at) \
             SELECT $1, $2, $3, $4, 'pending', $5, $5 WHERE EXISTS (SELECT 1 FROM webhooks WHERE owner = $2)",
        )
        .bind(&d.id)
        .bind(owner)
        .bind(&d.event)
        .bind(&d.body)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(queued == 1)
    }

    /// Enqueues `delivery` to the owner's webhook; `false` if they have none.
    pub async fn enqueue_delivery(
        &self,
        owner: &str,
        delivery: NewDelivery,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let queued = self.enqueue_in(&mut tx, owner, now, || delivery).await?;
        tx.commit().await?;
        Ok(queued)
    }

    // ---- webhooks -----------------------------------------------------------------------------

    pub async fn webhook(&self, owner: &str) -> Result<Option<WebhookRecord>> {
        let row = sqlx::query(
            "SELECT url, secret_enc, created_at, secret_rotated_at FROM webhooks WHERE owner = $1",
        )
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let enc: String = row.try_get("secret_enc")?;
        Ok(Some(WebhookRecord {
            url: row.try_get("url")?,
            secret: self.decrypt(&webhook_aad(owner), &enc)?,
            created_at: row.try_get("created_at")?,
            secret_rotated_at: row.try_get("secret_rotated_at")?,
        }))
    }

    /// Sets the owner's webhook URL; with `secret`, its signing secret too (a new webhook must
    /// have one).
    pub async fn put_webhook(
        &self,
        owner: &str,
        url: &str,
        secret: Option<&str>,
        now: i64,
    ) -> Result<()> {
        match secret {
            Some(secret) => {
                let enc = self.encrypt(&webhook_aad(owner), secret)?;
                sqlx::query(
                    "INSERT INTO webhooks (owner, url, secret_enc, created_at, secret_rotated_at) \
                     VALUES ($1, $2, $3, $4, $4) ON CONFLICT (owner) DO UPDATE SET url = excluded.url, \
                     secret_enc = excluded.secret_enc, secret_rotated_at = excluded.secret_rotated_at",
                )
                .bind(owner)
                .bind(url)
                .bind(enc)
                .bind(now)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("UPDATE webhooks SET url = $1 WHERE owner = $2")
                    .bind(url)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Removes the owner's webhook; its pending deliveries give up. `false` if there was none.
    pub async fn delete_webhook(&self, owner: &str, now: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM webhooks WHERE owner = $1")
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE webhook_deliveries SET state = 'gave_up', last_error = 'the webhook was removed', \
             next_attempt_at = $2 WHERE owner = $1 AND state = 'pending'",
        )
        .bind(owner)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(gone > 0)
    }

    /// How many deliveries of `event` the owner has had enqueued since `since`.
    pub async fn deliveries_since(&self, owner: &str, event: &str, since: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE owner = $1 AND event = $2 AND created_at >= $3",
        )
        .bind(owner)
        .bind(event)
        .bind(since)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The owner's last `limit` deliveries, newest first.
    pub async fn deliveries(&self, owner: &str, limit: i64) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE owner = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(owner)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// Claims one due delivery for an attempt until `now + claim_ms` (counting the attempt), with
    /// its webhook. One `UPDATE … WHERE` the row is still unclaimed: of concurrent claimers only
    /// one gets a row. A due delivery whose webhook is gone gives up.
    pub async fn claim_delivery(&self, now: i64, claim_ms: i64) -> Result<Option<ClaimedDelivery>> {
        loop {
            let row = sqlx::query(&format!(
                "UPDATE webhook_deliveries SET claimed_until = $1, attempts = attempts + 1 \
                 WHERE id = (SELECT id FROM webhook_deliveries WHERE state = 'pending' \
                   AND next_attempt_at <= $2 AND claimed_until <= $2 ORDER BY next_attempt_at LIMIT 1) \
                 AND state = 'pending' AND claimed_until <= $2 RETURNING {DELIVERY_COLS}"
            ))
            .bind(now + claim_ms)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let delivery = delivery_from_row(&row)?;
            match self.webhook(&delivery.owner).await? {
                Some(webhook) => return Ok(Some(ClaimedDelivery { delivery, webhook })),
                None => {
                    sqlx::query(
                        "UPDATE webhook_deliveries SET state = 'gave_up', \
                         last_error = 'the webhook was removed' WHERE id = $1",
                    )
                    .bind(&delivery.id)
                    .execute(&self.pool)
                    .await?;
                }
            }
        }
    }

    /// Records a claimed attempt's outcome: delivered, due again at `retry_at`, or given up.
    pub async fn record_attempt(&self, id: &str, attempt: &Attempt, now: i64) -> Result<()> {
        let (state, next) = match (attempt.delivered, attempt.retry_at) {
            (true, _) => ("delivered", now),
            (false, Some(at)) => ("pending", at),
            (false, None) => ("gave_up", now),
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, next_attempt_at = $2, claimed_until = 0, \
             last_status = $3, last_error = $4, delivered_at = $5 WHERE id = $6",
        )
        .bind(state)
        .bind(next)
        .bind(attempt.status.map(i64::from))
        .bind(
            attempt
                .error
                .as_deref()
                .map(|e| cap_text(e, 512).into_owned()),
        )
        .bind(attempt.delivered.then_some(now))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes finished deliveries and resolved alerts from before `before` (bounded logs).
    pub async fn purge_alerts(&self, before: i64) -> Result<u64> {
        let deliveries = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE state <> 'pending' AND created_at < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let alerts =
            sqlx::query("DELETE FROM alerts WHERE resolved_at IS NOT NULL AND resolved_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(deliveries + alerts)
    }
}
