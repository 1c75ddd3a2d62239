-- Erigolem server registry, PostgreSQL flavour (keep in step with ../sqlite/0001_init.sql).
-- Timestamps are unix milliseconds.

CREATE TABLE nonces (
    nonce      TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX nonces_expires_at ON nonces (expires_at);

CREATE TABLE sessions (
    token_hash TEXT   PRIMARY KEY,
    address    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE nodes (
    id           TEXT   PRIMARY KEY,
    owner        TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    network      TEXT   NOT NULL,
    mode         TEXT   NOT NULL,
    prune        TEXT   NOT NULL,
    state        TEXT   NOT NULL
        CHECK (state IN ('pending', 'starting', 'running', 'stopping', 'stopped', 'failed')),
    reason       TEXT,
    url          TEXT,
    ws_url       TEXT,
    username     TEXT,
    password_enc TEXT,
    instance     TEXT,
    backend_ref  TEXT,
    block        BIGINT,
    sync         TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    stopped_at   BIGINT
);
CREATE INDEX nodes_owner_created_at ON nodes (owner, created_at);
CREATE INDEX nodes_state ON nodes (state);

-- An append-only log: no foreign key, so a deleted node's history stays readable. Writers take
-- an EXCLUSIVE lock on it first, so ids become visible in commit order (a reader paging with
-- `id > last_seen` never skips one).
CREATE TABLE node_events (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id TEXT   NOT NULL,
    owner   TEXT   NOT NULL,
    state   TEXT   NOT NULL,
    reason  TEXT,
    at      BIGINT NOT NULL
);
CREATE INDEX node_events_owner_id ON node_events (owner, id);
CREATE INDEX node_events_node_id ON node_events (node_id);
