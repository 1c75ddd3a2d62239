-- Money and replacements, SQLite flavour (keep in step with ../postgres/0003_deals.sql).
-- GLM amounts are decimal text written by erigolem_lifecycle::Glm (canonical: no trailing zeros),
-- so compare-and-set on them is a plain text comparison. Timestamps are unix milliseconds.

-- What the user ordered for a node, shared by the node and its replacements: the budget, the
-- caps, and what all of their agreements were paid.
CREATE TABLE plans (
    id                 TEXT    PRIMARY KEY NOT NULL,  -- the first node's id
    owner              TEXT    NOT NULL,
    budget             TEXT,                          -- NULL where nodes are free (local backend)
    spent              TEXT    NOT NULL DEFAULT '0',
    max_price_per_hour TEXT,
    max_start_fee      TEXT,
    expected_hours     INTEGER,
    auto_replace       INTEGER NOT NULL DEFAULT 0 CHECK (auto_replace IN (0, 1)),
    max_replacements   INTEGER NOT NULL DEFAULT 0,
    replacements       INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL
) STRICT;

ALTER TABLE nodes ADD COLUMN plan_id TEXT;
ALTER TABLE nodes ADD COLUMN replaces TEXT;
CREATE INDEX nodes_plan_id ON nodes (plan_id);

-- Each replacement of a failed node, with why.
CREATE TABLE replacements (
    plan_id     TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    failed_node TEXT    NOT NULL,
    new_node    TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (plan_id, seq)
) STRICT;

-- One agreement with a provider (a node may have had several: retries, replacements). Kept after
-- the node is deleted: its invoice may still come.
CREATE TABLE deals (
    agreement_id      TEXT    PRIMARY KEY NOT NULL,
    node_id           TEXT    NOT NULL,
    plan_id           TEXT    NOT NULL,
    owner             TEXT    NOT NULL,
    provider_id       TEXT    NOT NULL,
    provider_name     TEXT,
    allocation_id     TEXT    NOT NULL,
    activity_id       TEXT,
    price_per_hour    TEXT    NOT NULL,
    start_fee         TEXT    NOT NULL,
    price_per_request TEXT,
    accepted          TEXT    NOT NULL DEFAULT '0',
    requests          INTEGER NOT NULL DEFAULT 0,
    served_from       INTEGER,
    served_until      INTEGER,
    ended_at          INTEGER,
    expires_at        INTEGER NOT NULL,
    settled           INTEGER NOT NULL DEFAULT 0 CHECK (settled IN (0, 1)),
    refused           TEXT,
    start_ms          TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
) STRICT;
CREATE INDEX deals_node_id ON deals (node_id);
CREATE INDEX deals_plan_id ON deals (plan_id);
CREATE INDEX deals_open ON deals (ended_at, settled);

-- Every debit note and invoice decided, once: the id is yagna's document id.
CREATE TABLE payment_documents (
    id           TEXT    PRIMARY KEY NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('debit_note', 'invoice')),
    agreement_id TEXT    NOT NULL,
    owner        TEXT    NOT NULL,
    amount       TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('accepting', 'accepted', 'refused', 'failed')),
    increment    TEXT    NOT NULL DEFAULT '0',
    period_start INTEGER NOT NULL,
    reason       TEXT,
    received_at  INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX payment_documents_agreement_id ON payment_documents (agreement_id);
CREATE INDEX payment_documents_state ON payment_documents (state);

-- GLM accepted per owner (a user's address, or '*' for the whole server) and spend period.
CREATE TABLE spend (
    owner        TEXT    NOT NULL,
    period_start INTEGER NOT NULL,
    amount       TEXT    NOT NULL,
    PRIMARY KEY (owner, period_start)
) STRICT;
