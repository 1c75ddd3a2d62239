//! Several servers on one database: the replicas that run (each with a heartbeat), the lease of
//! each node (one holder at a time; taken over with row locks once it expires), users' requests
//! handed to a node's holder, notifications between replicas (PostgreSQL `LISTEN/NOTIFY`), and
//! the node-password key's fingerprint every replica must share.
//!
//! Lease times are the database's clock (one clock judges every expiry, whatever the replicas'
//! clocks say). The decisions (what to renew, take or hand back) are
//! `erigolem_lifecycle::lease`'s; this module only reads and writes them.

use erigolem_lifecycle::lease::Lease;
use sha2::Digest;
use sqlx::Row;

use crate::{state_list, Backend, NodeState, Result, Store, StoreError};

/// Notification channels (PostgreSQL).
pub mod channel {
    /// A transition was written; the payload is its owner (a trigger on `node_events`).
    pub const EVENTS: &str = "erigolem_events";
    /// A running node was polled; the payload is the progress as JSON.
    pub const PROGRESS: &str = "erigolem_progress";
    /// Leases were handed back: take them now.
    pub const LEASES: &str = "erigolem_leases";
    /// A user's request waits for its node's holder; the payload is the node id.
    pub const REQUESTS: &str = "erigolem_requests";
}

/// A running server process, as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReplica {
    pub id: String,
    /// `local`, `golem` or `none`.
    pub backend: String,
    pub host: String,
    pub data_dir: String,
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRecord {
    pub id: String,
    pub backend: String,
    pub host: String,
    pub data_dir: String,
    pub listen: String,
    pub started_at: i64,
    pub expires_at: i64,
}

/// A user's request about a node that its holder carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRequest {
    pub id: i64,
    pub node_id: String,
    /// `stop` or `delete`.
    pub request: String,
}

/// Nodes that need a holder: active ones, and any node whose agreement is not ended or not
/// settled (its invoice may still come; a deleted node's too).
fn needed_sql() -> String {
    format!(
        "SELECT id AS node_id FROM nodes WHERE state IN ({}) \
         UNION SELECT node_id FROM deals WHERE ended_at IS NULL OR settled = 0",
        state_list(&NodeState::ACTIVE)
    )
}

fn lease_from_row(row: &sqlx::any::AnyRow) -> Result<Lease> {
    Ok(Lease {
        node_id: row.try_get("node_id")?,
        holder: row.try_get("holder")?,
        epoch: row.try_get("epoch")?,
        expires_at: row.try_get("expires_at")?,
    })
}

fn replica_from_row(row: &sqlx::any::AnyRow) -> Result<ReplicaRecord> {
    Ok(ReplicaRecord {
        id: row.try_get("id")?,
        backend: row.try_get("backend")?,
        host: row.try_get("host")?,
        data_dir: row.try_get("data_dir")?,
        listen: row.try_get("listen")?,
        started_at: row.try_get("started_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

const KEY_SETTING: &str = "node_password_key_sha256";

impl Store {
    /// The database clock in unix milliseconds, as SQL.
    pub(crate) fn now_sql(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        }
    }

    /// The database's clock, unix ms.
    pub async fn db_now(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!("SELECT {}", self.now_sql()))
            .fetch_one(self.pool())
            .await?)
    }

    /// Whether several servers can share this database (PostgreSQL: yes; SQLite: one).
    pub fn shared(&self) -> bool {
        self.backend == Backend::Postgres
    }

    // ---- the key -------------------------------------------------------------------------------

    /// Records the node-password key's fingerprint the first time; afterwards refuses a key with
    /// another one ([`StoreError::KeyMismatch`]): a replica with its own key could not read the
    /// passwords the others stored, nor they its.
    pub async fn check_key(&self) -> Result<()> {
        let mine = self.key_fingerprint();
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(KEY_SETTING)
        .bind(&mine)
        .execute(self.pool())
        .await?;
        let stored: String = sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(KEY_SETTING)
            .fetch_one(self.pool())
            .await?;
        if stored != mine {
            return Err(StoreError::KeyMismatch {
                stored: stored.chars().take(16).collect(),
                ours: mine.chars().take(16).collect(),
            });
        }
        Ok(())
    }

    fn key_fingerprint(&self) -> String {
        let mut h = sha2::Sha256::new();
        h.update(b"erigolem node-password key v1\0");
        h.update(self.key_bytes());
        hex::encode(h.finalize())
    }

    // ---- replicas ------------------------------------------------------------------------------

    /// Registers this process (its heartbeat lasts `ttl_ms`) and returns the other replicas whose
    /// heartbeat is fresh.
    pub async fn register_replica(
        &self,
        r: &NewReplica,
        ttl_ms: i64,
    ) -> Result<Vec<ReplicaRecord>> {
        let now = self.now_sql();
        sqlx::query(&format!(
            "INSERT INTO replicas (id, backend, host, data_dir, listen, started_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, {now}, {now} + $6)"
        ))
        .bind(&r.id)
        .bind(&r.backend)
        .bind(&r.host)
        .bind(&r.data_dir)
        .bind(&r.listen)
        .bind(ttl_ms)
        .execute(self.pool())
        .await?;
        Ok(self
            .live_replicas()
            .await?
            .into_iter()
            .filter(|o| o.id != r.id)
            .collect())
    }

    /// Replicas whose heartbeat is fresh, oldest first.
    pub async fn live_replicas(&self) -> Result<Vec<ReplicaRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT id, backend, host, data_dir, listen, started_at, expires_at FROM replicas \
             WHERE expires_at > {} ORDER BY started_at, id",
            self.now_sql()
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(replica_from_row).collect()
    }

    /// Extends this replica's heartbeat; deletes the rows of replicas dead for a day. `false` if
    /// its row is gone (it was removed as dead: register again).
    pub async fn heartbeat(&self, id: &str, ttl_ms: i64) -> Result<bool> {
        let now = self.now_sql();
        let done = sqlx::query(&format!(
            "UPDATE replicas SET expires_at = {now} + $2 WHERE id = $1"
        ))
        .bind(id)
        .bind(ttl_ms)
        .execute(self.pool())
        .await?;
        sqlx::query(&format!(
            "DELETE FROM replicas WHERE expires_at < {now} - 86400000"
        ))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// This replica leaves (graceful shutdown).
    pub async fn remove_replica(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM replicas WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    // ---- leases --------------------------------------------------------------------------------

    /// The nodes that need a holder.
    pub async fn needed_nodes(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar(&format!("SELECT node_id FROM ({}) AS n", needed_sql()))
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Gives every node that needs a holder a lease row (free), forgets free rows of nodes that
    /// need none, and returns every lease row.
    pub async fn leases(&self) -> Result<Vec<Lease>> {
        let needed = needed_sql();
        sqlx::query(&format!(
            "INSERT INTO node_leases (node_id, holder, epoch, expires_at, acquired_at) \
             SELECT node_id, NULL, 0, 0, 0 FROM ({needed}) AS n WHERE true \
             ON CONFLICT (node_id) DO NOTHING"
        ))
        .execute(self.pool())
        .await?;
        sqlx::query(&format!(
            "DELETE FROM node_leases WHERE holder IS NULL AND node_id NOT IN \
             (SELECT node_id FROM ({needed}) AS n)"
        ))
        .execute(self.pool())
        .await?;
        let rows = sqlx::query(
            "SELECT node_id, holder, epoch, expires_at FROM node_leases ORDER BY node_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(lease_from_row).collect()
    }

    /// The node's lease, if it has a row.
    pub async fn lease(&self, node_id: &str) -> Result<Option<Lease>> {
        let row = sqlx::query(
            "SELECT node_id, holder, epoch, expires_at FROM node_leases WHERE node_id = $1",
        )
        .bind(node_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    /// Takes up to `n` free leases of nodes that need a holder (handed back, never taken, or
    /// expired; the longest free first) for replica `me`, for `ttl_ms`. Never `me`'s own expired
    /// ones: those it still holds and renews (a late tick must not make it lose its own nodes). PostgreSQL locks the rows
    /// it takes and skips the ones another replica is taking (`FOR UPDATE SKIP LOCKED`), so of
    /// replicas taking at once each lease goes to exactly one. Returns (node, epoch) taken.
    pub async fn take_leases(&self, me: &str, n: usize, ttl_ms: i64) -> Result<Vec<(String, i64)>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let now = self.now_sql();
        let needed = needed_sql();
        let sql = match self.backend {
            Backend::Postgres => format!(
                "WITH free AS (SELECT node_id FROM node_leases \
                   WHERE (holder IS NULL OR (expires_at <= {now} AND holder <> $1)) \
                   AND node_id IN (SELECT node_id FROM ({needed}) AS n) \
                   ORDER BY expires_at, node_id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 UPDATE node_leases AS l SET holder = $1, epoch = l.epoch + 1, \
                   expires_at = {now} + $3, acquired_at = {now} \
                 FROM free WHERE l.node_id = free.node_id RETURNING l.node_id, l.epoch"
            ),
            // One writer at a time: the statement is atomic as it is.
            Backend::Sqlite => format!(
                "UPDATE node_leases SET holder = $1, epoch = epoch + 1, expires_at = {now} + $3, \
                   acquired_at = {now} \
                 WHERE node_id IN (SELECT node_id FROM node_leases \
                   WHERE (holder IS NULL OR (expires_at <= {now} AND holder <> $1)) \
                   AND node_id IN (SELECT node_id FROM ({needed}) AS n) \
                   ORDER BY expires_at, node_id LIMIT $2) \
                 RETURNING node_id, epoch"
            ),
        };
        let rows = sqlx::query(&sql)
            .bind(me)
            .bind(i64::try_from(n).unwrap_or(i64::MAX))
            .bind(ttl_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("node_id")?, r.try_get("epoch")?)))
            .collect()
    }

    /// Takes one node's lease for `me` if it is free (or already `me`'s under another epoch);
    /// creates its row if it has none. The epoch taken, or `None` if another replica holds it.
    pub async fn take_lease(&self, me: &str, node_id: &str, ttl_ms: i64) -> Result<Option<i64>> {
        let now = self.now_sql();
        sqlx::query(
            "INSERT INTO node_leases (node_id, holder, epoch, expires_at, acquired_at) \
             VALUES ($1, NULL, 0, 0, 0) ON CONFLICT (node_id) DO NOTHING",
        )
        .bind(node_id)
        .execute(self.pool())
        .await?;
        Ok(sqlx::query_scalar(&format!(
            "UPDATE node_leases SET holder = $1, epoch = epoch + 1, expires_at = {now} + $3, \
             acquired_at = {now} \
             WHERE node_id = $2 AND (holder IS NULL OR expires_at <= {now} OR holder = $1) \
             RETURNING epoch"
        ))
        .bind(me)
        .bind(node_id)
        .bind(ttl_ms)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Renews every lease `me` holds for `ttl_ms` from now (database clock); returns them with
    /// their epochs (what the store says `me` holds).
    pub async fn renew_leases(&self, me: &str, ttl_ms: i64) -> Result<Vec<(String, i64)>> {
        let now = self.now_sql();
        let rows = sqlx::query(&format!(
            "UPDATE node_leases SET expires_at = {now} + $2 WHERE holder = $1 \
             RETURNING node_id, epoch"
        ))
        .bind(me)
        .bind(ttl_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("node_id")?, r.try_get("epoch")?)))
            .collect()
    }

    /// Hands back `me`'s leases of `nodes` (all of them when `None`) at once — free, expiring
    /// now — and tells the other replicas. Returns how many.
    pub async fn release_leases(&self, me: &str, nodes: Option<&[String]>) -> Result<u64> {
        let now = self.now_sql();
        let released = match nodes {
            None => sqlx::query(&format!(
                "UPDATE node_leases SET holder = NULL, expires_at = {now} WHERE holder = $1"
            ))
            .bind(me)
            .execute(self.pool())
            .await?
            .rows_affected(),
            Some(nodes) => {
                let mut n = 0;
                for node in nodes {
                    n += sqlx::query(&format!(
                        "UPDATE node_leases SET holder = NULL, expires_at = {now} \
                         WHERE holder = $1 AND node_id = $2"
                    ))
                    .bind(me)
                    .bind(node)
                    .execute(self.pool())
                    .await?
                    .rows_affected();
                }
                n
            }
        };
        if released > 0 {
            self.notify(channel::LEASES, me).await?;
        }
        Ok(released)
    }

    // ---- requests handed to a node's holder ----------------------------------------------------

    /// Leaves `request` (`stop` or `delete`) for the holder of `node_id`; its id.
    pub async fn put_request(&self, node_id: &str, request: &str) -> Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO node_requests (node_id, request, created_at) VALUES ($1, $2, $3) \
             RETURNING id",
        )
        .bind(node_id)
        .bind(request)
        .bind(crate::now_ms())
        .fetch_one(self.pool())
        .await?;
        self.notify(channel::REQUESTS, node_id).await?;
        Ok(id)
    }

    /// Takes the open requests about nodes `me` holds (each is taken once).
    pub async fn take_requests(&self, me: &str) -> Result<Vec<NodeRequest>> {
        let rows = sqlx::query(
            "UPDATE node_requests SET taken_by = $1 WHERE outcome IS NULL AND taken_by IS NULL \
             AND node_id IN (SELECT node_id FROM node_leases WHERE holder = $1) \
             RETURNING id, node_id, request",
        )
        .bind(me)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeRequest {
                    id: r.try_get("id")?,
                    node_id: r.try_get("node_id")?,
                    request: r.try_get("request")?,
                })
            })
            .collect()
    }

    /// Takes request `id` for `me` whoever had taken it (its replica is gone); `false` if it has
    /// an outcome already.
    pub async fn take_request_back(&self, me: &str, id: i64) -> Result<bool> {
        let done =
            sqlx::query("UPDATE node_requests SET taken_by = $1 WHERE id = $2 AND outcome IS NULL")
                .bind(me)
                .bind(id)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records what became of request `id` (once).
    pub async fn finish_request(&self, id: i64, outcome: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE node_requests SET outcome = $1, done_at = $2 WHERE id = $3 AND outcome IS NULL",
        )
        .bind(outcome)
        .bind(crate::now_ms())
        .bind(id)
        .execute(self.pool())
        .await?;
        sqlx::query("DELETE FROM node_requests WHERE done_at < $1")
            .bind(crate::now_ms() - 3_600_000)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// What became of request `id`, once its holder carried it out.
    pub async fn request_outcome(&self, id: i64) -> Result<Option<String>> {
        let outcome: Option<Option<String>> =
            sqlx::query_scalar("SELECT outcome FROM node_requests WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        Ok(outcome.flatten())
    }

    // ---- notifications -------------------------------------------------------------------------

    /// Tells every replica listening on `channel` (PostgreSQL; nothing to do with SQLite: one
    /// replica). The payload must be under 8000 bytes.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// A listener on `channels` (PostgreSQL `LISTEN`); `None` with SQLite.
    pub async fn listen(&self, channels: &[&str]) -> Result<Option<Listener>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen_all(channels.iter().copied()).await?;
        Ok(Some(Listener(listener)))
    }
}

/// Notifications from other replicas (and this one).
#[derive(Debug)]
pub struct Listener(sqlx::postgres::PgListener);

impl Listener {
    /// The next notification: (channel, payload). After a lost connection it reconnects and
    /// listens again; notifications sent meanwhile are lost (the feeds re-read the store
    /// every few seconds for that).
    pub async fn recv(&mut self) -> Result<(String, String)> {
        let n = self.0.recv().await?;
        Ok((n.channel().to_owned(), n.payload().to_owned()))
    }
}
