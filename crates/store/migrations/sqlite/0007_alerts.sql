-- Issue 15: alerts of nodes and the webhooks they are delivered to, SQLite flavour (keep in step
-- with ../postgres/0007_alerts.sql).

-- A node's alert rules (erigolem_lifecycle::alert::AlertRules as JSON); no row: the defaults.
CREATE TABLE alert_rules (
    node_id    TEXT    PRIMARY KEY NOT NULL,
    rules      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- Nodes past their first sync: lag alerts apply to them (a node in its first sync is behind by
-- nature). Kept here, not in the holder's memory, so a replica taking a node over knows it.
CREATE TABLE alert_caught_up (
    node_id TEXT    PRIMARY KEY NOT NULL,
    at      INTEGER NOT NULL
) STRICT;

-- Alerts fired (and resolved). At most one active alert per node and kind, whichever replica
-- fires it: the partial unique index makes a second firing a no-op.
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id     TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    fired_at    INTEGER NOT NULL,
    resolved_at INTEGER
) STRICT;
CREATE UNIQUE INDEX alerts_active ON alerts (node_id, kind) WHERE resolved_at IS NULL;
CREATE INDEX alerts_by_node ON alerts (node_id, id);
CREATE INDEX alerts_active_by_owner ON alerts (owner) WHERE resolved_at IS NULL;

-- One webhook per user; the signing secret encrypted like node passwords.
CREATE TABLE webhooks (
    owner             TEXT    PRIMARY KEY NOT NULL,
    url               TEXT    NOT NULL,
    secret_enc        TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    secret_rotated_at INTEGER NOT NULL
) STRICT;

-- The durable delivery queue and its log. A replica claims a due row by moving `claimed_until`
-- forward in one UPDATE (only one claim wins); a claim whose replica died expires.
CREATE TABLE webhook_deliveries (
    id              TEXT    PRIMARY KEY NOT NULL,
    owner           TEXT    NOT NULL,
    event           TEXT    NOT NULL,   -- alert.fired | alert.resolved | test
    body            TEXT    NOT NULL,   -- exactly the bytes sent (and signed)
    state           TEXT    NOT NULL,   -- pending | delivered | gave_up
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until   INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_by_owner ON webhook_deliveries (owner, created_at);
