-- Several `erigolem serve` replicas on one database (keep in step with ../postgres/0004_replicas.sql).
-- With SQLite one replica is the rule; the tables exist so that the code path is the same.

CREATE TABLE replicas (
    id         TEXT    PRIMARY KEY,
    backend    TEXT    NOT NULL,
    host       TEXT    NOT NULL,
    data_dir   TEXT    NOT NULL,
    listen     TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE node_leases (
    node_id     TEXT    PRIMARY KEY,
    holder      TEXT,
    epoch       INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER NOT NULL DEFAULT 0,
    acquired_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX node_leases_holder ON node_leases (holder);

CREATE TABLE node_requests (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id    TEXT    NOT NULL,
    request    TEXT    NOT NULL CHECK (request IN ('stop', 'delete')),
    taken_by   TEXT,
    outcome    TEXT,
    created_at INTEGER NOT NULL,
    done_at    INTEGER
);
CREATE INDEX node_requests_open ON node_requests (node_id, outcome);

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
