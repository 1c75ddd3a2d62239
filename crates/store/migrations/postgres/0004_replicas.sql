-- Several `erigolem serve` replicas on one database (keep in step with ../sqlite/0004_replicas.sql).
-- Timestamps are unix milliseconds of the database's clock (lease expiry is judged by one clock).

-- Each running server process, while its heartbeat is fresh.
CREATE TABLE replicas (
    id         TEXT   PRIMARY KEY,  -- fresh per process start (UUID v7)
    backend    TEXT   NOT NULL,     -- 'local', 'golem' or 'none'
    host       TEXT   NOT NULL,
    data_dir   TEXT   NOT NULL,
    listen     TEXT   NOT NULL,
    started_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Who controls a node (STATUS polls, payments, stop, replacement): one replica at a time. `epoch`
-- grows with every change of holder, so a renewal is a compare-and-set on what the holder took.
CREATE TABLE node_leases (
    node_id     TEXT   PRIMARY KEY,  -- no foreign key: a deleted node's agreement may still bill
    holder      TEXT,                -- a replica id; NULL: handed back
    epoch       BIGINT NOT NULL DEFAULT 0,
    expires_at  BIGINT NOT NULL DEFAULT 0,
    acquired_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX node_leases_holder ON node_leases (holder);

-- A user's stop or delete received by a replica that does not hold the node: carried out by the
-- holder, which writes the outcome.
CREATE TABLE node_requests (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id    TEXT   NOT NULL,
    request    TEXT   NOT NULL CHECK (request IN ('stop', 'delete')),
    taken_by   TEXT,
    outcome    TEXT,
    created_at BIGINT NOT NULL,
    done_at    BIGINT
);
CREATE INDEX node_requests_open ON node_requests (node_id, outcome);

-- Facts every replica must agree on (the node-password key's fingerprint).
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Every replica's event feeds wake at once when a transition is written, whoever wrote it.
CREATE FUNCTION erigolem_notify_event() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('erigolem_events', NEW.owner);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER node_events_notify AFTER INSERT ON node_events
    FOR EACH ROW EXECUTE FUNCTION erigolem_notify_event();
