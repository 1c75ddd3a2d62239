-- Issue 15: alerts of nodes and the webhooks they are delivered to, PostgreSQL flavour (keep in step
-- with ../sqlite/0007_alerts.sql).

-- A node's alert rules (erigolem_lifecycle::alert::AlertRules as JSON); no row: the defaults.
CREATE TABLE alert_rules (
    node_id    TEXT    PRIMARY KEY NOT NULL,
    rules      TEXT    NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Nodes past their first sync: lag alerts apply to them (a node in its first sync is behind by
-- nature). Kept here, not in the holder's memory, so a replica taking a node over knows it.
CREATE TABLE alert_caught_up (
    node_id TEXT    PRIMARY KEY NOT NULL,
    at      BIGINT NOT NULL
);

-- Alerts fired (and resolved). At most one active alert per node and kind, whichever replica
-- fires it: the partial unique index makes a second firing a no-op.
CREATE TABLE alerts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id     TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    fired_at    BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE UNIQUE INDEX alerts_active ON alerts (node_id, kind) WHERE resolved_at IS NULL;
CREATE INDEX alerts_by_node ON alerts (node_id, id);
CREATE INDEX alerts_active_by_owner ON alerts (owner) WHERE resolved_at IS NULL;

-- One webhook per user; the signing secret encrypted like node passwords.
CREATE TABLE webhooks (
    owner             TEXT    PRIMARY KEY NOT NULL,
    url               TEXT    NOT NULL,
    secret_enc        TEXT    NOT NULL,
    created_at        BIGINT NOT NULL,
    secret_rotated_at BIGINT NOT NULL
);

-- The durable delivery queue and its log. A replica claims a due row by moving `claimed_until`
-- forward in one UPDATE (only one claim wins); a claim whose replica died expires.
CREATE TABLE webhook_deliveries (
    id              TEXT    PRIMARY KEY NOT NULL,
    owner           TEXT    NOT NULL,
    event           TEXT    NOT NULL,   -- alert.fired | alert.resolved | test
    body            TEXT    NOT NULL,   -- exactly the bytes sent (and signed)
    state           TEXT    NOT NULL,   -- pending | delivered | gave_up
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_until   BIGINT NOT NULL DEFAULT 0,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_by_owner ON webhook_deliveries (owner, created_at);
