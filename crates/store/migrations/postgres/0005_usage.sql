-- Issue 15: what each node's endpoint served over time, PostgreSQL flavour (keep in step with
-- ../sqlite/0005_usage.sql). Two tiers per node: per-minute steps kept a day and per-hour steps
-- kept eight days, so a node has at most 1,440 + 192 rows (pruned on every write).
CREATE TABLE usage_samples (
    node_id        TEXT    NOT NULL,
    step_secs      BIGINT NOT NULL,   -- 60 or 3600
    at             BIGINT NOT NULL,   -- start of the step, unix ms
    requests       BIGINT NOT NULL,
    errors         BIGINT NOT NULL,
    refused        BIGINT NOT NULL,
    bytes_in       BIGINT NOT NULL,
    bytes_out      BIGINT NOT NULL,
    methods        TEXT    NOT NULL,   -- {"eth_call": 3, …, "other": 1}, at most 21 names
    latency        TEXT    NOT NULL,   -- counts per latency bucket (JSON array)
    block          BIGINT,
    head           BIGINT,
    behind_seconds BIGINT,
    PRIMARY KEY (node_id, step_secs, at)
);

-- The node's cumulative counters as of its last stored step: the next poll's difference to them
-- is what gets stored next, so a server restart loses nothing the runtime still counts.
CREATE TABLE usage_cursors (
    node_id TEXT    PRIMARY KEY NOT NULL,
    at      BIGINT NOT NULL,
    usage   TEXT    NOT NULL
);
