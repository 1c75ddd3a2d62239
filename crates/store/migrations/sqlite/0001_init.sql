-- Erigolem server registry, SQLite flavour (keep in step with ../postgres/0001_init.sql).
-- Timestamps are unix milliseconds. STRICT tables: SQLite enforces the declared types.

CREATE TABLE nonces (
    nonce      TEXT    PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX nonces_expires_at ON nonces (expires_at);

CREATE TABLE sessions (
    token_hash TEXT    PRIMARY KEY NOT NULL,
    address    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE nodes (
    id           TEXT    PRIMARY KEY NOT NULL,
    owner        TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    network      TEXT    NOT NULL,
    mode         TEXT    NOT NULL,
    prune        TEXT    NOT NULL,
    state        TEXT    NOT NULL
        CHECK (state IN ('pending', 'starting', 'running', 'stopping', 'stopped', 'failed')),
    reason       TEXT,
    url          TEXT,
    ws_url       TEXT,
    username     TEXT,
    password_enc TEXT,
    instance     TEXT,
    backend_ref  TEXT,
    block        INTEGER,
    sync         TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    stopped_at   INTEGER
) STRICT;
CREATE INDEX nodes_owner_created_at ON nodes (owner, created_at);
CREATE INDEX nodes_state ON nodes (state);

-- An append-only log: no foreign key, so a deleted node's history stays readable.
CREATE TABLE node_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id TEXT    NOT NULL,
    owner   TEXT    NOT NULL,
    state   TEXT    NOT NULL,
    reason  TEXT,
    at      INTEGER NOT NULL
) STRICT;
CREATE INDEX node_events_owner_id ON node_events (owner, id);
CREATE INDEX node_events_node_id ON node_events (node_id);
