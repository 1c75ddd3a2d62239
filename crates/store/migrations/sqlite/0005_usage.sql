-- Issue 15: what each node's endpoint served over time, SQLite flavour (keep in step with
-- ../postgres/0005_usage.sql). Two tiers per node: per-minute steps kept a day and per-hour steps
-- kept eight days, so a node has at most 1,440 + 192 rows (pruned on every write).
CREATE TABLE usage_samples (
    node_id        TEXT    NOT NULL,
    step_secs      INTEGER NOT NULL,   -- 60 or 3600
    at             INTEGER NOT NULL,   -- start of the step, unix ms
    requests       INTEGER NOT NULL,
    errors         INTEGER NOT NULL,
    refused        INTEGER NOT NULL,
    bytes_in       INTEGER NOT NULL,
    bytes_out      INTEGER NOT NULL,
    methods        TEXT    NOT NULL,   -- {"eth_call": 3, …, "other": 1}, at most 21 names
    latency        TEXT    NOT NULL,   -- counts per latency bucket (JSON array)
    block          INTEGER,
    head           INTEGER,
    behind_seconds INTEGER,
    PRIMARY KEY (node_id, step_secs, at)
) STRICT;

-- The node's cumulative counters as of its last stored step: the next poll's difference to them
-- is what gets stored next, so a server restart loses nothing the runtime still counts.
CREATE TABLE usage_cursors (
    node_id TEXT    PRIMARY KEY NOT NULL,
    at      INTEGER NOT NULL,
    usage   TEXT    NOT NULL
) STRICT;
