//! What each node's endpoint served over time, in two tiers: per-minute steps kept a day and
//! per-hour steps kept eight days ([`Tier`]). Every write adds one minute's counts to both tiers
//! and prunes the node's rows older than their tier keeps, in one transaction, so a node never
//! has more than [`MAX_ROWS_PER_NODE`] rows however long it runs. The node's cumulative counters
//! as of the last write are kept beside them (the cursor), so the next difference is taken from
//! there even after a server restart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Result, Store};

/// How many method names one step keeps; the rest are added to [`OTHER_METHODS`].
pub const MAX_METHODS: usize = 20;
/// The name less frequent methods are counted under (the runtime's own name for them).
pub const OTHER_METHODS: &str = "other";

/// A resolution usage is kept at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// One row per minute, kept 24 hours.
    Minute,
    /// One row per hour, kept 8 days (a week's window and the hours it starts in).
    Hour,
}

impl Tier {
    pub const ALL: [Tier; 2] = [Tier::Minute, Tier::Hour];

    pub fn step_secs(self) -> i64 {
        match self {
            Tier::Minute => 60,
            Tier::Hour => 3_600,
        }
    }

    /// How long rows of this tier are kept, in milliseconds.
    pub fn keep_ms(self) -> i64 {
        match self {
            Tier::Minute => 24 * 3_600_000,
            Tier::Hour => 8 * 24 * 3_600_000,
        }
    }

    /// The start of the step `at` (unix ms) falls in.
    pub fn step_start(self, at: i64) -> i64 {
        let step = self.step_secs() * 1_000;
        at.div_euclid(step) * step
    }

    /// The most rows one node has in this tier.
    pub const fn max_rows(self) -> i64 {
        match self {
            // The steps within the kept span, and the one being written.
            Tier::Minute => 24 * 60 + 1,
            Tier::Hour => 8 * 24 + 1,
        }
    }
}

/// The most usage rows one node ever has.
pub const MAX_ROWS_PER_NODE: i64 = Tier::Minute.max_rows() + Tier::Hour.max_rows();

/// Counts of one step (or of several, merged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSample {
    /// Start of the step, unix ms.
    pub at: i64,
    pub requests: u64,
    pub errors: u64,
    pub refused: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub methods: BTreeMap<String, u64>,
    /// Counts per latency bucket (the runtime's bucket bounds; the last is "slower than all").
    pub latency: Vec<u64>,
    /// The node's height at the last sample, and the network's head then.
    pub block: Option<u64>,
    pub head: Option<u64>,
    /// The largest head-block age seen.
    pub behind_seconds: Option<u64>,
}

impl UsageSample {
    /// Adds `later`'s counts to these; heights are `later`'s where it has them, the head-block
    /// age the larger. Method names stay at most [`MAX_METHODS`] + `other`.
    pub fn merge(&mut self, later: &UsageSample) {
        self.requests += later.requests;
        self.errors += later.errors;
        self.refused += later.refused;
        self.bytes_in += later.bytes_in;
        self.bytes_out += later.bytes_out;
        for (method, n) in &later.methods {
            *self.methods.entry(method.clone()).or_default() += n;
        }
        cap_methods(&mut self.methods);
        if self.latency.len() < later.latency.len() {
            self.latency.resize(later.latency.len(), 0);
        }
        for (mine, theirs) in self.latency.iter_mut().zip(&later.latency) {
            *mine += theirs;
        }
        self.block = later.block.or(self.block);
        self.head = later.head.or(self.head);
        self.behind_seconds = match (self.behind_seconds, later.behind_seconds) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Keeps the [`MAX_METHODS`] most called names (ties: by name) and adds the rest to `other`.
pub fn cap_methods(methods: &mut BTreeMap<String, u64>) {
    let named = methods.keys().filter(|m| *m != OTHER_METHODS).count();
    if named <= MAX_METHODS {
        return;
    }
    let mut ranked: Vec<(String, u64)> = methods
        .iter()
        .filter(|(m, _)| *m != OTHER_METHODS)
        .map(|(m, n)| (m.clone(), *n))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let folded: u64 = ranked[MAX_METHODS..].iter().map(|(_, n)| n).sum();
    for (m, _) in &ranked[MAX_METHODS..] {
        methods.remove(m);
    }
    *methods.entry(OTHER_METHODS.to_owned()).or_default() += folded;
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn opt_u64(row: &AnyRow, col: &str) -> Result<Option<u64>> {
    let v: Option<i64> = row.try_get(col)?;
    Ok(v.map(|v| v.max(0) as u64))
}

fn sample_from_row(row: &AnyRow) -> Result<UsageSample> {
    let count = |col: &str| -> Result<u64> { Ok(row.try_get::<i64, _>(col)?.max(0) as u64) };
    let methods: String = row.try_get("methods")?;
    let latency: String = row.try_get("latency")?;
    Ok(UsageSample {
        at: row.try_get("at")?,
        requests: count("requests")?,
        errors: count("errors")?,
        refused: count("refused")?,
        bytes_in: count("bytes_in")?,
        bytes_out: count("bytes_out")?,
        methods: serde_json::from_str(&methods)?,
        latency: serde_json::from_str(&latency)?,
        block: opt_u64(row, "block")?,
        head: opt_u64(row, "head")?,
        behind_seconds: opt_u64(row, "behind_seconds")?,
    })
}

const SAMPLE_COLS: &str =
    "at, requests, errors, refused, bytes_in, bytes_out, methods, latency, block, head, behind_seconds";

impl Store {
    /// Adds `sample` (one minute's counts; `sample.at` any time in it) to `node_id`'s minute and
    /// hour steps, stores `cursor` (the cumulative counters it was taken against) and prunes the
    /// node's rows older than their tier keeps (relative to `sample.at`). One transaction.
    pub async fn add_usage(
        &self,
        node_id: &str,
        sample: &UsageSample,
        cursor: Option<&serde_json::Value>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // The deletes first: on SQLite the transaction then holds the write lock from its first
        // statement, instead of upgrading a read (which fails at once when another writes).
        for tier in Tier::ALL {
            let step = tier.step_secs();
            sqlx::query(
                "DELETE FROM usage_samples WHERE node_id = $1 AND step_secs = $2 AND at < $3",
            )
            .bind(node_id)
            .bind(step)
            .bind(tier.step_start(sample.at) - tier.keep_ms())
            .execute(&mut *tx)
            .await?;
        }
        for tier in Tier::ALL {
            let at = tier.step_start(sample.at);
            let step = tier.step_secs();
            let existing = sqlx::query(&format!(
                "SELECT {SAMPLE_COLS} FROM usage_samples WHERE node_id = $1 AND step_secs = $2 AND at = $3"
            ))
            .bind(node_id)
            .bind(step)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?;
            let mut merged = match existing {
                Some(row) => sample_from_row(&row)?,
                None => UsageSample {
                    at,
                    ..UsageSample::default()
                },
            };
            merged.merge(sample);
            merged.at = at;
            sqlx::query(
                "INSERT INTO usage_samples (node_id, step_secs, at, requests, errors, refused, \
                 bytes_in, bytes_out, methods, latency, block, head, behind_seconds) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (node_id, step_secs, at) DO UPDATE SET requests = excluded.requests, \
                 errors = excluded.errors, refused = excluded.refused, bytes_in = excluded.bytes_in, \
                 bytes_out = excluded.bytes_out, methods = excluded.methods, latency = excluded.latency, \
                 block = excluded.block, head = excluded.head, behind_seconds = excluded.behind_seconds",
            )
            .bind(node_id)
            .bind(step)
            .bind(at)
            .bind(to_i64(merged.requests))
            .bind(to_i64(merged.errors))
            .bind(to_i64(merged.refused))
            .bind(to_i64(merged.bytes_in))
            .bind(to_i64(merged.bytes_out))
            .bind(serde_json::to_string(&merged.methods)?)
            .bind(serde_json::to_string(&merged.latency)?)
            .bind(merged.block.map(to_i64))
            .bind(merged.head.map(to_i64))
            .bind(merged.behind_seconds.map(to_i64))
            .execute(&mut *tx)
            .await?;
        }
        if let Some(cursor) = cursor {
            sqlx::query(
                "INSERT INTO usage_cursors (node_id, at, usage) VALUES ($1, $2, $3) \
                 ON CONFLICT (node_id) DO UPDATE SET at = excluded.at, usage = excluded.usage",
            )
            .bind(node_id)
            .bind(sample.at)
            .bind(cursor.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// `node_id`'s steps of `tier` that start at or after `from` (unix ms), oldest first.
    pub async fn usage(&self, node_id: &str, tier: Tier, from: i64) -> Result<Vec<UsageSample>> {
        let rows = sqlx::query(&format!(
            "SELECT {SAMPLE_COLS} FROM usage_samples WHERE node_id = $1 AND step_secs = $2 \
             AND at >= $3 ORDER BY at"
        ))
        .bind(node_id)
        .bind(tier.step_secs())
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sample_from_row).collect()
    }

    /// The cumulative counters `node_id`'s last stored usage was taken against.
    pub async fn usage_cursor(&self, node_id: &str) -> Result<Option<serde_json::Value>> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT usage FROM usage_cursors WHERE node_id = $1")
                .bind(node_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match text {
            Some(t) => Some(serde_json::from_str(&t)?),
            None => None,
        })
    }

    /// How many usage rows `node_id` has (both tiers).
    pub async fn usage_rows(&self, node_id: &str) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM usage_samples WHERE node_id = $1")
                .bind(node_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Deletes every node's steps older than their tier keeps at `now` (the steps of nodes no
    /// longer polled, which their own writes no longer prune). Returns the rows deleted.
    pub async fn purge_usage(&self, now: i64) -> Result<u64> {
        let mut deleted = 0;
        for tier in Tier::ALL {
            deleted += sqlx::query("DELETE FROM usage_samples WHERE step_secs = $1 AND at < $2")
                .bind(tier.step_secs())
                .bind(tier.step_start(now) - tier.keep_ms())
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }

    /// Forgets `node_id`'s usage (the node was deleted).
    pub async fn delete_usage(&self, node_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["usage_samples", "usage_cursors"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE node_id = $1"))
                .bind(node_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_stay_bounded_and_nothing_is_lost() {
        let mut m: BTreeMap<String, u64> = (0..30).map(|i| (format!("m{i:02}"), 100 - i)).collect();
        m.insert(OTHER_METHODS.to_owned(), 5);
        let total: u64 = m.values().sum();
        cap_methods(&mut m);
        assert_eq!(m.len(), MAX_METHODS + 1);
        assert_eq!(m.values().sum::<u64>(), total);
        assert!(m.contains_key("m00") && !m.contains_key("m29"));
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_latest_height() {
        let mut a = UsageSample {
            requests: 2,
            latency: vec![1, 0],
            block: Some(10),
            behind_seconds: Some(30),
            ..UsageSample::default()
        };
        let b = UsageSample {
            requests: 3,
            latency: vec![0, 2, 1],
            block: Some(12),
            behind_seconds: Some(4),
            ..UsageSample::default()
        };
        a.merge(&b);
        assert_eq!(a.requests, 5);
        assert_eq!(a.latency, vec![1, 2, 1]);
        assert_eq!(a.block, Some(12));
        assert_eq!(a.behind_seconds, Some(30));
    }
}
