//! The requestor server's persistent registry: SIWE nonces, sessions, nodes and their event log, on
//! SQLite (the default) or PostgreSQL, with node passwords encrypted at rest (XChaCha20-Poly1305).
//!
//! One [`Store`] serves both backends through sqlx's `Any` driver: every query is plain SQL that
//! SQLite (≥ 3.35) and PostgreSQL both accept, with `$N` placeholders. Migrations live in
//! `migrations/sqlite` and `migrations/postgres` and run on [`Store::connect`]. Timestamps are
//! `i64` unix milliseconds throughout (see [`now_ms`]).
//!
//! Owners are compared exactly as given: normalise addresses (e.g. lowercase) before calling.

mod alerts;
mod deals;
mod error;
mod key;
mod replicas;
mod usage;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

pub use alerts::{
    AlertRecord, Attempt, ClaimedDelivery, DeliveryRecord, NewDelivery, WebhookRecord,
};
pub use deals::{
    DealRecord, DocumentRecord, DocumentState, NewDeal, NewDocument, NewPlan, PlanRecord,
    ReplacementRecord, Reservation, Reserved, SERVER_LEDGER,
};
pub use erigolem_lifecycle::lease::Lease;
pub use error::StoreError;
pub use key::{Key, KeyFile};
pub use replicas::{channel, Listener, NewReplica, NodeRequest, ReplicaRecord};
pub use usage::{cap_methods, Tier, UsageSample, MAX_METHODS, MAX_ROWS_PER_NODE, OTHER_METHODS};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The most bytes of text from outside (a provider's failure reason, URL, user name) one column
/// keeps; longer text is cut at a character boundary and marked with `…`.
pub const MAX_TEXT_BYTES: usize = 2048;
/// The most bytes of a node's `sync` JSON kept; a larger document is not stored.
pub const MAX_SYNC_BYTES: usize = 8192;

/// `text` cut to at most `max` bytes at a character boundary, ending in `…` when it was cut.
pub fn cap_text(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

/// `sync` as stored: `None` when its JSON is larger than [`MAX_SYNC_BYTES`].
pub fn cap_sync(sync: Option<serde_json::Value>) -> Option<serde_json::Value> {
    sync.filter(|v| v.to_string().len() <= MAX_SYNC_BYTES)
}

/// What one [`Store::purge`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub nonces: u64,
    pub sessions: u64,
    pub events: u64,
}

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub use erigolem_lifecycle::NodeState;

/// What [`Store::insert_node`] needs; the rest starts empty and the state `pending`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewNode {
    pub owner: String,
    pub name: String,
    pub network: String,
    pub mode: String,
    pub prune: String,
    /// The endpoint's allowlists (opaque to the store: the server's JSON), kept by replacements.
    pub access: Option<serde_json::Value>,
}

/// One row of `nodes`. The encrypted password is in neither its Debug output nor its serde form;
/// [`Store::password`] decrypts it for the owner.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub network: String,
    pub mode: String,
    pub prune: String,
    pub state: NodeState,
    pub reason: Option<String>,
    pub url: Option<String>,
    pub ws_url: Option<String>,
    pub username: Option<String>,
    /// base64(nonce ‖ ciphertext), XChaCha20-Poly1305 with the node id as associated data.
    #[serde(skip)]
    pub password_enc: Option<String>,
    pub instance: Option<String>,
    /// Opaque to the store: whatever the backend needs to find the node again.
    pub backend_ref: Option<serde_json::Value>,
    /// The plan (budget, caps, replacements) it belongs to: the first node's id.
    pub plan_id: Option<String>,
    /// The failed node this one replaced.
    pub replaces: Option<String>,
    /// The endpoint's allowlists, as given in [`NewNode::access`].
    pub access: Option<serde_json::Value>,
    pub block: Option<i64>,
    pub sync: Option<serde_json::Value>,
    pub created_at: i64,
    pub updated_at: i64,
    pub stopped_at: Option<i64>,
}

impl fmt::Debug for NodeRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeRecord")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("name", &self.name)
            .field("network", &self.network)
            .field("mode", &self.mode)
            .field("prune", &self.prune)
            .field("state", &self.state)
            .field("reason", &self.reason)
            .field("url", &self.url)
            .field("ws_url", &self.ws_url)
            .field("username", &self.username)
            .field(
                "password_enc",
                &self.password_enc.as_ref().map(|_| "<redacted>"),
            )
            .field("instance", &self.instance)
            .field("backend_ref", &self.backend_ref)
            .field("plan_id", &self.plan_id)
            .field("replaces", &self.replaces)
            .field("block", &self.block)
            .field("sync", &self.sync)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("stopped_at", &self.stopped_at)
            .finish()
    }
}

/// A live session: whose it is and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub address: String,
    pub expires_at: i64,
}

/// One row of `node_events`: a node entered `state` at `at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: i64,
    pub node_id: String,
    pub owner: String,
    pub state: NodeState,
    pub reason: Option<String>,
    pub at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

const NODE_COLS: &str = "id, owner, name, network, mode, prune, state, reason, url, ws_url, \
    username, password_enc, instance, backend_ref, block, sync, created_at, updated_at, stopped_at, \
    plan_id, replaces, access";

const SQLITE_PRAGMAS: [&str; 4] = [
    "PRAGMA busy_timeout = 10000",
    "PRAGMA foreign_keys = ON",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
];

/// The registry. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    cipher: Arc<XChaCha20Poly1305>,
    key: Arc<Key>,
    /// For `LISTEN` (a connection of its own).
    url: Arc<str>,
    /// The replica a node inserted through this handle is leased to, and for how long (ms).
    replica: Option<(Arc<str>, i64)>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens `url` — `sqlite://PATH?mode=rwc` (`mode=rwc` creates the file) or
    /// `postgres://USER:PASS@HOST:PORT/DB` — and brings its schema up to date. SQLite connections
    /// get WAL mode, foreign keys and a 10 s busy timeout; the file's directory is created if
    /// missing. `sqlite::memory:` works too (one connection, for tests). `key` encrypts node
    /// passwords.
    pub async fn connect(url: &str, key: Key) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let scheme = url.split(':').next().unwrap_or_default();
        let backend = match scheme {
            "sqlite" => Backend::Sqlite,
            "postgres" | "postgresql" => Backend::Postgres,
            other => return Err(StoreError::UnsupportedUrl(other.to_owned())),
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            if in_memory {
                // One connection, kept forever: the database lives as long as it does.
                options = options
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
            } else {
                options = options.max_connections(8);
                create_sqlite_parent(url)?;
            }
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in SQLITE_PRAGMAS {
                        conn.execute(pragma).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Store {
            pool,
            backend,
            cipher: Arc::new(XChaCha20Poly1305::new(&key.0)),
            key: Arc::new(key),
            url: url.into(),
            replica: None,
        })
    }

    /// This handle's node inserts (created, replacements) lease the new node to `replica` for
    /// `ttl_ms`, in the insert's transaction: no other replica can take a node between its
    /// creation and its start.
    pub fn for_replica(mut self, replica: &str, ttl_ms: i64) -> Store {
        self.replica = Some((replica.into(), ttl_ms));
        self
    }

    pub(crate) fn key_bytes(&self) -> &[u8] {
        self.key.0.as_slice()
    }

    /// The pool, for health checks and tests.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- nonces -------------------------------------------------------------------------------

    pub async fn put_nonce(&self, nonce: &str, expires_at: i64) -> Result<()> {
        sqlx::query("INSERT INTO nonces (nonce, expires_at) VALUES ($1, $2)")
            .bind(nonce)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes `nonce` and says whether it existed and was unexpired at `now`. Single use: of
    /// concurrent callers at most one gets `true` (one `DELETE … RETURNING`).
    pub async fn consume_nonce(&self, nonce: &str, now: i64) -> Result<bool> {
        let expires_at: Option<i64> =
            sqlx::query_scalar("DELETE FROM nonces WHERE nonce = $1 RETURNING expires_at")
                .bind(nonce)
                .fetch_optional(&self.pool)
                .await?;
        Ok(expires_at.is_some_and(|e| e > now))
    }

    /// Stores `nonce` for `client` (an IP, or an IPv6 /64) unless that client already holds
    /// `max_outstanding` unexpired ones at `now`: `Ok(false)` then, and nothing is stored. The
    /// check and the insert are one statement (on PostgreSQL under a per-client lock), so
    /// concurrent requests cannot overshoot; with several servers on one database the cap is
    /// theirs together.
    pub async fn issue_nonce(
        &self,
        nonce: &str,
        expires_at: i64,
        client: &str,
        max_outstanding: u32,
        now: i64,
    ) -> Result<bool> {
        // A cheap read first: a client at its cap (the flood) costs no write.
        let held: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM nonces WHERE client = $1 AND expires_at > $2")
                .bind(client)
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
        if held >= i64::from(max_outstanding) {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await?;
        self.lock_key(&mut tx, "nonce", client).await?;
        let done = sqlx::query(
            "INSERT INTO nonces (nonce, expires_at, client) SELECT $1, $2, $3 \
             WHERE (SELECT COUNT(*) FROM nonces WHERE client = $3 AND expires_at > $4) < $5",
        )
        .bind(nonce)
        .bind(expires_at)
        .bind(client)
        .bind(now)
        .bind(i64::from(max_outstanding))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes nonces and sessions expired at `now`, and revoked sessions; returns how many rows
    /// went. Safe to run from several servers at once.
    pub async fn purge_expired(&self, now: i64) -> Result<u64> {
        let purged = self.purge(now, i64::MIN).await?;
        Ok(purged.nonces + purged.sessions)
    }

    /// [`Store::purge_expired`], and deletes the events older than `events_before` (unix ms).
    pub async fn purge(&self, now: i64, events_before: i64) -> Result<Purged> {
        let nonces = sqlx::query("DELETE FROM nonces WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let sessions =
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR revoked_at IS NOT NULL")
                .bind(now)
                .execute(&self.pool)
                .await?;
        let events = sqlx::query("DELETE FROM node_events WHERE at < $1")
            .bind(events_before)
            .execute(&self.pool)
            .await?;
        Ok(Purged {
            nonces: nonces.rows_affected(),
            sessions: sessions.rows_affected(),
            events: events.rows_affected(),
        })
    }

    // ---- sessions -----------------------------------------------------------------------------

    pub async fn create_session(
        &self,
        token_hash: &str,
        address: &str,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, address, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(address)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session, unless it is unknown, revoked or expired at `now`.
    pub async fn session(&self, token_hash: &str, now: i64) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT address, expires_at FROM sessions \
             WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionRecord {
                address: r.try_get("address")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Which of `token_hashes` are live sessions at `now` (known, unrevoked, unexpired).
    pub async fn live_sessions(&self, token_hashes: &[String], now: i64) -> Result<Vec<String>> {
        if token_hashes.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (2..token_hashes.len() + 2)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT token_hash FROM sessions WHERE revoked_at IS NULL AND expires_at > $1 \
             AND token_hash IN ({placeholders})"
        );
        let mut query = sqlx::query_scalar(&sql).bind(now);
        for hash in token_hashes {
            query = query.bind(hash);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// Revokes a session; `true` if it was live (known and not yet revoked).
    pub async fn revoke_session(&self, token_hash: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- nodes --------------------------------------------------------------------------------

    /// Registers a node in state `pending` (with its first event). Ids are UUID v7: unique, and
    /// ordered by creation within a process.
    pub async fn insert_node(&self, new: &NewNode) -> Result<NodeRecord> {
        Ok(self.insert_node_within(new, None, None).await?.0)
    }

    /// [`Store::insert_node`] unless `new.owner` has `max_active` active nodes already
    /// ([`StoreError::TooManyNodes`]). The count and the insert are one statement under a
    /// per-owner lock, so of concurrent creates exactly the ones that fit get through, on SQLite
    /// and PostgreSQL, from one server or several.
    pub async fn insert_node_capped(&self, new: &NewNode, max_active: u32) -> Result<NodeRecord> {
        Ok(self
            .insert_node_within(new, Some(max_active), None)
            .await?
            .0)
    }

    /// Registers a node with its plan (budget, caps, replacement policy), in one transaction (the
    /// plan's id is the node's), capped like [`Store::insert_node_capped`] when `max_active` is
    /// given.
    pub async fn insert_node_with_plan(
        &self,
        new: &NewNode,
        plan: &NewPlan,
        max_active: Option<u32>,
    ) -> Result<(NodeRecord, PlanRecord)> {
        let (node, plan) = self.insert_node_within(new, max_active, Some(plan)).await?;
        let plan = plan.ok_or_else(|| StoreError::Corrupt("the plan was not recorded".into()))?;
        Ok((node, plan))
    }

    async fn insert_node_within(
        &self,
        new: &NewNode,
        cap: Option<u32>,
        plan: Option<&NewPlan>,
    ) -> Result<(NodeRecord, Option<PlanRecord>)> {
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.pool.begin().await?;
        if cap.is_some() {
            self.lock_key(&mut tx, "nodes", &new.owner).await?;
        }
        self.lock_events(&mut tx).await?;
        // SQLite: the first statement of the transaction is a write, so it takes the database's
        // write lock before the count reads (no other writer between count and insert).
        let plan = match plan {
            Some(plan) => Some(deals::insert_plan(&mut tx, &id, &new.owner, plan).await?),
            None => None,
        };
        let plan_id = plan.as_ref().map(|p| p.id.clone());
        let Some(node) =
            insert_node_row(&mut tx, &id, new, plan_id.as_deref(), None, None, cap).await?
        else {
            tx.rollback().await?;
            let max = cap.unwrap_or_default();
            let active = self.count_active(&new.owner).await?;
            return Err(StoreError::TooManyNodes { active, max });
        };
        self.lease_new(&mut tx, &id).await?;
        tx.commit().await?;
        Ok((node, plan))
    }

    /// A replacement for the failed node `failed`: if its plan allows one more (auto-replace on,
    /// replacements left), takes it (compare-and-set on the plan's count), registers the new node
    /// (same plan, `replaces` = the failed one) and records the replacement with `reason`, in one
    /// transaction. `None` when the plan allows no more.
    pub async fn replace_node(
        &self,
        failed: &NodeRecord,
        new: &NewNode,
        reason: &str,
    ) -> Result<Option<NodeRecord>> {
        let Some(plan_id) = &failed.plan_id else {
            return Ok(None);
        };
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.pool.begin().await?;
        self.lock_events(&mut tx).await?;
        let Some(seq) = deals::take_replacement(&mut tx, plan_id).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let why = format!("replaces node {}: {reason}", failed.id);
        let Some(node) = insert_node_row(
            &mut tx,
            &id,
            new,
            Some(plan_id),
            Some(&failed.id),
            Some(&why),
            None,
        )
        .await?
        else {
            return Err(StoreError::Corrupt(
                "an uncapped insert inserted nothing".into(),
            ));
        };
        deals::insert_replacement(&mut tx, plan_id, seq, &failed.id, &id, reason).await?;
        self.lease_new(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(Some(node))
    }

    /// The node if `owner` owns it.
    pub async fn node(&self, id: &str, owner: &str) -> Result<Option<NodeRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {NODE_COLS} FROM nodes WHERE id = $1 AND owner = $2"
        ))
        .bind(id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(node_from_row).transpose()
    }

    /// `owner`'s nodes, newest first.
    pub async fn nodes(&self, owner: &str) -> Result<Vec<NodeRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {NODE_COLS} FROM nodes WHERE owner = $1 ORDER BY created_at DESC, id DESC"
        ))
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(node_from_row).collect()
    }

    /// How many of `owner`'s nodes are pending, starting, running or stopping.
    pub async fn count_active(&self, owner: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM nodes WHERE owner = $1 AND state IN ({})",
            state_list(&NodeState::ACTIVE)
        ))
        .bind(owner)
        .fetch_one(&self.pool)
        .await?)
    }

    /// How many nodes are in each state (every state, zeros included), counted by the database.
    pub async fn count_by_state(&self) -> Result<Vec<(NodeState, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM nodes GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut counts: Vec<(NodeState, i64)> = NodeState::ALL.iter().map(|s| (*s, 0)).collect();
        for row in rows {
            let state: NodeState = row.try_get::<String, _>("state")?.parse()?;
            let n: i64 = row.try_get("n")?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
                slot.1 = n;
            }
        }
        Ok(counts)
    }

    /// Every owner's nodes in one of `states`, oldest first (for the reconciler).
    pub async fn nodes_in_states(&self, states: &[NodeState]) -> Result<Vec<NodeRecord>> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {NODE_COLS} FROM nodes WHERE state IN ({}) ORDER BY created_at, id",
            state_list(states)
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(node_from_row).collect()
    }

    /// Moves node `id` to `to` (see [`NodeState`] for what is allowed) and logs the event, in one
    /// transaction. `reason` replaces the stored reason when given (the old one stays otherwise);
    /// entering `stopped` or `failed` sets `stopped_at`. The check is a compare-and-set on the
    /// current state, so of two racing transitions from the same state only one succeeds.
    pub async fn transition(
        &self,
        id: &str,
        to: NodeState,
        reason: Option<&str>,
    ) -> Result<NodeRecord> {
        let now = now_ms();
        let reason = reason.map(|r| cap_text(r, MAX_TEXT_BYTES));
        let reason = reason.as_deref();
        let from = to.predecessors();
        if !from.is_empty() {
            let mut tx = self.pool.begin().await?;
            self.lock_events(&mut tx).await?;
            let row = sqlx::query(&format!(
                "UPDATE nodes SET state = $1, reason = COALESCE($2, reason), updated_at = $3, \
                 stopped_at = COALESCE($4, stopped_at) \
                 WHERE id = $5 AND state IN ({}) RETURNING {NODE_COLS}",
                state_list(from)
            ))
            .bind(to.as_str())
            .bind(reason)
            .bind(now)
            .bind(to.is_down().then_some(now))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                let node = node_from_row(&row)?;
                insert_event(&mut tx, id, &node.owner, to, reason, now).await?;
                tx.commit().await?;
                return Ok(node);
            }
            tx.rollback().await?;
        }
        match self.state_of(id).await? {
            None => Err(StoreError::NotFound),
            Some(current) => Err(StoreError::IllegalTransition { from: current, to }),
        }
    }

    /// [`Store::transition`], but only from `from`: a compare-and-set on the state a decision was
    /// made from, so a decision never applies to a node that moved on meanwhile.
    pub async fn transition_from(
        &self,
        id: &str,
        from: NodeState,
        to: NodeState,
        reason: Option<&str>,
    ) -> Result<NodeRecord> {
        if !from.can_transition_to(to) {
            return Err(StoreError::IllegalTransition { from, to });
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        self.lock_events(&mut tx).await?;
        let row = sqlx::query(&format!(
            "UPDATE nodes SET state = $1, reason = COALESCE($2, reason), updated_at = $3, \
             stopped_at = COALESCE($4, stopped_at) \
             WHERE id = $5 AND state = $6 RETURNING {NODE_COLS}"
        ))
        .bind(to.as_str())
        .bind(reason)
        .bind(now)
        .bind(to.is_down().then_some(now))
        .bind(id)
        .bind(from.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let node = node_from_row(&row)?;
            insert_event(&mut tx, id, &node.owner, to, reason, now).await?;
            tx.commit().await?;
            return Ok(node);
        }
        tx.rollback().await?;
        match self.state_of(id).await? {
            None => Err(StoreError::NotFound),
            Some(current) => Err(StoreError::IllegalTransition { from: current, to }),
        }
    }

    /// Any owner's node `id` (for the reconciler and the payment loop).
    pub async fn node_by_id(&self, id: &str) -> Result<Option<NodeRecord>> {
        let row = sqlx::query(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(node_from_row).transpose()
    }

    /// The node that replaced `id`, if one did.
    pub async fn replacement_of(&self, id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM nodes WHERE replaces = $1 LIMIT 1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records where node `id` answers and its credentials; the password is stored encrypted.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_endpoint(
        &self,
        id: &str,
        url: &str,
        ws_url: Option<&str>,
        username: &str,
        password_plain: &str,
        instance: Option<&str>,
        backend_ref: Option<&serde_json::Value>,
    ) -> Result<()> {
        let password_enc = self.encrypt(id, password_plain)?;
        let cap = |t: &str| cap_text(t, MAX_TEXT_BYTES).into_owned();
        let (url, ws_url, username) = (cap(url), ws_url.map(cap), cap(username));
        let instance = instance.map(cap);
        let done = sqlx::query(
            "UPDATE nodes SET url = $1, ws_url = $2, username = $3, password_enc = $4, \
             instance = $5, backend_ref = $6, updated_at = $7 WHERE id = $8",
        )
        .bind(url)
        .bind(ws_url)
        .bind(username)
        .bind(password_enc)
        .bind(instance)
        .bind(backend_ref.map(|v| v.to_string()))
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        found(done.rows_affected())
    }

    /// Replaces node `id`'s password (credential rotation); stored encrypted.
    pub async fn set_password(&self, id: &str, password_plain: &str) -> Result<()> {
        let password_enc = self.encrypt(id, password_plain)?;
        let done = sqlx::query("UPDATE nodes SET password_enc = $1, updated_at = $2 WHERE id = $3")
            .bind(password_enc)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        found(done.rows_affected())
    }

    /// Replaces node `id`'s opaque backend reference.
    pub async fn set_backend_ref(&self, id: &str, backend_ref: &serde_json::Value) -> Result<()> {
        let done = sqlx::query("UPDATE nodes SET backend_ref = $1, updated_at = $2 WHERE id = $3")
            .bind(backend_ref.to_string())
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        found(done.rows_affected())
    }

    /// The decrypted password of node `id` if `owner` owns it and it has one.
    pub async fn password(&self, id: &str, owner: &str) -> Result<Option<String>> {
        let enc: Option<Option<String>> =
            sqlx::query_scalar("SELECT password_enc FROM nodes WHERE id = $1 AND owner = $2")
                .bind(id)
                .bind(owner)
                .fetch_optional(&self.pool)
                .await?;
        enc.flatten().map(|e| self.decrypt(id, &e)).transpose()
    }

    /// Records sync progress: the latest block and the `sync` object (both replaced).
    pub async fn set_progress(
        &self,
        id: &str,
        block: Option<i64>,
        sync: Option<serde_json::Value>,
    ) -> Result<()> {
        let sync = cap_sync(sync);
        let done =
            sqlx::query("UPDATE nodes SET block = $1, sync = $2, updated_at = $3 WHERE id = $4")
                .bind(block)
                .bind(sync.map(|v| v.to_string()))
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
        found(done.rows_affected())
    }

    /// Deletes `owner`'s node `id` if it is stopped or failed: `Ok(true)`; `Ok(false)` if `owner`
    /// has no such node; [`StoreError::NotStopped`] otherwise. Its events stay in the log.
    pub async fn delete_node(&self, id: &str, owner: &str) -> Result<bool> {
        let deleted: Option<String> = sqlx::query_scalar(
            "DELETE FROM nodes WHERE id = $1 AND owner = $2 AND state IN ('stopped', 'failed') \
             RETURNING id",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        if deleted.is_some() {
            self.delete_usage(id).await?;
            self.delete_alerts(id).await?;
            return Ok(true);
        }
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM nodes WHERE id = $1 AND owner = $2")
                .bind(id)
                .bind(owner)
                .fetch_optional(&self.pool)
                .await?;
        match state {
            None => Ok(false),
            Some(s) => Err(StoreError::NotStopped { state: s.parse()? }),
        }
    }

    /// `owner`'s events with id > `after_id`, oldest first, at most `limit`. Ids only grow, and
    /// become visible in order, so `after_id` = the last id seen pages without gaps.
    pub async fn events(&self, owner: &str, after_id: i64, limit: i64) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT id, node_id, owner, state, reason, at FROM node_events \
             WHERE owner = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(owner)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRecord {
                    id: r.try_get("id")?,
                    node_id: r.try_get("node_id")?,
                    owner: r.try_get("owner")?,
                    state: r.try_get::<String, _>("state")?.parse()?,
                    reason: r.try_get("reason")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// The id of `owner`'s newest event, 0 if none: where a new event stream starts.
    pub async fn latest_event_id(&self, owner: &str) -> Result<i64> {
        let id: Option<i64> =
            sqlx::query_scalar("SELECT MAX(id) FROM node_events WHERE owner = $1")
                .bind(owner)
                .fetch_one(&self.pool)
                .await?;
        Ok(id.unwrap_or(0))
    }

    // ---- internals ----------------------------------------------------------------------------

    /// A node just inserted is leased (epoch 1) to this handle's replica, if it has one.
    async fn lease_new(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>, id: &str) -> Result<()> {
        if let Some((replica, ttl)) = &self.replica {
            let now = self.now_sql();
            sqlx::query(&format!(
                "INSERT INTO node_leases (node_id, holder, epoch, expires_at, acquired_at) \
                 VALUES ($1, $2, 1, {now} + $3, {now})"
            ))
            .bind(id)
            .bind(replica.as_ref())
            .bind(*ttl)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// PostgreSQL: holds a transaction-scoped advisory lock on `(scope, key)`, serialising the
    /// check-then-insert of concurrent transactions for that key. (SQLite has a single writer.)
    async fn lock_key(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        scope: &str,
        key: &str,
    ) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("{scope}:{key}"))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn state_of(&self, id: &str) -> Result<Option<NodeState>> {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM nodes WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(state.map(|s| s.parse()).transpose()?)
    }

    /// PostgreSQL hands out identity values at insert, not commit: serialise event writers so
    /// that ids become visible in order. (SQLite has a single writer anyway.)
    async fn lock_events(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("LOCK TABLE node_events IN EXCLUSIVE MODE")
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    fn encrypt(&self, id: &str, plain: &str) -> Result<String> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain.as_bytes(),
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Crypto("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(B64.encode(out))
    }

    fn decrypt(&self, id: &str, enc: &str) -> Result<String> {
        let bytes = B64
            .decode(enc)
            .map_err(|_| StoreError::Crypto("stored password is not base64"))?;
        if bytes.len() < 24 + 16 {
            return Err(StoreError::Crypto("stored password is too short"));
        }
        let (nonce, ct) = bytes.split_at(24);
        let plain = self
            .cipher
            .decrypt(
                nonce.into(),
                Payload {
                    msg: ct,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| {
                StoreError::Crypto("cannot decrypt the stored password (wrong key file?)")
            })?;
        String::from_utf8(plain).map_err(|_| StoreError::Crypto("decrypted password is not UTF-8"))
    }
}

/// `mode=rwc` creates the database file but not its directory: create that too.
fn create_sqlite_parent(url: &str) -> Result<()> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    let file = std::path::Path::new(options.get_filename());
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Sqlx(sqlx::Error::Io(e)))?;
    }
    Ok(())
}

async fn insert_node_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    new: &NewNode,
    plan_id: Option<&str>,
    replaces: Option<&str>,
    reason: Option<&str>,
    cap: Option<u32>,
) -> Result<Option<NodeRecord>> {
    let now = now_ms();
    let done = sqlx::query(&format!(
        "INSERT INTO nodes (id, owner, name, network, mode, prune, state, created_at, updated_at, \
         plan_id, replaces, reason, access) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $13 \
         WHERE $12 < 0 OR (SELECT COUNT(*) FROM nodes WHERE owner = $2 AND state IN ({})) < $12",
        state_list(&NodeState::ACTIVE)
    ))
    .bind(id)
    .bind(&new.owner)
    .bind(&new.name)
    .bind(&new.network)
    .bind(&new.mode)
    .bind(&new.prune)
    .bind(NodeState::Pending.as_str())
    .bind(now)
    .bind(plan_id)
    .bind(replaces)
    .bind(reason)
    .bind(cap.map_or(-1, i64::from))
    .bind(new.access.as_ref().map(|a| a.to_string()))
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    insert_event(tx, id, &new.owner, NodeState::Pending, reason, now).await?;
    Ok(Some(NodeRecord {
        id: id.to_owned(),
        owner: new.owner.clone(),
        name: new.name.clone(),
        network: new.network.clone(),
        mode: new.mode.clone(),
        prune: new.prune.clone(),
        state: NodeState::Pending,
        reason: reason.map(str::to_owned),
        url: None,
        ws_url: None,
        username: None,
        password_enc: None,
        instance: None,
        backend_ref: None,
        plan_id: plan_id.map(str::to_owned),
        replaces: replaces.map(str::to_owned),
        access: new.access.clone(),
        block: None,
        sync: None,
        created_at: now,
        updated_at: now,
        stopped_at: None,
    }))
}

async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    node_id: &str,
    owner: &str,
    state: NodeState,
    reason: Option<&str>,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO node_events (node_id, owner, state, reason, at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(node_id)
    .bind(owner)
    .bind(state.as_str())
    .bind(reason)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) fn found(rows: u64) -> Result<()> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// `'a', 'b'` — literals from the enum, never from input.
pub(crate) fn state_list(states: &[NodeState]) -> String {
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn json_column(row: &AnyRow, col: &str) -> Result<Option<serde_json::Value>> {
    row.try_get::<Option<String>, _>(col)?
        .map(|s| {
            serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("nodes.{col}: {e}")))
        })
        .transpose()
}

fn node_from_row(row: &AnyRow) -> Result<NodeRecord> {
    Ok(NodeRecord {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        name: row.try_get("name")?,
        network: row.try_get("network")?,
        mode: row.try_get("mode")?,
        prune: row.try_get("prune")?,
        state: row.try_get::<String, _>("state")?.parse()?,
        reason: row.try_get("reason")?,
        url: row.try_get("url")?,
        ws_url: row.try_get("ws_url")?,
        username: row.try_get("username")?,
        password_enc: row.try_get("password_enc")?,
        instance: row.try_get("instance")?,
        backend_ref: json_column(row, "backend_ref")?,
        plan_id: row.try_get("plan_id")?,
        replaces: row.try_get("replaces")?,
        access: json_column(row, "access")?,
        block: row.try_get("block")?,
        sync: json_column(row, "sync")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        stopped_at: row.try_get("stopped_at")?,
    })
}
